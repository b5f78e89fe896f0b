"""Reader for the bpf_conformance ``.data`` test format.

A file is a list of sections, each introduced by a line ``-- NAME``;
lines starting with ``#`` are comments anywhere (except in the ``-- c``
section, whose C source keeps its ``#include`` lines)::

    # comment
    -- asm
    mov %r0, 1      # trailing comments are the assembler's business
    exit
    -- mem
    00 01 02 03
    -- result
    0x1

===========================  =====================================================
section                      field of :class:`DataFile`
===========================  =====================================================
``-- asm``                   ``asm``: the program text, as written (str)
``-- mem``                   ``mem``: hex bytes, whitespace separated (bytes; b"" when absent)
``-- result``                ``result``: expected r0, hex with or without ``0x`` (int)
``-- error``                 ``error``: the error text the runtime must report (str)
``-- raw``                   ``raw``: one 64-bit instruction per line, low byte = opcode (bytes)
``-- c``                     ``c``: the C source (information only)
``-- no register offset``    ``notes``: the feature named on the next line
===========================  =====================================================

    >>> d = parse("-- asm\\nmov %r0, 1\\nexit\\n-- mem\\naa bb\\n-- result\\n0x1\\n")
    >>> d.mem.hex(" "), d.result, d.error
    ('aa bb', 1, None)

Malformed input raises :class:`userbpf.errors.EncodingError` (a ValueError)
naming the file and line.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Tuple, Union

from .errors import EncodingError

__all__ = ["DataFile", "parse", "load"]

# Sections whose lines may carry "# ..." comments; "c" is kept verbatim.
SECTIONS = ("asm", "mem", "result", "error", "raw", "c", "no register offset")


class DataFile(NamedTuple):
    """One parsed conformance test."""
    name: str
    asm: str
    mem: bytes = b""
    result: Optional[int] = None
    error: Optional[str] = None
    raw: Optional[bytes] = None
    c: Optional[str] = None
    notes: Tuple[str, ...] = ()


class _Section(NamedTuple):
    line: int                       # line number of the "-- NAME" header
    body: Tuple[Tuple[int, str], ...]   # (line number, text)


def _fail(name: str, line: int, msg: str) -> EncodingError:
    return EncodingError(f"{name or '<data>'}:{line}: {msg}")


def _split(text: str, name: str) -> dict:
    sections: dict = {}
    current: Optional[str] = None
    body: list = []
    header = 0

    def close():
        if current is not None:
            sections[current] = _Section(header, tuple(body))

    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("-- "):
            close()
            current, body, header = line[3:].strip(), [], lineno
            if current not in SECTIONS:
                raise _fail(name, lineno, f"unknown section {current!r} "
                                          f"(known: {', '.join(SECTIONS)})")
            if current in sections:
                raise _fail(name, lineno, f"section {current!r} appears twice "
                                          f"(first on line {sections[current].line})")
            continue
        if current == "c":
            body.append((lineno, line))
            continue
        if line.lstrip().startswith("#"):
            continue
        if current is None:
            if line.strip():
                raise _fail(name, lineno, "text before the first '-- SECTION' line")
            continue
        body.append((lineno, line))
    close()
    return sections


def _strip(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _mem(sec: _Section, name: str) -> bytes:
    out = bytearray()
    for lineno, line in sec.body:
        for tok in _strip(line).split():
            if len(tok) != 2:
                raise _fail(name, lineno, f"expected a hex byte like 'a0', found {tok!r}")
            try:
                out.append(int(tok, 16))
            except ValueError:
                raise _fail(name, lineno, f"expected a hex byte like 'a0', found {tok!r}") from None
    return bytes(out)


def _single(sec: _Section, name: str, what: str) -> Tuple[int, str]:
    lines = [(n, _strip(t)) for n, t in sec.body if _strip(t)]
    if len(lines) != 1:
        raise _fail(name, sec.line, f"the {what} section must hold exactly one line, "
                                    f"found {len(lines)}")
    return lines[0]


def _result(sec: _Section, name: str) -> int:
    lineno, tok = _single(sec, name, "result")
    try:
        value = int(tok, 16)       # hex, with or without 0x
    except ValueError:
        raise _fail(name, lineno, f"expected a hex result like 0x3, found {tok!r}") from None
    if not -(1 << 63) <= value < 1 << 64:
        raise _fail(name, lineno, f"result {tok} does not fit in 64 bits")
    return value


def _raw(sec: _Section, name: str) -> bytes:
    out = bytearray()
    for lineno, line in sec.body:
        tok = _strip(line)
        if not tok:
            continue
        try:
            value = int(tok, 16)
        except ValueError:
            value = -1
        if not 0 <= value < 1 << 64:
            raise _fail(name, lineno, f"expected a 64-bit instruction in hex like "
                                      f"0x0000000000000095, found {tok!r}")
        # The low byte is the opcode as it lies in memory: little-endian.
        out += value.to_bytes(8, "little")
    return bytes(out)


def parse(text: str, name: str = "") -> DataFile:
    """Parse the text of a ``.data`` file (``name`` appears in error messages).

    >>> parse("-- asm\\nexit\\n-- raw\\n0x0000000000000095\\n-- result\\n0\\n").raw.hex()
    '9500000000000000'
    """
    secs = _split(text, name)
    if "asm" not in secs:
        raise _fail(name, 1, "no '-- asm' section")
    if "result" in secs and "error" in secs:
        raise _fail(name, secs["error"].line, "a test has a result or an error, not both")
    asm = "\n".join(line for _, line in secs["asm"].body).strip("\n")
    error = None
    if "error" in secs:
        error = "\n".join(line for _, line in secs["error"].body).strip()
        if not error:
            raise _fail(name, secs["error"].line, "empty error section")
    notes = ()
    if "no register offset" in secs:
        notes = tuple(t.strip() for _, t in secs["no register offset"].body if t.strip())
    return DataFile(
        name=name,
        asm=asm,
        mem=_mem(secs["mem"], name) if "mem" in secs else b"",
        result=_result(secs["result"], name) if "result" in secs else None,
        error=error,
        raw=_raw(secs["raw"], name) if "raw" in secs else None,
        c="\n".join(line for _, line in secs["c"].body) if "c" in secs else None,
        notes=notes,
    )


def load(path: Union[str, "os.PathLike[str]"]) -> DataFile:
    """Read and parse one ``.data`` file; ``name`` is its file name."""
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), os.path.basename(os.fspath(path)))
