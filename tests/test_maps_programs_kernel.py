"""Differential tests: programs that use maps, on userbpf and on the live kernel.

Random programs look values up in an ARRAY, PERCPU_ARRAY or HASH map with
bpf_map_lookup_elem (some keys absent or out of range, so the pointer is
checked against NULL as the verifier demands), then store into the value
(ST and STX of every size, atomics of both widths with and without fetch,
read-modify-write with ALU ops), and call bpf_map_update_elem and
bpf_map_delete_elem (and bpf_map_lookup_percpu_elem on per-CPU arrays) with
keys and values on the stack. The same bytecode is loaded into the kernel as
an XDP program (run once with BPF_PROG_TEST_RUN) and into userbpf; only the
map fds in the ``lddw`` instructions differ. Afterwards the FULL contents of
both maps are compared (every index, every CPU's slot; hash maps as dicts),
and so are r0 and the scalar registers r6-r8, which carry the helpers'
return values and the loaded bytes (an epilogue stores them into a second,
one-element ARRAY map).

    prologue   stack value buffer fp-72..fp-9 = constants, key slot = 0,
               r6..r8 = constants, r9 = 0
    blocks     random: lookup+stores, update, delete, ALU on r6..r8
    epilogue   out[0] = {r6, r7, r8}; r0 = r6 ^ r7 ^ r8; exit

Pointers live only in r9 (and r0 right after a lookup) and never reach a
store's source, so every generated program is accepted by the verifier: a
rejection is a generator bug and fails the test.

Per-CPU arrays: XDP's test run executes on the calling task's CPU, so the
process is pinned to one CPU for it and userbpf runs with ``cpu=`` that CPU.
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import struct
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import pytest

from userbpf import Program, hostbpf, isa
from userbpf.isa import (
    BPF_ALU, BPF_ALU64, BPF_ATOMIC_OP, BPF_B, BPF_DW, BPF_EMIT_CALL, BPF_EXIT_INSN, BPF_H,
    BPF_JMP, BPF_JMP32, BPF_K, BPF_LD_IMM64, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_LDX_MEMSX,
    BPF_MOV64_IMM, BPF_MOV64_REG, BPF_RAW_INSN, BPF_ST_MEM, BPF_STX_MEM, BPF_W, BPF_X, AluOp,
    AtomicOp, Insn, JmpOp, Pseudo,
)
from userbpf.kernel import Kernel
from userbpf.uapi import Cmd, MapType

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not hostbpf.available(),
                       reason=f"live bpf() not permitted: {hostbpf.why_unavailable()}"),
]

M64 = (1 << 64) - 1
FP = 10
SCALARS = (6, 7, 8)            # callee-saved: survive helper calls, always scalars
PTR = 9                        # the map value pointer inside a lookup block
KEY_OFF = -4                   # u32 key at fp-4 (the slot fp-8 is initialised)
VBUF = -72                     # the update helper's value, fp-72 .. fp-9
VBUF_SIZE = 64
OUT_SIZE = 24                  # out[0] = r6, r7, r8
MAIN_FD, OUT_FD = 0x7fff0001, 0x7fff0002     # placeholders patched per side
XDP_PACKET = bytes(64)

LOOKUP, UPDATE, DELETE, LOOKUP_PERCPU = 1, 2, 3, 195
BPF_F_NO_PREALLOC = 1
NCPUS = hostbpf.possible_cpus() if hostbpf.available() else 1

SIZES = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}
ALU_OPS = [AluOp.ADD, AluOp.SUB, AluOp.MUL, AluOp.DIV, AluOp.OR, AluOp.AND, AluOp.LSH,
           AluOp.RSH, AluOp.MOD, AluOp.XOR, AluOp.MOV, AluOp.ARSH]
ATOMIC_OPS = [AtomicOp.ADD, AtomicOp.OR, AtomicOp.AND, AtomicOp.XOR, AtomicOp.FETCH_ADD,
              AtomicOp.FETCH_OR, AtomicOp.FETCH_AND, AtomicOp.FETCH_XOR, AtomicOp.XCHG,
              AtomicOp.CMPXCHG]
COND_OPS = [JmpOp.JEQ, JmpOp.JNE, JmpOp.JGT, JmpOp.JGE, JmpOp.JLT, JmpOp.JLE, JmpOp.JSET,
            JmpOp.JSGT, JmpOp.JSGE, JmpOp.JSLT, JmpOp.JSLE]
# r4 of bpf_map_update_elem: the valid ones, BPF_F_LOCK (no spin lock here) and junk
UPDATE_FLAGS = [0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 0x10, 1 << 32]
BPF_F_LOCK = 4
SPECIAL = [0, 1, 7, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
           1 << 32, 0x7fffffffffffffff, 1 << 63, M64, 0x0123456789abcdef]


class Geometry(NamedTuple):
    map_type: int
    value_size: int
    max_entries: int
    map_flags: int = 0

    @property
    def percpu(self) -> bool:
        return self.map_type == MapType.PERCPU_ARRAY

    @property
    def is_array(self) -> bool:
        return self.map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY)

    @property
    def sys_value_size(self) -> int:
        return ((self.value_size + 7) & ~7) * NCPUS if self.percpu else self.value_size


# --- building blocks ---------------------------------------------------------------------

class Jump(NamedTuple):
    """A forward conditional jump to item ``target`` of its block (len = the end)."""
    insn: Insn
    target: int


Item = Union[List[Insn], Jump]


def layout(items: Sequence[Item]) -> List[Insn]:
    pos = [0]
    for it in items:
        pos.append(pos[-1] + (1 if isinstance(it, Jump) else len(it)))
    out: List[Insn] = []
    for i, it in enumerate(items):
        if isinstance(it, Jump):
            out.append(it.insn._replace(off=pos[it.target] - pos[i] - 1))
        else:
            out += it
    return out


def value64(rng: random.Random) -> int:
    k = rng.random()
    if k < 0.3:
        return rng.choice(SPECIAL)
    if k < 0.5:
        return rng.randrange(64)
    return rng.getrandbits(64)


def imm32(rng: random.Random) -> int:
    if rng.random() < 0.4:
        return rng.choice((0, 1, -1, 2, 0x7f, -0x80, 0x7fff, 0x7fffffff, -0x80000000, 16))
    return rng.randrange(-(1 << 31), 1 << 31)


def alu(rng: random.Random, regs: Sequence[int]) -> List[Insn]:
    """One ALU op on scalar registers (X sources from the same set)."""
    cls = rng.choice((BPF_ALU64, BPF_ALU))
    width = 64 if cls == BPF_ALU64 else 32
    dst = rng.choice(regs)
    k = rng.random()
    if k < 0.05:
        return [BPF_RAW_INSN(cls | AluOp.NEG | BPF_K, dst, 0, 0, 0)]
    if k < 0.10:
        return [BPF_RAW_INSN(cls | isa.BPF_END | BPF_K, dst, 0, 0, rng.choice((16, 32, 64)))]
    op = rng.choice(ALU_OPS)
    off = rng.randrange(2) if op in (AluOp.DIV, AluOp.MOD) else 0      # 1: signed
    if rng.random() < 0.5:
        return [BPF_RAW_INSN(cls | op | BPF_X, dst, rng.choice(regs), off, 0)]
    if op in (AluOp.LSH, AluOp.RSH, AluOp.ARSH):
        imm = rng.randrange(width)
    else:
        imm = imm32(rng)
        if op in (AluOp.DIV, AluOp.MOD) and imm == 0:
            imm = 3
    return [BPF_RAW_INSN(cls | op | BPF_K, dst, 0, off, imm)]


def cond_jump(rng: random.Random, regs: Sequence[int], here: int, end: int) -> Jump:
    cls = rng.choice((BPF_JMP, BPF_JMP32))
    op = rng.choice(COND_OPS)
    target = rng.randrange(here + 1, end + 1)
    if rng.random() < 0.5:
        return Jump(BPF_RAW_INSN(cls | op | BPF_X, rng.choice(regs), rng.choice(regs), 0, 0),
                    target)
    return Jump(BPF_RAW_INSN(cls | op | BPF_K, rng.choice(regs), 0, 0, imm32(rng)), target)


def key_choice(rng: random.Random, g: Geometry) -> int:
    if g.is_array:
        if rng.random() < 0.8:
            return rng.randrange(g.max_entries)
        return rng.choice((g.max_entries, g.max_entries + 1, 0xffffffff, 1 << 31, 64))
    if rng.random() < 0.9:
        return rng.randrange(HASH_KEYS)
    return rng.choice((0xffffffff, 1 << 31, 1000))


# r3 of bpf_map_lookup_percpu_elem: the cpu is a u32 (1 << 32 is CPU 0)
PERCPU_LOOKUP_CPUS = (0, 0, NCPUS - 1, NCPUS - 1, NCPUS, 0xffffffff, 1 << 32,
                      (1 << 32) + NCPUS - 1)

HASH_KEYS = 12          # keys 0..11 into a hash of 8: inserts find it full


def put_key(rng: random.Random, g: Geometry) -> List[Insn]:
    """The u32 key at fp-4: a constant, or computed from a scalar register."""
    if rng.random() < 0.7:
        return [BPF_ST_MEM(BPF_W, FP, KEY_OFF, key_choice(rng, g))]
    # & 15: an 8-entry array's indices 8..15 are out of range, hash keys 12..15 new
    return [BPF_MOV64_REG(1, rng.choice(SCALARS)), isa.BPF_ALU64_IMM(AluOp.AND, 1, 15),
            BPF_STX_MEM(BPF_W, FP, 1, KEY_OFF)]


def map_key_args() -> List[Insn]:
    return [*BPF_LD_MAP_FD(1, MAIN_FD), BPF_MOV64_REG(2, FP),
            isa.BPF_ALU64_IMM(AluOp.ADD, 2, KEY_OFF)]


def value_op(rng: random.Random, g: Geometry, regs: Sequence[int]) -> List[Insn]:
    """One access through r9 into the value: in bounds; atomics naturally aligned
    (the kernel is strict for atomics, lenient for plain accesses on x86)."""
    vs = g.value_size
    kind = rng.choices(("st", "stx", "ldx", "atomic", "rmw"), (15, 20, 20, 30, 15))[0]
    if kind == "atomic":
        size = rng.choice((4, 8))
        off = rng.randrange(0, vs - size + 1, size)
        return [BPF_ATOMIC_OP(SIZES[size], rng.choice(ATOMIC_OPS), PTR, rng.choice(regs), off)]
    size = rng.choice((1, 2, 4, 8))
    off = rng.randrange(0, vs - size + 1)
    if kind == "st":
        return [BPF_ST_MEM(SIZES[size], PTR, off, imm32(rng))]
    if kind == "stx":
        return [BPF_STX_MEM(SIZES[size], PTR, rng.choice(regs), off)]
    dst = rng.choice(regs)
    load = (BPF_LDX_MEMSX(SIZES[size], dst, PTR, off) if size < 8 and rng.random() < 0.3
            else BPF_LDX_MEM(SIZES[size], dst, PTR, off))
    if kind == "ldx":
        return [load]
    out = [load]
    for _ in range(rng.randint(1, 3)):
        out += alu(rng, regs)
    return out + [BPF_STX_MEM(SIZES[size], PTR, dst, off)]


def lookup_block(rng: random.Random, g: Geometry) -> List[Insn]:
    items: List[Item] = [put_key(rng, g), map_key_args()]
    if g.percpu and rng.random() < 0.3:
        # bpf_map_lookup_percpu_elem(map, key, cpu): r3 is a u32 cpu
        cpu = rng.choice(PERCPU_LOOKUP_CPUS)
        items.append(list(BPF_LD_IMM64(3, cpu)) + [BPF_EMIT_CALL(LOOKUP_PERCPU)])
    else:
        items.append([BPF_EMIT_CALL(LOOKUP)])
    null_check = len(items)
    items.append(None)                                  # placeholder: if r0 == 0 goto end
    items.append([BPF_MOV64_REG(PTR, 0), BPF_MOV64_REG(0, rng.choice(SCALARS))])
    regs = (0,) + SCALARS
    for _ in range(rng.randint(1, 8)):
        k = rng.random()
        if k < 0.6:
            items.append(value_op(rng, g, regs))
        elif k < 0.85:
            items.append(alu(rng, regs))
        else:
            items.append(None)                          # a jump, placed once the end is known
    end = len(items)
    for i, it in enumerate(items):
        if it is None and i == null_check:
            items[i] = Jump(isa.BPF_JMP_IMM(JmpOp.JEQ, 0, 0, 0), end)
        elif it is None:
            items[i] = cond_jump(rng, regs, i, end)
    return layout(items)


def update_block(rng: random.Random, g: Geometry) -> List[Insn]:
    out = put_key(rng, g)
    for _ in range(rng.randint(0, 3)):                  # vary the value on the stack
        size = rng.choice((1, 2, 4, 8))
        off = VBUF + rng.randrange(0, VBUF_SIZE, 8) + rng.randrange(0, 8, size)
        if rng.random() < 0.5:
            out.append(BPF_STX_MEM(SIZES[size], FP, rng.choice(SCALARS), off))
        else:
            out.append(BPF_ST_MEM(SIZES[size], FP, off, imm32(rng)))
    out += map_key_args()
    flags = rng.choice(UPDATE_FLAGS)
    out += [BPF_MOV64_REG(3, FP), isa.BPF_ALU64_IMM(AluOp.ADD, 3, VBUF),
            *BPF_LD_IMM64(4, flags), BPF_EMIT_CALL(UPDATE)]
    return out + keep_result(rng)


def delete_block(rng: random.Random, g: Geometry) -> List[Insn]:
    return put_key(rng, g) + map_key_args() + [BPF_EMIT_CALL(DELETE)] + keep_result(rng)


def keep_result(rng: random.Random) -> List[Insn]:
    """Fold the helper's r0 into a scalar register (it reaches the out map)."""
    op = rng.choice((AluOp.MOV, AluOp.XOR, AluOp.ADD))
    dst = rng.choice(SCALARS)
    return [isa.BPF_ALU64_IMM(AluOp.LSH, dst, rng.choice((0, 8, 16)))] + \
        [BPF_RAW_INSN(BPF_ALU64 | op | BPF_X, dst, 0, 0, 0)]


