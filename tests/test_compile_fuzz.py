"""The whole compile pipeline on mutated modules: decode, validate, compile, publish, instantiate.

``tests/test_wasm_fuzz.py`` fuzzes the front end alone; here every mutated module
goes through ``codemem.Module(engine, bytes)`` (which also runs the x86-64
compiler and seals an EngineCode), in both debug modes.  Mutations are aimed at
the code section most of the time, so many survive validation and reach the
compiler with unusual but valid bodies.

Allowed outcomes, and nothing else:

* ``CompileError`` whose ``offset`` is a byte offset inside the module and whose
  message is non-empty;
* success; then the module must also be valid for Wasmtime (restricted to wasm
  2.0, as in test_wasm_fuzz), and instantiating it with dummy imports, then
  calling every exported function with zero arguments, must not crash the
  process (traps are fine).  That runs in a forked child, since mutated code
  may legally loop forever: the child must exit cleanly or still be running at
  the time limit (then it is killed), never die of a signal.

Time per example is bounded by hypothesis' deadline, Python memory by
tracemalloc (a huge LEB count must not make anything allocate its claim).
"""
from __future__ import annotations

import os
import signal
import time
import traceback
import tracemalloc
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codemem
from codemem.errors import CompileError, Trap
from gdbstub.debugimage.dwarf import read_uleb128
from test_wasm_fuzz import REFERENCE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "build"

SMALL_WATS = [
    # Imports of every kind, a start function, active and passive segments.
    """(module $imports
      (import "env" "f" (func $f (param i32 i64) (result i32)))
      (import "env" "mem" (memory 1 4))
      (import "env" "tab" (table 2 funcref))
      (import "env" "g" (global $g i32))
      (global $m (mut i64) (i64.const 5))
      (elem (i32.const 0) $leaf $run)
      (elem funcref (ref.func $run))
      (data (i32.const 16) "hello") (data "passive")
      (start $init)
      (func $init (global.set $m (i64.extend_i32_u (global.get $g))))
      (func $leaf (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3)))
      (func $run (export "run") (param i32) (result i32) (local f64)
        (drop (call $f (local.get 0) (global.get $m)))
        (call_indirect (param i32) (result i32) (local.get 0) (i32.const 0))))""",
    # Control flow: block/loop/if/br_table with values, multi-value.
    """(module $control
      (func $pair (param i32) (result i32 i64) (local.get 0) (i64.extend_i32_s (local.get 0)))
      (func (export "f") (param i32) (result i32) (local i32)
        (block $out (result i32)
          (loop $top
            (local.set 1 (i32.add (local.get 1) (i32.const 3)))
            (br_if $out (local.get 1) (i32.gt_u (local.get 1) (i32.const 30)))
            (block $b (block $a (br_table $a $b $top (i32.and (local.get 0) (i32.const 3))))
              (local.set 1 (i32.add (local.get 1) (i32.const 1))))
            (br $top))
          (unreachable))
        (if (result i32) (local.get 0)
          (then (call $pair (i32.const 7)) (i32.wrap_i64) (i32.add))
          (else (i32.const 2)))
        (i32.add)))""",
    # Numeric: every class of operator the compiler lowers specially.
    """(module $numeric
      (func (export "f") (param i32 i64 f32 f64) (result f64)
        (i32.div_s (local.get 0) (i32.const 3)) (i32.rem_u (local.get 0) (i32.const 7)) (i32.rotl)
        (i64.shr_s (local.get 1) (i64.const 65)) (i64.clz) (i32.wrap_i64) (i32.xor)
        (f32.copysign (local.get 2) (f32.const -0)) (i32.trunc_sat_f32_s) (i32.popcnt) (i32.add)
        (f64.convert_i32_u)
        (f64.min (local.get 3) (f64.promote_f32 (local.get 2))) (f64.nearest) (f64.add)
        (i64.trunc_f64_s (f64.const 1e6)) (f64.reinterpret_i64) (f64.max)))""",
    # Memory, tables, reference instructions, bulk operations.
    """(module $memory
      (memory 1 2) (table $t 4 funcref) (table $e 2 externref)
      (func $id (param i32) (result i32) (local.get 0))
      (elem declare func $id)
      (data $d "0123456789")
      (func (export "f") (param i32) (result i32)
        (i64.store offset=4 align=4 (local.get 0) (i64.const -1))
        (memory.init $d (i32.const 0) (i32.const 2) (i32.const 3))
        (memory.copy (i32.const 100) (i32.const 0) (i32.const 8))
        (memory.fill (i32.const 200) (i32.const 7) (local.get 0))
        (table.set $t (i32.const 1) (ref.func $id))
        (drop (table.grow $e (ref.null extern) (i32.const 1)))
        (drop (memory.grow (i32.const 1)))
        (i32.add (i32.load16_s (i32.const 100)) (memory.size))
        (call_indirect $t (param i32) (result i32) (i32.const 1))))""",
]


