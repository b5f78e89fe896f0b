"""Element commands, differentially: userbpf's Kernel against the live kernel.

The same seeded random sequence of update (any flags, invalid ones too),
lookup, delete, get_next_key and lookup_and_delete runs on a userbpf map and
on a live-kernel map (userbpf.hostbpf) of the same geometry; every step must
give the same value or the same errno, and the maps must end up holding the
same things. Hash iteration order depends on the hash function, so for hash
maps iteration is compared as a set (each side's get_next_key must name a
key that side holds); array iteration order is compared exactly.

Per-CPU padding bytes, LOOKUP_AND_DELETE on arrays and MAP_DELETE_ELEM
flags have their own tests in test_map_elem.py (and the kernel's answers
are pinned in test_kernel_errnos_those_tests_assert below).
"""
from __future__ import annotations

import errno
import random
import struct

import pytest

from userbpf.kernel import Kernel

from pairs import Mine, Theirs, outcome, run_seeded, u32
from userbpf.uapi import Cmd, MapType

pytestmark = pytest.mark.kernel

ENOENT = errno.ENOENT
HASHES = (MapType.HASH, MapType.PERCPU_HASH)
PERCPU = (MapType.PERCPU_HASH, MapType.PERCPU_ARRAY)
NO_PREALLOC = 1
UPDATE_FLAGS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5, 6, 8, 1 << 32]
LOOKUP_FLAGS = [0] * 12 + [1, 2, 4, 8, 1 << 32]


def walk(side) -> list:
    out, key = [], None
    while True:
        st, key = outcome(side.get_next_key, key)
        if st == "err":
            assert key == ENOENT
            return out
        out.append(key)
        assert len(out) <= 4096


def contents(side) -> dict:
    """key -> value for every key the walk names that holds a value (an fd
    array walks every index, stored or not)."""
    out = {}
    for key in walk(side):
        st, v = outcome(side.lookup, key, 0)
        assert st == "ok" or v == ENOENT
        if st == "ok":
            out[key] = v
    return out


def random_spec(rng: random.Random):
    t = rng.choice([MapType.HASH, MapType.PERCPU_HASH, MapType.ARRAY, MapType.PERCPU_ARRAY])
    vs = rng.choice([1, 4, 5, 8, 12, 16, 24])
    if t in HASHES:
        return t, rng.choice([1, 3, 4, 8]), vs, rng.randint(1, 6), rng.choice([0, NO_PREALLOC])
    return t, 4, vs, rng.randint(1, 6), 0


def random_value(rng, t, vs, ncpus) -> bytes:
    """Random bytes; per-CPU slots padded with zeros (padding: see module doc)."""
    if t not in PERCPU:
        return rng.randbytes(vs)
    slot = (vs + 7) & ~7
    return b"".join(rng.randbytes(vs).ljust(slot, b"\0") for _ in range(ncpus))


def run_sequence(host, k: Kernel, seed: int, nops: int = 50) -> None:
    rng = random.Random(seed)
    t, ks, vs, me, flags = random_spec(rng)
    ncpus = k.ncpus
    hm = host.map_create(t, ks, vs, me, flags)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs, max_entries=me,
               map_flags=flags)
    mine, theirs = Mine(k, fd), Theirs(hm)
    is_hash = t in HASHES
    if is_hash:   # a pool of keys a little larger than the map, so it fills up
        pool = list({rng.randbytes(ks) for _ in range(2 * me + 2)})
    else:
        pool = [u32(i) for i in range(me + 2)] + [u32(1 << 31), u32(0xFFFFFFFF)]
    ops = ["update"] * 4 + ["lookup"] * 2 + ["delete", "get_next_key"]
    if is_hash:
        ops += ["lookup_and_delete"]
    try:
        for step in range(nops):
            op = rng.choice(ops)
            key = rng.choice(pool)
            if op == "update":
                args = (key, random_value(rng, t, vs, ncpus), rng.choice(UPDATE_FLAGS))
            elif op in ("lookup", "lookup_and_delete"):
                args = (key, rng.choice(LOOKUP_FLAGS))
            elif op == "delete":
                args = (key,)
            else:
                args = (None if rng.random() < 0.3 else key,)
            got, want = outcome(getattr(mine, op), *args), outcome(getattr(theirs, op), *args)
            where = f"seed {seed} {t.name}({ks},{vs},{me},{flags}) step {step} {op}{args!r}"
            if op == "get_next_key" and is_hash:
                # Each side names a key it holds, or ENOENT. From None or an
                # absent key both start at their first key (so both fail only
                # on an empty map); after a present key, whether one follows
                # depends on the hash order, so the two are not compared.
                for side, res in ((mine, got), (theirs, want)):
                    assert res == ("err", ENOENT) or \
                        outcome(side.lookup, res[1], 0)[0] == "ok", f"{where}: {res}"
                if args[0] is None or outcome(mine.lookup, args[0], 0)[0] == "err":
                    assert got[0] == want[0], f"{where}: userbpf {got}, kernel {want}"
                continue
            assert got == want, f"{where}: userbpf {got}, kernel {want}"
        mine_items, their_items = contents(mine), contents(theirs)
        assert mine_items == their_items, f"seed {seed}: final contents differ"
        if not is_hash:
            assert walk(mine) == walk(theirs), f"seed {seed}: array walk differs"
    finally:
        hm.close()
        k.close(fd)