def scalar_block(rng: random.Random, g: Geometry) -> List[Insn]:
    out: List[Insn] = []
    for _ in range(rng.randint(1, 4)):
        out += alu(rng, SCALARS)
    return out


BLOCKS = {"lookup": lookup_block, "update": update_block, "delete": delete_block,
          "alu": scalar_block}
BLOCK_WEIGHTS = {
    "array": (55, 20, 10, 15),
    "percpu_array": (55, 20, 10, 15),
    "hash": (40, 30, 20, 10),
}


def prologue(rng: random.Random) -> List[Insn]:
    out: List[Insn] = []
    for off in range(VBUF, VBUF + VBUF_SIZE, 8):
        out += [*BPF_LD_IMM64(1, value64(rng)), BPF_STX_MEM(BPF_DW, FP, 1, off)]
    out.append(BPF_ST_MEM(BPF_DW, FP, -8, 0))
    for r in SCALARS:
        out += BPF_LD_IMM64(r, value64(rng))
    return out + [BPF_MOV64_IMM(PTR, 0)]


def epilogue() -> List[Insn]:
    return [BPF_ST_MEM(BPF_W, FP, KEY_OFF, 0), *BPF_LD_MAP_FD(1, OUT_FD), BPF_MOV64_REG(2, FP),
            isa.BPF_ALU64_IMM(AluOp.ADD, 2, KEY_OFF), BPF_EMIT_CALL(LOOKUP),
            isa.BPF_JMP_IMM(JmpOp.JEQ, 0, 0, 3),
            *(BPF_STX_MEM(BPF_DW, 0, r, 8 * i) for i, r in enumerate(SCALARS)),
            BPF_MOV64_REG(0, 6), isa.BPF_ALU64_REG(AluOp.XOR, 0, 7),
            isa.BPF_ALU64_REG(AluOp.XOR, 0, 8), BPF_EXIT_INSN()]


