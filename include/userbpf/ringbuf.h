/* Ring buffer memory (BPF_MAP_TYPE_RINGBUF), laid out as the kernel's mmap
 * of one:
 *
 *   base + 0             consumer page   (consumer_pos, u64, at offset 0)
 *   base + page          producer page   (producer_pos, u64, at offset 0)
 *   base + 2 * page      data, data_size bytes
 *   base + 2 * page + data_size   the same data pages again
 *
 * The kernel maps the data pages twice back to back so that a record which
 * wraps past the end of the ring is still one contiguous span, for the
 * producer (bpf_ringbuf_reserve hands out one pointer) and the consumer
 * alike. We do the same with the host's virtual memory: the pages live in an
 * anonymous memory file (memfd_create, or an unlinked temporary file where
 * that is missing) mapped MAP_SHARED twice into one reserved range, so a
 * write through either copy is seen through both with no copying. The file
 * descriptor stays open with the map: a later process-shared mapping can
 * mmap the same pages.
 */
#ifndef USERBPF_RINGBUF_H
#define USERBPF_RINGBUF_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include "userbpf/map.h"

typedef struct ubpf_ringbuf_mem {
    uint8_t *base;         /* consumer page; see the layout above */
    uint64_t page_size;
    uint64_t data_size;    /* max_entries */
    uint64_t map_len;      /* 2 * page_size + 2 * data_size */
    int fd;                /* the memory file, or -1 */
} ubpf_ringbuf_mem;

