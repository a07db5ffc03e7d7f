"""gdbstub.guest_lines: the guest's DWARF line table read from a real clang
build (examples/build/demo.O0.wasm, examples/demo.c) and mapped onto the
native code through the frame table; corrupt DWARF gives no lines, never an
exception; the debug image of a Store carries the mapped lines."""
from __future__ import annotations

import dataclasses
import io
import logging
import random
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from codemem.frametable import SequencePointKind
from codemem.runtime import Engine, Instance, Module, Store
from gdbstub.debugimage import build_debug_image
from gdbstub.guest_lines import (
    GuestLinesError, ImageLines, image_lines, image_producer, map_guest_lines, read_guest_line_table,
)
from gdbstub.images import DebugImageSet

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "build"
DEMO_SOURCE = (ROOT / "examples" / "demo.c").read_text().splitlines()
CODE_ADDRESS = 0x7F00_0000_0000
#: Each demo function: (first line, the line its prologue_end row is on).
DEMO_FUNCTIONS = {"square": (17, 18), "sum_of_squares": (21, 22), "fact": (28, 29), "run": (34, 35)}


def source_line(text: str) -> int:
    """1-based line of examples/demo.c containing ``text`` (exactly once)."""
    found = [n for n, line in enumerate(DEMO_SOURCE, 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


@pytest.fixture(scope="module")
def demo():
    return Module(Engine(debug=True), (EXAMPLES / "demo.O0.wasm").read_bytes(), name="demo")


def functions_by_name(module):
    table = module.engine_code.frame_table
    return {module.func_name(f.wasm_index): f for f in table.functions()}


def test_reads_the_examples_line_table_with_its_paths_and_producer(demo):
    table = read_guest_line_table(demo.info)
    # examples/build.sh compiles from the repo root with -fdebug-compilation-dir=.
    assert table.comp_dir == "."
    assert {row.file for row in table.rows} == {"examples/demo.c"}
    assert "clang version" in table.producer
    assert source_line("total += square(i);") in {row.line for row in table.rows}


def test_wasm_dwarf_addresses_are_code_section_payload_offsets(demo):
    """LLVM's convention, checked against the decoder: each function's first
    row is at its body's locals vector, and rows land on instruction bytes
    the frame table knows."""
    table = read_guest_line_table(demo.info)
    starts = {body.locals_offset for body in demo.info.codes}
    rows = [row for row in table.rows if not row.end_sequence]
    firsts = {min(r.module_offset for r in rows if body.locals_offset <= r.module_offset < body.end_offset)
              for body in demo.info.codes}
    assert firsts == starts
    frame_table = demo.engine_code.frame_table
    wasm_offsets = {p.wasm_offset for f in frame_table.functions() for p in frame_table.sequence_points(f)}
    exact = [r for r in rows if r.module_offset in wasm_offsets]
    assert len(exact) >= len(rows) - len(starts) - 2, "most rows are at sequence points"


def test_mapping_on_the_demo(demo):
    frame_table = demo.engine_code.frame_table
    guest = read_guest_line_table(demo.info)
    lines = map_guest_lines(guest, demo.info, frame_table, CODE_ADDRESS)
    addresses = [row.address for row in lines]
    assert addresses == sorted(addresses) and len(set(addresses)) == len(addresses)
    by_address = {row.address: row for row in lines}
    for name, (first_line, body_line) in DEMO_FUNCTIONS.items():
        func = functions_by_name(demo)[name]
        start, end = CODE_ADDRESS + func.native_start, CODE_ADDRESS + func.native_end
        # The ENTRY site (before the native prologue) carries the first line.
        assert by_address[start].line == first_line, name
        inside = [row for row in lines if start <= row.address < end]
        assert [row.line for row in inside if row.prologue_end] == [body_line], name
        instruction_points = {CODE_ADDRESS + p.native_offset for p in frame_table.sequence_points(func)
                              if p.kind is SequencePointKind.INSTRUCTION}
        assert all(row.address in instruction_points for row in inside[1:]), name
        # The code after the function has no line (unless another function starts there).
        if end not in {CODE_ADDRESS + f.native_start for f in frame_table.functions()}:
            assert by_address[end].line == 0, name
    # A row with an exact sequence point maps to it: the call of square.
    call_line = source_line("total += square(i);")
    row = next(r for r in guest.rows if r.line == call_line and r.is_stmt)
    point = next(p for f in frame_table.functions() for p in frame_table.sequence_points(f)
                 if p.kind is SequencePointKind.INSTRUCTION and p.wasm_offset == row.module_offset)
    mapped = by_address[CODE_ADDRESS + point.native_offset]
    assert (mapped.file, mapped.line, mapped.column) == ("examples/demo.c", call_line, row.column)


def test_the_lines_build_an_image_that_pyelftools_reads_back(demo):
    found = image_lines(demo, demo.engine_code.frame_table, CODE_ADDRESS)
    assert found.rows and found.comp_dir == "."
    code = bytes(demo.engine_code.frame_table.header.code_size)
    data = build_debug_image(name="demo", code_address=CODE_ADDRESS, code=code, symbols=[], fdes=[],
                             lines=found.rows, comp_dir=found.comp_dir, producer=found.producer)
    dwarf = ELFFile(io.BytesIO(data)).get_dwarf_info()
    (cu,) = dwarf.iter_CUs()
    # A lines-only image has no location lists: a GCC producer
    # (guest_lines.image_producer), the guest's kept in parentheses.
    producer = cu.get_top_DIE().attributes["DW_AT_producer"].value.decode()
    assert producer.startswith("GNU C17 ") and "(guest: " in producer and "clang version 19" in producer
    states = [e.state for e in dwarf.line_program_for_CU(cu).get_entries() if e.state]
    assert sum(bool(s.prologue_end) for s in states) == len(DEMO_FUNCTIONS)
    assert [s.line for s in states if not s.end_sequence] == [row.line for row in found.rows]


@pytest.mark.parametrize("producer, expected", [
    ("Debian clang version 19.1.7 (3~deb12u1)", "clang version 19.1.7 (Debian clang version 19.1.7"),
    ("clang version 18.0.0", "clang version 18.0.0 (clang version 18.0.0;"),
    ("rustc version 1.80", "wasm-gdbstub"),
    ("", "wasm-gdbstub"),
])
def test_a_unit_with_location_lists_is_named_clang_only_for_clang(producer, expected):
    assert image_producer(producer, has_location_lists=True).startswith(expected)


@pytest.mark.parametrize("producer", ["Debian clang version 19.1.7 (3~deb12u1)", "rustc version 1.80", ""])
def test_a_unit_without_location_lists_is_named_a_gcc_unit(producer):
    """gdb 13 sets epilogue_unwind_valid for GCC >= 4.5 units (no `m PC,1`
    epilogue-sniffer reads at every stop); the guest's producer is kept."""
    named = image_producer(producer)
    assert named.startswith("GNU C17 12.2.0 ")
    assert f"(guest: {producer or 'unknown'};" in named


def corrupted(info, name: str, data: bytes):
    return dataclasses.replace(info, dwarf={**info.dwarf, name: data})


class FakeModule:
    def __init__(self, info):
        self.info, self.name = info, "corrupt"


@pytest.mark.parametrize("name, mutate", [
    (".debug_line", lambda d: d[:len(d) // 2]),
    (".debug_line", lambda d: b"\xff" * len(d)),
    (".debug_line", lambda d: d[:4] + b"\x07\x00" + d[6:]),  # version 7
    (".debug_line", lambda d: b""),
    (".debug_info", lambda d: d[:11]),
    (".debug_abbrev", lambda d: b"\x01\x11\x01\x99\x99\x03" + d[6:]),  # unknown form
])
def test_corrupt_dwarf_gives_no_lines_and_a_warning(demo, caplog, name, mutate):
    info = corrupted(demo.info, name, mutate(demo.info.dwarf[name]))
    with pytest.raises(GuestLinesError):
        read_guest_line_table(info)
    with caplog.at_level(logging.WARNING, logger="gdbstub.guest_lines"):
        found = image_lines(FakeModule(info), demo.engine_code.frame_table, CODE_ADDRESS)
    assert found == ImageLines([])
    assert "no source lines" in caplog.text


def test_random_damage_never_raises_anything_but_guest_lines_error(demo):
    rng = random.Random(20240601)
    frame_table = demo.engine_code.frame_table
    for _ in range(300):
        name = rng.choice([".debug_line", ".debug_info", ".debug_abbrev", ".debug_str"])
        data = bytearray(demo.info.dwarf[name])
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        info = corrupted(demo.info, name, bytes(data))
        try:
            table = read_guest_line_table(info)
        except GuestLinesError:
            continue
        rows = map_guest_lines(table, info, frame_table, CODE_ADDRESS)
        if rows:  # whatever survives the parse still makes a valid image
            build_debug_image(name="x", code_address=CODE_ADDRESS, code=bytes(frame_table.header.code_size),
                              symbols=[], fdes=[], lines=rows, comp_dir=table.comp_dir)


def test_a_module_without_dwarf_gets_no_lines():
    import wasmtime

    module = Module(Engine(debug=True), wasmtime.wat2wasm('(module (func (export "f") (result i32) i32.const 1))'))
    assert read_guest_line_table(module.info) is None
    assert image_lines(module, module.engine_code.frame_table, CODE_ADDRESS) == ImageLines([])


@pytest.mark.parametrize("source_lines", [True, False])
def test_store_images_carry_the_lines_unless_disabled(tmp_path, source_lines):
    store = Store(Engine(debug=True))
    module = Module.from_file(store.engine, EXAMPLES / "demo.O0.wasm")
    Instance(store, module, [])
    images = DebugImageSet(tmp_path, process_tag="lines", source_lines=source_lines)
    image = images.for_store(store)[0]
    elf = ELFFile(io.BytesIO(image.data))
    if not source_lines:
        assert elf.get_section_by_name(".debug_line") is None
        return
    dwarf = elf.get_dwarf_info()
    (cu,) = dwarf.iter_CUs()
    program = dwarf.line_program_for_CU(cu)
    states = [e.state for e in program.get_entries() if e.state and not e.state.end_sequence]
    (entry,) = store.registry.entries()
    square = functions_by_name(module)["square"]
    link = image.image.link_start  # the image is linked position-independently
    first = next(s for s in states if s.address == link + square.native_start)
    assert first.line == DEMO_FUNCTIONS["square"][0]
    assert all(image.image.link_start <= s.address < image.image.link_end for s in states)
    assert image.start == entry.store_code.base


# ------------------------------------------------------------ the decoder, the shape
def pyelftools_rows(info) -> list[tuple]:
    """Every row of every unit as pyelftools' own state machine decodes it."""
    from gdbstub.guest_lines import guest_dwarf_info as _dwarf_info
    dwarf = _dwarf_info(info.dwarf)
    rows = []
    for cu in dwarf.iter_CUs():
        for entry in dwarf.line_program_for_CU(cu).get_entries():
            state = entry.state
            if state is not None:
                rows.append((state.address, state.file, state.line, state.column, bool(state.is_stmt),
                             bool(state.prologue_end), bool(state.epilogue_begin), bool(state.end_sequence)))
    return rows


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.wasm")), ids=lambda p: p.name)
def test_the_line_program_decoder_agrees_with_pyelftools_on_every_example(path):
    from gdbstub.guest_lines import decode_line_program, guest_dwarf_info as _dwarf_info
    module = Module(Engine(debug=True), path.read_bytes(), name=path.stem)
    if ".debug_line" not in module.info.dwarf:
        pytest.skip(f"{path.name} has no line table")
    dwarf = _dwarf_info(module.info.dwarf)
    ours = [row for cu in dwarf.iter_CUs()
            for row in decode_line_program(module.info.dwarf[".debug_line"], dwarf.line_program_for_CU(cu))]
    theirs = pyelftools_rows(module.info)
    # pyelftools resets is_stmt before it reports an end_sequence row; the
    # flag means nothing there (DWARF 5 section 6.2.5.3: the row only ends
    # the sequence), so it is left out of the comparison.
    def comparable(rows):
        return [row[:4] + row[5:] if row[7] else row for row in rows]
    assert comparable(ours) == comparable(theirs) and ours


def test_a_truncated_line_program_is_a_guest_lines_error(demo):
    from gdbstub.guest_lines import decode_line_program, guest_dwarf_info as _dwarf_info
    section = demo.info.dwarf[".debug_line"]
    program = next(_dwarf_info(demo.info.dwarf).line_program_for_CU(cu)
                   for cu in _dwarf_info(demo.info.dwarf).iter_CUs())
    assert section[program.program_start_offset] == 0  # DW_LNE_set_address: 0, length, 2, address
    program.program_end_offset = program.program_start_offset + 3  # inside its operand
    with pytest.raises(GuestLinesError):
        decode_line_program(section[:program.program_end_offset], program)


def test_mapped_lines_have_one_statement_row_per_line_run_and_an_epilogue_per_function(demo):
    """The native table's shape (issue 13 item 3): no two adjacent statement
    rows of one function on the same line (but for the prologue_end row, which
    `break FUNC` needs), each function's epilogue flagged at its final `end`,
    and the flagged row not a statement start."""
    rows = map_guest_lines(read_guest_line_table(demo.info), demo.info, demo.engine_code.frame_table, CODE_ADDRESS)
    table = demo.engine_code.frame_table
    for func in table.functions():
        start, end = CODE_ADDRESS + func.native_start, CODE_ADDRESS + func.native_end
        own = [row for row in rows if start <= row.address < end]
        statements = [row for row in own if row.is_stmt]
        for before, after in zip(statements, statements[1:]):
            assert (before.file, before.line) != (after.file, after.line) or after.prologue_end, (before, after)
        final_end = max(p.native_offset for p in table.sequence_points(func)
                        if p.kind is SequencePointKind.INSTRUCTION)
        (epilogue,) = [row for row in own if row.epilogue_begin]
        assert epilogue.address == CODE_ADDRESS + final_end
        assert not epilogue.is_stmt or epilogue is own[0]
        assert sum(row.prologue_end for row in own) == 1
