"""PROG_TEST_RUN of flow dissector, sk_lookup and syscall programs
(kernel/test_run_ctx.py) against the live kernel: retval, data_out, ctx_out
and errnos equal; the syscall context written back over ctx_in."""
import ctypes
import errno
import struct

import pytest

from userbpf import abi, asm, hostbpf
from userbpf.kernel import Kernel
from userbpf.uapi import AttachType, Cmd, ProgType

pytestmark = pytest.mark.kernel
SLEEPABLE = 1 << 4


def host_run(insns, t, attach, data, ctx, flags=0):
    try:
        h = hostbpf.prog_load(insns, prog_type=t, expected_attach_type=attach, prog_flags=flags)
        r = h.test_run_full(data or b"", 1, ctx, 0 if data is None else None,
                            ctx_size_out=None if ctx is not None else 0)
        return r.retval, r.data_out, r.ctx_out
    except hostbpf.HostError as e:
        return e.errno


def my_run(insns, t, attach, data, ctx, flags=0):
    k = Kernel()
    try:
        fd = k.bpf(Cmd.PROG_LOAD, prog_type=t, expected_attach_type=attach, insns=insns,
                   license="GPL", prog_flags=flags)
        r = k.bpf(Cmd.PROG_TEST_RUN, prog_fd=fd, data_in=data, ctx_in=ctx,
                  ctx_out=ctx is not None)
        return r.retval, r.data_out, r.ctx_out or b""
    except OSError as e:
        return e.errno


def same(t, src, data=None, ctx=None, attach=0, flags=0):
    insns = asm.assemble(src)
    want = host_run(insns, t, attach, data, ctx, flags)
    assert my_run(insns, t, attach, data, ctx, flags) == want
    return want


ETH_IP = bytes(range(12)) + b"\x08\x00" + bytes(range(40))
ETH_IP6 = bytes(range(12)) + b"\x86\xdd" + bytes(range(100, 160))


@pytest.mark.parametrize("pkt", [ETH_IP, ETH_IP6, ETH_IP[:14], bytes(4096)])
@pytest.mark.parametrize("src", [
    # nhoff <- n_proto: clamped up to 14
    "r2 = *(u64 *)(r1 + 144)\nr3 = *(u16 *)(r2 + 10)\n*(u16 *)(r2 + 0) = r3\nr0 = 0\nexit",
    # thoff past the packet: clamped to its length; flags given back as retval
    "r2 = *(u64 *)(r1 + 144)\nr3 = 4000\n*(u16 *)(r2 + 2) = r3\nr0 = *(u32 *)(r2 + 48)\n"
    "exit",
    # a parser: ip_proto and the ports from the packet, BPF_DROP on short ones
    """r2 = *(u64 *)(r1 + 144)
       r3 = *(u32 *)(r1 + 76)
       r4 = *(u32 *)(r1 + 80)
       r5 = r3
       r5 += 38
       r0 = 2
       if r5 > r4 goto out
       r6 = *(u8 *)(r3 + 23)
       *(u8 *)(r2 + 9) = r6
       r6 = *(u32 *)(r3 + 34)
       *(u32 *)(r2 + 12) = r6
       r6 = 34
       *(u16 *)(r2 + 2) = r6
       r0 = 0
    out:
       exit""",
])
def test_flow_dissector(host, src, pkt):
    same(ProgType.FLOW_DISSECTOR, src, pkt)
    keys = bytes(48) + struct.pack("<II", 5, 0)
    same(ProgType.FLOW_DISSECTOR, src, pkt, keys)


@pytest.mark.parametrize("data, ctx", [
    (bytes(13), None),                         # shorter than Ethernet
    (bytes(4097), None),                       # more than a page
    (ETH_IP, bytes(8) + b"\1" + bytes(47)),    # ctx_in may set only flags
])
def test_flow_dissector_errors(host, data, ctx):
    assert same(ProgType.FLOW_DISSECTOR, "r0 = 0\nexit", data, ctx) == errno.EINVAL


def sk_lookup_ctx(family=2, protocol=6, remote=b"\x0a\0\0\x01", local=b"\1\2\3\4",
                  rport=b"\x1f\x90", lport=8080, tail=b""):
    c = bytearray(72)
    struct.pack_into("<II", c, 8, family, protocol)
    if len(remote) == 4:
        c[16:20], c[40:44] = remote, local
        c[20:36], c[44:60] = bytes(range(16)), bytes(range(16, 32))   # read as 0 for IPv4
    else:
        c[20:36], c[44:60] = remote, local
        c[16:20], c[40:44] = b"\x09" * 4, b"\x08" * 4                 # read as 0 for IPv6
    c[36:38] = rport
    struct.pack_into("<I", c, 60, lport)
    c[64:64 + len(tail)] = tail
    return bytes(c)


READ_ALL = "\n".join(["r0 = 0"] + [f"r2 = *(u32 *)(r1 + {off})\nr0 ^= r2\nr0 <<= 1"
                                    for off in (8, 12, 16, 20, 28, 40, 44, 56, 60, 64)]
                     + ["r2 = *(u16 *)(r1 + 36)\nr0 ^= r2", "r0 &= 1", "exit"])


