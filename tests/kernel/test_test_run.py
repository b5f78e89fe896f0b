"""BPF_PROG_TEST_RUN in userbpf alone (no live kernel needed): the rules of
net/bpf/test_run.c that tests/kernel/test_test_run_kernel.py compares with
Linux 6.18, pinned here with the values the kernel gave, so CI without root
checks them too.
"""
from __future__ import annotations

import errno
import struct

import pytest

import userbpf
from userbpf import Map, MapType, Program, isa
from userbpf.isa import AluOp, JmpOp
from userbpf.kernel import Kernel
from userbpf.kernel.errors import ENOTSUPP
from userbpf.kernel.test_run import csum_fold, eth_type_trans
from userbpf.uapi import Cmd, ProgType

XDP, SKF, TC = ProgType.XDP, ProgType.SOCKET_FILTER, ProgType.SCHED_CLS
PKT = bytes(range(64))
RET7 = [isa.BPF_MOV64_IMM(0, 7), isa.BPF_EXIT_INSN()]
# XDP: (data_end - data) << 16 | (data - data_meta)
XDP_SIZES = [isa.BPF_LDX_MEM(isa.Size.W, 2, 1, 0), isa.BPF_LDX_MEM(isa.Size.W, 3, 1, 4),
             isa.BPF_LDX_MEM(isa.Size.W, 4, 1, 8), isa.BPF_MOV64_REG(0, 3),
             isa.BPF_ALU64_REG(AluOp.SUB, 0, 2), isa.BPF_ALU64_IMM(AluOp.LSH, 0, 16),
             isa.BPF_ALU64_REG(AluOp.SUB, 2, 4), isa.BPF_ALU64_REG(AluOp.OR, 0, 2),
             isa.BPF_EXIT_INSN()]


def xdp_md(data=0, data_end=0, data_meta=0, ingress=0, rxq=0, egress=0) -> bytes:
    return struct.pack("<6I", data, data_end, data_meta, ingress, rxq, egress)


@pytest.fixture
def k():
    return Kernel()


def load(k, insns, prog_type) -> int:
    return k.bpf(Cmd.PROG_LOAD, prog_type=prog_type, insns=insns, license="GPL")


def errno_of(fn, *args, **kw) -> int:
    with pytest.raises(OSError) as e:
        fn(*args, **kw)
    return e.value.errno


def tr(k, fd, **kw):
    return k.bpf(Cmd.PROG_TEST_RUN, prog_fd=fd, **kw)


# -- XDP -------------------------------------------------------------------------------------

def test_xdp_linear_part_is_ctx_data_end_and_the_rest_fragments(k):
    fd = load(k, XDP_SIZES, XDP)
    res = tr(k, fd, data_in=PKT, ctx_in=xdp_md(0, 50), ctx_out=True)
    assert res.retval == 50 << 16
    assert res.data_out == PKT
    assert res.ctx_out == xdp_md(0, 50)
    res = tr(k, fd, data_in=PKT, ctx_in=xdp_md(), ctx_out=True)    # all fragments
    assert (res.retval, res.data_out, res.ctx_out) == (0, PKT, xdp_md())


def test_xdp_metadata_comes_from_the_front_of_data_in(k):
    fd = load(k, XDP_SIZES, XDP)
    res = tr(k, fd, data_in=PKT, ctx_in=xdp_md(8, 30), ctx_out=True)
    assert res.retval == (22 << 16) | 8
    assert res.data_out == PKT
    assert res.ctx_out == xdp_md(8, 30)


