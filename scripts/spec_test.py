#!/usr/bin/env python3
"""Run the WebAssembly core spec tests (``.wast``) against an engine.

Each ``.wast`` is converted by ``wast2json --enable-all`` (wabt) into a JSON command
list plus the binary modules it names; every command is then run against one
backend: ``wasmtime`` (the reference, via the ``wasmtime`` package) or ``codemem``
(this project's engine, with debugging on or off).

Output contract (one line per file, then a total; the exit status is 0 only when no
failure is left uncovered by the skip list)::

    i32.wast: passed 460, failed 0, skipped 0
    total: passed P, failed F, skipped S

Counting: every command is one check. Text-format ``assert_malformed`` commands are
skipped (they test the text parser, which is wabt's job, not the engine's) and never
count as failures. A failure whose file, or file and line, is listed in the skip list
(``scripts/spec_skips.txt``: ``file.wast[:line]  reason``; ``#`` starts a comment)
counts as skipped; a listed command that passes counts as passed and is reported.

Usage::

    .venv/bin/python scripts/spec_test.py [--engine wasmtime|codemem] [--debug|--no-debug]
        [--spec-dir DIR] [-k SUBSTRING]... [-v] [--jobs N] [--skips FILE]

The runner talks to engines only through :class:`Backend`; :class:`WasmtimeBackend`
and :class:`CodememBackend` are its two implementations.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import dataclasses
import json
import logging
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC_DIR = REPO_ROOT.parent / "shared" / "wasm-spec"
DEFAULT_SKIPS = Path(__file__).resolve().parent / "spec_skips.txt"
WAST2JSON = "wast2json"
# Per-file limit when files run in worker processes (--jobs > 1 or --isolate): an
# engine that hangs or crashes fails that file instead of the whole run.
DEFAULT_FILE_TIMEOUT = 600.0

NUMERIC_TYPES = ("i32", "i64", "f32", "f64")
REFERENCE_TYPES = ("funcref", "externref")
_WIDTH = {"i32": 32, "i64": 64, "f32": 32, "f64": 64}


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HostRef:
    """The host value behind a spec-test ``externref`` (``(ref.extern N)`` is ``HostRef(N)``).

    A dedicated type, not a bare int, so an externref can never be confused with an
    i32 result by a backend that hands back plain Python values."""
    n: int


@dataclasses.dataclass(frozen=True)
class Value:
    """A wasm value with its exact representation.

    ``payload`` is the unsigned bit pattern for i32/i64/f32/f64 (floats never pass
    through a Python float, so NaN payloads and signalling NaNs survive), ``None`` for
    a null reference, a :class:`HostRef` for a non-null externref, and an engine
    function object for a non-null funcref.
    """
    type: str
    payload: Any

    def __str__(self) -> str:
        if self.type in NUMERIC_TYPES:
            return f"{self.type}:{self.payload:#0{_WIDTH[self.type] // 4 + 2}x}{_float_note(self)}"
        if self.payload is None:
            return f"{self.type}:null"
        if isinstance(self.payload, HostRef):
            return f"externref:{self.payload.n}"
        return f"{self.type}:<{type(self.payload).__name__}>"


def _float_note(value: Value) -> str:
    """A readable rendering of a float's bits, for failure messages."""
    if value.type == "f32":
        return f" ({struct.unpack('<f', struct.pack('<I', value.payload))[0]!r})"
    if value.type == "f64":
        return f" ({struct.unpack('<d', struct.pack('<Q', value.payload))[0]!r})"
    return ""


@dataclasses.dataclass(frozen=True)
class Expected:
    """One expected result of an ``assert_return``.

    ``pattern`` is ``"bits"`` (exact bit pattern in ``payload``), ``"nan:canonical"``,
    ``"nan:arithmetic"``, ``"null"`` (null reference), ``"host"`` (the externref
    ``HostRef(payload)``) or ``"nonnull"`` (any non-null reference of the type).
    """
    type: str
    pattern: str
    payload: Any = None

    def __str__(self) -> str:
        if self.pattern == "bits":
            return str(Value(self.type, self.payload))
        if self.pattern == "host":
            return f"externref:{self.payload}"
        return f"{self.type}:{self.pattern}"


def to_signed(bits: int, width: int) -> int:
    """The two's-complement reading of an unsigned ``width``-bit pattern."""
    bits &= (1 << width) - 1
    return bits - (1 << width) if bits >> (width - 1) else bits


def to_unsigned(value: int, width: int) -> int:
    """The ``width``-bit pattern of a (possibly negative) Python int."""
    return value & ((1 << width) - 1)


