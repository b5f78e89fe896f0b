"""Element commands through Kernel.bpf: every map type's answers and errnos.

Each failing call is followed by a look at the map's contents: a refused
command must leave what is stored untouched. The errnos were read off the
live kernel (6.18); test_map_elem_kernel.py asks it again on random
sequences.
"""
from __future__ import annotations

import errno
import struct

import pytest

from userbpf.kernel import Kernel
from userbpf.kernel.errors import ENOTSUPP
from userbpf.kernel.objects import BpfObject
from userbpf.uapi import Cmd, MapType

EINVAL, ENOENT, EEXIST, E2BIG, EBADF, EFAULT, EPERM = (
    errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.E2BIG, errno.EBADF, errno.EFAULT,
    errno.EPERM)
ANY, NOEXIST, EXIST, F_LOCK = 0, 1, 2, 4
F_INNER_MAP = 1 << 12
NCPUS = 3                                # odd, so per-CPU strides show


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


def new(k: Kernel, map_type, key_size=4, value_size=8, max_entries=4, map_flags=0,
        **extra) -> int:
    return k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, map_flags=map_flags, **extra)


def fails(k: Kernel, cmd, **attr) -> int:
    """The errno of a call that must fail."""
    with pytest.raises(OSError) as e:
        k.bpf(cmd, **attr)
    return e.value.errno


def update(k, fd, key, value, flags=ANY):
    return k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key, value=value, flags=flags)


def lookup(k, fd, key):
    return k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key)


def keys(k, fd) -> list:
    """get_next_key from None until ENOENT (fails the test on a loop)."""
    out, key = [], None
    while True:
        try:
            key = k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=key)
        except OSError as e:
            assert e.errno == ENOENT
            return out
        out.append(key)
        assert len(out) <= 1 << 16, "get_next_key does not end"


def contents(k, fd) -> dict:
    return {key: lookup(k, fd, key) for key in keys(k, fd)}


def percpu(map_type) -> bool:
    return map_type in (MapType.PERCPU_HASH, MapType.PERCPU_ARRAY)


def sys_size(map_type, value_size) -> int:
    """Bytes of a value from user space: ncpus round_up(value_size, 8) slots per-CPU."""
    return NCPUS * ((value_size + 7) & ~7) if percpu(map_type) else value_size


def value(map_type, value_size, seed: int) -> bytes:
    """A distinct value with zero per-CPU padding (what the map gives back)."""
    if not percpu(map_type):
        return bytes((seed + i) & 0xFF for i in range(value_size))
    slot = (value_size + 7) & ~7
    return b"".join(bytes((seed + 16 * c + i) & 0xFF for i in range(value_size)).ljust(slot, b"\0")
                    for c in range(NCPUS))


DATA_TYPES = [MapType.HASH, MapType.PERCPU_HASH, MapType.ARRAY, MapType.PERCPU_ARRAY]
HASHES = [MapType.HASH, MapType.PERCPU_HASH]
ARRAYS = [MapType.ARRAY, MapType.PERCPU_ARRAY]
name = lambda t: t.name            # noqa: E731


@pytest.fixture
def k():
    return Kernel(ncpus=NCPUS)


def filled(k, map_type, value_size=8, max_entries=4, n=2):
    """A map with keys 0..n-1 holding value(i); returns (fd, contents)."""
    fd = new(k, map_type, value_size=value_size, max_entries=max_entries)
    for i in range(n):
        update(k, fd, u32(i), value(map_type, value_size, i + 1))
    return fd, contents(k, fd)


# -- round trips ------------------------------------------------------------------
@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
@pytest.mark.parametrize("value_size", [1, 4, 5, 8, 12, 64])
def test_update_then_lookup(k, map_type, value_size):
    fd = new(k, map_type, value_size=value_size)
    v = value(map_type, value_size, 0x41)
    assert len(v) == sys_size(map_type, value_size)
    assert update(k, fd, u32(2), v) == 0
    assert lookup(k, fd, u32(2)) == v
    v2 = value(map_type, value_size, 0x90)
    assert update(k, fd, u32(2), v2) == 0
    assert lookup(k, fd, u32(2)) == v2


