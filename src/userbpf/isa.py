"""The eBPF instruction set: opcode tables, encoding, and ``linux/filter.h`` constructors.

This module is the single source of truth for instruction encodings. The C
header ``include/userbpf/insn.h`` is generated from it by
``tools/gen_insn_h.py`` (a test checks that the two agree), and the
assembler, disassembler, interpreter pre-decoder and verifier all read the
tables here.

An instruction is one 8-byte slot, exactly as in the kernel's
``struct bpf_insn``; ``lddw`` occupies two slots. Constructors keep the
kernel's names so selftest programs port line by line::

    >>> from userbpf.isa import *
    >>> prog = [BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN()]
    >>> encode(prog).hex()
    'b7000000000000009500000000000000'
    >>> len(flatten([BPF_LD_IMM64(BPF_REG_1, 1 << 40), BPF_EXIT_INSN()]))
    3
"""
from __future__ import annotations

import struct
from enum import IntEnum
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Union

from .errors import EncodingError

__all__ = [
    "Class", "Size", "Mode", "Source", "AluOp", "JmpOp", "AtomicOp", "Pseudo",
    "PseudoCall", "Insn", "decode", "encode", "flatten", "check_fields",
    "is_wide", "INSN_SIZE", "MAX_BPF_REG", "STACK_SIZE", "MAX_CALL_FRAMES",
]

INSN_SIZE = 8
MAX_BPF_REG = 11          # r0..r10
STACK_SIZE = 512          # MAX_BPF_STACK, per frame
MAX_CALL_FRAMES = 8       # MAX_CALL_FRAMES in the kernel's bpf_verifier.h
MAX_TAIL_CALL_CNT = 33


# --- opcode fields (linux/bpf_common.h, linux/bpf.h) -------------------------

class Class(IntEnum):
    """Instruction class: the low three bits of the opcode."""
    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Size(IntEnum):
    """Access width of load/store classes (opcode bits 3-4)."""
    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18


SIZE_BYTES = {Size.B: 1, Size.H: 2, Size.W: 4, Size.DW: 8}
BYTES_SIZE = {v: k for k, v in SIZE_BYTES.items()}


class Mode(IntEnum):
    """Addressing mode of load/store classes (opcode bits 5-7)."""
    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60
    MEMSX = 0x80
    ATOMIC = 0xc0


class Source(IntEnum):
    """Operand source of ALU/JMP classes (opcode bit 3)."""
    K = 0x00
    X = 0x08


class AluOp(IntEnum):
    """ALU/ALU64 operation (opcode bits 4-7)."""
    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xa0
    MOV = 0xb0
    ARSH = 0xc0
    END = 0xd0


class JmpOp(IntEnum):
    """JMP/JMP32 operation (opcode bits 4-7)."""
    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xa0
    JLE = 0xb0
    JSLT = 0xc0
    JSLE = 0xd0
    JCOND = 0xe0      # may_goto (src_reg = BPF_MAY_GOTO)


class AtomicOp(IntEnum):
    """The ``imm`` of a BPF_ATOMIC instruction."""
    ADD = 0x00
    OR = 0x40
    AND = 0x50
    XOR = 0xa0
    FETCH_ADD = 0x01
    FETCH_OR = 0x41
    FETCH_AND = 0x51
    FETCH_XOR = 0xa1
    XCHG = 0xe1
    CMPXCHG = 0xf1
    LOAD_ACQ = 0x100
    STORE_REL = 0x110


class Pseudo(IntEnum):
    """``src_reg`` values of ``lddw`` (BPF_LD | BPF_IMM | BPF_DW)."""
    NONE = 0
    MAP_FD = 1
    MAP_VALUE = 2
    BTF_ID = 3
    FUNC = 4
    MAP_IDX = 5
    MAP_IDX_VALUE = 6


class PseudoCall(IntEnum):
    """``src_reg`` values of ``call``."""
    HELPER = 0
    CALL = 1          # bpf-to-bpf call, imm is the relative target
    KFUNC_CALL = 2


