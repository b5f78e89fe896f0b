# BPF_MAP_TYPE_BLOOM_FILTER.
#
# A bit array of nr_bits (a power of two) and nr_hashes seeded hashes, sized
# and hashed exactly as the kernel's bloom_filter.c so that, with
# BPF_F_ZERO_SEED, a userbpf filter and a kernel one answer every query the
# same way. The element is the map's value (key_size 0): push sets the
# element's bits, peek answers 0 (maybe present) or -ENOENT (definitely
# absent). Elements cannot be removed or listed. Bits are set with atomic
# ORs, so concurrent programs need no lock; a peek racing a push may miss
# that push's bits, as in the kernel.

cdef enum:
    BLOOM_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ZERO_SEED | BPF_F_ACCESS_MASK
    BLOOM_DEFAULT_HASHES = 5        # when map_extra's low 4 bits are 0
    JHASH_INITVAL = 0xdeadbeef


cdef extern from *:
    """
    static inline void ubpf_bloom_set_bit(uint64_t *words, uint32_t bit) {
        __atomic_fetch_or(&words[bit >> 6], (uint64_t)1 << (bit & 63), __ATOMIC_RELAXED);
    }
    static inline int ubpf_bloom_test_bit(const uint64_t *words, uint32_t bit) {
        return (__atomic_load_n(&words[bit >> 6], __ATOMIC_RELAXED) >> (bit & 63)) & 1;
    }
    """
    void ubpf_bloom_set_bit(uint64_t *words, uint32_t bit) nogil
    int ubpf_bloom_test_bit(const uint64_t *words, uint32_t bit) nogil


cdef struct bloom_impl:
    uint64_t *bits
    uint32_t mask             # nr_bits - 1
    uint32_t seed
    uint32_t nr_hashes
    uint32_t words32          # value_size / 4 when a multiple of 4, else 0


# -- Bob Jenkins' lookup3 hash, as the kernel's jhash() / jhash2() ----------

cdef struct _jh:
    uint32_t a, b, c


cdef inline uint32_t _rol32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))


cdef inline void _jh_mix(_jh *s) noexcept nogil:
    s.a -= s.c; s.a ^= _rol32(s.c, 4);  s.c += s.b
    s.b -= s.a; s.b ^= _rol32(s.a, 6);  s.a += s.c
    s.c -= s.b; s.c ^= _rol32(s.b, 8);  s.b += s.a
    s.a -= s.c; s.a ^= _rol32(s.c, 16); s.c += s.b
    s.b -= s.a; s.b ^= _rol32(s.a, 19); s.a += s.c
    s.c -= s.b; s.c ^= _rol32(s.b, 4);  s.b += s.a


cdef inline void _jh_final(_jh *s) noexcept nogil:
    s.c ^= s.b; s.c -= _rol32(s.b, 14)
    s.a ^= s.c; s.a -= _rol32(s.c, 11)
    s.b ^= s.a; s.b -= _rol32(s.a, 25)
    s.c ^= s.b; s.c -= _rol32(s.b, 16)
    s.a ^= s.c; s.a -= _rol32(s.c, 4)
    s.b ^= s.a; s.b -= _rol32(s.a, 14)
    s.c ^= s.b; s.c -= _rol32(s.b, 24)


cdef inline uint32_t _load32(const uint8_t *p) noexcept nogil:
    cdef uint32_t w
    memcpy(&w, p, 4)            # host order, as the kernel's unaligned cpu32 loads
    return w


cdef uint32_t jhash_bytes(const uint8_t *k, uint32_t length, uint32_t initval) noexcept nogil:
    """jhash(): any length; the last 1..12 bytes are added little-endian."""
    cdef _jh s
    cdef uint32_t tail[3]
    cdef uint32_t i
    s.a = s.b = s.c = JHASH_INITVAL + length + initval
    while length > 12:
        s.a += _load32(k)
        s.b += _load32(k + 4)
        s.c += _load32(k + 8)
        _jh_mix(&s)
        length -= 12
        k += 12
    if length == 0:
        return s.c
    tail[0] = tail[1] = tail[2] = 0
    for i in range(length):
        tail[i >> 2] += (<uint32_t>k[i]) << ((i & 3) * 8)
    s.a += tail[0]
    s.b += tail[1]
    s.c += tail[2]
    _jh_final(&s)
    return s.c


cdef uint32_t jhash_words(const uint8_t *k, uint32_t nwords, uint32_t initval) noexcept nogil:
    """jhash2(): an array of host-order u32 words."""
    cdef _jh s
    s.a = s.b = s.c = JHASH_INITVAL + (nwords << 2) + initval
    while nwords > 3:
        s.a += _load32(k)
        s.b += _load32(k + 4)
        s.c += _load32(k + 8)
        _jh_mix(&s)
        nwords -= 3
        k += 12
    if nwords == 0:
        return s.c
    if nwords == 3:
        s.c += _load32(k + 8)
    if nwords >= 2:
        s.b += _load32(k + 4)
    s.a += _load32(k)
    _jh_final(&s)
    return s.c


cdef inline uint32_t _bloom_bit(const ubpf_map *m, const bloom_impl *b, const void *value,
                                uint32_t index) noexcept nogil:
    """Bit number of hash function `index` for value (the kernel's hash())."""
    cdef uint32_t h
    if b.words32:
        h = jhash_words(<const uint8_t *>value, b.words32, b.seed + index)
    else:
        h = jhash_bytes(<const uint8_t *>value, m.value_size, b.seed + index)
    return h & b.mask


