"""bpf_tail_call (helper 12) through PROG_ARRAY maps: chains, the limit of
33 tail calls per run (MAX_TAIL_CALL_CNT), failed tail calls falling
through, the target's own maps, the shared budget; and the same programs
run by the live kernel (BPF_PROG_TEST_RUN on socket filters).

Every program here passes the kernel's verifier: r6 keeps the context,
a tail call is ``r1 = ctx; r2 = prog_array; r3 = index; call 12``.
"""
from __future__ import annotations

import struct

import pytest

from userbpf import Map, MapType, hostbpf, isa
from userbpf.errors import BudgetExceeded, HelperError, MemoryAccessError
from userbpf.isa import MAX_TAIL_CALL_CNT, Insn, Pseudo
from userbpf.kernel.progs import load_program
from userbpf.uapi import ProgType

PA_FD, COUNTER_FD = 100, 101        # the fds the code names (load_program renumbers)
PACKET = bytes(range(64))           # a socket filter's test_run needs an Ethernet header


def ld_map(dst: int, fd: int):
    return [Insn(0x18, dst, Pseudo.MAP_FD, 0, fd), Insn(0, 0, 0, 0, 0)]


def tail_call(index: int, pa_fd: int = PA_FD):
    """r1 = ctx (kept in r6); bpf_tail_call(ctx, prog_array, index)."""
    return [isa.BPF_MOV64_REG(1, 6), *ld_map(2, pa_fd), isa.BPF_MOV64_IMM(3, index),
            isa.BPF_EMIT_CALL(12)]


def ret(value: int):
    return [isa.BPF_MOV64_IMM(0, value), isa.BPF_EXIT_INSN()]


def chain_link(index: int, pa_fd: int = PA_FD):
    """Tail-call slot ``index``; when that fails, return 100 + index."""
    return [isa.BPF_MOV64_REG(6, 1), *tail_call(index, pa_fd), *ret(100 + index)]


def counting(index: int, pa_fd: int = PA_FD, counter_fd: int = COUNTER_FD):
    """counter[0] += 1, then tail-call slot ``index``; on failure return 7."""
    return [isa.BPF_MOV64_REG(6, 1),
            isa.BPF_ST_MEM(isa.Size.W, 10, -4, 0),
            *ld_map(1, counter_fd),
            isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 2, -4),
            isa.BPF_EMIT_CALL(1),                                  # map_lookup_elem
            isa.BPF_JMP_IMM(isa.JmpOp.JEQ, 0, 0, 2 + 4),
            isa.BPF_MOV64_IMM(1, 1),
            isa.BPF_ATOMIC_OP(isa.Size.DW, isa.AtomicOp.ADD, 0, 1, 0),
            *tail_call(index, pa_fd),
            *ret(7)]


@pytest.fixture
def pa():
    m = Map(MapType.PROG_ARRAY, 4, 4, 4)
    yield m


def load(code, pa, counter=None):
    maps = {PA_FD: pa}
    if counter is not None:
        maps[COUNTER_FD] = counter
    return load_program(code, maps=maps, kernel=pa.kernel)


def test_chain_of_tail_calls_runs_the_last_program(pa):
    progs = [load(chain_link(i + 1), pa) for i in range(3)]
    entry = progs[0]
    assert entry.program.run(bytearray(PACKET)) == 101        # slot 1 empty: falls through
    pa[1] = progs[1].fd
    assert entry.program.run(bytearray(PACKET)) == 102
    pa[2] = progs[2].fd
    assert entry.program.run(bytearray(PACKET)) == 103        # slot 3 empty
    # every program ran its 5 instructions up to the call (lddw counts once),
    # the last one its 2 after the failed call
    assert entry.program.insn_count == 3 * 5 + 2
    del pa[2]
    assert entry.program.run(bytearray(PACKET)) == 102


