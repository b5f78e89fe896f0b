"""User-space element commands on a BPF_MAP_TYPE_PERF_EVENT_ARRAY, answered
as Linux 6.18 answers them (kernel/bpf/arraymap.c's fd-array ops with
perf_event_fd_array_get_ptr; ``tests/kernel/test_perf_array_elem.py``
checks every errno against the live kernel).

What user space can do with the map, in the kernel's order of checks:

MAP_UPDATE_ELEM  value = a perf event fd (u32)
    flags other than BPF_ANY   EINVAL   (before the index)
    index >= max_entries       E2BIG    (before the fd)
    fd not open, or open on anything but a perf event (a file, a bpf map,
    a program, -1)             EBADF
    a perf event opened with attr.inherit
                               EOPNOTSUPP
    otherwise the slot takes a reference to the event (replacing what it
    held); closing the event's fd afterwards does not empty the slot.
MAP_LOOKUP_ELEM                ENOTSUPP (524) for every key, stored or not,
                               in range or not: the map has no
                               map_fd_sys_lookup_elem
MAP_LOOKUP_AND_DELETE_ELEM     ENOTSUPP
MAP_DELETE_ELEM                E2BIG beyond max_entries, ENOENT for an
                               empty slot, else 0
MAP_GET_NEXT_KEY               array order: NULL or an index out of range
                               gives 0, the last index ENOENT, else index+1;
                               empty slots are walked too

And one surprise: an element belongs to the map *file* it was stored
through.  When that file is released (its last fd closed) the kernel
empties every slot stored through it (perf_event_fd_array_release), unless
the map was created with BPF_F_PRESERVE_ELEMS.  In userbpf every fd of a
map is its own file (there is no dup()), so "file" is the map fd used.

userbpf simulates no perf events yet: an object stands for one when its
``kind`` is ``"perf_event"``; its ``inherit`` attribute says whether it was
opened with attr.inherit.

    >>> class Event:                       # a stand-in for a perf event object
    ...     kind, inherit = "perf_event", False
    ...     def get(self): return self
    ...     def put(self): pass
    >>> fds = {5: Event()}
    >>> def get_object(fd):
    ...     if fd not in fds:
    ...         raise OSError(9, "fd is not open")
    ...     return fds[fd]
    >>> slots = PerfEventSlots(max_entries=2, map_flags=0, get_object=get_object)
    >>> slots.update(b"\\1\\0\\0\\0", (5).to_bytes(4, "little"), 0, file=3)
    >>> slots.get_next_key(b"\\0\\0\\0\\0")
    b'\\x01\\x00\\x00\\x00'
    >>> slots.release_file(3)               # the map fd it was stored through is closed
    >>> slots.delete(b"\\1\\0\\0\\0")
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] No such file or directory: slot 1 is empty
"""
from __future__ import annotations

import errno
import struct
from typing import Callable, Dict, Hashable, Optional, Tuple

from ..uapi import BPF_ANY, MapFlag
from .errors import ENOTSUPP, bpf_error

__all__ = ["PerfEventSlots", "is_perf_event"]

_U32 = struct.Struct("<I")


def is_perf_event(obj) -> bool:
    """Does ``obj`` stand for a perf event (what perf_event_get() accepts)?"""
    return getattr(obj, "kind", None) == "perf_event"


class PerfEventSlots:
    """The element store of one PERF_EVENT_ARRAY: index -> (event, file).

    ``get_object(fd)`` returns the object behind an fd without taking a
    reference, raising OSError(EBADF) when the fd is not open (userbpf's
    ``FdTable.get``).  ``install(index, event_or_None)`` is told about every
    slot change, for whatever feeds the slots' samples to programs.
    """

    def __init__(self, max_entries: int, map_flags: int,
                 get_object: Callable[[int], object],
                 install: Optional[Callable[[int, object], None]] = None):
        self.max_entries = max_entries
        self.preserve = bool(map_flags & MapFlag.PRESERVE_ELEMS)
        self.get_object = get_object
        self.install = install
        self.slots: Dict[int, Tuple[object, Hashable]] = {}

    # -- helpers ---------------------------------------------------------------
    def _index(self, key: bytes) -> int:
        return _U32.unpack(key)[0]

    def _event_for(self, value: bytes):
        """perf_event_fd_array_get_ptr: the perf event behind the fd in ``value``."""
        if len(value) != 4:
            raise bpf_error(errno.EINVAL, "a perf event array takes a 4-byte fd as the value")
        fd = _U32.unpack(value)[0]
        obj = self.get_object(fd)                 # EBADF: not open
        if not is_perf_event(obj):                # a file, a map, a program ...
            raise bpf_error(errno.EBADF, f"fd {fd} is not a perf event")
        if getattr(obj, "inherit", False):
            raise bpf_error(errno.EOPNOTSUPP, f"perf event fd {fd} was opened with inherit")
        return obj

    def _set(self, index: int, entry: Optional[Tuple[object, Hashable]]) -> None:
        old = self.slots.pop(index, None)
        if entry is not None:
            self.slots[index] = entry
        if self.install is not None:
            self.install(index, entry[0] if entry is not None else None)
        if old is not None:
            old[0].put()

    # -- the element commands ----------------------------------------------------
    def update(self, key: bytes, value: bytes, flags: int, file: Hashable = None) -> None:
        """MAP_UPDATE_ELEM through map file ``file`` (the map fd used)."""
        if flags != BPF_ANY:
            raise bpf_error(errno.EINVAL, "fd arrays take only BPF_ANY")
        index = self._index(key)
        if index >= self.max_entries:
            raise bpf_error(errno.E2BIG, f"index {index} beyond max_entries")
        event = self._event_for(value)
        self._set(index, (event.get(), file))

    def lookup(self, key: bytes) -> bytes:
        """MAP_LOOKUP_ELEM: never answered (no map_fd_sys_lookup_elem)."""
        raise bpf_error(ENOTSUPP, "perf event array elements cannot be looked up "
                                  "from user space")

    def lookup_and_delete(self, key: bytes, flags: int = 0) -> bytes:
        raise bpf_error(ENOTSUPP, "perf event arrays have no lookup-and-delete")

    def delete(self, key: bytes) -> None:
        index = self._index(key)
        if index >= self.max_entries:
            raise bpf_error(errno.E2BIG, f"index {index} beyond max_entries")
        if index not in self.slots:
            raise bpf_error(errno.ENOENT, f"slot {index} is empty")
        self._set(index, None)

    def get_next_key(self, key: Optional[bytes]) -> bytes:
        """array_map_get_next_key: every index, stored or not."""
        index = self.max_entries if key is None else self._index(key)
        if index >= self.max_entries:
            return _U32.pack(0)
        if index == self.max_entries - 1:
            raise bpf_error(errno.ENOENT, "last index")
        return _U32.pack(index + 1)

    # -- lifetimes -------------------------------------------------------------------
    def release_file(self, file: Hashable) -> None:
        """A map file was released: empty the slots stored through it
        (perf_event_fd_array_release), unless BPF_F_PRESERVE_ELEMS."""
        if self.preserve:
            return
        for index in [i for i, (_, f) in self.slots.items() if f == file]:
            self._set(index, None)

    def clear(self) -> None:
        """The map is freed: drop every event reference."""
        for index in list(self.slots):
            self._set(index, None)

    def __len__(self) -> int:
        return len(self.slots)
