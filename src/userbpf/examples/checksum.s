# The Internet checksum (RFC 1071) of the whole buffer: r1 = data, r2 = length.
    r3 = 0                          # running sum
    r4 = 0                          # offset
loop:
    r5 = r4
    r5 += 1
    if r5 >= r2 goto tail           # fewer than two bytes left
    r6 = r1
    r6 += r4
    r7 = *(u8 *)(r6 + 0)
    r7 <<= 8
    r8 = *(u8 *)(r6 + 1)
    r7 |= r8
    r3 += r7
    r4 += 2
    goto loop
tail:
    if r4 >= r2 goto fold           # an odd last byte is padded with zero
    r6 = r1
    r6 += r4
    r7 = *(u8 *)(r6 + 0)
    r7 <<= 8
    r3 += r7
fold:
    r0 = r3
    r0 >>= 16
    r3 &= 0xffff
    r3 += r0
    r0 = r3
    r0 >>= 16
    r3 += r0
    r3 &= 0xffff
    r3 ^= 0xffff
    r0 = r3
    exit
