"""The kernel's BPF helper table as data: names, GPL flags, prototypes, and
which program types may call which helper.

The loader and the verifier read this module to refuse a helper call the way
the kernel's ``check_helper_call`` does, in the kernel's order and with its
messages::

    invalid func unknown#212                                  (no such helper id)
    program of this type cannot use helper bpf_xdp_adjust_head#44
    cannot call GPL-restricted function from non-GPL compatible program

The "which type may call what" tables were obtained by asking the live
Linux 6.18 kernel (``tests/test_helperinfo.py`` asks it again and compares):
for every program type and helper id, load ``r1..r5 = 0; call id; exit``
under a non-GPL licence and read the verifier log.  They describe a
privileged loader (root: CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN), which is
what ``bpf_base_func_proto`` hands the most helpers to; an unprivileged
loader gets fewer.  ``TRACING`` is probed with the attach types whose
targets load here (TRACE_RAW_TP, TRACE_ITER: a vmlinux BTF id); what cannot
be loaded on this kernel (``LSM``, fentry/fexit: EPERM before verification;
``EXT`` needs a target program, ``STRUCT_OPS`` a struct_ops type; no
``LIRC_MODE2`` built in) gets a conservative rule (a subset of what the
kernel allows), listed in :data:`NOT_PROBED` and :data:`NOT_PROBED_ATTACH`.

Prototypes (:data:`PROTOS`) use the kernel's ``bpf_func_proto`` vocabulary
(``RET_INTEGER``, ``ARG_CONST_MAP_PTR``, ``ARG_PTR_TO_MEM | MEM_RDONLY`` ...).
The numeric values of those types are userbpf's own (the kernel's are
internal, not ABI); the names, and the split of a type into a base type in
the low 8 bits plus flag bits above (``BPF_BASE_TYPE_BITS``), are the
kernel's.

    >>> from userbpf.uapi import ProgType, Func
    >>> helper_allowed(ProgType.XDP, Func.xdp_adjust_head)
    True
    >>> check_helper_call(ProgType.SOCKET_FILTER, Func.xdp_adjust_head, True)
    'program of this type cannot use helper bpf_xdp_adjust_head#44'
    >>> str(PROTOS[Func.map_lookup_elem])
    'RET_PTR_TO_MAP_VALUE_OR_NULL bpf_map_lookup_elem(ARG_CONST_MAP_PTR, ARG_PTR_TO_MAP_KEY)'
"""
from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Collection, Dict, FrozenSet, NamedTuple, Optional, Tuple

from .uapi import AttachType as A
from .uapi import Func as F
from .uapi import ProgType as P

__all__ = [
    "BPF_BASE_TYPE_BITS", "TypeFlag", "ArgType", "RetType", "Proto", "HelperInfo",
    "PROTOS", "PROTO_VARIANTS", "GPL_ONLY", "GPL_EXCEPTIONS", "ALLOWED", "NOT_PROBED",
    "NOT_PROBED_ATTACH", "ATTACH_RULES", "NO_RETVAL_ATTACH", "DEFAULT_ATTACH", "MAX_HELPER_ID", "helper_name", "helper_info", "helper_allowed",
    "allowed_helpers", "is_gpl_only", "proto_for", "check_helper_call", "type_name",
    "base_type", "type_flags",
]

# The last helper id of this kernel (enum bpf_func_id has been frozen since
# 6.2; ids from __BPF_FUNC_MAX_ID on are "invalid func").
MAX_HELPER_ID = max(F)


def helper_name(func_id: int) -> str:
    """The name the verifier log prints for helper ``func_id``.

    Ids the kernel does not define print as ``unknown`` (its func_id_name())::

        >>> helper_name(1), helper_name(0), helper_name(212), helper_name(-1)
        ('bpf_map_lookup_elem', 'bpf_unspec', 'unknown', 'unknown')
    """
    if 0 <= func_id <= MAX_HELPER_ID:
        return "bpf_" + F(func_id).name
    return "unknown"


# --------------------------------------------------------------------------
# Argument / return types (include/linux/bpf.h: enum bpf_arg_type,
# enum bpf_return_type, enum bpf_type_flag).
# --------------------------------------------------------------------------

BPF_BASE_TYPE_BITS = 8
_BASE_MASK = (1 << BPF_BASE_TYPE_BITS) - 1


class TypeFlag(IntFlag):
    """``enum bpf_type_flag``: modifiers or-ed onto a base arg/ret type."""

    PTR_MAYBE_NULL = 1 << (BPF_BASE_TYPE_BITS + 0)   # NULL is accepted / may be returned
    MEM_RDONLY = 1 << (BPF_BASE_TYPE_BITS + 1)       # the helper only reads the memory
    MEM_RINGBUF = 1 << (BPF_BASE_TYPE_BITS + 2)      # memory reserved in a ring buffer
    MEM_USER = 1 << (BPF_BASE_TYPE_BITS + 3)
    MEM_PERCPU = 1 << (BPF_BASE_TYPE_BITS + 4)
    OBJ_RELEASE = 1 << (BPF_BASE_TYPE_BITS + 5)      # the helper releases the reference
    PTR_UNTRUSTED = 1 << (BPF_BASE_TYPE_BITS + 6)
    MEM_UNINIT = 1 << (BPF_BASE_TYPE_BITS + 7)       # may point to uninitialized stack
    DYNPTR_TYPE_LOCAL = 1 << (BPF_BASE_TYPE_BITS + 8)
    DYNPTR_TYPE_RINGBUF = 1 << (BPF_BASE_TYPE_BITS + 9)
    MEM_FIXED_SIZE = 1 << (BPF_BASE_TYPE_BITS + 10)  # size given by the proto, not an arg
    MEM_ALLOC = 1 << (BPF_BASE_TYPE_BITS + 11)
    PTR_TRUSTED = 1 << (BPF_BASE_TYPE_BITS + 12)
    MEM_RCU = 1 << (BPF_BASE_TYPE_BITS + 13)
    NON_OWN_REF = 1 << (BPF_BASE_TYPE_BITS + 14)
    DYNPTR_TYPE_SKB = 1 << (BPF_BASE_TYPE_BITS + 15)
    DYNPTR_TYPE_XDP = 1 << (BPF_BASE_TYPE_BITS + 16)
    MEM_ALIGNED = 1 << (BPF_BASE_TYPE_BITS + 17)     # must be aligned to its size
    MEM_WRITE = 1 << (BPF_BASE_TYPE_BITS + 18)       # the helper writes the memory


