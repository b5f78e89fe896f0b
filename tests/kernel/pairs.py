"""The same map on both sides of a differential test: userbpf's Kernel
(:class:`Mine`) and the live kernel (:class:`Theirs`, over a hostbpf.HostMap),
with one method set, :func:`outcome` to compare what calls did and
:func:`run_seeded` to run seeded sequences on one simulated kernel."""
from __future__ import annotations

import struct

from userbpf.kernel import Kernel
from userbpf.uapi import Cmd


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def outcome(fn, *args):
    """('ok', result) or ('err', errno): what a call did, comparable across sides."""
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", e.errno)


def run_seeded(host, sequence, seeds) -> None:
    """``sequence(host, k, seed)`` for each seed on one Kernel with the host's
    CPUs; afterwards every fd is closed and every map freed."""
    k = Kernel(ncpus=host.possible_cpus())
    for seed in seeds:
        sequence(host, k, seed)
    assert len(k.fds) == 0 and not k.map_ids.live


class Mine:
    """A map in userbpf's Kernel, with HostMap's method names."""

    def __init__(self, k: Kernel, fd: int):
        self.k, self.fd = k, fd

    def update(self, key, value, flags=0):
        return self.k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=self.fd, key=key, value=value, flags=flags)

    def lookup(self, key, flags=0):
        return self.k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=self.fd, key=key, flags=flags)

    def delete(self, key):
        return self.k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=self.fd, key=key)

    def get_next_key(self, key):
        return self.k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=self.fd, key=key)

    def lookup_and_delete(self, key, flags=0):
        return self.k.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=self.fd, key=key, flags=flags)


class Theirs:
    """A HostMap with update's and delete's return value made 0 like the syscall's."""

    def __init__(self, m):
        self.m = m

    def update(self, key, value, flags=0):
        self.m.update(key, value, flags)
        return 0

    def lookup(self, key, flags=0):
        return self.m.lookup(key, flags)

    def delete(self, key):
        self.m.delete(key)
        return 0

    def get_next_key(self, key):
        return self.m.get_next_key(key)

    def lookup_and_delete(self, key, flags=0):
        return self.m.lookup_and_delete(key, flags)
