"""BPF_PROG_TEST_RUN: run a program once (or ``repeat`` times) on a context
built the way the kernel's net/bpf/test_run.c builds it.

One runner per kind of program:

- ``__sk_buff`` programs (socket filter, tc, cgroup skb, lwt): the packet
  becomes a linear skb on the loopback device. ``eth_type_trans`` takes the
  Ethernet header (protocol, pkt_type); tc programs see the packet from the
  MAC header, the others from the network header, and their data_out gets
  14 zero bytes in front (the kernel pushes a zeroed header back). An
  IPv4 / IPv6 frame must hold a whole IP header (EINVAL otherwise). The
  loopback device has no broadcast address (ff:ff:ff:ff:ff:ff is
  PACKET_MULTICAST there).
  ``ctx_in`` may set only mark, priority, ingress_ifindex, ifindex, cb,
  tstamp, wire_len, gso_segs, gso_size (kept in 16 bits) and hwtstamp;
  without ``ctx_in`` or ``ctx_out`` the skb's cb stays zero, so wire_len
  reads 0.
  BPF_F_TEST_SKB_CHECKSUM_COMPLETE gives the skb a CHECKSUM_COMPLETE
  checksum (skb->csum) of the packet from its network header, which the
  helpers keep as the kernel's do; a run that leaves a packet whose
  checksum differs from skb->csum fails with EBADMSG.
- XDP: 256 bytes of headroom (less the metadata ``ctx_in`` asks for). The
  first ``ctx_in.data_end`` bytes of data_in (all of them without
  ``ctx_in``; at most 4096 - headroom - 320) are linear, metadata
  (``ctx_in.data`` bytes) first, the rest is kept as up to 17 page-sized
  fragments, which bpf_xdp_get_buff_len, bpf_xdp_load/store_bytes and
  bpf_xdp_adjust_tail see as the kernel's do; data_out starts at data_meta
  and ends with the fragments as the program left them. BPF_F_TEST_XDP_LIVE_FRAMES
  runs the program ``repeat`` times on frames from a page pool reused as
  the kernel's is (see :func:`_run_live_frames`) and gives the input back
  with retval 0, as the kernel reports it; what the verdicts do to live
  frames (transmit, redirect, pass to the stack) is not simulated.
- raw tracepoints and syscall programs: the context is ``ctx_in`` itself.

Types the kernel cannot test-run fail with ENOTSUPP (524), as there.
Errors are OSError with the kernel's errno (:func:`userbpf.kernel.errors.bpf_error`).
"""
from __future__ import annotations

import array
import errno
import os
import struct
import sys
from collections import deque
from typing import Callable, Dict, NamedTuple, Optional

from .. import contexts
from ..uapi import AttachType, ProgType
from .errors import ENOTSUPP, bpf_error

__all__ = ["TestRunResult", "test_run", "TEST_RUN_TYPES", "RETVAL_ONLY"]

ETH_HLEN = 14
PAGE_SIZE = 4096
NET_SKB_PAD = 64                 # max(32, L1_CACHE_BYTES) on x86_64
NET_IP_ALIGN = 0                 # x86_64
SKB_SHINFO_SIZE = 320            # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
XDP_PACKET_HEADROOM = 256
BPF_SKB_MAX_LEN = 16064          # what skb helpers may grow a packet to
GSO_LEGACY_MAX_SIZE = 65536
GSO_MAX_SEGS = 65535
MAX_BPF_FUNC_ARGS = 12
LOOPBACK_IFINDEX = 1
BPF_F_TEST_RUN_ON_CPU = 1 << 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_F_TEST_SKB_CHECKSUM_COMPLETE = 1 << 2
MAX_SKB_FRAGS = 17               # CONFIG_MAX_SKB_FRAGS default
SIZEOF_XDP_FRAME = 40            # struct xdp_frame on 64-bit: metadata leaves room for it
TEST_XDP_MAX_BATCH = 256
PP_ALLOC_CACHE_REFILL = 64       # pages a page pool allocates (or takes back) at a time
NAPI_POLL_WEIGHT = 64            # live frames' default batch_size
XDP_PASS = 2
U32_MAX = 0xffffffff
_HOST_CPUS = os.cpu_count() or 1   # (os.cpu_count costs microseconds a call)