# Byte-order ops put their direction in the source bit.
BPF_TO_LE = BPF_FROM_LE = 0x00
BPF_TO_BE = BPF_FROM_BE = 0x08
BPF_MAY_GOTO = 0
BPF_ADDR_SPACE_CAST = 1


# --- kernel spellings of every constant --------------------------------------

BPF_LD, BPF_LDX, BPF_ST, BPF_STX = Class.LD, Class.LDX, Class.ST, Class.STX
BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = Class.ALU, Class.JMP, Class.JMP32, Class.ALU64
BPF_W, BPF_H, BPF_B, BPF_DW = Size.W, Size.H, Size.B, Size.DW
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM = Mode.IMM, Mode.ABS, Mode.IND, Mode.MEM
BPF_MEMSX, BPF_ATOMIC = Mode.MEMSX, Mode.ATOMIC
BPF_K, BPF_X = Source.K, Source.X
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV = AluOp.ADD, AluOp.SUB, AluOp.MUL, AluOp.DIV
BPF_OR, BPF_AND, BPF_LSH, BPF_RSH = AluOp.OR, AluOp.AND, AluOp.LSH, AluOp.RSH
BPF_NEG, BPF_MOD, BPF_XOR, BPF_MOV = AluOp.NEG, AluOp.MOD, AluOp.XOR, AluOp.MOV
BPF_ARSH, BPF_END = AluOp.ARSH, AluOp.END
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE = JmpOp.JA, JmpOp.JEQ, JmpOp.JGT, JmpOp.JGE
BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE = JmpOp.JSET, JmpOp.JNE, JmpOp.JSGT, JmpOp.JSGE
BPF_CALL, BPF_EXIT, BPF_JLT, BPF_JLE = JmpOp.CALL, JmpOp.EXIT, JmpOp.JLT, JmpOp.JLE
BPF_JSLT, BPF_JSLE, BPF_JCOND = JmpOp.JSLT, JmpOp.JSLE, JmpOp.JCOND
BPF_FETCH = 0x01
BPF_XCHG, BPF_CMPXCHG = AtomicOp.XCHG, AtomicOp.CMPXCHG
BPF_LOAD_ACQ, BPF_STORE_REL = AtomicOp.LOAD_ACQ, AtomicOp.STORE_REL
BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE = Pseudo.MAP_FD, Pseudo.MAP_VALUE
BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC = Pseudo.BTF_ID, Pseudo.FUNC
BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE = Pseudo.MAP_IDX, Pseudo.MAP_IDX_VALUE
BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL = PseudoCall.CALL, PseudoCall.KFUNC_CALL

(BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_4, BPF_REG_5, BPF_REG_6,
 BPF_REG_7, BPF_REG_8, BPF_REG_9, BPF_REG_10) = range(11)
BPF_REG_ARG1, BPF_REG_ARG2, BPF_REG_ARG3, BPF_REG_ARG4, BPF_REG_ARG5 = range(1, 6)
BPF_REG_CTX, BPF_REG_FP = BPF_REG_6, BPF_REG_10


def BPF_CLASS(code: int) -> int:
    return code & 0x07


def BPF_SIZE(code: int) -> int:
    return code & 0x18


def BPF_MODE(code: int) -> int:
    return code & 0xe0


def BPF_OP(code: int) -> int:
    return code & 0xf0


def BPF_SRC(code: int) -> int:
    return code & 0x08


# --- the instruction ---------------------------------------------------------

_INSN = struct.Struct("<BBhi")


class Insn(NamedTuple):
    """One 8-byte instruction slot (``struct bpf_insn``).

    ``imm`` is the signed 32-bit field; for the two slots of ``lddw`` each
    holds one half of the 64-bit constant (see :func:`imm64`).

    >>> Insn(0xb7, 0, 0, 0, 7).encode().hex()
    'b700000007000000'
    """
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    def encode(self) -> bytes:
        try:
            return _INSN.pack(self.code, (self.src << 4) | self.dst, self.off, self.imm)
        except struct.error as e:
            raise EncodingError(f"cannot encode {self!r}: {e}") from None

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> "Insn":
        code, regs, off, imm = _INSN.unpack_from(data, offset)
        return cls(code, regs & 0x0f, regs >> 4, off, imm)


