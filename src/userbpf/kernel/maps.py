"""Map objects and the map commands of bpf(): MAP_CREATE validation per
type (the kernel's ``*_map_alloc_check`` rules) and the element commands.
"""
from __future__ import annotations

import errno
import re
from typing import Callable, Dict, Optional

from .. import _maps
from ..uapi import MapType
from . import fdmaps, perf_array
from .errors import ENOTSUPP, bpf_error
from .objects import BpfObject

# map_flags and update flags: the kernel's names, from userbpf.uapi
from ..uapi import (BPF_F_INNER_MAP, BPF_F_LOCK, BPF_F_MMAPABLE,  # noqa: E402,F401
                    BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC, BPF_F_NO_USER_CONV,
                    BPF_F_NUMA_NODE, BPF_F_PRESERVE_ELEMS, BPF_F_RDONLY, BPF_F_RDONLY_PROG,
                    BPF_F_SEGV_ON_FAULT, BPF_F_STACK_BUILD_ID, BPF_F_TOKEN_FD, BPF_F_WRONLY,
                    BPF_F_WRONLY_PROG, BPF_F_ZERO_SEED)
BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG
ARRAY_CREATE_FLAG_MASK = (BPF_F_NUMA_NODE | BPF_F_MMAPABLE | BPF_F_ACCESS_MASK |
                          BPF_F_PRESERVE_ELEMS | BPF_F_INNER_MAP)
HTAB_CREATE_FLAG_MASK = (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE |
                         BPF_F_ACCESS_MASK | BPF_F_ZERO_SEED)
NUMA_NO_NODE = -1
MAX_BPF_STACK = 512
PCPU_MIN_UNIT_SIZE = 32 << 10
KMALLOC_MAX_SIZE = 1 << 22          # 4 MiB with 4 KiB pages and SLUB (x86_64)
INT_MAX = (1 << 31) - 1
HTAB_ELEM_SIZE = 48                # sizeof(struct htab_elem) without key and value

_NAME_OK = re.compile(rb"[A-Za-z0-9_.]*")


def check_name(name) -> bytes:
    """bpf_obj_name_cpy: up to 15 of [A-Za-z0-9_.], else EINVAL."""
    if isinstance(name, str):
        name = name.encode()
    name = bytes(name or b"").split(b"\0", 1)[0]
    if len(name) >= 16 or not _NAME_OK.fullmatch(name):
        raise bpf_error(errno.EINVAL, f"invalid object name {name!r}: up to 15 of "
                                      "[A-Za-z0-9_.]")
    return name


def _access_ok(flags: int) -> bool:
    """bpf_map_flags_access_ok: not both read-only and write-only for programs."""
    return (flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)) != (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)


def _einval(why: str) -> OSError:
    return bpf_error(errno.EINVAL, why)


def check_array(a: dict) -> None:
    """array_map_alloc_check (ARRAY, PERCPU_ARRAY and the fd arrays)."""
    percpu = a["map_type"] == MapType.PERCPU_ARRAY
    if (a["max_entries"] == 0 or a["key_size"] != 4 or a["value_size"] == 0
            or a["map_flags"] & ~ARRAY_CREATE_FLAG_MASK or not _access_ok(a["map_flags"])
            or (percpu and a["numa_node"] != NUMA_NO_NODE)):
        raise _einval("array maps need key_size 4, value_size > 0, max_entries > 0 "
                      "and array flags only")
    if a["map_type"] != MapType.ARRAY and a["map_flags"] & (BPF_F_MMAPABLE | BPF_F_INNER_MAP):
        raise _einval("BPF_F_MMAPABLE and BPF_F_INNER_MAP are for ARRAY only")
    if a["map_type"] != MapType.PERF_EVENT_ARRAY and a["map_flags"] & BPF_F_PRESERVE_ELEMS:
        raise _einval("BPF_F_PRESERVE_ELEMS is for PERF_EVENT_ARRAY only")
    if a["value_size"] > INT_MAX:
        raise bpf_error(errno.E2BIG, "value_size too large")
    if percpu and (a["value_size"] + 7) & ~7 > PCPU_MIN_UNIT_SIZE:
        raise bpf_error(errno.E2BIG, "per-CPU value larger than 32 KiB")


