"""The ../shared/bench XDP programs through BPF_PROG_TEST_RUN: userbpf gives
the README's return values on their inputs, and the same retval and data_out
as the live kernel on those inputs and on other packets (other seeds, the
parse verdicts the README lists, 14-byte and large frames, fragments).

``hashmap`` runs against a real ``BPF_MAP_TYPE_HASH`` on each side (u32 ->
u64, 1024 entries, keys 0..255 filled), its two map loads patched with each
side's map fd; the maps' contents after the runs are compared too.

The corpus is read from $USERBPF_SHARED/bench (default ../shared/bench);
the tests skip when it is absent. The kernel comparisons also skip where
bpf() is not permitted.
"""
from __future__ import annotations

import struct

import pytest

import userbpf
from userbpf import Map, MapType, ProgType
from userbpf.kernel import Kernel

from conftest import BENCH_DIR, need

NAMES = ("nop", "alu", "collatz", "parse", "stack", "hashmap")
# README: expected r0 on <name>.input.bin
EXPECTED = {"nop": 0, "alu": 1379682645, "collatz": 524, "parse": 2,
            "stack": 1559355448, "hashmap": 264}
HASHMAP_SLOTS = (19, 38)          # the LD_IMM64 map loads in hashmap.bin
MAP_FD = 100                      # the fd userbpf's loader renumbers


def bench_file(name: str) -> bytes:
    return need(BENCH_DIR / name).read_bytes()


def with_map_fd(code: bytes, fd: int) -> bytes:
    out = bytearray(code)
    for slot in HASHMAP_SLOTS:
        assert out[slot * 8] == 0x18 and out[slot * 8 + 1] >> 4 == 1   # lddw, PSEUDO_MAP_FD
        out[slot * 8 + 4:slot * 8 + 8] = fd.to_bytes(4, "little")
    return bytes(out)


def fill(update) -> None:
    for k in range(256):
        update(k.to_bytes(4, "little"), k.to_bytes(8, "little"))


def load_mine(name: str):
    """(LoadedProgram, the HASH map or None) in a fresh userbpf kernel."""
    code = bench_file(f"{name}.bin")
    k = Kernel()
    if name != "hashmap":
        return userbpf.load_program(code, prog_type=ProgType.XDP, kernel=k), None
    m = Map(MapType.HASH, 4, 8, 1024, kernel=k)
    fill(m.update)
    return userbpf.load_program(with_map_fd(code, MAP_FD), prog_type=ProgType.XDP,
                                maps={MAP_FD: m}, kernel=k), m


# -- packets ------------------------------------------------------------------------------

def csum16(data: bytes) -> int:
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp_packet(dport: int = 80, *, ts: bool = True, bad_csum: bool = False,
               vlan: bool = False, ethertype: int = 0x0800, frag: int = 0x4000,
               ttl: int = 64, payload: int = 62, flags: int = 0x18) -> bytes:
    """The README's parse input (Ethernet, IPv4, TCP with NOP NOP TS) with changes."""
    opts = b"\x01\x01\x08\x0a" + bytes.fromhex("01020304" "0a0b0c0d") if ts else \
        b"\x01\x01\x01\x01" + bytes(8)
    tcp = struct.pack(">HHIIBBHHH", 12345, dport, 1000, 2000, 8 << 4, flags, 65535, 0, 0) + opts
    http = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    body = tcp + http + bytes(payload - len(http))
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0x1234, frag, ttl, 6, 0,
                               bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    ip[10:12] = struct.pack(">H", csum16(bytes(ip)) ^ (0x1111 if bad_csum else 0))
    eth = bytes.fromhex("020000000002" "020000000001")
    if vlan:
        eth += b"\x81\x00\x00\x05"
    return eth + struct.pack(">H", ethertype) + bytes(ip) + body


def test_the_parse_input_is_the_readme_packet():
    """The packet builder, checked on the bench's own parse input."""
    assert tcp_packet() == bench_file("parse.input.bin")


