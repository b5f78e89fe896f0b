"""Maps give their memory back: create/close cycles of every map type with C
storage, through ``Kernel.bpf`` and through ``MapCore`` directly.

C allocations do not show in tracemalloc, so the C side is measured with the
process's resident size (/proc/self/statm) after a warm-up and after the
cycles, with ``malloc_trim`` first so that freed-but-cached heap does not
count; the virtual size, the open fds and the mappings catch ring buffers'
memfd and double mapping. The Python side is measured with tracemalloc and
with the kernel's own tables (live ids, fds, pins), which must return to
where they started.

The issue's requirement is "100k create/close cycles of each type return
memory": that is the ``slow`` test; CI runs a bounded 3k cycles per type.
Map memory views that outlive their map run in a subprocess, so a
use-after-free shows up as a crash of the child, not of pytest.
"""
from __future__ import annotations

import ctypes
import gc
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Callable, Dict, NamedTuple

import pytest

from userbpf._maps import MapCore
from userbpf.kernel import Kernel
from userbpf.kernel.maps import BpfMap
from userbpf.uapi import Cmd, MapType

NCPUS = 2
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10
MOUNT = "/sys/fs/bpf"
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20

RSS_BOUND = 2 * MiB        # resident growth allowed over all the cycles of one type
VSIZE_BOUND = 8 * MiB      # a leaked 4 KiB ring buffer maps 5 pages + a memfd: 60 MiB per 3k
WARMUP = 300
CI_CYCLES = 3_000
FULL_CYCLES = 100_000

_libc = ctypes.CDLL(None)


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


class Usage(NamedTuple):
    rss: int
    vsize: int
    fds: int
    mappings: int


def usage() -> Usage:
    """The process's memory, fds and mappings, after gc and malloc_trim."""
    gc.collect()
    _libc.malloc_trim(0)        # give cached free heap back, so only live memory counts
    with open("/proc/self/statm") as f:
        vsize, rss = (int(x) * PAGE for x in f.read().split()[:2])
    with open("/proc/self/maps") as f:
        mappings = sum(1 for _ in f)
    return Usage(rss, vsize, len(os.listdir("/proc/self/fd")), mappings)


def assert_returned(before: Usage, after: Usage, what: str) -> None:
    grew = Usage(*(a - b for a, b in zip(after, before)))
    assert grew.rss < RSS_BOUND, f"{what}: resident size grew by {grew.rss / MiB:.2f} MiB"
    assert grew.vsize < VSIZE_BOUND, f"{what}: virtual size grew by {grew.vsize / MiB:.2f} MiB"
    assert grew.fds <= 0, f"{what}: {grew.fds} more open fds"
    assert grew.mappings <= 2, f"{what}: {grew.mappings} more mappings"


# --- one map's life, per type -------------------------------------------------------

class Spec(NamedTuple):
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    map_extra: int = 0

    def attr(self) -> dict:
        return dict(map_type=self.map_type, key_size=self.key_size,
                    value_size=self.value_size, max_entries=self.max_entries,
                    map_flags=self.map_flags, map_extra=self.map_extra)

    def core(self) -> MapCore:
        return MapCore(self.map_type, self.key_size, self.value_size, self.max_entries,
                       self.map_flags, NCPUS, b"leak", 0, self.map_extra)


def sys_value(spec: Spec, fill: int) -> bytes:
    """A value as user space writes it (every CPU's slot for per-CPU maps)."""
    if spec.map_type in (MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH):
        return bytes([fill]) * (((spec.value_size + 7) & ~7) * NCPUS)
    return bytes([fill]) * spec.value_size


def lpm_key(prefixlen: int, addr: int) -> bytes:
    return struct.pack("<I", prefixlen) + struct.pack(">I", addr)


# Prefixes that make the trie allocate intermediate nodes too (10.0.0/24 and
# 10.0.1/24 meet in an internal /23 node), then a delete that frees one.
LPM_PREFIXES = [(24, 0x0A000000), (24, 0x0A000100), (16, 0x0A000000), (32, 0x0A000105),
                (8, 0x0B000000), (28, 0x0A000110)]

