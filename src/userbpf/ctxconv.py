"""Load-time context conversion: the kernel's ``convert_ctx_accesses``.

A program reads its context through the UAPI struct (``__sk_buff``,
``xdp_md``, ...), but runs on an internal context (include/userbpf/ctx.h)
where ``ctx->data`` is a real 64-bit pointer. The kernel's verifier knows
which register holds the context at each instruction and rewrites those
loads and stores; until userbpf's verifier lands, :func:`convert_ctx_accesses`
finds them with a small forward analysis of its own:

- a register holds the context (``r1`` at entry, copies, spills to and
  fills from fixed stack slots, arguments of bpf-to-bpf calls), a
  modified context pointer, a frame pointer with a known offset, or
  something else;
- every load or store whose base is the context is checked against the
  program type's field rules (:mod:`userbpf.contexts`) and becomes a
  ``CTX_LDX`` / ``CTX_STX`` of the internal context.

The analysis joins paths without telling them apart. Where it is
optimistic (a helper overwriting a spilled context), the interpreter's
check that a converted access's base really is the context keeps the run
safe: it ends with a fault instead of reading the wrong memory.
"""
from __future__ import annotations

import errno
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import isa
from .errors import ProgramError
from .isa import Class, Insn

__all__ = ["CtxRewrite", "convert_ctx_accesses"]


class CtxRewrite(NamedTuple):
    """How one instruction slot runs after conversion."""
    op: str        # "CTX_LDX", "CTX_LDXS" (sign-extending), "CTX_STX", "CTX_ST", "NOP"
                   # (a store the kernel drops), or a plain load of socket memory
    off: int       # internal context offset
    size: int      # internal access size
    limit: int = 0  # CTX_STX: values >= limit are not stored (0: no limit)


# Abstract register values. None: not a pointer the conversion cares about.
CTX = "ctx"         # ("ctx", off): the context plus off (None: a variable offset)
FP = "fp"           # ("fp", off): the frame pointer plus off
MIXED = ("mixed",)  # the context on some paths, something else on others

_ENTRY = (None, (CTX, 0)) + (None,) * 8 + ((FP, 0),)


def _join_val(a, b):
    if a == b:
        return a
    if (a is not None and (a[0] == CTX or a is MIXED)) or \
            (b is not None and (b[0] == CTX or b is MIXED)):
        return MIXED
    return None


class _State(NamedTuple):
    regs: Tuple
    stack: Tuple      # sorted ((fp offset, value), ...) of spilled pointers

    def join(self, other: "_State") -> "_State":
        regs = tuple(_join_val(a, b) for a, b in zip(self.regs, other.regs))
        mine = dict(self.stack)
        stack = tuple((k, v) for k, v in other.stack if mine.get(k) == v)
        return _State(regs, stack)


def _kill(stack: Tuple, off: Optional[int], size: int) -> Tuple:
    """Drop spilled slots a store to [off, off + size) overwrites (all if unknown)."""
    if off is None:
        return ()
    return tuple((k, v) for k, v in stack if k + 8 <= off or k >= off + size)


def _is_ctx(v) -> bool:
    return v is not None and (v is MIXED or v[0] == CTX)


SOCK = "sock"       # ("sock", kind, off): a socket pointer read from the context
_LETTER = {1: "B", 2: "H", 4: "W", 8: "DW"}
# the socket pointer types contexts.check_sock_access knows (verifier names)
_SOCK_KINDS = frozenset({"sock_common", "sock", "tcp_sock", "xdp_sock"})


