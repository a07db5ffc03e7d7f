"""DWARF sections of a debug image: ``.debug_frame``, ``.debug_line``,
``.debug_info`` and ``.debug_abbrev``.

Fixed-layout headers are construct schemas; the variable parts (LEB128 numbers,
call-frame and line-number programs, DIE attribute values) are appended by small
explicit builders. All output is 32-bit DWARF, little-endian, with 8-byte addresses (ELF64) or
4-byte ones (the x32 ELF32 images), the ``address_size`` argument.

Spec references are to DWARF 5 (dwarfstd.org, 2017) unless noted; the register
numbers are the x86-64 psABI's (System V AMD64 ABI, "DWARF Register Number
Mapping").
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from construct import Bytes, Const, CString, Int8sl, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from .model import CfiRow, DebugImageError, Fde, LineRow

log = logging.getLogger(__name__)

ADDRESS_SIZE = 8

#: x86-64 psABI DWARF register numbers; 16 is the return address column (rip).
DWARF_REGISTERS: dict[str, int] = {
    "rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5, "rbp": 6, "rsp": 7,
    **{f"r{n}": n for n in range(8, 16)},
    "rip": 16,
    # Segment registers (psABI table 3.36, "DWARF Register Number Mapping").
    "es": 50, "cs": 51, "ss": 52, "ds": 53, "fs": 54, "gs": 55,
}
RETURN_ADDRESS_REGISTER = DWARF_REGISTERS["rip"]

# .debug_frame CIE parameters (brief + section 6.4.1): code alignment 1 so
# advance_loc deltas are bytes; data alignment -8 so saved-slot offsets on the
# stack factor to small unsigned numbers.
CODE_ALIGNMENT = 1
DATA_ALIGNMENT = -8
CIE_VERSION = 1  # version 1 (DWARF 2): understood by gdb, lldb and pyelftools alike
# The CIE's initial rules (what `call` leaves): CFA = rsp + 8, return address at CFA-8.
INITIAL_CFA = ("rsp", 8)
INITIAL_RIP_OFFSET = -8


# --------------------------------------------------------------------------- LEB128
def uleb128(value: int) -> bytes:
    """Unsigned LEB128 (section 7.6). ``value`` must be >= 0."""
    if value < 0:
        raise DebugImageError(f"uleb128 of negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb128(value: int) -> bytes:
    """Signed LEB128 (section 7.6)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7  # arithmetic shift: sign-extends
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


def read_uleb128(data, pos: int) -> tuple[int, int]:
    """(unsigned LEB128 value at ``data[pos]``, the position after it);
    IndexError when it runs past the end of ``data`` (bytes or memoryview)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def read_sleb128(data, pos: int) -> tuple[int, int]:
    """(signed LEB128 value at ``data[pos]``, the position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value - (1 << shift) if byte & 0x40 else value), pos


# ---------------------------------------------------------------- constants (sec. 7)
DW_CFA_advance_loc = 0x40
DW_CFA_offset = 0x80
DW_CFA_restore = 0xC0
DW_CFA_nop = 0x00
DW_CFA_advance_loc1 = 0x02
DW_CFA_advance_loc2 = 0x03
DW_CFA_advance_loc4 = 0x04
DW_CFA_undefined = 0x07
DW_CFA_same_value = 0x08
DW_CFA_def_cfa = 0x0C
DW_CFA_def_cfa_register = 0x0D
DW_CFA_def_cfa_offset = 0x0E
DW_CFA_offset_extended_sf = 0x11
DW_CFA_expression = 0x10

DW_LNS_copy = 0x01
DW_LNS_advance_pc = 0x02
DW_LNS_advance_line = 0x03
DW_LNS_set_file = 0x04
DW_LNS_set_column = 0x05
DW_LNS_negate_stmt = 0x06
DW_LNS_set_prologue_end = 0x0A
DW_LNS_set_epilogue_begin = 0x0B
DW_LNE_end_sequence = 0x01
DW_LNE_set_address = 0x02
DW_LNCT_path = 0x1
DW_LNCT_directory_index = 0x2

