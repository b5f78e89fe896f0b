"""PERF_EVENT_ARRAY element commands from user space: the live kernel's
answers, and userbpf.kernel.perf_array giving the same ones.

Each scenario is written with symbolic fds ("cpu_event", "regular_file",
the map's "main" fd or a "second" fd of the same map ...) and run twice: on
a live-kernel map with real perf events, files and bpf maps, and on a
PerfEventSlots whose fd table holds stand-ins of the same kinds.  Both must
give the expected outcome at every step.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import random
import struct
import tempfile

import pytest

from userbpf.kernel.errors import ENOTSUPP
from userbpf.kernel.perf_array import PerfEventSlots
from userbpf.uapi import Cmd, MapFlag, MapType

pytestmark = pytest.mark.kernel

N = 4                                   # max_entries of every map here
OK = ("ok", None)
E2BIG, EBADF, EINVAL, ENOENT = errno.E2BIG, errno.EBADF, errno.EINVAL, errno.ENOENT
EOPNOTSUPP = errno.EOPNOTSUPP
FD_KINDS = ("cpu_event", "task_event", "inherit_event", "regular_file", "bpf_map",
            "not_open")


def u32(i: int) -> bytes:
    return struct.pack("<I", i & 0xFFFFFFFF)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", e.errno)


# --- the live kernel side ----------------------------------------------------------

PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT, PERF_SAMPLE_RAW = 1, 10, 1 << 10
ATTR_INHERIT = 1 << 1                   # perf_event_attr flag bits: disabled, inherit, ...


def perf_event_open(pid: int, cpu: int, inherit: bool = False) -> int:
    """A BPF_OUTPUT software event, as libbpf's perf_buffer opens per CPU."""
    nr = PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        pytest.skip(f"no perf_event_open number for {platform.machine()}")
    attr = bytearray(128)
    struct.pack_into("<IIQQQ", attr, 0, PERF_TYPE_SOFTWARE, len(attr),
                     PERF_COUNT_SW_BPF_OUTPUT, 1, PERF_SAMPLE_RAW)
    struct.pack_into("<Q", attr, 40, ATTR_INHERIT if inherit else 0)
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = libc.syscall(nr, buf, pid, cpu, -1, 0)
    if fd < 0:
        pytest.skip(f"perf_event_open not permitted: {os.strerror(ctypes.get_errno())}")
    return fd


class Live:
    """A live PERF_EVENT_ARRAY with a second fd (file) and one fd of each kind."""

    def __init__(self, host, map_flags: int = 0):
        self.host = host
        self.map = host.map_create(MapType.PERF_EVENT_ARRAY, 4, 4, N, map_flags)
        self.map_flags = map_flags
        self.files = {"main": self.map}
        self.open_file("second")
        self._tmp = tempfile.TemporaryFile()
        self._other = host.map_create(MapType.ARRAY, 4, 4, 1)
        self.fds = {"cpu_event": perf_event_open(-1, 0), "task_event": perf_event_open(0, -1),
                    "inherit_event": perf_event_open(0, -1, inherit=True),
                    "regular_file": self._tmp.fileno(), "bpf_map": self._other.fd,
                    "not_open": -1}
        self._events = [self.fds[k] for k in ("cpu_event", "task_event", "inherit_event")]

    def open_file(self, name: str) -> None:
        """Another fd of the map, a file of its own (BPF_MAP_GET_FD_BY_ID)."""
        map_id = self.map.info()["id"]
        fd = self.host.sys_bpf(Cmd.MAP_GET_FD_BY_ID, struct.pack("<III", map_id, 0, 0))
        self.files[name] = self.host.HostMap(fd, MapType.PERF_EVENT_ARRAY, 4, 4, N,
                                             self.map_flags)

    def do(self, step):
        op, *args = step
        if op == "update":
            index, kind, flags, file = args
            return outcome(self.files[file].update, u32(index), u32(self.fds[kind]), flags)
        if op == "delete":
            return outcome(self.map.delete, u32(args[0]))
        if op == "lookup":
            return outcome(self.map.lookup, u32(args[0]))
        if op == "lookup_and_delete":
            return outcome(self.map.lookup_and_delete, u32(args[0]))
        if op == "next":
            return outcome(self.map.get_next_key, None if args[0] is None else u32(args[0]))
        if op == "close_file":
            self.files.pop(args[0]).close()
            return OK
        if op == "open_file":
            self.open_file(args[0])
            return OK
        if op == "close_event":
            os.close(self.fds[args[0]])
            self._events.remove(self.fds[args[0]])
            self.fds[args[0]] = -1
            return OK
        raise AssertionError(op)

    def close(self):
        for f in self.files.values():
            f.close()
        for fd in self._events:
            os.close(fd)
        self._other.close()
        self._tmp.close()


# --- the userbpf side ------------------------------------------------------------------

class Stand:
    """An object behind an fd in the model's fd table."""

    def __init__(self, kind: str, inherit: bool = False):
        self.kind, self.inherit, self.refs = kind, inherit, 0

    def get(self):
        self.refs += 1
        return self

    def put(self):
        self.refs -= 1