def f32_bits_of(x: float) -> int:
    """Bits of ``x`` rounded to f32 (for host values such as spectest's 666.6)."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits_of(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# Float layout (IEEE 754-2019 3.4): sign | exponent | significand; a NaN has an
# all-ones exponent and a non-zero significand whose top bit is the "quiet" bit.
_EXPONENT_MASK = {"f32": 0x7F80_0000, "f64": 0x7FF0_0000_0000_0000}
_QUIET_BIT = {"f32": 0x0040_0000, "f64": 0x0008_0000_0000_0000}
_SIGN_BIT = {"f32": 0x8000_0000, "f64": 0x8000_0000_0000_0000}


def is_nan(type_: str, bits: int) -> bool:
    """Whether ``bits`` is any NaN of float type ``type_``."""
    significand = bits & (_QUIET_BIT[type_] * 2 - 1)
    return (bits & _EXPONENT_MASK[type_]) == _EXPONENT_MASK[type_] and significand != 0


def is_canonical_nan(type_: str, bits: int) -> bool:
    """Wasm spec 4.3.3 "canonical NaN": either sign, only the quiet bit of the significand set."""
    return (bits & ~_SIGN_BIT[type_]) == (_EXPONENT_MASK[type_] | _QUIET_BIT[type_])


def is_arithmetic_nan(type_: str, bits: int) -> bool:
    """Wasm spec 4.3.3 "arithmetic NaN": either sign, quiet bit set, any other payload."""
    required = _EXPONENT_MASK[type_] | _QUIET_BIT[type_]
    return (bits & required) == required


def parse_value(spec: dict) -> Value:
    """A wast2json argument (``{"type": "i32", "value": "4294967295"}``) as a :class:`Value`.

    wast2json writes every number as the unsigned decimal of its bit pattern."""
    type_ = spec["type"]
    raw = spec.get("value")
    if type_ in NUMERIC_TYPES:
        return Value(type_, to_unsigned(int(raw), _WIDTH[type_]))
    if type_ in REFERENCE_TYPES:
        if raw == "null":
            return Value(type_, None)
        if type_ == "externref":
            return Value(type_, HostRef(int(raw)))
        raise SpecFormatError(f"cannot build a non-null funcref argument from {spec}")
    raise SpecFormatError(f"unsupported value type {type_!r} (SIMD and GC are out of scope)")


def parse_expected(spec: dict) -> Expected:
    """A wast2json expected result as an :class:`Expected` pattern."""
    type_ = spec["type"]
    raw = spec.get("value")
    if type_ in NUMERIC_TYPES:
        if raw in ("nan:canonical", "nan:arithmetic"):
            if type_ not in ("f32", "f64"):
                raise SpecFormatError(f"{raw} expected for integer type {type_}")
            return Expected(type_, raw)
        return Expected(type_, "bits", to_unsigned(int(raw), _WIDTH[type_]))
    if type_ in REFERENCE_TYPES:
        if raw == "null":
            return Expected(type_, "null")
        if raw is None:                      # `(ref.func)` / `(ref.extern)`: any non-null
            return Expected(type_, "nonnull")
        if type_ == "externref":
            return Expected(type_, "host", int(raw))
        raise SpecFormatError(f"cannot compare with a specific funcref {spec}")
    raise SpecFormatError(f"unsupported value type {type_!r} (SIMD and GC are out of scope)")


def value_matches(expected: Expected, actual: Value) -> bool:
    """Whether ``actual`` satisfies ``expected`` (same type; floats compared by bits)."""
    if actual.type != expected.type:
        return False
    if expected.pattern == "bits":
        return actual.payload == expected.payload
    if expected.pattern == "nan:canonical":
        return is_canonical_nan(actual.type, actual.payload)
    if expected.pattern == "nan:arithmetic":
        return is_arithmetic_nan(actual.type, actual.payload)
    if expected.pattern == "null":
        return actual.payload is None
    if expected.pattern == "nonnull":
        return actual.payload is not None
    if expected.pattern == "host":
        return actual.payload == HostRef(expected.payload)
    raise AssertionError(f"unknown pattern {expected.pattern!r}")


def trap_message_matches(expected: str, actual: str) -> bool:
    """Whether an engine's trap message satisfies an ``assert_trap`` text.

    The expected text must appear in the engine's message (as its prefix or anywhere
    in it, so an engine may add detail such as "wasm trap: ..." or an address). One
    allowance the other way round: the reference interpreter appends the element index
    to some messages (bulk.wast expects "uninitialized element 2"), so an expected text
    that is the engine's message plus a trailing number also matches.
    """
    if expected in actual:
        return True
    rest = expected[len(actual):] if actual and expected.startswith(actual) else None
    return rest is not None and rest.startswith(" ") and rest.strip().isdigit()


# --------------------------------------------------------------------------------------
# Backend interface
# --------------------------------------------------------------------------------------

class SpecFormatError(Exception):
    """The JSON produced by wast2json has something this runner does not support."""


class EngineCompileError(Exception):
    """The engine rejected a module (malformed or invalid)."""


class EngineLinkError(Exception):
    """Instantiation failed while resolving imports (unknown import, incompatible type)."""


class EngineTrap(Exception):
    """Wasm code trapped; ``message`` is the engine's trap text (stack exhaustion included)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Backend:
    """What the runner needs from an engine. One backend object runs one ``.wast`` file,
    so every module of the file lives in one store (cross-module imports share state).

    Handles (modules, instances, externs) are opaque to the runner. Every method raises
    only the ``Engine*`` exceptions above for wasm-level outcomes; anything else is an
    engine bug and is reported as a failure of that command.
    """

    name = "abstract"

    def compile(self, wasm: bytes) -> Any:
        """A compiled module; raises :class:`EngineCompileError`."""
        raise NotImplementedError

    def imports(self, module: Any) -> list[tuple[str, str]]:
        """``(module name, field name)`` of each import, in the module's order."""
        raise NotImplementedError

    def instantiate(self, module: Any, externs: Sequence[Any]) -> Any:
        """An instance, given one extern per import in order.

        Raises :class:`EngineLinkError` when an extern does not fit its import and
        :class:`EngineTrap` when the start function or a segment initialisation traps."""
        raise NotImplementedError

    def export(self, instance: Any, name: str) -> Any | None:
        """The extern exported as ``name``, or ``None`` when there is none."""
        raise NotImplementedError

    def invoke(self, instance: Any, name: str, args: Sequence[Value]) -> list[Value]:
        """Call an exported function with exact values; raises :class:`EngineTrap`."""
        raise NotImplementedError

    def get_global(self, instance: Any, name: str) -> Value:
        """The current value of an exported global."""
        raise NotImplementedError

    def spectest(self) -> Any:
        """An instance-like handle exporting the standard ``spectest`` host module:
        print, print_i32, print_i64, print_f32, print_f64, print_i32_f32,
        print_f64_f64, global_i32 = 666, global_i64 = 666, global_f32 = 666.6,
        global_f64 = 666.6, table (10..20 funcref), memory (1..2 pages)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the store and everything in it."""


