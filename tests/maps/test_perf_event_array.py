"""BPF_MAP_TYPE_PERF_EVENT_ARRAY with bpf_perf_event_output (helper 25) and
userbpf.PerfBuffer: samples and their order per CPU, CPU routing, the
helper's errnos, loss counting, a consumer thread with producer threads."""
from __future__ import annotations

import errno
import mmap
import struct
import threading

import pytest

from userbpf import PerfBuffer, Program
from userbpf._maps import MapCore
from userbpf.program import default_helpers

PERF_EVENT_ARRAY, ARRAY = 4, 2
PAGE = mmap.PAGESIZE
CURRENT_CPU = 0xFFFFFFFF


def perf_array(ncpus=2, max_entries=None):
    return MapCore(PERF_EVENT_ARRAY, 4, 4, ncpus if max_entries is None else max_entries,
                   0, ncpus)


def stack_prog(values, flags=CURRENT_CPU):
    """Output each u64 of `values` as an 8-byte sample from the stack; r0 =
    the last helper return."""
    body = "".join(f"""
    r1 = {v} ll
    *(u64 *)(r10 - 8) = r1
    r1 = 0
    r2 = map[fd:1] ll
    r3 = {flags} ll
    r4 = r10
    r4 += -8
    r5 = 8
    call bpf_perf_event_output""" for v in values)
    return body + "\n    exit"


# the context (the run's memory) as the sample; r0 = the helper's return
CTX_PROG = """
    r4 = r1
    r5 = r2
    r1 = 0
    r2 = map[fd:1] ll
    r3 = {flags} ll
    call bpf_perf_event_output
    exit"""


def collect(events, **kw):
    seen = []
    pb = PerfBuffer(events, lambda cpu, data: seen.append((cpu, data)), **kw)
    return pb, seen


def run(prog, *args, **kw):
    """r0 of one run as a signed 64-bit value (helpers return -errno)."""
    r0 = prog.run(*args, **kw)
    return r0 - (1 << 64) if r0 >> 63 else r0


def u64(v):
    return struct.pack("<Q", v)


def test_helper_is_a_default_helper():
    assert 25 in default_helpers()


def test_samples_exact_and_in_order():
    events = perf_array(ncpus=1)
    pb, seen = collect(events)
    prog = Program(stack_prog([1, 2, 0x1122334455667788]), maps={1: events})
    assert run(prog) == 0
    assert pb.consume() == 3
    assert seen == [(0, u64(1)), (0, u64(2)), (0, u64(0x1122334455667788))]
    assert pb.consume() == 0


@pytest.mark.parametrize("size", [0, 1, 3, 8, 13, 100])
def test_sample_sizes(size):
    events = perf_array(ncpus=1)
    pb, seen = collect(events)
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: events})
    data = bytes(range(1, size + 1))
    assert run(prog, data) == 0
    assert pb.consume() == 1
    assert seen == [(0, data)]


def test_cpu_routing():
    """BPF_F_CURRENT_CPU writes to the run's CPU; delivery is CPU 0 first,
    each CPU's samples in order."""
    events = perf_array(ncpus=4)
    pb, seen = collect(events)
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: events})
    for cpu, v in [(2, 1), (0, 2), (3, 3), (2, 4), (0, 5)]:
        assert run(prog, u64(v), cpu=cpu) == 0
    assert pb.consume() == 5
    assert seen == [(0, u64(2)), (0, u64(5)), (2, u64(1)), (2, u64(4)), (3, u64(3))]


def test_explicit_index():
    """An index equal to the run's CPU works; another CPU's slot is the
    kernel's -EOPNOTSUPP (the event is not on this CPU)."""
    events = perf_array(ncpus=2)
    pb, seen = collect(events)
    prog = Program(CTX_PROG.format(flags=1), maps={1: events})
    assert run(prog, u64(9), cpu=1) == 0
    assert run(prog, u64(10), cpu=0) == -errno.EOPNOTSUPP
    assert pb.consume() == 1
    assert seen == [(1, u64(9))]