SPECS: Dict[str, Spec] = {
    "HASH": Spec(MapType.HASH, 4, 16, 256),
    "ARRAY": Spec(MapType.ARRAY, 4, 16, 256),
    "PERCPU_HASH": Spec(MapType.PERCPU_HASH, 4, 16, 256),
    "PERCPU_ARRAY": Spec(MapType.PERCPU_ARRAY, 4, 16, 256),
    "LRU_HASH": Spec(MapType.LRU_HASH, 4, 16, 256),
    "LRU_PERCPU_HASH": Spec(MapType.LRU_PERCPU_HASH, 4, 16, 256),
    "LPM_TRIE": Spec(MapType.LPM_TRIE, 8, 8, 256, BPF_F_NO_PREALLOC),
    "QUEUE": Spec(MapType.QUEUE, 0, 16, 256),
    "STACK": Spec(MapType.STACK, 0, 16, 256),
    "BLOOM_FILTER": Spec(MapType.BLOOM_FILTER, 0, 8, 256, map_extra=3),
    "RINGBUF": Spec(MapType.RINGBUF, 0, 0, 4096),
}
# the outer maps: every one stores two inner ARRAYs whose fds are closed
OF_MAPS = {"ARRAY_OF_MAPS": MapType.ARRAY_OF_MAPS, "HASH_OF_MAPS": MapType.HASH_OF_MAPS}
INNER = Spec(MapType.ARRAY, 4, 64, 16)


def fill_elements(spec: Spec, update: Callable, delete: Callable, pop: Callable,
                  views: Callable) -> None:
    """A few element operations of the type: what allocates per-element memory."""
    t = spec.map_type
    if t == MapType.LPM_TRIE:
        for i, (plen, addr) in enumerate(LPM_PREFIXES):
            update(lpm_key(plen, addr), u64(i))
        delete(lpm_key(24, 0x0A000100))
    elif t in (MapType.QUEUE, MapType.STACK):
        for i in range(6):
            update(None, sys_value(spec, i))
        pop()
        pop()
    elif t == MapType.BLOOM_FILTER:
        for i in range(6):
            update(None, u64(i * 0x9E3779B97F4A7C15 & (1 << 64) - 1))
    elif t == MapType.RINGBUF:
        cons, prod, data = views()          # the mmap layout, released at once
        cons[0:8] = u64(8)
        del cons, prod, data
    else:
        for i in range(6):
            update(u32(i * 37 % spec.max_entries), sys_value(spec, i))
        if t not in (MapType.ARRAY, MapType.PERCPU_ARRAY):
            delete(u32(37))


def kernel_cycle(k: Kernel, spec: Spec) -> None:
    """MAP_CREATE, a few element commands, close."""
    fd = k.bpf(Cmd.MAP_CREATE, **spec.attr())
    fill_elements(
        spec,
        update=lambda key, v: k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=key, value=v),
        delete=lambda key: k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=fd, key=key),
        pop=lambda: k.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=None),
        views=lambda: k.fds.get(fd).core.ringbuf_view())
    k.close(fd)


def core_cycle(spec: Spec) -> None:
    """The same on a bare MapCore, freed when the last reference goes."""
    core = spec.core()
    fill_elements(spec, update=lambda key, v: core.update(key, v),
                  delete=core.delete, pop=lambda: core.lookup_and_delete(None),
                  views=core.ringbuf_view)
    del core


def of_maps_cycle(k: Kernel, outer_type: int) -> None:
    """An outer map holding two inner maps whose own fds are closed at once:
    closing the outer map must free the inner ones."""
    tpl = k.bpf(Cmd.MAP_CREATE, **INNER.attr())
    key_size = 4
    outer = k.bpf(Cmd.MAP_CREATE, map_type=outer_type, key_size=key_size, value_size=4,
                  max_entries=8, inner_map_fd=tpl)
    k.close(tpl)
    for i in range(2):
        inner = k.bpf(Cmd.MAP_CREATE, **INNER.attr())
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=inner, key=u32(1), value=bytes([i + 1]) * 64)
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=outer, key=u32(i), value=u32(inner))
        k.close(inner)
    k.close(outer)


