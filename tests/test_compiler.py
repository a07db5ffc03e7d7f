"""Frame-table invariants of compiled modules, checked against capstone and the wasm bodies.

For every module here (hand-written WAT covering every instruction class, and the
C examples under examples/build/) and both modes:

* debug: every patch site is the 5-byte NOP at a capstone instruction boundary of
  a linear sweep of its function; sites and sequence points coincide; every
  function starts with an ENTRY site; every wasm call (direct to a function
  start, or through ``call rax`` that is not a libcall) returns to a
  RETURN_POINT site, and every RETURN_POINT is such a return address;
* both: every sequence point's wasm offset is an instruction boundary of its
  function's body; records are consistent (locals, frame size, stack depth);
* debug=False has no sites, the same INSTRUCTION sequence points as debug=True,
  and a trap stub names a sequence point in both modes.
"""
from __future__ import annotations

import random
from pathlib import Path

import capstone
import pytest
import wasmtime

from codemem.abi import FRAME_FIXED_SIZE, VMCTX_LIBCALL_CTX
from codemem.errors import CompileError
from codemem.frametable import (
    SITE_DISABLED,
    SITE_SIZE,
    FrameTable,
    SequencePointKind,
    carrier_store,
    is_deferred_carrier,
)
from codemem.wasm.decoder import decode_module
from codemem.wasm.types import ValType
from codemem.x64.compiler import SITE_PAD_PREFIX, compile_module
from test_compiler_exec import CONTROL, GLOBALS, TABLES, TRAPS, conversion_module, float_module, int_module, \
    memory_module

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "build"
MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
MD.detail = False

SOURCES = {
    "control": lambda: wasmtime.wat2wasm(CONTROL),
    "globals": lambda: wasmtime.wat2wasm(GLOBALS),
    "tables": lambda: wasmtime.wat2wasm(TABLES),
    "traps": lambda: wasmtime.wat2wasm(TRAPS),
    "memory": memory_module,
    "conversions": conversion_module,
    "i64": lambda: int_module("i64"),
    "f32": lambda: float_module("f32"),
}
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.wasm")) if EXAMPLES.is_dir() else []


def all_modules():
    for name, make in SOURCES.items():
        yield name, make
    for path in EXAMPLE_FILES:
        yield path.name, path.read_bytes


MODULES = list(all_modules())


#: Instructions that macro-fuse with a jcc right after them (Intel): such a
#: pair is one branch unit for the 32-byte rule (Assembler.pad_for_branch).
FUSIBLE = ("cmp", "test", "add", "sub", "and", "inc", "dec")


def sweep(code: bytes, start: int, end: int):
    """Linear disassembly of [start, end); asserts it covers every byte."""
    out = list(MD.disasm_lite(code[start:end], start))
    covered = sum(size for _, size, _, _ in out)
    assert covered == end - start, f"capstone stopped at {start + covered:#x} in [{start:#x}, {end:#x})"
    return out


