# BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK.
#
# As in the kernel: a ring of max_entries + 1 slots of value_size bytes.
# `head` is the slot the next push writes, `tail` the oldest element;
# head == tail is empty and head + 1 == tail (mod size) is full, so one slot
# always stays free and no element count is needed. A queue pops at tail
# (FIFO), a stack at head - 1 (LIFO). Push with BPF_EXIST on a full map
# drops the oldest element (tail) to make room, for a stack too. There are
# no keys (key_size 0). One spinlock guards the ring: every operation is one
# value copy under it, so programs on several threads may share the map.

cdef enum:
    # map_flags a queue/stack accepts (QUEUE_STACK_CREATE_FLAG_MASK)
    QUEUE_STACK_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK


cdef struct qs_impl:
    ubpf_spinlock lock
    uint32_t head
    uint32_t tail
    uint32_t size             # slots: max_entries + 1
    bint stack
    uint8_t *elements


cdef inline uint32_t _qs_next(const qs_impl *q, uint32_t i) noexcept nogil:
    i += 1
    if i >= q.size:
        return 0
    return i


cdef long qs_push(ubpf_map *m, const void *value, uint64_t flags) noexcept nogil:
    cdef qs_impl *q = <qs_impl *>m.impl
    if (flags & BPF_NOEXIST) or flags > BPF_EXIST:
        return -EINVAL
    ubpf_spin_lock(&q.lock)
    if _qs_next(q, q.head) == q.tail:           # full
        if not (flags & BPF_EXIST):
            ubpf_spin_unlock(&q.lock)
            return -E2BIG
        q.tail = _qs_next(q, q.tail)            # overwrite the oldest
    memcpy(q.elements + <uint64_t>q.head * m.value_size, value, m.value_size)
    q.head = _qs_next(q, q.head)
    ubpf_spin_unlock(&q.lock)
    return 0


cdef long _qs_get(ubpf_map *m, void *value, bint delete) noexcept nogil:
    cdef qs_impl *q = <qs_impl *>m.impl
    cdef uint32_t idx
    ubpf_spin_lock(&q.lock)
    if q.head == q.tail:
        # the kernel zeroes the caller's buffer: a program sees zeros on ENOENT
        memset(value, 0, m.value_size)
        ubpf_spin_unlock(&q.lock)
        return -ENOENT
    if q.stack:
        idx = (q.head if q.head else q.size) - 1
    else:
        idx = q.tail
    memcpy(value, q.elements + <uint64_t>idx * m.value_size, m.value_size)
    if delete:
        if q.stack:
            q.head = idx
        else:
            q.tail = _qs_next(q, q.tail)
    ubpf_spin_unlock(&q.lock)
    return 0


cdef long qs_pop(ubpf_map *m, void *value) noexcept nogil:
    return _qs_get(m, value, True)


cdef long qs_peek(ubpf_map *m, void *value) noexcept nogil:
    return _qs_get(m, value, False)


cdef void *qs_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    return NULL             # programs use bpf_map_peek_elem (the verifier insists)


cdef long qs_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                    uint32_t cpu) noexcept nogil:
    return -EINVAL          # programs use bpf_map_push_elem


cdef long qs_delete(ubpf_map *m, const void *key) noexcept nogil:
    return -EINVAL


cdef long qs_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    return -EINVAL


# bpf() commands: LOOKUP = peek, UPDATE = push, LOOKUP_AND_DELETE = pop.
# Lookup flags may only be BPF_F_LOCK, which needs a bpf_spin_lock in the
# value (BTF); lookup-and-delete takes no flags on these maps.
cdef long qs_sys_lookup(ubpf_map *m, const void *key, void *value,
                        uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return _qs_get(m, value, False)


cdef long qs_sys_update(ubpf_map *m, const void *key, const void *value,
                        uint64_t flags) noexcept nogil:
    return qs_push(m, value, flags)


cdef long qs_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                   uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return _qs_get(m, value, True)


cdef void qs_destroy(ubpf_map *m) noexcept nogil:
    cdef qs_impl *q = <qs_impl *>m.impl
    if q != NULL:
        free(q.elements)
        free(q)
    m.impl = NULL


cdef ubpf_map_ops QUEUE_STACK_OPS
QUEUE_STACK_OPS.lookup = qs_lookup
QUEUE_STACK_OPS.update = qs_update
QUEUE_STACK_OPS.delete_elem = qs_delete
QUEUE_STACK_OPS.push = qs_push
QUEUE_STACK_OPS.pop = qs_pop
QUEUE_STACK_OPS.peek = qs_peek
QUEUE_STACK_OPS.sys_lookup = qs_sys_lookup
QUEUE_STACK_OPS.sys_update = qs_sys_update
QUEUE_STACK_OPS.sys_lookup_and_delete = qs_sys_lookup_and_delete
QUEUE_STACK_OPS.get_next_key = qs_get_next_key
QUEUE_STACK_OPS.destroy = qs_destroy


cdef int queue_stack_init(ubpf_map *m, bint stack) except -1:
    """The kernel's queue_stack_map_alloc_check + alloc: EINVAL for a key,
    an empty value, no entries or an unknown flag."""
    cdef qs_impl *q
    if m.max_entries == 0 or m.key_size != 0 or m.value_size == 0 or \
            m.map_flags & ~QUEUE_STACK_CREATE_FLAG_MASK:
        raise OSError(EINVAL, "queue/stack maps need key_size 0, value_size > 0, "
                              "max_entries > 0 and no flags but access/NUMA ones")
    q = <qs_impl *>calloc(1, sizeof(qs_impl))
    if q == NULL:
        raise MemoryError()
    m.impl = q
    m.ops = &QUEUE_STACK_OPS
    q.stack = stack
    q.size = m.max_entries + 1
    if q.size == 0:                     # 2**32 slots: the kernel's allocation fails too
        raise OSError(ENOMEM, "max_entries too large")
    q.elements = <uint8_t *>malloc(<uint64_t>q.size * m.value_size)
    if q.elements == NULL:
        raise MemoryError()
    return 0