def check_fd_array(a: dict) -> None:
    """fd_array_map_alloc_check: PROG_ARRAY, PERF_EVENT_ARRAY, CGROUP_ARRAY,
    ARRAY_OF_MAPS hold u32 fds, never writable or readable by programs as data."""
    if a["value_size"] != 4 or a["map_flags"] & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG):
        raise _einval("fd arrays need value_size 4 and no program access flags")
    check_array(a)


def check_reuseport_array(a: dict) -> None:
    """reuseport_array_alloc_check: socket cookies (u64) or fds (u32)."""
    if a["value_size"] not in (4, 8):
        raise _einval("REUSEPORT_SOCKARRAY needs value_size 4 or 8")
    check_array(a)


def check_htab(a: dict) -> None:
    """htab_map_alloc_check (the four hash types and HASH_OF_MAPS)."""
    t, flags = a["map_type"], a["map_flags"]
    lru = t in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
    percpu = t in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
    percpu_lru = bool(flags & BPF_F_NO_COMMON_LRU)
    prealloc = not flags & BPF_F_NO_PREALLOC
    if flags & ~HTAB_CREATE_FLAG_MASK or not _access_ok(flags):
        raise _einval("invalid map_flags for a hash map")
    if not lru and percpu_lru:
        raise _einval("BPF_F_NO_COMMON_LRU is for LRU maps only")
    if lru and not prealloc:
        raise bpf_error(ENOTSUPP, "LRU maps cannot use BPF_F_NO_PREALLOC")
    if a["numa_node"] != NUMA_NO_NODE and (percpu or percpu_lru):
        raise _einval("numa_node with a per-CPU map")
    if a["max_entries"] == 0 or a["key_size"] == 0 or a["value_size"] == 0:
        raise _einval("hash maps need key_size, value_size and max_entries > 0")
    if a["key_size"] + a["value_size"] >= KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE:
        raise bpf_error(errno.E2BIG, "key_size + value_size too large")
    if percpu and (a["value_size"] + 7) & ~7 > PCPU_MIN_UNIT_SIZE:
        raise bpf_error(errno.E2BIG, "per-CPU value larger than 32 KiB")


def check_fd_htab(a: dict) -> None:
    """fd_htab_map_alloc_check: HASH_OF_MAPS values are u32 map fds."""
    if a["value_size"] != 4:
        raise _einval("HASH_OF_MAPS needs value_size 4")
    check_htab(a)


LPM_KEY_SIZE_MIN = 4 + 1
LPM_KEY_SIZE_MAX = 4 + 256
LPM_VAL_SIZE_MAX = KMALLOC_MAX_SIZE - 256 - 24    # minus the data and the node header


def check_lpm_trie(a: dict) -> None:
    """trie_alloc: a u32 prefixlen plus 1..256 data bytes; must be NO_PREALLOC."""
    flags = a["map_flags"]
    if (a["max_entries"] == 0 or not flags & BPF_F_NO_PREALLOC
            or flags & ~(BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK)
            or not _access_ok(flags)
            or not LPM_KEY_SIZE_MIN <= a["key_size"] <= LPM_KEY_SIZE_MAX
            or not 1 <= a["value_size"] <= LPM_VAL_SIZE_MAX):
        raise _einval("LPM_TRIE needs BPF_F_NO_PREALLOC, key_size 5..260, value_size > 0")


