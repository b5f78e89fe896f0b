"""The simulated kernel: one process's view of bpf().

``Kernel.bpf(cmd, **attr)`` takes the kernel's command and ``union bpf_attr``
field names, validates them as the kernel does, and returns what the kernel
returns (an fd, bytes for value-returning commands) or raises ``OSError``
with the kernel's errno.

>>> from userbpf.uapi import Cmd, MapType
>>> k = Kernel(ncpus=2)
>>> fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.HASH, key_size=4, value_size=8, max_entries=16)
>>> k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=b"\\1\\0\\0\\0", value=bytes(8), flags=0)
0
>>> k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=b"\\1\\0\\0\\0")
b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Any, Callable, Dict, Optional

from ..abi import bpf_attr, bpf_map_info
from ..uapi import Cmd, MapType
from . import batch, from_ctypes
from . import maps as _maps
from . import progs as _progs
from . import test_run as _test_run
from .bpffs import BpfFs
from .errors import ENOTSUPP, bpf_error
from .objects import BpfObject, FdTable, IdSpace

# Fields each command reads, with their defaults (anything else: EINVAL,
# as the kernel's CHECK_ATTR refuses non-zero bytes past a command's fields).
ATTR_FIELDS: Dict[int, Dict[str, Any]] = {
    Cmd.MAP_CREATE: dict(map_type=0, key_size=0, value_size=0, max_entries=0, map_flags=0,
                         inner_map_fd=0, numa_node=0, map_name=b"", map_ifindex=0,
                         btf_fd=0, btf_key_type_id=0, btf_value_type_id=0,
                         btf_vmlinux_value_type_id=0, map_extra=0,
                         value_type_btf_obj_fd=0, map_token_fd=0),
    Cmd.MAP_LOOKUP_ELEM: dict(map_fd=None, key=None, value=None, flags=0),
    Cmd.MAP_UPDATE_ELEM: dict(map_fd=None, key=None, value=None, flags=0),
    Cmd.MAP_DELETE_ELEM: dict(map_fd=None, key=None, flags=0),
    Cmd.MAP_GET_NEXT_KEY: dict(map_fd=None, key=None),
    Cmd.MAP_LOOKUP_AND_DELETE_ELEM: dict(map_fd=None, key=None, flags=0),
    Cmd.MAP_FREEZE: dict(map_fd=None),
    Cmd.MAP_GET_NEXT_ID: dict(start_id=0),
    Cmd.MAP_GET_FD_BY_ID: dict(map_id=0, open_flags=0),
    Cmd.OBJ_PIN: dict(pathname=None, bpf_fd=None, file_flags=0, path_fd=0),
    Cmd.OBJ_GET: dict(pathname=None, bpf_fd=0, file_flags=0, path_fd=0),
    Cmd.OBJ_GET_INFO_BY_FD: dict(bpf_fd=None, info_len=None, info=None),
    # insns: bytes or instructions; insn_cnt None = all of them; license
    # None = a NULL pointer (EFAULT, as the kernel); log_buf: a writable
    # buffer of at least log_size bytes; fd_array: a list of fds
    Cmd.PROG_LOAD: dict(prog_type=0, insn_cnt=None, insns=None, license=None, log_level=0,
                        log_size=0, log_buf=None, kern_version=0, prog_flags=0,
                        prog_name=b"", prog_ifindex=0, expected_attach_type=0,
                        prog_btf_fd=0, func_info_rec_size=0, func_info=None,
                        func_info_cnt=0, line_info_rec_size=0, line_info=None,
                        line_info_cnt=0, attach_btf_id=0, attach_prog_fd=0,
                        core_relo_cnt=0, fd_array=None, core_relos=None,
                        core_relo_rec_size=0, log_true_size=0, prog_token_fd=0,
                        fd_array_cnt=0),
    Cmd.PROG_GET_NEXT_ID: dict(start_id=0),
    # data_size_out / ctx_size_out None: no limit; ctx_out True: give the output context
    Cmd.ENABLE_STATS: dict(type=0),
    # data_out: does the caller give an output buffer (None: as the type expects);
    # duration: attr.test.duration as given (types that take none refuse it)
    Cmd.PROG_TEST_RUN: dict(prog_fd=None, data_in=None, data_out=None, data_size_out=None,
                            ctx_in=None, ctx_out=False, ctx_size_out=None, repeat=0, flags=0,
                            cpu=0, batch_size=0, duration=0),
    Cmd.PROG_GET_FD_BY_ID: dict(prog_id=0, open_flags=0, fd_by_id_token_fd=0),
}
for _cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH, Cmd.MAP_UPDATE_BATCH,
             Cmd.MAP_DELETE_BATCH):
    ATTR_FIELDS[_cmd] = dict(map_fd=None, in_batch=None, keys=None, values=None, count=None,
                             elem_flags=0, flags=0)

# MAP_LOOKUP_AND_DELETE_ELEM exists for these only (others: ENOTSUPP)
LOOKUP_AND_DELETE_TYPES = frozenset({MapType.QUEUE, MapType.STACK, MapType.HASH,
                                     MapType.PERCPU_HASH, MapType.LRU_HASH,
                                     MapType.LRU_PERCPU_HASH})
BPF_F_RDONLY = _maps.BPF_F_RDONLY
BPF_F_WRONLY = _maps.BPF_F_WRONLY


class Kernel:
    """An isolated simulated kernel: its own fds, ids, bpffs and CPUs."""

    def __init__(self, ncpus: Optional[int] = None):
        self.ncpus = int(ncpus or os.cpu_count() or 1)
        if not 1 <= self.ncpus <= 1024:
            raise ValueError("ncpus must be between 1 and 1024")
        self.fds = FdTable()
        self.map_ids = IdSpace()
        self.prog_ids = IdSpace()        # programs count their own ids, as in the kernel
        self.fs = BpfFs()
        self.stats_users = 0             # open BPF_ENABLE_STATS fds
        self._lock = threading.RLock()
        self._thread_cpu = threading.local()
        self._next_cpu = 0
        self._commands: Dict[int, Callable[..., Any]] = {
            Cmd.MAP_CREATE: self._map_create,
            Cmd.MAP_LOOKUP_ELEM: self._map_lookup_elem,
            Cmd.MAP_UPDATE_ELEM: self._map_update_elem,
            Cmd.MAP_DELETE_ELEM: self._map_delete_elem,
            Cmd.MAP_GET_NEXT_KEY: self._map_get_next_key,
            Cmd.MAP_LOOKUP_AND_DELETE_ELEM: self._map_lookup_and_delete_elem,
            Cmd.MAP_FREEZE: self._map_freeze,
            Cmd.MAP_GET_NEXT_ID: self._map_get_next_id,
            Cmd.MAP_GET_FD_BY_ID: self._map_get_fd_by_id,
            Cmd.OBJ_PIN: self._obj_pin,
            Cmd.OBJ_GET: self._obj_get,
            Cmd.OBJ_GET_INFO_BY_FD: self._obj_get_info_by_fd,
            Cmd.MAP_LOOKUP_BATCH: self._map_batch(Cmd.MAP_LOOKUP_BATCH),
            Cmd.MAP_LOOKUP_AND_DELETE_BATCH: self._map_batch(Cmd.MAP_LOOKUP_AND_DELETE_BATCH),
            Cmd.MAP_UPDATE_BATCH: self._map_batch(Cmd.MAP_UPDATE_BATCH),
            Cmd.MAP_DELETE_BATCH: self._map_batch(Cmd.MAP_DELETE_BATCH),
            Cmd.PROG_LOAD: self._prog_load,
            Cmd.PROG_GET_NEXT_ID: self._prog_get_next_id,
            Cmd.PROG_GET_FD_BY_ID: self._prog_get_fd_by_id,
            Cmd.PROG_TEST_RUN: self._prog_test_run,
            Cmd.ENABLE_STATS: self._enable_stats,
        }

    # -- the entry point -------------------------------------------------------
    def bpf(self, cmd: int, attr: Optional[bpf_attr] = None, **fields_given) -> Any:
        """Run one bpf() command. Unknown commands fail with EINVAL.

        The attr is given as keywords (the kernel's field names, Python
        values: bytes for keys and values, None for NULL) or as a ctypes
        :class:`userbpf.abi.bpf_attr` whose pointers name the caller's
        buffers; results then land in those buffers, as from the kernel.
        """
        handler = self._commands.get(cmd)
        if handler is None:
            raise bpf_error(errno.EINVAL, f"unknown or unsupported bpf command {cmd}")
        if attr is not None:
            if fields_given:
                raise TypeError("give the attr as a bpf_attr or as keywords, not both")
            with self._lock:
                return from_ctypes.call(self, cmd, attr)
        attr = fields_given
        fields = ATTR_FIELDS[cmd]
        extra = set(attr) - set(fields)
        if extra:
            raise bpf_error(errno.EINVAL, f"{Cmd(cmd).name} has no attr field "
                                          f"{', '.join(sorted(extra))}")
        full = dict(fields)
        full.update(attr)
        with self._lock:
            return handler(full)

    def current_cpu(self) -> int:
        """The simulated CPU the calling thread runs programs on: threads get
        CPUs round-robin at their first call and keep them (per-CPU map
        values are indexed by it).

        >>> k = Kernel(ncpus=2)
        >>> k.current_cpu() == k.current_cpu()
        True
        """
        cpu = getattr(self._thread_cpu, "cpu", None)
        if cpu is None:
            with self._lock:
                cpu = self._thread_cpu.cpu = self._next_cpu
                self._next_cpu = (self._next_cpu + 1) % self.ncpus
        return cpu

    def close(self, fd: int) -> None:
        """Close an fd (EBADF if it is not open)."""
        with self._lock:
            obj = self.fds.get(fd)
            if getattr(obj, "slots", None) is not None:
                obj.slots.release_file(fd)     # (perf_event_fd_array_release)
            self.fds.close(fd)

    # -- helpers ---------------------------------------------------------------
    def _object(self, fd):
        return self.fds.get(fd)

    def _map(self, fd) -> _maps.BpfMap:
        return self.fds.get(fd, _maps.BpfMap)

    def _writable(self, fd, m: _maps.BpfMap) -> None:
        if self.fds.modes.get(fd, 0) & BPF_F_RDONLY or m.frozen:
            raise bpf_error(errno.EPERM, "map is frozen or the fd is read-only")

    def _readable(self, fd) -> None:
        if self.fds.modes.get(fd, 0) & BPF_F_WRONLY:
            raise bpf_error(errno.EPERM, "the fd is write-only")

    def _key(self, m: _maps.BpfMap, key):
        """Keyless maps (QUEUE, STACK, BLOOM_FILTER) take key=None."""
        if key is None and m.attr["key_size"] == 0:
            return None
        return self._bytes(key, "key")

    @staticmethod
    def _bytes(value, what: str) -> bytes:
        if value is None:
            raise bpf_error(errno.EFAULT, f"{what} is missing")
        try:
            return bytes(value)
        except TypeError:
            raise bpf_error(errno.EFAULT, f"{what} must be bytes-like") from None

    # -- map commands ----------------------------------------------------------
    def _map_create(self, a: dict) -> int:
        for f in ("map_type", "key_size", "value_size", "max_entries", "map_flags"):
            if not isinstance(a[f], int) or not 0 <= a[f] < 1 << 32:
                raise bpf_error(errno.EINVAL, f"{f} must be a u32")
        if a["map_flags"] & BPF_F_RDONLY and a["map_flags"] & BPF_F_WRONLY:
            raise bpf_error(errno.EINVAL, "BPF_F_RDONLY with BPF_F_WRONLY")
        if a["btf_vmlinux_value_type_id"]:
            if a["map_type"] != MapType.STRUCT_OPS or a["btf_key_type_id"] or \
                    a["btf_value_type_id"]:
                raise bpf_error(errno.EINVAL, "btf_vmlinux_value_type_id is for STRUCT_OPS")
        elif a["btf_key_type_id"] and not a["btf_value_type_id"]:
            raise bpf_error(errno.EINVAL, "btf_key_type_id without btf_value_type_id")
        if a["map_extra"] and a["map_type"] not in (MapType.BLOOM_FILTER, MapType.ARENA):
            raise bpf_error(errno.EINVAL, "map_extra is for BLOOM_FILTER and ARENA only")
        a["numa_node"] = a["numa_node"] if a["map_flags"] & _maps.BPF_F_NUMA_NODE \
            else _maps.NUMA_NO_NODE
        if a["numa_node"] != _maps.NUMA_NO_NODE and a["numa_node"] != 0:
            raise bpf_error(errno.EINVAL, "numa_node is not an online node (one node here)")
        obj = _maps.create(self.map_ids.new_id(), a, self.ncpus, self._object)
        self.map_ids.add(obj)
        return self.fds.install(obj, a["map_flags"] & (BPF_F_RDONLY | BPF_F_WRONLY))

    def _no_lock_flag(self, flags: int) -> None:
        # BPF_F_LOCK needs a bpf_spin_lock in the value, i.e. BTF: none here
        if flags & _maps.BPF_F_LOCK:
            raise bpf_error(errno.EINVAL, "BPF_F_LOCK needs a value with a bpf_spin_lock")

    def _map_lookup_elem(self, a: dict) -> bytes:
        if a["flags"] & ~_maps.BPF_F_LOCK:            # checked before the fd, as the kernel
            raise bpf_error(errno.EINVAL, "invalid flags")
        m = self._map(a["map_fd"])
        self._readable(a["map_fd"])
        self._no_lock_flag(a["flags"])
        value = None if a["value"] is None else self._bytes(a["value"], "value")
        return m.lookup(self._key(m, a["key"]), a["flags"], value)

    def _map_update_elem(self, a: dict) -> int:
        m = self._map(a["map_fd"])
        self._writable(a["map_fd"], m)
        self._no_lock_flag(a["flags"])
        m.update(self._key(m, a["key"]), self._bytes(a["value"], "value"), a["flags"],
                 file=a["map_fd"])
        return 0

    def _map_delete_elem(self, a: dict) -> int:
        if a["flags"]:
            raise bpf_error(errno.EINVAL, "MAP_DELETE_ELEM takes no flags")
        m = self._map(a["map_fd"])
        self._writable(a["map_fd"], m)
        m.delete(self._key(m, a["key"]))
        return 0

    def _map_get_next_key(self, a: dict) -> bytes:
        m = self._map(a["map_fd"])
        self._readable(a["map_fd"])
        key = None if a["key"] is None else self._bytes(a["key"], "key")
        return m.get_next_key(key)

    def _map_lookup_and_delete_elem(self, a: dict) -> bytes:
        if a["flags"] & ~_maps.BPF_F_LOCK:
            raise bpf_error(errno.EINVAL, "invalid flags")
        m = self._map(a["map_fd"])
        self._readable(a["map_fd"])
        self._writable(a["map_fd"], m)
        if a["flags"] and m.map_type in (MapType.QUEUE, MapType.STACK):
            raise bpf_error(errno.EINVAL, "QUEUE and STACK pops take no flags")
        self._no_lock_flag(a["flags"])
        if m.map_type not in LOOKUP_AND_DELETE_TYPES:
            raise bpf_error(ENOTSUPP, f"{MapType(m.map_type).name} has no lookup-and-delete")
        return m.lookup_and_delete(self._key(m, a["key"]), a["flags"])

    def _map_batch(self, cmd: int) -> Callable[[dict], "batch.BatchResult"]:
        """bpf_map_do_batch: permissions, then the map type's batch op."""
        reads = cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH)
        writes = cmd != Cmd.MAP_LOOKUP_BATCH

        def run(a: dict) -> batch.BatchResult:
            fd = a["map_fd"]
            m = self._map(fd)
            if reads:
                self._readable(fd)
            if writes:
                self._writable(fd, m)
            batch.supported(cmd, m.map_type)
            keys, values = a["keys"], a["values"]
            count = a["count"]
            if count is None:
                count = len(keys) if keys is not None and not reads else 0
            in_batch = None if a["in_batch"] is None else self._bytes(a["in_batch"], "in_batch")
            if not reads:                    # elem_flags and count 0 come before the buffers
                batch.check_elem_flags(a["elem_flags"])
                if count == 0:
                    return batch.BatchResult([], [], 0, None)
            if reads:
                if m.map_type in batch.HASH_TYPES:
                    return batch.hash_lookup(m, in_batch, count, a["elem_flags"], a["flags"],
                                             cmd == Cmd.MAP_LOOKUP_AND_DELETE_BATCH)
                return batch.generic_lookup(m, in_batch, count, a["elem_flags"])
            if keys is None or len(keys) < count or (
                    cmd == Cmd.MAP_UPDATE_BATCH and (values is None or len(values) < count)):
                raise bpf_error(errno.EFAULT, "keys/values hold fewer than count elements")
            keys = [self._bytes(k, "key") for k in keys[:count]]
            if cmd == Cmd.MAP_DELETE_BATCH:
                return batch.delete(m, keys, count, a["elem_flags"])
            values = [self._bytes(v, "value") for v in values[:count]]
            return batch.update(m, keys, values, count, a["elem_flags"])
        return run

    def _map_freeze(self, a: dict) -> int:
        m = self._map(a["map_fd"])
        # a frozen map is read-only to user space, so refreezing fails the
        # write-permission check first (EPERM), as in the kernel
        if m.frozen or self.fds.modes.get(a["map_fd"], 0) & BPF_F_RDONLY:
            raise bpf_error(errno.EPERM, "the map is frozen or the fd is read-only")
        m.frozen = True
        return 0

    def _map_get_next_id(self, a: dict) -> int:
        return self.map_ids.next_id(a["start_id"])

    def _map_get_fd_by_id(self, a: dict) -> int:
        flags = a["open_flags"]
        if flags & ~(BPF_F_RDONLY | BPF_F_WRONLY) or flags == BPF_F_RDONLY | BPF_F_WRONLY:
            raise bpf_error(errno.EINVAL, "invalid open_flags")
        obj = self.map_ids.live.get(a["map_id"])
        if obj is None:
            raise bpf_error(errno.ENOENT, f"no map with id {a['map_id']}")
        return self.fds.install(obj, a["open_flags"])

    def _obj_get_info_by_fd(self, a: dict):
        """struct bpf_map_info for a map fd, struct bpf_prog_info for a
        program fd (``info``: the caller's bpf_prog_info naming buffers for
        the instruction dump and the map ids)."""
        obj = self._object(a["bpf_fd"])
        if obj.kind == "prog":
            return _progs.prog_info(obj, a["info"])
        m = self._map(a["bpf_fd"])
        info = bpf_map_info(type=m.map_type, id=m.id, key_size=m.attr["key_size"],
                            value_size=m.attr["value_size"],
                            max_entries=m.attr["max_entries"], map_flags=m.attr["map_flags"],
                            name=m.name, map_extra=m.attr["map_extra"])
        return info

    # -- bpffs -------------------------------------------------------------------
    def _obj_pin(self, a: dict) -> int:
        if a["file_flags"]:
            raise bpf_error(errno.EINVAL, "OBJ_PIN takes no file_flags")
        obj = self.fds.get(a["bpf_fd"])
        self.fs.pin(a["pathname"], obj)
        return 0

    def _obj_get(self, a: dict) -> int:
        flags = a["file_flags"]
        if flags & ~(BPF_F_RDONLY | BPF_F_WRONLY) or (flags & BPF_F_RDONLY and flags & BPF_F_WRONLY):
            raise bpf_error(errno.EINVAL, "invalid file_flags")
        if a["bpf_fd"]:
            raise bpf_error(errno.EINVAL, "OBJ_GET takes no bpf_fd")
        obj = self.fs.lookup(a["pathname"])
        if obj.kind == "prog" and flags:        # program files open read-write only
            raise bpf_error(errno.EINVAL, "programs cannot be opened read-only or write-only")
        return self.fds.install(obj, flags)

    # -- program commands --------------------------------------------------------
    def _prog_load(self, a: dict) -> int:
        return self.prog_load(a)[0]

    def prog_load(self, a: dict) -> tuple:
        """PROG_LOAD with a full attr dict: ``(fd, log_true_size)``. Errors
        carry ``.log`` and ``.log_true_size`` once the log exists."""
        prog, log = _progs.load(self, a, self.prog_ids.new_id)
        self.prog_ids.add(prog)
        return self.fds.install(prog), log.true_size

    def _prog_get_next_id(self, a: dict) -> int:
        return self.prog_ids.next_id(a["start_id"])

    def _prog_get_fd_by_id(self, a: dict) -> int:
        if a["open_flags"] or a["fd_by_id_token_fd"]:
            raise bpf_error(errno.EINVAL, "PROG_GET_FD_BY_ID takes no open_flags")
        obj = self.prog_ids.live.get(a["prog_id"])
        if obj is None:
            raise bpf_error(errno.ENOENT, f"no program with id {a['prog_id']}")
        return self.fds.install(obj)


    def _enable_stats(self, a: dict) -> int:
        """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): an fd; while one is open,
        test runs add to their program's run_cnt and run_time_ns."""
        if a["type"] != BPF_STATS_RUN_TIME:
            raise bpf_error(errno.EINVAL, f"unknown stats type {a['type']}")
        return self.fds.install(_StatsFd(self))

    def _prog_test_run(self, a: dict):
        """PROG_TEST_RUN: a :class:`userbpf.kernel.test_run.TestRunResult`.

        With ``data_size_out`` / ``ctx_size_out`` smaller than the output,
        the error is ENOSPC, as in the kernel, and carries the truncated
        result in ``.result`` (``data_out`` cut to the size; the kernel
        still reports the full size).
        """
        if a["ctx_in"] is not None and not len(a["ctx_in"]):
            raise bpf_error(errno.EINVAL, "ctx_in without ctx_size_in")
        prog = self.fds.get(a["prog_fd"], _progs.BpfProg)
        res = _test_run.test_run(prog.program, a["data_in"], a["ctx_in"],
                                 ctx_out=bool(a["ctx_out"] or a["ctx_size_out"]),
                                 repeat=a["repeat"], cpu=a["cpu"], flags=a["flags"],
                                 batch_size=a["batch_size"], ncpus=self.ncpus,
                                 data_out=a["data_out"], duration=a["duration"])
        limit = a["data_size_out"]
        if limit and len(res.data_out) > limit:
            cut = _test_run.truncate_data_out(res.data_out, res.frags_size, limit)
            err = bpf_error(errno.ENOSPC, f"data_out needs {len(res.data_out)} bytes")
            err.result = res._replace(data_out=cut if cut is not None else b"")
            # (nothing copied at all: the kernel then reports no size either)
            err.data_size_out = len(res.data_out) if cut is not None else None
            raise err
        limit = a["ctx_size_out"]
        if limit is not None and res.ctx_out is not None and len(res.ctx_out) > limit:
            err = bpf_error(errno.ENOSPC, f"ctx_out needs {len(res.ctx_out)} bytes")
            err.result = res._replace(ctx_out=res.ctx_out[:limit])
            err.ctx_size_out = len(res.ctx_out)
            raise err
        if self.stats_users:           # BPF_ENABLE_STATS fds open: count the runs
            runs = 1 if prog.prog_type in _test_run.RETVAL_ONLY else max(a["repeat"], 1)
            prog.run_cnt += runs
            prog.run_time_ns += res.duration * runs
        if res.ctx_out is not None and not (a["ctx_out"] or a["ctx_size_out"]) \
                and prog.prog_type not in _test_run.RETVAL_ONLY:   # (syscall: the new ctx_in)
            res = res._replace(ctx_out=None)
        return res


BPF_STATS_RUN_TIME = 0


class _StatsFd(BpfObject):
    """The fd BPF_ENABLE_STATS returns: run-time stats stay on while it is open."""
    kind = "stats"

    def __init__(self, kernel: Kernel):
        super().__init__(0)
        self.kernel = kernel
        kernel.stats_users += 1

    def release(self) -> None:
        self.kernel.stats_users -= 1


_default: Optional[Kernel] = None


def default_kernel() -> Kernel:
    """The kernel behind the module-level :func:`userbpf.bpf`."""
    global _default
    if _default is None:
        _default = Kernel()
    return _default


def bpf(cmd: int, **attr) -> Any:
    """``bpf()`` on the default kernel. See :meth:`Kernel.bpf`."""
    return default_kernel().bpf(cmd, **attr)