class ArgType(IntEnum):
    """``enum bpf_arg_type`` base types (what a helper argument must be)."""

    ARG_DONTCARE = 0                  # unused: not checked
    ARG_CONST_MAP_PTR = 1             # a map (lddw map fd)
    ARG_PTR_TO_MAP_KEY = 2            # key_size readable bytes
    ARG_PTR_TO_MAP_VALUE = 3          # value_size bytes
    ARG_PTR_TO_MEM = 4                # memory sized by the next ARG_CONST_SIZE*
    ARG_PTR_TO_ARENA = 5
    ARG_CONST_SIZE = 6                # known, > 0 size of the previous pointer
    ARG_CONST_SIZE_OR_ZERO = 7        # same, may be 0
    ARG_PTR_TO_CTX = 8                # the program's context
    ARG_ANYTHING = 9                  # any initialized scalar or pointer
    ARG_PTR_TO_SPIN_LOCK = 10         # a struct bpf_spin_lock inside a map value
    ARG_PTR_TO_SOCK_COMMON = 11
    ARG_PTR_TO_SOCKET = 12
    ARG_PTR_TO_BTF_ID = 13
    ARG_CONST_ALLOC_SIZE_OR_ZERO = 14 # size of memory the helper allocates
    ARG_PTR_TO_BTF_ID_SOCK_COMMON = 15
    ARG_PTR_TO_PERCPU_BTF_ID = 16
    ARG_PTR_TO_FUNC = 17              # a callback (lddw of a subprogram)
    ARG_PTR_TO_STACK = 18
    ARG_PTR_TO_CONST_STR = 19         # NUL-terminated string in a read-only map
    ARG_PTR_TO_TIMER = 20
    ARG_KPTR_XCHG_DEST = 21
    ARG_PTR_TO_DYNPTR = 22


class RetType(IntEnum):
    """``enum bpf_return_type`` base types (what r0 holds after the call)."""

    RET_INTEGER = 0
    RET_VOID = 1                      # r0 is not readable afterwards
    RET_PTR_TO_MAP_VALUE = 2
    RET_PTR_TO_SOCKET = 3
    RET_PTR_TO_TCP_SOCK = 4
    RET_PTR_TO_SOCK_COMMON = 5
    RET_PTR_TO_MEM = 6
    RET_PTR_TO_MEM_OR_BTF_ID = 7
    RET_PTR_TO_BTF_ID = 8


# The kernel's names as module constants, spelled as C code spells them.
PTR_MAYBE_NULL = TypeFlag.PTR_MAYBE_NULL
MEM_RDONLY = TypeFlag.MEM_RDONLY
MEM_RINGBUF = TypeFlag.MEM_RINGBUF
MEM_USER = TypeFlag.MEM_USER
MEM_PERCPU = TypeFlag.MEM_PERCPU
OBJ_RELEASE = TypeFlag.OBJ_RELEASE
PTR_UNTRUSTED = TypeFlag.PTR_UNTRUSTED
MEM_UNINIT = TypeFlag.MEM_UNINIT
DYNPTR_TYPE_LOCAL = TypeFlag.DYNPTR_TYPE_LOCAL
DYNPTR_TYPE_RINGBUF = TypeFlag.DYNPTR_TYPE_RINGBUF
MEM_FIXED_SIZE = TypeFlag.MEM_FIXED_SIZE
MEM_ALLOC = TypeFlag.MEM_ALLOC
PTR_TRUSTED = TypeFlag.PTR_TRUSTED
MEM_RCU = TypeFlag.MEM_RCU
NON_OWN_REF = TypeFlag.NON_OWN_REF
DYNPTR_TYPE_SKB = TypeFlag.DYNPTR_TYPE_SKB
DYNPTR_TYPE_XDP = TypeFlag.DYNPTR_TYPE_XDP
MEM_ALIGNED = TypeFlag.MEM_ALIGNED
MEM_WRITE = TypeFlag.MEM_WRITE
ARG_DONTCARE = ArgType.ARG_DONTCARE
ARG_CONST_MAP_PTR = ArgType.ARG_CONST_MAP_PTR
ARG_PTR_TO_MAP_KEY = ArgType.ARG_PTR_TO_MAP_KEY
ARG_PTR_TO_MAP_VALUE = ArgType.ARG_PTR_TO_MAP_VALUE
ARG_PTR_TO_MEM = ArgType.ARG_PTR_TO_MEM
ARG_PTR_TO_ARENA = ArgType.ARG_PTR_TO_ARENA
ARG_CONST_SIZE = ArgType.ARG_CONST_SIZE
ARG_CONST_SIZE_OR_ZERO = ArgType.ARG_CONST_SIZE_OR_ZERO
ARG_PTR_TO_CTX = ArgType.ARG_PTR_TO_CTX
ARG_ANYTHING = ArgType.ARG_ANYTHING
ARG_PTR_TO_SPIN_LOCK = ArgType.ARG_PTR_TO_SPIN_LOCK
ARG_PTR_TO_SOCK_COMMON = ArgType.ARG_PTR_TO_SOCK_COMMON
ARG_PTR_TO_SOCKET = ArgType.ARG_PTR_TO_SOCKET
ARG_PTR_TO_BTF_ID = ArgType.ARG_PTR_TO_BTF_ID
ARG_CONST_ALLOC_SIZE_OR_ZERO = ArgType.ARG_CONST_ALLOC_SIZE_OR_ZERO
ARG_PTR_TO_BTF_ID_SOCK_COMMON = ArgType.ARG_PTR_TO_BTF_ID_SOCK_COMMON
ARG_PTR_TO_PERCPU_BTF_ID = ArgType.ARG_PTR_TO_PERCPU_BTF_ID
ARG_PTR_TO_FUNC = ArgType.ARG_PTR_TO_FUNC
ARG_PTR_TO_STACK = ArgType.ARG_PTR_TO_STACK
ARG_PTR_TO_CONST_STR = ArgType.ARG_PTR_TO_CONST_STR
ARG_PTR_TO_TIMER = ArgType.ARG_PTR_TO_TIMER
ARG_KPTR_XCHG_DEST = ArgType.ARG_KPTR_XCHG_DEST
ARG_PTR_TO_DYNPTR = ArgType.ARG_PTR_TO_DYNPTR
RET_INTEGER = RetType.RET_INTEGER
RET_VOID = RetType.RET_VOID
RET_PTR_TO_MAP_VALUE = RetType.RET_PTR_TO_MAP_VALUE
RET_PTR_TO_SOCKET = RetType.RET_PTR_TO_SOCKET
RET_PTR_TO_TCP_SOCK = RetType.RET_PTR_TO_TCP_SOCK
RET_PTR_TO_SOCK_COMMON = RetType.RET_PTR_TO_SOCK_COMMON
RET_PTR_TO_MEM = RetType.RET_PTR_TO_MEM
RET_PTR_TO_MEM_OR_BTF_ID = RetType.RET_PTR_TO_MEM_OR_BTF_ID
RET_PTR_TO_BTF_ID = RetType.RET_PTR_TO_BTF_ID

