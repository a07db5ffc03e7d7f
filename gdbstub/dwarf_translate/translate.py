"""The guest's DWARF, rewritten to describe its native code.

Input: a module built with ``clang --target=wasm32 -g`` (DWARF 4 or 5 in
custom sections, code addresses relative to the code section, locations in
``DW_OP_WASM_location`` terms), its frame table and the image's address size.
Output: ``.debug_abbrev``, ``.debug_info``, ``.debug_line`` and, when used,
``.debug_loc``/``.debug_ranges`` for a debug image
(:func:`gdbstub.debugimage.build_debug_image`'s ``debug_sections``), written
as DWARF 4 units with DWARF 5 line programs.

Per unit: every DIE is copied with its attributes re-encoded (strings inline,
references re-pointed, file numbers unchanged: each unit's new line program
lists the same files under the same numbers), except:

* code addresses: a subprogram covers its whole native function; lexical
  blocks, inlined subroutines and location-list entries cover the native code
  of the guest instructions in their ranges (:class:`~.codemap.CodeMap`);
* locations and frame bases: rewritten over the frame slots and the instance
  context (:mod:`.expr`); one that cannot be is dropped (the variable shows as
  optimized out) and counted in ``TranslatedDwarf.dropped_locations``;
* the unit's line program: its own rows mapped onto sequence points
  (:func:`gdbstub.guest_lines.map_guest_lines`), so a function no unit
  describes (WASI start-up, ``_start.command_export``) has no lines at all;
* call-site DIEs (``DW_TAG_call_site``, ``DW_TAG_GNU_call_site`` and their
  parameters) are left out: their return pcs would need the same mapping and
  gdb only uses them for entry values, which nothing here provides;
* ``DW_AT_producer``: a GCC one for a unit without location lists, the
  ``clang version`` prefix gdb checks before it trusts the line table for
  prologue ends otherwise (guest_lines.image_producer).

Addresses are ``code_address`` + image offset; with ``code_address`` 0 the
output depends only on the module and its frame table, so it can be cached per
EngineCode and relocated by a debugger's load bias.
"""
from __future__ import annotations

import bisect
import functools
import logging
import operator
import struct
from dataclasses import dataclass, field

from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.enums import ENUM_DW_AT, ENUM_DW_TAG
from elftools.dwarf.locationlists import BaseAddressEntry, LocationEntry, LocationExpr, LocationParser
from elftools.dwarf.ranges import BaseAddressEntry as RangeBaseAddressEntry
from elftools.dwarf.ranges import RangeEntry

from codemem.abi import VMContextLayout
from codemem.frametable import FrameTable, SequencePointKind

from ..c_abi import Aggregate, FunctionAbi, classify
from ..debugimage import dwarf as image_dwarf
from ..debugimage.dwarf import sleb128, uleb128
from ..debugimage.model import DebugImageError
from ..frame_bases import FRAME_BASE_IN_REGISTER
from ..guest_lines import (
    PYELFTOOLS_ERRORS, GuestLinesError, LineMapper, cu_line_rows, guest_dwarf_info, image_producer,
)
from .codemap import CodeMap, merge_ranges
from .expr import RSI, ExprContext, UntranslatableExpression, local_location, translate_expression
from .prologue import ArgumentStore, argument_stores
from .reader import DwarfFormatError, GuestAttribute, GuestDieReader
from .writer import (
    DW_FORM_addr, DW_FORM_block, DW_FORM_data1, DW_FORM_data2, DW_FORM_data4, DW_FORM_data8,
    DW_FORM_exprloc, DW_FORM_flag_present, DW_FORM_ref4, DW_FORM_ref_addr, DW_FORM_sdata, DW_FORM_sec_offset,
    DW_FORM_string, DW_FORM_udata, Die, DwarfWriter, LocList, RangeList, Ref,
)

log = logging.getLogger(__name__)

__all__ = ["GuestDwarfError", "TranslatedDwarf", "translate_guest_dwarf"]

_AT = ENUM_DW_AT
_TAG = ENUM_DW_TAG

#: DIEs whose code ranges are translated (_scope_pc).
_SCOPE_TAGS = frozenset(("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine", "DW_TAG_label"))
#: DIEs left out with their children (see the module docstring).
_DROPPED_TAGS = {"DW_TAG_call_site", "DW_TAG_GNU_call_site", "DW_TAG_call_site_parameter",
                 "DW_TAG_GNU_call_site_parameter"}
#: Attributes never copied: layout (sibling), the unit's index bases (their
#: sections are not copied; every value is re-encoded inline), call-site flags,
#: and code addresses handled by their DIE (pc ranges, entry pc).
_SKIPPED_ATTRIBUTES = {
    "DW_AT_sibling", "DW_AT_str_offsets_base", "DW_AT_addr_base", "DW_AT_rnglists_base", "DW_AT_loclists_base",
    "DW_AT_GNU_addr_base", "DW_AT_GNU_ranges_base", "DW_AT_GNU_all_call_sites", "DW_AT_GNU_all_tail_call_sites",
    "DW_AT_call_all_calls", "DW_AT_call_all_tail_calls", "DW_AT_call_all_source_calls", "DW_AT_entry_pc",
    "DW_AT_low_pc", "DW_AT_high_pc", "DW_AT_ranges", "DW_AT_stmt_list", "DW_AT_dwo_name", "DW_AT_GNU_dwo_name",
    "DW_AT_GNU_pubnames", "DW_AT_macros", "DW_AT_macro_info", "DW_AT_GNU_macros",
}
#: Attributes whose block/exprloc value is a DWARF expression over the frame.
_LOCATION_ATTRIBUTES = {
    "DW_AT_location", "DW_AT_frame_base", "DW_AT_data_member_location", "DW_AT_vtable_elem_location",
    "DW_AT_use_location", "DW_AT_string_length", "DW_AT_count", "DW_AT_upper_bound", "DW_AT_lower_bound",
    "DW_AT_byte_size", "DW_AT_bit_size", "DW_AT_data_location", "DW_AT_allocated", "DW_AT_associated",
}
_STRING_FORMS = {"DW_FORM_string", "DW_FORM_strp", "DW_FORM_line_strp", "DW_FORM_strx", "DW_FORM_strx1",
                 "DW_FORM_strx2", "DW_FORM_strx3", "DW_FORM_strx4", "DW_FORM_GNU_strp_alt", "DW_FORM_GNU_str_index"}
_REF_FORMS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata", "DW_FORM_ref_addr"}
_DATA_FORMS = {"DW_FORM_data1": DW_FORM_data1, "DW_FORM_data2": DW_FORM_data2, "DW_FORM_data4": DW_FORM_data4,
               "DW_FORM_data8": DW_FORM_data8, "DW_FORM_sdata": DW_FORM_sdata, "DW_FORM_udata": DW_FORM_udata}
_BLOCK_FORMS = {"DW_FORM_block", "DW_FORM_block1", "DW_FORM_block2", "DW_FORM_block4", "DW_FORM_exprloc",
                "DW_FORM_data16"}
_LOCLIST_FORMS = {"DW_FORM_sec_offset", "DW_FORM_data4", "DW_FORM_data8", "DW_FORM_loclistx"}
DW_OP_lit0 = 0x30


#: DW_LANG_C89, C, C99, C11, C17 (DWARF 5 section 7.12).
_C_LANGUAGES = {0x0001, 0x0002, 0x000C, 0x001D, 0x002C}
#: wasm-ld's value for an address in code or data it removed.
TOMBSTONE = 0xFFFFFFFF


#: Location attributes whose DW_FORM_exprloc value pyelftools'
#: LocationParser returns as a LocationExpr as it is (its "loclistptr class").
_EXPRLOC_LOCATIONS = {"DW_AT_location", "DW_AT_frame_base", "DW_AT_data_member_location", "DW_AT_string_length",
                      "DW_AT_use_location", "DW_AT_vtable_elem_location"}
#: Operations whose translation depends on the function or the unit (its
#: wasm locals and globals, its .debug_addr): WASM_location, addrx, constx,
#: GNU_addr_index, GNU_const_index.
_CONTEXT_OPS = {0xED, 0xA1, 0xA2, 0xFB, 0xFC}

#: The first byte of a location that is a static's address: DW_OP_addr,
#: DW_OP_addrx, DW_OP_GNU_addr_index.
_ADDRESS_OPS = {b"\x03", b"\xa1", b"\xfb"}

# What _copy_attribute does with an attribute, decided once per (name, form)
# (_attribute_action): (action, attribute number, output form).
_SKIP, _COPY_DATA, _COPY_STRING, _COPY_REF, _COPY_LOCATION, _COPY_FLAG, _COPY_BLOCK, _COPY_LINKAGE_NAME, \
    _NOT_COPIED = range(9)


def _attribute_action(name, form: str) -> tuple:
    """How an attribute ``name`` in ``form`` is copied (see _Translator._copy_attribute)."""
    if name in _SKIPPED_ATTRIBUTES or not isinstance(name, str):
        return _SKIP, 0, 0
    number = _AT.get(name)
    if number is None:
        return _SKIP, 0, 0
    if name in ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name"):
        return _COPY_LINKAGE_NAME, number, _copy_action(name, form, number)
    return _copy_action(name, form, number)


def _copy_action(name: str, form: str, number: int) -> tuple[int, int, int]:
    if name in _LOCATION_ATTRIBUTES and (form in _BLOCK_FORMS or
                                         (form in _LOCLIST_FORMS and name in ("DW_AT_location",
                                                                              "DW_AT_frame_base"))):
        return _COPY_LOCATION, number, 0
    if form in _REF_FORMS:
        return _COPY_REF, number, 0
    if form in _STRING_FORMS:
        return _COPY_STRING, number, DW_FORM_string
    if form in ("DW_FORM_flag", "DW_FORM_flag_present"):
        return _COPY_FLAG, number, DW_FORM_flag_present
    if form in _DATA_FORMS:
        return _COPY_DATA, number, _DATA_FORMS[form]
    if form == "DW_FORM_implicit_const":
        return _COPY_DATA, number, DW_FORM_sdata
    if form in _BLOCK_FORMS:
        return _COPY_BLOCK, number, DW_FORM_block
    return _NOT_COPIED, number, 0


