"""Debug images a debugger loads for a Store's code, the library lists naming
them, and a Host I/O (``vFile:``) file server confined to them.

What a debugger sees (DESIGN.md, "What a debugger sees"): each StoreCode image
is reported as a shared library whose ELF file the stub synthesizes. This module
builds those files (:class:`DebugImageSet`), writes them to a local cache
directory (so a debugger on the same host can open them by name) and serves them
over ``vFile:`` (:class:`ImageFileServer`, what gdb does by default with its
``target:`` sysroot).

One image per StoreCode, linked at the StoreCode's absolute address (no slide,
``l_addr`` 0; see :mod:`gdbstub.debugimage.image`):

* ``.text``: the code as a debugger must see it, read with
  ``StoreCode.read_for_debugger`` (enabled patch sites shown disabled).
* symbols: every wasm function (name-section name, else ``wasm-function[N]``),
  the two veneers and their trampoline slots, and the br_table jump tables;
* ``.debug_frame``: one FDE per function, from the compiler's fixed prologue and
  epilogue (see :func:`function_cfi_rows`), and one per veneer.
* source lines (``.debug_line`` and a compile unit) when the module has a DWARF
  line table (:mod:`gdbstub.guest_lines`).

Plus one *runtime image* for the C runtime's assembly (``cm_enter`` and the
trampolines): the outermost wasm frame returns into ``cm_enter`` (its ``call
rdi``), and that image's single FDE marks the return address undefined so both
unwinders stop there cleanly instead of walking into the host's C stack.

The library-list documents follow the GDB manual, "Library List Format" and
"Library List Format for SVR4 Targets", plus what gdb 13 and lldb-22 parse
(see :func:`libraries_svr4_xml` and :func:`libraries_xml`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import capstone

from codemem.frametable import SITE_SIZE, FrameTable, FunctionInfo
from codemem.lowmem import ENTRY_THUNK_CODE, entry_thunk_address
from codemem.native import ffi, lib

from .debugimage import CfiRow, Fde, Symbol, build_debug_image
from .debugimage.elf import ELF32, ELF64, ElfClass
from .dwarf_translate import GuestDwarfError, TranslatedDwarf, translate_guest_dwarf
from .guest_lines import ImageLines, image_lines
from .protocol.packets import FileIOOpenFlags
from .protocol.replies import FileIOErrno, fileio_stat

log = logging.getLogger(__name__)

__all__ = [
    "DebugImage", "DebugImageSet", "FileServerError", "ImageFileServer", "MAX_OPEN_FILES",
    "function_cfi_rows", "libraries_svr4_xml", "libraries_xml",
]

#: Symbol names of the per-image veneers and slots (codemem/veneer.py layout).
BREAKPOINT_VENEER_SYMBOL = "__breakpoint_veneer"
TRAP_VENEER_SYMBOL = "__trap_veneer"
BREAKPOINT_SLOT_SYMBOL = "__breakpoint_slot"
TRAP_SLOT_SYMBOL = "__trap_slot"
JUMP_TABLES_SYMBOL = "__jump_tables"
#: Runtime symbols, in the order the runtime's assembly defines them.
RUNTIME_SYMBOLS = ("cm_enter", "cm_breakpoint_trampoline", "cm_trap_trampoline", "cm_host_call_trampoline")

_VENEER_SIZE = 6  # ff 25 rel32: jmp qword ptr [rip + slot]
_VENEER_OPCODE = b"\xff\x25"
_SLOT_SIZE = 8
_PUSH_RBP = b"\x55"
# `mov rbp, rsp` has two encodings (MOV r/m64,r64 and MOV r64,r/m64); accept both.
_MOV_RBP_RSP = (b"\x48\x89\xe5", b"\x48\x8b\xec")
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

#: Most files one client may hold open at once (then EMFILE).
MAX_OPEN_FILES = 64
#: First fd handed out, as a POSIX process would after stdin/stdout/stderr.
FIRST_FD = 3
#: File-I/O mode of every served file: a regular file, read-only for everyone
#: (GDB manual, File-I/O "mode_t Values": S_IFREG 0100000, S_IRUSR|S_IRGRP|S_IROTH).
SERVED_FILE_MODE = 0o100444

_WRITE_FLAGS = (FileIOOpenFlags.O_WRONLY | FileIOOpenFlags.O_RDWR | FileIOOpenFlags.O_APPEND
                | FileIOOpenFlags.O_CREAT | FileIOOpenFlags.O_TRUNC | FileIOOpenFlags.O_EXCL)

_capstone_lock = threading.Lock()
_capstone: capstone.Cs | None = None


def _disassembler() -> capstone.Cs:
    global _capstone
    with _capstone_lock:
        if _capstone is None:
            _capstone = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        return _capstone


def uses_x32_images(store) -> bool:
    """Whether ``store`` is shown through x32 debug images (ELF32, gdb's
    ``i386:x64-32``: 4-byte C pointers, docs/pointers.md): when its Engine
    placed everything a debugger dereferences below 4 GiB (codemem.lowmem)."""
    engine = getattr(store, "engine", None)
    return bool(getattr(engine, "low_addresses", False))


def sanitize_name(text: str, *, limit: int = 64) -> str:
    """``text`` reduced to a safe file-name component: ``[A-Za-z0-9._+-]``, no
    leading dot, at most ``limit`` characters, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip(".")[:limit]
    return cleaned or "_"


