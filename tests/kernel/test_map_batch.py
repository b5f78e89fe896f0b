"""The batch commands through Kernel.bpf: every rule of kernel/batch.py.

MAP_LOOKUP_BATCH, MAP_LOOKUP_AND_DELETE_BATCH, MAP_UPDATE_BATCH and
MAP_DELETE_BATCH, with the kernel's two lookup walks: the generic one
(ARRAY, PERCPU_ARRAY, LPM_TRIE: the token is the last key) and the hash
maps' own (the token is a u32 bucket number, buckets are never split).
A failed command raises OSError with ``.batch`` holding what was done.
The live kernel's answers for the same rules are in test_map_batch_kernel.py.
"""
from __future__ import annotations

import errno
import struct

import pytest

from userbpf.kernel import Kernel
from userbpf.kernel.batch import BatchResult
from userbpf.kernel.errors import ENOTSUPP
from userbpf.uapi import Cmd, MapType

EINVAL, ENOENT, ENOSPC, E2BIG, EFAULT, EPERM, EEXIST = (
    errno.EINVAL, errno.ENOENT, errno.ENOSPC, errno.E2BIG, errno.EFAULT, errno.EPERM,
    errno.EEXIST)
LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE = (
    Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH, Cmd.MAP_UPDATE_BATCH,
    Cmd.MAP_DELETE_BATCH)
NO_PREALLOC, RDONLY, WRONLY, ZERO_SEED, F_LOCK = 1, 1 << 3, 1 << 4, 1 << 6, 4
NCPUS = 3                                # odd, so per-CPU strides show
HASHES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
PERCPU = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY)


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def lpm(prefixlen: int, addr: int) -> bytes:
    """struct bpf_lpm_trie_key with 4 data bytes (an IPv4 prefix)."""
    return struct.pack("<I", prefixlen) + struct.pack(">I", addr)


def new(k: Kernel, map_type, key_size=4, value_size=8, max_entries=8, map_flags=0) -> int:
    return k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, map_flags=map_flags)


def value(k: Kernel, map_type, i: int, value_size: int = 8) -> bytes:
    """A distinct value for element i as user space writes it (per-CPU:
    one round_up(value_size, 8) slot per CPU, padding bytes included)."""
    one = bytes((i * 31 + j) & 0xFF for j in range(value_size))
    if map_type not in PERCPU:
        return one
    slot = (value_size + 7) & ~7
    return b"".join(bytes((i * 7 + c * 13 + j) & 0xFF for j in range(slot))
                    for c in range(k.ncpus))


def call(k: Kernel, cmd, **attr):
    """(0, BatchResult) or (errno, the BatchResult attached to the error)."""
    try:
        res = k.bpf(cmd, **attr)
    except OSError as e:
        return e.errno, getattr(e, "batch", None)
    assert isinstance(res, BatchResult)
    return 0, res


def fails(k: Kernel, cmd, **attr) -> int:
    with pytest.raises(OSError) as e:
        k.bpf(cmd, **attr)
    return e.value.errno


def contents(k: Kernel, fd) -> dict:
    out, key = {}, None
    while True:
        try:
            key = k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=key)
        except FileNotFoundError:
            return out
        out[key] = k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key)
        assert len(out) <= 4096


def fill(k, fd, map_type, keys, value_size=8) -> dict:
    items = {key: value(k, map_type, i, value_size) for i, key in enumerate(keys)}
    for key, v in items.items():
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key, value=v)
    return items


def buckets(k, fd) -> list:
    """The hash map's buckets, [(key, value)] each, in bucket order."""
    core = k.fds.get(fd).core
    return [core.bucket_items(b) for b in range(core.nbuckets)]


@pytest.fixture
def k():
    return Kernel(ncpus=NCPUS)


# -- the generic walk: ARRAY, PERCPU_ARRAY, LPM_TRIE -----------------------------------
@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY], ids=lambda t: t.name)
def test_array_walk_token_is_the_last_key(k, map_type):
    fd = new(k, map_type, value_size=12, max_entries=5)
    items = fill(k, fd, map_type, [u32(i) for i in range(5)], 12)
    got = k.bpf(LOOKUP, map_fd=fd, count=2)
    assert got == BatchResult([u32(0), u32(1)], [items[u32(0)], items[u32(1)]], 2, u32(1))
    got = k.bpf(LOOKUP, map_fd=fd, in_batch=got.out_batch, count=2)
    assert got == BatchResult([u32(2), u32(3)], [items[u32(2)], items[u32(3)]], 2, u32(3))
    # the last element comes with ENOENT: the walk ran off the end
    err, res = call(k, LOOKUP, map_fd=fd, in_batch=got.out_batch, count=2)
    assert err == ENOENT
    assert res == BatchResult([u32(4)], [items[u32(4)]], 1, u32(4))
    # from the last key: ENOENT, nothing, no token
    assert call(k, LOOKUP, map_fd=fd, in_batch=u32(4), count=2) == \
        (ENOENT, BatchResult([], [], 0, None))