@pytest.mark.parametrize("size,ctx,err", [
    (64, xdp_md(48, 64), 0), (64, xdp_md(52, 64), errno.EINVAL),      # 14 bytes after it
    (300, xdp_md(216, 300), 0), (300, xdp_md(220, 300), errno.EINVAL),  # room for xdp_frame
    (64, xdp_md(6, 64), errno.EINVAL), (64, xdp_md(40, 32), errno.EINVAL),
    (64, xdp_md(0, 65), errno.EINVAL), (64, xdp_md(0, 64, 4), errno.EINVAL),
    (64, xdp_md(0, 64, 0, 1), 0), (64, xdp_md(0, 64, 0, 1, 1), errno.EINVAL),
    (64, xdp_md(0, 64, 0, 0, 1), errno.EINVAL), (64, xdp_md(0, 64, 0, 999), errno.ENODEV),
    (64, xdp_md(0, 64, 0, 0, 0, 1), errno.EINVAL),
    (73152, None, 0), (73153, None, errno.ENOMEM), (13, None, errno.EINVAL),
])
def test_xdp_input_rules(k, size, ctx, err):
    fd = load(k, RET7, XDP)
    if err:
        assert errno_of(tr, k, fd, data_in=bytes(size), ctx_in=ctx) == err
    else:
        assert tr(k, fd, data_in=bytes(size), ctx_in=ctx).data_out == bytes(size)


def test_xdp_live_frames(k):
    """Every frame is a fresh copy; the input comes back with retval 0."""
    m = Map(MapType.ARRAY, 4, 8, 1, kernel=k)
    ld = isa.BPF_LD_IMM64(1, 0)
    insns = [isa.BPF_ST_MEM(isa.Size.W, 10, -4, 0),
             # count the runs in map[0], and write the first packet byte
             isa.BPF_LDX_MEM(isa.Size.W, 6, 1, 0), isa.BPF_LDX_MEM(isa.Size.W, 7, 1, 4),
             ld[0]._replace(src=isa.Pseudo.MAP_FD, imm=m.fd), ld[1],
             isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(AluOp.ADD, 2, -4),
             isa.BPF_EMIT_CALL(1), isa.BPF_JMP_IMM(JmpOp.JEQ, 0, 0, 2),
             isa.BPF_MOV64_IMM(1, 1), isa.BPF_ATOMIC_OP(isa.Size.DW, AluOp.ADD, 0, 1, 0),
             isa.BPF_MOV64_REG(1, 6), isa.BPF_ALU64_IMM(AluOp.ADD, 1, 1),
             isa.BPF_JMP_REG(JmpOp.JGT, 1, 7, 1), isa.BPF_ST_MEM(isa.Size.B, 6, 0, 0x77),
             isa.BPF_MOV64_IMM(0, 2), isa.BPF_EXIT_INSN()]
    fd = load(k, insns, XDP)
    res = tr(k, fd, data_in=PKT, flags=2, repeat=5)
    assert (res.retval, res.data_out) == (0, PKT)
    assert m[bytes(4)] == struct.pack("<Q", 5)
    assert tr(k, fd, data_in=PKT).data_out == b"\x77" + PKT[1:]
    assert errno_of(tr, k, fd, data_in=PKT, flags=2, batch_size=257) == errno.E2BIG
    assert errno_of(tr, k, fd, data_in=bytes(4000), flags=2) == errno.EINVAL
    assert errno_of(tr, k, fd, data_in=PKT, batch_size=1) == errno.EINVAL


# -- __sk_buff ---------------------------------------------------------------------------------

def ld_field(off: int):
    return [isa.BPF_LDX_MEM(isa.Size.W, 0, 1, off), isa.BPF_EXIT_INSN()]


PKT_TYPE, WIRE_LEN, GSO_SIZE = 4, 160, 176


@pytest.mark.parametrize("dst,pkt_type", [("ffffffffffff", 2), ("01005e000001", 2),
                                          ("000000000000", 0), ("020000000001", 3)])
def test_pkt_type_on_the_loopback_device(k, dst, pkt_type):
    """lo has no broadcast address: ff:ff:ff:ff:ff:ff is PACKET_MULTICAST there."""
    fd = load(k, ld_field(PKT_TYPE), TC)
    assert tr(k, fd, data_in=bytes.fromhex(dst) + PKT[6:]).retval == pkt_type
    assert eth_type_trans(bytes.fromhex(dst) + PKT[6:])[1] == pkt_type


def test_wire_len_is_zero_without_a_ctx(k):
    fd = load(k, ld_field(WIRE_LEN), TC)
    assert tr(k, fd, data_in=PKT).retval == 0
    assert tr(k, fd, data_in=PKT, ctx_out=True).retval == 64


