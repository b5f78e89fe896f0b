"""How the simulated kernel fails: OSError with the kernel's errno.

``OSError(errno, msg)`` builds the matching builtin subclass
(``FileNotFoundError`` for ENOENT, ``FileExistsError`` for EEXIST,
``PermissionError`` for EPERM...), so callers can catch either.
"""
from __future__ import annotations

import errno as _errno
import os

# Linux-internal codes the kernel returns to user space with no libc name.
ENOTSUPP = 524


def bpf_error(code: int, message: str = "") -> OSError:
    """The OSError bpf() raises for ``-code``.

    >>> bpf_error(2, "no such key").errno
    2
    """
    text = os.strerror(code) if code != ENOTSUPP else "Unknown error 524"
    return OSError(code, f"{text}: {message}" if message else text)


__all__ = ["bpf_error", "ENOTSUPP", "_errno"]
