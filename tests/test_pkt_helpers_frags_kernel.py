"""XDP fragments and CHECKSUM_COMPLETE skbs: the helpers against the live kernel.

An XDP test run with more data than the linear part (3520 bytes, or
ctx_in.data_end) keeps the rest as fragments of up to a page each:
bpf_xdp_get_buff_len counts them, bpf_xdp_load/store_bytes reach across
them, bpf_xdp_adjust_tail grows the last one within its page or shrinks
from the end (releasing emptied fragments, then the linear part). Each
case compares retval, data_out and ctx_out with BPF_PROG_TEST_RUN.

A CHECKSUM_COMPLETE skb (BPF_F_TEST_SKB_CHECKSUM_COMPLETE) carries
skb->csum, which the helpers keep (or drop) as the kernel's do; the test
run fails with EBADMSG when it does not match the final packet. Each case
compares the outcome (retval and data_out, or the errno).
"""
from __future__ import annotations

import ctypes
import random
import struct

import pytest

from pktprog import (
    EFAULT, EINVAL, Fp, L3_CSUM_REPLACE, L4_CSUM_REPLACE, SKB_ADJUST_ROOM, SKB_CHANGE_HEAD,
    SKB_CHANGE_TAIL, SKB_PULL_DATA, SKB_STORE_BYTES, TC, XDP, XDP_ADJUST_HEAD,
    XDP_ADJUST_TAIL, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES, XDP_STORE_BYTES, call, neg, prog,
    outcome, stack_fill, tcp4, tcp6, theirs, udp4, unchecked)
from userbpf import Program, abi, isa
from userbpf.kernel import Kernel
from userbpf.uapi import Cmd, ProgType

pytestmark = pytest.mark.kernel

LINEAR = 3520                    # PAGE_SIZE - XDP_PACKET_HEADROOM - skb_shared_info
PAGE = 4096
BIG = bytes(range(251)) * 300     # a pattern that does not repeat at page boundaries


def xdp_md(data: int, data_end: int) -> bytes:
    """ctx_in: data (the metadata length) and data_end (the linear length)."""
    return struct.pack("<6I", data, data_end, 0, 0, 0, 0)


def xdp_both(host, code, data: bytes, ctx=None, repeat: int = 1):
    """userbpf and the kernel: the same retval, data_out and ctx_out."""
    a = outcome(lambda: Program(code, prog_type=XDP).test_run(data, ctx=ctx, repeat=repeat))
    b = outcome(lambda: theirs(host, XDP, code, data, ctx_in=ctx, repeat=repeat))
    if isinstance(b, tuple) and ctx is None:
        b = b[:2] + (None,)
    assert a == b
    return a


def move(src: int, dst: int, n: int) -> list:
    """bpf_xdp_load_bytes(src, n) to the stack, then bpf_xdp_store_bytes(dst)
    of those bytes (n a multiple of 8, at most 256); either result ends it."""
    return prog(call(XDP_LOAD_BYTES, src, Fp(-n), n), call(XDP_STORE_BYTES, dst, Fp(-n), n))


def ret_buff_len(*steps) -> list:
    """steps, then r0 = bpf_xdp_get_buff_len (when every step returned 0)."""
    return prog(*steps, unchecked(call(XDP_GET_BUFF_LEN)))


# -- bpf_xdp_get_buff_len ---------------------------------------------------------

@pytest.mark.parametrize("size", [LINEAR, LINEAR + 1, 4000, LINEAR + PAGE, LINEAR + PAGE + 1,
                                  LINEAR + 17 * PAGE])
def test_get_buff_len_counts_fragments(host, size):
    r = xdp_both(host, prog(unchecked(call(XDP_GET_BUFF_LEN))), BIG[:size])
    assert r[0] == size


@pytest.mark.parametrize("meta,linear", [(0, 60), (8, 100), (0, 14), (4, LINEAR - 4)])
def test_get_buff_len_with_ctx_in_data_end(host, meta, linear):
    data = BIG[:linear + 500]
    r = xdp_both(host, prog(unchecked(call(XDP_GET_BUFF_LEN))), data, ctx=xdp_md(meta, linear))
    assert r[0] == len(data) - meta


