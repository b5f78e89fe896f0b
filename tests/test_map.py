"""userbpf.Map: the dict-like layer over bpf()."""
from __future__ import annotations

import ctypes
import errno

import pytest

from userbpf import Cmd, Kernel, Map, MapType


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32)]


@pytest.fixture
def k():
    return Kernel(ncpus=3)


def test_dict_protocol_on_a_hash(k):
    m = Map(MapType.HASH, 4, 8, 4, kernel=k, key_type=int, value_type=int)
    m[1] = 10
    m[2] = 20
    m[(1 << 32) - 1] = 7
    assert (m[1], m[2], len(m), 3 in m, m.get(3, "none")) == (10, 20, 3, False, "none")
    assert sorted(m) == [1, 2, (1 << 32) - 1]
    assert sorted(m.items()) == [(1, 10), (2, 20), ((1 << 32) - 1, 7)]
    del m[2]
    with pytest.raises(KeyError):
        m[2]
    with pytest.raises(KeyError):
        del m[2]
    m.clear()
    assert len(m) == 0 and m.items() == []


def test_flags_and_errnos(k):
    m = Map(MapType.HASH, 4, 8, 2, kernel=k, value_type=int)
    m.update(1, 5, flags=1)                       # BPF_NOEXIST
    with pytest.raises(FileExistsError) as e:
        m.update(1, 6, flags=1)
    assert e.value.errno == errno.EEXIST and m[1] == 5
    with pytest.raises(FileNotFoundError):
        m.update(9, 6, flags=2)                   # BPF_EXIST on a missing key
    m[2] = 1
    with pytest.raises(OSError) as e:
        m[3] = 1                                  # full
    assert e.value.errno == errno.E2BIG and sorted(m.items(), key=lambda kv: kv[1]) == [
        (b"\2\0\0\0", 1), (b"\1\0\0\0", 5)]
    with pytest.raises(ValueError, match="key 4294967296 does not fit in 4 bytes"):
        m[1 << 32] = 1                            # key does not fit in 4 bytes


def test_ctypes_keys_and_values(k):
    m = Map(MapType.HASH, 8, 8, 4, kernel=k, key_type=Pair, value_type=Pair)
    m[Pair(1, 2)] = Pair(3, 4)
    got = m[Pair(1, 2)]
    assert (got.a, got.b) == (3, 4)
    (key,) = list(m)
    assert (key.a, key.b) == (1, 2)


def test_array_iterates_every_index_and_clear_zeroes(k):
    m = Map(MapType.ARRAY, 4, 4, 3, kernel=k, key_type=int, value_type=int)
    m[1] = 9
    assert list(m) == [0, 1, 2] and m.values() == [0, 9, 0]
    with pytest.raises(OSError) as e:
        del m[1]
    assert e.value.errno == errno.EINVAL
    m.clear()
    assert m.values() == [0, 0, 0]


def test_percpu_values_are_lists(k):
    m = Map(MapType.PERCPU_ARRAY, 4, 4, 2, kernel=k, value_type=int)
    m[0] = [1, 2, 3]
    assert m[0] == [1, 2, 3] and m[1] == [0, 0, 0]
    m[1] = 7                                       # one value for every CPU
    assert m[1] == [7, 7, 7]
    raw = k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=m.fd, key=(0).to_bytes(4, "little"))
    assert raw == b"".join(v.to_bytes(8, "little") for v in (1, 2, 3))   # rounded to 8
    with pytest.raises(ValueError, match="a per-CPU value needs 3 entries, got 2"):
        m[0] = [1, 2]


def test_pin_reopen_and_from_fd(k):
    m = Map(MapType.HASH, 4, 4, 4, kernel=k, name="counts", value_type=int)
    m[1] = 2
    m.pin("/sys/fs/bpf/counts")
    m.close()
    again = Map.pinned("/sys/fs/bpf/counts", kernel=k, value_type=int)
    assert again[1] == 2 and again.info.name == b"counts"
    assert again.map_type == MapType.HASH and again.max_entries == 4
    with pytest.raises(FileExistsError):
        again.pin("/sys/fs/bpf/counts")


def test_context_manager_closes_and_map_dies(k):
    with Map(MapType.ARRAY, 4, 4, 1, kernel=k) as m:
        map_id = m.id
        assert map_id in k.map_ids.live
    assert m.fd is None and map_id not in k.map_ids.live


