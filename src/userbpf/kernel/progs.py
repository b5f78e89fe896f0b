"""Program objects and BPF_PROG_LOAD: the kernel's attr checks, the
verifier log, map references, the license rule, the tag.

``load(kernel, attr)`` follows ``bpf_prog_load`` (kernel/bpf/syscall.c)
and the early, structural part of ``bpf_check`` (kernel/bpf/verifier.c) in
their order, failing with their errnos and log messages; then builds a
runnable :class:`userbpf.Program` over the maps the program references.
Until the verifier lands, what the kernel proves by walking the program
(register types, bounds, helper arguments) is left to the interpreter's
runtime checks.

>>> from userbpf import Kernel, Cmd, ProgType, isa
>>> k = Kernel(ncpus=1)
>>> fd = k.bpf(Cmd.PROG_LOAD, prog_type=ProgType.SOCKET_FILTER, license="GPL",
...            insns=[isa.BPF_MOV64_IMM(0, 7), isa.BPF_EXIT_INSN()])
>>> k.fds.get(fd).program.run()
7
"""
from __future__ import annotations

import errno
import hashlib
import os
import struct
import time
from typing import Dict, List, Sequence, Tuple

from .. import isa
from ..errors import ProgramError
from ..isa import Class, Insn, Pseudo, PseudoCall
from ..program import Program
from ..uapi import AttachType, MapType, ProgFlag, ProgType
from . import maps as _maps
from .errors import ENOTSUPP, bpf_error
from .objects import BpfObject

BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000
BPF_MAX_VAR_OFF = 1 << 29
LICENSE_LEN = 128                     # char license[128], NUL included

# prog_flags bpf_prog_load accepts (anything else: EINVAL)
PROG_FLAGS_MASK = int(ProgFlag.STRICT_ALIGNMENT | ProgFlag.ANY_ALIGNMENT | ProgFlag.TEST_STATE_FREQ
                   | ProgFlag.SLEEPABLE | ProgFlag.TEST_RND_HI32 | ProgFlag.XDP_HAS_FRAGS
                   | ProgFlag.XDP_DEV_BOUND_ONLY | ProgFlag.TEST_REG_INVARIANTS
                   | ProgFlag.TOKEN_FD)      # int: ~ of an IntFlag keeps only its bits

# include/linux/license.h: license_is_gpl_compatible
GPL_COMPATIBLE_LICENSES = frozenset({"GPL", "GPL v2", "GPL and additional rights",
                                     "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"})

# GPL-only helpers and per-type helper permissions: userbpf.helperinfo

# bpf_prog_load_fixup_attach_type: what expected_attach_type 0 means
DEFAULT_ATTACH = {ProgType.CGROUP_SOCK: AttachType.CGROUP_INET_SOCK_CREATE,
                  ProgType.SK_REUSEPORT: AttachType.SK_REUSEPORT_SELECT}