DW_TAG_compile_unit = 0x11
DW_TAG_subprogram = 0x2E
DW_CHILDREN_no = 0
DW_CHILDREN_yes = 1
DW_AT_name = 0x03
DW_AT_stmt_list = 0x10
DW_AT_low_pc = 0x11
DW_AT_high_pc = 0x12
DW_AT_comp_dir = 0x1B
DW_AT_producer = 0x25
DW_AT_external = 0x3F
DW_AT_frame_base = 0x40
DW_FORM_addr = 0x01
DW_FORM_data4 = 0x06
DW_FORM_string = 0x08
DW_FORM_udata = 0x0F
DW_FORM_sec_offset = 0x17
DW_FORM_exprloc = 0x18
DW_FORM_flag_present = 0x19
DW_OP_call_frame_cfa = 0x9C
DW_UT_compile = 0x01

PRODUCER = "wasm-gdbstub debugimage"

# ------------------------------------------------------------------ construct schemas
#: CIE header up to the augmentation string (section 6.4.1, version 1 layout).
CIE_HEADER = Struct(
    "length" / Int32ul,
    "cie_id" / Const(0xFFFFFFFF, Int32ul),  # .debug_frame CIE id (not .eh_frame's 0)
    "version" / Int8ul,
    "augmentation" / CString("ascii"),
)
#: FDE header (section 6.4.1): CIE pointer is the CIE's offset in .debug_frame.
FDE_HEADER = Struct(
    "length" / Int32ul,
    "cie_pointer" / Int32ul,
    "initial_location" / Int64ul,
    "address_range" / Int64ul,
)
#: The same with 4-byte addresses (x32 images).
FDE_HEADER32 = Struct(
    "length" / Int32ul,
    "cie_pointer" / Int32ul,
    "initial_location" / Int32ul,
    "address_range" / Int32ul,
)


def address_bytes(value: int, address_size: int = ADDRESS_SIZE) -> bytes:
    """A target address as ``address_size`` little-endian bytes (DW_FORM_addr,
    DW_LNE_set_address, DW_OP_addr); DebugImageError if it does not fit."""
    if not 0 <= value < 1 << (8 * address_size):
        raise DebugImageError(f"address {value:#x} does not fit in {address_size} bytes")
    return value.to_bytes(address_size, "little")
#: DWARF 5 line-program header fixed part (section 6.2.4, fields 1-12).
LINE_HEADER = Struct(
    "unit_length" / Int32ul,
    "version" / Int16ul,
    "address_size" / Int8ul,
    "segment_selector_size" / Int8ul,
    "header_length" / Int32ul,
    "minimum_instruction_length" / Int8ul,
    "maximum_operations_per_instruction" / Int8ul,
    "default_is_stmt" / Int8ul,
    "line_base" / Int8sl,
    "line_range" / Int8ul,
    "opcode_base" / Int8ul,
    "standard_opcode_lengths" / Bytes(12),
)
#: Bytes of LINE_HEADER that precede/include the header_length field itself.
_LINE_HEADER_LENGTH_END = 4 + 2 + 1 + 1 + 4
#: DWARF 5 full compilation unit header (section 7.5.1.1).
CU_HEADER = Struct(
    "unit_length" / Int32ul,
    "version" / Int16ul,
    "unit_type" / Int8ul,
    "address_size" / Int8ul,
    "debug_abbrev_offset" / Int32ul,
)


# ------------------------------------------------------------------- .debug_frame
def register_number(name: str) -> int:
    """DWARF number of an x86-64 register name (case-insensitive)."""
    try:
        return DWARF_REGISTERS[name.lower()]
    except KeyError:
        raise DebugImageError(f"unknown register name {name!r}") from None


def _factored_offset(reg: str, offset: int) -> int:
    if offset % DATA_ALIGNMENT:
        raise DebugImageError(f"saved-register offset {offset} of {reg} is not a multiple of 8")
    return offset // DATA_ALIGNMENT


# A register rule while encoding: ("offset", n) | ("same",) | ("undefined",)
# | ("expression", bytes).
_Rule = tuple


