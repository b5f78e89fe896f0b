"""The interpreter's ALU and ALU64 instructions: every op, 32/64, K/X, the kernel's edge cases.

Each case is checked against a hand-computed value, on the Cython VM and on
the pure-Python reference (so the reference is itself pinned to the kernel's
semantics).
"""
from __future__ import annotations

import pytest

from userbpf import Program, reference
from userbpf.isa import *  # noqa: F401,F403  (linux/filter.h names)

M64 = (1 << 64) - 1
INT64_MIN = 1 << 63
INT32_MIN = 1 << 31


def both(prog, mem=None):
    """r0 of the VM and of the reference (they must agree)."""
    vm = Program(prog).run(mem)
    ref = reference.run(prog, mem=mem).r0
    assert vm == ref, f"VM {vm:#x} != reference {ref:#x}"
    return vm


def binop(cls_reg, cls_imm, op, a, b, *, x: bool, off: int = 0):
    """r0 = a OP b with b as a register (x=True) or as the immediate."""
    prog = [BPF_LD_IMM64(BPF_REG_0, a)]
    if x:
        prog += [BPF_LD_IMM64(BPF_REG_1, b), cls_reg(op, BPF_REG_0, BPF_REG_1, off)]
    else:
        prog += [cls_imm(op, BPF_REG_0, b, off)]
    return both(prog + [BPF_EXIT_INSN()])


def alu64(op, a, b, *, x, off=0):
    return binop(BPF_ALU64_REG_OFF, BPF_ALU64_IMM_OFF, op, a, b, x=x, off=off)


def alu32(op, a, b, *, x, off=0):
    return binop(BPF_ALU32_REG_OFF, BPF_ALU32_IMM_OFF, op, a, b, x=x, off=off)


A = 0x80000000fffffff9      # high bit set; low half is -7 as s32

# (name, op, off, imm, expected 64-bit, expected 32-bit) for dst = A.
# With X the source register holds the immediate sign-extended to 64 bits,
# which is exactly what the K form computes with.
CASES = [
    ("add", BPF_ADD, 0, 3, 0x80000000fffffffc, 0xfffffffc),
    ("sub", BPF_SUB, 0, 3, 0x80000000fffffff6, 0xfffffff6),
    ("mul", BPF_MUL, 0, 3, 0x80000002ffffffeb, 0xffffffeb),
    ("div", BPF_DIV, 0, 3, 0x2aaaaaaafffffffd, 0x55555553),
    ("sdiv", BPF_DIV, 1, 3, 0xd5555555aaaaaaa9, 0xfffffffe),
    ("mod", BPF_MOD, 0, 3, 0x2, 0x0),
    ("smod", BPF_MOD, 1, 3, 0xfffffffffffffffe, 0xffffffff),
    ("or", BPF_OR, 0, 3, 0x80000000fffffffb, 0xfffffffb),
    ("and", BPF_AND, 0, 3, 0x1, 0x1),
    ("xor", BPF_XOR, 0, 3, 0x80000000fffffffa, 0xfffffffa),
    ("lsh", BPF_LSH, 0, 3, 0x7ffffffc8, 0xffffffc8),
    ("rsh", BPF_RSH, 0, 3, 0x100000001fffffff, 0x1fffffff),
    ("arsh", BPF_ARSH, 0, 3, 0xf00000001fffffff, 0xffffffff),
    ("mov", BPF_MOV, 0, 3, 0x3, 0x3),
    ("add-neg", BPF_ADD, 0, -3, 0x80000000fffffff6, 0xfffffff6),
    ("sub-neg", BPF_SUB, 0, -3, 0x80000000fffffffc, 0xfffffffc),
    ("mul-neg", BPF_MUL, 0, -3, 0x7ffffffd00000015, 0x15),
    ("div-neg", BPF_DIV, 0, -3, 0x0, 0x0),
    ("sdiv-neg", BPF_DIV, 1, -3, 0x2aaaaaaa55555557, 0x2),
    ("mod-neg", BPF_MOD, 0, -3, 0x80000000fffffff9, 0xfffffff9),
    ("smod-neg", BPF_MOD, 1, -3, 0xfffffffffffffffe, 0xffffffff),
    ("or-neg", BPF_OR, 0, -3, 0xfffffffffffffffd, 0xfffffffd),
    ("and-neg", BPF_AND, 0, -3, 0x80000000fffffff9, 0xfffffff9),
    ("xor-neg", BPF_XOR, 0, -3, 0x7fffffff00000004, 0x4),
    ("lsh-masked", BPF_LSH, 0, -3, 0x2000000000000000, 0x20000000),   # by 61 / 29
    ("rsh-masked", BPF_RSH, 0, -3, 0x4, 0x7),
    ("arsh-masked", BPF_ARSH, 0, -3, 0xfffffffffffffffc, 0xffffffff),
    ("mov-neg", BPF_MOV, 0, -3, 0xfffffffffffffffd, 0xfffffffd),
]


