# BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_PERCPU_HASH.
#
# Elements are numbered 0..max_entries-1 and stored in chunks of parallel
# arrays (next link, hash, key, value). A preallocated map (the default) has
# one chunk holding every element, so its values are one contiguous region;
# BPF_F_NO_PREALLOC allocates chunks as elements are first needed. Chunks are
# only freed with the map, so a value pointer a program holds stays valid
# memory while its element lives (and harmlessly stale after, as the kernel's
# RCU-delayed free). Buckets are singly linked lists of element numbers + 1
# (0 ends a list), each guarded by its own spinlock.

cdef struct hash_chunk:
    uint32_t *next
    uint32_t *hash
    uint8_t *keys
    uint8_t *values


cdef struct hash_impl:
    uint32_t nbuckets             # a power of two
    uint32_t *heads
    ubpf_spinlock *locks
    hash_chunk *chunks
    uint32_t chunk_elems
    uint32_t nchunks              # chunks allocated so far
    uint32_t fresh                # elements never used yet start here
    uint32_t *free_stack          # recycled element numbers
    uint32_t nfree
    ubpf_spinlock alloc_lock
    uint32_t count
    uint32_t stride
    uint32_t elem_bytes           # value bytes per element (all CPUs)
    bint percpu
    uint64_t seed


cdef inline uint64_t _hash_bytes(const uint8_t *p, uint32_t n, uint64_t seed) noexcept nogil:
    cdef uint64_t h = seed ^ (<uint64_t>n * 0x9E3779B97F4A7C15ULL)
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
        h ^= h >> 32
        p += 8
        n -= 8
    if n:
        w = 0
        memcpy(&w, p, n)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
    h ^= h >> 29
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 32
    return h


