"""userbpf.contexts against the live kernel's verifier.

For each program type (and each expected_attach_type that changes its
rules), every ctx offset 0 .. sizeof+8 at sizes 1/2/4/8 is loaded
(``r0 = *(uN *)(r1 + off)``) and stored (``*(uN *)(r1 + off) = r2``) by the
real kernel, and its accept/reject must match check_ctx_access.  A rejection
only counts as a ctx rejection when the log says so; anything else fails the
test (it would mean the probe program is wrong, not the table).

Types the kernel cannot load without BTF (TRACING, LSM, STRUCT_OPS, EXT) and
types not configured in this kernel (LIRC_MODE2) are not compared.

The whole grid (about 44,000 loads) takes about 5 s, so it is not marked slow.
"""
from __future__ import annotations

import errno
import random
from typing import List, Tuple

import pytest

from userbpf import isa
from userbpf.contexts import (CTX_ACCESS_ERRNO, CTX_ATOMIC_ERROR, CTX_MODIFIED_ERROR,
                              CTX_VAR_OFF_ERROR, LOAD_ATTACH_TYPES, CtxAccessError, _table,
                              check_ctx_access, check_flow_keys_access, check_sock_access,
                              ctx_reg_type,
                              ctx_struct)
from userbpf.uapi import AttachType, Func, MapType, ProgFlag, ProgType

pytestmark = pytest.mark.kernel

SIZE_CODE = {1: isa.Size.B, 2: isa.Size.H, 4: isa.Size.W, 8: isa.Size.DW}
CTX_REJECT = "invalid bpf_context access"


def probe_code(off: int, size: int, write: bool, form: str = "") -> list:
    """The one-access program: a load into r0 or a store of r2 = 0.

    ``form`` "st" stores an immediate (BPF_ST), "sx" sign-extends the load.
    """
    if write and form == "st":
        body = [isa.BPF_ST_MEM(SIZE_CODE[size], 1, off, 0)]
    elif write:
        body = [isa.BPF_MOV64_IMM(2, 0), isa.BPF_STX_MEM(SIZE_CODE[size], 1, 2, off)]
    elif form == "sx":
        body = [isa.BPF_LDX_MEMSX(SIZE_CODE[size], 0, 1, off)]
    else:
        body = [isa.BPF_LDX_MEM(SIZE_CODE[size], 0, 1, off)]
    # r0 = 1 is in range for every checked return (cgroup [0,1], recvmsg [1,1] ...)
    return body + [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]


# Load flags some types require (SYSCALL programs must be sleepable).
LOAD_FLAGS = {ProgType.SYSCALL: ProgFlag.SLEEPABLE}


def load(host, code, prog_type: int, eat: int):
    return host.prog_load(code, prog_type, expected_attach_type=eat,
                          prog_flags=int(LOAD_FLAGS.get(prog_type, 0)))


def kernel_verdict(host, prog_type: int, eat: int, off: int, size: int,
                   write: bool, form: str = "") -> Tuple[bool, str]:
    """(accepted, log) from the live kernel."""
    try:
        p = load(host, probe_code(off, size, write, form), prog_type, eat)
    except host.HostError as e:
        return False, f"errno={e.errno} " + e.log
    p.close()
    return True, ""


def model_verdict(prog_type: int, eat: int, off: int, size: int, write: bool,
                  form: str = "") -> Tuple[bool, str]:
    try:
        check_ctx_access(prog_type, eat, off, size, write, sign_extend=form == "sx")
    except CtxAccessError as e:
        return False, str(e)
    return True, ""


# Contexts too big to sweep: their start and the region around their end
# (SYSCALL's U16_MAX cannot be reached: an insn offset is an s16 and a ctx
# pointer may not be moved, so its probe stops at the largest s16 offset).
BIG_CTX_OFFSETS = {
    ProgType.TRACEPOINT: [*range(-8, 72), *range(8184 - 16, 8192 + 9)],
    ProgType.SYSCALL: [*range(-8, 72), *range(32767 - 24, 32768)],
}


