# BPF_MAP_TYPE_LRU_HASH and BPF_MAP_TYPE_LRU_PERCPU_HASH.
#
# The hash table of hash.pxi (same element pool, buckets, bucket locks and
# get_next_key order) plus LRU lists threaded through the elements. An
# update that needs a new element when its list is full reuses that list's
# least recently used element instead of failing with E2BIG.
#
# Eviction order (deterministic; the kernel's is an approximation of it):
# - Each list is a strict LRU: a successful update (new key or existing key)
#   and a program lookup (bpf_map_lookup_elem, bpf_map_lookup_percpu_elem)
#   move the element to the head; the tail is evicted. As in the kernel,
#   bpf() lookups (MAP_LOOKUP_ELEM) and get_next_key do NOT mark use, so a
#   user-space walk does not disturb eviction; failed updates (EEXIST,
#   ENOENT) change nothing.
# - Common LRU (default): one list holding up to max_entries elements.
#   The kernel keeps per-CPU local free/pending lists in front of a global
#   active/inactive list and marks use with a lazily checked reference bit,
#   so it evicts roughly, not exactly, the LRU element; here it is exact.
# - BPF_F_NO_COMMON_LRU: one list per CPU, list i holding at most
#   max_entries // ncpus elements (the first max_entries % ncpus lists one
#   more), as the kernel splits the preallocated elements between per-CPU
#   free lists. A program's update of a new key on CPU c takes an element
#   for list c (cpu % ncpus) and evicts from list c only; bpf() updates use
#   list 0 (user space "runs on CPU 0"). An element stays on the list that
#   inserted it; a lookup from any CPU moves it to the head of that list.
# - Differences from the kernel: the kernel allocates a new element even for
#   an update of an existing key (so a full map can evict another element
#   then) and before checking BPF_NOEXIST; here an existing key is updated
#   in place and nothing is evicted unless a new element is really needed.
#
# Locking: a spinlock per list, and hash.pxi's bucket locks. A list lock may
# be held while taking one bucket lock (eviction unlinks the victim from its
# bucket; insertion links the new element); a bucket lock is never held while
# taking a list lock or another bucket lock. Lookups find the element under
# its bucket lock, then mark it under its list lock if it is still the same
# element (its generation number changes whenever it leaves the map).

cdef enum:
    BPF_F_NO_COMMON_LRU = 1 << 1


cdef struct lru_list:
    ubpf_spinlock lock
    uint32_t head             # element number + 1 of the most recently used; 0: empty
    uint32_t tail             # element number + 1 of the least recently used
    uint32_t count            # elements on the list
    uint32_t cap              # its share of max_entries
    uint8_t pad[44]           # one cache line per list: CPUs' lists do not share lines


cdef struct lru_impl:
    hash_impl h               # first, so every hash.pxi function takes an lru_impl
    lru_list *lists
    uint32_t nlists
    uint32_t *prev            # per element: neighbours on its list, element number + 1
    uint32_t *next
    uint32_t *gen             # bumped (under list and bucket lock) when it leaves the map
    uint32_t *owner           # the list it is on


cdef inline void _lru_unlink(lru_impl *l, lru_list *L, uint32_t e) noexcept nogil:
    cdef uint32_t p = l.prev[e], n = l.next[e]
    if p:
        l.next[p - 1] = n
    else:
        L.head = n
    if n:
        l.prev[n - 1] = p
    else:
        L.tail = p
    L.count -= 1


cdef inline void _lru_push_head(lru_impl *l, lru_list *L, uint32_t e) noexcept nogil:
    l.prev[e] = 0
    l.next[e] = L.head
    if L.head:
        l.prev[L.head - 1] = e + 1
    else:
        L.tail = e + 1
    L.head = e + 1
    L.count += 1


cdef void _lru_touch(lru_impl *l, uint32_t e, uint32_t owner, uint32_t gen) noexcept nogil:
    """Mark element e used, if it is still the element found (same generation)."""
    cdef lru_list *L = &l.lists[owner]
    ubpf_spin_lock(&L.lock)
    if l.gen[e] == gen and L.head != e + 1:
        _lru_unlink(l, L, e)
        _lru_push_head(l, L, e)
    ubpf_spin_unlock(&L.lock)


cdef inline uint32_t _lru_bucket(hash_impl *t, uint32_t e) noexcept nogil:
    return _chunk(t, e).hash[e % t.chunk_elems] & (t.nbuckets - 1)


