"""Assembler and disassembler for eBPF, in two syntaxes that may be mixed.

*kernel* syntax is what the kernel's verifier log and ``llvm-objdump`` print::

    r0 = *(u16 *)(r1 +12)
    r0 = be16 r0
    if r0 != 0x800 goto +1
    w1 += w2
    lock *(u64 *)(r10 -8) += r1
    call bpf_ktime_get_ns
    exit

*mnemonic* syntax is the one of the bpf_conformance corpus (and uBPF)::

    ldxh %r0, [%r1+12]
    be16 %r0
    jne %r0, 0x800, +1
    add32 %r1, %r2
    lock add [%r10-8], %r1
    call 5
    exit

:func:`assemble` accepts both, line by line, with ``label:`` lines as jump
and call targets, comments after ``#``, ``;`` or ``//``, and kernel-log
prefixes (``12: (bf) r1 = r6``) ignored. :func:`disassemble` prints either
syntax; ``assemble(disassemble(code))`` gives back the same slots for *any*
8-byte-aligned input, because a slot that no readable form reproduces
exactly (a reserved field set, an unknown opcode) is printed in the raw
form ``.insn CODE, DST, SRC, OFF, IMM``, which assembles to that slot.

    >>> from userbpf import isa
    >>> isa.encode(assemble("r0 = 7\\nexit")).hex()
    'b7000000070000009500000000000000'
    >>> print(disassemble(assemble("mov %r0, 7\\nexit"), syntax="mnemonic"))
    mov %r0, 7
    exit

Pseudo ``lddw`` forms (``src_reg`` of :class:`isa.Pseudo`), in both syntaxes:
``map[fd:N]`` (MAP_FD), ``map[fd:N][0]+OFF`` (MAP_VALUE), ``map[idx:N]``
(MAP_IDX), ``map[idx:N][0]+OFF`` (MAP_IDX_VALUE), ``btf_id[N]`` (BTF_ID) and
``func[pc+N]`` or ``func[LABEL]`` (FUNC); kernel syntax ends them with ``ll``
like a 64-bit constant (``r1 = map[fd:3] ll``).

Extensions beyond the corpus spellings, in mnemonic syntax: ``ldabs{b,h,w}
IMM``, ``ldind{b,h,w} %rS, IMM``, ``ldacq{b,h,w,dw} %rD, [%rS+OFF]``
(load-acquire), ``strel{b,h,w,dw} [%rD+OFF], %rS`` (store-release),
``may_goto +OFF``, ``addr_space_cast %rD, %rS, TO, FROM``, ``call local
+OFF``, ``call kfunc N``.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import isa
from .errors import AsmError, EncodingError
from .isa import (AluOp, AtomicOp, Class, Insn, JmpOp, Mode, Pseudo, PseudoCall, Size,
                  Source)

__all__ = ["assemble", "disassemble", "format_insn", "helper_id", "helper_name"]


# --- helper names --------------------------------------------------------------

# Used only when userbpf.uapi (the full list from linux/bpf.h) is missing.
_FALLBACK_HELPERS = {
    "map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3, "probe_read": 4,
    "ktime_get_ns": 5, "trace_printk": 6, "get_prandom_u32": 7,
    "get_smp_processor_id": 8, "skb_store_bytes": 9, "l3_csum_replace": 10,
    "l4_csum_replace": 11, "tail_call": 12, "clone_redirect": 13,
    "get_current_pid_tgid": 14, "get_current_uid_gid": 15, "get_current_comm": 16,
    "redirect": 23, "perf_event_output": 25, "skb_load_bytes": 26,
    "map_push_elem": 87, "map_pop_elem": 88, "map_peek_elem": 89,
    "probe_read_user": 112, "probe_read_kernel": 113, "ktime_get_boot_ns": 125,
    "ringbuf_output": 130, "ringbuf_reserve": 131, "ringbuf_submit": 132,
    "ringbuf_discard": 133, "for_each_map_elem": 164, "snprintf": 165, "loop": 181,
}


def _helper_table() -> Dict[str, int]:
    try:
        from . import uapi
        table = {m.name.lower(): int(m) for m in uapi.Func}
    except Exception:       # uapi absent or without Func: the short built-in list
        return dict(_FALLBACK_HELPERS)
    table.pop("unspec", None)
    return table


_HELPERS: Optional[Dict[str, int]] = None
_HELPER_NAMES: Dict[int, str] = {}


def _helpers() -> Dict[str, int]:
    global _HELPERS, _HELPER_NAMES
    if _HELPERS is None:
        _HELPERS = _helper_table()
        _HELPER_NAMES = {v: k for k, v in _HELPERS.items()}
    return _HELPERS


def helper_id(name: str) -> Optional[int]:
    """The id of helper ``name`` (with or without ``bpf_``), or None.

    >>> helper_id("bpf_map_lookup_elem"), helper_id("ktime_get_ns")
    (1, 5)
    """
    n = name[4:] if name.startswith("bpf_") else name
    return _helpers().get(n)


def helper_name(hid: int) -> Optional[str]:
    """``bpf_NAME`` for a known helper id, else None."""
    _helpers()
    n = _HELPER_NAMES.get(hid)
    return None if n is None else "bpf_" + n


# --- syntax tables (data, shared by the assembler and the disassembler) -------

_ALU_CLASSES = (Class.ALU, Class.ALU64)
_JMP_CLASSES = (Class.JMP, Class.JMP32)

# kernel: "r1 OP r2" / "r1 OP imm"; the key's second item is insn.off
# (1 = signed division/modulo).
_KALU = {(AluOp.ADD, 0): "+=", (AluOp.SUB, 0): "-=", (AluOp.MUL, 0): "*=",
         (AluOp.DIV, 0): "/=", (AluOp.DIV, 1): "s/=", (AluOp.MOD, 0): "%=",
         (AluOp.MOD, 1): "s%=", (AluOp.OR, 0): "|=", (AluOp.AND, 0): "&=",
         (AluOp.LSH, 0): "<<=", (AluOp.RSH, 0): ">>=", (AluOp.ARSH, 0): "s>>=",
         (AluOp.XOR, 0): "^=", (AluOp.MOV, 0): "="}
_KALU_BY_TEXT = {v: k for k, v in _KALU.items()}

# mnemonic: "add %r1, %r2" (add32 for the ALU class)
_MALU = {(op, 0): op.name.lower() for op in AluOp if op not in (AluOp.NEG, AluOp.END)}
_MALU.update({(AluOp.DIV, 1): "sdiv", (AluOp.MOD, 1): "smod"})

_KJMP = {JmpOp.JEQ: "==", JmpOp.JNE: "!=", JmpOp.JGT: ">", JmpOp.JGE: ">=",
         JmpOp.JLT: "<", JmpOp.JLE: "<=", JmpOp.JSGT: "s>", JmpOp.JSGE: "s>=",
         JmpOp.JSLT: "s<", JmpOp.JSLE: "s<=", JmpOp.JSET: "&"}
_KJMP_BY_TEXT = {v: k for k, v in _KJMP.items()}
_MJMP = {op: op.name.lower() for op in _KJMP}          # jeq, jne, jsgt...

_KSIZE = {Size.B: "u8", Size.H: "u16", Size.W: "u32", Size.DW: "u64"}
_KSIZE_SX = {Size.B: "s8", Size.H: "s16", Size.W: "s32"}
_KTYPES = {**{v: (k, Mode.MEM) for k, v in _KSIZE.items()},
           **{v: (k, Mode.MEMSX) for k, v in _KSIZE_SX.items()}}
_MSIZE = {Size.B: "b", Size.H: "h", Size.W: "w", Size.DW: "dw"}

_ATOMIC_RMW = {AtomicOp.ADD: "+=", AtomicOp.OR: "|=", AtomicOp.AND: "&=",
               AtomicOp.XOR: "^="}
_ATOMIC_RMW_BY_TEXT = {v: k for k, v in _ATOMIC_RMW.items()}
_ATOMIC_NAMES = {AtomicOp.ADD: "add", AtomicOp.OR: "or", AtomicOp.AND: "and",
                 AtomicOp.XOR: "xor"}
_ATOMIC_BY_NAME = {v: k for k, v in _ATOMIC_NAMES.items()}

_MOVSX_BITS = (8, 16, 32)
_SWAP_WIDTHS = (16, 32, 64)

# Pseudo lddw spellings: src_reg -> (head, second slot carries an offset).
_PSEUDO_MAP = {Pseudo.MAP_FD: ("fd", False), Pseudo.MAP_VALUE: ("fd", True),
               Pseudo.MAP_IDX: ("idx", False), Pseudo.MAP_IDX_VALUE: ("idx", True)}

_IMM32 = (-(1 << 31), (1 << 32) - 1)       # accepted for a 32-bit field (wraps)
_S32 = (-(1 << 31), (1 << 31) - 1)
_S16 = (-(1 << 15), (1 << 15) - 1)
_IMM64 = (-(1 << 63), (1 << 64) - 1)


# --- the line parser -----------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_.$][\w.$]*")
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)(?![\w.$])")
_REG = re.compile(r"%?([rw])(\d+)(?![\w.$])")
_LOG_PREFIX = re.compile(r"\s*\d+:\s*\([0-9a-fA-F]{2}\)\s*")
_LABEL_DEF = re.compile(r"\s*([A-Za-z_.$][\w.$]*)\s*:(?!=)")
_COMMENT = re.compile(r"#|;|//")


class _Fixup(NamedTuple):
    """A label reference resolved once every label is known."""
    slot: int          # index into the statement's slots
    field: str         # "off" or "imm"
    label: str
    column: int
    bits: int          # field width
    helper: Optional[int] = None   # "call NAME": the helper id if no label NAME


class _Line:
    """A cursor over one source line; every error names its column."""

    def __init__(self, text: str, lineno: int, start: int, end: int):
        self.text, self.lineno, self.pos, self.end = text, lineno, start, end
        self.fixups: List[_Fixup] = []

    # -- low level
    def error(self, msg: str, pos: Optional[int] = None) -> AsmError:
        pos = self.pos if pos is None else pos
        return AsmError(msg, self.lineno, pos + 1, self.text.rstrip())

    def ws(self) -> None:
        while self.pos < self.end and self.text[self.pos] in " \t":
            self.pos += 1

    def rest(self) -> str:
        return self.text[self.pos:self.end]

    def peek(self, s: str) -> bool:
        self.ws()
        return self.rest().startswith(s)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: Optional[str] = None) -> None:
        if not self.accept(s):
            raise self.error(f"expected {what or repr(s)}, found {self.found()}")

    def found(self) -> str:
        self.ws()
        r = self.rest().strip()
        if not r:
            return "end of line"
        m = _IDENT.match(r) or _NUMBER.match(r)
        return repr(m.group(0) if m else r[0])

    def here(self) -> int:
        """Skip blanks; the position of the next token (for error columns)."""
        self.ws()
        return self.pos

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= self.end

    def done(self) -> None:
        if not self.at_end():
            raise self.error(f"unexpected {self.found()} after the instruction")

    def one_of(self, options: Sequence[str]) -> Optional[str]:
        """Accept the longest of ``options`` found here."""
        self.ws()
        r = self.rest()
        for o in sorted(options, key=len, reverse=True):
            if r.startswith(o):
                self.pos += len(o)
                return o
        return None

    def ident(self, what: str = "a name") -> str:
        self.ws()
        m = _IDENT.match(self.text, self.pos, self.end)
        if not m:
            raise self.error(f"expected {what}, found {self.found()}")
        self.pos = m.end()
        return m.group(0)

    def peek_ident(self) -> Optional[str]:
        self.ws()
        m = _IDENT.match(self.text, self.pos, self.end)
        return m.group(0) if m else None

    def peek_word(self, word: str) -> bool:
        return self.peek_ident() == word

    # -- operands
    def is_reg(self) -> bool:
        self.ws()
        return bool(_REG.match(self.text, self.pos, self.end))

    def reg(self, letters: str = "rw", what: str = "a register") -> Tuple[str, int]:
        """``r0``..``r10`` (``%`` optional); ``w`` names the 32-bit subregister."""
        self.ws()
        start = self.pos
        m = _REG.match(self.text, self.pos, self.end)
        if not m:
            raise self.error(f"expected {what}, found {self.found()}")
        n = int(m.group(2))
        if n > 10:
            raise self.error(f"invalid register {m.group(0)!r} (registers are r0..r10)", start)
        if m.group(1) not in letters:
            want = {"r": "a 64-bit register (r0..r10)",
                    "w": "a 32-bit register (w0..w10)"}.get(letters, what)
            raise self.error(f"expected {want}, found {m.group(0)!r}", start)
        self.pos = m.end()
        return m.group(1), n

    def is_number(self) -> bool:
        self.ws()
        r = self.rest()
        if r[:1] and r[0] in "+-":
            r = r[1:].lstrip()
        return bool(_NUMBER.match(r))

    def number(self, bounds: Tuple[int, int], what: str = "a number") -> int:
        """A decimal or hex integer with an optional sign, checked against bounds."""
        self.ws()
        start = self.pos
        sign = 1
        if self.rest()[:1] and self.rest()[0] in "+-":
            sign = -1 if self.text[self.pos] == "-" else 1
            self.pos += 1
            self.ws()
        m = _NUMBER.match(self.text, self.pos, self.end)
        if not m:
            self.pos = start
            raise self.error(f"expected {what}, found {self.found()}")
        self.pos = m.end()
        value = sign * int(m.group(1), 0)
        lo, hi = bounds
        if not lo <= value <= hi:
            raise self.error(f"{what} {self.text[start:self.pos].strip()} is out of range "
                             f"[{lo:#x}, {hi:#x}]" + (
                                 " (a 64-bit constant needs lddw, or 'll' in kernel syntax)"
                                 if bounds == _IMM32 and abs(value) < 1 << 64 else ""),
                             start)
        return value

    def target(self, slot: int, field: str, bits: int) -> int:
        """A jump/call target: ``+N``, ``-N``, ``pc+N``, ``N`` or a label
        (label references become fixups). llvm-objdump's ``<sym>`` is ignored."""
        self.ws()
        bounds = _S16 if bits == 16 else _S32
        if self.rest().startswith("pc") and re.match(r"pc\s*[+-]", self.rest()):
            self.pos += 2
        if self.is_number():
            value = self.number(bounds, "jump offset")
        else:
            col = self.pos + 1
            name = self.ident("a jump offset (+N, -N) or a label")
            self.fixups.append(_Fixup(slot, field, name, col, bits))
            value = 0
        if self.peek("<"):          # llvm-objdump: "goto +3 <LBB0_2>"
            close = self.text.find(">", self.pos, self.end)
            if close < 0:
                raise self.error("unterminated '<...>'")
            self.pos = close + 1
        return value


