"""Invariant sweep: compiled code never keeps the arithmetic flags live across a patch site.

The standalone access veneers of watchpoints (codemem.sitehooks,
AccessCheck.emit_standalone) clobber the flags instead of saving them with
pushfq/popfq, which is what keeps a watched Store fast.  That is only sound
if no code after a site reads a flag it did not set itself.  For every site
of every example (both optimisation levels) and the e2e guests, this walks
the code after the site (both ways at each conditional branch, into
unconditional jumps, up to a bound) and checks that every flag an
instruction tests was written on that path after the site.

It also checks the register half of the contract: a standalone access
veneer only uses registers that are not mirrors at its point.
"""
from __future__ import annotations

import re
from pathlib import Path

import capstone
import capstone.x86 as x86
import pytest

import codemem
from codemem import sitehooks
from codemem.native import ffi
from codemem.sitehooks import access_sites
from codemem.x64.regs import Reg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "build"
FLAGS = ("CF", "PF", "AF", "ZF", "SF", "OF")


def _mask(prefix: str, flag: str) -> int:
    return getattr(x86, f"X86_EFLAGS_{prefix}_{flag}", 0)


TESTS = {flag: _mask("TEST", flag) for flag in FLAGS}
WRITES = {flag: _mask("MODIFY", flag) | _mask("SET", flag) | _mask("RESET", flag) | _mask("UNDEFINED", flag)
          for flag in FLAGS}
MAX_PATH = 200


def _disassembler():
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def flags_read_before_written(code: bytes, start: int, md) -> list[str]:
    """Paths from image offset ``start`` on which an instruction tests a flag
    no instruction after ``start`` wrote; each as 'offset: mnemonic op_str'."""
    problems = []
    work = [(start, frozenset(), 0)]
    seen = set()
    while work:
        offset, written, steps = work.pop()
        if (offset, written) in seen or steps > MAX_PATH or not 0 <= offset < len(code):
            continue
        seen.add((offset, written))
        insn = next(md.disasm(code[offset:offset + 16], offset), None)
        if insn is None:
            continue
        tested = {f for f, m in TESTS.items() if insn.eflags & m}
        if tested - written:
            problems.append(f"{insn.address:#x}: {insn.mnemonic} {insn.op_str} reads {sorted(tested - written)}")
            continue
        written = written | {f for f, m in WRITES.items() if insn.eflags & m}
        if written >= set(FLAGS):
            continue
        group = set(insn.groups)
        if capstone.CS_GRP_RET in group or capstone.CS_GRP_CALL in group or insn.mnemonic in ("ud2", "int3"):
            continue  # calls reach veneers/trampolines/callees: a new context for flags
        if capstone.CS_GRP_JUMP in group:
            operand = insn.operands[0] if insn.operands else None
            if operand is not None and operand.type == x86.X86_OP_IMM:
                work.append((operand.imm, written, steps + 1))
            if insn.mnemonic != "jmp":
                work.append((insn.address + insn.size, written, steps + 1))
            continue
        work.append((insn.address + insn.size, written, steps + 1))
    return problems


MODULES = sorted(EXAMPLES.glob("*.wasm"))


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_flag_is_live_across_any_patch_site(path):
    engine = codemem.Engine(debug=True)
    module = codemem.Module(engine, path.read_bytes(), name=path.stem)
    engine_code = module.engine_code
    table = engine_code.frame_table
    code = engine_code.read(0, engine_code.code_size)
    md = _disassembler()
    problems = []
    for site in table.site_offsets:
        for problem in flags_read_before_written(code, site + 5, md):
            problems.append(f"site {site:#x}: {problem}")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("path", [EXAMPLES / "agent.O0.wasm", EXAMPLES / "memory.O2.wasm"],
                         ids=["agent.O0", "memory.O2"])
def test_standalone_access_veneers_use_only_dead_registers(path):
    engine = codemem.Engine(debug=True)
    module = codemem.Module(engine, path.read_bytes(), name=path.stem)
    sites = access_sites(module.engine_code, module.wasm)
    loads_and_stores = [s for s in sites.values() if s.size]
    assert loads_and_stores
    table = module.engine_code.frame_table
    stubs = 0
    for access in loads_and_stores:
        point = table.sequence_point_at_or_before(access.native_offset)
        assert point.native_offset == access.native_offset
        live = {name for name, _ in point.mirrors} | {name for name, _ in point.context_mirrors}
        assert {r.name.lower() for r in Reg if access.is_live(r)} == live, access
        # The shared routine a stub calls uses three registers dead here.
        triple = next((t for t in sitehooks.ACCESS_ROUTINE_REGISTERS if not any(access.is_live(r) for r in t)), None)
        if triple is not None:
            assert not {r.name.lower() for r in triple} & live
            stubs += 1
    assert stubs == len(loads_and_stores), "every load/store of these modules gets a stub"


