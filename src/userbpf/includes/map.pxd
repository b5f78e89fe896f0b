# Declarations of include/userbpf/map.h (the map header and ops table).
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "userbpf/map.h" nogil:
    enum:
        UBPF_OBJ_NAME_LEN
        UBPF_MAX_CPUS

    ctypedef struct ubpf_map

    ctypedef int (*ubpf_elem_fn)(void *arg, const void *key, void *value) noexcept nogil

    ctypedef struct ubpf_map_ops:
        void *(*lookup)(ubpf_map *map, const void *key, uint32_t cpu) noexcept nogil
        long (*update)(ubpf_map *map, const void *key, const void *value, uint64_t flags,
                       uint32_t cpu) noexcept nogil
        long (*delete_elem)(ubpf_map *map, const void *key) noexcept nogil
        long (*push)(ubpf_map *map, const void *value, uint64_t flags) noexcept nogil
        long (*pop)(ubpf_map *map, void *value) noexcept nogil
        long (*peek)(ubpf_map *map, void *value) noexcept nogil
        long (*sys_lookup)(ubpf_map *map, const void *key, void *value,
                           uint64_t flags) noexcept nogil
        long (*sys_update)(ubpf_map *map, const void *key, const void *value,
                           uint64_t flags) noexcept nogil
        long (*sys_lookup_and_delete)(ubpf_map *map, const void *key, void *value,
                                      uint64_t flags) noexcept nogil
        long (*get_next_key)(ubpf_map *map, const void *key, void *next_key) noexcept nogil
        long (*for_each)(ubpf_map *map, uint32_t cpu, ubpf_elem_fn fn, void *arg) noexcept nogil
        int (*contains)(const ubpf_map *map, uint64_t addr, uint64_t size) noexcept nogil
        void (*destroy)(ubpf_map *map) noexcept nogil

    ctypedef struct ubpf_map:
        const ubpf_map_ops *ops
        uint32_t map_type
        uint32_t key_size
        uint32_t value_size
        uint32_t max_entries
        uint32_t map_flags
        uint32_t id
        uint32_t ncpus
        char name[16]
        uint8_t *region
        uint64_t region_len
        int region_writable
        int inner_maps
        void *impl

    ctypedef struct ubpf_spinlock:
        int locked

    void ubpf_spin_lock(ubpf_spinlock *l)
    void ubpf_spin_unlock(ubpf_spinlock *l)

    ubpf_map *ubpf_inner_map(const void *value)