def _wrap32(v: int) -> int:
    return isa._s32(v)


def _insn(code, dst=0, src=0, off=0, imm=0) -> Insn:
    return Insn(int(code), dst, src, off, _wrap32(imm))


# --- memory operands ----------------------------------------------------------

def _k_addr(p: _Line) -> Tuple[int, int]:
    """Kernel syntax ``(rN +off)``, ``(rN - 0x8)``, ``(rN)`` -> (reg, off)."""
    p.expect("(", "'(' opening a memory operand like (r1 +8)")
    _, reg = p.reg(what="a base register")
    off = _k_off(p)
    p.expect(")", "')' closing the memory operand")
    return reg, off


def _k_off(p: _Line) -> int:
    sign = p.one_of(("+", "-"))
    if sign is None:
        return 0
    start = p.pos
    v = p.number((-(1 << 64), 1 << 64), "offset")
    v = -v if sign == "-" else v
    if not _S16[0] <= v <= _S16[1]:
        raise p.error(f"offset {v} is out of range [-32768, 32767]", start)
    return v


def _k_sized(p: _Line, allow_sx: bool = False) -> Tuple[Size, Mode]:
    """``*(u32 *)`` / ``(u32 *)`` type cast -> (size, MEM or MEMSX)."""
    p.expect("(", "'(' opening a type like (u32 *)")
    p.ws()
    col = p.here()
    name = p.ident("a type (u8, u16, u32, u64)")
    if name not in _KTYPES or (_KTYPES[name][1] == Mode.MEMSX and not allow_sx):
        raise p.error(f"expected a type (u8, u16, u32, u64), found {name!r}", col)
    p.expect("*", "'*' in the type cast")
    p.expect(")", "')' closing the type cast")
    return _KTYPES[name]