InsnLike = Union[Insn, Sequence[Insn]]
LDDW = Class.LD | Mode.IMM | Size.DW   # 0x18


def is_wide(insn: Insn) -> bool:
    """True for the first slot of ``lddw`` (the only 16-byte instruction)."""
    return insn.code == LDDW


def imm64(first: Insn, second: Insn) -> int:
    """The unsigned 64-bit constant of an ``lddw`` pair."""
    return (first.imm & 0xffffffff) | ((second.imm & 0xffffffff) << 32)


def flatten(insns: Iterable[InsnLike]) -> list:
    """Flatten constructor output (``BPF_LD_IMM64`` gives a pair) into slots."""
    out: list = []
    for item in insns:
        if isinstance(item, Insn):
            out.append(item)
        elif isinstance(item, (tuple, list)) and item and not isinstance(item[0], int):
            out.extend(flatten(item))
        else:
            raise EncodingError(f"not an instruction: {item!r}")
    return out


def encode(insns: Iterable[InsnLike]) -> bytes:
    """Encode instructions (slots or constructor output) to little-endian bytes."""
    return b"".join(i.encode() for i in flatten(insns))


ELF_MAGIC = b"\x7fELF"


def decode(data: Union[bytes, bytearray, memoryview]) -> list:
    """Decode little-endian bytecode into a list of :class:`Insn` slots.

    Raises :class:`EncodingError` for a length that is not a multiple of 8,
    an ELF object (use the loader), or a program that looks big-endian.

    >>> decode(bytes.fromhex('b700000007000000 9500000000000000'))
    [Insn(code=183, dst=0, src=0, off=0, imm=7), Insn(code=149, dst=0, src=0, off=0, imm=0)]
    """
    data = bytes(data)
    if data[:4] == ELF_MAGIC:
        order = {1: "little", 2: "big"}.get(data[5] if len(data) > 5 else 0, "unknown")
        hint = " (and it is big-endian, which userbpf does not run)" if order == "big" else ""
        raise EncodingError(f"this is an ELF object{hint}, not raw bytecode: "
                            "load it with userbpf.load_object()")
    if len(data) % INSN_SIZE:
        raise EncodingError(f"bytecode length {len(data)} is not a multiple of "
                            f"{INSN_SIZE} bytes")
    insns = [Insn.decode(data, o) for o in range(0, len(data), INSN_SIZE)]
    _refuse_big_endian(insns, data)
    return insns


_INSN_BE = struct.Struct(">BBhi")


def _refuse_big_endian(insns: list, data: bytes) -> None:
    """A big-endian object swaps the register nibbles and the byte order of
    off and imm. When the program breaks the encoding rules read
    little-endian but is entirely valid read big-endian, say so rather than
    report a confusing field error."""
    if all(check_fields(insns, i) is None for i in slots(insns)):
        return
    be = []
    for o in range(0, len(data), INSN_SIZE):
        code, regs, off, imm = _INSN_BE.unpack_from(data, o)
        be.append(Insn(code, regs >> 4, regs & 0x0f, off, imm))
    if all(check_fields(be, i) is None for i in slots(be)):
        raise EncodingError(
            "this looks like a big-endian program (it is valid only with the register "
            "nibbles and the off/imm bytes swapped); userbpf runs little-endian eBPF only")


# --- reserved-field rules ----------------------------------------------------

ALU_OPS = frozenset(AluOp)
JMP_OPS = frozenset(JmpOp)
ATOMIC_IMMS = frozenset(AtomicOp)