cdef inline hash_chunk *_chunk(hash_impl *t, uint32_t e) noexcept nogil:
    return &t.chunks[e // t.chunk_elems]


cdef inline uint8_t *_hkey(ubpf_map *m, hash_impl *t, uint32_t e) noexcept nogil:
    return _chunk(t, e).keys + <uint64_t>(e % t.chunk_elems) * m.key_size


cdef inline uint8_t *_hvalue(hash_impl *t, uint32_t e, uint32_t cpu) noexcept nogil:
    return _chunk(t, e).values + <uint64_t>(e % t.chunk_elems) * t.elem_bytes + \
        <uint64_t>cpu * t.stride


cdef inline uint32_t *_hnext(hash_impl *t, uint32_t e) noexcept nogil:
    return &_chunk(t, e).next[e % t.chunk_elems]


cdef int _hash_alloc_chunk(hash_impl *t, ubpf_map *m) noexcept nogil:
    """Allocate chunk number t.nchunks. Returns 0, or -ENOMEM."""
    cdef hash_chunk *c = &t.chunks[t.nchunks]
    cdef uint64_t n = t.chunk_elems
    c.next = <uint32_t *>calloc(n, sizeof(uint32_t))
    c.hash = <uint32_t *>calloc(n, sizeof(uint32_t))
    c.keys = <uint8_t *>calloc(n * m.key_size, 1)
    c.values = <uint8_t *>calloc(n * t.elem_bytes if n * t.elem_bytes else 1, 1)
    if c.next == NULL or c.hash == NULL or c.keys == NULL or c.values == NULL:
        free(c.next)
        free(c.hash)
        free(c.keys)
        free(c.values)
        memset(c, 0, sizeof(hash_chunk))
        return -ENOMEM
    t.nchunks += 1
    return 0


cdef long _hash_new_elem(ubpf_map *m, hash_impl *t, uint32_t *out) noexcept nogil:
    """Take a free element number. -E2BIG when the map is full."""
    cdef long err = 0
    ubpf_spin_lock(&t.alloc_lock)
    if t.nfree:
        t.nfree -= 1
        out[0] = t.free_stack[t.nfree]
    elif t.fresh < m.max_entries:
        if t.fresh // t.chunk_elems >= t.nchunks:
            err = _hash_alloc_chunk(t, m)
        if not err:
            out[0] = t.fresh
            t.fresh += 1
    else:
        err = -E2BIG
    if not err:
        t.count += 1
    ubpf_spin_unlock(&t.alloc_lock)
    return err


cdef void _hash_free_elem(hash_impl *t, uint32_t e) noexcept nogil:
    ubpf_spin_lock(&t.alloc_lock)
    t.free_stack[t.nfree] = e
    t.nfree += 1
    t.count -= 1
    ubpf_spin_unlock(&t.alloc_lock)


cdef inline uint32_t _hash_find(ubpf_map *m, hash_impl *t, uint32_t b, uint32_t h,
                                const void *key, uint32_t **link) noexcept nogil:
    """Element number + 1 of key in bucket b (0 if absent); *link is the slot
    pointing at it (for unlinking). Call with the bucket locked."""
    cdef uint32_t *slot = &t.heads[b]
    cdef uint32_t cur = slot[0]
    while cur:
        if _chunk(t, cur - 1).hash[(cur - 1) % t.chunk_elems] == h and \
                memcmp(_hkey(m, t, cur - 1), key, m.key_size) == 0:
            if link != NULL:
                link[0] = slot
            return cur
        slot = _hnext(t, cur - 1)
        cur = slot[0]
    return 0


cdef inline void _hash_store_value(ubpf_map *m, hash_impl *t, uint32_t e, const void *value,
                                   uint32_t cpu, bint allcpus, bint fresh) noexcept nogil:
    """Write an update's value into element e. allcpus: value holds ncpus
    values of stride bytes (user space); otherwise one value for `cpu` (a
    program), and a program's new per-CPU element is zero on the other CPUs."""
    cdef uint32_t c
    if not t.percpu:
        memcpy(_hvalue(t, e, 0), value, m.value_size)
    elif allcpus:
        for c in range(m.ncpus):
            # whole slots, padding too (the kernel's copy_map_value_long)
            memcpy(_hvalue(t, e, c), <const uint8_t *>value + c * t.stride, t.stride)
    else:
        if fresh:
            memset(_hvalue(t, e, 0), 0, t.elem_bytes)
        memcpy(_hvalue(t, e, cpu), value, m.value_size)


cdef inline void _hash_copy_out(ubpf_map *m, hash_impl *t, uint32_t e, void *out) noexcept nogil:
    """Element e's value as user space sees it (every CPU's, stride apart)."""
    cdef uint32_t c
    if t.percpu:
        for c in range(m.ncpus):
            memcpy(<uint8_t *>out + c * t.stride, _hvalue(t, e, c), t.stride)
    else:
        memcpy(out, _hvalue(t, e, 0), m.value_size)


cdef void *hash_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e
    if t.percpu and cpu >= m.ncpus:     # run(cpu=...) beyond the map's CPUs
        return NULL
    ubpf_spin_lock(&t.locks[b])
    e = _hash_find(m, t, b, h, key, NULL)
    ubpf_spin_unlock(&t.locks[b])
    if not e:
        return NULL
    return _hvalue(t, e - 1, cpu if t.percpu else 0)


cdef long _hash_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                       uint32_t cpu, bint allcpus) noexcept nogil:
    """allcpus: value holds ncpus values of stride bytes (user space);
    otherwise one value for `cpu` (a program)."""
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e
    cdef long err
    cdef bint fresh = False
    if (flags & ~BPF_F_LOCK) > BPF_EXIST or (flags & BPF_F_LOCK):
        return -EINVAL
    if t.percpu and not allcpus and cpu >= m.ncpus:    # would write past the element
        return -EINVAL
    ubpf_spin_lock(&t.locks[b])
    e = _hash_find(m, t, b, h, key, NULL)
    if e and flags == BPF_NOEXIST:
        ubpf_spin_unlock(&t.locks[b])
        return -EEXIST
    if not e:
        if flags == BPF_EXIST:
            ubpf_spin_unlock(&t.locks[b])
            return -ENOENT
        err = _hash_new_elem(m, t, &e)
        if err:
            ubpf_spin_unlock(&t.locks[b])
            return err
        e += 1
        fresh = True
        memcpy(_hkey(m, t, e - 1), key, m.key_size)
        _chunk(t, e - 1).hash[(e - 1) % t.chunk_elems] = h
    _hash_store_value(m, t, e - 1, value, cpu, allcpus, fresh)
    if fresh:           # link last, once the element is complete
        _hnext(t, e - 1)[0] = t.heads[b]
        t.heads[b] = e
    ubpf_spin_unlock(&t.locks[b])
    return 0


