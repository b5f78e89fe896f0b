"""BPF_ATOMIC: every read-modify-write op with and without BPF_FETCH, xchg,
cmpxchg, load-acquire/store-release, 32/64 bits, on the stack and on the
memory buffer; misaligned and out-of-bounds atomics fault."""
from __future__ import annotations

import ctypes
import struct

import pytest

from userbpf import MemoryAccessError, Program, reference
from userbpf.isa import *  # noqa: F401,F403

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
OLD = 0xf0f00000ffff1234
V = 0xa5a5ff00800100ff

# imm -> what memory holds afterwards, given old and operand (unsigned, same width)
RMW = {
    BPF_ADD: lambda o, v, m: (o + v) & m,
    BPF_OR: lambda o, v, m: o | v,
    BPF_AND: lambda o, v, m: o & v,
    BPF_XOR: lambda o, v, m: o ^ v,
}
OPS = [(op, fetch) for op in RMW for fetch in (False, True)]


def address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def run_both(prog, mem):
    vm_mem = bytearray(mem)
    r0 = Program(prog).run(vm_mem)
    ref = reference.run(prog, mem=mem)
    assert (ref.r0, ref.mem) == (r0, bytes(vm_mem))
    return r0, bytes(vm_mem)


def atomic_on(where, size, imm):
    """mem[8:16] = OLD (on the stack for where='stack'), r2 = V, the atomic op;
    then mem[0:8] = r2 and mem[8:16] = the target's final contents."""
    prog = [BPF_LD_IMM64(3, OLD), BPF_LD_IMM64(2, V)]
    if where == "mem":
        prog += [BPF_STX_MEM(BPF_DW, 1, 3, 8), BPF_ATOMIC_OP(size, imm, 1, 2, 8)]
    else:
        prog += [BPF_STX_MEM(BPF_DW, 10, 3, -16), BPF_ATOMIC_OP(size, imm, 10, 2, -16),
                 BPF_LDX_MEM(BPF_DW, 3, 10, -16), BPF_STX_MEM(BPF_DW, 1, 3, 8)]
    prog += [BPF_STX_MEM(BPF_DW, 1, 2, 0), BPF_EXIT_INSN()]
    _, mem = run_both(prog, bytes(16))
    return struct.unpack("<QQ", mem)


@pytest.mark.parametrize("where", ["mem", "stack"])
@pytest.mark.parametrize("op, fetch", OPS, ids=[f"{o.name.lower()}{'-fetch' if f else ''}"
                                                 for o, f in OPS])
def test_rmw64(op, fetch, where):
    src, target = atomic_on(where, BPF_DW, op | (BPF_FETCH if fetch else 0))
    assert target == RMW[op](OLD, V, M64)
    assert src == (OLD if fetch else V)


@pytest.mark.parametrize("where", ["mem", "stack"])
@pytest.mark.parametrize("op, fetch", OPS, ids=[f"{o.name.lower()}{'-fetch' if f else ''}"
                                                 for o, f in OPS])
def test_rmw32_touches_four_bytes_and_fetch_zero_extends(op, fetch, where):
    src, target = atomic_on(where, BPF_W, op | (BPF_FETCH if fetch else 0))
    assert target & M32 == RMW[op](OLD & M32, V & M32, M32)
    assert target >> 32 == OLD >> 32                 # the upper half is untouched
    assert src == ((OLD & M32) if fetch else V)      # fetch: old value, zero-extended


@pytest.mark.parametrize("where", ["mem", "stack"])
def test_xchg(where):
    assert atomic_on(where, BPF_DW, BPF_XCHG) == (OLD, V)
    src, target = atomic_on(where, BPF_W, BPF_XCHG)
    assert src == OLD & M32
    assert target == (OLD & ~M32) | (V & M32)


def cmpxchg(size, r0, where="mem"):
    """r0 = expected; cmpxchg [target], r2 = V; returns (r0, target)."""
    prog = [BPF_LD_IMM64(3, OLD), BPF_LD_IMM64(2, V), BPF_LD_IMM64(0, r0)]
    if where == "mem":
        prog += [BPF_STX_MEM(BPF_DW, 1, 3, 8), BPF_ATOMIC_OP(size, BPF_CMPXCHG, 1, 2, 8)]
    else:
        prog += [BPF_STX_MEM(BPF_DW, 10, 3, -8), BPF_ATOMIC_OP(size, BPF_CMPXCHG, 10, 2, -8),
                 BPF_LDX_MEM(BPF_DW, 3, 10, -8), BPF_STX_MEM(BPF_DW, 1, 3, 8)]
    prog += [BPF_EXIT_INSN()]
    r0, mem = run_both(prog, bytes(16))
    return r0, struct.unpack_from("<Q", mem, 8)[0]


@pytest.mark.parametrize("where", ["mem", "stack"])
def test_cmpxchg64(where):
    assert cmpxchg(BPF_DW, OLD, where) == (OLD, V)                 # equal: swapped
    assert cmpxchg(BPF_DW, OLD ^ 1 << 40, where) == (OLD, OLD)     # unequal: unchanged


@pytest.mark.parametrize("where", ["mem", "stack"])
def test_cmpxchg32_compares_the_low_half_of_r0_and_zero_extends(where):
    swapped = (OLD & ~M32) | (V & M32)
    assert cmpxchg(BPF_W, OLD & M32, where) == (OLD & M32, swapped)
    assert cmpxchg(BPF_W, 0xdead0000_00000000 | (OLD & M32), where) == (OLD & M32, swapped)
    assert cmpxchg(BPF_W, OLD, where) == (OLD & M32, swapped)
    assert cmpxchg(BPF_W, OLD ^ 1, where) == (OLD & M32, OLD)


