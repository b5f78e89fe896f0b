"""BPF_PROG_TEST_RUN for the types whose input is a context rather than a
packet alone, as net/bpf/test_run.c runs them:

- FLOW_DISSECTOR: the packet from its Ethernet header; the program fills
  a ``struct bpf_flow_keys`` (n_proto, nhoff = thoff = 14 and the flags
  from ``ctx_in`` given) that comes back as data_out, nhoff and thoff
  clamped to the packet afterwards (bpf_flow_dissect).
- SK_LOOKUP: ``ctx_in`` is a ``struct bpf_sk_lookup`` (family, protocol,
  addresses and ports; no socket); the program sees the addresses of its
  family only; ctx_out has cookie 0 (no socket was selected: sk_assign
  comes with the hooks issue).
- SYSCALL: ``ctx_in`` is the program's memory and is written back.
- NETFILTER: the packet is an IPv4/IPv6 skb (an Ethernet frame, or the bare
  IP packet for NF_INET_LOCAL_OUT, the default hook); ``ctx_in`` is a
  ``struct nf_hook_state`` that may set only hook and pf. ``ctx->state``
  reads hook and pf; ``ctx->skb`` is a kernel object (BTF) userbpf does not
  lay out: it reads as NULL.

Runners share the signature of :mod:`userbpf.kernel.test_run`'s.
"""
from __future__ import annotations

import errno
import struct

from .. import contexts
from ..uapi import ProgType
from .errors import bpf_error

__all__ = ["RUNNERS", "FLOW_KEYS_SIZE"]

ETH_HLEN = 14
PAGE_SIZE = 4096
U16_MAX = 0xffff
U32_MAX = 0xffffffff
AF_INET, AF_INET6 = 2, 10

