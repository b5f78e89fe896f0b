# cython: language_level=3
"""The interpreter: pre-decoded eBPF in C structs, run without the GIL.

`program.py` (pure Python) checks and pre-decodes a program into packed
``vm_insn`` records; :class:`VMProgram` owns the C copy and runs it. The hot
loop `vm_exec` is one flat switch over `enum vm_op`, registers in a C array,
every memory access checked against the run's regions, no Python objects.
"""
from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.pycapsule cimport (PyCapsule_GetContext, PyCapsule_GetPointer,
                                PyCapsule_IsValid, PyCapsule_New, PyCapsule_SetContext)
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.errno cimport EINVAL, ENOENT, ENOMEM
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from userbpf._maps cimport MapCore
from userbpf.includes.ctx cimport *

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t, timespec *)
    clockid_t CLOCK_MONOTONIC

HELPER_CAPSULE = b"userbpf.helper"
cdef const char *_CAPSULE_NAME = "userbpf.helper"

# Status codes, for program.py's error mapping.
STATUS_OK = VM_STATUS_OK
STATUS_STOP = VM_STATUS_STOP
STATUS_ERR_MEM = VM_STATUS_ERR_MEM
STATUS_ERR_ALIGN = VM_STATUS_ERR_ALIGN
STATUS_ERR_BUDGET = VM_STATUS_ERR_BUDGET
STATUS_ERR_DEPTH = VM_STATUS_ERR_DEPTH
STATUS_ERR_HELPER = VM_STATUS_ERR_HELPER
STATUS_ERR_PYTHON = VM_STATUS_ERR_PYTHON
STATUS_ERR_INVALID = VM_STATUS_ERR_INVALID
STATUS_ERR_MAP_ARG = VM_STATUS_ERR_MAP_ARG
STATUS_ERR_TAIL_CALL = VM_STATUS_ERR_TAIL_CALL
STATUS_ERR_CTX = VM_STATUS_ERR_CTX
# include/userbpf/ctx.h's pointer slots (userbpf.contexts.CtxPtr must agree)
CTX_PTR_SLOTS = {"PKT": UBPF_CTX_PKT, "PKT_END": UBPF_CTX_PKT_END,
                 "PKT_META": UBPF_CTX_PKT_META, "FLOW_KEYS": UBPF_CTX_FLOW_KEYS,
                 "SOCK": UBPF_CTX_SOCK, "SOCK2": UBPF_CTX_SOCK2, "OPTVAL": UBPF_CTX_OPTVAL,
                 "OPTVAL_END": UBPF_CTX_OPTVAL_END, "TP_BUFFER": UBPF_CTX_TP_BUFFER,
                 "NF_STATE": UBPF_CTX_NF_STATE, "NF_SKB": UBPF_CTX_NF_SKB}
INSN_RECORD = "<BBBBiq"         # struct vm_insn, as program.py packs it
INSN_RECORD_SIZE = sizeof(vm_insn)
STACK_BYTES = VM_STACK_BYTES
MAX_REGIONS = VM_MAX_REGIONS


cdef struct vm_frame:
    uint64_t saved[4]        # r6-r9 of the caller
    uint64_t fp              # the caller's r10
    uint32_t ret             # decoded index to return to
    const vm_prog *prog      # the caller's program (a tail call may replace the callee's)


# classic BPF's negative LD_ABS/LD_IND offsets (linux/filter.h)
cdef enum:
    SKF_NET_OFF = -0x100000


cdef inline uint32_t _pc(const vm_insn *ins, const vm_insn *insns) noexcept nogil:
    """The decoded index of record `ins`."""
    return <uint32_t>(ins - insns)


cdef inline bint _take(const vm_insn **ins, const vm_insn *insns, int32_t target,
                       uint64_t *count, uint64_t budget) noexcept nogil:
    """Take the jump at ``ins[0]``. `count` accumulates (block exit - block
    entry), so that executed = count + pc (pc: the index of the next record
    to run) at any block boundary: exact counts, paid only on taken jumps.
    Returns True (and does not jump: ``ins[0]`` stays the jump) when the
    budget is exhausted."""
    cdef uint64_t pc = <uint64_t>_pc(ins[0], insns) + 1
    if count[0] + pc > budget:
        return True
    count[0] += pc - <uint64_t><uint32_t>target
    ins[0] = insns + <uint32_t>target
    return False


cdef inline void _fault(vm_run *run, int status, uint32_t pc, uint64_t addr,
                        uint32_t size, int write) noexcept nogil:
    run.status = status
    run.err_pc = pc
    run.err_addr = addr
    run.err_size = size
    run.err_write = write


cdef uint64_t vm_exec(const vm_prog *prog, vm_run *run) noexcept nogil:
    """Run a program from its first instruction: r1, r2 from the run.

    A successful bpf_tail_call ends the current program's frame with
    VM_STATUS_TAIL_CALL; the target then starts here, on the same stack
    with r1 (and r2) as at entry, sharing the run's budget and count, as
    the kernel's tail call replaces the program without returning."""
    cdef uint64_t r0
    run.status = VM_STATUS_OK
    run.err_pc = VM_NO_PC
    run.insn_count = 0
    run.tail_call_cnt = 0
    run.tail_target = NULL
    run.prog = prog
    r0 = vm_exec_at(prog, run, 0, run.r1, run.r2, 0, 0, 0, 0)
    while run.status == VM_STATUS_TAIL_CALL:
        prog = run.tail_target
        run.prog = prog             # the target's maps and helpers from now on
        run.tail_target = NULL
        run.status = VM_STATUS_OK
        run.err_pc = VM_NO_PC
        r0 = vm_exec_at(prog, run, 0, run.r1, run.r2, 0, 0, 0, 0)
    _locks_at_exit(run)
    return r0


