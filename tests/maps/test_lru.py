"""BPF_MAP_TYPE_LRU_HASH and LRU_PERCPU_HASH: eviction order against a
Python model (OrderedDict per LRU list), programs using them through the
map helpers, and threads running programs on them without the GIL."""
from __future__ import annotations

import errno
import threading

import pytest
from hypothesis import HealthCheck, settings

from userbpf import Program, isa
from userbpf._maps import MapCore
from userbpf.errors import MemoryAccessError
from userbpf.isa import (BPF_DW, BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_4,
                         BPF_REG_6, BPF_REG_7, BPF_REG_10, BPF_W)

from mapmodel import (ARRAY, BPF_EXIST, BPF_F_NO_COMMON_LRU, BPF_NOEXIST,
                      HASH, LRU_HASH, LRU_PERCPU_HASH, all_keys, make_machine, mem_for,
                      prog_delete, prog_lookup, prog_update, s64)

SM = settings(max_examples=40, stateful_step_count=50, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])

TestLruMachine = make_machine(LRU_HASH, key_size=5, max_entries=3, nkeys=5).TestCase
TestLruMachine.settings = SM
TestLruPercpuMachine = make_machine(LRU_PERCPU_HASH, value_size=12, max_entries=3, ncpus=2,
                                    nkeys=5).TestCase
TestLruPercpuMachine.settings = SM
TestLruPerCpuListsMachine = make_machine(LRU_HASH, max_entries=5, ncpus=2, nkeys=9,
                                         map_flags=BPF_F_NO_COMMON_LRU).TestCase
TestLruPerCpuListsMachine.settings = SM
TestLruPercpuPerCpuListsMachine = make_machine(LRU_PERCPU_HASH, max_entries=7, ncpus=3,
                                               nkeys=10,
                                               map_flags=BPF_F_NO_COMMON_LRU).TestCase
TestLruPercpuPerCpuListsMachine.settings = SM


def k(i: int) -> bytes:
    return i.to_bytes(4, "little")


def v(i: int) -> bytes:
    return i.to_bytes(8, "little")


def keyset(m) -> set:
    return {int.from_bytes(x, "little") for x in all_keys(m)}


def test_a_full_lru_evicts_the_least_recently_updated():
    m = MapCore(LRU_HASH, 4, 8, 3, 0, 1)
    for i in range(3):
        m.update(k(i), v(i))
    m.update(k(0), v(100))          # 0 is now the most recent: 1 goes first
    m.update(k(3), v(3))
    assert keyset(m) == {0, 2, 3}
    m.update(k(4), v(4))
    assert keyset(m) == {0, 3, 4}
    assert m.lookup(k(0)) == v(100)


def test_program_lookups_mark_use_but_bpf_lookups_do_not():
    m = MapCore(LRU_HASH, 4, 8, 3, 0, 1)
    look = Program(prog_lookup(7), maps={7: m})
    for i in range(3):
        m.update(k(i), v(i))
    assert look.run(mem_for(k(0))) == 1     # a program touched 0: 1 is the oldest
    m.update(k(3), v(3))
    assert keyset(m) == {0, 2, 3}
    assert m.lookup(k(2)) == v(2)           # bpf() lookup: 2 stays the oldest (kernel)
    all_keys(m)                             # and so does a get_next_key walk
    m.update(k(4), v(4))
    assert keyset(m) == {0, 3, 4}


def test_failed_updates_change_nothing():
    m = MapCore(LRU_HASH, 4, 8, 2, 0, 1)
    m.update(k(0), v(0))
    m.update(k(1), v(1))
    with pytest.raises(OSError) as e:
        m.update(k(0), v(9), BPF_NOEXIST)   # neither marks 0 nor evicts anything
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        m.update(k(5), v(9), BPF_EXIST)
    assert e.value.errno == errno.ENOENT
    for flags in (3, 4, 8):
        with pytest.raises(OSError) as e:
            m.update(k(5), v(9), flags)
        assert e.value.errno == errno.EINVAL
    assert keyset(m) == {0, 1}
    m.update(k(2), v(2))
    assert keyset(m) == {1, 2}


def test_delete_frees_a_slot_without_eviction():
    m = MapCore(LRU_HASH, 4, 8, 2, 0, 1)
    m.update(k(0), v(0))
    m.update(k(1), v(1))
    m.delete(k(0))
    m.update(k(2), v(2))
    assert keyset(m) == {1, 2}
    assert m.lookup_and_delete(k(1)) == v(1)
    with pytest.raises(OSError) as e:
        m.lookup_and_delete(k(1))
    assert e.value.errno == errno.ENOENT