_A = AttachType
# bpf_prog_load_check_attach: the attach types a program type may expect
# (types not listed take any value)
ALLOWED_ATTACH = {
    ProgType.CGROUP_SOCK: frozenset({_A.CGROUP_INET_SOCK_CREATE, _A.CGROUP_INET_SOCK_RELEASE,
                                     _A.CGROUP_INET4_POST_BIND, _A.CGROUP_INET6_POST_BIND}),
    ProgType.CGROUP_SOCK_ADDR: frozenset({
        _A.CGROUP_INET4_BIND, _A.CGROUP_INET6_BIND, _A.CGROUP_INET4_CONNECT,
        _A.CGROUP_INET6_CONNECT, _A.CGROUP_UNIX_CONNECT, _A.CGROUP_INET4_GETPEERNAME,
        _A.CGROUP_INET6_GETPEERNAME, _A.CGROUP_UNIX_GETPEERNAME, _A.CGROUP_INET4_GETSOCKNAME,
        _A.CGROUP_INET6_GETSOCKNAME, _A.CGROUP_UNIX_GETSOCKNAME, _A.CGROUP_UDP4_SENDMSG,
        _A.CGROUP_UDP6_SENDMSG, _A.CGROUP_UNIX_SENDMSG, _A.CGROUP_UDP4_RECVMSG,
        _A.CGROUP_UDP6_RECVMSG, _A.CGROUP_UNIX_RECVMSG}),
    ProgType.CGROUP_SKB: frozenset({_A.CGROUP_INET_INGRESS, _A.CGROUP_INET_EGRESS}),
    ProgType.CGROUP_SOCKOPT: frozenset({_A.CGROUP_SETSOCKOPT, _A.CGROUP_GETSOCKOPT}),
    ProgType.SK_LOOKUP: frozenset({_A.SK_LOOKUP}),
    ProgType.SK_REUSEPORT: frozenset({_A.SK_REUSEPORT_SELECT,
                                      _A.SK_REUSEPORT_SELECT_OR_MIGRATE}),
    ProgType.NETFILTER: frozenset({_A.NETFILTER}),
    ProgType.SYSCALL: frozenset({0}),
    ProgType.EXT: frozenset({0}),
}
# Types that attach to a BTF-described kernel function: without kernel BTF
# userbpf cannot load them (the kernel's answer when no btf_id is given).
NEEDS_BTF = {ProgType.TRACING: (errno.EINVAL, "Tracing programs must provide btf_id"),
             ProgType.LSM: (errno.EINVAL, "LSM programs must provide btf_id"),
             ProgType.EXT: (errno.EINVAL, "Tracing programs must provide btf_id"),
             ProgType.STRUCT_OPS: (ENOTSUPP, "struct_ops programs need a BTF-described "
                                             "struct_ops type (userbpf has no kernel BTF)")}
SLEEPABLE_OK = frozenset({ProgType.TRACING, ProgType.LSM, ProgType.STRUCT_OPS,
                          ProgType.SYSCALL})

# The verifier log (kernel/bpf/log.c)
BPF_LOG_LEVEL1, BPF_LOG_LEVEL2, BPF_LOG_STATS, BPF_LOG_FIXED = 1, 2, 4, 8
BPF_LOG_MASK = BPF_LOG_LEVEL1 | BPF_LOG_LEVEL2 | BPF_LOG_STATS | BPF_LOG_FIXED
LOG_SIZE_MAX = 0xFFFFFFFF >> 2
STATS_LINE = ("processed {} insns (limit 1000000) max_states_per_insn 0 total_states 0 "
              "peak_states 0 mark_read 0\n")

_U32 = struct.Struct("<I")
_LDDW = Class.LD | isa.Size.DW | isa.Mode.IMM


class VerifierLog:
    """``struct bpf_verifier_log``: level, the user buffer and its size.

    The default mode keeps the END of a log that does not fit (the kernel's
    rotating log); BPF_LOG_FIXED keeps the start. Either way a log that did
    not fit fails the load with ENOSPC, and ``true_size`` is what it needed.
    """

    def __init__(self, level: int, buf, size: int):
        # bpf_verifier_log_attr_valid
        if (buf is None) != (size == 0):
            raise bpf_error(errno.EINVAL, "log_buf and log_size must be given together")
        if buf is not None and level == 0:
            raise bpf_error(errno.EINVAL, "log_buf without log_level")
        if level & ~BPF_LOG_MASK:
            raise bpf_error(errno.EINVAL, f"log_level {level:#x} has unknown bits")
        if size > LOG_SIZE_MAX:
            raise bpf_error(errno.EINVAL, "log_size is larger than UINT_MAX >> 2")
        if buf is not None and len(buf) < size:
            raise bpf_error(errno.EFAULT, "log_buf is smaller than log_size")
        self.level, self.buf, self.size = level, buf, size
        self.text = ""

    def write(self, line: str) -> None:
        if self.level:
            self.text += line if line.endswith("\n") else line + "\n"

    @property
    def true_size(self) -> int:
        """Bytes the whole log needs, NUL included (attr.log_true_size)."""
        return len(self.text.encode()) + 1 if self.level else 0

    def finalize(self) -> bool:
        """Copy the log out; False when it did not fit (ENOSPC)."""
        if not self.level:
            return True
        data = self.text.encode()
        if self.buf is None:
            return True
        room = self.size - 1
        fits = len(data) <= room
        if not fits:
            data = data[:room] if self.level & BPF_LOG_FIXED else data[len(data) - room:]
        self.buf[:len(data) + 1] = data + b"\0"
        return fits


