# Included by _vm.pyx: the kernel's general helpers, in C (nogil).
#
# Clocks, the current task's ids, string parsing and comparison, the
# checksum difference, bpf_loop, the probe_read family, the printf family
# (bpf_trace_printk, bpf_trace_vprintk, bpf_snprintf, with the trace buffer
# userbpf.TracePipe reads) and bpf_spin_lock / bpf_spin_unlock, with the ids and
# results of the kernel's kernel/bpf/helpers.c, net/core/filter.c and
# kernel/trace/bpf_trace.c. Pointer arguments a verifier would have proved
# are checked at run time with vm_access_ok: a bad one ends the run with
# VM_STATUS_ERR_MEM (the program could not have been loaded), except where
# the kernel itself reports the fault (probe_read*: -EFAULT or -ERANGE, destination
# zeroed).

from libc.errno cimport E2BIG, EFAULT, ERANGE
from libc.string cimport memchr, memmove, strlen

cdef extern from *:
    """
    #include <sys/prctl.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #include <time.h>
    static inline uint64_t ubpf_boot_ns(void) { return vm_clock_ns(CLOCK_BOOTTIME); }
    static inline uint64_t ubpf_coarse_ns(void) { return vm_clock_ns(CLOCK_MONOTONIC_COARSE); }
    static inline uint64_t ubpf_tgid(void) { return (uint64_t)(uint32_t)getpid(); }
    static inline uint64_t ubpf_tid(void) { return (uint64_t)(uint32_t)syscall(SYS_gettid); }
    static inline uint64_t ubpf_uid(void) { return (uint64_t)(uint32_t)getuid(); }
    static inline uint64_t ubpf_gid(void) { return (uint64_t)(uint32_t)getgid(); }
    /* the calling thread's name: 16 bytes, NUL-padded (TASK_COMM_LEN) */
    static inline void ubpf_comm(char *buf16) {
        memset(buf16, 0, 16);
        prctl(PR_GET_NAME, (unsigned long)buf16, 0, 0, 0);
        buf16[15] = 0;
    }
    """
    uint64_t ubpf_boot_ns() noexcept nogil
    uint64_t ubpf_coarse_ns() noexcept nogil
    uint64_t ubpf_tgid() noexcept nogil
    uint64_t ubpf_tid() noexcept nogil
    uint64_t ubpf_uid() noexcept nogil
    uint64_t ubpf_gid() noexcept nogil
    void ubpf_comm(char *buf16) noexcept nogil


cdef enum:
    # CONFIG_HZ of the reference kernel (x86-64 distribution default; the
    # lead's machine runs HZ=250). jiffies64 ticks at this rate.
    HELPER_HZ = 250
    TASK_COMM_LEN = 16
    BPF_MAX_LOOPS = 1 << 23         # bpf_loop's nr_loops limit
    BPF_STRTOX_BASE_MASK = 0x1f     # the base lives in the low bits of flags
    STRTOX_MAX_CHARS = 63           # __bpf_strtoull parses a copy in char str[64]
    CSUM_MAX_BYTES = 512            # bpf_csum_diff: from + to fit the scratchpad (MAX_BPF_STACK)

# jiffies start 5 minutes before wrapping 32 bits (INITIAL_JIFFIES), so that
# wrap bugs show early; get_jiffies_64 counts from there.
cdef uint64_t INITIAL_JIFFIES = <uint64_t><uint32_t>(-300 * HELPER_HZ)
JIFFIES_HZ = HELPER_HZ


cdef inline uint64_t _neg(long err) noexcept nogil:
    """A negative errno as r0."""
    return <uint64_t>(-err)


cdef inline uint64_t _bad_pointer(vm_run *run, uint64_t addr, uint64_t size,
                                  int write) noexcept nogil:
    """A pointer argument the verifier would have refused: end the run."""
    run.status = VM_STATUS_ERR_MEM
    run.err_addr = addr
    run.err_size = <uint32_t>size
    run.err_write = write
    return 0


# ---- clocks and the current task ---------------------------------------------

