"""Seeded random packet-parsing programs: userbpf's BPF_PROG_TEST_RUN against
the live kernel's, as XDP, SOCKET_FILTER and SCHED_CLS programs (and, fewer,
SCHED_ACT, CGROUP_SKB, LWT_IN and LWT_XMIT ones) on random Ethernet / IPv4 /
IPv6 / ARP / VLAN / 802.3 frames from 14 bytes to the largest each type takes
(XDP past its linear size, so with fragments), with random ctx_in.

A program is a preamble (r6 = ctx, r7 = data, r8 = data_end, r9 = an
accumulator) and a random sequence of blocks, each ending where it started
so blocks compose without jump fix-ups:

- packet loads checked against data_end (``r1 = r7 + off + size; if r1 > r8
  skip``), mixed into r9, with branches on the loaded value;
- metadata loads (XDP, tc) checked against data;
- LD_ABS / LD_IND (socket filters have no direct packet access);
- ctx field reads (every readable, non-pointer field of the type, at full and
  narrow sizes) and writes (cb, mark, priority, tc_index, queue_mapping,
  tc_classid, tstamp where the type may write them);
- packet writes (tc, XDP) and ALU steps on r9.

The program returns r9. Each run compares the outcome — errno, or retval,
data_out and ctx_out — on the same packet, ctx_in and repeat count. The kernel
must accept every generated program (a rejection fails the test: the
generator is wrong). The bounded version runs in CI; ``slow`` runs more
(7000 programs, about 2.5 minutes).

LD_ABS reaches the skb's headers through SKF_NET_OFF and SKF_LL_OFF too.
"""
from __future__ import annotations

import random
import struct
from typing import List, Optional

import pytest

from userbpf import contexts, isa
from userbpf.isa import AluOp, JmpOp
from userbpf.kernel import Kernel
from userbpf.uapi import AttachType, Cmd, ProgType

pytestmark = pytest.mark.kernel

R_CTX, R_DATA, R_END, R_ACC = 6, 7, 8, 9
SIZES = {1: isa.Size.B, 2: isa.Size.H, 4: isa.Size.W, 8: isa.Size.DW}
SKF_NET_OFF, SKF_LL_OFF = -0x100000, -0x200000

XDP, SKF, TC = ProgType.XDP, ProgType.SOCKET_FILTER, ProgType.SCHED_CLS
TYPES = (XDP, SKF, TC)
# the other skb types, with the expected_attach_type they load with
OTHER_SKB = {ProgType.SCHED_ACT: 0, ProgType.CGROUP_SKB: AttachType.CGROUP_INET_INGRESS,
             ProgType.LWT_IN: 0, ProgType.LWT_XMIT: 0}
EAT = {XDP: 0, SKF: 0, TC: 0, **OTHER_SKB}
L2_TYPES = {TC, ProgType.SCHED_ACT}          # their data starts at the MAC header
LD_ABS_TYPES = {SKF, TC, ProgType.SCHED_ACT}  # may_access_skb
# the largest data_size_in each type takes: skb 4096 - NET_SKB_PAD - shinfo;
# XDP goes past its 3520 linear bytes into fragments
MAX_SIZE = {XDP: 9000, **{t: 3712 for t in EAT if t != XDP}}
SKB_CTX_SIZE = contexts.ctx_struct(TC).size
XDP_CTX_SIZE = contexts.ctx_struct(XDP).size

# fields that hold pointers (their loads are not values to mix into r9)
POINTER_FIELDS = {"data", "data_end", "data_meta", "sk", "flow_keys"}
# __sk_buff fields some types may write (contexts decides which, per type)
WRITE_CANDIDATES = ("cb", "mark", "priority", "tc_index", "queue_mapping", "tc_classid",
                    "tstamp")


def _fields(prog_type):
    out = {}
    for f in contexts.ctx_struct(prog_type).fields:
        out[f.name] = (f.off, f.size)
    return out


def readable(prog_type) -> List[tuple]:
    """(off, size) of every value field the type may load, at each narrow size."""
    cells = []
    for name, (off, size) in _fields(prog_type).items():
        if name.split("[")[0] in POINTER_FIELDS:
            continue
        for s in (1, 2, 4, 8):
            if s > size:
                continue
            if allowed(prog_type, off, s, False):
                cells.append((off, s))
    return cells


def allowed(prog_type, off: int, size: int, write: bool) -> bool:
    try:
        contexts.check_ctx_access(prog_type, EAT[prog_type], off, size, write)
    except contexts.CtxAccessError:
        return False
    return True