cdef uint64_t vm_exec_at(const vm_prog *prog, vm_run *run, uint32_t entry, uint64_t r1,
                         uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                         int base) noexcept nogil:
    """Run from decoded index ``entry`` in call frame ``base`` (0 for a
    program; a callback a helper runs gets the frame below its caller's)
    until that frame exits. Shares the run's budget and instruction count."""
    cdef uint64_t reg[11]
    cdef vm_frame frames[UBPF_MAX_CALL_FRAMES]
    cdef uint32_t loops[UBPF_MAX_CALL_FRAMES]
    cdef const vm_insn *insns = prog.insns
    cdef const vm_insn *ins = insns + entry         # the record being run
    cdef const vm_helper *h
    # executed = count + _pc(ins, insns) at the top of the loop, always
    cdef uint64_t count = run.insn_count - entry
    cdef uint64_t budget = run.budget if run.budget else <uint64_t>-1
    cdef uint64_t addr, a, b
    cdef uint64_t stack_top = <uint64_t>run.stack + VM_STACK_BYTES
    cdef int depth = base
    cdef int64_t o
    cdef uint8_t dst, src, op
    cdef uint32_t i

    memset(reg, 0, sizeof(reg))
    reg[1] = r1
    reg[2] = r2
    reg[3] = r3
    reg[4] = r4
    reg[5] = r5
    reg[10] = stack_top - <uint64_t>base * UBPF_STACK_SIZE
    loops[base] = VM_MAX_LOOPS

    while True:
        dst = ins.dst
        src = ins.src
        op = ins.op
        # ---- ALU64 -------------------------------------------------------
        if op == VM_ADD64_K:
            reg[dst] += <uint64_t>ins.imm
        elif op == VM_ADD64_X:
            reg[dst] += reg[src]
        elif op == VM_SUB64_K:
            reg[dst] -= <uint64_t>ins.imm
        elif op == VM_SUB64_X:
            reg[dst] -= reg[src]
        elif op == VM_MUL64_K:
            reg[dst] *= <uint64_t>ins.imm
        elif op == VM_MUL64_X:
            reg[dst] *= reg[src]
        elif op == VM_DIV64_K:
            reg[dst] = reg[dst] // <uint64_t>ins.imm if ins.imm else 0
        elif op == VM_DIV64_X:
            reg[dst] = reg[dst] // reg[src] if reg[src] else 0
        elif op == VM_SDIV64_K:
            reg[dst] = vm_sdiv64(reg[dst], <uint64_t>ins.imm)
        elif op == VM_SDIV64_X:
            reg[dst] = vm_sdiv64(reg[dst], reg[src])
        elif op == VM_MOD64_K:
            if ins.imm:
                reg[dst] = reg[dst] % <uint64_t>ins.imm
        elif op == VM_MOD64_X:
            if reg[src]:
                reg[dst] = reg[dst] % reg[src]
        elif op == VM_SMOD64_K:
            reg[dst] = vm_smod64(reg[dst], <uint64_t>ins.imm)
        elif op == VM_SMOD64_X:
            reg[dst] = vm_smod64(reg[dst], reg[src])
        elif op == VM_OR64_K:
            reg[dst] |= <uint64_t>ins.imm
        elif op == VM_OR64_X:
            reg[dst] |= reg[src]
        elif op == VM_AND64_K:
            reg[dst] &= <uint64_t>ins.imm
        elif op == VM_AND64_X:
            reg[dst] &= reg[src]
        elif op == VM_LSH64_K:
            reg[dst] <<= (ins.imm & 63)
        elif op == VM_LSH64_X:
            reg[dst] <<= (reg[src] & 63)
        elif op == VM_RSH64_K:
            reg[dst] >>= (ins.imm & 63)
        elif op == VM_RSH64_X:
            reg[dst] >>= (reg[src] & 63)
        elif op == VM_ARSH64_K:
            reg[dst] = <uint64_t>(<int64_t>reg[dst] >> (ins.imm & 63))
        elif op == VM_ARSH64_X:
            reg[dst] = <uint64_t>(<int64_t>reg[dst] >> (reg[src] & 63))
        elif op == VM_XOR64_K:
            reg[dst] ^= <uint64_t>ins.imm
        elif op == VM_XOR64_X:
            reg[dst] ^= reg[src]
        elif op == VM_MOV64_K:
            reg[dst] = <uint64_t>ins.imm
        elif op == VM_MOV64_X:
            reg[dst] = reg[src]
        elif op == VM_NEG64:
            reg[dst] = <uint64_t>0 - reg[dst]
        # ---- ALU32: operate on the low halves, zero-extend the result ----
        elif op == VM_ADD32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] + <uint32_t>ins.imm)
        elif op == VM_ADD32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] + <uint32_t>reg[src])
        elif op == VM_SUB32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] - <uint32_t>ins.imm)
        elif op == VM_SUB32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] - <uint32_t>reg[src])
        elif op == VM_MUL32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] * <uint32_t>ins.imm)
        elif op == VM_MUL32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] * <uint32_t>reg[src])
        elif op == VM_DIV32_K:
            reg[dst] = <uint32_t>reg[dst] // <uint32_t>ins.imm if <uint32_t>ins.imm else 0
        elif op == VM_DIV32_X:
            reg[dst] = <uint32_t>reg[dst] // <uint32_t>reg[src] if <uint32_t>reg[src] else 0
        elif op == VM_SDIV32_K:
            reg[dst] = vm_sdiv32(reg[dst], <uint64_t>ins.imm)
        elif op == VM_SDIV32_X:
            reg[dst] = vm_sdiv32(reg[dst], reg[src])
        elif op == VM_MOD32_K:
            reg[dst] = <uint32_t>reg[dst] % <uint32_t>ins.imm if <uint32_t>ins.imm else <uint32_t>reg[dst]
        elif op == VM_MOD32_X:
            reg[dst] = <uint32_t>reg[dst] % <uint32_t>reg[src] if <uint32_t>reg[src] else <uint32_t>reg[dst]
        elif op == VM_SMOD32_K:
            reg[dst] = vm_smod32(reg[dst], <uint64_t>ins.imm)
        elif op == VM_SMOD32_X:
            reg[dst] = vm_smod32(reg[dst], reg[src])
        elif op == VM_OR32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] | <uint32_t>ins.imm)
        elif op == VM_OR32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] | <uint32_t>reg[src])
        elif op == VM_AND32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] & <uint32_t>ins.imm)
        elif op == VM_AND32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] & <uint32_t>reg[src])
        elif op == VM_LSH32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] << (ins.imm & 31))
        elif op == VM_LSH32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] << (reg[src] & 31))
        elif op == VM_RSH32_K:
            reg[dst] = <uint32_t>reg[dst] >> (ins.imm & 31)
        elif op == VM_RSH32_X:
            reg[dst] = <uint32_t>reg[dst] >> (reg[src] & 31)
        elif op == VM_ARSH32_K:
            reg[dst] = <uint32_t>(<int32_t>reg[dst] >> (ins.imm & 31))
        elif op == VM_ARSH32_X:
            reg[dst] = <uint32_t>(<int32_t>reg[dst] >> (reg[src] & 31))
        elif op == VM_XOR32_K:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] ^ <uint32_t>ins.imm)
        elif op == VM_XOR32_X:
            reg[dst] = <uint32_t>(<uint32_t>reg[dst] ^ <uint32_t>reg[src])
        elif op == VM_MOV32_K:
            reg[dst] = <uint32_t>ins.imm
        elif op == VM_MOV32_X:
            reg[dst] = <uint32_t>reg[src]
        elif op == VM_NEG32:
            reg[dst] = <uint32_t>(<uint32_t>0 - <uint32_t>reg[dst])
        elif op == VM_MOVSX8_64:
            reg[dst] = <uint64_t><int8_t>reg[src]
        elif op == VM_MOVSX16_64:
            reg[dst] = <uint64_t><int16_t>reg[src]
        elif op == VM_MOVSX32_64:
            reg[dst] = <uint64_t><int32_t>reg[src]
        elif op == VM_MOVSX8_32:
            reg[dst] = <uint32_t><int32_t><int8_t>reg[src]
        elif op == VM_MOVSX16_32:
            reg[dst] = <uint32_t><int32_t><int16_t>reg[src]
        elif op == VM_LE16:
            reg[dst] = vm_le16(reg[dst])
        elif op == VM_LE32:
            reg[dst] = vm_le32(reg[dst])
        elif op == VM_LE64:
            reg[dst] = vm_le64(reg[dst])
        elif op == VM_BE16 or op == VM_BSWAP16:
            reg[dst] = vm_be16(reg[dst]) if ins.op == VM_BE16 else vm_be16(vm_le16(reg[dst]))
        elif op == VM_BE32 or op == VM_BSWAP32:
            reg[dst] = vm_be32(reg[dst]) if ins.op == VM_BE32 else vm_be32(vm_le32(reg[dst]))
        elif op == VM_BE64 or op == VM_BSWAP64:
            reg[dst] = vm_be64(reg[dst]) if ins.op == VM_BE64 else vm_be64(vm_le64(reg[dst]))
        # ---- JMP: conditions compare unsigned unless the name says S ------
        elif op == VM_JA or op == VM_JA32:
            if _take(&ins, insns, ins.off, &count, budget):
                _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                break
            continue
        elif op == VM_JEQ64_K:
            if reg[dst] == <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JEQ64_X:
            if reg[dst] == reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JNE64_K:
            if reg[dst] != <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JNE64_X:
            if reg[dst] != reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGT64_K:
            if reg[dst] > <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGT64_X:
            if reg[dst] > reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGE64_K:
            if reg[dst] >= <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGE64_X:
            if reg[dst] >= reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLT64_K:
            if reg[dst] < <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLT64_X:
            if reg[dst] < reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLE64_K:
            if reg[dst] <= <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLE64_X:
            if reg[dst] <= reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSET64_K:
            if reg[dst] & <uint64_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSET64_X:
            if reg[dst] & reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGT64_K:
            if <int64_t>reg[dst] > ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGT64_X:
            if <int64_t>reg[dst] > <int64_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGE64_K:
            if <int64_t>reg[dst] >= ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGE64_X:
            if <int64_t>reg[dst] >= <int64_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLT64_K:
            if <int64_t>reg[dst] < ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLT64_X:
            if <int64_t>reg[dst] < <int64_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLE64_K:
            if <int64_t>reg[dst] <= ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLE64_X:
            if <int64_t>reg[dst] <= <int64_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        # ---- JMP32: the same on the low 32 bits ---------------------------
        elif op == VM_JEQ32_K:
            if <uint32_t>reg[dst] == <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JEQ32_X:
            if <uint32_t>reg[dst] == <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JNE32_K:
            if <uint32_t>reg[dst] != <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JNE32_X:
            if <uint32_t>reg[dst] != <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGT32_K:
            if <uint32_t>reg[dst] > <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGT32_X:
            if <uint32_t>reg[dst] > <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGE32_K:
            if <uint32_t>reg[dst] >= <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JGE32_X:
            if <uint32_t>reg[dst] >= <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLT32_K:
            if <uint32_t>reg[dst] < <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLT32_X:
            if <uint32_t>reg[dst] < <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLE32_K:
            if <uint32_t>reg[dst] <= <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JLE32_X:
            if <uint32_t>reg[dst] <= <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSET32_K:
            if <uint32_t>reg[dst] & <uint32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSET32_X:
            if <uint32_t>reg[dst] & <uint32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGT32_K:
            if <int32_t>reg[dst] > <int32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGT32_X:
            if <int32_t>reg[dst] > <int32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGE32_K:
            if <int32_t>reg[dst] >= <int32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSGE32_X:
            if <int32_t>reg[dst] >= <int32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLT32_K:
            if <int32_t>reg[dst] < <int32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLT32_X:
            if <int32_t>reg[dst] < <int32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLE32_K:
            if <int32_t>reg[dst] <= <int32_t>ins.imm:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_JSLE32_X:
            if <int32_t>reg[dst] <= <int32_t>reg[src]:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        elif op == VM_MAY_GOTO:
            # The kernel gives each frame BPF_MAX_LOOPS may_goto passes.
            if loops[depth]:
                loops[depth] -= 1
            else:
                if _take(&ins, insns, ins.off, &count, budget):
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                continue
        # ---- calls and exit ------------------------------------------------
        elif op == VM_CALL_HELPER:
            h = &prog.helpers[ins.off]
            run.insn_count = count + _pc(ins, insns) + 1    # callbacks continue the count
            run.cur_depth = depth
            reg[0] = h.fn(reg[1], reg[2], reg[3], reg[4], reg[5], run, h.data)
            count = run.insn_count - _pc(ins, insns) - 1
            if run.status != VM_STATUS_OK:
                if run.status == VM_STATUS_TAIL_CALL and depth > base:
                    # bpf_tail_call in a subprogram: the target replaces it
                    # in its frame, and its exit returns to the subprogram's
                    # caller (as the kernel's JIT does)
                    count += _pc(ins, insns) + 1        # rebased on the target's index 0
                    prog = run.tail_target
                    run.prog = prog
                    run.tail_target = NULL
                    run.status = VM_STATUS_OK
                    insns = prog.insns
                    ins = insns
                    loops[depth] = VM_MAX_LOOPS
                    continue
                if run.status == VM_STATUS_TAIL_CALL and base != 0:
                    run.status = VM_STATUS_ERR_TAIL_CALL      # from a callback's own frame
                if run.err_pc == VM_NO_PC:       # not a fault inside a callback
                    run.err_pc = _pc(ins, insns)
                break
        elif op == VM_CALLX:
            h = NULL
            for i in range(prog.nhelpers):
                if <uint64_t>prog.helpers[i].id == reg[dst]:
                    h = &prog.helpers[i]
                    break
            if h == NULL:
                _fault(run, VM_STATUS_ERR_HELPER, _pc(ins, insns), reg[dst], 0, 0)
                break
            run.insn_count = count + _pc(ins, insns) + 1
            run.cur_depth = depth
            reg[0] = h.fn(reg[1], reg[2], reg[3], reg[4], reg[5], run, h.data)
            count = run.insn_count - _pc(ins, insns) - 1
            if run.status != VM_STATUS_OK:
                if run.status == VM_STATUS_TAIL_CALL and depth > base:
                    count += _pc(ins, insns) + 1        # as for `call`, above
                    prog = run.tail_target
                    run.prog = prog
                    run.tail_target = NULL
                    run.status = VM_STATUS_OK
                    insns = prog.insns
                    ins = insns
                    loops[depth] = VM_MAX_LOOPS
                    continue
                if run.status == VM_STATUS_TAIL_CALL and base != 0:
                    run.status = VM_STATUS_ERR_TAIL_CALL
                if run.err_pc == VM_NO_PC:
                    run.err_pc = _pc(ins, insns)
                break
        elif op == VM_CALL_LOCAL:
            if depth + 1 >= UBPF_MAX_CALL_FRAMES:
                _fault(run, VM_STATUS_ERR_DEPTH, _pc(ins, insns), 0, 0, 0)
                break
            frames[depth].saved[0] = reg[6]
            frames[depth].saved[1] = reg[7]
            frames[depth].saved[2] = reg[8]
            frames[depth].saved[3] = reg[9]
            frames[depth].fp = reg[10]
            frames[depth].ret = _pc(ins, insns) + 1
            frames[depth].prog = prog
            depth += 1
            loops[depth] = VM_MAX_LOOPS
            reg[10] = stack_top - <uint64_t>depth * UBPF_STACK_SIZE
            if _take(&ins, insns, ins.off, &count, budget):
                _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                break
            continue
        elif op == VM_EXIT:
            if depth == base:
                if base == 0 and count + _pc(ins, insns) + 1 > budget:   # a long straight run past the budget
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                break
            depth -= 1
            reg[6] = frames[depth].saved[0]
            reg[7] = frames[depth].saved[1]
            reg[8] = frames[depth].saved[2]
            reg[9] = frames[depth].saved[3]
            reg[10] = frames[depth].fp
            if frames[depth].prog != prog:
                # back from a program a subprogram tail-called: the caller's code
                a = <uint64_t>_pc(ins, insns) + 1
                if count + a > budget:
                    _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                    break
                count += a - <uint64_t>frames[depth].ret
                prog = frames[depth].prog
                run.prog = prog
                insns = prog.insns
                ins = insns + frames[depth].ret
                continue
            if _take(&ins, insns, <int32_t>frames[depth].ret, &count, budget):
                _fault(run, VM_STATUS_ERR_BUDGET, _pc(ins, insns), 0, 0, 0)
                break
            continue
        # ---- loads and stores ---------------------------------------------
        elif op == VM_LDDW:
            reg[dst] = <uint64_t>ins.imm
        elif op == VM_LDXB:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 1, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 1, 0)
                break
            reg[dst] = (<const uint8_t *>addr)[0]
        elif op == VM_LDXH:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 2, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 2, 0)
                break
            reg[dst] = vm_load(addr, 2)
        elif op == VM_LDXW:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 4, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 4, 0)
                break
            reg[dst] = vm_load(addr, 4)
        elif op == VM_LDXDW:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 8, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 8, 0)
                break
            reg[dst] = vm_load(addr, 8)
        elif op == VM_LDXSB:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 1, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 1, 0)
                break
            reg[dst] = <uint64_t>vm_sext(vm_load(addr, 1), 1)
        elif op == VM_LDXSH:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 2, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 2, 0)
                break
            reg[dst] = <uint64_t>vm_sext(vm_load(addr, 2), 2)
        elif op == VM_LDXSW:
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 4, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 4, 0)
                break
            reg[dst] = <uint64_t>vm_sext(vm_load(addr, 4), 4)
        elif op == VM_STB:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 1, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 1, 1)
                break
            (<uint8_t *>addr)[0] = <uint8_t>ins.imm
        elif op == VM_STH:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 2, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 2, 1)
                break
            vm_store(addr, 2, <uint64_t>ins.imm)
        elif op == VM_STW:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 4, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 4, 1)
                break
            vm_store(addr, 4, <uint64_t>ins.imm)
        elif op == VM_STDW:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 8, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 8, 1)
                break
            vm_store(addr, 8, <uint64_t>ins.imm)
        elif op == VM_STXB:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 1, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 1, 1)
                break
            (<uint8_t *>addr)[0] = <uint8_t>reg[src]
        elif op == VM_STXH:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 2, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 2, 1)
                break
            vm_store(addr, 2, reg[src])
        elif op == VM_STXW:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 4, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 4, 1)
                break
            vm_store(addr, 4, reg[src])
        elif op == VM_STXDW:
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, 8, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, 8, 1)
                break
            vm_store(addr, 8, reg[src])
        # ---- context accesses converted at load time: the base must be the
        # context itself (the conversion proved it for the paths it saw; this
        # keeps any other value from reaching the internal context)
        elif op == VM_CTX_LDX:
            if reg[src] != run.ctx or run.ctx == 0:
                _fault(run, VM_STATUS_ERR_CTX, _pc(ins, insns), reg[src], ins.size, 0)
                break
            reg[dst] = vm_load(run.ctx + <uint64_t>ins.off, ins.size)
        elif op == VM_CTX_LDXS:
            if reg[src] != run.ctx or run.ctx == 0:
                _fault(run, VM_STATUS_ERR_CTX, _pc(ins, insns), reg[src], ins.size, 0)
                break
            # sign-extended from the program's access size (imm), after the
            # internal load (as the kernel's conversion adds a movsx)
            reg[dst] = <uint64_t>vm_sext(vm_load(run.ctx + <uint64_t>ins.off, ins.size),
                                         <int>ins.imm)
        elif op == VM_CTX_STX:
            if reg[dst] != run.ctx or run.ctx == 0:
                _fault(run, VM_STATUS_ERR_CTX, _pc(ins, insns), reg[dst], ins.size, 1)
                break
            if ins.imm == 0 or reg[src] < <uint64_t>ins.imm:    # imm: the kernel's drop limit
                vm_store(run.ctx + <uint64_t>ins.off, ins.size, reg[src])
        elif op == VM_CTX_ST:
            if reg[dst] != run.ctx or run.ctx == 0:
                _fault(run, VM_STATUS_ERR_CTX, _pc(ins, insns), reg[dst], ins.size, 1)
                break
            vm_store(run.ctx + <uint64_t>ins.off, ins.size, <uint64_t>ins.imm)
        # ---- legacy packet loads: big-endian; out of range ends with r0 = 0
        elif (op == VM_LD_ABS_B or op == VM_LD_ABS_H or op == VM_LD_ABS_W or
              op == VM_LD_IND_B or op == VM_LD_IND_H or op == VM_LD_IND_W):
            if ins.op == VM_LD_ABS_B or ins.op == VM_LD_ABS_H or ins.op == VM_LD_ABS_W:
                o = <int32_t>ins.imm
            else:
                o = <int32_t>(<uint32_t>reg[src] + <uint32_t>ins.imm)
            if o < 0:
                # SKF_NET_OFF / SKF_LL_OFF + k: the skb's headers (ctx.h)
                addr = <uint64_t>ubpf_ld_neg_ptr(run, o, ins.size)
                if addr == 0:
                    reg[0] = 0
                    break
                a = vm_load(addr, ins.size)
            elif <uint64_t>o + ins.size > run.pkt_len:
                reg[0] = 0
                break
            else:
                a = vm_load(<uint64_t>run.pkt + <uint64_t>o, ins.size)
            reg[0] = a if ins.size == 1 else (vm_be16(a) if ins.size == 2 else vm_be32(a))
        # ---- atomics: bounds and natural alignment checked, then C11 atomics
        elif (op == VM_ATOMIC_ADD32 or op == VM_ATOMIC_FETCH_ADD32 or op == VM_ATOMIC_OR32 or
              op == VM_ATOMIC_FETCH_OR32 or op == VM_ATOMIC_AND32 or op == VM_ATOMIC_FETCH_AND32 or
              op == VM_ATOMIC_XOR32 or op == VM_ATOMIC_FETCH_XOR32 or op == VM_ATOMIC_XCHG32 or
              op == VM_ATOMIC_CMPXCHG32 or op == VM_ATOMIC_ADD64 or op == VM_ATOMIC_FETCH_ADD64 or
              op == VM_ATOMIC_OR64 or op == VM_ATOMIC_FETCH_OR64 or op == VM_ATOMIC_AND64 or
              op == VM_ATOMIC_FETCH_AND64 or op == VM_ATOMIC_XOR64 or op == VM_ATOMIC_FETCH_XOR64 or
              op == VM_ATOMIC_XCHG64 or op == VM_ATOMIC_CMPXCHG64):
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, ins.size, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, ins.size, 1)
                break
            if addr & (ins.size - 1):
                _fault(run, VM_STATUS_ERR_ALIGN, _pc(ins, insns), addr, ins.size, 1)
                break
            if ins.op == VM_ATOMIC_ADD32:
                vm_atomic_add32(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_ADD32:
                reg[src] = vm_atomic_add32(addr, reg[src])
            elif ins.op == VM_ATOMIC_OR32:
                vm_atomic_or32(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_OR32:
                reg[src] = vm_atomic_or32(addr, reg[src])
            elif ins.op == VM_ATOMIC_AND32:
                vm_atomic_and32(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_AND32:
                reg[src] = vm_atomic_and32(addr, reg[src])
            elif ins.op == VM_ATOMIC_XOR32:
                vm_atomic_xor32(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_XOR32:
                reg[src] = vm_atomic_xor32(addr, reg[src])
            elif ins.op == VM_ATOMIC_XCHG32:
                reg[src] = vm_atomic_xchg32(addr, reg[src])
            elif ins.op == VM_ATOMIC_CMPXCHG32:
                reg[0] = vm_atomic_cmpxchg32(addr, reg[0], reg[src])
            elif ins.op == VM_ATOMIC_ADD64:
                vm_atomic_add64(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_ADD64:
                reg[src] = vm_atomic_add64(addr, reg[src])
            elif ins.op == VM_ATOMIC_OR64:
                vm_atomic_or64(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_OR64:
                reg[src] = vm_atomic_or64(addr, reg[src])
            elif ins.op == VM_ATOMIC_AND64:
                vm_atomic_and64(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_AND64:
                reg[src] = vm_atomic_and64(addr, reg[src])
            elif ins.op == VM_ATOMIC_XOR64:
                vm_atomic_xor64(addr, reg[src])
            elif ins.op == VM_ATOMIC_FETCH_XOR64:
                reg[src] = vm_atomic_xor64(addr, reg[src])
            elif ins.op == VM_ATOMIC_XCHG64:
                reg[src] = vm_atomic_xchg64(addr, reg[src])
            else:
                reg[0] = vm_atomic_cmpxchg64(addr, reg[0], reg[src])
        elif (op == VM_LOAD_ACQ_B or op == VM_LOAD_ACQ_H or op == VM_LOAD_ACQ_W or
              op == VM_LOAD_ACQ_DW):
            addr = reg[src] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, ins.size, 0):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, ins.size, 0)
                break
            if addr & (ins.size - 1):
                _fault(run, VM_STATUS_ERR_ALIGN, _pc(ins, insns), addr, ins.size, 0)
                break
            reg[dst] = vm_load_acquire(addr, ins.size)
        elif (op == VM_STORE_REL_B or op == VM_STORE_REL_H or op == VM_STORE_REL_W or
              op == VM_STORE_REL_DW):
            addr = reg[dst] + <uint64_t>ins.off
            if not vm_access_ok(run, addr, ins.size, 1):
                _fault(run, VM_STATUS_ERR_MEM, _pc(ins, insns), addr, ins.size, 1)
                break
            if addr & (ins.size - 1):
                _fault(run, VM_STATUS_ERR_ALIGN, _pc(ins, insns), addr, ins.size, 1)
                break
            vm_store_release(addr, ins.size, reg[src])
        elif op == VM_OP_BYTE_MAX:
            # not an op: here so that the switch's table spans all 256 bytes
            # (a body of its own, or the compiler folds it into the default)
            _fault(run, VM_STATUS_ERR_INVALID, _pc(ins, insns), VM_OP_BYTE_MAX, 0, 0)
            break
        else:
            # ADDR_SPACE_CAST, CALL_KFUNC...: refused by the pre-decoder.
            _fault(run, VM_STATUS_ERR_INVALID, _pc(ins, insns), 0, 0, 0)
            break
        ins += 1            # taken jumps `continue` past this

    run.insn_count = count + _pc(ins, insns) + 1    # `ins` ran (or faulted)
    return reg[0]


# ---- runs in flight: when freed map memory can no longer be in use ----------
cdef extern from *:
    """
    static uint64_t ubpf_runs_in_flight = 0;
    static inline void _runs_enter(void) { __atomic_add_fetch(&ubpf_runs_in_flight, 1, __ATOMIC_SEQ_CST); }
    static inline void _runs_leave(void) { __atomic_sub_fetch(&ubpf_runs_in_flight, 1, __ATOMIC_SEQ_CST); }
    static inline uint64_t _runs_now(void) { return __atomic_load_n(&ubpf_runs_in_flight, __ATOMIC_SEQ_CST); }
    """
    void _runs_enter() noexcept nogil
    void _runs_leave() noexcept nogil
    uint64_t _runs_now() noexcept nogil


def runs_in_flight():
    """Program runs going on now in any thread. When it is 0, no program can
    hold a pointer into map memory taken out of reach before the call (an
    inner map removed from a map of maps): it may be freed, as after the
    kernel's RCU grace period."""
    return _runs_now()


# ---- Python-facing wrapper --------------------------------------------------

cdef uint64_t _py_helper(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                         vm_run *run, void *data) noexcept nogil:
    """Trampoline for helpers written in Python: the slow path, takes the GIL."""
    with gil:
        try:
            res = (<object>data)(r1, r2, r3, r4, r5)
            return 0 if res is None else (<object>res) & 0xffffffffffffffff
        except BaseException as e:
            if run.py_exc == NULL:
                Py_INCREF(e)
                run.py_exc = <void *>e
            run.status = VM_STATUS_ERR_PYTHON
            return 0


cdef uint64_t _helper_ktime_get_ns(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                   uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return vm_ktime_ns()


cdef uint64_t _helper_get_prandom_u32(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                      uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return vm_prandom_u32()


cdef uint64_t _helper_get_smp_processor_id(uint64_t r1, uint64_t r2, uint64_t r3,
                                           uint64_t r4, uint64_t r5, vm_run *run,
                                           void *data) noexcept nogil:
    return run.cpu


cdef uint64_t _helper_unwind(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                             uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """The conformance suite's helper: returns r1; r1 == 0 ends the run (r0 = 0)."""
    if r1 == 0:
        run.status = VM_STATUS_STOP
    return r1


# ---- bpf_for_each_map_elem (164): a helper that runs program code -----------

cdef struct _foreach:
    const vm_prog *prog
    vm_run *run
    uint32_t entry          # the callback's decoded index
    uint64_t map, ctx
    int base                # the callback's call frame
    uint8_t *key            # the key, copied to memory the callback may read
    uint32_t key_size


cdef int _foreach_elem(void *arg, const void *key, void *value) noexcept nogil:
    cdef _foreach *f = <_foreach *>arg
    cdef uint64_t r0
    memcpy(f.key, key, f.key_size)
    r0 = vm_exec_at(f.prog, f.run, f.entry, f.map, <uint64_t>f.key, <uint64_t>value,
                    f.ctx, 0, f.base)
    # a fault stops the walk; the callback's 1 (the verifier allows 0 or 1) too
    return f.run.status != VM_STATUS_OK or r0 != 0


cdef uint64_t _helper_for_each_map_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                        uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_for_each_map_elem(map, callback_fn, callback_ctx, flags): calls
    callback_fn(map, &key, &value, callback_ctx) per element (array and hash
    maps) until it returns 1; returns the number of calls."""
    cdef ubpf_map *m = vm_map_arg(run, r1)
    cdef _foreach f
    cdef long n
    cdef uint8_t small_key[64]
    if m == NULL:
        run.status = VM_STATUS_ERR_MAP_ARG
        run.err_addr = r1
        return 0
    if r4 != 0 or m.ops.for_each == NULL or m.inner_maps:
        return <uint64_t>-EINVAL
    if (r2 & VM_FUNC_TAG_MASK) != VM_FUNC_TAG or (r2 & 0xffffffffu) >= run.prog.ninsns:
        run.status = VM_STATUS_ERR_HELPER       # not a function address the loader made
        run.err_addr = r2
        return 0
    if run.cur_depth + 1 >= UBPF_MAX_CALL_FRAMES:
        run.status = VM_STATUS_ERR_DEPTH
        return 0
    if run.nregions >= VM_MAX_REGIONS:
        run.status = VM_STATUS_ERR_DEPTH
        return 0
    f.prog = run.prog
    f.run = run
    f.entry = <uint32_t>(r2 & 0xffffffffu)
    f.map = r1
    f.ctx = r3
    f.base = run.cur_depth + 1
    f.key_size = m.key_size
    if m.key_size <= sizeof(small_key):
        f.key = &small_key[0]
    else:
        f.key = <uint8_t *>malloc(m.key_size)
    if f.key == NULL:
        return <uint64_t>-ENOMEM
    # the key buffer is readable by the callback while the walk lasts
    run.regions[run.nregions].start = <uint64_t>f.key
    run.regions[run.nregions].len = m.key_size
    run.regions[run.nregions].writable = 0
    run.nregions += 1
    n = m.ops.for_each(m, run.cpu, _foreach_elem, &f)
    run.nregions -= 1
    if f.key != &small_key[0]:
        free(f.key)
    return <uint64_t>n


# ---- bpf_tail_call (12) -----------------------------------------------------

cdef uint64_t _helper_tail_call(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_tail_call(ctx, prog_array_map, index): jump to the program in
    slot ``index``; it does not return. It fails (the caller goes on with
    the next instruction) when index >= max_entries, after 33 tail calls in
    the run, or when the slot is empty. A call to an empty slot does not
    count toward the 33, as with the live kernel's JIT (x86-64, Linux 6.18;
    its interpreter counts it). Verified programs cannot read r0 after the
    call (RET_VOID); userbpf leaves -ENOENT there on failure."""
    cdef ubpf_map *m = NULL
    cdef uint32_t i
    cdef uint32_t index = <uint32_t>r3          # the kernel reads a u32 index
    cdef void *slot
    cdef const vm_prog *target
    for i in range(run.prog.nmaps):
        if <uint64_t>run.prog.maps[i] == r2:
            m = run.prog.maps[i]
            break
    if m == NULL or m.map_type != VM_MAP_PROG_ARRAY:
        run.status = VM_STATUS_ERR_MAP_ARG
        run.err_addr = r2
        return 0
    if index >= m.max_entries:
        return <uint64_t>-ENOENT
    if run.tail_call_cnt >= UBPF_MAX_TAIL_CALL_CNT:
        return <uint64_t>-ENOENT
    slot = m.ops.lookup(m, &index, run.cpu)
    if slot == NULL:
        return <uint64_t>-ENOENT
    target = vm_prog_slot(slot)
    if target == NULL:
        return <uint64_t>-ENOENT
    run.tail_call_cnt += 1
    run.tail_target = target
    run.status = VM_STATUS_TAIL_CALL
    return 0


cdef object _capsule(vm_helper_fn fn):
    return PyCapsule_New(<void *>fn, _CAPSULE_NAME, NULL)


include "helpers.pxi"
include "pkt_helpers.pxi"


# Helpers implemented in C, as capsules any table can hold (issue "programs"
# adds the rest). Keys are the kernel's helper ids.
C_HELPERS = {
    5: _capsule(_helper_ktime_get_ns),
    7: _capsule(_helper_get_prandom_u32),
    8: _capsule(_helper_get_smp_processor_id),
    12: _capsule(_helper_tail_call),
    164: _capsule(_helper_for_each_map_elem),
}
C_HELPERS.update(GENERAL_HELPERS)
C_HELPERS.update(PKT_HELPERS)
FUNC_TAG = VM_FUNC_TAG
UNWIND_HELPER = _capsule(_helper_unwind)


def c_helper(size_t address, size_t data=0):
    """Wrap a C function's address as a helper (a ``userbpf.helper`` capsule).

    The function must have the ``vm_helper_fn`` signature of
    ``include/userbpf/vm.h``: ``uint64_t f(uint64_t r1, ..., uint64_t r5,
    struct vm_run *run, void *data)``; ``data`` is passed through. Use it with
    helpers compiled by cffi, ctypes.CDLL or your own extension::

        lib = ctypes.CDLL("./myhelpers.so")
        addr = ctypes.cast(lib.my_helper, ctypes.c_void_p).value
        Program(code, helpers={1000: c_helper(addr)})
    """
    if address == 0:
        raise ValueError("a C helper needs a non-NULL function address")
    cap = PyCapsule_New(<void *>address, _CAPSULE_NAME, NULL)
    if data:
        PyCapsule_SetContext(cap, <void *>data)
    return cap


def is_c_helper(obj) -> bool:
    """True for a PyCapsule named ``userbpf.helper`` holding a ``vm_helper_fn``."""
    return PyCapsule_IsValid(obj, _CAPSULE_NAME) == 1


cdef class VMProgram:
    """A pre-decoded program in C memory. Built by :class:`userbpf.Program`.

    ``records`` is the packed ``vm_insn`` array (``INSN_RECORD`` each),
    ``orig_pc`` maps each record to its instruction slot, ``helpers`` is a
    list of ``(id, callable_or_capsule)`` that calls index by position.
    """

    def __cinit__(self):
        self.prog.insns = NULL
        self.prog.orig_pc = NULL
        self.prog.helpers = NULL
        self.prog.ninsns = 0
        self.prog.nhelpers = 0
        self.prog.maps = NULL
        self.prog.nmaps = 0
        self.prog.owner = <void *>self

    def __init__(self, bytes records, orig_pc, helpers, fault, uint64_t budget=0, maps=()):
        cdef Py_ssize_t n = len(records) // sizeof(vm_insn)
        cdef Py_ssize_t i
        if n == 0 or len(records) != n * sizeof(vm_insn) or len(orig_pc) != n:
            raise ValueError("malformed pre-decoded program")
        self.prog.insns = <vm_insn *>malloc(n * sizeof(vm_insn))
        self.prog.orig_pc = <uint32_t *>malloc(n * sizeof(uint32_t))
        self.prog.helpers = <vm_helper *>malloc((len(helpers) or 1) * sizeof(vm_helper))
        if self.prog.insns == NULL or self.prog.orig_pc == NULL or self.prog.helpers == NULL:
            raise MemoryError()
        memcpy(self.prog.insns, <const char *>records, n * sizeof(vm_insn))
        for i in range(n):
            self.prog.orig_pc[i] = orig_pc[i]
        self.prog.ninsns = <uint32_t>n
        self._helper_objs = []
        for i, (hid, obj) in enumerate(helpers):
            self.prog.helpers[i].id = hid
            if is_c_helper(obj):
                self.prog.helpers[i].fn = <vm_helper_fn>PyCapsule_GetPointer(obj, _CAPSULE_NAME)
                self.prog.helpers[i].data = PyCapsule_GetContext(obj)
            elif callable(obj):
                self.prog.helpers[i].fn = _py_helper
                self.prog.helpers[i].data = <void *>obj
            else:
                raise TypeError(f"helper {hid}: expected a callable or a C helper capsule, "
                                f"got {type(obj).__name__}")
            self._helper_objs.append(obj)
            self.prog.nhelpers = i + 1
        self._maps = list(maps)
        self.prog.maps = <ubpf_map **>malloc((len(self._maps) or 1) * sizeof(ubpf_map *))
        if self.prog.maps == NULL:
            raise MemoryError()
        for i, m in enumerate(self._maps):
            self.prog.maps[i] = (<MapCore?>m).map
        self.prog.nmaps = len(self._maps)
        self._regions = []
        self.fault = fault
        self.budget = budget

    def __dealloc__(self):
        free(self.prog.insns)
        free(self.prog.orig_pc)
        free(self.prog.helpers)
        free(self.prog.maps)

    def add_region(self, buf, bint writable):
        """Let programs access ``buf`` (any buffer; writable needs a writable one)."""
        if len(self._regions) + 2 >= VM_MAX_REGIONS // 2:
            raise ValueError(f"at most {VM_MAX_REGIONS // 2 - 2} extra regions")
        mv = memoryview(buf).cast("B")
        if writable and mv.readonly:
            raise TypeError("a writable region needs a writable buffer")
        self._regions.append((mv, writable))

    def regions(self):
        return [(mv, w) for mv, w in self._regions]

    cdef int _prepare(self, vm_run *run, uint8_t *stack, object mem, Py_buffer *view,
                      bint *have_view) except -1:
        cdef Py_buffer rv
        cdef uint32_t i
        cdef ubpf_map *m
        memset(run, 0, sizeof(vm_run))
        run.prog = &self.prog
        run.stack = stack
        run.budget = self.budget
        run.regions[0].start = <uint64_t>stack
        run.regions[0].len = VM_STACK_BYTES
        run.regions[0].writable = 1
        run.nregions = 1
        have_view[0] = False
        if mem is not None:
            PyObject_GetBuffer(mem, view, PyBUF_WRITABLE)
            have_view[0] = True
            run.r1 = <uint64_t>view.buf
            run.r2 = <uint64_t>view.len
            run.pkt = <const uint8_t *>view.buf
            run.pkt_len = <uint64_t>view.len
            run.regions[1].start = <uint64_t>view.buf
            run.regions[1].len = <uint64_t>view.len
            run.regions[1].writable = 1
            run.nregions = 2
        for mv, w in self._regions:
            PyObject_GetBuffer(mv, &rv, PyBUF_SIMPLE)
            run.regions[run.nregions].start = <uint64_t>rv.buf
            run.regions[run.nregions].len = <uint64_t>rv.len
            run.regions[run.nregions].writable = w
            run.nregions += 1
            PyBuffer_Release(&rv)   # the memoryview in self._regions keeps it alive
        # Contiguous map values join the fast path while there is room; the
        # rest are found by vm_access_ok's slow path.
        for i in range(self.prog.nmaps):
            m = self.prog.maps[i]
            # a map of maps' (a PROG_ARRAY's) values are map (program)
            # pointers, never program memory
            if m.region != NULL and not m.inner_maps and m.map_type != VM_MAP_PROG_ARRAY \
                    and run.nregions < VM_MAX_REGIONS:
                run.regions[run.nregions].start = <uint64_t>m.region
                run.regions[run.nregions].len = m.region_len
                run.regions[run.nregions].writable = m.region_writable
                run.nregions += 1
        return 0

    cdef object _finish(self, vm_run *run):
        cdef object exc = None
        cdef object faulted = self
        self.insn_count = run.insn_count
        if run.py_exc != NULL:
            exc = <object>run.py_exc
            Py_DECREF(exc)
            run.py_exc = NULL
        if run.status > VM_STATUS_STOP:
            # run.prog: the program that faulted (a tail call's target, which
            # its PROG_ARRAY slot or the retired list keeps alive)
            if run.prog != NULL and run.prog.owner != NULL:
                faulted = <object>run.prog.owner
            raise (<VMProgram>faulted).fault(run.status, run.prog.orig_pc[run.err_pc],
                                             run.err_addr, run.err_size, bool(run.err_write),
                                             exc)
        return None

    def run(self, mem=None, *, uint32_t cpu=0):
        """Run once; ``mem`` (a writable buffer) is r1/r2. Returns r0."""
        cdef vm_run run
        cdef Py_buffer view
        cdef bint have_view
        cdef uint64_t stack[VM_STACK_WORDS]
        cdef uint64_t r0
        memset(stack, 0, sizeof(stack))
        self._prepare(&run, <uint8_t *>stack, mem, &view, &have_view)
        run.cpu = cpu
        try:
            _runs_enter()
            with nogil:
                r0 = vm_exec(&self.prog, &run)
            _runs_leave()
            self._finish(&run)
        finally:
            if have_view:
                PyBuffer_Release(&view)
        return r0

    def run_batch(self, mem=None, uint64_t repeat=1, *, uint32_t cpu=0):
        """Run ``repeat`` times in a C loop (for benchmarks).

        Returns ``(r0 of the last run, total nanoseconds, instructions per run)``.
        The memory is not restored between runs, as the kernel's test_run.
        """
        cdef vm_run run
        cdef Py_buffer view
        cdef bint have_view
        cdef uint64_t stack[VM_STACK_WORDS]
        cdef uint64_t r0 = 0, k, r1, r2
        cdef timespec t0, t1
        if repeat < 1:
            repeat = 1
        memset(stack, 0, sizeof(stack))
        self._prepare(&run, <uint8_t *>stack, mem, &view, &have_view)
        run.cpu = cpu
        r1, r2 = run.r1, run.r2
        try:
            _runs_enter()
            with nogil:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for k in range(repeat):
                    run.r1 = r1
                    run.r2 = r2
                    r0 = vm_exec(&self.prog, &run)
                    if run.status > VM_STATUS_STOP:
                        break
                    run.status = VM_STATUS_OK
                clock_gettime(CLOCK_MONOTONIC, &t1)
            _runs_leave()
            self._finish(&run)
        finally:
            if have_view:
                PyBuffer_Release(&view)
        ns = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec)
        return r0, ns, run.insn_count

    def run_ctx(self, ctx, uint32_t ptr_base, pkt=None, *, uint32_t kind=0,
                int64_t meta=-1, uint64_t data=0, uint64_t end=0, uint32_t tailroom=0,
                uint32_t mac_len=0, bint l2=False, bint writable=False,
                uint64_t repeat=1, uint32_t cpu=0, extra=None, int extra_slot=-1,
                bytes extra_init=None, list ro_slots=None, frags=None,
                frag_sizes=None, uint32_t nr_frags=0, uint32_t frag_room=0,
                int64_t csum=-1, dict info=None):
        """Run with r1 pointing to an internal context (see include/userbpf/ctx.h).

        ``ctx`` is a writable buffer holding the UAPI struct and, at
        ``ptr_base``, the eight pointer slots. With ``pkt`` (a writable
        buffer) the packet is ``pkt[data:end]`` with metadata from ``meta``
        (-1: none, i.e. at ``data``); the slots are set to those addresses
        and helpers may move them inside ``pkt``. Runs ``repeat`` times in a
        C loop on the same context, as the kernel's test_run does.

        ``extra`` (a writable buffer) is memory a pointer slot names, e.g.
        the flow dissector's bpf_flow_keys: slot ``extra_slot`` points to it,
        the program may read and write it, and ``extra_init`` (bytes) is
        copied into it before every run. ``ro_slots`` lists ``(slot, bytes)``:
        read-only memory those slots point to (e.g. a test run's socket).

        XDP fragments: ``frags`` (a writable buffer) holds ``nr_frags``
        pages of ``frag_room`` bytes and ``frag_sizes`` (a writable buffer of
        native u32, one per page) their used sizes; the helpers read, write,
        grow and release them in place (a released one's size becomes 0).
        ``csum`` >= 0 makes the skb CHECKSUM_COMPLETE with that skb->csum.
        With ``info`` (a dict), the packet's final state is put there:
        ``nr_frags``, ``csum`` and ``csum_complete`` (skb->csum and whether
        the skb is still CHECKSUM_COMPLETE) and ``net_off`` (the network
        header's offset from data).

        Returns ``(r0, total_ns, meta, data, end)``: the last run's r0 and
        the packet's final bounds as offsets into ``pkt``.
        """
        cdef vm_run run
        cdef Py_buffer view, cview, xview, fview, sview
        cdef bint have_view = False, have_cview = False, have_xview = False
        cdef bint have_fview = False, have_sview = False
        cdef const uint8_t *xinit = NULL
        cdef bytes ro_mem
        cdef Py_ssize_t xinit_len = 0
        cdef uint64_t stack[VM_STACK_WORDS]
        cdef uint64_t r0 = 0, k, base = 0
        cdef uint64_t *ptrs
        cdef ubpf_pkt p
        cdef timespec t0, t1
        if repeat < 1:
            repeat = 1
        memset(stack, 0, sizeof(stack))
        memset(&p, 0, sizeof(p))
        PyObject_GetBuffer(ctx, &cview, PyBUF_WRITABLE)
        have_cview = True
        try:
            if <uint64_t>cview.len < <uint64_t>ptr_base + 8 * UBPF_CTX_NPTRS or ptr_base % 8:
                raise ValueError("context buffer too small for its pointer slots")
            if <uint64_t>cview.len < self.ctx_min_size:
                # CTX_LDX/CTX_STX do not check bounds: the conversion did
                raise ValueError(f"context buffer of {cview.len} bytes; the program's "
                                 f"context accesses reach byte {self.ctx_min_size}")
            ptrs = <uint64_t *>(<uint8_t *>cview.buf + ptr_base)
            self._prepare(&run, <uint8_t *>stack, pkt, &view, &have_view)
            if pkt is not None:
                if not (data <= end <= <uint64_t>view.len) or meta > <int64_t>data:
                    raise ValueError("packet bounds outside the packet buffer")
                base = <uint64_t>view.buf
                p.buf = <uint8_t *>view.buf
                p.cap = <uint64_t>view.len
                p.ptrs = ptrs
                p.uapi = <uint8_t *>cview.buf
                p.kind = kind
                p.tailroom = tailroom
                p.mac_len = mac_len
                p.l2 = l2
                p.writable = writable
                if csum >= 0:
                    p.csum = <uint32_t>csum
                    p.csum_complete = 1
                if nr_frags:
                    if frags is None or frag_sizes is None or frag_room == 0:
                        raise ValueError("fragments need frags, frag_sizes and frag_room")
                    PyObject_GetBuffer(frags, &fview, PyBUF_WRITABLE)
                    have_fview = True
                    PyObject_GetBuffer(frag_sizes, &sview, PyBUF_WRITABLE)
                    have_sview = True
                    if <uint64_t>fview.len < <uint64_t>nr_frags * frag_room \
                            or <uint64_t>sview.len < <uint64_t>nr_frags * 4:
                        raise ValueError("frags or frag_sizes too small for nr_frags")
                    for k in range(nr_frags):
                        if (<uint32_t *>sview.buf)[k] > frag_room:
                            raise ValueError("a fragment larger than frag_room")
                    p.frags = <uint8_t *>fview.buf
                    p.frag_sizes = <uint32_t *>sview.buf
                    p.nr_frags = nr_frags
                    p.frag_room = frag_room
                ptrs[UBPF_CTX_PKT] = base + data
                ptrs[UBPF_CTX_PKT_END] = base + end
                ptrs[UBPF_CTX_PKT_META] = base + <uint64_t>(meta if meta >= 0 else <int64_t>data)
                ubpf_pkt_sync(&run, &p)
                run.pkt_state = &p
            if extra is not None:
                if not 0 <= extra_slot < UBPF_CTX_NPTRS or run.nregions >= VM_MAX_REGIONS:
                    raise ValueError("bad extra_slot, or no region left for it")
                PyObject_GetBuffer(extra, &xview, PyBUF_WRITABLE)
                have_xview = True
                ptrs[extra_slot] = <uint64_t>xview.buf
                run.regions[run.nregions].start = <uint64_t>xview.buf
                run.regions[run.nregions].len = <uint64_t>xview.len
                run.regions[run.nregions].writable = 1
                run.nregions += 1
                if extra_init is not None:
                    if len(extra_init) > xview.len:
                        raise ValueError("extra_init is larger than extra")
                    xinit = <const uint8_t *>extra_init
                    xinit_len = len(extra_init)
            for slot, mem in (ro_slots or ()):
                if not 0 <= slot < UBPF_CTX_NPTRS or run.nregions >= VM_MAX_REGIONS:
                    raise ValueError("bad slot in ro_slots, or no region left for it")
                ro_mem = mem        # bytes: the list keeps it alive for the call
                ptrs[slot] = <uint64_t><const char *>ro_mem
                run.regions[run.nregions].start = ptrs[slot]
                run.regions[run.nregions].len = len(mem)
                run.regions[run.nregions].writable = 0
                run.nregions += 1
            run.ctx = <uint64_t>cview.buf
            run.cpu = cpu
            _runs_enter()
            with nogil:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for k in range(repeat):
                    if xinit != NULL:
                        memcpy(xview.buf, xinit, xinit_len)
                    run.r1 = run.ctx
                    run.r2 = 0
                    r0 = vm_exec(&self.prog, &run)
                    if run.status > VM_STATUS_STOP:
                        break
                    run.status = VM_STATUS_OK
                clock_gettime(CLOCK_MONOTONIC, &t1)
            _runs_leave()
            self._finish(&run)
            ns = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec)
            if pkt is None:
                return r0, ns, -1, 0, 0
            if info is not None:
                info["nr_frags"] = p.nr_frags
                info["csum"] = p.csum
                info["csum_complete"] = bool(p.csum_complete)
                info["net_off"] = <uint64_t>(p.mac_len if p.l2 else 0)
            return (r0, ns, <int64_t>(ptrs[UBPF_CTX_PKT_META] - base),
                    <int64_t>(ptrs[UBPF_CTX_PKT] - base), <int64_t>(ptrs[UBPF_CTX_PKT_END] - base))
        finally:
            if have_view:
                PyBuffer_Release(&view)
            if have_cview:
                PyBuffer_Release(&cview)
            if have_xview:
                PyBuffer_Release(&xview)
            if have_fview:
                PyBuffer_Release(&fview)
            if have_sview:
                PyBuffer_Release(&sview)

    @property
    def prog_address(self):
        """The ``vm_prog *`` a PROG_ARRAY slot holds for bpf_tail_call."""
        return <size_t>&self.prog

    def __len__(self):
        return self.prog.ninsns