# The kernel's composite names (include/linux/bpf.h).
ARG_PTR_TO_MAP_VALUE_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_MAP_VALUE)
ARG_PTR_TO_MEM_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_MEM)
ARG_PTR_TO_CTX_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_CTX)
ARG_PTR_TO_SOCKET_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_SOCKET)
ARG_PTR_TO_STACK_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_STACK)
ARG_PTR_TO_BTF_ID_OR_NULL = int(PTR_MAYBE_NULL | ARG_PTR_TO_BTF_ID)
ARG_PTR_TO_UNINIT_MEM = int(MEM_UNINIT | MEM_WRITE | ARG_PTR_TO_MEM)
ARG_PTR_TO_FIXED_SIZE_MEM = int(MEM_FIXED_SIZE | ARG_PTR_TO_MEM)
ARG_PTR_TO_RINGBUF_MEM = int(MEM_RINGBUF | ARG_PTR_TO_MEM)
RET_PTR_TO_MAP_VALUE_OR_NULL = int(PTR_MAYBE_NULL | RET_PTR_TO_MAP_VALUE)
RET_PTR_TO_SOCKET_OR_NULL = int(PTR_MAYBE_NULL | RET_PTR_TO_SOCKET)
RET_PTR_TO_TCP_SOCK_OR_NULL = int(PTR_MAYBE_NULL | RET_PTR_TO_TCP_SOCK)
RET_PTR_TO_SOCK_COMMON_OR_NULL = int(PTR_MAYBE_NULL | RET_PTR_TO_SOCK_COMMON)
RET_PTR_TO_RINGBUF_MEM_OR_NULL = int(PTR_MAYBE_NULL | MEM_RINGBUF | RET_PTR_TO_MEM)
RET_PTR_TO_BTF_ID_OR_NULL = int(PTR_MAYBE_NULL | RET_PTR_TO_BTF_ID)

_ALIASES: Dict[str, Tuple[int, int]] = {   # name -> (0 arg / 1 ret, value)
    "ARG_PTR_TO_MAP_VALUE_OR_NULL": (0, ARG_PTR_TO_MAP_VALUE_OR_NULL),
    "ARG_PTR_TO_MEM_OR_NULL": (0, ARG_PTR_TO_MEM_OR_NULL),
    "ARG_PTR_TO_CTX_OR_NULL": (0, ARG_PTR_TO_CTX_OR_NULL),
    "ARG_PTR_TO_SOCKET_OR_NULL": (0, ARG_PTR_TO_SOCKET_OR_NULL),
    "ARG_PTR_TO_STACK_OR_NULL": (0, ARG_PTR_TO_STACK_OR_NULL),
    "ARG_PTR_TO_BTF_ID_OR_NULL": (0, ARG_PTR_TO_BTF_ID_OR_NULL),
    "ARG_PTR_TO_UNINIT_MEM": (0, ARG_PTR_TO_UNINIT_MEM),
    "ARG_PTR_TO_FIXED_SIZE_MEM": (0, ARG_PTR_TO_FIXED_SIZE_MEM),
    "ARG_PTR_TO_RINGBUF_MEM": (0, ARG_PTR_TO_RINGBUF_MEM),
    "RET_PTR_TO_MAP_VALUE_OR_NULL": (1, RET_PTR_TO_MAP_VALUE_OR_NULL),
    "RET_PTR_TO_SOCKET_OR_NULL": (1, RET_PTR_TO_SOCKET_OR_NULL),
    "RET_PTR_TO_TCP_SOCK_OR_NULL": (1, RET_PTR_TO_TCP_SOCK_OR_NULL),
    "RET_PTR_TO_SOCK_COMMON_OR_NULL": (1, RET_PTR_TO_SOCK_COMMON_OR_NULL),
    "RET_PTR_TO_RINGBUF_MEM_OR_NULL": (1, RET_PTR_TO_RINGBUF_MEM_OR_NULL),
    "RET_PTR_TO_BTF_ID_OR_NULL": (1, RET_PTR_TO_BTF_ID_OR_NULL),
}
__all__ += [*ArgType.__members__, *RetType.__members__, *TypeFlag.__members__, *_ALIASES]


def base_type(t: int) -> int:
    """The base type of an extended arg/ret type (its low 8 bits).

        >>> base_type(ARG_PTR_TO_MEM | MEM_RDONLY) == ARG_PTR_TO_MEM
        True
    """
    return t & _BASE_MASK


def type_flags(t: int) -> TypeFlag:
    """The :class:`TypeFlag` bits of an extended arg/ret type.

        >>> type_flags(ARG_PTR_TO_UNINIT_MEM) == MEM_UNINIT | MEM_WRITE
        True
    """
    return TypeFlag(t & ~_BASE_MASK)


def type_name(t: int, ret: bool = False) -> str:
    """Spell an extended type as kernel source would.

    A kernel alias is used when it covers the type exactly or with flags
    left over::

        >>> type_name(ARG_PTR_TO_MEM | PTR_MAYBE_NULL | MEM_RDONLY)
        'ARG_PTR_TO_MEM_OR_NULL|MEM_RDONLY'
        >>> type_name(RET_PTR_TO_RINGBUF_MEM_OR_NULL, ret=True)
        'RET_PTR_TO_RINGBUF_MEM_OR_NULL'
    """
    kind = 1 if ret else 0
    best, best_flags = None, 0
    for name, (k, value) in _ALIASES.items():
        if k == kind and base_type(value) == base_type(t) and (t & value) == value:
            if best is None or bin(value).count("1") > bin(best_flags).count("1"):
                best, best_flags = name, value
    if best is None:
        best = (RetType if ret else ArgType)(base_type(t)).name
        best_flags = base_type(t)
    rest = TypeFlag(t & ~best_flags & ~_BASE_MASK)
    names = [f.name for f in TypeFlag if f in rest]
    return "|".join([best, *names])


class Proto(NamedTuple):
    """A helper's ``struct bpf_func_proto`` (without gpl_only: see :data:`GPL_ONLY`).

    ``args`` lists the argument types of r1, r2, ... (trailing
    ``ARG_DONTCARE`` left out); ``arg_size`` maps an argument number (1..5)
    to the fixed size of a ``MEM_FIXED_SIZE`` argument.
    """

    ret: int
    args: Tuple[int, ...] = ()
    pkt_access: bool = False       # may be given packet pointers directly
    arg_size: Tuple[Tuple[int, int], ...] = ()
    name: str = ""

    def arg(self, regno: int) -> int:
        """The type of argument register ``regno`` (1..5)."""
        return self.args[regno - 1] if regno <= len(self.args) else ARG_DONTCARE

    def __str__(self) -> str:
        args = ", ".join(type_name(a) for a in self.args) or "void"
        return f"{type_name(self.ret, ret=True)} {self.name}({args})"