@pytest.mark.parametrize("flags,err", [
    (2, -errno.E2BIG),                      # index >= max_entries
    (0x7FFFFFFF, -errno.E2BIG),
    (1 << 32, -errno.EINVAL),               # bits above BPF_F_INDEX_MASK
    ((1 << 63) | CURRENT_CPU, -errno.EINVAL),
])
def test_flag_errors(flags, err):
    events = perf_array(ncpus=2)
    pb, seen = collect(events)
    prog = Program(CTX_PROG.format(flags=flags), maps={1: events})
    assert run(prog, u64(1)) == err
    assert pb.consume() == 0 and seen == []


def test_no_buffer_is_enoent():
    events = perf_array(ncpus=2)
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: events})
    assert run(prog, u64(1), cpu=0) == -errno.ENOENT
    pb, seen = collect(events)
    assert run(prog, u64(1), cpu=0) == 0
    pb.close()
    assert run(prog, u64(1), cpu=0) == -errno.ENOENT
    assert not events.perf_buffer_installed(0)


def test_more_slots_than_cpus():
    """max_entries beyond the CPUs: the reader fills one slot per CPU only."""
    events = perf_array(ncpus=2, max_entries=4)
    pb, seen = collect(events)
    assert [events.perf_buffer_installed(i) for i in range(4)] == [True, True, False, False]
    prog = Program(CTX_PROG.format(flags=3), maps={1: events})
    assert run(prog, u64(1), cpu=1) == -errno.ENOENT


def test_loss_counting_with_a_slow_consumer():
    """One page holds PAGE // 16 samples of 8 bytes (8-byte header each):
    the rest are dropped with -ENOSPC and counted; the reader hears the
    loss count before the CPU's samples, once."""
    events = perf_array(ncpus=1)
    losses, seen = [], []
    pb = PerfBuffer(events, lambda cpu, d: seen.append(struct.unpack("<Q", d)[0]),
                    lost_callback=lambda cpu, n: losses.append((cpu, n)), page_cnt=1)
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: events})
    fit = PAGE // 16
    rets = [run(prog, u64(i)) for i in range(fit + 44)]
    assert rets == [0] * fit + [-errno.ENOSPC] * 44
    assert pb.lost(0) == 44
    # the slow consumer takes 10 and stops (a negative return)
    stop = PerfBuffer.__new__(PerfBuffer)
    stop.core, stop.lost_callback = pb.core, pb.lost_callback
    got = []
    stop.callback = lambda cpu, d: (got.append(d), -1 if len(got) == 10 else None)[1]
    assert stop.consume() == -1
    assert losses == [(0, 44)] and len(got) == 10
    # room for 10 more: 10 fit, the next 5 are lost
    rets = [run(prog, u64(1000 + i)) for i in range(15)]
    assert rets == [0] * 10 + [-errno.ENOSPC] * 5
    assert pb.consume() == fit
    assert losses == [(0, 44), (0, 5)]
    assert seen == list(range(10, fit)) + [1000 + i for i in range(10)]
    assert pb.lost(0) == 49
    assert pb.consume() == 0 and losses == [(0, 44), (0, 5)]


def test_wrapping_records():
    """Odd sizes wrap past the end of the ring and come back whole."""
    events = perf_array(ncpus=1)
    pb, seen = collect(events, page_cnt=1)
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: events})
    expect = []
    for i in range(200):
        data = bytes((i + j) & 0xFF for j in range(1 + (i * 37) % 300))
        assert run(prog, data) == 0
        expect.append((0, data))
        if i % 7 == 6:
            pb.consume()
    pb.consume()
    assert seen == expect


def test_callback_exception_stops_and_propagates():
    events = perf_array(ncpus=1)
    seen = []

    def cb(cpu, data):
        seen.append(data)
        if len(seen) == 2:
            raise KeyError("stop")

    pb = PerfBuffer(events, cb)
    Program(stack_prog([1, 2, 3]), maps={1: events}).run()
    with pytest.raises(KeyError):
        pb.consume()
    assert pb.consume() == 1            # the one after the raising call
    assert seen == [u64(1), u64(2), u64(3)]


