"""Guest traps: spec wording, wasm backtrace, and a Store that keeps working.

For every trap kind the engine reports, a small module (with a name section:
the WAT ``$names``) runs a chain ``$outer -> $middle -> $inner`` where
``$inner`` traps for one argument and returns a known value for another.
Under ``Engine(debug=True)`` and ``Engine(debug=False)`` we check:

* ``Trap.message`` is the spec interpreter's wording (what ``assert_trap``
  expects; WebAssembly spec test suite);
* ``Trap.frames`` (:class:`codemem.runtime.FrameInfo`) names the functions
  innermost first, with the module offset of the trapping instruction for the
  innermost frame and of the ``call`` instruction for every caller;
* the Store is usable afterwards: another export, and the same chain with a
  non-trapping argument, return the right values.

The expected offsets come from ``wasm-objdump -d`` (wabt), not from our frame
tables or our decoder, so a frame-table bug cannot hide behind itself.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

import codemem

MODES = pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])

WASM_OBJDUMP = shutil.which("wasm-objdump")

#: `` 000036: 6e                         | i32.div_u`` (wabt's -d listing).
_INSTRUCTION_LINE = re.compile(r"^\s*([0-9a-f]+):\s[0-9a-f ]*\|\s*(.*)$")
#: ``000031 func[0] <callee>:``
_FUNCTION_LINE = re.compile(r"^([0-9a-f]+) func\[(\d+)\] <([^>]*)>:$")


@dataclass(frozen=True)
class ObjdumpFunction:
    index: int
    name: str
    instructions: list[tuple[int, str]]  # (module offset, text without immediates' comments)

    def offsets_of(self, mnemonic: str) -> list[int]:
        """Module offsets of every instruction whose mnemonic is ``mnemonic``."""
        return [offset for offset, text in self.instructions if text.split(" ", 1)[0] == mnemonic]

    def only(self, mnemonic: str) -> int:
        found = self.offsets_of(mnemonic)
        assert len(found) == 1, f"{self.name}: expected one {mnemonic}, wasm-objdump shows {found}"
        return found[0]


def objdump_functions(wasm: bytes, tmp_path: Path) -> dict[str, ObjdumpFunction]:
    """Parses ``wasm-objdump -d``: each function's instructions with their module offsets."""
    assert WASM_OBJDUMP, "wasm-objdump (Debian package wabt) is required for independent offsets"
    path = tmp_path / "module.wasm"
    path.write_bytes(wasm)
    listing = subprocess.run([WASM_OBJDUMP, "-d", str(path)], check=True, capture_output=True, text=True).stdout
    functions: dict[str, ObjdumpFunction] = {}
    current = None
    for line in listing.splitlines():
        if m := _FUNCTION_LINE.match(line):
            current = ObjdumpFunction(int(m.group(2)), m.group(3), [])
            functions[current.name] = current
        elif current is not None and (m := _INSTRUCTION_LINE.match(line)):
            current.instructions.append((int(m.group(1), 16), m.group(2).strip()))
    assert functions, f"no functions in wasm-objdump output:\n{listing}"
    return functions


# --------------------------------------------------------------------------
# The modules: one per trap kind, same call chain
# --------------------------------------------------------------------------

#: Shared by every case: ``$outer(x) = 2 * $middle(x)``, ``$middle(x) = 1 + $inner(x)``.
CHAIN = """
  (type $t_i32 (func (param i32) (result i32)))
  (type $t_i64 (func (param i32) (result i64)))
  (memory 1)
  (data (i32.const 8) "\\2a\\00\\00\\00")
  (table $tab 3 funcref)
  (elem (table $tab) (i32.const 0) func $target)
  (elem (table $tab) (i32.const 2) func $wrong_type)
  (func $target (type $t_i32) (i32.add (local.get 0) (i32.const 10)))
  (func $wrong_type (type $t_i64) (i64.extend_i32_s (local.get 0)))
  (func $middle (param $x i32) (result i32) (i32.add (i32.const 1) (call $inner (local.get $x))))
  (func $outer (export "outer") (param $x i32) (result i32) (i32.mul (i32.const 2) (call $middle (local.get $x))))
  (func $answer (export "answer") (result i32) (i32.const 42))
"""


@dataclass(frozen=True)
class TrapCase:
    id: str
    message: str  # the spec interpreter's wording
    inner: str  # the body of $inner (param $x i32) (result i32)
    mnemonic: str  # the trapping instruction as wasm-objdump prints it
    trapping_arg: int
    safe_arg: int
    inner_result: int  # $inner(safe_arg)