@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
@pytest.mark.parametrize("name, op, off, imm, exp64, exp32", CASES, ids=[c[0] for c in CASES])
def test_alu64_every_op(name, op, off, imm, exp64, exp32, x):
    assert alu64(op, A, imm & M64, x=x, off=off) == exp64


@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
@pytest.mark.parametrize("name, op, off, imm, exp64, exp32", CASES, ids=[c[0] for c in CASES])
def test_alu32_every_op_zero_extends(name, op, off, imm, exp64, exp32, x):
    assert alu32(op, A, imm & M64, x=x, off=off) == exp32


def test_alu32_x_ignores_the_upper_half_of_the_source():
    # src = 0xffffffff_00000002: only the 2 counts
    assert alu32(BPF_ADD, 5, 0xffffffff00000002, x=True) == 7
    assert alu32(BPF_DIV, 9, 0xffffffff00000002, x=True) == 4
    assert alu32(BPF_LSH, 1, 0xffffffff00000022, x=True) == 4     # 0x22 & 31 = 2


def test_neg():
    assert both([BPF_MOV64_IMM(0, 5), BPF_ALU64_IMM(BPF_NEG, 0, 0), BPF_EXIT_INSN()]) \
        == (-5) & M64
    assert both([BPF_LD_IMM64(0, 0x1234567800000005), BPF_ALU32_IMM(BPF_NEG, 0, 0),
                 BPF_EXIT_INSN()]) == 0xfffffffb
    assert both([BPF_LD_IMM64(0, INT64_MIN), BPF_ALU64_IMM(BPF_NEG, 0, 0),
                 BPF_EXIT_INSN()]) == INT64_MIN
    assert both([BPF_MOV64_IMM(0, 0), BPF_ALU64_IMM(BPF_NEG, 0, 0), BPF_EXIT_INSN()]) == 0


# --- division and modulo edge cases -------------------------------------------

@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
@pytest.mark.parametrize("off", [0, 1], ids=["unsigned", "signed"])
def test_division_by_zero_gives_zero(x, off):
    assert alu64(BPF_DIV, 0xdeadbeefcafe, 0, x=x, off=off) == 0
    assert alu32(BPF_DIV, 0xdeadbeefcafe, 0, x=x, off=off) == 0


@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
@pytest.mark.parametrize("off", [0, 1], ids=["unsigned", "signed"])
def test_modulo_by_zero_keeps_dst(x, off):
    assert alu64(BPF_MOD, 0xfedcba9876543210, 0, x=x, off=off) == 0xfedcba9876543210
    # the 32-bit form keeps the low half, zero-extended
    assert alu32(BPF_MOD, 0xfedcba9876543210, 0, x=x, off=off) == 0x76543210


def test_div32_x_by_a_register_whose_low_half_is_zero():
    assert alu32(BPF_DIV, 100, 0x500000000, x=True) == 0
    assert alu32(BPF_MOD, 0x700000064, 0x500000000, x=True) == 100
    assert alu32(BPF_DIV, 100, 0x500000000, x=True, off=1) == 0
    assert alu32(BPF_MOD, 0x700000064, 0x500000000, x=True, off=1) == 100


@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
def test_int_min_sdiv_smod_minus_one(x):
    minus1 = M64
    assert alu64(BPF_DIV, INT64_MIN, minus1, x=x, off=1) == INT64_MIN
    assert alu64(BPF_MOD, INT64_MIN, minus1, x=x, off=1) == 0
    assert alu32(BPF_DIV, 0xffffffff00000000 | INT32_MIN, minus1, x=x, off=1) == INT32_MIN
    assert alu32(BPF_MOD, 0xffffffff00000000 | INT32_MIN, minus1, x=x, off=1) == 0
    # and an ordinary negative divisor of -1
    assert alu64(BPF_DIV, 7, minus1, x=x, off=1) == (-7) & M64
    assert alu32(BPF_DIV, 7, minus1, x=x, off=1) == 0xfffffff9


def test_signed_division_truncates_toward_zero():
    assert alu64(BPF_DIV, (-7) & M64, 2, x=False, off=1) == (-3) & M64
    assert alu64(BPF_MOD, (-7) & M64, 2, x=False, off=1) == (-1) & M64
    assert alu64(BPF_MOD, 7, (-2) & M64, x=True, off=1) == 1
    assert alu32(BPF_DIV, 0xfffffff9, 2, x=False, off=1) == 0xfffffffd


def test_unsigned_div64_k_sign_extends_the_immediate():
    # imm -1 is 0xffff_ffff_ffff_ffff as a 64-bit divisor
    assert alu64(BPF_DIV, M64, M64, x=False) == 1
    assert alu64(BPF_DIV, 0xfffffffe00000000, M64, x=False) == 0
    # ...but 0xffff_ffff as a 32-bit divisor
    assert alu32(BPF_DIV, 0xffffffff, M64, x=False) == 1