def test_the_sweep_finds_a_flag_read_before_it_is_written():
    # cmp; <site>; jne: the jne reads flags set before the site.
    code = bytes.fromhex("39c0" "0f1f440000" "7502" "90" "90" "c3")
    md = _disassembler()
    assert flags_read_before_written(code, 2 + 5, md)
    # <site>; test eax, eax; jne: fine.
    code = bytes.fromhex("0f1f440000" "85c0" "7502" "90" "90" "c3")
    assert not flags_read_before_written(code, 5, md)


ACCESS_WAT = """(module
  (memory 1)
  (data "abc")
  (global $g (mut i32) (i32.const 0))
  (func (export "f") (param $p i32)
    (i32.store offset=8 (local.get $p) (i32.const 1))
    (i64.store32 (local.get $p) (i64.const 2))
    (i32.store8 (local.get $p) (i32.const 3))
    (drop (i64.load16_s offset=4 (local.get $p)))
    (memory.fill (local.get $p) (i32.const 0) (i32.const 16))
    (memory.copy (i32.const 32) (local.get $p) (i32.const 8))
    (memory.init 0 (i32.const 64) (i32.const 0) (i32.const 3))
    (global.set $g (local.get $p))))"""


def test_access_sites_name_every_access_with_its_operand_slots_and_size():
    import wasmtime

    engine = codemem.Engine(debug=True)
    module = codemem.Module(engine, bytes(wasmtime.wat2wasm(ACCESS_WAT)), name="access")
    sites = access_sites(module.engine_code, module.wasm)
    table = module.engine_code.frame_table
    func = next(iter(table.functions()))
    slot = func.operand_slot_offset
    found = sorted(sites.values(), key=lambda s: s.native_offset)
    described = [(s.name, s.writes, s.reads, s.address_slot, s.static_offset, s.size, s.length_slot,
                  s.source_slot, s.global_index) for s in found]
    assert described == [
        ("i32.store", True, False, slot(0), 8, 4, None, None, None),
        ("i64.store32", True, False, slot(0), 0, 4, None, None, None),
        ("i32.store8", True, False, slot(0), 0, 1, None, None, None),
        ("i64.load16_s", False, True, slot(0), 4, 2, None, None, None),
        ("memory.fill", True, False, slot(0), 0, 0, slot(2), None, None),
        ("memory.copy", True, True, slot(0), 0, 0, slot(2), slot(1), None),
        ("memory.init", True, False, slot(0), 0, 0, slot(2), None, None),
        ("global.set", True, False, None, 0, 0, None, None, 0),
    ]
    # Every one is a patch site, and cached on the EngineCode.
    assert all(table.site_index(s.native_offset) is not None for s in found)
    assert access_sites(module.engine_code, module.wasm) is sites


def test_inspect_shows_what_a_watch_check_reads_at_each_access_site(tmp_path):
    import io

    import wasmtime

    from gdbstub.inspect import inspect_module

    path = tmp_path / "access.wasm"
    path.write_bytes(wasmtime.wat2wasm(ACCESS_WAT))
    out = io.StringIO()
    assert inspect_module(str(path), "f", out=out, err=io.StringIO()) == 0
    checks = [line.split("watch check: ", 1)[1] for line in out.getvalue().splitlines() if "watch check:" in line]
    assert len(checks) == 8
    assert re.fullmatch(r"i32\.store addr=\[rbp-\d+\]\+0x8 size=4", checks[0]), checks
    assert re.fullmatch(r"memory\.copy addr=\[rbp-\d+\] len=\[rbp-\d+\] src=\[rbp-\d+\]", checks[5]), checks
    assert checks[7] == "global.set global=0"


STORE_WAT = """(module (memory (export "memory") 1)
  (func (export "f") (param $p i32) (param $v i32) (result i32)
    (i32.store offset=4 (local.get $p) (local.get $v))
    (i32.add (i32.load offset=4 (local.get $p)) (local.get $v))))"""


