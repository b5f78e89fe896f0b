# BPF_MAP_TYPE_PERF_EVENT_ARRAY: per-slot sample buffers (include/userbpf/perfbuf.h).
#
# Keys are u32 slot indices (a CPU number), values u32 perf event fds in the
# kernel. userbpf simulates no perf events, so a slot holds a sample buffer
# installed directly by userbpf.PerfBuffer (MapCore.perf_buffer_install),
# where libbpf's perf_buffer__new opens an event per CPU and stores its fd.
# bpf_perf_event_output (helpers.pxi) appends to the buffer of the run's
# CPU (or an explicit index); the consumer is MapCore.perf_consume.
# Element commands from user space answer ENOTSUPP, as every fd-array
# type without storage did before (tests/kernel/test_map_elem.py holds
# that). The live kernel (6.18) differs for all but lookup: update is
# EINVAL for flags, E2BIG for an index, then EBADF for any fd that is not a
# perf event (userbpf has none, so EBADF always); delete is E2BIG / ENOENT;
# get_next_key walks indices as an array does; lookup is ENOTSUPP.
# map.region stays NULL: programs never see the slots as memory.

cdef extern from "userbpf/perfbuf.h" nogil:
    ctypedef struct ubpf_perfbuf:
        uint8_t *data
        uint64_t data_size
        uint64_t head
        uint64_t tail
        uint64_t lost
        uint64_t lost_seen
        ubpf_perfbuf *retired
    ctypedef struct ubpf_perf_array:
        ubpf_perfbuf **slots
        ubpf_perfbuf *retired
        int waiters
        int efd
        int consuming
    uint32_t UBPF_PB_HDR_SZ
    uint64_t ubpf_pb_rec_len(uint64_t size)
    ubpf_perfbuf *ubpf_perfbuf_new(uint64_t data_size)
    void ubpf_perfbuf_free(ubpf_perfbuf *pb)
    void ubpf_pb_get(const ubpf_perfbuf *pb, uint64_t pos, void *dst, uint64_t n)
    long ubpf_perfbuf_output(ubpf_perf_array *pa, ubpf_perfbuf *pb, const void *sample,
                             uint64_t size)
    int ubpf_perf_array_init(ubpf_perf_array *pa)
    void ubpf_perf_array_close(ubpf_perf_array *pa)
    uint64_t ubpf_pb_head(const ubpf_perfbuf *pb)
    void ubpf_pb_set_tail(ubpf_perfbuf *pb, uint64_t tail)
    uint64_t ubpf_pb_take_lost(ubpf_perfbuf *pb)
    int ubpf_perf_consumer_enter(ubpf_perf_array *pa)
    void ubpf_perf_consumer_leave(ubpf_perf_array *pa)
    ubpf_perfbuf *ubpf_perf_slot(const ubpf_perf_array *pa, uint32_t i)
    void ubpf_perf_install(ubpf_perf_array *pa, uint32_t i, ubpf_perfbuf *pb)
    int ubpf_perf_wait(ubpf_perf_array *pa, uint32_t n, int timeout_ms)


cdef enum:
    _PERF_EVENT_ARRAY_T = 4      # BPF_MAP_TYPE_PERF_EVENT_ARRAY, for the helper


cdef long perf_array_enotsupp_update(ubpf_map *m, const void *key, const void *value,
                                     uint64_t flags) noexcept nogil:
    return -ENOTSUPP


cdef long perf_array_enotsupp_lookup(ubpf_map *m, const void *key, void *value,
                                     uint64_t flags) noexcept nogil:
    return -ENOTSUPP


cdef long perf_array_enotsupp_key(ubpf_map *m, const void *key) noexcept nogil:
    return -ENOTSUPP


cdef long perf_array_get_next_key(ubpf_map *m, const void *key, void *next_key) noexcept nogil:
    return -ENOTSUPP


cdef void perf_array_destroy(ubpf_map *m) noexcept nogil:
    cdef ubpf_perf_array *pa = <ubpf_perf_array *>m.impl
    cdef ubpf_perfbuf *pb
    cdef ubpf_perfbuf *nxt
    cdef uint32_t i
    if pa != NULL:
        if pa.slots != NULL:
            for i in range(m.max_entries):
                ubpf_perfbuf_free(pa.slots[i])
            free(pa.slots)
        pb = pa.retired
        while pb != NULL:
            nxt = pb.retired
            ubpf_perfbuf_free(pb)
            pb = nxt
        ubpf_perf_array_close(pa)
        free(pa)
    m.impl = NULL


cdef ubpf_map_ops PERF_ARRAY_OPS
PERF_ARRAY_OPS.sys_lookup = perf_array_enotsupp_lookup
PERF_ARRAY_OPS.sys_update = perf_array_enotsupp_update
PERF_ARRAY_OPS.sys_lookup_and_delete = perf_array_enotsupp_lookup
PERF_ARRAY_OPS.delete_elem = perf_array_enotsupp_key
PERF_ARRAY_OPS.get_next_key = perf_array_get_next_key
PERF_ARRAY_OPS.destroy = perf_array_destroy


cdef int perf_array_init(ubpf_map *m) except -1:
    """Slots for max_entries buffers, all empty (the kernel's checks are in
    userbpf.kernel.maps.check_fd_array)."""
    cdef ubpf_perf_array *pa
    cdef int err
    if m.key_size != 4 or m.value_size != 4 or m.max_entries == 0:
        raise OSError(EINVAL, "PERF_EVENT_ARRAY needs key_size 4, value_size 4, max_entries > 0")
    pa = <ubpf_perf_array *>calloc(1, sizeof(ubpf_perf_array))
    if pa == NULL:
        raise MemoryError()
    pa.efd = -1
    m.impl = pa
    m.ops = &PERF_ARRAY_OPS
    pa.slots = <ubpf_perfbuf **>calloc(m.max_entries, sizeof(ubpf_perfbuf *))
    if pa.slots == NULL:
        raise MemoryError()
    err = ubpf_perf_array_init(pa)
    if err:
        raise OSError(-err, _os.strerror(-err))
    return 0


# ---- the consumer ----------------------------------------------------------

cdef object _perf_take(ubpf_perfbuf *pb):
    """The oldest sample of `pb` as bytes (tail moves past it), or None."""
    cdef uint64_t tail = pb.tail
    cdef uint64_t head = ubpf_pb_head(pb)
    cdef uint32_t hdr[2]
    cdef object out
    if tail == head:
        return None
    ubpf_pb_get(pb, tail, hdr, UBPF_PB_HDR_SZ)
    out = PyBytes_FromStringAndSize(NULL, hdr[0])
    if hdr[0]:
        ubpf_pb_get(pb, tail + UBPF_PB_HDR_SZ, PyBytes_AS_STRING(out), hdr[0])
    ubpf_pb_set_tail(pb, tail + ubpf_pb_rec_len(hdr[0]))
    return out
