/* The interpreter's C structures, shared by _vm.pyx and (later) the maps and
 * helpers written in C.
 *
 * A program is pre-decoded once into an array of vm_insn: the operation is
 * resolved (enum vm_op in insn.h), lddw is merged into one entry, jump and
 * local-call targets are absolute indices into the array and helper calls
 * index the program's helper table. The interpreter then never looks at the
 * original encoding.
 */
#ifndef USERBPF_VM_H
#define USERBPF_VM_H

#include <stdint.h>
#include <string.h>

#include "userbpf/insn.h"
#include "userbpf/map.h"

#ifndef USERBPF_DEBUG
#define USERBPF_DEBUG 0
#endif

/* One pre-decoded instruction (16 bytes; program.py packs it as "<BBBBiq"). */
typedef struct vm_insn {
    uint8_t op;       /* enum vm_op */
    uint8_t dst;
    uint8_t src;
    uint8_t size;     /* bytes accessed by memory operations */
    int32_t off;      /* memory offset; jump/call target index; helper slot */
    int64_t imm;      /* sign-extended immediate; the whole constant for lddw */
} vm_insn;

/* The largest value vm_insn.op can hold (never a decoded op). The
 * interpreter's switch names it so that its jump table covers every byte
 * and the compiler drops the range check before each dispatch. */
#define VM_OP_BYTE_MAX 255

/* Memory a run may touch. [start, start + len) */
typedef struct vm_region {
    uint64_t start;
    uint64_t len;
    int writable;
} vm_region;

#define VM_MAX_REGIONS 32
#define VM_STACK_BYTES (UBPF_STACK_SIZE * UBPF_MAX_CALL_FRAMES)
#define VM_STACK_WORDS (VM_STACK_BYTES / 8)
#define VM_MAX_LOOPS (8u * 1024u * 1024u)   /* BPF_MAX_LOOPS: may_goto budget per frame */
#define VM_NO_PC 0xffffffffu                 /* err_pc not set yet: the helper call's pc */
/* What `lddw rX, func[...]` (BPF_PSEUDO_FUNC) loads: a tag and the callee's
 * decoded index. Helpers that take callbacks (bpf_for_each_map_elem) check
 * the tag and the index before running anything there. */
#define VM_FUNC_TAG 0x5546554e00000000ull    /* "UFUN" << 32 */
#define VM_FUNC_TAG_MASK 0xffffffff00000000ull

/* Why a run stopped. */
enum vm_status {
    VM_STATUS_OK = 0,          /* reached exit */
    VM_STATUS_STOP = 1,        /* a helper ended the run; r0 is the result */
    VM_STATUS_ERR_MEM = 2,     /* access outside every region */
    VM_STATUS_ERR_ALIGN = 3,   /* misaligned atomic */
    VM_STATUS_ERR_BUDGET = 4,  /* instruction budget exhausted */
    VM_STATUS_ERR_DEPTH = 5,   /* more than UBPF_MAX_CALL_FRAMES frames */
    VM_STATUS_ERR_HELPER = 6,  /* callx to an unknown helper */
    VM_STATUS_ERR_PYTHON = 7,  /* a Python helper raised; run->py_exc holds it */
    VM_STATUS_ERR_INVALID = 8, /* an operation that cannot run (never decoded) */
    VM_STATUS_ERR_MAP_ARG = 9, /* a map helper's r1 is not one of the program's maps */
    VM_STATUS_TAIL_CALL = 10,  /* bpf_tail_call succeeded: vm_exec runs run->tail_target */
    VM_STATUS_ERR_TAIL_CALL = 11, /* bpf_tail_call in a callback's own frame (not run yet) */
    VM_STATUS_ERR_CTX = 12     /* a converted context access whose base is not the context */
};

/* BPF_MAP_TYPE_PROG_ARRAY: its C storage holds vm_prog pointers that only
 * bpf_tail_call reads; never program memory, never a map helper's map. */
#define VM_MAP_PROG_ARRAY 3

struct vm_run;

/* Helpers get the five argument registers and the run; they may set
 * run->status to stop the run (VM_STATUS_STOP for a clean end). */
typedef uint64_t (*vm_helper_fn)(uint64_t r1, uint64_t r2, uint64_t r3,
                                 uint64_t r4, uint64_t r5,
                                 struct vm_run *run, void *data);

typedef struct vm_helper {
    vm_helper_fn fn;
    void *data;       /* the helper's own state (a PyObject* for Python helpers) */
    int64_t id;       /* the helper id programs call it by */
} vm_helper;

