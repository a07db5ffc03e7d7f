"""Decoder and instruction-reader tests on byte literals and wat2wasm modules."""
from __future__ import annotations


import pytest
import wasmtime

from codemem.errors import CompileError
from codemem.wasm.binary import read_len32, read_name, read_sleb, read_uleb
from codemem.wasm.decoder import MAX_LOCALS, decode_module
from codemem.wasm.instructions import Instr, read_const_instrs, read_instructions
from codemem.wasm.module import SegmentMode
from codemem.wasm.opcodes import OP_BY_NAME, OPCODES, Imm
from codemem.wasm.types import (
    ExternKind, FuncType, GlobalType, Limits, MemoryType, TableType, ValType,
)

HEADER = b"\x00asm\x01\x00\x00\x00"


def leb_u(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb_u(len(payload)) + payload


def vec(items: list[bytes]) -> bytes:
    return leb_u(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    raw = s.encode()
    return leb_u(len(raw)) + raw


def malformed(data: bytes) -> CompileError:
    with pytest.raises(CompileError) as info:
        decode_module(data)
    err = info.value
    assert isinstance(err.offset, int) and 0 <= err.offset <= len(data)
    return err


# --- LEB128 ------------------------------------------------------------------------

@pytest.mark.parametrize("raw, bits, value", [
    (b"\x00", 32, 0),
    (b"\x7f", 32, 127),
    (b"\x80\x01", 32, 128),
    (b"\x82\x80\x80\x80\x00", 32, 2),            # non-minimal but within 5 bytes
    (b"\xff\xff\xff\xff\x0f", 32, 0xFFFF_FFFF),
    (b"\x01", 1, 1),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 64, 2**64 - 1),
])
def test_uleb_values(raw, bits, value):
    assert read_uleb(raw, 0, len(raw), bits) == (value, len(raw))


@pytest.mark.parametrize("raw, bits, value", [
    (b"\x7f", 32, -1),
    (b"\x40", 32, -64),
    (b"\x3f", 32, 63),
    (b"\xff\x7f", 32, -1),
    (b"\x80\x80\x80\x80\x78", 32, -2**31),
    (b"\xff\xff\xff\xff\x07", 32, 2**31 - 1),
    (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f", 64, -2**63),
    (b"\xff\xff\xff\xff\x0f", 33, 2**32 - 1),
])
def test_sleb_values(raw, bits, value):
    assert read_sleb(raw, 0, len(raw), bits) == (value, len(raw))


@pytest.mark.parametrize("raw, bits, signed, message, offset", [
    (b"\x82\x80\x80\x80\x80\x00", 32, False, "integer representation too long", 5),
    (b"\x82\x80\x80\x80\x70", 32, False, "integer too large", 4),
    (b"\x82\x80\x80\x80\x10", 32, False, "integer too large", 4),
    (b"\x02", 1, False, "integer too large", 0),
    (b"\x81\x00", 1, False, "integer representation too long", 1),
    (b"\x80\x80\x80\x80\x70", 32, True, "integer too large", 4),
    (b"\xff\xff\xff\xff\x0f", 32, True, "integer too large", 4),
    (b"\xff\xff\xff\xff\xff\x7f", 32, True, "integer representation too long", 5),
    (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7e", 64, True, "integer too large", 9),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 64, True, "integer too large", 9),
    (b"\x80\x80", 32, False, "unexpected end of section or function", 2),
])
def test_leb_errors(raw, bits, signed, message, offset):
    reader = read_sleb if signed else read_uleb
    with pytest.raises(CompileError) as info:
        reader(raw, 0, len(raw), bits)
    assert (info.value.message, info.value.offset) == (message, offset)


def test_leb_running_past_its_limit_reports_its_own_malformation_first():
    # The reference interpreter reads one stream, so a too-long LEB crossing the
    # section end is "too long", not "unexpected end".
    raw = b"\x80\x80\x80\x80\x80\x00"
    with pytest.raises(CompileError, match="integer representation too long"):
        read_uleb(raw, 0, 2, 32)
    with pytest.raises(CompileError, match="unexpected end"):
        read_uleb(b"\x80\x80\x00", 0, 2, 32)


def test_len32_checks_against_the_file_from_the_length_field():
    assert read_len32(b"\x02ab", 0, 3) == (2, 1)
    assert read_len32(b"\x03ab", 0, 3) == (3, 1)  # counted from the field itself
    with pytest.raises(CompileError) as info:
        read_len32(b"\x04ab", 0, 3)
    assert (info.value.message, info.value.offset) == ("length out of bounds", 0)
    # A claimed 2**32-1 count is rejected before anything is built for it.
    with pytest.raises(CompileError, match="length out of bounds"):
        read_len32(b"\xff\xff\xff\xff\x0f", 0, 5)


def test_names_must_be_utf8():
    assert read_name(b"\x03abc", 0, 4) == ("abc", 4)
    assert read_name(b"\x02" + "é".encode(), 0, 3) == ("é", 3)
    for bad in (b"\x02\xc0\x80", b"\x03\xed\xa0\x80", b"\x04\xf4\x90\x80\x80", b"\x01\xff"):
        with pytest.raises(CompileError) as info:
            read_name(bad, 0, len(bad))
        assert (info.value.message, info.value.offset) == ("malformed UTF-8 encoding", 0)


# --- preamble and section framing ---------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "unexpected end"),
    (b"\x00as", "unexpected end"),
    (b"asm\x00", "magic header not detected"),
    (b"\x00ASM\x01\x00\x00\x00", "magic header not detected"),
    (b"\x00asm\x01\x00\x00", "unexpected end"),
    (b"\x00asm\x02\x00\x00\x00", "unknown binary version"),
    (HEADER + b"\x0d\x00", "malformed section id"),
    (HEADER + b"\x80\x00\x01\x00", "malformed section id"),
    (HEADER + b"\x01\x06\x01\x60\x00\x00", "length out of bounds"),
    (HEADER + section(1, b"\x01\x60\x00\x00\x60\x00\x00"), "section size mismatch"),
    (HEADER + section(3, b"\x00") + section(1, b"\x00"), "unexpected content after last section"),
    (HEADER + section(1, b"\x00") + section(1, b"\x00"), "unexpected content after last section"),
    (HEADER + section(10, b"\x00") + section(12, b"\x00"), "unexpected content after last section"),
    (HEADER + section(3, b"\x01\x00"), "function and code section have inconsistent lengths"),
    (HEADER + section(10, b"\x01\x02\x00\x0b"), "function and code section have inconsistent lengths"),
    (HEADER + section(12, b"\x01"), "data count and data section have inconsistent lengths"),
    (HEADER + section(2, b"\x01\x00\x00\x04"), "malformed import kind"),
    (HEADER + section(2, b"\x01\x00\x00\x80"), "malformed import kind"),
    (HEADER + section(2, b"\x01\x00\x00\x03\x7f\x02"), "malformed mutability"),
    (HEADER + section(2, b"\x01\x00\x00\x03\x7b\x00"), "SIMD (v128) is not supported"),
    (HEADER + section(4, b"\x01\x7f\x00\x00"), "malformed reference type"),
    (HEADER + section(5, b"\x01\x02\x00"), "integer too large"),
    (HEADER + section(1, b"\x01\x61\x00\x00"), "malformed function type"),
    (HEADER + section(1, b"\x01\xe0\x7f\x00\x00"), "integer representation too long"),
    (HEADER + section(1, b"\x01\x60\x01\x40\x00"), "malformed value type"),
    (HEADER + section(7, b"\x01\x00\x05\x00"), "malformed export kind"),
    (HEADER + section(11, b"\x01\x03\x00"), "malformed data segment kind"),
    (HEADER + section(9, b"\x01\x08"), "malformed elements segment kind"),
    (HEADER + section(9, b"\x01\x01\x01\x00"), "malformed element kind"),
    (HEADER + section(0, b""), "unexpected end of section or function"),
    (HEADER + section(0, b"\x02\xc0\x80"), "malformed UTF-8 encoding"),
    (HEADER + section(11, b"\x01\x01\x07abcdef"), "unexpected end of section or function"),
])
def test_malformed_messages(data, message):
    assert malformed(data).message == message


def test_error_offsets_point_at_the_culprit():
    data = HEADER + section(2, b"\x01\x00\x00\x04")
    assert malformed(data).offset == len(data) - 1
    data = HEADER + section(1, b"\x00") + b"\x0e\x00"
    assert malformed(data).offset == len(HEADER) + 3
    data = HEADER + section(5, b"\x01\x00\x82\x80\x80\x80\x70")
    assert malformed(data).offset == len(data) - 1


def test_huge_counts_are_rejected_without_allocating():
    for section_id in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11):
        data = HEADER + section(section_id, b"\xff\xff\xff\xff\x0f")
        assert malformed(data).message == "length out of bounds"


