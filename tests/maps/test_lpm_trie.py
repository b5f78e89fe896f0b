"""BPF_MAP_TYPE_LPM_TRIE: the C trie against a brute-force Python model and
against the live kernel's trie.

The model keeps {(prefixlen, masked data): (key as last written, value)}:
lookup is the longest stored prefix of the key (the key's own prefixlen
bounds it), and get_next_key walks the kernel's post-order, which for a
binary trie is fixed by the prefixes alone: a prefix comes after every
prefix that extends it, and the 0 side of a bit comes before the 1 side.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import random
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from userbpf import isa
from userbpf._maps import MapCore
from userbpf.errors import MemoryAccessError
from userbpf.program import Program

LPM_TRIE = 11
BPF_F_NO_PREALLOC = 1
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
ENOTSUPP = 524          # kernel-internal errno that bpf() returns for unsupported ops


def key(prefixlen: int, data: bytes) -> bytes:
    """struct bpf_lpm_trie_key_u8: host-order u32 prefixlen, then the data bytes."""
    return struct.pack("=I", prefixlen) + data


def v4(cidr: str) -> bytes:
    ip, _, plen = cidr.partition("/")
    return key(int(plen or 32), socket.inet_pton(socket.AF_INET, ip))


def v6(cidr: str) -> bytes:
    ip, _, plen = cidr.partition("/")
    return key(int(plen or 128), socket.inet_pton(socket.AF_INET6, ip))


def u32(b: bytes) -> int:
    return struct.unpack("<I", b[:4])[0]


def trie(key_size=8, value_size=4, max_entries=64, flags=BPF_F_NO_PREALLOC) -> MapCore:
    return MapCore(LPM_TRIE, key_size, value_size, max_entries, flags, 1)


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def iterate(m) -> list:
    """Every key in get_next_key order, starting from no key."""
    out, k = [], None
    while True:
        try:
            k = m.get_next_key(k)
        except OSError as e:
            assert e.errno == errno.ENOENT
            return out
        out.append(k)
        assert len(out) <= 100_000, "get_next_key does not end"


# -- the Python model ---------------------------------------------------------

def bits_of(data: bytes, n: int) -> tuple:
    """The first n bits of data, most significant bit of data[0] first."""
    return tuple((data[i >> 3] >> (7 - (i & 7))) & 1 for i in range(n))


def postorder_key(prefix: tuple) -> tuple:
    """Sort key for the kernel's post-order: an extension sorts before the
    prefix it extends (its next bit, 0 or 1, is below the end marker 2)."""
    plen, bits = prefix
    return bits + (2,)


class LpmModel:
    """A dict of prefixes with the kernel's rules, computed by brute force."""

    def __init__(self, data_size: int, max_entries: int):
        self.data_size = data_size
        self.max_prefixlen = data_size * 8
        self.max_entries = max_entries
        self.elems = {}                  # (prefixlen, bits) -> (key bytes, value)

    def _split(self, k: bytes):
        plen = struct.unpack("=I", k[:4])[0]
        data = k[4:]
        return plen, data

    def update(self, k: bytes, value: bytes, flags: int) -> int:
        plen, data = self._split(k)
        if flags > BPF_EXIST or plen > self.max_prefixlen:
            return errno.EINVAL
        p = (plen, bits_of(data, plen))
        if p in self.elems:
            if flags == BPF_NOEXIST:
                return errno.EEXIST
        else:
            if flags == BPF_EXIST:
                return errno.ENOENT
            if len(self.elems) >= self.max_entries:
                return errno.ENOSPC
        self.elems[p] = (bytes(k), bytes(value))
        return 0

    def delete(self, k: bytes) -> int:
        plen, data = self._split(k)
        if plen > self.max_prefixlen:
            return errno.EINVAL
        p = (plen, bits_of(data, plen))
        if p not in self.elems:
            return errno.ENOENT
        del self.elems[p]
        return 0

    def lookup(self, k: bytes):
        """The value of the longest stored prefix of k, or None."""
        plen, data = self._split(k)
        if plen > self.max_prefixlen:
            return None
        best = None
        for (p, bits), (_, value) in self.elems.items():
            if p <= plen and bits_of(data, p) == bits and (best is None or p > best[0]):
                best = (p, value)
        return None if best is None else best[1]

    def order(self) -> list:
        """The stored keys (as last written) in the kernel's get_next_key order."""
        return [self.elems[p][0] for p in sorted(self.elems, key=postorder_key)]

    def get_next_key(self, k):
        """(errno, next key): an absent or invalid key gives the first key."""
        order = sorted(self.elems, key=postorder_key)
        if not order:
            return errno.ENOENT, None
        if k is not None:
            plen, data = self._split(k)
            p = (plen, bits_of(data, plen)) if plen <= self.max_prefixlen else None
            if p in self.elems:
                i = order.index(p)
                if i + 1 == len(order):
                    return errno.ENOENT, None
                return 0, self.elems[order[i + 1]][0]
        return 0, self.elems[order[0]][0]


def model_errno_and_value(m: MapCore, k: bytes):
    try:
        return 0, m.lookup(k)
    except OSError as e:
        return e.errno, None


# -- creation -----------------------------------------------------------------

