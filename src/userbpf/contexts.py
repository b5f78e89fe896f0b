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

Coverage (struct per program type; ``LOAD_ATTACH_TYPES`` lists the
expected_attach_types compared with the kernel):

========================================  ==========================================
SOCKET_FILTER, SCHED_CLS/ACT, CGROUP_SKB,  ``__sk_buff`` (each type its own rules)
LWT_*, SK_SKB, FLOW_DISSECTOR
XDP                                        ``xdp_md``
CGROUP_SOCK                                ``bpf_sock`` (fields by attach type)
CGROUP_SOCK_ADDR                           ``bpf_sock_addr`` (ip4/ip6 by attach type)
SOCK_OPS / SK_MSG / SK_REUSEPORT           ``bpf_sock_ops`` / ``sk_msg_md`` / ``sk_reuseport_md``
CGROUP_SOCKOPT / SK_LOOKUP                 ``bpf_sockopt`` / ``bpf_sk_lookup``
CGROUP_DEVICE / CGROUP_SYSCTL              ``bpf_cgroup_dev_ctx`` / ``bpf_sysctl``
KPROBE / PERF_EVENT                        ``pt_regs`` (x86_64) / ``bpf_perf_event_data``
TRACEPOINT                                 the trace record (``trace_entry`` + fields)
RAW_TRACEPOINT(_WRITABLE)                  ``bpf_raw_tracepoint_args`` (12 u64)
TRACING, LSM, STRUCT_OPS                   12 u64 arguments (BTF decides: ``nr_args``)
LIRC_MODE2 / NETFILTER / SYSCALL           one u32 sample / ``bpf_nf_ctx`` / caller's buffer
EXT                                        its target's context (ValueError here)
========================================  ==========================================

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

import errno
import functools
import sys
from enum import IntEnum
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .uapi import AttachType, ProgType