typedef struct vm_prog {
    vm_insn *insns;
    uint32_t ninsns;
    uint32_t *orig_pc;    /* decoded index -> original slot index, for errors */
    vm_helper *helpers;
    uint32_t nhelpers;
    ubpf_map **maps;      /* the maps the program references (lddw resolved) */
    uint32_t nmaps;
    void *owner;          /* the VMProgram (borrowed): reports a tail-called program's faults */
} vm_prog;

/* A PROG_ARRAY slot's program (NULL: empty); user space swaps slots while
 * programs run, so the pointer is read once, atomically. */
static inline const vm_prog *vm_prog_slot(const void *slot) {
    const vm_prog *p;
    __atomic_load((const vm_prog *const *)slot, &p, __ATOMIC_ACQUIRE);
    return p;
}

/* The state of one run: inputs set by the caller, outputs set by vm_exec. */
typedef struct vm_run {
    /* inputs */
    uint64_t r1, r2;              /* argument registers at entry */
    uint8_t *stack;               /* VM_STACK_BYTES, 16-byte aligned */
    const uint8_t *pkt;           /* what LD_ABS / LD_IND read */
    uint64_t pkt_len;
    vm_region regions[VM_MAX_REGIONS];
    int nregions;                 /* regions[0] is the stack */
    uint64_t budget;              /* max instructions; 0 = unlimited */
    uint32_t cpu;
    void *user;                   /* for helpers: the embedding's context */
    uint64_t ctx;                 /* the internal context r1 points to at entry
                                     (0: none); CTX_LDX/CTX_STX go through it */
    void *pkt_state;              /* struct ubpf_pkt * of packet programs (ctx.h), or NULL */
    const vm_prog *prog;          /* the program being run (its maps) */
    /* outputs */
    int status;
    uint32_t err_pc;              /* decoded index of the faulting instruction */
    uint64_t err_addr;
    uint32_t err_size;
    int err_write;
    uint64_t insn_count;          /* instructions executed (lddw counts once); also
                                     kept current across helper calls, so that
                                     callbacks share the run's budget */
    int cur_depth;                /* call depth at the current helper call */
    void *py_exc;                 /* owned reference to the exception a Python helper raised */
    const struct vm_prog *tail_target;  /* the program a tail call jumps to */
    uint32_t tail_call_cnt;       /* tail calls taken in this run (at most 33) */
} vm_run;

/* ---- small pieces the Cython loop calls; all inline, all nogil ---------- */

static inline uint16_t vm_bswap16(uint16_t x) { return __builtin_bswap16(x); }
static inline uint32_t vm_bswap32(uint32_t x) { return __builtin_bswap32(x); }
static inline uint64_t vm_bswap64(uint64_t x) { return __builtin_bswap64(x); }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define VM_HOST_BIG_ENDIAN 1
#else
#define VM_HOST_BIG_ENDIAN 0
#endif

/* to/from little- and big-endian, as BPF_END does on this host */
static inline uint64_t vm_le16(uint64_t x) { return VM_HOST_BIG_ENDIAN ? vm_bswap16((uint16_t)x) : (uint16_t)x; }
static inline uint64_t vm_le32(uint64_t x) { return VM_HOST_BIG_ENDIAN ? vm_bswap32((uint32_t)x) : (uint32_t)x; }
static inline uint64_t vm_le64(uint64_t x) { return VM_HOST_BIG_ENDIAN ? vm_bswap64(x) : x; }
static inline uint64_t vm_be16(uint64_t x) { return VM_HOST_BIG_ENDIAN ? (uint16_t)x : vm_bswap16((uint16_t)x); }
static inline uint64_t vm_be32(uint64_t x) { return VM_HOST_BIG_ENDIAN ? (uint32_t)x : vm_bswap32((uint32_t)x); }
static inline uint64_t vm_be64(uint64_t x) { return VM_HOST_BIG_ENDIAN ? x : vm_bswap64(x); }

/* Unaligned loads and stores (eBPF allows them; memcpy compiles to a mov). */
static inline uint64_t vm_load(uint64_t addr, int size) {
    switch (size) {
    case 1: return *(const uint8_t *)(uintptr_t)addr;
    case 2: { uint16_t v; memcpy(&v, (const void *)(uintptr_t)addr, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, (const void *)(uintptr_t)addr, 4); return v; }
    default: { uint64_t v; memcpy(&v, (const void *)(uintptr_t)addr, 8); return v; }
    }
}

static inline void vm_store(uint64_t addr, int size, uint64_t v) {
    switch (size) {
    case 1: *(uint8_t *)(uintptr_t)addr = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy((void *)(uintptr_t)addr, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy((void *)(uintptr_t)addr, &x, 4); break; }
    default: memcpy((void *)(uintptr_t)addr, &v, 8); break;
    }
}

static inline int64_t vm_sext(uint64_t v, int bytes) {
    switch (bytes) {
    case 1: return (int8_t)v;
    case 2: return (int16_t)v;
    case 4: return (int32_t)v;
    default: return (int64_t)v;
    }
}

