# include/userbpf/ctx.h: the internal program context and packet buffer.
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t

from userbpf.includes.vm cimport vm_run

cdef extern from "userbpf/ctx.h" nogil:
    enum:
        UBPF_CTX_PKT
        UBPF_CTX_PKT_END
        UBPF_CTX_PKT_META
        UBPF_CTX_FLOW_KEYS
        UBPF_CTX_SOCK
        UBPF_CTX_SOCK2
        UBPF_CTX_OPTVAL
        UBPF_CTX_OPTVAL_END
        UBPF_CTX_TP_BUFFER
        UBPF_CTX_NF_STATE
        UBPF_CTX_NF_SKB
        UBPF_CTX_NPTRS

    enum:
        UBPF_PKT_NONE
        UBPF_PKT_XDP
        UBPF_PKT_SKB

    ctypedef struct ubpf_pkt:
        uint8_t *buf
        uint64_t cap
        uint64_t *ptrs
        uint8_t *uapi
        uint32_t kind
        uint32_t tailroom
        uint32_t mac_len
        uint32_t l2
        int writable
        uint8_t *frags
        uint32_t *frag_sizes
        uint32_t nr_frags
        uint32_t frag_room
        uint32_t csum
        uint32_t csum_complete

    int UBPF_SKB_LEN_OFF
    int UBPF_SKB_PROTOCOL_OFF
    int UBPF_SKB_HASH_OFF

    void ubpf_pkt_sync(vm_run *run, const ubpf_pkt *p)
    const uint8_t *ubpf_ld_neg_ptr(const vm_run *run, int32_t k, uint32_t size)
