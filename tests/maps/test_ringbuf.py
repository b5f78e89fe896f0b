"""BPF_MAP_TYPE_RINGBUF storage: the kernel's mmap layout (consumer page,
producer page, data mapped twice), view permissions, creation checks and
the element commands' errnos (against the live kernel too)."""
from __future__ import annotations

import errno
import gc
import mmap
import struct

import pytest

from userbpf._maps import MapCore

from hostmaps import ENOTSUPP, KernelMap, errno_of, need_kernel

RINGBUF = 27
PAGE = mmap.PAGESIZE


def ringbuf(size, flags=0):
    return MapCore(RINGBUF, 0, 0, size, flags, 1)


@pytest.mark.parametrize("size", [PAGE, 4 * PAGE, 1 << 20])
def test_layout(size):
    rb = ringbuf(size)
    cons, prod, data = rb.ringbuf_view()
    assert (len(cons), len(prod), len(data)) == (PAGE, PAGE, 2 * size)
    assert struct.unpack_from("<Q", cons)[0] == 0         # consumer_pos
    assert struct.unpack_from("<Q", prod)[0] == 0         # producer_pos
    assert bytes(data) == bytes(2 * size)
    assert (rb.key_size, rb.value_size, rb.max_entries) == (0, 0, size)


def test_data_is_mapped_twice():
    size = 2 * PAGE
    rb = ringbuf(size)
    _, _, data = rb.ringbuf_view(producer=True)
    # a record written across the end of the ring continues at its start
    data[size - 4:size + 4] = b"ABCDEFGH"
    assert bytes(data[size - 4:size]) == b"ABCD"
    assert bytes(data[0:4]) == b"EFGH"
    assert bytes(data[2 * size - 4:]) == b"ABCD"
    data[100] = 7
    assert data[size + 100] == 7
    # every view of the same map sees the same memory
    assert bytes(rb.ringbuf_view()[2][:4]) == b"EFGH"


def test_views_have_the_kernels_permissions():
    rb = ringbuf(PAGE)
    cons, prod, data = rb.ringbuf_view()          # a consumer: only consumer_pos writable
    assert (cons.readonly, prod.readonly, data.readonly) == (False, True, True)
    struct.pack_into("<Q", cons, 0, 4096)
    with pytest.raises(TypeError):
        prod[0] = 1
    with pytest.raises(TypeError):
        data[0] = 1
    cons, prod, data = rb.ringbuf_view(producer=True)
    assert (cons.readonly, prod.readonly, data.readonly) == (True, False, False)
    assert struct.unpack_from("<Q", cons)[0] == 4096


def test_views_keep_the_map_alive():
    rb = ringbuf(PAGE)
    cons, _, data = rb.ringbuf_view(producer=True)
    data[1] = 9
    del rb
    gc.collect()
    assert data[1] == 9 and data[PAGE + 1] == 9
    struct.pack_into("<Q", MapCore(RINGBUF, 0, 0, PAGE, 0, 1).ringbuf_view()[0], 0, 1)


def test_value_view_keeps_the_map_alive():
    arr = MapCore(2, 4, 8, 4, 0, 1)
    view = arr.value_view()
    arr.update((1).to_bytes(4, "little"), (5).to_bytes(8, "little"))
    del arr
    gc.collect()
    assert view[8] == 5


@pytest.mark.parametrize("args", [
    (0, 0, 3 * PAGE, 0),          # not a power of two
    (0, 0, PAGE // 2, 0),         # a power of two below a page
    (0, 0, 0, 0),
    (4, 0, PAGE, 0),              # a key
    (0, 8, PAGE, 0),              # a value
    (0, 0, PAGE, 1),              # BPF_F_NO_PREALLOC
    (0, 0, PAGE, 1 << 3),         # BPF_F_RDONLY: only NUMA_NODE is accepted
])
def test_create_rejects(args):
    with pytest.raises(OSError) as e:
        MapCore(RINGBUF, *args, 1)
    assert e.value.errno == errno.EINVAL


def test_element_commands_are_not_supported():
    rb = ringbuf(PAGE)
    assert errno_of(rb.lookup, None)[0] == ENOTSUPP
    assert errno_of(rb.update, None, b"")[0] == ENOTSUPP
    assert errno_of(rb.delete, None)[0] == ENOTSUPP
    assert errno_of(rb.get_next_key, None)[0] == ENOTSUPP
    assert errno_of(rb.lookup_and_delete, None)[0] == ENOTSUPP
    assert rb.program_lookup(None) == 0


def test_ringbuf_view_needs_a_ring_buffer():
    with pytest.raises(OSError) as e:
        MapCore(22, 0, 8, 4, 0, 1).ringbuf_view()
    assert e.value.errno == errno.EINVAL


@pytest.mark.kernel
def test_same_errnos_as_the_kernel():
    need_kernel()
    k, err = KernelMap.create(RINGBUF, 0, 0, PAGE)
    assert err == 0
    k.value_size = 0
    rb = ringbuf(PAGE)
    assert errno_of(rb.lookup, None)[0] == k.lookup()[0] == ENOTSUPP
    assert errno_of(rb.update, None, b"")[0] == k.update(b"") == ENOTSUPP
    assert errno_of(rb.delete, None)[0] == k.delete() == ENOTSUPP
    assert errno_of(rb.get_next_key, None)[0] == k.get_next_key() == ENOTSUPP
    assert errno_of(rb.lookup_and_delete, None)[0] == k.lookup_and_delete()[0] == ENOTSUPP
    k.close()
    for args in [(0, 0, 3 * PAGE, 0), (0, 0, PAGE // 2, 0), (0, 0, 0, 0), (4, 0, PAGE, 0),
                 (0, 8, PAGE, 0), (0, 0, PAGE, 1), (0, 0, PAGE, 1 << 3), (0, 0, 2 * PAGE, 4)]:
        kmap, kerr = KernelMap.create(RINGBUF, *args)
        err, _ = errno_of(MapCore, RINGBUF, *args, 1)
        assert err == kerr, args
        if kmap:
            kmap.close()
