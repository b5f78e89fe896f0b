"""The object model of the simulated kernel: fds, ids, lifetimes, bpffs, freeze.

The errnos are the live kernel's (6.18), read off it with userbpf.hostbpf;
each test asserts the kernel's answer.
"""
from __future__ import annotations

import errno
import struct

import pytest

import userbpf
from userbpf.kernel import Kernel, default_kernel
from userbpf.uapi import Cmd, MapType

EINVAL, ENOENT, EEXIST, EBADF, EPERM, EACCES, EBUSY = (
    errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.EBADF, errno.EPERM, errno.EACCES,
    errno.EBUSY)
RDONLY, WRONLY = 1 << 3, 1 << 4
MOUNT = "/sys/fs/bpf"


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


def new(k: Kernel, map_type=MapType.HASH, key_size=4, value_size=8, max_entries=4,
        **extra) -> int:
    return k.bpf(Cmd.MAP_CREATE, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, **extra)


def fails(k, cmd, **attr) -> int:
    with pytest.raises(OSError) as e:
        k.bpf(cmd, **attr)
    return e.value.errno


def raises(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def map_id(k, fd) -> int:
    return k.fds.get(fd).id


def live_ids(k) -> list:
    """Every live map id, walked with MAP_GET_NEXT_ID as bpftool does."""
    out, start = [], 0
    while True:
        try:
            start = k.bpf(Cmd.MAP_GET_NEXT_ID, start_id=start)
        except OSError as e:
            assert e.errno == ENOENT
            return out
        out.append(start)


@pytest.fixture
def k():
    return Kernel(ncpus=2)


# -- fds ----------------------------------------------------------------------------
def test_fds_are_lowest_free_from_3(k):
    fds = [new(k) for _ in range(4)]
    assert fds == [3, 4, 5, 6]
    k.close(4)
    k.close(3)
    assert new(k) == 3
    assert k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, 5)) == 4   # any new fd takes the hole
    assert new(k) == 7
    assert list(k.fds) == [3, 4, 5, 6, 7]


def test_close_of_a_closed_or_unknown_fd_is_ebadf(k):
    fd = new(k)
    k.close(fd)
    for bad in (fd, 0, 1, 2, 99, -1):
        assert raises(k.close, bad) == EBADF
    assert len(k.fds) == 0


# -- ids ----------------------------------------------------------------------------
def test_ids_are_monotonic_and_never_reused(k):
    a, b, c = new(k), new(k), new(k)
    ids = [map_id(k, fd) for fd in (a, b, c)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    k.close(c)
    k.close(b)
    d = new(k)
    assert map_id(k, d) == ids[2] + 1          # not the freed ids[1] or ids[2]
    assert d == b                              # while the fd number is reused


def test_get_next_id_walks_live_ids(k):
    fds = [new(k) for _ in range(5)]
    ids = [map_id(k, fd) for fd in fds]
    assert live_ids(k) == ids
    k.close(fds[1])
    k.close(fds[3])
    assert live_ids(k) == [ids[0], ids[2], ids[4]]
    assert k.bpf(Cmd.MAP_GET_NEXT_ID, start_id=ids[0]) == ids[2]
    assert k.bpf(Cmd.MAP_GET_NEXT_ID, start_id=ids[1]) == ids[2]     # a dead start id
    assert fails(k, Cmd.MAP_GET_NEXT_ID, start_id=ids[4]) == ENOENT
    assert fails(k, Cmd.MAP_GET_NEXT_ID, start_id=1 << 31) == ENOENT
    assert fails(Kernel(ncpus=1), Cmd.MAP_GET_NEXT_ID, start_id=0) == ENOENT


def test_get_next_id_refuses_open_flags(k):
    new(k)
    assert fails(k, Cmd.MAP_GET_NEXT_ID, start_id=0, open_flags=RDONLY) == EINVAL


def test_get_fd_by_id_opens_the_same_map(k):
    fd = new(k)
    other = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd))
    assert other != fd and map_id(k, other) == map_id(k, fd)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(11))
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=other, key=u32(1)) == u64(11)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=other, key=u32(1), value=u64(22))
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == u64(22)
    k.close(fd)
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=other, key=u32(1)) == u64(22)


def test_get_fd_by_id_errors(k):
    fd = new(k)
    mid = map_id(k, fd)
    for bad in (1 << 2, 1 << 5, 1, 1 << 31):
        assert fails(k, Cmd.MAP_GET_FD_BY_ID, map_id=mid, open_flags=bad) == EINVAL
    assert fails(k, Cmd.MAP_GET_FD_BY_ID, map_id=mid + 1) == ENOENT
    assert fails(k, Cmd.MAP_GET_FD_BY_ID, map_id=0) == ENOENT
    k.close(fd)
    assert fails(k, Cmd.MAP_GET_FD_BY_ID, map_id=mid) == ENOENT        # dead id