def _m_addr(p: _Line) -> Tuple[int, int]:
    """Mnemonic syntax ``[%rN+off]``, ``[%rN-off]``, ``[%rN]`` -> (reg, off)."""
    p.expect("[", "a memory operand like [%r1+8]")
    _, reg = p.reg(what="a base register")
    off = _k_off(p)
    p.expect("]", "']' closing the memory operand")
    return reg, off


# --- kernel syntax ------------------------------------------------------------

def _k_lddw_rhs(p: _Line, dst: int) -> Optional[List[Insn]]:
    """The pseudo lddw right-hand sides; None when the text is not one."""
    word = p.peek_ident()
    if word == "map":
        p.ident()
        p.expect("[", "'[' after map")
        col = p.here()
        kind = p.ident("fd or idx")
        if kind not in ("fd", "idx"):
            raise p.error(f"expected fd or idx, found {kind!r}", col)
        p.expect(":", "':' after " + kind)
        n = p.number(_IMM32, "map " + kind)
        p.expect("]", "']'")
        value, off = False, 0
        if p.accept("["):
            p.expect("0", "0 (map value index)")
            p.expect("]", "']'")
            value = True
            if p.peek("+") or p.peek("-"):
                off = p.number(_IMM32, "map value offset")
        src = {("fd", False): Pseudo.MAP_FD, ("fd", True): Pseudo.MAP_VALUE,
               ("idx", False): Pseudo.MAP_IDX, ("idx", True): Pseudo.MAP_IDX_VALUE}[kind, value]
        first, second = _insn(isa.LDDW, dst, src, 0, n), _insn(0, imm=off)
    elif word == "btf_id":
        p.ident()
        p.expect("[", "'[' after btf_id")
        n = p.number(_IMM32, "BTF id")
        p.expect("]", "']'")
        first, second = _insn(isa.LDDW, dst, Pseudo.BTF_ID, 0, n), _insn(0)
    elif word == "func":
        p.ident()
        p.expect("[", "'[' after func")
        rel = p.target(0, "imm", 32)
        p.expect("]", "']'")
        first, second = _insn(isa.LDDW, dst, Pseudo.FUNC, 0, rel), _insn(0)
    else:
        return None
    p.accept("ll")
    return [first, second]


