"""MAP_CREATE validation: every map type's attr rules and errnos.

The table below was read off the live kernel; the differential tests ask the
live kernel again (where ``bpf()`` is permitted) over a seeded sample of the
attr space, so a rule that drifts is caught either way.
"""
from __future__ import annotations

import errno
import itertools
import os
import random

import pytest

from userbpf.kernel import Kernel
from userbpf.kernel.errors import ENOTSUPP
from userbpf.uapi import Cmd, MapType

E2BIG, EINVAL, EBADF = errno.E2BIG, errno.EINVAL, errno.EBADF
NCPUS = os.cpu_count() or 1


def create(k: Kernel, map_type, key_size, value_size, max_entries, map_flags=0, **extra) -> int:
    """0 on success (the map is closed again), else the errno."""
    try:
        fd = k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=key_size, value_size=value_size,
                   max_entries=max_entries, map_flags=map_flags, **extra)
    except OSError as e:
        return e.errno
    k.close(fd)
    return 0


NO_PREALLOC, NO_COMMON_LRU, RDONLY_PROG, WRONLY_PROG = 1, 2, 1 << 7, 1 << 8
MMAPABLE, PRESERVE_ELEMS, INNER_MAP, TOKEN_FD, STACK_BUILD_ID = 1 << 10, 1 << 11, 1 << 12, 1 << 16, 1 << 5

