"""BPF_MAP_TYPE_RINGBUF's protocol: the helpers programs call (130 output,
131 reserve, 132 submit, 133 discard, 134 query), the record headers they
leave in the kernel's memory layout, and the consumer (userbpf.RingBuffer,
MapCore.ringbuf_consume), with the live kernel's answers where bpf() works."""
from __future__ import annotations

import errno
import mmap
import struct
import threading
import time

import pytest

from userbpf import HelperError, MemoryAccessError, Program, asm
from userbpf._maps import MapCore
from userbpf.ringbuf import (BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP,
                             BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS, BPF_RB_RING_SIZE,
                             RingBuffer)

RINGBUF, ARRAY = 27, 2
PAGE = mmap.PAGESIZE
BUSY, DISCARD = 1 << 31, 1 << 30
U64 = 1 << 64
FD = 1          # the fd programs name the ring by (map[fd:1])


def ringbuf(size=PAGE):
    return MapCore(RINGBUF, 0, 0, size, 0, 1)


def rec_len(size):
    """A record's bytes in the ring: 8-byte header + sample, 8-aligned."""
    return (size + 8 + 7) & ~7


def pg_off(off):
    """The header's pg_off: pages from the kernel's struct bpf_ringbuf (one
    page before the consumer page) to the header."""
    return 3 + off // PAGE


# ---- programs -----------------------------------------------------------

def output_prog(size, flags=0, fd=FD):
    """bpf_ringbuf_output of `size` bytes of the stack, whose u64s are 0x10+i."""
    words = (size + 7) // 8
    fill = "".join(f"    r1 = {0x10 + i}\n    *(u64 *)(r10 - {8 * (words - i)}) = r1\n"
                   for i in range(words))
    return f"""{fill}
    r1 = map[fd:{fd}] ll
    r2 = r10
    r2 += -{8 * words}
    r3 = {size}
    r4 = {flags}
    call 130
    exit"""


