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
#include <sys/mman.h>
#include <unistd.h>

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

#endif /* USERBPF_RINGBUF_H */