# -- bpf_xdp_adjust_tail on the last fragment ----------------------------------------

# 4000 bytes: a 480-byte fragment with 3616 bytes of tailroom in its page
ADJUST_TAIL_CASES = [0, 1, 10, 3616, 3617, 0x7fffffff, -1, -479, -480, -481, -2000,
                     -(4000 - 14), -(4000 - 13), -0x7fffffff, -0x80000000]


@pytest.mark.parametrize("delta", ADJUST_TAIL_CASES)
def test_adjust_tail_on_one_fragment(host, delta):
    r = xdp_both(host, ret_buff_len(call(XDP_ADJUST_TAIL, delta)), BIG[:4000],
                 ctx=xdp_md(0, LINEAR))
    if delta in (3617, 0x7fffffff, -(4000 - 13), -0x7fffffff):
        assert r[0] == neg(EINVAL)
    elif delta != -0x80000000:
        assert r[0] == 4000 + delta


@pytest.mark.parametrize("size,delta", [
    (LINEAR + PAGE, 1),                 # a full page: no tailroom
    (LINEAR + PAGE, 0),
    (LINEAR + PAGE + 1, PAGE - 1), (LINEAR + PAGE + 1, PAGE),
    (LINEAR + PAGE + 1, -1), (LINEAR + PAGE + 1, -2), (LINEAR + PAGE + 1, -(PAGE + 1)),
    (LINEAR + PAGE + 1, -(PAGE + 2)), (LINEAR + 3 * PAGE, -(2 * PAGE + 5)),
    (LINEAR + 17 * PAGE, -(17 * PAGE)), (LINEAR + 17 * PAGE, 5),
])
def test_adjust_tail_on_several_fragments(host, size, delta):
    xdp_both(host, ret_buff_len(call(XDP_ADJUST_TAIL, delta)), BIG[:size],
             ctx=xdp_md(0, LINEAR))


def test_adjust_tail_after_the_last_fragment_went(host):
    """Once the fragments are released the buffer is linear again: growing
    then moves data_end within the linear page (up to its tailroom)."""
    data = BIG[:4000]
    for grow in (10, 256, 257):
        xdp_both(host, ret_buff_len(call(XDP_ADJUST_TAIL, -500), call(XDP_ADJUST_TAIL, grow)),
                 data)


def test_adjust_tail_repeats_on_the_same_fragments(host):
    """repeat runs share the buffer: each grows the fragment again."""
    r = xdp_both(host, ret_buff_len(call(XDP_ADJUST_TAIL, 100)), BIG[:4000], repeat=5)
    assert r[0] == 4500


def test_adjust_head_and_metadata_with_fragments(host):
    xdp_both(host, ret_buff_len(call(XDP_ADJUST_HEAD, -16), call(XDP_ADJUST_TAIL, -30)),
             BIG[:3700], ctx=xdp_md(8, 3000))


# -- bpf_xdp_load_bytes / bpf_xdp_store_bytes across fragments -------------------------

TWO_FRAGS = LINEAR + PAGE + 300


@pytest.mark.parametrize("src,n", [
    (LINEAR - 8, 8), (LINEAR - 4, 8), (LINEAR, 8), (LINEAR + 100, 64),
    (LINEAR + PAGE - 5, 16), (LINEAR + PAGE - 256, 256), (LINEAR - 100, 256),
    (TWO_FRAGS - 8, 8), (TWO_FRAGS - 7, 8), (TWO_FRAGS, 8), (0xffff, 8), (0x10000, 8),
])
def test_load_bytes_across_fragments(host, src, n):
    r = xdp_both(host, move(src, 0, n), BIG[:TWO_FRAGS])
    if src + n > TWO_FRAGS:
        assert r[0] == neg(EFAULT if src > 0xffff else EINVAL)
    else:
        assert r[0] == 0 and bytes.fromhex(r[1])[:n] == BIG[src:src + n]