def test_too_many_locals():
    def module(locals_: bytes) -> bytes:
        body = locals_ + b"\x0b"
        return (HEADER + section(1, b"\x01\x60\x00\x00") + section(3, b"\x01\x00")
                + section(10, b"\x01" + leb_u(len(body)) + body))
    assert malformed(module(b"\x02\xff\xff\xff\xff\x0f\x7f\x02\x7e")).message == "too many locals"
    assert malformed(module(b"\x01" + leb_u(MAX_LOCALS + 1) + b"\x7f")).message == "too many locals"
    assert malformed(module(b"\x01\x80\x80\x80\x80\x10\x7f")).message == "integer too large"
    info = decode_module(module(b"\x03\x00\x7f\x02\x7e\x01\x70"))
    assert info.codes[0].locals == (ValType.I64, ValType.I64, ValType.FUNCREF)


def test_empty_module():
    info = decode_module(HEADER)
    assert info.types == [] and info.codes == [] and info.start is None
    assert info.code_section_offset is None and info.num_funcs == 0


# --- whole modules from wat ----------------------------------------------------

WAT = r"""
(module $mod
  (type $t0 (func (param i32 i64) (result f32)))
  (import "env" "f" (func $imp (type $t0)))
  (import "env" "tab" (table 2 10 funcref))
  (import "env" "mem" (memory 1 2))
  (import "env" "g" (global $gi i32))
  (table $t1 3 externref)
  (global $g (mut f64) (f64.const -0x1.8p1))
  (global $h funcref (ref.func $two))
  (export "two" (func $two))
  (export "g" (global $g))
  (start $start)
  (elem (i32.const 1) $two $start)
  (elem $p funcref (ref.null func) (ref.func $two))
  (elem declare func $start)
  (data (i32.const 8) "hi")
  (data $d "passive")
  (func $two (param $a i32) (param $b i32) (result i32 i32)
    (local $x i64) (local $y i64) (local f32)
    local.get $a local.get $b)
  (func $start
    (drop (call $imp (i32.const 1) (i64.const -2)))
    (memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))
    (data.drop $d))
)
"""