__all__ = [
    "CtxPtr", "Field", "CtxStruct", "CtxAccess", "CtxAccessError",
    "ctx_struct", "check_ctx_access", "ctx_fields_access", "may_access_skb",
    "may_access_direct_pkt_data", "STRUCTS", "LOAD_ATTACH_TYPES", "ctx_reg_type",
    "check_flow_keys_access", "FLOW_KEYS", "CTX_ATOMIC_ERROR", "PTR_REG_TYPES",
    "BTF_ARGS_TYPES", "RET_SLOT_ATTACH_TYPES", "CTX_MODIFIED_ERROR", "CTX_VAR_OFF_ERROR",
    "CTX_ACCESS_ERRNO", "check_sock_access", "SOCK_POINTER_STRUCTS", "CONVERSION_BUG",
    "permitted_accesses", "BACKING_SIZES", "SIGN_EXTENDED_FIELDS", "DROPPED_STORES_FROM",
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

# The verifier's register type for each pointer kind, as its log prints it
# (``R0=pkt(r=0)``); a few fields override it (REG_TYPE_OVERRIDES below).
PTR_REG_TYPES: Dict[CtxPtr, str] = {
    CtxPtr.PKT: "pkt", CtxPtr.PKT_END: "pkt_end", CtxPtr.PKT_META: "pkt_meta",
    CtxPtr.FLOW_KEYS: "flow_keys", CtxPtr.SOCK: "sock", CtxPtr.SOCK2: "sock_common_or_null",
    CtxPtr.OPTVAL: "pkt", CtxPtr.OPTVAL_END: "pkt_end", CtxPtr.TP_BUFFER: "tp_buffer",
    CtxPtr.NF_STATE: "trusted_ptr_nf_hook_state", CtxPtr.NF_SKB: "trusted_ptr_sk_buff",
}


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

    def span(self, name: str) -> Tuple[int, int]:
        """``(offset, size)`` of member ``name``; an array's bare name spans
        all its elements.

        >>> ctx_struct(ProgType.SCHED_CLS).span("cb")
        (48, 20)
        """
        return _spans(self)[name]

    def spans(self) -> Dict[str, Tuple[int, int]]:
        """Every :meth:`span` by name (one shared dict: do not modify it)."""
        return _spans(self)

    def field_at(self, off: int) -> Optional[Field]:
        """The first member covering byte ``off``, or None (padding, past the end)."""
        for f in self.fields:
            if f.off <= off < f.off + f.size:
                return f
        return None

    def slot(self, kind: CtxPtr) -> int:
        """Internal offset of the 8-byte slot holding pointer ``kind``."""
        return _align8(self.size) + 8 * int(kind)

    def pack(self, uapi: bytes = b"", ptrs: Optional[Dict[CtxPtr, int]] = None,
             **values: int) -> bytearray:
        """A fresh internal context: ``uapi`` bytes, then named fields, then pointer slots.

        Array elements go by their names: ``pack(**{"cb[1]": 7})``.

        Field values and pointers are stored in the host's byte order, as
        the program reads them.  Padding stays zero (the kernel reads
        ``bpf_sock.dst_port`` and ``bpf_sk_lookup.remote_port`` as u32 with it).

        >>> s = ctx_struct(ProgType.XDP)
        >>> buf = s.pack(ingress_ifindex=3, ptrs={CtxPtr.PKT: 0x1000})
        >>> len(buf) == s.internal_size, s.get(buf, "ingress_ifindex")
        (True, 3)
        >>> hex(s.get_ptr(buf, CtxPtr.PKT))
        '0x1000'
        >>> bytes(s.uapi(buf))[12:16] == (3).to_bytes(4, sys.byteorder)
        True
        """
        if len(uapi) > self.size:
            raise ValueError(f"{len(uapi)} bytes do not fit struct {self.name} ({self.size})")
        buf = bytearray(self.internal_size)
        buf[:len(uapi)] = uapi
        for name, value in values.items():
            self.set(buf, name, value)
        for kind, addr in (ptrs or {}).items():
            off = self.slot(CtxPtr(kind))
            buf[off:off + 8] = (addr & (2**64 - 1)).to_bytes(8, sys.byteorder)
        return buf

    def set(self, buf: bytearray, name: str, value: int) -> None:
        """Store field ``name`` (e.g. ``"cb[2]"``) into an internal context ``buf``."""
        f = self.field(name)
        value &= (1 << (8 * f.size)) - 1
        buf[f.off:f.off + f.size] = value.to_bytes(f.size, sys.byteorder)

    def get(self, buf, name: str) -> int:
        """Field ``name`` of an internal (or uapi) context ``buf``, unsigned."""
        f = self.field(name)
        return int.from_bytes(bytes(buf[f.off:f.off + f.size]), sys.byteorder)

    def get_ptr(self, buf, kind: CtxPtr) -> int:
        """The pointer held in slot ``kind`` of an internal context."""
        off = self.slot(CtxPtr(kind))
        return int.from_bytes(bytes(buf[off:off + 8]), sys.byteorder)

    def uapi(self, buf) -> memoryview:
        """The uapi struct part of an internal context (what ctx_out returns)."""
        return memoryview(buf)[:self.size]


@functools.lru_cache(maxsize=None)
def _spans(struct: "CtxStruct") -> Dict[str, Tuple[int, int]]:
    spans: Dict[str, Tuple[int, int]] = {}
    for f in struct.fields:
        spans[f.name] = (f.off, f.size)
        base = f.name.split("[")[0]
        if base != f.name:                       # an array element: widen the array
            lo, size = spans.get(base, (f.off, 0))
            spans[base] = (lo, f.off + f.size - lo)
    return spans


class CtxAccess(NamedTuple):
    """What a permitted ctx access becomes in the internal context."""

    off: int                 # internal offset to access
    size: int                # internal access size in bytes (1, 2, 4, 8)
    ptr: Optional[CtxPtr]    # the pointer kind a load yields, None for a scalar


class CtxAccessError(Exception):
    """A ctx access the kernel's verifier refuses; the message is the kernel's text.

    ``errno`` is what the refused PROG_LOAD returns: EACCES, or EFAULT where
    the kernel accepts the access but then fails to rewrite it (its
    "verifier bug" paths, kept because programs see that errno).
    """

    def __init__(self, message: str, err: int = errno.EACCES):
        super().__init__(message)
        self.errno = err


def _align8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------
# The uapi structs.  A layout is written as (name, size[, count]) members in
# order, each naturally aligned as C does; arrays become name[i] elements and
# members named _pad are padding.  A union is a list of alternative members
# (or of member lists) that all start at the same offset.
# --------------------------------------------------------------------------

def _place(members: Sequence, off: int, fields: List[Field]) -> Tuple[int, int]:
    """Lay ``members`` out from ``off``; returns (end offset, largest alignment)."""
    max_align = 1
    for m in members:
        if isinstance(m, list):                 # a union of alternatives
            start, end = off, off
            for alt in m:
                alt_members = alt if isinstance(alt, list) else [alt]
                a_end, a_align = _place(alt_members, start, fields)
                max_align = max(max_align, a_align)
                end = max(end, a_end)
            off = end
            continue
        mname, msize = m[0], m[1]
        count = m[2] if len(m) > 2 else 0
        align = min(msize, 8)
        max_align = max(max_align, align)
        off = (off + align - 1) // align * align
        if not mname.startswith("_pad"):
            if count:
                fields.extend(Field(f"{mname}[{i}]", off + i * msize, msize) for i in range(count))
            else:
                fields.append(Field(mname, off, msize))
        off += msize * (count or 1)
    return off, max_align


def _layout(name: str, members: Sequence, size: Optional[int] = None) -> CtxStruct:
    fields: List[Field] = []
    end, max_align = _place(members, 0, fields)
    total = (end + max_align - 1) // max_align * max_align
    if size is not None and size != total:
        raise AssertionError(f"struct {name}: sizeof {total}, expected {size}")
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

BPF_SOCK = _layout("bpf_sock", [
    ("bound_dev_if", U32), ("family", U32), ("type", U32), ("protocol", U32),
    ("mark", U32), ("priority", U32), ("src_ip4", U32), ("src_ip6", U32, 4),
    ("src_port", U32), ("dst_port", U16), ("_pad", U16), ("dst_ip4", U32),
    ("dst_ip6", U32, 4), ("state", U32), ("rx_queue_mapping", U32),
], size=80)

SOCK_ADDR = _layout("bpf_sock_addr", [
    ("user_family", U32), ("user_ip4", U32), ("user_ip6", U32, 4), ("user_port", U32),
    ("family", U32), ("type", U32), ("protocol", U32), ("msg_src_ip4", U32),
    ("msg_src_ip6", U32, 4), ("sk", U64),
], size=72)

SOCK_OPS = _layout("bpf_sock_ops", [
    ("op", U32),
    [("args", U32, 4), ("reply", U32), ("replylong", U32, 4)],
    ("family", U32), ("remote_ip4", U32), ("local_ip4", U32), ("remote_ip6", U32, 4),
    ("local_ip6", U32, 4), ("remote_port", U32), ("local_port", U32),
    ("is_fullsock", U32), ("snd_cwnd", U32), ("srtt_us", U32),
    ("bpf_sock_ops_cb_flags", U32), ("state", U32), ("rtt_min", U32),
    ("snd_ssthresh", U32), ("rcv_nxt", U32), ("snd_nxt", U32), ("snd_una", U32),
    ("mss_cache", U32), ("ecn_flags", U32), ("rate_delivered", U32),
    ("rate_interval_us", U32), ("packets_out", U32), ("retrans_out", U32),
    ("total_retrans", U32), ("segs_in", U32), ("data_segs_in", U32), ("segs_out", U32),
    ("data_segs_out", U32), ("lost_out", U32), ("sacked_out", U32), ("sk_txhash", U32),
    ("bytes_received", U64), ("bytes_acked", U64), ("sk", U64), ("skb_data", U64),
    ("skb_data_end", U64), ("skb_len", U32), ("skb_tcp_flags", U32),
    ("skb_hwtstamp", U64),
], size=224)

SK_MSG_MD = _layout("sk_msg_md", [
    ("data", U64), ("data_end", U64), ("family", U32), ("remote_ip4", U32),
    ("local_ip4", U32), ("remote_ip6", U32, 4), ("local_ip6", U32, 4),
    ("remote_port", U32), ("local_port", U32), ("size", U32), ("sk", U64),
], size=80)

SK_REUSEPORT_MD = _layout("sk_reuseport_md", [
    ("data", U64), ("data_end", U64), ("len", U32), ("eth_protocol", U32),
    ("ip_protocol", U32), ("bind_inany", U32), ("hash", U32), ("sk", U64),
    ("migrating_sk", U64),
], size=56)

SOCKOPT = _layout("bpf_sockopt", [
    ("sk", U64), ("optval", U64), ("optval_end", U64), ("level", U32), ("optname", U32),
    ("optlen", U32), ("retval", U32),
], size=40)

SK_LOOKUP = _layout("bpf_sk_lookup", [
    [("sk", U64), ("cookie", U64)],
    ("family", U32), ("protocol", U32), ("remote_ip4", U32), ("remote_ip6", U32, 4),
    ("remote_port", U16), ("_pad", U16), ("local_ip4", U32), ("local_ip6", U32, 4),
    ("local_port", U32), ("ingress_ifindex", U32),
], size=72)

# asm/ptrace.h struct pt_regs of x86_64 (bpf_user_pt_regs_t there).
PT_REGS = _layout("pt_regs", [
    (r, U64) for r in ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
                       "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags",
                       "sp", "ss")
], size=168)