SPECTEST_PRINT_FUNCS = {
    "print": [],
    "print_i32": ["i32"],
    "print_i64": ["i64"],
    "print_f32": ["f32"],
    "print_f64": ["f64"],
    "print_i32_f32": ["i32", "f32"],
    "print_f64_f64": ["f64", "f64"],
}
SPECTEST_GLOBALS = {
    "global_i32": Value("i32", 666),
    "global_i64": Value("i64", 666),
    "global_f32": Value("f32", f32_bits_of(666.6)),
    "global_f64": Value("f64", f64_bits_of(666.6)),
}
SPECTEST_TABLE_LIMITS = (10, 20)
SPECTEST_MEMORY_LIMITS = (1, 2)


def _spectest_print(*args: Any) -> None:
    """The spectest print functions only log: spec tests never check their output."""
    log.debug("spectest print%s", args)


class _SimpleInstance:
    """An instance-like handle made of a name -> extern dict (used for spectest)."""

    def __init__(self, exports: dict[str, Any]):
        self.exports = exports


# --------------------------------------------------------------------------------------
# wasmtime backend (the reference)
# --------------------------------------------------------------------------------------

class WasmtimeBackend(Backend):
    """The reference backend, on the ``wasmtime`` Python package.

    Floats cross the boundary as bit patterns through wasmtime's C value union
    (``wasmtime._ffi``): the public ``Val.f32``/``Func.__call__`` path converts through
    a C float, which quiets signalling NaNs and would fail f32_bitwise.wast and friends.
    The engine is configured for the Wasm 2.0 feature set these tests were written for:
    later proposals (multi-memory, memory64, GC, ...) turn some of their
    ``assert_invalid`` modules valid.
    """

    name = "wasmtime"

    def __init__(self) -> None:
        import wasmtime
        from wasmtime import _ffi as ffi
        from wasmtime._func import enter_wasm

        self._wt = wasmtime
        self._ffi = ffi
        self._enter_wasm = enter_wasm
        config = wasmtime.Config()
        for feature in ("wasm_multi_memory", "wasm_memory64", "wasm_gc", "wasm_function_references",
                        "wasm_tail_call", "wasm_threads", "wasm_exceptions", "wasm_relaxed_simd",
                        "wasm_wide_arithmetic", "wasm_custom_page_sizes", "wasm_stack_switching",
                        "wasm_component_model"):
            if hasattr(type(config), feature):
                setattr(config, feature, False)
        for feature in ("wasm_bulk_memory", "wasm_reference_types", "wasm_multi_value"):
            setattr(config, feature, True)
        self._engine = wasmtime.Engine(config)
        self._store = wasmtime.Store(self._engine)
        self._kinds = {
            "i32": ffi.WASMTIME_I32.value, "i64": ffi.WASMTIME_I64.value,
            "f32": ffi.WASMTIME_F32.value, "f64": ffi.WASMTIME_F64.value,
            "funcref": ffi.WASMTIME_FUNCREF.value, "externref": ffi.WASMTIME_EXTERNREF.value,
        }
        self._kind_names = {kind: name for name, kind in self._kinds.items()}

    def compile(self, wasm: bytes) -> Any:
        try:
            return self._wt.Module(self._engine, wasm)
        except self._wt.WasmtimeError as exc:
            raise EngineCompileError(str(exc)) from None

    def imports(self, module: Any) -> list[tuple[str, str]]:
        return [(imp.module, imp.name) for imp in module.imports]

    def instantiate(self, module: Any, externs: Sequence[Any]) -> Any:
        try:
            instance = self._wt.Instance(self._store, module, list(externs))
        except self._wt.Trap as trap:
            raise EngineTrap(self.trap_text(trap)) from None
        except self._wt.WasmtimeError as exc:
            raise EngineLinkError(str(exc)) from None
        return _SimpleInstance({name: extern for name, extern in instance.exports(self._store).items()})

    def export(self, instance: Any, name: str) -> Any | None:
        return instance.exports.get(name)

    @staticmethod
    def trap_text(trap: Any) -> str:
        """The "wasm trap: ..." line of wasmtime's message, in the spec's words.

        wasmtime reports the reason last ("Caused by: ... wasm trap: integer overflow");
        its wording equals the spec's except for `unreachable`."""
        lines = [line.strip() for line in trap.message.splitlines() if "wasm trap:" in line]
        text = lines[-1].split("wasm trap:", 1)[1].strip() if lines else trap.message.strip()
        if "`unreachable`" in text:
            text = "unreachable: " + text
        return text

    # Raw values: wasmtime_val_t is {kind; union of}. Floats are written and read
    # through the union's integer members so their bits are never converted.
    def _to_raw(self, value: Value) -> Any:
        ffi = self._ffi
        raw = ffi.wasmtime_val_t(kind=self._kinds[value.type])
        if value.type in ("i32", "f32"):
            raw.of.i32 = to_signed(value.payload, 32)
        elif value.type in ("i64", "f64"):
            raw.of.i64 = to_signed(value.payload, 64)
        elif value.type == "externref":
            raw = self._wt.Val.externref(value.payload)._new_raw(self._store)
        else:
            raw = self._wt.Val.funcref(value.payload)._new_raw(self._store)
        return raw

    def _from_raw(self, raw: Any) -> Value:
        type_ = self._kind_names.get(raw.kind)
        if type_ in ("i32", "f32"):
            return Value(type_, to_unsigned(raw.of.i32, 32))
        if type_ in ("i64", "f64"):
            return Value(type_, to_unsigned(raw.of.i64, 64))
        if type_ in REFERENCE_TYPES:
            return Value(type_, self._wt.Val._from_raw(self._store, raw).value)
        raise SpecFormatError(f"unsupported result kind {raw.kind}")

    def invoke(self, instance: Any, name: str, args: Sequence[Value]) -> list[Value]:
        ffi = self._ffi
        func = instance.exports.get(name)
        if not isinstance(func, self._wt.Func):
            raise SpecFormatError(f"export {name!r} is not a function")
        func_type = func.type(self._store)
        params = (ffi.wasmtime_val_t * max(len(args), 1))()
        results = (ffi.wasmtime_val_t * max(len(func_type.results), 1))()
        for i, arg in enumerate(args):
            params[i] = self._to_raw(arg)
        try:
            with self._enter_wasm(self._store) as trap:
                error = ffi.wasmtime_func_call(self._store._context(), ctypes.byref(func._func),
                                               params, len(args), results, len(func_type.results), trap)
                if error:
                    raise self._wt.WasmtimeError._from_ptr(error)
        except self._wt.Trap as trap:
            raise EngineTrap(self.trap_text(trap)) from None
        finally:
            for i in range(len(args)):
                ffi.wasmtime_val_unroot(ctypes.byref(params[i]))
        return [self._from_raw(results[i]) for i in range(len(func_type.results))]

    def get_global(self, instance: Any, name: str) -> Value:
        global_ = instance.exports.get(name)
        if not isinstance(global_, self._wt.Global):
            raise SpecFormatError(f"export {name!r} is not a global")
        raw = self._ffi.wasmtime_val_t()
        self._ffi.wasmtime_global_get(self._store._context(), ctypes.byref(global_._global),
                                      ctypes.byref(raw))
        return self._from_raw(raw)

    def spectest(self) -> Any:
        wt = self._wt
        store = self._store
        valtypes = {"i32": wt.ValType.i32(), "i64": wt.ValType.i64(),
                    "f32": wt.ValType.f32(), "f64": wt.ValType.f64()}
        exports: dict[str, Any] = {}
        for name, params in SPECTEST_PRINT_FUNCS.items():
            exports[name] = wt.Func(store, wt.FuncType([valtypes[p] for p in params], []), _spectest_print)
        for name, value in SPECTEST_GLOBALS.items():
            global_type = wt.GlobalType(valtypes[value.type], False)
            if value.type == "f32":
                init = wt.Val.f32(struct.unpack("<f", struct.pack("<I", value.payload))[0])
            elif value.type == "f64":
                init = wt.Val.f64(struct.unpack("<d", struct.pack("<Q", value.payload))[0])
            else:
                init = getattr(wt.Val, value.type)(value.payload)
            exports[name] = wt.Global(store, global_type, init)
        exports["table"] = wt.Table(store, wt.TableType(wt.ValType.funcref(), wt.Limits(*SPECTEST_TABLE_LIMITS)), None)
        exports["memory"] = wt.Memory(store, wt.MemoryType(wt.Limits(*SPECTEST_MEMORY_LIMITS)))
        return _SimpleInstance(exports)

    def close(self) -> None:
        self._store = None
        self._engine = None