CASES = [
    TrapCase("unreachable", "unreachable",
             "(if (local.get $x) (then (unreachable))) (i32.const 5)", "unreachable", 1, 0, 5),
    TrapCase("div_u_by_zero", "integer divide by zero",
             "(i32.div_u (i32.const 100) (local.get $x))", "i32.div_u", 0, 5, 20),
    TrapCase("rem_s64_by_zero", "integer divide by zero",
             "(i32.wrap_i64 (i64.rem_s (i64.const 100) (i64.extend_i32_s (local.get $x))))", "i64.rem_s", 0, 7, 2),
    TrapCase("div_s_overflow", "integer overflow",
             "(i32.div_s (i32.const 0x80000000) (local.get $x))", "i32.div_s", -1, 2, -0x40000000),
    TrapCase("div_s64_overflow", "integer overflow",
             "(i32.wrap_i64 (i64.div_s (i64.const 0x8000000000000000) (i64.extend_i32_s (local.get $x))))",
             "i64.div_s", -1, 1 << 16, 0),
    TrapCase("trunc_out_of_range", "integer overflow",
             "(i32.trunc_f64_s (f64.mul (f64.convert_i32_s (local.get $x)) (f64.const 1e10)))",
             "i32.trunc_f64_s", 1, 0, 0),
    TrapCase("trunc_nan", "invalid conversion to integer",
             "(i32.wrap_i64 (i64.trunc_f64_u (f64.sqrt (f64.convert_i32_s (local.get $x)))))",
             "i64.trunc_f64_u", -1, 16, 4),
    TrapCase("load_oob", "out of bounds memory access",
             "(i32.load offset=8 (local.get $x))", "i32.load", 65532, 0, 42),
    TrapCase("store_oob", "out of bounds memory access",
             "(i32.store16 (local.get $x) (i32.const 7)) (i32.load16_u (local.get $x))", "i32.store16", 65535, 100, 7),
    TrapCase("memory_fill_oob", "out of bounds memory access",
             "(memory.fill (local.get $x) (i32.const 0xab) (i32.const 16)) (i32.load8_u (local.get $x))",
             "memory.fill", 65530, 200, 0xAB),
    TrapCase("memory_copy_oob", "out of bounds memory access",
             "(memory.copy (i32.const 300) (local.get $x) (i32.const 4)) (i32.load (i32.const 300))",
             "memory.copy", 65534, 8, 42),
    TrapCase("undefined_element", "undefined element",
             "(call_indirect (type $t_i32) (local.get $x) (local.get $x))", "call_indirect", 3, 0, 10),
    TrapCase("uninitialized_element", "uninitialized element",
             "(call_indirect (type $t_i32) (local.get $x) (local.get $x))", "call_indirect", 1, 0, 10),
    TrapCase("indirect_type_mismatch", "indirect call type mismatch",
             "(call_indirect (type $t_i32) (local.get $x) (local.get $x))", "call_indirect", 2, 0, 10),
    TrapCase("table_get_oob", "out of bounds table access",
             "(ref.is_null (table.get $tab (local.get $x)))", "table.get", 3, 1, 1),
]


def case_module(case: TrapCase) -> bytes:
    return wasmtime.wat2wasm(f"(module $trap_{case.id} {CHAIN}\n"
                             f"  (func $inner (param $x i32) (result i32) {case.inner}))")


def fresh_instance(wasm: bytes, debug: bool, **store_options):
    engine = codemem.Engine(debug=debug)
    store = codemem.Store(engine, **store_options)
    instance = codemem.Instance(store, codemem.Module(engine, wasm), [])
    return store, instance


def assert_frame(frame, functions: dict[str, ObjdumpFunction], name: str, offset: int, module_name: str):
    assert frame.func_name == name, f"frame {frame} should be {name}"
    assert frame.func_index == functions[name].index, f"frame {frame}: index {frame.func_index}"
    assert frame.module_name == module_name
    assert frame.module_offset == offset, f"{name}: trap at {frame.module_offset:#x}, wasm-objdump says {offset:#x}"


@MODES
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_trap_message_backtrace_and_recovery(case: TrapCase, debug: bool, tmp_path):
    wasm = case_module(case)
    functions = objdump_functions(wasm, tmp_path)
    store, instance = fresh_instance(wasm, debug)
    try:
        outer = instance.exports["outer"]
        with pytest.raises(codemem.Trap) as raised:
            outer(case.trapping_arg)
        trap = raised.value
        assert trap.message == case.message
        assert str(trap) == case.message
        frames = trap.frames
        assert [f.func_name for f in frames] == ["inner", "middle", "outer"], [str(f) for f in frames]
        module_name = f"trap_{case.id}"
        assert_frame(frames[0], functions, "inner", functions["inner"].only(case.mnemonic), module_name)
        assert_frame(frames[1], functions, "middle", functions["middle"].only("call"), module_name)
        assert_frame(frames[2], functions, "outer", functions["outer"].only("call"), module_name)
        # Every frame's pc is inside this Store's code for the module.
        code = instance.store_code
        assert all(code.base <= f.pc < code.code_end for f in frames)

        # The Store survives: another export, then the same chain without a trap, twice
        # (a second trap after recovery must be reported just the same).
        assert instance.exports["answer"]() == 42
        assert outer(case.safe_arg) == 2 * (1 + case.inner_result)
        with pytest.raises(codemem.Trap) as again:
            outer(case.trapping_arg)
        assert again.value.message == case.message
        assert [(f.func_name, f.module_offset) for f in again.value.frames] == \
            [(f.func_name, f.module_offset) for f in frames]
        assert outer(case.safe_arg) == 2 * (1 + case.inner_result)
    finally:
        store.close()


