"""Debug images a debugger loads for a Store's code, the library lists naming
them, and a Host I/O (``vFile:``) file server confined to them.

What a debugger sees (DESIGN.md, "What a debugger sees"): each StoreCode image
is reported as a shared library whose ELF file the stub synthesizes. This module
builds those files, keeps them in the on-disk cache (so a debugger on the same
host can open them by name, and the next run need not build them again) and
serves them over ``vFile:`` (:class:`ImageFileServer`, what gdb does by default
with its ``target:`` sysroot).  The design, the cache and the packets gdb and
lldb send for it: docs/debug-images.md.

One position-independent image per EngineCode
---------------------------------------------
Every Store's copy of an EngineCode differs only in where it is mapped, so one
file describes them all: an ELF ``ET_DYN`` whose addresses are image offsets
plus :data:`IMAGE_LINK_ADDRESS`, built once per EngineCode and kept under a
content address (:meth:`DebugImageSet.image_for`): the compiled image's key
(``Module.cache_key``: module hash, compiler version, debug flag), the
module's name, and a digest of this builder's sources and of every
:class:`ImageSectionBuilder` it runs.  A Store's copy is placed by its load
bias, ``l_addr = StoreCode.base - IMAGE_LINK_ADDRESS``, in the library list
(:class:`LoadedImage`).  The file holds no address of this process: the
veneers' trampoline slots are zero in it (their bytes in memory are the only
difference between the file's ``.text`` and a Store's unpatched code).

Contents (all from the frame table, read once, and the module):

* ``.text``: the compiled code (slots zeroed, see above);
* symbols: every wasm function (name-section name, else ``wasm-function[N]``),
  the two veneers and their trampoline slots, and the br_table jump tables;
* ``.debug_frame``: one FDE per function, from the compiler's fixed prologue and
  epilogue (see :func:`function_cfi_rows`), and one per veneer;
* source lines (``.debug_line`` and a compile unit) when the module has a DWARF
  line table (:mod:`gdbstub.guest_lines`);
* whatever the :class:`ImageSectionBuilder` s add (the extension point for
  guest variables and types: ``.debug_info``, ``.debug_abbrev``, ``.debug_str``,
  ``.debug_loclists`` ...).

Plus one *runtime image* per process for the C runtime's assembly (``cm_enter``
and the trampolines), linked where the runtime is loaded (load bias 0): the
outermost wasm frame returns into ``cm_enter`` (its ``call rdi``), and that
image's single FDE marks the return address undefined so both unwinders stop
there cleanly instead of walking into the host's C stack.  It is the
"executable" of every Store (``qXfer:exec-file``): the host process is the
program, the wasm modules are its libraries.

The library-list documents follow the GDB manual, "Library List Format" and
"Library List Format for SVR4 Targets", plus what gdb 13 and lldb-22 parse
(see :func:`libraries_svr4_xml` and :func:`libraries_xml`).
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import mmap
import os
import pathlib
import re
import struct
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from codemem.abi import FRAME_SETUP, FRAME_SETUP_MOV
from codemem.frametable import FrameTable, FunctionInfo
from codemem.lowmem import (CALL_LANDING_OFFSET, ENTRY_THUNK_CODE, ENTRY_THUNK_PAGE_CODE_SIZE, call_landing_address,
                             entry_thunk_address)
from codemem.native import ffi, lib

from . import c_abi, frame_bases
from .debugimage import CfiRow, DebugImageError, Fde, Symbol, build_debug_image
from .debugimage.elf import ELF32, ELF64, section_by_name
from .debugimage.image import build_id_is_intact
from .protocol.xmltext import quoteattr

if TYPE_CHECKING:
    from .dwarf_translate import TranslatedDwarf
    from .guest_lines import ImageLines

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_LINK_ADDRESS", "DebugImage", "DebugImageSet", "ImageBuildContext",
    "ImageSectionBuilder", "LoadedImage", "build_engine_image",
    "function_cfi_rows", "libraries_svr4_xml", "libraries_xml",
]

#: The link address of image offset 0 in an EngineCode's debug image.  Not 0,
#: where a shared object's ELF header would be: no debugger ever mistakes a
#: function for "no address" (DW_AT_low_pc 0 is how a linker marks dead code).
IMAGE_LINK_ADDRESS = 0x1000
#: Where engine images live in a cache directory: ``debug-images/KEY/NAME.elf``.
IMAGES_SUBDIRECTORY = "debug-images"

#: Symbol names of the per-image veneers and slots (codemem/veneer.py layout).
BREAKPOINT_VENEER_SYMBOL = "__breakpoint_veneer"
TRAP_VENEER_SYMBOL = "__trap_veneer"
BREAKPOINT_SLOT_SYMBOL = "__breakpoint_slot"
TRAP_SLOT_SYMBOL = "__trap_slot"
JUMP_TABLES_SYMBOL = "__jump_tables"
#: Runtime symbols, in the order the runtime's assembly defines them.
RUNTIME_SYMBOLS = ("cm_enter", "cm_breakpoint_trampoline", "cm_trap_trampoline", "cm_host_call_trampoline",
                   "cm_call_landing")

_VENEER_SIZE = 6  # ff 25 rel32: jmp qword ptr [rip + slot]
_VENEER_OPCODE = b"\xff\x25"
_SLOT_SIZE = 8
# The epilogue's last three instructions, `mov rsp, rbp; pop rbp; ret`
# (x64/compiler.py _build_epilogue), in both encodings of the mov.
_EPILOGUE_TAILS = (b"\x48\x89\xec\x5d\xc3", b"\x48\x8b\xe5\x5d\xc3")
_JUMP_TABLE_ALIGN = 4  # compiler: asm.align(4) before the tables, 4-byte entries
_PADDING_WORD = b"\xcc" * 4

# Rows of an rbp-chained frame (x86-64 psABI DWARF register names; rip stays at
# CFA-8, the CIE default of gdbstub.debugimage, in every row).
_AT_ENTRY = ("rsp", 8, {})  # return address on top of the stack
_AFTER_PUSH = ("rsp", 16, {"rbp": -16})
_FRAME_SET = ("rbp", 16, {"rbp": -16})
#: What a guest function does not preserve for its caller: every wasm call
#: clobbers every GPR but rsp, rbp (saved, above) and r15 (the context: a
#: function keeps it, a caller that switches it restores it itself), and the
#: register cache (codemem/x64/regcache.py) also uses the SysV callee-saved rbx
#: and r12-r14, which only the entry trampoline saves for the host.
GUEST_CLOBBERED = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14")

#: The sources whose code decides an engine image's bytes (the builder's
#: part of the cache key), relative to the gdbstub package.
_BUILDER_SOURCES = ("images.py", "guest_lines.py", "frame_bases.py", "c_abi.py", "debugimage/__init__.py", "debugimage/dwarf.py",
                    "debugimage/elf.py", "debugimage/image.py", "debugimage/model.py",
                    *(f"dwarf_translate/{name}" for name in ("__init__.py", "builder.py", "codemap.py", "expr.py",
                                                             "translate.py", "writer.py", "prologue.py")))
#: A section of our own in x32 engine images: the translation's static data
#: symbols (linear-memory addresses, which a load bias must not move), records
#: of u32 address, u32 size, NUL-terminated name.  The Store's executable image
#: (absolute, load bias 0) gives them to the debugger (DebugImageSet.executable).
DATA_SYMBOLS_SECTION = ".wasm_gdbstub.data_symbols"
_DATA_SYMBOL = struct.Struct("<II")


def sanitize_name(text: str, *, limit: int = 64) -> str:
    """``text`` reduced to a safe file-name component: ``[A-Za-z0-9._+-]``, no
    leading dot, at most ``limit`` characters, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip(".")[:limit]
    return cleaned or "_"


