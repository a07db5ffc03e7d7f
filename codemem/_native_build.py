"""cffi out-of-line API-mode build of csrc/ into ``codemem._native``.

Run by setuptools through ``cffi_modules`` (see setup.py) at install time, so
``pip install .`` on a machine with gcc produces the compiled extension.
"""
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "codemem_rt.h").read_text())
# The two host callbacks are Python functions (codemem/native.py defines them
# with @ffi.def_extern); cffi generates the C entry points.
ffibuilder.cdef(
    """
    extern "Python" void cm_py_event(uint64_t, uint64_t, cm_regfile *, uint64_t);
    extern "Python" uint64_t cm_py_host_call(uint64_t, uint64_t *);
    """
)
ffibuilder.set_source(
    "codemem._native",
    '#include <stdint.h>\n#include "codemem_rt.h"\n',
    sources=[str((CSRC / "codemem_rt.c").relative_to(ROOT))],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
