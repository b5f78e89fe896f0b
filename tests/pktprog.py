"""Programs and packets for the packet-helper tests (test_pkt_helpers*.py).

A test program keeps its context in r6 and is a sequence of helper calls:
:func:`call` builds one (r1 = the context, r2.. = the arguments), a
:class:`Fp` argument is a stack address (r10 + off). :func:`prog` chains
them: the first call that returns non-zero ends the program with that r0;
when all return 0, ``ret`` (instructions setting r0) runs, or r0 stays 0.
:func:`unchecked` wraps a call whose result does not stop the program.

Packets are built with valid IPv4/IPv6 and TCP/UDP checksums
(:func:`inet_csum` is the RFC 1071 reference).
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Sequence

from userbpf import Program, isa
from userbpf.uapi import ProgType

TC = ProgType.SCHED_CLS
XDP = ProgType.XDP
LWT_XMIT = ProgType.LWT_XMIT
SOCKET_FILTER = ProgType.SOCKET_FILTER
CTX = 6                         # the register the programs keep the context in

# __sk_buff offsets the tests read
SKB_LEN, SKB_PROTOCOL, SKB_HASH = 0, 16, 68

# helper ids (enum bpf_func_id)
SKB_STORE_BYTES, L3_CSUM_REPLACE, L4_CSUM_REPLACE, REDIRECT = 9, 10, 11, 23
SKB_LOAD_BYTES, CSUM_DIFF, GET_HASH_RECALC, SKB_CHANGE_TAIL, SKB_PULL_DATA = 26, 28, 34, 38, 39
SKB_CHANGE_HEAD, XDP_ADJUST_HEAD, GET_SOCKET_COOKIE, SET_HASH = 43, 44, 46, 48
SKB_ADJUST_ROOM, REDIRECT_MAP, XDP_ADJUST_META, XDP_ADJUST_TAIL = 50, 51, 54, 65
SET_HASH_INVALID, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES, XDP_STORE_BYTES = 41, 188, 189, 190

# errnos as helpers return them
EFAULT, EINVAL, ENOMEM, EACCES, EALREADY, ENOTSUPP = 14, 22, 12, 13, 114, 524
U32 = 0xffffffff


def neg(e: int) -> int:
    """-e as a test run's u32 retval."""
    return -e & U32


class Fp(NamedTuple):
    """A helper argument that is a stack address: r10 + off."""
    off: int


class Step(list):
    """Instructions ending in a helper call whose non-zero r0 ends the program."""


def _arg(reg: int, a) -> list:
    if isinstance(a, Fp):
        return [isa.BPF_MOV64_REG(reg, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, reg, a.off)]
    if -2 ** 31 <= a < 2 ** 31:
        return [isa.BPF_MOV64_IMM(reg, a)]
    return list(isa.flatten([isa.BPF_LD_IMM64(reg, a & (2 ** 64 - 1))]))


def call(fn: int, *args, ctx: bool = True) -> Step:
    """``fn(ctx, *args)`` (``fn(*args)`` with ctx=False)."""
    insns = [isa.BPF_MOV64_REG(1, CTX)] if ctx else []
    first = 2 if ctx else 1
    for i, a in enumerate(args):
        insns += _arg(first + i, a)
    return Step(insns + [isa.BPF_EMIT_CALL(fn)])


def unchecked(step: Sequence) -> list:
    return list(step)


def stack_fill(off: int, value: int) -> list:
    """*(u64 *)(r10 + off) = value"""
    return _arg(1, value) + [isa.BPF_STX_MEM(isa.Size.DW, 10, 1, off)]


def ctx_load(off: int, size: int = 4) -> list:
    """r0 = *(uN *)(ctx + off)"""
    code = {1: isa.Size.B, 2: isa.Size.H, 4: isa.Size.W, 8: isa.Size.DW}[size]
    return [isa.BPF_LDX_MEM(code, 0, CTX, off)]


def prog(*parts, ret: Optional[Sequence] = None) -> list:
    """A program of ``parts`` (Steps, or plain instruction lists), then ``ret``."""
    body: list = [isa.BPF_MOV64_REG(CTX, 1)]
    jumps = []
    for part in parts:
        body += list(isa.flatten(list(part)))
        if isinstance(part, Step):
            jumps.append(len(body))
            body.append(None)                   # if r0 != 0 goto exit
    body += list(isa.flatten(list(ret or [])))
    exit_at = len(body)
    for j in jumps:
        body[j] = isa.BPF_JMP_IMM(isa.JmpOp.JNE, 0, 0, exit_at - j - 1)
    return body + [isa.BPF_EXIT_INSN()]


