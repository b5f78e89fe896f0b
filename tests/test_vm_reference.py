"""Property tests: random programs give the same results on the Cython VM and
on the pure-Python reference interpreter (userbpf.reference).

A generated program has this shape::

    r9 = r1                      ; the memory pointer, never touched again
    r0..r7 = random constants
    body: random ALU/ALU64 ops, forward jumps (conditional, ja, gotol), stack
          and memory loads/stores (fixed and computed offsets), atomics,
          LD_ABS/LD_IND, a helper call and calls of a bpf-to-bpf subprogram
    epilogue: mem[64:128] = r0..r7, mem[128:192] = the 64 stack bytes used; exit
    subprogram: random ALU ops and stack/memory accesses in its own frame; exit

All accesses are in bounds and atomics aligned, so a run never faults; r0, the
registers and every byte of memory must agree. r8 is the scratch pointer
register and is not compared (it holds a host address in the VM).
"""
from __future__ import annotations

import ctypes

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from userbpf import Program, reference
from userbpf.isa import *  # noqa: F401,F403

M64 = (1 << 64) - 1
DATA = 64                        # mem[0:64] is data the program works on
MEM_SIZE = DATA + 64 + 64        # + register dump + stack dump
REGS = list(range(8))            # r0..r7: what random instructions read and write
PTR, SCRATCH = BPF_REG_9, BPF_REG_8
HELPER_ID = 1000


def helper(r1, r2, r3, r4, r5):
    """A pure helper: the property holds through helper calls too."""
    return (r1 * 0x9e3779b97f4a7c15 + (r2 ^ r3) - r4 + (r5 >> 3)) & M64


imm32 = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1),
                  st.sampled_from([0, 1, -1, 2, 7, 31, 32, 33, 63, 64, -(1 << 31), (1 << 31) - 1]))
imm64 = st.one_of(st.integers(0, M64), st.integers(0, M64),
                  st.integers(-4096, 4096).map(lambda v: v & M64),     # small negatives too
                  st.sampled_from([0, 1, M64, 1 << 63, (1 << 63) - 1, 0xffffffff, 0x80000000,
                                   0x7fffffff, 0xffffffff80000000, 0x100000000]))
regs = st.sampled_from(REGS)
SIZES = [(BPF_B, 1), (BPF_H, 2), (BPF_W, 4), (BPF_DW, 8)]
BINARY = [(op, 0) for op in (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_OR, BPF_AND,
                             BPF_LSH, BPF_RSH, BPF_ARSH, BPF_XOR, BPF_MOV)] + \
         [(BPF_DIV, 1), (BPF_MOD, 1)]
JUMPS = [BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSET,
         BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE]
ATOMICS = [BPF_ADD, BPF_OR, BPF_AND, BPF_XOR, BPF_ADD | BPF_FETCH, BPF_OR | BPF_FETCH,
           BPF_AND | BPF_FETCH, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG]


class Jump:
    """A forward jump placeholder: `make(off)` builds it once the layout is known."""

    def __init__(self, make, target_group):
        self.make, self.target = make, target_group


class Call:
    """A call of the subprogram, resolved like a jump."""


@st.composite
def alu_insn(draw):
    wide = draw(st.booleans())
    dst = draw(regs)
    kind = draw(st.sampled_from(["bin-k", "bin-x", "bin-x", "neg", "movsx", "end"]))
    if kind == "neg":
        return [(BPF_ALU64_IMM if wide else BPF_ALU32_IMM)(BPF_NEG, dst, 0)]
    if kind == "movsx":
        if wide:
            return [BPF_MOVSX64_REG(dst, draw(regs), draw(st.sampled_from([8, 16, 32])))]
        return [BPF_MOVSX32_REG(dst, draw(regs), draw(st.sampled_from([8, 16])))]
    if kind == "end":
        width = draw(st.sampled_from([16, 32, 64]))
        if wide:
            return [BPF_BSWAP(dst, width)]
        return [BPF_ENDIAN(draw(st.sampled_from([BPF_TO_LE, BPF_TO_BE])), dst, width)]
    op, off = draw(st.sampled_from(BINARY))
    if kind == "bin-k":
        make = BPF_ALU64_IMM_OFF if wide else BPF_ALU32_IMM_OFF
        return [make(op, dst, draw(imm32), off)]
    make = BPF_ALU64_REG_OFF if wide else BPF_ALU32_REG_OFF
    return [make(op, dst, draw(regs), off)]


