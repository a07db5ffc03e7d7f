"""Tests of gdbstub.debugimage: the synthesized ELF must parse with pyelftools to
exactly the inputs, and real gdb / lldb must resolve symbols, lines and unwind
rules at the absolute addresses given."""
from __future__ import annotations

import io
import posixpath
import re
import socket
import struct
import subprocess
import threading

import pytest
from elftools.dwarf.callframe import FDE as PyelftoolsFDE
from elftools.dwarf.callframe import RegisterRule
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakestub import serve_one_client
from gdbstub.debugimage import CfiRow, DebugImageError, Fde, LineRow, Symbol, build_debug_image
from gdbstub.debugimage.dwarf import DWARF_REGISTERS, sleb128, uleb128

# Deliberately not page aligned, high in the address space like a real mapping.
CODE_ADDRESS = 0x7F1234567010
STACK_TOP = 0x7FFFF0001000

# add(a, b): push rbp; mov rbp,rsp; mov eax,edi; add eax,esi; pop rbp; ret
ADD = bytes.fromhex("55" "4889e5" "89f8" "01f0" "5d" "c3")
ADD_PADDED = ADD + b"\xcc" * (16 - len(ADD))
MAIN_OFFSET = len(ADD_PADDED)
CALL_OFFSET = MAIN_OFFSET + 1 + 3 + 5 + 5  # offset of `call add` in the image
# main(): push rbp; mov rbp,rsp; mov edi,1; mov esi,2; call add; pop rbp; ret
MAIN = (bytes.fromhex("55" "4889e5" "bf01000000" "be02000000")
        + b"\xe8" + struct.pack("<i", -(CALL_OFFSET + 5)) + bytes.fromhex("5d" "c3"))
CODE = ADD_PADDED + MAIN
RETURN_ADDRESS = CODE_ADDRESS + CALL_OFFSET + 5


def frame_rows(size: int) -> tuple[CfiRow, ...]:
    """Rows of an rbp-chained function of ``size`` bytes ending in pop rbp; ret."""
    return (
        CfiRow(0, "rsp", 8, {"rip": -8}),
        CfiRow(1, "rsp", 16, {"rip": -8, "rbp": -16}),
        CfiRow(4, "rbp", 16, {"rip": -8, "rbp": -16}),
        CfiRow(size - 1, "rsp", 8, {"rip": -8}),
    )


SYMBOLS = [Symbol("add", CODE_ADDRESS, len(ADD)), Symbol("main", CODE_ADDRESS + MAIN_OFFSET, len(MAIN))]
FDES = [
    Fde(CODE_ADDRESS, len(ADD), frame_rows(len(ADD))),
    # main is the outermost frame here: unwinding must stop after it.
    Fde(CODE_ADDRESS + MAIN_OFFSET, len(MAIN), frame_rows(len(MAIN)), undefined_rip=True),
]
LINES = [
    LineRow(CODE_ADDRESS, "x.c", 2, 5),
    LineRow(CODE_ADDRESS + 4, "x.c", 3, 10),
    LineRow(CODE_ADDRESS + 10, "x.c", 4),
    LineRow(CODE_ADDRESS + MAIN_OFFSET, "/src/inc/y.h", 10),
    LineRow(CODE_ADDRESS + MAIN_OFFSET + 4, "x.c", 8),
    LineRow(RETURN_ADDRESS, "x.c", 9, 1, is_stmt=False),
]


def sample_image(**overrides) -> bytes:
    arguments = dict(name="sample.wasm", code_address=CODE_ADDRESS, code=CODE, symbols=SYMBOLS,
                     fdes=FDES, lines=LINES, comp_dir="/work/src")
    arguments.update(overrides)
    return build_debug_image(**arguments)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("debugimage") / "sample.so"
    path.write_bytes(sample_image())
    return path


def elf_of(data: bytes) -> ELFFile:
    return ELFFile(io.BytesIO(data))


