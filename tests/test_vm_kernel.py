"""Differential tests: userbpf's interpreter against the live kernel.

Every program is run twice -- by userbpf and, through BPF_PROG_TEST_RUN, by
the kernel (userbpf.hostbpf) -- and ALL final registers r0..r9 plus the
eight 8-byte stack slots the body uses are compared.

How a program is built so that only the frame around the body differs:

    prologue   *(u64 *)(r10 - 72) = r1             save the context / mem pointer
               stack slots r10-8 .. r10-64 = constants
               r0 .. r9 = constants (lddw)         no pointer left in r0-r9
    body       random, byte-identical on both sides
    epilogue   r0..r9 -> r10-80 .. r10-152         spill the register file
               r1 = *(u64 *)(r10 - 72)
    kernel:    r2 = xdp->data; bounds check vs xdp->data_end
    userbpf:   r2 = r1                             (r1 is the mem buffer)
               copy r0..r9 and the 8 body slots into the buffer at r2
               r0 = XDP_PASS; exit

The kernel program is an XDP program run on a 144-byte packet; its
``data_out`` is the dump. The body never names r10 in an ALU op and only
touches the initialised slots, so the verifier accepts every generated
program: a rejection is a generator bug and fails the test.
"""
from __future__ import annotations

import random
import struct
from typing import List, Sequence

import pytest

from userbpf import Program, hostbpf, isa
from userbpf.isa import (
    BPF_ALU, BPF_ALU64, BPF_ATOMIC_OP, BPF_B, BPF_DW, BPF_END, BPF_EXIT_INSN,
    BPF_H, BPF_JMP, BPF_JMP32, BPF_K, BPF_LD_IMM64, BPF_LDX_MEM, BPF_LDX_MEMSX,
    BPF_MOV64_IMM, BPF_MOV64_REG, BPF_RAW_INSN, BPF_ST_MEM, BPF_STX_MEM, BPF_W, BPF_X,
    AluOp, AtomicOp, Insn, JmpOp,
)

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not hostbpf.available(),
                       reason=f"live bpf() not permitted: {hostbpf.why_unavailable()}"),
]

M64 = (1 << 64) - 1
XDP_DROP, XDP_PASS = 1, 2
FP = 10
CTX_SLOT = -72                      # saved r1
BODY_SLOTS = [-8 * k for k in range(1, 9)]  # r10-8 .. r10-64
REG_SLOT = [-80 - 8 * i for i in range(10)]  # where the epilogue spills r0..r9
DUMP_WORDS = 10 + len(BODY_SLOTS)
DUMP_BYTES = 8 * DUMP_WORDS
ETH_HLEN = 14


# --- the frame around a body ---------------------------------------------------

def prologue(regs: Sequence[int], stack: Sequence[int]) -> List[Insn]:
    out = [BPF_STX_MEM(BPF_DW, FP, 1, CTX_SLOT)]
    for off, value in zip(BODY_SLOTS, stack):
        out += [*BPF_LD_IMM64(0, value), BPF_STX_MEM(BPF_DW, FP, 0, off)]
    for r, value in enumerate(regs):
        out += BPF_LD_IMM64(r, value)
    return out


def epilogue(kernel: bool) -> List[Insn]:
    out = [BPF_STX_MEM(BPF_DW, FP, r, REG_SLOT[r]) for r in range(10)]
    out.append(BPF_LDX_MEM(BPF_DW, 1, FP, CTX_SLOT))
    if kernel:
        out += [
            BPF_LDX_MEM(BPF_W, 2, 1, 0),            # xdp_md->data
            BPF_LDX_MEM(BPF_W, 3, 1, 4),            # xdp_md->data_end
            BPF_MOV64_REG(4, 2),
            isa.BPF_ALU64_IMM(AluOp.ADD, 4, DUMP_BYTES),
            BPF_MOV64_IMM(0, XDP_DROP),
            isa.BPF_JMP_REG(JmpOp.JGT, 4, 3, 2 * DUMP_WORDS + 1),   # to the exit
        ]
    else:
        out.append(BPF_MOV64_REG(2, 1))
    for i, off in enumerate(REG_SLOT + BODY_SLOTS):
        out += [BPF_LDX_MEM(BPF_DW, 4, FP, off), BPF_STX_MEM(BPF_DW, 2, 4, 8 * i)]
    out += [BPF_MOV64_IMM(0, XDP_PASS), BPF_EXIT_INSN()]
    return out


def listing(insns: Sequence[Insn]) -> str:
    """The program as text: the disassembler when there is one, else raw slots."""
    try:
        from userbpf import asm
        return asm.disassemble(list(insns))
    except Exception:
        return "\n".join(f"{i:4}: {x.code:#04x} dst=r{x.dst} src=r{x.src} off={x.off} "
                         f"imm={x.imm}" + (f"  [{isa.vm_op_name(x)}]"
                                           if isa.check_fields(insns, i) is None else "")
                         for i, x in enumerate(insns))