class BpfProg(BpfObject):
    """A loaded program as the kernel holds it: its attrs, the maps it
    references (held: a map lives while a program uses it) and the runnable
    :class:`userbpf.Program`."""

    kind = "prog"

    def __init__(self, obj_id: int, prog_type: int, expected_attach_type: int,
                 insns: List[Insn], name: bytes, license: str, maps: List["_maps.BpfMap"],
                 program: Program, prog_flags: int = 0, kern_version: int = 0,
                 log: str = "", verified_insns: int = 0):
        super().__init__(obj_id)
        self.prog_type = prog_type
        self.expected_attach_type = expected_attach_type
        self.insns = insns
        self.name = name
        self.license = license
        self.gpl_compatible = license in GPL_COMPATIBLE_LICENSES
        self.maps = [m.get() for m in maps]
        self.program = program
        self.prog_flags = prog_flags
        self.kern_version = kern_version
        self.load_time = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self.created_by_uid = os.getuid()
        self.tag = calc_tag(insns)
        self.log = log
        self.verified_insns = verified_insns
        self.run_cnt = 0
        self.run_time_ns = 0

    def xlated(self) -> bytes:
        """The instructions as OBJ_GET_INFO_BY_FD dumps them
        (bpf_insn_prepare_dump): map references become MAP_FD / MAP_VALUE
        loads of the map's id (the value offset in the second slot)."""
        out = list(self.insns)
        starts = list(isa.slots(out))
        for pc in starts:
            x = out[pc]
            if x.code == _LDDW and x.src in _MAP_SRCS and pc + 1 < len(out):
                m = self._map_at[pc]
                value = x.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE)
                out[pc] = x._replace(src=Pseudo.MAP_VALUE if value else Pseudo.MAP_FD,
                                     imm=m.id)
                out[pc + 1] = out[pc + 1]._replace(imm=out[pc + 1].imm if value else 0)
        return isa.encode(out)

    def release(self) -> None:
        held, self.maps = self.maps, []
        self.program = None
        for m in held:
            m.put()


_MAP_SRCS = (Pseudo.MAP_FD, Pseudo.MAP_VALUE, Pseudo.MAP_IDX, Pseudo.MAP_IDX_VALUE)


def calc_tag(insns: Sequence[Insn]) -> bytes:
    """bpf_prog_calc_tag: the first 8 bytes of SHA-256 (6.18; SHA-1 before)
    over the instructions, with the imm of MAP_FD / MAP_VALUE loads (both
    slots) zeroed: fds are not stable across loads. MAP_IDX loads keep their
    index, which is.

    >>> calc_tag([isa.BPF_MOV64_IMM(0, 0), isa.BPF_EXIT_INSN()]).hex()
    '59f4a931744dcdc6'
    """
    out, was_ld_map = [], False
    for x in insns:
        if not was_ld_map and x.code == _LDDW and x.src in (Pseudo.MAP_FD, Pseudo.MAP_VALUE):
            was_ld_map, x = True, x._replace(imm=0)
        elif was_ld_map and x.code == 0 and x.dst == 0 and x.src == 0 and x.off == 0:
            was_ld_map, x = False, x._replace(imm=0)
        else:
            was_ld_map = False
        out.append(x)
    return hashlib.sha256(isa.encode(out)).digest()[:8]


def license_text(raw) -> str:
    """The license string as strncpy_from_user reads it (127 chars max)."""
    if isinstance(raw, str):
        raw = raw.encode()
    raw = bytes(raw).split(b"\0", 1)[0][:LICENSE_LEN - 1]
    return raw.decode("latin-1")