def writable(prog_type) -> List[tuple]:
    return [(off, size) for name, (off, size) in _fields(prog_type).items()
            if name.split("[")[0] in WRITE_CANDIDATES and allowed(prog_type, off, size, True)]


READABLE = {t: readable(t) for t in EAT}
# __sk_buff fields the kernel stores in 16 bits (skb->queue_mapping,
# skb->tc_index, qdisc_skb_cb(skb)->tc_classid)
U16_FIELD_OFFS = {_fields(TC)[n][0] for n in ("queue_mapping", "tc_index", "tc_classid")}
WRITABLE_CELLS = {t: writable(t) for t in EAT}


# -- program blocks --------------------------------------------------------------

def mix(rng: random.Random, src: int) -> List[isa.Insn]:
    """Fold register ``src`` into the accumulator."""
    op = rng.choice([AluOp.ADD, AluOp.XOR, AluOp.OR, AluOp.SUB])
    out = [isa.BPF_ALU64_REG(op, R_ACC, src)]
    if rng.random() < 0.5:
        out.append(isa.BPF_ALU64_IMM(AluOp.LSH, R_ACC, rng.randrange(1, 8)))
    return out


def pkt_offset(rng: random.Random, prog_type) -> int:
    # mostly the headers, sometimes far into (or past) the packet
    if rng.random() < 0.8:
        return rng.randrange(0, 80)
    return rng.randrange(0, 3600 if prog_type != XDP else 3520)


def guarded(rng, prog_type, off: int, size: int, body: List[isa.Insn]) -> List[isa.Insn]:
    """``body`` runs only when [data + off, data + off + size) is in the packet."""
    return [isa.BPF_MOV64_REG(1, R_DATA), isa.BPF_ALU64_IMM(AluOp.ADD, 1, off + size),
            isa.BPF_JMP_REG(JmpOp.JGT, 1, R_END, len(body))] + body


def blk_pkt_load(rng, prog_type):
    size = rng.choice([1, 2, 4, 8])
    off = pkt_offset(rng, prog_type)
    body = [isa.BPF_LDX_MEM(SIZES[size], 2, R_DATA, off)]
    if rng.random() < 0.6:
        # branch on the value: one arm changes r9
        op = rng.choice([JmpOp.JEQ, JmpOp.JNE, JmpOp.JGT, JmpOp.JLT, JmpOp.JSET, JmpOp.JSGT,
                         JmpOp.JGE, JmpOp.JSLE])
        imm = rng.choice([0, 1, 0x08, 0x45, 0x86, 0xdd, 0x800, 0x81, 6, 17,
                          rng.randrange(0, 1 << 16)])
        jmp = isa.BPF_JMP32_IMM if rng.random() < 0.5 else isa.BPF_JMP_IMM
        body += [jmp(op, 2, imm, 1),
                 isa.BPF_ALU64_IMM(rng.choice([AluOp.ADD, AluOp.XOR]), R_ACC,
                                   rng.randrange(1, 1 << 20))]
    body += mix(rng, 2)
    return guarded(rng, prog_type, off, size, body)


def blk_pkt_write(rng, prog_type):
    size = rng.choice([1, 2, 4, 8])
    off = pkt_offset(rng, prog_type)
    if rng.random() < 0.5:
        body = [isa.BPF_STX_MEM(SIZES[size], R_DATA, R_ACC, off)]
    else:
        body = [isa.BPF_ST_MEM(SIZES[size], R_DATA, off, rng.randrange(-1 << 31, 1 << 31))]
    return guarded(rng, prog_type, off, size, body)


META_FIELD = {XDP: 8, TC: 140, ProgType.SCHED_ACT: 140}   # xdp_md / __sk_buff data_meta


def blk_meta_load(rng, prog_type):
    """Metadata: [data_meta + off, + size) must end at or before data (tc
    test runs have none)."""
    size = rng.choice([1, 2, 4, 8])
    off = rng.randrange(0, 40)
    body = [isa.BPF_LDX_MEM(SIZES[size], 3, 2, off)] + mix(rng, 3)
    return [isa.BPF_LDX_MEM(isa.Size.W, 2, R_CTX, META_FIELD[prog_type]),
            isa.BPF_MOV64_REG(1, 2),
            isa.BPF_ALU64_IMM(AluOp.ADD, 1, off + size),
            isa.BPF_JMP_REG(JmpOp.JGT, 1, R_DATA, len(body))] + body


