"""The frame table read in place agrees with a full parse (issue 13 item 1).

``codemem.frametable.FrameTable`` answers one question (a ``Z0``, a stop, a
backtrace) with bisects over the stored records (``RecordColumn``) instead of
parsing the arrays.  Each test here parses the whole table the slow, obvious
way (construct's schemas, record by record) and sweeps every function, every
sequence point, every site and every wasm offset through the in-place lookups,
on every example and on a generated module (scripts/bench/bigmodule.py, small
size) with hundreds of functions.  The epilogue finder of the debug images
(byte search) is checked against capstone's decoding the same way.
"""
from __future__ import annotations

import sys
from pathlib import Path

import capstone
import pytest

import codemem
from codemem.frametable import (
    FUNCTION_SIZE, SEQPOINT_SIZE, SITE_RECORD_SIZE, FunctionRecord, PatchSiteRecord, SequencePointKind,
    SequencePointRecord,
)
from gdbstub.images import find_epilogue

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "build").glob("*.wasm"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import bigmodule  # noqa: E402


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A generated module of 150 functions (bigmodule.py's shape, smaller)."""
    wasm, _native = bigmodule.build(tmp_path_factory.mktemp("generated"), functions=150)
    return wasm


def modules(generated: Path) -> list[Path]:
    return [*EXAMPLES, generated]


class FullParse:
    """Every record of a table, parsed with the construct schemas."""

    def __init__(self, data: bytes, header):
        def records(schema, offset, count, size):
            return [schema.parse(data[offset + k * size: offset + (k + 1) * size]) for k in range(count)]

        self.functions = records(FunctionRecord, header.functions_offset, header.num_functions, FUNCTION_SIZE)
        self.points = records(SequencePointRecord, header.seqpoints_offset, header.num_seqpoints, SEQPOINT_SIZE)
        self.sites = records(PatchSiteRecord, header.sites_offset, header.num_sites, SITE_RECORD_SIZE)

    def function_at(self, offset: int):
        found = [k for k, f in enumerate(self.functions) if f.native_start <= offset < f.native_start + f.native_size]
        return found[0] if found else None

    def instruction_sites(self) -> dict[int, int]:
        """wasm offset -> native offset of the first INSTRUCTION point with a
        site (what gdbstub.wasm_dialect built for lldb's first Z0 before)."""
        site_offsets = {s.offset for s in self.sites}
        found: dict[int, int] = {}
        for point in self.points:
            if point.kind == SequencePointKind.INSTRUCTION and point.wasm_offset not in found \
                    and point.native_offset in site_offsets:
                found[point.wasm_offset] = point.native_offset
        return found


def load(path: Path):
    module = codemem.Module.from_file(codemem.Engine(debug=True), path)
    table = module.engine_code.frame_table
    return module, table, FullParse(table.data, table.header)


@pytest.mark.parametrize("index", range(len(EXAMPLES) + 1), ids=[p.name for p in EXAMPLES] + ["generated"])
def test_function_and_site_lookups_agree_with_a_full_parse_everywhere(generated, index):
    module, table, full = load(modules(generated)[index])
    assert table.num_functions == len(full.functions) > 0
    assert list(table.function_starts) == [f.native_start for f in full.functions]
    # Every offset of the code, around every function boundary, and between functions.
    probes = {0, table.code_size - 1}
    for f in full.functions:
        probes |= {f.native_start - 1, f.native_start, f.native_start + 1, f.native_start + f.native_size - 1,
                   f.native_start + f.native_size}
    for offset in sorted(p for p in probes if p >= 0):
        found = table.function_at(offset)
        expected = full.function_at(offset)
        assert (found.position if found else None) == expected, hex(offset)
    # Every sequence point lies in the function whose record lists it.
    for k, f in enumerate(full.functions):
        for point in full.points[f.first_seqpoint:f.first_seqpoint + f.num_seqpoints]:
            assert table.function_at(point.native_offset).position == k
    for k, f in enumerate(full.functions):
        assert table.function_by_wasm_index(f.wasm_index).position == k
        info = table.function(k)
        assert (info.first_seqpoint, info.num_seqpoints) == (f.first_seqpoint, f.num_seqpoints)
        records = table.point_records(info)
        expected = full.points[f.first_seqpoint:f.first_seqpoint + f.num_seqpoints]
        assert records == [(p.native_offset, p.wasm_offset, p.kind) for p in expected]
        assert list(table.sequence_point_offsets(info)) == [p.native_offset for p in expected]
        for index in range(info.num_locals + 1):  # local_home is local() without its record (None past the end)
            slot = table.local(info, index)
            assert table.local_home(info, index) == ((slot.frame_offset, slot.valtype) if slot else None)
        for kind in SequencePointKind:  # the first of each kind in native order, None when there is none
            assert table.first_point_offset(info, kind) == next(
                (p.native_offset for p in expected if p.kind == kind), None)
    assert table.function_by_wasm_index(module.info.num_funcs + 5) is None

    site_offsets = [s.offset for s in full.sites]
    assert table.site_offsets == site_offsets
    site_set = set(site_offsets)
    for k, offset in enumerate(site_offsets):
        assert table.site_index(offset) == k
        site = table.site(k)
        assert (site.enable, site.disable) == (bytes(full.sites[k].enable), bytes(full.sites[k].disable))
        if offset + 1 not in site_set:
            assert table.site_index(offset + 1) is None
    for f in full.functions:
        inside = table.site_indexes_in(f.native_start, f.native_start + f.native_size)
        assert [site_offsets[i] for i in inside] == [o for o in site_offsets
                                                     if f.native_start <= o < f.native_start + f.native_size]


@pytest.mark.parametrize("index", range(len(EXAMPLES) + 1), ids=[p.name for p in EXAMPLES] + ["generated"])
def test_wasm_offset_to_site_agrees_with_the_full_map_at_every_module_offset(generated, index):
    """lldb's Z0 (wasm dialect): every byte offset of every function body, hits
    and misses alike."""
    module, table, full = load(modules(generated)[index])
    expected = full.instruction_sites()
    assert expected
    for body in module.info.codes:
        for wasm_offset in range(body.locals_offset - 1, body.end_offset + 1):
            assert table.instruction_site_at_wasm_offset(wasm_offset) == expected.get(wasm_offset), hex(wasm_offset)
    assert table.instruction_site_at_wasm_offset(0) is None
    assert table.instruction_site_at_wasm_offset(len(module.wasm) + 100) is None


@pytest.mark.parametrize("index", range(len(EXAMPLES) + 1), ids=[p.name for p in EXAMPLES] + ["generated"])
def test_the_epilogue_byte_search_finds_what_capstone_decodes(generated, index):
    """The debug image's CFI needs each function's `pop rbp; ret`: found by
    searching the bytes from the last sequence point; capstone's linear
    decoding from the same place must find the same instructions."""
    module, table, _ = load(modules(generated)[index])
    code = module.engine_code.read(0, module.engine_code.code_size)
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for func in table.functions():
        start = table.sequence_point_offsets(func)[-1]
        previous, decoded = None, None
        for address, _size, mnemonic, operands in disassembler.disasm_lite(code[start:func.native_end], start):
            if mnemonic == "ret":
                decoded = (address - 1, address) if previous == ("pop", "rbp") else None
                break
            previous = (mnemonic, operands)
        assert decoded is not None, f"function {func.wasm_index}: no epilogue"
        assert find_epilogue(code, table, func) == decoded, f"function {func.wasm_index}"
