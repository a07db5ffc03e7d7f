#!/usr/bin/env bash
# Rebuild examples/build/NAME.O0.wasm and NAME.O2.wasm from examples/NAME.c, then
# check every sample call of exports.json against wasmtime.
#
# The built files are committed, so nothing needs clang at run time; run this only
# after editing a .c file or exports.json. Needs clang-19 and wasm-ld-19 (Debian
# clang-19, lld-19); the check needs the project venv (wasmtime).
#
# The export list of each program comes from exports.json (one source of truth for
# the build, the check and the differential tests).
set -euo pipefail
examples=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$examples")
python=${PYTHON:-$top/.venv/bin/python}
[[ -x $python ]] || python=python3
out=$examples/build
mkdir -p "$out"

# Freestanding wasm32: no libc, no entry point (the host calls exports directly).
# -mbulk-memory turns memcpy/memset into memory.copy/memory.fill, so no libc is needed.
# Compiling from the repository root with -fdebug-compilation-dir=. keeps the DWARF
# paths machine-independent (DW_AT_name examples/NAME.c, DW_AT_comp_dir "."), so the
# committed builds are reproducible and a debugger started from the root finds the sources.
cd "$top"
cflags=(--target=wasm32 -nostdlib -mbulk-memory -g -fdebug-compilation-dir=.
        -Wall -Wextra -Werror)
# clang-19's wasm32 driver links with wasm-ld-19 by itself (Debian's lld-19), so no
# -fuse-ld is needed. No entry point: the host calls the exports directly.
ldflags=(-Wl,--no-entry)

programs=$("$python" -c 'import json,sys; print(" ".join(p["program"] for p in json.load(open(sys.argv[1]))["programs"]))' "$examples/exports.json")
for program in $programs; do
  exports=$("$python" -c 'import json,sys
for p in json.load(open(sys.argv[1]))["programs"]:
    if p["program"] == sys.argv[2]: print(" ".join(p["exports"]))' "$examples/exports.json" "$program")
  export_flags=()
  for name in $exports; do export_flags+=("-Wl,--export=$name"); done
  for level in O0 O2; do
    clang-19 "${cflags[@]}" "-$level" "${ldflags[@]}" "${export_flags[@]}" \
      "examples/$program.c" -o "$out/$program.$level.wasm"
    echo "built build/$program.$level.wasm"
  done
done

"$python" "$examples/check_exports.py"
