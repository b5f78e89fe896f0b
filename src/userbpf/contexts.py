"""Every program type's context as data: the UAPI struct and its access rules.

A program's ``r1`` points to its *context*: ``struct __sk_buff`` for socket
filters and tc, ``struct xdp_md`` for XDP, ``struct bpf_sock_addr`` for the
cgroup connect/bind hooks, and so on.  The kernel's verifier decides, per
program type (and sometimes per ``expected_attach_type``), which bytes of that
struct a program may load or store and at which sizes; these rules live in the
``*_is_valid_access`` functions of net/core/filter.c, kernel/trace/bpf_trace.c,
kernel/bpf/cgroup.c and friends.  This module holds them as data, each table
written from the kernel's rules and compared with the live kernel by
``tests/test_contexts_kernel.py``.

Internal layout.  At run time ``r1`` points to an *internal* context whose
first ``sizeof(uapi struct)`` bytes hold the uapi struct at the same offsets:
plain fields are accessed in place.  Every pointer field (``data``,
``data_end``, ``sk``, ``optval`` ...) instead lives in an 8-byte slot after the
struct, at ``align8(sizeof) + 8 * CtxPtr.<kind>``, so a 4-byte load of
``xdp_md.data`` becomes an 8-byte load of the ``PKT`` slot.

    >>> from userbpf.uapi import ProgType, AttachType
    >>> s = ctx_struct(ProgType.XDP)
    >>> s.name, s.size, s.internal_size - s.size == 8 * len(CtxPtr)
    ('xdp_md', 24, True)
    >>> check_ctx_access(ProgType.XDP, 0, 0, 4, False)        # xdp_md.data
    CtxAccess(off=24, size=8, ptr=<CtxPtr.PKT: 0>)
    >>> check_ctx_access(ProgType.SCHED_CLS, 0, 8, 2, False)  # (u16) __sk_buff.mark
    CtxAccess(off=8, size=2, ptr=None)
    >>> check_ctx_access(ProgType.SOCKET_FILTER, 0, 8, 4, True)
    Traceback (most recent call last):
    ...
    userbpf.contexts.CtxAccessError: invalid bpf_context access off=8 size=4
"""
from __future__ import annotations

import functools
from enum import IntEnum
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .uapi import AttachType, ProgType

__all__ = [
    "CtxPtr", "Field", "CtxStruct", "CtxAccess", "CtxAccessError",
    "ctx_struct", "check_ctx_access", "ctx_fields_access", "may_access_skb",
    "may_access_direct_pkt_data", "STRUCTS", "LOAD_ATTACH_TYPES",
]


class CtxPtr(IntEnum):
    """Kinds of pointer a context load can yield; also each pointer's slot index.

    The slot of kind ``k`` sits at ``align8(sizeof uapi struct) + 8 * k`` in
    the internal context.  New kinds are only ever appended.
    """

    PKT = 0          # packet start: __sk_buff.data, xdp_md.data, sk_msg_md.data ...
    PKT_END = 1      # packet end
    PKT_META = 2     # metadata start (tc, xdp)
    FLOW_KEYS = 3    # struct bpf_flow_keys * (flow dissector)
    SOCK = 4         # struct bpf_sock * (__sk_buff.sk, sk_msg_md.sk ...)
    SOCK2 = 5        # sk_reuseport_md.migrating_sk
    OPTVAL = 6       # bpf_sockopt.optval
    OPTVAL_END = 7   # bpf_sockopt.optval_end
    TP_BUFFER = 8    # raw_tracepoint_writable args[0]: the writable tracepoint buffer
    NF_STATE = 9     # bpf_nf_ctx.state (const struct nf_hook_state *, BTF)
    NF_SKB = 10      # bpf_nf_ctx.skb (struct sk_buff *, BTF)


N_PTR_SLOTS = len(CtxPtr)


class Field(NamedTuple):
    """One member of a uapi struct; arrays are listed element by element."""

    name: str
    off: int
    size: int


