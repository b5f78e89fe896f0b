# BPF_MAP_TYPE_LPM_TRIE: longest-prefix-match trie (kernel/bpf/lpm_trie.c).
#
# Keys are struct bpf_lpm_trie_key_u8: a u32 prefixlen in host order, then
# data_size = key_size - 4 bytes in network order (bit 0 is the top bit of
# data[0]). The trie is the kernel's path-compressed binary trie: every node
# holds a prefix; a node's child[b] holds longer prefixes whose next bit
# (at index node.prefixlen) is b. Intermediate nodes (LPM_FLAG_IM) are added
# where two prefixes diverge; they always have two children and are never
# returned. The tree's shape, the data bytes kept in a node (the key exactly
# as last written, bits past prefixlen included), the errnos and the
# get_next_key post-order all follow the kernel, so iteration matches it key
# for key.
#
# Memory: nodes (header + key data) and values live in separate chunk arrays;
# chunk k holds LPM_CHUNK0 << k nodes (so a few chunks cover any trie) and is
# allocated when first needed, up to 2 * max_entries nodes: at most
# max_entries real nodes, fewer intermediate ones, plus the one new node an
# update of an existing key briefly adds. Only value chunks are program
# memory (`lpm_contains`), never keys or links. Chunks are freed with the map
# only, so a value pointer a program got from lookup stays valid memory.
#
# Staleness, as the kernel's RCU-delayed free: an update of an existing key
# installs a new node (a new value slot) and frees the old one, a delete frees
# the node. A freed node goes to the back of a FIFO and is only reused once
# LPM_REUSE_DELAY others are waiting (or the pool is exhausted), so a stale
# pointer keeps the old value for a while; after reuse it reads and writes
# the value slot of whatever element reused the node -- always value memory
# of this map, never keys, links or anything outside it.
#
# Concurrency: one spinlock per trie (the kernel's trie->lock); lookups take
# it too, because nodes are recycled here instead of RCU-freed.

from libc.errno cimport ENOSPC

cdef enum:
    LPM_FLAG_IM = 1               # LPM_TREE_NODE_FLAG_IM: an intermediate node
    LPM_CHUNK0 = 64               # nodes in the first chunk; each next one doubles
    LPM_MAX_CHUNKS = 48           # 64 << 47 nodes: more than 2 * 2**32 - 2
    LPM_REUSE_DELAY = 64          # freed nodes waiting before reuse (RCU stand-in)
    LPM_DATA_SIZE_MIN = 1
    LPM_DATA_SIZE_MAX = 256
    # BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY |
    # BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG: LPM_CREATE_FLAG_MASK
    LPM_CREATE_FLAG_MASK = 1 | 4 | 8 | 16 | 128 | 256
    LPM_ENOTSUPP = 524            # the kernel-internal ENOTSUPP bpf() returns
    # KMALLOC_MAX_SIZE (x86_64: 4 MiB) - LPM_DATA_SIZE_MAX - sizeof(struct lpm_trie_node)
    LPM_VAL_SIZE_MAX = (1 << 22) - 256 - 24


cdef struct lpm_node:
    lpm_node *child[2]
    lpm_node *next_free           # the free FIFO's link while the node is free
    uint8_t *value                # this node's value slot, fixed for its life
    uint32_t prefixlen
    uint32_t flags
    # data_size bytes of key data follow the header (lpm_data)


cdef struct lpm_impl:
    lpm_node *root
    ubpf_spinlock lock
    uint64_t n_entries            # real (non-intermediate) nodes
    uint32_t data_size
    uint32_t max_prefixlen
    uint64_t node_bytes
    uint64_t vstride              # value_size rounded up to 8
    uint8_t *nodes[LPM_MAX_CHUNKS]
    uint8_t *values[LPM_MAX_CHUNKS]
    uint64_t chunk_len[LPM_MAX_CHUNKS]
    uint32_t nchunks
    uint64_t capacity             # nodes the chunks may hold in all
    uint64_t carved               # nodes handed out from chunks so far
    uint64_t carved_cap           # nodes in the chunks allocated so far
    lpm_node *free_head           # freed nodes, oldest first
    lpm_node *free_tail
    uint64_t nfree
    lpm_node **stack              # get_next_key's path (max_prefixlen + 1)