# ------------------------------------------------------------------ expectations
def expected_rules(fde: Fde) -> list[tuple[int, tuple[int, int], dict[int, tuple[str, int | None]]]]:
    """What a DWARF consumer must decode for ``fde``: (pc, (cfa reg, cfa offset),
    {reg: (rule, arg)}), leaving out "same value" rules (the default)."""
    table = []
    for row in fde.rows:
        rules = {DWARF_REGISTERS[r]: (RegisterRule.UNDEFINED, None) for r in fde.clobbered}
        rules.update({DWARF_REGISTERS[r]: (RegisterRule.OFFSET, off) for r, off in row.saved.items()})
        if fde.undefined_rip:
            rules[16] = (RegisterRule.UNDEFINED, None)
        else:
            rules.setdefault(16, (RegisterRule.OFFSET, -8))
        table.append((fde.start + row.offset, (DWARF_REGISTERS[row.cfa_reg], row.cfa_offset), rules))
    return table


def decoded_rules(entry: PyelftoolsFDE):
    table = []
    for row in entry.get_decoded().table:
        rules = {reg: (rule.type, rule.arg) for reg, rule in row.items()
                 if isinstance(reg, int) and rule.type != RegisterRule.SAME_VALUE}
        table.append((row["pc"], (row["cfa"].reg, row["cfa"].offset), rules))
    return table


def decoded_lines(elf: ELFFile) -> list[LineRow]:
    dwarf = elf.get_dwarf_info()
    (cu,) = list(dwarf.iter_CUs())
    program = dwarf.line_program_for_CU(cu)
    directories = [d.decode() for d in program["include_directory"]]
    rows = []
    for entry in program.get_entries():
        state = entry.state
        if state is None or state.end_sequence:
            continue
        file_entry = program["file_entry"][state.file]  # DWARF 5: 0-based file index
        name = file_entry.name.decode()
        path = name if file_entry.dir_index == 0 else posixpath.join(directories[file_entry.dir_index], name)
        rows.append(LineRow(state.address, path, state.line, state.column, bool(state.is_stmt)))
    return rows


# ------------------------------------------------------------------ pyelftools
def test_elf_header_segment_and_sections():
    elf = elf_of(sample_image())
    assert elf.header.e_type == "ET_DYN" and elf.header.e_machine == "EM_X86_64"
    assert elf.elfclass == 64 and elf.little_endian
    names = [s.name for s in elf.iter_sections()]
    for required in (".text", ".symtab", ".strtab", ".shstrtab", ".debug_frame", ".debug_line",
                     ".debug_info", ".debug_abbrev", ".note.gnu.build-id"):
        assert required in names
    (segment,) = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert segment["p_vaddr"] == CODE_ADDRESS and segment["p_memsz"] == len(CODE)
    assert segment["p_offset"] % 0x1000 == CODE_ADDRESS % 0x1000
    assert segment["p_flags"] == 5  # R + X
    text = elf.get_section_by_name(".text")
    assert text["sh_addr"] == CODE_ADDRESS and text.data() == CODE
    assert segment.section_in_segment(text)


def test_section_by_name_reads_a_section_in_place_as_pyelftools_does():
    from gdbstub.debugimage.elf import section_by_name
    image = sample_image()
    elf = elf_of(image)
    for name in (".text", ".debug_line", ".symtab", ".shstrtab"):
        assert section_by_name(image, name) == elf.get_section_by_name(name).data(), name
    assert section_by_name(image, ".nope") is None
    assert section_by_name(image, ".text"[:-1]) is None  # a prefix of a name is not the name
    with pytest.raises(DebugImageError, match="bad ELF section headers"):
        section_by_name(image[:elf.header.e_shoff + 8], ".text")


