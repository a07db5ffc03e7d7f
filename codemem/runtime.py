"""The runtime API, shaped like the ``wasmtime`` Python package.

::

    engine = Engine(debug=True)
    module = Module(engine, wasm_bytes)            # CompileError
    store = Store(engine)
    instance = Instance(store, module, [imports])  # LinkError, Trap (start function)
    instance.exports["fib"](10)                    # -> 55; Trap on a guest trap

Objects are bound to their Store, so no call takes a store argument.  Values
cross the boundary as Python ints/floats (i32/i64 as *signed* ints, like
wasmtime) or as :class:`Val` for exact bit patterns.

Memory layout of everything the compiled code touches is in ``codemem.abi``;
this module allocates those structures (VMContext, FuncRef, MemoryDefinition,
TableDefinition, HostContext, global cells) and keeps them alive.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import abi, native
from .abi import Libcall, TrapCode, VMContextLayout
from .code import EngineCode
from .errors import CompileError, LinkError, Trap
from .execution import ExecutionContext
from .lowmem import LowHeap, low_address_space
from .frames import walk
from .native import PROT_NONE, PROT_READ, PROT_WRITE, ffi, lib
from .registry import ModuleRegistry
from .wasm.module import ModuleInfo, SegmentMode
from .wasm.types import ExternKind, FuncType, GlobalType, Limits, MemoryType, TableType, ValType

log = logging.getLogger(__name__)

WASM_PAGE = 65536
MAX_PAGES = 65536
#: Bytes of a low-address Store's area for the argument arrays of calls into
#: guest code (Store._argument_array); deeper nesting falls back to the heap.
LOW_ARGUMENT_AREA_BYTES = 4096
MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
#: The compiler's identity in the image cache key.  It is derived from the
#: sources of every codemem module and its C extension (see
#: :func:`_compiler_version`), so a change
#: to code generation, the frame-table format or the ABI can never load an image
#: an older compiler made, even if nobody remembers to bump a number.
COMPILER_VERSION: str | None = None


def _compiler_version() -> str:
    """A short digest of the codemem package's Python sources and of its
    built C extension, which holds the C compiler core (computed once): a
    change to csrc/ code generation alone changes it too."""
    global COMPILER_VERSION
    if COMPILER_VERSION is None:
        COMPILER_VERSION = _package_digest(Path(__file__).resolve().parent)
    return COMPILER_VERSION


def _package_digest(package: Path) -> str:
    """A short digest of ``package``'s Python sources and built ``_native``
    extension (names and bytes)."""
    digest = hashlib.sha256()
    for source in sorted([*package.rglob("*.py"), *package.glob("_native*.so")]):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]

__all__ = [
    "Engine", "Module", "Store", "Instance", "Func", "Memory", "Global", "Table", "Val",
    "ValType", "FuncType", "MemoryType", "TableType", "GlobalType", "Limits", "ImportType", "ExportType", "FrameInfo",
]


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


def _signed(bits: int, width: int) -> int:
    bits &= (1 << width) - 1
    return bits - (1 << width) if bits >> (width - 1) else bits


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _f32_value(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & MASK32))[0]


def _f64_value(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits & MASK64))[0]


class Val:
    """A typed wasm value with its exact representation.

    Numbers keep their raw bits (``bits``); ``value`` is the Python view
    (signed int, float).  References keep the referenced object (a Func, any
    host object for externref, or None).
    """

    __slots__ = ("type", "bits", "ref")

    def __init__(self, type: ValType, bits: int = 0, ref: Any = None):
        self.type = ValType(type)
        self.bits = bits
        self.ref = ref

    @classmethod
    def i32(cls, x: int) -> "Val":
        return cls(ValType.I32, int(x) & MASK32)

    @classmethod
    def i64(cls, x: int) -> "Val":
        return cls(ValType.I64, int(x) & MASK64)

    @classmethod
    def f32(cls, x: float) -> "Val":
        return cls(ValType.F32, _f32_bits(float(x)))

    @classmethod
    def f64(cls, x: float) -> "Val":
        return cls(ValType.F64, _f64_bits(float(x)))

    @classmethod
    def f32_bits(cls, bits: int) -> "Val":
        return cls(ValType.F32, int(bits) & MASK32)

    @classmethod
    def f64_bits(cls, bits: int) -> "Val":
        return cls(ValType.F64, int(bits) & MASK64)

    @classmethod
    def funcref(cls, func: "Func | None") -> "Val":
        return cls(ValType.FUNCREF, 0, func)

    @classmethod
    def externref(cls, obj: Any) -> "Val":
        return cls(ValType.EXTERNREF, 0, obj)

    @classmethod
    def from_python(cls, valtype: ValType, x: Any) -> "Val":
        """Converts a Python value (or a Val, checked) to a Val of ``valtype``."""
        if isinstance(x, Val):
            if x.type != valtype:
                raise TypeError(f"expected a {valtype.wat_name} value, got {x.type.wat_name}")
            return x
        if valtype == ValType.I32:
            return cls.i32(x)
        if valtype == ValType.I64:
            return cls.i64(x)
        if valtype == ValType.F32:
            return cls.f32(x)
        if valtype == ValType.F64:
            return cls.f64(x)
        if valtype == ValType.FUNCREF:
            if x is not None and not isinstance(x, Func):
                raise TypeError(f"expected a Func or None for funcref, got {type(x).__name__}")
            return cls.funcref(x)
        return cls.externref(x)

    @property
    def value(self) -> Any:
        t = self.type
        if t == ValType.I32:
            return _signed(self.bits, 32)
        if t == ValType.I64:
            return _signed(self.bits, 64)
        if t == ValType.F32:
            return _f32_value(self.bits)
        if t == ValType.F64:
            return _f64_value(self.bits)
        return self.ref

    def __eq__(self, other) -> bool:
        return isinstance(other, Val) and (self.type, self.bits, self.ref) == (other.type, other.bits, other.ref)

    def __hash__(self) -> int:
        return hash((self.type, self.bits, id(self.ref)))

    def __repr__(self) -> str:
        if self.type in (ValType.F32, ValType.F64):
            return f"Val.{self.type.wat_name}({self.value!r} bits={self.bits:#x})"
        return f"Val.{self.type.wat_name}({self.value!r})"


# Lower-case aliases, as in wasmtime-py (ValType.i32 ...).
for _name, _member in (("i32", ValType.I32), ("i64", ValType.I64), ("f32", ValType.F32), ("f64", ValType.F64),
                       ("funcref", ValType.FUNCREF), ("externref", ValType.EXTERNREF)):
    if not hasattr(ValType, _name):
        setattr(ValType, _name, _member)


# --------------------------------------------------------------------------
# Engine and Module
# --------------------------------------------------------------------------


class Engine:
    """Compilation settings shared by Modules and Stores.

    ``debug=True`` compiles patch sites into every sequence point and gives
    every Store a private copy-on-write copy of the code.  ``cache_dir`` (or
    the ``WASM_GDBSTUB_CACHE`` environment variable) enables a persistent
    on-disk cache of compiled images keyed by the module's hash, the compiler
    version and the debug flag.

    ``low_addresses`` (default: ``debug``): place each Store's code copy, guest
    stack, instance contexts and global cells below 4 GiB (codemem.lowmem), so
    a debugger can show the guest through an x32 image (docs/pointers.md).
    Only a debug Engine may ask for it.
    """

    def __init__(self, debug: bool = False, *, cache_dir: str | os.PathLike | None = None,
                 low_addresses: bool | None = None):
        self.debug = bool(debug)
        self.low_addresses = self.debug if low_addresses is None else bool(low_addresses)
        if self.low_addresses and not self.debug:
            raise ValueError("low_addresses is for debug Engines only")
        cache = cache_dir if cache_dir is not None else os.environ.get("WASM_GDBSTUB_CACHE")
        self.cache_dir = Path(cache) if cache else None
        self._type_ids: dict[FuncType, int] = {}
        self._lock = threading.Lock()

    def type_id(self, functype: FuncType) -> int:
        """Canonical signature id (nonzero): equal FuncTypes get equal ids."""
        with self._lock:
            tid = self._type_ids.get(functype)
            if tid is None:
                tid = self._type_ids[functype] = len(self._type_ids) + 1
            return tid


@dataclass(frozen=True)
class ImportType:
    module: str
    name: str
    type: Any  # FuncType | MemoryType | TableType | GlobalType


@dataclass(frozen=True)
class ExportType:
    name: str
    type: Any


#: Cache entry (format 3), little-endian::
#:
#:     +-------+------------+----------+-----------+----------+--------+
#:     | magic | key digest | code_len | table_len | table_at | crc32  |
#:     | 5 B   | 32 B       | u64      | u64       | u64      | u32    |
#:     +-------+------------+----------+-----------+----------+--------+
#:     code (code_len bytes), zero padding up to the file offset table_at (the
#:     first page boundary after the code), the frame table (table_len bytes).
#:
#: The key digest is the sha256 of the entry's key (its file name); the CRC-32
#: covers everything after the header.  The table starts on a page so a warm
#: load maps it by itself and reads it in place (``FrameTable`` over an mmap).
_CACHE_MAGIC = b"WGSC\x03"
_CACHE_HEADER = struct.Struct("<5s32sQQQI")


def _cache_table_at(code_len: int) -> int:
    """File offset of the frame table in an entry with ``code_len`` bytes of code."""
    page = mmap.ALLOCATIONGRANULARITY
    return (_CACHE_HEADER.size + code_len + page - 1) // page * page


class Module:
    """A compiled module: decoded, validated, compiled to an EngineCode."""

    def __init__(self, engine: Engine, wasm: bytes | bytearray | memoryview, *, name: str | None = None):
        from .wasm.decoder import decode_module
        from .wasm.validator import validate_module

        self.engine = engine
        self.wasm = bytes(wasm)
        cached = self._cached_image()
        if cached is not None:
            # Only a module that decoded, validated and compiled is ever cached
            # (the key is its sha256): its code section need not be read again.
            info = decode_module(self.wasm, bodies=False)
            code, table = cached
        else:
            info = decode_module(self.wasm)
            validate_module(info)
        self.info: ModuleInfo = info
        self.name = name or info.names.module or "module"
        if cached is None:
            code, table = self._compile()
        try:
            self.engine_code = EngineCode(code, table, name=self.name, function_names=dict(info.names.functions),
                                          low_private_copies=engine.low_addresses)
        finally:
            if isinstance(code, memoryview):
                code.release()  # the mapped cache entry: unmapped once nothing else uses it
        self.layout = VMContextLayout.for_module(info)

    @classmethod
    def from_file(cls, engine: Engine, path: str | os.PathLike) -> "Module":
        p = Path(path)
        return cls(engine, p.read_bytes(), name=p.stem)

    @classmethod
    def validate(cls, engine: Engine, wasm: bytes) -> None:
        cls(engine, wasm)

    @property
    def cache_key(self) -> str:
        """The compiled image's identity: module hash, compiler version and
        debug flag (the stem of its cache file).  Whatever is derived from the
        image alone (a debug image, say) may be cached under this key."""
        key = self.__dict__.get("_cache_key")
        if key is None:
            digest = hashlib.sha256(self.wasm).hexdigest()
            key = self.__dict__["_cache_key"] = (
                f"{digest}-v{_compiler_version()}-{'debug' if self.engine.debug else 'nodebug'}")
        return key

    def _cache_path(self) -> Path | None:
        """Where this module's image lives in the cache; the file name is the key
        (:attr:`cache_key`)."""
        if self.engine.cache_dir is None:
            return None
        return self.engine.cache_dir / f"{self.cache_key}.img"

    def _cached_image(self) -> tuple[memoryview, mmap.mmap] | None:
        """(code, frame table) of an intact cache entry for this key, mapped
        from the file (the code as a memoryview for EngineCode to copy into its
        memfd, the table as its own mapping), or None.

        An entry is used only if its header names this key, its lengths match
        the file's and its CRC-32 matches: a truncated, damaged or misplaced
        file is ignored (and replaced by the compile), never executed.  (CRC-32
        guards against accidents, not against someone who can write the cache
        directory: that directory must be trusted like the code.)  Writers
        replace entries by rename, never in place, so a mapped entry does not
        change under its reader.
        """
        path = self._cache_path()
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read cache entry %s: %s", path, e)
            return None
        try:
            image = self._map_cache_entry(fd, hashlib.sha256(path.name.encode()).digest())
        except (OSError, ValueError) as e:  # mmap refuses a file it cannot map
            log.warning("cannot map cache entry %s: %s", path, e)
            image = None
        finally:
            os.close(fd)
        if image is None:
            log.warning("ignoring a corrupt cache entry %s", path)
        return image

    @staticmethod
    def _map_cache_entry(fd: int, key_digest: bytes) -> tuple[memoryview, mmap.mmap] | None:
        """(code, frame table) of the intact entry open as ``fd`` for
        ``key_digest``, else None."""
        size = os.fstat(fd).st_size
        if size < _CACHE_HEADER.size:
            return None
        magic, digest, code_len, table_len, table_at, crc = _CACHE_HEADER.unpack(os.pread(fd, _CACHE_HEADER.size, 0))
        if (magic != _CACHE_MAGIC or digest != key_digest or table_at != _cache_table_at(code_len)
                or table_len == 0 or table_at + table_len != size):
            return None
        # Both mappings are read whole by the CRC at once: populate them.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        head = mmap.mmap(fd, table_at, flags=flags, prot=mmap.PROT_READ)
        table = mmap.mmap(fd, table_len, flags=flags, prot=mmap.PROT_READ, offset=table_at)
        with memoryview(head) as view:
            intact = zlib.crc32(table, zlib.crc32(view[_CACHE_HEADER.size:])) == crc
        if not intact:
            head.close()
            table.close()
            return None
        return memoryview(head)[_CACHE_HEADER.size : _CACHE_HEADER.size + code_len], table

    def _compile(self) -> tuple[bytes, bytes]:
        """Compiles ``self.info`` (decoded and validated) and stores the image in
        the cache, best effort: a cache that cannot be written only costs the
        caching."""
        from .x64.compiler import compile_module

        compiled = compile_module(self.info, debug=self.engine.debug)
        code, table = compiled.code, compiled.frame_table
        path = self._cache_path()
        if path is not None:
            table_at = _cache_table_at(len(code))
            padding = bytes(table_at - _CACHE_HEADER.size - len(code))
            crc = zlib.crc32(table, zlib.crc32(padding, zlib.crc32(code)))  # file order
            header = _CACHE_HEADER.pack(_CACHE_MAGIC, hashlib.sha256(path.name.encode()).digest(), len(code),
                                        len(table), table_at, crc)
            # A per-thread temporary name, then an atomic rename: readers see a
            # whole entry or none, and a mapped entry is never written.
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:
                    f.writelines((header, code, padding, table))
                tmp.replace(path)
            except OSError as e:
                log.warning("cannot write cache entry %s: %s", path, e)
                try:
                    tmp.unlink()
                except OSError:  # never created, or its directory is not there
                    pass
        return code, table

    @property
    def imports(self) -> list[ImportType]:
        out = []
        for imp in self.info.imports:
            t = self.info.types[imp.desc] if imp.kind == ExternKind.FUNC else imp.desc
            out.append(ImportType(imp.module, imp.name, t))
        return out

    @property
    def exports(self) -> list[ExportType]:
        info = self.info
        getters = {
            ExternKind.FUNC: info.func_type,
            ExternKind.TABLE: info.table_type,
            ExternKind.MEMORY: info.memory_type,
            ExternKind.GLOBAL: info.global_type,
        }
        return [ExportType(e.name, getters[e.kind](e.index)) for e in info.exports]

    def func_name(self, func_index: int) -> str:
        return self.info.func_name(func_index) or f"wasm-function[{func_index}]"


# --------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------


def trap_for_code(code: int, frames=()) -> Trap:
    """The Trap for a trap code, with the spec's message for it."""
    try:
        message = abi.TRAP_MESSAGES[TrapCode(code)]
    except ValueError:
        message = f"trap code {code}"
    return Trap(message, frames, code=code)


