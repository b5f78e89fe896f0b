# Declarations of include/userbpf/vm.h (the interpreter's C structures).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t

from userbpf.includes.insn cimport *
from userbpf.includes.map cimport ubpf_map


cdef extern from "userbpf/vm.h" nogil:
    ctypedef struct vm_insn:
        uint8_t op
        uint8_t dst
        uint8_t src
        uint8_t size
        int32_t off
        int64_t imm

    ctypedef struct vm_region:
        uint64_t start
        uint64_t len
        int writable

    enum:
        VM_MAP_PROG_ARRAY
        VM_OP_BYTE_MAX
        VM_MAX_REGIONS
        VM_STACK_BYTES
        VM_STACK_WORDS
        VM_MAX_LOOPS
        VM_HOST_BIG_ENDIAN
        VM_NO_PC

    const uint64_t VM_FUNC_TAG
    const uint64_t VM_FUNC_TAG_MASK

    enum vm_status:
        VM_STATUS_OK
        VM_STATUS_STOP
        VM_STATUS_ERR_MEM
        VM_STATUS_ERR_ALIGN
        VM_STATUS_ERR_BUDGET
        VM_STATUS_ERR_DEPTH
        VM_STATUS_ERR_HELPER
        VM_STATUS_ERR_PYTHON
        VM_STATUS_ERR_INVALID
        VM_STATUS_ERR_MAP_ARG
        VM_STATUS_TAIL_CALL
        VM_STATUS_ERR_TAIL_CALL
        VM_STATUS_ERR_CTX

    ctypedef struct vm_prog

    ctypedef struct vm_run:
        uint64_t r1, r2
        uint8_t *stack
        const uint8_t *pkt
        uint64_t pkt_len
        vm_region regions[32]
        int nregions
        uint64_t budget
        uint32_t cpu
        void *user
        uint64_t ctx
        void *pkt_state
        const vm_prog *prog
        int status
        uint32_t err_pc
        uint64_t err_addr
        uint32_t err_size
        int err_write
        uint64_t insn_count
        int cur_depth
        void *py_exc
        const vm_prog *tail_target
        uint32_t tail_call_cnt

    ctypedef uint64_t (*vm_helper_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                                      vm_run *, void *) noexcept nogil

    ctypedef struct vm_helper:
        vm_helper_fn fn
        void *data
        int64_t id

    ctypedef struct vm_prog:
        vm_insn *insns
        uint32_t ninsns
        uint32_t *orig_pc
        vm_helper *helpers
        uint32_t nhelpers
        ubpf_map **maps
        uint32_t nmaps
        void *owner

    const vm_prog *vm_prog_slot(const void *slot)
    uint64_t vm_le16(uint64_t)
    uint64_t vm_le32(uint64_t)
    uint64_t vm_le64(uint64_t)
    uint64_t vm_be16(uint64_t)
    uint64_t vm_be32(uint64_t)
    uint64_t vm_be64(uint64_t)
    uint64_t vm_load(uint64_t addr, int size)
    void vm_store(uint64_t addr, int size, uint64_t v)
    int64_t vm_sext(uint64_t v, int bytes)
    bint vm_access_ok(const vm_run *run, uint64_t addr, uint64_t size, int write)
    ubpf_map *vm_map_arg(const vm_run *run, uint64_t ptr)
    uint64_t vm_atomic_add32(uint64_t, uint64_t)
    uint64_t vm_atomic_add64(uint64_t, uint64_t)
    uint64_t vm_atomic_or32(uint64_t, uint64_t)
    uint64_t vm_atomic_or64(uint64_t, uint64_t)
    uint64_t vm_atomic_and32(uint64_t, uint64_t)
    uint64_t vm_atomic_and64(uint64_t, uint64_t)
    uint64_t vm_atomic_xor32(uint64_t, uint64_t)
    uint64_t vm_atomic_xor64(uint64_t, uint64_t)
    uint64_t vm_atomic_xchg32(uint64_t, uint64_t)
    uint64_t vm_atomic_xchg64(uint64_t, uint64_t)
    uint64_t vm_atomic_cmpxchg32(uint64_t, uint64_t, uint64_t)
    uint64_t vm_atomic_cmpxchg64(uint64_t, uint64_t, uint64_t)
    uint64_t vm_load_acquire(uint64_t addr, int size)
    void vm_store_release(uint64_t addr, int size, uint64_t v)
    uint64_t vm_sdiv64(uint64_t, uint64_t)
    uint64_t vm_smod64(uint64_t, uint64_t)
    uint64_t vm_sdiv32(uint64_t, uint64_t)
    uint64_t vm_smod32(uint64_t, uint64_t)

    uint64_t vm_ktime_ns()
    uint32_t vm_prandom_u32()