def test_random_sequences_match_kernel(host):
    run_seeded(host, run_sequence, range(300))


@pytest.mark.slow
def test_random_sequences_match_kernel_long(host):
    run_seeded(host, run_sequence, range(1000, 11000))


@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY],
                         ids=lambda t: t.name)
def test_array_walk_matches_kernel(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    for me in (1, 2, 7, 64):
        with host.map_create(map_type, 4, 8, me) as hm:
            fd = k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=4, value_size=8,
                       max_entries=me)
            mine, theirs = Mine(k, fd), Theirs(hm)
            assert walk(mine) == walk(theirs) == [u32(i) for i in range(me)]
            for start in (0, me - 1, me, me + 5, 1 << 31):
                assert outcome(mine.get_next_key, u32(start)) == \
                    outcome(theirs.get_next_key, u32(start))


@pytest.mark.parametrize("map_type", HASHES, ids=lambda t: t.name)
def test_full_hash_walk_matches_kernel_as_a_set(host, map_type):
    k = Kernel(ncpus=host.possible_cpus())
    rng = random.Random(7)
    with host.map_create(map_type, 8, 8, 200) as hm:
        fd = k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=8, value_size=8,
                   max_entries=200)
        mine, theirs = Mine(k, fd), Theirs(hm)
        keys = [rng.randbytes(8) for _ in range(200)]
        v = random_value(rng, map_type, 8, k.ncpus)
        for key in keys:
            assert outcome(mine.update, key, v, 1) == outcome(theirs.update, key, v, 1)
        extra = rng.randbytes(8)
        assert outcome(mine.update, extra, v, 0) == outcome(theirs.update, extra, v, 0) \
            == ("err", errno.E2BIG)
        for key in keys[::5]:
            assert outcome(mine.delete, key) == outcome(theirs.delete, key) == ("ok", 0)
        mw, tw = walk(mine), walk(theirs)
        assert len(mw) == len(set(mw)) == len(tw) == 160
        assert set(mw) == set(tw) == set(keys) - set(keys[::5])


# -- maps of maps -------------------------------------------------------------------
# inner maps: (map_type, key_size, value_size, max_entries, map_flags); 0 is the template
INNERS = [(MapType.ARRAY, 4, 8, 4, 0), (MapType.ARRAY, 4, 8, 4, 0), (MapType.ARRAY, 4, 8, 4, 0),
          (MapType.ARRAY, 4, 8, 5, 0), (MapType.ARRAY, 4, 16, 4, 0), (MapType.HASH, 4, 8, 4, 0)]
BAD_FD = 999


def of_maps_sequence(host, k: Kernel, outer_type, seed: int, nops: int = 60) -> None:
    rng = random.Random(seed)
    me = rng.randint(1, 4)
    host_inner = [host.map_create(*spec) for spec in INNERS]
    my_inner = [k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs, max_entries=n,
                      map_flags=fl) for t, ks, vs, n, fl in INNERS]
    # ids differ between kernels: name a stored map by its index in INNERS
    host_ids = {m.info()["id"]: i for i, m in enumerate(host_inner)}
    my_ids = {k.fds.get(fd).id: i for i, fd in enumerate(my_inner)}
    hm = host.map_create(outer_type, 4, 4, me, inner_map_fd=host_inner[0].fd)
    hm.value_size = 4            # lookups return a u32 id
    fd = k.bpf(Cmd.MAP_CREATE, map_type=outer_type, key_size=4, value_size=4, max_entries=me,
               inner_map_fd=my_inner[0])
    mine, theirs = Mine(k, fd), Theirs(hm)

    def named(side_ids, result):
        st, v = result
        return (st, side_ids[struct.unpack("<I", v)[0]]) if st == "ok" else result

    try:
        for step in range(nops):
            op = rng.choice(["update"] * 4 + ["lookup", "lookup", "delete", "get_next_key",
                                              "lookup_and_delete"])
            key = u32(rng.randrange(me + 2) if rng.random() < 0.9 else 1 << 31)
            where = f"seed {seed} {outer_type.name}(max_entries {me}) step {step} {op}"
            if op == "update":
                i = rng.randrange(len(INNERS) + 1)
                fl = rng.choice(UPDATE_FLAGS)
                if i == len(INNERS):     # BPF_F_LOCK before the fd: tested in test_map_elem
                    fl &= ~4
                mv = u32(my_inner[i] if i < len(INNERS) else BAD_FD)
                tv = u32(host_inner[i].fd if i < len(INNERS) else BAD_FD)
                got, want = outcome(mine.update, key, mv, fl), outcome(theirs.update, key, tv, fl)
                where += f" key {key.hex()} inner {i} flags {fl:#x}"
            elif op == "lookup":
                got = named(my_ids, outcome(mine.lookup, key, 0))
                want = named(host_ids, outcome(theirs.lookup, key, 0))
            elif op == "lookup_and_delete":
                got, want = outcome(mine.lookup_and_delete, key, 0), \
                    outcome(theirs.lookup_and_delete, key, 0)
            elif op == "delete":
                got, want = outcome(mine.delete, key), outcome(theirs.delete, key)
            else:
                start = None if rng.random() < 0.3 else key
                got, want = outcome(mine.get_next_key, start), outcome(theirs.get_next_key, start)
                if outer_type == MapType.HASH_OF_MAPS:
                    # hash order: from None or an absent key, compare success
                    # only; after a present key, nothing (see run_sequence)
                    present = start is not None and outcome(mine.lookup, start, 0)[0] == "ok"
                    got, want = (None, None) if present else (got[0], want[0])
            assert got == want, f"{where}: userbpf {got}, kernel {want}"
        mine_all = {key: my_ids[struct.unpack("<I", v)[0]] for key, v in contents(mine).items()}
        theirs_all = {key: host_ids[struct.unpack("<I", v)[0]]
                      for key, v in contents(theirs).items()}
        assert mine_all == theirs_all, f"seed {seed}: final contents differ"
    finally:
        hm.close()
        k.close(fd)
        for m in host_inner:
            m.close()
        for f in my_inner:
            k.close(f)


