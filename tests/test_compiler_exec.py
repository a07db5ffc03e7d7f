"""Execute compiled code and compare with wasmtime.

Until the runtime (Engine/Store/Instance) lands, :class:`MiniInstance` below is a
small stand-in built on the foundation only: EngineCode + ModuleRegistry +
ExecutionContext, a VMContext filled per ``codemem/abi.py`` (memory definition,
globals cells, tables of FuncRefs, type ids, imported host functions and the
libcalls answered in Python).

Exported functions under test take and return integers only (floats cross as
their bits via reinterpret), so both engines see exact bit patterns.  Every case
runs with debug on and off.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import wasmtime

from codemem.abi import (
    FUNCREF_SIZE,
    IMPORTED_FUNC_CODE,
    IMPORTED_FUNC_CTX,
    LIBCALL_TRAP_SLOT,
    VMCTX_HOST_TRAMPOLINE,
    VMCTX_LIBCALL_CTX,
    VMCTX_MEMORY_BASE,
    VMCTX_MEMORY_DEF,
    VMCTX_STACK_CTX,
    Libcall,
    TrapCode,
)
from codemem.code import EngineCode
from codemem.execution import ExecutionContext
from codemem.frametable import FrameTable, SequencePointKind
from codemem.native import (
    PROT_READ,
    PROT_WRITE,
    check,
    ffi,
    lib,
    register_breakpoint_prelude,
    register_event_handler,
    register_host_call_handler,
    unregister_breakpoint_prelude,
    unregister_event_handler,
    unregister_host_call_handler,
)
from codemem.registry import ModuleRegistry
from codemem.wasm.decoder import decode_module
from codemem.wasm.module import SegmentMode
from codemem.wasm.types import ExternKind, ValType
from codemem.x64.compiler import compile_module

PAGE = 65536
MODES = pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])

# wasmtime's trap codes -> the codes our engine may report for the same trap.
WASMTIME_TRAPS = {
    "UNREACHABLE": {TrapCode.UNREACHABLE},
    "INTEGER_DIVISION_BY_ZERO": {TrapCode.INTEGER_DIVIDE_BY_ZERO},
    "INTEGER_OVERFLOW": {TrapCode.INTEGER_OVERFLOW},
    "BAD_CONVERSION_TO_INTEGER": {TrapCode.INVALID_CONVERSION},
    "MEMORY_OUT_OF_BOUNDS": {TrapCode.OUT_OF_BOUNDS_MEMORY},
    "TABLE_OUT_OF_BOUNDS": {TrapCode.UNDEFINED_ELEMENT, TrapCode.OUT_OF_BOUNDS_TABLE},
    "INDIRECT_CALL_TO_NULL": {TrapCode.UNINITIALIZED_ELEMENT},
    "BAD_SIGNATURE": {TrapCode.INDIRECT_CALL_TYPE_MISMATCH},
    "STACK_OVERFLOW": {TrapCode.STACK_EXHAUSTED},
    "NULL_REFERENCE": {TrapCode.NULL_REFERENCE},
}


def _addr(cdata) -> int:
    return int(ffi.cast("uintptr_t", cdata))


class GuestTrap(Exception):
    def __init__(self, code: int, site_offset: int | None):
        super().__init__(f"trap {code}")
        self.code = code
        self.site_offset = site_offset  # image offset the trap's rsi named


class FuncObj:
    """A callable function: code address + context, and the FuncRef tables hold."""

    def __init__(self, code: int, ctx: int, ft, type_id: int):
        self.code, self.ctx, self.ft, self.type_id = code, ctx, ft, type_id
        self.ref = ffi.new("uint64_t[3]", [code, ctx, type_id])
        assert ffi.sizeof(self.ref) == FUNCREF_SIZE
        self.ref_address = _addr(self.ref)


class MemoryObj:
    """A MemoryDefinition whose whole capacity is reserved (the base never moves)."""

    def __init__(self, limits, cap_pages: int):
        self.max_pages = max(limits.min, min(limits.max if limits.max is not None else cap_pages, cap_pages))
        # Anonymous mapping: pages cost nothing until touched.
        self.reserved = max(PAGE, self.max_pages * PAGE)
        self.base = check(lib.cm_map(-1, self.reserved, PROT_READ | PROT_WRITE, 0), "reserve linear memory")
        self.buf = ffi.cast("uint8_t *", self.base)
        self.memdef = ffi.new("uint64_t[3]", [self.base, limits.min * PAGE, self.max_pages])

    def close(self) -> None:
        if self.base:
            check(lib.cm_unmap(self.base, self.reserved), "release linear memory")
            self.base = 0

    @property
    def size(self) -> int:
        return self.memdef[1]


class GlobalObj:
    def __init__(self, valtype, mutable: bool, value: int = 0):
        self.valtype, self.mutable = valtype, mutable
        self.cell = ffi.new("uint64_t[1]", [value])


class TableObj:
    """A TableDefinition with its capacity reserved (elements never move here)."""

    def __init__(self, elem, limits, cap: int = 10_000):
        self.elem = elem
        self.cap = max(limits.min, min(limits.max if limits.max is not None else cap, cap))
        self.elems = ffi.new("uint64_t[]", max(1, self.cap))
        self.tdef = ffi.new("uint64_t[3]", [_addr(self.elems), limits.min, self.cap])

    @property
    def size(self) -> int:
        return self.tdef[1]


class MiniStore:
    """One ExecutionContext + ModuleRegistry shared by instances (cross-instance
    calls need one guest stack), canonical type ids, and the host-call dispatch:
    every HostContext is ``[sc, id]`` and ``id`` selects a Python handler."""

    def __init__(self, *, debug: bool):
        self.debug = debug
        self.ctx = ExecutionContext()
        self.registry = ModuleRegistry(debug=debug, store_name=f"t{self.ctx.store_id}")
        self.type_ids: dict = {}
        self.hosts: dict = {}
        self._keep: list = []
        self.last_trap_rsi = None
        self.engine_codes = []
        self.memories: list[MemoryObj] = []
        register_host_call_handler(self.ctx.store_id, self._host_call)
        register_event_handler(self.ctx.store_id, self._event)
        # As codemem.Store does: a carrier-store site's store before any event handler.
        register_breakpoint_prelude(self.ctx.store_id, self.registry.perform_carrier_store)

    def type_id(self, ft) -> int:
        return self.type_ids.setdefault(ft, len(self.type_ids) + 1)

    def host_context(self, handler) -> int:
        """A HostContext whose calls run ``handler(args) -> trap code``."""
        host_id = len(self.hosts) + 1
        hctx = ffi.new("uint64_t[2]", [self.ctx.address, host_id])
        self._keep.append(hctx)
        self.hosts[host_id] = handler
        return _addr(hctx)

    def host_func(self, ft, fn) -> FuncObj:
        """``fn(list of raw params) -> list of raw results`` as an importable function."""

        def handler(args):
            results = fn([args[k] for k in range(len(ft.params))])
            for k, r in enumerate(results or []):
                args[k] = r & 0xFFFF_FFFF_FFFF_FFFF
            return 0

        return FuncObj(lib.cm_host_call_trampoline_address(), self.host_context(handler), ft, self.type_id(ft))

    def _host_call(self, hostctx, args) -> int:
        return self.hosts[ffi.cast("uint64_t *", hostctx)[1]](args)

    def _event(self, kind, code, regfile, vmctx):
        self.last_trap_rsi = regfile.gpr[4]

    def call(self, func: FuncObj, args: list[int]) -> list[int]:
        ft = func.ft
        buf = ffi.new("uint64_t[]", max(1, len(ft.params), len(ft.results)))
        for k, value in enumerate(args):
            buf[k] = value & 0xFFFF_FFFF_FFFF_FFFF
        self.last_trap_rsi = None
        code = self.ctx.enter(func.code, func.ctx, _addr(buf))
        if code:
            site = None
            if self.last_trap_rsi is not None:
                entry = self.registry.lookup(self.last_trap_rsi)
                site = entry.store_code.offset_of(self.last_trap_rsi) if entry else None
            raise GuestTrap(code, site)
        return [buf[k] & 0xFFFF_FFFF if t in (ValType.I32, ValType.F32) else buf[k] for k, t in enumerate(ft.results)]

    def close(self):
        unregister_host_call_handler(self.ctx.store_id)
        unregister_event_handler(self.ctx.store_id)
        unregister_breakpoint_prelude(self.ctx.store_id)
        for engine_code in self.engine_codes:
            self.registry.unregister(engine_code)
        for memory in self.memories:
            memory.close()
        self.ctx.close()


class MiniInstance:
    """One instance of a compiled module: a VMContext filled per abi.py.

    ``imports``: one object per import, in order (FuncObj, MemoryObj, GlobalObj,
    TableObj).  Instantiation follows spec 4.5.4 closely enough for the tests:
    active segments bounds-checked (trap), start function run."""

    def __init__(self, store: MiniStore, wasm: bytes, imports=(), *, max_pages_cap: int = 1024):
        self.store = store
        self.info = info = decode_module(wasm)
        self.compiled = compile_module(info, debug=store.debug)
        self.layout = layout = self.compiled.layout
        self.engine_code = EngineCode(self.compiled.code, self.compiled.frame_table, name="test")
        self.table = FrameTable(self.compiled.frame_table)
        self.store_code = store.registry.register(None, self.engine_code).store_code
        store.engine_codes.append(self.engine_code)
        vm = self.vmctx = ffi.new("uint64_t[]", max(1, layout.size // 8))
        self.vmctx_address = _addr(vm)
        vm[VMCTX_STACK_CTX // 8] = store.ctx.address
        for i, ft in enumerate(info.types):
            vm[layout.type_id(i) // 8] = store.type_id(ft)
        imports = list(imports)
        assert len(imports) == len(info.imports)
        funcs, memories, globals_, tables = [], [], [], []
        for imp, obj in zip(info.imports, imports):
            {ExternKind.FUNC: funcs, ExternKind.MEMORY: memories, ExternKind.GLOBAL: globals_,
             ExternKind.TABLE: tables}[imp.kind].append(obj)
        for i, fobj in enumerate(funcs):
            vm[(layout.imported_func(i) + IMPORTED_FUNC_CODE) // 8] = fobj.code
            vm[(layout.imported_func(i) + IMPORTED_FUNC_CTX) // 8] = fobj.ctx
        for k in range(len(info.codes)):
            f = info.num_imported_funcs + k
            record = self.table.function_by_wasm_index(f)
            funcs.append(FuncObj(self.store_code.pc_of(record.native_start), self.vmctx_address, info.func_type(f),
                                 store.type_id(info.func_type(f))))
        self.funcs = funcs
        for f, fobj in enumerate(funcs):
            vm[layout.funcref(f) // 8] = fobj.ref_address
        for mt in info.memories:
            memories.append(MemoryObj(mt.limits, max_pages_cap))
            store.memories.append(memories[-1])
        self.memory_obj = memories[0] if memories else None
        if self.memory_obj:
            vm[VMCTX_MEMORY_BASE // 8] = self.memory_obj.base
            vm[VMCTX_MEMORY_DEF // 8] = _addr(self.memory_obj.memdef)
        for g in info.globals:
            globals_.append(GlobalObj(g.type.valtype, g.type.mutable))
        self.globals = globals_
        for g, gdef in enumerate(info.globals, start=info.num_imported_globals):
            globals_[g].cell[0] = self._const(gdef.init)
        for g, gobj in enumerate(globals_):
            vm[layout.global_cell(g) // 8] = _addr(gobj.cell)
        for tt in info.tables:
            tables.append(TableObj(tt.elem, tt.limits))
        self.tables = tables
        for t, tobj in enumerate(tables):
            vm[layout.table(t) // 8] = _addr(tobj.tdef)
        vm[VMCTX_LIBCALL_CTX // 8] = store.host_context(self._libcall)
        vm[VMCTX_HOST_TRAMPOLINE // 8] = lib.cm_host_call_trampoline_address()
        self.exports = {}
        spaces = {ExternKind.FUNC: funcs, ExternKind.MEMORY: memories, ExternKind.GLOBAL: globals_,
                  ExternKind.TABLE: tables}
        for e in info.exports:
            self.exports[e.name] = spaces[e.kind][e.index]
        # Segments (spec 4.5.4: elems, then datas, each bounds-checked in order).
        self.dropped_datas, self.dropped_elems = set(), set()
        for i, seg in enumerate(info.elems):
            if seg.mode is SegmentMode.ACTIVE:
                base = self._const(seg.offset) & 0xFFFF_FFFF
                items = self._elem_items(seg)
                tobj = tables[seg.table_index]
                if base + len(items) > tobj.size:
                    raise GuestTrap(TrapCode.OUT_OF_BOUNDS_TABLE, None)
                for k, item in enumerate(items):
                    tobj.elems[base + k] = item
            if seg.mode is not SegmentMode.PASSIVE:
                self.dropped_elems.add(i)
        for i, seg in enumerate(info.datas):
            if seg.mode is SegmentMode.ACTIVE:
                base = self._const(seg.offset) & 0xFFFF_FFFF
                if base + len(seg.data) > self.memory_obj.size:
                    raise GuestTrap(TrapCode.OUT_OF_BOUNDS_MEMORY, None)
                ffi.memmove(self.memory_obj.buf + base, seg.data, len(seg.data))
                self.dropped_datas.add(i)
        if info.start is not None:
            store.call(funcs[info.start], [])

    # Compatibility with the single-instance tests.
    @property
    def ctx(self):
        return self.store.ctx

    @property
    def cells(self):
        return [g.cell for g in self.globals]

    def _const(self, expr) -> int:
        ins = expr.single
        if ins.name == "i32.const":
            return ins.imm & 0xFFFF_FFFF
        if ins.name == "i64.const":
            return ins.imm & 0xFFFF_FFFF_FFFF_FFFF
        if ins.name in ("f32.const", "f64.const"):
            return ins.imm
        if ins.name == "ref.null":
            return 0
        if ins.name == "ref.func":
            return self.funcs[ins.imm].ref_address
        if ins.name == "global.get":
            return self.globals[ins.imm].cell[0]
        raise NotImplementedError(ins.name)

    def _elem_items(self, seg):
        if seg.uses_exprs:
            return [self._const(item) for item in seg.items]
        return [self.funcs[f].ref_address for f in seg.items]

    def _libcall(self, a) -> int:
        """The libcalls of abi.py, answered in Python (result in slot 0, trap code
        in LIBCALL_TRAP_SLOT)."""
        number = a[0]
        a[LIBCALL_TRAP_SLOT] = 0
        mem = self.memory_obj

        def u32(k):
            return a[k] & 0xFFFF_FFFF

        def trap(code):
            a[LIBCALL_TRAP_SLOT] = code

        if number == Libcall.MEMORY_GROW:
            old = mem.size // PAGE
            delta = u32(1)
            if old + delta > mem.max_pages:
                a[0] = 0xFFFF_FFFF
            else:
                mem.memdef[1] = (old + delta) * PAGE
                a[0] = old
        elif number == Libcall.MEMORY_FILL:
            dst, value, n = u32(1), u32(2) & 0xFF, u32(3)
            if dst + n > mem.size:
                trap(TrapCode.OUT_OF_BOUNDS_MEMORY)
            else:
                ffi.memmove(mem.buf + dst, bytes([value]) * n, n)
        elif number == Libcall.MEMORY_COPY:
            dst, src, n = u32(1), u32(2), u32(3)
            if dst + n > mem.size or src + n > mem.size:
                trap(TrapCode.OUT_OF_BOUNDS_MEMORY)
            else:
                ffi.memmove(mem.buf + dst, mem.buf + src, n)
        elif number == Libcall.MEMORY_INIT:
            seg, dst, src, n = a[1], u32(2), u32(3), u32(4)
            data = b"" if seg in self.dropped_datas else self.info.datas[seg].data
            if dst + n > mem.size or src + n > len(data):
                trap(TrapCode.OUT_OF_BOUNDS_MEMORY)
            else:
                ffi.memmove(mem.buf + dst, data[src:src + n], n)
        elif number == Libcall.DATA_DROP:
            self.dropped_datas.add(a[1])
        elif number == Libcall.ELEM_DROP:
            self.dropped_elems.add(a[1])
        elif number == Libcall.TABLE_GROW:
            tobj = self.tables[a[1]]
            old, delta = tobj.size, u32(3)
            if old + delta > tobj.cap:
                a[0] = 0xFFFF_FFFF
            else:
                for k in range(old, old + delta):
                    tobj.elems[k] = a[2]
                tobj.tdef[1] = old + delta
                a[0] = old
        elif number == Libcall.TABLE_FILL:
            tobj = self.tables[a[1]]
            i, ref, n = u32(2), a[3], u32(4)
            if i + n > tobj.size:
                trap(TrapCode.OUT_OF_BOUNDS_TABLE)
            else:
                for k in range(i, i + n):
                    tobj.elems[k] = ref
        elif number == Libcall.TABLE_COPY:
            dst, src = self.tables[a[1]], self.tables[a[2]]
            d, s, n = u32(3), u32(4), u32(5)
            if d + n > dst.size or s + n > src.size:
                trap(TrapCode.OUT_OF_BOUNDS_TABLE)
            else:
                values = [src.elems[s + k] for k in range(n)]
                for k, value in enumerate(values):
                    dst.elems[d + k] = value
        elif number == Libcall.TABLE_INIT:
            tobj = self.tables[a[1]]
            seg = a[2]
            items = [] if seg in self.dropped_elems else self._elem_items(self.info.elems[seg])
            d, s, n = u32(3), u32(4), u32(5)
            if d + n > tobj.size or s + n > len(items):
                trap(TrapCode.OUT_OF_BOUNDS_TABLE)
            else:
                for k in range(n):
                    tobj.elems[d + k] = items[s + k]
        else:
            raise AssertionError(f"unexpected libcall {number}")
        return 0

    def call(self, name: str, *args: int) -> list[int]:
        return self.store.call(self.exports[name], list(args))


class SoloInstance(MiniInstance):
    """A MiniInstance in its own MiniStore; ``host_funcs`` maps (module, name) to
    ``callable(list[int]) -> list[int]`` for imported functions."""

    def __init__(self, wasm: bytes, *, debug: bool, host_funcs=None, max_pages_cap: int = 64):
        store = MiniStore(debug=debug)
        info = decode_module(wasm)
        imports = [store.host_func(info.types[imp.desc], host_funcs[(imp.module, imp.name)]) for imp in info.imports]
        super().__init__(store, wasm, imports, max_pages_cap=max_pages_cap)

    def close(self):
        self.store.close()


# ---------------------------------------------------------------------------
# Reference side
# ---------------------------------------------------------------------------


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Reference:
    """The same module under wasmtime, with the same host functions."""

    def __init__(self, wasm: bytes, host_funcs=None):
        self.store = wasmtime.Store()
        module = wasmtime.Module(self.store.engine, wasm)
        info = decode_module(wasm)
        externs = []
        for imp in info.imports:
            assert imp.kind == ExternKind.FUNC
            ft = info.types[imp.desc]
            fn = host_funcs[(imp.module, imp.name)]
            externs.append(wasmtime.Func(self.store, _wt_functype(ft), _wt_host(fn, ft)))
        self.instance = wasmtime.Instance(self.store, module, externs)
        self.info = info

    def call(self, name: str, *args: int):
        index = next(e.index for e in self.info.exports if e.name == name)
        ft = self.info.func_type(index)
        fn = self.instance.exports(self.store)[name]
        wargs = [_signed(a, 32 if t == ValType.I32 else 64) for a, t in zip(args, ft.params)]
        result = fn(self.store, *wargs)
        if result is None:
            result = []
        elif not isinstance(result, list):
            result = [result]
        return [r & (0xFFFF_FFFF if t == ValType.I32 else 0xFFFF_FFFF_FFFF_FFFF) for r, t in zip(result, ft.results)]


def _wt_valtype(t: ValType):
    return {ValType.I32: wasmtime.ValType.i32(), ValType.I64: wasmtime.ValType.i64()}[t]


def _wt_functype(ft):
    return wasmtime.FuncType([_wt_valtype(t) for t in ft.params], [_wt_valtype(t) for t in ft.results])


def _wt_host(fn, ft):
    def call(*args):
        raw = [a & ((1 << (32 if t == ValType.I32 else 64)) - 1) for a, t in zip(args, ft.params)]
        results = fn(raw)
        results = [_signed(r, 32 if t == ValType.I32 else 64) for r, t in zip(results, ft.results)]
        if not results:
            return None
        return results[0] if len(results) == 1 else results

    return call


def outcome(runner, name, args):
    """("ok", results) or ("trap", set of acceptable codes / our code)."""
    try:
        return ("ok", runner.call(name, *args))
    except GuestTrap as trap:
        return ("trap", trap.code)
    except wasmtime.Trap as trap:
        return ("trap", WASMTIME_TRAPS[trap.trap_code.name])


def is_nan(bits: int, size: int) -> bool:
    if size == 32:
        return (bits & 0x7F80_0000) == 0x7F80_0000 and bits & 0x007F_FFFF
    return (bits & 0x7FF0_0000_0000_0000) == 0x7FF0_0000_0000_0000 and bits & 0x000F_FFFF_FFFF_FFFF


def is_arithmetic_nan(bits: int, size: int) -> bool:
    """A NaN with the quiet bit set (spec 4.3.3: what arithmetic may return)."""
    quiet = 1 << 22 if size == 32 else 1 << 51
    return bool(is_nan(bits, size)) and bool(bits & quiet)


def compare(wasm: bytes, calls, *, debug: bool, host_funcs=None, nan_results: dict | None = None):
    """Runs every (export, args) in both engines; returns the list of mismatches.

    ``nan_results``: {export: float size} for exports whose NaN results may differ
    in sign/payload between engines (arithmetic NaN rules): a NaN there only
    needs to be an arithmetic NaN on our side."""
    ours = SoloInstance(wasm, debug=debug, host_funcs=host_funcs)
    ref = Reference(wasm, host_funcs)
    bad = []
    try:
        for name, args in calls:
            got = outcome(ours, name, args)
            want = outcome(ref, name, args)
            if got == want:
                continue
            if got[0] == want[0] == "trap" and got[1] in want[1]:
                continue
            size = (nan_results or {}).get(name)
            if size and got[0] == want[0] == "ok" and len(got[1]) == 1:
                g, w = got[1][0], want[1][0]
                if is_nan(w, size) and is_arithmetic_nan(g, size):
                    continue
            bad.append((name, [hex(a) for a in args], got, want))
    finally:
        ours.close()
    return bad


def wat(text: str) -> bytes:
    return wasmtime.wat2wasm(text)


# ---------------------------------------------------------------------------
# Integer arithmetic
# ---------------------------------------------------------------------------

I32_VALUES = [0, 1, 2, 3, 7, 31, 32, 33, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF, 0xFFFF_FFFE,
              0xFFFF_FFF9, 0x1234_5678, 0xEDCB_A988, 0x0000_FFFF, 0x00FF_0000, 0x80, 0x8000]
I64_VALUES = [0, 1, 2, 7, 63, 64, 65, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF,
              0xFFFF_FFFF_FFFF_FFF9, 0x1234_5678_9ABC_DEF0, 0xFFFF_FFFF, 0x1_0000_0000, 0x8000_0000,
              0xFFFF_FFFF_8000_0000, 0x80, 0x8000]

INT_BINOPS = "add sub mul div_s div_u rem_s rem_u and or xor shl shr_s shr_u rotl rotr " \
             "eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u".split()
INT_UNOPS = "clz ctz popcnt eqz extend8_s extend16_s".split()


def int_module(t: str) -> bytes:
    funcs = []
    for op in INT_BINOPS:
        result = "i32" if op in "eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u".split() else t
        funcs.append(f'(func (export "{op}") (param {t} {t}) (result {result}) '
                     f'({t}.{op} (local.get 0) (local.get 1)))')
    for op in INT_UNOPS:
        result = "i32" if op == "eqz" else t
        funcs.append(f'(func (export "{op}") (param {t}) (result {result}) ({t}.{op} (local.get 0)))')
    if t == "i64":
        funcs.append('(func (export "extend32_s") (param i64) (result i64) (i64.extend32_s (local.get 0)))')
        funcs.append('(func (export "wrap") (param i64) (result i32) (i32.wrap_i64 (local.get 0)))')
        funcs.append('(func (export "extend_i32_s") (param i32) (result i64) (i64.extend_i32_s (local.get 0)))')
        funcs.append('(func (export "extend_i32_u") (param i32) (result i64) (i64.extend_i32_u (local.get 0)))')
    return wat("(module " + "\n".join(funcs) + ")")


@MODES
@pytest.mark.parametrize("t", ["i32", "i64"])
def test_integer_ops_match_wasmtime(t, debug):
    values = I32_VALUES if t == "i32" else I64_VALUES
    calls = [(op, [a, b]) for op in INT_BINOPS for a in values for b in values]
    calls += [(op, [a]) for op in INT_UNOPS for a in values]
    if t == "i64":
        calls += [(op, [a]) for op in ("extend32_s", "wrap") for a in values]
        calls += [(op, [a]) for op in ("extend_i32_s", "extend_i32_u") for a in I32_VALUES]
    assert compare(int_module(t), calls, debug=debug) == []


# ---------------------------------------------------------------------------
# Float arithmetic (bits in, bits out)
# ---------------------------------------------------------------------------


def f32(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


F32_VALUES = [f32(x) for x in (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.5, 0.49999997, 1e10, -1e10,
                               2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0, 4294967040.0,
                               4294967296.0, 9.223371e18, 9.223372e18, 1.8446743e19, -0.99999994, 3.4028235e38,
                               float("inf"), float("-inf"))]
F32_VALUES += [0x0000_0001, 0x8000_0001, 0x007F_FFFF, 0x7FC0_0000, 0xFFC0_0000, 0x7FA0_0000, 0x7F80_0001,
               0xFFA0_1234, 0x7FC0_1234]
F64_VALUES = [f64(x) for x in (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994, 1e10, -1e300,
                               2147483647.0, 2147483647.9, 2147483648.0, -2147483648.0, -2147483648.9,
                               -2147483649.0, 4294967295.0, 4294967296.0, -0.9999999999999999,
                               9.223372036854775e18, 9.223372036854776e18, 1.8446744073709550e19,
                               1.8446744073709552e19, -9.223372036854776e18, -9.223372036854778e18,
                               1.7976931348623157e308, float("inf"), float("-inf"))]
F64_VALUES += [0x1, 0x8000_0000_0000_0001, 0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF4_0000_0000_0000,
               0x7FF0_0000_0000_0001, 0xFFF8_0000_1234_5678]

FLOAT_BINOPS = "add sub mul div min max copysign".split()
FLOAT_CMPS = "eq ne lt gt le ge".split()
FLOAT_UNOPS = "abs neg ceil floor trunc nearest sqrt".split()
ARITHMETIC = {"add", "sub", "mul", "div", "min", "max", "ceil", "floor", "trunc", "nearest", "sqrt"}


def float_module(t: str) -> bytes:
    i = "i32" if t == "f32" else "i64"
    fin = lambda n: f"({t}.reinterpret_{i} (local.get {n}))"  # noqa: E731
    funcs = []
    for op in FLOAT_BINOPS:
        funcs.append(f'(func (export "{op}") (param {i} {i}) (result {i}) '
                     f'({i}.reinterpret_{t} ({t}.{op} {fin(0)} {fin(1)})))')
    for op in FLOAT_CMPS:
        funcs.append(f'(func (export "{op}") (param {i} {i}) (result i32) ({t}.{op} {fin(0)} {fin(1)}))')
    for op in FLOAT_UNOPS:
        funcs.append(f'(func (export "{op}") (param {i}) (result {i}) ({i}.reinterpret_{t} ({t}.{op} {fin(0)})))')
    return wat("(module " + "\n".join(funcs) + ")")


@MODES
@pytest.mark.parametrize("t", ["f32", "f64"])
def test_float_ops_match_wasmtime(t, debug):
    values = F32_VALUES if t == "f32" else F64_VALUES
    size = 32 if t == "f32" else 64
    calls = [(op, [a, b]) for op in FLOAT_BINOPS + FLOAT_CMPS for a in values for b in values]
    calls += [(op, [a]) for op in FLOAT_UNOPS for a in values]
    nan_results = {op: size for op in ARITHMETIC}
    assert compare(float_module(t), calls, debug=debug, nan_results=nan_results) == []


def conversion_module() -> bytes:
    funcs = []
    for it in ("i32", "i64"):
        for ft in ("f32", "f64"):
            fi = "i32" if ft == "f32" else "i64"
            for s in ("s", "u"):
                for kind in ("trunc", "trunc_sat"):
                    name = f"{it}.{kind}_{ft}_{s}"
                    funcs.append(f'(func (export "{name}") (param {fi}) (result {it}) '
                                 f'({name} ({ft}.reinterpret_{fi} (local.get 0))))')
                name = f"{ft}.convert_{it}_{s}"
                funcs.append(f'(func (export "{name}") (param {it}) (result {fi}) '
                             f'({fi}.reinterpret_{ft} ({name} (local.get 0))))')
    funcs.append('(func (export "demote") (param i64) (result i32) '
                 '(i32.reinterpret_f32 (f32.demote_f64 (f64.reinterpret_i64 (local.get 0)))))')
    funcs.append('(func (export "promote") (param i32) (result i64) '
                 '(i64.reinterpret_f64 (f64.promote_f32 (f32.reinterpret_i32 (local.get 0)))))')
    return wat("(module " + "\n".join(funcs) + ")")


@MODES
def test_conversions_match_wasmtime(debug):
    calls = []
    for it in ("i32", "i64"):
        for ft, values in (("f32", F32_VALUES), ("f64", F64_VALUES)):
            for s in ("s", "u"):
                for kind in ("trunc", "trunc_sat"):
                    calls += [(f"{it}.{kind}_{ft}_{s}", [v]) for v in values]
                ints = I32_VALUES if it == "i32" else I64_VALUES + [0xFFFF_FFFF_FFFF_F801, 0x8000_0000_0000_0401,
                                                                    0x0020_0000_0000_0001]
                calls += [(f"{ft}.convert_{it}_{s}", [v]) for v in ints]
    calls += [("demote", [v]) for v in F64_VALUES]
    calls += [("promote", [v]) for v in F32_VALUES]
    bad = compare(conversion_module(), calls, debug=debug, nan_results={"demote": 32, "promote": 64})
    assert bad == []


def test_trunc_traps_distinguish_nan_from_overflow():
    inst = SoloInstance(conversion_module(), debug=False)
    try:
        for bits, code in ((0x7FC0_0000, TrapCode.INVALID_CONVERSION), (0xFFA0_0000, TrapCode.INVALID_CONVERSION),
                           (f32(2147483648.0), TrapCode.INTEGER_OVERFLOW),
                           (f32(-2147483904.0), TrapCode.INTEGER_OVERFLOW),
                           (f32(float("inf")), TrapCode.INTEGER_OVERFLOW)):
            with pytest.raises(GuestTrap) as info:
                inst.call("i32.trunc_f32_s", bits)
            assert info.value.code == code
        assert inst.call("i32.trunc_f32_s", f32(-2147483648.0)) == [0x8000_0000]
        assert inst.call("i32.trunc_f64_s", f64(-2147483648.9)) == [0x8000_0000]
        assert inst.call("i32.trunc_f64_u", f64(-0.9999999999999999)) == [0]
        assert inst.call("i64.trunc_f64_u", f64(1.8446744073709550e19)) == [18446744073709549568]
    finally:
        inst.close()


# ---------------------------------------------------------------------------
# Control flow, calls, locals, globals
# ---------------------------------------------------------------------------

CONTROL = r"""
(module
  (type $ii (func (param i32) (result i32)))
  (func $fac (export "fac") (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0))
      (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1)))))))
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func (export "loop_sum") (param i32) (result i32) (local i32 i32)
    (block $out
      (loop $top
        (br_if $out (i32.ge_u (local.get 1) (local.get 0)))
        (local.set 1 (i32.add (local.get 1) (i32.const 1)))
        (local.set 2 (i32.add (local.get 2) (local.get 1)))
        (br $top)))
    (local.get 2))
  (func (export "switch") (param i32) (result i32)
    (block $d (block $c (block $b (block $a
      (br_table $a $b $c $a $d (local.get 0)))
      (return (i32.const 100)))
      (return (i32.const 101)))
      (return (i32.const 102)))
    (i32.const 103))
  (func (export "br_table_value") (param i32) (result i32)
    (i32.add (i32.const 1000)
      (block $x (result i32)
        (i32.mul (i32.const 10)
          (block $y (result i32)
            (drop (i32.const 99))
            (br_table $x $y $x (i32.const 7) (local.get 0)))))))
  (func (export "br_if_value") (param i32) (result i32)
    (block (result i32)
      (drop (br_if 0 (i32.const 5) (local.get 0)))
      (i32.const 6)))
  (func (export "deep_br") (param i32) (result i32)
    (i32.const 1)
    (block (result i32)
      (i32.const 2) (i32.const 3) (drop) (drop)
      (block (result i32)
        (i32.const 42)
        (br_if 1 (local.get 0))
        (drop) (i32.const 7)))
    (i32.add))
  (func $swap (export "swap") (param i32 i32) (result i32 i32) (local.get 1) (local.get 0))
  (func (export "multi") (param i32 i32) (result i32)
    (call $swap (local.get 0) (local.get 1))
    (i32.sub))
  (func (export "block_params") (param i32 i32) (result i32)
    (local.get 0) (local.get 1)
    (block (param i32 i32) (result i32) (i32.sub))
    (i32.const 3)
    (loop (param i32 i32) (result i32) (i32.mul)))
  (func (export "if_params") (param i32 i32 i32) (result i32 i32)
    (local.get 0) (local.get 1)
    (if (param i32 i32) (result i32 i32) (local.get 2)
      (then (i32.add) (i32.const 1))
      (else (i32.sub) (i32.const 2))))
  (func (export "loop_params") (param i32) (result i32)
    ;; counts down from the param, summing via a loop carrying (acc, n)
    (i32.const 0) (local.get 0)
    (loop $l (param i32 i32) (result i32)
      (local.set 0)
      (i32.add (local.get 0))
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (local.get 0)
      (br_if $l (local.get 0))
      (drop)))
  (func (export "select") (param i32 i64 i64) (result i64)
    (select (local.get 1) (local.get 2) (local.get 0)))
  (func (export "early_return") (param i32) (result i32)
    (if (local.get 0) (then (return (i32.const 11))))
    (unreachable))
  (func (export "dead_code") (param i32) (result i32)
    (block (result i32)
      (br 0 (i32.const 9))
      (i32.add (i32.const 1) (i32.const 2))
      (block (loop (if (i32.const 1) (then (unreachable)) (else (nop)))))
      (call $fac (i64.const 3)) (drop)))
  (func (export "nested_if") (param i32 i32) (result i32)
    (if (result i32) (local.get 0)
      (then (if (result i32) (local.get 1) (then (i32.const 1)) (else (i32.const 2))))
      (else (if (result i32) (local.get 1) (then (i32.const 3)) (else (i32.const 4))))))
  (func (export "many_locals") (param i32) (result i64)
    (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
    (local.set 12 (i64.extend_i32_u (local.get 0)))
    (i64.add (local.get 1) (i64.add (local.get 11) (local.get 12))))
)
"""

CONTROL_CALLS = (
    [("fac", [n]) for n in (0, 1, 5, 20, 25)]
    + [("fib", [n]) for n in range(12)]
    + [("loop_sum", [n]) for n in (0, 1, 10, 1000)]
    + [("switch", [n]) for n in range(7)] + [("switch", [0xFFFF_FFFF])]
    + [("br_table_value", [n]) for n in range(5)]
    + [("br_if_value", [n]) for n in (0, 1, 2)]
    + [("deep_br", [n]) for n in (0, 1)]
    + [("swap", [1, 2]), ("multi", [10, 3]), ("block_params", [10, 4])]
    + [("if_params", [a, b, c]) for a in (5, 9) for b in (2, 3) for c in (0, 1)]
    + [("loop_params", [n]) for n in (1, 2, 10)]
    + [("select", [c, 0x1_0000_0001, 0xFFFF_FFFF_FFFF_FFFF]) for c in (0, 1, 0x100)]
    + [("early_return", [n]) for n in (0, 1)]
    + [("dead_code", [0])]
    + [("nested_if", [a, b]) for a in (0, 1) for b in (0, 1)]
    + [("many_locals", [n]) for n in (0, 5, 0xFFFF_FFFF)]
)


@MODES
def test_control_flow_and_calls_match_wasmtime(debug):
    assert compare(wat(CONTROL), CONTROL_CALLS, debug=debug) == []


GLOBALS = r"""
(module
  (global $a (mut i32) (i32.const -5))
  (global $b (mut i64) (i64.const 0x123456789))
  (global $c (mut f32) (f32.const 1.5))
  (global $d (mut f64) (f64.const -2.25))
  (global $k i32 (i32.const 77))
  (func (export "get_a") (result i32) (global.get $a))
  (func (export "set_a") (param i32) (global.set $a (local.get 0)))
  (func (export "get_b") (result i64) (global.get $b))
  (func (export "set_b") (param i64) (global.set $b (local.get 0)))
  (func (export "get_c") (result i32) (i32.reinterpret_f32 (global.get $c)))
  (func (export "set_c") (param i32) (global.set $c (f32.reinterpret_i32 (local.get 0))))
  (func (export "get_d") (result i64) (i64.reinterpret_f64 (global.get $d)))
  (func (export "set_d") (param i64) (global.set $d (f64.reinterpret_i64 (local.get 0))))
  (func (export "k") (result i32) (global.get $k))
  (func (export "bump") (result i32)
    (global.set $a (i32.add (global.get $a) (i32.const 1))) (global.get $a))
)
"""


@MODES
def test_globals_match_wasmtime(debug):
    calls = [("get_a", []), ("bump", []), ("get_a", []), ("set_a", [0xFFFF_FFFF]), ("get_a", []), ("bump", []),
             ("get_b", []), ("set_b", [0xFFFF_FFFF_0000_0001]), ("get_b", []),
             ("get_c", []), ("set_c", [0x7FA0_0001]), ("get_c", []),
             ("get_d", []), ("set_d", [0xFFF4_0000_0000_0001]), ("get_d", []), ("k", [])]
    assert compare(wat(GLOBALS), calls, debug=debug) == []


def test_global_cells_hold_zero_extended_i32():
    inst = SoloInstance(wat(GLOBALS), debug=False)
    try:
        inst.call("set_a", 0xFFFF_FFFF)
        assert inst.cells[0][0] == 0xFFFF_FFFF
    finally:
        inst.close()


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

LOADS = ["i32.load", "i64.load", "f32.load", "f64.load", "i32.load8_s", "i32.load8_u", "i32.load16_s",
         "i32.load16_u", "i64.load8_s", "i64.load8_u", "i64.load16_s", "i64.load16_u", "i64.load32_s",
         "i64.load32_u"]
STORES = ["i32.store", "i64.store", "f32.store", "f64.store", "i32.store8", "i32.store16", "i64.store8",
          "i64.store16", "i64.store32"]


def memory_module() -> bytes:
    funcs = []
    for op in LOADS:
        t = op[:3]
        r = {"f32": "i32", "f64": "i64"}.get(t, t)
        body = f"({op} offset=3 (local.get 0))"
        if t != r:
            body = f"({r}.reinterpret_{t} {body})"
        funcs.append(f'(func (export "{op}") (param i32) (result {r}) {body})')
        funcs.append(f'(func (export "{op}_far") (param i32) (result {r}) '
                     f'({r}.const 0) (drop) {body.replace("offset=3", "offset=0xFFFFFFFF")})')
    for op in STORES:
        t = op[:3]
        r = {"f32": "i32", "f64": "i64"}.get(t, t)
        value = "(local.get 1)" if t == r else f"({t}.reinterpret_{r} (local.get 1))"
        funcs.append(f'(func (export "{op}") (param i32 {r}) ({op} offset=1 (local.get 0) {value}))')
    funcs.append('(func (export "size") (result i32) (memory.size))')
    funcs.append('(func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))')
    funcs.append('(func (export "fill") (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2)))')
    funcs.append('(func (export "copy") (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))')
    funcs.append('(func (export "init") (param i32 i32 i32) '
                 '(memory.init $p (local.get 0) (local.get 1) (local.get 2)))')
    funcs.append('(func (export "drop") (data.drop $p))')
    return wat('(module (memory 1 3) (data (i32.const 16) "\\01\\82\\83\\f4\\05\\86\\87\\88\\f9\\fa\\8b\\0c")'
               '(data $p "passive-bytes")' + "\n".join(funcs) + ")")


@MODES
def test_memory_matches_wasmtime(debug):
    addresses = [0, 13, 14, 15, 16, 17, 20, 65520, 65524, 65525, 65528, 65529, 65530, 65531, 65532, 65533,
                 65534, 65535, 65536, 0xFFFF_FFFF, 0x8000_0000]
    calls = []
    for op in LOADS:
        calls += [(op, [a]) for a in addresses]
        calls += [(op + "_far", [a]) for a in (0, 1, 0xFFFF_FFFF)]
    for op in STORES:
        for a in addresses:
            calls.append((op, [a, 0xF1E2_D3C4_B5A6_9788 if op.startswith(("i64", "f64")) else 0xB5A6_9788]))
            calls += [(load, [max(0, a - 2)]) for load in ("i64.load", "i32.load8_u")]
    calls += [("size", []), ("grow", [1]), ("size", []), ("i32.load", [65536]), ("i32.store", [70000, 5]),
              ("i32.load", [70000]), ("grow", [5]), ("grow", [0]), ("grow", [1]), ("size", []),
              ("i64.load", [3 * 65536 - 12]), ("i64.load", [3 * 65536 - 11]), ("grow", [0x10000])]
    calls += [("fill", [100, 0x1AB, 10]), ("i64.load", [98]), ("fill", [3 * 65536 - 4, 1, 5]),
              ("copy", [200, 16, 12]), ("i64.load", [197]), ("copy", [18, 16, 12]), ("i64.load", [14]),
              ("copy", [0, 3 * 65536 - 2, 3]), ("init", [300, 2, 5]), ("i64.load", [297]),
              ("init", [0, 10, 4]), ("drop", []), ("init", [0, 0, 1]), ("init", [0, 0, 0])]
    assert compare(memory_module(), calls, debug=debug) == []


# ---------------------------------------------------------------------------
# Tables, call_indirect, references, imports
# ---------------------------------------------------------------------------

TABLES = r"""
(module
  (type $v_i (func (result i32)))
  (type $i_i (func (param i32) (result i32)))
  (type $v_i2 (func (result i32)))
  (import "host" "twice" (func $twice (param i32) (result i32)))
  (import "host" "pair" (func $pair (param i64 i64) (result i64 i64)))
  (table $t 8 10 funcref)
  (table $u 2 externref)
  (elem (table $t) (i32.const 1) func $one $two $inc $twice)
  (elem $passive func $two $one)
  (func $one (type $v_i) (i32.const 1))
  (func $two (type $v_i2) (i32.const 2))
  (func $inc (type $i_i) (i32.add (local.get 0) (i32.const 1)))
  (func (export "call0") (param i32) (result i32) (call_indirect (type $v_i) (local.get 0)))
  (func (export "call1") (param i32 i32) (result i32) (call_indirect (type $i_i) (local.get 1) (local.get 0)))
  (func (export "twice") (param i32) (result i32) (call $twice (i32.add (local.get 0) (i32.const 1))))
  (func (export "pair") (param i64 i64) (result i64) (i64.sub (call $pair (local.get 0) (local.get 1))))
  (func (export "size") (result i32) (table.size $t))
  (func (export "grow") (param i32) (result i32) (table.grow $t (ref.func $one) (local.get 0)))
  (func (export "is_null") (param i32) (result i32) (ref.is_null (table.get $t (local.get 0))))
  (func (export "set_null") (param i32) (table.set $t (local.get 0) (ref.null func)))
  (func (export "copy") (param i32 i32 i32) (table.copy $t $t (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init") (param i32 i32 i32) (table.init $t $passive (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fill") (param i32 i32) (table.fill $t (local.get 0) (ref.func $two) (local.get 1)))
  (func (export "edrop") (elem.drop $passive))
  (func (export "ext") (param i32) (result i32) (ref.is_null (table.get $u (local.get 0))))
  (func (export "null_is_null") (result i32) (ref.is_null (ref.null extern)))
  (func (export "func_is_null") (result i32) (ref.is_null (ref.func $one)))
)
"""

TABLE_HOST = {("host", "twice"): lambda a: [(a[0] * 2) & 0xFFFF_FFFF],
              ("host", "pair"): lambda a: [a[1], a[0]]}


@MODES
def test_tables_and_indirect_calls_match_wasmtime(debug):
    calls = [("call0", [i]) for i in range(10)] + [("call0", [0xFFFF_FFFF])]
    calls += [("call1", [i, 41]) for i in range(10)]
    calls += [("twice", [20]), ("pair", [10, 3]), ("size", []), ("is_null", [0]), ("is_null", [1]),
              ("is_null", [8]), ("set_null", [1]), ("call0", [1]), ("set_null", [8]), ("grow", [1]),
              ("size", []), ("call0", [8]), ("grow", [5]), ("size", []),
              ("copy", [5, 1, 3]), ("call0", [5]), ("call0", [6]), ("call1", [7, 1]), ("copy", [8, 0, 2]),
              ("init", [0, 0, 2]), ("call0", [0]), ("call0", [1]), ("init", [8, 1, 1]), ("edrop", []),
              ("init", [0, 0, 1]), ("init", [0, 0, 0]), ("fill", [2, 3]), ("call0", [4]), ("fill", [8, 2]),
              ("ext", [0]), ("ext", [2]), ("null_is_null", []), ("func_is_null", [])]
    assert compare(wat(TABLES), calls, debug=debug, host_funcs=TABLE_HOST) == []


# ---------------------------------------------------------------------------
# Traps: codes and the sequence point they name
# ---------------------------------------------------------------------------

TRAPS = r"""
(module
  (memory 1)
  (func (export "unreachable") (i32.const 1) (drop) (unreachable))
  (func (export "div0") (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
  (func (export "overflow") (result i32) (i32.div_s (i32.const 0x80000000) (i32.const -1)))
  (func (export "rem_s_min") (result i32) (i32.rem_s (i32.const 0x80000000) (i32.const -1)))
  (func (export "rem_s64_min") (result i64) (i64.rem_s (i64.const 0x8000000000000000) (i64.const -1)))
  (func (export "oob") (param i32) (result i32) (i32.load offset=4 (local.get 0)))
  (func $rec (export "recurse") (param i32) (result i32) (call $rec (i32.add (local.get 0) (i32.const 1))))
  (func $deep (export "deep_trap") (param i32) (result i32)
    (if (result i32) (local.get 0)
      (then (call $deep (i32.sub (local.get 0) (i32.const 1))))
      (else (unreachable))))
)
"""


def trap_instruction_offset(wasm: bytes, export: str, opcode: int) -> set[int]:
    """Module offsets of every instruction with ``opcode`` in the export's body."""
    info = decode_module(wasm)
    index = next(e.index for e in info.exports if e.name == export)
    return {ins.offset for ins in info.read_body(index - info.num_imported_funcs) if ins.op == opcode}


@MODES
def test_traps_report_code_and_sequence_point(debug):
    wasm = wat(TRAPS)
    inst = SoloInstance(wasm, debug=debug)
    try:
        cases = [("unreachable", [], TrapCode.UNREACHABLE, 0x00),
                 ("div0", [0], TrapCode.INTEGER_DIVIDE_BY_ZERO, 0x6E),
                 ("overflow", [], TrapCode.INTEGER_OVERFLOW, 0x6D),
                 ("oob", [65532], TrapCode.OUT_OF_BOUNDS_MEMORY, 0x28),
                 ("oob", [0xFFFF_FFFF], TrapCode.OUT_OF_BOUNDS_MEMORY, 0x28),
                 ("recurse", [0], TrapCode.STACK_EXHAUSTED, None),
                 ("deep_trap", [50], TrapCode.UNREACHABLE, 0x00)]
        for name, args, code, opcode in cases:
            with pytest.raises(GuestTrap) as info:
                inst.call(name, *args)
            assert info.value.code == code, name
            site = info.value.site_offset
            assert site is not None
            point = inst.table.sequence_point_at_or_before(site)
            assert point.native_offset == site, name
            if opcode is None:
                assert point.kind == SequencePointKind.ENTRY
            else:
                assert point.kind == SequencePointKind.INSTRUCTION
                assert point.wasm_offset in trap_instruction_offset(wasm, name, opcode), name
            if debug:
                assert inst.table.site_index(site) is not None
        # The stack is reusable after a trap, and the non-trapping cases work.
        assert inst.call("div0", 3) == [0]
        assert inst.call("oob", 65528) == [0]
        assert inst.call("rem_s_min") == [0]
        assert inst.call("rem_s64_min") == [0]
        assert inst.ctx.depth == 0
    finally:
        inst.close()


@MODES
def test_trap_codes_match_wasmtime(debug):
    calls = [("unreachable", []), ("div0", [0]), ("div0", [7]), ("overflow", []), ("rem_s_min", []),
             ("rem_s64_min", []), ("oob", [65528]), ("oob", [65529]), ("recurse", [0]), ("deep_trap", [3])]
    assert compare(wat(TRAPS), calls, debug=debug) == []


def test_host_function_trap_and_reentry():
    """A host import that traps unwinds the guest; one that succeeds returns results."""
    wasm = wat('(module (import "h" "f" (func $f (param i32) (result i32)))'
               '(func (export "g") (param i32) (result i32) (i32.add (call $f (local.get 0)) (i32.const 1))))')
    inst = SoloInstance(wasm, debug=True, host_funcs={("h", "f"): lambda a: [a[0] * 3]})
    try:
        assert inst.call("g", 5) == [16]
    finally:
        inst.close()


def test_debug_and_nodebug_code_differ_only_by_sites():
    """Strip the NOP sites and their padding from debug code: what remains is
    the non-debug code, instruction by instruction (same mnemonics; operands
    may differ only in jump displacements).  A carrier-store site is the store
    the code has in both modes (docs/compiler-speed.md), so it stays."""
    import capstone

    wasm = wat(CONTROL)
    images = {}
    for mode in (False, True):
        cm = compile_module(decode_module(wasm), debug=mode)
        table = FrameTable(cm.frame_table)
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        sites = set(table.site_offsets)
        listing = []
        for f in table.functions():
            for ins in md.disasm(cm.code[f.native_start:f.native_end], f.native_start):
                if ins.mnemonic == "nop":  # NOP sites and their padding
                    continue
                holds_site = any(ins.address <= site < ins.address + ins.size for site in sites)
                assert not holds_site or ins.mnemonic == "mov", ins  # a carrier store
                listing.append(ins.mnemonic)
        images[mode] = listing
    assert images[False] == images[True]


# ---------------------------------------------------------------------------
# The C examples (examples/exports.json: calls with natively cross-checked results)
# ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROGRAMS = json.loads((EXAMPLES / "exports.json").read_text())["programs"]
EXAMPLE_CASES = [(p["program"], opt) for p in PROGRAMS for opt in ("O0", "O2")]


def _to_bits(value, t: str) -> int:
    if t == "f32":
        return f32(value)
    if t == "f64":
        return f64(value)
    return value & ((1 << (32 if t == "i32" else 64)) - 1)


def _from_bits(bits: int, t: str):
    if t == "f32":
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if t == "f64":
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    return _signed(bits, 32 if t == "i32" else 64)


@MODES
@pytest.mark.parametrize("program, opt", EXAMPLE_CASES, ids=[f"{p}.{o}" for p, o in EXAMPLE_CASES])
def test_examples_give_expected_results(program, opt, debug):
    spec = next(p for p in PROGRAMS if p["program"] == program)
    inst = SoloInstance((EXAMPLES / "build" / f"{program}.{opt}.wasm").read_bytes(), debug=debug,
                        max_pages_cap=256)
    try:
        for call in spec["calls"]:
            sig = spec["exports"][call["func"]]
            args = [_to_bits(a, t) for a, t in zip(call["args"], sig["params"])]
            if call.get("traps"):
                with pytest.raises(GuestTrap):
                    inst.call(call["func"], *args)
                continue
            result = inst.call(call["func"], *args)
            got = _from_bits(result[0], sig["results"][0])
            assert got == call["expect"] or (got != got and call["expect"] != call["expect"]), call
    finally:
        inst.close()


# ---------------------------------------------------------------------------
# Debug mode: every site enabled, values read through the frame table
# ---------------------------------------------------------------------------

STEPPED = r"""
(module
  (func $g (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  (func (export "f") (param i32) (result i32) (local i64)
    local.get 0
    i32.const 7
    i32.mul
    i64.extend_i32_u
    local.set 1
    local.get 1
    i32.wrap_i64
    call $g
    i32.const 2
    i32.sub)
)
"""


def test_single_step_sees_every_value_in_its_slot():
    """With every site patched, each stop's pc is a site whose sequence point
    says what is on the operand stack, and the frame's slots hold exactly those
    values (abi.py: every value is in its slot at every sequence point)."""
    inst = SoloInstance(wat(STEPPED), debug=True)
    store = inst.store
    table = inst.table
    stops = []

    def on_event(kind, code, regfile, vmctx):
        if kind != 1:  # CM_EVENT_BREAKPOINT
            store.last_trap_rsi = regfile.gpr[4]
            return
        offset = inst.store_code.offset_of(regfile.rip)
        point = table.sequence_point_at_or_before(offset)
        assert point.native_offset == offset and table.site_index(offset) is not None
        func = table.function_at(offset)
        if point.kind == SequencePointKind.ENTRY:
            stops.append((func.wasm_index, "entry", None, None))
            return
        rbp = regfile.gpr[6]
        words = ffi.cast("uint64_t *", rbp + func.stack_base)
        stack = [words[i] & (0xFFFF_FFFF if t in (ValType.I32, ValType.F32) else ~0 & 0xFFFF_FFFF_FFFF_FFFF)
                 for i, t in enumerate(point.stack_types)]
        local_values = [ffi.cast("uint64_t *", rbp + slot.frame_offset)[0] for slot in table.locals(func)]
        stops.append((func.wasm_index, point.kind.name, stack, local_values))

    unregister_event_handler(store.ctx.store_id)
    register_event_handler(store.ctx.store_id, on_event)
    try:
        with store.registry.patch_edit() as edit:
            for off in table.site_offsets:
                edit.enable_site(inst.store_code, inst.store_code.pc_of(off))
        assert inst.call("f", 3) == [20]
        f = [(kind, stack, locals_) for index, kind, stack, locals_ in stops if index == 1]
        g = [(kind, stack) for index, kind, stack, _ in stops if index == 0]
        assert f == [
            ("entry", None, None),
            ("INSTRUCTION", [], [3, 0]),
            ("INSTRUCTION", [3], [3, 0]),
            ("INSTRUCTION", [3, 7], [3, 0]),
            ("INSTRUCTION", [21], [3, 0]),
            ("INSTRUCTION", [21], [3, 0]),
            ("INSTRUCTION", [], [3, 21]),
            ("INSTRUCTION", [21], [3, 21]),
            ("INSTRUCTION", [21], [3, 21]),   # call
            ("RETURN_POINT", [22], [3, 21]),
            ("INSTRUCTION", [22], [3, 21]),
            ("INSTRUCTION", [22, 2], [3, 21]),
            ("INSTRUCTION", [20], [3, 21]),   # end
        ]
        assert g == [("entry", None), ("INSTRUCTION", []), ("INSTRUCTION", [21]), ("INSTRUCTION", [21, 1]),
                     ("INSTRUCTION", [22])]
        # Disabling every site restores straight-line execution.
        stops.clear()
        with store.registry.patch_edit() as edit:
            for off in table.site_offsets:
                edit.disable_site(inst.store_code, inst.store_code.pc_of(off))
        assert inst.call("f", 5) == [34]
        assert stops == []
    finally:
        inst.close()


def test_a_store_without_an_event_handler_still_performs_every_carrier_store():
    """With every site enabled and no event handler at all, each breakpoint
    resumes at once, and the carrier-store sites' stores are still made (the
    breakpoint prelude, codemem.native): the guest computes what it computes
    with the sites off."""
    inst = SoloInstance(wat(STEPPED), debug=True)
    store = inst.store
    table = inst.table
    assert any(table.site(k).carrier is not None for k in range(table.num_sites)), "no carrier site to test"
    unregister_event_handler(store.ctx.store_id)
    try:
        with store.registry.patch_edit() as edit:
            for off in table.site_offsets:
                edit.enable_site(inst.store_code, inst.store_code.pc_of(off))
        assert [inst.call("f", n) for n in (3, 5, 0)] == [[20], [34], [0xFFFF_FFFF]]
    finally:
        inst.close()
