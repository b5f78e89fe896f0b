"""Maps whose values are kernel objects named by fd: PROG_ARRAY,
ARRAY_OF_MAPS and HASH_OF_MAPS.

User space stores an fd; the map keeps a reference to the object behind it
(not the fd, which may be closed afterwards) and a lookup from user space
returns the object's id, as the kernel's ``map_fd_sys_lookup_elem`` does.

Programs look maps of maps up through their C storage and get the inner
map itself; a PROG_ARRAY's C storage holds the programs' ``vm_prog``
pointers, which bpf_tail_call jumps to.
"""
from __future__ import annotations

import errno
import struct
from typing import Callable, Dict, Optional

from .. import _maps, _vm
from ..uapi import MapType
from .errors import ENOTSUPP, bpf_error
from .objects import BpfObject

from ..uapi import BPF_ANY, BPF_F_INNER_MAP, BPF_F_XDP_HAS_FRAGS  # noqa: E402
_U32 = struct.Struct("<I")
# what freed fd maps held (their C storage, inner maps, programs) while runs
# were in flight: dropped at the next fd-map change with no run in flight
_grave: list = []
_U64 = struct.Struct("<Q")

# Types the kernel refuses as inner maps (no map_meta_equal): -ENOTSUPP
NOT_INNER = frozenset({MapType.PROG_ARRAY, MapType.CGROUP_STORAGE,
                       MapType.PERCPU_CGROUP_STORAGE})
OF_MAPS = frozenset({MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})


def inner_meta(inner) -> dict:
    """bpf_map_meta_alloc: what every map stored in the outer map must match."""
    if inner.map_type in OF_MAPS:
        raise bpf_error(errno.EINVAL, "maps of maps nest one level only")
    if inner.map_type in NOT_INNER:
        raise bpf_error(ENOTSUPP, f"a {MapType(inner.map_type).name} cannot be an inner map")
    a = inner.attr
    return dict(map_type=a["map_type"], key_size=a["key_size"], value_size=a["value_size"],
                max_entries=a["max_entries"], map_flags=a["map_flags"])


def meta_equal(meta: dict, m) -> bool:
    """bpf_map_meta_equal (+ BPF_F_INNER_MAP: any max_entries)."""
    a = m.attr
    same = all(a[f] == meta[f] for f in ("map_type", "key_size", "value_size", "map_flags"))
    return same and (meta["map_flags"] & BPF_F_INNER_MAP or a["max_entries"] == meta["max_entries"])