PARSE_PACKETS = {
    "bad checksum": (tcp_packet(bad_csum=True), 1),
    "dport 8080": (tcp_packet(8080), 1),
    "truncated": (tcp_packet()[:60], 1),
    "no timestamp": (tcp_packet(ts=False), 1),
    "fragment": (tcp_packet(frag=0x2000), 1),
    "ttl 1": (tcp_packet(ttl=1), 1),
    "syn+fin": (tcp_packet(flags=0x03), 1),
    "not IP": (tcp_packet(ethertype=0x86DD), 2),
    "vlan": (tcp_packet(vlan=True), 2),
    "dport 443": (tcp_packet(443), 2),
    "dport 22": (tcp_packet(22), 2),
}


def other_packets(name: str) -> dict:
    """Packets besides the input: other seeds, edge sizes."""
    base = bench_file(f"{name}.input.bin")
    out = {"14 bytes": base[:14], "7 bytes short of the seed": base[:7] + bytes(7),
           "1500 bytes": base + bytes(1500 - len(base)),
           "3520 bytes (the linear maximum)": base + bytes(3520 - len(base)),
           "6000 bytes (fragments)": base + bytes(6000 - len(base))}
    if name == "parse":
        out.update({k: v[0] for k, v in PARSE_PACKETS.items()})
    else:
        for seed in (0, 1, 27, 0xdeadbeef, 0xffffffffffffffff):
            out[f"seed {seed:#x}"] = struct.pack("<Q", seed) + base[8:]
    return out


# -- userbpf alone ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bench_program_gives_the_readme_value(name):
    prog, _ = load_mine(name)
    packet = bench_file(f"{name}.input.bin")
    res = prog.test_run(packet)
    assert res.retval == EXPECTED[name]
    assert res.data_out == packet
    if name == "hashmap":
        assert prog.test_run(packet, repeat=3).retval == EXPECTED[name]


@pytest.mark.parametrize("case", sorted(PARSE_PACKETS))
def test_parse_verdicts(case):
    """The verdicts the README says the kernel gives for these packets."""
    prog, _ = load_mine("parse")
    packet, verdict = PARSE_PACKETS[case]
    assert prog.test_run(packet).retval == verdict


def hashmap_model(values: dict, seed: int, runs: int) -> dict:
    """hashmap.bpf.c in Python: 8 lookups that add 1, then key (seed >> 8) & 255
    set to the sum of the values seen."""
    values = dict(values)
    for _ in range(runs):
        acc = 0
        for i in range(8):
            key = (seed + i * 37) & 255
            if key in values:
                values[key] = (values[key] + 1) & (1 << 64) - 1
                acc += values[key]
        values[(seed >> 8) & 255] = acc & (1 << 64) - 1
    return values


def test_hashmap_updates_the_map_as_its_source_says():
    """The map after 5 runs is hashmap.bpf.c's result; an empty map gives 256."""
    prog, m = load_mine("hashmap")
    packet = bench_file("hashmap.input.bin")
    prog.test_run(packet, repeat=5)
    got = {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in m.items()}
    seed = int.from_bytes(packet[:8], "little")
    assert got == hashmap_model({k: k for k in range(256)}, seed, 5)
    empty = Kernel()
    m2 = Map(MapType.HASH, 4, 8, 1024, kernel=empty)
    p2 = userbpf.load_program(with_map_fd(bench_file("hashmap.bin"), MAP_FD),
                              prog_type=ProgType.XDP, maps={MAP_FD: m2}, kernel=empty)
    assert p2.test_run(bench_file("hashmap.input.bin")).retval == 256


# -- against the live kernel -------------------------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("name", NAMES)
def test_bench_program_like_the_kernel(host, name):
    code = bench_file(f"{name}.bin")
    hmap = None
    if name == "hashmap":
        hmap = host.map_create(MapType.HASH, 4, 8, 1024)
        fill(hmap.update)
        code = with_map_fd(code, hmap.fd)
    mine, m = load_mine(name)
    packets = {"input": bench_file(f"{name}.input.bin"), **other_packets(name)}
    try:
        with host.prog_load(code, ProgType.XDP) as hp:
            for what, packet in packets.items():
                for repeat in (1, 3):
                    theirs = hp.test_run(packet, repeat)
                    ours = mine.test_run(packet, repeat=repeat)
                    assert (ours.retval, ours.data_out) == (theirs.retval, theirs.data_out), \
                        f"{name} on {what} (repeat {repeat})"
        if hmap is not None:
            assert dict(hmap.items()) == dict(m.items())
    finally:
        if hmap is not None:
            hmap.close()