class Case(NamedTuple):
    seed: int
    geometry: Geometry
    code: List[Insn]
    initial: Dict[bytes, bytes]         # user-space updates before the run


GEOMETRIES = {
    "array": lambda rng: Geometry(MapType.ARRAY, rng.randint(16, 64), rng.choice((1, 3, 8, 8))),
    "percpu_array": lambda rng: Geometry(MapType.PERCPU_ARRAY, rng.randint(16, 64),
                                         rng.choice((1, 3, 8, 8))),
    "hash": lambda rng: Geometry(MapType.HASH, rng.randint(16, 64), rng.choice((4, 8, 8)),
                                 rng.choice((0, BPF_F_NO_PREALLOC))),
}


def random_case(seed: int, profile: str) -> Case:
    rng = random.Random(seed)
    g = GEOMETRIES[profile](rng)
    code = prologue(rng)
    names = rng.choices(list(BLOCKS), BLOCK_WEIGHTS[profile], k=rng.randint(2, 10))
    for name in names:
        code += BLOCKS[name](rng, g)
    code += epilogue()
    if g.is_array:
        keys = [i for i in range(g.max_entries) if rng.random() < 0.7]
    else:
        keys = rng.sample(range(HASH_KEYS), rng.randint(0, g.max_entries))
    initial = {struct.pack("<I", k): rng.randbytes(g.sys_value_size) for k in keys}
    return Case(seed, g, code, initial)


