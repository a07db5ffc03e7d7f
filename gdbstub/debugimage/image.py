"""Assemble a debug image: the ELF file a debugger loads for one StoreCode image.

Why ET_DYN linked at the absolute address
-----------------------------------------
The stub reports each StoreCode image as a shared library. Both debuggers place a
library's sections at ``link address + slide``:

* gdb with ``qXfer:libraries-svr4``: slide = ``l_addr`` from the stub's list (gdb's
  solib-svr4 only recomputes it from ``l_ld`` when the file has a ``.dynamic``
  section, and ours has none). The stub sends ``l_addr=0``.
* lldb with ``qXfer:libraries-svr4``: the same ``l_addr`` is taken as an offset;
  with ``qXfer:libraries`` (and gdb's solib-target), the reported address is
  where the *first PT_LOAD* goes, so slide = address - p_vaddr of that segment.
  The stub reports ``code_address``, the p_vaddr of our only PT_LOAD.

So the file is linked at the runtime address and every slide is 0. It is
``ET_DYN``, like a prelinked shared object (a DSO with a non-zero link address):
lldb classifies ET_DYN as a shared library, whereas an ET_EXEC would be taken
for an executable, which is the wrong role for a module in a library list.
Opened on its own (``gdb FILE``, ``lldb`` ``target create FILE``) without a
process, both load it at its link addresses too, which is what the tests use.

The code bytes are included as a PROGBITS ``.text`` so static disassembly works
and both debuggers have a section that owns every described address.
"""
from __future__ import annotations

import hashlib
import logging

from . import dwarf
from construct import ConstructError

from .elf import (
    ELF32, ELF64, ET_DYN, SHF_WRITE, SHT_NOBITS, ElfClass, NT_GNU_BUILD_ID, SHF_ALLOC, SHF_EXECINSTR, SHN_ABS,
    SHT_NOTE, SHT_PROGBITS,
    SHT_STRTAB, SHT_SYMTAB, STB_GLOBAL, STB_LOCAL, STT_FILE, STT_FUNC, STT_OBJECT, STV_DEFAULT,
    SYMBOL, Section, StringTable, build_note, layout_elf, symbol_info,
)
from .model import DebugImageError, Fde, LineRow, Symbol

log = logging.getLogger(__name__)

BUILD_ID_SIZE = 20  # SHA-1, as `ld --build-id=sha1`
_GENERATED_SECTIONS = (".note.gnu.build-id", ".text", ".wasm_data", ".debug_frame", ".debug_abbrev",
                       ".debug_info", ".debug_line", ".symtab", ".strtab", ".shstrtab")
_SYMBOL_KINDS = {"func": STT_FUNC, "object": STT_OBJECT}
#: Generated sections an extra section may replace (both or neither): the
#: minimal compile unit, for a caller that writes a full one (guest variables).
_REPLACEABLE_SECTIONS = frozenset({".debug_info", ".debug_abbrev"})


def _text_alignment(address: int) -> int:
    # sh_addralign must divide sh_addr (gABI); 16 is what compilers use for code.
    alignment = 16
    while address % alignment:
        alignment //= 2
    return alignment


def _check_symbols(symbols: list[Symbol], start: int, end: int) -> None:
    for symbol in symbols:
        if symbol.kind not in _SYMBOL_KINDS:
            raise DebugImageError(f"symbol {symbol.name!r}: unknown kind {symbol.kind!r}")
        if not symbol.name:
            raise DebugImageError(f"symbol at {symbol.address:#x} has an empty name")
        if symbol.size < 0 or symbol.address < 0:
            raise DebugImageError(f"symbol {symbol.name!r}: negative address or size")
        if symbol.kind == "func" and not (start <= symbol.address and symbol.address + symbol.size <= end
                                          and symbol.address < end):
            raise DebugImageError(
                f"function {symbol.name!r} [{symbol.address:#x}, +{symbol.size:#x}) is outside "
                f"the code [{start:#x}, {end:#x})")


def _check_fdes(fdes: list[Fde], start: int, end: int) -> None:
    for fde in fdes:
        if not (start <= fde.start and fde.start + fde.size <= end):
            raise DebugImageError(
                f"FDE [{fde.start:#x}, +{fde.size:#x}) is outside the code [{start:#x}, {end:#x})")


def _check_lines(lines: list[LineRow], start: int, end: int) -> None:
    previous = start
    for row in lines:
        if not start <= row.address < end:
            raise DebugImageError(f"line row at {row.address:#x} is outside the code [{start:#x}, {end:#x})")
        if row.address < previous:
            raise DebugImageError(f"line rows are not sorted by address at {row.address:#x}")
        if row.line < 0 or row.column < 0:
            raise DebugImageError(f"line row at {row.address:#x}: negative line or column")
        previous = row.address


