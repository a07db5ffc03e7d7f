"""The compiler's register cache and the frame table's register mirrors.

Contract (codemem/frametable.py "Register mirrors", codemem/x64/regcache.py):
at an INSTRUCTION sequence point, each recorded mirror register holds exactly
the 64 bits of its slot; the code after the point relies on it, so a stop that
lets a debugger write a slot must reload the register before resuming.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import wasmtime

import codemem
from stepkit import GPR_INDEX, INSTRUCTION, check_mirrors, debug_instance, step_everything, u64
from codemem.errors import FrameTableError
from codemem.frametable import (
    HEADER_SIZE,
    MIRROR_REGISTER_NAMES,
    MIRROR_SIZE,
    SEQPOINT_SIZE,
    FrameTable,
    FrameTableBuilder,
    FunctionBuild,
    MirrorSource,
    SequencePointKind,
)
from codemem.native import ffi
from codemem.x64.regcache import CACHE_REGISTERS, RegCache
from codemem.x64.regs import Reg

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


# ----------------------------------------------------------------- frame table format

def _table_with(mirrors, kind=INSTRUCTION) -> bytes:
    """``mirrors``: (register, offset) slot mirrors or (register, MirrorSource, offset)."""
    mirrors = tuple(m if len(m) == 3 else (m[0], MirrorSource.SLOT, m[1]) for m in mirrors)
    b = FrameTableBuilder(debug=True)
    b.code_size = 0x100
    b.add_function(FunctionBuild(native_start=0, native_size=0x40, wasm_index=0, frame_size=96,
                                 stack_base=-96, locals=[(-80, 0x7F)],
                                 seqpoints=[(0, 0, SequencePointKind.ENTRY, ()),
                                            (8, 2, kind, (0x7F,), mirrors),
                                            (16, 4, INSTRUCTION, ())]))
    return b.build()


def _mirror_record_offset(data: bytes) -> int:
    return FrameTable(bytes(data)).header.mirrors_offset


def test_mirrors_round_trip_and_lookup_by_offset():
    data = _table_with(((int(Reg.RSI), -96), (int(Reg.R12), -80)))
    table = FrameTable(data)
    assert table.register_mirrors(1) == (("rsi", -96), ("r12", -80))
    assert table.register_mirrors_at(8) == (("rsi", -96), ("r12", -80))
    assert table.register_mirrors(0) == () and table.register_mirrors(2) == ()
    assert table.register_mirrors_at(16) == () and table.register_mirrors_at(9) == ()
    assert table.sequence_point(1).mirrors == (("rsi", -96), ("r12", -80))
    # Equal lists are interned: one pool entry per distinct list.
    assert table.header.num_mirrors == 2


def test_context_mirrors_round_trip_apart_from_slot_mirrors():
    data = _table_with(((int(Reg.RSI), -96), (int(Reg.RBX), MirrorSource.MEMORY0_BASE, 0),
                        (int(Reg.R12), MirrorSource.MEMORY0_LENGTH, 0)))
    table = FrameTable(data)
    assert table.register_mirrors_at(8) == (("rsi", -96),)
    assert table.context_mirrors_at(8) == (("rbx", MirrorSource.MEMORY0_BASE), ("r12", MirrorSource.MEMORY0_LENGTH))
    assert table.sequence_point(1).context_mirrors == table.context_mirrors_at(8)
    assert table.context_mirrors_at(16) == () and table.context_mirrors_at(9) == ()


@pytest.mark.parametrize("source, offset, message", [
    (3, 0, "unknown source 3"),
    (int(MirrorSource.MEMORY0_BASE), -96, "must be 0"),
    (int(MirrorSource.MEMORY0_LENGTH), 8, "must be 0"),
])
def test_corrupt_context_mirror_records_raise(source, offset, message):
    data = bytearray(_table_with(((int(Reg.RSI), -96),)))
    struct.pack_into("<BB2xi", data, _mirror_record_offset(data), int(Reg.RBX), source, offset)
    with pytest.raises(FrameTableError, match=message):
        FrameTable(bytes(data)).context_mirrors_at(8)


def test_register_names_match_the_debugger_register_file():
    from gdbstub.arch_amd64 import GPR_NAMES

    for number, name in MIRROR_REGISTER_NAMES.items():
        assert GPR_NAMES.index(name) >= 0 and Reg[name.upper()] == number
    assert not {"rsp", "rbp", "r15"} & set(MIRROR_REGISTER_NAMES.values())
    assert {MIRROR_REGISTER_NAMES[int(r)] for r in CACHE_REGISTERS} <= set(MIRROR_REGISTER_NAMES.values())


@pytest.mark.parametrize("register, offset, message", [
    (4, -96, "not a mirrorable GPR"),     # rsp
    (5, -96, "not a mirrorable GPR"),     # rbp
    (15, -96, "not a mirrorable GPR"),    # r15
    (200, -96, "not a mirrorable GPR"),
    (6, 8, "8-aligned slot below rbp"),   # above rbp
    (6, -92, "8-aligned slot below rbp"),  # misaligned
])
def test_corrupt_mirror_records_raise(register, offset, message):
    data = bytearray(_table_with(((int(Reg.RSI), -96),)))
    at = _mirror_record_offset(data)
    struct.pack_into("<BB2xi", data, at, register, MirrorSource.SLOT, offset)
    table = FrameTable(bytes(data))
    with pytest.raises(FrameTableError, match=message):
        table.register_mirrors(1)


def test_duplicate_register_raises():
    data = bytearray(_table_with(((int(Reg.RSI), -96), (int(Reg.RDI), -80))))
    struct.pack_into("<B", data, _mirror_record_offset(data) + MIRROR_SIZE, int(Reg.RSI))
    with pytest.raises(FrameTableError, match="recorded as two mirrors"):
        FrameTable(bytes(data)).register_mirrors(1)


def test_mirror_range_outside_the_pool_raises():
    data = bytearray(_table_with(((int(Reg.RSI), -96),)))
    seq1 = FrameTable(bytes(data)).header.seqpoints_offset + SEQPOINT_SIZE  # record 1
    struct.pack_into("<B", data, seq1 + 9, 3)  # num_mirrors = 3, the pool has 1
    with pytest.raises(FrameTableError, match="outside the mirror pool"):
        FrameTable(bytes(data)).register_mirrors(1)


def test_mirrors_on_a_return_point_raise():
    data = bytearray(_table_with(((int(Reg.RSI), -96),)))
    seq1 = FrameTable(bytes(data)).header.seqpoints_offset + SEQPOINT_SIZE
    data[seq1 + 8] = int(SequencePointKind.RETURN_POINT)
    with pytest.raises(FrameTableError, match="RETURN_POINT point has 1 register mirrors"):
        FrameTable(bytes(data)).register_mirrors(1)


def test_pool_past_the_end_raises():
    data = bytearray(_table_with(((int(Reg.RSI), -96),)))
    struct.pack_into("<I", data, HEADER_SIZE - 12, 1000)  # num_mirrors (then mirrors_offset, 4 reserved)
    with pytest.raises(FrameTableError, match="num_mirrors"):
        FrameTable(bytes(data))


# ----------------------------------------------------------------- the cache itself

def test_cache_is_a_partial_bijection_with_lru_eviction():
    cache = RegCache()
    regs = [cache.alloc() for _ in range(1)]
    cache.bind(regs[0], 0)
    for loc in range(1, len(CACHE_REGISTERS)):
        cache.bind(cache.alloc(), loc)
    assert cache.free_register() is None
    cache.get(0)  # slot 0 is now the most recently used
    victim = cache.alloc()
    assert victim != regs[0] and cache.get(0) == regs[0]
    cache.bind(victim, -1)
    cache.bind(victim, 5)  # rebinding releases the local
    assert cache.get(-1) is None and cache.get(5) == victim
    cache.truncate(3)
    assert all(loc < 3 for _, loc in cache.entries())
    cache.clear()
    assert not cache and cache.entries() == ()


# ----------------------------------------------------------------- compiled code


@pytest.mark.parametrize("program, calls", [
    ("loops.O2", [("xor_triangle", [9]), ("gcd", [1071, 462]), ("count_primes", [30])]),
    ("bench_loop.O2", [("cpu_kernel", [1]), ("call_loop", [5])]),
    ("floats.O2", None),
    ("memory.O2", None),
    ("structs.O0", None),
    ("int64.O2", None),
])
def test_every_mirror_holds_its_slot_at_every_stop(program, calls):
    """Single-step whole example calls: at each INSTRUCTION stop every mirror
    register equals the u64 in its slot, and every mirrored slot is a local or
    a live operand-stack slot of that point."""
    store, instance = debug_instance((EXAMPLES / "build" / f"{program}.wasm").read_bytes())
    if calls is None:
        spec = json.loads((EXAMPLES / "exports.json").read_text())
        name = program.split(".")[0]
        entry = next(p for p in spec["programs"] if p["program"] == name)
        calls = [(c["func"], c["args"]) for c in entry["calls"] if not c.get("traps")][:3]
    checked, context_checked = [], []

    def on_stop(point, regfile, func):
        slots, context = check_mirrors(instance, point, regfile, func)
        checked.extend(slots)
        context_checked.extend(context)

    step_everything(store, instance, on_stop)
    for name, args in calls:
        instance.exports[name](*args)
    assert len(checked) > 10
    if program.startswith(("memory", "structs")):
        assert context_checked, "memory 0's base and length are never kept in registers"
    store.close()


def test_no_mirrors_at_entry_and_return_points():
    for path in sorted((EXAMPLES / "build").glob("*.wasm")):
        engine = codemem.Engine(debug=True)
        table = codemem.Module(engine, path.read_bytes()).engine_code.frame_table
        for func in table.functions():
            for point in table.sequence_points(func):
                if point.kind != INSTRUCTION:
                    assert point.mirrors == () and point.context_mirrors == (), (path.name, point)


WRITE_LOCAL = """
(module
  (func (export "f") (param i32) (result i32) (local i32)
    local.get 0
    i32.const 5
    i32.add
    local.set 1
    local.get 1
    i32.const 1
    i32.add))