#: How _Translator._encode_attributes writes an attribute (one step per
#: attribute of an abbreviation, _encoding_steps): the output form's number for
#: data forms, or one of these.
_ENCODE_STRING, _ENCODE_LOCATION, _ENCODE_FLAG, _ENCODE_BLOCK = -2, -4, -5, -6


#: _encoding_steps' run of fixed-size values: (_ENCODE_RUN, struct, getter of
#: its values, whether the getter gives one value, ((value index, offset in
#: the run), ...) of its references).
_ENCODE_RUN = -7
#: struct codes of the fixed-size output forms (a unit-local reference is 4
#: zero bytes, patched by the writer).
_RUN_CODES = {DW_FORM_data1: "B", DW_FORM_data2: "H", DW_FORM_data4: "I", DW_FORM_data8: "Q"}
#: _encoding_steps' one step for the shape of clang's -O0 variables and
#: parameters, nearly every DIE of a unit: a ``DW_AT_location`` exprloc, a
#: name, then one run of data with exactly one reference (the type), as
#: (_ENCODE_DECLARED, location index, name index, struct, getter, whether the
#: getter gives one value, (reference's value index, offset in the run)).
#: The same bytes as its three steps, without their loop (_fuse_declared).
_ENCODE_DECLARED = -8


def _encoding_steps(actions: tuple) -> tuple[tuple, tuple] | None:
    """``(steps, shape)`` for an abbreviation whose attributes, copied by
    ``actions`` (_attribute_action's, one per attribute), need nothing but
    their own values: data, strings, unit-relative references, flags, blocks
    and ``DW_AT_location`` expressions; None when one needs more (a frame
    base, a location list, a linkage name, a cross-unit reference, an
    attribute not copied). ``shape`` is the output's (attribute, form) pairs,
    what the writer's abbreviation is made of; ``steps`` say how
    _encode_attributes makes the bytes: (step, value index) per attribute of
    variable size or needing a test, and an _ENCODE_RUN per run of
    fixed-size data and references (one struct pack each).

    The data forms are the guest's own (a data2 is copied as a data2), so a
    value always fits its struct code."""
    steps, shape = [], []
    run, getters, references = "", [], []

    def end_run():
        nonlocal run, getters, references
        if run:
            steps.append((_ENCODE_RUN, struct.Struct("<" + run), operator.itemgetter(*getters) if getters else None,
                          len(getters) == 1, tuple(references)))
        run, getters, references = "", [], []

    for index, (kind, number, out_form, _, name, form) in enumerate(actions):
        if kind == _SKIP:
            continue
        if kind == _COPY_DATA and out_form in _RUN_CODES:
            code, out = _RUN_CODES[out_form], out_form
            run += code
            getters.append(index)
        elif kind == _COPY_REF and form != "DW_FORM_ref_addr":
            references.append((index, struct.calcsize("<" + run)))
            run += "4x"
            out = DW_FORM_ref4
        else:
            if kind == _COPY_DATA:
                step, out = out_form, out_form  # sdata, udata
            elif kind == _COPY_STRING:
                step, out = _ENCODE_STRING, DW_FORM_string
            elif kind == _COPY_LOCATION and name == "DW_AT_location" and form == "DW_FORM_exprloc":
                step, out = _ENCODE_LOCATION, DW_FORM_exprloc
            elif kind == _COPY_FLAG:
                step, out = _ENCODE_FLAG, DW_FORM_flag_present
            elif kind == _COPY_BLOCK:
                step, out = _ENCODE_BLOCK, DW_FORM_block
            else:
                return None
            if step != _ENCODE_FLAG:  # a flag_present has no bytes: the run goes on
                end_run()
            steps.append((step, index))
        shape.append((number, out))
    end_run()
    return _fuse_declared(tuple(steps)), tuple(shape)


def _fuse_declared(steps: tuple) -> tuple:
    """``steps`` as one _ENCODE_DECLARED step when they are a location, a
    name and a run with one reference and values (the -O0 variable's shape);
    otherwise ``steps`` themselves."""
    if len(steps) != 3 or steps[0][0] != _ENCODE_LOCATION or steps[1][0] != _ENCODE_STRING or \
            steps[2][0] != _ENCODE_RUN:
        return steps
    _, packer, getter, single, references = steps[2]
    if getter is None or len(references) != 1:
        return steps
    return ((_ENCODE_DECLARED, steps[0][1], steps[1][1], packer, getter, single, references[0]),)


class _CachedExprParser:
    """pyelftools' DWARFExprParser with its results kept by expression bytes:
    a unit repeats a handful of expressions thousands of times (``DW_OP_fbreg
    N``, the frame base). The operations come back as a tuple, never changed."""

    def __init__(self, structs):
        self._parser = DWARFExprParser(structs)
        self._parsed: dict[bytes, tuple] = {}

    def parse_expr(self, expr) -> tuple:
        key = expr if type(expr) is bytes else bytes(expr)
        ops = self._parsed.get(key)
        if ops is None:
            ops = self._parsed[key] = tuple(self._parser.parse_expr(list(key)))
        return ops


class GuestDwarfError(Exception):
    """The guest's DWARF cannot be read (the message says where)."""


@dataclass
class TranslatedDwarf:
    sections: dict[str, bytes]
    units: int = 0
    subprograms: int = 0
    #: Location attributes or list entries that could not be rewritten.
    dropped_locations: int = 0
    #: (guest subprogram name, image offset range) of every described function.
    functions: list[tuple[str, int, int]] = field(default_factory=list)
    #: (name, linear-memory address, size) of every variable with static
    #: storage, for the image's symbol table: a debugger then names data
    #: addresses as it does natively (``0x460 <items>``), and gdb 13 stops
    #: looking for code at them (symtab.c find_pc_sect_compunit_symtab checks
    #: for a data minimal symbol first; without one, a CU with DW_AT_ranges
    #: has its variables' addresses in its address map, dwarf2/cooked-index).
    data_symbols: list[tuple[str, int, int]] = field(default_factory=list)
    #: image offset of a function's first byte -> rbp offset of the slot of
    #: its frame-base local, for every function whose frame base is a local
    #: (gdbstub.frame_bases: the stub serves caller frames' frame bases).
    frame_base_slots: dict[int, int] = field(default_factory=dict)
    #: image offset of a function's first byte -> how its C aggregates are
    #: passed (gdbstub.c_abi), for every function with an aggregate parameter
    #: or result that System V and wasm32 pass differently.
    function_abis: dict[int, FunctionAbi] = field(default_factory=dict)


def translate_guest_dwarf(info, frame_table: FrameTable, *, code_address: int = 0,
                          address_size: int = 4) -> TranslatedDwarf | None:
    """The translated sections for module ``info`` (a codemem ModuleInfo)
    compiled to ``frame_table``, addresses ``code_address`` + image offset;
    None when the module has no ``.debug_info`` (or no code). Raises
    GuestDwarfError for malformed DWARF."""
    sections = getattr(info, "dwarf", None) or {}
    if ".debug_info" not in sections or getattr(info, "code_section_offset", None) is None:
        return None
    try:
        translator = _Translator(info, frame_table, code_address, address_size)
        try:
            return translator.run()
        finally:
            translator.release()
    except (GuestLinesError, DebugImageError, DwarfFormatError) as e:
        raise GuestDwarfError(str(e)) from e
    except PYELFTOOLS_ERRORS as e:
        raise GuestDwarfError(f"malformed DWARF ({type(e).__name__}: {e})") from e


#: _passed_as's answer for a type no calling-convention record describes.
_UNSUPPORTED = object()
_MISSING = object()


def clip_shared_homes(lists: list[LocList]) -> list[LocList]:
    """``lists`` (the location lists of one function's variables) with each
    entry whose expression is a frame slot ended where another list's entry
    with the same slot starts strictly inside it (see
    _Translator._clip_shared_homes)."""
    starts: dict[bytes, list[tuple[int, int]]] = {}  # slot expression -> (entry start, list number)
    for number, loclist in enumerate(lists):
        for start, _, expr in loclist.entries:
            if _is_slot_home(expr):
                starts.setdefault(expr, []).append((start, number))
    out = []
    for number, loclist in enumerate(lists):
        entries = []
        for start, end, expr in loclist.entries:
            others = [s for s, n in starts.get(expr, ()) if n != number and start < s < end]
            entries.append((start, min(others), expr) if others else (start, end, expr))
        out.append(loclist if entries == list(loclist.entries) else LocList(tuple(entries)))
    return out


#: DWARF 5 section 7.7.1 opcodes choose_by_pc writes or must not embed.
_OP_ADDR, _OP_LT, _OP_SKIP, _OP_BRA, _OP_BREG16, _OP_NOP = 0x03, 0x2D, 0x2F, 0x28, 0x80, 0x96
#: Operations that make an expression something other than a memory
#: location description (DWARF 5 section 2.6.1.1): a register (DW_OP_reg0..31,
#: DW_OP_regx), an implicit value or pointer, a composite.  Such a location
#: must end its expression, so it cannot be one branch of choose_by_pc's.
_NOT_A_MEMORY_LOCATION = frozenset(range(0x50, 0x70)) | {0x90, 0x93, 0x9D, 0x9E, 0x9F, 0xA0, 0xF2}


def choose_by_pc(pieces: list[tuple[int, int, bytes]], code_address: int, address_size: int) -> bytes | None:
    """ONE location expression for contiguous ``pieces`` ``(start, end,
    expression)`` (image offsets, ascending, each expression a memory
    location description), choosing by the pc what a location list would::

        DW_OP_breg16 0; DW_OP_addr END_0; DW_OP_lt; DW_OP_bra -> PIECE_0
        DW_OP_breg16 0; DW_OP_addr END_1; DW_OP_lt; DW_OP_bra -> PIECE_1
        ...
        PIECE_last; DW_OP_skip -> END
        ...
        PIECE_1;    DW_OP_skip -> END
        PIECE_0
        END: DW_OP_nop

    (The final DW_OP_nop gives the skips a target that is an operation:
    gdb 13's agent-expression compiler, which compiles a breakpoint
    condition's variable reads, maps branch targets through the operations'
    offsets only, dwarf2/loc.c compile_dwarf_to_ax, and a branch to the very
    end became a goto to an arbitrary offset.)

    (register 16 is the return address column, rip, System V AMD64 psABI
    3.6.2; DW_OP_lt compares signed, DWARF 5 section 2.5.1.4, and a
    function's addresses never straddle the sign bit's change.)  Why: with
    a GCC producer, gdb 13 sets a compile unit's ``locations_valid`` when
    it has any location list (dwarf2/read.c process_full_comp_unit, the
    ``has_loclist`` test) and then puts ``break FUNC`` at a function's
    first byte; these expressions keep such units free of them
    (guest_lines.image_producer).  gdb relocates DW_OP_addr by the
    objfile's offset (dwarf2/expr.c, and in agent expressions
    dwarf2/loc.c compile_dwarf_to_ax), lldb converts it to a load address,
    so the expression works in the position-independent image.  The caller
    checks that every piece is a memory location (_Translator
    ._is_memory_location: a register must end an expression, so such a
    variable keeps a location list).  None when the pieces are not
    contiguous or a branch would not fit DW_OP_bra's 2 bytes."""
    if not pieces:
        return None
    if not contiguous(pieces):
        return None
    template = by_pc_template(tuple([expr for _, _, expr in pieces]), address_size)
    if template is None:
        return None
    return patch_addresses(template, [code_address + end for _, end, _ in pieces[:-1]], address_size)