# ---------------------------------------------------------------------- images
@dataclass(frozen=True)
class DebugImage:
    """One synthesized ELF file.

    ``name`` is the library name reported to debuggers and is the absolute path
    of the cached file (``path``); ``data`` its bytes. ``start``/``end`` is the
    code range it describes (absolute addresses): for a StoreCode image
    ``[base, base + code_size)`` (functions, veneers and slots; not the frame
    table pages that follow in the mapping). ``mtime`` (seconds) is when it was
    built, reported by ``fstat``.
    """

    name: str
    path: pathlib.Path
    data: bytes = dataclasses.field(repr=False)
    start: int
    end: int
    mtime: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


def function_cfi_rows(code: bytes, table: FrameTable, func: FunctionInfo) -> tuple[CfiRow, ...] | None:
    """Call-frame rows for ``func`` of an image whose code (image offset 0) is
    ``code``, or None when its prologue is not the compiler's.

    The compiler's frame (codemem/abi.py "Function layout"; x64/compiler.py
    ``_compile_function`` and ``_build_epilogue``), verified with capstone::

        [start, +5)   ENTRY patch site (debug code only)       CFA = rsp+8
        p             push rbp                   (1 byte)      CFA = rsp+8
        p+1           mov rbp, rsp               (3 bytes)     CFA = rsp+16, rbp at CFA-16
        p+4 ...       body, one epilogue:                      CFA = rbp+16, rbp at CFA-16
                      mov rsp, rbp; pop rbp
        ret           ret                                      CFA = rsp+8 (rbp restored)
        after ret     out-of-line trap stubs (jumped to        CFA = rbp+16, rbp at CFA-16
                      from the body, frame still set up)

    where ``p`` is ``start + 5`` when the function begins with a patch site and
    ``start`` otherwise. The epilogue is found by disassembling from the
    function's last sequence point (the final ``end``, whose site the epilogue
    follows) to its ``pop rbp; ret``; if there is none, the body rule simply
    extends to the end (only the ``ret`` itself is then described wrongly).
    """
    start, end = func.native_start, func.native_end
    prologue = start + SITE_SIZE if table.site_index(start) is not None else start
    if code[prologue:prologue + 1] != _PUSH_RBP or code[prologue + 1:prologue + 4] not in _MOV_RBP_RSP:
        log.warning("function at image offset %#x: no `push rbp; mov rbp, rsp` at %#x, no CFI",
                    start, prologue)
        return None
    rows = [CfiRow(0, *_AT_ENTRY)]
    rows.append(CfiRow(prologue + 1 - start, *_AFTER_PUSH))
    rows.append(CfiRow(prologue + 4 - start, *_FRAME_SET))
    epilogue = _find_epilogue(code, table, func)
    if epilogue is not None:
        pop_at, ret_at = epilogue
        rows.append(CfiRow(pop_at + 1 - start, *_AT_ENTRY))
        if ret_at + 1 < end:
            rows.append(CfiRow(ret_at + 1 - start, *_FRAME_SET))
    return tuple(rows)


def _find_epilogue(code: bytes, table: FrameTable, func: FunctionInfo) -> tuple[int, int] | None:
    """Image offsets of the ``pop rbp`` and ``ret`` ending ``func``'s epilogue."""
    points = table.sequence_points(func)
    sweep_from = points[-1].native_offset if points else func.native_start
    previous = None
    for address, size, mnemonic, operands in _disassembler().disasm_lite(
            code[sweep_from:func.native_end], sweep_from):
        if mnemonic == "ret":
            if previous == ("pop", "rbp"):
                return address - 1, address
            break
        previous = (mnemonic, operands)
    log.debug("function at image offset %#x: no `pop rbp; ret` after %#x", func.native_start, sweep_from)
    return None


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


