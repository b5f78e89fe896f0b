# Included by _vm.pyx: the kernel's packet helpers, in C (nogil).
#
# bpf_skb_* (load/store bytes, l3/l4 checksum replace, change head/tail,
# adjust room, pull data, socket cookie, hash), bpf_xdp_* (adjust
# head/tail/meta, load/store bytes, buff len) and bpf_redirect /
# bpf_redirect_map, with the ids, argument checks and return values of the
# kernel's net/core/filter.c as it answers BPF_PROG_TEST_RUN (checked
# against the live kernel in tests/test_pkt_helpers_kernel.py).
#
# They work on the run's packet (vm_run.pkt_state, a ubpf_pkt from
# include/userbpf/ctx.h): r1 must be the run's context and the packet the
# kind the helper is for (what the verifier guarantees); anything else ends
# the run with VM_STATUS_ERR_CTX. After moving data / data_end / data_meta
# they call ubpf_pkt_sync so that the program's packet region, LD_ABS and
# __sk_buff.len follow.
#
# The skb helpers also model what the kernel's skb would look like where the
# kernel shows it: its headroom (64 bytes for tc test runs) grows by
# ALIGN(shortfall, NET_SKB_PAD) when skb_cow reallocates, which shifts the
# unset transport header into a "set" one (bpf_skb_change_tail's minimum
# length follows it); tunnel encapsulation sets the transport header and
# skb->encapsulation; set_hash / set_hash_invalid keep skb->sw_hash.
#
# skb->csum of CHECKSUM_COMPLETE test runs (BPF_F_TEST_SKB_CHECKSUM_COMPLETE)
# is kept as the kernel keeps it (ubpf_pkt.csum): store_bytes with
# BPF_F_RECOMPUTE_CSUM, l4_csum_replace with BPF_F_PSEUDO_HDR and
# adjust_room's shrink update it; change_tail makes the skb CHECKSUM_NONE;
# the zero-filling pushes (change_head, adjust_room's grow) leave it alone.
# test_run compares it with the final packet's checksum, as the kernel does.
#
# XDP fragments (ubpf_pkt.frags, pages the program cannot address) are seen
# by bpf_xdp_get_buff_len, bpf_xdp_load/store_bytes (across the linear part
# and the fragments) and bpf_xdp_adjust_tail (which grows the last fragment
# within its page or shrinks from the end, releasing emptied fragments).
#
# Where userbpf differs from the kernel (documented, tested):
# - the kernel reallocates an skb that has to grow past its buffer; here the
#   packet moves inside the buffer test_run gave it and, when that is full,
#   the helper fails with -ENOMEM (what the kernel returns when its
#   reallocation fails). The kernel's own limit, BPF_SKB_MAX_LEN (16064
#   bytes), is checked first, with its errno.
# - bpf_get_hash_recalc: the kernel's flow hash is keyed with a random
#   per-boot secret, so it cannot be reproduced. userbpf returns its own
#   flow hash: murmur3 over the packet's flow keys (L3 protocol, IP
#   addresses, L4 protocol, ports when the packet is not a fragment), ordered
#   so that both directions of a flow hash alike, as the kernel's are; never
#   0, deterministic across runs and processes.
# - bpf_get_socket_cookie: the test run's socket gets its cookie from a
#   process-wide counter on first use (the kernel's is from a global counter
#   too, so only "non-zero, stable within a run, new per run" is comparable).
# - bpf_redirect_map: device, CPU and XSK maps hold nothing in userbpf yet,
#   so only the verdict logic is here (flags' fallback action, BPF_F_BROADCAST).

