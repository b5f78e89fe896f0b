"""bpf() with a ctypes union bpf_attr, as code written for the syscall packs it."""
from __future__ import annotations

import ctypes
import errno

import pytest

from userbpf import Cmd, Kernel, MapType
from userbpf.abi import bpf_attr, bpf_map_info


def addr(obj) -> int:
    return ctypes.addressof(obj)


@pytest.fixture
def k():
    return Kernel(ncpus=2)


def test_union_layout_matches_the_kernel():
    # offsets of the kernel's union bpf_attr members (include/uapi/linux/bpf.h)
    assert bpf_attr.map_extra.offset == 64 and bpf_attr.map_token_fd.offset == 76
    assert bpf_attr.key.offset == 8 and bpf_attr.value.offset == 16
    assert bpf_attr.next_key.offset == 16 and bpf_attr.flags.offset == 24
    assert bpf_attr.pathname.offset == 0 and bpf_attr.file_flags.offset == 12
    assert bpf_attr.next_id.offset == 4 and bpf_attr.open_flags.offset == 8
    assert bpf_attr.fd_array.offset == 120 and bpf_attr.expected_attach_type.offset == 68
    assert bpf_attr.core_relo_rec_size.offset == 136
    assert ctypes.sizeof(bpf_map_info) == 88


def test_elem_commands_through_pointers(k):
    fd = k.bpf(Cmd.MAP_CREATE, bpf_attr(map_type=MapType.HASH, key_size=4, value_size=8,
                                        max_entries=4, map_name=b"ct"))
    key, val, out = ctypes.c_uint32(7), ctypes.c_uint64(99), ctypes.c_uint64()
    assert k.bpf(Cmd.MAP_UPDATE_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(val))) == 0
    k.bpf(Cmd.MAP_LOOKUP_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(out)))
    assert out.value == 99
    nxt = ctypes.c_uint32()
    k.bpf(Cmd.MAP_GET_NEXT_KEY, bpf_attr(map_fd=fd, key=0, next_key=addr(nxt)))
    assert nxt.value == 7
    with pytest.raises(FileExistsError):
        k.bpf(Cmd.MAP_UPDATE_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(val), flags=1))
    k.bpf(Cmd.MAP_DELETE_ELEM, bpf_attr(map_fd=fd, key=addr(key)))
    with pytest.raises(FileNotFoundError):
        k.bpf(Cmd.MAP_LOOKUP_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(out)))


def test_null_pointers_are_efault(k):
    fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    for cmd in (Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_UPDATE_ELEM):
        with pytest.raises(OSError) as e:
            k.bpf(cmd, bpf_attr(map_fd=fd, key=0, value=0))
        assert e.value.errno == errno.EFAULT


def test_bytes_past_the_command_are_einval(k):
    attr = bpf_attr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    attr._raw[100] = 1
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.MAP_CREATE, attr)
    assert e.value.errno == errno.EINVAL


def test_info_ids_and_pins(k):
    fd = k.bpf(Cmd.MAP_CREATE, bpf_attr(map_type=MapType.ARRAY, key_size=4, value_size=8,
                                        max_entries=3, map_name=b"arr"))
    info = bpf_map_info()
    attr = bpf_attr()
    attr.info.bpf_fd, attr.info.info_len, attr.info.info = fd, ctypes.sizeof(info), addr(info)
    k.bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == \
        (MapType.ARRAY, 4, 8, 3, b"arr")
    assert attr.info.info_len == 88
    short = (ctypes.c_uint8 * 8)()                     # an older, shorter struct
    attr.info.info_len, attr.info.info = 8, addr(short)
    k.bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    assert attr.info.info_len == 8 and bytes(short)[:4] == (MapType.ARRAY).to_bytes(4, "little")
    big = (ctypes.c_uint8 * 96)()
    big[95] = 1                                        # a newer struct with a non-zero tail
    attr.info.info_len, attr.info.info = 96, addr(big)
    with pytest.raises(OSError) as e:
        k.bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    assert e.value.errno == errno.E2BIG
    get = bpf_attr(start_id=0)
    k.bpf(Cmd.MAP_GET_NEXT_ID, get)
    assert get.next_id == info.id
    path = ctypes.create_string_buffer(b"/sys/fs/bpf/arr")
    k.bpf(Cmd.OBJ_PIN, bpf_attr(pathname=addr(path), bpf_fd=fd))
    fd2 = k.bpf(Cmd.OBJ_GET, bpf_attr(pathname=addr(path)))
    assert fd2 == fd + 1