@pytest.mark.parametrize("key_size, value_size, max_entries, flags", [
    (8, 4, 0, BPF_F_NO_PREALLOC),          # max_entries == 0
    (8, 4, 16, 0),                         # BPF_F_NO_PREALLOC is mandatory
    (4, 4, 16, BPF_F_NO_PREALLOC),         # no data bytes
    (261, 4, 16, BPF_F_NO_PREALLOC),       # more than 256 data bytes
    (8, 0, 16, BPF_F_NO_PREALLOC),         # empty value
    (8, 4, 16, BPF_F_NO_PREALLOC | 2),     # BPF_F_NO_COMMON_LRU is not for tries
    (8, 4, 16, BPF_F_NO_PREALLOC | 8 | 16),      # RDONLY and WRONLY together
    (8, 4, 16, BPF_F_NO_PREALLOC | 128 | 256),   # RDONLY_PROG and WRONLY_PROG together
    (8, (1 << 22) - 256 - 24 + 1, 16, BPF_F_NO_PREALLOC),   # past LPM_VAL_SIZE_MAX
])
def test_create_rejects_what_the_kernel_rejects(key_size, value_size, max_entries, flags):
    with pytest.raises(OSError) as e:
        MapCore(LPM_TRIE, key_size, value_size, max_entries, flags, 1)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("key_size, value_size, flags", [
    (5, 1, BPF_F_NO_PREALLOC), (260, 1, BPF_F_NO_PREALLOC), (8, 1, BPF_F_NO_PREALLOC | 128),
    (8, (1 << 22) - 256 - 24, BPF_F_NO_PREALLOC)])
def test_create_accepts_limits(key_size, value_size, flags):
    m = MapCore(LPM_TRIE, key_size, value_size, 1, flags, 1)
    assert (m.map_type, m.key_size, m.value_size, m.max_entries) == \
        (LPM_TRIE, key_size, value_size, 1)
    assert m.sys_value_size == value_size


# -- hand-checked behaviour -----------------------------------------------------

def test_kernel_comment_example_order_and_lookup():
    # The four-prefix example of kernel/bpf/lpm_trie.c: post-order iteration.
    m = trie()
    for i, cidr in enumerate(["192.168.0.0/16", "192.168.0.0/24", "192.168.1.0/24",
                              "192.168.128.0/24"]):
        m.update(v4(cidr), struct.pack("<I", i + 1))
    assert iterate(m) == [v4("192.168.0.0/24"), v4("192.168.1.0/24"),
                          v4("192.168.128.0/24"), v4("192.168.0.0/16")]
    assert u32(m.lookup(v4("192.168.0.9"))) == 2
    assert u32(m.lookup(v4("192.168.1.200"))) == 3
    assert u32(m.lookup(v4("192.168.128.0"))) == 4
    assert u32(m.lookup(v4("192.168.77.1"))) == 1       # only the /16 covers it
    assert u32(m.lookup(v4("192.168.1.1/16"))) == 1     # the key's prefixlen bounds the match
    assert u32(m.lookup(v4("192.168.1.1/23"))) == 1
    assert u32(m.lookup(v4("192.168.1.1/24"))) == 3
    assert errno_of(m.lookup, v4("192.169.0.0")) == errno.ENOENT
    assert errno_of(m.lookup, v4("192.168.1.1/15")) == errno.ENOENT


def test_order_deeper_first_then_zero_side():
    m = trie(key_size=5, value_size=1)
    # 1-byte data; prefixes as bit strings: "" , "0", "01", "1", "10", "11", "0110"
    for plen, b in [(0, 0x00), (1, 0x00), (2, 0x40), (1, 0x80), (2, 0x80), (2, 0xC0),
                    (4, 0x60)]:
        m.update(key(plen, bytes([b])), b"\1")
    assert [(u32(k), k[4]) for k in iterate(m)] == [
        (4, 0x60), (2, 0x40), (1, 0x00), (2, 0x80), (2, 0xC0), (1, 0x80), (0, 0x00)]


def test_get_next_key_of_last_absent_and_invalid_keys():
    m = trie()
    assert errno_of(m.get_next_key, None) == errno.ENOENT          # empty trie
    assert errno_of(m.get_next_key, v4("10.0.0.0/8")) == errno.ENOENT
    m.update(v4("10.0.0.0/8"), b"\1\0\0\0")
    m.update(v4("10.1.0.0/16"), b"\2\0\0\0")
    assert m.get_next_key(None) == v4("10.1.0.0/16")
    assert m.get_next_key(v4("10.1.0.0/16")) == v4("10.0.0.0/8")
    assert errno_of(m.get_next_key, v4("10.0.0.0/8")) == errno.ENOENT    # the last
    assert m.get_next_key(v4("10.2.0.0/16")) == v4("10.1.0.0/16")        # absent: first
    assert m.get_next_key(v4("10.0.0.0/9")) == v4("10.1.0.0/16")
    assert m.get_next_key(key(33, bytes(4))) == v4("10.1.0.0/16")       # invalid: first


