"""Code shapes of the register cache's second round (codemem/x64/compiler.py,
regcache.py, numeric.py) and the debugger contract they must keep.

* xmm0 reuse: a float instruction whose operand xmm0 probably holds verifies
  the guess against the operand's mirror register and reloads on mismatch,
  so a debugger's write to the slot (reloaded into the mirror on resume) wins.
* Labels keep the cache entries every incoming edge agrees on; loop back edges
  re-establish the loop header's entries.
* Memory 0's base and length live in cache registers (recorded as context
  mirrors) and are reloaded after memory.grow.
* Carriers (docs/compiler-speed.md): a deferred carrier names a slot store
  the code leaves out; a local carrier (a local.set's store to a home within
  disp8 of rbp) and a move carrier (a far local.tee's copy to the local's
  mirror) are the site; a stop at any of them performs it, and a debugger's
  write at the stop wins.
"""
from __future__ import annotations

import struct

import capstone
import pytest
import wasmtime

import codemem
from stepkit import GPR_INDEX, INSTRUCTION, check_mirrors, debug_instance, step_everything, u64
from codemem.frametable import (RBP_REGISTER, SITE_DISABLED, CarrierStore, FrameTable, carrier_bytes,
                                carrier_store, deferred_carrier_bytes)
from codemem.native import ffi
from codemem.wasm.decoder import decode_module
from codemem.x64.compiler import compile_module, local_offset


def _f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _write_at_stop(wat: str, opcode: int, nth: int, slot_of, value: int, reload: bool, args=(10,)):
    """Run f(*args); at the ``nth`` stop before an instruction with ``opcode``
    write ``value`` to the slot ``slot_of(point, func)`` names, then reload
    every mirror register from its slot if ``reload`` (what the stub does)."""
    wasm = wasmtime.wat2wasm(wat)
    store, instance = debug_instance(wasm)
    seen = []

    def on_stop(point, regfile, func):
        if wasm[point.wasm_offset] != opcode:
            return
        seen.append(point)
        if len(seen) != nth + 1:
            return
        rbp = regfile.gpr[GPR_INDEX["rbp"]]
        ffi.cast("uint64_t *", rbp + slot_of(point, func))[0] = value
        if reload:
            for name, offset in point.mirrors:
                regfile.gpr[GPR_INDEX[name]] = u64(rbp + offset)

    step_everything(store, instance, on_stop)
    result = instance.exports["f"](*args)
    store.close()
    assert len(seen) > nth, "never reached the chosen stop"
    return result


def _disassemble(wat: str) -> list[str]:
    """``mnemonic op_str`` of every instruction of the (only) function, debug mode."""
    cm = compile_module(decode_module(wasmtime.wat2wasm(wat)), debug=True)
    func = FrameTable(cm.frame_table).function(0)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    code = cm.code[func.native_start:func.native_end]
    return [f"{i.mnemonic} {i.op_str}" for i in md.disasm(code, func.native_start)]


FLOAT_CHAIN = """
(module
  (func (export "f") (param i32) (result i32)
    local.get 0
    f32.convert_i32_s
    f32.const 2
    f32.mul
    i32.trunc_f32_s))
"""
_F32_MUL = 0x94


def test_a_float_chain_reuses_xmm0_after_checking_it():
    text = _disassemble(FLOAT_CHAIN)
    # The mul's first operand is the conversion's result, still in xmm0: it is
    # compared with its mirror register, not reloaded from it, on the fast path.
    tail = text[next(i for i, t in enumerate(text) if t.startswith("cvtsi2ss xmm0")):]
    check = next(i for i, t in enumerate(tail) if t == "movd eax, xmm0")
    assert tail[check + 1].startswith("cmp eax, ") and tail[check + 2].startswith("je ")
    assert tail[check + 3].startswith("movd xmm0, ")  # the slow path: reload from the register
    assert any(t.startswith("mulss xmm0, ") for t in tail[check + 4:])
    store, instance = debug_instance(wasmtime.wat2wasm(FLOAT_CHAIN))
    assert instance.exports["f"](21) == 42 and instance.exports["f"](-3) == -6
    store.close()


