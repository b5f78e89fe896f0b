"""The assembler and disassembler: both syntaxes, labels, errors, round trips."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CONFORMANCE_JSON, conformance_files, need
from userbpf import asm, datafile, isa
from userbpf.errors import AsmError, EncodingError
from userbpf.isa import *  # noqa: F401,F403  (linux/filter.h names)
from userbpf.isa import AluOp, AtomicOp, Class, Insn, JmpOp, Pseudo, Size, Source

FILES = conformance_files()


def _assembled() -> list:
    if not CONFORMANCE_JSON.exists():
        return []
    return json.loads(CONFORMANCE_JSON.read_text())


ASSEMBLED = _assembled()
SYNTAXES = ("kernel", "mnemonic")


# --- the conformance corpus -------------------------------------------------------

@pytest.mark.parametrize("case", ASSEMBLED or [None],
                         ids=lambda c: c["name"] if c else "absent")
def test_corpus_assembles_byte_for_byte(case):
    """Our encoding of each program equals the suite's own assembler's."""
    if case is None:
        need(CONFORMANCE_JSON)
    path = need(CONFORMANCE_JSON.parent / "bpf_conformance" / case["name"])
    assert isa.encode(asm.assemble(datafile.load(path).asm)).hex() == case["code"]


def test_corpus_size():
    need(CONFORMANCE_JSON)
    assert len(ASSEMBLED) == 312 and len(FILES) == 313


def test_callx_data_uses_the_register_in_dst():
    """callx.data is the one file the suite's assembler refuses; we encode
    ``call %r2`` as opcode 0x8d with the register in dst, as LLVM does."""
    d = datafile.load(need(CONFORMANCE_JSON.parent / "bpf_conformance" / "callx.data"))
    code = asm.assemble(d.asm)
    assert code[2] == Insn(0x8d, 2, 0, 0, 0) == BPF_CALLX(BPF_REG_2)
    assert len(code) == 5


@pytest.mark.parametrize("path", FILES or [None], ids=lambda p: p.name if p else "absent")
def test_corpus_round_trips_in_both_syntaxes(path):
    if path is None:
        need(CONFORMANCE_JSON.parent / "bpf_conformance")
    prog = asm.assemble(datafile.load(path).asm)
    for syntax in SYNTAXES:
        for labels in (False, True):
            text = asm.disassemble(prog, syntax=syntax, labels=labels)
            assert ".insn" not in text
            assert asm.assemble(text) == prog, (syntax, labels)
    # bytes in, same text out
    assert asm.disassemble(isa.encode(prog)) == asm.disassemble(prog)


# --- one line -> exact instructions ----------------------------------------------

LINES = [
    # ALU, kernel and mnemonic spellings of the same instruction
    ("r0 = 1", [BPF_MOV64_IMM(0, 1)]),
    ("mov %r0, 1", [BPF_MOV64_IMM(0, 1)]),
    ("mov r0, 1", [BPF_MOV64_IMM(0, 1)]),
    ("w1 += w2", [BPF_ALU32_REG(BPF_ADD, 1, 2)]),
    ("add32 %r1, %r2", [BPF_ALU32_REG(BPF_ADD, 1, 2)]),
    ("r3 -= -7", [BPF_ALU64_IMM(BPF_SUB, 3, -7)]),
    ("r3 *= r4", [BPF_ALU64_REG(BPF_MUL, 3, 4)]),
    ("w3 /= 0x10", [BPF_ALU32_IMM(BPF_DIV, 3, 16)]),
    ("r3 s/= r4", [BPF_ALU64_REG_OFF(BPF_DIV, 3, 4, 1)]),
    ("sdiv32 %r3, 5", [BPF_ALU32_IMM_OFF(BPF_DIV, 3, 5, 1)]),
    ("w3 %= w4", [BPF_ALU32_REG(BPF_MOD, 3, 4)]),
    ("r3 s%= 3", [BPF_ALU64_IMM_OFF(BPF_MOD, 3, 3, 1)]),
    ("smod %r3, %r4", [BPF_ALU64_REG_OFF(BPF_MOD, 3, 4, 1)]),
    ("r5 |= 1", [BPF_ALU64_IMM(BPF_OR, 5, 1)]),
    ("r5 &= r6", [BPF_ALU64_REG(BPF_AND, 5, 6)]),
    ("r5 <<= 3", [BPF_ALU64_IMM(BPF_LSH, 5, 3)]),
    ("w5 >>= w6", [BPF_ALU32_REG(BPF_RSH, 5, 6)]),
    ("r1 s>>= 3", [BPF_ALU64_IMM(BPF_ARSH, 1, 3)]),
    ("arsh32 %r1, %r2", [BPF_ALU32_REG(BPF_ARSH, 1, 2)]),
    ("r5 ^= 0xffffffff", [BPF_ALU64_IMM(BPF_XOR, 5, -1)]),
    ("mov %r1, 0xffffffff", [BPF_MOV64_IMM(1, -1)]),
    ("w1 = w2", [BPF_MOV32_REG(1, 2)]),
    ("r1 = -r1", [BPF_RAW_INSN(BPF_ALU64 | BPF_NEG, 1, 0, 0, 0)]),
    ("w1 = -w1", [BPF_RAW_INSN(BPF_ALU | BPF_NEG, 1, 0, 0, 0)]),
    ("neg32 %r1", [BPF_RAW_INSN(BPF_ALU | BPF_NEG, 1, 0, 0, 0)]),
    ("r1 = (s8)r2", [BPF_MOVSX64_REG(1, 2, 8)]),
    ("r1 = (s32)r2", [BPF_MOVSX64_REG(1, 2, 32)]),
    ("w1 = (s16)w2", [BPF_MOVSX32_REG(1, 2, 16)]),
    ("movsx1664 %r1, %r2", [BPF_MOVSX64_REG(1, 2, 16)]),
    ("movsx832 %r1, %r2", [BPF_MOVSX32_REG(1, 2, 8)]),
    ("r1 = be16 r1", [BPF_ENDIAN(BPF_TO_BE, 1, 16)]),
    ("r1 = le32 r1", [BPF_ENDIAN(BPF_TO_LE, 1, 32)]),
    ("be64 %r1", [BPF_ENDIAN(BPF_TO_BE, 1, 64)]),
    ("r1 = bswap64 r1", [BPF_BSWAP(1, 64)]),
    ("swap16 %r1", [BPF_BSWAP(1, 16)]),
    ("bswap32 r1", [BPF_BSWAP(1, 32)]),
    ("r1 = addr_space_cast(r2, 0, 1)", [BPF_ADDR_SPACE_CAST_INSN(1, 2, 0, 1)]),
    ("addr_space_cast %r1, %r2, 1, 0", [BPF_ADDR_SPACE_CAST_INSN(1, 2, 1, 0)]),
    # jumps
    ("if r1 > 0x10 goto +3", [BPF_JMP_IMM(BPF_JGT, 1, 16, 3)]),
    ("jgt %r1, 0x10, +3", [BPF_JMP_IMM(BPF_JGT, 1, 16, 3)]),
    ("if w1 s< w2 goto -1", [BPF_JMP32_REG(BPF_JSLT, 1, 2, -1)]),
    ("jslt32 %r1, %r2, -1", [BPF_JMP32_REG(BPF_JSLT, 1, 2, -1)]),
    ("if r1 & 0x8 goto pc+1", [BPF_JMP_IMM(BPF_JSET, 1, 8, 1)]),
    ("if r1 s>= r2 goto +0", [BPF_JMP_REG(BPF_JSGE, 1, 2, 0)]),
    ("if r1 == -1 goto +2", [BPF_JMP_IMM(BPF_JEQ, 1, -1, 2)]),
    ("if r1 != 0xffffffff goto +2", [BPF_JMP_IMM(BPF_JNE, 1, -1, 2)]),
    ("jsle32 %r1, 5, +2", [BPF_JMP32_IMM(BPF_JSLE, 1, 5, 2)]),
    ("goto +2", [BPF_JMP_A(2)]),
    ("goto pc-2", [BPF_JMP_A(-2)]),
    ("goto +3 <LBB0_4>", [BPF_JMP_A(3)]),
    ("ja +2", [BPF_JMP_A(2)]),
    ("gotol +70000", [BPF_JMP32_A(70000)]),
    ("ja32 -2", [BPF_JMP32_A(-2)]),
    ("may_goto +2", [BPF_MAY_GOTO_INSN(2)]),
    ("call 1", [BPF_EMIT_CALL(1)]),
    ("call bpf_map_lookup_elem", [BPF_EMIT_CALL(1)]),
    ("call ktime_get_ns", [BPF_EMIT_CALL(5)]),
    ("call bpf_ktime_get_ns#5", [BPF_EMIT_CALL(5)]),     # the verifier log's form
    ("call pc+3", [BPF_CALL_REL(3)]),
    ("call local -4", [BPF_CALL_REL(-4)]),
    ("call kfunc 77", [BPF_RAW_INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 77)]),
    ("callx r2", [BPF_CALLX(2)]),
    ("call %r2", [BPF_CALLX(2)]),
    ("exit", [BPF_EXIT_INSN()]),
    # loads and stores
    ("*(u32 *)(r10 - 4) = r1", [BPF_STX_MEM(BPF_W, 10, 1, -4)]),
    ("*(u32 *)(r10 -4) = w1", [BPF_STX_MEM(BPF_W, 10, 1, -4)]),
    ("stxw [%r10-4], %r1", [BPF_STX_MEM(BPF_W, 10, 1, -4)]),
    ("*(u16 *)(r1 + 2) = 7", [BPF_ST_MEM(BPF_H, 1, 2, 7)]),
    ("sth [%r1+2], 7", [BPF_ST_MEM(BPF_H, 1, 2, 7)]),
    ("stdw [%r1], -1", [BPF_ST_MEM(BPF_DW, 1, 0, -1)]),
    ("r0 = *(u64 *)(r1 + 8)", [BPF_LDX_MEM(BPF_DW, 0, 1, 8)]),
    ("r0 = *(u64 *)(r1 + 0x8)", [BPF_LDX_MEM(BPF_DW, 0, 1, 8)]),
    ("w0 = *(u8 *)(r1)", [BPF_LDX_MEM(BPF_B, 0, 1, 0)]),
    ("ldxdw %r0, [%r1+8]", [BPF_LDX_MEM(BPF_DW, 0, 1, 8)]),
    ("ldxh %r0, [%r1]", [BPF_LDX_MEM(BPF_H, 0, 1, 0)]),
    ("r0 = *(s8 *)(r1 + 1)", [BPF_LDX_MEMSX(BPF_B, 0, 1, 1)]),
    ("ldxsw %r0, [%r10-4]", [BPF_LDX_MEMSX(BPF_W, 0, 10, -4)]),
    ("r0 = *(u8 *)skb[12]", [BPF_LD_ABS(BPF_B, 12)]),
    ("ldabsw 4", [BPF_LD_ABS(BPF_W, 4)]),
    ("r0 = *(u16 *)skb[r1 + 2]", [BPF_LD_IND(BPF_H, 1, 2)]),
    ("ldindb %r3, -1", [BPF_LD_IND(BPF_B, 3, -1)]),
    # atomics
    ("lock *(u64 *)(r10 - 8) += r1", [BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 10, 1, -8)]),
    ("lock add [%r10-8], %r1", [BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 10, 1, -8)]),
    ("lock *(u32 *)(r10 - 8) ^= r1", [BPF_ATOMIC_OP(BPF_W, BPF_XOR, 10, 1, -8)]),
    ("lock or32 [%r10-4], %r1", [BPF_ATOMIC_OP(BPF_W, BPF_OR, 10, 1, -4)]),
    ("r0 = atomic_fetch_add((u64 *)(r10 - 8), r0)",
     [BPF_ATOMIC_OP(BPF_DW, BPF_ADD | BPF_FETCH, 10, 0, -8)]),
    ("r0 = atomic64_fetch_and((u64 *)(r10 -8), r0)",        # the verifier log's name
     [BPF_ATOMIC_OP(BPF_DW, BPF_AND | BPF_FETCH, 10, 0, -8)]),
    ("w3 = atomic_fetch_xor((u32 *)(r10 - 4), w3)",
     [BPF_ATOMIC_OP(BPF_W, BPF_XOR | BPF_FETCH, 10, 3, -4)]),
    ("lock fetch add32 [%r10-4], %r1", [BPF_ATOMIC_OP(BPF_W, BPF_ADD | BPF_FETCH, 10, 1, -4)]),
    ("r1 = xchg_64(r10 - 8, r1)", [BPF_ATOMIC_OP(BPF_DW, BPF_XCHG, 10, 1, -8)]),
    ("w1 = xchg32_32(r10 - 8, w1)", [BPF_ATOMIC_OP(BPF_W, BPF_XCHG, 10, 1, -8)]),
    ("lock xchg32 [%r10-8], %r1", [BPF_ATOMIC_OP(BPF_W, BPF_XCHG, 10, 1, -8)]),
    ("r0 = cmpxchg_64(r10 - 8, r0, r1)", [BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 1, -8)]),
    ("w0 = cmpxchg32_32(r10 - 8, w0, w1)", [BPF_ATOMIC_OP(BPF_W, BPF_CMPXCHG, 10, 1, -8)]),
    ("r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)",
     [BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 1, -8)]),
    ("lock cmpxchg [%r10-8], %r1", [BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 1, -8)]),
    ("r0 = load_acquire((u64 *)(r1 + 8))", [BPF_ATOMIC_OP(BPF_DW, BPF_LOAD_ACQ, 0, 1, 8)]),
    ("ldacqb %r0, [%r1+8]", [BPF_ATOMIC_OP(BPF_B, BPF_LOAD_ACQ, 0, 1, 8)]),
    ("store_release((u32 *)(r1 + 8), w2)", [BPF_ATOMIC_OP(BPF_W, BPF_STORE_REL, 1, 2, 8)]),
    ("strelh [%r1+8], %r2", [BPF_ATOMIC_OP(BPF_H, BPF_STORE_REL, 1, 2, 8)]),
    # 64-bit immediates and pseudo lddw
    ("r1 = 0x123456789 ll", list(BPF_LD_IMM64(1, 0x123456789))),
    ("r1 = -1 ll", list(BPF_LD_IMM64(1, -1))),
    ("lddw %r1, 0x1122334455667788", list(BPF_LD_IMM64(1, 0x1122334455667788))),
    ("r1 = map[fd:3] ll", list(BPF_LD_MAP_FD(1, 3))),
    ("lddw %r1, map[fd:3]", list(BPF_LD_MAP_FD(1, 3))),
    ("r1 = map[fd:3][0]+16 ll", list(BPF_LD_MAP_VALUE(1, 3, 16))),
    ("r2 = map[idx:1] ll", list(BPF_LD_IMM64_RAW(2, BPF_PSEUDO_MAP_IDX, 1))),
    ("r2 = map[idx:1][0]+8 ll",
     [Insn(0x18, 2, BPF_PSEUDO_MAP_IDX_VALUE, 0, 1), Insn(0, 0, 0, 0, 8)]),
    ("r3 = btf_id[42] ll", list(BPF_LD_IMM64_RAW(3, BPF_PSEUDO_BTF_ID, 42))),
    ("r4 = func[pc+5] ll", [Insn(0x18, 4, BPF_PSEUDO_FUNC, 0, 5), Insn(0, 0, 0, 0, 0)]),
    # raw slots, and kernel-log prefixes
    (".insn 0xff, 1, 2, -3, 4", [Insn(0xff, 1, 2, -3, 4)]),
    ("12: (bf) r1 = r6", [BPF_MOV64_REG(1, 6)]),
    ("    MOV %R0, 1", None),     # registers are lower case (an error, below)
]


@pytest.mark.parametrize("text, want", [x for x in LINES if x[1] is not None],
                         ids=[x[0] for x in LINES if x[1] is not None])
def test_line_assembles_to(text, want):
    assert asm.assemble(text) == want
    # every line survives a trip through both syntaxes
    for syntax in SYNTAXES:
        assert asm.assemble(asm.disassemble(want, syntax=syntax)) == want


def test_mnemonics_are_case_insensitive_registers_are_not():
    assert asm.assemble("MOV %r0, 1\nEXIT") == [BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    with pytest.raises(AsmError, match="expected a register"):
        asm.assemble("mov %R0, 1")


def test_comments_blank_lines_and_mixed_syntax():
    text = """
        # full-line comment
        mov %r0, 0      # ubpf style
        r0 += 2         ; objdump style
        add32 %r0, 3    // C style

        exit
    """
    assert asm.assemble(text) == [BPF_MOV64_IMM(0, 0), BPF_ALU64_IMM(BPF_ADD, 0, 2),
                                  BPF_ALU32_IMM(BPF_ADD, 0, 3), BPF_EXIT_INSN()]


# --- labels --------------------------------------------------------------------

def test_labels_forward_and_backward():
    text = """
    top:
        r1 += 1
        if r1 > 10 goto done
        jne %r1, 5, top
        lddw %r2, 1
        ja32 top
        goto top
    done: exit
    """
    assert asm.assemble(text) == [
        BPF_ALU64_IMM(BPF_ADD, 1, 1),
        BPF_JMP_IMM(BPF_JGT, 1, 10, 5),       # counts both lddw slots
        BPF_JMP_IMM(BPF_JNE, 1, 5, -3),
        *BPF_LD_IMM64(2, 1),
        BPF_JMP32_A(-6),
        BPF_JMP_A(-7),
        BPF_EXIT_INSN(),
    ]


def test_call_local_labels_and_label_over_helper_name():
    text = "call local f\ncall f\ncall loop\nexit\nf:\nloop:\nr0 = 1\nexit"
    assert asm.assemble(text) == [BPF_CALL_REL(3), BPF_CALL_REL(2), BPF_CALL_REL(1),
                                  BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    # without a label of that name, the helper
    assert asm.assemble("call loop\nexit") == [BPF_EMIT_CALL(181), BPF_EXIT_INSN()]


def test_pseudo_func_takes_a_label():
    assert asm.assemble("r1 = func[cb] ll\nexit\ncb: exit") == [
        Insn(0x18, 1, BPF_PSEUDO_FUNC, 0, 2), Insn(0), BPF_EXIT_INSN(), BPF_EXIT_INSN()]


def test_exit_as_a_target_means_the_first_exit():
    """The corpus writes ``jeq %r1, 0xb, exit`` with no ``exit:`` label."""
    text = "jeq %r1, 0xb, exit\nmov %r0, 1\nexit\nmov %r0, 2\nexit\njne %r1, 1, exit"
    code = asm.assemble(text)
    assert code[0] == BPF_JMP_IMM(BPF_JEQ, 1, 11, 1) and code[5].off == -4
    # a real exit: label wins
    assert asm.assemble("ja exit\nexit\nexit:\nexit")[0] == BPF_JMP_A(1)


def test_labels_on_their_own_line_or_before_an_instruction():
    assert asm.assemble("a: b:\n c: exit\ngoto a\ngoto b\ngoto c") == [
        BPF_EXIT_INSN(), BPF_JMP_A(-2), BPF_JMP_A(-3), BPF_JMP_A(-4)]


# --- the disassembler's text --------------------------------------------------------

TEXTS = [
    # (slots, kernel, mnemonic)
    ([BPF_MOV64_IMM(0, 7)], "r0 = 7", "mov %r0, 7"),
    ([BPF_MOV32_IMM(0, -1)], "w0 = -1", "mov32 %r0, -1"),
    ([BPF_ALU64_REG(BPF_ADD, 1, 2)], "r1 += r2", "add %r1, %r2"),
    ([BPF_ALU32_REG_OFF(BPF_MOD, 1, 2, 1)], "w1 s%= w2", "smod32 %r1, %r2"),
    ([BPF_ALU64_IMM(BPF_ARSH, 1, 3)], "r1 s>>= 3", "arsh %r1, 3"),
    ([BPF_RAW_INSN(BPF_ALU64 | BPF_NEG, 4, 0, 0, 0)], "r4 = -r4", "neg %r4"),
    ([BPF_MOVSX32_REG(1, 2, 8)], "w1 = (s8)w2", "movsx832 %r1, %r2"),
    ([BPF_ENDIAN(BPF_TO_BE, 3, 16)], "r3 = be16 r3", "be16 %r3"),
    ([BPF_BSWAP(3, 32)], "r3 = bswap32 r3", "bswap32 %r3"),
    ([BPF_JMP_IMM(BPF_JGT, 1, 16, 3)], "if r1 > 0x10 goto +3", "jgt %r1, 16, +3"),
    ([BPF_JMP32_REG(BPF_JSLE, 1, 2, -1)], "if w1 s<= w2 goto -1", "jsle32 %r1, %r2, -1"),
    ([BPF_JMP_IMM(BPF_JNE, 1, -1, 0)], "if r1 != 0xffffffff goto +0", "jne %r1, -1, +0"),
    ([BPF_JMP_A(-1)], "goto -1", "ja -1"),
    ([BPF_JMP32_A(5)], "gotol +5", "ja32 +5"),
    ([BPF_MAY_GOTO_INSN(1)], "may_goto +1", "may_goto +1"),
    ([BPF_EMIT_CALL(1)], "call bpf_map_lookup_elem", "call 1"),
    ([BPF_EMIT_CALL(99999)], "call 99999", "call 99999"),
    ([BPF_CALL_REL(4)], "call pc+4", "call local +4"),
    ([BPF_CALLX(2)], "callx r2", "call %r2"),
    ([BPF_EXIT_INSN()], "exit", "exit"),
    ([BPF_LDX_MEM(BPF_DW, 0, 1, 64)], "r0 = *(u64 *)(r1 +64)", "ldxdw %r0, [%r1+64]"),
    ([BPF_LDX_MEMSX(BPF_H, 0, 1, -2)], "r0 = *(s16 *)(r1 -2)", "ldxsh %r0, [%r1-2]"),
    ([BPF_ST_MEM(BPF_B, 10, -1, 255)], "*(u8 *)(r10 -1) = 255", "stb [%r10-1], 255"),
    ([BPF_STX_MEM(BPF_W, 10, 1, 0)], "*(u32 *)(r10 +0) = r1", "stxw [%r10+0], %r1"),
    ([BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 10, 1, -8)], "lock *(u64 *)(r10 -8) += r1",
     "lock add [%r10-8], %r1"),
    ([BPF_ATOMIC_OP(BPF_W, BPF_OR | BPF_FETCH, 10, 2, -8)],
     "w2 = atomic_fetch_or((u32 *)(r10 -8), w2)", "lock fetch or32 [%r10-8], %r2"),
    ([BPF_ATOMIC_OP(BPF_DW, BPF_XCHG, 10, 2, -8)], "r2 = xchg_64(r10 -8, r2)",
     "lock xchg [%r10-8], %r2"),
    ([BPF_ATOMIC_OP(BPF_W, BPF_CMPXCHG, 10, 2, -8)], "w0 = cmpxchg32_32(r10 -8, w0, w2)",
     "lock cmpxchg32 [%r10-8], %r2"),
    ([BPF_ATOMIC_OP(BPF_W, BPF_LOAD_ACQ, 3, 1, 4)], "r3 = load_acquire((u32 *)(r1 +4))",
     "ldacqw %r3, [%r1+4]"),
    ([BPF_ATOMIC_OP(BPF_DW, BPF_STORE_REL, 1, 3, 4)],
     "store_release((u64 *)(r1 +4), r3)", "streldw [%r1+4], %r3"),
    (list(BPF_LD_IMM64(1, 0x1122334455667788)), "r1 = 0x1122334455667788 ll",
     "lddw %r1, 0x1122334455667788"),
    (list(BPF_LD_MAP_VALUE(1, 5, 24)), "r1 = map[fd:5][0]+24 ll", "lddw %r1, map[fd:5][0]+24"),
    ([BPF_LD_ABS(BPF_H, 12)], "r0 = *(u16 *)skb[12]", "ldabsh 12"),
    ([BPF_LD_IND(BPF_W, 2, 14)], "r0 = *(u32 *)skb[r2 + 14]", "ldindw %r2, 14"),
]


@pytest.mark.parametrize("slots, kernel, mnemonic", TEXTS, ids=[t[1] for t in TEXTS])
def test_disassembly_text(slots, kernel, mnemonic):
    assert asm.disassemble(slots) == kernel
    assert asm.disassemble(slots, syntax="mnemonic") == mnemonic
    assert asm.format_insn(slots, 0) == kernel
    assert asm.format_insn(slots, 0, syntax="mnemonic") == mnemonic


def test_labels_in_disassembly():
    prog = asm.assemble("""
        r0 = 0
    again:
        r0 += 1
        if r0 < 10 goto again
        call local sub
        goto +100                   # outside the program: stays numeric
        exit
    sub:
        r0 = 1 ll
        exit
    """)
    assert asm.disassemble(prog, labels=True).split("\n") == [
        "r0 = 0", "L1:", "r0 += 1", "if r0 < 0xa goto L1", "call local L6",
        "goto +100", "exit", "L6:", "r0 = 0x1 ll", "exit"]
    assert asm.disassemble(prog, syntax="mnemonic", labels=True).split("\n")[3:5] == [
        "jlt %r0, 10, L1", "call local L6"]


def test_format_insn_names_one_slot_of_a_program():
    prog = asm.assemble("r1 = 5 ll\nr0 = *(u32 *)(r1 + 4)\nexit")
    assert asm.format_insn(prog, 0) == "r1 = 0x5 ll"
    assert asm.format_insn(prog, 2) == "r0 = *(u32 *)(r1 +4)"


@pytest.mark.parametrize("slot", [
    Insn(0xff, 0, 0, 0, 0),                      # unknown opcode
    Insn(0xb7, 1, 3, 0, 5),                      # mov with a src register set
    Insn(0x07, 1, 0, 1, 5),                      # add with off set
    Insn(0x95, 0, 0, 0, 1),                      # exit with imm
    Insn(0xdb, 1, 2, 0, 0x77),                   # unknown atomic op
    Insn(0x85, 0, 5, 0, 1),                      # call with an unknown src
    Insn(0x18, 1, 0, 0, 1),                      # lddw missing its second slot
    Insn(0x61, 11, 12, 0, 0),                    # registers out of range
])
def test_odd_slots_print_raw_and_assemble_back(slot):
    for syntax in SYNTAXES:
        text = asm.disassemble([slot], syntax=syntax)
        assert text.startswith(".insn ")
        assert asm.assemble(text) == [slot]


def test_a_broken_lddw_pair_prints_slot_by_slot():
    prog = [Insn(0x18, 1, 0, 0, 1), Insn(0xb7, 0, 0, 0, 2), BPF_EXIT_INSN()]
    text = asm.disassemble(prog)
    assert text.split("\n") == [".insn 0x18, 1, 0, 0, 1", "r0 = 2", "exit"]
    assert asm.assemble(text) == prog


def test_disassemble_refuses_bad_input_clearly():
    with pytest.raises(EncodingError, match="not a multiple of 8"):
        asm.disassemble(b"\x95\x00\x00")
    with pytest.raises(EncodingError, match="ELF object"):
        asm.disassemble(b"\x7fELF" + bytes(60))
    with pytest.raises(ValueError, match="syntax must be"):
        asm.disassemble(b"", syntax="att")
    assert asm.disassemble(b"") == ""


def test_helper_names():
    assert asm.helper_id("bpf_map_update_elem") == 2 == asm.helper_id("map_update_elem")
    assert asm.helper_id("no_such_helper") is None
    assert asm.helper_name(5) == "bpf_ktime_get_ns"
    assert asm.helper_name(1 << 30) is None


# --- errors --------------------------------------------------------------------------

ERRORS = [
    # (source, line, column, message start)
    ("exit\nfoo r1, 2", 2, 1, "unknown instruction 'foo'"),
    ("r11 = 1", 1, 1, "invalid register 'r11' (registers are r0..r10)"),
    ("mov %r0, %r12", 1, 10, "invalid register '%r12'"),
    ("  r1 = 0x100000000", 1, 8, "immediate 0x100000000 is out of range"),
    ("mov32 %r1, -0x80000001", 1, 12, "immediate -0x80000001 is out of range"),
    ("lddw %r1, 0x10000000000000000", 1, 11, "immediate 0x10000000000000000 is out of range"),
    ("stxw [%r1+40000], %r2", 1, 11, "offset 40000 is out of range [-32768, 32767]"),
    ("goto +40000", 1, 6, "jump offset +40000 is out of range"),
    ("r0 = 1\nif r0 > 1 goto nowhere\nexit", 2, 16, "undefined label 'nowhere'"),
    ("call nosuch\nexit", 1, 6, "undefined label or helper 'nosuch'"),
    ("x:\nx: exit", 2, 1, "label 'x' is already defined on line 1"),
    ("ldxw %r1, %r2", 1, 11, "expected a memory operand like [%r1+8], found '%'"),
    ("ldxw %r1, [%r2+8", 1, 17, "expected ']' closing the memory operand, found end of line"),
    ("r0 = *(u32 *)r1", 1, 14, "expected '(' opening a memory operand like (r1 +8), found 'r1'"),
    ("r0 = *(u128 *)(r1 + 0)", 1, 8, "expected a type (u8, u16, u32, u64), found 'u128'"),
    ("*(u32 *)(r1 + 0) = r2 r3", 1, 23, "unexpected 'r3' after the instruction"),
    ("w1 += r2", 1, 7, "expected a 32-bit register (w0..w10), found 'r2'"),
    ("if r1 > 1 goto", 1, 15, "expected a jump offset (+N, -N) or a label, found end of line"),
    ("if r1 ~ 1 goto +1", 1, 7, "expected a comparison"),
    ("jeq %r1, 2", 1, 11, "expected ',', found end of line"),
    ("lock nand [%r1], %r2", 1, 6, "unknown atomic operation 'nand'"),
    ("lock *(u16 *)(r1 + 0) += r2", 1, 23, "atomic operations are 32 or 64 bits wide"),
    ("r2 = cmpxchg_64(r10 - 8, r1, r2)", 1, 26, "cmpxchg compares with r0"),
    ("r2 = atomic_fetch_add((u64 *)(r10 - 8), r3)", 1, 41,
     "the fetched value returns into the operand register"),
    ("r1 = be17 r1", 1, 6, "byte swap width must be 16, 32 or 64, not 17"),
    ("r1 = be16 r2", 1, 13, "a byte swap must use one register"),
    ("w1 = 5 ll", 1, 4, "lddw loads a 64-bit register"),
    ("r1 = map[pid:3] ll", 1, 10, "expected fd or idx, found 'pid'"),
    (".insn 0x100, 0, 0, 0, 0", 1, 7, "opcode 0x100 is out of range"),
    ("= 5", 1, 1, "expected an instruction, found '='"),
]


@pytest.mark.parametrize("src, line, column, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_line_column_and_what_was_expected(src, line, column, message):
    with pytest.raises(AsmError) as info:
        asm.assemble(src)
    e = info.value
    assert (e.line, e.column) == (line, column)
    assert e.msg.startswith(message), e.msg
    assert e.text == src.split("\n")[line - 1].rstrip()
    assert str(e).startswith(f"{line}:{column}: {message}")
    assert isinstance(e, ValueError)


# --- properties -------------------------------------------------------------------------

regs = st.integers(0, 10)
s16 = st.integers(-(1 << 15), (1 << 15) - 1)
s32 = st.integers(-(1 << 31), (1 << 31) - 1)
SIZES = list(Size)


@st.composite
def alu(draw):
    cls = draw(st.sampled_from([Class.ALU, Class.ALU64]))
    op = draw(st.sampled_from(list(AluOp)))
    dst = draw(regs)
    if op == AluOp.NEG:
        return [Insn(cls | op, dst)]
    if op == AluOp.END:
        src = Source.K if cls == Class.ALU64 else draw(st.sampled_from(list(Source)))
        return [Insn(cls | op | src, dst, 0, 0, draw(st.sampled_from([16, 32, 64])))]
    source = draw(st.sampled_from(list(Source)))
    off = 0
    if op in (AluOp.DIV, AluOp.MOD):
        off = draw(st.sampled_from([0, 1]))
    if op == AluOp.MOV and source == Source.X:
        off = draw(st.sampled_from([0, 8, 16, 32, 1] if cls == Class.ALU64 else [0, 8, 16]))
        if off == isa.BPF_ADDR_SPACE_CAST:
            return [Insn(cls | op | source, dst, draw(regs), off,
                         draw(st.sampled_from([1, 1 << 16])))]
    if source == Source.X:
        return [Insn(cls | op | source, dst, draw(regs), off, 0)]
    return [Insn(cls | op | source, dst, 0, off, draw(s32))]


@st.composite
def jmp(draw):
    cls = draw(st.sampled_from([Class.JMP, Class.JMP32]))
    op = draw(st.sampled_from([op for op in JmpOp if op not in
                               (JmpOp.JA, JmpOp.CALL, JmpOp.EXIT, JmpOp.JCOND)]))
    if draw(st.booleans()):
        return [Insn(cls | op | Source.X, draw(regs), draw(regs), draw(s16), 0)]
    return [Insn(cls | op | Source.K, draw(regs), 0, draw(s16), draw(s32))]


special = st.one_of(
    s16.map(BPF_JMP_A), s32.map(BPF_JMP32_A), s16.map(BPF_MAY_GOTO_INSN),
    st.integers(0, (1 << 31) - 1).map(BPF_EMIT_CALL), s32.map(BPF_CALL_REL),
    s32.map(lambda i: Insn(0x85, 0, 2, 0, i)), regs.map(BPF_CALLX),
    st.just(BPF_EXIT_INSN())).map(lambda i: [i])


@st.composite
def mem(draw):
    kind = draw(st.sampled_from(["ldx", "ldxsx", "st", "stx", "atomic", "acq", "rel"]))
    size, dst, src, off = draw(st.sampled_from(SIZES)), draw(regs), draw(regs), draw(s16)
    if kind == "ldx":
        return [BPF_LDX_MEM(size, dst, src, off)]
    if kind == "ldxsx":
        return [BPF_LDX_MEMSX(draw(st.sampled_from([Size.B, Size.H, Size.W])), dst, src, off)]
    if kind == "st":
        return [BPF_ST_MEM(size, dst, off, draw(s32))]
    if kind == "stx":
        return [BPF_STX_MEM(size, dst, src, off)]
    if kind == "acq":
        return [BPF_ATOMIC_OP(size, BPF_LOAD_ACQ, dst, src, off)]
    if kind == "rel":
        return [BPF_ATOMIC_OP(size, BPF_STORE_REL, dst, src, off)]
    op = draw(st.sampled_from([o for o in AtomicOp
                               if o not in (AtomicOp.LOAD_ACQ, AtomicOp.STORE_REL)]))
    return [BPF_ATOMIC_OP(draw(st.sampled_from([Size.W, Size.DW])), op, dst, src, off)]


@st.composite
def ld(draw):
    kind = draw(st.sampled_from(["imm", "pseudo", "abs", "ind"]))
    size = draw(st.sampled_from([Size.B, Size.H, Size.W]))
    if kind == "abs":
        return [BPF_LD_ABS(size, draw(s32))]
    if kind == "ind":
        return [BPF_LD_IND(size, draw(regs), draw(s32))]
    dst = draw(regs)
    if kind == "imm":
        return list(BPF_LD_IMM64(dst, draw(st.integers(0, (1 << 64) - 1))))
    src = draw(st.sampled_from([p for p in Pseudo if p != Pseudo.NONE]))
    second = draw(s32) if src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE) else 0
    return [Insn(0x18, dst, src, 0, draw(s32)), Insn(0, 0, 0, 0, second)]


programs = st.lists(st.one_of(alu(), jmp(), special, mem(), ld()), min_size=1, max_size=12)


def _check_round_trips(prog):
    prog = isa.flatten(prog)
    for i in isa.slots(prog):
        assert isa.check_fields(prog, i) is None, prog[i]     # the generator is honest
    assert isa.decode(isa.encode(prog)) == prog
    for syntax in SYNTAXES:
        for labels in (False, True):
            text = asm.disassemble(prog, syntax=syntax, labels=labels)
            assert ".insn" not in text            # every valid slot has a readable form
            assert asm.assemble(text) == prog, text


@settings(max_examples=150, deadline=None)
@given(programs)
def test_valid_programs_round_trip(prog):
    _check_round_trips(prog)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(programs)
def test_valid_programs_round_trip_long(prog):
    _check_round_trips(prog)


def _check_any_bytes(data):
    slots = [Insn.decode(data, o) for o in range(0, len(data), 8)]
    for syntax in SYNTAXES:
        assert asm.assemble(asm.disassemble(data, syntax=syntax, labels=True)) == slots


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=8, max_size=8), max_size=10).map(b"".join))
def test_any_bytes_round_trip(data):
    """Odd encodings come back as .insn lines: nothing is lost."""
    _check_any_bytes(data)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(st.lists(st.binary(min_size=8, max_size=8), max_size=10).map(b"".join))
def test_any_bytes_round_trip_long(data):
    _check_any_bytes(data)


def test_builtin_helper_table_when_uapi_is_missing(monkeypatch):
    """Without userbpf.uapi the assembler falls back to a short built-in
    table, which must agree with the full one."""
    import sys
    import userbpf
    full = asm._helper_table()
    monkeypatch.setitem(sys.modules, "userbpf.uapi", None)     # import now fails
    monkeypatch.delattr(userbpf, "uapi", raising=False)
    short = asm._helper_table()
    assert short == asm._FALLBACK_HELPERS
    assert len(full) > len(short)
    assert all(full[name] == hid for name, hid in short.items())


def test_programs_name_the_faulting_instruction_in_kernel_syntax():
    import userbpf
    with pytest.raises(userbpf.MemoryAccessError) as e:
        userbpf.Program("r0 = *(u64 *)(r1 + 64)\nexit").run(bytearray(8))
    assert str(e.value).startswith("pc 0 (r0 = *(u64 *)(r1 +64)): invalid read of 8 bytes")


def test_docstring_examples():
    import doctest
    result = doctest.testmod(asm)
    assert result.attempted >= 7 and result.failed == 0
