"""LRU_HASH and LRU_PERCPU_HASH, differentially: userbpf's Kernel against the
live kernel, only where the kernel is deterministic.

The kernel's LRU is an approximation that can evict well before a map is
full (measured on 6.18, 2 possible CPUs):

* Common LRU: every update with valid flags takes a node first (LRU_HASH
  even for an existing key; LRU_PERCPU_HASH unless BPF_EXIST), from a
  per-CPU local free list refilled ``target_free`` nodes at a time from
  the global free list, where ``target_free = clamp(max_entries /
  possible_cpus / 2, 1, 128)``; a refill that finds fewer than that on
  the global list evicts to make up the difference. So a map holding
  more than ``max_entries - target_free`` elements evicts on updates of
  keys it already holds (with max_entries 1, updating the only key with
  BPF_EXIST evicts it and fails with ENOENT), and nodes left on other
  CPUs' local lists lower that bound by up to ``target_free`` per CPU.
* BPF_F_NO_COMMON_LRU: max_entries is rounded up to a multiple of the
  possible CPUs and split evenly; a bpf() update takes a node from the
  caller's CPU's list and evicts (several at once) when that list has
  none free.

Below those bounds nothing is evicted and both must answer every command
alike. Past them, only what holds for any eviction order is compared.
"""
from __future__ import annotations

import errno
import random

import pytest

from userbpf import hostbpf
from userbpf.kernel import Kernel

from pairs import Mine, Theirs, outcome, run_seeded, u32
from userbpf.uapi import Cmd, MapType

pytestmark = pytest.mark.kernel

ENOENT = errno.ENOENT
LRUS = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
ANY, NOEXIST, EXIST = 0, 1, 2
NO_COMMON_LRU = 1 << 1
UPDATE_FLAGS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5, 8, 1 << 32]
LOOKUP_FLAGS = [0] * 12 + [1, 2, 4, 8, 1 << 32]


def contents(side) -> dict:
    out, key = {}, None
    while True:
        st, key = outcome(side.get_next_key, key)
        if st == "err":
            assert key == ENOENT
            return out
        assert key not in out and len(out) <= 4096
        st, v = outcome(side.lookup, key)
        assert st == "ok", "the walk named a key the map does not hold"
        out[key] = v


