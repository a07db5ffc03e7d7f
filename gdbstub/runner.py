"""``wasm-gdbstub run``: run a module on the codemem engine, like ``wasmtime run``.

No debugger is involved: the module is compiled with debugging off and run on
the calling thread.  What is wasmtime-like (so scripts written for ``wasmtime run
[--invoke F] module.wasm args...`` behave the same):

* arguments of ``--invoke`` are parsed per parameter type (:func:`parse_invoke_args`);
* results are printed one per line, floats in Rust's ``Display`` form
  (:func:`format_results`);
* without ``--invoke`` a WASI command's ``_start`` runs with ``args`` as
  ``argv[1:]`` (argv[0] is the module path), else an export named ``main``.

Exit codes of :func:`run_module`: 0 success, 1 a wasm trap, ``n`` when the
guest called WASI ``proc_exit(n)``, 2 for anything wrong with the input (an
unreadable or invalid module, an import we cannot provide, a missing export,
bad arguments).
"""
from __future__ import annotations

import logging
import math
import re
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TextIO

import codemem
from codemem import CompileError, LinkError, Trap, Val, ValType

from .wasi import MODULE as WASI_MODULE
from .wasi import WasiContext, WasiExit, WasiOptions

if TYPE_CHECKING:
    from fractions import Fraction

log = logging.getLogger(__name__)

__all__ = ["default_entry", "format_results", "format_value", "instantiate", "parse_invoke_args", "run_module"]

EXIT_TRAP = 1
EXIT_USAGE = 2

_INT_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
# What Rust's f32/f64 FromStr accepts, which wasmtime uses: decimal with optional
# fraction and exponent, or inf/infinity/nan in any case, each with an optional sign.
_FLOAT_RE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)

_INT_BITS = {ValType.I32: 32, ValType.I64: 64}


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def _parse_int(text: str, bits: int) -> int:
    """An integer in the signed or the unsigned range of ``bits`` (``0xffffffff``
    and ``-1`` are the same i32), decimal or ``0x`` hex, optionally signed."""
    if not _INT_RE.fullmatch(text):
        raise ValueError("not an integer")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    value = sign * (int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10))
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise ValueError(f"out of range for a {bits}-bit integer")
    return value


def _f32_bits_exact(q: Fraction) -> int:
    """The f32 nearest to the rational ``q`` (IEEE 754 round to nearest, ties to
    even), as bits.  Rounding the decimal straight to f32 avoids the double
    rounding of going through f64 first."""
    from fractions import Fraction  # f32 arguments and results only: not every start pays its import

    sign = 0x8000_0000 if q < 0 else 0
    q = abs(q)
    if q == 0:
        return sign
    # Exponent e with 2**e <= q < 2**(e+1).
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if (Fraction(2) ** e) > q:
        e -= 1
    e = max(e, -126)  # subnormals share the minimum exponent
    mantissa = round(q / Fraction(2) ** (e - 23))  # Fraction rounds half to even
    if mantissa == 1 << 24:
        mantissa >>= 1
        e += 1
    if e > 127:
        return sign | 0x7F80_0000  # overflow rounds to infinity
    if mantissa < 1 << 23:  # subnormal (only possible at e == -126)
        return sign | mantissa
    return sign | ((e + 127) << 23) | (mantissa - (1 << 23))


def _parse_float_bits(text: str, valtype: ValType) -> int:
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError("not a number")
    negative = text.startswith("-")
    word = text.lstrip("+-").lower()
    if valtype == ValType.F64:
        return struct.unpack("<Q", struct.pack("<d", float(text)))[0]
    if word == "nan":
        return (0x8000_0000 if negative else 0) | 0x7FC0_0000
    if word in ("inf", "infinity"):
        return (0x8000_0000 if negative else 0) | 0x7F80_0000
    from fractions import Fraction

    bits = _f32_bits_exact(Fraction(text))
    if bits & 0x7FFF_FFFF == 0 and negative:
        bits |= 0x8000_0000  # "-0" is negative zero
    return bits


