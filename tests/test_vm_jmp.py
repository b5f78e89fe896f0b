"""The interpreter's JMP and JMP32 instructions: every condition taken and not
taken (32/64, K/X, signed), ja, gotol, may_goto and backward jumps."""
from __future__ import annotations

import pytest

from userbpf import Program, reference
from userbpf.isa import *  # noqa: F401,F403

M64 = (1 << 64) - 1

OPS = [BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSET,
       BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE]

# (dst, src as a 64-bit value, taken? for each op in OPS order with JMP, with JMP32).
# Every src is a sign-extended 32-bit value, so the K form (imm) means the same.
PAIRS = [
    (0xfffffffffffffffe, 1, "FTTTFFFFFTT", "FTTTFFFFFTT"),                     # -2 vs 1
    (0x0000000100000005, 5, "FTTTFFTTTFF", "TFFTFTTFTFT"),                     # equal low halves
    (3, 0xffffffffffffff00, "FTFFTTFTTFF", "FTFFTTFTTFF"),                     # 3 vs -256
    (0x8000000000000000, 0, "FTTTFFFFFTT", "TFFTFTFFTFT"),                     # INT64_MIN vs 0
    (0x7fffffff, 0xffffffff80000000, "FTFFTTFTTFF", "FTFFTTFTTFF"),            # INT32 max/min
    (7, 7, "TFFTFTTFTFT", "TFFTFTTFTFT"),
]
# Only expressible with a register: the source's upper half differs.
X_ONLY = [(5, 0xffffffff00000005, "FTFFTTTTTFF", "TFFTFTTFTFT")]


def branch(jmp_insn, a, b):
    """1 if the jump is taken, 0 if not; on the VM and the reference."""
    prog = [BPF_LD_IMM64(BPF_REG_1, a), BPF_LD_IMM64(BPF_REG_2, b), jmp_insn,
            BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN(),
            BPF_MOV64_IMM(BPF_REG_0, 1), BPF_EXIT_INSN()]
    vm = Program(prog).run()
    assert reference.run(prog).r0 == vm
    return vm


def cases(pairs, xs):
    for i, (a, b, t64, t32) in enumerate(pairs):
        for k, op in enumerate(OPS):
            for x in xs:
                name = f"{op.name.lower()}-{i}-{'X' if x else 'K'}"
                yield pytest.param(op, a, b, x, t64[k] == "T", t32[k] == "T", id=name)


@pytest.mark.parametrize("op, a, b, x, taken64, taken32",
                         list(cases(PAIRS, (False, True))) + list(cases(X_ONLY, (True,))))
def test_conditional_jumps(op, a, b, x, taken64, taken32):
    if x:
        j64, j32 = BPF_JMP_REG(op, 1, 2, 2), BPF_JMP32_REG(op, 1, 2, 2)
    else:
        j64, j32 = BPF_JMP_IMM(op, 1, b, 2), BPF_JMP32_IMM(op, 1, b, 2)
    assert branch(j64, a, b) == int(taken64)
    assert branch(j32, a, b) == int(taken32)


def test_every_condition_is_exercised_both_ways():
    """The table above takes and skips each op in each width (a test of the table)."""
    for k in range(len(OPS)):
        for col in (2, 3):
            outcomes = {row[col][k] for row in PAIRS}
            assert outcomes == {"T", "F"}, OPS[k]


def run_both(prog, mem=None, **kw):
    p = Program(prog, **kw)
    vm = p.run(mem)
    ref = reference.run(prog, mem=mem)
    assert ref.r0 == vm
    assert ref.insn_count == p.insn_count
    return vm, p.insn_count


def test_ja_skips_forward():
    prog = [BPF_MOV64_IMM(0, 1), BPF_JMP_A(1), BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN()]
    assert run_both(prog) == (1, 3)


def test_ja_zero_offset_is_a_no_op():
    prog = [BPF_MOV64_IMM(0, 4), BPF_JMP_A(0), BPF_EXIT_INSN()]
    assert run_both(prog) == (4, 3)