@dataclass(frozen=True)
class FrameInfo:
    """One wasm frame of a backtrace (innermost first)."""

    func_index: int
    func_name: str
    module_name: str
    module_offset: int  # file offset of the wasm instruction in the module
    pc: int  # native pc (a StoreCode address)

    def __str__(self) -> str:
        return f"{self.module_name}!{self.func_name} @ {self.module_offset:#x}"


class Store:
    """Owns everything instances allocate, and runs guest code.

    Guest code runs on the calling thread, on this Store's guest stack (one
    thread at a time).  ``debug_handler``, when set (by the debugger side), is
    called on the guest thread for every breakpoint and trap event with
    ``(kind, code, regfile, vmctx)``; it may block.
    """

    def __init__(self, engine: Engine, *, stack_size: int = 8 << 20):
        self.engine = engine
        #: Instance contexts and global cells below 4 GiB (Engine.low_addresses), else None.
        self.low_heap = LowHeap() if engine.low_addresses else None
        self.ctx = ExecutionContext(stack_size=stack_size,
                                    low_space=low_address_space() if engine.low_addresses else None)
        self.id = self.ctx.store_id
        self.registry = ModuleRegistry(debug=engine.debug, store_name=f"store{self.id}")
        self.debug_handler: Callable | None = None
        #: Called as ``host_write_hook(memory, offset, length)`` after a host
        #: function (an import implemented in Python, e.g. WASI fd_read) wrote
        #: linear memory through :meth:`Memory.write`; the debugger side's
        #: watchpoints use it.  Not called for libcalls (memory.fill & co.,
        #: whose sites are checked in the code) nor for a debugger's writes.
        self.host_write_hook: Callable | None = None
        self._in_host_function = 0
        self._host_entries: dict[int, Any] = {}  # host id -> Func (host) or Instance (libcalls)
        self._funcs_by_funcref: dict[int, Func] = {}
        self._extern_handles: dict[int, Any] = {}
        self._extern_ids: dict[int, int] = {}
        self._keepalive: list[Any] = []
        self._pending_frames: list[FrameInfo] | None = None
        #: (address, bytes) of the argument array of each call from the host
        #: into guest code in progress, outermost first: where a function
        #: called so finds its arguments (rsi, abi.py "Registers") until its
        #: prologue has copied them, and a debugger reads them there.
        self.entry_arguments: list[tuple[int, int]] = []
        self._low_arguments: int | None = None  # address of the low argument area (low_heap)
        self._low_arguments_used = 0
        self._pending_exception: BaseException | None = None
        self._modules_by_engine_code: dict[int, Module] = {}
        self.memories: list[Memory] = []
        self.instances: list[Instance] = []
        self._closed = False
        native.register_event_handler(self.id, self._on_event)
        native.register_breakpoint_prelude(self.id, self.registry.perform_carrier_store)
        native.register_host_call_handler(self.id, self._on_host_call)

    # -- handles -------------------------------------------------------------

    def _new_host_context(self, entry: Any):
        host_id = len(self._host_entries) + 1
        self._host_entries[host_id] = entry
        hostctx = ffi.new("uint64_t[2]", [self.ctx.address, host_id])
        self._keepalive.append(hostctx)
        return hostctx

    def _externref_handle(self, obj: Any) -> int:
        if obj is None:
            return 0
        handle = self._extern_ids.get(id(obj))
        if handle is None:
            handle = len(self._extern_handles) + 1
            self._extern_handles[handle] = obj
            self._extern_ids[id(obj)] = handle
        return handle

    def _ref_to_bits(self, valtype: ValType, ref: Any) -> int:
        if valtype == ValType.FUNCREF:
            if ref is None:
                return 0
            if ref.store is not self:
                raise LinkError("a funcref from another Store")
            return ref._funcref_address
        return self._externref_handle(ref)

    def _bits_to_ref(self, valtype: ValType, bits: int) -> Any:
        if bits == 0:
            return None
        if valtype == ValType.FUNCREF:
            func = self._funcs_by_funcref.get(bits)
            if func is None:  # a wasm function no one has asked for as a Func yet
                func = next(f for f in (i.funcs.func_at_funcref(bits) for i in self.instances) if f is not None)
            return func
        return self._extern_handles[bits]

    def to_bits(self, valtype: ValType, x: Any) -> int:
        v = Val.from_python(valtype, x)
        if valtype in (ValType.FUNCREF, ValType.EXTERNREF):
            return self._ref_to_bits(valtype, v.ref)
        return v.bits

    def to_val(self, valtype: ValType, bits: int) -> Val:
        if valtype == ValType.I32:
            return Val(valtype, bits & MASK32)
        if valtype == ValType.F32:
            return Val(valtype, bits & MASK32)
        if valtype in (ValType.I64, ValType.F64):
            return Val(valtype, bits & MASK64)
        return Val(valtype, 0, self._bits_to_ref(valtype, bits))

    # -- running guest code ------------------------------------------------

    def argument_regions(self) -> list[tuple[int, int]]:
        """(address, bytes) of the memory holding the argument arrays of
        the calls from the host in progress: the whole low argument area
        (a debugger reads it in cache lines) and any array outside it."""
        regions = []
        area = self._low_arguments
        if area is not None:
            regions.append((area, LOW_ARGUMENT_AREA_BYTES))
        for address, size in self.entry_arguments:
            if area is None or not area <= address < area + LOW_ARGUMENT_AREA_BYTES:
                regions.append((address, size))
        return regions

    @contextlib.contextmanager
    def _argument_array(self, count: int):
        """A zeroed array of ``count`` 8-byte slots for a call into guest
        code, as (``uint64_t *`` cdata, address): in a low-address Engine
        below 4 GiB (a debugger's x32 view reads a function's arguments
        there at its first instruction, docs/calls.md), taken from a
        per-Store area used as a stack (calls nest through host functions)."""
        nbytes = 8 * count
        if self.low_heap is not None and self._low_arguments_used + nbytes <= LOW_ARGUMENT_AREA_BYTES:
            if self._low_arguments is None:
                self._low_arguments = self.low_heap.alloc_pages(LOW_ARGUMENT_AREA_BYTES, what="call arguments")[1]
            address = self._low_arguments + self._low_arguments_used
            self._low_arguments_used += nbytes
            try:
                array = ffi.cast("uint64_t *", address)
                ffi.memmove(array, bytes(nbytes), nbytes)
                yield array, address
            finally:
                self._low_arguments_used -= nbytes
            return
        array = ffi.new("uint64_t[]", count)
        yield array, int(ffi.cast("uintptr_t", array))

    def _enter(self, code_pc: int, vmctx: int, address: int, size: int) -> None:
        """Runs guest code with its ``size``-byte argument array at
        ``address``; raises Trap (or a host function's exception)."""
        if self.ctx.depth == 0:
            self._pending_frames = None
            self._pending_exception = None
        self.entry_arguments.append((address, size))
        try:
            code = self.ctx.enter(code_pc, vmctx, address)
        finally:
            self.entry_arguments.pop()
        if code:
            frames, self._pending_frames = self._pending_frames or [], None
            if code == TrapCode.HOST_ERROR and self._pending_exception is not None:
                exc, self._pending_exception = self._pending_exception, None
                raise exc
            raise trap_for_code(code, frames)

    def _on_event(self, kind: int, code: int, regfile, vmctx: int) -> None:
        if kind == native.EVENT_TRAP:
            # The guest stack is intact until the trampoline unwinds: take the
            # backtrace now.  rsi holds the trapping instruction's sequence point.
            self._pending_frames = self.backtrace(regfile.gpr[4], regfile.gpr[6], regfile.gpr[7])
        if self.debug_handler is not None:
            self.debug_handler(kind, code, regfile, vmctx)

    def backtrace(self, pc: int, rbp: int, rsp: int, limit: int = 10000) -> list[FrameInfo]:
        """Wasm frames of this Store's guest stopped at ``pc`` (a sequence
        point) with ``rbp``/``rsp``, innermost first (codemem.frames.walk; a
        caller frame is at its call instruction)."""
        return [FrameInfo(func_index=frame.func.wasm_index, func_name=frame.func_name,
                          module_name=frame.module_name, module_offset=frame.wasm_offset, pc=frame.pc)
                for frame in walk(self.registry, self.ctx.stack, pc, rbp, rsp, limit)]

    def _on_host_call(self, hostctx: int, args) -> int:
        host_id = ffi.cast("uint64_t *", hostctx)[1]
        entry = self._host_entries[host_id]
        try:
            if isinstance(entry, Instance):
                entry._libcall(args)
                return 0
            self._in_host_function += 1
            try:
                return entry._call_from_wasm(args)
            finally:
                self._in_host_function -= 1
        except Trap as trap:
            self._pending_exception = trap
            return TrapCode.HOST_ERROR
        except BaseException as exc:  # a host function's own exception: re-raised by the caller
            self._pending_exception = exc
            return TrapCode.HOST_ERROR

    @property
    def in_host_function(self) -> bool:
        """True while the Store's guest thread runs a host function (an
        import implemented in Python) that wasm called: it reaches no
        sequence point before that returns."""
        return self._in_host_function > 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        native.unregister_event_handler(self.id)
        native.unregister_breakpoint_prelude(self.id)
        native.unregister_host_call_handler(self.id)
        for entry in self.registry.entries():
            self.registry.unregister(entry.engine_code)
        for memory in self.memories:
            memory._release()
        self.ctx.close()
        if self.low_heap is not None:
            self.low_heap.close()

    def _new_cells(self, count: int, what: str):
        """``count`` zeroed 8-byte cells (a ``uint64_t *``-indexable cdata) and
        their address: below 4 GiB for a low-address Engine."""
        if self.low_heap is not None:
            return self.low_heap.alloc(8 * count, what=what)
        cells = ffi.new("uint64_t[]", max(count, 1))
        return cells, int(ffi.cast("uintptr_t", cells))

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass


# --------------------------------------------------------------------------
# Externs
# --------------------------------------------------------------------------


class Func:
    """A function: a wasm function of an instance, or a host function."""

    def __init__(self, store: Store, functype: FuncType, callable: Callable, *, access_caller: bool = False):
        self.store = store
        self.type = functype
        self._callable = callable
        self._instance: Instance | None = None
        self._func_index: int | None = None
        hostctx = store._new_host_context(self)
        self._funcref = ffi.new(
            "uint64_t[3]",
            [lib.cm_host_call_trampoline_address(), int(ffi.cast("uintptr_t", hostctx)), store.engine.type_id(functype)],
        )
        self._register()

    @classmethod
    def _wasm_in(cls, instance: "Instance", func_index: int, funcref, funcref_address: int) -> "Func":
        """Wasm function ``func_index`` of ``instance`` over its funcref record
        at ``funcref_address`` (``funcref``: a ``uint64_t *`` there), one of
        the instance's shared records (:class:`_InstanceFuncs`)."""
        self = cls.__new__(cls)
        self.store = instance.store
        self.type = instance.module.info.func_type(func_index)
        self._callable = None
        self._instance = instance
        self._func_index = func_index
        self._funcref = funcref
        self._funcref_address = funcref_address
        self.store._funcs_by_funcref[funcref_address] = self
        return self

    def _register(self) -> None:
        self._funcref_address = int(ffi.cast("uintptr_t", self._funcref))
        self.store._funcs_by_funcref[self._funcref_address] = self

    @property
    def code_pc(self) -> int:
        return self._funcref[0]

    @property
    def instance(self) -> "Instance | None":
        """The instance a wasm function belongs to (None for a host function)."""
        return self._instance

    @property
    def name(self) -> str | None:
        if self._instance is not None:
            return self._instance.module.func_name(self._func_index)
        return getattr(self._callable, "__name__", None)

    def call_vals(self, args: Sequence[Any]) -> list[Val]:
        """Calls with exact values; returns the results as Vals."""
        params, results = self.type.params, self.type.results
        if len(args) != len(params):
            raise TypeError(f"expected {len(params)} arguments, got {len(args)}")
        store = self.store
        if self._instance is None:
            out = self._invoke_host([Val.from_python(t, a) for t, a in zip(params, args)])
            return out
        with store._argument_array(max(len(params), len(results), 1)) as (array, address):
            for i, (t, a) in enumerate(zip(params, args)):
                array[i] = store.to_bits(t, a)
            store._enter(self._funcref[0], self._funcref[1], address, 8 * max(len(params), len(results), 1))
            return [store.to_val(t, array[i]) for i, t in enumerate(results)]

    def __call__(self, *args: Any) -> Any:
        out = [v.value for v in self.call_vals(args)]
        if not out:
            return None
        return out[0] if len(out) == 1 else tuple(out)

    def _invoke_host(self, vals: list[Val]) -> list[Val]:
        result = self._callable(*[v.value for v in vals])
        results = self.type.results
        if len(results) == 0:
            return []
        if len(results) == 1:
            result = (result,)
        elif not isinstance(result, (tuple, list)) or len(result) != len(results):
            raise TypeError(f"host function must return {len(results)} values")
        return [Val.from_python(t, r) for t, r in zip(results, result)]

    def _call_from_wasm(self, args) -> int:
        store = self.store
        vals = [store.to_val(t, args[i]) for i, t in enumerate(self.type.params)]
        for i, v in enumerate(self._invoke_host(vals)):
            args[i] = store.to_bits(self.type.results[i], v)
        return 0