def test_out_of_range_index_falls_through(pa):
    target = load(ret(5), pa)
    pa[0] = target.fd
    entry = load([isa.BPF_MOV64_REG(6, 1), *tail_call(4), *ret(9)], pa)   # max_entries 4
    assert entry.program.run(bytearray(PACKET)) == 9
    entry = load([isa.BPF_MOV64_REG(6, 1), *tail_call(0), *ret(9)], pa)
    assert entry.program.run(bytearray(PACKET)) == 5
    # the index is a u32: 2**32 (r3 = 1 << 32) is slot 0
    entry = load([isa.BPF_MOV64_REG(6, 1), isa.BPF_MOV64_REG(1, 6), *ld_map(2, PA_FD),
                  isa.BPF_MOV64_IMM(3, 1), isa.BPF_ALU64_IMM(isa.AluOp.LSH, 3, 32),
                  isa.BPF_EMIT_CALL(12), *ret(9)], pa)
    assert entry.program.run(bytearray(PACKET)) == 5


def test_a_program_replacing_itself_stops_after_33_tail_calls(pa):
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    p = load(counting(0), pa, counter)
    pa[0] = p.fd
    assert p.program.run(bytearray(PACKET)) == 7               # the 34th fell through
    assert counter[0] == struct.pack("<Q", MAX_TAIL_CALL_CNT + 1)
    # each run starts counting again
    assert p.program.run(bytearray(PACKET)) == 7
    assert counter[0] == struct.pack("<Q", 2 * (MAX_TAIL_CALL_CNT + 1))


def test_an_empty_slot_does_not_count_toward_the_limit(pa):
    """As the live kernel's JIT (its interpreter would count it)."""
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    # slot 0 tries the empty slot 1 first, then itself
    code = counting(0)
    code = code[:-2] + tail_call(1) + tail_call(0) + ret(7)
    p = load(code, pa, counter)
    pa[0] = p.fd
    assert p.program.run(bytearray(PACKET)) == 7
    # each program tried the empty slot 1 first: still 33 self tail calls
    assert counter[0] == struct.pack("<Q", MAX_TAIL_CALL_CNT + 1)


def test_the_target_uses_its_own_maps(pa):
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    target = load(counting(3), pa, counter)          # slot 3 stays empty
    entry = load(chain_link(0), pa)                  # no counter map of its own
    pa[0] = target.fd
    assert entry.program.run(bytearray(PACKET)) == 7
    assert counter[0] == struct.pack("<Q", 1)


def test_the_run_budget_is_shared(pa):
    p = load(chain_link(0), pa)
    pa[0] = p.fd
    p.program.budget = 5 * 34 + 1    # 5 instructions per program up to its call
    with pytest.raises(BudgetExceeded):
        p.program.run(bytearray(PACKET))
    p.program.budget = 5 * 34 + 2    # 33 tail calls + the fall-through of the 34th
    assert p.program.run(bytearray(PACKET)) == 100
    assert p.program.insn_count == 5 * 34 + 2


def test_a_fault_in_the_target_names_the_targets_pc(pa):
    target = load([isa.BPF_MOV64_IMM(0, 0), isa.BPF_LDX_MEM(isa.Size.DW, 0, 0, 0),
                   isa.BPF_EXIT_INSN()], pa)
    entry = load(chain_link(0), pa)
    pa[0] = target.fd
    with pytest.raises(MemoryAccessError) as e:
        entry.program.run(bytearray(PACKET))
    assert e.value.pc == 1
    assert e.value.addr == 0
    assert e.value.insn == "r0 = *(u64 *)(r0 +0)"      # the target's instruction, not the entry's


SUBPROG_TAIL_CALL = [isa.BPF_CALL_REL(2), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 0, 1000),
                     isa.BPF_EXIT_INSN(),
                     # the subprogram: ctx arrives in r1
                     isa.BPF_MOV64_REG(6, 1), *tail_call(0), *ret(5)]


def test_a_tail_call_from_a_subprogram_returns_to_its_caller(pa):
    """The target replaces the subprogram; its exit returns to the caller
    (1042 and 1005 in the live kernel, see test_subprogram_tail_call_matches_the_kernel)."""
    target = load([isa.BPF_MOV64_IMM(0, 40), isa.BPF_JMP_IMM(isa.JmpOp.JA, 0, 0, 0),
                   isa.BPF_ALU64_IMM(isa.AluOp.ADD, 0, 2), isa.BPF_EXIT_INSN()], pa)
    entry = load(SUBPROG_TAIL_CALL, pa)
    pa[0] = target.fd
    assert entry.program.run(bytearray(PACKET)) == 1042
    # call, mov, mov, lddw, mov, call | target's 4 | add, exit
    assert entry.program.insn_count == 6 + 4 + 2
    entry.program.budget = 6 + 4 + 1
    with pytest.raises(BudgetExceeded):
        entry.program.run(bytearray(PACKET))       # at the target's exit, back to the caller
    entry.program.budget = 6 + 4 + 2
    assert entry.program.run(bytearray(PACKET)) == 1042
    del pa[0]
    assert entry.program.run(bytearray(PACKET)) == 1005