def test_a_debugger_write_to_a_float_operand_is_honoured_despite_xmm0_reuse():
    # Stop before the f32.mul: the stack is [x, 2.0]; overwrite x (its mirror
    # is reloaded on resume, xmm0 still holds the old x): the check must see it.
    x_slot = lambda point, func: func.operand_slot_offset(point.stack_depth - 2)  # noqa: E731
    assert _write_at_stop(FLOAT_CHAIN, _F32_MUL, 0, x_slot, _f32_bits(100.0), reload=True) == 200
    # Without the reload the mirror is stale too and the guest computes 10*2:
    # the reload (not the slot) is what the code reads, as for integer mirrors.
    assert _write_at_stop(FLOAT_CHAIN, _F32_MUL, 0, x_slot, _f32_bits(100.0), reload=False) == 20


def test_a_float_loaded_from_memory_is_checked_too():
    wat = """
    (module (memory 1)
      (func (export "f") (param i32) (result i32)
        i32.const 8
        local.get 0
        f32.convert_i32_s
        f32.store
        i32.const 8
        f32.load
        f32.const 3
        f32.mul
        i32.trunc_f32_s))
    """
    x_slot = lambda point, func: func.operand_slot_offset(point.stack_depth - 2)  # noqa: E731
    assert _write_at_stop(wat, _F32_MUL, 0, x_slot, _f32_bits(7.0), reload=True) == 21
    store, instance = debug_instance(wasmtime.wat2wasm(wat))
    assert instance.exports["f"](5) == 15
    store.close()


BLOCKS = """
(module
  (func (export "f") (param i32) (result i32) (local i32)
    local.get 0
    i32.const 3
    i32.add
    local.set 1
    block
      nop
    end
    block
      local.get 0
      br_if 0
      i32.const 7
      local.set 1
    end
    local.get 1))
"""


def test_a_block_end_only_the_fallthrough_reaches_keeps_the_mirrors():
    wasm = wasmtime.wat2wasm(BLOCKS)
    table = codemem.Module(codemem.Engine(debug=True), wasm).engine_code.frame_table
    func = table.function(0)
    ends = [p for p in table.sequence_points(func) if p.kind == INSTRUCTION and wasm[p.wasm_offset] == 0x0B]
    local1 = -(72 + 16)
    # First end: no branch targets it, the cache (local 1 in a register) survives.
    assert any(offset == local1 for _, offset in ends[0].mirrors), ends[0]
    # Second end: the br_if edge has local 1 in one register, the fallthrough
    # (after local.set 1 = 7) in another: the merge keeps neither.
    assert not any(offset == local1 for _, offset in ends[1].mirrors), ends[1]
    store, instance = debug_instance(wasm)
    assert instance.exports["f"](0) == 7 and instance.exports["f"](5) == 8
    store.close()


LOOP = """
(module
  (func (export "f") (param i32) (result i32) (local i32 i32)
    i32.const 0
    local.set 2
    loop
      local.get 1
      local.get 2
      i32.add
      local.set 1
      local.get 2
      i32.const 1
      i32.add
      local.tee 2
      local.get 0
      i32.lt_s
      br_if 0
    end
    local.get 1))
"""


def test_a_loop_keeps_locals_in_registers_across_the_back_edge():
    wasm = wasmtime.wat2wasm(LOOP)
    table = codemem.Module(codemem.Engine(debug=True), wasm).engine_code.frame_table
    points = [p for p in table.sequence_points(table.function(0)) if p.kind == INSTRUCTION]
    first_in_loop = next(p for p in points if wasm[p.wasm_offset] == 0x20)  # local.get 1
    # The header keeps what the entry had cached and the body reads: local 2
    # (set just before the loop), so the body's local.get 2 needs no load.
    assert any(offset == -(72 + 24) for _, offset in first_in_loop.mirrors), first_in_loop
    store, instance = debug_instance(wasm)
    assert instance.exports["f"](10) == 45
    store.close()


