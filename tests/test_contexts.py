"""userbpf.contexts: the ctx structs and their access rules, exact values.

The kernel comparison over every offset and size is in test_contexts_kernel.py;
these tests pin representative answers and the layout without a kernel.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from userbpf.contexts import (CtxAccess, CtxAccessError, CtxPtr, check_ctx_access,
                              ctx_fields_access, ctx_struct, may_access_direct_pkt_data,
                              may_access_skb)
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


# Offsets of the 6.1 header in /usr/include must agree (the members both know).
C_CHECK = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#define F(s, f) printf("%s %s %zu %zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f));
int main(void) {
%s
    return 0;
}
"""


def _c_member(name):
    return name.replace("[", "[").replace("]", "]")


@pytest.mark.parametrize("pt", [P.SCHED_CLS, P.XDP])
def test_layout_matches_installed_header(pt, tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc is absent")
    s = ctx_struct(pt)
    lines = "\n".join(f"F({s.name}, {f.name})" for f in s.fields)
    src = tmp_path / "off.c"
    src.write_text(C_CHECK.replace("%s\n    return", lines + "\n    return", 1))
    exe = tmp_path / "off"
    r = subprocess.run(["gcc", "-o", str(exe), str(src)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot compile against /usr/include/linux/bpf.h: {r.stderr[:200]}")
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = {}
    for line in out.splitlines():
        _, member, off, size = line.split()
        got[member] = (int(off), int(size))
    assert got == {f.name: (f.off, f.size) for f in s.fields}


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
    assert ok(P.SK_SKB, 88, 2) == CtxAccess(88, 2, None)     # family, narrow
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
    with pytest.raises(ValueError):
        ctx_struct(P.UNSPEC)