def test_a_subprogram_tail_call_chain_keeps_the_limit(pa):
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    looping = load(counting(0), pa, counter)
    pa[0] = looping.fd
    entry = load(SUBPROG_TAIL_CALL, pa)
    assert entry.program.run(bytearray(PACKET)) == 1007
    assert counter[0] == struct.pack("<Q", MAX_TAIL_CALL_CNT)   # the entry's own call was 1


def test_a_fault_after_a_subprogram_tail_call_names_the_target(pa):
    target = load([isa.BPF_MOV64_IMM(0, 0), isa.BPF_LDX_MEM(isa.Size.DW, 0, 0, 0),
                   isa.BPF_EXIT_INSN()], pa)
    pa[0] = target.fd
    with pytest.raises(MemoryAccessError) as e:
        load(SUBPROG_TAIL_CALL, pa).program.run(bytearray(PACKET))
    assert e.value.pc == 1 and e.value.insn == "r0 = *(u64 *)(r0 +0)"


def test_prog_array_is_not_program_memory_nor_a_map_helpers_map(pa):
    target = load(ret(5), pa)
    pa[0] = target.fd
    lookup = [isa.BPF_ST_MEM(isa.Size.W, 10, -4, 0), *ld_map(1, PA_FD),
              isa.BPF_MOV64_REG(2, 10), isa.BPF_ALU64_IMM(isa.AluOp.ADD, 2, -4),
              isa.BPF_EMIT_CALL(1), *ret(0)]
    with pytest.raises(HelperError):
        load(lookup, pa).program.run()
    # a tail call through a map that is not a PROG_ARRAY stops the run
    arr = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    p = load_program([isa.BPF_MOV64_REG(6, 1), *tail_call(0, COUNTER_FD), *ret(1)],
                     maps={COUNTER_FD: arr}, kernel=pa.kernel)
    with pytest.raises(HelperError):
        p.program.run()


def test_a_deleted_target_is_not_freed_under_a_run(pa):
    target = load(ret(5), pa)
    entry = load(chain_link(0), pa)
    pa[0] = target.fd
    prog = pa.kernel.fds.get(target.fd)
    target.close()
    del pa[0]
    assert prog.freed
    assert entry.program.run(bytearray(PACKET)) == 100
    pa[0] = load(ret(6), pa).fd
    assert entry.program.run(bytearray(PACKET)) == 6


# ---- the same programs in the live kernel ----------------------------------

def _host_patch(code, fds):
    return [x._replace(imm=fds[x.imm]) if x.code == 0x18 and x.src == Pseudo.MAP_FD else x
            for x in code]


@pytest.mark.kernel
@pytest.mark.skipif(not hostbpf.available(),
                    reason="live bpf() not permitted" if not hostbpf.available() else "")
@pytest.mark.parametrize("filled", [0, 1, 2, 3])
def test_chain_matches_the_kernel(pa, filled):
    """Slots 1..filled hold links, the entry is link 0: both return 101 + filled."""
    with hostbpf.map_create(MapType.PROG_ARRAY, 4, 4, 4) as hpa:
        hprogs = [hostbpf.prog_load(_host_patch(chain_link(i + 1), {PA_FD: hpa.fd}),
                                    ProgType.SOCKET_FILTER) for i in range(4)]
        uprogs = [load(chain_link(i + 1), pa) for i in range(4)]
        try:
            for i in range(1, filled + 1):
                hpa.update(struct.pack("<I", i), struct.pack("<I", hprogs[i].fd))
                pa[i] = uprogs[i].fd
            host = hprogs[0].test_run(PACKET).retval
            assert uprogs[0].program.run(bytearray(PACKET)) == host == 101 + filled
        finally:
            for p in hprogs:
                p.close()


