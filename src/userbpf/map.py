"""The Pythonic face of a map: a dict-like :class:`Map` over ``bpf()``.

Keys and values go in as bytes, ints (little-endian, the map's size) or
ctypes structures, and come out as bytes, or as the ctypes type / int the
map was told (``key_type=``, ``value_type=``). Per-CPU maps take and give a
list with one value per simulated CPU. Every call is one ``bpf()`` command
on the map's kernel, so errors carry the kernel's errno.

>>> from userbpf import Map, MapType
>>> m = Map(MapType.HASH, key_size=4, value_size=8, max_entries=16, value_type=int)
>>> m[1] = 42
>>> m[1], len(m), 2 in m
(42, 1, False)
"""
from __future__ import annotations

import ctypes
import errno
from typing import Any, Iterator, List, Optional, Union

from .kernel import Kernel, default_kernel
from .uapi import (BPF_ANY, BPF_F_MMAPABLE, BPF_F_RDONLY, BPF_F_WRONLY, PERCPU_MAP_TYPES,
                   Cmd, MapType)

PERCPU_TYPES = frozenset(int(t) for t in PERCPU_MAP_TYPES)   # plain ints: a hot-path test

Convertible = Union[bytes, bytearray, memoryview, int, ctypes.Structure, ctypes.Array]


