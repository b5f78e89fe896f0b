"""Shared test fixtures: where the outside corpora live.

Corpora are read from ../shared (beside the repository) and never copied in;
tests that need them skip cleanly when the folder is absent.
"""
from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("USERBPF_SHARED", REPO.parent / "shared"))
CONFORMANCE_DIR = SHARED / "conformance" / "bpf_conformance"
CONFORMANCE_JSON = SHARED / "conformance" / "bpf_conformance.assembled.json"
BENCH_DIR = SHARED / "bench"


def conformance_files() -> list:
    """The corpus .data files, sorted; empty when ../shared is absent."""
    return sorted(CONFORMANCE_DIR.glob("*.data")) if CONFORMANCE_DIR.is_dir() else []


def need(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared corpora live beside the repository)")
    return path


@pytest.fixture(scope="session")
def host():
    """The live kernel's bpf() (userbpf.hostbpf) as an oracle; skips where not permitted."""
    from userbpf import hostbpf
    if not hostbpf.available():
        pytest.skip(f"live bpf() not permitted here: {hostbpf.why_unavailable()}")
    return hostbpf
