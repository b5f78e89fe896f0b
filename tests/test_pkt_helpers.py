"""The packet helpers (src/userbpf/pkt_helpers.pxi) in userbpf alone.

Exact results against Python references: checksums by RFC 1624 and by
recomputing whole headers (RFC 1071), packet rewrites byte for byte, the
documented flow hash, and the run-time checks a verifier would make
(the context argument, buffer pointers, map arguments).
tests/test_pkt_helpers_kernel.py compares the same helpers with the live kernel.
"""
from __future__ import annotations

import random
import struct

import pytest

from pktprog import (
    EFAULT, EINVAL, Fp, GET_HASH_RECALC, GET_SOCKET_COOKIE, L3_CSUM_REPLACE,
    L4_CSUM_REPLACE, LWT_XMIT, REDIRECT, REDIRECT_MAP, SET_HASH, SKB_ADJUST_ROOM,
    SKB_CHANGE_HEAD, SKB_CHANGE_TAIL, SKB_HASH, SKB_LEN, SKB_LOAD_BYTES, SKB_STORE_BYTES, TC,
    XDP, XDP_ADJUST_HEAD, XDP_ADJUST_META, XDP_ADJUST_TAIL, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES,
    call, ctx_load, inet_csum, mine, neg, prog, rfc1624, stack_fill, tcp4, tcp6, udp4, unchecked)
from userbpf import Program, _vm, isa
from userbpf.errors import HelperError, MemoryAccessError, ProgramError
from userbpf.helperinfo import helper_name

PKT = tcp4()
IP_CSUM, TCP_CSUM = 24, 50


def le16(b: bytes) -> int:
    return int.from_bytes(b, "little")


def test_helper_ids_are_the_kernels():
    names = {
        9: "skb_store_bytes", 10: "l3_csum_replace", 11: "l4_csum_replace", 23: "redirect",
        26: "skb_load_bytes", 34: "get_hash_recalc", 38: "skb_change_tail",
        39: "skb_pull_data", 41: "set_hash_invalid", 43: "skb_change_head",
        44: "xdp_adjust_head", 46: "get_socket_cookie", 48: "set_hash",
        50: "skb_adjust_room", 51: "redirect_map", 54: "xdp_adjust_meta",
        65: "xdp_adjust_tail", 188: "xdp_get_buff_len", 189: "xdp_load_bytes",
        190: "xdp_store_bytes",
    }
    assert sorted(_vm.PKT_HELPERS) == sorted(names)
    for fid, name in names.items():
        assert helper_name(fid) == "bpf_" + name
        assert _vm.C_HELPERS[fid] is _vm.PKT_HELPERS[fid]


# -- checksums -------------------------------------------------------------------------

def csum_field_after(helper: int, field: int, frm: int, to: int, flags: int,
                     off: int = IP_CSUM) -> int:
    code = prog(stack_fill(-8, field), call(SKB_STORE_BYTES, off, Fp(-8), 2, 0),
                call(helper, off, frm, to, flags))
    r = mine(TC, code, PKT)
    assert r.retval == 0
    return le16(r.data_out[off:off + 2])


def test_l3_csum_replace_size2_is_rfc1624():
    rng = random.Random(1624)
    cases = [(rng.randrange(1 << 16), rng.randrange(1 << 16), rng.randrange(1 << 16))
             for _ in range(40)]
    cases += [(0, 0, 0), (0xffff, 0, 0), (0, 0xffff, 0), (0x8000, 0x8000, 0x7fff)]
    for field, frm, to in cases:
        assert csum_field_after(L3_CSUM_REPLACE, field, frm, to, 2) == rfc1624(field, frm, to)


def rfc1624_32(hc: int, frm: int, to: int) -> int:
    """A 32-bit word replaced: its two 16-bit halves, RFC 1624 eqn. 3 each."""
    hc = rfc1624(hc, frm & 0xffff, to & 0xffff)
    return rfc1624(hc, frm >> 16, to >> 16)


def test_csum_replace_size4_is_rfc1624_on_both_halves():
    """Away from the two encodings of zero (0x0000 / 0xffff, whose choice the
    kernel tests pin down), 32-bit replacement is eqn. 3 on each half, for
    l3 and for l4 (which widens size 2 to the 32-bit replace)."""
    rng = random.Random(4)
    checked = 0
    while checked < 30:
        field, frm, to = rng.randrange(1 << 16), rng.randrange(1 << 32), rng.randrange(1 << 32)
        want = rfc1624_32(field, frm, to)
        if want in (0, 0xffff):
            continue
        assert csum_field_after(L3_CSUM_REPLACE, field, frm, to, 4) == want
        assert csum_field_after(L4_CSUM_REPLACE, field, frm, to, 4, TCP_CSUM) == want
        assert csum_field_after(L4_CSUM_REPLACE, field, frm & 0xffff, to & 0xffff, 2,
                                TCP_CSUM) == rfc1624(field, frm & 0xffff, to & 0xffff)
        checked += 1


