# An XDP firewall, run through BPF_PROG_TEST_RUN: counts packets per IP
# protocol in an ARRAY map (map[fd:1], 256 u64 slots), drops TCP packets
# whose destination port is a key of a HASH map (map[fd:2], u32 -> u8), and
# routes the rest: the IPv4 TTL goes down by one and the header checksum is
# patched incrementally (as the kernel's ip_decrease_ttl). Returns XDP_DROP (1)
# or XDP_PASS (2); the packet is read through ctx->data / ctx->data_end.
    r6 = r1
    r7 = *(u32 *)(r6 + 0)           # ctx->data: a real packet pointer
    r8 = *(u32 *)(r6 + 4)           # ctx->data_end
    r0 = 2                          # XDP_PASS
    r1 = r7
    r1 += 34                        # Ethernet (14) + minimal IPv4 (20)
    if r1 > r8 goto out
    r1 = *(u16 *)(r7 + 12)
    r1 = be16 r1
    if r1 != 0x800 goto out         # not IPv4: pass untouched
    r9 = *(u8 *)(r7 + 23)           # IP protocol
    *(u32 *)(r10 - 4) = r9
    r1 = map[fd:1] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto proto_done
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
proto_done:
    if r9 != 6 goto route           # only TCP is filtered
    r1 = *(u8 *)(r7 + 14)
    r1 &= 0xf
    r1 <<= 2                        # IPv4 header length
    r2 = r7
    r2 += r1
    r3 = r2
    r3 += 18                        # Ethernet + IP header + TCP ports
    if r3 > r8 goto drop
    r1 = *(u16 *)(r2 + 16)          # TCP destination port
    r1 = be16 r1
    *(u32 *)(r10 - 8) = r1
    r1 = map[fd:2] ll
    r2 = r10
    r2 += -8
    call bpf_map_lookup_elem
    if r0 != 0 goto drop
route:
    r1 = *(u8 *)(r7 + 22)           # TTL
    if r1 <= 1 goto drop
    r1 -= 1
    *(u8 *)(r7 + 22) = r1
    r1 = *(u16 *)(r7 + 24)          # header checksum, as stored
    r1 = be16 r1
    r1 += 0x100                     # one's complement add of htons(0x0100)
    r2 = r1
    r2 >>= 16
    r1 += r2
    r1 = be16 r1
    *(u16 *)(r7 + 24) = r1
    r0 = 2
    goto out
drop:
    r0 = 1                          # XDP_DROP
out:
    exit
