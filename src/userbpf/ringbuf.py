"""The user-space side of a BPF_MAP_TYPE_RINGBUF: libbpf's ``ring_buffer``.

Programs write records with bpf_ringbuf_output / reserve + submit / discard
(C helpers, include/userbpf/ringbuf.h); a :class:`RingBuffer` reads them in
order, in the kernel's memory layout, from any thread while programs run in
others.

>>> from userbpf._maps import MapCore
>>> from userbpf import Program
>>> rb_map = MapCore(27, 0, 0, 4096, 0, 1)          # BPF_MAP_TYPE_RINGBUF
>>> prog = Program('''
...     *(u64 *)(r10 - 8) = 7
...     r1 = map[fd:1] ll
...     r2 = r10
...     r2 += -8
...     r3 = 8
...     r4 = 0
...     call 130
...     exit''', maps={1: rb_map})                   # bpf_ringbuf_output
>>> prog.run()
0
>>> seen = []
>>> RingBuffer(rb_map, seen.append).consume()
1
>>> seen
[b'\\x07\\x00\\x00\\x00\\x00\\x00\\x00\\x00']
"""
from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["RingBuffer"]

#: bpf_ringbuf_output / submit / discard flags (enum in uapi/linux/bpf.h)
BPF_RB_NO_WAKEUP = 1
BPF_RB_FORCE_WAKEUP = 2
#: bpf_ringbuf_query flags
BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS = 0, 1, 2, 3

SampleCallback = Callable[[bytes], Optional[int]]


def _core_of(obj):
    """The MapCore under a Map (its kernel object's storage), a kernel map
    object, or a MapCore itself."""
    for holder in (obj, getattr(obj, "_obj", None)):
        core = getattr(holder, "core", None)
        if core is not None:
            return core
    return obj


class RingBuffer:
    """A consumer of one ring buffer map, as libbpf's ``ring_buffer``.

    ``callback(sample: bytes)`` is called for each committed record in order
    (discarded ones are skipped). As in libbpf, a negative int returned by
    the callback stops consumption after that record and is returned by
    :meth:`consume` / :meth:`poll`; an exception stops it too and propagates
    (the record counts as consumed). Only one consumer may read a ring at a
    time (a second concurrent one gets ``OSError(EBUSY)``).

    ``map_or_core`` is a :class:`userbpf.Map` or a ``MapCore``.
    """

    def __init__(self, map_or_core, callback: SampleCallback):
        self.core = _core_of(map_or_core)
        if getattr(self.core, "map_type", None) != 27:
            raise OSError(22, "RingBuffer needs a BPF_MAP_TYPE_RINGBUF map")
        self.callback = callback

    def consume(self) -> int:
        """Process every committed record available now, stopping at one still
        being written; the number of records delivered (or the callback's
        negative return)."""
        return self.core.ringbuf_consume(self.callback)

    def poll(self, timeout: float = -1.0) -> int:
        """Wait up to ``timeout`` seconds (negative: forever) for records, then
        consume them. Producers notify a waiting consumer through an eventfd
        where the kernel would wake it (the consumer had caught up, or
        BPF_RB_FORCE_WAKEUP); records committed with BPF_RB_NO_WAKEUP do not
        wake it, so they are picked up when the wait ends or by a later
        record's wakeup. Records already waiting are consumed at once.
        Returns the number of records delivered (0 on timeout)."""
        n = self.consume()
        if n:
            return n
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            self.core.ringbuf_wait(left)
            n = self.consume()
            if n or (deadline is not None and time.monotonic() >= deadline):
                return n

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query(map, flags) as a program sees it."""
        return self.core.ringbuf_query(flags)

    @property
    def avail_data(self) -> int:
        """Bytes between consumer_pos and producer_pos (BPF_RB_AVAIL_DATA)."""
        return self.query(BPF_RB_AVAIL_DATA)
