"""bpf_spin_lock (93) / bpf_spin_unlock (94): a 4-byte lock word in map
value memory, real mutual exclusion between the threads that run programs
(simulated CPUs are threads).

The kernel wants BTF describing the map value's struct bpf_spin_lock at
load time; userbpf checks the lock word at run time (writable, 4-aligned)
and misuse the verifier would refuse (nested locks, unlocking a lock not
held, exiting with a lock held) ends the run with a HelperError.
"""
from __future__ import annotations

import struct
import threading
import time

import pytest

from userbpf import HelperError, MemoryAccessError, Program, _vm
from userbpf._maps import MapCore

ARRAY = 2

# value: u32 lock, u32 pad, u64 a, u64 b; a and b are updated with plain
# (non-atomic) loads and stores, a few instructions apart
COUNTER = """
    *(u32 *)(r10 - 4) = 0
    r1 = map[fd:3] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto out
    r6 = r0
    r1 = r6
    call bpf_spin_lock
    r1 = *(u64 *)(r6 + 8)
    r2 = *(u64 *)(r6 + 16)
    r1 += 1
    r3 = 0
loop:
    r3 += 1
    if r3 < 8 goto loop
    r2 += r3
    *(u64 *)(r6 + 8) = r1
    *(u64 *)(r6 + 16) = r2
    r1 = r6
    call bpf_spin_unlock
out:
    r0 = 0
    exit
"""


def value_map():
    m = MapCore(ARRAY, 4, 24, 1, 0, 4)
    return m


def counters(m):
    lock, _, a, b = struct.unpack("<IIQQ", m.lookup(bytes(4)))
    return lock, a, b


@pytest.mark.parametrize("nthreads, runs", [(4, 3000)])
def test_threads_increment_exactly_under_the_lock(nthreads, runs):
    m = value_map()
    prog = Program(COUNTER, maps={3: m})
    start = threading.Barrier(nthreads)

    def worker(cpu):
        start.wait()
        prog.run_batch(repeat=runs, cpu=cpu)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters(m) == (0, nthreads * runs, 8 * nthreads * runs)


@pytest.mark.slow
def test_threads_increment_exactly_under_the_lock_long():
    test_threads_increment_exactly_under_the_lock(8, 50000)


def test_the_lock_word_is_one_while_held():
    m = value_map()
    code = COUNTER.replace("    r1 = *(u64 *)(r6 + 8)\n", "    r7 = *(u32 *)(r6 + 0)\n"
                           "    r1 = *(u64 *)(r6 + 8)\n", 1)
    code = code.replace("out:\n    r0 = 0\n", "    r0 = r7\n    exit\nout:\n    r0 = 9\n")
    assert Program(code, maps={3: m}).run() == 1
    assert counters(m) == (0, 1, 8)


LOCK_AT = """
    r1 = {addr} ll
    call bpf_spin_{op}
    exit
"""


def addr_of(b):
    import ctypes
    return ctypes.addressof((ctypes.c_char * len(b)).from_buffer(b))


def test_the_lock_word_must_be_writable_and_aligned():
    buf = bytearray(16)
    base = addr_of(buf)
    for op in ("lock", "unlock"):
        p = Program(LOCK_AT.format(addr=base + 2, op=op))
        p.add_region(buf, True)
        with pytest.raises(MemoryAccessError, match="misaligned"):
            p.run()
        p = Program(LOCK_AT.format(addr=base, op=op))
        p.add_region(buf, False)                         # read-only
        with pytest.raises(MemoryAccessError):
            p.run()
        with pytest.raises(MemoryAccessError):          # outside every region
            Program(LOCK_AT.format(addr=0x1000, op=op)).run()
    assert buf == bytes(16)


NESTED = """
    r6 = r1
    call bpf_spin_lock
    r1 = r6
    r1 += 4
    call bpf_spin_lock
    r0 = 0
    exit
"""


def test_nested_locks_end_the_run_and_release_the_first():
    buf = bytearray(8)
    with pytest.raises(HelperError, match="while this thread holds the lock"):
        Program(NESTED).run(buf)
    assert buf == bytes(8)
    # the thread holds nothing now: a clean lock / unlock works
    code = "r6 = r1\ncall bpf_spin_lock\nr1 = r6\ncall bpf_spin_unlock\nexit"
    assert Program(code).run(buf) == 0 and buf == bytes(8)


def test_unlock_of_a_lock_not_held_ends_the_run():
    buf = bytearray(8)
    with pytest.raises(HelperError, match="does not hold"):
        Program("call bpf_spin_unlock\nexit").run(buf)
    # another thread's lock is not released by it
    holding, done = threading.Event(), threading.Event()

    def wait(*_):
        holding.set()
        done.wait(10)
        return 0
    holder = Program("r6 = r1\ncall bpf_spin_lock\ncall 1000\nr1 = r6\n"
                     "call bpf_spin_unlock\nr0 = 0\nexit", helpers={1000: wait})
    t = threading.Thread(target=holder.run, args=(buf,))
    t.start()
    assert holding.wait(5)
    with pytest.raises(HelperError, match="does not hold"):
        Program("call bpf_spin_unlock\nexit").run(buf)
    assert buf[:4] == b"\1\0\0\0"
    done.set()
    t.join(10)
    assert buf[:4] == bytes(4)


def test_a_run_exiting_with_the_lock_held_fails_and_releases_it():
    buf = bytearray(8)
    hold = "r6 = r1\ncall bpf_spin_lock\nr0 = 0\nexit"
    with pytest.raises(HelperError) as e:
        Program(hold).run(buf)
    assert "exited holding the bpf_spin_lock" in str(e.value)
    assert buf[:4] == bytes(4)
    with pytest.raises(HelperError):            # the same again: nothing leaked
        Program(hold).run(buf)


def test_a_lock_held_too_long_times_out_in_the_waiter():
    buf = bytearray(8)
    holding = threading.Event()

    def slow(*_):
        holding.set()
        time.sleep(0.6)
        return 0
    holder = Program("r6 = r1\ncall bpf_spin_lock\ncall 1000\nr1 = r6\n"
                     "call bpf_spin_unlock\nr0 = 0\nexit", helpers={1000: slow})
    old = _vm.set_spin_lock_timeout(0.2)
    try:
        t = threading.Thread(target=holder.run, args=(buf,))
        t.start()
        assert holding.wait(5)
        t0 = time.monotonic()
        with pytest.raises(HelperError) as e:
            Program("call bpf_spin_lock\nr0 = 0\nexit").run(buf)
        assert "not released within 0.2 s" in str(e.value)
        assert time.monotonic() - t0 >= 0.2
        t.join(10)
        assert not t.is_alive()
    finally:
        _vm.set_spin_lock_timeout(old)
    assert buf[:4] == bytes(4)


def test_helpers_are_registered_under_the_kernel_ids():
    assert {93, 94} <= set(_vm.C_HELPERS)
    assert all(_vm.is_c_helper(_vm.C_HELPERS[i]) for i in (93, 94))