def test_keys_keep_the_bits_past_prefixlen_as_last_written():
    m = trie()
    m.update(v4("10.1.2.3/8"), b"\1\0\0\0")
    assert iterate(m) == [v4("10.1.2.3/8")]
    assert u32(m.lookup(v4("10.9.9.9"))) == 1
    m.update(v4("10.7.7.7/8"), b"\2\0\0\0", BPF_EXIST)          # same prefix, new bytes
    assert iterate(m) == [v4("10.7.7.7/8")]
    assert u32(m.lookup(v4("10.0.0.0/8"))) == 2
    m.delete(v4("10.0.0.0/8"))                                  # deleted by prefix
    assert iterate(m) == []


def test_update_flags_and_errnos():
    m = trie(max_entries=3)
    k = v4("10.0.0.0/8")
    assert errno_of(m.update, k, bytes(4), BPF_EXIST) == errno.ENOENT
    m.update(k, b"\1\0\0\0", BPF_NOEXIST)
    assert errno_of(m.update, k, bytes(4), BPF_NOEXIST) == errno.EEXIST
    m.update(k, b"\2\0\0\0", BPF_EXIST)
    assert u32(m.lookup(k)) == 2
    assert errno_of(m.update, k, bytes(4), 3) == errno.EINVAL
    assert errno_of(m.update, k, bytes(4), 4) == errno.EINVAL         # BPF_F_LOCK
    assert errno_of(m.update, key(33, bytes(4)), bytes(4), 0) == errno.EINVAL
    assert errno_of(m.delete, key(33, bytes(4))) == errno.EINVAL
    assert errno_of(m.delete, v4("10.0.0.0/9")) == errno.ENOENT
    assert errno_of(m.lookup, key(33, bytes(4))) == errno.ENOENT
    assert errno_of(m.lookup, k, 4) == errno.EINVAL                   # no bpf_spin_lock
    assert errno_of(m.lookup_and_delete, k) == ENOTSUPP
    assert u32(m.lookup(k)) == 2                                       # still there


def test_full_trie_enospc_but_replacing_works():
    m = trie(max_entries=3)
    for cidr in ["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/16"]:
        m.update(v4(cidr), b"\1\0\0\0")
    # an intermediate node now joins the two /24s at 10.0.0.0/23
    assert errno_of(m.update, v4("11.0.0.0/8"), bytes(4), BPF_ANY) == errno.ENOSPC
    assert errno_of(m.update, v4("10.0.0.0/23"), bytes(4), BPF_ANY) == errno.ENOSPC
    assert errno_of(m.update, v4("10.0.0.0/23"), bytes(4), BPF_EXIST) == errno.ENOENT
    m.update(v4("10.0.1.0/24"), b"\7\0\0\0", BPF_ANY)               # replacing: fine
    assert u32(m.lookup(v4("10.0.1.9"))) == 7
    m.delete(v4("10.0.0.0/16"))
    m.update(v4("10.0.0.0/23"), b"\5\0\0\0", BPF_NOEXIST)           # fills the intermediate
    assert u32(m.lookup(v4("10.0.0.0/23"))) == 5
    assert iterate(m) == [v4("10.0.0.0/24"), v4("10.0.1.0/24"), v4("10.0.0.0/23")]


def test_delete_keeps_branch_points():
    m = trie()
    for i, cidr in enumerate(["10.0.0.0/8", "10.0.0.0/16", "10.128.0.0/16", "10.0.0.0/24"]):
        m.update(v4(cidr), bytes([i + 1, 0, 0, 0]))
    m.delete(v4("10.0.0.0/8"))                   # two children: becomes a branch point
    assert errno_of(m.lookup, v4("10.5.0.0")) == errno.ENOENT
    assert u32(m.lookup(v4("10.0.0.1"))) == 4
    assert u32(m.lookup(v4("10.0.1.1"))) == 2
    assert iterate(m) == [v4("10.0.0.0/24"), v4("10.0.0.0/16"), v4("10.128.0.0/16")]
    assert errno_of(m.delete, v4("10.0.0.0/8")) == errno.ENOENT
    m.delete(v4("10.128.0.0/16"))
    m.delete(v4("10.0.0.0/16"))
    assert iterate(m) == [v4("10.0.0.0/24")]
    m.update(v4("10.0.0.0/8"), b"\x09\0\0\0", BPF_NOEXIST)
    assert u32(m.lookup(v4("10.200.0.0"))) == 9


def test_zero_length_prefix_is_the_default_route():
    m = trie()
    m.update(v4("0.0.0.0/0"), b"\1\0\0\0")
    m.update(v4("8.8.8.8/32"), b"\2\0\0\0")
    assert u32(m.lookup(v4("1.2.3.4"))) == 1
    assert u32(m.lookup(v4("8.8.8.8"))) == 2
    assert u32(m.lookup(v4("8.8.8.8/31"))) == 1
    assert u32(m.lookup(key(0, b"\xff" * 4))) == 1
    assert iterate(m) == [v4("8.8.8.8/32"), v4("0.0.0.0/0")]


