# BPF_MAP_TYPE_RINGBUF: storage and memory layout (include/userbpf/ringbuf.h).
#
# max_entries is the data size in bytes: a power of two and a multiple of
# the page size, as the kernel requires (the host's page size, as the
# kernel's PAGE_SIZE). The memory is the kernel's mmap layout: consumer
# page, producer page, then the data pages mapped twice back to back. The
# producer side (bpf_ringbuf_reserve/submit/discard/output/query) and the
# user-space consumer build on this; until then programs hold no pointers
# into it and map.region stays NULL. The ring has no elements: every
# element command answers the kernel's internal ENOTSUPP (524), as the
# kernel's ringbuf map ops do.

cdef extern from "userbpf/ringbuf.h" nogil:
    ctypedef struct ubpf_ringbuf_mem:
        uint8_t *base
        uint64_t page_size
        uint64_t data_size
        uint64_t map_len
        int fd
    int ubpf_ringbuf_mem_alloc(ubpf_ringbuf_mem *rb, uint64_t page_size, uint64_t data_size)
    void ubpf_ringbuf_mem_free(ubpf_ringbuf_mem *rb)
    uint64_t ubpf_page_size()


cdef enum:
    RINGBUF_CREATE_FLAG_MASK = BPF_F_NUMA_NODE
    # The kernel's 64 GiB RINGBUF_MAX_DATA_SZ (E2BIG) is above any power of
    # two a u32 max_entries can hold, so it is not checked here.


cdef struct ringbuf_impl:
    ubpf_ringbuf_mem mem
    ubpf_spinlock lock        # for the producer, which comes later


cdef void *ringbuf_lookup(ubpf_map *m, const void *key, uint32_t cpu) noexcept nogil:
    return NULL


cdef long ringbuf_update(ubpf_map *m, const void *key, const void *value, uint64_t flags,
                         uint32_t cpu) noexcept nogil:
    return -ENOTSUPP


cdef long ringbuf_delete(ubpf_map *m, const void *key) noexcept nogil:
    return -ENOTSUPP


cdef long ringbuf_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    return -ENOTSUPP


cdef long ringbuf_sys_lookup(ubpf_map *m, const void *key, void *value,
                             uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return -ENOTSUPP


cdef long ringbuf_sys_update(ubpf_map *m, const void *key, const void *value,
                             uint64_t flags) noexcept nogil:
    return -ENOTSUPP


cdef long ringbuf_sys_lookup_and_delete(ubpf_map *m, const void *key, void *value,
                                        uint64_t flags) noexcept nogil:
    if flags:
        return -EINVAL
    return -ENOTSUPP


cdef void ringbuf_destroy(ubpf_map *m) noexcept nogil:
    cdef ringbuf_impl *r = <ringbuf_impl *>m.impl
    if r != NULL:
        ubpf_ringbuf_mem_free(&r.mem)
        free(r)
    m.impl = NULL


cdef ubpf_map_ops RINGBUF_OPS
RINGBUF_OPS.lookup = ringbuf_lookup
RINGBUF_OPS.update = ringbuf_update
RINGBUF_OPS.delete_elem = ringbuf_delete
RINGBUF_OPS.sys_lookup = ringbuf_sys_lookup
RINGBUF_OPS.sys_update = ringbuf_sys_update
RINGBUF_OPS.sys_lookup_and_delete = ringbuf_sys_lookup_and_delete
RINGBUF_OPS.get_next_key = ringbuf_get_next_key
RINGBUF_OPS.destroy = ringbuf_destroy


cdef int ringbuf_init(ubpf_map *m) except -1:
    """The kernel's ringbuf_map_alloc checks: EINVAL for an unknown flag, a
    key or value size, or a size that is not a power-of-two number of pages."""
    cdef ringbuf_impl *r
    cdef uint64_t page = ubpf_page_size()
    cdef uint32_t n = m.max_entries
    cdef int err
    if m.map_flags & ~RINGBUF_CREATE_FLAG_MASK or m.key_size or m.value_size or \
            n == 0 or (n & (n - 1)) or n % page:
        raise OSError(EINVAL, f"ring buffers need key_size 0, value_size 0 and a "
                              f"max_entries that is a power of two and a multiple of "
                              f"the page size ({page})")
    r = <ringbuf_impl *>calloc(1, sizeof(ringbuf_impl))
    if r == NULL:
        raise MemoryError()
    r.mem.fd = -1
    m.impl = r
    m.ops = &RINGBUF_OPS
    err = ubpf_ringbuf_mem_alloc(&r.mem, page, n)
    if err:
        raise OSError(-err, _os.strerror(-err))
    return 0
