#!/usr/bin/env python3
"""Golden hashes of the compiler's output: the guard for pure-speed work on the engine.

Compiles every example (examples/build/*.wasm), the generated 1 MiB module of
scripts/bench/compile_speed.py and the real-size C module of
scripts/bench/bigmodule.py, debug and nodebug, and prints one line per
(module, mode): the sha256 of the image code and of the frame table.  A change
that only makes the compiler faster must leave every line unchanged; a change to
code generation changes them on purpose (and is committed separately).

    python scripts/golden_hash.py                  # print the lines
    python scripts/golden_hash.py --save FILE      # ... and write them to FILE
    python scripts/golden_hash.py --compare FILE   # exit 1 naming every line that differs
    python scripts/golden_hash.py --quick ...      # examples only (seconds, not a minute)

Modules are compiled with ``codemem.x64.compiler.compile_module`` directly (no
cache, no EngineCode: the bytes as the compiler made them).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from codemem.wasm.decoder import decode_module  # noqa: E402
from codemem.x64.compiler import compile_module  # noqa: E402

#: Where the big C module is built (reused across runs: bigmodule.build caches by source hash).
BIG_DIR = Path(tempfile.gettempdir()) / "wasm-gdbstub-golden"


def modules(quick: bool) -> list[tuple[str, bytes]]:
    """(name, wasm bytes) of every module the golden hash covers."""
    found = [(p.name, p.read_bytes()) for p in sorted((ROOT / "examples" / "build").glob("*.wasm"))]
    if not quick:
        import bigmodule
        import compile_speed

        found.append(("generated-1MiB", compile_speed.generated_module()))
        wasm_path, _native = bigmodule.build(BIG_DIR)
        found.append(("bigmodule", wasm_path.read_bytes()))
    return found


def golden_lines(quick: bool) -> list[str]:
    lines = []
    for name, wasm in modules(quick):
        for debug in (True, False):
            t0 = time.perf_counter()
            compiled = compile_module(decode_module(wasm), debug=debug)
            seconds = time.perf_counter() - t0
            line = (f"{name} {'debug' if debug else 'nodebug'} code={hashlib.sha256(compiled.code).hexdigest()[:24]} "
                    f"table={hashlib.sha256(compiled.frame_table).hexdigest()[:24]}")
            print(f"{line}  ({seconds:.2f} s)", file=sys.stderr)
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, help="write the lines to this file")
    parser.add_argument("--compare", type=Path, help="compare with the lines saved in this file")
    parser.add_argument("--quick", action="store_true", help="the examples only")
    args = parser.parse_args(argv)
    lines = golden_lines(args.quick)
    print("\n".join(lines))
    if args.save:
        args.save.write_text("\n".join(lines) + "\n")
    if args.compare:
        saved = {" ".join(line.split()[:2]): line for line in args.compare.read_text().splitlines() if line}
        differ = [line for line in lines if saved.get(" ".join(line.split()[:2]), line) != line]
        missing = [line for line in lines if " ".join(line.split()[:2]) not in saved]
        for line in differ:
            print(f"DIFFERS: {line}\n  saved: {saved[' '.join(line.split()[:2])]}")
        for line in missing:
            print(f"not in {args.compare}: {line}")
        if differ:
            return 1
        print(f"golden: {len(lines) - len(missing)} lines match {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