def check_invariants(wasm: bytes, debug: bool):
    info = decode_module(wasm)
    cm = compile_module(info, debug=debug)
    table = FrameTable(cm.frame_table)
    code = cm.code
    assert table.code_size == len(code)
    assert table.debug == debug
    assert table.num_functions == len(info.codes)
    sites = table.site_offsets
    site_set = set(sites)
    if not debug:
        assert sites == []
    starts = {f.native_start for f in table.functions()}
    trap_veneer = table.header.trap_veneer
    seen_sites = set()
    all_points = []
    for position, f in enumerate(table.functions()):
        defined = f.wasm_index - info.num_imported_funcs
        assert defined == position
        # Layout: `push rbp; mov rbp, rsp` at the first byte (28 mod 32), the
        # ENTRY point right after it, on 32 bytes (compiler.FUNCTION_START_PHASE).
        assert f.native_start % 32 == 28
        assert code[f.native_start:f.native_start + 4] == b"\x55\x48\x89\xe5"
        body = info.codes[defined]
        boundaries = {ins.offset for ins in info.read_body(defined)}
        assert f.body_wasm_offset == body.body_offset
        # Records: locals, frame.
        ft = info.func_type(f.wasm_index)
        local_types = list(ft.params) + list(body.locals)
        slots = table.locals(f)
        assert [s.valtype for s in slots] == [int(t) for t in local_types]
        offsets = [s.frame_offset for s in slots]
        assert len(set(offsets)) == len(offsets)
        assert f.frame_size % 16 == 0 and f.stack_base == -f.frame_size
        assert all(-f.frame_size <= off <= -FRAME_FIXED_SIZE - 8 for off in offsets)
        stack_room = f.frame_size - FRAME_FIXED_SIZE - 8 * len(slots)
        # Sequence points.
        points = table.sequence_points(f)
        all_points.append(points)
        assert points[0].kind == SequencePointKind.ENTRY and points[0].native_offset == f.native_start + 4
        assert points[0].native_offset % 32 == 0
        assert table.entry_offset(f) == f.native_start + 4
        if debug:
            assert code[f.native_start + 4:f.native_start + 9] == SITE_DISABLED
        assert points[0].wasm_offset == body.body_offset
        for p in points:
            assert f.contains(p.native_offset)
            assert p.wasm_offset in boundaries, f"sequence point wasm offset {p.wasm_offset:#x} not an instruction"
            assert 8 * p.stack_depth <= stack_room
            assert ValType.UNKNOWN not in p.stack_types
        native = [p.native_offset for p in points]
        assert native == sorted(native)
        returns = {p.native_offset for p in points if p.kind == SequencePointKind.RETURN_POINT}
        if debug:
            assert len(set(native)) == len(native)
            assert set(native) == {s for s in sites if f.contains(s)}
        # Linear sweep: sites at boundaries (after their DS-prefix padding, if
        # any, which belongs to the site's instruction), calls followed by return
        # points, no branch on a 32-byte boundary.
        listing = sweep(code, f.native_start, f.native_end)
        boundaries_native = {address for address, _, _, _ in listing}
        call_returns = set()
        previous = None
        for address, size, mnemonic, operands in listing:
            site_at = address + size - SITE_SIZE
            if site_at in site_set:
                disabled = table.site(table.site_index(site_at)).disable
                assert code[site_at:site_at + SITE_SIZE] == disabled
                # The NOP or a carrier store (test_frametable_sweep checks its
                # slot), after its DS padding.
                assert disabled == SITE_DISABLED or carrier_store(disabled) is not None
                prefixes = code[address:site_at]
                if prefixes[-1:] == b"\x41" and carrier_store(disabled).kind == "producer":
                    prefixes = prefixes[:-1]  # a producer's REX.B stays before its site
                assert prefixes == bytes([SITE_PAD_PREFIX]) * len(prefixes)
                # A deferred carrier (frametable.deferred_carrier_bytes) is a NOP too.
                stays_nop = disabled == SITE_DISABLED or is_deferred_carrier(disabled)
                assert len(prefixes) <= 4 and mnemonic == ("nop" if stays_nop else "mov"), \
                    (hex(address), mnemonic)
                boundaries_native.add(site_at)
                seen_sites.add(site_at)
            if mnemonic.startswith("j") or mnemonic in ("call", "ret"):
                unit = address
                if mnemonic not in ("jmp", "call") and previous is not None and \
                        previous[2] in FUSIBLE and previous[0] + previous[1] == address:
                    unit = previous[0]
                assert unit // 32 == (address + size - 1) // 32 and (address + size) % 32, \
                    f"{mnemonic} at {address:#x} (unit from {unit:#x}) crosses or ends at a 32-byte boundary"
            if mnemonic == "call":
                ret = address + size
                if operands != "rax":
                    target = int(operands, 0)  # capstone prints small targets in decimal
                    if target == trap_veneer:
                        pass
                    else:
                        assert target in starts, f"direct call at {address:#x} to {target:#x}, not a function"
                        call_returns.add(ret)
                else:
                    libcall = previous is not None and previous[2] == "mov" and \
                        previous[3] == f"r15, qword ptr [r15 + {VMCTX_LIBCALL_CTX:#x}]"
                    if not libcall:
                        call_returns.add(ret)
            if mnemonic != "nop":  # branch padding may separate a libcall's mov from its call
                previous = (address, size, mnemonic, operands)
        assert call_returns == returns
        if debug:
            for ret in returns:
                assert ret in site_set, f"return address {ret:#x} is not a site"
        for p in points:
            assert p.native_offset in boundaries_native or p.native_offset == f.native_end
    if debug:
        assert seen_sites == site_set
    for off in sites:
        assert off % 8 <= 8 - SITE_SIZE
    return info, cm, table, all_points


