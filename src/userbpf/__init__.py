"""userbpf: a user-space eBPF runtime.

>>> import userbpf
>>> userbpf.Program("r0 = 42\\nexit").run()
42
"""
from __future__ import annotations

from . import isa
from .errors import (AsmError, BudgetExceeded, CallDepthError, EncodingError,
                     HelperError, MemoryAccessError, ProgramError, UserBPFError,
                     VMError)
from .isa import Insn, decode, encode
from ._vm import c_helper
from .program import Program
from .uapi import AttachType, Cmd, MapType, ProgType
from .kernel import Kernel, bpf
from .kernel.progs import LoadedProgram, load_program
from .map import Map
from .abi import bpf_attr
from .ringbuf import RingBuffer
from .perfbuf import PerfBuffer
from .tracepipe import TracePipe

__all__ = [
    "AsmError", "BudgetExceeded", "c_helper", "CallDepthError", "EncodingError", "HelperError",
    "Insn", "MemoryAccessError", "Program", "ProgramError", "UserBPFError", "VMError",
    "decode", "encode", "isa", "Kernel", "bpf", "Map", "bpf_attr", "Cmd", "MapType", "ProgType", "AttachType",
    "load_program", "LoadedProgram", "RingBuffer", "PerfBuffer", "TracePipe",
]
__version__ = "0.1.0"