cdef inline uint8_t *lpm_data(lpm_node *n) noexcept nogil:
    return <uint8_t *>n + sizeof(lpm_node)


cdef inline uint32_t _lpm_plen(const void *key) noexcept nogil:
    cdef uint32_t p
    memcpy(&p, key, 4)
    return p


cdef inline int _lpm_bit(const uint8_t *data, uint32_t index) noexcept nogil:
    """extract_bit: bit `index` counted from the top of data[0]."""
    return (data[index >> 3] >> (7 - (index & 7))) & 1


cdef inline uint32_t _lpm_match(lpm_node *n, const uint8_t *data, uint32_t key_plen) noexcept nogil:
    """longest_prefix_match: leading bits node and key share, at most
    min(node.prefixlen, key prefixlen)."""
    cdef uint32_t limit = n.prefixlen if n.prefixlen < key_plen else key_plen
    cdef const uint8_t *a = lpm_data(n)
    cdef uint32_t bits = 0, i = 0
    cdef uint8_t diff
    while bits < limit:
        diff = a[i] ^ data[i]
        if diff:
            while not (diff & 0x80):
                diff <<= 1
                bits += 1
            return bits if bits < limit else limit
        bits += 8
        i += 1
    return limit


cdef lpm_node *_lpm_carve(lpm_impl *t, ubpf_map *m) noexcept nogil:
    """A never-used node from the chunks (allocating the next chunk), or NULL."""
    cdef uint64_t want, j
    cdef uint32_t k
    cdef lpm_node *n
    if t.carved == t.carved_cap:
        if t.carved_cap >= t.capacity or t.nchunks >= LPM_MAX_CHUNKS:
            return NULL
        k = t.nchunks
        want = <uint64_t>LPM_CHUNK0 << k
        if want > t.capacity - t.carved_cap:
            want = t.capacity - t.carved_cap
        t.nodes[k] = <uint8_t *>calloc(want, t.node_bytes)
        t.values[k] = <uint8_t *>calloc(want, t.vstride)
        if t.nodes[k] == NULL or t.values[k] == NULL:
            free(t.nodes[k])
            free(t.values[k])
            t.nodes[k] = NULL
            t.values[k] = NULL
            return NULL
        t.chunk_len[k] = want
        t.nchunks += 1
        t.carved_cap += want
    k = t.nchunks - 1
    j = t.chunk_len[k] - (t.carved_cap - t.carved)      # next unused in the last chunk
    n = <lpm_node *>(t.nodes[k] + j * t.node_bytes)
    n.value = t.values[k] + j * t.vstride
    t.carved += 1
    return n


cdef lpm_node *_lpm_alloc(lpm_impl *t, ubpf_map *m) noexcept nogil:
    """A node for the trie, or NULL (-ENOMEM). Call with the lock held.
    Fresh nodes are preferred until LPM_REUSE_DELAY freed ones wait."""
    cdef lpm_node *n = NULL
    if t.nfree < LPM_REUSE_DELAY:
        n = _lpm_carve(t, m)
    if n == NULL and t.free_head != NULL:
        n = t.free_head
        t.free_head = n.next_free
        if t.free_head == NULL:
            t.free_tail = NULL
        t.nfree -= 1
    if n != NULL:
        n.child[0] = NULL
        n.child[1] = NULL
        n.next_free = NULL
        n.flags = 0
        n.prefixlen = 0
    return n


cdef void _lpm_free(lpm_impl *t, lpm_node *n) noexcept nogil:
    """Queue a node for reuse (its value slot keeps its bytes until then)."""
    n.child[0] = NULL
    n.child[1] = NULL
    n.next_free = NULL
    if t.free_tail != NULL:
        t.free_tail.next_free = n
    else:
        t.free_head = n
    t.free_tail = n
    t.nfree += 1


