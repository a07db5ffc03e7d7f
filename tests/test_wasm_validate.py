"""Validator tests: module-level rules, per-instruction rules, and the state the
single-pass compiler reads from FuncValidator between steps."""
from __future__ import annotations


import pytest
import wasmtime

from codemem.errors import CompileError
from codemem.wasm.decoder import decode_module
from codemem.wasm.validator import (
    BLOCK, ELSE, FUNCTION, IF, LOOP, FuncValidator, validate, validate_module,
)
from codemem.wasm.types import UNKNOWN, ValType

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
FUNCREF, EXTERNREF = ValType.FUNCREF, ValType.EXTERNREF


def wasm(wat: str) -> bytes:
    return wasmtime.wat2wasm(wat)


def invalid(wat: str) -> CompileError:
    data = wasm(wat)
    with pytest.raises(CompileError) as info:
        validate(data)
    err = info.value
    assert isinstance(err.offset, int) and 0 <= err.offset <= len(data)
    return err


def test_valid_module_passes():
    info = validate(wasm("""
      (module
        (import "m" "g" (global $ig i32))
        (memory 1 65536)
        (table $t 1 funcref) (table $e 2 externref)
        (global $g (mut i32) (global.get $ig))
        (elem (table $t) (i32.const 0) func $f)
        (data (global.get $ig) "x")
        (func $f (param i32) (result i32 i64)
          (local.get 0) (i64.const 1))
        (func (export "run") (result i32)
          (local externref)
          (table.set $e (i32.const 0) (local.get 0))
          (drop (table.grow $e (ref.null extern) (i32.const 1)))
          (drop (ref.is_null (ref.func $f)))
          (call $f (i32.const 1)) (drop)
          (block (result i32) (i32.const 3) (br 0))
          (select (i32.const 1) (i32.const 2))
          (select (result i64) (i64.const 1) (i64.const 2) (i32.const 0)) (drop)
          (if (param i32) (result i32) (then (i32.const 1) (i32.add)) (else))
          (global.set $g (global.get $g))
          (i32.trunc_sat_f64_u (f64.const 1))
          (i32.extend8_s) (drop)))
      """))
    assert len(info.codes) == 2


@pytest.mark.parametrize("wat, message", [
    ("(module (memory 1) (memory 1))", "multiple memories"),
    ('(module (import "a" "b" (memory 1)) (memory 1))', "multiple memories"),
    ("(module (memory 65537))", "memory size must be at most 65536 pages (4GiB)"),
    ("(module (memory 0 65537))", "memory size must be at most 65536 pages (4GiB)"),
    ("(module (memory 2 1))", "size minimum must not be greater than maximum"),
    ("(module (table 2 1 funcref))", "size minimum must not be greater than maximum"),
    ("(module (global i32 (i32.add (i32.const 1) (i32.const 2))))", "constant expression required"),
    ("(module (global i32 (i64.const 1)))", "type mismatch"),
    ("(module (global i32))", "type mismatch"),
    ("(module (global i32 (i32.const 1) (i32.const 1)))", "type mismatch"),
    ("(module (global i32 (i32.const 0)) (global i32 (global.get 0)))", "unknown global 0"),
    ('(module (import "a" "b" (global (mut i32))) (global i32 (global.get 0)))',
     "constant expression required"),
    ("(module (global funcref (ref.func 3)))", "unknown function 3"),
    ("(module (func) (export \"a\" (func 0)) (export \"a\" (func 0)))", "duplicate export name"),
    ('(module (export "a" (func 5)))', "unknown function 5"),
    ('(module (export "a" (global 0)))', "unknown global 0"),
    ('(module (export "a" (table 0)))', "unknown table 0"),
    ('(module (export "a" (memory 0)))', "unknown memory 0"),
    ("(module (func (param i32)) (start 0))", "start function must not have parameters or results"),
    ("(module (func (result i32) (i32.const 0)) (start 0))", "start function"),
    ("(module (start 3))", "unknown function 3"),
    ("(module (table 1 externref) (func $f) (elem (i32.const 0) func $f))", "type mismatch"),
    ("(module (table 1 funcref) (func $f) (elem (i64.const 0) func $f))", "type mismatch"),
    ("(module (func $f) (elem (i32.const 0) func $f))", "unknown table 0"),
    ("(module (data (i32.const 0) \"x\"))", "unknown memory 0"),
    ("(module (memory 1) (data (i64.const 0) \"x\"))", "type mismatch"),
    ("(module (memory 1) (data (offset (i32.const 0) (i32.const 0)) \"x\"))", "type mismatch"),
    ("(module (func (type 7)))", "unknown type 7"),
    ('(module (import "a" "b" (func (type 7))))', "unknown type 7"),
])
def test_module_rules(wat, message):
    assert invalid(wat).message.startswith(message)