def check_fields(insns: Sequence[Insn], idx: int) -> Optional[str]:
    """The kernel's per-instruction encoding rules (``resolve_pseudo_ldimm64``,
    ``check_alu_op``, ``do_check``): return the kernel's message for the
    instruction at ``idx`` if it breaks one, else None. Register-number and
    jump-range checks are separate (they need the whole program)."""
    x = insns[idx]
    cls, code = x.cls, x.code
    if x.dst > 10 or x.src > 10:
        return f"invalid register (dst={x.dst} src={x.src})"
    if cls in (Class.ALU, Class.ALU64):
        op, src = BPF_OP(code), BPF_SRC(code)
        # opcodes missing from the kernel's instruction table (bpf_opcode_in_insntable)
        if op not in ALU_OPS or (op == AluOp.END and cls == Class.ALU64 and src):
            return f"unknown opcode {code:02x}"
        if op == AluOp.END:
            if x.src or x.off or x.imm not in (16, 32, 64):
                return "BPF_END uses reserved fields"
            return None
        if op == AluOp.NEG:
            if src or x.src or x.off or x.imm:
                return "BPF_NEG uses reserved fields"
            return None
        if op == AluOp.MOV:
            if src == Source.X:
                if cls == Class.ALU64 and x.off == BPF_ADDR_SPACE_CAST:
                    if x.imm not in (1, 1 << 16):
                        return "invalid cast from as(%d) to as(%d)" % (x.imm >> 16, x.imm & 0xffff)
                    return None
                if x.imm:
                    return "BPF_MOV uses reserved fields"
                allowed = (0, 8, 16, 32) if cls == Class.ALU64 else (0, 8, 16)
                if x.off not in allowed:
                    return "BPF_MOV uses reserved fields"
            elif x.src or x.off:
                return "BPF_MOV uses reserved fields"
            return None
        if src == Source.X:
            if x.imm:
                return "BPF_ALU uses reserved fields"
        elif x.src:
            return "BPF_ALU uses reserved fields"
        if x.off and not (op in (AluOp.DIV, AluOp.MOD) and x.off == 1):
            return "BPF_ALU uses reserved fields"
        return None
    if cls in (Class.JMP, Class.JMP32):
        op, src = BPF_OP(code), BPF_SRC(code)
        if op not in JMP_OPS:
            return f"unknown opcode {code:02x}"
        if op == JmpOp.JA:
            if src or x.src or x.dst or (cls == Class.JMP and x.imm) or (cls == Class.JMP32 and x.off):
                return "BPF_JA uses reserved fields"
            return None
        if op == JmpOp.CALL:
            if cls == Class.JMP32:
                return f"unknown opcode {code:02x}"
            if src == Source.X:     # callx: an LLVM/ubpf extension the kernel refuses
                if x.src or x.off or x.imm:
                    return "BPF_CALL uses reserved fields"
                return None
            if x.off or x.dst or x.src > PseudoCall.KFUNC_CALL:
                return "BPF_CALL uses reserved fields"
            return None
        if op == JmpOp.EXIT:
            if cls == Class.JMP32 or src or x.imm or x.src or x.dst or x.off:
                return "BPF_EXIT uses reserved fields"
            return None
        if op == JmpOp.JCOND:
            if cls == Class.JMP32 or src or x.src != BPF_MAY_GOTO or x.dst or x.imm:
                return "invalid may_goto"
            return None
        if src == Source.X:
            if x.imm:
                return "BPF_JMP/JMP32 uses reserved fields"
        elif x.src:
            return "BPF_JMP/JMP32 uses reserved fields"
        return None
    if cls == Class.LDX:
        mode = BPF_MODE(code)
        if mode not in (Mode.MEM, Mode.MEMSX) or x.imm or (mode == Mode.MEMSX and BPF_SIZE(code) == Size.DW):
            return "BPF_LDX uses reserved fields"
        return None
    if cls == Class.ST:
        if BPF_MODE(code) != Mode.MEM or x.src:
            return "BPF_ST uses reserved fields"
        return None
    if cls == Class.STX:
        mode = BPF_MODE(code)
        if mode == Mode.ATOMIC:
            if x.imm not in ATOMIC_IMMS:
                return f"BPF_ATOMIC uses invalid atomic opcode {x.imm & 0xffffffff:02x}"
            if x.imm in (AtomicOp.LOAD_ACQ, AtomicOp.STORE_REL):
                return None
            if BPF_SIZE(code) not in (Size.W, Size.DW):
                return "invalid atomic operand size"
            return None
        if mode != Mode.MEM or x.imm:
            return "BPF_STX uses reserved fields"
        return None
    if cls == Class.LD:
        mode = BPF_MODE(code)
        if mode == Mode.IMM:
            if BPF_SIZE(code) != Size.DW:
                return "invalid BPF_LD_IMM insn"
            if idx + 1 >= len(insns):
                return "invalid BPF_LD_IMM insn"
            nxt = insns[idx + 1]
            if nxt.code or nxt.dst or nxt.src or nxt.off or x.off:
                return "invalid bpf_ld_imm64 insn"
            if x.src > Pseudo.MAP_IDX_VALUE:
                return "unrecognized bpf_ld_imm64 insn"
            if x.src in (Pseudo.MAP_FD, Pseudo.MAP_IDX, Pseudo.BTF_ID,
                         Pseudo.FUNC) and nxt.imm:
                return "unrecognized bpf_ld_imm64 insn"
            return None
        if mode in (Mode.ABS, Mode.IND):
            if BPF_SIZE(code) == Size.DW or x.off or x.dst or (mode == Mode.ABS and x.src):
                return "BPF_LD_[ABS|IND] uses reserved fields"
            return None
        return f"unknown opcode {code:02x}"
    return f"unknown opcode {code:02x}"  # pragma: no cover (all 8 classes handled)


