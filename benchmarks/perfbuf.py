#!/usr/bin/env python3
"""Perf buffer events per second, program to Python callback.

    python benchmarks/perfbuf.py [--events 1000000] [--pages 256] [--rounds 3]

The program sends a 16-byte sample from the stack with
bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, 16) and runs in a
C loop (Program.run_batch). The CPU's buffer is filled one batch at a time
(as many samples as fit) and drained after each by
``PerfBuffer(map, callback).consume()`` with a callback that only counts,
so the time covers both sides. Also: the producer alone, and a consumer
thread polling while the producer runs batches in the main thread (the
GIL released by run_batch; a dropped sample is counted, not retried). Best of
``--rounds``; asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import mmap
import threading
import time

from userbpf import PerfBuffer, Program
from userbpf._maps import MapCore

PERF_EVENT_ARRAY = 4
RECORD = 16 + 8            # sample + header

PROG = """
    r1 = 0x1122334455667788 ll
    *(u64 *)(r10 - 8) = r1
    *(u64 *)(r10 - 16) = r1
    r1 = 0
    r2 = map[fd:1] ll
    r3 = 0xffffffff ll
    r4 = r10
    r4 += -16
    r5 = 16
    call bpf_perf_event_output
    exit"""


def run(events, pages, count_in_python):
    events_map = MapCore(PERF_EVENT_ARRAY, 4, 4, 1, 0, 1)
    got = [0]

    def cb(cpu, data):
        got[0] += 1

    reader = PerfBuffer(events_map, cb if count_in_python else (lambda cpu, data: None),
                        page_cnt=pages)
    prog = Program(PROG, maps={1: events_map})
    per_batch = pages * mmap.PAGESIZE // RECORD
    done, spent = 0, 0.0
    t = time.perf_counter()
    while done < events:
        n = min(per_batch, events - done)
        t0 = time.perf_counter()
        prog.run_batch(None, n)
        spent += time.perf_counter() - t0
        reader.consume()
        done += n
    total = time.perf_counter() - t
    assert reader.lost(0) == 0
    if count_in_python:
        assert got[0] == events
    return events / spent, events / total


def threaded(events, pages):
    """Events/s delivered to a Python callback by a consumer thread, and the
    samples lost, while one producer thread runs batches."""
    events_map = MapCore(PERF_EVENT_ARRAY, 4, 4, 1, 0, 1)
    got = [0]

    def cb(cpu, data):
        got[0] += 1

    reader = PerfBuffer(events_map, cb, page_cnt=pages)
    prog = Program(PROG, maps={1: events_map})
    done = threading.Event()

    def consume():
        while not done.is_set():
            reader.poll(0.01)
        reader.consume()

    t = time.perf_counter()
    consumer = threading.Thread(target=consume)
    consumer.start()
    for _ in range(0, events, 4096):
        prog.run_batch(None, 4096)
    done.set()
    consumer.join()
    return got[0] / (time.perf_counter() - t), reader.lost(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    best_prod = best_e2e = 0.0
    for _ in range(a.rounds):
        prod, e2e = run(a.events, a.pages, True)
        best_prod, best_e2e = max(best_prod, prod), max(best_e2e, e2e)
    best_thr, lost = 0.0, 0
    for _ in range(a.rounds):
        thr, n_lost = threaded(a.events, a.pages)
        if thr > best_thr:
            best_thr, lost = thr, n_lost
    print(f"{'perf buffer, 16-byte samples':40s} {'events/s':>14s}")
    print(f"{'producer (run_batch) alone':40s} {best_prod:14,.0f}")
    print(f"{'end to end, Python callback':40s} {best_e2e:14,.0f}")
    print(f"{'consumer thread, Python callback':40s} {best_thr:14,.0f}  ({lost:,} lost)")


if __name__ == "__main__":
    main()
