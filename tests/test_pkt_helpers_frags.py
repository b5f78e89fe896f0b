"""XDP fragments and CHECKSUM_COMPLETE skbs in userbpf alone (no live kernel).

The expected values follow the kernel's rules (net/core/filter.c), checked
against the live kernel in tests/test_pkt_helpers_frags_kernel.py: an XDP
test run keeps what does not fit in the 3520 linear bytes as page-sized
fragments, which the helpers see; skb->csum of a CHECKSUM_COMPLETE skb is
kept by the helpers and must match the final packet (EBADMSG otherwise).
"""
from __future__ import annotations

import array
import errno
import struct

import pytest

from pktprog import (
    EINVAL, Fp, L4_CSUM_REPLACE, SKB_ADJUST_ROOM, SKB_CHANGE_HEAD, SKB_CHANGE_TAIL,
    SKB_STORE_BYTES, TC, XDP, XDP_ADJUST_TAIL, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES,
    XDP_STORE_BYTES, call, neg, prog, stack_fill, tcp4, unchecked)
from userbpf import Program, contexts
from userbpf.kernel import test_run as tr
from userbpf.uapi import ProgType

BIG = bytes(range(251)) * 80          # 20080 bytes, no period of a page
LINEAR = 3520


def run(code, data, **kw):
    return Program(code, prog_type=XDP).test_run(data, **kw)


def xdp_md(data: int, data_end: int) -> bytes:
    return struct.pack("<6I", data, data_end, 0, 0, 0, 0)


@pytest.mark.parametrize("size", [100, LINEAR, LINEAR + 1, 4000, LINEAR + 4096 + 1])
def test_get_buff_len_counts_the_fragments(size):
    assert run(prog(unchecked(call(XDP_GET_BUFF_LEN))), BIG[:size]).retval == size


def test_get_buff_len_without_the_metadata():
    r = run(prog(unchecked(call(XDP_GET_BUFF_LEN))), BIG[:600], ctx=xdp_md(8, 100))
    assert r.retval == 592
    assert r.frags_size == 500


def test_adjust_tail_grows_the_last_fragment_with_zeros():
    r = run(prog(call(XDP_ADJUST_TAIL, 10)), BIG[:4000])
    assert (r.retval, r.data_out, r.frags_size) == (0, BIG[:4000] + bytes(10), 490)


@pytest.mark.parametrize("size,delta,ret", [
    (4000, 4096 - 480, 0), (4000, 4096 - 480 + 1, neg(EINVAL)),
    (LINEAR + 4096, 1, neg(EINVAL)), (LINEAR + 4096, 0, 0),
])
def test_adjust_tail_grows_within_the_fragments_page(size, delta, ret):
    r = run(prog(call(XDP_ADJUST_TAIL, delta)), BIG[:size])
    assert r.retval == ret
    assert len(r.data_out) == size + (delta if ret == 0 else 0)


@pytest.mark.parametrize("delta,out_len,frags", [
    (-1, 3999, 479), (-480, LINEAR, 0), (-481, LINEAR - 1, 0), (-(4000 - 14), 14, 0),
])
def test_adjust_tail_shrinks_from_the_end(delta, out_len, frags):
    r = run(prog(call(XDP_ADJUST_TAIL, delta)), BIG[:4000])
    assert (r.retval, r.data_out, r.frags_size) == (0, BIG[:out_len], frags)


def test_adjust_tail_shrinks_whole_fragments_first():
    size = LINEAR + 2 * 4096 + 100          # fragments of 4096, 4096 and 100 bytes
    r = run(prog(call(XDP_ADJUST_TAIL, -(100 + 4096 + 1))), BIG[:size])
    assert (r.retval, r.data_out, r.frags_size) == (0, BIG[:size - 4197], 4095)


@pytest.mark.parametrize("delta", [-(4000 - 13), -0x7fffffff])
def test_adjust_tail_keeps_an_ethernet_header(delta):
    r = run(prog(call(XDP_ADJUST_TAIL, delta)), BIG[:4000])
    assert (r.retval, r.data_out) == (neg(EINVAL), BIG[:4000])


def test_adjust_tail_int_min_takes_nothing():
    """-INT_MIN is INT_MIN again: not more than the buffer, and no bytes taken."""
    r = run(prog(call(XDP_ADJUST_TAIL, -0x80000000)), BIG[:4000])
    assert (r.retval, r.data_out) == (0, BIG[:4000])


def test_load_and_store_reach_across_the_fragments():
    size = LINEAR + 4096 + 50
    code = prog(call(XDP_LOAD_BYTES, LINEAR + 4096 - 4, Fp(-16), 16),
                call(XDP_STORE_BYTES, LINEAR - 8, Fp(-16), 16))
    r = run(code, BIG[:size])
    want = bytearray(BIG[:size])
    want[LINEAR - 8:LINEAR + 8] = BIG[LINEAR + 4092:LINEAR + 4108]
    assert (r.retval, r.data_out) == (0, bytes(want))


@pytest.mark.parametrize("off,n,ret", [(4000 - 8, 8, 0), (4000 - 7, 8, neg(EINVAL)),
                                       (0x10000, 8, neg(14))])