def test_per_cpu_lists_split_max_entries_and_evict_only_their_own():
    m = MapCore(LRU_HASH, 4, 8, 5, BPF_F_NO_COMMON_LRU, 2)     # lists of 3 and 2
    upd = Program(prog_update(1), maps={1: m})
    for i in range(10, 13):
        assert upd.run(mem_for(k(i), v(i)), cpu=0) == 0
    for i in range(20, 23):
        assert upd.run(mem_for(k(i), v(i)), cpu=1) == 0
    assert keyset(m) == {10, 11, 12, 21, 22}
    m.update(k(30), v(30))                  # bpf() updates use CPU 0's list
    assert keyset(m) == {11, 12, 30, 21, 22}
    # A lookup from CPU 1 marks 11 on the list it is on (CPU 0's).
    assert Program(prog_lookup(1), maps={1: m}).run(mem_for(k(11)), cpu=1) == 1
    assert upd.run(mem_for(k(13), v(13)), cpu=0) == 0
    assert keyset(m) == {11, 30, 13, 21, 22}


def test_a_cpu_list_without_a_share_cannot_insert():
    m = MapCore(LRU_HASH, 4, 8, 1, BPF_F_NO_COMMON_LRU, 2)    # CPU 1's list holds 0
    upd = Program(prog_update(1), maps={1: m})
    assert s64(upd.run(mem_for(k(1), v(1)), cpu=1)) == -errno.ENOMEM
    assert upd.run(mem_for(k(1), v(1)), cpu=0) == 0
    assert upd.run(mem_for(k(1), v(2)), cpu=1) == 0          # existing keys update anywhere
    assert m.lookup(k(1)) == v(2)


def test_lru_percpu_values():
    m = MapCore(LRU_PERCPU_HASH, 4, 4, 2, 0, 2)
    assert m.sys_value_size == 16
    upd = Program(prog_update(1), maps={1: m})
    assert upd.run(mem_for(k(1), b"\1\2\3\4"), cpu=1) == 0
    assert m.lookup(k(1)) == bytes(8) + b"\1\2\3\4" + bytes(4)
    m.update(k(2), b"a" * 4 + bytes(4) + b"b" * 4 + bytes(4))
    assert upd.run(mem_for(k(3), b"cccc"), cpu=0) == 0          # evicts 1
    assert keyset(m) == {2, 3}
    assert s64(upd.run(mem_for(k(3), b"dddd"), cpu=2)) == -errno.EINVAL
    assert Program(prog_lookup(1), maps={1: m}).run(mem_for(k(3)), cpu=2) == 0


@pytest.mark.parametrize("flags", [0, BPF_F_NO_COMMON_LRU])
@pytest.mark.parametrize("map_type", [LRU_HASH, LRU_PERCPU_HASH])
def test_programs_through_helpers(map_type, flags):
    m = MapCore(map_type, 4, 8, 4, flags, 2)
    upd, look, dele = (Program(f(3), maps={3: m}) for f in (prog_update, prog_lookup,
                                                             prog_delete))
    for i in range(6):                  # never E2BIG: the oldest go
        assert upd.run(mem_for(k(i), v(i)), cpu=i % 2) == 0
    assert len(all_keys(m)) == 4
    assert s64(upd.run(mem_for(k(5), v(5), BPF_NOEXIST), cpu=1)) == -errno.EEXIST
    assert s64(upd.run(mem_for(k(9), v(9), BPF_EXIST))) == -errno.ENOENT
    mem = mem_for(k(5))
    assert look.run(mem, cpu=1) == 1 and mem[16:24] == v(5)
    assert Program(prog_lookup(3, store_imm=55), maps={3: m}).run(mem_for(k(5)), cpu=1) == 1
    assert look.run(mem, cpu=1) == 1 and mem[16:24] == v(55)
    assert dele.run(mem_for(k(5))) == 0
    assert s64(dele.run(mem_for(k(5)))) == -errno.ENOENT
    assert look.run(mem_for(k(5)), cpu=1) == 0
    assert 5 not in keyset(m)


@pytest.mark.parametrize("off", [8, -8])
def test_a_program_cannot_read_outside_the_values(off):
    m = MapCore(LRU_HASH, 4, 8, 1, 0, 1)
    m.update(k(1), v(5))
    with pytest.raises(MemoryAccessError) as e:
        Program(prog_lookup(3, load_off=off), maps={3: m}).run(mem_for(k(1)))
    assert e.value.size == 8 and not e.value.write


