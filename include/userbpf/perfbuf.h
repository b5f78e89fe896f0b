/* BPF_MAP_TYPE_PERF_EVENT_ARRAY sample buffers (bpf_perf_event_output).
 *
 * In the kernel each slot of the map holds a perf event whose mmapped ring
 * receives PERF_RECORD_SAMPLE records; user space (libbpf's perf_buffer)
 * opens one event per CPU and stores its fd in the slot. userbpf simulates
 * no perf events: a slot holds a ubpf_perfbuf directly, installed by
 * userbpf.PerfBuffer through MapCore.perf_buffer_install. The ring is a
 * simple one, not the kernel's perf layout:
 *
 *   record = u32 size, u32 0, then `size` bytes of sample, padded to 8
 *
 * data_size is a power of two; head (producers) and tail (the consumer)
 * are free-running byte positions, a record may wrap past the end (copied
 * in two pieces). A sample that does not fit is dropped and counted in
 * `lost`, as the kernel's perf_output_begin counts rb->lost (-ENOSPC).
 */
#ifndef USERBPF_PERFBUF_H
#define USERBPF_PERFBUF_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include "userbpf/map.h"

#define UBPF_PB_HDR_SZ 8u

typedef struct ubpf_perfbuf {
    uint8_t *data;
    uint64_t data_size;      /* a power of two */
    uint64_t head;           /* producers, under lock; read with acquire */
    uint64_t tail;           /* the consumer; read with acquire */
    uint64_t lost;           /* samples dropped for lack of room */
    uint64_t lost_seen;      /* the part of `lost` already reported */
    ubpf_spinlock lock;      /* producers on the same slot (threads on one simulated CPU) */
    struct ubpf_perfbuf *retired;   /* older buffers kept until the map dies */
} ubpf_perfbuf;

/* The map's state: one slot per index, plus a wakeup for poll. */
typedef struct ubpf_perf_array {
    ubpf_perfbuf **slots;    /* max_entries pointers (atomic) */
    ubpf_perfbuf *retired;   /* removed buffers: a running program may still write them */
    int waiters;
    int efd;
    int consuming;
} ubpf_perf_array;

/* The eventfd poll waits on: 0 or -errno. */
static inline int ubpf_perf_array_init(ubpf_perf_array *pa) {
    pa->efd = -1;
#if defined(__linux__)
    pa->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pa->efd < 0)
        return -errno;
#endif
    return 0;
}

static inline void ubpf_perf_array_close(ubpf_perf_array *pa) {
    if (pa->efd >= 0)
        close(pa->efd);
    pa->efd = -1;
}

static inline uint64_t ubpf_pb_rec_len(uint64_t size) {
    return (size + UBPF_PB_HDR_SZ + 7) & ~(uint64_t)7;
}

static inline ubpf_perfbuf *ubpf_perfbuf_new(uint64_t data_size) {
    ubpf_perfbuf *pb = (ubpf_perfbuf *)calloc(1, sizeof(*pb));
    if (pb == NULL)
        return NULL;
    pb->data = (uint8_t *)calloc(1, data_size);
    if (pb->data == NULL) {
        free(pb);
        return NULL;
    }
    pb->data_size = data_size;
    return pb;
}

static inline void ubpf_perfbuf_free(ubpf_perfbuf *pb) {
    if (pb) {
        free(pb->data);
        free(pb);
    }
}

/* copy into / out of the ring at free-running position `pos`, wrapping */
static inline void ubpf_pb_put(ubpf_perfbuf *pb, uint64_t pos, const void *src, uint64_t n) {
    uint64_t off = pos & (pb->data_size - 1), first = pb->data_size - off;
    if (first >= n) {
        memcpy(pb->data + off, src, n);
    } else {
        memcpy(pb->data + off, src, first);
        memcpy(pb->data, (const uint8_t *)src + first, n - first);
    }
}

static inline void ubpf_pb_get(const ubpf_perfbuf *pb, uint64_t pos, void *dst, uint64_t n) {
    uint64_t off = pos & (pb->data_size - 1), first = pb->data_size - off;
    if (first >= n) {
        memcpy(dst, pb->data + off, n);
    } else {
        memcpy(dst, pb->data + off, first);
        memcpy((uint8_t *)dst + first, pb->data, n - first);
    }
}

static inline ubpf_perfbuf *ubpf_perf_slot(const ubpf_perf_array *pa, uint32_t i) {
    return __atomic_load_n(&pa->slots[i], __ATOMIC_ACQUIRE);
}

/* Put `pb` (or NULL) in slot i. The old buffer is kept on the retired list
 * until the map is destroyed: a program running without the GIL may still
 * be writing to it. */
