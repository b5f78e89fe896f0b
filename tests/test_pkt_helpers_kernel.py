"""The packet helpers against the live kernel's BPF_PROG_TEST_RUN.

Every case runs the same program on the same packet in userbpf
(Program.test_run) and in the kernel (hostbpf), and requires the same
retval and the same data_out, byte for byte. Programs are chains of helper
calls (tests/pktprog.py): the first non-zero helper result is the retval.

XDP fragments and CHECKSUM_COMPLETE skbs are covered here in brief and in
depth in tests/test_pkt_helpers_frags_kernel.py. What differs by design
(the flow hash, socket cookies) is listed at the top of
src/userbpf/pkt_helpers.pxi.
"""
from __future__ import annotations

import struct

import pytest

from pktprog import (
    CSUM_DIFF, EACCES, EALREADY, EFAULT, EINVAL, ENOMEM, ENOTSUPP, Fp, GET_HASH_RECALC,
    GET_SOCKET_COOKIE, L3_CSUM_REPLACE, L4_CSUM_REPLACE, LWT_XMIT, REDIRECT, SET_HASH,
    SET_HASH_INVALID, SKB_ADJUST_ROOM, SKB_CHANGE_HEAD, SKB_CHANGE_TAIL, SKB_HASH, SKB_LEN,
    SKB_LOAD_BYTES, SKB_PROTOCOL, SKB_PULL_DATA, SKB_STORE_BYTES, SOCKET_FILTER, TC, XDP,
    XDP_ADJUST_HEAD, XDP_ADJUST_META, XDP_ADJUST_TAIL, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES,
    XDP_STORE_BYTES, arp, both, call, ctx_load, inet_csum, mine, neg, ones_sum, prog,
    rfc1624, stack_fill, tcp4, tcp6, theirs, udp4, unchecked)
from userbpf import isa
from userbpf.uapi import ProgType

pytestmark = pytest.mark.kernel

PKT = tcp4()                     # 66 bytes: Ethernet, IPv4 (csum at 24), TCP (csum at 50)
assert len(PKT) == 66
IP_CSUM, TCP_CSUM, UDP_CSUM = 24, 50, 40

# BPF_F_* flags
RECOMPUTE_CSUM, INVALIDATE_HASH = 1, 2
PSEUDO_HDR, MARK_MANGLED_0, MARK_ENFORCE, F_IPV6 = 1 << 4, 1 << 5, 1 << 6, 1 << 7
ADJ_NET, ADJ_MAC = 0, 1
FIXED_GSO, ENCAP_IPV4, ENCAP_IPV6, ENCAP_GRE, ENCAP_UDP = 1, 2, 4, 8, 16
NO_CSUM_RESET, ENCAP_L2_ETH, DECAP_IPV4, DECAP_IPV6 = 32, 64, 128, 256


def encap_l2(n: int) -> int:
    return n << 56


def r7_is_r0() -> list:
    return [isa.BPF_MOV64_REG(7, 0)]


def ret_r7() -> list:
    return [isa.BPF_MOV64_REG(0, 7)]


def copy_out(load_helper: int, store_helper: int, off: int, n: int) -> list:
    """Fill fp-8 with 0x55, load n bytes at off into it (r7 = result), then
    store the 8 stack bytes at the packet's start and return r7: what the
    load wrote (or cleared) shows in data_out."""
    extra = (0,) if store_helper == SKB_STORE_BYTES else ()
    return prog(stack_fill(-8, 0x5555555555555555),
                unchecked(call(load_helper, off, Fp(-8), n)), r7_is_r0(),
                unchecked(call(store_helper, 0, Fp(-8), 8, *extra)), ret=ret_r7())


# -- bpf_skb_load_bytes / bpf_skb_store_bytes -------------------------------------

@pytest.mark.parametrize("off,n,ret", [
    (0, 8, 0), (58, 8, 0), (59, 8, neg(EFAULT)), (65, 1, 0), (66, 1, neg(EFAULT)),
    (0x7fffffff, 4, neg(EFAULT)), (0x80000000, 4, neg(EFAULT)), (0xffffffff, 2, neg(EFAULT)),
])
def test_skb_load_bytes(host, off, n, ret):
    r = both(host, TC, copy_out(SKB_LOAD_BYTES, SKB_STORE_BYTES, off, n), PKT)
    assert r.retval == ret
    want = PKT[off:off + n] + b"\x55" * (8 - n) if ret == 0 else bytes(n) + b"\x55" * (8 - n)
    assert r.data_out[:8] == want


@pytest.mark.parametrize("prog_type", [SOCKET_FILTER, ProgType.LWT_IN])
@pytest.mark.parametrize("off,ret", [(0, 0), (48, 0), (49, neg(EFAULT))])
def test_skb_load_bytes_l3_types_count_from_the_network_header(host, prog_type, off, ret):
    # their skb->data is the IP header: 52 bytes after eth_type_trans
    code = prog(stack_fill(-8, 0), call(SKB_LOAD_BYTES, off, Fp(-8), 4),
                ret=[isa.BPF_LDX_MEM(isa.Size.W, 0, 10, -8)])
    r = both(host, prog_type, code, PKT)
    assert r.retval == (ret or struct.unpack("<I", PKT[14 + off:18 + off])[0])