@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_elements_start_zeroed(k, map_type):
    fd = new(k, map_type, value_size=12, max_entries=3)
    assert contents(k, fd) == {u32(i): bytes(sys_size(map_type, 12)) for i in range(3)}


@pytest.mark.parametrize("map_type", [MapType.PERCPU_HASH, MapType.PERCPU_ARRAY], ids=name)
def test_percpu_value_is_ncpus_rounded_slots(k, map_type):
    fd = new(k, map_type, value_size=4)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=bytes(4 * NCPUS)) == EINVAL
    v = b"".join(u32(0x1000 + c) + bytes(4) for c in range(NCPUS))
    update(k, fd, u32(0), v)
    got = lookup(k, fd, u32(0))
    assert len(got) == 8 * NCPUS
    assert [got[8 * c:8 * c + 4] for c in range(NCPUS)] == [u32(0x1000 + c) for c in range(NCPUS)]


@pytest.mark.parametrize("map_type", [MapType.PERCPU_HASH, MapType.PERCPU_ARRAY], ids=name)
def test_percpu_padding_bytes_are_kept(k, map_type):
    fd = new(k, map_type, value_size=5)
    v = bytes(range(1, 8 * NCPUS + 1))
    update(k, fd, u32(0), v)
    assert lookup(k, fd, u32(0)) == v


# -- sizes, NULL pointers and flags ------------------------------------------------
@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
def test_wrong_key_size_is_einval(k, map_type):
    fd, before = filled(k, map_type)
    v = value(map_type, 8, 7)
    for bad in (b"", bytes(3), bytes(5), bytes(8)):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=bad, value=v, flags=ANY) == EINVAL
        assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=bad) == EINVAL
        assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=bad) == EINVAL
        assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=bad) == EINVAL
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
def test_wrong_value_size_is_einval(k, map_type):
    fd, before = filled(k, map_type)
    size = sys_size(map_type, 8)
    for bad in (0, 1, size - 1, size + 1, 2 * size):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=bytes(bad)) == EINVAL
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(3), value=bytes(bad)) == EINVAL
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
def test_missing_key_or_value_is_efault(k, map_type):
    """A NULL key or value pointer: copy_from_user faults."""
    fd, before = filled(k, map_type)
    v = value(map_type, 8, 3)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=None, value=v) == EFAULT
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=None) == EFAULT
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=None) == EFAULT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=None) == EFAULT
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=object(), value=v) == EFAULT
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
@pytest.mark.parametrize("flags", [3, F_LOCK, F_LOCK | EXIST, 8, 16, 1 << 32, (1 << 64) - 1])
def test_bad_update_flags_are_einval(k, map_type, flags):
    fd, before = filled(k, map_type)
    for key in (u32(0), u32(3)):           # present (or in range) and absent
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key,
                     value=value(map_type, 8, 9), flags=flags) == EINVAL
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", DATA_TYPES, ids=name)
@pytest.mark.parametrize("flags", [NOEXIST, EXIST, F_LOCK, 8, 1 << 32])
def test_bad_lookup_flags_are_einval(k, map_type, flags):
    fd, before = filled(k, map_type)
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(0), flags=flags) == EINVAL
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", HASHES, ids=name)      # arrays refuse every delete
def test_delete_with_flags_is_einval(k, map_type):
    fd, before = filled(k, map_type)
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(0), flags=ANY | 1) == EINVAL
    assert contents(k, fd) == before


# -- hash maps --------------------------------------------------------------------
@pytest.mark.parametrize("map_type", HASHES, ids=name)
def test_hash_update_flags(k, map_type):
    fd, before = filled(k, map_type)
    v = value(map_type, 8, 0x70)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=v, flags=NOEXIST) == EEXIST
    assert contents(k, fd) == before
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(9), value=v, flags=EXIST) == ENOENT
    assert contents(k, fd) == before
    assert update(k, fd, u32(0), v, EXIST) == 0
    assert update(k, fd, u32(9), v, NOEXIST) == 0
    assert contents(k, fd) == {**before, u32(0): v, u32(9): v}