def convert_ctx_accesses(insns: List[Insn], prog_type: int,
                         expected_attach_type: int = 0) -> Dict[int, CtxRewrite]:
    """Find the context accesses of ``insns`` and convert them.

    Returns ``{slot: CtxRewrite}`` for every load/store through the
    context; raises :class:`ProgramError` (errno EACCES) with the kernel's
    message for an access the program type's rules refuse.

    >>> from userbpf import asm
    >>> from userbpf.uapi import ProgType
    >>> code = asm.assemble("r2 = *(u32 *)(r1 + 4)\\nr0 = *(u32 *)(r1 + 0)\\nexit")
    >>> convert_ctx_accesses(code, ProgType.XDP)
    {0: CtxRewrite(op='CTX_LDX', off=32, size=8, limit=0), 1: CtxRewrite(op='CTX_LDX', off=24, size=8, limit=0)}
    """
    from .contexts import (BPF_SOCK, CTX_ACCESS_ERRNO, CTX_ATOMIC_ERROR, CTX_MODIFIED_ERROR,
                           CTX_VAR_OFF_ERROR, DROPPED_STORES_FROM, SIGN_EXTENDED_FIELDS,
                           CtxAccessError, CtxPtr, check_ctx_access, check_sock_access,
                           ctx_reg_type, ctx_struct)

    struct_ = ctx_struct(prog_type, expected_attach_type)

    n = len(insns)
    starts = list(isa.slots(insns))
    is_start = set(starts)
    states: Dict[int, _State] = {0: _State(_ENTRY, ())}
    work = [0]
    out: Dict[int, CtxRewrite] = {}

    def flow(pc: int, st: _State) -> None:
        if pc >= n or pc not in is_start:
            return                      # predecode reports bad targets
        old = states.get(pc)
        new = st if old is None else old.join(st)
        if new != old:
            states[pc] = new
            work.append(pc)

    def sock_access(pc: int, base: int, v, off: int, size: int, write: bool) -> None:
        # socket fields sit at their UAPI offsets in read-only memory: the
        # load stays a plain load; only the kernel's field rules apply
        if v[2] != 0:
            raise ProgramError(f"R{base} invalid {v[1]} access off={v[2] + off} size={size}",
                               pc, errno.EACCES)
        try:
            a = check_sock_access(v[1], off, size, write, regno=base)
        except CtxAccessError as e:
            raise ProgramError(str(e), pc, getattr(e, "errno", errno.EACCES)) from None
        field = BPF_SOCK.field_at(a.off) if v[1] in ("sock_common", "sock") else None
        if field is not None and field.name in SIGN_EXTENDED_FIELDS.get("bpf_sock", ()) \
                and a.size == field.size:
            # the kernel's conversion gives a 64-bit value (-1: no queue)
            out[pc] = CtxRewrite("LDXS" + _LETTER[a.size], a.off, a.size)
        elif (a.off, a.size) != (off, size):
            # a narrow load as wide as the kernel's field reads the whole field
            out[pc] = CtxRewrite("LDX" + _LETTER[a.size], a.off, a.size)

    def access(pc: int, base: int, v, off: int, size: int, write: bool,
               op: Optional[str] = None):
        if v is MIXED:
            raise ProgramError("same insn cannot be used with different pointers", pc,
                               errno.EINVAL)
        if v[1] is None:
            raise ProgramError(CTX_VAR_OFF_ERROR.format(var_off="(unknown)"), pc,
                               CTX_ACCESS_ERRNO)
        if v[1] != 0:
            raise ProgramError(CTX_MODIFIED_ERROR.format(reg=base, off=v[1]), pc,
                               CTX_ACCESS_ERRNO)
        try:
            a = check_ctx_access(prog_type, expected_attach_type, off, size, write)
        except CtxAccessError as e:
            raise ProgramError(str(e), pc, CTX_ACCESS_ERRNO) from None
        limit = 0
        if write:
            field = struct_.field_at(off)
            limit = DROPPED_STORES_FROM.get(struct_.name, {}).get(
                field.name if field else "", 0)
        if op == "CTX_ST" and limit and (insns[pc].imm & (2**64 - 1)) >= limit:
            op = "NOP"                    # the kernel's conversion drops this store
        rw = CtxRewrite(op or ("CTX_STX" if write else "CTX_LDX"), a.off, a.size,
                        limit if op is None and write else 0)
        if out.get(pc, rw) != rw:
            raise ProgramError("same insn cannot be used with different pointers", pc,
                               errno.EINVAL)
        out[pc] = rw
        return a

    # callbacks (lddw func[...]) start with nothing known
    for pc in starts:
        x = insns[pc]
        if x.code == isa.BPF_LD | isa.BPF_IMM | isa.BPF_DW and x.src == isa.Pseudo.FUNC:
            flow(pc + x.imm + 1, _State((None,) * 10 + ((FP, 0),), ()))

    while work:
        pc = work.pop()
        st = states[pc]
        regs, stack = list(st.regs), st.stack
        x = insns[pc]
        cls = x.cls
        nxt = pc + (2 if isa.is_wide(x) else 1)
        if cls in (Class.ALU, Class.ALU64):
            op = isa.BPF_OP(x.code)
            d = regs[x.dst]
            if cls == Class.ALU64 and op == isa.BPF_MOV and isa.BPF_SRC(x.code) == isa.BPF_X \
                    and x.off == 0:
                regs[x.dst] = regs[x.src]
            elif d is not None and d is not MIXED and d[0] == SOCK and not (
                    op == isa.BPF_MOV and isa.BPF_SRC(x.code) == isa.BPF_K):
                if op in (isa.BPF_ADD, isa.BPF_SUB) and cls == Class.ALU64:
                    raise ProgramError(f"R{x.dst} pointer arithmetic on {d[1]}_or_null "
                                       "prohibited, null-check it first", pc, errno.EACCES)
                regs[x.dst] = None
            elif cls == Class.ALU64 and op in (isa.BPF_ADD, isa.BPF_SUB) and d is not None \
                    and d is not MIXED:
                if isa.BPF_SRC(x.code) == isa.BPF_K and d[1] is not None:
                    k = x.imm if op == isa.BPF_ADD else -x.imm
                    regs[x.dst] = (d[0], d[1] + k)
                else:
                    regs[x.dst] = (d[0], None)
            else:
                regs[x.dst] = MIXED if d is MIXED or (d is not None and d[0] == CTX and
                                                      cls == Class.ALU64) else None
            flow(nxt, _State(tuple(regs), stack))
        elif cls == Class.LDX:
            size = isa.SIZE_BYTES[isa.Size(isa.BPF_SIZE(x.code))]
            b = regs[x.src]
            val = None
            if _is_ctx(b):
                signed = isa.BPF_MODE(x.code) == isa.BPF_MEMSX
                a = access(pc, x.src, b, x.off, size, False, "CTX_LDXS" if signed else None)
                if a.ptr in (CtxPtr.SOCK, CtxPtr.SOCK2):
                    kind = ctx_reg_type(prog_type, expected_attach_type, x.off, size)
                    kind = kind[:-len("_or_null")] if kind.endswith("_or_null") else kind
                    val = (SOCK, kind, 0) if kind in _SOCK_KINDS else None
            elif b is not None and b[0] == SOCK:
                sock_access(pc, x.src, b, x.off, size, False)
            elif b is not None and b[0] == FP and b[1] is not None and size == 8:
                val = dict(stack).get(b[1] + x.off)
            regs[x.dst] = val
            flow(nxt, _State(tuple(regs), stack))
        elif cls in (Class.ST, Class.STX):
            size = isa.SIZE_BYTES[isa.Size(isa.BPF_SIZE(x.code))]
            b = regs[x.dst]
            mode = isa.BPF_MODE(x.code)
            if _is_ctx(b):
                if mode == isa.BPF_ATOMIC:
                    raise ProgramError(CTX_ATOMIC_ERROR.format(reg=x.dst), pc,
                                       CTX_ACCESS_ERRNO)
                access(pc, x.dst, b, x.off, size, True, "CTX_ST" if cls == Class.ST else None)
            elif b is not None and b is not MIXED and b[0] == SOCK:
                sock_access(pc, x.dst, b, x.off, size, True)
            elif b is not None and b is not MIXED and b[0] == FP:
                at = None if b[1] is None else b[1] + x.off
                stack = _kill(stack, at, size)
                if cls == Class.STX and mode == isa.BPF_MEM and size == 8 and at is not None \
                        and regs[x.src] is not None:
                    stack = tuple(sorted(stack + ((at, regs[x.src]),)))
            if mode == isa.BPF_ATOMIC and x.imm & isa.BPF_FETCH:
                if x.imm == isa.BPF_CMPXCHG:
                    regs[0] = None
                else:
                    regs[x.src] = None
            elif mode == isa.BPF_ATOMIC and x.imm == isa.BPF_LOAD_ACQ:
                regs[x.dst] = None
            flow(nxt, _State(tuple(regs), stack))
        elif cls == Class.LD:
            if isa.is_wide(x):
                regs[x.dst] = None
            else:                                     # LD_ABS / LD_IND: a call
                regs[0:6] = [None] * 6
            flow(nxt, _State(tuple(regs), stack))
        else:                                         # JMP, JMP32
            op = isa.BPF_OP(x.code)
            if op == isa.BPF_EXIT:
                continue
            if op == isa.BPF_CALL:
                if x.src == isa.PseudoCall.CALL and cls == Class.JMP:
                    callee = _State((None,) + tuple(regs[1:6]) + (None,) * 4 + ((FP, 0),), ())
                    flow(pc + x.imm + 1, callee)
                regs[0:6] = [None] * 6
                flow(nxt, _State(tuple(regs), stack))
                continue
            s = _State(tuple(regs), stack)
            if op == isa.BPF_JA:
                flow(pc + 1 + (x.imm if cls == Class.JMP32 else x.off), s)
                continue
            flow(pc + 1 + x.off, s)
            flow(nxt, s)
    return dict(sorted(out.items()))
