"""Differential: every example, -O0 and -O2, debug on and off, against wasmtime.

examples/exports.json holds sample calls whose expectations were cross-checked
against native builds; here each call also runs under wasmtime in the same
test, so a disagreement names both results.
"""
import json
import math
import struct
from pathlib import Path

import pytest
import wasmtime

import codemem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROGRAMS = json.loads((EXAMPLES / "exports.json").read_text())["programs"]
CASES = [(p["program"], opt) for p in PROGRAMS for opt in ("O0", "O2")]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return a == b


def run_wasmtime(wasm: bytes, calls):
    store = wasmtime.Store()
    instance = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [])
    out = []
    for call in calls:
        try:
            out.append(("ok", instance.exports(store)[call["func"]](store, *call["args"])))
        except wasmtime.Trap as trap:
            out.append(("trap", str(trap)))
    return out


def run_codemem(wasm: bytes, calls, debug: bool):
    store = codemem.Store(codemem.Engine(debug=debug))
    instance = codemem.Instance(store, codemem.Module(store.engine, wasm), [])
    out = []
    for call in calls:
        try:
            out.append(("ok", instance.exports[call["func"]](*call["args"])))
        except codemem.Trap as trap:
            out.append(("trap", trap.message))
    store.close()
    return out


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
@pytest.mark.parametrize("program, opt", CASES, ids=[f"{p}.{o}" for p, o in CASES])
def test_examples_match_wasmtime(program, opt, debug):
    spec = next(p for p in PROGRAMS if p["program"] == program)
    wasm = (EXAMPLES / "build" / f"{program}.{opt}.wasm").read_bytes()
    ours = run_codemem(wasm, spec["calls"], debug)
    reference = run_wasmtime(wasm, spec["calls"])
    for call, (kind, value), (ref_kind, ref_value) in zip(spec["calls"], ours, reference):
        where = f"{call['func']}{tuple(call['args'])}"
        assert kind == ref_kind, f"{where}: ours {kind} {value!r}, wasmtime {ref_kind} {ref_value!r}"
        if kind == "ok":
            assert same(value, ref_value), f"{where}: ours {value!r}, wasmtime {ref_value!r}"
            if "expect" in call:
                assert same(value, call["expect"]), f"{where}: ours {value!r}, expected {call['expect']!r}"
        else:
            assert call.get("trap", "") in value, f"{where}: trap {value!r}, expected {call.get('trap')!r}"