@pytest.fixture(scope="module")
def wat_module():
    data = wasmtime.wat2wasm(WAT)
    return data, decode_module(data)


def test_wat_module_sections(wat_module):
    data, info = wat_module
    i32, i64, f32, f64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
    assert info.types[0] == FuncType((i32, i64), (f32,))
    assert [(imp.module, imp.name, imp.kind) for imp in info.imports] == [
        ("env", "f", ExternKind.FUNC), ("env", "tab", ExternKind.TABLE),
        ("env", "mem", ExternKind.MEMORY), ("env", "g", ExternKind.GLOBAL)]
    assert info.imports[1].desc == TableType(ValType.FUNCREF, Limits(2, 10))
    assert info.imports[2].desc == MemoryType(Limits(1, 2))
    assert info.imports[3].desc == GlobalType(i32, False)
    assert info.num_imported_funcs == 1 and info.num_imported_globals == 1
    assert info.tables == [TableType(ValType.EXTERNREF, Limits(3, None))]
    assert info.all_tables[0].elem is ValType.FUNCREF and len(info.all_tables) == 2
    assert info.globals[0].type == GlobalType(f64, True)
    f64_bits = info.globals[0].init.single.imm
    assert f64_bits == 0xC008000000000000  # -3.0, raw bits
    assert info.globals[1].init.single.name == "ref.func"
    assert [(e.name, e.kind, e.index) for e in info.exports] == [
        ("two", ExternKind.FUNC, 1), ("g", ExternKind.GLOBAL, 1)]
    assert info.start == 2
    assert info.func_type(1) == FuncType((i32, i32), (i32, i32))
    assert info.func_type(0) == info.types[0]
    assert info.global_type(0) == GlobalType(i32, False)


