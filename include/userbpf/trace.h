/* bpf_trace_printk / bpf_trace_vprintk / bpf_snprintf: the kernel's format
 * rules and output, and the trace buffer their lines go to.
 *
 * The kernel formats in two steps (kernel/bpf/helpers.c, lib/vsprintf.c):
 *
 *   bpf_bprintf_prepare  checks the format -- no control characters (bytes
 *                        >= 0x80 pass); only %d %i %u %x %X with l / ll,
 *                        %c, %s, %p, %pK %px %ps %pS %pB %pI4 %pi4 %pI6
 *                        %pi6 %pks %pus; flags "0+- " and a width; no
 *                        precision, '#', h / hh / z or %o -- and packs the
 *                        arguments into a 512-byte buffer: integers and
 *                        pointers 4-byte aligned, %c one byte, strings
 *                        (%s %pks %pus) copied with their NUL, %pB and the
 *                        IP forms formatted there as text.
 *   bstr_printf          renders the format from that buffer.
 *
 * ubpf_bprintf_prepare and ubpf_bstr_printf take the same steps, so that the
 * errors (-EINVAL; -ENOSPC when the 512 bytes run out) and the quirks are
 * the kernel's: a width is ignored for the pre-formatted %pB / %pI4 /
 * %pks; once the output is full a pre-formatted string is skipped whole,
 * so the arguments after it are read from where it starts; letters right
 * after a %p form are swallowed ("%pI6c" prints the long form).
 *
 * Where userbpf differs (each checked against Linux 6.18):
 *  - memory behind %s / %pks / %pus / %pI4 pointers is the run's memory,
 *    read through its region checks; unreadable memory reads as the
 *    kernel's failed copy (an empty string, an all-zero address). %pus
 *    reads the run's memory too (there is no separate user space here);
 *  - %ps / %pS / %pB print "0x<hex>" (no kallsyms: as the kernel for an
 *    address that is no symbol);
 *  - plain %p (and %pK with kptr_restrict 0) prints a 32-bit hash as the
 *    kernel does, with a per-process key instead of the boot key;
 *  - bytes of the packed buffer nobody wrote (alignment padding) are zero;
 *    the kernel's hold whatever an earlier call left there;
 *  - after a %pB / IP text cut at the end of the 512 bytes, further
 *    arguments give -ENOSPC; the kernel writes and reads past its buffer.
 */
#ifndef USERBPF_TRACE_H
#define USERBPF_TRACE_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "userbpf/vm.h"

#define UBPF_MAX_TRACE_PRINTK_VARARGS 3
#define UBPF_MAX_BPRINTF_VARARGS 12
#define UBPF_MAX_BPRINTF_BUF 1024       /* trace_printk's output buffer */
#define UBPF_MAX_BPRINTF_BIN_ARGS 512   /* the packed-argument buffer */
#define UBPF_FIELD_WIDTH_MAX ((1 << 23) - 1)
#define UBPF_TASK_COMM_LEN 16

/* struct printf_spec flags */
enum {
    UBPF_PF_ZEROPAD = 1,
    UBPF_PF_SIGN = 2,
    UBPF_PF_PLUS = 4,
    UBPF_PF_SPACE = 8,
    UBPF_PF_LEFT = 16,
    UBPF_PF_SMALL = 32
};

/* The packed-argument buffer, laid out as the kernel's: integers and
 * pointers 4-byte aligned (4 or 8 bytes, little-endian u32 halves), %c one
 * byte, strings with their NUL. bstr_printf reads it back in format order;
 * the slack past the 512 bytes stays zero (reads the kernel would make
 * there see zeros here). */
#define UBPF_BIN_SLACK 64
typedef struct ubpf_bprintf {
    char bin[UBPF_MAX_BPRINTF_BIN_ARGS + UBPF_BIN_SLACK];
} ubpf_bprintf;