def blk_ld_abs(rng, prog_type):
    size = rng.choice([1, 2, 4])
    if rng.random() < 0.5:
        off = rng.choice([rng.randrange(0, 64), rng.randrange(0, 4000)])
        r = rng.random()
        if r < 0.2:
            off += SKF_NET_OFF          # the network header + off
        elif r < 0.3:
            off += SKF_LL_OFF           # the MAC header + off
        return [isa.BPF_LD_ABS(SIZES[size], off)] + mix(rng, 0)
    return [isa.BPF_MOV64_IMM(2, rng.randrange(0, 60)),
            isa.BPF_LD_IND(SIZES[size], 2, rng.randrange(0, 20))] + mix(rng, 0)


def blk_ctx_read(rng, prog_type):
    off, size = rng.choice(READABLE[prog_type])
    return [isa.BPF_LDX_MEM(SIZES[size], 1, R_CTX, off)] + mix(rng, 1)


def blk_ctx_write(rng, prog_type):
    off, size = rng.choice(WRITABLE_CELLS[prog_type])
    if off in U16_FIELD_OFFS and rng.random() < 0.5:
        # values around the 16 bits the kernel keeps (and queue_mapping's 0xffff limit)
        return [isa.BPF_MOV64_IMM(1, rng.choice([0xfffe, 0xffff, 0x10000, 0x1ffff,
                                                 rng.randrange(0, 0x20000)])),
                isa.BPF_STX_MEM(SIZES[size], R_CTX, 1, off)]
    if rng.random() < 0.5:
        return [isa.BPF_STX_MEM(SIZES[size], R_CTX, R_ACC, off)]
    return [isa.BPF_MOV64_IMM(1, rng.randrange(-1 << 31, 1 << 31)),
            isa.BPF_STX_MEM(SIZES[size], R_CTX, 1, off)]


def blk_alu(rng, prog_type):
    op = rng.choice([AluOp.ADD, AluOp.SUB, AluOp.MUL, AluOp.OR, AluOp.AND, AluOp.XOR,
                     AluOp.LSH, AluOp.RSH, AluOp.ARSH, AluOp.DIV, AluOp.MOD])
    alu = isa.BPF_ALU64_IMM if rng.random() < 0.6 else isa.BPF_ALU32_IMM
    if op in (AluOp.LSH, AluOp.RSH, AluOp.ARSH):
        imm = rng.randrange(0, 32)
    elif op in (AluOp.DIV, AluOp.MOD):
        imm = rng.randrange(1, 1000)
    else:
        imm = rng.randrange(-1 << 31, 1 << 31)
    return [alu(op, R_ACC, imm)]


def blocks_for(prog_type) -> list:
    """(block, weight) the type allows: direct packet reads/writes, LD_ABS, ctx writes."""
    out = [(blk_ctx_read, 3), (blk_alu, 2)]
    if contexts.may_access_direct_pkt_data(prog_type):
        out.append((blk_pkt_load, 5))
    if contexts.may_access_direct_pkt_data(prog_type, write=True):
        out.append((blk_pkt_write, 2))
    if prog_type in LD_ABS_TYPES:
        out.append((blk_ld_abs, 1 if prog_type != SKF else 4))
    if WRITABLE_CELLS[prog_type]:
        out.append((blk_ctx_write, 2))
    if prog_type in META_FIELD:
        out.append((blk_meta_load, 1 if prog_type == XDP else 0.3))
    return out


BLOCKS = {t: blocks_for(t) for t in EAT}
DATA_FIELDS = {t: (0, 4) if t == XDP else (76, 80) for t in EAT
               if contexts.may_access_direct_pkt_data(t)}
# cgroup skb programs must return 0 or 1
RETURN_MASK = {ProgType.CGROUP_SKB: 1}


def random_blocks(rng: random.Random, prog_type) -> List[List[isa.Insn]]:
    """The program as blocks: preamble, the random blocks, the return."""
    code = [isa.BPF_MOV64_REG(R_CTX, 1), isa.BPF_MOV64_IMM(R_ACC, rng.randrange(0, 1 << 16))]
    if prog_type in DATA_FIELDS:
        d, e = DATA_FIELDS[prog_type]
        code += [isa.BPF_LDX_MEM(isa.Size.W, R_DATA, R_CTX, d),
                 isa.BPF_LDX_MEM(isa.Size.W, R_END, R_CTX, e)]
    out = [code]
    blocks, weights = zip(*BLOCKS[prog_type])
    for _ in range(rng.randrange(1, 24)):
        out.append(rng.choices(blocks, weights)[0](rng, prog_type))
    code = [isa.BPF_MOV64_REG(0, R_ACC)]
    if rng.random() < 0.3:
        code.append(isa.BPF_ALU64_IMM(AluOp.AND, 0, rng.choice([3, 0xff, 0xffff])))
    if prog_type in RETURN_MASK:
        code.append(isa.BPF_ALU64_IMM(AluOp.AND, 0, RETURN_MASK[prog_type]))
    out.append(code + [isa.BPF_EXIT_INSN()])
    return out


