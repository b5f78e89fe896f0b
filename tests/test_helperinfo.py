"""userbpf.helperinfo: the helper table, checked on its own and against the
live kernel's verifier (which helper each program type may call, GPL-only
flags, the refusal messages and their order, the prototypes' pointer args)."""
from __future__ import annotations

import ctypes
import functools
import os
import random
import re
import struct
from typing import Optional

import pytest

from userbpf import helperinfo as h
from userbpf import abi, isa, program
from userbpf.uapi import AttachType as A
from userbpf.uapi import Cmd, Func
from userbpf.uapi import ProgType as P

# --- the table on its own ------------------------------------------------------


def test_every_implemented_helper_has_a_prototype():
    missing = sorted(set(program.default_helpers()) - set(h.PROTOS))
    assert missing == []


def test_every_prototype_is_of_a_helper_some_probed_type_allows():
    probed = [t for t in P if t not in h.NOT_PROBED and t != P.UNSPEC]
    for fid in h.PROTOS:
        assert any(h.helper_allowed(t, fid) for t in probed), Func(fid).name


def test_every_prog_type_has_a_row():
    assert set(h.ALLOWED) == set(P)
    assert set(h.NOT_PROBED) <= set(h.ALLOWED)


def test_proto_names_and_rendering():
    p = h.PROTOS[Func.map_update_elem]
    assert p.name == "bpf_map_update_elem"
    assert p.arg(1) == h.ARG_CONST_MAP_PTR and p.arg(4) == h.ARG_ANYTHING
    assert p.arg(5) == h.ARG_DONTCARE
    assert str(h.PROTOS[Func.ktime_get_ns]) == "RET_INTEGER bpf_ktime_get_ns(void)"
    assert str(h.PROTOS[Func.ringbuf_submit]) == (
        "RET_VOID bpf_ringbuf_submit(ARG_PTR_TO_RINGBUF_MEM|OBJ_RELEASE, ARG_ANYTHING)")
    assert h.PROTOS[Func.strtol].arg_size == ((4, 8),)
    assert h.type_flags(h.PROTOS[Func.map_pop_elem].arg(2)) == h.MEM_UNINIT | h.MEM_WRITE


def test_type_split_and_names():
    t = h.ARG_PTR_TO_MEM | h.PTR_MAYBE_NULL | h.MEM_RDONLY
    assert h.base_type(t) == h.ARG_PTR_TO_MEM
    assert h.type_flags(t) == h.PTR_MAYBE_NULL | h.MEM_RDONLY
    assert h.type_name(t) == "ARG_PTR_TO_MEM_OR_NULL|MEM_RDONLY"
    assert h.type_name(h.ARG_ANYTHING) == "ARG_ANYTHING"
    assert h.type_name(h.RET_PTR_TO_MAP_VALUE_OR_NULL, ret=True) == "RET_PTR_TO_MAP_VALUE_OR_NULL"
    # every flag sits above the base-type bits, every base type below
    assert all(f.value >> h.BPF_BASE_TYPE_BITS for f in h.TypeFlag)
    assert max(h.ArgType) < 1 << h.BPF_BASE_TYPE_BITS


def test_helper_names_as_the_log_prints_them():
    assert h.helper_name(Func.tail_call) == "bpf_tail_call"
    assert h.helper_name(0) == "bpf_unspec"
    assert h.helper_name(h.MAX_HELPER_ID + 1) == "unknown"
    assert h.helper_info(Func.snprintf).gpl_only is True
    assert h.helper_info(Func.map_lookup_elem).gpl_only is False
    with pytest.raises(ValueError, match="invalid func unknown#212"):
        h.helper_info(212)


