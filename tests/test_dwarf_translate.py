"""The guest DWARF translator (gdbstub/dwarf_translate): expressions on byte
literals, the DIE writer read back by pyelftools, the wasm -> native range
mapping, and an invariant sweep over every example build (every translated
subprogram covers exactly its native function, every scope and location-list
entry lies inside it, every slot a location names exists)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.dwarfinfo import DWARFInfo
from elftools.dwarf.locationlists import LocationEntry, LocationExpr, LocationParser
from elftools.dwarf.structs import DWARFStructs

from codemem import Engine, Module
from codemem.abi import VMContextLayout
from codemem.frametable import SequencePointKind
from gdbstub.dwarf_translate import GuestDwarfError, translate_guest_dwarf
from gdbstub.dwarf_translate.codemap import CodeMap, merge_ranges
from gdbstub.frame_bases import FRAME_BASE_IN_REGISTER
from gdbstub.dwarf_translate.expr import ExprContext, UntranslatableExpression, translate_expression
from gdbstub.dwarf_translate.writer import (
    DW_FORM_addr, DW_FORM_data4, DW_FORM_exprloc, DW_FORM_ref4, DW_FORM_ref_addr, DW_FORM_sec_offset,
    DW_FORM_string, Die, DwarfWriter, LocList, RangeList, Ref,
)
from gdbstub.guest_lines import guest_dwarf_info
from gdbstub.images import guest_debug_sections

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "build"
PARSER = DWARFExprParser(DWARFStructs(little_endian=True, dwarf_format=32, address_size=4))

# Frame of a made-up function: locals 0..2 (i32, i64, f64), operand stack at rbp-144.
SLOTS = {0: (-80, 0x7F), 1: (-88, 0x7E), 2: (-96, 0x7C)}
STACK_BASE = -144
CONTEXT = ExprContext(4, global_cell=lambda n: (40 + 8 * n, 0x7F) if n < 2 else None,
                      local_slot=SLOTS.get, operand_slot=lambda n: STACK_BASE + 8 * n)

CFA = b"\x9c"  # DW_OP_call_frame_cfa


def cfa_plus(offset: int) -> bytes:
    """call_frame_cfa; consts OFFSET-16; plus: rbp + OFFSET, CFA-relative."""
    from gdbstub.debugimage.dwarf import sleb128
    return CFA + b"\x11" + sleb128(offset - 16) + b"\x22"


def translate(expr: bytes, *, frame_base: bool = False, context: ExprContext = CONTEXT) -> bytes:
    return translate_expression(expr, context, PARSER, frame_base=frame_base)


# ------------------------------------------------------------ expressions
def test_a_whole_local_value_becomes_the_memory_location_of_its_slot():
    assert translate(bytes([0xED, 0, 1, 0x9F])) == cfa_plus(-88)


def test_an_operand_stack_entry_is_its_slot_counted_from_the_bottom():
    assert translate(bytes([0xED, 2, 3, 0x9F])) == cfa_plus(STACK_BASE + 24)


def test_a_global_is_read_through_the_instance_context_in_r15():
    # breg15 (40 + 8*1), deref: the cell whose address the context holds.
    assert translate(bytes([0xED, 3, 1, 0, 0, 0, 0x9F])) == bytes([0x7F, 48, 0x06])
    assert translate(bytes([0xED, 1, 0, 0x9F])) == bytes([0x7F, 40, 0x06])


def test_a_frame_base_is_a_memory_location_at_the_locals_value():
    # gdb takes a memory location's address as the frame base (dwarf2/expr.c).
    assert translate(bytes([0xED, 0, 0, 0x9F]), frame_base=True) == cfa_plus(-80) + bytes([0x94, 4])
    assert translate(bytes([0xED, 3, 0, 0, 0, 0]), frame_base=True) == bytes([0x7F, 40, 0x06, 0x94, 4])


def test_a_local_alone_holds_the_address_of_the_variable():
    # LLVM's TI_LOCAL_INDIRECT: no stack_value, the local's value is an address.
    assert translate(bytes([0xED, 0, 0])) == cfa_plus(-80) + bytes([0x94, 4])


def test_an_i64_local_pushed_into_arithmetic_is_read_at_address_size():
    assert translate(bytes([0xED, 0, 1, 0x23, 4, 0x9F])) == cfa_plus(-88) + bytes([0x94, 4, 0x23, 4, 0x9F])


def test_linear_memory_addresses_are_constants_the_load_bias_cannot_move():
    assert translate(bytes([0x03, 0x60, 0x04, 0, 0])) == bytes([0x10, 0xE0, 0x08])
    assert translate(bytes([0x91, 0x0C])) == bytes([0x91, 0x0C])  # fbreg +12 unchanged


def test_thread_local_data_is_at_the_address_pushed_when_there_are_no_threads():
    # wasi-libc's errno: DW_OP_const4u 0x17e0, DW_OP_GNU_push_tls_address
    assert translate(bytes([0x0C, 0xE0, 0x17, 0, 0, 0xE0])) == bytes([0x0C, 0xE0, 0x17, 0, 0])
    assert translate(bytes([0x0C, 0xE0, 0x17, 0, 0, 0x9B])) == bytes([0x0C, 0xE0, 0x17, 0, 0])


def test_pieces_of_wasm_values_become_pieces_of_slots():
    expr = bytes([0xED, 0, 0, 0x9F, 0x93, 4, 0xED, 0, 2, 0x9F, 0x93, 4])
    assert translate(expr) == cfa_plus(-80) + bytes([0x93, 4]) + cfa_plus(-96) + bytes([0x93, 4])


def test_branches_are_retargeted_when_operations_change_length():
    # lit1; bra +3 (over addr->constu change? no: over a 3-byte wasm location); lit0; ... ; stack_value
    expr = bytes([0x31, 0x28, 3, 0, 0xED, 0, 0, 0x30, 0x9F])
    out = translate(expr)
    assert out[:2] == bytes([0x31, 0x28])
    skip = int.from_bytes(out[2:4], "little", signed=True)
    pushed = cfa_plus(-80) + bytes([0x94, 4])
    assert skip == len(pushed) and out[4:4 + skip] == pushed and out[4 + skip:] == bytes([0x30, 0x9F])


@pytest.mark.parametrize("expr, why", [
    (bytes([0x56]), "register"),  # DW_OP_reg6
    (bytes([0x76, 0x10]), "register"),  # DW_OP_breg6 16
    (bytes([0xED, 0, 9, 0x9F]), "local 9"),
    (bytes([0xED, 1, 5, 0x9F]), "global 5"),
    (bytes([0x03, 0xFF, 0xFF, 0xFF, 0xFF]), "removed"),
    (bytes([0xED, 7, 0, 0x9F]), "DW_OP_WASM_location: 7"),
    (bytes([0xED]), "malformed"),
])
def test_what_cannot_be_said_over_the_native_frame_is_refused_with_a_reason(expr, why):
    with pytest.raises(UntranslatableExpression, match=why):
        translate(expr)


def test_a_frame_base_that_is_not_a_wasm_location_is_refused():
    with pytest.raises(UntranslatableExpression, match="frame base"):
        translate(bytes([0x91, 0]), frame_base=True)


# ------------------------------------------------------------ the writer
def _dwarf(sections: dict[str, bytes]) -> DWARFInfo:
    """pyelftools over DWARF sections given as bytes (4-byte addresses)."""
    return guest_dwarf_info(sections)


def test_the_writer_lays_out_units_references_location_and_range_lists():
    writer = DwarfWriter(4)
    int_type = Die(0x24, [(0x03, DW_FORM_string, "int")])
    var = Die(0x34, [(0x03, DW_FORM_string, "x"), (0x49, DW_FORM_ref4, Ref(int_type)),
                     (0x02, DW_FORM_sec_offset, LocList(((0x1000, 0x1010, bytes([0x91, 4])),)))])
    block = Die(0x0B, [(0x55, DW_FORM_sec_offset, RangeList(((0x1000, 0x1004), (0x1008, 0x100C))))], [var])
    sub = Die(0x2E, [(0x03, DW_FORM_string, "f"), (0x11, DW_FORM_addr, 0x1000), (0x12, DW_FORM_data4, 0x20),
                     (0x40, DW_FORM_exprloc, bytes([0x9C]))], [block])
    writer.add_unit(Die(0x11, [(0x03, DW_FORM_string, "a.c")], [int_type, sub]))
    other = Die(0x34, [(0x03, DW_FORM_string, "y"), (0x49, DW_FORM_ref_addr, Ref(int_type))])
    writer.add_unit(Die(0x11, [(0x03, DW_FORM_string, "b.c")], [other]))
    dwarf = _dwarf(writer.sections())
    units = list(dwarf.iter_CUs())
    assert [u["version"] for u in units] == [4, 4] and units[0]["address_size"] == 4
    dies = {d.attributes["DW_AT_name"].value: d for u in units for d in u.iter_DIEs()
            if "DW_AT_name" in d.attributes}
    assert dies[b"x"].get_DIE_from_attribute("DW_AT_type").offset == dies[b"int"].offset
    assert dies[b"y"].get_DIE_from_attribute("DW_AT_type").offset == dies[b"int"].offset
    entries = LocationParser(dwarf.location_lists()).parse_from_attribute(
        dies[b"x"].attributes["DW_AT_location"], 4, die=dies[b"x"])
    assert [(e.begin_offset, e.end_offset, e.loc_expr) for e in entries if isinstance(e, LocationEntry)] == \
        [(0x1000, 0x1010, [0x91, 4])]
    block_die = next(d for d in units[0].iter_DIEs() if d.tag == "DW_TAG_lexical_block")
    ranges = dwarf.range_lists().get_range_list_at_offset(block_die.attributes["DW_AT_ranges"].value, cu=units[0])
    assert [(r.begin_offset, r.end_offset) for r in ranges if hasattr(r, "begin_offset")] == \
        [(0x1000, 0x1004), (0x1008, 0x100C)]
    # Each list starts by setting the base address to 0: its entries are
    # absolute whatever the unit's DW_AT_low_pc.
    assert ranges[0].base_address == 0


def test_merge_ranges_sorts_joins_and_drops_empty_ones():
    assert merge_ranges([(5, 9), (0, 2), (2, 4), (7, 12), (20, 20)]) == [(0, 4), (5, 12)]


# ------------------------------------------------------------ real modules
def _module(name: str) -> Module:
    return Module.from_file(Engine(debug=True), EXAMPLES / f"{name}.wasm")


@pytest.fixture(scope="module", params=sorted(p.stem for p in EXAMPLES.glob("*.wasm")))
def translated(request):
    module = _module(request.param)
    table = module.engine_code.frame_table
    result = translate_guest_dwarf(module.info, table, code_address=0, address_size=4)
    return request.param, module, table, result


def _slot_offsets(expr: list[int]) -> list[int]:
    """The rbp offsets a translated expression names (call_frame_cfa; consts N; plus)."""
    ops = PARSER.parse_expr(expr)
    return [ops[k + 1].args[0] + 16 for k in range(len(ops) - 2)
            if ops[k].op_name == "DW_OP_call_frame_cfa" and ops[k + 1].op_name == "DW_OP_consts"
            and ops[k + 2].op_name == "DW_OP_plus"]


def test_every_translated_scope_and_location_lies_in_its_function_and_names_existing_slots(translated):
    name, module, table, result = translated
    assert result is not None and result.units >= 1 and result.subprograms >= 1, name
    functions = {(f.native_start, f.native_end): f for f in table.functions()}
    dwarf = _dwarf(result.sections)
    parser = LocationParser(dwarf.location_lists())
    checked_locations = 0
    for unit in dwarf.iter_CUs():
        for sub in unit.get_top_DIE().iter_children():
            if sub.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in sub.attributes:
                continue
            low = sub.attributes["DW_AT_low_pc"].value
            span = (low, low + sub.attributes["DW_AT_high_pc"].value)
            func = functions.get(span)
            assert func is not None, f"{name}: subprogram {sub.attributes['DW_AT_name'].value} {span} is no function"
            slots = {s.frame_offset for s in table.locals(func)}
            depth = max((len(p.stack_types) for p in table.sequence_points(func)), default=0)
            slots |= {func.operand_slot_offset(k) for k in range(depth)}
            for die in _descendants(sub):
                for start, end in _ranges(dwarf, unit, die):
                    assert span[0] <= start < end <= span[1], (name, die.tag, hex(start), hex(end))
                location = die.attributes.get("DW_AT_location")
                if location is None:
                    continue
                parsed = parser.parse_from_attribute(location, 4, die=die)
                expressions = [parsed.loc_expr] if isinstance(parsed, LocationExpr) else []
                for entry in parsed if not isinstance(parsed, LocationExpr) else ():
                    if isinstance(entry, LocationEntry):
                        assert span[0] <= entry.begin_offset < entry.end_offset <= span[1], (name, entry)
                        expressions.append(entry.loc_expr)
                for expr in expressions:
                    for offset in _slot_offsets(expr):
                        assert offset in slots, f"{name}: {die.attributes.get('DW_AT_name')} names rbp{offset}"
                    checked_locations += 1
    if name.startswith(("inventory", "deep", "demo", "structs")):
        assert checked_locations > 0, name


def _descendants(die):
    for child in die.iter_children():
        yield child
        yield from _descendants(child)


def _ranges(dwarf, unit, die):
    attributes = die.attributes
    if "DW_AT_low_pc" in attributes and "DW_AT_high_pc" in attributes:
        low = attributes["DW_AT_low_pc"].value
        return [(low, low + attributes["DW_AT_high_pc"].value)]
    if "DW_AT_ranges" in attributes:
        return [(r.begin_offset, r.end_offset) for r in
                dwarf.range_lists().get_range_list_at_offset(attributes["DW_AT_ranges"].value, cu=unit)
                if hasattr(r, "begin_offset")]
    return []


def test_a_loops_first_line_and_an_inlined_call_in_it_start_at_the_first_body_instruction():
    module = _module("inventory.O2")
    table = module.engine_code.frame_table
    codemap = CodeMap(module.info, table)
    data = module.info.data
    for func in table.functions():
        for native, wasm, kind in table.point_offsets(func):
            if data[wasm] != 0x03:  # not a loop
                continue
            guest = wasm - module.info.code_section_offset
            ranges = codemap.native_ranges(guest, guest + 4)
            assert ranges and ranges[0][0] > native, (hex(native), ranges)


# ------------------------------------------------------------ failures
def test_corrupt_dwarf_gives_a_warning_and_no_variables_never_an_error(caplog):
    module = _module("inventory.O0")
    dwarf = dict(module.info.dwarf)
    dwarf[".debug_info"] = dwarf[".debug_info"][:40] + bytes(range(200, 256)) * 4
    module.info.dwarf = dwarf
    with pytest.raises(GuestDwarfError):
        translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0, address_size=4)
    with caplog.at_level(logging.WARNING):
        assert guest_debug_sections(module, module.engine_code, 0, 4) is None
    assert any("cannot be translated" in record.getMessage() for record in caplog.records)


def test_a_module_without_dwarf_is_not_translated():
    import wasmtime

    wasm = wasmtime.wat2wasm('(module (func $f (export "f") (result i32) i32.const 1))')
    module = Module(Engine(debug=True), wasm)
    assert translate_guest_dwarf(module.info, module.engine_code.frame_table) is None
    assert VMContextLayout.for_module(module.info).num_funcs == 1


def test_functions_a_wasi_program_adds_around_main_borrow_no_lines(tmp_path):
    """wasi-libc's start-up (`_start`, and the `_start.command_export` wrapper
    wasm-ld adds) is either described by its own unit or has no lines at all:
    it never takes the lines of another file (it used to show frexp.c:23)."""
    import subprocess

    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\n#include <math.h>\n'
                      'int main(int argc, char **argv) { int e; double m = frexp(12.0, &e);\n'
                      '  printf("%d %f %d\\n", e, m, argc); return 0; }\n')
    wasm = tmp_path / "hello.wasm"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O0", str(source), "-o", str(wasm)], check=True,
                   cwd=tmp_path)
    module = Module.from_file(Engine(debug=True), wasm)
    table = module.engine_code.frame_table
    result = translate_guest_dwarf(module.info, table, code_address=0, address_size=4)
    described = {(start, end) for _, start, end in result.functions}
    dwarf = _dwarf(result.sections)
    rows = []
    for unit in dwarf.iter_CUs():
        program = dwarf.line_program_for_CU(unit)
        if program is not None:
            rows += [entry.state for entry in program.get_entries() if entry.state and entry.state.line]
    by_name = {module.func_name(f.wasm_index): f for f in table.functions()}
    wrapper = by_name["_start.command_export"]
    assert (wrapper.native_start, wrapper.native_end) not in described
    assert not [r for r in rows if wrapper.native_start <= r.address < wrapper.native_end]
    for row in rows:
        assert any(start <= row.address < end for start, end in described), hex(row.address)
    names = {d.attributes["DW_AT_name"].value for u in dwarf.iter_CUs() for d in u.iter_DIEs()
             if d.tag == "DW_TAG_subprogram" and "DW_AT_name" in d.attributes}
    assert b"main" in names and b"__main_argc_argv" not in names


@pytest.mark.parametrize("level", ["O0", "O2"])
def test_dwarf_5_input_translates_like_dwarf_4(tmp_path, level):
    """clang -gdwarf-5 uses indexed addresses (DW_FORM_addrx, DW_OP_addrx),
    string offsets and v5 location and range lists; the output is the same
    DWARF 4 description with every address resolved."""
    import subprocess

    wasm = tmp_path / "inventory5.wasm"
    subprocess.run(["clang-19", "--target=wasm32", "-nostdlib", "-mbulk-memory", "-g", "-gdwarf-5",
                    "-fdebug-compilation-dir=.", f"-{level}", "-Wl,--no-entry", "-Wl,--export=inventory_run",
                    "examples/inventory.c", "-o", str(wasm)], check=True, cwd=EXAMPLES.parent.parent)
    five = _module_at(wasm)
    four = _module(f"inventory.{level}")
    results = [translate_guest_dwarf(m.info, m.engine_code.frame_table, code_address=0, address_size=4)
               for m in (five, four)]
    assert sorted(results[0].data_symbols) == sorted(results[1].data_symbols) and results[0].data_symbols
    assert sorted(name for name, _, _ in results[0].functions) == sorted(name for name, _, _ in results[1].functions)
    dwarf = _dwarf(results[0].sections)
    forms = {a.form for u in dwarf.iter_CUs() for d in u.iter_DIEs() for a in d.attributes.values()}
    assert not {f for f in forms if "strx" in f or "addrx" in f or "listx" in f}, forms

    def scopes(result):
        """Each lexical block and inlined call with whether it has a pc range."""
        return [(d.tag, "DW_AT_ranges" in d.attributes or "DW_AT_low_pc" in d.attributes)
                for u in _dwarf(result.sections).iter_CUs() for d in u.iter_DIEs()
                if d.tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine")]
    assert scopes(results[0]) == scopes(results[1]) and all(has for _, has in scopes(results[0]))


def _module_at(path: Path) -> Module:
    return Module.from_file(Engine(debug=True), path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["inventory.O0", "inventory.O2"])
def test_damaged_dwarf_is_translated_or_refused_with_guest_dwarf_error_never_anything_else(name):
    """Byte flips, truncations and random tails in each DWARF section: the
    translation either succeeds or raises GuestDwarfError (which the image
    builder turns into a warning); no other exception may escape."""
    import random

    module = _module(name)
    pristine = dict(module.info.dwarf)
    table = module.engine_code.frame_table
    rng = random.Random(11)
    outcomes = {"translated": 0, "refused": 0}
    for section in sorted(pristine):
        data = pristine[section]
        for trial in range(25):
            damaged = bytearray(data)
            kind = trial % 3
            if kind == 0:
                for _ in range(rng.randint(1, 8)):
                    damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del damaged[rng.randrange(1, len(damaged)):]
            else:
                at = rng.randrange(len(damaged))
                damaged[at:] = bytes(rng.randrange(256) for _ in range(len(damaged) - at))
            module.info.dwarf = dict(pristine, **{section: bytes(damaged)})
            try:
                translate_guest_dwarf(module.info, table, code_address=0, address_size=4)
                outcomes["translated"] += 1
            except GuestDwarfError:
                outcomes["refused"] += 1
    module.info.dwarf = pristine
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 25 * len(pristine), outcomes


def test_every_c_type_of_inventory_c_is_carried_over_intact():
    """Types are copied DIE for DIE: members and their offsets, bitfields,
    unions, enums with their values, typedefs, const, two-dimensional arrays,
    pointers (no byte size: the x32 unit's 4-byte addresses make them 4
    bytes) and a function-pointer typedef with its parameter."""
    module = _module("inventory.O0")
    result = translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0, address_size=4)
    dwarf = _dwarf(result.sections)
    (unit,) = dwarf.iter_CUs()
    assert unit["address_size"] == 4
    named = {}
    for die in unit.iter_DIEs():
        if "DW_AT_name" in die.attributes:
            named.setdefault((die.tag, die.attributes["DW_AT_name"].value.decode()), die)

    def members(tag, name):
        return [(m.attributes["DW_AT_name"].value.decode(),
                 m.attributes["DW_AT_data_member_location"].value if "DW_AT_data_member_location" in m.attributes
                 else (m.attributes["DW_AT_data_bit_offset"].value, m.attributes["DW_AT_bit_size"].value))
                for m in named[(tag, name)].iter_children()]

    assert members("DW_TAG_structure_type", "item") == [("id", 0), ("color", 4), ("flags", 8), ("weight", 12),
                                                          ("name", 16), ("next", 24)]
    assert named[("DW_TAG_structure_type", "item")].attributes["DW_AT_byte_size"].value == 28
    assert members("DW_TAG_structure_type", "flags") == [("active", (0, 1)), ("level", (1, 3)), ("delta", (4, 4)),
                                                          ("code", (8, 8))]
    assert members("DW_TAG_union_type", "number") == [("i", 0), ("f", 0), ("bytes", 0)]
    color = named[("DW_TAG_enumeration_type", "color")]
    assert [(e.attributes["DW_AT_name"].value, e.attributes["DW_AT_const_value"].value)
            for e in color.iter_children()] == [(b"RED", 0), (b"GREEN", 5), (b"BLUE", 6)]
    grid = named[("DW_TAG_variable", "grid")].get_DIE_from_attribute("DW_AT_type")
    assert grid.tag == "DW_TAG_array_type" and \
        [s.attributes["DW_AT_count"].value for s in grid.iter_children()] == [3, 4]
    nxt = [m for m in named[("DW_TAG_structure_type", "item")].iter_children()
           if m.attributes["DW_AT_name"].value == b"next"][0].get_DIE_from_attribute("DW_AT_type")
    assert nxt.tag == "DW_TAG_pointer_type" and "DW_AT_byte_size" not in nxt.attributes
    assert nxt.get_DIE_from_attribute("DW_AT_type").offset == named[("DW_TAG_structure_type", "item")].offset
    scorer = named[("DW_TAG_typedef", "scorer_fn")].get_DIE_from_attribute("DW_AT_type")
    function = scorer.get_DIE_from_attribute("DW_AT_type")
    assert (scorer.tag, function.tag) == ("DW_TAG_pointer_type", "DW_TAG_subroutine_type")
    (parameter,) = function.iter_children()
    const_item = parameter.get_DIE_from_attribute("DW_AT_type").get_DIE_from_attribute("DW_AT_type")
    assert const_item.tag == "DW_TAG_const_type"
    assert const_item.get_DIE_from_attribute("DW_AT_type").attributes["DW_AT_name"].value == b"item_t"
    # Statics and globals name their linear-memory addresses without relocation.
    counter = named[("DW_TAG_variable", "counter")].attributes["DW_AT_location"].value
    (address,) = [a for name, a, size in result.data_symbols if name == "counter" and size == 4]
    assert counter[0] == 0x10 and PARSER.parse_expr(counter)[0].args == [address]  # DW_OP_constu ADDRESS


def test_the_section_builder_translates_at_the_images_link_address_for_x32_engines_only():
    """gdbstub.dwarf_translate.GuestDwarfSections, the builder a
    position-independent image takes its DWARF from: addresses are link
    addresses (image offset + link address), so a load bias places them."""
    from types import SimpleNamespace

    from gdbstub.dwarf_translate import GuestDwarfSections

    builder = GuestDwarfSections()
    assert builder.name == "guest-dwarf" and len(builder.digest) == 16
    module = _module("deep.O0")
    table = module.engine_code.frame_table
    sections = builder.sections(SimpleNamespace(module=module, frame_table=table, link_address=0x1000))
    assert {".debug_info", ".debug_abbrev", ".debug_line"} <= set(sections)
    (unit,) = _dwarf(sections).iter_CUs()
    subprograms = [d for d in unit.iter_DIEs() if d.tag == "DW_TAG_subprogram" and "DW_AT_low_pc" in d.attributes]
    starts = {0x1000 + f.native_start for f in table.functions()}
    assert subprograms and all(d.attributes["DW_AT_low_pc"].value in starts for d in subprograms)
    elf64 = Module.from_file(Engine(debug=True, low_addresses=False), EXAMPLES / "deep.O0.wasm")
    assert builder.sections(SimpleNamespace(module=elf64, frame_table=table, link_address=0)) == {}


# ------------------------------------------------------------ caller frame bases
def test_a_frame_base_that_is_a_local_is_es_in_every_frame_and_the_image_says_which_slot(translated):
    """es holds a frame's C frame base: the stub reports the innermost
    frame's, the callee's CFI recovers a caller's (gdbstub/frame_bases.py), so
    gdb reads no frame base with a packet of its own. Other frame bases (the
    __stack_pointer global) are 0 before the first instruction, then read."""
    name, module, table, result = translated
    dwarf = _dwarf(result.sections)
    parser = LocationParser(dwarf.location_lists())
    functions = {f.native_start: f for f in table.functions()}
    in_es = 0
    for unit in dwarf.iter_CUs():
        for sub in unit.get_top_DIE().iter_children():
            if sub.tag != "DW_TAG_subprogram" or "DW_AT_frame_base" not in sub.attributes:
                continue
            func = functions[sub.attributes["DW_AT_low_pc"].value]
            parsed = parser.parse_from_attribute(sub.attributes["DW_AT_frame_base"], 4, die=sub)
            if func.native_start in result.frame_base_slots:
                assert isinstance(parsed, LocationExpr) and bytes(parsed.loc_expr) == FRAME_BASE_IN_REGISTER, name
                assert result.frame_base_slots[func.native_start] in {s.frame_offset for s in table.locals(func)}
                in_es += 1
                continue
            # One expression choosing by pc (translate.choose_by_pc), or a
            # location list where a piece is no plain address computation.
            if isinstance(parsed, LocationExpr):
                entries = pieces_by_pc(bytes(parsed.loc_expr), func.native_start, func.native_end)
            else:
                entries = [(e.begin_offset, e.end_offset, bytes(e.loc_expr))
                           for e in parsed if isinstance(e, LocationEntry)]
            assert entries[0][0] == func.native_start and entries[-1][1] == func.native_end
            assert all(a[1] == b[0] for a, b in zip(entries, entries[1:])), name
            first = next(native for native, _, kind in table.point_offsets(func)
                         if kind is SequencePointKind.INSTRUCTION)
            assert [e[0] for e in entries] == sorted({func.native_start, first}), name
            assert entries[0][2] == bytes([0x30]) or first == func.native_start  # DW_OP_lit0
    if name in ("inventory.O0", "deep.O0"):  # at -O2 clang's frame bases are mostly __stack_pointer
        assert in_es > 0, name


def test_an_x32_image_carries_the_frame_base_slots_and_every_guest_fde_recovers_es(tmp_path):
    from elftools.dwarf.callframe import FDE as PyelftoolsFDE
    from elftools.elf.elffile import ELFFile
    from gdbstub import frame_bases
    from gdbstub.images import build_engine_image, frame_base_slots_of

    module = _module("deep.O0")
    data = build_engine_image(module, module.engine_code, x32=True)
    slots = frame_base_slots_of(data)
    translated = translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0x1000,
                                       address_size=4)
    assert slots == translated.frame_base_slots and slots
    elf = ELFFile(io.BytesIO(data))
    fdes = [entry for entry in elf.get_dwarf_info().CFI_entries() if isinstance(entry, PyelftoolsFDE)]
    starts = {f.native_start + 0x1000 for f in module.engine_code.frame_table.functions()}
    guest = [fde for fde in fdes if fde.header["initial_location"] in starts]
    assert len(guest) == len(starts)
    for fde in guest:
        rows = fde.get_decoded().table
        for row in rows:
            rule = row[frame_bases.REGISTER_DWARF]
            assert rule.type == "EXPRESSION" and bytes(rule.arg) == frame_bases.CFI_RULE[1], fde
    assert frame_base_slots_of(build_engine_image(module, module.engine_code, x32=False)) == {}


# ------------------------------------------------ arguments at entry, C aggregates
def test_the_prologue_scan_finds_each_argument_store_and_stops_at_other_code():
    from gdbstub.dwarf_translate.prologue import ArgumentStore, argument_stores
    # global.get 0; i32.const 16; i32.sub; local.set 4;
    # local.get 4; local.get 1; i32.store offset=12; local.get 4; local.get 0; f64.store offset=0;
    # local.get 4; local.get 9; i32.store offset=8   (local 9 is no parameter)
    # i32.load ...                                    (ends the prologue)
    code = bytes([0x23, 0, 0x41, 16, 0x6B, 0x21, 4,
                  0x20, 4, 0x20, 1, 0x36, 2, 12, 0x20, 4, 0x20, 0, 0x39, 3, 0,
                  0x20, 4, 0x20, 9, 0x36, 2, 8,
                  0x28, 2, 0, 0x20, 4, 0x20, 1, 0x36, 2, 4])
    stores = argument_stores(code, 0, len(code), frame_base_local=4, param_count=2)
    assert stores == {12: ArgumentStore(1, 12, 14), 0: ArgumentStore(0, 0, 21)}
    # Malformed bytes end the scan; what was found stands.
    assert argument_stores(code[:12] + bytes([0x36, 0x80]), 0, 14, 4, 2) == {}


def test_the_prologue_scan_reads_multi_byte_immediates_as_the_checked_reader_does():
    from gdbstub.dwarf_translate.prologue import ArgumentStore, argument_stores
    # global.get 0; i32.const -200 (2 bytes); i32.sub; local.set 130 (2 bytes);
    # local.get 130; local.get 129; i32.store align=2 offset=300 (2 bytes);
    # local.get 130; local.get 1; i32.store offset=-16 as i32.const would say (0x70 is 112 unsigned)
    code = bytes([0x23, 0, 0x41, 0xB8, 0x7E, 0x6B, 0x21, 0x82, 0x01,
                  0x20, 0x82, 0x01, 0x20, 0x81, 0x01, 0x36, 2, 0xAC, 0x02,
                  0x20, 0x82, 0x01, 0x20, 1, 0x36, 2, 0x70])
    stores = argument_stores(code, 0, len(code), frame_base_local=130, param_count=200)
    assert stores == {300: ArgumentStore(129, 300, 19), 112: ArgumentStore(1, 112, 27)}
    # A LEB128 cut by the limit, or too long for 32 bits, ends the scan there.
    assert argument_stores(code, 0, 18, 130, 200) == {}
    too_long = bytes([0x20, 0x82, 0x01, 0x20, 0x81, 0x81, 0x81, 0x81, 0x81, 0x00, 0x36, 2, 0])
    assert argument_stores(too_long, 0, len(too_long), 130, 200) == {}


def _argument_stores_by_window(code: bytes, start: int, limit: int, frame_base_local: int, param_count: int):
    """The prologue scan's rule, plainly: every instruction decoded by the
    checked readers, a store recorded when the two instructions before it
    are ``local.get FB; local.get K`` (K a parameter)."""
    from codemem.errors import CompileError
    from codemem.wasm.binary import read_sleb, read_uleb
    from gdbstub.dwarf_translate.prologue import MAX_PROLOGUE_INSTRUCTIONS, ArgumentStore

    found, window, pos = {}, [(-1, -1), (-1, -1)], start
    try:
        for _ in range(MAX_PROLOGUE_INSTRUCTIONS):
            if pos >= limit:
                break
            op, pos, immediate = code[pos], pos + 1, 0
            if 0x20 <= op <= 0x24:
                immediate, pos = read_uleb(code, pos, limit, 32)
            elif op in (0x41, 0x42):
                immediate, pos = read_sleb(code, pos, limit, 32 if op == 0x41 else 64)
            elif 0x36 <= op <= 0x3E:
                flags, pos = read_uleb(code, pos, limit, 32)
                if flags & 0x40:
                    break
                immediate, pos = read_uleb(code, pos, limit, 32)
                (before_op, base), (last_op, local) = window
                if before_op == 0x20 and base == frame_base_local and last_op == 0x20 and local < param_count:
                    found.setdefault(immediate, ArgumentStore(local, immediate, pos))
            elif op not in (0x6A, 0x6B, 0x71):
                break
            window = [window[1], (op, immediate)]
    except (CompileError, IndexError):
        pass
    return found


def test_the_prologue_scan_follows_its_rule_on_random_instruction_runs():
    """Runs of the instructions a prologue is made of (LEB128s of every
    length, some overlong, too large or cut off, memargs with a memory index,
    an instruction that ends the scan) against the rule read plainly."""
    import random

    from gdbstub.dwarf_translate.prologue import argument_stores

    rng = random.Random(11)

    def leb(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value or rng.random() < 0.05 else 0))  # sometimes padded
            if not out[-1] & 0x80:
                return bytes(out)
            if len(out) > 6:
                return bytes(out[:-1]) + bytes([out[-1] & 0x7F])

    def instruction() -> bytes:
        choice = rng.random()
        if choice < 0.15:  # a store's window, often of a parameter to the frame
            window = bytes([0x20]) + leb(rng.choice([4, 4, 3])) + bytes([0x20]) + leb(rng.randrange(5))
            return window + (bytes([0x36, 2]) + leb(rng.randrange(64)) if rng.random() < 0.7 else b"")
        if choice < 0.45:
            return bytes([0x20]) + leb(rng.choice([0, 1, 2, 3, 4, 4, 4, 130, 2 ** 32 - 1, 2 ** 32]))
        if choice < 0.55:
            return bytes([rng.choice([0x21, 0x22, 0x23, 0x24])]) + leb(rng.randrange(200))
        if choice < 0.75:
            return bytes([rng.randrange(0x36, 0x3F)]) + leb(rng.choice([2, 2, 3, 0x40])) + leb(rng.randrange(300))
        if choice < 0.85:
            return bytes([rng.choice([0x41, 0x42])]) + leb(rng.randrange(2 ** 35))
        if choice < 0.97:
            return bytes([rng.choice([0x6A, 0x6B, 0x71])])
        return bytes([rng.choice([0x28, 0x10, 0x0B, 0xFF])])

    stores = 0
    for _ in range(3000):
        code = b"".join(instruction() for _ in range(rng.randrange(1, 40)))
        limit = len(code) if rng.random() < 0.8 else rng.randrange(len(code) + 1)
        expected = _argument_stores_by_window(code, 0, limit, 4, 3)
        assert argument_stores(code, 0, limit, 4, 3) == expected, code.hex()
        stores += len(expected)
    assert stores > 500


PARAMETER_FORMS: set[str] = set()  # the forms _parameter_locations last saw


def _parameter_locations(name: str, function: str):
    PARAMETER_FORMS.clear()
    module = _module(name)
    table = module.engine_code.frame_table
    result = translate_guest_dwarf(module.info, table, code_address=0, address_size=4)
    dwarf = _dwarf(result.sections)
    parser = LocationParser(dwarf.location_lists())
    for unit in dwarf.iter_CUs():
        for sub in unit.get_top_DIE().iter_children():
            if sub.tag == "DW_TAG_subprogram" and sub.attributes["DW_AT_name"].value == function.encode():
                func = table.function_at(sub.attributes["DW_AT_low_pc"].value)
                params = {}
                for die in sub.iter_children():
                    if die.tag == "DW_TAG_formal_parameter" and "DW_AT_location" in die.attributes:
                        attribute = die.attributes["DW_AT_location"]
                        PARAMETER_FORMS.add(attribute.form)
                        if attribute.form == "DW_FORM_exprloc":
                            first = next(native for native, wasm, kind in table.point_offsets(func)
                                         if kind is SequencePointKind.INSTRUCTION)
                            entries = pieces_by_pc(bytes(attribute.value), func.native_start, func.native_end, first)
                        else:
                            entries = [(e.begin_offset, e.end_offset, bytes(e.loc_expr))
                                       for e in parser.parse_from_attribute(attribute, 4, die=die)
                                       if isinstance(e, LocationEntry)]
                        params[die.attributes["DW_AT_name"].value.decode()] = [
                            (s, e, PARSER.parse_expr(x)) for s, e, x in entries]
                return table, func, params
    raise AssertionError(f"{function} not in {name}")


def chosen_at(expr: bytes, pc: int, es: int = 1, address_size: int = 4) -> bytes:
    """The part of a translate.choose_by_pc expression that the pc selects:
    its tests (DW_OP_breg16 0; DW_OP_addr A; DW_OP_lt; DW_OP_bra) run as a
    DWARF evaluator would, then the piece up to its DW_OP_skip (or the end).
    An expression without tests is its own piece.  A leading es test
    (``DW_OP_bregx 50 0; DW_OP_bra``, _Translator._parameter_by_pc) runs with
    ``es``."""
    at = 0
    if expr.startswith(FRAME_BASE_IN_REGISTER + b"\x28"):
        at = len(FRAME_BASE_IN_REGISTER) + 3
        branch = int.from_bytes(expr[at - 2:at], "little", signed=True)
        if es:
            at += branch
        else:
            skip_at = at + branch - 3
            assert expr[skip_at] == 0x2F
            return expr[at:skip_at]
    if expr.endswith(b"\x96") and len(expr) > 1:
        expr = expr[:-1]  # the DW_OP_nop choose_by_pc ends with (the skips' target)
        expr = expr[at:]
        at = 0
    while expr[at:at + 3] == bytes([0x80, 0, 0x03]):
        boundary = int.from_bytes(expr[at + 3:at + 3 + address_size], "little")
        at += 3 + address_size
        assert expr[at:at + 2] == bytes([0x2D, 0x28])  # lt, bra
        offset = int.from_bytes(expr[at + 2:at + 4], "little", signed=True)
        at += 4
        if pc < boundary:
            at += offset
            break
    end = len(expr)
    # A piece ends at its DW_OP_skip (the last piece has none).
    for candidate in range(at, len(expr) - 2):
        if expr[candidate] == 0x2F and candidate + 3 + int.from_bytes(expr[candidate + 1:candidate + 3], "little",
                                                                      signed=True) in (len(expr), len(expr) + 1):
            end = candidate
            break
    return expr[at:end]


def pieces_by_pc(expr: bytes, start: int, end: int, first: int | None = None) -> list[tuple[int, int, bytes]]:
    """``(start, end, piece)`` for every pc of [start, end), merged: the
    location list a choose_by_pc expression stands for (es 0 before
    ``first``, the first wasm instruction, as the stub reports it)."""
    out: list[tuple[int, int, bytes]] = []
    for pc in range(start, end):
        piece = chosen_at(expr, pc, es=int(first is None or pc >= first))
        if out and out[-1][2] == piece:
            out[-1] = (out[-1][0], pc + 1, piece)
        else:
            out.append((pc, pc + 1, piece))
    return out


@pytest.mark.parametrize("name, producer", [("calls.O0", "GNU C17 "), ("structs.O0", "GNU C17 "),
                                            ("aggregates.O0", "GNU C17 "), ("calls.O2", "clang version ")])
def test_units_without_location_lists_are_named_gcc_units(name, producer):
    """-O0 units end with no location list at all (parameters and frame
    bases choose by pc in one expression), so they get a GCC producer; -O2
    units have the guest's own location lists and keep a clang one."""
    module = _module(name)
    result = translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0, address_size=4)
    has_lists = bool(result.sections.get(".debug_loclists") or result.sections.get(".debug_loc"))
    assert has_lists == (producer != "GNU C17 ")
    for unit in _dwarf(result.sections).iter_CUs():
        assert unit.get_top_DIE().attributes["DW_AT_producer"].value.decode().startswith(producer)


