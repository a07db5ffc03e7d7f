"""Reading the guest's debugging information entries, fast.

The translation copies every DIE of every unit, so reading them is most of its
cost. pyelftools decodes each attribute through construct (a parser object
per form, a container per DIE); this reader decodes a unit's abbreviation
table once into a *plan* per abbreviation code (the attribute names, form
names and a small decoder number per attribute, DWARF 5 section 7.5.3) and
then reads the DIEs straight from the ``.debug_info`` bytes, a whole unit at a
time, into a tree:

    .debug_info   unit header | code attr attr ... | code attr ... | 0 | ...
                                 \\_ plan[code]: ((name, form, decoder, arg), ...)

A DIE whose attributes are all fixed-size (data, references, addresses,
``strp`` offsets, flags) or exprloc blocks is read by its abbreviation's
*layout* (:func:`_layout`): one ``struct`` unpack per run of fixed-size
values, a slice per block, then the few values a run gives raw (strings by
their ``.debug_str`` offset, memoized per unit; flags as bools).

It yields what pyelftools yields, so the translator reads DIEs the same way
from either: a DIE has ``offset``, ``tag`` (the ``DW_TAG_*`` name, or the
number when unknown), ``attributes`` (``DW_AT_*`` name -> :class:`GuestAttribute`
with ``name``, ``form`` and ``value``), ``iter_children()``,
``get_DIE_from_attribute(name)`` and ``cu`` (the pyelftools CompileUnit, whose
header and line program stay pyelftools'). Values are pyelftools': unsigned
``data*``, CU-relative references, strings as bytes with ``strp``/``strx``
resolved, ``addrx``/``loclistx``/``rnglistx`` resolved through the unit's
bases (DWARF 5 sections 7.27-7.29), flags as bools, blocks as bytes (pyelftools
gives lists of ints; both convert with ``bytes()``).

Only units are read that the translator asks for, plus those a cross-unit
reference leads into. Malformed input raises :class:`DwarfFormatError` naming
the offset and the problem.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from elftools.dwarf.enums import ENUM_DW_AT, ENUM_DW_FORM, ENUM_DW_TAG

from ..debugimage.dwarf import read_sleb128 as _sleb
from ..debugimage.dwarf import read_uleb128 as _uleb

__all__ = ["DwarfFormatError", "GuestAttribute", "GuestDie", "GuestDieReader"]


def _names(enum: dict) -> dict[int, str]:
    # The reverse of a pyelftools enum as construct builds it (a later name
    # wins for a number with two: DW_AT_stride_size over DW_AT_bit_stride).
    return dict((value, name) for name, value in enum.items() if name != "_default_")


_AT_NAMES = _names(ENUM_DW_AT)
_TAG_NAMES = _names(ENUM_DW_TAG)
_FORM_NAMES = _names(ENUM_DW_FORM)

#: DIEs nested deeper than this are refused (a C program's deepest nesting is a
#: few scopes; a corrupt table must not recurse the translator to death).
MAX_NESTING = 200

# Decoders (the third item of a plan entry; the fourth is its argument).
_FIXED = 0        # unsigned little-endian integer of ARG bytes
_ULEB = 1
_SLEB = 2
_CSTRING = 3      # inline NUL-terminated string
_BLOCK_FIXED = 4  # length in ARG bytes, then the block
_BLOCK_ULEB = 5   # ULEB128 length, then the block
_STRP = 6         # offset (ARG bytes) into .debug_str
_LINE_STRP = 7    # offset into .debug_line_str
_IMPLICIT = 8     # the value is in the abbreviation (ARG)
_FLAG = 9
_PRESENT = 10
_STRX = 11        # index (ARG bytes, 0: ULEB128) into the unit's string offsets
_ADDRX = 12       # index into the unit's .debug_addr entries
_LOCLISTX = 13
_RNGLISTX = 14
_BYTES = 15       # ARG bytes as they are (data16)
_INDIRECT = 16    # ULEB128 form code, then a value in that form

_STRUCTS = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}
#: struct codes of the fixed-size values _layout reads in runs (by their size in bytes).
_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class DwarfFormatError(ValueError):
    """The guest's ``.debug_info``/``.debug_abbrev`` cannot be read (the message
    says where and why)."""


class GuestAttribute(NamedTuple):
    name: str | int
    form: str
    value: object


class GuestDie:
    """One DIE (see the module docstring for what it offers). ``specs`` and
    ``values`` are its attributes as read: ``specs[k]`` is ``(name, form,
    decoder, argument)`` of ``values[k]``; ``attributes`` is the same as a
    dict of :class:`GuestAttribute`, made on first use (the translator walks
    ``specs`` and ``values`` and asks few DIEs for it)."""

    __slots__ = ("offset", "tag", "specs", "values", "children", "cu", "_reader", "_attributes")

    def __init__(self, offset: int, tag, specs: tuple, values: list, cu, reader: "GuestDieReader"):
        self.offset = offset
        self.tag = tag
        self.specs = specs
        self.values = values
        self.children: list[GuestDie] = []
        self.cu = cu
        self._reader = reader
        self._attributes = None

    @property
    def attributes(self) -> dict:
        attributes = self._attributes
        if attributes is None:
            new = tuple.__new__  # GuestAttribute(...) without its Python-level __new__
            attributes = self._attributes = {spec[0]: new(GuestAttribute, (spec[0], spec[1], value))
                                             for spec, value in zip(self.specs, self.values)}
        return attributes

    def find(self, name: str) -> GuestAttribute | None:
        """``attributes.get(name)`` without making the dict."""
        for spec, value in zip(self.specs, self.values):
            if spec[0] == name:
                return GuestAttribute(name, spec[1], value)
        return None

    @property
    def has_children(self) -> bool:
        return bool(self.children)

    def iter_children(self):
        return iter(self.children)

    def get_DIE_from_attribute(self, name: str) -> "GuestDie":
        """The DIE a reference attribute points at."""
        attribute = self.attributes[name]
        if attribute.form in ("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref",
                              "DW_FORM_ref_udata"):
            return self._reader.die_at(attribute.value + self.cu.cu_offset)
        if attribute.form == "DW_FORM_ref_addr":
            return self._reader.die_at(attribute.value)
        raise DwarfFormatError(f"DIE at {self.offset:#x}: {name} in form {attribute.form} is not a reference")


class _Unit:
    """What decoding one unit's attributes needs (pyelftools' CompileUnit ``cu``)."""

    __slots__ = ("cu", "offset_size", "address_size", "version", "str_offsets_base", "addr_base",
                 "loclists_base", "rnglists_base")

    def __init__(self, cu):
        self.cu = cu
        self.offset_size = 8 if cu.structs.dwarf_format == 64 else 4
        self.address_size = cu["address_size"]
        self.version = cu["version"]
        self.str_offsets_base = self.addr_base = self.loclists_base = self.rnglists_base = None


class GuestDieReader:
    """DIEs of the DWARF sections ``sections`` (name -> bytes), whose units
    pyelftools' ``dwarf`` (a DWARFInfo over the same bytes) iterates."""

    def __init__(self, sections: dict[str, bytes], dwarf):
        self._info = bytes(sections.get(".debug_info", b""))
        self._abbrev = bytes(sections.get(".debug_abbrev", b""))
        self._str = bytes(sections.get(".debug_str", b""))
        self._line_str = bytes(sections.get(".debug_line_str", b""))
        self._str_offsets = bytes(sections.get(".debug_str_offsets", b""))
        self._addr = bytes(sections.get(".debug_addr", b""))
        self._loclists = bytes(sections.get(".debug_loclists", b""))
        self._rnglists = bytes(sections.get(".debug_rnglists", b""))
        self._dwarf = dwarf
        self._plans: dict[tuple[int, int, int], dict[int, tuple]] = {}
        self._tops: dict[int, GuestDie] = {}  # unit offset -> its top DIE
        self._dies: dict[int, GuestDie] = {}  # .debug_info offset -> DIE, of the units read

    # -- public -----------------------------------------------------------------

    def top_die(self, cu) -> GuestDie:
        """The top DIE of pyelftools unit ``cu``, with its whole tree read."""
        top = self._tops.get(cu.cu_offset)
        if top is None:
            try:
                top = self._tops[cu.cu_offset] = self._read_unit(cu)
            except (IndexError, struct.error, KeyError, ValueError) as e:
                if isinstance(e, DwarfFormatError):
                    raise
                raise DwarfFormatError(f"unit at .debug_info {cu.cu_offset:#x} is truncated or malformed "
                                       f"({type(e).__name__}: {e})") from e
        return top

    def die_at(self, offset: int) -> GuestDie:
        """The DIE at ``.debug_info`` offset ``offset`` (reading its unit if needed)."""
        die = self._dies.get(offset)
        if die is None:
            cu = self._unit_containing(offset)
            if cu is not None:
                self.top_die(cu)
                die = self._dies.get(offset)
            if die is None:
                raise DwarfFormatError(f"a reference to .debug_info {offset:#x}, where no DIE starts")
        return die

    def release(self) -> None:
        """Forgets every DIE read (they refer to the reader: a cycle that
        reference counting alone then frees)."""
        self._dies.clear()
        self._tops.clear()

    # -- units --------------------------------------------------------------------

    def _unit_containing(self, offset: int):
        for cu in self._dwarf.iter_CUs():
            if cu.cu_offset <= offset < cu.cu_offset + cu.size:
                return cu
        return None

    def _plan(self, abbrev_offset: int, unit: _Unit) -> dict[int, tuple]:
        """Abbreviation code -> (tag, has_children, ((name, form, decoder, arg), ...),
        layout) for the table at ``abbrev_offset`` (DWARF 5 section 7.5.3);
        ``layout`` is :func:`_layout`'s of the specs."""
        key = (abbrev_offset, unit.offset_size, unit.address_size if unit.version > 2 else -unit.address_size)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        data, pos, plan = self._abbrev, abbrev_offset, {}
        if not 0 <= pos < len(data):
            raise DwarfFormatError(f"abbreviation table offset {pos:#x} is outside .debug_abbrev")
        try:
            while True:
                code, pos = _uleb(data, pos)
                if code == 0:
                    break
                tag, pos = _uleb(data, pos)
                children = data[pos]
                pos += 1
                specs = []
                while True:
                    attribute, pos = _uleb(data, pos)
                    form, pos = _uleb(data, pos)
                    if attribute == 0 and form == 0:
                        break
                    implicit = None
                    if form == 0x21:  # DW_FORM_implicit_const: the value follows in the table
                        implicit, pos = _sleb(data, pos)
                    form_name = _FORM_NAMES.get(form)
                    if form_name is None:
                        raise DwarfFormatError(f"abbreviation {code} at .debug_abbrev {abbrev_offset:#x} "
                                               f"uses unknown form {form:#x}")
                    decoder, arg = _decoder(form, unit, implicit)
                    specs.append((_AT_NAMES.get(attribute, attribute), form_name, decoder, arg))
                plan[code] = (_TAG_NAMES.get(tag, tag), children != 0, tuple(specs), _layout(specs))
        except IndexError as e:
            raise DwarfFormatError(f"the abbreviation table at .debug_abbrev {abbrev_offset:#x} is truncated") from e
        self._plans[key] = plan
        return plan

    def _read_unit(self, cu) -> GuestDie:
        unit = _Unit(cu)
        plan = self._plan(cu["debug_abbrev_offset"], unit)
        data = self._info
        end = min(cu.cu_offset + cu.size, len(data))
        pos = cu.cu_die_offset
        dies = self._dies
        top = None
        stack: list[GuestDie] = []
        decode = self._decode
        strings = self._str
        string_memo: dict[int, bytes] = {}  # .debug_str offset -> the string (names repeat)
        while pos < end:
            offset = pos
            code = data[pos]
            if code < 0x80:  # a one-byte ULEB128: the first 127 abbreviations, nearly every DIE
                pos += 1
            else:
                code, pos = _uleb(data, pos)
            if code == 0:  # the end of a sibling list
                if not stack:
                    raise DwarfFormatError(f"a null entry at .debug_info {offset:#x} where a DIE should start")
                stack.pop()
                if not stack:
                    break
                continue
            entry = plan.get(code)
            if entry is None:
                raise DwarfFormatError(f"DIE at .debug_info {offset:#x} has abbreviation code {code}, "
                                       f"which its table does not define")
            tag, has_children, specs, layout = entry
            indirect = False
            if layout is not None:
                # Runs of fixed-size values in one unpack each, blocks between
                # them; then the values the runs give as raw numbers.
                segments, fixes = layout
                values = []
                for segment in segments:
                    if segment is None:  # exprloc/block: ULEB128 length, then the bytes
                        length = data[pos]
                        pos += 1
                        if length >= 0x80:
                            length, pos = _uleb(data, pos - 1)
                        values.append(data[pos:pos + length])
                        pos += length
                    else:
                        values += segment.unpack_from(data, pos)
                        pos += segment.size
                for index, decoder, arg in fixes:
                    if decoder == _STRP:
                        at = values[index]
                        value = string_memo.get(at)
                        if value is None:
                            stop = strings.find(b"\0", at)
                            if stop < 0 or at >= len(strings):
                                raise DwarfFormatError(f"DIE at .debug_info {offset:#x}: a string at .debug_str "
                                                       f"offset {at:#x}, outside the section or unterminated")
                            value = string_memo[at] = strings[at:stop]
                        values[index] = value
                    elif decoder == _FLAG:
                        values[index] = values[index] != 0
                    else:  # _PRESENT, _IMPLICIT: nothing was read
                        values[index] = arg
            else:
                values = []
                for name, form, decoder, arg in specs:
                    if decoder == _FIXED:
                        # data1/ref1/flag-sized values are most of them: no slice for one byte.
                        value = data[pos] if arg == 1 else int.from_bytes(data[pos:pos + arg], "little")
                        pos += arg
                    elif decoder == _STRP:
                        at = int.from_bytes(data[pos:pos + arg], "little")
                        pos += arg
                        stop = strings.find(b"\0", at)
                        if stop < 0 or at >= len(strings):
                            raise DwarfFormatError(f"DIE at .debug_info {offset:#x}: a string at .debug_str "
                                                   f"offset {at:#x}, outside the section or unterminated")
                        value = strings[at:stop]
                    elif decoder == _BLOCK_ULEB:
                        length = data[pos]
                        pos += 1
                        if length >= 0x80:
                            length, pos = _uleb(data, pos - 1)
                        value = data[pos:pos + length]
                        pos += length
                    elif decoder == _ULEB:
                        value = data[pos]
                        pos += 1
                        if value >= 0x80:
                            value, pos = _uleb(data, pos - 1)
                    elif decoder == _FLAG:
                        value = data[pos] != 0
                        pos += 1
                    elif decoder == _PRESENT:
                        value = True
                    else:
                        value, pos, real_form = decode(data, pos, form, decoder, arg, unit, offset)
                        if real_form is not form:  # DW_FORM_indirect: this DIE's own form
                            indirect = True
                            value = (real_form, value)
                    values.append(value)
            if pos > end:
                raise DwarfFormatError(f"DIE at .debug_info {offset:#x} runs past the end of its unit")
            if indirect:  # specs of this DIE alone, with the forms it names
                specs = tuple((name, value[0], decoder, arg) if form == "DW_FORM_indirect" else (name, form, decoder, arg)
                              for (name, form, decoder, arg), value in zip(specs, values))
                values = [value[1] if spec_form == "DW_FORM_indirect" else value
                          for (_, spec_form, _, _), value in zip(entry[2], values)]
            die = GuestDie(offset, tag, specs, values, cu, self)
            dies[offset] = die
            if stack:
                stack[-1].children.append(die)
            elif top is None:
                top = die
                self._bases(unit, die)
            else:
                raise DwarfFormatError(f"a second top-level DIE at .debug_info {offset:#x}")
            if has_children:
                if len(stack) >= MAX_NESTING:
                    raise DwarfFormatError(f"DIEs nested deeper than {MAX_NESTING} at .debug_info {offset:#x}")
                stack.append(die)
            elif not stack:
                break
        if top is None:
            raise DwarfFormatError(f"unit at .debug_info {cu.cu_offset:#x} has no DIE")
        if stack:
            raise DwarfFormatError(f"unit at .debug_info {cu.cu_offset:#x} ends inside a DIE's children")
        if unit.version >= 5 and self._has_indexed_forms(plan):
            self._resolve_indexed(unit, top)
        return top

    # -- values -------------------------------------------------------------------

    def _decode(self, data: bytes, pos: int, form: str, decoder: int, arg, unit: _Unit, offset: int):
        """(value, new position, form) of an attribute the fast loop does not decode."""
        if decoder == _SLEB:
            value, pos = _sleb(data, pos)
        elif decoder == _CSTRING:
            end = data.index(b"\0", pos)
            value, pos = data[pos:end], end + 1
        elif decoder == _BLOCK_FIXED:
            length = int.from_bytes(data[pos:pos + arg], "little")
            pos += arg
            value, pos = data[pos:pos + length], pos + length
        elif decoder == _BLOCK_ULEB:
            length, pos = _uleb(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif decoder in (_STRP, _LINE_STRP):
            at = int.from_bytes(data[pos:pos + arg], "little")
            pos += arg
            value = _string_at(self._str if decoder == _STRP else self._line_str, at,
                               ".debug_str" if decoder == _STRP else ".debug_line_str")
        elif decoder == _IMPLICIT:
            value = arg
        elif decoder in (_STRX, _ADDRX, _LOCLISTX, _RNGLISTX):
            if arg:
                value = int.from_bytes(data[pos:pos + arg], "little")
                pos += arg
            else:
                value, pos = _uleb(data, pos)
            # Resolved once the unit's bases are known (_resolve_indexed).
            value = _Indexed(decoder, value)
        elif decoder == _BYTES:
            value, pos = data[pos:pos + arg], pos + arg
        elif decoder == _INDIRECT:
            code, pos = _uleb(data, pos)
            form = _FORM_NAMES.get(code)
            if form is None or code in (0x16, 0x21):
                raise DwarfFormatError(f"DIE at .debug_info {offset:#x}: DW_FORM_indirect names form {code:#x}")
            decoder, arg = _decoder(code, unit, None)
            if decoder == _FIXED:
                value, pos = int.from_bytes(data[pos:pos + arg], "little"), pos + arg
            elif decoder == _ULEB:
                value, pos = _uleb(data, pos)
            elif decoder == _FLAG:
                value, pos = data[pos] != 0, pos + 1
            elif decoder == _PRESENT:
                value = True
            else:
                value, pos, form = self._decode(data, pos, form, decoder, arg, unit, offset)
        else:  # pragma: no cover - every decoder is handled above or in the fast loop
            raise DwarfFormatError(f"DIE at .debug_info {offset:#x}: no decoder for {form}")
        return value, pos, form

    @staticmethod
    def _has_indexed_forms(plan: dict[int, tuple]) -> bool:
        return any(decoder in (_STRX, _ADDRX, _LOCLISTX, _RNGLISTX, _INDIRECT)
                   for _, _, specs, _ in plan.values() for _, _, decoder, _ in specs)

    def _bases(self, unit: _Unit, top: GuestDie) -> None:
        """The unit's DWARF 5 index bases, from its top DIE (section 7.5.1)."""
        bases = {"DW_AT_str_offsets_base": "str_offsets_base", "DW_AT_addr_base": "addr_base",
                 "DW_AT_GNU_addr_base": "addr_base", "DW_AT_loclists_base": "loclists_base",
                 "DW_AT_rnglists_base": "rnglists_base"}
        for (name, _, _, _), value in zip(top.specs, top.values):
            if name in bases and isinstance(value, int) and not isinstance(value, bool):
                setattr(unit, bases[name], value)

    def _resolve_indexed(self, unit: _Unit, top: GuestDie) -> None:
        """Replaces every indexed value of the unit by what it indexes."""
        pending = [top]
        while pending:
            die = pending.pop()
            pending.extend(die.children)
            values = die.values
            for k, value in enumerate(values):
                if isinstance(value, _Indexed):
                    values[k] = self._indexed(unit, value, die)

    def _indexed(self, unit: _Unit, indexed: "_Indexed", die: GuestDie):
        size = unit.offset_size
        if indexed.decoder == _STRX:
            base = self._base(unit.str_offsets_base, "DW_AT_str_offsets_base", die)
            at = base + indexed.index * size
            return _string_at(self._str, _word(self._str_offsets, at, size, ".debug_str_offsets"), ".debug_str")
        if indexed.decoder == _ADDRX:
            base = self._base(unit.addr_base, "DW_AT_addr_base", die)
            at = base + indexed.index * unit.address_size
            return _word(self._addr, at, unit.address_size, ".debug_addr")
        section, base, name = ((self._loclists, unit.loclists_base, "DW_AT_loclists_base")
                               if indexed.decoder == _LOCLISTX else
                               (self._rnglists, unit.rnglists_base, "DW_AT_rnglists_base"))
        base = self._base(base, name, die)
        return base + _word(section, base + indexed.index * size, size, ".debug_loclists"
                            if indexed.decoder == _LOCLISTX else ".debug_rnglists")

    @staticmethod
    def _base(value: int | None, name: str, die: GuestDie) -> int:
        if value is None:
            raise DwarfFormatError(f"DIE at .debug_info {die.offset:#x} uses an index, but its unit has no {name}")
        return value


def _layout(specs: list[tuple]) -> tuple[tuple, tuple] | None:
    """How _read_unit reads a DIE of ``specs`` ((name, form, decoder, arg), ...)
    in few steps: ``(segments, fixes)``, ``segments`` a struct.Struct per run
    of fixed-size values (data, references, addresses, ``strp`` offsets,
    flags; an implicit value takes a ``0s``) or None for an exprloc/block
    with a ULEB128 length between them, and ``fixes`` (index, decoder,
    value) of the values a run gives raw (``strp``: the string at that
    offset; flag: a bool; present/implicit: ``value``). None when a spec
    needs more (LEB128 data, inline strings, indexed forms): the general loop."""
    segments: list = []
    fixes = []
    run = ""
    for index, (_, _, decoder, arg) in enumerate(specs):
        if decoder == _BLOCK_ULEB:
            if run:
                segments.append(struct.Struct("<" + run))
                run = ""
            segments.append(None)
            continue
        if decoder in (_FIXED, _STRP) and arg in _CODES:
            run += _CODES[arg]
            if decoder == _STRP:
                fixes.append((index, _STRP, None))
        elif decoder == _FLAG:
            run += "B"
            fixes.append((index, _FLAG, None))
        elif decoder in (_PRESENT, _IMPLICIT):
            run += "0s"
            fixes.append((index, decoder, True if decoder == _PRESENT else arg))
        else:
            return None
    if run:
        segments.append(struct.Struct("<" + run))
    return tuple(segments), tuple(fixes)


class _Indexed(NamedTuple):
    decoder: int
    index: int


def _decoder(form: int, unit: _Unit, implicit) -> tuple[int, object]:
    """(decoder, argument) for form number ``form`` in ``unit`` (DWARF 5 table 7.6)."""
    offset, address = unit.offset_size, unit.address_size
    fixed = {0x01: address, 0x0B: 1, 0x05: 2, 0x06: 4, 0x07: 8, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8,
             0x02: 4, 0x10: address if unit.version == 2 else offset, 0x17: offset, 0x1C: 4, 0x24: 8,
             0x20: 8, 0x1D: offset, 0x1F20: offset, 0x1F21: offset}
    if form in fixed:
        return _FIXED, fixed[form]
    table = {
        0x0F: (_ULEB, None), 0x15: (_ULEB, None), 0x0D: (_SLEB, None), 0x08: (_CSTRING, None),
        0x0A: (_BLOCK_FIXED, 1), 0x03: (_BLOCK_FIXED, 2), 0x04: (_BLOCK_FIXED, 4), 0x09: (_BLOCK_ULEB, None),
        0x18: (_BLOCK_ULEB, None), 0x0E: (_STRP, offset), 0x1F: (_LINE_STRP, offset), 0x21: (_IMPLICIT, implicit),
        0x0C: (_FLAG, None), 0x19: (_PRESENT, None), 0x1A: (_STRX, 0), 0x25: (_STRX, 1), 0x26: (_STRX, 2),
        0x27: (_STRX, 3), 0x28: (_STRX, 4), 0x1F02: (_STRX, 0), 0x1B: (_ADDRX, 0), 0x29: (_ADDRX, 1),
        0x2A: (_ADDRX, 2), 0x2B: (_ADDRX, 3), 0x2C: (_ADDRX, 4), 0x1F01: (_ADDRX, 0), 0x22: (_LOCLISTX, 0),
        0x23: (_RNGLISTX, 0), 0x1E: (_BYTES, 16), 0x16: (_INDIRECT, None),
    }
    found = table.get(form)
    if found is None:
        raise DwarfFormatError(f"form {form:#x} cannot be read")
    return found


def _string_at(section: bytes, at: int, name: str) -> bytes:
    end = section.find(b"\0", at)
    if not 0 <= at < len(section) or end < 0:
        raise DwarfFormatError(f"a string at {name} offset {at:#x}, outside the section or unterminated")
    return section[at:end]


def _word(section: bytes, at: int, size: int, name: str) -> int:
    if not 0 <= at <= len(section) - size:
        raise DwarfFormatError(f"an entry at {name} offset {at:#x}, outside the section")
    return int.from_bytes(section[at:at + size], "little")