@pytest.mark.parametrize("seed", range(8))
def test_nat_rewrite_leaves_valid_checksums(seed):
    """Random source/destination rewrites of TCP and UDP packets: the
    incrementally updated checksums equal recomputing them from scratch."""
    rng = random.Random(seed)
    src, dst, new_src = (bytes(rng.randrange(256) for _ in range(4)) for _ in range(3))
    for pkt, l4_off, proto, l4_flags in [(tcp4(src, dst), 50, 6, 0x10),
                                         (udp4(src, dst), 40, 17, 0x10 | 0x20)]:
        old = le16(pkt[26:30])
        code = prog(stack_fill(-8, le16(new_src)), call(SKB_STORE_BYTES, 26, Fp(-8), 4, 0),
                    call(L3_CSUM_REPLACE, IP_CSUM, old, le16(new_src), 4),
                    call(L4_CSUM_REPLACE, l4_off, old, le16(new_src), 4 | l4_flags))
        r = mine(TC, code, pkt)
        assert r.retval == 0
        out = r.data_out
        assert out[26:30] == new_src and out[30:] == pkt[30:l4_off] + out[l4_off:l4_off + 2] + \
            pkt[l4_off + 2:]
        assert inet_csum(out[14:34]) == 0
        ph = out[26:34] + struct.pack("!BBH", 0, proto, len(out) - 34)
        assert inet_csum(ph + out[34:]) == 0


# -- rewrites ---------------------------------------------------------------------------

@pytest.mark.parametrize("code,ret,out", [
    (prog(call(SKB_CHANGE_HEAD, 6, 0)), 0, bytes(6) + PKT),
    (prog(call(SKB_CHANGE_TAIL, 20, 0)), 0, PKT[:20]),
    (prog(call(SKB_CHANGE_TAIL, 70, 0)), 0, PKT + bytes(4)),
    (prog(call(SKB_ADJUST_ROOM, 4, 0, 0)), 0, PKT[:34] + bytes(4) + PKT[34:]),
    (prog(call(SKB_ADJUST_ROOM, 4, 1, 0)), 0, PKT[:14] + bytes(4) + PKT[14:]),
    (prog(call(SKB_ADJUST_ROOM, -4, 0, 0)), 0, PKT[:34] + PKT[38:]),
    (prog(call(SKB_ADJUST_ROOM, -4, 1, 0)), 0, PKT[:14] + PKT[18:]),
    (prog(call(SKB_CHANGE_TAIL, 13, 0)), neg(EINVAL), PKT),
    (prog(stack_fill(-8, 0x4142434445464748), call(SKB_STORE_BYTES, 60, Fp(-8), 6, 0)), 0,
     PKT[:60] + b"HGFEDC"),
])
def test_skb_rewrites(code, ret, out):
    r = mine(TC, code, PKT)
    assert (r.retval, r.data_out) == (ret, out)


@pytest.mark.parametrize("code,ret,out", [
    (prog(call(XDP_ADJUST_HEAD, -4)), 0, bytes(4) + PKT),
    (prog(call(XDP_ADJUST_HEAD, 14)), 0, PKT[14:]),
    (prog(call(XDP_ADJUST_META, -8), call(XDP_ADJUST_HEAD, 2)), 0, bytes(8) + PKT[2:]),
    (prog(call(XDP_ADJUST_TAIL, -6)), 0, PKT[:60]),
    (prog(call(XDP_ADJUST_TAIL, 6)), 0, PKT + bytes(6)),
    (prog(call(XDP_ADJUST_META, -3)), neg(13), PKT),
])
def test_xdp_rewrites(code, ret, out):
    r = mine(XDP, code, PKT)
    assert (r.retval, r.data_out) == (ret, out)


def test_skb_load_bytes_clears_the_buffer_on_failure():
    code = prog(stack_fill(-8, -1), unchecked(call(SKB_LOAD_BYTES, 63, Fp(-8), 4)),
                [isa.BPF_LDX_MEM(isa.Size.DW, 0, 10, -8),
                 isa.BPF_ALU64_IMM(isa.AluOp.RSH, 0, 16)])
    assert mine(TC, code, PKT).retval == 0xffff0000      # the 4 bytes asked for are cleared