def test_skb_load_bytes_in_a_flow_dissector_test_run_is_efault(host):
    """Flow dissector test runs have no skb: bpf_flow_dissector_load_bytes
    fails and clears the buffer."""
    code = prog(stack_fill(-8, -1), unchecked(call(SKB_LOAD_BYTES, 0, Fp(-8), 4)), r7_is_r0(),
                ret=[isa.BPF_LDX_MEM(isa.Size.DW, 0, 10, -8),
                     isa.BPF_ALU64_IMM(isa.AluOp.RSH, 0, 16),
                     isa.BPF_ALU64_REG(isa.AluOp.ADD, 0, 7)])
    a = mine(ProgType.FLOW_DISSECTOR, code, PKT)
    b = theirs(host, ProgType.FLOW_DISSECTOR, code, PKT)
    assert a.retval == b.retval == (0xffff0000 + neg(EFAULT)) & 0xffffffff


@pytest.mark.parametrize("off,n,flags,ret", [
    (0, 8, 0, 0), (58, 8, 0, 0), (59, 8, 0, neg(EFAULT)), (62, 4, RECOMPUTE_CSUM, 0),
    (0, 4, INVALIDATE_HASH, 0), (0, 4, RECOMPUTE_CSUM | INVALIDATE_HASH, 0),
    (0, 4, 4, neg(EINVAL)), (0, 4, 1 << 40, neg(EINVAL)), (0x80000000, 4, 0, neg(EFAULT)),
    (0xfffffffc, 4, 0, neg(EFAULT)),
])
def test_skb_store_bytes(host, off, n, flags, ret):
    code = prog(stack_fill(-8, 0x8877665544332211), call(SKB_STORE_BYTES, off, Fp(-8), n, flags))
    r = both(host, TC, code, PKT)
    assert r.retval == ret
    if ret == 0:
        assert r.data_out == PKT[:off] + bytes.fromhex("1122334455667788")[:n] + PKT[off + n:]
    else:
        assert r.data_out == PKT


@pytest.mark.parametrize("flags,hash_after", [(0, 0x1234), (INVALIDATE_HASH, 0)])
def test_skb_store_bytes_invalidate_hash(host, flags, hash_after):
    code = prog(call(SET_HASH, 0x1234), stack_fill(-8, 0),
                call(SKB_STORE_BYTES, 0, Fp(-8), 4, flags), ret=ctx_load(SKB_HASH))
    assert both(host, TC, code, PKT).retval == hash_after


# -- bpf_l3_csum_replace / bpf_l4_csum_replace --------------------------------------

def le16(b: bytes) -> int:
    return int.from_bytes(b, "little")


def test_l3_csum_replace_ttl_keeps_the_header_valid(host):
    """ttl 64 -> 63: the 16-bit word (ttl, proto) at 22 changes, size 2."""
    new = bytes([63, PKT[23]])
    code = prog(stack_fill(-8, le16(new)), call(SKB_STORE_BYTES, 22, Fp(-8), 2, 0),
                call(L3_CSUM_REPLACE, IP_CSUM, le16(PKT[22:24]), le16(new), 2))
    r = both(host, TC, code, PKT)
    assert r.retval == 0
    assert ones_sum(r.data_out[14:34]) == 0xffff
    assert r.data_out[14:34] != PKT[14:34]


def nat_source(new_src: bytes, l4_flags: int, l4_off: int = TCP_CSUM) -> list:
    """Rewrite the IPv4 source address and fix both checksums (size 4)."""
    old = le16(PKT[26:30])
    return prog(stack_fill(-8, le16(new_src)), call(SKB_STORE_BYTES, 26, Fp(-8), 4, 0),
                call(L3_CSUM_REPLACE, IP_CSUM, old, le16(new_src), 4),
                call(L4_CSUM_REPLACE, l4_off, old, le16(new_src), 4 | l4_flags))


@pytest.mark.parametrize("l4_flags", [PSEUDO_HDR, PSEUDO_HDR | MARK_MANGLED_0, 0])
def test_csum_replace_source_nat(host, l4_flags):
    new_src = bytes([192, 168, 7, 9])
    r = both(host, TC, nat_source(new_src, l4_flags), PKT)
    assert r.retval == 0
    out = r.data_out
    assert out[26:30] == new_src
    assert inet_csum(out[14:34]) == 0
    ph = out[26:34] + struct.pack("!BBH", 0, 6, len(out) - 34)
    assert inet_csum(ph + out[34:]) == 0        # the pseudo header's change is folded in