def _symtab(name: str, symbols: list[Symbol], start: int, end: int, text_index: int,
            symbol_layout=SYMBOL, data: tuple[int, int, int] | None = None) -> tuple[bytes, bytes, int]:
    """(.symtab, .strtab, index of the first global). gABI: locals come first and
    sh_info of .symtab is the index of the first non-local symbol."""
    strtab = StringTable()
    entries = [symbol_layout.build(dict(st_name=0, st_info=0, st_other=0, st_shndx=0, st_value=0, st_size=0))]
    # STT_FILE names the image, so symbol dumps say where the functions came from.
    entries.append(symbol_layout.build(dict(
        st_name=strtab.add(name), st_info=symbol_info(STB_LOCAL, STT_FILE), st_other=STV_DEFAULT,
        st_shndx=SHN_ABS, st_value=0, st_size=0)))
    first_global = len(entries)
    for symbol in symbols:
        inside = start <= symbol.address < end
        in_data = data is not None and data[0] <= symbol.address < data[1]
        entries.append(symbol_layout.build(dict(
            st_name=strtab.add(symbol.name),
            st_info=symbol_info(STB_GLOBAL, _SYMBOL_KINDS[symbol.kind]), st_other=STV_DEFAULT,
            # Addresses outside .text and the data section are absolute values.
            st_shndx=text_index if inside else data[2] if in_data else SHN_ABS,
            st_value=symbol.address, st_size=symbol.size)))
    return b"".join(entries), strtab.data(), first_global


