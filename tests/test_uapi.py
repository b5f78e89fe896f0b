"""userbpf.uapi against the installed linux/bpf.h and the live kernel.

The installed header (6.1 here) is older than the kernel the table follows
(6.18), so the header checks are one-way: every enumerator the header has
must be in uapi with the same value; uapi may have newer ones, which must
come after the header's.  The kernel tests then confirm some of the newer
numbers by asking bpf() itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
from pathlib import Path

import pytest

from userbpf import uapi
from userbpf.uapi import (
    CONSTANTS,
    AttachType,
    Cmd,
    Func,
    LinkType,
    MapFlag,
    MapType,
    ProgType,
    SkAction,
    StreamId,
    TcAction,
    XdpAction,
    helper_id,
    helper_name,
)

BPF_H = Path("/usr/include/linux/bpf.h")
PKT_CLS_H = Path("/usr/include/linux/pkt_cls.h")


# ---------------------------------------------------------------------------
# A small C header reader: enums, object-like #defines, the helper mapper.
# ---------------------------------------------------------------------------

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
_ENUM = re.compile(r"\benum\s+(\w*)\s*\{(.*?)\}\s*;", re.S)
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(.+?)[ \t]*$", re.M)
_CAST = re.compile(r"\(\s*__[us]\d+\s*\)")


def _c_eval(expr: str, known: dict[str, int]):
    """Value of a C integer constant expression, or None if not one."""
    expr = _CAST.sub("", _INT_SUFFIX.sub(r"\1", expr.replace("\\\n", " ")))
    try:
        value = eval(expr, {"__builtins__": {}}, dict(known))  # noqa: S307
    except Exception:
        return None
    return value if isinstance(value, int) else None


def parse_header(text: str):
    """Return (named enums {enum: {name: value}}, all constants {name: value}).

    Enums and #defines are read in file order, since either may use the other.
    """
    text = _COMMENT.sub(" ", text)
    known: dict[str, int] = {}
    named: dict[str, dict[str, int]] = {}
    items = sorted([*_ENUM.finditer(text), *_DEFINE.finditer(text)], key=lambda m: m.start())
    enum_end = -1
    for match in items:
        if match.re is _DEFINE:
            name, expr = match.groups()
            # A #define inside an enum body (BPF_F_REDIRECT_FLAGS) comes after
            # the enum's members, which are read first; "#define X X" is a no-op.
            value = _c_eval(expr, known) if expr.strip() != name else None
            if value is not None:
                known.setdefault(name, value)
            continue
        if match.start() < enum_end:
            continue
        enum_end = match.end()
        enum_name, body = match.groups()
        members: dict[str, int] = {}
        nxt = 0
        for item in _DEFINE.sub("", body).split(","):
            item = item.strip()
            if not item:
                continue
            name, _, expr = (part.strip() for part in item.partition("="))
            value = _c_eval(expr, known) if expr else nxt
            assert value is not None, f"cannot evaluate {item!r} in enum {enum_name}"
            members[name] = known[name] = value
            nxt = value + 1
        if enum_name:
            named[enum_name] = members
    return named, known


def parse_helper_mapper(text: str) -> list[tuple[str, int]]:
    """Helpers of __BPF_FUNC_MAPPER as (name, id).

    6.1 writes ``FN(name)`` (id = position); 6.2+ ``FN(name, id, ##ctx)``.
    """
    start = text.index("#define __BPF_FUNC_MAPPER")
    block = text[start:text.index("\n\n", start)]
    helpers = []
    for pos, match in enumerate(re.finditer(r"\bFN\(\s*(\w+)\s*(?:,\s*(\d+))?", block)):
        name, number = match.groups()
        helpers.append((name, int(number) if number is not None else pos))
    return helpers


@pytest.fixture(scope="module")
def bpf_h() -> str:
    if not BPF_H.exists():
        pytest.skip(f"{BPF_H} not installed")
    return BPF_H.read_text()


@pytest.fixture(scope="module")
def header(bpf_h):
    return parse_header(bpf_h)


# (C enum, uapi class, prefix the uapi member names drop)
ENUMS = [
    ("bpf_cmd", Cmd, "BPF_"),
    ("bpf_map_type", MapType, "BPF_MAP_TYPE_"),
    ("bpf_prog_type", ProgType, "BPF_PROG_TYPE_"),
    ("bpf_attach_type", AttachType, "BPF_"),
    ("bpf_link_type", LinkType, "BPF_LINK_TYPE_"),
    ("xdp_action", XdpAction, "XDP_"),
    ("sk_action", SkAction, "SK_"),
]


def _real_members(members: dict[str, int]) -> dict[str, int]:
    # Drop the __MAX_BPF_*/MAX_BPF_* sentinels: counts, not values.
    return {n: v for n, v in members.items() if not n.lstrip("_").startswith("MAX_")}


def test_parser_reads_the_header(header):
    named, consts = header
    assert named["bpf_cmd"]["BPF_MAP_CREATE"] == 0
    assert named["bpf_cmd"]["BPF_PROG_RUN"] == named["bpf_cmd"]["BPF_PROG_TEST_RUN"] == 10
    assert named["xdp_action"]["XDP_REDIRECT"] == 4
    assert consts["BPF_F_CTXLEN_MASK"] == 0xFFFFF << 32
    assert consts["BPF_F_CURRENT_NETNS"] == -1
    assert consts["BPF_OBJ_NAME_LEN"] == 16
    assert consts["BPF_F_REDIRECT_FLAGS"] == 0b11001


@pytest.mark.parametrize("c_enum, cls, prefix", ENUMS, ids=[e[0] for e in ENUMS])
def test_enum_matches_header(header, c_enum, cls, prefix):
    members = _real_members(header[0][c_enum])
    assert len(members) >= 2
    mismatched = {
        name: (value, cls.__members__.get(name[len(prefix):]))
        for name, value in members.items()
        if cls.__members__.get(name[len(prefix):]) != value
    }
    assert mismatched == {}, f"{cls.__name__} differs from the header (header, uapi)"
    # Members the header lacks are newer kernels' additions: appended.
    newer = {m: int(v) for m, v in cls.__members__.items()
             if prefix + m not in members and int(v) not in members.values()}
    assert all(v > max(members.values()) for v in newer.values()), newer


@pytest.mark.parametrize("cls", [Cmd, MapType, ProgType, AttachType, LinkType, Func])
def test_enum_values_are_dense(cls):
    # The kernel's enums are plain 0..N sequences; a gap means a typo.
    assert sorted({int(m) for m in cls}) == list(range(max(cls) + 1))


def test_newer_enumerators():
    # Values of the 6.18 kernel the 6.1 header cannot check.
    assert (Cmd.TOKEN_CREATE, Cmd.PROG_STREAM_READ_BY_FD) == (36, 37)
    assert (MapType.CGRP_STORAGE, MapType.ARENA) == (32, 33)
    assert MapType.CGROUP_STORAGE is MapType.CGROUP_STORAGE_DEPRECATED
    assert ProgType.NETFILTER == 32
    assert (AttachType.STRUCT_OPS, AttachType.NETFILTER) == (44, 45)
    assert (AttachType.NETKIT_PEER, AttachType.TRACE_UPROBE_SESSION) == (55, 57)
    assert (LinkType.NETFILTER, LinkType.SOCKMAP) == (10, 14)
    assert (MapFlag.LINK, MapFlag.NO_USER_CONV) == (1 << 13, 1 << 18)


def test_every_header_flag_is_in_uapi(header):
    """Every BPF_F_* of the header (#define or enum) plus the other flag
    enums the brief names has the header's value in uapi.CONSTANTS."""
    consts = header[1]
    wanted = {n for n in consts if n.startswith("BPF_F_")}
    assert len(wanted) > 60  # the 6.1 header has 67
    wanted |= {n for n in consts if re.match(
        r"BPF_(ANY|NOEXIST|EXIST|RB_|RINGBUF_|CSUM_LEVEL_|ADJ_ROOM_ENCAP_L2_"
        r"|LOCAL_STORAGE_GET_F_|SK_STORAGE_GET_F_|SK_LOOKUP_F_|STATS_"
        r"|OBJ_NAME_LEN|TAG_SIZE|BUILD_ID_SIZE)", n)}
    assert {"BPF_ANY", "BPF_F_LOCK", "BPF_RB_PROD_POS", "BPF_RINGBUF_HDR_SZ",
            "BPF_TAG_SIZE", "BPF_F_TEST_RUN_ON_CPU"} <= wanted
    missing = sorted(wanted - CONSTANTS.keys())
    assert missing == []
    wrong = {n: (consts[n], CONSTANTS[n]) for n in wanted if CONSTANTS[n] != consts[n]}
    assert wrong == {}


def test_every_shared_name_agrees_with_header(header):
    # Any kernel-spelled uapi name that the header also defines must agree.
    consts = header[1]
    shared = CONSTANTS.keys() & consts.keys()
    assert len(shared) > 200  # helpers are macro-made: checked separately
    wrong = {n: (consts[n], CONSTANTS[n]) for n in shared if CONSTANTS[n] != consts[n]}
    assert wrong == {}


def test_tc_actions_match_pkt_cls_h():
    if not PKT_CLS_H.exists():
        pytest.skip(f"{PKT_CLS_H} not installed")
    text = PKT_CLS_H.read_text()
    # TC_ACT_JUMP/GOTO_CHAIN use the function-like __TC_ACT_EXT(); expand it.
    text = re.sub(r"__TC_ACT_EXT\((\d+)\)", r"((\1) << __TC_ACT_EXT_SHIFT)", text)
    consts = parse_header(text)[1]
    header_acts = {n: v for n, v in consts.items()
                   if n.startswith("TC_ACT_") and n[7:] in TcAction.__members__}
    assert {"TC_ACT_UNSPEC", "TC_ACT_SHOT", "TC_ACT_REDIRECT", "TC_ACT_JUMP"} <= header_acts.keys()
    assert {n: TcAction[n[7:]] for n in header_acts} == header_acts
    assert len(header_acts) == len(TcAction)


def test_helper_ids_match_header_mapper(bpf_h):
    helpers = parse_helper_mapper(bpf_h)
    assert helpers[:3] == [("unspec", 0), ("map_lookup_elem", 1), ("map_update_elem", 2)]
    assert len(helpers) >= 210  # 6.1 ends at user_ringbuf_drain (209)
    assert {name: Func[name] for name, _ in helpers} == dict(helpers)
    # Helpers newer than the header come after it, ending at 211 (frozen).
    newer = [f for f in Func if f.name not in dict(helpers)]
    assert [int(f) for f in newer] == list(range(len(helpers), 212))
    assert max(Func) == Func.cgrp_storage_delete == 211


def test_helper_spot_values():
    assert (Func.map_lookup_elem, Func.ktime_get_ns, Func.trace_printk) == (1, 5, 6)
    assert Func.tail_call == 12 and Func.ringbuf_output == 130
    assert Func.user_ringbuf_drain == 209 and Func.cgrp_storage_get == 210


def test_helper_name_id_round_trip():
    for func in Func:
        name = helper_name(func)
        assert name == "bpf_" + func.name
        assert helper_id(name) == func
        assert helper_id(func.name) == func
        assert helper_name(int(func)) == name
    assert helper_name(1) == "bpf_map_lookup_elem"
    assert helper_id("bpf_map_lookup_elem") == helper_id("map_lookup_elem") == 1


@pytest.mark.parametrize("bad", [212, -1, 1 << 31])
def test_helper_name_unknown_id(bad):
    with pytest.raises(ValueError, match=rf"unknown BPF helper id {bad} \(helper ids are 0\.\.211\)"):
        helper_name(bad)


@pytest.mark.parametrize("bad", ["bpf_no_such_helper", "no_such_helper", "", "bpf_",
                                 "BPF_FUNC_map_lookup_elem", "MAP_LOOKUP_ELEM", "bpf_bpf_map_lookup_elem"])
def test_helper_id_unknown_name(bad):
    with pytest.raises(KeyError, match=re.escape(f"unknown BPF helper {bad!r}")):
        helper_id(bad)


def test_module_constants_use_kernel_spelling():
    assert (uapi.BPF_ANY, uapi.BPF_NOEXIST, uapi.BPF_EXIST, uapi.BPF_F_LOCK) == (0, 1, 2, 4)
    assert uapi.BPF_F_NO_PREALLOC == 1 and uapi.BPF_F_NO_USER_CONV == 1 << 18
    assert uapi.BPF_F_CURRENT_CPU == uapi.BPF_F_INDEX_MASK == 0xFFFFFFFF
    assert uapi.BPF_MAP_TYPE_ARENA == 33 and uapi.BPF_PROG_TYPE_NETFILTER == 32
    assert uapi.BPF_FUNC_trace_printk == 6 and uapi.BPF_TRACE_UPROBE_SESSION == 57
    assert uapi.BPF_RINGBUF_BUSY_BIT == 1 << 31 and uapi.BPF_RINGBUF_HDR_SZ == 8
    assert (uapi.XDP_ABORTED, uapi.XDP_REDIRECT, uapi.SK_PASS) == (0, 4, 1)
    assert (uapi.TC_ACT_UNSPEC, uapi.TC_ACT_SHOT, uapi.TC_ACT_GOTO_CHAIN) == (-1, 2, 2 << 28)
    assert (uapi.BPF_OBJ_NAME_LEN, uapi.BPF_TAG_SIZE) == (16, 8)
    # A name shared by two flag groups is one value.
    assert uapi.MapFlag.RDONLY == uapi.FileFlag.RDONLY == uapi.BPF_F_RDONLY
    assert uapi.MapFlag.LINK == uapi.AttachFlag.LINK == uapi.BPF_F_LINK


def test_all_exports_resolve():
    assert len(uapi.__all__) == len(set(uapi.__all__))
    for name in uapi.__all__:
        assert hasattr(uapi, name), name
    for name, value in CONSTANTS.items():
        assert getattr(uapi, name) == value
    namespace: dict = {}
    exec("from userbpf.uapi import *", namespace)
    assert namespace["BPF_PROG_STREAM_READ_BY_FD"] == 37 and namespace["Func"] is Func


# ---------------------------------------------------------------------------
# The live kernel.  bpf(2) via ctypes; x86_64 only (syscall number 321).
# ---------------------------------------------------------------------------

_NR_BPF = {"x86_64": 321}
_ATTR_SIZE = 128
MOV64_IMM, CALL, EXIT = 0xB7, 0x85, 0x95


class _Kernel:
    def __init__(self):
        nr = _NR_BPF.get(platform.machine())
        if nr is None:
            pytest.skip(f"bpf() syscall number unknown on {platform.machine()}")
        self.nr = nr
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.keep = []  # buffers referenced by attr pointers

    def ptr(self, data: bytes | int):
        buf = ctypes.create_string_buffer(data) if isinstance(data, int) else \
            ctypes.create_string_buffer(data, len(data))
        self.keep.append(buf)
        return buf, ctypes.addressof(buf)

    def bpf(self, cmd: int, attr: bytes):
        """Return (result, errno, attr after the call)."""
        buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
        ctypes.set_errno(0)
        res = self.libc.syscall(ctypes.c_long(self.nr), ctypes.c_long(cmd), buf,
                                ctypes.c_uint(_ATTR_SIZE))
        return res, (ctypes.get_errno() if res < 0 else 0), buf.raw

    def map_create(self, mtype, key, value, entries, flags=0):
        fd, err, _ = self.bpf(Cmd.MAP_CREATE, struct.pack("<5I", mtype, key, value, entries, flags))
        return fd, err

    def prog_load(self, ptype, insns, attach_type=0, log_level=0):
        code = b"".join(struct.pack("<BBhi", c, d, o, i) for c, d, o, i in insns)
        _, code_p = self.ptr(code)
        _, lic_p = self.ptr(b"GPL\0")
        log, log_p = self.ptr(1 << 16) if log_level else (None, 0)
        attr = struct.pack("<IIQQIIQII16sII", ptype, len(insns), code_p, lic_p, log_level,
                           len(log) if log else 0, log_p, 0, 0, b"", 0, attach_type)
        fd, err, _ = self.bpf(Cmd.PROG_LOAD, attr)
        return fd, err, (log.value.decode() if log else "")


@pytest.fixture(scope="module")
def kernel():
    k = _Kernel()
    fd, err = k.map_create(MapType.ARRAY, 4, 4, 1)
    if fd < 0:
        if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            pytest.skip(f"bpf() not permitted here: {os.strerror(err)}")
        pytest.fail(f"BPF_MAP_CREATE of an ARRAY failed: {os.strerror(err)}")
    os.close(fd)
    return k


@pytest.mark.kernel
def test_kernel_names_every_helper_id(kernel):
    """The verifier log prints each call as ``call bpf_<name>#<id>`` from the
    kernel's own table; that name must be helper_name(id) for every id, and
    id 212 must be unknown to the kernel."""
    names = {}
    for func_id in list(Func) + [max(Func) + 1]:
        fd, err, log = kernel.prog_load(ProgType.SOCKET_FILTER, [
            (MOV64_IMM, 1, 0, 0), (MOV64_IMM, 2, 0, 0), (MOV64_IMM, 3, 0, 0),
            (CALL, 0, 0, int(func_id)), (MOV64_IMM, 0, 0, 0), (EXIT, 0, 0, 0)], log_level=2)
        if fd >= 0:
            os.close(fd)
        found = re.search(rf"call (\S+)#{int(func_id)}\b", log)
        assert found, f"no call line for helper {int(func_id)} in:\n{log}"
        names[int(func_id)] = found.group(1)
    assert names.pop(212) == "unknown"
    assert names == {int(f): helper_name(f) for f in Func}


@pytest.mark.kernel
def test_kernel_accepts_newer_map_types(kernel):
    # Each type has attribute rules no neighbour shares, so a wrong number
    # would be rejected: ringbufs want key=value=0 and a page-multiple size,
    # a bloom filter key 0, an arena MMAPABLE and key=value=0.
    cases = [
        (MapType.RINGBUF, 0, 0, 4096, 0),
        (MapType.USER_RINGBUF, 0, 0, 4096, 0),
        (MapType.BLOOM_FILTER, 0, 4, 16, 0),
        (MapType.QUEUE, 0, 4, 4, 0),
        (MapType.STACK, 0, 4, 4, 0),
        (MapType.LPM_TRIE, 8, 4, 4, MapFlag.NO_PREALLOC),
        (MapType.ARRAY, 4, 8, 4, MapFlag.MMAPABLE),
        (MapType.ARENA, 0, 0, 1, MapFlag.MMAPABLE),
    ]
    for mtype, key, value, entries, flags in cases:
        fd, err = kernel.map_create(mtype, key, value, entries, flags)
        assert fd >= 0, f"{mtype!r}: {os.strerror(err)}"
        os.close(fd)
    # The same ringbuf attributes are rejected for a HASH: numbers matter.
    assert kernel.map_create(MapType.HASH, 0, 0, 4096) == (-1, errno.EINVAL)


@pytest.mark.kernel
def test_kernel_commands_and_prog_types(kernel):
    # NETFILTER programs load only with expected_attach_type NETFILTER.
    ret1 = [(MOV64_IMM, 0, 0, 1), (EXIT, 0, 0, 0)]
    fd, err, _ = kernel.prog_load(ProgType.NETFILTER, ret1, AttachType.NETFILTER)
    assert fd >= 0, os.strerror(err)
    os.close(fd)
    assert kernel.prog_load(ProgType.NETFILTER, ret1, AttachType.STRUCT_OPS)[:2] == (-1, errno.EINVAL)

    # XDP_PASS from an XDP program through BPF_PROG_TEST_RUN.
    fd, err, _ = kernel.prog_load(ProgType.XDP, [(MOV64_IMM, 0, 0, XdpAction.PASS), (EXIT, 0, 0, 0)])
    assert fd >= 0, os.strerror(err)
    try:
        _, pkt = kernel.ptr(bytes(64))
        res, err, out = kernel.bpf(Cmd.PROG_TEST_RUN, struct.pack("<IIIIQQI", fd, 0, 64, 0, pkt, 0, 1))
        assert (res, err) == (0, 0)
        assert struct.unpack_from("<I", out, 4)[0] == XdpAction.PASS

        # BPF_PROG_STREAM_READ_BY_FD: both streams exist (empty), id 3 does not.
        _, buf = kernel.ptr(256)
        for stream in StreamId:
            assert kernel.bpf(Cmd.PROG_STREAM_READ_BY_FD,
                              struct.pack("<QIII", buf, 256, stream, fd))[:2] == (0, 0)
        assert kernel.bpf(Cmd.PROG_STREAM_READ_BY_FD,
                          struct.pack("<QIII", buf, 256, 3, fd))[:2] == (-1, errno.ENOENT)
    finally:
        os.close(fd)

    # MAP_UPDATE/LOOKUP/FREEZE on an ARRAY; a frozen map refuses updates.
    fd, err = kernel.map_create(MapType.ARRAY, 4, 8, 2)
    assert fd >= 0, os.strerror(err)
    try:
        _, key = kernel.ptr(struct.pack("<I", 1))
        _, val = kernel.ptr(struct.pack("<Q", 0x1122334455667788))
        out_buf, out = kernel.ptr(8)
        assert kernel.bpf(Cmd.MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, key, val, uapi.BPF_EXIST))[:2] == (0, 0)
        assert kernel.bpf(Cmd.MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, key, val, uapi.BPF_NOEXIST))[:2] \
            == (-1, errno.EEXIST)
        assert kernel.bpf(Cmd.MAP_LOOKUP_ELEM, struct.pack("<IIQQ", fd, 0, key, out))[:2] == (0, 0)
        assert out_buf.raw[:8] == struct.pack("<Q", 0x1122334455667788)
        assert kernel.bpf(Cmd.MAP_FREEZE, struct.pack("<I", fd))[:2] == (0, 0)
        assert kernel.bpf(Cmd.MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, key, val, uapi.BPF_ANY))[:2] \
            == (-1, errno.EPERM)
    finally:
        os.close(fd)