def _insns(a: dict) -> List[Insn]:
    """attr.insns / insn_cnt: copy_from_user of insn_cnt instructions."""
    code, cnt = a["insns"], a["insn_cnt"]
    if code is None:
        raise bpf_error(errno.EFAULT, "insns is NULL")
    if isinstance(code, (bytes, bytearray, memoryview)):
        code = bytes(code)
        if len(code) < cnt * 8:
            raise bpf_error(errno.EFAULT, f"insns holds {len(code) // 8} instructions, "
                                          f"insn_cnt is {cnt}")
        return decode_raw(code[:cnt * 8])
    flat = isa.flatten(code)
    if len(flat) < cnt:
        raise bpf_error(errno.EFAULT, f"insns holds {len(flat)} instructions, insn_cnt is {cnt}")
    return [Insn(*x) for x in flat[:cnt]]


_RAW = struct.Struct("<BBhi")


def decode_raw(code: bytes) -> List[Insn]:
    """8-byte slots as they are: what copy_from_user hands the kernel (no
    guessing about byte order, no opinion about the fields)."""
    return [Insn(c, r & 0xF, r >> 4, off, imm) for c, r, off, imm in _RAW.iter_unpack(code)]


def _insn_cnt(a: dict) -> int:
    cnt = a["insn_cnt"]
    if cnt is None:
        code = a["insns"]
        if code is None:
            return 0
        if isinstance(code, (bytes, bytearray, memoryview)):
            if len(code) % 8:
                raise bpf_error(errno.EINVAL, "insns is not a whole number of 8-byte "
                                              "instructions")
            return len(code) // 8
        return len(isa.flatten(code))
    return cnt


class LoadError(Exception):
    """A refusal inside bpf_check: errno and the log line."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.errno, self.message = code, message


def _subprog_starts(insns: List[Insn]) -> List[int]:
    """Where subprograms begin: 0, and every bpf-to-bpf call or
    ``ld_imm64 FUNC`` target (add_subprog_and_kfunc)."""
    starts = {0}
    for pc in isa.slots(insns):
        x = insns[pc]
        if (x.code == isa.Class.JMP | isa.JmpOp.CALL and x.src == PseudoCall.CALL) or \
                (x.code == _LDDW and x.src == Pseudo.FUNC):
            t = pc + x.imm + 1
            if 0 <= t < len(insns):
                starts.add(t)
    return sorted(starts)


def _check_structure(insns: List[Insn]) -> None:
    """add_subprog_and_kfunc / check_subprogs: kfuncs refused, every
    subprogram ends in exit or a jump."""
    for pc in isa.slots(insns):
        x = insns[pc]
        if x.code == isa.Class.JMP | isa.JmpOp.CALL and x.src == PseudoCall.KFUNC_CALL:
            raise LoadError(errno.EINVAL, f"kernel function calls (kfuncs) are not supported "
                                          f"by userbpf: call to kfunc btf_id {x.imm}")
    starts = _subprog_starts(insns) + [len(insns)]
    ends = (Class.JMP | isa.JmpOp.EXIT, Class.JMP | isa.JmpOp.JA, Class.JMP32 | isa.JmpOp.JA)
    for end in starts[1:]:
        if insns[end - 1].code not in ends:
            raise LoadError(errno.EINVAL, "last insn is not an exit or jmp")


def _check_sleepable(prog_type: int, flags: int) -> None:
    """check_attach_btf_id's rules on BPF_F_SLEEPABLE."""
    sleepable = bool(flags & ProgFlag.SLEEPABLE)
    if prog_type == ProgType.SYSCALL and not sleepable:
        raise LoadError(errno.EINVAL, "Syscall programs can only be sleepable")
    if sleepable and prog_type not in SLEEPABLE_OK:
        raise LoadError(errno.EINVAL, "Only fentry/fexit/fmod_ret, lsm, iter, uprobe, and "
                                      "struct_ops programs can be sleepable")
    if prog_type in NEEDS_BTF:
        raise LoadError(*NEEDS_BTF[prog_type])