# --- running on both sides ------------------------------------------------------------------

def patch(code: Sequence[Insn], fds: Dict[int, int]) -> List[Insn]:
    """The program with the placeholder map fds of its lddw replaced."""
    out = list(code)
    for i, x in enumerate(out):
        if x.code == isa.BPF_LD | BPF_DW | isa.BPF_IMM and x.src == Pseudo.MAP_FD:
            out[i] = x._replace(imm=fds[x.imm & 0xffffffff])
    return out


@contextlib.contextmanager
def on_one_cpu():
    """Pin this process to one CPU (XDP's test run uses the caller's); yields it."""
    old = os.sched_getaffinity(0)
    cpu = min(old)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, old)


class Result(NamedTuple):
    r0: int                         # low 32 bits (the kernel's test run retval)
    contents: Dict[bytes, bytes]    # key -> value as user space reads it
    out: bytes                      # r6, r7, r8 at the exit


def host_items(m: hostbpf.HostMap) -> Dict[bytes, bytes]:
    return dict(m.items())


def user_items(k: Kernel, fd: int) -> Dict[bytes, bytes]:
    out, key = {}, None
    while True:
        try:
            key = k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=key)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return out
            raise
        out[key] = k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key)


def run_kernel(case: Case) -> Result:
    g = case.geometry
    with hostbpf.map_create(g.map_type, 4, g.value_size, g.max_entries, g.map_flags) as m, \
            hostbpf.map_create(MapType.ARRAY, 4, OUT_SIZE, 1) as out:
        for key, value in case.initial.items():
            m.update(key, value)
        code = patch(case.code, {MAIN_FD: m.fd, OUT_FD: out.fd})
        with hostbpf.prog_load(code, hostbpf.ProgType.XDP) as prog, on_one_cpu():
            retval = prog.test_run(XDP_PACKET).retval
        return Result(retval, host_items(m), out.lookup(bytes(4)))


