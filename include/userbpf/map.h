/* Maps: the common header every map type starts with, and its ops table.
 *
 * The interpreter's map helpers call these function pointers directly, with
 * no Python on the path; the bpf() commands call the sys_* entries. Every
 * entry returns 0 or a negative errno, as the kernel's map ops do.
 *
 * Value memory a program may touch through a pointer returned by lookup is
 * described by `region` when it is one contiguous block (arrays,
 * preallocated hashes), or answered by `contains` otherwise, so that the
 * interpreter's runtime access checks accept map values and nothing else
 * (never keys, list links or allocator state).
 */
#ifndef USERBPF_MAP_H
#define USERBPF_MAP_H

#include <stdint.h>

#define UBPF_OBJ_NAME_LEN 16
#define UBPF_MAX_CPUS 1024

typedef struct ubpf_map ubpf_map;

/* bpf_for_each_map_elem's per-element callback: non-zero stops the walk. */
typedef int (*ubpf_elem_fn)(void *arg, const void *key, void *value);

typedef struct ubpf_map_ops {
    /* program side: may run concurrently from several threads, without the GIL */
    void *(*lookup)(ubpf_map *map, const void *key, uint32_t cpu);
    long (*update)(ubpf_map *map, const void *key, const void *value, uint64_t flags,
                   uint32_t cpu);
    long (*delete_elem)(ubpf_map *map, const void *key);
    long (*push)(ubpf_map *map, const void *value, uint64_t flags);
    long (*pop)(ubpf_map *map, void *value);
    long (*peek)(ubpf_map *map, void *value);
    /* user-space side (bpf() commands): per-CPU maps copy every CPU's value,
     * each rounded up to 8 bytes, as the kernel does */
    long (*sys_lookup)(ubpf_map *map, const void *key, void *value, uint64_t flags);
    long (*sys_update)(ubpf_map *map, const void *key, const void *value, uint64_t flags);
    long (*sys_lookup_and_delete)(ubpf_map *map, const void *key, void *value,
                                  uint64_t flags);
    long (*get_next_key)(ubpf_map *map, const void *key, void *next_key);
    /* bpf_for_each_map_elem: fn(arg, key, value as `cpu` sees it) for each
     * element until fn returns non-zero; returns the number of calls. NULL:
     * the type cannot be walked from programs (-EINVAL to the program). No
     * lock is held across fn, which may call map helpers on the same map. */
    long (*for_each)(ubpf_map *map, uint32_t cpu, ubpf_elem_fn fn, void *arg);
    /* runtime access checks, slow path: is [addr, addr + size) live value memory? */
    int (*contains)(const ubpf_map *map, uint64_t addr, uint64_t size);
    void (*destroy)(ubpf_map *map);
} ubpf_map_ops;

struct ubpf_map {
    const ubpf_map_ops *ops;
    uint32_t map_type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t map_flags;
    uint32_t id;
    uint32_t ncpus;
    char name[UBPF_OBJ_NAME_LEN];
    uint8_t *region;        /* contiguous value memory, or NULL */
    uint64_t region_len;
    int region_writable;    /* 0 for BPF_F_RDONLY_PROG */
    int inner_maps;         /* ARRAY_OF_MAPS / HASH_OF_MAPS: values are ubpf_map pointers */
    void *impl;             /* the map type's own state */
};

/* A test-and-test-and-set spinlock: maps are touched by programs running
 * without the GIL on several threads; critical sections are a few copies. */
typedef struct { volatile int locked; } ubpf_spinlock;

static inline void ubpf_spin_lock(ubpf_spinlock *l) {
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
}

static inline void ubpf_spin_unlock(ubpf_spinlock *l) {
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/* Maps of maps: a program's lookup gets the inner map itself (the kernel's
 * verifier rewrites it so), and the inner maps count as the program's maps. */
static inline ubpf_map *ubpf_inner_map(const void *value) {
    ubpf_map *inner;
    if (value == NULL)
        return NULL;
    __atomic_load((ubpf_map *const *)value, &inner, __ATOMIC_ACQUIRE);
    return inner;
}

#endif /* USERBPF_MAP_H */