def _resolve_maps(kernel, insns: List[Insn], fd_array) -> Tuple[List, Dict[int, object], Dict]:
    """resolve_pseudo_ldimm64: every map reference through the fd table.

    Returns (maps in first-use order, fd -> MapCore for the interpreter,
    pc -> map for the dump).
    """
    used: List[_maps.BpfMap] = []
    cores: Dict[int, object] = {}
    at: Dict[int, _maps.BpfMap] = {}
    n = len(insns)
    for pc in isa.slots(insns):
        x = insns[pc]
        if x.code != _LDDW or x.src == Pseudo.NONE:
            continue
        if pc + 1 >= n:
            continue                      # predecode reports the truncated ldimm64
        nxt = insns[pc + 1]
        if x.src == Pseudo.BTF_ID:
            raise LoadError(errno.ENOENT, f"ldimm64 insn specifies invalid btf_id {x.imm}. "
                                          "(userbpf has no kernel BTF)")
        if x.src == Pseudo.FUNC:
            continue
        if x.src not in _MAP_SRCS or (x.src in (Pseudo.MAP_FD, Pseudo.MAP_IDX) and nxt.imm):
            raise LoadError(errno.EINVAL, "unrecognized bpf_ld_imm64 insn")
        if x.src in (Pseudo.MAP_IDX, Pseudo.MAP_IDX_VALUE):
            if fd_array is None:
                raise LoadError(errno.EPROTO, "fd_idx without fd_array is invalid")
            idx = x.imm & 0xFFFFFFFF
            if idx >= len(fd_array):
                raise LoadError(errno.EFAULT, f"fd_array[{idx}] is past the end of fd_array")
            fd = fd_array[idx]
        else:
            fd = x.imm
        try:
            m = kernel.fds.get(fd, _maps.BpfMap)
        except OSError as e:
            raise LoadError(e.errno, f"fd {fd} is not pointing to valid bpf_map") from None
        if x.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            off = nxt.imm & 0xFFFFFFFF
            if off >= BPF_MAX_VAR_OFF:
                raise LoadError(errno.EINVAL, f"direct value offset of {off} is not allowed")
            if m.map_type != MapType.ARRAY:
                raise LoadError(errno.EINVAL, "no direct value access support for this map "
                                              "type")
            if m.attr["max_entries"] != 1 or off >= m.attr["value_size"]:
                # array_map_direct_value_addr: ENOTSUPP for several entries
                raise LoadError(ENOTSUPP if m.attr["max_entries"] != 1
                                else errno.EINVAL,
                                f"invalid access to map value pointer, value_size="
                                f"{m.attr['value_size']} off={off}")
        if m.core is None:
            raise LoadError(ENOTSUPP, f"programs using {MapType(m.map_type).name} maps cannot "
                                      "run in userbpf yet")
        if all(u is not m for u in used):
            used.append(m)
        cores[fd] = m.core
        at[pc] = m
    return used, cores, at