def test_ipv6_routes():
    m = trie(key_size=20, value_size=8)
    routes = {"::/0": 1, "2001:db8::/32": 2, "2001:db8:1::/48": 3, "2001:db8:1:2::/64": 4,
              "fe80::/10": 5, "2001:db8:1:2::1/128": 6}
    for cidr, v in routes.items():
        m.update(v6(cidr), struct.pack("<Q", v))

    def route(ip):
        return struct.unpack("<Q", m.lookup(v6(ip)))[0]

    assert route("2001:db8:1:2::1") == 6
    assert route("2001:db8:1:2::2") == 4
    assert route("2001:db8:1:3::1") == 3
    assert route("2001:db8:2::1") == 2
    assert route("fe80::1") == 5
    assert route("febf:ffff::1") == 5
    assert route("fec0::1") == 1
    assert iterate(m) == [v6(c) for c in ["2001:db8:1:2::1/128", "2001:db8:1:2::/64",
                                          "2001:db8:1::/48", "2001:db8::/32", "fe80::/10",
                                          "::/0"]]


def test_max_data_size_and_deep_chain():
    m = trie(key_size=260, value_size=2, max_entries=2100)
    data = bytes(range(256))
    for plen in range(0, 2049, 1):
        m.update(key(plen, data), struct.pack("<H", plen))
    assert struct.unpack("<H", m.lookup(key(2048, data)))[0] == 2048
    flipped = bytearray(data)
    flipped[100] ^= 0x01                       # differs at bit 807
    assert struct.unpack("<H", m.lookup(key(2048, bytes(flipped))))[0] == 807
    keys = iterate(m)
    assert [u32(k) for k in keys] == list(range(2048, -1, -1))


# -- the Hypothesis state machine ---------------------------------------------

DATA_SIZE = 2
MAX_ENTRIES = 12
# A few byte values that share long prefixes, so prefixes nest and collide.
BYTES = st.sampled_from([0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0xc0, 0xff])
KEYS = st.builds(lambda p, d: key(p, bytes(d)),
                 st.one_of(st.integers(0, DATA_SIZE * 8), st.just(DATA_SIZE * 8 + 1)),
                 st.lists(BYTES, min_size=DATA_SIZE, max_size=DATA_SIZE))
FLAGS = st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_ANY, 3])


class LpmMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.m = trie(key_size=4 + DATA_SIZE, value_size=3, max_entries=MAX_ENTRIES)
        self.model = LpmModel(DATA_SIZE, MAX_ENTRIES)
        self.n = 0

    @rule(k=KEYS, flags=FLAGS)
    def update(self, k, flags):
        self.n += 1
        value = self.n.to_bytes(3, "little")
        assert errno_of(self.m.update, k, value, flags) == self.model.update(k, value, flags)

    @rule(k=KEYS)
    def delete(self, k):
        assert errno_of(self.m.delete, k) == self.model.delete(k)

    @precondition(lambda self: self.model.elems)
    @rule(data=st.data())
    def delete_existing(self, data):
        k, _ = data.draw(st.sampled_from(sorted(self.model.elems.values())))
        assert errno_of(self.m.delete, k) == self.model.delete(k) == 0

    @rule(k=KEYS)
    def lookup(self, k):
        want = self.model.lookup(k)
        assert model_errno_and_value(self.m, k) == ((0, want) if want is not None
                                                    else (errno.ENOENT, None))
        addr = self.m.program_lookup(k)
        assert (addr != 0) == (want is not None)

    @rule(k=st.one_of(st.none(), KEYS))
    def get_next_key(self, k):
        err, want = self.model.get_next_key(k)
        try:
            got = self.m.get_next_key(k)
        except OSError as e:
            assert (e.errno, None) == (err, want)
        else:
            assert (0, got) == (err, want)

    @invariant()
    def iteration_matches(self):
        assert iterate(self.m) == self.model.order()


TestLpmMachine = LpmMachine.TestCase
TestLpmMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])


def test_random_sequence_against_model():
    """A longer seeded run over IPv4 keys (bounded; the stateful test shrinks)."""
    rng = random.Random(7)
    m = trie(key_size=8, value_size=4, max_entries=40)
    model = LpmModel(4, 40)
    for step in range(3000):
        plen = rng.choice([rng.randint(0, 33), 8, 16, 24, 32])
        data = bytes(rng.choice([10, 11, 192, 168, 0, 255, 128]) for _ in range(4))
        k = key(plen, data)
        op = rng.random()
        if op < 0.45:
            flags = rng.choice([0, 0, 1, 2])
            v = step.to_bytes(4, "little")
            assert errno_of(m.update, k, v, flags) == model.update(k, v, flags)
        elif op < 0.7:
            assert errno_of(m.delete, k) == model.delete(k)
        else:
            want = model.lookup(k)
            assert model_errno_and_value(m, k) == ((0, want) if want is not None
                                                   else (errno.ENOENT, None))
        if step % 100 == 0:
            assert iterate(m) == model.order()
    assert iterate(m) == model.order()


# -- programs -----------------------------------------------------------------

