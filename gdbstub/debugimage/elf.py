"""ELF64 and ELF32 little-endian structures (construct schemas) and a small file layouter.

ELF32 with EM_X86_64 is the x32 form (x86-64 psABI, "ILP32"): the same machine
and registers, 4-byte addresses and pointers. gdb reads such a file as the
``i386:x64-32`` architecture (docs/pointers.md says why the stub uses it).

References: System V gABI "Object Files" chapter (ELF header, sections, program
headers, symbol table, notes) and the x86-64 psABI supplement (EM_X86_64).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from construct import Bytes, Const, Construct, ConstructError, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from .model import DebugImageError

log = logging.getLogger(__name__)

PAGE_SIZE = 0x1000  # x86-64 psABI: PT_LOAD offsets and addresses congruent modulo the page size

ET_EXEC = 2
ET_DYN = 3
EM_X86_64 = 62
EV_CURRENT = 1
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFOSABI_NONE = 0

PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

SHN_UNDEF = 0
SHN_ABS = 0xFFF1

STB_LOCAL = 0
STB_GLOBAL = 1
STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_FILE = 4
STV_DEFAULT = 0

NT_GNU_BUILD_ID = 3

#: Elf64_Ehdr (gABI "ELF Header").
ELF_HEADER = Struct(
    "e_ident" / Struct(
        "magic" / Const(b"\x7fELF"),
        "ei_class" / Const(ELFCLASS64, Int8ul),
        "ei_data" / Const(ELFDATA2LSB, Int8ul),
        "ei_version" / Const(EV_CURRENT, Int8ul),
        "ei_osabi" / Int8ul,
        "ei_abiversion" / Int8ul,
        "padding" / Const(bytes(7)),
    ),
    "e_type" / Int16ul,
    "e_machine" / Int16ul,
    "e_version" / Int32ul,
    "e_entry" / Int64ul,
    "e_phoff" / Int64ul,
    "e_shoff" / Int64ul,
    "e_flags" / Int32ul,
    "e_ehsize" / Int16ul,
    "e_phentsize" / Int16ul,
    "e_phnum" / Int16ul,
    "e_shentsize" / Int16ul,
    "e_shnum" / Int16ul,
    "e_shstrndx" / Int16ul,
)

#: Elf64_Phdr (gABI "Program Header").
PROGRAM_HEADER = Struct(
    "p_type" / Int32ul,
    "p_flags" / Int32ul,
    "p_offset" / Int64ul,
    "p_vaddr" / Int64ul,
    "p_paddr" / Int64ul,
    "p_filesz" / Int64ul,
    "p_memsz" / Int64ul,
    "p_align" / Int64ul,
)

#: Elf64_Shdr (gABI "Sections").
SECTION_HEADER = Struct(
    "sh_name" / Int32ul,
    "sh_type" / Int32ul,
    "sh_flags" / Int64ul,
    "sh_addr" / Int64ul,
    "sh_offset" / Int64ul,
    "sh_size" / Int64ul,
    "sh_link" / Int32ul,
    "sh_info" / Int32ul,
    "sh_addralign" / Int64ul,
    "sh_entsize" / Int64ul,
)

#: Elf64_Sym (gABI "Symbol Table"); st_info = bind << 4 | type.
SYMBOL = Struct(
    "st_name" / Int32ul,
    "st_info" / Int8ul,
    "st_other" / Int8ul,
    "st_shndx" / Int16ul,
    "st_value" / Int64ul,
    "st_size" / Int64ul,
)

#: Elf64_Nhdr followed by the name; the descriptor follows, 4-byte aligned (gABI "Note Section").
NOTE_HEADER = Struct(
    "n_namesz" / Int32ul,
    "n_descsz" / Int32ul,
    "n_type" / Int32ul,
    "name" / Bytes(lambda this: (this.n_namesz + 3) & ~3),
)


#: Elf32_Ehdr: the ELF64 header with 4-byte e_entry, e_phoff, e_shoff.
ELF32_HEADER = Struct(
    "e_ident" / Struct(
        "magic" / Const(b"\x7fELF"),
        "ei_class" / Const(ELFCLASS32, Int8ul),
        "ei_data" / Const(ELFDATA2LSB, Int8ul),
        "ei_version" / Const(EV_CURRENT, Int8ul),
        "ei_osabi" / Int8ul,
        "ei_abiversion" / Int8ul,
        "padding" / Const(bytes(7)),
    ),
    "e_type" / Int16ul,
    "e_machine" / Int16ul,
    "e_version" / Int32ul,
    "e_entry" / Int32ul,
    "e_phoff" / Int32ul,
    "e_shoff" / Int32ul,
    "e_flags" / Int32ul,
    "e_ehsize" / Int16ul,
    "e_phentsize" / Int16ul,
    "e_phnum" / Int16ul,
    "e_shentsize" / Int16ul,
    "e_shnum" / Int16ul,
    "e_shstrndx" / Int16ul,
)

#: Elf32_Phdr: note p_flags moves after p_memsz (gABI).
PROGRAM_HEADER32 = Struct(
    "p_type" / Int32ul,
    "p_offset" / Int32ul,
    "p_vaddr" / Int32ul,
    "p_paddr" / Int32ul,
    "p_filesz" / Int32ul,
    "p_memsz" / Int32ul,
    "p_flags" / Int32ul,
    "p_align" / Int32ul,
)

#: Elf32_Shdr.
SECTION_HEADER32 = Struct(
    "sh_name" / Int32ul,
    "sh_type" / Int32ul,
    "sh_flags" / Int32ul,
    "sh_addr" / Int32ul,
    "sh_offset" / Int32ul,
    "sh_size" / Int32ul,
    "sh_link" / Int32ul,
    "sh_info" / Int32ul,
    "sh_addralign" / Int32ul,
    "sh_entsize" / Int32ul,
)

#: Elf32_Sym: value and size come before info/other/shndx (gABI).
SYMBOL32 = Struct(
    "st_name" / Int32ul,
    "st_value" / Int32ul,
    "st_size" / Int32ul,
    "st_info" / Int8ul,
    "st_other" / Int8ul,
    "st_shndx" / Int16ul,
)


@dataclass(frozen=True)
class ElfClass:
    """The layouts of one ELF class. ``address_size`` is also the DWARF address
    size of the file's debug sections (DWARF 5 section 7.5.1.1)."""

    name: str
    address_size: int
    header: Construct
    program_header: Construct
    section_header: Construct
    symbol: Construct

    @property
    def address_limit(self) -> int:
        return 1 << (8 * self.address_size)