def test_gotol_uses_the_32_bit_immediate():
    prog = [BPF_MOV64_IMM(0, 1), BPF_JMP32_A(2), BPF_MOV64_IMM(0, 2), BPF_MOV64_IMM(0, 3),
            BPF_EXIT_INSN()]
    assert run_both(prog) == (1, 3)


def test_gotol_backward_and_over_lddw():
    prog = [BPF_MOV64_IMM(0, 0),
            BPF_JMP_IMM(BPF_JGE, 0, 5, 4),         # -> exit
            BPF_ALU64_IMM(BPF_ADD, 0, 1),
            BPF_LD_IMM64(3, 0x123456789),           # two slots
            BPF_JMP32_A(-5),                        # back to the jge
            BPF_EXIT_INSN()]
    # mov + 5 * (jge, add, lddw, gotol) + jge + exit
    assert run_both(prog) == (5, 1 + 5 * 4 + 2)


def test_backward_conditional_loop():
    prog = [BPF_MOV64_IMM(0, 0), BPF_MOV64_IMM(1, 10),
            BPF_ALU64_REG(BPF_ADD, 0, 1),
            BPF_ALU64_IMM(BPF_SUB, 1, 1),
            BPF_JMP_IMM(BPF_JNE, 1, 0, -3),
            BPF_EXIT_INSN()]
    assert run_both(prog) == (55, 2 + 10 * 3 + 1)


def test_jump_to_the_last_instruction_and_to_the_first():
    prog = [BPF_JMP_IMM(BPF_JEQ, 1, 1, 2),        # second pass: r1 == 1 -> exit
            BPF_MOV64_IMM(1, 1),
            BPF_JMP_A(-3),
            BPF_EXIT_INSN()]
    assert run_both(prog) == (0, 5)


# --- may_goto ------------------------------------------------------------------

MAY_GOTO_LOOP = [
    BPF_MOV64_IMM(0, 0),
    BPF_MAY_GOTO_INSN(2),          # falls through while the frame has budget
    BPF_ALU64_IMM(BPF_ADD, 0, 1),
    BPF_JMP_A(-3),
    BPF_EXIT_INSN(),
]


def test_may_goto_falls_through_bpf_max_loops_times_then_jumps():
    p = Program(MAY_GOTO_LOOP)
    assert p.run() == 8 * 1024 * 1024
    assert p.insn_count == 1 + 3 * 8 * 1024 * 1024 + 2


def test_may_goto_reference_with_a_small_loop_budget(monkeypatch):
    monkeypatch.setattr(reference, "MAX_LOOPS", 5)
    res = reference.run(MAY_GOTO_LOOP)
    assert (res.r0, res.insn_count) == (5, 1 + 3 * 5 + 2)


def test_may_goto_zero_offset_never_changes_control_flow():
    prog = [BPF_MOV64_IMM(0, 9), BPF_MAY_GOTO_INSN(0), BPF_EXIT_INSN()]
    assert run_both(prog) == (9, 3)


def test_may_goto_budget_is_per_frame():
    """A subprogram gets its own BPF_MAX_LOOPS: after the main frame exhausts
    its budget, a callee can still loop as long."""
    n = 8 * 1024 * 1024
    prog = [
        BPF_MOV64_IMM(6, 0),
        BPF_MAY_GOTO_INSN(2),              # 1: main loop
        BPF_ALU64_IMM(BPF_ADD, 6, 1),
        BPF_JMP_A(-3),
        BPF_CALL_REL(3),                   # 4: -> 8
        BPF_ALU64_IMM(BPF_LSH, 0, 32),
        BPF_ALU64_REG(BPF_OR, 0, 6),
        BPF_EXIT_INSN(),
        BPF_MOV64_IMM(0, 0),               # 8: subprogram loop
        BPF_MAY_GOTO_INSN(2),
        BPF_ALU64_IMM(BPF_ADD, 0, 1),
        BPF_JMP_A(-3),
        BPF_EXIT_INSN(),
    ]
    assert Program(prog).run() == (n << 32) | n
