"""The live kernel's map commands through ctypes, as an oracle for tests/maps.

Only what the keyless-map tests need: create a map, run an element command
with raw key/value buffers, and report the errno (0 on success) instead of
raising, so that answers compare one to one with :class:`MapCore` ones.
Everything skips where ``bpf()`` is not permitted. (``userbpf.hostbpf``
covers much more; these tests only need the raw commands.)
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from typing import Optional, Tuple

import pytest

MAP_CREATE, LOOKUP, UPDATE, DELETE, GET_NEXT_KEY, LOOKUP_AND_DELETE = 0, 1, 2, 3, 4, 21
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_ATTR_SIZE = 128
_libc = ctypes.CDLL(None, use_errno=True)


def sys_bpf(cmd: int, attr: bytes) -> Tuple[int, int]:
    """(return value, errno): errno is 0 on success."""
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    ret = _libc.syscall(_NR_BPF, ctypes.c_int(cmd), buf, ctypes.c_uint(_ATTR_SIZE))
    return (ret, ctypes.get_errno()) if ret < 0 else (ret, 0)


@functools.lru_cache(maxsize=None)
def available() -> bool:
    if _NR_BPF is None or platform.system() != "Linux":
        return False
    fd, err = sys_bpf(MAP_CREATE, struct.pack("<IIII", 2, 4, 4, 1))    # an ARRAY
    if err:
        return False
    os.close(fd)
    return True


def need_kernel() -> None:
    if not available():
        pytest.skip("bpf() is not permitted here")


class KernelMap:
    """A kernel map; create() returns (KernelMap or None, errno)."""

    def __init__(self, fd: int, value_size: int):
        self.fd = fd
        self.value_size = value_size

    @classmethod
    def create(cls, map_type, key_size, value_size, max_entries, map_flags=0, map_extra=0):
        attr = struct.pack("<7I16s5IQ", map_type, key_size, value_size, max_entries,
                           map_flags, 0, 0, b"", 0, 0, 0, 0, 0, map_extra)
        fd, err = sys_bpf(MAP_CREATE, attr)
        return (cls(fd, value_size) if not err else None), err

    def _elem(self, cmd: int, value: Optional[bytes], flags: int = 0,
              size: Optional[int] = None) -> Tuple[int, bytes]:
        vbuf = ctypes.create_string_buffer(value or b"",
                                           max(size or self.value_size, 1))
        attr = struct.pack("<IIQQQ", self.fd, 0, 0, ctypes.addressof(vbuf), flags)
        _, err = sys_bpf(cmd, attr)
        return err, vbuf.raw[:self.value_size]

    def lookup(self, value: Optional[bytes] = None, flags: int = 0):
        return self._elem(LOOKUP, value, flags)

    def update(self, value: bytes, flags: int = 0):
        return self._elem(UPDATE, value, flags)[0]

    def lookup_and_delete(self, flags: int = 0):
        return self._elem(LOOKUP_AND_DELETE, None, flags)

    def delete(self):
        return sys_bpf(DELETE, struct.pack("<IIQ", self.fd, 0, 0))[1]

    def get_next_key(self):
        out = ctypes.create_string_buffer(8)
        return sys_bpf(GET_NEXT_KEY, struct.pack("<IIQQ", self.fd, 0, 0,
                                                 ctypes.addressof(out)))[1]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()


def errno_of(fn, *args, **kw) -> Tuple[int, object]:
    """Run a MapCore call: (0, result) or (errno, None)."""
    try:
        return 0, fn(*args, **kw)
    except OSError as e:
        return e.errno, None


ENOTSUPP = 524      # the kernel's internal errno, which bpf() lets through
assert errno.EOPNOTSUPP != ENOTSUPP