def kernel_tables(k: Kernel):
    return dict(k.map_ids.live), list(k.fds), dict(k.fs.pins)


def check_cycles(cycle: Callable[[], None], n: int, what: str,
                 k: Kernel = None) -> None:
    start = kernel_tables(k) if k is not None else None
    for _ in range(WARMUP):
        cycle()
    before = usage()
    for _ in range(n):
        cycle()
    after = usage()
    assert_returned(before, after, f"{what}, {n} cycles")
    if k is not None:
        assert kernel_tables(k) == start, f"{what}: objects, fds or pins left behind"


ALL_KERNEL = sorted(SPECS) + sorted(OF_MAPS)


def kernel_cycler(name: str, k: Kernel) -> Callable[[], None]:
    if name in OF_MAPS:
        return lambda: of_maps_cycle(k, OF_MAPS[name])
    return lambda: kernel_cycle(k, SPECS[name])


# --- the cycles ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_KERNEL)
def test_kernel_create_close_returns_memory(name):
    k = Kernel(ncpus=NCPUS)
    check_cycles(kernel_cycler(name, k), CI_CYCLES, f"{name} through Kernel.bpf", k)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_mapcore_create_free_returns_memory(name):
    check_cycles(lambda: core_cycle(SPECS[name]), CI_CYCLES, f"{name} MapCore")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_KERNEL)
def test_kernel_100k_create_close_cycles_return_memory(name):
    k = Kernel(ncpus=NCPUS)
    check_cycles(kernel_cycler(name, k), FULL_CYCLES, f"{name} through Kernel.bpf", k)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_mapcore_100k_create_free_cycles_return_memory(name):
    check_cycles(lambda: core_cycle(SPECS[name]), FULL_CYCLES, f"{name} MapCore")


def test_leak_check_detects_a_leak():
    """The measurement itself: maps kept alive (here: their fds never closed)
    are seen, so the bounds above are not vacuous."""
    k = Kernel(ncpus=NCPUS)
    spec = Spec(MapType.ARRAY, 4, 1024, 256)       # 256 KiB of values each
    kept = []

    def leaky():
        kept.append(k.bpf(Cmd.MAP_CREATE, **spec.attr()))
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=kept[-1], key=u32(255), value=bytes(1024))
    before = usage()
    for _ in range(64):
        leaky()
    grew = usage().vsize - before.vsize
    assert grew >= 15 * MiB, grew
    with pytest.raises(AssertionError):
        assert_returned(before, usage(), "leaky")
    for fd in kept:
        k.close(fd)


# --- the Python side ---------------------------------------------------------------------

def live_bpfmaps() -> int:
    """BpfMap objects alive in the process (other tests' maps included)."""
    return sum(isinstance(o, BpfMap) for o in gc.get_objects())


@pytest.mark.parametrize("name", ALL_KERNEL)
def test_kernel_cycles_leave_no_python_objects(name):
    k = Kernel(ncpus=NCPUS)
    cycle = kernel_cycler(name, k)
    start = kernel_tables(k)
    for _ in range(50):
        cycle()
    gc.collect()
    maps_before = live_bpfmaps()
    tracemalloc.start()
    try:
        snap0 = tracemalloc.take_snapshot()
        for _ in range(500):
            cycle()
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grew = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert grew < 64 * 1024, "\n".join(map(str, snap1.compare_to(snap0, "lineno")[:10]))
    assert kernel_tables(k) == start
    assert live_bpfmaps() == maps_before


def test_closed_map_objects_go_without_the_cyclic_gc():
    """A closed map's Python object goes at its last put(), not at the next gc
    (no reference cycle through its release callback)."""
    k = Kernel(ncpus=NCPUS)
    gc.collect()
    before = live_bpfmaps()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(20):
            k.close(k.bpf(Cmd.MAP_CREATE, **SPECS["HASH"].attr()))
        left = live_bpfmaps() - before
    finally:
        if enabled:
            gc.enable()
        gc.collect()
    assert left == 0, f"{left} closed BpfMap objects still alive without gc"