def test_array_batch_of_exactly_the_rest_succeeds_then_enoent(k):
    fd = new(k, MapType.ARRAY, max_entries=4)
    items = fill(k, fd, MapType.ARRAY, [u32(i) for i in range(4)])
    got = k.bpf(LOOKUP, map_fd=fd, in_batch=u32(1), count=2)
    assert got == BatchResult([u32(2), u32(3)], [items[u32(2)], items[u32(3)]], 2, u32(3))
    assert call(k, LOOKUP, map_fd=fd, in_batch=got.out_batch, count=2) == \
        (ENOENT, BatchResult([], [], 0, None))
    whole = k.bpf(LOOKUP, map_fd=fd, count=4)
    assert whole.keys == [u32(i) for i in range(4)] and whole.count == 4


def test_array_token_past_the_end_starts_over(k):
    """array get_next_key: an index >= max_entries gives index 0."""
    fd = new(k, MapType.ARRAY, max_entries=3)
    fill(k, fd, MapType.ARRAY, [u32(i) for i in range(3)])
    for start in (3, 100, 0xFFFFFFFF):
        assert k.bpf(LOOKUP, map_fd=fd, in_batch=u32(start), count=2).keys == [u32(0), u32(1)]


def test_array_walk_includes_never_written_elements(k):
    fd = new(k, MapType.ARRAY, max_entries=3)
    got = k.bpf(LOOKUP, map_fd=fd, count=3)
    assert got == BatchResult([u32(0), u32(1), u32(2)], [bytes(8)] * 3, 3, u32(2))


def test_percpu_array_values_are_every_cpus_slots(k):
    fd = new(k, MapType.PERCPU_ARRAY, value_size=5, max_entries=2)
    v = value(k, MapType.PERCPU_ARRAY, 3, 5)
    assert len(v) == NCPUS * 8
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=v)
    got = k.bpf(LOOKUP, map_fd=fd, count=2)
    assert got.values == [bytes(NCPUS * 8), v]


def test_lpm_trie_walk_follows_get_next_key(k):
    fd = new(k, MapType.LPM_TRIE, key_size=8, max_entries=16, map_flags=NO_PREALLOC)
    prefixes = [lpm(8, 0x0A000000), lpm(16, 0x0A010000), lpm(24, 0x0A010200),
                lpm(0, 0), lpm(32, 0xC0A80101), lpm(12, 0xAC100000)]
    items = fill(k, fd, MapType.LPM_TRIE, prefixes)
    order = list(contents(k, fd))
    assert sorted(order) == sorted(prefixes)
    got = k.bpf(LOOKUP, map_fd=fd, count=4)
    assert got == BatchResult(order[:4], [items[x] for x in order[:4]], 4, order[3])
    err, res = call(k, LOOKUP, map_fd=fd, in_batch=got.out_batch, count=4)
    assert err == ENOENT
    assert res == BatchResult(order[4:], [items[x] for x in order[4:]], 2, order[5])


def test_lpm_trie_token_that_is_not_in_the_trie_starts_over(k):
    """trie_get_next_key: an absent key (or a bad prefixlen) walks from the start."""
    fd = new(k, MapType.LPM_TRIE, key_size=8, max_entries=4, map_flags=NO_PREALLOC)
    fill(k, fd, MapType.LPM_TRIE, [lpm(8, 0x0A000000), lpm(24, 0x0A000100)])
    first = k.bpf(LOOKUP, map_fd=fd, count=1).keys
    for token in (lpm(16, 0x0B000000), lpm(33, 0)):
        assert k.bpf(LOOKUP, map_fd=fd, in_batch=token, count=1).keys == first


def test_empty_lpm_trie_is_enoent_without_a_token(k):
    fd = new(k, MapType.LPM_TRIE, key_size=8, max_entries=4, map_flags=NO_PREALLOC)
    assert call(k, LOOKUP, map_fd=fd, count=3) == (ENOENT, BatchResult([], [], 0, None))


