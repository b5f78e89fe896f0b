"""Calls: Python helpers (arguments, results, exceptions), callx, and
bpf-to-bpf calls (callee-saved r6-r9, a fresh frame per call, 8 frames)."""
from __future__ import annotations

import pytest

from userbpf import CallDepthError, HelperError, Program, reference
from userbpf.isa import *  # noqa: F401,F403

M64 = (1 << 64) - 1


def both(prog, mem=None, helpers=None):
    p = Program(prog, helpers=helpers)
    r0 = p.run(mem)
    ref = reference.run(prog, mem=mem, helpers=helpers)
    assert (ref.r0, ref.insn_count) == (r0, p.insn_count)
    return r0


# --- helpers -----------------------------------------------------------------------

def test_helper_gets_r1_to_r5_and_returns_r0():
    seen = []

    def helper(*args):
        seen.append(args)
        return sum((i + 1) * a for i, a in enumerate(args))

    prog = [BPF_MOV64_IMM(1, 1), BPF_MOV64_IMM(2, 2), BPF_MOV64_IMM(3, 3),
            BPF_LD_IMM64(4, 1 << 40), BPF_MOV64_IMM(5, -1),
            BPF_EMIT_CALL(1000), BPF_EXIT_INSN()]
    r0 = Program(prog, helpers={1000: helper}).run()
    assert seen == [(1, 2, 3, 1 << 40, M64)]
    assert r0 == (1 + 4 + 9 + 4 * (1 << 40) + 5 * M64) & M64
    assert reference.run(prog, helpers={1000: helper}).r0 == r0


@pytest.mark.parametrize("ret, r0", [(None, 0), (-1, M64), ((1 << 70) + 5, 5), (True, 1),
                                     (0x8000000000000000, 0x8000000000000000)])
def test_helper_result_is_truncated_to_64_bits(ret, r0):
    prog = [BPF_MOV64_IMM(0, 99), BPF_EMIT_CALL(1000), BPF_EXIT_INSN()]
    assert both(prog, helpers={1000: lambda *a: ret}) == r0


def test_helper_is_called_once_per_execution():
    calls = []
    prog = [BPF_MOV64_IMM(6, 0),
            BPF_MOV64_REG(1, 6), BPF_EMIT_CALL(1000),
            BPF_ALU64_IMM(BPF_ADD, 6, 1),
            BPF_JMP_IMM(BPF_JLT, 6, 4, -4),
            BPF_EXIT_INSN()]
    assert Program(prog, helpers={1000: lambda a, *r: calls.append(a) or a * 10}).run() == 30
    assert calls == [0, 1, 2, 3]


