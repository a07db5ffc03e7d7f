"""Conditions, agent commands and watchpoints through GdbSession, in-process
(packets in, replies out; tests/test_session.py's harness): the bad-input
rules and what only the inside of the process can see."""
from __future__ import annotations

import re
import time

import pytest
import wasmtime

import codemem
from codemem import sitehooks
from test_session import GuestHarness, parse_stop, parse_stream

WAT = """(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $f (param $i i32) (result i32)
    (i32.store (i32.add (i32.const 0x100) (i32.shl (i32.and (local.get $i) (i32.const 7)) (i32.const 2)))
               (local.get $i))
    (local.get $i))
  (func (export "run") (param $n i32) (result i32)
    (local $k i32) (local $sum i32)
    (block $done (loop $top
       (br_if $done (i32.ge_u (local.get $k) (local.get $n)))
       (local.set $sum (i32.add (local.get $sum) (call $f (local.get $k))))
       (local.set $k (i32.add (local.get $k) (i32.const 1)))
       (br $top)))
    (drop (call $random (i32.const 0x2bc) (i32.const 32)))
    (i32.store (i32.const 0x200) (local.get $sum))
    (local.get $sum)))"""


@pytest.fixture(scope="module")
def module():
    engine = codemem.Engine(debug=True)
    return codemem.Module(engine, bytes(wasmtime.wat2wasm(WAT)), name="agent_session")


@pytest.fixture
def guest(module):
    harness = GuestHarness(module, "run", [8])
    harness.handshake()
    assert harness.ask(b"QEnableErrorStrings") == b"OK"
    yield harness
    harness.close()


def condition_packet(pc: int, *bytecodes: bytes) -> bytes:
    return b"Z0,%x,1" % pc + b"".join(b";X%x,%s" % (len(b), b.hex().encode()) for b in bytecodes)


ARG_IS = lambda value: bytes([0x26, 0, 4, 0x19, 0x22, value, 0x13, 0x27])  # noqa: E731  *(int *)$rsi == value


def error_text(reply: bytes) -> str:
    assert reply.startswith(b"E"), reply
    return bytes.fromhex(reply.split(b";", 1)[1].decode()).decode()


def test_the_stub_advertises_conditions_and_commands(module):
    harness = GuestHarness(module, "run", [1])
    try:
        reply = harness.ask(b"qSupported:multiprocess+;swbreak+")
        assert b"ConditionalBreakpoints+" in reply and b"BreakpointCommands+" in reply
        assert harness.ask(b"qWatchpointSupportInfo:") == b"num:%d;" % sitehooks.MAX_WATCHES
    finally:
        harness.close()


@pytest.mark.parametrize("bytecode, message", [
    (bytes([0xFF, 0x27]), "unknown opcode 0xff"),
    (bytes([0x02, 0x27]), "stack underflow"),
    (bytes([0x21, 0x00, 0x40]), "outside the expression"),
    (b"\x22\x01" * 101 + b"\x27", "stack overflow"),
    (b"\x22\x01\x29" * 1400 + b"\x27", "too long"),
])
def test_a_malformed_condition_is_refused_with_a_message_and_nothing_is_installed(guest, bytecode, message):
    pc = guest.entry_pc("f")
    reply = guest.ask(condition_packet(pc, ARG_IS(3), bytecode))
    assert message in error_text(reply)
    assert pc not in guest.target.breakpoints
    assert guest.code_is_pristine() and not guest.code.redirected_site_offsets()


def test_conditions_change_with_each_z0_and_any_true_one_stops(guest):
    pc = guest.entry_pc("f")
    assert guest.ask(condition_packet(pc, ARG_IS(2), ARG_IS(5))) == b"OK"
    # The site calls its own veneer, not the breakpoint veneer; reads hide it.
    offset = guest.code.offset_of(pc)
    assert offset in guest.code.redirected_site_offsets()
    assert guest.ask(b"m%x,5" % pc) == b"0f1f440000"
    seen = []
    for _ in range(2):
        reply = guest.resume(b"c")
        assert parse_stop(reply)[2].get("swbreak") == ""
        seen.append(int.from_bytes(bytes.fromhex(guest.ask(b"m%x,4" % int.from_bytes(
            bytes.fromhex(guest.ask(b"p4").decode()), "little")).decode()), "little"))
        if len(seen) == 1:
            assert guest.ask(condition_packet(pc, ARG_IS(6))) == b"OK"  # `condition N` arrives as a new Z0
    assert seen == [2, 6]
    assert guest.ask(b"z0,%x,1" % pc) == b"OK"
    assert not guest.code.redirected_site_offsets()
    assert parse_stop(guest.resume(b"c"))[0] == "W"