def test_generic_token_of_the_wrong_size_is_einval(k):
    fd = new(k, MapType.ARRAY, max_entries=3)
    assert fails(k, LOOKUP, map_fd=fd, in_batch=b"\0\0", count=1) == EINVAL


# -- the hash walk: bucket numbers ------------------------------------------------------
@pytest.fixture(params=HASHES, ids=lambda t: t.name)
def hashmap(request, k):
    """A zero-seeded hash map with 16 buckets holding 16 elements, some
    buckets holding more than one (asserted)."""
    t = request.param
    fd = new(k, t, max_entries=16, map_flags=ZERO_SEED)
    items = fill(k, fd, t, [u32(i * 0x01010101) for i in range(16)])
    bs = buckets(k, fd)
    assert len(bs) == 16 and max(len(b) for b in bs) >= 2
    assert dict(x for b in bs for x in b) == items == contents(k, fd)
    return t, fd, items, bs


def test_hash_token_is_the_next_bucket_and_buckets_are_never_split(k, hashmap):
    t, fd, items, bs = hashmap
    big = max(range(16), key=lambda b: len(bs[b]))
    count = len(bs[big])
    token, seen = None, []
    while True:
        err, res = call(k, LOOKUP, map_fd=fd, in_batch=token, count=count)
        start = 0 if token is None else struct.unpack("<I", token)[0]
        # whole buckets from `start`, as many as fit in count
        want, b = [], start
        while b < 16 and len(want) + len(bs[b]) <= count:
            want += bs[b]
            b += 1
        assert res.keys == [key for key, _ in want] and res.values == [v for _, v in want]
        assert res.count == len(want) and res.out_batch == u32(b)
        seen += res.keys
        if b == 16:
            assert err == ENOENT
            break
        assert err == 0 and len(bs[b]) > count - len(want)
        token = res.out_batch
    assert sorted(seen) == sorted(items)


def test_hash_enospc_when_the_first_bucket_does_not_fit(k, hashmap):
    t, fd, items, bs = hashmap
    big = max(range(16), key=lambda b: len(bs[b]))
    err, res = call(k, LOOKUP, map_fd=fd, in_batch=u32(big), count=len(bs[big]) - 1)
    assert err == ENOSPC
    assert res == BatchResult([], [], 0, u32(big))
    # empty buckets before it are skipped, then it still does not fit
    first = next(b for b in range(16) if bs[b])
    err, res = call(k, LOOKUP, map_fd=fd, count=len(bs[first]) - 1) if len(bs[first]) > 1 \
        else (ENOSPC, BatchResult([], [], 0, u32(first)))
    assert (err, res) == (ENOSPC, BatchResult([], [], 0, u32(first)))


def test_hash_lookup_and_delete_enospc_deletes_nothing(k, hashmap):
    t, fd, items, bs = hashmap
    big = max(range(16), key=lambda b: len(bs[b]))
    err, res = call(k, LOOKUP_AND_DELETE, map_fd=fd, in_batch=u32(big),
                    count=len(bs[big]) - 1)
    assert (err, res.count) == (ENOSPC, 0)
    assert contents(k, fd) == items


def test_hash_token_past_the_last_bucket_is_enoent_without_a_token(k, hashmap):
    t, fd, items, bs = hashmap
    for b in (16, 17, 1 << 31, 0xFFFFFFFF):
        assert call(k, LOOKUP, map_fd=fd, in_batch=u32(b), count=100) == \
            (ENOENT, BatchResult([], [], 0, None))
    # the last bucket itself is walked, and the end is ENOENT with token 16
    err, res = call(k, LOOKUP, map_fd=fd, in_batch=u32(15), count=100)
    assert err == ENOENT and res.keys == [key for key, _ in bs[15]]
    assert res.out_batch == u32(16)


def test_hash_token_reads_only_its_first_four_bytes(k, hashmap):
    t, fd, items, bs = hashmap
    a = call(k, LOOKUP, map_fd=fd, in_batch=u32(3), count=100)
    b = call(k, LOOKUP, map_fd=fd, in_batch=u32(3) + b"\xff" * 4, count=100)
    assert a == b and a[0] == ENOENT


def test_whole_hash_map_in_one_batch_is_enoent_with_everything(k, hashmap):
    t, fd, items, bs = hashmap
    err, res = call(k, LOOKUP, map_fd=fd, count=16)
    assert err == ENOENT and res.count == 16 and res.out_batch == u32(16)
    assert dict(zip(res.keys, res.values)) == items
    assert contents(k, fd) == items                  # a lookup deletes nothing


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_empty_hash_map_is_enoent_with_the_end_token(k, map_type):
    fd = new(k, map_type, max_entries=5)                # 8 buckets
    assert call(k, LOOKUP, map_fd=fd, count=4) == (ENOENT, BatchResult([], [], 0, u32(8)))
    assert call(k, LOOKUP_AND_DELETE, map_fd=fd, count=4) == \
        (ENOENT, BatchResult([], [], 0, u32(8)))