def check_queue_stack(a: dict) -> None:
    """queue_stack_map_alloc_check: no key; values of value_size bytes."""
    if (a["max_entries"] == 0 or a["key_size"] != 0 or a["value_size"] == 0
            or a["map_flags"] & ~(BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK)
            or not _access_ok(a["map_flags"])):
        raise _einval("QUEUE and STACK need key_size 0, value_size > 0, max_entries > 0")
    if a["value_size"] > KMALLOC_MAX_SIZE:
        raise bpf_error(errno.E2BIG, "value_size too large")


def check_bloom_size(a: dict) -> None:
    """bloom_map_alloc_check."""
    if a["value_size"] > KMALLOC_MAX_SIZE:
        raise bpf_error(errno.E2BIG, "value_size too large")


def check_bloom(a: dict) -> None:
    """bloom_map_alloc: no key; map_extra's low 4 bits = number of hashes."""
    if (a["key_size"] != 0 or a["value_size"] == 0 or a["max_entries"] == 0
            or a["map_flags"] & ~(BPF_F_NUMA_NODE | BPF_F_ZERO_SEED | BPF_F_ACCESS_MASK)
            or not _access_ok(a["map_flags"]) or a["map_extra"] & ~0xF):
        raise _einval("BLOOM_FILTER needs key_size 0, value_size > 0, max_entries > 0, "
                      "map_extra <= 15")


PAGE_SIZE = 4096


def check_ringbuf(a: dict) -> None:
    """ringbuf_map_alloc: the data size is max_entries, a power-of-2 number of pages."""
    n = a["max_entries"]
    if a["map_flags"] & ~BPF_F_NUMA_NODE:
        raise _einval("ring buffers take only BPF_F_NUMA_NODE")
    if a["key_size"] or a["value_size"] or n == 0 or n & (n - 1) or n % PAGE_SIZE:
        raise _einval("ring buffers need key_size 0, value_size 0 and max_entries a "
                      "power of 2 multiple of the page size")


PERF_MAX_STACK_DEPTH = 127          # sysctl kernel.perf_event_max_stack
BPF_STACK_BUILD_ID_SIZE = 32


def check_stack_trace(a: dict) -> None:
    """stack_map_alloc: u32 stack ids to arrays of u64 ips (or build ids)."""
    vs = a["value_size"]
    if a["map_flags"] & ~(BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_STACK_BUILD_ID):
        raise _einval("invalid map_flags for STACK_TRACE")
    if a["max_entries"] == 0 or a["key_size"] != 4 or vs < 8 or vs % 8:
        raise _einval("STACK_TRACE needs key_size 4 and value_size a multiple of 8")
    frame = BPF_STACK_BUILD_ID_SIZE if a["map_flags"] & BPF_F_STACK_BUILD_ID else 8
    if vs % frame or vs // frame > PERF_MAX_STACK_DEPTH:
        raise _einval(f"value_size must be a multiple of {frame} and hold at most "
                      f"{PERF_MAX_STACK_DEPTH} frames (perf_event_max_stack)")


def _check_dev_like(a: dict, value_sizes, flag_mask: int, what: str) -> None:
    if (a["max_entries"] == 0 or a["key_size"] != 4 or a["value_size"] not in value_sizes
            or a["map_flags"] & ~flag_mask):
        raise _einval(f"{what} needs key_size 4, value_size {' or '.join(map(str, value_sizes))}")


def check_devmap(a: dict) -> None:
    """dev_map_init_map: ifindex (u32) or ifindex + program fd (8 bytes)."""
    _check_dev_like(a, (4, 8), BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY, "DEVMAP")


NR_CPUS = 256                       # CONFIG_NR_CPUS of the reference kernel


def check_cpumap(a: dict) -> None:
    """cpu_map_alloc: qsize (u32) or qsize + program fd."""
    _check_dev_like(a, (4, 8), BPF_F_NUMA_NODE, "CPUMAP")
    if a["max_entries"] > NR_CPUS:
        raise bpf_error(errno.E2BIG, "more entries than NR_CPUS")