def test_symbols_have_values_sizes_and_types():
    elf = elf_of(sample_image(symbols=SYMBOLS + [Symbol("memory", 0x10000, 0x20000, "object")]))
    symtab = elf.get_section_by_name(".symtab")
    found = {s.name: s for s in symtab.iter_symbols() if s.name}
    assert found["sample.wasm"]["st_info"]["type"] == "STT_FILE"
    for symbol in SYMBOLS:
        entry = found[symbol.name]
        assert (entry["st_value"], entry["st_size"]) == (symbol.address, symbol.size)
        assert entry["st_info"]["type"] == "STT_FUNC" and entry["st_info"]["bind"] == "STB_GLOBAL"
        assert entry["st_shndx"] == elf.get_section_index(".text")
    assert found["memory"]["st_info"]["type"] == "STT_OBJECT" and found["memory"]["st_shndx"] == "SHN_ABS"
    assert symtab["sh_info"] == 2  # null + STT_FILE are the locals


def test_debug_frame_decodes_to_the_rows_given():
    dwarf = elf_of(sample_image()).get_dwarf_info()
    assert dwarf.has_CFI()
    entries = [e for e in dwarf.CFI_entries() if isinstance(e, PyelftoolsFDE)]
    assert len(entries) == len(FDES)
    for entry, fde in zip(entries, FDES):
        assert entry.header["initial_location"] == fde.start and entry.header["address_range"] == fde.size
        assert entry.cie.header["code_alignment_factor"] == 1
        assert entry.cie.header["data_alignment_factor"] == -8
        assert entry.cie.header["return_address_register"] == 16
        assert decoded_rules(entry) == expected_rules(fde)


def test_popped_register_returns_to_same_value():
    dwarf = elf_of(sample_image()).get_dwarf_info()
    entry = next(e for e in dwarf.CFI_entries() if isinstance(e, PyelftoolsFDE))
    last = entry.get_decoded().table[-1]
    assert last[DWARF_REGISTERS["rbp"]].type == RegisterRule.SAME_VALUE


def test_line_program_rows_equal_lines():
    elf = elf_of(sample_image())
    assert decoded_lines(elf) == LINES
    dwarf = elf.get_dwarf_info()
    (cu,) = list(dwarf.iter_CUs())
    assert cu["version"] == 5
    top = cu.get_top_DIE()
    assert top.tag == "DW_TAG_compile_unit"
    assert top.attributes["DW_AT_name"].value == b"x.c"
    assert top.attributes["DW_AT_comp_dir"].value == b"/work/src"
    assert top.attributes["DW_AT_low_pc"].value == CODE_ADDRESS
    assert top.attributes["DW_AT_high_pc"].value == len(CODE)
    subprograms = [(d.attributes["DW_AT_name"].value.decode(), d.attributes["DW_AT_low_pc"].value,
                    d.attributes["DW_AT_high_pc"].value, d.attributes["DW_AT_frame_base"].value)
                   for d in top.iter_children()]
    assert subprograms == [(s.name, s.address, s.size, [0x9C]) for s in SYMBOLS]


def test_no_lines_means_no_dwarf_info_but_cfi():
    elf = elf_of(sample_image(lines=[]))
    names = {s.name for s in elf.iter_sections()}
    assert ".debug_frame" in names
    assert not names & {".debug_info", ".debug_line", ".debug_abbrev"}


def test_extra_sections_and_build_id_are_deterministic():
    first = sample_image(extra_sections={".wasm": b"\0asm\1\0\0\0"})
    assert first == sample_image(extra_sections={".wasm": b"\0asm\1\0\0\0"})
    elf = elf_of(first)
    assert elf.get_section_by_name(".wasm").data() == b"\0asm\1\0\0\0"
    (note,) = elf.get_section_by_name(".note.gnu.build-id").iter_notes()
    assert note["n_type"] == "NT_GNU_BUILD_ID" and len(note["n_descdata"]) == 20
    other = elf_of(sample_image(code_address=CODE_ADDRESS + 0x1000, symbols=[], fdes=[], lines=[]))
    (other_note,) = other.get_section_by_name(".note.gnu.build-id").iter_notes()
    assert other_note["n_descdata"] != note["n_descdata"]