@pytest.mark.parametrize("map_type", HASHES, ids=name)
@pytest.mark.parametrize("map_flags", [0, 1], ids=["prealloc", "no_prealloc"])
def test_full_hash_is_e2big(k, map_type, map_flags):
    fd = new(k, map_type, max_entries=3, map_flags=map_flags)
    for i in range(3):
        update(k, fd, u32(i), value(map_type, 8, i))
    full = contents(k, fd)
    for flags in (ANY, NOEXIST):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(7), value=value(map_type, 8, 7),
                     flags=flags) == E2BIG
    assert contents(k, fd) == full
    # replacing in a full map is fine; NOEXIST on a present key is EEXIST, not E2BIG
    assert update(k, fd, u32(1), value(map_type, 8, 0x55), EXIST) == 0
    assert update(k, fd, u32(2), value(map_type, 8, 0x56), ANY) == 0
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=value(map_type, 8, 1),
                 flags=NOEXIST) == EEXIST
    full.update({u32(1): value(map_type, 8, 0x55), u32(2): value(map_type, 8, 0x56)})
    assert contents(k, fd) == full
    # a delete makes room again
    k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(0))
    assert update(k, fd, u32(7), value(map_type, 8, 7), NOEXIST) == 0
    assert sorted(keys(k, fd)) == [u32(1), u32(2), u32(7)]


@pytest.mark.parametrize("map_type", HASHES, ids=name)
def test_hash_missing_key_is_enoent(k, map_type):
    fd, before = filled(k, map_type)
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(5)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(5)) == ENOENT
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(5)) == ENOENT
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", HASHES, ids=name)
def test_hash_delete_and_lookup_and_delete(k, map_type):
    fd, before = filled(k, map_type, n=3)
    assert k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(0)) == 0
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(1), flags=F_LOCK) == EINVAL
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(1), flags=8) == EINVAL
    assert k.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(1)) == before[u32(1)]
    assert contents(k, fd) == {u32(2): before[u32(2)]}


@pytest.mark.parametrize("map_type", HASHES, ids=name)
def test_hash_get_next_key(k, map_type):
    fd = new(k, map_type, max_entries=64)
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=None) == ENOENT
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=u32(1)) == ENOENT
    wanted = {u32(i * 7919) for i in range(50)}
    for key in wanted:
        update(k, fd, key, value(map_type, 8, 1))
    order = keys(k, fd)
    assert len(order) == len(wanted) and set(order) == wanted
    first = order[0]
    assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=None) == first
    assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=u32(12345678)) == first   # absent key
    for a, b in zip(order, order[1:]):
        assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=a) == b
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=order[-1]) == ENOENT
    # deleting keeps the walk whole over what is left
    for key in order[::3]:
        k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=fd, key=key)
    rest = keys(k, fd)
    assert sorted(rest) == sorted(set(order) - set(order[::3]))


def test_hash_key_size_other_than_4(k):
    fd = new(k, MapType.HASH, key_size=13, value_size=3, max_entries=8)
    a, b = b"a" * 13, b"b" * 13
    update(k, fd, a, b"xyz")
    update(k, fd, b, b"uvw")
    assert contents(k, fd) == {a: b"xyz", b: b"uvw"}
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(0)) == EINVAL


# -- arrays -----------------------------------------------------------------------
@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_update_flags(k, map_type):
    fd, before = filled(k, map_type)
    v = value(map_type, 8, 0x33)
    for key in (u32(0), u32(3)):           # set or still zero: every element exists
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key, value=v,
                     flags=NOEXIST) == EEXIST
    assert contents(k, fd) == before
    assert update(k, fd, u32(3), v, EXIST) == 0
    assert contents(k, fd) == {**before, u32(3): v}


