"""The translator's own DIE reader (gdbstub/dwarf_translate/reader.py): it
reads every DIE and attribute as pyelftools does, on every example build and
on DWARF 5 input; hand-made units exercise the forms clang does not emit
(indirect, implicit_const, data16, block2/4, flags) and malformed ones are
refused with DwarfFormatError naming the offset."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from codemem import Engine, Module
from gdbstub.debugimage.dwarf import sleb128, uleb128
from gdbstub.dwarf_translate.reader import DwarfFormatError, GuestDieReader
from gdbstub.guest_lines import guest_dwarf_info

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "build"


def _pyelftools_view(die) -> tuple:
    """(offset, tag, [(name, form, value)], children) as pyelftools reads them,
    values normalized the way the reader gives them (blocks as bytes)."""
    attributes = []
    for attribute in die.attributes.values():
        value = attribute.value
        if isinstance(value, list):
            value = bytes(value)
        attributes.append((attribute.name, attribute.form, value))
    return die.offset, die.tag, attributes, [_pyelftools_view(child) for child in die.iter_children()]


def _reader_view(die) -> tuple:
    return (die.offset, die.tag, [(a.name, a.form, a.value) for a in die.attributes.values()],
            [_reader_view(child) for child in die.iter_children()])


def _same_as_pyelftools(sections: dict[str, bytes]) -> int:
    dwarf = guest_dwarf_info(sections)
    reader = GuestDieReader(sections, guest_dwarf_info(sections))
    units = 0
    for cu in dwarf.iter_CUs():
        assert _reader_view(reader.top_die(cu)) == _pyelftools_view(cu.get_top_DIE())
        units += 1
    return units


@pytest.mark.parametrize("wasm", sorted(EXAMPLES.glob("*.wasm")), ids=lambda p: p.stem)
def test_every_die_and_attribute_of_an_example_reads_as_pyelftools_reads_it(wasm):
    module = Module.from_file(Engine(debug=True), wasm)
    assert _same_as_pyelftools(module.info.dwarf) >= 1


@pytest.mark.parametrize("level", ["O0", "O2"])
def test_dwarf_5_indexed_strings_addresses_and_lists_resolve_as_pyelftools_resolves_them(tmp_path, level):
    wasm = tmp_path / "inventory5.wasm"
    subprocess.run(["clang-19", "--target=wasm32", "-nostdlib", "-mbulk-memory", "-g", "-gdwarf-5",
                    "-fdebug-compilation-dir=.", f"-{level}", "-Wl,--no-entry", "-Wl,--export=inventory_run",
                    str(ROOT / "examples" / "inventory.c"), "-o", str(wasm)], check=True)
    module = Module.from_file(Engine(debug=True), wasm)
    forms = set()
    dwarf = guest_dwarf_info(module.info.dwarf)
    for cu in dwarf.iter_CUs():
        forms |= {a.form for die in cu.iter_DIEs() for a in die.attributes.values()}
    assert {"DW_FORM_strx1", "DW_FORM_addrx"} <= forms, forms
    assert _same_as_pyelftools(module.info.dwarf) == 1


# ------------------------------------------------------------ hand-made units
DW_TAG_compile_unit, DW_TAG_variable, DW_TAG_base_type = 0x11, 0x34, 0x24
DW_AT_name, DW_AT_byte_size, DW_AT_external, DW_AT_const_value, DW_AT_location = 0x03, 0x0B, 0x3F, 0x1C, 0x02
DW_AT_type, DW_AT_decl_line = 0x49, 0x3B


def _abbrev(code: int, tag: int, children: bool, specs) -> bytes:
    out = uleb128(code) + uleb128(tag) + bytes([1 if children else 0])
    for spec in specs:
        out += uleb128(spec[0]) + uleb128(spec[1])
        if spec[1] == 0x21:  # implicit_const
            out += sleb128(spec[2])
    return out + b"\0\0"


def _unit(dies: bytes, version: int = 4) -> bytes:
    """A DWARF 4 compile unit header (abbrev offset 0, address size 4) and ``dies``."""
    body = version.to_bytes(2, "little") + bytes(4) + b"\x04" + dies
    return len(body).to_bytes(4, "little") + body


def _sections(abbrevs: bytes, dies: bytes) -> dict[str, bytes]:
    return {".debug_abbrev": abbrevs + b"\0", ".debug_info": _unit(dies), ".debug_str": b"\0strp name\0"}


def _read(sections: dict[str, bytes]):
    dwarf = guest_dwarf_info(sections)
    return GuestDieReader(sections, dwarf).top_die(next(dwarf.iter_CUs()))


def test_forms_clang_does_not_emit_read_as_pyelftools_reads_them():
    abbrevs = (_abbrev(1, DW_TAG_compile_unit, True, [(DW_AT_name, 0x08)])
               + _abbrev(2, DW_TAG_variable, False, [(DW_AT_name, 0x0E), (DW_AT_decl_line, 0x21, -7),
                                                     (DW_AT_external, 0x0C), (DW_AT_const_value, 0x1E),
                                                     (DW_AT_location, 0x03), (DW_AT_byte_size, 0x16),
                                                     (DW_AT_type, 0x15)])
               + _abbrev(3, DW_TAG_base_type, False, [(DW_AT_byte_size, 0x0D), (DW_AT_location, 0x04)]))
    cu_die = b"\x01" + b"unit\0"
    variable = (b"\x02" + (1).to_bytes(4, "little") + b"\x01" + bytes(range(16))
                + (3).to_bytes(2, "little") + b"\xaa\xbb\xcc" + uleb128(0x0F) + uleb128(300)  # indirect udata
                + uleb128(11))  # type: ref_udata, to the unit DIE (after the 11-byte header)
    base = b"\x03" + sleb128(-2) + (2).to_bytes(4, "little") + b"\x01\x02"
    sections = _sections(abbrevs, cu_die + variable + base + b"\0")
    assert _same_as_pyelftools(sections) == 1
    top = _read(sections)
    variable_die = top.children[0]
    assert variable_die.attributes["DW_AT_name"].value == b"strp name"
    assert variable_die.attributes["DW_AT_decl_line"] == ("DW_AT_decl_line", "DW_FORM_implicit_const", -7)
    assert variable_die.attributes["DW_AT_byte_size"] == ("DW_AT_byte_size", "DW_FORM_udata", 300)
    assert variable_die.find("DW_AT_external").value is True
    assert variable_die.get_DIE_from_attribute("DW_AT_type") is top


def test_dies_of_fixed_size_forms_and_blocks_read_in_runs_as_pyelftools_reads_them():
    # Abbreviations the reader reads by struct runs (reader._layout): a run,
    # an exprloc, a run; strp, flag (false and true), flag_present and
    # implicit_const are what the runs give raw.
    DW_FORM_flag_present, DW_FORM_exprloc = 0x19, 0x18
    abbrevs = (_abbrev(1, DW_TAG_compile_unit, True, [(DW_AT_name, 0x0E)])
               + _abbrev(2, DW_TAG_variable, False, [(DW_AT_name, 0x0E), (DW_AT_decl_line, 0x21, -7),
                                                     (DW_AT_external, 0x0C), (DW_AT_location, DW_FORM_exprloc),
                                                     (DW_AT_byte_size, 0x05), (DW_AT_const_value, 0x07),
                                                     (DW_AT_type, 0x13)])
               + _abbrev(3, DW_TAG_base_type, False, [(DW_AT_location, DW_FORM_exprloc), (DW_AT_name, 0x0E),
                                                      (DW_AT_external, DW_FORM_flag_present)]))
    cu_die = b"\x01" + (1).to_bytes(4, "little")
    variables = b"".join(b"\x02" + (1).to_bytes(4, "little") + flag + b"\x02\x91\x08" + (300).to_bytes(2, "little")
                         + (2**63 + 5).to_bytes(8, "little") + (11).to_bytes(4, "little") for flag in (b"\0", b"\x01"))
    base = b"\x03" + b"\x01\x9f" + (6).to_bytes(4, "little")
    sections = _sections(abbrevs, cu_die + variables + base + b"\0")
    assert _same_as_pyelftools(sections) == 1
    top = _read(sections)
    first, second, base_die = top.children
    assert first.values == [b"strp name", -7, False, b"\x91\x08", 300, 2**63 + 5, 11]
    assert second.values[2] is True and second.values[0] == b"strp name"
    assert base_die.values == [b"\x9f", b"name", True]


@pytest.mark.parametrize("damage, why", [
    (lambda info: info[:-3], "truncated|past the end|ends inside"),
    (lambda info: info[:11] + b"\x09" + info[12:], "abbreviation code 9"),
    (lambda info: info[:11] + b"\x00" + info[12:], "null entry"),
])
def test_a_malformed_unit_is_refused_with_the_offset_and_the_problem(damage, why):
    abbrevs = (_abbrev(1, DW_TAG_compile_unit, True, [(DW_AT_name, 0x08)])
               + _abbrev(2, DW_TAG_variable, False, [(DW_AT_name, 0x08), (DW_AT_location, 0x18)]))
    info = _unit(b"\x01unit\0" + b"\x02x\0\x02\x91\x08" + b"\0")
    damaged = damage(info)
    # keep the unit length consistent with what is left, so the unit is read
    damaged = (len(damaged) - 4).to_bytes(4, "little") + damaged[4:]
    sections = {".debug_abbrev": abbrevs + b"\0", ".debug_info": damaged}
    with pytest.raises(DwarfFormatError, match=why):
        _read(sections)


def test_a_string_offset_outside_debug_str_is_refused():
    abbrevs = _abbrev(1, DW_TAG_compile_unit, False, [(DW_AT_name, 0x0E)])
    sections = {".debug_abbrev": abbrevs + b"\0", ".debug_info": _unit(b"\x01" + (500).to_bytes(4, "little")),
                ".debug_str": b"\0x\0"}
    with pytest.raises(DwarfFormatError, match=r"\.debug_str offset 0x1f4"):
        _read(sections)


def test_a_reference_to_where_no_die_starts_is_refused():
    abbrevs = (_abbrev(1, DW_TAG_compile_unit, True, [(DW_AT_name, 0x08)])
               + _abbrev(2, DW_TAG_variable, False, [(DW_AT_type, 0x13)]))
    sections = {".debug_abbrev": abbrevs + b"\0",
                ".debug_info": _unit(b"\x01u\0" + b"\x02" + (3).to_bytes(4, "little") + b"\0")}
    with pytest.raises(DwarfFormatError, match="where no DIE starts"):
        _read(sections).children[0].get_DIE_from_attribute("DW_AT_type")