def test_a_debugger_write_to_a_local_inside_a_loop_is_used_by_later_iterations():
    # Four local.get per iteration; stop at iteration 2's `local.get 0` (i is 3
    # there, sum 0+1+2) and set i to 8: the next iterations add 8 and 9.
    counter = lambda point, func: -(72 + 24)  # noqa: E731  local 2
    assert _write_at_stop(LOOP, 0x20, 4 * 2 + 3, counter, 8, reload=True) == 0 + 1 + 2 + 8 + 9


def test_every_mirror_holds_its_slot_with_merges_loops_and_br_table():
    wat = """
    (module (memory 1)
      (func (export "f") (param i32) (result i32) (local i32 i32 f32)
        loop $outer
          block $b2
            block $b1
              block $b0
                local.get 1
                i32.const 3
                i32.rem_u
                br_table $b0 $b1 $b2
              end
              local.get 2
              i32.const 5
              i32.add
              local.set 2
              br $b2
            end
            local.get 2
            i32.const 2
            i32.mul
            local.set 2
          end
          local.get 1
          i32.const 4
          i32.mul
          local.get 2
          i32.store
          local.get 3
          local.get 1
          f32.convert_i32_s
          f32.add
          local.set 3
          local.get 1
          i32.const 1
          i32.add
          local.tee 1
          local.get 0
          i32.lt_s
          if (result i32)
            local.get 2
          else
            local.get 1
          end
          drop
          local.get 1
          local.get 0
          i32.lt_s
          br_if $outer
        end
        local.get 2
        local.get 3
        i32.trunc_f32_s
        i32.add))
    """
    wasm = wasmtime.wat2wasm(wat)
    store, instance = debug_instance(wasm)
    checked = []

    def on_stop(point, regfile, func):
        checked.extend(check_mirrors(instance, point, regfile, func)[0])

    step_everything(store, instance, on_stop)
    result = instance.exports["f"](12)
    store.close()
    reference = wasmtime.Instance(s := wasmtime.Store(), wasmtime.Module(s.engine, wasm), [])
    assert result == reference.exports(s)["f"](s, 12)
    assert len(checked) > 50


def test_memory_length_is_reloaded_after_memory_grow_in_a_loop():
    # The store before the loop caches memory's base and length, the loop header
    # keeps them; each iteration stores at the end of the current memory, then
    # grows it: a length not re-established on the back edge would trap.
    wat = """
    (module (memory 1 8)
      (func (export "f") (param i32) (result i32) (local i32)
        i32.const 0
        i32.const 1
        i32.store
        loop
          memory.size
          i32.const 65536
          i32.mul
          i32.const 4
          i32.sub
          local.get 1
          i32.store
          i32.const 1
          memory.grow
          drop
          local.get 1
          i32.const 1
          i32.add
          local.tee 1
          local.get 0
          i32.lt_u
          br_if 0
        end
        memory.size)
      (func (export "oob") (result i32)
        i32.const 393214
        i32.load))
    """
    for debug in (True, False):
        engine = codemem.Engine(debug=debug)
        store = codemem.Store(engine)
        instance = codemem.Instance(store, codemem.Module(engine, wasmtime.wat2wasm(wat)), [])
        assert instance.exports["f"](5) == 6
        with pytest.raises(codemem.Trap):
            instance.exports["oob"]()  # 6 pages: the 4 bytes at 393214 cross the end
        store.close()


TRUNC_SIGNED = """
(module
  (func (export "f32_i32") (param f32) (result i32) local.get 0 i32.trunc_f32_s)
  (func (export "f64_i32") (param f64) (result i32) local.get 0 i32.trunc_f64_s)
  (func (export "f32_i64") (param f32) (result i64) local.get 0 i64.trunc_f32_s)
  (func (export "f64_i64") (param f64) (result i64) local.get 0 i64.trunc_f64_s))
"""


