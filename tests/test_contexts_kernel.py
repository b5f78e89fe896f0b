"""userbpf.contexts against the live kernel's verifier.

For each program type (and each expected_attach_type that changes its
rules), every ctx offset 0 .. sizeof+8 at sizes 1/2/4/8 is loaded
(``r0 = *(uN *)(r1 + off)``) and stored (``*(uN *)(r1 + off) = r2``) by the
real kernel, and its accept/reject must match check_ctx_access.  A rejection
only counts as a ctx rejection when the log says so; anything else fails the
test (it would mean the probe program is wrong, not the table).

Types the kernel cannot load without BTF (TRACING, LSM, STRUCT_OPS, EXT) and
types not configured in this kernel (LIRC_MODE2) are not compared.

The whole grid (about 44,000 loads) takes about 5 s, so it is not marked slow.
"""
from __future__ import annotations

import errno
from typing import List, Optional, Tuple

import pytest

from userbpf import isa
from userbpf.contexts import CtxAccessError, check_ctx_access, ctx_struct, LOAD_ATTACH_TYPES
from userbpf.uapi import ProgFlag, ProgType

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


# Load flags some types require (SYSCALL programs must be sleepable).
LOAD_FLAGS = {ProgType.SYSCALL: ProgFlag.SLEEPABLE}


def load(host, code, prog_type: int, eat: int):
    return host.prog_load(code, prog_type, expected_attach_type=eat,
                          prog_flags=int(LOAD_FLAGS.get(prog_type, 0)))


def kernel_verdict(host, prog_type: int, eat: int, off: int, size: int,
                   write: bool) -> Tuple[bool, str]:
    """(accepted, log) from the live kernel."""
    try:
        p = load(host, probe_code(off, size, write), prog_type, eat)
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


# Contexts too big to sweep: their start and the region around their end
# (SYSCALL's U16_MAX cannot be reached: an insn offset is an s16 and a ctx
# pointer may not be moved, so its probe stops at the largest s16 offset).
BIG_CTX_OFFSETS = {
    ProgType.TRACEPOINT: [*range(0, 72), *range(8184 - 16, 8192 + 9)],
    ProgType.SYSCALL: [*range(0, 72), *range(32767 - 24, 32768)],
}


def grid(prog_type: int, eat: int) -> List[Tuple[int, int, bool]]:
    """Every (off, size, write) from 0 to sizeof + 8."""
    offs = BIG_CTX_OFFSETS.get(prog_type)
    if offs is None:
        offs = range(0, ctx_struct(prog_type, eat).size + 8 + 1)
    return [(off, size, w) for w in (False, True) for size in (1, 2, 4, 8) for off in offs]


def loadable(host, prog_type: int, eat: int) -> None:
    """Skip when this kernel cannot load the type at all (not configured)."""
    try:
        load(host, [isa.BPF_MOV64_IMM(0, 1), isa.BPF_EXIT_INSN()], prog_type, eat).close()
    except host.HostError as e:
        if e.errno == errno.EINVAL and not e.log:
            pytest.skip(f"{ProgType(prog_type).name} is not configured in this kernel")
        raise


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


# ~44,000 loads, about 5 s in all: the whole grid runs by default.
@pytest.mark.parametrize("prog_type,eat", variants())
def test_grid_matches_kernel(host, prog_type, eat):
    loadable(host, prog_type, eat)
    cells = grid(prog_type, eat)
    bad = compare(host, prog_type, eat, cells)
    assert not bad, f"{len(bad)} of {len(cells)} differ:\n" + "\n".join(bad[:40])