def _k_assign(p: _Line, letter: str, dst: int) -> List[Insn]:
    """Statements that start with a register: ALU, loads, fetch atomics, lddw."""
    cls = Class.ALU64 if letter == "r" else Class.ALU
    p.ws()
    opcol = p.here()
    op = p.one_of(list(_KALU_BY_TEXT))
    if op is None:
        p.ws()
        raise p.error(f"expected an assignment operator (=, +=, ...), found {p.found()}")
    aluop, off = _KALU_BY_TEXT[op]
    if op != "=":
        return [_k_alu_operand(p, cls, letter, aluop, dst, off)]

    p.ws()
    word = p.peek_ident()
    # loads: r0 = *(u32 *)(r1 +8) | *(u8 *)skb[12] | *(u16 *)skb[r1 + 2]
    if p.accept("*"):
        size, mode = _k_sized(p, allow_sx=True)
        if p.peek_word("skb"):
            if mode != Mode.MEM or size == Size.DW or dst != 0:
                raise p.error("packet loads are r0 = *(u8|u16|u32 *)skb[...]", opcol)
            p.ident()
            p.expect("[", "'[' after skb")
            if p.is_reg():
                _, src = p.reg()
                sign = p.one_of(("+", "-"))
                imm = 0
                if sign:
                    imm = p.number(_IMM32, "offset")
                    imm = -imm if sign == "-" else imm
                p.expect("]", "']'")
                return [_insn(Class.LD | size | Mode.IND, 0, src, 0, imm)]
            imm = p.number(_IMM32, "packet offset")
            p.expect("]", "']'")
            return [_insn(Class.LD | size | Mode.ABS, 0, 0, 0, imm)]
        src, off = _k_addr(p)
        return [_insn(Class.LDX | size | mode, dst, src, off)]
    # negation: r1 = -r1 (but r1 = -5 is an immediate)
    if p.peek("-") and not p.is_number():
        p.expect("-")
        _, src = p.reg(letter)
        if src != dst:
            raise p.error("negation must use one register (r1 = -r1)")
        return [_insn(cls | AluOp.NEG | Source.K, dst)]
    # sign-extending move: r1 = (s8)r2
    if p.peek("(") and re.match(r"\(\s*s(8|16|32)\s*\)", p.rest()):
        p.expect("(")
        bits = int(p.ident()[1:])
        p.expect(")")
        if cls == Class.ALU and bits == 32:
            raise p.error("a 32-bit sign-extending move takes (s8) or (s16)")
        _, src = p.reg(letter)
        return [_insn(cls | AluOp.MOV | Source.X, dst, src, bits)]
    if word is not None and not p.is_reg():
        m = re.fullmatch(r"(le|be|bswap)(\d+)", word)
        if m:
            col = p.here()
            p.ident()
            width = int(m.group(2))
            if width not in _SWAP_WIDTHS:
                raise p.error(f"byte swap width must be 16, 32 or 64, not {width}", col)
            _, src = p.reg()
            if src != dst:
                raise p.error("a byte swap must use one register (r1 = be16 r1)")
            code = {"le": Class.ALU | isa.BPF_TO_LE, "be": Class.ALU | isa.BPF_TO_BE,
                    "bswap": Class.ALU64 | isa.BPF_TO_LE}[m.group(1)]
            return [_insn(code | AluOp.END, dst, 0, 0, width)]
        if word == "addr_space_cast":
            p.ident()
            p.expect("(")
            _, src = p.reg("r")
            p.expect(",")
            to_as = p.number((0, 0xffff), "address space")
            p.expect(",")
            from_as = p.number((0, 0xffff), "address space")
            p.expect(")")
            return [_insn(Class.ALU64 | AluOp.MOV | Source.X, dst, src,
                          isa.BPF_ADDR_SPACE_CAST, (to_as << 16) | from_as)]
        if word == "load_acquire":
            p.ident()
            p.expect("(")
            size, _ = _k_sized(p)
            src, off = _k_addr(p)
            p.expect(")")
            return [_insn(Class.STX | size | Mode.ATOMIC, dst, src, off, AtomicOp.LOAD_ACQ)]
        fetch = _k_fetch(p, word, letter, dst)
        if fetch is not None:
            return fetch
        pseudo = _k_lddw_rhs(p, dst)
        if pseudo is not None:
            return pseudo
        raise p.error(f"unknown operand {word!r}")
    if p.is_reg():
        return [_k_alu_operand(p, cls, letter, AluOp.MOV, dst, 0)]
    # r1 = IMM, or r1 = IMM ll (lddw)
    start = p.pos
    value = p.number(_IMM64, "immediate")
    if p.accept("ll"):
        if letter != "r":
            raise p.error("lddw loads a 64-bit register (r0..r10)", opcol)
        return list(isa.BPF_LD_IMM64(dst, value))
    p.pos = start
    return [_k_alu_operand(p, cls, letter, AluOp.MOV, dst, 0)]


def _k_alu_operand(p: _Line, cls, letter, aluop, dst, off) -> Insn:
    if p.is_reg():
        _, src = p.reg(letter)
        return _insn(cls | aluop | Source.X, dst, src, off)
    imm = p.number(_IMM32, "immediate")
    return _insn(cls | aluop | Source.K, dst, 0, off, imm)


# llvm's spellings of the fetch atomics, and the kernel log's
_FETCH_FUNCS = {**{f"atomic_fetch_{n}": op | isa.BPF_FETCH for op, n in _ATOMIC_NAMES.items()},
                **{f"atomic64_fetch_{n}": op | isa.BPF_FETCH for op, n in _ATOMIC_NAMES.items()},
                "atomic_xchg": AtomicOp.XCHG, "atomic64_xchg": AtomicOp.XCHG,
                "atomic_cmpxchg": AtomicOp.CMPXCHG, "atomic64_cmpxchg": AtomicOp.CMPXCHG}
_LLVM_XCHG = {"xchg_64": (AtomicOp.XCHG, Size.DW), "xchg32_32": (AtomicOp.XCHG, Size.W),
              "cmpxchg_64": (AtomicOp.CMPXCHG, Size.DW),
              "cmpxchg32_32": (AtomicOp.CMPXCHG, Size.W)}


def _k_fetch(p: _Line, word: str, letter: str, dst: int) -> Optional[List[Insn]]:
    """``r1 = atomic_fetch_add((u64 *)(r10 -8), r1)``, ``r1 = xchg_64(r10 -8, r1)``,
    ``r0 = cmpxchg_64(r10 -8, r0, r1)`` and the kernel log's atomic64_* names."""
    if word in _FETCH_FUNCS:
        p.ident()
        op = _FETCH_FUNCS[word]
        p.expect("(")
        size, _ = _k_sized(p)
        base, off = _k_addr(p)
    elif word in _LLVM_XCHG:
        p.ident()
        op, size = _LLVM_XCHG[word]
        p.expect("(")
        _, base = p.reg(what="a base register")
        off = _k_off(p)
    else:
        return None
    if size not in (Size.W, Size.DW):
        raise p.error("atomic operations are 32 or 64 bits wide")
    p.expect(",")
    if op == AtomicOp.CMPXCHG:
        col = p.here()
        _, r = p.reg()
        if r != 0 or dst != 0:
            raise p.error("cmpxchg compares with r0 and returns into it: "
                          "r0 = cmpxchg_64(r10 -8, r0, r1)", col)
        p.expect(",")
    col = p.here()
    _, src = p.reg()
    if op != AtomicOp.CMPXCHG and src != dst:
        raise p.error("the fetched value returns into the operand register "
                      f"(r{src} = ...(..., r{src}))", col)
    p.expect(")")
    return [_insn(Class.STX | size | Mode.ATOMIC, base, src, off, op)]


