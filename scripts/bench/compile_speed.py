#!/usr/bin/env python3
"""Benchmark: compile throughput, and loading a compiled image from the on-disk cache.

1. Throughput, in KiB of wasm *code section* per second of ``codemem.Module(engine,
   wasm)`` (decode, validate, compile to x86-64, build the frame table, publish the
   sealed EngineCode), debug on and off, for the largest example in
   examples/build/, for a generated module of about 1 MiB (many functions
   mixing i32/i64/f32/f64 arithmetic, conversions, memory, if/block/loop/br_table,
   direct and indirect calls) and for the real-size C module of
   scripts/bench/bigmodule.py (2,000 clang ``-g -O0`` functions).  ``kib_per_s``
   is the generated 1 MiB module with debug on (the mode a debugger needs;
   issue 13's target >= 1024), ``bigmodule_kib_per_s`` the C module's;
   ``compile_jobs`` is how many processes the compiler chose here (one per
   idle CPU, codemem.x64.compiler.compile_jobs) and ``kib_per_s_one_process``
   the 1 MiB module's figure with one (``kib_per_cpu_s_one_process``: per
   second of this process's CPU time, what a core to itself would give on a
   machine shared with other jobs; ``load_average`` says how shared).
   ``c_core_kib_per_s_one_process`` / ``python_only_kib_per_s_one_process``:
   the 1 MiB module in one process with the compiler's C core on and off
   ($WASM_GDBSTUB_C_COMPILER), interleaved in this run, and
   ``c_core_bytes_fraction`` the share of body bytes the C core compiled; the
   ``bigmodule_`` keys the same for the C module.
2. Warm load: a generated module of about 10 MiB compiled once into
   ``Engine(cache_dir=tmp)``, then loaded by fresh Engines on the same
   directory; ``warm_load_s`` is the median of those loads, from ``Module()``
   to a usable Module (issue 13's target <= 0.3 s), and the load is broken
   down into its parts to show what dominates.  The same for the 1 MiB module
   (``warm_load_1mib_s``).

Prints the figures; the last line is one JSON object (with ``cpu``, the CPU model).
"""
from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import wasmtime  # noqa: E402

import bigmodule  # noqa: E402  (scripts/bench/, next to this file)
import codemem  # noqa: E402
from codemem.code import EngineCode  # noqa: E402
from codemem.runtime import Module  # noqa: E402
from codemem.wasm.decoder import decode_module  # noqa: E402
from codemem.wasm.validator import validate_function  # noqa: E402
from codemem.x64.ccore import C_COMPILER_ENV  # noqa: E402
from codemem.x64.compiler import JOBS_ENV, compile_jobs, compile_module  # noqa: E402
from _common import cpu_model  # noqa: E402

TARGET_BYTES = 1 << 20
WARM_BYTES = 10 << 20
WARM_ROUNDS = 5
WARM_TARGET_S = 0.3
#: Where bigmodule.build keeps the C module between runs (it rebuilds only when the source changes).
BIGMODULE_DIR = Path(tempfile.gettempdir()) / "wasm-gdbstub-bench-bigmodule"