@pytest.mark.parametrize("max_entries,nbuckets", [(1, 1), (2, 2), (3, 4), (8, 8), (9, 16),
                                                  (100, 128)])
def test_hash_buckets_are_max_entries_rounded_up_to_a_power_of_two(k, max_entries, nbuckets):
    fd = new(k, MapType.HASH, max_entries=max_entries)
    assert call(k, LOOKUP, map_fd=fd, in_batch=u32(nbuckets - 1), count=1) == \
        (ENOENT, BatchResult([], [], 0, u32(nbuckets)))
    assert call(k, LOOKUP, map_fd=fd, in_batch=u32(nbuckets), count=1) == \
        (ENOENT, BatchResult([], [], 0, None))


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_lookup_and_delete_batches_empty_the_map(k, map_type):
    fd = new(k, map_type, max_entries=32)
    items = fill(k, fd, map_type, [u32(i * 977) for i in range(25)])
    got, token, calls = {}, None, 0
    while True:
        calls += 1
        err, res = call(k, LOOKUP_AND_DELETE, map_fd=fd, in_batch=token, count=6)
        assert err in (0, ENOENT, ENOSPC)
        if err == ENOSPC:                 # a bucket of more than 6: take it with more room
            err, res = call(k, LOOKUP_AND_DELETE, map_fd=fd, in_batch=token, count=25)
        for key, v in zip(res.keys, res.values):
            assert key not in got
            got[key] = v
        # what came back is gone, what did not is still there
        assert set(contents(k, fd)) == set(items) - set(got)
        if err == ENOENT:
            break
        token = res.out_batch
        assert calls < 100
    assert got == items and contents(k, fd) == {}


# -- every batch size walks every element exactly once ----------------------------------
def walk_all(k, fd, size: int, delete: bool = False) -> list:
    """Batches of ``size`` until ENOENT; a hash bucket bigger than ``size``
    (ENOSPC, nothing done) is taken with a count just big enough."""
    cmd = LOOKUP_AND_DELETE if delete else LOOKUP
    out, token = [], None
    for _ in range(10000):
        asked = size
        err, res = call(k, cmd, map_fd=fd, in_batch=token, count=size)
        if err == ENOSPC:
            assert res.count == 0 and res.keys == []
            while err == ENOSPC:
                asked += 1
                err, res = call(k, cmd, map_fd=fd, in_batch=token, count=asked)
            assert res.count == asked or err == ENOENT
        assert err in (0, ENOENT), err
        assert res.count == len(res.keys) == len(res.values) <= asked
        out += list(zip(res.keys, res.values))
        if err == ENOENT:
            return out
        assert res.count > 0
        token = res.out_batch
    raise AssertionError("the walk does not end")


@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.LPM_TRIE,
                                      *HASHES], ids=lambda t: t.name)
def test_batches_of_every_size_return_every_element_once(k, map_type):
    n = 13
    if map_type == MapType.LPM_TRIE:
        fd = new(k, map_type, key_size=8, max_entries=n, map_flags=NO_PREALLOC)
        keys = [lpm(8 + i, 0x0A000000 | (i << 16)) for i in range(n)]
    elif map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY):
        fd = new(k, map_type, max_entries=n)
        keys = [u32(i) for i in range(n)]
    else:
        fd = new(k, map_type, max_entries=n)
        keys = [u32(i * 0x9E3779B1 & 0xFFFFFFFF) for i in range(n)]
    items = fill(k, fd, map_type, keys)
    for size in range(1, n + 2):
        got = walk_all(k, fd, size)
        assert len(got) == n and dict(got) == items, f"batch size {size}"
        if map_type not in HASHES:       # the generic walk is get_next_key's order
            assert [key for key, _ in got] == list(contents(k, fd))


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_lookup_and_delete_by_every_size_empties_the_map(k, map_type):
    for size in range(1, 11):
        fd = new(k, map_type, max_entries=10)
        items = fill(k, fd, map_type, [u32(i * 7919 + size) for i in range(10)])
        got = walk_all(k, fd, size, delete=True)
        assert dict(got) == items and len(got) == 10, f"batch size {size}"
        assert contents(k, fd) == {}
        k.close(fd)