@pytest.mark.parametrize("name, make", MODULES, ids=[m[0] for m in MODULES])
def test_frame_table_invariants(name, make):
    wasm = make()
    _, _, dbg_table, dbg_points = check_invariants(wasm, debug=True)
    _, _, table, points = check_invariants(wasm, debug=False)
    # Same wasm-level sequence points in both modes (only native offsets differ).
    def instruction_view(per_function):
        return [[(p.wasm_offset, p.kind, p.stack_types) for p in fp] for fp in per_function]
    assert instruction_view(points) == instruction_view(dbg_points)
    assert [f.frame_size for f in table.functions()] == [f.frame_size for f in dbg_table.functions()]


def test_examples_present():
    """The C examples are part of the invariant run (built by examples/build.sh)."""
    assert len(EXAMPLE_FILES) >= 10


def test_every_instruction_has_a_sequence_point_in_live_code():
    """Straight-line code: one INSTRUCTION point per instruction, stack types from the validator."""
    wasm = wasmtime.wat2wasm('(module (func (param i32) (result i64) local.get 0 i64.extend_i32_u '
                             'i64.const 2 i64.mul f32.const 1 drop))')
    info = decode_module(wasm)
    for debug in (False, True):
        table = FrameTable(compile_module(info, debug=debug).frame_table)
        f = table.function(0)
        points = [p for p in table.sequence_points(f) if p.kind == SequencePointKind.INSTRUCTION]
        assert [p.wasm_offset for p in points] == [i.offset for i in info.read_body(0)]
        i32, i64, f32 = int(ValType.I32), int(ValType.I64), int(ValType.F32)
        assert [p.stack_types for p in points] == [(), (i32,), (i64,), (i64, i64), (i64,), (i64, f32), (i64,)]


def test_dead_code_has_no_sequence_points():
    wasm = wasmtime.wat2wasm('(module (func (result i32) (block (result i32) (br 0 (i32.const 1)) '
                             '(i32.const 2) (i32.add (i32.const 3)))))')
    info = decode_module(wasm)
    body = info.read_body(0)
    dead = {ins.offset for ins in body if ins.name in ("i32.add",) or (ins.name == "i32.const" and ins.imm in (2, 3))}
    table = FrameTable(compile_module(info, debug=True).frame_table)
    offsets = {p.wasm_offset for p in table.sequence_points(table.function(0))}
    assert offsets.isdisjoint(dead)
    assert body[-1].offset in offsets and body[-2].offset in offsets  # both ends are live (branch target)


def test_return_point_types_are_after_the_call():
    wasm = wasmtime.wat2wasm('(module (func $f (param i32) (result i64 f64) (i64.const 1) (f64.const 2))'
                             '(func (i32.const 5) (i32.const 6) (call $f) (drop) (drop) (drop)))')
    info = decode_module(wasm)
    table = FrameTable(compile_module(info, debug=True).frame_table)
    points = table.sequence_points(table.function(1))
    ret = [p for p in points if p.kind == SequencePointKind.RETURN_POINT]
    assert len(ret) == 1
    call = next(ins for ins in info.read_body(1) if ins.name == "call")
    assert ret[0].wasm_offset == call.offset
    assert ret[0].stack_types == (int(ValType.I32), int(ValType.I64), int(ValType.F64))