def test_evicted_values_stay_valid_memory():
    """A value pointer a program holds stays inside the map after eviction
    (the element is recycled, as in the kernel), so runtime checks pass."""
    m = MapCore(LRU_HASH, 4, 8, 1, 0, 1)
    m.update(k(1), v(1))
    addr = m.program_lookup(k(1))
    m.update(k(2), v(2))
    assert keyset(m) == {2}
    assert m.program_lookup(k(2)) == addr


# -- threads ---------------------------------------------------------------------
COUNTERS, TABLE = 1, 2


def _assemble(items) -> list:
    """Instructions with ("label", name) marks and ("jeq0", reg, name) /
    ("ja", name) jumps resolved to offsets."""
    pos, at = {}, 0
    for it in items:
        if isinstance(it, tuple) and it and it[0] == "label":
            pos[it[1]] = at
        else:
            at += 2 if isinstance(it, tuple) and len(it) == 2 and not isinstance(it[0], str) \
                and isinstance(it[0], isa.Insn) else 1
    out, at = [], 0
    for it in items:
        if isinstance(it, tuple) and it and it[0] == "label":
            continue
        if isinstance(it, tuple) and it and it[0] == "jeq0":
            out.append(isa.BPF_JMP_IMM(isa.BPF_JEQ, it[1], 0, pos[it[2]] - at - 1))
            at += 1
        elif isinstance(it, tuple) and it and it[0] == "ja":
            out.append(isa.BPF_JMP_A(pos[it[1]] - at - 1))
            at += 1
        else:
            out.append(it)
            at += 2 if isinstance(it, tuple) and isinstance(it[0], isa.Insn) else 1
    return out


def _lookup(fd: int, key_off: int) -> list:
    return [isa.BPF_LD_MAP_FD(BPF_REG_1, fd), isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, BPF_REG_2, key_off), isa.BPF_EMIT_CALL(1)]


def counter_program(delete_older: bool) -> list:
    """n = atomic_fetch_add(&counters[0], 1); table[n] = {n, tid} with
    BPF_NOEXIST (a failure adds 1 to counters[1]); look up n - 1 (marks it
    used in an LRU); optionally delete n - 2. mem holds tid (u64)."""
    return _assemble([
        isa.BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),
        isa.BPF_ST_MEM(BPF_W, BPF_REG_10, -4, 0),
        *_lookup(COUNTERS, -4),
        ("jeq0", BPF_REG_0, "out"),
        isa.BPF_MOV64_IMM(BPF_REG_7, 1),
        isa.BPF_ATOMIC_OP(BPF_DW, isa.BPF_ADD | isa.BPF_FETCH, BPF_REG_0, BPF_REG_7, 0),
        isa.BPF_STX_MEM(BPF_W, BPF_REG_10, BPF_REG_7, -8),
        isa.BPF_STX_MEM(BPF_DW, BPF_REG_10, BPF_REG_7, -24),
        isa.BPF_LDX_MEM(BPF_DW, BPF_REG_1, BPF_REG_6, 0),
        isa.BPF_STX_MEM(BPF_DW, BPF_REG_10, BPF_REG_1, -16),
        isa.BPF_LD_MAP_FD(BPF_REG_1, TABLE),
        isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, BPF_REG_2, -8),
        isa.BPF_MOV64_REG(BPF_REG_3, BPF_REG_10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, BPF_REG_3, -24),
        isa.BPF_MOV64_IMM(BPF_REG_4, BPF_NOEXIST),
        isa.BPF_EMIT_CALL(2),
        ("jeq0", BPF_REG_0, "ok"),
        isa.BPF_ST_MEM(BPF_W, BPF_REG_10, -4, 1),
        *_lookup(COUNTERS, -4),
        ("jeq0", BPF_REG_0, "out"),
        isa.BPF_MOV64_IMM(BPF_REG_1, 1),
        isa.BPF_ATOMIC_OP(BPF_DW, isa.BPF_ADD, BPF_REG_0, BPF_REG_1, 0),
        ("ja", "out"),
        ("label", "ok"),
        isa.BPF_ALU64_IMM(isa.BPF_SUB, BPF_REG_7, 1),
        isa.BPF_STX_MEM(BPF_W, BPF_REG_10, BPF_REG_7, -8),
        *_lookup(TABLE, -8),
        *([isa.BPF_ALU64_IMM(isa.BPF_SUB, BPF_REG_7, 1),
           isa.BPF_STX_MEM(BPF_W, BPF_REG_10, BPF_REG_7, -8),
           isa.BPF_LD_MAP_FD(BPF_REG_1, TABLE),
           isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_10),
           isa.BPF_ALU64_IMM(isa.BPF_ADD, BPF_REG_2, -8),
           isa.BPF_EMIT_CALL(3)] if delete_older else []),
        ("label", "out"),
        isa.BPF_MOV64_IMM(BPF_REG_0, 0),
        isa.BPF_EXIT_INSN(),
    ])


