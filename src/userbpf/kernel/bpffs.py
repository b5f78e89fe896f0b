"""A virtual bpffs mounted at /sys/fs/bpf: pins and directories.

Pinning takes a reference on the object; unlinking the pin drops it. Paths
outside the mount fail with EPERM, a missing parent directory with ENOENT,
a taken path with EEXIST, and opening something that is not a pinned object
with EACCES — the kernel's answers.
"""
from __future__ import annotations

import errno
import posixpath
from typing import Dict, List, Set

from .errors import bpf_error
from .objects import BpfObject

MOUNT = "/sys/fs/bpf"


class BpfFs:
    def __init__(self):
        self.dirs: Set[str] = {MOUNT}
        self.pins: Dict[str, BpfObject] = {}

    @staticmethod
    def _path(path) -> str:
        if isinstance(path, bytes):
            path = path.decode()
        if not isinstance(path, str) or not path:
            raise bpf_error(errno.EINVAL, "pathname must be a non-empty string")
        path = posixpath.normpath(path)
        if path != MOUNT and not path.startswith(MOUNT + "/"):
            raise bpf_error(errno.EPERM, f"{path} is not on a bpf filesystem ({MOUNT})")
        return path

    def _exists(self, path: str) -> bool:
        return path in self.dirs or path in self.pins

    def _new_entry(self, path: str) -> str:
        path = self._path(path)
        if self._exists(path):
            raise bpf_error(errno.EEXIST, f"{path} exists")
        if posixpath.dirname(path) not in self.dirs:
            raise bpf_error(errno.ENOENT, f"{posixpath.dirname(path)} is not a directory")
        return path

    def pin(self, path, obj: BpfObject) -> None:
        path = self._new_entry(path)
        self.pins[path] = obj.get()

    def lookup(self, path) -> BpfObject:
        path = self._path(path)
        if path in self.pins:
            return self.pins[path]
        if path in self.dirs:
            raise bpf_error(errno.EACCES, f"{path} is a directory, not a pinned object")
        raise bpf_error(errno.ENOENT, f"nothing is pinned at {path}")

    def mkdir(self, path) -> None:
        self.dirs.add(self._new_entry(path))

    def unlink(self, path) -> None:
        path = self._path(path)
        if path in self.pins:
            self.pins.pop(path).put()
        elif path in self.dirs:
            raise bpf_error(errno.EISDIR, f"{path} is a directory")
        else:
            raise bpf_error(errno.ENOENT, f"nothing is pinned at {path}")

    def rmdir(self, path) -> None:
        path = self._path(path)
        if path in self.pins:
            raise bpf_error(errno.ENOTDIR, f"{path} is a pinned object, not a directory")
        if path not in self.dirs or path == MOUNT:
            raise bpf_error(errno.ENOENT if path not in self.dirs else errno.EBUSY, path)
        if any(posixpath.dirname(p) == path for p in list(self.pins) + list(self.dirs)):
            raise bpf_error(errno.ENOTEMPTY, f"{path} is not empty")
        self.dirs.remove(path)

    def listdir(self, path=MOUNT) -> List[str]:
        path = self._path(path)
        if path not in self.dirs:
            raise bpf_error(errno.ENOTDIR if path in self.pins else errno.ENOENT, path)
        return sorted(posixpath.basename(p) for p in list(self.pins) + list(self.dirs)
                      if p != path and posixpath.dirname(p) == path)
