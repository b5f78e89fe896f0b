"""The live kernel's ``bpf()`` system call through ctypes: an ORACLE for tests.

This module is not part of the runtime. Tests and benchmarks use it to ask
the real kernel what a program returns, what the verifier says, or how a
map answers, and compare userbpf against that. Everything degrades to
:func:`available` returning False where ``bpf()`` is not permitted (no
root, no CAP_BPF, another OS, an unknown architecture).

The ``union bpf_attr`` pieces are userbpf.abi's ctypes Structures, one per
command family, with the layout of ``include/uapi/linux/bpf.h``.

    >>> from userbpf import hostbpf, isa
    >>> if hostbpf.available():
    ...     code = [isa.BPF_MOV64_IMM(0, 7), isa.BPF_EXIT_INSN()]
    ...     with hostbpf.prog_load(code, hostbpf.ProgType.SOCKET_FILTER) as p:
    ...         assert p.test_run(b"\\0" * 14)[0] == 7
    ...     with hostbpf.map_create(hostbpf.MapType.HASH, 4, 8, 16) as m:
    ...         m.update(b"\\1\\0\\0\\0", bytes(8))
    ...         assert m.lookup(b"\\1\\0\\0\\0") == bytes(8)
"""
from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import platform
import struct
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import abi
from .uapi import Cmd, MapType, ProgType

__all__ = [
    "Cmd", "MapType", "ProgType", "HostError", "HostProg", "HostMap", "TestRun",
    "available", "why_unavailable", "sys_bpf", "prog_load", "map_create", "test_run",
    "obj_pin", "obj_get", "possible_cpus", "prog_load_with_funcs", "is_percpu", "BPF_ANY", "BPF_NOEXIST",
    "BPF_EXIST", "BPF_F_LOCK", "BPF_F_RDONLY", "BPF_F_WRONLY", "BPF_F_NO_PREALLOC",
]

# __NR_bpf per machine; elsewhere bpf() is reported unavailable.
SYSCALL_NR = {"x86_64": 321, "amd64": 321, "aarch64": 280, "arm64": 280}


# Cmd, MapType and ProgType are the kernel's enums from userbpf.uapi.

# Update flags and map_flags (linux/bpf.h).
from .uapi import (BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_F_NO_PREALLOC,  # noqa: E402
                   BPF_F_RDONLY, BPF_F_WRONLY, BPF_NOEXIST, BPF_OBJ_NAME_LEN,
                   PERCPU_MAP_TYPES as PERCPU_TYPES)



# --- union bpf_attr pieces: the kernel's layout, shared with userbpf.abi ------
MapCreateAttr, MapElemAttr, MapBatchAttr = abi.MapCreateAttr, abi.MapElemAttr, abi.MapBatchAttr
ProgLoadAttr, ObjAttr, TestRunAttr = abi.ProgLoadAttr, abi.ObjAttr, abi.TestRunAttr
InfoAttr, BpfMapInfo = abi.InfoAttr, abi.bpf_map_info


# --- the system call ---------------------------------------------------------

class HostError(OSError):
    """A failed ``bpf()`` call: ``errno`` as the kernel returned it, the
    command, and for PROG_LOAD the verifier log (``log``, may be empty)."""

    def __init__(self, err: int, cmd: int, log: str = "", detail: str = ""):
        name = Cmd(cmd).name if cmd in Cmd._value2member_map_ else str(cmd)
        text = f"bpf({name}): {os.strerror(err)}" + (f" ({detail})" if detail else "")
        if log:
            text += "\n" + _log_tail(log)
        super().__init__(err, text)
        self.cmd = cmd
        self.log = log


def _log_tail(log: str, lines: int = 12) -> str:
    rows = log.rstrip("\n").splitlines()
    return "\n".join(rows[-lines:])


@functools.lru_cache(maxsize=None)
def _syscall():
    nr = SYSCALL_NR.get(platform.machine().lower())
    if nr is None or not platform.system() == "Linux":
        return None, None
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    return fn, nr