class Outcome:
    """Both machines' final state for one body."""

    def __init__(self, body, regs, stack, kernel, userbpf, error=None):
        self.body, self.regs, self.stack = body, regs, stack
        self.kernel, self.userbpf, self.error = kernel, userbpf, error

    @property
    def ok(self) -> bool:
        return self.error is None and self.kernel == self.userbpf

    def report(self, seed=None) -> str:
        names = [f"r{i}" for i in range(10)] + [f"fp{o}" for o in BODY_SLOTS]
        lines = [f"seed={seed}" if seed is not None else "hand-written case"]
        lines.append("initial " + " ".join(f"r{i}={v:#x}" for i, v in enumerate(self.regs)))
        lines.append("initial stack " + " ".join(f"fp{o}={v:#x}"
                                                 for o, v in zip(BODY_SLOTS, self.stack)))
        lines.append("body:\n" + listing(self.body))
        if self.error:
            lines.append(self.error)
        else:
            lines.append(f"{'':>6} {'kernel':>20} {'userbpf':>20}")
            for n, k, u in zip(names, self.kernel, self.userbpf):
                lines.append(f"{n:>6} {k:#20x} {u:#20x}" + ("   <-- differs" if k != u else ""))
        return "\n".join(lines)


def run_both(body: Sequence[Insn], regs: Sequence[int], stack: Sequence[int]) -> Outcome:
    """Run ``body`` framed for the kernel (XDP) and for userbpf; collect both dumps."""
    body = isa.flatten(body)
    regs = [v & M64 for v in regs]
    stack = [v & M64 for v in stack]
    head = prologue(regs, stack)
    try:
        kprog = hostbpf.prog_load(head + body + epilogue(True), hostbpf.ProgType.XDP)
    except hostbpf.HostError as e:
        return Outcome(body, regs, stack, None, None,
                       f"KERNEL REJECTED (errno {e.errno}):\n{e.log[-3000:]}")
    with kprog:
        retval, out, _ = kprog.test_run(bytes(DUMP_BYTES))
    if retval != XDP_PASS:
        return Outcome(body, regs, stack, None, None, f"kernel retval {retval}")
    kernel = list(struct.unpack_from(f"<{DUMP_WORDS}Q", out))
    mem = bytearray(DUMP_BYTES)
    try:
        r0 = Program(head + body + epilogue(False)).run(mem)
    except Exception as e:      # any userbpf failure is a finding, shown with the program
        return Outcome(body, regs, stack, kernel, None,
                       f"USERBPF RAISED {type(e).__name__}: {e}")
    if r0 != XDP_PASS:
        return Outcome(body, regs, stack, kernel, None, f"userbpf r0 {r0}")
    return Outcome(body, regs, stack, kernel, list(struct.unpack_from(f"<{DUMP_WORDS}Q", mem)))


def assert_same(body, regs=(0,) * 10, stack=(0,) * 8, seed=None) -> Outcome:
    res = run_both(body, list(regs) + [0] * (10 - len(regs)),
                   list(stack) + [0] * (8 - len(stack)))
    assert res.ok, res.report(seed)
    return res


# --- random programs -------------------------------------------------------------

SPECIAL64 = [0, 1, 2, 7, M64, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000,
             0x7fffffffffffffff, 0x8000000000000000, 0xffffffff80000000,
             0xffffffff7fffffff, 0x00000000ffff8000, 0x8000, 0x80, 0xff, 0xffff,
             0x0123456789abcdef, 31, 32, 33, 63, 64, 65, 127, 255]
SPECIAL32 = [0, 1, -1, 2, 7, 0x7fffffff, -0x80000000, 0x7fff, -0x8000, 0x80, -0x80,
             0xff, 0xffff, 31, 32, 63, 64, -2]

ALU_OPS = [AluOp.ADD, AluOp.SUB, AluOp.MUL, AluOp.DIV, AluOp.OR, AluOp.AND, AluOp.LSH,
           AluOp.RSH, AluOp.MOD, AluOp.XOR, AluOp.MOV, AluOp.ARSH]
COND_OPS = [JmpOp.JEQ, JmpOp.JGT, JmpOp.JGE, JmpOp.JSET, JmpOp.JNE, JmpOp.JSGT,
            JmpOp.JSGE, JmpOp.JLT, JmpOp.JLE, JmpOp.JSLT, JmpOp.JSLE]
ATOMIC_OPS = [AtomicOp.ADD, AtomicOp.OR, AtomicOp.AND, AtomicOp.XOR, AtomicOp.FETCH_ADD,
              AtomicOp.FETCH_OR, AtomicOp.FETCH_AND, AtomicOp.FETCH_XOR, AtomicOp.XCHG,
              AtomicOp.CMPXCHG]
SIZES = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}


def value64(rng: random.Random) -> int:
    k = rng.random()
    if k < 0.35:
        return rng.choice(SPECIAL64)
    if k < 0.5:
        return rng.randrange(0, 80)
    if k < 0.65:
        return rng.getrandbits(32)
    if k < 0.75:
        return (-rng.getrandbits(31)) & M64
    return rng.getrandbits(64)


def imm32(rng: random.Random) -> int:
    k = rng.random()
    if k < 0.4:
        return rng.choice(SPECIAL32)
    if k < 0.6:
        return rng.randrange(-80, 80)
    return rng.randrange(-(1 << 31), 1 << 31)


def reg(rng: random.Random) -> int:
    return rng.randrange(10)


