"""The kernel oracle itself (userbpf.hostbpf) against the live kernel's bpf().

These pin down what the oracle reports -- exact return values, errnos and
verifier messages -- so the differential tests built on it can be trusted.
They skip cleanly where bpf() is not permitted.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

import pytest

from userbpf import hostbpf, isa
from userbpf.hostbpf import HostError, MapType, ProgType
from userbpf.isa import (BPF_ALU64_IMM, BPF_ADD, BPF_DW, BPF_EXIT_INSN, BPF_JMP_IMM,
                         BPF_JGT, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM,
                         BPF_W)

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not hostbpf.available(),
                       reason=f"live bpf() not permitted: {hostbpf.why_unavailable()}"),
]

ETH_HLEN = 14


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def errno_of(fn, *args, **kw) -> int:
    with pytest.raises(HostError) as ei:
        fn(*args, **kw)
    assert isinstance(ei.value, OSError)
    return ei.value.errno


# --- programs -------------------------------------------------------------------

def test_available_and_reason():
    assert hostbpf.available() is True
    assert hostbpf.why_unavailable() == ""


@pytest.mark.parametrize("value, retval", [(0, 0), (42, 42), (-1, 0xffffffff),
                                           (0x7fffffff, 0x7fffffff)])
def test_socket_filter_retval_is_low_32_bits_of_r0(value, retval):
    code = [BPF_MOV64_IMM(0, value), BPF_EXIT_INSN()]
    with hostbpf.prog_load(code, ProgType.SOCKET_FILTER) as prog:
        assert prog.fd >= 0
        assert prog.test_run(bytes(ETH_HLEN + 2))[0] == retval
    assert prog.fd == -1


def test_prog_load_accepts_bytes_and_insn_lists():
    code = [*isa.BPF_LD_IMM64(0, 0x1_0000_0007), BPF_EXIT_INSN()]
    with hostbpf.prog_load(isa.encode(code), ProgType.SOCKET_FILTER) as a, \
            hostbpf.prog_load(code, ProgType.SOCKET_FILTER) as b:
        assert a.test_run(bytes(ETH_HLEN))[0] == 7
        assert b.test_run(bytes(ETH_HLEN))[0] == 7


def test_xdp_writes_the_packet_and_data_out_returns_it():
    # r2 = data; r3 = data_end; if r2 + 8 > r3 goto out; *(u64 *)(r2) = 0x1122..; r0 = XDP_TX
    code = [
        BPF_LDX_MEM(BPF_W, 2, 1, 0),
        BPF_LDX_MEM(BPF_W, 3, 1, 4),
        BPF_MOV64_REG(4, 2),
        BPF_ALU64_IMM(BPF_ADD, 4, 8),
        BPF_MOV64_IMM(0, 1),                      # XDP_DROP when too short
        BPF_JMP_IMM(BPF_JGT, 4, 0, 0),
        *isa.BPF_LD_IMM64(5, 0x1122334455667788),
        isa.BPF_STX_MEM(BPF_DW, 2, 5, 0),
        BPF_MOV64_IMM(0, 3),                      # XDP_TX
        BPF_EXIT_INSN(),
    ]
    code[5] = isa.BPF_JMP_REG(BPF_JGT, 4, 3, 4)       # to the exit
    packet = bytes(range(64))
    with hostbpf.prog_load(code, ProgType.XDP) as prog:
        retval, out, ns = prog.test_run(packet, repeat=3)
        assert retval == 3
        assert out == u64(0x1122334455667788) + packet[8:]
        assert isinstance(ns, int) and ns >= 0
        r = hostbpf.test_run(prog, packet, 1)
        assert (r.retval, r.data_out) == (3, out)
        # data_size_out smaller than the packet: the kernel says ENOSPC
        assert errno_of(prog.test_run, packet, 1, None, 16) == errno.ENOSPC


def test_xdp_test_run_needs_an_ethernet_header():
    code = [BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN()]
    with hostbpf.prog_load(code, ProgType.XDP) as prog:
        assert prog.test_run(bytes(ETH_HLEN))[0] == 2
        assert errno_of(prog.test_run, bytes(ETH_HLEN - 1)) == errno.EINVAL


def test_verifier_rejection_carries_errno_and_log():
    with pytest.raises(HostError) as ei:
        hostbpf.prog_load([BPF_EXIT_INSN()], ProgType.SOCKET_FILTER)
    assert ei.value.errno == errno.EACCES
    assert ei.value.cmd == hostbpf.Cmd.PROG_LOAD
    assert "R0 !read_ok" in ei.value.log
    assert "R0 !read_ok" in str(ei.value)


def test_load_through_a_scalar_is_eacces():
    code = [BPF_MOV64_IMM(0, 0), BPF_LDX_MEM(BPF_DW, 0, 0, 0), BPF_EXIT_INSN()]
    with pytest.raises(HostError) as ei:
        hostbpf.prog_load(code, ProgType.SOCKET_FILTER)
    assert ei.value.errno == errno.EACCES
    assert "R0 invalid mem access 'scalar'" in ei.value.log


def test_bad_opcode_is_einval_with_the_kernels_message():
    code = [isa.Insn(0xff), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    with pytest.raises(HostError) as ei:
        hostbpf.prog_load(code, ProgType.SOCKET_FILTER)
    assert ei.value.errno == errno.EINVAL
    assert "unknown opcode ff" in ei.value.log


def test_division_by_zero_immediate_is_rejected():
    code = [BPF_MOV64_IMM(0, 1), BPF_ALU64_IMM(isa.BPF_DIV, 0, 0), BPF_EXIT_INSN()]
    with pytest.raises(HostError) as ei:
        hostbpf.prog_load(code, ProgType.SOCKET_FILTER)
    assert ei.value.errno == errno.EINVAL
    assert "div by zero" in ei.value.log


def test_log_level_keeps_the_log_on_success():
    code = [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    with hostbpf.prog_load(code, ProgType.SOCKET_FILTER, log_level=2) as prog:
        assert "processed 2 insns" in prog.log


def test_tiny_log_buffer_still_reports_the_message():
    # the retry grows the log until the kernel's message fits
    code = [BPF_MOV64_IMM(0, 0)] * 20 + [BPF_LDX_MEM(BPF_DW, 0, 0, 0), BPF_EXIT_INSN()]
    with pytest.raises(HostError) as ei:
        hostbpf.prog_load(code, ProgType.SOCKET_FILTER, log_size=64)
    assert ei.value.errno == errno.EACCES
    assert "R0 invalid mem access 'scalar'" in ei.value.log


def test_sys_bpf_raw_unknown_command_is_einval():
    with pytest.raises(HostError) as ei:
        hostbpf.sys_bpf(9999, bytes(16))
    assert ei.value.errno == errno.EINVAL


def test_sys_bpf_raw_map_create_from_bytes():
    attr = struct.pack("<IIIII", MapType.ARRAY, 4, 8, 3, 0) + bytes(60)
    fd = hostbpf.sys_bpf(hostbpf.Cmd.MAP_CREATE, attr)
    with hostbpf.HostMap(fd, MapType.ARRAY, 4, 8, 3) as m:
        info = m.info()
    assert (info["type"], info["key_size"], info["value_size"], info["max_entries"]) == \
        (MapType.ARRAY, 4, 8, 3)


def test_map_reference_through_fd_array_style_lddw():
    # r1 = map fd; r2 = fp-4 (key 0); r0 = map_lookup_elem(); *(u64*)r0 or 0
    with hostbpf.map_create(MapType.ARRAY, 4, 8, 1) as m:
        m.update(u32(0), u64(77))
        code = [
            BPF_ST_MEM(BPF_W, 10, -4, 0),
            *isa.BPF_LD_MAP_FD(1, m.fd),
            BPF_MOV64_REG(2, 10),
            BPF_ALU64_IMM(BPF_ADD, 2, -4),
            isa.BPF_EMIT_CALL(1),
            isa.BPF_JMP_IMM(isa.BPF_JEQ, 0, 0, 1),
            BPF_LDX_MEM(BPF_DW, 0, 0, 0),
            BPF_EXIT_INSN(),
        ]
        with hostbpf.prog_load(code, ProgType.SOCKET_FILTER) as prog:
            assert prog.test_run(bytes(ETH_HLEN))[0] == 77


# --- maps -----------------------------------------------------------------------

def test_hash_update_lookup_delete_and_errnos():
    with hostbpf.map_create(MapType.HASH, 4, 8, 2, name="oracle") as m:
        assert errno_of(m.lookup, u32(1)) == errno.ENOENT
        m.update(u32(1), u64(10))
        assert m.lookup(u32(1)) == u64(10)
        assert errno_of(m.update, u32(1), u64(11), hostbpf.BPF_NOEXIST) == errno.EEXIST
        assert errno_of(m.update, u32(2), u64(20), hostbpf.BPF_EXIST) == errno.ENOENT
        m.update(u32(1), u64(12), hostbpf.BPF_EXIST)
        assert m.lookup(u32(1)) == u64(12)
        m.update(u32(2), u64(20), hostbpf.BPF_NOEXIST)
        # full: a new key does not fit, replacing an existing one still works
        assert errno_of(m.update, u32(3), u64(30)) == errno.E2BIG
        m.update(u32(2), u64(21))
        assert errno_of(m.update, u32(1), u64(0), 99) == errno.EINVAL
        m.delete(u32(1))
        assert errno_of(m.delete, u32(1)) == errno.ENOENT
        assert errno_of(m.lookup, u32(1)) == errno.ENOENT
        assert m.items() == [(u32(2), u64(21))]
        info = m.info()
        assert info["name"] == "oracle"
        assert (info["type"], info["key_size"], info["value_size"], info["max_entries"]) == \
            (MapType.HASH, 4, 8, 2)
        assert info["id"] > 0


def test_hash_get_next_key_walks_every_key_once():
    with hostbpf.map_create(MapType.HASH, 4, 4, 64) as m:
        keys = {u32(k * 7 + 1) for k in range(20)}
        for k in keys:
            m.update(k, k)
        seen = list(m.keys())
        assert sorted(seen) == sorted(keys)
        # a key that is not in the map restarts from the first key
        assert m.get_next_key(u32(999)) == seen[0]
        assert m.get_next_key(None) == seen[0]
        assert errno_of(m.get_next_key, seen[-1]) == errno.ENOENT


def test_array_semantics():
    with hostbpf.map_create(MapType.ARRAY, 4, 4, 3) as m:
        assert m.lookup(u32(2)) == u32(0)               # preallocated, zeroed
        m.update(u32(1), u32(0xdeadbeef))
        assert m.lookup(u32(1)) == u32(0xdeadbeef)
        assert errno_of(m.lookup, u32(3)) == errno.ENOENT
        assert errno_of(m.update, u32(3), u32(1)) == errno.E2BIG
        assert errno_of(m.update, u32(0), u32(1), hostbpf.BPF_NOEXIST) == errno.EEXIST
        assert errno_of(m.delete, u32(0)) == errno.EINVAL
        assert list(m.keys()) == [u32(0), u32(1), u32(2)]
        assert m.get_next_key(u32(100)) == u32(0)
        assert errno_of(m.get_next_key, u32(2)) == errno.ENOENT


@pytest.mark.parametrize("args", [
    (MapType.HASH, 0, 8, 4),          # hash keys cannot be empty
    (MapType.ARRAY, 8, 4, 4),         # array keys are u32
    (MapType.ARRAY, 4, 0, 4),         # no empty values
    (MapType.HASH, 4, 8, 0),          # no zero-sized maps
])
def test_map_create_rejects_bad_shapes_with_einval(args):
    assert errno_of(hostbpf.map_create, *args) == errno.EINVAL


def test_unknown_map_type_is_einval():
    assert errno_of(hostbpf.map_create, 9999, 4, 4, 4) == errno.EINVAL


def test_lookup_and_delete_and_queue_order():
    with hostbpf.map_create(MapType.HASH, 4, 8, 4) as m:
        m.update(u32(5), u64(55))
        assert m.lookup_and_delete(u32(5)) == u64(55)
        assert errno_of(m.lookup_and_delete, u32(5)) == errno.ENOENT
    with hostbpf.map_create(MapType.QUEUE, 0, 4, 3) as q:
        for v in (1, 2, 3):
            q.update(None, u32(v))
        assert errno_of(q.update, None, u32(4)) == errno.E2BIG
        assert q.lookup(None) == u32(1)                  # peek
        assert [q.lookup_and_delete() for _ in range(3)] == [u32(1), u32(2), u32(3)]
        assert errno_of(q.lookup_and_delete) == errno.ENOENT
    with hostbpf.map_create(MapType.STACK, 0, 4, 3) as s:
        for v in (1, 2, 3):
            s.update(None, u32(v))
        assert [s.lookup_and_delete() for _ in range(3)] == [u32(3), u32(2), u32(1)]


def test_freeze_makes_the_map_read_only_for_user_space():
    with hostbpf.map_create(MapType.ARRAY, 4, 4, 1) as m:
        m.update(u32(0), u32(9))
        m.freeze()
        assert errno_of(m.update, u32(0), u32(1)) == errno.EPERM
        assert m.lookup(u32(0)) == u32(9)
        # frozen, the fd has lost its write permission: EPERM (not EBUSY)
        assert errno_of(m.freeze) == errno.EPERM


def test_rdonly_map_refuses_user_updates():
    with hostbpf.map_create(MapType.ARRAY, 4, 4, 1, hostbpf.BPF_F_RDONLY) as m:
        assert errno_of(m.update, u32(0), u32(1)) == errno.EPERM
        assert m.lookup(u32(0)) == u32(0)


@pytest.mark.parametrize("map_type", [MapType.PERCPU_ARRAY, MapType.PERCPU_HASH,
                                      MapType.LRU_PERCPU_HASH])
@pytest.mark.parametrize("value_size", [4, 8, 12])
def test_percpu_values_are_one_rounded_slot_per_possible_cpu(map_type, value_size):
    ncpus = hostbpf.possible_cpus()
    step = (value_size + 7) & ~7
    with hostbpf.map_create(map_type, 4, value_size, 4) as m:
        assert m.value_buf_size == ncpus * step
        per_cpu = [bytes([c + 1]) * value_size for c in range(ncpus)]
        m.update_percpu(u32(0), per_cpu)
        raw = m.lookup(u32(0))
        assert len(raw) == ncpus * step
        assert m.lookup_percpu(u32(0)) == per_cpu
        # the padding of each slot reads back as zeroes
        assert all(raw[c * step + value_size:(c + 1) * step] == bytes(step - value_size)
                   for c in range(ncpus))


def test_possible_cpus_matches_sysfs():
    text = open("/sys/devices/system/cpu/possible").read().strip()
    last = int(text.replace(",", "-").split("-")[-1])
    assert hostbpf.possible_cpus() == last + 1


def test_batch_lookup_update_delete():
    with hostbpf.map_create(MapType.HASH, 4, 8, 32) as m:
        items = [(u32(k), u64(k * k)) for k in range(10)]
        assert m.update_batch(items) == 10
        got, token = [], None
        while True:
            part, token = m.lookup_batch(4, token)
            got += part
            if token is None:
                break
        assert sorted(got) == sorted(items)
        assert m.delete_batch([u32(k) for k in range(5)]) == 5
        assert sorted(m.items()) == sorted(items[5:])


def test_array_of_maps_holds_inner_map_ids():
    with hostbpf.map_create(MapType.ARRAY, 4, 4, 1) as inner, \
            hostbpf.map_create(MapType.ARRAY_OF_MAPS, 4, 4, 2, inner_map_fd=inner.fd) as outer:
        outer.update(u32(0), u32(inner.fd))
        assert outer.lookup(u32(0)) == u32(inner.info()["id"])
        assert errno_of(outer.lookup, u32(1)) == errno.ENOENT


@pytest.fixture
def bpffs(tmp_path):
    """A private bpffs mount (root only), unmounted afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    target = str(tmp_path / "bpffs").encode()
    os.mkdir(target)
    if libc.mount(b"bpf", target, b"bpf", 0, None) != 0:
        pytest.skip(f"cannot mount a bpffs: {os.strerror(ctypes.get_errno())}")
    yield target.decode()
    libc.umount2(target, 0)


def test_obj_pin_and_get(bpffs):
    path = os.path.join(bpffs, "m")
    with hostbpf.map_create(MapType.ARRAY, 4, 4, 2) as m:
        m.update(u32(1), u32(123))
        hostbpf.obj_pin(m.fd, path)
        assert errno_of(hostbpf.obj_pin, m.fd, path) == errno.EEXIST
        map_id = m.info()["id"]
    fd = hostbpf.obj_get(path)
    with hostbpf.HostMap(fd, MapType.ARRAY, 4, 4, 2) as again:
        assert again.info()["id"] == map_id
        assert again.lookup(u32(1)) == u32(123)
    rd = hostbpf.obj_get(path, hostbpf.BPF_F_RDONLY)
    with hostbpf.HostMap(rd, MapType.ARRAY, 4, 4, 2) as ro:
        assert ro.lookup(u32(1)) == u32(123)
        assert errno_of(ro.update, u32(1), u32(0)) == errno.EPERM
    assert errno_of(hostbpf.obj_get, os.path.join(bpffs, "absent")) == errno.ENOENT
    os.unlink(path)
