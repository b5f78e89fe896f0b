"""Random sequences of packet-helper calls, userbpf against the live kernel.

Each program (tc, LWT xmit or XDP) makes 1-8 helper calls with random arguments (edge values
included) on a random packet; every call's result is folded into r7
(r7 = r7 * 31 + r0) and the program returns r7, so the retval pins each
result. retval and data_out must be equal on both sides.

XDP programs also run on packets with fragments (past the 3520 linear
bytes, or past a ctx_in.data_end), with offsets near the fragment
boundaries; tc programs also run on CHECKSUM_COMPLETE skbs, where the
outcome (retval and data_out, or the errno: EBADMSG when skb->csum does not
match) must be equal.

Growth is kept within userbpf's test-run skb buffer (the kernel reallocates
past it: the one intended difference, see test_pkt_helpers_kernel.py), by
tracking an upper bound of the packet's length. bpf_get_hash_recalc and
socket cookies are left out (their values differ by design).

CI runs a bounded number of programs; ``-m slow`` runs many more.
"""
from __future__ import annotations

import random
import struct

import pytest

from pktprog import (
    CTX, ETH_MACS, LWT_XMIT, Fp, L3_CSUM_REPLACE, L4_CSUM_REPLACE, SET_HASH, SET_HASH_INVALID,
    SKB_ADJUST_ROOM, SKB_CHANGE_HEAD, SKB_CHANGE_TAIL, SKB_HASH, SKB_LEN, SKB_LOAD_BYTES,
    SKB_PROTOCOL, SKB_PULL_DATA, SKB_STORE_BYTES, TC, XDP, XDP_ADJUST_HEAD, XDP_ADJUST_META,
    XDP_ADJUST_TAIL, XDP_GET_BUFF_LEN, XDP_LOAD_BYTES, XDP_STORE_BYTES, arp, call, mine,
    outcome, stack_fill, tcp4, tcp6, theirs, udp4)
from userbpf import Program, isa

pytestmark = pytest.mark.kernel

ROOM_FLAGS = [0, 1, 32, 2, 4, 6, 2 | 16, 4 | 8, 8 | 16 | 2, 128, 256, 384,
              2 | 64 | (14 << 56), 2 | (20 << 56), 1 << 9]
L3_FLAGS = [0, 2, 4, 3, 1, 0x10 | 2]
L4_FLAGS = [0, 2, 4, 2 | 0x10, 4 | 0x10, 4 | 0x30, 2 | 0x70, 4 | 0x80, 1 << 8, 0x21]


def packet(rng: random.Random) -> bytes:
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 48)))
    kind = rng.randrange(5)
    if kind == 0:
        return tcp4(payload=payload)
    if kind == 1:
        return udp4(csum=rng.random() < 0.7, payload=payload)
    if kind == 2:
        return tcp6(payload=payload)
    if kind == 3:
        return arp() + payload
    return ETH_MACS + bytes(rng.randrange(256) for _ in range(2)) + payload


def fold() -> list:
    """r7 = r7 * 31 + r0"""
    return [isa.BPF_ALU64_IMM(isa.AluOp.MUL, 7, 31), isa.BPF_ALU64_REG(isa.AluOp.ADD, 7, 0)]


def offset(rng: random.Random, length: int) -> int:
    r = rng.random()
    if r < 0.08:
        return rng.choice([0x7fffffff, 0x80000000, 0xffffffff, 0xffff, 0x10000])
    return rng.randrange(0, length + 6)


def assemble(rng: random.Random, calls: list, tail: list) -> list:
    """Stack set up, then each call with its result folded into r7, then tail."""
    body = stack_fill(-8, rng.getrandbits(64)) + stack_fill(-16, rng.getrandbits(64)) + \
        [isa.BPF_MOV64_IMM(7, 0)]
    for c in calls:
        body += list(isa.flatten(list(c))) + fold()
    return [isa.BPF_MOV64_REG(CTX, 1)] + body + tail + [isa.BPF_MOV64_REG(0, 7),
                                                        isa.BPF_EXIT_INSN()]


SKB_OPS = {TC: ["store", "load", "l3", "l4", "head", "tail", "room", "room", "pull", "hash"],
           LWT_XMIT: ["store", "load", "l3", "l4", "head", "tail", "pull", "hash"]}


