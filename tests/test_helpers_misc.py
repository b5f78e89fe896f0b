"""The general helpers in C (src/userbpf/helpers.pxi): clocks, task ids,
strtol / strtoul / strncmp, csum_diff, bpf_loop and the probe_read family.

Programs see a packet (``Program.run(mem)``: r1 = its address, r2 = its
length). Where the live kernel can run the same helper calls in an XDP
test_run, the results are compared with it (the program bodies are the
same; only the prologue that finds the packet differs).
"""
from __future__ import annotations

import errno
import os
import random
import struct
import threading
import time

import pytest

from userbpf import (BudgetExceeded, CallDepthError, HelperError, MemoryAccessError, Program,
                     _vm)

EINVAL, ERANGE, E2BIG, EFAULT = errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.EFAULT
XDP, XDP_PASS = 6, 2
CLOCK_MONOTONIC_COARSE = 6           # linux/time.h (the time module lacks it)


def s64(v):
    return v - (1 << 64) if v >> 63 else v


def u64(v):
    return v & 0xffffffffffffffff


def q(buf, off):
    return struct.unpack_from("<Q", buf, off)[0]


# ---- clocks and the current task ---------------------------------------------------

def call(name):
    return Program(f"call {name}\nexit").run()


def test_helpers_are_registered_under_the_kernel_ids():
    ids = {4, 14, 15, 16, 28, 42, 45, 105, 106, 112, 113, 114, 115, 118, 125, 160, 181, 182}
    assert ids <= set(_vm.C_HELPERS)
    assert all(_vm.is_c_helper(_vm.C_HELPERS[i]) for i in ids)


def test_clocks_follow_the_host_clocks():
    b0 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    boot = call("bpf_ktime_get_boot_ns")
    b1 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert b0 <= boot <= b1
    res = time.clock_getres(CLOCK_MONOTONIC_COARSE)
    m0 = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    coarse = call("bpf_ktime_get_coarse_ns")
    m1 = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    assert m0 <= coarse <= m1 + int(res * 1e9)


def test_jiffies64_counts_ticks_from_initial_jiffies():
    hz = _vm.JIFFIES_HZ
    assert hz == 250
    initial = (-300 * hz) & 0xffffffff
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    j = call("bpf_jiffies64")
    t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert initial + t0 * hz // 10**9 <= j <= initial + t1 * hz // 10**9
    time.sleep(0.03)
    assert call("bpf_jiffies64") - j >= 0.03 * hz - 1


def test_numa_node_is_zero():
    assert call("bpf_get_numa_node_id") == 0


def test_pid_tgid_and_uid_gid_of_the_calling_thread():
    assert call("bpf_get_current_pid_tgid") == (os.getpid() << 32) | threading.get_native_id()
    assert call("bpf_get_current_uid_gid") == (os.getgid() << 32) | os.getuid()
    seen = []
    t = threading.Thread(target=lambda: seen.append((call("bpf_get_current_pid_tgid"),
                                                     threading.get_native_id())))
    t.start()
    t.join()
    (v, tid), = seen
    assert v == (os.getpid() << 32) | tid and tid != threading.get_native_id()


COMM = """
    r1 = r6
    r2 = {size}
    call bpf_get_current_comm
    exit
"""


def comm_prog(size):
    return Program("r6 = r1\n" + COMM.format(size=size))


def thread_name():
    with open("/proc/thread-self/comm", "rb") as f:
        return f.read().rstrip(b"\n")


@pytest.mark.parametrize("size", [1, 4, 16, 24])
def test_get_current_comm_truncates_and_pads(size):
    buf = bytearray(b"\xaa" * 32)
    assert comm_prog(size).run(buf) == 0
    name = thread_name()[:size - 1]
    assert bytes(buf[:size]) == name + bytes(size - len(name))
    assert bytes(buf[size:]) == b"\xaa" * (32 - size)


def test_get_current_comm_bad_size_and_pointer():
    buf = bytearray(b"\xaa" * 8)
    assert comm_prog(0).run(buf) == u64(-EINVAL)
    assert buf == b"\xaa" * 8
    with pytest.raises(MemoryAccessError):
        comm_prog(9).run(buf)            # past the 8-byte packet
    assert buf == b"\xaa" * 8


# ---- strtol / strtoul ----------------------------------------------------------------

# The kernel's helpers may not read the packet: bodies copy packet[16:112]
# to the stack at r10 - 104 first.
COPY = "".join(f"    r1 = *(u64 *)(r6 + {16 + 8 * i})\n    *(u64 *)(r10 - {104 - 8 * i}) = r1\n"
               for i in range(12))