# struct bpf_flow_keys: nhoff u16, thoff u16, addr_proto u16, is_frag u8,
# is_first_frag u8, is_encap u8, ip_proto u8, n_proto be16, sport be16,
# dport be16, addresses (32 bytes), flags u32 (at 48), flow_label be32
FLOW_KEYS_SIZE = 56
FLOW_KEYS_FLAGS_OFF = 48


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _result(r0, data_out, ctx_out, ns, repeat):
    from .test_run import TestRunResult
    return TestRunResult(r0 & U32_MAX, data_out, ctx_out, min(ns // max(repeat, 1), U32_MAX))


def _no_flags(flags, cpu, batch_size):
    if flags or cpu or batch_size:
        raise bpf_error(errno.EINVAL, "flags, cpu and batch_size must be 0 for this type")


def _user_ctx(ctx_in, ctx_out_wanted, size):
    from .test_run import _ctx_init
    return _ctx_init(ctx_in, ctx_out_wanted, size)


def _run_flow_dissector(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags,
                        batch_size, ncpus):
    _no_flags(flags, cpu, batch_size)
    data = bytes(data_in or b"")
    size = len(data)
    if size < ETH_HLEN or size > PAGE_SIZE:
        raise bpf_error(errno.EINVAL, f"data_size_in {size} is not in [{ETH_HLEN}, {PAGE_SIZE}]")
    user_ctx = _user_ctx(ctx_in, ctx_out_wanted, FLOW_KEYS_SIZE)
    keys_flags = 0
    if user_ctx is not None:
        if any(user_ctx[:FLOW_KEYS_FLAGS_OFF]) or any(user_ctx[FLOW_KEYS_FLAGS_OFF + 4:]):
            raise bpf_error(errno.EINVAL, "ctx_in (bpf_flow_keys) may set only flags")
        keys_flags = struct.unpack_from("<I", user_ctx, FLOW_KEYS_FLAGS_OFF)[0]
    init = bytearray(FLOW_KEYS_SIZE)
    struct.pack_into("<HH", init, 0, ETH_HLEN, ETH_HLEN)         # nhoff, thoff
    init[10:12] = data[12:14]                                     # n_proto: eth->h_proto
    struct.pack_into("<I", init, FLOW_KEYS_FLAGS_OFF, keys_flags)
    keys = bytearray(FLOW_KEYS_SIZE)
    struct_ = contexts.ctx_struct(ProgType.FLOW_DISSECTOR)
    ctx = bytearray(struct_.internal_size)
    buf = bytearray(data)
    r0, ns, _, _, _ = program._vm.run_ctx(
        ctx, _align8(struct_.size), buf, kind=0, data=0, end=size, writable=False,
        repeat=repeat, cpu=program._cpu(None), extra=keys,
        extra_slot=contexts.CtxPtr.FLOW_KEYS, extra_init=bytes(init))
    nhoff, thoff = struct.unpack_from("<HH", keys, 0)
    nhoff = min(max(nhoff, ETH_HLEN), size & U16_MAX)             # clamp_t(u16, ...)
    thoff = min(max(thoff, nhoff), size & U16_MAX)
    struct.pack_into("<HH", keys, 0, nhoff, thoff)
    return _result(r0, bytes(keys), None if user_ctx is None else bytes(user_ctx), ns, repeat)


_SKL = contexts.ctx_struct(ProgType.SK_LOOKUP)
_SKL_AT = {name: off for name, (off, _) in _SKL.spans().items()}


def _run_sk_lookup(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
                   ncpus):
    _no_flags(flags, cpu, batch_size)
    if data_in is not None:
        raise bpf_error(errno.EINVAL, "sk_lookup test runs take no data")
    user_ctx = _user_ctx(ctx_in, ctx_out_wanted, _SKL.size)
    if user_ctx is None:
        raise bpf_error(errno.EINVAL, "sk_lookup test runs need ctx_in")
    o = _SKL_AT
    if any(user_ctx[o["sk"]:o["sk"] + 8]):
        raise bpf_error(errno.EINVAL, "ctx_in may not name a socket")
    if any(user_ctx[o["local_port"] + 4:]):
        raise bpf_error(errno.EINVAL, "ctx_in fields past local_port must be 0")
    family, protocol = struct.unpack_from("<II", user_ctx, o["family"])
    local_port = struct.unpack_from("<I", user_ctx, o["local_port"])[0]
    if local_port > U16_MAX:
        raise bpf_error(errno.ERANGE, f"local_port {local_port} does not fit 16 bits")
    family &= U16_MAX                                   # bpf_sk_lookup_kern's u16s
    if family not in (AF_INET, AF_INET6):
        raise bpf_error(errno.EAFNOSUPPORT, f"family {family} is not AF_INET or AF_INET6")
    ctx = bytearray(_SKL.internal_size)
    struct.pack_into("<II", ctx, o["family"], family, protocol & U16_MAX)
    ctx[o["remote_port"]:o["remote_port"] + 2] = user_ctx[o["remote_port"]:o["remote_port"] + 2]
    struct.pack_into("<I", ctx, o["local_port"], local_port)
    if family == AF_INET:             # the other family's addresses read as 0
        for name in ("remote_ip4", "local_ip4"):
            ctx[o[name]:o[name] + 4] = user_ctx[o[name]:o[name] + 4]
    else:
        for name in ("remote_ip6", "local_ip6"):
            ctx[o[name]:o[name] + 16] = user_ctx[o[name]:o[name] + 16]
    repeat = repeat or 1
    r0, ns, _, _, _ = program._vm.run_ctx(ctx, _align8(_SKL.size), None, repeat=repeat,
                                          cpu=program._cpu(None))
    user_ctx[o["cookie"]:o["cookie"] + 8] = bytes(8)   # no socket selected
    return _result(r0, b"", bytes(user_ctx), ns, repeat)


_SYSCALL = contexts.ctx_struct(ProgType.SYSCALL)


def _run_syscall(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
                 ncpus):
    if data_in is not None or ctx_out_wanted or repeat or flags or batch_size:
        raise bpf_error(errno.EINVAL, "syscall test runs take only ctx_in (and cpu)")
    ctx_in = bytes(ctx_in or b"")
    if len(ctx_in) < program.max_ctx_offset or len(ctx_in) > U16_MAX:
        raise bpf_error(errno.EINVAL, f"ctx_size_in {len(ctx_in)} is not in "
                                      f"[{program.max_ctx_offset}, {U16_MAX}]")
    ctx = bytearray(_SYSCALL.internal_size)
    ctx[:len(ctx_in)] = ctx_in
    r0, _, _, _, _ = program._vm.run_ctx(ctx, _align8(_SYSCALL.size), None, repeat=1,
                                         cpu=program._cpu(None))
    # the kernel copies the context back over the caller's ctx_in
    return _result(r0, b"", bytes(ctx[:len(ctx_in)]) if ctx_in else None, 0, 1)


TCP_CLOSE = 7
_BPF_SOCK_AT = {name: off for name, (off, _) in contexts.BPF_SOCK.spans().items()}
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD


def test_socket_addresses(frame: bytes):
    """``(family, local, remote)`` of an skb test run's socket: AF_INET or
    AF_INET6 with the IP header's source and destination as
    bpf_prog_test_run_skb sets them (None where the frame is too short),
    AF_UNSPEC (0) for other protocols.

    >>> test_socket_addresses(bytes(12) + b"\\x08\\x00" + bytes(12) + bytes([1, 2, 3, 4, 5, 6, 7, 8]))
    (2, b'\\x01\\x02\\x03\\x04', b'\\x05\\x06\\x07\\x08')
    """
    proto = int.from_bytes(frame[12:14], "big")
    ip = frame[ETH_HLEN:]
    if proto == ETH_P_IP:
        return (AF_INET, ip[12:16], ip[16:20]) if len(ip) >= 20 else (AF_INET, None, None)
    if proto == ETH_P_IPV6:
        return (AF_INET6, ip[8:24], ip[24:40]) if len(ip) >= 40 else (AF_INET6, None, None)
    return 0, None, None


def skb_test_socket(frame: bytes) -> bytes:
    """The ``struct bpf_sock`` an skb test run's socket reads as (what
    ``__sk_buff.sk`` points to): sk_alloc + sock_init_data with no socket
    (type, protocol, ports 0, state TCP_CLOSE, no rx queue: -1), family and
    addresses from :func:`test_socket_addresses`.

    >>> s = skb_test_socket(bytes(12) + b"\\x08\\x00" + bytes.fromhex("45" + "00" * 11)
    ...                     + bytes([10, 0, 0, 1, 10, 0, 0, 2]))
    >>> s[4], s[24:28], s[52:56], s[72]
    (2, b'\\n\\x00\\x00\\x01', b'\\n\\x00\\x00\\x02', 7)
    """
    sk = bytearray(contexts.BPF_SOCK.size)
    o = _BPF_SOCK_AT
    family, local, remote = test_socket_addresses(frame)
    struct.pack_into("<I", sk, o["family"], family)
    if local is not None:
        src, dst = ("src_ip4", "dst_ip4") if family == AF_INET else ("src_ip6", "dst_ip6")
        sk[o[src]:o[src] + len(local)] = local
        sk[o[dst]:o[dst] + len(remote)] = remote
    struct.pack_into("<I", sk, o["state"], TCP_CLOSE)
    struct.pack_into("<i", sk, o["rx_queue_mapping"], -1)
    return bytes(sk)


# struct nf_hook_state: u8 hook, u8 pf, then in, out, sk, net, okfn (pointers)
NF_HOOK_STATE_SIZE = 48
NF_INET_LOCAL_OUT = 3
NF_INET_HOOKS_WITH_ETH = (0, 1, 2, 4)
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
SKB_HEADROOM, SKB_TAILROOM = 64, 320       # NET_SKB_PAD + NET_IP_ALIGN, skb_shared_info


def _run_netfilter(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
                   ncpus):
    """bpf_prog_test_run_nf, its checks in the kernel's order."""
    _no_flags(flags, cpu, batch_size)
    data = bytes(data_in or b"")
    size = len(data)
    if size < 20:                                          # sizeof(struct iphdr)
        raise bpf_error(errno.EINVAL, f"data_size_in {size} is less than an IPv4 header")
    if size < ETH_HLEN or size > PAGE_SIZE - SKB_HEADROOM - SKB_TAILROOM:
        raise bpf_error(errno.EINVAL, f"data_size_in {size} is not in "
                                      f"[{ETH_HLEN}, {PAGE_SIZE - SKB_HEADROOM - SKB_TAILROOM}]")
    hook, pf = NF_INET_LOCAL_OUT, NFPROTO_IPV4
    user_ctx = _user_ctx(ctx_in, False, NF_HOOK_STATE_SIZE)
    if user_ctx is not None:
        if any(user_ctx[8:]):                              # in, out, sk, net, okfn
            raise bpf_error(errno.EINVAL, "ctx_in (nf_hook_state) may set only hook and pf")
        hook, pf = user_ctx[0], user_ctx[1]
        if pf not in (NFPROTO_IPV4, NFPROTO_IPV6):
            raise bpf_error(errno.EINVAL, f"pf {pf} is not NFPROTO_IPV4 or NFPROTO_IPV6")
    if hook != NF_INET_LOCAL_OUT:                          # an Ethernet frame
        if size < ETH_HLEN + 20:
            raise bpf_error(errno.EINVAL, "an Ethernet frame needs an IPv4 header")
        proto = int.from_bytes(data[12:14], "big")
        if proto == ETH_P_IP:
            if pf != NFPROTO_IPV4:
                raise bpf_error(errno.EINVAL, "an IPv4 frame for a pf that is not IPv4")
        elif proto == ETH_P_IPV6:
            if size < ETH_HLEN + 40 or pf != NFPROTO_IPV6:
                raise bpf_error(errno.EINVAL, "an IPv6 frame too short or for another pf")
        else:
            raise bpf_error(errno.EPROTO, f"protocol {proto:#06x} is not IPv4 or IPv6")
    state = bytes([hook, pf]) + bytes(NF_HOOK_STATE_SIZE - 2)
    struct_ = contexts.ctx_struct(ProgType.NETFILTER, program.expected_attach_type)
    ctx = bytearray(struct_.internal_size)
    repeat = repeat or 1
    r0, ns, _, _, _ = program._vm.run_ctx(ctx, _align8(struct_.size), None, repeat=repeat,
                                          cpu=program._cpu(None),
                                          ro_slots=[(contexts.CtxPtr.NF_STATE, state)])
    return _result(r0, b"", None, ns, repeat)


RUNNERS = {
    ProgType.NETFILTER: _run_netfilter,
    ProgType.FLOW_DISSECTOR: _run_flow_dissector,
    ProgType.SK_LOOKUP: _run_sk_lookup,
    ProgType.SYSCALL: _run_syscall,
}