def skb_calls(rng: random.Random, pkt: bytes, prog_type: int = TC) -> list:
    cap = 64 + ((len(pkt) + 7) & ~7)             # what userbpf's skb buffer can hold
    # the packet's length can be at most bound (LWT: from the network header)
    bound = len(pkt) if prog_type == TC else len(pkt) - 14
    calls = []
    for _ in range(rng.randrange(1, 9)):
        op = rng.choice(SKB_OPS[prog_type])
        if op == "store":
            c = call(SKB_STORE_BYTES, offset(rng, bound), Fp(rng.choice([-8, -16])),
                     rng.randrange(1, 9), rng.choice([0, 0, 1, 2, 3, 4]))
        elif op == "load":
            c = call(SKB_LOAD_BYTES, offset(rng, bound), Fp(-16), rng.randrange(1, 9))
        elif op in ("l3", "l4"):
            flags = rng.choice(L3_FLAGS if op == "l3" else L4_FLAGS)
            frm = 0 if flags & 0xf == 0 and rng.random() < 0.8 else rng.getrandbits(32)
            c = call(L3_CSUM_REPLACE if op == "l3" else L4_CSUM_REPLACE,
                     offset(rng, bound), frm, rng.getrandbits(32), flags)
        elif op == "head":
            room = rng.randrange(0, max(1, min(40, cap - bound) + 1))
            if rng.random() < 0.1:
                room = rng.choice([0xffffffff, 20000])
            if room <= cap - bound:
                bound += room
            c = call(SKB_CHANGE_HEAD, room, 1 if rng.random() < 0.05 else 0)
        elif op == "tail":
            new_len = rng.randrange(0, cap + 1)
            if rng.random() < 0.05:
                new_len = rng.choice([16065, 0xffffffff])
            if new_len <= cap:
                bound = max(bound, new_len)
            c = call(SKB_CHANGE_TAIL, new_len, 1 if rng.random() < 0.05 else 0)
        elif op == "room":
            diff = rng.randrange(-70, min(40, cap - bound) + 1)
            if rng.random() < 0.05:
                diff = rng.choice([0x1000, -0x1000])
            if 0 < diff <= cap - bound:
                bound += diff
            c = call(SKB_ADJUST_ROOM, diff & 0xffffffff if diff >= 0 else diff,
                     rng.choice([0, 0, 1, 1, 2]), rng.choice(ROOM_FLAGS))
        elif op == "pull":
            c = call(SKB_PULL_DATA, rng.randrange(0, bound + 4))
        else:
            c = call(SET_HASH, rng.getrandbits(32)) \
                if rng.random() < 0.6 and prog_type == TC else call(SET_HASH_INVALID)
        calls.append(c)
    return calls


SKB_TAIL = [i for off in (SKB_LEN, SKB_PROTOCOL, SKB_HASH)
            for i in [isa.BPF_LDX_MEM(isa.Size.W, 0, CTX, off)] + fold()]


def xdp_calls(rng: random.Random, pkt: bytes) -> list:
    calls = []
    for _ in range(rng.randrange(1, 9)):
        op = rng.choice(["head", "meta", "tail", "load", "store", "len"])
        if op == "head":
            c = call(XDP_ADJUST_HEAD, rng.choice([rng.randrange(-230, 80),
                                                  rng.randrange(-8, 9) * 4]))
        elif op == "meta":
            c = call(XDP_ADJUST_META, rng.choice([rng.randrange(-40, 10) * 4,
                                                  rng.randrange(-230, 30)]))
        elif op == "tail":
            c = call(XDP_ADJUST_TAIL, rng.choice([rng.randrange(-80, 200),
                                                  rng.randrange(3400, 3600) - len(pkt)]))
        elif op in ("load", "store"):
            c = call(XDP_LOAD_BYTES if op == "load" else XDP_STORE_BYTES,
                     offset(rng, len(pkt)), Fp(rng.choice([-8, -16])), rng.randrange(1, 9))
        else:
            c = call(XDP_GET_BUFF_LEN)
        calls.append(c)
    return calls


def case(seed: int):
    """(prog_type, packet, calls, tail, rng for assemble) of one seed."""
    rng = random.Random(seed)
    pkt = packet(rng)
    prog_type = rng.choice([TC, TC, TC, LWT_XMIT, XDP, XDP])
    if prog_type == XDP:
        return prog_type, pkt, xdp_calls(rng, pkt), [], rng
    return prog_type, pkt, skb_calls(rng, pkt, prog_type), SKB_TAIL, rng