cdef long hash_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                      uint32_t cpu) noexcept nogil:
    return _hash_update(m, key, value, flags, cpu, False)


cdef long hash_sys_update(ubpf_map *m, const void *key, const void *value,
                          uint64_t flags) noexcept nogil:
    return _hash_update(m, key, value, flags, 0, True)


cdef long _hash_delete(ubpf_map *m, const void *key, void *value_out) noexcept nogil:
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t *link = NULL
    cdef uint32_t e
    ubpf_spin_lock(&t.locks[b])
    e = _hash_find(m, t, b, h, key, &link)
    if not e:
        ubpf_spin_unlock(&t.locks[b])
        return -ENOENT
    if value_out != NULL:
        _hash_copy_out(m, t, e - 1, value_out)
    link[0] = _hnext(t, e - 1)[0]
    ubpf_spin_unlock(&t.locks[b])
    _hash_free_elem(t, e - 1)
    return 0


cdef long hash_delete(ubpf_map *m, const void *key) noexcept nogil:
    return _hash_delete(m, key, NULL)


cdef long hash_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                     uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return _hash_delete(m, key, value)


cdef long hash_sys_lookup(ubpf_map *m, const void *key, void *value,
                          uint64_t flags) noexcept nogil:
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e
    if flags:
        return -EINVAL
    ubpf_spin_lock(&t.locks[b])
    e = _hash_find(m, t, b, h, key, NULL)
    if e:
        _hash_copy_out(m, t, e - 1, value)
    ubpf_spin_unlock(&t.locks[b])
    return 0 if e else -ENOENT


cdef long hash_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    """The kernel's order: the rest of key's bucket list, then the following
    buckets; a missing or absent key starts from the first bucket."""
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t h, b = 0, e = 0
    if key != NULL:
        h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
        b = h & (t.nbuckets - 1)
        ubpf_spin_lock(&t.locks[b])
        e = _hash_find(m, t, b, h, key, NULL)
        if e:
            e = _hnext(t, e - 1)[0]
            if e:
                memcpy(next_key, _hkey(m, t, e - 1), m.key_size)
            ubpf_spin_unlock(&t.locks[b])
            if e:
                return 0
            b += 1
        else:
            ubpf_spin_unlock(&t.locks[b])
            b = 0
    while b < t.nbuckets:
        ubpf_spin_lock(&t.locks[b])
        e = t.heads[b]
        if e:
            memcpy(next_key, _hkey(m, t, e - 1), m.key_size)
        ubpf_spin_unlock(&t.locks[b])
        if e:
            return 0
        b += 1
    return -ENOENT


cdef int hash_contains(const ubpf_map *m, uint64_t addr, uint64_t size) noexcept nogil:
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t i
    cdef uint64_t start, length = <uint64_t>t.chunk_elems * t.elem_bytes, rel
    for i in range(t.nchunks):
        start = <uint64_t>t.chunks[i].values
        rel = addr - start
        if rel < length and length - rel >= size:
            return 1
    return 0


cdef void hash_destroy(ubpf_map *m) noexcept nogil:
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t i
    if t != NULL:
        if t.chunks != NULL:
            for i in range(t.nchunks):
                free(t.chunks[i].next)
                free(t.chunks[i].hash)
                free(t.chunks[i].keys)
                free(t.chunks[i].values)
        free(t.chunks)
        free(t.heads)
        free(t.locks)
        free(t.free_stack)
        free(t)
    m.impl = NULL
    m.region = NULL