def lookup_program(fd: int, k: bytes, then) -> list:
    """Store key k on the stack, bpf_map_lookup_elem(map, &key); return 0xffff
    if NULL, else run `then` (instructions with the value pointer in r0)."""
    assert len(k) == 8
    return [
        isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -8, struct.unpack("<i", k[:4])[0]),
        isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -4, struct.unpack("<i", k[4:])[0]),
        isa.BPF_LD_MAP_FD(isa.BPF_REG_1, fd),
        isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
        isa.BPF_EMIT_CALL(1),                                     # bpf_map_lookup_elem
        isa.BPF_JMP_IMM(isa.BPF_JNE, isa.BPF_REG_0, 0, 2),
        isa.BPF_MOV64_IMM(isa.BPF_REG_0, 0xffff),
        isa.BPF_EXIT_INSN(),
        *then,
        isa.BPF_EXIT_INSN(),
    ]


def test_program_lookup_reads_and_writes_the_value():
    m = trie(value_size=8)
    m.update(v4("10.0.0.0/8"), struct.pack("<Q", 0x1111))
    m.update(v4("10.1.0.0/16"), struct.pack("<Q", 0x2222))
    read = [isa.BPF_LDX_MEM(isa.BPF_DW, isa.BPF_REG_0, isa.BPF_REG_0, 0)]
    assert Program(lookup_program(5, v4("10.1.2.3"), read), maps={5: m}).run() == 0x2222
    assert Program(lookup_program(5, v4("10.9.2.3"), read), maps={5: m}).run() == 0x1111
    assert Program(lookup_program(5, v4("10.1.2.3/12"), read), maps={5: m}).run() == 0x1111
    assert Program(lookup_program(5, v4("11.0.0.1"), read), maps={5: m}).run() == 0xffff
    write = [isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_0, 4, 0x77),
             isa.BPF_MOV64_IMM(isa.BPF_REG_0, 1)]
    assert Program(lookup_program(5, v4("10.1.9.9"), write), maps={5: m}).run() == 1
    assert m.lookup(v4("10.1.0.0/16")) == struct.pack("<II", 0x2222, 0x77)


def test_program_cannot_reach_past_the_value():
    m = trie(value_size=6)
    m.update(v4("10.0.0.0/8"), bytes(6))
    past = [isa.BPF_LDX_MEM(isa.BPF_W, isa.BPF_REG_0, isa.BPF_REG_0, 4)]   # bytes 4..7
    with pytest.raises(MemoryAccessError):
        Program(lookup_program(3, v4("10.0.0.1"), past), maps={3: m}).run()
    back = [isa.BPF_LDX_MEM(isa.BPF_B, isa.BPF_REG_0, isa.BPF_REG_0, -1)]  # node memory
    with pytest.raises(MemoryAccessError):
        Program(lookup_program(3, v4("10.0.0.1"), back), maps={3: m}).run()
    inside = [isa.BPF_LDX_MEM(isa.BPF_H, isa.BPF_REG_0, isa.BPF_REG_0, 4)]
    assert Program(lookup_program(3, v4("10.0.0.1"), inside), maps={3: m}).run() == 0


def test_program_update_and_delete_return_kernel_errnos():
    m = trie(max_entries=2)
    k = v4("10.0.0.0/8")
    # r0 = bpf_map_update_elem(map, &key, &value, r4); value = key's first 4 bytes
    def prog(flags, helper=2):
        return Program([
            isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -8, struct.unpack("<i", k[:4])[0]),
            isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -4, struct.unpack("<i", k[4:])[0]),
            isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -16, 0x5a5a),
            isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 4),
            isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
            isa.BPF_MOV64_REG(isa.BPF_REG_3, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_3, -16),
            isa.BPF_MOV64_IMM(isa.BPF_REG_4, flags),
            isa.BPF_EMIT_CALL(helper),
            isa.BPF_EXIT_INSN(),
        ], maps={4: m})

    def signed(r0):
        return r0 - (1 << 64) if r0 >> 63 else r0

    assert signed(prog(BPF_EXIST).run()) == -errno.ENOENT
    assert signed(prog(BPF_NOEXIST).run()) == 0
    assert signed(prog(BPF_NOEXIST).run()) == -errno.EEXIST
    assert signed(prog(7).run()) == -errno.EINVAL
    assert u32(m.lookup(k)) == 0x5a5a
    assert signed(prog(0, helper=3).run()) == 0            # bpf_map_delete_elem
    assert signed(prog(0, helper=3).run()) == -errno.ENOENT


def test_stale_value_pointer_stays_map_memory():
    """A program keeps a value pointer across a delete: the slot is still
    readable map memory (the kernel frees after an RCU grace period; here the
    node waits in a FIFO), holding the old value."""
    m = trie(value_size=8)
    k = v4("10.0.0.0/8")
    m.update(k, struct.pack("<Q", 0xabcdef))
    # r6 = lookup(); delete(); return *r6
    code = [
        isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -8, struct.unpack("<i", k[:4])[0]),
        isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -4, struct.unpack("<i", k[4:])[0]),
        isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 1),
        isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
        isa.BPF_EMIT_CALL(1),
        isa.BPF_JMP_IMM(isa.BPF_JEQ, isa.BPF_REG_0, 0, 8),
        isa.BPF_MOV64_REG(isa.BPF_REG_6, isa.BPF_REG_0),
        isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 1),
        isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
        isa.BPF_EMIT_CALL(3),
        isa.BPF_LDX_MEM(isa.BPF_DW, isa.BPF_REG_0, isa.BPF_REG_6, 0),
        isa.BPF_EXIT_INSN(),
        isa.BPF_MOV64_IMM(isa.BPF_REG_0, 0xffff),
        isa.BPF_EXIT_INSN(),
    ]
    assert Program(code, maps={1: m}).run() == 0xabcdef
    assert errno_of(m.lookup, k) == errno.ENOENT