# r0 -> packet[0:8], *res -> packet[8:16]; the string at packet[16:]
STRTOX = COPY + """
    r1 = r10
    r1 += -104
    r2 = {n}
    r3 = {flags}
    r4 = 0x5555
    *(u64 *)(r10 - 8) = r4
    r4 = r10
    r4 += -8
    call bpf_{name}
    *(u64 *)(r6 + 0) = r0
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 8) = r1
    r0 = 2
    exit
"""
PKT = 128
USER_PROLOGUE = f"""
    r6 = r1
    r7 = r1
    r7 += r2
    r0 = r6
    r0 += {{size}}
    if r0 > r7 goto fail
"""
KERNEL_PROLOGUE = f"""
    r6 = *(u32 *)(r1 + 0)
    r7 = *(u32 *)(r1 + 4)
    r0 = r6
    r0 += {{size}}
    if r0 > r7 goto fail
"""
EPILOGUE = """
fail:
    r0 = 1
    exit
"""


def strtox_user(name, text, flags, n=None):
    """(r0, *res) of bpf_<name>(text, n, flags, &res) in userbpf."""
    n = len(text) if n is None else n
    body = STRTOX.format(n=n, flags=flags, name=name)
    pkt = bytearray(text.ljust(PKT - 16, b"\0").rjust(PKT, b"\0"))
    r0 = Program(USER_PROLOGUE.format(size=PKT) + body + EPILOGUE).run(pkt)
    assert r0 == 2
    return s64(q(pkt, 0)), s64(q(pkt, 8))


STRTOL = [
    # text, flags, (return, *res)
    (b"123", 10, (3, 123)),
    (b"-123", 10, (4, -123)),
    (b"  \t\n42x", 10, (6, 42)),          # leading space is skipped and counted
    (b"\xa07", 10, (2, 7)),               # the kernel's isspace includes Latin-1 NBSP
    (b"+5", 10, (-EINVAL, 0)),            # no '+' sign
    (b"- 5", 10, (-EINVAL, 0)),
    (b"", 10, (-EINVAL, 0)),
    (b"   ", 10, (-EINVAL, 0)),
    (b"-", 10, (-EINVAL, 0)),
    (b"abc", 10, (-EINVAL, 0)),
    (b"0x1f", 0, (4, 31)),
    (b"0X1F", 0, (4, 31)),
    (b"0x1f", 16, (4, 31)),
    (b"1f", 16, (2, 31)),
    (b"0xg", 0, (1, 0)),                  # "0x" + non-hex: base 8, parses "0"
    (b"0xg", 16, (-EINVAL, 0)),           # base 16 skips "0x" anyway: no digits
    (b"017", 0, (3, 15)),
    (b"019", 0, (2, 1)),
    (b"019", 10, (3, 19)),
    (b"777", 8, (3, 511)),
    (b"8", 8, (-EINVAL, 0)),
    (b"12", 2, (-EINVAL, 0)),             # bases are 0, 8, 10, 16 only
    (b"12", 10 | 0x20, (-EINVAL, 0)),     # bits above BPF_STRTOX_BASE_MASK
    (b"9223372036854775807", 10, (19, 2**63 - 1)),
    (b"9223372036854775808", 10, (-ERANGE, 0)),
    (b"-9223372036854775808", 10, (20, -2**63)),
    (b"-9223372036854775809", 10, (-ERANGE, 0)),
    (b"18446744073709551616", 10, (-ERANGE, 0)),
    (b"-0", 10, (2, 0)),
    (b"12\x0034", 10, (2, 12)),           # a NUL ends the number
    (b"0" * 70 + b"1", 10, (63, 0)),      # only 63 characters are looked at
    (b"  " + b"0" * 62 + b"5", 10, (65, 5)),
]
STRTOUL = [
    (b"123", 10, (3, 123)),
    (b"-1", 10, (-EINVAL, 0)),
    (b"-0", 10, (-EINVAL, 0)),
    (b"18446744073709551615", 10, (20, -1)),
    (b"18446744073709551616", 10, (-ERANGE, 0)),
    (b"0xffffffffffffffff", 0, (18, -1)),
    (b"0x10000000000000000", 0, (-ERANGE, 0)),
    (b"01777777777777777777777", 0, (23, -1)),
    (b"2000000000000000000000", 8, (-ERANGE, 0)),
    (b"1777777777777777777777", 0, (-ERANGE, 0)),        # no leading 0: decimal
    (b" \x0b\x0c\r42", 0, (6, 42)),
    (b"0", 0, (1, 0)),
]


@pytest.mark.parametrize("text, flags, want", STRTOL)
def test_strtol(text, flags, want):
    assert strtox_user("strtol", text, flags) == want


@pytest.mark.parametrize("text, flags, want", STRTOUL)
def test_strtoul(text, flags, want):
    assert strtox_user("strtoul", text, flags) == want


def test_strtol_reads_only_buf_len_bytes():
    assert strtox_user("strtol", b"12345", 10, n=3) == (3, 123)
    assert strtox_user("strtoul", b"12345", 10, n=1) == (1, 1)


