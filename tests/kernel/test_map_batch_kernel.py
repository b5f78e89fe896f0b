"""Batch commands, differentially: userbpf's Kernel against the live kernel.

ARRAY, PERCPU_ARRAY and LPM_TRIE walk with get_next_key (the token is the
last key), so every batch lookup must match exactly: keys, values, count,
out_batch and errno, for random fills and random count/in_batch.

The hash maps walk bucket by bucket, and which keys share a bucket depends
on the hash function, so for them a whole walk is compared as a set (each
side returning each element once, ENOENT at the end with the past-the-end
bucket number as the token, which is the same on both: max_entries rounded
up to a power of two). Update and delete batches go key by key on both,
so their errno and count are compared exactly.
"""
from __future__ import annotations

import ctypes
import errno
import random
import struct

import pytest

from userbpf.kernel import Kernel
from userbpf.kernel.errors import ENOTSUPP
from userbpf.uapi import Cmd, MapType
from pairs import run_seeded

pytestmark = pytest.mark.kernel

LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE = (
    Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH, Cmd.MAP_UPDATE_BATCH,
    Cmd.MAP_DELETE_BATCH)
ENOENT, ENOSPC = errno.ENOENT, errno.ENOSPC
NO_PREALLOC, RDONLY, WRONLY = 1, 1 << 3, 1 << 4
HASHES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
LRUS = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
PERCPU = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY)
SENTINEL = 0xA5


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


class Side:
    """One map on one side; ``batch`` gives (errno, keys, values, count, out_batch)
    with out_batch None where nothing was written, count None where the
    command failed before counting."""

    def __init__(self, key_size: int, token_size: int):
        self.key_size, self.token_size = key_size, token_size


class Mine(Side):
    def __init__(self, k: Kernel, fd: int, key_size: int, token_size: int):
        super().__init__(key_size, token_size)
        self.k, self.fd = k, fd

    def batch(self, cmd, **attr):
        try:
            res = self.k.bpf(cmd, map_fd=self.fd, **attr)
            err = 0
        except OSError as e:
            err, res = e.errno, getattr(e, "batch", None)
        if res is None:
            return err, [], [], None, None
        if cmd in (UPDATE, DELETE):         # what the kernel hands back: count only
            return err, [], [], res.count, None
        return err, list(res.keys), list(res.values), res.count, res.out_batch

    def update(self, key, value):
        self.k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=self.fd, key=key, value=value)


class Theirs(Side):
    def __init__(self, host, hm, key_size: int, token_size: int):
        super().__init__(key_size, token_size)
        self.host, self.hm = host, hm

    def batch(self, cmd, in_batch=None, count=None, keys=None, values=None, elem_flags=0,
              flags=0):
        host, hm = self.host, self.hm
        ks, vs = hm.key_size, hm.value_buf_size
        if count is None:
            count = len(keys) if keys is not None and cmd in (UPDATE, DELETE) else 0
        kdata = b"".join(keys) if keys else b""
        vdata = b"".join(values) if values else b""
        kbuf = ctypes.create_string_buffer(kdata, max(count * ks, len(kdata), 1))
        vbuf = ctypes.create_string_buffer(vdata, max(count * vs, len(vdata), 1))
        inb = None
        if in_batch is not None:
            inb = ctypes.create_string_buffer(in_batch, max(len(in_batch), 8))
        outb = ctypes.create_string_buffer(bytes([SENTINEL]) * 16, 16)
        attr = host.MapBatchAttr(in_batch=ctypes.addressof(inb) if inb is not None else 0,
                                 out_batch=ctypes.addressof(outb), keys=ctypes.addressof(kbuf),
                                 values=ctypes.addressof(vbuf), count=count, map_fd=hm.fd,
                                 elem_flags=elem_flags, flags=flags)
        try:
            host.sys_bpf(cmd, attr)
            err = 0
        except host.HostError as e:
            err = e.errno
        n = attr.count
        if cmd in (UPDATE, DELETE):
            return err, [], [], n, None
        tok = outb.raw[:self.token_size]
        out = None if tok == bytes([SENTINEL]) * self.token_size else tok
        got_k = [kbuf.raw[i * ks:(i + 1) * ks] for i in range(n)] if n <= count else []
        got_v = [vbuf.raw[i * vs:(i + 1) * vs] for i in range(n)] if n <= count else []
        return err, got_k, got_v, n, out

    def update(self, key, value):
        self.hm.update(key, value)