PERF_EVENT_DATA = _layout("bpf_perf_event_data", [
    *[(f.name, f.size) for f in PT_REGS.fields], ("sample_period", U64), ("addr", U64),
], size=184)
# The kernel calls the first member "regs"; members keep pt_regs' names here.

# MAX_BPF_FUNC_ARGS u64 arguments: raw tracepoints (the uapi struct declares
# args[0]; the kernel lets programs read 12) and the BTF-typed tracing types.
MAX_BPF_FUNC_ARGS = 12
RAW_TP_ARGS = _layout("bpf_raw_tracepoint_args", [("args", U64, MAX_BPF_FUNC_ARGS)], size=96)

# A tracepoint's ctx is its trace record: struct trace_entry, then the event's
# fields; programs may read up to PERF_MAX_TRACE_SIZE bytes of it.
PERF_MAX_TRACE_SIZE = 8192
TRACE_RECORD = CtxStruct("trace_entry", PERF_MAX_TRACE_SIZE, (
    Field("common_type", 0, 2), Field("common_flags", 2, 1),
    Field("common_preempt_count", 3, 1), Field("common_pid", 4, 4)),
    PERF_MAX_TRACE_SIZE + 8 * N_PTR_SLOTS)

LIRC_SAMPLE = _layout("lirc_mode2_sample", [("sample", U32)], size=4)

# include/net/netfilter/nf_bpf_link.h (not uapi): two BTF-typed pointers.
NF_CTX = _layout("bpf_nf_ctx", [("state", U64), ("skb", U64)], size=16)

# BPF_PROG_TYPE_SYSCALL: the ctx is the caller's buffer, up to U16_MAX bytes.
SYSCALL_CTX_MAX = 0xFFFF
SYSCALL_CTX = CtxStruct("syscall_ctx", SYSCALL_CTX_MAX, (),
                        _align8(SYSCALL_CTX_MAX) + 8 * N_PTR_SLOTS)

# What bpf_tcp_sock() and an XSKMAP lookup return (not contexts themselves).
BPF_TCP_SOCK = _layout("bpf_tcp_sock", [
    ("snd_cwnd", U32), ("srtt_us", U32), ("rtt_min", U32), ("snd_ssthresh", U32),
    ("rcv_nxt", U32), ("snd_nxt", U32), ("snd_una", U32), ("mss_cache", U32),
    ("ecn_flags", U32), ("rate_delivered", U32), ("rate_interval_us", U32),
    ("packets_out", U32), ("retrans_out", U32), ("total_retrans", U32), ("segs_in", U32),
    ("data_segs_in", U32), ("segs_out", U32), ("data_segs_out", U32), ("lost_out", U32),
    ("sacked_out", U32), ("bytes_received", U64), ("bytes_acked", U64), ("dsack_dups", U32),
    ("delivered", U32), ("delivered_ce", U32), ("icsk_retransmits", U32),
], size=112)

BPF_XDP_SOCK = _layout("bpf_xdp_sock", [("queue_id", U32)], size=4)

# What __sk_buff.flow_keys points to in a flow dissector (not a ctx itself).
FLOW_KEYS = _layout("bpf_flow_keys", [
    ("nhoff", U16), ("thoff", U16), ("addr_proto", U16), ("is_frag", U8),
    ("is_first_frag", U8), ("is_encap", U8), ("ip_proto", U8), ("n_proto", U16),
    ("sport", U16), ("dport", U16),
    [[("ipv4_src", U32), ("ipv4_dst", U32)], [("ipv6_src", U32, 4), ("ipv6_dst", U32, 4)]],
    ("flags", U32), ("flow_label", U32),
], size=56)

# Every struct by its C name: the contexts, then what their pointers lead to.
STRUCTS: Dict[str, CtxStruct] = {s.name: s for s in (
    SK_BUFF, XDP_MD, CGROUP_DEV_CTX, SYSCTL, BPF_SOCK, SOCK_ADDR, SOCK_OPS, SK_MSG_MD,
    SK_REUSEPORT_MD, SOCKOPT, SK_LOOKUP, PT_REGS, PERF_EVENT_DATA, RAW_TP_ARGS,
    TRACE_RECORD, LIRC_SAMPLE, NF_CTX, SYSCALL_CTX, FLOW_KEYS, BPF_TCP_SOCK, BPF_XDP_SOCK)}


# --------------------------------------------------------------------------
# Access tables.  A _Table collects every permitted (off, size, write) of one
# context variant, built by methods that mirror the kernel's switch cases.
# --------------------------------------------------------------------------

SIZES = (1, 2, 4, 8)

# The size of the kernel field each narrow-readable uapi field is converted
# from, where it is smaller than the uapi field (the convert_ctx_access
# target_size).  Stores to such a field keep only that many bytes.  __sk_buff's are measured with PROG_TEST_RUN where the
# kernel fills them; the rest follow the kernel's conversions.
BACKING_SIZES: Dict[str, Dict[str, int]] = {
    "__sk_buff": {"pkt_type": 1, "queue_mapping": 2, "protocol": 2, "vlan_tci": 2,
                  "vlan_proto": 2, "tc_index": 2, "tc_classid": 2, "family": 2,
                  "remote_port": 2, "local_port": 2, "gso_segs": 2, "gso_size": 2},
    "bpf_sock": {"family": 2, "type": 2, "protocol": 2, "state": 1,
                 "rx_queue_mapping": 2, "src_port": 2},
    "sk_reuseport_md": {"eth_protocol": 2, "ip_protocol": 1, "bind_inany": 1},
    "bpf_sk_lookup": {"family": 2, "protocol": 2, "local_port": 2},
}