def test_large_deltas_and_positive_offsets_encode():
    # Offsets past advance_loc's 6 bits and 1 byte, a register saved above the
    # CFA (DW_CFA_offset_extended_sf) and a big line jump backwards.
    code = bytes(70000)
    rows = (CfiRow(0, "rsp", 8, {}), CfiRow(100, "rsp", 24, {"r15": -24, "rbx": 8}),
            CfiRow(300, "rbp", 4096, {"rbx": -4000}), CfiRow(69000, "rsp", 8, {}))
    fde = Fde(CODE_ADDRESS, len(code), rows)
    lines = [LineRow(CODE_ADDRESS, "a/b.c", 1000), LineRow(CODE_ADDRESS + 66000, "a/b.c", 3, 400)]
    elf = elf_of(build_debug_image(name="big", code_address=CODE_ADDRESS, code=code, symbols=[],
                                   fdes=[fde], lines=lines))
    (entry,) = [e for e in elf.get_dwarf_info().CFI_entries() if isinstance(e, PyelftoolsFDE)]
    assert decoded_rules(entry) == expected_rules(fde)
    assert decoded_lines(elf) == lines


cfi_rows = st.lists(
    st.tuples(st.integers(1, 300), st.sampled_from(["rsp", "rbp", "rbx"]), st.sampled_from([8, 16, 24, 4096]),
              st.dictionaries(st.sampled_from(sorted(DWARF_REGISTERS)), st.integers(-64, 8).map(lambda n: n * 8),
                              max_size=5)),
    max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=cfi_rows, undefined_rip=st.booleans(),
       clobbered=st.lists(st.sampled_from(["rax", "rbx", "rsi", "r12", "r14"]), unique=True, max_size=4))
def test_any_cfi_table_round_trips(rows, undefined_rip, clobbered):
    offset, table = 0, [CfiRow(0, "rsp", 8, {})]
    for delta, reg, cfa_offset, saved in rows:
        offset += delta
        table.append(CfiRow(offset, reg, cfa_offset, saved))
    fde = Fde(CODE_ADDRESS, offset + 1, tuple(table), undefined_rip=undefined_rip, clobbered=tuple(clobbered))
    elf = elf_of(build_debug_image(name="h", code_address=CODE_ADDRESS, code=bytes(offset + 1),
                                   symbols=[], fdes=[fde]))
    (entry,) = [e for e in elf.get_dwarf_info().CFI_entries() if isinstance(e, PyelftoolsFDE)]
    expected = expected_rules(fde)
    if undefined_rip:  # rows' own rip entries are ignored for the outermost frame
        for _, _, rules in expected:
            rules[16] = (RegisterRule.UNDEFINED, None)
    assert decoded_rules(entry) == expected


@settings(max_examples=60, deadline=None)
@given(value=st.integers(-(1 << 70), 1 << 70))
def test_leb128_round_trip(value):
    def decode(data: bytes, signed: bool) -> int:
        result = shift = 0
        for byte in data:
            result |= (byte & 0x7F) << shift
            shift += 7
        if signed and data[-1] & 0x40:
            result -= 1 << shift
        return result
    encoded = sleb128(value)
    assert decode(encoded, True) == value and all(b & 0x80 for b in encoded[:-1])
    if value >= 0:
        assert decode(uleb128(value), False) == value


@pytest.mark.parametrize("overrides, message", [
    (dict(code=b""), "at least one code byte"),
    (dict(symbols=[Symbol("f", CODE_ADDRESS + len(CODE), 1)]), "outside the code"),
    (dict(symbols=[Symbol("f", CODE_ADDRESS, 1, "data")]), "unknown kind"),
    (dict(fdes=[Fde(CODE_ADDRESS - 1, 4, (CfiRow(0, "rsp", 8, {}),))]), "outside the code"),
    (dict(fdes=[Fde(CODE_ADDRESS, 4, (CfiRow(1, "rsp", 8, {}),))]), "first row"),
    (dict(fdes=[Fde(CODE_ADDRESS, 4, (CfiRow(0, "rsp", 8, {}), CfiRow(0, "rsp", 16, {})))]), "increasing"),
    (dict(fdes=[Fde(CODE_ADDRESS, 4, (CfiRow(0, "xmm9", 8, {}),))]), "unknown register"),
    (dict(fdes=[Fde(CODE_ADDRESS, 4, (CfiRow(0, "rsp", 8, {"rbp": -12}),))]), "multiple of 8"),
    (dict(lines=list(reversed(LINES))), "not sorted"),
    (dict(lines=[LineRow(CODE_ADDRESS + len(CODE), "x.c", 1)]), "outside the code"),
    (dict(extra_sections={".text": b""}), "reserved"),
])
def test_bad_inputs_raise(overrides, message):
    with pytest.raises(DebugImageError, match=message):
        sample_image(**overrides)


