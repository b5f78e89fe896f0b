"""Kernel objects and their lifetimes: ids, reference counts, the fd table.

An object lives while anything holds a reference: an fd, a bpffs pin, a
program that uses it, an outer map that stores it. Ids are handed out
monotonically per kind and never reused (the kernel's idr_alloc_cyclic).
"""
from __future__ import annotations

import errno
import itertools
from typing import Dict, Iterator, Optional

from .errors import bpf_error


class BpfObject:
    """Base of maps, programs and links: an id and a reference count."""

    kind = "object"

    def __init__(self, obj_id: int):
        self.id = obj_id
        self.refs = 0
        self.freed = False
        self.id_space: Optional["IdSpace"] = None   # where GET_NEXT_ID finds it

    def get(self) -> "BpfObject":
        self.refs += 1
        return self

    def put(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.freed = True
            if self.id_space is not None:
                self.id_space.remove(self)
                self.id_space = None
            self.release()

    def release(self) -> None:
        """Drop what this object holds (other objects, C storage)."""


class IdSpace:
    """Monotonic ids of one kind of object, with lookup by id."""

    def __init__(self):
        self._next = itertools.count(1)
        self.live: Dict[int, BpfObject] = {}

    def new_id(self) -> int:
        return next(self._next)

    def add(self, obj: BpfObject) -> None:
        self.live[obj.id] = obj
        obj.id_space = self

    def remove(self, obj: BpfObject) -> None:
        self.live.pop(obj.id, None)

    def next_id(self, start: int) -> int:
        """The smallest live id above ``start`` (GET_NEXT_ID); ENOENT if none."""
        later = [i for i in self.live if i > start]
        if not later:
            raise bpf_error(errno.ENOENT, "no object with a larger id")
        return min(later)


class FdTable:
    """The lowest-free-number fd table of one simulated process.

    Fds start at 3 (0-2 are the standard streams, as in a real process).
    """

    FIRST_FD = 3

    def __init__(self):
        self._files: Dict[int, BpfObject] = {}
        self.modes: Dict[int, int] = {}      # fd -> BPF_F_RDONLY / BPF_F_WRONLY / 0

    def install(self, obj: BpfObject, mode: int = 0) -> int:
        fd = self.FIRST_FD
        while fd in self._files:
            fd += 1
        self._files[fd] = obj.get()
        self.modes[fd] = mode
        return fd

    def get(self, fd, kind: Optional[type] = None) -> BpfObject:
        """The object behind ``fd`` (EBADF if none, EINVAL if of another kind)."""
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise bpf_error(errno.EBADF, f"fd {fd!r} is not an integer")
        obj = self._files.get(fd)
        if obj is None:
            raise bpf_error(errno.EBADF, f"fd {fd} is not open")
        if kind is not None and not isinstance(obj, kind):
            raise bpf_error(errno.EINVAL, f"fd {fd} is not a {kind.kind}")
        return obj

    def close(self, fd: int) -> None:
        obj = self._files.pop(fd, None)
        if obj is None:
            raise bpf_error(errno.EBADF, f"fd {fd} is not open")
        self.modes.pop(fd, None)
        obj.put()

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._files))

    def __len__(self) -> int:
        return len(self._files)