def sys_bpf(cmd: int, attr: Union[bytes, bytearray, ctypes.Structure, ctypes.Array]) -> int:
    """Raw ``bpf(cmd, attr, size)``: return the result or raise :class:`HostError`.

    ``attr`` is a ctypes object (passed by reference, so the kernel's writes
    are visible) or bytes (copied; a bytearray is written back in place).
    """
    fn, nr = _syscall()
    if fn is None:
        raise HostError(_errno.ENOSYS, cmd, detail=f"no bpf() on {platform.machine()}")
    if isinstance(attr, (bytes, bytearray)):
        buf = ctypes.create_string_buffer(bytes(attr), len(attr))
        ret = fn(nr, int(cmd), ctypes.addressof(buf), len(attr))
        err = ctypes.get_errno()
        if isinstance(attr, bytearray):
            attr[:] = buf.raw[:len(attr)]
    else:
        ret = fn(nr, int(cmd), ctypes.addressof(attr), ctypes.sizeof(attr))
        err = ctypes.get_errno()
    if ret < 0:
        raise HostError(err, cmd)
    return ret


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _buffer(data: Optional[bytes], size: Optional[int] = None):
    """A C buffer holding ``data`` (None: a NULL pointer)."""
    if data is None and not size:
        return None
    data = bytes(data or b"")
    return ctypes.create_string_buffer(data, max(size or 0, len(data), 1))


# --- availability --------------------------------------------------------------

_state: dict = {}


def available() -> bool:
    """True when the live kernel loads a trivial socket filter (cached)."""
    if "ok" not in _state:
        try:
            # r0 = 0; exit
            code = bytes.fromhex("b700000000000000" "9500000000000000")
            prog = prog_load(code, ProgType.SOCKET_FILTER)
            prog.close()
            _state["ok"], _state["why"] = True, ""
        except HostError as e:
            _state["ok"], _state["why"] = False, str(e)
        except OSError as e:    # no libc, a sandbox refusing syscall()
            _state["ok"], _state["why"] = False, f"bpf() failed: {e}"
    return _state["ok"]


def why_unavailable() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    available()
    return _state["why"]