def test_load_bytes_bounds_are_the_whole_buffer(off, n, ret):
    r = run(prog(call(XDP_LOAD_BYTES, off, Fp(-8), n)), BIG[:4000])
    assert r.retval == ret


def test_repeats_share_the_fragments():
    r = run(prog(call(XDP_ADJUST_TAIL, 100)), BIG[:4000], repeat=3)
    assert (r.retval, len(r.data_out), r.frags_size) == (0, 4300, 780)


def test_truncated_data_out_keeps_the_fragments_as_left():
    r = run(prog(call(XDP_ADJUST_TAIL, 20)), BIG[:4000])
    cut = tr.truncate_data_out(r.data_out, r.frags_size, 1000)
    assert cut == BIG[:500] + BIG[LINEAR:4000] + bytes(20)


def test_run_ctx_checks_the_fragments():
    p = Program(prog(unchecked(call(XDP_GET_BUFF_LEN))), prog_type=XDP)
    s = contexts.ctx_struct(ProgType.XDP)
    base = (s.size + 7) & ~7
    ctx = bytearray(s.internal_size)
    with pytest.raises(ValueError, match="fragments need"):
        p._vm.run_ctx(ctx, base, bytearray(4096), kind=1, data=256, end=300, nr_frags=1)
    with pytest.raises(ValueError, match="too small"):
        p._vm.run_ctx(ctx, base, bytearray(4096), kind=1, data=256, end=300, nr_frags=2,
                      frags=bytearray(4096), frag_sizes=array.array("I", [1, 1]),
                      frag_room=4096)
    with pytest.raises(ValueError, match="larger than frag_room"):
        p._vm.run_ctx(ctx, base, bytearray(4096), kind=1, data=256, end=300, nr_frags=1,
                      frags=bytearray(4096), frag_sizes=array.array("I", [4097]),
                      frag_room=4096)
    sizes = array.array("I", [7])
    info: dict = {}
    r0 = p._vm.run_ctx(ctx, base, bytearray(4096), kind=1, data=256, end=300, nr_frags=1,
                       frags=bytearray(4096), frag_sizes=sizes, frag_room=4096, info=info)[0]
    assert (r0, info["nr_frags"]) == (51, 1)


# -- CHECKSUM_COMPLETE skbs -------------------------------------------------------------

CHECKSUM_COMPLETE = 1 << 2
RECOMPUTE_CSUM, PSEUDO_HDR = 1, 1 << 4


def skb_outcome(code, data=None):
    try:
        r = Program(code, prog_type=TC).test_run(data or tcp4(), flags=CHECKSUM_COMPLETE)
    except OSError as e:
        return e.errno
    return r.retval, r.data_out


def store(off, value, n, flags):
    return prog(stack_fill(-8, value), call(SKB_STORE_BYTES, off, Fp(-8), n, flags))


def test_store_bytes_recompute_csum_keeps_skb_csum():
    pkt = tcp4()
    want = pkt[:61] + b"\x22\x11\x00" + pkt[64:]
    assert skb_outcome(store(61, 0x1122, 3, RECOMPUTE_CSUM)) == (0, want)


@pytest.mark.parametrize("code", [
    store(61, 0x1122, 3, 0),                                          # csum not updated
    store(0, 0x66, 1, RECOMPUTE_CSUM),      # a MAC header byte counted into skb->csum
    prog(call(SKB_CHANGE_TAIL, 80, 0), stack_fill(-8, 9),           # CHECKSUM_NONE now
         call(SKB_STORE_BYTES, 70, Fp(-8), 2, RECOMPUTE_CSUM)),
    prog(call(SKB_CHANGE_TAIL, 60, 0)),                              # trimmed bytes
    prog(call(SKB_ADJUST_ROOM, 5, 1, 0)),                     # an odd shift of the bytes
    prog(call(L4_CSUM_REPLACE, 50, 0x0100000a, 0x0200000a, 4)),  # field changed, no pseudo
])
def test_unaccounted_changes_are_ebadmsg(code):
    assert skb_outcome(code) == errno.EBADMSG


@pytest.mark.parametrize("code", [
    prog(call(SKB_CHANGE_HEAD, 8, 0)),                # pushed before the network header
    prog(call(SKB_CHANGE_HEAD, 3, 0)),
    prog(call(SKB_CHANGE_TAIL, 100, 0)),              # zeros appended
    prog(call(SKB_ADJUST_ROOM, 8, 0, 0)),             # zeros inserted, even
    prog(call(SKB_ADJUST_ROOM, -8, 0, 0)),            # bytes pulled out, accounted
    prog(call(L4_CSUM_REPLACE, 50, 0x0100000a, 0x0200000a, 4 | PSEUDO_HDR)),
])
def test_accounted_changes_pass(code):
    r = skb_outcome(code)
    assert isinstance(r, tuple) and r[0] == 0


def test_wsum_is_little_endian_csum_partial():
    """The host-order fold is the network-order sum, complemented and
    byte-swapped (RFC 1071's byte-order independence)."""
    data = bytes(range(1, 40))
    assert tr.wsum(b"\x12\x34\x56") == 0x3412 + 0x56
    assert tr.wsum_fold(tr.wsum(data)) == \
        int.from_bytes((~tr.csum_fold(data) & 0xffff).to_bytes(2, "big"), "little")