def access_check_in_form(access, form: str):
    """An AccessCheck of ``access`` that HookArea builds as ``form``: the
    stub, the standalone veneer (forced by marking one register of each
    shared routine live) or the generic veneer (neither offered)."""
    import dataclasses

    from codemem.sitehooks import AccessCheck

    if form == "standalone":
        blocked = access.live_mask
        for triple in sitehooks.ACCESS_ROUTINE_REGISTERS:
            if not any(blocked >> r & 1 for r in triple):
                blocked |= 1 << next(r for r in triple if r not in (Reg.RDX, Reg.R9, Reg.R10))
        access = dataclasses.replace(access, live_mask=blocked)
    check = AccessCheck(access)
    if form == "generic":
        check.stub = None  # the instance attribute hides the method: neither a stub...
        check.emit_standalone = lambda e: False  # ...nor the standalone veneer
    return check


@pytest.mark.parametrize("form", ["stub", "standalone", "generic"])
def test_every_form_of_an_access_check_sees_a_hit_and_leaves_the_guest_intact(form):
    """The stub, the standalone veneer (when no shared routine's registers are
    free: forced here by marking one register of each routine live) and the
    generic veneer, at a real store site, with the watch table in front."""
    import wasmtime

    from codemem.sitehooks import hook_area_for

    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    instance = codemem.Instance(store, codemem.Module(engine, bytes(wasmtime.wat2wasm(STORE_WAT))), [])
    code = instance.store_code
    access = next(a for a in access_sites(code.engine_code, instance.module.wasm).values() if a.writes)
    check = access_check_in_form(access, form)
    area = hook_area_for(code)
    area.set_watches([(0x104, 0x108, sitehooks.WATCH_WRITE)], instance.memories[0].definition_address)
    site = code.base + access.native_offset
    stops = []
    store.debug_handler = lambda kind, c, regfile, vmctx: stops.append(area.take_hit())
    moved = area.build(site, [check], compact_ok=True)
    address, size = area.veneers[site]
    carrier = code.carrier_store_at(site)  # a carrier site's veneer stores it first (VeneerEmitter)
    skip = 0 if carrier is None else len(sitehooks.carrier_store_bytes(carrier))
    first = bytes(ffi.buffer(ffi.cast("char *", address + skip), 1))
    assert (size == 32) == (form == "stub"), size
    assert (first == b"\x9c") == (form == "generic"), first  # only the generic veneer saves (pushfq first)
    with store.registry.patch_edit() as edit:
        for pc, address in moved.items():
            edit.redirect_site(code, pc, address)
    f = instance.exports["f"]
    assert f(0x200, 5) == 10 and not stops          # outside the watched range
    assert f(0x100, 7) == 14                         # writes [0x104, 0x108)
    assert stops == [(sitehooks.HIT_ACCESS, 0, 0x104, 4, 0)]
    assert f(0x101, 1) == 2 and len(stops) == 2      # [0x105, 0x109) overlaps
    assert stops[1][:4] == (sitehooks.HIT_ACCESS, 0, 0x105, 4)
    store.close()


CARRIER_LOAD_WAT = """(module (memory (export "memory") 1)
  (func (export "f") (param $p i32) (param $v i32) (result i32)
    (i32.store offset=4 (local.get $p) (local.get $v))
    (i32.add (local.get $v) (i32.load (i32.add (local.get $p) (i32.const 4))))))"""


@pytest.mark.parametrize("form", ["stub", "standalone", "generic"])
def test_every_form_of_an_access_check_at_a_carrier_site_performs_the_store_before_reading_the_address(form):
    """At a carrier-store site (codemem.frametable.CarrierStore) the site's
    call replaced the store of the ``i32.add`` result, the load's address, to
    its slot (which held ``$p`` before it): each veneer form stores it first
    (``mov [rsp+disp+8], reg``), so the watch check reads the address, not
    ``$p``, and the guest still computes its result."""

    import wasmtime

    from codemem.sitehooks import carrier_store_bytes, hook_area_for

    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    instance = codemem.Instance(store, codemem.Module(engine, bytes(wasmtime.wat2wasm(CARRIER_LOAD_WAT))), [])
    code = instance.store_code
    access = next(a for a in access_sites(code.engine_code, instance.module.wasm).values() if a.reads)
    site = code.base + access.native_offset
    carrier = code.carrier_store_at(site)
    assert carrier is not None and carrier.slot == 1, "the load's site is no longer a carrier store (codegen changed)"
    assert carrier_store_bytes(carrier) == bytes((0x48 | (carrier.register >> 3) << 2, 0x89,
                                                  0x44 | (carrier.register & 7) << 3, 0x24, carrier.disp + 8))
    check = access_check_in_form(access, form)
    area = hook_area_for(code)
    area.set_watches([(0x104, 0x108, sitehooks.WATCH_READ)], instance.memories[0].definition_address)
    stops = []
    store.debug_handler = lambda kind, c, regfile, vmctx: stops.append(area.take_hit())
    moved = area.build(site, [check], compact_ok=True)
    address, size = area.veneers[site]
    # Every form starts with the store.
    assert bytes(ffi.buffer(ffi.cast("char *", address), 5)) == carrier_store_bytes(carrier)
    with store.registry.patch_edit() as edit:
        for pc, where in moved.items():
            edit.redirect_site(code, pc, where)
    f = instance.exports["f"]
    assert f(0x100, 7) == 14 and stops == [(sitehooks.HIT_ACCESS, 0, 0x104, 4, 0)]  # reads [0x104, 0x108)
    assert f(0x200, 5) == 10 and len(stops) == 1
    assert f(0x101, 1) == 2 and len(stops) == 2 and stops[1][:4] == (sitehooks.HIT_ACCESS, 0, 0x105, 4)
    assert f(0x104, 3) == 6 and len(stops) == 2   # reads [0x108, 0x10c): $p alone would be a hit
    store.close()