def test_a_pc_chooser_is_a_location_list_in_one_expression():
    from gdbstub.dwarf_translate.translate import choose_by_pc
    pieces = [(0x10, 0x14, b"\x74\x08"), (0x14, 0x30, b"\x9c\x11\x50\x22"), (0x30, 0x90, b"\x91\x68")]
    expr = choose_by_pc(pieces, 0x1000, 4)
    assert pieces_by_pc(expr, 0x1010, 0x1090) == [(0x1000 + s, 0x1000 + e, x) for s, e, x in pieces]
    assert choose_by_pc(pieces[:1], 0x1000, 4) == b"\x74\x08"  # one piece: itself
    assert choose_by_pc([pieces[0], pieces[2]], 0x1000, 4) is None  # not contiguous


def test_o0_parameters_read_the_argument_array_then_their_local_until_the_prologue_stores_them():
    """One location expression each, choosing by pc (no location list: a GNU
    producer's unit must have none, guest_lines.image_producer)."""
    table, func, params = _parameter_locations("calls.O0", "mix")
    first = next(native for native, wasm, kind in table.point_offsets(func) if kind is SequencePointKind.INSTRUCTION)
    assert list(params) == ["a", "b", "c", "d", "e"]
    assert PARAMETER_FORMS == {"DW_FORM_exprloc"}
    for k, entries in enumerate(params.values()):
        (s0, e0, entry), (s1, e1, local), (s2, e2, stored) = entries
        assert (s0, e0, s1, e2) == (func.native_start, first, first, func.native_end) and e1 == s2 > s1
        assert [(op.op_name, op.args) for op in entry] == [("DW_OP_breg4", [8 * k])]  # rsi + 8k
        assert [op.op_name for op in local] == ["DW_OP_call_frame_cfa", "DW_OP_consts", "DW_OP_plus"]
        assert [op.op_name for op in stored] == ["DW_OP_fbreg"]