"""


def _run_with_write(wat: str, wasm_offset_of_stop: int, slot_of, value: int, reload: bool):
    """Call f(10), stopping before the instruction at ``wasm_offset_of_stop`` once:
    write ``value`` to the slot ``slot_of(point, func)`` names, reload every
    mirror register from its slot if ``reload`` (what the stub does on resume)."""
    store, instance = debug_instance(wasmtime.wat2wasm(wat))
    seen = []

    def on_stop(point, regfile, func):
        if seen or point.wasm_offset != wasm_offset_of_stop:
            return
        rbp = regfile.gpr[GPR_INDEX["rbp"]]
        offset = slot_of(point, func)
        ffi.cast("uint64_t *", rbp + offset)[0] = value
        seen.append(point.mirrors)
        if reload:
            for name, mirror_offset in point.mirrors:
                regfile.gpr[GPR_INDEX[name]] = u64(rbp + mirror_offset)

    step_everything(store, instance, on_stop)
    result = instance.exports["f"](10)
    store.close()
    assert seen, "never stopped at the chosen instruction"
    return result, seen[0]


def _stop_offset(wat: str, nth_local_get: int) -> int:
    """Module offset of the n-th ``local.get`` of the only function (0x20 opcode)."""
    wasm = wasmtime.wat2wasm(wat)
    engine = codemem.Engine(debug=True)
    table = codemem.Module(engine, wasm).engine_code.frame_table
    points = [p for p in table.sequence_points(table.function(0)) if p.kind == INSTRUCTION]
    offsets = [p.wasm_offset for p in points if wasm[p.wasm_offset] == 0x20]
    return offsets[nth_local_get]


def test_a_debugger_write_to_a_mirrored_local_is_honoured_after_reload():
    stop = _stop_offset(WRITE_LOCAL, 1)  # the second local.get (of local 1)
    local1 = lambda point, func: -(72 + 16)  # noqa: E731  local 1's slot (abi: rbp-FRAME_FIXED_SIZE-8*2)
    result, mirrors = _run_with_write(WRITE_LOCAL, stop, local1, 100, reload=True)
    assert any(offset == -88 for _, offset in mirrors), mirrors  # the local is mirrored here
    assert result == 101
    # Without the reload the code uses the stale register: the reload is needed.
    stale, _ = _run_with_write(WRITE_LOCAL, stop, local1, 100, reload=False)
    assert stale == 16


def test_a_debugger_write_to_a_mirrored_stack_slot_is_honoured_after_reload():
    wat = WRITE_LOCAL.replace("local.set 1\n    local.get 1\n    i32.const 1\n    i32.add", "")
    # Stop before the i32.add: the operand stack is [x, 5]; overwrite the 5.
    wasm = wasmtime.wat2wasm(wat)
    engine = codemem.Engine(debug=True)
    table = codemem.Module(engine, wasm).engine_code.frame_table
    add = next(p.wasm_offset for p in table.sequence_points(table.function(0))
               if p.kind == INSTRUCTION and wasm[p.wasm_offset] == 0x6A)
    top = lambda point, func: func.operand_slot_offset(point.stack_depth - 1)  # noqa: E731
    result, mirrors = _run_with_write(wat, add, top, 1000, reload=True)
    assert mirrors and result == 1010
    stale, _ = _run_with_write(wat, add, top, 1000, reload=False)
    assert stale == 15