def uses_x32_images(store_or_module) -> bool:
    """Whether Stores of ``store_or_module``'s Engine are shown through x32
    debug images (ELF32, gdb's ``i386:x64-32``: 4-byte C pointers,
    docs/pointers.md): when the Engine places everything a debugger
    dereferences below 4 GiB (codemem.lowmem)."""
    engine = getattr(store_or_module, "engine", None)
    return bool(getattr(engine, "low_addresses", False))


def source_digest(package_dir: pathlib.Path, sources: tuple[str, ...]) -> str:
    """A digest of ``sources`` (paths relative to ``package_dir``): the part of
    a cache key that changes whenever the code that builds the cached bytes
    does."""
    digest = hashlib.sha256()
    for relative in sources:
        digest.update(relative.encode() + b"\0" + (package_dir / relative).read_bytes())
    return digest.hexdigest()[:16]


_builder_digest: str | None = None


def builder_digest() -> str:
    global _builder_digest
    if _builder_digest is None:
        _builder_digest = source_digest(pathlib.Path(__file__).resolve().parent, _BUILDER_SOURCES)
    return _builder_digest


# ------------------------------------------------------------- extension point
@dataclass(frozen=True)
class ImageBuildContext:
    """What an :class:`ImageSectionBuilder` gets: the module (``codemem.Module``:
    ``info`` with its DWARF sections, ``wasm``), the frame table, and the
    image's layout.  Every address an added section writes is a *link address*
    of the image: image offset + ``link_address`` (use :meth:`address_of`);
    the debugger adds each Store's load bias.

    ``native_offset_of_wasm(offset)`` maps a module file offset to the image
    offset of the INSTRUCTION sequence point compiled for it (None when there is
    none); a wasm location (DW_OP_WASM_location ...) translates to the function's
    frame: rbp-relative slots, ``frame_table.locals(func)``."""

    module: object
    frame_table: FrameTable
    link_address: int
    code_size: int
    symbols: tuple[Symbol, ...]
    lines: ImageLines

    def address_of(self, image_offset: int) -> int:
        return self.link_address + image_offset

    def native_offset_of_wasm(self, wasm_offset: int) -> int | None:
        return self.frame_table.instruction_site_at_wasm_offset(wasm_offset)


class ImageSectionBuilder(Protocol):
    """Adds sections to every engine image (the extension point, see
    docs/debug-images.md).  ``name`` and ``digest`` enter the cache key:
    ``digest`` must change whenever the builder's output for the same module
    may (a digest of its sources, :func:`source_digest`).

    ``sections(context)`` returns ``{section name: bytes}``, written as
    non-allocated PROGBITS sections.  Returning ``.debug_info`` and
    ``.debug_abbrev`` (together) replaces the image's own minimal compile unit;
    such a unit must then refer to the image's ``.debug_line`` at offset 0
    (DW_AT_stmt_list) when the image has lines (``context.lines.rows``), and
    its addresses are link addresses (:meth:`ImageBuildContext.address_of`)."""

    name: str
    digest: str

    def sections(self, context: ImageBuildContext) -> dict[str, bytes]: ...


