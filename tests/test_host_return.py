"""StoreTarget: a breakpoint where the invoked function returns to the host.

The outermost guest frame of a low Store returns into the entry thunk
(codemem.lowmem: ``call rdi; nop; ret``), so a debugger takes the thunk's return address (its ``nop``)
for that frame's caller resume address.  gdb inserts a breakpoint there to see
a watched local of the outermost frame go out of scope, lldb-22 for every
variable watchpoint set in it.  The target honours it: the return stops
there, with the registers the guest left (rsp just above the stack top's
return address, rbp 0, r15 the instance context, the result in rax), before
the exit.
"""
from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest

import codemem
from codemem.lowmem import ENTRY_THUNK_CODE
from gdbstub import runner
from gdbstub.target import Exited, StopReason, StoreTarget, TargetError

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"
GPRS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{k}" for k in range(8, 16)]


class Target:
    """A StoreTarget of demo.O0 ``run()`` (505) stopped at its entry."""

    def __init__(self, *, low_addresses: bool = True):
        engine = codemem.Engine(debug=True, low_addresses=low_addresses)
        self.store = codemem.Store(engine)
        self.instance = runner.instantiate(self.store, codemem.Module.from_file(engine, BUILD / "demo.O0.wasm"))
        self.news = threading.Event()
        self.target = StoreTarget(self.store, self.instance, self.instance.exports["run"], [], notify=self.news.set)
        self.target.start(stop_at_entry=True)
        assert self.wait().reason == StopReason.ENTRY

    def wait(self):
        while True:
            assert self.news.wait(20), "no event"
            self.news.clear()
            event = self.target.take_event()
            if event is not None:
                return event

    def registers(self) -> dict[str, int]:
        values = struct.unpack_from("<16QQ", self.target.read_registers())
        return dict(zip(GPRS + ["rip"], values))

    def close(self) -> None:
        if self.target.exited is None:
            self.target.kill()
            self.wait()
        self.store.close()


@pytest.fixture
def low():
    t = Target()
    yield t
    t.close()


def test_the_host_return_pc_is_after_the_entry_thunks_call_and_no_ret(low):
    thunk = low.store.ctx.entry_thunk
    assert low.target.host_return_pc == thunk + 2 and ENTRY_THUNK_CODE[:2] == b"\xff\xd7"
    # Not a `ret`: gdb's amd64 epilogue unwinder would take that frame over.
    assert ENTRY_THUNK_CODE[2] != 0xC3
    # It is the outermost frame's return address, as a debugger unwinds it
    # (shown at the function's first byte: the address at rsp).
    rsp = low.registers()["rsp"]
    assert struct.unpack("<Q", low.target.read_memory(rsp, 8))[0] == low.target.host_return_pc


def test_a_breakpoint_at_the_host_return_stops_there_before_the_exit(low):
    pc = low.target.host_return_pc
    low.target.insert_breakpoint(pc)
    low.target.resume()
    stop = low.wait()
    assert stop.reason == StopReason.BREAKPOINT and stop.pc == pc
    regs = low.registers()
    top = low.store.ctx.stack.top
    assert regs["rip"] == pc and regs["rbp"] == 0 and regs["rsp"] == (top & ~15) - 8
    assert regs["r15"] == low.instance.vmctx_address
    assert regs["rax"] == 505  # result 0, where gdb's and lldb's `finish` read it
    assert low.target.frames() == []  # no wasm frame is left
    low.target.remove_breakpoint(pc)
    low.target.resume()
    exited = low.wait()
    assert isinstance(exited, Exited) and exited.results == [505]


def test_a_step_from_the_host_return_ends_the_invocation(low):
    low.target.insert_breakpoint(low.target.host_return_pc)
    low.target.resume()
    assert low.wait().reason == StopReason.BREAKPOINT
    low.target.step()
    exited = low.wait()
    assert isinstance(exited, Exited) and exited.results == [505]


def test_a_removed_host_return_breakpoint_does_not_stop(low):
    pc = low.target.host_return_pc
    low.target.insert_breakpoint(pc)
    low.target.remove_breakpoint(pc)
    low.target.remove_breakpoint(pc)  # removing an absent one is not an error
    low.target.resume()
    assert isinstance(low.wait(), Exited)


def test_a_condition_at_the_host_return_is_refused_with_its_reason(low):
    with pytest.raises(TargetError, match="returns to the host: conditions and commands are not evaluated"):
        low.target.insert_breakpoint(low.target.host_return_pc, conditions=(object(),))


def test_detaching_while_stopped_at_the_host_return_lets_the_invocation_end(low):
    low.target.insert_breakpoint(low.target.host_return_pc)
    low.target.resume()
    assert low.wait().reason == StopReason.BREAKPOINT
    low.target.detach()
    assert low.target.join(20)
    exited = low.target.take_event()
    assert isinstance(exited, Exited) and exited.results == [505]


def test_a_store_placed_anywhere_has_no_host_return_pc():
    t = Target(low_addresses=False)
    try:
        assert t.target.host_return_pc is None
    finally:
        t.close()