def test_helper_exception_becomes_helper_error_with_the_original_chained():
    original = KeyError("missing")

    def helper(*args):
        raise original

    prog = [BPF_LD_IMM64(6, 1), BPF_EMIT_CALL(1000), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    p = Program(prog, helpers={1000: helper})
    with pytest.raises(HelperError) as info:
        p.run()
    e = info.value
    assert e.__cause__ is original
    assert e.pc == 2
    assert e.msg == "helper raised KeyError: 'missing'"
    assert str(e).startswith("pc 2 (") and str(e).endswith(e.msg)
    assert p.insn_count == 2        # the call ran; the mov after it did not
    with pytest.raises(reference.ReferenceFault) as ref:
        reference.run(prog, helpers={1000: helper})
    assert (ref.value.kind, ref.value.pc, ref.value.__cause__) == ("helper", 2, original)


def test_helper_returning_a_non_integer_is_a_helper_error():
    p = Program([BPF_EMIT_CALL(1000), BPF_EXIT_INSN()], helpers={1000: lambda *a: "x"})
    with pytest.raises(HelperError) as info:
        p.run()
    assert isinstance(info.value.__cause__, TypeError)
    assert info.value.msg.startswith("helper raised TypeError: ")


def test_helper_error_in_a_subprogram_reports_its_pc():
    def helper(*a):
        raise ValueError("bad")
    prog = [BPF_CALL_REL(1), BPF_EXIT_INSN(),
            BPF_MOV64_IMM(0, 0), BPF_EMIT_CALL(1000), BPF_EXIT_INSN()]
    with pytest.raises(HelperError) as info:
        Program(prog, helpers={1000: helper}).run()
    assert (info.value.pc, info.value.msg) == (3, "helper raised ValueError: bad")


def test_helpers_can_see_the_memory_through_r1():
    mem = bytearray(b"hello")
    got = []
    import ctypes

    def helper(ptr, length, *rest):
        got.append(ctypes.string_at(ptr, length))
        return length
    assert Program([BPF_EMIT_CALL(1000), BPF_EXIT_INSN()], helpers={1000: helper}).run(mem) == 5
    assert got == [b"hello"]


def test_builtin_get_smp_processor_id_returns_the_cpu():
    p = Program([BPF_EMIT_CALL(8), BPF_EXIT_INSN()])
    assert (p.run(cpu=0), p.run(cpu=3)) == (0, 3)


def test_callx_dispatches_on_the_register_value():
    helpers = {1000: lambda *a: 10, 1001: lambda *a: 11}
    prog = [BPF_MOV64_IMM(6, 1001), BPF_CALLX(6), BPF_EXIT_INSN()]
    assert both(prog, helpers=helpers) == 11


def test_callx_to_an_unknown_id():
    prog = [BPF_MOV64_IMM(6, 4242), BPF_CALLX(6), BPF_EXIT_INSN()]
    with pytest.raises(HelperError) as info:
        Program(prog, helpers={1000: lambda *a: 0}).run()
    assert (info.value.pc, info.value.msg) == (1, "callx to unknown helper id 4242")


# --- bpf-to-bpf calls --------------------------------------------------------------

def test_local_call_passes_r1_to_r5_and_returns_r0():
    prog = [BPF_MOV64_IMM(1, 5), BPF_MOV64_IMM(5, 7),
            BPF_CALL_REL(2),                        # -> 5
            BPF_ALU64_IMM(BPF_ADD, 0, 1000),
            BPF_EXIT_INSN(),
            BPF_MOV64_REG(0, 1),                    # 5: r0 = r1 * r5
            BPF_ALU64_REG(BPF_MUL, 0, 5),
            BPF_EXIT_INSN()]
    assert both(prog) == 1035


def test_r6_to_r9_are_callee_saved():
    prog = [BPF_MOV64_IMM(6, 6), BPF_MOV64_IMM(7, 7), BPF_MOV64_IMM(8, 8), BPF_MOV64_IMM(9, 9),
            BPF_CALL_REL(8),                                 # -> 13
            BPF_MOV64_REG(0, 6), BPF_ALU64_IMM(BPF_LSH, 0, 8),
            BPF_ALU64_REG(BPF_OR, 0, 7), BPF_ALU64_IMM(BPF_LSH, 0, 8),
            BPF_ALU64_REG(BPF_OR, 0, 8), BPF_ALU64_IMM(BPF_LSH, 0, 8),
            BPF_ALU64_REG(BPF_OR, 0, 9),
            BPF_EXIT_INSN(),
            BPF_MOV64_IMM(6, 0x66), BPF_MOV64_IMM(7, 0x77),  # 13: the callee clobbers them
            BPF_MOV64_IMM(8, 0x88), BPF_MOV64_IMM(9, 0x99),
            BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    assert both(prog) == 0x06070809


def test_caller_saved_registers_are_not_restored():
    # r1-r5 are the callee's to change (the VM leaves what the callee wrote)
    prog = [BPF_MOV64_IMM(3, 1), BPF_CALL_REL(2), BPF_MOV64_REG(0, 3), BPF_EXIT_INSN(),
            BPF_MOV64_IMM(3, 42), BPF_EXIT_INSN()]
    assert both(prog) == 42


def test_each_frame_gets_a_fresh_512_byte_stack():
    prog = [BPF_ST_MEM(BPF_DW, 10, -8, 111),
            BPF_CALL_REL(4),                           # -> 6
            BPF_MOV64_REG(6, 10), BPF_ALU64_REG(BPF_SUB, 6, 0),   # r6 = caller fp - callee fp
            BPF_LDX_MEM(BPF_DW, 0, 10, -8),            # the caller's slot is intact
            BPF_JMP_A(4),                              # -> 10
            BPF_LDX_MEM(BPF_DW, 2, 10, -8),            # 6: callee: its slot starts zeroed
            BPF_ST_MEM(BPF_DW, 10, -8, 222),
            BPF_MOV64_REG(0, 10), BPF_EXIT_INSN(),
            BPF_ALU64_IMM(BPF_LSH, 6, 32), BPF_ALU64_REG(BPF_OR, 0, 6),   # 10
            BPF_EXIT_INSN()]
    assert both(prog) == (512 << 32) | 111


def test_callee_reads_and_writes_the_callers_stack_through_a_pointer():
    prog = [BPF_ST_MEM(BPF_DW, 10, -8, 5),
            BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -8),
            BPF_CALL_REL(2),
            BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_EXIT_INSN(),
            BPF_LDX_MEM(BPF_DW, 2, 1, 0), BPF_ALU64_IMM(BPF_MUL, 2, 3),   # 6
            BPF_STX_MEM(BPF_DW, 1, 2, 0), BPF_EXIT_INSN()]
    assert both(prog) == 15


def recursion(n):
    """main calls f(n); f(k) calls f(k - 1) until k == 0: n + 2 frames.
    Returns the sum of the k values seen on the way back up."""
    return [BPF_MOV64_IMM(1, n),
            BPF_CALL_REL(1),                     # 1 -> 3
            BPF_EXIT_INSN(),
            BPF_MOV64_IMM(0, 0),                 # 3: f
            BPF_JMP_IMM(BPF_JEQ, 1, 0, 4),       # -> 9: exit
            BPF_MOV64_REG(6, 1),
            BPF_ALU64_IMM(BPF_SUB, 1, 1),
            BPF_CALL_REL(-5),                    # 7 -> 3
            BPF_ALU64_REG(BPF_ADD, 0, 6),
            BPF_EXIT_INSN()]


def test_eight_frames_are_allowed():
    # main + f(6) ... f(0) = 8 frames
    p = Program(recursion(6))
    assert p.run() == 21
    assert reference.run(recursion(6)).r0 == 21
    assert p.insn_count == reference.run(recursion(6)).insn_count == 3 + 6 * 7 + 3


def test_a_ninth_frame_is_a_call_depth_error():
    p = Program(recursion(7))
    with pytest.raises(CallDepthError) as info:
        p.run()
    e = info.value
    assert e.pc == 7
    assert e.msg == "bpf-to-bpf calls nested deeper than 8 frames"
    assert str(e).startswith("pc 7 (") and str(e).endswith(e.msg)
    with pytest.raises(reference.ReferenceFault) as ref:
        reference.run(recursion(7))
    assert (ref.value.kind, ref.value.pc) == ("depth", 7)


def test_deepest_frame_stack_is_usable_and_distinct():
    # every frame writes its depth at fp - 8 and reads it back after the return
    prog = [BPF_MOV64_IMM(1, 6), BPF_CALL_REL(1), BPF_EXIT_INSN(),
            BPF_STX_MEM(BPF_DW, 10, 1, -8),          # 3: f(k): slot = k
            BPF_ST_MEM(BPF_DW, 10, -512, 1),         # the lowest byte of the frame too
            BPF_MOV64_IMM(0, 0),
            BPF_JMP_IMM(BPF_JEQ, 1, 0, 4),           # -> 11
            BPF_ALU64_IMM(BPF_SUB, 1, 1),
            BPF_CALL_REL(-6),                        # 8 -> 3
            BPF_LDX_MEM(BPF_DW, 2, 10, -8),
            BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_EXIT_INSN()]                         # 11
    assert both(prog) == 21


def test_call_depth_resets_between_runs():
    p = Program(recursion(6))
    assert [p.run() for _ in range(3)] == [21, 21, 21]


def test_keyboard_interrupt_in_a_helper_propagates_as_itself():
    """Ctrl-C inside a Python helper stops the run and reaches the caller
    unchanged (only Exception subclasses become HelperError)."""
    def interrupt(*args):
        raise KeyboardInterrupt
    p = Program([BPF_EMIT_CALL(1000), BPF_EXIT_INSN()], helpers={1000: interrupt})
    with pytest.raises(KeyboardInterrupt):
        p.run()