def test_an_unreadable_address_in_a_condition_stops_and_the_stop_says_why(guest):
    pc = guest.entry_pc("f")
    bad = bytes([0x25]) + (1 << 44).to_bytes(8, "big") + bytes([0x19, 0x27])  # *(int *)(1 << 44)
    assert guest.ask(condition_packet(pc, bad)) == b"OK"
    assert guest.send(b"c") == []
    items = []
    deadline = time.monotonic() + 10
    while not any(i.startswith(b"T") for i in items) and time.monotonic() < deadline:
        if guest.news.wait(0.02):
            guest.pump()
            items += parse_stream(guest.session.take_output())
    console = b"".join(bytes.fromhex(i[1:].decode()) for i in items if i.startswith(b"O"))
    assert b"cannot read memory at 0x100000000000" in console
    description = parse_stop(items[-1])[2]["description"]
    assert "could not be evaluated" in bytes.fromhex(description).decode()


def test_removing_a_watchpoint_that_is_not_set_is_ok_and_outside_memory_is_an_error(guest):
    assert guest.ask(b"z2,100,4") == b"OK"
    assert "not inside linear memory" in error_text(guest.ask(b"Z2,%x,4" % (1 << 40)))
    assert "not inside linear memory" in error_text(guest.ask(b"Z2,fffe,4"))
    assert "length 0" in error_text(guest.ask(b"Z2,100,0"))
    assert guest.code_is_pristine()


def test_watchpoints_hook_only_while_set_and_report_after_the_write(guest):
    assert guest.ask(b"Z2,10c,4") == b"OK"  # the slot f writes for i = 3
    assert not guest.code.redirected_site_offsets(), "stopped: the sites follow at the resume"
    reply = guest.resume(b"c")
    hooked = set(guest.code.redirected_site_offsets())
    assert hooked, "store sites call their veneers while a watchpoint is set"
    # A plain store's veneer is a 25-byte stub (padded to 32) jumping to a shared routine.
    area = sitehooks.hook_area_for(guest.code)
    stores = [guest.code.base + off for off, access in
              sitehooks.access_sites(guest.code.engine_code, guest.entry.module.wasm).items() if access.size]
    assert stores and all(area.veneers[pc][1] == 32 for pc in stores)
    kind, signal, keys = parse_stop(reply)
    assert (kind, signal, keys.get("watch")) == ("T", 5, "10c")
    assert guest.ask(b"m10c,4") == b"03000000"  # after the write
    assert guest.ask(b"z2,10c,4") == b"OK"
    # gdb removes and reinserts watchpoints around every stop: the sites follow
    # only when the guest resumes (their veneers check the now empty table).
    assert set(guest.code.redirected_site_offsets()) == hooked
    assert guest.ask(b"Z2,10c,4") == b"OK" and guest.ask(b"z2,10c,4") == b"OK"
    assert parse_stop(guest.resume(b"s"))[0] == "T"
    assert not guest.code.redirected_site_offsets() and guest.code_is_pristine()


def test_a_host_functions_write_into_a_watched_range_stops_after_the_call(guest):
    # random_get writes 32 bytes at 0x2bc; watch 4 of them (by their native address too).
    base = guest.instance.memories[0].base
    assert guest.ask(b"Z2,%x,4" % (base + 0x2c0)) == b"OK"
    reply = guest.resume(b"c")
    keys = parse_stop(reply)[2]
    assert keys.get("watch") == "%x" % (base + 0x2c0)
    pc = int.from_bytes(bytes.fromhex(keys["10"]), "little")
    point = guest.table.sequence_point_at_or_before(guest.code.offset_of(pc))
    assert point.native_offset == guest.code.offset_of(pc)
    assert point.kind.name == "RETURN_POINT"  # right after the call that wrote
    assert guest.ask(b"z2,%x,4" % (base + 0x2c0)) == b"OK"
    assert parse_stop(guest.resume(b"c"))[0] == "W"


