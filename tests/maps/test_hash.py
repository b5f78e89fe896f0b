"""BPF_MAP_TYPE_HASH and PERCPU_HASH: the C storage against a Python model,
and programs using them through the map helpers."""
from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, settings

from userbpf import Program
from userbpf._maps import MapCore
from userbpf.errors import MemoryAccessError

from mapmodel import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, HASH, PERCPU_HASH, all_keys,
                      make_machine, mem_for, prog_delete, prog_lookup, prog_update, s64)

SM = settings(max_examples=40, stateful_step_count=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])

TestHashMachine = make_machine(HASH, key_size=6, value_size=8, max_entries=6).TestCase
TestHashMachine.settings = SM
TestPercpuHashMachine = make_machine(PERCPU_HASH, key_size=4, value_size=12, max_entries=5,
                                     ncpus=3).TestCase
TestPercpuHashMachine.settings = SM


def k(i: int) -> bytes:
    return i.to_bytes(4, "little")


def v(i: int) -> bytes:
    return i.to_bytes(8, "little")


def test_full_hash_refuses_a_new_key_but_updates_existing_ones():
    m = MapCore(HASH, 4, 8, 2, 0, 1)
    m.update(k(1), v(10))
    m.update(k(2), v(20))
    with pytest.raises(OSError) as e:
        m.update(k(3), v(30))
    assert e.value.errno == errno.E2BIG
    m.update(k(1), v(11), BPF_EXIST)
    assert m.lookup(k(1)) == v(11)
    m.delete(k(2))
    m.update(k(3), v(30), BPF_NOEXIST)
    assert sorted(all_keys(m)) == [k(1), k(3)]


def test_no_prealloc_hash_allocates_chunks_as_it_grows():
    m = MapCore(HASH, 4, 8, 600, 1, 1)      # BPF_F_NO_PREALLOC: chunks of 256
    for i in range(600):
        m.update(k(i), v(i * 3))
    assert set(all_keys(m)) == {k(i) for i in range(600)} and len(all_keys(m)) == 600
    assert all(m.lookup(k(i)) == v(i * 3) for i in range(0, 600, 7))
    p = Program(prog_lookup(5), maps={5: m})
    mem = mem_for(k(599))
    assert p.run(mem) == 1 and mem[16:24] == v(599 * 3)


@pytest.mark.parametrize("map_type", [HASH, PERCPU_HASH])
def test_programs_update_lookup_and_delete(map_type):
    m = MapCore(map_type, 4, 8, 4, 0, 2)
    upd, look, dele = (Program(f(3), maps={3: m}) for f in (prog_update, prog_lookup,
                                                             prog_delete))
    assert upd.run(mem_for(k(7), v(70), BPF_NOEXIST), cpu=1) == 0
    assert s64(upd.run(mem_for(k(7), v(71), BPF_NOEXIST), cpu=1)) == -errno.EEXIST
    assert s64(upd.run(mem_for(k(8), v(80), BPF_EXIST))) == -errno.ENOENT
    assert s64(upd.run(mem_for(k(8), v(80), 4))) == -errno.EINVAL        # BPF_F_LOCK
    mem = mem_for(k(7))
    assert look.run(mem, cpu=1) == 1 and mem[16:24] == v(70)
    if map_type == PERCPU_HASH:     # the other CPU's value of a program's new element is 0
        assert m.lookup(k(7)) == v(0) + v(70)
        assert look.run(mem, cpu=0) == 1 and mem[16:24] == v(0)
        assert look.run(mem_for(k(7)), cpu=2) == 0      # no CPU 2 in this map
        assert s64(upd.run(mem_for(k(7), v(1)), cpu=2)) == -errno.EINVAL
    else:
        assert m.lookup(k(7)) == v(70)
    for i in range(3):
        assert upd.run(mem_for(k(i), v(i), BPF_ANY)) == 0
    assert s64(upd.run(mem_for(k(9), v(9), BPF_ANY))) == -errno.E2BIG
    assert dele.run(mem_for(k(7))) == 0
    assert s64(dele.run(mem_for(k(7)))) == -errno.ENOENT
    assert sorted(all_keys(m)) == [k(0), k(1), k(2)]
    assert look.run(mem_for(k(7))) == 0


def test_value_pointers_are_writable():
    m = MapCore(HASH, 4, 8, 4, 0, 1)
    m.update(k(1), v(5))
    p = Program(prog_lookup(3, store_imm=1234), maps={3: m})
    mem = mem_for(k(1))
    assert p.run(mem) == 1 and mem[16:24] == v(5)
    assert m.lookup(k(1)) == v(1234)
    p = Program(prog_lookup(3, add=6), maps={3: m})
    for _ in range(10):
        p.run(mem_for(k(1)))
    assert m.lookup(k(1)) == v(1294)


@pytest.mark.parametrize("off", [8, -8])
def test_a_program_cannot_read_outside_the_values(off):
    m = MapCore(HASH, 4, 8, 1, 0, 1)
    m.update(k(1), v(5))
    p = Program(prog_lookup(3, load_off=off), maps={3: m})
    with pytest.raises(MemoryAccessError) as e:
        p.run(mem_for(k(1)))
    assert e.value.size == 8 and not e.value.write


def test_no_prealloc_values_are_found_by_the_slow_path_and_bounded():
    m = MapCore(HASH, 4, 8, 300, 1, 1)
    for i in range(300):
        m.update(k(i), v(i))
    p = Program(prog_lookup(3, store_imm=77), maps={3: m})
    assert p.run(mem_for(k(299))) == 1 and m.lookup(k(299)) == v(77)
    # key 299 is element 299: slot 43 of the second chunk of 256; read just past that chunk
    p = Program(prog_lookup(3, load_off=8 * (256 - 43)), maps={3: m})
    with pytest.raises(MemoryAccessError):
        p.run(mem_for(k(299)))
