"""`wasm-gdbstub run` backend (gdbstub.runner) and its minimal WASI (gdbstub.wasi).

A real WASI program (wasi-libc printf) is built with clang-19 into the test's tmp
dir; the examples' sample calls of examples/exports.json are replayed through
run_module and its printed output is compared with the expectations.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

import codemem
from codemem import LinkError, Trap, Val, ValType
from gdbstub import runner
from gdbstub.runner import default_entry, format_results, format_value, instantiate, parse_invoke_args, run_module
from gdbstub.wasi import WasiContext, WasiExit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PROGRAMS = json.loads((EXAMPLES / "exports.json").read_text())["programs"]


def write_wat(tmp_path: Path, name: str, wat: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def run(path, invoke=None, args=()):
    out, err = io.StringIO(), io.StringIO()
    code = run_module(str(path), invoke, list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def func_of(tmp_path, params: str, results: str = ""):
    """An exported function `f` with the given WAT param/result lists, instantiated."""
    path = write_wat(tmp_path, "sig", f'(module (func (export "f") {params} {results} unreachable))')
    store = codemem.Store(codemem.Engine())
    instance = instantiate(store, codemem.Module.from_file(store.engine, path))
    return instance.exports["f"]


# --------------------------------------------------------------------------
# parse_invoke_args
# --------------------------------------------------------------------------


def test_parse_int_arguments(tmp_path):
    f = func_of(tmp_path, "(param i32 i64 i32 i32 i64)")
    vals = parse_invoke_args(f, ["42", "-0x10", "0xffffffff", "+7", "-9223372036854775808"])
    assert [v.type for v in vals] == [ValType.I32, ValType.I64, ValType.I32, ValType.I32, ValType.I64]
    assert [v.value for v in vals] == [42, -16, -1, 7, -(1 << 63)]
    assert vals[2].bits == 0xFFFF_FFFF


@pytest.mark.parametrize("text", ["4294967296", "-2147483649", "1.5", "0x", "12a", "", " 1", "1_000", "abc"])
def test_parse_int_rejects(tmp_path, text):
    f = func_of(tmp_path, "(param i64 i32)")
    with pytest.raises(ValueError, match=r"argument 1 .* not a valid i32"):
        parse_invoke_args(f, ["0", text])


def test_parse_wrong_count_names_types(tmp_path):
    f = func_of(tmp_path, "(param i32 f64)")
    with pytest.raises(ValueError, match=r"`f` takes 2 arguments \(i32, f64\), got 1"):
        parse_invoke_args(f, ["1"])
    with pytest.raises(ValueError, match=r"takes 2 arguments .* got 3"):
        parse_invoke_args(f, ["1", "2", "3"])


def test_parse_float_arguments(tmp_path):
    f = func_of(tmp_path, "(param f32 f64 f32 f64 f32 f64 f32 f32)")
    vals = parse_invoke_args(f, ["0.1", "0.1", "nan", "-inf", "-0", "1e400", "1e39", "Infinity"])
    assert vals[0].bits == struct.unpack("<I", struct.pack("<f", 0.1))[0]
    assert vals[1].bits == struct.unpack("<Q", struct.pack("<d", 0.1))[0]
    assert vals[2].bits == 0x7FC0_0000
    assert vals[3].bits == 0xFFF0_0000_0000_0000
    assert vals[4].bits == 0x8000_0000
    assert math.isinf(vals[5].value) and vals[5].value > 0
    assert vals[6].bits == 0x7F80_0000  # beyond f32 range: rounds to infinity, no error
    assert vals[7].bits == 0x7F80_0000


def test_parse_f32_rounds_once(tmp_path):
    # Just above the midpoint between 1 and the next f32: the right answer rounds
    # up; going through f64 first lands exactly on the midpoint and ties to 1.0.
    f = func_of(tmp_path, "(param f32 f32 f32)")
    text = "1.0000000596046447753906251"
    vals = parse_invoke_args(f, [text, "1.401298464324817e-45", "1e-46"])
    assert vals[0].bits == 0x3F80_0001
    assert struct.unpack("<I", struct.pack("<f", float(text)))[0] == 0x3F80_0000
    assert vals[1].bits == 1  # smallest subnormal
    assert vals[2].bits == 0  # below half of it: zero


@pytest.mark.parametrize("text", ["1.2.3", "0x1p3", "e5", "--1", "nan1", ""])
def test_parse_float_rejects(tmp_path, text):
    f = func_of(tmp_path, "(param f32)")
    with pytest.raises(ValueError, match=r"argument 0 .* not a valid f32"):
        parse_invoke_args(f, [text])


def test_parse_reference_argument_rejected(tmp_path):
    f = func_of(tmp_path, "(param externref)")
    with pytest.raises(ValueError, match="argument 0 .* externref"):
        parse_invoke_args(f, ["0"])


# --------------------------------------------------------------------------
# format_results
# --------------------------------------------------------------------------


@pytest.mark.parametrize("val, text", [
    # What Rust's `{}` prints for these floats (wasmtime run --invoke uses it).
    (Val.f32(0.1), "0.1"),
    (Val.f32(1.0 / 3.0), "0.33333334"),
    (Val.f32_bits(0x7F7F_FFFF), "340282350000000000000000000000000000000"),
    (Val.f32_bits(1), "0.000000000000000000000000000000000000000000001"),
    (Val.f64(1.0 / 3.0), "0.3333333333333333"),
    (Val.f64(1e20), "100000000000000000000"),
    (Val.f64(1e-7), "0.0000001"),
    (Val.f64(2.5), "2.5"),
    (Val.f64(-3.0), "-3"),
    (Val.f64(-0.0), "-0"),
    (Val.f32_bits(0xFFC0_0001), "NaN"),
    (Val.f64(math.inf), "inf"),
    (Val.f32(-math.inf), "-inf"),
    (Val.i32(-1), "-1"),
    (Val.i32(0xFFFF_FFFF), "-1"),
    (Val.i64(1 << 63), "-9223372036854775808"),
    (Val.funcref(None), "<null funcref>"),
    (Val.externref(None), "<null externref>"),
    (Val.externref(object()), "<externref>"),
])
def test_format_value(val, text):
    assert format_value(val) == text


def test_format_results_lines():
    assert format_results([]) == ""
    assert format_results(None) == ""
    assert format_results([Val.i32(5), Val.f64(0.5)]) == "5\n0.5\n"
    assert format_results((1, 2.0)) == "1\n2\n"
    assert format_results(7) == "7\n"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF_FFFF))
def test_f32_format_parse_round_trip(bits):
    text = format_value(Val.f32_bits(bits))
    parsed = runner._parse_float_bits(text, ValType.F32)
    if math.isnan(Val.f32_bits(bits).value):
        assert text == "NaN"
    else:
        assert parsed == bits, text


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1))
def test_f64_format_parse_round_trip(bits):
    text = format_value(Val.f64_bits(bits))
    if math.isnan(Val.f64_bits(bits).value):
        assert text == "NaN"
    else:
        assert "e" not in text
        assert runner._parse_float_bits(text, ValType.F64) == bits, text


# --------------------------------------------------------------------------
# instantiate, default_entry, WASI linking
# --------------------------------------------------------------------------


def instance_of(tmp_path, wat, wasi=None):
    path = write_wat(tmp_path, "m", wat)
    store = codemem.Store(codemem.Engine())
    return instantiate(store, codemem.Module.from_file(store.engine, path), wasi=wasi)


@pytest.mark.parametrize("exports, expected", [
    (["main", "_start", "x"], "_start"),
    (["x", "main"], "main"),
    (["x"], None),
])
def test_default_entry(tmp_path, exports, expected):
    funcs = "".join(f'(func (export "{name}"))' for name in exports)
    assert default_entry(instance_of(tmp_path, f"(module {funcs})")) == expected


def test_default_entry_ignores_non_functions(tmp_path):
    assert default_entry(instance_of(tmp_path, '(module (global (export "_start") i32 (i32.const 0)))')) is None


def test_unknown_import_is_link_error(tmp_path):
    with pytest.raises(LinkError, match=r"env::log"):
        instance_of(tmp_path, '(module (import "env" "log" (func (param i32))))')
    with pytest.raises(LinkError, match=r"wasi_snapshot_preview1::mem"):
        instance_of(tmp_path, '(module (import "wasi_snapshot_preview1" "mem" (memory 1)))')


def test_wasi_import_with_wrong_type_is_link_error(tmp_path):
    with pytest.raises(LinkError, match=r"wasi_snapshot_preview1::fd_write"):
        instance_of(tmp_path, '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32))))')


def test_unimplemented_wasi_function_traps_naming_it(tmp_path):
    # sock_open is not part of preview 1 (WasmEdge adds it): importing it links,
    # calling it traps with its name.
    inst = instance_of(tmp_path, """(module
      (import "wasi_snapshot_preview1" "sock_open" (func $open (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "f") (result i32)
        (call $open (i32.const 1) (i32.const 1) (i32.const 0))))""")
    with pytest.raises(Trap, match="sock_open"):
        inst.exports["f"]()


WASI_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $argsz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; "h\\xc3" and "\\xa9!\\n": one UTF-8 character split across two iovecs
  (data (i32.const 100) "h\\c3")
  (data (i32.const 110) "\\a9!\\n")
  (data (i32.const 0) "\\64\\00\\00\\00\\02\\00\\00\\00\\6e\\00\\00\\00\\03\\00\\00\\00")
  (func (export "write") (param $fd i32) (result i32)
    (call $write (local.get $fd) (i32.const 0) (i32.const 2) (i32.const 200)))
  (func (export "written") (result i32) (i32.load (i32.const 200)))
  (func (export "write_bad_pointer") (result i32)
    (call $write (i32.const 1) (i32.const 0xfffffff0) (i32.const 1) (i32.const 200)))
  (func (export "exit") (param i32) (call $exit (local.get 0)) (unreachable))
  (func (export "argc") (result i32)
    (drop (call $argsz (i32.const 300) (i32.const 304))) (i32.load (i32.const 300)))
  (func (export "argbuf") (result i32)
    (drop (call $argsz (i32.const 300) (i32.const 304))) (i32.load (i32.const 304)))
  (func (export "args") (result i32) (call $args (i32.const 400) (i32.const 500)))
  (func (export "clock") (param i32) (result i32) (call $clock (local.get 0) (i64.const 1) (i32.const 600)))
  (func (export "now") (result i64) (i64.load (i32.const 600)))
  (func (export "random") (result i32) (call $random (i32.const 700) (i32.const 32)))
  (func (export "fdstat") (param i32) (result i32) (call $fdstat (local.get 0) (i32.const 800)))
)"""


def test_wasi_calls(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    wasi = WasiContext(args=["prog", "x", "héllo"], stdout=out, stderr=err)
    inst = instance_of(tmp_path, WASI_WAT, wasi)
    ex = inst.exports
    memory = ex["memory"]
    assert ex["write"](1) == 0 and ex["written"]() == 5
    assert ex["write"](2) == 0
    assert ex["write"](7) == 8  # EBADF
    assert ex["write_bad_pointer"]() == 21  # EFAULT, and the host survives
    wasi.flush()
    assert out.getvalue() == "hé!\n" and err.getvalue() == "hé!\n"

    assert ex["argc"]() == 3 and ex["argbuf"]() == len(b"prog\0x\0h\xc3\xa9llo\0")
    assert ex["args"]() == 0
    pointers = struct.unpack("<3I", memory.read(400, 12))
    assert memory.read(pointers[2], 7) == "héllo".encode() + b"\0"
    assert memory.read(500, 7) == b"prog\0x\0"

    assert ex["clock"](0) == 0
    assert abs(ex["now"]() - time.time_ns()) < 60 * 10**9
    assert ex["clock"](99) == 28  # EINVAL
    assert ex["random"]() == 0 and memory.read(700, 32) != bytes(32)
    assert ex["fdstat"](1) == 0
    filetype, flags, rights_base, _ = struct.unpack("<BxHxxxxQQ", memory.read(800, 24))
    assert (filetype, flags, rights_base) == (2, 0, 1 << 6)
    assert ex["fdstat"](5) == 8

    with pytest.raises(WasiExit) as info:
        ex["exit"](7)
    assert info.value.status == 7


def test_wasi_output_to_binary_stream(tmp_path):
    out = io.BytesIO()
    inst = instance_of(tmp_path, WASI_WAT, WasiContext(stdout=out))
    inst.exports["write"](1)
    assert out.getvalue() == b"h\xc3\xa9!\n"


# --------------------------------------------------------------------------
# run_module
# --------------------------------------------------------------------------


HELLO_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    printf("hello, %s! %d\n", "wasi", 6 * 7);
    fprintf(stderr, "warning: %.2f\n", 1.5);
    for (int i = 1; i < argc; i++)
        printf("arg[%d]=%s\n", i, argv[i]);
    if (time(NULL) < 1600000000)
        return 9;
    if (argc > 1 && strcmp(argv[1], "exit") == 0)
        exit(atoi(argv[2]));
    return argc > 1 && strcmp(argv[1], "fail") == 0 ? 3 : 0;
}
"""


@pytest.fixture(scope="module")
def hello_wasm(tmp_path_factory):
    clang = shutil.which("clang-19")
    assert clang, "clang-19 is required (scripts/bootstrap installs it)"
    directory = tmp_path_factory.mktemp("wasi")
    source = directory / "hello.c"
    source.write_text(HELLO_C)
    target = directory / "hello.wasm"
    subprocess.run([clang, "--target=wasm32-wasi", "-g", "-O1", str(source), "-o", str(target)],
                   check=True, capture_output=True, timeout=60)
    return target


def test_run_wasi_hello(hello_wasm):
    code, out, err = run(hello_wasm)
    assert (code, out, err) == (0, "hello, wasi! 42\n", "warning: 1.50\n")


def test_run_wasi_arguments_and_exit_status(hello_wasm):
    code, out, _ = run(hello_wasm, None, ["a b", "ünï"])
    assert code == 0
    assert out.splitlines()[1:] == ["arg[1]=a b", "arg[2]=ünï"]
    code, out, _ = run(hello_wasm, None, ["fail"])
    assert code == 3 and out.endswith("arg[1]=fail\n")  # main's return value goes through proc_exit
    code, out, _ = run(hello_wasm, None, ["exit", "17"])
    assert code == 17 and "arg[2]=17" in out  # exit() flushes stdio first


def test_run_wasi_stdout_to_sys_stdout(hello_wasm, capfd):
    # The default streams: the guest's bytes reach file descriptors 1 and 2.
    assert run_module(str(hello_wasm), None, []) == 0
    captured = capfd.readouterr()
    assert captured.out == "hello, wasi! 42\n" and captured.err == "warning: 1.50\n"


def test_run_invoke_prints_results(tmp_path):
    path = write_wat(tmp_path, "calc", """(module
      (func (export "pair") (param i32 i64) (result i64 i32)
        (i64.add (i64.extend_i32_s (local.get 0)) (local.get 1)) (local.get 0))
      (func (export "half") (param f32) (result f32) (f32.mul (local.get 0) (f32.const 0.5)))
      (func (export "nothing")))""")
    assert run(path, "pair", ["-5", "0x10"]) == (0, "11\n-5\n", "")
    assert run(path, "half", ["0.2"]) == (0, "0.1\n", "")
    assert run(path, "nothing") == (0, "", "")


def test_run_main_entry_with_arguments(tmp_path):
    path = write_wat(tmp_path, "m", '(module (func (export "main") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3))))')
    assert run(path, None, ["14"]) == (0, "42\n", "")


def test_run_trap_prints_backtrace(tmp_path):
    path = write_wat(tmp_path, "traps", """(module
      (func $inner (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0)))
      (func $middle (param i32) (result i32) (call $inner (local.get 0)))
      (func (export "outer") (param i32) (result i32) (call $middle (local.get 0))))""")
    code, out, err = run(path, "outer", ["0"])
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == "Error: wasm trap: integer divide by zero"
    frames = [line for line in lines if line.startswith("  ")]
    # Offsets: the div_s, then each call instruction, from the decoded bodies.
    info = codemem.Module.from_file(codemem.Engine(), path).info
    offsets = [next(i.offset for i in info.read_body(0) if i.name == "i32.div_s"),
               next(i.offset for i in info.read_body(1) if i.name == "call"),
               next(i.offset for i in info.read_body(2) if i.name == "call")]
    assert frames == [f"  0: traps!inner @ {offsets[0]:#x}",
                      f"  1: traps!middle @ {offsets[1]:#x}",
                      f"  2: traps!outer @ {offsets[2]:#x}"]
    assert run(path, "outer", ["2"]) == (0, "0\n", "")


def test_run_trap_in_start_function(tmp_path):
    path = write_wat(tmp_path, "start", '(module (func $s unreachable) (start $s) (func (export "f")))')
    code, _, err = run(path, "f")
    assert code == 1 and err.startswith("Error: wasm trap: unreachable\n")


def test_run_proc_exit_from_invoked_function(tmp_path):
    path = write_wat(tmp_path, "w", WASI_WAT)
    assert run(path, "exit", ["5"]) == (5, "", "")


@pytest.mark.parametrize("setup, invoke, args, message", [
    ("missing", None, [], "cannot read"),
    ("garbage", None, [], "failed to compile"),
    ("import", "f", [], "env::log"),
    ("ok", None, [], "no `_start` or `main`"),
    ("ok", "g", [], "`g` is not exported"),
    ("ok", "mem", [], "`mem` is not a function"),
    ("ok", "f", ["1"], "takes 2 arguments"),
    ("ok", "f", ["1", "zz"], "argument 1 ('zz') is not a valid f64"),
])
def test_run_usage_errors(tmp_path, setup, invoke, args, message):
    if setup == "missing":
        path = tmp_path / "nope.wasm"
    elif setup == "garbage":
        path = tmp_path / "bad.wasm"
        path.write_bytes(b"\0asm\1\0\0\0\x99")
    elif setup == "import":
        path = write_wat(tmp_path, "imp", '(module (import "env" "log" (func)) (func (export "f")))')
    else:
        path = write_wat(tmp_path, "ok", '(module (memory (export "mem") 1) (func (export "f") (param i32 f64)))')
    code, out, err = run(path, invoke, args)
    assert code == 2 and out == ""
    assert message in err and err.startswith("Error: ")


def test_run_lists_exports_when_no_entry():
    code, _, err = run(EXAMPLES / "build" / "loops.O2.wasm")
    assert code == 2 and "sum_to" in err and "--invoke" in err


@pytest.mark.parametrize("program", [p["program"] for p in PROGRAMS])
def test_examples_invocations_match_exports_json(program):
    """Every sample call of exports.json, through run_module's argument parsing
    and result printing, on both builds."""
    spec = next(p for p in PROGRAMS if p["program"] == program)
    for level in ("O0", "O2"):
        path = EXAMPLES / "build" / f"{program}.{level}.wasm"
        for call in spec["calls"]:
            args = [repr(a) if isinstance(a, float) else str(a) for a in call["args"]]
            code, out, err = run(path, call["func"], args)
            where = f"{path.name} {call['func']}{tuple(call['args'])}"
            if call.get("traps"):
                assert code == 1, where
                assert err.startswith(f"Error: wasm trap: {call['trap']}"), (where, err)
                assert f"\n  0: {program}.{level}!" in err, (where, err)
                continue
            assert (code, err) == (0, ""), (where, err)
            expected = call["expect"]
            result_type = spec["exports"][call["func"]]["results"][0]
            if result_type in ("f32", "f64"):
                # The printed shortest digits must read back as the exact expected value.
                valtype = ValType.F32 if result_type == "f32" else ValType.F64
                printed = runner._parse_float_bits(out.strip(), valtype)
                assert printed == Val.from_python(valtype, float(expected)).bits, (where, out)
            else:
                assert out == f"{expected}\n", (where, out)


def test_run_runaway_recursion_elides_backtrace(tmp_path):
    path = write_wat(tmp_path, "deep", '(module (func $f (export "f") (param i32) (call $f (local.get 0))))')
    code, _, err = run(path, "f", ["1"])
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "Error: wasm trap: call stack exhausted"
    frames = [line for line in lines if re.match(r"\s*\d+: deep!f @ 0x", line)]
    assert len(frames) == runner._BACKTRACE_HEAD + runner._BACKTRACE_TAIL
    assert frames[0].startswith("  0: ") and frames[49].startswith(" 49: ")
    assert re.search(r"^     \.\.\. \d+ frames elided \.\.\.$", err, re.M)


def test_wasi_call_from_start_function(tmp_path):
    # The start function runs inside Instance(): WASI must find the memory already.
    wat = WASI_WAT.replace('(func (export "write")', '(start $hello) (func $hello (drop (call $write (i32.const 1) '
                           '(i32.const 0) (i32.const 2) (i32.const 200)))) (func (export "write")')
    path = write_wat(tmp_path, "starter", wat)
    assert run(path, "written") == (0, "hé!\n5\n", "")


@pytest.mark.parametrize("argv, expected", [
    # A word after an option is the guest's too (argparse fills the
    # positionals once, before the option), so the argument check names it.
    (["run", "{path}", "1", "--invoke", "f", "zz"], "argument 1 ('zz') is not a valid f64"),
    (["run", "{path}", "--invoke", "f", "--env", "A=1", "1"], "takes 2 arguments"),
    (["run", "{path}", "--invoke", "f", "--no-such-option", "1"], "unrecognized arguments: --no-such-option"),
])
def test_cli_guest_arguments_after_an_option_are_checked_as_the_guests(tmp_path, capsys, argv, expected):
    from gdbstub import cli

    path = write_wat(tmp_path, "ok", '(module (func (export "f") (param i32 f64)))')
    with contextlib.suppress(SystemExit):
        assert cli.main([str(path) if a == "{path}" else a for a in argv]) == 2
    assert expected in capsys.readouterr().err
