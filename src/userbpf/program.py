"""Programs for the interpreter: structural checks and pre-decoding.

:class:`Program` takes bytecode, instructions or assembler text, checks its
structure (known opcodes, the kernel's reserved-field rules, jumps and calls
in range and never into the middle of an ``lddw``, r10 read-only, helpers
known) and pre-decodes it for the Cython interpreter. Until the verifier
exists, programs run unverified: the interpreter's runtime checks (every
memory access, call depth, an instruction budget) keep the host safe.
"""
from __future__ import annotations

import itertools
import struct
import threading
from typing import (Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import errno

from . import _maps, _vm, isa
from .errors import (BudgetExceeded, CallDepthError, HelperError, MemoryAccessError,
                     ProgramError, VMError)
from .isa import Class, Insn, JmpOp, Pseudo, PseudoCall

__all__ = ["Program", "BatchResult", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 100_000_000      # instructions per run; 0 = unlimited
_RECORD = struct.Struct(_vm.INSN_RECORD)
assert _RECORD.size == _vm.INSN_RECORD_SIZE

Code = Union[bytes, bytearray, memoryview, str, Iterable]
HelperImpl = Union[Callable[..., Optional[int]], object]   # callable or C capsule

# Writes to r10 are refused, as the kernel does: it keeps frame-pointer
# accesses provably inside the frame. Which register each op writes:
_WRITES_DST = frozenset(n for n in isa.VM_OP_NAMES if n.split("_")[0] in (
    "ADD64", "ADD32", "SUB64", "SUB32", "MUL64", "MUL32", "DIV64", "DIV32", "SDIV64",
    "SDIV32", "MOD64", "MOD32", "SMOD64", "SMOD32", "OR64", "OR32", "AND64", "AND32",
    "LSH64", "LSH32", "RSH64", "RSH32", "ARSH64", "ARSH32", "XOR64", "XOR32", "MOV64",
    "MOV32", "NEG64", "NEG32", "MOVSX8", "MOVSX16", "MOVSX32", "LE16", "LE32", "LE64",
    "BE16", "BE32", "BE64", "BSWAP16", "BSWAP32", "BSWAP64", "LDDW", "LDXB", "LDXH",
    "LDXW", "LDXDW", "LDXSB", "LDXSH", "LDXSW", "ADDR") or n.startswith("LOAD_ACQ"))
_JUMPS = frozenset(n for n in isa.VM_OP_NAMES
                   if n[0] == "J" or n in ("MAY_GOTO", "JA", "JA32"))


class BatchResult(NamedTuple):
    """What :meth:`Program.run_batch` measured."""
    retval: int          # r0 of the last run
    duration_ns: float   # average per run
    insns: int           # instructions executed by one run


def to_insns(code: Code) -> List[Insn]:
    """Bytes, assembler text or (nested) instructions -> a flat slot list."""
    if isinstance(code, (bytes, bytearray, memoryview)):
        return isa.decode(code)
    if isinstance(code, str):
        from . import asm
        return asm.assemble(code)
    return isa.flatten(code)


def default_helpers() -> Dict[int, HelperImpl]:
    """The helpers a program may call when none are given (by kernel id)."""
    helpers = dict(_vm.C_HELPERS)
    helpers.update(_maps.MAP_HELPERS)
    return helpers


class MapRefs:
    """Resolves ``lddw`` map references as the kernel's PROG_LOAD does:
    MAP_FD / MAP_VALUE by fd, MAP_IDX / MAP_IDX_VALUE through ``fd_array``.
    Collects the maps used, in first-use order (the program's map list)."""

    def __init__(self, maps: Optional[Mapping[int, "_maps.MapCore"]] = None,
                 fd_array: Optional[Sequence[int]] = None):
        # userbpf.Map objects stand for their C storage
        self.by_fd = {fd: getattr(m, "core", m) for fd, m in (maps or {}).items()}
        self.fd_array = list(fd_array or [])
        self.used: List["_maps.MapCore"] = []

    def resolve(self, pc: int, first: Insn, second: Insn) -> int:
        """The 64-bit value the lddw loads (a map or map value address)."""
        src = first.src
        if src in (Pseudo.MAP_IDX, Pseudo.MAP_IDX_VALUE):
            idx = first.imm & 0xffffffff
            if idx >= len(self.fd_array):
                raise ProgramError(f"fd_idx {idx} is out of bounds for fd_array of "
                                   f"{len(self.fd_array)}", pc, errno.EINVAL)
            fd = self.fd_array[idx]
        else:
            fd = first.imm
        m = self.by_fd.get(fd)
        if m is None:
            raise ProgramError(f"fd {fd} is not pointing to valid bpf_map", pc, errno.EBADF)
        if all(u is not m for u in self.used):
            self.used.append(m)
        if src in (Pseudo.MAP_FD, Pseudo.MAP_IDX):
            return m.address
        off = second.imm & 0xffffffff
        if m.map_type != 2:        # BPF_MAP_TYPE_ARRAY: the only direct-value map here
            raise ProgramError("no direct value access support for this map type", pc,
                               errno.EINVAL)
        if m.max_entries != 1 or off >= m.value_size:
            raise ProgramError(f"invalid access to map value pointer, value_size="
                               f"{m.value_size} off={off}", pc, errno.EACCES)
        return m.program_lookup((0).to_bytes(4, "little")) + off


def isa_check(insns: List[Insn]) -> None:
    """Field checks only, so that the context conversion sees sane slots."""
    for pc in isa.slots(insns):
        err = isa.check_fields(insns, pc)
        if err:
            raise ProgramError(err, pc)


def check_helper_calls(insns: List[Insn], prog_type: int, expected_attach_type: int,
                       gpl_compatible: bool, implemented) -> None:
    """The kernel's check_helper_call for a program type: ids it knows,
    helpers the type may call, GPL-only helpers only for GPL-compatible
    programs; then a kernel helper not in ``implemented`` is refused by name.
    Ids outside the kernel's that ``implemented`` has (an embedder's own
    helpers) are not the kernel's business."""
    from . import helperinfo
    for pc in isa.slots(insns):
        x = insns[pc]
        if x.code != Class.JMP | JmpOp.CALL or x.src != 0:
            continue
        if not 0 <= x.imm <= helperinfo.MAX_HELPER_ID and x.imm in implemented:
            continue
        why = helperinfo.check_helper_call(prog_type, x.imm, gpl_compatible, implemented,
                                           expected_attach_type=expected_attach_type or None)
        if why is not None:
            raise ProgramError(why, pc, errno.EINVAL)


def predecode(insns: List[Insn], helpers: Mapping[int, HelperImpl],
              maps: Optional[MapRefs] = None, ctx_rewrites: Optional[Mapping] = None):
    """Check a program's structure and build the interpreter's records.

    ``ctx_rewrites`` (slot -> :class:`userbpf.ctxconv.CtxRewrite`) replaces
    context loads and stores with accesses of the internal context.
    Returns ``(records, orig_pc, helper_table)``. Raises :class:`ProgramError`
    with the kernel's wording where the kernel has one.
    """
    ctx_rewrites = ctx_rewrites or {}
    n = len(insns)
    if n == 0:
        raise ProgramError("empty program")
    starts = list(isa.slots(insns))
    index = {slot: i for i, slot in enumerate(starts)}     # slot -> record index
    helper_slots: Dict[int, int] = {}
    helper_table: List[Tuple[int, HelperImpl]] = []
    records = []

    def target(pc: int, rel: int) -> int:
        t = pc + rel + 1
        if t < 0 or t >= n:
            raise ProgramError(f"jump out of range from insn {pc} to {t}", pc)
        if t not in index:
            raise ProgramError(f"jump into the middle of ldimm64 insn {t - 1}", pc)
        return index[t]

    for pc in starts:
        x = insns[pc]
        err = isa.check_fields(insns, pc)
        if err:
            raise ProgramError(err, pc)
        name = isa.vm_op_name(x)
        if name in _WRITES_DST and x.dst == isa.BPF_REG_10:
            raise ProgramError("frame pointer is read only", pc)
        if name.startswith("ATOMIC_FETCH") or name.startswith("ATOMIC_XCHG"):
            if x.src == isa.BPF_REG_10:
                raise ProgramError("frame pointer is read only", pc)
        off, imm, size = x.off, x.imm, 0
        if x.cls in (Class.LDX, Class.ST, Class.STX, Class.LD):
            size = isa.SIZE_BYTES[isa.Size(isa.BPF_SIZE(x.code))]
        if name == "LDDW":
            if x.src in (Pseudo.MAP_FD, Pseudo.MAP_VALUE, Pseudo.MAP_IDX,
                         Pseudo.MAP_IDX_VALUE):
                imm = (maps or MapRefs()).resolve(pc, x, insns[pc + 1])
            elif x.src == Pseudo.FUNC:
                # a subprogram's address (callbacks): tagged decoded index
                if not 0 <= pc + x.imm + 1 < n:
                    raise ProgramError("call to invalid destination", pc)
                imm = _vm.FUNC_TAG | target(pc, x.imm)
            elif x.src != Pseudo.NONE:
                raise ProgramError(
                    f"ldimm64 with src_reg={x.src} ({Pseudo(x.src).name}) is not supported "
                    "yet (BTF ids come with the loader)", pc)
            else:
                imm = isa.imm64(x, insns[pc + 1])
            imm = imm - (1 << 64) if imm >= 1 << 63 else imm
        elif name == "JA32":
            off = target(pc, x.imm)
        elif name in _JUMPS:
            off = target(pc, x.off)
        elif name == "CALL_LOCAL":
            off = target(pc, x.imm)
        elif name == "CALL_HELPER":
            if x.imm not in helper_slots:
                if x.imm not in helpers:
                    raise ProgramError(f"invalid func unknown#{x.imm}", pc)
                helper_slots[x.imm] = len(helper_table)
                helper_table.append((x.imm, helpers[x.imm]))
            off = helper_slots[x.imm]
        elif name == "INVALID" and x.cls == Class.JMP and isa.BPF_OP(x.code) == JmpOp.CALL \
                and x.src == PseudoCall.KFUNC_CALL:
            raise ProgramError(f"kernel function calls (kfuncs) are not supported: "
                               f"call to kfunc btf_id {x.imm}", pc)
        elif name == "ADDR_SPACE_CAST":
            raise ProgramError("addr_space_cast insn can only be used in a program that has "
                               "an associated arena (arena maps are not supported yet)", pc)
        rw = ctx_rewrites.get(pc)
        if rw is not None:      # CTX_ST keeps its immediate
            if rw.op == "CTX_LDXS":
                imm = size      # sign-extend from the program's own load size
            elif rw.op == "CTX_STX":
                imm = rw.limit  # values >= limit are dropped (0: none)
            name, size, off = rw.op, rw.size, rw.off
            if name == "NOP":   # a store the kernel's conversion drops
                name, off, size = "JA", len(records) + 1, 0
        records.append(_RECORD.pack(isa.VM_OP[name], x.dst, x.src, size, off, imm))
    if "CALLX" in {isa.vm_op_name(insns[pc]) for pc in starts}:
        for hid in sorted(helpers):          # callx may reach any helper by id
            if hid not in helper_slots:
                helper_slots[hid] = len(helper_table)
                helper_table.append((hid, helpers[hid]))
    # A sentinel past the end: falling off the program stops cleanly.
    records.append(_RECORD.pack(isa.VM_OP["INVALID"], 0, 0, 0, 0, 0))
    return b"".join(records), starts + [n], helper_table


class Program:
    """An eBPF program for the interpreter.

    ``code`` is raw bytecode, assembler text (either syntax, see
    :mod:`userbpf.asm`) or a list of instructions. ``helpers`` maps helper
    ids to Python callables ``f(r1, r2, r3, r4, r5) -> int`` or C helper
    capsules; they extend the built-in ones. ``budget`` caps the
    instructions one run may execute (0: no cap): it is checked at taken
    jumps, calls and the final exit, so a loop stops at the jump that
    crosses it and a straight run past it ends in BudgetExceeded. ``maps`` (fd -> map
    storage) and ``fd_array`` resolve ``lddw`` map references. With a
    ``prog_type`` (and ``expected_attach_type``), context accesses are
    checked against that type's rules and converted at load time, helper
    calls against the kernel's table for the type (``gpl_compatible``: may it
    call GPL-only helpers), and the program runs on a context with
    :meth:`test_run`.

    >>> p = Program("r0 = *(u8 *)(r1 + 1)\\nexit")
    >>> p.run(bytearray(b"\\x07\\x2a"))
    42
    >>> Program([isa.BPF_MOV64_IMM(0, 7), isa.BPF_EXIT_INSN()]).run()
    7
    """

    def __init__(self, code: Code, *, helpers: Optional[Mapping[int, HelperImpl]] = None,
                 budget: int = DEFAULT_BUDGET,
                 maps: Optional[Mapping[int, "_maps.MapCore"]] = None,
                 fd_array: Optional[Sequence[int]] = None,
                 prog_type: Optional[int] = None, expected_attach_type: int = 0,
                 gpl_compatible: bool = True):
        self.insns: List[Insn] = to_insns(code)
        self.helpers: Dict[int, HelperImpl] = default_helpers()
        for hid, impl in (helpers or {}).items():
            self.helpers[int(hid)] = impl
        self.prog_type = prog_type
        self.expected_attach_type = expected_attach_type
        rewrites = None
        if prog_type is not None:
            from .ctxconv import convert_ctx_accesses
            isa_check(self.insns)
            check_helper_calls(self.insns, prog_type, expected_attach_type, gpl_compatible,
                               self.helpers)
            rewrites = convert_ctx_accesses(self.insns, prog_type, expected_attach_type)
        # the end of the furthest context byte accessed (raw tracepoint test runs)
        self.max_ctx_offset = max((self.insns[pc].off + isa.SIZE_BYTES[isa.Size(
            isa.BPF_SIZE(self.insns[pc].code))] for pc in (rewrites or {})), default=0)
        refs = MapRefs(maps, fd_array)
        records, self._orig_pc, table = predecode(self.insns, self.helpers, refs, rewrites)
        self.maps = refs.used
        self._vm = _vm.VMProgram(records, self._orig_pc, table, self._fault, budget,
                                 self.maps)
        self._vm.ctx_min_size = max((rw.off + rw.size for rw in (rewrites or {}).values()),
                                    default=0)
        # simulated CPUs: as many as the maps have (per-CPU values exist per CPU)
        self.ncpus = min((m.ncpus for m in self.maps), default=1)

    # -- running -------------------------------------------------------------

    def run(self, mem=None, *, cpu: Optional[int] = None) -> int:
        """Run once and return r0 (an unsigned 64-bit int).

        r1 is the address of ``mem`` and r2 its length (0 and 0 without
        memory). A writable buffer is modified in place; read-only bytes
        are copied first. ``cpu`` is the simulated CPU the run is on (what
        per-CPU maps and bpf_get_smp_processor_id see); by default each
        thread gets one of the maps' CPUs, round-robin, and keeps it.
        """
        if cpu is None:
            cpu = 0 if self.ncpus == 1 else thread_cpu() % self.ncpus
        return self._vm.run(_writable(mem), cpu=cpu)

    def test_run(self, data=None, *, ctx=None, repeat: int = 1, cpu: Optional[int] = None,
                 flags: int = 0):
        """Run on a context built as the kernel's BPF_PROG_TEST_RUN builds it.

        ``data`` is the packet (bytes), ``ctx`` the UAPI context struct's
        bytes (only the fields the kernel lets test runs set). Returns a
        :class:`userbpf.kernel.test_run.TestRunResult` (retval, data_out,
        ctx_out, duration). Needs ``prog_type``.

        >>> from userbpf.uapi import ProgType
        >>> xdp = Program("r2 = *(u32 *)(r1 + 0)\\nr0 = *(u8 *)(r2 + 13)\\nexit",
        ...               prog_type=ProgType.XDP)        # the EtherType's low byte
        >>> xdp.test_run(bytes(12) + b"\\x08\\x06" + bytes(28)).retval
        6
        """
        from .kernel.test_run import test_run
        return test_run(self, data_in=data, ctx_in=ctx, repeat=repeat, cpu=cpu or 0,
                        flags=flags)

    def run_batch(self, mem=None, repeat: int = 1, *, cpu: Optional[int] = None) -> BatchResult:
        """Run ``repeat`` times in a C loop and time it (for benchmarks)."""
        r0, ns, insns = self._vm.run_batch(_writable(mem), repeat, cpu=self._cpu(cpu))
        return BatchResult(r0, ns / max(repeat, 1), insns)

    def _cpu(self, cpu: Optional[int]) -> int:
        if cpu is not None:
            return cpu
        if self.ncpus == 1:
            return 0
        return thread_cpu() % self.ncpus

    def add_region(self, buf, writable: bool = True) -> None:
        """Let the program access ``buf`` through pointers (e.g. passed by a helper)."""
        self._vm.add_region(buf, writable)

    @property
    def budget(self) -> int:
        return self._vm.budget

    @budget.setter
    def budget(self, value: int) -> None:
        self._vm.budget = value

    @property
    def vm_prog_address(self) -> int:
        """The address of the C program (``vm_prog *``) that PROG_ARRAY slots
        hold for bpf_tail_call; valid while this object lives."""
        return self._vm.prog_address

    @property
    def insn_count(self) -> int:
        """Instructions the last run executed (``lddw`` counts once)."""
        return self._vm.insn_count

    def __len__(self) -> int:
        return len(self.insns)

    def bytes(self) -> bytes:
        return isa.encode(self.insns)

    def disassemble(self, syntax: str = "kernel") -> str:
        from . import asm
        return asm.disassemble(self.insns, syntax=syntax)

    # -- errors --------------------------------------------------------------

    def _insn_text(self, pc: int) -> str:
        if pc >= len(self.insns):
            return "<end of program>"
        try:
            from . import asm
            return asm.format_insn(self.insns, pc)
        except Exception:       # the disassembler must never hide the real error
            return repr(self.insns[pc])

    def _fault(self, status: int, pc: int, addr: int, size: int, write: bool,
               exc: Optional[BaseException]) -> VMError:
        text = self._insn_text(pc)
        access = "write" if write else "read"
        if status == _vm.STATUS_ERR_MEM:
            return MemoryAccessError(
                f"invalid {access} of {size} byte{'s' if size > 1 else ''} at {addr:#x}: "
                "outside the stack, the memory buffer and every registered region",
                pc, text, addr, size, write)
        if status == _vm.STATUS_ERR_ALIGN:
            return MemoryAccessError(
                f"misaligned atomic {access} of {size} bytes at {addr:#x}", pc, text,
                addr, size, write)
        if status == _vm.STATUS_ERR_BUDGET:
            return BudgetExceeded(
                f"instruction budget of {self.budget} exhausted (raise Program.budget, "
                "or 0 for no limit)", pc, text)
        if status == _vm.STATUS_ERR_DEPTH:
            return CallDepthError(
                f"bpf-to-bpf calls nested deeper than {isa.MAX_CALL_FRAMES} frames", pc, text)
        if status == _vm.STATUS_ERR_HELPER:
            return HelperError(f"callx to unknown helper id {addr}", pc, text)
        if status == _vm.STATUS_ERR_MAP_ARG:
            return HelperError(f"map helper called with r1={addr:#x}, which is not a map "
                               "this program references", pc, text)
        if status == _vm.STATUS_ERR_TAIL_CALL:
            return HelperError("bpf_tail_call in a callback (bpf_loop, "
                               "bpf_for_each_map_elem...) is not supported yet", pc, text)
        if status == _vm.STATUS_ERR_CTX and size == 0:      # from a context helper
            return HelperError(f"helper called with r1={addr:#x}, which is not this run's "
                               "context (or not a packet of the kind the helper works on)",
                               pc, text)
        if status == _vm.STATUS_ERR_CTX:
            return MemoryAccessError(
                f"context {access} of {size} bytes through {addr:#x}, which is not the "
                "context (a converted ctx access reached another pointer)", pc, text,
                addr, size, write)
        if status == _vm.STATUS_ERR_PYTHON:
            if not isinstance(exc, Exception):      # KeyboardInterrupt, SystemExit: as they are
                return exc
            err = HelperError(f"helper raised {type(exc).__name__}: {exc}", pc, text)
            err.__cause__ = exc
            return err
        if pc >= len(self.insns):
            return VMError("fell off the end of the program (the last instruction "
                           "must be exit or a jump)", pc, text)
        return VMError("instruction cannot run", pc, text)


_threads = threading.local()
_next_thread = itertools.count()


def thread_cpu() -> int:
    """This thread's number, handed out in order of first use: the default
    simulated CPU of its runs is that number modulo the CPUs."""
    n = getattr(_threads, "n", None)
    if n is None:
        n = _threads.n = next(_next_thread)
    return n


def _writable(mem):
    if mem is None:
        return None
    if isinstance(mem, (bytes, str)) or (isinstance(mem, memoryview) and mem.readonly):
        return bytearray(mem)
    return mem