def test_check_order_is_the_kernels():
    # a GPL-only helper the type does not get: "cannot use" wins over GPL
    assert Func.xdp_output in h.GPL_ONLY
    assert h.check_helper_call(P.SOCKET_FILTER, Func.xdp_output, False) == (
        "program of this type cannot use helper bpf_xdp_output#121")
    # GPL refusal before userbpf's own "not implemented"
    assert h.check_helper_call(P.XDP, Func.fib_lookup, False, implemented=()) == (
        "cannot call GPL-restricted function from non-GPL compatible program")
    assert h.check_helper_call(P.XDP, Func.fib_lookup, True, implemented=()) == (
        "helper bpf_fib_lookup#69 is not implemented by userbpf")
    assert h.check_helper_call(P.XDP, Func.fib_lookup, True) is None
    assert h.check_helper_call(P.XDP, -5, True) == "invalid func unknown#-5"
    assert h.check_helper_call(P.XDP, 0, True) == (
        "program of this type cannot use helper bpf_unspec#0")


def test_implemented_helpers_pass_where_allowed():
    impl = program.default_helpers()
    assert h.check_helper_call(P.SOCKET_FILTER, Func.map_lookup_elem, False, impl) is None
    assert h.check_helper_call(P.KPROBE, Func.probe_read, True, impl) is None


def test_attach_type_rules():
    assert not h.helper_allowed(P.CGROUP_SOCKOPT, Func.setsockopt)
    assert h.helper_allowed(P.CGROUP_SOCKOPT, Func.setsockopt, A.CGROUP_SETSOCKOPT)
    assert h.helper_allowed(P.CGROUP_SOCK_ADDR, Func.get_retval, A.CGROUP_INET4_CONNECT)
    assert not h.helper_allowed(P.CGROUP_SOCK_ADDR, Func.get_retval, A.CGROUP_UDP4_RECVMSG)
    # attach type 0 is CGROUP_INET_INGRESS: no return value to get
    assert not h.helper_allowed(P.CGROUP_DEVICE, Func.get_retval, 0)
    assert h.helper_allowed(P.CGROUP_DEVICE, Func.get_retval)      # DEFAULT_ATTACH
    assert h.is_gpl_only(P.KPROBE, Func.get_func_ip)
    assert not h.is_gpl_only(P.KPROBE, Func.get_func_ip, A.TRACE_KPROBE_MULTI)


# --- the live kernel -------------------------------------------------------------

BTF_KIND_STRUCT, BTF_KIND_TYPEDEF, BTF_KIND_FUNC = 4, 8, 12
# bytes after each 12-byte btf_type: (fixed, per vlen item), by kind
_BTF_TRAILER = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8),
                14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}


