"""Source lines of a guest module, mapped onto its native code.

A module built with ``clang --target=wasm32 -g`` carries DWARF in custom
sections (``.debug_line``, ``.debug_info``, ...). Its code addresses are byte
offsets from the start of the code section's payload (LLVM's wasm convention;
the WebAssembly tool-conventions "Debugging" page), so a row's module file
offset is ``ModuleInfo.code_section_offset + address``: the first row of a
function sits at the function's locals vector (``FunctionBody.locals_offset``),
later ones at instruction bytes.

The compiler records, per function, sequence points pairing a wasm offset with
a native offset (codemem.frametable). A statement row (``is_stmt``) becomes a
:class:`LineRow` at the INSTRUCTION point whose ``wasm_offset`` equals the
row's module offset, or, when there is none (the locals vector, an instruction
the compiler emits no point for), the next INSTRUCTION point of the same
function; the table is shaped like a native compiler's (docs/debug-images.md):
rows that are not statement starts add none, and a row of the same line as the
one before it is merged into it (every row boundary ends a debugger's step
range). Plus, per function:

* its first byte (``push rbp; mov rbp, rsp``, then the ENTRY site, before
  the native prologue; codemem.abi "Function layout") carries the function's
  first line, so ``break FUNC`` and a pc stopped at the entry have a line;
* a row at a ``loop`` instruction goes to the next point (:func:`is_loop_entry`);
* the guest's ``prologue_end`` flag is kept: gdb 13 places ``break FUNC`` at
  the first row so flagged (symtab.c ``skip_prologue_using_linetable``), which
  is after both the native and the wasm-level prologue;
* ``epilogue_begin`` at the function's final ``end`` (the native epilogue
  follows it), on a row that is not a statement start;
* a line-0 row ("no source line", DWARF 5 section 6.2.2) at the function's
  native end, so the code between functions (jump tables, veneers) is never
  attributed to the last line of the function before it.

Only :func:`image_lines` is meant for callers that must not fail: it turns
every parse problem into a warning and no lines.
"""
from __future__ import annotations

import bisect
import dataclasses
import io
import logging
import posixpath
import struct
from dataclasses import dataclass
from typing import NamedTuple

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct.core import ConstructError
from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DWARFInfo, DwarfConfig

from codemem.frametable import FrameTable, SequencePointKind

from .debugimage import LineRow
from .debugimage.dwarf import PRODUCER as DEFAULT_PRODUCER
from .debugimage.dwarf import read_sleb128, read_uleb128

log = logging.getLogger(__name__)

__all__ = ["GuestLineRow", "GuestLineTable", "GuestLinesError", "ImageLines", "LineMapper", "PYELFTOOLS_ERRORS", "cu_line_rows",
           "guest_dwarf_info", "image_lines", "image_producer", "map_guest_lines", "read_guest_line_table"]

# pyelftools' DWARFInfo takes one descriptor per section it knows; these are
# the keyword names, each the section name without its leading dot.
_DWARF_SECTIONS = (
    "debug_info", "debug_aranges", "debug_abbrev", "debug_frame", "eh_frame", "debug_str",
    "debug_loc", "debug_ranges", "debug_line", "debug_pubtypes", "debug_pubnames", "debug_addr",
    "debug_str_offsets", "debug_line_str", "debug_loclists", "debug_rnglists", "debug_sup",
    "gnu_debugaltlink", "debug_types",
)


# What pyelftools raises on malformed sections. Besides its own types it does
# not validate what it indexes: fuzzing the examples' sections (truncations,
# byte flips, random bytes) gave KeyError (unknown form/abbrev codes),
# AssertionError, TypeError, IndexError, ZeroDivisionError (line_range 0) and
# struct/construct errors. They are caught only around the parse (``_read``),
# never around the mapping.
PYELFTOOLS_ERRORS = (DWARFError, ELFError, ConstructError, KeyError, IndexError, AssertionError,
                      TypeError, ValueError, ArithmeticError, struct.error, EOFError)


class GuestLinesError(Exception):
    """The module's DWARF cannot be read as a line table (the message says where)."""


