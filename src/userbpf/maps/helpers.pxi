# The map helpers programs call (kernel ids 1, 2, 3, 87, 88, 89, 195, the
# ring buffer's 130-134 and bpf_perf_event_output, 25).
#
# Every pointer argument is checked against the run's memory before use and
# r1 must be one of the program's maps: a verified program cannot do
# otherwise, an unverified one is stopped cleanly instead of crashing.

cdef inline ubpf_map *_map_arg(vm_run *run, uint64_t r1) noexcept nogil:
    cdef ubpf_map *m = vm_map_arg(run, r1)
    if m == NULL:
        run.status = VM_STATUS_ERR_MAP_ARG
        run.err_addr = r1
    return m


cdef inline bint _mem_arg(vm_run *run, uint64_t addr, uint64_t size, bint write) noexcept nogil:
    if vm_access_ok(run, addr, size, write):
        return True
    run.status = VM_STATUS_ERR_MEM
    run.err_addr = addr
    run.err_size = <uint32_t>size
    run.err_write = write
    return False


cdef uint64_t helper_map_lookup_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.key_size, False):
        return 0
    if m.ops.lookup == NULL:
        return 0
    if m.inner_maps:                # a map of maps gives the inner map itself
        return <uint64_t>ubpf_inner_map(m.ops.lookup(m, <const void *>r2, run.cpu))
    return <uint64_t>m.ops.lookup(m, <const void *>r2, run.cpu)


cdef uint64_t helper_map_update_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.key_size, False) or \
            not _mem_arg(run, r3, m.value_size, False):
        return 0
    if m.ops.update == NULL or m.inner_maps:    # maps of maps change from user space only
        return <uint64_t>-EINVAL
    return <uint64_t>m.ops.update(m, <const void *>r2, <const void *>r3, r4, run.cpu)


cdef uint64_t helper_map_delete_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.key_size, False):
        return 0
    if m.ops.delete_elem == NULL or m.inner_maps:
        return <uint64_t>-EINVAL
    return <uint64_t>m.ops.delete_elem(m, <const void *>r2)


cdef uint64_t helper_map_push_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                   uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.value_size, False):
        return 0
    if m.ops.push == NULL:
        return <uint64_t>-EINVAL
    return <uint64_t>m.ops.push(m, <const void *>r2, r3)


cdef uint64_t helper_map_pop_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                  uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.value_size, True):
        return 0
    if m.ops.pop == NULL:
        return <uint64_t>-EINVAL
    return <uint64_t>m.ops.pop(m, <void *>r2)


cdef uint64_t helper_map_peek_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                   uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    # a bloom filter's peek only reads the element it tests
    if m == NULL or not _mem_arg(run, r2, m.value_size, m.map_type != 30):
        return 0
    if m.ops.peek == NULL:
        return <uint64_t>-EINVAL
    return <uint64_t>m.ops.peek(m, <void *>r2)


cdef uint64_t helper_map_lookup_percpu_elem(uint64_t r1, uint64_t r2, uint64_t r3,
                                            uint64_t r4, uint64_t r5, vm_run *run,
                                            void *data) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL or not _mem_arg(run, r2, m.key_size, False):
        return 0
    # the cpu argument is a u32: the upper half of r3 is not looked at
    if m.ops.lookup == NULL or <uint32_t>r3 >= m.ncpus:
        return 0
    return <uint64_t>m.ops.lookup(m, <const void *>r2, <uint32_t>r3)


# ---- ring buffer helpers (130-134), the kernel's ringbuf.c semantics ------

cdef inline ringbuf_impl *_ringbuf_arg(vm_run *run, uint64_t r1) noexcept nogil:
    cdef ubpf_map *m = _map_arg(run, r1)
    if m == NULL:
        return NULL
    if m.map_type != 27:            # the verifier only lets a RINGBUF map through
        run.status = VM_STATUS_ERR_MAP_ARG
        run.err_addr = r1
        return NULL
    return <ringbuf_impl *>m.impl