def test_a_signed_trunc_converts_first_and_checks_only_the_indefinite_result():
    text = _disassemble(TRUNC_SIGNED)
    at = next(i for i, t in enumerate(text) if t.startswith("cvttss2si eax, xmm0"))
    # In range: the conversion, one compare, one branch over the range checks.
    assert text[at + 1] == "cmp eax, 1" and text[at + 2].startswith("jno ")
    assert text[at + 3] == "ucomiss xmm0, xmm0"  # only for 0x80000000: NaN, overflow or the minimum


@pytest.mark.parametrize("debug", [False, True])
def test_a_signed_trunc_tells_the_minimum_from_nan_and_overflow(debug):
    # Each of these inputs makes cvtt* return the "integer indefinite" value
    # 0x80..0; only the first of each group is a valid truncation.
    engine = codemem.Engine(debug=debug)
    store = codemem.Store(engine)
    f = codemem.Instance(store, codemem.Module(engine, wasmtime.wat2wasm(TRUNC_SIGNED)), []).exports
    nan, inf = float("nan"), float("inf")
    cases = [
        ("f32_i32", -2147483648.0, -2**31), ("f32_i32", 2147483648.0, "overflow"),
        ("f32_i32", -2147483904.0, "overflow"), ("f32_i32", nan, "invalid"), ("f32_i32", -inf, "overflow"),
        ("f32_i32", 2147483520.0, 2147483520), ("f32_i32", -1.75, -1),
        ("f64_i32", -2147483648.9, -2**31), ("f64_i32", -2147483649.0, "overflow"),
        ("f64_i32", 2147483647.9, 2**31 - 1), ("f64_i32", 2147483648.0, "overflow"), ("f64_i32", nan, "invalid"),
        ("f32_i64", -9223372036854775808.0, -2**63), ("f32_i64", 9223372036854775808.0, "overflow"),
        ("f32_i64", nan, "invalid"), ("f64_i64", -9223372036854775808.0, -2**63),
        ("f64_i64", -9223372036854777856.0, "overflow"), ("f64_i64", 9223372036854774784.0, 9223372036854774784),
        ("f64_i64", inf, "overflow"),
    ]
    try:
        for name, value, expected in cases:
            if isinstance(expected, int):
                assert f[name](value) == expected, (name, value)
                continue
            with pytest.raises(codemem.Trap) as raised:
                f[name](value)
            message = "integer overflow" if expected == "overflow" else "invalid conversion to integer"
            assert raised.value.message == message, (name, value)
    finally:
        store.close()


#: A constant the next instruction consumes: a producer carrier (its load is the add's site).
PRODUCER = """
(module
  (func (export "f") (param i32) (result i32)
    local.get 0
    i32.const 7
    i32.add))
"""
#: A product the next instruction consumes: a deferred carrier (a NOP naming its store).
DEFERRED = """
(module
  (func (export "f") (param i32) (result i32)
    local.get 0
    local.get 0
    i32.const 7
    i32.mul
    i32.add))
"""
_I32_ADD = 0x6A


def test_a_constant_the_next_instruction_consumes_is_never_stored_without_debugging():
    # The const's slot is live only at the add's point (the add pops it and
    # reads it from its register), and without debugging nothing stops there.
    cm = compile_module(decode_module(wasmtime.wat2wasm(PRODUCER)), debug=False)
    func = FrameTable(cm.frame_table).function(0)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    text = [f"{i.mnemonic} {i.op_str}" for i in md.disasm(cm.code[func.native_start:func.native_end], 0)]
    at = next(i for i, t in enumerate(text) if t.endswith(", 7"))
    assert text[at + 1].startswith("add ")  # not `mov qword ptr [rsp + 8], ...`