def test_gso_size_is_kept_in_16_bits(k):
    fd = load(k, ld_field(GSO_SIZE), TC)
    ctx = bytearray(192)
    ctx[GSO_SIZE:GSO_SIZE + 4] = struct.pack("<I", 0x12345678)
    assert tr(k, fd, data_in=PKT, ctx_in=bytes(ctx)).retval == 0x5678


@pytest.mark.parametrize("prog_type", (SKF, TC))
@pytest.mark.parametrize("ethertype,size,ok", [(0x0800, 33, False), (0x0800, 34, True),
                                               (0x86DD, 53, False), (0x86DD, 54, True),
                                               (0x0806, 14, True)])
def test_ip_frames_need_their_ip_header(k, prog_type, ethertype, size, ok):
    fd = load(k, RET7, prog_type)
    frame = (bytes(12) + struct.pack(">H", ethertype) + bytes(size))[:size]
    if ok:
        assert tr(k, fd, data_in=frame).retval == 7
    else:
        assert errno_of(tr, k, fd, data_in=frame) == errno.EINVAL


def test_checksum_complete_flag(k):
    """BPF_F_TEST_SKB_CHECKSUM_COMPLETE: EBADMSG when the bytes from the network
    header on changed; other flags, cpu and batch_size are EINVAL for skbs."""
    def writer(off, value):
        return [isa.BPF_LDX_MEM(isa.Size.W, 2, 1, 76), isa.BPF_LDX_MEM(isa.Size.W, 3, 1, 80),
                isa.BPF_MOV64_REG(4, 2), isa.BPF_ALU64_IMM(AluOp.ADD, 4, off + 1),
                isa.BPF_JMP_REG(JmpOp.JGT, 4, 3, 1),
                isa.BPF_ST_MEM(isa.Size.B, 2, off, value), isa.BPF_MOV64_IMM(0, 0),
                isa.BPF_EXIT_INSN()]
    assert tr(k, load(k, writer(13, 0), TC), data_in=PKT, flags=4).retval == 0
    assert tr(k, load(k, writer(20, 20), TC), data_in=PKT, flags=4).retval == 0
    fd = load(k, writer(20, 21), TC)
    assert errno_of(tr, k, fd, data_in=PKT, flags=4) == errno.EBADMSG
    assert tr(k, fd, data_in=PKT).data_out[20] == 21
    for kw in (dict(flags=1), dict(flags=2), dict(cpu=1), dict(batch_size=1)):
        assert errno_of(tr, k, fd, data_in=PKT, **kw) == errno.EINVAL
    assert csum_fold(bytes.fromhex("4500003c")) == 0x453c


def test_data_size_out_short_gives_enospc_with_the_truncated_copy(k):
    fd = load(k, RET7, TC)
    with pytest.raises(OSError) as e:
        tr(k, fd, data_in=PKT, data_size_out=10)
    assert e.value.errno == errno.ENOSPC
    assert e.value.result.data_out == PKT[:10]
    assert (e.value.result.retval, e.value.data_size_out) == (7, 64)


def test_ctx_in_rules(k):
    fd = load(k, RET7, TC)
    assert errno_of(tr, k, fd, data_in=PKT, ctx_in=bytes(4097)) == errno.E2BIG
    assert errno_of(tr, k, fd, data_in=PKT, ctx_in=bytes(299) + b"\1") == errno.E2BIG
    assert tr(k, fd, data_in=PKT, ctx_in=bytes(4096)).retval == 7
    assert errno_of(tr, k, fd, data_in=PKT, ctx_in=b"\1" + bytes(191)) == errno.EINVAL


# -- raw tracepoints and types -----------------------------------------------------------------