def seed_modules() -> list[bytes]:
    seeds = [wasmtime.wat2wasm(w) for w in SMALL_WATS]
    seeds += [p.read_bytes() for p in sorted(EXAMPLES.glob("*.wasm"))]
    return seeds


SEEDS = seed_modules()
HUGE_LEBS = [b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x10", b"\xff\xff\xff\xff\xff\x7f",
             b"\x80\x80\x80\x80\x80\x00", b"\xfe\xff\xff\xff\x07", b"\x80\x80\x80\x80\x08"]

#: One-byte opcodes with the same stack signature (wasm spec 5.4.7 numbering):
#: swapping one for another keeps a body valid, and makes the compiler lower a
#: different operator in the same surroundings.
SAME_SIGNATURE = [
    list(range(0x6A, 0x79)),  # i32 binary
    list(range(0x7C, 0x8B)),  # i64 binary
    list(range(0x92, 0x99)),  # f32 binary
    list(range(0xA0, 0xA7)),  # f64 binary
    list(range(0x46, 0x50)),  # i32 comparisons
    list(range(0x51, 0x5B)),  # i64 comparisons
    list(range(0x5B, 0x61)),  # f32 comparisons
    list(range(0x61, 0x67)),  # f64 comparisons
    [0x67, 0x68, 0x69, 0xC0, 0xC1, 0x45],  # i32 -> i32 (clz ctz popcnt extend8_s extend16_s eqz)
    [0x79, 0x7A, 0x7B, 0xC2, 0xC3, 0xC4],  # i64 -> i64
    list(range(0x8B, 0x92)),  # f32 unary
    list(range(0x99, 0xA0)),  # f64 unary
    [0xA8, 0xA9, 0xBC],  # f32 -> i32 (trunc_s trunc_u reinterpret)
    [0xAA, 0xAB],  # f64 -> i32
    [0xAE, 0xAF],  # f32 -> i64
    [0xB0, 0xB1, 0xBD],  # f64 -> i64
    [0xB2, 0xB3, 0xBE],  # i32 -> f32
    [0xB7, 0xB8],  # i32 -> f64
    [0xB4, 0xB5],  # i64 -> f32
    [0xB9, 0xBA, 0xBF],  # i64 -> f64
    [0xAC, 0xAD],  # i32 -> i64
]
OPCODE_CLASS = {op: ops for ops in SAME_SIGNATURE for op in ops}
INTERESTING = [0, 1, -1, 2, 7, 31, 32, 33, 63, 64, 0x7F, 0x80, 0xFFFF, 0x10000, -0x80000000, 0x7FFFFFFF,
               -0x8000000000000000, 0x7FFFFFFFFFFFFFFF, 0x100000000]


def sleb_padded(value: int, length: int) -> bytes | None:
    """``value`` as a signed LEB128 of exactly ``length`` bytes (padded with
    continuation bytes, which the spec allows up to the type's maximum), or None
    if it does not fit."""
    out = bytearray()
    for k in range(length):
        byte = value & 0x7F
        value >>= 7
        last = k == length - 1
        out.append(byte if last else byte | 0x80)
    if value not in (0, -1) or (value == 0 and out[-1] & 0x40) or (value == -1 and not out[-1] & 0x40):
        return None
    return bytes(out)


def uleb_padded(value: int, length: int) -> bytes | None:
    if value < 0 or value >> (7 * length):
        return None
    return bytes(((value >> (7 * k)) & 0x7F) | (0x80 if k < length - 1 else 0) for k in range(length))