static inline void ubpf_bin_put(ubpf_bprintf *d, uint64_t pos, uint64_t v, int size) {
    uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
    lo = (uint32_t)vm_le32(lo);
    hi = (uint32_t)vm_le32(hi);
    memcpy(d->bin + pos, &lo, 4);
    if (size == 8)
        memcpy(d->bin + pos + 4, &hi, 4);
}

/* get_arg(): align to 4 (8-byte values are read as two u32 halves) */
static inline uint64_t ubpf_bin_get(const ubpf_bprintf *d, uint64_t *args, int size) {
    uint32_t lo = 0, hi = 0;
    uint64_t a = (*args + 3) & ~(uint64_t)3;
    if (a + (uint64_t)size <= sizeof(d->bin)) {
        memcpy(&lo, d->bin + a, 4);
        if (size == 8)
            memcpy(&hi, d->bin + a + 4, 4);
    }
    *args = a + (uint64_t)size;
    return (uint64_t)vm_le32(lo) | ((uint64_t)vm_le32(hi) << 32);
}

/* the string at *args, which then moves past its NUL */
static inline const char *ubpf_bin_str(const ubpf_bprintf *d, uint64_t *args) {
    const char *s;
    if (*args >= UBPF_MAX_BPRINTF_BIN_ARGS) {
        *args += 1;
        return "";
    }
    s = d->bin + *args;
    *args += strlen(s) + 1;                 /* the slack's zeros end it */
    return s;
}

/* A bounded output: writes what fits, counts what the full text needs. */
typedef struct ubpf_out {
    char *buf;
    uint64_t size;
    uint64_t len;
} ubpf_out;

static inline void ubpf_put(ubpf_out *o, char c) {
    if (o->len < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static inline int ubpf_isdigit(int c) { return c >= '0' && c <= '9'; }
static inline int ubpf_isalnum(int c) {
    return ubpf_isdigit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}
/* the kernel's isspace / ispunct on ASCII */
static inline int ubpf_isspace(int c) { return c == ' ' || (c >= 9 && c <= 13); }
static inline int ubpf_ispunct(int c) {
    return c > ' ' && c < 127 && !ubpf_isalnum(c);
}

/* ---- reading program memory ------------------------------------------- */

/* strncpy_from_kernel_nofault: at most count - 1 bytes and a NUL; the
 * bytes written with the NUL, or -EFAULT at the first byte the run may not
 * read. */
static int ubpf_copy_string(const vm_run *run, char *dst, uint64_t src, uint64_t count) {
    uint64_t i;
    if (count == 0)
        return 0;
    for (i = 0; i + 1 < count; i++) {
        if (!vm_access_ok(run, src + i, 1, 0))
            return -EFAULT;
        dst[i] = *(const char *)(uintptr_t)(src + i);
        if (dst[i] == 0)
            return (int)(i + 1);
    }
    dst[i] = 0;
    return (int)count;
}

/* ---- the pieces of lib/vsprintf.c bstr_printf uses ---------------------- */

static void ubpf_number(ubpf_out *o, uint64_t num, int base, int flags, int width) {
    char tmp[24];
    char sign = 0;
    char locase = (flags & UBPF_PF_SMALL) ? 0x20 : 0;
    int i = 0;
    if (flags & UBPF_PF_LEFT)
        flags &= ~UBPF_PF_ZEROPAD;
    if (flags & UBPF_PF_SIGN) {
        if ((int64_t)num < 0) {
            sign = '-';
            num = 0 - num;
            width--;
        } else if (flags & UBPF_PF_PLUS) {
            sign = '+';
            width--;
        } else if (flags & UBPF_PF_SPACE) {
            sign = ' ';
            width--;
        }
    }
    do {
        tmp[i++] = "0123456789ABCDEF"[num % (uint64_t)base] | locase;
        num /= (uint64_t)base;
    } while (num);
    width -= i;                         /* no precision: the digits are the minimum */
    if (!(flags & (UBPF_PF_ZEROPAD | UBPF_PF_LEFT)))
        while (--width >= 0)
            ubpf_put(o, ' ');
    if (sign)
        ubpf_put(o, sign);
    if (!(flags & UBPF_PF_LEFT))
        while (--width >= 0)
            ubpf_put(o, (flags & UBPF_PF_ZEROPAD) ? '0' : ' ');
    while (--i >= 0)
        ubpf_put(o, tmp[i]);
    while (--width >= 0)
        ubpf_put(o, ' ');
}

/* string(): the text padded with spaces to the width (never zeros) */
static void ubpf_string(ubpf_out *o, const char *s, uint64_t n, int flags, int width) {
    int64_t pad = (int64_t)width - (int64_t)n;
    uint64_t i;
    if (!(flags & UBPF_PF_LEFT))
        while (pad-- > 0)
            ubpf_put(o, ' ');
    for (i = 0; i < n; i++)
        ubpf_put(o, s[i]);
    while (pad-- > 0)
        ubpf_put(o, ' ');
}

/* pointer_string(): hex, 16 zero-padded digits unless a width is given */
static void ubpf_pointer_string(ubpf_out *o, uint64_t ptr, int flags, int width) {
    flags |= UBPF_PF_SMALL;
    if (width < 0) {
        width = 16;
        flags |= UBPF_PF_ZEROPAD;
    }
    ubpf_number(o, ptr, 16, flags, width);
}

/* The %p hash: the kernel's is siphash with a boot-random key, cut to 32
 * bits; here a keyed mix with a per-process key. */
static uint64_t ubpf_ptr_key;

static uint64_t ubpf_ptr_hash(uint64_t ptr) {
    uint64_t key = __atomic_load_n(&ubpf_ptr_key, __ATOMIC_RELAXED), z;
    if (key == 0) {
        uint64_t fresh = vm_clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32)
                         ^ (uint64_t)(uintptr_t)&ubpf_ptr_key;
        fresh |= 1;
        key = 0;
        if (!__atomic_compare_exchange_n(&ubpf_ptr_key, &key, fresh, 0, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED))
            key = __atomic_load_n(&ubpf_ptr_key, __ATOMIC_RELAXED);
        else
            key = fresh;
    }
    z = ptr ^ key;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) & 0xffffffffull;
}