# if_packet.h / if_ether.h
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 1, 2, 3
ETH_P_802_3_MIN, ETH_P_802_3, ETH_P_802_2 = 0x600, 0x0001, 0x0004
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
AF_INET, AF_INET6 = 2, 10
LOOPBACK_MAC = bytes(6)
# loopback_setup sets no broadcast address: ff:ff:ff:ff:ff:ff is just multicast there
LOOPBACK_BROADCAST = bytes(6)


class TestRunResult(NamedTuple):
    """What a test run gives back (the kernel's attr.test outputs)."""
    __test__ = False            # not a pytest class
    retval: int                 # r0 of the last run, as u32
    data_out: bytes             # the whole output packet (untruncated)
    ctx_out: Optional[bytes]    # the output context, when the type has one to give
    duration: int               # mean ns per run, as the kernel's u32
    frags_size: int = 0         # XDP: bytes of data_out that were fragments (at its end)


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _duration(total_ns: int, repeat: int) -> int:
    return min(total_ns // max(repeat, 1), U32_MAX)


def _ctx_init(ctx_in: Optional[bytes], ctx_out_wanted: bool, max_size: int) -> Optional[bytearray]:
    """bpf_ctx_init: None without ctx_in/ctx_out; bytes past max_size must be zero (E2BIG)."""
    if ctx_in is None and not ctx_out_wanted:
        return None
    ctx = bytearray(max_size)
    if ctx_in is not None:
        if len(ctx_in) > PAGE_SIZE:             # bpf_check_uarg_tail_zero
            raise bpf_error(errno.E2BIG, f"ctx_size_in {len(ctx_in)} is larger than a page")
        if len(ctx_in) > max_size and any(ctx_in[max_size:]):
            raise bpf_error(errno.E2BIG, "ctx_in has non-zero bytes past the context struct")
        n = min(len(ctx_in), max_size)
        ctx[:n] = ctx_in[:n]
    return ctx


def _zero(buf, lo: int, hi: int) -> bool:
    return not any(buf[lo:hi])


# -- __sk_buff ------------------------------------------------------------------

_SKB = contexts.ctx_struct(ProgType.SCHED_CLS)         # __sk_buff
_SKB_SPANS = _SKB.spans()                               # name -> (offset, size)

# what ctx_in may set (convert___skb_to_skb) and what ctx_out gets back
# (convert_skb_to___skb)
SKB_CTX_IN_FIELDS = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp",
                     "wire_len", "gso_segs", "gso_size", "hwtstamp")
SKB_CTX_OUT_FIELDS = ("mark", "priority", "ingress_ifindex", "ifindex", "tstamp", "cb",
                      "wire_len", "gso_segs", "hwtstamp")
_L2_TYPES = frozenset({ProgType.SCHED_CLS, ProgType.SCHED_ACT})


def _get(buf, name: str) -> int:
    """A scalar __sk_buff field, in the host's byte order as programs read it."""
    off, size = _SKB_SPANS[name]
    return int.from_bytes(buf[off:off + size], sys.byteorder)


def _put(buf, name: str, value: int) -> None:
    off, size = _SKB_SPANS[name]
    buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, sys.byteorder)


def _copy_field(dst, src, name: str) -> None:
    """A whole field (or array: ``cb``) from one __sk_buff copy to another."""
    off, size = _SKB_SPANS[name]
    dst[off:off + size] = src[off:off + size]


def _check_skb_ctx_in(ctx: bytearray, pkt_len: int) -> None:
    """convert___skb_to_skb: every byte outside the settable fields is zero."""
    allowed = bytearray(_SKB.size)
    for name in SKB_CTX_IN_FIELDS:
        off, size = _SKB_SPANS[name]
        allowed[off:off + size] = b"\xff" * size
    if any(b and not a for b, a in zip(ctx, allowed)):
        raise bpf_error(errno.EINVAL, "ctx_in sets __sk_buff fields a test run may not set")
    wire_len = _get(ctx, "wire_len")
    if wire_len and (wire_len < pkt_len or wire_len > GSO_LEGACY_MAX_SIZE):
        raise bpf_error(errno.EINVAL, f"wire_len {wire_len} is not in "
                                      f"[{pkt_len}, {GSO_LEGACY_MAX_SIZE}]")
    if _get(ctx, "gso_segs") > GSO_MAX_SEGS:
        raise bpf_error(errno.EINVAL, "gso_segs is larger than GSO_MAX_SEGS")