@pytest.mark.parametrize("ctx", [sk_lookup_ctx(), sk_lookup_ctx(protocol=17, lport=53),
                                 sk_lookup_ctx(10, 6, bytes(range(16)), bytes(range(50, 66))),
                                 sk_lookup_ctx(family=0x10002, protocol=0x20006)])
def test_sk_lookup_sees_its_familys_addresses(host, ctx):
    for bit in range(0, 12):
        src = READ_ALL.replace("r0 &= 1", f"r0 >>= {bit}\nr0 &= 1")
        same(ProgType.SK_LOOKUP, src, None, ctx, attach=AttachType.SK_LOOKUP)


@pytest.mark.parametrize("data, ctx, code", [
    (None, sk_lookup_ctx(lport=70000), errno.ERANGE),
    (None, sk_lookup_ctx(family=1), errno.EAFNOSUPPORT),
    (None, sk_lookup_ctx(tail=b"\1"), errno.EINVAL),
    (None, b"\1" + sk_lookup_ctx()[1:], errno.EINVAL),          # a socket in ctx_in
    (ETH_IP, sk_lookup_ctx(), errno.EINVAL),
    (None, sk_lookup_ctx() + b"\1", errno.E2BIG),
])
def test_sk_lookup_errors(host, data, ctx, code):
    assert same(ProgType.SK_LOOKUP, "r0 = 1\nexit", data, ctx,
                attach=AttachType.SK_LOOKUP) == code


def test_sk_lookup_without_ctx_is_einval(host):
    insns = asm.assemble("r0 = 1\nexit")
    h = hostbpf.prog_load(insns, prog_type=ProgType.SK_LOOKUP,
                          expected_attach_type=AttachType.SK_LOOKUP)
    with pytest.raises(hostbpf.HostError) as e:
        h.test_run_full(b"", 1, None, 0)
    assert e.value.errno == my_run(insns, ProgType.SK_LOOKUP, AttachType.SK_LOOKUP, None,
                                   None) == errno.EINVAL


@pytest.mark.parametrize("size", [0, 8, 16, 24, 4096])
def test_syscall_context_is_written_back_over_ctx_in(host, size):
    insns = asm.assemble("r2 = *(u64 *)(r1 + 8)\nr2 += 5\n*(u64 *)(r1 + 0) = r2\n"
                         "r0 = 3\nexit")
    h = hostbpf.prog_load(insns, prog_type=ProgType.SYSCALL, prog_flags=SLEEPABLE)
    k = Kernel()
    fd = k.bpf(Cmd.PROG_LOAD, prog_type=ProgType.SYSCALL, insns=insns, license="GPL",
               prog_flags=SLEEPABLE)
    outs = []
    for run in (lambda a: hostbpf.sys_bpf(Cmd.PROG_TEST_RUN, a.test),
                lambda a: k.bpf(Cmd.PROG_TEST_RUN, a)):
        buf = ctypes.create_string_buffer(bytes(i & 0xff for i in range(size)), max(size, 1))
        attr = abi.bpf_attr()
        attr.test.prog_fd = h.fd if not outs else fd
        if size:
            attr.test.ctx_in, attr.test.ctx_size_in = ctypes.addressof(buf), size
        try:
            run(attr)
            outs.append((attr.test.retval, buf.raw[:size]))
        except OSError as e:
            outs.append(e.errno)
    assert outs[0] == outs[1]
    assert outs[0] == (errno.EINVAL if size < 16 else
                       (3, struct.pack("<Q", int.from_bytes(bytes(range(8, 16)), "little")
                                       + 5) + bytes(range(8, 16)) + bytes(
                           i & 0xff for i in range(16, size))))


def test_enable_stats_counts_test_runs_like_the_kernel(host):
    """BPF_ENABLE_STATS: while its fd is open, test runs add repeat to run_cnt
    and time to run_time_ns (both kernels); closed, nothing is counted."""
    import os
    insns = asm.assemble("r0 = 2\nexit")
    h = hostbpf.prog_load(insns, prog_type=ProgType.XDP)
    k = Kernel()
    fd = k.bpf(Cmd.PROG_LOAD, prog_type=ProgType.XDP, insns=insns, license="GPL")

    def info_host():
        i = abi.bpf_prog_info()
        a = abi.InfoAttr(bpf_fd=h.fd, info_len=ctypes.sizeof(i), info=ctypes.addressof(i))
        hostbpf.sys_bpf(Cmd.OBJ_GET_INFO_BY_FD, a)
        return i.run_cnt, i.run_time_ns

    def info_mine():
        i = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd)
        return i.run_cnt, i.run_time_ns

    attr = abi.bpf_attr()
    attr.map_type = 0                       # enable_stats.type = BPF_STATS_RUN_TIME
    host_stats = hostbpf.sys_bpf(Cmd.ENABLE_STATS, attr)
    my_stats = k.bpf(Cmd.ENABLE_STATS, type=0)
    h.test_run(bytes(64), 100)
    k.bpf(Cmd.PROG_TEST_RUN, prog_fd=fd, data_in=bytes(64), repeat=100)
    (hc, ht), (mc, mt) = info_host(), info_mine()
    assert hc == mc == 100 and ht > 0 and mt > 0
    os.close(host_stats)
    k.close(my_stats)
    h.test_run(bytes(64), 100)
    k.bpf(Cmd.PROG_TEST_RUN, prog_fd=fd, data_in=bytes(64), repeat=100)
    assert info_host()[0] == info_mine()[0] == 100
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.ENABLE_STATS, type=1)
    assert e.value.errno == errno.EINVAL