/* ptr_to_id: NULL and error pointers print as they are, others hashed */
static void ubpf_default_pointer(ubpf_out *o, uint64_t ptr, int flags, int width) {
    if (ptr == 0 || ptr >= (uint64_t)-4095)
        ubpf_pointer_string(o, ptr, flags, width);
    else
        ubpf_pointer_string(o, ubpf_ptr_hash(ptr), flags, width);
}

/* /proc/sys/kernel/kptr_restrict as %pK sees it (set from Python) */
static int ubpf_kptr_restrict;

static void ubpf_restricted_pointer(ubpf_out *o, uint64_t ptr, int flags, int width) {
    switch (ubpf_kptr_restrict) {
    case 0:
        ubpf_default_pointer(o, ptr, flags, width);
        return;
    case 1:
        /* CAP_SYSLOG with matching real and effective ids: the address */
        if (!(geteuid() == 0 && getuid() == geteuid() && getgid() == getegid()))
            ptr = 0;
        break;
    default:
        ptr = 0;
    }
    ubpf_pointer_string(o, ptr, flags, width);
}

/* %ps %pS %pB of an address kallsyms does not know: "0x<hex>" */
static int ubpf_symbol(char *buf, uint64_t addr) {
    int n = 0, i;
    char tmp[16];
    do {
        tmp[n++] = "0123456789abcdef"[addr & 15];
        addr >>= 4;
    } while (addr);
    buf[0] = '0';
    buf[1] = 'x';
    for (i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    buf[2 + n] = 0;
    return 2 + n;
}

/* %pI4 %pi4 %pI6 %pi6 as bpf_bprintf_prepare pre-formats them */
static int ubpf_ip_string(char *buf, const uint8_t *ip, char kind, char ver) {
    int n = 0, i;
    static const char hex[] = "0123456789abcdef";
    if (ver == '4') {
        for (i = 0; i < 4; i++) {
            uint8_t b = ip[i];
            if (i)
                buf[n++] = '.';
            if (kind == 'i' || b >= 100)
                buf[n++] = (char)('0' + b / 100);
            if (kind == 'i' || b >= 10)
                buf[n++] = (char)('0' + b / 10 % 10);
            buf[n++] = (char)('0' + b % 10);
        }
    } else {
        for (i = 0; i < 16; i++) {
            buf[n++] = hex[ip[i] >> 4];
            buf[n++] = hex[ip[i] & 15];
            if (kind == 'I' && (i & 1) && i != 15)
                buf[n++] = ':';
        }
    }
    buf[n] = 0;
    return n;
}

/* ---- bpf_bprintf_prepare ------------------------------------------------ */

/* Check fmt (NUL-terminated within fmt_size) against the num_args raw
 * arguments and pack them; 0 or -EINVAL / -ENOSPC. */
static int ubpf_bprintf_prepare(const vm_run *run, const char *fmt, uint64_t fmt_size,
                                const uint64_t *raw, uint32_t num_args, ubpf_bprintf *d) {
    const char *nul = memchr(fmt, 0, fmt_size);
    uint64_t i, n;
    uint32_t spec = 0;
    uint64_t pos = 0;                 /* next free byte of d->bin */
    const uint64_t end = UBPF_MAX_BPRINTF_BIN_ARGS;
    int size, err;
    if (nul == NULL)
        return -EINVAL;
    memset(d->bin, 0, sizeof(d->bin));
    n = (uint64_t)(nul - fmt);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)fmt[i];
        /* control characters are refused; bytes >= 0x80 (UTF-8) pass, as
         * on the live 6.18 kernel */
        if (c < 0x80 && !((c >= 0x20 && c < 0x7f) || ubpf_isspace(c)))
            return -EINVAL;
        if (c != '%')
            continue;
        if (fmt[i + 1] == '%') {
            i++;
            continue;
        }
        if (spec >= num_args)
            return -EINVAL;
        i++;
        while (fmt[i] == '0' || fmt[i] == '+' || fmt[i] == '-' || fmt[i] == ' ')
            i++;
        if (fmt[i] >= '1' && fmt[i] <= '9') {
            i++;
            while (ubpf_isdigit(fmt[i]))
                i++;
        }
        if (fmt[i] == 'p') {
            char p1 = fmt[i + 1], p2 = p1 ? fmt[i + 2] : 0;
            size = 8;
            if (p1 == 0 || ubpf_isspace(p1) || ubpf_ispunct(p1))
                goto number;
            if ((p1 == 'k' || p1 == 'u') && p2 == 's') {
                i += 2;
                goto string;
            }
            if (p1 == 'K' || p1 == 'x' || p1 == 's' || p1 == 'S') {
                i++;
                goto number;
            }
            if (p1 == 'B') {
                char sym[24];
                int len = ubpf_symbol(sym, raw[spec]);
                uint64_t room = pos < end ? end - pos : 0;
                if (room) {
                    uint64_t k = (uint64_t)len < room ? (uint64_t)len : room - 1;
                    memcpy(d->bin + pos, sym, k);
                    d->bin[pos + k] = 0;
                }
                pos += (uint64_t)len + 1;
                i++;
                spec++;
                continue;
            }
            if ((p1 != 'i' && p1 != 'I') || (p2 != '4' && p2 != '6'))
                return -EINVAL;
            i += 2;
            {
                uint8_t ip[16];
                char text[48];
                uint64_t ipsize = p2 == '4' ? 4 : 16, room, k;
                int len;
                if (pos > end || end - pos < ipsize)
                    return -ENOSPC;
                if (vm_access_ok(run, raw[spec], ipsize, 0))
                    memcpy(ip, (const void *)(uintptr_t)raw[spec], ipsize);
                else
                    memset(ip, 0, ipsize);       /* the kernel's failed copy */
                len = ubpf_ip_string(text, ip, p1, p2);
                room = end - pos;
                k = (uint64_t)len < room ? (uint64_t)len : room - 1;
                memcpy(d->bin + pos, text, k);
                d->bin[pos + k] = 0;
                pos += (uint64_t)len + 1;
                spec++;
                continue;
            }
        } else if (fmt[i] == 's') {
            goto string;
        } else if (fmt[i] == 'c') {
            if (pos >= end)
                return -ENOSPC;
            d->bin[pos] = (char)raw[spec];
            pos++;
            spec++;
            continue;
        }
        size = 4;
        if (fmt[i] == 'l') {
            size = 8;
            i++;
        }
        if (fmt[i] == 'l')
            i++;
        if (fmt[i] != 'i' && fmt[i] != 'd' && fmt[i] != 'u' && fmt[i] != 'x' && fmt[i] != 'X')
            return -EINVAL;
number:
        pos = (pos + 3) & ~(uint64_t)3;
        if (pos > end || end - pos < (uint64_t)size)
            return -ENOSPC;
        ubpf_bin_put(d, pos, raw[spec], size);
        pos += (uint64_t)size;
        spec++;
        continue;
string:
        {
            char next = fmt[i + 1];
            if (next != 0 && !ubpf_isspace(next) && !ubpf_ispunct(next))
                return -EINVAL;
            if (pos >= end)
                return -ENOSPC;
            err = ubpf_copy_string(run, d->bin + pos, raw[spec], end - pos);
            if (err < 0) {
                d->bin[pos] = 0;                 /* an unreadable string prints as "" */
                err = 1;
            }
            pos += (uint64_t)err;
            spec++;
        }
    }
    return 0;
}