@pytest.mark.parametrize("dst,n", [
    (LINEAR - 4, 8), (LINEAR, 16), (LINEAR + PAGE - 3, 8), (LINEAR - 128, 256),
    (TWO_FRAGS - 8, 8), (TWO_FRAGS - 4, 8),
])
def test_store_bytes_across_fragments(host, dst, n):
    r = xdp_both(host, move(0, dst, n), BIG[:TWO_FRAGS])
    if dst + n <= TWO_FRAGS:
        assert bytes.fromhex(r[1])[dst:dst + n] == BIG[:n]


def test_store_bytes_into_grown_fragment(host):
    """Bytes bpf_xdp_adjust_tail added to a fragment are zero and writable."""
    xdp_both(host, prog(call(XDP_ADJUST_TAIL, 64), call(XDP_LOAD_BYTES, 10, Fp(-64), 64),
                        call(XDP_STORE_BYTES, 4000, Fp(-64), 64)), BIG[:4000])


@pytest.mark.parametrize("seed", range(30))
def test_fragment_helpers_random(host, seed):
    """Seeded chains of adjust_tail and load/store moves on random sizes,
    offsets near the fragment boundaries, with or without ctx_in."""
    rng = random.Random(seed)
    size = rng.choice([LINEAR + 1, 3600, LINEAR + PAGE, LINEAR + PAGE + 7,
                       rng.randrange(LINEAR, LINEAR + 4 * PAGE)])
    linear = rng.choice([LINEAR, rng.randrange(64, LINEAR)])
    bounds = [linear + i * PAGE for i in range(5)] + [size]

    def near() -> int:
        return max(0, rng.choice(bounds) + rng.randrange(-40, 40))

    steps = []
    for _ in range(rng.randrange(1, 4)):
        if rng.random() < 0.4:
            delta = rng.choice([rng.randrange(-600, 600), -rng.randrange(0, size),
                                rng.randrange(0, PAGE)])
            steps.append(call(XDP_ADJUST_TAIL, delta))
        else:
            n = rng.choice([8, 16, 64, 256])
            steps += [call(XDP_LOAD_BYTES, near(), Fp(-n), n),
                      call(XDP_STORE_BYTES, near(), Fp(-n), n)]
    ctx = xdp_md(0, linear) if linear != LINEAR or rng.random() < 0.5 else None
    xdp_both(host, ret_buff_len(*steps), BIG[:size], ctx=ctx)


# -- data_size_out smaller than the output: bpf_test_finish's truncation -----------------

def _test_run_attr(fd: int, data: bytes, size_out: int):
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(size_out)
    attr = abi.bpf_attr()
    t = attr.test
    t.prog_fd, t.data_in, t.data_size_in = fd, ctypes.addressof(din), len(data)
    t.data_out, t.data_size_out, t.repeat = ctypes.addressof(dout), size_out, 1
    return attr, (din, dout)


@pytest.mark.parametrize("delta,size_out", [(100, 3000), (-200, 3000), (-480, 3000),
                                            (-500, 3000), (300, 700), (300, 779), (300, 781)])
def test_truncated_data_out_keeps_the_fragments_as_left(host, delta, size_out):
    """After adjust_tail the fragments' final size decides the cut."""
    code = isa.encode(prog(call(XDP_ADJUST_TAIL, delta)))
    data = BIG[:4000]
    results = []
    k = Kernel()
    fd = k.bpf(Cmd.PROG_LOAD, prog_type=ProgType.XDP, insns=code, license="GPL")
    hp = host.prog_load(code, ProgType.XDP)
    try:
        for side in (lambda a: k.bpf(Cmd.PROG_TEST_RUN, a),
                     lambda a: host.sys_bpf(Cmd.PROG_TEST_RUN, a)):
            attr, (_, dout) = _test_run_attr(fd if len(results) == 0 else hp.fd, data, size_out)
            try:
                side(attr)
                err = 0
            except OSError as e:
                err = e.errno
            results.append((err, attr.test.retval, attr.test.data_size_out, dout.raw))
    finally:
        hp.close()
    assert results[0] == results[1]


