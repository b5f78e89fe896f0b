"""bpf_for_each_map_elem (helper 164): callbacks run by the interpreter.

The callback is a subprogram whose address the program loads with
``lddw rX, func[label]`` (BPF_PSEUDO_FUNC); it gets (map, &key, &value, ctx)
and returns 0 to go on or 1 to stop; the helper returns the number of calls.
(The live kernel needs BTF func_info for callbacks, which userbpf's loader
does not produce yet, so these are checked against hand-computed results.)
"""
from __future__ import annotations

import errno

import pytest

from userbpf import BudgetExceeded, CallDepthError, MemoryAccessError, Program
from userbpf._maps import MapCore

ARRAY, HASH, PERCPU_ARRAY, LRU_HASH, QUEUE = 2, 1, 6, 9, 22


def u32(v):
    return v.to_bytes(4, "little")


def u64(v):
    return v.to_bytes(8, "little")


# r0 = sum of values * 1000 + number of callback calls
SUM = """
    r1 = map[fd:3] ll
    r2 = func[cb] ll
    r3 = 0
    *(u64 *)(r10 - 8) = r3
    r3 = r10
    r3 += -8
    r4 = {flags}
    call bpf_for_each_map_elem
    if r0 s< 0 goto out
    r6 = r0
    r0 = *(u64 *)(r10 - 8)
    r0 *= 1000
    r0 += r6
out:
    exit
cb:
    {body}
    r5 = *(u64 *)(r3 + 0)
    r6 = *(u64 *)(r4 + 0)
    r6 += r5
    *(u64 *)(r4 + 0) = r6
    r0 = 0
    {stop}
    exit
"""


def program(m, flags=0, body="", stop="", **kw):
    return Program(SUM.format(flags=flags, body=body, stop=stop), maps={3: m}, **kw)


def array(values, map_type=ARRAY, ncpus=1):
    m = MapCore(map_type, 4, 8, len(values), 0, ncpus)
    for i, v in enumerate(values):
        m.update(u32(i), u64(v) * ncpus if map_type == PERCPU_ARRAY else u64(v))
    return m


def test_array_every_element_in_order():
    m = array([5, 10, 20, 40])
    assert program(m).run() == 75 * 1000 + 4


def test_callback_returning_1_stops_the_walk():
    # stop after the element whose key is 1: two calls, 5 + 10
    stop = "r7 = *(u32 *)(r2 + 0)\n    if r7 != 1 goto +1\n    r0 = 1"
    assert program(array([5, 10, 20, 40]), stop=stop).run() == 15 * 1000 + 2


@pytest.mark.parametrize("map_type", [HASH, LRU_HASH])
def test_hash_maps_every_element_once_keys_readable(map_type):
    m = MapCore(map_type, 8, 8, 64, 0, 1)
    for k in range(20):
        m.update(u64(k * 7), u64(k))
    # sum the keys instead of the values: the key pointer is readable
    keysum = program(m, body="r5 = *(u64 *)(r2 + 0)\n    r7 = r5").run()
    assert keysum == sum(range(20)) * 1000 + 20
    body = "r8 = *(u64 *)(r2 + 0)\n    *(u64 *)(r2 + 0) = r8"     # keys are read-only
    with pytest.raises(MemoryAccessError) as e:
        program(m, body=body).run()
    assert e.value.write


def test_empty_hash_calls_nothing():
    assert program(MapCore(HASH, 4, 8, 8, 0, 1)).run() == 0


def test_percpu_array_sees_the_running_cpu():
    m = MapCore(PERCPU_ARRAY, 4, 8, 2, 0, 2)
    m.update(u32(0), u64(1) + u64(100))
    m.update(u32(1), u64(2) + u64(200))
    p = program(m)
    assert p.run(cpu=0) == 3 * 1000 + 2
    assert p.run(cpu=1) == 300 * 1000 + 2


def test_callback_writes_values():
    m = array([1, 2, 3])
    body = "r7 = *(u64 *)(r3 + 0)\n    r7 *= 2\n    *(u64 *)(r3 + 0) = r7"
    assert program(m, body=body).run() == 12 * 1000 + 3      # sums the doubled values
    assert [int.from_bytes(m.lookup(u32(i)), "little") for i in range(3)] == [2, 4, 6]


def test_flags_must_be_zero():
    assert program(array([1]), flags=1).run() == (-errno.EINVAL) & (2 ** 64 - 1)


def test_map_types_that_cannot_be_walked_give_einval():
    q = MapCore(QUEUE, 0, 8, 4, 0, 1)
    assert program(q).run() == (-errno.EINVAL) & (2 ** 64 - 1)


def test_fault_in_the_callback_names_the_callback_pc():
    with pytest.raises(MemoryAccessError) as e:
        program(array([1, 2]), body="r7 = *(u64 *)(r3 + 8)").run()
    # the faulting load is the first instruction of cb (slot 16 of the program)
    assert e.value.pc == 16 and not e.value.write and e.value.size == 8


def test_callbacks_share_the_budget_and_the_count():
    m = array([1] * 50)
    p = program(m)
    assert p.run() == 50 * 1000 + 50
    total = p.insn_count
    assert total == 14 + 50 * 6        # caller (lddw counts once) + 6 per callback
    p.budget = total - 1
    with pytest.raises(BudgetExceeded):
        p.run()
    p.budget = total
    assert p.run() == 50 * 1000 + 50


def test_recursion_is_bounded_by_the_call_frames():
    # the callback walks the same map again: 8 frames, then CallDepthError
    rec = """
        r1 = map[fd:3] ll
        r2 = func[cb] ll
        r3 = 0
        r4 = 0
        call bpf_for_each_map_elem
        exit
    cb:
        r2 = func[cb] ll
        r3 = 0
        r4 = 0
        call bpf_for_each_map_elem
        r0 = 0
        exit
    """
    with pytest.raises(CallDepthError):
        Program(rec, maps={3: array([1])}).run()


def test_callback_may_update_and_delete_in_the_walked_hash():
    m = MapCore(HASH, 4, 8, 64, 0, 1)
    for k in range(32):
        m.update(u32(k), u64(1))
    # delete every element it visits: no deadlock, the walk ends, the map is empty
    delete = """
        r1 = map[fd:3] ll
        r2 = func[cb] ll
        r3 = 0
        r4 = 0
        call bpf_for_each_map_elem
        exit
    cb:
        call bpf_map_delete_elem
        r0 = 0
        exit
    """
    calls = Program(delete, maps={3: m}).run()
    assert calls == 32                  # the walk goes on past a deleted element
    with pytest.raises(OSError) as e:
        m.get_next_key(None)
    assert e.value.errno == errno.ENOENT