class FdSlots:
    """The values of an fd-holding map: key bytes -> a referenced object.

    Maps of maps also keep C storage (``ptrs``: an ARRAY_OF_MAPS or
    HASH_OF_MAPS MapCore whose values are the inner maps' ``ubpf_map``
    pointers; for a PROG_ARRAY the programs' ``vm_prog`` pointers), which
    is what programs look up; flags, "full" and
    get_next_key order of a hash of maps are that C hash table's own.
    Inner maps and programs taken out stay allocated (``retired``) while
    program runs are in flight in other threads, so a program that still
    holds one (or a run that tail-called into one) never touches freed
    memory (the kernel defers the free with RCU).
    """

    def __init__(self, attr: dict, ncpus: int, get_object: Callable[[int], BpfObject],
                 meta: Optional[dict] = None):
        self.attr = attr
        self.meta = meta
        self.get_object = get_object       # fd -> object (EBADF / EINVAL), no new ref
        self.objects: Dict[bytes, BpfObject] = {}
        self.retired: list = []
        self.owner: Optional[tuple] = None     # PROG_ARRAY: the programs' kind, once set
        t = attr["map_type"]
        self.is_hash = t == MapType.HASH_OF_MAPS
        self.ptrs = _maps.MapCore(t, attr["key_size"], 8, attr["max_entries"],
                                  attr["map_flags"], ncpus) \
            if t in OF_MAPS or t == MapType.PROG_ARRAY else None

    # -- resolving what user space stores ------------------------------------
    def _object_for(self, value: bytes) -> BpfObject:
        if len(value) != 4:
            raise bpf_error(errno.EINVAL, "fd maps take a 4-byte fd as the value")
        fd = _U32.unpack(value)[0]
        obj = self.get_object(fd)
        if self.attr["map_type"] == MapType.PROG_ARRAY:
            if obj.kind != "prog":
                raise bpf_error(errno.EINVAL, f"fd {fd} is not a program")
            if not self.compatible(obj.prog_type, obj.prog_flags):
                raise bpf_error(errno.EINVAL, f"program fd {fd} is not of the type this "
                                              "PROG_ARRAY holds")
        elif obj.kind != "map" or not meta_equal(self.meta, obj):
            raise bpf_error(errno.EINVAL, f"fd {fd} is not a map matching the inner map "
                                          "template")
        return obj

    def compatible(self, prog_type: int, prog_flags: int) -> bool:
        """__bpf_prog_map_compatible: the first program stored in a PROG_ARRAY
        or loaded referencing it makes the map its type's (for good: the
        owner outlives that program); programs of another type (or XDP with
        another BPF_F_XDP_HAS_FRAGS) are refused since tail calls between
        them would see the wrong context."""
        kind = (prog_type, bool(prog_flags & BPF_F_XDP_HAS_FRAGS))
        if self.owner is None:
            self.owner = kind
        return self.owner == kind

    def _index(self, key: bytes) -> int:
        return _U32.unpack(key)[0]

    def _pointer(self, obj) -> bytes:
        if obj.kind == "prog":
            return _U64.pack(obj.program.vm_prog_address)
        core = getattr(obj, "core", None)
        return _U64.pack(core.address if core is not None else 0)

    def id_of(self, stored: bytes) -> bytes:
        """The u32 id of the map whose pointer a C slot holds (batch lookups)."""
        address = _U64.unpack(stored[:8])[0]
        for obj in self.objects.values():
            if obj.core is not None and obj.core.address == address:
                return _U32.pack(obj.id)
        raise bpf_error(errno.ENOENT, "no such element")

    def _drop(self, old) -> None:
        """Release an inner object taken out of a slot (its slot is cleared)."""
        if old is not None:
            if getattr(old, "core", None) is not None:
                self.retired.append(old.core)
            if getattr(old, "program", None) is not None:
                self.retired.append(old.program)      # its vm_prog, its maps
            old.put()
        if (self.retired or _grave) and _vm.runs_in_flight() == 0:
            self.retired = []           # the grace period is over: no run holds them
            _grave.clear()

    # -- the element commands ---------------------------------------------------
    def update(self, key: bytes, value: bytes, flags: int, file=None) -> None:
        """``file``: the map fd the update came through (what perf event
        arrays track; these slots outlive it)."""
        if self.is_hash:
            obj = self._object_for(value)
            self.ptrs.update(key, self._pointer(obj), flags)
        else:
            if flags != BPF_ANY:
                raise bpf_error(errno.EINVAL, "fd arrays take only BPF_ANY")
            if self._index(key) >= self.attr["max_entries"]:
                raise bpf_error(errno.E2BIG, "index beyond max_entries")
            obj = self._object_for(value)
            if self.ptrs is not None:
                self.ptrs.update(key, self._pointer(obj), BPF_ANY)
        old = self.objects.get(key)
        self.objects[key] = obj.get()
        self._drop(old)

    def release_file(self, file) -> None:
        """A map fd closed: nothing to do (perf_array's slots empty then)."""

    def lookup(self, key: bytes) -> bytes:
        obj = self.objects.get(key)
        if obj is None:
            raise bpf_error(errno.ENOENT, "no such element")
        return _U32.pack(obj.id)

    def delete(self, key: bytes) -> None:
        if self.is_hash:
            self.ptrs.delete(key)
        elif self._index(key) >= self.attr["max_entries"]:
            raise bpf_error(errno.E2BIG, "index beyond max_entries")
        obj = self.objects.pop(key, None)
        if obj is None:
            raise bpf_error(errno.ENOENT, "no such element")
        if self.ptrs is not None and not self.is_hash:
            self.ptrs.update(key, bytes(8), BPF_ANY)
        self._drop(obj)

    def get_next_key(self, key: Optional[bytes]) -> bytes:
        if self.is_hash:
            return self.ptrs.get_next_key(key)
        n = self.attr["max_entries"]
        index = n if key is None else self._index(key)
        if index >= n:
            return _U32.pack(0)
        if index == n - 1:
            raise bpf_error(errno.ENOENT, "last element")
        return _U32.pack(index + 1)

    def clear(self) -> None:
        """The map is freed: drop every reference it holds."""
        objs, self.objects = list(self.objects.values()), {}
        if _vm.runs_in_flight():
            # a run in another thread may still be in a program (or an inner
            # map) this map held: keep them, as the kernel's RCU would
            _grave.extend(self.retired)
            _grave.append(self.ptrs)
            _grave.extend(getattr(obj, "core", None) or getattr(obj, "program", None)
                          for obj in objs)
        else:
            _grave.clear()
        for obj in objs:
            obj.put()
        self.ptrs = None
        self.retired = []