def test_csum_replace_by_diff(host):
    """flags size 0: `to` is a bpf_csum_diff result."""
    new_src = bytes([172, 16, 0, 99])
    old = le16(PKT[26:30])
    code = prog(stack_fill(-8, old), stack_fill(-16, le16(new_src)),
                unchecked(call(CSUM_DIFF, Fp(-8), 4, Fp(-16), 4, 0, ctx=False)),
                r7_is_r0(), call(SKB_STORE_BYTES, 26, Fp(-16), 4, 0),
                [isa.BPF_MOV64_REG(1, 6), isa.BPF_MOV64_IMM(2, IP_CSUM), isa.BPF_MOV64_IMM(3, 0),
                 isa.BPF_MOV64_REG(4, 7), isa.BPF_MOV64_IMM(5, 0),
                 isa.BPF_EMIT_CALL(L3_CSUM_REPLACE), isa.BPF_MOV64_REG(8, 0)],
                [isa.BPF_MOV64_REG(1, 6), isa.BPF_MOV64_IMM(2, TCP_CSUM), isa.BPF_MOV64_IMM(3, 0),
                 isa.BPF_MOV64_REG(4, 7), isa.BPF_MOV64_IMM(5, PSEUDO_HDR),
                 isa.BPF_EMIT_CALL(L4_CSUM_REPLACE), isa.BPF_ALU64_REG(isa.AluOp.OR, 0, 8)])
    r = both(host, TC, code, PKT)
    assert r.retval == 0
    assert inet_csum(r.data_out[14:34]) == 0


# Corner values of the checksum field and the replaced words, where 16-bit
# (l3, size 2) and 32-bit (l3 size 4, every l4 size) arithmetic can end on
# 0x0000 or 0xffff: the field after the call must be the kernel's.
FIELDS = [0x0000, 0xffff, 0x1234, 0xfffe]
WORDS = [(0, 0), (0, 0xffff), (0xffff, 0), (0x1234, 0x1234), (0x1234, 0xedcb), (1, 0)]


def field_after(host, helper: int, field: int, frm: int, to: int, flags: int, off: int = IP_CSUM,
                pkt: bytes = PKT):
    code = prog(stack_fill(-8, field), call(SKB_STORE_BYTES, off, Fp(-8), 2, 0),
                call(helper, off, frm, to, flags))
    r = both(host, TC, code, pkt)
    return r.retval, le16(r.data_out[off:off + 2])


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("frm,to", WORDS)
def test_l3_csum_replace_corners(host, field, frm, to):
    ret, got = field_after(host, L3_CSUM_REPLACE, field, frm, to, 2)
    assert ret == 0
    # 16-bit replace is RFC 1624 eqn. 3 exactly (on the little-endian loads)
    assert got == rfc1624(field, frm, to)
    field_after(host, L3_CSUM_REPLACE, field, frm, to, 4)
    field_after(host, L3_CSUM_REPLACE, field, (frm << 16) | frm, to, 4)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("frm,to", WORDS)
@pytest.mark.parametrize("flags", [2, 4, 2 | PSEUDO_HDR, 4 | MARK_MANGLED_0,
                                   2 | MARK_MANGLED_0 | MARK_ENFORCE, 4 | F_IPV6])
def test_l4_csum_replace_corners(host, field, frm, to, flags):
    ret, _ = field_after(host, L4_CSUM_REPLACE, field, frm, to, flags, off=TCP_CSUM)
    assert ret == 0


def test_l4_csum_replace_mangled_0_leaves_a_zero_udp_checksum(host):
    pkt = udp4(csum=False)
    assert pkt[UDP_CSUM:UDP_CSUM + 2] == b"\0\0"
    for flags, changed in [(4 | PSEUDO_HDR | MARK_MANGLED_0, False),
                           (4 | PSEUDO_HDR | MARK_MANGLED_0 | MARK_ENFORCE, True),
                           (4 | PSEUDO_HDR, True)]:
        code = prog(call(L4_CSUM_REPLACE, UDP_CSUM, 0x01020304, 0x05060708, flags))
        r = both(host, TC, code, pkt)
        assert r.retval == 0
        assert (r.data_out != pkt) == changed


def test_l4_csum_replace_mangled_0_never_writes_zero(host):
    # 0xffff with an unchanged word folds to 0; UDP's "no checksum" is avoided
    assert field_after(host, L4_CSUM_REPLACE, 0xffff, 0, 0, 4, off=TCP_CSUM)[1] == 0
    assert field_after(host, L4_CSUM_REPLACE, 0xffff, 0, 0, 4 | MARK_MANGLED_0 | MARK_ENFORCE,
                       off=TCP_CSUM)[1] == 0xffff


@pytest.mark.parametrize("helper,off,frm,flags,ret", [
    (L3_CSUM_REPLACE, 25, 0, 2, neg(EFAULT)),             # odd offset
    (L3_CSUM_REPLACE, 0x10000, 0, 2, neg(EFAULT)),
    (L3_CSUM_REPLACE, 64, 0, 2, 0),                       # the last two bytes
    (L3_CSUM_REPLACE, 66, 0, 2, neg(EFAULT)),
    (L3_CSUM_REPLACE, 24, 0, 3, neg(EINVAL)),             # size 3
    (L3_CSUM_REPLACE, 24, 0, 8, neg(EINVAL)),
    (L3_CSUM_REPLACE, 24, 1, 0, neg(EINVAL)),             # size 0: from must be 0
    (L3_CSUM_REPLACE, 24, 0, PSEUDO_HDR | 2, neg(EINVAL)),  # l4 flags are not l3's
    (L3_CSUM_REPLACE, 25, 0, 3, neg(EFAULT)),             # the offset before the size
    (L4_CSUM_REPLACE, 51, 0, 2, neg(EFAULT)),
    (L4_CSUM_REPLACE, 50, 0, 1 << 8, neg(EINVAL)),
    (L4_CSUM_REPLACE, 50, 0, 1, neg(EINVAL)),
    (L4_CSUM_REPLACE, 50, 7, 0, neg(EINVAL)),
    (L4_CSUM_REPLACE, 50, 0, MARK_MANGLED_0 | 3, neg(EINVAL)),
])
def test_csum_replace_errors(host, helper, off, frm, flags, ret):
    r = both(host, TC, prog(call(helper, off, frm, 0x1111, flags)), PKT)
    assert r.retval == ret