cdef void _hash_unlink_elem(hash_impl *t, uint32_t b, uint32_t e) noexcept nogil:
    """Remove element e from bucket b's list (bucket locked; e is on it)."""
    cdef uint32_t *slot = &t.heads[b]
    while slot[0] and slot[0] != e + 1:
        slot = _hnext(t, slot[0] - 1)
    if slot[0]:
        slot[0] = _hnext(t, e)[0]


cdef long _lru_take(ubpf_map *m, lru_impl *l, lru_list *L, uint32_t *out) noexcept nogil:
    """An unused element for list L (L locked): a free one while L is under
    its share, else L's least recently used element, evicted."""
    cdef hash_impl *t = &l.h
    cdef uint32_t v, b
    if L.count < L.cap:
        return _hash_new_elem(m, t, out)
    if not L.tail:
        return -ENOMEM        # a list with no share (max_entries < ncpus)
    v = L.tail - 1
    b = _lru_bucket(t, v)
    ubpf_spin_lock(&t.locks[b])
    _hash_unlink_elem(t, b, v)
    l.gen[v] += 1
    ubpf_spin_unlock(&t.locks[b])
    _lru_unlink(l, L, v)
    out[0] = v
    return 0


cdef void *lru_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    cdef lru_impl *l = <lru_impl *>m.impl
    cdef hash_impl *t = &l.h
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e, owner = 0, gen = 0
    if t.percpu and cpu >= m.ncpus:
        return NULL
    ubpf_spin_lock(&t.locks[b])
    e = _hash_find(m, t, b, h, key, NULL)
    if e:
        owner, gen = l.owner[e - 1], l.gen[e - 1]
    ubpf_spin_unlock(&t.locks[b])
    if not e:
        return NULL
    _lru_touch(l, e - 1, owner, gen)
    return _hvalue(t, e - 1, cpu if t.percpu else 0)


cdef long _lru_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                      uint32_t cpu, bint allcpus) noexcept nogil:
    cdef lru_impl *l = <lru_impl *>m.impl
    cdef hash_impl *t = &l.h
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e, owner, gen, li
    cdef lru_list *L
    cdef long err
    if flags > BPF_EXIST:     # BPF_F_LOCK included, as the kernel's LRU update
        return -EINVAL
    if t.percpu and not allcpus and cpu >= m.ncpus:
        return -EINVAL
    li = 0 if allcpus else cpu % l.nlists
    L = &l.lists[li]
    while True:
        # An existing key: update in place, then mark it used.
        ubpf_spin_lock(&t.locks[b])
        e = _hash_find(m, t, b, h, key, NULL)
        if e:
            if flags == BPF_NOEXIST:
                ubpf_spin_unlock(&t.locks[b])
                return -EEXIST
            _hash_store_value(m, t, e - 1, value, cpu, allcpus, False)
            owner, gen = l.owner[e - 1], l.gen[e - 1]
            ubpf_spin_unlock(&t.locks[b])
            _lru_touch(l, e - 1, owner, gen)
            return 0
        ubpf_spin_unlock(&t.locks[b])
        if flags == BPF_EXIST:
            return -ENOENT
        # A new key: fill an element while it is private, then link it.
        ubpf_spin_lock(&L.lock)
        err = _lru_take(m, l, L, &e)
        if err:
            ubpf_spin_unlock(&L.lock)
            return err
        memcpy(_hkey(m, t, e), key, m.key_size)
        _chunk(t, e).hash[e % t.chunk_elems] = h
        _hash_store_value(m, t, e, value, cpu, allcpus, True)
        ubpf_spin_lock(&t.locks[b])
        if not _hash_find(m, t, b, h, key, NULL):
            _hnext(t, e)[0] = t.heads[b]
            t.heads[b] = e + 1
            l.owner[e] = li
            _lru_push_head(l, L, e)
            ubpf_spin_unlock(&t.locks[b])
            ubpf_spin_unlock(&L.lock)
            return 0
        # Another thread inserted the key meanwhile: give the element back
        # and apply the flags to that one.
        ubpf_spin_unlock(&t.locks[b])
        _hash_free_elem(t, e)
        ubpf_spin_unlock(&L.lock)


cdef long lru_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                     uint32_t cpu) noexcept nogil:
    return _lru_update(m, key, value, flags, cpu, False)


