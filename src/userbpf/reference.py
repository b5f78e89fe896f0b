"""A deliberately simple pure-Python eBPF interpreter: the executable specification.

The Cython interpreter (:mod:`userbpf._vm`) is fast and therefore clever; this
module is slow and therefore obvious. Tests run the same programs on both and
compare r0, the registers and memory. Every operation is a small table entry
(op -> lambda) so that a reader can check it against the kernel's
``kernel/bpf/core.c`` semantics line by line:

- registers are Python ints kept in ``[0, 2**64)``; 32-bit operations work on
  the low halves and zero the upper half of the result;
- ``x / 0 == 0`` and ``x % 0 == x`` (signed and unsigned); ``INT_MIN / -1 ==
  INT_MIN`` and ``INT_MIN % -1 == 0``; shift counts are masked to the width;
- the stack is 8 frames x 512 bytes in one region; r10 of frame ``d`` points
  ``d * 512`` bytes below its top, r6-r9 and r10 are saved across bpf-to-bpf
  calls and a ninth frame is refused;
- memory is a table of regions (the stack and the ``mem`` buffer at fixed
  fake addresses); any access outside them raises :class:`ReferenceFault`;
- ``LD_ABS``/``LD_IND`` read ``mem`` big-endian (``SKF_NET_OFF + k`` is ``mem[k]``); out of range ends the run
  with r0 = 0;
- ``may_goto`` falls through ``MAX_LOOPS`` times per frame, then jumps.

It does not check a program's structure (use :class:`userbpf.Program` for
that) and does not resolve map references: run it on programs the
interpreter accepts.

    >>> from userbpf.isa import *
    >>> res = run([BPF_LDX_MEM(BPF_B, BPF_REG_0, BPF_REG_1, 1),
    ...            BPF_ALU64_IMM(BPF_MUL, BPF_REG_0, 3),
    ...            BPF_STX_MEM(BPF_B, BPF_REG_1, BPF_REG_0, 0),
    ...            BPF_EXIT_INSN()], mem=b"\\x00\\x07")
    >>> res.r0, res.mem
    (21, b'\\x15\\x07')
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from . import isa
from .isa import AluOp, AtomicOp, Class, Insn, JmpOp, Mode, Pseudo, PseudoCall, Size, Source

__all__ = ["run", "Result", "ReferenceFault", "STACK_ADDR", "MEM_ADDR", "MAX_LOOPS"]

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
FRAME_SIZE = isa.STACK_SIZE                 # 512
MAX_FRAMES = isa.MAX_CALL_FRAMES            # 8
MAX_LOOPS = 8 * 1024 * 1024                 # BPF_MAX_LOOPS: may_goto passes per frame
SKF_NET_OFF = -0x100000                     # classic BPF: LD_ABS/LD_IND at network header + k
STACK_ADDR = 0x1000_0000                    # where the (fake) stack region starts
MEM_ADDR = 0x2000_0000                      # where the (fake) mem buffer starts
DEFAULT_BUDGET = 10_000_000


class ReferenceFault(Exception):
    """A run stopped by a runtime check.

    ``kind`` is one of ``"mem"`` (outside every region, or a store to a
    read-only one), ``"align"`` (misaligned atomic), ``"budget"``, ``"depth"``
    (a ninth frame), ``"helper"`` (unknown helper id, or a helper raised: the
    exception is chained) and ``"invalid"`` (an instruction the reference
    cannot run, or falling off the end). ``pc`` is the slot index.
    """

    def __init__(self, kind: str, pc: int, msg: str, addr: int = 0, size: int = 0,
                 write: bool = False):
        self.kind, self.pc, self.addr, self.size, self.write = kind, pc, addr, size, write
        super().__init__(f"pc {pc}: {kind}: {msg}")


class Result(NamedTuple):
    """What a run left behind."""
    r0: int
    mem: bytes            # the mem buffer after the run (b"" without one)
    regs: Tuple[int, ...]  # r0..r10 at exit
    stack: bytes          # all 8 frames, lowest address first
    insn_count: int       # instructions executed (lddw counts once)


# --- helpers for widths and signs -------------------------------------------

def signed(v: int, bits: int) -> int:
    """Reinterpret the low ``bits`` of v as a two's complement number."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _trunc_div(a: int, b: int) -> int:
    """C division: rounds toward zero (Python's // rounds down)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _bswap(v: int, nbytes: int) -> int:
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


# --- operation tables --------------------------------------------------------
# ALU: (op, signed) -> f(dst, src, bits) on unsigned operands of `bits` width;
# the caller masks the result to the width (that is what zero-extends ALU32).

ALU: Dict[Tuple[int, bool], Callable[[int, int, int], int]] = {
    (AluOp.ADD, False): lambda a, b, w: a + b,
    (AluOp.SUB, False): lambda a, b, w: a - b,
    (AluOp.MUL, False): lambda a, b, w: a * b,
    (AluOp.DIV, False): lambda a, b, w: a // b if b else 0,
    (AluOp.DIV, True): lambda a, b, w: _trunc_div(signed(a, w), signed(b, w)) if b else 0,
    (AluOp.MOD, False): lambda a, b, w: a % b if b else a,
    (AluOp.MOD, True): lambda a, b, w: (signed(a, w) - signed(b, w) * _trunc_div(
        signed(a, w), signed(b, w))) if b else a,
    (AluOp.OR, False): lambda a, b, w: a | b,
    (AluOp.AND, False): lambda a, b, w: a & b,
    (AluOp.XOR, False): lambda a, b, w: a ^ b,
    (AluOp.LSH, False): lambda a, b, w: a << (b & (w - 1)),
    (AluOp.RSH, False): lambda a, b, w: a >> (b & (w - 1)),
    (AluOp.ARSH, False): lambda a, b, w: signed(a, w) >> (b & (w - 1)),
    (AluOp.MOV, False): lambda a, b, w: b,
    (AluOp.NEG, False): lambda a, b, w: -a,
}

# Conditional jumps: op -> (compare signed?, predicate).
CONDITIONS: Dict[int, Tuple[bool, Callable[[int, int], bool]]] = {
    JmpOp.JEQ: (False, lambda a, b: a == b),
    JmpOp.JNE: (False, lambda a, b: a != b),
    JmpOp.JGT: (False, lambda a, b: a > b),
    JmpOp.JGE: (False, lambda a, b: a >= b),
    JmpOp.JLT: (False, lambda a, b: a < b),
    JmpOp.JLE: (False, lambda a, b: a <= b),
    JmpOp.JSET: (False, lambda a, b: (a & b) != 0),
    JmpOp.JSGT: (True, lambda a, b: a > b),
    JmpOp.JSGE: (True, lambda a, b: a >= b),
    JmpOp.JSLT: (True, lambda a, b: a < b),
    JmpOp.JSLE: (True, lambda a, b: a <= b),
}

# Atomic read-modify-write: imm without BPF_FETCH -> f(old, operand).
ATOMIC_RMW: Dict[int, Callable[[int, int], int]] = {
    AtomicOp.ADD: lambda old, v: old + v,
    AtomicOp.OR: lambda old, v: old | v,
    AtomicOp.AND: lambda old, v: old & v,
    AtomicOp.XOR: lambda old, v: old ^ v,
}

SIZE_BYTES = {Size.B: 1, Size.H: 2, Size.W: 4, Size.DW: 8}


# --- memory ------------------------------------------------------------------

class Region:
    def __init__(self, start: int, data: bytearray, writable: bool = True):
        self.start, self.data, self.writable = start, data, writable

    def contains(self, addr: int, size: int) -> bool:
        return self.start <= addr and addr + size <= self.start + len(self.data)


class Memory:
    """The regions a run may touch; everything else faults."""

    def __init__(self, regions: List[Region]):
        self.regions = regions

    def _region(self, pc: int, addr: int, size: int, write: bool) -> Region:
        for r in self.regions:
            if r.contains(addr, size) and (r.writable or not write):
                return r
        what = "write" if write else "read"
        raise ReferenceFault("mem", pc, f"invalid {what} of {size} bytes at {addr:#x}",
                             addr, size, write)

    def load(self, pc: int, addr: int, size: int) -> int:
        r = self._region(pc, addr, size, False)
        o = addr - r.start
        return int.from_bytes(r.data[o:o + size], "little")

    def store(self, pc: int, addr: int, size: int, value: int) -> None:
        r = self._region(pc, addr, size, True)
        o = addr - r.start
        r.data[o:o + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


# --- the interpreter ---------------------------------------------------------

class Machine:
    """One run's state. :func:`run` is the convenient entry point."""

    def __init__(self, insns: List[Insn], mem: Optional[bytes], helpers: Mapping[int, Callable],
                 budget: int):
        self.insns = insns
        self.helpers = dict(helpers)
        self.budget = budget
        self.stack = bytearray(FRAME_SIZE * MAX_FRAMES)
        self.mem = bytearray(mem) if mem is not None else None
        regions = [Region(STACK_ADDR, self.stack)]
        if self.mem is not None:
            regions.append(Region(MEM_ADDR, self.mem))
        self.memory = Memory(regions)
        self.reg = [0] * 11
        if self.mem is not None:
            self.reg[1], self.reg[2] = MEM_ADDR, len(self.mem)
        self.reg[10] = STACK_ADDR + len(self.stack)
        self.frames: List[Tuple[List[int], int, int]] = []   # (r6-r9, r10, return pc)
        self.loops = [MAX_LOOPS]                              # may_goto budget per frame
        self.pc = 0
        self.count = 0
        self.done = False
        self.handlers = {
            Class.ALU: self.alu, Class.ALU64: self.alu,
            Class.JMP: self.jmp, Class.JMP32: self.jmp,
            Class.LD: self.ld, Class.LDX: self.ldx, Class.ST: self.st, Class.STX: self.stx,
        }

    def run(self) -> int:
        while not self.done:
            if self.pc >= len(self.insns):
                raise ReferenceFault("invalid", self.pc, "fell off the end of the program")
            if self.budget and self.count >= self.budget:
                raise ReferenceFault("budget", self.pc, f"budget of {self.budget} exhausted")
            insn = self.insns[self.pc]
            self.count += 1
            nxt = self.handlers[insn.code & 0x07](insn)
            self.pc = self.pc + 1 if nxt is None else nxt
        return self.reg[0]

    # -- pieces -------------------------------------------------------------

    def fault(self, msg: str) -> ReferenceFault:
        return ReferenceFault("invalid", self.pc, msg)

    def set(self, r: int, v: int) -> None:
        self.reg[r] = v & MASK64

    def jump(self, rel: int) -> int:
        return self.pc + rel + 1

    # -- ALU / ALU64 ----------------------------------------------------------

    def alu(self, x: Insn) -> None:
        bits = 64 if x.code & 0x07 == Class.ALU64 else 32
        mask = (1 << bits) - 1
        op, src_x = x.code & 0xf0, x.code & 0x08
        a = self.reg[x.dst] & mask
        if op == AluOp.END:
            self.set(x.dst, self.endian(bits, src_x, x.imm, self.reg[x.dst]))
            return None
        b = (self.reg[x.src] if src_x else x.imm) & mask     # imm sign-extends to 64
        if op == AluOp.MOV and src_x and x.off in (8, 16, 32):   # movsx
            self.set(x.dst, signed(self.reg[x.src], x.off) & mask)
            return None
        key = (op, op in (AluOp.DIV, AluOp.MOD) and x.off == 1)
        if key not in ALU:
            raise self.fault(f"unknown ALU operation {op:#x}")
        self.set(x.dst, ALU[key](a, b, bits) & mask)
        return None

    @staticmethod
    def endian(bits: int, src_x: int, width: int, v: int) -> int:
        """ALU END to/from little endian truncates (this host is little-endian);
        to/from big endian and ALU64 bswap swap the low ``width`` bits."""
        v &= (1 << width) - 1
        if bits == 32 and src_x == Source.K:
            return v
        return _bswap(v, width // 8)

    # -- JMP / JMP32 ----------------------------------------------------------

    def jmp(self, x: Insn) -> Optional[int]:
        bits = 64 if x.code & 0x07 == Class.JMP else 32
        op, src_x = x.code & 0xf0, x.code & 0x08
        if op == JmpOp.JA:
            return self.jump(x.off if bits == 64 else x.imm)
        if op == JmpOp.JCOND:                   # may_goto
            if self.loops[-1]:
                self.loops[-1] -= 1
                return None
            return self.jump(x.off)
        if op == JmpOp.CALL:
            return self.call(x)
        if op == JmpOp.EXIT:
            return self.exit()
        if op not in CONDITIONS:
            raise self.fault(f"unknown jump operation {op:#x}")
        sign, pred = CONDITIONS[op]
        a = self.reg[x.dst]
        b = self.reg[x.src] if src_x else x.imm & MASK64
        a, b = (signed(a, bits), signed(b, bits)) if sign else (a & ((1 << bits) - 1),
                                                               b & ((1 << bits) - 1))
        return self.jump(x.off) if pred(a, b) else None

    def call(self, x: Insn) -> Optional[int]:
        if x.code & 0x08:                       # callx: helper id in a register
            return self.call_helper(self.reg[x.dst])
        if x.src == PseudoCall.HELPER:
            return self.call_helper(x.imm)
        if x.src == PseudoCall.CALL:
            if len(self.frames) + 1 >= MAX_FRAMES:
                raise ReferenceFault("depth", self.pc, f"more than {MAX_FRAMES} frames")
            self.frames.append((self.reg[6:10], self.reg[10], self.pc + 1))
            self.loops.append(MAX_LOOPS)
            self.reg[10] -= FRAME_SIZE
            return self.jump(x.imm)
        raise self.fault("kfunc calls are not supported")

    def call_helper(self, hid: int) -> None:
        fn = self.helpers.get(hid)
        if fn is None:
            raise ReferenceFault("helper", self.pc, f"unknown helper {hid}", hid)
        try:
            res = fn(*self.reg[1:6])
        except Exception as e:
            raise ReferenceFault("helper", self.pc, f"helper {hid} raised {e!r}") from e
        self.set(0, res or 0)
        return None

    def exit(self) -> Optional[int]:
        if not self.frames:
            self.done = True
            return None
        saved, fp, ret = self.frames.pop()
        self.loops.pop()
        self.reg[6:10], self.reg[10] = saved, fp
        return ret

    # -- loads and stores -----------------------------------------------------

    def ld(self, x: Insn) -> Optional[int]:
        mode, size = x.code & 0xe0, SIZE_BYTES[x.code & 0x18]
        if mode == Mode.IMM:                    # lddw: two slots, counts once
            if x.src != Pseudo.NONE:
                raise self.fault("lddw with a pseudo source needs the loader")
            self.set(x.dst, isa.imm64(x, self.insns[self.pc + 1]))
            return self.pc + 2
        if mode in (Mode.ABS, Mode.IND):        # legacy packet loads, big-endian
            off = x.imm if mode == Mode.ABS else signed(self.reg[x.src] + x.imm, 32)
            pkt = self.mem if self.mem is not None else b""
            if SKF_NET_OFF <= off < 0:          # "network header + k": mem starts there
                off -= SKF_NET_OFF
            if off < 0 or off + size > len(pkt):
                self.reg[0] = 0                 # the kernel ends the program with 0
                self.done = True
                return None
            self.reg[0] = int.from_bytes(pkt[off:off + size], "big")
            return None
        raise self.fault(f"unknown LD mode {mode:#x}")

    def ldx(self, x: Insn) -> None:
        size = SIZE_BYTES[x.code & 0x18]
        v = self.memory.load(self.pc, (self.reg[x.src] + x.off) & MASK64, size)
        if x.code & 0xe0 == Mode.MEMSX:
            v = signed(v, 8 * size)
        self.set(x.dst, v)
        return None

    def st(self, x: Insn) -> None:
        size = SIZE_BYTES[x.code & 0x18]
        self.memory.store(self.pc, (self.reg[x.dst] + x.off) & MASK64, size, x.imm)
        return None

    def stx(self, x: Insn) -> None:
        size = SIZE_BYTES[x.code & 0x18]
        if x.code & 0xe0 == Mode.ATOMIC:
            return self.atomic(x, size)
        self.memory.store(self.pc, (self.reg[x.dst] + x.off) & MASK64, size, self.reg[x.src])
        return None

    def atomic(self, x: Insn, size: int) -> None:
        if x.imm == AtomicOp.LOAD_ACQ:
            addr = (self.reg[x.src] + x.off) & MASK64
            self.check_atomic(addr, size, False)
            self.set(x.dst, self.memory.load(self.pc, addr, size))
            return None
        addr = (self.reg[x.dst] + x.off) & MASK64
        self.check_atomic(addr, size, True)
        if x.imm == AtomicOp.STORE_REL:
            self.memory.store(self.pc, addr, size, self.reg[x.src])
            return None
        mask = (1 << (8 * size)) - 1
        old = self.memory.load(self.pc, addr, size)
        operand = self.reg[x.src] & mask
        if x.imm == AtomicOp.CMPXCHG:
            if old == self.reg[0] & mask:
                self.memory.store(self.pc, addr, size, operand)
            self.set(0, old)
            return None
        if x.imm == AtomicOp.XCHG:
            self.memory.store(self.pc, addr, size, operand)
            self.set(x.src, old)
            return None
        rmw = ATOMIC_RMW.get(x.imm & ~isa.BPF_FETCH)
        if rmw is None:
            raise self.fault(f"unknown atomic operation {x.imm:#x}")
        self.memory.store(self.pc, addr, size, rmw(old, operand))
        if x.imm & isa.BPF_FETCH:
            self.set(x.src, old)
        return None

    def check_atomic(self, addr: int, size: int, write: bool) -> None:
        """Atomics must be inside a region and naturally aligned."""
        self.memory._region(self.pc, addr, size, write)
        if addr % size:
            raise ReferenceFault("align", self.pc, f"misaligned atomic at {addr:#x}",
                                 addr, size, write)


def run(code, mem: Optional[bytes] = None, helpers: Optional[Mapping[int, Callable]] = None,
        budget: int = DEFAULT_BUDGET) -> Result:
    """Run ``code`` (bytes or instructions) once and return a :class:`Result`.

    ``mem`` (bytes-like, copied) is the memory buffer: r1 is its address
    (:data:`MEM_ADDR`) and r2 its length. ``helpers`` maps helper ids to
    callables ``f(r1, ..., r5) -> int``. ``budget`` caps the instructions
    executed (0: no cap). Raises :class:`ReferenceFault` when a runtime
    check stops the run.

    >>> from userbpf.isa import BPF_MOV64_IMM, BPF_EMIT_CALL, BPF_EXIT_INSN
    >>> run([BPF_MOV64_IMM(1, 20), BPF_EMIT_CALL(1), BPF_EXIT_INSN()],
    ...     helpers={1: lambda a, b, c, d, e: a + 1}).r0
    21
    """
    if isinstance(code, (bytes, bytearray, memoryview)):
        insns = isa.decode(code)
    else:
        insns = isa.flatten(code)
    m = Machine(insns, mem, helpers or {}, budget)
    r0 = m.run()
    return Result(r0, bytes(m.mem) if m.mem is not None else b"", tuple(m.reg),
                  bytes(m.stack), m.count)
