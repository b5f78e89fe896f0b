"""Exceptions raised by userbpf.

Each also subclasses the builtin a caller would reach for (``ValueError`` for
bad input, ``RuntimeError`` for a failed run), so generic handlers work.
"""
from __future__ import annotations

from typing import Optional


class UserBPFError(Exception):
    """Base class of every userbpf exception."""


class EncodingError(UserBPFError, ValueError):
    """Bytes that are not valid eBPF bytecode, or an instruction that cannot be encoded."""


class AsmError(UserBPFError, ValueError):
    """Assembler input that does not parse: carries the line and column.

    >>> str(AsmError("expected a register", line=3, column=5, text="mov %r99, 1"))
    '3:5: expected a register\\n    mov %r99, 1\\n        ^'
    """

    def __init__(self, msg: str, line: int = 0, column: int = 0, text: str = ""):
        self.msg, self.line, self.column, self.text = msg, line, column, text
        where = f"{line}:{column}: " if line else ""
        caret = f"\n    {text}\n    {' ' * max(column - 1, 0)}^" if text else ""
        super().__init__(f"{where}{msg}{caret}")


class ProgramError(UserBPFError, ValueError):
    """A program the interpreter refuses to load (bad opcode, jump out of range...).

    ``pc`` is the instruction slot index, as in the kernel's log; ``errno``
    is what the kernel's PROG_LOAD would fail with.
    """

    def __init__(self, msg: str, pc: Optional[int] = None, errno: int = 22):
        self.msg, self.pc, self.errno = msg, pc, errno
        super().__init__(msg if pc is None else f"insn {pc}: {msg}")


class VMError(UserBPFError, RuntimeError):
    """A run stopped by the interpreter's runtime checks."""

    def __init__(self, msg: str, pc: Optional[int] = None, insn: str = ""):
        self.msg, self.pc, self.insn = msg, pc, insn
        where = "" if pc is None else f"pc {pc}" + (f" ({insn})" if insn else "") + ": "
        super().__init__(where + msg)


class MemoryAccessError(VMError):
    """A load, store or atomic outside every region the run may touch."""

    def __init__(self, msg: str, pc: int, insn: str, addr: int, size: int, write: bool):
        self.addr, self.size, self.write = addr, size, write
        super().__init__(msg, pc, insn)


class BudgetExceeded(VMError):
    """The run executed more instructions than its budget allows."""


class CallDepthError(VMError):
    """bpf-to-bpf calls nested deeper than the 8 frames the kernel allows."""


class HelperError(VMError):
    """A helper call failed: unknown id, or a Python helper raised."""