def slots(insns: Sequence[Insn]) -> Iterator[int]:
    """Indices of the instructions that start a slot (skip lddw's 2nd half)."""
    i, n = 0, len(insns)
    while i < n:
        yield i
        i += 2 if is_wide(insns[i]) else 1


# --- linux/filter.h constructors ---------------------------------------------

def _s32(v: int) -> int:
    """Wrap an int into the signed 32-bit ``imm`` field, as C assignment does."""
    v &= 0xffffffff
    return v - (1 << 32) if v & 0x80000000 else v


def BPF_RAW_INSN(CODE, DST, SRC, OFF, IMM) -> Insn:
    return Insn(int(CODE), int(DST), int(SRC), int(OFF), _s32(IMM))


def BPF_ALU64_REG(OP, DST, SRC) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_OP(OP) | BPF_X, DST, SRC, 0, 0)


def BPF_ALU32_REG(OP, DST, SRC) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_OP(OP) | BPF_X, DST, SRC, 0, 0)


def BPF_ALU64_IMM(OP, DST, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_OP(OP) | BPF_K, DST, 0, 0, IMM)


def BPF_ALU32_IMM(OP, DST, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_OP(OP) | BPF_K, DST, 0, 0, IMM)


def BPF_ALU64_REG_OFF(OP, DST, SRC, OFF) -> Insn:
    """Signed div/mod: ``BPF_ALU64_REG_OFF(BPF_DIV, d, s, 1)`` is sdiv."""
    return BPF_RAW_INSN(BPF_ALU64 | BPF_OP(OP) | BPF_X, DST, SRC, OFF, 0)


def BPF_ALU32_REG_OFF(OP, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_OP(OP) | BPF_X, DST, SRC, OFF, 0)


def BPF_ALU64_IMM_OFF(OP, DST, IMM, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_OP(OP) | BPF_K, DST, 0, OFF, IMM)


def BPF_ALU32_IMM_OFF(OP, DST, IMM, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_OP(OP) | BPF_K, DST, 0, OFF, IMM)


def BPF_ENDIAN(TYPE, DST, LEN) -> Insn:
    """``BPF_ENDIAN(BPF_TO_BE, r, 16)``: convert to/from big or little endian."""
    return BPF_RAW_INSN(BPF_ALU | BPF_END | TYPE, DST, 0, 0, LEN)


def BPF_BSWAP(DST, LEN) -> Insn:
    """Unconditional byte swap (ALU64 END, ISA v4)."""
    return BPF_RAW_INSN(BPF_ALU64 | BPF_END | BPF_TO_LE, DST, 0, 0, LEN)


def BPF_MOV64_REG(DST, SRC) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_MOV | BPF_X, DST, SRC, 0, 0)


def BPF_MOV32_REG(DST, SRC) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_MOV | BPF_X, DST, SRC, 0, 0)


def BPF_MOV64_IMM(DST, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_MOV | BPF_K, DST, 0, 0, IMM)


def BPF_MOV32_IMM(DST, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_MOV | BPF_K, DST, 0, 0, IMM)


