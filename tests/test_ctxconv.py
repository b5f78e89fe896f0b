"""Load-time context conversion (userbpf.ctxconv): which instructions are
context accesses, what they become, and the kernel's refusals."""
import errno

import pytest

from userbpf import Program, asm, hostbpf
from userbpf.ctxconv import CtxRewrite, convert_ctx_accesses
from userbpf.errors import MemoryAccessError, ProgramError
from userbpf.uapi import ProgType

XDP, SKB, TC = ProgType.XDP, ProgType.SOCKET_FILTER, ProgType.SCHED_CLS
# xdp_md is 24 bytes: its pointer slots start at 24
DATA, DATA_END, DATA_META = CtxRewrite("CTX_LDX", 24, 8), CtxRewrite("CTX_LDX", 32, 8), \
    CtxRewrite("CTX_LDX", 40, 8)


def conv(src, t=XDP, attach=0):
    return convert_ctx_accesses(asm.assemble(src), t, attach)


def refused(src, t=XDP):
    with pytest.raises(ProgramError) as e:
        conv(src, t)
    return e.value


def test_pointer_fields_become_slot_loads_and_plain_fields_stay():
    assert conv("r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = *(u32 *)(r1 + 8)\n"
                "r5 = *(u32 *)(r1 + 12)\nr0 = 0\nexit") == {
        0: DATA, 1: DATA_END, 2: DATA_META, 3: CtxRewrite("CTX_LDX", 12, 4)}


def test_copies_spills_fills_and_subprogram_arguments_are_followed():
    src = """
        r6 = r1
        *(u64 *)(r10 - 16) = r6
        r7 = *(u64 *)(r10 - 16)
        r2 = *(u32 *)(r7 + 4)
        r1 = r7
        call sub
        exit
    sub:
        r0 = *(u32 *)(r1 + 0)
        exit
    """
    assert conv(src) == {3: DATA_END, 7: DATA}


def test_a_spill_slot_overwritten_is_no_longer_the_context():
    src = """
        *(u64 *)(r10 - 8) = r1
        *(u32 *)(r10 - 4) = r2
        r3 = *(u64 *)(r10 - 8)
        r0 = *(u32 *)(r3 + 0)
        exit
    """
    assert conv(src) == {}           # r3 is not the context: a plain load


def test_stack_pointer_copies_track_spills():
    src = """
        r2 = r10
        r2 += -24
        *(u64 *)(r2 + 8) = r1
        r3 = *(u64 *)(r10 - 16)
        r0 = *(u32 *)(r3 + 4)
        exit
    """
    assert conv(src) == {4: DATA_END}


@pytest.mark.parametrize("src, message, code", [
    ("r1 += 4\nr0 = *(u32 *)(r1 + 0)\nexit",
     "dereference of modified ctx ptr R1 off=4 disallowed", errno.EACCES),
    ("r1 += r2\nr0 = *(u32 *)(r1 + 0)\nexit",
     "variable ctx access var_off=(unknown) disallowed", errno.EACCES),
    ("*(u32 *)(r1 + 0) = 1\nr0 = 0\nexit", "invalid bpf_context access off=0 size=4",
     errno.EACCES),
    ("r2 = 1\nlock *(u32 *)(r1 + 0) += r2\nr0 = 0\nexit",
     "BPF_ATOMIC stores into R1 ctx is not allowed", errno.EACCES),
    ("r0 = *(u32 *)(r1 + 2)\nexit", "invalid bpf_context access off=2 size=4", errno.EACCES),
    ("r0 = *(u16 *)(r1 + 0)\nexit", "invalid bpf_context access off=0 size=2", errno.EACCES),
    ("r0 = *(u32 *)(r1 + 24)\nexit", "invalid bpf_context access off=24 size=4",
     errno.EACCES),
    ("*(u32 *)(r1 + 12) = r2\nr0 = 0\nexit", "invalid bpf_context access off=12 size=4",
     errno.EACCES),
    ("if r2 > 0 goto +1\nr1 = r10\nr0 = *(u32 *)(r1 - 8)\nexit",
     "same insn cannot be used with different pointers", errno.EINVAL),
])
def test_refusals_have_the_kernels_words(src, message, code):
    e = refused(src)
    assert e.msg == message and e.errno == code


def test_the_kernel_refuses_the_same_programs(host):
    for src, message in [("r1 += 4\nr0 = *(u32 *)(r1 + 0)\nexit",
                          "dereference of modified ctx ptr R1 off=4 disallowed"),
                         ("*(u32 *)(r1 + 0) = 1\nr0 = 0\nexit",
                          "invalid bpf_context access off=0 size=4"),
                         ("r2 = 1\nlock *(u32 *)(r1 + 0) += r2\nr0 = 0\nexit",
                          "BPF_ATOMIC stores into R1 ctx is not allowed"),
                         ("r0 = *(u32 *)(r1 + 2)\nexit",
                          "invalid bpf_context access off=2 size=4")]:
        with pytest.raises(hostbpf.HostError) as e:
            hostbpf.prog_load(asm.assemble(src), prog_type=XDP)
        assert message in str(e.value)
        assert refused(src).msg == message


def test_immediate_stores_and_signed_loads_of_the_context_run_as_in_the_kernel(host):
    for src in ["*(u32 *)(r1 + 48) = 7\nr0 = *(u32 *)(r1 + 48)\nexit",
                "*(u32 *)(r1 + 52) = -3\nr0 = *(s8 *)(r1 + 52)\nexit",
                "r0 = *(s8 *)(r1 + 0)\nexit", "r0 = *(s16 *)(r1 + 16)\nexit"]:
        insns = asm.assemble(src)
        for pkt in (bytes(64), bytes(range(200, 256)) + bytes(8)):
            with hostbpf.prog_load(insns, prog_type=TC) as theirs:
                want = theirs.test_run(pkt).retval
            assert Program(insns, prog_type=TC).test_run(pkt).retval == want