def gen_alu(rng: random.Random) -> List[Insn]:
    cls = rng.choice((BPF_ALU64, BPF_ALU))
    width = 64 if cls == BPF_ALU64 else 32
    dst, src = reg(rng), reg(rng)
    k = rng.random()
    if k < 0.05:
        return [BPF_RAW_INSN(cls | AluOp.NEG | BPF_K, dst, 0, 0, 0)]
    if k < 0.12:                                    # movsx
        widths = (8, 16, 32) if cls == BPF_ALU64 else (8, 16)
        return [BPF_RAW_INSN(cls | AluOp.MOV | BPF_X, dst, src, 0, 0)._replace(
            off=rng.choice(widths))]
    if k < 0.20:                                    # byte swaps: le/be (ALU), bswap (ALU64)
        source = rng.choice((BPF_K, BPF_X)) if cls == BPF_ALU else BPF_K
        return [BPF_RAW_INSN(cls | BPF_END | source, dst, 0, 0, rng.choice((16, 32, 64)))]
    op = rng.choice(ALU_OPS)
    off = rng.randrange(2) if op in (AluOp.DIV, AluOp.MOD) else 0    # off=1: signed
    if rng.random() < 0.5:
        return [BPF_RAW_INSN(cls | op | BPF_X, dst, src, off, 0)]
    if op in (AluOp.LSH, AluOp.RSH, AluOp.ARSH):
        imm = rng.randrange(width)                  # the verifier refuses K >= width
    else:
        imm = imm32(rng)
        if op in (AluOp.DIV, AluOp.MOD) and imm == 0:
            imm = rng.choice((1, -1, 3, -7))        # and K == 0
    return [BPF_RAW_INSN(cls | op | BPF_K, dst, 0, off, imm)]


def gen_lddw(rng: random.Random) -> List[Insn]:
    return list(BPF_LD_IMM64(reg(rng), value64(rng)))


def slot_offset(rng: random.Random, size: int) -> int:
    # stack accesses must be naturally aligned (the verifier is strict for the stack)
    return rng.choice(BODY_SLOTS) + rng.randrange(0, 8, size)


def gen_mem(rng: random.Random) -> List[Insn]:
    size = rng.choice((1, 2, 4, 8))
    off = slot_offset(rng, size)
    k = rng.random()
    if k < 0.3:
        return [BPF_STX_MEM(SIZES[size], FP, reg(rng), off)]
    if k < 0.45:
        return [BPF_ST_MEM(SIZES[size], FP, off, imm32(rng))]
    if k < 0.75 or size == 8:
        return [BPF_LDX_MEM(SIZES[size], reg(rng), FP, off)]
    return [BPF_LDX_MEMSX(SIZES[size], reg(rng), FP, off)]


def gen_atomic(rng: random.Random) -> List[Insn]:
    size = rng.choice((4, 8))
    return [BPF_ATOMIC_OP(SIZES[size], rng.choice(ATOMIC_OPS), FP, reg(rng),
                          slot_offset(rng, size))]


class Jump:
    """A forward jump whose offset is fixed once the body is laid out."""

    def __init__(self, insn: Insn, target: int, gotol: bool = False):
        self.insn, self.target, self.gotol = insn, target, gotol


def gen_jump(rng: random.Random, here: int, n: int):
    target = rng.randrange(here + 1, n + 1)      # another item, or the end of the body
    k = rng.random()
    if k < 0.06:
        return Jump(isa.BPF_JMP_A(0), target)
    if k < 0.09:
        return Jump(isa.BPF_JMP32_A(0), target, gotol=True)
    cls = rng.choice((BPF_JMP, BPF_JMP32))
    op = rng.choice(COND_OPS)
    if rng.random() < 0.5:
        return Jump(BPF_RAW_INSN(cls | op | BPF_X, reg(rng), reg(rng), 0, 0), target)
    return Jump(BPF_RAW_INSN(cls | op | BPF_K, reg(rng), 0, 0, imm32(rng)), target)


PROFILES = {
    # name: weights of (alu, lddw, mem, atomic, jump), body length range
    "alu": ((70, 5, 10, 5, 10), (8, 30)),
    "mixed": ((40, 5, 20, 15, 20), (10, 40)),
    "branchy": ((35, 5, 15, 10, 35), (10, 40)),
}


def layout(items) -> List[Insn]:
    """Resolve jump targets to slot offsets; unconditional jumps that would leave
    code unreachable (the verifier refuses that) become ``ja +0``."""
    n = len(items)
    while True:
        reach = [False] * (n + 1)
        reach[0] = True
        for i, it in enumerate(items):
            if not reach[i]:
                continue
            if isinstance(it, Jump):
                reach[it.target] = True
                if it.insn.code & 0xf0 != JmpOp.JA:
                    reach[i + 1] = True
            else:
                reach[i + 1] = True
        dead = [i for i in range(n) if not reach[i]]
        if not dead:
            break
        # the last unconditional jump over the first dead item falls through instead
        for it in reversed(items[:dead[0]]):
            if isinstance(it, Jump) and it.insn.code & 0xf0 == JmpOp.JA and it.target > dead[0]:
                it.target = items.index(it) + 1
                break
    pos = [0]
    for it in items:
        pos.append(pos[-1] + (1 if isinstance(it, Jump) else len(it)))
    out: List[Insn] = []
    for i, it in enumerate(items):
        if isinstance(it, Jump):
            delta = pos[it.target] - pos[i] - 1
            out.append(it.insn._replace(imm=delta) if it.gotol else it.insn._replace(off=delta))
        else:
            out += it
    return out


