"""ARRAY_OF_MAPS, HASH_OF_MAPS and PROG_ARRAY through Kernel.bpf against a
Python model (Hypothesis state machines).

Inner maps are created, stored by fd, reopened by id and closed at random;
the outer maps are closed and made again. The model knows what every slot
holds and who holds every map (its fds and the slots storing it), so after
each step it checks that exactly the maps something holds are alive
(``k.map_ids.live``) with that many references, and that every slot
answers a lookup with the stored map's id. Errnos follow the kernel's
order (checked against the live kernel in test_map_elem_kernel.py):

* fd arrays: flags other than BPF_ANY, then an index >= max_entries
  (E2BIG), then the fd (EBADF if not open, EINVAL for a map whose type,
  sizes or flags differ from the template's, or max_entries unless the
  template has BPF_F_INNER_MAP);
* hash of maps: BPF_F_LOCK (EINVAL), the fd, then the HASH map's own
  flags rules (EINVAL, EEXIST, ENOENT) and E2BIG when full;
* PROG_ARRAY holds programs: a map fd is EINVAL and nothing is stored.
"""
from __future__ import annotations

import errno
import struct
from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from userbpf.kernel import Kernel
from userbpf.kernel.errors import ENOTSUPP
from userbpf.uapi import Cmd, MapType

EINVAL, ENOENT, E2BIG, EBADF, EEXIST = (errno.EINVAL, errno.ENOENT, errno.E2BIG, errno.EBADF,
                                        errno.EEXIST)
ANY, NOEXIST, EXIST, F_LOCK = 0, 1, 2, 4
F_INNER_MAP = 1 << 12
FLAGS = st.sampled_from([0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 8])
PICK = st.integers(0, 1 << 16)
BAD_FD = 999
AOM, HOM, PROG = MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PROG_ARRAY


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


class Inner:
    """A map that may be stored: its id, its open fds, whether it fits the template."""

    def __init__(self, map_id: int, fd: int, geometry: tuple, fits: bool):
        self.id, self.fds, self.geometry, self.fits = map_id, [fd], geometry, fits


class Outer:
    def __init__(self, map_type, fd: int, map_id: int, max_entries: int):
        self.map_type, self.fd, self.id, self.max_entries = map_type, fd, map_id, max_entries
        self.slots: Dict[bytes, Inner] = {}