def _p(func: F, ret: int, *args: int, pkt_access: bool = False,
       arg_size: Tuple[Tuple[int, int], ...] = ()) -> Tuple[int, Proto]:
    return int(func), Proto(int(ret), tuple(int(a) for a in args), pkt_access, arg_size,
                            "bpf_" + func.name)


_MAP_KEY = (ARG_CONST_MAP_PTR, ARG_PTR_TO_MAP_KEY)
_PROBE_READ = (ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO, ARG_ANYTHING)
_STRTO = (ARG_PTR_TO_MEM | MEM_RDONLY, ARG_CONST_SIZE, ARG_ANYTHING,
          ARG_PTR_TO_FIXED_SIZE_MEM | MEM_UNINIT | MEM_WRITE | MEM_ALIGNED)
_CTX_ANY = (ARG_PTR_TO_CTX, ARG_ANYTHING)
_CSUM_REPLACE = (ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_ANYTHING, ARG_ANYTHING, ARG_ANYTHING)
_RO_MEM = ARG_PTR_TO_MEM | MEM_RDONLY
_RO_MEM_OR_NULL = ARG_PTR_TO_MEM | PTR_MAYBE_NULL | MEM_RDONLY

# The prototypes the verifier needs first: every helper userbpf implements or
# is about to.  Learned from kernel/bpf/helpers.c, kernel/trace/bpf_trace.c,
# net/core/filter.c, kernel/bpf/ringbuf.c (6.18).  Where a program type gets
# a different proto for the same id, PROTO_VARIANTS has it.
PROTOS: Dict[int, Proto] = dict([
    _p(F.map_lookup_elem, RET_PTR_TO_MAP_VALUE_OR_NULL, *_MAP_KEY, pkt_access=True),
    _p(F.map_update_elem, RET_INTEGER, *_MAP_KEY, ARG_PTR_TO_MAP_VALUE, ARG_ANYTHING,
       pkt_access=True),
    _p(F.map_delete_elem, RET_INTEGER, *_MAP_KEY, pkt_access=True),
    _p(F.map_push_elem, RET_INTEGER, ARG_CONST_MAP_PTR, ARG_PTR_TO_MAP_VALUE, ARG_ANYTHING,
       pkt_access=True),
    _p(F.map_pop_elem, RET_INTEGER, ARG_CONST_MAP_PTR,
       ARG_PTR_TO_MAP_VALUE | MEM_UNINIT | MEM_WRITE),
    _p(F.map_peek_elem, RET_INTEGER, ARG_CONST_MAP_PTR,
       ARG_PTR_TO_MAP_VALUE | MEM_UNINIT | MEM_WRITE),
    _p(F.map_lookup_percpu_elem, RET_PTR_TO_MAP_VALUE_OR_NULL, *_MAP_KEY, ARG_ANYTHING,
       pkt_access=True),
    _p(F.probe_read, RET_INTEGER, *_PROBE_READ),
    _p(F.probe_read_str, RET_INTEGER, *_PROBE_READ),
    _p(F.probe_read_user, RET_INTEGER, *_PROBE_READ),
    _p(F.probe_read_kernel, RET_INTEGER, *_PROBE_READ),
    _p(F.probe_read_user_str, RET_INTEGER, *_PROBE_READ),
    _p(F.probe_read_kernel_str, RET_INTEGER, *_PROBE_READ),
    _p(F.ktime_get_ns, RET_INTEGER),
    _p(F.ktime_get_boot_ns, RET_INTEGER),
    _p(F.ktime_get_coarse_ns, RET_INTEGER),
    _p(F.jiffies64, RET_INTEGER),
    _p(F.get_prandom_u32, RET_INTEGER),
    _p(F.get_smp_processor_id, RET_INTEGER),
    _p(F.get_numa_node_id, RET_INTEGER),
    _p(F.get_current_pid_tgid, RET_INTEGER),
    _p(F.get_current_uid_gid, RET_INTEGER),
    _p(F.get_current_comm, RET_INTEGER, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE),
    _p(F.trace_printk, RET_INTEGER, _RO_MEM, ARG_CONST_SIZE),
    _p(F.trace_vprintk, RET_INTEGER, _RO_MEM, ARG_CONST_SIZE, _RO_MEM_OR_NULL,
       ARG_CONST_SIZE_OR_ZERO),
    _p(F.snprintf, RET_INTEGER, ARG_PTR_TO_MEM_OR_NULL | MEM_WRITE, ARG_CONST_SIZE_OR_ZERO,
       ARG_PTR_TO_CONST_STR, _RO_MEM_OR_NULL, ARG_CONST_SIZE_OR_ZERO),
    _p(F.strtol, RET_INTEGER, *_STRTO, arg_size=((4, 8),)),
    _p(F.strtoul, RET_INTEGER, *_STRTO, arg_size=((4, 8),)),
    _p(F.strncmp, RET_INTEGER, _RO_MEM, ARG_CONST_SIZE, ARG_PTR_TO_CONST_STR),
    _p(F.tail_call, RET_VOID, ARG_PTR_TO_CTX, ARG_CONST_MAP_PTR, ARG_ANYTHING),
    _p(F.loop, RET_INTEGER, ARG_ANYTHING, ARG_PTR_TO_FUNC, ARG_PTR_TO_STACK_OR_NULL,
       ARG_ANYTHING),
    _p(F.for_each_map_elem, RET_INTEGER, ARG_CONST_MAP_PTR, ARG_PTR_TO_FUNC,
       ARG_PTR_TO_STACK_OR_NULL, ARG_ANYTHING),
    _p(F.spin_lock, RET_VOID, ARG_PTR_TO_SPIN_LOCK),
    _p(F.spin_unlock, RET_VOID, ARG_PTR_TO_SPIN_LOCK),
    _p(F.csum_diff, RET_INTEGER, _RO_MEM_OR_NULL, ARG_CONST_SIZE_OR_ZERO, _RO_MEM_OR_NULL,
       ARG_CONST_SIZE_OR_ZERO, ARG_ANYTHING, pkt_access=True),
    _p(F.perf_event_output, RET_INTEGER, ARG_PTR_TO_CTX, ARG_CONST_MAP_PTR, ARG_ANYTHING,
       _RO_MEM, ARG_CONST_SIZE_OR_ZERO),
    _p(F.ringbuf_output, RET_INTEGER, ARG_CONST_MAP_PTR, _RO_MEM, ARG_CONST_SIZE_OR_ZERO,
       ARG_ANYTHING),
    _p(F.ringbuf_reserve, RET_PTR_TO_RINGBUF_MEM_OR_NULL, ARG_CONST_MAP_PTR,
       ARG_CONST_ALLOC_SIZE_OR_ZERO, ARG_ANYTHING),
    _p(F.ringbuf_submit, RET_VOID, ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE, ARG_ANYTHING),
    _p(F.ringbuf_discard, RET_VOID, ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE, ARG_ANYTHING),
    _p(F.ringbuf_query, RET_INTEGER, ARG_CONST_MAP_PTR, ARG_ANYTHING),
    # socket buffers (net/core/filter.c)
    _p(F.skb_load_bytes, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_PTR_TO_UNINIT_MEM,
       ARG_CONST_SIZE),
    _p(F.skb_store_bytes, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, _RO_MEM, ARG_CONST_SIZE,
       ARG_ANYTHING),
    _p(F.l3_csum_replace, RET_INTEGER, *_CSUM_REPLACE),
    _p(F.l4_csum_replace, RET_INTEGER, *_CSUM_REPLACE),
    _p(F.skb_change_head, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_ANYTHING),
    _p(F.skb_change_tail, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_ANYTHING),
    _p(F.skb_adjust_room, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_ANYTHING,
       ARG_ANYTHING),
    _p(F.skb_pull_data, RET_INTEGER, *_CTX_ANY),
    _p(F.get_socket_cookie, RET_INTEGER, ARG_PTR_TO_CTX),
    _p(F.get_hash_recalc, RET_INTEGER, ARG_PTR_TO_CTX),
    _p(F.set_hash, RET_INTEGER, *_CTX_ANY),
    _p(F.set_hash_invalid, RET_INTEGER, ARG_PTR_TO_CTX),
    _p(F.redirect, RET_INTEGER, ARG_ANYTHING, ARG_ANYTHING),
    _p(F.redirect_map, RET_INTEGER, ARG_CONST_MAP_PTR, ARG_ANYTHING, ARG_ANYTHING),
    # XDP
    _p(F.xdp_adjust_head, RET_INTEGER, *_CTX_ANY),
    _p(F.xdp_adjust_tail, RET_INTEGER, *_CTX_ANY),
    _p(F.xdp_adjust_meta, RET_INTEGER, *_CTX_ANY),
    _p(F.xdp_get_buff_len, RET_INTEGER, ARG_PTR_TO_CTX),
    _p(F.xdp_load_bytes, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, ARG_PTR_TO_UNINIT_MEM,
       ARG_CONST_SIZE),
    _p(F.xdp_store_bytes, RET_INTEGER, ARG_PTR_TO_CTX, ARG_ANYTHING, _RO_MEM, ARG_CONST_SIZE),
])