def store_code_image_parts(module, store_code) -> tuple[bytes, list[Symbol], list[Fde]]:
    """(code bytes, symbols, FDEs) describing ``store_code`` at its base."""
    table = store_code.frame_table
    code_address = store_code.base
    code = store_code.read_for_debugger(code_address, store_code.engine_code.code_size)
    functions = table.functions()
    symbols, fdes = [], []
    for func in functions:
        address = code_address + func.native_start
        symbols.append(Symbol(_function_name(module, func.wasm_index), address, func.native_size))
        rows = function_cfi_rows(code, table, func)
        if rows is not None:
            fdes.append(Fde(address, func.native_size, rows, clobbered=GUEST_CLOBBERED))
    veneer_symbols, veneer_fdes = _veneer_parts(code, code_address, table)
    symbols += veneer_symbols
    fdes += veneer_fdes
    jump_tables = _jump_tables(code, code_address, table, functions)
    if jump_tables is not None:
        symbols.append(jump_tables)
    return code, symbols, fdes


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
    code = bytes(ffi.buffer(ffi.cast("char *", start), len(ENTRY_THUNK_CODE)))
    symbols = [Symbol("cm_enter", start, len(code))]
    fdes = [Fde(start, len(code), (CfiRow(0, *_AT_ENTRY),), undefined_rip=True)]
    return start, code, symbols, fdes


_translations: "weakref.WeakKeyDictionary[object, dict[tuple[int, int], TranslatedDwarf | None]]" = \
    weakref.WeakKeyDictionary()
_translations_lock = threading.Lock()


def guest_debug_sections(module, engine_code, code_address: int, address_size: int) -> TranslatedDwarf | None:
    """The module's DWARF translated for an image of ``engine_code`` linked at
    ``code_address`` (gdbstub.dwarf_translate), memoized per EngineCode and
    address; None when the module has no DWARF or it cannot be translated
    (logged as a warning: the image then has source lines only, no variables)."""
    key = (code_address, address_size)
    with _translations_lock:
        memo = _translations.setdefault(engine_code, {})
        if key in memo:
            return memo[key]
    info = getattr(module, "info", None)
    translated = None
    if info is not None:
        try:
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


@dataclass
class _Memo:
    store_code: weakref.ref
    image: DebugImage