@st.composite
def memory_insn(draw):
    """A load or store on the stack or the data area, fixed or computed offset."""
    size, n = draw(st.sampled_from(SIZES))
    where = draw(st.sampled_from(["stack", "mem", "computed"]))
    prefix = []
    if where == "stack":
        base, off = BPF_REG_10, draw(st.integers(-64, -n))
    elif where == "mem":
        base, off = PTR, draw(st.integers(0, DATA - n))
    else:   # r8 = r9 + (rX & 0x38): an address computed from data
        base, off = SCRATCH, 0
        prefix = [BPF_MOV64_REG(SCRATCH, draw(regs)), BPF_ALU64_IMM(BPF_AND, SCRATCH, 0x38),
                  BPF_ALU64_REG(BPF_ADD, SCRATCH, PTR)]
    kind = draw(st.sampled_from(["ldx", "ldxsx", "st", "stx"]))
    if kind == "ldx":
        return prefix + [BPF_LDX_MEM(size, draw(regs), base, off)]
    if kind == "ldxsx" and n < 8:
        return prefix + [BPF_LDX_MEMSX(size, draw(regs), base, off)]
    if kind == "st":
        return prefix + [BPF_ST_MEM(size, base, off, draw(imm32))]
    return prefix + [BPF_STX_MEM(size, base, draw(regs), off)]


