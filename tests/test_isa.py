"""isa.py: encodings, constructors, the reserved-field rules and the generated header."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest
from hypothesis import given, strategies as st

from userbpf import EncodingError, isa
from userbpf.isa import *  # noqa: F401,F403  (the linux/filter.h names, as selftests use them)

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_selftest_style_program_encodes_like_the_kernel():
    prog = [BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN()]
    assert encode(prog) == bytes.fromhex("b700000000000000" "9500000000000000")


@pytest.mark.parametrize("insn, hexcode", [
    (BPF_ALU64_REG(BPF_ADD, 1, 2), "0f21000000000000"),
    (BPF_ALU32_IMM(BPF_SUB, 3, -1), "14030000ffffffff"),
    (BPF_ALU64_IMM_OFF(BPF_DIV, 1, 3, 1), "3701010003000000"),        # sdiv
    (BPF_MOVSX64_REG(1, 2, 8), "bf21080000000000"),
    (BPF_ENDIAN(BPF_TO_BE, 1, 16), "dc01000010000000"),
    (BPF_BSWAP(1, 64), "d701000040000000"),
    (BPF_LDX_MEM(BPF_DW, 0, 1, 8), "7910080000000000"),
    (BPF_LDX_MEMSX(BPF_H, 0, 1, -2), "8910feff00000000"),
    (BPF_STX_MEM(BPF_W, 10, 1, -4), "631afcff00000000"),
    (BPF_ST_MEM(BPF_B, 10, -1, 7), "720affff07000000"),
    (BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 1, -8), "db1af8fff1000000"),
    (BPF_ATOMIC_OP(BPF_W, BPF_ADD | BPF_FETCH, 10, 1, -8), "c31af8ff01000000"),
    (BPF_JMP_IMM(BPF_JGT, 1, 0x10, 3), "2501030010000000"),
    (BPF_JMP32_REG(BPF_JSLE, 1, 2, -2), "de21feff00000000"),
    (BPF_JMP_A(5), "0500050000000000"),
    (BPF_JMP32_A(70000), "0600000070110100"),
    (BPF_EMIT_CALL(1), "8500000001000000"),
    (BPF_CALL_REL(-3), "85100000fdffffff"),
    (BPF_LD_ABS(BPF_H, 12), "280000000c000000"),
    (BPF_LD_IND(BPF_W, 1, 4), "4010000004000000"),
    (BPF_MAY_GOTO_INSN(2), "e500020000000000"),
])
def test_constructors_encode_exactly(insn, hexcode):
    assert insn.encode().hex() == hexcode
    assert Insn.decode(bytes.fromhex(hexcode)) == insn


def test_ld_imm64_is_two_slots_with_the_halves_of_the_constant():
    lo, hi = BPF_LD_IMM64(BPF_REG_1, 0x1122334455667788)
    assert (lo.code, lo.dst, lo.imm & 0xffffffff, hi.code, hi.imm) == (0x18, 1, 0x55667788, 0, 0x11223344)
    assert imm64(lo, hi) == 0x1122334455667788
    assert encode([BPF_LD_MAP_FD(BPF_REG_1, 3)]).hex() == "1811000003000000" "0000000000000000"
    assert len(flatten([BPF_LD_MAP_VALUE(2, 4, 8), BPF_EXIT_INSN()])) == 3


def test_decode_rejects_bad_lengths_elf_and_big_endian():
    with pytest.raises(EncodingError, match="not a multiple of 8"):
        decode(b"\x95\0\0\0")
    with pytest.raises(EncodingError, match="ELF object"):
        decode(b"\x7fELF\x02\x01" + bytes(58))
    with pytest.raises(EncodingError, match="big-endian"):
        decode(b"\x7fELF\x02\x02" + bytes(58))
    # r1 = 1 ; exit  as a big-endian object stores them: dst in the high nibble,
    # imm in network order
    be = bytes.fromhex("b7100000" "00000001" "9500000000000000")
    with pytest.raises(EncodingError, match="big-endian"):
        decode(be)
    # the same program little-endian decodes fine
    assert decode(bytes.fromhex("b701000001000000" "9500000000000000"))[0].imm == 1


def test_flatten_refuses_non_instructions():
    with pytest.raises(EncodingError, match="not an instruction"):
        flatten([BPF_EXIT_INSN(), 5])


@pytest.mark.parametrize("insns, idx, message", [
    ([BPF_RAW_INSN(0x07, 1, 2, 0, 1)], 0, "BPF_ALU uses reserved fields"),
    ([BPF_RAW_INSN(0x0f, 1, 2, 0, 1)], 0, "BPF_ALU uses reserved fields"),
    ([BPF_RAW_INSN(0x87, 1, 0, 0, 1)], 0, "BPF_NEG uses reserved fields"),
    ([BPF_RAW_INSN(0xd4, 1, 0, 0, 8)], 0, "BPF_END uses reserved fields"),
    ([BPF_RAW_INSN(0xbf, 1, 2, 7, 0)], 0, "BPF_MOV uses reserved fields"),
    ([BPF_RAW_INSN(0xbc, 1, 2, 32, 0)], 0, "BPF_MOV uses reserved fields"),  # movsx32 is 64-bit only
    ([BPF_RAW_INSN(0xf7, 1, 0, 0, 0)], 0, "unknown opcode f7"),
    ([BPF_RAW_INSN(0xdf, 1, 0, 0, 16)], 0, "unknown opcode df"),
    ([BPF_RAW_INSN(0x79, 1, 2, 0, 1)], 0, "BPF_LDX uses reserved fields"),
    ([BPF_RAW_INSN(0x62, 1, 2, 0, 1)], 0, "BPF_ST uses reserved fields"),
    ([BPF_RAW_INSN(0x63, 1, 2, 0, 1)], 0, "BPF_STX uses reserved fields"),
    ([BPF_RAW_INSN(0xdb, 1, 2, 0, 0x02)], 0, "BPF_ATOMIC uses invalid atomic opcode 02"),
    ([BPF_RAW_INSN(0xd3, 1, 2, 0, 0x00)], 0, "invalid atomic operand size"),
    ([BPF_RAW_INSN(0x05, 0, 0, 1, 1)], 0, "BPF_JA uses reserved fields"),
    ([BPF_RAW_INSN(0x85, 0, 3, 0, 1)], 0, "BPF_CALL uses reserved fields"),
    ([BPF_RAW_INSN(0x95, 0, 0, 0, 1)], 0, "BPF_EXIT uses reserved fields"),
    ([BPF_RAW_INSN(0x15, 1, 2, 0, 0)], 0, "BPF_JMP/JMP32 uses reserved fields"),
    ([BPF_RAW_INSN(0x18, 1, 0, 0, 0)], 0, "invalid BPF_LD_IMM insn"),
    ([BPF_RAW_INSN(0x18, 1, 0, 0, 0), BPF_RAW_INSN(0x07, 0, 0, 0, 0)], 0, "invalid bpf_ld_imm64 insn"),
    ([BPF_RAW_INSN(0x18, 1, 7, 0, 0), BPF_RAW_INSN(0, 0, 0, 0, 0)], 0, "unrecognized bpf_ld_imm64 insn"),
    ([BPF_RAW_INSN(0x18, 1, 1, 0, 3), BPF_RAW_INSN(0, 0, 0, 0, 1)], 0, "unrecognized bpf_ld_imm64 insn"),
    ([BPF_RAW_INSN(0x38, 0, 0, 0, 0)], 0, "BPF_LD_[ABS|IND] uses reserved fields"),
    ([BPF_RAW_INSN(0x8e, 0, 0, 0, 0)], 0, "unknown opcode 8e"),
    ([BPF_RAW_INSN(0x07, 11, 0, 0, 0)], 0, "invalid register (dst=11 src=0)"),
])
def test_reserved_field_rules_use_the_kernel_wording(insns, idx, message):
    assert check_fields(insns, idx) == message


@pytest.mark.parametrize("insn", [
    BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_ALU64_REG_OFF(BPF_MOD, 1, 2, 1), BPF_MOVSX32_REG(1, 2, 16),
    BPF_ZEXT_REG(1) if False else BPF_MOV32_REG(1, 2), BPF_ENDIAN(BPF_TO_LE, 1, 32), BPF_BSWAP(1, 16),
    BPF_ATOMIC_OP(BPF_W, BPF_XCHG, 10, 1, -4), BPF_ATOMIC_OP(BPF_B, BPF_LOAD_ACQ, 1, 2, 0),
    BPF_JMP32_A(-1), BPF_MAY_GOTO_INSN(0), BPF_CALLX(2), BPF_EXIT_INSN(),
])
def test_valid_instructions_pass(insn):
    assert check_fields([insn], 0) is None


def test_vm_op_names_cover_every_valid_opcode_exactly_once():
    assert len(set(VM_OP_NAMES)) == len(VM_OP_NAMES)
    assert vm_op_name(BPF_ALU32_REG_OFF(BPF_MOD, 1, 2, 1)) == "SMOD32_X"
    assert vm_op_name(BPF_ATOMIC_OP(BPF_DW, BPF_OR | BPF_FETCH, 1, 2, 0)) == "ATOMIC_FETCH_OR64"
    assert vm_op_name(BPF_ENDIAN(BPF_TO_BE, 1, 64)) == "BE64"
    assert vm_op_name(BPF_BSWAP(1, 16)) == "BSWAP16"
    assert vm_op_name(BPF_MOVSX32_REG(1, 2, 8)) == "MOVSX8_32"
    assert vm_op_name(BPF_JMP32_A(3)) == "JA32"
    assert vm_op_name(BPF_LD_IND(BPF_B, 1, 0)) == "LD_IND_B"


@st.composite
def slots(draw):
    return Insn(draw(st.integers(0, 255)), draw(st.integers(0, 15)), draw(st.integers(0, 15)),
                draw(st.integers(-2**15, 2**15 - 1)), draw(st.integers(-2**31, 2**31 - 1)))


@given(st.lists(slots(), max_size=20))
def test_encode_decode_round_trip(insns):
    data = encode(insns)
    assert len(data) == 8 * len(insns)
    assert [Insn.decode(data, 8 * i) for i in range(len(insns))] == insns


@given(slots())
def test_every_valid_slot_has_an_operation(insn):
    prog = [insn, Insn(0)]          # room for an lddw second half
    if check_fields(prog, 0) is None and not (insn.cls == isa.Class.JMP and insn.code & 0xf0 == 0x80
                                              and insn.src == 2):
        assert vm_op_name(insn) in VM_OP


def test_generated_mirrors_are_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_insn_h", REPO / "tools" / "gen_insn_h.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path, text in gen.render().items():
        assert path.read_text() == text, f"{path} is stale: run python tools/gen_insn_h.py"