def test_strtol_bad_pointers_end_the_run():
    bad_res = "r6 = r1\nr1 = r6\nr2 = 2\nr3 = 10\nr4 = 0\ncall bpf_strtol\nexit"
    with pytest.raises(MemoryAccessError):
        Program(bad_res).run(bytearray(b"12"))
    bad_buf = """
        r1 = r1
        r2 = 64
        r3 = 10
        r4 = r10
        r4 += -8
        call bpf_strtoul
        exit
    """
    with pytest.raises(MemoryAccessError):
        Program(bad_buf).run(bytearray(b"12"))     # 64 bytes from a 2-byte packet


# ---- strncmp ---------------------------------------------------------------------

STRNCMP = COPY + """
    r1 = r10
    r1 += -104
    r2 = {n}
    {s2}
    call bpf_strncmp
    *(u64 *)(r6 + 0) = r0
    r0 = 2
    exit
"""
S2_OFF = 112


def strncmp_user(s1, s2, n):
    pkt = bytearray(PKT)
    pkt[16:16 + len(s1)] = s1
    pkt[S2_OFF:S2_OFF + len(s2) + 1] = s2 + b"\0"
    body = STRNCMP.format(n=n, s2=f"r3 = r6\n    r3 += {S2_OFF}")
    assert Program(USER_PROLOGUE.format(size=PKT) + body + EPILOGUE).run(pkt) == 2
    return s64(q(pkt, 0))


STRNCMP_CASES = [
    (b"abc", b"abc", 4, 0),
    (b"abc", b"abd", 4, -1),
    (b"abd", b"abc", 4, 1),
    (b"abd", b"abc", 2, 0),
    (b"ab", b"abc", 4, -1),
    (b"abc", b"ab", 4, 1),
    (b"\xff", b"a", 2, 1),                 # bytes compare unsigned
    (b"x", b"", 1, 1),
    (b"", b"", 8, 0),
    (b"a" * 60, b"a" * 10, 60, 1),
]


@pytest.mark.parametrize("s1, s2, n, want", STRNCMP_CASES)
def test_strncmp(s1, s2, n, want):
    assert strncmp_user(s1, s2, n) == want


def test_strncmp_s2_is_read_up_to_the_first_difference_only():
    # s1 = "aaaaaaaa" on the stack, s2 = the packet (no NUL in it)
    prog = Program("r6 = r1\nr1 = 0x6161616161616161 ll\n*(u64 *)(r10 - 8) = r1\n"
                   "r1 = r10\nr1 += -8\nr2 = 8\nr3 = r6\ncall bpf_strncmp\nexit")
    assert s64(prog.run(bytearray(b"ab"))) == -1        # differs before the end
    with pytest.raises(MemoryAccessError):
        prog.run(bytearray(b"aa"))                      # would read past the packet


# ---- csum_diff --------------------------------------------------------------------

def csum_ref(frm: bytes, to: bytes, seed: int) -> int:
    """Internet-checksum arithmetic: seed + sum(to) - sum(from) modulo
    0xffff, over 16-bit little-endian words (the host order the kernel
    loads them in). Which of 0 / 0xffff stands for zero is the kernel's
    business (checked against it below)."""
    def words(b):
        return sum(struct.unpack(f"<{len(b) // 2}H", b))
    return ((seed & 0xffff) + (seed >> 16) + words(to) - words(frm)) % 0xffff


CSUM = """
    r1 = {frm}
    r2 = {fs}
    r3 = {to}
    r4 = {ts}
    r5 = {seed} ll
    call bpf_csum_diff
    *(u64 *)(r6 + 0) = r0
    r0 = 2
    exit
"""
CSUM_PKT = 16 + 512


def csum_body(fs, ts, seed):
    return CSUM.format(frm="r6\n    r1 += 16" if fs else "0", fs=fs,
                       to=f"r6\n    r3 += {16 + fs}" if ts else "0", ts=ts, seed=seed)


def csum_packet(frm, to):
    pkt = bytearray(CSUM_PKT)
    pkt[16:16 + len(frm)] = frm
    pkt[16 + len(frm):16 + len(frm) + len(to)] = to
    return pkt


def csum_user(frm, to, seed):
    pkt = csum_packet(frm, to)
    code = USER_PROLOGUE.format(size=CSUM_PKT) + csum_body(len(frm), len(to), seed) + EPILOGUE
    assert Program(code).run(pkt) == 2
    return s64(q(pkt, 0))