def reserve_prog(size, commit="submit", flags=0, value="0x1122334455667788", fd=FD,
                 reserve_flags=0):
    """Reserve `size` bytes, fill each whole u64 with `value` (the context's
    first u64 with value="ctx"), then submit/discard/nothing; r0 = the
    sample's address or 0."""
    fills = "".join(f"    *(u64 *)(r0 + {8 * i}) = r7\n" for i in range(size // 8))
    end = {"submit": 132, "discard": 133}.get(commit)
    finish = f"""
    r1 = r0
    r2 = {flags}
    call {end}""" if end else ""
    load = "    r7 = *(u64 *)(r1 + 0)\n" if value == "ctx" else f"    r7 = {value} ll\n"
    return f"""{load}
    r1 = map[fd:{fd}] ll
    r2 = {size}
    r3 = {reserve_flags}
    call 131
    if r0 == 0 goto out
    r8 = r0
{fills}{finish}
    r0 = r8
out:
    exit"""


def commit_prog(commit="submit", flags=0):
    """Submit/discard the sample whose address is the context's first u64
    (the ring must be one of the program's maps, as after a reserve)."""
    return f"""
    r9 = map[fd:{FD}] ll
    r1 = *(u64 *)(r1 + 0)
    r2 = {flags}
    call {132 if commit == 'submit' else 133}
    r0 = 0
    exit"""


def query_prog(flags):
    return f"""
    r1 = map[fd:{FD}] ll
    r2 = {flags}
    call 134
    exit"""


def run(rb, text, mem=None):
    return Program(text, maps={FD: rb}).run(mem)


def headers(rb):
    """(offset, len word, pg_off) of each record from 0 to producer_pos."""
    _, prod, data = rb.ringbuf_view()
    end = struct.unpack_from("<Q", prod)[0]
    out, pos = [], 0
    while pos < end:
        off = pos % rb.max_entries
        length, pg = struct.unpack_from("<II", data, off)
        out.append((off, length, pg))
        pos += rec_len(length & ~(BUSY | DISCARD))
    return out


def drain(rb):
    got = []
    n = RingBuffer(rb, got.append).consume()
    assert n == len(got)
    return got


def words(*vals):
    return b"".join(struct.pack("<Q", v % U64) for v in vals)


# ---- producing ----------------------------------------------------------

def test_output_records_layout_and_contents():
    rb = ringbuf()
    sizes = [8, 1, 5, 16, 3, 24]
    for size in sizes:
        assert run(rb, output_prog(size)) == 0
    offs = [sum(rec_len(s) for s in sizes[:i]) for i in range(len(sizes))]
    assert headers(rb) == [(o, s, pg_off(o)) for o, s in zip(offs, sizes)]
    assert rb.ringbuf_query(BPF_RB_PROD_POS) == sum(rec_len(s) for s in sizes)
    expected = [words(*range(0x10, 0x10 + (s + 7) // 8))[:s] for s in sizes]
    assert drain(rb) == expected
    assert rb.ringbuf_query(BPF_RB_CONS_POS) == rb.ringbuf_query(BPF_RB_PROD_POS)
    assert drain(rb) == []


def test_reserve_submit_and_discard():
    rb = ringbuf()
    a = run(rb, reserve_prog(16, value="0x0102030405060708"))
    b = run(rb, reserve_prog(8, "discard", value="0x55"))
    c = run(rb, reserve_prog(24, value="-1"))
    _, _, data = rb.ringbuf_view()
    base = a - 8
    assert (b - base, c - base) == (8 + 16 + 8, 8 + 16 + 16 + 8)
    assert headers(rb) == [(0, 16, 3), (24, 8 | DISCARD, 3), (40, 24, 3)]
    assert bytes(data[32:40]) == words(0x55)     # a discarded sample stays in the ring
    assert drain(rb) == [words(0x0102030405060708) * 2, words(-1) * 3]
    assert rb.ringbuf_query(BPF_RB_CONS_POS) == 72


def test_busy_record_holds_back_later_ones():
    rb = ringbuf()
    first = run(rb, reserve_prog(8, commit=None, value="1"))
    assert first and headers(rb) == [(0, 8 | BUSY, 3)]
    assert run(rb, reserve_prog(8, value="2"))
    assert headers(rb) == [(0, 8 | BUSY, 3), (16, 8, 3)]
    assert drain(rb) == []                       # stops at the busy record
    assert rb.ringbuf_query(BPF_RB_CONS_POS) == 0
    assert run(rb, commit_prog(), words(first)) == 0
    assert headers(rb) == [(0, 8, 3), (16, 8, 3)]
    assert drain(rb) == [words(1), words(2)]


def test_discard_of_the_oldest_busy_record_releases_the_rest():
    rb = ringbuf()
    first = run(rb, reserve_prog(8, commit=None, value="1"))
    run(rb, reserve_prog(8, value="2"))
    run(rb, commit_prog("discard"), words(first))
    assert drain(rb) == [words(2)]


def test_producers_never_overrun_a_busy_record():
    """Even when user space moves consumer_pos past a record still being
    written, no reservation may reach into it (the kernel's pending_pos)."""
    rb = ringbuf()
    cons, prod, data = rb.ringbuf_view()
    busy = run(rb, reserve_prog(16, commit=None, value="0x77"))

    def skip_all():
        struct.pack_into("<Q", cons, 0, struct.unpack_from("<Q", prod)[0])
    results = []
    for _ in range(5):
        skip_all()
        results.append(bool(run(rb, reserve_prog(1000, value="0x99"))))
    assert results == [True] * 4 + [False]          # 24 + 4 * 1008 <= PAGE - 1 < + 1008
    assert headers(rb)[0] == (0, 16 | BUSY, 3)
    assert bytes(data[8:24]) == words(0x77, 0x77)
    run(rb, commit_prog(), words(busy))              # committed: the space frees up
    skip_all()
    assert run(rb, reserve_prog(1000, value="0x99"))


def test_programs_write_only_their_reserved_samples():
    rb = ringbuf()
    sample = run(rb, reserve_prog(16, commit=None))
    store = f"r9 = map[fd:{FD}] ll\n    " + "r1 = *(u64 *)(r1 + 0)\n    r2 = 9\n    *(u64 *)(r1 + {off}) = r2\n    r0 = 0\n    exit"
    assert run(rb, store.format(off=8), words(sample)) == 0        # inside: fine
    with pytest.raises(MemoryAccessError):
        run(rb, store.format(off=16), words(sample))               # past the sample
    with pytest.raises(MemoryAccessError):
        run(rb, store.format(off=-8), words(sample))               # its header
    run(rb, commit_prog(), words(sample))
    with pytest.raises(MemoryAccessError):
        run(rb, store.format(off=0), words(sample))                # committed
    with pytest.raises(MemoryAccessError):                         # not a busy record
        run(rb, commit_prog(), words(sample))
    assert drain(rb) == [words(0x1122334455667788, 9)]


def test_full_ring_refuses_and_keeps_what_fits():
    rb = ringbuf()                               # PAGE bytes: (PAGE - 1) // 24 records
    fit = (PAGE - 1) // rec_len(16)
    results = [run(rb, reserve_prog(16, value=str(i))) for i in range(fit + 3)]
    assert all(results[:fit]) and results[fit:] == [0, 0, 0]
    assert run(rb, output_prog(16)) == (-errno.EAGAIN) % U64
    assert rb.ringbuf_query(BPF_RB_PROD_POS) == fit * rec_len(16)
    assert drain(rb) == [words(i, i) for i in range(fit)]
    # the space is free again once consumed
    assert run(rb, output_prog(8)) == 0
    assert drain(rb) == [words(0x10)]


@pytest.mark.parametrize("size", [PAGE - 8, PAGE, 1 << 31, (1 << 32) - 1, 1 << 40])
def test_records_bigger_than_the_ring(size):
    rb = ringbuf()
    assert run(rb, reserve_prog(0, commit=None).replace("r2 = 0", f"r2 = {size} ll"
               if size >= 1 << 31 else f"r2 = {size}")) == 0
    assert rb.ringbuf_query(BPF_RB_PROD_POS) == 0


def test_largest_record_that_fits():
    rb = ringbuf()
    # record length PAGE - 8 <= mask: fits; PAGE would not (positions may
    # never be a whole ring apart)
    assert run(rb, reserve_prog(PAGE - 16, commit=None))
    assert run(rb, reserve_prog(0, commit=None)) == 0         # 8 more bytes: no room


def test_wrapping_record_reads_contiguously():
    rb = ringbuf()
    big = PAGE - 64 - 8                          # leaves 64 bytes before the end
    run(rb, reserve_prog(big))
    drain(rb)
    vals = [0x1000 + i for i in range(12)]
    for v in vals:                               # 96-byte samples: the first wraps
        run(rb, reserve_prog(96, value=str(v)))
    _, _, data = rb.ringbuf_view()
    # the wrapping record's header is at PAGE - 64, its sample runs past the
    # end of the ring into its start (the same pages mapped again)
    assert struct.unpack_from("<II", data, PAGE - 64) == (96, pg_off(PAGE - 64))
    assert bytes(data[PAGE - 56:PAGE]) == words(vals[0]) * 7
    assert bytes(data[0:40]) == words(vals[0]) * 5
    assert drain(rb) == [words(v) * 12 for v in vals]
    assert rb.ringbuf_query(BPF_RB_AVAIL_DATA) == 0


def test_query_from_programs_and_python():
    rb = ringbuf(4 * PAGE)
    run(rb, output_prog(5))
    run(rb, reserve_prog(16, commit=None))
    want = {BPF_RB_AVAIL_DATA: 16 + 24, BPF_RB_RING_SIZE: 4 * PAGE,
            BPF_RB_CONS_POS: 0, BPF_RB_PROD_POS: 40, 4: 0, 1 << 40: 0}
    for flag, value in want.items():
        assert run(rb, query_prog(flag).replace(f"r2 = {flag}", f"r2 = {flag} ll")) == value
        assert rb.ringbuf_query(flag) == value
    assert RingBuffer(rb, print).avail_data == 40
    drain(rb)
    assert (rb.ringbuf_query(BPF_RB_CONS_POS), rb.ringbuf_query(BPF_RB_AVAIL_DATA)) == (16, 24)


def test_flags():
    rb = ringbuf()
    for flags in (4, 8, 1 << 32, BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP | 4):
        assert run(rb, output_prog(8, flags=flags).replace(
            f"r4 = {flags}", f"r4 = {flags} ll")) == (-errno.EINVAL) % U64
        assert run(rb, reserve_prog(8, reserve_flags=1)) == 0   # reserve takes no flags
    assert rb.ringbuf_query(BPF_RB_PROD_POS) == 0
    for flags in (0, BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP, 3):
        assert run(rb, output_prog(8, flags=flags)) == 0
    assert len(drain(rb)) == 4


def test_wakeups_where_the_kernel_sends_them():
    rb = ringbuf()
    assert rb.ringbuf_wakeups == 0
    run(rb, output_prog(8))                      # consumer caught up: wake it
    run(rb, output_prog(8))                      # it has not read the first yet
    assert rb.ringbuf_wakeups == 1
    run(rb, output_prog(8, flags=BPF_RB_FORCE_WAKEUP))
    assert rb.ringbuf_wakeups == 2
    drain(rb)
    run(rb, output_prog(8, flags=BPF_RB_NO_WAKEUP))
    assert rb.ringbuf_wakeups == 2
    drain(rb)
    run(rb, reserve_prog(8, flags=BPF_RB_NO_WAKEUP))
    run(rb, reserve_prog(8, "discard", flags=BPF_RB_FORCE_WAKEUP))
    assert rb.ringbuf_wakeups == 3


# ---- consuming ----------------------------------------------------------

def test_callback_stops_consumption_like_libbpf():
    rb = ringbuf()
    for _ in range(4):
        run(rb, output_prog(8))
    seen = []

    def cb(sample):
        seen.append(sample)
        return -7 if len(seen) == 2 else 5     # positive returns are ignored
    assert RingBuffer(rb, cb).consume() == -7
    assert rb.ringbuf_query(BPF_RB_CONS_POS) == 32   # the stopping record is consumed
    assert RingBuffer(rb, cb).consume() == 2 and len(seen) == 4


def test_callback_exception_propagates_after_its_record():
    rb = ringbuf()
    run(rb, output_prog(8))
    run(rb, output_prog(16))

    def cb(sample):
        raise KeyError(len(sample))
    with pytest.raises(KeyError, match="8"):
        RingBuffer(rb, cb).consume()
    assert drain(rb) == [words(0x10, 0x11)]


def test_one_consumer_at_a_time():
    rb = ringbuf()
    run(rb, output_prog(8))
    inner = []

    def cb(sample):
        with pytest.raises(OSError) as e:
            rb.ringbuf_consume(inner.append)
        inner.append(e.value.errno)
    assert RingBuffer(rb, cb).consume() == 1
    assert inner == [errno.EBUSY]


def test_c_consumer_counts_records():
    rb = ringbuf()
    for size in (8, 3):
        run(rb, output_prog(size))
    run(rb, reserve_prog(8, "discard"))
    assert rb.ringbuf_consume() == 2
    assert rb.ringbuf_consume() == 0


def test_poll_times_out_then_wakes_on_a_record():
    rb = ringbuf()
    reader = RingBuffer(rb, (seen := []).append)
    assert reader.poll(0.01) == 0
    result = []
    t = threading.Thread(target=lambda: result.append(reader.poll(30)))
    t.start()
    while rb.ringbuf_waiters == 0:               # the reader is blocked in poll
        t.join(0.001)
    run(rb, output_prog(8))                      # the reader had caught up: a wakeup
    t.join(20)                                   # well before poll's 30 s timeout
    assert not t.is_alive() and result == [1] and seen == [words(0x10)]
    assert (rb.ringbuf_wakeups, rb.ringbuf_waiters) == (1, 0)


def test_no_wakeup_records_do_not_wake_a_waiting_reader():
    rb = ringbuf()
    result = []
    def wait():
        start = time.monotonic()
        result.append(rb.ringbuf_wait(0.3))
        result.append(time.monotonic() - start)
    t = threading.Thread(target=wait)
    t.start()
    while rb.ringbuf_waiters == 0:
        t.join(0.001)
    run(rb, output_prog(8, flags=BPF_RB_NO_WAKEUP))
    t.join()
    # no notification: the wait ran to its timeout, then saw the record
    assert result[0] is True and result[1] >= 0.29 and rb.ringbuf_wakeups == 0


def test_empty_samples():
    rb = ringbuf()
    assert run(rb, f"""
    r1 = map[fd:{FD}] ll
    r2 = 0
    r3 = 0
    r4 = 0
    call 130
    exit""") == 0
    assert run(rb, reserve_prog(0))
    assert headers(rb) == [(0, 0, 3), (8, 0, 3)]
    assert drain(rb) == [b"", b""]


def test_ring_helpers_need_a_ring():
    arr = MapCore(ARRAY, 4, 8, 1, 0, 1)
    with pytest.raises(HelperError):
        run(arr, query_prog(BPF_RB_RING_SIZE))
    with pytest.raises(HelperError):
        run(arr, reserve_prog(8))


def test_reads_a_map_object():
    import userbpf
    m = userbpf.Map(userbpf.MapType.RINGBUF, 0, 0, PAGE)
    core = m._obj.core
    run(core, output_prog(16))
    got = []
    assert userbpf.RingBuffer(m, got.append).poll(0) == 1
    assert got == [words(0x10, 0x11)]


def test_not_a_ringbuf():
    with pytest.raises(OSError) as e:
        RingBuffer(MapCore(ARRAY, 4, 8, 1, 0, 1), print)
    assert e.value.errno == errno.EINVAL


SEQ_PROG = """
    r1 = map[fd:{rb}] ll
    r2 = 16
    r3 = 0
    call 131
    if r0 == 0 goto out
    r6 = r0
    r1 = {producer}
    *(u64 *)(r6 + 0) = r1
    *(u32 *)(r10 - 4) = 0
    r1 = map[fd:{seq}] ll
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto out
    r1 = *(u64 *)(r0 + 0)
    *(u64 *)(r6 + 8) = r1
    r1 += 1
    *(u64 *)(r0 + 0) = r1
    r1 = r6
    r2 = 0
    call 132
    r0 = 1
out:
    exit"""


@pytest.mark.parametrize("per_producer", [3000, pytest.param(100000, marks=pytest.mark.slow)])
def test_consumer_thread_sees_every_record_in_order(per_producer):
    """Two producer threads run programs (run_batch releases the GIL) into a
    small ring while a consumer thread polls: each producer's sequence
    numbers arrive complete and in order."""
    rb = ringbuf(2 * PAGE)
    seen = {0: [], 1: []}

    def cb(sample):
        producer, seq = struct.unpack("<QQ", sample)
        seen[producer].append(seq)

    done = threading.Event()
    reader = RingBuffer(rb, cb)

    def consume():
        while not done.is_set():
            reader.poll(0.05)
        reader.consume()

    def produce(i):
        seq = MapCore(ARRAY, 4, 8, 1, 0, 1)
        prog = Program(SEQ_PROG.format(rb=1, seq=2, producer=i), maps={1: rb, 2: seq})
        while seq.get(0, as_int=True) < per_producer:
            prog.run_batch(None, min(64, per_producer - seq.get(0, as_int=True)))

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join()
    assert seen == {0: list(range(per_producer)), 1: list(range(per_producer))}
    assert rb.ringbuf_query(BPF_RB_AVAIL_DATA) == 0


# ---- the live kernel -----------------------------------------------------

def _kernel():
    from userbpf import hostbpf
    if not hostbpf.available():
        pytest.skip(hostbpf.why_unavailable())
    return hostbpf


KERNEL_STEPS = [
    ("reserve", 16), ("reserve", 100), ("output", 40), ("discard", 8), ("reserve", 1),
    ("reserve", PAGE), ("reserve", PAGE - 8), ("reserve", 2 * PAGE), ("output", 3),
    ("reserve", 3000), ("output", 500), ("reserve", 2000), ("reserve", 200),
    ("consume", 0), ("reserve", 600), ("output", 496), ("discard", 500), ("reserve", 4000),
    ("reserve", 3000), ("consume", 0), ("output", 64), ("reserve", 8000), ("reserve", 5000),
]


def _step_prog(kind, size, fd):
    text = output_prog(size, fd=fd) if kind == "output" else \
        reserve_prog(size - size % 8, "discard" if kind == "discard" else "submit", fd=fd,
                     value="0x5a5a5a5a5a5a5a5a").replace(f"r2 = {size - size % 8}\n",
                                                        f"r2 = {size}\n", 1)
    # end with a verifier-friendly r0: 1 when the record went in, 0 when not
    text = text.replace("    r0 = r8\nout:\n    exit",
                        "    r0 = 1\n    exit\nout:\n    r0 = 0\n    exit")
    if kind == "output":
        text = text.replace("    call 130\n    exit", "    call 130\n    r0 += 1\n    exit")
    return text


@pytest.mark.kernel
def test_same_records_positions_and_refusals_as_the_kernel():
    """The same sequence of output/reserve/discard through XDP programs in the
    kernel (BPF_PROG_TEST_RUN) and here: the same results, producer_pos and
    the same bytes in the ring (headers with their pg_off included)."""
    hostbpf = _kernel()
    size = 2 * PAGE
    ours = ringbuf(size)
    with hostbpf.map_create(RINGBUF, 0, 0, size) as km:
        # the kernel's mmap: consumer page (rw), then producer page + data twice (ro)
        kcons = mmap.mmap(km.fd, PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        ro = mmap.mmap(km.fd, PAGE + 2 * size, prot=mmap.PROT_READ, offset=PAGE)
        try:
            for kind, n in KERNEL_STEPS:
                if kind == "consume":        # the consumer catches up, in both
                    struct.pack_into("<Q", kcons, 0, struct.unpack_from("<Q", ro, 0)[0])
                    cons, prod, _ = ours.ringbuf_view()
                    struct.pack_into("<Q", cons, 0, struct.unpack_from("<Q", prod, 0)[0])
                    continue
                code = asm.assemble(_step_prog(kind, n, km.fd))
                with hostbpf.prog_load(code, hostbpf.ProgType.XDP) as kp:
                    kret = kp.test_run(bytes(64))[0]
                mine = run(ours, _step_prog(kind, n, FD)) % (1 << 32)
                assert (kind, n, mine) == (kind, n, kret)
            kprod = struct.unpack_from("<Q", ro, 0)[0]
            _, prod, data = ours.ringbuf_view()
            assert struct.unpack_from("<Q", prod)[0] == kprod
            assert bytes(data[:size]) == bytes(ro[PAGE:PAGE + size])
            for flag in (BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS, 9):
                with hostbpf.prog_load(asm.assemble(query_prog(flag).replace(
                        f"map[fd:{FD}]", f"map[fd:{km.fd}]")), hostbpf.ProgType.XDP) as kp:
                    kq = kp.test_run(bytes(64))[0]
                assert run(ours, query_prog(flag)) % (1 << 32) == kq
        finally:
            ro.close()
            kcons.close()


def test_through_prog_load_and_a_map_fd():
    """A program loaded with bpf(PROG_LOAD) naming the ring by its fd writes
    into the Map that RingBuffer reads."""
    import userbpf
    m = userbpf.Map(userbpf.MapType.RINGBUF, 0, 0, PAGE)
    code = reserve_prog(8, value="42", fd=100)
    got = []
    with userbpf.load_program(code, userbpf.ProgType.XDP, maps={100: m}, kernel=m.kernel) as p:
        assert p.program.run(bytearray(64)) != 0
        assert p.program.run(bytearray(64)) != 0
    assert RingBuffer(m, got.append).consume() == 2
    assert got == [words(42), words(42)]