# Stores the kernel drops: a store to __sk_buff.queue_mapping of a value
# >= 0xffff (NO_QUEUE_MAPPING) leaves the field as it was.
DROPPED_STORES_FROM: Dict[str, Dict[str, int]] = {"__sk_buff": {"queue_mapping": 0xFFFF}}

# Fields whose whole-field loads the kernel sign-extends to 64 bits: with no
# queue, rx_queue_mapping reads as a 64-bit -1 even through a u32 or u16
# load (its conversion ends in a 64-bit mov of -1).  A runtime loading such
# a field's CtxAccess must sign-extend it.
SIGN_EXTENDED_FIELDS: Dict[str, frozenset] = {"bpf_sock": frozenset({"rx_queue_mapping"})}


class _Table:
    """The permitted accesses of one (prog_type, expected_attach_type)."""

    def __init__(self, struct: CtxStruct):
        self.struct = struct
        # Size of the kernel field behind each narrow-readable uapi field,
        # where smaller than the uapi field (see narrow()).
        self.backing: Dict[str, int] = BACKING_SIZES.get(struct.name, {})
        self.ok: Dict[Tuple[int, int, bool], CtxAccess] = {}
        self.reg_types: Dict[int, str] = {}     # off -> verifier type, where not the kind's
        # Big regions (tracepoint, syscall) are kept as ranges, not enumerated:
        # (lo, hi, sizes, write, within): ``within`` asks off + size <= hi,
        # otherwise only the first byte must lie below hi.
        self.spans: List[Tuple[int, int, Tuple[int, ...], bool, bool]] = []

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

    def _add(self, off: int, size: int, write: bool, ptr: Optional[CtxPtr],
             internal: Optional[Tuple[int, int]] = None) -> None:
        if ptr is None:
            acc = CtxAccess(*(internal or (off, size)), None)
        else:
            acc = CtxAccess(self.struct.slot(ptr), 8, ptr)
        self.ok[(off, size, write)] = acc

    def _store(self, f: Field) -> None:
        """A full-size store of ``f``; the kernel stores only its backing field
        (tc_index keeps 16 bits), so the internal store is that narrow."""
        backing = self.backing.get(f.name.split("[")[0], f.size)
        off = f.off if sys.byteorder == "little" else f.off + f.size - backing
        self._add(f.off, f.size, True, None, internal=(off, backing))

    # -- rules -----------------------------------------------------------
    def full(self, *names: str, read: bool = True, write: bool = False,
             ptr: Optional[CtxPtr] = None, reg_type: Optional[str] = None) -> "_Table":
        """Only the field's own size at its own offset.

        ``reg_type`` names the verifier's register type of the loaded
        pointer when it is not the default of ``ptr``'s kind.
        """
        for f in self._fields(names):
            if reg_type:
                self.reg_types[f.off] = reg_type
            if read:
                self._add(f.off, f.size, False, ptr)
            if write:
                self._store(f)
        return self

    def narrow(self, *names: str, min_size: int = 1, write: bool = False,
               start_only: bool = False) -> "_Table":
        """Reads of any power of two <= the field (bpf_ctx_narrow_access_ok), aligned.

        ``start_only`` when the kernel matches the field's offset exactly
        (``case offsetof(...)``) rather than its byte range, so a narrow read
        must start at the field.  ``write`` also permits the full-size store.

        The kernel shifts and masks a narrow load only when it is narrower
        than the kernel field behind it; one at least that wide returns that
        whole field, whatever its offset (a u16 read of the upper half of
        ``__sk_buff.protocol`` gives the protocol).  Such loads read the
        whole uapi field internally.
        """
        for f in self._fields(names):
            backing = self.backing.get(f.name.split("[")[0], f.size)
            for s in SIZES:
                if min_size <= s <= f.size:
                    whole = (f.off, f.size) if backing <= s < f.size else None
                    for o in range(f.off, f.off + (s if start_only else f.size), s):
                        self._add(o, s, False, None, internal=whole)
            if write:
                self._store(f)
        return self

    def at(self, off: int, size: int, read: bool = True, write: bool = False,
           ptr: Optional[CtxPtr] = None) -> "_Table":
        """One explicit (off, size) access."""
        if read:
            self._add(off, size, False, ptr)
        if write:
            self._add(off, size, True, None)
        return self

    def wide(self, array: str, read: bool = True, write: bool = False) -> "_Table":
        """8-byte accesses covering two elements of a u32 array (bpf_ctx_wide_access_ok)."""
        elems = self._fields([array + "[]"])
        lo, hi = elems[0].off, elems[-1].off + elems[-1].size
        for o in range((lo + 7) // 8 * 8, hi - 7, 8):
            self.at(o, 8, read=read, write=write)
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
                 write: bool = False, within: bool = True) -> "_Table":
        """Like span() for huge regions: kept as a range, checked arithmetically."""
        self.spans.append((lo, hi, tuple(sizes), False, within))
        if write:
            self.spans.append((lo, hi, tuple(sizes), True, within))
        return self

    def forget(self, *names: str) -> "_Table":
        """Take back every access that starts inside these fields."""
        for f in self._fields(names):
            for key in [k for k in self.ok if f.off <= k[0] < f.off + f.size]:
                del self.ok[key]
        return self

    def lookup(self, off: int, size: int, write: bool) -> Optional[CtxAccess]:
        """The access's rewrite, or None when the kernel refuses it."""
        acc = self.ok.get((off, size, write))
        if acc is not None:
            return acc
        for lo, hi, sizes, w, within in self.spans:
            end = off + size if within else off + 1
            if w == write and size in sizes and lo <= off and end <= hi and off % size == 0:
                return CtxAccess(off, size, None)
        return None


# --- __sk_buff ---------------------------------------------------------------
# bpf_skb_is_valid_access: the rules every __sk_buff program type starts from;
# each type then forbids some fields and picks its writable ones.