# ------------------------------------------------------------------ real gdb
def run_gdb(*commands: str, target: str | None = None) -> str:
    arguments = ["gdb", "-nx", "-batch"]
    for command in commands:
        arguments += ["-ex", command]
    if target:
        arguments.append(target)
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def test_gdb_reads_symbols_lines_and_code(image_path):
    add, main = SYMBOLS
    output = run_gdb("info functions", f"info line *{CODE_ADDRESS + 4:#x}", f"info symbol {main.address + 4:#x}",
                     "disassemble main", "break x.c:8", "info scope add", target=str(image_path))
    assert re.search(r"File x\.c:\n(\s*void add\(void\);\n)\s*void main\(void\);", output), output
    assert f'Line 3 of "x.c" starts at address {CODE_ADDRESS + 4:#x} <add+4>' in output
    assert "main + 4 in section .text" in output
    assert re.search(rf"{main.address:#018x} <\+0>:\s+push\s+%rbp", output), output
    assert re.search(rf"{RETURN_ADDRESS - 5:#018x} <\+14>:\s+call\s+{add.address:#x} <add>", output), output
    assert f"Breakpoint 1 at {main.address + 4:#x}: file x.c, line 8." in output


def test_gdb_without_lines_uses_minimal_symbols(tmp_path):
    path = tmp_path / "nolines.so"
    path.write_bytes(sample_image(lines=[]))
    output = run_gdb("info functions", f"info symbol {CODE_ADDRESS + 3:#x}", "x/2i add", target=str(path))
    assert "Non-debugging symbols:" in output
    assert re.search(rf"{CODE_ADDRESS:#018x}\s+add", output), output
    assert "add + 3 in section .text" in output
    assert re.search(r"<add\+1>:\s+mov\s+%rsp,%rbp", output), output


class FakeRemote:
    """Just enough of a GDB remote stub (RSP) for gdb to list our image as an svr4
    library with l_addr=0 and unwind a stopped thread through its CFI: registers
    from ``registers`` (gdb's amd64 'g' order), memory from ``regions``."""

    def __init__(self, library: str, registers: list[int], regions: list[tuple[int, bytes]]):
        self.library, self.registers, self.regions = library, registers, regions
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, packet: str) -> str:
        simple = {"?": "T05thread:1;", "qfThreadInfo": "m1", "qsThreadInfo": "l", "qC": "QC1",
                  "qAttached": "1", "qSymbol::": "OK"}
        if packet in simple:
            return simple[packet]
        if packet.startswith("qSupported"):
            return "PacketSize=4000;qXfer:features:read+;qXfer:libraries-svr4:read+"
        if packet.startswith(("H", "D")):
            return "OK"
        xfer = re.fullmatch(r"qXfer:(features|libraries-svr4):read:[^:]*:([0-9a-f]+),([0-9a-f]+)", packet)
        if xfer:
            if xfer[1] == "features":
                document = ("<target><architecture>i386:x86-64</architecture>"
                            "<osabi>GNU/Linux</osabi></target>")
            else:  # gdb 13 requires lmid (its DTD); l_ld=0: there is no .dynamic
                document = (f'<library-list-svr4 version="1.0"><library name="{self.library}" '
                            f'lm="0x10000" l_addr="0x0" l_ld="0x0" lmid="0x0"/></library-list-svr4>')
            start, length = int(xfer[2], 16), int(xfer[3], 16)
            return ("l" if start + length >= len(document) else "m") + document[start:start + length]
        if packet == "g":  # rax..r15, rip, eflags, 6 segment registers; the rest unavailable
            return (b"".join(struct.pack("<Q", r) for r in self.registers)
                    + struct.pack("<I", 0x246) + bytes(24)).hex()
        read = re.fullmatch(r"m([0-9a-f]+),([0-9a-f]+)", packet)
        if read:
            address, length = int(read[1], 16), int(read[2], 16)
            for base, data in self.regions:
                if base <= address and address + length <= base + len(data):
                    return data[address - base:address - base + length].hex()
            return "E01"
        return ""

    def serve(self) -> None:
        serve_one_client(self.server, lambda packet: self.answer(packet).encode())

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.server.close()