def load(kernel, a: dict, obj_id_alloc) -> Tuple[BpfProg, VerifierLog]:
    """BPF_PROG_LOAD on ``kernel`` with the attr dict ``a``.

    Returns the new program (not yet given an fd) and its log; raises
    OSError with the kernel's errno (``.log`` and ``.log_true_size`` set
    once the verifier log exists).
    """
    flags = a["prog_flags"]
    if flags & ~PROG_FLAGS_MASK:
        raise bpf_error(errno.EINVAL, f"unknown prog_flags {flags & ~PROG_FLAGS_MASK:#x}")
    prog_type = a["prog_type"]
    attach = a["expected_attach_type"]
    if not attach and prog_type in DEFAULT_ATTACH:
        attach = DEFAULT_ATTACH[prog_type]
    if flags & ProgFlag.TOKEN_FD:
        tok = a["prog_token_fd"]
        raise bpf_error(errno.EINVAL if tok in (0, 1, 2) or tok in kernel.fds else errno.EBADF,
                        "prog_token_fd is not a BPF token (userbpf has no tokens)")
    cnt = _insn_cnt(a)
    a["insn_cnt"] = cnt
    if cnt == 0 or cnt > BPF_COMPLEXITY_LIMIT_INSNS:
        raise bpf_error(errno.E2BIG, f"insn_cnt {cnt} is not in 1..{BPF_COMPLEXITY_LIMIT_INSNS}")
    if a["attach_btf_id"] or a["attach_prog_fd"]:
        raise bpf_error(errno.EINVAL, "attach_btf_id / attach_prog_fd need BTF (userbpf has "
                                      "no kernel BTF)")
    allowed = ALLOWED_ATTACH.get(prog_type)
    if allowed is not None and attach not in allowed:
        raise bpf_error(errno.EINVAL, f"expected_attach_type {attach} is not valid for "
                                      f"prog_type {prog_type}")
    insns = _insns(a)
    if a["license"] is None:
        raise bpf_error(errno.EFAULT, "license is NULL")
    lic = license_text(a["license"])
    if a["prog_ifindex"]:
        raise bpf_error(errno.EINVAL, "prog_ifindex: userbpf has no network devices")
    if prog_type not in ProgType._value2member_map_ or prog_type == ProgType.UNSPEC:
        raise bpf_error(errno.EINVAL, f"unknown prog_type {prog_type}")
    name = _maps.check_name(a["prog_name"])
    # -- bpf_check ---------------------------------------------------------
    log = VerifierLog(a["log_level"], a["log_buf"], a["log_size"])
    try:
        if a["prog_btf_fd"] or a["func_info_cnt"] or a["line_info_cnt"] or a["core_relo_cnt"] \
                or a["fd_array_cnt"]:
            raise LoadError(errno.EINVAL, "BTF func/line info, CO-RE relocations and "
                                          "fd_array_cnt are not supported by userbpf")
        _check_structure(insns)
        _check_sleepable(prog_type, flags)
        used, cores, at = _resolve_maps(kernel, insns, a["fd_array"])
        try:
            # check_helper_calls, then the context conversion, then pre-decoding
            program = Program(insns, maps=cores, fd_array=a["fd_array"],
                              prog_type=prog_type, expected_attach_type=attach,
                              gpl_compatible=lic in GPL_COMPATIBLE_LICENSES)
        except ProgramError as e:
            raise LoadError(e.errno, e.msg) from None
        checked = len(list(isa.slots(insns)))
    except LoadError as e:
        log.write(e.message)
        log.write(STATS_LINE.format(0))
        fits = log.finalize()            # a log that did not fit wins over the error
        err = bpf_error(e.errno if fits else errno.ENOSPC, e.message)
        err.log, err.log_true_size = log.text, log.true_size
        raise err from None
    log.write(STATS_LINE.format(checked))
    if not log.finalize():
        err = bpf_error(errno.ENOSPC, "the verifier log does not fit in log_size")
        err.log, err.log_true_size = log.text, log.true_size
        raise err
    for m in used:
        # bpf_check_tail_call, after the verifier: the log is complete
        if m.map_type == MapType.PROG_ARRAY and not m.slots.compatible(prog_type, flags):
            err = bpf_error(errno.EINVAL, f"map {m.id} is a PROG_ARRAY of another program type")
            err.log, err.log_true_size = log.text, log.true_size
            raise err
    prog = BpfProg(obj_id_alloc(), prog_type, attach, insns, name, lic, used, program,
                   flags, a["kern_version"], log.text, checked)
    prog._map_at = at
    return prog, log