# --------------------------------------------------------------------------------------
# codemem backend (this project's engine)
# --------------------------------------------------------------------------------------

class CodememBackend(Backend):
    """The project's engine, through its public runtime API (``codemem``).

    One ``Engine(debug=...)`` and one ``Store`` per file. Values cross as ``codemem.Val``
    built from bits (``Val.f32_bits``/``Val.f64_bits``) and read back through ``.bits``,
    so NaN payloads are exact. Externrefs carry :class:`HostRef` objects.
    """

    name = "codemem"

    def __init__(self, debug: bool = False) -> None:
        import codemem

        self._cm = codemem
        self.debug = debug
        self._engine = codemem.Engine(debug=debug)
        self._store = codemem.Store(self._engine)

    def _valtype(self, name: str) -> Any:
        # ValType.i32 is specified as a lower-case alias "like wasmtime-py", where the
        # aliases are class methods; accept an attribute or a method alike.
        attr = getattr(self._cm.ValType, name)
        return attr() if callable(attr) and not isinstance(attr, self._cm.ValType) else attr

    def compile(self, wasm: bytes) -> Any:
        try:
            return self._cm.Module(self._engine, wasm)
        except self._cm.CompileError as exc:
            raise EngineCompileError(exc.message) from None

    def imports(self, module: Any) -> list[tuple[str, str]]:
        return [(imp.module, imp.name) for imp in module.imports]

    def instantiate(self, module: Any, externs: Sequence[Any]) -> Any:
        try:
            return self._cm.Instance(self._store, module, list(externs))
        except self._cm.LinkError as exc:
            raise EngineLinkError(str(exc)) from None
        except self._cm.Trap as trap:
            raise EngineTrap(trap.message) from None

    def export(self, instance: Any, name: str) -> Any | None:
        try:
            return instance.exports[name]
        except KeyError:
            return None

    def _to_val(self, value: Value) -> Any:
        val = self._cm.Val
        if value.type == "i32":
            return val.i32(to_signed(value.payload, 32))
        if value.type == "i64":
            return val.i64(to_signed(value.payload, 64))
        if value.type == "f32":
            return val.f32_bits(value.payload)
        if value.type == "f64":
            return val.f64_bits(value.payload)
        if value.type == "funcref":
            return val.funcref(value.payload)
        return val.externref(value.payload)

    def _from_val(self, val: Any) -> Value:
        for name in NUMERIC_TYPES + REFERENCE_TYPES:
            if val.type == self._valtype(name):
                break
        else:
            raise SpecFormatError(f"result of unknown type {val.type!r}")
        if name in ("f32", "f64"):
            return Value(name, to_unsigned(val.bits, _WIDTH[name]))
        if name in ("i32", "i64"):
            return Value(name, to_unsigned(val.value, _WIDTH[name]))
        return Value(name, val.value)

    def invoke(self, instance: Any, name: str, args: Sequence[Value]) -> list[Value]:
        func = self.export(instance, name)
        if not isinstance(func, self._cm.Func):
            raise SpecFormatError(f"export {name!r} is not a function")
        try:
            results = func.call_vals([self._to_val(arg) for arg in args])
        except self._cm.Trap as trap:
            raise EngineTrap(trap.message) from None
        return [self._from_val(result) for result in results]

    def get_global(self, instance: Any, name: str) -> Value:
        global_ = self.export(instance, name)
        if not isinstance(global_, self._cm.Global):
            raise SpecFormatError(f"export {name!r} is not a global")
        # Not in the documented API yet: Global.get() -> Val (exact bits, like call_vals).
        return self._from_val(global_.get())

    def spectest(self) -> Any:
        cm = self._cm
        store = self._store
        exports: dict[str, Any] = {}
        for name, params in SPECTEST_PRINT_FUNCS.items():
            func_type = cm.FuncType([self._valtype(p) for p in params], [])
            exports[name] = cm.Func(store, func_type, _spectest_print)
        for name, value in SPECTEST_GLOBALS.items():
            global_type = cm.GlobalType(self._valtype(value.type), mutable=False)
            exports[name] = cm.Global(store, global_type, self._to_val(value))
        exports["table"] = cm.Table(store, cm.TableType(self._valtype("funcref"), cm.Limits(*SPECTEST_TABLE_LIMITS)),
                                    None)
        exports["memory"] = cm.Memory(store, cm.MemoryType(cm.Limits(*SPECTEST_MEMORY_LIMITS)))
        return _SimpleInstance(exports)

    def close(self) -> None:
        self._store = None
        self._engine = None