def random_case(seed: int, profile: str):
    rng = random.Random(seed)
    weights, (lo, hi) = PROFILES[profile]
    n = rng.randint(lo, hi)
    kinds = rng.choices(("alu", "lddw", "mem", "atomic", "jump"), weights, k=n)
    gens = {"alu": gen_alu, "lddw": gen_lddw, "mem": gen_mem, "atomic": gen_atomic}
    items = [gen_jump(rng, i, n) if kind == "jump" else gens[kind](rng)
             for i, kind in enumerate(kinds)]
    regs = [value64(rng) for _ in range(10)]
    stack = [value64(rng) for _ in BODY_SLOTS]
    return layout(items), regs, stack


def differential(count: int, base_seed: int, profile: str) -> None:
    failures, rejected = [], 0
    for seed in range(base_seed, base_seed + count):
        body, regs, stack = random_case(seed, profile)
        res = run_both(body, regs, stack)
        if res.error and res.error.startswith("KERNEL REJECTED"):
            rejected += 1
        if not res.ok:
            failures.append((seed, res))
    if failures:
        seed, res = failures[0]
        pytest.fail(f"{len(failures)}/{count} programs differ ({rejected} rejected by the "
                    f"kernel: a generator bug); first:\n{res.report(seed)}\n"
                    f"other seeds: {[s for s, _ in failures[1:20]]}", pytrace=False)


BOUNDED = {"alu": 1000, "mixed": 1000, "branchy": 1000}
BASE_SEED = {"alu": 1_000_000, "mixed": 2_000_000, "branchy": 3_000_000}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_random_programs_match_the_kernel(profile):
    differential(BOUNDED[profile], BASE_SEED[profile], profile)


@pytest.mark.slow
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_random_programs_match_the_kernel_long(profile):
    differential(34_000, BASE_SEED[profile] + 500_000, profile)


def test_generator_covers_every_operation():
    """The bounded run really exercises every concrete operation it claims to."""
    seen = set()
    for profile in PROFILES:
        for seed in range(BASE_SEED[profile], BASE_SEED[profile] + BOUNDED[profile]):
            body, _, _ = random_case(seed, profile)
            seen |= {isa.vm_op_name(body[i]) for i in isa.slots(body)}
    want = {n for n in isa.VM_OP_NAMES
            if n != "INVALID" and not n.startswith(("CALL", "LD_", "LOAD_ACQ", "STORE_REL",
                                                    "MAY_GOTO", "ADDR_SPACE", "EXIT", "CTX_"))}
    assert want - seen == set()


def test_frame_reports_initial_state_unchanged():
    # an empty body: the dump is exactly the prologue's constants
    regs = [0x1111 * (i + 1) for i in range(10)]
    stack = [0xabc0 + i for i in range(8)]
    res = assert_same([], regs, stack)
    assert res.kernel == regs + stack


# --- hand-written edge cases ------------------------------------------------------

INT64_MIN = 0x8000000000000000
INT32_MIN = 0x80000000


def alu(cls, op, dst, src=None, imm=0, off=0):
    if src is None:
        return BPF_RAW_INSN(cls | op | BPF_K, dst, 0, off, imm)
    return BPF_RAW_INSN(cls | op | BPF_X, dst, src, off, 0)


