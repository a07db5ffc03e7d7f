#!/usr/bin/env python3
"""Fingerprints of the DWARF translation's output, to compare two versions of
the translator byte for byte.

For every module given (default: examples/build/*.wasm, the DWARF 5 builds of
examples/inventory.c at -O0 and -O2, a WASI program, and with ``--bigmodule
DIR`` scripts/bench/bigmodule.py's module built into DIR) it translates the
guest's DWARF at link address 0x1000 for an x32 image and prints one line per
module: its name and the SHA-256 of everything the translation returns (each
section, the data symbols, the frame-base slots, the described functions and
the counts).

    python scripts/check_dwarf_translation.py --save before.txt      # old translator
    python scripts/check_dwarf_translation.py --against before.txt   # new one: exit 1 on any difference

Run it on the same machine with the same clang (the extra builds are made at
run time).
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from codemem import Engine, Module  # noqa: E402
from gdbstub.dwarf_translate import translate_guest_dwarf  # noqa: E402

EXAMPLES = ROOT / "examples"


def fingerprint(wasm: Path) -> str:
    """SHA-256 over the whole translation of ``wasm`` (or ``none`` when it has no DWARF)."""
    module = Module.from_file(Engine(debug=True), wasm)
    result = translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0x1000,
                                   address_size=4)
    if result is None:
        return "none"
    digest = hashlib.sha256()
    for name in sorted(result.sections):
        digest.update(name.encode() + b"\0" + hashlib.sha256(result.sections[name]).digest())
    digest.update(repr((result.units, result.subprograms, result.dropped_locations, result.functions,
                        result.data_symbols, sorted(result.frame_base_slots.items()))).encode())
    return digest.hexdigest()


def extra_builds(out: Path) -> list[Path]:
    """The DWARF 5 and WASI builds (compiled now)."""
    built = []
    for level in ("O0", "O2"):
        wasm = out / f"inventory5.{level}.wasm"
        subprocess.run(["clang-19", "--target=wasm32", "-nostdlib", "-mbulk-memory", "-g", "-gdwarf-5",
                        "-fdebug-compilation-dir=.", f"-{level}", "-Wl,--no-entry", "-Wl,--export=inventory_run",
                        str(EXAMPLES / "inventory.c"), "-o", str(wasm)], check=True)
        built.append(wasm)
    wasi = out / "wasi_tour.wasm"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O1", "-fdebug-compilation-dir=.",
                    str(EXAMPLES / "wasi_tour.c"), "-o", str(wasi)], check=True)
    built.append(wasi)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", type=Path, help="wasm modules (default: see above)")
    parser.add_argument("--bigmodule", type=Path, metavar="DIR", help="also scripts/bench/bigmodule.py's module")
    parser.add_argument("--save", type=Path, help="write the fingerprints to this file")
    parser.add_argument("--against", type=Path, help="compare with a file --save wrote; exit 1 on a difference")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        modules = list(args.modules) or sorted((EXAMPLES / "build").glob("*.wasm")) + extra_builds(Path(tmp))
        if args.bigmodule is not None:
            import bigmodule

            modules.append(bigmodule.build(args.bigmodule)[0])
        lines = [f"{wasm.name} {fingerprint(wasm)}" for wasm in modules]
    print("\n".join(lines))
    if args.save is not None:
        args.save.write_text("\n".join(lines) + "\n")
    if args.against is not None:
        expected = dict(line.split(" ", 1) for line in args.against.read_text().splitlines() if line)
        found = dict(line.split(" ", 1) for line in lines)
        differ = sorted(name for name in found if name in expected and expected[name] != found[name])
        missing = sorted(set(expected) - set(found))
        if differ or missing:
            print(f"different: {differ}; not checked: {missing}", file=sys.stderr)
            return 1
        print(f"all {len(found)} translations identical", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
