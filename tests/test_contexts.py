"""userbpf.contexts: the ctx structs and their access rules, exact values.

The kernel comparison over every offset and size is in test_contexts_kernel.py;
these tests pin representative answers and the layout without a kernel.
"""
from __future__ import annotations

import errno
import shutil
import subprocess

import pytest

from userbpf.contexts import (STRUCTS, CtxAccess, CtxAccessError, CtxPtr, check_ctx_access,
                              check_flow_keys_access, check_sock_access, ctx_fields_access, ctx_reg_type,
                              ctx_struct, may_access_direct_pkt_data, may_access_skb)
from userbpf.uapi import AttachType, ProgType

P = ProgType


def ok(pt, off, size, write=False, eat=0):
    return check_ctx_access(pt, eat, off, size, write)


def refused(pt, off, size, write=False, eat=0):
    with pytest.raises(CtxAccessError) as e:
        check_ctx_access(pt, eat, off, size, write)
    return str(e.value)


SKB_TYPES = [P.SOCKET_FILTER, P.SCHED_CLS, P.SCHED_ACT, P.CGROUP_SKB, P.LWT_IN, P.LWT_OUT,
             P.LWT_XMIT, P.LWT_SEG6LOCAL, P.SK_SKB, P.FLOW_DISSECTOR]


# --- layouts ---------------------------------------------------------------

@pytest.mark.parametrize("pt", SKB_TYPES)
def test_skb_types_see_sk_buff(pt):
    s = ctx_struct(pt)
    assert (s.name, s.size) == ("__sk_buff", 192)
    assert s.internal_size == 192 + 8 * len(CtxPtr)


def test_sk_buff_member_offsets():
    s = ctx_struct(P.SCHED_CLS)
    got = {f.name: (f.off, f.size) for f in s.fields}
    assert got["cb[0]"] == (48, 4) and got["cb[4]"] == (64, 4)
    assert got["data"] == (76, 4) and got["data_end"] == (80, 4)
    assert got["remote_ip6[3]"] == (112, 4) and got["local_port"] == (136, 4)
    assert got["data_meta"] == (140, 4) and got["flow_keys"] == (144, 8)
    assert got["tstamp"] == (152, 8) and got["sk"] == (168, 8)
    assert got["tstamp_type"] == (180, 1) and got["hwtstamp"] == (184, 8)
    assert s.field_at(181) is None          # padding after tstamp_type


def test_xdp_md_layout():
    s = ctx_struct(P.XDP)
    assert [(f.name, f.off) for f in s.fields] == [
        ("data", 0), ("data_end", 4), ("data_meta", 8), ("ingress_ifindex", 12),
        ("rx_queue_index", 16), ("egress_ifindex", 20)]
    assert s.size == 24 and s.slot(CtxPtr.PKT) == 24 and s.slot(CtxPtr.PKT_META) == 40