A64, A32 = BPF_ALU64, BPF_ALU
EDGE = {
    # signed division overflow: INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0
    "sdiv64 INT64_MIN/-1 X": ([alu(A64, AluOp.DIV, 1, 2, off=1)], [0, INT64_MIN, M64]),
    "sdiv64 INT64_MIN/-1 K": ([alu(A64, AluOp.DIV, 1, imm=-1, off=1)], [0, INT64_MIN]),
    "smod64 INT64_MIN%-1 X": ([alu(A64, AluOp.MOD, 1, 2, off=1)], [0, INT64_MIN, M64]),
    "smod64 INT64_MIN%-1 K": ([alu(A64, AluOp.MOD, 1, imm=-1, off=1)], [0, INT64_MIN]),
    "sdiv32 INT32_MIN/-1 X": ([alu(A32, AluOp.DIV, 1, 2, off=1)], [0, INT32_MIN, 0xffffffff]),
    "sdiv32 INT32_MIN/-1 K": ([alu(A32, AluOp.DIV, 1, imm=-1, off=1)], [0, 0xdead00000000 | INT32_MIN]),
    "smod32 INT32_MIN%-1 X": ([alu(A32, AluOp.MOD, 1, 2, off=1)], [0, INT32_MIN, 0xffffffff]),
    "smod32 INT32_MIN%-1 K": ([alu(A32, AluOp.MOD, 1, imm=-1, off=1)], [0, INT32_MIN]),
    "sdiv/smod signs": ([alu(A64, AluOp.DIV, 1, 2, off=1), alu(A64, AluOp.MOD, 3, 4, off=1),
                         alu(A32, AluOp.DIV, 5, 6, off=1), alu(A32, AluOp.MOD, 7, 8, off=1)],
                        [0, -7, 2, 7, -2, -7, 2, 0xffffffff00000007, 0xfffffffe]),
    # division by zero through a register: x/0 = 0, x%0 = x (32-bit: zero-extended)
    "div64 by 0": ([alu(A64, AluOp.DIV, 1, 2)], [0, 12345, 0]),
    "mod64 by 0": ([alu(A64, AluOp.MOD, 1, 2)], [0, 0xfedcba9876543210, 0]),
    "sdiv64 by 0": ([alu(A64, AluOp.DIV, 1, 2, off=1)], [0, M64, 0]),
    "smod64 by 0": ([alu(A64, AluOp.MOD, 1, 2, off=1)], [0, 0x8000000000000001, 0]),
    "div32 by 0": ([alu(A32, AluOp.DIV, 1, 2)], [0, 0xffff_0000_1234, 0x5_0000_0000]),
    "mod32 by 0": ([alu(A32, AluOp.MOD, 1, 2)], [0, 0xffff_ffff_8765_4321, 0x7_0000_0000]),
    "sdiv32 by 0": ([alu(A32, AluOp.DIV, 1, 2, off=1)], [0, 0xffffffff, 0]),
    "smod32 by 0": ([alu(A32, AluOp.MOD, 1, 2, off=1)], [0, 0x1_8000_0001, 0]),
    "div64 by 2^32 (not 0)": ([alu(A64, AluOp.DIV, 1, 2)], [0, 1 << 40, 1 << 32]),
    # shifts by >= the width through a register (the kernel masks the count)
    "lsh64 by 64/65/127": ([alu(A64, AluOp.LSH, 1, 2), alu(A64, AluOp.LSH, 3, 4),
                            alu(A64, AluOp.LSH, 5, 6)], [0, 3, 64, 3, 65, 3, 127]),
    "rsh64 by 64/200": ([alu(A64, AluOp.RSH, 1, 2), alu(A64, AluOp.RSH, 3, 4)],
                        [0, M64, 64, M64, 200]),
    "arsh64 by 64/70": ([alu(A64, AluOp.ARSH, 1, 2), alu(A64, AluOp.ARSH, 3, 4)],
                        [0, INT64_MIN, 64, INT64_MIN, 70]),
    "lsh32 by 32/33": ([alu(A32, AluOp.LSH, 1, 2), alu(A32, AluOp.LSH, 3, 4)],
                       [0, 0xdead_0000_0003, 32, 3, 33]),
    "rsh32 by 32/63": ([alu(A32, AluOp.RSH, 1, 2), alu(A32, AluOp.RSH, 3, 4)],
                       [0, 0xffffffff, 32, 0xffffffff, 63]),
    "arsh32 by 32/36": ([alu(A32, AluOp.ARSH, 1, 2), alu(A32, AluOp.ARSH, 3, 4)],
                        [0, INT32_MIN, 32, INT32_MIN, 36]),
    "shift count with high bits": ([alu(A64, AluOp.LSH, 1, 2), alu(A32, AluOp.RSH, 3, 4)],
                                   [0, 1, 0x1_0000_0001, 0x80000000, 0xffff_ffff_0000_0021]),
    "arsh K max": ([alu(A64, AluOp.ARSH, 1, imm=63), alu(A32, AluOp.ARSH, 2, imm=31)],
                   [0, INT64_MIN, INT32_MIN]),
    # sign-extending moves
    "movsx64": ([isa.BPF_MOVSX64_REG(1, 4, 8), isa.BPF_MOVSX64_REG(2, 4, 16),
                 isa.BPF_MOVSX64_REG(3, 4, 32), isa.BPF_MOVSX64_REG(5, 6, 8),
                 isa.BPF_MOVSX64_REG(7, 6, 16), isa.BPF_MOVSX64_REG(8, 6, 32)],
                [0, 0, 0, 0, 0x1234_5678_8765_8080, 0, 0x7f7f_7f7f_7f7f_7f7f]),
    "movsx32 (zero-extends to 64)": ([isa.BPF_MOVSX32_REG(1, 4, 8), isa.BPF_MOVSX32_REG(2, 4, 16),
                                      isa.BPF_MOVSX32_REG(3, 5, 8)],
                                     [0, M64, M64, M64, 0xffff_ffff_ffff_8080, 0x7f]),
    # byte order, every width
    "le16/32/64": ([isa.BPF_ENDIAN(isa.BPF_TO_LE, 1, 16), isa.BPF_ENDIAN(isa.BPF_TO_LE, 2, 32),
                    isa.BPF_ENDIAN(isa.BPF_TO_LE, 3, 64)],
                   [0, 0x0123456789abcdef, 0x0123456789abcdef, 0x0123456789abcdef]),
    "be16/32/64": ([isa.BPF_ENDIAN(isa.BPF_TO_BE, 1, 16), isa.BPF_ENDIAN(isa.BPF_TO_BE, 2, 32),
                    isa.BPF_ENDIAN(isa.BPF_TO_BE, 3, 64)],
                   [0, 0x0123456789abcdef, 0x0123456789abcdef, 0x0123456789abcdef]),
    "bswap16/32/64": ([isa.BPF_BSWAP(1, 16), isa.BPF_BSWAP(2, 32), isa.BPF_BSWAP(3, 64)],
                      [0, 0x0123456789abcdef, 0x0123456789abcdef, 0x0123456789abcdef]),
    # ALU32 writes zero-extend the 64-bit register
    "alu32 zero extension": ([alu(A32, AluOp.ADD, 1, imm=0), alu(A32, AluOp.MOV, 2, 3),
                              alu(A32, AluOp.MOV, 4, imm=-1), alu(A32, AluOp.NEG, 5),
                              alu(A32, AluOp.SUB, 6, imm=1), alu(A32, AluOp.MUL, 7, 8)],
                             [0, M64, 0, 0xaaaa_bbbb_cccc_dddd, 0, 0xffff_ffff_0000_0001, 0,
                              0x1_0000_0003, 0x2_8000_0001]),
    "mov64 K sign-extends": ([BPF_MOV64_IMM(1, -1), BPF_MOV64_IMM(2, -0x80000000),
                              alu(A64, AluOp.ADD, 3, imm=-1), alu(A64, AluOp.AND, 4, imm=-2),
                              alu(A64, AluOp.XOR, 5, imm=INT32_MIN)],
                             [0, 0, 0, 0, M64, 0x1234]),
    "mul overflow": ([alu(A64, AluOp.MUL, 1, 2), alu(A32, AluOp.MUL, 3, 4)],
                     [0, 0xffff_ffff_ffff_fff3, 0x1234_5678_9abc_def1, 0xfffffff3, 0x9abcdef1]),
    "unsigned div/mod K with negative imm": ([alu(A64, AluOp.DIV, 1, imm=-2),
                                              alu(A64, AluOp.MOD, 2, imm=-2),
                                              alu(A32, AluOp.DIV, 3, imm=-2),
                                              alu(A32, AluOp.MOD, 4, imm=-3)],
                                             [0, M64, M64 - 5, 0xffffffff, 0xfffffffe]),
    # jumps: signed vs unsigned, 32 vs 64, K sign extension
    "jmp signed/unsigned": ([isa.BPF_JMP_IMM(JmpOp.JGT, 1, -1, 1), BPF_MOV64_IMM(2, 1),
                             isa.BPF_JMP_IMM(JmpOp.JSGT, 1, -1, 1), BPF_MOV64_IMM(3, 1),
                             isa.BPF_JMP32_IMM(JmpOp.JEQ, 4, 5, 1), BPF_MOV64_IMM(5, 9),
                             isa.BPF_JMP_IMM(JmpOp.JEQ, 4, 5, 1), BPF_MOV64_IMM(6, 9),
                             isa.BPF_JMP32_REG(JmpOp.JSLT, 7, 8, 1), BPF_MOV64_IMM(9, 9)],
                            [0, 0xffff_ffff_0000_0000, 0, 0, 0xaaaa_0000_0005, 0, 0,
                             0x8000_0000, 0x7fff_ffff, 0]),
    "jset 32 vs 64": ([isa.BPF_JMP32_IMM(JmpOp.JSET, 1, -1, 1), BPF_MOV64_IMM(2, 1),
                       isa.BPF_JMP_IMM(JmpOp.JSET, 1, -1, 1), BPF_MOV64_IMM(3, 1)],
                      [0, 0x1_0000_0000]),
    # atomics: fetch ops return the old value; 32-bit ones zero-extend it
    "fetch ops return old values": ([
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.FETCH_ADD, FP, 1, -8),
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.FETCH_OR, FP, 2, -16),
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.FETCH_AND, FP, 3, -24),
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.FETCH_XOR, FP, 4, -32),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.FETCH_ADD, FP, 5, -40),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.FETCH_OR, FP, 6, -44),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.FETCH_AND, FP, 7, -48),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.FETCH_XOR, FP, 8, -56)],
        [0, 5, 0xf0, 0xff00, M64, 0xffff_ffff_ffff_ffff, 1 << 33, 0x0f0f_0f0f_0f0f_0f0f, 3],
        [M64, 0x0f, 0xffff, 0x1234, 0x1_ffff_fffe, 0x8000_0000_0000_0000, 7, 0xffff_0000_ffff]),
    "non-fetch ops leave src alone": ([
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.ADD, FP, 1, -8),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.OR, FP, 2, -16),
        BPF_ATOMIC_OP(BPF_W, AtomicOp.AND, FP, 3, -20),
        BPF_ATOMIC_OP(BPF_DW, AtomicOp.XOR, FP, 4, -24)],
        [0, 1, 0x8000_0000_0000_0001, 0xffff_0000_0000_ffff, M64],
        [M64, 0x1_0000_0000, 0x1234_5678_9abc_def0, 0x5555]),
    "xchg 32/64": ([BPF_ATOMIC_OP(BPF_DW, AtomicOp.XCHG, FP, 1, -8),
                    BPF_ATOMIC_OP(BPF_W, AtomicOp.XCHG, FP, 2, -12)],
                   [0, 0x1111_2222_3333_4444, 0xaaaa_bbbb_cccc_dddd],
                   [0x5555_6666_7777_8888, 0x9999_0000_1234_5678]),
    "cmpxchg64 equal": ([BPF_ATOMIC_OP(BPF_DW, AtomicOp.CMPXCHG, FP, 1, -8)],
                        [0x0123_4567_89ab_cdef, 0xfeed], [0x0123_4567_89ab_cdef]),
    "cmpxchg64 unequal": ([BPF_ATOMIC_OP(BPF_DW, AtomicOp.CMPXCHG, FP, 1, -8)],
                          [0x0123_4567_89ab_cdee, 0xfeed], [0x0123_4567_89ab_cdef]),
    "cmpxchg32 equal (upper r0 bits ignored)": (
        [BPF_ATOMIC_OP(BPF_W, AtomicOp.CMPXCHG, FP, 1, -8)],
        [0xffff_ffff_89ab_cdef, 0x1_0000_beef], [0x0123_4567_89ab_cdef]),
    "cmpxchg32 unequal": ([BPF_ATOMIC_OP(BPF_W, AtomicOp.CMPXCHG, FP, 1, -4)],
                          [0x89ab_cdef, 0xbeef], [0x0123_4567_89ab_cdef]),
    "cmpxchg with r0 as src": ([BPF_ATOMIC_OP(BPF_DW, AtomicOp.CMPXCHG, FP, 0, -8)],
                               [7], [7]),
    # signed loads from the stack, every size and sub-slot position
    "ldxsx": ([BPF_LDX_MEMSX(BPF_B, 1, FP, -8), BPF_LDX_MEMSX(BPF_B, 2, FP, -1),
               BPF_LDX_MEMSX(BPF_H, 3, FP, -8), BPF_LDX_MEMSX(BPF_H, 4, FP, -2),
               BPF_LDX_MEMSX(BPF_W, 5, FP, -8), BPF_LDX_MEMSX(BPF_W, 6, FP, -4),
               BPF_LDX_MEM(BPF_W, 7, FP, -4), BPF_LDX_MEM(BPF_H, 8, FP, -6)],
              [0] * 10, [0x8081_7f7f_8000_ff80]),
    "narrow stores keep the rest of the slot": ([
        BPF_STX_MEM(BPF_B, FP, 1, -7), BPF_STX_MEM(BPF_H, FP, 1, -14),
        BPF_ST_MEM(BPF_W, FP, -20, -2), BPF_ST_MEM(BPF_DW, FP, -32, -3),
        BPF_ST_MEM(BPF_H, FP, -40, 0x8001)],
        [0, 0x1234_5678_9abc_def0], [M64, M64, M64, M64, M64]),
}


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_case_matches_the_kernel(name):
    body, regs, *stack = EDGE[name]
    assert_same(body, regs, stack[0] if stack else ())