def csum_cases(seed=1):
    rnd = random.Random(seed)
    cases = [(b"", b"\xde\xad\xbe\xef" * 2, 0), (b"", b"", 0), (b"", b"", 0x12345678),
             (b"\0" * 8, b"", 0), (b"\xff" * 4, b"", 0), (b"", b"\xff" * 4, 0),
             (b"\xff\xff\xff\xff", b"\0\0\0\0", 0), (b"\x01\x02\x03\x04", b"\x01\x02\x03\x04", 0),
             (b"", b"\xff" * 4, 0xffffffff), (b"\0" * 4, b"\0" * 4, 0)]
    for _ in range(40):
        fs, ts = rnd.randrange(0, 65) * 4, rnd.randrange(0, 65) * 4
        cases.append((rnd.randbytes(fs), rnd.randbytes(ts),
                      rnd.choice([0, rnd.getrandbits(16), rnd.getrandbits(32)])))
    return cases


@pytest.mark.parametrize("frm, to, seed", csum_cases())
def test_csum_diff_matches_the_reference(frm, to, seed):
    got = csum_user(frm, to, seed)
    assert 0 <= got <= 0xffff and got % 0xffff == csum_ref(frm, to, seed)


# zero as 0 or 0xffff: values observed on Linux 6.18 (and compared with it below)
CSUM_ZEROES = [
    (bytes(8), b"", 0, 0), (b"", b"", 0, 0), (b"", bytes(8), 0, 0),
    (b"\xff" * 4, b"", 0, 0), (b"", b"\xff" * 4, 0, 0xffff),
    (b"\1\2\3\4", b"\1\2\3\4", 0, 0xffff), (bytes(4), bytes(4), 0, 0xffff),
    (b"", b"", 0x12345678, 0x68ac), (b"\xff" * 4, b"\xff" * 4, 0xffffffff, 0xffff),
    (b"", b"", 0xffffffff, 0xffff), (bytes(4), b"", 0xffffffff, 0xffff),
]


@pytest.mark.parametrize("frm, to, seed, want", CSUM_ZEROES)
def test_csum_diff_zero_has_the_kernels_representation(frm, to, seed, want):
    assert csum_user(frm, to, seed) == want


def test_csum_diff_known_value_and_replacement():
    # the kernel selftest's push case: 0xdeadbeefdeadbeef (as a u64 on x86) -> 0x3b3b
    assert csum_user(b"", struct.pack("<Q", 0xdeadbeefdeadbeef), 0) == 0x3b3b
    # an IPv4 header's checksum updated by diffing the changed word
    hdr = bytearray.fromhex("450000730000400040110000c0a80001c0a800c7")
    def fold(b):
        s = sum(struct.unpack("!10H", bytes(b)))
        while s >> 16:
            s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    struct.pack_into("!H", hdr, 10, fold(hdr))
    old = bytes(hdr[12:16])
    hdr[12:16] = bytes([10, 0, 0, 1])
    d = csum_user(old, bytes(hdr[12:16]), 0)
    # csum_replace: new = ~(~old_csum + diff), in the loaded (little-endian) order
    oldc = struct.unpack_from("<H", hdr, 10)[0]
    s = (~oldc & 0xffff) + d
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    struct.pack_into("<H", hdr, 10, ~s & 0xffff)
    check = bytearray(hdr)
    check[10:12] = b"\0\0"
    assert struct.unpack_from("!H", hdr, 10)[0] == fold(check)


@pytest.mark.parametrize("fs, ts", [(2, 0), (0, 6), (4, 1), (256, 260), (0, 516)])
def test_csum_diff_bad_sizes(fs, ts):
    assert csum_user(bytes(fs), bytes(ts), 0) == -EINVAL


def test_csum_diff_bad_pointer_ends_the_run():
    with pytest.raises(MemoryAccessError):
        Program("r6 = r1\n" + csum_body(0, 32, 0)).run(bytearray(40))


# ---- bpf_loop --------------------------------------------------------------------

# r0 = bpf_loop(n, cb, &ctx, flags) * 1_000_000 + ctx (the callback adds index + 1)
LOOP = """
    r1 = 0
    *(u64 *)(r10 - 8) = r1
    r1 = {n} ll
    r2 = func[cb] ll
    r3 = r10
    r3 += -8
    r4 = {flags}
    call bpf_loop
    if r0 s< 0 goto out
    r0 *= 1000000
    r1 = *(u64 *)(r10 - 8)
    r0 += r1
out:
    exit
cb:
    r3 = *(u64 *)(r2 + 0)
    r3 += r1
    r3 += 1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    {stop}
    exit
"""


def loop(n, flags=0, stop="", **kw):
    return s64(Program(LOOP.format(n=n, flags=flags, stop=stop), **kw).run())


@pytest.mark.parametrize("n", [0, 1, 5, 100])
def test_loop_counts_and_passes_index_and_ctx(n):
    assert loop(n) == n * 1_000_000 + n * (n + 1) // 2


def test_loop_stops_when_the_callback_returns_nonzero():
    # stop at index 3: 4 calls, ctx = 1 + 2 + 3 + 4
    assert loop(10, stop="if r1 != 3 goto +1\nr0 = 1") == 4 * 1_000_000 + 10