# -- count 0, elem_flags, flags --------------------------------------------------------
@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.LPM_TRIE, *HASHES],
                         ids=lambda t: t.name)
def test_count_zero_does_nothing(k, map_type):
    ks = 8 if map_type == MapType.LPM_TRIE else 4
    fd = new(k, map_type, key_size=ks, max_entries=4,
             map_flags=NO_PREALLOC if map_type == MapType.LPM_TRIE else 0)
    key = lpm(8, 0x0A000000) if ks == 8 else u32(1)
    fill(k, fd, map_type, [key])
    items = contents(k, fd)
    empty = BatchResult([], [], 0, None)
    assert k.bpf(LOOKUP, map_fd=fd, count=0) == empty
    # count 0 is checked before the token: a past-the-end bucket is no ENOENT
    assert k.bpf(LOOKUP, map_fd=fd, in_batch=u32(1 << 30) + bytes(ks - 4), count=0) == empty
    assert k.bpf(LOOKUP, map_fd=fd) == empty                 # count defaults to 0
    assert k.bpf(UPDATE, map_fd=fd, keys=[key], values=[value(k, map_type, 9)],
                 count=0) == empty
    if map_type != MapType.ARRAY:
        assert k.bpf(DELETE, map_fd=fd, keys=[key], count=0) == empty
    if map_type in HASHES:
        assert k.bpf(LOOKUP_AND_DELETE, map_fd=fd, count=0) == empty
    assert contents(k, fd) == items


def test_update_and_delete_of_count_zero_need_no_keys(k):
    fd = new(k, MapType.HASH)
    assert k.bpf(UPDATE, map_fd=fd, count=0) == BatchResult([], [], 0, None)
    assert k.bpf(DELETE, map_fd=fd, count=0) == BatchResult([], [], 0, None)


def test_update_batch_elem_flags_are_checked_before_the_keys(k):
    fd = new(k, MapType.HASH)
    assert fails(k, UPDATE, map_fd=fd, count=1, elem_flags=1) == EINVAL
    assert fails(k, DELETE, map_fd=fd, count=1, elem_flags=F_LOCK) == EINVAL


@pytest.mark.parametrize("elem_flags", [1, 2, F_LOCK, 8, F_LOCK | 1, 1 << 32])
@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.LPM_TRIE, MapType.HASH,
                                      MapType.LRU_PERCPU_HASH], ids=lambda t: t.name)
def test_elem_flags_other_than_zero_are_einval(k, map_type, elem_flags):
    """Only BPF_F_LOCK is allowed, and only for values with a bpf_spin_lock
    (which needs BTF, so never here): every non-zero elem_flags is EINVAL,
    also with count 0, and nothing changes."""
    lpm_map = map_type == MapType.LPM_TRIE
    fd = new(k, map_type, key_size=8 if lpm_map else 4, max_entries=4,
             map_flags=NO_PREALLOC if lpm_map else 0)
    key = lpm(8, 0x0A000000) if lpm_map else u32(1)
    fill(k, fd, map_type, [key])
    items = contents(k, fd)
    new_value = value(k, map_type, 5)
    for count in (0, 1):
        assert fails(k, LOOKUP, map_fd=fd, count=count, elem_flags=elem_flags) == EINVAL
        assert fails(k, UPDATE, map_fd=fd, keys=[key], values=[new_value], count=count,
                     elem_flags=elem_flags) == EINVAL
        if map_type != MapType.ARRAY:
            assert fails(k, DELETE, map_fd=fd, keys=[key], count=count,
                         elem_flags=elem_flags) == EINVAL
        if map_type in HASHES:
            assert fails(k, LOOKUP_AND_DELETE, map_fd=fd, count=count,
                         elem_flags=elem_flags) == EINVAL
    assert contents(k, fd) == items


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_hash_lookups_take_no_flags(k, map_type):
    fd = new(k, map_type)
    items = fill(k, fd, map_type, [u32(1), u32(2)])
    for flags in (1, 2, 4, 1 << 40):
        for count in (0, 5):
            assert fails(k, LOOKUP, map_fd=fd, count=count, flags=flags) == EINVAL
            assert fails(k, LOOKUP_AND_DELETE, map_fd=fd, count=count, flags=flags) == EINVAL
    assert contents(k, fd) == items