# Offsets of the 6.1 headers in /usr/include must agree (the members both
# know: 6.2 added bpf_sock_ops.skb_hwtstamp).
C_CHECK = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <asm/ptrace.h>
#define F(s, f) printf("%s %zu %zu\n", #f, offsetof(s, f), sizeof(((s *)0)->f));
int main(void) {
    BODY
    printf("sizeof %zu 0\n", sizeof(STRUCT));
    return 0;
}
"""
NEWER_THAN_HEADER = {"bpf_sock_ops": {"skb_hwtstamp"}}
# asm/ptrace.h names x86_64 registers the user-space way.
USER_PT_REGS = {"bp": "rbp", "bx": "rbx", "ax": "rax", "cx": "rcx", "dx": "rdx", "si": "rsi",
                "di": "rdi", "orig_ax": "orig_rax", "ip": "rip", "flags": "eflags", "sp": "rsp"}
HEADER_STRUCTS = ["__sk_buff", "xdp_md", "bpf_sock", "bpf_sock_addr", "bpf_sock_ops",
                  "sk_msg_md", "sk_reuseport_md", "bpf_sockopt", "bpf_sk_lookup",
                  "bpf_cgroup_dev_ctx", "bpf_sysctl", "bpf_flow_keys", "pt_regs",
                  "bpf_perf_event_data", "bpf_tcp_sock", "bpf_xdp_sock"]


def _compile_and_run(tmp_path, src_text):
    if not shutil.which("gcc"):
        pytest.skip("gcc is absent")
    src = tmp_path / "off.c"
    src.write_text(src_text)
    exe = tmp_path / "off"
    r = subprocess.run(["gcc", "-o", str(exe), str(src)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot compile against /usr/include/linux/bpf.h: {r.stderr[:300]}")
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", HEADER_STRUCTS)
def test_layout_matches_installed_header(name, tmp_path):
    s = STRUCTS[name]
    newer = NEWER_THAN_HEADER.get(name, set())
    fields = [f for f in s.fields if f.name not in newer]
    if name == "bpf_perf_event_data":      # members are "regs" then two u64s
        fields = [f for f in fields if f.name in ("sample_period", "addr")]
    c_name = {f.name: USER_PT_REGS.get(f.name, f.name) if name == "pt_regs" else f.name
              for f in fields}
    body = "\n    ".join(f"F(struct {name}, {c_name[f.name]})" for f in fields)
    out = _compile_and_run(tmp_path, C_CHECK.replace("BODY", body)
                           .replace("STRUCT", f"struct {name}"))
    got = {}
    for line in out.splitlines():
        member, off, size = line.split()
        got[member] = (int(off), int(size))
    assert {c_name[f.name]: (f.off, f.size) for f in fields} == {
        k: v for k, v in got.items() if k != "sizeof"}
    if not newer:
        assert got["sizeof"][0] == s.size


def test_every_prog_type_but_unspec_and_ext_has_a_context():
    for pt in ProgType:
        if pt in (P.UNSPEC, P.EXT):
            with pytest.raises(ValueError, match="no context known|target's program type"):
                ctx_struct(pt)
            continue
        s = ctx_struct(pt)
        assert s.internal_size == (s.size + 7) // 8 * 8 + 8 * len(CtxPtr)


# --- __sk_buff rules ---------------------------------------------------------

def test_skb_narrow_reads_of_scalar_fields():
    assert ok(P.SCHED_CLS, 0, 4) == CtxAccess(0, 4, None)            # len
    assert ok(P.SCHED_CLS, 3, 1) == CtxAccess(3, 1, None)            # top byte of len
    assert ok(P.SCHED_CLS, 10, 2) == CtxAccess(10, 2, None)          # high half of mark
    assert refused(P.SCHED_CLS, 0, 8) == "invalid bpf_context access off=0 size=8"
    assert refused(P.SCHED_CLS, 1, 2) == "invalid bpf_context access off=1 size=2"


def test_skb_packet_pointers_become_slot_loads():
    s = ctx_struct(P.SCHED_CLS)
    assert ok(P.SCHED_CLS, 76, 4) == CtxAccess(s.slot(CtxPtr.PKT), 8, CtxPtr.PKT)
    assert ok(P.SCHED_CLS, 80, 4) == CtxAccess(200, 8, CtxPtr.PKT_END)
    assert ok(P.SCHED_CLS, 140, 4) == CtxAccess(208, 8, CtxPtr.PKT_META)
    assert ok(P.SCHED_CLS, 168, 8) == CtxAccess(224, 8, CtxPtr.SOCK)     # sk
    refused(P.SCHED_CLS, 76, 2)            # no narrow pointer loads
    refused(P.SCHED_CLS, 172, 4)           # the upper half of sk
    refused(P.SCHED_CLS, 168, 8, write=True)


def test_cb_takes_any_aligned_size_and_socket_filter_writes_only_cb():
    assert ok(P.SOCKET_FILTER, 48, 8, write=True) == CtxAccess(48, 8, None)
    assert ok(P.SOCKET_FILTER, 66, 2, write=True) == CtxAccess(66, 2, None)
    refused(P.SOCKET_FILTER, 64, 8)                       # runs past cb[4]
    refused(P.SOCKET_FILTER, 8, 4, write=True)            # mark
    refused(P.SOCKET_FILTER, 76, 4)                       # no data for socket filters
    refused(P.SOCKET_FILTER, 152, 8)                      # nor tstamp


@pytest.mark.parametrize("pt,writable", [
    (P.SCHED_CLS, {"mark", "queue_mapping", "priority", "tc_index", "tc_classid", "tstamp"}),
    (P.SCHED_ACT, {"mark", "queue_mapping", "priority", "tc_index", "tc_classid", "tstamp"}),
    (P.CGROUP_SKB, {"mark", "priority", "tstamp"}),
    (P.LWT_IN, {"mark", "priority"}),
    (P.LWT_XMIT, {"mark", "priority"}),
    (P.SK_SKB, {"tc_index", "priority"}),
    (P.SOCKET_FILTER, set()),
    (P.FLOW_DISSECTOR, set()),
])
def test_writable_skb_fields(pt, writable):
    access = ctx_fields_access(pt)
    got = {name for name, (r, w) in access.items() if w and not name.startswith("cb[")}
    assert got == writable
    assert bool(access["cb[0]"][1]) == (pt not in (P.FLOW_DISSECTOR, P.SK_SKB))


def test_data_meta_only_for_tc():
    for pt in SKB_TYPES:
        allowed = pt in (P.SCHED_CLS, P.SCHED_ACT)
        assert ctx_fields_access(pt)["data_meta"][0] == ((4,) if allowed else ())


def test_tstamp_type_only_a_byte_read_in_tc():
    assert ok(P.SCHED_CLS, 180, 1) == CtxAccess(180, 1, None)
    refused(P.SCHED_CLS, 180, 1, write=True)
    refused(P.CGROUP_SKB, 180, 1)


def test_flow_dissector_sees_three_pointers():
    s = ctx_struct(P.FLOW_DISSECTOR)
    assert ok(P.FLOW_DISSECTOR, 144, 8) == CtxAccess(s.slot(CtxPtr.FLOW_KEYS), 8, CtxPtr.FLOW_KEYS)
    assert {n for n, (r, w) in ctx_fields_access(P.FLOW_DISSECTOR).items() if r} == {
        "data", "data_end", "flow_keys"}


def test_sk_skb_socket_fields():
    assert ok(P.SK_SKB, 89, 1) == CtxAccess(89, 1, None)     # family, narrow
    assert ok(P.SK_SKB, 90, 2) == CtxAccess(88, 4, None)     # a u16 load of a u16: all of it
    assert ok(P.SK_SKB, 92, 4) == CtxAccess(92, 4, None)     # remote_ip4, full only
    refused(P.SK_SKB, 92, 2)
    refused(P.SK_SKB, 8, 4)                                   # mark: not even readable
    refused(P.SCHED_CLS, 88, 4)                               # tc cannot read them


# --- xdp_md -----------------------------------------------------------------------

def test_xdp_only_full_reads_no_writes():
    assert ok(P.XDP, 4, 4) == CtxAccess(32, 8, CtxPtr.PKT_END)
    assert ok(P.XDP, 12, 4) == CtxAccess(12, 4, None)
    assert refused(P.XDP, 12, 2) == "invalid bpf_context access off=12 size=2"
    refused(P.XDP, 16, 4, write=True)
    refused(P.XDP, 24, 4)


def test_xdp_egress_ifindex_needs_devmap():
    refused(P.XDP, 20, 4, eat=AttachType.XDP_CPUMAP)
    assert ok(P.XDP, 20, 4, eat=AttachType.XDP_DEVMAP) == CtxAccess(20, 4, None)


# --- packet access tables -----------------------------------------------------------

def test_ld_abs_types():
    assert {pt for pt in ProgType if may_access_skb(pt)} == {
        P.SOCKET_FILTER, P.SCHED_CLS, P.SCHED_ACT}


def test_direct_packet_writes():
    writers = {pt for pt in ProgType if may_access_direct_pkt_data(pt, write=True)}
    assert writers == {P.SCHED_CLS, P.SCHED_ACT, P.XDP, P.LWT_XMIT, P.SK_SKB, P.SK_MSG,
                       P.CGROUP_SOCKOPT}
    readers = {pt for pt in ProgType if may_access_direct_pkt_data(pt)}
    assert readers - writers == {P.LWT_IN, P.LWT_OUT, P.LWT_SEG6LOCAL, P.SK_REUSEPORT,
                                 P.FLOW_DISSECTOR, P.CGROUP_SKB}


def test_unknown_type_is_a_value_error():
    with pytest.raises(ValueError, match="no context known for program type 0"):
        ctx_struct(P.UNSPEC)


# --- struct bpf_sock (CGROUP_SOCK) ----------------------------------------------------

def test_cgroup_sock_fields_per_attach_type():
    create, post4 = AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET4_POST_BIND
    post6 = AttachType.CGROUP_INET6_POST_BIND
    assert ok(P.CGROUP_SOCK, 16, 4, write=True, eat=create) == CtxAccess(16, 4, None)   # mark
    refused(P.CGROUP_SOCK, 16, 4, eat=post4)
    assert ok(P.CGROUP_SOCK, 26, 2, eat=post4) == CtxAccess(26, 2, None)    # src_ip4 high half
    refused(P.CGROUP_SOCK, 24, 4, eat=post6)
    refused(P.CGROUP_SOCK, 24, 4, write=True, eat=post4)                    # read only
    assert ok(P.CGROUP_SOCK, 40, 4, eat=post6) == CtxAccess(40, 4, None)    # src_ip6[3]
    refused(P.CGROUP_SOCK, 44, 4, eat=create)                               # src_port
    # family is matched by offset only: narrow reads must start at it
    assert ok(P.CGROUP_SOCK, 4, 1, eat=create) == CtxAccess(4, 1, None)
    refused(P.CGROUP_SOCK, 5, 1, eat=create)
    # dst_port: u16, or u32 including the padding; the padding alone is refused
    assert ok(P.CGROUP_SOCK, 48, 4, eat=create) == CtxAccess(48, 4, None)
    assert ok(P.CGROUP_SOCK, 49, 1, eat=create) == CtxAccess(49, 1, None)
    refused(P.CGROUP_SOCK, 50, 2, eat=create)


# --- struct bpf_sock_addr -------------------------------------------------------------

def test_sock_addr_address_fields_follow_the_attach_type():
    c4, c6 = AttachType.CGROUP_INET4_CONNECT, AttachType.CGROUP_INET6_CONNECT
    assert ok(P.CGROUP_SOCK_ADDR, 4, 4, write=True, eat=c4) == CtxAccess(4, 4, None)
    assert ok(P.CGROUP_SOCK_ADDR, 5, 1, eat=c4) == CtxAccess(5, 1, None)
    refused(P.CGROUP_SOCK_ADDR, 4, 4, eat=c6)
    assert ok(P.CGROUP_SOCK_ADDR, 16, 8, write=True, eat=c6) == CtxAccess(16, 8, None)
    refused(P.CGROUP_SOCK_ADDR, 8, 2, write=True, eat=c6)       # stores are u32 or u64
    refused(P.CGROUP_SOCK_ADDR, 40, 4, eat=c4)                  # msg_src_ip4: sendmsg only
    assert ok(P.CGROUP_SOCK_ADDR, 40, 4, eat=AttachType.CGROUP_UDP4_SENDMSG).ptr is None
    assert ok(P.CGROUP_SOCK_ADDR, 48, 8, eat=AttachType.CGROUP_UDP6_SENDMSG).size == 8
    refused(P.CGROUP_SOCK_ADDR, 28, 2, eat=c4)                  # family: u32 only
    refused(P.CGROUP_SOCK_ADDR, 28, 4, write=True, eat=c4)
    s = ctx_struct(P.CGROUP_SOCK_ADDR)
    assert ok(P.CGROUP_SOCK_ADDR, 64, 8, eat=AttachType.CGROUP_UNIX_CONNECT) == CtxAccess(
        s.slot(CtxPtr.SOCK), 8, CtxPtr.SOCK)
    assert ctx_reg_type(P.CGROUP_SOCK_ADDR, c4, 64, 8) == "sock"


# --- struct bpf_sock_ops ----------------------------------------------------------------

def test_sock_ops_rules():
    eat = AttachType.CGROUP_SOCK_OPS
    assert ok(P.SOCK_OPS, 4, 4, write=True, eat=eat) == CtxAccess(4, 4, None)     # reply
    refused(P.SOCK_OPS, 8, 4, write=True, eat=eat)                                # replylong[1]
    assert ok(P.SOCK_OPS, 164, 4, write=True, eat=eat) == CtxAccess(164, 4, None)  # sk_txhash
    assert ok(P.SOCK_OPS, 168, 8, eat=eat) == CtxAccess(168, 8, None)     # bytes_received
    refused(P.SOCK_OPS, 168, 4, eat=eat)
    refused(P.SOCK_OPS, 20, 2, eat=eat)                                   # family: u32 only
    assert ok(P.SOCK_OPS, 212, 1, eat=eat) == CtxAccess(212, 1, None)     # skb_tcp_flags
    refused(P.SOCK_OPS, 213, 1, eat=eat)
    s = ctx_struct(P.SOCK_OPS)
    assert ok(P.SOCK_OPS, 192, 8, eat=eat) == CtxAccess(s.slot(CtxPtr.PKT), 8, CtxPtr.PKT)
    assert ctx_reg_type(P.SOCK_OPS, eat, 184, 8) == "sock_or_null"


# --- sk_msg_md, sk_reuseport_md, bpf_sockopt, bpf_sk_lookup ---------------------------

def test_sk_msg_pointers_are_u64_and_nothing_is_writable():
    s = ctx_struct(P.SK_MSG)
    assert ok(P.SK_MSG, 8, 8) == CtxAccess(s.slot(CtxPtr.PKT_END), 8, CtxPtr.PKT_END)
    refused(P.SK_MSG, 8, 4)
    assert ok(P.SK_MSG, 68, 4) == CtxAccess(68, 4, None)                  # size
    refused(P.SK_MSG, 68, 2)
    assert all(not w for r, w in ctx_fields_access(P.SK_MSG).values())


def test_sk_reuseport_rules():
    eat = AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE
    s = ctx_struct(P.SK_REUSEPORT, eat)
    assert ok(P.SK_REUSEPORT, 48, 8, eat=eat) == CtxAccess(s.slot(CtxPtr.SOCK2), 8, CtxPtr.SOCK2)
    assert ok(P.SK_REUSEPORT, 22, 2, eat=eat) == CtxAccess(20, 4, None)   # eth_protocol, whole
    refused(P.SK_REUSEPORT, 20, 1, eat=eat)                               # at least a u16
    assert ok(P.SK_REUSEPORT, 25, 1, eat=eat) == CtxAccess(24, 4, None)   # ip_protocol, a u8
    refused(P.SK_REUSEPORT, 32, 2, eat=eat)                               # hash: u32 only


def test_sockopt_rules_per_attach_type():
    get, set_ = AttachType.CGROUP_GETSOCKOPT, AttachType.CGROUP_SETSOCKOPT
    s = ctx_struct(P.CGROUP_SOCKOPT, get)
    assert ok(P.CGROUP_SOCKOPT, 8, 8, eat=get) == CtxAccess(s.slot(CtxPtr.OPTVAL), 8, CtxPtr.OPTVAL)
    assert ok(P.CGROUP_SOCKOPT, 16, 8, eat=set_).ptr == CtxPtr.OPTVAL_END
    assert ok(P.CGROUP_SOCKOPT, 36, 4, write=True, eat=get) == CtxAccess(36, 4, None)   # retval
    refused(P.CGROUP_SOCKOPT, 36, 4, eat=set_)
    assert ok(P.CGROUP_SOCKOPT, 24, 4, write=True, eat=set_) == CtxAccess(24, 4, None)  # level
    refused(P.CGROUP_SOCKOPT, 24, 4, write=True, eat=get)
    assert ok(P.CGROUP_SOCKOPT, 32, 4, write=True, eat=get) == CtxAccess(32, 4, None)   # optlen


def test_sk_lookup_remote_port_and_padding():
    eat = AttachType.SK_LOOKUP
    assert ok(P.SK_LOOKUP, 36, 4, eat=eat) == CtxAccess(36, 4, None)
    assert ok(P.SK_LOOKUP, 37, 1, eat=eat) == CtxAccess(37, 1, None)
    assert ok(P.SK_LOOKUP, 38, 2, eat=eat) == CtxAccess(38, 2, None)      # zero padding
    refused(P.SK_LOOKUP, 38, 4, eat=eat)
    assert ctx_reg_type(P.SK_LOOKUP, eat, 0, 8) == "sock_or_null"
    refused(P.SK_LOOKUP, 8, 4, write=True, eat=eat)


# --- tracing types ------------------------------------------------------------------------

def test_tracing_contexts():
    assert ok(P.KPROBE, 3, 1) == CtxAccess(3, 1, None)                    # any aligned size
    refused(P.KPROBE, 164, 8)
    refused(P.KPROBE, 0, 8, write=True)
    assert ok(P.PERF_EVENT, 160, 8) == CtxAccess(160, 8, None)            # regs: u64 only
    refused(P.PERF_EVENT, 160, 4)
    assert ok(P.PERF_EVENT, 172, 4) == CtxAccess(172, 4, None)            # sample_period, narrow
    refused(P.TRACEPOINT, 4, 4)                                           # common fields
    assert ok(P.TRACEPOINT, -8, 8) == CtxAccess(-8, 8, None)              # the kernel's quirk
    refused(P.TRACEPOINT, -4, 8)
    assert ok(P.TRACEPOINT, 8188, 4) == CtxAccess(8188, 4, None)
    refused(P.TRACEPOINT, 8192, 1)
    assert ok(P.RAW_TRACEPOINT, 90, 2) == CtxAccess(90, 2, None)
    refused(P.RAW_TRACEPOINT, 96, 1)
    s = ctx_struct(P.RAW_TRACEPOINT_WRITABLE)
    assert ok(P.RAW_TRACEPOINT_WRITABLE, 0, 8) == CtxAccess(s.slot(CtxPtr.TP_BUFFER), 8,
                                                            CtxPtr.TP_BUFFER)
    refused(P.RAW_TRACEPOINT_WRITABLE, 0, 4)


def test_netfilter_syscall_lirc():
    eat = AttachType.NETFILTER
    assert ok(P.NETFILTER, 8, 8, eat=eat).ptr == CtxPtr.NF_SKB
    assert ctx_reg_type(P.NETFILTER, eat, 0, 8) == "trusted_ptr_nf_hook_state"
    refused(P.NETFILTER, 4, 8, eat=eat)
    assert ok(P.SYSCALL, 65528, 4, write=True) == CtxAccess(65528, 4, None)
    assert ok(P.SYSCALL, 65534, 2) == CtxAccess(65534, 2, None)   # only the start is checked
    refused(P.SYSCALL, 65535, 1)
    refused(P.SYSCALL, 65530, 4)                                  # unaligned
    assert ok(P.LIRC_MODE2, 0, 4, eat=AttachType.LIRC_MODE2) == CtxAccess(0, 4, None)
    refused(P.LIRC_MODE2, 0, 2, eat=AttachType.LIRC_MODE2)


def test_sign_extending_loads_of_pointers_are_refused():
    assert check_ctx_access(P.SCHED_CLS, 0, 0, 2, False, sign_extend=True) == CtxAccess(0, 2, None)
    with pytest.raises(CtxAccessError, match="off=76 size=4"):
        check_ctx_access(P.SCHED_CLS, 0, 76, 4, False, sign_extend=True)


def test_flow_keys_bounds():
    check_flow_keys_access(55, 1)
    check_flow_keys_access(1, 8)              # unaligned is fine
    with pytest.raises(CtxAccessError, match="invalid access to flow keys off=-1 size=1"):
        check_flow_keys_access(-1, 1)
    with pytest.raises(CtxAccessError):
        check_flow_keys_access(55, 2)


def test_btf_typed_arguments():
    fexit, fentry = AttachType.TRACE_FEXIT, AttachType.TRACE_FENTRY
    assert check_ctx_access(P.TRACING, fentry, 8, 4, False) == CtxAccess(8, 4, None)
    with pytest.raises(CtxAccessError, match="off=12 size=4"):      # not an argument's start
        check_ctx_access(P.TRACING, fentry, 12, 4, False)
    with pytest.raises(CtxAccessError):
        check_ctx_access(P.LSM, AttachType.LSM_MAC, 0, 8, True)
    # two arguments: fentry sees slots 0-1, fexit also the return value in slot 2
    assert check_ctx_access(P.TRACING, fexit, 16, 8, False, nr_args=2) == CtxAccess(16, 8, None)
    with pytest.raises(CtxAccessError, match="off=16 size=8"):
        check_ctx_access(P.TRACING, fentry, 16, 8, False, nr_args=2)
    with pytest.raises(CtxAccessError):
        check_ctx_access(P.TRACING, fentry, 96, 8, False)


# --- internal contexts ------------------------------------------------------------------

def test_pack_puts_fields_in_place_and_pointers_in_slots():
    import sys
    s = ctx_struct(P.SCHED_CLS)
    uapi = bytes(range(8)) + bytes(s.size - 8)
    buf = s.pack(uapi, ptrs={CtxPtr.PKT: 0x1122334455667788, CtxPtr.SOCK: 7},
                 mark=0xAABBCCDD, **{"cb[4]": -1})
    assert len(buf) == s.internal_size == 280
    assert buf[:4] == bytes(range(4))
    assert buf[8:12] == (0xAABBCCDD).to_bytes(4, sys.byteorder)
    assert s.get(buf, "cb[4]") == 0xFFFFFFFF
    assert buf[192:200] == (0x1122334455667788).to_bytes(8, sys.byteorder)
    assert s.get_ptr(buf, CtxPtr.SOCK) == 7 and s.get_ptr(buf, CtxPtr.PKT_END) == 0
    assert bytes(s.uapi(buf)) == bytes(buf[:192])
    # a permitted load reads exactly what pack stored
    acc = check_ctx_access(P.SCHED_CLS, 0, 76, 4, False)
    assert int.from_bytes(buf[acc.off:acc.off + acc.size], sys.byteorder) == 0x1122334455667788
    with pytest.raises(ValueError):
        s.pack(bytes(193))
    with pytest.raises(KeyError):
        s.pack(nonsense=1)


def test_socket_pointer_accesses():
    assert check_sock_access("sock", 16, 4) == CtxAccess(16, 4, None)          # mark
    assert check_sock_access("sock", 8, 1) == CtxAccess(8, 1, None)            # type
    with pytest.raises(CtxAccessError, match="R1 invalid sock access off=9 size=1"):
        check_sock_access("sock", 9, 1)
    with pytest.raises(CtxAccessError, match="R3 cannot write into sock_common"):
        check_sock_access("sock_common", 16, 4, write=True, regno=3)
    with pytest.raises(CtxAccessError) as e:
        check_sock_access("tcp_sock", 80, 4)
    assert e.value.errno == errno.EACCES
    with pytest.raises(CtxAccessError, match="verifier bug") as e:
        check_sock_access("tcp_sock", 84, 4)          # the kernel's EFAULT path
    assert e.value.errno == errno.EFAULT
    assert check_sock_access("xdp_sock", 0, 4) == CtxAccess(0, 4, None)
    with pytest.raises(CtxAccessError):
        check_sock_access("xdp_sock", 0, 2)
    with pytest.raises(ValueError):
        check_sock_access("udp_sock", 0, 4)


def test_stores_to_16_bit_kernel_fields_store_16_bits():
    assert ok(P.SCHED_CLS, 44, 4, write=True) == CtxAccess(44, 2, None)    # tc_index
    assert ok(P.SCHED_CLS, 72, 4, write=True) == CtxAccess(72, 2, None)    # tc_classid
    assert ok(P.SCHED_CLS, 12, 4, write=True) == CtxAccess(12, 2, None)    # queue_mapping
    assert ok(P.SCHED_CLS, 8, 4, write=True) == CtxAccess(8, 4, None)      # mark
    assert ok(P.SK_SKB, 44, 4, write=True) == CtxAccess(44, 2, None)
