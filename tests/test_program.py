"""userbpf.Program: code inputs, memory passing, the instruction budget and
counts, run_batch, and the load-time errors for malformed programs."""
from __future__ import annotations

import array
import ctypes
import errno
import struct

import pytest

from userbpf import (BudgetExceeded, EncodingError, Program, ProgramError, VMError, isa,
                     reference)
from userbpf.isa import *  # noqa: F401,F403

RET7 = [BPF_MOV64_IMM(BPF_REG_0, 7), BPF_EXIT_INSN()]


def address(buf) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


# --- code inputs ---------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    encode(RET7), bytearray(encode(RET7)), memoryview(encode(RET7)),
    RET7, tuple(RET7), [tuple(RET7)],
    [BPF_LD_IMM64(0, 7), BPF_EXIT_INSN()],          # lddw's pair as one item
], ids=["bytes", "bytearray", "memoryview", "list", "tuple", "nested", "lddw-pair"])
def test_code_inputs(code):
    p = Program(code)
    assert p.run() == 7
    assert p.bytes() == encode(p.insns)


def test_len_is_the_slot_count():
    assert len(Program([BPF_LD_IMM64(0, 1 << 40), BPF_EXIT_INSN()])) == 3


def test_bytes_that_are_not_bytecode():
    with pytest.raises(EncodingError, match="bytecode length 20 is not a multiple of 8 bytes"):
        Program(encode(RET7) + b"\0\0\0\0")
    with pytest.raises(EncodingError, match="this is an ELF object, not raw bytecode"):
        Program(b"\x7fELF" + bytes(60))


# --- memory ------------------------------------------------------------------------------

def test_r1_is_the_memory_address_and_r2_its_length():
    mem = bytearray(24)
    prog = [BPF_STX_MEM(BPF_DW, 1, 1, 0), BPF_STX_MEM(BPF_DW, 1, 2, 8),
            BPF_MOV64_REG(0, 2), BPF_EXIT_INSN()]
    assert Program(prog).run(mem) == 24
    assert struct.unpack_from("<QQ", mem) == (address(mem), 24)


def test_without_memory_r1_and_r2_are_zero():
    prog = [BPF_MOV64_REG(0, 1), BPF_ALU64_REG(BPF_OR, 0, 2), BPF_EXIT_INSN()]
    assert Program(prog).run() == 0


INCREMENT = [BPF_LDX_MEM(BPF_W, 0, 1, 0), BPF_ALU64_IMM(BPF_ADD, 0, 1),
             BPF_STX_MEM(BPF_W, 1, 0, 0), BPF_EXIT_INSN()]


def test_writable_memory_is_modified_in_place():
    mem = bytearray(4)
    p = Program(INCREMENT)
    assert [p.run(mem) for _ in range(3)] == [1, 2, 3]
    assert mem == b"\x03\0\0\0"
    view = memoryview(mem)
    assert p.run(view) == 4 and mem[0] == 4
    arr = array.array("I", [41])
    assert p.run(arr) == 42 and arr[0] == 42


def test_read_only_bytes_are_copied_so_the_original_never_changes():
    """Program.run copies bytes (as the kernel's test_run copies data_in): the
    program's stores succeed on the copy and the caller's bytes are untouched."""
    data = b"\x05\0\0\0"
    p = Program(INCREMENT)
    assert (p.run(data), p.run(data)) == (6, 6)
    assert data == b"\x05\0\0\0"
    assert p.run(memoryview(data)) == 6


def test_empty_memory_faults_on_any_access():
    from userbpf import MemoryAccessError
    with pytest.raises(MemoryAccessError):
        Program(INCREMENT).run(bytearray())


# --- budget and counts -----------------------------------------------------------------------

LOOP = [BPF_MOV64_IMM(0, 0),
        BPF_ALU64_IMM(BPF_ADD, 0, 1),          # 1
        BPF_JMP_IMM(BPF_JLT, 0, 100, -2),      # 2 -> 1
        BPF_EXIT_INSN()]


def test_insn_count_of_straight_line_code_counts_lddw_once():
    p = Program([BPF_LD_IMM64(1, 1 << 40), BPF_MOV64_IMM(0, 1), BPF_JMP_A(0),
                 BPF_ALU64_IMM(BPF_ADD, 0, 1), BPF_EXIT_INSN()])
    assert p.run() == 2
    assert p.insn_count == 5


def test_insn_count_of_a_loop():
    p = Program(LOOP)
    assert p.run() == 100
    assert p.insn_count == 1 + 2 * 100 + 1
    assert reference.run(LOOP).insn_count == p.insn_count


def test_insn_count_after_a_fault_includes_the_faulting_instruction():
    p = Program([BPF_MOV64_IMM(1, 0), BPF_LDX_MEM(BPF_B, 0, 1, 0), BPF_EXIT_INSN()])
    with pytest.raises(VMError):
        p.run()
    assert p.insn_count == 2