class Memory:
    """A linear memory.  The whole maximum is reserved (PROT_NONE) up front, so
    its base never moves; growing makes more of it read-write."""

    def __init__(self, store: Store, memtype: MemoryType):
        limits = memtype.limits
        if limits.min > MAX_PAGES or (limits.max is not None and limits.max > MAX_PAGES):
            raise ValueError("memory size must be at most 65536 pages (4GiB)")
        self.store = store
        self.type = memtype
        self.max_pages = limits.max if limits.max is not None else MAX_PAGES
        self._reserved = max(self.max_pages * WASM_PAGE, native.PAGE_SIZE)
        self.base = native.check(lib.cm_map(-1, self._reserved, PROT_NONE, 0), "reserve linear memory")
        self.definition = ffi.new("uint64_t[3]", [self.base, 0, self.max_pages])
        self.definition_address = int(ffi.cast("uintptr_t", self.definition))
        store.memories.append(self)
        if limits.min:
            self._commit(limits.min)

    def _commit(self, pages: int) -> None:
        new_length = pages * WASM_PAGE
        native.check(lib.cm_protect(self.base, new_length, PROT_READ | PROT_WRITE), "grow linear memory")
        self.definition[1] = new_length

    @property
    def data_len(self) -> int:
        return self.definition[1]

    @property
    def size(self) -> int:
        """Current size in pages."""
        return self.definition[1] // WASM_PAGE

    def grow(self, delta: int) -> int:
        """Grows by ``delta`` pages; returns the old size, or -1 if it cannot."""
        old = self.size
        if delta < 0 or old + delta > self.max_pages:
            return -1
        if delta:
            self._commit(old + delta)
        return old

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.data_len:
            raise IndexError(f"memory access {offset:#x}+{length:#x} outside {self.data_len:#x} bytes")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(ffi.buffer(ffi.cast("char *", self.base + offset), length))

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        ffi.memmove(ffi.cast("char *", self.base + offset), bytes(data), len(data))
        store = self.store
        if store.host_write_hook is not None and store._in_host_function and data:
            store.host_write_hook(self, offset, len(data))

    def _release(self) -> None:
        if self.base:
            lib.cm_unmap(self.base, self._reserved)
            self.base = 0