@st.composite
def atomic_insn(draw):
    size, n = draw(st.sampled_from([(BPF_W, 4), (BPF_DW, 8)]))
    if draw(st.booleans()):
        base, off = BPF_REG_10, -n * draw(st.integers(1, 64 // n))
    else:
        base, off = PTR, n * draw(st.integers(0, DATA // n - 1))
    return [BPF_ATOMIC_OP(size, draw(st.sampled_from(ATOMICS)), base, draw(regs), off)]


@st.composite
def packet_insn(draw):
    size = draw(st.sampled_from([BPF_B, BPF_H, BPF_W]))
    if draw(st.booleans()):
        return [BPF_LD_ABS(size, draw(st.integers(0, MEM_SIZE + 4)))]
    # the offset register is masked to a byte so that most loads are in range
    return [BPF_MOV64_REG(SCRATCH, draw(regs)), BPF_ALU64_IMM(BPF_AND, SCRATCH, 0x7f),
            BPF_LD_IND(size, SCRATCH, draw(st.integers(-8, 64)))]


@st.composite
def jump_group(draw, index, ngroups):
    target = draw(st.integers(index + 1, ngroups))     # ngroups = the epilogue
    kind = draw(st.sampled_from(["k", "x", "k32", "x32", "ja", "gotol"]))
    dst, src, imm, op = draw(regs), draw(regs), draw(imm32), draw(st.sampled_from(JUMPS))
    makers = {
        "k": lambda off: BPF_JMP_IMM(op, dst, imm, off),
        "x": lambda off: BPF_JMP_REG(op, dst, src, off),
        "k32": lambda off: BPF_JMP32_IMM(op, dst, imm, off),
        "x32": lambda off: BPF_JMP32_REG(op, dst, src, off),
        "ja": lambda off: BPF_JMP_A(off),
        "gotol": lambda off: BPF_JMP32_A(off),
    }
    return [Jump(makers[kind], target)]


straight = st.one_of(alu_insn(), alu_insn(), alu_insn(), memory_insn(), memory_insn(),
                     atomic_insn(), st.builds(lambda d, v: [BPF_LD_IMM64(d, v)], regs, imm64))


@st.composite
def programs(draw, max_body=40):
    prologue = [[BPF_MOV64_REG(PTR, BPF_REG_1)]]
    prologue += [[BPF_LD_IMM64(r, draw(imm64))] for r in REGS]
    nbody = draw(st.integers(0, max_body))
    body = []
    for i in range(nbody):
        kind = draw(st.sampled_from(["straight"] * 6 + ["jump"] * 2 + ["call", "helper",
                                                                        "packet"]))
        if kind == "straight":
            body.append(draw(straight))
        elif kind == "jump":
            body.append(draw(jump_group(i, nbody)))
        elif kind == "call":
            body.append([Call()])
        elif kind == "helper":
            body.append([BPF_EMIT_CALL(HELPER_ID)])
        else:
            body.append(draw(packet_insn()))
    epilogue = [BPF_STX_MEM(BPF_DW, PTR, r, DATA + 8 * r) for r in REGS]
    for k in range(8):
        epilogue += [BPF_LDX_MEM(BPF_DW, SCRATCH, BPF_REG_10, -64 + 8 * k),
                     BPF_STX_MEM(BPF_DW, PTR, SCRATCH, DATA + 64 + 8 * k)]
    epilogue += [BPF_EXIT_INSN()]
    subprog = [i for g in draw(st.lists(st.one_of(alu_insn(), memory_insn(), atomic_insn()),
                                        max_size=8)) for i in g] + [BPF_EXIT_INSN()]
    data = draw(st.binary(min_size=DATA, max_size=DATA)) + bytes(MEM_SIZE - DATA)
    return layout(prologue, body, epilogue, subprog), data


def slot_len(item) -> int:
    # BPF_LD_IMM64 gives a 2-tuple of slots (an Insn is itself a NamedTuple)
    return 1 if isinstance(item, (Insn, Jump, Call)) else len(item)


def layout(prologue, body, epilogue, subprog):
    """Resolve jump and call placeholders into slot offsets and flatten."""
    starts, pos = [], sum(slot_len(i) for g in prologue for i in g)
    for group in body:
        starts.append(pos)
        pos += sum(slot_len(i) for i in group)
    starts.append(pos)                                  # the epilogue
    sub_start = pos + len(epilogue)
    out = [i for g in prologue for i in g]
    for gi, group in enumerate(body):
        slot = starts[gi]
        for item in group:
            if isinstance(item, Jump):
                out.append(item.make(starts[item.target] - slot - 1))
            elif isinstance(item, Call):
                out.append(BPF_CALL_REL(sub_start - slot - 1))
            else:
                out.append(item)
            slot += slot_len(item)
    return flatten(out + epilogue + subprog)


def check_same(insns, data):
    helpers = {HELPER_ID: helper}
    mem = bytearray(data)
    assert ctypes.addressof((ctypes.c_char * len(mem)).from_buffer(mem)) % 8 == 0
    p = Program(insns, helpers=helpers)
    r0 = p.run(mem)
    ref = reference.run(insns, mem=data, helpers=helpers)
    assert ref.r0 == r0, f"r0: VM {r0:#x} != reference {ref.r0:#x}"
    for r in REGS:       # a register diff first: the most readable failure
        o = DATA + 8 * r
        assert mem[o:o + 8] == ref.mem[o:o + 8], f"r{r} differs"
    assert bytes(mem) == ref.mem
    assert p.insn_count == ref.insn_count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_vm_matches_reference(case):
    check_same(*case)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs(max_body=120))
def test_vm_matches_reference_long(case):
    check_same(*case)


def test_generator_produces_the_interesting_shapes():
    """The generator really emits jumps, calls, atomics and packet loads (a
    guard against a strategy silently degenerating)."""
    from hypothesis import find
    for wanted in (lambda c: any(i.code == BPF_JMP | BPF_CALL and i.src == 1 for i in c[0]),
                   lambda c: any(i.code == BPF_JMP32 | BPF_JA for i in c[0]),
                   lambda c: any(i.code & 0xe0 == BPF_ATOMIC and i.code & 7 == BPF_STX
                                 for i in c[0]),
                   lambda c: any(i.code & 7 == BPF_LD and i.code & 0xe0 == BPF_IND
                                 for i in c[0])):
        case = find(programs(), wanted, settings=settings(max_examples=2000, deadline=None))
        check_same(*case)


def test_reference_docstring_examples():
    import doctest
    res = doctest.testmod(reference)
    assert res.attempted >= 3 and res.failed == 0


def test_reference_faults_name_the_region_miss():
    with pytest.raises(reference.ReferenceFault) as info:
        reference.run([BPF_LDX_MEM(BPF_W, 0, 1, 6), BPF_EXIT_INSN()], mem=bytes(8))
    e = info.value
    assert (e.kind, e.pc, e.addr, e.size, e.write) == ("mem", 0, reference.MEM_ADDR + 6, 4, False)
    assert str(e) == f"pc 0: mem: invalid read of 4 bytes at {reference.MEM_ADDR + 6:#x}"