def test_growing_moves_the_packet_inside_its_buffer():
    """The test-run skb has 64 bytes of headroom: a bigger push moves the
    packet toward the tail (the kernel would reallocate); the bytes are kept,
    up to the kernel's BPF_SKB_MAX_LEN (16064 bytes)."""
    room = 64 + 72 - 66
    r = mine(TC, prog(call(SKB_CHANGE_HEAD, room, 0), ret=ctx_load(SKB_LEN)), PKT)
    assert (r.retval, r.data_out) == (66 + room, bytes(room) + PKT)
    r = mine(TC, prog(call(SKB_CHANGE_TAIL, 66 + room, 0), ret=ctx_load(SKB_LEN)), PKT)
    assert (r.retval, r.data_out) == (66 + room, PKT + bytes(room))
    r = mine(TC, prog(call(SKB_CHANGE_HEAD, 40, 0), call(SKB_CHANGE_TAIL, 66 + room, 0)), PKT)
    assert (r.retval, r.data_out) == (0, bytes(40) + PKT + bytes(room - 40))
    r = mine(TC, prog(call(SKB_CHANGE_HEAD, 1000, 0), ret=ctx_load(SKB_LEN)), PKT)
    assert (r.retval, r.data_out) == (66 + 1000, bytes(1000) + PKT)
    r = mine(TC, prog(call(SKB_CHANGE_TAIL, 16064, 0), ret=ctx_load(SKB_LEN)), PKT)
    assert (r.retval, r.data_out) == (16064, PKT + bytes(16064 - 66))


def data_len_insns() -> list:
    """r0 = data_end - data (direct packet access through the context)."""
    return [isa.BPF_LDX_MEM(isa.Size.W, 2, 6, 76), isa.BPF_LDX_MEM(isa.Size.W, 3, 6, 80),
            isa.BPF_MOV64_REG(0, 3), isa.BPF_ALU64_REG(isa.AluOp.SUB, 0, 2)]


def test_packet_pointers_and_len_follow_the_helpers():
    # __sk_buff.data at 76, data_end at 80
    code = prog(call(SKB_CHANGE_HEAD, 10, 0), call(SKB_CHANGE_TAIL, 30, 0),
                ret=data_len_insns())
    assert mine(TC, code, PKT).retval == 30
    code = prog(call(SKB_ADJUST_ROOM, 8, 0, 0), ret=ctx_load(SKB_LEN))
    assert mine(TC, code, PKT).retval == 74
    xdp_len = [isa.BPF_LDX_MEM(isa.Size.W, 2, 6, 0), isa.BPF_LDX_MEM(isa.Size.W, 3, 6, 4),
               isa.BPF_MOV64_REG(0, 3), isa.BPF_ALU64_REG(isa.AluOp.SUB, 0, 2)]
    code = prog(call(XDP_ADJUST_HEAD, -20), call(XDP_ADJUST_TAIL, 4), ret=xdp_len)
    assert mine(XDP, code, PKT).retval == 90


def test_ld_abs_reads_the_moved_packet():
    """LD_ABS (socket-filter style loads) follows data after change_head."""
    code = prog(call(SKB_CHANGE_HEAD, 2, 0),
                ret=[isa.BPF_LD_ABS(isa.Size.H, 14)])
    assert mine(TC, code, PKT).retval == int.from_bytes(PKT[12:14], "big")


def test_direct_writes_after_a_move_land_in_the_packet():
    code = prog(call(XDP_ADJUST_HEAD, -2),
                [isa.BPF_LDX_MEM(isa.Size.W, 2, 6, 0), isa.BPF_LDX_MEM(isa.Size.W, 3, 6, 4),
                 isa.BPF_MOV64_REG(4, 2), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 4, 2),
                 isa.BPF_JMP_REG(isa.JmpOp.JGT, 4, 3, 2),
                 isa.BPF_ST_MEM(isa.Size.H, 2, 0, 0x0a0b), isa.BPF_MOV64_IMM(0, 0)])
    r = mine(XDP, code, PKT)
    assert r.data_out == b"\x0b\x0a" + PKT


def test_repeat_runs_on_the_same_packet():
    """As the kernel's test run: the repeats share one skb / xdp_buff."""
    r = Program(prog(call(SKB_CHANGE_HEAD, 2, 0)), prog_type=TC).test_run(PKT, repeat=3)
    assert r.data_out == bytes(6) + PKT
    r = Program(prog(call(XDP_ADJUST_TAIL, -1)), prog_type=XDP).test_run(PKT, repeat=4)
    assert r.data_out == PKT[:62]


