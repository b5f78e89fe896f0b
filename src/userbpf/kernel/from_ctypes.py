"""bpf() with a ctypes ``union bpf_attr``: read the caller's buffers the
pointers name, run the command, write results back as the kernel does
(values to ``attr.value``, next keys to ``attr.next_key``, ids into the
attr, info structs to ``attr.info.info`` with ``info_len`` updated).

A NULL pointer where the command needs one gives EFAULT, as copy_from_user
does; bytes past what a command reads must be zero (EINVAL), as the
kernel's CHECK_ATTR demands.
"""
from __future__ import annotations

import ctypes
import errno
from typing import Any, Callable, Dict

from .. import abi
from ..isa import Pseudo
from ..uapi import Cmd
from . import batch as batch_mod
from . import progs, test_run
from .errors import bpf_error

# Bytes of the union each command reads (offsetofend of its last field).
_CREATE = abi.MapCreateAttr
_USED: Dict[int, int] = {
    Cmd.MAP_CREATE: ctypes.sizeof(_CREATE),
    Cmd.MAP_LOOKUP_ELEM: ctypes.sizeof(abi.MapElemAttr),
    Cmd.MAP_UPDATE_ELEM: ctypes.sizeof(abi.MapElemAttr),
    Cmd.MAP_DELETE_ELEM: ctypes.sizeof(abi.MapElemAttr),
    Cmd.MAP_GET_NEXT_KEY: ctypes.sizeof(abi.MapElemAttr),
    Cmd.MAP_LOOKUP_AND_DELETE_ELEM: ctypes.sizeof(abi.MapElemAttr),
    Cmd.MAP_FREEZE: 4,
    Cmd.MAP_GET_NEXT_ID: 8,
    Cmd.MAP_GET_FD_BY_ID: 12,
    Cmd.OBJ_PIN: ctypes.sizeof(abi.ObjAttr),
    Cmd.OBJ_GET: ctypes.sizeof(abi.ObjAttr),
    Cmd.OBJ_GET_INFO_BY_FD: ctypes.sizeof(abi.InfoAttr),
    Cmd.MAP_LOOKUP_BATCH: ctypes.sizeof(abi.MapBatchAttr),
    Cmd.MAP_LOOKUP_AND_DELETE_BATCH: ctypes.sizeof(abi.MapBatchAttr),
    Cmd.MAP_UPDATE_BATCH: ctypes.sizeof(abi.MapBatchAttr),
    Cmd.MAP_DELETE_BATCH: ctypes.sizeof(abi.MapBatchAttr),
    Cmd.PROG_LOAD: ctypes.sizeof(abi.ProgLoadAttr),
    Cmd.PROG_TEST_RUN: ctypes.sizeof(abi.TestRunAttr),
    Cmd.ENABLE_STATS: 4,
    Cmd.PROG_GET_NEXT_ID: 8,
    Cmd.PROG_GET_FD_BY_ID: ctypes.sizeof(abi.GetIdAttr),
}
# fd_array entries a program may name by index (the kernel reads any the
# caller's memory holds; userbpf reads what the program uses, up to this)
FD_ARRAY_MAX = 1 << 20


def _need(addr: int, what: str) -> int:
    if not addr:
        raise bpf_error(errno.EFAULT, f"{what} is NULL")
    return addr


def _value_size(k, fd) -> int:
    m = k._map(fd)
    if m.core is not None:
        return m.core.sys_value_size
    return m.attr["value_size"]


def _key(k, fd, addr):
    ks = k._map(fd).attr["key_size"]
    if ks == 0:
        return None
    return abi.read(_need(addr, "key"), ks)


def _map_create(k, a):
    f = abi.fields(a._create)
    f["map_name"] = bytes(a._create.map_name)
    return k.bpf(Cmd.MAP_CREATE, **f)


def _lookup(k, a):
    value = k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=a.map_fd, key=_key(k, a.map_fd, a.key),
                  flags=a.flags)
    abi.write(_need(a.value, "value"), value)
    return 0


def _update(k, a):
    value = abi.read(_need(a.value, "value"), _value_size(k, a.map_fd))
    return k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=a.map_fd, key=_key(k, a.map_fd, a.key),
                 value=value, flags=a.flags)


def _delete(k, a):
    return k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=a.map_fd, key=_key(k, a.map_fd, a.key),
                 flags=a.flags)


def _next_key(k, a):
    key = _key(k, a.map_fd, a.key) if a.key else None
    nxt = k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=a.map_fd, key=key)
    abi.write(_need(a.next_key, "next_key"), nxt)
    return 0


def _lookup_and_delete(k, a):
    value = k.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=a.map_fd,
                  key=_key(k, a.map_fd, a.key), flags=a.flags)
    abi.write(_need(a.value, "value"), value)
    return 0


def _next_id(k, a):
    a.next_id = k.bpf(Cmd.MAP_GET_NEXT_ID, start_id=a.start_id)
    return 0


def _obj(cmd):
    def run(k, a):
        return k.bpf(cmd, pathname=abi.c_string(_need(a.pathname, "pathname")),
                     bpf_fd=a.bpf_fd, file_flags=a.file_flags, path_fd=a.path_fd)
    return run