def test_get_fd_by_id_rdonly_and_wronly_is_einval(k):
    fd = new(k)
    assert fails(k, Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd),
                 open_flags=RDONLY | WRONLY) == EINVAL


def test_get_fd_by_id_modes(k):
    fd = new(k)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(5))
    ro = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=RDONLY)
    wo = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=WRONLY)
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=ro, key=u32(1)) == u64(5)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=ro, key=u32(1), value=u64(6)) == EPERM
    assert k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=wo, key=u32(1), value=u64(6)) == 0
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=wo, key=u32(1)) == EPERM
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == u64(6)


# -- lifetimes ------------------------------------------------------------------------
def test_map_lives_while_an_fd_holds_it(k):
    fd = new(k)
    mid = map_id(k, fd)
    dup = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=mid)
    k.close(fd)
    assert mid in live_ids(k) and mid in k.map_ids.live
    k.close(dup)
    assert mid not in live_ids(k) and mid not in k.map_ids.live


def test_map_lives_while_pinned(k):
    fd = new(k)
    mid = map_id(k, fd)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(3), value=u64(33))
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/keep", bpf_fd=fd)
    k.close(fd)
    assert live_ids(k) == [mid]
    again = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/keep")
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=again, key=u32(3)) == u64(33)
    k.close(again)
    assert live_ids(k) == [mid]
    k.fs.unlink(f"{MOUNT}/keep")
    assert live_ids(k) == []


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS],
                         ids=lambda t: t.name)
def test_map_lives_while_an_outer_map_holds_it(k, outer):
    tpl = new(k, MapType.ARRAY)
    o = new(k, outer, value_size=4, inner_map_fd=tpl)
    inner = new(k, MapType.ARRAY)
    iid, tid, oid = map_id(k, inner), map_id(k, tpl), map_id(k, o)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(2), value=u32(inner))
    k.close(inner)
    k.close(tpl)                      # the template's geometry was copied, not referenced
    assert live_ids(k) == [oid, iid]
    assert tid not in k.map_ids.live
    k.close(o)                        # the outer map goes, and with it the last reference
    assert live_ids(k) == []


def test_pin_and_outer_map_and_fd_together(k):
    tpl = new(k, MapType.ARRAY)
    o = new(k, MapType.ARRAY_OF_MAPS, value_size=4, inner_map_fd=tpl)
    inner = new(k, MapType.ARRAY)
    iid = map_id(k, inner)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=o, key=u32(0), value=u32(inner))
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/inner", bpf_fd=inner)
    k.close(inner)
    k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=o, key=u32(0))
    assert iid in live_ids(k)         # the pin still holds it
    k.fs.unlink(f"{MOUNT}/inner")
    assert iid not in live_ids(k)


# -- bpffs ----------------------------------------------------------------------------
def test_pin_then_get_gives_a_working_fd(k):
    fd = new(k)
    assert k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd) == 0
    got = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/x")
    assert got != fd and map_id(k, got) == map_id(k, fd)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=got, key=u32(9), value=u64(99))
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(9)) == u64(99)
    assert k.bpf(Cmd.OBJ_GET, pathname=b"/sys/fs/bpf/x") not in (fd, got)   # bytes paths too
    assert k.fs.listdir() == ["x"]


def test_pin_errors(k):
    fd = new(k)
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd)
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd) == EEXIST
    assert fails(k, Cmd.OBJ_PIN, pathname=MOUNT, bpf_fd=fd) == EEXIST
    for outside in ("/tmp/x", "/sys/fs/bpfx", "/sys/fs/x", "/x"):
        assert fails(k, Cmd.OBJ_PIN, pathname=outside, bpf_fd=fd) == EPERM, outside
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/no/x", bpf_fd=fd) == ENOENT
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/x/y", bpf_fd=fd) == ENOENT  # a pin's child
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/y", bpf_fd=99) == EBADF
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/y", bpf_fd=fd, file_flags=RDONLY) == EINVAL
    assert k.fs.listdir() == ["x"]


def test_obj_get_errors(k):
    fd = new(k)
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd)
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/missing") == ENOENT
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/no/x") == ENOENT
    assert fails(k, Cmd.OBJ_GET, pathname=MOUNT) == EACCES           # a directory
    assert fails(k, Cmd.OBJ_GET, pathname="/tmp/x") == EPERM
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/x", file_flags=RDONLY | WRONLY) == EINVAL
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/x", file_flags=1) == EINVAL
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/x", bpf_fd=fd) == EINVAL
    assert list(k.fds) == [fd]                                      # nothing leaked