static inline int ubpf_ringbuf_mem_file(uint64_t len) {
    int fd = -1;
#if defined(__linux__) && defined(MFD_CLOEXEC)
    fd = memfd_create("userbpf-ringbuf", MFD_CLOEXEC);
#endif
    if (fd < 0) {
        const char *dir = getenv("TMPDIR");
        char path[4096];
        size_t n = strlen(dir && *dir ? dir : "/tmp");
        if (n > sizeof(path) - 32)
            return -ENAMETOOLONG;
        memcpy(path, dir && *dir ? dir : "/tmp", n);
        memcpy(path + n, "/userbpf-ringbuf-XXXXXX", sizeof("/userbpf-ringbuf-XXXXXX"));
        fd = mkstemp(path);
        if (fd < 0)
            return -errno;
        unlink(path);
    }
    if (ftruncate(fd, (off_t)len) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Map the consumer and producer pages and the data twice. 0 or -errno. */
static inline int ubpf_ringbuf_mem_alloc(ubpf_ringbuf_mem *rb, uint64_t page_size,
                                         uint64_t data_size) {
    uint64_t file_len = 2 * page_size + data_size;
    uint8_t *base;
    int fd;

    memset(rb, 0, sizeof(*rb));
    rb->fd = -1;
    fd = ubpf_ringbuf_mem_file(file_len);
    if (fd < 0)
        return fd;
    /* reserve the whole range first, then map the file into it twice */
    base = mmap(NULL, file_len + data_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        close(fd);
        return -ENOMEM;
    }
    if (mmap(base, file_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
            == MAP_FAILED ||
        mmap(base + file_len, data_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
             (off_t)(2 * page_size)) == MAP_FAILED) {
        munmap(base, file_len + data_size);
        close(fd);
        return -ENOMEM;
    }
    rb->base = base;
    rb->page_size = page_size;
    rb->data_size = data_size;
    rb->map_len = file_len + data_size;
    rb->fd = fd;
    return 0;
}

static inline void ubpf_ringbuf_mem_free(ubpf_ringbuf_mem *rb) {
    if (rb->base)
        munmap(rb->base, rb->map_len);
    if (rb->fd >= 0)
        close(rb->fd);
    rb->base = NULL;
    rb->fd = -1;
}

static inline uint64_t ubpf_page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (uint64_t)p : 4096;
}

/* [start, start + len) holds [addr, addr + size)? */
static inline int vm_rb_in(uint64_t start, uint64_t len, uint64_t addr, uint64_t size) {
    uint64_t rel = addr - start;
    return addr >= start && rel < len && len - rel >= size;
}

/* ---- the kernel's ring buffer protocol (kernel/bpf/ringbuf.c) ----------
 *
 * Each record is an 8-byte header, then the sample, padded to 8 bytes:
 *   u32 len     sample length | BUSY (reserved, not committed yet)
 *                             | DISCARD (committed as discarded)
 *   u32 pg_off  pages from the kernel's struct bpf_ringbuf to the header
 * Producers serialise on a spinlock only to reserve (advance producer_pos);
 * they write and commit (clear BUSY, release order) concurrently. The one
 * consumer reads records in order up to the first busy one and publishes
 * consumer_pos with release order; producers never pass it.
 */
#define UBPF_RB_BUSY_BIT (1u << 31)
#define UBPF_RB_DISCARD_BIT (1u << 30)
#define UBPF_RB_HDR_SZ 8u
#define UBPF_RB_MAX_RECORD_SZ (0xffffffffu / 4)
/* the kernel's struct bpf_ringbuf has one page before consumer_pos */
#define UBPF_RB_PGOFF 1u
/* helper flags (enum in uapi/linux/bpf.h) */
#define UBPF_RB_NO_WAKEUP 1u
#define UBPF_RB_FORCE_WAKEUP 2u
#define UBPF_RB_AVAIL_DATA 0u
#define UBPF_RB_RING_SIZE 1u
#define UBPF_RB_CONS_POS 2u
#define UBPF_RB_PROD_POS 3u

typedef struct ubpf_ringbuf_hdr {
    uint32_t len;
    uint32_t pg_off;
} ubpf_ringbuf_hdr;

typedef struct ubpf_ringbuf {
    ubpf_ringbuf_mem mem;
    ubpf_spinlock lock;      /* producers' reservations */
    uint64_t pending_pos;    /* oldest record maybe still busy (under lock) */
    uint64_t wakeups;        /* notifications sent, where the kernel queues its irq_work */
    int waiters;             /* consumers blocked in poll: only then is efd written */
    int efd;                 /* eventfd the consumer waits on, or -1 */
    int consuming;           /* one consumer at a time */
} ubpf_ringbuf;

static inline uint64_t *ubpf_rb_cons(const ubpf_ringbuf *rb) {
    return (uint64_t *)rb->mem.base;
}
static inline uint64_t *ubpf_rb_prod(const ubpf_ringbuf *rb) {
    return (uint64_t *)(rb->mem.base + rb->mem.page_size);
}
static inline uint8_t *ubpf_rb_data(const ubpf_ringbuf *rb) {
    return rb->mem.base + 2 * rb->mem.page_size;
}
static inline uint64_t ubpf_rb_mask(const ubpf_ringbuf *rb) { return rb->mem.data_size - 1; }
static inline uint32_t ubpf_rb_rec_len(uint32_t sample_len) {
    return (sample_len + UBPF_RB_HDR_SZ + 7) & ~7u;
}
static inline uint32_t ubpf_rb_pg_off(const ubpf_ringbuf *rb, uint64_t off) {
    return (uint32_t)(UBPF_RB_PGOFF + 2 + off / rb->mem.page_size);
}

static inline int ubpf_ringbuf_init(ubpf_ringbuf *rb) {
    rb->efd = -1;
#if defined(__linux__)
    rb->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rb->efd < 0)
        return -errno;
#endif
    return 0;
}

static inline void ubpf_ringbuf_fini(ubpf_ringbuf *rb) {
    if (rb->efd >= 0)
        close(rb->efd);
    rb->efd = -1;
    ubpf_ringbuf_mem_free(&rb->mem);
}

/* Reserve `size` bytes of sample: its address, or NULL when it does not fit
 * (bigger than the ring, or no room before consumer_pos or before the
 * oldest record still being written). */
static inline void *ubpf_ringbuf_reserve(ubpf_ringbuf *rb, uint64_t size) {
    uint64_t mask = ubpf_rb_mask(rb), cons, prod, pend, next, off;
    uint8_t *data = ubpf_rb_data(rb);
    ubpf_ringbuf_hdr *hdr;
    uint32_t len;

    if (size > UBPF_RB_MAX_RECORD_SZ)
        return NULL;
    len = ubpf_rb_rec_len((uint32_t)size);
    cons = __atomic_load_n(ubpf_rb_cons(rb), __ATOMIC_ACQUIRE);
    ubpf_spin_lock(&rb->lock);
    pend = rb->pending_pos;
    prod = *ubpf_rb_prod(rb);
    next = prod + len;
    /* move pending_pos past records committed since (as the kernel does) */
    while (pend < prod) {
        uint32_t l = __atomic_load_n(&((ubpf_ringbuf_hdr *)(data + (pend & mask)))->len,
                                     __ATOMIC_ACQUIRE);
        if (l & UBPF_RB_BUSY_BIT)
            break;
        pend += ubpf_rb_rec_len(l & ~UBPF_RB_DISCARD_BIT);
    }
    __atomic_store_n(&rb->pending_pos, pend, __ATOMIC_RELAXED);   /* contains() reads it */
    if (next - cons > mask || next - pend > mask) {
        ubpf_spin_unlock(&rb->lock);
        return NULL;
    }
    off = prod & mask;
    hdr = (ubpf_ringbuf_hdr *)(data + off);
    hdr->len = (uint32_t)size | UBPF_RB_BUSY_BIT;
    hdr->pg_off = ubpf_rb_pg_off(rb, off);
    /* pairs with the consumer's acquire load of producer_pos */
    __atomic_store_n(ubpf_rb_prod(rb), next, __ATOMIC_RELEASE);
    ubpf_spin_unlock(&rb->lock);
    return hdr + 1;
}

/* The header of a reserved (busy) record whose sample starts at `sample`,
 * or NULL when `sample` is not one (only an unverified program passes such). */
static inline ubpf_ringbuf_hdr *ubpf_ringbuf_busy_hdr(const ubpf_ringbuf *rb, uint64_t sample) {
    uint64_t data = (uint64_t)(uintptr_t)ubpf_rb_data(rb), off;
    ubpf_ringbuf_hdr *hdr;
    uint32_t l;
    if (sample < data + UBPF_RB_HDR_SZ || sample - data > 2 * rb->mem.data_size ||
            (sample - data) % 8)
        return NULL;
    off = (sample - data - UBPF_RB_HDR_SZ) & ubpf_rb_mask(rb);
    hdr = (ubpf_ringbuf_hdr *)(uintptr_t)(data + off);
    l = __atomic_load_n(&hdr->len, __ATOMIC_ACQUIRE);
    if (!(l & UBPF_RB_BUSY_BIT) || hdr->pg_off != ubpf_rb_pg_off(rb, off))
        return NULL;
    return hdr;
}

/* Should a commit at data offset `rec_off` notify the consumer? As the
 * kernel: always with FORCE_WAKEUP, else when the consumer has caught up to
 * this record, unless NO_WAKEUP. */
static inline void ubpf_ringbuf_notify(ubpf_ringbuf *rb, uint64_t rec_off, uint64_t flags) {
    uint64_t cons = __atomic_load_n(ubpf_rb_cons(rb), __ATOMIC_ACQUIRE) & ubpf_rb_mask(rb);
    if ((flags & UBPF_RB_FORCE_WAKEUP) || (cons == rec_off && !(flags & UBPF_RB_NO_WAKEUP))) {
        __atomic_fetch_add(&rb->wakeups, 1, __ATOMIC_RELAXED);
        /* seq_cst: pairs with the waiter's increment before its last check */
        if (__atomic_load_n(&rb->waiters, __ATOMIC_SEQ_CST) > 0 && rb->efd >= 0) {
            uint64_t one = 1;
            ssize_t n = write(rb->efd, &one, sizeof(one));
            (void)n;
        }
    }
}

/* Commit a reserved record: clear BUSY (and set DISCARD when asked). */
static inline void ubpf_ringbuf_commit(ubpf_ringbuf *rb, ubpf_ringbuf_hdr *hdr, uint64_t flags,
                                       int discard) {
    uint32_t len = hdr->len & ~UBPF_RB_BUSY_BIT;
    if (discard)
        len |= UBPF_RB_DISCARD_BIT;
    __atomic_exchange_n(&hdr->len, len, __ATOMIC_SEQ_CST);
    ubpf_ringbuf_notify(rb, (uint64_t)((uint8_t *)hdr - ubpf_rb_data(rb)), flags);
}

/* bpf_ringbuf_query: one of the positions or sizes; 0 for an unknown flag. */
static inline uint64_t ubpf_ringbuf_query(const ubpf_ringbuf *rb, uint64_t flags) {
    uint64_t cons = __atomic_load_n(ubpf_rb_cons(rb), __ATOMIC_ACQUIRE);
    uint64_t prod = __atomic_load_n(ubpf_rb_prod(rb), __ATOMIC_ACQUIRE);
    switch (flags) {
    case UBPF_RB_AVAIL_DATA: return prod - cons;
    case UBPF_RB_RING_SIZE: return rb->mem.data_size;
    case UBPF_RB_CONS_POS: return cons;
    case UBPF_RB_PROD_POS: return prod;
    default: return 0;
    }
}

/* One consumer at a time (the kernel leaves this to user space; a second
 * concurrent reader would deliver records twice). 0 or -EBUSY. */
static inline int ubpf_ringbuf_consumer_enter(ubpf_ringbuf *rb) {
    return __atomic_exchange_n(&rb->consuming, 1, __ATOMIC_ACQUIRE) ? -EBUSY : 0;
}
static inline void ubpf_ringbuf_consumer_leave(ubpf_ringbuf *rb) {
    __atomic_store_n(&rb->consuming, 0, __ATOMIC_RELEASE);
}

/* Is a committed record waiting at consumer_pos? */
static inline int ubpf_ringbuf_ready(const ubpf_ringbuf *rb) {
    uint64_t cons = __atomic_load_n(ubpf_rb_cons(rb), __ATOMIC_SEQ_CST);
    uint64_t prod = __atomic_load_n(ubpf_rb_prod(rb), __ATOMIC_SEQ_CST);
    const ubpf_ringbuf_hdr *hdr;
    if (cons >= prod)
        return 0;
    hdr = (const ubpf_ringbuf_hdr *)(ubpf_rb_data(rb) + (cons & ubpf_rb_mask(rb)));
    return !(__atomic_load_n(&hdr->len, __ATOMIC_SEQ_CST) & UBPF_RB_BUSY_BIT);
}

/* Block until a producer's notification or `timeout_ms` (-1: forever):
 * 1 when a record is ready, else 0. Producers write the eventfd only
 * while a waiter is registered, so a busy producer makes no syscalls. */
static inline int ubpf_ringbuf_wait(ubpf_ringbuf *rb, int timeout_ms) {
    struct pollfd pfd;
    uint64_t v;
    ssize_t n;
    int ready;
    __atomic_fetch_add(&rb->waiters, 1, __ATOMIC_SEQ_CST);
    ready = ubpf_ringbuf_ready(rb);
    if (!ready && rb->efd >= 0) {
        pfd.fd = rb->efd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, timeout_ms) > 0) {
            n = read(rb->efd, &v, sizeof(v));      /* reset the counter */
            (void)n;
        }
        ready = ubpf_ringbuf_ready(rb);
    }
    __atomic_fetch_sub(&rb->waiters, 1, __ATOMIC_SEQ_CST);
    return ready;
}