def check(host, seed: int) -> None:
    prog_type, pkt, calls, tail, rng = case(seed)
    code = assemble(rng, calls, tail)
    a, b = mine(prog_type, code, pkt), theirs(host, prog_type, code, pkt)
    assert (a.retval, a.data_out.hex()) == (b.retval, b.data_out.hex()), f"seed {seed}"


@pytest.mark.parametrize("block", range(4))
def test_random_helper_sequences(host, block):
    for seed in range(block * 50, block * 50 + 50):
        check(host, seed)


@pytest.mark.slow
@pytest.mark.parametrize("block", range(40))
def test_random_helper_sequences_long(host, block):
    for seed in range(10_000 + block * 250, 10_000 + block * 250 + 250):
        check(host, seed)


# -- XDP fragments and CHECKSUM_COMPLETE skbs ---------------------------------------

LINEAR, PAGE = 3520, 4096
CHECKSUM_COMPLETE = 1 << 2


def frag_calls(rng: random.Random, size: int, linear: int) -> list:
    """xdp helper calls on a packet of size bytes, linear of them linear:
    offsets and deltas near the ends of the linear part and the pages."""
    edges = [linear + i * PAGE for i in range(size // PAGE + 1)] + [size]
    calls = []
    for _ in range(rng.randrange(1, 7)):
        op = rng.choice(["tail", "tail", "load", "store", "len", "head"])
        if op == "tail":
            c = call(XDP_ADJUST_TAIL, rng.choice([rng.randrange(-300, 300),
                                                  -rng.randrange(0, size + 20),
                                                  rng.randrange(0, PAGE + 10)]))
        elif op in ("load", "store"):
            off = rng.choice(edges) + rng.randrange(-12, 12) if rng.random() < 0.9 \
                else offset(rng, size)
            c = call(XDP_LOAD_BYTES if op == "load" else XDP_STORE_BYTES,
                     max(off, 0), Fp(-16), rng.randrange(1, 17))
        elif op == "head":
            c = call(XDP_ADJUST_HEAD, rng.randrange(-20, 20))
        else:
            c = call(XDP_GET_BUFF_LEN)
        calls.append(c)
    return calls


def check_frags(host, seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([LINEAR + 1, rng.randrange(LINEAR, LINEAR + 3 * PAGE),
                       rng.randrange(100, 2000)])
    linear = min(size, LINEAR) if rng.random() < 0.5 else rng.randrange(60, min(size, LINEAR))
    ctx = struct.pack("<6I", 0, linear, 0, 0, 0, 0) if linear != min(size, LINEAR) \
        or rng.random() < 0.5 else None
    pkt = bytes(rng.randrange(256) for _ in range(size))
    code = assemble(rng, frag_calls(rng, size, linear), [])
    a = outcome(lambda: Program(code, prog_type=XDP).test_run(pkt, ctx=ctx))
    b = outcome(lambda: theirs(host, XDP, code, pkt, ctx_in=ctx))
    if ctx is None and isinstance(b, tuple):
        b = b[:2] + (None,)
    assert a == b, f"seed {seed}"


def check_csum(host, seed: int) -> None:
    rng = random.Random(seed)
    pkt = packet(rng)
    code = assemble(rng, skb_calls(rng, pkt, TC), SKB_TAIL)
    a = outcome(lambda: mine(TC, code, pkt, flags=CHECKSUM_COMPLETE))
    b = outcome(lambda: theirs(host, TC, code, pkt, flags=CHECKSUM_COMPLETE))
    assert a[:2] == b[:2] if isinstance(a, tuple) and isinstance(b, tuple) else a == b, \
        f"seed {seed}"


@pytest.mark.parametrize("check", [check_frags, check_csum])
def test_random_fragments_and_checksum_complete(host, check):
    for seed in range(100):
        check(host, seed)


@pytest.mark.slow
@pytest.mark.parametrize("block", range(10))
@pytest.mark.parametrize("check", [check_frags, check_csum])
def test_random_fragments_and_checksum_complete_long(host, check, block):
    for seed in range(20_000 + block * 250, 20_000 + block * 250 + 250):
        check(host, seed)