def test_skb_writes_follow_the_type():
    # cb[0] is writable for socket filters, mark only for tc
    assert conv("*(u32 *)(r1 + 48) = r2\nr0 = 0\nexit", SKB) == {
        0: CtxRewrite("CTX_STX", 48, 4)}
    assert refused("*(u32 *)(r1 + 8) = r2\nr0 = 0\nexit", SKB).msg == \
        "invalid bpf_context access off=8 size=4"
    assert conv("*(u32 *)(r1 + 8) = r2\nr0 = 0\nexit", TC) == {
        0: CtxRewrite("CTX_STX", 8, 4)}


def test_callbacks_start_without_a_context():
    src = """
        r2 = func[cb] ll
        r0 = 0
        exit
    cb:
        r0 = *(u32 *)(r1 + 0)
        exit
    """
    assert conv(src) == {}


def test_a_converted_access_through_a_non_context_value_faults_at_run_time():
    # The analysis keeps spilled slots across helper calls; when a helper
    # overwrote the spill (probe_read_kernel into the slot), the converted
    # load's base check stops the run instead of reading the wrong memory.
    src = """
        *(u64 *)(r10 - 8) = r1
        *(u64 *)(r10 - 16) = 4660
        r1 = r10
        r1 += -8
        r2 = 8
        r3 = r10
        r3 += -16
        call 113
        r4 = *(u64 *)(r10 - 8)
        r0 = *(u32 *)(r4 + 0)
        exit
    """
    assert conv(src)[9] == DATA
    with pytest.raises(MemoryAccessError) as e:
        Program(src, prog_type=XDP).test_run(bytes(20))
    assert e.value.pc == 9 and "through 0x1234, which is not the context" in str(e.value)


def test_the_c_pointer_slots_are_the_contexts_module_s():
    from userbpf import _vm, contexts
    assert _vm.CTX_PTR_SLOTS == {k.name: k.value for k in contexts.CtxPtr}


# -- property: on straight-line code the analysis is exact -------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from userbpf import isa  # noqa: E402

_OPS = st.one_of(
    st.tuples(st.just("mov"), st.integers(1, 9), st.integers(1, 10)),
    st.tuples(st.just("add"), st.integers(1, 9), st.sampled_from([-8, 0, 4, 8])),
    st.tuples(st.just("imm"), st.integers(1, 9), st.integers(0, 9)),
    st.tuples(st.just("spill"), st.sampled_from([-8, -16, -24]), st.integers(1, 9)),
    st.tuples(st.just("spill32"), st.sampled_from([-8, -12, -16]), st.integers(1, 9)),
    st.tuples(st.just("fill"), st.integers(1, 9), st.sampled_from([-8, -16, -24])),
    st.tuples(st.just("load"), st.integers(1, 9), st.sampled_from([0, 4, 8, 12, 16])),
)


def _program_and_expectation(ops):
    """The instructions, and what a concrete walk says about each ctx load:
    {slot: 'ctx'} for loads through the unmodified context, 'modified' for
    loads through ctx + k, nothing for other bases."""
    regs = {1: ("ctx", 0), 10: ("fp", 0)}
    stack = {}
    insns, expect = [], {}
    for op in ops:
        kind = op[0]
        if kind == "mov":
            insns.append(isa.BPF_MOV64_REG(op[1], op[2]))
            regs[op[1]] = regs.get(op[2])
        elif kind == "add":
            insns.append(isa.BPF_ALU64_IMM(isa.AluOp.ADD, op[1], op[2]))
            v = regs.get(op[1])
            regs[op[1]] = (v[0], v[1] + op[2]) if v else None
        elif kind == "imm":
            insns.append(isa.BPF_MOV64_IMM(op[1], op[2]))
            regs[op[1]] = None
        elif kind in ("spill", "spill32"):
            size = isa.Size.DW if kind == "spill" else isa.Size.W
            insns.append(isa.BPF_STX_MEM(size, 10, op[2], op[1]))
            nbytes = 8 if kind == "spill" else 4
            for k in list(stack):
                if k < op[1] + nbytes and op[1] < k + 8:
                    del stack[k]
            if kind == "spill" and regs.get(op[2]) is not None:
                stack[op[1]] = regs[op[2]]
        elif kind == "fill":
            insns.append(isa.BPF_LDX_MEM(isa.Size.DW, op[1], 10, op[2]))
            regs[op[1]] = stack.get(op[2])
        else:                                   # a u32 load through op[1] at op[2]
            v = regs.get(op[1])
            if v is None or v[0] != "ctx":
                continue                        # not a context load: not generated
            insns.append(isa.BPF_LDX_MEM(isa.Size.W, 0, op[1], op[2]))
            expect[len(insns) - 1] = "ctx" if v[1] == 0 else "modified"
            regs[0] = None
            if v[1] != 0:
                break                           # the conversion stops at the first refusal
    insns += [isa.BPF_MOV64_IMM(0, 0), isa.BPF_EXIT_INSN()]
    return insns, expect


@settings(max_examples=300, deadline=None)
@given(st.lists(_OPS, max_size=30))
def test_straight_line_context_tracking_is_exact(ops):
    insns, expect = _program_and_expectation(ops)
    if "modified" in expect.values():
        with pytest.raises(ProgramError) as e:
            convert_ctx_accesses(insns, XDP)
        assert e.value.pc == min(pc for pc, k in expect.items() if k == "modified")
        assert "dereference of modified ctx ptr" in e.value.msg
        return
    got = convert_ctx_accesses(insns, XDP)
    assert set(got) == set(expect)