static inline int vm_in_range(uint64_t start, uint64_t len, uint64_t addr, uint64_t size) {
    uint64_t rel = addr - start;      /* no sum here can overflow */
    return rel < len && len - rel >= size;
}

/* Is [addr, addr + size) value memory of map m? -1: no; else 0/1 = writable. */
static inline int vm_map_holds(const ubpf_map *m, uint64_t addr, uint64_t size, int write) {
    int inside = (m->region && vm_in_range((uint64_t)(uintptr_t)m->region, m->region_len, addr, size))
                 || (m->ops->contains && m->ops->contains(m, addr, size));
    return inside ? (!write || m->region_writable) : -1;
}

/* The inner maps of a map of maps, walked with its for_each op. */
typedef struct vm_inner_query {
    uint64_t addr, size;
    int write;
    int answer;              /* -1 not found; 0/1 as vm_map_holds; 2: it is that map */
} vm_inner_query;

static int vm_inner_access(void *arg, const void *key, void *value) {
    vm_inner_query *q = (vm_inner_query *)arg;
    const ubpf_map *inner = ubpf_inner_map(value);
    (void)key;
    if (inner == NULL)
        return 0;
    q->answer = vm_map_holds(inner, q->addr, q->size, q->write);
    return q->answer >= 0;
}

static int vm_inner_is(void *arg, const void *key, void *value) {
    vm_inner_query *q = (vm_inner_query *)arg;
    (void)key;
    if ((uint64_t)(uintptr_t)ubpf_inner_map(value) == q->addr) {
        q->answer = 2;
        return 1;
    }
    return 0;
}

/* Slow path: value memory of the program's maps that is not one of the
 * run's regions (maps past the region table, non-contiguous maps, the
 * inner maps of maps of maps: those are walked, so cost grows with them). */
__attribute__((noinline, cold))
static int vm_access_maps_ok(const vm_run *run, uint64_t addr, uint64_t size, int write) {
    uint32_t i;
    int ok;
    if (run->prog == NULL)
        return 0;
    for (i = 0; i < run->prog->nmaps; i++) {
        ubpf_map *m = run->prog->maps[i];
        if (m->map_type == VM_MAP_PROG_ARRAY)
            continue;          /* program pointers */
        if (m->inner_maps) {
            vm_inner_query q = {addr, size, write, -1};
            m->ops->for_each(m, 0, vm_inner_access, &q);
            if (q.answer >= 0)
                return q.answer;
            continue;          /* the outer map's own values are not program memory */
        }
        ok = vm_map_holds(m, addr, size, write);
        if (ok >= 0)
            return ok;
    }
    return 0;
}

/* Slow path of vm_map_arg: an inner map of one of the program's maps of maps. */
__attribute__((noinline, cold))
static ubpf_map *vm_inner_map_arg(const vm_run *run, uint64_t ptr) {
    uint32_t i;
    for (i = 0; i < run->prog->nmaps; i++) {
        ubpf_map *m = run->prog->maps[i];
        if (m->inner_maps) {
            vm_inner_query q = {ptr, 0, 0, -1};
            m->ops->for_each(m, 0, vm_inner_is, &q);
            if (q.answer == 2)
                return (ubpf_map *)(uintptr_t)ptr;
        }
    }
    return NULL;
}

/* Is [addr, addr + size) inside memory the run may touch (writable when asked)? */
static inline int vm_access_ok(const vm_run *run, uint64_t addr, uint64_t size, int write) {
    int i;
    for (i = 0; i < run->nregions; i++) {
        const vm_region *r = &run->regions[i];
        if (vm_in_range(r->start, r->len, addr, size))
            return !write || r->writable;
    }
    return vm_access_maps_ok(run, addr, size, write);
}

/* Is r1 of a map helper one of the program's maps? (A verified program
 * cannot pass anything else; an unverified one might.) */
static inline ubpf_map *vm_map_arg(const vm_run *run, uint64_t ptr) {
    uint32_t i;
    if (run->prog == NULL)
        return NULL;
    for (i = 0; i < run->prog->nmaps; i++)
        if ((uint64_t)(uintptr_t)run->prog->maps[i] == ptr)
            /* a PROG_ARRAY is only bpf_tail_call's (the kernel's verifier
             * refuses it to the other map helpers) */
            return run->prog->maps[i]->map_type == VM_MAP_PROG_ARRAY ? NULL : run->prog->maps[i];
    return vm_inner_map_arg(run, ptr);
}

/* Atomics: sequentially consistent, as the kernel's BPF_ATOMIC ops. The
 * address is checked for bounds and natural alignment before these run. */