def test_budget_exceeded_in_a_loop():
    p = Program(LOOP, budget=50)
    assert p.budget == 50
    with pytest.raises(BudgetExceeded) as info:
        p.run()
    e = info.value
    assert e.msg == ("instruction budget of 50 exhausted (raise Program.budget, "
                     "or 0 for no limit)")
    # the 51st instruction is a taken jlt: the run stops at it, not at its target
    assert p.insn_count == 51
    assert e.pc == 2
    assert str(e).startswith("pc 2 (")


def test_budget_is_configurable_after_construction():
    p = Program(LOOP, budget=50)
    p.budget = 202
    assert p.run() == 100
    p.budget = 198
    with pytest.raises(BudgetExceeded, match="budget of 198 exhausted"):
        p.run()
    p.budget = 0                         # no limit
    assert p.run() == 100


def test_infinite_loop_is_stopped():
    p = Program([BPF_MOV64_IMM(0, 0), BPF_JMP_A(-1), BPF_EXIT_INSN()], budget=10_000)
    with pytest.raises(BudgetExceeded):
        p.run()
    assert p.insn_count == 10_001


def test_infinite_recursion_is_stopped_by_depth_not_by_the_stack():
    from userbpf import CallDepthError
    with pytest.raises(CallDepthError):
        Program([BPF_CALL_REL(-1), BPF_EXIT_INSN()]).run()


def test_budget_caps_straight_line_code_too():
    """Checked at taken jumps, calls and the final exit: a straight run past
    the budget never returns a result (it is stopped at its exit)."""
    p = Program([BPF_MOV64_IMM(0, 1)] * 10 + [BPF_EXIT_INSN()], budget=3)
    with pytest.raises(BudgetExceeded) as info:
        p.run()
    assert info.value.pc == 10 and p.insn_count == 11
    p.budget = 11
    assert p.run() == 1


def test_reference_budget_counts_every_instruction():
    with pytest.raises(reference.ReferenceFault) as info:
        reference.run([BPF_MOV64_IMM(0, 1)] * 10 + [BPF_EXIT_INSN()], budget=3)
    assert (info.value.kind, info.value.pc) == ("budget", 3)


# --- run_batch ----------------------------------------------------------------------------------

def test_run_batch_returns_r0_time_and_count():
    p = Program(LOOP)
    res = p.run_batch(None, 20)
    assert res.retval == p.run() == 100
    assert res.insns == p.insn_count == 202
    assert res.duration_ns > 0


def test_run_batch_does_not_restore_memory_between_runs():
    mem = bytearray(4)
    res = Program(INCREMENT).run_batch(mem, 5)
    assert res.retval == 5
    assert mem == b"\x05\0\0\0"


def test_run_batch_stops_at_the_first_fault():
    with pytest.raises(BudgetExceeded):
        Program(LOOP, budget=10).run_batch(None, 3)


# --- errors at load time -------------------------------------------------------------------------