def test_gdb_loads_image_as_svr4_library_and_unwinds_with_cfi(image_path):
    # State inside add at +4 (after push rbp; mov rbp,rsp), called from main.
    main_rbp = STACK_TOP - 8
    add_rbp = STACK_TOP - 24
    stack = {STACK_TOP - 8: 0, STACK_TOP - 16: RETURN_ADDRESS, STACK_TOP - 24: main_rbp}
    base = STACK_TOP - 64
    memory = bytearray(128)
    for address, value in stack.items():
        memory[address - base:address - base + 8] = struct.pack("<Q", value)
    registers = [0] * 17
    registers[6] = registers[7] = add_rbp  # gdb amd64 order: rax rbx rcx rdx rsi rdi rbp rsp ...
    registers[16] = CODE_ADDRESS + 4
    remote = FakeRemote(str(image_path), registers, [(CODE_ADDRESS, CODE), (base, bytes(memory))])
    try:
        # No exec file: gdb does not auto-load solib symbols on connect, so ask.
        output = run_gdb("set sysroot", f"target remote 127.0.0.1:{remote.port}", "sharedlibrary",
                         "info sharedlibrary", "bt", "info frame", "frame 1", "info registers rbp rsp")
    finally:
        remote.close()
    assert re.search(rf"{CODE_ADDRESS:#018x}\s+{CODE_ADDRESS + len(CODE):#018x}\s+Yes\s+{image_path}",
                     output), output
    assert "#0  add () at x.c:3" in output
    assert f"#1  {RETURN_ADDRESS:#018x} in main () at x.c:8" in output
    assert "#2" not in output  # main's rip is undefined: the outermost frame
    assert f"rbp at {STACK_TOP - 24:#x}, rip at {STACK_TOP - 16:#x}" in output
    assert re.search(rf"rbp\s+{main_rbp:#x}", output) and re.search(rf"rsp\s+{STACK_TOP - 8:#x}", output), output


# ------------------------------------------------------------------ real lldb
def test_lldb_reads_symbols_and_lines(image_path):
    main = SYMBOLS[1]
    commands = ["target create " + str(image_path), "image list", f"image lookup -a {CODE_ADDRESS + 4:#x}",
                f"image lookup -a {main.address + 4:#x}", "image dump line-table x.c",
                "breakpoint set -n main", "disassemble -n add"]
    arguments = ["lldb-22", "-b", "--no-lldbinit"]
    for command in commands:
        arguments += ["-o", command]
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    (note,) = elf_of(image_path.read_bytes()).get_section_by_name(".note.gnu.build-id").iter_notes()
    uuid = note["n_desc"].upper()
    assert uuid[:8] + "-" + uuid[8:12] in output  # lldb prints the build-id as the module UUID
    assert f"{CODE_ADDRESS:#018x} {image_path}" in output
    assert "Summary: sample.so`add + 4 at x.c:3:10" in output
    assert "Summary: sample.so`main + 4 at x.c:8" in output
    assert f"{CODE_ADDRESS + MAIN_OFFSET:#018x}: /src/inc/y.h:10" in output
    assert f"where = sample.so`main + 4 at x.c:8, address = {main.address + 4:#018x}" in output
    assert re.search(rf"\[{CODE_ADDRESS + 1:#x}\] <\+1>:\s+movq\s+%rsp, %rbp", output), output