class CtxStruct(NamedTuple):
    """A context struct: ``size`` is its ``sizeof``; ``internal_size`` adds the pointer slots.

    >>> s = ctx_struct(ProgType.CGROUP_DEVICE)
    >>> s.name, s.size, [f.name for f in s.fields]
    ('bpf_cgroup_dev_ctx', 12, ['access_type', 'major', 'minor'])
    >>> s.field("minor")
    Field(name='minor', off=8, size=4)
    >>> s.slot(CtxPtr.PKT_END)      # align8(12) + 8 * 1
    24
    """

    name: str
    size: int
    fields: Tuple[Field, ...]
    internal_size: int

    def field(self, name: str) -> Field:
        """The member called ``name`` (KeyError if there is none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no member {name!r}")

    def field_at(self, off: int) -> Optional[Field]:
        """The first member covering byte ``off``, or None (padding, past the end)."""
        for f in self.fields:
            if f.off <= off < f.off + f.size:
                return f
        return None

    def slot(self, kind: CtxPtr) -> int:
        """Internal offset of the 8-byte slot holding pointer ``kind``."""
        return _align8(self.size) + 8 * int(kind)


class CtxAccess(NamedTuple):
    """What a permitted ctx access becomes in the internal context."""

    off: int                 # internal offset to access
    size: int                # internal access size in bytes (1, 2, 4, 8)
    ptr: Optional[CtxPtr]    # the pointer kind a load yields, None for a scalar


class CtxAccessError(Exception):
    """A ctx access the kernel's verifier refuses; the message is the kernel's text."""


def _align8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------
# The uapi structs.  A layout is written as (name, size[, count]) members in
# order, each naturally aligned like C does; arrays become name[i] elements.
# Unions are written with "|" members that restart at the union's offset.
# --------------------------------------------------------------------------

def _layout(name: str, members: Sequence[tuple], size: Optional[int] = None) -> CtxStruct:
    fields: List[Field] = []
    off = 0
    union_start = None
    union_end = 0
    max_align = 1
    for m in members:
        mname, msize = m[0], m[1]
        count = m[2] if len(m) > 2 else 0
        if mname.startswith("|"):           # another member of the current union
            mname = mname[1:]
            if union_start is None:
                union_start = fields[-1].off if fields else 0
                union_end = off
            off = union_start
        elif union_start is not None:       # the union ended
            off = max(off, union_end)
            union_start = None
        align = min(msize, 8)
        max_align = max(max_align, align)
        off = (off + align - 1) // align * align
        if count:
            for i in range(count if not mname.startswith("_pad") else 0):
                fields.append(Field(f"{mname}[{i}]", off + i * msize, msize))
            off += count * msize
        else:
            if not mname.startswith("_pad"):
                fields.append(Field(mname, off, msize))
            off += msize
        if union_start is not None:
            union_end = max(union_end, off)
    if union_start is not None:
        off = max(off, union_end)
    total = (off + max_align - 1) // max_align * max_align
    if size is not None:
        assert size == total, (name, size, total)
    return CtxStruct(name, total, tuple(fields), _align8(total) + 8 * N_PTR_SLOTS)


U8, U16, U32, U64 = 1, 2, 4, 8

SK_BUFF = _layout("__sk_buff", [
    ("len", U32), ("pkt_type", U32), ("mark", U32), ("queue_mapping", U32),
    ("protocol", U32), ("vlan_present", U32), ("vlan_tci", U32), ("vlan_proto", U32),
    ("priority", U32), ("ingress_ifindex", U32), ("ifindex", U32), ("tc_index", U32),
    ("cb", U32, 5), ("hash", U32), ("tc_classid", U32), ("data", U32), ("data_end", U32),
    ("napi_id", U32),
    # read by sk_skb / cgroup_skb, from here ...
    ("family", U32), ("remote_ip4", U32), ("local_ip4", U32), ("remote_ip6", U32, 4),
    ("local_ip6", U32, 4), ("remote_port", U32), ("local_port", U32),
    # ... to here
    ("data_meta", U32), ("flow_keys", U64), ("tstamp", U64), ("wire_len", U32),
    ("gso_segs", U32), ("sk", U64), ("gso_size", U32), ("tstamp_type", U8),
    ("_pad", U8, 3), ("hwtstamp", U64),
], size=192)

XDP_MD = _layout("xdp_md", [
    ("data", U32), ("data_end", U32), ("data_meta", U32), ("ingress_ifindex", U32),
    ("rx_queue_index", U32), ("egress_ifindex", U32),
], size=24)

CGROUP_DEV_CTX = _layout("bpf_cgroup_dev_ctx", [
    ("access_type", U32), ("major", U32), ("minor", U32),
], size=12)

SYSCTL = _layout("bpf_sysctl", [("write", U32), ("file_pos", U32)], size=8)

STRUCTS: Dict[str, CtxStruct] = {s.name: s for s in (SK_BUFF, XDP_MD, CGROUP_DEV_CTX, SYSCTL)}


# --------------------------------------------------------------------------
# Access tables.  A _Table collects every permitted (off, size, write) of one
# context variant, built by methods that mirror the kernel's switch cases.
# --------------------------------------------------------------------------

SIZES = (1, 2, 4, 8)


class _Table:
    """The permitted accesses of one (prog_type, expected_attach_type)."""

    def __init__(self, struct: CtxStruct):
        self.struct = struct
        self.ok: Dict[Tuple[int, int, bool], CtxAccess] = {}
        # Big regions (tracepoint, syscall) are kept as ranges, not enumerated:
        # (lo, hi, sizes, write)
        self.spans: List[Tuple[int, int, Tuple[int, ...], bool]] = []

    # -- selectors -----------------------------------------------------
    def _fields(self, names: Iterable[str]) -> List[Field]:
        out = []
        for n in names:
            if n.endswith("[]"):            # every element of an array
                base = n[:-2] + "["
                out.extend(f for f in self.struct.fields if f.name.startswith(base))
            else:
                out.append(self.struct.field(n))
        return out

    def _add(self, off: int, size: int, write: bool, ptr: Optional[CtxPtr]) -> None:
        if ptr is None:
            acc = CtxAccess(off, size, None)
        else:
            acc = CtxAccess(self.struct.slot(ptr), 8, ptr)
        self.ok[(off, size, write)] = acc

    # -- rules -----------------------------------------------------------
    def full(self, *names: str, read: bool = True, write: bool = False,
             ptr: Optional[CtxPtr] = None) -> "_Table":
        """Only the field's own size at its own offset."""
        for f in self._fields(names):
            if read:
                self._add(f.off, f.size, False, ptr)
            if write:
                self._add(f.off, f.size, True, None)
        return self

    def narrow(self, *names: str, min_size: int = 1, write: bool = False,
               base: Optional[int] = None) -> "_Table":
        """Reads of any power of two <= the field (bpf_ctx_narrow_access_ok), aligned.

        ``base`` is the kernel's size_default when it differs from the field's
        size (a 2-byte field read through a 4-byte window...).  ``write``
        additionally permits the full-size store.
        """
        for f in self._fields(names):
            fsize = base or f.size
            for s in SIZES:
                if min_size <= s <= fsize:
                    for o in range(f.off, f.off + f.size, s):
                        if o % s == 0:
                            self._add(o, s, False, None)
            if write:
                self._add(f.off, f.size, True, None)
        return self

    def span(self, lo: int, hi: int, sizes: Sequence[int] = SIZES, read: bool = True,
             write: bool = False) -> "_Table":
        """Every aligned access of ``sizes`` inside [lo, hi)."""
        for s in sizes:
            for o in range((lo + s - 1) // s * s, hi - s + 1, s):
                if read:
                    self._add(o, s, False, None)
                if write:
                    self._add(o, s, True, None)
        return self

    def big_span(self, lo: int, hi: int, sizes: Sequence[int] = SIZES,
                 write: bool = False) -> "_Table":
        """Like span() for huge regions: kept as a range, checked arithmetically."""
        self.spans.append((lo, hi, tuple(sizes), False))
        if write:
            self.spans.append((lo, hi, tuple(sizes), True))
        return self

    def drop(self, *names: str, read: bool = True, write: bool = True) -> "_Table":
        """Forbid every access touching these fields."""
        for f in self._fields(names):
            for key in list(self.ok):
                off, size, w = key
                if off < f.off + f.size and f.off < off + size and (w and write or not w and read):
                    del self.ok[key]
        return self

    def lookup(self, off: int, size: int, write: bool) -> Optional[CtxAccess]:
        acc = self.ok.get((off, size, write))
        if acc is not None:
            return acc
        for lo, hi, sizes, w in self.spans:
            if w == write and size in sizes and lo <= off and off + size <= hi and off % size == 0:
                return CtxAccess(off, size, None)
        return None


# --- __sk_buff ---------------------------------------------------------------
# bpf_skb_is_valid_access: the rules every __sk_buff program type starts from;
# each type then forbids some fields and picks its writable ones.

_SKB_PTRS = {"data": CtxPtr.PKT, "data_end": CtxPtr.PKT_END, "data_meta": CtxPtr.PKT_META}
# Fields whose only read is the full 4 bytes (the kernel converts them to
# pointer loads or socket field loads that cannot be narrowed).
_SKB_FULL_ONLY = ("remote_ip4", "local_ip4", "remote_ip6[]", "local_ip6[]")


def _skb_base(readable: Iterable[str], writable: Iterable[str]) -> _Table:
    """The generic __sk_buff rules restricted to ``readable`` and ``writable`` fields."""
    t = _Table(SK_BUFF)
    readable = set(readable)
    writable = set(writable)
    for f in SK_BUFF.fields:
        base = f.name.split("[")[0]
        if base not in readable:
            continue
        if base == "cb":
            continue                          # below: any size over the whole array
        if base in _SKB_PTRS:
            t.full(f.name, ptr=_SKB_PTRS[base])
        elif base == "sk":
            t.full(f.name, ptr=CtxPtr.SOCK)
        elif base in ("tstamp", "hwtstamp"):
            t.full(f.name, write=base in writable and base == "tstamp")
        elif base in ("flow_keys",):
            continue
        elif f.name in _SKB_FULL_ONLY or base in ("remote_ip6", "local_ip6"):
            t.full(f.name)
        else:
            t.narrow(f.name, write=base in writable)
    if "cb" in readable:
        cb0 = SK_BUFF.field("cb[0]").off
        t.span(cb0, cb0 + 20, write="cb" in writable)
    return t


_SKB_ALL = {f.name.split("[")[0] for f in SK_BUFF.fields} - {"flow_keys", "tstamp_type"}
_SK_SKB_SOCK_FIELDS = {"family", "remote_ip4", "local_ip4", "remote_ip6", "local_ip6",
                       "remote_port", "local_port"}


def _socket_filter(eat: int) -> _Table:
    # sk_filter_is_valid_access: no packet pointers, only cb[] writable.
    deny = {"tc_classid", "data", "data_meta", "data_end", "tstamp", "wire_len",
            "hwtstamp"} | _SK_SKB_SOCK_FIELDS
    return _skb_base(_SKB_ALL - deny, {"cb"})


def _tc(eat: int) -> _Table:
    # tc_cls_act_is_valid_access: everything but the sk_skb socket fields;
    # tstamp_type readable as one byte.
    t = _skb_base(_SKB_ALL - _SK_SKB_SOCK_FIELDS,
                  {"mark", "tc_index", "priority", "tc_classid", "cb", "tstamp",
                   "queue_mapping"})
    return t.full("tstamp_type")


def _cgroup_skb(eat: int) -> _Table:
    # cg_skb_is_valid_access: data/data_end (CAP_BPF), socket fields readable.
    deny = {"tc_classid", "data_meta", "wire_len"}
    return _skb_base(_SKB_ALL - deny, {"mark", "priority", "cb", "tstamp"})


def _lwt(eat: int) -> _Table:
    # lwt_is_valid_access (LWT_IN, LWT_OUT, LWT_XMIT, LWT_SEG6LOCAL)
    deny = {"tc_classid", "data_meta", "tstamp", "wire_len", "hwtstamp"} | _SK_SKB_SOCK_FIELDS
    return _skb_base(_SKB_ALL - deny, {"mark", "priority", "cb"})


def _sk_skb(eat: int) -> _Table:
    # sk_skb_is_valid_access: no mark at all; tc_index and priority writable.
    deny = {"tc_classid", "data_meta", "tstamp", "wire_len", "hwtstamp", "mark"}
    return _skb_base(_SKB_ALL - deny, {"tc_index", "priority"})


def _flow_dissector(eat: int) -> _Table:
    # flow_dissector_is_valid_access: data, data_end and flow_keys, read only.
    t = _Table(SK_BUFF)
    t.full("data", ptr=CtxPtr.PKT).full("data_end", ptr=CtxPtr.PKT_END)
    return t.full("flow_keys", ptr=CtxPtr.FLOW_KEYS)


# --- xdp_md --------------------------------------------------------------------

def _xdp(eat: int) -> _Table:
    # xdp_is_valid_access: 4-byte reads only, no writes (except offloaded
    # programs' rx_queue_index); egress_ifindex only for devmap programs.
    t = _Table(XDP_MD)
    t.full("data", ptr=CtxPtr.PKT).full("data_end", ptr=CtxPtr.PKT_END)
    t.full("data_meta", ptr=CtxPtr.PKT_META).full("ingress_ifindex", "rx_queue_index")
    if eat == AttachType.XDP_DEVMAP:
        t.full("egress_ifindex")
    return t


# --- cgroup device and sysctl -------------------------------------------------------

def _cgroup_dev(eat: int) -> _Table:
    # cgroup_dev_is_valid_access: read only; access_type (type | access << 16)
    # may be narrowed, major and minor are read whole.
    return _Table(CGROUP_DEV_CTX).narrow("access_type").full("major", "minor")


def _sysctl(eat: int) -> _Table:
    # sysctl_is_valid_access: write is read only; file_pos narrow reads, 4-byte store.
    return _Table(SYSCTL).narrow("write").narrow("file_pos", write=True)


# --------------------------------------------------------------------------
# Program type -> (struct, table builder)
# --------------------------------------------------------------------------

_TYPES: Dict[int, Tuple[CtxStruct, Callable[[int], _Table]]] = {
    ProgType.SOCKET_FILTER: (SK_BUFF, _socket_filter),
    ProgType.SCHED_CLS: (SK_BUFF, _tc),
    ProgType.SCHED_ACT: (SK_BUFF, _tc),
    ProgType.CGROUP_SKB: (SK_BUFF, _cgroup_skb),
    ProgType.LWT_IN: (SK_BUFF, _lwt),
    ProgType.LWT_OUT: (SK_BUFF, _lwt),
    ProgType.LWT_XMIT: (SK_BUFF, _lwt),
    ProgType.LWT_SEG6LOCAL: (SK_BUFF, _lwt),
    ProgType.SK_SKB: (SK_BUFF, _sk_skb),
    ProgType.FLOW_DISSECTOR: (SK_BUFF, _flow_dissector),
    ProgType.XDP: (XDP_MD, _xdp),
    ProgType.CGROUP_DEVICE: (CGROUP_DEV_CTX, _cgroup_dev),
    ProgType.CGROUP_SYSCTL: (SYSCTL, _sysctl),
}

# An expected_attach_type the kernel accepts at load time for each type
# (0 where the type ignores it).
LOAD_ATTACH_TYPES: Dict[int, Tuple[int, ...]] = {
    ProgType.SOCKET_FILTER: (0,),
    ProgType.SCHED_CLS: (0,),
    ProgType.SCHED_ACT: (0,),
    ProgType.CGROUP_SKB: (AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS),
    ProgType.LWT_IN: (0,),
    ProgType.LWT_OUT: (0,),
    ProgType.LWT_XMIT: (0,),
    ProgType.LWT_SEG6LOCAL: (0,),
    ProgType.SK_SKB: (0,),
    ProgType.FLOW_DISSECTOR: (0,),
    ProgType.XDP: (0, AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP),
    ProgType.CGROUP_DEVICE: (AttachType.CGROUP_DEVICE,),
    ProgType.CGROUP_SYSCTL: (AttachType.CGROUP_SYSCTL,),
}


def _entry(prog_type: int):
    try:
        return _TYPES[int(prog_type)]
    except KeyError:
        raise ValueError(f"no context known for program type {prog_type}") from None


@functools.lru_cache(maxsize=None)
def _table(prog_type: int, expected_attach_type: int) -> _Table:
    struct, build = _entry(prog_type)
    return build(int(expected_attach_type))


def ctx_struct(prog_type: int, expected_attach_type: int = 0) -> CtxStruct:
    """The context struct a program of ``prog_type`` sees through ``r1``.

    >>> ctx_struct(ProgType.SCHED_CLS).name, ctx_struct(ProgType.SCHED_CLS).size
    ('__sk_buff', 192)
    """
    return _entry(prog_type)[0]


def check_ctx_access(prog_type: int, expected_attach_type: int, off: int, size: int,
                     write: bool) -> CtxAccess:
    """Where a ``size``-byte load (or store, ``write``) at ctx offset ``off`` goes.

    Raises :class:`CtxAccessError` with the verifier's message when the kernel
    refuses the access for this program type and expected_attach_type.

    >>> check_ctx_access(ProgType.SCHED_CLS, 0, 48, 8, True)     # cb[0..1] as one u64
    CtxAccess(off=48, size=8, ptr=None)
    >>> check_ctx_access(ProgType.SCHED_CLS, 0, 140, 4, False)   # data_meta
    CtxAccess(off=208, size=8, ptr=<CtxPtr.PKT_META: 2>)
    >>> check_ctx_access(ProgType.XDP, 0, 20, 4, False)          # egress_ifindex
    Traceback (most recent call last):
    ...
    userbpf.contexts.CtxAccessError: invalid bpf_context access off=20 size=4
    >>> check_ctx_access(ProgType.XDP, AttachType.XDP_DEVMAP, 20, 4, False)
    CtxAccess(off=20, size=4, ptr=None)
    """
    acc = _table(int(prog_type), int(expected_attach_type)).lookup(off, size, bool(write))
    if acc is None:
        raise CtxAccessError(f"invalid bpf_context access off={off} size={size}")
    return acc


def ctx_fields_access(prog_type: int, expected_attach_type: int = 0
                      ) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """Per field: (sizes readable at its offset, sizes writable at its offset).

    A summary for documentation and tools.

    >>> ctx_fields_access(ProgType.XDP)["data"]
    ((4,), ())
    >>> ctx_fields_access(ProgType.SCHED_CLS)["mark"]
    ((1, 2, 4), (4,))
    """
    t = _table(int(prog_type), int(expected_attach_type))
    out = {}
    for f in t.struct.fields:
        r = tuple(s for s in SIZES if t.lookup(f.off, s, False) is not None)
        w = tuple(s for s in SIZES if t.lookup(f.off, s, True) is not None)
        out[f.name] = (r, w)
    return out


# --------------------------------------------------------------------------
# Packet access tables (kernel/bpf/verifier.c)
# --------------------------------------------------------------------------

# may_access_skb(): the types that may use the classic LD_ABS / LD_IND loads.
LD_ABS_TYPES = frozenset({ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT})

# may_access_direct_pkt_data(): types reading packet memory directly ...
DIRECT_PKT_READ_TYPES = frozenset({
    ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_SEG6LOCAL, ProgType.SK_REUSEPORT,
    ProgType.FLOW_DISSECTOR, ProgType.CGROUP_SKB, ProgType.SCHED_CLS, ProgType.SCHED_ACT,
    ProgType.XDP, ProgType.LWT_XMIT, ProgType.SK_SKB, ProgType.SK_MSG,
    ProgType.CGROUP_SOCKOPT})
# ... and the ones that may also write it.
DIRECT_PKT_WRITE_TYPES = frozenset({
    ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP, ProgType.LWT_XMIT,
    ProgType.SK_SKB, ProgType.SK_MSG, ProgType.CGROUP_SOCKOPT})


def may_access_skb(prog_type: int) -> bool:
    """Whether LD_ABS / LD_IND are allowed (the verifier's may_access_skb()).

    >>> may_access_skb(ProgType.SOCKET_FILTER), may_access_skb(ProgType.XDP)
    (True, False)
    """
    return int(prog_type) in LD_ABS_TYPES


def may_access_direct_pkt_data(prog_type: int, write: bool = False) -> bool:
    """Whether packet pointers may be dereferenced directly (for ``write``, stored to).

    >>> may_access_direct_pkt_data(ProgType.XDP, True), may_access_direct_pkt_data(ProgType.CGROUP_SKB, True)
    (True, False)
    """
    return int(prog_type) in (DIRECT_PKT_WRITE_TYPES if write else DIRECT_PKT_READ_TYPES)
