"""The simulated kernel: fds, object ids, bpffs pins and the bpf() entry."""
from .kernel import Kernel, bpf, default_kernel

__all__ = ["Kernel", "bpf", "default_kernel"]