def eth_type_trans(frame: bytes, dev_addr: bytes = LOOPBACK_MAC,
                   dev_broadcast: bytes = LOOPBACK_BROADCAST):
    """``(protocol (host order), pkt_type)`` of an Ethernet frame, as the kernel's
    eth_type_trans gives them for a device with address ``dev_addr`` and
    broadcast address ``dev_broadcast`` (the loopback device's by default,
    where the all-ones address counts as multicast).

    >>> eth_type_trans(bytes.fromhex("ffffffffffff" "020000000001" "0800") + bytes(20))
    (2048, 2)
    >>> eth_type_trans(bytes.fromhex("ffffffffffff" "020000000001" "0806"),
    ...                dev_broadcast=bytes.fromhex("ffffffffffff"))
    (2054, 1)
    """
    dest = frame[0:6]
    if dest[0] & 1:
        pkt_type = PACKET_BROADCAST if dest == dev_broadcast else PACKET_MULTICAST
    elif dest != dev_addr:
        pkt_type = PACKET_OTHERHOST
    else:
        pkt_type = PACKET_HOST
    proto = int.from_bytes(frame[12:14], "big")
    if proto >= ETH_P_802_3_MIN:
        return proto, pkt_type
    if frame[14:16] == b"\xff\xff":
        return ETH_P_802_3, pkt_type           # raw 802.3 (IPX)
    return ETH_P_802_2, pkt_type


def csum_fold(data: bytes) -> int:
    """The folded 16-bit one's complement sum of ``data`` in network order
    (RFC 1071). Test runs keep skb->csum in host order: :func:`wsum`.

    >>> hex(csum_fold(bytes.fromhex("4500003c")))
    '0x453c'
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))   # network order
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total


def wsum(data) -> int:
    """csum_partial(data, len, 0) as a 32-bit __wsum: the ones'-complement
    sum of 16-bit little-endian (host order) words, an odd last byte low.

    >>> hex(wsum(bytes.fromhex("4500003c"))), hex(wsum(b"\\x01"))
    ('0x3c45', '0x1')
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"<{len(data) // 2}H", data))
    while total >> 32:
        total = (total & U32_MAX) + (total >> 32)
    return total


def wsum_fold(csum: int) -> int:
    """csum_fold: a __wsum folded to 16 bits and complemented.

    >>> hex(wsum_fold(0x3c45))
    '0xc3ba'
    """
    csum = (csum & 0xffff) + (csum >> 16)
    csum = (csum & 0xffff) + (csum >> 16)
    return ~csum & 0xffff