def _row_rules(row: CfiRow, undefined_rip: bool, clobbered: tuple[str, ...] = (),
               saved_at: tuple[tuple[str, bytes], ...] = ()) -> dict[int, _Rule]:
    rules: dict[int, _Rule] = {register_number(name): ("undefined",) for name in clobbered}
    rules.update((register_number(name), ("expression", bytes(expr))) for name, expr in saved_at)
    for name, offset in row.saved.items():
        reg = register_number(name)
        if reg == RETURN_ADDRESS_REGISTER and undefined_rip:
            continue
        rules[reg] = ("offset", offset)
    if undefined_rip:
        rules[RETURN_ADDRESS_REGISTER] = ("undefined",)
    else:
        rules.setdefault(RETURN_ADDRESS_REGISTER, ("offset", INITIAL_RIP_OFFSET))
    return rules


def _advance_loc(delta: int) -> bytes:
    # Section 6.4.2.1: the smallest encoding that holds the (factor 1) delta.
    if delta < 0x40:
        return bytes([DW_CFA_advance_loc | delta])
    if delta <= 0xFF:
        return bytes([DW_CFA_advance_loc1, delta])
    if delta <= 0xFFFF:
        return bytes([DW_CFA_advance_loc2]) + delta.to_bytes(2, "little")
    return bytes([DW_CFA_advance_loc4]) + delta.to_bytes(4, "little")


def _rule_instruction(reg: int, name: str, rule: _Rule) -> bytes:
    kind = rule[0]
    if kind == "undefined":
        return bytes([DW_CFA_undefined]) + uleb128(reg)
    if kind == "same":
        return bytes([DW_CFA_same_value]) + uleb128(reg)
    if kind == "expression":
        return bytes([DW_CFA_expression]) + uleb128(reg) + uleb128(len(rule[1])) + rule[1]
    factored = _factored_offset(name, rule[1])
    if factored >= 0 and reg < 0x40:
        return bytes([DW_CFA_offset | reg]) + uleb128(factored)
    return bytes([DW_CFA_offset_extended_sf]) + uleb128(reg) + sleb128(factored)


def _cie_initial_instructions() -> bytes:
    cfa_reg, cfa_offset = INITIAL_CFA
    return (
        bytes([DW_CFA_def_cfa]) + uleb128(register_number(cfa_reg)) + uleb128(cfa_offset)
        + _rule_instruction(RETURN_ADDRESS_REGISTER, "rip", ("offset", INITIAL_RIP_OFFSET))
    )


def _validate_fde(fde: Fde) -> None:
    if fde.size <= 0:
        raise DebugImageError(f"FDE at {fde.start:#x} has size {fde.size}")
    if not fde.rows or fde.rows[0].offset != 0:
        raise DebugImageError(f"FDE at {fde.start:#x}: the first row must have offset 0")
    previous = -1
    for row in fde.rows:
        if row.offset <= previous or row.offset >= fde.size:
            raise DebugImageError(
                f"FDE at {fde.start:#x}: row offset {row.offset} is not increasing inside [0, {fde.size})")
        if row.cfa_offset < 0:
            raise DebugImageError(f"FDE at {fde.start:#x}: negative CFA offset {row.cfa_offset}")
        previous = row.offset


