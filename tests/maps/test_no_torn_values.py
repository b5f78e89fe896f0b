"""Values are never seen half-written: programs in several threads (the GIL
released) update 64-byte values while bpf()-side lookups read them; every
value read is one that some update wrote whole."""
from __future__ import annotations

import threading

import pytest

from userbpf import Program
from userbpf._maps import MapCore

HASH, ARRAY, LRU_HASH, PERCPU_HASH = 1, 2, 9, 5
VALUE = 64


def writer(fd: int, byte: int) -> str:
    """Fill a 64-byte stack buffer with `byte` and update key 1 with it."""
    stores = "\n".join(f"*(u64 *)(r10 - {8 * i}) = r6" for i in range(1, 9))
    return f"""
        r6 = {byte * 0x0101010101010101 & (2**64 - 1)} ll
        {stores}
        *(u32 *)(r10 - 72) = 1
        r1 = map[fd:{fd}] ll
        r2 = r10
        r2 += -72
        r3 = r10
        r3 += -64
        r4 = 0
        call bpf_map_update_elem
        exit
    """


@pytest.mark.parametrize("map_type", [HASH, ARRAY, LRU_HASH], ids=["HASH", "ARRAY", "LRU_HASH"])
def test_bpf_lookups_never_see_a_torn_value(map_type):
    m = MapCore(map_type, 4, VALUE, 4, 0, 2)
    key = (1).to_bytes(4, "little")
    m.update(key, bytes([1]) * VALUE)
    progs = [Program(writer(3, b), maps={3: m}) for b in (0x11, 0x22, 0x33)]
    stop = threading.Event()
    errors = []

    def run(p, cpu):
        try:
            while not stop.is_set():
                p.run_batch(None, 2000, cpu=cpu)
        except Exception as e:          # a writer that failed would make the test vacuous
            errors.append(f"writer: {e!r}")

    threads = [threading.Thread(target=run, args=(p, i % 2)) for i, p in enumerate(progs)]
    for t in threads:
        t.start()
    seen = set()
    try:
        for _ in range(20000):
            v = m.lookup(key)
            seen.add(v[0])
            if v != bytes([v[0]]) * VALUE:
                errors.append(v.hex())
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, f"torn value read: {errors[0]}"
    assert seen & {0x11, 0x22, 0x33}, "the writers never wrote while lookups ran"