@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_index_out_of_range(k, map_type):
    fd, before = filled(k, map_type)
    v = value(map_type, 8, 0x44)
    for idx in (4, 5, 1 << 31, (1 << 32) - 1):
        for flags in (ANY, EXIST):
            assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(idx), value=v,
                         flags=flags) == E2BIG
        # the flags are checked before the index, the index before NOEXIST
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(idx), value=v, flags=3) == EINVAL
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(idx), value=v,
                     flags=NOEXIST) == E2BIG
        assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(idx)) == ENOENT
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_delete_is_einval(k, map_type):
    fd, before = filled(k, map_type)
    for idx in (0, 3, 4, 1 << 31):
        assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(idx)) == EINVAL
    assert contents(k, fd) == before


@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_lookup_and_delete_is_enotsupp_and_keeps(k, map_type):
    fd, before = filled(k, map_type)
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(0)) == ENOTSUPP
    assert contents(k, fd) == before            # nothing is deleted


@pytest.mark.parametrize("map_type", ARRAYS, ids=name)
def test_array_get_next_key(k, map_type):
    fd = new(k, map_type, max_entries=5)
    assert keys(k, fd) == [u32(i) for i in range(5)]
    for idx, nxt in ((None, 0), (0, 1), (3, 4), (5, 0), (1 << 31, 0), ((1 << 32) - 1, 0)):
        key = None if idx is None else u32(idx)
        assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=key) == u32(nxt)
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=u32(4)) == ENOENT
    one = new(k, map_type, max_entries=1)
    assert keys(k, one) == [u32(0)]


# -- fds ----------------------------------------------------------------------------
ELEM_CALLS = [
    (Cmd.MAP_LOOKUP_ELEM, dict(key=u32(0))),
    (Cmd.MAP_UPDATE_ELEM, dict(key=u32(0), value=bytes(8))),
    (Cmd.MAP_DELETE_ELEM, dict(key=u32(0))),
    (Cmd.MAP_GET_NEXT_KEY, dict(key=None)),
    (Cmd.MAP_LOOKUP_AND_DELETE_ELEM, dict(key=u32(0))),
    (Cmd.MAP_FREEZE, dict()),
]


@pytest.mark.parametrize("cmd,attr", ELEM_CALLS, ids=lambda c: getattr(c, "name", ""))
def test_bad_fd_is_ebadf(k, cmd, attr):
    fd = new(k, MapType.HASH)
    update(k, fd, u32(0), bytes(8))
    for bad in (0, 2, 99, -1, fd + 1, "3", 3.0):
        assert fails(k, cmd, map_fd=bad, **attr) == EBADF
    k.close(fd)
    assert fails(k, cmd, map_fd=fd, **attr) == EBADF


@pytest.mark.parametrize("cmd,attr", ELEM_CALLS, ids=lambda c: getattr(c, "name", ""))
def test_fd_of_another_kind_is_einval(k, cmd, attr):
    """An fd that is open but not a map (a program, a link...): __bpf_map_get's EINVAL.
    No other object kinds can be created yet, so one is installed directly."""
    fd = k.fds.install(BpfObject(1000))
    assert fails(k, cmd, map_fd=fd, **attr) == EINVAL


# -- types whose elements userbpf does not store yet --------------------------------
NO_STORAGE = [(MapType.CGROUP_ARRAY, 4, 4, 4, 0)]


def test_perf_event_array_elements_answer_as_the_kernel(k):
    """PERF_EVENT_ARRAY (kernel/perf_array, compared with the live kernel in
    test_perf_array_elem.py): a map fd is not a perf event (EBADF), lookups
    are ENOTSUPP, deletes of empty slots ENOENT, next keys array-like."""
    fd = new(k, MapType.PERF_EVENT_ARRAY, 4, 4, 4, 0)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=u32(fd)) == EBADF
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(4), value=u32(fd)) == E2BIG
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(0)) == ENOTSUPP
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=fd, key=u32(9)) == E2BIG
    assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=None) == u32(0)
    assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=u32(2)) == u32(3)