def fde_instructions(fde: Fde) -> bytes:
    """The call-frame program of one FDE: the difference of each row from the one
    before, starting from the CIE's initial rules."""
    _validate_fde(fde)
    names = {number: name for name, number in DWARF_REGISTERS.items()}
    out = bytearray()
    cfa = (register_number(INITIAL_CFA[0]), INITIAL_CFA[1])
    # Registers absent from this map have the default ("same value") rule.
    current: dict[int, _Rule] = {RETURN_ADDRESS_REGISTER: ("offset", INITIAL_RIP_OFFSET)}
    location = 0
    for row in fde.rows:
        if row.offset != location:
            out += _advance_loc(row.offset - location)
            location = row.offset
        new_cfa = (register_number(row.cfa_reg), row.cfa_offset)
        if new_cfa != cfa:
            if new_cfa[1] == cfa[1]:
                out += bytes([DW_CFA_def_cfa_register]) + uleb128(new_cfa[0])
            elif new_cfa[0] == cfa[0]:
                out += bytes([DW_CFA_def_cfa_offset]) + uleb128(new_cfa[1])
            else:
                out += bytes([DW_CFA_def_cfa]) + uleb128(new_cfa[0]) + uleb128(new_cfa[1])
            cfa = new_cfa
        wanted = _row_rules(row, fde.undefined_rip, fde.clobbered, fde.saved_at)
        for reg in sorted(set(current) | set(wanted)):
            rule = wanted.get(reg, ("same",))
            if current.get(reg, ("same",)) != rule:
                out += _rule_instruction(reg, names[reg], rule)
        current = wanted
    return bytes(out)


def build_debug_frame(fdes: list[Fde], address_size: int = ADDRESS_SIZE) -> bytes:
    """``.debug_frame``: one CIE at offset 0, then one FDE per ``fdes`` entry in
    the given order. Entries are padded with DW_CFA_nop to the address size
    (section 6.4.1: "length ... must be an integral multiple of the address size")."""
    out = bytearray()
    body = bytearray(
        CIE_HEADER.build(dict(length=0, version=CIE_VERSION, augmentation=""))[4:])
    body += uleb128(CODE_ALIGNMENT) + sleb128(DATA_ALIGNMENT) + bytes([RETURN_ADDRESS_REGISTER])
    body += _cie_initial_instructions()
    while (len(body) + 4) % address_size:
        body.append(DW_CFA_nop)
    fde_header = FDE_HEADER if address_size == 8 else FDE_HEADER32
    out += Int32ul.build(len(body)) + body
    cie_offset = 0
    programs: dict[tuple, bytes] = {}  # a module's functions share a handful of frame shapes
    header_len = fde_header.sizeof()  # construct's sizeof walks the struct: once, not per FDE
    for fde in fdes:
        key = (fde.rows, fde.undefined_rip, fde.clobbered, fde.saved_at)
        program = programs.get(key)
        if program is None:
            program = programs[key] = fde_instructions(fde)
        else:
            _validate_fde(fde)
        program = bytearray(program)
        while (header_len + len(program)) % address_size:
            program.append(DW_CFA_nop)
        address_bytes(fde.start + fde.size - 1, address_size)  # checks that the range fits
        out += fde_header.build(dict(
            length=header_len - 4 + len(program), cie_pointer=cie_offset,
            initial_location=fde.start, address_range=fde.size))
        out += program
    return bytes(out)


# -------------------------------------------------------------------- .debug_line
# Line-program parameters (section 6.2.4). Only standard opcodes are emitted, so
# line_base/line_range merely have to be valid; these are the common defaults.
LINE_BASE = -5
LINE_RANGE = 14
OPCODE_BASE = 13
STANDARD_OPCODE_LENGTHS = bytes([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1])


@dataclass(frozen=True)
class LineFiles:
    """The file and directory tables of a line program. DWARF 5 (section 6.2.4.1):
    directory 0 is the compilation directory and file 0 the primary source file;
    rows refer to files 1.. (file 1 repeats file 0, as GCC does, so consumers
    that predate DWARF 5's file 0 still resolve every row)."""

    directories: tuple[str, ...]
    files: tuple[tuple[str, int], ...]  # (base name, directory index)
    index: dict[str, int]  # LineRow.file -> file index used by rows

    @property
    def primary(self) -> str:
        return next(iter(self.index))


def line_files(lines: list[LineRow], comp_dir: str) -> LineFiles:
    """Split each distinct ``LineRow.file`` (in first-use order) into a directory
    entry and a base name; files with no directory part use directory 0."""
    directories: list[str] = [comp_dir]
    files: list[tuple[str, int]] = []
    index: dict[str, int] = {}
    for row in lines:
        if row.file in index:
            continue
        if not row.file or "\0" in row.file:
            raise DebugImageError(f"bad file name {row.file!r} in line row at {row.address:#x}")
        entry = _file_entry(row.file, directories)
        if not files:
            files.append(entry)  # file 0: the primary source file
        files.append(entry)
        index[row.file] = len(files) - 1
    return LineFiles(tuple(directories), tuple(files), index)