class Model:
    def __init__(self, map_flags: int = 0):
        self.table = {"cpu_event": Stand("perf_event"), "task_event": Stand("perf_event"),
                      "inherit_event": Stand("perf_event", inherit=True),
                      "regular_file": Stand("file"), "bpf_map": Stand("map")}
        self.fds = {kind: 10 + i for i, kind in enumerate(self.table)}
        self.fds["not_open"] = 0xFFFFFFFF
        self.by_fd = {self.fds[k]: obj for k, obj in self.table.items()}
        self.slots = PerfEventSlots(N, map_flags, self.get_object)
        self.files = {"main", "second"}

    def get_object(self, fd):
        if fd not in self.by_fd:
            raise OSError(errno.EBADF, f"fd {fd} is not open")
        return self.by_fd[fd]

    def do(self, step):
        op, *args = step
        s = self.slots
        if op == "update":
            index, kind, flags, file = args
            assert file in self.files
            return outcome(s.update, u32(index), u32(self.fds[kind]), flags, file)
        if op == "delete":
            return outcome(s.delete, u32(args[0]))
        if op == "lookup":
            return outcome(s.lookup, u32(args[0]))
        if op == "lookup_and_delete":
            return outcome(s.lookup_and_delete, u32(args[0]))
        if op == "next":
            return outcome(s.get_next_key, None if args[0] is None else u32(args[0]))
        if op == "close_file":
            self.files.remove(args[0])
            s.release_file(args[0])
            return OK
        if op == "open_file":
            self.files.add(args[0])
            return OK
        if op == "close_event":
            del self.by_fd[self.fds[args[0]]]
            self.fds[args[0]] = 0xFFFFFFFF
            return OK
        raise AssertionError(op)


def run_both(host, steps, map_flags=0):
    live, model = Live(host, map_flags), Model(map_flags)
    try:
        return [(step, live.do(step), model.do(step)) for step in steps]
    finally:
        live.close()


def check(host, scenario, map_flags=0):
    steps = [s for s, _ in scenario]
    for (step, theirs, ours), (_, expected) in zip(run_both(host, steps, map_flags), scenario):
        assert (step, theirs) == (step, expected), "the live kernel answered otherwise"
        assert (step, ours) == (step, expected), "perf_array answered otherwise"


def err(code):
    return ("err", code)


# --- pinned answers --------------------------------------------------------------------

UPDATE_ERRNOS = [
    (("update", 0, "cpu_event", 0, "main"), OK),
    (("update", 1, "task_event", 0, "main"), OK),            # per-task events are fine
    (("update", 2, "inherit_event", 0, "main"), err(EOPNOTSUPP)),
    (("update", 2, "regular_file", 0, "main"), err(EBADF)),
    (("update", 2, "bpf_map", 0, "main"), err(EBADF)),
    (("update", 2, "not_open", 0, "main"), err(EBADF)),
    (("update", N, "cpu_event", 0, "main"), err(E2BIG)),
    (("update", N, "not_open", 0, "main"), err(E2BIG)),      # the index before the fd
    (("update", 0, "cpu_event", 1, "main"), err(EINVAL)),    # BPF_NOEXIST
    (("update", 0, "cpu_event", 2, "main"), err(EINVAL)),    # BPF_EXIST
    (("update", N + 5, "not_open", 1, "main"), err(EINVAL)),  # flags before the index
    (("update", 0, "task_event", 0, "main"), OK),            # replaces
]


def test_update_errnos(host):
    check(host, UPDATE_ERRNOS)


OTHER_COMMANDS = [
    (("update", 1, "cpu_event", 0, "main"), OK),
    (("lookup", 1), err(ENOTSUPP)),                          # stored
    (("lookup", 0), err(ENOTSUPP)),                          # empty
    (("lookup", N + 1), err(ENOTSUPP)),                      # out of range
    (("lookup_and_delete", 1), err(ENOTSUPP)),
    (("next", None), ("ok", u32(0))),
    (("next", 0), ("ok", u32(1))),                           # empty slots are walked
    (("next", N - 2), ("ok", u32(N - 1))),
    (("next", N - 1), err(ENOENT)),
    (("next", N + 7), ("ok", u32(0))),
    (("delete", 0), err(ENOENT)),
    (("delete", N), err(E2BIG)),
    (("delete", 1), OK),
    (("delete", 1), err(ENOENT)),
]


def test_lookup_delete_and_walk(host):
    check(host, OTHER_COMMANDS)


def test_closing_the_event_fd_keeps_the_slot(host):
    check(host, [
        (("update", 3, "cpu_event", 0, "main"), OK),
        (("close_event", "cpu_event"), OK),
        (("update", 2, "cpu_event", 0, "main"), err(EBADF)),
        (("delete", 3), OK),
    ])


RELEASE = [
    (("update", 0, "cpu_event", 0, "second"), OK),
    (("update", 1, "cpu_event", 0, "main"), OK),
    (("update", 2, "task_event", 0, "second"), OK),
    (("update", 2, "cpu_event", 0, "main"), OK),             # now stored through main
    (("close_file", "second"), OK),
]


