"""Helpers written in C, registered through capsules (userbpf.c_helper)."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

import userbpf
from userbpf import _vm

C_SOURCE = r"""
#include <stdint.h>
struct vm_run;
/* r0 = r1 * r2 + *data */
uint64_t mul_add(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                 struct vm_run *run, void *data) {
    return r1 * r2 + (data ? *(uint64_t *)data : 0);
}
"""


@pytest.fixture(scope="module")
def helper_lib(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build a helper library")
    d = tmp_path_factory.mktemp("chelper")
    (d / "h.c").write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(d / "h.so"), str(d / "h.c")], check=True)
    return ctypes.CDLL(str(d / "h.so"))


def test_a_compiled_c_helper_runs_with_its_data(helper_lib):
    addr = ctypes.cast(helper_lib.mul_add, ctypes.c_void_p).value
    bias = ctypes.c_uint64(5)
    cap = userbpf.c_helper(addr, ctypes.addressof(bias))
    prog = userbpf.Program("r1 = 6\nr2 = 7\ncall 4242\nexit", helpers={4242: cap})
    assert prog.run() == 47
    bias.value = 100
    assert prog.run() == 142


def test_builtin_c_helpers_are_capsules_usable_under_any_id():
    assert _vm.is_c_helper(_vm.C_HELPERS[8])
    prog = userbpf.Program("call 77\nexit", helpers={77: _vm.C_HELPERS[8]})
    assert prog.run(cpu=3) == 3


def test_c_helper_refuses_null_and_tables_refuse_non_callables():
    with pytest.raises(ValueError, match="non-NULL"):
        userbpf.c_helper(0)
    with pytest.raises(TypeError, match="expected a callable or a C helper capsule"):
        userbpf.Program("call 9\nexit", helpers={9: 12345})
