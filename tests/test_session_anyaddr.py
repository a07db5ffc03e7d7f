"""Session-level tests (no client process; the test plays the transport, as
in tests/test_session.py) of breakpoints between sequence points
(codemem/displaced.py) and of the guest's output as ``O`` packets."""
from __future__ import annotations

import struct
import time

import pytest
import wasmtime

import codemem
from codemem import displaced
from gdbstub.protocol.encoding import hex_encode
from test_session import GuestHarness, demo_module, guest, parse_stop, parse_stream, reg_value  # noqa: F401  (fixtures)

# A WASI guest writing "hi\n" to stdout, then "err\n" to stderr.
WRITER_WAT = r'''
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi\n")
  (data (i32.const 32) "err\n")
  (func (export "run") (result i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 7)))
'''


def first_displaceable(guest, name: str, mnemonic: str) -> tuple[int, str]:
    func = guest.function(name)
    fn = displaced.function_code(guest.code.engine_code, func.native_start)
    for ins in fn.insns:
        if ins.text.startswith(mnemonic + " ") and ins.offset not in fn.site_set:
            fn.check(ins.offset)
            return guest.code.base + ins.offset, ins.text
    raise AssertionError(f"no {mnemonic} in {name}")


def test_a_breakpoint_between_sites_stops_there_and_shows_its_pc_in_the_stop_reply(guest):
    guest.handshake()
    pc, text = first_displaceable(guest, "square", "imul")
    assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    carrier = guest.code.base + displaced.check_displaceable(guest.code.engine_code, guest.code.offset_of(pc))[1]
    console, done = guest.send(b"qRcmd," + hex_encode(b"patches"))
    assert done == b"OK" and console.startswith(b"O")
    assert f"{carrier:#x} demo.O0!square refs=1 carries {pc:#x}" in bytes.fromhex(console[1:].decode()).decode()
    reply = guest.resume(b"vCont;c")
    kind, signal, fields = parse_stop(reply)
    assert (kind, signal) == ("T", 5) and "swbreak" in fields and reg_value(fields["10"]) == pc, reply
    regs = guest.registers()
    assert struct.unpack_from("<Q", regs, 16 * 8)[0] == pc
    # x of square(1): both operands of the imul hold it.
    assert struct.unpack_from("<Q", regs, 13 * 8)[0] & 0xFFFFFFFF == 1
    # The second call stops there again with x = 2.
    reply = guest.resume(b"vCont;c")
    assert reg_value(parse_stop(reply)[2]["10"]) == pc
    assert struct.unpack_from("<Q", guest.registers(), 13 * 8)[0] & 0xFFFFFFFF == 2
    # A step goes on to the next sequence point after the instruction.
    reply = guest.resume(b"vCont;s:p%x.1" % guest.target.pid)
    stepped = reg_value(parse_stop(reply)[2]["10"])
    assert stepped > pc and guest.table.site_index(guest.code.offset_of(stepped)) is not None
    assert guest.ask(b"z0,%x,1" % pc) == b"OK"
    exited = guest.finish()
    assert exited.results == [505]
    assert guest.code_is_pristine()


def test_a_write_of_a_register_at_a_stop_between_sites_reaches_the_code_after_it(guest):
    # At the imul, r13 and r14 hold x; making r14 hold 3 makes square(1) = 3,
    # so run() = 505 - 1 + 3.
    guest.handshake()
    pc, text = first_displaceable(guest, "square", "imul")
    assert text == "imul r13d, r14d"
    assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    guest.resume(b"vCont;c")
    regs = bytearray(guest.registers())
    struct.pack_into("<Q", regs, 14 * 8, 3)
    assert guest.ask(b"G" + regs.hex().encode()) == b"OK"
    assert guest.ask(b"z0,%x,1" % pc) == b"OK"
    assert guest.finish().results == [507]


@pytest.fixture
def writer():
    module = codemem.Module(codemem.Engine(debug=True), wasmtime.wat2wasm(WRITER_WAT), name="writer")
    harness = GuestHarness(module)
    # What the server does (gdbstub.server, output_from_guest).
    harness.session.host.output_server = lambda target, fd, data: harness.session.forward_output(target, data)
    harness.session.host._adopt(harness.target)
    yield harness
    harness.close()


def test_guest_output_reaches_a_waiting_client_as_o_packets_before_the_exit_reply(writer):
    writer.handshake()
    # As the server does: the gate opens after the packet's handler is done
    # (gdbstub.server._schedule_resume), when the session waits for the stop.
    gates = []
    writer.target.schedule_resume = gates.append
    assert writer.send(b"vCont;c") == []
    gates.pop()()
    replies: list[bytes] = []
    deadline = time.monotonic() + 10
    while not (replies and replies[-1].startswith(b"W")) and time.monotonic() < deadline:
        if writer.news.wait(0.02):
            writer.pump()
        replies += parse_stream(writer.session.take_output())
    assert replies[:2] == [b"O" + hex_encode(b"hi\n"), b"O" + hex_encode(b"err\n")], replies
    assert len(replies) == 3 and replies[2].startswith(b"W00"), replies


def test_guest_output_is_not_sent_to_a_client_that_is_not_waiting_for_a_stop(writer):
    writer.handshake()
    assert writer.session.forward_output(writer.target, b"early") is False
    assert writer.session.take_output() == b""


# ---------------------------------------------------------------- wasm dialect

@pytest.mark.parametrize("name", ["demo.O2", "inventory.O2", "deep.O0"])
def test_the_wasm_dialect_maps_each_function_s_locals_header_and_nothing_else_to_its_first_instruction(name):
    from pathlib import Path

    from gdbstub import runner
    from gdbstub.protocol.replies import ErrorCode
    from gdbstub.target import TargetError
    from gdbstub.wasm_dialect import WasmModuleView

    path = Path(__file__).resolve().parents[1] / "examples" / "build" / f"{name}.wasm"
    module = codemem.Module.from_file(codemem.Engine(debug=True), path)
    store = codemem.Store(module.engine)
    try:
        view = WasmModuleView(0, runner.instantiate(store, module))
        bodies = {body.body_offset: body for body in module.info.codes}
        for func in view.table.functions():
            body = bodies[func.body_wasm_offset]
            assert view.body_at_locals_header(body.locals_offset) == func
            assert view.native_site(body.locals_offset) == view.native_site(func.body_wasm_offset)
            for offset in range(body.size_offset, body.locals_offset):
                assert view.body_at_locals_header(offset) is None
            with pytest.raises(TargetError) as refused:
                view.native_site(body.size_offset)
            assert refused.value.code == ErrorCode.EINVAL and "locals header" in str(refused.value)
    finally:
        store.close()