def target_free(max_entries: int, ncpus: int) -> int:
    return max(1, min(128, max_entries // ncpus // 2))


def safe_live(max_entries: int, map_flags: int, ncpus: int) -> int:
    """The most elements a map may hold while an update takes a node with
    nothing evicted, whichever CPUs the process runs on (module doc)."""
    if map_flags & NO_COMMON_LRU:
        share = -(-max_entries // ncpus)          # max_entries rounded up, split evenly
        return share - 1
    return max_entries - ncpus * target_free(max_entries, ncpus)


def takes_node(map_type, flags: int) -> bool:
    """Whether the kernel's update takes a free node (and so may evict)."""
    if flags > EXIST:                              # EINVAL before anything
        return False
    return map_type == MapType.LRU_HASH or flags != EXIST


def random_value(rng, map_type, vs, ncpus) -> bytes:
    if map_type == MapType.LRU_PERCPU_HASH:
        return rng.randbytes(((vs + 7) & ~7) * ncpus)
    return rng.randbytes(vs)


def make_pair(host, k, t, ks, vs, me, flags):
    hm = host.map_create(t, ks, vs, me, flags)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs, max_entries=me,
               map_flags=flags)
    return Mine(k, fd), Theirs(hm)


# -- below the bounds: every answer alike ------------------------------------------------------
def run_sequence(host, k: Kernel, seed: int, nops: int = 60) -> None:
    rng = random.Random(seed)
    t = LRUS[seed % 2]
    flags = NO_COMMON_LRU if seed % 4 >= 2 else 0
    ks, vs = rng.choice([1, 4, 8, 12]), rng.choice([1, 4, 8, 12])
    ncpus = k.ncpus
    me = rng.randint(4, 48)
    cap = safe_live(me, flags, ncpus)
    assert cap >= 1
    mine, theirs = make_pair(host, k, t, ks, vs, me, flags)
    pool = list({rng.randbytes(ks) for _ in range(cap + 3)})
    present = set()
    ops = ["update"] * 4 + ["lookup"] * 2 + ["delete", "get_next_key", "lookup_and_delete"]
    try:
        for step in range(nops):
            op = rng.choice(ops)
            key = rng.choice(pool)
            if op == "update":
                fl = rng.choice(UPDATE_FLAGS)
                inserts = key not in present and fl in (ANY, NOEXIST)
                if takes_node(t, fl) and (len(present) > cap or
                                          (inserts and len(present) >= cap)):
                    # would go past the bound: update a key the map holds instead
                    if not present:
                        continue
                    key = rng.choice(sorted(present))
                args = (key, random_value(rng, t, vs, ncpus), fl)
            elif op in ("lookup", "lookup_and_delete"):
                args = (key, rng.choice(LOOKUP_FLAGS))
            elif op == "delete":
                args = (key,)
            else:
                args = (None if rng.random() < 0.3 else key,)
            got, want = outcome(getattr(mine, op), *args), outcome(getattr(theirs, op), *args)
            where = f"seed {seed} {t.name}({ks},{vs},{me},{flags:#x}) step {step} {op}{args!r}"
            if op == "get_next_key":
                # hash order differs; each names a key it holds, and from None
                # or an absent key both fail only on an empty map
                for side, res in ((mine, got), (theirs, want)):
                    assert res == ("err", ENOENT) or \
                        outcome(side.lookup, res[1])[0] == "ok", f"{where}: {res}"
                if args[0] is None or args[0] not in present:
                    assert got[0] == want[0], f"{where}: userbpf {got}, kernel {want}"
                continue
            assert got == want, f"{where}: userbpf {got}, kernel {want}"
            if got[0] == "ok":
                if op == "update":
                    present.add(key)
                elif op in ("delete", "lookup_and_delete"):
                    present.discard(key)
            assert len(present) <= cap
        mine_all, theirs_all = contents(mine), contents(theirs)
        assert mine_all == theirs_all, f"seed {seed}: final contents differ"
        assert set(mine_all) == present
    finally:
        theirs.m.close()
        k.close(mine.fd)


def test_lru_sequences_below_the_eviction_bound_match_kernel(host):
    run_seeded(host, run_sequence, range(200))


@pytest.mark.slow
def test_lru_sequences_below_the_eviction_bound_match_kernel_long(host):
    run_seeded(host, run_sequence, range(1000, 6000))


@pytest.mark.parametrize("map_type", LRUS, ids=lambda t: t.name)
def test_filling_to_the_bound_and_rewriting_evicts_nothing(host, map_type):
    """Fill to the bound, then rewrite every key with each valid flag: both
    keep every element with the last value written."""
    k = Kernel(ncpus=host.possible_cpus())
    rng = random.Random(3)
    for me in (4, 9, 16, 64, 200, 600):
        for flags in (0, NO_COMMON_LRU):
            cap = safe_live(me, flags, k.ncpus)
            mine, theirs = make_pair(host, k, map_type, 4, 8, me, flags)
            try:
                want = {}
                for i in range(cap):
                    v = random_value(rng, map_type, 8, k.ncpus)
                    assert outcome(mine.update, u32(i), v, NOEXIST) == \
                        outcome(theirs.update, u32(i), v, NOEXIST) == ("ok", 0)
                    want[u32(i)] = v
                for fl in (ANY, EXIST, NOEXIST):
                    for i in range(cap):
                        v = random_value(rng, map_type, 8, k.ncpus)
                        a, b = outcome(mine.update, u32(i), v, fl), \
                            outcome(theirs.update, u32(i), v, fl)
                        assert a == b == (("err", errno.EEXIST) if fl == NOEXIST else ("ok", 0))
                        if fl != NOEXIST:
                            want[u32(i)] = v
                assert contents(mine) == contents(theirs) == want, (me, flags)
            finally:
                theirs.m.close()
                k.close(mine.fd)


# -- past the bounds: what holds for any eviction order -----------------------------------------
def overfill(host, k: Kernel, map_type, me: int, flags: int, extra: int, seed: int) -> None:
    rng = random.Random(seed)
    mine, theirs = make_pair(host, k, map_type, 4, 8, me, flags)
    share = -(-me // k.ncpus)
    limit = share if flags & NO_COMMON_LRU else me
    try:
        written = {}
        order = []
        for i in range(me + extra):
            key = u32(rng.getrandbits(32))
            v = random_value(rng, map_type, 8, k.ncpus)
            # an update of a new key always succeeds: an element is evicted if need be
            assert outcome(mine.update, key, v) == outcome(theirs.update, key, v) == ("ok", 0)
            written[key] = v
            if key in order:
                order.remove(key)
            order.append(key)
        where = f"{map_type.name} max_entries {me} flags {flags:#x} +{extra} seed {seed}"
        for side in (mine, theirs):
            held = contents(side)
            assert 1 <= len(held) <= limit, where
            assert all(written[key] == v for key, v in held.items()), where
            assert order[-1] in held, where            # the last insert is never the victim
        # userbpf's LRU is exact: it holds the most recently written keys
        assert set(contents(mine)) == set(order[-min(limit, len(order)):]), where
    finally:
        theirs.m.close()
        k.close(mine.fd)


@pytest.mark.parametrize("map_type", LRUS, ids=lambda t: t.name)
@pytest.mark.parametrize("flags", [0, NO_COMMON_LRU], ids=["common", "no_common_lru"])
def test_overfilled_lru_holds_at_most_max_entries_and_the_newest_key(host, map_type, flags):
    k = Kernel(ncpus=host.possible_cpus())
    for seed, me in enumerate((1, 2, 3, 5, 8, 13, 64, 130)):
        for extra in (1, 3, me, 2 * me + 1):
            overfill(host, k, map_type, me, flags, extra, seed)
    assert not k.map_ids.live


@pytest.mark.slow
@pytest.mark.parametrize("map_type", LRUS, ids=lambda t: t.name)
@pytest.mark.parametrize("flags", [0, NO_COMMON_LRU], ids=["common", "no_common_lru"])
def test_overfilled_lru_long(host, map_type, flags):
    k = Kernel(ncpus=host.possible_cpus())
    rng = random.Random(99)
    for seed in range(300):
        me = rng.randint(1, 300)
        overfill(host, k, map_type, me, flags, rng.randint(1, 2 * me), seed)


def test_kernel_evicts_below_max_entries(host):
    """The kernel behaviour the bounds above work around, pinned down: with
    max_entries 1, rewriting the only key with BPF_EXIST evicts it (the new
    node is taken first) and fails with ENOENT. userbpf rewrites in place."""
    k = Kernel(ncpus=host.possible_cpus())
    with host.map_create(MapType.LRU_HASH, 4, 8, 1) as hm:
        theirs = Theirs(hm)
        mine = Mine(k, k.bpf(Cmd.MAP_CREATE, map_type=MapType.LRU_HASH, key_size=4,
                             value_size=8, max_entries=1))
        for side in (mine, theirs):
            side.update(u32(1), bytes(8), NOEXIST)
        assert outcome(theirs.update, u32(1), b"x" * 8, EXIST) == ("err", ENOENT)
        assert contents(theirs) == {}
        assert outcome(mine.update, u32(1), b"x" * 8, EXIST) == ("ok", 0)
        assert contents(mine) == {u32(1): b"x" * 8}


MULTI_CPU = hostbpf.possible_cpus() > 1


@pytest.mark.parametrize("map_type", LRUS, ids=lambda t: t.name)
def test_no_common_lru_max_entries_in_info_match_kernel(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    for me in (1, 3, 5, 7, 8):
        with host.map_create(map_type, 4, 8, me, NO_COMMON_LRU) as hm:
            fd = k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=4, value_size=8,
                       max_entries=me, map_flags=NO_COMMON_LRU)
            mine = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info_len=80).max_entries
            assert mine == hm.info()["max_entries"], me