@functools.lru_cache(maxsize=None)
def possible_cpus() -> int:
    """Number of possible CPUs (the kernel sizes per-CPU values by it)."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def is_percpu(map_type: int) -> bool:
    return map_type in PERCPU_TYPES


def _round8(n: int) -> int:
    return (n + 7) & ~7


# --- programs -----------------------------------------------------------------

class TestRun(NamedTuple):
    """What BPF_PROG_TEST_RUN fills: r0 (u32), the output packet, ns per run."""
    __test__ = False        # not a pytest class, whatever its name
    retval: int
    data_out: bytes
    duration: int


class TestRunFull(NamedTuple):
    __test__ = False
    retval: int
    data_out: bytes
    duration: int
    ctx_out: bytes


Code = Union[bytes, bytearray, Sequence]


def _code_bytes(code: Code) -> bytes:
    if isinstance(code, (bytes, bytearray, memoryview)):
        return bytes(code)
    from . import isa
    return isa.encode(code)


class _HostFd:
    """An fd of the live kernel, closed by close(), a with block or the GC."""

    fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class HostProg(_HostFd):
    """A program loaded into the live kernel (close it, or use ``with``).

    ``log`` holds the verifier log when loaded with ``log_level`` > 0.
    """

    def __init__(self, fd: int, prog_type: int, log: str = ""):
        self.fd = fd
        self.prog_type = prog_type
        self.log = log

    def test_run(self, data_in: bytes = b"", repeat: int = 1, ctx_in: Optional[bytes] = None,
                 data_size_out: Optional[int] = None, *, flags: int = 0, cpu: int = 0,
                 ctx_size_out: Optional[int] = None) -> TestRun:
        """Run with BPF_PROG_TEST_RUN: ``(retval, data_out, duration_ns)``.

        ``duration`` is the kernel's mean ns per run over ``repeat`` runs.
        """
        r = self.test_run_full(data_in, repeat, ctx_in, data_size_out, flags=flags, cpu=cpu,
                               ctx_size_out=ctx_size_out)
        return TestRun(r.retval, r.data_out, r.duration)

    def test_run_full(self, data_in: bytes = b"", repeat: int = 1,
                      ctx_in: Optional[bytes] = None, data_size_out: Optional[int] = None, *,
                      flags: int = 0, cpu: int = 0,
                      ctx_size_out: Optional[int] = None) -> TestRunFull:
        """Like :meth:`test_run`, also returning the output context."""
        data_in = bytes(data_in)
        out_size = data_size_out if data_size_out is not None else len(data_in) + 4096
        ctx_out_size = ctx_size_out if ctx_size_out is not None else (
            len(ctx_in) if ctx_in is not None else 0)
        while True:
            din = _buffer(data_in) if data_in else None
            dout = ctypes.create_string_buffer(out_size) if out_size else None
            cin = _buffer(ctx_in) if ctx_in is not None else None
            cout = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
            attr = TestRunAttr(prog_fd=self.fd, data_size_in=len(data_in), data_in=_addr(din),
                               data_size_out=out_size, data_out=_addr(dout),
                               repeat=repeat, flags=flags, cpu=cpu,
                               ctx_size_in=len(ctx_in) if ctx_in is not None else 0,
                               ctx_in=_addr(cin), ctx_size_out=ctx_out_size,
                               ctx_out=_addr(cout))
            try:
                sys_bpf(Cmd.PROG_TEST_RUN, attr)
            except HostError as e:
                # The kernel reports the size it needed: retry once, bigger.
                if e.errno == _errno.ENOSPC and data_size_out is None \
                        and attr.data_size_out > out_size:
                    out_size = attr.data_size_out
                    continue
                raise
            n = min(attr.data_size_out, out_size)
            data = dout.raw[:n] if dout is not None else b""
            ctx = cout.raw[:min(attr.ctx_size_out, ctx_out_size)] if cout is not None else b""
            return TestRunFull(attr.retval, data, attr.duration, ctx)

    def __repr__(self) -> str:
        return f"HostProg(fd={self.fd}, prog_type={self.prog_type})"


LOG_SIZE = 1 << 20
MAX_LOG_SIZE = 1 << 26


def _load(code: bytes, prog_type: int, license: bytes, log_level: int, log_size: int,
          expected_attach_type: int, fd_array, prog_flags: int, name: bytes,
          kern_version: int):
    insns = _buffer(code)
    lic = ctypes.create_string_buffer(license)
    log = ctypes.create_string_buffer(log_size) if log_level else None
    fds = (ctypes.c_int * len(fd_array))(*fd_array) if fd_array else None
    attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(code) // 8, insns=_addr(insns),
                        license=_addr(lic), log_level=log_level,
                        log_size=log_size if log_level else 0, log_buf=_addr(log),
                        kern_version=kern_version, prog_flags=prog_flags,
                        prog_name=name[:BPF_OBJ_NAME_LEN - 1],
                        expected_attach_type=expected_attach_type, fd_array=_addr(fds))
    try:
        fd = sys_bpf(Cmd.PROG_LOAD, attr)
    except HostError as e:
        text = log.value.decode(errors="replace") if log is not None else ""
        raise HostError(e.errno, Cmd.PROG_LOAD, text) from None
    return fd, (log.value.decode(errors="replace") if log is not None else "")


def prog_load(code: Code, prog_type: int, *, license: str = "GPL", log_level: int = 0,
              log_size: int = LOG_SIZE, expected_attach_type: int = 0,
              fd_array: Optional[Sequence[int]] = None, prog_flags: int = 0,
              name: Union[str, bytes] = b"", kern_version: int = 0) -> HostProg:
    """Load ``code`` (bytes or a list of :class:`userbpf.isa.Insn`) into the kernel.

    On failure the load is retried with a verifier log, so the raised
    :class:`HostError` carries the kernel's message in ``.log``.

    >>> if available():
    ...     try:
    ...         prog_load(b"\\x95" + bytes(7), ProgType.SOCKET_FILTER)   # exit, r0 unset
    ...     except HostError as e:
    ...         assert "R0 !read_ok" in e.log
    """
    raw = _code_bytes(code)
    lic = license.encode() if isinstance(license, str) else bytes(license)
    nm = name.encode() if isinstance(name, str) else bytes(name)
    args = (raw, int(prog_type), lic)
    rest = (int(expected_attach_type), list(fd_array or ()), prog_flags, nm, kern_version)
    try:
        fd, log = _load(*args, log_level, log_size, *rest)
    except HostError as first:
        if log_level:
            if first.errno != _errno.ENOSPC:
                raise
        elif first.errno in (_errno.EPERM, _errno.ENOSYS):
            raise
        # Retry with a log (growing it while the kernel says it is too short).
        level, size = log_level or 1, log_size
        while True:
            try:
                fd, log = _load(*args, level, size, *rest)
                break   # loaded after all (a log-only failure)
            except HostError as e:
                if e.errno == _errno.ENOSPC and size < MAX_LOG_SIZE:
                    size *= 4
                    continue
                if not log_level and e.errno == _errno.ENOSPC:
                    raise HostError(first.errno, Cmd.PROG_LOAD, e.log) from None
                raise
    return HostProg(fd, int(prog_type), log)


def test_run(prog: HostProg, data: bytes = b"", repeat: int = 1) -> TestRun:
    """``prog.test_run(data, repeat)`` as a function."""
    return prog.test_run(data, repeat)


# --- maps ---------------------------------------------------------------------

class HostMap(_HostFd):
    """A map in the live kernel. Keys and values are bytes.

    For per-CPU maps a value is ``possible_cpus() * round_up(value_size, 8)``
    bytes (see :meth:`lookup_percpu` / :meth:`update_percpu`). Failed calls
    raise :class:`HostError` with the kernel's errno (ENOENT for a missing key).
    """

    def __init__(self, fd: int, map_type: int, key_size: int, value_size: int,
                 max_entries: int, map_flags: int = 0):
        self.fd = fd
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = map_flags

    @property
    def percpu(self) -> bool:
        return is_percpu(self.map_type)

    @property
    def value_buf_size(self) -> int:
        """Bytes of one value as user space reads and writes it."""
        if self.percpu:
            return possible_cpus() * _round8(self.value_size)
        return self.value_size

    # -- element commands ----------------------------------------------------

    def _elem(self, cmd: int, key: Optional[bytes], value=None, flags: int = 0) -> None:
        kbuf = _buffer(key) if key else None
        attr = MapElemAttr(map_fd=self.fd, key=_addr(kbuf), value=_addr(value), flags=flags)
        sys_bpf(cmd, attr)

    def lookup(self, key: Optional[bytes], flags: int = 0) -> bytes:
        """The value for ``key`` (``None``/b"" for queue/stack: peek)."""
        out = ctypes.create_string_buffer(max(self.value_buf_size, 1))
        self._elem(Cmd.MAP_LOOKUP_ELEM, key, out, flags)
        return out.raw[:self.value_buf_size]

    def update(self, key: Optional[bytes], value: bytes, flags: int = BPF_ANY) -> None:
        """Insert or replace (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK)."""
        self._elem(Cmd.MAP_UPDATE_ELEM, key, _buffer(value, self.value_buf_size), flags)

    def delete(self, key: bytes) -> None:
        self._elem(Cmd.MAP_DELETE_ELEM, key)

    def get_next_key(self, key: Optional[bytes] = None) -> bytes:
        """The key after ``key`` (the first key for None); ENOENT after the last."""
        out = ctypes.create_string_buffer(max(self.key_size, 1))
        self._elem(Cmd.MAP_GET_NEXT_KEY, key, out)
        return out.raw[:self.key_size]

    def lookup_and_delete(self, key: Optional[bytes] = None, flags: int = 0) -> bytes:
        """Pop ``key`` (queue/stack: pop with key None)."""
        out = ctypes.create_string_buffer(max(self.value_buf_size, 1))
        self._elem(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, key, out, flags)
        return out.raw[:self.value_buf_size]

    def freeze(self) -> None:
        """BPF_MAP_FREEZE: no more writes from user space."""
        sys_bpf(Cmd.MAP_FREEZE, MapElemAttr(map_fd=self.fd))

    def keys(self) -> Iterator[bytes]:
        """Iterate with get_next_key until ENOENT."""
        key = None
        while True:
            try:
                key = self.get_next_key(key)
            except HostError as e:
                if e.errno == _errno.ENOENT:
                    return
                raise
            yield key

    def items(self) -> List[Tuple[bytes, bytes]]:
        out = []
        for k in self.keys():
            try:
                out.append((k, self.lookup(k)))
            except HostError as e:
                if e.errno != _errno.ENOENT:
                    raise
        return out

    # -- per-CPU convenience ---------------------------------------------------

    def lookup_percpu(self, key: bytes) -> List[bytes]:
        """Per-CPU value as one ``value_size`` bytes object per possible CPU."""
        raw, step = self.lookup(key), _round8(self.value_size)
        return [raw[i * step:i * step + self.value_size] for i in range(possible_cpus())]

    def update_percpu(self, key: bytes, values: Sequence[bytes], flags: int = BPF_ANY) -> None:
        step = _round8(self.value_size)
        raw = b"".join(bytes(v).ljust(step, b"\0") for v in values)
        self.update(key, raw, flags)

    # -- batches ---------------------------------------------------------------

    def lookup_batch(self, count: int, in_batch: Optional[bytes] = None, *,
                     delete: bool = False, elem_flags: int = 0
                     ) -> Tuple[List[Tuple[bytes, bytes]], Optional[bytes]]:
        """BPF_MAP_LOOKUP[_AND_DELETE]_BATCH: ``(items, out_batch)``.

        ``out_batch`` is the opaque position to pass as ``in_batch`` next,
        or None when the map is exhausted (the kernel's ENOENT).
        """
        tok = max(self.key_size, 8)
        inb = _buffer(in_batch, tok) if in_batch is not None else None
        outb = ctypes.create_string_buffer(tok)
        keys = ctypes.create_string_buffer(max(count * self.key_size, 1))
        vals = ctypes.create_string_buffer(max(count * self.value_buf_size, 1))
        attr = MapBatchAttr(in_batch=_addr(inb), out_batch=_addr(outb), keys=_addr(keys),
                            values=_addr(vals), count=count, map_fd=self.fd,
                            elem_flags=elem_flags)
        done = False
        try:
            sys_bpf(Cmd.MAP_LOOKUP_AND_DELETE_BATCH if delete else Cmd.MAP_LOOKUP_BATCH, attr)
        except HostError as e:
            if e.errno != _errno.ENOENT:
                raise
            done = True
        ks, vs = self.key_size, self.value_buf_size
        items = [(keys.raw[i * ks:(i + 1) * ks], vals.raw[i * vs:(i + 1) * vs])
                 for i in range(attr.count)]
        return items, (None if done else outb.raw)

    def update_batch(self, items: Sequence[Tuple[bytes, bytes]], elem_flags: int = 0) -> int:
        """BPF_MAP_UPDATE_BATCH; returns how many the kernel processed."""
        keys = _buffer(b"".join(bytes(k) for k, _ in items))
        vals = _buffer(b"".join(bytes(v) for _, v in items))
        attr = MapBatchAttr(keys=_addr(keys), values=_addr(vals), count=len(items),
                            map_fd=self.fd, elem_flags=elem_flags)
        try:
            sys_bpf(Cmd.MAP_UPDATE_BATCH, attr)
        except HostError as e:
            e.count = attr.count
            raise
        return attr.count

    def delete_batch(self, keys: Sequence[bytes], elem_flags: int = 0) -> int:
        """BPF_MAP_DELETE_BATCH; returns how many the kernel deleted."""
        kbuf = _buffer(b"".join(bytes(k) for k in keys))
        attr = MapBatchAttr(keys=_addr(kbuf), count=len(keys), map_fd=self.fd,
                            elem_flags=elem_flags)
        try:
            sys_bpf(Cmd.MAP_DELETE_BATCH, attr)
        except HostError as e:
            e.count = attr.count
            raise
        return attr.count

    # -- object --------------------------------------------------------------

    def info(self) -> dict:
        """BPF_OBJ_GET_INFO_BY_FD as a dict of ``struct bpf_map_info`` fields."""
        info = BpfMapInfo()
        attr = InfoAttr(bpf_fd=self.fd, info_len=ctypes.sizeof(info),
                        info=ctypes.addressof(info))
        sys_bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
        out = {name: getattr(info, name) for name, _ in BpfMapInfo._fields_}
        out["name"] = info.name.decode(errors="replace")
        out["info_len"] = attr.info_len
        return out

    def __repr__(self) -> str:
        t = MapType(self.map_type).name if self.map_type in MapType._value2member_map_ \
            else self.map_type
        return (f"HostMap(fd={self.fd}, {t}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries})")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               map_flags: int = 0, *, inner_map_fd: int = 0, name: Union[str, bytes] = b"",
               numa_node: int = 0, map_extra: int = 0) -> HostMap:
    """BPF_MAP_CREATE.

    >>> if available():
    ...     with map_create(MapType.ARRAY, 4, 4, 2) as m:
    ...         assert m.lookup(bytes(4)) == bytes(4)
    """
    nm = name.encode() if isinstance(name, str) else bytes(name)
    attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                         max_entries=max_entries, map_flags=map_flags,
                         inner_map_fd=inner_map_fd, numa_node=numa_node,
                         map_name=nm[:BPF_OBJ_NAME_LEN - 1], map_extra=map_extra)
    fd = sys_bpf(Cmd.MAP_CREATE, attr)
    return HostMap(fd, int(map_type), key_size, value_size, max_entries, map_flags)


# --- bpffs --------------------------------------------------------------------

def obj_pin(fd: int, path: Union[str, bytes, os.PathLike]) -> None:
    """BPF_OBJ_PIN ``fd`` at ``path`` (inside a mounted bpffs)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    sys_bpf(Cmd.OBJ_PIN, ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd))