# -- change head / tail, pull data --------------------------------------------------

# userbpf's test-run skb buffer (test_run.py): 64 headroom + align8(66) + 320
# tailroom, so 70 bytes of room to grow in.
ROOM = 64 + 72 - 66


@pytest.mark.parametrize("prog_type", [TC, LWT_XMIT])
@pytest.mark.parametrize("room,flags,ret", [
    (0, 0, 0), (14, 0, 0), (ROOM, 0, 0), (16064 - 52 + 1, 0, neg(EINVAL)),
    (0xffffffff, 0, neg(EINVAL)), (0x80000000, 0, neg(EINVAL)), (4, 1, neg(EINVAL)),
])
def test_skb_change_head(host, prog_type, room, flags, ret):
    code = prog(call(SKB_CHANGE_HEAD, room, flags), ret=ctx_load(SKB_LEN))
    r = both(host, prog_type, code, PKT)
    if ret:
        assert r.retval == ret
    else:
        assert r.retval == 66 + room - (0 if prog_type == TC else 14)
        assert r.data_out == (bytes(room) + PKT if prog_type == TC else
                              bytes(14) + bytes(room) + PKT[14:])


def test_skb_change_head_then_tail_minimum_is_the_new_network_offset(host):
    # LWT: the pushed bytes are the MAC header; the network header stays
    for new_len, ret in [(9, neg(EINVAL)), (10, 0), (30, 0)]:
        code = prog(call(SKB_CHANGE_HEAD, 10, 0), call(SKB_CHANGE_TAIL, new_len, 0),
                    ret=ctx_load(SKB_LEN))
        r = both(host, LWT_XMIT, code, PKT)
        assert r.retval == (ret or new_len)


@pytest.mark.parametrize("prog_type", [TC, LWT_XMIT])
@pytest.mark.parametrize("new_len,flags,ret", [
    (66, 0, 0), (14, 0, 0), (13, 0, None), (0, 0, None), (70, 0, 0), (66 + ROOM, 0, 0),
    (16065, 0, neg(EINVAL)), (0xffffffff, 0, neg(EINVAL)), (60, 2, neg(EINVAL)),
])
def test_skb_change_tail(host, prog_type, new_len, flags, ret):
    if ret is None:        # under the network header's offset: tc's is 14, lwt's 0
        ret = neg(EINVAL) if prog_type == TC else 0
    code = prog(call(SKB_CHANGE_TAIL, new_len, flags), ret=ctx_load(SKB_LEN))
    r = both(host, prog_type, code, PKT)
    if ret:
        assert r.retval == ret
    else:
        assert r.retval == new_len
        want = (PKT + bytes(max(0, new_len - 66)))[:new_len] if prog_type == TC else \
            bytes(14) + (PKT[14:] + bytes(new_len))[:new_len]
        assert r.data_out == want


def test_skb_change_tail_grows_with_zeros_after_a_trim(host):
    code = prog(call(SKB_CHANGE_TAIL, 40, 0), call(SKB_CHANGE_TAIL, 66, 0))
    r = both(host, TC, code, PKT)
    assert r.data_out == PKT[:40] + bytes(26)


# bpf_skb_change_tail's minimum length after the kernel reallocated the head:
# skb_cow grows the headroom (64) by ALIGN(shortfall, 64) and shifts every
# header offset, so the unset transport header (~0) wraps to a small offset
# and counts as set; a positive one is the minimum, else the network offset.
@pytest.mark.parametrize("pre,min_len,at_min", [
    ([call(SKB_CHANGE_HEAD, 64, 0)], 78, 0),                  # no reallocation
    ([call(SKB_CHANGE_HEAD, 65, 0)], 79, 0),                  # transport offset 0
    ([call(SKB_CHANGE_HEAD, 66, 0)], 1, 0),
    ([call(SKB_CHANGE_HEAD, 70, 0)], 5, 0),
    ([call(SKB_CHANGE_HEAD, 70, 0), call(SKB_ADJUST_ROOM, -4, ADJ_MAC, 0)], 1, 0),
    ([call(SKB_CHANGE_HEAD, 70, 0), call(SKB_ADJUST_ROOM, -5, ADJ_MAC, 0)], 84, 0),
    ([call(SKB_ADJUST_ROOM, 66, ADJ_MAC, 0)], 1, 0),
    ([call(SKB_CHANGE_HEAD, 30, 0), call(SKB_CHANGE_HEAD, 40, 0)], 5, 0),
    # a UDP tunnel sets the transport header after the new outer IPv4 header;
    # the encapsulated skb then refuses to change its tail
    ([call(SKB_ADJUST_ROOM, 28, ADJ_MAC, ENCAP_IPV4 | ENCAP_UDP)], 34, neg(ENOTSUPP)),
    ([call(SKB_ADJUST_ROOM, 48, ADJ_MAC, ENCAP_IPV6 | ENCAP_GRE)], 54, neg(ENOTSUPP)),
])
def test_skb_change_tail_minimum_after_head_changes(host, pre, min_len, at_min):
    for n, ret in [(min_len - 1, neg(EINVAL)), (min_len, at_min)]:
        if n < 0:
            continue
        assert both(host, TC, prog(*pre, call(SKB_CHANGE_TAIL, n, 0)), PKT).retval == ret


