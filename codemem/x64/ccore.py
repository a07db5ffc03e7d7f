"""The C core of the baseline compiler: compiles whole functions in C (csrc/codemem_compile.c).

``compiler.py`` hands each defined function to :class:`CFunctionCompiler`
first; when the C side does not handle the body (an opcode it does not
implement yet, or anything malformed or invalid: the Python compiler then
reports the error in the spec's order) the function is compiled in Python as
before.  The C side is a byte-for-byte port of ``_compile_function``: it
makes the same code, sequence points, patch sites, trap stubs and mirror
lists.  Most machine-code templates are encoded in C (register moves, loads,
stores, integer and float operations and conversions); for the others C asks
Python the first time it needs a key (and code offset mod 32, for branch
padding) through ``cm_py_template`` and keeps the bytes.  The frame table's
stack-types and mirror pools are kept in C for the whole compile
(:class:`CPools`, the chunk's ``FrameTableBuilder(pools=...)``), so the
records C returns are final.

``$WASM_GDBSTUB_C_COMPILER=0`` turns the C core off (everything compiled in
Python); tests compare the two byte for byte.

What C compiles (``C_OPCODES``): control flow (block, loop, if/else, br,
br_if, br_table, return, unreachable, nop), direct and indirect calls, drop,
select (untyped, and typed with a numeric type), locals, globals, loads and
stores, memory.size, memory.grow, constants and every numeric instruction (the
0xFC saturating truncations included).  Not yet: the other libcalls (bulk
memory, table.grow/fill/copy/init, elem.drop, data.drop), table.get/set/size,
ref.null/is_null/func (and so typed select of a reference type).
"""
from __future__ import annotations

import logging
import os
from array import array
from dataclasses import dataclass
from itertools import accumulate

from .._native import ffi, lib
from ..abi import (FRAME_LIBCALL_AREA, LIBCALL_TRAP_SLOT, MEMDEF_LENGTH, VMCTX_MEMORY_BASE, VMCTX_MEMORY_DEF,
                   TrapCode, VMContextLayout)
from ..frametable import MIRROR_SIZE as _MIRROR_SIZE
from ..wasm.module import ModuleInfo
from ..wasm.opcodes import OP_BY_NAME, OPCODES, Imm
from ..wasm.validator import _SIMPLE
from .numeric import NUMERIC, NUMERIC_ARITY, XMM0_AFTER, XMM_X_INPUT, XMM_Y_INPUT

log = logging.getLogger(__name__)

__all__ = ["C_COMPILER_ENV", "C_OPCODES", "CFunctionCompiler", "CFunction", "c_compiler_enabled"]

#: The environment variable that turns the C core off ("0") or on (anything else; the default).
C_COMPILER_ENV = "WASM_GDBSTUB_C_COMPILER"


def c_compiler_enabled() -> bool:
    """Whether compiles use the C core (``$WASM_GDBSTUB_C_COMPILER`` is not "0")."""
    return os.environ.get(C_COMPILER_ENV, "1").strip() != "0"


def _op_index(op: int) -> int:
    """An opcode's index in the C tables: the byte, or 0x100 + the 0xFC sub-opcode."""
    return op if op < 0x100 else 0x100 + (op & 0xFF)


#: The opcodes the C core compiles (everything else falls back to Python).
C_OPCODES = frozenset(
    {OP_BY_NAME[name] for name in (
        "unreachable", "nop", "block", "loop", "if", "else", "end", "br", "br_if", "br_table", "return", "call",
        "call_indirect", "drop", "local.get", "local.set", "local.tee", "global.get", "global.set",
        "memory.size", "memory.grow", "i32.const", "i64.const", "f32.const", "f64.const")}
    | {0x1B, 0x1C}  # untyped and typed select
    | set(range(0x28, 0x3F))  # loads and stores
    | set(NUMERIC))

# Flag bits: the CM_CC_* of csrc/codemem_compile.c.
_F_SUPPORTED, _F_SIMPLE, _F_NUMERIC, _F_CACHE_AWARE, _F_SCRATCH_ONLY = 1, 2, 4, 8, 16
_F_XMM_RESULT_ONLY, _F_XMM_UNTOUCHED, _F_XMM_X_INPUT, _F_XMM_Y_INPUT, _F_MEMARG = 32, 64, 128, 256, 512
_F_DEFERRING = 1024  # compiler._DEFERRING (csrc CM_CC_DEFERRING)
_AFTER = {"clobber": 0, "result": 1, "x": 2, "keep": 3}

_tables_loaded = False


