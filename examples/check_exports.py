"""Replay every sample call of examples/exports.json on wasmtime and compare.

Contract: exits 0 when, for each program and each build (build/NAME.O0.wasm,
build/NAME.O2.wasm), the module exports exactly the functions exports.json declares
with the declared signatures, every call with "expect" returns that value (floats
compared bit for bit, so -0.0 != 0.0), and every call marked "traps" traps with a
message containing its "trap" text. Prints one line per mismatch and exits 1 otherwise.

Usage: .venv/bin/python examples/check_exports.py [--examples-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import struct
import sys
from pathlib import Path

import wasmtime

log = logging.getLogger(__name__)

LEVELS = ("O0", "O2")
_VALTYPE_NAMES = {"i32", "i64", "f32", "f64"}


def load_exports(examples_dir: Path) -> list[dict]:
    """The "programs" list of exports.json."""
    with open(examples_dir / "exports.json", encoding="utf-8") as f:
        return json.load(f)["programs"]


def same_value(expected, actual) -> bool:
    """Exact equality; floats by their f64 bit pattern (f32 results are exact in f64)."""
    if isinstance(expected, float) or isinstance(actual, float):
        if not isinstance(actual, (int, float)) or not isinstance(expected, (int, float)):
            return False
        if math.isnan(float(expected)) and math.isnan(float(actual)):
            return True
        return struct.pack("<d", float(expected)) == struct.pack("<d", float(actual))
    return expected == actual


def _trap_text(trap: wasmtime.Trap) -> str:
    """The last 'wasm trap: ...' line of wasmtime's message, in the spec's wording."""
    lines = [line.strip() for line in trap.message.splitlines() if "wasm trap:" in line]
    text = lines[-1].split("wasm trap:", 1)[1].strip() if lines else trap.message
    # wasmtime words the `unreachable` trap differently from the spec's "unreachable".
    return "unreachable" if "`unreachable`" in text else text


def check_program(examples_dir: Path, program: dict) -> list[str]:
    """All mismatches of one program's two builds, as human-readable lines."""
    problems = []
    name = program["program"]
    for level in LEVELS:
        path = examples_dir / "build" / f"{name}.{level}.wasm"
        where = f"{name}.{level}"
        engine = wasmtime.Engine()
        store = wasmtime.Store(engine)
        module = wasmtime.Module(engine, path.read_bytes())
        instance = wasmtime.Instance(store, module, [])
        exports = instance.exports(store)
        declared = program["exports"]
        actual_funcs = {e.name: e.type for e in module.exports if isinstance(e.type, wasmtime.FuncType)}
        if set(actual_funcs) != set(declared):
            problems.append(f"{where}: exports {sorted(actual_funcs)} != declared {sorted(declared)}")
        for func_name, signature in declared.items():
            func_type = actual_funcs.get(func_name)
            if func_type is None:
                continue
            params = [str(t) for t in func_type.params]
            results = [str(t) for t in func_type.results]
            if params != signature["params"] or results != signature["results"]:
                problems.append(f"{where}: {func_name} has type {params} -> {results}, declared {signature}")
            assert set(params + results) <= _VALTYPE_NAMES, (func_name, params, results)
        for call in program["calls"]:
            label = f"{where}: {call['func']}{tuple(call['args'])}"
            func = exports[call["func"]]
            try:
                result = func(store, *call["args"])
            except wasmtime.Trap as trap:
                text = _trap_text(trap)
                if not call.get("traps"):
                    problems.append(f"{label} trapped: {text}")
                elif call["trap"] not in text:
                    problems.append(f"{label} trapped with {text!r}, expected {call['trap']!r}")
                continue
            if call.get("traps"):
                problems.append(f"{label} returned {result!r}, expected a trap ({call['trap']})")
            elif not same_value(call["expect"], result):
                problems.append(f"{label} returned {result!r}, expected {call['expect']!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    problems = []
    calls = 0
    for program in load_exports(args.examples_dir):
        problems += check_program(args.examples_dir, program)
        calls += len(program["calls"]) * len(LEVELS)
    for line in problems:
        print(line)
    print(f"check_exports: {calls} calls, {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