/* ---- bstr_printf --------------------------------------------------------- */

/* Render a format prepare accepted into buf[size] (NUL-terminated when
 * size > 0); returns the length the whole text needs, without the NUL. */
static uint64_t ubpf_bstr_printf(char *buf, uint64_t size, const char *fmt,
                                 const ubpf_bprintf *d) {
    ubpf_out o = {buf, size, 0};
    uint64_t args = 0;                  /* the next argument's offset in d->bin */
    uint64_t i;
    for (i = 0; fmt[i]; i++) {
        int flags = 0, width = -1, base = 10, is_long = 0;
        char conv;
        uint64_t v;
        if (fmt[i] != '%') {
            ubpf_put(&o, fmt[i]);
            continue;
        }
        if (fmt[i + 1] == '%') {
            ubpf_put(&o, '%');
            i++;
            continue;
        }
        for (i++;; i++) {
            if (fmt[i] == '-') flags |= UBPF_PF_LEFT;
            else if (fmt[i] == '+') flags |= UBPF_PF_PLUS;
            else if (fmt[i] == ' ') flags |= UBPF_PF_SPACE;
            else if (fmt[i] == '0') flags |= UBPF_PF_ZEROPAD;
            else break;
        }
        if (ubpf_isdigit(fmt[i])) {
            int64_t w = 0;
            while (ubpf_isdigit(fmt[i])) {
                if (w <= UBPF_FIELD_WIDTH_MAX)
                    w = w * 10 + (fmt[i] - '0');
                i++;
            }
            width = w > UBPF_FIELD_WIDTH_MAX ? UBPF_FIELD_WIDTH_MAX : (int)w;
        }
        conv = fmt[i];
        if (conv == 'p') {
            char p1 = fmt[i + 1];
            if (p1 == 'x')
                ubpf_pointer_string(&o, ubpf_bin_get(d, &args, 8), flags, width);
            else if (p1 == 'K')
                ubpf_restricted_pointer(&o, ubpf_bin_get(d, &args, 8), flags, width);
            else if (p1 == 's' || p1 == 'S') {
                char sym[24];
                int len = ubpf_symbol(sym, ubpf_bin_get(d, &args, 8));
                ubpf_string(&o, sym, (uint64_t)len, flags, width);
            } else if (!ubpf_isalnum(p1))
                ubpf_default_pointer(&o, ubpf_bin_get(d, &args, 8), flags, width);
            else if (o.len < o.size) {
                /* pre-formatted in prepare (%pB, %pI4, %pks...): copied as it
                 * is, no width. Once the output is full the live kernel
                 * skips it whole: it adds nothing to the length and the
                 * next arguments are read from where it starts. */
                const char *s = ubpf_bin_str(d, &args);
                while (*s)
                    ubpf_put(&o, *s++);
            }
            while (ubpf_isalnum(fmt[i + 1]))
                i++;
            continue;
        }
        if (conv == 's') {
            const char *s = ubpf_bin_str(d, &args);
            ubpf_string(&o, s, strlen(s), flags, width);
            continue;
        }
        if (conv == 'c') {
            char c = args < sizeof(d->bin) ? d->bin[args] : 0;
            args++;
            ubpf_string(&o, &c, 1, flags, width);
            continue;
        }
        if (conv == 'l') {
            is_long = 1;
            i++;
            if (fmt[i] == 'l')
                i++;
            conv = fmt[i];
        }
        v = ubpf_bin_get(d, &args, is_long ? 8 : 4);
        if (conv == 'd' || conv == 'i') {
            flags |= UBPF_PF_SIGN;
            if (!is_long)
                v = (uint64_t)(int64_t)(int32_t)v;
        } else if (conv == 'x') {
            base = 16;
            flags |= UBPF_PF_SMALL;
        } else if (conv == 'X')
            base = 16;
        ubpf_number(&o, v, base, flags, width);
    }
    if (size > 0)
        buf[o.len < size ? o.len : size - 1] = 0;
    return o.len;
}