def prog_info(prog: BpfProg, given=None):
    """bpf_prog_get_info_by_fd: a filled ``struct bpf_prog_info``.

    ``given`` is the caller's struct: its xlated_prog_len / xlated_prog_insns
    and nr_map_ids / map_ids name buffers that receive the dump and the ids.
    """
    from .. import abi
    info = abi.bpf_prog_info()
    if given is not None:
        ctypes_copy(info, given)
    # set_info_rec_size: record sizes asked for must be the kernel's
    for nr, rec, size in (("nr_func_info", "func_info_rec_size", 8),
                          ("nr_line_info", "line_info_rec_size", 16),
                          ("nr_jited_line_info", "jited_line_info_rec_size", 8)):
        if (getattr(info, nr) or getattr(info, rec)) and getattr(info, rec) != size:
            raise bpf_error(errno.EINVAL, f"{rec} must be {size}")
    info.type = prog.prog_type
    info.id = prog.id
    info.load_time = prog.load_time
    info.created_by_uid = prog.created_by_uid
    info.gpl_compatible = prog.gpl_compatible
    info.tag[:] = list(prog.tag)
    info.name = prog.name
    ulen = min(info.nr_map_ids, len(prog.maps))
    info.nr_map_ids = len(prog.maps)
    if ulen:
        _write(info.map_ids, b"".join(_U32.pack(m.id) for m in prog.maps[:ulen]), "map_ids")
    info.func_info_rec_size, info.line_info_rec_size, info.jited_line_info_rec_size = 8, 16, 8
    info.run_time_ns, info.run_cnt = prog.run_time_ns, prog.run_cnt
    info.verified_insns = prog.verified_insns
    xlated = prog.xlated()
    ulen = info.xlated_prog_len
    info.xlated_prog_len = len(xlated)
    if ulen:
        _write(info.xlated_prog_insns, xlated[:ulen], "xlated_prog_insns")
    # an interpreter: nothing jited
    info.jited_prog_len = info.nr_jited_ksyms = info.nr_jited_func_lens = 0
    ulen = info.nr_prog_tags
    info.nr_prog_tags = 1
    if ulen:
        _write(info.prog_tags, prog.tag, "prog_tags")
    return info


def ctypes_copy(dst, src) -> None:
    import ctypes
    ctypes.memmove(ctypes.addressof(dst), ctypes.addressof(src),
                   min(ctypes.sizeof(dst), ctypes.sizeof(src)))


def _write(addr: int, data: bytes, what: str) -> None:
    from .. import abi
    if not addr:
        raise bpf_error(errno.EFAULT, f"{what} is NULL")
    abi.write(addr, data)


# -- the Pythonic layer ---------------------------------------------------------

class LoadedProgram:
    """A program loaded with :func:`load_program`: its fd in a kernel, the
    runnable :class:`userbpf.Program`, and ``info()``. Close it (or use
    ``with``) to drop the fd; the program lives on while pins or PROG_ARRAY
    slots hold it."""

    def __init__(self, kernel, fd: int, log: str):
        self.kernel, self.fd, self.log = kernel, fd, log
        obj = kernel.fds.get(fd, BpfProg)
        self.program: Program = obj.program
        self.id, self.tag = obj.id, obj.tag

    def info(self) -> dict:
        """OBJ_GET_INFO_BY_FD as a dict: the ``struct bpf_prog_info`` fields,
        with ``map_ids`` (a list), ``xlated_prog_insns`` (bytes), ``tag``
        (bytes) and ``name`` (str)."""
        import ctypes
        from .. import abi
        from ..uapi import Cmd
        first = self.kernel.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=self.fd)
        xl = ctypes.create_string_buffer(max(first.xlated_prog_len, 1))
        ids = (ctypes.c_uint32 * max(first.nr_map_ids, 1))()
        given = abi.bpf_prog_info(xlated_prog_len=first.xlated_prog_len,
                                  xlated_prog_insns=ctypes.addressof(xl),
                                  nr_map_ids=first.nr_map_ids, map_ids=ctypes.addressof(ids))
        info = self.kernel.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=self.fd, info=given)
        out = {name: getattr(info, name) for name, *_ in abi.bpf_prog_info._fields_
               if not name.startswith("_")}
        out.update(tag=bytes(info.tag), name=info.name.decode(),
                   map_ids=list(ids)[:info.nr_map_ids],
                   xlated_prog_insns=xl.raw[:info.xlated_prog_len])
        return out

    def test_run(self, data=None, *, ctx=None, ctx_out: bool = False, repeat: int = 1,
                 cpu: int = 0, flags: int = 0):
        """BPF_PROG_TEST_RUN on this program: a
        :class:`userbpf.kernel.test_run.TestRunResult` (retval, data_out,
        ctx_out, duration), or the kernel's OSError.

        >>> p = load_program("r0 = *(u32 *)(r1 + 0)\\nexit", prog_type=ProgType.SCHED_CLS)
        >>> p.test_run(bytes(60)).retval            # __sk_buff.len
        60
        >>> p.test_run(bytes(60), ctx=bytes(8) + (7).to_bytes(4, "little"),
        ...            ctx_out=True).ctx_out[8:12]   # mark, set in and given back
        b'\\x07\\x00\\x00\\x00'
        """
        from ..uapi import Cmd
        return self.kernel.bpf(Cmd.PROG_TEST_RUN, prog_fd=self.fd, data_in=data, ctx_in=ctx,
                               ctx_out=ctx_out, repeat=repeat, cpu=cpu, flags=flags)

    def close(self) -> None:
        if self.fd is not None:
            self.kernel.close(self.fd)
            self.fd = None

    def __enter__(self) -> "LoadedProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoadedProgram(fd={self.fd}, id={self.id}, tag={self.tag.hex()})"