def test_raw_tracepoint_ignores_unknown_flags(k):
    fd = load(k, [isa.BPF_LDX_MEM(isa.Size.DW, 0, 1, 8), isa.BPF_EXIT_INSN()],
              ProgType.RAW_TRACEPOINT)
    args = struct.pack("<QQ", 5, 0x11223344)
    assert tr(k, fd, ctx_in=args, flags=6).retval == 0x11223344
    assert errno_of(tr, k, fd, ctx_in=args, cpu=1) == errno.EINVAL
    assert errno_of(tr, k, fd, ctx_in=args[:15]) == errno.EINVAL
    assert errno_of(tr, k, fd, ctx_in=args, repeat=1) == errno.EINVAL


@pytest.mark.parametrize("prog_type", [ProgType.LWT_SEG6LOCAL, ProgType.KPROBE,
                                       ProgType.CGROUP_SOCK, ProgType.SK_SKB])
def test_types_the_kernel_cannot_test_run(k, prog_type):
    fd = load(k, [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()], prog_type)
    assert errno_of(tr, k, fd, data_in=PKT) == ENOTSUPP


def test_program_test_run_without_a_kernel():
    p = Program(XDP_SIZES, prog_type=XDP)
    assert p.test_run(PKT).retval == 64 << 16
    assert userbpf.load_program(XDP_SIZES, prog_type=XDP).test_run(PKT[:20]).retval == 20 << 16


def live_frame_counter(map_fd: int, verdict: int = 1):
    """XDP: count in map[0] the runs that find packet byte 0 already 0x77,
    then set it to 0x77."""
    ld = isa.BPF_LD_IMM64(1, 0)
    return [isa.BPF_ST_MEM(isa.Size.W, 10, -4, 0),
            isa.BPF_LDX_MEM(isa.Size.W, 6, 1, 0), isa.BPF_LDX_MEM(isa.Size.W, 7, 1, 4),
            isa.BPF_MOV64_REG(1, 6), isa.BPF_ALU64_IMM(AluOp.ADD, 1, 1),
            isa.BPF_MOV64_IMM(0, verdict), isa.BPF_JMP_REG(JmpOp.JGT, 1, 7, 11),
            isa.BPF_LDX_MEM(isa.Size.B, 8, 6, 0), isa.BPF_ST_MEM(isa.Size.B, 6, 0, 0x77),
            ld[0]._replace(src=isa.Pseudo.MAP_FD, imm=map_fd), ld[1],
            isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(AluOp.ADD, 2, -4),
            isa.BPF_EMIT_CALL(1), isa.BPF_JMP_IMM(JmpOp.JEQ, 0, 0, 3),
            isa.BPF_JMP_IMM(JmpOp.JNE, 8, 0x77, 2),
            isa.BPF_MOV64_IMM(1, 1), isa.BPF_ATOMIC_OP(isa.Size.DW, AluOp.ADD, 0, 1, 0),
            isa.BPF_MOV64_IMM(0, verdict), isa.BPF_EXIT_INSN()]


@pytest.mark.parametrize("verdict,repeat,batch_size,reused", [
    (1, 100, 0, 36), (1, 100, 10, 36), (1, 300, 256, 236), (1, 7, 3, 0),
    (2, 300, 256, 44), (2, 130, 100, 2), (2, 150, 65, 22), (2, 100, 10, 36)])
def test_xdp_live_frames_reuse_pages(k, verdict, repeat, batch_size, reused):
    """Live frames come from pages filled once, 64 at a time; a run's page is
    reused after it (after its batch for XDP_PASS), so later runs see what
    earlier runs wrote (the counts Linux 6.18 gives)."""
    m = Map(MapType.ARRAY, 4, 8, 1, kernel=k)
    fd = load(k, live_frame_counter(m.fd, verdict), XDP)
    tr(k, fd, data_in=PKT, repeat=repeat, flags=2, batch_size=batch_size)
    assert m[bytes(4)] == struct.pack("<Q", reused)


def test_prog_fd_that_is_not_a_program(k):
    """bpf_prog_get: EBADF for an fd that is not open, EINVAL for another object."""
    assert errno_of(tr, k, 99, data_in=PKT) == errno.EBADF
    assert errno_of(tr, k, -1, data_in=PKT) == errno.EBADF
    m = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
    assert errno_of(tr, k, m, data_in=PKT) == errno.EINVAL