# ---------------------------------------------------------------------- images
class DebugImage:
    """One synthesized ELF file, built (or read from the cache) on first use of
    :attr:`data`; :attr:`path` and :attr:`name` are known before.

    ``name`` is the library name reported to debuggers and is the absolute path
    of the cached file (``path``). ``link_start``/``link_end`` is the code range
    it describes, in its own link addresses. ``mtime`` (seconds) is when its
    bytes were made or read, reported by ``fstat``. Thread-safe."""

    def __init__(self, path: pathlib.Path, link_start: int, code_size: int, *,
                 make: Callable[[], bytes] | None = None, data: bytes | None = None):
        assert (make is None) != (data is None)
        self.path = path
        self.name = str(path)
        self.link_start = link_start
        self.link_end = link_start + code_size
        self.mtime = int(time.time()) if data is not None else 0
        self._make = make
        self._data = data
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._data is not None

    @property
    def on_disk(self) -> bool:
        """True when the image's file is there to read as it is: loaded
        already, or a cached file this cache wrote or checked
        (:func:`cached_image_is_trusted`).  Reading such an image later is
        a file read, never a build."""
        return self._data is not None or cached_image_is_trusted(self.path)

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            with self._lock:
                if self._data is None:
                    self._data = self._make()
                    self.mtime = int(time.time())
                    self._make = None
                data = self._data
        return data

    @property
    def size(self) -> int:
        return len(self.data)

    def cached_section(self, name: str) -> bytes | None:
        """The contents of section ``name`` (None when the image has none),
        read from the cached file in place (mapped, its section headers and
        that section only) while the image's bytes are not loaded and the
        file is one this process trusts (:func:`cached_image_is_trusted`);
        else from :attr:`data`.  A warm ``serve`` needs one small section of
        each image before it listens (an x32 executable's data symbols), not
        the whole file."""
        if self._data is None and self._make is not None and cached_image_is_trusted(self.path):
            try:
                with open(self.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    return section_by_name(view, name)
            except (OSError, ValueError, DebugImageError) as e:  # gone or damaged since the check: read it whole
                log.info("reading %s of %s in place failed (%s); loading the image", name, self.path, e)
        return section_by_name(self.data, name)

    def __repr__(self) -> str:
        return f"DebugImage({self.name!r}, [{self.link_start:#x}, {self.link_end:#x}))"


@dataclass(frozen=True)
class LoadedImage:
    """A debug image placed in a Store: its code's first byte (link address
    ``image.link_start``) is at ``start``; the load bias (``l_addr``) is the
    difference.  ``name``/``path``/``data`` are the image's."""

    image: DebugImage
    start: int

    @property
    def name(self) -> str:
        return self.image.name

    @property
    def path(self) -> pathlib.Path:
        return self.image.path

    @property
    def data(self) -> bytes:
        return self.image.data

    @property
    def end(self) -> int:
        return self.start + (self.image.link_end - self.image.link_start)

    @property
    def load_bias(self) -> int:
        return self.start - self.image.link_start


def function_cfi_rows(code: bytes, table: FrameTable, func: FunctionInfo) -> tuple[CfiRow, ...] | None:
    """Call-frame rows for ``func`` of an image whose code (image offset 0) is
    ``code``, or None when its prologue is not the compiler's.

    The compiler's frame (codemem/abi.py "Function layout"; x64/compiler.py
    ``_compile_function`` and ``_build_epilogue``)::

        start         push rbp                   (1 byte)      CFA = rsp+8
        start+1       mov rbp, rsp               (3 bytes)     CFA = rsp+16, rbp at CFA-16
        start+4 ...   ENTRY point (its patch site in debug     CFA = rbp+16, rbp at CFA-16
                      code), prologue, body, one epilogue:
                      mov rsp, rbp; pop rbp
        ret           ret                                      CFA = rsp+8 (rbp restored)
        after ret     out-of-line trap stubs (jumped to        CFA = rbp+16, rbp at CFA-16
                      from the body, frame still set up)

    The epilogue is the first ``mov rsp, rbp; pop rbp; ret`` after the
    function's last sequence point (the final ``end``, whose code the
    epilogue follows; tests/test_images.py checks this against capstone); if
    there is none, the body rule simply extends to the end (only the ``ret``
    itself is then described wrongly).
    """
    start, end = func.native_start, func.native_end
    if code[start:start + len(FRAME_SETUP)] != FRAME_SETUP:
        log.warning("function at image offset %#x: no `push rbp; mov rbp, rsp` at its first byte, no CFI", start)
        return None
    rows = [CfiRow(0, *_AT_ENTRY)]
    rows.append(CfiRow(FRAME_SETUP_MOV, *_AFTER_PUSH))
    rows.append(CfiRow(len(FRAME_SETUP), *_FRAME_SET))
    epilogue = find_epilogue(code, table, func)
    if epilogue is not None:
        pop_at, ret_at = epilogue
        rows.append(CfiRow(pop_at + 1 - start, *_AT_ENTRY))
        if ret_at + 1 < end:
            rows.append(CfiRow(ret_at + 1 - start, *_FRAME_SET))
    return tuple(rows)


def find_epilogue(code: bytes, table: FrameTable, func: FunctionInfo) -> tuple[int, int] | None:
    """Image offsets of the ``pop rbp`` and ``ret`` ending ``func``'s epilogue:
    the first ``mov rsp, rbp; pop rbp; ret`` from its last sequence point on
    (the compiler records no epilogue offset; see docs/debug-images.md)."""
    sweep_from = (table.sequence_point_column(func, 0)[-1] if func.num_seqpoints else func.native_start)
    found = [at for at in (code.find(tail, sweep_from, func.native_end) for tail in _EPILOGUE_TAILS) if at >= 0]
    if not found:
        log.debug("function at image offset %#x: no `pop rbp; ret` after %#x", func.native_start, sweep_from)
        return None
    pop_at = min(found) + 3
    return pop_at, pop_at + 1


def _function_name(module, wasm_index: int) -> str:
    namer = getattr(module, "func_name", None)
    name = namer(wasm_index) if namer is not None else None
    return name or f"wasm-function[{wasm_index}]"


def _veneer_parts(code: bytes, code_address: int, table: FrameTable) -> tuple[list[Symbol], list[Fde]]:
    """Symbols and FDEs of the veneers and their slots (codemem/veneer.py),
    each only when its bytes are really there: a veneer is ``ff 25 rel32``."""
    header = table.header
    symbols, fdes = [], []
    for name, offset, slot_name, slot in (
            (BREAKPOINT_VENEER_SYMBOL, header.bp_veneer, BREAKPOINT_SLOT_SYMBOL, header.bp_slot),
            (TRAP_VENEER_SYMBOL, header.trap_veneer, TRAP_SLOT_SYMBOL, header.trap_slot)):
        if offset + _VENEER_SIZE > len(code) or code[offset:offset + 2] != _VENEER_OPCODE:
            continue
        symbols.append(Symbol(name, code_address + offset, _VENEER_SIZE))
        # Reached by `call` (a patch site, a trap stub): the return address is
        # on top of the stack for the veneer's single instruction.
        fdes.append(Fde(code_address + offset, _VENEER_SIZE, (CfiRow(0, *_AT_ENTRY),)))
        if slot + _SLOT_SIZE <= len(code):
            symbols.append(Symbol(slot_name, code_address + slot, _SLOT_SIZE, "object"))
    return symbols, fdes


def _jump_tables(code: bytes, code_address: int, table: FrameTable, functions: list[FunctionInfo]
                 ) -> Symbol | None:
    """The br_table jump tables: the compiler emits all of them, 4-byte aligned,
    between the last function and the veneers (x64/compiler.py ``compile``);
    append_veneers pads to 8 with int3, which is never a table entry (entries
    are negative offsets far smaller than 0xcccccccc)."""
    if not functions:
        return None
    start = -(-max(f.native_end for f in functions) // _JUMP_TABLE_ALIGN) * _JUMP_TABLE_ALIGN
    veneers = [o for o in (table.header.bp_veneer, table.header.trap_veneer)
               if code[o:o + 2] == _VENEER_OPCODE]
    if not veneers:
        return None
    end = min(veneers)
    while end - start >= 4 and code[end - 4:end] == _PADDING_WORD:
        end -= 4
    if end - start < 4:
        return None
    return Symbol(JUMP_TABLES_SYMBOL, code_address + start, end - start, "object")


def image_code(engine_code) -> bytes:
    """The compiled code as an engine image holds it: the canonical bytes with
    the veneers' trampoline slots zeroed (codemem.code.EngineCode fills them
    with this process's trampoline addresses; the file must not depend on
    them)."""
    table = engine_code.frame_table
    code = bytearray(engine_code.read(0, engine_code.code_size))
    if table.debug or table.header.trap_slot:
        for slot in (table.header.bp_slot, table.header.trap_slot):
            if slot + _SLOT_SIZE <= len(code):
                code[slot:slot + _SLOT_SIZE] = bytes(_SLOT_SIZE)
    return bytes(code)


def engine_image_parts(module, table: FrameTable, code: bytes, link_address: int, *, x32: bool = False
                       ) -> tuple[list[Symbol], list[Fde]]:
    """(symbols, FDEs) of an engine image whose image offset 0 is linked at
    ``link_address``. ``x32``: every guest FDE also recovers its caller's C
    frame base as es from the stub's frame-base window
    (gdbstub.frame_bases)."""
    functions = table.functions()
    symbols, fdes = [], []
    saved_at = (frame_bases.CFI_RULE,) if x32 else ()
    for func in functions:
        address = link_address + func.native_start
        symbols.append(Symbol(_function_name(module, func.wasm_index), address, func.native_size))
        rows = function_cfi_rows(code, table, func)
        if rows is not None:
            fdes.append(Fde(address, func.native_size, rows, clobbered=GUEST_CLOBBERED, saved_at=saved_at))
    veneer_symbols, veneer_fdes = _veneer_parts(code, link_address, table)
    symbols += veneer_symbols
    fdes += veneer_fdes
    jump_tables = _jump_tables(code, link_address, table, functions)
    if jump_tables is not None:
        symbols.append(jump_tables)
    return symbols, fdes


def build_engine_image(module, engine_code, *, source_lines: bool = True,
                       section_builders: tuple[ImageSectionBuilder, ...] = (),
                       link_address: int = IMAGE_LINK_ADDRESS, x32: bool | None = None) -> bytes:
    """The ELF bytes of ``engine_code``'s debug image (``module`` is the
    codemem Module it was compiled from: names, DWARF), linked at
    ``link_address``.  Deterministic: equal inputs give equal bytes.

    ``x32`` (default: the module's Engine places Stores low,
    :func:`uses_x32_images`): an ELF32 image with the guest's DWARF translated
    (variables, types: gdbstub.dwarf_translate, at link addresses; its static
    data symbols in :data:`DATA_SYMBOLS_SECTION`); else an ELF64 image with
    source lines only (gdb would read C pointers as 8 bytes, docs/cvars.md)."""
    with collector_paused():
        return _build_engine_image(module, engine_code, source_lines=source_lines,
                                   section_builders=section_builders, link_address=link_address, x32=x32)


def _build_engine_image(module, engine_code, *, source_lines: bool, section_builders: tuple,
                        link_address: int, x32: bool | None) -> bytes:
    # Only a cache miss builds an image: the DWARF translation and the line
    # mapping (pyelftools) are imported here, not at every start.
    from .guest_lines import ImageLines, image_lines

    x32 = uses_x32_images(module) if x32 is None else x32
    table = engine_code.frame_table
    code = image_code(engine_code)
    symbols, fdes = engine_image_parts(module, table, code, link_address, x32=x32)
    extra: dict[str, bytes] = {}
    debug_sections = None
    if x32 and source_lines:
        translated = guest_debug_sections(module, engine_code, link_address, ELF32.address_size)
        if translated is not None:
            debug_sections = translated.sections
            extra[DATA_SYMBOLS_SECTION] = b"".join(
                _DATA_SYMBOL.pack(address, size) + name.encode() + b"\0"
                for name, address, size in translated.data_symbols)
            if translated.frame_base_slots:
                extra[frame_bases.SECTION] = frame_bases.pack_slots(translated.frame_base_slots)
            if translated.function_abis:
                extra[c_abi.SECTION] = c_abi.pack_abis(translated.function_abis)
    lines = image_lines(module, table, link_address) if source_lines and debug_sections is None \
        else ImageLines([])
    if section_builders:
        context = ImageBuildContext(module, table, link_address, len(code), tuple(symbols), lines)
        for builder in section_builders:
            for name, data in builder.sections(context).items():
                if name in extra:
                    raise ValueError(f"image section {name} is added twice (by {builder.name})")
                extra[name] = data
    name = getattr(module, "name", None) or engine_code.name
    return build_debug_image(name=name, code_address=link_address, code=code, symbols=symbols, fdes=fdes,
                             lines=lines.rows, comp_dir=lines.comp_dir, producer=lines.producer,
                             extra_sections=extra, elf_class=ELF32 if x32 else ELF64,
                             debug_sections=debug_sections)


def data_symbols_of(image_data: bytes) -> list[tuple[str, int, int]]:
    """The static data symbols an x32 engine image carries
    (:data:`DATA_SYMBOLS_SECTION`): ``(name, linear-memory address, size)``."""
    return _parse_data_symbols(section_by_name(image_data, DATA_SYMBOLS_SECTION))


def _parse_data_symbols(data: bytes | None) -> list[tuple[str, int, int]]:
    """The records of a :data:`DATA_SYMBOLS_SECTION` (none for None)."""
    if data is None:
        return []
    out, at = [], 0
    while at + _DATA_SYMBOL.size <= len(data):
        address, size = _DATA_SYMBOL.unpack_from(data, at)
        end = data.index(b"\0", at + _DATA_SYMBOL.size)
        out.append((data[at + _DATA_SYMBOL.size:end].decode("utf-8", "replace"), address, size))
        at = end + 1
    return out


def frame_base_slots_of(image_data: bytes) -> dict[int, int]:
    """``{function image offset: rbp offset of its frame-base slot}`` from an
    x32 engine image's :data:`gdbstub.frame_bases.SECTION` (empty without)."""
    section = section_by_name(image_data, frame_bases.SECTION)
    return frame_bases.unpack_slots(section) if section is not None else {}


def runtime_image_parts() -> tuple[int, bytes, list[Symbol], list[Fde]]:
    """(start, code bytes, symbols, FDEs) of the C runtime's assembly
    (csrc/codemem_rt.c, from ``cm_runtime_code_start`` to ``cm_runtime_code_end``)."""
    start, end = lib.cm_runtime_code_start_address(), lib.cm_runtime_code_end_address()
    code = bytes(ffi.buffer(ffi.cast("char *", start), end - start))
    addresses = {
        "cm_enter": lib.cm_enter_address(),
        "cm_breakpoint_trampoline": lib.cm_breakpoint_trampoline_address(),
        "cm_trap_trampoline": lib.cm_trap_trampoline_address(),
        "cm_host_call_trampoline": lib.cm_host_call_trampoline_address(),
        "cm_call_landing": lib.cm_call_landing_address(),
    }
    ordered = sorted(addresses.items(), key=lambda item: item[1])
    symbols = []
    for k, (name, address) in enumerate(ordered):
        following = ordered[k + 1][1] if k + 1 < len(ordered) else end
        symbols.append(Symbol(name, address, following - address))
    # A guest's outermost frame returns into cm_enter (after its `call rdi`); an
    # undefined return address (DWARF 5 section 6.4.1) is where gdb and lldb end
    # a backtrace, rather than unwinding on into the host's C frames.
    fdes = [Fde(start, end - start, (CfiRow(0, *_AT_ENTRY),), undefined_rip=True)]
    return start, code, symbols, fdes


def entry_thunk_image_parts() -> tuple[int, bytes, list[Symbol], list[Fde]]:
    """(start, code bytes, symbols, FDEs) of the low entry thunk
    (codemem.lowmem.entry_thunk_address): what x32 images have instead of the
    runtime image, whose code lies above 4 GiB. The outermost guest frame of a
    low Store returns into the thunk, whose FDE marks the return address
    undefined: the backtrace ends there, at a frame named ``cm_enter`` (the
    thunk is the low half of the entry trampoline)."""
    start = entry_thunk_address()
    code = bytes(ffi.buffer(ffi.cast("char *", start), ENTRY_THUNK_PAGE_CODE_SIZE))
    symbols = [Symbol("cm_enter", start, len(ENTRY_THUNK_CODE)),
               Symbol("cm_call_landing", start + CALL_LANDING_OFFSET, 8)]
    fdes = [Fde(start, len(code), (CfiRow(0, *_AT_ENTRY),), undefined_rip=True)]
    return start, code, symbols, fdes


_collector_lock = threading.Lock()
_collector_pauses = 0
_collector_was_enabled = False


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while the block runs (nested and
    concurrent uses share one pause; the state before the first is restored
    after the last).

    Building a debug image allocates some hundred thousand small objects
    (DIEs, attribute tuples, line rows) that stay alive until it ends; every
    few hundred allocations the collector scans the young ones and every few
    thousand all of them, which took half of the DWARF translation's time on
    the real-size module (scripts/bench/inspect_latency.py). What the build
    leaves as cyclic garbage is collected after it."""
    global _collector_pauses, _collector_was_enabled
    with _collector_lock:
        if _collector_pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pauses -= 1
            if _collector_pauses == 0 and _collector_was_enabled:
                gc.enable()


_translations: "weakref.WeakKeyDictionary[object, dict[tuple[int, int], TranslatedDwarf | None]]" = \
    weakref.WeakKeyDictionary()
_translations_lock = threading.Lock()


def guest_debug_sections(module, engine_code, code_address: int, address_size: int) -> TranslatedDwarf | None:
    """The module's DWARF translated for an image of ``engine_code`` linked at
    ``code_address`` (gdbstub.dwarf_translate), memoized per EngineCode and
    address; None when the module has no DWARF or it cannot be translated
    (logged as a warning: the image then has source lines only, no variables)."""
    from .dwarf_translate import GuestDwarfError, translate_guest_dwarf  # a cache miss only

    key = (code_address, address_size)
    with _translations_lock:
        memo = _translations.setdefault(engine_code, {})
        if key in memo:
            return memo[key]
    info = getattr(module, "info", None)
    translated = None
    if info is not None:
        try:
            with collector_paused():
                translated = translate_guest_dwarf(info, engine_code.frame_table, code_address=code_address,
                                                   address_size=address_size)
        except GuestDwarfError as e:
            log.warning("module %s: its DWARF cannot be translated, so no variables or types: %s",
                        getattr(module, "name", "?"), e)
        except Exception:  # the outermost guard of an optional description: a bug here must not end a session
            log.exception("module %s: translating its DWARF failed; the image has source lines only",
                          getattr(module, "name", "?"))
    if translated is not None:
        log.debug("module %s: %d units, %d subprograms translated, %d locations dropped",
                  getattr(module, "name", "?"), translated.units, translated.subprograms,
                  translated.dropped_locations)
    with _translations_lock:
        _translations.setdefault(engine_code, {})[key] = translated
    return translated


#: How a client may get the images' files (gdbstub.session.SessionConfig
#: ``image_transfer``): over the connection, from this file system, or
#: decided by where the client connects from.
IMAGE_TRANSFERS = ("auto", "vfile", "local")


def _stamp_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".stamp")


def _file_stamp(path: pathlib.Path) -> str:
    """What identifies one written version of a file: size, modification
    time (ns) and inode.  Raises OSError when it cannot be stat'ed."""
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}\n"


def cached_image_is_trusted(path: pathlib.Path) -> bool:
    """True when the cached image at ``path`` is the very file this cache
    wrote or checked before: its stamp file (``NAME.elf.stamp``, written
    after the image was written whole or its build id was checked) names
    its current size, mtime and inode.  Files are only ever replaced by an
    atomic rename (a new inode), so a torn write cannot match; what the
    stamp does not catch is a change that keeps all three (a bit flip on
    disk), as ``make`` would not either.  Checking the build id instead (a
    SHA-1 over the 10 MiB image of a real-size module) cost 15-25 ms of
    every warm ``serve`` (docs/debug-images.md, "Warm start")."""
    try:
        return _stamp_path(path).read_text() == _file_stamp(path)
    except (OSError, UnicodeDecodeError):
        return False


def _write_stamp(path: pathlib.Path) -> None:
    """Best effort, as the cache itself: no stamp only costs a check."""
    stamp = _stamp_path(path)
    temporary = stamp.with_name(f".{stamp.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        temporary.write_text(_file_stamp(path))
        os.replace(temporary, stamp)
    except OSError as e:
        log.info("cannot stamp cached debug image %s: %s", path, e)
        temporary.unlink(missing_ok=True)


def _read_cached(path: pathlib.Path) -> bytes | None:
    """The cached file's bytes when it is an intact image, else None: a file
    with a matching stamp (:func:`cached_image_is_trusted`) is taken as it
    is; any other must have a build id (a SHA-1 over the whole file) that
    matches, and is stamped then."""
    trusted = cached_image_is_trusted(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read cached debug image %s: %s", path, e)
        return None
    if trusted and cached_image_is_trusted(path):  # still the same file after the read
        return data
    if build_id_is_intact(data):
        _write_stamp(path)
        return data
    log.warning("ignoring a damaged cached debug image %s", path)
    return None


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Best effort (a cache that cannot be written only costs the caching):
    a per-thread temporary name, then an atomic rename, then its stamp."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as e:
        log.warning("cannot write debug image %s: %s", path, e)
        temporary.unlink(missing_ok=True)
        return
    _write_stamp(path)


@dataclass
class _Placed:
    store_code: weakref.ref
    loaded: LoadedImage


class DebugImageSet:
    """The debug images of one process: one per EngineCode (content-addressed,
    cached on disk, shared by every Store and every run) plus the runtime's.

    ``cache_dir``: where images go for modules whose Engine has no
    ``cache_dir`` of its own (with one, they go beside its compiled images):
    ``DIR/debug-images/KEY/NAME.elf``.  The runtime image is this process's:
    ``DIR/debug-images/{process_tag}-runtime-ADDRESS-CRC/codemem-runtime.elf``,
    deleted by :meth:`remove_files`.  ``source_lines``: give images the
    guest's DWARF line table (:mod:`gdbstub.guest_lines`) when the module has
    one.  ``section_builders``: the extension point (:class:`ImageSectionBuilder`).
    Thread-safe."""

    def __init__(self, cache_dir: os.PathLike, *, process_tag: str, source_lines: bool = True,
                 section_builders: tuple[ImageSectionBuilder, ...] = ()):
        self.source_lines = source_lines
        self.section_builders = tuple(section_builders)
        self.cache_dir = pathlib.Path(cache_dir).resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.process_tag = sanitize_name(process_tag)
        self._lock = threading.RLock()
        # id(EngineCode) -> (weak EngineCode, image)
        self._engine_images: dict[int, tuple[weakref.ref, DebugImage]] = {}
        self._placed: dict[tuple[int, int], _Placed] = {}  # (store id, StoreCode base) -> placement
        self._by_name: dict[str, DebugImage] = {}
        self._runtime: LoadedImage | None = None
        # x32 Stores' executables: the low entry thunk plus their modules'
        # static data symbols, by the set of module images.
        self._runtimes_x32: dict[tuple[str, ...], LoadedImage] = {}
        # image name -> frame-base slots of its functions (frame_base_slots_of)
        self._frame_base_slots: dict[str, dict[int, int]] = {}
        # image name -> C calling-convention records of its functions (function_abis)
        self._function_abis: dict[str, dict[int, c_abi.FunctionAbi]] = {}

    # ------------------------------------------------------------ engine images
    def image_key(self, module) -> str:
        """The content address of ``module``'s image (see the module docstring)."""
        parts = [module.cache_key, getattr(module, "name", ""), builder_digest(),
                 f"lines={int(self.source_lines)}", f"link={IMAGE_LINK_ADDRESS:#x}",
                 f"x32={int(uses_x32_images(module))}"]
        parts += [f"{builder.name}={builder.digest}" for builder in self.section_builders]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def image_for(self, module, engine_code=None) -> DebugImage:
        """The image of ``module``'s EngineCode (``module.engine_code`` unless
        given), made on first use of its data: read from the cache when an
        intact file is there, else built and written."""
        engine_code = engine_code if engine_code is not None else module.engine_code
        with self._lock:
            memo = self._engine_images.get(id(engine_code))
            if memo is not None and memo[0]() is engine_code:
                return memo[1]
            root = getattr(getattr(module, "engine", None), "cache_dir", None) or self.cache_dir
            stem = sanitize_name(getattr(module, "name", None) or engine_code.name)
            path = pathlib.Path(root).resolve() / IMAGES_SUBDIRECTORY / self.image_key(module) / f"{stem}.elf"
            image = self._by_name.get(str(path))
            if image is not None:  # another EngineCode of the same key: the same file
                self._engine_images[id(engine_code)] = (weakref.ref(engine_code), image)
                return image

            def make() -> bytes:
                data = _read_cached(path)
                if data is None:
                    started = time.perf_counter()
                    data = build_engine_image(module, engine_code, source_lines=self.source_lines,
                                              section_builders=self.section_builders)
                    _write_atomically(path, data)
                    log.info("debug image %s built in %.2f s (%d bytes)", path, time.perf_counter() - started,
                             len(data))
                return data

            image = DebugImage(path, IMAGE_LINK_ADDRESS, engine_code.code_size, make=make)
            self._engine_images[id(engine_code)] = (weakref.ref(engine_code), image)
            self._by_name[image.name] = image
            return image

    def frame_base_slots(self, module, engine_code=None) -> dict[int, int]:
        """``{function image offset: rbp offset of its frame-base slot}`` of
        ``module``'s image (:func:`frame_base_slots_of`, read once)."""
        return self._section_records(module, engine_code, self._frame_base_slots, frame_bases.SECTION,
                                     lambda image, section: frame_bases.unpack_slots(section))

    def function_abis(self, module, engine_code=None) -> dict[int, "c_abi.FunctionAbi"]:
        """``{function image offset: FunctionAbi}`` of ``module``'s image:
        the functions whose C aggregates the System V and wasm32 conventions
        pass differently (gdbstub.c_abi; read once, empty without)."""
        def parse(image, section: bytes) -> dict[int, "c_abi.FunctionAbi"]:
            try:
                return c_abi.unpack_abis(section)
            except c_abi.AbiSectionError as e:
                log.warning("%s: %s; aggregates in finish and calls are shown as wasm32 passes them", image.name, e)
                return {}

        return self._section_records(module, engine_code, self._function_abis, c_abi.SECTION, parse)

    def _section_records(self, module, engine_code, memo: dict, section_name: str, parse: Callable) -> dict:
        """``parse(image, section)`` of section ``section_name`` of
        ``module``'s image (empty without it), read in place (not the whole
        image) once per image and kept in ``memo``."""
        image = self.image_for(module, engine_code)
        with self._lock:
            records = memo.get(image.name)
        if records is None:
            section = image.cached_section(section_name)
            records = parse(image, section) if section is not None else {}
            with self._lock:
                memo[image.name] = records
        return records

    # ------------------------------------------------------------ per Store
    def for_store(self, store) -> list[LoadedImage]:
        """One placed image per entry of ``store.registry`` (address order),
        then the executable (:meth:`executable`); placements of StoreCodes no
        longer registered are forgotten.  Module images are not made here (see
        :meth:`DebugImage.data`), but an x32 Store's executable needs them."""
        libraries = self.libraries(store)
        return libraries + [self.executable(store, libraries=libraries)]

    def libraries(self, store) -> list[LoadedImage]:
        """The library list of ``store``: its modules' images, placed at its
        code (made on first use of their data)."""
        store_id = store.id
        entries = store.registry.entries()
        with self._lock:
            placed, live = [], set()
            for entry in entries:
                code = entry.store_code
                key = (store_id, code.base)
                live.add(key)
                memo = self._placed.get(key)
                if memo is None or memo.store_code() is not code:
                    image = self.image_for(entry.module, code.engine_code)
                    memo = self._placed[key] = _Placed(weakref.ref(code), LoadedImage(image, code.base))
                placed.append(memo.loaded)
            for key in [k for k in self._placed if k[0] == store_id and k not in live]:
                del self._placed[key]
            return placed

    @staticmethod
    def write_files(images: list[LoadedImage]) -> None:
        """Makes sure each image's file is on disk, whole and checked
        (:attr:`DebugImage.on_disk`): built or checked now if it is not.  An
        image that cannot be made is logged, not raised: the client then
        finds no file (gdb warns and goes on without its symbols)."""
        for image in images:
            if image.image.on_disk:
                continue
            try:
                image.data
            except DebugImageError as e:
                log.error("debug image %s could not be made: %s", image.name, e)

    def executable(self, store, *, libraries: list[LoadedImage] | None = None) -> LoadedImage:
        """The image a debugger loads as the program (``qXfer:exec-file``): the
        host process's own code, linked where it runs (load bias 0).  For an
        x32 Store (:func:`uses_x32_images`) the low entry thunk, with its
        modules' static data symbols at their linear-memory addresses (which no
        load bias may move: a library's would), so the debugger names data
        addresses as natively (``0x460 <items>``); it needs the modules'
        images made."""
        if not uses_x32_images(store):
            return self.runtime_image()
        if libraries is None:
            libraries = self.libraries(store)
        key = tuple(image.name for image in libraries)
        with self._lock:
            found = self._runtimes_x32.get(key)
            if found is None:
                data_symbols = sorted({symbol for image in libraries
                                       for symbol in _parse_data_symbols(image.image.cached_section(
                                           DATA_SYMBOLS_SECTION))},
                                      key=lambda symbol: (symbol[1], symbol[0]))
                found = self._runtimes_x32[key] = self._runtime_x32(data_symbols)
                self._by_name[found.name] = found.image
            return found

    def _runtime_x32(self, data_symbols: list[tuple[str, int, int]]) -> LoadedImage:
        start, code, symbols, fdes = entry_thunk_image_parts()
        symbols += [Symbol(name, address, size, "object") for name, address, size in data_symbols]
        data_range = None
        if data_symbols:
            data_range = (min(address for _, address, _ in data_symbols),
                          max(address + max(size, 1) for _, address, size in data_symbols))
        data = build_debug_image(name="codemem-runtime", code_address=start, code=code, symbols=symbols,
                                 fdes=fdes, elf_class=ELF32, data_range=data_range,
                                 entry=call_landing_address(low=True))
        directory = f"{self.process_tag}-runtime-x32-{start:x}-{zlib.crc32(data):08x}"
        path = self.cache_dir / IMAGES_SUBDIRECTORY / directory / "codemem-runtime.elf"
        if _read_cached(path) != data:
            _write_atomically(path, data)
        return LoadedImage(DebugImage(path, start, len(code), data=data), start)

    def runtime_image(self) -> LoadedImage:
        """The image of the C runtime's trampolines (built once per set)."""
        with self._lock:
            if self._runtime is None:
                start, code, symbols, fdes = runtime_image_parts()
                data = build_debug_image(name="codemem-runtime", code_address=start, code=code,
                                         symbols=symbols, fdes=fdes, entry=call_landing_address(low=False))
                directory = f"{self.process_tag}-runtime-{start:x}-{zlib.crc32(data):08x}"
                path = self.cache_dir / IMAGES_SUBDIRECTORY / directory / "codemem-runtime.elf"
                if _read_cached(path) != data:
                    _write_atomically(path, data)
                image = DebugImage(path, start, len(code), data=data)
                self._runtime = LoadedImage(image, start)
                self._by_name[image.name] = image
            return self._runtime

    def find(self, path: str) -> DebugImage | None:
        """The image whose reported name is exactly ``path`` (no path
        normalization: a confined lookup, not a file-system one)."""
        with self._lock:
            return self._by_name.get(path)

    def images(self) -> list[DebugImage]:
        """Every image ``find`` can return."""
        with self._lock:
            return list(self._by_name.values())

    def remove_files(self) -> None:
        """Delete this process's runtime images (at shutdown; engine images stay
        in the cache for the next run) and forget every placement."""
        with self._lock:
            runtimes = list(self._runtimes_x32.values()) + ([self._runtime] if self._runtime is not None else [])
            for runtime in runtimes:
                path = runtime.path
                path.unlink(missing_ok=True)
                try:
                    path.parent.rmdir()  # the image's own directory
                except OSError:
                    pass
                self._by_name.pop(runtime.name, None)
            self._runtime = None
            self._runtimes_x32.clear()
            self._placed.clear()


# ------------------------------------------------------------- library lists
def libraries_svr4_xml(images: list[LoadedImage]) -> str:
    """The ``qXfer:libraries-svr4:read`` document (GDB manual, "Library List
    Format for SVR4 Targets").

    Every ``<library>`` carries ``name``, ``lm``, ``l_addr``, ``l_ld`` and
    ``lmid``: gdb 13 drops the whole list when one is missing. The values:

    * ``l_addr``: the load bias, Store code base minus the image's link
      address; gdb (solib-svr4 ``lm_addr_check``: the images have no
      ``.dynamic`` to recompute it from) and lldb add it to every address of
      the file.
    * ``lm``: there is no ``struct link_map``; a library's code address is used
      as an opaque key, distinct per library and stable while it is loaded
      (lldb keys loaded modules by it; gdb reads no memory at it when the list
      comes from this packet).
    * ``l_ld="0x0"``: the images have no ``.dynamic``, and gdb consults
      ``l_ld`` only to check a file's ``.dynamic`` address (solib-svr4
      ``lm_addr_check``).
    * ``main-lm="0x0"``: there is no main program in the list; 0 is what gdb
      and lldb treat as "not given".
    """
    lines = ['<library-list-svr4 version="1.0" main-lm="0x0">']
    for image in images:
        lines.append(f'  <library name={quoteattr(image.name)} lm="{image.start:#x}" '
                     f'l_addr="{image.load_bias:#x}" l_ld="0x0" lmid="0x0"/>')
    lines.append("</library-list-svr4>")
    return "\n".join(lines) + "\n"


def libraries_xml(images: list[LoadedImage], *, form: str = "segment") -> str:
    """The ``qXfer:libraries:read`` document (GDB manual, "Library List Format").

    ``form="segment"`` (default): ``<segment address=.../>`` per library, where
    the file's first (only) PT_LOAD is in the Store. This is the manual's form
    for fully linked files and the one gdb handles: gdb's solib-target maps
    segment addresses onto the file's segments (slide = address - p_vaddr),
    whereas it adds ``<section>`` addresses to the section addresses as
    *offsets* (meant for relocatable objects linked at 0).

    ``form="section"``: ``<section address=.../>``, where ``.text`` is, for
    lldb-22, whose ProcessGDBRemote::GetLoadedModuleList reads only the first
    ``<section>`` child of a library (never ``<segment>``) and takes it as the
    absolute load address of the file's first PT_LOAD. (In our probes lldb-22
    fetched this document over ``gdb-remote`` but added no image without an
    executable: no dynamic-loader plugin takes a target with no OS and no
    executable.)
    """
    if form not in ("segment", "section"):
        raise ValueError(f"library list form must be 'segment' or 'section', not {form!r}")
    lines = ['<library-list version="1.0">']
    for image in images:
        lines.append(f'  <library name={quoteattr(image.name)}><{form} address="{image.start:#x}"/></library>')
    lines.append("</library-list>")
    return "\n".join(lines) + "\n"