#define VM_ATOMIC_RMW(name, builtin)                                              \
    static inline uint64_t vm_atomic_##name##32(uint64_t a, uint64_t v) {         \
        return builtin((uint32_t *)(uintptr_t)a, (uint32_t)v, __ATOMIC_SEQ_CST);  \
    }                                                                             \
    static inline uint64_t vm_atomic_##name##64(uint64_t a, uint64_t v) {         \
        return builtin((uint64_t *)(uintptr_t)a, v, __ATOMIC_SEQ_CST);            \
    }
VM_ATOMIC_RMW(add, __atomic_fetch_add)
VM_ATOMIC_RMW(or, __atomic_fetch_or)
VM_ATOMIC_RMW(and, __atomic_fetch_and)
VM_ATOMIC_RMW(xor, __atomic_fetch_xor)
VM_ATOMIC_RMW(xchg, __atomic_exchange_n)
#undef VM_ATOMIC_RMW

static inline uint64_t vm_atomic_cmpxchg32(uint64_t a, uint64_t expected, uint64_t v) {
    uint32_t e = (uint32_t)expected;
    __atomic_compare_exchange_n((uint32_t *)(uintptr_t)a, &e, (uint32_t)v, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return e;   /* the old value, whether or not it matched */
}

static inline uint64_t vm_atomic_cmpxchg64(uint64_t a, uint64_t expected, uint64_t v) {
    uint64_t e = expected;
    __atomic_compare_exchange_n((uint64_t *)(uintptr_t)a, &e, v, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return e;
}

static inline uint64_t vm_load_acquire(uint64_t a, int size) {
    switch (size) {
    case 1: return __atomic_load_n((uint8_t *)(uintptr_t)a, __ATOMIC_ACQUIRE);
    case 2: return __atomic_load_n((uint16_t *)(uintptr_t)a, __ATOMIC_ACQUIRE);
    case 4: return __atomic_load_n((uint32_t *)(uintptr_t)a, __ATOMIC_ACQUIRE);
    default: return __atomic_load_n((uint64_t *)(uintptr_t)a, __ATOMIC_ACQUIRE);
    }
}

static inline void vm_store_release(uint64_t a, int size, uint64_t v) {
    switch (size) {
    case 1: __atomic_store_n((uint8_t *)(uintptr_t)a, (uint8_t)v, __ATOMIC_RELEASE); break;
    case 2: __atomic_store_n((uint16_t *)(uintptr_t)a, (uint16_t)v, __ATOMIC_RELEASE); break;
    case 4: __atomic_store_n((uint32_t *)(uintptr_t)a, (uint32_t)v, __ATOMIC_RELEASE); break;
    default: __atomic_store_n((uint64_t *)(uintptr_t)a, v, __ATOMIC_RELEASE); break;
    }
}

/* Signed division and modulo with the kernel's edge cases: x/0 = 0,
 * x%0 = x, INT_MIN/-1 = INT_MIN, INT_MIN%-1 = 0 (no trap). */
static inline uint64_t vm_sdiv64(uint64_t a, uint64_t b) {
    if (b == 0) return 0;
    if ((int64_t)b == -1) return (uint64_t)0 - a;
    return (uint64_t)((int64_t)a / (int64_t)b);
}
static inline uint64_t vm_smod64(uint64_t a, uint64_t b) {
    if (b == 0) return a;
    if ((int64_t)b == -1) return 0;
    return (uint64_t)((int64_t)a % (int64_t)b);
}
static inline uint64_t vm_sdiv32(uint64_t a, uint64_t b) {
    if ((uint32_t)b == 0) return 0;
    if ((int32_t)b == -1) return (uint32_t)(0u - (uint32_t)a);
    return (uint32_t)((int32_t)a / (int32_t)b);
}
static inline uint64_t vm_smod32(uint64_t a, uint64_t b) {
    if ((uint32_t)b == 0) return (uint32_t)a;
    if ((int32_t)b == -1) return 0;
    return (uint32_t)((int32_t)a % (int32_t)b);
}

/* ---- clocks and randomness for the built-in helpers --------------------- */
#include <time.h>

static inline uint64_t vm_clock_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint64_t vm_ktime_ns(void) { return vm_clock_ns(CLOCK_MONOTONIC); }

/* bpf_get_prandom_u32: a per-thread splitmix64 stream (not for crypto,
 * as in the kernel). */
static __thread uint64_t vm_prandom_state;
static inline uint32_t vm_prandom_u32(void) {
    uint64_t z;
    if (vm_prandom_state == 0)
        vm_prandom_state = vm_clock_ns(CLOCK_MONOTONIC) ^ (uint64_t)(uintptr_t)&z;
    z = (vm_prandom_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

#endif /* USERBPF_VM_H */