def test_closed_map_frees_c_storage_without_the_cyclic_gc():
    """release() drops the C storage at once: the process's size stays flat
    with gc off."""
    k = Kernel(ncpus=NCPUS)
    spec = Spec(MapType.ARRAY, 4, 1024, 256)
    enabled = gc.isenabled()
    before = usage()
    gc.disable()
    try:
        for _ in range(200):                    # 50 MiB if the storage stayed
            fd = k.bpf(Cmd.MAP_CREATE, **spec.attr())
            k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(255), value=bytes(1024))
            k.close(fd)
        _libc.malloc_trim(0)
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * PAGE
    finally:
        if enabled:
            gc.enable()
    assert vsize - before.vsize < VSIZE_BOUND


# --- pins, outer maps ---------------------------------------------------------------------

def test_pinned_map_lives_until_unlinked():
    k = Kernel(ncpus=NCPUS)
    spec = SPECS["HASH"]

    def cycle():
        fd = k.bpf(Cmd.MAP_CREATE, **spec.attr())
        map_id = k.fds.get(fd).id
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=sys_value(spec, 7))
        k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/m", bpf_fd=fd)
        k.close(fd)
        assert map_id in k.map_ids.live            # the pin holds it
        fd = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/m")
        assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == sys_value(spec, 7)
        k.close(fd)
        k.fs.unlink(f"{MOUNT}/m")
        assert map_id not in k.map_ids.live
    check_cycles(cycle, CI_CYCLES, "pin/unpin", k)
    assert k.fs.pins == {}


@pytest.mark.parametrize("outer_type", sorted(OF_MAPS))
def test_map_held_by_an_outer_map_is_freed_when_released(outer_type):
    k = Kernel(ncpus=NCPUS)
    tpl = k.bpf(Cmd.MAP_CREATE, **INNER.attr())
    outer = k.bpf(Cmd.MAP_CREATE, map_type=OF_MAPS[outer_type], key_size=4, value_size=4,
                  max_entries=8, inner_map_fd=tpl)
    k.close(tpl)
    start = kernel_tables(k)
    slot = [0]

    def cycle():
        inner = k.bpf(Cmd.MAP_CREATE, **INNER.attr())
        inner_id = k.fds.get(inner).id
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=inner, key=u32(3), value=bytes([5]) * 64)
        key = u32(slot[0] % 8)
        slot[0] += 1
        k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=outer, key=key, value=u32(inner))
        k.close(inner)
        assert inner_id in k.map_ids.live          # the outer map holds it
        assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=outer, key=key) == u32(inner_id)
        if slot[0] % 2:
            k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=outer, key=key)
        else:                                      # replaced by another inner map
            other = k.bpf(Cmd.MAP_CREATE, **INNER.attr())
            k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=outer, key=key, value=u32(other))
            k.close(other)
            k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=outer, key=key)
        assert inner_id not in k.map_ids.live
    check_cycles(cycle, CI_CYCLES, f"inner map of {outer_type}")
    assert kernel_tables(k) == start
    k.close(outer)
    assert k.map_ids.live == {}


# --- memory views that outlive their map (in a child process) ------------------------------