cdef extern from *:
    """
    #include <errno.h>

    #define UBPF_ENOTSUPP 524            /* the kernel's internal ENOTSUPP */
    #define UBPF_ETH_HLEN 14
    #define UBPF_ETH_P_IP 0x0800
    #define UBPF_ETH_P_IPV6 0x86DD
    #define UBPF_INT_MAX 0x7fffffffu
    /* BPF_SKB_MAX_LEN = SKB_MAX_ALLOC: 4 pages minus the skb_shared_info */
    #define UBPF_SKB_MAX_LEN 16064u
    /* sizeof(struct xdp_frame): the head of an XDP buffer the packet (and
       its metadata) may never move into */
    #define UBPF_XDP_FRAME_SIZE 40
    /* skb_shared_info.meta_len is a u8: the largest XDP metadata */
    #define UBPF_XDP_META_MAX 255

    /* bpf_skb_store_bytes flags */
    #define UBPF_F_RECOMPUTE_CSUM (1ull << 0)
    #define UBPF_F_INVALIDATE_HASH (1ull << 1)
    /* bpf_l3/l4_csum_replace flags */
    #define UBPF_F_HDR_FIELD_MASK 0xfull
    #define UBPF_F_PSEUDO_HDR (1ull << 4)
    #define UBPF_F_MARK_MANGLED_0 (1ull << 5)
    #define UBPF_F_MARK_ENFORCE (1ull << 6)
    #define UBPF_F_IPV6 (1ull << 7)
    #define UBPF_CSUM_MANGLED_0 0xffff
    /* bpf_skb_adjust_room modes and flags */
    #define UBPF_ADJ_ROOM_NET 0
    #define UBPF_ADJ_ROOM_MAC 1
    #define UBPF_F_ADJ_ROOM_FIXED_GSO (1ull << 0)
    #define UBPF_F_ADJ_ROOM_ENCAP_L3_IPV4 (1ull << 1)
    #define UBPF_F_ADJ_ROOM_ENCAP_L3_IPV6 (1ull << 2)
    #define UBPF_F_ADJ_ROOM_ENCAP_L4_GRE (1ull << 3)
    #define UBPF_F_ADJ_ROOM_ENCAP_L4_UDP (1ull << 4)
    #define UBPF_F_ADJ_ROOM_NO_CSUM_RESET (1ull << 5)
    #define UBPF_F_ADJ_ROOM_ENCAP_L2_ETH (1ull << 6)
    #define UBPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ull << 7)
    #define UBPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ull << 8)
    #define UBPF_F_ADJ_ROOM_ENCAP_L3_MASK (UBPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | UBPF_F_ADJ_ROOM_ENCAP_L3_IPV6)
    #define UBPF_F_ADJ_ROOM_DECAP_L3_MASK (UBPF_F_ADJ_ROOM_DECAP_L3_IPV4 | UBPF_F_ADJ_ROOM_DECAP_L3_IPV6)
    #define UBPF_F_ADJ_ROOM_ENCAP_L2_SHIFT 56
    #define UBPF_F_ADJ_ROOM_MASK (UBPF_F_ADJ_ROOM_FIXED_GSO | UBPF_F_ADJ_ROOM_ENCAP_L3_MASK | \\
        UBPF_F_ADJ_ROOM_ENCAP_L4_GRE | UBPF_F_ADJ_ROOM_ENCAP_L4_UDP | UBPF_F_ADJ_ROOM_ENCAP_L2_ETH | \\
        (0xffull << UBPF_F_ADJ_ROOM_ENCAP_L2_SHIFT) | UBPF_F_ADJ_ROOM_DECAP_L3_MASK)
    /* redirects */
    #define UBPF_F_INGRESS 1ull
    #define UBPF_F_BROADCAST (1ull << 3)
    #define UBPF_F_EXCLUDE_INGRESS (1ull << 4)
    #define UBPF_XDP_ABORTED 0
    #define UBPF_XDP_REDIRECT 4
    #define UBPF_XDP_ACTION_MASK 3ull      /* ABORTED | DROP | PASS | TX: redirect_map's fallback */
    #define UBPF_TC_ACT_SHOT 2
    #define UBPF_TC_ACT_REDIRECT 7
    #define UBPF_MAP_DEVMAP 14
    #define UBPF_MAP_CPUMAP 16
    #define UBPF_MAP_XSKMAP 17
    #define UBPF_MAP_DEVMAP_HASH 25

    /* skb state __sk_buff has no field for: kept in pointer slots no
       __sk_buff access is converted to (they are bpf_sockopt's), zero when
       test_run builds the context, shared by the repeats of one run as the
       kernel's one skb is. */
    #define UBPF_SKB_STATE_SLOT UBPF_CTX_OPTVAL
    #define UBPF_SKB_COOKIE_SLOT UBPF_CTX_OPTVAL_END
    #define UBPF_SKB_HASH_VALID 1ull       /* skb->l4_hash || skb->sw_hash */
    #define UBPF_SKB_ENCAP 2ull            /* skb->encapsulation */
    #define UBPF_SKB_TRANS_SET 4ull        /* skb_transport_header_was_set */
    #define UBPF_SKB_HEAD_SET 8ull         /* the kernel's headroom is tracked */
    #define UBPF_SKB_HEAD_SHIFT 8          /* bits 8..31: the kernel skb's headroom */
    #define UBPF_SKB_TRANS_SHIFT 32        /* bits 32..63: the transport header's
                                              offset from data (s32) */
    #define UBPF_NET_SKB_PAD 64            /* skb_cow rounds a reallocation's extra
                                              headroom up to this */

    static inline uint64_t ubpf_err(int e) { return (uint64_t)(int64_t)-e; }

    /* The run's packet, when r1 is the run's context and the packet is of
       the helper's kind; else the run ends (the verifier refuses both). */
    static inline ubpf_pkt *ubpf_pkt_arg(vm_run *run, uint64_t ctx, uint32_t kind) {
        ubpf_pkt *p = (ubpf_pkt *)run->pkt_state;
        if (p != NULL && ctx != 0 && ctx == run->ctx && p->kind == kind)
            return p;
        run->status = VM_STATUS_ERR_CTX;
        run->err_addr = ctx;
        run->err_size = 0;
        run->err_write = 0;
        return NULL;
    }

    /* A pointer argument the verifier would have refused: end the run. */
    static inline uint64_t ubpf_pkt_bad_ptr(vm_run *run, uint64_t addr, uint64_t size, int write) {
        run->status = VM_STATUS_ERR_MEM;
        run->err_addr = addr;
        run->err_size = (uint32_t)size;
        run->err_write = write;
        return 0;
    }

    static inline uint8_t *ubpf_data(const ubpf_pkt *p) { return (uint8_t *)(uintptr_t)p->ptrs[UBPF_CTX_PKT]; }
    static inline uint8_t *ubpf_end(const ubpf_pkt *p) { return (uint8_t *)(uintptr_t)p->ptrs[UBPF_CTX_PKT_END]; }
    static inline uint8_t *ubpf_meta(const ubpf_pkt *p) { return (uint8_t *)(uintptr_t)p->ptrs[UBPF_CTX_PKT_META]; }
    static inline uint64_t ubpf_len(const ubpf_pkt *p) { return p->ptrs[UBPF_CTX_PKT_END] - p->ptrs[UBPF_CTX_PKT]; }
    /* the end of the part of the buffer the packet may use (the rest is the
       skb_shared_info the kernel keeps there) */
    static inline uint8_t *ubpf_hard_end(const ubpf_pkt *p) { return p->buf + p->cap - p->tailroom; }

    static inline void ubpf_set_bounds(vm_run *run, ubpf_pkt *p, uint8_t *data, uint8_t *end) {
        p->ptrs[UBPF_CTX_PKT] = (uint64_t)(uintptr_t)data;
        p->ptrs[UBPF_CTX_PKT_END] = (uint64_t)(uintptr_t)end;
        p->ptrs[UBPF_CTX_PKT_META] = (uint64_t)(uintptr_t)data;   /* skbs of test runs have no metadata */
        ubpf_pkt_sync(run, p);
    }

    /* ---- skb geometry and state ---------------------------------------- */

    /* skb_network_offset: data starts at the MAC header when l2 (tc, or
       after bpf_skb_change_head pushed one), at the network header else */
    static inline uint64_t ubpf_skb_net_off(const ubpf_pkt *p) { return p->l2 ? p->mac_len : 0; }

    static inline uint16_t ubpf_skb_proto(const ubpf_pkt *p) {      /* host order */
        return (uint16_t)((p->uapi[UBPF_SKB_PROTOCOL_OFF] << 8) | p->uapi[UBPF_SKB_PROTOCOL_OFF + 1]);
    }

    static inline void ubpf_skb_set_proto(ubpf_pkt *p, uint16_t proto) {
        p->uapi[UBPF_SKB_PROTOCOL_OFF] = (uint8_t)(proto >> 8);
        p->uapi[UBPF_SKB_PROTOCOL_OFF + 1] = (uint8_t)proto;
    }

    static inline uint64_t *ubpf_skb_state(ubpf_pkt *p) { return &p->ptrs[UBPF_SKB_STATE_SLOT]; }

    static inline int32_t ubpf_skb_trans_off(ubpf_pkt *p) {
        return (int32_t)(uint32_t)(*ubpf_skb_state(p) >> UBPF_SKB_TRANS_SHIFT);
    }
    static inline void ubpf_skb_set_trans_off(ubpf_pkt *p, int64_t off) {
        uint64_t *st = ubpf_skb_state(p);
        *st = (*st & 0xffffffffull) | UBPF_SKB_TRANS_SET
              | ((uint64_t)(uint32_t)(int32_t)off << UBPF_SKB_TRANS_SHIFT);
    }

    /* The headroom the kernel's skb would have: where it starts the test
       run (data's place in the buffer before any helper moved it), then
       grown by reallocations and moved by pushes and pulls. */
    static inline uint64_t ubpf_skb_headroom(ubpf_pkt *p) {
        uint64_t *st = ubpf_skb_state(p);
        if (!(*st & UBPF_SKB_HEAD_SET))
            *st |= UBPF_SKB_HEAD_SET | ((uint64_t)(ubpf_data(p) - p->buf) << UBPF_SKB_HEAD_SHIFT);
        return (*st >> UBPF_SKB_HEAD_SHIFT) & 0xffffff;
    }
    static inline void ubpf_skb_set_headroom(ubpf_pkt *p, uint64_t h) {
        uint64_t *st = ubpf_skb_state(p);
        *st = (*st & ~(0xffffffull << UBPF_SKB_HEAD_SHIFT)) | UBPF_SKB_HEAD_SET
              | ((h & 0xffffff) << UBPF_SKB_HEAD_SHIFT);
    }

    /* ubpf_pkt_arg for skb helpers; the kernel's headroom is read before
       anything can move the packet */
    static inline ubpf_pkt *ubpf_skb_arg(vm_run *run, uint64_t ctx) {
        ubpf_pkt *p = ubpf_pkt_arg(run, ctx, UBPF_PKT_SKB);
        if (p != NULL)
            ubpf_skb_headroom(p);
        return p;
    }

    /* skb_cow / skb_cow_head(skb, need): when the kernel's headroom is
       short it reallocates with ALIGN(shortfall, NET_SKB_PAD) more, and
       skb_headers_offset_update adds that to every header offset, even the
       unset transport header (~0): it wraps to nhead - 1 and counts as set
       from then on (bpf_skb_change_tail's minimum length sees it). */
    static void ubpf_skb_cow_head(ubpf_pkt *p, uint64_t need) {
        uint64_t head = ubpf_skb_headroom(p), nhead;
        if (need <= head)
            return;
        nhead = (need - head + UBPF_NET_SKB_PAD - 1) & ~(uint64_t)(UBPF_NET_SKB_PAD - 1);
        if (!(*ubpf_skb_state(p) & UBPF_SKB_TRANS_SET))
            ubpf_skb_set_trans_off(p, -(int64_t)head - 1);
        ubpf_skb_set_headroom(p, head + nhead);
    }

    /* data moved by delta bytes (negative: pushed): the kernel's headroom
       follows; a set transport header stays where it is, so its offset from
       data changes (mac and network headers move with data) */
    static inline void ubpf_skb_data_moved(ubpf_pkt *p, int64_t delta) {
        ubpf_skb_set_headroom(p, (uint64_t)((int64_t)ubpf_skb_headroom(p) + delta));
        if (*ubpf_skb_state(p) & UBPF_SKB_TRANS_SET)
            ubpf_skb_set_trans_off(p, (int64_t)ubpf_skb_trans_off(p) - delta);
    }

    /* __bpf_skb_min_len as the live kernel answers: the transport header's
       offset when one is set and positive, else the network header's
       (test-run skbs are never CHECKSUM_PARTIAL) */
    static inline uint64_t ubpf_skb_min_len(ubpf_pkt *p) {
        if ((*ubpf_skb_state(p) & UBPF_SKB_TRANS_SET) && ubpf_skb_trans_off(p) > 0)
            return (uint64_t)ubpf_skb_trans_off(p);
        return ubpf_skb_net_off(p);
    }

    static inline void ubpf_skb_set_hash(ubpf_pkt *p, uint32_t hash, int valid) {
        memcpy(p->uapi + UBPF_SKB_HASH_OFF, &hash, 4);
        if (valid)
            *ubpf_skb_state(p) |= UBPF_SKB_HASH_VALID;
        else
            *ubpf_skb_state(p) &= ~UBPF_SKB_HASH_VALID;
    }

    /* Make room for `head` more bytes before data and `tail` more after
       data_end. The kernel reallocates the skb when a side is short; here
       the packet moves inside its buffer, or -ENOMEM when the buffer is too
       small. It moves to the headroom the kernel's skb has (after skb_cow's
       reallocation, when there is one) as far as the buffer allows, and the
       bytes after it move along: the kernel's stale bytes past the tail stay
       behind its packet too (bpf_skb_adjust_room can read them). Packet
       pointers are invalid after either, so the move itself is not seen. */
    static int ubpf_skb_room(ubpf_pkt *p, uint64_t head, uint64_t tail) {
        uint8_t *data = ubpf_data(p), *end = ubpf_end(p), *hard_end = ubpf_hard_end(p);
        uint64_t len = (uint64_t)(end - data), space = (uint64_t)(hard_end - p->buf);
        uint64_t want = ubpf_skb_headroom(p), span;
        uint8_t *to;
        if (head > space || tail > space - head || len > space - head - tail)
            return -ENOMEM;
        if ((uint64_t)(data - p->buf) >= head && (uint64_t)(hard_end - end) >= tail)
            return 0;
        if (head > want)
            want += (head - want + UBPF_NET_SKB_PAD - 1) & ~(uint64_t)(UBPF_NET_SKB_PAD - 1);
        if (want > space - tail - len)
            want = space - tail - len;
        to = p->buf + want;
        span = (uint64_t)(hard_end - (to > data ? to : data));
        memmove(to, data, span);
        p->ptrs[UBPF_CTX_PKT] = (uint64_t)(uintptr_t)to;
        p->ptrs[UBPF_CTX_PKT_END] = (uint64_t)(uintptr_t)(to + len);
        p->ptrs[UBPF_CTX_PKT_META] = (uint64_t)(uintptr_t)to;
        return 0;
    }

    /* ---- checksums, as include/net/checksum.h computes them --------------- */

    static inline uint32_t ubpf_csum_add(uint32_t a, uint32_t b) {
        uint32_t r = a + b;
        return r + (r < b);               /* end-around carry */
    }
    static inline uint32_t ubpf_csum_sub(uint32_t a, uint32_t b) { return ubpf_csum_add(a, ~b); }
    static inline uint16_t ubpf_csum_fold(uint32_t s) {
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        return (uint16_t)~s;
    }
    static inline uint16_t ubpf_csum16_add(uint16_t a, uint16_t b) {
        uint16_t r = (uint16_t)(a + b);
        return (uint16_t)(r + (r < b));
    }
    /* csum_replace4 (and inet_proto_csum_replace2/4 for an skb whose
       checksum is not CHECKSUM_PARTIAL, as test-run skbs are) */
    static inline uint16_t ubpf_csum_replace4(uint16_t sum, uint32_t from, uint32_t to) {
        uint32_t t = ubpf_csum_sub(~(uint32_t)sum, from);
        return ubpf_csum_fold(ubpf_csum_add(t, to));
    }
    /* csum_replace2: 16-bit ones'-complement arithmetic (RFC 1624 eqn. 3) */
    static inline uint16_t ubpf_csum_replace2(uint16_t sum, uint16_t from, uint16_t to) {
        return (uint16_t)~ubpf_csum16_add(ubpf_csum16_add((uint16_t)~sum, (uint16_t)~from), to);
    }
    /* csum_replace_by_diff: a bpf_csum_diff result added in */
    static inline uint16_t ubpf_csum_replace_by_diff(uint16_t sum, uint32_t diff) {
        return ubpf_csum_fold(ubpf_csum_add(diff, ~(uint32_t)sum));
    }

    /* csum_partial: the ones'-complement sum of 16-bit words in host
       (little-endian) order from b, added to sum; an odd last byte is a
       word's low byte. The 32-bit value may differ from the kernel's, its
       fold does not. */
    static uint32_t ubpf_csum_partial(const uint8_t *b, uint64_t len, uint32_t sum) {
        uint64_t acc = 0, i;
        for (i = 0; i + 1 < len; i += 2)
            acc += (uint64_t)b[i] | ((uint64_t)b[i + 1] << 8);
        if (len & 1)
            acc += b[len - 1];
        while (acc >> 32)
            acc = (acc & 0xffffffffull) + (acc >> 32);
        return ubpf_csum_add(sum, (uint32_t)acc);
    }
    /* csum_block_add / csum_block_sub: a block's sum at an odd offset has
       its bytes swapped */
    static inline uint32_t ubpf_csum_shift(uint32_t sum, uint64_t off) {
        return (off & 1) ? (sum >> 8) | (sum << 24) : sum;
    }
    static inline uint32_t ubpf_csum_block_add(uint32_t csum, uint32_t sum, uint64_t off) {
        return ubpf_csum_add(csum, ubpf_csum_shift(sum, off));
    }
    static inline uint32_t ubpf_csum_block_sub(uint32_t csum, uint32_t sum, uint64_t off) {
        return ubpf_csum_sub(csum, ubpf_csum_shift(sum, off));
    }

    /* ---- a reproducible flow hash (bpf_get_hash_recalc) ------------------- */

    static inline uint32_t ubpf_rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
    static inline uint32_t ubpf_murmur_word(uint32_t h, uint32_t k) {
        k *= 0xcc9e2d51u; k = ubpf_rotl32(k, 15); k *= 0x1b873593u;
        h ^= k; h = ubpf_rotl32(h, 13);
        return h * 5 + 0xe6546b64u;
    }
    static inline uint32_t ubpf_murmur_final(uint32_t h, uint32_t nbytes) {
        h ^= nbytes;
        h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
        return h;
    }
    static inline int ubpf_l4_has_ports(uint8_t proto) {
        return proto == 6 || proto == 17 || proto == 132 || proto == 136;   /* TCP UDP SCTP UDPLITE */
    }

    #define UBPF_FLOW_HASH_SEED 0x75627066u   /* "ubpf" */

    /* murmur3 over (l3 proto, l4 proto, addresses, ports), the lower
       (address, port) endpoint first so that both directions agree */
    static uint32_t ubpf_flow_hash(const ubpf_pkt *p) {
        const uint8_t *nh = ubpf_data(p) + ubpf_skb_net_off(p);
        uint64_t avail = ubpf_len(p) > ubpf_skb_net_off(p) ? ubpf_len(p) - ubpf_skb_net_off(p) : 0;
        uint16_t l3 = ubpf_skb_proto(p);
        uint8_t l4 = 0, addr[2][16];
        uint32_t alen = 0, ports[2] = {0, 0}, w, i, nbytes = 0;
        uint64_t l4off = 0;
        int ports_ok = 0;
        uint32_t h = UBPF_FLOW_HASH_SEED;
        memset(addr, 0, sizeof(addr));
        if (l3 == UBPF_ETH_P_IP && avail >= 20) {
            uint16_t frag = (uint16_t)((nh[6] << 8) | nh[7]);
            l4 = nh[9];
            alen = 4;
            memcpy(addr[0], nh + 12, 4);
            memcpy(addr[1], nh + 16, 4);
            l4off = (uint64_t)(nh[0] & 0xf) * 4;
            ports_ok = (frag & 0x3fff) == 0;      /* neither MF nor an offset */
        } else if (l3 == UBPF_ETH_P_IPV6 && avail >= 40) {
            l4 = nh[6];
            alen = 16;
            memcpy(addr[0], nh + 8, 16);
            memcpy(addr[1], nh + 24, 16);
            l4off = 40;
            ports_ok = 1;
        }
        if (ports_ok && ubpf_l4_has_ports(l4) && l4off >= 20 && l4off + 4 <= avail) {
            ports[0] = (uint32_t)((nh[l4off] << 8) | nh[l4off + 1]);
            ports[1] = (uint32_t)((nh[l4off + 2] << 8) | nh[l4off + 3]);
        }
        {
            int c = memcmp(addr[0], addr[1], alen);
            if (c > 0 || (c == 0 && ports[0] > ports[1])) {
                uint8_t t[16];
                uint32_t tp = ports[0];
                memcpy(t, addr[0], 16); memcpy(addr[0], addr[1], 16); memcpy(addr[1], t, 16);
                ports[0] = ports[1]; ports[1] = tp;
            }
        }
        h = ubpf_murmur_word(h, ((uint32_t)l3 << 16) | l4); nbytes += 4;
        for (i = 0; i < alen; i += 4) {
            memcpy(&w, addr[0] + i, 4); h = ubpf_murmur_word(h, w);
            memcpy(&w, addr[1] + i, 4); h = ubpf_murmur_word(h, w);
            nbytes += 8;
        }
        h = ubpf_murmur_word(h, (ports[0] << 16) | ports[1]); nbytes += 4;
        h = ubpf_murmur_final(h, nbytes);
        return h ? h : 1;                  /* as the kernel's: 0 means "no hash" */
    }

    static uint64_t ubpf_cookie_next = 0;   /* socket cookies handed out, process-wide */

    /* ---- skb helpers --------------------------------------------------------- */

    /* A flow dissector's test run: a packet (of no skb or XDP kind) and no
       skb behind the context. */
    static inline int ubpf_is_flow_dissector(const vm_run *run, uint64_t ctx) {
        const ubpf_pkt *p = (const ubpf_pkt *)run->pkt_state;
        return p != NULL && ctx != 0 && ctx == run->ctx && p->kind == UBPF_PKT_NONE;
    }

    /* 26: long bpf_skb_load_bytes(const void *skb, u32 offset, void *to, u32 len) */
    static uint64_t ubpf_skb_load_bytes(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                        uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p;
        uint32_t off = (uint32_t)r2, len = (uint32_t)r4;
        if (ubpf_is_flow_dissector(run, r1)) {
            /* bpf_flow_dissector_load_bytes reads ctx->skb, which test runs
               leave NULL: always -EFAULT, `to` cleared */
            if (!vm_access_ok(run, r3, len, 1))
                return ubpf_pkt_bad_ptr(run, r3, len, 1);
            memset((void *)(uintptr_t)r3, 0, len);
            return ubpf_err(EFAULT);
        }
        p = ubpf_skb_arg(run, r1);
        if (p == NULL)
            return 0;
        if (!vm_access_ok(run, r3, len, 1))
            return ubpf_pkt_bad_ptr(run, r3, len, 1);
        if (off > UBPF_INT_MAX || (uint64_t)off + len > ubpf_len(p)) {
            memset((void *)(uintptr_t)r3, 0, len);     /* the kernel clears `to` */
            return ubpf_err(EFAULT);
        }
        memmove((void *)(uintptr_t)r3, ubpf_data(p) + off, len);
        return 0;
    }

    /* 9: long bpf_skb_store_bytes(skb, u32 offset, const void *from, u32 len, u64 flags) */
    static uint64_t ubpf_skb_store_bytes(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint32_t off = (uint32_t)r2, len = (uint32_t)r4;
        if (p == NULL)
            return 0;
        if (!vm_access_ok(run, r3, len, 0))
            return ubpf_pkt_bad_ptr(run, r3, len, 0);
        if (r5 & ~(UBPF_F_RECOMPUTE_CSUM | UBPF_F_INVALIDATE_HASH))
            return ubpf_err(EINVAL);
        if (off > UBPF_INT_MAX || (uint64_t)off + len > ubpf_len(p))
            return ubpf_err(EFAULT);
        /* BPF_F_RECOMPUTE_CSUM: __skb_postpull_rcsum of the old bytes and
           __skb_postpush_rcsum of the new ones, at their offset from data
           (CHECKSUM_COMPLETE skbs only) */
        if ((r5 & UBPF_F_RECOMPUTE_CSUM) && p->csum_complete)
            p->csum = ubpf_csum_block_sub(p->csum, ubpf_csum_partial(ubpf_data(p) + off, len, 0), off);
        memmove(ubpf_data(p) + off, (const void *)(uintptr_t)r3, len);
        if ((r5 & UBPF_F_RECOMPUTE_CSUM) && p->csum_complete)
            p->csum = ubpf_csum_block_add(p->csum, ubpf_csum_partial(ubpf_data(p) + off, len, 0), off);
        if (r5 & UBPF_F_INVALIDATE_HASH)
            ubpf_skb_set_hash(p, 0, 0);
        return 0;
    }

    /* The checksum field of bpf_l3/l4_csum_replace, or an errno. */
    static int ubpf_csum_field(ubpf_pkt *p, uint32_t off, uint8_t **field) {
        if (off > 0xffff || (off & 1))
            return EFAULT;
        if ((uint64_t)off + 2 > ubpf_len(p))
            return EFAULT;
        *field = ubpf_data(p) + off;
        return 0;
    }

    /* 10: long bpf_l3_csum_replace(skb, u32 offset, u64 from, u64 to, u64 flags) */
    static uint64_t ubpf_l3_csum_replace(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint8_t *field;
        uint16_t sum;
        int err;
        if (p == NULL)
            return 0;
        if (r5 & ~UBPF_F_HDR_FIELD_MASK)
            return ubpf_err(EINVAL);
        if ((err = ubpf_csum_field(p, (uint32_t)r2, &field)) != 0)
            return ubpf_err(err);
        memcpy(&sum, field, 2);
        switch (r5 & UBPF_F_HDR_FIELD_MASK) {
        case 0:
            if (r3 != 0)
                return ubpf_err(EINVAL);
            sum = ubpf_csum_replace_by_diff(sum, (uint32_t)r4);
            break;
        case 2:
            sum = ubpf_csum_replace2(sum, (uint16_t)r3, (uint16_t)r4);
            break;
        case 4:
            sum = ubpf_csum_replace4(sum, (uint32_t)r3, (uint32_t)r4);
            break;
        default:
            return ubpf_err(EINVAL);
        }
        memcpy(field, &sum, 2);
        return 0;
    }

    /* 11: long bpf_l4_csum_replace(skb, u32 offset, u64 from, u64 to, u64 flags)
       The field is updated the same way with or without BPF_F_PSEUDO_HDR
       (test-run skbs are never CHECKSUM_PARTIAL); a CHECKSUM_COMPLETE skb's
       csum follows the field's change when a pseudo-header word changed
       (inet_proto_csum_replace4 / _by_diff; not for an IPv6 diff). */
    static uint64_t ubpf_l4_csum_replace(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        int mangled0 = (r5 & UBPF_F_MARK_MANGLED_0) != 0, enforce = (r5 & UBPF_F_MARK_ENFORCE) != 0;
        int pseudo = (r5 & UBPF_F_PSEUDO_HDR) != 0, ipv6 = (r5 & UBPF_F_IPV6) != 0;
        uint8_t *field;
        uint16_t sum;
        int err;
        if (p == NULL)
            return 0;
        if (r5 & ~(UBPF_F_MARK_MANGLED_0 | UBPF_F_MARK_ENFORCE | UBPF_F_PSEUDO_HDR |
                   UBPF_F_HDR_FIELD_MASK | UBPF_F_IPV6))
            return ubpf_err(EINVAL);
        if ((err = ubpf_csum_field(p, (uint32_t)r2, &field)) != 0)
            return ubpf_err(err);
        memcpy(&sum, field, 2);
        if (mangled0 && !enforce && sum == 0)
            return 0;                    /* UDP without a checksum stays without */
        switch (r5 & UBPF_F_HDR_FIELD_MASK) {
        case 0:
            if (r3 != 0)
                return ubpf_err(EINVAL);
            sum = ubpf_csum_replace_by_diff(sum, (uint32_t)r4);
            if (p->csum_complete && pseudo && !ipv6)
                p->csum = ~ubpf_csum_sub((uint32_t)r4, p->csum);
            break;
        case 2:   /* inet_proto_csum_replace2 widens to the 32-bit replace */
        case 4: {
            uint32_t from = (r5 & UBPF_F_HDR_FIELD_MASK) == 2 ? (uint16_t)r3 : (uint32_t)r3;
            uint32_t to = (r5 & UBPF_F_HDR_FIELD_MASK) == 2 ? (uint16_t)r4 : (uint32_t)r4;
            sum = ubpf_csum_replace4(sum, from, to);
            if (p->csum_complete && pseudo)
                p->csum = ~ubpf_csum_add(ubpf_csum_sub(~p->csum, from), to);
            break;
        }
        default:
            return ubpf_err(EINVAL);
        }
        if (mangled0 && sum == 0)
            sum = UBPF_CSUM_MANGLED_0;
        memcpy(field, &sum, 2);
        return 0;
    }

    /* 43: long bpf_skb_change_head(skb, u32 head_room, u64 flags): push
       head_room zero bytes in front; they become the MAC header. */
    static uint64_t ubpf_skb_change_head(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint32_t room = (uint32_t)r2, len, new_len;
        uint64_t net;
        uint8_t *data;
        int err;
        if (p == NULL)
            return 0;
        len = (uint32_t)ubpf_len(p);
        new_len = len + room;
        if (r3 != 0 || new_len > UBPF_SKB_MAX_LEN || new_len < len)
            return ubpf_err(EINVAL);
        net = ubpf_skb_net_off(p);
        err = ubpf_skb_room(p, room, 0);
        if (err == 0) {
            ubpf_skb_cow_head(p, room);
            data = ubpf_data(p) - room;
            memset(data, 0, room);
            ubpf_skb_data_moved(p, -(int64_t)room);
            /* skb_reset_mac_header + skb_reset_mac_len */
            p->l2 = 1;
            p->mac_len = (uint32_t)(net + room);
            ubpf_set_bounds(run, p, data, ubpf_end(p));
        } else {
            ubpf_pkt_sync(run, p);
        }
        return err ? ubpf_err(-err) : 0;
    }

    /* 38: long bpf_skb_change_tail(skb, u32 len, u64 flags): trim, or grow
       with zero bytes. */
    static uint64_t ubpf_skb_change_tail(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint32_t new_len = (uint32_t)r2;
        uint64_t len;
        int err = 0;
        if (p == NULL)
            return 0;
        len = ubpf_len(p);
        if (r3 != 0 || new_len > UBPF_SKB_MAX_LEN || new_len < ubpf_skb_min_len(p))
            return ubpf_err(EINVAL);
        if (*ubpf_skb_state(p) & UBPF_SKB_ENCAP)
            return ubpf_err(UBPF_ENOTSUPP);
        /* __skb_grow_rcsum / __skb_trim_rcsum: a CHECKSUM_COMPLETE skb
           becomes CHECKSUM_NONE (skb->csum stays as it was) */
        if (new_len != len)
            p->csum_complete = 0;
        if (new_len > len) {
            err = ubpf_skb_room(p, 0, new_len - len);
            if (err == 0)
                memset(ubpf_end(p), 0, new_len - len);
        }
        if (err == 0)
            ubpf_set_bounds(run, p, ubpf_data(p), ubpf_data(p) + new_len);
        else
            ubpf_pkt_sync(run, p);
        return err ? ubpf_err(-err) : 0;
    }

    /* 39: long bpf_skb_pull_data(skb, u32 len): the skb is linear already;
       only a length past the packet fails. */
    static uint64_t ubpf_skb_pull_data(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                       uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        if (p == NULL)
            return 0;
        ubpf_pkt_sync(run, p);
        return (uint32_t)r2 > ubpf_len(p) ? ubpf_err(ENOMEM) : 0;
    }

    static uint32_t ubpf_net_base_len(uint16_t proto) {
        return proto == UBPF_ETH_P_IP ? 20 : proto == UBPF_ETH_P_IPV6 ? 40 : 0;
    }

    /* bpf_skb_net_grow: len zero bytes at off (after the MAC or the outer
       network header). */
    static int ubpf_skb_net_grow(ubpf_pkt *p, uint64_t off, uint32_t len, uint64_t flags) {
        uint64_t inner_mac_len = flags >> UBPF_F_ADJ_ROOM_ENCAP_L2_SHIFT;
        uint16_t proto = ubpf_skb_proto(p);
        int encap = (flags & UBPF_F_ADJ_ROOM_ENCAP_L3_MASK) != 0;
        uint8_t *data;
        int err = ubpf_skb_room(p, len, 0);
        if (err)
            return err;
        ubpf_skb_cow_head(p, len);
        if (encap) {
            if ((flags & UBPF_F_ADJ_ROOM_ENCAP_L3_MASK) == UBPF_F_ADJ_ROOM_ENCAP_L3_MASK)
                return -EINVAL;
            if ((flags & UBPF_F_ADJ_ROOM_ENCAP_L4_GRE) && (flags & UBPF_F_ADJ_ROOM_ENCAP_L4_UDP))
                return -EINVAL;
            if ((flags & UBPF_F_ADJ_ROOM_ENCAP_L2_ETH) && inner_mac_len < UBPF_ETH_HLEN)
                return -EINVAL;
            if (*ubpf_skb_state(p) & UBPF_SKB_ENCAP)
                return -EALREADY;
            if (inner_mac_len > len)
                return -EINVAL;
        }
        /* off may pass the packet's end (a trimmed packet); the kernel then
           moves the stale bytes after it. Never past the buffer here. */
        if (off > (uint64_t)(p->buf + p->cap - ubpf_data(p)))
            return -EFAULT;
        data = ubpf_data(p) - len;
        memmove(data, data + len, off);
        memset(data + off, 0, len);
        p->ptrs[UBPF_CTX_PKT] = (uint64_t)(uintptr_t)data;
        /* mac and network headers move with data (mac_len is unchanged); a
           transport header stays (it is never the network header's here) */
        ubpf_skb_data_moved(p, -(int64_t)len);
        if (encap) {
            *ubpf_skb_state(p) |= UBPF_SKB_ENCAP;
            /* a UDP or GRE tunnel header follows the new outer L3 header */
            if (flags & (UBPF_F_ADJ_ROOM_ENCAP_L4_GRE | UBPF_F_ADJ_ROOM_ENCAP_L4_UDP))
                ubpf_skb_set_trans_off(p, p->mac_len +
                                       ((flags & UBPF_F_ADJ_ROOM_ENCAP_L3_IPV6) ? 40 : 20));
            /* skb->protocol follows the new outer L3 header */
            if (proto == UBPF_ETH_P_IP && (flags & UBPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
                ubpf_skb_set_proto(p, UBPF_ETH_P_IPV6);
            else if (proto == UBPF_ETH_P_IPV6 && (flags & UBPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
                ubpf_skb_set_proto(p, UBPF_ETH_P_IP);
        }
        return 0;
    }

    /* bpf_skb_net_shrink: drop len bytes at off. */
    static int ubpf_skb_net_shrink(ubpf_pkt *p, uint64_t off, uint32_t len, uint64_t flags) {
        uint16_t proto = ubpf_skb_proto(p);
        uint8_t *data = ubpf_data(p);
        if (flags & ~(UBPF_F_ADJ_ROOM_FIXED_GSO | UBPF_F_ADJ_ROOM_DECAP_L3_MASK |
                      UBPF_F_ADJ_ROOM_NO_CSUM_RESET))
            return -EINVAL;
        if (off + len > ubpf_len(p))
            return -ENOMEM;
        /* skb_postpull_rcsum of the bytes taken out, summed from their start */
        if (p->csum_complete)
            p->csum = ~ubpf_csum_partial(data + off, len, ~p->csum);
        memmove(data + len, data, off);
        p->ptrs[UBPF_CTX_PKT] = (uint64_t)(uintptr_t)(data + len);
        ubpf_skb_data_moved(p, (int64_t)len);
        if (proto == UBPF_ETH_P_IP && (flags & UBPF_F_ADJ_ROOM_DECAP_L3_IPV6))
            ubpf_skb_set_proto(p, UBPF_ETH_P_IPV6);
        else if (proto == UBPF_ETH_P_IPV6 && (flags & UBPF_F_ADJ_ROOM_DECAP_L3_IPV4))
            ubpf_skb_set_proto(p, UBPF_ETH_P_IP);
        return 0;
    }

    /* 50: long bpf_skb_adjust_room(skb, s32 len_diff, u32 mode, u64 flags) */
    static uint64_t ubpf_skb_adjust_room(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        int32_t diff = (int32_t)r2;
        uint32_t mode = (uint32_t)r3, abs_diff = diff < 0 ? (uint32_t)-(int64_t)diff : (uint32_t)diff;
        uint64_t flags = r4, off, len, len_cur, len_min;
        uint16_t proto;
        int shrink = diff < 0, err;
        if (p == NULL)
            return 0;
        proto = ubpf_skb_proto(p);
        len_min = ubpf_net_base_len(proto);
        if (flags & ~(UBPF_F_ADJ_ROOM_MASK | UBPF_F_ADJ_ROOM_NO_CSUM_RESET))
            return ubpf_err(EINVAL);
        if (abs_diff > 0xfff)
            return ubpf_err(EFAULT);
        if (proto != UBPF_ETH_P_IP && proto != UBPF_ETH_P_IPV6)
            return ubpf_err(UBPF_ENOTSUPP);
        off = p->mac_len;                  /* skb_mac_header_len */
        if (mode == UBPF_ADJ_ROOM_NET)
            off += ubpf_net_base_len(proto);
        else if (mode != UBPF_ADJ_ROOM_MAC)
            return ubpf_err(UBPF_ENOTSUPP);
        if (flags & UBPF_F_ADJ_ROOM_DECAP_L3_MASK) {
            if (!shrink)
                return ubpf_err(EINVAL);
            switch (flags & UBPF_F_ADJ_ROOM_DECAP_L3_MASK) {
            case UBPF_F_ADJ_ROOM_DECAP_L3_IPV4: len_min = 20; break;
            case UBPF_F_ADJ_ROOM_DECAP_L3_IPV6: len_min = 40; break;
            default: return ubpf_err(EINVAL);
            }
        }
        len = ubpf_len(p);
        len_cur = len - ubpf_skb_net_off(p);
        if ((shrink && (abs_diff >= len_cur || len_cur - abs_diff < len_min)) ||
            (!shrink && len + abs_diff > UBPF_SKB_MAX_LEN))
            return ubpf_err(UBPF_ENOTSUPP);
        err = shrink ? ubpf_skb_net_shrink(p, off, abs_diff, flags)
                     : ubpf_skb_net_grow(p, off, abs_diff, flags);
        ubpf_set_bounds(run, p, ubpf_data(p), ubpf_end(p));
        return err ? ubpf_err(-err) : 0;
    }

    /* 46: u64 bpf_get_socket_cookie(skb): the test run's socket's cookie */
    static uint64_t ubpf_get_socket_cookie(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                           uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint64_t *slot;
        if (p == NULL)
            return 0;
        slot = &p->ptrs[UBPF_SKB_COOKIE_SLOT];
        if (*slot == 0)
            *slot = __atomic_add_fetch(&ubpf_cookie_next, 1, __ATOMIC_RELAXED);
        return *slot;
    }

    /* 34: u32 bpf_get_hash_recalc(skb): skb_get_hash */
    static uint64_t ubpf_get_hash_recalc(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        uint32_t hash;
        if (p == NULL)
            return 0;
        if (!(*ubpf_skb_state(p) & UBPF_SKB_HASH_VALID))
            ubpf_skb_set_hash(p, ubpf_flow_hash(p), 1);
        memcpy(&hash, p->uapi + UBPF_SKB_HASH_OFF, 4);
        return hash;
    }

    /* 48: long bpf_set_hash(skb, u32 hash): a software hash, kept until cleared */
    static uint64_t ubpf_set_hash(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                  uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        if (p != NULL)
            ubpf_skb_set_hash(p, (uint32_t)r2, 1);
        return 0;
    }

    /* 41: long bpf_set_hash_invalid(skb): skb_clear_hash (recomputed on demand) */
    static uint64_t ubpf_set_hash_invalid(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                          uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_skb_arg(run, r1);
        if (p != NULL)
            ubpf_skb_set_hash(p, 0, 0);
        return 0;
    }

    /* ---- XDP helpers ------------------------------------------------------- */

    /* 44: long bpf_xdp_adjust_head(xdp_md, int delta): move data (and the
       metadata with it); never into the xdp_frame, never leaving less than
       an Ethernet header. */
    static uint64_t ubpf_xdp_adjust_head(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        int32_t delta = (int32_t)r2;
        uint8_t *data, *meta, *new_data;
        uint64_t metalen;
        if (p == NULL)
            return 0;
        data = ubpf_data(p);
        meta = ubpf_meta(p);
        metalen = (uint64_t)(data - meta);
        new_data = data + delta;
        if (new_data < p->buf + UBPF_XDP_FRAME_SIZE + metalen || new_data > ubpf_end(p) - UBPF_ETH_HLEN)
            return ubpf_err(EINVAL);
        if (metalen)
            memmove(meta + delta, meta, metalen);
        p->ptrs[UBPF_CTX_PKT_META] = (uint64_t)(uintptr_t)(meta + delta);
        p->ptrs[UBPF_CTX_PKT] = (uint64_t)(uintptr_t)new_data;
        ubpf_pkt_sync(run, p);
        return 0;
    }

    /* 54: long bpf_xdp_adjust_meta(xdp_md, int delta) */
    static uint64_t ubpf_xdp_adjust_meta(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        int32_t delta = (int32_t)r2;
        uint8_t *meta;
        uint64_t metalen;
        if (p == NULL)
            return 0;
        meta = ubpf_meta(p) + delta;
        if (meta < p->buf + UBPF_XDP_FRAME_SIZE || meta > ubpf_data(p))
            return ubpf_err(EINVAL);
        metalen = (uint64_t)(ubpf_data(p) - meta);
        if ((metalen & 3) || metalen > UBPF_XDP_META_MAX)
            return ubpf_err(EACCES);
        p->ptrs[UBPF_CTX_PKT_META] = (uint64_t)(uintptr_t)meta;
        ubpf_pkt_sync(run, p);
        return 0;
    }

    /* ---- XDP fragments (multi-buffer xdp_buff) ----------------------------- */

    /* sinfo->xdp_frags_size */
    static inline uint64_t ubpf_xdp_frags_len(const ubpf_pkt *p) {
        uint64_t n = 0;
        uint32_t i;
        for (i = 0; i < p->nr_frags; i++)
            n += p->frag_sizes[i];
        return n;
    }

    /* xdp_get_buff_len: the linear part and the fragments (not the metadata) */
    static inline uint64_t ubpf_xdp_buff_len(const ubpf_pkt *p) {
        return ubpf_len(p) + ubpf_xdp_frags_len(p);
    }

    static inline uint8_t *ubpf_xdp_frag(const ubpf_pkt *p, uint32_t i) {
        return p->frags + (uint64_t)i * p->frag_room;
    }

    /* bpf_xdp_copy_buf: len bytes at off of the whole buffer (linear part,
       then the fragments in order) to mem, or from mem when to_pkt */
    static void ubpf_xdp_copy(const ubpf_pkt *p, uint64_t off, uint8_t *mem, uint64_t len, int to_pkt) {
        uint64_t lin = ubpf_len(p), n;
        uint32_t i;
        if (off < lin) {
            n = len < lin - off ? len : lin - off;
            if (to_pkt)
                memmove(ubpf_data(p) + off, mem, n);
            else
                memmove(mem, ubpf_data(p) + off, n);
            mem += n;
            len -= n;
            off = 0;
        } else {
            off -= lin;
        }
        for (i = 0; i < p->nr_frags && len; i++) {
            uint64_t size = p->frag_sizes[i];
            if (off >= size) {
                off -= size;
                continue;
            }
            n = len < size - off ? len : size - off;
            if (to_pkt)
                memmove(ubpf_xdp_frag(p, i) + off, mem, n);
            else
                memmove(mem, ubpf_xdp_frag(p, i) + off, n);
            mem += n;
            len -= n;
            off = 0;
        }
    }

    /* bpf_xdp_frags_shrink_tail: take offset bytes off the end, releasing
       whole fragments from the last one; what is left when none remains
       comes off the linear part. offset is the negated delta as an int
       (INT_MIN stays negative: nothing is taken). */
    static int ubpf_xdp_frags_shrink_tail(vm_run *run, ubpf_pkt *p, int32_t offset) {
        int64_t i;
        uint32_t released = 0;
        if ((int64_t)offset > (int64_t)(int32_t)(uint32_t)ubpf_xdp_buff_len(p) - UBPF_ETH_HLEN)
            return -EINVAL;
        for (i = (int64_t)p->nr_frags - 1; i >= 0 && offset > 0; i--) {
            uint32_t size = p->frag_sizes[i];
            uint32_t shrink = (uint32_t)offset < size ? (uint32_t)offset : size;
            offset -= (int32_t)shrink;
            p->frag_sizes[i] = size - shrink;
            if (shrink == size)
                released++;          /* the page goes back */
            else
                break;
        }
        p->nr_frags -= released;
        if (p->nr_frags == 0) {      /* a linear buffer again */
            p->ptrs[UBPF_CTX_PKT_END] -= (uint64_t)(int64_t)offset;
            ubpf_pkt_sync(run, p);
        }
        return 0;
    }

    /* bpf_xdp_frags_increase_tail: the last fragment grows (zeroed) within
       its page: the rxq's frag_size less what it holds (fragments start at
       their page's offset 0 in test runs) */
    static int ubpf_xdp_frags_increase_tail(ubpf_pkt *p, int32_t offset) {
        uint32_t last = p->nr_frags - 1, size = p->frag_sizes[last];
        if (p->frag_room == 0)
            return -EOPNOTSUPP;
        if ((int64_t)offset > (int64_t)(p->frag_room - size))
            return -EINVAL;
        memset(ubpf_xdp_frag(p, last) + size, 0, (size_t)offset);
        p->frag_sizes[last] = size + (uint32_t)offset;
        return 0;
    }

    /* 65: long bpf_xdp_adjust_tail(xdp_md, int delta): grown bytes are
       zero; with fragments the last fragment's end moves instead */
    static uint64_t ubpf_xdp_adjust_tail(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        int32_t delta = (int32_t)r2;
        uint8_t *end, *new_end;
        int err;
        if (p == NULL)
            return 0;
        if (p->nr_frags) {
            err = delta < 0 ? ubpf_xdp_frags_shrink_tail(run, p, (int32_t)(0u - (uint32_t)delta))
                            : ubpf_xdp_frags_increase_tail(p, delta);
            return err ? ubpf_err(-err) : 0;
        }
        end = ubpf_end(p);
        new_end = end + delta;
        if (new_end > ubpf_hard_end(p) || new_end < ubpf_data(p) + UBPF_ETH_HLEN)
            return ubpf_err(EINVAL);
        if (delta > 0)
            memset(end, 0, (size_t)delta);
        p->ptrs[UBPF_CTX_PKT_END] = (uint64_t)(uintptr_t)new_end;
        ubpf_pkt_sync(run, p);
        return 0;
    }

    /* bpf_xdp_pointer's checks: 0 or an errno */
    static int ubpf_xdp_span(const ubpf_pkt *p, uint32_t off, uint32_t len) {
        if (off > 0xffff || len > 0xffff)
            return EFAULT;
        if ((uint64_t)off + len > ubpf_xdp_buff_len(p))
            return EINVAL;
        return 0;
    }

    /* 189: long bpf_xdp_load_bytes(xdp_md, u32 offset, void *buf, u32 len) */
    static uint64_t ubpf_xdp_load_bytes(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                        uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        uint32_t off = (uint32_t)r2, len = (uint32_t)r4;
        int err;
        if (p == NULL)
            return 0;
        if (!vm_access_ok(run, r3, len, 1))
            return ubpf_pkt_bad_ptr(run, r3, len, 1);
        if ((err = ubpf_xdp_span(p, off, len)) != 0)
            return ubpf_err(err);
        ubpf_xdp_copy(p, off, (uint8_t *)(uintptr_t)r3, len, 0);
        return 0;
    }

    /* 190: long bpf_xdp_store_bytes(xdp_md, u32 offset, void *buf, u32 len) */
    static uint64_t ubpf_xdp_store_bytes(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                         uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        uint32_t off = (uint32_t)r2, len = (uint32_t)r4;
        int err;
        if (p == NULL)
            return 0;
        if (!vm_access_ok(run, r3, len, 0))
            return ubpf_pkt_bad_ptr(run, r3, len, 0);
        if ((err = ubpf_xdp_span(p, off, len)) != 0)
            return ubpf_err(err);
        ubpf_xdp_copy(p, off, (uint8_t *)(uintptr_t)r3, len, 1);
        return 0;
    }

    /* 188: u64 bpf_xdp_get_buff_len(xdp_md) */
    static uint64_t ubpf_xdp_get_buff_len(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                          uint64_t r5, vm_run *run, void *d) {
        ubpf_pkt *p = ubpf_pkt_arg(run, r1, UBPF_PKT_XDP);
        return p == NULL ? 0 : ubpf_xdp_buff_len(p);
    }

    /* ---- redirects: the verdicts only (targets come with devices) --------- */

    /* 23: long bpf_redirect(u32 ifindex, u64 flags): XDP's and tc's variants
       share the id; the run's packet kind picks one. */
    static uint64_t ubpf_redirect(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                  uint64_t r5, vm_run *run, void *d) {
        const ubpf_pkt *p = (const ubpf_pkt *)run->pkt_state;
        if (p != NULL && p->kind == UBPF_PKT_XDP)
            return r2 ? UBPF_XDP_ABORTED : UBPF_XDP_REDIRECT;
        return (r2 & ~UBPF_F_INGRESS) ? UBPF_TC_ACT_SHOT : UBPF_TC_ACT_REDIRECT;
    }

    /* 51: long bpf_redirect_map(map, u64 key, u64 flags): XDP_REDIRECT when
       the map holds the key (or BPF_F_BROADCAST for device maps), else the
       low flag bits as the XDP action. */
    static uint64_t ubpf_redirect_map(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                      uint64_t r5, vm_run *run, void *d) {
        ubpf_map *m = vm_map_arg(run, r1);
        uint64_t allowed = UBPF_XDP_ACTION_MASK;
        uint32_t key = (uint32_t)r2;
        void *target = NULL;
        int redirect_map = m != NULL && (m->map_type == UBPF_MAP_DEVMAP || m->map_type == UBPF_MAP_DEVMAP_HASH
                                         || m->map_type == UBPF_MAP_CPUMAP || m->map_type == UBPF_MAP_XSKMAP);
        if (!redirect_map) {          /* the verifier allows only these map types */
            run->status = VM_STATUS_ERR_MAP_ARG;
            run->err_addr = r1;
            return 0;
        }
        if (m->map_type == UBPF_MAP_DEVMAP || m->map_type == UBPF_MAP_DEVMAP_HASH)
            allowed |= UBPF_F_BROADCAST | UBPF_F_EXCLUDE_INGRESS;
        if (r3 & ~allowed)
            return UBPF_XDP_ABORTED;
        if (m->ops != NULL && m->ops->lookup != NULL && key < m->max_entries)
            target = m->ops->lookup(m, &key, run->cpu);
        if (target == NULL && !(r3 & UBPF_F_BROADCAST))
            return r3 & UBPF_XDP_ACTION_MASK;
        return UBPF_XDP_REDIRECT;
    }
    """
    uint64_t ubpf_skb_load_bytes(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_skb_store_bytes(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_l3_csum_replace(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_l4_csum_replace(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_skb_change_head(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_skb_change_tail(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_skb_pull_data(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_skb_adjust_room(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_get_socket_cookie(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_get_hash_recalc(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_set_hash(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_set_hash_invalid(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_adjust_head(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_adjust_meta(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_adjust_tail(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_load_bytes(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_store_bytes(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_xdp_get_buff_len(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_redirect(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil
    uint64_t ubpf_redirect_map(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm_run *, void *) noexcept nogil


# The packet helpers by the kernel's ids (enum bpf_func_id).
PKT_HELPERS = {
    9: _capsule(ubpf_skb_store_bytes),
    10: _capsule(ubpf_l3_csum_replace),
    11: _capsule(ubpf_l4_csum_replace),
    23: _capsule(ubpf_redirect),
    26: _capsule(ubpf_skb_load_bytes),
    34: _capsule(ubpf_get_hash_recalc),
    38: _capsule(ubpf_skb_change_tail),
    39: _capsule(ubpf_skb_pull_data),
    41: _capsule(ubpf_set_hash_invalid),
    43: _capsule(ubpf_skb_change_head),
    44: _capsule(ubpf_xdp_adjust_head),
    46: _capsule(ubpf_get_socket_cookie),
    48: _capsule(ubpf_set_hash),
    50: _capsule(ubpf_skb_adjust_room),
    51: _capsule(ubpf_redirect_map),
    54: _capsule(ubpf_xdp_adjust_meta),
    65: _capsule(ubpf_xdp_adjust_tail),
    188: _capsule(ubpf_xdp_get_buff_len),
    189: _capsule(ubpf_xdp_load_bytes),
    190: _capsule(ubpf_xdp_store_bytes),
}