def run_userbpf(case: Case, k: Kernel, cpu: int) -> Result:
    g = case.geometry
    fd = k.bpf(Cmd.MAP_CREATE, map_type=g.map_type, key_size=4, value_size=g.value_size,
               max_entries=g.max_entries, map_flags=g.map_flags)
    ofd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=OUT_SIZE,
                max_entries=1)
    try:
        for key, value in case.initial.items():
            k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key, value=value)
        code = patch(case.code, {MAIN_FD: fd, OUT_FD: ofd})
        prog = Program(code, maps={fd: k.fds.get(fd).core, ofd: k.fds.get(ofd).core})
        r0 = prog.run(bytearray(XDP_PACKET), cpu=cpu)
        return Result(r0 & 0xffffffff, user_items(k, fd),
                      k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=ofd, key=bytes(4)))
    finally:
        k.close(fd)
        k.close(ofd)


def listing(code: Sequence[Insn]) -> str:
    try:
        from userbpf import asm
        return asm.disassemble(list(code))
    except Exception:           # never let the disassembler hide the finding
        return "\n".join(f"{i:4}: {x}" for i, x in enumerate(code))


def show(contents: Dict[bytes, bytes], g: Geometry) -> List[str]:
    rows = []
    for key in sorted(contents, key=lambda k: struct.unpack("<I", k)[0]):
        v = contents[key]
        if g.percpu:
            step = (g.value_size + 7) & ~7
            v = " | ".join(v[i:i + step].hex() for i in range(0, len(v), step))
        else:
            v = v.hex()
        rows.append(f"  [{struct.unpack('<I', key)[0]}] {v}")
    return rows