ELF64 = ElfClass("ELF64", 8, ELF_HEADER, PROGRAM_HEADER, SECTION_HEADER, SYMBOL)
#: x86-64 ILP32 (x32): EM_X86_64 in an ELFCLASS32 file.
ELF32 = ElfClass("ELF32", 4, ELF32_HEADER, PROGRAM_HEADER32, SECTION_HEADER32, SYMBOL32)


class StringTable:
    """An ELF string table: offset 0 is the empty string; equal strings share
    one entry; insertion order is kept so the output is deterministic."""

    def __init__(self) -> None:
        self._data = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        if text in self._offsets:
            return self._offsets[text]
        encoded = text.encode()
        if b"\0" in encoded:
            raise DebugImageError(f"name {text!r} contains NUL")
        offset = len(self._data)
        self._data += encoded + b"\0"
        self._offsets[text] = offset
        return offset

    def data(self) -> bytes:
        return bytes(self._data)


@dataclass
class Section:
    """A section to lay out. SHF_ALLOC sections get a PT_LOAD each (their
    ``addr`` is an absolute runtime address). ``link`` names another section."""

    name: str
    sh_type: int
    data: bytes
    flags: int = 0
    addr: int = 0
    addralign: int = 1
    link: str | None = None
    info: int = 0
    entsize: int = 0
    #: SHT_NOBITS: the size the section occupies in memory (``data`` is empty).
    nobits_size: int = 0
    #: Set by :func:`layout_elf`.
    offset: int = 0

    @property
    def memory_size(self) -> int:
        return self.nobits_size if self.sh_type == SHT_NOBITS else len(self.data)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _segment_flags(section_flags: int) -> int:
    flags = PF_R
    if section_flags & SHF_WRITE:
        flags |= PF_W
    if section_flags & SHF_EXECINSTR:
        flags |= PF_X
    return flags


