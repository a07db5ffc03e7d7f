"""The compiler's C core (csrc/codemem_compile.c, codemem/x64/ccore.py) is byte for byte the Python compiler.

Every module is compiled twice, ``$WASM_GDBSTUB_C_COMPILER=0`` (Python only)
and ``=1`` (the C core first, Python for what it does not handle), and the
images and frame tables must be equal: every example in both modes, the seed
modules of tests/test_compile_fuzz.py and a sample of their mutants (errors
must then be the same CompileError, message and offset), and bodies that
exercise the C core's fallbacks.  The C core must also really be used: the
examples are mostly compiled by it.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings

from codemem.errors import CompileError
from codemem.wasm.decoder import decode_module
from codemem.wasm.opcodes import OPCODES
from codemem.x64 import compiler
from codemem.x64.ccore import C_COMPILER_ENV
from test_compile_fuzz import SEEDS, mutated_modules
from test_compile_parallel import CROSS_CALLS

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "build").glob("*.wasm"))


def compile_both(monkeypatch, wasm: bytes, debug: bool, jobs: int = 1):
    """``(python, c)``: each a CompiledModule or the CompileError it raised."""
    results = []
    for setting in ("0", "1"):
        monkeypatch.setenv(C_COMPILER_ENV, setting)
        try:
            info = decode_module(wasm)
            results.append(compiler.compile_module(info, debug=debug, jobs=jobs))
        except CompileError as e:
            results.append(e)
    return results


def assert_same(python, c) -> None:
    if isinstance(python, CompileError):
        assert isinstance(c, CompileError), "the C core accepted a module Python rejects"
        assert (str(c), c.offset) == (str(python), python.offset)
        return
    assert not isinstance(c, CompileError), f"the C core rejected a valid module: {c}"
    assert c.code == python.code
    assert c.frame_table == python.frame_table


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_compiles_to_the_same_bytes_with_the_c_core(monkeypatch, path, debug):
    python, c = compile_both(monkeypatch, path.read_bytes(), debug)
    assert_same(python, c)
    assert python.c_functions == 0
    assert c.c_functions > 0  # the rest use a libcall (memory.grow, bulk memory) the C core leaves to Python


def test_the_c_core_compiles_most_example_code(monkeypatch):
    monkeypatch.setenv(C_COMPILER_ENV, "1")
    total = in_c = 0
    for path in EXAMPLES:
        info = decode_module(path.read_bytes())
        compiled = compiler.compile_module(info, debug=True, jobs=1)
        total += sum(body.end_offset - body.body_offset for body in info.codes)
        in_c += compiled.c_body_bytes
    assert in_c >= 0.9 * total, (in_c, total)


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("index", range(len(SEEDS)), ids=lambda i: f"seed{i}")
def test_every_fuzz_seed_compiles_to_the_same_bytes_with_the_c_core(monkeypatch, index, debug):
    assert_same(*compile_both(monkeypatch, SEEDS[index], debug))


def test_mutated_modules_compile_to_the_same_bytes_or_error_with_the_c_core(monkeypatch):
    outcomes = {"same image": 0, "same error": 0}

    @settings(max_examples=250, deadline=5000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(data=mutated_modules())
    def same_either_way(data):
        for debug in (True, False):
            try:
                decode_module(data)
            except CompileError:
                return  # not a module the compiler sees
            python, c = compile_both(monkeypatch, data, debug)
            assert_same(python, c)
            outcomes["same error" if isinstance(python, CompileError) else "same image"] += 1

    same_either_way()
    assert outcomes["same image"] >= 50, outcomes


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
def test_a_module_compiled_in_two_processes_with_the_c_core_is_byte_identical(monkeypatch, debug):
    wasm = wasmtime.wat2wasm(CROSS_CALLS)
    python, c = compile_both(monkeypatch, wasm, debug, jobs=2)
    assert_same(python, c)
    assert c.c_functions == 5


#: Functions the C core hands to Python (table.get; memory.fill: a libcall
#: other than memory.grow) between functions it compiles (memory.grow, whose
#: libcall's trap stub loads the runtime's code; typed select), calling each other.
FALLBACKS = """(module
  (memory 1) (table 2 funcref) (global $g (mut i64) (i64.const 7))
  (func $grow (param i32) (result i32) (memory.grow (local.get 0)))
  (func $fill (param i32) (memory.fill (local.get 0) (i32.const 0) (i32.const 16)))
  (func $plain (param i32 i64) (result i64)
    (global.set $g (i64.add (global.get $g) (local.get 1)))
    (if (result i64) (local.get 0) (then (global.get $g)) (else (i64.const -1))))
  (func $typed (param i32) (result f64)
    (select (result f64) (f64.const 1.5) (f64.const -2.5) (local.get 0)))
  (func $tab (param i32) (result i32) (ref.is_null (table.get (local.get 0))))
  (func (export "run") (param i32) (result i32)
    (drop (call $plain (local.get 0) (i64.const 3)))
    (drop (call $typed (local.get 0)))
    (call $fill (local.get 0))
    (i32.add (call $grow (local.get 0)) (call $tab (local.get 0)))))"""


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
def test_functions_the_c_core_does_not_handle_are_compiled_by_python_in_place(monkeypatch, debug):
    python, c = compile_both(monkeypatch, wasmtime.wat2wasm(FALLBACKS), debug)
    assert_same(python, c)
    assert c.c_functions == 4  # $grow, $plain, $typed and run; $fill and $tab in Python


#: Valid bodies the C core handles, through its less common paths: block
#: parameters (if with params, saved and restored), loop headers re-established
#: over back edges, br_if with values, br_table stubs, unreachable code.
EDGES = """(module
  (memory 1)
  (type $ii (func (param i32) (result i32)))
  (func $params (param i32 i32) (result i32)
    (local.get 0) (local.get 1)
    (if (type $ii) (param i32) (result i32) (then (i32.add (i32.const 1))) (else (i32.mul (i32.const 3)))))
  (func $loop (param i32) (result i32) (local i32 i32)
    (loop $l (local.set 1 (i32.add (local.get 1) (i32.load (local.get 2))))
      (local.set 2 (i32.add (local.get 2) (i32.const 4)))
      (br_if $l (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))
    (local.get 1))
  (func $values (param i32) (result i32)
    (block $b (result i32) (i32.const 5) (local.get 0) (br_if $b) (drop) (i32.const 6)))
  (func $table (param i32) (result i64)
    (block $c (result i64) (block $b (result i64) (block $a (result i64)
      (i64.const 1) (local.get 0) (br_table $a $b $c $a))
      (i64.add (i64.const 10))) (i64.mul (i64.const 3))))
  (func $dead (param i32) (result i32)
    (block $b (result i32) (br $b (i32.const 1)) (i32.add) (unreachable) (if (then)) (drop)))
  (func (export "run") (param i32) (result i32)
    (i32.add (call $params (local.get 0) (i32.const 2)) (call $loop (local.get 0)))))"""


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
def test_block_parameters_loop_headers_and_dead_code_are_the_same_in_c(monkeypatch, debug):
    python, c = compile_both(monkeypatch, wasmtime.wat2wasm(EDGES), debug)
    assert_same(python, c)
    assert c.c_functions == 6


def module_with_body(body: bytes) -> bytes:
    """A module of one function ``() -> i32`` with code ``body`` (no locals)
    and one immutable i32 global, hand-assembled (wat2wasm refuses invalid code)."""
    func = b"\x00" + body
    return (b"\0asm\1\0\0\0" + b"\x01\x05\x01\x60\x00\x01\x7f" + b"\x03\x02\x01\x00"
            + b"\x06\x06\x01\x7f\x00\x41\x00\x0b"
            + b"\x0a" + bytes([len(func) + 2, 1, len(func)]) + func)


@pytest.mark.parametrize("body, message", [
    ("41 01 42 02 6a 1a 41 00 0b", "type mismatch"),
    ("20 09 1a 41 00 0b", "unknown local 9"),
    ("0c 03 41 00 0b", "unknown label 3"),
    ("41 01 24 00 41 00 0b", "global is immutable"),
    ("41 00 04 40 05 0b 0b", "type mismatch"),  # the function's result missing after if/else
], ids=["type", "local", "label", "immutable", "result"])
def test_an_invalid_body_reports_the_python_error_with_the_c_core(monkeypatch, body, message):
    python, c = compile_both(monkeypatch, module_with_body(bytes.fromhex(body)), True)
    assert isinstance(python, CompileError) and message in str(python), python
    assert_same(python, c)


@pytest.mark.parametrize("body", [
    "41 80 80 80 80 80 01 0b",  # an i32.const LEB128 of 6 bytes
    "41 80 80 80 80 70 0b",  # a 5-byte i32 whose unused bits are not the sign
    "41 00 0b 0b",  # bytes after the final end
    "41 00 05 0b",  # else outside an if
], ids=["long-leb", "leb-bits", "after-end", "else"])
def test_a_malformed_body_reports_the_python_error_with_the_c_core(monkeypatch, body):
    python, c = compile_both(monkeypatch, module_with_body(bytes.fromhex(body)), False)
    assert isinstance(python, CompileError), python
    assert_same(python, c)


def test_padded_leb128_immediates_compile_in_c(monkeypatch):
    # wasm-ld writes relocatable indices as 5-byte LEB128s: valid, and common.
    body = bytes.fromhex("41 85 80 80 80 00 42 ff ff ff ff ff ff ff ff ff 7f 1a 0b")
    python, c = compile_both(monkeypatch, module_with_body(body), True)
    assert_same(python, c)
    assert c.c_functions == 1


_I_BINARY = ("add", "sub", "mul", "and", "or", "xor", "shl", "shr_s", "shr_u", "rotl", "rotr",
             "div_s", "div_u", "rem_s", "rem_u", "eq", "ne", "lt_s", "lt_u", "gt_s", "gt_u",
             "le_s", "le_u", "ge_s", "ge_u")
_I_COMPARE = frozenset(_I_BINARY[15:])
_I_UNARY = {"i32": ("eqz", "clz", "ctz", "popcnt", "extend8_s", "extend16_s"),
            "i64": ("eqz", "clz", "ctz", "popcnt", "extend8_s", "extend16_s", "extend32_s")}
_LOADS = {"i32": ("load", "load8_s", "load8_u", "load16_s", "load16_u"),
          "i64": ("load", "load8_s", "load8_u", "load16_s", "load16_u", "load32_s", "load32_u")}
#: memarg offsets: small, disp8/disp32 boundaries, and past 2**31 (the bounds
#: check's end no longer fits an imm32; the access then goes through rdx).
_OFFSETS = (0, 3, 127, 128, 0x7FFF_FFF0, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)


def compile_both_recording_template_requests(monkeypatch, wasm: bytes, functions: int) -> list[list[int]]:
    """Compile ``wasm`` both ways, debug and nodebug, check the images are
    the same and that the C core compiled all ``functions``; return the
    template requests the C core made of Python (their key fields)."""
    asked: list[list[int]] = []
    template_for_c = compiler._ModuleCompiler._template_for_c

    def recording(self, fields, at):
        asked.append(list(fields))
        return template_for_c(self, fields, at)

    monkeypatch.setattr(compiler._ModuleCompiler, "_template_for_c", recording)
    for debug in (True, False):
        python, c = compile_both(monkeypatch, wasm, debug)
        assert_same(python, c)
        assert c.c_functions == functions
    return asked


def _integer_function(rnd, index: int) -> str:
    """A function whose expressions use every integer operation, load and
    store the C core encodes, at many stack depths and register choices (a
    deep operand stack spills past the cache's registers; local.gets of the
    same local share a mirror), from a random offset mod 32."""

    def expr(t: str, depth: int) -> str:
        r = rnd.randrange(7 if depth < 5 else 2)
        other = "i64" if t == "i32" else "i32"
        if r == 0:
            return f"({t}.const {rnd.randrange(-(1 << 31), 1 << 31)})"
        if r == 1:
            return f"(local.get {rnd.choice((0, 2)) if t == 'i32' else rnd.choice((1, 3))})"
        if r == 2:
            op = rnd.choice(_I_BINARY)
            if op not in _I_COMPARE:
                return f"({t}.{op} {expr(t, depth + 1)} {expr(t, depth + 1)})"
            u = rnd.choice(("i32", "i64"))  # the operands' type; a comparison's result is an i32
            inner = f"({u}.{op} {expr(u, depth + 1)} {expr(u, depth + 1)})"
            return inner if t == "i32" else f"(i64.extend_i32_u {inner})"
        if r == 3:
            op = rnd.choice(_I_UNARY[t])
            result = "i32" if op == "eqz" else t
            inner = f"({t}.{op} {expr(t, depth + 1)})"
            return inner if result == t else f"(i64.extend_i32_u {inner})"
        if r == 4:
            load = rnd.choice(_LOADS[t])
            return f"({t}.{load} offset={rnd.choice(_OFFSETS)} {expr('i32', depth + 1)})"
        if r == 5:
            convert = "i32.wrap_i64" if t == "i32" else rnd.choice(("i64.extend_i32_s", "i64.extend_i32_u"))
            return f"({convert} {expr(other, depth + 1)})"
        return f"({t}.eqz {expr(t, depth + 1)})" if t == "i32" else f"(i64.extend_i32_s {expr('i32', depth + 1)})"

    statements = []
    for _ in range(rnd.randrange(1, 32)):  # shifts what follows by a few bytes: every offset mod 32
        statements.append("(nop)" if rnd.random() < 0.5 else "(drop (i32.const 1))")
    for _ in range(12):
        t = rnd.choice(("i32", "i64"))
        store = rnd.choice(("store", "store8", "store16") + (("store32",) if t == "i64" else ()))
        choice = rnd.randrange(3)
        if choice == 0:
            statements.append(f"({t}.{store} offset={rnd.choice(_OFFSETS)} {expr('i32', 0)} {expr(t, 0)})")
        elif choice == 1:
            statements.append(f"(local.set {2 if t == 'i32' else 3} {expr(t, 0)})")
        else:
            statements.append(f"(drop {expr(t, 0)})")
    return (f"(func $f{index} (param i32 i64) (result i64) (local i32 i64) {' '.join(statements)} "
            "(i64.add (local.get 3) (i64.extend_i32_u (local.get 2))))")


def test_integer_operations_loads_and_stores_are_encoded_in_c_as_python_builds_them(monkeypatch):
    """The templates the C core encodes itself (no Python build per key): every
    integer operation, load and store, byte for byte the Python templates,
    padded for every code offset mod 32 as _emit pads them."""
    rnd = random.Random(1313)
    wasm = wasmtime.wat2wasm("(module (memory 1) " + "\n".join(_integer_function(rnd, k) for k in range(80)) + ")")
    asked = compile_both_recording_template_requests(monkeypatch, wasm, 80)
    kinds = {fields[0] for fields in asked}
    assert not kinds & {compiler._K_LOAD, compiler._K_STORE, compiler._K_RNUM1, compiler._K_RNUM2}, kinds


#: Float operations whose templates are still built in Python (asked for by the C core).
_FLOAT_IN_PYTHON = ("copysign", "ceil", "floor", "trunc", "nearest")


def _float_function(rnd, index: int) -> str:
    """A function of float expressions: every float operation, comparison
    and conversion, chained so that xmm0 reuse guesses right and wrong
    ("x" and "y" hints), from a random offset mod 32."""
    binary = ("add", "sub", "mul", "div", "min", "max", "copysign")
    unary = ("abs", "neg", "sqrt", "ceil", "floor", "trunc", "nearest")
    compare = ("eq", "ne", "lt", "gt", "le", "ge")

    def expr(t: str, depth: int) -> str:  # t: f32, f64, i32 or i64
        r = rnd.randrange(6 if depth < 4 else 2)
        if t in ("i32", "i64"):
            if r == 0:
                return f"({t}.const {rnd.randrange(-(1 << 31), 1 << 31)})"
            if r == 1:
                return f"(local.get {0 if t == 'i32' else 1})"
            if r in (2, 3):
                f = rnd.choice(("f32", "f64"))
                sat = rnd.choice(("trunc_sat_", "trunc_sat_", "trunc_"))
                return f"({t}.{sat}{f}_{rnd.choice('su')} {expr(f, depth + 1)})"
            inner = f"({rnd.choice(('f32', 'f64'))}.{rnd.choice(compare)} {{0}} {{1}})"
            u = inner[1:4]
            inner = inner.format(expr(u, depth + 1), expr(u, depth + 1))
            return inner if t == "i32" else f"(i64.extend_i32_u {inner})"
        if r == 0:
            return f"({t}.const {rnd.uniform(-1e3, 1e3):.3f})"
        if r == 1:
            return f"(local.get {2 if t == 'f32' else 3})"
        if r == 2:
            return f"({t}.{rnd.choice(binary)} {expr(t, depth + 1)} {expr(t, depth + 1)})"
        if r == 3:
            return f"({t}.{rnd.choice(unary)} {expr(t, depth + 1)})"
        if r == 4:
            i = rnd.choice(("i32", "i64"))
            return f"({t}.convert_{i}_{rnd.choice('su')} {expr(i, depth + 1)})"
        if t == "f32":
            return f"(f32.demote_f64 {expr('f64', depth + 1)})"
        return f"(f64.promote_f32 {expr('f32', depth + 1)})"

    statements = ["(nop)"] * rnd.randrange(1, 32)
    for _ in range(10):
        t = rnd.choice(("f32", "f64", "i32", "i64"))
        statements.append(f"(local.set {('i32', 'i64', 'f32', 'f64').index(t)} {expr(t, 0)})")
    return (f"(func $g{index} (param i32 i64 f32 f64) (result f64) {' '.join(statements)} "
            "(f64.add (local.get 3) (f64.promote_f32 (local.get 2))))")


def test_float_operations_and_conversions_are_encoded_in_c_as_python_builds_them(monkeypatch):
    """Float arithmetic, min/max, comparisons, sqrt, demote/promote and the
    conversions (but from/to u64) encoded by the C core, byte for byte the
    Python templates with their xmm0 reuse guesses; only the rounding and
    copysign templates (and u64 conversions) are still asked of Python."""
    rnd = random.Random(2424)
    # A trapping trunc may trap at run time; here only the code matters.
    wasm = wasmtime.wat2wasm("(module " + "\n".join(_float_function(rnd, k) for k in range(60)) + ")")
    asked = compile_both_recording_template_requests(monkeypatch, wasm, 60)
    in_python = {OPCODES[fields[1]].name for fields in asked if fields[0] in (compiler._K_RNUM1, compiler._K_RNUM2)}
    allowed = {f"{t}.{name}" for t in ("f32", "f64") for name in _FLOAT_IN_PYTHON}
    allowed |= {f"{i}.trunc_{f}_{s}" for i in ("i32", "i64") for f in ("f32", "f64") for s in "su"}  # trapping
    allowed |= {"i64.trunc_sat_f32_u", "i64.trunc_sat_f64_u", "f32.convert_i64_u", "f64.convert_i64_u"}
    assert in_python <= allowed, in_python - allowed
    assert in_python, "the sample has operations still built in Python"
