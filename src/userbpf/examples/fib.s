# Fibonacci in a bpf-to-bpf subprogram: n is the first byte of memory.
    r1 = *(u8 *)(r1 + 0)
    call local fib
    exit
fib:
    r0 = 0
    r2 = 1
    if r1 == 0 goto done
next:
    r3 = r0
    r3 += r2
    r0 = r2
    r2 = r3
    r1 -= 1
    if r1 != 0 goto next
done:
    exit