cdef uint64_t helper_ringbuf_output(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                    uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ringbuf_impl *rb = _ringbuf_arg(run, r1)
    cdef void *rec
    if rb == NULL or (r3 and not _mem_arg(run, r2, r3, False)):
        return 0
    if r4 & ~(<uint64_t>(UBPF_RB_NO_WAKEUP | UBPF_RB_FORCE_WAKEUP)):
        return <uint64_t>-EINVAL
    rec = ubpf_ringbuf_reserve(rb, r3)
    if rec == NULL:
        return <uint64_t>-EAGAIN
    memcpy(rec, <const void *>r2, r3)
    ubpf_ringbuf_commit(rb, <ubpf_ringbuf_hdr *>rec - 1, r4, False)
    return 0


cdef uint64_t helper_ringbuf_reserve(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ringbuf_impl *rb = _ringbuf_arg(run, r1)
    if rb == NULL or r3:            # flags must be 0
        return 0
    return <uint64_t>ubpf_ringbuf_reserve(rb, r2)


cdef ubpf_ringbuf_hdr *_ringbuf_record_arg(vm_run *run, uint64_t sample,
                                           ringbuf_impl **rb_out) noexcept nogil:
    """The busy record whose sample is at `sample`, in one of the program's
    ring buffers (the verifier guarantees one; the check stops others)."""
    cdef uint32_t i
    cdef ubpf_map *m
    cdef ubpf_ringbuf_hdr *hdr
    if run.prog != NULL:
        for i in range(run.prog.nmaps):
            m = run.prog.maps[i]
            if m.map_type == 27:
                hdr = ubpf_ringbuf_busy_hdr(<ringbuf_impl *>m.impl, sample)
                if hdr != NULL:
                    rb_out[0] = <ringbuf_impl *>m.impl
                    return hdr
    run.status = VM_STATUS_ERR_MEM
    run.err_addr = sample
    run.err_size = 0
    run.err_write = True
    return NULL


cdef uint64_t helper_ringbuf_submit(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                    uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ringbuf_impl *rb = NULL
    cdef ubpf_ringbuf_hdr *hdr = _ringbuf_record_arg(run, r1, &rb)
    if hdr != NULL:
        ubpf_ringbuf_commit(rb, hdr, r2, False)
    return 0


cdef uint64_t helper_ringbuf_discard(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ringbuf_impl *rb = NULL
    cdef ubpf_ringbuf_hdr *hdr = _ringbuf_record_arg(run, r1, &rb)
    if hdr != NULL:
        ubpf_ringbuf_commit(rb, hdr, r2, True)
    return 0


cdef uint64_t helper_ringbuf_query(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                   uint64_t r5, vm_run *run, void *data) noexcept nogil:
    cdef ringbuf_impl *rb = _ringbuf_arg(run, r1)
    if rb == NULL:
        return 0
    return ubpf_ringbuf_query(rb, r2)


# ---- bpf_perf_event_output (25), the kernel's bpf_trace.c semantics -------

cdef enum:
    BPF_F_INDEX_MASK = 0xffffffff
    BPF_F_CURRENT_CPU = 0xffffffff


cdef uint64_t helper_perf_event_output(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                       uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """(ctx, map, flags, data, size). r1 (the context) is not used: the
    sample is only the raw data. Errors in the kernel's order: flags beyond
    the index (-EINVAL), index >= max_entries (-E2BIG), an empty slot
    (-ENOENT), a slot of another CPU (-EOPNOTSUPP: the kernel checks the
    event's oncpu), and a full buffer (-ENOSPC, counted as lost)."""
    cdef ubpf_map *m = _map_arg(run, r2)
    cdef ubpf_perfbuf *pb
    cdef uint64_t index
    if m == NULL:
        return 0
    if m.map_type != _PERF_EVENT_ARRAY_T:     # the verifier only lets this type through
        run.status = VM_STATUS_ERR_MAP_ARG
        run.err_addr = r2
        return 0
    if r5 and not _mem_arg(run, r4, r5, False):
        return 0
    if r3 & ~(<uint64_t>BPF_F_INDEX_MASK):
        return <uint64_t>-EINVAL
    index = r3 & BPF_F_INDEX_MASK
    if index == BPF_F_CURRENT_CPU:
        index = run.cpu
    if index >= m.max_entries:
        return <uint64_t>-E2BIG
    pb = ubpf_perf_slot(<ubpf_perf_array *>m.impl, <uint32_t>index)
    if pb == NULL:
        return <uint64_t>-ENOENT
    if index != run.cpu:
        return <uint64_t>-EOPNOTSUPP
    return <uint64_t>ubpf_perfbuf_output(<ubpf_perf_array *>m.impl, pb, <const void *>r4, r5)


cdef object _helper_capsule(vm_helper_fn fn):
    return PyCapsule_New(<void *>fn, "userbpf.helper", NULL)


# kernel helper id -> C helper capsule (see userbpf._vm.is_c_helper)
MAP_HELPERS = {
    1: _helper_capsule(helper_map_lookup_elem),
    2: _helper_capsule(helper_map_update_elem),
    3: _helper_capsule(helper_map_delete_elem),
    87: _helper_capsule(helper_map_push_elem),
    88: _helper_capsule(helper_map_pop_elem),
    89: _helper_capsule(helper_map_peek_elem),
    195: _helper_capsule(helper_map_lookup_percpu_elem),
    130: _helper_capsule(helper_ringbuf_output),
    131: _helper_capsule(helper_ringbuf_reserve),
    132: _helper_capsule(helper_ringbuf_submit),
    133: _helper_capsule(helper_ringbuf_discard),
    134: _helper_capsule(helper_ringbuf_query),
    25: _helper_capsule(helper_perf_event_output),
}