def _k_statement(p: _Line, word: Optional[str]) -> Optional[List[Insn]]:
    """One kernel-syntax statement; None when the line does not start like one."""
    if p.is_reg():
        letter, dst = p.reg()
        return _k_assign(p, letter, dst)
    if p.peek("*"):                                 # stores
        p.expect("*")
        size, _ = _k_sized(p)
        dst, off = _k_addr(p)
        p.expect("=", "'='")
        if p.is_reg():
            _, src = p.reg()
            return [_insn(Class.STX | size | Mode.MEM, dst, src, off)]
        imm = p.number(_IMM32, "immediate")
        return [_insn(Class.ST | size | Mode.MEM, dst, 0, off, imm)]
    if word == "if":
        p.ident()
        letter, dst = p.reg()
        cls = Class.JMP if letter == "r" else Class.JMP32
        col = p.here()
        op = p.one_of(list(_KJMP_BY_TEXT))
        if op is None:
            raise p.error(f"expected a comparison (==, !=, >, s<, &, ...), found {p.found()}")
        jop = _KJMP_BY_TEXT[op]
        if p.is_reg():
            _, src = p.reg(letter)
            code, imm = cls | jop | Source.X, 0
        else:
            src, imm = 0, p.number(_IMM32, "immediate")
            code = cls | jop | Source.K
        if p.ident("'goto'") != "goto":
            raise p.error("expected 'goto'", col)
        off = p.target(0, "off", 16)
        return [_insn(code, dst, src, off, imm)]
    if word in ("goto", "gotol", "may_goto"):
        p.ident()
        if word == "gotol":
            return [_insn(Class.JMP32 | JmpOp.JA, imm=p.target(0, "imm", 32))]
        code = Class.JMP | (JmpOp.JA if word == "goto" else JmpOp.JCOND)
        return [_insn(code, off=p.target(0, "off", 16))]
    if word == "lock" and re.match(r"lock\s*\*", p.rest().lstrip()):
        p.ident()
        p.expect("*")
        size, _ = _k_sized(p)
        dst, off = _k_addr(p)
        col = p.here()
        op = p.one_of(list(_ATOMIC_RMW_BY_TEXT))
        if op is None:
            raise p.error(f"expected +=, |=, &= or ^=, found {p.found()}", col)
        _, src = p.reg()
        if size not in (Size.W, Size.DW):
            raise p.error("atomic operations are 32 or 64 bits wide", col)
        return [_insn(Class.STX | size | Mode.ATOMIC, dst, src, off, _ATOMIC_RMW_BY_TEXT[op])]
    if word == "store_release":
        p.ident()
        p.expect("(")
        size, _ = _k_sized(p)
        dst, off = _k_addr(p)
        p.expect(",")
        _, src = p.reg()
        p.expect(")")
        return [_insn(Class.STX | size | Mode.ATOMIC, dst, src, off, AtomicOp.STORE_REL)]
    return None


# --- shared statements: call, exit, .insn ---------------------------------------

def _call(p: _Line) -> List[Insn]:
    """``call N`` / ``call NAME`` (helper, or a label of the program),
    ``call pc+N`` and ``call local LABEL|+N`` (bpf-to-bpf), ``call %rN``
    (callx), ``call kfunc N``."""
    if p.is_reg():
        _, reg = p.reg()
        return [isa.BPF_CALLX(reg)]
    word = p.peek_ident()
    if word == "local":
        p.ident()
        return [isa.BPF_CALL_REL(p.target(0, "imm", 32))]
    if word == "kfunc":
        p.ident()
        return [_insn(Class.JMP | JmpOp.CALL, 0, PseudoCall.KFUNC_CALL, 0,
                      p.number(_IMM32, "kfunc id"))]
    if word == "pc":                # a signed number is a helper id, not an offset
        return [isa.BPF_CALL_REL(p.target(0, "imm", 32))]
    if p.is_number():
        return [isa.BPF_EMIT_CALL(p.number(_IMM32, "helper id"))]
    col = p.pos + 1
    name = p.ident("a helper id, helper name or label")
    # A label of the program wins over a helper of the same name (resolved later).
    p.fixups.append(_Fixup(0, "imm", name, col, 32, helper_id(name)))
    return [isa.BPF_CALL_REL(0)]


def _raw(p: _Line) -> List[Insn]:
    """``.insn CODE, DST, SRC, OFF, IMM``: one slot, any field values."""
    code = p.number((0, 0xff), "opcode")
    p.expect(",")
    dst = p.number((0, 15), "dst_reg")
    p.expect(",")
    src = p.number((0, 15), "src_reg")
    p.expect(",")
    off = p.number(_S16, "offset")
    p.expect(",")
    imm = p.number(_IMM32, "immediate")
    return [_insn(code, dst, src, off, imm)]


# --- mnemonic syntax ------------------------------------------------------------

def _m_alu(cls, op, off):
    def parse(p: _Line) -> List[Insn]:
        _, dst = p.reg()
        p.expect(",")
        if p.is_reg():
            _, src = p.reg()
            return [_insn(cls | op | Source.X, dst, src, off)]
        return [_insn(cls | op | Source.K, dst, 0, off, p.number(_IMM32, "immediate"))]
    return parse


def _m_neg(cls):
    def parse(p: _Line) -> List[Insn]:
        return [_insn(cls | AluOp.NEG, p.reg()[1])]
    return parse


def _m_movsx(cls, bits):
    def parse(p: _Line) -> List[Insn]:
        _, dst = p.reg()
        p.expect(",")
        return [_insn(cls | AluOp.MOV | Source.X, dst, p.reg()[1], bits)]
    return parse


def _m_end(code, width):
    def parse(p: _Line) -> List[Insn]:
        return [_insn(code | AluOp.END, p.reg()[1], 0, 0, width)]
    return parse


def _m_jmp(cls, op):
    def parse(p: _Line) -> List[Insn]:
        _, dst = p.reg()
        p.expect(",")
        if p.is_reg():
            _, src = p.reg()
            code, imm = cls | op | Source.X, 0
        else:
            src, imm, code = 0, p.number(_IMM32, "immediate"), cls | op | Source.K
        p.expect(",")
        return [_insn(code, dst, src, p.target(0, "off", 16), imm)]
    return parse


def _m_ja(p: _Line) -> List[Insn]:
    return [_insn(Class.JMP | JmpOp.JA, off=p.target(0, "off", 16))]


def _m_ja32(p: _Line) -> List[Insn]:
    return [_insn(Class.JMP32 | JmpOp.JA, imm=p.target(0, "imm", 32))]


def _m_may_goto(p: _Line) -> List[Insn]:
    return [_insn(Class.JMP | JmpOp.JCOND, off=p.target(0, "off", 16))]


def _m_callx(p: _Line) -> List[Insn]:
    return [isa.BPF_CALLX(p.reg()[1])]


def _m_exit(p: _Line) -> List[Insn]:
    return [isa.BPF_EXIT_INSN()]


def _m_lddw(p: _Line) -> List[Insn]:
    _, dst = p.reg("r")
    p.expect(",")
    pseudo = _k_lddw_rhs(p, dst)
    if pseudo is not None:
        return pseudo
    return list(isa.BPF_LD_IMM64(dst, p.number(_IMM64, "immediate")))


def _m_ldx(size, mode):
    def parse(p: _Line) -> List[Insn]:
        _, dst = p.reg()
        p.expect(",")
        src, off = _m_addr(p)
        return [_insn(Class.LDX | size | mode, dst, src, off)]
    return parse


def _m_st(size):
    def parse(p: _Line) -> List[Insn]:
        dst, off = _m_addr(p)
        p.expect(",")
        return [_insn(Class.ST | size | Mode.MEM, dst, 0, off, p.number(_IMM32, "immediate"))]
    return parse


def _m_stx(size, atomic: Optional[int] = None):
    """``stx*`` (atomic None) or an atomic store-form with imm ``atomic``."""
    def parse(p: _Line) -> List[Insn]:
        dst, off = _m_addr(p)
        p.expect(",")
        mode, imm = (Mode.MEM, 0) if atomic is None else (Mode.ATOMIC, atomic)
        return [_insn(Class.STX | size | mode, dst, p.reg()[1], off, imm)]
    return parse