def build_debug_image(*, name: str, code_address: int, code: bytes, symbols: list[Symbol],
                      fdes: list[Fde], lines: list[LineRow] = (), comp_dir: str = "/",
                      producer: str = dwarf.PRODUCER,
                      extra_sections: dict[str, bytes] | None = None,
                      elf_class: ElfClass = ELF64,
                      debug_sections: dict[str, bytes] | None = None,
                      data_range: tuple[int, int] | None = None, entry: int = 0) -> bytes:
    """Return an ELF x86-64 ET_DYN file describing ``code`` at ``code_address``:
    ELF64, or with ``elf_class=ELF32`` the x32 form (4-byte addresses in the
    file and in its DWARF; every address must then be below 4 GiB).

    Contents: one PT_LOAD (R+X) mapping ``.text`` (the ``code`` bytes) at
    ``code_address``; ``.symtab``/``.strtab`` with a local STT_FILE ``name`` and
    one global symbol per ``symbols`` entry (given order); ``.debug_frame`` with
    one CIE and one FDE per ``fdes`` entry (omitted when ``fdes`` is empty);
    when ``lines`` is non-empty, a DWARF 5 ``.debug_line`` plus a compile unit in
    ``.debug_info``/``.debug_abbrev`` named after the first row's file, with
    ``comp_dir``, ``producer`` (DW_AT_producer), the code range, and a
    DW_TAG_subprogram per func symbol;
    ``debug_sections``: complete DWARF sections made elsewhere (the guest's
    translated DWARF, gdbstub.dwarf_translate) that replace the generated
    ``.debug_info``/``.debug_abbrev``/``.debug_line`` (``lines`` is then not
    used for them); their addresses must use the class's address size;
    ``data_range`` ``(start, end)``: an allocated SHT_NOBITS section
    ``.wasm_data`` there (the guest's static data in the linear-memory mirror),
    which "object" symbols inside it belong to, so a debugger names data
    addresses by them (gdb looks data symbols up by section only);
    ``extra_sections`` as non-allocated PROGBITS sections in the given order
    (``.debug_info`` and ``.debug_abbrev`` given together replace the
    generated compile unit, and keep the generated ``.debug_line``);
    a ``.note.gnu.build-id`` whose SHA-1 covers the whole file (descriptor
    zeroed while hashing), so equal inputs give byte-identical output.

    Raises DebugImageError when an input cannot be described (see model.py).
    """
    if not code:
        raise DebugImageError("an image needs at least one code byte")
    start, end = code_address, code_address + len(code)
    if start < 0 or end > elf_class.address_limit:
        raise DebugImageError(f"code [{start:#x}, {end:#x}) is outside the {elf_class.name} address space")
    address_size = elf_class.address_size
    debug_sections = dict(debug_sections or {})
    symbols, fdes, lines = list(symbols), list(fdes), list(lines)
    extra_sections = dict(extra_sections or {})
    for section_name in debug_sections:
        if not section_name.startswith(".debug_") or section_name == ".debug_frame":
            raise DebugImageError(f"debug section name {section_name!r} is not a DWARF section the image takes")
    for section_name in extra_sections:
        if ((section_name in _GENERATED_SECTIONS and section_name not in _REPLACEABLE_SECTIONS)
                or section_name in debug_sections or not section_name):
            raise DebugImageError(f"extra section name {section_name!r} is reserved or empty")
    replaced = _REPLACEABLE_SECTIONS & set(extra_sections)
    if replaced and replaced != _REPLACEABLE_SECTIONS:
        raise DebugImageError(f"{sorted(_REPLACEABLE_SECTIONS)} replace the generated compile unit together, "
                              f"not {sorted(replaced)} alone")
    _check_symbols(symbols, start, end)
    _check_fdes(fdes, start, end)
    _check_lines(lines, start, end)

    sections = [
        Section(".note.gnu.build-id", SHT_NOTE, build_note("GNU", NT_GNU_BUILD_ID, bytes(BUILD_ID_SIZE)),
                addralign=4),
        Section(".text", SHT_PROGBITS, bytes(code), flags=SHF_ALLOC | SHF_EXECINSTR, addr=code_address,
                addralign=_text_alignment(code_address)),
    ]
    text_index = len(sections)  # section index: the null section is 0
    data_section = None
    if data_range is not None:
        data_start, data_end = data_range
        if not (0 <= data_start < data_end <= elf_class.address_limit) or (data_start < end and start < data_end):
            raise DebugImageError(f"data range [{data_start:#x}, {data_end:#x}) is empty, out of range or "
                                  f"overlaps the code")
        sections.append(Section(".wasm_data", SHT_NOBITS, b"", flags=SHF_ALLOC | SHF_WRITE, addr=data_start,
                                addralign=1, nobits_size=data_end - data_start))
        data_section = (data_start, data_end, len(sections))
    if fdes:
        sections.append(Section(".debug_frame", SHT_PROGBITS, dwarf.build_debug_frame(fdes, address_size),
                                addralign=address_size))
    if debug_sections:
        for section_name, data in debug_sections.items():
            sections.append(Section(section_name, SHT_PROGBITS, bytes(data)))
    elif lines:
        files = dwarf.line_files(lines, comp_dir)
        functions = [(s.name, s.address, s.size) for s in symbols if s.kind == "func"]
        if not replaced:
            sections += [
                Section(".debug_abbrev", SHT_PROGBITS, dwarf.build_debug_abbrev()),
                Section(".debug_info", SHT_PROGBITS, dwarf.build_debug_info(
                    cu_name=files.primary, comp_dir=comp_dir, low_pc=start, size=len(code),
                    functions=functions, producer=producer, address_size=address_size)),
            ]
        sections.append(Section(".debug_line", SHT_PROGBITS, dwarf.build_debug_line(lines, files, end, address_size)))
    for section_name, data in extra_sections.items():
        sections.append(Section(section_name, SHT_PROGBITS, bytes(data)))
    symtab, strtab, first_global = _symtab(name, symbols, start, end, text_index, elf_class.symbol, data_section)
    sections += [
        Section(".symtab", SHT_SYMTAB, symtab, addralign=address_size, link=".strtab", info=first_global,
                entsize=elf_class.symbol.sizeof()),
        Section(".strtab", SHT_STRTAB, strtab),
    ]

    # e_entry: where a debugger's inferior calls return (gdb's default
    # `set dummy-location at-entry-point`, GDB manual "Calling Program
    # Functions"); 0 when the image has none.
    image = bytearray(layout_elf(sections, e_type=ET_DYN, elf_class=elf_class, entry=entry))
    note = sections[0]
    desc_at = note.offset + len(note.data) - BUILD_ID_SIZE
    image[desc_at:desc_at + BUILD_ID_SIZE] = hashlib.sha1(image).digest()
    log.debug("debug image %s: %#x+%#x, %d symbols, %d FDEs, %d line rows, %d bytes",
              name, code_address, len(code), len(symbols), len(fdes), len(lines), len(image))
    return bytes(image)


def build_id_is_intact(data: bytes) -> bool:
    """Whether ``data`` is an ELF file whose ``.note.gnu.build-id``, as
    :func:`build_debug_image` writes it (the first section, a SHA-1 over the
    whole file with the descriptor zeroed), matches its contents: how a cached
    image is told from a damaged or truncated one."""
    if len(data) < 5 or data[:4] != b"\x7fELF" or data[4] not in (1, 2):  # EI_CLASS: ELFCLASS32, ELFCLASS64
        return False
    elf_class = ELF64 if data[4] == 2 else ELF32
    section_header = elf_class.section_header
    try:
        header = elf_class.header.parse(data)
        if header.e_shnum < 2 or header.e_shoff + (header.e_shnum * section_header.sizeof()) > len(data):
            return False
        note = section_header.parse(data[header.e_shoff + section_header.sizeof():])
    except ConstructError:
        return False
    end = note.sh_offset + note.sh_size
    if note.sh_type != SHT_NOTE or end > len(data) or note.sh_size < BUILD_ID_SIZE:
        return False
    image = bytearray(data)
    found = bytes(image[end - BUILD_ID_SIZE:end])
    image[end - BUILD_ID_SIZE:end] = bytes(BUILD_ID_SIZE)
    return hashlib.sha1(image).digest() == found
