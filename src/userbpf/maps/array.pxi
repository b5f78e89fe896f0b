# BPF_MAP_TYPE_ARRAY and BPF_MAP_TYPE_PERCPU_ARRAY.
#
# Values live in one zeroed block (map.region), element i at i * stride, or
# for per-CPU arrays (i * ncpus + cpu) * stride; stride is value_size rounded
# up to 8 as in the kernel. Keys are u32 indices. Elements always exist:
# delete fails with EINVAL, BPF_NOEXIST with EEXIST.

cdef struct array_impl:
    uint32_t stride
    bint percpu
    ubpf_spinlock locks[ARRAY_LOCK_STRIPES]


cdef inline uint32_t _key_u32(const void *key) noexcept nogil:
    cdef uint32_t k
    memcpy(&k, key, 4)
    return k


cdef inline uint8_t *_array_elem(ubpf_map *m, uint32_t idx, uint32_t cpu) noexcept nogil:
    cdef array_impl *a = <array_impl *>m.impl
    if a.percpu:
        return m.region + (<uint64_t>idx * m.ncpus + cpu) * a.stride
    return m.region + <uint64_t>idx * a.stride


cdef void *array_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    cdef uint32_t idx = _key_u32(key)
    if idx >= m.max_entries:
        return NULL
    if (<array_impl *>m.impl).percpu and cpu >= m.ncpus:   # run(cpu=...) beyond the map's CPUs
        return NULL
    return _array_elem(m, idx, cpu)


cdef long _array_check_update(ubpf_map *m, uint32_t idx, uint64_t flags) noexcept nogil:
    # the kernel's order (array_map_update_elem): flags, index, NOEXIST, lock
    if (flags & ~BPF_F_LOCK) > BPF_EXIST:
        return -EINVAL
    if idx >= m.max_entries:
        return -E2BIG
    if flags & BPF_NOEXIST:
        return -EEXIST
    if flags & BPF_F_LOCK:
        # BPF_F_LOCK needs a bpf_spin_lock in the value (BTF), not known here
        return -EINVAL
    return 0


cdef long array_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                       uint32_t cpu) noexcept nogil:
    cdef uint32_t idx = _key_u32(key)
    cdef long err = _array_check_update(m, idx, flags)
    cdef array_impl *a = <array_impl *>m.impl
    cdef ubpf_spinlock *lock
    if a.percpu and cpu >= m.ncpus:     # would write past the map's memory
        return -EINVAL
    if err:
        return err
    lock = &a.locks[idx % ARRAY_LOCK_STRIPES]
    ubpf_spin_lock(lock)
    memcpy(_array_elem(m, idx, cpu), value, m.value_size)
    ubpf_spin_unlock(lock)
    return 0


cdef long array_sys_update(ubpf_map *m, const void *key, const void *value,
                           uint64_t flags) noexcept nogil:
    cdef uint32_t idx = _key_u32(key)
    cdef long err = _array_check_update(m, idx, flags)
    cdef array_impl *a = <array_impl *>m.impl
    cdef ubpf_spinlock *lock
    cdef uint32_t cpu
    if (flags & ~BPF_F_LOCK) <= BPF_EXIST and flags & BPF_F_LOCK:
        return -EINVAL      # bpf() refuses the lock flag before the map is asked
    if err:
        return err
    lock = &a.locks[idx % ARRAY_LOCK_STRIPES]
    ubpf_spin_lock(lock)
    if a.percpu:
        for cpu in range(m.ncpus):
            # whole 8-byte-rounded slots, padding too (the kernel's copy_map_value_long)
            memcpy(_array_elem(m, idx, cpu), <const uint8_t *>value + cpu * a.stride,
                   a.stride)
    else:
        memcpy(_array_elem(m, idx, 0), value, m.value_size)
    ubpf_spin_unlock(lock)
    return 0


cdef long array_sys_lookup(ubpf_map *m, const void *key, void *value,
                           uint64_t flags) noexcept nogil:
    cdef uint32_t idx = _key_u32(key)
    cdef array_impl *a = <array_impl *>m.impl
    cdef ubpf_spinlock *lock
    cdef uint32_t cpu
    if flags:           # only BPF_F_LOCK exists, and needs a bpf_spin_lock (BTF)
        return -EINVAL
    if idx >= m.max_entries:
        return -ENOENT
    lock = &a.locks[idx % ARRAY_LOCK_STRIPES]
    ubpf_spin_lock(lock)
    if a.percpu:
        for cpu in range(m.ncpus):
            memcpy(<uint8_t *>value + cpu * a.stride, _array_elem(m, idx, cpu), a.stride)
    else:
        memcpy(value, _array_elem(m, idx, 0), m.value_size)
    ubpf_spin_unlock(lock)
    return 0


cdef long array_delete(ubpf_map *m, const void *key) noexcept nogil:
    return -EINVAL


cdef long array_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    cdef uint32_t idx
    cdef uint32_t nxt = 0
    if key != NULL:
        idx = _key_u32(key)
        if idx < m.max_entries:
            if idx == m.max_entries - 1:
                return -ENOENT
            nxt = idx + 1
    memcpy(next_key, &nxt, 4)
    return 0


cdef void array_destroy(ubpf_map *m) noexcept nogil:
    free(m.region)
    free(m.impl)
    m.region = NULL
    m.impl = NULL


cdef long array_for_each(ubpf_map *m, uint32_t cpu, ubpf_elem_fn fn,
                         void *arg) noexcept nogil:
    """bpf_for_each_map_elem over an array: every index, in order."""
    cdef uint32_t i, key
    cdef long n = 0
    if cpu >= m.ncpus:
        return -EINVAL
    for i in range(m.max_entries):
        key = i
        n += 1
        if fn(arg, &key, _array_elem(m, i, cpu)):
            break
    return n


cdef ubpf_map_ops ARRAY_OPS
ARRAY_OPS.lookup = array_lookup
ARRAY_OPS.update = array_update
ARRAY_OPS.delete_elem = array_delete
ARRAY_OPS.sys_lookup = array_sys_lookup
ARRAY_OPS.sys_update = array_sys_update
ARRAY_OPS.get_next_key = array_get_next_key
ARRAY_OPS.for_each = array_for_each
ARRAY_OPS.destroy = array_destroy


cdef int array_init(ubpf_map *m, bint percpu) except -1:
    cdef array_impl *a = <array_impl *>calloc(1, sizeof(array_impl))
    cdef uint64_t n
    if a == NULL:
        raise MemoryError()
    m.impl = a
    a.percpu = percpu
    a.stride = (m.value_size + 7) & ~7u
    n = <uint64_t>m.max_entries * a.stride * (m.ncpus if percpu else 1)
    m.region = <uint8_t *>calloc(n if n else 1, 1)
    if m.region == NULL:
        raise MemoryError()
    m.region_len = n
    m.ops = &ARRAY_OPS
    return 0