def test_a_watchpoint_hit_at_a_site_the_guest_resumes_from_is_still_seen(guest):
    """A plain breakpoint on a store site stops before its veneer; resuming
    runs the store without the veneer, so the target makes the check itself."""
    store_pcs = [guest.code.base + off for off, access in
                 sitehooks.access_sites(guest.code.engine_code, guest.entry.module.wasm).items()
                 if access.writes and access.size and guest.table.function_at(off).wasm_index == 1]
    assert len(store_pcs) == 1
    assert guest.ask(b"Z0,%x,1" % store_pcs[0]) == b"OK"
    assert guest.ask(b"Z2,100,4") == b"OK"  # i = 0 writes 0x100
    kind, _, keys = parse_stop(guest.resume(b"c"))
    assert "swbreak" in keys and "watch" not in keys
    kind, _, keys = parse_stop(guest.resume(b"c"))
    assert keys.get("watch") == "100"
    assert guest.ask(b"z0,%x,1" % store_pcs[0]) == b"OK"
    assert guest.ask(b"z2,100,4") == b"OK"


def test_agent_commands_print_and_never_stop(guest, capfd):
    pc = guest.entry_pc("f")
    fmt = b"i=%d\\n\0"
    command = (bytes([0x26, 0, 4, 0x19, 0x22, 0, 0x22, 0, 0x34, 1]) + len(fmt).to_bytes(2, "big") + fmt + b"\x27")
    assert guest.ask(b"Z0,%x,1;cmds:0,X%x,%s" % (pc, len(command), command.hex().encode())) == b"OK"
    assert parse_stop(guest.resume(b"c"))[0] == "W"
    out = capfd.readouterr().out
    assert re.findall(r"^i=(\d)$", out, re.M) == [str(k) for k in range(8)]


def test_monitor_patches_lists_the_hooked_sites(guest):
    pc = guest.entry_pc("f")
    assert guest.ask(condition_packet(pc, ARG_IS(3))) == b"OK"
    assert guest.ask(b"Z2,104,4") == b"OK"
    assert parse_stop(guest.resume(b"s"))[0] == "T"  # the access sites are hooked when the guest resumes
    replies = guest.send(b"qRcmd," + b"monitor patches"[len("monitor "):].hex().encode())
    text = b"".join(bytes.fromhex(r[1:].decode()) for r in replies if r.startswith(b"O") and r != b"OK").decode()
    assert replies[-1] == b"OK"
    assert re.search(rf"^{pc:#x} agent_session!f -> veneer 0x[0-9a-f]+: condition 1: 8 bytes of bytecode$", text, re.M)
    assert re.search(r"-> veneer 0x[0-9a-f]+: watch check: i32\.store addr=\[rbp-\d+\] size=4$", text, re.M), text
    assert re.search(r"-> veneer 0x[0-9a-f]+: host write check$", text, re.M), text


GLOBAL_WAT = """(module
  (global $counter (mut i32) (i32.const 0))
  (global $other (mut i64) (i64.const 7))
  (func (export "run") (param $n i32) (result i32)
    (local $k i32)
    (block $done (loop $top
       (br_if $done (i32.ge_u (local.get $k) (local.get $n)))
       (global.set $other (i64.const 9))
       (global.set $counter (i32.add (global.get $counter) (i32.const 10)))
       (local.set $k (i32.add (local.get $k) (i32.const 1)))
       (br $top)))
    (global.get $counter)))"""


def test_a_watchpoint_on_a_wasm_global_stops_after_each_global_set(module):
    engine = codemem.Engine(debug=True)
    harness = GuestHarness(codemem.Module(engine, bytes(wasmtime.wat2wasm(GLOBAL_WAT)), name="globals"), "run", [3])
    try:
        harness.handshake()
        assert harness.ask(b"QEnableErrorStrings") == b"OK"
        cell = harness.instance.globals[0].cell_address
        replies = harness.send(b"qRcmd," + b"globals".hex().encode())
        text = b"".join(bytes.fromhex(r[1:].decode()) for r in replies if r.startswith(b"O") and r != b"OK")
        assert f"globals global 0: mut i32 = 0 @ {cell:#x}".encode() in text
        assert "see writes only" in error_text(harness.ask(b"Z3,%x,4" % cell))
        assert harness.ask(b"Z2,%x,4" % cell) == b"OK"
        values = []
        for _ in range(3):
            keys = parse_stop(harness.resume(b"c"))[2]
            assert keys.get("watch") == "%x" % cell
            values.append(int.from_bytes(bytes.fromhex(harness.ask(b"m%x,4" % cell).decode()), "little"))
        assert values == [10, 20, 30]  # each stop after its global.set; $other's sets never stop
        assert harness.ask(b"z2,%x,4" % cell) == b"OK"
        assert parse_stop(harness.resume(b"c"))[0] == "W"
    finally:
        harness.close()


