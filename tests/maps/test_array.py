"""BPF_MAP_TYPE_ARRAY and PERCPU_ARRAY: the C storage against a Python
model, and programs using them through the map helpers."""
from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, settings

from userbpf import Program
from userbpf._maps import MapCore
from userbpf.errors import MemoryAccessError

from mapmodel import (ARRAY, BPF_EXIST, BPF_F_RDONLY_PROG, BPF_NOEXIST, PERCPU_ARRAY,
                      all_keys, make_machine, mem_for, prog_delete, prog_lookup,
                      prog_update, s64)

SM = settings(max_examples=30, stateful_step_count=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])

TestArrayMachine = make_machine(ARRAY, value_size=8, max_entries=5, nkeys=8).TestCase
TestArrayMachine.settings = SM
TestPercpuArrayMachine = make_machine(PERCPU_ARRAY, value_size=12, max_entries=4, ncpus=3,
                                      nkeys=6).TestCase
TestPercpuArrayMachine.settings = SM


def k(i: int) -> bytes:
    return i.to_bytes(4, "little")


def v(i: int) -> bytes:
    return i.to_bytes(8, "little")


def test_array_errnos():
    m = MapCore(ARRAY, 4, 8, 3, 0, 1)
    for call, err in [(lambda: m.update(k(3), v(1)), errno.E2BIG),
                      (lambda: m.update(k(1), v(1), BPF_NOEXIST), errno.EEXIST),
                      (lambda: m.update(k(3), v(1), 3), errno.EINVAL),
                      (lambda: m.delete(k(1)), errno.EINVAL),
                      (lambda: m.lookup(k(3)), errno.ENOENT),
                      (lambda: m.get_next_key(k(2)), errno.ENOENT)]:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == err
    m.update(k(2), v(9), BPF_EXIST)
    assert m.lookup(k(2)) == v(9)
    assert all_keys(m) == [k(0), k(1), k(2)]
    assert m.get_next_key(k(7)) == k(0)


@pytest.mark.parametrize("map_type", [ARRAY, PERCPU_ARRAY])
def test_programs_update_and_lookup(map_type):
    m = MapCore(map_type, 4, 8, 4, 0, 2)
    upd, look, dele = (Program(f(3), maps={3: m}) for f in (prog_update, prog_lookup,
                                                             prog_delete))
    assert upd.run(mem_for(k(2), v(70)), cpu=1) == 0
    assert s64(upd.run(mem_for(k(2), v(70), BPF_NOEXIST))) == -errno.EEXIST
    assert s64(upd.run(mem_for(k(4), v(70)))) == -errno.E2BIG
    assert s64(dele.run(mem_for(k(2)))) == -errno.EINVAL
    mem = mem_for(k(2))
    assert look.run(mem, cpu=1) == 1 and mem[16:24] == v(70)
    if map_type == PERCPU_ARRAY:
        assert m.lookup(k(2)) == v(0) + v(70)
        assert look.run(mem_for(k(2)), cpu=2) == 0          # no CPU 2 in this map
        # A CPU beyond the map's must not write past its memory.
        assert s64(upd.run(mem_for(k(3), v(1)), cpu=2)) == -errno.EINVAL
        assert s64(upd.run(mem_for(k(3), v(1)), cpu=1000)) == -errno.EINVAL
        assert m.lookup(k(3)) == bytes(16)
    else:
        assert m.lookup(k(2)) == v(70)
    assert look.run(mem_for(k(4))) == 0


def test_value_pointers_are_writable_and_atomic_adds_land():
    m = MapCore(ARRAY, 4, 8, 2, 0, 1)
    Program(prog_lookup(3, store_imm=40), maps={3: m}).run(mem_for(k(1)))
    p = Program(prog_lookup(3, add=2), maps={3: m})
    for _ in range(5):
        p.run(mem_for(k(1)))
    assert m.lookup(k(1)) == v(50) and m.lookup(k(0)) == v(0)


def test_read_only_prog_arrays_refuse_stores():
    m = MapCore(ARRAY, 4, 8, 2, BPF_F_RDONLY_PROG, 1)
    m.update(k(1), v(3))
    mem = mem_for(k(1))
    assert Program(prog_lookup(3), maps={3: m}).run(mem) == 1 and mem[16:24] == v(3)
    for p in (Program(prog_lookup(3, store_imm=1), maps={3: m}),
              Program(prog_lookup(3, add=1), maps={3: m})):
        with pytest.raises(MemoryAccessError) as e:
            p.run(mem_for(k(1)))
        assert e.value.write
    assert m.lookup(k(1)) == v(3)


@pytest.mark.parametrize("off", [8, -8])
def test_a_program_cannot_read_outside_the_values(off):
    m = MapCore(ARRAY, 4, 8, 1, 0, 1)
    with pytest.raises(MemoryAccessError) as e:
        Program(prog_lookup(3, load_off=off), maps={3: m}).run(mem_for(k(0)))
    assert e.value.size == 8 and not e.value.write