def BPF_MOVSX64_REG(DST, SRC, OFF) -> Insn:
    """Sign-extending move: OFF is the source width in bits (8, 16 or 32)."""
    return BPF_RAW_INSN(BPF_ALU64 | BPF_MOV | BPF_X, DST, SRC, OFF, 0)


def BPF_MOVSX32_REG(DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_MOV | BPF_X, DST, SRC, OFF, 0)


def BPF_ZEXT_REG(DST) -> Insn:
    return BPF_RAW_INSN(BPF_ALU | BPF_MOV | BPF_X, DST, DST, 0, 1)


def BPF_ADDR_SPACE_CAST_INSN(DST, SRC, TO_AS, FROM_AS) -> Insn:
    return BPF_RAW_INSN(BPF_ALU64 | BPF_MOV | BPF_X, DST, SRC, BPF_ADDR_SPACE_CAST,
                        (TO_AS << 16) | FROM_AS)


def BPF_LD_IMM64_RAW(DST, SRC, IMM) -> tuple:
    """Two slots: ``lddw`` with an explicit pseudo ``src_reg``."""
    IMM = int(IMM) & 0xffffffffffffffff
    return (BPF_RAW_INSN(BPF_LD | BPF_DW | BPF_IMM, DST, SRC, 0, IMM & 0xffffffff),
            BPF_RAW_INSN(0, 0, 0, 0, IMM >> 32))


def BPF_LD_IMM64(DST, IMM) -> tuple:
    return BPF_LD_IMM64_RAW(DST, 0, IMM)


def BPF_LD_MAP_FD(DST, MAP_FD) -> tuple:
    return BPF_LD_IMM64_RAW(DST, BPF_PSEUDO_MAP_FD, MAP_FD)


def BPF_LD_MAP_VALUE(DST, MAP_FD, VALUE_OFF) -> tuple:
    return (BPF_RAW_INSN(BPF_LD | BPF_DW | BPF_IMM, DST, BPF_PSEUDO_MAP_VALUE, 0, MAP_FD),
            BPF_RAW_INSN(0, 0, 0, 0, VALUE_OFF))


def BPF_LD_ABS(SIZE, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_LD | BPF_SIZE(SIZE) | BPF_ABS, 0, 0, 0, IMM)


def BPF_LD_IND(SIZE, SRC, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_LD | BPF_SIZE(SIZE) | BPF_IND, 0, SRC, 0, IMM)


def BPF_LDX_MEM(SIZE, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_LDX | BPF_SIZE(SIZE) | BPF_MEM, DST, SRC, OFF, 0)


def BPF_LDX_MEMSX(SIZE, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_LDX | BPF_SIZE(SIZE) | BPF_MEMSX, DST, SRC, OFF, 0)


def BPF_STX_MEM(SIZE, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_STX | BPF_SIZE(SIZE) | BPF_MEM, DST, SRC, OFF, 0)


def BPF_ST_MEM(SIZE, DST, OFF, IMM) -> Insn:
    return BPF_RAW_INSN(BPF_ST | BPF_SIZE(SIZE) | BPF_MEM, DST, 0, OFF, IMM)


def BPF_ATOMIC_OP(SIZE, OP, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_STX | BPF_SIZE(SIZE) | BPF_ATOMIC, DST, SRC, OFF, OP)


def BPF_JMP_REG(OP, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP | BPF_OP(OP) | BPF_X, DST, SRC, OFF, 0)


def BPF_JMP_IMM(OP, DST, IMM, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP | BPF_OP(OP) | BPF_K, DST, 0, OFF, IMM)


def BPF_JMP32_REG(OP, DST, SRC, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP32 | BPF_OP(OP) | BPF_X, DST, SRC, OFF, 0)


def BPF_JMP32_IMM(OP, DST, IMM, OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP32 | BPF_OP(OP) | BPF_K, DST, 0, OFF, IMM)


def BPF_JMP_A(OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP | BPF_JA, 0, 0, OFF, 0)