def check_xskmap(a: dict) -> None:
    """xsk_map_alloc: u32 socket fds."""
    _check_dev_like(a, (4,), BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY, "XSKMAP")


SOCK_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY


def check_sockmap(a: dict) -> None:
    """sock_map_alloc: u32 keys, socket fds (u32) or cookies (u64)."""
    _check_dev_like(a, (4, 8), SOCK_CREATE_FLAG_MASK, "SOCKMAP")


def check_sockhash(a: dict) -> None:
    """sock_hash_alloc: any key up to the stack size, socket fds or cookies."""
    if (a["max_entries"] == 0 or a["key_size"] == 0 or a["value_size"] not in (4, 8)
            or a["map_flags"] & ~SOCK_CREATE_FLAG_MASK):
        raise _einval("SOCKHASH needs key_size > 0 and value_size 4 or 8")
    if a["key_size"] > MAX_BPF_STACK:
        raise bpf_error(errno.E2BIG, "key_size larger than the 512-byte BPF stack")


CGROUP_STORAGE_KEY_SIZES = (8, 16)  # cgroup inode id, or struct bpf_cgroup_storage_key
# BPF_LOCAL_STORAGE_MAX_VALUE_SIZE: a u16 size less the storage element header
LOCAL_STORAGE_MAX_VALUE_SIZE = 0xFFFF - 128


def check_cgroup_storage(a: dict) -> None:
    """cgroup_storage_map_alloc: one value per (cgroup, attach type); max_entries 0."""
    percpu = a["map_type"] == MapType.PERCPU_CGROUP_STORAGE
    if a["key_size"] not in CGROUP_STORAGE_KEY_SIZES:
        raise _einval("cgroup storage keys are 8 or 16 bytes")
    if a["value_size"] == 0:
        raise _einval("value_size must be > 0")
    if a["value_size"] > (PCPU_MIN_UNIT_SIZE if percpu else LOCAL_STORAGE_MAX_VALUE_SIZE):
        raise bpf_error(errno.E2BIG, "value_size too large for cgroup storage")
    if a["map_flags"] & ~(BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK) or not _access_ok(a["map_flags"]):
        raise _einval("invalid map_flags for cgroup storage")
    if a["max_entries"]:
        raise _einval("cgroup storage takes max_entries 0 (it is per cgroup)")


def check_local_storage(a: dict) -> None:
    """bpf_local_storage_map_alloc_check: needs BTF for the key and value,
    which userbpf's MAP_CREATE does not take yet, so these fail as in a
    kernel given no BTF."""
    raise _einval("local storage maps need btf_key_type_id and btf_value_type_id")


def check_needs_btf(a: dict) -> None:
    """STRUCT_OPS needs btf_vmlinux_value_type_id; without it, EINVAL."""
    raise _einval("this map type needs BTF (btf_vmlinux_value_type_id)")


def check_arena(a: dict) -> None:
    """arena_map_alloc: a sparse region of max_entries pages, mmapable."""
    allowed = BPF_F_SEGV_ON_FAULT | BPF_F_MMAPABLE | BPF_F_NO_USER_CONV
    if (a["key_size"] or a["value_size"] or a["max_entries"] == 0
            or not a["map_flags"] & BPF_F_MMAPABLE or a["map_flags"] & ~allowed):
        raise _einval("ARENA needs key_size 0, value_size 0, max_entries > 0 and "
                      "BPF_F_MMAPABLE")
    if a["map_extra"] & (PAGE_SIZE - 1):
        raise _einval("map_extra must be page aligned")
    if a["max_entries"] * PAGE_SIZE > 1 << 32:
        raise bpf_error(errno.E2BIG, "arena larger than 4 GiB")


def _none(a: dict) -> None:
    """No map_alloc_check: everything is checked in map_alloc."""