@pytest.mark.parametrize("outer_type", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS],
                         ids=lambda t: t.name)
def test_maps_of_maps_match_kernel(host, outer_type):
    k = Kernel(ncpus=host.possible_cpus())
    for seed in range(40):
        of_maps_sequence(host, k, outer_type, seed)
    assert len(k.fds) == 0 and not k.map_ids.live


@pytest.mark.slow
@pytest.mark.parametrize("outer_type", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS],
                         ids=lambda t: t.name)
def test_maps_of_maps_match_kernel_long(host, outer_type):
    k = Kernel(ncpus=host.possible_cpus())
    for seed in range(1000, 2000):
        of_maps_sequence(host, k, outer_type, seed)


# -- answers test_map_elem.py pins, confirmed on the live kernel ----------------------
def test_kernel_keeps_percpu_padding(host):
    """What test_map_elem's padding test asserts, asked of the live kernel."""
    n = host.possible_cpus()
    v = bytes((i * 7 + 1) & 0xFF for i in range(8 * n))
    for t in PERCPU:
        with host.map_create(t, 4, 5, 2) as hm:
            hm.update(u32(0), v)
            assert hm.lookup(u32(0)) == v


def test_kernel_errnos_those_tests_assert(host):
    """The live kernel's answers that test_map_elem.py and test_objects.py
    assert userbpf gives."""
    with host.map_create(MapType.ARRAY, 4, 8, 2) as a:
        assert outcome(a.lookup_and_delete, u32(0)) == ("err", 524)     # ENOTSUPP
        a.freeze()
        assert outcome(a.freeze) == ("err", errno.EPERM)    # second freeze (test_objects)
    with host.map_create(MapType.HASH, 4, 8, 2) as h:
        h.update(u32(0), bytes(8))
        attr = host.MapElemAttr(map_fd=h.fd, key=0, flags=1)
        assert outcome(host.sys_bpf, Cmd.MAP_DELETE_ELEM, attr) == ("err", errno.EINVAL)
        assert outcome(host.sys_bpf, Cmd.MAP_LOOKUP_ELEM,
                       host.MapElemAttr(map_fd=BAD_FD, flags=8)) == ("err", errno.EINVAL)
        mid = h.info()["id"]
        both = struct.pack("<III", mid, 0, (1 << 3) | (1 << 4))
        assert outcome(host.sys_bpf, Cmd.MAP_GET_FD_BY_ID, both) == ("err", errno.EINVAL)
        assert outcome(host.sys_bpf, Cmd.MAP_GET_NEXT_ID,
                       struct.pack("<III", 0, 0, 1 << 3)) == ("err", errno.EINVAL)
        wo_fd = host.sys_bpf(Cmd.MAP_GET_FD_BY_ID, struct.pack("<III", mid, 0, 1 << 4))
        wo = host.HostMap(wo_fd, MapType.HASH, 4, 8, 2)
        try:
            assert outcome(wo.lookup_and_delete, u32(0)) == ("err", errno.EPERM)
            assert outcome(wo.lookup, u32(0), 8) == ("err", errno.EINVAL)
        finally:
            wo.close()
        assert h.lookup(u32(0)) == bytes(8)                            # nothing deleted
    with host.map_create(MapType.ARRAY, 4, 8, 2) as tpl, \
            host.map_create(MapType.HASH_OF_MAPS, 4, 4, 2, inner_map_fd=tpl.fd) as o:
        assert outcome(o.update, u32(0), u32(BAD_FD), 4) == ("err", errno.EINVAL)
        assert outcome(o.update, u32(0), u32(BAD_FD), 2) == ("err", errno.EBADF)
