"""userbpf.contexts against the live kernel's verifier.

For each program type (and each expected_attach_type that changes its
rules), every ctx offset 0 .. sizeof+8 at sizes 1/2/4/8 is loaded
(``r0 = *(uN *)(r1 + off)``) and stored (``*(uN *)(r1 + off) = r2``) by the
real kernel, and its accept/reject must match check_ctx_access.  A rejection
only counts as a ctx rejection when the log says so; anything else fails the
test (it would mean the probe program is wrong, not the table).

Types the kernel cannot load without BTF (TRACING, LSM, STRUCT_OPS, EXT) and
types not configured in this kernel (LIRC_MODE2) are not compared.

The full grid is marked slow; an unmarked test runs a seeded sample of it.
"""
from __future__ import annotations

import errno
import random
from typing import List, Optional, Tuple

import pytest

from userbpf import isa
from userbpf.contexts import CtxAccessError, check_ctx_access, ctx_struct, LOAD_ATTACH_TYPES
from userbpf.uapi import AttachType, ProgType

pytestmark = pytest.mark.kernel

SIZE_CODE = {1: isa.Size.B, 2: isa.Size.H, 4: isa.Size.W, 8: isa.Size.DW}
CTX_REJECT = "invalid bpf_context access"


def probe_code(off: int, size: int, write: bool) -> list:
    """The one-access program: a load into r0 or a store of r2 = 0."""
    if write:
        body = [isa.BPF_MOV64_IMM(2, 0), isa.BPF_STX_MEM(SIZE_CODE[size], 1, 2, off)]
    else:
        body = [isa.BPF_LDX_MEM(SIZE_CODE[size], 0, 1, off)]
    # r0 = 1 is in range for every checked return (cgroup [0,1], recvmsg [1,1] ...)
    return body + [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()]


def kernel_verdict(host, prog_type: int, eat: int, off: int, size: int,
                   write: bool) -> Tuple[bool, str]:
    """(accepted, log) from the live kernel."""
    try:
        p = host.prog_load(probe_code(off, size, write), prog_type, expected_attach_type=eat)
    except host.HostError as e:
        return False, f"errno={e.errno} " + e.log
    p.close()
    return True, ""


def model_verdict(prog_type: int, eat: int, off: int, size: int, write: bool) -> Tuple[bool, str]:
    try:
        check_ctx_access(prog_type, eat, off, size, write)
    except CtxAccessError as e:
        return False, str(e)
    return True, ""


def grid(prog_type: int, eat: int) -> List[Tuple[int, int, bool]]:
    top = ctx_struct(prog_type, eat).size + 8
    return [(off, size, w) for w in (False, True) for size in (1, 2, 4, 8)
            for off in range(0, top + 1)]


def compare(host, prog_type: int, eat: int, cells) -> List[str]:
    """Mismatches between kernel and model over ``cells``, as readable lines."""
    bad = []
    for off, size, write in cells:
        k_ok, log = kernel_verdict(host, prog_type, eat, off, size, write)
        m_ok, msg = model_verdict(prog_type, eat, off, size, write)
        what = f"{ProgType(prog_type).name}/{eat} {'st' if write else 'ld'} off={off} size={size}"
        if not k_ok and msg not in log:
            bad.append(f"{what}: kernel rejects with {log.strip().splitlines()[-3:]!r}, "
                       f"model {'accepts' if m_ok else 'says ' + msg!r}")
        elif k_ok != m_ok:
            bad.append(f"{what}: kernel {'accepts' if k_ok else 'rejects'}, model "
                       f"{'accepts' if m_ok else 'rejects'}")
    return bad


def variants():
    out = []
    for pt, eats in LOAD_ATTACH_TYPES.items():
        for eat in eats:
            out.append(pytest.param(int(pt), int(eat), id=f"{ProgType(pt).name}-{int(eat)}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("prog_type,eat", variants())
def test_full_grid_matches_kernel(host, prog_type, eat):
    bad = compare(host, prog_type, eat, grid(prog_type, eat))
    assert not bad, "\n".join(bad[:40])


@pytest.mark.parametrize("prog_type,eat", variants())
def test_sampled_grid_matches_kernel(host, prog_type, eat):
    cells = grid(prog_type, eat)
    rng = random.Random(prog_type * 1000 + eat)
    bad = compare(host, prog_type, eat, rng.sample(cells, min(len(cells), 60)))
    assert not bad, "\n".join(bad[:40])