def make_backend_factory(engine: str, debug: bool = False) -> Callable[[], Backend]:
    """A zero-argument constructor of a fresh backend for ``engine``."""
    if engine == "wasmtime":
        return WasmtimeBackend
    if engine == "codemem":
        return lambda: CodememBackend(debug=debug)
    raise ValueError(f"unknown engine {engine!r}")


# --------------------------------------------------------------------------------------
# Skip list
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class SkipList:
    """Known failures: whole files (``line`` None) or single commands, each with a reason."""
    entries: dict[tuple[str, int | None], str] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, source: str = "<skips>") -> "SkipList":
        """Parse ``file.wast[:line]  reason`` lines; blank lines and ``#`` comments are ignored.

        Raises ValueError for an entry without a reason or with a malformed line number."""
        skips = cls()
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) < 2 or not parts[1].strip():
                raise ValueError(f"{source}:{number}: a skip needs a reason: {line!r}")
            target, reason = parts[0], parts[1].strip()
            file_name, _, line_text = target.partition(":")
            if not file_name.endswith(".wast"):
                raise ValueError(f"{source}:{number}: expected file.wast[:line], got {target!r}")
            if line_text and not line_text.isdigit():
                raise ValueError(f"{source}:{number}: bad line number in {target!r}")
            skips.entries[(file_name, int(line_text) if line_text else None)] = reason
        return skips

    @classmethod
    def load(cls, path: Path | None) -> "SkipList":
        if path is None or not path.exists():
            return cls()
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    def reason(self, file_name: str, line: int | None = None) -> str | None:
        """The reason a failure at ``file_name[:line]`` is known, or None."""
        if (file_name, None) in self.entries:
            return self.entries[(file_name, None)]
        if line is not None:
            return self.entries.get((file_name, line))
        return None