# -- hash and cookie ------------------------------------------------------------------

def murmur3_words(words, seed: int) -> int:
    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & 0xffffffff
    h = seed
    for k in words:
        k = (k * 0xcc9e2d51) & 0xffffffff
        k = rotl(k, 15)
        k = (k * 0x1b873593) & 0xffffffff
        h = rotl(h ^ k, 13)
        h = (h * 5 + 0xe6546b64) & 0xffffffff
    h ^= 4 * len(words)
    h ^= h >> 16
    h = (h * 0x85ebca6b) & 0xffffffff
    h ^= h >> 13
    h = (h * 0xc2b2ae35) & 0xffffffff
    return h ^ (h >> 16)


def flow_hash(l3: int, l4: int, a: bytes, b: bytes, pa: int, pb: int) -> int:
    """The documented bpf_get_hash_recalc value: murmur3 (seed "ubpf") over
    (l3 << 16 | l4), the addresses word by word (lower endpoint first, as
    native u32 loads) and (port_a << 16 | port_b)."""
    if (a, pa) > (b, pb):
        a, b, pa, pb = b, a, pb, pa
    words = [(l3 << 16) | l4]
    for i in range(0, len(a), 4):
        words += [le16(a[i:i + 4]), le16(b[i:i + 4])]
    words.append((pa << 16) | pb)
    return murmur3_words(words, 0x75627066) or 1


def recalc(pkt: bytes) -> int:
    return mine(TC, prog(unchecked(call(GET_HASH_RECALC))), pkt).retval


def test_get_hash_recalc_is_the_documented_flow_hash():
    a, b = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    assert recalc(tcp4(a, b, 1234, 80)) == flow_hash(0x0800, 6, a, b, 1234, 80)
    a6, b6 = bytes(range(16)), bytes(range(1, 17))
    assert recalc(tcp6(a6, b6, 5, 6)) == flow_hash(0x86dd, 6, a6, b6, 5, 6)
    assert recalc(udp4(a, b)) == flow_hash(0x0800, 17, a, b, 5353, 53)


def test_get_hash_recalc_is_symmetric_and_per_flow():
    a, b = b"\xc0\xa8\x00\x01", b"\x08\x08\x08\x08"
    fwd, rev = recalc(tcp4(a, b, 40000, 443)), recalc(tcp4(b, a, 443, 40000))
    assert fwd == rev != 0
    assert recalc(tcp4(a, b, 40001, 443)) != fwd
    assert recalc(tcp4(a, b, 40000, 443)) == fwd                # the same on every run


def test_get_hash_recalc_of_a_fragment_ignores_ports():
    from pktprog import ETH_MACS, ipv4, l4_tcp
    tcp = l4_tcp(1, 2)
    frag = ETH_MACS + b"\x08\x00" + ipv4(tcp, 6, frag=0x2000) + tcp       # MF set
    a, b = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    assert recalc(frag) == flow_hash(0x0800, 6, a, b, 0, 0)


def test_hash_state_is_kept_across_repeats_and_set_hash_wins():
    code = prog(call(SET_HASH, 99), unchecked(call(GET_HASH_RECALC)))
    assert mine(TC, code, PKT).retval == 99
    code = prog(unchecked(call(GET_HASH_RECALC)), [isa.BPF_MOV64_REG(7, 0)],
                ret=ctx_load(SKB_HASH) + [isa.BPF_ALU64_REG(isa.AluOp.SUB, 0, 7)])
    assert mine(TC, code, PKT).retval == 0


def test_socket_cookie_is_per_test_run():
    p = Program(prog(unchecked(call(GET_SOCKET_COOKIE))), prog_type=TC)
    c1, c2 = p.test_run(PKT).retval, p.test_run(PKT).retval
    assert c1 != 0 and c2 != 0 and c1 != c2


# -- redirects ------------------------------------------------------------------------

def test_redirect_without_a_packet_is_tcs():
    code = prog(unchecked(call(REDIRECT, 3, 0, ctx=False)))
    assert Program(code).run() == 7


