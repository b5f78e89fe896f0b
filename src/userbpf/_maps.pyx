# cython: language_level=3
"""Maps in C: one extension assembled from a .pxi per map type.

Each map is a ``ubpf_map`` (include/userbpf/map.h) whose ops table the
interpreter's helpers call directly. :class:`MapCore` is the thin Python
wrapper that owns one; the simulated kernel (``userbpf.kernel``) validates
attrs, keeps fds, ids and pins, and turns the negative errnos returned here
into ``OSError``.
"""
from libc.errno cimport (E2BIG, EAGAIN, EBUSY, EEXIST, EINVAL, ENOENT, ENOMEM, ENOSPC,
                         EOPNOTSUPP, EPERM)
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset
from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from userbpf.includes.vm cimport (vm_access_ok, vm_helper_fn, vm_map_arg, vm_run,
                                  VM_STATUS_ERR_MAP_ARG, VM_STATUS_ERR_MEM)

import errno as _errno
import os as _os

# Kernel flag values (include/uapi/linux/bpf.h).
cdef enum:
    BPF_ANY = 0
    BPF_NOEXIST = 1
    BPF_EXIST = 2
    BPF_F_LOCK = 4
    BPF_F_NO_PREALLOC = 1
    BPF_F_RDONLY_PROG = 1 << 7
    BPF_F_NUMA_NODE = 1 << 2
    BPF_F_RDONLY = 1 << 3
    BPF_F_WRONLY = 1 << 4
    BPF_F_ZERO_SEED = 1 << 6
    BPF_F_WRONLY_PROG = 1 << 8
    BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG
    # the kernel's internal "operation not supported" (include/linux/errno.h);
    # bpf() returns it to user space as errno 524 for ring buffers and others
    ENOTSUPP = 524
    ARRAY_LOCK_STRIPES = 64
    HASH_CHUNK_ELEMS = 256

include "maps/array.pxi"
include "maps/hash.pxi"
include "maps/memory.pxi"
include "maps/queue_stack.pxi"
include "maps/bloom.pxi"
include "maps/ringbuf.pxi"
include "maps/perf_event_array.pxi"
include "maps/lpm_trie.pxi"
include "maps/lru.pxi"
include "maps/helpers.pxi"

# map type numbers, as enum bpf_map_type
_HASH, _ARRAY, _PERCPU_HASH, _PERCPU_ARRAY = 1, 2, 5, 6
_QUEUE, _STACK, _RINGBUF, _BLOOM_FILTER = 22, 23, 27, 30
_LPM_TRIE = 11
_PROG_ARRAY, _PERF_EVENT_ARRAY = 3, 4
_ARRAY_OF_MAPS, _HASH_OF_MAPS = 12, 13
_LRU_HASH, _LRU_PERCPU_HASH = 9, 10


cdef class MapCore


cdef ringbuf_impl *_ringbuf_of(MapCore core) except NULL:
    core._ensure_alive()
    if core.map.map_type != _RINGBUF:
        raise OSError(_errno.EINVAL, "not a ring buffer map")
    return <ringbuf_impl *>core.map.impl


cdef ubpf_perf_array *_perf_array_of(MapCore core) except NULL:
    core._ensure_alive()
    if core.map.map_type != _PERF_EVENT_ARRAY:
        raise OSError(_errno.EINVAL, "not a perf event array map")
    return <ubpf_perf_array *>core.map.impl