def random_program(rng: random.Random, prog_type) -> List[isa.Insn]:
    return [x for block in random_blocks(rng, prog_type) for x in block]


# -- packets and contexts ------------------------------------------------------------

def rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def ipv4_header(rng, payload_len: int) -> bytes:
    proto = rng.choice([6, 17, 1, 47, rng.randrange(256)])
    ihl = rng.choice([5, 5, 5, 6, 15, rng.randrange(16)])
    hdr = struct.pack(">BBHHHBBH4s4s", (rng.choice([4, 4, 4, 6]) << 4) | ihl,
                      rng.randrange(256), 20 + payload_len, rng.randrange(1 << 16),
                      rng.choice([0, 0x4000, 0x2000, rng.randrange(1 << 16)]),
                      rng.randrange(1, 256), proto, 0, rand_bytes(rng, 4), rand_bytes(rng, 4))
    return hdr


def ipv6_header(rng, payload_len: int) -> bytes:
    return struct.pack(">IHBB16s16s", 0x60000000 | rng.randrange(1 << 20), payload_len,
                       rng.choice([6, 17, 58, 0, 43]), 64, rand_bytes(rng, 16),
                       rand_bytes(rng, 16))


def arp_body(rng) -> bytes:
    return struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, rng.choice([1, 2]),
                       rand_bytes(rng, 6), rand_bytes(rng, 4), rand_bytes(rng, 6),
                       rand_bytes(rng, 4))


def random_packet(rng: random.Random, max_size: int) -> bytes:
    """An Ethernet frame of a random kind and size (14 .. max_size)."""
    dst = rng.choice([b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01", bytes(6),
                      b"\x33\x33\x00\x00\x00\x01", rand_bytes(rng, 6)])
    src = rand_bytes(rng, 6)
    kind = rng.choice(["ipv4", "ipv4", "ipv6", "arp", "vlan", "802.3", "random"])
    if kind == "ipv4":
        body = b"\x08\x00" + ipv4_header(rng, 40) + rand_bytes(rng, 40)
    elif kind == "ipv6":
        body = b"\x86\xdd" + ipv6_header(rng, 40) + rand_bytes(rng, 40)
    elif kind == "arp":
        body = b"\x08\x06" + arp_body(rng)
    elif kind == "vlan":
        body = b"\x81\x00" + struct.pack(">H", rng.randrange(1 << 16)) + b"\x08\x00" + \
            ipv4_header(rng, 20) + rand_bytes(rng, 20)
    elif kind == "802.3":
        body = struct.pack(">H", rng.randrange(0, 0x600)) + \
            rng.choice([b"\xff\xff", b"\xaa\xaa", rand_bytes(rng, 2)]) + rand_bytes(rng, 40)
    else:
        body = rand_bytes(rng, 60)
    frame = dst + src + body
    size = rng.choice([14, 15, len(frame), len(frame), rng.randrange(14, 200),
                       rng.randrange(14, max_size + 1), max_size])
    if size > len(frame):
        frame += rand_bytes(rng, size - len(frame))
    return frame[:size]


def random_skb_ctx(rng: random.Random, pkt_len: int) -> Optional[bytes]:
    """A __sk_buff ctx_in setting only what a test run may set (or None)."""
    if rng.random() < 0.4:
        return None
    f = _fields(TC)
    ctx = bytearray(SKB_CTX_SIZE)

    def put(name, value, size=None):
        off, fsize = f[name]
        size = size or fsize
        ctx[off:off + size] = (value % (1 << (8 * size))).to_bytes(size, "little")

    put("mark", rng.getrandbits(32))
    put("priority", rng.getrandbits(32))
    put("ingress_ifindex", rng.choice([0, 1, rng.getrandbits(16)]))
    put("ifindex", rng.choice([0, 1]))
    for i in range(5):
        put(f"cb[{i}]", rng.getrandbits(32))
    put("tstamp", rng.choice([0, rng.getrandbits(64)]))
    put("wire_len", rng.choice([0, pkt_len, min(65536, pkt_len + rng.randrange(0, 9000))]))
    put("gso_segs", rng.choice([0, 1, rng.randrange(0, 65536)]))
    put("gso_size", rng.choice([0, 1400, rng.getrandbits(32)]))
    put("hwtstamp", rng.choice([0, rng.getrandbits(64)]))
    return bytes(ctx)