# --------------------------------------------------------------------------------------
# Running one file
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Failure:
    """One failed command: where, what, and what was expected versus what happened."""
    line: int
    command: str
    expected: str
    actual: str
    known: str | None = None          # skip-list reason when the failure is covered

    def describe(self, file_name: str) -> str:
        known = f"  [known: {self.known}]" if self.known else ""
        return (f"{file_name}:{self.line}: {self.command}: expected {self.expected}; "
                f"got {self.actual}{known}")


@dataclasses.dataclass
class FileResult:
    """Counts and failures for one ``.wast`` file."""
    file: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[Failure] = dataclasses.field(default_factory=list)
    unexpected_passes: list[int] = dataclasses.field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{self.file}: passed {self.passed}, failed {self.failed}, skipped {self.skipped}{note}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FileResult":
        failures = [Failure(**failure) for failure in data.pop("failures", [])]
        return cls(failures=failures, **data)


class _CommandFailed(Exception):
    """Internal: a command did not do what the script says (expected, actual)."""

    def __init__(self, expected: str, actual: str):
        super().__init__(f"expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


def convert_wast(wast: Path, out_dir: Path) -> Path:
    """Run ``wast2json --enable-all`` on ``wast``; returns the JSON path.

    Raises _CommandFailed with wast2json's message when the conversion fails."""
    out_json = out_dir / (wast.stem + ".json")
    proc = subprocess.run([WAST2JSON, "--enable-all", str(wast), "-o", str(out_json)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise _CommandFailed("wast2json to convert the file", "; ".join(message[:3]) or f"exit {proc.returncode}")
    return out_json


class WastRunner:
    """Runs the commands of one converted ``.wast`` against one backend."""

    def __init__(self, backend: Backend, json_dir: Path):
        self.backend = backend
        self.json_dir = json_dir
        self.registry: dict[str, Any] = {"spectest": backend.spectest()}
        self.named: dict[str, Any] = {}
        self.current: Any = None

    # -- helpers -------------------------------------------------------------------
    def _instance(self, name: str | None) -> Any:
        instance = self.named.get(name) if name else self.current
        if instance is None:
            raise _CommandFailed(f"module {name or '(current)'} to exist", "no such module (did it fail to load?)")
        return instance

    def _resolve_imports(self, module: Any) -> list[Any]:
        """Externs for ``module``'s imports from registered instances.

        A missing module or field is an "unknown import" link error (spec 4.5.4)."""
        externs = []
        for module_name, field in self.backend.imports(module):
            provider = self.registry.get(module_name)
            extern = None if provider is None else self.backend.export(provider, field)
            if extern is None:
                raise EngineLinkError(f"unknown import {module_name}.{field}")
            externs.append(extern)
        return externs

    def _load(self, filename: str) -> Any:
        """Compile and instantiate a module file; Engine* exceptions propagate."""
        wasm = (self.json_dir / filename).read_bytes()
        module = self.backend.compile(wasm)
        return self.backend.instantiate(module, self._resolve_imports(module))

    def _perform(self, action: dict) -> list[Value]:
        instance = self._instance(action.get("module"))
        if action["type"] == "invoke":
            args = [parse_value(arg) for arg in action.get("args", [])]
            return self.backend.invoke(instance, action["field"], args)
        if action["type"] == "get":
            return [self.backend.get_global(instance, action["field"])]
        raise SpecFormatError(f"unknown action type {action['type']!r}")

    @staticmethod
    def _describe_action(action: dict) -> str:
        args = ", ".join(str(parse_value(arg)) for arg in action.get("args", []))
        return f"{action['type']} {action['field']!r}({args})"

    # -- commands ------------------------------------------------------------------
    def run(self, command: dict) -> str:
        """Run one command: returns "passed" or "skipped"; raises _CommandFailed."""
        kind = command["type"]
        handler = getattr(self, "_cmd_" + kind, None)
        if handler is None:
            raise _CommandFailed("a command this runner knows", f"unknown command type {kind!r}")
        return handler(command)

    def _cmd_module(self, command: dict) -> str:
        self.current = None             # a failed load leaves no current module
        try:
            instance = self._load(command["filename"])
        except (EngineCompileError, EngineLinkError, EngineTrap) as exc:
            raise _CommandFailed("the module to load", f"{type(exc).__name__}: {exc}") from None
        self.current = instance
        if command.get("name"):
            self.named[command["name"]] = instance
        return "passed"

    def _cmd_register(self, command: dict) -> str:
        self.registry[command["as"]] = self._instance(command.get("name"))
        return "passed"

    def _cmd_action(self, command: dict) -> str:
        try:
            self._perform(command["action"])
        except EngineTrap as trap:
            raise _CommandFailed(f"{self._describe_action(command['action'])} to run",
                                 f"trap: {trap.message}") from None
        return "passed"

    def _cmd_assert_return(self, command: dict) -> str:
        action = command["action"]
        expected = [parse_expected(spec) for spec in command["expected"]]
        try:
            actual = self._perform(action)
        except EngineTrap as trap:
            raise _CommandFailed(f"{self._describe_action(action)} -> {_list(expected)}",
                                 f"trap: {trap.message}") from None
        if len(actual) != len(expected) or not all(map(value_matches, expected, actual)):
            raise _CommandFailed(f"{self._describe_action(action)} -> {_list(expected)}", _list(actual))
        return "passed"

    def _cmd_assert_trap(self, command: dict) -> str:
        action = command["action"]
        try:
            actual = self._perform(action)
        except EngineTrap as trap:
            if trap_message_matches(command["text"], trap.message):
                return "passed"
            raise _CommandFailed(f"{self._describe_action(action)} to trap with {command['text']!r}",
                                 f"trap: {trap.message!r}") from None
        raise _CommandFailed(f"{self._describe_action(action)} to trap with {command['text']!r}",
                             f"returned {_list(actual)}")

    _cmd_assert_exhaustion = _cmd_assert_trap

    def _expect_load_failure(self, command: dict, wanted: type[Exception]) -> str:
        what = {EngineCompileError: "a compile error", EngineLinkError: "a link error",
                EngineTrap: "a trap during instantiation"}[wanted]
        expected = f"{what} ({command['text']!r})"
        try:
            self._load(command["filename"])
        except wanted as exc:
            if wanted is EngineTrap and not trap_message_matches(command["text"], exc.message):
                raise _CommandFailed(expected, f"trap: {exc.message!r}") from None
            return "passed"
        except (EngineCompileError, EngineLinkError, EngineTrap) as exc:
            raise _CommandFailed(expected, f"{type(exc).__name__}: {exc}") from None
        raise _CommandFailed(expected, "the module loaded")

    def _cmd_assert_invalid(self, command: dict) -> str:
        return self._expect_load_failure(command, EngineCompileError)

    def _cmd_assert_malformed(self, command: dict) -> str:
        if command.get("module_type") != "binary":
            return "skipped"             # text format: tests wabt's parser, not the engine
        return self._expect_load_failure(command, EngineCompileError)

    def _cmd_assert_unlinkable(self, command: dict) -> str:
        return self._expect_load_failure(command, EngineLinkError)

    def _cmd_assert_uninstantiable(self, command: dict) -> str:
        return self._expect_load_failure(command, EngineTrap)


def _list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(str(value) for value in values) + "]"


def run_wast_file(wast: Path, backend_factory: Callable[[], Backend], skips: SkipList | None = None) -> FileResult:
    """Convert and run one ``.wast`` file; never raises for engine or test failures."""
    skips = skips or SkipList()
    result = FileResult(wast.name)
    with tempfile.TemporaryDirectory(prefix="spec-" + wast.stem + "-") as tmp:
        try:
            json_path = convert_wast(wast, Path(tmp))
        except _CommandFailed as exc:
            _record_failure(result, skips, Failure(0, "wast2json", exc.expected, exc.actual))
            return result
        commands = json.loads(json_path.read_text(encoding="utf-8"))["commands"]
        try:
            backend = backend_factory()
        except Exception as exc:  # noqa: BLE001 - e.g. the engine cannot be imported
            _record_failure(result, skips, Failure(0, "backend", "the engine to start", f"{type(exc).__name__}: {exc}"))
            return result
        try:
            runner = WastRunner(backend, Path(tmp))
            for command in commands:
                _run_one(runner, command, result, skips)
        finally:
            backend.close()
    if (wast.name, None) in skips.entries and not result.failures:
        result.note = "listed in the skip list but passed"
    return result


def _run_one(runner: WastRunner, command: dict, result: FileResult, skips: SkipList) -> None:
    line = command.get("line", 0)
    kind = command["type"]
    try:
        outcome = runner.run(command)
    except _CommandFailed as exc:
        _record_failure(result, skips, Failure(line, kind, exc.expected, exc.actual))
        return
    except Exception as exc:  # noqa: BLE001 - an engine bug must fail one command, not the run
        log.debug("internal error at line %d", line, exc_info=True)
        _record_failure(result, skips, Failure(line, kind, "no internal error",
                                               f"{type(exc).__name__}: {exc}"))
        return
    if outcome == "skipped":
        result.skipped += 1
        return
    result.passed += 1
    if skips.entries.get((result.file, line)):
        result.unexpected_passes.append(line)


def _record_failure(result: FileResult, skips: SkipList, failure: Failure) -> None:
    failure.known = skips.reason(result.file, failure.line or None)
    if failure.known:
        result.skipped += 1
    else:
        result.failed += 1
    result.failures.append(failure)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

def select_files(spec_dir: Path, patterns: Sequence[str]) -> list[Path]:
    """The ``.wast`` files of ``spec_dir`` whose name contains any of ``patterns`` (all if none)."""
    files = sorted(spec_dir.glob("*.wast"))
    if patterns:
        files = [path for path in files if any(pattern in path.name for pattern in patterns)]
    return files


def _worker_command(args: argparse.Namespace, wast: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(wast), "--engine", args.engine,
               "--skips", str(args.skips)]
    command.append("--debug" if args.debug else "--no-debug")
    return command


def _run_isolated(args: argparse.Namespace, wast: Path) -> FileResult:
    """Run one file in a child process so a crash or hang fails only that file."""
    try:
        proc = subprocess.run(_worker_command(args, wast), capture_output=True, text=True,
                              timeout=args.file_timeout, check=False)
    except subprocess.TimeoutExpired:
        result = FileResult(wast.name)
        _record_failure(result, SkipList.load(args.skips),
                        Failure(0, "file", f"to finish within {args.file_timeout:g} s", "timed out"))
        return result
    last_line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        return FileResult.from_json(json.loads(last_line))
    except (json.JSONDecodeError, TypeError, KeyError):
        result = FileResult(wast.name)
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        _record_failure(result, SkipList.load(args.skips),
                        Failure(0, "file", "the worker to report", f"exit status {proc.returncode}: {tail}"))
        return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the WebAssembly spec tests against an engine.")
    parser.add_argument("--engine", choices=("wasmtime", "codemem"), default="codemem")
    parser.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                        help="codemem only: run with debugging enabled (per-Store code copies)")
    parser.add_argument("--spec-dir", type=Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTRING",
                        help="run only files whose name contains SUBSTRING (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure")
    parser.add_argument("--jobs", type=int, default=1, help="files run in N worker processes (N > 1)")
    parser.add_argument("--isolate", action="store_true", help="run each file in its own process even with --jobs 1")
    parser.add_argument("--file-timeout", type=float, default=DEFAULT_FILE_TIMEOUT,
                        help="seconds per file in worker processes")
    parser.add_argument("--skips", type=Path, default=DEFAULT_SKIPS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected files; prints one line per file and a total; 0 when no uncovered failure."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    skips = SkipList.load(args.skips)
    factory = make_backend_factory(args.engine, args.debug)

    if args.worker is not None:
        result = run_wast_file(args.worker, factory, skips)
        print(json.dumps(result.to_json()))
        return 0

    if args.engine == "wasmtime" and args.debug:
        log.warning("--debug applies to the codemem engine only; ignored for wasmtime")
    files = select_files(args.spec_dir, args.patterns)
    if not files:
        print(f"no .wast files in {args.spec_dir} match {args.patterns}", file=sys.stderr)
        return 2

    if args.jobs > 1 or args.isolate:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            results = pool.map(lambda wast: _run_isolated(args, wast), files)
            return _report(results, args.verbose)
    return _report((run_wast_file(wast, factory, skips) for wast in files), args.verbose)


def _report(results: Iterable[FileResult], verbose: bool) -> int:
    passed = failed = skipped = 0
    for result in results:
        print(result.summary(), flush=True)
        if verbose:
            for failure in result.failures:
                print("  " + failure.describe(result.file))
        for line in result.unexpected_passes:
            print(f"  {result.file}:{line}: listed in the skip list but passed")
        passed += result.passed
        failed += result.failed
        skipped += result.skipped
    print(f"total: passed {passed}, failed {failed}, skipped {skipped}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