@pytest.mark.parametrize("n,ret", [(0, 0), (1, 0), (66, 0), (67, neg(ENOMEM)),
                                   (0xffffffff, neg(ENOMEM))])
def test_skb_pull_data(host, n, ret):
    assert both(host, TC, prog(call(SKB_PULL_DATA, n)), PKT).retval == ret


@pytest.mark.parametrize("code", [
    prog(call(SKB_CHANGE_HEAD, ROOM + 1, 0)),
    prog(call(SKB_CHANGE_TAIL, 66 + ROOM + 1, 0)),
    prog(call(SKB_CHANGE_TAIL, 16064, 0)),
    prog(call(SKB_ADJUST_ROOM, 0xfff, ADJ_NET, 0)),
])
def test_growing_past_the_test_run_headroom(host, code):
    """The kernel reallocates the head; userbpf's buffer has room up to
    BPF_SKB_MAX_LEN: the same results."""
    both(host, TC, code, PKT)


# -- bpf_skb_adjust_room --------------------------------------------------------------

@pytest.mark.parametrize("diff,mode,flags,ret", [
    (8, ADJ_NET, 0, 0), (8, ADJ_MAC, 0, 0), (-8, ADJ_NET, 0, 0), (-8, ADJ_MAC, 0, 0),
    (ROOM, ADJ_NET, 0, 0), (-32, ADJ_NET, 0, 0), (-33, ADJ_NET, 0, neg(ENOTSUPP)),
    (-52, ADJ_MAC, 0, neg(ENOTSUPP)), (0, ADJ_NET, 0, 0),
    (0x1000, ADJ_NET, 0, neg(EFAULT)), (-0x1000, ADJ_NET, 0, neg(EFAULT)),
    (-0x80000000, ADJ_NET, 0, neg(EFAULT)),
    (8, 2, 0, neg(ENOTSUPP)), (8, ADJ_NET, 1 << 9, neg(EINVAL)),
    (8, ADJ_NET, FIXED_GSO | NO_CSUM_RESET, 0),
    (8, ADJ_NET, DECAP_IPV4, neg(EINVAL)), (-8, ADJ_NET, DECAP_IPV4, 0),
    (-8, ADJ_NET, DECAP_IPV6, 0), (-8, ADJ_NET, DECAP_IPV4 | DECAP_IPV6, neg(EINVAL)),
    (-8, ADJ_NET, ENCAP_IPV4, neg(EINVAL)), (-8, ADJ_NET, ENCAP_GRE, neg(EINVAL)),
    (20, ADJ_MAC, ENCAP_IPV4, 0), (20, ADJ_MAC, ENCAP_IPV4 | ENCAP_IPV6, neg(EINVAL)),
    (28, ADJ_MAC, ENCAP_IPV4 | ENCAP_GRE | ENCAP_UDP, neg(EINVAL)),
    (28, ADJ_MAC, ENCAP_IPV4 | ENCAP_UDP, 0),
    (42, ADJ_MAC, ENCAP_IPV4 | ENCAP_UDP | ENCAP_L2_ETH | encap_l2(14), 0),
    (42, ADJ_MAC, ENCAP_IPV4 | ENCAP_L2_ETH | encap_l2(13), neg(EINVAL)),
    (10, ADJ_MAC, ENCAP_IPV4 | encap_l2(11), neg(EINVAL)),
    (8, ADJ_MAC, ENCAP_GRE, 0),                # L4 flags alone: no encapsulation
])
def test_skb_adjust_room(host, diff, mode, flags, ret):
    r = both(host, TC, prog(call(SKB_ADJUST_ROOM, diff, mode, flags)), PKT)
    assert r.retval == ret
    if ret == 0 and diff >= 0:
        off = 14 + (20 if mode == ADJ_NET else 0)
        assert r.data_out == PKT[:off] + bytes(diff) + PKT[off:]
    elif ret == 0:
        off = 14 + (20 if mode == ADJ_NET else 0)
        assert r.data_out == PKT[:off] + PKT[off - diff:]