def _info(k, a):
    obj = k._object(a.info.bpf_fd)
    kind = abi.bpf_prog_info if obj.kind == "prog" else abi.bpf_map_info
    size = ctypes.sizeof(kind)
    n = a.info.info_len
    if n > size:        # the caller's struct is newer: its tail must be zero
        tail = abi.read(_need(a.info.info, "info"), n)[size:]
        if any(tail):
            raise bpf_error(errno.E2BIG, f"info has non-zero bytes past struct {kind.__name__}")
        n = size
    given = None
    if obj.kind == "prog":      # its buffer pointers and counts are input
        given = kind.from_buffer_copy(abi.read(_need(a.info.info, "info"), n).ljust(size, b"\0"))
    info = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=a.info.bpf_fd, info=given)
    abi.write(_need(a.info.info, "info"), bytes(info)[:n])
    a.info.info_len = n
    return 0


def _user_view(addr: int, size: int):
    """The caller's buffer as a writable memoryview (None for NULL)."""
    if not addr:
        return None
    return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")


def _fd_array(addr: int, insns: bytes):
    """The fd_array entries the program's MAP_IDX loads name, read from the
    caller's int array (entries no load names read as 0)."""
    if not addr:
        return None
    idx = [x.imm & 0xFFFFFFFF for x in progs.decode_raw(insns) if x.code == 0x18
           and x.src in (Pseudo.MAP_IDX, Pseudo.MAP_IDX_VALUE)]
    if not idx:
        return []
    if max(idx) >= FD_ARRAY_MAX:
        raise bpf_error(errno.EFAULT, f"fd_array index {max(idx)} is past what userbpf reads")
    out = [0] * (max(idx) + 1)
    for i in set(idx):
        out[i] = ctypes.c_int.from_address(addr + 4 * i).value
    return out


def _prog_load(k, a):
    """PROG_LOAD: the instructions, license and fd_array from the caller's
    memory; the log written into its log_buf; log_true_size written back."""
    f = abi.fields(a._load)
    cnt = a.insn_cnt
    if not a.insns:
        f["insns"] = None
    elif 0 < cnt <= progs.BPF_COMPLEXITY_LIMIT_INSNS:
        f["insns"] = abi.read(a.insns, cnt * 8)
    else:
        f["insns"] = b""            # insn_cnt fails first (E2BIG)
    f["license"] = ctypes.string_at(a.license) if a.license else None
    f["log_buf"] = _user_view(a.log_buf, a.log_size)
    f["fd_array"] = _fd_array(a.fd_array, f["insns"] or b"")
    try:
        fd, true_size = k.prog_load(f)
    except OSError as e:
        if hasattr(e, "log_true_size"):
            a.log_true_size = e.log_true_size
        raise
    a.log_true_size = true_size
    return fd


def _test_run(k, a):
    """PROG_TEST_RUN: data_in / ctx_in read from the caller; data_out,
    data_size_out, retval, duration, ctx_out and ctx_size_out written back as
    bpf_test_finish / bpf_ctx_finish do (ENOSPC after a truncated copy)."""
    t = a.test
    if bool(t.ctx_size_in) != bool(t.ctx_in) or bool(t.ctx_size_out) != bool(t.ctx_out):
        raise bpf_error(errno.EINVAL, "ctx_in/ctx_out and their sizes go together")
    data_in = abi.read(t.data_in, t.data_size_in) if t.data_in else None
    if data_in is None and t.data_size_in:
        raise bpf_error(errno.EFAULT, "data_in is NULL")
    ctx_in = abi.read(t.ctx_in, t.ctx_size_in) if t.ctx_in else None
    res = k.bpf(Cmd.PROG_TEST_RUN, prog_fd=t.prog_fd, data_in=data_in, ctx_in=ctx_in,
                ctx_out=bool(t.ctx_out), repeat=t.repeat, flags=t.flags, cpu=t.cpu,
                batch_size=t.batch_size, data_out=bool(t.data_out), duration=t.duration)
    if k.fds.get(t.prog_fd).prog_type in test_run.RETVAL_ONLY:
        if res.ctx_out:                     # a syscall program's context, over ctx_in
            ctypes.memmove(t.ctx_in, res.ctx_out, len(res.ctx_out))
        t.retval = res.retval               # the only output these types write
        return 0
    err = None
    data = res.data_out
    if t.data_size_out and len(data) > t.data_size_out:
        err = bpf_error(errno.ENOSPC, f"data_out needs {len(res.data_out)} bytes")
        data = test_run.truncate_data_out(data, res.frags_size, t.data_size_out)
        if data is None and t.data_out:
            raise err                       # nothing copied, no sizes written
        data = data or b""
    if t.data_out and data:
        ctypes.memmove(t.data_out, data, len(data))
    t.data_size_out = len(res.data_out)
    t.retval = res.retval
    t.duration = res.duration
    if err is not None:
        raise err
    if t.ctx_out and res.ctx_out is not None:
        ctx = res.ctx_out
        if len(ctx) > t.ctx_size_out:
            err = bpf_error(errno.ENOSPC, f"ctx_out needs {len(ctx)} bytes")
            ctx = ctx[:t.ctx_size_out]
        ctypes.memmove(t.ctx_out, ctx, len(ctx))
        t.ctx_size_out = len(res.ctx_out)
        if err is not None:
            raise err
    return 0