cdef extern from *:
    """
    static inline uint32_t _load_u32(const uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);   /* racing writers: no torn reads */
    }
    """
    uint32_t _load_u32(const uint32_t *p) noexcept nogil


cdef long hash_for_each(ubpf_map *m, uint32_t cpu, ubpf_elem_fn fn,
                        void *arg) noexcept nogil:
    """bpf_for_each_map_elem over a hash: buckets in order, each list in order.

    No bucket lock is held while fn runs (it may update or delete in this
    map, as in the kernel, which walks under RCU only). Element memory is
    never freed before the map, so a concurrent change can at worst make
    the walk skip or repeat an element; each list walk is bounded so a
    recycled link can never make it loop forever."""
    cdef hash_impl *t = <hash_impl *>m.impl
    cdef uint32_t b, e, steps
    cdef long n = 0
    if cpu >= m.ncpus:
        return -EINVAL
    for b in range(t.nbuckets):
        e = _load_u32(&t.heads[b])
        steps = 0
        while e and steps <= m.max_entries:
            n += 1
            if fn(arg, _hkey(m, t, e - 1), _hvalue(t, e - 1, cpu if t.percpu else 0)):
                return n
            e = _load_u32(_hnext(t, e - 1))
            steps += 1
    return n


cdef ubpf_map_ops HASH_OPS
HASH_OPS.lookup = hash_lookup
HASH_OPS.update = hash_update
HASH_OPS.delete_elem = hash_delete
HASH_OPS.sys_lookup = hash_sys_lookup
HASH_OPS.sys_update = hash_sys_update
HASH_OPS.sys_lookup_and_delete = hash_sys_lookup_and_delete
HASH_OPS.get_next_key = hash_get_next_key
HASH_OPS.for_each = hash_for_each
HASH_OPS.contains = hash_contains
HASH_OPS.destroy = hash_destroy


cdef int hash_init(ubpf_map *m, bint percpu, uint64_t seed, size_t impl_bytes=0) except -1:
    """impl_bytes: the size of a struct that starts with a hash_impl (LRU maps)."""
    cdef hash_impl *t = <hash_impl *>calloc(1, impl_bytes if impl_bytes else sizeof(hash_impl))
    cdef uint32_t nb = 1
    cdef uint32_t nchunks
    if t == NULL:
        raise MemoryError()
    m.impl = t
    m.ops = &HASH_OPS
    t.percpu = percpu
    t.seed = seed
    t.stride = (m.value_size + 7) & ~7u
    t.elem_bytes = t.stride * m.ncpus if percpu else t.stride
    while nb < m.max_entries and nb < (1u << 31):
        nb <<= 1
    t.nbuckets = nb
    prealloc = not (m.map_flags & BPF_F_NO_PREALLOC)
    t.chunk_elems = m.max_entries if prealloc else min(m.max_entries, HASH_CHUNK_ELEMS)
    nchunks = (m.max_entries + t.chunk_elems - 1) // t.chunk_elems
    t.heads = <uint32_t *>calloc(nb, sizeof(uint32_t))
    t.locks = <ubpf_spinlock *>calloc(nb, sizeof(ubpf_spinlock))
    t.chunks = <hash_chunk *>calloc(nchunks, sizeof(hash_chunk))
    t.free_stack = <uint32_t *>malloc(<uint64_t>m.max_entries * sizeof(uint32_t))
    if t.heads == NULL or t.locks == NULL or t.chunks == NULL or t.free_stack == NULL:
        raise MemoryError()
    if prealloc:
        if _hash_alloc_chunk(t, m):
            raise MemoryError()
        m.region = t.chunks[0].values
        m.region_len = <uint64_t>t.chunk_elems * t.elem_bytes
    return 0