def mutation_points(wasm: bytes) -> list[tuple]:
    """Where same-length, structure-aware mutations can go, found with our own
    decoder (it only aims the mutations; the pipeline judges the results):
    ``("op", offset)`` swappable opcodes, ``("sleb", offset, length)`` constants,
    ``("uleb", offset, length)`` memory offsets and local indices."""
    from codemem.wasm.decoder import decode_module

    info = decode_module(wasm)
    points = []
    for index in range(len(info.codes)):
        body = info.read_body(index)
        for ins, following in zip(body, body[1:]):
            if ins.op in OPCODE_CLASS:
                points.append(("op", ins.offset))
            elif ins.name in ("i32.const", "i64.const"):
                points.append(("sleb", ins.offset + 1, following.offset - ins.offset - 1))
            elif ins.name in ("local.get", "local.set", "local.tee", "br_if", "br"):
                points.append(("uleb", ins.offset + 1, following.offset - ins.offset - 1))
            elif ".load" in ins.name or ".store" in ins.name:
                _, offset_at = read_uleb128(wasm, ins.offset + 1)  # skip the alignment
                points.append(("uleb", offset_at, following.offset - offset_at))
    return points



def code_section_range(wasm: bytes) -> tuple[int, int]:
    """[start, end) of the code section's payload (the module's bodies); our own
    walk of the section headers (wasm spec 5.5.2), for aiming mutations."""
    at = 8
    while at < len(wasm):
        section_id = wasm[at]
        size, payload = read_uleb128(wasm, at + 1)
        if section_id == 10:
            return payload, payload + size
        at = payload + size
    return 8, len(wasm)


POINTS = [mutation_points(s) for s in SEEDS]
CODE_RANGES = [code_section_range(s) for s in SEEDS]


@st.composite
def structured_mutation(draw, seed_index: int) -> bytes:
    """1-4 same-length rewrites: opcode swaps within a signature class, new
    constants, memory offsets, local indices and branch depths."""
    data = bytearray(SEEDS[seed_index])
    points = POINTS[seed_index]
    for _ in range(draw(st.integers(1, 4))):
        point = draw(st.sampled_from(points))
        if point[0] == "op":
            data[point[1]] = draw(st.sampled_from(OPCODE_CLASS[data[point[1]]]))
            continue
        _, at, length = point
        if point[0] == "sleb":
            value = draw(st.sampled_from(INTERESTING) | st.integers(-(1 << 63), (1 << 63) - 1))
            encoded = sleb_padded(value, length) or sleb_padded(value & 0x3F, length)
        else:
            encoded = uleb_padded(draw(st.sampled_from(INTERESTING[:14]) | st.integers(0, 40)), length)
        if encoded is not None:
            data[at:at + length] = encoded
    return bytes(data)