def test_generic_lookup_update_and_delete_ignore_flags(k):
    """Only the hash lookups look at ``flags``: the generic functions never read it."""
    fd = new(k, MapType.ARRAY, max_entries=2)
    assert k.bpf(LOOKUP, map_fd=fd, count=2, flags=1).count == 2
    assert k.bpf(UPDATE, map_fd=fd, keys=[u32(0)], values=[u32(7) * 2], flags=3).count == 1
    h = new(k, MapType.HASH)
    assert k.bpf(UPDATE, map_fd=h, keys=[u32(0)], values=[bytes(8)], flags=1).count == 1
    assert k.bpf(DELETE, map_fd=h, keys=[u32(0)], flags=1).count == 1


# -- which types have which command ----------------------------------------------------
# (map_type, key_size, value_size, max_entries, map_flags) -> the commands it has;
# read off the live kernel 6.18 (test_map_batch_kernel.py asks it again)
TYPES = {
    MapType.HASH: ((4, 8, 4, 0), {LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE}),
    MapType.PERCPU_HASH: ((4, 8, 4, 0), {LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE}),
    MapType.LRU_HASH: ((4, 8, 4, 0), {LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE}),
    MapType.LRU_PERCPU_HASH: ((4, 8, 4, 0), {LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE}),
    MapType.ARRAY: ((4, 8, 4, 0), {LOOKUP, UPDATE}),
    MapType.PERCPU_ARRAY: ((4, 8, 4, 0), {LOOKUP, UPDATE}),
    MapType.LPM_TRIE: ((8, 8, 4, NO_PREALLOC), {LOOKUP, UPDATE, DELETE}),
    MapType.PROG_ARRAY: ((4, 4, 4, 0), set()),
    MapType.PERF_EVENT_ARRAY: ((4, 4, 4, 0), set()),
    MapType.CGROUP_ARRAY: ((4, 4, 4, 0), set()),
    MapType.QUEUE: ((0, 8, 4, 0), set()),
    MapType.STACK: ((0, 8, 4, 0), set()),
    MapType.BLOOM_FILTER: ((0, 8, 4, 0), set()),
    MapType.STACK_TRACE: ((4, 8, 4, 0), set()),
    MapType.DEVMAP: ((4, 4, 4, 0), set()),
    MapType.DEVMAP_HASH: ((4, 4, 4, 0), set()),
    MapType.SOCKMAP: ((4, 4, 4, 0), set()),
    MapType.SOCKHASH: ((4, 4, 4, 0), set()),
    MapType.CPUMAP: ((4, 4, 4, 0), set()),
    MapType.XSKMAP: ((4, 4, 4, 0), set()),
    MapType.REUSEPORT_SOCKARRAY: ((4, 4, 4, 0), set()),
    MapType.RINGBUF: ((0, 0, 4096, 0), set()),
}
ALL = (LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE)


@pytest.mark.parametrize("map_type", list(TYPES), ids=lambda t: t.name)
def test_types_without_a_batch_op_are_enotsupp(k, map_type):
    (ks, vs, me, fl), has = TYPES[map_type]
    fd = new(k, map_type, ks, vs, me, fl)
    for cmd in ALL:
        err, _ = call(k, cmd, map_fd=fd, keys=[], values=[], count=0)
        assert err == (0 if cmd in has else ENOTSUPP), cmd.name


@pytest.mark.parametrize("outer,has", [(MapType.ARRAY_OF_MAPS, {LOOKUP, UPDATE}),
                                       (MapType.HASH_OF_MAPS, set(ALL))],
                         ids=["ARRAY_OF_MAPS", "HASH_OF_MAPS"])
def test_maps_of_maps_have_batch_ops(k, outer, has):
    inner = new(k, MapType.ARRAY, 4, 8, 4)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=outer, key_size=4, value_size=4, max_entries=4,
               inner_map_fd=inner)
    for cmd in ALL:
        err, _ = call(k, cmd, map_fd=fd, keys=[], values=[], count=0)
        assert err == (0 if cmd in has else ENOTSUPP), cmd.name
    assert k.bpf(UPDATE, map_fd=fd, keys=[u32(1)], values=[u32(inner)]).count == 1
    err, got = call(k, LOOKUP, map_fd=fd, count=4)
    # the walk passes over empty slots and ends with ENOENT, as the kernel's
    assert err == ENOENT and got.keys == [u32(1)]
    assert got.values == [u32(k.fds.get(inner).id)]


# -- permissions -------------------------------------------------------------------------
def open_as(k, fd, mode) -> int:
    return k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=k.fds.get(fd).id, open_flags=mode)