def BPF_JMP32_A(IMM) -> Insn:
    """``gotol``: unconditional jump with a 32-bit offset in imm."""
    return BPF_RAW_INSN(BPF_JMP32 | BPF_JA, 0, 0, 0, IMM)


def BPF_MAY_GOTO_INSN(OFF) -> Insn:
    return BPF_RAW_INSN(BPF_JMP | BPF_JCOND, 0, BPF_MAY_GOTO, OFF, 0)


def BPF_EMIT_CALL(FUNC) -> Insn:
    """Call helper number FUNC (an int or a ``userbpf.uapi.Func`` member)."""
    return BPF_RAW_INSN(BPF_JMP | BPF_CALL, 0, 0, 0, FUNC)


def BPF_CALL_REL(IMM) -> Insn:
    """bpf-to-bpf call to ``pc + IMM + 1``."""
    return BPF_RAW_INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, IMM)


def BPF_CALLX(REG) -> Insn:
    """Indirect helper call (LLVM's ``callx``): not accepted by the Linux kernel."""
    return BPF_RAW_INSN(BPF_JMP | BPF_CALL | BPF_X, REG, 0, 0, 0)


def BPF_EXIT_INSN() -> Insn:
    return BPF_RAW_INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)


# Constants the header generator exports, in header order.
HEADER_ENUMS = (Class, Size, Mode, Source, AluOp, JmpOp, AtomicOp, Pseudo, PseudoCall)


# --- concrete operations: what the interpreter's switch dispatches on ---------
#
# One opcode byte can mean several operations (sdiv is div with off=1, the
# atomic op lives in imm, the byte-swap width in imm...). The pre-decoder
# resolves each slot to one concrete operation name; the list below is the
# interpreter's `enum vm_op` (generated into include/userbpf/insn.h).

_ALU_NAMES = ("ADD", "SUB", "MUL", "DIV", "SDIV", "MOD", "SMOD", "OR", "AND",
              "LSH", "RSH", "ARSH", "XOR", "MOV")
_COND_NAMES = ("JEQ", "JGT", "JGE", "JSET", "JNE", "JSGT", "JSGE", "JLT", "JLE",
               "JSLT", "JSLE")
_ATOMIC_RMW = ("ADD", "OR", "AND", "XOR")
_SIZE_LETTER = {Size.B: "B", Size.H: "H", Size.W: "W", Size.DW: "DW"}


def _vm_op_names() -> tuple:
    names = ["INVALID"]
    for w in ("64", "32"):
        for op in _ALU_NAMES:
            names += [f"{op}{w}_K", f"{op}{w}_X"]
        names.append(f"NEG{w}")
    names += ["MOVSX8_64", "MOVSX16_64", "MOVSX32_64", "MOVSX8_32", "MOVSX16_32",
              "ADDR_SPACE_CAST"]
    names += [f"{k}{n}" for k in ("LE", "BE", "BSWAP") for n in (16, 32, 64)]
    for w in ("64", "32"):
        for op in _COND_NAMES:
            names += [f"{op}{w}_K", f"{op}{w}_X"]
    names += ["JA", "JA32", "MAY_GOTO", "CALL_HELPER", "CALL_LOCAL", "CALLX", "EXIT"]
    names += ["LDDW"] + [f"LD_{m}_{s}" for m in ("ABS", "IND") for s in "BHW"]
    names += [f"LDX{s}" for s in ("B", "H", "W", "DW")] + ["LDXSB", "LDXSH", "LDXSW"]
    names += [f"ST{s}" for s in ("B", "H", "W", "DW")]
    names += [f"STX{s}" for s in ("B", "H", "W", "DW")]
    for w in ("32", "64"):
        for op in _ATOMIC_RMW:
            names += [f"ATOMIC_{op}{w}", f"ATOMIC_FETCH_{op}{w}"]
        names += [f"ATOMIC_XCHG{w}", f"ATOMIC_CMPXCHG{w}"]
    names += [f"LOAD_ACQ_{s}" for s in ("B", "H", "W", "DW")]
    names += [f"STORE_REL_{s}" for s in ("B", "H", "W", "DW")]
    # produced by the load-time context conversion, never decoded
    names += ["CTX_LDX", "CTX_STX", "CTX_ST", "CTX_LDXS"]
    return tuple(names)