def test_fetch_with_src_equal_to_the_address_register():
    # r1 is both the pointer and the fetch destination: the address is taken first
    prog = [BPF_ST_MEM(BPF_DW, 1, 0, 40), BPF_MOV64_REG(6, 1),
            BPF_ATOMIC_OP(BPF_DW, BPF_ADD | BPF_FETCH, 1, 1, 0),
            BPF_MOV64_REG(0, 1), BPF_EXIT_INSN()]
    mem = bytearray(8)
    assert Program(prog).run(mem) == 40
    assert struct.unpack("<Q", mem)[0] == (40 + address(mem)) & M64
    assert reference.run(prog, mem=bytes(8)).r0 == 40


@pytest.mark.parametrize("size, n", [(BPF_B, 1), (BPF_H, 2), (BPF_W, 4), (BPF_DW, 8)])
def test_load_acquire_and_store_release(size, n):
    prog = [BPF_LD_IMM64(2, 0x8877665544332211),
            BPF_ATOMIC_OP(size, BPF_STORE_REL, 1, 2, 8),
            BPF_ATOMIC_OP(size, BPF_LOAD_ACQ, 0, 1, 8),
            BPF_EXIT_INSN()]
    r0, mem = run_both(prog, b"\xee" * 16)
    assert r0 == 0x8877665544332211 & ((1 << 8 * n) - 1)
    assert mem == b"\xee" * 8 + (0x8877665544332211).to_bytes(8, "little")[:n] + b"\xee" * (8 - n)


def test_atomic_add_accumulates_in_a_loop():
    prog = [BPF_MOV64_IMM(2, 3), BPF_MOV64_IMM(0, 0),
            BPF_ATOMIC_OP(BPF_W, BPF_ADD, 1, 2, 4),
            BPF_ALU64_IMM(BPF_ADD, 0, 1),
            BPF_JMP_IMM(BPF_JLT, 0, 10, -3),
            BPF_LDX_MEM(BPF_W, 0, 1, 4), BPF_EXIT_INSN()]
    assert run_both(prog, bytes(8))[0] == 30


# --- faults ------------------------------------------------------------------------

def atomic_fault(prog, mem, kind):
    with pytest.raises(MemoryAccessError) as info:
        Program(prog).run(mem)
    with pytest.raises(reference.ReferenceFault) as ref:
        reference.run(prog, mem=bytes(mem))
    assert (ref.value.kind, ref.value.pc, ref.value.size, ref.value.write) == \
        (kind, info.value.pc, info.value.size, info.value.write)
    return info.value


@pytest.mark.parametrize("imm", [BPF_ADD, BPF_ADD | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG],
                         ids=["add", "fetch-add", "xchg", "cmpxchg"])
@pytest.mark.parametrize("size, n, off", [(BPF_W, 4, 2), (BPF_DW, 8, 4), (BPF_DW, 8, 1)])
def test_misaligned_atomic(size, n, off, imm):
    mem = bytearray(b"\x01" * 32)
    e = atomic_fault([BPF_MOV64_IMM(2, 1), BPF_ATOMIC_OP(size, imm, 1, 2, off), BPF_EXIT_INSN()],
                     mem, "align")
    addr = address(mem) + off
    assert (e.pc, e.addr, e.size, e.write) == (1, addr, n, True)
    assert e.msg == f"misaligned atomic write of {n} bytes at {addr:#x}"
    assert mem == b"\x01" * 32


def test_misaligned_atomic_on_the_stack():
    prog = [BPF_MOV64_IMM(2, 1), BPF_ATOMIC_OP(BPF_DW, BPF_OR, 10, 2, -12), BPF_EXIT_INSN()]
    with pytest.raises(MemoryAccessError, match="misaligned atomic write of 8 bytes") as info:
        Program(prog).run()
    assert (info.value.pc, info.value.size, info.value.write, info.value.addr % 8) == \
        (1, 8, True, 4)


@pytest.mark.parametrize("imm", [BPF_AND, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG],
                         ids=["and", "fetch-xor", "xchg", "cmpxchg"])
def test_out_of_bounds_atomic(imm):
    mem = bytearray(16)
    e = atomic_fault([BPF_MOV64_IMM(2, 1), BPF_ATOMIC_OP(BPF_DW, imm, 1, 2, 16),
                      BPF_EXIT_INSN()], mem, "mem")
    addr = address(mem) + 16
    assert (e.pc, e.addr, e.size, e.write) == (1, addr, 8, True)
    assert e.msg == (f"invalid write of 8 bytes at {addr:#x}: outside the stack, the memory "
                     "buffer and every registered region")


def test_atomic_on_a_read_only_region_is_a_write_fault():
    ro = bytearray(8)
    addr = address(ro)
    p = Program([BPF_LD_IMM64(1, addr), BPF_MOV64_IMM(2, 1),
                 BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 1, 2, 0), BPF_EXIT_INSN()])
    p.add_region(ro, writable=False)
    with pytest.raises(MemoryAccessError) as info:
        p.run()
    assert (info.value.pc, info.value.addr, info.value.write) == (3, addr, True)
    assert ro == bytes(8)


def test_null_atomic():
    e = atomic_fault([BPF_MOV64_IMM(1, 0), BPF_MOV64_IMM(2, 1),
                      BPF_ATOMIC_OP(BPF_W, BPF_ADD, 1, 2, 0), BPF_EXIT_INSN()],
                     bytearray(8), "mem")
    assert (e.pc, e.addr, e.size, e.write) == (2, 0, 4, True)