def test_poll_timeout_and_wakeup():
    events = perf_array(ncpus=1)
    pb, seen = collect(events)
    assert pb.poll(0.01) == 0
    prog = Program(stack_prog([5]), maps={1: events})
    result = []
    t = threading.Thread(target=lambda: result.append(pb.poll(30)))
    t.start()
    run(prog)
    t.join(30)
    assert result == [1] and seen == [(0, u64(5))]


def test_bad_maps_and_sizes():
    with pytest.raises(OSError) as e:
        PerfBuffer(MapCore(ARRAY, 4, 8, 1, 0, 1), print)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        PerfBuffer(perf_array(), print, page_cnt=3)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        perf_array().perf_buffer_install(2, PAGE)
    assert e.value.errno == errno.E2BIG


def test_one_reader_at_a_time():
    events = perf_array(ncpus=1)
    inner = []

    def cb(cpu, data):
        with pytest.raises(OSError) as e:
            events.perf_consume(print)
        inner.append(e.value.errno)

    pb = PerfBuffer(events, cb)
    Program(stack_prog([1]), maps={1: events}).run()
    assert pb.consume() == 1 and inner == [errno.EBUSY]


SEQ_PROG = """
    *(u32 *)(r10 - 4) = 0
    r1 = map[fd:2] ll
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto out
    r6 = r0
    r1 = *(u64 *)(r6 + 0)
    *(u64 *)(r10 - 16) = r1
    r1 = {cpu}
    *(u64 *)(r10 - 24) = r1
    r1 = 0
    r2 = map[fd:1] ll
    r3 = 0xffffffff ll
    r4 = r10
    r4 += -24
    r5 = 16
    call bpf_perf_event_output
    if r0 != 0 goto out
    r1 = *(u64 *)(r6 + 0)
    r1 += 1
    *(u64 *)(r6 + 0) = r1
out:
    exit"""


@pytest.mark.parametrize("per_cpu", [3000, pytest.param(100000, marks=pytest.mark.slow)])
def test_consumer_thread_with_producer_threads(per_cpu):
    """Two producer threads on CPUs 0 and 1 (run_batch releases the GIL)
    send sequence numbers into small buffers, retrying a dropped one, while
    a consumer thread polls: each CPU's sequence arrives complete, in order,
    and the losses reported are the -ENOSPC returns."""
    events = perf_array(ncpus=2)
    seen = {0: [], 1: []}
    lost = {0: 0, 1: 0}

    def cb(cpu, sample):
        tag, seq = struct.unpack("<QQ", sample)
        assert tag == cpu
        seen[cpu].append(seq)

    def on_lost(cpu, n):
        lost[cpu] += n

    reader = PerfBuffer(events, cb, on_lost, page_cnt=1)
    done = threading.Event()

    def consume():
        while not done.is_set():
            reader.poll(0.05)
        reader.consume()

    def produce(cpu):
        seq = MapCore(ARRAY, 4, 8, 1, 0, 1)
        prog = Program(SEQ_PROG.format(cpu=cpu), maps={1: events, 2: seq})
        while seq.get(0, as_int=True) < per_cpu:
            prog.run_batch(None, min(64, per_cpu - seq.get(0, as_int=True)), cpu=cpu)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(c,)) for c in range(2)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join()
    assert seen == {0: list(range(per_cpu)), 1: list(range(per_cpu))}
    assert lost == {0: reader.lost(0), 1: reader.lost(1)}


def test_through_a_kernel_map():
    """A Map made with MAP_CREATE: the reader finds its storage, programs
    write to it, and user-space element commands keep their errno."""
    from userbpf import Map, MapType
    m = Map(MapType.PERF_EVENT_ARRAY, 4, 4, 2)
    ncpus = m._obj.core.ncpus
    seen = []
    pb = PerfBuffer(m, lambda cpu, data: seen.append((cpu, data)))
    prog = Program(CTX_PROG.format(flags=CURRENT_CPU), maps={1: m})
    assert run(prog, b"abc", cpu=min(1, ncpus - 1)) == 0
    assert pb.consume() == 1
    assert seen == [(min(1, ncpus - 1), b"abc")]
    with pytest.raises(OSError) as e:
        m.lookup(0)
    assert e.value.errno == 524            # ENOTSUPP: no map_fd_sys_lookup_elem
