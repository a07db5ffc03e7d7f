"""A module compiled in several processes (``compile_module(..., jobs=N)``).

Contract: the image and frame table are byte for byte those of a compile in one
process (calls between runs, trap stubs, jump tables, patch sites, the types and
mirror pools of the frame table); a CompileError anywhere gives exactly the
error the one-process compile reports; ``$WASM_GDBSTUB_COMPILE_JOBS`` sets the
default.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from codemem.errors import CompileError
from codemem.frametable import FrameTable
from codemem.wasm.decoder import decode_module
from codemem.x64 import compiler
from codemem.x64.compiler import compile_module

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "build").glob("*.wasm"))

#: Functions that call each other across any split, a br_table (jump tables),
#: traps (stubs and the trap veneer), floats (xmm0 reuse) and memory.
CROSS_CALLS = """(module
  (memory 1)
  (table 4 funcref)
  (elem (i32.const 0) $a $b $c $d)
  (type $t (func (param i32) (result i32)))
  (func $a (type $t) (if (result i32) (i32.lt_s (local.get 0) (i32.const 1))
    (then (i32.const 1)) (else (call $d (i32.sub (local.get 0) (i32.const 1))))))
  (func $b (type $t) (block $x (block $y (block $z
    (br_table $x $y $z (i32.and (local.get 0) (i32.const 3))))
    (return (i32.div_s (i32.const 100) (local.get 0))))
    (return (i32.load offset=4 (i32.and (local.get 0) (i32.const 0xfff0)))))
    (call $a (local.get 0)))
  (func $c (type $t) (i32.trunc_f32_s (f32.mul (f32.convert_i32_s (local.get 0)) (f32.const 1.5))))
  (func $d (type $t) (i32.add (call $b (local.get 0))
    (call_indirect (type $t) (local.get 0) (i32.and (local.get 0) (i32.const 3)))))
  (func (export "run") (param i32) (result i32) (call $d (local.get 0))))"""


def image(wasm: bytes, debug: bool, jobs: int) -> tuple[bytes, bytes]:
    compiled = compile_module(decode_module(wasm), debug=debug, jobs=jobs)
    return compiled.code, compiled.frame_table


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("jobs", [2, 3, 4])
def test_a_module_compiled_in_parts_is_byte_identical(debug, jobs):
    wasm = wasmtime.wat2wasm(CROSS_CALLS)
    one = image(wasm, debug, 1)
    assert image(wasm, debug, jobs) == one
    table = FrameTable(one[1])
    assert table.num_functions == 5
    assert (table.num_sites > 0) is debug


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_compiled_in_two_parts_is_byte_identical(path, debug):
    wasm = path.read_bytes()
    assert image(wasm, debug, 2) == image(wasm, debug, 1)


def test_an_invalid_function_in_a_later_part_reports_the_one_process_error():
    # wat2wasm refuses an invalid module: patch a valid one's last body
    # (i32.const 0 -> i64.const 0: the result type is then wrong).
    good = wasmtime.wat2wasm(CROSS_CALLS.replace("(call $d (local.get 0)))", "(i32.const 0))"))
    at = good.rindex(bytes([0x41, 0x00, 0x0B]))
    bad = good[:at] + bytes([0x42]) + good[at + 1:]
    with pytest.raises(CompileError) as one:
        compile_module(decode_module(bad), debug=True, jobs=1)
    for jobs in (2, 3):
        with pytest.raises(CompileError) as parts:
            compile_module(decode_module(bad), debug=True, jobs=jobs)
        assert (parts.value.message, parts.value.offset) == (one.value.message, one.value.offset)


def test_the_environment_sets_the_default_jobs_and_small_modules_use_one(monkeypatch):
    info = decode_module(wasmtime.wat2wasm(CROSS_CALLS))
    monkeypatch.delenv(compiler.JOBS_ENV, raising=False)
    assert compiler.compile_jobs(info) == 1  # a small code section
    monkeypatch.setenv(compiler.JOBS_ENV, "3")
    assert compiler.compile_jobs(info) == 3
    monkeypatch.setenv(compiler.JOBS_ENV, "lots")
    assert compiler.compile_jobs(info) == 1


def test_runs_split_the_bodies_evenly_and_cover_every_function():
    info = decode_module(EXAMPLES[0].read_bytes())
    n = len(info.codes)
    for jobs in range(1, 6):
        runs = compiler._split(info, jobs)
        assert runs[0][0] == 0 and runs[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        assert all(last > first for first, last in runs)
        assert len(runs) <= jobs


def test_a_child_that_dies_is_replaced_by_the_one_process_compile(monkeypatch):
    import os

    wasm = wasmtime.wat2wasm(CROSS_CALLS)
    expected = image(wasm, True, 1)
    parent = os.getpid()
    real = compiler._ModuleCompiler.compile_chunk

    def dies_in_a_child(self, bodies=None):
        if os.getpid() != parent:
            raise MemoryError("the child ran out of memory")
        return real(self, bodies)

    monkeypatch.setattr(compiler._ModuleCompiler, "compile_chunk", dies_in_a_child)
    assert image(wasm, True, 2) == expected


def test_a_large_module_gets_one_process_per_idle_cpu(monkeypatch):
    from types import SimpleNamespace

    large = SimpleNamespace(code_section_offset=100, code_section_end=100 + compiler.PARALLEL_MIN_CODE_BYTES)
    monkeypatch.delenv(compiler.JOBS_ENV, raising=False)
    monkeypatch.setattr(compiler.os, "sched_getaffinity", lambda pid: set(range(8)))
    for load, jobs in ((0.1, 4), (5.5, 3), (7.2, 1), (30.0, 1)):
        monkeypatch.setattr(compiler.os, "getloadavg", lambda load=load: (load, load, load))
        assert compiler.compile_jobs(large) == jobs, load


def test_no_fork_means_one_process(monkeypatch):
    wasm = wasmtime.wat2wasm(CROSS_CALLS)
    expected = image(wasm, False, 1)

    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(compiler.os, "fork", no_fork)
    assert image(wasm, False, 3) == expected