cdef long bloom_push(ubpf_map *m, const void *value, uint64_t flags) noexcept nogil:
    cdef bloom_impl *b = <bloom_impl *>m.impl
    cdef uint32_t i
    if flags != BPF_ANY:
        return -EINVAL
    for i in range(b.nr_hashes):
        ubpf_bloom_set_bit(b.bits, _bloom_bit(m, b, value, i))
    return 0


cdef long bloom_peek(ubpf_map *m, void *value) noexcept nogil:
    """0: maybe present; -ENOENT: definitely absent. `value` is only read."""
    cdef bloom_impl *b = <bloom_impl *>m.impl
    cdef uint32_t i
    for i in range(b.nr_hashes):
        if not ubpf_bloom_test_bit(b.bits, _bloom_bit(m, b, value, i)):
            return -ENOENT
    return 0


cdef long bloom_pop(ubpf_map *m, void *value) noexcept nogil:
    return -EOPNOTSUPP


cdef void *bloom_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    return NULL                 # programs use bpf_map_peek_elem


cdef long bloom_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                       uint32_t cpu) noexcept nogil:
    return -EINVAL              # programs use bpf_map_push_elem


cdef long bloom_delete(ubpf_map *m, const void *key) noexcept nogil:
    return -EOPNOTSUPP


cdef long bloom_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    return -EOPNOTSUPP


# bpf() commands: LOOKUP = peek of the value user space passes in, UPDATE =
# push; LOOKUP_AND_DELETE is not one of the types the syscall serves, so it
# answers the kernel's internal ENOTSUPP (524) as the kernel does.
cdef long bloom_sys_lookup(ubpf_map *m, const void *key, void *value,
                           uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return bloom_peek(m, value)


cdef long bloom_sys_update(ubpf_map *m, const void *key, const void *value,
                           uint64_t flags) noexcept nogil:
    return bloom_push(m, value, flags)


cdef long bloom_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                      uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return -ENOTSUPP


cdef void bloom_destroy(ubpf_map *m) noexcept nogil:
    cdef bloom_impl *b = <bloom_impl *>m.impl
    if b != NULL:
        free(b.bits)
        free(b)
    m.impl = NULL


cdef ubpf_map_ops BLOOM_OPS
BLOOM_OPS.lookup = bloom_lookup
BLOOM_OPS.update = bloom_update
BLOOM_OPS.delete_elem = bloom_delete
BLOOM_OPS.push = bloom_push
BLOOM_OPS.pop = bloom_pop
BLOOM_OPS.peek = bloom_peek
BLOOM_OPS.sys_lookup = bloom_sys_lookup
BLOOM_OPS.sys_update = bloom_sys_update
BLOOM_OPS.sys_lookup_and_delete = bloom_sys_lookup_and_delete
BLOOM_OPS.get_next_key = bloom_get_next_key
BLOOM_OPS.destroy = bloom_destroy


cdef uint32_t bloom_mask(uint32_t max_entries, uint32_t nr_hashes) noexcept nogil:
    """nr_bits - 1 for the kernel's sizing: max_entries * nr_hashes / ln 2
    (computed as * 7 / 5 in u32, so the division comes first), at least 64,
    rounded up to a power of two; past 2**31 bits, or on u32 overflow, the
    array has 2**32 bits."""
    cdef uint64_t n = <uint64_t>max_entries * nr_hashes
    cdef uint64_t p = 64
    if n > 0xffffffffULL:
        return 0xffffffffU
    n = (n // 5) * 7
    if n > (1ULL << 31):        # also catches the u32 overflow of * 7
        return 0xffffffffU
    while p < n:
        p <<= 1
    return <uint32_t>(p - 1)


cdef int bloom_init(ubpf_map *m, uint64_t map_extra, uint32_t seed) except -1:
    """The kernel's bloom_map_alloc checks: EINVAL for a key, an empty value,
    no entries, an unknown flag or map_extra bits above the low 4."""
    cdef bloom_impl *b
    cdef uint64_t nwords
    if m.key_size != 0 or m.value_size == 0 or m.max_entries == 0 or \
            m.map_flags & ~BLOOM_CREATE_FLAG_MASK or map_extra & ~(<uint64_t>0xF):
        raise OSError(EINVAL, "bloom filters need key_size 0, value_size > 0, "
                              "max_entries > 0, map_extra < 16 and no unknown flag")
    b = <bloom_impl *>calloc(1, sizeof(bloom_impl))
    if b == NULL:
        raise MemoryError()
    m.impl = b
    m.ops = &BLOOM_OPS
    b.nr_hashes = <uint32_t>map_extra if map_extra else BLOOM_DEFAULT_HASHES
    b.mask = bloom_mask(m.max_entries, b.nr_hashes)
    b.seed = 0 if m.map_flags & BPF_F_ZERO_SEED else seed
    b.words32 = m.value_size // 4 if m.value_size % 4 == 0 else 0
    nwords = (<uint64_t>b.mask >> 6) + 1
    b.bits = <uint64_t *>calloc(nwords, 8)
    if b.bits == NULL:
        raise MemoryError()
    return 0
