"""The bpf_conformance corpus, run through the plugin code path.

Every ``.data`` file of ../shared/conformance/bpf_conformance is a case. The
program is the suite's own assembler output (bpf_conformance.assembled.json)
where it has one, else ours (only callx.data); it is fed to
:func:`userbpf.conformance.plugin_main` exactly as the upstream runner feeds
the plugin: hex program on stdin, hex memory as argv[1], r0 in hex on stdout.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from conftest import CONFORMANCE_JSON, conformance_files, need
from userbpf import conformance, datafile, isa

FILES = conformance_files()
# Tests that need a feature userbpf does not have yet, with the reason.
NEEDS_LATER_FEATURE: dict = {}


def _assembled() -> dict:
    if not CONFORMANCE_JSON.exists():
        return {}
    return {c["name"]: c for c in json.loads(CONFORMANCE_JSON.read_text())}


ASSEMBLED = _assembled()


def _spaced(hexstr: str) -> str:
    return " ".join(hexstr[i:i + 2] for i in range(0, len(hexstr), 2))


def _case(path):
    """(program hex, memory hex, expected r0 or None, expected error or None)."""
    data = datafile.load(path)
    if path.name in ASSEMBLED:
        code = ASSEMBLED[path.name]["code"]
    else:
        from userbpf import asm
        code = isa.encode(asm.assemble(data.asm)).hex()
    return _spaced(code), data.mem.hex(" "), data.result, data.error


def _plugin(code_hex: str, mem_hex: str):
    out, err = io.StringIO(), io.StringIO()
    argv = [mem_hex] if mem_hex else []
    status = conformance.plugin_main(argv, io.StringIO(code_hex), out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", FILES or [None], ids=lambda p: p.name if p else "absent")
def test_corpus_file(path):
    if path is None:
        need(CONFORMANCE_JSON.parent / "bpf_conformance")
    if path.name in NEEDS_LATER_FEATURE:
        pytest.skip(NEEDS_LATER_FEATURE[path.name])
    code, mem, result, error = _case(path)
    status, out, err = _plugin(code, mem)
    if error:
        assert status != 0 and err.strip() == error.strip()
    else:
        assert (status, err) == (0, "")
        assert int(out, 16) == result & 0xffffffffffffffff, out


def test_corpus_is_complete():
    need(CONFORMANCE_JSON)
    assert len(FILES) == 313 and len(ASSEMBLED) == 312
    assert set(ASSEMBLED) | {"callx.data"} == {p.name for p in FILES}


def test_plugin_reports_errors_on_stderr():
    status, out, err = _plugin("b7 00 00 00 01 00 00 00", "")   # no exit
    assert status == 1 and out == ""
    assert "fell off the end of the program" in err
    status, out, err = _plugin("ff 00 00 00 00 00 00 00 95 00 00 00 00 00 00 00", "")
    assert status == 1 and "insn 0: unknown opcode ff" in err


def test_plugin_ignores_runner_options_and_refuses_elf_clearly():
    out, err = io.StringIO(), io.StringIO()
    prog = "b7 00 00 00 07 00 00 00 95 00 00 00 00 00 00 00"
    assert conformance.plugin_main(["--some-runner-option"], io.StringIO(prog), out, err) == 0
    assert out.getvalue() == "7\n"
    out, err = io.StringIO(), io.StringIO()
    assert conformance.plugin_main(["--elf"], io.StringIO("7f 45 4c 46"), out, err) == 1
    assert "ELF loader" in err.getvalue()


@pytest.mark.parametrize("name", ["ldxb.data", "lock_cmpxchg.data", "call_unwind_fail.data"])
def test_installed_command_speaks_the_protocol(name):
    """The real ``userbpf conformance-plugin`` process, as the runner starts it."""
    path = need(CONFORMANCE_JSON.parent / "bpf_conformance" / name)
    code, mem, result, _ = _case(path)
    argv = [sys.executable, "-m", "userbpf.cli", "conformance-plugin"] + ([mem] if mem else [])
    proc = subprocess.run(argv, input=code, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert int(proc.stdout, 16) == result