def grid(prog_type: int, eat: int) -> List[Tuple[int, int, bool]]:
    """Every (off, size, write) from -8 to sizeof + 8."""
    offs = BIG_CTX_OFFSETS.get(prog_type)
    if offs is None:
        offs = range(-8, ctx_struct(prog_type, eat).size + 8 + 1)
    return [(off, size, w) for w in (False, True) for size in (1, 2, 4, 8) for off in offs]


def loadable(host, prog_type: int, eat: int) -> None:
    """Skip when this kernel cannot load the type at all (not configured)."""
    try:
        load(host, [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()], prog_type, eat).close()
    except host.HostError as e:
        if e.errno == errno.EINVAL and not e.log:
            pytest.skip(f"{ProgType(prog_type).name} is not configured in this kernel")
        raise


def compare(host, prog_type: int, eat: int, cells, form: str = "") -> List[str]:
    """Mismatches between kernel and model over ``cells``, as readable lines."""
    bad = []
    for off, size, write in cells:
        k_ok, log = kernel_verdict(host, prog_type, eat, off, size, write, form)
        m_ok, msg = model_verdict(prog_type, eat, off, size, write, form)
        what = (f"{ProgType(prog_type).name}/{eat} {'st' if write else 'ld'}{form} "
                f"off={off} size={size}")
        if not k_ok and (msg not in log or not log.startswith(f"errno={CTX_ACCESS_ERRNO} ")):
            bad.append(f"{what}: kernel rejects with {log.strip().splitlines()[-3:]!r}, "
                       f"model {'accepts' if m_ok else 'says ' + msg!r}")
        elif k_ok != m_ok:
            bad.append(f"{what}: kernel {'accepts' if k_ok else 'rejects'}, model "
                       f"{'accepts' if m_ok else 'rejects'}")
    return bad


def variants():
    out = []
    for pt, eats in LOAD_ATTACH_TYPES.items():
        for eat in eats:
            out.append(pytest.param(int(pt), int(eat), id=f"{ProgType(pt).name}-{int(eat)}"))
    return out


# ~44,000 loads, about 5 s in all: the whole grid runs by default.
@pytest.mark.parametrize("prog_type,eat", variants())
def test_grid_matches_kernel(host, prog_type, eat):
    loadable(host, prog_type, eat)
    cells = grid(prog_type, eat)
    bad = compare(host, prog_type, eat, cells)
    assert not bad, f"{len(bad)} of {len(cells)} differ:\n" + "\n".join(bad[:40])


def form_cells(prog_type: int, eat: int, form: str):
    """The grid cells a form applies to: BPF_ST stores, MEMSX loads of 1/2/4 bytes."""
    if form == "st":
        return [c for c in grid(prog_type, eat) if c[2]]
    return [c for c in grid(prog_type, eat) if not c[2] and c[1] != 8]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["st", "sx"])
@pytest.mark.parametrize("prog_type,eat", variants())
def test_st_and_sign_extending_grid_matches_kernel(host, prog_type, eat, form):
    loadable(host, prog_type, eat)
    cells = form_cells(prog_type, eat, form)
    bad = compare(host, prog_type, eat, cells, form)
    assert not bad, f"{len(bad)} of {len(cells)} differ:\n" + "\n".join(bad[:40])