_SKB_PTRS = {"data": CtxPtr.PKT, "data_end": CtxPtr.PKT_END, "data_meta": CtxPtr.PKT_META}
# Fields whose only read is the full 4 bytes (the kernel fetches them from
# the socket, without narrowing).
_SKB_FULL_ONLY = {"remote_ip4", "local_ip4", "remote_ip6", "local_ip6"}


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
            t.full(f.name, ptr=CtxPtr.SOCK, reg_type="sock_common_or_null")
        elif base in ("tstamp", "hwtstamp"):      # u64 only; hwtstamp is read only
            t.full(f.name, write=base in writable and base == "tstamp")
        elif base in _SKB_FULL_ONLY:
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

# --- struct bpf_sock (CGROUP_SOCK) ---------------------------------------------

def _bpf_sock_reads(t: _Table, common_only: bool = False) -> _Table:
    """bpf_sock_is_valid_access for loads (bpf_sock_common_is_valid_access
    when ``common_only``: no type, protocol, mark or priority)."""
    # Narrow reads at the field's offset only (the kernel matches offsetof) ...
    t.narrow("family", "state", "rx_queue_mapping", "src_port", start_only=True)
    if not common_only:
        t.narrow("type", "protocol", start_only=True).full("mark", "priority")
    # ... or anywhere in it (bpf_ctx_range).
    t.narrow("src_ip4", "src_ip6[]", "dst_ip4", "dst_ip6[]")
    t.narrow("dst_port").at(BPF_SOCK.field("dst_port").off, 4)   # u16, or u32 with padding
    return t.full("bound_dev_if")


def _cgroup_sock(eat: int) -> _Table:
    # bpf_sock_is_valid_access, then __sock_filter_check_attach_type takes
    # some fields away per attach type and makes the rest read only.
    t = _bpf_sock_reads(_Table(BPF_SOCK))
    post_bind = (AttachType.CGROUP_INET4_POST_BIND, AttachType.CGROUP_INET6_POST_BIND)
    if eat not in post_bind:
        t.forget("src_port")
    if eat != AttachType.CGROUP_INET4_POST_BIND:
        t.forget("src_ip4")
    if eat != AttachType.CGROUP_INET6_POST_BIND:
        t.forget("src_ip6[]")
    if eat in (AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET_SOCK_RELEASE):
        t.full("bound_dev_if", "mark", "priority", read=False, write=True)
    else:
        t.forget("bound_dev_if", "mark", "priority")
    return t


# --- struct bpf_sock_addr (CGROUP_SOCK_ADDR) ---------------------------------------

_SOCK_ADDR_IP4 = {AttachType.CGROUP_INET4_BIND, AttachType.CGROUP_INET4_CONNECT,
                  AttachType.CGROUP_INET4_GETPEERNAME, AttachType.CGROUP_INET4_GETSOCKNAME,
                  AttachType.CGROUP_UDP4_SENDMSG, AttachType.CGROUP_UDP4_RECVMSG}
_SOCK_ADDR_IP6 = {AttachType.CGROUP_INET6_BIND, AttachType.CGROUP_INET6_CONNECT,
                  AttachType.CGROUP_INET6_GETPEERNAME, AttachType.CGROUP_INET6_GETSOCKNAME,
                  AttachType.CGROUP_UDP6_SENDMSG, AttachType.CGROUP_UDP6_RECVMSG}


def _sock_addr(eat: int) -> _Table:
    # sock_addr_is_valid_access: the address fields of the attach type's
    # family are narrow-readable and writable as u32 (ip6 arrays also as u64).
    t = _Table(SOCK_ADDR)
    addr_fields = ["user_port"]
    if eat in _SOCK_ADDR_IP4:
        addr_fields.append("user_ip4")
    if eat in _SOCK_ADDR_IP6:
        addr_fields.append("user_ip6[]")
        t.wide("user_ip6", write=True)
    if eat == AttachType.CGROUP_UDP4_SENDMSG:
        addr_fields.append("msg_src_ip4")
    if eat == AttachType.CGROUP_UDP6_SENDMSG:
        addr_fields.append("msg_src_ip6[]")
        t.wide("msg_src_ip6", write=True)
    t.narrow(*addr_fields, write=True)
    t.full("user_family", "family", "type", "protocol")
    return t.full("sk", ptr=CtxPtr.SOCK)


# --- struct bpf_sock_ops (SOCK_OPS) ------------------------------------------------

def _sock_ops(eat: int) -> _Table:
    # sock_ops_is_valid_access: u32 reads of everything by default, u64
    # counters and pointers whole, skb_tcp_flags narrow; reply and
    # sk_txhash writable.
    t = _Table(SOCK_OPS)
    u64 = {"bytes_received", "bytes_acked", "sk", "skb_data", "skb_data_end", "skb_hwtstamp"}
    t.full(*[f.name for f in SOCK_OPS.fields if f.name not in u64])
    t.full("bytes_received", "bytes_acked", "skb_hwtstamp")
    t.full("sk", ptr=CtxPtr.SOCK, reg_type="sock_or_null").full("skb_data", ptr=CtxPtr.PKT)
    t.full("skb_data_end", ptr=CtxPtr.PKT_END)
    t.narrow("skb_tcp_flags", start_only=True)
    return t.full("reply", "sk_txhash", read=False, write=True)


# --- struct sk_msg_md (SK_MSG) ------------------------------------------------------

def _sk_msg(eat: int) -> _Table:
    # sk_msg_is_valid_access: read only, u32 fields whole, pointers as u64.
    t = _Table(SK_MSG_MD)
    t.full("data", ptr=CtxPtr.PKT).full("data_end", ptr=CtxPtr.PKT_END)
    t.full("sk", ptr=CtxPtr.SOCK)
    return t.full(*[f.name for f in SK_MSG_MD.fields if f.size == 4])


# --- struct sk_reuseport_md (SK_REUSEPORT) ---------------------------------------------

def _sk_reuseport(eat: int) -> _Table:
    # sk_reuseport_is_valid_access: read only; eth_protocol at least 2 bytes
    # (it is skb->protocol, a __be16).
    t = _Table(SK_REUSEPORT_MD)
    t.full("data", ptr=CtxPtr.PKT).full("data_end", ptr=CtxPtr.PKT_END)
    t.full("sk", ptr=CtxPtr.SOCK).full("migrating_sk", ptr=CtxPtr.SOCK2)
    t.full("hash").narrow("eth_protocol", min_size=2)
    return t.narrow("len", "ip_protocol", "bind_inany")