def test_closing_the_map_file_empties_its_slots(host):
    check(host, RELEASE + [
        (("delete", 0), err(ENOENT)),                        # stored through second
        (("delete", 1), OK),
        (("delete", 2), OK),                                 # last stored through main
    ])


def test_preserve_elems_keeps_them(host):
    check(host, RELEASE + [
        (("delete", 0), OK),
        (("delete", 1), OK),
        (("delete", 2), OK),
    ], map_flags=MapFlag.PRESERVE_ELEMS)


# --- random sequences --------------------------------------------------------------------

def random_steps(rnd: random.Random, n: int):
    """Commands with any index, fd kind and flags; the map's second file is
    closed and opened again now and then (a new file each time)."""
    steps, files, opened = [], ["main", "second"], 1
    for _ in range(n):
        r = rnd.random()
        index = rnd.choice([0, 1, 2, N - 1, N, N + 3, 0xFFFFFFFF])
        if r < 0.45:
            flags = rnd.choice([0] * 8 + [1, 2, 4])
            kind = rnd.choice(FD_KINDS[:2] * 3 + FD_KINDS)
            steps.append(("update", index, kind, flags, rnd.choice(files)))
        elif r < 0.7:
            steps.append(("delete", index))
        elif r < 0.77:
            steps.append(("lookup", index))
        elif r < 0.92:
            steps.append(("next", rnd.choice([None, index])))
        elif len(files) == 2:
            steps.append(("close_file", files.pop()))
        else:
            opened += 1
            files.append(f"second{opened}")
            steps.append(("open_file", files[-1]))
    return steps


def compare_random(host, seed: int, n: int, map_flags: int) -> int:
    steps = random_steps(random.Random(seed), n)
    for step, theirs, ours in run_both(host, steps, map_flags):
        assert (step, ours) == (step, theirs)
    return len(steps)


@pytest.mark.parametrize("map_flags", [0, MapFlag.PRESERVE_ELEMS])
def test_random_sequences_agree(host, map_flags):
    seed = int(os.environ.get("USERBPF_SEED", "4242"))
    assert compare_random(host, seed, 300, map_flags) == 300


@pytest.mark.slow
@pytest.mark.parametrize("map_flags", [0, MapFlag.PRESERVE_ELEMS])
def test_random_sequences_agree_long(host, map_flags):
    for seed in range(40):
        assert compare_random(host, seed, 500, map_flags) == 500


# --- userbpf's Kernel end to end (once perf_array is wired in) --------------------------

class ThroughKernel:
    """The same steps through userbpf.Kernel's bpf(); userbpf has no perf events,
    regular files or fds that are not bpf objects, so only "bpf_map" and
    "not_open" values are expressible."""

    def __init__(self):
        from userbpf.kernel import Kernel
        self.k = k = Kernel(ncpus=2)
        main = k.bpf(Cmd.MAP_CREATE, map_type=MapType.PERF_EVENT_ARRAY, key_size=4,
                     value_size=4, max_entries=N)
        info = k.bpf(Cmd.OBJ_GET_INFO_BY_FD, bpf_fd=main)
        map_id = info["id"] if isinstance(info, dict) else info.id
        self.files = {"main": main, "second": k.bpf(Cmd.MAP_GET_FD_BY_ID, map_id=map_id)}
        other = k.bpf(Cmd.MAP_CREATE, map_type=MapType.ARRAY, key_size=4, value_size=4,
                      max_entries=1)
        self.fds = {"bpf_map": other, "not_open": 0xFFFFFFFF}

    def do(self, step):
        op, *args = step
        k, main = self.k, self.files["main"]
        if op == "update":
            index, kind, flags, file = args
            return outcome(lambda: None if k.bpf(
                Cmd.MAP_UPDATE_ELEM, map_fd=self.files[file], key=u32(index),
                value=u32(self.fds[kind]), flags=flags) == 0 else "nonzero")
        if op == "delete":
            return outcome(lambda: None if k.bpf(Cmd.MAP_DELETE_ELEM, map_fd=main,
                                                 key=u32(args[0])) == 0 else "nonzero")
        if op == "lookup":
            return outcome(lambda: k.bpf(Cmd.MAP_LOOKUP_ELEM, map_fd=main, key=u32(args[0])))
        if op == "lookup_and_delete":
            return outcome(lambda: k.bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=main,
                                         key=u32(args[0])))
        if op == "next":
            key = None if args[0] is None else u32(args[0])
            return outcome(lambda: k.bpf(Cmd.MAP_GET_NEXT_KEY, map_fd=main, key=key))
        raise AssertionError(op)


def expressible(scenario):
    return [(s, e) for s, e in scenario
            if s[0] != "update" or s[2] in ("bpf_map", "not_open")]


def test_userbpf_kernel_answers_the_same(host):
    scenario = expressible(UPDATE_ERRNOS) + expressible(OTHER_COMMANDS)
    mine = ThroughKernel()
    for step, expected in scenario:
        if step[0] == "update" and expected == OK:
            continue
        if step == ("delete", 1):                     # nothing was stored: the slot is empty
            expected = err(ENOENT)
        assert (step, mine.do(step)) == (step, expected)
