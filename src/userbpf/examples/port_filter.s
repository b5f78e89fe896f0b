# A packet filter: accept (1) TCP/IPv4 packets to port 22, 80 or 443, drop (0)
# everything else. r1 = packet, r2 = its length. Every read is bounds-checked.
    r0 = 0
    if r2 < 34 goto out             # Ethernet (14) + minimal IPv4 (20)
    r3 = *(u16 *)(r1 + 12)          # EtherType, network byte order
    r3 = be16 r3
    if r3 != 0x800 goto out
    r3 = *(u8 *)(r1 + 14)           # version and IHL
    r4 = r3
    r4 >>= 4
    if r4 != 4 goto out
    r3 &= 0xf
    r3 <<= 2                        # IPv4 header length in bytes
    if r3 < 20 goto out
    r4 = *(u8 *)(r1 + 23)           # protocol
    if r4 != 6 goto out
    r5 = r3
    r5 += 34                        # end of the fixed TCP header
    if r5 > r2 goto out
    r5 = r1
    r5 += r3
    r6 = *(u16 *)(r5 + 16)          # TCP destination port (14 + 2)
    r6 = be16 r6
    if r6 == 22 goto accept
    if r6 == 80 goto accept
    if r6 == 443 goto accept
    goto out
accept:
    r0 = 1
out:
    exit
