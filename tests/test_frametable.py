"""Frame-table format: round trip, and malformed tables that must name their bad field."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codemem import FrameTableError
from codemem.frametable import (
    FUNCTION_SIZE,
    HEADER_SIZE,
    SITE_DISABLED,
    FrameTable,
    FrameTableBuilder,
    FunctionBuild,
    Header,
    SequencePointKind,
    carrier_store,
)


def sample_table() -> bytes:
    b = FrameTableBuilder(debug=True)
    b.code_size = 0x200
    b.bp_veneer, b.trap_veneer, b.bp_slot, b.trap_slot = 0x1E0, 0x1E6, 0x1F0, 0x1F8
    f0 = FunctionBuild(native_start=0, native_size=0x80, wasm_index=3, frame_size=48, body_wasm_offset=0x40, stack_base=-48)
    f0.locals = [(-24, 0x7F), (-32, 0x7E)]
    f0.seqpoints = [
        (0x0, 0x40, SequencePointKind.ENTRY, ()),
        (0x10, 0x41, SequencePointKind.INSTRUCTION, (0x7F,)),
        (0x20, 0x43, SequencePointKind.RETURN_POINT, (0x7F, 0x7C)),
    ]
    b.add_function(f0)
    f1 = FunctionBuild(native_start=0x80, native_size=0x40, wasm_index=4, frame_size=16)
    f1.seqpoints = [(0x80, 0x60, SequencePointKind.ENTRY, ())]
    b.add_function(f1)
    for off in (0x0, 0x10, 0x20, 0x80):
        b.add_site(off, b"\xe8" + struct.pack("<i", 0x1E0 - off - 5))
    return b.build()


def test_round_trip():
    t = FrameTable(sample_table())
    assert t.debug and t.code_size == 0x200 and t.num_functions == 2 and t.num_sites == 4
    f0 = t.function(0)
    assert (f0.native_start, f0.native_size, f0.wasm_index, f0.frame_size, f0.stack_base) == (0, 0x80, 3, 48, -48)
    assert [(l.frame_offset, l.valtype) for l in t.locals(f0)] == [(-24, 0x7F), (-32, 0x7E)]
    points = t.sequence_points(f0)
    assert [p.kind for p in points] == [SequencePointKind.ENTRY, SequencePointKind.INSTRUCTION, SequencePointKind.RETURN_POINT]
    assert points[2].stack_types == (0x7F, 0x7C) and points[1].wasm_offset == 0x41
    assert t.function_at(0x7F).wasm_index == 3 and t.function_at(0x80).wasm_index == 4
    assert t.function_at(0xC0) is None
    assert t.function_by_wasm_index(4).native_start == 0x80
    assert t.site_offsets == [0, 0x10, 0x20, 0x80]
    assert t.site_index(0x20) == 2 and t.site_index(0x21) is None
    site = t.site(1)
    assert site.disable == SITE_DISABLED and site.enable[0] == 0xE8
    assert t.sequence_point_at_or_before(0x25).wasm_offset == 0x43
    assert t.sequence_point_at_or_before(0x0F).kind == SequencePointKind.ENTRY


def test_sites_added_one_by_one_and_in_bulk_in_any_order_come_out_sorted():
    expected = FrameTable(sample_table())
    b = FrameTableBuilder(debug=True)
    b.code_size = 0x200
    b.bp_veneer, b.trap_veneer, b.bp_slot, b.trap_slot = 0x1E0, 0x1E6, 0x1F0, 0x1F8
    b.add_call_sites([0x80], 0x1E0)
    b.add_site(0x10, b"\xe8" + struct.pack("<i", 0x1E0 - 0x10 - 5))
    b.add_call_sites([0x20, 0x0], 0x1E0)  # not ascending
    table = FrameTable(b.build())
    assert table.site_offsets == expected.site_offsets == [0, 0x10, 0x20, 0x80]
    assert [table.site(k) for k in range(4)] == [expected.site(k) for k in range(4)]
    bulk = FrameTableBuilder(debug=True)
    bulk.code_size = 0x200
    bulk.add_call_sites([0x40, 0x48], 0x1E0)
    bulk.add_call_sites([0x8, 0x10], 0x1E0)  # ascending runs, out of order
    assert FrameTable(bulk.build()).site_offsets == [0x8, 0x10, 0x40, 0x48]


@pytest.mark.parametrize("raw, expected", [
    ("4c89442408", (8, 8)),      # mov [rsp+8], r8
    ("4889442478", (0, 0x78)),   # mov [rsp+0x78], rax
    ("48897c2410", (7, 0x10)),   # mov [rsp+0x10], rdi
    ("4c897c2400", (15, 0)),     # mov [rsp+0], r15 (a disp8 of 0)
])
def test_a_carrier_store_decodes_to_its_register_and_slot(raw, expected):
    store = carrier_store(bytes.fromhex(raw))
    assert (store.register, store.disp) == expected and store.slot == expected[1] // 8
    # regfile gpr[] order (csrc/codemem_rt.h): rax rbx rcx rdx rsi rdi rbp rsp r8..r15
    assert store.regfile_index == {0: 0, 7: 5, 8: 8, 15: 15}[store.register]


@pytest.mark.parametrize("raw", [
    "0f1f440000",  # the NOP
    "4889042490",  # mov [rsp], rax (4 bytes) + a nop
    "4889442480",  # mov [rsp-0x80], rax: below the operand stack
    "488944240c",  # mov [rsp+0xc], rax: not a slot (slots are 8 bytes)
    "4989442408",  # REX.B: [r12+8], not [rsp+8]
    "4889452408",  # ModRM rm=101: [rbp+0x24], then a stray byte
    "4189442408",  # no REX.W: a 32-bit store
    "48894c2508",  # SIB with an index (rsp + 4*...)
    "488b442408",  # a load, not a store
    "4c894424",    # too short
])
def test_anything_but_a_64_bit_store_to_an_rsp_slot_is_no_carrier_store(raw):
    assert carrier_store(bytes.fromhex(raw)) is None


def test_call_site_records_take_the_disabled_bytes_from_the_code_and_refuse_anything_else():
    code = bytearray(b"\xcc" * 0x40)
    code[0x00:0x05] = SITE_DISABLED
    code[0x08:0x0D] = bytes.fromhex("4c89442408")  # a carrier store as the site
    b = FrameTableBuilder(debug=True)
    b.code_size = len(code)
    b.add_call_sites([0x00, 0x08], 0x30, code)
    table = FrameTable(b.build())
    assert [table.site(k).disable for k in range(2)] == [SITE_DISABLED, bytes.fromhex("4c89442408")]
    assert table.site(0).carrier is None and table.site(1).carrier == carrier_store(bytes.fromhex("4c89442408"))
    assert [table.site(k).enable for k in range(2)] == [b"\xe8" + struct.pack("<i", 0x30 - off - 5) for off in (0, 8)]
    with pytest.raises(AssertionError, match="neither the disabled NOP nor a carrier store"):
        FrameTableBuilder(debug=True).add_call_sites([0x10], 0x30, code)  # int3s
    with pytest.raises(AssertionError, match="neither"):
        FrameTableBuilder(debug=True).add_call_sites([0x38], 0x30, code[:0x3C])  # past the end of the code
    with pytest.raises(AssertionError):
        FrameTableBuilder(debug=True).add_site(0x10, b"\xe8\0\0\0\0", b"\xcc" * 5)


def patched(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def header_field_offset(name: str) -> int:
    names = ["code_size", "bp_veneer", "trap_veneer", "bp_slot", "trap_slot", "num_functions", "functions_offset",
             "num_sites", "sites_offset", "num_seqpoints", "seqpoints_offset", "num_locals", "locals_offset",
             "types_size", "types_offset"]
    return 8 + 4 * names.index(name)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:10], "truncated"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: patched(d, 4, "<H", 9), "version 9"),
        (lambda d: patched(d, header_field_offset("num_functions"), "<I", 10**6), "num_functions"),
        (lambda d: patched(d, header_field_offset("sites_offset"), "<I", 2**31), "num_sites"),
        (lambda d: patched(d, header_field_offset("bp_slot"), "<I", 0x10000), "bp_slot"),
        (lambda d: patched(d, header_field_offset("functions_offset"), "<I", 4), "overlaps the header"),
    ],
)
def test_malformed_headers_name_the_field(mutate, message):
    with pytest.raises(FrameTableError, match=message):
        FrameTable(mutate(sample_table()))


def test_the_header_struct_reads_every_field_as_the_construct_schema_does():
    data = sample_table()
    schema = Header.parse(data)
    header = FrameTable(data).header
    assert header._asdict() == {name: schema[name] for name in header._fields}
    assert set(header._fields) == {name for name in schema if not name.startswith("_")} - {"magic", "reserved"}


def test_malformed_records_name_the_field():
    data = sample_table()
    t = FrameTable(data)
    sites_at = t.header.sites_offset
    bad = FrameTable(patched(data, sites_at + 16, "<I", 0x0E))  # 0xe + 5 crosses 0x10
    with pytest.raises(FrameTableError, match="patch site 1: offset 0xe"):
        bad.site_offsets
    bad = FrameTable(patched(data, sites_at + 16, "<I", 0x0))
    with pytest.raises(FrameTableError, match="not after the previous site"):
        bad.site_offsets
    bad = FrameTable(patched(data, HEADER_SIZE + 4, "<I", 0x1000))  # function 0 native_size
    with pytest.raises(FrameTableError, match="function record 0: native range"):
        bad.function(0)
    bad = FrameTable(patched(data, HEADER_SIZE + FUNCTION_SIZE, "<I", 0x10))  # function 1 starts inside 0
    with pytest.raises(FrameTableError, match="function record 1.*overlaps"):
        bad.function_at(0x90)
    bad = FrameTable(patched(data, t.header.seqpoints_offset + 8, "<B", 7))
    with pytest.raises(FrameTableError, match="sequence point 0: unknown kind 7"):
        bad.sequence_points(bad.function(0))


def read_everything(t: FrameTable) -> None:
    for i in range(min(t.num_functions, 64)):
        f = t.function(i)
        t.locals(f) if f.num_locals < 64 else None
        t.sequence_points(f) if f.num_seqpoints < 64 else None
    if t.num_sites < 4096:
        t.site_offsets
        for i in range(t.num_sites):
            t.site(i)
    t.function_at(0x10)


@settings(max_examples=300, deadline=2000)
@given(st.data())
def test_mutated_tables_raise_only_frame_table_error(data):
    table = bytearray(sample_table())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(table) - 1))
        table[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        table = table[: data.draw(st.integers(0, len(table)))]
    try:
        read_everything(FrameTable(bytes(table)))
    except FrameTableError:
        pass


@pytest.mark.parametrize("raw, valid", [
    ("3e48897d80", True),    # ds mov [rbp-0x80], rdi: a local carrier (local 6's home)
    ("3e4c8975b8", True),    # ds mov [rbp-0x48], r14
    ("3e3e4d89c3", True),    # ds ds mov r11, r8: a move carrier
    ("3e3e4889c7", True),    # ds ds mov rdi, rax
    ("3e48897d84", False),   # [rbp-0x7c]: no home (homes are 8 bytes)
    ("3e48897d08", False),   # [rbp+8]: above the frame, no home
    ("3e3e4889e7", False),   # mov rdi, rsp: a stop cannot replay rsp
    ("3e3e4889ef", False),   # mov rdi, rbp
    ("3e3e4889ff", False),   # mov rdi, rdi
    ("48897d8000", False),   # no DS prefix: a 4-byte store and a stray byte
    ("3e3e3e89c7", False),   # no REX.W: a 32-bit move
])
def test_call_site_records_take_local_and_move_carriers_as_python_decodes_them(raw, valid):
    """C's is_carrier_store (cm_call_site_records) and frametable.carrier_store agree."""
    code = bytearray(b"\xcc" * 0x10)
    code[0x08:0x0D] = bytes.fromhex(raw)
    assert (carrier_store(bytes.fromhex(raw)) is not None) is valid
    if valid:
        b = FrameTableBuilder(debug=True)
        b.code_size = len(code)
        b.add_call_sites([0x08], 0x30, code)
        assert FrameTable(b.build()).site(0).carrier == carrier_store(bytes.fromhex(raw))
    else:
        with pytest.raises(AssertionError, match="neither"):
            FrameTableBuilder(debug=True).add_call_sites([0x08], 0x30, code)
