"""The bpf_conformance plugin protocol.

The upstream runner (``bpf_conformance_runner --plugin_path CMD``) starts the
plugin once per test: the program arrives on standard input as hex bytes,
the input memory (if any) as the first argument in the same form, and the
plugin prints r0 in hex. ``userbpf conformance-plugin`` is that plugin; the
test suite drives :func:`plugin_main` the same way, so both take one path.

>>> run_hex("b7 00 00 00 2a 00 00 00 95 00 00 00 00 00 00 00")
42
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional, TextIO

from . import _vm
from .errors import EncodingError, UserBPFError
from .program import Program, default_helpers

# Helper 5 in the corpus: returns r1, and r1 == 0 ends the run (r0 = 0).
CONFORMANCE_HELPERS = {5: _vm.UNWIND_HELPER}

_HEX_SEP = re.compile(r"[\s,]+")


def parse_hex(text: str) -> bytes:
    """``"b7 00 0a"`` or ``"b7000a"`` (optional ``0x`` prefixes) -> bytes."""
    words = [w[2:] if w.lower().startswith("0x") else w for w in _HEX_SEP.split(text.strip()) if w]
    try:
        return bytes.fromhex("".join(words))
    except ValueError as e:
        raise EncodingError(f"not hex bytes: {e}") from None


def run_hex(program_hex: str, memory_hex: str = "", *, elf: bool = False) -> int:
    """Run one test as the plugin does and return r0."""
    code = parse_hex(program_hex)
    if elf:
        raise UserBPFError("--elf input needs the ELF loader, which userbpf does not have yet")
    helpers = default_helpers()
    helpers.update(CONFORMANCE_HELPERS)
    mem = bytearray(parse_hex(memory_hex)) if memory_hex.strip() else None
    return Program(code, helpers=helpers).run(mem)


def plugin_main(argv: Optional[List[str]] = None, stdin: Optional[TextIO] = None,
                stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    """The plugin's entry point: returns the process exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    ap = argparse.ArgumentParser(prog="userbpf conformance-plugin", add_help=True)
    ap.add_argument("memory", nargs="?", default="", help="input memory as hex bytes")
    ap.add_argument("--elf", action="store_true", help="standard input is an ELF object")
    args, _plugin_options = ap.parse_known_args(argv)   # runner options are ignored
    try:
        r0 = run_hex(stdin.read(), args.memory, elf=args.elf)
    except UserBPFError as e:
        stderr.write(f"{e}\n")
        return 1
    stdout.write(f"{r0:x}\n")
    return 0