# (prog_type, helper id) -> the proto that type gets instead of PROTOS[id].
# Same-shaped per-type protos (bpf_skb_event_output_proto for
# perf_event_output, bpf_xdp_redirect_proto ...) are not repeated here.
PROTO_VARIANTS: Dict[Tuple[int, int], Proto] = {
    # BTF-typed programs get the tracing one: a BTF socket pointer, not the ctx.
    **{(t, F.get_socket_cookie): _p(F.get_socket_cookie, RET_INTEGER,
                                    ARG_PTR_TO_BTF_ID_SOCK_COMMON)[1]
       for t in (P.SYSCALL, P.TRACING, P.LSM)},
}


def proto_for(prog_type: int, helper_id: int) -> Optional[Proto]:
    """The prototype ``prog_type`` gets for ``helper_id`` (None: not tabled).

        >>> from userbpf.uapi import ProgType
        >>> proto_for(ProgType.XDP, 7).ret == RET_INTEGER
        True
    """
    return PROTO_VARIANTS.get((prog_type, helper_id), PROTOS.get(helper_id))


# --------------------------------------------------------------------------
# Which program type may call which helper (probed on Linux 6.18 as root).
# --------------------------------------------------------------------------


def _ids(*names: str) -> FrozenSet[int]:
    return frozenset(int(F[n]) for n in names)


# bpf_base_func_proto() for a privileged loader: what every probed type gets.
BASE = _ids(
    "map_lookup_elem", "map_update_elem", "map_delete_elem", "map_push_elem",
    "map_pop_elem", "map_peek_elem", "map_lookup_percpu_elem", "for_each_map_elem",
    "get_prandom_u32", "get_smp_processor_id", "get_numa_node_id", "tail_call",
    "ktime_get_ns", "ktime_get_boot_ns", "ktime_get_tai_ns", "jiffies64",
    "ringbuf_output", "ringbuf_reserve", "ringbuf_submit", "ringbuf_discard",
    "ringbuf_query", "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr",
    "ringbuf_discard_dynptr", "user_ringbuf_drain",
    "dynptr_from_mem", "dynptr_read", "dynptr_write", "dynptr_data",
    "loop", "strncmp", "strtol", "strtoul", "snprintf", "snprintf_btf",
    "spin_lock", "spin_unlock", "timer_init", "timer_set_callback", "timer_start",
    "timer_cancel", "kptr_xchg", "per_cpu_ptr", "this_cpu_ptr",
    "cgrp_storage_get", "cgrp_storage_delete", "task_storage_get", "task_storage_delete",
    # CAP_PERFMON part
    "trace_printk", "trace_vprintk", "probe_read_user", "probe_read_kernel",
    "probe_read_user_str", "probe_read_kernel_str", "copy_from_user",
    "copy_from_user_task", "get_current_task", "get_current_task_btf", "task_pt_regs",
    "get_current_pid_tgid", "get_current_uid_gid", "get_current_comm",
    "get_current_cgroup_id", "get_current_ancestor_cgroup_id", "get_cgroup_classid",
    "current_task_under_cgroup", "get_ns_current_pid_tgid", "get_task_stack",
    "get_branch_snapshot", "find_vma", "send_signal", "send_signal_thread",
    "perf_event_read", "perf_event_read_value",
)

# Groups of the kernel's per-family func_proto functions.
TRACE = _ids("probe_read", "probe_read_str", "get_stack", "get_stackid",
             "perf_event_output", "get_func_ip", "get_attach_cookie")
SKC_CASTS = _ids("skc_to_tcp6_sock", "skc_to_tcp_sock", "skc_to_tcp_timewait_sock",
                 "skc_to_tcp_request_sock", "skc_to_udp6_sock", "skc_to_unix_sock",
                 "skc_to_mptcp_sock")
SK_BASE = SKC_CASTS | _ids("ktime_get_coarse_ns")        # bpf_sk_base_func_proto
# tracing_prog_func_proto: what BTF-typed tracing programs add to TRACE
TRACING_PROG = SKC_CASTS | _ids("sk_storage_get", "sk_storage_delete", "get_socket_cookie",
                                "d_path", "sock_from_file", "skb_output", "xdp_output",
                                "xdp_get_buff_len")
