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
ffibuilder.cdef((CSRC / "codemem_compile.h").read_text())
# The two host callbacks (codemem/native.py) and the C compiler's template
# request (codemem/x64/ccore.py) are Python functions defined with
# @ffi.def_extern; cffi generates the C entry points.
ffibuilder.cdef(
    """
    extern "Python" void cm_py_event(uint64_t, uint64_t, cm_regfile *, uint64_t);
    extern "Python" uint64_t cm_py_host_call(uint64_t, uint64_t *);
    extern "Python+C" int cm_py_template(void *, const int64_t *, uint32_t, int32_t);
    """
)
ffibuilder.set_source(
    "codemem._native",
    '#include <stdint.h>\n#include "codemem_rt.h"\n#include "codemem_compile.h"\n',
    sources=[str((CSRC / name).relative_to(ROOT)) for name in ("codemem_rt.c", "codemem_compile.c")],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