# (map type, key_size, value_size, max_entries, map_flags, expected errno)
CASES = [
    (MapType.HASH, 4, 8, 1, 0, 0),
    (MapType.HASH, 0, 8, 1, 0, EINVAL),
    (MapType.HASH, 4096, 8, 1, 0, 0),                  # no stack-size limit on keys now
    (MapType.HASH, 8, (4 << 20) - 56, 1, 0, E2BIG),    # key + value + elem header > kmalloc max
    (MapType.HASH, 4, 8, 1, NO_COMMON_LRU, EINVAL),
    (MapType.HASH, 4, 8, 1, RDONLY_PROG | WRONLY_PROG, EINVAL),
    (MapType.HASH, 4, 8, 1, TOKEN_FD, EINVAL),         # fd 0 is no token
    (MapType.PERCPU_HASH, 4, 32769, 1, 0, E2BIG),
    (MapType.PERCPU_HASH, 4, 32769, 1, TOKEN_FD, E2BIG),   # the type's check comes first
    (MapType.LRU_HASH, 4, 8, 1, NO_PREALLOC, ENOTSUPP),
    (MapType.LRU_PERCPU_HASH, 4, 8, 1, NO_COMMON_LRU, 0),
    (MapType.ARRAY, 4, 8, 0, 0, EINVAL),
    (MapType.ARRAY, 8, 8, 1, 0, EINVAL),
    (MapType.ARRAY, 4, 8, 1, MMAPABLE | INNER_MAP, 0),
    (MapType.ARRAY, 4, 8, 1, PRESERVE_ELEMS, EINVAL),
    (MapType.PERCPU_ARRAY, 4, 8, 1, MMAPABLE, EINVAL),
    (MapType.PERCPU_ARRAY, 4, 32769, 1, 0, E2BIG),
    (MapType.PROG_ARRAY, 4, 8, 1, 0, EINVAL),
    (MapType.PROG_ARRAY, 4, 4, 1, RDONLY_PROG, EINVAL),
    (MapType.PERF_EVENT_ARRAY, 4, 4, 1, PRESERVE_ELEMS, 0),
    (MapType.STACK_TRACE, 4, 127 * 8, 1, 0, 0),
    (MapType.STACK_TRACE, 4, 128 * 8, 1, 0, EINVAL),
    (MapType.STACK_TRACE, 4, 127 * 32, 1, STACK_BUILD_ID, 0),
    (MapType.STACK_TRACE, 4, 4096, 1, STACK_BUILD_ID, EINVAL),
    (MapType.LPM_TRIE, 8, 8, 1, 0, EINVAL),            # must be NO_PREALLOC
    (MapType.LPM_TRIE, 8, 8, 1, NO_PREALLOC, 0),
    (MapType.LPM_TRIE, 4, 8, 1, NO_PREALLOC, EINVAL),
    (MapType.LPM_TRIE, 261, 8, 1, NO_PREALLOC, EINVAL),
    (MapType.ARRAY_OF_MAPS, 4, 4, 1, 0, EINVAL),       # inner_map_fd 0 is not a map
    (MapType.DEVMAP, 4, 8, 4, 0, 0),
    (MapType.DEVMAP, 4, 12, 4, 0, EINVAL),
    (MapType.CPUMAP, 4, 4, 256, 0, 0),
    (MapType.CPUMAP, 4, 4, 257, 0, E2BIG),
    (MapType.XSKMAP, 4, 8, 4, 0, EINVAL),
    (MapType.SOCKHASH, 512, 4, 4, 0, 0),
    (MapType.SOCKHASH, 513, 4, 4, 0, E2BIG),
    (MapType.CGROUP_STORAGE, 16, 8, 0, 0, 0),
    (MapType.CGROUP_STORAGE, 12, 8, 0, 0, EINVAL),
    (MapType.CGROUP_STORAGE, 8, 8, 1, 0, EINVAL),
    (MapType.CGROUP_STORAGE, 8, 65408, 0, 0, E2BIG),
    (MapType.PERCPU_CGROUP_STORAGE, 8, 32769, 0, 0, E2BIG),
    (MapType.PERCPU_CGROUP_STORAGE, 8, 32769, 0, TOKEN_FD, EINVAL),  # token first here
    (MapType.REUSEPORT_SOCKARRAY, 4, 8, 1, 0, 0),
    (MapType.QUEUE, 0, 8, 4, 0, 0),
    (MapType.QUEUE, 4, 8, 4, 0, EINVAL),
    (MapType.STACK, 0, (4 << 20) + 1, 4, 0, E2BIG),
    (MapType.SK_STORAGE, 4, 8, 0, NO_PREALLOC, EINVAL),     # needs BTF
    (MapType.STRUCT_OPS, 4, 4, 1, 0, EINVAL),
    (MapType.RINGBUF, 0, 0, 4096, 0, 0),
    (MapType.RINGBUF, 0, 0, 4096 * 3, 0, EINVAL),
    (MapType.RINGBUF, 0, 0, 1024, 0, EINVAL),
    (MapType.USER_RINGBUF, 0, 0, 8192, 0, 0),
    (MapType.BLOOM_FILTER, 0, 8, 100, 0, 0),
    (MapType.BLOOM_FILTER, 4, 8, 100, 0, EINVAL),
    (MapType.ARENA, 0, 0, 1 << 20, MMAPABLE, 0),
    (MapType.ARENA, 0, 0, (1 << 20) + 1, MMAPABLE, E2BIG),
    (MapType.ARENA, 0, 0, 1, 0, EINVAL),
    (0, 4, 4, 1, 0, EINVAL),
    (34, 4, 4, 1, 0, EINVAL),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{MapType(c[0]).name if c[0] in MapType._value2member_map_ else c[0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]:#x}")
def test_map_create_errno(case):
    *attr, expected = case
    assert create(Kernel(ncpus=NCPUS), *attr) == expected


def test_map_extra_only_for_bloom_and_arena():
    k = Kernel(ncpus=2)
    assert create(k, MapType.BLOOM_FILTER, 0, 4, 1, map_extra=15) == 0
    assert create(k, MapType.BLOOM_FILTER, 0, 4, 1, map_extra=16) == EINVAL
    assert create(k, MapType.HASH, 4, 4, 1, map_extra=1) == EINVAL


def test_unknown_attr_field_is_einval():
    with pytest.raises(OSError) as e:
        Kernel(ncpus=1).bpf(Cmd.MAP_CREATE, map_type=MapType.HASH, key_size=4, value_size=4,
                            max_entries=1, no_such_field=1)
    assert e.value.errno == EINVAL and "no_such_field" in str(e.value)


def test_map_name_rules():
    k = Kernel(ncpus=1)
    assert create(k, MapType.ARRAY, 4, 4, 1, map_name=b"ok_name.1") == 0
    assert create(k, MapType.ARRAY, 4, 4, 1, map_name=b"bad-name") == EINVAL
    assert create(k, MapType.ARRAY, 4, 4, 1, map_name=b"x" * 16) == EINVAL


# -- maps of maps: which inner maps the kernel takes --------------------------
INNER = {  # a valid map of each type: key_size, value_size, max_entries, flags
    MapType.HASH: (4, 8, 4, 0), MapType.ARRAY: (4, 8, 4, 0), MapType.PROG_ARRAY: (4, 4, 4, 0),
    MapType.PERCPU_HASH: (4, 8, 4, 0), MapType.LRU_HASH: (4, 8, 4, 0),
    MapType.LPM_TRIE: (8, 8, 4, NO_PREALLOC), MapType.QUEUE: (0, 8, 4, 0),
    MapType.CGROUP_STORAGE: (8, 8, 0, 0), MapType.RINGBUF: (0, 0, 4096, 0),
    MapType.BLOOM_FILTER: (0, 8, 4, 0), MapType.DEVMAP: (4, 4, 4, 0),
}
INNER_VERDICT = {MapType.PROG_ARRAY: ENOTSUPP, MapType.CGROUP_STORAGE: ENOTSUPP}


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=lambda t: t.name)
@pytest.mark.parametrize("inner", list(INNER), ids=lambda t: t.name)
def test_inner_map_types(outer, inner):
    k = Kernel(ncpus=2)
    ks, vs, me, fl = INNER[inner]
    ifd = k.bpf(Cmd.MAP_CREATE, map_type=inner, key_size=ks, value_size=vs, max_entries=me,
                map_flags=fl)
    assert create(k, outer, 4, 4, 4, inner_map_fd=ifd) == INNER_VERDICT.get(inner, 0)
    nested = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY_OF_MAPS, key_size=4, value_size=4,
                   max_entries=1, inner_map_fd=k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY,
                                                     key_size=4, value_size=4, max_entries=1))
    assert create(k, outer, 4, 4, 4, inner_map_fd=nested) == EINVAL   # one level only
    assert create(k, outer, 4, 4, 4, inner_map_fd=99) == EBADF