def test_a_condition_reads_a_wasm_globals_cell():
    engine = codemem.Engine(debug=True)
    harness = GuestHarness(codemem.Module(engine, bytes(wasmtime.wat2wasm(GLOBAL_WAT)), name="globals"), "run", [5])
    try:
        harness.handshake()
        cell = harness.instance.globals[0].cell_address
        # the site before `global.set $counter`: stop when the counter already is 20
        sets = [harness.code.base + off for off, access in
                sitehooks.access_sites(harness.code.engine_code, harness.entry.module.wasm).items()
                if access.global_index == 0]
        assert len(sets) == 1
        condition = bytes([0x25]) + cell.to_bytes(8, "big") + bytes([0x19, 0x22, 20, 0x13, 0x27])
        assert harness.ask(condition_packet(sets[0], condition)) == b"OK"
        assert parse_stop(harness.resume(b"c"))[2].get("swbreak") == ""
        assert harness.ask(b"m%x,4" % cell) == b"14000000"
        assert harness.ask(b"z0,%x,1" % sets[0]) == b"OK"
        assert parse_stop(harness.resume(b"c"))[0] == "W"
    finally:
        harness.close()


BULK_WAT = """(module
  (memory (export "memory") 1)
  (func (export "run") (param $n i32) (result i32)
    (memory.fill (i32.const 0x10) (i32.const 7) (i32.const 8))
    (memory.copy (i32.const 0x100) (i32.const 0x10) (local.get $n))
    (i32.load (i32.const 0x104))))"""


@pytest.mark.parametrize("packet, key, expected_pc_after", [
    (b"Z3,14,4", "rwatch", "memory.copy"),   # the copy reads its source
    (b"Z2,104,4", "watch", "memory.copy"),   # and writes its destination
    (b"Z4,14,1", "awatch", "memory.fill"),   # the fill writes the source first
])
def test_bulk_memory_is_checked_as_a_read_of_its_source_and_a_write_of_its_destination(packet, key, expected_pc_after):
    engine = codemem.Engine(debug=True)
    harness = GuestHarness(codemem.Module(engine, bytes(wasmtime.wat2wasm(BULK_WAT)), name="bulk"), "run", [8])
    try:
        harness.handshake()
        assert harness.ask(packet) == b"OK"
        keys = parse_stop(harness.resume(b"c"))[2]
        assert key in keys, keys
        # Reported after the access: at the point after the instruction that made it.
        pc = int.from_bytes(bytes.fromhex(keys["10"]), "little")
        point = harness.table.sequence_point_at_or_before(harness.code.offset_of(pc))
        before = [p for p in harness.table.sequence_points(harness.table.function_at(point.native_offset))
                  if p.native_offset < point.native_offset][-1]
        name = {0x0B: "memory.fill", 0x0A: "memory.copy"}.get(harness.entry.module.wasm[before.wasm_offset + 1])
        assert harness.entry.module.wasm[before.wasm_offset] == 0xFC and name == expected_pc_after
    finally:
        harness.close()


CONSTANT_CONDITION = lambda value: bytes([0x22, value, 0x27])  # noqa: E731  const8 VALUE; end


@pytest.mark.parametrize("holds", [False, True])
def test_a_condition_at_the_entry_site_of_the_function_stopped_at_its_first_byte_is_evaluated(guest, holds):
    # The session's first stop is shown at run's first byte (push rbp), before
    # its ENTRY site: the resume runs the frame setup in the stub, then the
    # guest must run the site's program (it stopped there whatever the
    # condition said, once: the flaky test_agent_host watch test).
    entry = guest.entry_pc("run")
    rip = int.from_bytes(bytes.fromhex(guest.ask(b"p10").decode()), "little")
    assert rip < entry and guest.target._frame_setup_at(rip) == (rip, entry)
    assert guest.ask(condition_packet(entry, CONSTANT_CONDITION(int(holds)))) == b"OK"
    reply = guest.resume(b"c")
    if not holds:
        assert parse_stop(reply)[0] == "W", reply
        return
    kind, _, pairs = parse_stop(reply)
    assert kind == "T" and pairs.get("swbreak") == "", reply
    assert int.from_bytes(bytes.fromhex(guest.ask(b"p10").decode()), "little") == entry
    assert guest.ask(b"z0,%x,1" % entry) == b"OK"
    assert parse_stop(guest.resume(b"c"))[0] == "W"