def numbered_line_files(paths: list[str], comp_dir: str) -> LineFiles:
    """A file table whose file ``k`` is ``paths[k]`` (so a unit's existing
    DW_AT_decl_file numbers stay valid); a path listed twice is indexed by its
    first number other than 0 (rows then avoid DWARF 5's file 0, which older
    consumers do not know)."""
    directories: list[str] = [comp_dir]
    files: list[tuple[str, int]] = []
    index: dict[str, int] = {}
    for number, path in enumerate(paths):
        if not path or "\0" in path:
            raise DebugImageError(f"bad file name {path!r} for file {number}")
        files.append(_file_entry(path, directories))
        if index.get(path, 0) == 0:
            index[path] = number
    return LineFiles(tuple(directories), tuple(files), index)


def _file_entry(path: str, directories: list[str]) -> tuple[str, int]:
    """(base name, directory index) of ``path``, adding its directory to
    ``directories`` (entry 0 is the compilation directory) when new."""
    directory, base = posixpath.split(path)
    if not directory:
        return base, 0
    if directory not in directories[1:]:
        directories.append(directory)
    return base, directories.index(directory, 1)


def build_debug_line(lines: list[LineRow], files: LineFiles, end_address: int,
                     address_size: int = ADDRESS_SIZE) -> bytes:
    """A DWARF 5 line program with one sequence: the rows in order, then an
    end_sequence at ``end_address`` (one past the last code byte). Rows must be
    sorted by address (equal addresses allowed)."""
    out_program = bytearray()
    state = dict(address=None, file=1, line=1, column=0, is_stmt=True)
    for row in lines:
        if state["address"] is None:
            out_program += bytes([0]) + uleb128(1 + address_size) + bytes([DW_LNE_set_address])
            out_program += address_bytes(row.address, address_size)
        elif row.address != state["address"]:
            out_program += bytes([DW_LNS_advance_pc]) + uleb128(row.address - state["address"])
        state["address"] = row.address
        file_index = files.index[row.file]
        if file_index != state["file"]:
            out_program += bytes([DW_LNS_set_file]) + uleb128(file_index)
            state["file"] = file_index
        if row.line != state["line"]:
            out_program += bytes([DW_LNS_advance_line]) + sleb128(row.line - state["line"])
            state["line"] = row.line
        if row.column != state["column"]:
            out_program += bytes([DW_LNS_set_column]) + uleb128(row.column)
            state["column"] = row.column
        if row.is_stmt != state["is_stmt"]:
            out_program += bytes([DW_LNS_negate_stmt])
            state["is_stmt"] = row.is_stmt
        if row.prologue_end:
            # Applies to this row only: DW_LNS_copy clears the flag (section 6.2.5.2).
            out_program.append(DW_LNS_set_prologue_end)
        if row.epilogue_begin:
            out_program.append(DW_LNS_set_epilogue_begin)  # cleared by DW_LNS_copy too
        out_program.append(DW_LNS_copy)
    if state["address"] is None:
        raise DebugImageError("a line program needs at least one row")
    out_program += bytes([DW_LNS_advance_pc]) + uleb128(end_address - state["address"])
    out_program += bytes([0, 1, DW_LNE_end_sequence])

    tables = bytearray()
    # directory_entry_format: (DW_LNCT_path, DW_FORM_string)
    tables += bytes([1]) + uleb128(DW_LNCT_path) + uleb128(DW_FORM_string)
    tables += uleb128(len(files.directories))
    for directory in files.directories:
        tables += directory.encode() + b"\0"
    # file_name_entry_format: (DW_LNCT_path, DW_FORM_string), (DW_LNCT_directory_index, DW_FORM_udata)
    tables += bytes([2]) + uleb128(DW_LNCT_path) + uleb128(DW_FORM_string)
    tables += uleb128(DW_LNCT_directory_index) + uleb128(DW_FORM_udata)
    tables += uleb128(len(files.files))
    for base, dir_index in files.files:
        tables += base.encode() + b"\0" + uleb128(dir_index)

    fixed_size = LINE_HEADER.sizeof()
    fixed = LINE_HEADER.build(dict(
        unit_length=fixed_size - 4 + len(tables) + len(out_program), version=5,
        address_size=address_size, segment_selector_size=0,
        header_length=fixed_size - _LINE_HEADER_LENGTH_END + len(tables),
        minimum_instruction_length=1, maximum_operations_per_instruction=1,
        default_is_stmt=1, line_base=LINE_BASE, line_range=LINE_RANGE, opcode_base=OPCODE_BASE,
        standard_opcode_lengths=STANDARD_OPCODE_LENGTHS))
    return fixed + bytes(tables) + bytes(out_program)