class GuestLineRow(NamedTuple):
    """One row of the guest's line program. ``module_offset`` is a file offset
    in the .wasm; ``file`` a path relative to the table's ``comp_dir`` (or
    absolute).  (A tuple: a real-size module has a hundred thousand rows.)"""

    module_offset: int
    file: str
    line: int
    column: int
    is_stmt: bool
    prologue_end: bool
    end_sequence: bool
    epilogue_begin: bool = False


@dataclass(frozen=True)
class GuestLineTable:
    """Every row of every compile unit, in line-program order; ``comp_dir`` is
    the first unit's compilation directory (``"."`` for the examples),
    ``producer`` its DW_AT_producer (``""`` if none)."""

    comp_dir: str
    rows: tuple[GuestLineRow, ...]
    producer: str = ""


@dataclass(frozen=True)
class ImageLines:
    """What a debug image needs to describe source lines (see
    ``gdbstub.debugimage.build_debug_image``): no ``rows`` means no lines."""

    rows: list[LineRow]
    comp_dir: str = "/"
    producer: str = DEFAULT_PRODUCER


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or "\0" in value:
        raise GuestLinesError(f"bad DWARF string {value!r}")
    return value


def _join(*parts: str) -> str:
    """posixpath.join minus empty parts, with a leading ``./`` dropped (gdb
    resolves a relative name against the compilation directory either way)."""
    path = posixpath.join(*[p for p in parts if p]) if any(parts) else ""
    while path.startswith("./"):
        path = path[2:]
    return path


def guest_dwarf_info(sections: dict[str, bytes]) -> DWARFInfo:
    descriptors = {}
    for name in _DWARF_SECTIONS:
        data = sections.get("." + name)
        descriptors[name + "_sec"] = (None if data is None else
                                      DebugSectionDescriptor(io.BytesIO(data), "." + name, None, len(data), 0))
    # wasm32 DWARF: little-endian, 4-byte addresses (LLVM's wasm32 target).
    return DWARFInfo(config=DwarfConfig(little_endian=True, machine_arch="wasm32", default_address_size=4),
                     **descriptors)


def _file_paths(program, comp_dir: str, image_comp_dir: str) -> dict[int, str]:
    """File number -> path relative to ``image_comp_dir`` (or absolute).

    DWARF 4 (section 6.2.4 items 11-12): files are numbered from 1 and
    directory 0 is the compilation directory, directories 1.. the
    include_directories. DWARF 5 (section 6.2.4.1): both tables start at 0 and
    entry 0 of each repeats the compilation directory / primary file."""
    header = program.header
    version = header["version"]
    directories = [_text(d) for d in header.get("include_directory") or ()]
    paths = {}
    for k, entry in enumerate(header.get("file_entry") or ()):
        name = _text(entry.get("name"))
        # DWARF 5 file entries have only the fields their format lists.
        dir_index = entry.get("dir_index", 0)
        if version >= 5:
            number = k
            directory = "" if dir_index == 0 else _lookup(directories, dir_index)
        else:
            number = k + 1
            directory = "" if dir_index == 0 else _lookup(directories, dir_index - 1)
        path = _join(directory, name)
        if comp_dir != image_comp_dir and not posixpath.isabs(path):
            path = _join(comp_dir, path)
        if not path:
            raise GuestLinesError(f"line-table file {number} has an empty name")
        paths[number] = path
    return paths


def _lookup(directories: list[str], index: int) -> str:
    if not 0 <= index < len(directories):
        raise GuestLinesError(f"line-table directory index {index} out of range ({len(directories)} entries)")
    return directories[index]


# Standard and extended opcodes of a line-number program (DWARF 5 sections
# 6.2.5.2 and 6.2.5.3; the same numbers in DWARF 2-4).
_DW_LNS_COPY, _DW_LNS_ADVANCE_PC, _DW_LNS_ADVANCE_LINE, _DW_LNS_SET_FILE = 1, 2, 3, 4
_DW_LNS_SET_COLUMN, _DW_LNS_NEGATE_STMT, _DW_LNS_SET_BASIC_BLOCK, _DW_LNS_CONST_ADD_PC = 5, 6, 7, 8
_DW_LNS_FIXED_ADVANCE_PC, _DW_LNS_SET_PROLOGUE_END, _DW_LNS_SET_EPILOGUE_BEGIN = 9, 10, 11
_DW_LNE_END_SEQUENCE, _DW_LNE_SET_ADDRESS = 1, 2