# --------------------------------------------------------------------------
# Stack exhaustion: mutual recursion, so a lost frame would show
# --------------------------------------------------------------------------

RECURSION = """
(module $deep
  (func $ping (param $n i32) (result i32)
    (if (result i32) (local.get $n)
      (then (i32.add (i32.const 1) (call $pong (i32.sub (local.get $n) (i32.const 1)))))
      (else (i32.const 0))))
  (func $pong (param $n i32) (result i32)
    (i32.add (i32.const 1) (call $ping (local.get $n))))
  (func $start (export "start") (param $n i32) (result i32) (call $ping (local.get $n)))
  (func $answer (export "answer") (result i32) (i32.const 42))
)
"""


@MODES
def test_call_stack_exhausted(debug: bool, tmp_path):
    wasm = wasmtime.wat2wasm(RECURSION)
    functions = objdump_functions(wasm, tmp_path)
    # A small guest stack keeps the recursion (and the backtrace) short.
    store, instance = fresh_instance(wasm, debug, stack_size=256 << 10)
    try:
        start = instance.exports["start"]
        assert start(100) == 200  # ping/pong 100 times each, then 0
        with pytest.raises(codemem.Trap) as raised:
            start(-1)  # 2^32-1 levels: never returns
        trap = raised.value
        assert trap.message == "call stack exhausted"
        frames = trap.frames
        assert len(frames) > 100, f"only {len(frames)} frames for a stack overflow"
        # The stack check is in the prologue, before any instruction: the
        # innermost frame is at the body's first instruction (wasm-objdump's
        # first line for the function).
        innermost = frames[0].func_name
        assert innermost in ("ping", "pong")
        first = functions[innermost].instructions[0][0]
        assert_frame(frames[0], functions, innermost, first, "deep")
        # Then strictly alternating callers, each at its call instruction.
        call_offsets = {name: functions[name].only("call") for name in ("ping", "pong")}
        expected_caller = "pong" if innermost == "ping" else "ping"
        for frame in frames[1:-1]:
            assert_frame(frame, functions, expected_caller, call_offsets[expected_caller], "deep")
            expected_caller = "pong" if expected_caller == "ping" else "ping"
        if len(frames) < 10000:  # Store.backtrace's limit: otherwise the outermost frames are cut off
            assert_frame(frames[-1], functions, "start", functions["start"].only("call"), "deep")
        # The Store survives: the guest stack is reusable from the top.
        assert instance.exports["answer"]() == 42
        assert start(300) == 600
        with pytest.raises(codemem.Trap) as again:
            start(-1)
        assert again.value.message == "call stack exhausted"
        assert start(3) == 6
    finally:
        store.close()


@MODES
def test_trap_in_one_instance_leaves_another_instance_of_the_store_working(debug: bool):
    """Two instances in one Store: a trap unwinds through one, the other still runs."""
    div = next(c for c in CASES if c.id == "div_u_by_zero")
    engine = codemem.Engine(debug=debug)
    store = codemem.Store(engine)
    try:
        module = codemem.Module(engine, case_module(div))
        first = codemem.Instance(store, module, [])
        second = codemem.Instance(store, module, [])
        with pytest.raises(codemem.Trap) as raised:
            first.exports["outer"](0)
        assert raised.value.message == "integer divide by zero"
        # Frames belong to the instance that trapped (its own StoreCode is shared
        # per module in a Store, so compare names and offsets, not instances).
        assert [f.func_name for f in raised.value.frames] == ["inner", "middle", "outer"]
        assert second.exports["outer"](5) == 42
        assert first.exports["outer"](5) == 42
    finally:
        store.close()


def test_host_function_exception_propagates_and_store_recovers():
    """A Python exception raised in an import crosses the guest frames unchanged."""
    wasm = wasmtime.wat2wasm("""
      (module $host
        (import "env" "check" (func $check (param i32) (result i32)))
        (func $mid (param i32) (result i32) (i32.add (i32.const 1) (call $check (local.get 0))))
        (func (export "run") (param i32) (result i32) (call $mid (local.get 0))))""")
    for debug in (True, False):
        engine = codemem.Engine(debug=debug)
        store = codemem.Store(engine)
        try:
            def check(x):
                if x < 0:
                    raise ValueError(f"negative {x}")
                return x * 3

            f = codemem.Func(store, codemem.FuncType([codemem.ValType.i32], [codemem.ValType.i32]), check)
            instance = codemem.Instance(store, codemem.Module(engine, wasm), [f])
            with pytest.raises(ValueError, match="negative -4"):
                instance.exports["run"](-4)
            assert instance.exports["run"](4) == 13
        finally:
            store.close()