def _run_skb(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
             ncpus):
    if flags & ~BPF_F_TEST_SKB_CHECKSUM_COMPLETE or cpu or batch_size:
        raise bpf_error(errno.EINVAL, "skb programs take no cpu or batch_size, and of the "
                                      "flags only BPF_F_TEST_SKB_CHECKSUM_COMPLETE")
    data = bytes(data_in or b"")
    size = len(data)
    headroom, tailroom = NET_SKB_PAD + NET_IP_ALIGN, SKB_SHINFO_SIZE
    if size < ETH_HLEN or size > PAGE_SIZE - headroom - tailroom:
        raise bpf_error(errno.EINVAL, f"data_size_in {size} is not in "
                                      f"[{ETH_HLEN}, {PAGE_SIZE - headroom - tailroom}]")
    user_ctx = _ctx_init(ctx_in, ctx_out_wanted, _SKB.size)
    ptype = program.prog_type
    is_l2 = ptype in _L2_TYPES
    if user_ctx is not None and _get(user_ctx, "ifindex") > LOOPBACK_IFINDEX:
        raise bpf_error(errno.ENODEV, "userbpf's test runs have only the loopback device")
    # room to grow to BPF_SKB_MAX_LEN, where the kernel would reallocate the head
    cap = headroom + max(_align8(size), BPF_SKB_MAX_LEN) + tailroom
    buf = bytearray(cap)
    buf[headroom:headroom + size] = data
    protocol, pkt_type = eth_type_trans(data)
    net = headroom + ETH_HLEN                      # skb->data after eth_type_trans
    struct_ = contexts.ctx_struct(ptype, program.expected_attach_type)
    ctx = bytearray(struct_.internal_size)
    _put(ctx, "pkt_type", pkt_type)
    off = _SKB_SPANS["protocol"][0]
    ctx[off:off + 2] = protocol.to_bytes(2, "big")      # __be16 (then two zero bytes)
    _put(ctx, "ifindex", LOOPBACK_IFINDEX)
    # the test run's socket: family and addresses from the packet's IP
    # header, which must be all there (EINVAL otherwise, as on Linux 6.18)
    if protocol in (ETH_P_IP, ETH_P_IPV6):
        need = 20 if protocol == ETH_P_IP else 40
        if size - ETH_HLEN < need:
            raise bpf_error(errno.EINVAL, f"an {'IPv4' if need == 20 else 'IPv6'} frame "
                                          f"needs {need} bytes of IP header")
    # the test run's socket: __sk_buff.family and the addresses read through it
    family, local, remote = test_socket_addresses(data)
    _put(ctx, "family", family)
    if local is not None:
        ip6 = "6" if family == AF_INET6 else "4"
        for name, addr in (("local_ip" + ip6, local), ("remote_ip" + ip6, remote)):
            off = _SKB_SPANS[name][0]
            ctx[off:off + len(addr)] = addr
    start = net - ETH_HLEN if is_l2 else net
    length = headroom + size - start
    if user_ctx is not None:
        _check_skb_ctx_in(user_ctx, length)
        for name in ("mark", "priority", "ingress_ifindex", "tstamp", "cb", "gso_segs",
                     "gso_size", "hwtstamp"):
            _copy_field(ctx, user_ctx, name)
        # skb_shinfo(skb)->gso_size is 16 bits
        _put(ctx, "gso_size", _get(user_ctx, "gso_size") & 0xffff)
        _put(ctx, "wire_len", _get(user_ctx, "wire_len") or length)
    # without ctx_in (or ctx_out) the kernel leaves the skb's cb zero, so
    # wire_len (qdisc_skb_cb(skb)->pkt_len) reads 0
    _put(ctx, "len", length)
    # CHECKSUM_COMPLETE: skb->csum covers the packet from its network header
    csum = wsum(buf[net:headroom + size]) if flags & BPF_F_TEST_SKB_CHECKSUM_COMPLETE else -1
    info: dict = {}
    r0, ns, meta, dstart, dend = program._vm.run_ctx(
        ctx, _align8(struct_.size), buf, kind=2, data=start, end=start + length,
        tailroom=tailroom, mac_len=ETH_HLEN, l2=is_l2,
        writable=contexts.may_access_direct_pkt_data(ptype, write=True),
        repeat=repeat, cpu=program._cpu(None),
        ro_slots=[(contexts.CtxPtr.SOCK, skb_test_socket(data))],   # __sk_buff.sk
        csum=csum, info=info)
    if csum >= 0:
        # the helpers kept skb->csum (until one made the skb CHECKSUM_NONE);
        # it must fold to the final packet's checksum from its network
        # header, wherever the helpers left that header
        l3 = dstart + info["net_off"]
        if wsum_fold(wsum(buf[l3:dend])) != wsum_fold(info["csum"]):
            raise bpf_error(errno.EBADMSG, "skb->csum of the CHECKSUM_COMPLETE skb does not "
                                           "match the packet the program left")
    out = bytes(buf[dstart:dend])
    if not is_l2:
        out = bytes(ETH_HLEN) + out
    ctx_out = None
    if user_ctx is not None:
        for name in SKB_CTX_OUT_FIELDS:
            _copy_field(user_ctx, ctx, name)
        ctx_out = bytes(user_ctx)
    return TestRunResult(r0 & U32_MAX, out, ctx_out, _duration(ns, repeat))


# -- xdp_md ---------------------------------------------------------------------

_XDP_SIZE = contexts.ctx_struct(ProgType.XDP).size
_XDP_INGRESS_IFINDEX = contexts.ctx_struct(ProgType.XDP).span("ingress_ifindex")[0]