@pytest.mark.parametrize("body, message", [
    ("(i32.add (i32.const 1) (i64.const 2)) drop", "type mismatch"),
    ("i32.add drop", "type mismatch"),
    ("(i32.const 1)", "type mismatch"),                      # value left at the end
    ("local.get 3 drop", "unknown local 3"),
    ("global.get 0 drop", "unknown global 0"),
    ("br 1", "unknown label 1"),
    ("call 9", "unknown function 9"),
    ("(i32.load (i32.const 0)) drop", "unknown memory 0"),
    ("(memory.size) drop", "unknown memory 0"),
    ("(table.size 0) drop", "unknown table 0"),
    ("(call_indirect (i32.const 0))", "unknown table 0"),
    ("(elem.drop 0)", "unknown elem segment 0"),
    ("(ref.func 0) drop", "undeclared function reference"),
    ("(select (ref.null func) (ref.null func) (i32.const 1)) drop", "type mismatch"),
    ("(ref.is_null (i32.const 0)) drop", "type mismatch"),
    ("(block (result i32) (i64.const 0))  drop", "type mismatch"),
    ("(if (i32.const 0) (then (i32.const 1) drop) (else (i32.const 1)))", "type mismatch"),
    ("(if (result i32) (i32.const 0) (then (i32.const 1)))", "type mismatch"),
    ("(block (block (result i32) (i32.const 0) (br_table 0 1 (i32.const 0))) drop)", "type mismatch"),
    ("(block (result i32) (br 0)) drop", "type mismatch"),
    ("(loop (result i32) (br 0 (i32.const 1))) drop", None),
])
def test_instruction_rules(body, message):
    if message is None:
        validate(wasm(f"(module (func {body}))"))
    else:
        assert invalid(f"(module (func {body}))").message.startswith(message)


def test_memory_and_table_instruction_rules():
    assert invalid("(module (memory 1) (func (drop (i32.load align=8 (i32.const 0)))))").message == \
        "alignment must not be larger than natural"
    assert invalid("(module (memory 1) (func (i64.store8 align=2 (i32.const 0) (i64.const 0))))").message == \
        "alignment must not be larger than natural"
    assert invalid('(module (import "m" "g" (global i32)) (func (global.set 0 (i32.const 1))))').message == \
        "global is immutable"
    assert invalid("(module (table 1 funcref) (table 1 externref) (func (table.copy 0 1 "
                   "(i32.const 0) (i32.const 0) (i32.const 0))))").message.startswith("type mismatch")
    assert invalid("(module (table 1 externref) (type (func)) (func (call_indirect (type 0) "
                   "(i32.const 0))))").message.startswith("type mismatch")
    assert invalid("(module (memory 1) (data \"x\") (func (data.drop 1)))").message == \
        "unknown data segment 1"
    # memory.init without the datacount section: a binary-format rule.
    data = bytes.fromhex(
        "0061736d01000000" "0104016000" "00" "03020100" "0503010000"
        "0a0e010c00" "410041004100" "fc080000" "0b" "0b03010100")
    with pytest.raises(CompileError, match="data count section required"):
        validate(data)