SK_LOOKUP = _ids("sk_lookup_tcp", "sk_lookup_udp", "skc_lookup_tcp", "sk_release")
SYNCOOKIES = _ids("tcp_check_syncookie", "tcp_gen_syncookie",
                  "tcp_raw_gen_syncookie_ipv4", "tcp_raw_gen_syncookie_ipv6",
                  "tcp_raw_check_syncookie_ipv4", "tcp_raw_check_syncookie_ipv6")
CGROUP_COMMON = _ids("get_local_storage", "perf_event_output")
# cgroup_common_func_proto hands these out unless the attach type has no
# return value to read or set (see NO_RETVAL_ATTACH).
RETVAL = _ids("get_retval", "set_retval")
LWT_COMMON = _ids("skb_load_bytes", "skb_pull_data", "csum_diff", "get_hash_recalc",
                  "get_route_realm", "skb_under_cgroup", "perf_event_output")
SOCK_STORAGE = _ids("sk_storage_get", "sk_storage_delete")
SKB_READ = _ids("skb_load_bytes", "skb_load_bytes_relative")
TC = SK_BASE | SK_LOOKUP | SYNCOOKIES | SKB_READ | SOCK_STORAGE | _ids(
    "skb_store_bytes", "l3_csum_replace", "l4_csum_replace", "csum_diff", "csum_update",
    "csum_level", "skb_change_proto", "skb_change_type", "skb_change_tail",
    "skb_change_head", "skb_adjust_room", "skb_pull_data", "skb_vlan_push",
    "skb_vlan_pop", "skb_get_tunnel_key", "skb_set_tunnel_key", "skb_get_tunnel_opt",
    "skb_set_tunnel_opt", "skb_under_cgroup", "skb_cgroup_id", "skb_ancestor_cgroup_id",
    "skb_cgroup_classid", "skb_get_xfrm_state", "skb_ecn_set_ce", "skb_set_tstamp",
    "clone_redirect", "redirect", "redirect_neigh", "redirect_peer", "get_route_realm",
    "get_hash_recalc", "set_hash", "set_hash_invalid", "get_socket_cookie",
    "get_socket_uid", "get_netns_cookie", "perf_event_output", "fib_lookup",
    "check_mtu", "sk_fullsock", "tcp_sock", "get_listener_sock", "sk_assign")

# prog_type -> helper ids its get_func_proto() returns, for the attach type in
# DEFAULT_ATTACH (ATTACH_RULES adjust it for the others).
ALLOWED: Dict[int, FrozenSet[int]] = {
    P.UNSPEC: frozenset(),            # the kernel refuses the load itself
    P.SOCKET_FILTER: BASE | SK_BASE | SKB_READ | _ids(
        "perf_event_output", "get_socket_cookie", "get_socket_uid", "get_netns_cookie"),
    P.KPROBE: BASE | TRACE,
    P.SCHED_CLS: BASE | TC,
    P.SCHED_ACT: BASE | TC,
    P.TRACEPOINT: BASE | TRACE,
    P.XDP: BASE | SK_BASE | SK_LOOKUP | SYNCOOKIES | _ids(
        "perf_event_output", "csum_diff", "redirect", "redirect_map", "fib_lookup",
        "check_mtu", "xdp_adjust_head", "xdp_adjust_meta", "xdp_adjust_tail",
        "xdp_get_buff_len", "xdp_load_bytes", "xdp_store_bytes"),
    P.PERF_EVENT: BASE | TRACE | _ids("perf_prog_read_value", "read_branch_records"),
    P.CGROUP_SKB: BASE | SK_BASE | SK_LOOKUP | CGROUP_COMMON | SKB_READ | SOCK_STORAGE | _ids(
        "get_socket_cookie", "get_socket_uid", "get_netns_cookie", "get_listener_sock",
        "sk_fullsock", "tcp_sock", "sk_cgroup_id", "sk_ancestor_cgroup_id",
        "skb_cgroup_id", "skb_ancestor_cgroup_id", "skb_ecn_set_ce"),
    P.CGROUP_SOCK: BASE | CGROUP_COMMON | RETVAL | _ids(
        "ktime_get_coarse_ns", "get_socket_cookie", "get_netns_cookie", "sk_storage_get"),
    P.LWT_IN: BASE | SK_BASE | LWT_COMMON | _ids("lwt_push_encap"),
    P.LWT_OUT: BASE | SK_BASE | LWT_COMMON,
    P.LWT_XMIT: BASE | SK_BASE | LWT_COMMON | _ids(
        "lwt_push_encap", "skb_store_bytes", "l3_csum_replace", "l4_csum_replace",
        "csum_update", "csum_level", "skb_change_head", "skb_change_tail",
        "skb_get_tunnel_key", "skb_set_tunnel_key", "skb_get_tunnel_opt",
        "skb_set_tunnel_opt", "clone_redirect", "redirect", "set_hash_invalid"),
    P.SOCK_OPS: BASE | SK_BASE | CGROUP_COMMON | SOCK_STORAGE | _ids(
        "get_socket_cookie", "get_netns_cookie", "setsockopt", "getsockopt",
        "sock_ops_cb_flags_set", "sock_map_update", "sock_hash_update", "tcp_sock",
        "load_hdr_opt", "store_hdr_opt", "reserve_hdr_opt"),
    P.SK_SKB: BASE | SK_BASE | SK_LOOKUP | _ids(
        "skb_load_bytes", "skb_store_bytes", "skb_pull_data", "skb_change_tail",
        "skb_change_head", "skb_adjust_room", "get_socket_cookie", "get_socket_uid",
        "sk_redirect_map", "sk_redirect_hash", "perf_event_output"),
    P.CGROUP_DEVICE: BASE | CGROUP_COMMON | RETVAL,
    P.SK_MSG: BASE | SK_BASE | SOCK_STORAGE | _ids(
        "msg_redirect_map", "msg_redirect_hash", "msg_apply_bytes", "msg_cork_bytes",
        "msg_pull_data", "msg_push_data", "msg_pop_data", "get_netns_cookie",
        "perf_event_output"),
    P.RAW_TRACEPOINT: BASE | TRACE,
    P.CGROUP_SOCK_ADDR: BASE | SK_BASE | SK_LOOKUP | CGROUP_COMMON | RETVAL | SOCK_STORAGE
    | _ids("get_socket_cookie", "get_netns_cookie", "setsockopt", "getsockopt"),
    P.LWT_SEG6LOCAL: BASE | SK_BASE | LWT_COMMON | _ids(
        "lwt_seg6_store_bytes", "lwt_seg6_adjust_srh", "lwt_seg6_action"),
    P.SK_REUSEPORT: BASE | SKB_READ | _ids("sk_select_reuseport", "get_socket_cookie",
                                           "ktime_get_coarse_ns"),
    P.FLOW_DISSECTOR: BASE | SK_BASE | _ids("skb_load_bytes"),
    P.CGROUP_SYSCTL: BASE | CGROUP_COMMON | RETVAL | _ids(
        "sysctl_get_name", "sysctl_get_current_value", "sysctl_get_new_value",
        "sysctl_set_new_value", "ktime_get_coarse_ns"),
    P.RAW_TRACEPOINT_WRITABLE: BASE | TRACE,
    P.CGROUP_SOCKOPT: BASE | CGROUP_COMMON | RETVAL | SOCK_STORAGE | _ids(
        "get_netns_cookie", "tcp_sock"),
    P.SK_LOOKUP: BASE | SK_BASE | _ids("sk_assign", "sk_release", "perf_event_output"),
    P.SYSCALL: BASE | TRACE - _ids("get_attach_cookie") | TRACING_PROG | _ids(
        "sys_bpf", "sys_close", "btf_find_by_name_kind", "kallsyms_lookup_name"),
    # Probed with expected_attach_type TRACE_RAW_TP and TRACE_ITER (ATTACH_RULES);
    # fentry/fexit/fmod_ret are not (NOT_PROBED_ATTACH) and get the same set.
    P.TRACING: BASE | TRACE | TRACING_PROG,
    P.NETFILTER: BASE,
    # Not probed (see NOT_PROBED): conservative, a subset of what the kernel allows.
    P.LIRC_MODE2: BASE | _ids("rc_repeat", "rc_keydown", "rc_pointer_rel"),
    P.LSM: BASE | TRACE,
    P.EXT: BASE,
    P.STRUCT_OPS: BASE,
}