def test_a_deferred_carrier_site_names_the_store_and_a_stop_there_performs_it():
    cm = compile_module(decode_module(wasmtime.wat2wasm(DEFERRED)), debug=True)
    table = FrameTable(cm.frame_table)
    deferred = [table.site(k) for k in range(table.num_sites)
                if table.site(k).disable[:3] == b"\x0f\x1f\x44" and table.site(k).carrier is not None]
    assert len(deferred) == 1 and deferred[0].carrier.slot == 1  # slot 1: the product, before the add
    assert deferred_carrier_bytes(deferred[0].carrier) == deferred[0].disable
    # Stop at the add (every site enabled): the breakpoint prelude stored the
    # product from its register, so the slot a debugger reads holds 5 * 7.
    seen = []
    store, instance = debug_instance(wasmtime.wat2wasm(DEFERRED))

    def on_stop(point, regfile, f):
        if point.native_offset == deferred[0].offset:
            seen.append(ffi.cast("uint64_t *", regfile.gpr[GPR_INDEX["rbp"]]
                                 + f.operand_slot_offset(point.stack_depth - 1))[0])

    step_everything(store, instance, on_stop)
    assert instance.exports["f"](5) == 40
    store.close()
    assert seen == [35]


def test_a_constant_the_next_instruction_consumes_is_its_load_as_the_site_and_a_stop_there_stores_it():
    cm = compile_module(decode_module(wasmtime.wat2wasm(PRODUCER)), debug=True)
    table = FrameTable(cm.frame_table)
    (site,) = [k for k in range(table.num_sites) if table.site(k).disable[0] & 0xF8 == 0xB8]
    carried = table.site_carrier(site)
    assert carried.kind == "producer" and carried.immediate == 7 and carried.slot == 1
    offset = table.site(site).offset
    assert cm.code[offset:offset + 5] == bytes((0xB8 | carried.register & 7,)) + (7).to_bytes(4, "little")
    assert carried.register < 8 or cm.code[offset - 1] == 0x41  # a REX.B stays before the site
    # Nothing stores the constant in the code: only a stop at the add does.
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    after = next(md.disasm(cm.code[offset + 5:offset + 20], 0))
    assert after.mnemonic == "add", after
    # Stop at the add (every site enabled): the breakpoint prelude loaded the
    # constant and stored it, so the slot and the register hold 7.
    seen = []
    store, instance = debug_instance(wasmtime.wat2wasm(PRODUCER))

    def on_stop(point, regfile, f):
        if point.native_offset == offset:
            slot = ffi.cast("uint64_t *", regfile.gpr[GPR_INDEX["rbp"]] + f.operand_slot_offset(point.stack_depth - 1))
            seen.append((slot[0], regfile.gpr[carried.regfile_index]))

    step_everything(store, instance, on_stop)
    assert instance.exports["f"](5) == 12
    store.close()
    assert seen == [(7, 7)]


def test_a_debugger_write_to_a_producers_slot_is_honoured():
    # At the add's stop the slot is the truth: the mirror is reloaded from it.
    y_slot = lambda point, func: func.operand_slot_offset(point.stack_depth - 1)  # noqa: E731
    assert _write_at_stop(PRODUCER, _I32_ADD, 0, y_slot, 100, reload=True, args=(5,)) == 105


def test_producer_bytes_decode_for_every_register_and_constant():
    for register in range(8):
        for immediate in (0, 7, 0x8000_0000, 0xFFFF_FFFF):
            raw = carrier_bytes(CarrierStore(register, 8, immediate=immediate))
            assert raw[0] == 0xB8 | register and raw != SITE_DISABLED
            decoded = carrier_store(raw)  # the bytes alone: the low bits, no slot (FrameTable.site_carrier)
            assert decoded == CarrierStore(register, -1, immediate=immediate) and decoded.kind == "producer"
            (only,) = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(raw, 0)
            assert only.mnemonic == "mov" and only.size == 5
    # Enabled behind a REX.B, the site is still one call to site + 5 + rel32.
    (call,) = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(b"\x41\xe8\x10\x00\x00\x00", 0)
    assert call.mnemonic == "call" and call.size == 6 and call.op_str == "0x16"