# --- struct bpf_sockopt (CGROUP_SOCKOPT) -----------------------------------------------

def _sockopt(eat: int) -> _Table:
    # cg_sockopt_is_valid_access: u32 fields whole; retval only for
    # getsockopt, level/optname writable only for setsockopt.
    t = _Table(SOCKOPT)
    t.full("sk", ptr=CtxPtr.SOCK).full("optval", ptr=CtxPtr.OPTVAL)
    t.full("optval_end", ptr=CtxPtr.OPTVAL_END)
    get, set_ = eat == AttachType.CGROUP_GETSOCKOPT, eat == AttachType.CGROUP_SETSOCKOPT
    t.full("level", "optname", write=set_).full("optlen", write=True)
    if get:
        t.full("retval", write=True)
    return t


# --- struct bpf_sk_lookup (SK_LOOKUP) --------------------------------------------------

def _sk_lookup(eat: int) -> _Table:
    # sk_lookup_is_valid_access: read only; remote_port is a __be16 also
    # readable as u32 (with the zero padding after it), padding readable.
    t = _Table(SK_LOOKUP)
    t.full("sk", ptr=CtxPtr.SOCK, reg_type="sock_or_null")
    t.narrow("family", "protocol", "remote_ip4", "local_ip4", "remote_ip6[]", "local_ip6[]",
             "local_port", "ingress_ifindex")
    port = SK_LOOKUP.field("remote_port").off
    t.narrow("remote_port").at(port, 4)
    return t.at(port + 2, 1).at(port + 3, 1).at(port + 2, 2)      # the padding


# --- tracing types ------------------------------------------------------------------------

def _perf_event(eat: int) -> _Table:
    # pe_prog_is_valid_access: registers as whole u64s, the two u64 fields narrow.
    t = _Table(PERF_EVENT_DATA)
    t.full(*[f.name for f in PT_REGS.fields])
    return t.narrow("sample_period", "addr")


def _kprobe(eat: int) -> _Table:
    # kprobe_prog_is_valid_access: any aligned read inside pt_regs.
    return _Table(PT_REGS).span(0, PT_REGS.size)


def _tracepoint(eat: int) -> _Table:
    # tp_prog_is_valid_access: any aligned read past the first 8 bytes
    # (the common fields) and below PERF_MAX_TRACE_SIZE.
    # Negative offsets pass too: the kernel compares the int offset with
    # sizeof(void *) unsigned, so "off < 8" is false for them (measured on
    # 6.18).  Such loads read before the record: the returned CtxAccess has
    # a negative offset, which the runtime must treat as out of bounds.
    t = _Table(TRACE_RECORD).big_span(8, PERF_MAX_TRACE_SIZE)
    return t.big_span(-(1 << 31), 0)


def _raw_tp(eat: int) -> _Table:
    # raw_tp_prog_is_valid_access (bpf_tracing_ctx_access): any aligned read
    # of the 12 u64 arguments.
    return _Table(RAW_TP_ARGS).span(0, RAW_TP_ARGS.size)


def _raw_tp_writable(eat: int) -> _Table:
    # raw_tp_writable_prog_is_valid_access: args[0] is the writable buffer,
    # read only as a whole u64.
    t = _raw_tp(eat)
    for s in (1, 2, 4):
        t.ok.pop((0, s, False), None)
    return t.at(0, 8, ptr=CtxPtr.TP_BUFFER)


def _btf_args(eat: int) -> _Table:
    # TRACING, LSM, STRUCT_OPS: bpf_tracing_ctx_access (read only, aligned,
    # inside 12 u64s) and then btf_ctx_access, which wants the start of an
    # argument (off % 8 == 0) and an argument the BTF prototype has: see
    # check_ctx_access(nr_args=...).  Narrow loads of an argument are fine.
    t = _Table(RAW_TP_ARGS)
    for k in range(MAX_BPF_FUNC_ARGS):
        for s in SIZES:
            t.at(8 * k, s)
    return t


# Program types whose ctx is the u64 argument array of a BTF-typed function.
BTF_ARGS_TYPES = frozenset({ProgType.TRACING, ProgType.LSM, ProgType.STRUCT_OPS})
# Attach types that also see the traced function's return value after its
# arguments (btf_ctx_access: arg == nr_args).
RET_SLOT_ATTACH_TYPES = frozenset({AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN,
                                   AttachType.LSM_MAC, AttachType.LSM_CGROUP})


def _lirc(eat: int) -> _Table:
    # lirc_mode2_is_valid_access: one u32 sample, read whole.
    return _Table(LIRC_SAMPLE).full("sample")


def _netfilter(eat: int) -> _Table:
    # nf_is_valid_access: two BTF pointers, read as whole u64s.
    t = _Table(NF_CTX)
    return t.full("state", ptr=CtxPtr.NF_STATE).full("skb", ptr=CtxPtr.NF_SKB)


def _syscall(eat: int) -> _Table:
    # syscall_prog_is_valid_access: any aligned access starting below U16_MAX,
    # read or write (the end is not checked; the caller's ctx_size_in bounds
    # it at run time).  Offsets past 32767 cannot be written in an insn.
    return _Table(SYSCALL_CTX).big_span(0, SYSCALL_CTX_MAX, write=True, within=False)


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
    ProgType.CGROUP_SOCK: (BPF_SOCK, _cgroup_sock),
    ProgType.CGROUP_SOCK_ADDR: (SOCK_ADDR, _sock_addr),
    ProgType.SOCK_OPS: (SOCK_OPS, _sock_ops),
    ProgType.SK_MSG: (SK_MSG_MD, _sk_msg),
    ProgType.SK_REUSEPORT: (SK_REUSEPORT_MD, _sk_reuseport),
    ProgType.CGROUP_SOCKOPT: (SOCKOPT, _sockopt),
    ProgType.SK_LOOKUP: (SK_LOOKUP, _sk_lookup),
    ProgType.PERF_EVENT: (PERF_EVENT_DATA, _perf_event),
    ProgType.KPROBE: (PT_REGS, _kprobe),
    ProgType.TRACEPOINT: (TRACE_RECORD, _tracepoint),
    ProgType.RAW_TRACEPOINT: (RAW_TP_ARGS, _raw_tp),
    ProgType.RAW_TRACEPOINT_WRITABLE: (RAW_TP_ARGS, _raw_tp_writable),
    ProgType.TRACING: (RAW_TP_ARGS, _btf_args),
    ProgType.LSM: (RAW_TP_ARGS, _btf_args),
    ProgType.STRUCT_OPS: (RAW_TP_ARGS, _btf_args),
    ProgType.LIRC_MODE2: (LIRC_SAMPLE, _lirc),
    ProgType.NETFILTER: (NF_CTX, _netfilter),
    ProgType.SYSCALL: (SYSCALL_CTX, _syscall),
}