class DebugImageSet:
    """The debug images of one process, built on demand and cached as files.

    ``cache_dir`` is created if missing. File names are unique per process
    (``process_tag``), Store, module and code address, plus a CRC-32 of the
    contents, e.g. ``{tag}-store1-7f51be0b000-1a2b3c4d/demo.O0.elf``, so a
    debugger's cache keyed by name never pairs a name with other contents.
    ``source_lines``: give StoreCode images the guest's DWARF line table
    (:mod:`gdbstub.guest_lines`) when its module has one. Thread-safe.
    """

    def __init__(self, cache_dir: os.PathLike, *, process_tag: str, source_lines: bool = True):
        self.source_lines = source_lines
        self.cache_dir = pathlib.Path(cache_dir).resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.process_tag = sanitize_name(process_tag)
        self._lock = threading.RLock()
        self._memo: dict[tuple[int, int], _Memo] = {}  # (store id, StoreCode base) -> image
        self._by_name: dict[str, DebugImage] = {}
        self._runtime: DebugImage | None = None
        self._runtime_x32: DebugImage | None = None

    def for_store(self, store) -> list[DebugImage]:
        """One image per entry of ``store.registry`` (address order), then the
        runtime image. Built and written on first use, memoized per StoreCode
        (rebuilt if a new StoreCode takes an old one's address); images of
        StoreCodes no longer registered are forgotten (``find`` no longer
        returns them)."""
        store_id = store.id
        entries = store.registry.entries()
        x32 = uses_x32_images(store)
        with self._lock:
            images, live = [], set()
            for entry in entries:
                key = (store_id, entry.store_code.base)
                live.add(key)
                memo = self._memo.get(key)
                if memo is None or memo.store_code() is not entry.store_code:
                    if memo is not None:
                        self._by_name.pop(memo.image.name, None)
                    memo = _Memo(weakref.ref(entry.store_code), self._build_store_image(store_id, entry, x32))
                    self._memo[key] = memo
                    self._by_name[memo.image.name] = memo.image
                images.append(memo.image)
            for key in [k for k in self._memo if k[0] == store_id and k not in live]:
                self._by_name.pop(self._memo.pop(key).image.name, None)
            images.append(self.runtime_image(x32=x32))
            return images

    def runtime_image(self, *, x32: bool = False) -> DebugImage:
        """The image of the C runtime's trampolines (built once per set); for
        x32 Stores the ELF32 image of the low entry thunk instead."""
        with self._lock:
            if x32:
                if self._runtime_x32 is None:
                    start, code, symbols, fdes = entry_thunk_image_parts()
                    self._runtime_x32 = self._write("runtime-x32", "codemem-runtime", start, code, symbols, fdes,
                                                    stt_file="codemem-runtime", elf_class=ELF32)
                    self._by_name[self._runtime_x32.name] = self._runtime_x32
                return self._runtime_x32
            if self._runtime is None:
                start, code, symbols, fdes = runtime_image_parts()
                self._runtime = self._write("runtime", "codemem-runtime", start, code, symbols, fdes, stt_file="codemem-runtime")
                self._by_name[self._runtime.name] = self._runtime
            return self._runtime

    def find(self, path: str) -> DebugImage | None:
        """The current image whose reported name is exactly ``path`` (no path
        normalization: a confined lookup, not a file-system one)."""
        with self._lock:
            return self._by_name.get(path)

    def images(self) -> list[DebugImage]:
        """Every image ``find`` can return."""
        with self._lock:
            return list(self._by_name.values())

    def remove_files(self) -> None:
        """Delete every file this set wrote and forget all images (at shutdown;
        a debugger that still holds one open keeps reading it)."""
        with self._lock:
            images = [memo.image for memo in self._memo.values()]
            images += [image for image in (self._runtime, self._runtime_x32) if image is not None]
            for image in images:
                image.path.unlink(missing_ok=True)
                try:
                    image.path.parent.rmdir()  # the image's own directory
                except OSError:
                    pass
            self._memo.clear()
            self._by_name.clear()
            self._runtime = self._runtime_x32 = None

    def _build_store_image(self, store_id: int, entry, x32: bool = False) -> DebugImage:
        store_code = entry.store_code
        module_name = getattr(entry.module, "name", None) or store_code.engine_code.name
        code, symbols, fdes = store_code_image_parts(entry.module, store_code)
        elf_class = ELF32 if x32 else ELF64
        # Variables only in x32 images: in an ELF64 image gdb reads every C
        # pointer as 8 bytes (docs/pointers.md), which would show wrong values.
        translated = (guest_debug_sections(entry.module, store_code.engine_code, store_code.base,
                                           elf_class.address_size) if self.source_lines and x32 else None)
        debug_sections = translated.sections if translated is not None else None
        data_range = None
        if translated is not None and translated.data_symbols:
            symbols = symbols + [Symbol(name, address, size, "object")
                                 for name, address, size in translated.data_symbols]
            data_range = (min(address for _, address, _ in translated.data_symbols),
                          max(address + max(size, 1) for _, address, size in translated.data_symbols))
        lines = (image_lines(entry.module, store_code.frame_table, store_code.base)
                 if self.source_lines and debug_sections is None else ImageLines([]))
        return self._write(f"store{store_id}", sanitize_name(module_name), store_code.base, code,
                           symbols, fdes, stt_file=module_name, lines=lines, elf_class=elf_class,
                           debug_sections=debug_sections, data_range=data_range)

    def _write(self, owner: str, file_stem: str, start: int, code: bytes, symbols: list[Symbol],
               fdes: list[Fde], *, stt_file: str, lines: ImageLines = ImageLines([]),
               elf_class: ElfClass = ELF64, debug_sections: dict[str, bytes] | None = None,
               data_range: tuple[int, int] | None = None) -> DebugImage:
        data = build_debug_image(name=stt_file, code_address=start, code=code, symbols=symbols, fdes=fdes,
                                 lines=lines.rows, comp_dir=lines.comp_dir, producer=lines.producer,
                                 elf_class=elf_class, debug_sections=debug_sections, data_range=data_range)
        digest = zlib.crc32(data)
        # The unique part is the directory, so the file keeps the module's
        # name: debuggers show a module by its file name (`demo.elf`square).
        path = self.cache_dir / f"{self.process_tag}-{owner}-{start:x}-{digest:08x}" / f"{file_stem}.elf"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.exists() and path.read_bytes() == data):
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)
        image = DebugImage(name=str(path), path=path, data=data, start=start, end=start + len(code),
                           mtime=int(time.time()))
        log.debug("debug image %s: [%#x, %#x), %d symbols, %d FDEs", path, start, image.end,
                  len(symbols), len(fdes))
        return image