def _m_ldacq(size):
    def parse(p: _Line) -> List[Insn]:
        _, dst = p.reg()
        p.expect(",")
        src, off = _m_addr(p)
        return [_insn(Class.STX | size | Mode.ATOMIC, dst, src, off, AtomicOp.LOAD_ACQ)]
    return parse


def _m_ldabs(size):
    def parse(p: _Line) -> List[Insn]:
        return [_insn(Class.LD | size | Mode.ABS, imm=p.number(_IMM32, "packet offset"))]
    return parse


def _m_ldind(size):
    def parse(p: _Line) -> List[Insn]:
        _, src = p.reg()
        p.expect(",")
        return [_insn(Class.LD | size | Mode.IND, 0, src, 0, p.number(_IMM32, "offset"))]
    return parse


def _m_asc(p: _Line) -> List[Insn]:
    _, dst = p.reg()
    p.expect(",")
    _, src = p.reg()
    p.expect(",")
    to_as = p.number((0, 0xffff), "address space")
    p.expect(",")
    from_as = p.number((0, 0xffff), "address space")
    return [_insn(Class.ALU64 | AluOp.MOV | Source.X, dst, src, isa.BPF_ADDR_SPACE_CAST,
                  (to_as << 16) | from_as)]


# "lock" operations: (name, 32-bit?) -> imm
_LOCK_OPS = {}
for _op, _n in _ATOMIC_NAMES.items():
    _LOCK_OPS[_n] = _op
    _LOCK_OPS["fetch " + _n] = _op | isa.BPF_FETCH
_LOCK_OPS.update({"xchg": AtomicOp.XCHG, "cmpxchg": AtomicOp.CMPXCHG})
_LOCK_NAMES = {v: k for k, v in _LOCK_OPS.items()}


def _m_lock(p: _Line) -> List[Insn]:
    col = p.here()
    name = p.ident("an atomic operation (add, or, and, xor, fetch ..., xchg, cmpxchg)")
    if name == "fetch":
        name = "fetch " + p.ident("add, or, and or xor")
    size = Size.DW
    if name.endswith("32"):
        name, size = name[:-2], Size.W
    if name not in _LOCK_OPS:
        raise p.error(f"unknown atomic operation {name!r}", col)
    return _m_stx(size, _LOCK_OPS[name])(p)


def _mnemonics() -> Dict[str, Callable[[_Line], List[Insn]]]:
    """Every mnemonic-syntax name, built from the opcode tables."""
    table: Dict[str, Callable[[_Line], List[Insn]]] = {}
    for cls, sfx in ((Class.ALU64, ""), (Class.ALU, "32")):
        for (op, off), name in _MALU.items():
            table[name + sfx] = _m_alu(cls, op, off)
        table["neg" + sfx] = _m_neg(cls)
        for bits in _MOVSX_BITS:
            if not (cls == Class.ALU and bits == 32):
                table[f"movsx{bits}{64 if cls == Class.ALU64 else 32}"] = _m_movsx(cls, bits)
    for w in _SWAP_WIDTHS:
        table[f"le{w}"] = _m_end(Class.ALU | isa.BPF_TO_LE, w)
        table[f"be{w}"] = _m_end(Class.ALU | isa.BPF_TO_BE, w)
        table[f"bswap{w}"] = table[f"swap{w}"] = _m_end(Class.ALU64 | isa.BPF_TO_LE, w)
    for cls, sfx in ((Class.JMP, ""), (Class.JMP32, "32")):
        for op, name in _MJMP.items():
            table[name + sfx] = _m_jmp(cls, op)
    table.update(ja=_m_ja, ja32=_m_ja32, gotol=_m_ja32, may_goto=_m_may_goto,
                 call=_call, callx=_m_callx, exit=_m_exit, lddw=_m_lddw, lock=_m_lock,
                 addr_space_cast=_m_asc)
    for size, s in _MSIZE.items():
        table["ldx" + s] = _m_ldx(size, Mode.MEM)
        table["st" + s] = _m_st(size)
        table["stx" + s] = _m_stx(size)
        table["ldacq" + s] = _m_ldacq(size)
        table["strel" + s] = _m_stx(size, AtomicOp.STORE_REL)
        if size != Size.DW:
            table["ldxs" + s] = _m_ldx(size, Mode.MEMSX)
            table["ldabs" + s] = _m_ldabs(size)
            table["ldind" + s] = _m_ldind(size)
    return table


_MNEMONICS = _mnemonics()


def _statement(p: _Line) -> List[Insn]:
    """Parse one statement (either syntax) at the cursor; the caller checks the end."""
    p.ws()
    word = p.peek_ident()
    if word == ".insn":
        p.ident()
        return _raw(p)
    insns = _k_statement(p, word)
    if insns is not None:
        return insns
    if word is None:
        raise p.error(f"expected an instruction, found {p.found()}")
    handler = _MNEMONICS.get(word.lower())
    if handler is None:
        raise p.error(f"unknown instruction {word!r}")
    p.ident()
    return handler(p)


# --- the assembler -----------------------------------------------------------

def _strip_comment(line: str) -> int:
    m = _COMMENT.search(line)
    return m.start() if m else len(line)


def assemble(text: str) -> List[Insn]:
    """Assemble source text (kernel or mnemonic syntax, mixable) into slots.

    ``lddw`` gives two slots. Labels are ``name:`` at the start of a line; a
    jump to ``exit`` with no ``exit:`` label goes to the first ``exit``
    instruction (the conformance corpus relies on this). Raises
    :class:`userbpf.errors.AsmError` naming the line and column.

    >>> assemble("r0 = 1 ll\\nif r0 > 0 goto done\\nr0 = 0\\ndone: exit")[2]
    Insn(code=37, dst=0, src=0, off=1, imm=0)
    """
    slots: List[Insn] = []
    pending: List[Tuple[int, _Line]] = []            # (first slot, line) with fixups
    labels: Dict[str, Tuple[int, int]] = {}           # name -> (slot, line number)
    first_exit: Optional[int] = None
    for lineno, line in enumerate(text.splitlines(), 1):
        end = _strip_comment(line)
        pos = 0
        m = _LOG_PREFIX.match(line, 0, end)
        if m:
            pos = m.end()
        while True:
            m = _LABEL_DEF.match(line, pos, end)
            if not m:
                break
            name = m.group(1)
            if name in labels:
                raise AsmError(f"label {name!r} is already defined on line "
                               f"{labels[name][1]}", lineno, m.start(1) + 1, line.rstrip())
            labels[name] = (len(slots), lineno)
            pos = m.end()
        p = _Line(line, lineno, pos, end)
        if p.at_end():
            continue
        insns = _statement(p)
        p.done()
        if first_exit is None and insns[0] == isa.BPF_EXIT_INSN():
            first_exit = len(slots)
        if p.fixups:
            pending.append((len(slots), p))
        slots.extend(insns)
    def lookup(name: str) -> Optional[int]:
        if name in labels:
            return labels[name][0]
        return first_exit if name == "exit" else None

    for start, p in pending:
        _resolve(slots, start, p, lookup)
    return slots