def test_a_debugger_write_to_a_deferred_slot_is_honoured():
    # At the add's stop the slot is the truth: the mirror is reloaded from it.
    y_slot = lambda point, func: func.operand_slot_offset(point.stack_depth - 1)  # noqa: E731
    assert _write_at_stop(DEFERRED, _I32_ADD, 0, y_slot, 100, reload=True, args=(5,)) == 105


def test_deferred_carrier_bytes_decode_for_every_cache_register_and_slot():
    for register in (3, 6, 7, 8, 9, 10, 11, 12, 13, 14):
        for disp in range(0, 128, 8):
            carried = CarrierStore(register, disp)
            raw = deferred_carrier_bytes(carried)
            assert raw[:3] == b"\x0f\x1f\x44" and raw != SITE_DISABLED and carrier_store(raw) == carried
            # One 5-byte NOP (SDM Vol. 2B NOP: 0F 1F /0), whatever it names.
            (only,) = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(raw, 0)
            assert only.mnemonic == "nop" and only.size == 5
    assert deferred_carrier_bytes(CarrierStore(10, 8)) == bytes.fromhex("0f1f445408")


LOCAL_CARRIER = """
(module
  (func (export "f") (param i32) (result i32) (local i32)
    local.get 0
    i32.const 3
    i32.mul
    local.set 1
    local.get 1
    i32.const 1
    i32.add))
"""
#: Local 8 is past disp8 of rbp (locals 0-6 are within it): its tee's copy to
#: the local's mirror register is the carrier.
MOVE_CARRIER = """
(module
  (func (export "f") (param i32) (result i32) (local i32 i32 i32 i32 i32 i32 i32 i32)
    local.get 0
    i32.const 3
    i32.mul
    local.tee 8
    local.get 8
    i32.add))
"""
_LOCAL_GET = 0x20


def _sites_of_kind(wat: str, kind: str) -> list:
    cm = compile_module(decode_module(wasmtime.wat2wasm(wat)), debug=True)
    table = FrameTable(cm.frame_table)
    return [table.site(k) for k in range(table.num_sites)
            if table.site(k).carrier is not None and table.site(k).carrier.kind == kind]


def test_a_local_set_to_a_near_home_is_the_next_points_site():
    (site,) = _sites_of_kind(LOCAL_CARRIER, "local")
    assert site.carrier == CarrierStore(site.carrier.register, local_offset(1), RBP_REGISTER)
    assert site.disable[0] == 0x3E and site.disable[2] == 0x89  # ds mov [rbp+disp8], r64
    # Without debugging: the same store without its DS prefix, no NOP instead.
    cm = compile_module(decode_module(wasmtime.wat2wasm(LOCAL_CARRIER)), debug=False)
    assert site.disable[1:] in cm.code and site.disable not in cm.code


def test_a_stop_at_a_local_carrier_finds_the_local_stored():
    (site,) = _sites_of_kind(LOCAL_CARRIER, "local")
    seen = []
    store, instance = debug_instance(wasmtime.wat2wasm(LOCAL_CARRIER))

    def on_stop(point, regfile, func):
        if point.native_offset == site.offset:
            home = instance.store_code.frame_table.locals(func)[1].frame_offset
            seen.append(u64(regfile.gpr[GPR_INDEX["rbp"]] + home))
            check_mirrors(instance, point, regfile, func)

    step_everything(store, instance, on_stop)
    assert instance.exports["f"](5) == 16
    store.close()
    assert seen == [15]  # the call replaced the store; the prelude performed it


def test_a_debugger_write_to_the_local_at_its_carrier_wins():
    home = lambda point, func: local_offset(1)  # noqa: E731
    # The second local.get's stop (local.get 1) is the carrier site.
    assert _write_at_stop(LOCAL_CARRIER, _LOCAL_GET, 1, home, 100, reload=True, args=(5,)) == 101