ETH = bytes.fromhex("020000000002020000000001")
SOCK_PACKETS = {
    "ip4": ETH + b"\x08\x00" + bytes.fromhex("4500002800010000400600000a0000010a000002")
    + bytes(20),
    "ip6": ETH + b"\x86\xdd" + bytes.fromhex("6000000000140640") + bytes(range(16))
    + bytes(range(100, 116)) + bytes(20),
    "arp": ETH + b"\x08\x06" + bytes(28),
}


@pytest.mark.parametrize("t", [ProgType.SCHED_CLS, ProgType.CGROUP_SKB])
@pytest.mark.parametrize("size", [1, 2, 4])
def test_skb_socket_fields_like_the_kernel(host, t, size):
    """__sk_buff.sk in a test run: the kernel's dummy socket (family and
    addresses from the packet, TCP_CLOSE, no queue), field by field; the
    fields sock_common lacks are refused by both."""
    from userbpf import Program
    from userbpf.errors import ProgramError
    for off in range(0, 80, size):
        src = (f"r2 = *(u64 *)(r1 + 168)\nr0 = 0\nif r2 == 0 goto +4\n"
               f"r0 = *(u{8 * size} *)(r2 + {off})\nr3 = r0\nr3 >>= 32\nr0 ^= r3\n")
        if t == ProgType.CGROUP_SKB:
            src += "r0 &= 1\n"      # cgroup skb programs return 0 or 1
        insns = asm.assemble(src + "exit")
        try:
            theirs = hostbpf.prog_load(insns, prog_type=t)
        except hostbpf.HostError:
            with pytest.raises(ProgramError):
                Program(insns, prog_type=t)
            continue
        mine = Program(insns, prog_type=t)
        for name, pkt in SOCK_PACKETS.items():
            want = theirs.test_run(pkt).retval
            assert mine.test_run(pkt).retval == want, (off, name)


IP4 = bytes.fromhex("4500002800010000400600000a0000010a000002") + bytes(20)
IP6 = bytes.fromhex("6000000000140640") + bytes(range(32)) + bytes(20)


def nf_state(hook, pf, rest=None):
    return struct.pack("<BB6x", hook, pf) + (rest if rest is not None else bytes(40))


@pytest.mark.parametrize("data, ctx", [
    (IP4, None), (IP4[:19], None), (IP4[:20], None), (bytes(3712), None), (bytes(3713), None),
    (IP4, nf_state(3, 2)), (IP6, nf_state(3, 10)), (IP4, nf_state(3, 7)),
    (bytes(12) + b"\x08\x00" + IP4, nf_state(0, 2)),
    (bytes(12) + b"\x08\x00" + IP4, nf_state(1, 10)),
    (bytes(12) + b"\x86\xdd" + IP6, nf_state(2, 10)),
    (bytes(12) + b"\x86\xdd" + IP6[:30], nf_state(4, 10)),
    (bytes(12) + b"\x08\x06" + bytes(28), nf_state(0, 2)),
    (bytes(12) + b"\x08\x00" + IP4[:10], nf_state(0, 2)),
    (IP4, nf_state(3, 2, bytes(8) + b"\1" + bytes(31))),
    (IP4, nf_state(3, 2) + b"\1"), (IP4, nf_state(5, 2)[:2]),
])
@pytest.mark.parametrize("src", ["r0 = 1\nexit",
                                 # state->hook and state->pf, one bit at a time
                                 "r2 = *(u64 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 0)\nr0 &= 1\nexit",
                                 "r2 = *(u64 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 1)\nr0 >>= 1\n"
                                 "r0 &= 1\nexit"])
def test_netfilter_like_the_kernel(host, data, ctx, src):
    insns = asm.assemble(src)
    h = hostbpf.prog_load(insns, prog_type=ProgType.NETFILTER,
                          expected_attach_type=AttachType.NETFILTER)
    try:
        r = h.test_run_full(data, 1, ctx, 0, ctx_size_out=0)
        want = (r.retval, r.data_out)
    except hostbpf.HostError as e:
        want = e.errno
    got = my_run(insns, ProgType.NETFILTER, AttachType.NETFILTER, data, ctx)
    assert (got if isinstance(want, int) else got[:2]) == want
