# The maps' cdef API; the C structures are declared in includes/map.pxd.
from userbpf.includes.map cimport *


cdef class MapCore:
    cdef ubpf_map *map
    cdef object __weakref__
    cdef int _ensure_alive(self) except -1
    cdef bytes _key(self, key)
    cdef int _int_key(self, key, uint8_t *buf) except -1
    cdef uint64_t _sys_value_size(self) noexcept
    cdef void *_hash(self) except NULL