def code_section_size(wasm: bytes) -> int:
    """Payload size of the code section (id 10), by walking the section headers."""
    at = 8
    while at < len(wasm):
        section_id = wasm[at]
        size = shift = 0
        at += 1
        while True:
            byte = wasm[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if section_id == 10:
            return size
        at += size
    raise ValueError("no code section")


# --------------------------------------------------------------------------
# The generated module
# --------------------------------------------------------------------------


class FunctionWriter:
    """Writes one function ``(param i32 i64 f32 f64) (result i32)`` with locals of each type."""

    def __init__(self, rnd: random.Random, index: int):
        self.rnd = rnd
        self.index = index

    def i32(self, depth: int = 0) -> str:
        r = self.rnd.randrange(9 if depth < 3 else 2)
        if r == 0:
            return f"(i32.const {self.rnd.randrange(-1000, 1 << 20)})"
        if r == 1:
            return f"(local.get {self.rnd.choice([0, 4])})"
        if r == 2:
            op = self.rnd.choice(["add", "sub", "mul", "and", "or", "xor", "shl", "shr_u", "rotl", "div_u", "rem_s"])
            return f"(i32.{op} {self.i32(depth + 1)} {self.i32(depth + 1)})"
        if r == 3:
            return f"(i32.{self.rnd.choice(['lt_s', 'ge_u', 'eq', 'ne'])} {self.i32(depth + 1)} {self.i32(depth + 1)})"
        if r == 4:
            return f"(i32.wrap_i64 {self.i64(depth + 1)})"
        if r == 5:
            return f"(i32.trunc_sat_f64_s {self.f64(depth + 1)})"
        if r == 6:
            return f"(i32.load{self.rnd.choice(['', '8_u', '16_s'])} offset={self.rnd.randrange(64)} " \
                   f"(i32.and {self.i32(depth + 1)} (i32.const 0xfff0)))"
        if r == 7:
            return f"(select {self.i32(depth + 1)} {self.i32(depth + 1)} {self.i32(depth + 1)})"
        return f"(f32.{self.rnd.choice(['lt', 'ge'])} {self.f32(depth + 1)} {self.f32(depth + 1)})"

    def i64(self, depth: int = 0) -> str:
        r = self.rnd.randrange(4 if depth < 3 else 2)
        if r == 0:
            return f"(i64.const {self.rnd.randrange(-(1 << 40), 1 << 40)})"
        if r == 1:
            return f"(local.get {self.rnd.choice([1, 5])})"
        if r == 2:
            op = self.rnd.choice(["add", "mul", "xor", "shr_s", "rotr", "sub"])
            return f"(i64.{op} {self.i64(depth + 1)} {self.i64(depth + 1)})"
        return f"(i64.extend_i32_{self.rnd.choice('su')} {self.i32(depth + 1)})"

    def f32(self, depth: int = 0) -> str:
        r = self.rnd.randrange(4 if depth < 3 else 2)
        if r == 0:
            return f"(f32.const {self.rnd.uniform(-100, 100):.3f})"
        if r == 1:
            return f"(local.get {self.rnd.choice([2, 6])})"
        if r == 2:
            return f"(f32.{self.rnd.choice(['add', 'mul', 'min', 'div'])} {self.f32(depth + 1)} {self.f32(depth + 1)})"
        return f"(f32.demote_f64 {self.f64(depth + 1)})"

    def f64(self, depth: int = 0) -> str:
        r = self.rnd.randrange(4 if depth < 3 else 2)
        if r == 0:
            return f"(f64.const {self.rnd.uniform(-1e6, 1e6):.6f})"
        if r == 1:
            return f"(local.get {self.rnd.choice([3, 7])})"
        if r == 2:
            if self.rnd.random() < 0.2:
                return f"(f64.sqrt {self.f64(depth + 1)})"
            return f"(f64.{self.rnd.choice(['add', 'sub', 'max'])} {self.f64(depth + 1)} {self.f64(depth + 1)})"
        return f"(f64.convert_i64_s {self.i64(depth + 1)})"

    def statement(self, depth: int = 0) -> str:
        r = self.rnd.randrange(9 if depth < 2 else 5)
        if r == 0:
            return f"(local.set 4 {self.i32()})"
        if r == 1:
            return f"(local.set 5 {self.i64()})"
        if r == 2:
            return f"(local.set 6 {self.f32()})"
        if r == 3:
            return f"(local.set 7 {self.f64()})"
        if r == 4:
            return f"(i64.store offset={self.rnd.randrange(64)} (i32.and {self.i32()} (i32.const 0xfff0)) {self.i64()})"
        if r == 5:
            return f"(if {self.i32()} (then {self.statement(depth + 1)}) (else {self.statement(depth + 1)}))"
        if r == 6:
            return (f"(block $b (loop $l {self.statement(depth + 1)} (br_if $b (i32.eqz (local.get 0))) "
                    "(local.set 0 (i32.shr_u (local.get 0) (i32.const 1))) (br $l)))")
        if r == 7:
            return (f"(block $c (block $b (block $a (br_table $a $b $c (i32.and {self.i32()} (i32.const 3))))"
                    f" {self.statement(depth + 1)}) {self.statement(depth + 1)})")
        if self.index and self.rnd.random() < 0.5:
            callee = self.rnd.randrange(self.index)
            return f"(local.set 4 (call {callee} {self.i32()} {self.i64()} {self.f32()} {self.f64()}))"
        return (f"(local.set 4 (call_indirect (type $sig) {self.i32()} {self.i64()} {self.f32()} {self.f64()} "
                f"(i32.and {self.i32()} (i32.const 7))))")

    def function(self) -> str:
        body = " ".join(self.statement() for _ in range(self.rnd.randrange(10, 30)))
        return (f"(func $f{self.index} (type $sig) (local i32 i64 f32 f64) {body} "
                "(i32.add (local.get 4) (i32.wrap_i64 (local.get 5))))")


def generated_module(target: int = TARGET_BYTES, seed: int = 20240601) -> bytes:
    """A valid module whose code section is at least ``target`` bytes (a little more)."""
    rnd = random.Random(seed)
    functions: list[str] = []
    table = " ".join(f"$f{k}" for k in range(8))
    wasm = b""
    want = 1200  # functions for a first try; then scaled by the measured bytes per function
    while True:
        while len(functions) < want:
            functions.append(FunctionWriter(rnd, len(functions)).function())
        wat = ("(module (type $sig (func (param i32 i64 f32 f64) (result i32))) (memory 1) (table 8 funcref) "
               f"(elem (i32.const 0) {table}) " + "\n".join(functions) + ")")
        wasm = wasmtime.wat2wasm(wat)
        size = code_section_size(wasm)
        if size >= target:
            return wasm
        want = int(len(functions) * target / size) + 1


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


def compile_seconds(wasm: bytes, debug: bool, rounds: int = 1, jobs: int | None = None) -> float:
    """Best wall time of ``Module()``; ``jobs``: compile processes (None: the
    default, codemem.x64.compiler.compile_jobs)."""
    return compile_times(wasm, debug, rounds, jobs)[0]


def compile_times(wasm: bytes, debug: bool, rounds: int = 1, jobs: int | None = None) -> tuple[float, float]:
    """(best wall time, best CPU time of this process) of ``Module()``."""
    best = best_cpu = float("inf")
    saved = os.environ.get(JOBS_ENV)
    if jobs is not None:
        os.environ[JOBS_ENV] = str(jobs)
    try:
        for _ in range(rounds):
            gc.collect()  # the previous module's garbage is not this compile's cost
            engine = codemem.Engine(debug=debug)
            t0, c0 = time.perf_counter(), time.process_time()
            module = codemem.Module(engine, wasm)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            module.engine_code.close()
    finally:
        if saved is None:
            os.environ.pop(JOBS_ENV, None)
        else:
            os.environ[JOBS_ENV] = saved
    return best, best_cpu


def c_compile_figures(wasm: bytes) -> dict:
    """One-process debug compiles of ``wasm`` with the compiler's C core on
    and off, side by side (interleaved, best of 2 each), and how much of the
    module the C core compiled."""
    best = {"1": float("inf"), "0": float("inf")}
    saved = os.environ.get(C_COMPILER_ENV)
    try:
        for _ in range(2):
            for setting in ("1", "0"):
                os.environ[C_COMPILER_ENV] = setting
                best[setting] = min(best[setting], compile_times(wasm, True, rounds=1, jobs=1)[0])
        os.environ[C_COMPILER_ENV] = "1"
        info = decode_module(wasm)
        compiled = compile_module(info, debug=True, jobs=1)
    finally:
        if saved is None:
            os.environ.pop(C_COMPILER_ENV, None)
        else:
            os.environ[C_COMPILER_ENV] = saved
    total = sum(body.end_offset - body.body_offset for body in info.codes)
    return {"c_s": best["1"], "python_s": best["0"], "c_functions": compiled.c_functions,
            "functions": len(info.codes), "c_bytes_fraction": compiled.c_body_bytes / total}


def front_end_rates(wasm: bytes, rounds: int = 3) -> tuple[float, float]:
    """(decode, validate) throughput in MiB of function bodies per second,
    best of ``rounds``: reading every body into instructions, then validating
    every function (the compiler's front end, without code generation)."""
    info = decode_module(wasm)
    total = sum(c.end_offset - c.body_offset for c in info.codes)
    decode_s = validate_s = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        bodies = [info.read_body(i) for i in range(len(info.codes))]
        decode_s = min(decode_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i, instrs in enumerate(bodies):
            validate_function(info, i, instrs)
        validate_s = min(validate_s, time.perf_counter() - t0)
    return total / decode_s / (1 << 20), total / validate_s / (1 << 20)


def warm_loads(wasm: bytes, cache_dir: Path, rounds: int) -> tuple[float, list[float]]:
    """Cold compile into the cache, then ``rounds`` loads by fresh Engines."""
    engine = codemem.Engine(debug=True, cache_dir=cache_dir)
    t0 = time.perf_counter()
    cold = codemem.Module(engine, wasm)
    cold_s = time.perf_counter() - t0
    reference = cold.engine_code.read(0, cold.engine_code.code_size)
    cold.engine_code.close()
    samples = []
    for _ in range(rounds):
        engine = codemem.Engine(debug=True, cache_dir=cache_dir)
        t0 = time.perf_counter()
        module = codemem.Module(engine, wasm)
        samples.append(time.perf_counter() - t0)
        assert module.engine_code.read(0, module.engine_code.code_size) == reference
        module.engine_code.close()
    return cold_s, samples


def warm_breakdown(wasm: bytes, cache_dir: Path, rounds: int) -> dict[str, float]:
    """Median seconds of each part of a warm load (what ``Module()`` does on a
    cache hit), timed separately."""
    parts: dict[str, list[float]] = {"cache_map_and_check": [], "decode": [], "engine_code": []}
    for _ in range(rounds):
        t0 = time.perf_counter()
        module = Module.__new__(Module)  # only what _cached_image needs
        module.engine, module.wasm = codemem.Engine(debug=True, cache_dir=cache_dir), wasm
        code, table = module._cached_image()
        t1 = time.perf_counter()
        info = decode_module(wasm, bodies=False)
        t2 = time.perf_counter()
        engine_code = EngineCode(code, table, name="bench", function_names=dict(info.names.functions))
        code.release()
        t3 = time.perf_counter()
        engine_code.close()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(dt)
    return {name: statistics.median(v) for name, v in parts.items()}


def warm_figures(wasm: bytes) -> dict:
    """Cold compile into a fresh cache directory, warm loads, and their parts."""
    with tempfile.TemporaryDirectory(prefix="wgs-cache-") as tmp:
        cold_s, samples = warm_loads(wasm, Path(tmp), WARM_ROUNDS)
        entry = next(Path(tmp).glob("*.img"))
        entry_mib = entry.stat().st_size / (1 << 20)
        parts = warm_breakdown(wasm, Path(tmp), 3)
    return {"cold_s": cold_s, "median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "entry_mib": entry_mib, "parts": parts}


def print_warm(title: str, wasm: bytes, warm: dict) -> None:
    met = "met" if warm["median_s"] <= WARM_TARGET_S else "MISSED"
    print(f"{title}: {len(wasm) / (1 << 20):.1f} MiB, code section {code_section_size(wasm) / (1 << 20):.1f} MiB; "
          f"cold {warm['cold_s']:.2f} s, cache entry {warm['entry_mib']:.1f} MiB; warm loads median "
          f"{warm['median_s'] * 1e3:.0f} ms, min {warm['min_s'] * 1e3:.0f} ms, max {warm['max_s'] * 1e3:.0f} ms "
          f"(target <= {WARM_TARGET_S * 1e3:.0f} ms: {met})")
    print("  warm load, parts (median of 3): " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in warm["parts"].items()))


def main() -> None:
    examples = sorted((ROOT / "examples" / "build").glob("*.wasm"), key=lambda p: code_section_size(p.read_bytes()))
    largest = examples[-1]
    example_wasm = largest.read_bytes()
    example_kib = code_section_size(example_wasm) / 1024
    t_example = {debug: compile_seconds(example_wasm, debug, rounds=20) for debug in (True, False)}

    t0 = time.perf_counter()
    big = generated_module()
    generate_s = time.perf_counter() - t0
    big_kib = code_section_size(big) / 1024
    functions = len(decode_module(big).codes)
    jobs = compile_jobs(decode_module(big))
    t_big = {debug: compile_seconds(big, debug, rounds=2) for debug in (True, False)}
    t_big_one, cpu_big_one = compile_times(big, True, rounds=2, jobs=1)
    decode_mib_s, validate_mib_s = front_end_rates(big)

    c_path, _native = bigmodule.build(BIGMODULE_DIR)
    c_wasm = c_path.read_bytes()
    c_kib = code_section_size(c_wasm) / 1024
    t_c = {debug: compile_seconds(c_wasm, debug, rounds=2) for debug in (True, False)}
    core_big, core_c = c_compile_figures(big), c_compile_figures(c_wasm)

    warm_1mib = warm_figures(big)
    huge = generated_module(WARM_BYTES)
    warm = warm_figures(huge)

    print(f"cpu: {cpu_model()}")
    print(f"largest example {largest.name}: code section {example_kib:.1f} KiB; Module() best of 20: "
          f"debug {t_example[True] * 1e3:.1f} ms ({example_kib / t_example[True]:.0f} KiB/s), "
          f"nodebug {t_example[False] * 1e3:.1f} ms ({example_kib / t_example[False]:.0f} KiB/s)")
    print(f"generated module: {len(big) / 1024:.0f} KiB, code section {big_kib:.0f} KiB, {functions} functions "
          f"(generated in {generate_s:.1f} s)")
    print(f"  Module() debug, best of 2:   {t_big[True]:6.2f} s  -> {big_kib / t_big[True]:7.1f} KiB/s")
    print(f"  Module() nodebug, best of 2: {t_big[False]:6.2f} s  -> {big_kib / t_big[False]:7.1f} KiB/s")
    print(f"  (default compile processes here: {jobs}, load average {os.getloadavg()[0]:.1f}; "
          f"debug in one process: {t_big_one:.2f} s -> {big_kib / t_big_one:.1f} KiB/s, "
          f"{cpu_big_one:.2f} s of CPU -> {big_kib / cpu_big_one:.1f} KiB per CPU second)")
    print(f"  front end: decode {decode_mib_s:.2f} MiB/s, validate {validate_mib_s:.2f} MiB/s of function bodies")
    print(f"C module {c_path.name}: {len(c_wasm) / 1024:.0f} KiB, code section {c_kib:.0f} KiB")
    print(f"  Module() debug, best of 2:   {t_c[True]:6.2f} s  -> {c_kib / t_c[True]:7.1f} KiB/s")
    print(f"  Module() nodebug, best of 2: {t_c[False]:6.2f} s  -> {c_kib / t_c[False]:7.1f} KiB/s")
    for name, kib, core in (("generated module", big_kib, core_big), ("C module", c_kib, core_c)):
        print(f"{name}, one process, debug: C core {kib / core['c_s']:.1f} KiB/s, Python only "
              f"{kib / core['python_s']:.1f} KiB/s ({core['python_s'] / core['c_s']:.2f}x); the C core compiled "
              f"{core['c_functions']} of {core['functions']} functions, {100 * core['c_bytes_fraction']:.1f}% "
              "of the body bytes")
    print_warm("warm load, generated 1 MiB module", big, warm_1mib)
    print_warm("warm load, generated 10 MiB module", huge, warm)
    result = {
        "cpu": cpu_model(),
        "example": largest.name,
        "example_code_kib": round(example_kib, 2),
        "example_kib_per_s": round(example_kib / t_example[True], 1),
        "example_kib_per_s_nodebug": round(example_kib / t_example[False], 1),
        "generated_code_kib": round(big_kib, 1),
        "generated_functions": functions,
        "kib_per_s": round(big_kib / t_big[True], 1),
        "kib_per_s_nodebug": round(big_kib / t_big[False], 1),
        "kib_per_s_one_process": round(big_kib / t_big_one, 1),
        "kib_per_cpu_s_one_process": round(big_kib / cpu_big_one, 1),
        "load_average": round(os.getloadavg()[0], 2),
        "compile_jobs": jobs,
        "decode_mib_per_s": round(decode_mib_s, 2),
        "validate_mib_per_s": round(validate_mib_s, 2),
        "bigmodule_code_kib": round(c_kib, 1),
        "bigmodule_kib_per_s": round(c_kib / t_c[True], 1),
        "bigmodule_kib_per_s_nodebug": round(c_kib / t_c[False], 1),
        "c_core_kib_per_s_one_process": round(big_kib / core_big["c_s"], 1),
        "python_only_kib_per_s_one_process": round(big_kib / core_big["python_s"], 1),
        "c_core_bytes_fraction": round(core_big["c_bytes_fraction"], 4),
        "bigmodule_c_core_kib_per_s_one_process": round(c_kib / core_c["c_s"], 1),
        "bigmodule_python_only_kib_per_s_one_process": round(c_kib / core_c["python_s"], 1),
        "bigmodule_c_core_bytes_fraction": round(core_c["c_bytes_fraction"], 4),
        "warm_module_mib": round(len(huge) / (1 << 20), 2),
        "cold_compile_s": round(warm["cold_s"], 3),
        "cache_entry_mib": round(warm["entry_mib"], 2),
        "warm_load_s": round(warm["median_s"], 4),
        "warm_load_min_s": round(warm["min_s"], 4),
        "warm_load_parts_s": {k: round(v, 4) for k, v in warm["parts"].items()},
        "warm_load_1mib_s": round(warm_1mib["median_s"], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
