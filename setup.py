"""Build the Cython extensions. Metadata lives in pyproject.toml.

USERBPF_DEBUG=1 builds with -O0 -g, Cython bounds checks on and the
USERBPF_DEBUG macro set (extra internal assertions in the interpreter).
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("USERBPF_DEBUG", "") not in ("", "0")

cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
cflags += ["-fno-strict-aliasing", "-Wno-unused-function"]
directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}


def ext(name):
    return Extension(
        f"userbpf.{name}",
        [f"src/userbpf/{name}.pyx"],
        include_dirs=["include", "src/userbpf"],
        define_macros=[("USERBPF_DEBUG", "1" if DEBUG else "0")],
        extra_compile_args=cflags,
    )


setup(ext_modules=cythonize([ext("_vm"), ext("_maps")], compiler_directives=directives,
                            include_path=["src"]))
