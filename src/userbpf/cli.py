"""The ``userbpf`` command.

    userbpf demo                              run the bundled examples
    userbpf asm prog.s -o prog.bin            assemble (either syntax)
    userbpf disasm prog.bin [--syntax mnemonic]
    userbpf run prog.s --mem "01 02 03"       run, print r0
    userbpf conformance-plugin [MEM_HEX]      the bpf_conformance plugin protocol
"""
from __future__ import annotations

import argparse
import struct
import sys
from importlib import resources
from typing import List, Optional

from . import conformance, isa
from .errors import UserBPFError
from .program import Program


def _read_program(path: str, raw: bool):
    """A program file: raw bytecode (``--raw``, ``.bin``/``.o`` or not text) or assembler."""
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    if raw or path.endswith((".bin", ".o")):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _memory(args) -> Optional[bytearray]:
    if args.mem_file:
        return bytearray(open(args.mem_file, "rb").read())
    if args.mem:
        return bytearray(conformance.parse_hex(args.mem))
    return None


def cmd_asm(args) -> int:
    from . import asm
    text = sys.stdin.read() if args.file == "-" else open(args.file).read()
    code = isa.encode(asm.assemble(text))
    if args.output:
        with open(args.output, "wb") as f:
            f.write(code)
    else:
        sys.stdout.write(" ".join(f"{b:02x}" for b in code) + "\n")
    return 0


def cmd_disasm(args) -> int:
    from . import asm
    data = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    if args.hex:
        data = conformance.parse_hex(data.decode())
    sys.stdout.write(asm.disassemble(data, syntax=args.syntax, labels=args.labels) + "\n")
    return 0


def cmd_run(args) -> int:
    prog = Program(_read_program(args.program, args.raw), budget=args.budget)
    r0 = prog.run(_memory(args))
    print(f"{r0:#x}" if args.hex else r0)
    if args.count:
        print(f"insns: {prog.insn_count}", file=sys.stderr)
    return 0


def cmd_plugin(args, rest: List[str]) -> int:
    return conformance.plugin_main(rest)


# --- the demo: every bundled example, checked against a Python reference -----

def _tcp_packet(dport: int) -> bytes:
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytes.fromhex("45000028000040004006") + b"\0\0" + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)
    return eth + ip + tcp


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


DEMO = [
    ("port_filter.s", "TCP to port 443", _tcp_packet(443), 1),
    ("port_filter.s", "TCP to port 8080", _tcp_packet(8080), 0),
    ("checksum.s", "checksum of 1500 bytes", bytes(range(256)) * 5 + bytes(220),
     _inet_checksum(bytes(range(256)) * 5 + bytes(220))),
    ("fib.s", "fib(90) in a subprogram", bytes([90]), _fib(90)),
]


def _demo_map(examples) -> int:
    """port_counter.s over a stream of packets, against collections.Counter."""
    import collections
    from .kernel import Kernel
    from .map import Map
    from .uapi import MapType
    ports = [443, 80, 443, 22, 443, 8080, 80, 443] * 25
    k = Kernel(ncpus=1)
    counts = Map(MapType.HASH, 4, 8, 64, kernel=k, key_type=int, value_type=int)
    prog = Program((examples / "port_counter.s").read_text(), maps={counts.fd: counts})
    for port in ports:
        prog.run(bytearray(_tcp_packet(port)))
    got, want = dict(counts.items()), dict(collections.Counter(ports))
    print(f"\nport_counter.s over {len(ports)} packets, a HASH map (fd {counts.fd}) "
          f"read back through bpf(): {dict(sorted(got.items()))}")
    print("    matches collections.Counter" if got == want else f"    MISMATCH: expected {want}")
    return 0 if got == want else 1


