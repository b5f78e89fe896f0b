"""The bundled XDP example against the live kernel: same verdicts, same
output packets, same map contents (BPF_PROG_TEST_RUN on both)."""
from importlib import resources

import pytest

from userbpf import Kernel, Map, MapType, asm, hostbpf, isa
from userbpf.cli import _ipv4_packet
from userbpf.kernel.progs import load_program
from userbpf.uapi import ProgType

pytestmark = pytest.mark.kernel

PACKETS = [(6, 443, 64), (6, 23, 64), (17, 53, 64), (6, 445, 9), (1, 0, 1), (6, 80, 2),
           (6, 80, 255), (47, 0, 64)]


def with_fds(insns, fds):
    """The code with map[fd:N] pointed at fds[N]."""
    return [x._replace(imm=fds[x.imm]) if x.code == isa.BPF_LD | isa.BPF_IMM | isa.BPF_DW
            and x.src == isa.Pseudo.MAP_FD else x for x in insns]


def test_xdp_firewall_matches_the_kernel(host):
    src = (resources.files("userbpf") / "examples" / "xdp_firewall.s").read_text()
    insns = asm.assemble(src)
    k = Kernel(ncpus=1)
    stats = Map(MapType.ARRAY, 4, 8, 256, kernel=k)
    blocked = Map(MapType.HASH, 4, 1, 16, kernel=k)
    h_stats = hostbpf.map_create(MapType.ARRAY, 4, 8, 256)
    h_blocked = hostbpf.map_create(MapType.HASH, 4, 1, 16)
    for port in (23, 445):
        blocked[port.to_bytes(4, "little")] = b"\1"
        h_blocked.update(port.to_bytes(4, "little"), b"\1")
    mine = load_program(insns, prog_type=ProgType.XDP, maps={1: stats, 2: blocked}, kernel=k)
    theirs = hostbpf.prog_load(with_fds(insns, {1: h_stats.fd, 2: h_blocked.fd}),
                               prog_type=ProgType.XDP)
    for proto, port, ttl in PACKETS:
        pkt = _ipv4_packet(proto, port, ttl)
        want = theirs.test_run(pkt)
        got = mine.test_run(pkt)
        assert (got.retval, got.data_out) == (want.retval, want.data_out), (proto, port, ttl)
    assert sorted(stats.items()) == sorted(h_stats.items())
