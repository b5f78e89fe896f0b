#!/usr/bin/env python3
"""BPF_PROG_TEST_RUN benchmarks over ../shared/bench: userbpf and the live
kernel side by side, each running the XDP programs through its own
PROG_TEST_RUN with ``repeat``.

    python benchmarks/test_run.py [--bench DIR] [--seconds 0.2] [--rounds 5]

For each program (``<name>.bin`` on ``<name>.input.bin``; ``hashmap`` with a
real ``BPF_MAP_TYPE_HASH`` of 1024 entries, keys 0..255 filled, on each
side): ``repeat`` is tuned so one test run takes about ``--seconds``; the
figure is the median over ``--rounds`` of the ``duration`` each side reports
(mean ns per run, timed inside its repeat loop: the context is built once,
as the kernel does). The kernel column is JIT-compiled code; the ratio is
userbpf / kernel. The ``call`` rows time one whole ``repeat=1`` test run from
Python (attr handling, context set-up and copy-out included) on both sides.
Prints a table; asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import userbpf                                                     # noqa: E402
from userbpf import Map, MapType, ProgType                         # noqa: E402
from userbpf.kernel import Kernel                                  # noqa: E402
from userbpf.uapi import Cmd                                       # noqa: E402

from run import (DEFAULT_BENCH, EXPECTED, MAP_SLOTS, fill, host_xdp_program,  # noqa: E402
                 machine, with_map_fd)

NAMES = ("nop", "alu", "collatz", "parse", "stack", "hashmap")
MAP_FD = 100          # the fd userbpf's loader is told about (renumbered to the map's)


def tuned_repeat(run, seconds: float) -> int:
    """A repeat count for which one ``run(repeat)`` (returning ns/run) takes ~seconds."""
    repeat = 1
    while True:
        ns = max(run(repeat), 1)
        if ns * repeat > seconds * 1e9 / 8 or repeat >= 1 << 24:
            return max(1, min(int(seconds * 1e9 / ns), 1 << 26))
        repeat *= 8


def measure(run, seconds: float, rounds: int):
    repeat = tuned_repeat(run, seconds)
    return statistics.median(run(repeat) for _ in range(rounds)), repeat


def per_call(fn, seconds: float, rounds: int) -> float:
    """Median wall ns of one ``fn()`` call from a Python loop."""
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t > seconds / 10:
            break
        n *= 4
    n = max(1, int(n * seconds / max(time.perf_counter() - t, 1e-9)))
    times = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn()
        times.append((time.perf_counter_ns() - t) / n)
    return statistics.median(times)


def mine(name: str, code: bytes):
    """(test_run(packet, repeat) -> result) for userbpf, through bpf()."""
    k = Kernel()
    maps = None
    if name == "hashmap":
        m = Map(MapType.HASH, 4, 8, 1024, kernel=k)
        fill(m.update)
        maps = {MAP_FD: m}
        code = with_map_fd(code, MAP_SLOTS["hashmap.bin"], MAP_FD)
    prog = userbpf.load_program(code, prog_type=ProgType.XDP, maps=maps, kernel=k)

    def test_run(packet: bytes, repeat: int):
        return k.bpf(Cmd.PROG_TEST_RUN, prog_fd=prog.fd, data_in=packet, repeat=repeat)
    return test_run, prog


def theirs(name: str, code: bytes):
    """(test_run, closer) for the live kernel, or None where bpf() is not permitted."""
    loaded = host_xdp_program(name, code)
    if loaded is None:
        return None
    prog, hmap = loaded

    def close():
        prog.close()
        if hmap is not None:
            hmap.close()
    return prog.test_run, close


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=pathlib.Path, default=DEFAULT_BENCH)
    ap.add_argument("--seconds", type=float, default=0.2, help="time per test run")
    ap.add_argument("--rounds", type=int, default=5, help="test runs per figure (median)")
    args = ap.parse_args(argv)
    if not args.bench.is_dir():
        print(f"{args.bench} not found: the benchmark programs live in ../shared/bench")
        return 1
    print(f"machine: {machine()}")
    print(f"{'program':<10}{'r0':>12}{'repeat':>10}{'userbpf ns/run':>16}"
          f"{'kernel ns/run':>15}{'userbpf/kernel':>16}")
    bad = 0
    calls = None
    for name in NAMES:
        code = (args.bench / f"{name}.bin").read_bytes()
        packet = (args.bench / f"{name}.input.bin").read_bytes()
        run_mine, prog = mine(name, code)
        r0 = run_mine(packet, 1).retval
        ns, repeat = measure(lambda n: run_mine(packet, n).duration, args.seconds,
                             args.rounds)
        kernel = theirs(name, code)
        kcol = ratio = "-"
        if kernel is not None:
            run_k, close = kernel
            try:
                kr0 = run_k(packet, 1).retval
                kns, _ = measure(lambda n: run_k(packet, n).duration, args.seconds,
                                 args.rounds)
                if name == "nop":
                    calls = (per_call(lambda: run_mine(packet, 1), args.seconds, args.rounds),
                             per_call(lambda: run_k(packet, 1), args.seconds, args.rounds))
            finally:
                close()
            kcol, ratio = f"{kns:.1f}", f"{ns / max(kns, 0.001):.1f}x"
            if kr0 != EXPECTED[name]:
                kcol += " (r0!)"
        elif name == "nop":
            calls = (per_call(lambda: run_mine(packet, 1), args.seconds, args.rounds), None)
        flag = "" if r0 == EXPECTED[name] else f"  WRONG r0, expected {EXPECTED[name]}"
        bad += bool(flag)
        print(f"{name:<10}{r0:>12}{repeat:>10}{ns:>16.1f}{kcol:>15}{ratio:>16}{flag}")
    if calls is not None:
        mc, kc = calls
        kcol = f"{kc:.0f}" if kc is not None else "-"
        ratio = f"{mc / kc:.1f}x" if kc else "-"
        print(f"{'nop call':<10}{'':>12}{1:>10}{mc:>16.0f}{kcol:>15}{ratio:>16}"
              "   (one repeat=1 test run from Python, wall time)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