def _run_xdp(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
             ncpus, *, data_out_given: bool = True):
    """bpf_prog_test_run_xdp, its checks in the kernel's order."""
    if program.expected_attach_type in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
        raise bpf_error(errno.EINVAL, "XDP programs for devmap/cpumap cannot be test-run")
    if flags & ~BPF_F_TEST_XDP_LIVE_FRAMES:
        raise bpf_error(errno.EINVAL, f"unknown test_run flags {flags:#x}")
    live = bool(flags & BPF_F_TEST_XDP_LIVE_FRAMES)
    if live:
        if batch_size > TEST_XDP_MAX_BATCH:
            raise bpf_error(errno.E2BIG, f"batch_size {batch_size} is larger than "
                                         f"{TEST_XDP_MAX_BATCH}")
    elif batch_size:
        raise bpf_error(errno.EINVAL, "batch_size needs BPF_F_TEST_XDP_LIVE_FRAMES")
    data = bytes(data_in or b"")
    size = len(data)
    user_ctx = _ctx_init(ctx_in, ctx_out_wanted, _XDP_SIZE)
    headroom, tailroom = XDP_PACKET_HEADROOM, SKB_SHINFO_SIZE
    meta_len, linear = 0, size
    if user_ctx is not None:
        c_data, c_end, c_meta, ingress, rxq, egress = struct.unpack_from("<6I", user_ctx)
        # ctx_in.data is the metadata length, ctx_in.data_end the linear length;
        # both count from the start of data_in
        if c_meta or c_end > size or c_data > c_end or c_data % 4 \
                or c_data > XDP_PACKET_HEADROOM - SIZEOF_XDP_FRAME:
            raise bpf_error(errno.EINVAL, "xdp_md ctx_in: data_meta must be 0, data_end at "
                                          "most the packet size and data a metadata length "
                                          "(a multiple of 4, at most "
                                          f"{XDP_PACKET_HEADROOM - SIZEOF_XDP_FRAME}) "
                                          "not past data_end")
        if live and (ctx_out_wanted or data_out_given):
            raise bpf_error(errno.EINVAL, "live frames give no ctx_out or data_out")
        headroom -= c_data
        meta_len, linear = c_data, c_end
    linear = min(linear, PAGE_SIZE - headroom - tailroom)
    if live and size > linear:
        raise bpf_error(errno.EINVAL, "live frames cannot have fragments")
    if size - meta_len < ETH_HLEN:
        raise bpf_error(errno.EINVAL, f"data_size_in {size} leaves less than {ETH_HLEN} "
                                      "bytes after the metadata")
    if user_ctx is not None:
        if egress:
            raise bpf_error(errno.EINVAL, "egress_ifindex must be 0")
        if not ingress and rxq:
            raise bpf_error(errno.EINVAL, "rx_queue_index needs ingress_ifindex")
        if ingress and ingress != LOOPBACK_IFINDEX:
            raise bpf_error(errno.ENODEV, "userbpf's test runs have only the loopback device")
        if ingress and rxq:
            raise bpf_error(errno.EINVAL, "the loopback device has one receive queue")
    frags = data[linear:]
    if len(frags) > MAX_SKB_FRAGS * PAGE_SIZE:
        raise bpf_error(errno.ENOMEM, f"data_size_in {size} needs more than "
                                      f"{MAX_SKB_FRAGS} fragments")
    struct_ = contexts.ctx_struct(ProgType.XDP, program.expected_attach_type)

    def frame() -> bytearray:
        buf = bytearray(PAGE_SIZE)
        buf[headroom:headroom + linear] = data[:linear]
        return buf

    # the fragments: pages filled from the start, PAGE_SIZE bytes at most
    # each; the rxq's frag_size (how far bpf_xdp_adjust_tail may grow the
    # last one) is a page
    frag_sizes = array.array("I", [min(PAGE_SIZE, len(frags) - at)
                                   for at in range(0, len(frags), PAGE_SIZE)])
    frag_pages = bytearray(PAGE_SIZE * len(frag_sizes))
    for i, at in enumerate(range(0, len(frags), PAGE_SIZE)):
        frag_pages[i * PAGE_SIZE:i * PAGE_SIZE + frag_sizes[i]] = frags[at:at + PAGE_SIZE]
    info: dict = {}

    def run_once(buf: bytearray, runs: int):
        ctx = bytearray(struct_.internal_size)
        off = _XDP_INGRESS_IFINDEX
        ctx[off:off + 4] = LOOPBACK_IFINDEX.to_bytes(4, "little")
        res = program._vm.run_ctx(
            ctx, _align8(struct_.size), buf, kind=1, meta=headroom,
            data=headroom + meta_len, end=headroom + linear, tailroom=tailroom,
            writable=True, repeat=runs, cpu=program._cpu(None),
            frags=frag_pages, frag_sizes=frag_sizes, nr_frags=len(frag_sizes),
            frag_room=PAGE_SIZE, info=info)
        return buf, res

    if live:
        total = _run_live_frames(lambda buf: run_once(buf, 1)[1], frame, repeat,
                                 batch_size or NAPI_POLL_WEIGHT)
        if user_ctx is not None:
            struct.pack_into("<II", user_ctx, 0, meta_len, linear)
        return TestRunResult(0, data, None, _duration(total, repeat))
    buf, (r0, ns, meta, dstart, dend) = run_once(frame(), repeat)
    # bpf_test_finish: the linear part from data_meta, then the fragments
    # the helpers left (grown, shrunk or released)
    frags = b"".join(frag_pages[i * PAGE_SIZE:i * PAGE_SIZE + frag_sizes[i]]
                     for i in range(info["nr_frags"]))
    out = bytes(buf[meta:dend]) + frags
    ctx_out = None
    if user_ctx is not None:
        struct.pack_into("<II", user_ctx, 0, dstart - meta, dend - meta)
        ctx_out = bytes(user_ctx)
    return TestRunResult(r0 & U32_MAX, out, ctx_out, _duration(ns, repeat), len(frags))


