# Count TCP packets per destination port in a HASH map (u32 port -> u64 count)
# whose fd is 3: the first packet to a port inserts it (BPF_NOEXIST), later
# ones add 1 atomically through the value pointer bpf_map_lookup_elem returns.
# r1 = packet (Ethernet + IPv4 without options + TCP), r2 = its length.
    r0 = 0
    if r2 < 38 goto out
    r6 = *(u16 *)(r1 + 36)          # TCP destination port, network order
    r6 = be16 r6
    *(u32 *)(r10 - 4) = r6
    r1 = map[fd:3] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto first
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
    r0 = 1
    exit
first:
    r1 = 1
    *(u64 *)(r10 - 16) = r1
    r1 = map[fd:3] ll
    r2 = r10
    r2 += -4
    r3 = r10
    r3 += -16
    r4 = 1                          # BPF_NOEXIST
    call bpf_map_update_elem
    r0 = 1
out:
    exit
