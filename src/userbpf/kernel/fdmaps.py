"""Maps whose values are kernel objects named by fd: PROG_ARRAY,
ARRAY_OF_MAPS and HASH_OF_MAPS.

User space stores an fd; the map keeps a reference to the object behind it
(not the fd, which may be closed afterwards) and a lookup from user space
returns the object's id, as the kernel's ``map_fd_sys_lookup_elem`` does.

The hash of maps keeps its keys in a C hash table (so flags, "full" and
get_next_key order are the HASH map's own). Programs cannot reach these
maps' contents yet (tail calls and map-in-map lookups come with programs).
"""
from __future__ import annotations

import errno
import struct
from typing import Callable, Dict, Optional

from .. import _maps
from ..uapi import MapType
from .errors import ENOTSUPP, bpf_error
from .objects import BpfObject

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_INNER_MAP = 1 << 12
_U32 = struct.Struct("<I")
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
    """The values of an fd-holding map: key bytes -> a referenced object."""

    def __init__(self, attr: dict, ncpus: int, get_object: Callable[[int], BpfObject],
                 meta: Optional[dict] = None):
        self.attr = attr
        self.meta = meta
        self.get_object = get_object       # fd -> object (EBADF / EINVAL), no new ref
        self.objects: Dict[bytes, BpfObject] = {}
        self.is_hash = attr["map_type"] == MapType.HASH_OF_MAPS
        # a HASH of the same geometry (values: object ids) keeps the keys
        self.keys = _maps.MapCore(MapType.HASH, attr["key_size"], 8, attr["max_entries"],
                                  attr["map_flags"], ncpus) if self.is_hash else None

    # -- resolving what user space stores ------------------------------------
    def _object_for(self, value: bytes) -> BpfObject:
        if len(value) != 4:
            raise bpf_error(errno.EINVAL, "fd maps take a 4-byte fd as the value")
        fd = _U32.unpack(value)[0]
        obj = self.get_object(fd)
        if self.attr["map_type"] == MapType.PROG_ARRAY:
            if obj.kind != "prog":
                raise bpf_error(errno.EINVAL, f"fd {fd} is not a program")
        elif obj.kind != "map" or not meta_equal(self.meta, obj):
            raise bpf_error(errno.EINVAL, f"fd {fd} is not a map matching the inner map "
                                          "template")
        return obj

    def _index(self, key: bytes) -> int:
        return _U32.unpack(key)[0]

    # -- the element commands ---------------------------------------------------
    def update(self, key: bytes, value: bytes, flags: int) -> None:
        if self.is_hash:
            obj = self._object_for(value)
            self.keys.update(key, _U64.pack(obj.id), flags)
        else:
            if flags != BPF_ANY:
                raise bpf_error(errno.EINVAL, "fd arrays take only BPF_ANY")
            if self._index(key) >= self.attr["max_entries"]:
                raise bpf_error(errno.E2BIG, "index beyond max_entries")
            obj = self._object_for(value)
        old = self.objects.get(key)
        self.objects[key] = obj.get()
        if old is not None:
            old.put()

    def lookup(self, key: bytes) -> bytes:
        obj = self.objects.get(key)
        if obj is None:
            raise bpf_error(errno.ENOENT, "no such element")
        return _U32.pack(obj.id)

    def delete(self, key: bytes) -> None:
        if self.is_hash:
            self.keys.delete(key)
        elif self._index(key) >= self.attr["max_entries"]:
            raise bpf_error(errno.E2BIG, "index beyond max_entries")
        obj = self.objects.pop(key, None)
        if obj is None:
            raise bpf_error(errno.ENOENT, "no such element")
        obj.put()

    def get_next_key(self, key: Optional[bytes]) -> bytes:
        if self.is_hash:
            return self.keys.get_next_key(key)
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
        for obj in objs:
            obj.put()
        self.keys = None