def load_error(code) -> ProgramError:
    with pytest.raises(ProgramError) as info:
        Program(code)
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize("code, pc, msg", [
    ([Insn(0xf7)], 0, "unknown opcode f7"),
    ([Insn(0xe4), BPF_EXIT_INSN()], 0, "unknown opcode e4"),
    ([BPF_MOV64_IMM(0, 0), Insn(0xf5), BPF_EXIT_INSN()], 1, "unknown opcode f5"),
    ([Insn(0x60), BPF_EXIT_INSN()], 0, "unknown opcode 60"),
    ([BPF_RAW_INSN(BPF_JMP32 | BPF_CALL, 0, 0, 0, 1), BPF_EXIT_INSN()], 0, "unknown opcode 86"),
    ([BPF_JMP_A(3), BPF_EXIT_INSN()], 0, "jump out of range from insn 0 to 4"),
    ([BPF_EXIT_INSN(), BPF_JMP_IMM(BPF_JEQ, 0, 0, -3)], 1, "jump out of range from insn 1 to -1"),
    ([BPF_JMP32_A(5), BPF_EXIT_INSN()], 0, "jump out of range from insn 0 to 6"),
    ([BPF_CALL_REL(9), BPF_EXIT_INSN()], 0, "jump out of range from insn 0 to 10"),
    ([BPF_JMP_A(1), BPF_LD_IMM64(0, 1), BPF_EXIT_INSN()], 0,
     "jump into the middle of ldimm64 insn 1"),
    ([BPF_LD_IMM64(0, 1), BPF_EXIT_INSN(), BPF_JMP_A(-3)], 3,
     "jump into the middle of ldimm64 insn 0"),
    ([BPF_MOV64_IMM(10, 1), BPF_EXIT_INSN()], 0, "frame pointer is read only"),
    ([BPF_MOV64_IMM(0, 0), BPF_LDX_MEM(BPF_DW, 10, 1, 0), BPF_EXIT_INSN()], 1,
     "frame pointer is read only"),
    ([BPF_LD_IMM64(10, 1), BPF_EXIT_INSN()], 0, "frame pointer is read only"),
    ([BPF_ALU32_IMM(BPF_NEG, 10, 0), BPF_EXIT_INSN()], 0, "frame pointer is read only"),
    ([BPF_ATOMIC_OP(BPF_DW, BPF_XCHG, 1, 10, 0), BPF_EXIT_INSN()], 0,
     "frame pointer is read only"),
    ([BPF_ATOMIC_OP(BPF_W, BPF_OR | BPF_FETCH, 1, 10, 0), BPF_EXIT_INSN()], 0,
     "frame pointer is read only"),
    ([BPF_EMIT_CALL(1234), BPF_EXIT_INSN()], 0, "invalid func unknown#1234"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 77), BPF_EXIT_INSN()], 0,
     "kernel function calls (kfuncs) are not supported: call to kfunc btf_id 77"),
    ([BPF_RAW_INSN(BPF_ALU64 | BPF_ADD | BPF_K, 0, 1, 0, 1), BPF_EXIT_INSN()], 0,
     "BPF_ALU uses reserved fields"),
    ([BPF_RAW_INSN(BPF_ALU64 | BPF_ADD | BPF_X, 0, 1, 0, 1), BPF_EXIT_INSN()], 0,
     "BPF_ALU uses reserved fields"),
    ([BPF_ALU64_IMM_OFF(BPF_ADD, 0, 1, 1), BPF_EXIT_INSN()], 0, "BPF_ALU uses reserved fields"),
    ([BPF_RAW_INSN(BPF_ALU64 | BPF_NEG, 0, 0, 0, 1), BPF_EXIT_INSN()], 0,
     "BPF_NEG uses reserved fields"),
    ([BPF_ENDIAN(BPF_TO_BE, 0, 8), BPF_EXIT_INSN()], 0, "BPF_END uses reserved fields"),
    ([BPF_RAW_INSN(BPF_ALU64 | BPF_END | BPF_TO_BE, 0, 0, 0, 16), BPF_EXIT_INSN()], 0,
     "unknown opcode df"),
    ([BPF_BSWAP(0, 8), BPF_EXIT_INSN()], 0, "BPF_END uses reserved fields"),
    ([BPF_RAW_INSN(BPF_ALU | BPF_END, 0, 1, 0, 16), BPF_EXIT_INSN()], 0,
     "BPF_END uses reserved fields"),
    ([BPF_MOVSX64_REG(0, 1, 4), BPF_EXIT_INSN()], 0, "BPF_MOV uses reserved fields"),
    ([BPF_MOVSX32_REG(0, 1, 32), BPF_EXIT_INSN()], 0, "BPF_MOV uses reserved fields"),
    ([BPF_ZEXT_REG(0), BPF_EXIT_INSN()], 0, "BPF_MOV uses reserved fields"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_JA, 0, 0, 1, 1), BPF_EXIT_INSN(), BPF_EXIT_INSN()], 0,
     "BPF_JA uses reserved fields"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0, 0), BPF_EXIT_INSN()], 0,
     "BPF_JMP/JMP32 uses reserved fields"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_CALL, 1, 0, 0, 5), BPF_EXIT_INSN()], 0,
     "BPF_CALL uses reserved fields"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 1)], 0, "BPF_EXIT uses reserved fields"),
    ([BPF_RAW_INSN(BPF_JMP | BPF_JCOND, 1, 0, 0, 0), BPF_EXIT_INSN()], 0, "invalid may_goto"),
    ([BPF_RAW_INSN(BPF_LDX | BPF_W | BPF_MEM, 0, 1, 0, 1), BPF_EXIT_INSN()], 0,
     "BPF_LDX uses reserved fields"),
    ([BPF_RAW_INSN(BPF_LDX | BPF_DW | BPF_MEMSX, 0, 1, 0, 0), BPF_EXIT_INSN()], 0,
     "BPF_LDX uses reserved fields"),
    ([BPF_RAW_INSN(BPF_ST | BPF_W | BPF_MEM, 10, 1, -4, 0), BPF_EXIT_INSN()], 0,
     "BPF_ST uses reserved fields"),
    ([BPF_RAW_INSN(BPF_STX | BPF_W | BPF_MEM, 10, 1, -4, 1), BPF_EXIT_INSN()], 0,
     "BPF_STX uses reserved fields"),
    ([BPF_ATOMIC_OP(BPF_DW, 2, 1, 2, 0), BPF_EXIT_INSN()], 0,
     "BPF_ATOMIC uses invalid atomic opcode 02"),
    ([BPF_ATOMIC_OP(BPF_B, BPF_ADD, 1, 2, 0), BPF_EXIT_INSN()], 0, "invalid atomic operand size"),
    ([BPF_RAW_INSN(BPF_LD | BPF_ABS | BPF_W, 1, 0, 0, 0), BPF_EXIT_INSN()], 0,
     "BPF_LD_[ABS|IND] uses reserved fields"),
    ([Insn(0x18, 0, 0, 0, 1)], 0, "invalid BPF_LD_IMM insn"),
    ([Insn(0x18, 0, 0, 0, 1), Insn(0x95), BPF_EXIT_INSN()], 0, "invalid bpf_ld_imm64 insn"),
    ([BPF_LD_IMM64_RAW(0, 7, 0), BPF_EXIT_INSN()], 0, "unrecognized bpf_ld_imm64 insn"),
    ([BPF_LD_IMM64_RAW(0, BPF_PSEUDO_FUNC, 0), BPF_EXIT_INSN()], 0,
     "jump into the middle of ldimm64 insn 0"),
    ([BPF_LD_IMM64_RAW(0, BPF_PSEUDO_FUNC, 5), BPF_EXIT_INSN()], 0,
     "call to invalid destination"),
    ([BPF_LD_IMM64_RAW(0, BPF_PSEUDO_BTF_ID, 5), BPF_EXIT_INSN()], 0,
     "ldimm64 with src_reg=3 (BTF_ID) is not supported yet (BTF ids come with the loader)"),
    ([Insn(0x07, 11, 0, 0, 0), BPF_EXIT_INSN()], 0, "invalid register (dst=11 src=0)"),
    ([BPF_ADDR_SPACE_CAST_INSN(1, 2, 1, 0), BPF_EXIT_INSN()], 0,
     "addr_space_cast insn can only be used in a program that has an associated arena "
     "(arena maps are not supported yet)"),
], ids=lambda v: None)
def test_malformed_programs_are_refused_with_the_kernels_message(code, pc, msg):
    e = load_error(code)
    assert (e.pc, e.msg, e.errno) == (pc, msg, errno.EINVAL)
    assert str(e) == f"insn {pc}: {msg}"