def _prog_next_id(k, a):
    a.next_id = k.bpf(Cmd.PROG_GET_NEXT_ID, start_id=a.start_id)
    return 0


def _batch(cmd):
    """The batch commands: arrays of count keys / values at attr.batch.keys /
    .values; count (and out_batch for lookups) written back even when the
    command fails, as the kernel does."""
    reads = cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH)

    def run(k, a):
        b = a.batch
        m = k._map(b.map_fd)
        ks, vs, count = m.attr["key_size"], _value_size(k, b.map_fd), b.count
        fields = dict(map_fd=b.map_fd, count=count, elem_flags=b.elem_flags, flags=b.flags)
        if reads:
            if b.in_batch:
                token = 4 if m.map_type in batch_mod.HASH_TYPES else ks
                fields["in_batch"] = abi.read(b.in_batch, token)
        else:
            raw = abi.read(_need(b.keys, "keys"), ks * count) if count else b""
            fields["keys"] = [raw[i * ks:(i + 1) * ks] for i in range(count)]
            if cmd == Cmd.MAP_UPDATE_BATCH:
                raw = abi.read(_need(b.values, "values"), vs * count) if count else b""
                fields["values"] = [raw[i * vs:(i + 1) * vs] for i in range(count)]
        try:
            result = k.bpf(cmd, **fields)
            err = None
        except OSError as e:
            result, err = getattr(e, "batch", None), e
        if result is not None:
            if reads and result.count:
                abi.write(_need(b.keys, "keys"), b"".join(result.keys))
                abi.write(_need(b.values, "values"), b"".join(result.values))
            if reads and result.out_batch is not None:
                abi.write(_need(b.out_batch, "out_batch"), result.out_batch)
            b.count = result.count
        if err is not None:
            raise err
        return 0
    return run


CONVERTERS: Dict[int, Callable[[Any, abi.bpf_attr], Any]] = {
    Cmd.MAP_CREATE: _map_create,
    Cmd.MAP_LOOKUP_ELEM: _lookup,
    Cmd.MAP_UPDATE_ELEM: _update,
    Cmd.MAP_DELETE_ELEM: _delete,
    Cmd.MAP_GET_NEXT_KEY: _next_key,
    Cmd.MAP_LOOKUP_AND_DELETE_ELEM: _lookup_and_delete,
    Cmd.MAP_FREEZE: lambda k, a: k.bpf(Cmd.MAP_FREEZE, map_fd=a.map_fd),
    Cmd.MAP_GET_NEXT_ID: _next_id,
    Cmd.MAP_GET_FD_BY_ID: lambda k, a: k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=a.map_id,
                                             open_flags=a.open_flags),
    Cmd.OBJ_PIN: _obj(Cmd.OBJ_PIN),
    Cmd.OBJ_GET: _obj(Cmd.OBJ_GET),
    Cmd.OBJ_GET_INFO_BY_FD: _info,
    Cmd.MAP_LOOKUP_BATCH: _batch(Cmd.MAP_LOOKUP_BATCH),
    Cmd.MAP_LOOKUP_AND_DELETE_BATCH: _batch(Cmd.MAP_LOOKUP_AND_DELETE_BATCH),
    Cmd.MAP_UPDATE_BATCH: _batch(Cmd.MAP_UPDATE_BATCH),
    Cmd.MAP_DELETE_BATCH: _batch(Cmd.MAP_DELETE_BATCH),
    Cmd.PROG_LOAD: _prog_load,
    Cmd.PROG_TEST_RUN: _test_run,
    Cmd.ENABLE_STATS: lambda k, a: k.bpf(Cmd.ENABLE_STATS, type=a.map_type),  # enable_stats.type
    Cmd.PROG_GET_NEXT_ID: _prog_next_id,
    Cmd.PROG_GET_FD_BY_ID: lambda k, a: k.bpf(Cmd.PROG_GET_FD_BY_ID, prog_id=a.prog_id,
                                              open_flags=a.open_flags,
                                              fd_by_id_token_fd=a.fd_by_id_token_fd),
}


def call(k, cmd: int, attr: abi.bpf_attr) -> Any:
    """Kernel.bpf for a ctypes attr: CHECK_ATTR, convert, run, write back."""
    if not isinstance(attr, abi.bpf_attr):
        raise TypeError("attr must be a userbpf.abi.bpf_attr")
    convert = CONVERTERS.get(cmd)
    if convert is None:
        raise bpf_error(errno.EINVAL, f"bpf command {cmd} does not take a ctypes attr yet")
    used = _USED[cmd]
    if any(bytes(attr)[used:]):
        raise bpf_error(errno.EINVAL, f"non-zero attr bytes past {Cmd(cmd).name}'s fields")
    return convert(k, attr)