/* ---- the trace buffer ------------------------------------------------------ */

/* One bpf_trace_printk line, as the trace event records it. */
typedef struct ubpf_trace_rec {
    struct ubpf_trace_rec *next;
    uint64_t ts_ns;                 /* CLOCK_MONOTONIC (the kernel's trace clock counts from boot too) */
    uint32_t pid;                   /* the thread id: the kernel's task pid */
    uint32_t cpu;
    char comm[UBPF_TASK_COMM_LEN];
    uint32_t len;
    char msg[];
} ubpf_trace_rec;

#define UBPF_TRACE_DEFAULT_CAPACITY (1u << 20)

/* A FIFO of records bounded in bytes; a line that does not fit is dropped
 * and counted. Programs append from any thread without the GIL. */
typedef struct ubpf_trace_buf {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ubpf_trace_rec *head, *tail;
    uint64_t bytes;                 /* held now (records and their text) */
    uint64_t capacity;
    uint64_t count;                 /* records held now */
    uint64_t dropped;
    uint64_t written;               /* records ever appended */
} ubpf_trace_buf;

static ubpf_trace_buf ubpf_trace = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                    NULL, NULL, 0, UBPF_TRACE_DEFAULT_CAPACITY, 0, 0, 0};

static inline uint64_t ubpf_trace_cost(uint32_t len) {
    return sizeof(ubpf_trace_rec) + len;
}

