/* The internal program context, shared by the interpreter, the packet
 * helpers and the test-run code (Python builds it, C runs on it).
 *
 * A program's r1 points to an internal context laid out as:
 *
 *   [0, uapi_size)              the UAPI struct (__sk_buff, xdp_md, ...) at
 *                               its own offsets: plain fields are read and
 *                               written where the program's struct has them
 *   [ptr_base, ptr_base + 88)   eleven 64-bit pointer slots (enum ubpf_ctx_ptr):
 *                               what a load of ctx->data, ctx->data_end, ...
 *                               yields once the load-time conversion has
 *                               rewritten it (ptr_base = uapi_size rounded up to 8)
 *
 * userbpf.contexts holds the field rules and the conversion offsets; the
 * slot numbers here must match its CtxPtr enum (a test checks).
 *
 * Packet programs also get a ubpf_pkt (vm_run.pkt_state): the buffer the
 * packet lives in, so that helpers can move data / data_end within it.
 */
#ifndef USERBPF_CTX_H
#define USERBPF_CTX_H

#include <stdint.h>

#include "userbpf/vm.h"

enum ubpf_ctx_ptr {
    UBPF_CTX_PKT = 0,        /* data */
    UBPF_CTX_PKT_END = 1,    /* data_end */
    UBPF_CTX_PKT_META = 2,   /* data_meta */
    UBPF_CTX_FLOW_KEYS = 3,
    UBPF_CTX_SOCK = 4,
    UBPF_CTX_SOCK2 = 5,
    UBPF_CTX_OPTVAL = 6,
    UBPF_CTX_OPTVAL_END = 7,
    UBPF_CTX_TP_BUFFER = 8,  /* raw_tracepoint_writable args[0] */
    UBPF_CTX_NF_STATE = 9,   /* bpf_nf_ctx.state */
    UBPF_CTX_NF_SKB = 10,    /* bpf_nf_ctx.skb */
    UBPF_CTX_NPTRS = 11
};

enum ubpf_pkt_kind {
    UBPF_PKT_NONE = 0,
    UBPF_PKT_XDP = 1,        /* xdp_buff: data_meta <= data <= data_end in buf */
    UBPF_PKT_SKB = 2         /* a linear sk_buff */
};

/* The buffer a packet lives in: [buf, buf + cap) is headroom, packet and
 * tailroom. Helpers that grow or shrink the packet move the slots inside
 * it and then call ubpf_pkt_sync. */
typedef struct ubpf_pkt {
    uint8_t *buf;
    uint64_t cap;
    uint64_t *ptrs;          /* the context's pointer slots */
    uint8_t *uapi;           /* the context's UAPI bytes (__sk_buff.len, ...) */
    uint32_t kind;           /* enum ubpf_pkt_kind */
    uint32_t tailroom;       /* bytes at the end of buf the packet may not use */
    uint32_t mac_len;        /* skb: bytes of link-layer header before the
                                network header (ETH_HLEN for test runs) */
    uint32_t l2;             /* skb: data starts at the MAC header (tc) */
    int writable;            /* may the program write the packet directly? */
    /* XDP fragments (skb_shared_info.frags of a multi-buffer xdp_buff):
     * nr_frags pages of frag_room bytes, one after another at frags; page i
     * holds frag_sizes[i] bytes from its start. Only the helpers see them
     * (bpf_xdp_get_buff_len, bpf_xdp_load/store_bytes, bpf_xdp_adjust_tail);
     * a released fragment's size becomes 0. */
    uint8_t *frags;
    uint32_t *frag_sizes;
    uint32_t nr_frags;
    uint32_t frag_room;      /* the rxq's frag_size: how far a fragment may grow */
    /* skb: skb->csum (a __wsum over the packet from the network header, in
     * host order as csum_partial gives it) and whether skb->ip_summed is
     * CHECKSUM_COMPLETE, i.e. whether helpers keep csum up to date */
    uint32_t csum;
    uint32_t csum_complete;
} ubpf_pkt;

#define UBPF_SKB_LEN_OFF 0          /* offsetof(struct __sk_buff, len) */
#define UBPF_SKB_PROTOCOL_OFF 16    /* offsetof(struct __sk_buff, protocol) */
#define UBPF_SKB_HASH_OFF 68        /* offsetof(struct __sk_buff, hash) */

/* After a helper moved data / data_end / data_meta: the program's packet
 * region (regions[1]) and what LD_ABS / LD_IND read follow the new bounds;
 * an skb's __sk_buff.len follows its length. */
static inline void ubpf_pkt_sync(vm_run *run, const ubpf_pkt *p) {
    uint64_t meta = p->ptrs[UBPF_CTX_PKT_META];
    uint64_t data = p->ptrs[UBPF_CTX_PKT];
    uint64_t end = p->ptrs[UBPF_CTX_PKT_END];
    uint64_t start = meta && meta < data ? meta : data;
    run->regions[1].start = start;
    run->regions[1].len = end - start;
    run->regions[1].writable = p->writable;
    run->pkt = (const uint8_t *)(uintptr_t)data;
    run->pkt_len = end - data;
    if (p->kind == UBPF_PKT_SKB) {
        uint32_t len = (uint32_t)(end - data);
        memcpy(p->uapi + UBPF_SKB_LEN_OFF, &len, 4);
    }
}

/* LD_ABS / LD_IND at a negative offset (classic BPF's SKF_NET_OFF + k and
 * SKF_LL_OFF + k): where the byte is, or NULL (the program then ends with
 * r0 = 0), as bpf_internal_load_pointer_neg_helper finds it. An skb has a
 * MAC header mac_len bytes before its network header (data is at the MAC
 * header when l2, else at the network header) and the pointer must stay in
 * [head, tail); plain memory (no skb) is all network header, with no link
 * layer. */
#define UBPF_SKF_NET_OFF (-0x100000)
#define UBPF_SKF_LL_OFF (-0x200000)

static inline const uint8_t *ubpf_ld_neg_ptr(const vm_run *run, int32_t k, uint32_t size) {
    const ubpf_pkt *p = (const ubpf_pkt *)run->pkt_state;
    uint64_t ptr, head, tail;
    if (p != NULL && p->kind == UBPF_PKT_SKB) {
        uint64_t data = p->ptrs[UBPF_CTX_PKT];
        uint64_t net = data + (p->l2 ? p->mac_len : 0);
        uint64_t mac = net - p->mac_len;
        if (k >= UBPF_SKF_NET_OFF)
            ptr = net + (uint64_t)(int64_t)(k - UBPF_SKF_NET_OFF);
        else if (k >= UBPF_SKF_LL_OFF)
            ptr = mac + (uint64_t)(int64_t)(k - UBPF_SKF_LL_OFF);
        else
            return NULL;
        head = (uint64_t)(uintptr_t)p->buf;
        tail = p->ptrs[UBPF_CTX_PKT_END];
    } else {
        if (k < UBPF_SKF_NET_OFF)
            return NULL;
        ptr = (uint64_t)(uintptr_t)run->pkt + (uint64_t)(int64_t)(k - UBPF_SKF_NET_OFF);
        head = (uint64_t)(uintptr_t)run->pkt;
        tail = head + run->pkt_len;
    }
    if (ptr < head || ptr + size > tail)
        return NULL;
    return (const uint8_t *)(uintptr_t)ptr;
}

#endif /* USERBPF_CTX_H */
