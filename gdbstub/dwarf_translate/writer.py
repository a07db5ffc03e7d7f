"""Writing DWARF 4 debugging information entries (DWARF 4 sections 7.5).

A :class:`Die` tree is laid out into ``.debug_info`` with a shared
``.debug_abbrev`` (one abbreviation per distinct tag / children / attribute
forms). References between DIEs are :class:`Ref` values resolved after
layout: ``DW_FORM_ref4`` inside a unit, ``DW_FORM_ref_addr`` across units.
Location lists and range lists go to ``.debug_loc`` / ``.debug_ranges``
(DWARF 4 sections 2.6.2 and 2.17.3: address pairs of ``address_size`` bytes
ended by a 0, 0 pair). Every list starts with a base address selection entry
(the largest address, then 0), so its addresses are absolute whatever the
unit's DW_AT_low_pc.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..debugimage.dwarf import address_bytes, sleb128, uleb128
from ..debugimage.model import DebugImageError

__all__ = ["Die", "DwarfWriter", "Ref", "LocList", "RangeList"]

DW_FORM_addr = 0x01
DW_FORM_block = 0x09
DW_FORM_data1 = 0x0B
DW_FORM_data2 = 0x05
DW_FORM_data4 = 0x06
DW_FORM_data8 = 0x07
DW_FORM_string = 0x08
DW_FORM_sdata = 0x0D
DW_FORM_udata = 0x0F
DW_FORM_ref_addr = 0x10
DW_FORM_ref4 = 0x13
DW_FORM_sec_offset = 0x17
DW_FORM_exprloc = 0x18
DW_FORM_flag_present = 0x19


#: ULEB128 of 0..127: the byte itself.
_SMALL = [bytes([n]) for n in range(0x80)]
#: A reference's 4 bytes, written in place (sections: a slice assignment of
#: to_bytes' result cost three times as much a reference).
_U32 = struct.Struct("<I")


@dataclass(eq=False, slots=True)
class Die:
    tag: int
    #: (attribute, form, value); value types by form: int (addr, data*, sdata,
    #: udata), str (string), bytes (block, exprloc), Ref (ref4/ref_addr),
    #: LocList/RangeList (sec_offset), None (flag_present).
    attributes: list[tuple[int, int, object]] = field(default_factory=list)
    children: list["Die"] = field(default_factory=list)
    #: Set by the writer: offset in .debug_info, and the unit's offset.
    offset: int = -1
    unit_offset: int = -1
    #: Instead of ``attributes``: the attributes' bytes as .debug_info holds
    #: them, already encoded (the translator's copy of a DIE whose every
    #: attribute is copied as it is), their (attribute, form) pairs, and
    #: (position in ``encoded``, form, Ref) of the references among them.
    encoded: bytes | None = None
    shape: tuple[tuple[int, int], ...] = ()
    encoded_refs: tuple[tuple[int, int, "Ref"], ...] = ()


@dataclass(eq=False, slots=True)
class Ref:
    target: Die


@dataclass(frozen=True)
class LocList:
    """(start, end, expression) entries, addresses absolute."""

    entries: tuple[tuple[int, int, bytes], ...]


@dataclass(frozen=True)
class RangeList:
    ranges: tuple[tuple[int, int], ...]


class DwarfWriter:
    def __init__(self, address_size: int):
        self.address_size = address_size
        self._abbrevs: dict[tuple, int] = {}
        self._shape_codes: dict[tuple[int, bool, int], tuple[int, tuple]] = {}  # (tag, children, id(shape)) -> code
        #: (tag, id(shape)) -> (ULEB128 of the code, shape) of encoded leaves (_write_die).
        self._leaf_codes: dict[tuple[int, int], tuple[bytes, tuple]] = {}
        self._abbrev_bytes = bytearray()
        self.info = bytearray()
        self.loc = bytearray()
        self.ranges = bytearray()
        self._fixups: list[tuple[int, int, Ref, int]] = []  # (position, form, ref, unit offset)
        self._unit = 0

    def _abbrev(self, die: Die) -> int:
        if die.encoded is not None:
            # Encoded DIEs of one guest abbreviation share their shape object:
            # found by its identity (the entry keeps it alive), without
            # hashing the whole shape again.
            known = self._shape_codes.get((die.tag, bool(die.children), id(die.shape)))
            if known is not None and known[1] is die.shape:
                return known[0]
            code = self._abbrev_of(die.tag, bool(die.children), die.shape)
            self._shape_codes[(die.tag, bool(die.children), id(die.shape))] = (code, die.shape)
            return code
        return self._abbrev_of(die.tag, bool(die.children), tuple([(a, f) for a, f, _ in die.attributes]))

    def _abbrev_of(self, tag: int, children: bool, shape: tuple) -> int:
        """The abbreviation code of DIEs with ``tag``, ``children`` and
        attributes of ``shape`` ((attribute, form) pairs), added when new."""
        key = (tag, children, shape)
        code = self._abbrevs.get(key)
        if code is None:
            code = self._abbrevs[key] = len(self._abbrevs) + 1
            self._abbrev_bytes += uleb128(code) + uleb128(tag) + bytes([1 if children else 0])
            for attribute, form in key[2]:
                self._abbrev_bytes += uleb128(attribute) + uleb128(form)
            self._abbrev_bytes += b"\0\0"
        return code

    def _base_zero(self) -> bytes:
        return address_bytes((1 << 8 * self.address_size) - 1, self.address_size) + bytes(self.address_size)

    def _loclist(self, loclist: LocList) -> int:
        offset = len(self.loc)
        self.loc += self._base_zero()
        for start, end, expr in loclist.entries:
            if len(expr) > 0xFFFF:
                raise DebugImageError("a location expression longer than 65535 bytes")
            self.loc += address_bytes(start, self.address_size) + address_bytes(end, self.address_size)
            self.loc += len(expr).to_bytes(2, "little") + expr
        self.loc += bytes(2 * self.address_size)
        return offset

    def _rangelist(self, rangelist: RangeList) -> int:
        offset = len(self.ranges)
        self.ranges += self._base_zero()
        for start, end in rangelist.ranges:
            self.ranges += address_bytes(start, self.address_size) + address_bytes(end, self.address_size)
        self.ranges += bytes(2 * self.address_size)
        return offset

    def _value(self, form: int, value, die: Die) -> bytes:
        if form == DW_FORM_addr:
            return address_bytes(value, self.address_size)
        if form == DW_FORM_data1:
            return (value & 0xFF).to_bytes(1, "little")
        if form == DW_FORM_data2:
            return (value & 0xFFFF).to_bytes(2, "little")
        if form == DW_FORM_data4:
            return (value & 0xFFFFFFFF).to_bytes(4, "little")
        if form == DW_FORM_data8:
            return (value & (1 << 64) - 1).to_bytes(8, "little")
        if form == DW_FORM_sdata:
            return sleb128(value)
        if form == DW_FORM_udata:
            return uleb128(value)
        if form == DW_FORM_string:
            encoded = value.encode("utf-8", "surrogateescape")
            if b"\0" in encoded:
                raise DebugImageError(f"string {value!r} contains NUL")
            return encoded + b"\0"
        if form in (DW_FORM_block, DW_FORM_exprloc):
            return uleb128(len(value)) + bytes(value)
        if form == DW_FORM_flag_present:
            return b""
        if form == DW_FORM_sec_offset:
            if isinstance(value, int):  # an offset into a section made elsewhere (.debug_line)
                offset = value
            else:
                offset = self._loclist(value) if isinstance(value, LocList) else self._rangelist(value)
            return offset.to_bytes(4, "little")
        if form in (DW_FORM_ref4, DW_FORM_ref_addr):
            self._fixups.append((len(self.info), form, value, self._unit))
            return bytes(4)
        raise DebugImageError(f"the writer has no encoding for form {form:#x}")

    def _write_die(self, die: Die, unit_offset: int) -> None:
        info = self.info
        die.offset, die.unit_offset = len(info), unit_offset
        code = self._abbrev(die)
        info += uleb128(code) if code >= 0x80 else _SMALL[code]
        if die.encoded is not None:
            base = len(info)
            info += die.encoded
            for position, form, ref in die.encoded_refs:
                self._fixups.append((base + position, form, ref, self._unit))
        for _, form, value in die.attributes:
            # The forms of most attributes, inline; the rest through _value.
            if form == DW_FORM_data1:
                info.append(value & 0xFF)
            elif form == DW_FORM_ref4 or form == DW_FORM_ref_addr:
                self._fixups.append((len(info), form, value, self._unit))
                info += b"\0\0\0\0"
            elif form == DW_FORM_string and value.isascii() and "\0" not in value:
                info += value.encode("ascii")
                info.append(0)
            elif form == DW_FORM_exprloc and len(value) < 0x80:
                info.append(len(value))
                info += value
            elif form == DW_FORM_data2:
                info += (value & 0xFFFF).to_bytes(2, "little")
            elif form == DW_FORM_data4:
                info += (value & 0xFFFFFFFF).to_bytes(4, "little")
            elif form == DW_FORM_flag_present:
                pass
            else:
                info += self._value(form, value, die)
        if die.children:
            fixups, leaf_codes = self._fixups, self._leaf_codes
            for child in die.children:
                if child.encoded is None or child.children or child.attributes:
                    self._write_die(child, unit_offset)
                    continue
                # An encoded leaf (most DIEs), inline: its abbreviation code's
                # bytes found by its tag and its shape's identity.
                known = leaf_codes.get((child.tag, id(child.shape)))
                if known is None or known[1] is not child.shape:
                    code = self._abbrev_of(child.tag, False, child.shape)
                    known = leaf_codes[(child.tag, id(child.shape))] = (uleb128(code), child.shape)
                child.offset, child.unit_offset = len(info), unit_offset
                info += known[0]
                if child.encoded_refs:
                    base = len(info)
                    for position, form, ref in child.encoded_refs:
                        fixups.append((base + position, form, ref, unit_offset))
                info += child.encoded
            info.append(0)

    def add_unit(self, root: Die) -> None:
        """Appends one DWARF 4 compile unit (section 7.5.1.1) rooted at ``root``."""
        start = self._unit = len(self.info)
        self.info += bytes(4) + (4).to_bytes(2, "little") + bytes(4) + bytes([self.address_size])
        self._write_die(root, start)
        self.info[start:start + 4] = (len(self.info) - start - 4).to_bytes(4, "little")

    def sections(self) -> dict[str, bytes]:
        """Resolves references and returns the sections (``.debug_abbrev``,
        ``.debug_info``, and ``.debug_loc``/``.debug_ranges`` when used)."""
        info, put_u32 = self.info, _U32.pack_into
        for position, form, ref, unit in self._fixups:
            target = ref.target
            if target is None:
                raise DebugImageError("a reference that was never resolved")
            if target.offset < 0:
                raise DebugImageError(f"a reference to a DIE (tag {target.tag:#x}) that was not written")
            if form == DW_FORM_ref4:
                if target.unit_offset != unit:
                    raise DebugImageError("a unit-local reference to a DIE of another unit")
                value = target.offset - unit
            else:
                value = target.offset
            put_u32(info, position, value)
        self._fixups.clear()
        out = {".debug_abbrev": bytes(self._abbrev_bytes + b"\0"), ".debug_info": bytes(self.info)}
        if self.loc:
            out[".debug_loc"] = bytes(self.loc)
        if self.ranges:
            out[".debug_ranges"] = bytes(self.ranges)
        return out