# --------------------------------------------------------- .debug_info/.debug_abbrev
_ABBREV_CU = 1
_ABBREV_SUBPROGRAM = 2
_ABBREVS = (
    (_ABBREV_CU, DW_TAG_compile_unit, DW_CHILDREN_yes, (
        (DW_AT_producer, DW_FORM_string), (DW_AT_name, DW_FORM_string),
        (DW_AT_comp_dir, DW_FORM_string), (DW_AT_low_pc, DW_FORM_addr),
        (DW_AT_high_pc, DW_FORM_data4), (DW_AT_stmt_list, DW_FORM_sec_offset))),
    (_ABBREV_SUBPROGRAM, DW_TAG_subprogram, DW_CHILDREN_no, (
        (DW_AT_name, DW_FORM_string), (DW_AT_external, DW_FORM_flag_present),
        (DW_AT_low_pc, DW_FORM_addr), (DW_AT_high_pc, DW_FORM_data4),
        (DW_AT_frame_base, DW_FORM_exprloc))),
)


def build_debug_abbrev() -> bytes:
    """``.debug_abbrev`` for :func:`build_debug_info` (section 7.5.3)."""
    out = bytearray()
    for code, tag, children, attributes in _ABBREVS:
        out += uleb128(code) + uleb128(tag) + bytes([children])
        for attribute, form in attributes:
            out += uleb128(attribute) + uleb128(form)
        out += b"\0\0"
    out += b"\0"
    return bytes(out)


def _cstring(text: str) -> bytes:
    if "\0" in text:
        raise DebugImageError(f"string {text!r} contains NUL")
    return text.encode() + b"\0"


def build_debug_info(*, cu_name: str, comp_dir: str, low_pc: int, size: int,
                     functions: list[tuple[str, int, int]], producer: str = PRODUCER,
                     address_size: int = ADDRESS_SIZE) -> bytes:
    """One DWARF 5 compile unit covering ``[low_pc, low_pc + size)`` with its line
    program at ``.debug_line`` offset 0, and one DW_TAG_subprogram per
    ``(name, address, size)`` whose frame base is DW_OP_call_frame_cfa (so the
    frame base is defined by ``.debug_frame``, section 3.3.5). ``producer`` is
    the DW_AT_producer string."""
    body = bytearray()
    body += uleb128(_ABBREV_CU)
    body += _cstring(producer) + _cstring(cu_name) + _cstring(comp_dir)
    body += address_bytes(low_pc, address_size) + Int32ul.build(size) + Int32ul.build(0)
    for name, address, length in functions:
        body += uleb128(_ABBREV_SUBPROGRAM) + _cstring(name)
        body += address_bytes(address, address_size) + Int32ul.build(length)
        body += uleb128(1) + bytes([DW_OP_call_frame_cfa])
    body += b"\0"  # end of the CU's children
    header = CU_HEADER.build(dict(
        unit_length=CU_HEADER.sizeof() - 4 + len(body), version=5, unit_type=DW_UT_compile,
        address_size=address_size, debug_abbrev_offset=0))
    return header + bytes(body)