def test_loop_errors():
    assert loop(1, flags=1) == -EINVAL
    # -E2BIG as the kernel's inlined bpf_loop gives it: 32 bits, zero-extended,
    # for any 64-bit nr_loops over 1 << 23
    e2big = (-E2BIG) & 0xffffffff
    for n in ((1 << 23) + 1, 1 << 32 | 3, u64(-1)):
        assert loop(n) == e2big * 1_000_000        # no callback ran: ctx is 0


def test_loop_at_the_limit_runs_8m_times():
    assert loop(1 << 23, stop="") == (1 << 23) * 1_000_000 + (1 << 23) * ((1 << 23) + 1) // 2


def test_loop_callbacks_share_the_budget():
    with pytest.raises(BudgetExceeded):
        loop(1 << 23, budget=10_000)


NESTED = """
    r1 = {outer}
    r2 = func[outer] ll
    r3 = r10
    r3 += -8
    r4 = 0
    *(u64 *)(r10 - 8) = r4
    call bpf_loop
    r0 = *(u64 *)(r10 - 8)
    exit
outer:
    r6 = r2
    r1 = {inner}
    r2 = func[inner] ll
    r3 = r6
    r4 = 0
    call bpf_loop
    r0 = 0
    exit
inner:
    r3 = *(u64 *)(r2 + 0)
    r3 += 1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    exit
"""


def test_nested_loops_run_inner_times_outer():
    assert Program(NESTED.format(outer=7, inner=9)).run() == 63


def test_recursive_loop_hits_the_frame_limit():
    rec = """
        r1 = 1
        r2 = func[cb] ll
        r3 = 0
        r4 = 0
        call bpf_loop
        exit
    cb:
        r1 = 1
        r2 = func[cb] ll
        r3 = 0
        r4 = 0
        call bpf_loop
        r0 = 0
        exit
    """
    with pytest.raises(CallDepthError):
        Program(rec).run()


def test_depth_counts_frames_7_nested_loops_fit():
    # main + 7 callbacks = 8 frames: fits; one more level does not
    def chain(levels):
        parts = ["r1 = 1\nr2 = func[l1] ll\nr3 = 0\nr4 = 0\ncall bpf_loop\nr0 = 42\nexit"]
        for i in range(1, levels + 1):
            if i < levels:
                parts.append(f"l{i}:\nr1 = 1\nr2 = func[l{i + 1}] ll\nr3 = 0\nr4 = 0\n"
                             "call bpf_loop\nr0 = 0\nexit")
            else:
                parts.append(f"l{i}:\nr0 = 0\nexit")
        return Program("\n".join(parts))
    assert chain(7).run() == 42
    with pytest.raises(CallDepthError):
        chain(8).run()


def test_loop_refuses_a_callback_the_loader_did_not_make():
    with pytest.raises(HelperError):
        Program("r1 = 1\nr2 = 5\nr3 = 0\nr4 = 0\ncall bpf_loop\nexit").run()


# ---- probe_read family --------------------------------------------------------------

PROBE = """
    r6 = r1
    r1 = r6
    r2 = {size}
    r3 = {src} ll
    call bpf_{name}
    exit
"""


def probe(name, size, src, dst_len=32, region=None):
    buf = bytearray(b"\xaa" * dst_len)
    p = Program(PROBE.format(name=name, size=size, src=src))
    if region is not None:
        p.add_region(region, False)
    return s64(p.run(buf)), bytes(buf)


NAMES = ["probe_read", "probe_read_kernel", "probe_read_user"]
STR_NAMES = ["probe_read_str", "probe_read_kernel_str", "probe_read_user_str"]


def addr_of(b):
    import ctypes
    return ctypes.addressof((ctypes.c_char * len(b)).from_buffer(b))


@pytest.mark.parametrize("name", NAMES)
def test_probe_read_copies_readable_memory(name):
    src = bytearray(b"hello, world\0tail")
    r, out = probe(name, 17, addr_of(src), region=src)
    assert (r, out) == (0, bytes(src) + b"\xaa" * 15)


# The errno of a failed read by address, as on x86-64: the _kernel variants
# refuse user-range and non-canonical addresses with -ERANGE.
USER_ADDR_ERRNO = {"probe_read": -EFAULT, "probe_read_kernel": -ERANGE,
                   "probe_read_user": -EFAULT, "probe_read_str": -EFAULT,
                   "probe_read_kernel_str": -ERANGE, "probe_read_user_str": -EFAULT}