def decode_line_program(section: bytes, program) -> list[tuple]:
    """The rows of one line-number program: ``(address, file, line, column,
    is_stmt, prologue_end, epilogue_begin, end_sequence)`` tuples, in program
    order (DWARF 5 section 6.2.5, the state machine of section 6.2.2).

    ``program`` is pyelftools' LineProgram, for its parsed header and the
    program's byte range in ``section``; the opcodes are decoded here, in one
    loop, since pyelftools builds several objects per row (seconds for a
    real-size module).  ``maximum_operations_per_instruction`` is taken as 1
    (VLIW op indexes: not for wasm or x86).  Raises GuestLinesError for a
    program that runs past its end or uses a bad opcode length."""
    header = program.header
    data = memoryview(section)[:program.program_end_offset]
    at = program.program_start_offset
    end = program.program_end_offset
    min_length = header["minimum_instruction_length"]
    default_is_stmt = bool(header["default_is_stmt"])
    line_base, line_range = header["line_base"], header["line_range"]
    opcode_base = header["opcode_base"]
    lengths = list(header["standard_opcode_lengths"])
    if line_range == 0:
        raise GuestLinesError("line-table header: line_range is 0")
    rows: list[tuple] = []
    append = rows.append

    def uleb() -> int:
        nonlocal at
        value, at = read_uleb128(data, at)
        return value

    def sleb() -> int:
        nonlocal at
        value, at = read_sleb128(data, at)
        return value

    address, file, line, column = 0, 1, 1, 0
    is_stmt, prologue_end, epilogue_begin = default_is_stmt, False, False
    try:
        while at < end:
            opcode = data[at]
            at += 1
            if opcode >= opcode_base:  # special opcode (section 6.2.5.1)
                adjusted = opcode - opcode_base
                address += (adjusted // line_range) * min_length
                line += line_base + adjusted % line_range
                append((address, file, line, column, is_stmt, prologue_end, epilogue_begin, False))
                prologue_end = epilogue_begin = False
            elif opcode == _DW_LNS_COPY:
                append((address, file, line, column, is_stmt, prologue_end, epilogue_begin, False))
                prologue_end = epilogue_begin = False
            elif opcode == _DW_LNS_ADVANCE_PC:
                address += uleb() * min_length
            elif opcode == _DW_LNS_ADVANCE_LINE:
                line += sleb()
            elif opcode == _DW_LNS_SET_FILE:
                file = uleb()
            elif opcode == _DW_LNS_SET_COLUMN:
                column = uleb()
            elif opcode == _DW_LNS_NEGATE_STMT:
                is_stmt = not is_stmt
            elif opcode == _DW_LNS_CONST_ADD_PC:
                address += ((255 - opcode_base) // line_range) * min_length
            elif opcode == _DW_LNS_FIXED_ADVANCE_PC:
                address += int.from_bytes(data[at:at + 2], "little")
                at += 2
            elif opcode == _DW_LNS_SET_PROLOGUE_END:
                prologue_end = True
            elif opcode == _DW_LNS_SET_EPILOGUE_BEGIN:
                epilogue_begin = True
            elif opcode == 0:  # extended opcode: 0, ULEB length, sub-opcode, operands
                length = uleb()
                following = at + length
                if length == 0 or following > end:
                    raise GuestLinesError(f"line program: extended opcode of length {length} at {at:#x}")
                sub = data[at]
                if sub == _DW_LNE_END_SEQUENCE:
                    append((address, file, line, column, is_stmt, prologue_end, epilogue_begin, True))
                    address, file, line, column = 0, 1, 1, 0
                    is_stmt, prologue_end, epilogue_begin = default_is_stmt, False, False
                elif sub == _DW_LNE_SET_ADDRESS:
                    address = int.from_bytes(data[at + 1:following], "little")
                at = following  # DW_LNE_define_file, vendor extensions: skipped by their length
            elif opcode == _DW_LNS_SET_BASIC_BLOCK:
                pass
            else:  # a standard opcode this decoder does not know: skip its ULEB operands
                for _ in range(lengths[opcode - 1]):
                    uleb()
    except IndexError:
        raise GuestLinesError(f"line program runs past its end (at {at:#x})") from None
    if at != end:
        raise GuestLinesError(f"line program overruns its end ({at:#x} > {end:#x})")
    return rows


def read_guest_line_table(info) -> GuestLineTable | None:
    """The line table of a decoded module (``codemem.wasm.module.ModuleInfo``),
    or None when it has no ``.debug_line``/``.debug_info`` or no code section.

    Raises GuestLinesError when the DWARF is malformed (including what
    pyelftools reports)."""
    sections = getattr(info, "dwarf", None) or {}
    code_offset = getattr(info, "code_section_offset", None)
    if ".debug_line" not in sections or ".debug_info" not in sections or code_offset is None:
        return None
    try:
        return _read(sections, code_offset)
    except PYELFTOOLS_ERRORS as e:
        raise GuestLinesError(f"malformed DWARF ({type(e).__name__}: {e})") from e


def _read(sections: dict[str, bytes], code_offset: int) -> GuestLineTable:
    dwarf = guest_dwarf_info(sections)
    image_comp_dir = None
    producer = None
    rows = []
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        attribute = top.attributes.get("DW_AT_comp_dir")
        comp_dir = _text(attribute.value) if attribute is not None else "."
        if image_comp_dir is None:
            image_comp_dir = comp_dir
        if producer is None:
            attribute = top.attributes.get("DW_AT_producer")
            producer = _text(attribute.value) if attribute is not None else ""
        rows += cu_line_rows(dwarf, cu, code_offset, image_comp_dir)[1]
    return GuestLineTable(image_comp_dir or ".", tuple(rows), producer or "")


def cu_line_rows(dwarf: DWARFInfo, cu, code_offset: int, image_comp_dir: str | None = None
                 ) -> tuple[dict[int, str], list[GuestLineRow]]:
    """(file number -> path, rows) of one compile unit's line program; paths
    are relative to ``image_comp_dir`` (default: the unit's own comp_dir) or
    absolute. No program: ``({}, [])``. Raises GuestLinesError (and what
    pyelftools raises, for the caller's guard) on malformed input."""
    top = cu.get_top_DIE()
    attribute = top.attributes.get("DW_AT_comp_dir")
    comp_dir = _text(attribute.value) if attribute is not None else "."
    program = dwarf.line_program_for_CU(cu)
    if program is None:
        return {}, []
    paths = _file_paths(program, comp_dir, image_comp_dir if image_comp_dir is not None else comp_dir)
    rows = []
    section = program.stream.getbuffer()  # the .debug_line bytes, not copied
    for (address, file, line, column, is_stmt, prologue_end, epilogue_begin,
         end_sequence) in decode_line_program(section, program):
        path = paths.get(file)
        if path is None:
            raise GuestLinesError(f"line-table row at {address:#x} names file {file}, "
                                  f"which the header does not list")
        if line < 0 or column < 0:
            # build_debug_image rejects them; a debugger would too.
            raise GuestLinesError(f"line-table row at {address:#x}: line {line}, column {column}")
        rows.append(GuestLineRow(code_offset + address, path, line, column, is_stmt, prologue_end,
                                 end_sequence, epilogue_begin))
    return paths, rows


def map_guest_lines(table: GuestLineTable, info, frame_table: FrameTable, code_address: int) -> list[LineRow]:
    """LineRows (absolute addresses, ascending) of the native code at
    ``code_address`` compiled from ``info`` (see the module docstring for the
    rules). Rows outside every compiled function are dropped."""
    return LineMapper(info, frame_table).map(table.rows, code_address)


class LineMapper:
    """The mapping of guest code offsets onto one module's sequence points,
    built once and used for many row sets (one per compile unit): functions
    are found by bisection and a function's points are read only when a row
    lands in it."""

    def __init__(self, info, frame_table: FrameTable):
        self.info = info
        self.frame_table = frame_table
        bodies = {body.body_offset: body for body in info.codes}
        functions = []
        for func in frame_table.functions():
            body = bodies.get(func.body_wasm_offset)
            if body is not None:
                functions.append((body.locals_offset, body.end_offset, func))
        functions.sort(key=lambda f: f[0])
        self.functions = functions
        self.starts = [f[0] for f in functions]
        self._points: dict[int, list[tuple[int, int]]] = {}

    def function_at(self, module_offset: int):
        """(wasm start, wasm end, FunctionInfo) of the body holding ``module_offset``, or None."""
        k = bisect.bisect_right(self.starts, module_offset) - 1
        if k < 0 or module_offset >= self.functions[k][1]:
            return None
        return self.functions[k]

    def points(self, func) -> list[tuple[int, int]]:
        """(wasm offset, native offset) of ``func``'s INSTRUCTION points but
        loop entries (:func:`is_loop_entry`), sorted by wasm offset."""
        points = self._points.get(func.position)
        if points is None:
            instruction = SequencePointKind.INSTRUCTION
            points = self._points[func.position] = sorted(
                (wasm, native) for native, wasm, kind in self.frame_table.point_offsets(func)
                if kind is instruction and not is_loop_entry(self.info, wasm))
        return points

    def map(self, guest_rows, code_address: int) -> list[LineRow]:
        """LineRows of ``guest_rows`` at ``code_address`` + image offsets,
        shaped like a native compiler's table (module docstring): a row per
        statement start, adjacent rows of one line merged, ``prologue_end``
        kept, ``epilogue_begin`` where the native epilogue starts."""
        placed: dict[int, dict[int, GuestLineRow]] = {}  # function position -> native offset -> row
        first_rows: dict[int, GuestLineRow] = {}
        funcs = {}
        for row in guest_rows:
            # A row that is not a statement start (clang marks the later pieces
            # of an expression so) begins no range a debugger stops at: its code
            # stays with the statement before it, as in a native compiler's table.
            if row.end_sequence or not row.is_stmt:
                continue
            found = self.function_at(row.module_offset)
            if found is None:
                continue
            func = found[2]
            funcs[func.position] = func
            first = first_rows.get(func.position)
            if first is None or row.module_offset < first.module_offset:
                first_rows[func.position] = row
            points = self.points(func)
            at = bisect.bisect_left(points, (row.module_offset, -1))
            if at == len(points):
                continue
            # Several rows can land on one point (no point between them): the last
            # one in program order is the row whose range holds the point's
            # instruction, so it wins.
            placed.setdefault(func.position, {})[points[at][1]] = row

        entries = {funcs[position].native_start for position, rows in placed.items() if rows}
        lines: list[LineRow] = []
        for position in sorted(placed, key=lambda k: funcs[k].native_start):
            func = funcs[position]
            rows = placed[position]
            first = first_rows.get(position)
            if not rows or first is None:
                continue
            function_lines: list[LineRow] = []
            if func.native_start not in rows:
                function_lines.append(LineRow(code_address + func.native_start, first.file, first.line,
                                              first.column))
            for native_offset in sorted(rows):
                row = rows[native_offset]
                line = LineRow(code_address + native_offset, row.file, row.line, row.column,
                               prologue_end=row.prologue_end)
                # A row of the line before it adds nothing but splits that line's
                # range in two, and every range boundary costs a debugger's `next`
                # one more range step (gdb: a vCont;r per range); gdb's prologue
                # analysis (symtab.c skip_prologue_using_sal) would also take the
                # split point for the end of the prologue.  The prologue_end row
                # stays: it is where `break FUNC` goes.
                if function_lines and not line.prologue_end and _same_line(function_lines[-1], line):
                    continue
                function_lines.append(line)
            _mark_epilogue(function_lines, code_address + self.final_end(func))
            lines += function_lines
            if func.native_end not in entries:
                lines.append(LineRow(code_address + func.native_end, rows[max(rows)].file, 0))
        code_end = code_address + self.frame_table.header.code_size
        return [row for row in lines if row.address < code_end]

    def final_end(self, func) -> int:
        """Image offset of ``func``'s last INSTRUCTION point: its final ``end``,
        which the native epilogue follows."""
        offsets = self.frame_table.sequence_point_column(func, 0)
        kinds = self.frame_table.sequence_point_column(func, 8, "<B")
        return next((offsets[k] for k in range(len(offsets) - 1, -1, -1)
                     if kinds[k] == SequencePointKind.INSTRUCTION), func.native_start)


#: The ``loop`` opcode (wasm spec 5.4.1).
LOOP_OPCODE = 0x03


def is_loop_entry(info, module_offset: int) -> bool:
    """Whether the instruction at ``module_offset`` is a ``loop``. Its sequence
    point runs once, on entry: a branch to the loop continues after it (wasm
    spec 4.4.8, the loop's label is its start, i.e. its first body
    instruction), so a row or a range starting at a ``loop`` is placed at the
    next instruction, which every iteration runs, as a breakpoint on a loop's
    first line is hit natively."""
    data = getattr(info, "data", b"")
    return 0 <= module_offset < len(data) and data[module_offset] == LOOP_OPCODE


def _same_line(a: LineRow, b: LineRow) -> bool:
    return (a.file, a.line) == (b.file, b.line)


def _mark_epilogue(function_lines: list[LineRow], epilogue: int) -> None:
    """Flags ``epilogue_begin`` (DWARF 5 section 6.2.2) at ``epilogue``, the
    function's last INSTRUCTION point (its final ``end``: the native epilogue,
    results out, frame torn down, ``ret``, follows it).  On a row that starts
    there; else a row is added there, of the line whose range holds it and not
    a statement start, so that it ends no line for a debugger's stepping but
    its own (gdb steps through it to the caller as through the rest of the
    line)."""
    k = bisect.bisect_right([row.address for row in function_lines], epilogue) - 1
    if k < 0:
        return
    covering = function_lines[k]
    if covering.address == epilogue:
        function_lines[k] = dataclasses.replace(covering, epilogue_begin=True)
    else:
        function_lines.insert(k + 1, LineRow(epilogue, covering.file, covering.line, covering.column,
                                             is_stmt=False, epilogue_begin=True))


#: The GNU producer a compile unit without location lists is named by
#: (image_producer): gdb 13 takes any "GNU " producer of GCC >= 4.5 for one.
GNU_PRODUCER = "GNU C17 12.2.0 -mtune=generic -g -O0"


def image_producer(guest_producer: str, *, has_location_lists: bool = False) -> str:
    """DW_AT_producer of a compile unit of an image whose lines (and
    variables) come from a guest compiled by ``guest_producer``.

    A unit WITHOUT location lists is named a GCC >= 4.5 unit
    (:data:`GNU_PRODUCER`, the guest's producer kept in parentheses): gdb 13
    then sets the unit's ``epilogue_unwind_valid`` (dwarf2/read.c
    process_full_comp_unit) and skips its epilogue unwinders' two ``m PC,1``
    reads at every stop, which were half of the packets of a ``next``
    (docs/stepping.md).  Its prologues are found by amd64_analyze_prologue,
    which recognises the ``push rbp; mov rbp, rsp`` every function starts
    with (codemem.abi "Function layout") and returns the ENTRY site after
    them; ``break FUNC`` then moves to the next line-table row (symtab.c
    skip_prologue_sal, mid-line), as for gcc code.

    A unit WITH location lists keeps a ``clang version`` producer: for a GCC
    unit with any location list gdb also sets ``locations_valid``, and then
    puts ``break FUNC`` at the function's first byte instead of after its
    prologue; for clang units gdb trusts the line table for prologue ends
    (amd64-tdep.c ``amd64_skip_prologue``, ``producer_is_llvm``), which is
    what our rows keep.  Vendor-prefixed clang strings ("Debian clang
    version ...") are rewritten to that form, with the original kept in
    parentheses."""
    if not has_location_lists:
        return f"{GNU_PRODUCER} (guest: {guest_producer or 'unknown'}; native code by {DEFAULT_PRODUCER})"
    marker = "clang version "
    at = guest_producer.find(marker)
    if at < 0:
        return DEFAULT_PRODUCER
    version = guest_producer[at + len(marker):].split(" ", 1)[0]
    return f"clang version {version} ({guest_producer}; native code by {DEFAULT_PRODUCER})"


def image_lines(module, frame_table: FrameTable, code_address: int) -> ImageLines:
    """Source lines for a debug image of ``module`` (a compiled codemem
    Module; its ``info`` is read) at ``code_address``; no rows when the module
    has no usable line table. Never raises for bad DWARF: it logs a warning and
    returns no rows."""
    info = getattr(module, "info", None)
    if info is None:
        return ImageLines([])
    try:
        table = read_guest_line_table(info)
        if table is None:
            return ImageLines([])
        rows = map_guest_lines(table, info, frame_table, code_address)
        return ImageLines(rows, table.comp_dir, image_producer(table.producer))
    except GuestLinesError as e:
        log.warning("module %s: no source lines in its debug image: %s", getattr(module, "name", "?"), e)
        return ImageLines([])