def to_bytes(value: Convertible, size: int, what: str = "value") -> bytes:
    """bytes for the kernel: ints are little-endian unsigned (or signed if < 0)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        try:
            return value.to_bytes(size, "little", signed=value < 0)
        except OverflowError:
            raise ValueError(f"{what} {value} does not fit in {size} bytes") from None
    if isinstance(value, (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)):
        return bytes(memoryview(value).cast("B"))
    return bytes(value)


def from_bytes(data: bytes, kind: Optional[type]):
    if kind is None or kind is bytes:
        return data
    if kind is int:
        return int.from_bytes(data, "little")
    return kind.from_buffer_copy(data)


class Map:
    """A map in a simulated kernel, used like a dict.

    ``Map(map_type, key_size, value_size, max_entries, map_flags=0, ...)``
    creates one (MAP_CREATE); :meth:`Map.from_fd` wraps an existing fd.
    ``m[key]`` raises KeyError for a missing key; ``m.lookup(key)`` raises
    the kernel's OSError instead.
    """

    __slots__ = ("kernel", "fd", "map_type", "key_size", "value_size", "max_entries",
                 "map_flags", "key_type", "value_type", "_key_limit", "_percpu",
                 "_value_limit", "_value_int", "_files", "_obj", "_rcore", "_wcore")

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int,
                 map_flags: int = 0, *, name: Union[str, bytes] = b"",
                 kernel: Optional[Kernel] = None, key_type: Optional[type] = None,
                 value_type: Optional[type] = None, inner_map: Optional["Map"] = None,
                 map_extra: int = 0, fd: Optional[int] = None):
        self.kernel = kernel or default_kernel()
        if fd is None:
            extra = {"inner_map_fd": inner_map.fd} if inner_map is not None else {}
            fd = self.kernel.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=key_size,
                                 value_size=value_size, max_entries=max_entries,
                                 map_flags=map_flags, map_extra=map_extra,
                                 map_name=name.encode() if isinstance(name, str) else name,
                                 **extra)
        self.fd = fd
        self._bind()
        self.map_type = MapType(map_type)
        self.key_size, self.value_size = key_size, value_size
        self.max_entries, self.map_flags = max_entries, map_flags
        self.key_type, self.value_type = key_type, value_type
        self._key_limit = 1 << (8 * key_size)
        self._percpu = int(map_type) in PERCPU_TYPES
        self._value_limit = 1 << (8 * value_size)
        self._value_int = value_type is int and not self._percpu

    def _bind(self) -> None:
        """Remember the map object and its C storage for the fast path.

        The element operations check that ``fd`` still names this object
        (one dict lookup), then call the C storage directly: the same
        storage calls ``Kernel.bpf`` makes, without its attr plumbing. Any
        other case (a closed fd, a frozen map, a read- or write-only fd, a
        map without C storage) takes the full ``bpf()`` path and its errno.
        """
        fds = self.kernel.fds
        self._files = fds._files
        self._obj = obj = fds._files.get(self.fd)
        mode = fds.modes.get(self.fd, 0)
        # fd maps keep their values in Python (slots) and keyless maps take
        # key None: no fast path for them
        core = getattr(obj, "core", None) if getattr(obj, "slots", None) is None else None
        if not obj.attr["key_size"]:
            core = None
        self._rcore = core if core is not None and not mode & BPF_F_WRONLY else None
        self._wcore = core if core is not None and not mode & BPF_F_RDONLY else None

    def _fast(self, core):
        """The C storage if the fast path applies now, else None."""
        if core is not None and self._files.get(self.fd) is self._obj:
            return core
        return None

    @classmethod
    def from_fd(cls, fd: int, kernel: Optional[Kernel] = None, **types) -> "Map":
        """Wrap an open map fd (e.g. from OBJ_GET or MAP_GET_FD_BY_ID)."""
        kernel = kernel or default_kernel()
        info = kernel.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=fd)
        return cls(info.type, info.key_size, info.value_size, info.max_entries,
                   info.map_flags, kernel=kernel, fd=fd, **types)

    @classmethod
    def pinned(cls, path: str, kernel: Optional[Kernel] = None, **types) -> "Map":
        """Open a map pinned at ``path`` (OBJ_GET)."""
        kernel = kernel or default_kernel()
        return cls.from_fd(kernel.bpf(Cmd.OBJ_GET, pathname=path), kernel, **types)

    # -- conversions -------------------------------------------------------------
    @property
    def percpu(self) -> bool:
        return self._percpu

    @property
    def ncpus(self) -> int:
        return self.kernel.ncpus

    def _k(self, key) -> Optional[bytes]:
        if self.key_size == 0:
            return None
        if type(key) is bytes:          # the common cases first: this is the hot path
            return key
        if type(key) is int and 0 <= key < self._key_limit:
            return key.to_bytes(self.key_size, "little")
        return to_bytes(key, self.key_size, "key")

    def _v(self, value) -> bytes:
        if not self._percpu:
            if type(value) is bytes:
                return value
            if type(value) is int and 0 <= value < self._value_limit:
                return value.to_bytes(self.value_size, "little")
            return to_bytes(value, self.value_size)
        stride = (self.value_size + 7) & ~7
        if not isinstance(value, (list, tuple)):
            value = [value] * self.ncpus      # the same value on every CPU
        if len(value) != self.ncpus:
            raise ValueError(f"a per-CPU value needs {self.ncpus} entries, got {len(value)}")
        return b"".join(to_bytes(v, self.value_size).ljust(stride, b"\0") for v in value)

    def _out_v(self, data: bytes):
        if not self._percpu:
            if self.value_type is int:
                return int.from_bytes(data, "little")
            return from_bytes(data, self.value_type)
        stride = (self.value_size + 7) & ~7
        return [from_bytes(data[i * stride:i * stride + self.value_size], self.value_type)
                for i in range(self.ncpus)]

    # -- the bpf() commands ----------------------------------------------------
    def lookup(self, key=None, flags: int = 0):
        """MAP_LOOKUP_ELEM (OSError with ENOENT for a missing key)."""
        core = self._fast(self._rcore)
        if core is not None and self.key_size:
            return self._out_v(core.lookup(self._k(key), flags))
        return self._out_v(self.kernel.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=self.fd,
                                           key=self._k(key), flags=flags))

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        """MAP_UPDATE_ELEM with BPF_ANY / BPF_NOEXIST / BPF_EXIST (| BPF_F_LOCK)."""
        core = self._fast(self._wcore)
        if core is not None and self.key_size and not self._obj.frozen:
            core.update(self._k(key), self._v(value), flags)
            return
        self.kernel.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=self.fd, key=self._k(key),
                        value=self._v(value), flags=flags)

    def delete(self, key) -> None:
        core = self._fast(self._wcore)
        if core is not None and self.key_size and not self._obj.frozen:
            core.delete(self._k(key))
            return
        self.kernel.bpf(Cmd.MAP_DELETE_ELEM, map_fd=self.fd, key=self._k(key))

    def lookup_and_delete(self, key=None, flags: int = 0):
        return self._out_v(self.kernel.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=self.fd,
                                           key=self._k(key), flags=flags))

    def next_key(self, key=None):
        """MAP_GET_NEXT_KEY: the key after ``key`` (the first for None)."""
        nxt = self.kernel.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=self.fd,
                              key=None if key is None else self._k(key))
        return from_bytes(nxt, self.key_type)

    # queue / stack / bloom filter spelling
    def push(self, value, flags: int = BPF_ANY) -> None:
        self.update(None, value, flags)

    def pop(self):
        return self.lookup_and_delete(None)

    def peek(self):
        return self.lookup(None)

    def mmap(self, writable: bool = True) -> memoryview:
        """The values of a ``BPF_F_MMAPABLE`` ARRAY as one memoryview shared
        with programs (element i at ``i * round_up(value_size, 8)``), as
        ``mmap()`` of the map fd gives. Other maps fail as the kernel's mmap:
        ENODEV for types without mmap, EINVAL without BPF_F_MMAPABLE, EPERM
        for a writable mapping of a frozen map.

        >>> m = Map(MapType.ARRAY, 4, 8, 2, map_flags=1 << 10, value_type=int)
        >>> view = m.mmap()
        >>> view[8] = 7
        >>> m[1]
        7
        """
        obj = self.kernel.fds.get(self.fd)
        if self.map_type != MapType.ARRAY or obj.core is None:
            raise OSError(errno.ENODEV, "this map type cannot be mmapped")
        if not self.map_flags & BPF_F_MMAPABLE:
            raise OSError(errno.EINVAL, "the map was not created with BPF_F_MMAPABLE")
        if writable and obj.frozen:
            raise OSError(errno.EPERM, "a frozen map cannot be mapped writable")
        view = obj.core.value_view()
        return view if writable else view.toreadonly()

    def freeze(self) -> None:
        self.kernel.bpf(Cmd.MAP_FREEZE, map_fd=self.fd)

    def pin(self, path: str) -> None:
        """OBJ_PIN under /sys/fs/bpf of this map's kernel."""
        self.kernel.bpf(Cmd.OBJ_PIN, pathname=path, bpf_fd=self.fd)

    @property
    def core(self):
        """The C storage programs reach (``Program(code, maps={m.fd: m})``);
        for maps of maps, the table of inner map pointers."""
        return self.kernel.fds.get(self.fd).core

    @property
    def info(self):
        """struct bpf_map_info (OBJ_GET_INFO_BY_FD)."""
        return self.kernel.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=self.fd)

    @property
    def id(self) -> int:
        return self.info.id

    def close(self) -> None:
        if self.fd is not None:
            self.kernel.close(self.fd)
            self.fd = None
            self._obj = self._rcore = self._wcore = None

    def __enter__(self) -> "Map":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- dict protocol -----------------------------------------------------------
    def __getitem__(self, key):
        core = self._rcore
        if core is not None and self._files.get(self.fd) is self._obj:
            # the fast path (see _bind): MapCore.get converts int keys/values in C
            if type(key) is not int and type(key) is not bytes:
                key = self._k(key)
            try:
                value = core.get(key, self._value_int)
            except OverflowError:               # negative or too large: the general rules
                value = core.get(self._k(key), self._value_int)
            if value is None:
                raise KeyError(key)
            return value if self._value_int else self._out_v(value)
        try:
            return self.lookup(key)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key, value) -> None:
        core = self._wcore
        if core is not None and self._files.get(self.fd) is self._obj and not self._obj.frozen:
            if type(key) is not int and type(key) is not bytes:
                key = self._k(key)
            if type(value) is not int or self._percpu:
                value = self._v(value)
            try:
                core.set(key, value, BPF_ANY)
            except OverflowError:               # negative or too large: the general rules
                core.set(self._k(key), self._v(value), BPF_ANY)
            return
        self.update(key, value, BPF_ANY)

    def __delitem__(self, key) -> None:
        core = self._wcore
        try:
            if core is not None and self._files.get(self.fd) is self._obj \
                    and not self._obj.frozen:
                if type(key) is int and 0 <= key < self._key_limit:
                    core.delete(key.to_bytes(self.key_size, "little"))
                else:
                    core.delete(self._k(key))
            else:
                self.delete(key)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise

    def __contains__(self, key) -> bool:
        """For a BLOOM_FILTER: is the value possibly in the set?"""
        if self.map_type == MapType.BLOOM_FILTER:
            try:
                self.kernel.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=self.fd, key=None,
                                value=self._v(key))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return False
                raise
            return True
        try:
            self.lookup(key)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def _raw_keys(self) -> Iterator[bytes]:
        key = None
        while True:
            try:
                key = self.kernel.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=self.fd, key=key)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            yield key

    def __iter__(self) -> Iterator[Any]:
        """Keys in get_next_key order (arrays: every index)."""
        return (from_bytes(k, self.key_type) for k in list(self._raw_keys()))

    def keys(self) -> List[Any]:
        return list(self)

    def items(self) -> List[tuple]:
        out = []
        for k in list(self._raw_keys()):
            try:
                v = self._out_v(self.kernel.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=self.fd, key=k))
            except OSError as e:
                if e.errno == errno.ENOENT:     # deleted meanwhile
                    continue
                raise
            out.append((from_bytes(k, self.key_type), v))
        return out

    def values(self) -> List[Any]:
        return [v for _, v in self.items()]

    def __len__(self) -> int:
        return sum(1 for _ in self._raw_keys())

    def clear(self) -> None:
        """Delete every key (arrays cannot delete: their values are zeroed)."""
        zero = self._v(bytes(self.value_size) if not self.percpu else
                       [bytes(self.value_size)] * self.ncpus)
        for k in list(self._raw_keys()):
            if self.map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY):
                self.kernel.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=self.fd, key=k, value=zero)
            else:
                self.kernel.bpf(Cmd.MAP_DELETE_ELEM, map_fd=self.fd, key=k)

    def __repr__(self) -> str:
        return (f"<Map {self.map_type.name} fd={self.fd} key_size={self.key_size} "
                f"value_size={self.value_size} max_entries={self.max_entries}>")