def test_skb_adjust_room_ipv6_and_protocols(host):
    pkt6 = tcp6()
    for code, want in [
        (prog(call(SKB_ADJUST_ROOM, 40, ADJ_MAC, ENCAP_IPV6), ret=ctx_load(SKB_PROTOCOL)), 0xdd86),
        (prog(call(SKB_ADJUST_ROOM, -40, ADJ_MAC, DECAP_IPV4), ret=ctx_load(SKB_PROTOCOL)), 0x0008),
        # popping past the packet: pskb_may_pull(off + len) fails
        (prog(call(SKB_ADJUST_ROOM, -40, ADJ_NET, DECAP_IPV4)), neg(ENOMEM)),
        (prog(call(SKB_ADJUST_ROOM, -33, ADJ_NET, 0)), neg(ENOTSUPP)),   # 40 bytes minimum
        (prog(call(SKB_ADJUST_ROOM, -12, ADJ_NET, 0)), 0),
    ]:
        assert both(host, TC, code, pkt6).retval == want
    code = prog(call(SKB_ADJUST_ROOM, 40, ADJ_MAC, ENCAP_IPV6), ret=ctx_load(SKB_PROTOCOL))
    assert both(host, TC, code, PKT).retval == 0xdd86       # IPv4 in IPv6


def test_skb_adjust_room_non_ip_is_enotsupp(host):
    assert both(host, TC, prog(call(SKB_ADJUST_ROOM, 8, ADJ_MAC, 0)), arp()).retval == \
        neg(ENOTSUPP)


def test_skb_encapsulation_is_sticky(host):
    """An encapsulated skb cannot be encapsulated again, even after a decap,
    and cannot change its tail."""
    cases = [
        (prog(call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4),
              call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4)), neg(EALREADY)),
        (prog(call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4),
              call(SKB_ADJUST_ROOM, -20, ADJ_MAC, DECAP_IPV4),
              call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4)), neg(EALREADY)),
        (prog(call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4),
              call(SKB_CHANGE_TAIL, 60, 0)), neg(ENOTSUPP)),
        (prog(call(SKB_ADJUST_ROOM, 20, ADJ_MAC, ENCAP_IPV4),
              call(SKB_ADJUST_ROOM, 8, ADJ_NET, 0)), 0),
    ]
    for code, ret in cases:
        assert both(host, TC, code, PKT).retval == ret


def test_skb_adjust_room_after_change_head_counts_the_new_mac_header(host):
    code = prog(call(SKB_CHANGE_HEAD, 4, 0), call(SKB_ADJUST_ROOM, 8, ADJ_MAC, 0))
    r = both(host, TC, code, PKT)
    assert r.data_out == bytes(4) + PKT[:14] + bytes(8) + PKT[14:]


# -- hash and socket cookie -------------------------------------------------------------

def test_set_hash_then_recalc_returns_it(host):
    for h in (0x12345678, 0xffffffff, 0):       # a software hash of 0 is kept, too
        code = prog(call(SET_HASH, h), unchecked(call(GET_HASH_RECALC)))
        assert both(host, TC, code, PKT).retval == h
        assert both(host, TC, prog(call(SET_HASH, h), ret=ctx_load(SKB_HASH)), PKT).retval == h


def test_set_hash_invalid_clears_it(host):
    code = prog(call(SET_HASH, 77), call(SET_HASH_INVALID), ret=ctx_load(SKB_HASH))
    assert both(host, TC, code, PKT).retval == 0


def same_nonzero(helper: int, before: list = ()) -> list:
    """r0 = helper() != 0 && helper() == ctx->hash-or-second call, as 1/0."""
    return prog(*before, unchecked(call(helper)), r7_is_r0(),
                unchecked(call(helper)), [isa.BPF_MOV64_REG(8, 0)],
                ret=[isa.BPF_MOV64_IMM(0, 0),
                     isa.BPF_JMP_IMM(isa.JmpOp.JEQ, 7, 0, 2),
                     isa.BPF_JMP_REG(isa.JmpOp.JNE, 7, 8, 1),
                     isa.BPF_MOV64_IMM(0, 1)])


@pytest.mark.parametrize("before", [[], [call(SET_HASH, 5), call(SET_HASH_INVALID)]])
def test_get_hash_recalc_computes_a_stable_nonzero_hash(host, before):
    """The values differ (the kernel keys its hash with a boot-time secret):
    both sides give a non-zero hash, the same on a second call, and ctx->hash."""
    assert both(host, TC, same_nonzero(GET_HASH_RECALC, before), PKT).retval == 1
    code = prog(*before, unchecked(call(GET_HASH_RECALC)), r7_is_r0(),
                ret=ctx_load(SKB_HASH) + [isa.BPF_ALU64_REG(isa.AluOp.SUB, 0, 7)])
    assert both(host, TC, code, PKT).retval == 0


@pytest.mark.parametrize("prog_type", [TC, SOCKET_FILTER, ProgType.CGROUP_SKB])
def test_get_socket_cookie_of_the_test_run_socket(host, prog_type):
    assert both(host, prog_type, same_nonzero(GET_SOCKET_COOKIE), PKT).retval == 1


# -- XDP --------------------------------------------------------------------------------