# --- legacy packet loads in a socket filter -----------------------------------------

PACKET = bytes(range(0x80, 0x80 + ETH_HLEN)) + bytes((i * 37 + 11) & 0xff for i in range(50))


def ld_case(body: Sequence[Insn]):
    """(kernel retval, userbpf retval) for a socket filter: r6 = ctx; body; exit,
    test-run on both sides (the test run pulls the Ethernet header, so
    ``LD_ABS 0`` reads the byte after it; SKF_LL_OFF reaches back to it)."""
    code = [BPF_MOV64_REG(6, 1), *isa.flatten(body), BPF_EXIT_INSN()]
    with hostbpf.prog_load(code, hostbpf.ProgType.SOCKET_FILTER) as prog:
        kernel = prog.test_run(PACKET).retval
    user = Program(code, prog_type=hostbpf.ProgType.SOCKET_FILTER).test_run(PACKET).retval
    return kernel, user, code


def ld_abs(size, imm):
    return isa.BPF_LD_ABS(size, imm)


PAYLOAD = len(PACKET) - ETH_HLEN
LD_CASES = {
    "abs b 0": [ld_abs(BPF_B, 0)],
    "abs h 1": [ld_abs(BPF_H, 1)],
    "abs w 2 (big-endian)": [ld_abs(BPF_W, 2)],
    "abs b last": [ld_abs(BPF_B, PAYLOAD - 1)],
    "abs h last": [ld_abs(BPF_H, PAYLOAD - 2)],
    "abs w last": [ld_abs(BPF_W, PAYLOAD - 4)],
    "abs b past end": [BPF_MOV64_IMM(0, 77), ld_abs(BPF_B, PAYLOAD)],
    "abs h straddles end": [BPF_MOV64_IMM(0, 77), ld_abs(BPF_H, PAYLOAD - 1)],
    "abs w straddles end": [BPF_MOV64_IMM(0, 77), ld_abs(BPF_W, PAYLOAD - 3)],
    "abs huge": [BPF_MOV64_IMM(0, 77), ld_abs(BPF_W, 0x7fffffff)],
    "abs -1": [BPF_MOV64_IMM(0, 77), ld_abs(BPF_B, -1)],
    "out of range stops the program": [ld_abs(BPF_B, PAYLOAD + 5), BPF_MOV64_IMM(0, 99)],
    "ind w": [BPF_MOV64_IMM(7, 5), isa.BPF_LD_IND(BPF_W, 7, 3)],
    "ind b negative reg + imm": [BPF_MOV64_IMM(7, -1), isa.BPF_LD_IND(BPF_B, 7, 4)],
    "ind h imm negative": [BPF_MOV64_IMM(7, 10), isa.BPF_LD_IND(BPF_H, 7, -4)],
    "ind uses the low 32 bits": [*BPF_LD_IMM64(7, 0x1_0000_0002), isa.BPF_LD_IND(BPF_B, 7, 0)],
    "ind past end": [BPF_MOV64_IMM(7, PAYLOAD), isa.BPF_LD_IND(BPF_B, 7, 0)],
    "ind wraps negative": [BPF_MOV64_IMM(7, -10), isa.BPF_LD_IND(BPF_W, 7, 2)],
    "sum of loads": [ld_abs(BPF_B, 0), BPF_MOV64_REG(8, 0), ld_abs(BPF_H, 4),
                     isa.BPF_ALU64_REG(AluOp.ADD, 8, 0), ld_abs(BPF_W, 8),
                     isa.BPF_ALU64_REG(AluOp.XOR, 0, 8)],
}