/* Append one line; 0, or -ENOSPC when it was dropped. */
static int ubpf_trace_append(const char *msg, uint32_t len, uint32_t pid, uint32_t cpu,
                             const char *comm) {
    ubpf_trace_rec *r;
    uint64_t cost = ubpf_trace_cost(len);
    uint64_t ts = vm_clock_ns(CLOCK_MONOTONIC);
    pthread_mutex_lock(&ubpf_trace.lock);
    if (ubpf_trace.bytes + cost > ubpf_trace.capacity) {
        ubpf_trace.dropped++;
        pthread_mutex_unlock(&ubpf_trace.lock);
        return -ENOSPC;
    }
    ubpf_trace.bytes += cost;       /* reserved before the allocation */
    pthread_mutex_unlock(&ubpf_trace.lock);
    r = (ubpf_trace_rec *)malloc(cost);
    pthread_mutex_lock(&ubpf_trace.lock);
    if (r == NULL) {
        ubpf_trace.bytes -= cost;
        ubpf_trace.dropped++;
        pthread_mutex_unlock(&ubpf_trace.lock);
        return -ENOSPC;
    }
    r->next = NULL;
    r->ts_ns = ts;
    r->pid = pid;
    r->cpu = cpu;
    memcpy(r->comm, comm, UBPF_TASK_COMM_LEN);
    r->len = len;
    memcpy(r->msg, msg, len);
    if (ubpf_trace.tail)
        ubpf_trace.tail->next = r;
    else
        ubpf_trace.head = r;
    ubpf_trace.tail = r;
    ubpf_trace.count++;
    ubpf_trace.written++;
    pthread_cond_broadcast(&ubpf_trace.cond);
    pthread_mutex_unlock(&ubpf_trace.lock);
    return 0;
}