PROBE_ADDRS = [  # address, errno of (legacy, kernel, user)
    (0, (-EFAULT, -ERANGE, -EFAULT)),
    (0x1000, (-EFAULT, -ERANGE, -EFAULT)),
    (0x7fff00000000, (-EFAULT, -ERANGE, -EFAULT)),
    (0x7ffffffff800, (-ERANGE, -ERANGE, -EFAULT)),      # legacy: above TASK_SIZE, kernel path
    (0xffff887ffffff000, (-EFAULT, -EFAULT, -EFAULT)),  # kernel range, not mapped
    (0xdead000000000000, (-ERANGE, -ERANGE, -EFAULT)),  # non-canonical
    (0xffffffffffff0000, (-EFAULT, -EFAULT, -EFAULT)),
]


@pytest.mark.parametrize("name", NAMES)
def test_probe_read_faults_and_zeroes(name):
    src = bytearray(b"abcdef")
    err = USER_ADDR_ERRNO[name]
    assert probe(name, 7, addr_of(src), region=src) == (err, bytes(7) + b"\xaa" * 25)
    assert probe(name, 4, addr_of(src)) == (err, bytes(4) + b"\xaa" * 28)   # unregistered
    assert probe(name, 0, 0) == (0, b"\xaa" * 32)


@pytest.mark.parametrize("addr, errs", PROBE_ADDRS)
def test_probe_read_errno_by_address(addr, errs):
    for kind, err in zip(("", "_kernel", "_user"), errs):
        for suffix in ("", "_str"):
            assert probe(f"probe_read{kind}{suffix}", 8, addr) == (err, bytes(8) + b"\xaa" * 24)


@pytest.mark.parametrize("name", STR_NAMES)
def test_probe_read_str(name):
    src = bytearray(b"hello\0world")
    a = addr_of(src)
    assert probe(name, 16, a, region=src) == (6, b"hello\0" + b"\xaa" * 26)
    assert probe(name, 4, a, region=src) == (4, b"hel\0" + b"\xaa" * 28)      # truncated
    assert probe(name, 1, a, region=src) == (1, b"\0" + b"\xaa" * 31)
    assert probe(name, 0, a, region=src) == (0, b"\xaa" * 32)
    assert probe(name, 3, a + 6, region=src) == (3, b"wo\0" + b"\xaa" * 29)
    # no NUL before the readable memory ends: an errno, dst zeroed
    err = USER_ADDR_ERRNO[name]
    assert probe(name, 16, a + 6, region=src) == (err, bytes(16) + b"\xaa" * 16)
    assert probe(name, 8, a) == (err, bytes(8) + b"\xaa" * 24)


@pytest.mark.parametrize("name", NAMES + STR_NAMES)
def test_probe_read_destination_must_be_writable(name):
    with pytest.raises(MemoryAccessError):
        probe(name, 33, 0)                     # past the 32-byte packet
    src = bytearray(b"ro\0")       # a read-only region as the destination
    code = f"r1 = {addr_of(src)} ll\nr2 = 3\nr3 = r1\ncall bpf_{name}\nexit"
    p = Program(code)
    p.add_region(src, False)
    with pytest.raises(MemoryAccessError):
        p.run()


def test_probe_read_from_the_stack_and_packet():
    code = """
        r6 = r1
        r1 = 0x64636261 ll
        *(u64 *)(r10 - 8) = r1
        r1 = r6
        r2 = 8
        r3 = r10
        r3 += -8
        call bpf_probe_read_kernel_str
        exit
    """
    buf = bytearray(8)
    assert Program(code).run(buf) == 5
    assert buf == b"abcd\0\0\0\0"


# ---- against the live kernel ------------------------------------------------------------

def kernel_run(host, body, size, pkt, fd_array=None):
    code = KERNEL_PROLOGUE.format(size=size) + body + EPILOGUE
    from userbpf import asm
    with host.prog_load(asm.assemble(code), XDP) as prog:
        r = prog.test_run(bytes(pkt))
    assert r.retval == XDP_PASS
    return r.data_out


@pytest.mark.kernel
@pytest.mark.parametrize("name, table", [("strtol", STRTOL), ("strtoul", STRTOUL)])
def test_strtox_against_the_kernel(host, name, table):
    for text, flags, want in table:
        if not text:
            continue                            # the kernel's verifier wants buf_len > 0
        body = STRTOX.format(n=len(text), flags=flags, name=name)
        pkt = bytearray(text.ljust(PKT - 16, b"\0").rjust(PKT, b"\0"))
        out = kernel_run(host, body, PKT, pkt)
        got = (s64(q(out, 0)), s64(q(out, 8)))
        assert got == strtox_user(name, text, flags), (text, flags)
        assert got == want, (text, flags)


@pytest.mark.kernel
def test_strncmp_against_the_kernel(host):
    for s1, s2, n, want in STRNCMP_CASES:
        # the kernel wants s2 in a frozen read-only map value
        with host.map_create(2, 4, 64, 1, 1 << 7) as m:      # ARRAY, BPF_F_RDONLY_PROG
            m.update(bytes(4), (s2 + b"\0").ljust(64, b"\0"))
            m.freeze()
            body = STRNCMP.format(n=n, s2=f"r3 = map[fd:{m.fd}][0]+0 ll")
            pkt = bytearray(PKT)
            pkt[16:16 + len(s1)] = s1
            out = kernel_run(host, body, PKT, pkt)
        assert s64(q(out, 0)) == want == strncmp_user(s1, s2, n), (s1, s2, n)