def load_program(code, prog_type: int = ProgType.SOCKET_FILTER, expected_attach_type: int = 0,
                 maps=None, license: str = "GPL", kernel=None, name: str = "",
                 log_level: int = 0) -> LoadedProgram:
    """PROG_LOAD made easy: ``code`` is bytecode, instructions or assembler
    text. ``maps`` is a dict {fd the code's ``lddw`` names: userbpf.Map}
    (the loads are pointed at each map's real fd) or a list of Maps that
    MAP_IDX loads name by index (the fd_array). Failures raise the kernel's
    OSError with the verifier log in ``.log`` (the load is retried with
    log_level 1 to get it).

    >>> from userbpf import Map, MapType, isa
    >>> m = Map(MapType.ARRAY, 4, 8, 1)
    >>> ld = isa.BPF_LD_IMM64(1, 0)
    >>> code = [ld[0]._replace(src=isa.Pseudo.MAP_FD, imm=100), ld[1],
    ...         isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]
    >>> with load_program(code, maps={100: m}, kernel=m.kernel) as p:
    ...     p.program.run(), p.info()["map_ids"] == [m.id]
    (1, True)
    """
    from ..program import to_insns
    insns = to_insns(code)
    fd_array = None
    if isinstance(maps, dict):
        known = list(maps.values())
        insns = _renumber_first_slots(insns, {int(fd): m.fd for fd, m in maps.items()})
    elif maps is not None:
        known = list(maps)
        fd_array = [m.fd for m in known]
    else:
        known = []
    if kernel is None:
        kernel = known[0].kernel if known else None
    if kernel is None:
        from .kernel import default_kernel
        kernel = default_kernel()
    def attempt(level: int) -> int:
        buf = bytearray(1 << 20) if level else None
        return kernel.prog_load(dict(
            _attr_defaults(), prog_type=prog_type, expected_attach_type=expected_attach_type,
            insns=insns, insn_cnt=None, license=license, prog_name=name, fd_array=fd_array,
            log_level=level, log_buf=buf, log_size=len(buf) if buf else 0))[0]

    try:
        fd = attempt(log_level)
    except OSError as first:
        if log_level:
            raise
        attempt(1)          # fails again (a failed load changes nothing), now with a log
        raise first         # pragma: no cover - the retry always raises
    log = kernel.fds.get(fd).log
    return LoadedProgram(kernel, fd, log)


def _renumber_first_slots(insns: List[Insn], renumber: Dict[int, int]) -> List[Insn]:
    out = list(insns)
    for pc in isa.slots(out):
        x = out[pc]
        if x.code == _LDDW and x.src in (Pseudo.MAP_FD, Pseudo.MAP_VALUE):
            out[pc] = x._replace(imm=renumber.get(x.imm, x.imm))
    return out


def _attr_defaults() -> dict:
    from ..uapi import Cmd
    from .kernel import ATTR_FIELDS   # kernel.py imports this module: import late
    return dict(ATTR_FIELDS[Cmd.PROG_LOAD])