@pytest.mark.parametrize("spec", NO_STORAGE, ids=lambda s: s[0].name)
def test_types_without_storage_are_enotsupp(k, spec):
    """The kernel's own answer for a syscall lookup on these fd arrays is
    ENOTSUPP (no map_fd_sys_lookup_elem); userbpf gives it for every element
    command until it simulates perf events and cgroups."""
    t, ks, vs, me, fl = spec
    fd = new(k, t, ks, vs, me, fl)
    for cmd, attr in [(Cmd.MAP_LOOKUP_ELEM, dict(key=u32(0))),
                      (Cmd.MAP_UPDATE_ELEM, dict(key=u32(0), value=u32(fd))),
                      (Cmd.MAP_DELETE_ELEM, dict(key=u32(0))),
                      (Cmd.MAP_GET_NEXT_KEY, dict(key=None)),
                      (Cmd.MAP_LOOKUP_AND_DELETE_ELEM, dict(key=u32(0)))]:
        e = fails(k, cmd, map_fd=fd, **attr)
        assert e == ENOTSUPP, (cmd, e)
    # the fd checks still come first
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd + 50, key=u32(0)) == EBADF


# -- fd maps: PROG_ARRAY, ARRAY_OF_MAPS, HASH_OF_MAPS ---------------------------------
def live_map_ids(k) -> list:
    return sorted(k.map_ids.live)


def map_id(k, fd) -> int:
    return k.fds.get(fd).id


@pytest.fixture
def of_maps(k):
    """A template ARRAY(4, 8, 4), a matching map, and misfits."""
    tpl = new(k, MapType.ARRAY, value_size=8, max_entries=4)
    return dict(tpl=tpl, same=new(k, MapType.ARRAY, value_size=8, max_entries=4),
                bigger=new(k, MapType.ARRAY, value_size=8, max_entries=5),
                wider=new(k, MapType.ARRAY, value_size=16, max_entries=4),
                hash=new(k, MapType.HASH, value_size=8, max_entries=4),
                flagged=new(k, MapType.ARRAY, value_size=8, max_entries=4,
                            map_flags=F_INNER_MAP))


def test_array_of_maps(k, of_maps):
    o = new(k, MapType.ARRAY_OF_MAPS, value_size=4, max_entries=2, inner_map_fd=of_maps["tpl"])
    same = of_maps["same"]
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=o, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(2)) == E2BIG
    for flags in (NOEXIST, EXIST, 3, F_LOCK):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(same),
                     flags=flags) == EINVAL
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(2), value=u32(same)) == E2BIG
    for misfit in ("bigger", "wider", "hash", "flagged"):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0),
                     value=u32(of_maps[misfit])) == EINVAL, misfit
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(99)) == EBADF
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u64(same)) == EINVAL
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=o, key=u32(0)) == ENOENT   # nothing stored
    assert update(k, o, u32(1), u32(same)) == 0
    assert lookup(k, o, u32(1)) == u32(map_id(k, same))       # the id, not the fd
    assert update(k, o, u32(1), u32(of_maps["tpl"])) == 0      # replace
    assert lookup(k, o, u32(1)) == u32(map_id(k, of_maps["tpl"]))
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(1), value=u32(same),
                 flags=NOEXIST) == EINVAL
    assert lookup(k, o, u32(1)) == u32(map_id(k, of_maps["tpl"]))
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=o, key=u32(1)) == ENOTSUPP
    assert keys(k, o) == [u32(0), u32(1)]                      # array walk: every index
    assert k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(1)) == 0
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(1)) == ENOENT
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=o, key=u32(1)) == ENOENT


