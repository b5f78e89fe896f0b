"""The user-space side of a BPF_MAP_TYPE_PERF_EVENT_ARRAY: libbpf's ``perf_buffer``.

Programs send samples with bpf_perf_event_output(ctx, map, flags, data,
size) (helper 25, C, include/userbpf/perfbuf.h); a :class:`PerfBuffer`
gives every slot of the map (one per simulated CPU) a sample buffer and
reads them, slot by slot, each in order, reporting dropped samples.

userbpf simulates no perf events: where libbpf's perf_buffer__new opens a
perf event per CPU and stores its fd in the map, the buffers are installed
in the map's slots directly. Samples are delivered exactly as written (the
kernel pads raw samples to 8 bytes with their u32 size; userbpf does not).

>>> from userbpf._maps import MapCore
>>> from userbpf import Program
>>> events = MapCore(4, 4, 4, 2, 0, 2)          # BPF_MAP_TYPE_PERF_EVENT_ARRAY, 2 CPUs
>>> seen = []
>>> pb = PerfBuffer(events, lambda cpu, data: seen.append((cpu, data)))
>>> prog = Program('''
...     *(u32 *)(r10 - 4) = 7
...     r2 = map[fd:1] ll
...     r3 = 0xffffffff ll
...     r4 = r10
...     r4 += -4
...     r5 = 4
...     call 25
...     exit''', maps={1: events})                   # bpf_perf_event_output
>>> prog.run(cpu=1)
0
>>> pb.consume()
1
>>> seen
[(1, b'\\x07\\x00\\x00\\x00')]
"""
from __future__ import annotations

import mmap
import time
from typing import Callable, Optional

from .ringbuf import _core_of

__all__ = ["PerfBuffer"]

#: bpf_perf_event_output flags (uapi/linux/bpf.h)
BPF_F_INDEX_MASK = 0xFFFFFFFF
BPF_F_CURRENT_CPU = BPF_F_INDEX_MASK

SampleCallback = Callable[[int, bytes], Optional[int]]
LostCallback = Callable[[int, int], Optional[int]]


class PerfBuffer:
    """A reader of one perf event array, as libbpf's ``perf_buffer``.

    Creating it installs a fresh buffer of ``page_cnt`` pages (a power of
    two) in every slot of the map, replacing earlier ones. ``callback(cpu,
    data)`` gets each sample; ``lost_callback(cpu, count)`` the number of
    samples a full buffer dropped since the last report, before that slot's
    samples. A negative int returned by a callback stops consumption and is
    returned; an exception stops it and propagates. :meth:`close` empties
    the slots (programs then get -ENOENT).
    """

    def __init__(self, map_or_core, callback: SampleCallback,
                 lost_callback: Optional[LostCallback] = None, page_cnt: int = 8):
        self.core = _core_of(map_or_core)
        if getattr(self.core, "map_type", None) != 4:
            raise OSError(22, "PerfBuffer needs a BPF_MAP_TYPE_PERF_EVENT_ARRAY map")
        if page_cnt <= 0 or page_cnt & (page_cnt - 1):
            raise OSError(22, "page_cnt must be a power of two")
        self.callback = callback
        self.lost_callback = lost_callback
        self.buffer_size = page_cnt * mmap.PAGESIZE
        # one buffer per simulated CPU, as libbpf opens one event per CPU
        self.cpus = min(self.core.ncpus, self.core.max_entries)
        for cpu in range(self.cpus):
            self.core.perf_buffer_install(cpu, self.buffer_size)

    def consume(self) -> int:
        """Deliver every waiting sample and loss now, CPU 0 first; the number
        of samples delivered (or a callback's negative return)."""
        return self.core.perf_consume(self.callback, self.lost_callback)

    def poll(self, timeout: float = -1.0) -> int:
        """Wait up to ``timeout`` seconds (negative: forever) for samples or
        losses, then consume them; 0 on timeout. Producers wake a waiting
        reader through an eventfd (the kernel's wakeup_events = 1)."""
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            n = self.consume()
            if n:
                return n
            left = -1.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                return 0
            self.core.perf_wait(left)
            if deadline is not None and time.monotonic() >= deadline:
                return self.consume()

    def lost(self, cpu: int) -> int:
        """Samples dropped so far by ``cpu``'s buffer."""
        return self.core.perf_lost(cpu)

    def close(self) -> None:
        """Take the buffers out of the map (libbpf's perf_buffer__free)."""
        for cpu in range(self.cpus):
            self.core.perf_buffer_remove(cpu)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