# map type -> (map_alloc_check, map_alloc's checks). MAP_CREATE runs the first,
# then resolves a BPF token (BPF_F_TOKEN_FD), then the second: the order
# decides which errno a bad attr gets.
ALLOC_CHECKS: Dict[int, tuple] = {
    MapType.HASH: (check_htab, _none),
    MapType.ARRAY: (check_array, _none),
    MapType.PROG_ARRAY: (check_fd_array, _none),
    MapType.PERF_EVENT_ARRAY: (check_fd_array, _none),
    MapType.PERCPU_HASH: (check_htab, _none),
    MapType.PERCPU_ARRAY: (check_array, _none),
    MapType.STACK_TRACE: (_none, check_stack_trace),
    MapType.CGROUP_ARRAY: (check_fd_array, _none),
    MapType.LRU_HASH: (check_htab, _none),
    MapType.LRU_PERCPU_HASH: (check_htab, _none),
    MapType.LPM_TRIE: (_none, check_lpm_trie),
    MapType.ARRAY_OF_MAPS: (check_fd_array, _none),
    MapType.HASH_OF_MAPS: (check_fd_htab, _none),
    MapType.DEVMAP: (_none, check_devmap),
    MapType.SOCKMAP: (_none, check_sockmap),
    MapType.CPUMAP: (_none, check_cpumap),
    MapType.XSKMAP: (_none, check_xskmap),
    MapType.SOCKHASH: (_none, check_sockhash),
    MapType.CGROUP_STORAGE: (_none, check_cgroup_storage),
    MapType.REUSEPORT_SOCKARRAY: (check_reuseport_array, _none),
    MapType.PERCPU_CGROUP_STORAGE: (_none, check_cgroup_storage),
    MapType.QUEUE: (check_queue_stack, _none),
    MapType.STACK: (check_queue_stack, _none),
    MapType.SK_STORAGE: (check_local_storage, _none),
    MapType.DEVMAP_HASH: (_none, check_devmap),
    MapType.STRUCT_OPS: (check_needs_btf, _none),
    MapType.RINGBUF: (_none, check_ringbuf),
    MapType.INODE_STORAGE: (check_local_storage, _none),
    MapType.TASK_STORAGE: (check_local_storage, _none),
    MapType.BLOOM_FILTER: (check_bloom_size, check_bloom),
    MapType.USER_RINGBUF: (_none, check_ringbuf),
    MapType.CGRP_STORAGE: (check_local_storage, _none),
    MapType.ARENA: (_none, check_arena),
}


class BpfMap(BpfObject):
    """A map as the kernel holds it: storage plus the attrs it was made with.

    ``core`` is the C storage (a :class:`userbpf._maps.MapCore`) for data
    maps, ``slots`` the object references of fd-holding maps; a type whose
    behaviour needs kernel objects userbpf does not simulate yet has
    neither, and its element commands fail with ENOTSUPP.
    """

    kind = "map"

    def __init__(self, obj_id: int, core, name: bytes, attr: dict, slots=None):
        super().__init__(obj_id)
        self.core = core
        self.slots = slots
        self.name = name
        self.attr = attr
        self.frozen = False

    @property
    def map_type(self) -> int:
        return self.attr["map_type"]

    def _store(self):
        store = self.slots if self.slots is not None else self.core
        if store is None:
            raise bpf_error(ENOTSUPP, f"{MapType(self.map_type).name} elements need kernel "
                                      "objects userbpf does not simulate yet")
        return store

    def _key(self, key) -> bytes:
        if key is None and self.attr["key_size"] == 0:
            return b""
        if len(key) != self.attr["key_size"]:
            raise bpf_error(errno.EINVAL, f"key is {len(key)} bytes, key_size is "
                                          f"{self.attr['key_size']}")
        return key

    def lookup(self, key, flags: int = 0, value: Optional[bytes] = None) -> bytes:
        """``value`` is input for a bloom filter (the element to test)."""
        store = self._store()
        if store is self.slots:
            return store.lookup(self._key(key))
        return store.lookup(self._key(key), flags, value)

    def update(self, key, value: bytes, flags: int = 0, file=None) -> None:
        """``file``: the map fd used (PERF_EVENT_ARRAY slots are emptied when
        the file that filled them is released)."""
        store = self._store()
        if store is self.slots:         # fd maps: which map file filled the slot
            store.update(self._key(key), value, flags, file)
        else:
            store.update(self._key(key), value, flags)

    def delete(self, key) -> None:
        self._store().delete(self._key(key))

    def lookup_and_delete(self, key, flags: int = 0) -> bytes:
        store = self._store()
        if store is self.slots:
            raise bpf_error(ENOTSUPP, "fd maps have no lookup-and-delete")
        return store.lookup_and_delete(self._key(key), flags)

    def get_next_key(self, key) -> bytes:
        return self._store().get_next_key(None if key is None else self._key(key))

    def release(self) -> None:
        if self.slots is not None:
            self.slots.clear()
        self.core = self.slots = None


