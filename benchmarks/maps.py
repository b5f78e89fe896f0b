#!/usr/bin/env python3
"""Map benchmarks: helper-call cost from programs, operations from Python,
memory per entry, with the live kernel's figures in the same run.

    python benchmarks/maps.py [--seconds 0.3] [--rounds 5] [--big 1000000]

* lookup helper: a program doing 100 ``bpf_map_lookup_elem`` calls in a
  loop, minus the same loop without the call, per call; on a HASH with 1k
  and with 1M entries (8-byte keys and values). The kernel column runs the
  same program as XDP through BPF_PROG_TEST_RUN (JIT, same subtraction).
* Python ops: ``Map`` dict-style get / set / delete, and the raw
  ``MapCore`` calls under it; the kernel column is one ``bpf()`` syscall
  through ctypes (userbpf.hostbpf).
* memory: RSS growth of a full 1M-entry HASH with 8-byte keys and values.

Prints a table; asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import userbpf                                           # noqa: E402
from userbpf import Kernel, Map, MapType, isa            # noqa: E402
from userbpf._maps import MapCore                        # noqa: E402
from run import calibrate, machine, per_call as per_op    # noqa: E402

MAP_FD = 3
LOOKUPS = 100
def lookup_loop(n_entries: int, call: bool) -> list:
    """100 lookups of keys spread over the map (key = i * 0x9E3779B1 mod n), or
    the same loop with the call replaced by ``r0 = 0`` (the baseline)."""
    R0, R1, R2, R6, R7, R10 = 0, 1, 2, 6, 7, 10
    body = [
        isa.BPF_MOV64_IMM(R6, 0),
        # loop: key = (r6 * 2654435761) % n, stored at r10 - 8
        isa.BPF_MOV64_REG(R7, R6),
        isa.BPF_ALU64_IMM(isa.BPF_MUL, R7, 0x9E3779B1 - (1 << 32)),
        isa.BPF_ALU64_IMM(isa.BPF_MOD, R7, n_entries),
        isa.BPF_STX_MEM(isa.BPF_DW, R10, R7, -8),
        *isa.BPF_LD_MAP_FD(R1, MAP_FD),
        isa.BPF_MOV64_REG(R2, R10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, R2, -8),
        isa.BPF_EMIT_CALL(1) if call else isa.BPF_MOV64_IMM(R0, 0),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, R6, 1),
        isa.BPF_JMP_IMM(isa.BPF_JLT, R6, LOOKUPS, -11),
        isa.BPF_MOV64_IMM(R0, 0),
        isa.BPF_EXIT_INSN(),
    ]
    return body


def filled_core(n: int) -> MapCore:
    m = MapCore(MapType.HASH, 8, 8, n, 0, 1)
    for i in range(n):
        b = i.to_bytes(8, "little")
        m.update(b, b)
    return m


def bench_run_batch(prog, repeat) -> float:
    return prog.run_batch(bytearray(64), repeat).duration_ns


def helper_cost(core: MapCore, n: int, seconds: float, rounds: int) -> float:
    """(with calls - without) / calls, each the fastest of interleaved
    batches, so that a slow spell of the machine hits both alike."""
    with_call = userbpf.Program(lookup_loop(n, True), maps={MAP_FD: core})
    without = userbpf.Program(lookup_loop(n, False), maps={MAP_FD: core})
    repeat = calibrate(lambda k: with_call.run_batch(bytearray(64), k), seconds)
    a, b = [], []
    for _ in range(rounds):
        a.append(bench_run_batch(with_call, repeat))
        b.append(bench_run_batch(without, repeat))
    return (min(a) - min(b)) / LOOKUPS


def kernel_helper_cost(n: int, rounds: int):
    from userbpf import hostbpf
    if not hostbpf.available():
        return None
    hmap = hostbpf.map_create(MapType.HASH, 8, 8, n)
    try:
        for i in range(n):
            b = i.to_bytes(8, "little")
            hmap.update(b, b)
        costs = []
        for call in (True, False):
            code = _patch_fd(isa.encode(lookup_loop(n, call)), hmap.fd)
            with hostbpf.prog_load(code, 6) as prog:
                times = [prog.test_run(bytes(64), repeat=20000)[2] for _ in range(rounds)]
            costs.append(min(times))
        return (costs[0] - costs[1]) / LOOKUPS
    finally:
        hmap.close()


def _patch_fd(code: bytes, fd: int) -> bytes:
    """Point the program's map lddw (src_reg 1) at a live kernel map fd."""
    out = bytearray(code)
    for slot in range(len(code) // 8):
        if out[slot * 8] == 0x18 and out[slot * 8 + 1] >> 4 == 1:
            out[slot * 8 + 4: slot * 8 + 8] = fd.to_bytes(4, "little")
    return bytes(out)


def python_ops(seconds: float, rounds: int):
    rows = []
    k = Kernel(ncpus=1)
    m = Map(MapType.HASH, 8, 8, 1024, kernel=k, key_type=int, value_type=int)
    for i in range(1024):
        m[i] = i
    core = MapCore(MapType.HASH, 8, 8, 1024, 0, 1)
    keys = [i.to_bytes(8, "little") for i in range(1024)]
    for kb in keys:
        core.update(kb, kb)
    host = None
    try:
        from userbpf import hostbpf
        if hostbpf.available():
            host = hostbpf.map_create(MapType.HASH, 8, 8, 1024)
            for kb in keys:
                host.update(kb, kb)
    except ImportError:
        pass

    def kern(fn):
        return per_op(fn, seconds, rounds) if host else None

    rows.append(("Map[key] (get)", per_op(lambda i: m[i & 1023], seconds, rounds),
                 per_op(lambda i: core.lookup(keys[i & 1023]), seconds, rounds),
                 kern(lambda i: host.lookup(keys[i & 1023]))))
    rows.append(("Map[key] = v (set)", per_op(lambda i: m.__setitem__(i & 1023, i), seconds, rounds),
                 per_op(lambda i: core.update(keys[i & 1023], keys[i & 1023]), seconds, rounds),
                 kern(lambda i: host.update(keys[i & 1023], keys[i & 1023]))))

    def del_set(i):
        m.__delitem__(i & 1023)
        m[i & 1023] = 1

    def core_del_set(i):
        core.delete(keys[i & 1023])
        core.update(keys[i & 1023], keys[0])

    def host_del_set(i):
        host.delete(keys[i & 1023])
        host.update(keys[i & 1023], keys[0])
    rows.append(("del + set (pair)", per_op(del_set, seconds, rounds),
                 per_op(core_del_set, seconds, rounds), kern(host_del_set)))
    if host:
        host.close()
    return rows


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_per_entry(n: int) -> float:
    before = rss_bytes()
    core = filled_core(n)
    after = rss_bytes()
    del core
    return (after - before) / n


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big", type=int, default=1_000_000, help="entries of the big map")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"\n{'lookup helper call (ns)':<28}{'userbpf':>10}{'kernel':>10}{'ratio':>8}")
    for n in (1024, args.big):
        core = filled_core(n)
        ours = helper_cost(core, n, args.seconds, args.rounds)
        theirs = kernel_helper_cost(n, args.rounds)
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        print(f"{f'HASH 8/8, {n} entries':<28}{ours:>10.1f}{fmt(theirs):>10}{ratio:>8}")
        del core
    print(f"\n{'from Python (ns per op)':<28}{'Map':>10}{'MapCore':>10}{'kernel':>10}")
    for name, ours, core, theirs in python_ops(args.seconds, args.rounds):
        print(f"{name:<28}{ours:>10.1f}{core:>10.1f}{fmt(theirs):>10}")
    print(f"\nmemory: {memory_per_entry(args.big):.1f} bytes per entry "
          f"(HASH, 8-byte keys and values, {args.big} entries, RSS growth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