def test_o2_parameters_in_wasm_locals_read_the_argument_array_before_the_prologue():
    table, func, params = _parameter_locations("calls.O2", "mix")
    first = next(native for native, wasm, kind in table.point_offsets(func) if kind is SequencePointKind.INSTRUCTION)
    for k, name in enumerate(["a", "b", "c"]):
        start, end, expr = params[name][0]
        assert (start, end) == (func.native_start, first)
        assert [(op.op_name, op.args) for op in expr] == [("DW_OP_breg4", [8 * k])]
        assert params[name][1][0] == first


def test_functions_passing_structs_by_value_get_their_calling_convention_recorded():
    from gdbstub.c_abi import INTEGER, SSE, Aggregate, FunctionAbi
    module = _module("aggregates.O0")
    result = translate_guest_dwarf(module.info, module.engine_code.frame_table, code_address=0, address_size=4)
    names = {start: name for name, start, _ in result.functions}
    abis = {names[start]: abi for start, abi in result.function_abis.items()}
    pair, big = Aggregate(8, (INTEGER,)), Aggregate(24)
    assert abis == {
        "make_pair": FunctionAbi(pair, (None,)), "make_trio": FunctionAbi(Aggregate(12, (INTEGER, INTEGER)), (None,)),
        "make_vec2": FunctionAbi(Aggregate(8, (SSE,)), (None,)),
        "make_mixed": FunctionAbi(Aggregate(16, (SSE, INTEGER)), (None, None)),
        "make_big": FunctionAbi(big, (None,)), "pair_sum": FunctionAbi(None, (pair, None)),
        "trio_sum": FunctionAbi(None, (Aggregate(12, (INTEGER, INTEGER)),)),
        "vec2_dot": FunctionAbi(None, (Aggregate(8, (SSE,)), Aggregate(8, (SSE,)))),
        "mixed_scale": FunctionAbi(None, (Aggregate(16, (SSE, INTEGER)), None)),
        "big_sum": FunctionAbi(None, (big, None)), "pair_swap": FunctionAbi(pair, (pair,)),
        "pair_of": FunctionAbi(pair, (None, None))}
    # make_one returns struct { int only; }: a single element, passed as its int by both conventions.