@pytest.mark.parametrize("source, message", [
    ('(module (func (result i32) (i64.const 1)))', "type mismatch"),
    ('(module (func (local.get 3) drop))', "unknown local 3"),
    ('(module (func (call 7)))', "unknown function 7"),
    ('(module (func (br 2)))', "unknown label 2"),
    ('(module (func (i32.load (i32.const 0)) drop))', "unknown memory 0"),
    ('(module (global i32 (i32.const 0)) (func (global.set 0 (i32.const 1))))', "global is immutable"),
    ('(module (memory 1) (func (i32.load align=8 (i32.const 0)) drop))', "alignment must not be larger"),
])
def test_invalid_modules_raise_compile_error(source, message):
    wasm = wasmtime.wat2wasm(source)
    with pytest.raises(CompileError) as info:
        compile_module(decode_module(wasm), debug=True)
    assert info.value.message.startswith(message)
    assert info.value.offset is not None and 0 <= info.value.offset <= len(wasm)


def test_malformed_body_raises_compile_error():
    wasm = bytearray(wasmtime.wat2wasm('(module (func (nop) (nop)))'))
    wasm[wasm.rindex(0x01)] = 0xFF  # the second nop becomes an illegal opcode
    with pytest.raises(CompileError) as info:
        compile_module(decode_module(bytes(wasm)), debug=False)
    assert "illegal opcode" in info.value.message


def big_module(target: int, seed: int = 1) -> bytes:
    """A generated module of about ``target`` bytes: many functions mixing
    arithmetic, control flow, memory and calls."""
    rnd = random.Random(seed)
    funcs = []
    size = 0
    while size < target:
        i = len(funcs)
        body = []
        for _ in range(40):
            c = rnd.randrange(6)
            if c == 0:
                k = rnd.randrange(1 << 20)
                body.append(f"(local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {k}))))")
            elif c == 1:
                body.append(f"(if (i32.lt_u (local.get 1) (i32.const {rnd.randrange(1000)})) "
                            "(then (local.set 2 (f64.add (local.get 2) (f64.const 1.5)))) "
                            "(else (local.set 1 (i32.xor (local.get 1) (i32.const 5)))))")
            elif c == 2:
                body.append(f"(i32.store offset={rnd.randrange(64)} "
                            "(i32.and (local.get 1) (i32.const 0xfff)) (local.get 0))")
            elif c == 3:
                body.append(f"(local.set 0 (i32.load8_u offset={rnd.randrange(64)} "
                            "(i32.and (local.get 0) (i32.const 0xfff))))")
            elif c == 4:
                body.append("(block (loop (br_if 1 (i32.eqz (local.get 0))) "
                            "(local.set 0 (i32.shr_u (local.get 0) (i32.const 1))) (br 0)))")
            else:
                body.append(f"(local.set 1 (call {rnd.randrange(i)} (local.get 1)))" if i else "(nop)")
        funcs.append(f"(func (export \"f{i}\") (param i32) (result i32) (local i32 f64) {' '.join(body)} "
                     "(i32.add (local.get 0) (local.get 1)))")
        size += 620
    return wasmtime.wat2wasm("(module (memory 1) " + "\n".join(funcs) + ")")


def test_a_one_mebibyte_module_compiles_in_both_modes():
    """Its speed is scripts/bench/compile_speed.py's business; here: it compiles."""
    wasm = big_module(1 << 20)
    assert len(wasm) >= 1 << 20
    info = decode_module(wasm)
    for debug in (False, True):
        cm = compile_module(info, debug=debug)
        table = FrameTable(cm.frame_table)
        assert table.num_functions == len(info.codes)
        if debug:
            assert table.num_sites > len(info.codes)