def test_obj_get_rdonly(k):
    fd = new(k)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(1))
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd)
    ro = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/x", file_flags=RDONLY)
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=ro, key=u32(1)) == u64(1)
    assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=ro, key=None) == u32(1)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=ro, key=u32(1), value=u64(2)) == EPERM
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=ro, key=u32(1), value=u64(2), flags=3) == EPERM
    assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=ro, key=u32(1)) == EPERM
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=ro, key=u32(1)) == EPERM
    assert fails(k, Cmd.MAP_FREEZE, map_fd=ro) == EPERM
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == u64(1)
    assert k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(3)) == 0   # fd unchanged


def test_obj_get_wronly(k):
    fd = new(k)
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd)
    wo = k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/x", file_flags=WRONLY)
    assert k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=wo, key=u32(1), value=u64(7)) == 0
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=wo, key=u32(1)) == EPERM
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=wo, key=None) == EPERM
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == u64(7)
    assert k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=wo, key=u32(1)) == 0
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == ENOENT


def test_lookup_and_delete_on_wronly_fd_is_eperm(k):
    fd = new(k)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(7))
    wo = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=WRONLY)
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=wo, key=u32(1)) == EPERM


def test_lookup_flags_are_checked_before_the_fd(k):
    fd = new(k)
    wo = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=WRONLY)
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=99, key=u32(1), flags=8) == EINVAL
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=wo, key=u32(1), flags=8) == EINVAL
    assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=99, key=u32(1), flags=8) == EINVAL


def test_created_with_rdonly_map_flags(k):
    """BPF_F_RDONLY at MAP_CREATE makes the returned fd read-only."""
    fd = new(k, MapType.ARRAY, map_flags=RDONLY)
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=u64(1)) == EPERM
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(0)) == u64(0)


def test_fs_mkdir_unlink_rmdir(k):
    fs = k.fs
    fd = new(k)
    fs.mkdir(f"{MOUNT}/d")
    fs.mkdir(f"{MOUNT}/d/e")
    assert raises(fs.mkdir, f"{MOUNT}/d") == EEXIST
    assert raises(fs.mkdir, f"{MOUNT}/no/e") == ENOENT
    assert raises(fs.mkdir, "/tmp/d") == EPERM
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/d/e/m", bpf_fd=fd)
    assert raises(fs.mkdir, f"{MOUNT}/d/e/m") == EEXIST
    assert fs.listdir() == ["d"] and fs.listdir(f"{MOUNT}/d") == ["e"]
    assert fs.listdir(f"{MOUNT}/d/e") == ["m"]
    assert raises(fs.rmdir, f"{MOUNT}/d/e") == errno.ENOTEMPTY
    assert raises(fs.rmdir, f"{MOUNT}/d") == errno.ENOTEMPTY
    assert raises(fs.rmdir, MOUNT) == EBUSY
    assert raises(fs.rmdir, f"{MOUNT}/nothing") == ENOENT
    assert raises(fs.unlink, f"{MOUNT}/d/e") == errno.EISDIR
    assert raises(fs.unlink, f"{MOUNT}/d/e/nothing") == ENOENT
    assert raises(fs.unlink, "/tmp/x") == EPERM
    fs.unlink(f"{MOUNT}/d/e/m")
    assert raises(fs.unlink, f"{MOUNT}/d/e/m") == ENOENT
    assert fails(k, Cmd.OBJ_GET, pathname=f"{MOUNT}/d/e/m") == ENOENT
    fs.rmdir(f"{MOUNT}/d/e")
    fs.rmdir(f"{MOUNT}/d")
    assert fs.listdir() == []
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/d/m", bpf_fd=fd) == ENOENT
    # unlinking a pin does not touch the fds
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=u64(0))


def test_rmdir_of_a_pin_is_enotdir(k):
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/m", bpf_fd=new(k))
    assert raises(k.fs.rmdir, f"{MOUNT}/m") == errno.ENOTDIR


def test_normalised_paths(k):
    fd = new(k)
    k.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}//a/../x", bpf_fd=fd)
    assert k.fs.listdir() == ["x"]
    assert map_id(k, k.bpf(Cmd.OBJ_GET, pathname=f"{MOUNT}/./x")) == map_id(k, fd)