@pytest.mark.parametrize("delta,ret", [
    (0, 0), (-14, 0), (-216, 0), (-217, neg(EINVAL)), (-256, neg(EINVAL)),
    (52, 0), (53, neg(EINVAL)), (-0x80000000, neg(EINVAL)), (0x7fffffff, neg(EINVAL)),
])
def test_xdp_adjust_head(host, delta, ret):
    r = both(host, XDP, prog(call(XDP_ADJUST_HEAD, delta)), PKT)
    assert r.retval == ret
    if ret == 0:
        assert r.data_out == (bytes(-delta) + PKT if delta < 0 else PKT[delta:])


def test_xdp_adjust_head_back_and_forth_keeps_the_bytes(host):
    r = both(host, XDP, prog(call(XDP_ADJUST_HEAD, 20), call(XDP_ADJUST_HEAD, -20)), PKT)
    assert r.data_out == PKT


@pytest.mark.parametrize("meta,head,ret", [
    (-8, -208, 0), (-8, -209, neg(EINVAL)), (-216, 0, 0), (-216, -1, neg(EINVAL)),
    (-4, 10, 0), (-32, -8, 0),
])
def test_xdp_adjust_head_moves_the_metadata(host, meta, head, ret):
    code = prog(call(XDP_ADJUST_META, meta), call(XDP_ADJUST_HEAD, head))
    assert both(host, XDP, code, PKT).retval == ret


@pytest.mark.parametrize("delta,ret", [
    (0, 0), (-4, 0), (-32, 0), (-36, 0), (-216, 0), (-220, neg(EINVAL)), (-2, neg(EACCES)),
    (-6, neg(EACCES)), (4, neg(EINVAL)), (-0x80000000, neg(EINVAL)),
])
def test_xdp_adjust_meta(host, delta, ret):
    r = both(host, XDP, prog(call(XDP_ADJUST_META, delta)), PKT)
    assert r.retval == ret
    if ret == 0:
        assert r.data_out == bytes(-delta) + PKT


def test_xdp_adjust_meta_shrinks_back(host):
    code = prog(call(XDP_ADJUST_META, -16), call(XDP_ADJUST_META, 8))
    r = both(host, XDP, code, PKT)
    assert r.data_out == bytes(8) + PKT
    assert both(host, XDP, prog(call(XDP_ADJUST_META, -16), call(XDP_ADJUST_META, 20)),
                PKT).retval == neg(EINVAL)


@pytest.mark.parametrize("meta", [8, 32])
@pytest.mark.parametrize("code", [
    lambda m: prog(call(XDP_ADJUST_HEAD, -(216 - m))),
    lambda m: prog(call(XDP_ADJUST_HEAD, -(217 - m))),
    lambda m: prog(call(XDP_ADJUST_META, 4)),
    lambda m: prog(call(XDP_ADJUST_META, -(216 - m))),
    lambda m: prog(call(XDP_ADJUST_META, m)),
    lambda m: prog(call(XDP_ADJUST_HEAD, 20), call(XDP_ADJUST_META, -4)),
    lambda m: prog(unchecked(call(XDP_GET_BUFF_LEN))),
])
def test_xdp_helpers_with_metadata_from_ctx_in(host, meta, code):
    """ctx_in's xdp_md.data is a metadata length: the helpers start from it,
    and ctx_out's data / data_end follow them."""
    ctx = struct.pack("<6I", meta, len(PKT), 0, 0, 0, 0)
    a = mine(XDP, code(meta), PKT, ctx=ctx)
    b = theirs(host, XDP, code(meta), PKT, ctx_in=ctx)
    assert (a.retval, a.data_out, a.ctx_out) == (b.retval, b.data_out, b.ctx_out)


# XDP test runs: a 4096-byte frame, 256 headroom, 320 tailroom
XDP_MAX = 4096 - 256 - 320


@pytest.mark.parametrize("delta,ret", [
    (0, 0), (-52, 0), (-53, neg(EINVAL)), (100, 0), (XDP_MAX - 66, 0),
    (XDP_MAX - 65, neg(EINVAL)), (0x7fffffff, neg(EINVAL)), (-0x80000000, neg(EINVAL)),
])
def test_xdp_adjust_tail(host, delta, ret):
    code = prog(call(XDP_ADJUST_TAIL, delta), unchecked(call(XDP_GET_BUFF_LEN)))
    r = both(host, XDP, code, PKT)
    assert r.retval == (ret or 66 + delta)
    if ret == 0:
        assert r.data_out == PKT[:66 + delta] + bytes(max(delta, 0))


def test_xdp_adjust_tail_grows_with_zeros_after_a_trim(host):
    r = both(host, XDP, prog(call(XDP_ADJUST_TAIL, -30), call(XDP_ADJUST_TAIL, 30)), PKT)
    assert r.data_out == PKT[:36] + bytes(30)


def test_xdp_get_buff_len_follows_head_and_meta(host):
    code = prog(call(XDP_ADJUST_META, -8), call(XDP_ADJUST_HEAD, -20),
                unchecked(call(XDP_GET_BUFF_LEN)))
    assert both(host, XDP, code, PKT).retval == 86