@pytest.mark.parametrize("name", sorted(LD_CASES))
def test_legacy_packet_load_matches_the_kernel(name):
    kernel, user, code = ld_case(LD_CASES[name])
    assert user >> 32 == 0, f"LD_ABS/LD_IND results are at most 32 bits: {user:#x}"
    assert kernel == user, (f"{name}: kernel {kernel:#x} userbpf {user:#x}\n"
                            f"packet {PACKET.hex()}\n{listing(code)}")


def test_legacy_load_offset_zero_is_after_the_ethernet_header():
    # pins the framing ld_case relies on
    kernel, user, _ = ld_case([ld_abs(BPF_B, 0)])
    assert kernel == PACKET[ETH_HLEN] == user


def random_ld_body(rng: random.Random) -> List[Insn]:
    """Loads near the packet's edges folded into r8 (LD_ABS/IND clobber r1-r5).
    Most land inside the packet; about one in six is out of range and ends the run."""
    body = [BPF_MOV64_IMM(8, rng.randrange(1 << 16))]
    for _ in range(rng.randint(1, 6)):
        size = rng.choice(((BPF_B, 1), (BPF_H, 2), (BPF_W, 4)))
        last = PAYLOAD - size[1]
        if rng.random() < 0.83:
            o = rng.choice((0, 1, 2, 3, last, last - 1, last - 2, rng.randrange(last + 1)))
        else:
            o = rng.choice((last + 1, PAYLOAD, -1, -4, 1 << 30))
        if rng.random() < 0.5:
            body.append(ld_abs(size[0], o))
        else:   # the offset is (u32)src + imm: bases that wrap around 32 bits
            base = rng.choice((0, o, -1, -8, 1 << 31, (1 << 32) - 2, 1 << 32, 5 << 32))
            body += [*BPF_LD_IMM64(7, base), isa.BPF_LD_IND(size[0], 7, o - base)]
        body += [alu(A32, AluOp.MUL, 8, imm=31), alu(A32, AluOp.ADD, 8, 0)]
    return body + [alu(A32, AluOp.MOV, 0, 8)]