def _load_opcode_tables() -> None:
    """Give the C side the opcode facts it shares with Python (once per process):
    the validator's fixed signatures, the compiler's register-cache and xmm0
    classes, numeric.py's arities and xmm0 facts.  One source of truth each."""
    global _tables_loaded
    if _tables_loaded:
        return
    from .compiler import _CACHE_AWARE, _DEFERRING, _SCRATCH_ONLY, _XMM_RESULT_ONLY, _XMM_UNTOUCHED

    classes = ((C_OPCODES, _F_SUPPORTED), (_SIMPLE, _F_SIMPLE), (NUMERIC, _F_NUMERIC),
               (_CACHE_AWARE, _F_CACHE_AWARE), (_SCRATCH_ONLY, _F_SCRATCH_ONLY),
               (_XMM_RESULT_ONLY, _F_XMM_RESULT_ONLY), (_XMM_UNTOUCHED, _F_XMM_UNTOUCHED),
               (XMM_X_INPUT, _F_XMM_X_INPUT), (XMM_Y_INPUT, _F_XMM_Y_INPUT), (_DEFERRING, _F_DEFERRING))
    for op, info in OPCODES.items():
        flags = sum(bit for members, bit in classes if op in members)
        if info.imm is Imm.MEMARG:
            flags |= _F_MEMARG
        params = bytes(info.params or ())
        results = bytes(info.results or ())
        if len(params) > 3 or len(results) > 1:
            if op in C_OPCODES and op in _SIMPLE:
                raise AssertionError(f"opcode {op:#x}'s signature does not fit the C tables")
            params = results = b""
        lib.cm_cc_set_opcode(_op_index(op), flags, params, len(params), results, len(results),
                             getattr(info, "natural_align", 0) or 0, NUMERIC_ARITY.get(op, 0),
                             _AFTER[XMM0_AFTER.get(op, "clobber")])
    lib.cm_cc_set_abi(VMCTX_MEMORY_BASE, VMCTX_MEMORY_DEF, MEMDEF_LENGTH, int(TrapCode.OUT_OF_BOUNDS_MEMORY),
                      int(TrapCode.INTEGER_DIVIDE_BY_ZERO), int(TrapCode.INTEGER_OVERFLOW),
                      FRAME_LIBCALL_AREA + 8 * LIBCALL_TRAP_SLOT)
    _tables_loaded = True



@dataclass
class CFunction:
    """One function compiled by the C core (offsets relative to its start,
    except in ``seqpoints``, ``sites`` and ``trap_calls``: image offsets).

    ``seqpoints``: its SequencePoint records, final: native offsets in the
    image code (from the ``code_base`` given to compile), stack types and
    mirror lists interned into the module-wide pools (:class:`CPools`);
    ``calls``: ``(rel32 field, callee defined index)``."""

    code: bytes
    native_size: int
    frame_size: int
    seqpoints: bytes
    locals: bytes  # LocalSlot records
    sites: array  # image offsets, like trap_calls
    trap_calls: array
    calls: list[tuple[int, int]]


class CPools:
    """The frame table's stack-types and mirror pools of one compile, kept by
    the C core (``FrameTableBuilder(pools=...)``): the functions C compiles
    intern into them in C, the ones Python compiles through these methods,
    so the pools are in order of first occurrence over the functions in
    order, as a builder alone makes them.  :meth:`freeze` (at the C core's
    close) keeps their final contents in Python."""

    def __init__(self, module) -> None:
        self._module = module
        self._start = ffi.new("uint32_t *")
        self._frozen: tuple[list, list] | None = None

    def intern_types(self, types: tuple[int, ...]) -> int:
        """The types pool offset of the stack ``types`` (added if new; once
        frozen, only found: FrameTableBuilder interned every function's as it
        was added and looks them up again when it packs)."""
        if self._frozen is not None:
            return self._frozen_types_at[types]
        packed = bytes(types)
        if not lib.cm_cc_intern(self._module, 0, packed, len(packed), self._start):
            raise MemoryError("the C compiler's types pool")
        return self._start[0]

    def intern_mirrors(self, packed: bytes) -> tuple[int, int]:
        """``(records, first record)`` of the packed mirror list (added if new)."""
        if not lib.cm_cc_intern(self._module, 1, packed, len(packed), self._start):
            raise MemoryError("the C compiler's mirror pool")
        return len(packed) // _MIRROR_SIZE, self._start[0] // _MIRROR_SIZE

    def _entries(self, which: int) -> tuple[bytes, list[int]]:
        pool, size, ends, count = (ffi.new("const uint8_t **"), ffi.new("uint32_t *"),
                                   ffi.new("const uint32_t **"), ffi.new("uint32_t *"))
        lib.cm_cc_pools(self._module, which, pool, size, ends, count)
        data = ffi.buffer(pool[0], size[0])[:] if size[0] else b""
        stops = _u32s(ends[0], count[0])
        return data, list(map(data.__getitem__, map(slice, [0, *stops[:-1]], stops)))

    def freeze(self) -> None:
        """Copy the pools into Python (the C side is freed next)."""
        if self._frozen is None:
            types = list(map(tuple, self._entries(0)[1]))
            self._frozen = (types, self._entries(1)[1])
            self._frozen_types_at = dict(zip(types, accumulate(map(len, types), initial=0)))  # entry -> offset
            self._module = None

    def types_entries(self) -> list[tuple[int, ...]]:
        """The types pool's entries, in pool order."""
        self.freeze()
        return self._frozen[0]

    def mirror_lists(self) -> list[bytes]:
        """The mirror pool's lists (packed records), in pool order."""
        self.freeze()
        return self._frozen[1]