def test_replacing_gives_a_new_value_slot():
    m = trie(value_size=8)
    k = v4("10.0.0.0/8")
    m.update(k, struct.pack("<Q", 1))
    a = m.program_lookup(k)
    m.update(k, struct.pack("<Q", 2))
    b = m.program_lookup(k)
    assert a != 0 and b != 0 and a != b
    assert ctypes.c_uint64.from_address(a).value == 1       # the old slot: old value
    assert ctypes.c_uint64.from_address(b).value == 2


def test_threads_updating_disjoint_prefixes():
    """The trie lock: threads insert and delete their own prefixes at once
    (the map calls release the GIL); afterwards every survivor is intact."""
    m = trie(key_size=8, value_size=4, max_entries=4096)
    errors = []

    def worker(t):
        try:
            for rnd in range(3):
                for i in range(256):
                    m.update(key(24, bytes([10, t, i, 0])), bytes([t, i, rnd, 0]))
                for i in range(0, 256, 2):
                    m.delete(key(24, bytes([10, t, i, 0])))
                for i in range(0, 256, 2):
                    m.update(key(24, bytes([10, t, i, 0])), bytes([t, i, rnd, 1]), BPF_NOEXIST)
                for i in range(256):
                    assert m.lookup(key(32, bytes([10, t, i, 9])))[:2] == bytes([t, i])
        except Exception as e:           # reported below, from the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    keys = iterate(m)
    assert len(keys) == 4 * 256
    assert keys == sorted(keys, key=lambda k: k[4:])      # all /24: plain address order
    assert m.lookup(key(24, bytes([10, 3, 4, 0]))) == bytes([3, 4, 2, 1])
    assert m.lookup(key(24, bytes([10, 3, 5, 0]))) == bytes([3, 5, 2, 0])


def test_programs_in_threads_share_the_trie():
    """Programs on several threads update, look up and delete their own
    prefix in one trie (runs release the GIL) while the main thread
    iterates; every key seen is one of theirs and the trie ends empty."""
    m = trie(key_size=8, value_size=8, max_entries=16)
    m.update(v4("10.0.0.0/8"), struct.pack("<Q", 1))
    mine = {v4(f"10.{t}.0.0/16") for t in range(3)} | {v4("10.0.0.0/8")}

    def program(t):
        k = v4(f"10.{t}.0.0/16")
        lo, hi = struct.unpack("<ii", k)
        return Program([
            isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -8, lo),
            isa.BPF_ST_MEM(isa.BPF_W, isa.BPF_REG_10, -4, hi),
            isa.BPF_ST_MEM(isa.BPF_DW, isa.BPF_REG_10, -16, t + 100),
            isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 1),
            isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
            isa.BPF_MOV64_REG(isa.BPF_REG_3, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_3, -16),
            isa.BPF_MOV64_IMM(isa.BPF_REG_4, BPF_NOEXIST),
            isa.BPF_EMIT_CALL(2),                           # update: must succeed
            isa.BPF_JMP_IMM(isa.BPF_JNE, isa.BPF_REG_0, 0, 15),     # -> fail
            isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 1),
            isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
            isa.BPF_EMIT_CALL(1),                           # lookup: our value
            isa.BPF_JMP_IMM(isa.BPF_JEQ, isa.BPF_REG_0, 0, 9),      # -> fail
            isa.BPF_LDX_MEM(isa.BPF_DW, isa.BPF_REG_6, isa.BPF_REG_0, 0),
            isa.BPF_LD_MAP_FD(isa.BPF_REG_1, 1),
            isa.BPF_MOV64_REG(isa.BPF_REG_2, isa.BPF_REG_10),
            isa.BPF_ALU64_IMM(isa.BPF_ADD, isa.BPF_REG_2, -8),
            isa.BPF_EMIT_CALL(3),                           # delete: must succeed
            isa.BPF_JMP_IMM(isa.BPF_JNE, isa.BPF_REG_0, 0, 2),      # -> fail
            isa.BPF_MOV64_REG(isa.BPF_REG_0, isa.BPF_REG_6),        # the value read
            isa.BPF_EXIT_INSN(),
            isa.BPF_MOV64_IMM(isa.BPF_REG_0, 0xdead),               # fail:
            isa.BPF_EXIT_INSN(),
        ], maps={1: m})

    assert program(0).run() == 100
    m.update(v4("10.0.0.0/16"), bytes(8))
    assert program(0).run() == 0xdead            # NOEXIST fails: the failure path works
    m.delete(v4("10.0.0.0/16"))
    results = {}

    def worker(t):
        results[t] = program(t).run_batch(repeat=3000).retval

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    seen = set(iterate(m))                      # at least one walk, however fast they are
    while any(th.is_alive() for th in threads):
        seen.update(iterate(m))
    for th in threads:
        th.join()
    assert results == {0: 100, 1: 101, 2: 102}
    assert seen <= mine
    assert iterate(m) == [v4("10.0.0.0/8")]