def _ipv4_packet(proto: int, dport: int, ttl: int = 64) -> bytes:
    """Ethernet + IPv4 (checksummed) + 4 port bytes and padding."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, ttl, proto, 0,
                               bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    ip[10:12] = struct.pack("!H", _inet_checksum(bytes(ip)))
    return (bytes.fromhex("020000000002" "020000000001" "0800") + bytes(ip)
            + struct.pack("!HH", 40000, dport) + bytes(16))


def _firewall_reference(packet: bytes, blocked) -> tuple:
    """What xdp_firewall.s should do: (verdict, output packet)."""
    proto, ttl = packet[23], packet[22]
    if proto == 6 and int.from_bytes(packet[36:38], "big") in blocked or ttl <= 1:
        return 1, packet
    out = bytearray(packet)
    out[22] = ttl - 1
    out[24:26] = b"\0\0"
    out[24:26] = struct.pack("!H", _inet_checksum(bytes(out[14:34])))
    return 2, bytes(out)


def _demo_xdp(examples) -> int:
    """xdp_firewall.s loaded as an XDP program and test-run packet by packet."""
    import collections
    from .kernel import Kernel
    from .kernel.progs import load_program
    from .map import Map
    from .uapi import MapType, ProgType
    k = Kernel(ncpus=1)
    stats = Map(MapType.ARRAY, 4, 8, 256, kernel=k, key_type=int, value_type=int)
    blocked = Map(MapType.HASH, 4, 1, 16, kernel=k, key_type=int, value_type=int)
    for port in (23, 445):
        blocked[port] = 1
    packets = [_ipv4_packet(proto, port, ttl) for proto, port, ttl in
               [(6, 443, 64), (6, 23, 64), (17, 53, 64), (6, 445, 9), (1, 0, 1), (6, 80, 2)]]
    prog = load_program((examples / "xdp_firewall.s").read_text(), prog_type=ProgType.XDP,
                        maps={1: stats, 2: blocked}, kernel=k)
    print(f"\nxdp_firewall.s as BPF_PROG_TYPE_XDP (fd {prog.fd}, tag {prog.tag.hex()}), "
          "BPF_PROG_TEST_RUN per packet:")
    failures = 0
    for pkt in packets:
        res = prog.test_run(pkt)
        want = _firewall_reference(pkt, {23, 445})
        ok = (res.retval, res.data_out) == want
        failures += not ok
        verdict = {1: "XDP_DROP", 2: "XDP_PASS"}.get(res.retval, res.retval)
        print(f"    proto {pkt[23]:>2} port {int.from_bytes(pkt[36:38], 'big'):>4} ttl "
              f"{pkt[22]:>2} -> {verdict:<9} ttl out {res.data_out[22]:>2}"
              f"{'' if ok else '  MISMATCH'}")
    counted = {key: v for key, v in stats.items() if v}
    want = dict(collections.Counter(p[23] for p in packets))
    failures += counted != want
    print(f"    packets per IP protocol (ARRAY map): {counted}"
          f"{'' if counted == want else '  MISMATCH: expected ' + str(want)}")
    return failures


def cmd_demo(args) -> int:
    examples = resources.files("userbpf") / "examples"
    print("userbpf demo: bundled example programs, assembled, run in the interpreter "
          "and checked against Python\n")
    print(f"{'program':<16}{'input':<26}{'r0':>22}{'expected':>22}{'insns':>8}{'ns/run':>10}")
    failures = 0
    for name, label, mem, expected in DEMO:
        prog = Program((examples / name).read_text())
        r0 = prog.run(bytearray(mem))
        batch = prog.run_batch(bytearray(mem), args.repeat)
        ok = r0 == expected == batch.retval
        failures += not ok
        print(f"{name:<16}{label:<26}{r0:>22}{expected:>22}{batch.insns:>8}"
              f"{batch.duration_ns:>10.1f}{'' if ok else '  MISMATCH'}")
    failures += _demo_map(examples)
    failures += _demo_xdp(examples)
    first = Program((examples / "fib.s").read_text())
    print("\nfib.s as the kernel's verifier log prints it:")
    print("\n".join("    " + line for line in first.disassemble().splitlines()))
    print("\nall results match" if not failures else f"\n{failures} MISMATCH(ES)")
    return 1 if failures else 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="userbpf", description="A user-space eBPF runtime.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the bundled examples")
    p.add_argument("--repeat", type=int, default=10000, help="runs per timing (default 10000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("asm", help="assemble a program (kernel or mnemonic syntax)")
    p.add_argument("file", help="assembler source, or - for standard input")
    p.add_argument("-o", "--output", help="write raw bytecode here (default: hex on stdout)")
    p.set_defaults(func=cmd_asm)

    p = sub.add_parser("disasm", help="disassemble raw bytecode")
    p.add_argument("file", help="raw bytecode, or - for standard input")
    p.add_argument("--hex", action="store_true", help="the input is hex text")
    p.add_argument("--syntax", choices=("kernel", "mnemonic"), default="kernel")
    p.add_argument("--labels", action="store_true", help="label jump targets")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("run", help="run a program and print r0")
    p.add_argument("program", help="assembler source or raw bytecode (.bin/.o or --raw)")
    p.add_argument("--raw", action="store_true", help="the program file is raw bytecode")
    p.add_argument("--mem", help="input memory as hex bytes (r1 = address, r2 = length)")
    p.add_argument("--mem-file", help="input memory from a file")
    p.add_argument("--budget", type=int, default=100_000_000, help="instruction budget")
    p.add_argument("--hex", action="store_true", help="print r0 in hex")
    p.add_argument("--count", action="store_true", help="print executed instructions")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("conformance-plugin", add_help=False,
                       help="the bpf_conformance runner's plugin protocol")
    p.set_defaults(func=None)

    args, rest = ap.parse_known_args(argv)
    try:
        if args.command == "conformance-plugin":
            return cmd_plugin(args, rest)
        if rest:
            ap.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except (UserBPFError, OSError) as e:
        print(f"userbpf: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