# An expected_attach_type the kernel accepts at load time for each type
# (0 where the type ignores it).
LOAD_ATTACH_TYPES: Dict[int, Tuple[int, ...]] = {
    ProgType.SOCKET_FILTER: (0,),
    ProgType.SCHED_CLS: (0, AttachType.TCX_INGRESS, AttachType.TCX_EGRESS,
                         AttachType.NETKIT_PRIMARY, AttachType.NETKIT_PEER),
    ProgType.SCHED_ACT: (0,),
    ProgType.CGROUP_SKB: (AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS),
    ProgType.LWT_IN: (0,),
    ProgType.LWT_OUT: (0,),
    ProgType.LWT_XMIT: (0,),
    ProgType.LWT_SEG6LOCAL: (0,),
    ProgType.SK_SKB: (0, AttachType.SK_SKB_STREAM_PARSER, AttachType.SK_SKB_STREAM_VERDICT,
                      AttachType.SK_SKB_VERDICT),
    ProgType.FLOW_DISSECTOR: (0, AttachType.FLOW_DISSECTOR),
    ProgType.XDP: (0, AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP, AttachType.XDP),
    ProgType.CGROUP_DEVICE: (AttachType.CGROUP_DEVICE,),
    ProgType.CGROUP_SYSCTL: (AttachType.CGROUP_SYSCTL,),
    ProgType.CGROUP_SOCK: (AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET4_POST_BIND,
                           AttachType.CGROUP_INET6_POST_BIND,
                           AttachType.CGROUP_INET_SOCK_RELEASE),
    ProgType.CGROUP_SOCK_ADDR: tuple(sorted(_SOCK_ADDR_IP4 | _SOCK_ADDR_IP6 | {
        AttachType.CGROUP_UNIX_CONNECT, AttachType.CGROUP_UNIX_SENDMSG,
        AttachType.CGROUP_UNIX_RECVMSG, AttachType.CGROUP_UNIX_GETPEERNAME,
        AttachType.CGROUP_UNIX_GETSOCKNAME})),
    ProgType.SOCK_OPS: (AttachType.CGROUP_SOCK_OPS,),
    ProgType.SK_MSG: (AttachType.SK_MSG_VERDICT,),
    ProgType.SK_REUSEPORT: (AttachType.SK_REUSEPORT_SELECT,
                            AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE),
    ProgType.CGROUP_SOCKOPT: (AttachType.CGROUP_GETSOCKOPT, AttachType.CGROUP_SETSOCKOPT),
    ProgType.SK_LOOKUP: (AttachType.SK_LOOKUP,),
    ProgType.PERF_EVENT: (0, AttachType.PERF_EVENT),
    ProgType.KPROBE: (0, AttachType.TRACE_KPROBE_MULTI, AttachType.TRACE_KPROBE_SESSION,
                      AttachType.TRACE_UPROBE_MULTI, AttachType.TRACE_UPROBE_SESSION),
    ProgType.TRACEPOINT: (0,),
    ProgType.RAW_TRACEPOINT: (0,),
    ProgType.RAW_TRACEPOINT_WRITABLE: (0,),
    ProgType.LIRC_MODE2: (AttachType.LIRC_MODE2,),
    ProgType.NETFILTER: (AttachType.NETFILTER,),
    ProgType.SYSCALL: (0,),
}


def _entry(prog_type: int):
    try:
        return _TYPES[int(prog_type)]
    except KeyError:
        if int(prog_type) == ProgType.EXT:
            # The verifier checks an extension with its target's rules.
            raise ValueError("an EXT program sees its target program's context: "
                             "ask with the target's program type") from None
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
                     write: bool, sign_extend: bool = False,
                     nr_args: Optional[int] = None) -> CtxAccess:
    """Where a ``size``-byte load (or store, ``write``) at ctx offset ``off`` goes.

    Raises :class:`CtxAccessError` with the verifier's message when the kernel
    refuses the access for this program type and expected_attach_type.
    Stores may be BPF_STX or BPF_ST (the kernel checks both alike); atomics
    on ctx are always refused (see :data:`CTX_ATOMIC_ERROR`).  A
    sign-extending load (BPF_MEMSX, ``sign_extend``) is refused where the
    load would yield a pointer.

    The internal access is the program's own offset and size, except: a
    pointer field loads its 8-byte slot; a narrow load at least as wide as
    the kernel field behind it loads the whole uapi field (BACKING_SIZES);
    a store to a field the kernel keeps narrower stores only that many
    bytes (tc_index: 2).  See also DROPPED_STORES_FROM and
    SIGN_EXTENDED_FIELDS for the two value rules a plain access cannot say.

    For TRACING, LSM and STRUCT_OPS the ctx is the traced function's u64
    arguments; ``nr_args`` (the BTF prototype's argument count) limits them,
    plus the return value for fexit / fmod_ret / LSM.  Argument values are
    scalars here, even where the verifier types them from BTF.

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
    >>> check_ctx_access(ProgType.SCHED_CLS, 0, 18, 2, False)    # u16 protocol, upper half
    CtxAccess(off=16, size=4, ptr=None)
    >>> check_ctx_access(ProgType.SCHED_CLS, 0, 44, 4, True)     # tc_index is a u16
    CtxAccess(off=44, size=2, ptr=None)
    >>> check_ctx_access(ProgType.TRACING, AttachType.TRACE_FEXIT, 16, 4, False, nr_args=2)
    CtxAccess(off=16, size=4, ptr=None)
    """
    acc = _table(int(prog_type), int(expected_attach_type)).lookup(off, size, bool(write))
    if acc is not None and nr_args is not None and int(prog_type) in BTF_ARGS_TYPES:
        slots = nr_args + (int(expected_attach_type) in RET_SLOT_ATTACH_TYPES)
        if off // 8 >= slots:
            acc = None
    if acc is None or (sign_extend and acc.ptr is not None):
        raise CtxAccessError(f"invalid bpf_context access off={off} size={size}")
    return acc


