"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK: against a deque model, through
the program helpers (87 push, 88 pop, 89 peek), and against the live kernel."""
from __future__ import annotations

import collections
import errno
import random
import threading

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from userbpf import Program
from userbpf._maps import MapCore
from userbpf.isa import (BPF_ALU64_IMM, BPF_ADD, BPF_DW, BPF_EMIT_CALL, BPF_EXIT_INSN,
                         BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG,
                         BPF_ST_MEM, BPF_STX_MEM, BPF_REG_0, BPF_REG_1, BPF_REG_2,
                         BPF_REG_3, BPF_REG_6, BPF_REG_10)

from hostmaps import KernelMap, errno_of, need_kernel

QUEUE, STACK = 22, 23
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
PUSH, POP, PEEK = 87, 88, 89
U64 = 1 << 64


def u64(v: int) -> bytes:
    return (v % U64).to_bytes(8, "little")


def new(map_type, max_entries=4, value_size=8, flags=0):
    return MapCore(map_type, 0, value_size, max_entries, flags, 1)


class DequeModel:
    """The kernel's semantics on a deque: push appends; a full map refuses
    (E2BIG) unless BPF_EXIST, which drops the oldest element first."""

    def __init__(self, stack: bool, max_entries: int):
        self.stack, self.max = stack, max_entries
        self.d = collections.deque()

    def push(self, v, flags):
        if flags & BPF_NOEXIST or flags > BPF_EXIST:
            return errno.EINVAL
        if len(self.d) == self.max:
            if not flags & BPF_EXIST:
                return errno.E2BIG
            self.d.popleft()
        self.d.append(v)
        return 0

    def get(self, delete):
        if not self.d:
            return errno.ENOENT, None
        if delete:
            return 0, self.d.pop() if self.stack else self.d.popleft()
        return 0, self.d[-1] if self.stack else self.d[0]


# -- the model, step by step ---------------------------------------------------------

class QueueStackMachine(RuleBasedStateMachine):
    map_type = QUEUE

    @initialize(max_entries=st.integers(1, 6), value_size=st.sampled_from([1, 4, 8, 13]))
    def setup(self, max_entries, value_size):
        self.vs = value_size
        self.m = MapCore(self.map_type, 0, value_size, max_entries, 0, 1)
        self.model = DequeModel(self.map_type == STACK, max_entries)

    @rule(data=st.data(), flags=st.sampled_from([BPF_ANY, BPF_EXIST, BPF_EXIST, BPF_NOEXIST,
                                                 BPF_F_LOCK, 3]))
    def push(self, data, flags):
        v = data.draw(st.binary(min_size=self.vs, max_size=self.vs))
        assert errno_of(self.m.update, None, v, flags)[0] == self.model.push(v, flags)

    @rule()
    def pop(self):
        assert errno_of(self.m.lookup_and_delete, None) == self.model.get(True)

    @rule()
    def peek(self):
        assert errno_of(self.m.lookup, b"") == self.model.get(False)

    @invariant()
    def keyless_commands_refused(self):
        if hasattr(self, "m"):
            assert errno_of(self.m.delete, None)[0] == errno.EINVAL
            assert errno_of(self.m.get_next_key, None)[0] == errno.EINVAL


class StackMachine(QueueStackMachine):
    map_type = STACK


TestQueueModel = QueueStackMachine.TestCase
TestStackModel = StackMachine.TestCase
for _case in (TestQueueModel, TestStackModel):
    _case.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("map_type,order", [(QUEUE, [2, 3, 4]), (STACK, [4, 3, 2])])
def test_exist_overwrites_the_oldest(map_type, order):
    m = new(map_type, max_entries=3)
    for v in (1, 2, 3):
        m.update(None, u64(v))
    with pytest.raises(OSError) as e:
        m.update(None, u64(9), BPF_ANY)
    assert e.value.errno == errno.E2BIG
    m.update(None, u64(4), BPF_EXIST)         # drops 1, the oldest, for a stack too
    assert [int.from_bytes(m.lookup_and_delete(None), "little") for _ in range(3)] == order
    with pytest.raises(OSError) as e:
        m.lookup(None)
    assert e.value.errno == errno.ENOENT


@pytest.mark.parametrize("map_type", [QUEUE, STACK])
def test_wraps_around_the_ring_many_times(map_type):
    m, model = new(map_type, max_entries=5), DequeModel(map_type == STACK, 5)
    rnd = random.Random(7)
    for i in range(2000):
        if rnd.random() < 0.55:
            flags = rnd.choice([BPF_ANY, BPF_EXIST])
            assert errno_of(m.update, None, u64(i), flags)[0] == model.push(u64(i), flags)
        else:
            assert errno_of(m.lookup_and_delete, None) == model.get(True)


@pytest.mark.parametrize("map_type", [QUEUE, STACK])
def test_flags_and_keys(map_type):
    m = new(map_type)
    m.update(None, u64(1))
    assert errno_of(m.lookup, None, BPF_F_LOCK)[0] == errno.EINVAL
    assert errno_of(m.lookup_and_delete, None, BPF_F_LOCK)[0] == errno.EINVAL
    assert errno_of(m.lookup_and_delete, None, 1)[0] == errno.EINVAL
    assert errno_of(m.update, None, u64(2), BPF_NOEXIST)[0] == errno.EINVAL
    assert errno_of(m.update, None, u64(2), BPF_F_LOCK)[0] == errno.EINVAL
    assert errno_of(m.lookup, b"\0\0\0\0")[0] == errno.EINVAL      # no keys
    assert errno_of(m.update, None, bytes(4))[0] == errno.EINVAL    # value size
    assert m.lookup(None) == u64(1)                                  # nothing changed


@pytest.mark.parametrize("kw", [dict(key_size=4), dict(value_size=0), dict(max_entries=0),
                                dict(flags=1), dict(flags=1 << 6), dict(flags=1 << 10)])
def test_create_rejects(kw):
    a = dict(key_size=0, value_size=8, max_entries=4, flags=0)
    a.update(kw)
    for t in (QUEUE, STACK):
        with pytest.raises(OSError) as e:
            MapCore(t, a["key_size"], a["value_size"], a["max_entries"], a["flags"], 1)
        assert e.value.errno == errno.EINVAL


def test_create_accepts_access_and_numa_flags():
    for flags in (1 << 2, 1 << 3, 1 << 4, 1 << 7, 1 << 8):
        assert new(QUEUE, flags=flags).map_flags == flags


def test_concurrent_pushes_and_pops_lose_nothing():
    m = new(QUEUE, max_entries=4 * 600)
    got = [[] for _ in range(4)]

    def producer(t):
        for i in range(600):
            m.update(None, u64(t * 1000 + i))

    def consumer(t):
        while len(got[t]) < 300:
            try:
                got[t].append(m.lookup_and_delete(None))
            except OSError as e:
                assert e.errno == errno.ENOENT

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=consumer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rest = []
    while True:
        err, v = errno_of(m.lookup_and_delete, None)
        if err:
            break
        rest.append(v)
    popped = [int.from_bytes(v, "little") for g in got for v in g] + \
        [int.from_bytes(v, "little") for v in rest]
    assert sorted(popped) == sorted(t * 1000 + i for t in range(4) for i in range(600))
    for g in got:          # each producer's values leave a FIFO in its own order
        for t in range(4):
            mine = [int.from_bytes(v, "little") for v in g if int.from_bytes(v, "little") // 1000 == t]
            assert mine == sorted(mine)


# -- programs: the helpers -------------------------------------------------------------

FD = 7


def helper_prog(helper, imm=0, flags=0, stack_fill=0x5A5A5A5A):
    """r6 = mem; *(u64 *)(r10 - 8) = imm (or a fill pattern); r0 = helper(map,
    r10 - 8[, flags]); mem[0:8] = r0; mem[8:16] = *(u64 *)(r10 - 8)."""
    code = [
        BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),
        BPF_ST_MEM(BPF_DW, BPF_REG_10, -8, imm if helper == PUSH else stack_fill),
        BPF_LD_MAP_FD(BPF_REG_1, FD),
        BPF_MOV64_REG(BPF_REG_2, BPF_REG_10),
        BPF_ALU64_IMM(BPF_ADD, BPF_REG_2, -8),
        BPF_MOV64_IMM(BPF_REG_3, flags),
        BPF_EMIT_CALL(helper),
        BPF_STX_MEM(BPF_DW, BPF_REG_6, BPF_REG_0, 0),
        BPF_LDX_MEM(BPF_DW, BPF_REG_0, BPF_REG_10, -8),
        BPF_STX_MEM(BPF_DW, BPF_REG_6, BPF_REG_0, 8),
        BPF_MOV64_IMM(BPF_REG_0, 0),
        BPF_EXIT_INSN(),
    ]
    return code


def run(m, helper, imm=0, flags=0):
    mem = bytearray(16)
    assert Program(helper_prog(helper, imm, flags), maps={FD: m}).run(mem) == 0
    return int.from_bytes(mem[:8], "little"), int.from_bytes(mem[8:], "little")


@pytest.mark.parametrize("map_type", [QUEUE, STACK])
def test_program_push_pop_peek(map_type):
    m = new(map_type, max_entries=2)
    assert run(m, PUSH, 10) == (0, 10)
    assert run(m, PUSH, 20) == (0, 20)
    assert run(m, PUSH, 30)[0] == U64 - errno.E2BIG
    first = 20 if map_type == STACK else 10
    assert run(m, PEEK) == (0, first)
    assert m.lookup(None) == u64(first)          # user space sees the same element
    assert run(m, PUSH, 30, BPF_EXIST) == (0, 30)
    expect = [30, 20] if map_type == STACK else [20, 30]
    assert [run(m, POP) for _ in range(2)] == [(0, v) for v in expect]
    # empty: -ENOENT, and the value buffer is zeroed as the kernel does
    assert run(m, POP) == (U64 - errno.ENOENT, 0)
    assert run(m, PEEK) == (U64 - errno.ENOENT, 0)
    assert run(m, PUSH, 1, BPF_NOEXIST)[0] == U64 - errno.EINVAL


def test_program_and_user_space_share_the_queue():
    m = new(QUEUE, max_entries=8)
    m.update(None, u64(111))
    assert run(m, PUSH, -1) == (0, U64 - 1)      # the imm is sign-extended
    assert run(m, POP) == (0, 111)
    assert m.lookup_and_delete(None) == u64(-1)


# -- the live kernel as the oracle ----------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("map_type", [QUEUE, STACK])
def test_same_answers_as_the_kernel(map_type):
    need_kernel()
    k, err = KernelMap.create(map_type, 0, 8, 5)
    assert err == 0
    m = new(map_type, max_entries=5)
    rnd = random.Random(map_type)
    for i in range(600):
        op = rnd.choice(["push", "push", "pop", "peek"])
        if op == "push":
            flags = rnd.choice([BPF_ANY, BPF_EXIST, BPF_NOEXIST, BPF_F_LOCK])
            assert errno_of(m.update, None, u64(i), flags)[0] == k.update(u64(i), flags)
        elif op == "pop":
            kerr, kv = k.lookup_and_delete()
            err, v = errno_of(m.lookup_and_delete, None)
            assert (err, v) == (kerr, kv if not kerr else None)
        else:
            kerr, kv = k.lookup()
            err, v = errno_of(m.lookup, None)
            assert (err, v) == (kerr, kv if not kerr else None)
    k.close()


@pytest.mark.kernel
@pytest.mark.parametrize("map_type", [QUEUE, STACK])
def test_same_errnos_as_the_kernel(map_type):
    need_kernel()
    k, _ = KernelMap.create(map_type, 0, 8, 2)
    m = new(map_type, max_entries=2)
    assert errno_of(m.delete, None)[0] == k.delete() == errno.EINVAL
    assert errno_of(m.get_next_key, None)[0] == k.get_next_key() == errno.EINVAL
    assert errno_of(m.lookup, None, BPF_F_LOCK)[0] == k.lookup(None, BPF_F_LOCK)[0]
    assert errno_of(m.lookup_and_delete, None, BPF_F_LOCK)[0] == \
        k.lookup_and_delete(BPF_F_LOCK)[0] == errno.EINVAL
    for kw in [(4, 8, 2, 0), (0, 0, 2, 0), (0, 8, 0, 0), (0, 8, 2, 1), (0, 8, 2, 1 << 6),
               (0, 8, 2, 1 << 3)]:
        kmap, kerr = KernelMap.create(map_type, *kw)
        err, _ = errno_of(MapCore, map_type, kw[0], kw[1], kw[2], kw[3], 1)
        assert err == kerr, kw
        if kmap:
            kmap.close()
    k.close()