# -- the live kernel as an oracle ------------------------------------------------

class KernelLpm:
    """A kernel LPM trie through bpf(2) with ctypes (x86_64 syscall numbers)."""

    SYS_BPF = 321
    MAP_CREATE, LOOKUP, UPDATE, DELETE, NEXT_KEY, LOOKUP_AND_DELETE = 0, 1, 2, 3, 4, 21

    def __init__(self, key_size, value_size, max_entries, flags=BPF_F_NO_PREALLOC):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.key_size, self.value_size = key_size, value_size
        attr = struct.pack("=IIIII", LPM_TRIE, key_size, value_size, max_entries, flags)
        self.fd = self._bpf(self.MAP_CREATE, attr)

    def _bpf(self, cmd, attr: bytes) -> int:
        buf = ctypes.create_string_buffer(attr, 128)
        r = self.libc.syscall(ctypes.c_long(self.SYS_BPF), ctypes.c_long(cmd), buf,
                              ctypes.c_long(128))
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r

    def _elem(self, cmd, k, v, flags=0):
        kb = ctypes.create_string_buffer(k, len(k)) if k is not None else None
        vb = ctypes.create_string_buffer(v, len(v))
        attr = struct.pack("=IIQQQ", self.fd, 0,
                           ctypes.addressof(kb) if kb is not None else 0,
                           ctypes.addressof(vb), flags)
        self._bpf(cmd, attr)
        return vb.raw

    def update(self, k, v, flags=0):
        self._elem(self.UPDATE, k, v, flags)

    def lookup(self, k, flags=0):
        return self._elem(self.LOOKUP, k, bytes(self.value_size), flags)

    def lookup_and_delete(self, k, flags=0):
        return self._elem(self.LOOKUP_AND_DELETE, k, bytes(self.value_size), flags)

    def delete(self, k):
        kb = ctypes.create_string_buffer(k, len(k))
        self._bpf(self.DELETE, struct.pack("=IIQ", self.fd, 0, ctypes.addressof(kb)))

    def get_next_key(self, k=None):
        return self._elem(self.NEXT_KEY, k, bytes(self.key_size))

    def close(self):
        os.close(self.fd)


def kernel_or_skip(*args, **kw) -> KernelLpm:
    if platform.machine() != "x86_64":
        pytest.skip("the ctypes bpf() helper knows x86_64 syscall numbers only")
    try:
        return KernelLpm(*args, **kw)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            pytest.skip(f"bpf() is not permitted here: {e}")
        raise


def outcome(fn, *args):
    try:
        return 0, fn(*args)
    except OSError as e:
        return e.errno, None


@pytest.mark.kernel
@pytest.mark.parametrize("key_size, value_size, max_entries, flags", [
    (8, 4, 0, BPF_F_NO_PREALLOC), (8, 4, 16, 0), (4, 4, 16, BPF_F_NO_PREALLOC),
    (5, 4, 16, BPF_F_NO_PREALLOC), (260, 4, 16, BPF_F_NO_PREALLOC),
    (261, 4, 16, BPF_F_NO_PREALLOC), (8, 0, 16, BPF_F_NO_PREALLOC),
    (8, 4, 16, BPF_F_NO_PREALLOC | 2), (8, 4, 16, BPF_F_NO_PREALLOC | 8 | 16),
    (8, 4, 16, BPF_F_NO_PREALLOC | 128), (8, 4, 16, BPF_F_NO_PREALLOC | 128 | 256),
    (8, (1 << 22) - 256 - 24, 16, BPF_F_NO_PREALLOC),
    (8, (1 << 22) - 256 - 24 + 1, 16, BPF_F_NO_PREALLOC),
])
def test_kernel_create_checks_agree(key_size, value_size, max_entries, flags):
    kernel_or_skip(8, 4, 1).close()
    want, k = outcome(KernelLpm, key_size, value_size, max_entries, flags)
    if k is not None:
        k.close()
    got, _ = outcome(MapCore, LPM_TRIE, key_size, value_size, max_entries, flags, 1)
    assert got == want


@pytest.mark.kernel
def test_kernel_hand_cases_agree():
    k = kernel_or_skip(8, 4, 3)
    try:
        m = trie(8, 4, 3)
        steps = [("update", v4("10.0.0.0/24"), 0), ("update", v4("10.0.1.0/24"), 0),
                 ("update", v4("10.0.0.0/16"), 0), ("update", v4("11.0.0.0/8"), 0),
                 ("update", v4("10.0.0.0/23"), 0), ("update", v4("10.0.0.0/23"), 2),
                 ("update", v4("10.0.1.0/24"), 0), ("update", v4("10.0.1.0/24"), 1),
                 ("update", key(33, bytes(4)), 0), ("update", v4("10.0.0.0/8"), 3),
                 ("update", v4("10.0.0.0/8"), 4),
                 ("delete", key(33, bytes(4))), ("delete", v4("9.0.0.0/8")),
                 ("lookup", key(33, bytes(4))), ("lookup", v4("10.0.1.1")),
                 ("lookup_and_delete", v4("10.0.1.0/24")),
                 ("next", None), ("next", key(33, bytes(4))), ("next", v4("10.0.0.0/16"))]
        for op, kk, *rest in steps:
            if op == "update":
                val = struct.pack("<I", rest[0] + 100)
                got, want = outcome(m.update, kk, val, rest[0]), outcome(k.update, kk, val,
                                                                         rest[0])
            elif op == "delete":
                got, want = outcome(m.delete, kk), outcome(k.delete, kk)
            elif op == "lookup":
                got, want = outcome(m.lookup, kk), outcome(k.lookup, kk)
            elif op == "lookup_and_delete":
                got, want = outcome(m.lookup_and_delete, kk), outcome(k.lookup_and_delete, kk)
            else:
                got, want = outcome(m.get_next_key, kk), outcome(k.get_next_key, kk)
            assert got == want, (op, kk)
        assert outcome(m.lookup, v4("10.0.1.1"), 4) == outcome(k.lookup, v4("10.0.1.1"), 4)
    finally:
        k.close()