def test_redirect_map_needs_a_redirect_map():
    """The verifier takes only device, CPU and XSK maps; userbpf cannot load
    programs with those yet (no devices), so the verdicts are not compared."""
    from userbpf.kernel import Kernel
    from userbpf.uapi import Cmd, MapType
    k = Kernel()
    fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=4)
    code = [*isa.BPF_LD_IMM64_RAW(1, isa.BPF_PSEUDO_MAP_FD, fd),
            isa.BPF_MOV64_IMM(2, 0), isa.BPF_MOV64_IMM(3, 0), isa.BPF_EMIT_CALL(REDIRECT_MAP),
            isa.BPF_EXIT_INSN()]
    with pytest.raises(HelperError, match="not a map"):
        Program(code, maps={fd: k.fds.get(fd).core}, prog_type=XDP).test_run(PKT)


# -- what a verifier would have refused -------------------------------------------------

@pytest.mark.parametrize("prog_type,code", [
    (TC, [isa.BPF_MOV64_REG(1, 10), isa.BPF_MOV64_IMM(2, 0), isa.BPF_EMIT_CALL(SKB_CHANGE_TAIL),
          isa.BPF_EXIT_INSN()]),                               # r1 is not the context
    # another type's helpers: refused at load (below); reached by callx, the
    # run-time check stops them
    (TC, [isa.BPF_MOV64_IMM(2, 0), isa.BPF_MOV64_IMM(7, XDP_ADJUST_HEAD), isa.BPF_CALLX(7),
          isa.BPF_EXIT_INSN()]),
    (XDP, [isa.BPF_MOV64_IMM(2, 0), isa.BPF_MOV64_IMM(7, SKB_CHANGE_TAIL), isa.BPF_CALLX(7),
           isa.BPF_EXIT_INSN()]),
    (XDP, [isa.BPF_MOV64_IMM(7, GET_SOCKET_COOKIE), isa.BPF_CALLX(7), isa.BPF_EXIT_INSN()]),
])
def test_a_context_argument_that_is_not_the_run_context_ends_the_run(prog_type, code):
    with pytest.raises(HelperError, match="which is not this run's context"):
        Program(code, prog_type=prog_type).test_run(PKT)


@pytest.mark.parametrize("prog_type,helper", [(TC, XDP_ADJUST_HEAD), (XDP, SKB_CHANGE_TAIL),
                                              (XDP, GET_SOCKET_COOKIE)])
def test_another_types_helpers_are_refused_at_load(prog_type, helper):
    from userbpf import helperinfo
    with pytest.raises(ProgramError) as e:
        Program([isa.BPF_EMIT_CALL(helper), isa.BPF_EXIT_INSN()], prog_type=prog_type)
    assert e.value.msg == (f"program of this type cannot use helper "
                           f"{helperinfo.helper_name(helper)}#{helper}")


def test_packet_helpers_without_a_packet_end_the_run():
    with pytest.raises(HelperError, match="which is not this run's context"):
        Program([isa.BPF_EMIT_CALL(XDP_GET_BUFF_LEN), isa.BPF_EXIT_INSN()]).run(bytearray(8))


@pytest.mark.parametrize("helper,prog_type", [(SKB_LOAD_BYTES, TC), (XDP_LOAD_BYTES, XDP),
                                              (SKB_STORE_BYTES, TC)])
def test_a_bad_buffer_pointer_ends_the_run(helper, prog_type):
    code = [isa.BPF_MOV64_IMM(2, 0), isa.BPF_MOV64_IMM(3, 0x1000), isa.BPF_MOV64_IMM(4, 4),
            isa.BPF_MOV64_IMM(5, 0), isa.BPF_EMIT_CALL(helper), isa.BPF_EXIT_INSN()]
    with pytest.raises(MemoryAccessError):
        Program(code, prog_type=prog_type).test_run(PKT)


def test_lwt_change_head_pushes_a_mac_header():
    code = prog(call(SKB_CHANGE_HEAD, 14, 0), call(SKB_CHANGE_TAIL, 13, 0))
    assert mine(LWT_XMIT, code, PKT).retval == neg(EINVAL)      # the new network offset is 14
    r = mine(LWT_XMIT, prog(call(SKB_CHANGE_HEAD, 14, 0)), PKT)
    assert r.data_out == bytes(28) + PKT[14:]


def test_errors_leave_the_packet_alone():
    for code, ret in [(prog(call(SKB_CHANGE_TAIL, 20, 1)), neg(EINVAL)),
                      (prog(call(SKB_ADJUST_ROOM, 0x1000, 0, 0)), neg(EFAULT))]:
        r = mine(TC, code, PKT)
        assert (r.retval, r.data_out) == (ret, PKT)
    r = mine(XDP, prog(call(XDP_ADJUST_TAIL, -60)), PKT)
    assert (r.retval, r.data_out) == (neg(EINVAL), PKT)