def test_hash_of_maps(k, of_maps):
    o = new(k, MapType.HASH_OF_MAPS, value_size=4, max_entries=2, inner_map_fd=of_maps["tpl"])
    same = of_maps["same"]
    sid = u32(map_id(k, same))
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=o, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(5)) == ENOENT
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=o, key=None) == ENOENT
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(same),
                 flags=EXIST) == ENOENT
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(same), flags=3) == EINVAL
    for misfit in ("bigger", "wider", "hash", "flagged"):
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0),
                     value=u32(of_maps[misfit])) == EINVAL, misfit
    # the fd is resolved before the flags are looked at
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(99),
                 flags=EXIST) == EBADF
    assert update(k, o, u32(1000), u32(same), NOEXIST) == 0
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(1000), value=u32(same),
                 flags=NOEXIST) == EEXIST
    assert update(k, o, u32(1000), u32(same), EXIST) == 0
    assert update(k, o, u32(7), u32(of_maps["tpl"])) == 0
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(8), value=u32(same)) == E2BIG
    assert lookup(k, o, u32(1000)) == sid
    assert sorted(keys(k, o)) == [u32(7), u32(1000)]
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=o, key=u32(7)) == ENOTSUPP
    assert k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(7)) == 0
    assert update(k, o, u32(8), u32(same)) == 0          # room again
    assert sorted(keys(k, o)) == [u32(8), u32(1000)]


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=name)
def test_inner_map_flag_allows_any_max_entries(k, outer):
    tpl = new(k, MapType.ARRAY, max_entries=4, map_flags=F_INNER_MAP)
    o = new(k, outer, value_size=4, max_entries=4, inner_map_fd=tpl)
    for i, me in enumerate((1, 4, 9, 1000)):
        m = new(k, MapType.ARRAY, max_entries=me, map_flags=F_INNER_MAP)
        assert update(k, o, u32(i), u32(m)) == 0
        assert lookup(k, o, u32(i)) == u32(map_id(k, m))
    plain = new(k, MapType.ARRAY, max_entries=4)          # map_flags must still match
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(plain)) == EINVAL


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=name)
def test_outer_map_keeps_inner_alive(k, outer):
    tpl = new(k, MapType.HASH, max_entries=4)
    o = new(k, outer, value_size=4, max_entries=4, inner_map_fd=tpl)
    m = new(k, MapType.HASH, max_entries=4)
    update(k, m, u32(1), u64(77))
    mid = map_id(k, m)
    update(k, o, u32(0), u32(m))
    k.close(m)
    assert mid in live_map_ids(k)
    again = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=mid)
    assert lookup(k, again, u32(1)) == u64(77)             # the same map, still there
    k.close(again)
    k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(0))
    assert mid not in live_map_ids(k)
    # replacing drops the old one too; closing the outer map drops what it holds
    a, b = new(k, MapType.HASH, max_entries=4), new(k, MapType.HASH, max_entries=4)
    aid, bid = map_id(k, a), map_id(k, b)
    update(k, o, u32(0), u32(a))
    update(k, o, u32(0), u32(b))
    k.close(a)
    k.close(b)
    assert aid not in live_map_ids(k) and bid in live_map_ids(k)
    k.close(o)
    assert bid not in live_map_ids(k)


def test_prog_array(k):
    pa = new(k, MapType.PROG_ARRAY, value_size=4, max_entries=2)
    m = new(k, MapType.ARRAY)
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=pa, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=pa, key=u32(0)) == ENOENT
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=pa, key=u32(2)) == E2BIG
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=u32(0), value=u32(m)) == EINVAL  # a map
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=u32(0), value=u32(99)) == EBADF
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=u32(0), value=u32(m),
                 flags=NOEXIST) == EINVAL
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=u32(5), value=u32(m)) == E2BIG
    assert keys(k, pa) == [u32(0), u32(1)]


def test_hash_of_maps_lock_flag_before_the_fd(k):
    tpl = new(k, MapType.ARRAY)
    o = new(k, MapType.HASH_OF_MAPS, value_size=4, max_entries=2, inner_map_fd=tpl)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(99),
                 flags=F_LOCK) == EINVAL