/* Detach up to max records (oldest first); the caller frees them. */
static ubpf_trace_rec *ubpf_trace_take(uint64_t max) {
    ubpf_trace_rec *first, *last;
    uint64_t n = 0;
    pthread_mutex_lock(&ubpf_trace.lock);
    first = ubpf_trace.head;
    last = NULL;
    while (ubpf_trace.head && n < max) {
        last = ubpf_trace.head;
        ubpf_trace.head = last->next;
        ubpf_trace.bytes -= ubpf_trace_cost(last->len);
        ubpf_trace.count--;
        n++;
    }
    if (last)
        last->next = NULL;
    else
        first = NULL;
    if (ubpf_trace.head == NULL)
        ubpf_trace.tail = NULL;
    pthread_mutex_unlock(&ubpf_trace.lock);
    return first;
}

/* Wait up to timeout_ns (< 0: for ever) for a record; 1 if one is there. */
static int ubpf_trace_wait(int64_t timeout_ns) {
    int ready;
    struct timespec deadline;
    if (timeout_ns >= 0) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ns / 1000000000;
        deadline.tv_nsec += timeout_ns % 1000000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&ubpf_trace.lock);
    while (ubpf_trace.head == NULL) {
        if (timeout_ns < 0)
            pthread_cond_wait(&ubpf_trace.cond, &ubpf_trace.lock);
        else if (pthread_cond_timedwait(&ubpf_trace.cond, &ubpf_trace.lock, &deadline) == ETIMEDOUT)
            break;
    }
    ready = ubpf_trace.head != NULL;
    pthread_mutex_unlock(&ubpf_trace.lock);
    return ready;
}

static void ubpf_trace_stats(uint64_t out[5]) {
    pthread_mutex_lock(&ubpf_trace.lock);
    out[0] = ubpf_trace.count;
    out[1] = ubpf_trace.dropped;
    out[2] = ubpf_trace.bytes;
    out[3] = ubpf_trace.capacity;
    out[4] = ubpf_trace.written;
    pthread_mutex_unlock(&ubpf_trace.lock);
}

static void ubpf_trace_set_capacity(uint64_t capacity) {
    pthread_mutex_lock(&ubpf_trace.lock);
    ubpf_trace.capacity = capacity;
    pthread_mutex_unlock(&ubpf_trace.lock);
}

static void ubpf_trace_reset_dropped(void) {
    pthread_mutex_lock(&ubpf_trace.lock);
    ubpf_trace.dropped = 0;
    pthread_mutex_unlock(&ubpf_trace.lock);
}

#endif /* USERBPF_TRACE_H */