cdef lpm_node *_lpm_find(lpm_impl *t, const void *key) noexcept nogil:
    """trie_lookup_elem: the longest real prefix matching key (its prefixlen
    bounds the match), or NULL. Call with the lock held."""
    cdef uint32_t plen = _lpm_plen(key)
    cdef const uint8_t *data = <const uint8_t *>key + 4
    cdef lpm_node *n = t.root
    cdef lpm_node *found = NULL
    cdef uint32_t matchlen
    if plen > t.max_prefixlen:
        return NULL
    while n != NULL:
        matchlen = _lpm_match(n, data, plen)
        if matchlen == t.max_prefixlen:
            return n                     # a full-length match cannot be beaten
        if matchlen < n.prefixlen:
            break                        # n is not a prefix of key: its parent wins
        if not (n.flags & LPM_FLAG_IM):
            found = n
        n = n.child[_lpm_bit(data, n.prefixlen)]
    return found


cdef void *lpm_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef lpm_node *n
    ubpf_spin_lock(&t.lock)
    n = _lpm_find(t, key)
    ubpf_spin_unlock(&t.lock)
    return n.value if n != NULL else NULL


cdef long lpm_sys_lookup(ubpf_map *m, const void *key, void *value,
                         uint64_t flags) noexcept nogil:
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef lpm_node *n
    if flags:                            # BPF_F_LOCK needs a bpf_spin_lock in the value
        return -EINVAL
    ubpf_spin_lock(&t.lock)
    n = _lpm_find(t, key)
    if n != NULL:
        memcpy(value, n.value, m.value_size)
    ubpf_spin_unlock(&t.lock)
    return 0 if n != NULL else -ENOENT


cdef inline long _lpm_check_add(lpm_impl *t, ubpf_map *m, uint64_t flags) noexcept nogil:
    """trie_check_add_elem: may a new real element be added? Counts it."""
    if flags == BPF_EXIST:
        return -ENOENT
    if t.n_entries >= m.max_entries:
        return -ENOSPC
    t.n_entries += 1
    return 0


cdef long _lpm_insert(ubpf_map *m, lpm_impl *t, lpm_node *fresh, const uint8_t *data,
                      uint64_t flags) noexcept nogil:
    """Link `fresh` (filled in) into the trie. Returns 0 or a negative errno
    (then `fresh` was not linked). Call with the lock held."""
    cdef lpm_node **slot = &t.root
    cdef lpm_node *n = t.root
    cdef lpm_node *im
    cdef uint32_t plen = fresh.prefixlen, matchlen = 0
    cdef long err
    # Walk down while n is a proper prefix of the new key.
    while n != NULL:
        matchlen = _lpm_match(n, data, plen)
        if n.prefixlen != matchlen or n.prefixlen == plen:
            break
        slot = &n.child[_lpm_bit(data, n.prefixlen)]
        n = slot[0]
    if n == NULL:                        # an empty slot: hang the new leaf there
        err = _lpm_check_add(t, m, flags)
        if not err:
            slot[0] = fresh
        return err
    if n.prefixlen == matchlen:          # same prefix: replace n (real or intermediate)
        if not (n.flags & LPM_FLAG_IM):
            if flags == BPF_NOEXIST:
                return -EEXIST
        else:
            err = _lpm_check_add(t, m, flags)
            if err:
                return err
        fresh.child[0] = n.child[0]
        fresh.child[1] = n.child[1]
        slot[0] = fresh
        _lpm_free(t, n)
        return 0
    err = _lpm_check_add(t, m, flags)
    if err:
        return err
    if matchlen == plen:                 # the new prefix is an ancestor of n
        fresh.child[_lpm_bit(lpm_data(n), matchlen)] = n
        slot[0] = fresh
        return 0
    im = _lpm_alloc(t, m)                # they diverge at bit matchlen
    if im == NULL:
        t.n_entries -= 1
        return -ENOMEM
    im.prefixlen = matchlen
    im.flags = LPM_FLAG_IM
    memcpy(lpm_data(im), lpm_data(n), t.data_size)
    if _lpm_bit(data, matchlen):
        im.child[0] = n
        im.child[1] = fresh
    else:
        im.child[0] = fresh
        im.child[1] = n
    slot[0] = im
    return 0