# ------------------------------------------------------------- library lists
def libraries_svr4_xml(images: list[DebugImage]) -> str:
    """The ``qXfer:libraries-svr4:read`` document (GDB manual, "Library List
    Format for SVR4 Targets").

    Every ``<library>`` carries ``name``, ``lm``, ``l_addr``, ``l_ld`` and
    ``lmid``: gdb 13 drops the whole list when one is missing. The values:

    * ``l_addr="0x0"``: the images are linked where they run; gdb and lldb
      both take ``l_addr`` as the slide.
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
        lines.append(f'  <library name={quoteattr(image.name)} lm="{image.start:#x}" l_addr="0x0" '
                     f'l_ld="0x0" lmid="0x0"/>')
    lines.append("</library-list-svr4>")
    return "\n".join(lines) + "\n"


def libraries_xml(images: list[DebugImage], *, form: str = "segment") -> str:
    """The ``qXfer:libraries:read`` document (GDB manual, "Library List Format").

    ``form="segment"`` (default): ``<segment address=.../>`` per library, the
    address of its only PT_LOAD, which is its link address, so no slide. This
    is the manual's form for fully linked files and the one gdb handles: gdb's
    solib-target maps segment addresses onto the file's segments, whereas it
    adds ``<section>`` addresses to the section addresses as *offsets* (meant for
    relocatable objects linked at 0), which would double ours.

    ``form="section"``: ``<section address=.../>``, the ``.text`` address, for
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


# ---------------------------------------------------------------- file server
class FileServerError(Exception):
    """A vFile request failed; ``errno`` is a File-I/O errno (FileIOErrno)."""

    def __init__(self, errno: FileIOErrno, message: str = ""):
        super().__init__(message or errno.name)
        self.errno = FileIOErrno(errno)


class ImageFileServer:
    """Host I/O (``vFile:open/pread/fstat/close``) semantics over the images of
    one :class:`DebugImageSet`, with no file-system access at all: the only
    files that exist are the set's current images, named exactly as reported
    (any other path, including ``..`` spellings of a real one, is ENOENT), and
    they are read-only (EACCES for any write, create or truncate flag).

    An open fd keeps serving the image it opened even if the set forgets it
    (like an unlinked file). Fds are the lowest free numbers from
    :data:`FIRST_FD`; at most :data:`MAX_OPEN_FILES` are open (then EMFILE).
    Sans-I/O: the session turns results and :class:`FileServerError` into
    ``F`` replies. Not thread-safe (one per client connection).
    """

    def __init__(self, images: DebugImageSet):
        self._images = images
        self._open: dict[int, DebugImage] = {}

    def open(self, path: str | bytes, flags: int, mode: int) -> int:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if flags & _WRITE_FLAGS:
            raise FileServerError(FileIOErrno.EACCES, f"{path}: debug images are read-only")
        image = self._images.find(path)
        if image is None:
            raise FileServerError(FileIOErrno.ENOENT, f"{path}: not a debug image")
        if len(self._open) >= MAX_OPEN_FILES:
            raise FileServerError(FileIOErrno.EMFILE, f"{MAX_OPEN_FILES} files already open")
        fd = FIRST_FD
        while fd in self._open:
            fd += 1
        self._open[fd] = image
        return fd

    def _image(self, fd: int) -> DebugImage:
        image = self._open.get(fd)
        if image is None:
            raise FileServerError(FileIOErrno.EBADF, f"fd {fd} is not open")
        return image

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """Up to ``count`` bytes at ``offset``; ``b""`` at or past the end. The
        caller bounds ``count`` by what fits in a reply packet."""
        image = self._image(fd)
        if count < 0 or offset < 0:
            raise FileServerError(FileIOErrno.EINVAL, f"pread count {count}, offset {offset}")
        return image.data[offset:offset + count]

    def fstat(self, fd: int) -> bytes:
        """The 64-byte File-I/O ``struct stat`` of an open image."""
        image = self._image(fd)
        return fileio_stat(mode=SERVED_FILE_MODE, size=image.size, ino=zlib.crc32(image.name.encode()),
                           atime=image.mtime, mtime=image.mtime, ctime=image.mtime)

    def close(self, fd: int) -> None:
        self._image(fd)
        del self._open[fd]

    @property
    def open_fds(self) -> list[int]:
        return sorted(self._open)