@pytest.mark.parametrize("how", ["rdonly_fd", "rdonly_map", "frozen"])
def test_read_only_fds_and_frozen_maps_refuse_writes(k, how):
    fd = new(k, MapType.HASH, map_flags=RDONLY if how == "rdonly_map" else 0)
    if how == "rdonly_map":
        items = {}
        ro = fd
    else:
        items = fill(k, fd, MapType.HASH, [u32(1), u32(2)])
        ro = open_as(k, fd, RDONLY) if how == "rdonly_fd" else fd
        if how == "frozen":
            k.bpf(Cmd.MAP_FREEZE, map_fd=fd)
    assert fails(k, UPDATE, map_fd=ro, keys=[u32(3)], values=[bytes(8)]) == EPERM
    assert fails(k, DELETE, map_fd=ro, keys=[u32(1)]) == EPERM
    assert fails(k, LOOKUP_AND_DELETE, map_fd=ro, count=8) == EPERM
    assert fails(k, UPDATE, map_fd=ro, count=0, keys=[], values=[]) == EPERM
    err, res = call(k, LOOKUP, map_fd=ro, count=8)
    assert err == ENOENT and dict(zip(res.keys, res.values)) == items
    assert contents(k, fd) == items


def test_write_only_fds_refuse_reads(k):
    fd = new(k, MapType.HASH)
    wo = open_as(k, fd, WRONLY)
    assert fails(k, LOOKUP, map_fd=wo, count=8) == EPERM
    assert fails(k, LOOKUP_AND_DELETE, map_fd=wo, count=8) == EPERM
    assert fails(k, LOOKUP, map_fd=wo, count=0) == EPERM
    assert k.bpf(UPDATE, map_fd=wo, keys=[u32(1), u32(2)], values=[bytes(8)] * 2).count == 2
    assert k.bpf(DELETE, map_fd=wo, keys=[u32(1)]).count == 1
    assert list(contents(k, fd)) == [u32(2)]


def test_permissions_come_before_enotsupp(k):
    fd = new(k, MapType.ARRAY)
    assert fails(k, DELETE, map_fd=open_as(k, fd, RDONLY), keys=[u32(0)]) == EPERM
    assert fails(k, LOOKUP_AND_DELETE, map_fd=open_as(k, fd, WRONLY), count=1) == EPERM
    q = new(k, MapType.QUEUE, 0, 8, 4)
    assert fails(k, LOOKUP, map_fd=open_as(k, q, WRONLY), count=1) == EPERM
    assert fails(k, LOOKUP, map_fd=q, count=1) == ENOTSUPP


def test_bad_fds(k):
    assert fails(k, LOOKUP, map_fd=99, count=1) == errno.EBADF
    assert fails(k, UPDATE, map_fd=-1, keys=[], values=[]) == errno.EBADF
    assert fails(k, LOOKUP, map_fd=3, count=1, bogus=1) == EINVAL      # no such attr field


# -- updates and deletes: key by key, stop at the first failure ---------------------------
def test_update_batch_stops_at_the_first_failure_with_count_done(k):
    fd = new(k, MapType.ARRAY, max_entries=4)
    keys = [u32(0), u32(1), u32(9), u32(2)]
    vals = [value(k, MapType.ARRAY, i) for i in range(4)]
    err, res = call(k, UPDATE, map_fd=fd, keys=keys, values=vals)
    assert err == E2BIG
    assert res == BatchResult(keys[:2], vals[:2], 2, None)
    assert contents(k, fd) == {u32(0): vals[0], u32(1): vals[1], u32(2): bytes(8),
                               u32(3): bytes(8)}


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.PERCPU_HASH], ids=lambda t: t.name)
def test_update_batch_into_a_full_hash_is_e2big_and_loses_nothing(k, map_type):
    fd = new(k, map_type, max_entries=3)
    items = fill(k, fd, map_type, [u32(1), u32(2)])
    keys = [u32(1), u32(3), u32(4), u32(5)]            # replace, insert, then full
    vals = [value(k, map_type, 10 + i) for i in range(4)]
    err, res = call(k, UPDATE, map_fd=fd, keys=keys, values=vals)
    assert (err, res.count, res.keys) == (E2BIG, 2, keys[:2])
    assert contents(k, fd) == {u32(1): vals[0], u32(2): items[u32(2)], u32(3): vals[1]}


@pytest.mark.parametrize("map_type", [MapType.LRU_HASH, MapType.LRU_PERCPU_HASH],
                         ids=lambda t: t.name)