def report(case: Case, kern: Optional[Result], user: Optional[Result], error: str = "") -> str:
    g = case.geometry
    lines = [f"seed={case.seed} {MapType(g.map_type).name} value_size={g.value_size} "
             f"max_entries={g.max_entries} map_flags={g.map_flags} ncpus={NCPUS}",
             "initial:", *show(case.initial, g), "program (map fds are placeholders: "
             f"{MAIN_FD:#x} the map, {OUT_FD:#x} the out map):", listing(case.code)]
    if error:
        lines.append(error)
    for name, res in (("kernel", kern), ("userbpf", user)):
        if res is None:
            continue
        lines.append(f"{name}: r0={res.r0:#x} r6..r8="
                     + " ".join(f"{v:#x}" for v in struct.unpack("<3Q", res.out)))
        lines += show(res.contents, g)
    return "\n".join(lines)


class Outcome(NamedTuple):
    ok: bool
    rejected: bool
    text: str


def check_case(case: Case, k: Kernel) -> Outcome:
    try:
        kern = run_kernel(case)
    except hostbpf.HostError as e:
        if e.cmd == Cmd.PROG_LOAD:
            return Outcome(False, True, report(case, None, None,
                                               f"KERNEL REJECTED (errno {e.errno}):\n"
                                               f"{e.log[-3000:]}"))
        raise
    cpu = min(os.sched_getaffinity(0))
    try:
        user = run_userbpf(case, k, cpu)
    except Exception as e:      # any userbpf failure is a finding, shown with the program
        return Outcome(False, False, report(case, kern, None,
                                            f"USERBPF RAISED {type(e).__name__}: {e}"))
    return Outcome(kern == user, False, report(case, kern, user))


def differential(profile: str, count: int, base_seed: int) -> None:
    k = Kernel(ncpus=NCPUS)
    failures, rejected = [], 0
    for seed in range(base_seed, base_seed + count):
        res = check_case(random_case(seed, profile), k)
        rejected += res.rejected
        if not res.ok:
            failures.append((seed, res.text))
    assert len(k.fds) == 0 and not k.map_ids.live
    if failures:
        pytest.fail(f"{len(failures)}/{count} {profile} programs differ ({rejected} rejected "
                    f"by the kernel: a generator bug); first:\n{failures[0][1]}\n"
                    f"other seeds: {[s for s, _ in failures[1:20]]}", pytrace=False)
    assert rejected == 0


BOUNDED = {"array": 1000, "percpu_array": 500, "hash": 500}
BASE_SEED = {"array": 10_000_000, "percpu_array": 20_000_000, "hash": 30_000_000}


@pytest.mark.parametrize("profile", sorted(BOUNDED))
def test_map_programs_match_the_kernel(profile):
    differential(profile, BOUNDED[profile], BASE_SEED[profile])


@pytest.mark.slow
@pytest.mark.parametrize("profile", sorted(BOUNDED))
def test_map_programs_match_the_kernel_long(profile):
    differential(profile, {"array": 25_000, "percpu_array": 12_500, "hash": 12_500}[profile],
                 BASE_SEED[profile] + 1_000_000)