# -- the live kernel as the oracle ---------------------------------------------
KS = [0, 1, 4, 5, 8, 12, 16, 260, 261, 512, 513]
VS = [0, 1, 4, 8, 12, 16, 32, 64, 1016, 1024, 4096, 4097, 32768, 32769]
ME = [0, 1, 3, 256, 257, 4096, 8192]
FL = [0] + [1 << i for i in range(19)] + [3, 1 | (1 << 7), (1 << 7) | (1 << 8), 1 | (1 << 16)]


def _grid():
    types = list(range(0, 35))
    return list(itertools.product(types, KS, VS, ME, FL))


def _differential(host, sample):
    k = Kernel(ncpus=host.possible_cpus())
    mismatches = []
    for t, ks, vs, me, fl in sample:
        try:
            host.map_create(t, ks, vs, me, fl).close()
            want = 0
        except host.HostError as e:
            want = e.errno
        got = create(k, t, ks, vs, me, fl)
        if got != want:
            mismatches.append(((t, ks, vs, me, hex(fl)), want, got))
    assert not mismatches, f"{len(mismatches)} of {len(sample)} differ " \
                           f"(attrs, kernel errno, userbpf errno): {mismatches[:20]}"


@pytest.mark.kernel
def test_map_create_matches_kernel_sample(host):
    grid = _grid()
    _differential(host, random.Random(20261126).sample(grid, 6000))


@pytest.mark.kernel
@pytest.mark.slow
def test_map_create_matches_kernel_everywhere(host):
    _differential(host, _grid())
