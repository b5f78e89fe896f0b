"""Fuzzing: no instruction stream may crash the process.

Every program — raw random instruction slots, or valid programs (backward
jumps, calls, lddw, atomics on random pointers, helpers) with random
mutations — must either be refused by ``Program(...)`` with a
ProgramError/EncodingError, or run and return an int or raise a VMError
subclass. The loop runs in a subprocess so that a segfault fails the test
(with the seed and program index to replay) instead of killing pytest.

Replay one program by hand::

    python tests/test_vm_fuzz.py --seed 1 --start 1234 --count 1 --show
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import subprocess
import sys

import pytest

M64 = (1 << 64) - 1
FUZZ_HELPER = 1000


# --- the fuzzer (runs in the child) ----------------------------------------------------------

def corpus():
    """Valid programs to mutate: each exercises a family the VM must survive."""
    from userbpf.isa import (BPF_ADD, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP, BPF_B,
                             BPF_CALL_REL, BPF_CALLX, BPF_CMPXCHG, BPF_DW, BPF_EMIT_CALL,
                             BPF_EXIT_INSN, BPF_FETCH, BPF_H, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLT,
                             BPF_JMP32_A, BPF_JMP_A, BPF_JMP_IMM, BPF_JMP_REG, BPF_LD_ABS,
                             BPF_LD_IMM64, BPF_LD_IND, BPF_LDX_MEM, BPF_LDX_MEMSX,
                             BPF_MAY_GOTO_INSN, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM,
                             BPF_STX_MEM, BPF_SUB, BPF_W, BPF_XCHG, BPF_OR, flatten)
    progs = [
        # a backward loop over the memory buffer
        [BPF_MOV64_IMM(0, 0), BPF_MOV64_REG(3, 1), BPF_MOV64_REG(4, 1),
         BPF_ALU64_REG(BPF_ADD, 4, 2),
         BPF_JMP_REG(BPF_JGE, 3, 4, 4),
         BPF_LDX_MEM(BPF_B, 5, 3, 0), BPF_ALU64_REG(BPF_ADD, 0, 5),
         BPF_ALU64_IMM(BPF_ADD, 3, 1), BPF_JMP_A(-5), BPF_EXIT_INSN()],
        # recursion through bpf-to-bpf calls
        [BPF_MOV64_IMM(1, 5), BPF_CALL_REL(1), BPF_EXIT_INSN(),
         BPF_MOV64_IMM(0, 0), BPF_JMP_IMM(BPF_JEQ, 1, 0, 4), BPF_MOV64_REG(6, 1),
         BPF_ALU64_IMM(BPF_SUB, 1, 1), BPF_CALL_REL(-5), BPF_ALU64_REG(BPF_ADD, 0, 6),
         BPF_EXIT_INSN()],
        # lddw constants, stack traffic, sign-extending loads
        [BPF_LD_IMM64(2, 0x8000000000000001), BPF_STX_MEM(BPF_DW, 10, 2, -8),
         BPF_LDX_MEMSX(BPF_W, 3, 10, -8), BPF_LD_IMM64(4, 0xdeadbeef),
         BPF_ST_MEM(BPF_H, 10, -16, -2), BPF_LDX_MEM(BPF_DW, 0, 10, -16),
         BPF_ALU64_REG(BPF_ADD, 0, 3), BPF_EXIT_INSN()],
        # atomics on the buffer, the stack and a random pointer
        [BPF_MOV64_IMM(2, 3), BPF_ATOMIC_OP(BPF_DW, BPF_ADD | BPF_FETCH, 1, 2, 8),
         BPF_ATOMIC_OP(BPF_W, BPF_XCHG, 10, 2, -4), BPF_MOV64_IMM(0, 3),
         BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 2, -16),
         BPF_LD_IMM64(3, 0x7fff12345678), BPF_ATOMIC_OP(BPF_DW, BPF_OR, 3, 2, 0),
         BPF_EXIT_INSN()],
        # packet loads
        [BPF_LD_ABS(BPF_B, 3), BPF_MOV64_REG(6, 0), BPF_LD_IND(BPF_H, 6, 1),
         BPF_LD_ABS(BPF_W, 0), BPF_EXIT_INSN()],
        # helpers: Python, C, callx, map helpers with bogus pointers
        [BPF_MOV64_IMM(1, 3), BPF_EMIT_CALL(FUZZ_HELPER), BPF_EMIT_CALL(5),
         BPF_EMIT_CALL(7), BPF_MOV64_IMM(6, FUZZ_HELPER), BPF_CALLX(6),
         BPF_MOV64_REG(1, 10), BPF_EMIT_CALL(1), BPF_EXIT_INSN()],
        # may_goto and gotol loops
        [BPF_MOV64_IMM(0, 0), BPF_MAY_GOTO_INSN(2), BPF_ALU64_IMM(BPF_ADD, 0, 1),
         BPF_JMP32_A(-3), BPF_JMP_IMM(BPF_JGT, 0, 5, 1), BPF_JMP_A(-5), BPF_EXIT_INSN()],
        # pointer arithmetic past the end of the buffer
        [BPF_MOV64_REG(3, 1), BPF_ALU64_REG(BPF_ADD, 3, 2), BPF_LDX_MEM(BPF_W, 0, 3, -2),
         BPF_STX_MEM(BPF_DW, 3, 0, 0), BPF_JMP_IMM(BPF_JLT, 0, 7, -3), BPF_EXIT_INSN()],
    ]
    return [flatten(p) for p in progs]


INTERESTING = [0, 1, -1, 2, 7, 8, 16, 31, 32, 63, 64, 512, -512, 4096, -4096, 0x7fff, -0x8000,
               0x7fffffff, -0x80000000, 1000, 5]
INTERESTING_OFF = [v for v in INTERESTING if -0x8000 <= v <= 0x7fff]


def repair(rng, x):
    """Mostly make a random slot obey the reserved-field rules (by zeroing
    random fields), so that it gets past the load checks to the interpreter."""
    from userbpf.isa import check_fields
    if rng.random() < 0.2 or check_fields([x, x._replace(code=0)], 0) is None:
        return x
    for _ in range(8):
        y = x._replace(**{f: 0 for f in ("src", "off", "imm", "dst") if rng.random() < 0.5})
        if y.code & 0xf0 in (0xc0, 0xe0) and y.code & 7 == 3:     # atomic: a real op
            y = y._replace(imm=rng.choice([0, 1, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1,
                                           0xf1, 0x100, 0x110]))
        if check_fields([y, y._replace(code=0)], 0) is None:
            return y
    return x


def random_insn(rng, Insn, codes):
    code = rng.choice(codes) if rng.random() < 0.8 else rng.randrange(256)
    return repair(rng, Insn(code, rng.randrange(11) if rng.random() < 0.95 else rng.randrange(16),
                rng.randrange(11) if rng.random() < 0.95 else rng.randrange(16),
                rng.choice(INTERESTING_OFF + [rng.randrange(-8, 8)]) if rng.random() < 0.7
                else rng.randrange(-0x8000, 0x8000),
                rng.choice(INTERESTING) if rng.random() < 0.6
                else rng.randrange(-(1 << 31), 1 << 31)))


def mutate(rng, insns, Insn, codes):
    insns = list(insns)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(insns))
        x = insns[i]
        how = rng.randrange(8)
        if how == 0:
            insns[i] = repair(rng, x._replace(code=rng.choice(codes)))
        elif how == 1:
            insns[i] = x._replace(dst=rng.randrange(11), src=rng.randrange(11))
        elif how == 2:
            insns[i] = x._replace(off=max(-0x8000, min(0x7fff, x.off + rng.randint(-4, 4))))
        elif how == 3:
            insns[i] = x._replace(imm=rng.choice(INTERESTING))
        elif how == 4:
            insns.insert(i, random_insn(rng, Insn, codes))
        elif how == 5 and len(insns) > 1:
            del insns[i]
        elif how == 6:
            j = rng.randrange(len(insns))
            insns[i], insns[j] = insns[j], insns[i]
        else:
            insns[i] = random_insn(rng, Insn, codes)
    return insns


def make_case(rng, base, Insn, codes):
    """One program as bytes, plus the memory to run it with."""
    kind = rng.random()
    if kind < 0.15:      # raw random bytes
        code = rng.randbytes(8 * rng.randint(1, 12))
    elif kind < 0.45:    # random slots from plausible opcodes, ending in exit
        insns = [random_insn(rng, Insn, codes) for _ in range(rng.randint(1, 16))]
        code = b"".join(i.encode() for i in insns) + bytes.fromhex("9500000000000000")
    else:                # mutated valid programs
        code = b"".join(i.encode() for i in mutate(rng, rng.choice(base), Insn, codes))
    mem = None if rng.random() < 0.2 else bytearray(rng.randbytes(rng.choice([0, 1, 8, 16, 64])))
    return code, mem


def fuzz_helper(r1, r2, r3, r4, r5):
    if r1 % 5 == 3:
        raise ValueError("fuzz helper refuses")
    return (r1 * 3 + r2) ^ r5


def fuzz(seed: int, start: int, count: int, budget: int, show: bool = False) -> int:
    """Run programs start..start+count-1 of `seed`. Writes each index to fd 1
    before running it (unbuffered: the last line names a crashing program)."""
    import faulthandler
    faulthandler.enable()
    from userbpf import EncodingError, Program, ProgramError, VMError, isa
    codes = sorted({i.code for p in corpus() for i in p} |
                   {c for c in range(256) if isa.check_fields([isa.Insn(c)] * 2, 0) is None
                    or (c & 7) in (isa.BPF_JMP, isa.BPF_STX)})
    base = corpus()
    helpers = {FUZZ_HELPER: fuzz_helper}
    stats = {"refused": 0, "ok": 0, "vmerror": 0}
    for i in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + i)
        code, mem = make_case(rng, base, isa.Insn, codes)
        os.write(1, b"%d\n" % i)
        if show:
            print(f"program {i}: {code.hex()} mem={None if mem is None else bytes(mem).hex()}",
                  file=sys.stderr)
        try:
            p = Program(code, helpers=helpers, budget=budget)
        except (ProgramError, EncodingError):
            stats["refused"] += 1
            continue
        try:
            r0 = p.run(mem)
        except VMError:
            stats["vmerror"] += 1
            continue
        if not (isinstance(r0, int) and 0 <= r0 <= M64):
            raise AssertionError(f"program {i} returned {r0!r}")
        stats["ok"] += 1
    os.write(1, ("stats %r\n" % stats).encode())
    return 0


# --- the tests (run the fuzzer in a subprocess) ---------------------------------------------

def run_child(seed: int, count: int, budget: int = 10_000, timeout: float = 600,
              script: str = __file__):
    """Run the fuzzer in a fresh interpreter; fail with a replay line if it dies."""
    cmd = [sys.executable, os.path.abspath(script), "--seed", str(seed), "--count",
           str(count), "--budget", str(budget)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        last = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.isdigit()), "?")
        pytest.fail(f"fuzz child died (returncode {proc.returncode}) on seed {seed} program "
                    f"{last}; replay: python tests/test_vm_fuzz.py --seed {seed} --start {last} "
                    f"--count 1 --show\n--- stderr ---\n{proc.stderr[-4000:]}")
    stats = proc.stdout.splitlines()[-1]
    assert stats.startswith("stats "), proc.stdout[-200:]
    return ast.literal_eval(stats[6:])


def test_fuzz_programs_never_crash_the_process():
    stats = run_child(seed=1, count=20_000)
    assert sum(stats.values()) == 20_000
    # the mix must really reach the interpreter, not just the load-time checks
    assert stats["ok"] > 1000 and stats["vmerror"] > 1000, stats


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
def test_fuzz_programs_never_crash_the_process_long(seed):
    stats = run_child(seed=seed, count=100_000, timeout=3600)
    assert sum(stats.values()) == 100_000


def test_a_crashing_child_is_reported_with_its_seed(tmp_path):
    """The harness itself: a child killed by a signal fails the test with the
    seed and the index of the program it was running."""
    script = tmp_path / "crash.py"
    script.write_text("import os, ctypes\nos.write(1, b'16\\n17\\n')\nctypes.string_at(0)\n")
    with pytest.raises(pytest.fail.Exception) as info:
        run_child(seed=9, count=1, script=str(script))
    assert "seed 9 program 17; replay: python tests/test_vm_fuzz.py --seed 9 --start 17" \
        in str(info.value)
    assert "returncode -11" in str(info.value)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--show", action="store_true", help="print each program's bytes to stderr")
    a = ap.parse_args()
    sys.exit(fuzz(a.seed, a.start, a.count, a.budget, a.show))