def parse_invoke_args(func: codemem.Func, args: Sequence[str]) -> list[Val]:
    """Converts command-line strings to the parameters of ``func``.

    i32/i64: decimal or ``0x`` hex, optionally negative, in the signed or unsigned
    range; f32/f64: decimal (``1.5``, ``-2e10``), ``inf``, ``nan`` (rounded
    exactly to the type).  Returns :class:`codemem.Val` values with exact bits.
    Raises ValueError naming the argument's index and type (or the expected
    count) when ``args`` does not fit.
    """
    params = func.type.params
    if len(args) != len(params):
        wanted = ", ".join(t.wat_name for t in params) or "none"
        name = f"`{func.name}`" if func.name else "the function"
        raise ValueError(f"{name} takes {len(params)} argument{'s' if len(params) != 1 else ''} ({wanted}), "
                         f"got {len(args)}")
    values = []
    for index, (valtype, text) in enumerate(zip(params, args)):
        try:
            if valtype in _INT_BITS:
                values.append(Val.from_python(valtype, _parse_int(text, _INT_BITS[valtype])))
            elif valtype == ValType.F32:
                values.append(Val.f32_bits(_parse_float_bits(text, valtype)))
            elif valtype == ValType.F64:
                values.append(Val.f64_bits(_parse_float_bits(text, valtype)))
            else:
                raise ValueError("reference arguments cannot be given on the command line")
        except ValueError as e:
            raise ValueError(f"argument {index} ({text!r}) is not a valid {valtype.wat_name}: {e}") from None
    return values


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def _shortest_f32_digits(bits: int) -> str:
    """The shortest decimal that reads back as the f32 ``bits`` (like Rust's
    float formatting, which prints the shortest round-tripping digits)."""
    from fractions import Fraction

    magnitude = bits & 0x7FFF_FFFF
    value = struct.unpack("<f", struct.pack("<I", magnitude))[0]
    for precision in range(1, 10):
        # The correctly rounded `precision`-digit decimal is the nearest one, so
        # if any decimal of this length reads back, this one does.
        text = f"{value:.{precision - 1}e}"
        if _f32_bits_exact(Fraction(text)) == magnitude:
            return text
    raise AssertionError(f"no 9-digit decimal reads back as f32 {bits:#x}")  # 9 digits always suffice