def test_generator_covers_every_operation():
    """The bounded run really contains what the module docstring promises."""
    seen = set()
    for profile, count in BOUNDED.items():
        for seed in range(BASE_SEED[profile], BASE_SEED[profile] + count // 4):
            code = random_case(seed, profile).code
            for x in code:
                cls, size = x.code & 0x07, x.code & 0x18
                mode = x.code & 0xe0
                if x.code == BPF_JMP | isa.BPF_CALL:
                    seen.add(("call", profile, x.imm))
                elif cls == isa.BPF_STX and mode == isa.BPF_ATOMIC:
                    seen.add(("atomic", size, x.imm))
                elif cls in (isa.BPF_ST, isa.BPF_STX, isa.BPF_LDX) and x.dst == PTR:
                    seen.add((cls, size, mode))
                elif cls == isa.BPF_LDX and x.src == PTR:
                    seen.add((cls, size, mode))
    want = {("atomic", s, op) for s in (BPF_W, BPF_DW) for op in ATOMIC_OPS}
    want |= {(c, s, isa.BPF_MEM) for c in (isa.BPF_ST, isa.BPF_STX, isa.BPF_LDX)
             for s in SIZES.values()}
    want |= {(isa.BPF_LDX, s, isa.BPF_MEMSX) for s in (BPF_B, BPF_H, BPF_W)}
    want |= {("call", p, h) for p in BOUNDED for h in (LOOKUP, UPDATE, DELETE)}
    want.add(("call", "percpu_array", LOOKUP_PERCPU))
    assert want - seen == set()


# --- the helpers' return values, case by case -----------------------------------------------

def helper_program(fd: int, helper: int, key: int, flags: int = 0) -> List[Insn]:
    """r0 = helper(map, &key, &value (zeroes), flags); exit."""
    return [*(BPF_ST_MEM(BPF_DW, FP, off, 0) for off in range(VBUF, 0, 8)),
            BPF_ST_MEM(BPF_W, FP, KEY_OFF, key), *BPF_LD_MAP_FD(1, fd), BPF_MOV64_REG(2, FP),
            isa.BPF_ALU64_IMM(AluOp.ADD, 2, KEY_OFF), BPF_MOV64_REG(3, FP),
            isa.BPF_ALU64_IMM(AluOp.ADD, 3, VBUF), *BPF_LD_IMM64(4, flags),
            BPF_EMIT_CALL(helper), BPF_EXIT_INSN()]


def signed32(v: int) -> int:
    v &= 0xffffffff
    return v - (1 << 32) if v >> 31 else v


def helper_both(map_type: int, map_flags: int, filled: Sequence[int], helper: int, key: int,
                flags: int = 0):
    """(kernel, userbpf) r0 of helper_program on a map of 8 x 16 bytes holding ``filled``."""
    g = Geometry(map_type, 16, 8, map_flags)
    initial = {struct.pack("<I", k): bytes(g.sys_value_size) for k in filled}
    with hostbpf.map_create(map_type, 4, 16, 8, map_flags) as m:
        for k, v in initial.items():
            m.update(k, v)
        with hostbpf.prog_load(helper_program(m.fd, helper, key, flags),
                               hostbpf.ProgType.XDP) as prog:
            kernel = signed32(prog.test_run(XDP_PACKET).retval)
    k = Kernel(ncpus=NCPUS)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=4, value_size=16, max_entries=8,
               map_flags=map_flags)
    for kk, v in initial.items():
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=kk, value=v)
    user = signed32(Program(helper_program(fd, helper, key, flags),
                            maps={fd: k.fds.get(fd).core}).run(bytearray(XDP_PACKET)))
    return kernel, user