def _run_live_frames(run, frame, repeat: int, batch_size: int) -> int:
    """BPF_F_TEST_XDP_LIVE_FRAMES: ``repeat`` runs in batches, each on a page
    of the test's page pool; returns the total ns.

    Pages are filled with the packet once, when the pool allocates them (64
    at a time); a run's page goes back to the pool's ring (FIFO) right after
    it, or at the end of its batch when the verdict was XDP_PASS (the stack
    holds it until then). The allocation cache is refilled from the ring,
    else with 64 fresh pages. Later runs thus see earlier runs' writes, with
    the pointers reset. The kernel reports no verdict and the input frame.
    """
    cache: list = []
    ring: deque = deque()
    total = 0
    done = 0
    while done < repeat:
        held = []
        for _ in range(min(batch_size, repeat - done)):
            if not cache:
                if ring:
                    for _ in range(min(PP_ALLOC_CACHE_REFILL, len(ring))):
                        cache.append(ring.popleft())
                else:
                    cache.extend(frame() for _ in range(PP_ALLOC_CACHE_REFILL))
            page = cache.pop()
            r0, ns = run(page)[:2]
            total += ns
            (held if r0 & U32_MAX == XDP_PASS else ring).append(page)
            done += 1
        ring.extend(held)
    return total


# -- contexts that are the user's bytes -------------------------------------------

def _run_raw_tp(program, data_in, ctx_in, ctx_out_wanted, repeat, cpu, flags, batch_size,
                ncpus):
    if data_in is not None or ctx_out_wanted or repeat or batch_size:
        raise bpf_error(errno.EINVAL, "raw tracepoint test runs take only ctx_in, flags "
                                      "and cpu")
    ctx_in = bytes(ctx_in or b"")
    if len(ctx_in) < program.max_ctx_offset or len(ctx_in) > MAX_BPF_FUNC_ARGS * 8:
        raise bpf_error(errno.EINVAL, f"ctx_size_in {len(ctx_in)} is not in "
                                      f"[{program.max_ctx_offset}, {MAX_BPF_FUNC_ARGS * 8}]")
    if not flags & BPF_F_TEST_RUN_ON_CPU and cpu:
        raise bpf_error(errno.EINVAL, "cpu needs BPF_F_TEST_RUN_ON_CPU")
    # other flag bits are ignored here, as the kernel ignores them
    if flags & BPF_F_TEST_RUN_ON_CPU and cpu >= ncpus:
        raise bpf_error(errno.ENXIO, f"cpu {cpu} is not online")
    base = _align8(MAX_BPF_FUNC_ARGS * 8)
    ctx = bytearray(base + 8 * len(contexts.CtxPtr))
    ctx[:len(ctx_in)] = ctx_in
    run_cpu = cpu if flags & BPF_F_TEST_RUN_ON_CPU else program._cpu(None)
    r0, _, _, _, _ = program._vm.run_ctx(ctx, base, None, repeat=1, cpu=run_cpu)
    return TestRunResult(r0 & U32_MAX, b"", None, 0)