cdef class MapCore:
    """One map's C storage. Built by ``userbpf.kernel`` after validation.

    >>> m = MapCore(2, 4, 8, 4, 0, 1)            # an ARRAY of 4 u64
    >>> m.update((1).to_bytes(4, "little"), (7).to_bytes(8, "little"), 0)
    >>> int.from_bytes(m.lookup((1).to_bytes(4, "little")), "little")
    7

    Keyless maps (QUEUE, STACK, BLOOM_FILTER, RINGBUF) take ``key=None``
    (or ``b""``); ``map_extra`` is ``bpf_attr.map_extra`` (a bloom filter's
    number of hashes in its low 4 bits).

    >>> q = MapCore(22, 0, 4, 2, 0, 1)           # a QUEUE of 2 u32
    >>> q.update(None, b"\\1\\0\\0\\0"); q.update(None, b"\\2\\0\\0\\0")
    >>> q.lookup_and_delete(None)
    b'\\x01\\x00\\x00\\x00'
    """

    def __cinit__(self):
        self.map = NULL

    def __init__(self, uint32_t map_type, uint32_t key_size, uint32_t value_size,
                 uint32_t max_entries, uint32_t map_flags, uint32_t ncpus, name=b"",
                 uint64_t seed=0, uint64_t map_extra=0):
        if ncpus < 1 or ncpus > UBPF_MAX_CPUS:
            raise ValueError(f"ncpus must be 1..{UBPF_MAX_CPUS}")
        self.map = <ubpf_map *>calloc(1, sizeof(ubpf_map))
        if self.map == NULL:
            raise MemoryError()
        m = self.map
        m.map_type, m.key_size, m.value_size = map_type, key_size, value_size
        m.max_entries, m.map_flags, m.ncpus = max_entries, map_flags, ncpus
        m.region_writable = not (map_flags & BPF_F_RDONLY_PROG)
        name = bytes(name)[:UBPF_OBJ_NAME_LEN - 1]
        memcpy(m.name, <const char *>name, len(name))
        if map_type == _ARRAY or map_type == _PERCPU_ARRAY:
            array_init(m, map_type == _PERCPU_ARRAY)
        elif map_type == _HASH or map_type == _PERCPU_HASH:
            if not seed:
                seed = int.from_bytes(_os.urandom(8), "little") | 1
            hash_init(m, map_type == _PERCPU_HASH, seed)
        elif map_type == _QUEUE or map_type == _STACK:
            queue_stack_init(m, map_type == _STACK)
        elif map_type == _BLOOM_FILTER:
            if not seed:
                seed = int.from_bytes(_os.urandom(4), "little")
            bloom_init(m, map_extra, <uint32_t>seed)
        elif map_type == _RINGBUF:
            ringbuf_init(m)
        elif map_type == _PERF_EVENT_ARRAY:
            perf_array_init(m)
        elif map_type == _LPM_TRIE:
            lpm_init(m)
        elif map_type == _LRU_HASH or map_type == _LRU_PERCPU_HASH:
            if not seed:
                seed = int.from_bytes(_os.urandom(8), "little") | 1
            lru_init(m, map_type == _LRU_PERCPU_HASH, seed)
        elif map_type == _ARRAY_OF_MAPS or map_type == _HASH_OF_MAPS:
            # values are the inner maps' ubpf_map pointers, set by userbpf.kernel
            if value_size != 8:
                raise ValueError("maps of maps store 8-byte map pointers")
            m.inner_maps = 1
            if map_type == _ARRAY_OF_MAPS:
                array_init(m, False)
            else:
                if not seed:
                    seed = int.from_bytes(_os.urandom(8), "little") | 1
                hash_init(m, False, seed)
        elif map_type == _PROG_ARRAY:
            # values are the target programs' vm_prog pointers, set by
            # userbpf.kernel; only bpf_tail_call reads them (vm.h keeps them
            # out of the run's memory and away from the map helpers)
            if value_size != 8:
                raise ValueError("a PROG_ARRAY's C storage holds 8-byte program pointers")
            array_init(m, False)
        else:
            raise NotImplementedError(f"map type {map_type} has no C storage yet")

    def __dealloc__(self):
        if self.map != NULL:
            if self.map.ops != NULL and self.map.ops.destroy != NULL:
                self.map.ops.destroy(self.map)
            else:
                free(self.map.impl)
            free(self.map)
            self.map = NULL

    cdef int _ensure_alive(self) except -1:
        if self.map == NULL:
            raise ValueError("map storage is not initialised")
        return 0

    # -- properties ---------------------------------------------------------
    @property
    def address(self):
        """The ``ubpf_map *``, as programs see it after map-fd resolution."""
        return <size_t>self.map

    @property
    def map_type(self):
        return self.map.map_type

    @property
    def key_size(self):
        return self.map.key_size

    @property
    def value_size(self):
        return self.map.value_size

    @property
    def max_entries(self):
        return self.map.max_entries

    @property
    def map_flags(self):
        return self.map.map_flags

    @property
    def ncpus(self):
        return self.map.ncpus

    @property
    def sys_value_size(self):
        """Bytes of a value as user space sees it (all CPUs for per-CPU maps)."""
        return self._sys_value_size()

    # -- the bpf() operations: bytes in, bytes out; failures raise OSError --
    cdef bytes _key(self, key):
        cdef bytes k
        if type(key) is bytes:              # the hot path: no copy
            k = <bytes>key
        elif key is None:                   # keyless maps
            k = b""
        elif isinstance(key, int):          # bytes(4) would be four zero bytes
            raise TypeError("keys are bytes-like, not int")
        else:
            k = bytes(key)
        if <uint32_t>len(k) != self.map.key_size:
            raise OSError(_errno.EINVAL, f"key is {len(k)} bytes, map key_size is "
                                         f"{self.map.key_size}")
        return k

    cdef inline uint64_t _sys_value_size(self) noexcept:
        if self.map.map_type in (_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH):
            return ((self.map.value_size + 7) & ~7u) * self.map.ncpus
        return self.map.value_size

    def lookup(self, key, uint64_t flags=0, value=None):
        """The value for ``key`` (key None for queue, stack and bloom filter maps).

        ``value`` fills the value buffer first: a bloom filter's lookup tests
        the element passed there (0 / ENOENT), as bpf(BPF_MAP_LOOKUP_ELEM) does.
        The GIL is kept: these calls take a few map locks for nanoseconds.
        """
        cdef bytes k = self._key(key)
        cdef Py_ssize_t n
        cdef long err
        cdef bytes out, given
        cdef char *op
        self._ensure_alive()
        n = <Py_ssize_t>self._sys_value_size()
        out = PyBytes_FromStringAndSize(NULL, n)     # filled in place
        op = PyBytes_AS_STRING(out)
        if value is not None:
            given = bytes(value)
            if len(given) != n:
                raise OSError(_errno.EINVAL, f"value is {len(given)} bytes, expected {n}")
            memcpy(op, <const char *>given, n)
        else:
            memset(op, 0, n)
        if self.map.ops.sys_lookup == NULL:
            raise OSError(_errno.EOPNOTSUPP, _os.strerror(_errno.EOPNOTSUPP))
        err = self.map.ops.sys_lookup(self.map, <const char *>k, op, flags)
        if err:
            raise OSError(-err, _os.strerror(-err))
        return out

    def update(self, key, value, uint64_t flags=0):
        cdef bytes k = self._key(key)
        cdef bytes v = <bytes>value if type(value) is bytes else bytes(value)
        cdef long err
        self._ensure_alive()
        if <uint64_t>len(v) != self._sys_value_size():
            raise OSError(_errno.EINVAL, f"value is {len(v)} bytes, expected "
                                         f"{self._sys_value_size()}")
        if self.map.ops.sys_update == NULL:
            raise OSError(_errno.EOPNOTSUPP, _os.strerror(_errno.EOPNOTSUPP))
        err = self.map.ops.sys_update(self.map, <const char *>k, <const char *>v, flags)
        if err:
            raise OSError(-err, _os.strerror(-err))

    # -- the Map fast path: small int keys and values converted here in C ----
    cdef int _int_key(self, key, uint8_t *buf) except -1:
        """Put ``key`` (bytes of key_size, or a non-negative int that fits)
        into ``buf`` as the map's key bytes (little-endian for ints)."""
        cdef uint64_t v
        cdef uint32_t i, n = self.map.key_size
        if type(key) is int and n <= 8:
            v = key                             # OverflowError for < 0 or >= 2**64
            if n < 8 and v >> (8 * n):
                raise OverflowError(f"key {key} does not fit in {n} bytes")
            for i in range(n):
                buf[i] = (v >> (8 * i)) & 0xff
            return 0
        k = self._key(key)
        memcpy(buf, <const char *>k, n)
        return 0

    def get(self, key, bint as_int=False):
        """Lookup for userbpf.Map: None when the key is absent; the value as
        an int (little-endian) with ``as_int``, else bytes. Keys as in
        :meth:`lookup`, or ints."""
        cdef uint8_t kbuf[64]
        cdef uint8_t vbuf[8]
        cdef uint64_t v = 0
        cdef uint32_t i
        cdef long err
        self._ensure_alive()
        if self.map.key_size > sizeof(kbuf) or self.map.ops.sys_lookup == NULL or \
                (as_int and self._sys_value_size() > 8):
            try:
                data = self.lookup(key)
            except OSError as e:
                if e.errno == _errno.ENOENT:
                    return None
                raise
            return int.from_bytes(data, "little") if as_int else data
        self._int_key(key, kbuf)
        if not as_int:
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>self._sys_value_size())
            memset(PyBytes_AS_STRING(out), 0, self._sys_value_size())
            err = self.map.ops.sys_lookup(self.map, kbuf, PyBytes_AS_STRING(out), 0)
        else:
            memset(vbuf, 0, 8)
            err = self.map.ops.sys_lookup(self.map, kbuf, vbuf, 0)
            for i in range(self.map.value_size):
                v |= (<uint64_t>vbuf[i]) << (8 * i)
            out = v
        if err == -ENOENT:
            return None
        if err:
            raise OSError(-err, _os.strerror(-err))
        return out

    def set(self, key, value, uint64_t flags=0):
        """Update for userbpf.Map: keys as :meth:`get`, values bytes or ints."""
        cdef uint8_t kbuf[64]
        cdef uint8_t vbuf[8]
        cdef uint64_t v
        cdef uint32_t i, n = self.map.value_size
        cdef long err
        self._ensure_alive()
        if self.map.key_size > sizeof(kbuf) or self.map.ops.sys_update == NULL or \
                not (type(value) is int and n <= 8 and self._sys_value_size() == n):
            if type(value) is int:
                value = value.to_bytes(n, "little")
            if type(key) is int:
                key = key.to_bytes(self.map.key_size, "little")
            self.update(key, value, flags)
            return
        v = value
        if n < 8 and v >> (8 * n):
            raise OverflowError(f"value {value} does not fit in {n} bytes")
        for i in range(n):
            vbuf[i] = (v >> (8 * i)) & 0xff
        self._int_key(key, kbuf)
        err = self.map.ops.sys_update(self.map, kbuf, vbuf, flags)
        if err:
            raise OSError(-err, _os.strerror(-err))

    def delete(self, key):
        cdef bytes k = self._key(key)
        cdef long err
        self._ensure_alive()
        if self.map.ops.delete_elem == NULL:
            raise OSError(_errno.EINVAL, _os.strerror(_errno.EINVAL))
        err = self.map.ops.delete_elem(self.map, <const char *>k)
        if err:
            raise OSError(-err, _os.strerror(-err))

    def lookup_and_delete(self, key, uint64_t flags=0):
        cdef bytes k = self._key(key)
        cdef bytearray out = bytearray(self.sys_value_size)
        cdef long err
        cdef char *kp = k
        cdef char *op = out
        self._ensure_alive()
        if self.map.ops.sys_lookup_and_delete == NULL:
            raise OSError(_errno.EOPNOTSUPP, _os.strerror(_errno.EOPNOTSUPP))
        with nogil:
            err = self.map.ops.sys_lookup_and_delete(self.map, kp, op, flags)
        if err:
            raise OSError(-err, _os.strerror(-err))
        return bytes(out)

    # -- hash buckets, for the batch commands (their token is a bucket number)
    cdef void *_hash(self) except NULL:
        self._ensure_alive()
        if self.map.map_type not in (_HASH, _PERCPU_HASH, _LRU_HASH, _LRU_PERCPU_HASH,
                                     _HASH_OF_MAPS):
            raise ValueError("not a hash map")
        return self.map.impl      # a hash_impl (LRU maps start with one)

    @property
    def nbuckets(self):
        """Number of hash buckets (a power of two >= max_entries, as the kernel)."""
        return (<hash_impl *>self._hash()).nbuckets

    def bucket_items(self, uint32_t b):
        """[(key, value)] of bucket ``b`` in list order (values as user space sees them)."""
        cdef hash_impl *t = <hash_impl *>self._hash()
        cdef uint64_t ks = self.map.key_size, vs = self.sys_value_size, n = 0, i
        cdef uint32_t e
        cdef uint8_t *buf = NULL
        if b >= t.nbuckets:
            raise ValueError(f"bucket {b} >= {t.nbuckets}")
        ubpf_spin_lock(&t.locks[b])
        e = t.heads[b]
        while e:
            n += 1
            e = _hnext(t, e - 1)[0]
        buf = <uint8_t *>malloc(n * (ks + vs) + 1)
        if buf != NULL:
            e = t.heads[b]
            i = 0
            while e:
                memcpy(buf + i * (ks + vs), _hkey(self.map, t, e - 1), ks)
                _hash_copy_out(self.map, t, e - 1, buf + i * (ks + vs) + ks)
                i += 1
                e = _hnext(t, e - 1)[0]
        ubpf_spin_unlock(&t.locks[b])
        if buf == NULL:
            raise MemoryError()
        try:
            return [((<char *>buf)[i * (ks + vs):i * (ks + vs) + ks],
                     (<char *>buf)[i * (ks + vs) + ks:(i + 1) * (ks + vs)]) for i in range(n)]
        finally:
            free(buf)

    def get_next_key(self, key=None):
        """The key after ``key`` (the first key for None or an absent key)."""
        cdef bytes k
        cdef char *kp = NULL
        cdef bytearray out = bytearray(self.map.key_size)
        cdef char *op = out
        cdef long err
        self._ensure_alive()
        if key is not None:
            k = self._key(key)
            kp = k
        with nogil:
            err = self.map.ops.get_next_key(self.map, kp, op)
        if err:
            raise OSError(-err, _os.strerror(-err))
        return bytes(out)

    def value_view(self):
        """A writable memoryview of the contiguous value memory (mmapable arrays)."""
        self._ensure_alive()
        if self.map.region == NULL:
            raise OSError(_errno.EINVAL, "this map's values are not contiguous")
        return _map_memory(self, self.map.region, self.map.region_len, False)

    def ringbuf_view(self, producer=False):
        """Memoryviews ``(consumer_page, producer_page, data)`` of a ring buffer,
        as ``mmap`` of the map's fd shows them: ``consumer_pos`` and
        ``producer_pos`` are the u64s at offset 0 of their pages and ``data``
        is the ring mapped twice (``2 * max_entries`` bytes; byte i and
        i + max_entries are the same memory, so a wrapping record reads as
        one span). As the kernel's mappings, a consumer (``producer=False``)
        may write only the consumer page; a user-space producer
        (``producer=True``, as for BPF_MAP_TYPE_USER_RINGBUF) everything but it.

        >>> rb = MapCore(27, 0, 0, 4096, 0, 1)
        >>> cons, prod, data = rb.ringbuf_view()
        >>> len(cons), len(prod), len(data), data.readonly
        (4096, 4096, 8192, True)
        """
        cdef ringbuf_impl *r
        cdef uint64_t page
        self._ensure_alive()
        if self.map.map_type != _RINGBUF:
            raise OSError(_errno.EINVAL, "not a ring buffer map")
        r = <ringbuf_impl *>self.map.impl
        page = r.mem.page_size
        return (_map_memory(self, r.mem.base, page, producer),
                _map_memory(self, r.mem.base + page, page, not producer),
                _map_memory(self, r.mem.base + 2 * page, 2 * r.mem.data_size, not producer))

    def ringbuf_consume(self, callback=None):
        """Consume the committed records from consumer_pos on, in order, up to
        the first one still being written; discarded records are skipped and
        consumer_pos is published after each record. ``callback(bytes)`` gets
        each sample; a negative int return stops after that record and is
        returned (libbpf's rule). Without a callback the records are drained
        in C without the GIL. Returns the number of records delivered.

        >>> rb = MapCore(27, 0, 0, 4096, 0, 1)
        >>> rb.ringbuf_consume(print)
        0
        """
        cdef ringbuf_impl *r = _ringbuf_of(self)
        cdef _rb_py_call c
        cdef uint64_t n, nbytes = 0
        cdef int stop = 0
        if ubpf_ringbuf_consumer_enter(r):
            raise OSError(_errno.EBUSY, "the ring buffer is being consumed by another reader")
        try:
            if callback is None:
                with nogil:
                    n = ubpf_ringbuf_drain(r, NULL, NULL, &stop, &nbytes)
                return n
            errors = []
            memset(&c, 0, sizeof(c))
            c.callback = <PyObject *>callback
            c.errors = <PyObject *>errors
            n = ubpf_ringbuf_drain(r, _rb_py_sample, &c, &stop, &nbytes)
            if errors:
                raise errors[0]
            if c.result:
                return c.result
            return n
        finally:
            ubpf_ringbuf_consumer_leave(r)

    def ringbuf_wait(self, double timeout=-1.0):
        """Block (without the GIL) until a committed record waits at
        consumer_pos, a producer's wakeup, or ``timeout`` seconds (negative:
        forever). True when a record is ready."""
        cdef ringbuf_impl *r = _ringbuf_of(self)
        # poll() takes int milliseconds; longer waits are capped (~24 days)
        cdef int ms = -1 if timeout < 0 else <int>min(timeout * 1000.0 + 0.999, 2147483647.0)
        cdef int ready
        with nogil:
            ready = ubpf_ringbuf_wait(r, ms)
        return bool(ready)

    def ringbuf_query(self, uint64_t flags):
        """What bpf_ringbuf_query(map, flags) returns to a program."""
        return ubpf_ringbuf_query(_ringbuf_of(self), flags)

    @property
    def ringbuf_wakeups(self):
        """Consumer notifications producers have sent so far (where the kernel
        queues its wakeup: FORCE_WAKEUP, or the consumer caught up to the
        record and no NO_WAKEUP)."""
        return _ringbuf_of(self).wakeups

    @property
    def ringbuf_waiters(self):
        """Consumers blocked in :meth:`ringbuf_wait` right now."""
        return _ringbuf_of(self).waiters

    # -- PERF_EVENT_ARRAY sample buffers (userbpf.PerfBuffer) ---------------
    def perf_buffer_install(self, uint32_t index, uint64_t data_size):
        """Give slot ``index`` a fresh, empty sample buffer of ``data_size``
        bytes (a power of two), replacing any buffer it had (where libbpf
        stores a perf event fd in the slot)."""
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        cdef ubpf_perfbuf *pb
        if index >= self.map.max_entries:
            raise OSError(_errno.E2BIG, f"index {index} >= max_entries {self.map.max_entries}")
        if data_size < 8 or data_size & (data_size - 1):
            raise OSError(_errno.EINVAL, "the buffer size must be a power of two >= 8")
        pb = ubpf_perfbuf_new(data_size)
        if pb == NULL:
            raise MemoryError()
        ubpf_perf_install(pa, index, pb)

    def perf_buffer_remove(self, uint32_t index):
        """Empty slot ``index`` (programs then get -ENOENT for it)."""
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        if index >= self.map.max_entries:
            raise OSError(_errno.E2BIG, f"index {index} >= max_entries {self.map.max_entries}")
        ubpf_perf_install(pa, index, NULL)

    def perf_buffer_installed(self, uint32_t index):
        """Does slot ``index`` hold a sample buffer?"""
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        return index < self.map.max_entries and ubpf_perf_slot(pa, index) != NULL

    def perf_lost(self, uint32_t index):
        """Samples dropped so far in slot ``index``'s buffer (0 without one)."""
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        cdef ubpf_perfbuf *pb
        if index >= self.map.max_entries:
            return 0
        pb = ubpf_perf_slot(pa, index)
        return 0 if pb == NULL else pb.lost

    def perf_consume(self, callback, lost_callback=None):
        """Drain every slot's buffer, slot 0 first, each in order: new losses
        first as ``lost_callback(cpu, count)``, then ``callback(cpu, bytes)``
        per sample. A negative int returned by either stops after that call
        and is returned; an exception stops and propagates (the sample counts
        as consumed). Returns the number of samples delivered.

        >>> pa = MapCore(4, 4, 4, 2, 0, 2)
        >>> pa.perf_buffer_install(1, 4096)
        >>> pa.perf_consume(print)
        0
        """
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        cdef ubpf_perfbuf *pb
        cdef uint32_t cpu
        cdef uint64_t lost
        cdef long n = 0
        if ubpf_perf_consumer_enter(pa):
            raise OSError(_errno.EBUSY, "the perf buffers are being consumed by another reader")
        try:
            for cpu in range(self.map.max_entries):
                pb = ubpf_perf_slot(pa, cpu)
                if pb == NULL:
                    continue
                lost = ubpf_pb_take_lost(pb)
                if lost and lost_callback is not None:
                    r = lost_callback(cpu, lost)
                    if r is not None and r < 0:
                        return r
                while True:
                    sample = _perf_take(pb)
                    if sample is None:
                        break
                    n += 1
                    r = callback(cpu, sample)
                    if r is not None and r < 0:
                        return r
            return n
        finally:
            ubpf_perf_consumer_leave(pa)

    def perf_wait(self, double timeout=-1.0):
        """Block (without the GIL) until a sample or a loss waits in any slot,
        or ``timeout`` seconds (negative: forever). True when one is ready."""
        cdef ubpf_perf_array *pa = _perf_array_of(self)
        cdef int ms = -1 if timeout < 0 else <int>min(timeout * 1000.0 + 0.999, 2147483647.0)
        cdef int ready
        cdef uint32_t n = self.map.max_entries
        with nogil:
            ready = ubpf_perf_wait(pa, n, ms)
        return bool(ready)

    def program_lookup(self, key, uint32_t cpu=0):
        """What bpf_map_lookup_elem returns to a program: the value's address or 0."""
        cdef bytes k = self._key(key)
        cdef char *kp = k
        return <size_t>self.map.ops.lookup(self.map, kp, cpu)

    def program_update(self, key, value, uint64_t flags=0, uint32_t cpu=0):
        """bpf_map_update_elem from a program on ``cpu``: 0 or a negative errno."""
        cdef bytes k = self._key(key)
        cdef bytes v = bytes(value)
        cdef char *kp = k
        cdef char *vp = v
        if len(v) != self.map.value_size:
            raise ValueError("value size")
        return self.map.ops.update(self.map, kp, vp, flags, cpu)