def random_xdp_ctx(rng: random.Random, size: int) -> Optional[bytes]:
    """An xdp_md ctx_in: metadata in front of the packet, maybe a shorter linear part."""
    if rng.random() < 0.5:
        return None
    meta = rng.choice([0, 4, 8, 32]) if size >= 14 + 32 else 0
    end = size if rng.random() < 0.8 else rng.randrange(meta, size + 1)
    return struct.pack("<6I", meta, end, 0, rng.choice([0, 0, 1]), 0, 0)


# -- the two sides ----------------------------------------------------------------------

def outcome_mine(k: Kernel, fd: int, data: bytes, ctx: Optional[bytes], repeat: int):
    try:
        r = k.bpf(Cmd.PROG_TEST_RUN, prog_fd=fd, data_in=data, ctx_in=ctx,
                  ctx_out=ctx is not None, repeat=repeat)
    except OSError as e:
        return ("err", e.errno)
    return ("ok", r.retval, r.data_out, r.ctx_out or b"")


def outcome_kernel(hp, data: bytes, ctx: Optional[bytes], repeat: int):
    try:
        r = hp.test_run_full(data, repeat, ctx)
    except OSError as e:
        return ("err", e.errno)
    return ("ok", r.retval, r.data_out, r.ctx_out)


def check_seed(host, seed: int, prog_type, packets: int = 6) -> None:
    """One random program of ``prog_type`` on ``packets`` random packets."""
    rng = random.Random(seed * 7919 + int(prog_type))
    code = random_program(rng, prog_type)
    eat = EAT[prog_type]
    k = Kernel()
    mine = k.bpf(Cmd.PROG_LOAD, prog_type=prog_type, expected_attach_type=eat, insns=code,
                 license="GPL")
    with host.prog_load(code, prog_type, expected_attach_type=eat) as hp:
        for i in range(packets):
            pkt = random_packet(rng, MAX_SIZE[prog_type])
            if prog_type == XDP:
                ctx = random_xdp_ctx(rng, len(pkt))
            else:
                ctx = random_skb_ctx(rng, len(pkt) - (0 if prog_type in L2_TYPES else 14))
            repeat = rng.choice([1, 1, 1, 2, 5])
            theirs = outcome_kernel(hp, pkt, ctx, repeat)
            ours = outcome_mine(k, mine, pkt, ctx, repeat)
            assert ours == theirs, (
                f"seed {seed} {ProgType(prog_type).name} packet {i} ({len(pkt)} bytes, "
                f"repeat {repeat}, ctx_in {ctx.hex() if ctx else None}):\n"
                f"  program {isa.encode(code).hex()}\n  userbpf {ours!r:.600}\n"
                f"  kernel  {theirs!r:.600}")


@pytest.mark.parametrize("prog_type", TYPES, ids=lambda t: ProgType(t).name)
@pytest.mark.parametrize("seed", range(40))
def test_random_programs_like_the_kernel(host, seed, prog_type):
    check_seed(host, seed, prog_type)


@pytest.mark.parametrize("prog_type", OTHER_SKB, ids=lambda t: ProgType(t).name)
@pytest.mark.parametrize("seed", range(10))
def test_random_programs_other_skb_types_like_the_kernel(host, seed, prog_type):
    check_seed(host, seed, prog_type)


@pytest.mark.slow
@pytest.mark.parametrize("prog_type", TYPES + tuple(OTHER_SKB), ids=lambda t: ProgType(t).name)
@pytest.mark.parametrize("seed", range(40, 1040))
def test_random_programs_like_the_kernel_long(host, seed, prog_type):
    check_seed(host, seed, prog_type, packets=10)


def test_generator_covers_its_cases():
    """The generator produces every block kind, packet size edge and ctx form
    (so a bounded run does exercise them)."""
    rng = random.Random(1)
    sizes = {len(random_packet(rng, 3712)) for _ in range(400)}
    assert {14, 15, 3712} <= sizes
    kinds = set()
    for t in TYPES:
        for _ in range(20):
            code = random_program(rng, t)
            kinds |= {x.code for x in code}
    assert isa.BPF_LD | isa.BPF_ABS | isa.BPF_W in kinds or \
        isa.BPF_LD | isa.BPF_ABS | isa.BPF_B in kinds
    assert any(c & 0x07 == isa.BPF_ST for c in kinds)