/* Is [addr, addr + size) inside the sample of a reserved, not yet committed
 * record? Walks the records from pending_pos to producer_pos: only those
 * can be busy, and there are as many as records in flight. Unlike the
 * verifier, which ties each reservation to the program that made it, any
 * program holding the ring accepts writes to any record in flight; and a
 * walk racing a consumer and a wrapping producer may read a stale header,
 * so it is bounded and only ever answers for memory inside the ring. */
static inline int ubpf_ringbuf_contains(const ubpf_ringbuf *rb, uint64_t addr, uint64_t size) {
    uint64_t data = (uint64_t)(uintptr_t)ubpf_rb_data(rb), mask = ubpf_rb_mask(rb);
    uint64_t pos, prod, steps;
    if (addr < data || addr - data >= 2 * rb->mem.data_size)
        return 0;
    prod = __atomic_load_n(ubpf_rb_prod(rb), __ATOMIC_ACQUIRE);
    pos = __atomic_load_n(&rb->pending_pos, __ATOMIC_RELAXED);
    for (steps = 0; pos < prod && steps <= rb->mem.data_size / UBPF_RB_HDR_SZ; steps++) {
        uint64_t off = pos & mask;
        uint32_t l = __atomic_load_n(&((ubpf_ringbuf_hdr *)(uintptr_t)(data + off))->len,
                                     __ATOMIC_ACQUIRE);
        uint32_t sample = l & ~(UBPF_RB_BUSY_BIT | UBPF_RB_DISCARD_BIT);
        uint64_t start = data + off + UBPF_RB_HDR_SZ;   /* in the first copy, may run into the second */
        if (sample > mask)
            return 0;                  /* not a header: the ring moved under us */
        if ((l & UBPF_RB_BUSY_BIT) && vm_rb_in(start, sample, addr, size))
            return 1;
        pos += ubpf_rb_rec_len(sample);
    }
    return 0;
}

