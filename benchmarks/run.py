#!/usr/bin/env python3
"""Interpreter benchmarks over ../shared/bench, with the kernel as the baseline.

    python benchmarks/run.py [--bench DIR] [--seconds 0.3] [--rounds 5]

For each program: userbpf's median ns per run inside its C repeat loop
(`Program.run_batch`), ns per executed instruction (counted by the
interpreter), and — where the live kernel's bpf() is permitted — the
kernel's own BPF_PROG_TEST_RUN time for the XDP build of the same program in
the same run, as a ratio ('best' is the fastest batch: on a shared virtual
machine a busy neighbour can slow a multiply-heavy loop like alu 2-3 fold for
seconds at a time). nop is also timed as a plain `prog.run()` call from
Python (the per-call cost a pytest user pays). This prints a table; it
asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import userbpf

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_BENCH = pathlib.Path(os.environ.get("USERBPF_SHARED", HERE.parent.parent / "shared")) / "bench"
XDP = 6
# program -> expected r0 (../shared/bench/README.md)
EXPECTED = {"nop": 0, "alu": 1379682645, "collatz": 524, "parse": 2, "stack": 1559355448,
            "hashmap": 264}
# Map loads to patch in hashmap.mem.bin and hashmap.bin (instruction slots).
MAP_SLOTS = {"hashmap.mem.bin": (15, 34), "hashmap.bin": (19, 38)}
HASH, MAP_FD = 1, 3


def with_map_fd(code: bytes, slots, fd: int) -> bytes:
    """Put a map fd into the lddw slots that load the map (src_reg = 1)."""
    code = bytearray(code)
    for slot in slots:
        code[slot * 8 + 4: slot * 8 + 8] = fd.to_bytes(4, "little")
    return bytes(code)


def hash_map_1k():
    """The bench's map: HASH u32 -> u64, 1024 entries, keys 0..255 filled."""
    from userbpf._maps import MapCore
    m = MapCore(HASH, 4, 8, 1024, 0, 1)
    fill(m.update)
    return m


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, userbpf {userbpf.__version__}")


def calibrate(run_once, seconds: float) -> int:
    """Repeat count so that one timed batch takes about `seconds`."""
    n = 1
    while True:
        t = time.perf_counter()
        run_once(n)
        dt = time.perf_counter() - t
        if dt > seconds / 10 or n >= 1 << 26:
            return max(1, int(n * seconds / max(dt, 1e-9)))
        n *= 4


def bench_userbpf(code: bytes, mem: bytes, seconds: float, rounds: int, maps=None):
    prog = userbpf.Program(code, maps=maps)
    buf = bytearray(mem)
    r0 = prog.run(bytearray(mem))
    repeat = calibrate(lambda n: prog.run_batch(buf, n), seconds)
    times = [prog.run_batch(buf, repeat).duration_ns for _ in range(rounds)]
    return r0, statistics.median(times), prog.insn_count, min(times)


def per_call(fn, seconds: float, rounds: int) -> float:
    """Median ns of one ``fn(i)`` call from a Python loop."""
    def loop(n):
        for i in range(n):
            fn(i)
    n = calibrate(loop, seconds)
    times = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        loop(n)
        times.append((time.perf_counter_ns() - t) / n)
    return statistics.median(times)


def bench_python_call(code: bytes, seconds: float, rounds: int) -> float:
    run = userbpf.Program(code).run
    return per_call(lambda i: run(), seconds, rounds)


def fill(update) -> None:
    """The bench's map contents: keys 0..255 -> themselves (u32 -> u64)."""
    for k in range(256):
        update(k.to_bytes(4, "little"), k.to_bytes(8, "little"))


def host_xdp_program(name: str, code: bytes):
    """``(prog, hmap)``: an XDP build loaded into the live kernel (hashmap with
    its HASH map, else hmap None), or None where bpf() is not permitted."""
    try:
        from userbpf import hostbpf
    except ImportError:
        return None
    if not hostbpf.available():
        return None
    hmap = None
    if name == "hashmap":
        hmap = hostbpf.map_create(HASH, 4, 8, 1024)
        fill(hmap.update)
        code = with_map_fd(code, MAP_SLOTS["hashmap.bin"], hmap.fd)
    return hostbpf.prog_load(code, XDP), hmap


def bench_kernel(name: str, code: bytes, packet: bytes, rounds: int):
    """Median ns per run of the kernel's test_run of an XDP program, or None."""
    loaded = host_xdp_program(name, code)
    if loaded is None:
        return None
    prog, hmap = loaded
    with prog:
        retval, _, _ = prog.test_run(packet, repeat=1)
        repeat = 1
        while True:
            _, _, ns = prog.test_run(packet, repeat=repeat)
            if ns * repeat > 50_000_000 or repeat >= 1 << 22:
                break
            repeat *= 4
        times = [prog.test_run(packet, repeat=repeat)[2] for _ in range(rounds)]
    if hmap is not None:
        hmap.close()
    return retval, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=pathlib.Path, default=DEFAULT_BENCH)
    ap.add_argument("--seconds", type=float, default=0.3, help="time per batch")
    ap.add_argument("--rounds", type=int, default=7,
                    help="batches per figure (median; 'best' is the fastest)")
    args = ap.parse_args(argv)
    if not args.bench.is_dir():
        print(f"{args.bench} not found: the benchmark programs live in ../shared/bench")
        return 1
    print(f"machine: {machine()}")
    print(f"{'program':<10}{'r0':>12}{'insns/run':>11}{'ns/run':>11}{'ns/insn':>9}"
          f"{'best':>7}{'kernel ns/run':>15}{'userbpf/kernel':>16}")
    bad = 0
    for name in ("nop", "alu", "collatz", "stack", "parse", "hashmap"):
        src = args.bench / (f"{name}.bin" if name == "nop" else f"{name}.mem.bin")
        packet = (args.bench / f"{name}.input.bin").read_bytes()
        code, maps = src.read_bytes(), None
        if name == "hashmap":
            maps = {MAP_FD: hash_map_1k()}
            code = with_map_fd(code, MAP_SLOTS[src.name], MAP_FD)
        r0, ns, insns, best = bench_userbpf(code, packet, args.seconds, args.rounds, maps)
        kernel = bench_kernel(name, (args.bench / f"{name}.bin").read_bytes(), packet,
                              args.rounds)
        kcol = ratio = "-"
        if kernel:
            kcol, ratio = f"{kernel[1]:.1f}", f"{ns / max(kernel[1], 0.001):.2f}x"
            if kernel[0] != EXPECTED[name]:
                kcol += " (r0!)"
        flag = "" if r0 == EXPECTED[name] else f"  WRONG r0, expected {EXPECTED[name]}"
        bad += bool(flag)
        print(f"{name:<10}{r0:>12}{insns:>11}{ns:>11.1f}{ns / insns:>9.2f}{best / insns:>7.2f}"
              f"{kcol:>15}{ratio:>16}{flag}")
    call = bench_python_call((args.bench / "nop.bin").read_bytes(), args.seconds, args.rounds)
    print(f"{'nop call':<10}{'':>12}{2:>11}{call:>11.1f}{'':>9}{'':>7}{'':>15}{'':>16}"
          "   (prog.run() from Python)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