#: The load's site carries local 2's store (a near local.set); the call after
#: it clears the register cache, so ``local.get 2`` reads the home: the result
#: is $v only if whoever took the site's call stored it.
LOCAL_CARRIER_LOAD_WAT = """(module (memory (export "memory") 1)
  (func $id (param i32) (result i32) local.get 0)
  (func (export "f") (param $p i32) (param $v i32) (result i32) (local i32)
    local.get $p
    local.get $v
    local.set 2
    i32.load
    i32.const 0
    call $id
    drop
    local.get 2
    i32.add))"""
#: The load's site carries a far local.tee's copy to local 9's mirror, which
#: ``local.get 9`` reads: the result is mem[$v] + $v only if the copy was made.
MOVE_CARRIER_LOAD_WAT = """(module (memory (export "memory") 1)
  (func (export "f") (param $p i32) (param $v i32) (result i32) (local i32 i32 i32 i32 i32 i32 i32 i32)
    local.get $v
    local.tee 9
    i32.load
    local.get 9
    i32.add))"""


@pytest.mark.parametrize("form", ["stub", "standalone", "generic"])
@pytest.mark.parametrize("kind", ["local", "move"])
def test_every_form_of_an_access_check_at_a_local_or_move_carrier_performs_it(kind, form):
    """At a local or move carrier (codemem.frametable.CarrierStore) the
    site's call replaced a local.set's store to the local's home or a tee's
    copy to the local's mirror: each veneer form performs it first, so the
    guest computes its result whether the check falls through or hits."""
    import wasmtime

    from codemem.sitehooks import carrier_store_bytes, hook_area_for

    wat = LOCAL_CARRIER_LOAD_WAT if kind == "local" else MOVE_CARRIER_LOAD_WAT
    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    instance = codemem.Instance(store, codemem.Module(engine, bytes(wasmtime.wat2wasm(wat))), [])
    code = instance.store_code
    access = next(a for a in access_sites(code.engine_code, instance.module.wasm).values() if a.reads)
    site = code.base + access.native_offset
    carrier = code.carrier_store_at(site)
    assert carrier is not None and carrier.kind == kind, "the load's site is no longer that carrier (codegen changed)"
    check = access_check_in_form(access, form)
    area = hook_area_for(code)
    area.set_watches([(0x104, 0x108, sitehooks.WATCH_READ)], instance.memories[0].definition_address)
    stops = []
    store.debug_handler = lambda kind, c, regfile, vmctx: stops.append(area.take_hit())
    moved = area.build(site, [check], compact_ok=True)
    address, size = area.veneers[site]
    performed = carrier_store_bytes(carrier)  # mov [rbp+disp], reg / mov target, reg
    assert bytes(ffi.buffer(ffi.cast("char *", address), len(performed))) == performed
    with store.registry.patch_edit() as edit:
        for pc, where in moved.items():
            edit.redirect_site(code, pc, where)
    f = instance.exports["f"]
    memory = instance.memories[0]
    ffi.cast("uint32_t *", memory.base + 0x200)[0] = 1000
    ffi.cast("uint32_t *", memory.base + 0x104)[0] = 2000
    if kind == "local":
        assert f(0x200, 5) == 1005 and not stops  # falls through: the veneer's store alone
        assert f(0x104, 7) == 2007 and len(stops) == 1  # a hit: the veneer's and the prelude's
    else:
        assert f(0, 0x200) == 1000 + 0x200 and not stops
        assert f(0, 0x104) == 2000 + 0x104 and len(stops) == 1
    assert stops[0][:4] == (sitehooks.HIT_ACCESS, 0, 0x104, 4)
    store.close()