cdef long lpm_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                     uint32_t cpu) noexcept nogil:
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef uint32_t plen = _lpm_plen(key)
    cdef const uint8_t *data = <const uint8_t *>key + 4
    cdef lpm_node *fresh
    cdef long err
    if flags > BPF_EXIST:
        return -EINVAL
    if plen > t.max_prefixlen:
        return -EINVAL
    ubpf_spin_lock(&t.lock)
    fresh = _lpm_alloc(t, m)
    if fresh == NULL:
        ubpf_spin_unlock(&t.lock)
        return -ENOMEM
    fresh.prefixlen = plen
    memcpy(lpm_data(fresh), data, t.data_size)     # kept as given, bits past plen too
    memcpy(fresh.value, value, m.value_size)
    err = _lpm_insert(m, t, fresh, data, flags)
    if err:
        _lpm_free(t, fresh)
    ubpf_spin_unlock(&t.lock)
    return err


cdef long lpm_sys_update(ubpf_map *m, const void *key, const void *value,
                         uint64_t flags) noexcept nogil:
    return lpm_update(m, key, value, flags, 0)


cdef long lpm_delete(ubpf_map *m, const void *key) noexcept nogil:
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef uint32_t plen = _lpm_plen(key)
    cdef const uint8_t *data = <const uint8_t *>key + 4
    cdef lpm_node **trim
    cdef lpm_node **trim2
    cdef lpm_node *n
    cdef lpm_node *parent = NULL
    cdef uint32_t matchlen = 0
    if plen > t.max_prefixlen:
        return -EINVAL
    ubpf_spin_lock(&t.lock)
    # Find the exact prefix, remembering its slot (trim), its parent and the
    # parent's slot (trim2).
    trim = &t.root
    trim2 = trim
    n = t.root
    while n != NULL:
        matchlen = _lpm_match(n, data, plen)
        if n.prefixlen != matchlen or n.prefixlen == plen:
            break
        parent = n
        trim2 = trim
        trim = &n.child[_lpm_bit(data, n.prefixlen)]
        n = trim[0]
    if n == NULL or n.prefixlen != plen or n.prefixlen != matchlen or \
            (n.flags & LPM_FLAG_IM):
        ubpf_spin_unlock(&t.lock)
        return -ENOENT
    t.n_entries -= 1
    if n.child[0] != NULL and n.child[1] != NULL:
        n.flags |= LPM_FLAG_IM           # still needed as a branch point
    elif parent != NULL and (parent.flags & LPM_FLAG_IM) and \
            n.child[0] == NULL and n.child[1] == NULL:
        # a leaf under an intermediate node: the intermediate node goes too,
        # its other child takes its place
        trim2[0] = parent.child[1] if parent.child[0] == n else parent.child[0]
        _lpm_free(t, parent)
        _lpm_free(t, n)
    else:                                # zero or one child: the child moves up
        trim[0] = n.child[0] if n.child[0] != NULL else n.child[1]
        _lpm_free(t, n)
    ubpf_spin_unlock(&t.lock)
    return 0


cdef long lpm_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                    uint64_t flags) noexcept nogil:
    return -LPM_ENOTSUPP                 # the kernel has no such op for tries


cdef void _lpm_copy_key(lpm_impl *t, lpm_node *n, void *next_key) noexcept nogil:
    memcpy(next_key, &n.prefixlen, 4)
    memcpy(<uint8_t *>next_key + 4, lpm_data(n), t.data_size)


cdef long lpm_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    """Post-order, as the kernel: longer prefixes before the prefixes they
    extend, the 0 side before the 1 side. A missing key, an absent key or
    one with prefixlen > max_prefixlen gives the first key."""
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef lpm_node *n
    cdef lpm_node *parent
    cdef lpm_node *start
    cdef lpm_node *found = NULL
    cdef int sp = -1
    cdef uint32_t plen = 0, matchlen = 0
    cdef const uint8_t *data = NULL
    ubpf_spin_lock(&t.lock)
    start = t.root
    if start == NULL:
        ubpf_spin_unlock(&t.lock)
        return -ENOENT
    if key != NULL:
        plen = _lpm_plen(key)
        data = <const uint8_t *>key + 4
    if key != NULL and plen <= t.max_prefixlen:
        # Find the exact node, recording the path to it.
        n = t.root
        while n != NULL:
            sp += 1
            t.stack[sp] = n
            matchlen = _lpm_match(n, data, plen)
            if n.prefixlen != matchlen or n.prefixlen == plen:
                break
            n = n.child[_lpm_bit(data, n.prefixlen)]
        if n != NULL and n.prefixlen == matchlen and not (n.flags & LPM_FLAG_IM):
            # The next in post-order: the first of the right sibling's
            # subtree if n is a left child with one, else the nearest real
            # ancestor.
            start = NULL
            while sp > 0:
                parent = t.stack[sp - 1]
                if parent.child[0] == n and parent.child[1] != NULL:
                    start = parent.child[1]
                    break
                if not (parent.flags & LPM_FLAG_IM):
                    found = parent
                    break
                n = parent
                sp -= 1
            if start == NULL and found == NULL:
                ubpf_spin_unlock(&t.lock)
                return -ENOENT           # key was the last one
    if found == NULL:
        # The leftmost deepest real node under start (intermediate nodes
        # always have two children, so this ends on a real node).
        n = start
        while n != NULL:
            if n.flags & LPM_FLAG_IM:
                n = n.child[0]
            else:
                found = n
                n = n.child[0] if n.child[0] != NULL else n.child[1]
        if found == NULL:                # unreachable while the invariant holds
            ubpf_spin_unlock(&t.lock)
            return -ENOENT
    _lpm_copy_key(t, found, next_key)
    ubpf_spin_unlock(&t.lock)
    return 0