# ------------------------------------------------------------------ x32 images
X32_ADDRESS = 0x80810010


def x32_image(**overrides) -> bytes:
    from gdbstub.debugimage.elf import ELF32

    shift = X32_ADDRESS - CODE_ADDRESS
    arguments = dict(
        name="x32.wasm", code_address=X32_ADDRESS, code=CODE,
        symbols=[Symbol(s.name, s.address + shift, s.size) for s in SYMBOLS] + [Symbol("counter", 0x400, 4, "object")],
        fdes=[Fde(f.start + shift, f.size, f.rows, undefined_rip=f.undefined_rip) for f in FDES],
        lines=[LineRow(r.address + shift, r.file, r.line, r.column, r.is_stmt) for r in LINES],
        comp_dir="/work/src", elf_class=ELF32, data_range=(0x400, 0x440))
    arguments.update(overrides)
    return build_debug_image(**arguments)


def test_an_x32_image_is_elf32_x86_64_with_4_byte_dwarf_addresses_and_a_data_section():
    elf = ELFFile(io.BytesIO(x32_image()))
    assert (elf.elfclass, elf["e_machine"], elf["e_type"]) == (32, "EM_X86_64", "ET_DYN")
    text, data = elf.get_section_by_name(".text"), elf.get_section_by_name(".wasm_data")
    assert text["sh_addr"] == X32_ADDRESS and text.data() == CODE
    assert (data["sh_type"], data["sh_addr"], data["sh_size"]) == ("SHT_NOBITS", 0x400, 0x40)
    # The data section has no segment: only the code is loaded.
    assert [(s["p_type"], s["p_vaddr"]) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"] == \
        [("PT_LOAD", X32_ADDRESS)]
    symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
    assert symbols["add"]["st_value"] == X32_ADDRESS and symbols["counter"]["st_value"] == 0x400
    assert symbols["counter"]["st_shndx"] == elf.get_section_index(".wasm_data")
    dwarf = elf.get_dwarf_info()
    (unit,) = dwarf.iter_CUs()
    assert unit["address_size"] == 4 and unit.get_top_DIE().attributes["DW_AT_low_pc"].value == X32_ADDRESS
    fdes = [e for e in dwarf.CFI_entries() if isinstance(e, PyelftoolsFDE)]
    assert sorted(f.header["initial_location"] for f in fdes) == [X32_ADDRESS, X32_ADDRESS + MAIN_OFFSET]
    rows = [e.state.address for e in dwarf.line_program_for_CU(unit).get_entries() if e.state]
    assert rows[0] == X32_ADDRESS


def test_an_x32_image_refuses_addresses_above_4_gib():
    from gdbstub.debugimage.elf import ELF32

    with pytest.raises(DebugImageError, match="ELF32 address space"):
        build_debug_image(name="x", code_address=(1 << 32) - 4, code=CODE, symbols=[], fdes=[], elf_class=ELF32)
    with pytest.raises(DebugImageError, match="overlaps the code"):
        x32_image(data_range=(X32_ADDRESS, X32_ADDRESS + 8))


def test_gdb_reads_an_x32_image_as_i386_x64_32_with_4_byte_pointers(tmp_path):
    path = tmp_path / "x32.elf"
    path.write_bytes(x32_image())
    done = subprocess.run(["gdb", "-nx", "-batch", "-ex", "show architecture", "-ex", "p sizeof(void *)",
                           "-ex", "info symbol 0x402", "-ex", f"info line *{X32_ADDRESS + 4:#x}", str(path)],
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert "i386:x64-32" in output and "$1 = 4" in output, output
    assert "counter + 2 in section .wasm_data" in output, output
    assert 'Line 3 of "x.c"' in output, output