@pytest.mark.kernel
@pytest.mark.skipif(not hostbpf.available(),
                    reason="live bpf() not permitted" if not hostbpf.available() else "")
@pytest.mark.parametrize("empty_first", [False, True])
def test_the_limit_matches_the_kernel(pa, empty_first):
    """A program tail-calling itself: the counter after one run is the same."""
    code = counting(0)
    if empty_first:
        code = code[:-2] + tail_call(1) + tail_call(0) + ret(7)
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    with hostbpf.map_create(MapType.PROG_ARRAY, 4, 4, 4) as hpa, \
            hostbpf.map_create(MapType.ARRAY, 4, 8, 1) as hcounter:
        with hostbpf.prog_load(_host_patch(code, {PA_FD: hpa.fd, COUNTER_FD: hcounter.fd}),
                               ProgType.SOCKET_FILTER) as hp:
            hpa.update(struct.pack("<I", 0), struct.pack("<I", hp.fd))
            host = hp.test_run(PACKET).retval
            host_count = hcounter.lookup(bytes(4))
            hpa.delete(struct.pack("<I", 0))        # the slot holds the program
        p = load(code, pa, counter)
        pa[0] = p.fd
        assert p.program.run(bytearray(PACKET)) == host == 7
        assert counter[0] == host_count
    assert host_count == struct.pack("<Q", MAX_TAIL_CALL_CNT + 1)


# ---- the PROG_ARRAY's owner program type -----------------------------------

def _owner_steps(first_stores: bool, store, load_user, load_plain, delete):
    """What the kernel does with one PROG_ARRAY: a socket filter makes it its
    type (stored in it, or loaded referencing it); then an XDP program can
    be neither stored nor loaded referencing it, even after the socket
    filter is gone. Returns the errno (0: done) of each step."""
    out = []

    def step(fn):
        try:
            fn()
            out.append(0)
        except OSError as e:
            out.append(e.errno)
    sf_code = ret(0)
    if first_stores:
        sf = load_plain(sf_code, ProgType.SOCKET_FILTER)
        step(lambda: store(0, sf))
        step(lambda: delete(0))
    else:
        step(lambda: load_user(ProgType.SOCKET_FILTER))
    xdp = load_plain(ret(2), ProgType.XDP)
    step(lambda: store(1, xdp))
    step(lambda: load_user(ProgType.XDP))
    sf2 = load_plain(ret(3), ProgType.SOCKET_FILTER)
    step(lambda: store(2, sf2))
    return out


def _user_owner_steps(first_stores: bool):
    pa = Map(MapType.PROG_ARRAY, 4, 4, 4)
    kept = []

    def load_plain(code, t):
        kept.append(load_program(code, prog_type=t, kernel=pa.kernel))
        return kept[-1].fd

    def store(i, fd):
        pa[i] = fd

    def delete(i):
        del pa[i]

    def load_user(t):
        kept.append(load_program(chain_link(0), prog_type=t, maps={PA_FD: pa},
                                 kernel=pa.kernel))
    return _owner_steps(first_stores, store, load_user, load_plain, delete)


@pytest.mark.parametrize("first_stores", [False, True])
def test_a_prog_array_holds_one_program_type(first_stores):
    from errno import EINVAL
    expected = [0, 0, EINVAL, EINVAL, 0] if first_stores else [0, EINVAL, EINVAL, 0]
    assert _user_owner_steps(first_stores) == expected


@pytest.mark.kernel
@pytest.mark.skipif(not hostbpf.available(),
                    reason="live bpf() not permitted" if not hostbpf.available() else "")
@pytest.mark.parametrize("first_stores", [False, True])
def test_the_owner_type_matches_the_kernel(first_stores):
    with hostbpf.map_create(MapType.PROG_ARRAY, 4, 4, 4) as hpa:
        kept = []

        def load_plain(code, t):
            kept.append(hostbpf.prog_load(code, t))
            return kept[-1].fd

        def store(i, fd):
            hpa.update(struct.pack("<I", i), struct.pack("<I", fd))

        def delete(i):
            hpa.delete(struct.pack("<I", i))

        def load_user(t):
            kept.append(hostbpf.prog_load(_host_patch(chain_link(0), {PA_FD: hpa.fd}), t))
        try:
            host = _owner_steps(first_stores, store, load_user, load_plain, delete)
        finally:
            for i in range(4):
                try:
                    delete(i)
                except OSError:
                    pass
            for p in kept:
                p.close()
    assert _user_owner_steps(first_stores) == host