def _resolve(slots: List[Insn], start: int, p: _Line,
             lookup: Callable[[str], Optional[int]]) -> None:
    """Patch the label references of the statement at slot ``start``."""
    for fx in p.fixups:
        i = start + fx.slot
        target = lookup(fx.label)
        if target is None:
            if fx.helper is not None:
                slots[i] = isa.BPF_EMIT_CALL(fx.helper)
                continue
            what = "label or helper" if slots[i] == isa.BPF_CALL_REL(0) else "label"
            raise p.error(f"undefined {what} {fx.label!r}", fx.column - 1)
        rel = target - (start + 1)
        lo, hi = _S16 if fx.bits == 16 else _S32
        if not lo <= rel <= hi:
            raise p.error(f"label {fx.label!r} is {rel} slots away, out of range "
                          f"for a {fx.bits}-bit offset", fx.column - 1)
        slots[i] = slots[i]._replace(**{fx.field: rel})


# --- the disassembler -----------------------------------------------------------

Code = Union[bytes, bytearray, memoryview, Sequence[Insn]]


def _slots_of(code: Code) -> List[Insn]:
    if isinstance(code, (bytes, bytearray, memoryview)):
        data = bytes(code)
        if data[:4] == isa.ELF_MAGIC:
            isa.decode(data)            # raises the helpful ELF message
        if len(data) % isa.INSN_SIZE:
            raise EncodingError(f"bytecode length {len(data)} is not a multiple of "
                                f"{isa.INSN_SIZE} bytes")
        # Not isa.decode: a disassembler shows odd encodings rather than refusing them.
        return [Insn.decode(data, o) for o in range(0, len(data), isa.INSN_SIZE)]
    return isa.flatten(code)


def _rel(v: int) -> str:
    return f"{v:+d}"


class _Fmt:
    """Spellings that differ between the two syntaxes."""

    def __init__(self, syntax: str):
        if syntax not in ("kernel", "mnemonic"):
            raise ValueError(f"syntax must be 'kernel' or 'mnemonic', not {syntax!r}")
        self.kernel = syntax == "kernel"

    def r(self, n: int, letter: str = "r") -> str:
        return f"{letter}{n}" if self.kernel else f"%r{n}"

    def mem(self, reg: int, off: int) -> str:
        return f"(r{reg} {off:+d})" if self.kernel else f"[%r{reg}{off:+d}]"


def _jump_target(idx: int, rel: int, label_of) -> str:
    name = label_of(idx + 1 + rel) if label_of else None
    return name if name else _rel(rel)


def _pseudo_text(insns: Sequence[Insn], idx: int, label_of) -> Optional[str]:
    first, second = insns[idx], insns[idx + 1]
    src = first.src
    if src in _PSEUDO_MAP:
        kind, value = _PSEUDO_MAP[src]
        text = f"map[{kind}:{first.imm}]"
        if value:
            text += f"[0]{second.imm:+d}"
        return text
    if src == Pseudo.BTF_ID:
        return f"btf_id[{first.imm}]"
    if src == Pseudo.FUNC:
        name = label_of(idx + 1 + first.imm) if label_of else None
        return f"func[{name or 'pc' + _rel(first.imm)}]"
    return None


def _format(insns: Sequence[Insn], idx: int, f: _Fmt, label_of) -> Optional[str]:
    """The readable text of the slot at idx (two for lddw), or None."""
    x = insns[idx]
    cls, code = x.cls, x.code
    R = f.r
    if cls in _ALU_CLASSES:
        op, is_x = isa.BPF_OP(code), isa.BPF_SRC(code) == Source.X
        w64 = cls == Class.ALU64
        letter, sfx = ("r", "") if w64 else ("w", "32")
        if op == AluOp.END:
            kind = "bswap" if w64 else ("be" if is_x else "le")
            if f.kernel:
                return f"r{x.dst} = {kind}{x.imm} r{x.dst}"
            return f"{kind}{x.imm} %r{x.dst}"
        if op == AluOp.NEG:
            return f"{letter}{x.dst} = -{letter}{x.dst}" if f.kernel else f"neg{sfx} %r{x.dst}"
        if op == AluOp.MOV and is_x and x.off:
            if x.off == isa.BPF_ADDR_SPACE_CAST and w64:
                a, b = (x.imm & 0xffffffff) >> 16, x.imm & 0xffff
                if f.kernel:
                    return f"r{x.dst} = addr_space_cast(r{x.src}, {a}, {b})"
                return f"addr_space_cast %r{x.dst}, %r{x.src}, {a}, {b}"
            if f.kernel:
                return f"{letter}{x.dst} = (s{x.off}){letter}{x.src}"
            return f"movsx{x.off}{64 if w64 else 32} %r{x.dst}, %r{x.src}"
        operand = R(x.src, letter) if is_x else str(x.imm)
        if f.kernel:
            return f"{letter}{x.dst} {_KALU[op, x.off]} {operand}"
        return f"{_MALU[op, x.off]}{sfx} %r{x.dst}, {operand}"
    if cls in _JMP_CLASSES:
        op = isa.BPF_OP(code)
        if op == JmpOp.EXIT:
            return "exit"
        if op == JmpOp.JA:
            if cls == Class.JMP32:
                t = _jump_target(idx, x.imm, label_of)
                return f"gotol {t}" if f.kernel else f"ja32 {t}"
            t = _jump_target(idx, x.off, label_of)
            return f"goto {t}" if f.kernel else f"ja {t}"
        if op == JmpOp.JCOND:
            return f"may_goto {_jump_target(idx, x.off, label_of)}"
        if op == JmpOp.CALL:
            if isa.BPF_SRC(code) == Source.X:
                return f"callx r{x.dst}" if f.kernel else f"call %r{x.dst}"
            if x.src == PseudoCall.CALL:
                name = label_of(idx + 1 + x.imm) if label_of else None
                if name:
                    return f"call local {name}"
                return f"call pc{_rel(x.imm)}" if f.kernel else f"call local {_rel(x.imm)}"
            if x.src == PseudoCall.KFUNC_CALL:
                return f"call kfunc {x.imm}"
            name = helper_name(x.imm) if f.kernel else None
            return f"call {name or x.imm}"
        letter, sfx = ("r", "") if cls == Class.JMP else ("w", "32")
        t = _jump_target(idx, x.off, label_of)
        is_x = isa.BPF_SRC(code) == Source.X
        if f.kernel:
            operand = f"{letter}{x.src}" if is_x else f"{x.imm & 0xffffffff:#x}"
            return f"if {letter}{x.dst} {_KJMP[op]} {operand} goto {t}"
        operand = f"%r{x.src}" if is_x else str(x.imm)
        return f"{_MJMP[op]}{sfx} %r{x.dst}, {operand}, {t}"
    size, mode = isa.BPF_SIZE(code), isa.BPF_MODE(code)
    if cls == Class.LDX:
        if f.kernel:
            t = (_KSIZE_SX if mode == Mode.MEMSX else _KSIZE)[size]
            return f"r{x.dst} = *({t} *){f.mem(x.src, x.off)}"
        s = ("ldxs" if mode == Mode.MEMSX else "ldx") + _MSIZE[size]
        return f"{s} %r{x.dst}, {f.mem(x.src, x.off)}"
    if cls == Class.ST:
        if f.kernel:
            return f"*({_KSIZE[size]} *){f.mem(x.dst, x.off)} = {x.imm}"
        return f"st{_MSIZE[size]} {f.mem(x.dst, x.off)}, {x.imm}"
    if cls == Class.STX:
        if mode == Mode.MEM:
            if f.kernel:
                return f"*({_KSIZE[size]} *){f.mem(x.dst, x.off)} = r{x.src}"
            return f"stx{_MSIZE[size]} {f.mem(x.dst, x.off)}, %r{x.src}"
        imm = x.imm
        if imm == AtomicOp.LOAD_ACQ:
            if f.kernel:
                return f"r{x.dst} = load_acquire(({_KSIZE[size]} *){f.mem(x.src, x.off)})"
            return f"ldacq{_MSIZE[size]} %r{x.dst}, {f.mem(x.src, x.off)}"
        if imm == AtomicOp.STORE_REL:
            if f.kernel:
                return f"store_release(({_KSIZE[size]} *){f.mem(x.dst, x.off)}, r{x.src})"
            return f"strel{_MSIZE[size]} {f.mem(x.dst, x.off)}, %r{x.src}"
        w64 = size == Size.DW
        if not f.kernel:
            return f"lock {_LOCK_NAMES[imm]}{'' if w64 else '32'} {f.mem(x.dst, x.off)}, %r{x.src}"
        t, letter = _KSIZE[size], "r" if w64 else "w"
        a = f.mem(x.dst, x.off)
        if imm in _ATOMIC_RMW:
            return f"lock *({t} *){a} {_ATOMIC_RMW[imm]} r{x.src}"
        if imm == AtomicOp.XCHG:
            fn = "xchg_64" if w64 else "xchg32_32"
            return f"{letter}{x.src} = {fn}({a[1:-1]}, {letter}{x.src})"
        if imm == AtomicOp.CMPXCHG:
            fn = "cmpxchg_64" if w64 else "cmpxchg32_32"
            return f"{letter}0 = {fn}({a[1:-1]}, {letter}0, {letter}{x.src})"
        name = _ATOMIC_NAMES[imm & ~isa.BPF_FETCH]
        return f"{letter}{x.src} = atomic_fetch_{name}(({t} *){a}, {letter}{x.src})"
    # class LD
    if mode == Mode.IMM:
        if x.src == Pseudo.NONE:
            value = f"{isa.imm64(x, insns[idx + 1]):#x}"
        else:
            value = _pseudo_text(insns, idx, label_of)
        return f"r{x.dst} = {value} ll" if f.kernel else f"lddw %r{x.dst}, {value}"
    if f.kernel:
        where = f"r{x.src} + {x.imm}" if mode == Mode.IND else str(x.imm)
        return f"r0 = *({_KSIZE[size]} *)skb[{where}]"
    if mode == Mode.IND:
        return f"ldind{_MSIZE[size]} %r{x.src}, {x.imm}"
    return f"ldabs{_MSIZE[size]} {x.imm}"


