"""Robustness of the wasm front end on mutated modules.

Property: for any bytes, ``validate`` returns a ``ModuleInfo`` or raises
``CompileError`` whose offset is an int in ``[0, len(data)]``; never another
exception, in bounded time (hypothesis deadline) and memory. A second property
compares the valid/invalid verdict with Wasmtime restricted to wasm 2.0.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codemem.errors import CompileError
from codemem.wasm.module import ModuleInfo
from codemem.wasm.validator import validate

REPO_ROOT = Path(__file__).resolve().parent.parent

SEED_WATS = [
    "(module)",
    """(module
      (type (func (param i32 i64) (result i32)))
      (import "env" "f" (func (type 0)))
      (import "env" "m" (memory 1 2))
      (import "env" "g" (global i32))
      (table 2 funcref) (table 1 externref)
      (global (mut f32) (f32.const 1.5))
      (export "run" (func $run))
      (elem (i32.const 0) $run)
      (elem funcref (ref.null func) (ref.func $run))
      (data (i32.const 4) "abc") (data "passive")
      (func $run (param i32) (result i32) (local i64 f64)
        (block $b (result i32)
          (loop $l
            (br_if $b (i32.eqz (local.get 0)) (i32.const 7))
            (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
            (i64.store offset=8 (local.get 0) (i64.const -1))
            (br_table $l $l (local.get 0)))
          (i32.const 0))
        (if (result i32) (then (call 0 (i32.const 1) (i64.const 2))) (else (i32.const 3)))
        (memory.init 1 (i32.const 0) (i32.const 0) (i32.const 1))
        (table.set 1 (i32.const 0) (ref.null extern))
        (drop (select (f64.const 1) (f64.const 2) (i32.const 1)))))
    """,
    """(module (memory 1)
      (func (export "f") (param f32 f64) (result i64 i32)
        (i64.trunc_sat_f64_s (local.get 1))
        (i32.reinterpret_f32 (local.get 0))
        (memory.fill (i32.const 0) (i32.const 1) (i32.const 2))
        (memory.copy (i32.const 0) (i32.const 1) (i32.const 2))))""",
]


def _seeds() -> list[bytes]:
    seeds = [wasmtime.wat2wasm(w) for w in SEED_WATS]
    example = REPO_ROOT / "examples" / "build" / "recursion.O0.wasm"
    if example.exists():
        seeds.append(example.read_bytes())
    return seeds


SEEDS = _seeds()
HUGE_LEBS = [b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x10", b"\xff\xff\xff\xff\xff\x7f",
             b"\x80\x80\x80\x80\x80\x00", b"\xfe\xff\xff\xff\x07"]


@st.composite
def mutated_modules(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "leb", "splice"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[i:i + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "leb":
            # Replace the LEB-ish byte at i with a huge count/size/index.
            data[i:i + 1] = draw(st.sampled_from(HUGE_LEBS))
        elif kind == "splice" and data:
            j = draw(st.integers(0, len(data) - 1))
            data[i:i] = data[j:j + draw(st.integers(1, 16))]
    return bytes(data)


def check_contract(data: bytes) -> CompileError | None:
    try:
        info = validate(data)
    except CompileError as exc:
        assert isinstance(exc.offset, int), exc
        assert 0 <= exc.offset <= len(data), (exc.offset, len(data), exc)
        assert isinstance(exc.message, str) and exc.message
        return exc
    assert isinstance(info, ModuleInfo)
    return None


@settings(max_examples=4000, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated_modules())
def test_mutated_modules_fail_cleanly(data):
    check_contract(data)


@settings(max_examples=300, deadline=2000, derandomize=True)
@given(st.binary(max_size=64).map(lambda b: b"\x00asm\x01\x00\x00\x00" + b))
def test_random_section_bytes_fail_cleanly(data):
    check_contract(data)


def _reference_engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    for feature in ("wasm_simd", "wasm_relaxed_simd", "wasm_multi_memory", "wasm_memory64", "wasm_threads",
                    "wasm_tail_call", "wasm_gc", "wasm_function_references", "wasm_exceptions",
                    "wasm_custom_page_sizes", "wasm_wide_arithmetic", "wasm_stack_switching"):
        # No hasattr() probe: reading a wasmtime.Config property (they are
        # write-only) leaves the config silently ignoring later settings.
        setattr(cfg, feature, False)
    return wasmtime.Engine(cfg)


REFERENCE = _reference_engine()
# Wasmtime always has extended-const (arithmetic in constant expressions), which is
# post-2.0: the one verdict difference we expect.
EXPECTED_DIFFERENCES = ("constant expression required",)


@settings(max_examples=2000, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated_modules())
def test_verdict_agrees_with_wasmtime(data):
    ours = check_contract(data)
    try:
        wasmtime.Module.validate(REFERENCE, data)
        theirs = None
    except wasmtime.WasmtimeError as exc:
        theirs = str(exc)
    if ours is None:
        assert theirs is None, f"we accept, wasmtime rejects: {theirs}"
    elif theirs is None:
        assert ours.message.startswith(EXPECTED_DIFFERENCES), f"we reject, wasmtime accepts: {ours}"


@pytest.mark.parametrize("section_id", [1, 2, 3, 4, 5, 6, 7, 9, 10, 11])
def test_huge_claimed_counts_use_little_memory(section_id):
    """A count of 2**32-1 (or a LEB that is too large) costs no allocation."""
    header = b"\x00asm\x01\x00\x00\x00"
    for leb in HUGE_LEBS:
        payload = leb + b"\x00" * 32
        data = header + bytes([section_id, len(payload)]) + payload
        tracemalloc.start()
        try:
            with pytest.raises(CompileError):
                validate(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, (section_id, leb, peak)


def test_huge_local_counts_use_little_memory():
    header = b"\x00asm\x01\x00\x00\x00"
    body = b"\x02" + b"\xff\xff\xff\x7f\x7f" + b"\xff\xff\xff\x7f\x7e" + b"\x0b"
    code = b"\x01" + bytes([len(body)]) + body
    data = header + b"\x01\x04\x01\x60\x00\x00" + b"\x03\x02\x01\x00" + b"\x0a" + bytes([len(code)]) + code
    tracemalloc.start()
    try:
        with pytest.raises(CompileError, match="too many locals"):
            validate(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