def test_wat_module_segments(wat_module):
    _, info = wat_module
    active, passive, declarative = info.elems
    assert active.mode is SegmentMode.ACTIVE and active.items == (1, 2) and not active.uses_exprs
    assert active.offset.single.imm == 1 and active.func_indices() == [1, 2]
    assert passive.mode is SegmentMode.PASSIVE and passive.uses_exprs
    assert passive.func_indices() == [None, 1]
    assert declarative.mode is SegmentMode.DECLARATIVE
    assert info.declared_func_refs == frozenset({1, 2})
    d0, d1 = info.datas
    assert (d0.mode, d0.data, d0.offset.single.imm) == (SegmentMode.ACTIVE, b"hi", 8)
    assert (d1.mode, d1.data, d1.offset) == (SegmentMode.PASSIVE, b"passive", None)
    assert info.data_count == 2


def test_wat_module_code_and_names(wat_module):
    data, info = wat_module
    two, start = info.codes
    assert two.locals == (ValType.I64, ValType.I64, ValType.F32)
    assert data[two.body_offset] == 0x20  # local.get
    assert two.code == data[two.body_offset:two.end_offset] and data[two.end_offset - 1] == 0x0B
    assert info.code_section_offset < two.size_offset < two.locals_offset < two.body_offset
    assert data[info.code_section_offset] == 2  # the count of function bodies
    instrs = info.read_body(0)
    assert [(i.name, i.imm) for i in instrs] == [("local.get", 0), ("local.get", 1), ("end", None)]
    assert instrs[0].offset == two.body_offset
    names = [i.name for i in info.read_body(1)]
    assert "memory.init" in names and names[-1] == "end"
    assert info.names.module == "mod"
    assert info.names.functions == {0: "imp", 1: "two", 2: "start"}
    assert info.names.locals[1] == {0: "a", 1: "b", 2: "x", 3: "y"}
    assert info.func_name(1) == "two"


def test_custom_sections_dwarf_and_bad_name_section():
    name_payload = name("name") + b"\x01\x05\x01\x00\x02\xc0\x80"  # invalid UTF-8 inside
    data = (HEADER + section(0, name(".debug_info") + b"\x01\x02")
            + section(0, name("other") + b"xyz") + section(0, name_payload)
            + section(0, name(".debug_line") + b""))
    info = decode_module(data)
    assert info.dwarf == {".debug_info": b"\x01\x02", ".debug_line": b""}
    assert [c.name for c in info.customs] == [".debug_info", "other", "name", ".debug_line"]
    other = info.customs[1]
    assert data[other.offset:other.offset + 3] == b"xyz"
    assert info.names.functions == {} and info.names.module is None


# --- the instruction reader ----------------------------------------------------

def body(code: bytes):
    data = b"\xaa" + code
    return read_instructions(data, 1, len(data))


def test_instruction_immediates():
    code = (b"\x02\x40" b"\x03\x7f" b"\x04\x05" b"\x0b\x0b\x0b"      # block, loop i32, if (type 5)
            b"\x0e\x02\x00\x01\x02"                                    # br_table [0 1] 2
            b"\x11\x03\x01"                                            # call_indirect type 3 table 1
            b"\x28\x02\x10"                                            # i32.load align 2 offset 16
            b"\x41\x7f" b"\x42\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f"  # i32.const -1, i64.const min
            b"\x43\x00\x00\xc0\x7f"                                    # f32.const nan:0x400000
            b"\x44\x01\x00\x00\x00\x00\x00\xf0\x7f"                    # f64.const signalling NaN
            b"\x1c\x01\x7e" b"\xd0\x6f" b"\xd2\x04" b"\x3f\x00" b"\x40\x00"
            b"\xfc\x08\x01\x00" b"\xfc\x0a\x00\x00" b"\xfc\x0b\x00" b"\xfc\x0c\x02\x01"
            b"\xfc\x0e\x01\x00" b"\xfc\x11\x03" b"\xfc\x07" b"\xc4" b"\x0b")
    got = [(i.name, i.imm) for i in body(code)]
    assert got == [
        ("block", None), ("loop", ValType.I32), ("if", 5), ("end", None), ("end", None), ("end", None),
        ("br_table", ((0, 1), 2)), ("call_indirect", (3, 1)), ("i32.load", (2, 16)),
        ("i32.const", -1), ("i64.const", -2**63), ("f32.const", 0x7FC00000),
        ("f64.const", 0x7FF0000000000001), ("select", (ValType.I64,)), ("ref.null", ValType.EXTERNREF),
        ("ref.func", 4), ("memory.size", 0), ("memory.grow", 0), ("memory.init", 1),
        ("memory.copy", (0, 0)), ("memory.fill", 0), ("table.init", (2, 1)), ("table.copy", (1, 0)),
        ("table.fill", 3), ("i64.trunc_sat_f64_u", None), ("i64.extend32_s", None), ("end", None)]
    instrs = body(code)
    assert instrs[0].offset == 1 and instrs[1].offset == 3
    assert instrs[-4].op == 0xFC11 and instrs[-3].op == 0xFC07
    assert all(OPCODES[i.op].name == i.name for i in instrs)