@st.composite
def byte_mutation(draw, seed_index: int) -> bytes:
    """Blind byte-level damage, aimed inside the code section most of the time."""
    data = bytearray(SEEDS[seed_index])
    code_start, code_end = CODE_RANGES[seed_index]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 9)) < 7 and code_end - code_start > 1 and code_end <= len(data):
            i = draw(st.integers(code_start, code_end - 1))
        else:
            i = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "leb", "dup"]))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete" and data:
            del data[i:i + draw(st.integers(1, 3))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "leb":
            data[i:i + 1] = draw(st.sampled_from(HUGE_LEBS))
        elif kind == "dup" and data:
            data[i:i] = data[i:i + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def mutated_modules(draw) -> bytes:
    seed_index = draw(st.integers(0, len(SEEDS) - 1))
    if draw(st.integers(0, 9)) < 6:
        return draw(structured_mutation(seed_index))
    return draw(byte_mutation(seed_index))


# --------------------------------------------------------------------------
# Instantiation with dummy imports
# --------------------------------------------------------------------------


def dummy_import(store: codemem.Store, imp: codemem.runtime.ImportType):
    t = imp.type
    if isinstance(t, codemem.FuncType):
        zeros = tuple(None if r in (codemem.ValType.FUNCREF, codemem.ValType.EXTERNREF) else 0 for r in t.results)

        def host(*args):
            return zeros[0] if len(zeros) == 1 else (zeros or None)

        return codemem.Func(store, t, host)
    if isinstance(t, codemem.MemoryType):
        return codemem.Memory(store, t)
    if isinstance(t, codemem.TableType):
        return codemem.Table(store, t, None)
    is_ref = t.valtype in (codemem.ValType.FUNCREF, codemem.ValType.EXTERNREF)
    return codemem.Global(store, t, None if is_ref else 0)


#: What instantiating a module the compiler accepted, or calling its exports,
#: may raise (wasm spec 4.5.4: segments out of bounds and start-function traps;
#: guest traps); MemoryError/OSError only for a declared memory the host cannot
#: commit.
CLEAN_FAILURES = (Trap, MemoryError, OSError)


def zero_args(functype) -> list:
    return [None if t in (codemem.ValType.FUNCREF, codemem.ValType.EXTERNREF) else 0 for t in functype.params]


def instantiate_and_run(module: codemem.Module) -> None:
    """Instantiates with dummy imports, then calls every exported function with zero arguments."""
    store = codemem.Store(module.engine, stack_size=1 << 20)
    try:
        imports = [dummy_import(store, imp) for imp in module.imports]
        try:
            instance = codemem.Instance(store, module, imports)
        except CLEAN_FAILURES:
            return
        for export in instance.exports.values():
            if isinstance(export, codemem.Func):
                try:
                    export(*zero_args(export.type))
                except CLEAN_FAILURES:
                    pass
    finally:
        store.close()


def run_in_child(module: codemem.Module, time_limit: float) -> str:
    """``instantiate_and_run`` in a forked child: mutated code may legally loop
    forever, and a crash must fail the test, not end the test run."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            instantiate_and_run(module)
        except BaseException:  # reported through the exit status; the parent fails the test
            traceback.print_exc()
            status = 3
        os._exit(status)
    deadline = time.monotonic() + time_limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # our own child: a guest that never ends is legal
            os.waitpid(pid, 0)
            return "still running"
        time.sleep(0.002)
    assert not os.WIFSIGNALED(status), f"guest code killed the process: signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0, "instantiation or a call raised an unexpected exception (traceback above)"
    return "ran"


# --------------------------------------------------------------------------
# The property
# --------------------------------------------------------------------------

ENGINES = {debug: codemem.Engine(debug=debug) for debug in (True, False)}
#: Python allocations of one Module() call: generous for the seeds (compiling a
#: 10 KiB example takes a few MiB), far below what a 2**32 count would take.
MEMORY_LIMIT = 64 << 20
#: Wall time a mutant's guest code may run (instantiation plus every export).
RUN_TIME_LIMIT = 0.25


def check_pipeline(data: bytes, debug: bool, time_limit: float | None = None) -> str:
    tracemalloc.start()
    try:
        try:
            module = codemem.Module(ENGINES[debug], data)
        except CompileError as exc:
            assert isinstance(exc.offset, int), f"CompileError without an offset: {exc}"
            assert 0 <= exc.offset <= len(data), (exc.offset, len(data), str(exc))
            assert exc.message, "CompileError without a message"
            return "rejected"
        finally:
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"Module() allocated {peak >> 20} MiB"
    try:
        try:
            wasmtime.Module.validate(REFERENCE, data)
        except wasmtime.WasmtimeError as theirs:
            pytest.fail(f"codemem compiles a module wasmtime (wasm 2.0) rejects: {theirs}")
        return run_in_child(module, time_limit or RUN_TIME_LIMIT)
    finally:
        module.engine_code.close()


def test_mutated_modules_compile_or_fail_cleanly():
    outcomes: dict[str, int] = {}

    @settings(max_examples=700, deadline=3000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated_modules(), debug=st.booleans())
    def compile_or_fail_cleanly(data, debug):
        outcome = check_pipeline(data, debug)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    compile_or_fail_cleanly()
    # The fuzz is only worth its time if many mutants are valid and reach the
    # compiler and the generated code.
    accepted = sum(n for k, n in outcomes.items() if k != "rejected")
    assert accepted >= 0.2 * sum(outcomes.values()), outcomes


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("index", range(len(SEEDS)), ids=lambda i: f"seed{i}")
def test_unmutated_seeds_compile_and_instantiate(index, debug):
    assert check_pipeline(SEEDS[index], debug, time_limit=10.0) == "ran"


@pytest.mark.timeout(30)  # a hang guard: 2**32 iterations would never finish
@pytest.mark.parametrize("leb", HUGE_LEBS, ids=lambda b: b.hex())
def test_huge_counts_in_a_body_fail_fast(leb):
    """A function body claiming 2**32 locals, or a br_table with 2**32 targets."""
    header = b"\x00asm\x01\x00\x00\x00" + b"\x01\x04\x01\x60\x00\x00" + b"\x03\x02\x01\x00"
    for body in (b"\x01" + leb + b"\x7f" + b"\x0b",  # one local group with a huge count
                 b"\x00" + b"\x41\x00" + b"\x0e" + leb + b"\x00\x00" + b"\x0b"):  # br_table
        code = b"\x01" + bytes([len(body)]) + body
        data = header + b"\x0a" + bytes([len(code)]) + code
        for debug in (True, False):
            assert check_pipeline(data, debug) == "rejected"