@functools.lru_cache(maxsize=None)
def vmlinux_btf_ids() -> dict:
    """(kind, name) -> type id of the running kernel's BTF (the first of a name)."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    magic, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", data)
    assert magic == 0xEB9F
    types, strings = hdr_len + type_off, hdr_len + str_off
    ids, pos, type_id = {}, types, 1
    while pos < types + type_len:
        name_off, info, _ = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if name_off:
            name = data[strings + name_off:data.index(b"\0", strings + name_off)].decode()
            ids.setdefault((kind, name), type_id)
        fixed, per_item = _BTF_TRAILER.get(kind, (0, 0))
        pos += 12 + fixed + per_item * vlen
        type_id += 1
    return ids


def btf_target(kind: int, name: str) -> int:
    type_id = vmlinux_btf_ids().get((kind, name))
    if type_id is None:
        pytest.skip(f"no {name} in this kernel's BTF")
    return type_id


def load_log(host, code, prog_type, eat=0, flags=0, btf_id=0, license="GPL") -> Optional[str]:
    """PROG_LOAD with a verifier log: None if it loaded, else the log."""
    raw = isa.encode(code)
    insns = ctypes.create_string_buffer(raw, len(raw))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(1 << 16)
    attr = abi.ProgLoadAttr(prog_type=prog_type, insn_cnt=len(raw) // 8,
                            insns=ctypes.addressof(insns), license=ctypes.addressof(lic),
                            log_level=1, log_size=len(log), log_buf=ctypes.addressof(log),
                            expected_attach_type=eat, attach_btf_id=btf_id, prog_flags=flags)
    try:
        os.close(host.sys_bpf(Cmd.PROG_LOAD, attr))
        return None
    except host.HostError as e:
        return log.value.decode(errors="replace") or f"errno {e.errno}"


# (prog_type, expected_attach_type, prog_flags) loads the probe tries: every
# probeable type, with each attach type that can change its helpers.
SLEEPABLE = 1 << 4                                    # BPF_F_SLEEPABLE
_ATTACH = {
    P.KPROBE: [0, A.TRACE_KPROBE_MULTI, A.TRACE_UPROBE_MULTI, A.TRACE_KPROBE_SESSION,
               A.TRACE_UPROBE_SESSION],
    P.SCHED_CLS: [0, A.TCX_INGRESS, A.TCX_EGRESS],
    P.XDP: [0, A.XDP_DEVMAP, A.XDP_CPUMAP],
    P.CGROUP_SKB: [A.CGROUP_INET_INGRESS, A.CGROUP_INET_EGRESS],
    P.CGROUP_SOCK: [A.CGROUP_INET_SOCK_CREATE, A.CGROUP_INET4_POST_BIND,
                    A.CGROUP_INET6_POST_BIND, A.CGROUP_INET_SOCK_RELEASE],
    P.SK_SKB: [0, A.SK_SKB_STREAM_PARSER, A.SK_SKB_STREAM_VERDICT, A.SK_SKB_VERDICT],
    P.SK_MSG: [0, A.SK_MSG_VERDICT],
    P.CGROUP_SOCK_ADDR: [a for a in A if a.name.startswith(
        ("CGROUP_INET4_", "CGROUP_INET6_", "CGROUP_UDP", "CGROUP_UNIX"))
        and "POST_BIND" not in a.name],
    P.SK_REUSEPORT: [A.SK_REUSEPORT_SELECT, A.SK_REUSEPORT_SELECT_OR_MIGRATE],
    P.FLOW_DISSECTOR: [0, A.FLOW_DISSECTOR],
    P.CGROUP_SOCKOPT: [A.CGROUP_GETSOCKOPT, A.CGROUP_SETSOCKOPT],
    P.SK_LOOKUP: [A.SK_LOOKUP],
    P.NETFILTER: [A.NETFILTER],
    P.CGROUP_DEVICE: [0, A.CGROUP_DEVICE],
    P.CGROUP_SYSCTL: [0, A.CGROUP_SYSCTL],
    P.SOCK_OPS: [0, A.CGROUP_SOCK_OPS],
}
# BTF-typed loads: attach type -> (BTF kind, name) of the attach target
BTF_TARGETS = {A.TRACE_RAW_TP: (BTF_KIND_TYPEDEF, "btf_trace_sched_switch"),
               A.TRACE_ITER: (BTF_KIND_FUNC, "bpf_iter_task")}
_ATTACH[P.TRACING] = list(BTF_TARGETS)
VARIANTS = [(t, int(a), SLEEPABLE if t == P.SYSCALL else 0)
            for t in P if t not in h.NOT_PROBED and t != P.UNSPEC
            for a in _ATTACH.get(t, [0])]
IDS = list(range(-1, h.MAX_HELPER_ID + 4))
CALL_REFUSALS = ("invalid func ", "program of this type cannot use helper ",
                 "cannot call GPL-restricted function")


def _call_prog(func_id: int):
    return [isa.BPF_MOV64_IMM(r, 0) for r in range(1, 6)] + [
        isa.BPF_EMIT_CALL(func_id), isa.BPF_EXIT_INSN()]


def kernel_verdict(host, prog_type, eat, flags, func_id, gpl) -> Optional[str]:
    """The kernel's refusal of the call itself, or None when it accepted the call
    (the program may still be refused later, e.g. for its r1 = 0 argument)."""
    btf_id = btf_target(*BTF_TARGETS[eat]) if prog_type == P.TRACING else 0
    log = load_log(host, _call_prog(func_id), prog_type, eat, flags, btf_id,
                   "GPL" if gpl else "Proprietary")
    if log is None:
        return None
    lines = log.splitlines()
    at = [i for i, line in enumerate(lines) if re.match(r"^5: \(85\) call ", line)]
    assert at, f"the load failed before reaching the call:\n{log}"
    after = lines[at[0] + 1]
    return after if after.startswith(CALL_REFUSALS) else None


def _compare(host, cells):
    wrong = []
    for prog_type, eat, flags, fid, gpl in cells:
        kernel = kernel_verdict(host, prog_type, eat, flags, fid, gpl)
        ours = h.check_helper_call(prog_type, fid, gpl, expected_attach_type=eat)
        if kernel != ours:
            wrong.append((P(prog_type).name, eat, fid, gpl, kernel, ours))
    assert wrong == []
    return len(cells)


def _sample(n: int, seed: int):
    rnd = random.Random(seed)
    return [(*rnd.choice(VARIANTS), rnd.choice(IDS), rnd.random() < 0.25) for _ in range(n)]


# cells where a rule of the table is decided: attach-type rules, GPL exceptions
EDGE_CELLS = [
    (P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, 0, Func.bind, False),
    (P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND, 0, Func.bind, False),
    (P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME, 0, Func.set_retval, False),
    (P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT, 0, Func.getsockopt, False),
    (P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT, 0, Func.getsockopt, False),
    (P.CGROUP_DEVICE, 0, 0, Func.get_retval, False),
    (P.CGROUP_DEVICE, A.CGROUP_DEVICE, 0, Func.get_retval, False),
    (P.PERF_EVENT, 0, 0, Func.get_stackid, False),
    (P.TRACEPOINT, 0, 0, Func.get_stackid, False),
    (P.KPROBE, A.TRACE_UPROBE_MULTI, 0, Func.get_func_ip, False),
    (P.KPROBE, 0, 0, Func.get_func_ip, False),
    (P.XDP, 0, 0, Func.fib_lookup, True),
    (P.XDP, 0, 0, Func.fib_lookup, False),
    (P.SOCKET_FILTER, 0, 0, 0, False),
    (P.SOCKET_FILTER, 0, 0, h.MAX_HELPER_ID + 1, False),
    (P.SOCKET_FILTER, 0, 0, -1, False),
    (P.TRACING, A.TRACE_ITER, 0, Func.seq_printf_btf, False),
    (P.TRACING, A.TRACE_ITER, 0, Func.get_attach_cookie, False),
    (P.TRACING, A.TRACE_RAW_TP, 0, Func.get_attach_cookie, False),
]


@pytest.mark.kernel
def test_kernel_agrees_on_edge_cells(host):
    assert _compare(host, EDGE_CELLS) == len(EDGE_CELLS)


@pytest.mark.kernel
def test_kernel_agrees_on_a_sample(host):
    seed = int(os.environ.get("USERBPF_SEED", "20261126"))
    assert _compare(host, _sample(600, seed)) == 600


@pytest.mark.kernel
@pytest.mark.slow
def test_kernel_agrees_on_every_cell(host):
    cells = [(*v, fid, gpl) for v in VARIANTS for fid in IDS for gpl in (False, True)]
    assert _compare(host, cells) == len(VARIANTS) * len(IDS) * 2


# What the probe leaves out, and the load that shows why: (type, attach type,
# BTF target or None).
NOT_PROBED_LOADS = [(t, h.DEFAULT_ATTACH.get(t, 0), None) for t in sorted(h.NOT_PROBED)] + [
    (P.LSM, A.LSM_MAC, (BTF_KIND_FUNC, "bpf_lsm_file_open")),
    (P.STRUCT_OPS, 0, (BTF_KIND_STRUCT, "tcp_congestion_ops")),        # member 0
    *((P.TRACING, a, (BTF_KIND_FUNC, "bpf_modify_return_test" if a == A.MODIFY_RETURN
                      else "bpf_fentry_test1")) for _, a in sorted(h.NOT_PROBED_ATTACH)),
]


# How this kernel refuses the not-probed loads before verifying anything:
# LIRC_MODE2 is not built in (EINVAL); EXT needs a target program, LSM and the
# fentry family a BTF target this loader cannot satisfy (EPERM, empty log);
# struct_ops without a target type verifies nothing.
REFUSED_BEFORE_VERIFYING = {P.LIRC_MODE2: "errno 22", P.EXT: "errno 1", P.LSM: "errno 1",
                            P.TRACING: "errno 1", P.STRUCT_OPS: "processed 0 insns"}


@pytest.mark.kernel
@pytest.mark.parametrize("prog_type, eat, target", NOT_PROBED_LOADS,
                         ids=lambda v: getattr(v, "name", None) or str(v))
def test_not_probed_rules_are_conservative(host, prog_type, eat, target):
    """Either the kernel refuses these loads before verifying an instruction
    (why they are not probed here), or it gives every helper our
    conservative rule allows."""
    btf_id = btf_target(*target) if target else 0
    log = load_log(host, _call_prog(Func.ktime_get_ns), prog_type, eat, 0, btf_id)
    if log is not None and " call " not in log:
        # refused before verifying: which refusal is pinned per type
        assert log.startswith(REFUSED_BEFORE_VERIFYING[prog_type]), log
        return
    for fid in sorted(h.allowed_helpers(prog_type, eat)):
        log = load_log(host, _call_prog(fid), prog_type, eat, 0, btf_id)
        assert log is None or "cannot use helper" not in log, Func(fid).name


# The start of the kernel's "R<n> type=scalar expected=..." text for the base
# type of the first argument that refuses a scalar 0.
EXPECTED_TEXT = {
    h.ARG_CONST_MAP_PTR: "map_ptr",
    h.ARG_PTR_TO_CTX: "ctx",
    h.ARG_PTR_TO_MEM: "fp, pkt, pkt_meta, map_key, map_value, mem",
    h.ARG_PTR_TO_SPIN_LOCK: "map_value",
    h.ARG_PTR_TO_FUNC: "func",
    h.ARG_PTR_TO_CONST_STR: "map_value",
}
TAKES_SCALAR_ZERO = {h.ARG_DONTCARE, h.ARG_ANYTHING, h.ARG_CONST_SIZE_OR_ZERO,
                     h.ARG_CONST_ALLOC_SIZE_OR_ZERO, h.ARG_CONST_SIZE}


def _first_refusing_arg(proto: h.Proto):
    for regno, t in enumerate(proto.args, 1):
        if h.base_type(t) in TAKES_SCALAR_ZERO or h.PTR_MAYBE_NULL in h.type_flags(t):
            continue
        return regno, t
    return None


@pytest.mark.kernel
@pytest.mark.parametrize("fid", sorted(h.PROTOS), ids=lambda f: Func(f).name)
def test_prototype_pointer_args_match_the_kernel(host, fid):
    """Call with r1..r5 = 0: the kernel complains about the first argument our
    prototype says must be a (non-NULL) pointer, naming its kind."""
    prog_type = next(t for t in (P.SCHED_CLS, P.XDP, P.KPROBE, P.SOCKET_FILTER)
                     if h.helper_allowed(t, fid))
    proto = h.proto_for(prog_type, fid)
    try:
        host.prog_load(_call_prog(fid), prog_type, log_level=1).close()
        complaint = None
    except host.HostError as e:
        m = re.search(r"^R(\d) type=scalar expected=(.*)$", e.log, re.M)
        complaint = (int(m.group(1)), m.group(2)) if m else None
    first = _first_refusing_arg(proto)
    if first is None:
        assert complaint is None
    else:
        regno, t = first
        assert complaint is not None and complaint[0] == regno
        if h.base_type(t) == h.ARG_PTR_TO_MEM and h.MEM_RINGBUF in h.type_flags(t):
            assert complaint[1] == "ringbuf_mem"
        else:
            assert complaint[1].startswith(EXPECTED_TEXT[h.base_type(t)])