def contiguous(pieces: list[tuple[int, int, bytes]]) -> bool:
    """Each of ``pieces`` ``(start, end, expression)`` ends where the next starts."""
    for k in range(len(pieces) - 1):
        if pieces[k][1] != pieces[k + 1][0]:
            return False
    return True


#: choose_by_pc's expression with its address operands zero, and where they
#: are: (bytes, offsets of the DW_OP_addr operands, one per piece but the last).
ByPcTemplate = tuple[bytes, tuple[int, ...]]


def by_pc_template(expressions: tuple[bytes, ...], address_size: int) -> ByPcTemplate | None:
    """choose_by_pc's expression for pieces with ``expressions``, their end
    addresses left zero (its layout depends on the expressions' lengths
    alone, so a translator makes it once per distinct ``expressions`` and
    patches the addresses in: patch_addresses); None when a branch would not
    fit DW_OP_bra's 2 bytes."""
    if len(expressions) == 1:
        return expressions[0], ()
    test = bytes([_OP_BREG16, 0, _OP_ADDR]) + bytes(address_size) + bytes([_OP_LT, _OP_BRA])
    bodies = expressions[::-1]  # last piece first, piece 0 at the end
    skip = 3
    # Body k (k-th from the default) is followed by a skip to END except the last one (piece 0).
    body_sizes = [len(body) + (skip if k < len(bodies) - 1 else 0) for k, body in enumerate(bodies)]
    test_size = len(test) + 2
    body_starts, at = [], test_size * (len(expressions) - 1)
    for size in body_sizes:
        body_starts.append(at)
        at += size
    end = at
    out = bytearray()
    positions = []
    for k in range(len(expressions) - 1):
        target = body_starts[len(bodies) - 1 - k]  # piece k's body
        offset = target - (len(out) + test_size)
        if not -0x8000 <= offset < 0x8000:
            return None
        positions.append(len(out) + 3)  # after DW_OP_breg16 0; DW_OP_addr
        out += test + offset.to_bytes(2, "little", signed=True)
    for k, body in enumerate(bodies):
        out += body
        if k < len(bodies) - 1:
            offset = end - (len(out) + skip)
            if not -0x8000 <= offset < 0x8000:
                return None
            out += bytes([_OP_SKIP]) + offset.to_bytes(2, "little", signed=True)
    assert len(out) == end
    return bytes(out) + bytes([_OP_NOP]), tuple(positions)


def patch_addresses(template: ByPcTemplate, addresses: list[int], address_size: int) -> bytes:
    """``template``'s expression with ``addresses`` (one per position, each
    ``address_size`` bytes little-endian) written at its positions."""
    expr, positions = template
    if not positions:
        return expr
    if len(positions) == 1:  # two pieces, the common case
        at = positions[0]
        return expr[:at] + addresses[0].to_bytes(address_size, "little") + expr[at + address_size:]
    out = bytearray(expr)
    for position, address in zip(positions, addresses):
        out[position:position + address_size] = address.to_bytes(address_size, "little")
    return bytes(out)


def _is_slot_home(expr: bytes) -> bool:
    """Whether a translated expression is exactly a frame slot's location
    (``call_frame_cfa; consts N; plus``, gdbstub.dwarf_translate.expr)."""
    return len(expr) <= 8 and expr[:2] == b"\x9c\x11" and expr[-1:] == b"\x22"


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise GuestDwarfError(f"bad DWARF string {value!r}")
    return value


