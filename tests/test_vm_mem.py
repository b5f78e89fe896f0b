"""The interpreter's loads and stores (LDX, ST, STX, MEMSX, LD_ABS, LD_IND) and
its memory safety: every access outside the stack, the memory buffer and the
registered regions stops the run with a MemoryAccessError that says where."""
from __future__ import annotations

import ctypes
import struct

import pytest

from userbpf import MemoryAccessError, Program, reference
from userbpf.isa import *  # noqa: F401,F403

M64 = (1 << 64) - 1
SIZES = [(BPF_B, 1), (BPF_H, 2), (BPF_W, 4), (BPF_DW, 8)]
DATA = bytes.fromhex("f1e2d3c4b5a69788" "0102030405060708" "8090a0b0c0d0e0f0")


def address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def both(prog, mem=None):
    """Run on the VM and the reference; r0 and the final memory must agree."""
    vm_mem = bytearray(mem) if mem is not None else None
    r0 = Program(prog).run(vm_mem)
    ref = reference.run(prog, mem=mem)
    assert ref.r0 == r0
    if mem is not None:
        assert ref.mem == bytes(vm_mem)
    return r0, (bytes(vm_mem) if mem is not None else None)


# --- loads ---------------------------------------------------------------------

@pytest.mark.parametrize("off", [0, 3, 8, 13])
@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_ldx_from_mem_little_endian(size, n, off):
    r0, _ = both([BPF_LDX_MEM(size, 0, 1, off), BPF_EXIT_INSN()], DATA)
    assert r0 == int.from_bytes(DATA[off:off + n], "little")


@pytest.mark.parametrize("off", [0, 7, 16])
@pytest.mark.parametrize("size, n", SIZES[:3], ids=["b", "h", "w"])
def test_ldx_memsx_sign_extends(size, n, off):
    r0, _ = both([BPF_LDX_MEMSX(size, 0, 1, off), BPF_EXIT_INSN()], DATA)
    assert r0 == int.from_bytes(DATA[off:off + n], "little", signed=True) & M64


def test_memsx_of_a_positive_value_and_plain_ldx_of_a_negative_one():
    mem = bytes([0x7f, 0xff, 0xff, 0xff])
    assert both([BPF_LDX_MEMSX(BPF_B, 0, 1, 0), BPF_EXIT_INSN()], mem)[0] == 0x7f
    assert both([BPF_LDX_MEMSX(BPF_W, 0, 1, 0), BPF_EXIT_INSN()], mem)[0] == 0xffffffffffffff7f
    assert both([BPF_LDX_MEM(BPF_B, 0, 1, 1), BPF_EXIT_INSN()], mem)[0] == 0xff
    assert both([BPF_LDX_MEMSX(BPF_B, 0, 1, 1), BPF_EXIT_INSN()], mem)[0] == M64


def test_negative_offsets_from_a_pointer_into_mem():
    prog = [BPF_MOV64_REG(2, 1), BPF_ALU64_IMM(BPF_ADD, 2, 16),
            BPF_LDX_MEM(BPF_H, 0, 2, -9), BPF_EXIT_INSN()]
    assert both(prog, DATA)[0] == int.from_bytes(DATA[7:9], "little")


# --- stores --------------------------------------------------------------------