NOT_PROBED: Dict[int, str] = {
    P.LSM: "a load with the attach_btf_id of an LSM hook fails with EPERM before "
           "verification on this kernel; the kernel also allows inode_storage_*, "
           "bprm_opts_set, ima_* ...",
    P.EXT: "needs attach_prog_fd: an EXT program gets its target program's helpers",
    P.STRUCT_OPS: "the helpers depend on the struct_ops type and member (attach_btf_id, "
                  "expected_attach_type); BASE is what every one gets: tcp_congestion_ops "
                  "adds tcp_send_ack, setsockopt/getsockopt, sk_storage_* and "
                  "ktime_get_coarse_ns",
    P.LIRC_MODE2: "this kernel is built without CONFIG_BPF_LIRC_MODE2 (the load fails "
                  "with EINVAL before verification)",
}

# TRACING attach types left out of the probe (the type itself is probed with
# TRACE_RAW_TP and TRACE_ITER, which need the attach_btf_id of a tracepoint
# typedef / an iterator in vmlinux BTF).
NOT_PROBED_ATTACH: Dict[Tuple[int, int], str] = {
    (P.TRACING, A.TRACE_FENTRY): "load fails with EPERM before verification on this "
                                 "kernel; the kernel also allows get_func_arg ...",
    (P.TRACING, A.TRACE_FEXIT): "as TRACE_FENTRY; the kernel also allows get_func_ret",
    (P.TRACING, A.MODIFY_RETURN): "as TRACE_FEXIT",
}

# The expected_attach_type a type is assumed to be loaded with when none is
# given (what libbpf sets for its usual SEC() name).  The kernel refuses
# CGROUP_SOCK_ADDR, CGROUP_SOCKOPT, SK_LOOKUP and NETFILTER loads without one.
DEFAULT_ATTACH: Dict[int, int] = {
    P.CGROUP_SKB: A.CGROUP_INET_INGRESS,
    P.CGROUP_SOCK: A.CGROUP_INET_SOCK_CREATE,
    P.CGROUP_DEVICE: A.CGROUP_DEVICE,
    P.CGROUP_SOCK_ADDR: A.CGROUP_INET4_BIND,
    P.CGROUP_SYSCTL: A.CGROUP_SYSCTL,
    P.CGROUP_SOCKOPT: A.CGROUP_GETSOCKOPT,
    P.SOCK_OPS: A.CGROUP_SOCK_OPS,
    P.SK_REUSEPORT: A.SK_REUSEPORT_SELECT,
    P.SK_LOOKUP: A.SK_LOOKUP,
    P.NETFILTER: A.NETFILTER,
    P.LIRC_MODE2: A.LIRC_MODE2,
    P.TRACING: A.TRACE_RAW_TP,
    P.LSM: A.LSM_MAC,
}

# Attach types whose hook has no return value for bpf_get/set_retval
# (cgroup_common_func_proto).  Note expected_attach_type 0 is
# CGROUP_INET_INGRESS, so a CGROUP_DEVICE or CGROUP_SYSCTL program loaded
# without an attach type does not get them either.
NO_RETVAL_ATTACH = frozenset({
    A.CGROUP_INET_INGRESS, A.CGROUP_INET_EGRESS, A.CGROUP_SOCK_OPS,
    A.CGROUP_UDP4_RECVMSG, A.CGROUP_UDP6_RECVMSG, A.CGROUP_UNIX_RECVMSG,
    A.CGROUP_INET4_GETPEERNAME, A.CGROUP_INET6_GETPEERNAME, A.CGROUP_UNIX_GETPEERNAME,
    A.CGROUP_INET4_GETSOCKNAME, A.CGROUP_INET6_GETSOCKNAME, A.CGROUP_UNIX_GETSOCKNAME,
})


class _AttachRule(NamedTuple):
    prog_type: int
    attach_types: FrozenSet[int]      # empty: every attach type
    add: FrozenSet[int]
    remove: FrozenSet[int]


# Helpers that depend on expected_attach_type as well as the program type.
ATTACH_RULES: Tuple[_AttachRule, ...] = (
    # bind() is only meaningful where the program runs before connect()
    _AttachRule(P.CGROUP_SOCK_ADDR, frozenset({A.CGROUP_INET4_CONNECT,
                                               A.CGROUP_INET6_CONNECT}),
                _ids("bind"), frozenset()),
    # setsockopt/getsockopt from inside a sockopt hook only when setting
    _AttachRule(P.CGROUP_SOCKOPT, frozenset({A.CGROUP_SETSOCKOPT}),
                _ids("setsockopt", "getsockopt"), frozenset()),
    # iterators print into a seq_file, and have no attach cookie
    _AttachRule(P.TRACING, frozenset({A.TRACE_ITER}),
                _ids("seq_printf", "seq_write", "seq_printf_btf"), _ids("get_attach_cookie")),
    *(_AttachRule(t, NO_RETVAL_ATTACH, frozenset(), RETVAL)
      for t in (P.CGROUP_SOCK, P.CGROUP_DEVICE, P.CGROUP_SOCK_ADDR, P.CGROUP_SYSCTL,
                P.CGROUP_SOCKOPT)),
)