def obj_get(path: Union[str, bytes, os.PathLike], file_flags: int = 0) -> int:
    """BPF_OBJ_GET: a new fd for the object pinned at ``path``."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return sys_bpf(Cmd.OBJ_GET, ObjAttr(pathname=ctypes.addressof(p), file_flags=file_flags))


# --- programs with subprograms: the kernel wants BTF func_info for them -------

class BtfLoadAttr(ctypes.Structure):
    """BPF_BTF_LOAD."""
    _fields_ = [("btf", ctypes.c_uint64), ("btf_log_buf", ctypes.c_uint64),
                ("btf_size", ctypes.c_uint32), ("btf_log_size", ctypes.c_uint32),
                ("btf_log_level", ctypes.c_uint32)]


def _btf_funcs(n: int) -> bytes:
    """A minimal BTF blob: int, one ``int f(void)`` prototype and n static
    functions f0..f(n-1) of it (what func_info entries name)."""
    names = b"\0int\0" + b"".join(b"f%d\0" % i for i in range(n))
    INT, FUNC, FUNC_PROTO = 1, 12, 13
    types = struct.pack("<IIII", 1, INT << 24, 4, (1 << 24) | 32)        # signed 32-bit
    types += struct.pack("<III", 0, FUNC_PROTO << 24, 1)                 # returns type 1
    off = 5
    for i in range(n):
        types += struct.pack("<III", off, FUNC << 24, 2)                 # static, proto 2
        off += len(b"f%d\0" % i)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(names))
    return hdr + types + names


def prog_load_with_funcs(insns, prog_type: int, license: str = "GPL") -> HostProg:
    """PROG_LOAD with a BTF func_info entry per subprogram (the targets of
    ``call pc+off`` and of ``lddw func[...]``), which the kernel needs for
    callbacks (bpf_loop, for_each_map_elem) and for tail calls from subprograms."""
    from . import isa
    insns = list(insns)
    starts = sorted({0} | {pc + x.imm + 1 for pc, x in enumerate(insns)
                           if (x.code == 0x85 and x.src == isa.BPF_PSEUDO_CALL)
                           or (x.code == 0x18 and x.src == isa.BPF_PSEUDO_FUNC)})
    blob = _btf_funcs(len(starts))
    bbuf = ctypes.create_string_buffer(blob, len(blob))
    btf_fd = sys_bpf(Cmd.BTF_LOAD, BtfLoadAttr(btf=ctypes.addressof(bbuf), btf_size=len(blob)))
    try:
        info = (ctypes.c_uint32 * (2 * len(starts)))(
            *[v for i, s in enumerate(starts) for v in (s, 3 + i)])
        code = isa.encode(insns)
        cbuf = ctypes.create_string_buffer(code, len(code))
        lic = ctypes.create_string_buffer(license.encode())
        attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(code) // 8,
                            insns=ctypes.addressof(cbuf), license=ctypes.addressof(lic),
                            prog_btf_fd=btf_fd, func_info_rec_size=8,
                            func_info=ctypes.addressof(info), func_info_cnt=len(starts))
        return HostProg(sys_bpf(Cmd.PROG_LOAD, attr), prog_type)
    finally:
        os.close(btf_fd)