def make_pair(host, k: Kernel, t, ks, vs, me, flags=0):
    hm = host.map_create(t, ks, vs, me, flags)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs, max_entries=me,
               map_flags=flags)
    tok = 4 if t in HASHES else ks
    return Mine(k, fd, ks, tok), Theirs(host, hm, ks, tok)


def close_pair(k, mine, theirs):
    theirs.hm.close()
    k.close(mine.fd)


def random_value(rng, t, vs, ncpus) -> bytes:
    if t not in PERCPU:
        return rng.randbytes(vs)
    return rng.randbytes(((vs + 7) & ~7) * ncpus)


def random_lpm_key(rng, ks) -> bytes:
    data_bits = (ks - 4) * 8
    plen = rng.choice([0, 1, 7, 8, 16, 24, data_bits, rng.randint(0, data_bits)])
    data = bytearray(rng.randbytes(ks - 4))
    # zero the bits past the prefix: the trie's keys are prefixes
    for bit in range(plen, data_bits):
        data[bit // 8] &= ~(0x80 >> (bit % 8)) & 0xFF
    return u32(plen) + bytes(data)


# -- ARRAY, PERCPU_ARRAY, LPM_TRIE: exact ---------------------------------------------------
GENERIC = (MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.LPM_TRIE)


def generic_sequence(host, k: Kernel, seed: int, nops: int = 40) -> None:
    rng = random.Random(seed)
    t = GENERIC[seed % 3]
    vs = rng.choice([1, 4, 5, 8, 12, 16])
    me = rng.randint(1, 12)
    if t == MapType.LPM_TRIE:
        ks = rng.choice([5, 6, 8])
        mine, theirs = make_pair(host, k, t, ks, vs, me, NO_PREALLOC)
        pool = list({random_lpm_key(rng, ks) for _ in range(me + 4)})
    else:
        ks = 4
        mine, theirs = make_pair(host, k, t, ks, vs, me)
        pool = [u32(i) for i in range(me + 2)] + [u32(0xFFFFFFFF)]
    tokens = [None]
    try:
        for key in rng.sample(pool, rng.randint(0, len(pool))):
            v = random_value(rng, t, vs, k.ncpus)
            a, b = (outcome(side.update, key, v) for side in (mine, theirs))
            assert a == b, f"seed {seed} fill {key.hex()}: {a} {b}"
        for step in range(nops):
            op = rng.choice([LOOKUP] * 5 + [UPDATE] + ([DELETE] if t == MapType.LPM_TRIE
                                                        else []))
            where = f"seed {seed} {t.name}({ks},{vs},{me}) step {step} {op.name}"
            if op == LOOKUP:
                r = rng.random()
                in_batch = rng.choice(tokens) if r < 0.6 else (
                    rng.choice(pool) if r < 0.9 else rng.randbytes(ks))
                count = rng.choice([0, 1, 1, 2, 3, me - 1, me, me + 1, rng.randint(0, 2 * me)])
                count = max(count, 0)
                attr = dict(in_batch=in_batch, count=count)
                if rng.random() < 0.05:
                    attr["elem_flags"] = rng.choice([1, 4])
                got, want = mine.batch(op, **attr), theirs.batch(op, **attr)
                where += f" in_batch {None if in_batch is None else in_batch.hex()} count {count}"
                if got[0] != 0 and got[3] is None:      # refused before counting
                    got, want = got[0], want[0]
                assert got == want, f"{where}: userbpf {got}, kernel {want}"
                if isinstance(got, tuple) and got[4] is not None:
                    tokens.append(got[4])
            else:
                n = rng.randint(1, 4)
                keys = [rng.choice(pool) for _ in range(n)]
                attr = dict(keys=keys)
                if op == UPDATE:
                    attr["values"] = [random_value(rng, t, vs, k.ncpus) for _ in range(n)]
                got, want = mine.batch(op, **attr), theirs.batch(op, **attr)
                assert got[:4] == want[:4], f"{where} {[x.hex() for x in keys]}: " \
                                            f"userbpf {got[:4]}, kernel {want[:4]}"
        # a final whole walk, one batch: everything, then ENOENT
        attr = dict(count=me + 1)
        assert mine.batch(LOOKUP, **attr) == theirs.batch(LOOKUP, **attr), f"seed {seed} end"
    finally:
        close_pair(k, mine, theirs)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", e.errno)


def test_generic_batches_match_kernel_exactly(host):
    run_seeded(host, generic_sequence, range(150))


@pytest.mark.slow
def test_generic_batches_match_kernel_exactly_long(host):
    run_seeded(host, generic_sequence, range(1000, 4000))


@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY], ids=lambda t: t.name)
def test_array_batches_of_every_size_match_kernel(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    rng = random.Random(5)
    mine, theirs = make_pair(host, k, map_type, 4, 12, 9)
    try:
        for i in range(9):
            v = random_value(rng, map_type, 12, k.ncpus)
            mine.update(u32(i), v)
            theirs.update(u32(i), v)
        for size in range(1, 12):
            token, walks = None, 0
            while True:
                got = mine.batch(LOOKUP, in_batch=token, count=size)
                assert got == theirs.batch(LOOKUP, in_batch=token, count=size), size
                walks += 1
                if got[0] == ENOENT:
                    break
                assert got[0] == 0 and walks < 20
                token = got[4]
    finally:
        close_pair(k, mine, theirs)


# -- the hash maps: update/delete errnos exact, walks as sets -----------------------------------
def lru_safe_live(me: int, ncpus: int) -> int:
    """How many elements a common-LRU map may hold with no eviction on any CPU:
    the kernel refills a CPU's local free list target_free nodes at a time and
    evicts when the global free list has fewer (see test_lru_kernel.py)."""
    target_free = max(1, min(128, me // ncpus // 2))
    return me - ncpus * target_free


def full_walk(side, count: int, delete: bool = False):
    """Batches of ``count`` (more where a bucket does not fit) until ENOENT:
    ({key: value}, the end token). Each key must come back once."""
    cmd = LOOKUP_AND_DELETE if delete else LOOKUP
    items, token = {}, None
    for _ in range(10000):
        n = count
        err, keys, values, got, out = side.batch(cmd, in_batch=token, count=n)
        while err == ENOSPC:
            assert got == 0 and keys == []
            n += 1
            err, keys, values, got, out = side.batch(cmd, in_batch=token, count=n)
        assert err in (0, ENOENT), err
        assert got == len(keys) <= n
        for key, v in zip(keys, values):
            assert key not in items, f"{key.hex()} twice"
            items[key] = v
        if err == ENOENT:
            return items, out
        assert got > 0
        token = out
    raise AssertionError("walk does not end")


def hash_sequence(host, k: Kernel, seed: int, nops: int = 30) -> None:
    rng = random.Random(seed)
    t = HASHES[seed % 4]
    ks, vs = rng.choice([1, 4, 8, 12]), rng.choice([1, 4, 8, 12])
    lru = t in LRUS
    if lru:
        me = rng.randint(8, 40)
        flags = 0
        npool = max(1, lru_safe_live(me, host.possible_cpus()))   # never evicts
    else:
        me = rng.randint(1, 10)
        flags = rng.choice([0, NO_PREALLOC])
        npool = 2 * me + 2                                        # fills up: E2BIG
    mine, theirs = make_pair(host, k, t, ks, vs, me, flags)
    nbuckets = 1 << (me - 1).bit_length()
    pool = list({rng.randbytes(ks) for _ in range(npool)})
    try:
        for step in range(nops):
            op = rng.choice([UPDATE, UPDATE, DELETE, LOOKUP, LOOKUP_AND_DELETE])
            where = f"seed {seed} {t.name}({ks},{vs},{me},{flags}) step {step} {op.name}"
            if op in (UPDATE, DELETE):
                n = rng.randint(1, me + 2)
                keys = [rng.choice(pool) for _ in range(n)]
                attr = dict(keys=keys)
                if op == UPDATE:
                    attr["values"] = [random_value(rng, t, vs, k.ncpus) for _ in range(n)]
                got, want = mine.batch(op, **attr), theirs.batch(op, **attr)
                assert got[:4] == want[:4], f"{where}: userbpf {got[:4]}, kernel {want[:4]}"
            else:
                count = rng.randint(1, me + 1)
                a, a_end = full_walk(mine, count, op == LOOKUP_AND_DELETE)
                b, b_end = full_walk(theirs, count, op == LOOKUP_AND_DELETE)
                assert a == b, f"{where}: the walks differ"
                assert a_end == b_end == u32(nbuckets), f"{where}: end token"
            # a few exact rules: past the last bucket, count 0, flags
            r = rng.random()
            if r < 0.2:
                attr = dict(in_batch=u32(nbuckets + rng.randint(0, 3)), count=me)
                got, want = mine.batch(LOOKUP, **attr), theirs.batch(LOOKUP, **attr)
                assert got[0] == want[0] == ENOENT and got[4] is want[4] is None, where
                assert got[3] == want[3] == 0, where
            elif r < 0.3:
                attr = dict(count=0, flags=rng.choice([0, 1]))
                got, want = mine.batch(LOOKUP, **attr), theirs.batch(LOOKUP, **attr)
                assert got[0] == want[0], where
        a, _ = full_walk(mine, me)
        b, _ = full_walk(theirs, me)
        assert a == b, f"seed {seed}: final contents differ"
    finally:
        close_pair(k, mine, theirs)


def test_hash_batches_match_kernel(host):
    run_seeded(host, hash_sequence, range(120))


@pytest.mark.slow
def test_hash_batches_match_kernel_long(host):
    run_seeded(host, hash_sequence, range(1000, 3000))


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_hash_walk_by_every_size_matches_kernel_as_sets(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    rng = random.Random(11)
    mine, theirs = make_pair(host, k, map_type, 8, 8, 64)
    n = lru_safe_live(64, k.ncpus) if map_type in LRUS else 64
    try:
        for _ in range(n):
            key, v = rng.randbytes(8), random_value(rng, map_type, 8, k.ncpus)
            mine.update(key, v)
            theirs.update(key, v)
        for size in range(1, n + 2, 3):
            a, a_end = full_walk(mine, size)
            b, b_end = full_walk(theirs, size)
            assert a == b and len(a) == n and a_end == b_end == u32(64), size
        a, _ = full_walk(mine, 5, delete=True)
        b, _ = full_walk(theirs, 5, delete=True)
        assert a == b and len(a) == n
        assert mine.batch(LOOKUP, count=n)[:4] == theirs.batch(LOOKUP, count=n)[:4] == \
            (ENOENT, [], [], 0)
    finally:
        close_pair(k, mine, theirs)


# -- which types have which command, permissions -----------------------------------------------
ALL = (LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE)
SPECS = {
    MapType.HASH: (4, 8, 4, 0), MapType.PERCPU_HASH: (4, 8, 4, 0),
    MapType.LRU_HASH: (4, 8, 4, 0), MapType.LRU_PERCPU_HASH: (4, 8, 4, 0),
    MapType.ARRAY: (4, 8, 4, 0), MapType.PERCPU_ARRAY: (4, 8, 4, 0),
    MapType.LPM_TRIE: (8, 8, 4, NO_PREALLOC), MapType.PROG_ARRAY: (4, 4, 4, 0),
    MapType.PERF_EVENT_ARRAY: (4, 4, 4, 0), MapType.CGROUP_ARRAY: (4, 4, 4, 0),
    MapType.QUEUE: (0, 8, 4, 0), MapType.STACK: (0, 8, 4, 0),
    MapType.BLOOM_FILTER: (0, 8, 4, 0), MapType.STACK_TRACE: (4, 8, 4, 0),
    MapType.DEVMAP: (4, 4, 4, 0), MapType.DEVMAP_HASH: (4, 4, 4, 0),
    MapType.SOCKMAP: (4, 4, 4, 0), MapType.SOCKHASH: (4, 4, 4, 0),
    MapType.CPUMAP: (4, 4, 4, 0), MapType.XSKMAP: (4, 4, 4, 0),
    MapType.REUSEPORT_SOCKARRAY: (4, 4, 4, 0), MapType.RINGBUF: (0, 0, 4096, 0),
}


def count_zero_errnos(lookup_side_pair) -> tuple:
    mine, theirs = lookup_side_pair
    return ([mine.batch(cmd, keys=[], values=[], count=0)[0] for cmd in ALL],
            [theirs.batch(cmd, count=0)[0] for cmd in ALL])


@pytest.mark.parametrize("map_type", list(SPECS), ids=lambda t: t.name)
def test_which_types_have_batch_ops_matches_kernel(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    mine, theirs = make_pair(host, k, map_type, *SPECS[map_type])
    try:
        got, want = count_zero_errnos((mine, theirs))
        assert got == want
        assert set(want) <= {0, ENOTSUPP}
    finally:
        close_pair(k, mine, theirs)


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS],
                         ids=lambda t: t.name)
def test_maps_of_maps_batch_ops_match_kernel(host, outer):
    k = Kernel(ncpus=host.possible_cpus())
    with host.map_create(MapType.ARRAY, 4, 8, 4) as tpl:
        hm = host.map_create(outer, 4, 4, 4, inner_map_fd=tpl.fd)
        inner = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=8,
                      max_entries=4)
        fd = k.bpf(Cmd.MAP_CREATE, map_type=outer, key_size=4, value_size=4, max_entries=4,
                   inner_map_fd=inner)
        try:
            got, want = count_zero_errnos((Mine(k, fd, 4, 4), Theirs(host, hm, 4, 4)))
            assert got == want
        finally:
            hm.close()


def host_fd_by_id(host, hm, mode: int):
    fd = host.sys_bpf(Cmd.MAP_GET_FD_BY_ID, struct.pack("<III", hm.info()["id"], 0, mode))
    return host.HostMap(fd, hm.map_type, hm.key_size, hm.value_size, hm.max_entries)


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.ARRAY, MapType.QUEUE],
                         ids=lambda t: t.name)