class _Translator:
    def __init__(self, info, frame_table: FrameTable, code_address: int, address_size: int):
        self.info = info
        self.frame_table = frame_table
        self.code_address = code_address
        self.address_size = address_size
        self.code_end = code_address + frame_table.header.code_size
        self.dwarf = guest_dwarf_info(info.dwarf)
        self.reader = GuestDieReader(info.dwarf, self.dwarf)
        self.line_mapper = LineMapper(info, frame_table)
        self.codemap = CodeMap(info, frame_table, self.line_mapper)
        self.layout = VMContextLayout.for_module(info)
        self.global_types = [int(g.valtype) for g in info.all_globals]
        self.writer = DwarfWriter(address_size)
        self.result = TranslatedDwarf({})
        self._dies: dict[int, Die] = {}  # input DIE offset -> output DIE
        self._refs: list[tuple[Die, int, int]] = []  # (DIE, attribute index, target input offset)
        #: (output DIE, its input DIE, Ref, target input offset) of the
        #: references of the current unit's encoded DIEs (_encode_attributes).
        self._encoded_refs: list[tuple[Die, object, Ref, int]] = []
        #: id(output DIE) -> its function's context, of the current unit's
        #: encoded own parameters (_resolve_encoded_refs copies them again there).
        self._own_parameter_contexts: dict[int, ExprContext] = {}
        self._location_parser = LocationParser(self.dwarf.location_lists())
        self._contexts: dict[int, ExprContext] = {}
        self._entry_contexts: dict[int, ExprContext] = {}
        self._frame_base_locals: dict[int, int] = {}  # function position -> wasm local of its frame base
        self._argument_stores: dict[int, dict[int, ArgumentStore]] = {}
        self._first_instructions: dict[int, int | None] = {}
        #: function position -> (DIE, attribute index) of each location list
        #: of its variables, for _clip_shared_homes.
        self._function_loclists: dict[int, list[tuple[Die, int]]] = {}
        self._passed_as_memo: dict[int, object] = {}  # type DIE offset -> _passed_as (gdbstub.c_abi)
        #: The DIE whose attributes are being copied is a parameter of the
        #: function itself (not of a call inlined into it).
        self._own_parameter = False
        self._function_names: dict[int, str] = {}
        self._units: list[tuple[Die, list[tuple[int, int]]]] = []  # (unit DIE, its functions' ranges)
        self._actions: dict[tuple, tuple[int, int, int]] = {}
        self._spec_actions: dict[int, tuple] = {}
        self._indexes: dict[int, tuple[tuple, dict]] = {}  # id(specs) -> (specs, _index's dict)
        #: id(specs) -> (tag name, tag, _spec_actions' entry) of the leaves
        #: _children translates inline: neither subprograms nor scopes (their
        #: pcs), nor parameters of the function itself (their locations), of
        #: abbreviations with an encoding (_encoding_steps).
        self._plain_leaves: dict[int, tuple] = {}
        self._context_free: dict[tuple[bytes, bool], bytes] = {}
        #: DW_AT_location exprloc value -> its translation, for expressions
        #: that are the same in every function and need no padding (_padded).
        self._plain_locations: dict[bytes, bytes] = {}
        #: The same translations as .debug_info holds them (ULEB128 length first), for _encode_attributes.
        self._encoded_plain_locations: dict[bytes, bytes] = {}
        #: Expressions that do not end in a piece (_padded leaves them as they are).
        self._not_composite: set[bytes] = set()
        #: _parameter_by_pc's templates by (es?, the pieces' expressions).
        self._parameter_templates: dict[tuple, ByPcTemplate | None] = {}
        self._memory_locations: dict[bytes, bool] = {}  # translated expression -> _is_memory_location
        #: _location's fast path: (three expressions) -> _parameter_template(True, ...), None when not usable.
        self._es_parameter_templates: dict[tuple[bytes, bytes, bytes], ByPcTemplate | None] = {}
        self._parameter_homes: dict[bytes, tuple[bool, int] | None] = {}  # guest expression -> _parameter_home
        #: fbreg X (a guest location) -> (its translation, X), for _o0_parameter; per unit.
        self._o0_guests: dict[bytes, tuple[bytes, int]] = {}
        self._param_counts: dict[int, int] = {}  # function position -> its wasm parameter count
        self._o0_prologues: dict[int, tuple | None] = {}  # function position -> _o0_prologue
        self._entry_locations: dict[int, bytes] = {}  # parameter K -> its argument-array entry's location
        self._unit_context = ExprContext(address_size, self._global_cell, indexed_address=self._indexed_address)

    def release(self) -> None:
        """Drops what refers back to the translator or between DIEs (the
        contexts' slot functions, the reader's index), so that reference
        counting frees a translation's hundred thousand objects at once
        instead of leaving them to the cyclic collector."""
        self._contexts.clear()
        self._entry_contexts.clear()
        self._unit_context = None
        self.reader.release()
        self._dies.clear()
        self._refs.clear()
        self._encoded_refs.clear()
        self._own_parameter_contexts.clear()

    # -- contexts ------------------------------------------------------------

    def _indexed_address(self, index: int) -> int:
        return self.dwarf.get_addr(self._cu, index)

    def _global_cell(self, index: int):
        if not 0 <= index < self.layout.num_globals:
            return None
        return self.layout.global_cell(index), self.global_types[index]

    def _function_context(self, func) -> ExprContext:
        context = self._contexts.get(func.position)
        if context is None:
            # -O0 code names few of its locals (the frame base): each read in place.
            local_slot = functools.partial(self.frame_table.local_home, func)
            context = self._contexts[func.position] = ExprContext(
                self.address_size, self._global_cell, local_slot=local_slot,
                operand_slot=func.operand_slot_offset, function=func, indexed_address=self._indexed_address)
        return context

    def _entry_context(self, func) -> ExprContext:
        """Where the wasm parameters are before ``func``'s prologue: local N
        (N below the parameter count) is entry N of the argument array at
        rsi (codemem/abi.py "Registers"); the other locals do not exist yet."""
        context = self._entry_contexts.get(func.position)
        if context is None:
            params = self.info.func_type(func.wasm_index).params

            def argument(n: int):
                return (8 * n, int(params[n])) if n < len(params) else None

            context = self._entry_contexts[func.position] = ExprContext(
                self.address_size, self._global_cell, local_slot=argument, function=func,
                indexed_address=self._indexed_address, locals_register=RSI)
        return context

    def _first_instruction(self, func) -> int | None:
        """Image offset of ``func``'s first INSTRUCTION sequence point (the
        end of its native prologue), None if it has none."""
        found = self._first_instructions.get(func.position, _MISSING)
        if found is _MISSING:  # most often the second point
            found = self._first_instructions[func.position] = self.frame_table.first_point_offset(
                func, SequencePointKind.INSTRUCTION)
        return found

    # -- driver ----------------------------------------------------------------

    def run(self) -> TranslatedDwarf:
        line_sections = bytearray()
        for cu in self.dwarf.iter_CUs():
            self._unit(cu, line_sections)
        # References are resolved before the units are written: one to a DIE
        # left out (a call site) is dropped with its attribute.
        losing = {}
        for die, index, target in self._refs:
            attribute, form, ref = die.attributes[index]
            out = self._dies.get(target)
            if out is None:
                die.attributes[index] = None
                losing[id(die)] = die
            else:
                ref.target = out
        for die in losing.values():
            die.attributes = [a for a in die.attributes if a is not None]
        starts = sorted((start, unit) for unit, (_, ranges) in enumerate(self._units) for start, _ in ranges)
        for unit, (root, ranges) in enumerate(self._units):
            self._unit_range(root, ranges, unit, starts)
            self.writer.add_unit(root)
        self.result.sections = self.writer.sections()
        if line_sections:
            self.result.sections[".debug_line"] = bytes(line_sections)
        return self.result

    def _unit(self, cu, line_sections: bytearray) -> None:
        top = self.reader.top_die(cu)
        self.result.units += 1
        self._cu = cu
        self._cu_range = (cu.cu_offset, cu.cu_offset + cu.size)
        self._parser = _CachedExprParser(cu.structs)
        self._not_composite = set()  # parsed with this unit's address size
        self._memory_locations = {}  # likewise
        self._es_parameter_templates = {}  # made after _is_memory_location's test, likewise
        self._parameter_homes = {}
        self._o0_guests = {}  # likewise
        self._cu_version = cu["version"]
        language = top.attributes.get("DW_AT_language")
        self._c_unit = language is not None and language.value in _C_LANGUAGES
        low = top.attributes.get("DW_AT_low_pc")
        self._cu_base = low.value if low is not None and isinstance(low.value, int) else 0
        self._unit_functions: list[tuple[int, int]] = []

        root = Die(_TAG["DW_TAG_compile_unit"])
        self._dies[top.offset] = root
        comp_dir = "."
        name = ""
        guest_producer = ""
        self._unit_loclists = 0
        for attribute in top.attributes.values():
            if attribute.name == "DW_AT_producer":
                guest_producer = _text(attribute.value)
                continue
            if attribute.name == "DW_AT_comp_dir":
                comp_dir = _text(attribute.value)
            if attribute.name == "DW_AT_name":
                name = _text(attribute.value)
            self._copy_attribute(top, attribute, root, self._unit_context)
        line_offset = self._line_program(cu, comp_dir, name, line_sections)
        if line_offset is not None:
            root.attributes.append((_AT["DW_AT_stmt_list"], DW_FORM_sec_offset, line_offset))
        root.children = self._children(top, self._unit_context)
        self._resolve_encoded_refs()
        # Chosen once the unit's locations are translated: a GNU producer
        # only for a unit without location lists (guest_lines.image_producer).
        root.attributes.insert(0, (_AT["DW_AT_producer"], DW_FORM_string,
                                   image_producer(guest_producer, has_location_lists=self._unit_loclists > 0)))
        self._units.append((root, merge_ranges(self._unit_functions)))

    def _line_program(self, cu, comp_dir: str, name: str, line_sections: bytearray) -> int | None:
        paths, guest_rows = cu_line_rows(self.dwarf, cu, self.codemap.code_section_offset)
        if not guest_rows:
            return None
        rows = self.line_mapper.map(guest_rows, self.code_address)
        if not rows:
            return None
        numbers = sorted(paths)
        entries: list[str] = []
        if numbers and numbers[0] >= 1:  # DWARF 4 numbering: file 0 is the primary source file
            entries.append(name or paths[numbers[0]])
        for number in range(numbers[0] if numbers else 0, (numbers[-1] + 1) if numbers else 0):
            entries.append(paths.get(number, name or "<unknown>"))
        line_files = image_dwarf.numbered_line_files(entries, comp_dir)
        offset = len(line_sections)
        line_sections += image_dwarf.build_debug_line(rows, line_files, self.code_end, self.address_size)
        return offset

    def _unit_range(self, root: Die, ranges: list[tuple[int, int]], unit: int,
                    starts: list[tuple[int, int]]) -> None:
        """The unit's code: one low/high pair spanning its functions when no
        other unit's function lies in between (wasm-ld keeps each object's
        functions together, so this is the usual case), else DW_AT_ranges.

        A unit with a low/high pair is what gdb 13's cooked index counts as
        having addresses (cooked_indexer::check_bounds); for a unit with only
        DW_AT_ranges it also enters each static variable's address into the
        unit's address map, and then takes a pointer to that variable for a pc
        of the unit ("pc 0x460 in read in CU, but not in symtab" whenever it
        prints one)."""
        if not ranges:
            root.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, 0))
            return
        low, high = ranges[0][0], ranges[-1][1]
        inside = starts[bisect.bisect_left(starts, (low, -1)):bisect.bisect_left(starts, (high, -1))]
        if all(owner == unit for _, owner in inside):
            root.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, low))
            root.attributes.append((_AT["DW_AT_high_pc"], DW_FORM_data4, high - low))
            return
        root.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, 0))
        root.attributes.append((_AT["DW_AT_ranges"], DW_FORM_sec_offset, RangeList(tuple(ranges))))

    # -- DIEs -------------------------------------------------------------------

    def _children(self, die, context: ExprContext) -> list[Die]:
        out = []
        own = die.tag == "DW_TAG_subprogram" and context.function is not None
        parameters = []
        translate = self._die
        leaves = self._plain_leaves
        dies = self._dies
        for child in die.children:
            parameter = own and child.tag == "DW_TAG_formal_parameter"
            if parameter or (own and child.tag == "DW_TAG_unspecified_parameters"):
                parameters.append(child)
            elif not child.children:
                # What _die does with a leaf of a plain kind (a variable, a
                # member, a type), inline: most DIEs of a unit.
                leaf = leaves.get(id(child.specs))
                if leaf is not None and leaf[0] == child.tag:
                    _, tag, found = leaf
                    if child.offset in dies:
                        raise GuestDwarfError(f"two DIEs at .debug_info offset {child.offset:#x}")
                    translated = dies[child.offset] = Die(tag)
                    if not self._encode_attributes(child, translated, found[2]):
                        self._copy_actions(child, translated, context, found[1])
                    at = found[3]
                    if at >= 0 and child.values[at][:1] in _ADDRESS_OPS and child.tag == "DW_TAG_variable":
                        self._data_symbol(child, context)
                    out.append(translated)
                    continue
            translated = translate(child, context, own_parameter=parameter)
            if translated is not None:
                out.append(translated)
        if own:
            self._record_function_abi(die, context.function, parameters)
        return out

    def _die(self, die, context: ExprContext, *, own_parameter: bool = False) -> Die | None:
        name = die.tag
        tag = _TAG.get(name) if type(name) is str and name not in _DROPPED_TAGS else None
        if tag is None:
            return None
        dies = self._dies
        if die.offset in dies:
            raise GuestDwarfError(f"two DIEs at .debug_info offset {die.offset:#x}")
        out = dies[die.offset] = Die(tag)
        subprogram = name == "DW_TAG_subprogram"
        if subprogram:
            context = self._subprogram_pc(die, out, context)
        elif name in _SCOPE_TAGS:
            self._scope_pc(die, out, context)
        if own_parameter:
            self._own_parameter = True
            self._copy_attributes(die, out, context)
            self._own_parameter = False
        else:
            self._copy_attributes(die, out, context)
        found = self._spec_actions[id(die.specs)]
        if name == "DW_TAG_variable":
            at = found[3]
            if at >= 0 and die.values[at][:1] in _ADDRESS_OPS:  # not a local's DW_OP_fbreg, most often
                self._data_symbol(die, context)
        if die.children or subprogram:  # a leaf has nothing more to translate
            out.children = self._children(die, context)
        elif found[2] is not None and not own_parameter and name not in _SCOPE_TAGS and \
                id(die.specs) not in self._plain_leaves:
            # The next leaf of this abbreviation takes _children's inline path.
            self._plain_leaves[id(die.specs)] = (name, tag, found)
        if subprogram and context.function is not None:
            self._clip_shared_homes(context.function)
        return out

    def _clip_shared_homes(self, func) -> None:
        """Ends a variable's location-list entry where another variable's
        entry in the same wasm local starts inside it.

        clang -O2 reuses a wasm local for a later variable without always
        ending the earlier one's range (seen with clang-19: a parameter
        ``n`` in local 0 over the whole body, a struct member's copy ``o``
        in local 0 from its assignment on), and gdb would show the later
        value for both (``aggregates_run (n=21)``). A local holds one value at a time, so
        from the later variable's start the earlier one is not there any
        more: it shows ``<optimized out>``, as natively when a register is
        reused."""
        lists = self._function_loclists.pop(func.position, [])
        if len(lists) < 2:
            return
        clipped = clip_shared_homes([die.attributes[index][2] for die, index in lists])
        for (die, index), loclist in zip(lists, clipped):
            attribute, form, _ = die.attributes[index]
            die.attributes[index] = (attribute, form, loclist)

    def _data_symbol(self, die, context: ExprContext) -> None:
        location = die.find("DW_AT_location")
        if location is None or location.form not in ("DW_FORM_exprloc", "DW_FORM_block1") or \
                location.value[:1] not in _ADDRESS_OPS:  # a local's DW_OP_fbreg, most often
            return
        name = die.find("DW_AT_name")
        if name is None:
            return
        ops = self._parser.parse_expr(location.value)
        if len(ops) != 1 or ops[0].op_name not in ("DW_OP_addr", "DW_OP_addrx", "DW_OP_GNU_addr_index"):
            return
        address = ops[0].args[0] if ops[0].op_name == "DW_OP_addr" else self._indexed_address(ops[0].args[0])
        if address == TOMBSTONE:
            return
        symbol = _text(name.value)
        if context.function is not None:  # a function's static: named like gcc's local symbols
            symbol = f"{symbol}.0"
        self.result.data_symbols.append((symbol, address, self._type_size(die, 0)))

    def _type_size(self, die, depth: int) -> int:
        """Byte size of the type of ``die`` (a variable or a type), 0 when unknown."""
        if depth > 64:
            return 0
        attributes = die.attributes
        if "DW_AT_byte_size" in attributes and isinstance(attributes["DW_AT_byte_size"].value, int):
            return attributes["DW_AT_byte_size"].value
        if die.tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
            return self._cu["address_size"]
        if "DW_AT_type" not in attributes:
            return 0
        target = die.get_DIE_from_attribute("DW_AT_type")
        size = self._type_size(target, depth + 1)
        if die.tag == "DW_TAG_array_type":
            for subrange in die.iter_children():
                sub = subrange.attributes
                if "DW_AT_count" in sub and isinstance(sub["DW_AT_count"].value, int):
                    size *= sub["DW_AT_count"].value
                elif "DW_AT_upper_bound" in sub and isinstance(sub["DW_AT_upper_bound"].value, int):
                    lower = sub["DW_AT_lower_bound"].value if "DW_AT_lower_bound" in sub else 0
                    size *= sub["DW_AT_upper_bound"].value - lower + 1
                else:
                    return 0
        return size

    def _index(self, die) -> dict:
        """Attribute name -> its index in ``die.values`` (the last one of a
        name, as ``die.attributes`` keeps it), made once per abbreviation:
        a few attributes of a DIE read without its attribute dict."""
        found = self._indexes.get(id(die.specs))
        if found is None or found[0] is not die.specs:
            found = self._indexes[id(die.specs)] = (die.specs, {spec[0]: k for k, spec in enumerate(die.specs)})
        return found[1]

    def _guest_ranges(self, die) -> list[tuple[int, int]]:
        """The DIE's guest code ranges (low/high pc or DW_AT_ranges)."""
        index, specs, values = self._index(die), die.specs, die.values
        at = index.get("DW_AT_low_pc")
        if at is not None and isinstance(values[at], int):
            low = values[at]
            at = index.get("DW_AT_high_pc")
            if at is None:
                return [(low, low + 1)]
            end = values[at] if specs[at][1] == "DW_FORM_addr" else low + values[at]
            return [(low, end)]
        at = index.get("DW_AT_ranges")
        # pyelftools gives a DW_FORM_rnglistx value already as a section offset.
        if at is None or specs[at][1] not in ("DW_FORM_sec_offset", "DW_FORM_data4", "DW_FORM_rnglistx"):
            return []
        base = self._cu_base
        out = []
        for entry in self.dwarf.range_lists().get_range_list_at_offset(values[at], cu=self._cu):
            if isinstance(entry, RangeBaseAddressEntry):
                base = entry.base_address
            elif isinstance(entry, RangeEntry):
                offset = 0 if entry.is_absolute else base
                out.append((entry.begin_offset + offset, entry.end_offset + offset))
        return out

    def _subprogram_pc(self, die, out: Die, context: ExprContext) -> ExprContext:
        ranges = [r for r in self._guest_ranges(die) if r[0] != TOMBSTONE]
        func = self.codemap.function_at(ranges[0][0]) if ranges else None
        if func is None:
            return context
        address = self.code_address + func.native_start
        out.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, address))
        out.attributes.append((_AT["DW_AT_high_pc"], DW_FORM_data4, func.native_size))
        self._unit_functions.append((address, address + func.native_size))
        self.result.subprograms += 1
        at = self._index(die).get("DW_AT_name")
        name = _text(die.values[at]) if at is not None else None
        self._function_names[func.position] = name if name is not None else "function"
        self.result.functions.append((name if name is not None else "", func.native_start, func.native_end))
        return self._function_context(func)

    # -- calling convention (gdbstub.c_abi) -----------------------------------

    def _record_function_abi(self, die, func, children: list) -> None:
        """Records how the function ``die`` describes (its parameter DIEs
        ``children``, as the translation met them) passes its C aggregates,
        when System V and wasm32 pass one of them differently
        (TranslatedDwarf.function_abis)."""
        abi = self._function_abi(die, children)
        if abi is not None and abi.wasm_param_count == len(self.info.func_type(func.wasm_index).params):
            self.result.function_abis[func.native_start] = abi

    def _function_abi(self, die, children: list) -> FunctionAbi | None:
        """None when no aggregate is passed differently, or when a type is
        one the record cannot describe (long double, _Complex, an empty
        struct, variadic)."""
        index = self._index(die)
        if "DW_AT_abstract_origin" in index:
            # An out-of-line copy of an inline function: the types are its abstract origin's.
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
            return self._function_abi(origin, list(origin.iter_children())) if origin is not die else None
        at = index.get("DW_AT_type")
        result = self._passed_as_type_of(die, die.specs[at][1], die.values[at]) if at is not None else None
        if result is _UNSUPPORTED:
            return None
        params = []
        for child in children:
            if child.tag == "DW_TAG_unspecified_parameters":
                return None
            if child.tag != "DW_TAG_formal_parameter":
                continue
            at = self._index(child).get("DW_AT_type")  # no attribute dict for each parameter
            if at is None:
                return None
            passed = self._passed_as_type_of(child, child.specs[at][1], child.values[at])
            if passed is _UNSUPPORTED:
                return None
            params.append(passed)
        if result is None and not any(params):
            return None
        return FunctionAbi(result, tuple(params))

    def _passed_as_type_of(self, die, form: str, value):
        """:meth:`_passed_as` of ``die``'s DW_AT_type (in ``form``, of
        ``value``), memoized by the type's offset (a unit's functions share
        a few types)."""
        key = value if form == "DW_FORM_ref_addr" else value + self._cu.cu_offset
        passed = self._passed_as_memo.get(key, _MISSING)
        if passed is _MISSING:
            passed = self._passed_as_memo[key] = self._passed_as(die.get_DIE_from_attribute("DW_AT_type"),
                                                                 _UNSUPPORTED)
        return passed

    def _passed_as(self, type_die, unsupported):
        """None for a type both conventions pass as a scalar (a scalar, a
        single-element aggregate), its Aggregate for a struct or union
        wasm32 passes through memory, ``unsupported`` otherwise."""
        type_die = self._underlying(type_die)
        if type_die is None:
            return unsupported
        if type_die.tag == "DW_TAG_base_type":
            size = type_die.attributes.get("DW_AT_byte_size")
            encoding = type_die.attributes.get("DW_AT_encoding")
            # long double, __int128 (two wasm i64s) and _Complex (an aggregate in wasm32).
            if size is None or size.value > 8 or (encoding is not None and encoding.value == 0x03):
                return unsupported
            return None
        if type_die.tag not in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            return None  # pointers, enums
        size = type_die.attributes.get("DW_AT_byte_size")
        if size is None or not isinstance(size.value, int) or size.value == 0:
            return unsupported
        fields: list[tuple[int, int, bool]] = []
        if not self._flatten(type_die, 0, fields, 0):
            return unsupported
        if not fields:
            return unsupported
        if len(fields) == 1 and fields[0][1] == size.value:
            return None  # a single element, passed as that scalar (WebAssemblyABIInfo)
        return Aggregate(size.value, classify(size.value, fields))

    def _underlying(self, type_die):
        """``type_die`` without typedefs and qualifiers."""
        for _ in range(64):
            if type_die.tag not in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                                    "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
                return type_die
            if "DW_AT_type" not in type_die.attributes:
                return None  # const void
            type_die = type_die.get_DIE_from_attribute("DW_AT_type")
        return None

    def _flatten(self, type_die, base: int, fields: list, depth: int) -> bool:
        """Appends the scalar fields of ``type_die`` at byte ``base`` as
        (offset, size, floating point?); False when a layout is unknown."""
        if depth > 16 or len(fields) > 64:
            return False
        type_die = self._underlying(type_die)
        if type_die is None:
            return False
        tag = type_die.tag
        size = type_die.attributes.get("DW_AT_byte_size")
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            for member in type_die.iter_children():
                if member.tag != "DW_TAG_member" or "DW_AT_type" not in member.attributes:
                    continue
                attributes = member.attributes
                offset = 0
                if "DW_AT_data_member_location" in attributes:
                    offset = attributes["DW_AT_data_member_location"].value
                    if not isinstance(offset, int):
                        return False
                if "DW_AT_bit_size" in attributes:  # a bitfield: integer class where its bits are
                    bit = attributes["DW_AT_data_bit_offset"].value if "DW_AT_data_bit_offset" in attributes else                         8 * offset
                    fields.append((bit // 8, 1, False))
                    continue
                if not self._flatten(member.get_DIE_from_attribute("DW_AT_type"), base + offset, fields, depth + 1):
                    return False
            return True
        if tag == "DW_TAG_array_type":
            element = type_die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in type_die.attributes else None
            element_size = self._type_size(element, 0) if element is not None else 0
            count = 1
            for subrange in type_die.iter_children():
                sub = subrange.attributes
                if "DW_AT_count" in sub and isinstance(sub["DW_AT_count"].value, int):
                    count *= sub["DW_AT_count"].value
                elif "DW_AT_upper_bound" in sub and isinstance(sub["DW_AT_upper_bound"].value, int):
                    count *= sub["DW_AT_upper_bound"].value + 1
                else:
                    return False
            if element is None or element_size <= 0 or count > 64:
                return False
            return all(self._flatten(element, base + k * element_size, fields, depth + 1) for k in range(count))
        if size is None or not isinstance(size.value, int):
            return False
        if tag == "DW_TAG_base_type":
            encoding = type_die.attributes.get("DW_AT_encoding")
            if size.value > 8 or (encoding is not None and encoding.value == 0x03):
                return False
            fields.append((base, size.value, encoding is not None and encoding.value == 0x04))  # DW_ATE_float
            return True
        fields.append((base, size.value, False))  # pointer, enum
        return True

    def _scope_pc(self, die, out: Die, context: ExprContext) -> None:
        native = []
        for low, high in self._guest_ranges(die):
            if low != TOMBSTONE:
                native += self.codemap.native_ranges(low, high)
        native = merge_ranges(native)
        if not native:
            return
        base = self.code_address
        if die.tag == "DW_TAG_label":  # a label is one address (DWARF 5 section 3.6)
            out.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, base + native[0][0]))
        elif len(native) == 1:
            start, end = native[0]
            out.attributes.append((_AT["DW_AT_low_pc"], DW_FORM_addr, base + start))
            out.attributes.append((_AT["DW_AT_high_pc"], DW_FORM_data4, end - start))
        else:
            out.attributes.append((_AT["DW_AT_ranges"], DW_FORM_sec_offset,
                                   RangeList(tuple((base + s, base + e) for s, e in native))))

    # -- attributes -----------------------------------------------------------

    def _copy_attributes(self, die, out: Die, context: ExprContext) -> None:
        """Copies every attribute of ``die`` into ``out`` (as _copy_value
        does), with the rules of its abbreviation decided once."""
        specs = die.specs
        found = self._spec_actions.get(id(specs))
        if found is None:  # the specs are kept with their actions, so their id is never reused
            actions = tuple(_attribute_action(name, form)[:3] + (_attribute_action(name, form), name, form)
                            for name, form, _, _ in specs)
            # The static-address check of _data_symbol looks at the location's first byte.
            location = next((k for k, (name, form, _, _) in enumerate(specs) if name == "DW_AT_location" and
                             form in ("DW_FORM_exprloc", "DW_FORM_block1")), -1)
            found = self._spec_actions[id(specs)] = (specs, actions, _encoding_steps(actions), location)
        if found[2] is not None and not out.attributes:
            if not self._own_parameter:
                if self._encode_attributes(die, out, found[2]):
                    return
            elif found[3] >= 0 and specs[found[3]][1] == "DW_FORM_exprloc":
                # The function's own parameter: encoded too when its location
                # takes the -O0 path (the rest of it is plain).
                by_pc = self._o0_parameter(die.values[found[3]], context)
                if by_pc is not None and self._encode_attributes(die, out, found[2], by_pc):
                    self._own_parameter_contexts[id(out)] = context
                    return
        self._copy_actions(die, out, context, found[1])

    def _copy_attributes_generally(self, die, out: Die, context: ExprContext) -> None:
        """_copy_attributes without the encoded form (the rules are decided already)."""
        self._copy_actions(die, out, context, self._spec_actions[id(die.specs)][1])

    def _copy_actions(self, die, out: Die, context: ExprContext, actions: tuple) -> None:
        attributes = out.attributes
        cu_offset = self._cu.cu_offset
        low, high = self._cu_range
        refs = self._refs
        plain_locations = self._plain_locations
        own_parameter = self._own_parameter  # its location may start with where the argument arrives
        for (kind, number, out_form, action, name, form), value in zip(actions, die.values):
            # The common cases inline (a unit has tens of thousands); the same as _copy_value.
            if kind == _COPY_DATA:  # the reader gives data forms as ints
                attributes.append((number, out_form, value))
            elif kind == _COPY_STRING:
                attributes.append((number, DW_FORM_string,
                                   value.decode("utf-8", "replace") if type(value) is bytes else _text(value)))
            elif kind == _COPY_REF:
                target = value if form == "DW_FORM_ref_addr" else value + cu_offset
                attributes.append((number, DW_FORM_ref4 if low <= target < high else DW_FORM_ref_addr, Ref(None)))
                refs.append((out, len(attributes) - 1, target))
            elif kind == _COPY_LOCATION and name == "DW_AT_location" and form == "DW_FORM_exprloc" and \
                    value in plain_locations and not own_parameter:
                attributes.append((number, DW_FORM_exprloc, plain_locations[value]))
            elif kind == _COPY_LOCATION and own_parameter and name == "DW_AT_location" and \
                    form == "DW_FORM_exprloc" and (by_pc := self._o0_parameter(value, context)) is not None:
                attributes.append((number, DW_FORM_exprloc, by_pc))
            elif kind != _SKIP:
                self._copy_value(die, name, form, value, action, out, context)

    def _encode_attributes(self, die, out: Die, encoding: tuple[tuple, tuple], location: bytes | None = None) -> bool:
        """Writes the attributes of ``die`` straight into ``out.encoded``, the
        bytes :class:`DwarfWriter` would make of the attributes
        _copy_attributes gives (``encoding``: _encoding_steps' of its
        abbreviation); False, with ``out`` unchanged, when a value needs the
        general path (a string that is not ASCII, a false flag, which leaves
        its attribute out, a reference outside the unit, a location that is not
        the same in every function). ``location``: the translated
        ``DW_AT_location`` expression, when the caller made it (a parameter
        of the function itself, _o0_parameter).

        Most DIEs of a unit (variables, parameters' types, members) are copied
        so: no attribute tuples, no second pass over them in the writer."""
        steps, shape = encoding
        first = steps[0] if steps else None
        if first is not None and first[0] == _ENCODE_DECLARED:
            # The -O0 variable's shape (most DIEs), its three steps inline.
            _, location_index, name_index, packer, getter, single, (type_index, type_at) = first
            values = die.values
            part = self._encoded_plain_locations.get(values[location_index]) if location is None else \
                uleb128(len(location)) + location
            name = values[name_index]
            if part is None or type(name) is not bytes or not name.isascii():
                return False
            low, high = self._cu_range
            target = values[type_index] + low
            if not low <= target < high:
                return False
            out.encoded = b"".join((part, name, b"\0", packer.pack(getter(values)) if single else
                                    packer.pack(*getter(values))))
            out.shape = shape
            ref = Ref(None)
            out.encoded_refs = ((len(part) + len(name) + 1 + type_at, DW_FORM_ref4, ref),)
            self._encoded_refs.append((out, die, ref, target))
            return True
        parts = []
        size = 0
        refs = []
        values = die.values
        for step in steps:
            kind = step[0]
            if kind == _ENCODE_RUN:
                _, packer, getter, single, run_refs = step
                if run_refs:
                    cu_offset = self._cu.cu_offset
                    low, high = self._cu_range
                    for index, at in run_refs:
                        target = values[index] + cu_offset
                        if not low <= target < high:
                            return False
                        refs.append((size + at, target))
                part = packer.pack() if getter is None else \
                    packer.pack(getter(values)) if single else packer.pack(*getter(values))
            else:
                value = values[step[1]]
                if kind == _ENCODE_LOCATION:
                    part = self._encoded_plain_locations.get(value) if location is None else \
                        uleb128(len(location)) + location
                    if part is None:
                        return False
                elif kind == _ENCODE_STRING:
                    if type(value) is not bytes or not value.isascii():
                        return False
                    part = value + b"\0"
                elif kind == _ENCODE_FLAG:
                    if not value:
                        return False
                    continue
                elif kind == DW_FORM_sdata:
                    part = sleb128(value)
                elif kind == DW_FORM_udata:
                    part = uleb128(value)
                else:
                    assert kind == _ENCODE_BLOCK, kind
                    part = uleb128(len(value)) + bytes(value)
            parts.append(part)
            size += len(part)
        out.encoded = b"".join(parts)
        out.shape = shape
        out_refs = []
        for position, target in refs:
            ref = Ref(None)
            out_refs.append((position, DW_FORM_ref4, ref))
            self._encoded_refs.append((out, die, ref, target))
        out.encoded_refs = tuple(out_refs)
        return True

    def _resolve_encoded_refs(self) -> None:
        """Points the references of the unit's encoded DIEs (all inside the
        unit, whose DIEs are all translated now) at their targets; a DIE
        with a reference to a DIE left out is copied again the general way,
        which drops that attribute (as run() does for the others)."""
        pending, self._encoded_refs = self._encoded_refs, []
        again = {}
        for out, die, ref, target in pending:
            found = self._dies.get(target)
            if found is None:
                again[id(out)] = (out, die)
            else:
                ref.target = found
        own_contexts, self._own_parameter_contexts = self._own_parameter_contexts, {}
        for out, die in again.values():
            out.encoded, out.shape, out.encoded_refs = None, (), ()
            context = own_contexts.get(id(out))
            if context is None:
                self._copy_attributes_generally(die, out, self._unit_context)
            else:  # the function's own parameter, in its function
                self._own_parameter = True
                try:
                    self._copy_attributes_generally(die, out, context)
                finally:
                    self._own_parameter = False

    def _copy_attribute(self, die, attribute, out: Die, context: ExprContext) -> None:
        name, form = attribute.name, attribute.form
        action = self._actions.get((name, form))
        if action is None:
            action = self._actions[(name, form)] = _attribute_action(name, form)
        self._copy_value(die, name, form, attribute.value, action, out, context)

    def _copy_value(self, die, name, form: str, value, action: tuple, out: Die, context: ExprContext) -> None:
        kind, number, out_form = action
        if kind == _COPY_LINKAGE_NAME:
            # C has no linkage names, but wasm32 clang gives `main (argc, argv)`
            # the symbol __main_argc_argv; gdb names a C function by its linkage
            # name when it has one (dwarf2/read.c dwarf2_physname), so `bt` would
            # say __main_argc_argv where natively it says main.
            if self._c_unit:
                return
            kind, number, out_form = out_form
        if kind == _COPY_DATA:
            out.attributes.append((number, out_form, int(value)))
        elif kind == _COPY_STRING:
            out.attributes.append((number, DW_FORM_string, _text(value)))
        elif kind == _COPY_REF:
            target = value if form == "DW_FORM_ref_addr" else value + self._cu.cu_offset
            inside = self._cu_range[0] <= target < self._cu_range[1]
            out.attributes.append((number, DW_FORM_ref4 if inside else DW_FORM_ref_addr, Ref(None)))
            self._refs.append((out, len(out.attributes) - 1, target))
        elif kind == _COPY_LOCATION:
            self._location(die, name, form, value, out, number, context)
        elif kind == _COPY_FLAG:
            if value:
                out.attributes.append((number, DW_FORM_flag_present, None))
        elif kind == _COPY_BLOCK:
            out.attributes.append((number, DW_FORM_block, bytes(value)))
        elif kind == _NOT_COPIED:
            log.debug("DIE at %#x: attribute %s in form %s not copied", die.offset, name, form)

    def _location(self, die, name, form: str, value, out: Die, number: int, context: ExprContext) -> None:
        """Copies location attribute ``name`` in ``form`` (an expression or
        a location list) rewritten over the native frame (module docstring)."""
        frame_base = name == "DW_AT_frame_base"
        if form == "DW_FORM_exprloc" and name in _EXPRLOC_LOCATIONS:
            # What parse_from_attribute gives (a LocationExpr of the bytes), without its checks.
            guest, parsed = bytes(value), None
        else:
            parsed = self._location_parser.parse_from_attribute(GuestAttribute(name, form, value), self._cu_version,
                                                                die=die)
            if isinstance(parsed, LocationExpr):
                guest, parsed = bytes(parsed.loc_expr), None
        if parsed is None and frame_base and context.function is not None:
            slot = self._frame_base_slot(guest, context)
            # A frame base that is a local's whole value translates whenever
            # the local has a slot (expr.translate_expression); es needs no
            # more, so the translation is only made when it is used.
            whole = slot is not None and self._is_whole_local(guest)
            expr = None if whole and self.address_size == 4 else self._expression(guest, context, frame_base)
            if expr is None and not (whole and self.address_size == 4):
                return
            local = self._frame_base_local(guest)
            if local is not None:
                self._frame_base_locals[context.function.position] = local
            if slot is not None and self.address_size == 4:
                # A wasm local: es in every frame (gdbstub.frame_bases), which
                # the stub reports for the innermost frame and the callee's
                # CFI recovers for a caller; gdb reads neither with a packet
                # of its own.
                self.result.frame_base_slots[context.function.native_start] = slot
                out.attributes.append((number, DW_FORM_exprloc, FRAME_BASE_IN_REGISTER))
            else:
                self._frame_base_by_pc(out, number, context.function, expr)
            return
        if parsed is None:
            padded = self._padded(die, guest)
            expr = self._expression(padded, context, frame_base)
            before = self._before_location(padded, context) if expr and self._own_parameter else None
            if before is not None:
                pieces, ready = before
                func = context.function
                if len(pieces) == 2 and pieces[0][1] < ready < func.native_end and self.address_size == 4 and \
                        func.native_start in self.result.frame_base_slots:
                    # The -O0 shape: argument array, wasm local, frame slot,
                    # each over a non-empty range, es known: what
                    # _parameter_by_pc makes of these pieces, from a template
                    # per three expressions.
                    key = (pieces[0][2], pieces[1][2], expr)
                    template = self._es_parameter_templates.get(key, _MISSING)
                    if template is _MISSING:
                        template = self._es_parameter_templates[key] = self._parameter_template(True, key) \
                            if all(self._is_memory_location(x) for x in key) else None
                    if template is not None:
                        out.attributes.append((number, DW_FORM_exprloc,
                                               patch_addresses(template, (self.code_address + ready,), 4)))
                        return
                pieces.append((ready, func.native_end, expr))
                pieces = [piece for piece in pieces if piece[1] > piece[0]]
                chosen = None
                memory = self._memory_locations
                for _, _, x in pieces:  # a register must end an expression (choose_by_pc)
                    if not memory.get(x) and not self._is_memory_location(x):
                        break
                else:
                    chosen = self._parameter_by_pc(context.function, pieces)
                if chosen is not None:
                    out.attributes.append((number, DW_FORM_exprloc, chosen))
                    return
                base = self.code_address
                out.attributes.append((number, DW_FORM_sec_offset,
                                       LocList(tuple((base + s, base + e, x) for s, e, x in pieces))))
                self._unit_loclists += 1
                return
            if padded is guest and expr is not None and name == "DW_AT_location" and \
                    form == "DW_FORM_exprloc" and (guest, False) in self._context_free and \
                    not any(op.op in (0x93, 0x9D) for op in self._parser.parse_expr(guest)):  # no piece
                # The same for every variable located so but the function's own
                # parameters (_before_location): _copy_attributes copies it.
                self._plain_locations[guest] = expr
                self._encoded_plain_locations[guest] = uleb128(len(expr)) + expr
            # An empty expression says "no location" (DWARF 5 section 2.6.1.1.4:
            # optimized out); leaving the attribute out would make an external
            # variable a declaration that gdb looks up as an ELF symbol.
            out.attributes.append((number, DW_FORM_exprloc, expr if expr is not None else b""))
            return
        func = context.function
        entries = []
        at_first_instruction = None  # the guest expression of the entry starting the function's body
        first = self._first_instruction(func) if self._own_parameter and func is not None else None
        base = self._cu_base
        for entry in parsed:
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
                continue
            if not isinstance(entry, LocationEntry):
                continue
            offset = 0 if entry.is_absolute else base
            low, high = entry.begin_offset + offset, entry.end_offset + offset
            if low == TOMBSTONE or base == TOMBSTONE:
                continue
            guest = bytes(entry.loc_expr) if frame_base else self._padded(die, bytes(entry.loc_expr))
            expr = self._expression(guest, context, frame_base)
            if expr is None:
                continue
            for start, end in self.codemap.native_ranges(low, high, self.codemap.function_at(low) or func):
                entries.append((self.code_address + start, self.code_address + end, expr))
                if start == first:
                    at_first_instruction = guest
        if at_first_instruction is not None:
            before = self._before_location(at_first_instruction, context)
            if before is not None and before[1] == first:
                entries += [(self.code_address + s, self.code_address + e, x) for s, e, x in before[0]]
        if entries:
            out.attributes.append((number, DW_FORM_sec_offset, LocList(tuple(sorted(entries)))))
            self._unit_loclists += 1
            if func is not None and not frame_base:
                self._function_loclists.setdefault(func.position, []).append((out, len(out.attributes) - 1))
        else:
            out.attributes.append((number, DW_FORM_exprloc, b""))

    def _o0_parameter(self, guest: bytes, context: ExprContext) -> bytes | None:
        """What _location makes of the function's own parameter located by
        ``guest`` in clang's -O0 shape, straight from the prologue's stores:
        a ``DW_OP_fbreg X`` (its translation made already, the same in every
        function) that a store of parameter local K fills, in a function
        whose frame base is es; one expression (_parameter_template with es)
        choosing the argument array before the native prologue's end, local
        K's slot up to the store and the frame slot from there. None when
        anything differs from that shape, for _location's general path,
        which gives the same expression in this shape (tests/test_dwarf_translate.py)."""
        known = self._o0_guests.get(guest)
        if known is None:
            expr = self._context_free.get((guest, False))
            if not expr or guest not in self._not_composite:  # _location has not met it yet, or it has pieces
                return None
            home = self._home(guest)
            if home is None or home[0]:
                return None
            known = self._o0_guests[guest] = (expr, home[1])
        expr, frame_offset = known
        func = context.function
        prologue = self._o0_prologues.get(func.position, _MISSING)
        if prologue is _MISSING:
            prologue = self._o0_prologues[func.position] = self._o0_prologue(func)
        if prologue is None:
            return None
        first, stores = prologue
        store = stores.get(frame_offset)
        if store is None:
            return None
        homes = self._argument_store_homes(store, context)
        if homes is None:
            return None
        entry, in_local, ready = homes
        if not first < ready < func.native_end:
            return None
        key = (entry, in_local, expr)
        template = self._es_parameter_templates.get(key, _MISSING)
        if template is _MISSING:
            template = self._es_parameter_templates[key] = self._parameter_template(True, key) \
                if all(self._is_memory_location(x) for x in key) else None
        if template is None:
            return None
        return patch_addresses(template, (self.code_address + ready,), 4)

    def _o0_prologue(self, func) -> tuple[int, dict[int, ArgumentStore]] | None:
        """(first INSTRUCTION point, the prologue's argument stores) of
        ``func`` for _o0_parameter; None when its parameters cannot take that
        path (no native prologue before its first point, a frame base that
        is not es, an image that is not x32)."""
        first = self._first_instruction(func)
        if first is None or first <= func.native_start or self.address_size != 4 or \
                func.native_start not in self.result.frame_base_slots:
            return None
        param_count = self._param_counts.get(func.position)
        if param_count is None:
            param_count = self._param_counts[func.position] = len(self.info.func_type(func.wasm_index).params)
        return first, self._prologue_stores(func, param_count)

    def _frame_base_by_pc(self, out: Die, number: int, func, expr: bytes) -> None:
        """The frame base of ``func`` when it is not es: linear-memory
        address 0 before the function's first wasm instruction (at the ENTRY
        site and in the prologue the frame-base local's slot is still stale
        stack, and a frame base read from it sent argument reads to arbitrary
        addresses, "Cannot access memory" in the first frame gdb prints; from
        0 they read linear memory, as natively arguments read stack garbage
        before the prologue), ``expr`` from there on: one expression choosing
        by pc (choose_by_pc), or a location list when ``expr`` is no plain
        address computation."""
        start = self._first_instruction(func)
        if start is None:
            pieces = [(func.native_start, func.native_end, bytes([DW_OP_lit0]))]
        else:
            pieces = [(start, func.native_end, expr)]
            if start > func.native_start:
                pieces.insert(0, (func.native_start, start, bytes([DW_OP_lit0])))
        chosen = choose_by_pc(pieces, self.code_address, self.address_size) \
            if all(self._is_memory_location(x) for _, _, x in pieces) else None
        if chosen is not None:
            out.attributes.append((number, DW_FORM_exprloc, chosen))
            return
        base = self.code_address
        out.attributes.append((number, DW_FORM_sec_offset, LocList(tuple((base + s, base + e, x) for s, e, x in pieces))))
        self._unit_loclists += 1

    def _parameter_by_pc(self, func, pieces: list[tuple[int, int, bytes]]) -> bytes | None:
        """One expression for a parameter's ``pieces`` (_before_location:
        the argument array up to the first wasm instruction, then maybe its
        wasm local, then its own location).

        Where the function's frame base is es (x32 images, gdbstub
        .frame_bases), the first boundary is tested on es, not on the pc:
        the stub reports es 0 exactly until the first wasm instruction
        (frame_bases.innermost_frame_base), and a caller frame (always past
        it) has its es from the CFI.  That test holds in lldb too, which
        leaves DW_OP_addr a file address (lldb DWARFExpression.cpp: only a
        dereference converts it to a load address), so its DW_OP_lt against
        rip picks the last piece: right from the parameter's store on,
        stale between the first wasm instruction and that store (lldb's
        ``b FUNC`` stops after it, at prologue_end).  gdb relocates
        DW_OP_addr and reads every piece right.  Elsewhere: choose_by_pc."""
        first = self._first_instruction(func)
        es = (self.address_size == 4 and func.native_start in self.result.frame_base_slots and len(pieces) >= 2
              and pieces[0][0] == func.native_start and pieces[0][1] == first)
        chosen = pieces[1:] if es else pieces  # the pieces choose_by_pc chooses between
        if not chosen:
            return None
        if not contiguous(chosen):
            return None
        # The expression's layout depends on the pieces' expressions alone
        # (most parameters share a handful): made once, its addresses patched.
        key = (es, tuple([expr for _, _, expr in pieces]))
        template = self._parameter_templates.get(key, _MISSING)
        if template is _MISSING:
            template = self._parameter_templates[key] = self._parameter_template(es, key[1])
        if template is None:
            return None
        return patch_addresses(template, [self.code_address + end for _, end, _ in chosen[:-1]], self.address_size)

    def _parameter_template(self, es: bool, expressions: tuple[bytes, ...]) -> ByPcTemplate | None:
        """_parameter_by_pc's expression for pieces with ``expressions``,
        its addresses left zero (by_pc_template)."""
        if not es:
            return by_pc_template(expressions, self.address_size)
        rest_template = by_pc_template(expressions[1:], self.address_size)
        if rest_template is None:
            return None
        rest, positions = rest_template
        before = expressions[0]
        skip = bytes([_OP_SKIP]) + len(rest).to_bytes(2, "little", signed=True)
        branch = bytes([_OP_BRA]) + (len(before) + len(skip)).to_bytes(2, "little", signed=True)
        if len(rest) >= 0x8000 or len(before) + len(skip) >= 0x8000:
            return None
        # es != 0: past the first wasm instruction, the rest; else the
        # argument array.  The skip's target is an operation (choose_by_pc).
        if not rest.endswith(bytes([_OP_NOP])):
            rest += bytes([_OP_NOP])
        skip = bytes([_OP_SKIP]) + (len(rest) - 1).to_bytes(2, "little", signed=True)
        prefix = FRAME_BASE_IN_REGISTER + branch + before + skip
        return prefix + rest, tuple(len(prefix) + position for position in positions)

    def _is_memory_location(self, expr: bytes) -> bool:
        """``expr`` (a translated expression) is a memory location
        description: non-empty, no operation of _NOT_A_MEMORY_LOCATION."""
        known = self._memory_locations.get(expr)
        if known is None:
            try:
                ops = self._parser.parse_expr(expr)
            except PYELFTOOLS_ERRORS:
                ops = ()
            known = self._memory_locations[expr] = bool(ops) and not any(op.op in _NOT_A_MEMORY_LOCATION
                                                                         for op in ops)
        return known

    def _is_whole_local(self, expr: bytes) -> bool:
        """``expr`` is ``DW_OP_WASM_location 0 N`` alone or with ``DW_OP_stack_value``."""
        ops = self._parser.parse_expr(expr)
        return len(ops) == 1 or (len(ops) == 2 and ops[1].op == 0x9F)

    def _before_location(self, guest: bytes, context: ExprContext):
        """For a parameter of ``context.function`` located by ``guest`` from
        the function's first instruction on: ``(pieces, ready)``, the image
        ranges before ``ready`` where its value is not yet where ``guest``
        says, each with an expression reading it where it is, and the image
        offset from which ``guest`` holds; None when that is not known.

        A breakpoint at the function's first byte (``break *f``, the stop a
        session starts at, a caller's view of a callee it just entered)
        would otherwise read the frame slots the prologue has not filled
        (an -O2 parameter in a wasm local) or the C frame before the code
        stored the argument there (-O0, ``DW_OP_fbreg``): 0 or stale stack.
        Natively, gcc -O0 code shows stale stack there too (its locations
        are frame-based); here the value is known, so it is shown:

        * before the native prologue (the ENTRY site up to the first
          INSTRUCTION point): parameter K is entry K of the argument array
          at rsi (``DW_OP_breg4 8K``, codemem/abi.py "Registers");
        * -O0, from there to the end of the store that puts local K at
          frame base + X (:mod:`.prologue`): local K's slot."""
        func = context.function
        first = self._first_instruction(func)
        if first is None or first <= func.native_start:
            return None
        home = self._home(guest)
        if home is None:
            return None
        in_wasm_local, operand = home
        param_count = self._param_counts.get(func.position)
        if param_count is None:
            param_count = self._param_counts[func.position] = len(self.info.func_type(func.wasm_index).params)
        if in_wasm_local:
            if operand >= param_count:
                return None
            entry = self._expression(guest, self._entry_context(func), False)
            return ([(func.native_start, first, entry)], first) if entry else None
        store = self._prologue_stores(func, param_count).get(operand)
        if store is None:
            return None
        homes = self._argument_store_homes(store, context)
        if homes is None:
            return None
        entry, in_local, ready = homes
        return [(func.native_start, first, entry), (first, ready, in_local)], ready

    def _argument_store_homes(self, store: ArgumentStore, context) -> tuple[bytes, bytes, int] | None:
        """Where the parameter that the prologue's ``store`` saves lives in
        ``context.function``: (its argument-array entry's location, its wasm
        local's location, the native pc of the first point at or after the
        store, from which the frame slot holds it); None when a location
        cannot be translated."""
        func = context.function
        try:
            # Entry K of the argument array is at rsi + 8K in every function
            # (the store's local is a parameter: argument_stores checks it).
            entry = self._entry_locations.get(store.local)
            if entry is None:
                entry = self._entry_locations[store.local] = local_location(store.local, self._entry_context(func))
            in_local = local_location(store.local, context)
        except UntranslatableExpression:
            return None
        # The first point at or after the store (points are sorted by wasm offset).
        points = self.line_mapper.points(func)
        after = bisect.bisect_left(points, (store.end,))
        ready = points[after][1] if after < len(points) else func.native_end
        return entry, in_local, ready

    def _parameter_home(self, guest: bytes) -> tuple[bool, int] | None:
        """What _before_location needs of a parameter's location ``guest``:
        (True, K) for ``DW_OP_WASM_location 0 K ...`` (a wasm local), (False,
        X) for a lone ``DW_OP_fbreg X``, None for anything else."""
        try:
            ops = self._parser.parse_expr(guest)
        except PYELFTOOLS_ERRORS:
            return None
        if not ops:
            return None
        if ops[0].op_name == "DW_OP_WASM_location" and ops[0].args[0] == 0:
            return True, ops[0].args[1]
        if len(ops) != 1 or ops[0].op_name != "DW_OP_fbreg":
            return None
        return False, ops[0].args[0]

    def _prologue_stores(self, func, param_count: int) -> dict[int, ArgumentStore]:
        stores = self._argument_stores.get(func.position)
        if stores is None:
            frame_base = self._frame_base_locals.get(func.position)
            stores = {} if frame_base is None else argument_stores(
                self.info.data, func.body_wasm_offset, self.info.code_section_end or len(self.info.data), frame_base,
                param_count)
            self._argument_stores[func.position] = stores
        return stores

    def _home(self, guest: bytes) -> tuple[bool, int] | None:
        """_parameter_home of ``guest``, memoized (a unit's functions share
        a few frame bases and parameter locations)."""
        home = self._parameter_homes.get(guest, _MISSING)
        if home is _MISSING:
            home = self._parameter_homes[guest] = self._parameter_home(guest)
        return home

    def _frame_base_local(self, expr: bytes) -> int | None:
        """The wasm local a frame base ``expr`` names, if it is one."""
        home = self._home(expr)
        return home[1] if home is not None and home[0] else None

    def _frame_base_slot(self, expr: bytes, context: ExprContext) -> int | None:
        """The rbp offset of the local a frame base ``expr`` names, if it is
        one (``DW_OP_WASM_location 0 N``)."""
        local = self._frame_base_local(expr)
        if local is None or context.local_slot is None:
            return None
        slot = context.local_slot(local)
        return slot[0] if slot is not None else None

    def _padded(self, die, expr: bytes) -> bytes:
        """``expr`` with an empty piece for the bytes a composite location
        (``DW_OP_piece``s) leaves undescribed at the end of the variable.

        clang emits such short composites (a struct of 20 bytes in three
        4-byte pieces); gdb 13 takes the bytes past the last piece for an
        implicit pointer (dwarf2/loc.c check_pieced_synthetic_pointer) and
        prints ``<synthetic pointer>`` for ints, where DWARF means "not
        available": the explicit empty piece makes it ``<optimized out>``."""
        if expr in self._not_composite:
            return expr
        try:
            ops = self._parser.parse_expr(expr)
        except PYELFTOOLS_ERRORS:
            return expr
        pieces = [op for op in ops if op.op_name in ("DW_OP_piece", "DW_OP_bit_piece")]
        if not pieces or ops[-1].op_name not in ("DW_OP_piece", "DW_OP_bit_piece"):
            self._not_composite.add(expr)
            return expr
        described = sum(op.args[0] * 8 if op.op_name == "DW_OP_piece" else op.args[0] for op in pieces)
        size = self._type_size(die, 0) if "DW_AT_type" in die.attributes else 0
        missing = size * 8 - described
        if missing <= 0:
            return expr
        if missing % 8:
            return expr + bytes([0x9D]) + uleb128(missing) + uleb128(0)  # DW_OP_bit_piece SIZE 0
        return expr + bytes([0x93]) + uleb128(missing // 8)  # DW_OP_piece SIZE

    def _expression(self, expr: bytes, context: ExprContext, frame_base: bool) -> bytes | None:
        key = (expr, frame_base)
        translated = self._context_free.get(key)
        if translated is not None:
            return translated
        try:
            translated = translate_expression(expr, context, self._parser, frame_base=frame_base)
        except UntranslatableExpression as e:
            self.result.dropped_locations += 1
            log.debug("location %s not translated: %s", expr.hex(), e)
            return None
        # Most expressions name no wasm location (a unit repeats `DW_OP_fbreg
        # N` thousands of times): their translation is the same in every
        # function, so it is made once.
        if not any(op.op in _CONTEXT_OPS for op in self._parser.parse_expr(expr)):
            self._context_free[key] = translated
        return translated