def layout_elf(sections: list[Section], *, e_type: int = ET_DYN, elf_class: ElfClass = ELF64,
               entry: int = 0) -> bytes:
    """Lay out an ELF file of ``elf_class`` (ELF64 or the x32 ELF32): header, program headers, the sections in order,
    then the section header table. Section index 0 is the null section, so
    ``sections[i]`` gets index ``i + 1``; ``.shstrtab`` is appended last.

    Each SHF_ALLOC section but SHT_NOBITS ones becomes one PT_LOAD with p_vaddr = ``addr`` and a file
    offset congruent to it modulo PAGE_SIZE (gABI: "p_vaddr should equal p_offset,
    modulo p_align"); nothing else is loaded (the ELF header is not mapped, which
    no debugger needs). The ``offset`` of each Section is filled in.
    """
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise DebugImageError(f"duplicate section names in {names}")
    shstrtab = StringTable()
    name_offsets = [shstrtab.add(s.name) for s in sections]
    shstrtab_name = shstrtab.add(".shstrtab")
    all_sections = sections + [Section(".shstrtab", SHT_STRTAB, shstrtab.data())]
    name_offsets.append(shstrtab_name)
    index_of = {s.name: i + 1 for i, s in enumerate(all_sections)}

    # SHT_NOBITS sections describe addresses only (the guest's data in the
    # linear-memory mirror, which the file does not hold): no segment, so a
    # debugger's library relocation (solib-target maps PT_LOADs in order) sees
    # the code alone.
    loaded = [s for s in sections if s.flags & SHF_ALLOC and s.sh_type != SHT_NOBITS]
    header, program_header, section_header = elf_class.header, elf_class.program_header, elf_class.section_header
    phoff = header.sizeof()
    position = phoff + program_header.sizeof() * len(loaded)
    for section in all_sections:
        if section.flags & SHF_ALLOC and section.sh_type != SHT_NOBITS:
            position += (section.addr - position) % PAGE_SIZE
        else:
            position = _align(position, max(section.addralign, 1))
        section.offset = position
        position += len(section.data)
    shoff = _align(position, 8)

    if shoff + section_header.sizeof() * (len(all_sections) + 1) > elf_class.address_limit:
        raise DebugImageError(f"{elf_class.name} file would be {shoff:#x} bytes, more than its offsets can hold")
    out = bytearray(shoff + section_header.sizeof() * (len(all_sections) + 1))
    out[0:phoff] = header.build(dict(
        e_ident=dict(ei_osabi=ELFOSABI_NONE, ei_abiversion=0),
        e_type=e_type, e_machine=EM_X86_64, e_version=EV_CURRENT, e_entry=entry,
        e_phoff=phoff if loaded else 0, e_shoff=shoff, e_flags=0,
        e_ehsize=header.sizeof(), e_phentsize=program_header.sizeof(), e_phnum=len(loaded),
        e_shentsize=section_header.sizeof(), e_shnum=len(all_sections) + 1,
        e_shstrndx=index_of[".shstrtab"]))
    for i, section in enumerate(loaded):
        at = phoff + i * program_header.sizeof()
        out[at:at + program_header.sizeof()] = program_header.build(dict(
            p_type=PT_LOAD, p_flags=_segment_flags(section.flags), p_offset=section.offset,
            p_vaddr=section.addr, p_paddr=section.addr, p_filesz=len(section.data),
            p_memsz=section.memory_size, p_align=PAGE_SIZE))
    for section in all_sections:
        out[section.offset:section.offset + len(section.data)] = section.data

    headers = bytearray(section_header.sizeof())  # index 0: SHT_NULL, all zero
    for section, name_offset in zip(all_sections, name_offsets):
        headers += section_header.build(dict(
            sh_name=name_offset, sh_type=section.sh_type, sh_flags=section.flags,
            sh_addr=section.addr, sh_offset=section.offset, sh_size=section.memory_size,
            sh_link=index_of[section.link] if section.link else 0, sh_info=section.info,
            sh_addralign=section.addralign, sh_entsize=section.entsize))
    out[shoff:] = headers
    log.debug("laid out ELF: %d sections, %d PT_LOAD, %d bytes", len(all_sections), len(loaded), len(out))
    return bytes(out)


def symbol_info(bind: int, sym_type: int) -> int:
    """st_info byte (gABI ELF64_ST_INFO)."""
    return bind << 4 | sym_type


def build_note(name: str, note_type: int, desc: bytes) -> bytes:
    """One ELF note: header, NUL-terminated name and descriptor, each 4-byte padded."""
    name_bytes = name.encode() + b"\0"
    padded_name = name_bytes + bytes(-len(name_bytes) % 4)
    return NOTE_HEADER.build(dict(n_namesz=len(name_bytes), n_descsz=len(desc), n_type=note_type,
                                  name=padded_name)) + desc + bytes(-len(desc) % 4)


def section_by_name(image: bytes, name: str) -> bytes | None:
    """The contents of the section called ``name`` in a little-endian ELF32 or
    ELF64 file laid out by :func:`layout_elf` (or any well-formed one), or
    None when it has none.  Reads the section header table in place (gABI
    "Sections": ``e_shoff``, ``e_shentsize``, ``e_shnum``, ``e_shstrndx``);
    raises DebugImageError on a file whose headers point outside it."""
    header = ELF32_HEADER if image[4:5] == bytes([ELFCLASS32]) else ELF_HEADER
    section_header = SECTION_HEADER32 if header is ELF32_HEADER else SECTION_HEADER
    try:
        ehdr = header.parse(image[:header.sizeof()])  # a slice: ``image`` may be a whole mmap'd file
        size = section_header.sizeof()
        headers = [section_header.parse(image[ehdr.e_shoff + k * size:ehdr.e_shoff + (k + 1) * size])
                   for k in range(ehdr.e_shnum)]
        names = headers[ehdr.e_shstrndx]
    except (ConstructError, IndexError) as e:  # a truncated table, or e_shstrndx past its end
        raise DebugImageError(f"bad ELF section headers: {e}") from None
    wanted = name.encode() + b"\0"
    for shdr in headers:
        at = names.sh_offset + shdr.sh_name
        if image[at:at + len(wanted)] == wanted:
            if shdr.sh_offset + shdr.sh_size > len(image):
                raise DebugImageError(f"section {name} lies outside the file")
            return bytes(image[shdr.sh_offset:shdr.sh_offset + shdr.sh_size])
    return None
