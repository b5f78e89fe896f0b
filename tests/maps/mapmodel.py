"""Python models of the kernel's map semantics, and small programs that use
maps through the helpers: shared by the tests in this folder.

The models are the specification the C maps are checked against: plain
dicts (arrays, hashes) and OrderedDicts (LRU lists, least recently used
first). Every operation returns what the bpf() command would (bytes or None)
or raises OSError with the kernel's errno.
"""
from __future__ import annotations

import ctypes
import errno
from collections import OrderedDict
from typing import Dict, List, Optional

import pytest

from userbpf import isa
from userbpf.isa import (BPF_DW, BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_4,
                         BPF_REG_6, BPF_REG_10, BPF_W)

HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH = 1, 2, 5, 6, 9, 10
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_RDONLY_PROG = 1 << 7
PERCPU = {PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH}
LRU = {LRU_HASH, LRU_PERCPU_HASH}


def fail(err: int):
    raise OSError(err, errno.errorcode[err])


def stride(value_size: int) -> int:
    return (value_size + 7) & ~7


class MapModel:
    """What a map of ``map_type`` holds, kept in Python.

    Values are lists of per-CPU values (one for plain maps). LRU maps keep
    one OrderedDict per LRU list, least recently used first; ``owner``
    says which list a key is on.
    """

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int,
                 map_flags: int = 0, ncpus: int = 1):
        self.type, self.ks, self.vs, self.max = map_type, key_size, value_size, max_entries
        self.flags, self.ncpus = map_flags, ncpus
        self.percpu = map_type in PERCPU
        self.lru = map_type in LRU
        self.array = map_type in (ARRAY, PERCPU_ARRAY)
        self.nvals = ncpus if self.percpu else 1
        self.data: Dict[bytes, List[bytes]] = {}
        if self.array:
            for i in range(max_entries):
                self.data[i.to_bytes(4, "little")] = [bytes(value_size)] * self.nvals
        n = ncpus if (self.lru and map_flags & BPF_F_NO_COMMON_LRU) else 1
        self.lists = [OrderedDict() for _ in range(n)]
        self.caps = [max_entries // n + (1 if i < max_entries % n else 0) for i in range(n)]
        self.owner: Dict[bytes, int] = {}

    # -- helpers -------------------------------------------------------------
    def _touch(self, key: bytes) -> None:
        if self.lru:
            self.lists[self.owner[key]].move_to_end(key)

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def _insert(self, key: bytes, vals: List[bytes], li: int) -> None:
        if self.lru:
            lst = self.lists[li]
            if len(lst) >= self.caps[li]:
                if not lst:
                    fail(errno.ENOMEM)
                victim, _ = lst.popitem(last=False)
                del self.data[victim]
                del self.owner[victim]
            lst[key] = True
            self.owner[key] = li
        elif len(self.data) >= self.max:
            fail(errno.E2BIG)
        self.data[key] = vals

    def _remove(self, key: bytes) -> None:
        del self.data[key]
        if self.lru:
            del self.lists[self.owner.pop(key)][key]

    def _check_update(self, key: bytes, flags: int, program: bool = False) -> Optional[bytes]:
        # bpf() refuses BPF_F_LOCK (no spin lock in the value) before the map
        # sees the flags; a program's array update checks it last
        # (array_map_update_elem: flags, index, NOEXIST, then the lock)
        lock_first = not (program and self.array)
        if (flags & ~BPF_F_LOCK) > BPF_EXIST or (lock_first and flags & BPF_F_LOCK):
            fail(errno.EINVAL)
        if self.array:
            if self._index(key) >= self.max:
                fail(errno.E2BIG)
            if flags & BPF_NOEXIST:
                fail(errno.EEXIST)
            if flags & BPF_F_LOCK:
                fail(errno.EINVAL)
            return key
        if key in self.data and flags == BPF_NOEXIST:
            fail(errno.EEXIST)
        if key not in self.data and flags == BPF_EXIST:
            fail(errno.ENOENT)
        return key

    # -- the bpf() side ------------------------------------------------------
    def sys_value(self, key: bytes) -> bytes:
        vals = self.data[key]
        if self.percpu:
            return b"".join(v.ljust(stride(self.vs), b"\0") for v in vals)
        return vals[0]

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self._check_update(key, flags)
        if self.percpu:
            st = stride(self.vs)
            vals = [value[c * st:c * st + self.vs] for c in range(self.ncpus)]
        else:
            vals = [value]
        if key in self.data:
            self.data[key] = vals
            self._touch(key)
        else:
            self._insert(key, vals, 0)

    def lookup(self, key: bytes) -> bytes:
        """bpf() lookups do not mark LRU use (kernel: lookup_elem_sys_only)."""
        if key not in self.data:
            fail(errno.ENOENT)
        return self.sys_value(key)

    def delete(self, key: bytes) -> None:
        if self.array:
            fail(errno.EINVAL)
        if key not in self.data:
            fail(errno.ENOENT)
        self._remove(key)

    def lookup_and_delete(self, key: bytes) -> bytes:
        if key not in self.data:
            fail(errno.ENOENT)
        out = self.sys_value(key)
        self._remove(key)
        return out

    # -- the program side ----------------------------------------------------
    def prog_lookup(self, key: bytes, cpu: int) -> Optional[bytes]:
        if key not in self.data or (self.percpu and cpu >= self.ncpus):
            return None
        self._touch(key)
        return self.data[key][cpu if self.percpu else 0]

    def prog_update(self, key: bytes, value: bytes, flags: int, cpu: int) -> int:
        if self.percpu and cpu >= self.ncpus:     # checked first: EINVAL either way
            return -errno.EINVAL
        try:
            self._check_update(key, flags, program=True)
        except OSError as e:
            return -e.errno
        c = cpu if self.percpu else 0
        if key in self.data:
            self.data[key] = list(self.data[key])
            self.data[key][c] = value
            self._touch(key)
            return 0
        vals = [bytes(self.vs)] * self.nvals
        vals[c] = value
        try:
            self._insert(key, vals, cpu % len(self.lists))
        except OSError as e:
            return -e.errno
        return 0


def read_value(addr: int, size: int) -> bytes:
    """The bytes at a value address a program lookup returned."""
    return ctypes.string_at(addr, size)


def all_keys(core) -> List[bytes]:
    """Walk get_next_key from the start, as bpftool does."""
    keys, key = [], None
    while True:
        try:
            key = core.get_next_key(key)
        except OSError as e:
            assert e.errno == errno.ENOENT
            return keys
        keys.append(key)
        assert len(keys) <= core.max_entries, "get_next_key does not end"



# -- the state machine ---------------------------------------------------------
BAD_FLAGS = [3, BPF_F_LOCK, BPF_F_LOCK | BPF_EXIST, 8, 1 << 32]


def make_machine(map_type: int, *, key_size: int = 4, value_size: int = 8,
                 max_entries: int = 6, map_flags: int = 0, ncpus: int = 1, nkeys: int = 9):
    """A RuleBasedStateMachine driving a MapCore and a MapModel side by side
    through every bpf() operation and the program-side lookup/update."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

    from userbpf._maps import MapCore

    array = map_type in (ARRAY, PERCPU_ARRAY)
    percpu = map_type in PERCPU
    sys_size = stride(value_size) * ncpus if percpu else value_size
    keys = st.integers(0, nkeys - 1).map(lambda i: i.to_bytes(key_size, "little"))
    sys_values = st.binary(min_size=sys_size, max_size=sys_size)
    if percpu:      # padding bytes are not value bytes: user space sends zeros there
        sys_values = st.lists(st.binary(min_size=value_size, max_size=value_size),
                              min_size=ncpus, max_size=ncpus).map(
            lambda vs: b"".join(v.ljust(stride(value_size), b"\0") for v in vs))
    values = st.binary(min_size=value_size, max_size=value_size)
    flags = st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST])
    cpus = st.integers(0, ncpus)            # ncpus itself is one past the last CPU

    def same(call, expect):
        """call() and expect() both return the same value or raise the same errno."""
        try:
            want = expect()
        except OSError as e:
            try:
                got = call()
            except OSError as e2:
                assert e2.errno == e.errno, (e2, e)
            else:
                raise AssertionError(f"expected errno {errno.errorcode[e.errno]}, got {got!r}")
            return
        got = call()
        assert got == want, (got, want)

    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.core = MapCore(map_type, key_size, value_size, max_entries, map_flags, ncpus)
            self.model = MapModel(map_type, key_size, value_size, max_entries, map_flags,
                                  ncpus)

        @rule(key=keys, value=sys_values, flags=flags)
        def update(self, key, value, flags):
            same(lambda: self.core.update(key, value, flags),
                 lambda: self.model.update(key, value, flags))

        @rule(key=keys, value=sys_values, flags=st.sampled_from(BAD_FLAGS))
        def update_bad_flags(self, key, value, flags):
            with pytest.raises(OSError) as e:
                self.core.update(key, value, flags)
            assert e.value.errno == errno.EINVAL

        @rule(key=keys)
        def lookup(self, key):
            same(lambda: self.core.lookup(key), lambda: self.model.lookup(key))

        @rule(key=keys)
        def delete(self, key):
            same(lambda: self.core.delete(key), lambda: self.model.delete(key))

        @rule(key=keys, value=values, flags=st.sampled_from([0, 1, 2, 3, 4]), cpu=cpus)
        def program_update(self, key, value, flags, cpu):
            got = self.core.program_update(key, value, flags, cpu)
            assert got == self.model.prog_update(key, value, flags, cpu)

        @rule(key=keys, cpu=cpus)
        def program_lookup(self, key, cpu):
            addr = self.core.program_lookup(key, cpu)
            want = self.model.prog_lookup(key, cpu)
            assert (read_value(addr, value_size) if addr else None) == want

        if not array:
            @rule(key=keys)
            def lookup_and_delete(self, key):
                same(lambda: self.core.lookup_and_delete(key),
                     lambda: self.model.lookup_and_delete(key))

            @rule(key=keys)
            def lookup_and_delete_bad_flags(self, key):
                with pytest.raises(OSError) as e:
                    self.core.lookup_and_delete(key, BPF_F_LOCK)
                assert e.value.errno == errno.EINVAL

        if map_type in LRU:
            @rule(key=keys, value=sys_values, cpu=cpus)
            def touch_oldest_then_insert(self, key, value, cpu):
                """Aimed at eviction order: a program looks up list 0's least
                recently used key, then a new key arrives on list 0."""
                lst = self.model.lists[0]
                if key in self.model.data or not lst:
                    return
                self.program_lookup(next(iter(lst)), cpu)
                self.update(key, value, BPF_ANY)

        @rule(key=keys)
        def next_of_absent_key_is_first(self, key):
            if key in self.model.data:
                return
            same(lambda: self.core.get_next_key(key),
                 lambda: self.core.get_next_key(None))

        @invariant()
        def walk_covers_every_key_once(self):
            walked = all_keys(self.core)
            assert len(walked) == len(set(walked)) == len(self.model.data)
            assert set(walked) == set(self.model.data)
            if array:
                assert walked == sorted(walked, key=lambda k: int.from_bytes(k, "little"))

    Machine.__name__ = f"Machine_{map_type}_{map_flags}_{ncpus}"
    return Machine

# -- programs ------------------------------------------------------------------
# They take their arguments from the run's memory (a bytearray): the key at
# [0, 16), the value at [16, 48), the flags (u64) at [48, 56).
KEY, VALUE, FLAGS = 0, 16, 48
MEM_SIZE = 56


def mem_for(key: bytes, value: bytes = b"", flags: int = 0) -> bytearray:
    mem = bytearray(MEM_SIZE)
    mem[KEY:KEY + len(key)] = key
    mem[VALUE:VALUE + len(value)] = value
    mem[FLAGS:FLAGS + 8] = flags.to_bytes(8, "little")
    return mem


def prog_update(fd: int) -> list:
    """r0 = bpf_map_update_elem(map, &mem.key, &mem.value, mem.flags)"""
    return [
        isa.BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),
        isa.BPF_LD_MAP_FD(BPF_REG_1, fd),
        isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_6),
        isa.BPF_MOV64_REG(BPF_REG_3, BPF_REG_6),
        isa.BPF_ALU64_IMM(isa.BPF_ADD, BPF_REG_3, VALUE),
        isa.BPF_LDX_MEM(BPF_DW, BPF_REG_4, BPF_REG_6, FLAGS),
        isa.BPF_EMIT_CALL(2),
        isa.BPF_EXIT_INSN(),
    ]


def prog_delete(fd: int) -> list:
    """r0 = bpf_map_delete_elem(map, &mem.key)"""
    return [
        isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_1),
        isa.BPF_LD_MAP_FD(BPF_REG_1, fd),
        isa.BPF_EMIT_CALL(3),
        isa.BPF_EXIT_INSN(),
    ]


def prog_lookup(fd: int, *, load_off: Optional[int] = None, store_imm: Optional[int] = None,
                add: Optional[int] = None) -> list:
    """p = bpf_map_lookup_elem(map, &mem.key); return 0 if p is NULL, else:
    copy the u64 at p + load_off (default 0) into mem.value, then
    optionally *(u64 *)p = store_imm, optionally atomically *(u64 *)p += add;
    return 1."""
    body = [isa.BPF_LDX_MEM(BPF_DW, BPF_REG_1, BPF_REG_0, load_off or 0),
            isa.BPF_STX_MEM(BPF_DW, BPF_REG_6, BPF_REG_1, VALUE)]
    if store_imm is not None:
        body.append(isa.BPF_ST_MEM(BPF_DW, BPF_REG_0, 0, store_imm))
    if add is not None:
        body += [isa.BPF_MOV64_IMM(BPF_REG_1, add),
                 isa.BPF_ATOMIC_OP(BPF_DW, isa.BPF_ADD, BPF_REG_0, BPF_REG_1, 0)]
    return [
        isa.BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),
        isa.BPF_LD_MAP_FD(BPF_REG_1, fd),
        isa.BPF_MOV64_REG(BPF_REG_2, BPF_REG_6),
        isa.BPF_EMIT_CALL(1),
        isa.BPF_JMP_IMM(isa.BPF_JNE, BPF_REG_0, 0, 1),
        isa.BPF_EXIT_INSN(),
        *body,
        isa.BPF_MOV64_IMM(BPF_REG_0, 1),
        isa.BPF_EXIT_INSN(),
    ]


def s64(r0: int) -> int:
    """A helper's return value as the signed long the kernel returns."""
    return r0 - (1 << 64) if r0 >= 1 << 63 else r0


__all__ = [n for n in dir() if not n.startswith("_")] + ["BPF_REG_0", "BPF_REG_10", "BPF_W"]
