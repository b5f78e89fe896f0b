"""BPF_PROG_LOAD in the simulated kernel: attr checks in the kernel's order,
the verifier log rules, map references, the license rule, program info,
ids, pins and lifetimes.

Errnos and log lines are the live 6.18 kernel's (read off it with
userbpf.hostbpf; test_prog_load_kernel.py compares them side by side).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import struct

import pytest

import userbpf
from userbpf import abi, isa
from userbpf.isa import Insn, Pseudo
from userbpf.kernel import Kernel
from userbpf.kernel import progs
from userbpf.uapi import AttachType, Cmd, MapType, ProgFlag, ProgType

EINVAL, E2BIG, EFAULT, EBADF, ENOSPC, EPROTO, ENOENT = (
    errno.EINVAL, errno.E2BIG, errno.EFAULT, errno.EBADF, errno.ENOSPC, errno.EPROTO,
    errno.ENOENT)
RET0 = [isa.BPF_MOV64_IMM(0, 0), isa.BPF_EXIT_INSN()]
STATS0 = ("processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 "
          "peak_states 0 mark_read 0\n")
GPL_MSG = "cannot call GPL-restricted function from non-GPL compatible program"
MOUNT = "/sys/fs/bpf"


def load(k: Kernel, insns=RET0, prog_type=ProgType.SOCKET_FILTER, license="GPL", **attr) -> int:
    return k.bpf(Cmd.PROG_LOAD, prog_type=prog_type, insns=insns, license=license, **attr)


def load_errno(k: Kernel, *args, **attr) -> int:
    with pytest.raises(OSError) as e:
        load(k, *args, **attr)
    return e.value.errno


def ld_map(fd: int, src=Pseudo.MAP_FD, off: int = 0, dst: int = 1):
    return [Insn(0x18, dst, src, 0, fd), Insn(0, 0, 0, 0, off)]


def call(helper: int):
    return [isa.BPF_EMIT_CALL(helper), isa.BPF_MOV64_IMM(0, 0), isa.BPF_EXIT_INSN()]


def array(k: Kernel, max_entries=1, value_size=8) -> int:
    return k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=value_size,
                 max_entries=max_entries)


@pytest.fixture
def k():
    return Kernel(ncpus=2)


# -- loading and running -------------------------------------------------------------

def test_load_returns_an_fd_of_a_runnable_program(k):
    fd = load(k, [isa.BPF_MOV64_IMM(0, 42), isa.BPF_EXIT_INSN()])
    assert fd == 3
    prog = k.fds.get(fd)
    assert prog.kind == "prog" and prog.program.run() == 42
    assert prog.prog_type == ProgType.SOCKET_FILTER and prog.license == "GPL"
    assert prog.gpl_compatible


def test_insns_as_bytes_and_insn_cnt_takes_a_prefix(k):
    code = isa.encode([isa.BPF_MOV64_IMM(0, 5), isa.BPF_EXIT_INSN(), isa.BPF_MOV64_IMM(0, 6)])
    fd = load(k, code, insn_cnt=2)
    assert k.fds.get(fd).program.run() == 5 and len(k.fds.get(fd).insns) == 2
    assert load_errno(k, code, insn_cnt=4) == EFAULT        # fewer instructions than insn_cnt


@pytest.mark.parametrize("cnt", [0, progs.BPF_COMPLEXITY_LIMIT_INSNS + 1])
def test_insn_cnt_out_of_range_is_e2big_before_the_type_and_license(k, cnt):
    assert load_errno(k, insn_cnt=cnt) == E2BIG
    assert load_errno(k, insn_cnt=cnt, prog_type=99, license=None) == E2BIG


def test_empty_program_is_e2big(k):
    assert load_errno(k, []) == E2BIG
    assert load_errno(k, b"") == E2BIG


@pytest.mark.parametrize("prog_type", [0, 33, 99, 1 << 31])
def test_unknown_prog_type_is_einval(k, prog_type):
    assert load_errno(k, prog_type=prog_type) == EINVAL


def test_license_null_is_efault_before_the_prog_type(k):
    assert load_errno(k, license=None) == EFAULT
    assert load_errno(k, license=None, prog_type=99) == EFAULT
    assert load_errno(k, insns=None, insn_cnt=2) == EFAULT
    assert load_errno(k, insns=None) == E2BIG          # no insns: insn_cnt 0


@pytest.mark.parametrize("name, ok", [(b"", True), (b"abc.def_1", True), ("x" * 15, True),
                                      (b"a-b", False), ("x" * 16, False), (b"sp ace", False)])
def test_prog_name(k, name, ok):
    if ok:
        fd = load(k, prog_name=name)
        want = name.encode() if isinstance(name, str) else name
        assert k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd).name == want
    else:
        assert load_errno(k, prog_name=name) == EINVAL


@pytest.mark.parametrize("bit", range(20))
def test_prog_flags_mask(k, bit):
    # bit 4 is BPF_F_SLEEPABLE (not for socket filters), 16 BPF_F_TOKEN_FD (no token)
    ok = bit in (0, 1, 2, 3, 5, 6, 7)
    if ok:
        assert load(k, prog_flags=1 << bit) >= 3
    else:
        assert load_errno(k, prog_flags=1 << bit) == EINVAL


def test_sleepable_messages(k):
    buf = bytearray(512)
    with pytest.raises(OSError) as e:
        load(k, prog_flags=ProgFlag.SLEEPABLE, log_level=1, log_buf=buf, log_size=512)
    assert e.value.errno == EINVAL
    assert e.value.log == ("Only fentry/fexit/fmod_ret, lsm, iter, uprobe, and struct_ops "
                           "programs can be sleepable\n" + STATS0)
    with pytest.raises(OSError) as e:
        load(k, prog_type=ProgType.SYSCALL, log_level=1, log_buf=buf, log_size=512)
    assert e.value.errno == EINVAL and e.value.log.startswith(
        "Syscall programs can only be sleepable\n")


@pytest.mark.parametrize("prog_type, attach, ok", [
    (ProgType.CGROUP_SKB, 0, True),                            # 0 is INET_INGRESS
    (ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS, True),
    (ProgType.CGROUP_SKB, AttachType.CGROUP_SOCK_OPS, False),
    (ProgType.CGROUP_SOCK, 0, True),                           # fixed up to SOCK_CREATE
    (ProgType.CGROUP_SOCK, AttachType.CGROUP_INET4_POST_BIND, True),
    (ProgType.CGROUP_SOCK, AttachType.CGROUP_INET_EGRESS, False),
    (ProgType.CGROUP_SOCK_ADDR, 0, False),
    (ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_INET4_CONNECT, True),
    (ProgType.CGROUP_SOCKOPT, 0, False),
    (ProgType.CGROUP_SOCKOPT, AttachType.CGROUP_GETSOCKOPT, True),
    (ProgType.SK_REUSEPORT, 0, True),
    (ProgType.SK_LOOKUP, 0, False),
    (ProgType.SK_LOOKUP, AttachType.SK_LOOKUP, True),
    (ProgType.NETFILTER, AttachType.NETFILTER, True),
    (ProgType.XDP, AttachType.CGROUP_GETSOCKOPT, True),       # not checked for XDP
])
def test_expected_attach_type_rules(k, prog_type, attach, ok):
    if ok:
        fd = load(k, prog_type=prog_type, expected_attach_type=attach)
        prog = k.fds.get(fd)
        assert prog.expected_attach_type == progs.DEFAULT_ATTACH.get(prog_type, attach) \
            if not attach else prog.expected_attach_type == attach
    else:
        assert load_errno(k, prog_type=prog_type, expected_attach_type=attach) == EINVAL


def test_types_that_need_btf_are_refused(k):
    assert load_errno(k, prog_type=ProgType.TRACING) == EINVAL
    assert load_errno(k, prog_type=ProgType.STRUCT_OPS) == progs.ENOTSUPP
    assert load_errno(k, attach_btf_id=5) == EINVAL
    assert load_errno(k, prog_btf_fd=3) == EINVAL


# -- the verifier log ----------------------------------------------------------------------

@pytest.mark.parametrize("level, size, buf, want", [
    (1, 0, False, None),          # a level without a buffer: fine, nothing written
    (0, 100, True, EINVAL),       # a buffer without a level
    (1, 100, False, EINVAL),      # a size without a buffer
    (16, 200, True, EINVAL),      # unknown level bits
    (1, (1 << 30), True, EINVAL),  # more than UINT_MAX >> 2
    (8, 200, True, None),         # BPF_LOG_FIXED alone is a level
    (1, 127, True, None),         # no 128-byte minimum any more
])
def test_log_attr_rules(k, level, size, buf, want):
    b = bytearray(size) if buf and size < 1 << 20 else (bytearray(16) if buf else None)
    attr = dict(log_level=level, log_size=size, log_buf=b)
    if want is None:
        assert load(k, **attr) >= 3
    else:
        assert load_errno(k, **attr) == want


def test_log_of_a_good_load_is_the_stats_line(k):
    buf = bytearray(200)
    load(k, log_level=1, log_buf=buf, log_size=200)
    line = STATS0.replace("processed 0", "processed 2")
    assert bytes(buf) == line.encode() + bytes(200 - len(line))


def test_short_log_is_enospc_with_the_tail(k):
    buf = bytearray(b"\xff" * 12)
    with pytest.raises(OSError) as e:
        load(k, log_level=1, log_buf=buf, log_size=10)
    assert e.value.errno == ENOSPC
    assert bytes(buf) == b"k_read 0\n\0\xff\xff"         # the last 9 bytes, NUL, untouched
    assert e.value.log_true_size == 98


def test_short_fixed_log_keeps_the_start_and_enospc_wins_over_the_error(k):
    buf = bytearray(40)
    with pytest.raises(OSError) as e:
        load(k, call(6), license="MIT", log_level=1 | progs.BPF_LOG_FIXED, log_buf=buf,
             log_size=40)
    assert e.value.errno == ENOSPC
    assert bytes(buf) == (GPL_MSG.encode()[:39] + b"\0")


# -- map references -----------------------------------------------------------------------

def test_map_fd_resolves_and_the_program_uses_the_map(k):
    m = array(k)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=m, key=bytes(4), value=struct.pack("<Q", 99), flags=0)
    code = ld_map(m, Pseudo.MAP_VALUE, 0, dst=1) + [isa.BPF_LDX_MEM(isa.BPF_DW, 0, 1, 0),
                                                    isa.BPF_EXIT_INSN()]
    fd = load(k, code)
    assert k.fds.get(fd).program.run() == 99
    assert [x.id for x in k.fds.get(fd).maps] == [k.fds.get(m).id]


def test_map_idx_through_fd_array(k):
    a, b = array(k), array(k)
    code = ld_map(1, Pseudo.MAP_IDX) + ld_map(0, Pseudo.MAP_IDX) + RET0
    fd = load(k, code, fd_array=[a, b])
    assert [x.id for x in k.fds.get(fd).maps] == [k.fds.get(b).id, k.fds.get(a).id]


@pytest.mark.parametrize("make, want, msg", [
    (lambda k: ld_map(999), EBADF, "fd 999 is not pointing to valid bpf_map"),
    (lambda k: ld_map(load(k)), EINVAL, "fd 3 is not pointing to valid bpf_map"),
    (lambda k: ld_map(0, Pseudo.MAP_IDX), EPROTO, "fd_idx without fd_array is invalid"),
    (lambda k: ld_map(12345, Pseudo.BTF_ID), ENOENT,
     "ldimm64 insn specifies invalid btf_id 12345. (userbpf has no kernel BTF)"),
    (lambda k: ld_map(array(k), Pseudo.MAP_FD, 1), EINVAL, "unrecognized bpf_ld_imm64 insn"),
    (lambda k: ld_map(array(k), 7), EINVAL, "unrecognized bpf_ld_imm64 insn"),
    (lambda k: ld_map(array(k), Pseudo.MAP_VALUE, 8), EINVAL,
     "invalid access to map value pointer, value_size=8 off=8"),
    (lambda k: ld_map(array(k, 2), Pseudo.MAP_VALUE, 0), progs.ENOTSUPP,
     "invalid access to map value pointer, value_size=8 off=0"),
    (lambda k: ld_map(k.bpf(Cmd.MAP_CREATE, map_type=MapType.HASH, key_size=4, value_size=8,
                            max_entries=1), Pseudo.MAP_VALUE), EINVAL,
     "no direct value access support for this map type"),
    (lambda k: ld_map(array(k), Pseudo.MAP_VALUE, 1 << 29), EINVAL,
     "direct value offset of 536870912 is not allowed"),
])
def test_bad_map_references(k, make, want, msg):
    code = make(k) + RET0
    buf = bytearray(4096)
    with pytest.raises(OSError) as e:
        load(k, code, log_level=1, log_buf=buf, log_size=4096)
    assert e.value.errno == want
    assert e.value.log == msg + "\n" + STATS0
    assert bytes(buf).rstrip(b"\0").decode() == msg + "\n" + STATS0


def test_kfunc_calls_are_refused(k):
    with pytest.raises(OSError) as e:
        load(k, [Insn(0x85, 0, 2, 0, 12345)] + RET0, log_level=1, log_buf=bytearray(512),
             log_size=512)
    assert e.value.errno == EINVAL
    assert e.value.log.startswith("kernel function calls (kfuncs) are not supported by "
                                  "userbpf: call to kfunc btf_id 12345\n")


@pytest.mark.parametrize("code, msg", [
    ([isa.BPF_MOV64_IMM(0, 0)], "last insn is not an exit or jmp"),
    ([isa.BPF_JMP_A(5), isa.BPF_EXIT_INSN()], "jump out of range from insn 0 to 6"),
    ([Insn(0xff, 0, 0, 0, 0), isa.BPF_EXIT_INSN()], "unknown opcode ff"),
])
def test_structural_errors_reach_the_log(k, code, msg):
    with pytest.raises(OSError) as e:
        load(k, code, log_level=1, log_buf=bytearray(512), log_size=512)
    assert e.value.errno == EINVAL and e.value.log == msg + "\n" + STATS0


# -- the license rule ---------------------------------------------------------------------

@pytest.mark.parametrize("lic", sorted(progs.GPL_COMPATIBLE_LICENSES))
def test_gpl_compatible_licenses_may_call_gpl_only_helpers(k, lic):
    fd = load(k, call(5), license=lic)              # ktime_get_ns: anyone
    assert k.fds.get(fd).gpl_compatible
    # trace_printk is GPL-only: these licenses may call it
    assert k.fds.get(load(k, call(6), license=lic)).gpl_compatible


@pytest.mark.parametrize("lic", ["MIT", "gpl", "GPLv2", "", "Proprietary"])
@pytest.mark.parametrize("helper", [4, 6, 113, 165])
def test_non_gpl_program_cannot_call_gpl_only_helpers(k, lic, helper):
    buf = bytearray(512)
    with pytest.raises(OSError) as e:
        load(k, call(helper), license=lic, log_level=1, log_buf=buf, log_size=512,
             prog_type=ProgType.KPROBE)     # a type that may call all four
    assert e.value.errno == EINVAL and e.value.log == GPL_MSG + "\n" + STATS0


@pytest.mark.parametrize("helper", [1, 2, 3, 5, 7, 8])
def test_non_gpl_program_may_call_the_others(k, helper):
    code = call(helper) if helper > 3 else ld_map(array(k)) + call(helper)
    fd = load(k, code, license="Dual BSD")
    assert not k.fds.get(fd).gpl_compatible


def test_gpl_exception_per_type(k):
    with pytest.raises(OSError) as e:
        load(k, call(27), prog_type=ProgType.KPROBE, license="MIT")
    assert e.value.errno == EINVAL and GPL_MSG in str(e.value)
    # PERF_EVENT's get_stackid is not GPL-only: refused only as unimplemented
    with pytest.raises(OSError) as e:
        load(k, call(27), prog_type=ProgType.PERF_EVENT, license="MIT")
    assert "helper bpf_get_stackid#27 is not implemented by userbpf" in str(e.value)


def test_helpers_a_type_may_not_call_are_refused_as_the_kernel_does(k):
    # bpf_xdp_adjust_head is XDP's, not a socket filter's
    with pytest.raises(OSError) as e:
        load(k, call(44), prog_type=ProgType.SOCKET_FILTER)
    assert e.value.errno == EINVAL
    assert "program of this type cannot use helper bpf_xdp_adjust_head#44" in str(e.value)
    with pytest.raises(OSError) as e:
        load(k, call(100000))
    assert e.value.errno == EINVAL and "invalid func unknown#100000" in str(e.value)


def test_license_is_read_up_to_the_nul(k):
    fd = load(k, license=b"GPL\0junk")
    assert k.fds.get(fd).license == "GPL"


# -- the tag ------------------------------------------------------------------------------

def sha_tag(insns) -> bytes:
    return hashlib.sha256(isa.encode(insns)).digest()[:8]


def test_tag_is_sha256_prefix_with_map_fds_zeroed(k):
    assert progs.calc_tag(RET0).hex() == "59f4a931744dcdc6"          # the live kernel's
    a, b = array(k), array(k)
    t1 = k.fds.get(load(k, ld_map(a) + RET0)).tag
    t2 = k.fds.get(load(k, ld_map(b) + RET0)).tag
    assert t1 == t2 == sha_tag(ld_map(0) + RET0) == bytes.fromhex("0bd0168676c7c779")
    # MAP_VALUE: both imms zeroed (the offset too)
    t3 = k.fds.get(load(k, ld_map(a, Pseudo.MAP_VALUE, 4) + RET0)).tag
    assert t3 == sha_tag([Insn(0x18, 1, 2, 0, 0), Insn(0, 0, 0, 0, 0)] + RET0)
    assert t3.hex() == "28813e616f1f93d1"
    # MAP_IDX keeps its index
    t4 = k.fds.get(load(k, ld_map(1, Pseudo.MAP_IDX) + RET0, fd_array=[a, a])).tag
    assert t4.hex() == "a21f8a2c54979fac"


def test_tag_is_stable_across_loads_and_kernels(k):
    code = [isa.BPF_MOV64_IMM(0, 7), isa.BPF_EXIT_INSN()]
    k2 = Kernel(ncpus=1)
    first = k.fds.get(load(k, code)).tag
    assert first == k.fds.get(load(k, code)).tag == k2.fds.get(load(k2, code)).tag
    assert first.hex() == "9efe8873120741b3"                       # the live kernel's
    assert k.fds.get(load(k, [isa.BPF_MOV64_IMM(0, 8), isa.BPF_EXIT_INSN()])).tag != first


# -- info ----------------------------------------------------------------------------------

def test_info_fields(k):
    a = array(k)
    code = ld_map(a) + RET0
    fd = load(k, code, prog_name="hello")
    xl = ctypes.create_string_buffer(64)
    ids = (ctypes.c_uint32 * 4)()
    tags = ctypes.create_string_buffer(8)
    given = abi.bpf_prog_info(xlated_prog_len=64, xlated_prog_insns=ctypes.addressof(xl),
                              nr_map_ids=4, map_ids=ctypes.addressof(ids), nr_prog_tags=1,
                              prog_tags=ctypes.addressof(tags))
    info = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info=given)
    prog, m = k.fds.get(fd), k.fds.get(a)
    assert (info.type, info.id, info.name) == (ProgType.SOCKET_FILTER, prog.id, b"hello")
    assert bytes(info.tag) == prog.tag == tags.raw
    assert info.gpl_compatible == 1 and info.created_by_uid == prog.created_by_uid
    assert info.load_time == prog.load_time > 0
    assert info.nr_map_ids == 1 and ids[0] == m.id
    assert info.xlated_prog_len == 32
    assert isa.decode(xl.raw[:32]) == [Insn(0x18, 1, 1, 0, m.id), Insn(0, 0, 0, 0, 0)] + RET0
    assert (info.func_info_rec_size, info.line_info_rec_size,
            info.jited_line_info_rec_size) == (8, 16, 8)
    assert (info.run_cnt, info.run_time_ns, info.jited_prog_len, info.nr_prog_tags) == \
        (0, 0, 0, 1)


def test_info_without_buffers_reports_sizes_and_null_buffers_fault(k):
    fd = load(k, ld_map(array(k)) + RET0)
    info = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd)
    assert (info.xlated_prog_len, info.nr_map_ids) == (32, 1)
    for field in (dict(xlated_prog_len=8), dict(nr_map_ids=1), dict(nr_prog_tags=1)):
        with pytest.raises(OSError) as e:
            k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info=abi.bpf_prog_info(**field))
        assert e.value.errno == EFAULT
    # a program without maps copies no ids: a NULL map_ids is fine
    info = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=load(k), info=abi.bpf_prog_info(nr_map_ids=3))
    assert info.nr_map_ids == 0


@pytest.mark.parametrize("field, ok", [("nr_func_info", False), ("func_info_rec_size", None),
                                       ("nr_line_info", False), ("nr_jited_line_info", False)])
def test_info_record_size_rules(k, field, ok):
    fd = load(k)
    sizes = dict(func_info_rec_size=8)
    given = abi.bpf_prog_info(**{field: 1})
    if ok is None:
        k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info=abi.bpf_prog_info(**sizes))
        with pytest.raises(OSError) as e:
            k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info=abi.bpf_prog_info(func_info_rec_size=9))
        assert e.value.errno == EINVAL
    else:
        with pytest.raises(OSError) as e:
            k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd, info=given)
        assert e.value.errno == EINVAL


def test_bpf_prog_info_layout():
    assert ctypes.sizeof(abi.bpf_prog_info) == 232
    offsets = {n: getattr(abi.bpf_prog_info, n).offset for n in
               ("tag", "xlated_prog_insns", "nr_map_ids", "map_ids", "name", "netns_dev",
                "nr_prog_tags", "run_time_ns", "verified_insns", "attach_btf_id")}
    assert offsets == dict(tag=8, xlated_prog_insns=32, nr_map_ids=52, map_ids=56, name=64,
                           netns_dev=88, nr_prog_tags=180, run_time_ns=192,
                           verified_insns=216, attach_btf_id=224)


# -- ids, fds, pins, lifetimes -------------------------------------------------------------

def test_prog_ids_are_their_own_space(k):
    m = array(k)
    p1, p2 = load(k), load(k)
    assert k.fds.get(m).id == 1 and (k.fds.get(p1).id, k.fds.get(p2).id) == (1, 2)
    assert k.bpf(Cmd.PROG_GET_NEXT_ID, start_id=0) == 1
    assert k.bpf(Cmd.PROG_GET_NEXT_ID, start_id=1) == 2
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.PROG_GET_NEXT_ID, start_id=2)
    assert e.value.errno == ENOENT


def test_failed_loads_take_no_id(k):
    load_errno(k, call(6), license="MIT")
    assert k.fds.get(load(k)).id == 1


def test_get_fd_by_id(k):
    fd = load(k)
    pid = k.fds.get(fd).id
    fd2 = k.bpf(Cmd.PROG_GET_FD_BY_ID, prog_id=pid)
    assert fd2 != fd and k.fds.get(fd2) is k.fds.get(fd)
    for attr, want in ((dict(prog_id=pid, open_flags=8), EINVAL),
                       (dict(prog_id=pid, open_flags=16), EINVAL),
                       (dict(prog_id=pid + 100), ENOENT)):
        with pytest.raises(OSError) as e:
            k.bpf(Cmd.PROG_GET_FD_BY_ID, **attr)
        assert e.value.errno == want


def test_close_frees_the_program_and_its_maps(k):
    a = array(k)
    fd = load(k, ld_map(a) + RET0)
    prog, m = k.fds.get(fd), k.fds.get(a)
    assert m.refs == 2                      # the fd and the program
    k.close(a)
    assert not m.freed and m.id in k.map_ids.live     # the program keeps it
    k.close(fd)
    assert prog.freed and m.freed
    assert m.id not in k.map_ids.live and prog.id not in k.prog_ids.live


def test_pins_keep_programs_and_obj_get_opens_read_write_only(k):
    fd = load(k)
    prog = k.fds.get(fd)
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/p", bpf_fd=fd)
    k.close(fd)
    assert not prog.freed
    fd2 = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/p")
    assert k.fds.get(fd2) is prog
    for flags in (8, 16):
        with pytest.raises(OSError) as e:
            k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/p", file_flags=flags)
        assert e.value.errno == EINVAL
    k.close(fd2)
    k.fs.unlink(f"{MOUNT}/p")
    assert prog.freed


def test_prog_array_takes_program_fds_not_map_fds(k):
    pa = k.bpf(Cmd.MAP_CREATE, map_type=MapType.PROG_ARRAY, key_size=4, value_size=4,
               max_entries=2)
    fd = load(k)
    prog = k.fds.get(fd)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=struct.pack("<I", 0), value=struct.pack("<I", fd),
          flags=0)
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=pa, key=struct.pack("<I", 0)) == \
        struct.pack("<I", prog.id)
    k.close(fd)
    assert not prog.freed                   # the slot holds it
    k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=pa, key=struct.pack("<I", 0))
    assert prog.freed
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=pa, key=struct.pack("<I", 1),
              value=struct.pack("<I", array(k)), flags=0)
    assert e.value.errno == EINVAL


# -- the ctypes attr -------------------------------------------------------------------------

def c_load(k, code, prog_type=ProgType.SOCKET_FILTER, license=b"GPL", log_size=0, **kw):
    insns = ctypes.create_string_buffer(isa.encode(code))
    lic = ctypes.create_string_buffer(license) if license is not None else None
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = abi.bpf_attr()
    attr._load = abi.ProgLoadAttr(
        prog_type=prog_type, insn_cnt=len(isa.flatten(code)), insns=ctypes.addressof(insns),
        license=ctypes.addressof(lic) if lic is not None else 0, log_size=log_size,
        log_buf=ctypes.addressof(log) if log is not None else 0, **kw)
    return attr, log, (insns, lic)


def test_ctypes_prog_load_and_log(k):
    attr, log, keep = c_load(k, RET0, log_level=1, log_size=200)
    fd = k.bpf(Cmd.PROG_LOAD, attr)
    assert k.fds.get(fd).program.run() == 0
    assert log.value.decode() == STATS0.replace("processed 0", "processed 2")
    assert attr.log_true_size == 98
    attr, log, keep = c_load(k, call(6), license=b"MIT", log_level=1, log_size=30)
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.PROG_LOAD, attr)
    assert e.value.errno == ENOSPC and log.value == STATS0.encode()[-29:]
    assert attr.log_true_size == len(GPL_MSG) + 1 + len(STATS0) + 1
    attr, log, keep = c_load(k, RET0, license=None)
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.PROG_LOAD, attr)
    assert e.value.errno == EFAULT


def test_ctypes_fd_array_and_info(k):
    a = array(k)
    fds = (ctypes.c_int * 2)(999, a)
    attr, log, keep = c_load(k, ld_map(1, Pseudo.MAP_IDX) + RET0,
                             fd_array=ctypes.addressof(fds))
    fd = k.bpf(Cmd.PROG_LOAD, attr)
    info = abi.bpf_prog_info()
    ids = (ctypes.c_uint32 * 1)()
    info.nr_map_ids, info.map_ids = 1, ctypes.addressof(ids)
    iattr = abi.bpf_attr()
    iattr.info.bpf_fd, iattr.info.info_len, iattr.info.info = fd, 232, ctypes.addressof(info)
    k.bpf(Cmd.OBJ_GET_INFO_BY_FD, iattr)
    assert ids[0] == k.fds.get(a).id and info.id == k.fds.get(fd).id
    assert bytes(info.tag) == k.fds.get(fd).tag
    iattr.info.info_len = 8                     # a short struct: only type and id
    short = abi.bpf_prog_info(type=77)
    iattr.info.info = ctypes.addressof(short)
    k.bpf(Cmd.OBJ_GET_INFO_BY_FD, iattr)
    assert (short.type, short.id, bytes(short.tag)) == (ProgType.SOCKET_FILTER, info.id, bytes(8))
    g = abi.bpf_attr()
    g.start_id = 0
    k.bpf(Cmd.PROG_GET_NEXT_ID, g)
    assert g.next_id == info.id
    g.prog_id = info.id
    assert k.fds.get(k.bpf(Cmd.PROG_GET_FD_BY_ID, g)) is k.fds.get(fd)


# -- load_program -------------------------------------------------------------------------------

def test_load_program_with_a_dict_of_maps():
    k = Kernel(ncpus=1)
    m = userbpf.Map(MapType.ARRAY, 4, 8, 1, kernel=k, value_type=int)
    m[0] = 1234
    code = ld_map(50, Pseudo.MAP_VALUE) + [isa.BPF_LDX_MEM(isa.BPF_DW, 0, 1, 0),
                                           isa.BPF_EXIT_INSN()]
    with userbpf.load_program(code, maps={50: m}, name="reader") as p:
        assert p.program.run() == 1234
        info = p.info()
        assert info["map_ids"] == [m.id] and info["name"] == "reader"
        assert info["tag"] == p.tag == sha_tag([Insn(0x18, 1, 2, 0, 0), Insn(0, 0, 0, 0, 0)]
                                               + code[2:])
        assert isa.decode(info["xlated_prog_insns"])[0] == Insn(0x18, 1, 2, 0, m.id)
        fd = p.fd
    assert p.fd is None
    with pytest.raises(OSError) as e:
        k.fds.get(fd)
    assert e.value.errno == errno.EBADF


def test_load_program_with_a_list_of_maps_and_text():
    k = Kernel(ncpus=1)
    maps = [userbpf.Map(MapType.ARRAY, 4, 4, 1, kernel=k) for _ in range(2)]
    p = userbpf.load_program(ld_map(1, Pseudo.MAP_IDX) + RET0, maps=maps)
    assert p.kernel is k and p.info()["map_ids"] == [maps[1].id]
    q = userbpf.load_program("r0 = 3\nexit", kernel=k, prog_type=ProgType.XDP, log_level=1)
    assert q.program.run() == 3 and q.log.startswith("processed 2 insns")
    with pytest.raises(OSError) as e:
        userbpf.load_program(call(6), kernel=k, license="MIT")
    assert e.value.errno == EINVAL and e.value.log.startswith(GPL_MSG)


def test_insns_bytes_not_a_whole_number_of_instructions(k):
    code = isa.encode(RET0)
    for cut in (code[:12], code[:1], code + b"\0"):
        assert load_errno(k, cut) == EINVAL
