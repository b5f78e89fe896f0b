"""The bpf_conformance .data reader."""
from __future__ import annotations

import json

import pytest

from conftest import CONFORMANCE_DIR, CONFORMANCE_JSON, conformance_files, need
from userbpf import datafile
from userbpf.errors import EncodingError

FULL = """\
# Copyright line
# SPDX-License-Identifier: MIT
-- asm
mov %r0, 1   # set r0
# a comment inside the section
exit
-- mem
00 01 02 0a  # first row
FF ee
-- raw
0x00000001000000b7
0x0000000000000095
-- result
0x1122334455667788
"""


def test_every_section_is_parsed():
    d = datafile.parse(FULL, "full.data")
    assert d.name == "full.data"
    assert d.asm == "mov %r0, 1   # set r0\nexit"
    assert d.mem == bytes([0, 1, 2, 0x0a, 0xff, 0xee])
    assert d.result == 0x1122334455667788
    assert d.error is None
    # low byte of each line is the opcode byte as it lies in memory
    assert d.raw == bytes.fromhex("b700000001000000" "9500000000000000")


def test_absent_sections_have_defaults():
    d = datafile.parse("-- asm\nexit\n")
    assert (d.mem, d.result, d.error, d.raw, d.c, d.notes) == (b"", None, None, None, None, ())
    assert d.mem.hex(" ") == ""


@pytest.mark.parametrize("text, value", [("0x3", 3), ("0", 0), ("0xFFFFFFFFFFFFFFF6", 2**64 - 10),
                                         ("10", 16), ("0x10000000A", 0x10000000A)])
def test_result_is_hex(text, value):
    assert datafile.parse(f"-- asm\nexit\n-- result\n{text}\n").result == value


def test_error_section_keeps_its_text():
    d = datafile.parse("-- asm\nexit\n-- error\nDivision by zero at PC 3\n")
    assert d.error == "Division by zero at PC 3" and d.result is None


def test_c_section_keeps_preprocessor_lines_and_notes():
    d = datafile.parse("-- c\n#include <stdint.h>\nint x;\n-- asm\nexit\n"
                       "-- no register offset\ncall instruction\n")
    assert d.c == "#include <stdint.h>\nint x;"
    assert d.notes == ("call instruction",)
    assert d.asm == "exit"


@pytest.mark.parametrize("text, message", [
    ("mov %r0, 1\n-- asm\nexit\n", "x.data:1: text before the first '-- SECTION' line"),
    ("-- asm\nexit\n-- bogus\n", "x.data:3: unknown section 'bogus'"),
    ("-- asm\nexit\n-- asm\nexit\n", "x.data:3: section 'asm' appears twice (first on line 1)"),
    ("-- result\n0x1\n", "x.data:1: no '-- asm' section"),
    ("-- asm\nexit\n-- mem\n00 1\n", "x.data:4: expected a hex byte like 'a0', found '1'"),
    ("-- asm\nexit\n-- mem\n00 zz\n", "x.data:4: expected a hex byte like 'a0', found 'zz'"),
    ("-- asm\nexit\n-- result\nbanana\n",
     "x.data:4: expected a hex result like 0x3, found 'banana'"),
    ("-- asm\nexit\n-- result\n0x1\n0x2\n",
     "x.data:3: the result section must hold exactly one line, found 2"),
    ("-- asm\nexit\n-- result\n\n",
     "x.data:3: the result section must hold exactly one line, found 0"),
    ("-- asm\nexit\n-- result\n0x10000000000000000\n",
     "x.data:4: result 0x10000000000000000 does not fit"),
    ("-- asm\nexit\n-- result\n0x1\n-- error\noops\n",
     "x.data:5: a test has a result or an error, not both"),
    ("-- asm\nexit\n-- error\n\n", "x.data:3: empty error section"),
    ("-- asm\nexit\n-- raw\n0x95 0x00\n", "x.data:4: expected a 64-bit instruction in hex"),
])
def test_malformed_files_name_the_line(text, message):
    with pytest.raises(EncodingError) as e:
        datafile.parse(text, "x.data")
    assert str(e.value).startswith(message)
    assert isinstance(e.value, ValueError)


def test_load_names_the_file(tmp_path):
    p = tmp_path / "t.data"
    p.write_text("-- asm\nexit\n-- result\n0x2a\n")
    d = datafile.load(p)
    assert (d.name, d.asm, d.result) == ("t.data", "exit", 42)


def test_corpus_matches_the_suites_own_reading():
    """mem and result of every corpus file agree with the suite's JSON."""
    need(CONFORMANCE_JSON)
    cases = {c["name"]: c for c in json.loads(CONFORMANCE_JSON.read_text())}
    files = conformance_files()
    assert len(files) == 313
    for path in files:
        d = datafile.load(path)
        assert d.asm.strip() and d.error is None
        if path.name in cases:
            c = cases[path.name]
            assert d.mem.hex() == c["mem"], path.name
            assert d.result & (2**64 - 1) == c["result"], path.name


def test_corpus_raw_section():
    d = datafile.load(need(CONFORMANCE_DIR / "lddw.data"))
    assert d.raw.hex() == "1800000088776655" "0000000044332211" "9500000000000000"
    assert d.result == 0x1122334455667788


def test_docstring_examples():
    import doctest
    result = doctest.testmod(datafile)
    assert result.attempted >= 3 and result.failed == 0