def test_a_variable_ends_where_a_later_one_takes_over_its_wasm_local():
    # clang -O2 can put a parameter n and, later, a variable o in one wasm
    # local and leave n's range running over the whole body.
    from gdbstub.dwarf_translate.translate import clip_shared_homes
    slot0, slot1 = cfa_plus(-80), cfa_plus(-88)
    n = LocList(((0x10, 0x20, b"\x74\x00"), (0x20, 0x400, slot0)))
    o = LocList(((0x180, 0x480, slot0),))
    other = LocList(((0x20, 0x400, slot1),))  # another local: untouched
    same_start = LocList(((0x180, 0x300, slot0),))  # starts with o: both keep their ranges
    assert clip_shared_homes([n, o, other, same_start]) == [
        LocList(((0x10, 0x20, b"\x74\x00"), (0x20, 0x180, slot0))), o, other, same_start]


# ------------------------------------------------ the encoded copy of plain DIEs
def _translation_or_refusal(module, table):
    try:
        result = translate_guest_dwarf(module.info, table, code_address=0x1000, address_size=4)
    except GuestDwarfError as e:
        return "refused", str(e)
    return "translated", None if result is None else (result.sections, result.dropped_locations)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["inventory.O0", "inventory.O2", "aggregates.O0"])
def test_dies_written_straight_to_bytes_are_what_the_general_copy_writes_even_from_damaged_dwarf(
        name, monkeypatch):
    """_encode_attributes (most DIEs: their attributes encoded as the writer
    would, no attribute tuples) against the general copy it short-cuts, on the
    module's own DWARF and on .debug_info/.debug_str with flipped bytes, where
    strings stop being ASCII, flags turn false and references leave the unit
    or land on DIEs that are left out: the same sections, or the same refusal."""
    import random

    from gdbstub.dwarf_translate import translate as translate_module

    module = _module(name)
    pristine = dict(module.info.dwarf)
    table = module.engine_code.frame_table
    general = translate_module._Translator._encode_attributes
    rng = random.Random(5)
    variants = [pristine]
    for section in (".debug_info", ".debug_str"):
        for _ in range(12):
            damaged = bytearray(pristine[section])
            for _ in range(rng.randint(1, 6)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            variants.append(dict(pristine, **{section: bytes(damaged)}))
    encoded_used = 0
    try:
        for sections in variants:
            module.info.dwarf = sections
            calls = []

            def counting(self, die, out, encoding, *location, calls=calls):
                done = general(self, die, out, encoding, *location)
                calls.append(done)
                return done

            monkeypatch.setattr(translate_module._Translator, "_encode_attributes", counting)
            fast = _translation_or_refusal(module, table)
            monkeypatch.setattr(translate_module._Translator, "_encode_attributes", lambda *args: False)
            slow = _translation_or_refusal(module, table)
            assert fast == slow
            encoded_used += sum(calls)
    finally:
        module.info.dwarf = pristine
    assert encoded_used > 0


@pytest.mark.parametrize("name", ["inventory.O0", "aggregates.O0", "inventory.O2"])
def test_own_parameters_taken_straight_from_the_prologue_are_what_the_general_location_path_makes(
        name, monkeypatch):
    """_o0_parameter (the function's own -O0 parameters: fbreg X filled by
    a store of local K, es known) against _location's general path, which
    it short-cuts: the same sections, and at -O0 parameters take it (all but
    the first of each frame offset, whose translation _location makes)."""
    from gdbstub.dwarf_translate import translate as translate_module

    module = _module(name)
    table = module.engine_code.frame_table
    general = translate_module._Translator._o0_parameter
    taken = []
    monkeypatch.setattr(translate_module._Translator, "_o0_parameter",
                        lambda self, *args: taken.append(general(self, *args)) or taken[-1])
    fast = _translation_or_refusal(module, table)
    monkeypatch.setattr(translate_module._Translator, "_o0_parameter", lambda *args: None)
    assert fast == _translation_or_refusal(module, table) and fast[0] == "translated"
    if name.endswith("O0"):
        assert any(by_pc is not None for by_pc in taken)
    else:  # -O2 parameters live in wasm locals: none is a frame slot
        assert not any(by_pc is not None for by_pc in taken)


def test_an_encoded_die_referring_to_a_die_left_out_is_copied_again_without_that_reference(monkeypatch):
    """Left-out DIEs are call sites, which nothing clang emits refers to; with
    base types left out too (patched), every variable of an int type refers
    to a DIE that is not there: the result is the general copy's, which drops
    the attribute."""
    from gdbstub.dwarf_translate import translate as translate_module

    module = _module("inventory.O0")
    table = module.engine_code.frame_table
    monkeypatch.setattr(translate_module, "_DROPPED_TAGS", translate_module._DROPPED_TAGS | {"DW_TAG_base_type"})
    again = []
    general_copy = translate_module._Translator._copy_attributes_generally
    monkeypatch.setattr(translate_module._Translator, "_copy_attributes_generally",
                        lambda self, *args: again.append(self._own_parameter) or general_copy(self, *args))
    fast = _translation_or_refusal(module, table)
    monkeypatch.setattr(translate_module._Translator, "_encode_attributes", lambda *args: False)
    assert fast == _translation_or_refusal(module, table) and fast[0] == "translated"
    assert again and any(again)  # among them parameters of the function itself, encoded by _o0_parameter


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["inventory.O0", "aggregates.O0"])
def test_the_fused_step_of_the_o0_variable_shape_writes_what_its_three_steps_write_even_from_damaged_dwarf(
        name, monkeypatch):
    """_ENCODE_DECLARED (location, name, a run with the type reference: one
    step, _fuse_declared) against the three steps it fuses, on the module's
    own DWARF and on .debug_info/.debug_str with flipped bytes (non-ASCII
    names, types outside the unit, locations of another shape): the same
    sections or the same refusal, and the fused step is taken."""
    import random

    from gdbstub.dwarf_translate import translate as translate_module

    module = _module(name)
    pristine = dict(module.info.dwarf)
    table = module.engine_code.frame_table
    rng = random.Random(11)
    variants = [pristine]
    for section in (".debug_info", ".debug_str"):
        for _ in range(8):
            damaged = bytearray(pristine[section])
            for _ in range(rng.randint(1, 6)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            variants.append(dict(pristine, **{section: bytes(damaged)}))
    fuse = translate_module._fuse_declared
    fused = []

    def fuse_counting(steps):
        out = fuse(steps)
        fused.extend(step[0] for step in out)
        return out

    try:
        for sections in variants:
            module.info.dwarf = sections
            monkeypatch.setattr(translate_module, "_fuse_declared", fuse_counting)
            fast = _translation_or_refusal(module, table)
            monkeypatch.setattr(translate_module, "_fuse_declared", lambda steps: steps)
            assert fast == _translation_or_refusal(module, table)
    finally:
        module.info.dwarf = pristine
    assert translate_module._ENCODE_DECLARED in fused