# ---- tail calls from subprograms in the live kernel: they need BTF func_info --

def _host_load_with_subprogs(insns, prog_type=ProgType.SOCKET_FILTER):
    """PROG_LOAD with a func_info entry per subprogram (``call pc+off`` targets)."""
    return hostbpf.prog_load_with_funcs(insns, prog_type)


@pytest.mark.kernel
@pytest.mark.skipif(not hostbpf.available(),
                    reason="live bpf() not permitted" if not hostbpf.available() else "")
@pytest.mark.parametrize("target_kind", ["ret", "looping", "empty"])
def test_subprogram_tail_call_matches_the_kernel(pa, target_kind):
    target_code = {"ret": ret(42), "looping": counting(0), "empty": None}[target_kind]
    counter = Map(MapType.ARRAY, 4, 8, 1, kernel=pa.kernel)
    with hostbpf.map_create(MapType.PROG_ARRAY, 4, 4, 4) as hpa, \
            hostbpf.map_create(MapType.ARRAY, 4, 8, 1) as hcounter:
        fds = {PA_FD: hpa.fd, COUNTER_FD: hcounter.fd}
        kept = []
        try:
            if target_code is not None:
                kept.append(hostbpf.prog_load(_host_patch(target_code, fds),
                                              ProgType.SOCKET_FILTER))
                hpa.update(struct.pack("<I", 0), struct.pack("<I", kept[-1].fd))
            kept.append(_host_load_with_subprogs(_host_patch(SUBPROG_TAIL_CALL, fds)))
            host = kept[-1].test_run(PACKET).retval
            host_count = hcounter.lookup(bytes(4))
        finally:
            try:
                hpa.delete(struct.pack("<I", 0))
            except OSError:
                pass
            for p in kept:
                p.close()
    if target_code is not None:
        pa[0] = load(target_code, pa, counter).fd
    assert load(SUBPROG_TAIL_CALL, pa).program.run(bytearray(PACKET)) == host
    assert counter[0] == host_count
    assert host == {"ret": 1042, "looping": 1007, "empty": 1005}[target_kind]


def test_a_tail_call_in_a_callback_is_refused(pa):
    """The kernel's verifier never lets one through: a callback has no ctx
    to pass (bpf_loop's callback_ctx must point to the stack; with r6 = ctx
    it refuses "R6 !read_ok"). userbpf runs unverified code: it stops."""
    target = load(ret(5), pa)
    pa[0] = target.fd
    ld_func = isa.BPF_LD_IMM64(2, 0)
    code = [isa.BPF_MOV64_REG(6, 1), isa.BPF_MOV64_IMM(1, 1),
            ld_func[0]._replace(src=Pseudo.FUNC, imm=6), ld_func[1],
            isa.BPF_MOV64_IMM(3, 0), isa.BPF_MOV64_IMM(4, 0), isa.BPF_EMIT_CALL(181),
            *ret(3),
            *tail_call(0), *ret(0)]                 # the callback, at slot 9
    with pytest.raises(HelperError, match="in a callback") as e:
        load(code, pa).program.run(bytearray(PACKET))
    assert e.value.pc == 13


def test_slots_swapped_while_other_threads_tail_call(pa):
    """Targets replaced and deleted (their fds closed) under running threads:
    every run ends in a target or the fall-through, and nothing is freed
    under a run (bounded; programs run without the GIL)."""
    import threading
    entry = load(chain_link(0), pa)
    stop = threading.Event()
    seen = set()
    errors = []

    def runner():
        try:
            while not stop.is_set():
                seen.add(entry.program.run(bytearray(PACKET)))
        except BaseException as e:       # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            with load(ret(i % 5), pa) as target:
                pa[0] = target.fd
            if i % 3 == 0:
                del pa[0]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert seen and seen <= {0, 1, 2, 3, 4, 100}