def create(obj_id: int, attr: dict, ncpus: int, get_fd: Callable, open_fds=(0, 1, 2)) -> BpfMap:
    """MAP_CREATE after the generic checks: the type's rules, then storage.

    Types whose behaviour needs kernel objects userbpf does not simulate yet
    (perf events, sockets, devices, cgroups, BTF) are validated exactly as
    the kernel does and created without element storage.
    """
    t = attr["map_type"]
    # BPF_F_TOKEN_FD is taken off before the type's checks see the flags
    token_flag = attr["map_flags"] & BPF_F_TOKEN_FD
    attr["map_flags"] &= ~BPF_F_TOKEN_FD
    checks = ALLOC_CHECKS.get(t)
    if checks is None:
        raise _einval(f"unknown map_type {t}")
    alloc_check, alloc = checks
    alloc_check(attr)
    if token_flag:
        raise bpf_error(errno.EINVAL if attr["map_token_fd"] in open_fds else errno.EBADF,
                        "map_token_fd is not a BPF token (userbpf has no tokens)")
    alloc(attr)
    meta = None
    if t in fdmaps.OF_MAPS:
        fd = attr["inner_map_fd"]
        if fd in open_fds:                 # the standard streams: not maps
            raise _einval(f"inner_map_fd {fd} is not a map")
        meta = fdmaps.inner_meta(get_fd(fd))
    name = check_name(attr.get("map_name", b""))
    if t in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH) and attr["map_flags"] & BPF_F_NO_COMMON_LRU:
        # htab_map_alloc: per-CPU LRU lists get equal shares, so max_entries is
        # rounded up to a multiple of the CPUs (down, if that wraps a u32)
        n = attr["max_entries"]
        up = -(-n // ncpus) * ncpus
        attr["max_entries"] = up if up <= 0xFFFFFFFF else n // ncpus * ncpus
    if t in (MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        slots = fdmaps.FdSlots(attr, ncpus, get_fd, meta)
        return BpfMap(obj_id, slots.ptrs, name, attr, slots)     # programs use ptrs
    try:
        core = _maps.MapCore(t, attr["key_size"], attr["value_size"], attr["max_entries"],
                             attr["map_flags"], ncpus, name,
                             1 if attr["map_flags"] & BPF_F_ZERO_SEED else 0, attr["map_extra"])
    except NotImplementedError:       # no C storage for this type (yet)
        core = None
    except MemoryError:
        raise bpf_error(errno.ENOMEM, "cannot allocate the map") from None
    if t == MapType.PERF_EVENT_ARRAY:
        # element commands hold perf event fds (kernel/perf_array); the C
        # storage keeps the sample rings bpf_perf_event_output writes
        slots = perf_array.PerfEventSlots(attr["max_entries"], attr["map_flags"], get_fd)
        return BpfMap(obj_id, core, name, attr, slots)
    return BpfMap(obj_id, core, name, attr)