def run_threads(table, *, threads=4, runs=20000, delete_older=False):
    counters = MapCore(ARRAY, 4, 8, 2, 0, threads)
    code = counter_program(delete_older)
    progs = [Program(code, maps={COUNTERS: counters, TABLE: table}) for _ in range(threads)]
    errors = []
    start = threading.Barrier(threads)      # all threads in the maps at once

    def work(tid):
        try:
            start.wait()
            progs[tid].run_batch(bytearray(tid.to_bytes(8, "little")), runs, cpu=tid)
        except BaseException as e:        # reported below, not lost in the thread
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert counters.lookup(k(0)) == v(threads * runs)
    assert counters.lookup(k(1)) == v(0)          # every BPF_NOEXIST insert succeeded


def entries(table) -> dict:
    """key -> (n, tid) for every element, checking each value matches its key."""
    out = {}
    for key in all_keys(table):
        raw = table.lookup(key)
        if table.map_type == LRU_PERCPU_HASH:   # the inserting CPU's value; others 0
            vals = [raw[c * 16:c * 16 + 16] for c in range(table.ncpus)]
            mine = [c for c, x in enumerate(vals) if x != bytes(16)]
            assert len(mine) == 1 or (mine == [] and key == k(0)), (key, vals)
            c = mine[0] if mine else 0
            raw = vals[c]
            assert int.from_bytes(raw[8:], "little") == c
        n, tid = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
        assert int.from_bytes(key, "little") == n
        out[n] = tid
    return out


def test_threads_fill_a_hash_exactly():
    table = MapCore(HASH, 4, 16, 80000, 0, 4)
    run_threads(table)
    got = entries(table)
    assert sorted(got) == list(range(80000))
    assert [list(got.values()).count(t) for t in range(4)] == [20000] * 4


@pytest.mark.parametrize("map_type,flags", [(LRU_HASH, 0), (LRU_HASH, BPF_F_NO_COMMON_LRU),
                                            (LRU_PERCPU_HASH, 0),
                                            (LRU_PERCPU_HASH, BPF_F_NO_COMMON_LRU)])
def test_threads_on_an_lru(map_type, flags):
    table = MapCore(map_type, 4, 16, 512, flags, 4)
    run_threads(table)
    got = entries(table)
    assert len(got) == 512                      # full, never over
    if flags & BPF_F_NO_COMMON_LRU:             # each CPU filled its own list of 128
        assert [list(got.values()).count(t) for t in range(4)] == [128] * 4
    check_refill(table)


@pytest.mark.parametrize("map_type,flags", [(LRU_HASH, 0), (LRU_HASH, BPF_F_NO_COMMON_LRU),
                                            (HASH, 0)])
def test_threads_insert_look_up_and_delete(map_type, flags):
    table = MapCore(map_type, 4, 16, 64 if map_type != HASH else 80000, flags, 4)
    run_threads(table, runs=100_000 if map_type != HASH else 20000, delete_older=True)
    got = entries(table)
    assert len(got) <= table.max_entries
    if map_type != HASH:
        check_refill(table)


def check_refill(table):
    """After the threads, the LRU lists are intact: max_entries fresh keys
    (per CPU list when the lists are per CPU) replace every old one."""
    fresh = range(10**6, 10**6 + table.max_entries)
    upd = Program(prog_update(1), maps={1: table})
    per_list = table.map_flags & BPF_F_NO_COMMON_LRU
    for i, key in enumerate(fresh):
        cpu = i % table.ncpus if per_list else 0
        value = key.to_bytes(8, "little") + cpu.to_bytes(8, "little")
        assert upd.run(mem_for(k(key), value), cpu=cpu) == 0
    assert keyset(table) == set(fresh)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [0, BPF_F_NO_COMMON_LRU])
def test_threads_on_a_small_lru_long(flags):
    """The long version: 4 x 500k runs churning a 64-element LRU."""
    table = MapCore(LRU_HASH, 4, 16, 64, flags, 4)
    run_threads(table, runs=500_000, delete_older=True)
    assert len(entries(table)) <= 64
    check_refill(table)