@pytest.mark.parametrize("how", ["rdonly", "wronly", "frozen"])
def test_permission_errnos_match_kernel(host, map_type, how):
    """EPERM for the wrong access, checked before whether the type has the op."""
    k = Kernel(ncpus=host.possible_cpus())
    ks = 0 if map_type == MapType.QUEUE else 4
    mine, theirs = make_pair(host, k, map_type, ks, 8, 4)
    extra = []
    try:
        if how == "frozen":
            theirs.hm.freeze()
            k.bpf(Cmd.MAP_FREEZE, map_fd=mine.fd)
            m2, t2 = mine, theirs
        else:
            mode = RDONLY if how == "rdonly" else WRONLY
            hfd = host_fd_by_id(host, theirs.hm, mode)
            extra.append(hfd)
            m2 = Mine(k, k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=k.fds.get(mine.fd).id,
                               open_flags=mode), ks, mine.token_size)
            t2 = Theirs(host, hfd, ks, theirs.token_size)
        for count in (0, 1):
            got = [m2.batch(cmd, keys=[bytes(ks)] * count, values=[bytes(8)] * count,
                            count=count)[0] for cmd in ALL]
            want = [t2.batch(cmd, keys=[bytes(ks)] * count, values=[bytes(8)] * count,
                             count=count)[0] for cmd in ALL]
            assert got == want, f"count {count}"
    finally:
        for m in extra:
            m.close()
        close_pair(k, mine, theirs)


def test_kernel_answers_test_map_batch_asserts(host):
    """What test_map_batch.py asserts userbpf answers, asked of the live kernel."""
    with host.map_create(MapType.HASH, 4, 8, 4) as hm:
        t = Theirs(host, hm, 4, 4)
        # count 0 with NULL keys and values: nothing to do, success
        assert t.batch(UPDATE, count=0)[0] == 0
        assert t.batch(DELETE, count=0)[0] == 0
        # elem_flags is checked before the (NULL) keys are read
        assert t.batch(UPDATE, count=1, elem_flags=1)[0] == errno.EINVAL
        assert t.batch(DELETE, count=1, elem_flags=4)[0] == errno.EINVAL
        # with a real keys buffer of count 1 but NULL values: EFAULT at element 0
        attr = host.MapBatchAttr(keys=ctypes.addressof(ctypes.create_string_buffer(4)),
                                 count=1, map_fd=hm.fd)
        with pytest.raises(host.HostError) as e:
            host.sys_bpf(UPDATE, attr)
        assert e.value.errno == errno.EFAULT and attr.count == 0