cdef uint64_t _helper_ktime_get_boot_ns(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                        uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return ubpf_boot_ns()


cdef uint64_t _helper_ktime_get_coarse_ns(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                          uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return ubpf_coarse_ns()


cdef uint64_t _helper_jiffies64(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                uint64_t r5, vm_run *run, void *data) noexcept nogil:
    # jiffies do not advance in suspend: CLOCK_MONOTONIC, not BOOTTIME
    return INITIAL_JIFFIES + vm_ktime_ns() // (1000000000 // HELPER_HZ)


cdef uint64_t _helper_get_numa_node_id(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                       uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return 0        # one node: user space sees no NUMA topology here


cdef uint64_t _helper_get_current_pid_tgid(uint64_t r1, uint64_t r2, uint64_t r3,
                                           uint64_t r4, uint64_t r5, vm_run *run,
                                           void *data) noexcept nogil:
    # the kernel's "pid" is the thread id, its "tgid" the process id
    return (ubpf_tgid() << 32) | ubpf_tid()


cdef uint64_t _helper_get_current_uid_gid(uint64_t r1, uint64_t r2, uint64_t r3,
                                          uint64_t r4, uint64_t r5, vm_run *run,
                                          void *data) noexcept nogil:
    return (ubpf_gid() << 32) | ubpf_uid()


cdef uint64_t _helper_get_current_comm(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                       uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_get_current_comm(char *buf, u32 size): the thread's name,
    truncated to size - 1 bytes, NUL-terminated and zero-padded to size
    (strscpy_pad). A size of 0 (the verifier's ARG_CONST_SIZE refuses it)
    gives -EINVAL."""
    cdef uint32_t size = <uint32_t>r2
    cdef char comm[TASK_COMM_LEN]
    cdef uint32_t n = 0
    if size == 0:
        return _neg(EINVAL)
    if not vm_access_ok(run, r1, size, 1):
        return _bad_pointer(run, r1, size, 1)
    ubpf_comm(comm)
    while n < TASK_COMM_LEN and comm[n] != 0 and n < size - 1:
        n += 1
    memcpy(<void *>r1, comm, n)
    memset(<void *>(r1 + n), 0, size - n)
    return 0


# ---- strtol / strtoul ----------------------------------------------------------

cdef inline bint _kspace(uint8_t c) noexcept nogil:
    # the kernel's isspace (lib/ctype.c): \t \n \v \f \r, space and Latin-1 NBSP
    return c == 32 or (9 <= c <= 13) or c == 0xa0


cdef inline bint _kxdigit(uint8_t c) noexcept nogil:
    return (48 <= c <= 57) or (97 <= (c | 0x20) <= 102)


cdef int64_t _strtoull(const uint8_t *buf, uint64_t buf_len, uint64_t flags,
                       uint64_t *res, bint *negative) noexcept nogil:
    """__bpf_strtoull: characters consumed (leading space, a '-', a 0x
    prefix, the digits) or -EINVAL (bad flags or base, nothing to parse, no
    digit) / -ERANGE (over 64 bits). At most 63 characters after the sign
    are looked at, as the kernel parses a copy in a 64-byte buffer."""
    cdef uint8_t s[STRTOX_MAX_CHARS + 1]
    cdef uint64_t i = 0, n, p = 0, start, value = 0, digit
    cdef uint64_t base = flags & BPF_STRTOX_BASE_MASK
    cdef bint overflow = False
    cdef uint8_t c
    if flags & ~<uint64_t>BPF_STRTOX_BASE_MASK or buf_len == 0:
        return -EINVAL
    if base != 0 and base != 8 and base != 10 and base != 16:
        return -EINVAL
    while i < buf_len and _kspace(buf[i]):
        i += 1
    negative[0] = i < buf_len and buf[i] == 45          # '-'
    if negative[0]:
        i += 1
    if i == buf_len:
        return -EINVAL
    n = buf_len - i
    if n > STRTOX_MAX_CHARS:
        n = STRTOX_MAX_CHARS
    memcpy(s, buf + i, n)
    s[n] = 0
    # base 0: "0x" + a hex digit means 16, a leading 0 means 8, else 10
    if base == 0:
        if s[0] == 48:
            base = 16 if (s[1] | 0x20) == 120 and _kxdigit(s[2]) else 8
        else:
            base = 10
    if base == 16 and s[0] == 48 and (s[1] | 0x20) == 120:
        p = 2                                           # the 0x prefix is consumed
    start = p
    while True:
        c = s[p]
        if 48 <= c <= 57:
            digit = c - 48
        elif 97 <= (c | 0x20) <= 102:
            digit = (c | 0x20) - 97 + 10
        else:
            break
        if digit >= base:
            break
        # the kernel keeps parsing after an overflow and then says -ERANGE
        if value >> 60 and value > (<uint64_t>-1 - digit) // base:
            overflow = True
        value = value * base + digit
        p += 1
    if overflow:
        return -ERANGE
    if p == start:
        return -EINVAL
    res[0] = value
    return <int64_t>(i + p)


cdef uint64_t _helper_strtol(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                             uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_strtol(const char *buf, size_t buf_len, u64 flags, long *res):
    *res = the signed value (0 on error, as since Linux 6.12); returns the
    characters consumed or -EINVAL / -ERANGE."""
    cdef uint64_t value
    cdef bint negative = False
    cdef int64_t err
    if not vm_access_ok(run, r4, 8, 1):
        return _bad_pointer(run, r4, 8, 1)
    if r2 and not vm_access_ok(run, r1, r2, 0):
        return _bad_pointer(run, r1, r2, 0)
    vm_store(r4, 8, 0)
    err = _strtoull(<const uint8_t *>r1, r2, r3, &value, &negative)
    if err < 0:
        return <uint64_t>err
    if negative:
        if <int64_t>(0 - value) > 0:
            return _neg(ERANGE)
        value = 0 - value
    elif <int64_t>value < 0:
        return _neg(ERANGE)
    vm_store(r4, 8, value)
    return <uint64_t>err


cdef uint64_t _helper_strtoul(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                              uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_strtoul(const char *buf, size_t buf_len, u64 flags,
    unsigned long *res): as bpf_strtol, unsigned; a '-' sign is -EINVAL."""
    cdef uint64_t value
    cdef bint negative = False
    cdef int64_t err
    if not vm_access_ok(run, r4, 8, 1):
        return _bad_pointer(run, r4, 8, 1)
    if r2 and not vm_access_ok(run, r1, r2, 0):
        return _bad_pointer(run, r1, r2, 0)
    vm_store(r4, 8, 0)
    err = _strtoull(<const uint8_t *>r1, r2, r3, &value, &negative)
    if err < 0:
        return <uint64_t>err
    if negative:
        return _neg(EINVAL)
    vm_store(r4, 8, value)
    return <uint64_t>err


cdef uint64_t _helper_strncmp(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                              uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_strncmp(const char *s1, u32 s1_sz, const char *s2): the
    kernel's strncmp(s1, s2, s1_sz): -1, 0 or 1 (unsigned bytes). s2 is read
    up to its NUL or the first difference."""
    cdef uint32_t n = <uint32_t>r2, i
    cdef uint8_t c1, c2
    if n and not vm_access_ok(run, r1, n, 0):
        return _bad_pointer(run, r1, n, 0)
    for i in range(n):
        if not vm_access_ok(run, r3 + i, 1, 0):
            return _bad_pointer(run, r3 + i, 1, 0)
        c1 = (<const uint8_t *>r1)[i]
        c2 = (<const uint8_t *>r3)[i]
        if c1 != c2:
            return <uint64_t>-1 if c1 < c2 else 1
        if c1 == 0:
            break
    return 0


# ---- bpf_csum_diff --------------------------------------------------------------

cdef inline uint32_t _csum_add(uint32_t a, uint32_t b) noexcept nogil:
    """Ones'-complement 32-bit addition (end-around carry)."""
    cdef uint32_t s = a + b
    return s + (s < b)


cdef uint32_t _csum_partial(const uint8_t *p, uint32_t length, uint32_t seed) noexcept nogil:
    """csum_partial of 4-byte multiples: the 32-bit words as loaded on this
    host, summed with end-around carry into seed (0 only when all are 0)."""
    cdef uint64_t s = seed
    cdef uint32_t w, i = 0
    while i < length:
        memcpy(&w, p + i, 4)
        s += w
        i += 4
    s = (s & 0xffffffffu) + (s >> 32)
    s = (s & 0xffffffffu) + (s >> 32)
    return <uint32_t>s


cdef inline uint32_t _from32to16(uint32_t x) noexcept nogil:
    """csum_from32to16: fold to 16 bits with end-around carry (not inverted)."""
    x = x + ((x >> 16) | (x << 16))
    return x >> 16


cdef uint64_t _helper_csum_diff(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """s64 bpf_csum_diff(__be32 *from, u32 from_size, __be32 *to, u32 to_size,
    __wsum seed): seed + sum(to) - sum(from) in ones'-complement arithmetic,
    folded to 16 bits as the kernel does since 6.13 (the same on every
    architecture). Sizes must be multiples of 4 and total at most 512:
    else -EINVAL."""
    cdef uint32_t from_size = <uint32_t>r2, to_size = <uint32_t>r4
    cdef uint32_t seed = <uint32_t>r5, s
    if (from_size | to_size) & 3 or <uint64_t>from_size + to_size > CSUM_MAX_BYTES:
        return _neg(EINVAL)
    if from_size and not vm_access_ok(run, r1, from_size, 0):
        return _bad_pointer(run, r1, from_size, 0)
    if to_size and not vm_access_ok(run, r3, to_size, 0):
        return _bad_pointer(run, r3, to_size, 0)
    if from_size and to_size:
        s = _csum_add(_csum_partial(<const uint8_t *>r3, to_size, seed),
                      ~_csum_partial(<const uint8_t *>r1, from_size, 0))
    elif to_size:
        s = _csum_partial(<const uint8_t *>r3, to_size, seed)
    elif from_size:
        s = ~_csum_partial(<const uint8_t *>r1, from_size, ~seed)
    else:
        s = seed
    return _from32to16(s)


# ---- bpf_loop (181) ----------------------------------------------------------------

cdef uint64_t _helper_loop(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                           uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_loop(u32 nr_loops, callback_fn, void *callback_ctx, u64 flags):
    calls callback_fn(index, callback_ctx) for index 0..nr_loops-1 until it
    returns non-zero; returns the calls made. flags != 0: -EINVAL.
    The callback runs in the frame below the caller's, so nesting counts
    against the 8 call frames.

    With flags 0 the kernel's verifier inlines the call, and the inlined
    code is what programs observe: nr_loops is compared as a 64-bit value
    and too many (> 1 << 23) give -E2BIG as a 32-bit value, zero-extended
    (0xfffffff9)."""
    cdef uint32_t nr, i, entry
    cdef int base
    cdef uint64_t r0
    if r4 != 0:
        return _neg(EINVAL)
    if r1 > BPF_MAX_LOOPS:
        return <uint32_t>(-E2BIG)
    nr = <uint32_t>r1
    if (r2 & VM_FUNC_TAG_MASK) != VM_FUNC_TAG or (r2 & 0xffffffffu) >= run.prog.ninsns:
        run.status = VM_STATUS_ERR_HELPER       # not a function address the loader made
        run.err_addr = r2
        return 0
    if run.cur_depth + 1 >= UBPF_MAX_CALL_FRAMES:
        run.status = VM_STATUS_ERR_DEPTH
        return 0
    base = run.cur_depth + 1
    entry = <uint32_t>(r2 & 0xffffffffu)
    for i in range(nr):
        r0 = vm_exec_at(run.prog, run, entry, i, r3, 0, 0, 0, base)
        if run.status != VM_STATUS_OK:
            return 0
        # a callback's straight-line code is only counted at taken jumps:
        # hold the run's budget here, between calls
        if run.budget and run.insn_count > run.budget:
            run.status = VM_STATUS_ERR_BUDGET
            return 0
        if r0 != 0:
            return i + 1
    return nr


# ---- probe_read family ---------------------------------------------------------------

# Which errno a failed read reports, as on x86-64 (4-level paging): the
# _kernel variants refuse user-range and non-canonical addresses outright
# with -ERANGE (copy_from_kernel_nofault_allowed) and fault with -EFAULT
# elsewhere; the _user variants always fault with -EFAULT; the legacy
# probe_read / probe_read_str take the user path below TASK_SIZE, the
# kernel path above. Readable memory is the run's memory in every case.
cdef enum:
    PROBE_USER = 0
    PROBE_KERNEL = 1
    PROBE_COMPAT = 2

cdef uint64_t X86_TASK_SIZE = 0x7ffffffff000ull
cdef uint64_t X86_KERNEL_START = 0x800000000000ull      # TASK_SIZE_MAX + PAGE_SIZE


cdef inline uint64_t _probe_errno(uint64_t src, int kind) noexcept nogil:
    if kind == PROBE_USER or (kind == PROBE_COMPAT and src < X86_TASK_SIZE):
        return _neg(EFAULT)
    if src < X86_KERNEL_START or (src >> 47) != 0x1ffff:
        return _neg(ERANGE)
    return _neg(EFAULT)


cdef inline uint64_t _probe_read(uint64_t dst, uint64_t r2, uint64_t src, vm_run *run,
                                 int kind) noexcept nogil:
    """long bpf_probe_read*(void *dst, u32 size, const void *unsafe_ptr):
    copies size bytes from memory the run may read; else an errno (above)
    with dst zeroed."""
    cdef uint32_t size = <uint32_t>r2
    if size == 0:
        return 0
    if not vm_access_ok(run, dst, size, 1):
        return _bad_pointer(run, dst, size, 1)
    if not vm_access_ok(run, src, size, 0):
        memset(<void *>dst, 0, size)
        return _probe_errno(src, kind)
    memmove(<void *>dst, <const void *>src, size)
    return 0


cdef inline uint64_t _probe_read_str(uint64_t dst, uint64_t r2, uint64_t src, vm_run *run,
                                     int kind) noexcept nogil:
    """long bpf_probe_read*_str(void *dst, u32 size, const void *unsafe_ptr):
    copies a NUL-terminated string, at most size bytes, the last one always
    NUL; returns the bytes written including the NUL. A byte the run may
    not read: an errno (above), dst zeroed."""
    cdef uint32_t size = <uint32_t>r2, i
    cdef uint8_t c
    if size == 0:
        return 0
    if not vm_access_ok(run, dst, size, 1):
        return _bad_pointer(run, dst, size, 1)
    for i in range(size):
        if not vm_access_ok(run, src + i, 1, 0):
            memset(<void *>dst, 0, size)
            return _probe_errno(src, kind)
        c = (<const uint8_t *>src)[i]
        (<uint8_t *>dst)[i] = c
        if c == 0:
            return i + 1
    (<uint8_t *>dst)[size - 1] = 0
    return size


cdef uint64_t _helper_probe_read(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                 uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return _probe_read(r1, r2, r3, run, PROBE_COMPAT)


cdef uint64_t _helper_probe_read_user(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                      uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return _probe_read(r1, r2, r3, run, PROBE_USER)


cdef uint64_t _helper_probe_read_kernel(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                        uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return _probe_read(r1, r2, r3, run, PROBE_KERNEL)


cdef uint64_t _helper_probe_read_str(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                     uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return _probe_read_str(r1, r2, r3, run, PROBE_COMPAT)


cdef uint64_t _helper_probe_read_user_str(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                          uint64_t r5, vm_run *run, void *data) noexcept nogil:
    return _probe_read_str(r1, r2, r3, run, PROBE_USER)


cdef uint64_t _helper_probe_read_kernel_str(uint64_t r1, uint64_t r2, uint64_t r3,
                                            uint64_t r4, uint64_t r5, vm_run *run,
                                            void *data) noexcept nogil:
    return _probe_read_str(r1, r2, r3, run, PROBE_KERNEL)


# ---- the printf family: bpf_trace_printk, bpf_trace_vprintk, bpf_snprintf --------------
# The format rules, rendering and trace buffer are C in include/userbpf/trace.h.

cdef extern from "userbpf/trace.h" nogil:
    enum:
        UBPF_MAX_TRACE_PRINTK_VARARGS
        UBPF_MAX_BPRINTF_VARARGS
        UBPF_MAX_BPRINTF_BUF
    ctypedef struct ubpf_bprintf:
        char bin[1]             # the packed arguments (trace.h has the real size)
    ctypedef struct ubpf_trace_rec:
        ubpf_trace_rec *next
        uint64_t ts_ns
        uint32_t pid
        uint32_t cpu
        char comm[16]
        uint32_t len
        char msg[1]
    int ubpf_bprintf_prepare(const vm_run *run, const char *fmt, uint64_t fmt_size,
                             const uint64_t *raw, uint32_t num_args, ubpf_bprintf *d)
    uint64_t ubpf_bstr_printf(char *buf, uint64_t size, const char *fmt, const ubpf_bprintf *d)
    int ubpf_trace_append(const char *msg, uint32_t len, uint32_t pid, uint32_t cpu,
                          const char *comm)
    ubpf_trace_rec *ubpf_trace_take(uint64_t max)
    int ubpf_trace_wait(int64_t timeout_ns)
    void ubpf_trace_stats(uint64_t *out)
    void ubpf_trace_set_capacity(uint64_t capacity)
    void ubpf_trace_reset_dropped()
    int ubpf_kptr_restrict


cdef enum:
    FMT_STACK_COPY = 256        # formats up to this long are copied to the C stack


cdef inline char *_fmt_copy(const char *fmt, uint64_t n, char *small) noexcept nogil:
    """A private copy of the format's n bytes and a NUL: the program's memory
    may change between checking the format and rendering it (another thread
    writing a map value), the copy cannot."""
    cdef char *c = small if n < FMT_STACK_COPY else <char *>malloc(n + 1)
    if c != NULL:
        memcpy(c, fmt, n)
        c[n] = 0
    return c


cdef uint64_t _trace_emit(vm_run *run, const char *fmt, uint64_t fmt_size,
                          const uint64_t *args, uint32_t nargs) noexcept nogil:
    """bpf_bprintf_prepare, bstr_printf into the 1024-byte buffer, one trace
    line (up to the first NUL); returns the length the whole text needs."""
    cdef ubpf_bprintf d
    cdef char small[FMT_STACK_COPY]
    cdef char out[UBPF_MAX_BPRINTF_BUF]
    cdef char comm[TASK_COMM_LEN]
    cdef const char *nul = <const char *>memchr(fmt, 0, fmt_size)
    cdef char *f
    cdef int err
    cdef uint64_t ret
    if nul == NULL:
        return _neg(EINVAL)
    f = _fmt_copy(fmt, <uint64_t>(nul - fmt), small)
    if f == NULL:
        return _neg(ENOMEM)
    err = ubpf_bprintf_prepare(run, f, <uint64_t>(nul - fmt) + 1, args, nargs, &d)
    if err == 0:
        ret = ubpf_bstr_printf(out, UBPF_MAX_BPRINTF_BUF, f, &d)
        ubpf_comm(comm)
        ubpf_trace_append(out, <uint32_t>strlen(out), <uint32_t>ubpf_tid(), run.cpu, comm)
    if f != small:
        free(f)
    return ret if err == 0 else <uint64_t><int64_t>err


cdef uint64_t _helper_trace_printk(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                   uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_trace_printk(const char *fmt, u32 fmt_size, ...): up to 3
    arguments; a line in the trace buffer; returns the bytes the message
    needs (without the NUL; the line itself stops at 1023)."""
    cdef uint64_t args[3]
    cdef uint32_t size = <uint32_t>r2
    args[0] = r3
    args[1] = r4
    args[2] = r5
    if size and not vm_access_ok(run, r1, size, 0):
        return _bad_pointer(run, r1, size, 0)
    return _trace_emit(run, <const char *>r1, size, args, UBPF_MAX_TRACE_PRINTK_VARARGS)


cdef inline bint _bad_data_len(uint64_t args, uint32_t data_len) noexcept nogil:
    # a whole number of u64s, at most MAX_BPRINTF_VARARGS, and a pointer if any
    return (data_len & 7) != 0 or data_len > UBPF_MAX_BPRINTF_VARARGS * 8 or (
        data_len != 0 and args == 0)


cdef uint64_t _helper_trace_vprintk(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                    uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_trace_vprintk(const char *fmt, u32 fmt_size, const void *data,
    u32 data_len): bpf_trace_printk with up to 12 u64 arguments in data;
    data_len not a multiple of 8, over 96, or without data: -EINVAL."""
    cdef uint32_t size = <uint32_t>r2, data_len = <uint32_t>r4
    cdef uint64_t args[12]
    if _bad_data_len(r3, data_len):
        return _neg(EINVAL)
    if size and not vm_access_ok(run, r1, size, 0):
        return _bad_pointer(run, r1, size, 0)
    if data_len and not vm_access_ok(run, r3, data_len, 0):
        return _bad_pointer(run, r3, data_len, 0)
    memcpy(args, <const void *>r3, data_len)
    return _trace_emit(run, <const char *>r1, size, args, data_len // 8)


cdef uint64_t _helper_snprintf(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                               uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_snprintf(char *str, u32 str_size, const char *fmt, u64 *data,
    u32 data_len): the formatted text into str, truncated to str_size - 1
    bytes and NUL-terminated; returns the size the whole text needs,
    NUL included. The format has no size: the verifier proved it a
    NUL-terminated constant; here it is read up to its NUL."""
    cdef uint32_t size = <uint32_t>r2, data_len = <uint32_t>r5
    cdef uint64_t args[12]
    cdef uint64_t n = 0, ret
    cdef ubpf_bprintf d
    cdef char small[FMT_STACK_COPY]
    cdef char *f
    cdef int err
    if _bad_data_len(r4, data_len):
        return _neg(EINVAL)
    if size and not vm_access_ok(run, r1, size, 1):
        return _bad_pointer(run, r1, size, 1)
    if data_len and not vm_access_ok(run, r4, data_len, 0):
        return _bad_pointer(run, r4, data_len, 0)
    while True:
        if not vm_access_ok(run, r3 + n, 1, 0):
            return _bad_pointer(run, r3 + n, 1, 0)
        if (<const char *>r3)[n] == 0:
            break
        n += 1
    memcpy(args, <const void *>r4, data_len)
    f = _fmt_copy(<const char *>r3, n, small)
    if f == NULL:
        return _neg(ENOMEM)
    err = ubpf_bprintf_prepare(run, f, n + 1, args, data_len // 8, &d)
    if err == 0:
        ret = ubpf_bstr_printf(<char *>r1, size, f, &d) + 1
    if f != small:
        free(f)
    return ret if err == 0 else <uint64_t><int64_t>err


# -- the trace buffer, for userbpf.tracepipe ------------------------------------------

def trace_take(size_t max_events=1 << 62):
    """Remove up to ``max_events`` trace lines from the buffer, oldest first:
    a list of ``(timestamp_ns, pid, cpu, comm, msg)`` (comm and msg bytes)."""
    cdef ubpf_trace_rec *r = ubpf_trace_take(max_events)
    cdef ubpf_trace_rec *nxt
    out = []
    try:
        while r != NULL:
            out.append((r.ts_ns, r.pid, r.cpu, (<bytes>r.comm[:TASK_COMM_LEN]).split(b"\0", 1)[0],
                        r.msg[:r.len]))
            nxt = r.next
            free(r)
            r = nxt
    finally:
        while r != NULL:                # only after an exception above
            nxt = r.next
            free(r)
            r = nxt
    return out


def trace_wait(double timeout=-1.0):
    """Wait (the GIL released) until a trace line is buffered, at most
    ``timeout`` seconds (negative: no limit). True if one is there."""
    cdef int64_t ns = -1 if timeout < 0 else <int64_t>(timeout * 1e9)
    cdef int ready
    with nogil:
        ready = ubpf_trace_wait(ns)
    return bool(ready)


def trace_stats():
    """The trace buffer now: lines held, lines dropped (buffer full), bytes
    held, capacity in bytes, lines ever written."""
    cdef uint64_t s[5]
    ubpf_trace_stats(s)
    return {"pending": s[0], "dropped": s[1], "bytes": s[2], "capacity": s[3],
            "written": s[4]}


def trace_set_capacity(uint64_t capacity):
    """Bound the trace buffer to ``capacity`` bytes (lines held count their
    text and a small header); lines that do not fit are dropped."""
    ubpf_trace_set_capacity(capacity)


def trace_reset_dropped():
    """Set the dropped-lines counter back to 0."""
    ubpf_trace_reset_dropped()


def set_kptr_restrict(int value):
    """What %pK prints, as /proc/sys/kernel/kptr_restrict: 0 a hashed
    pointer (as %p), 1 the address for a root user (else zeros), 2 zeros."""
    global ubpf_kptr_restrict
    ubpf_kptr_restrict = value


def get_kptr_restrict():
    return ubpf_kptr_restrict


# ---- bpf_spin_lock (93) / bpf_spin_unlock (94) ---------------------------------------

cdef extern from *:
    """
    #include <sched.h>
    /* the lock this thread holds (the verifier allows one at a time) */
    static __thread uint64_t ubpf_lock_held;
    /* how long a waiter spins before it reports a lock nobody releases */
    static uint64_t ubpf_spin_timeout_ns = 5000000000ull;

    /* A test-and-test-and-set lock on the 4-byte word: 0 free, 1 held (the
     * qspinlock's locked value). Simulated CPUs are threads that a host may
     * preempt, so waiters yield instead of spinning hard. -1 on timeout. */
    static int ubpf_spin_acquire(uint32_t *w) {
        uint64_t spins = 0, start = 0, now;
        for (;;) {
            uint32_t expected = 0;
            if (__atomic_load_n(w, __ATOMIC_RELAXED) == 0 &&
                __atomic_compare_exchange_n(w, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return 0;
            if (++spins < 64)
                continue;
            sched_yield();
            if ((spins & 63) == 0) {
                now = vm_clock_ns(CLOCK_MONOTONIC);
                if (start == 0)
                    start = now;
                else if (now - start > __atomic_load_n(&ubpf_spin_timeout_ns, __ATOMIC_RELAXED))
                    return -1;
            }
        }
    }
    static inline void ubpf_spin_release(uint32_t *w) { __atomic_store_n(w, 0, __ATOMIC_RELEASE); }
    static inline uint64_t ubpf_lock_get_held(void) { return ubpf_lock_held; }
    static inline void ubpf_lock_set_held(uint64_t a) { ubpf_lock_held = a; }
    """
    uint64_t ubpf_lock_get_held() noexcept nogil
    void ubpf_lock_set_held(uint64_t a) noexcept nogil
    uint64_t ubpf_spin_timeout_ns
    int ubpf_spin_acquire(uint32_t *w) noexcept nogil
    void ubpf_spin_release(uint32_t *w) noexcept nogil


cdef enum:
    LOCK_NESTED = 0
    LOCK_TIMEOUT = 1
    LOCK_NOT_HELD = 2
    LOCK_AT_EXIT = 3


cdef uint64_t _lock_misuse(vm_run *run, int why, uint64_t addr, uint64_t held) noexcept with gil:
    """End the run with a RuntimeError (a HelperError for the caller): lock
    misuse the verifier would have refused, or a lock never released."""
    if why == LOCK_NESTED:
        what = (f"bpf_spin_lock({addr:#x}) while this thread holds the lock at {held:#x} "
                "(nested locks, or a run that exited holding it); that lock is released")
    elif why == LOCK_TIMEOUT:
        what = (f"bpf_spin_lock({addr:#x}): not released within "
                f"{ubpf_spin_timeout_ns / 1e9:g} s (a run exited holding it?)")
    elif why == LOCK_AT_EXIT:
        what = (f"the program exited holding the bpf_spin_lock at {addr:#x} (the verifier "
                "refuses this: bpf_spin_unlock is missing); the lock is released")
    else:
        what = f"bpf_spin_unlock({addr:#x}) of a lock this thread does not hold"
    if run.py_exc == NULL:
        e = RuntimeError(what)
        Py_INCREF(e)
        run.py_exc = <void *>e
    run.status = VM_STATUS_ERR_PYTHON
    return 0


cdef inline bint _lock_word_bad(vm_run *run, uint64_t addr) noexcept nogil:
    """The lock word must be 4 writable bytes (map value memory in the
    kernel) at a 4-aligned address; else the run ends."""
    if not vm_access_ok(run, addr, 4, 1):
        _bad_pointer(run, addr, 4, 1)
        return True
    if addr & 3:
        run.status = VM_STATUS_ERR_ALIGN
        run.err_addr = addr
        run.err_size = 4
        run.err_write = 1
        return True
    return False


cdef uint64_t _helper_spin_lock(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_spin_lock(struct bpf_spin_lock *lock): 0 once this thread
    holds the lock. Taking a second lock (the verifier refuses nesting) or
    a lock an earlier run on this thread left held ends the run, releasing
    that lock; so does a wait longer than the spin-lock timeout."""
    cdef uint64_t held = ubpf_lock_get_held()
    if _lock_word_bad(run, r1):
        return 0
    if held:
        ubpf_lock_set_held(0)
        ubpf_spin_release(<uint32_t *>held)
        return _lock_misuse(run, LOCK_NESTED, r1, held)
    if ubpf_spin_acquire(<uint32_t *>r1) < 0:
        return _lock_misuse(run, LOCK_TIMEOUT, r1, 0)
    ubpf_lock_set_held(r1)
    return 0


cdef uint64_t _helper_spin_unlock(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                  uint64_t r5, vm_run *run, void *data) noexcept nogil:
    """long bpf_spin_unlock(struct bpf_spin_lock *lock): releases the lock
    this thread holds; 0. Unlocking any other lock ends the run."""
    if _lock_word_bad(run, r1):
        return 0
    if ubpf_lock_get_held() != r1:
        return _lock_misuse(run, LOCK_NOT_HELD, r1, 0)
    ubpf_lock_set_held(0)
    ubpf_spin_release(<uint32_t *>r1)
    return 0


cdef void _locks_at_exit(vm_run *run) noexcept nogil:
    """The end of a top-level run: a lock still held is released, and a run
    that had ended well ends with an error instead."""
    cdef uint64_t held = ubpf_lock_get_held()
    if held == 0:
        return
    ubpf_lock_set_held(0)
    ubpf_spin_release(<uint32_t *>held)
    if run.status <= VM_STATUS_STOP:
        _lock_misuse(run, LOCK_AT_EXIT, held, 0)
        run.err_pc = run.prog.ninsns - 1        # reported at the end of the program


def set_spin_lock_timeout(double seconds):
    """How long bpf_spin_lock waits before it ends the run (a lock nobody
    releases: the kernel would hang); returns the previous value."""
    global ubpf_spin_timeout_ns
    old = ubpf_spin_timeout_ns / 1e9
    ubpf_spin_timeout_ns = <uint64_t>(seconds * 1e9)
    return old


# The helpers above by kernel id (enum bpf_func_id); _vm.pyx merges them
# into C_HELPERS.
GENERAL_HELPERS = {
    4: _capsule(_helper_probe_read),
    6: _capsule(_helper_trace_printk),
    14: _capsule(_helper_get_current_pid_tgid),
    15: _capsule(_helper_get_current_uid_gid),
    16: _capsule(_helper_get_current_comm),
    28: _capsule(_helper_csum_diff),
    42: _capsule(_helper_get_numa_node_id),
    45: _capsule(_helper_probe_read_str),
    93: _capsule(_helper_spin_lock),
    94: _capsule(_helper_spin_unlock),
    105: _capsule(_helper_strtol),
    106: _capsule(_helper_strtoul),
    112: _capsule(_helper_probe_read_user),
    113: _capsule(_helper_probe_read_kernel),
    114: _capsule(_helper_probe_read_user_str),
    115: _capsule(_helper_probe_read_kernel_str),
    118: _capsule(_helper_jiffies64),
    125: _capsule(_helper_ktime_get_boot_ns),
    160: _capsule(_helper_ktime_get_coarse_ns),
    165: _capsule(_helper_snprintf),
    177: _capsule(_helper_trace_vprintk),
    181: _capsule(_helper_loop),
    182: _capsule(_helper_strncmp),
}
