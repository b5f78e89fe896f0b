"""The lines bpf_trace_printk writes, read like the kernel's trace_pipe.

``bpf_trace_printk`` (helper 6) and ``bpf_trace_vprintk`` (177) append one
line per call to a bounded in-memory trace buffer in C (any thread, no GIL;
a line that does not fit is dropped and counted). :class:`TracePipe` takes
the lines out, oldest first, formatted like
``/sys/kernel/tracing/trace_pipe``::

    <comm>-<pid> [<cpu>] ..... <secs>.<usecs>: bpf_trace_printk: <msg>

comm is the calling thread's name, pid its thread id, cpu the simulated
CPU that ran the program, the time CLOCK_MONOTONIC; the flags column
(irqs-off, need-resched, hardirq/softirq, preempt depth, migrate-disable)
is always ``.....``: programs here run in no interrupt context. As with the
kernel's trace_pipe there is one buffer per process and reading consumes:
two readers share the lines between them.

>>> import userbpf
>>> pipe = userbpf.TracePipe(clear=True)
>>> prog = userbpf.Program('''
...     r1 = 0x0a6425203d2078 ll      ; "x = %d" and a newline
...     *(u64 *)(r10 - 8) = r1
...     r1 = r10
...     r1 += -8
...     r2 = 8
...     r3 = 42
...     call bpf_trace_printk
...     exit
... ''')
>>> prog.run()                        # the bytes written
7
>>> event, = pipe.read_events()
>>> event.msg
'x = 42\\n'
>>> event.text.endswith(": bpf_trace_printk: x = 42\\n\\n")   # the event adds a newline
True
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterator, List, NamedTuple, Optional

from . import _vm

__all__ = ["TraceEvent", "TracePipe", "TraceForwarder", "forward_to_logging", "format_line",
           "set_buffer_size"]

EVENT_NAME = "bpf_trace_printk"     # the trace event bpf_trace_printk emits
FLAGS = "....."                     # irqs-off, need-resched, irq, preempt, migrate
# readline / follow wait in slices so that Ctrl-C gets through
_WAIT_SLICE = 0.1


def format_line(comm: str, pid: int, cpu: int, timestamp_ns: int, msg: str) -> str:
    """One trace_pipe line, as the kernel's trace_print_context lays it out
    (comm right-aligned in 16, pid left-aligned in 7, cpu in 3 digits,
    seconds in 5 and microseconds in 6), with the event's newline.

    >>> format_line("python", 1234, 1, 5_123_456_789, "hi")
    '          python-1234    [001] .....     5.123456: bpf_trace_printk: hi\\n'
    """
    secs, rem = divmod(timestamp_ns, 1_000_000_000)
    return (f"{comm:>16}-{pid:<7} [{cpu:03d}] {FLAGS} {secs:5d}.{rem // 1000:06d}: "
            f"{EVENT_NAME}: {msg}\n")


class TraceEvent(NamedTuple):
    """One bpf_trace_printk call.

    ``msg`` is the formatted text up to its first NUL and at most 1023
    bytes (the kernel's buffer), decoded as UTF-8 (bytes that are not:
    backslash escapes).
    """
    comm: str
    pid: int
    cpu: int
    timestamp_ns: int
    msg: str

    @property
    def text(self) -> str:
        """The event as trace_pipe shows it: the context, the message and
        the event's newline (a message ending in ``\\n`` gives an empty line
        after it, as in the kernel)."""
        return format_line(self.comm, self.pid, self.cpu, self.timestamp_ns, self.msg)


def _event(rec) -> TraceEvent:
    ts, pid, cpu, comm, msg = rec
    return TraceEvent(comm.decode("utf-8", "backslashreplace"), pid, cpu, ts,
                      msg.decode("utf-8", "backslashreplace"))


def set_buffer_size(nbytes: int) -> None:
    """Bound the trace buffer to ``nbytes`` (default 1 MiB). Each line held
    costs its text and a 48-byte header; lines that do not fit are dropped
    and counted in :attr:`TracePipe.dropped`."""
    if nbytes < 0:
        raise ValueError("the trace buffer size cannot be negative")
    _vm.trace_set_capacity(nbytes)


class TracePipe:
    """A reader of the trace buffer (``/sys/kernel/tracing/trace_pipe``).

    ``read()`` returns what is buffered as trace_pipe text (without
    waiting), ``readline(timeout)`` the next line (waiting for one),
    iteration the buffered lines; ``read_events()`` gives
    :class:`TraceEvent` tuples instead of text. ``clear=True`` drops what
    is buffered first.

    >>> pipe = TracePipe(clear=True)
    >>> pipe.read(), pipe.readline(timeout=0), list(pipe)
    ('', '', [])
    """

    def __init__(self, *, clear: bool = False):
        if clear:
            self.clear()

    # -- taking lines out ------------------------------------------------------
    def read_events(self, max_events: Optional[int] = None) -> List[TraceEvent]:
        """The buffered events, oldest first (at most ``max_events``);
        removed from the buffer."""
        n = (1 << 62) if max_events is None else max(0, int(max_events))
        return [_event(r) for r in _vm.trace_take(n)]

    def read(self) -> str:
        """Everything buffered now, as trace_pipe text ('' if nothing). Unlike
        the kernel's file it does not block; see :meth:`readline`."""
        return "".join(e.text for e in self.read_events())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until a line is buffered (``timeout`` seconds, None: no
        limit); True if one is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE,
                                                            deadline - time.monotonic())
            if _vm.trace_wait(max(0.0, left)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def read_event(self, timeout: Optional[float] = None) -> Optional[TraceEvent]:
        """The next event, waiting up to ``timeout`` seconds (None: no
        limit); None if none came."""
        while True:
            got = _vm.trace_take(1)
            if got:
                return _event(got[0])
            if not self.wait(timeout):
                return None
            timeout = 0 if timeout is not None else None   # one wait, then a last take

    def readline(self, timeout: Optional[float] = None) -> str:
        """The next line as trace_pipe text (ends with a newline), waiting up
        to ``timeout`` seconds (None: until one comes); '' on timeout."""
        event = self.read_event(timeout)
        return "" if event is None else event.text

    def __iter__(self) -> Iterator[str]:
        """The lines buffered now (stops when the buffer is empty)."""
        while True:
            got = _vm.trace_take(1)
            if not got:
                return
            yield _event(got[0]).text

    def follow(self, timeout: Optional[float] = None) -> Iterator[TraceEvent]:
        """Events as they come, until none arrives for ``timeout`` seconds
        (None: for ever)."""
        while True:
            event = self.read_event(timeout)
            if event is None:
                return
            yield event

    def clear(self) -> int:
        """Drop the buffered lines and reset the dropped counter; returns the
        number of lines dropped."""
        n = len(_vm.trace_take(1 << 62))
        _vm.trace_reset_dropped()
        return n

    # -- state -----------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Lines buffered now."""
        return _vm.trace_stats()["pending"]

    @property
    def dropped(self) -> int:
        """Lines dropped because the buffer was full (since the last clear)."""
        return _vm.trace_stats()["dropped"]

    @staticmethod
    def stats() -> dict:
        """``pending``, ``dropped``, ``bytes`` held, ``capacity`` and lines
        ever ``written``."""
        return _vm.trace_stats()

    # -- to Python logging ---------------------------------------------------------
    def log_pending(self, logger: Optional[logging.Logger] = None,
                    level: int = logging.INFO) -> int:
        """Send the buffered events to ``logger`` (default: the
        ``userbpf.trace`` logger) now; returns how many.

        >>> import logging
        >>> TracePipe(clear=True).log_pending(logging.getLogger("demo"))
        0
        """
        events = self.read_events()
        for e in events:
            _log(logger or logging.getLogger("userbpf.trace"), level, e)
        return len(events)


def _log(logger: logging.Logger, level: int, e: TraceEvent) -> None:
    # the message without the newline the program usually ends it with; the
    # context as LogRecord attributes (bpf_comm, bpf_pid, bpf_cpu, bpf_timestamp_ns)
    logger.log(level, "%s", e.msg[:-1] if e.msg.endswith("\n") else e.msg,
               extra={"bpf_comm": e.comm, "bpf_pid": e.pid, "bpf_cpu": e.cpu,
                      "bpf_timestamp_ns": e.timestamp_ns})


class TraceForwarder:
    """A background thread sending trace lines to a logger as they come.

    Made by :func:`forward_to_logging`; ``stop()`` (or leaving the ``with``
    block) sends what is still buffered and ends the thread.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.INFO,
                 poll: float = _WAIT_SLICE):
        self.logger, self.level, self.poll = logger, level, poll
        self.forwarded = 0
        self.errors = 0             # events a handler raised on (the thread goes on)
        self._pipe = TracePipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="userbpf-trace", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if _vm.trace_wait(self.poll):
                self._forward()

    def _forward(self) -> None:
        for e in self._pipe.read_events():
            try:
                _log(self.logger, self.level, e)
                self.forwarded += 1
            except Exception:       # a broken handler must not stop the forwarding
                self.errors += 1

    def stop(self) -> None:
        """Stop forwarding (what is buffered now is forwarded first)."""
        self._stop.set()
        self._thread.join()
        self._forward()

    def __enter__(self) -> "TraceForwarder":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def forward_to_logging(logger: Optional[logging.Logger] = None, level: int = logging.INFO,
                       poll: float = _WAIT_SLICE) -> TraceForwarder:
    """Forward bpf_trace_printk lines to Python logging as they come (a
    daemon thread); each record's message is the program's text, with
    ``bpf_comm``, ``bpf_pid``, ``bpf_cpu`` and ``bpf_timestamp_ns``
    attributes.

    >>> import logging, userbpf
    >>> TracePipe(clear=True).clear()
    0
    >>> seen = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record):
    ...         seen.append(record.getMessage())
    >>> log, keep = logging.getLogger("bpf-demo"), Keep()
    >>> log.addHandler(keep)
    >>> log.setLevel(logging.INFO)
    >>> prog = userbpf.Program('''
    ...     r1 = 0x0a216968 ll               ; "hi!" and a newline
    ...     *(u64 *)(r10 - 8) = r1
    ...     r1 = r10
    ...     r1 += -8
    ...     r2 = 8
    ...     call bpf_trace_printk
    ...     exit
    ... ''')
    >>> with forward_to_logging(log) as fwd:
    ...     prog.run()
    4
    >>> seen
    ['hi!']
    >>> log.removeHandler(keep)
    """
    return TraceForwarder(logger or logging.getLogger("userbpf.trace"), level, poll)