def make_machine(template_flags: int, aom_entries: int, hom_entries: int):
    """A machine whose outer maps take inner maps like ARRAY(4, 8, 4, template_flags)."""
    template = (MapType.ARRAY, 4, 8, 4, template_flags)
    # (geometry, fits the template)
    geometries = [
        (template, True),
        ((MapType.ARRAY, 4, 8, 7, template_flags), bool(template_flags & F_INNER_MAP)),
        ((MapType.ARRAY, 4, 16, 4, template_flags), False),
        ((MapType.ARRAY, 4, 8, 4, template_flags ^ F_INNER_MAP), False),
        ((MapType.HASH, 4, 8, 4, 0), False),
        ((MapType.PERCPU_ARRAY, 4, 8, 4, 0), False),
    ]

    class FdMapsMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.k = Kernel(ncpus=2)
            self.inners: List[Inner] = []
            self.outers: Dict[int, Optional[Outer]] = {AOM: None, HOM: None, PROG: None}
            for t in self.outers:
                self._make_outer(t)

        # -- helpers -----------------------------------------------------------
        def _create(self, geometry) -> int:
            t, ks, vs, me, fl = geometry
            return self.k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs,
                              max_entries=me, map_flags=fl)

        def _make_outer(self, t) -> None:
            # a throwaway template: the outer map keeps its geometry, not the map
            tpl = self._create(template)
            tpl_id = self.k.fds.get(tpl).id
            me = {AOM: aom_entries, HOM: hom_entries, PROG: 3}[t]
            extra = {} if t == PROG else {"inner_map_fd": tpl}
            fd = self.k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=4, value_size=4,
                            max_entries=me, **extra)
            self.k.close(tpl)
            assert tpl_id not in self.k.map_ids.live
            self.outers[t] = Outer(t, fd, self.k.fds.get(fd).id, me)

        def _open_inners(self) -> List[Inner]:
            return [m for m in self.inners if m.fds]

        def _refs(self, m: Inner) -> int:
            return len(m.fds) + sum(1 for o in self.outers.values() if o is not None
                                    for held in o.slots.values() if held is m)

        def _fails(self, cmd, **attr) -> int:
            with pytest.raises(OSError) as e:
                self.k.bpf(cmd, **attr)
            return e.value.errno

        def _drop_unheld(self) -> None:
            self.inners = [m for m in self.inners if self._refs(m)]

        def _value(self, pick: int, how: int):
            """(fd bytes to store, the Inner it names or None, expected fd errno)."""
            open_ = self._open_inners()
            if how == 0 or not open_:
                return u32(BAD_FD), None, EBADF
            if how == 1:                          # a map of maps is no inner map
                o = self.outers[AOM] or self.outers[HOM]
                if o is not None:
                    return u32(o.fd), None, EINVAL
            m = open_[pick % len(open_)]
            fd = m.fds[pick % len(m.fds)]
            return u32(fd), m, (0 if m.fits else EINVAL)

        # -- inner maps ------------------------------------------------------------
        @rule(g=st.integers(0, len(geometries) - 1))
        def create_inner(self, g):
            geometry, fits = geometries[g]
            fd = self._create(geometry)
            self.inners.append(Inner(self.k.fds.get(fd).id, fd, geometry, fits))

        @precondition(lambda self: any(m.fds for m in self.inners))
        @rule(pick=PICK)
        def close_inner_fd(self, pick):
            open_ = self._open_inners()
            m = open_[pick % len(open_)]
            fd = m.fds.pop(pick % len(m.fds))
            self.k.close(fd)
            self._drop_unheld()

        @precondition(lambda self: bool(self.inners))
        @rule(pick=PICK)
        def reopen_by_id(self, pick):
            m = self.inners[pick % len(self.inners)]
            m.fds.append(self.k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=m.id))

        # -- outer maps --------------------------------------------------------------
        @rule(t=st.sampled_from([AOM, HOM, PROG]))
        def close_and_remake_outer(self, t):
            o = self.outers[t]
            self.k.close(o.fd)
            self.outers[t] = None
            assert o.id not in self.k.map_ids.live
            self._drop_unheld()
            self._make_outer(t)

        @rule(pick=PICK, how=st.integers(0, 6), flags=FLAGS, index=st.integers(0, 6))
        def update_array_of_maps(self, pick, how, flags, index):
            o = self.outers[AOM]
            key = u32(index if index < 6 else 1 << 31)
            value, m, fd_err = self._value(pick, how)
            if flags != ANY:
                want = EINVAL
            elif struct.unpack("<I", key)[0] >= o.max_entries:
                want = E2BIG
            else:
                want = fd_err
            self._update(o, key, value, flags, m, want)

        @rule(pick=PICK, how=st.integers(0, 6), flags=FLAGS, index=st.integers(0, 6))
        def update_hash_of_maps(self, pick, how, flags, index):
            o = self.outers[HOM]
            key = u32(index)
            value, m, fd_err = self._value(pick, how)
            if flags & F_LOCK:
                want = EINVAL
            elif fd_err:
                want = fd_err
            elif flags > EXIST:
                want = EINVAL
            elif flags == NOEXIST and key in o.slots:
                want = EEXIST
            elif flags == EXIST and key not in o.slots:
                want = ENOENT
            elif key not in o.slots and len(o.slots) >= o.max_entries:
                want = E2BIG
            else:
                want = 0
            self._update(o, key, value, flags, m, want)

        @rule(pick=PICK, how=st.integers(0, 6), flags=FLAGS, index=st.integers(0, 4))
        def update_prog_array(self, pick, how, flags, index):
            o = self.outers[PROG]
            value, m, fd_err = self._value(pick, how)
            if flags != ANY:
                want = EINVAL
            elif index >= o.max_entries:
                want = E2BIG
            else:
                want = EBADF if fd_err == EBADF else EINVAL    # a map is not a program
            self._update(o, u32(index), value, flags, None, want)

        def _update(self, o: Outer, key, value, flags, m: Optional[Inner], want: int):
            if want:
                assert self._fails(Cmd.MAP_UPDATE_ELEM, map_fd=o.fd, key=key, value=value,
                                   flags=flags) == want
                return
            assert self.k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=o.fd, key=key, value=value,
                              flags=flags) == 0
            o.slots[key] = m                  # the old map, if any, loses a reference
            self._drop_unheld()

        @rule(t=st.sampled_from([AOM, HOM, PROG]), index=st.integers(0, 6))
        def delete(self, t, index):
            o = self.outers[t]
            key = u32(index)
            if t != HOM and index >= o.max_entries:
                want = E2BIG
            elif key not in o.slots:
                want = ENOENT
            else:
                want = 0
            if want:
                assert self._fails(Cmd.MAP_DELETE_ELEM, map_fd=o.fd, key=key) == want
            else:
                assert self.k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=o.fd, key=key) == 0
                del o.slots[key]
                self._drop_unheld()

        @rule(t=st.sampled_from([AOM, HOM]), index=st.integers(0, 6))
        def lookup_and_delete_is_refused(self, t, index):
            o = self.outers[t]
            got = self._fails(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=o.fd, key=u32(index))
            assert got == ENOTSUPP

        # -- what must hold after every step -------------------------------------------
        @invariant()
        def exactly_the_held_maps_are_alive(self):
            live = self.k.map_ids.live
            want = {m.id for m in self.inners} | {o.id for o in self.outers.values()}
            assert set(live) == want
            for m in self.inners:
                assert live[m.id].refs == self._refs(m), m.geometry
            for o in self.outers.values():
                assert live[o.id].refs == 1

        @invariant()
        def every_slot_answers_with_the_stored_maps_id(self):
            for o in self.outers.values():
                n = max(o.max_entries, 6) + 1
                for i in range(n):
                    key = u32(i)
                    if key in o.slots:
                        got = self.k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=o.fd, key=key)
                        assert got == u32(o.slots[key].id)
                    else:
                        assert self._fails(Cmd.MAP_LOOKUP_ELEM, map_fd=o.fd, key=key) == ENOENT
            assert not self.outers[PROG].slots

        @invariant()
        def hash_of_maps_walk_names_its_keys(self):
            o = self.outers[HOM]
            keys, key = [], None
            while True:
                try:
                    key = self.k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=o.fd, key=key)
                except FileNotFoundError:
                    break
                keys.append(key)
                assert len(keys) <= o.max_entries
            assert sorted(keys) == sorted(o.slots)

        def teardown(self):
            for o in self.outers.values():
                if o is not None:
                    self.k.close(o.fd)
            for m in self.inners:
                for fd in m.fds:
                    self.k.close(fd)
            assert not self.k.map_ids.live and len(self.k.fds) == 0

    return FdMapsMachine


SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

TestFdMaps = make_machine(0, aom_entries=3, hom_entries=2).TestCase
TestFdMaps.settings = SETTINGS
TestFdMapsInnerMapFlag = make_machine(F_INNER_MAP, aom_entries=4, hom_entries=3).TestCase
TestFdMapsInnerMapFlag.settings = SETTINGS


@pytest.mark.slow
def test_fd_maps_machine_long():
    from hypothesis.stateful import run_state_machine_as_test
    for flags in (0, F_INNER_MAP):
        run_state_machine_as_test(
            make_machine(flags, aom_entries=3, hom_entries=2),
            settings=settings(SETTINGS, max_examples=600, stateful_step_count=80))


# -- the rules the machines rely on, one by one ---------------------------------------------
def new(k, t, ks=4, vs=8, me=4, fl=0, **extra) -> int:
    return k.bpf(Cmd.MAP_CREATE, map_type=t, key_size=ks, value_size=vs, max_entries=me,
                 map_flags=fl, **extra)


def test_a_stored_map_outlives_its_fd_and_dies_with_its_slot():
    k = Kernel(ncpus=2)
    tpl = new(k, MapType.ARRAY)
    outer = new(k, AOM, 4, 4, 2, inner_map_fd=tpl)
    inner = new(k, MapType.ARRAY)
    iid = k.fds.get(inner).id
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=outer, key=u32(1), value=u32(inner))
    k.close(inner)
    assert iid in k.map_ids.live
    assert k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=outer, key=u32(1)) == u32(iid)
    # overwriting the slot with another map frees it
    k.bpf(Cmd.MAP_UPDATE_ELEM, map_fd=outer, key=u32(1), value=u32(tpl))
    assert iid not in k.map_ids.live
    # the template, stored and then closed, lives until the outer map goes
    tid = k.fds.get(tpl).id
    k.close(tpl)
    assert tid in k.map_ids.live
    k.close(outer)
    assert not k.map_ids.live


def test_inner_map_fd_must_be_a_plain_map():
    k = Kernel(ncpus=2)
    tpl = new(k, MapType.ARRAY)
    outer = new(k, HOM, 4, 4, 2, inner_map_fd=tpl)
    with pytest.raises(OSError) as e:
        new(k, AOM, 4, 4, 2, inner_map_fd=outer)
    assert e.value.errno == EINVAL
    prog_array = new(k, PROG, 4, 4, 2)
    with pytest.raises(OSError) as e:
        new(k, AOM, 4, 4, 2, inner_map_fd=prog_array)
    assert e.value.errno == ENOTSUPP
    with pytest.raises(OSError) as e:
        new(k, AOM, 4, 4, 2, inner_map_fd=BAD_FD)
    assert e.value.errno == EBADF