def _raw_text(x: Insn) -> str:
    return f".insn {x.code:#04x}, {x.dst}, {x.src}, {x.off}, {x.imm}"


def _width(insns: Sequence[Insn], idx: int) -> int:
    """Slots the text at idx stands for: 2 for a well-formed lddw."""
    x = insns[idx]
    if isa.is_wide(x) and idx + 1 < len(insns) and isa.check_fields(insns, idx) is None:
        return 2
    return 1


def _text(insns: Sequence[Insn], idx: int, f: _Fmt, label_of=None,
          labels: Optional[Dict[str, int]] = None) -> str:
    """Readable text when it assembles back to exactly these slots, else raw."""
    n = _width(insns, idx)
    x = insns[idx]
    if isa.is_wide(x) and n == 1:
        return _raw_text(x)
    try:
        text = _format(insns, idx, f, label_of)
    except (KeyError, ValueError, IndexError):
        text = None
    if text is not None and _reassembles(text, insns[idx:idx + n], idx, labels or {}):
        return text
    return _raw_text(x)


def _reassembles(text: str, want: Sequence[Insn], idx: int, labels: Dict[str, int]) -> bool:
    try:
        p = _Line(text, 1, 0, len(text))
        got = _statement(p)
        p.done()
    except AsmError:
        return False
    try:
        _resolve(got, 0, p, lambda name: None if name not in labels else labels[name] - idx)
    except AsmError:
        return False
    return list(got) == list(want)


def format_insn(insns: Sequence[Insn], idx: int, syntax: str = "kernel") -> str:
    """The text of the instruction at slot ``idx`` (as in an error message).

    >>> format_insn([Insn(0x79, 0, 1, 64, 0)], 0)
    'r0 = *(u64 *)(r1 +64)'
    """
    return _text(insns, idx, _Fmt(syntax))


def disassemble(code: Code, syntax: str = "kernel", labels: bool = False) -> str:
    """One instruction per line (no trailing newline).

    ``code`` is bytecode or a list of :class:`Insn`; ``syntax`` is
    ``"kernel"`` or ``"mnemonic"``. With ``labels=True`` every jump and call
    target inside the program gets a label line (``L5:``) and is referred
    to by name. Slots with no readable form that reassembles exactly print
    as ``.insn CODE, DST, SRC, OFF, IMM``.

    >>> print(disassemble(bytes.fromhex("b700000007000000 9500000000000000")))
    r0 = 7
    exit
    """
    insns = _slots_of(code)
    f = _Fmt(syntax)
    starts = []
    i = 0
    while i < len(insns):
        starts.append(i)
        i += _width(insns, i)
    names: Dict[int, str] = {}
    if labels:
        start_set = set(starts)
        for i in starts:
            t = _target_of(insns, i)
            if t is not None and t in start_set:
                names[t] = f"L{t}"
    label_of = names.get if labels else None
    by_name = {v: k for k, v in names.items()}
    lines = []
    for i in starts:
        if i in names:
            lines.append(f"{names[i]}:")
        lines.append(_text(insns, i, f, label_of, by_name))
    return "\n".join(lines)


def _target_of(insns: Sequence[Insn], idx: int) -> Optional[int]:
    """The slot a jump, local call or pseudo-func lddw at idx refers to."""
    x = insns[idx]
    if x.cls in _JMP_CLASSES:
        op = isa.BPF_OP(x.code)
        if op in (JmpOp.EXIT,):
            return None
        if op == JmpOp.CALL:
            if x.src == PseudoCall.CALL and isa.BPF_SRC(x.code) == Source.K:
                return idx + 1 + x.imm
            return None
        if op == JmpOp.JA and x.cls == Class.JMP32:
            return idx + 1 + x.imm
        return idx + 1 + x.off
    if isa.is_wide(x) and x.src == Pseudo.FUNC:
        return idx + 1 + x.imm
    return None