@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_stx_to_mem_truncates_to_the_size(size, n):
    prog = [BPF_LD_IMM64(2, 0x8877665544332211), BPF_STX_MEM(size, 1, 2, 5),
            BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    _, mem = both(prog, bytes(16))
    assert mem == bytes(5) + (0x8877665544332211).to_bytes(8, "little")[:n] + bytes(11 - n)


@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_st_immediate_is_sign_extended_then_truncated(size, n):
    prog = [BPF_ST_MEM(size, 1, 2, -0x7edcba99), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    _, mem = both(prog, bytes(12))
    assert mem == bytes(2) + ((-0x7edcba99) & M64).to_bytes(8, "little")[:n] + bytes(10 - n)


@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_stack_store_and_load_round_trip(size, n):
    prog = [BPF_LD_IMM64(2, 0xa1b2c3d4e5f60718),
            BPF_STX_MEM(size, 10, 2, -16), BPF_ST_MEM(size, 10, -16 + n, 0x55),
            BPF_LDX_MEM(BPF_DW, 0, 10, -16), BPF_EXIT_INSN()]
    expected = (0xa1b2c3d4e5f60718 & ((1 << 8 * n) - 1)) | (0x55 << (8 * n)) \
        if n < 8 else 0xa1b2c3d4e5f60718
    assert both(prog)[0] == expected


def test_stack_starts_zeroed_every_run():
    prog = [BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_ST_MEM(BPF_DW, 10, -8, 99), BPF_EXIT_INSN()]
    p = Program(prog)
    assert (p.run(), p.run()) == (0, 0)


def test_the_whole_512_byte_frame_is_usable():
    prog = [BPF_ST_MEM(BPF_DW, 10, -512, 7), BPF_ST_MEM(BPF_B, 10, -1, 5),
            BPF_LDX_MEM(BPF_DW, 0, 10, -512), BPF_LDX_MEM(BPF_B, 1, 10, -1),
            BPF_ALU64_REG(BPF_ADD, 0, 1), BPF_EXIT_INSN()]
    assert both(prog)[0] == 12


def test_stack_pointer_copies_and_unaligned_accesses():
    prog = [BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -13),
            BPF_LD_IMM64(2, 0x0102030405060708), BPF_STX_MEM(BPF_DW, 3, 2, 0),
            BPF_LDX_MEM(BPF_W, 0, 10, -11), BPF_EXIT_INSN()]
    assert both(prog)[0] == 0x03040506


# --- LD_ABS / LD_IND -------------------------------------------------------------

PKT = bytes(range(0x10, 0x20))


@pytest.mark.parametrize("insn, expected", [
    (BPF_LD_ABS(BPF_B, 15), 0x1f),
    (BPF_LD_ABS(BPF_H, 2), 0x1213),
    (BPF_LD_ABS(BPF_W, 12), 0x1c1d1e1f),
    (BPF_LD_ABS(BPF_W, 13), 0),          # crosses the end
    (BPF_LD_ABS(BPF_B, 16), 0),
    (BPF_LD_ABS(BPF_H, -1), 0),
], ids=["b", "h", "w-last", "w-past-end", "b-past-end", "negative"])
def test_ld_abs_reads_big_endian_and_out_of_range_ends_with_zero(insn, expected):
    prog = [BPF_MOV64_IMM(0, 77), insn, BPF_ALU64_IMM(BPF_ADD, 0, 1000), BPF_EXIT_INSN()]
    p = Program(prog)
    r0 = p.run(PKT)
    assert reference.run(prog, mem=PKT).r0 == r0
    if expected:
        assert (r0, p.insn_count) == (expected + 1000, 4)
    else:
        # the run ends at the load: r0 = 0, the add never runs
        assert (r0, p.insn_count) == (0, 2)


@pytest.mark.parametrize("base, imm, expected", [
    (2, 1, 0x13141516),
    (0, 12, 0x1c1d1e1f),
    (12, 1, 0),
    (M64, 0, 0),                 # offset -1
    (0xffffffff, 5, 0x14151617),  # the offset is computed in 32 bits: 4
    (0x100000000, 0, 0x10111213),
])
def test_ld_ind_adds_the_register(base, imm, expected):
    prog = [BPF_LD_IMM64(3, base), BPF_LD_IND(BPF_W, 3, imm), BPF_EXIT_INSN()]
    assert both(prog, PKT)[0] == expected


def test_ld_abs_without_memory_returns_zero():
    assert both([BPF_MOV64_IMM(0, 5), BPF_LD_ABS(BPF_B, 0), BPF_EXIT_INSN()])[0] == 0


# --- memory safety -----------------------------------------------------------------

def fault(prog, mem=None, **kw) -> MemoryAccessError:
    p = Program(prog, **kw)
    with pytest.raises(MemoryAccessError) as info:
        p.run(mem)
    with pytest.raises(reference.ReferenceFault) as ref:
        reference.run(prog, mem=None if mem is None else bytes(mem))
    e = info.value
    assert (ref.value.kind, ref.value.pc, ref.value.size, ref.value.write) == \
        ("mem" if "misaligned" not in e.msg else "align", e.pc, e.size, e.write)
    assert str(e).startswith(f"pc {e.pc} (") and str(e).endswith(e.msg)
    return e


def oob_message(write, size, addr):
    return (f"invalid {'write' if write else 'read'} of {size} byte{'s' if size > 1 else ''} "
            f"at {addr:#x}: outside the stack, the memory buffer and every registered region")


@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_read_past_the_end_of_mem(size, n):
    mem = bytearray(16)
    e = fault([BPF_MOV64_IMM(0, 0), BPF_LDX_MEM(size, 0, 1, 17 - n), BPF_EXIT_INSN()], mem)
    addr = address(mem) + 17 - n
    assert (e.pc, e.addr, e.size, e.write) == (1, addr, n, False)
    assert e.msg == oob_message(False, n, addr)


@pytest.mark.parametrize("store", ["st", "stx"])
@pytest.mark.parametrize("size, n", SIZES, ids=["b", "h", "w", "dw"])
def test_write_past_the_end_of_mem_changes_nothing(size, n, store):
    mem = bytearray(b"\x11" * 8)
    insn = BPF_ST_MEM(size, 1, 9 - n, 0) if store == "st" else BPF_STX_MEM(size, 1, 2, 9 - n)
    e = fault([BPF_LD_IMM64(2, 0), insn, BPF_EXIT_INSN()], mem)
    addr = address(mem) + 9 - n
    assert (e.pc, e.addr, e.size, e.write) == (2, addr, n, True)
    assert e.msg == oob_message(True, n, addr)
    assert mem == b"\x11" * 8


def test_read_before_the_start_of_mem():
    mem = bytearray(8)
    e = fault([BPF_LDX_MEM(BPF_W, 0, 1, -1), BPF_EXIT_INSN()], mem)
    assert (e.pc, e.addr, e.size, e.write) == (0, address(mem) - 1, 4, False)


def stack_top_fault(insns):
    """Store r10 to mem[0] first, so the test knows the run's stack address."""
    mem = bytearray(8)
    e = fault([BPF_STX_MEM(BPF_DW, 1, 10, 0)] + insns, mem)
    return e, struct.unpack("<Q", mem)[0]


def test_read_above_the_frame_pointer():
    e, top = stack_top_fault([BPF_LDX_MEM(BPF_B, 0, 10, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size, e.write) == (1, top, 1, False)
    assert e.msg == oob_message(False, 1, top)


def test_write_straddling_the_top_of_the_stack():
    e, top = stack_top_fault([BPF_ST_MEM(BPF_DW, 10, -4, 1), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size, e.write) == (1, top - 4, 8, True)


def test_below_the_whole_stack():
    """8 frames of 512 bytes: nothing below r10 - 4096 in the first frame."""
    assert both([BPF_ST_MEM(BPF_DW, 10, -4096, 3), BPF_LDX_MEM(BPF_DW, 0, 10, -4096),
                 BPF_EXIT_INSN()])[0] == 3
    e, top = stack_top_fault([BPF_LDX_MEM(BPF_B, 0, 10, -4097), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size, e.write) == (1, top - 4097, 1, False)


def test_null_pointer():
    e = fault([BPF_MOV64_IMM(1, 0), BPF_LDX_MEM(BPF_DW, 0, 1, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size, e.write) == (1, 0, 8, False)
    assert e.msg == oob_message(False, 8, 0)
    e = fault([BPF_MOV64_IMM(1, 0), BPF_ST_MEM(BPF_B, 1, 16, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size, e.write) == (1, 16, 1, True)


def test_no_memory_means_r1_is_null():
    e = fault([BPF_LDX_MEM(BPF_B, 0, 1, 0), BPF_EXIT_INSN()])
    assert (e.addr, e.size) == (0, 1)


def test_address_arithmetic_wraps_without_escaping():
    e = fault([BPF_LD_IMM64(1, M64), BPF_LDX_MEM(BPF_DW, 0, 1, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size) == (2, M64, 8)
    e = fault([BPF_LD_IMM64(1, M64 - 3), BPF_ST_MEM(BPF_W, 1, 8, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr, e.size) == (2, 4, 4)


def test_pc_counts_lddw_as_two_slots():
    e = fault([BPF_LD_IMM64(2, 1), BPF_LD_IMM64(3, 2), BPF_MOV64_IMM(1, 8),
               BPF_LDX_MEM(BPF_H, 0, 1, 0), BPF_EXIT_INSN()])
    assert (e.pc, e.addr) == (5, 8)


def test_fault_in_a_later_instruction_keeps_earlier_stores():
    mem = bytearray(4)
    fault([BPF_ST_MEM(BPF_B, 1, 0, 0x42), BPF_ST_MEM(BPF_B, 1, 4, 0x43), BPF_EXIT_INSN()], mem)
    assert mem == b"\x42\0\0\0"


def test_read_only_region_allows_loads_and_refuses_stores():
    ro = bytes(range(1, 9))
    keep = bytearray(ro)      # a stable buffer whose address the program is given
    addr = address(keep)
    prog_ld = Program([BPF_LD_IMM64(2, addr), BPF_LDX_MEM(BPF_W, 0, 2, 4), BPF_EXIT_INSN()])
    prog_ld.add_region(keep, writable=False)
    assert prog_ld.run() == 0x08070605
    prog_st = Program([BPF_LD_IMM64(2, addr), BPF_ST_MEM(BPF_B, 2, 1, 0), BPF_EXIT_INSN()])
    prog_st.add_region(keep, writable=False)
    with pytest.raises(MemoryAccessError) as info:
        prog_st.run()
    e = info.value
    assert (e.pc, e.addr, e.size, e.write) == (2, addr + 1, 1, True)
    assert e.msg == oob_message(True, 1, addr + 1)
    assert keep == ro


def test_a_registered_region_is_reachable_only_within_its_bounds():
    extra = bytearray(b"abcdefgh")
    addr = address(extra)
    ok = Program([BPF_LD_IMM64(2, addr), BPF_LDX_MEM(BPF_B, 0, 2, 7), BPF_EXIT_INSN()])
    ok.add_region(extra)
    assert ok.run() == ord("h")
    past = Program([BPF_LD_IMM64(2, addr), BPF_LDX_MEM(BPF_B, 0, 2, 8), BPF_EXIT_INSN()])
    past.add_region(extra)
    with pytest.raises(MemoryAccessError) as info:
        past.run()
    assert (info.value.addr, info.value.write) == (addr + 8, False)


# --- atomics out of bounds / misaligned live in test_vm_atomic.py ----------------------