def kernel_iterate(k) -> list:
    out, cur = [], None
    while True:
        err, nxt = outcome(k.get_next_key, cur)
        if err:
            assert err == errno.ENOENT
            return out
        out.append(nxt)
        cur = nxt


def random_tail(k: bytes, rng) -> bytes:
    """The same prefix with random bits past prefixlen."""
    plen, data = u32(k), int.from_bytes(k[4:], "big")
    nbits = (len(k) - 4) * 8
    keep = ((1 << plen) - 1) << (nbits - plen)
    data = (data & keep) | (rng.getrandbits(nbits) & ~keep)
    return key(plen, data.to_bytes(len(k) - 4, "big"))


def run_differential(seed: int, steps: int, key_size: int, max_entries: int):
    k = kernel_or_skip(key_size, 3, max_entries)
    try:
        m = trie(key_size, 3, max_entries)
        data_size = key_size - 4
        rng = random.Random(seed)
        pool = [0x00, 0x01, 0x40, 0x7f, 0x80, 0xc0, 0xfe, 0xff]
        seen = []
        for step in range(steps):
            plen = rng.choice([rng.randint(0, data_size * 8)] * 5 + [data_size * 8] * 2 +
                              [data_size * 8 + 1 + rng.randint(0, 3)])
            if seen and rng.random() < 0.3:
                kk = rng.choice(seen)
            else:
                kk = key(plen, bytes(rng.choice(pool) for _ in range(data_size)))
                seen.append(kk)
            op = rng.random()
            if op < 0.6 and rng.random() < 0.4:
                # delete or overwrite a present prefix (the trie is often full)
                present = iterate(m)
                if present:
                    kk = rng.choice(present)
                    if rng.random() < 0.5:
                        kk = random_tail(kk, rng)
            if op < 0.4:
                flags = rng.choice([0, 0, 0, 1, 2, 3])
                val = step.to_bytes(3, "little")
                a, b = outcome(m.update, kk, val, flags), outcome(k.update, kk, val, flags)
            elif op < 0.6:
                a, b = outcome(m.delete, kk), outcome(k.delete, kk)
            elif op < 0.85:
                a, b = outcome(m.lookup, kk), outcome(k.lookup, kk)
            else:
                a, b = outcome(m.get_next_key, kk), outcome(k.get_next_key, kk)
            assert a == b, (seed, step, kk.hex())
            if step % 25 == 0:
                assert iterate(m) == kernel_iterate(k), (seed, step)
        assert iterate(m) == kernel_iterate(k)
    finally:
        k.close()


@pytest.mark.kernel
@pytest.mark.parametrize("seed, key_size, max_entries", [
    (1, 5, 8), (2, 6, 16), (3, 8, 24), (4, 8, 6), (5, 20, 20), (6, 7, 12)])
def test_kernel_differential(seed, key_size, max_entries):
    run_differential(seed, 1500, key_size, max_entries)


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_kernel_differential_long(seed):
    rng = random.Random(seed)
    run_differential(seed, 20000, rng.choice([5, 6, 8, 12, 20]), rng.choice([4, 16, 64, 256]))


def test_many_chunks_and_recycled_nodes_stay_program_memory():
    """Values in later chunks and in recycled nodes pass the runtime checks."""
    m = trie(key_size=8, value_size=8, max_entries=5000)
    model = LpmModel(4, 5000)
    rng = random.Random(3)
    for rnd in range(3):                  # fill, then churn: freed nodes get reused
        for i in range(1500):
            k = key(rng.choice([16, 24, 32]), rng.getrandbits(32).to_bytes(4, "big"))
            v = struct.pack("<Q", rnd << 32 | i)
            assert errno_of(m.update, k, v) == model.update(k, v, 0)
        for k, _ in list(model.elems.values())[::2]:
            assert errno_of(m.delete, k) == model.delete(k) == 0
    assert iterate(m) == model.order()
    read = [isa.BPF_LDX_MEM(isa.BPF_DW, isa.BPF_REG_0, isa.BPF_REG_0, 0)]
    for k, v in list(model.elems.values())[-50:]:
        probe = key(32, k[4:])
        want = model.lookup(probe)
        assert Program(lookup_program(2, probe, read), maps={2: m}).run() == \
            struct.unpack("<Q", want)[0]
