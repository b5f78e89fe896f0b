# BPF_MAP_TYPE_RINGBUF: storage, layout and protocol (include/userbpf/ringbuf.h).
#
# max_entries is the data size in bytes: a power of two and a multiple of
# the page size, as the kernel requires (the host's page size, as the
# kernel's PAGE_SIZE). The memory is the kernel's mmap layout: consumer
# page, producer page, then the data pages mapped twice back to back. The
# producer side (bpf_ringbuf_reserve/submit/discard/output/query) is C in
# ringbuf.h with the helpers in helpers.pxi; the consumer is
# MapCore.ringbuf_consume / ringbuf_wait under userbpf.RingBuffer.
# map.region stays NULL: programs may touch only the samples of records
# reserved and not yet committed (the `contains` op), as the verifier
# allows. The ring has no elements: every element command answers the
# kernel's internal ENOTSUPP (524), as the kernel's ringbuf map ops do.

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

    ctypedef struct ubpf_ringbuf_hdr:
        uint32_t len
        uint32_t pg_off
    ctypedef struct ubpf_ringbuf:
        ubpf_ringbuf_mem mem
        uint64_t pending_pos
        uint64_t wakeups
        int waiters
        int efd
        int consuming
    ctypedef int (*ubpf_rb_sample_fn)(void *arg, const uint8_t *sample, uint32_t len) noexcept
    uint32_t UBPF_RB_BUSY_BIT, UBPF_RB_NO_WAKEUP, UBPF_RB_FORCE_WAKEUP
    uint32_t UBPF_RB_AVAIL_DATA, UBPF_RB_RING_SIZE, UBPF_RB_CONS_POS, UBPF_RB_PROD_POS
    int ubpf_ringbuf_init(ubpf_ringbuf *rb)
    void ubpf_ringbuf_fini(ubpf_ringbuf *rb)
    void *ubpf_ringbuf_reserve(ubpf_ringbuf *rb, uint64_t size)
    ubpf_ringbuf_hdr *ubpf_ringbuf_busy_hdr(const ubpf_ringbuf *rb, uint64_t sample)
    void ubpf_ringbuf_commit(ubpf_ringbuf *rb, ubpf_ringbuf_hdr *hdr, uint64_t flags, int discard)
    int ubpf_ringbuf_contains(const ubpf_ringbuf *rb, uint64_t addr, uint64_t size)
    uint64_t ubpf_ringbuf_drain(ubpf_ringbuf *rb, ubpf_rb_sample_fn fn, void *arg, int *stop,
                                uint64_t *nbytes)
    uint64_t ubpf_ringbuf_query(const ubpf_ringbuf *rb, uint64_t flags)
    int ubpf_ringbuf_ready(const ubpf_ringbuf *rb)
    int ubpf_ringbuf_wait(ubpf_ringbuf *rb, int timeout_ms)
    int ubpf_ringbuf_consumer_enter(ubpf_ringbuf *rb)
    void ubpf_ringbuf_consumer_leave(ubpf_ringbuf *rb)
    uint64_t *ubpf_rb_cons(const ubpf_ringbuf *rb)
    uint64_t *ubpf_rb_prod(const ubpf_ringbuf *rb)
    uint8_t *ubpf_rb_data(const ubpf_ringbuf *rb)
    uint64_t ubpf_rb_mask(const ubpf_ringbuf *rb)


cdef enum:
    RINGBUF_CREATE_FLAG_MASK = BPF_F_NUMA_NODE
    # The kernel's 64 GiB RINGBUF_MAX_DATA_SZ (E2BIG) is above any power of
    # two a u32 max_entries can hold, so it is not checked here.


ctypedef ubpf_ringbuf ringbuf_impl


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
        ubpf_ringbuf_fini(r)
        free(r)
    m.impl = NULL


cdef int ringbuf_contains(const ubpf_map *m, uint64_t addr, uint64_t size) noexcept nogil:
    return ubpf_ringbuf_contains(<const ringbuf_impl *>m.impl, addr, size)


cdef ubpf_map_ops RINGBUF_OPS
RINGBUF_OPS.lookup = ringbuf_lookup
RINGBUF_OPS.update = ringbuf_update
RINGBUF_OPS.delete_elem = ringbuf_delete
RINGBUF_OPS.sys_lookup = ringbuf_sys_lookup
RINGBUF_OPS.sys_update = ringbuf_sys_update
RINGBUF_OPS.sys_lookup_and_delete = ringbuf_sys_lookup_and_delete
RINGBUF_OPS.get_next_key = ringbuf_get_next_key
RINGBUF_OPS.contains = ringbuf_contains
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
    r.efd = -1
    m.impl = r
    m.ops = &RINGBUF_OPS
    err = ubpf_ringbuf_mem_alloc(&r.mem, page, n)
    if not err:
        err = ubpf_ringbuf_init(r)
    if err:
        raise OSError(-err, _os.strerror(-err))
    return 0


# ---- the consumer's Python callback ---------------------------------------

cdef struct _rb_py_call:
    PyObject *callback
    PyObject *errors      # a list: the exception the callback raised
    long result          # the callback's negative return that stopped the drain


cdef int _rb_py_sample(void *arg, const uint8_t *sample, uint32_t length) noexcept with gil:
    """Calls the Python callback with a copy of the sample (the space is the
    producers' again once consumer_pos moves past it). A negative int return
    stops the drain (libbpf's rule); an exception stops it and is kept."""
    cdef _rb_py_call *c = <_rb_py_call *>arg
    cdef object r
    try:
        r = (<object>c.callback)(PyBytes_FromStringAndSize(<const char *>sample, length))
        if r is not None and r < 0:
            c.result = r
            return 1
        return 0
    except BaseException as e:
        (<list>c.errors).append(e)
        return 1