# The verifier's other ctx refusals (all with errno EACCES, like
# CtxAccessError): an atomic on ctx, a ctx pointer moved by a constant or by
# a variable before the access.
CTX_ATOMIC_ERROR = "BPF_ATOMIC stores into R{reg} ctx is not allowed"
CTX_MODIFIED_ERROR = "dereference of modified ctx ptr R{reg} off={off} disallowed"
CTX_VAR_OFF_ERROR = "variable ctx access var_off={var_off} disallowed"
# errno of a PROG_LOAD refused for a ctx access.
CTX_ACCESS_ERRNO = errno.EACCES


def ctx_reg_type(prog_type: int, expected_attach_type: int, off: int, size: int) -> str:
    """The verifier's register type after a permitted load ("scalar" for plain fields).

    The names are those of the verifier log (``pkt``, ``sock_or_null`` ...).

    >>> ctx_reg_type(ProgType.SCHED_CLS, 0, 168, 8)       # __sk_buff.sk
    'sock_common_or_null'
    >>> ctx_reg_type(ProgType.CGROUP_SOCKOPT, AttachType.CGROUP_GETSOCKOPT, 8, 8)   # optval
    'pkt'
    >>> ctx_reg_type(ProgType.SCHED_CLS, 0, 0, 4)
    'scalar'
    """
    t = _table(int(prog_type), int(expected_attach_type))
    acc = check_ctx_access(prog_type, expected_attach_type, off, size, False)
    if acc.ptr is None:
        return "scalar"
    return t.reg_types.get(off, PTR_REG_TYPES[acc.ptr])


@functools.lru_cache(maxsize=None)
def _sock_table(kind: str) -> _Table:
    if kind in ("sock", "sock_common"):
        return _bpf_sock_reads(_Table(BPF_SOCK), common_only=kind == "sock_common")
    if kind == "tcp_sock":
        # bpf_tcp_sock_is_valid_access: u32 fields whole, the two counters u64.
        return _Table(BPF_TCP_SOCK).full(*[f.name for f in BPF_TCP_SOCK.fields])
    if kind == "xdp_sock":
        return _Table(BPF_XDP_SOCK).full("queue_id")     # bpf_xdp_sock_is_valid_access
    raise ValueError(f"no socket pointer kind {kind!r}")


# Accesses the kernel's is_valid_access lets through but its rewrite cannot
# convert: the load fails with EFAULT and this message (measured on 6.18).
CONVERSION_BUG = "verifier bug: error during ctx access conversion (0)"
_SOCK_CONVERSION_BUGS = {
    # a u32 load of the upper half of bytes_received / bytes_acked
    "tcp_sock": {(BPF_TCP_SOCK.field("bytes_received").off + 4, 4),
                 (BPF_TCP_SOCK.field("bytes_acked").off + 4, 4)},
}


# The structs behind the verifier's socket pointer types (after a null check).
SOCK_POINTER_STRUCTS = {"sock_common": BPF_SOCK, "sock": BPF_SOCK,
                        "tcp_sock": BPF_TCP_SOCK, "xdp_sock": BPF_XDP_SOCK}


def check_sock_access(kind: str, off: int, size: int, write: bool = False,
                      regno: int = 1) -> CtxAccess:
    """A load through a socket pointer (the verifier's check_sock_access).

    ``kind`` is the verifier's type name without ``_or_null``: ``sock_common``
    (``__sk_buff.sk``), ``sock``, ``tcp_sock`` or ``xdp_sock``.  They are
    read only; ``regno`` is the pointer's register, named in the message.

    >>> check_sock_access("sock_common", 4, 1)        # family's low byte
    CtxAccess(off=4, size=1, ptr=None)
    >>> check_sock_access("sock_common", 16, 4, regno=2)    # mark: full sockets only
    Traceback (most recent call last):
    ...
    userbpf.contexts.CtxAccessError: R2 invalid sock_common access off=16 size=4
    >>> check_sock_access("tcp_sock", 80, 8).off      # bytes_received
    80
    """
    if write:
        raise CtxAccessError(f"R{regno} cannot write into {kind}")
    table = _sock_table(kind)
    if (off, size) in _SOCK_CONVERSION_BUGS.get(kind, ()):
        raise CtxAccessError(CONVERSION_BUG, errno.EFAULT)
    acc = table.lookup(off, size, False)
    if acc is None:
        raise CtxAccessError(f"R{regno} invalid {kind} access off={off} size={size}")
    return acc


def check_flow_keys_access(off: int, size: int) -> None:
    """Accesses through the flow dissector's ``flow_keys`` pointer (check_flow_keys_access).

    Any offset and size inside ``struct bpf_flow_keys``, read or write.

    >>> check_flow_keys_access(48, 8)
    >>> check_flow_keys_access(52, 8)
    Traceback (most recent call last):
    ...
    userbpf.contexts.CtxAccessError: invalid access to flow keys off=52 size=8
    """
    if off < 0 or size < 0 or off + size > FLOW_KEYS.size:
        raise CtxAccessError(f"invalid access to flow keys off={off} size={size}")


def permitted_accesses(prog_type: int, expected_attach_type: int = 0
                       ) -> Dict[Tuple[int, int, bool], CtxAccess]:
    """Every permitted ``(off, size, write) -> CtxAccess`` of a context, as a new dict.

    TRACEPOINT and SYSCALL also permit ranges too large to list (any aligned
    access in their record / buffer); check_ctx_access answers for those.

    >>> acc = permitted_accesses(ProgType.XDP)
    >>> sorted(k for k in acc if not k[2])[:3]
    [(0, 4, False), (4, 4, False), (8, 4, False)]
    """
    return dict(_table(int(prog_type), int(expected_attach_type)).ok)


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

    >>> may_access_direct_pkt_data(ProgType.XDP, True)
    True
    >>> may_access_direct_pkt_data(ProgType.CGROUP_SKB), may_access_direct_pkt_data(ProgType.CGROUP_SKB, True)
    (True, False)
    """
    return int(prog_type) in (DIRECT_PKT_WRITE_TYPES if write else DIRECT_PKT_READ_TYPES)