def test_random_legacy_packet_loads_match_the_kernel():
    bad = []
    for seed in range(500):
        kernel, user, code = ld_case(random_ld_body(random.Random(seed)))
        if kernel != user:
            bad.append(f"seed {seed}: kernel {kernel:#x} userbpf {user:#x}\n{listing(code)}")
    assert not bad, f"{len(bad)}/500 differ; first:\n{bad[0]}"


# The kernel gives two negative LD_ABS/LD_IND offset ranges a meaning (from classic
# BPF): SKF_NET_OFF (-0x100000) + k reads the network header at k, SKF_LL_OFF
# (-0x200000) + k the link-layer header at k: both reach the skb's headers in
# a socket-filter test run (the Ethernet header is before the data).
SKF_NET_OFF, SKF_LL_OFF = -0x100000, -0x200000


@pytest.mark.parametrize("imm", [
    SKF_NET_OFF, SKF_NET_OFF + 3, SKF_NET_OFF + 40, SKF_NET_OFF - 1, SKF_LL_OFF,
    SKF_LL_OFF + 2, SKF_LL_OFF + 13, SKF_LL_OFF + 14, SKF_LL_OFF - 1,
    SKF_NET_OFF + len(PACKET) - ETH_HLEN - 1, SKF_NET_OFF + len(PACKET) - ETH_HLEN],
    ids=["net+0", "net+3", "net+40", "net-1", "ll+0", "ll+2", "ll+13", "ll+14", "ll-1",
         "net+last", "net+end"])
def test_skf_special_offsets_match_the_kernel(imm):
    kernel, user, code = ld_case([ld_abs(BPF_B, imm)])
    assert kernel == user, f"kernel {kernel:#x} userbpf {user:#x}"


def test_skf_special_offsets_kernel_meaning():
    # the meaning, pinned on the kernel side
    assert ld_case([ld_abs(BPF_B, SKF_NET_OFF + 3)])[0] == PACKET[ETH_HLEN + 3]
    assert ld_case([ld_abs(BPF_B, SKF_LL_OFF + 2)])[0] == PACKET[2]
    assert ld_case([ld_abs(BPF_B, SKF_NET_OFF - 1)])[0] == 0