@pytest.mark.parametrize("form", ["st", "sx"])
@pytest.mark.parametrize("prog_type,eat", variants())
def test_st_and_sign_extending_sample_matches_kernel(host, prog_type, eat, form):
    """A seeded tenth of the grid above, plus every cell the table permits."""
    loadable(host, prog_type, eat)
    cells = form_cells(prog_type, eat, form)
    permitted = [c for c in cells if model_verdict(prog_type, eat, *c)[0]]
    rng = random.Random(f"{prog_type}/{eat}/{form}")
    sample = sorted(set(rng.sample(cells, len(cells) // 10)) | set(permitted))
    bad = compare(host, prog_type, eat, sample, form)
    assert not bad, f"{len(bad)} of {len(sample)} differ:\n" + "\n".join(bad[:40])


def pointer_loads():
    out = []
    for v in variants():
        prog_type, eat = v.values
        if prog_type in BIG_CTX_OFFSETS or prog_type == ProgType.LIRC_MODE2:
            continue
        for (off, size, write), acc in sorted(_table(prog_type, eat).ok.items()):
            if not write and acc.ptr is not None:
                out.append(pytest.param(prog_type, eat, off, size,
                                        id=f"{ProgType(prog_type).name}-{eat}-{off}"))
    return out


@pytest.mark.parametrize("prog_type,eat,off,size", pointer_loads())
def test_pointer_loads_have_the_kernels_register_type(host, prog_type, eat, off, size):
    code = probe_code(off, size, False)
    p = host.prog_load(code, prog_type, expected_attach_type=eat, log_level=2,
                       prog_flags=int(LOAD_FLAGS.get(prog_type, 0)))
    p.close()
    line = next(l for l in p.log.splitlines() if l.startswith("0: ("))
    state = line.split(";")[-1].split()
    r0 = next(x for x in state if x.startswith(("R0=", "R0_w=")))
    assert r0.split("=", 1)[1].split("(")[0] == ctx_reg_type(prog_type, eat, off, size)


def test_flow_keys_accesses_match_kernel(host):
    """Through the flow_keys pointer: every offset -2..64, sizes 1..8, load and store."""
    bad = []
    for write in (False, True):
        for size in (1, 2, 4, 8):
            for off in range(-2, 65):
                body = [isa.BPF_LDX_MEM(isa.Size.DW, 2, 1, 144)]
                if write:
                    body += [isa.BPF_MOV64_IMM(3, 0), isa.BPF_STX_MEM(SIZE_CODE[size], 2, 3, off)]
                else:
                    body += [isa.BPF_LDX_MEM(SIZE_CODE[size], 0, 2, off)]
                body += [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
                try:
                    host.prog_load(body, ProgType.FLOW_DISSECTOR).close()
                    k_ok, log = True, ""
                except host.HostError as e:
                    k_ok, log = False, e.log
                try:
                    check_flow_keys_access(off, size)
                    m_ok, msg = True, ""
                except CtxAccessError as e:
                    m_ok, msg = False, str(e)
                if k_ok != m_ok or (not k_ok and msg not in log):
                    bad.append((write, off, size, k_ok, log.strip().splitlines()[-2:]))
    assert not bad, bad[:20]


def test_atomics_on_ctx_are_refused_with_the_kernels_message(host):
    code = [isa.BPF_MOV64_IMM(2, 1), isa.BPF_ATOMIC_OP(isa.Size.W, int(isa.AtomicOp.ADD), 1, 2, 48),
            isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
    with pytest.raises(host.HostError) as e:
        host.prog_load(code, ProgType.SCHED_CLS)
    assert CTX_ATOMIC_ERROR.format(reg=1) in e.value.log


def test_moved_ctx_pointers_are_refused_with_the_kernels_messages(host):
    W = isa.Size.W
    moved = [isa.BPF_ALU64_IMM(isa.AluOp.ADD, 1, 4), isa.BPF_LDX_MEM(W, 0, 1, 0)]
    variable = [isa.BPF_LDX_MEM(W, 2, 1, 0), isa.BPF_ALU64_IMM(isa.AluOp.AND, 2, 4),
                isa.BPF_ALU64_REG(isa.AluOp.ADD, 1, 2), isa.BPF_LDX_MEM(W, 0, 1, 0)]
    for body, text in ((moved, CTX_MODIFIED_ERROR.format(reg=1, off=4)),
                       (variable, CTX_VAR_OFF_ERROR.format(var_off="(0x0; 0x4)"))):
        with pytest.raises(host.HostError) as e:
            host.prog_load(body + [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()],
                           ProgType.SCHED_CLS)
        assert e.value.errno == CTX_ACCESS_ERRNO and text in e.value.log


def sock_probe(kind: str, off: int, size: int, write: bool, xskmap_fd: int = -1):
    """(prog_type, attach type, code) accessing a ``kind`` socket pointer in r2.

    sock_common: tc's __sk_buff.sk after a null check; sock: getsockopt's
    bpf_sockopt.sk; tcp_sock: bpf_tcp_sock() of that, after a null check;
    xdp_sock: an XSKMAP lookup in XDP, after a null check.
    """
    JEQ = isa.JmpOp.JEQ
    acc = (isa.BPF_STX_MEM(SIZE_CODE[size], 2, 3, off) if write
           else isa.BPF_LDX_MEM(SIZE_CODE[size], 3, 2, off))
    if kind == "sock_common":
        pt, eat = ProgType.SCHED_CLS, 0
        body = [isa.BPF_LDX_MEM(isa.Size.DW, 2, 1, 168), isa.BPF_JMP_IMM(JEQ, 2, 0, 2)]
    elif kind == "sock":
        pt, eat = ProgType.CGROUP_SOCKOPT, AttachType.CGROUP_GETSOCKOPT
        body = [isa.BPF_LDX_MEM(isa.Size.DW, 2, 1, 0)]
    elif kind == "tcp_sock":
        pt, eat = ProgType.CGROUP_SOCKOPT, AttachType.CGROUP_GETSOCKOPT
        body = [isa.BPF_LDX_MEM(isa.Size.DW, 1, 1, 0), isa.BPF_EMIT_CALL(Func.tcp_sock),
                isa.BPF_MOV64_REG(2, 0), isa.BPF_JMP_IMM(JEQ, 2, 0, 2)]
    else:
        pt, eat = ProgType.XDP, 0
        body = [isa.BPF_ST_MEM(isa.Size.W, 10, -4, 0), *isa.BPF_LD_MAP_FD(1, xskmap_fd),
                isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 2, -4),
                isa.BPF_EMIT_CALL(Func.map_lookup_elem),
                isa.BPF_MOV64_REG(2, 0), isa.BPF_JMP_IMM(JEQ, 2, 0, 2)]
    code = body + [isa.BPF_MOV64_IMM(3, 0), acc, isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
    return pt, eat, code


@pytest.mark.parametrize("kind", ["sock_common", "sock", "tcp_sock", "xdp_sock"])
def test_socket_pointer_accesses_match_kernel(host, kind):
    """Loads and stores through socket pointers, offsets -4..120."""
    bad = []
    with host.map_create(MapType.XSKMAP, 4, 4, 1) as xskmap:
        for write in (False, True):
            for size in (1, 2, 4, 8):
                for off in range(-4, 121):
                    pt, eat, code = sock_probe(kind, off, size, write, xskmap.fd)
                    try:
                        host.prog_load(code, pt, expected_attach_type=eat).close()
                        k_ok, log = True, ""
                    except host.HostError as e:
                        k_ok, log = False, f"errno={e.errno} " + e.log
                    try:
                        check_sock_access(kind, off, size, write, regno=2)
                        m_ok, msg, err = True, "", 0
                    except CtxAccessError as e:
                        m_ok, msg, err = False, str(e), e.errno
                    if k_ok != m_ok or (not k_ok and (msg not in log or
                                                      not log.startswith(f"errno={err} "))):
                        bad.append((write, off, size, k_ok, m_ok, log.strip().splitlines()[-2:]))
    assert not bad, bad[:20]


# A broadcast IPv4/TCP packet: the kernel fills pkt_type (2), protocol, len ...
VALUE_PACKET = (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
                + bytes.fromhex("450000280001000040060000c0a80001c0a80002")
                + bytes.fromhex("3039d431000000000000000050000000") + bytes(40))


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.SOCKET_FILTER,
                                       ProgType.CGROUP_SKB, ProgType.LWT_IN,
                                       ProgType.LWT_XMIT])
def test_narrow_loads_read_what_the_kernel_returns(host, prog_type):
    """Every narrow __sk_buff load, run by PROG_TEST_RUN, returns what the
    internal context holds at its CtxAccess, given the whole fields' values.

    The loaded value is stored to cb[0] and read back from ctx_out, so the
    program's return value stays in every type's range.
    """
    s = ctx_struct(prog_type)
    uapi = bytes(s.uapi(s.pack(mark=0x11223344, priority=0x55667788, gso_size=0x1234,
                               gso_segs=0x5678, ifindex=1, ingress_ifindex=1,
                               **{"cb[1]": 0x99AABBCC, "cb[4]": 0xDDEEFF01})))

    def kernel_load(off, size):
        code = [isa.BPF_LDX_MEM(SIZE_CODE[size], 2, 1, off),
                isa.BPF_STX_MEM(isa.Size.W, 1, 2, 48),
                isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
        with host.prog_load(code, prog_type) as p:
            out = p.test_run_full(VALUE_PACKET, ctx_in=uapi).ctx_out
        return int.from_bytes(out[48:52], "little")

    table = _table(prog_type, 0)
    internal = bytearray(s.internal_size)
    whole = [f for f in s.fields if f.size == 4 and (f.off, 4, False) in table.ok
             and table.ok[(f.off, 4, False)].ptr is None]
    for f in whole:
        internal[f.off:f.off + 4] = kernel_load(f.off, 4).to_bytes(4, "little")
    assert int.from_bytes(internal[4:8], "little") == 2           # pkt_type: broadcast
    narrow = [(off, size, acc) for (off, size, write), acc in sorted(table.ok.items())
              if not write and acc.ptr is None and size < s.field_at(off).size]
    assert len(narrow) > 100
    bad = []
    for off, size, acc in narrow:
        want = int.from_bytes(internal[acc.off:acc.off + acc.size], "little")
        got = kernel_load(off, size)
        if got != want:
            bad.append((s.field_at(off).name, off, size, hex(got), hex(want)))
    assert not bad


def test_sk_lookup_narrow_loads_read_what_the_kernel_returns(host):
    """The same for bpf_sk_lookup; values leave through an array map (the
    program's return must be SK_PASS or SK_DROP)."""
    import socket
    s = ctx_struct(ProgType.SK_LOOKUP)
    eat = AttachType.SK_LOOKUP
    uapi = bytes(s.uapi(s.pack(family=socket.AF_INET, protocol=socket.IPPROTO_TCP,
                               remote_ip4=0x0100007F, local_ip4=0x0200007F,
                               remote_port=socket.htons(0x3039), local_port=0xD431)))
    with host.map_create(MapType.ARRAY, 4, 8, 1) as m:
        def kernel_load(off, size):
            code = [isa.BPF_LDX_MEM(SIZE_CODE[size], 6, 1, off),
                    isa.BPF_STX_MEM(isa.Size.DW, 10, 6, -8),
                    isa.BPF_ST_MEM(isa.Size.W, 10, -12, 0),
                    *isa.BPF_LD_MAP_FD(1, m.fd),
                    isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 2, -12),
                    isa.BPF_MOV64_REG(3, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 3, -8),
                    isa.BPF_MOV64_IMM(4, 0), isa.BPF_EMIT_CALL(Func.map_update_elem),
                    isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
            with host.prog_load(code, ProgType.SK_LOOKUP, expected_attach_type=eat) as p:
                p.test_run_full(b"", ctx_in=uapi, data_size_out=0)
            return int.from_bytes(m.lookup(bytes(4)), "little")

        table = _table(ProgType.SK_LOOKUP, eat)
        internal = bytearray(s.internal_size)
        internal[:s.size] = uapi
        for f in s.fields:
            if f.size == 4 and (f.off, 4, False) in table.ok:
                internal[f.off:f.off + 4] = kernel_load(f.off, 4).to_bytes(4, "little")
        assert s.get(internal, "family") == socket.AF_INET
        bad = []
        cells = [(off, size, acc) for (off, size, write), acc in sorted(table.ok.items())
                 if not write and acc.ptr is None and off >= 8]
        assert len(cells) > 80
        for off, size, acc in cells:
            want = int.from_bytes(internal[acc.off:acc.off + acc.size], "little")
            got = kernel_load(off, size)
            if got != want:
                bad.append((off, size, hex(got), hex(want)))
        assert not bad


def test_rx_queue_mapping_reads_as_a_64_bit_minus_one(host):
    """SIGN_EXTENDED_FIELDS: the socket of a tc test run has no rx queue."""
    from userbpf.contexts import BPF_SOCK, SIGN_EXTENDED_FIELDS
    assert "rx_queue_mapping" in SIGN_EXTENDED_FIELDS["bpf_sock"]
    off = BPF_SOCK.field("rx_queue_mapping").off
    for size, shift in ((4, 0), (4, 32), (2, 32)):
        code = [isa.BPF_MOV64_IMM(0, 7), isa.BPF_LDX_MEM(isa.Size.DW, 2, 1, 168),
                isa.BPF_JMP_IMM(isa.JmpOp.JEQ, 2, 0, 2),
                isa.BPF_LDX_MEM(SIZE_CODE[size], 0, 2, off),
                isa.BPF_ALU64_IMM(isa.AluOp.RSH, 0, shift), isa.BPF_EXIT_INSN()]
        assert check_sock_access("sock_common", off, size) == (off, 4, None)
        with host.prog_load(code, ProgType.SCHED_CLS) as p:
            assert p.test_run(VALUE_PACKET).retval == 0xFFFFFFFF


def test_bpf_sock_narrow_loads_read_what_the_kernel_returns(host):
    """Narrow loads through the tc test run's full socket (__sk_buff.sk, then
    bpf_sk_fullsock) return what the internal struct holds at their
    CtxAccess, given the whole fields' values."""
    from userbpf.contexts import BPF_SOCK, _sock_table
    JEQ = isa.JmpOp.JEQ

    def kernel_load(off, size):
        code = [isa.BPF_LDX_MEM(isa.Size.DW, 1, 1, 168), isa.BPF_JMP_IMM(JEQ, 1, 0, 4),
                isa.BPF_EMIT_CALL(Func.sk_fullsock), isa.BPF_JMP_IMM(JEQ, 0, 0, 2),
                isa.BPF_LDX_MEM(SIZE_CODE[size], 0, 0, off), isa.BPF_EXIT_INSN(),
                isa.BPF_MOV64_IMM(0, -2), isa.BPF_EXIT_INSN()]
        with host.prog_load(code, ProgType.SCHED_CLS) as p:
            return p.test_run(VALUE_PACKET).retval

    table = _sock_table("sock")
    internal = bytearray(BPF_SOCK.size)
    for f in BPF_SOCK.fields:
        if f.size == 4 and (f.off, 4, False) in table.ok:
            internal[f.off:f.off + 4] = kernel_load(f.off, 4).to_bytes(4, "little")
    assert BPF_SOCK.get(internal, "family") == 2 and BPF_SOCK.get(internal, "state") == 7
    bad = []
    cells = [(off, size, acc) for (off, size, write), acc in sorted(table.ok.items())
             if size < 4]
    assert len(cells) > 60
    for off, size, acc in cells:
        want = int.from_bytes(internal[acc.off:acc.off + acc.size], "little")
        got = kernel_load(off, size)
        if got != want:
            bad.append((BPF_SOCK.field_at(off).name, off, size, hex(got), hex(want)))
    assert not bad


@pytest.mark.parametrize("field", ["mark", "priority", "queue_mapping", "tc_index",
                                   "tc_classid", "cb[2]"])
def test_tc_stores_keep_what_the_kernel_keeps(host, field):
    """A u32 store then a u32 load of the same field, in the kernel and on an
    internal context through the CtxAccess of each (DROPPED_STORES_FROM too)."""
    from userbpf.contexts import DROPPED_STORES_FROM
    s = ctx_struct(ProgType.SCHED_CLS)
    f = s.field(field)
    dropped_from = DROPPED_STORES_FROM["__sk_buff"].get(field)
    st = check_ctx_access(ProgType.SCHED_CLS, 0, f.off, 4, True)
    ld = check_ctx_access(ProgType.SCHED_CLS, 0, f.off, 4, False)
    for value in (0x12345, 0xFFFE, 0xFFFF, 0x1FFFF, 0x89ABCDEF):
        code = [isa.BPF_LD_IMM64(2, value), isa.BPF_STX_MEM(isa.Size.W, 1, 2, f.off),
                isa.BPF_LDX_MEM(isa.Size.W, 0, 1, f.off), isa.BPF_EXIT_INSN()]
        with host.prog_load(code, ProgType.SCHED_CLS) as p:
            got = p.test_run(VALUE_PACKET).retval
        internal = s.pack()
        if dropped_from is None or value < dropped_from:
            internal[st.off:st.off + st.size] = value.to_bytes(8, "little")[:st.size]
        assert got == int.from_bytes(internal[ld.off:ld.off + ld.size], "little"), hex(value)
