"""The userbpf command: asm, disasm, run, demo."""
from __future__ import annotations

import subprocess
import sys

import pytest

from userbpf import cli, isa


def run_cli(*args, stdin=None):
    proc = subprocess.run([sys.executable, "-m", "userbpf.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_run_prints_r0_from_assembler_text(tmp_path):
    src = tmp_path / "p.s"
    src.write_text("r0 = *(u8 *)(r1 + 2)\nr0 += r2\nexit\n")
    assert run_cli("run", str(src), "--mem", "01 02 03") == (0, "6\n", "")
    assert run_cli("run", str(src), "--mem", "01 02 ff", "--hex")[1] == "0x102\n"


def test_run_raw_file_and_memory_file(tmp_path):
    prog = tmp_path / "p.bin"
    prog.write_bytes(isa.encode([isa.BPF_MOV64_REG(0, 2), isa.BPF_EXIT_INSN()]))
    mem = tmp_path / "m"
    mem.write_bytes(bytes(37))
    assert run_cli("run", str(prog), "--mem-file", str(mem)) == (0, "37\n", "")


def test_run_reports_errors_with_exit_status_1(tmp_path):
    src = tmp_path / "p.s"
    src.write_text("r0 = *(u64 *)(r1 + 0)\nexit\n")
    code, out, err = run_cli("run", str(src))
    assert code == 1 and out == ""
    assert err.startswith("userbpf: pc 0") and "invalid read of 8 bytes at 0x0" in err


def test_asm_then_disasm_round_trip(tmp_path):
    src = tmp_path / "p.s"
    src.write_text("mov %r0, 7\nexit\n")
    out = tmp_path / "p.bin"
    assert run_cli("asm", str(src), "-o", str(out))[0] == 0
    assert out.read_bytes() == bytes.fromhex("b700000007000000" "9500000000000000")
    code, text, _ = run_cli("disasm", str(out))
    assert code == 0 and text.split("\n")[:2] == ["r0 = 7", "exit"]
    assert run_cli("asm", "-", stdin="r0 = 7\nexit\n")[1] == "b7 00 00 00 07 00 00 00 95 00 00 00 00 00 00 00\n"


def test_demo_runs_every_example_and_checks_it():
    code, out, err = run_cli("demo", "--repeat", "100")
    assert code == 0, err
    assert out.count("\n") > len(cli.DEMO)
    assert "all results match" in out and "MISMATCH" not in out
    assert out.count("-> XDP_DROP") == 3 and out.count("-> XDP_PASS") == 3   # xdp_firewall.s


@pytest.mark.parametrize("name, mem, expected", [(n, m, e) for n, _, m, e in cli.DEMO])
def test_demo_examples_compute_the_python_reference(name, mem, expected):
    from importlib import resources
    from userbpf import Program
    prog = Program((resources.files("userbpf") / "examples" / name).read_text())
    assert prog.run(bytearray(mem)) == expected
