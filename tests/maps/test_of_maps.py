"""Maps of maps from programs: a lookup in the outer map gives the inner map
itself, which the program then passes to the map helpers; the inner maps'
values are program memory, the outer map's table of pointers is not."""
from __future__ import annotations

import errno

import pytest

from userbpf import HelperError, Kernel, Map, MapType, MemoryAccessError, Program, asm, isa

NOT_FOUND = 0xdead

# r0 = *(u64 *)inner[ikey] where inner = outer[okey]; NOT_FOUND on a miss;
# with store=True it first adds 0x100 to that value
PROGRAM = """
    *(u32 *)(r10 - 4) = {okey}
    r1 = map[fd:{outer}] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto miss
    r1 = r0
    *(u32 *)(r10 - 8) = {ikey}
    r2 = r10
    r2 += -8
    call bpf_map_lookup_elem
    if r0 == 0 goto miss
    r1 = {add}
    lock *(u64 *)(r0 + 0) += r1
    r0 = *(u64 *)(r0 + 0)
    exit
miss:
    r0 = {miss}
    exit
"""


def program(outer: Map, okey: int, ikey: int, add: int = 0) -> Program:
    return Program(PROGRAM.format(outer=outer.fd, okey=okey, ikey=ikey, add=add,
                                  miss=NOT_FOUND), maps={outer.fd: outer})


@pytest.fixture(params=[MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=lambda t: t.name)
def setup(request):
    k = Kernel(ncpus=2)
    inner_type = MapType.ARRAY if request.param == MapType.ARRAY_OF_MAPS else MapType.HASH
    inners = [Map(inner_type, 4, 8, 4, kernel=k, value_type=int) for _ in range(2)]
    for n, m in enumerate(inners):
        for i in range(4):
            m[i] = 100 * (n + 1) + i
    outer = Map(request.param, 4, 4, 4, kernel=k, inner_map=inners[0], value_type=int)
    outer[0] = inners[0].fd
    outer[1] = inners[1].fd
    return k, outer, inners


def test_lookup_through_the_outer_map(setup):
    k, outer, inners = setup
    assert program(outer, 1, 2).run() == 202
    assert program(outer, 0, 3).run() == 103
    assert program(outer, 2, 0).run() == NOT_FOUND          # empty slot: NULL
    assert program(outer, 1, 9).run() == NOT_FOUND          # miss in the inner map


def test_programs_write_inner_values(setup):
    k, outer, inners = setup
    p = program(outer, 1, 2, add=0x100)
    assert p.run() == 202 + 0x100
    assert inners[1][2] == 202 + 0x100 and inners[0][2] == 102


def test_slot_changes_are_seen_by_the_next_run(setup):
    k, outer, inners = setup
    p = program(outer, 0, 1)
    assert p.run() == 101
    outer[0] = inners[1].fd
    assert p.run() == 201
    del outer[0]
    assert p.run() == NOT_FOUND


def test_inner_map_closed_by_user_space_stays_alive_while_stored(setup):
    k, outer, inners = setup
    inners[1].close()
    assert program(outer, 1, 3).run() == 203


def test_programs_cannot_change_maps_of_maps(setup):
    k, outer, inners = setup
    code = f"""
        *(u32 *)(r10 - 4) = 0
        *(u32 *)(r10 - 8) = 0
        r1 = map[fd:{outer.fd}] ll
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -8
        r4 = 0
        call bpf_map_{{}}_elem
        exit
    """
    einval = (-errno.EINVAL) & (2 ** 64 - 1)
    assert Program(code.format("update"), maps={outer.fd: outer}).run() == einval
    assert Program(code.format("delete"), maps={outer.fd: outer}).run() == einval
    assert outer[0] == inners[0].id


def test_the_outer_table_and_the_inner_map_struct_are_not_program_memory(setup):
    k, outer, inners = setup
    code = f"""
        *(u32 *)(r10 - 4) = 0
        r1 = map[fd:{outer.fd}] ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        r0 = *(u64 *)(r0 + 0)
        exit
    """
    with pytest.raises(MemoryAccessError):      # r0 is the inner map, not a value
        Program(code, maps={outer.fd: outer}).run()


def test_a_removed_inner_map_is_no_longer_a_map_argument(setup):
    k, outer, inners = setup
    address = inners[1].core.address
    del outer[1]
    code = f"""
        *(u32 *)(r10 - 4) = 0
        r1 = {address} ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        exit
    """
    with pytest.raises(HelperError, match="not a map this program references"):
        Program(code, maps={outer.fd: outer}).run()


@pytest.mark.kernel
@pytest.mark.parametrize("outer_type", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS],
                         ids=lambda t: t.name)
def test_same_program_same_inner_contents_as_the_kernel(host, outer_type):
    inner_type = MapType.ARRAY if outer_type == MapType.ARRAY_OF_MAPS else MapType.HASH
    k = Kernel(ncpus=host.possible_cpus())
    ours = [Map(inner_type, 4, 8, 4, kernel=k, value_type=int) for _ in range(2)]
    theirs = [host.map_create(inner_type, 4, 8, 4) for _ in range(2)]
    try:
        for n in range(2):
            for i in range(4):
                ours[n][i] = 100 * (n + 1) + i
                theirs[n].update(i.to_bytes(4, "little"), (100 * (n + 1) + i).to_bytes(8, "little"))
        outer = Map(outer_type, 4, 4, 4, kernel=k, inner_map=ours[0])
        houter = host.map_create(outer_type, 4, 4, 4, inner_map_fd=theirs[0].fd)
        for slot in range(2):
            outer[slot] = ours[slot].fd
            houter.update(slot.to_bytes(4, "little"), theirs[slot].fd.to_bytes(4, "little"))
        for okey, ikey in [(1, 2), (0, 3), (3, 1), (1, 7)]:
            text = PROGRAM.format(outer=outer.fd, okey=okey, ikey=ikey, add=0x100,
                                  miss=NOT_FOUND)
            r0 = Program(text, maps={outer.fd: outer}).run()
            code = isa.encode(asm.assemble(text.replace(f"map[fd:{outer.fd}]",
                                                        f"map[fd:{houter.fd}]")))
            with host.prog_load(code, 6) as p:
                kr0 = p.test_run(bytes(64))[0]
            assert r0 & 0xffffffff == kr0
        for n in range(2):
            assert [ours[n][i] for i in range(4)] == [
                int.from_bytes(theirs[n].lookup(i.to_bytes(4, "little")), "little")
                for i in range(4)]
        houter.close()
    finally:
        for m in theirs:
            m.close()