# -- freeze ----------------------------------------------------------------------------
@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.ARRAY], ids=lambda t: t.name)
def test_freeze(k, map_type):
    fd = new(k, map_type)
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=u64(5))
    other = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd))
    assert k.bpf(Cmd.MAP_FREEZE, map_fd=fd) == 0
    for f in (fd, other):              # the map is frozen, not the fd
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=f, key=u32(0), value=u64(6)) == EPERM
        assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=f, key=u32(1), value=u64(6)) == EPERM
        assert fails(k, Cmd.MAP_DELETE_ELEM, map_fd=f, key=u32(0)) == EPERM
        assert fails(k, Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=f, key=u32(0)) == EPERM
        assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=f, key=u32(0)) == u64(5)
        assert k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=f, key=None) == u32(0)
    # map_freeze checks write permission before its frozen check, and a frozen
    # map has none (map_get_sys_perms): a second freeze is EPERM, not EBUSY
    assert fails(k, Cmd.MAP_FREEZE, map_fd=other) == EPERM
    assert fails(k, Cmd.MAP_FREEZE, map_fd=fd) == EPERM


def test_freeze_errors(k):
    assert fails(k, Cmd.MAP_FREEZE, map_fd=99) == EBADF
    fd = new(k)
    ro = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=RDONLY)
    assert fails(k, Cmd.MAP_FREEZE, map_fd=ro) == EPERM
    assert k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=u64(1)) == 0   # not frozen
    wo = k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id(k, fd), open_flags=WRONLY)
    assert k.bpf(Cmd.MAP_FREEZE, map_fd=wo) == 0


# -- the entry point ----------------------------------------------------------------
def test_kernels_are_isolated():
    a, b = Kernel(ncpus=1), Kernel(ncpus=4)
    fa = new(a)
    a.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fa, key=u32(1), value=u64(1))
    a.bpf(Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fa)
    assert fails(b, Cmd.MAP_LOOKUP_ELEM, map_fd=fa, key=u32(1)) == EBADF
    assert fails(b, Cmd.OBJ_GET, pathname=f"{MOUNT}/x") == ENOENT
    assert fails(b, Cmd.MAP_GET_NEXT_ID, start_id=0) == ENOENT
    assert fails(b, Cmd.MAP_GET_FD_BY_ID, map_id=map_id(a, fa)) == ENOENT
    fb = new(b)
    assert fb == fa and map_id(b, fb) == map_id(a, fa)      # own fd table, own id space
    assert fails(b, Cmd.MAP_LOOKUP_ELEM, map_fd=fb, key=u32(1)) == ENOENT
    assert b.ncpus == 4 and a.ncpus == 1


def test_ncpus_range():
    for bad in (-1, 1025):
        with pytest.raises(ValueError, match="ncpus must be between 1 and 1024"):
            Kernel(ncpus=bad)
    assert Kernel(ncpus=1024).ncpus == 1024


@pytest.mark.parametrize("cmd", [9999, -1, 1 << 32])
def test_unknown_command_is_einval(k, cmd):
    assert fails(k, cmd) == EINVAL


def test_unknown_attr_field_is_einval(k):
    fd = new(k)
    assert fails(k, Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(0), next_key=bytes(4)) == EINVAL
    assert fails(k, Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(0), value=bytes(8),
                 start_id=0) == EINVAL
    assert fails(k, Cmd.MAP_GET_NEXT_KEY, map_fd=fd, key=None, flags=0) == EINVAL
    assert fails(k, Cmd.MAP_FREEZE, map_fd=fd, key=u32(0)) == EINVAL
    assert fails(k, Cmd.OBJ_PIN, pathname=f"{MOUNT}/x", bpf_fd=fd, start_id=1) == EINVAL
    assert k.fs.listdir() == []                     # refused before anything was done


def test_module_bpf_uses_the_default_kernel():
    dk = default_kernel()
    assert default_kernel() is dk and isinstance(dk, Kernel)
    fd = userbpf.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=8,
                     max_entries=2)
    try:
        assert fd in list(dk.fds)
        userbpf.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(1), value=u64(42))
        assert dk.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == u64(42)
        assert fails(Kernel(ncpus=1), Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1)) == EBADF
    finally:
        dk.close(fd)
    with pytest.raises(OSError) as e:
        userbpf.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(1))
    assert e.value.errno == EBADF


def test_threads_get_cpus_round_robin_and_keep_them():
    import threading
    k = Kernel(ncpus=3)
    seen = []

    def worker():
        seen.append((k.current_cpu(), k.current_cpu()))
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
        t.join()
    assert [a for a, b in seen] == [0, 1, 2, 0, 1, 2] and all(a == b for a, b in seen)