cdef int lpm_contains(const ubpf_map *m, uint64_t addr, uint64_t size) noexcept nogil:
    """Is [addr, addr + size) inside one value slot (value_size bytes)?"""
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef uint32_t k
    cdef uint64_t rel, off
    for k in range(t.nchunks):
        rel = addr - <uint64_t>t.values[k]
        if rel < t.chunk_len[k] * t.vstride:
            off = rel % t.vstride
            return off < m.value_size and m.value_size - off >= size
    return 0


cdef void lpm_destroy(ubpf_map *m) noexcept nogil:
    cdef lpm_impl *t = <lpm_impl *>m.impl
    cdef uint32_t k
    if t != NULL:
        for k in range(t.nchunks):
            free(t.nodes[k])
            free(t.values[k])
        free(t.stack)
        free(t)
    m.impl = NULL


cdef ubpf_map_ops LPM_TRIE_OPS
LPM_TRIE_OPS.lookup = lpm_lookup
LPM_TRIE_OPS.update = lpm_update
LPM_TRIE_OPS.delete_elem = lpm_delete
LPM_TRIE_OPS.sys_lookup = lpm_sys_lookup
LPM_TRIE_OPS.sys_update = lpm_sys_update
LPM_TRIE_OPS.sys_lookup_and_delete = lpm_sys_lookup_and_delete
LPM_TRIE_OPS.get_next_key = lpm_get_next_key
LPM_TRIE_OPS.contains = lpm_contains
LPM_TRIE_OPS.destroy = lpm_destroy


cdef int lpm_init(ubpf_map *m) except -1:
    """trie_alloc: the kernel's attribute checks (EINVAL), then empty state."""
    cdef lpm_impl *t
    cdef uint32_t f = m.map_flags
    if m.max_entries == 0 or not (f & BPF_F_NO_PREALLOC) or (f & ~LPM_CREATE_FLAG_MASK) \
            or (f & (8 | 16)) == (8 | 16) or (f & (128 | 256)) == (128 | 256) \
            or m.key_size < 4 + LPM_DATA_SIZE_MIN or m.key_size > 4 + LPM_DATA_SIZE_MAX \
            or m.value_size < 1 or m.value_size > LPM_VAL_SIZE_MAX:
        raise OSError(EINVAL, "LPM trie needs BPF_F_NO_PREALLOC, max_entries > 0, key_size "
                              "5..260 and value_size >= 1")
    t = <lpm_impl *>calloc(1, sizeof(lpm_impl))
    if t == NULL:
        raise MemoryError()
    m.impl = t
    m.ops = &LPM_TRIE_OPS
    t.data_size = m.key_size - 4
    t.max_prefixlen = t.data_size * 8
    t.node_bytes = (sizeof(lpm_node) + t.data_size + 7) & ~(<uint64_t>7)
    t.vstride = (m.value_size + 7) & ~(<uint64_t>7)
    t.capacity = 2 * <uint64_t>m.max_entries
    t.stack = <lpm_node **>malloc((t.max_prefixlen + 1) * sizeof(lpm_node *))
    if t.stack == NULL:
        raise MemoryError()
    return 0