# -- CHECKSUM_COMPLETE skbs ------------------------------------------------------------

CHECKSUM_COMPLETE = 1 << 2       # BPF_F_TEST_SKB_CHECKSUM_COMPLETE
RECOMPUTE_CSUM, PSEUDO_HDR = 1, 1 << 4
ADJ_NET, ADJ_MAC = 0, 1


def skb_both(host, prog_type, code, data: bytes):
    a = outcome(lambda: Program(code, prog_type=prog_type).test_run(
        data, flags=CHECKSUM_COMPLETE))
    b = outcome(lambda: theirs(host, prog_type, code, data, flags=CHECKSUM_COMPLETE))
    if isinstance(b, tuple):
        b = b[:2] + (None,)
    assert a == b
    return a


def store(off: int, value: int, n: int, flags: int) -> list:
    return prog(stack_fill(-8, value), call(SKB_STORE_BYTES, off, Fp(-8), n, flags))


CSUM_CASES = {
    "store, recompute": store(60, 0x1122, 2, RECOMPUTE_CSUM),
    "store odd offset, recompute": store(61, 0x334455, 3, RECOMPUTE_CSUM),
    "store in the MAC header, recompute": store(0, 0x66, 1, RECOMPUTE_CSUM),
    "store in the MAC header": store(0, 0x66, 1, 0),
    "store, no recompute": store(60, 0x1122, 2, 0),
    "change_head": prog(call(SKB_CHANGE_HEAD, 8, 0)),
    "change_head odd": prog(call(SKB_CHANGE_HEAD, 3, 0)),
    "change_head then store, recompute": prog(call(SKB_CHANGE_HEAD, 5, 0), stack_fill(-8, 7),
                                              call(SKB_STORE_BYTES, 40, Fp(-8), 4,
                                                   RECOMPUTE_CSUM)),
    "change_tail grow": prog(call(SKB_CHANGE_TAIL, 100, 0)),
    "change_tail grow odd": prog(call(SKB_CHANGE_TAIL, 67, 0)),
    "change_tail trim": prog(call(SKB_CHANGE_TAIL, 60, 0)),
    "change_tail same": prog(call(SKB_CHANGE_TAIL, 66, 0)),
    "change_tail grow, then store recompute": prog(
        call(SKB_CHANGE_TAIL, 80, 0), stack_fill(-8, 9),
        call(SKB_STORE_BYTES, 70, Fp(-8), 2, RECOMPUTE_CSUM)),
    "change_tail same, then store recompute": prog(
        call(SKB_CHANGE_TAIL, 66, 0), stack_fill(-8, 9),
        call(SKB_STORE_BYTES, 50, Fp(-8), 2, RECOMPUTE_CSUM)),
    "adjust_room grow net": prog(call(SKB_ADJUST_ROOM, 8, ADJ_NET, 0)),
    "adjust_room grow net odd": prog(call(SKB_ADJUST_ROOM, 3, ADJ_NET, 0)),
    "adjust_room grow mac": prog(call(SKB_ADJUST_ROOM, 6, ADJ_MAC, 0)),
    "adjust_room grow mac odd": prog(call(SKB_ADJUST_ROOM, 5, ADJ_MAC, 0)),
    "adjust_room shrink net": prog(call(SKB_ADJUST_ROOM, -8, ADJ_NET, 0)),
    "adjust_room shrink net odd": prog(call(SKB_ADJUST_ROOM, -7, ADJ_NET, 0)),
    "adjust_room shrink mac": prog(call(SKB_ADJUST_ROOM, -4, ADJ_MAC, 0)),
    "adjust_room shrink mac odd": prog(call(SKB_ADJUST_ROOM, -3, ADJ_MAC, 0)),
    "pull_data": prog(call(SKB_PULL_DATA, 40)),
    "l3 csum replace (ttl)": prog(call(L3_CSUM_REPLACE, 24, 0x4006, 0x3f06, 2)),
    "l4 csum replace, pseudo": prog(call(L4_CSUM_REPLACE, 50, 0x0100000a, 0x0200000a,
                                         4 | PSEUDO_HDR)),
    "l4 csum replace, not pseudo": prog(call(L4_CSUM_REPLACE, 50, 0x0100000a, 0x0200000a, 4)),
    "l4 csum replace 2, pseudo": prog(call(L4_CSUM_REPLACE, 50, 0x1234, 0x4321,
                                           2 | PSEUDO_HDR)),
    "l4 csum replace diff, pseudo": prog(call(L4_CSUM_REPLACE, 50, 0, 0x00010000,
                                              PSEUDO_HDR)),
    "l4 csum replace diff, pseudo ipv6": prog(call(L4_CSUM_REPLACE, 50, 0, 0x00010000,
                                                   PSEUDO_HDR | (1 << 7))),
    "address rewrite, fixed with pseudo l4": prog(
        stack_fill(-8, 0x0300000a), call(SKB_STORE_BYTES, 26, Fp(-8), 4, RECOMPUTE_CSUM),
        call(L3_CSUM_REPLACE, 24, 0x0100000a, 0x0300000a, 4),
        call(L4_CSUM_REPLACE, 50, 0x0100000a, 0x0300000a, 4 | PSEUDO_HDR)),
}