# -- running ------------------------------------------------------------------

def mine(prog_type: int, insns, data: bytes, **kw):
    """userbpf's test run: (retval, data_out, ...)."""
    return Program(insns, prog_type=prog_type).test_run(data, **kw)


def theirs(host, prog_type: int, insns, data: bytes, **kw):
    """The live kernel's BPF_PROG_TEST_RUN of the same program."""
    hp = host.prog_load(insns, prog_type)
    try:
        return hp.test_run_full(data, **kw)
    finally:
        hp.close()


def both(host, prog_type: int, insns, data: bytes, **kw):
    """Run on both sides; assert retval and data_out are equal; return userbpf's."""
    a = mine(prog_type, insns, data, **kw)
    b = theirs(host, prog_type, insns, data, **kw)
    assert (a.retval, a.data_out.hex()) == (b.retval, b.data_out.hex())
    return a


# -- packets ------------------------------------------------------------------

def ones_sum(b: bytes) -> int:
    """RFC 1071: the 16-bit ones'-complement sum of big-endian words."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def inet_csum(b: bytes) -> int:
    return ~ones_sum(b) & 0xffff


def oc_add16(a: int, b: int) -> int:
    """Ones'-complement 16-bit addition (end-around carry)."""
    s = a + b
    return (s & 0xffff) + (s >> 16)


def rfc1624(hc: int, m: int, m_new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), 16-bit fields."""
    return ~oc_add16(oc_add16(~hc & 0xffff, ~m & 0xffff), m_new) & 0xffff


ETH_MACS = bytes.fromhex("020000000002" "020000000001")


def ipv4(l4: bytes, proto: int, src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02",
         ttl: int = 64, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, ttl, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", inet_csum(hdr)) + hdr[12:]


def l4_tcp(sport=1234, dport=80, payload=b"hello world!") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload


def l4_udp(sport=5353, dport=53, payload=b"query") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def with_l4_csum(src: bytes, dst: bytes, proto: int, l4: bytes, at: int) -> bytes:
    """l4 with its checksum (at byte ``at``) over the pseudo header."""
    if len(src) == 4:
        ph = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    else:
        ph = src + dst + struct.pack("!IxxxB", len(l4), proto)
    c = inet_csum(ph + l4)
    if proto == 17 and c == 0:
        c = 0xffff
    return l4[:at] + struct.pack("!H", c) + l4[at + 2:]


def tcp4(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", sport=1234, dport=80,
         payload=b"hello world!") -> bytes:
    """Ethernet + IPv4 + TCP, checksums valid (66 bytes by default)."""
    tcp = with_l4_csum(src, dst, 6, l4_tcp(sport, dport, payload), 16)
    return ETH_MACS + b"\x08\x00" + ipv4(tcp, 6, src, dst) + tcp


def udp4(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", csum: bool = True,
         payload=b"query") -> bytes:
    udp = l4_udp(payload=payload)
    if csum:
        udp = with_l4_csum(src, dst, 17, udp, 6)
    return ETH_MACS + b"\x08\x00" + ipv4(udp, 17, src, dst) + udp


def tcp6(src=bytes.fromhex("20010db8" + "00" * 11 + "01"),
         dst=bytes.fromhex("20010db8" + "00" * 11 + "02"), sport=1234, dport=80,
         payload=b"hello six") -> bytes:
    tcp = with_l4_csum(src, dst, 6, l4_tcp(sport, dport, payload), 16)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst)
    return ETH_MACS + b"\x86\xdd" + ip6 + tcp


def arp() -> bytes:
    """A non-IP frame (ARP request)."""
    return (b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x08\x06"
            + bytes.fromhex("0001080006040001") + bytes.fromhex("020000000001")
            + b"\x0a\x00\x00\x01" + bytes(6) + b"\x0a\x00\x00\x02")


def outcome(run):
    """What a test run gives, for comparing two sides: the errno it fails
    with, or (retval, data_out as hex, ctx_out)."""
    try:
        r = run()
    except OSError as e:
        return e.errno
    return r.retval, r.data_out.hex(), r.ctx_out