def update_cases():
    """(map_type, map_flags, keys filled, key, flags); arrays always hold every index."""
    for t in (MapType.ARRAY, MapType.PERCPU_ARRAY):
        for key in (1, 8, 64):
            for flags in (0, 1, 2, 3, 4, 5, 6, 7, 1 << 32):
                # the kernel's order: unknown flags, index (E2BIG), NOEXIST, then LOCK
                yield pytest.param(t, 0, 4, key, flags, id=f"{t.name}-key{key}-flags{flags:#x}")
    for map_flags in (0, BPF_F_NO_PREALLOC):
        for filled in (4, 8):                       # 8: full, so inserts fail with E2BIG
            for key in (1, 9):
                for flags in (0, 1, 2, 3, 4, 5, 6, 1 << 32):
                    yield pytest.param(MapType.HASH, map_flags, filled, key, flags,
                                       id=f"HASH{map_flags}-{filled}of8-key{key}-"
                                          f"flags{flags:#x}")


@pytest.mark.parametrize("map_type, map_flags, filled, key, flags", list(update_cases()))
def test_update_elem_returns_what_the_kernel_returns(map_type, map_flags, filled, key, flags):
    kernel, user = helper_both(map_type, map_flags, range(filled), UPDATE, key, flags)
    assert user == kernel, f"kernel {kernel} userbpf {user}"


@pytest.mark.parametrize("map_type, map_flags", [(MapType.ARRAY, 0), (MapType.PERCPU_ARRAY, 0),
                                                 (MapType.HASH, 0),
                                                 (MapType.HASH, BPF_F_NO_PREALLOC)])
@pytest.mark.parametrize("key", [1, 5, 64])
def test_delete_elem_returns_what_the_kernel_returns(map_type, map_flags, key):
    kernel, user = helper_both(map_type, map_flags, range(4), DELETE, key)
    assert user == kernel, f"kernel {kernel} userbpf {user}"
    # arrays: EINVAL whatever the key; hash maps: 0, or ENOENT for an absent key
    expect = -errno.EINVAL if map_type != MapType.HASH else (0 if key < 4 else -errno.ENOENT)
    assert kernel == expect


def percpu_lookup_program(fd: int, cpu: int) -> List[Insn]:
    """r0 = *(u64 *)bpf_map_lookup_percpu_elem(map, &0, cpu), or 0xdead for NULL."""
    return [BPF_ST_MEM(BPF_DW, FP, -8, 0), *BPF_LD_MAP_FD(1, fd), BPF_MOV64_REG(2, FP),
            isa.BPF_ALU64_IMM(AluOp.ADD, 2, -8), *BPF_LD_IMM64(3, cpu),
            BPF_EMIT_CALL(LOOKUP_PERCPU), isa.BPF_JMP_IMM(JmpOp.JNE, 0, 0, 2),
            BPF_MOV64_IMM(0, 0xdead), BPF_EXIT_INSN(), BPF_LDX_MEM(BPF_DW, 0, 0, 0),
            BPF_EXIT_INSN()]


@pytest.mark.parametrize("cpu", [
    0, NCPUS - 1, NCPUS, 0xffffffff,
    pytest.param(1 << 32, id="2**32"),
    pytest.param((1 << 32) + NCPUS - 1, id="2**32+ncpus-1")])
def test_lookup_percpu_elem_cpu_is_a_u32(cpu):
    value = b"".join(struct.pack("<Q", 0x1111 * (c + 1)) for c in range(NCPUS))
    with hostbpf.map_create(MapType.PERCPU_ARRAY, 4, 8, 1) as m:
        m.update(bytes(4), value)
        with hostbpf.prog_load(percpu_lookup_program(m.fd, cpu), hostbpf.ProgType.XDP) as p:
            kernel = p.test_run(XDP_PACKET).retval
    k = Kernel(ncpus=NCPUS)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.PERCPU_ARRAY, key_size=4, value_size=8,
               max_entries=1)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=bytes(4), value=value)
    user = Program(percpu_lookup_program(fd, cpu),
                   maps={fd: k.fds.get(fd).core}).run(bytearray(XDP_PACKET))
    assert kernel == (0x1111 * ((cpu & 0xffffffff) + 1) if cpu & 0xffffffff < NCPUS else 0xdead)
    assert user == kernel, f"kernel {kernel:#x} userbpf {user:#x}"