class Global:
    def __init__(self, store: Store, globaltype: GlobalType, value: Any):
        self.store = store
        self.type = globaltype
        self.cell, self.cell_address = store._new_cells(1, "global cell")
        self.cell[0] = store.to_bits(globaltype.valtype, value)

    @property
    def value(self) -> Any:
        return self.store.to_val(self.type.valtype, self.cell[0]).value

    def get(self) -> Val:
        """The value with its exact bits."""
        return self.store.to_val(self.type.valtype, self.cell[0])

    def set_value(self, value: Any) -> None:
        if not self.type.mutable:
            raise TypeError("global is immutable")
        self.cell[0] = self.store.to_bits(self.type.valtype, value)


class Table:
    def __init__(self, store: Store, tabletype: TableType, init: Any):
        self.store = store
        self.type = tabletype
        self.max = tabletype.limits.max if tabletype.limits.max is not None else MASK32
        self.definition = ffi.new("uint64_t[3]", [0, 0, self.max])
        self.definition_address = int(ffi.cast("uintptr_t", self.definition))
        self._elements = None
        self._resize(tabletype.limits.min, store.to_bits(tabletype.elem, init))

    def _resize(self, size: int, fill_bits: int) -> None:
        old_size = self.definition[1]
        elements = ffi.new("uint64_t[]", max(size, 1))
        if self._elements is not None and old_size:
            ffi.memmove(elements, self._elements, 8 * old_size)
        for i in range(old_size, size):
            elements[i] = fill_bits
        self._elements = elements
        self.definition[0] = int(ffi.cast("uintptr_t", elements))
        self.definition[1] = size

    @property
    def size(self) -> int:
        return self.definition[1]

    def get(self, index: int) -> Any:
        if not 0 <= index < self.size:
            raise IndexError(f"table index {index} out of bounds ({self.size})")
        return self.store._bits_to_ref(self.type.elem, self._elements[index])

    def set(self, index: int, value: Any) -> None:
        if not 0 <= index < self.size:
            raise IndexError(f"table index {index} out of bounds ({self.size})")
        self._elements[index] = self.store.to_bits(self.type.elem, value)

    def grow(self, delta: int, init: Any) -> int:
        return self._grow_bits(delta, self.store.to_bits(self.type.elem, init))

    def _grow_bits(self, delta: int, fill_bits: int) -> int:
        old = self.size
        if delta < 0 or old + delta > self.max:
            return -1
        self._resize(old + delta, fill_bits)
        return old