def test_empty_program():
    e = load_error([])
    assert (e.pc, str(e)) == (None, "empty program")


def test_map_reference_to_an_unknown_fd():
    e = load_error([BPF_LD_MAP_FD(1, 3), BPF_EXIT_INSN()])
    assert (e.pc, e.msg, e.errno) == (0, "fd 3 is not pointing to valid bpf_map", errno.EBADF)


def test_falling_off_the_end_is_a_runtime_error():
    for code, pc in [([BPF_MOV64_IMM(0, 1)], 1),
                     ([BPF_MOV64_IMM(0, 0), BPF_JMP_IMM(BPF_JEQ, 0, 1, -1)], 2)]:
        with pytest.raises(VMError) as info:
            Program(code).run()
        assert type(info.value) is VMError
        assert info.value.pc == pc
        assert info.value.msg == ("fell off the end of the program (the last instruction "
                                  "must be exit or a jump)")
        assert str(info.value) == f"pc {pc} (<end of program>): {info.value.msg}"
        with pytest.raises(reference.ReferenceFault) as ref:
            reference.run(code)
        assert (ref.value.kind, ref.value.pc) == ("invalid", pc)


def test_helpers_must_be_callable_or_capsules():
    with pytest.raises(TypeError, match="helper 1000: expected a callable"):
        Program([BPF_EMIT_CALL(1000), BPF_EXIT_INSN()], helpers={1000: 5})


def test_threads_run_on_their_own_simulated_cpu():
    """With per-CPU maps, each thread's runs default to one CPU of the maps."""
    import threading
    from userbpf._maps import MapCore
    m = MapCore(6, 4, 8, 1, 0, 4)                    # PERCPU_ARRAY, 4 CPUs
    code = """
        *(u32 *)(r10 - 4) = 0
        r1 = map[fd:3] ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0 goto +3
        r1 = 1
        lock *(u64 *)(r0 + 0) += r1
        call bpf_get_smp_processor_id
        exit
    """
    p = Program(code, maps={3: m})
    assert p.ncpus == 4
    cpus = []

    def worker():
        cpus.append(p.run())
        cpus.append(p.run())
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
        t.join()
    assert sorted(set(cpus)) == [0, 1, 2, 3]          # four threads, four CPUs
    assert all(cpus[i] == cpus[i + 1] for i in range(0, 8, 2))    # a thread keeps its CPU
    per_cpu = m.lookup((0).to_bytes(4, "little"))
    assert [int.from_bytes(per_cpu[i * 8:i * 8 + 8], "little") for i in range(4)] == [2] * 4
    assert p.run(cpu=2) == 2                             # the caller may choose