def _rust_display(digits: str, negative: bool) -> str:
    """Positional notation without exponent and without a trailing ``.0``, as
    Rust's ``Display`` for floats prints (``1``, ``0.1``, ``1e20`` in full)."""
    from decimal import Decimal

    text = format(abs(Decimal(digits)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return ("-" if negative else "") + text


def _format_float(bits: int, width: int) -> str:
    if width == 32:
        value = struct.unpack("<f", struct.pack("<I", bits))[0]
        negative = bool(bits >> 31)
    else:
        value = struct.unpack("<d", struct.pack("<Q", bits))[0]
        negative = bool(bits >> 63)
    if math.isnan(value):
        return "NaN"  # Rust prints every NaN this way, sign and payload dropped
    if math.isinf(value):
        return "-inf" if negative else "inf"
    digits = _shortest_f32_digits(bits) if width == 32 else repr(abs(value))
    return _rust_display(digits, negative)


def format_value(value: Any) -> str:
    """One result as ``wasmtime run --invoke`` prints it: integers signed,
    floats in Rust's ``Display`` form (``NaN``, ``inf``, ``-0``, no exponent),
    references as ``<funcref>``/``<null funcref>``/``<externref>``/``<null externref>``.
    Plain Python floats are formatted as f64."""
    if isinstance(value, Val):
        t = value.type
        if t in (ValType.I32, ValType.I64):
            return str(value.value)
        if t == ValType.F32:
            return _format_float(value.bits, 32)
        if t == ValType.F64:
            return _format_float(value.bits, 64)
        name = "funcref" if t == ValType.FUNCREF else "externref"
        return f"<{name}>" if value.ref is not None else f"<null {name}>"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(struct.unpack("<Q", struct.pack("<d", value))[0], 64)
    if value is None:
        return "<null ref>"
    return f"<{type(value).__name__}>"


def format_results(results: Any) -> str:
    """One line per value (each ending in a newline); ``""`` for no results.

    Accepts what ``Func.call_vals`` returns (a list of Vals), or what ``Func()``
    returns (``None``, one value, or a tuple)."""
    if results is None:
        return ""
    if not isinstance(results, (list, tuple)):
        results = [results]
    return "".join(format_value(v) + "\n" for v in results)


# --------------------------------------------------------------------------
# Instantiation
# --------------------------------------------------------------------------


def default_entry(instance: codemem.Instance) -> str | None:
    """The export to run without ``--invoke``: a WASI command's ``_start``, else
    ``main``, else None (only function exports count)."""
    exports = instance.exports
    for name in ("_start", "main"):
        if isinstance(exports.get(name), codemem.Func):
            return name
    return None


def instantiate(store: codemem.Store, module: codemem.Module, *, wasi: WasiContext | None = None) -> codemem.Instance:
    """Instantiates ``module`` with every import resolved.

    ``wasi_snapshot_preview1`` functions come from ``wasi`` (a default
    :class:`WasiContext` on ``sys.stdout``/``sys.stderr`` with no arguments if
    None); any other import raises :class:`codemem.LinkError` naming it.
    A start function runs here, so this may also raise Trap or WasiExit.
    """
    if wasi is None:
        wasi = WasiContext()
    externs = []
    for imp in module.imports:
        where = f"{imp.module}::{imp.name}"
        if imp.module != WASI_MODULE:
            raise LinkError(f"unknown import: {where} ({_describe_extern(imp.type)}) is not provided; "
                            f"only {WASI_MODULE} functions are")
        if not isinstance(imp.type, codemem.FuncType):
            raise LinkError(f"unknown import: {where} is a {_describe_extern(imp.type)}; {WASI_MODULE} "
                            "provides only functions")
        externs.append(wasi.host_function(store, imp.name, imp.type))
    wasi.attach(store, module)
    instance = codemem.Instance(store, module, externs)
    wasi.bind(instance)
    return instance


def _describe_extern(t: Any) -> str:
    if isinstance(t, codemem.FuncType):
        return f"function {t}"
    return type(t).__name__.replace("Type", "").lower()


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------


def _func_exports(instance: codemem.Instance) -> list[str]:
    return [name for name, ext in instance.exports.items() if isinstance(ext, codemem.Func)]


#: Backtraces longer than this (runaway recursion) print their first and last
#: frames only.
_BACKTRACE_HEAD, _BACKTRACE_TAIL = 50, 10


def _print_trap(trap: Trap, err: TextIO) -> None:
    print(f"Error: wasm trap: {trap.message}", file=err)
    frames = trap.frames
    if not frames:
        return
    print("wasm backtrace:", file=err)
    shown = list(enumerate(frames))
    if len(frames) > _BACKTRACE_HEAD + _BACKTRACE_TAIL:
        shown = shown[:_BACKTRACE_HEAD] + [None] + shown[-_BACKTRACE_TAIL:]
    for item in shown:
        if item is None:
            elided = len(frames) - _BACKTRACE_HEAD - _BACKTRACE_TAIL
            print(f"     ... {elided} frames elided ...", file=err)
        else:
            depth, frame = item
            print(f"{depth:>3}: {frame}", file=err)


def _usage_error(err: TextIO, message: str) -> int:
    print(f"Error: {message}", file=err)
    return EXIT_USAGE


def run_module(path: str, invoke: str | None, args: Sequence[str], *,
               out: TextIO | None = None, err: TextIO | None = None,
               wasi_options: WasiOptions | None = None) -> int:
    """Runs ``path`` (a .wasm file) and returns the exit code (see the module doc).

    ``invoke`` names the export to call with ``args`` parsed to its parameter
    types; None runs :func:`default_entry` (for ``_start``, ``args`` become
    ``argv[1:]``).  Results go to ``out``, one per line; the guest's WASI stdout
    and stderr go to ``out`` and ``err``; errors go to ``err``.  ``out``/``err``
    default to ``sys.stdout``/``sys.stderr`` as they are at call time.
    ``wasi_options`` grants preopened directories, environment and stdin
    (default: none of them; stdin at end of file).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        wasm = Path(path).read_bytes()
    except OSError as e:
        return _usage_error(err, f"cannot read {path}: {e.strerror or e}")
    try:
        module = codemem.Module(codemem.Engine(debug=False), wasm, name=Path(path).stem)
    except CompileError as e:
        return _usage_error(err, f"failed to compile {path}: {e}")
    try:
        wasi = (wasi_options or WasiOptions()).context([str(path)], stdout=out, stderr=err)
    except ValueError as e:  # a --dir that cannot be opened
        return _usage_error(err, str(e))
    store = codemem.Store(module.engine)
    try:
        try:
            try:
                instance = instantiate(store, module, wasi=wasi)
            except (LinkError, ValueError) as e:  # ValueError: a memory over 4 GiB
                return _usage_error(err, f"failed to instantiate {path}: {e}")
            name = invoke if invoke is not None else default_entry(instance)
            exported = ", ".join(_func_exports(instance)) or "none"
            if name is None:
                return _usage_error(err, f"{path} has no `_start` or `main` export; use --invoke FUNC "
                                         f"(exported functions: {exported})")
            func = instance.exports.get(name)
            if not isinstance(func, codemem.Func):
                what = "is not a function" if func is not None else "is not exported"
                return _usage_error(err, f"`{name}` {what} by {path} (exported functions: {exported})")
            if invoke is None and name == "_start":
                wasi.args.extend(args)  # a WASI command gets its arguments as argv
                values = []
            else:
                try:
                    values = parse_invoke_args(func, args)
                except ValueError as e:
                    return _usage_error(err, str(e))
            results = func.call_vals(values)
        except WasiExit as e:
            log.debug("guest exited with status %d", e.status)
            return e.status
        except Trap as trap:
            _print_trap(trap, err)
            return EXIT_TRAP
        finally:
            wasi.flush()
    finally:
        store.close()
        wasi.close()
    out.write(format_results(results))
    return 0