Extern = Func | Memory | Global | Table


# --------------------------------------------------------------------------
# Instance
# --------------------------------------------------------------------------


def _limits_match(actual, required) -> bool:
    """Limits subtyping (wasm spec 4.5.1): at least the minimum, at most the maximum."""
    a, r = actual.limits, required.limits
    if a.min < r.min:
        return False
    if r.max is None:
        return True
    return a.max is not None and a.max <= r.max


class Instance:
    """Instantiates ``module`` in ``store`` with ``imports`` in module.imports order."""

    def __init__(self, store: Store, module: Module, imports: Iterable[Extern]):
        if module.engine is not store.engine:
            raise LinkError("module and store belong to different engines")
        self.store = store
        self.module = module
        info = module.info
        imports = list(imports)
        if len(imports) != len(info.imports):
            raise LinkError(f"expected {len(info.imports)} imports, got {len(imports)}")
        self.layout = layout = module.layout
        self.entry = store.registry.register(module, module.engine_code)
        self.store_code = self.entry.store_code
        imported_funcs: list[Func] = []
        self.memories: list[Memory] = []
        self.tables: list[Table] = []
        self.globals: list[Global] = []
        self._dropped_elems: set[int] = set()
        self._dropped_datas: set[int] = set()

        self.vmctx, self.vmctx_address = store._new_cells(max(layout.size // 8, 1), "instance context")
        self._libcall_ctx = store._new_host_context(self)

        # Imports, checked (wasm spec 4.5.4 "Instantiation", external typing).
        for imp, ext in zip(info.imports, imports):
            where = f"{imp.module}::{imp.name}"
            if imp.kind == ExternKind.FUNC:
                if not isinstance(ext, Func) or ext.type != info.types[imp.desc]:
                    raise LinkError(f"incompatible import type for {where}")
                imported_funcs.append(ext)
            elif imp.kind == ExternKind.MEMORY:
                if not isinstance(ext, Memory) or not _limits_match(_CurrentLimits(ext.size, ext.type.limits.max), imp.desc):
                    raise LinkError(f"incompatible import type for {where}")
                self.memories.append(ext)
            elif imp.kind == ExternKind.TABLE:
                if (not isinstance(ext, Table) or ext.type.elem != imp.desc.elem
                        or not _limits_match(_CurrentLimits(ext.size, ext.type.limits.max), imp.desc)):
                    raise LinkError(f"incompatible import type for {where}")
                self.tables.append(ext)
            else:
                if not isinstance(ext, Global) or ext.type != imp.desc:
                    raise LinkError(f"incompatible import type for {where}")
                self.globals.append(ext)
            if getattr(ext, "store", store) is not store:
                raise LinkError(f"import {where} belongs to another Store")

        # Definitions.
        for memtype in info.memories:
            self.memories.append(Memory(store, memtype))
        for g in info.globals:
            is_ref = g.type.valtype in (ValType.FUNCREF, ValType.EXTERNREF)
            self.globals.append(Global(store, g.type, None if is_ref else 0))
        #: The function index space (imports first); wasm functions' Func
        #: objects are made on first use (:class:`_InstanceFuncs`).
        self.funcs: Sequence[Func] = _InstanceFuncs(self, imported_funcs)
        # Global initializers may refer to imported globals and to functions.
        for g, glob in zip(info.globals, self.globals[info.num_imported_globals:]):
            glob.cell[0] = self._const_bits(g.init, g.type.valtype)
        for tabletype in info.tables:
            self.tables.append(Table(store, tabletype, None))

        self._fill_vmctx()

        # Element then data segments, then start (spec 2.0 instantiation order).
        for index, seg in enumerate(info.elems):
            if seg.mode == SegmentMode.ACTIVE:
                offset = self._const_bits(seg.offset, ValType.I32) & MASK32
                self._table_init(seg.table_index, index, offset, 0, len(seg.items))
                self._dropped_elems.add(index)
            elif seg.mode == SegmentMode.DECLARATIVE:
                self._dropped_elems.add(index)
        for index, seg in enumerate(info.datas):
            if seg.mode == SegmentMode.ACTIVE:
                offset = self._const_bits(seg.offset, ValType.I32) & MASK32
                self._memory_init(index, offset, 0, len(seg.data))
                self._dropped_datas.add(index)
        store.instances.append(self)
        if info.start is not None:
            self.funcs[info.start].call_vals([])

    def _fill_vmctx(self) -> None:
        layout, vm = self.layout, self.vmctx
        vm[abi.VMCTX_STACK_CTX // 8] = self.store.ctx.address
        if self.memories:
            vm[abi.VMCTX_MEMORY_BASE // 8] = self.memories[0].base
            vm[abi.VMCTX_MEMORY_DEF // 8] = self.memories[0].definition_address
        vm[abi.VMCTX_LIBCALL_CTX // 8] = int(ffi.cast("uintptr_t", self._libcall_ctx))
        vm[abi.VMCTX_HOST_TRAMPOLINE // 8] = lib.cm_host_call_trampoline_address()
        funcs = self.funcs
        for i in range(layout.num_imported_funcs):
            f = funcs[i]
            at = layout.imported_func(i) // 8
            vm[at], vm[at + 1] = f._funcref[0], f._funcref[1]
        for i in range(len(funcs)):
            vm[layout.funcref(i) // 8] = funcs.funcref_address(i)
        for i, g in enumerate(self.globals):
            vm[layout.global_cell(i) // 8] = g.cell_address
        for i, t in enumerate(self.tables):
            vm[layout.table(i) // 8] = t.definition_address
        for i, functype in enumerate(self.module.info.types):
            vm[layout.type_id(i) // 8] = self.store.engine.type_id(functype)

    # -- constant expressions and segments ------------------------------------

    def _const_bits(self, expr, valtype: ValType) -> int:
        ins = expr.single
        if ins is None:
            raise CompileError("constant expression required", expr.offset)
        name = ins.name
        if name in ("i32.const", "i64.const"):
            return ins.imm & MASK64
        if name in ("f32.const", "f64.const"):
            return ins.imm
        if name == "ref.null":
            return 0
        if name == "ref.func":
            return self.funcs.funcref_address(ins.imm)
        if name == "global.get":
            return self.globals[ins.imm].cell[0]
        raise CompileError("constant expression required", expr.offset)

    def _elem_item_bits(self, seg, item) -> int:
        if isinstance(item, int):
            return self.funcs.funcref_address(item)
        return self._const_bits(item, seg.elem_type)

    def _table_init(self, table_index: int, elem_index: int, dst: int, src: int, n: int) -> None:
        seg = self.module.info.elems[elem_index]
        items = () if elem_index in self._dropped_elems else seg.items
        table = self.tables[table_index]
        if src + n > len(items) or dst + n > table.size:
            raise trap_for_code(TrapCode.OUT_OF_BOUNDS_TABLE)
        for k in range(n):
            table._elements[dst + k] = self._elem_item_bits(seg, items[src + k])

    def _memory_init(self, data_index: int, dst: int, src: int, n: int) -> None:
        data = b"" if data_index in self._dropped_datas else self.module.info.datas[data_index].data
        memory = self.memories[0] if self.memories else None
        if memory is None or src + n > len(data) or dst + n > memory.data_len:
            raise trap_for_code(TrapCode.OUT_OF_BOUNDS_MEMORY)
        if n:
            ffi.memmove(ffi.cast("char *", memory.base + dst), data[src : src + n], n)

    # -- libcalls (abi.Libcall) ---------------------------------------------

    def _libcall(self, area) -> None:
        op = Libcall(area[0])
        a = [area[k] for k in range(1, abi.LIBCALL_TRAP_SLOT)]
        area[abi.LIBCALL_TRAP_SLOT] = 0
        try:
            result = self._run_libcall(op, a)
        except Trap as trap:
            code = {v: k for k, v in abi.TRAP_MESSAGES.items()}[trap.message]
            area[abi.LIBCALL_TRAP_SLOT] = int(code)
            return
        if result is not None:
            area[0] = result & MASK64

    def _run_libcall(self, op: Libcall, a: list[int]) -> int | None:
        u32 = lambda x: x & MASK32  # noqa: E731  (i32 operands arrive with unspecified upper bits)
        if op == Libcall.MEMORY_GROW:
            return self.memories[0].grow(u32(a[0])) & MASK32
        if op == Libcall.MEMORY_INIT:
            self._memory_init(u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3]))
            return None
        if op == Libcall.DATA_DROP:
            self._dropped_datas.add(u32(a[0]))
            return None
        if op == Libcall.MEMORY_COPY:
            dst, src, n = u32(a[0]), u32(a[1]), u32(a[2])
            memory = self.memories[0]
            if dst + n > memory.data_len or src + n > memory.data_len:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_MEMORY)
            if n:
                ffi.memmove(ffi.cast("char *", memory.base + dst), ffi.cast("char *", memory.base + src), n)
            return None
        if op == Libcall.MEMORY_FILL:
            dst, value, n = u32(a[0]), a[1] & 0xFF, u32(a[2])
            memory = self.memories[0]
            if dst + n > memory.data_len:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_MEMORY)
            if n:
                ffi.memmove(ffi.cast("char *", memory.base + dst), bytes([value]) * n, n)
            return None
        if op == Libcall.TABLE_GROW:
            return self.tables[u32(a[0])]._grow_bits(u32(a[2]), a[1]) & MASK32
        if op == Libcall.TABLE_FILL:
            table, i, ref, n = self.tables[u32(a[0])], u32(a[1]), a[2], u32(a[3])
            if i + n > table.size:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_TABLE)
            for k in range(n):
                table._elements[i + k] = ref
            return None
        if op == Libcall.TABLE_COPY:
            dst_t, src_t = self.tables[u32(a[0])], self.tables[u32(a[1])]
            d, s, n = u32(a[2]), u32(a[3]), u32(a[4])
            if d + n > dst_t.size or s + n > src_t.size:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_TABLE)
            values = [src_t._elements[s + k] for k in range(n)]
            for k, v in enumerate(values):
                dst_t._elements[d + k] = v
            return None
        if op == Libcall.TABLE_INIT:
            self._table_init(u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3]), u32(a[4]))
            return None
        if op == Libcall.ELEM_DROP:
            self._dropped_elems.add(u32(a[0]))
            return None
        if op == Libcall.TABLE_GET:
            table, i = self.tables[u32(a[0])], u32(a[1])
            if i >= table.size:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_TABLE)
            return table._elements[i]
        if op == Libcall.TABLE_SET:
            table, i = self.tables[u32(a[0])], u32(a[1])
            if i >= table.size:
                raise trap_for_code(TrapCode.OUT_OF_BOUNDS_TABLE)
            table._elements[i] = a[2]
            return None
        if op == Libcall.TABLE_SIZE:
            return self.tables[u32(a[0])].size
        raise AssertionError(f"unknown libcall {op}")

    # -- exports ----------------------------------------------------------------

    @property
    def exports(self) -> dict[str, Extern]:
        spaces = {
            ExternKind.FUNC: self.funcs,
            ExternKind.TABLE: self.tables,
            ExternKind.MEMORY: self.memories,
            ExternKind.GLOBAL: self.globals,
        }
        return {e.name: spaces[e.kind][e.index] for e in self.module.info.exports}


class _InstanceFuncs(Sequence):
    """``Instance.funcs``: the function index space, imports first.  The
    defined functions' funcref records (code address, instance context,
    signature id: three quadwords, codemem.abi) are one array made at
    instantiation, and their :class:`Func` objects are made on first use: a
    real-size module's 2,000 functions cost every instantiation (every
    ``serve`` start, every gdb ``run``) 2,000 objects and allocations when
    made up front, of which a run uses a handful (its exports)."""

    def __init__(self, instance: "Instance", imported: list[Func]):
        module = instance.module
        info = module.info
        self._instance = instance
        self._imported = list(imported)
        first = info.num_imported_funcs
        self._first = first
        count = info.num_funcs - first
        self._count = count
        engine = instance.store.engine
        type_ids = [engine.type_id(t) for t in info.types]
        type_of = info.all_func_type_indices
        starts = module.engine_code.frame_table.native_start_by_wasm_index
        code_base, vmctx = instance.store_code.base, instance.vmctx_address
        records: list[int] = []
        for func_index in range(first, info.num_funcs):
            native_start = starts.get(func_index)
            assert native_start is not None, f"function {func_index} has no frame-table record"
            records += (code_base + native_start, vmctx, type_ids[type_of[func_index]])
        self._records = ffi.new("uint64_t[]", records or [0])
        self._records_address = int(ffi.cast("uintptr_t", self._records))
        self._made: dict[int, Func] = {}

    def __len__(self) -> int:
        return len(self._imported) + self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if index < 0 or index >= len(self):
            raise IndexError(index)
        if index < self._first:
            return self._imported[index]
        func = self._made.get(index)
        if func is None:
            address = self.funcref_address(index)
            pointer = ffi.cast("uint64_t *", address)
            func = self._made[index] = Func._wasm_in(self._instance, index, pointer, address)
        return func

    def funcref_address(self, index: int) -> int:
        """Where function ``index``'s funcref record is, without making its
        Func (IndexError outside the index space)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < self._first:
            return self._imported[index]._funcref_address
        return self._records_address + 24 * (index - self._first)

    def func_at_funcref(self, address: int) -> Func | None:
        """The defined function whose funcref record is at ``address``, if
        it is one of this instance's."""
        offset = address - self._records_address
        if 0 <= offset < 24 * self._count and offset % 24 == 0:
            return self[self._first + offset // 24]
        return None


class _CurrentLimits:
    """An extern's limits for import matching: its *current* size is its minimum
    (wasm spec 4.5.1 "External Typing": memories and tables are typed by their
    current size, so a grown memory satisfies a larger minimum)."""

    def __init__(self, size: int, maximum: int | None):
        self.limits = Limits(size, maximum)
