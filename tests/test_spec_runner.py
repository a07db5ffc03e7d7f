"""Tests of scripts/spec_test.py, the WebAssembly spec-test runner.

The runner is checked against wasmtime (the reference backend): spec files must pass
with zero failures, and deliberately broken backends must produce failures, so a
runner that silently accepts everything cannot pass. The comparison helpers (NaN
classes, exact float bits, trap texts, skip list) get unit tests of their own.
"""
from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("spec_test", REPO_ROOT / "scripts" / "spec_test.py")
spec_test = importlib.util.module_from_spec(_spec)
sys.modules["spec_test"] = spec_test
_spec.loader.exec_module(spec_test)

SPEC_DIR = spec_test.DEFAULT_SPEC_DIR
Value, Expected = spec_test.Value, spec_test.Expected

# The files named in the task, plus the ones whose float payloads only survive an
# exact-bits value path (signalling NaNs through arguments and results).
WASMTIME_FILES = ["i32.wast", "f32.wast", "br_table.wast", "memory_grow.wast", "call_indirect.wast",
                  "linking.wast", "names.wast", "conversions.wast", "float_exprs.wast", "select.wast",
                  "imports.wast", "bulk.wast", "table_get.wast", "ref_is_null.wast"]


def f32(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# ---------------------------------------------------------------------------------
# The runner against wasmtime
# ---------------------------------------------------------------------------------

def test_spec_dir_is_present():
    assert SPEC_DIR.is_dir(), f"spec tests expected at {SPEC_DIR}"
    assert len(list(SPEC_DIR.glob("*.wast"))) >= 90


@pytest.mark.parametrize("name", WASMTIME_FILES)
def test_wasmtime_passes_spec_file(name):
    result = spec_test.run_wast_file(SPEC_DIR / name, spec_test.WasmtimeBackend)
    assert result.failed == 0, "\n".join(f.describe(name) for f in result.failures)
    assert result.passed > 0
    assert not result.failures


def test_whole_suite_passes_on_wasmtime_through_main(capsys):
    status = spec_test.main(["--engine", "wasmtime", "--spec-dir", str(SPEC_DIR), "--skips", "/nonexistent"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0, "\n".join(line for line in out if "failed 0" not in line)
    assert out[-1].startswith("total: passed ")
    passed, failed, skipped = (int(part.split()[-1]) for part in out[-1].split(":", 1)[1].split(","))
    assert failed == 0 and passed > 25000
    # Only text-format assert_malformed commands are skipped: 567 in this suite.
    assert skipped == 567
    assert sum(1 for line in out if line.endswith(".wast: passed 0, failed 0, skipped 0")) == 0


def test_selection_and_worker_processes(capsys):
    status = spec_test.main(["--engine", "wasmtime", "--spec-dir", str(SPEC_DIR), "-k", "nop", "-k", "fac",
                             "--jobs", "2"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [line.split(":")[0] for line in out] == ["fac.wast", "nop.wast", "total"]
    assert all("failed 0" in line for line in out)


def test_text_malformed_is_skipped_not_failed():
    result = spec_test.run_wast_file(SPEC_DIR / "i32.wast", spec_test.WasmtimeBackend)
    assert result.skipped == 2          # i32.wast's two (assert_malformed (module quote ...))
    assert result.failed == 0


# ---------------------------------------------------------------------------------
# Broken backends must be caught
# ---------------------------------------------------------------------------------

class _FlipsF32Results(spec_test.WasmtimeBackend):
    def invoke(self, instance, name, args):
        return [Value(v.type, v.payload ^ 1) if v.type == "f32" else v
                for v in super().invoke(instance, name, args)]


class _WrongTrapText(spec_test.WasmtimeBackend):
    def invoke(self, instance, name, args):
        try:
            return super().invoke(instance, name, args)
        except spec_test.EngineTrap:
            raise spec_test.EngineTrap("something else") from None


class _QuietsSignallingNaNs(spec_test.WasmtimeBackend):
    """Sends f32 arguments through a C float, as wasmtime's public Val path does."""
    def _to_raw(self, value):
        if value.type == "f32":
            as_float = struct.unpack("<f", struct.pack("<I", value.payload))[0]
            return self._wt.Val.f32(as_float)._new_raw(self._store)
        return super()._to_raw(value)


class _LinkErrorsBecomeTraps(spec_test.WasmtimeBackend):
    def instantiate(self, module, externs):
        try:
            return super().instantiate(module, externs)
        except spec_test.EngineLinkError as exc:
            raise spec_test.EngineTrap(str(exc)) from None


class _AcceptsNothing(spec_test.WasmtimeBackend):
    def compile(self, wasm):
        raise spec_test.EngineCompileError("rejected")


@pytest.mark.parametrize("backend, name, first_line", [
    (_FlipsF32Results, "f32.wast", 19),
    (_WrongTrapText, "i32.wast", 64),
    (_QuietsSignallingNaNs, "select.wast", 194),
    (_LinkErrorsBecomeTraps, "linking.wast", 28),
    (_AcceptsNothing, "binary.wast", 1),
])
def test_broken_backend_is_reported(backend, name, first_line):
    result = spec_test.run_wast_file(SPEC_DIR / name, backend)
    assert result.failed > 0
    assert result.failures[0].line == first_line
    assert result.failed == len(result.failures)


def test_failures_carry_line_expected_and_actual():
    result = spec_test.run_wast_file(SPEC_DIR / "f32.wast", _FlipsF32Results)
    text = result.failures[0].describe("f32.wast")
    assert text.startswith("f32.wast:19: assert_return: expected invoke 'add'(")
    assert "f32:0x80000000" in text and "got [f32:0x80000001" in text


def test_skip_list_covers_failures():
    skips = spec_test.SkipList.parse("i32.wast:64  demo reason\n")
    result = spec_test.run_wast_file(SPEC_DIR / "i32.wast", _WrongTrapText, skips)
    covered = [f for f in result.failures if f.known]
    assert [f.line for f in covered] == [64]
    assert result.failed == len(result.failures) - 1
    whole = spec_test.run_wast_file(SPEC_DIR / "i32.wast", _WrongTrapText,
                                    spec_test.SkipList.parse("i32.wast  whole file\n"))
    assert whole.failed == 0 and whole.skipped == 2 + len(whole.failures)


def test_wast2json_failure_is_a_failure_unless_listed(tmp_path):
    bad = tmp_path / "broken.wast"
    bad.write_text("(module (func (result i32) i32.const))\n(this is not wast\n")
    result = spec_test.run_wast_file(bad, spec_test.WasmtimeBackend)
    assert result.failed == 1 and result.failures[0].command == "wast2json"
    listed = spec_test.run_wast_file(bad, spec_test.WasmtimeBackend,
                                     spec_test.SkipList.parse("broken.wast  cannot convert\n"))
    assert listed.failed == 0 and listed.skipped == 1


def test_unstartable_backend_fails_the_file():
    def no_engine():
        raise ImportError("no engine here")
    result = spec_test.run_wast_file(SPEC_DIR / "nop.wast", no_engine)
    assert result.failed == 1 and "ImportError" in result.failures[0].actual


# ---------------------------------------------------------------------------------
# Comparison helpers
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, bits, canonical, arithmetic", [
    ("f32", 0x7FC0_0000, True, True),
    ("f32", 0xFFC0_0000, True, True),          # sign is free
    ("f32", 0x7FC0_0001, False, True),         # quiet with payload
    ("f32", 0x7FA0_0000, False, False),        # signalling
    ("f32", 0x7F80_0000, False, False),        # +inf
    ("f32", 0x3F80_0000, False, False),        # 1.0
    ("f64", 0x7FF8_0000_0000_0000, True, True),
    ("f64", 0xFFF8_0000_0000_0000, True, True),
    ("f64", 0x7FF8_0000_0000_0001, False, True),
    ("f64", 0x7FF4_0000_0000_0000, False, False),
    ("f64", 0xFFF0_0000_0000_0000, False, False),
])
def test_nan_classes(type_, bits, canonical, arithmetic):
    assert spec_test.is_canonical_nan(type_, bits) is canonical
    assert spec_test.is_arithmetic_nan(type_, bits) is arithmetic
    assert spec_test.value_matches(Expected(type_, "nan:canonical"), Value(type_, bits)) is canonical
    assert spec_test.value_matches(Expected(type_, "nan:arithmetic"), Value(type_, bits)) is arithmetic


def test_is_nan():
    assert spec_test.is_nan("f32", 0x7FA0_0000) and spec_test.is_nan("f64", 0xFFF0_0000_0000_0001)
    assert not spec_test.is_nan("f32", 0x7F80_0000) and not spec_test.is_nan("f64", f64(1.5))


def test_floats_compare_by_bits():
    assert not spec_test.value_matches(Expected("f32", "bits", f32(0.0)), Value("f32", f32(-0.0)))
    assert spec_test.value_matches(Expected("f64", "bits", f64(-0.0)), Value("f64", f64(-0.0)))
    # the same NaN class with a different payload is a different value
    assert not spec_test.value_matches(Expected("f32", "bits", 0x7FA0_0000), Value("f32", 0x7FE0_0000))
    # types must agree even when the bits do
    assert not spec_test.value_matches(Expected("i32", "bits", 0x3F80_0000), Value("f32", 0x3F80_0000))


def test_parse_values_from_wast2json():
    assert spec_test.parse_value({"type": "i32", "value": "4294967295"}) == Value("i32", 0xFFFF_FFFF)
    assert spec_test.parse_value({"type": "f32", "value": "2143289344"}) == Value("f32", 0x7FC0_0000)
    assert spec_test.parse_value({"type": "externref", "value": "7"}) == Value("externref", spec_test.HostRef(7))
    assert spec_test.parse_value({"type": "funcref", "value": "null"}) == Value("funcref", None)
    assert spec_test.parse_expected({"type": "f64", "value": "nan:canonical"}) == Expected("f64", "nan:canonical")
    assert spec_test.parse_expected({"type": "funcref"}) == Expected("funcref", "nonnull")
    with pytest.raises(spec_test.SpecFormatError):
        spec_test.parse_value({"type": "v128", "lane_type": "i32", "value": ["0", "0", "0", "0"]})


def test_reference_patterns():
    host = spec_test.HostRef(3)
    assert spec_test.value_matches(Expected("externref", "host", 3), Value("externref", host))
    assert not spec_test.value_matches(Expected("externref", "host", 3), Value("externref", spec_test.HostRef(4)))
    assert not spec_test.value_matches(Expected("externref", "host", 3), Value("externref", None))
    assert spec_test.value_matches(Expected("externref", "null"), Value("externref", None))
    assert spec_test.value_matches(Expected("funcref", "nonnull"), Value("funcref", object()))
    assert not spec_test.value_matches(Expected("funcref", "nonnull"), Value("funcref", None))


def test_signed_unsigned_round_trip():
    assert spec_test.to_signed(0xFFFF_FFFF, 32) == -1
    assert spec_test.to_signed(0x8000_0000_0000_0000, 64) == -(1 << 63)
    assert spec_test.to_unsigned(-1, 64) == 0xFFFF_FFFF_FFFF_FFFF
    assert spec_test.to_unsigned(spec_test.to_signed(0x7FFF_FFFF, 32), 32) == 0x7FFF_FFFF


@pytest.mark.parametrize("expected, actual, ok", [
    ("integer divide by zero", "integer divide by zero", True),
    ("out of bounds memory access", "out of bounds memory access at 0x10000", True),
    ("undefined element", "undefined element: out of bounds table access", True),
    ("out of bounds table access", "undefined element: out of bounds table access", True),
    ("uninitialized element 2", "uninitialized element", True),   # bulk.wast: interpreter adds the index
    ("unreachable", "integer overflow", False),
    ("uninitialized element", "uninitialized", False),
    ("call stack exhausted", "", False),
])
def test_trap_message_matching(expected, actual, ok):
    assert spec_test.trap_message_matches(expected, actual) is ok


def test_skip_list_format():
    skips = spec_test.SkipList.parse(
        "# comment\n\nfoo.wast   the whole file, with a reason\nbar.wast:12 one command\n")
    assert skips.reason("foo.wast", 99) == "the whole file, with a reason"
    assert skips.reason("bar.wast", 12) == "one command"
    assert skips.reason("bar.wast", 13) is None and skips.reason("bar.wast") is None
    for bad in ("foo.wast\n", "foo.wast:x  reason\n", "foo.txt  reason\n"):
        with pytest.raises(ValueError):
            spec_test.SkipList.parse(bad)


def test_repository_skip_list_parses():
    spec_test.SkipList.load(spec_test.DEFAULT_SKIPS)


# ---------------------------------------------------------------------------------
# The codemem adapter, against a stand-in of codemem's documented runtime API
# ---------------------------------------------------------------------------------

def _make_codemem_stand_in():
    """A module with codemem's documented runtime API (Engine, Module, Store, Instance,
    Func, Val, ...), implemented on wasmtime. It lets CodememBackend be exercised
    before the real engine exists; it raises the real codemem error types."""
    import types

    import wasmtime as wt
    from codemem.errors import CompileError, LinkError, Trap

    class ValType:
        """Enum-like lower-case attributes (the adapter also accepts wasmtime-py style methods)."""
        i32, i64, f32, f64, funcref, externref = "i32", "i64", "f32", "f64", "funcref", "externref"

    def wt_valtype(token):
        return getattr(wt.ValType, token)()

    class Val:
        def __init__(self, type_, value, bits=None):
            self.type, self.value, self._bits = type_, value, bits

        @property
        def bits(self):
            return self._bits

        i32 = classmethod(lambda cls, x: cls("i32", spec_test.to_signed(x, 32)))
        i64 = classmethod(lambda cls, x: cls("i64", spec_test.to_signed(x, 64)))
        f32_bits = classmethod(lambda cls, b: cls("f32", struct.unpack("<f", struct.pack("<I", b))[0], b))
        f64_bits = classmethod(lambda cls, b: cls("f64", struct.unpack("<d", struct.pack("<Q", b))[0], b))
        f32 = classmethod(lambda cls, x: cls.f32_bits(f32(x)))
        f64 = classmethod(lambda cls, x: cls.f64_bits(f64(x)))
        funcref = classmethod(lambda cls, f: cls("funcref", f))
        externref = classmethod(lambda cls, obj: cls("externref", obj))

    class Limits:
        def __init__(self, minimum, maximum=None):
            self.min, self.max = minimum, maximum

    class FuncType:
        def __init__(self, params, results):
            self.params, self.results = list(params), list(results)

    class GlobalType:
        def __init__(self, content, mutable=False):
            self.content, self.mutable = content, mutable

    class MemoryType:
        def __init__(self, limits):
            self.limits = limits

    class TableType:
        def __init__(self, element, limits):
            self.element, self.limits = element, limits

    class Engine:
        def __init__(self, debug=False):
            self.debug = debug
            self.backend = spec_test.WasmtimeBackend()     # one engine + one store

    class Store:
        def __init__(self, engine):
            self.backend = engine.backend

    class Module:
        def __init__(self, engine, wasm):
            try:
                self.inner = engine.backend.compile(wasm)
            except spec_test.EngineCompileError as exc:
                raise CompileError(str(exc), None) from None
            self.imports = list(self.inner.imports)

    def to_value(val):
        if val.type in ("f32", "f64"):
            return Value(val.type, val.bits)
        if val.type in ("i32", "i64"):
            return Value(val.type, spec_test.to_unsigned(val.value, 32 if val.type == "i32" else 64))
        if val.type == "funcref" and val.value is not None:
            return Value("funcref", val.value.inner)
        return Value(val.type, val.value)

    def from_value(backend, value):
        if value.type == "f32":
            return Val.f32_bits(value.payload)
        if value.type == "f64":
            return Val.f64_bits(value.payload)
        if value.type in ("i32", "i64"):
            return getattr(Val, value.type)(value.payload)
        if value.type == "funcref" and value.payload is not None:
            return Val.funcref(Func.wrap(backend, value.payload))
        return Val(value.type, value.payload)

    class Extern:
        @classmethod
        def wrap(cls, backend, inner):
            obj = cls.__new__(cls)
            obj.backend, obj.inner = backend, inner
            return obj

    class Func(Extern):
        def __init__(self, store, func_type, fn):
            self.backend = store.backend
            wt_type = wt.FuncType([wt_valtype(p) for p in func_type.params],
                                  [wt_valtype(r) for r in func_type.results])
            self.inner = wt.Func(store.backend._store, wt_type, fn)

        def call_vals(self, vals):
            holder = spec_test._SimpleInstance({"f": self.inner})
            try:
                results = self.backend.invoke(holder, "f", [to_value(v) for v in vals])
            except spec_test.EngineTrap as trap:
                raise Trap(trap.message) from None
            return [from_value(self.backend, r) for r in results]

    class Global(Extern):
        def __init__(self, store, global_type, val):
            self.backend = store.backend
            init = {"i32": wt.Val.i32, "i64": wt.Val.i64, "f32": wt.Val.f32, "f64": wt.Val.f64}[val.type](val.value)
            self.inner = wt.Global(store.backend._store, wt.GlobalType(wt_valtype(global_type.content),
                                                                       global_type.mutable), init)

        def get(self):
            return from_value(self.backend, self.backend.get_global(spec_test._SimpleInstance({"g": self.inner}), "g"))

    class Memory(Extern):
        def __init__(self, store, memory_type):
            limits = memory_type.limits
            self.inner = wt.Memory(store.backend._store, wt.MemoryType(wt.Limits(limits.min, limits.max)))

    class Table(Extern):
        def __init__(self, store, table_type, init):
            limits = table_type.limits
            self.inner = wt.Table(store.backend._store, wt.TableType(wt_valtype(table_type.element),
                                                                     wt.Limits(limits.min, limits.max)), init)

    wrappers = {wt.Func: Func, wt.Global: Global, wt.Memory: Memory, wt.Table: Table}

    class Instance:
        def __init__(self, store, module, externs):
            backend = store.backend
            try:
                inner = backend.instantiate(module.inner, [extern.inner for extern in externs])
            except spec_test.EngineLinkError as exc:
                raise LinkError(str(exc)) from None
            except spec_test.EngineTrap as trap:
                raise Trap(trap.message) from None
            self.exports = {name: wrappers[type(ext)].wrap(backend, ext) for name, ext in inner.exports.items()}

    stand_in = types.ModuleType("codemem")
    for obj in (Engine, Module, Store, Instance, Func, FuncType, ValType, Val, Memory, MemoryType, Global,
                GlobalType, Table, TableType, Limits, Trap, CompileError, LinkError):
        setattr(stand_in, obj.__name__, obj)
    return stand_in


@pytest.mark.parametrize("name", ["i32.wast", "float_misc.wast", "linking.wast", "imports.wast", "ref_is_null.wast",
                                  "table_get.wast", "global.wast", "call.wast", "start.wast", "skip-stack-guard-page.wast"])
@pytest.mark.parametrize("debug", [False, True])
def test_codemem_adapter_on_documented_api(monkeypatch, name, debug):
    monkeypatch.setitem(sys.modules, "codemem", _make_codemem_stand_in())
    result = spec_test.run_wast_file(SPEC_DIR / name, spec_test.make_backend_factory("codemem", debug))
    assert result.failed == 0, "\n".join(f.describe(name) for f in result.failures)
    assert result.passed > 0