cdef long lru_sys_update(ubpf_map *m, const void *key, const void *value,
                         uint64_t flags) noexcept nogil:
    return _lru_update(m, key, value, flags, 0, True)


cdef long _lru_delete(ubpf_map *m, const void *key, void *value_out) noexcept nogil:
    cdef lru_impl *l = <lru_impl *>m.impl
    cdef hash_impl *t = &l.h
    cdef uint32_t h = <uint32_t>_hash_bytes(<const uint8_t *>key, m.key_size, t.seed)
    cdef uint32_t b = h & (t.nbuckets - 1)
    cdef uint32_t e, owner, gen
    cdef uint32_t *link = NULL
    cdef lru_list *L
    while True:
        ubpf_spin_lock(&t.locks[b])
        e = _hash_find(m, t, b, h, key, NULL)
        if not e:
            ubpf_spin_unlock(&t.locks[b])
            return -ENOENT
        owner, gen = l.owner[e - 1], l.gen[e - 1]
        ubpf_spin_unlock(&t.locks[b])
        # Lock order is list then bucket: look again under both.
        L = &l.lists[owner]
        ubpf_spin_lock(&L.lock)
        ubpf_spin_lock(&t.locks[b])
        if l.gen[e - 1] == gen:     # still the live element for this key
            _hash_find(m, t, b, h, key, &link)
            if value_out != NULL:
                _hash_copy_out(m, t, e - 1, value_out)
            link[0] = _hnext(t, e - 1)[0]
            l.gen[e - 1] += 1
            ubpf_spin_unlock(&t.locks[b])
            _lru_unlink(l, L, e - 1)
            # Back to the pool before L is released: once L's count drops,
            # an insert under L counts on finding a free element.
            _hash_free_elem(t, e - 1)
            ubpf_spin_unlock(&L.lock)
            return 0
        ubpf_spin_unlock(&t.locks[b])
        ubpf_spin_unlock(&L.lock)


cdef long lru_delete(ubpf_map *m, const void *key) noexcept nogil:
    return _lru_delete(m, key, NULL)


cdef long lru_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                    uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return _lru_delete(m, key, value)


cdef void lru_destroy(ubpf_map *m) noexcept nogil:
    cdef lru_impl *l = <lru_impl *>m.impl
    if l != NULL:
        free(l.lists)
        free(l.prev)
        free(l.next)
        free(l.gen)
        free(l.owner)
    hash_destroy(m)           # frees the lru_impl itself (its hash_impl comes first)


cdef ubpf_map_ops LRU_OPS
LRU_OPS.lookup = lru_lookup
LRU_OPS.update = lru_update
LRU_OPS.delete_elem = lru_delete
LRU_OPS.sys_lookup = hash_sys_lookup          # bpf() lookups do not mark use (kernel)
LRU_OPS.sys_update = lru_sys_update
LRU_OPS.sys_lookup_and_delete = lru_sys_lookup_and_delete
LRU_OPS.get_next_key = hash_get_next_key
LRU_OPS.for_each = hash_for_each          # a walk does not mark use, as the kernel
LRU_OPS.contains = hash_contains
LRU_OPS.destroy = lru_destroy


cdef int lru_init(ubpf_map *m, bint percpu, uint64_t seed) except -1:
    cdef lru_impl *l
    cdef uint32_t i, n
    cdef uint64_t elems = m.max_entries if m.max_entries else 1
    hash_init(m, percpu, seed, sizeof(lru_impl))
    m.ops = &LRU_OPS            # from here on, destroy frees what was allocated
    l = <lru_impl *>m.impl
    n = m.ncpus if m.map_flags & BPF_F_NO_COMMON_LRU else 1
    l.nlists = n
    l.lists = <lru_list *>calloc(n, sizeof(lru_list))
    l.prev = <uint32_t *>calloc(elems, sizeof(uint32_t))
    l.next = <uint32_t *>calloc(elems, sizeof(uint32_t))
    l.gen = <uint32_t *>calloc(elems, sizeof(uint32_t))
    l.owner = <uint32_t *>calloc(elems, sizeof(uint32_t))
    if l.lists == NULL or l.prev == NULL or l.next == NULL or l.gen == NULL or \
            l.owner == NULL:
        raise MemoryError()
    for i in range(n):
        l.lists[i].cap = m.max_entries // n + (1 if i < m.max_entries % n else 0)
    return 0