def test_freeze(k):
    m = Map(MapType.ARRAY, 4, 4, 1, kernel=k, value_type=int)
    m[0] = 1
    m.freeze()
    with pytest.raises(PermissionError):
        m[0] = 2
    assert m[0] == 1


def test_maps_of_maps(k):
    inner = Map(MapType.ARRAY, 4, 8, 2, kernel=k)
    outer = Map(MapType.ARRAY_OF_MAPS, 4, 4, 2, kernel=k, inner_map=inner, value_type=int)
    outer[0] = inner.fd
    assert outer[0] == inner.id
    other = Map(MapType.ARRAY, 4, 8, 3, kernel=k)       # other max_entries: no match
    with pytest.raises(OSError) as e:
        outer[1] = other.fd
    assert e.value.errno == errno.EINVAL and 1 not in outer
    inner_id = inner.id
    inner.close()
    assert inner_id in k.map_ids.live                   # the outer map holds it
    del outer[0]
    assert inner_id not in k.map_ids.live


def test_default_kernel_is_shared():
    import userbpf
    m = Map(MapType.ARRAY, 4, 4, 1)
    try:
        assert m.kernel is userbpf.kernel.default_kernel()
        assert userbpf.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=m.fd, key=bytes(4)) == bytes(4)
    finally:
        m.close()


def test_mmap_of_an_mmapable_array_is_shared_with_programs(k):
    from userbpf import Program
    m = Map(MapType.ARRAY, 4, 4, 3, map_flags=1 << 10, kernel=k, value_type=int)
    view = m.mmap()
    assert len(view) == 3 * 8                      # values at 8-byte strides
    view[8:12] = (41).to_bytes(4, "little")
    assert m[1] == 41
    # a program's store through a lookup shows in the same memory
    code = """
        *(u32 *)(r10 - 4) = 1
        r1 = map[fd:{fd}] ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0 goto +2
        r1 = 99
        *(u32 *)(r0 + 0) = r1
        r0 = 0
        exit
    """.format(fd=m.fd)
    Program(code, maps={m.fd: k.fds.get(m.fd).core}).run()
    assert bytes(view[8:12]) == (99).to_bytes(4, "little") and m[1] == 99
    ro = m.mmap(writable=False)
    with pytest.raises(TypeError):
        ro[0] = 1


def test_mmap_refusals(k):
    with pytest.raises(OSError) as e:
        Map(MapType.ARRAY, 4, 4, 1, kernel=k).mmap()
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        Map(MapType.HASH, 4, 4, 1, kernel=k).mmap()
    assert e.value.errno == errno.ENODEV
    m = Map(MapType.ARRAY, 4, 4, 1, map_flags=1 << 10, kernel=k)
    m.freeze()
    with pytest.raises(PermissionError):
        m.mmap()
    assert len(m.mmap(writable=False)) == 8


def test_int_conversions_on_the_fast_path(k):
    m = Map(MapType.HASH, 2, 2, 8, kernel=k, value_type=int)
    m[0xffff] = 0xfffe
    assert m[0xffff] == 0xfffe and m[b"\xff\xff"] == 0xfffe
    m[-1] = -2                       # negatives: two's complement of the size
    assert m[0xffff] == 0xfffe
    with pytest.raises(ValueError, match="key 65536 does not fit in 2 bytes"):
        m[0x10000] = 1
    with pytest.raises(ValueError, match="value 65536 does not fit in 2 bytes"):
        m[1] = 0x10000
    with pytest.raises(OSError) as e:
        m[b"\1\2\3"] = 1             # a key of the wrong size
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KeyError):
        m[7]
    raw = Map(MapType.ARRAY, 4, 16, 2, kernel=k)          # bytes values wider than 8
    raw[1] = bytes(range(16))
    assert raw[1] == bytes(range(16)) and raw[0] == bytes(16)


def test_mapcore_get_and_set():
    from userbpf._maps import MapCore
    c = MapCore(MapType.HASH, 4, 8, 4, 0, 1)
    assert c.get(5) is None and c.get(5, True) is None
    c.set(5, 1234)
    assert c.get(5, True) == 1234 and c.get(5) == (1234).to_bytes(8, "little")
    assert c.get((5).to_bytes(4, "little"), True) == 1234
    with pytest.raises(OverflowError):
        c.get(1 << 32)
    with pytest.raises(OverflowError):
        c.get(-1)