def _u32s(pointer, count: int) -> array:
    """``count`` uint32 from C memory, copied into an array."""
    out = array("I")
    if count:
        out.frombytes(ffi.buffer(pointer, 4 * count))
    return out


class CFunctionCompiler:
    """The C core for one module and mode; ``templates`` is the Python
    compiler (its ``_template_for_c`` builds what C asks for).  Not
    thread-safe; one per compile (or compile process).  :meth:`close` when
    done: it frees the C side and drops the references between this object,
    its cffi handle and the compiler (a cycle only the garbage collector
    would free otherwise, and compiles run with it paused)."""

    def __init__(self, info: ModuleInfo, debug: bool, templates) -> None:
        _load_opcode_tables()
        self._templates = templates
        self._handle = ffi.new_handle(self)
        module = lib.cm_cc_module_new(1 if debug else 0, self._handle)
        if module == ffi.NULL:
            raise MemoryError("cm_cc_module_new")
        self._module = ffi.gc(module, lib.cm_cc_module_free)
        self._result = ffi.new("cm_cc_result *")
        self._data = info.data
        self._info = info
        self.functions = 0  # compiled here
        self.fallbacks: dict[int, int] = {}  # opcode (or 0xFFFF: malformed/invalid) -> functions
        layout = VMContextLayout.for_module(info)
        ok = True
        for ft in info.types:
            ok &= bool(lib.cm_cc_add_type(module, bytes(ft.params), len(ft.params), bytes(ft.results),
                                          len(ft.results)))
        type_indices = array("I", info.all_func_type_indices)
        imports = array("i", (layout.imported_func(i) for i in range(info.num_imported_funcs)))
        ok &= bool(lib.cm_cc_set_funcs(module, ffi.from_buffer("uint32_t[]", type_indices), len(type_indices),
                                       info.num_imported_funcs, ffi.from_buffer("int32_t[]", imports)))
        globals_ = info.all_globals
        cells = array("i", (layout.global_cell(i) for i in range(len(globals_))))
        ok &= bool(lib.cm_cc_set_globals(module, bytes(g.valtype for g in globals_),
                                         bytes(1 if g.mutable else 0 for g in globals_),
                                         ffi.from_buffer("int32_t[]", cells), len(globals_)))
        tables = info.all_tables
        ok &= bool(lib.cm_cc_set_tables(module, bytes(t.elem for t in tables), len(tables),
                                        len(info.all_memories)))
        if not ok:
            raise MemoryError("the C compiler's module tables")
        #: The module-wide frame-table pools (FrameTableBuilder's ``pools``).
        self.pools = CPools(module)

    def close(self) -> None:
        """Free the C side (the pools are kept); compile() may not be called afterwards."""
        module, self._module = self._module, None
        if module is not None:
            self.pools.freeze()
            ffi.release(module)  # runs the ffi.gc destructor, cm_cc_module_free, now
        self._handle = self._templates = None

    def compile(self, index: int, local_types: tuple, code_base: int) -> CFunction | None:
        """Defined function ``index`` compiled in C to go at image offset
        ``code_base``, or None (compile it in Python)."""
        body = self._info.codes[index]
        types = bytes(local_types)
        r = self._result
        if not lib.cm_cc_compile(self._module, self._data, body.body_offset, body.end_offset, index, types,
                                 len(types), code_base, r):
            reason = r.reason_op
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
            return None
        self.functions += 1
        calls = _u32s(r.calls, 2 * r.num_calls)
        return CFunction(
            code=ffi.buffer(r.code, r.code_size)[:],
            native_size=r.native_size,
            frame_size=r.frame_size,
            seqpoints=ffi.buffer(r.seqpoints, 20 * r.num_seqpoints)[:],
            locals=ffi.buffer(r.locals, 8 * r.num_locals)[:],
            sites=_u32s(r.sites, r.num_sites),
            trap_calls=_u32s(r.trap_calls, r.num_trap_calls),
            calls=list(zip(calls[0::2], calls[1::2])),
        )

    def _store(self, key, nkey: int, at: int) -> bool:
        """Build the template C asked for (key: a K_* kind and its fields) and store it in C."""
        fields = [key[k] for k in range(nkey)]
        code, traps, hazards, carrier = self._templates._template_for_c(fields, at)
        trap_pos = array("I", (pos for pos, _ in traps))
        trap_codes = array("i", (-1 if c is None else int(c) for _, c in traps))
        return bool(lib.cm_cc_store_template(
            self._module, key, nkey, at, code, len(code),
            ffi.from_buffer("uint32_t[]", trap_pos) if traps else ffi.NULL,
            ffi.from_buffer("int32_t[]", trap_codes) if traps else ffi.NULL, len(traps), hazards, int(carrier)))


@ffi.def_extern()
def cm_py_template(userdata, key, nkey, at):
    """C asks for a template (csrc/codemem_compile.c get_template); 1 when
    stored.  The outermost guard between C and Python for the compiler: an
    exception is logged and the function compiled in Python instead."""
    try:
        return 1 if ffi.from_handle(userdata)._store(key, nkey, at) else 0
    except Exception:  # noqa: BLE001 - outermost guard: cffi would print and return 0
        log.exception("building a template for the C compiler")
        return 0