def test_a_far_local_tee_copy_to_its_mirror_is_the_next_points_site():
    (site,) = _sites_of_kind(MOVE_CARRIER, "move")
    carried = site.carrier
    assert site.disable[:2] == b"\x3e\x3e" and carried.target not in (carried.register, 4, 5)
    assert not _sites_of_kind(MOVE_CARRIER, "local")  # local 8's home is beyond disp8
    seen = []
    store, instance = debug_instance(wasmtime.wat2wasm(MOVE_CARRIER))

    def on_stop(point, regfile, func):
        if point.native_offset == site.offset:
            home = instance.store_code.frame_table.locals(func)[8].frame_offset
            # The frame table says the move's target mirrors local 8 here, and
            # the prelude made it so in the regfile the resume loads.
            assert (GPR_NAMES[carried.target], home) in point.mirrors
            seen.append(regfile.gpr[GPR_INDEX[GPR_NAMES[carried.target]]])
            check_mirrors(instance, point, regfile, func)

    step_everything(store, instance, on_stop)
    assert instance.exports["f"](5) == 30
    store.close()
    assert seen == [15]


def test_a_debugger_write_to_the_local_at_a_move_carrier_wins():
    home = lambda point, func: local_offset(8)  # noqa: E731
    # local.get 8 reads the mirror the move loaded, reloaded from the home on resume.
    assert _write_at_stop(MOVE_CARRIER, _LOCAL_GET, 1, home, 100, reload=True, args=(5,)) == 115


def test_locals_0_to_6_get_local_carriers_and_7_does_not():
    sets = "".join(f"local.get 0 i32.const {k} i32.add local.set {k + 1} " for k in range(8))
    wat = f'(module (func (export "f") (param i32) (result i32) (local {"i32 " * 8}) {sets} local.get 8))'
    homes = sorted(site.carrier.disp for site in _sites_of_kind(wat, "local"))
    assert homes == sorted(local_offset(k) for k in range(1, 7))  # local 7's home is at rbp-136
    assert local_offset(6) >= -128 > local_offset(7)
    for debug in (False, True):
        engine = codemem.Engine(debug=debug)
        store = codemem.Store(engine)
        assert codemem.Instance(store, codemem.Module(engine, wasmtime.wat2wasm(wat)), []).exports["f"](1) == 8
        store.close()


GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{k}" for k in range(8, 16)))


def test_local_and_move_carrier_bytes_decode_for_every_register_and_home():
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for register in range(16):
        if register in (4, 5):
            continue
        for disp in range(-128, 0, 8):
            carried = CarrierStore(register, disp, RBP_REGISTER)
            raw = carrier_bytes(carried)
            assert carrier_store(raw) == carried and carried.kind == "local" and carried.slot is None
            (only,) = md.disasm(raw, 0)
            shown = f"{-disp:#x}" if -disp > 9 else str(-disp)  # capstone writes 8, 0x10
            assert (only.mnemonic, only.op_str) == ("mov", f"qword ptr ds:[rbp - {shown}], {GPR_NAMES[register]}")
        for target in range(16):
            if target in (4, 5, register):
                continue
            carried = CarrierStore(register, 0, None, target)
            raw = carrier_bytes(carried)
            assert carrier_store(raw) == carried and carried.kind == "move"
            (only,) = md.disasm(raw, 0)
            assert (only.mnemonic, only.op_str, only.size) == ("mov", f"{GPR_NAMES[target]}, {GPR_NAMES[register]}", 5)
    # Not carriers: a home that is no multiple of 8, rsp or rbp as a move's
    # source or target (a stop cannot replay those), and a move to itself.
    assert carrier_store(bytes.fromhex("3e48897d84")) is None
    assert carrier_store(bytes.fromhex("3e3e4889e7")) is None  # mov rdi, rsp
    assert carrier_store(bytes.fromhex("3e3e4889ef")) is None  # mov rdi, rbp
    assert carrier_store(bytes.fromhex("3e3e4889ff")) is None  # mov rdi, rdi
    assert carrier_store(bytes.fromhex("3e48897d80")) == CarrierStore(7, -128, RBP_REGISTER)
    assert carrier_store(bytes.fromhex("3e3e4d89c3")) == CarrierStore(8, 0, None, 11)  # mov r11, r8