def test_a_full_hook_arena_is_compacted_while_the_guest_is_stopped(monkeypatch):
    """New veneers go to fresh bytes; when the arena is full, a build that is
    allowed to compact (the guest is stopped) rebuilds every live veneer from
    the start and says where each moved; one that is not refuses."""
    import wasmtime

    from codemem.errors import CodeMemoryError
    from codemem.sitehooks import hook_area_for
    from gdbstub.agent_x64 import ConditionCheck
    from gdbstub.protocol.agentexpr import parse_agent_expr

    monkeypatch.setattr(sitehooks, "CODE_SIZE", 64 * 1024)
    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    instance = codemem.Instance(store, codemem.Module(engine, bytes(wasmtime.wat2wasm(STORE_WAT))), [])
    code = instance.store_code
    area = hook_area_for(code)
    sites = [code.base + off for off in code.frame_table.site_offsets[:2]]
    stops = []
    store.debug_handler = lambda kind, c, regfile, vmctx: stops.append(area.take_hit()[0])

    def condition(value: int):  # `value == 7`: distinct bytecode each time, so no veneer is reused
        return ConditionCheck(parse_agent_expr(bytes([0x24]) + value.to_bytes(4, "big") + b"\x22\x07\x13\x27"), 0)

    def install(site, check, compact_ok=True):
        moved = area.build(site, [check], compact_ok=compact_ok)
        with store.registry.patch_edit() as edit:
            for pc, address in moved.items():
                edit.redirect_site(code, pc, address)
        return moved

    install(sites[1], condition(7))      # always true: stops at every call
    value = 100
    while True:
        value += 1
        moved = install(sites[0], condition(value))
        if len(moved) > 1:
            break  # compacted: both sites' veneers were rebuilt
    assert set(moved) == set(sites) and min(moved.values()) < area.base + 4096
    assert instance.exports["f"](0x200, 5) == 10 and stops == [sitehooks.HIT_CONDITION]
    # Running guests are never compacted under: the build refuses instead.
    while True:
        value += 1
        try:
            install(sites[0], condition(value), compact_ok=False)
        except CodeMemoryError as e:
            assert "full" in str(e)
            break
    store.close()


#: The add's site is a producer carrier (the constant's load, its slot store
#: left out): the result is $x + 7 only if whoever took the site's call loaded it.
PRODUCER_WAT = """(module
  (func (export "f") (param $x i32) (result i32)
    local.get $x
    i32.const 7
    i32.add))"""


@pytest.mark.parametrize("hit", [False, True])
def test_a_condition_check_at_a_producer_carrier_performs_it(hit):
    """At a producer carrier (codemem.frametable.CarrierStore) the site's call
    replaced a constant's load: the veneer loads it and stores it to the top
    slot first, so the guest computes its result whether the condition is
    false (falls through) or true (a stop, whose prelude performs it again)."""
    import wasmtime

    from codemem.sitehooks import carrier_store_bytes, hook_area_for
    from gdbstub.agent_x64 import ConditionCheck
    from gdbstub.protocol.agentexpr import parse_agent_expr

    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    instance = codemem.Instance(store, codemem.Module(engine, bytes(wasmtime.wat2wasm(PRODUCER_WAT))), [])
    code = instance.store_code
    table = code.frame_table
    (index,) = [k for k in range(table.num_sites) if table.site(k).disable[0] & 0xF8 == 0xB8]
    site = code.base + table.site(index).offset
    carrier = code.carrier_store_at(site)
    assert carrier is not None and carrier.kind == "producer" and carrier.immediate == 7
    area = hook_area_for(code)
    stops = []
    store.debug_handler = lambda kind, c, regfile, vmctx: stops.append(area.take_hit()[0])
    value = 7 if hit else 8  # `value == 7`
    check = ConditionCheck(parse_agent_expr(bytes([0x24]) + value.to_bytes(4, "big") + b"\x22\x07\x13\x27"), 0)
    moved = area.build(site, [check], compact_ok=True)
    address, _ = area.veneers[site]
    performed = carrier_store_bytes(carrier)  # mov r32, imm32; mov [rsp+disp+8], r64
    assert bytes(ffi.buffer(ffi.cast("char *", address), len(performed))) == performed
    with store.registry.patch_edit() as edit:
        for pc, where in moved.items():
            edit.redirect_site(code, pc, where)
    assert instance.exports["f"](5) == 12
    assert instance.exports["f"](100) == 107
    assert stops == ([sitehooks.HIT_CONDITION] * 2 if hit else [])
    store.close()