@pytest.mark.parametrize("case", sorted(CSUM_CASES))
def test_checksum_complete_tc(host, case):
    skb_both(host, TC, CSUM_CASES[case], tcp4())


@pytest.mark.parametrize("case", ["store, recompute", "store odd offset, recompute",
                                  "adjust_room shrink net", "change_tail grow",
                                  "store in the MAC header, recompute"])
def test_checksum_complete_ipv6_and_udp(host, case):
    skb_both(host, TC, CSUM_CASES[case], tcp6())
    skb_both(host, TC, CSUM_CASES[case], udp4(payload=bytes(range(40))))


@pytest.mark.parametrize("case", ["store, recompute", "store, no recompute",
                                  "store odd offset, recompute", "change_tail trim",
                                  "change_head odd"])
def test_checksum_complete_lwt_xmit(host, case):
    """An LWT program sees the packet from the network header (offsets
    count from there) and gets 14 zero bytes pushed back after the run."""
    skb_both(host, ProgType.LWT_XMIT, CSUM_CASES[case], tcp4(payload=bytes(range(30))))


@pytest.mark.parametrize("seed", range(25))
def test_checksum_complete_random(host, seed):
    """Seeded chains of stores (with or without BPF_F_RECOMPUTE_CSUM), room
    and tail changes on tc skbs."""
    rng = random.Random(1000 + seed)
    pkt = rng.choice([tcp4(payload=bytes(rng.randrange(256) for _ in range(rng.randrange(30)))),
                      tcp6(), udp4()])
    parts = []
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        if kind == 0:
            n = rng.choice([1, 2, 3, 4, 8])
            parts += [stack_fill(-8, rng.getrandbits(63)),
                      call(SKB_STORE_BYTES, rng.randrange(0, len(pkt) - 8), Fp(-8), n,
                           rng.choice([0, RECOMPUTE_CSUM, RECOMPUTE_CSUM]))]
        elif kind == 1:
            parts.append(call(SKB_ADJUST_ROOM, rng.choice([-9, -8, -4, -1, 1, 2, 8]),
                              rng.choice([ADJ_NET, ADJ_MAC]), 0))
        elif kind == 2:
            parts.append(call(SKB_CHANGE_HEAD, rng.choice([0, 1, 2, 14]), 0))
        else:
            parts.append(call(SKB_CHANGE_TAIL, len(pkt) + rng.choice([-3, 0, 2, 9]), 0))
    skb_both(host, TC, prog(*parts), pkt)