@pytest.mark.kernel
def test_same_attr_works_on_the_live_kernel(host, k):
    """The very same union, passed to the real syscall and to userbpf."""
    attr = bpf_attr(map_type=MapType.HASH, key_size=4, value_size=8, max_entries=4)
    hfd = host.sys_bpf(Cmd.MAP_CREATE, attr)
    ufd = k.bpf(Cmd.MAP_CREATE, attr)
    try:
        key, val = ctypes.c_uint32(5), ctypes.c_uint64(1234)
        for run, fd in ((host.sys_bpf, hfd), (k.bpf, ufd)):
            out = ctypes.c_uint64()
            assert run(Cmd.MAP_UPDATE_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(val))) == 0
            run(Cmd.MAP_LOOKUP_ELEM, bpf_attr(map_fd=fd, key=addr(key), value=addr(out)))
            assert out.value == 1234
    finally:
        import os
        os.close(hfd)


def test_batch_commands_through_pointers(k):
    fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=4)
    keys = (ctypes.c_uint32 * 4)(0, 1, 2, 3)
    vals = (ctypes.c_uint64 * 4)(10, 11, 12, 13)
    attr = bpf_attr()
    attr.batch.map_fd, attr.batch.count = fd, 4
    attr.batch.keys, attr.batch.values = addr(keys), addr(vals)
    assert k.bpf(Cmd.MAP_UPDATE_BATCH, attr) == 0 and attr.batch.count == 4
    out_k, out_v, token = (ctypes.c_uint32 * 4)(), (ctypes.c_uint64 * 4)(), ctypes.c_uint32()
    attr = bpf_attr()
    attr.batch.map_fd, attr.batch.count = fd, 3
    attr.batch.keys, attr.batch.values, attr.batch.out_batch = addr(out_k), addr(out_v), addr(token)
    assert k.bpf(Cmd.MAP_LOOKUP_BATCH, attr) == 0
    assert (attr.batch.count, list(out_k)[:3], list(out_v)[:3], token.value) == \
        (3, [0, 1, 2], [10, 11, 12], 2)
    attr.batch.in_batch = addr(token)                  # continue after index 2
    with pytest.raises(FileNotFoundError):             # the end: ENOENT, one element
        k.bpf(Cmd.MAP_LOOKUP_BATCH, attr)
    assert (attr.batch.count, out_k[0], out_v[0], token.value) == (1, 3, 13, 3)


@pytest.mark.kernel
def test_batch_attr_works_the_same_on_the_live_kernel(host, k):
    """One ARRAY batch walk through the very same union on both kernels."""
    import os
    results = []
    hfd = host.sys_bpf(Cmd.MAP_CREATE, bpf_attr(map_type=MapType.ARRAY, key_size=4,
                                                 value_size=8, max_entries=5))
    ufd = k.bpf(Cmd.MAP_CREATE, bpf_attr(map_type=MapType.ARRAY, key_size=4, value_size=8,
                                         max_entries=5))
    try:
        for run, fd in ((host.sys_bpf, hfd), (k.bpf, ufd)):
            keys, vals = (ctypes.c_uint32 * 5)(*range(5)), (ctypes.c_uint64 * 5)(*range(50, 55))
            attr = bpf_attr()
            attr.batch.map_fd, attr.batch.count = fd, 5
            attr.batch.keys, attr.batch.values = addr(keys), addr(vals)
            run(Cmd.MAP_UPDATE_BATCH, attr)
            seen, token, first = [], ctypes.c_uint32(), True
            while True:
                ok, ov = (ctypes.c_uint32 * 2)(), (ctypes.c_uint64 * 2)()
                attr = bpf_attr()
                attr.batch.map_fd, attr.batch.count = fd, 2
                attr.batch.keys, attr.batch.values = addr(ok), addr(ov)
                attr.batch.out_batch = addr(token)
                if not first:
                    attr.batch.in_batch = addr(token)
                first = False
                try:
                    run(Cmd.MAP_LOOKUP_BATCH, attr)
                    err = 0
                except OSError as e:
                    err = e.errno
                n = attr.batch.count
                seen.append((err, n, list(ok)[:n], list(ov)[:n], token.value))
                if err:
                    break
            results.append(seen)
    finally:
        os.close(hfd)
    assert results[0] == results[1]
    assert results[1][-1][0] == errno.ENOENT