TEST_RUN_TYPES: Dict[int, Callable] = {
    ProgType.SOCKET_FILTER: _run_skb,
    ProgType.SCHED_CLS: _run_skb,
    ProgType.SCHED_ACT: _run_skb,
    ProgType.CGROUP_SKB: _run_skb,
    ProgType.LWT_IN: _run_skb,
    ProgType.LWT_OUT: _run_skb,
    ProgType.LWT_XMIT: _run_skb,
    ProgType.XDP: _run_xdp,
    ProgType.RAW_TRACEPOINT: _run_raw_tp,
}


def truncate_data_out(data: bytes, frags_size: int, limit: int) -> Optional[bytes]:
    """What bpf_test_finish copies into a data_out of ``limit`` bytes: the
    linear part cut so that the fragments (kept whole, at the end) fit; None
    when even they do not (nothing is copied, not even data_size_out).

    >>> truncate_data_out(b"LLLLFF", 2, 4), truncate_data_out(b"LLLLFF", 2, 1)
    (b'LLFF', None)
    """
    linear = limit - frags_size
    if linear < 0:
        return None
    return data[:linear] + data[len(data) - frags_size:]


def test_run(program, data_in: Optional[bytes] = None, ctx_in: Optional[bytes] = None, *,
             ctx_out: bool = False, repeat: int = 1, cpu: int = 0, flags: int = 0,
             batch_size: int = 0, ncpus: Optional[int] = None,
             data_out: Optional[bool] = None, duration: int = 0) -> TestRunResult:
    """Test-run ``program`` (a :class:`userbpf.Program` with a ``prog_type``).

    ``ctx_out`` asks for the output context even without ``ctx_in``;
    ``repeat`` 0 means 1, as in the kernel; ``ncpus`` bounds ``cpu`` for
    BPF_F_TEST_RUN_ON_CPU (default: this machine's CPUs). ``data_out``
    says whether the caller gave an output buffer (None: as the type
    expects) and ``duration`` is attr.test.duration as given: types that
    take neither refuse them, as the kernel does.

    >>> from userbpf import Program
    >>> p = Program("r2 = *(u32 *)(r1 + 4)\\nr3 = *(u32 *)(r1 + 0)\\n"
    ...             "r0 = r2\\nr0 -= r3\\nexit", prog_type=ProgType.XDP)
    >>> test_run(p, bytes(60)).retval          # data_end - data
    60
    """
    if program.prog_type is None:
        raise ValueError("test_run needs a Program loaded with a prog_type")
    runner = TEST_RUN_TYPES.get(program.prog_type)
    if runner is None:
        raise bpf_error(ENOTSUPP, f"{ProgType(program.prog_type).name} programs cannot be "
                                  "test-run (they run from their hooks)")
    if program.prog_type in RETVAL_ONLY:          # no data_out, duration, repeat
        if data_out or duration:
            raise bpf_error(errno.EINVAL, f"{ProgType(program.prog_type).name} test runs "
                                          "take no data_out or duration")
    else:
        repeat = repeat or 1
    ncpus = ncpus or _HOST_CPUS
    if runner is _run_xdp:
        return runner(program, data_in, ctx_in, ctx_out, repeat, cpu, flags, batch_size,
                      ncpus, data_out_given=data_out is not False)
    return runner(program, data_in, ctx_in, ctx_out, repeat, cpu, flags, batch_size, ncpus)


# flow dissector, sk_lookup and syscall programs: kernel/test_run_ctx.py
from .test_run_ctx import (RUNNERS as _CTX_RUNNERS, skb_test_socket,  # noqa: E402
                           test_socket_addresses)
TEST_RUN_TYPES.update(_CTX_RUNNERS)
# Types whose test run takes no repeat, data_out or duration and writes back
# only retval (a syscall program's context also goes back over ctx_in: its
# result's ctx_out is that context).
RETVAL_ONLY = frozenset({ProgType.RAW_TRACEPOINT, ProgType.SYSCALL})