@pytest.mark.parametrize("code, message", [
    (b"\x06\x0b", "illegal opcode 06"),
    (b"\xfc\x12\x0b", "illegal opcode fc 12"),
    (b"\xfd\x00\x0b", "SIMD instructions are not supported (opcode fd)"),
    (b"\x05\x0b", "END opcode expected"),                 # else outside if
    (b"\x02\x40\x05\x0b\x0b", "END opcode expected"),      # else inside block
    (b"\x04\x40\x05\x05\x0b\x0b", "END opcode expected"),  # second else
    (b"\x3f\x01\x0b", "zero byte expected"),
    (b"\x40\x80\x00\x0b", "zero byte expected"),
    (b"\xfc\x0a\x00\x01\x0b", "zero byte expected"),
    (b"\x02\x80\x7f\x0b\x0b", "unknown type 4294967168"),
    (b"\x0b\x01", "section size mismatch"),                # bytes after the final end
    (b"\x41", "unexpected end of section or function"),
    (b"\x1c\x01\x40\x0b", "malformed value type"),
    (b"\xd0\x7f\x0b", "malformed reference type"),
    (b"\x28\x82\x80\x80\x80\x80\x00\x00\x0b", "integer representation too long"),
])
def test_malformed_code(code, message):
    with pytest.raises(CompileError) as info:
        body(code)
    assert info.value.message == message


def test_missing_final_end_follows_the_reference_interpreter():
    code = b"\x41\x01\x1a"
    data = code + b"\x05\x00"
    with pytest.raises(CompileError, match="END opcode expected"):
        read_instructions(data, 0, 3)
    with pytest.raises(CompileError, match="unexpected end of section or function"):
        read_instructions(code, 0, 3)
    with pytest.raises(CompileError, match="section size mismatch"):
        read_instructions(data, 0, 3, section_end=3)


def test_const_instrs_stop_at_their_end():
    data = b"\x41\x05\x0b\xff"
    instrs, pos = read_const_instrs(data, 0, len(data))
    assert [(i.name, i.imm) for i in instrs] == [("i32.const", 5)] and pos == 3


def test_opcode_table_is_consistent():
    assert OP_BY_NAME["i32.add"] == 0x6A and OP_BY_NAME["select"] == 0x1B
    assert OP_BY_NAME["table.fill"] == 0xFC11
    assert OPCODES[0x28].natural_align == 2 and OPCODES[0x29].natural_align == 3
    assert OPCODES[0x6A].params == (ValType.I32, ValType.I32) and OPCODES[0x6A].results == (ValType.I32,)
    assert all(info.imm in Imm for info in OPCODES.values())
    assert Instr(3, 0x6A, "i32.add") == Instr(3, 0x6A, "i32.add")

def test_example_builds_validate_with_dwarf_and_names():
    from pathlib import Path

    from codemem.wasm.validator import validate

    builds = sorted((Path(__file__).resolve().parent.parent / "examples" / "build").glob("*.wasm"))
    assert builds, "examples/build/*.wasm missing"
    for path in builds:
        info = validate(path.read_bytes())
        assert ".debug_info" in info.dwarf and ".debug_line" in info.dwarf, path.name
        assert info.code_section_offset is not None and info.names.functions, path.name
        for i, code in enumerate(info.codes):
            instrs = info.read_body(i)
            assert instrs[0].offset == code.body_offset and instrs[-1].name == "end"