VM_OP_NAMES = _vm_op_names()
VM_OP = {name: i for i, name in enumerate(VM_OP_NAMES)}
_ALU_BY_OP = {AluOp.ADD: "ADD", AluOp.SUB: "SUB", AluOp.MUL: "MUL", AluOp.DIV: "DIV",
              AluOp.OR: "OR", AluOp.AND: "AND", AluOp.LSH: "LSH", AluOp.RSH: "RSH",
              AluOp.MOD: "MOD", AluOp.XOR: "XOR", AluOp.MOV: "MOV", AluOp.ARSH: "ARSH"}
_COND_BY_OP = {getattr(JmpOp, n): n for n in _COND_NAMES}


def vm_op_name(insn: Insn) -> str:
    """The concrete operation of a slot that passed :func:`check_fields`.

    >>> vm_op_name(BPF_ALU64_REG_OFF(BPF_DIV, 1, 2, 1))
    'SDIV64_X'
    """
    code, cls = insn.code, insn.cls
    if cls in (Class.ALU, Class.ALU64):
        w = "64" if cls == Class.ALU64 else "32"
        op, x = BPF_OP(code), BPF_SRC(code) == Source.X
        if op == AluOp.NEG:
            return f"NEG{w}"
        if op == AluOp.END:
            kind = "BSWAP" if cls == Class.ALU64 else ("BE" if x else "LE")
            return f"{kind}{insn.imm}"
        if op == AluOp.MOV and x and insn.off:
            return "ADDR_SPACE_CAST" if (cls == Class.ALU64 and insn.off == 1) \
                else f"MOVSX{insn.off}_{w}"
        name = _ALU_BY_OP[op]
        if op in (AluOp.DIV, AluOp.MOD) and insn.off == 1:
            name = "S" + name
        return f"{name}{w}_{'X' if x else 'K'}"
    if cls in (Class.JMP, Class.JMP32):
        op = BPF_OP(code)
        if op == JmpOp.JA:
            return "JA" if cls == Class.JMP else "JA32"
        if op == JmpOp.CALL:
            if BPF_SRC(code) == Source.X:
                return "CALLX"
            return {PseudoCall.HELPER: "CALL_HELPER", PseudoCall.CALL: "CALL_LOCAL"}.get(
                insn.src, "INVALID")
        if op == JmpOp.EXIT:
            return "EXIT"
        if op == JmpOp.JCOND:
            return "MAY_GOTO"
        w = "64" if cls == Class.JMP else "32"
        return f"{_COND_BY_OP[op]}{w}_{'X' if BPF_SRC(code) == Source.X else 'K'}"
    size = _SIZE_LETTER[BPF_SIZE(code)]
    mode = BPF_MODE(code)
    if cls == Class.LD:
        if mode == Mode.IMM:
            return "LDDW"
        return f"LD_{'ABS' if mode == Mode.ABS else 'IND'}_{size}"
    if cls == Class.LDX:
        return f"LDXS{size}" if mode == Mode.MEMSX else f"LDX{size}"
    if cls == Class.ST:
        return f"ST{size}"
    if mode == Mode.ATOMIC:
        imm = insn.imm
        if imm == AtomicOp.LOAD_ACQ:
            return f"LOAD_ACQ_{size}"
        if imm == AtomicOp.STORE_REL:
            return f"STORE_REL_{size}"
        w = "64" if BPF_SIZE(code) == Size.DW else "32"
        op = AtomicOp(imm)
        if op == AtomicOp.XCHG:
            return f"ATOMIC_XCHG{w}"
        if op == AtomicOp.CMPXCHG:
            return f"ATOMIC_CMPXCHG{w}"
        fetch = "FETCH_" if imm & BPF_FETCH else ""
        return f"ATOMIC_{fetch}{AtomicOp(imm & ~BPF_FETCH).name}{w}"
    return f"STX{size}"


__all__ += sorted(n for n in dir() if n.startswith("BPF_")) + [
    "SIZE_BYTES", "VM_OP_NAMES", "VM_OP", "vm_op_name", "imm64", "slots"]
