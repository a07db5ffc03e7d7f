"""codemem.frames: the one frame walker, and the users that agree through it.

Guest: ``run()`` of examples/build/demo.O0.wasm (``run`` -> ``sum_of_squares``
-> ``square``), stopped under a real StoreTarget (test_session's harness).
Wasm offsets are module file offsets (``wasm-objdump -d``).
"""
from __future__ import annotations

import struct

import pytest

from codemem import frames as walker
from gdbstub.protocol.agentexpr import parse_agent_expr
from gdbstub.target import TargetError
from test_session import GuestHarness, demo_module  # noqa: F401 (fixture)

SUM_CALL_SQUARE = 0x107      # sum_of_squares: call $square (6 bytes: padded LEB)
SUM_AFTER_SQUARE = 0x10D     # local.set 12: where square returns to
RUN_CALL_SUM = 0x230         # run: call $sum_of_squares
RUN_AFTER_SUM = 0x236        # local.set 4


@pytest.fixture
def guest(demo_module):  # noqa: F811
    harness = GuestHarness(demo_module)
    harness.handshake()
    yield harness
    harness.close()


def stop_in_square(guest: GuestHarness, *, at_entry: bool) -> None:
    """Continue to square's entry site, and with ``at_entry`` False one step on."""
    square = guest.entry_pc("square")
    assert guest.ask(b"Z0,%x,1" % square) == b"OK"
    guest.resume(b"c")
    assert guest.ask(b"z0,%x,1" % square) == b"OK"
    if not at_entry:
        guest.resume(b"s")


def test_the_demo_bytes_are_what_the_offsets_say(guest):
    wasm = guest.entry.module.wasm
    assert wasm[SUM_CALL_SQUARE] == 0x10 and wasm[RUN_CALL_SUM] == 0x10  # call
    assert wasm[SUM_AFTER_SQUARE] == 0x21 and wasm[RUN_AFTER_SUM] == 0x21  # local.set