# --- shifts --------------------------------------------------------------------

@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
def test_shift_counts_are_masked(x):
    assert alu64(BPF_LSH, 1, 65, x=x) == 2
    assert alu64(BPF_RSH, 0x8000000000000000, 127, x=x) == 1
    assert alu64(BPF_ARSH, 0x8000000000000000, 64 + 63, x=x) == M64
    assert alu64(BPF_LSH, 3, 64, x=x) == 3
    assert alu32(BPF_LSH, 1, 33, x=x) == 2
    assert alu32(BPF_RSH, 0x80000000, 63, x=x) == 1
    assert alu32(BPF_ARSH, 0x80000000, 31 + 32, x=x) == 0xffffffff
    assert alu32(BPF_LSH, 0xff00000003, 32, x=x) == 3


def test_arsh32_uses_bit_31_as_the_sign():
    assert alu32(BPF_ARSH, 0x0000000080000000, 4, x=False) == 0xf8000000
    assert alu32(BPF_ARSH, 0x8000000040000000, 4, x=False) == 0x04000000
    assert alu64(BPF_ARSH, 0x0000000080000000, 4, x=False) == 0x08000000


# --- moves, zero extension, sign extension ----------------------------------------

def test_mov32_zero_extends_and_mov64_sign_extends_the_immediate():
    assert both([BPF_MOV32_IMM(0, -1), BPF_EXIT_INSN()]) == 0xffffffff
    assert both([BPF_MOV64_IMM(0, -1), BPF_EXIT_INSN()]) == M64
    assert both([BPF_LD_IMM64(1, 0xaaaaaaaabbbbbbbb), BPF_MOV32_REG(0, 1), BPF_EXIT_INSN()]) \
        == 0xbbbbbbbb
    assert both([BPF_LD_IMM64(0, 0xaaaaaaaa00000001), BPF_ALU32_IMM(BPF_ADD, 0, 0),
                 BPF_EXIT_INSN()]) == 1


@pytest.mark.parametrize("width, src, exp64, exp32", [
    (8, 0x1234567890abcd80, 0xffffffffffffff80, 0xffffff80),
    (8, 0xffffffffffffff7f, 0x7f, 0x7f),
    (16, 0x123456789abc8001, 0xffffffffffff8001, 0xffff8001),
    (16, 0xffffffffffff7fff, 0x7fff, 0x7fff),
    (32, 0x1234567880000000, 0xffffffff80000000, None),
    (32, 0xffffffff7fffffff, 0x7fffffff, None),
])
def test_movsx(width, src, exp64, exp32):
    assert both([BPF_LD_IMM64(1, src), BPF_MOVSX64_REG(0, 1, width), BPF_EXIT_INSN()]) == exp64
    if exp32 is not None:
        assert both([BPF_LD_IMM64(0, M64), BPF_LD_IMM64(1, src), BPF_MOVSX32_REG(0, 1, width),
                     BPF_EXIT_INSN()]) == exp32


# --- byte order ------------------------------------------------------------------

V = 0x0102030405060708


@pytest.mark.parametrize("insn, expected", [
    (BPF_ENDIAN(BPF_TO_LE, 0, 16), 0x0708),
    (BPF_ENDIAN(BPF_TO_LE, 0, 32), 0x05060708),
    (BPF_ENDIAN(BPF_TO_LE, 0, 64), V),
    (BPF_ENDIAN(BPF_TO_BE, 0, 16), 0x0807),
    (BPF_ENDIAN(BPF_TO_BE, 0, 32), 0x08070605),
    (BPF_ENDIAN(BPF_TO_BE, 0, 64), 0x0807060504030201),
    (BPF_BSWAP(0, 16), 0x0807),
    (BPF_BSWAP(0, 32), 0x08070605),
    (BPF_BSWAP(0, 64), 0x0807060504030201),
], ids=["le16", "le32", "le64", "be16", "be32", "be64", "bswap16", "bswap32", "bswap64"])
def test_byte_order(insn, expected):
    assert both([BPF_LD_IMM64(0, V), insn, BPF_EXIT_INSN()]) == expected


def test_lddw_loads_all_64_bits():
    assert both([BPF_LD_IMM64(0, 0xfedcba9876543210), BPF_EXIT_INSN()]) == 0xfedcba9876543210
    assert both([BPF_LD_IMM64(0, 0x80000000), BPF_EXIT_INSN()]) == 0x80000000


def test_alu_on_every_register():
    # r0..r9 each get a distinct value, are summed into r0
    prog = [BPF_MOV64_IMM(r, r * 11 + 1) for r in range(10)]
    prog += [BPF_ALU64_REG(BPF_ADD, 0, r) for r in range(1, 10)]
    assert both(prog + [BPF_EXIT_INSN()]) == sum(r * 11 + 1 for r in range(10))