@pytest.mark.kernel
def test_csum_diff_against_the_kernel(host):
    for frm, to, seed in csum_cases(seed=2)[:30] + [c[:3] for c in CSUM_ZEROES]:
        pkt = csum_packet(frm, to)
        out = kernel_run(host, csum_body(len(frm), len(to), seed), CSUM_PKT, pkt)
        assert s64(q(out, 0)) == csum_user(frm, to, seed), (frm.hex(), to.hex(), seed)

# bpf_loop is compared with the kernel at the end of this file (its callbacks
# need BTF func_info, which the tests build).


JIFFIES_BOOT = """
    call bpf_jiffies64
    *(u64 *)(r6 + 0) = r0
    call bpf_ktime_get_boot_ns
    *(u64 *)(r6 + 8) = r0
    r0 = 2
    exit
"""


@pytest.mark.kernel
def test_jiffies64_and_boot_ns_against_the_kernel(host):
    from userbpf import asm
    code = KERNEL_PROLOGUE.format(size=16) + JIFFIES_BOOT + EPILOGUE
    user = Program(USER_PROLOGUE.format(size=16) + JIFFIES_BOOT + EPILOGUE)

    def ours():
        b = bytearray(16)
        assert user.run(b) == 2
        return struct.unpack("<QQ", b)

    with host.prog_load(asm.assemble(code), XDP) as prog:
        def theirs():
            return struct.unpack("<QQ", prog.test_run(bytes(16)).data_out[:16])
        j0, b0 = theirs()
        time.sleep(0.2)
        before, (j1, b1), after = ours(), theirs(), ours()
    hz = round((j1 - j0) * 1e9 / (b1 - b0) / 50) * 50
    if hz != _vm.JIFFIES_HZ:
        pytest.skip(f"this kernel ticks at about {hz} Hz, userbpf models {_vm.JIFFIES_HZ}")
    assert before[1] <= b1 <= after[1]                  # the same CLOCK_BOOTTIME
    # the kernel's count starts a boot-dependent few ticks after CLOCK_MONOTONIC
    assert abs(j1 - before[0]) <= _vm.JIFFIES_HZ


# ---- bad input never crashes ------------------------------------------------------

@pytest.mark.parametrize("hid", [4, 16, 28, 45, 105, 106, 112, 113, 114, 115, 181, 182])
def test_random_arguments_give_a_result_or_a_clean_fault(hid):
    from userbpf import HelperError, MemoryAccessError
    rnd = random.Random(hid)
    buf = bytearray(rnd.randbytes(64))
    buf[:4] = b"123\0"                          # a string and a number at base
    base = addr_of(buf)
    outcomes = {"ok": 0, "fault": 0}
    picks = [0, 1, 4, 8, 63, 64, 65, 512, 1 << 23, 1 << 32, u64(-1), u64(-8), base, base + 60,
             base + 64, base - 1, 0x5546554e00000000]
    for _ in range(150):
        regs = [rnd.choice(picks) if rnd.random() < 0.8 else rnd.getrandbits(64)
                for _ in range(5)]
        if rnd.random() < 0.2:                  # plausible: buffers, small sizes
            regs = [base, rnd.choice([1, 3, 4, 8]), rnd.choice([0, 10, 16]), base + 32, 0]
        if hid == 181:
            regs[0] &= 0xff                     # keep any loop short
        code = "".join(f"r{i + 1} = {v} ll\n" for i, v in enumerate(regs)) + f"call {hid}\nexit"
        before = bytes(buf)
        try:
            Program(code).run(buf)
        except (MemoryAccessError, HelperError):
            outcomes["fault"] += 1
            continue
        outcomes["ok"] += 1
        if hid in (28, 182):                    # pure readers: the packet is unchanged
            assert bytes(buf) == before
    # the arguments reach both the helper's work and its argument checks
    assert outcomes["ok"] >= 5 and outcomes["fault"] >= 5, outcomes


# pid_tgid -> [0:8], uid_gid -> [8:16], numa node -> [16:24], comm -> [24:40]
TASK = """
    call bpf_get_current_pid_tgid
    *(u64 *)(r6 + 0) = r0
    call bpf_get_current_uid_gid
    *(u64 *)(r6 + 8) = r0
    call bpf_get_numa_node_id
    *(u64 *)(r6 + 16) = r0
    r1 = r10
    r1 += -16
    r2 = 16
    call bpf_get_current_comm
    r1 = *(u64 *)(r10 - 16)
    *(u64 *)(r6 + 24) = r1
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 32) = r1
    r0 = 2
    exit
"""