/* The consumer: deliver committed records from consumer_pos on, in order,
 * to fn(arg, sample, len) until a busy record, the end, or fn returning
 * non-zero (that record counts as consumed). Discarded records are skipped.
 * consumer_pos is published (release) after each record, so producers reuse
 * the space at once. Returns records delivered; *stop = fn's non-zero. */
typedef int (*ubpf_rb_sample_fn)(void *arg, const uint8_t *sample, uint32_t len);

static inline uint64_t ubpf_ringbuf_drain(ubpf_ringbuf *rb, ubpf_rb_sample_fn fn, void *arg,
                                          int *stop, uint64_t *bytes) {
    uint64_t mask = ubpf_rb_mask(rb), cons, prod, n = 0;
    uint8_t *data = ubpf_rb_data(rb);
    int more = 1;
    *stop = 0;
    cons = __atomic_load_n(ubpf_rb_cons(rb), __ATOMIC_RELAXED);
    while (more) {
        more = 0;
        prod = __atomic_load_n(ubpf_rb_prod(rb), __ATOMIC_ACQUIRE);
        while (cons < prod) {
            ubpf_ringbuf_hdr *hdr = (ubpf_ringbuf_hdr *)(data + (cons & mask));
            uint32_t l = __atomic_load_n(&hdr->len, __ATOMIC_ACQUIRE);
            uint32_t sample = l & ~(UBPF_RB_BUSY_BIT | UBPF_RB_DISCARD_BIT);
            uint64_t rec;
            if (l & UBPF_RB_BUSY_BIT)
                return n;
            rec = ubpf_rb_rec_len(sample);
            if (rec > prod - cons)
                return n;                  /* not a valid header (user-space writes) */
            cons += rec;
            more = 1;
            if (!(l & UBPF_RB_DISCARD_BIT)) {
                int r = fn ? fn(arg, (const uint8_t *)(hdr + 1), sample) : 0;
                n++;
                *bytes += sample;
                if (r) {
                    __atomic_store_n(ubpf_rb_cons(rb), cons, __ATOMIC_RELEASE);
                    *stop = r;
                    return n;
                }
            }
            __atomic_store_n(ubpf_rb_cons(rb), cons, __ATOMIC_RELEASE);
        }
    }
    return n;
}

#endif /* USERBPF_RINGBUF_H */