# Helpers the kernel refuses to call from a program whose licence is not
# GPL-compatible (bpf_func_proto.gpl_only), wherever the type allows them;
# GPL_EXCEPTIONS lists the (type, attach) that get a proto with the other flag.
GPL_ONLY = _ids(
    "probe_read", "probe_read_str", "probe_read_user", "probe_read_kernel",
    "probe_read_user_str", "probe_read_kernel_str", "trace_printk", "trace_vprintk",
    "snprintf", "get_current_task", "get_current_task_btf", "task_pt_regs",
    "copy_from_user_task", "get_branch_snapshot", "get_func_ip", "get_stack",
    "get_stackid", "perf_event_output", "perf_event_read", "perf_event_read_value",
    "perf_prog_read_value", "read_branch_records", "skb_output", "xdp_output",
    "timer_init", "timer_set_callback", "timer_start", "timer_cancel",
    "fib_lookup", "check_mtu", *sorted(F(i).name for i in SYNCOOKIES),
    "seq_printf", "seq_write", "seq_printf_btf",
    # not probed (see NOT_PROBED), from the kernel source
    "override_return", "probe_write_user", "rc_repeat", "rc_keydown", "rc_pointer_rel",
)

# (prog_type, attach types or empty for all) -> {helper id: gpl_only}
GPL_EXCEPTIONS: Tuple[Tuple[int, FrozenSet[int], Dict[int, bool]], ...] = (
    # bpf_get_stackid_proto_pe
    (P.PERF_EVENT, frozenset(), {F.get_stackid: False}),
    # bpf_get_func_ip_proto_kprobe_multi / _uprobe_multi
    (P.KPROBE, frozenset({A.TRACE_KPROBE_MULTI, A.TRACE_UPROBE_MULTI,
                          A.TRACE_KPROBE_SESSION, A.TRACE_UPROBE_SESSION}),
     {F.get_func_ip: False}),
)


class HelperInfo(NamedTuple):
    """One row of the helper table."""

    id: int
    name: str
    gpl_only: bool                 # as most program types get it
    proto: Optional[Proto]


def helper_info(helper_id: int) -> HelperInfo:
    """Name, GPL flag and prototype (when tabled) of ``helper_id``.

        >>> helper_info(6)[:3]
        (6, 'bpf_trace_printk', True)
    """
    if not 1 <= helper_id <= MAX_HELPER_ID:
        raise ValueError(f"invalid func {helper_name(helper_id)}#{helper_id}")
    return HelperInfo(helper_id, helper_name(helper_id), helper_id in GPL_ONLY,
                      PROTOS.get(helper_id))


def _attach(prog_type: int, expected_attach_type: Optional[int]) -> int:
    if expected_attach_type is None:
        return DEFAULT_ATTACH.get(prog_type, 0)
    return expected_attach_type


def allowed_helpers(prog_type: int, expected_attach_type: Optional[int] = None
                    ) -> FrozenSet[int]:
    """Every helper id a ``prog_type`` program may call.

    ``expected_attach_type`` None means the type's usual one
    (:data:`DEFAULT_ATTACH`)::

        >>> from userbpf.uapi import ProgType, AttachType, Func
        >>> Func.bind in allowed_helpers(ProgType.CGROUP_SOCK_ADDR)
        False
        >>> Func.bind in allowed_helpers(ProgType.CGROUP_SOCK_ADDR,
        ...                              AttachType.CGROUP_INET4_CONNECT)
        True
    """
    ids = ALLOWED.get(prog_type, frozenset())
    eat = _attach(prog_type, expected_attach_type)
    for rule in ATTACH_RULES:
        if rule.prog_type == prog_type and (not rule.attach_types or eat in rule.attach_types):
            ids = (ids | rule.add) - rule.remove
    return ids


def helper_allowed(prog_type: int, helper_id: int,
                   expected_attach_type: Optional[int] = None) -> bool:
    """Does the kernel's get_func_proto give ``prog_type`` helper ``helper_id``?

        >>> from userbpf.uapi import ProgType, Func
        >>> helper_allowed(ProgType.SOCKET_FILTER, Func.skb_load_bytes)
        True
        >>> helper_allowed(ProgType.SOCKET_FILTER, Func.skb_store_bytes)
        False
    """
    return helper_id in allowed_helpers(prog_type, expected_attach_type)


def is_gpl_only(prog_type: int, helper_id: int,
                expected_attach_type: Optional[int] = None) -> bool:
    """Is the proto ``prog_type`` gets for ``helper_id`` GPL-only?

        >>> from userbpf.uapi import ProgType, Func
        >>> is_gpl_only(ProgType.KPROBE, Func.get_stackid)
        True
        >>> is_gpl_only(ProgType.PERF_EVENT, Func.get_stackid)
        False
    """
    eat = _attach(prog_type, expected_attach_type)
    for ptype, attach_types, flags in GPL_EXCEPTIONS:
        if ptype == prog_type and (not attach_types or eat in attach_types) \
                and helper_id in flags:
            return flags[helper_id]
    return helper_id in GPL_ONLY


def check_helper_call(prog_type: int, helper_id: int, gpl_compatible: bool,
                      implemented: Optional[Collection[int]] = None, *,
                      expected_attach_type: Optional[int] = None) -> Optional[str]:
    """Why the verifier refuses ``call helper_id`` here, or None if it does not.

    The checks come in the kernel's order (check_helper_call): an id out of
    range, then a helper the type's get_func_proto does not give, then a
    GPL-only helper in a non-GPL program.  Last comes userbpf's own refusal:
    a helper the kernel would allow but ``implemented`` (ids userbpf can run;
    None: skip this check) lacks::

        >>> from userbpf.uapi import ProgType
        >>> check_helper_call(ProgType.XDP, 212, True)
        'invalid func unknown#212'
        >>> check_helper_call(ProgType.XDP, 6, False)
        'cannot call GPL-restricted function from non-GPL compatible program'
        >>> check_helper_call(ProgType.XDP, 44, True, implemented={1, 2})
        'helper bpf_xdp_adjust_head#44 is not implemented by userbpf'
        >>> check_helper_call(ProgType.XDP, 1, False, implemented={1, 2}) is None
        True
    """
    if not 0 <= helper_id <= MAX_HELPER_ID:
        return f"invalid func {helper_name(helper_id)}#{helper_id}"
    if not helper_allowed(prog_type, helper_id, expected_attach_type):
        return f"program of this type cannot use helper {helper_name(helper_id)}#{helper_id}"
    if not gpl_compatible and is_gpl_only(prog_type, helper_id, expected_attach_type):
        return "cannot call GPL-restricted function from non-GPL compatible program"
    if implemented is not None and helper_id not in implemented:
        return f"helper {helper_name(helper_id)}#{helper_id} is not implemented by userbpf"
    return None