@pytest.mark.kernel
def test_task_helpers_against_the_kernel(host):
    """XDP test_run runs in the calling thread: the same task as userbpf's run."""
    from userbpf import asm
    ours = bytearray(40)
    assert Program(USER_PROLOGUE.format(size=40) + TASK + EPILOGUE).run(ours) == 2
    with host.prog_load(asm.assemble(KERNEL_PROLOGUE.format(size=40) + TASK + EPILOGUE),
                        XDP) as prog:
        theirs = prog.test_run(bytes(40)).data_out[:40]
    assert theirs[:16] == ours[:16]
    assert theirs[24:] == ours[24:]
    nodes = "/sys/devices/system/node"
    if not os.path.isdir(nodes) or sum(d.startswith("node") for d in os.listdir(nodes)) == 1:
        assert theirs[16:24] == ours[16:24] == bytes(8)


# ---- bpf_loop against the kernel: callbacks need BTF func_info -----------------------

def kernel_load_with_funcs(host, insns):
    """An XDP program whose callbacks get BTF func_info, as the kernel wants."""
    return host.prog_load_with_funcs(insns, XDP)


# r0 -> packet[0:8], ctx -> packet[8:16]; the callback adds index + 1 to ctx
LOOP_PKT = """
    r1 = 0
    *(u64 *)(r10 - 8) = r1
    r1 = {n} ll
    r2 = func[cb] ll
    r3 = r10
    r3 += -8
    r4 = {flags}
    call bpf_loop
    *(u64 *)(r6 + 0) = r0
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 8) = r1
    r0 = 2
    exit
fail:
    r0 = 1
    exit
cb:
    r3 = *(u64 *)(r2 + 0)
    r3 += r1
    r3 += 1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    {stop}
    exit
"""
NESTED_PKT = """
    r1 = 0
    *(u64 *)(r10 - 8) = r1
    r1 = {outer}
    r2 = func[outer] ll
    r3 = r10
    r3 += -8
    r4 = 0
    call bpf_loop
    *(u64 *)(r6 + 0) = r0
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 8) = r1
    r0 = 2
    exit
fail:
    r0 = 1
    exit
outer:
    r1 = {inner}
    r3 = r2
    r2 = func[inner] ll
    r4 = 0
    call bpf_loop
    r0 = 0
    exit
inner:
    r3 = *(u64 *)(r2 + 0)
    r3 += 1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("body", [
    LOOP_PKT.format(n=0, flags=0, stop=""),
    LOOP_PKT.format(n=10, flags=0, stop=""),
    LOOP_PKT.format(n=300, flags=0, stop=""),
    LOOP_PKT.format(n=10, flags=0, stop="if r1 != 3 goto +1\n    r0 = 1"),
    LOOP_PKT.format(n=10, flags=1, stop=""),
    LOOP_PKT.format(n=(1 << 23) + 1, flags=0, stop=""),
    LOOP_PKT.format(n=1 << 32 | 3, flags=0, stop=""),
    NESTED_PKT.format(outer=7, inner=9),
], ids=["0", "10", "300", "stop", "flags", "e2big", "u32", "nested"])
def test_loop_against_the_kernel(host, body):
    from userbpf import asm
    ours = bytearray(16)
    # the kernel's prologue reads the xdp_md; ours has the packet in r1, r2
    assert Program(USER_PROLOGUE.format(size=16) + body).run(ours) == 2
    with kernel_load_with_funcs(host, asm.assemble(KERNEL_PROLOGUE.format(size=16) + body)) as p:
        theirs = p.test_run(bytes(16)).data_out[:16]
    assert theirs == bytes(ours)


PROBE_K = """
    r1 = r10
    r1 += -8
    r2 = 8
    r3 = {addr} ll
    call bpf_{name}
    *(u64 *)(r6 + 0) = r0
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 8) = r1
    r0 = 2
    exit
"""


@pytest.mark.kernel
def test_probe_read_errors_against_the_kernel(host):
    """Addresses nothing is mapped at, in the user range, the kernel range and
    non-canonical: the same errno, dst zeroed. (XDP may not call the legacy
    probe_read / probe_read_str.)"""
    from userbpf import asm
    for addr, _ in PROBE_ADDRS:
        for name in ("probe_read_kernel", "probe_read_user", "probe_read_kernel_str",
                     "probe_read_user_str"):
            body = PROBE_K.format(addr=addr, name=name) + EPILOGUE
            ours = bytearray(16)
            assert Program(USER_PROLOGUE.format(size=16) + body).run(ours) == 2
            with host.prog_load(asm.assemble(KERNEL_PROLOGUE.format(size=16) + body),
                                XDP) as p:
                theirs = p.test_run(bytes(16)).data_out[:16]
            assert theirs == bytes(ours), (hex(addr), name)