def test_unreachable_code_is_polymorphic():
    validate(wasm("(module (func (result i32) unreachable i32.add))"))
    validate(wasm("(module (func (result i64) (br 0 (i64.const 1)) (select) drop i64.const 2))"))
    validate(wasm("(module (func (return) (ref.is_null) (drop)))"))
    assert invalid("(module (func (result i32) unreachable (i64.const 0) i32.add))").message.startswith(
        "type mismatch")
    assert invalid("(module (func unreachable (select (i32.const 0) (ref.null func) (i32.const 0)) drop))"
                   ).message.startswith("type mismatch")


def test_func_validator_state_for_the_compiler():
    data = wasm("""
      (module
        (type $bt (func (param i32) (result i64)))
        (func (param f32) (result i64) (local i32 f64)
          i32.const 7
          block (type $bt)
            loop (param i32) (result i64)
              i32.const 1
              br_if 0
              drop
              unreachable
            end
          end))
      """)
    info = decode_module(data)
    validate_module(info)
    instrs = info.read_body(0)
    v = FuncValidator(info, 0)
    assert v.local_types == (F32, I32, F64)
    assert v.func_type.results == (I64,)
    seen = []
    for ins in instrs:
        seen.append((ins.name, list(v.operand_types), [f.kind for f in v.control], v.is_unreachable()))
        if ins.name == "br_if":
            assert v.label_types(0) == (I32,)          # loop label: its params
            assert v.label_types(1) == (I64,)          # block label: its results
            assert v.label_types(2) == (I64,)          # function label
            assert v.control[-1].height == 0 and v.control[-2].height == 0  # params popped
            assert v.control[-1].start_types == (I32,) and v.control[-1].end_types == (I64,)
        v.step(ins)
    v.finish()
    assert v.done
    assert seen == [
        ("i32.const", [], [FUNCTION], False),
        ("block", [I32], [FUNCTION], False),
        ("loop", [I32], [FUNCTION, BLOCK], False),
        ("i32.const", [I32], [FUNCTION, BLOCK, LOOP], False),
        ("br_if", [I32, I32], [FUNCTION, BLOCK, LOOP], False),
        ("drop", [I32], [FUNCTION, BLOCK, LOOP], False),
        ("unreachable", [], [FUNCTION, BLOCK, LOOP], False),
        ("end", [], [FUNCTION, BLOCK, LOOP], True),
        ("end", [I64], [FUNCTION, BLOCK], False),
        ("end", [I64], [FUNCTION], False),
    ]
    assert v.operand_types == [I64] and v.control == []


def test_unknown_operands_and_else_frames():
    data = wasm("""
      (module (func (param i32) (result i32)
        local.get 0
        if (result i32)
          unreachable
          select
        else
          i32.const 2
        end))
      """)
    info = decode_module(data)
    instrs = info.read_body(0)
    v = FuncValidator(info, 0)
    kinds = {}
    for ins in instrs:
        if ins.name in ("select", "else"):
            kinds[ins.name] = (list(v.operand_types), v.control[-1].kind, v.is_unreachable())
        v.step(ins)
        if ins.name == "select":
            assert v.operand_types == [UNKNOWN]        # polymorphic result
        if ins.name == "else":
            assert v.control[-1].kind == ELSE and not v.is_unreachable()
    v.finish()
    assert kinds["select"] == ([], IF, True)
    assert kinds["else"] == ([UNKNOWN], IF, True)


def test_step_errors_carry_the_instruction_offset():
    data = wasm("(module (func (result i32) (i64.const 1)))")
    info = decode_module(data)
    instrs = info.read_body(0)
    v = FuncValidator(info, 0)
    v.step(instrs[0])
    with pytest.raises(CompileError) as exc:
        v.step(instrs[1])
    assert exc.value.offset == instrs[1].offset and exc.value.message.startswith("type mismatch")


def test_finish_requires_the_final_end():
    info = decode_module(wasm("(module (func nop))"))
    v = FuncValidator(info, 0)
    v.step(info.read_body(0)[0])
    with pytest.raises(CompileError):
        v.finish()