@pytest.mark.parametrize("at_entry", [True, False], ids=["at-the-entry-site", "in-the-body"])
def test_a_stop_in_square_walks_square_sum_of_squares_run(guest, at_entry):
    """At the ENTRY site the frame exists (rbp set) but the locals are not in
    their slots yet; in the body both hold."""
    stop_in_square(guest, at_entry=at_entry)
    frames = guest.target.frames()
    assert [f.func_name for f in frames] == ["square", "sum_of_squares", "run"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert not any(f.before_frame_setup for f in frames)
    assert frames[0].before_body is at_entry
    assert all(not f.before_body for f in frames[1:])
    assert frames[0].rbp == struct.unpack_from("<Q", guest.registers(), 6 * 8)[0]


def stop_at_squares_first_byte(guest: GuestHarness) -> None:
    """``break *square``: stopped at its first byte, before `push rbp`."""
    start = guest.start_pc("square")
    assert guest.ask(b"Z0,%x,1" % start) == b"OK"
    guest.resume(b"c")
    assert guest.ask(b"z0,%x,1" % start) == b"OK"


def registers(guest: GuestHarness) -> tuple[int, int, int]:
    regs = guest.registers()
    return tuple(struct.unpack_from("<Q", regs, off)[0] for off in (16 * 8, 7 * 8, 6 * 8))  # rip, rsp, rbp


def test_stepping_through_the_frame_setup_walks_the_same_frames_at_each_instruction(guest):
    """At the first byte the return address is at [rsp], after the push at
    [rsp+8]; rbp is the caller's until the ENTRY site: the walk finds square,
    sum_of_squares, run at all three, with the same caller frames."""
    stop_at_squares_first_byte(guest)
    start, entry = guest.start_pc("square"), guest.entry_pc("square")
    seen = []
    for expected_pc in (start, start + 1, entry):
        rip, rsp, rbp = registers(guest)
        assert rip == expected_pc
        frames = guest.target.frames()
        assert [f.func_name for f in frames] == ["square", "sum_of_squares", "run"]
        assert frames[0].before_frame_setup is (rip != entry)
        assert frames[0].before_body
        seen.append([(f.pc, f.rbp) for f in frames[1:]])
        states = walker.unwound_states(guest.store.registry, guest.store.ctx.stack, rip, rbp, rsp)
        seen[-1].append(states[0])
        if rip != entry:
            guest.resume(b"s")
    assert seen[0] == seen[1] == seen[2]
    first_rsp = registers(guest)[2] + 16  # the CFA: rbp + 16 at the ENTRY site
    assert seen[0][-1][1] == first_rsp


def test_a_caller_frame_is_at_its_call_and_resumes_after_it(guest):
    """The decision codemem/frames.py documents: ``wasm_offset`` is the call
    (trap backtraces, monitor), ``resume_wasm_offset`` the next instruction
    (the wasm dialect's pc), ``pc`` the native return address."""
    stop_in_square(guest, at_entry=False)
    _, sum_frame, run_frame = guest.target.frames()
    assert (sum_frame.wasm_offset, sum_frame.resume_wasm_offset) == (SUM_CALL_SQUARE, SUM_AFTER_SQUARE)
    assert (run_frame.wasm_offset, run_frame.resume_wasm_offset) == (RUN_CALL_SUM, RUN_AFTER_SUM)
    assert sum_frame.point.wasm_offset == SUM_CALL_SQUARE
    code = guest.code
    assert code.contains(sum_frame.pc)
    assert code.read_raw(sum_frame.pc - 5, 1) == b"\xe8"  # the return address follows a call rel32


def test_store_backtrace_agrees_with_the_walker(guest):
    stop_in_square(guest, at_entry=False)
    regs = guest.registers()
    rbp, rsp, rip = (struct.unpack_from("<Q", regs, off)[0] for off in (6 * 8, 7 * 8, 16 * 8))
    infos = guest.store.backtrace(rip, rbp, rsp)
    frames = guest.target.frames()
    assert [(i.func_name, i.module_offset, i.pc) for i in infos] == \
        [(f.func_name, f.wasm_offset, f.pc) for f in frames]


def test_the_rbp_chain_lists_each_frames_rbp_then_the_hosts(guest):
    stop_in_square(guest, at_entry=False)
    frames = guest.target.frames()
    chain = list(walker.rbp_chain(guest.store.ctx.stack, frames[0].rbp))
    assert chain[:3] == [f.rbp for f in frames]
    assert all(guest.store.ctx.stack.contains(rbp) for rbp in chain)


def test_the_walk_stops_at_a_pc_outside_wasm_code(guest):
    stack = guest.store.ctx.stack
    assert walker.walk(guest.store.registry, stack, 0x1234, stack.top - 64, stack.top - 64) == []


def test_a_return_address_off_the_stack_is_none(guest):
    assert walker.return_address(guest.store.ctx.stack, rsp_slot=0, rbp=0, rsp=8) is None
    assert walker.return_address(guest.store.ctx.stack, rsp_slot=None, rbp=0, rsp=8) is None


def test_monitor_backtrace_shows_the_calls(guest):
    stop_in_square(guest, at_entry=False)
    replies = guest.send(b"qRcmd," + b"backtrace".hex().encode())
    assert replies[-1] == b"OK"
    text = b"".join(bytes.fromhex(r[1:].decode()) for r in replies[:-1]).decode()
    lines = text.splitlines()
    assert lines[0].startswith("#0 ") and "square" in lines[0]
    assert lines[1].startswith("#1 ") and "sum_of_squares" in lines[1] and f"wasm@{SUM_CALL_SQUARE:#x}" in lines[1]
    assert lines[2].startswith("#2 ") and "run" in lines[2] and f"wasm@{RUN_CALL_SUM:#x}" in lines[2]


def test_breakpoints_at_a_first_byte_and_its_entry_site_share_one_site_and_one_program(guest):
    """The ENTRY site carries breakpoints at the function's first byte and
    `mov rbp, rsp` as well as its own: plain ones all stop (first byte
    first, then each on the way), but the site runs one program, so a
    condition is refused while another of them is set (EBUSY naming it)."""
    start, entry = guest.start_pc("square"), guest.entry_pc("square")
    for pc in (start, start + 1, entry):
        assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    for expected in (start, start + 1, entry):
        guest.resume(b"c")
        assert registers(guest)[0] == expected
    true = parse_agent_expr(b"\x22\x01\x27")
    with pytest.raises(TargetError, match=f"shares the ENTRY site {entry:#x}"):
        guest.target.insert_breakpoint(start, conditions=(true,))
    for pc in (start + 1, entry):
        assert guest.ask(b"z0,%x,1" % pc) == b"OK"
    guest.target.insert_breakpoint(start, conditions=(true,))  # alone now: accepted
    assert guest.ask(b"z0,%x,1" % start) == b"OK"
    assert guest.code.enabled_site_offsets() == []