def run_child(body: str) -> str:
    """Run CHILD_PRELUDE + ``body`` in a fresh interpreter; its stdout."""
    code = CHILD_PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (f"child exited with {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


CHILD_PRELUDE = """
import ctypes, gc, os, struct
from userbpf._maps import MapCore
from userbpf.kernel import Kernel
from userbpf.uapi import Cmd, MapType
libc = ctypes.CDLL(None)
PAGE = os.sysconf("SC_PAGE_SIZE")
def usage():
    gc.collect(); libc.malloc_trim(0)
    vs, rss = (int(x) * PAGE for x in open("/proc/self/statm").read().split()[:2])
    return rss, vs, len(os.listdir("/proc/self/fd")), sum(1 for _ in open("/proc/self/maps"))
def u32(i): return struct.pack("<I", i)
def u64(i): return struct.pack("<Q", i)
"""


def test_array_value_view_outlives_its_map():
    out = run_child("""
    k = Kernel(ncpus=1)
    fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=64,
               max_entries=16, map_flags=1 << 10)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(3), value=b"\\xab" * 64)
    view = k.fds.get(fd).core.value_view()
    part = view[64:128]
    k.close(fd)
    assert k.map_ids.live == {} and len(k.fds) == 0
    gc.collect()
    for _ in range(50):                 # churn the heap where the map was
        junk = [bytearray(1088) for _ in range(64)]
    assert len(view) == 16 * 64 and not view.readonly
    assert bytes(view[3 * 64:4 * 64]) == b"\\xab" * 64
    view[0:8] = b"12345678"
    assert bytes(view[0:8]) == b"12345678"
    del view
    gc.collect()
    part[0:4] = b"wxyz"                 # a slice keeps the storage alive on its own
    assert bytes(part[0:4]) == b"wxyz" and bytes(part[4:64]) == bytes(60)
    part.release()
    try:
        part[0]
    except ValueError:
        print("released")
    """)
    assert out.split() == ["released"]


def test_bare_mapcore_view_outlives_the_core():
    out = run_child("""
    core = MapCore(2, 4, 8, 4, 0, 1)
    core.update(u32(2), u64(0x1122334455667788))
    view = core.value_view()
    del core
    gc.collect()
    print(view[16:24].tobytes().hex())
    view[0] = 9
    print(view[0])
    """)
    assert out.split() == ["8877665544332211", "9"]


def test_value_views_are_freed_when_released():
    # 200 maps of 1 MiB each: 200 MiB if a view kept its map after release
    out = run_child("""
    k = Kernel(ncpus=1)
    def cycle():
        fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=4096,
                   max_entries=256, map_flags=1 << 10)
        view = k.fds.get(fd).core.value_view()
        k.close(fd)
        for page in range(256):
            view[page * 4096] = page & 0xff
        assert view[255 * 4096] == 255
        view.release()
    for _ in range(5):
        cycle()
    before = usage()
    for _ in range(200):
        cycle()
    after = usage()
    print(*(a - b for a, b in zip(after, before)))
    """)
    rss, vsize, fds, mappings = map(int, out.split())
    assert rss < RSS_BOUND and vsize < VSIZE_BOUND and fds <= 0 and mappings <= 2, out


def test_ringbuf_views_outlive_their_map_and_are_freed():
    out = run_child("""
    k = Kernel(ncpus=1)
    SIZE = 1 << 16
    def cycle(check):
        fd = k.bpf(Cmd.MAP_CREATE, map_type=MapType.RINGBUF, max_entries=SIZE)
        core = k.fds.get(fd).core
        cons, prod, data = core.ringbuf_view(producer=True)
        ccons, cprod, cdata = core.ringbuf_view()
        del core
        k.close(fd)
        gc.collect()
        # the data pages are mapped twice: a write at i shows at i + SIZE
        prod[0:8] = u64(24)
        data[SIZE - 4:SIZE + 4] = b"abcdefgh"
        assert bytes(cdata[0:4]) == b"efgh" and bytes(cdata[2 * SIZE - 4:]) == b"abcd"
        ccons[0:8] = u64(16)
        assert bytes(cons[0:8]) == u64(16) and bytes(cprod[0:8]) == u64(24)
        if check:
            print(bytes(cdata[SIZE:SIZE + 4]).decode(), cdata.readonly, data.readonly)
        for v in (cons, prod, data, ccons, cprod, cdata):
            v.release()
    cycle(True)
    for _ in range(5):
        cycle(False)
    before = usage()
    for _ in range(300):
        cycle(False)
    after = usage()
    print(*(a - b for a, b in zip(after, before)))
    """)
    first, counts = out.strip().splitlines()
    assert first.split() == ["efgh", "True", "False"]
    rss, vsize, fds, mappings = map(int, counts.split())
    assert rss < RSS_BOUND and vsize < VSIZE_BOUND and fds <= 0 and mappings <= 2, out