static inline void ubpf_perf_install(ubpf_perf_array *pa, uint32_t i, ubpf_perfbuf *pb) {
    ubpf_perfbuf *old = __atomic_exchange_n(&pa->slots[i], pb, __ATOMIC_ACQ_REL);
    if (old) {
        old->retired = pa->retired;
        pa->retired = old;
    }
}

/* Wake a consumer blocked in ubpf_perf_wait (only then: no syscall otherwise). */
static inline void ubpf_perf_notify(ubpf_perf_array *pa) {
    if (__atomic_load_n(&pa->waiters, __ATOMIC_SEQ_CST) > 0 && pa->efd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(pa->efd, &one, sizeof(one));
        (void)n;
    }
}

/* Append one sample: 0, or -ENOSPC (dropped, counted in lost). */
static inline long ubpf_perfbuf_output(ubpf_perf_array *pa, ubpf_perfbuf *pb,
                                       const void *sample, uint64_t size) {
    uint64_t rec = ubpf_pb_rec_len(size), head, tail;
    uint32_t hdr[2];
    ubpf_spin_lock(&pb->lock);
    head = pb->head;
    tail = __atomic_load_n(&pb->tail, __ATOMIC_ACQUIRE);
    if (size > 0xffffffffu || rec > pb->data_size - (head - tail)) {
        __atomic_fetch_add(&pb->lost, 1, __ATOMIC_RELAXED);
        ubpf_spin_unlock(&pb->lock);
        return -ENOSPC;
    }
    hdr[0] = (uint32_t)size;
    hdr[1] = 0;
    ubpf_pb_put(pb, head, hdr, sizeof(hdr));
    if (size)
        ubpf_pb_put(pb, head + UBPF_PB_HDR_SZ, sample, size);
    /* pairs with the consumer's acquire load of head */
    __atomic_store_n(&pb->head, head + rec, __ATOMIC_RELEASE);
    ubpf_spin_unlock(&pb->lock);
    ubpf_perf_notify(pa);
    return 0;
}

/* the consumer's side: head (acquire), tail (release), new losses */
static inline uint64_t ubpf_pb_head(const ubpf_perfbuf *pb) {
    return __atomic_load_n(&pb->head, __ATOMIC_ACQUIRE);
}
static inline void ubpf_pb_set_tail(ubpf_perfbuf *pb, uint64_t tail) {
    __atomic_store_n(&pb->tail, tail, __ATOMIC_RELEASE);
}
static inline uint64_t ubpf_pb_take_lost(ubpf_perfbuf *pb) {
    uint64_t lost = __atomic_load_n(&pb->lost, __ATOMIC_ACQUIRE), n = lost - pb->lost_seen;
    pb->lost_seen = lost;
    return n;
}

/* One consumer at a time per map: 0 or -EBUSY. */
static inline int ubpf_perf_consumer_enter(ubpf_perf_array *pa) {
    return __atomic_exchange_n(&pa->consuming, 1, __ATOMIC_ACQUIRE) ? -EBUSY : 0;
}
static inline void ubpf_perf_consumer_leave(ubpf_perf_array *pa) {
    __atomic_store_n(&pa->consuming, 0, __ATOMIC_RELEASE);
}

static inline int ubpf_perfbuf_ready(const ubpf_perfbuf *pb) {
    return __atomic_load_n(&pb->head, __ATOMIC_SEQ_CST) !=
           __atomic_load_n(&pb->tail, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&pb->lost, __ATOMIC_SEQ_CST) != pb->lost_seen;
}

static inline int ubpf_perf_any_ready(ubpf_perf_array *pa, uint32_t n) {
    uint32_t i;
    for (i = 0; i < n; i++) {
        ubpf_perfbuf *pb = __atomic_load_n(&pa->slots[i], __ATOMIC_ACQUIRE);
        if (pb && ubpf_perfbuf_ready(pb))
            return 1;
    }
    return 0;
}

/* Block until a sample or a loss is waiting in any slot, a producer's wakeup,
 * or timeout_ms (-1: forever). 1 when something is ready. */
static inline int ubpf_perf_wait(ubpf_perf_array *pa, uint32_t n, int timeout_ms) {
    struct pollfd pfd;
    uint64_t v;
    ssize_t r;
    int ready;
    __atomic_fetch_add(&pa->waiters, 1, __ATOMIC_SEQ_CST);
    ready = ubpf_perf_any_ready(pa, n);
    if (!ready && pa->efd >= 0) {
        pfd.fd = pa->efd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, timeout_ms) > 0) {
            r = read(pa->efd, &v, sizeof(v));
            (void)r;
        }
        ready = ubpf_perf_any_ready(pa, n);
    }
    __atomic_fetch_sub(&pa->waiters, 1, __ATOMIC_SEQ_CST);
    return ready;
}

#endif /* USERBPF_PERFBUF_H */