@pytest.mark.parametrize("off,n,ret", [
    (0, 8, 0), (58, 8, 0), (59, 8, neg(EINVAL)), (65, 1, 0), (66, 1, neg(EINVAL)),
    (0xffff, 1, neg(EINVAL)), (0x10000, 1, neg(EFAULT)), (0xffffffff, 4, neg(EFAULT)),
])
def test_xdp_load_bytes(host, off, n, ret):
    r = both(host, XDP, copy_out(XDP_LOAD_BYTES, XDP_STORE_BYTES, off, n), PKT)
    assert r.retval == ret
    # unlike bpf_skb_load_bytes, a failed load leaves the buffer alone
    want = PKT[off:off + n] + b"\x55" * (8 - n) if ret == 0 else b"\x55" * 8
    assert r.data_out[:8] == want


@pytest.mark.parametrize("off,n,ret", [
    (0, 8, 0), (58, 8, 0), (59, 8, neg(EINVAL)), (0x10000, 4, neg(EFAULT)),
    (0x7fffffff, 4, neg(EFAULT)),
])
def test_xdp_store_bytes(host, off, n, ret):
    code = prog(stack_fill(-8, 0x8877665544332211), call(XDP_STORE_BYTES, off, Fp(-8), n))
    r = both(host, XDP, code, PKT)
    assert r.retval == ret
    if ret == 0:
        assert r.data_out == PKT[:off] + bytes.fromhex("1122334455667788")[:n] + PKT[off + n:]


# -- redirect verdicts -------------------------------------------------------------------

@pytest.mark.parametrize("prog_type,flags,ret", [
    (XDP, 0, 4), (XDP, 1, 0), (XDP, 1 << 40, 0),
    (TC, 0, 7), (TC, 1, 7), (TC, 2, 2), (TC, 1 << 31, 2), (TC, 1 << 40, 2),
    (LWT_XMIT, 0, 7), (LWT_XMIT, 4, 2),
])
def test_redirect_verdict(host, prog_type, flags, ret):
    code = prog(unchecked(call(REDIRECT, 1, flags, ctx=False)))
    assert both(host, prog_type, code, PKT).retval == ret


# -- repeats --------------------------------------------------------------------------------

@pytest.mark.parametrize("prog_type,code", [
    (TC, prog(call(SKB_CHANGE_HEAD, 2, 0))),
    (TC, prog(call(SKB_ADJUST_ROOM, 2, ADJ_NET, 0))),
    (TC, prog(call(SKB_CHANGE_TAIL, 60, 0))),
    (XDP, prog(call(XDP_ADJUST_TAIL, -1))),
    (XDP, prog(call(XDP_ADJUST_META, -4))),
])
def test_repeats_share_one_packet(host, prog_type, code):
    """The kernel runs every repeat on the same skb / xdp_buff."""
    a = mine(prog_type, code, PKT, repeat=5)
    b = theirs(host, prog_type, code, PKT, repeat=5)
    assert (a.retval, a.data_out) == (b.retval, b.data_out)


# -- XDP fragments and CHECKSUM_COMPLETE skbs (more: test_pkt_helpers_frags_kernel.py) ------

@pytest.mark.parametrize("code", [prog(unchecked(call(XDP_GET_BUFF_LEN))),
                                  prog(call(XDP_ADJUST_TAIL, -100)),
                                  prog(call(XDP_ADJUST_TAIL, 10))])
def test_xdp_helpers_on_fragments(host, code):
    """4000 bytes: 3520 linear, one 480-byte fragment the helpers see."""
    both(host, XDP, code, (bytes(range(256)) * 16)[:4000])


def test_xdp_adjust_head_with_fragments(host):
    big = bytes(range(256)) * 16
    assert both(host, XDP, prog(call(XDP_ADJUST_HEAD, 20)), big[:4000]).data_out == big[20:4000]


CHECKSUM_COMPLETE = 1 << 2       # BPF_F_TEST_SKB_CHECKSUM_COMPLETE


@pytest.mark.parametrize("code", [
    prog(call(SKB_ADJUST_ROOM, 8, ADJ_NET, 0)),
    prog(stack_fill(-8, 0x1122), call(SKB_STORE_BYTES, 60, Fp(-8), 2, 0)),   # EBADMSG both
    prog(call(SKB_CHANGE_TAIL, 60, 0)),                                       # EBADMSG both
])
def test_checksum_complete_test_runs(host, code):
    def outcome(run):
        try:
            r = run()
            return r.retval, r.data_out
        except OSError as e:
            return e.errno
    assert outcome(lambda: mine(TC, code, PKT, flags=CHECKSUM_COMPLETE)) == \
        outcome(lambda: theirs(host, TC, code, PKT, flags=CHECKSUM_COMPLETE))


@pytest.mark.parametrize("code", [
    prog(stack_fill(-8, 0x1122), call(SKB_STORE_BYTES, 60, Fp(-8), 2, RECOMPUTE_CSUM)),
    prog(call(SKB_CHANGE_HEAD, 8, 0)),
])
def test_checksum_complete_helpers_keep_skb_csum(host, code):
    both(host, TC, code, PKT, flags=CHECKSUM_COMPLETE)