def test_update_batch_into_a_full_lru_evicts(k, map_type):
    fd = new(k, map_type, max_entries=3)
    keys = [u32(i) for i in range(5)]
    vals = [value(k, map_type, i) for i in range(5)]
    assert k.bpf(UPDATE, map_fd=fd, keys=keys, values=vals).count == 5
    assert contents(k, fd) == dict(zip(keys[2:], vals[2:]))   # batch updates: BPF_ANY


def test_update_batch_uses_bpf_any(k):
    fd = new(k, MapType.HASH)
    fill(k, fd, MapType.HASH, [u32(1)])
    got = k.bpf(UPDATE, map_fd=fd, keys=[u32(1), u32(2)], values=[b"A" * 8, b"B" * 8])
    assert got.count == 2 and contents(k, fd) == {u32(1): b"A" * 8, u32(2): b"B" * 8}


def test_update_batch_bad_element_sizes_stop_there(k):
    fd = new(k, MapType.HASH)
    err, res = call(k, UPDATE, map_fd=fd, keys=[u32(1), b"\1\2", u32(3)],
                    values=[bytes(8)] * 3)
    assert (err, res.count) == (EINVAL, 1)
    err, res = call(k, UPDATE, map_fd=fd, keys=[u32(2), u32(3)], values=[bytes(8), bytes(4)])
    assert (err, res.count) == (EINVAL, 1)
    assert set(contents(k, fd)) == {u32(1), u32(2)}


def test_update_batch_count_takes_a_prefix(k):
    fd = new(k, MapType.HASH)
    keys, vals = [u32(i) for i in range(4)], [bytes([i]) * 8 for i in range(4)]
    assert k.bpf(UPDATE, map_fd=fd, keys=keys, values=vals, count=2) == \
        BatchResult(keys[:2], vals[:2], 2, None)
    assert set(contents(k, fd)) == set(keys[:2])
    assert k.bpf(UPDATE, map_fd=fd, keys=keys, values=vals).count == 4   # count: len(keys)


def test_fewer_keys_or_values_than_count_is_efault(k):
    fd = new(k, MapType.HASH)
    assert fails(k, UPDATE, map_fd=fd, keys=[u32(1)], values=[bytes(8)], count=2) == EFAULT
    assert fails(k, UPDATE, map_fd=fd, keys=[u32(1), u32(2)], values=[bytes(8)]) == EFAULT
    assert fails(k, UPDATE, map_fd=fd, keys=[u32(1)], values=None) == EFAULT
    assert fails(k, DELETE, map_fd=fd, keys=[u32(1)], count=2) == EFAULT
    assert fails(k, DELETE, map_fd=fd, keys=None, count=1) == EFAULT
    assert contents(k, fd) == {}


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.LRU_PERCPU_HASH, MapType.LPM_TRIE],
                         ids=lambda t: t.name)
def test_delete_batch_stops_at_the_first_failure_with_count_done(k, map_type):
    lpm_map = map_type == MapType.LPM_TRIE
    fd = new(k, map_type, key_size=8 if lpm_map else 4,
             map_flags=NO_PREALLOC if lpm_map else 0)
    keys = [lpm(8 + i, 0x0A000000) if lpm_map else u32(i) for i in range(4)]
    missing = lpm(30, 0x0B000000) if lpm_map else u32(99)
    items = fill(k, fd, map_type, keys)
    err, res = call(k, DELETE, map_fd=fd, keys=[keys[0], keys[2], missing, keys[1]])
    assert err == ENOENT
    assert res == BatchResult([keys[0], keys[2]], [], 2, None)
    assert contents(k, fd) == {keys[1]: items[keys[1]], keys[3]: items[keys[3]]}
    # deleting the same key twice in one batch: the second is ENOENT
    err, res = call(k, DELETE, map_fd=fd, keys=[keys[1], keys[1]])
    assert (err, res.count) == (ENOENT, 1)
    assert k.bpf(DELETE, map_fd=fd, keys=[keys[3]]) == BatchResult([keys[3]], [], 1, None)
    assert contents(k, fd) == {}


def test_batch_errors_are_oserror_subclasses_carrying_the_batch(k):
    fd = new(k, MapType.HASH)
    with pytest.raises(FileNotFoundError) as e:
        k.bpf(LOOKUP, map_fd=fd, count=3)
    assert e.value.errno == ENOENT and e.value.batch == BatchResult([], [], 0, u32(8))


def test_short_hash_token_is_an_oserror(k):
    fd = new(k, MapType.HASH)
    with pytest.raises(OSError) as e:
        k.bpf(LOOKUP, map_fd=fd, in_batch=b"\1", count=1)
    assert e.value.errno == EFAULT
