"""GdbSession over a real StoreTarget, without sockets: packets in, replies out.

Every test runs ``run()`` of examples/build/demo.O0.wasm (``run`` ->
``sum_of_squares(10)`` + ``fact(5)`` = 505) on its own Store and guest thread,
stopped at its entry site, and drives the session the way the transport does
(:class:`GuestHarness`): feed framed bytes to :meth:`GdbSession.receive`, call
:meth:`GdbSession.target_event` when the guest thread notifies, send
:meth:`GdbSession.take_output`.  Replies are parsed by a strict client-side
reader of our own (:func:`parse_stream`), not by the stub's framer.

The harness is shared with test_session_fuzz.py.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

import codemem
from codemem.frametable import SITE_DISABLED, MirrorSource, SequencePointKind
from gdbstub import arch_amd64, runner
from gdbstub.dialect import NativeDialect, SessionExtension
from gdbstub.image_files import ImageFileServer
from gdbstub.images import DebugImageSet
from gdbstub.protocol.replies import ErrorCode
from gdbstub.session import PACKET_SIZE, GdbSession, SessionConfig
from gdbstub.target import StoreTarget, StopReason, TargetError

ROOT = Path(__file__).resolve().parent.parent
DEMO_WASM = ROOT / "examples" / "build" / "demo.O0.wasm"
DEMO_RESULT = 505
EVENT_TIMEOUT = 10.0

# The g packet: gdb's amd64 order, 8 bytes per general register, rip 17th.
G_RSI, G_RBP, G_RSP, G_RIP = 4 * 8, 6 * 8, 7 * 8, 16 * 8

# demo.O0's run(), from `wasm-objdump -d examples/build/demo.O0.wasm`: module
# file offsets of the instructions around `call $fact`.
RUN_PUSH_FACT_ARG = 0x243  # local.get 5    (depth 0 -> 1: fact's argument)
RUN_CALL_FACT = 0x245      # call $fact     (depth 1: the argument)
RUN_AFTER_FACT = 0x24B     # local.set 6    (depth 1: fact's result)


# ---------------------------------------------------------------- client side

def unescape(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == 0x7D:  # '}': next byte XOR 0x20 (GDB manual, "Overview")
            assert i + 1 < len(body), f"escape at the end of {body!r}"
            out.append(body[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(body[i])
            i += 1
    return bytes(out)


def parse_stream(data: bytes) -> list:
    """What a strict client reads from the stub: ``"+"``/``"-"`` acks and
    packet payloads (bytes, unescaped).  Fails on anything else: garbage
    between packets, a bad or missing checksum, a run-length marker (the stub
    promises never to send one) or a truncated packet."""
    items: list = []
    i = 0
    while i < len(data):
        byte = data[i]
        if byte in b"+-":
            items.append(chr(byte))
            i += 1
            continue
        assert byte == 0x24, f"garbage {data[i:i + 16]!r} at {i} of the stub's output"
        end = data.find(b"#", i + 1)
        assert end >= 0 and end + 3 <= len(data), f"truncated packet {data[i:i + 40]!r}"
        body = data[i + 1:end]
        assert b"$" not in body, f"unescaped '$' in {body[:40]!r}"
        assert re.fullmatch(rb"[0-9a-f]{2}", data[end + 1:end + 3]), f"checksum {data[end + 1:end + 3]!r}"
        assert int(data[end + 1:end + 3], 16) == sum(body) % 256, f"wrong checksum on {body[:40]!r}"
        # '*' is escaped by the stub, so a raw one would be run-length encoding.
        assert b"*" not in body, f"run-length encoding in {body[:40]!r}"
        items.append(unescape(body))
        i = end + 3
    return items


def frame(payload: bytes) -> bytes:
    return b"$%s#%02x" % (payload, sum(payload) % 256)


def hexs(text: str) -> bytes:
    return text.encode().hex().encode()


def le64(value: int) -> bytes:
    return struct.pack("<Q", value).hex().encode()


def parse_stop(payload: bytes) -> tuple[str, int, dict[str, str]]:
    """``T05thread:p1.1;06:...;`` -> ("T", 5, {"thread": "p1.1", "06": ...})."""
    match = re.fullmatch(rb"([TSWX])([0-9a-f]{2})(.*)", payload, re.S)
    assert match, f"not a stop reply: {payload!r}"
    pairs = {}
    for item in match.group(3).decode().split(";"):
        if item:
            key, _, value = item.partition(":")
            pairs[key] = value
    return match.group(1).decode(), int(match.group(2), 16), pairs


def reg_value(hex_le: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_le), "little")


ERROR_RE = re.compile(rb"E[0-9a-f]{2}(;([0-9a-f]{2})*)?")


# ---------------------------------------------------------------- the harness

class GuestHarness:
    """One Store running ``export(*args)`` of ``module`` under a GdbSession,
    stopped at the entry site; the test plays the transport."""

    def __init__(self, module, export: str = "run", args=(), *, config: SessionConfig | None = None):
        self.module = module
        self.store = codemem.Store(module.engine)
        self.instance = runner.instantiate(self.store, module)
        self.func = self.instance.exports[export]
        self.news = threading.Event()
        self.target = StoreTarget(self.store, self.instance, self.func, list(args), notify=self.news.set)
        self.session = GdbSession(self.target, config)
        self.entry = self.store.registry.entries()[0]
        self.code = self.entry.store_code
        self.table = self.code.frame_table
        self.target.start(stop_at_entry=True)
        assert self.news.wait(EVENT_TIMEOUT), "the guest never reached its entry stop"
        self.pump()
        assert self.target.current_stop is not None and self.target.current_stop.reason == StopReason.ENTRY

    # -- transport ------------------------------------------------------------

    def pump(self) -> None:
        """What the server does on the guest thread's notify."""
        if self.news.is_set():
            self.news.clear()
            self.session.target_event()

    def raw(self, data: bytes) -> list:
        self.session.receive(data)
        return parse_stream(self.session.take_output())

    def send(self, payload: bytes) -> list[bytes]:
        """One packet; returns the reply packets it produced at once (acks
        checked and dropped)."""
        acknowledged = not self.session.conn.no_ack
        items = self.raw(frame(payload))
        if acknowledged:
            assert items[:1] == ["+"], f"{payload!r} not acknowledged: {items!r}"
            items = items[1:]
        assert "+" not in items and "-" not in items, items
        return items

    def ask(self, payload: bytes) -> bytes:
        """A packet that must get exactly one reply."""
        replies = self.send(payload)
        assert len(replies) == 1, f"{payload!r} -> {replies!r}"
        return replies[0]

    def wait_reply(self, timeout: float = EVENT_TIMEOUT) -> bytes:
        """The stop reply a resume is waiting for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.news.wait(0.02):
                self.pump()
                items = parse_stream(self.session.take_output())
                if items:
                    assert len(items) == 1, items
                    return items[0]
        raise AssertionError(f"no stop reply within {timeout} s")

    def resume(self, payload: bytes) -> bytes:
        assert self.send(payload) == [], f"{payload!r} answered before the guest stopped"
        return self.wait_reply()

    def handshake(self, *features: str) -> None:
        offered = ";".join(features or ("multiprocess+", "swbreak+"))
        assert self.ask(b"qSupported:" + offered.encode()).startswith(b"PacketSize=")
        assert self.ask(b"QStartNoAckMode") == b"OK"
        assert self.session.conn.no_ack

    # -- the guest's code -----------------------------------------------------

    def function(self, name: str):
        for func in self.table.functions():
            if self.entry.module.func_name(func.wasm_index) == name:
                return func
        raise KeyError(name)

    def points(self, name: str) -> list[tuple[int, object]]:
        """(pc, SequencePoint) of ``name``, in native order."""
        return [(self.code.base + p.native_offset, p) for p in self.table.sequence_points(self.function(name))]

    def entry_pc(self, name: str) -> int:
        """The pc of ``name``'s ENTRY site (after its frame setup)."""
        return self.code.base + self.table.entry_offset(self.function(name))

    def start_pc(self, name: str) -> int:
        """The pc of ``name``'s first byte (its ``push rbp``)."""
        return self.code.base + self.function(name).native_start

    def point_pc(self, name: str, wasm_offset: int, kind=SequencePointKind.INSTRUCTION) -> int:
        pcs = [pc for pc, p in self.points(name) if p.wasm_offset == wasm_offset and p.kind == kind]
        assert len(pcs) == 1, (name, hex(wasm_offset), kind)
        return pcs[0]

    def all_site_pcs(self) -> list[int]:
        return [self.code.base + off for off in self.table.site_offsets]

    def code_is_pristine(self) -> bool:
        """Every byte of this Store's image equals the EngineCode's, and no
        site is counted as enabled."""
        size = self.code.size
        return (self.code.read_raw(self.code.base, size) == self.code.engine_code.read(0, size)
                and not self.code.enabled_site_offsets())

    def registers(self) -> bytes:
        return bytes.fromhex(self.ask(b"g").decode())

    # -- the end --------------------------------------------------------------

    def finish(self, timeout: float = EVENT_TIMEOUT):
        """Lets the guest run to its end (detaching if a debugger still holds
        it) and returns its Exited event."""
        if self.target.exited is None and not self.session.killed:
            self.target.detach()
        assert self.target.join(timeout), "the guest thread did not end"
        while self.target.take_event() is not None:
            pass
        return self.target.exited

    def close(self) -> None:
        try:
            self.finish()
        finally:
            if self.target.join(0):
                self.store.close()


@pytest.fixture(scope="module")
def demo_module():
    engine = codemem.Engine(debug=True)
    return codemem.Module(engine, DEMO_WASM.read_bytes(), name="demo.O0")


@pytest.fixture
def guest(demo_module):
    harness = GuestHarness(demo_module)
    yield harness
    harness.close()


# ---------------------------------------------------------------- handshake

def test_qsupported_then_no_ack_mode(guest):
    items = guest.raw(frame(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386"))
    assert items[0] == "+" and len(items) == 2
    features = items[1].split(b";")
    assert b"PacketSize=%x" % PACKET_SIZE in features
    for feature in (b"QStartNoAckMode+", b"swbreak+", b"multiprocess+", b"vContSupported+", b"qXfer:features:read+",
                    b"qXfer:threads:read+"):
        assert feature in features
    # No image set configured: no library list is advertised.
    assert not any(f.startswith(b"qXfer:libraries") for f in features)
    # The QStartNoAckMode exchange itself is acknowledged; nothing after it.
    assert guest.raw(frame(b"QStartNoAckMode")) == ["+", b"OK"]
    assert guest.raw(frame(b"qC")) == [b"QCp%x.1" % guest.target.pid]
    # A client's stray '+' after the OK is ignored (GDB manual, "Packet Acknowledgment").
    assert guest.raw(b"+" + frame(b"qAttached")) == [b"1"]


def test_the_site_agent_is_a_default_extension_and_without_it_no_feature_of_it_is_advertised(demo_module):
    with_agent = GuestHarness(demo_module)
    without = GuestHarness(demo_module, config=SessionConfig(extension_factories=[]))
    try:
        features = with_agent.ask(b"qSupported:multiprocess+").split(b";")
        assert b"ConditionalBreakpoints+" in features and b"BreakpointCommands+" in features
        features = without.ask(b"qSupported:multiprocess+").split(b";")
        assert b"ConditionalBreakpoints+" not in features and b"BreakpointCommands+" not in features
        assert without.ask(b"Z2,10,4") == b""                 # watchpoints: not supported
        assert without.ask(b"qWatchpointSupportInfo:") == b""
        assert with_agent.ask(b"qWatchpointSupportInfo:").startswith(b"num:")
    finally:
        with_agent.close()
        without.close()


def test_halt_reason_at_entry_expedites_frame_registers(guest):
    guest.handshake()
    kind, signal, pairs = parse_stop(guest.ask(b"?"))
    assert (kind, signal) == ("T", 5)
    assert pairs["thread"] == "p%x.1" % guest.target.pid
    regs = guest.registers()
    # Shown at the invoked function's first byte (code_pc), before its frame
    # setup; the guest waits at the ENTRY site after it.
    assert reg_value(pairs["10"]) == guest.func.code_pc == guest.start_pc("run")
    assert pairs["06"] == regs[G_RBP:G_RBP + 8].hex()
    assert pairs["07"] == regs[G_RSP:G_RSP + 8].hex()
    assert "swbreak" not in pairs  # the entry stop is not a breakpoint of the client's


class _KeysAtStops(SessionExtension):
    """Adds a ``seen`` key to every stop reply it is asked for (and console
    text), recording the stops it was asked about."""

    def __init__(self, need_details: bool):
        self.stop_keys_need_details = need_details
        self.asked: list[StopReason] = []

    def stop_reply_keys(self, target, stop):
        self.asked.append(stop.reason)
        return [("seen%d" % self.stop_keys_need_details, "1")]

    def stop_console_text(self, target, stop):
        return None


def test_a_stop_reply_asks_an_extension_that_needs_details_only_at_a_stop_with_a_note_or_a_watch(demo_module):
    details, every = _KeysAtStops(True), _KeysAtStops(False)
    guest = GuestHarness(demo_module, config=SessionConfig(extension_factories=[lambda: details, lambda: every]))
    try:
        guest.handshake()
        pairs = parse_stop(guest.ask(b"?"))[2]
        assert "seen0" in pairs and "seen1" not in pairs
        assert details.asked == [] and every.asked == [StopReason.ENTRY]
        stop = guest.target.current_stop
        for shown in (replace(stop, note="why"), replace(stop, watch="watch", watch_address=0x40)):
            pairs = parse_stop(guest.session._stop_reply(guest.target, shown))[2]
            assert "seen0" in pairs and "seen1" in pairs
        assert len(details.asked) == 2 and len(every.asked) == 3
    finally:
        guest.close()


def test_the_session_asks_hides_stop_of_a_dialect_that_has_its_own(demo_module):
    class Hiding(NativeDialect):
        def hides_stop(self, target, stop):
            return False

    native = GuestHarness(demo_module)
    hiding = GuestHarness(demo_module, config=SessionConfig(dialect_factory=Hiding))
    try:
        assert not native.session._dialect_hides_stops
        assert hiding.session._dialect_hides_stops
    finally:
        native.close()
        hiding.close()


def test_register_reads_outside_a_stop_are_refused_as_before(guest):
    """StoreTarget.read_registers checks only when its fast test fails:
    running is EBUSY, closed is ENOENT (require_stopped's errors)."""
    assert len(guest.target.read_registers()) == arch_amd64.REGFILE_SIZE
    stopped, guest.target._stopped = guest.target._stopped, None
    try:
        with pytest.raises(TargetError) as running:
            guest.target.read_registers()
        assert running.value.code == ErrorCode.EBUSY
    finally:
        guest.target._stopped = stopped
    guest.target.closed = True
    try:
        with pytest.raises(TargetError) as closed:
            guest.target.read_registers()
        assert closed.value.code == ErrorCode.ENOENT
    finally:
        guest.target.closed = False


def test_g_and_p_agree(guest):
    guest.handshake()
    regs = guest.registers()
    assert len(regs) == arch_amd64.G_PACKET_SIZE
    assert int.from_bytes(regs[G_RIP:G_RIP + 8], "little") == guest.start_pc("run")
    for regnum in (0, 6, 7, 15, 16, 17):
        value = bytes.fromhex(guest.ask(b"p%x" % regnum).decode())
        offset = sum(r.size for r in arch_amd64.REGISTERS[:regnum])
        assert value == regs[offset:offset + len(value)], regnum
    assert guest.ask(b"p%x" % len(arch_amd64.REGISTERS)) == b"E16"  # no such register


# ---------------------------------------------------------------- memory

def test_code_reads_show_nops_at_enabled_sites(guest):
    guest.handshake()
    fact = guest.entry_pc("fact")
    before = guest.ask(b"m%x,10" % fact)
    assert bytes.fromhex(before.decode())[:5] == SITE_DISABLED
    assert guest.ask(b"Z0,%x,1" % fact) == b"OK"
    assert guest.code.read_raw(fact, 1) == b"\xe8"  # really patched: call rel32
    assert guest.ask(b"m%x,10" % fact) == before  # ... but never shown
    # A read that starts inside the site hides the rest of it as well.
    assert guest.ask(b"m%x,4" % (fact + 1)) == SITE_DISABLED[1:].hex().encode()
    assert guest.ask(b"x%x,10" % fact) == bytes.fromhex(before.decode())  # lldb's binary read
    assert guest.ask(b"z0,%x,1" % fact) == b"OK"
    assert guest.code.read_raw(fact, 5) == SITE_DISABLED


def test_every_region_reads_at_its_edges_what_the_region_itself_reads(guest):
    # Sweep: a read inside one region is found by a bisect over the region
    # starts (StoreTarget._regions_index); it must agree with the region's
    # own reader at each region's first, middle and last byte, and stop short
    # at its end unless the next region starts right there.
    regions = guest.target.memory_regions()
    assert len(regions) > 3
    for region in regions:
        for address in (region.start, (region.start + region.end) // 2, region.end - 1):
            first = next(r for r in regions if r.contains(address))
            assert guest.target.read_memory(address, 1) == first.read(address, 1), (region.name, hex(address))
        tail = guest.target.read_memory(region.end - 1, 2)
        assert len(tail) == (2 if any(r.contains(region.end) for r in regions) else 1), region.name


def test_the_guest_stack_is_read_directly_only_where_no_other_region_can_cover_it(guest, monkeypatch):
    # StoreTarget.read_memory reads the guest stack without the region
    # index (gdb reads the frame at every stop): the same bytes the stack
    # region gives, and the general path everywhere else.
    target = guest.target
    stack = next(r for r in target.memory_regions() if r.name == "stack")
    start, end = target._direct_stack_window()
    assert stack.start <= start < end == stack.end
    assert not any(r.start < end and start < r.end for r in target.memory_regions() if r is not stack)
    rsp = target.require_stopped().regfile.gpr[7]
    expected = {address: stack.read(address, 0x40) for address in (start, rsp - 0x40, end - 0x40)}
    index = StoreTarget._regions_index

    def refuse(self):
        raise LookupError("the read asked the regions")

    monkeypatch.setattr(StoreTarget, "_regions_index", refuse)
    for address, data in expected.items():
        assert target.read_memory(address, 0x40) == data
    with pytest.raises(LookupError):
        target.read_memory(end - 0x20, 0x40)  # runs past the stack: the general path
    monkeypatch.setattr(StoreTarget, "_regions_index", index)
    assert target.read_memory(end - 0x20, 0x40).startswith(expected[end - 0x40][0x20:])


def test_a_stack_read_during_an_inferior_call_shows_the_debuggers_return_address(guest, monkeypatch):
    # The slot of a call in progress shows gdb's return address
    # (StoreTarget._read_stack), not the landing: never the direct read.
    target = guest.target
    rsp = target.require_stopped().regfile.gpr[7]
    raw = target.read_memory(rsp, 0x10)
    call = type("Call", (), {"slot": rsp + 8, "return_address": 0x1122334455667788})()
    monkeypatch.setattr(target, "_calls", [call])
    assert target.read_memory(rsp, 0x10) == raw[:8] + struct.pack("<Q", 0x1122334455667788)


def test_the_direct_stack_window_starts_above_whatever_memory_0_can_mirror():
    def fake(max_pages: int | None, low: bool):
        stack = type("Stack", (), {"base": 0x8000_0000, "guard": 0x1000, "top": 0x8080_0000})()
        memories = [type("Memory", (), {"max_pages": max_pages})()] if max_pages is not None else []
        store = type("Store", (), {"ctx": type("Ctx", (), {"stack": stack})(), "low_heap": object() if low else None})()
        return type("Target", (), {"store": store, "instance": type("Instance", (), {"memories": memories})()})()

    window = StoreTarget._direct_stack_window
    assert window(fake(None, False)) == (0x8000_1000, 0x8080_0000)
    assert window(fake(65536, True)) == (0x8000_1000, 0x8080_0000)  # a low Store mirrors up to 2 GiB only
    assert window(fake(0x8040, False)) == (0x8040_0000, 0x8080_0000)  # the mirror may reach into the stack
    assert window(fake(65536, False)) == (1 << 32, 1 << 32)  # ... or past it: no direct reads


def test_unmapped_memory_is_an_error_reply(guest):
    guest.handshake()
    assert guest.ask(b"mffffffffffff0000,4") == b"E14"  # EFAULT
    assert guest.ask(b"m%x,4" % (guest.code.end + 0x100000000)) == b"E14"
    assert guest.ask(b"xffffffffffff0000,4") == b"E14"
    # A read running past the end of a region is short, not an error (gdbserver's behaviour).
    tail = guest.ask(b"m%x,20" % (guest.code.end - 4))
    assert len(tail) == 8
    assert guest.ask(b"QEnableErrorStrings") == b"OK"
    reply = guest.ask(b"mffffffffffff0000,4")
    assert ERROR_RE.fullmatch(reply) and reply.startswith(b"E14;")
    assert b"cannot access memory" in bytes.fromhex(reply[4:].decode())


def test_code_is_read_only(guest):
    guest.handshake()
    square = guest.entry_pc("square")
    assert guest.ask(b"M%x,1:90" % square) == b"E01"  # EPERM
    assert guest.ask(b"M%x,2:9090" % (square + 7)) == b"E01"
    assert guest.ask(b"X%x,1:\x90" % square) == b"E01"
    assert guest.ask(b"Mffffffffffff0000,1:00") == b"E14"
    assert guest.code_is_pristine()


# ---------------------------------------------------------------- breakpoints

def test_breakpoints_inserted_and_removed_again_and_again_edit_their_sites_each_time(guest):
    # gdb's `next` inserts and removes its breakpoint at the return address
    # at every stop: where each goes is memoized with the code
    # (StoreTarget._code_fact, _one_site), the edit is made every time, and
    # errors are not memoized.
    guest.handshake()
    square, fact = guest.entry_pc("square"), guest.entry_pc("fact")
    offsets = [guest.code.offset_of(square)]
    for _ in range(3):
        assert guest.ask(b"Z0,%x,1" % square) == b"OK"
        assert guest.ask(b"Z0,%x,1" % square) == b"OK"  # idempotent: one reference
        assert guest.code.read_raw(square, 1) == b"\xe8" and guest.code.enabled_site_offsets() == offsets
        assert guest.ask(b"Z0,%x,1" % (square + 5)) == b"OK"  # displaced, carried by the same site
        assert guest.ask(b"z0,%x,1" % square) == b"OK"
        assert guest.code.enabled_site_offsets() == offsets
        assert guest.ask(b"z0,%x,1" % (square + 5)) == b"OK"
        assert guest.code_is_pristine()
        assert guest.ask(b"Z0,%x,1" % (square + 1)) == b"E16"
        # A function's first byte: its ENTRY site carries it.
        assert guest.ask(b"Z0,%x,1" % guest.start_pc("fact")) == b"OK"
        assert guest.code.enabled_site_offsets() == [guest.code.offset_of(fact)]
        assert guest.ask(b"z0,%x,1" % guest.start_pc("fact")) == b"OK"
        assert guest.code_is_pristine()


def test_breakpoint_at_patch_sites_and_instructions_between_them(guest):
    guest.handshake()
    square = guest.entry_pc("square")
    assert guest.ask(b"Z0,%x,1" % (square + 1)) == b"E16"  # inside a site: EINVAL
    # After it: an instruction, not a site; honoured through its carrier site
    # (codemem.displaced), which is the one patched.
    assert guest.ask(b"Z0,%x,1" % (square + 5)) == b"OK"
    assert guest.code.enabled_site_offsets() == [guest.code.offset_of(square)]
    assert guest.ask(b"z0,%x,1" % (square + 5)) == b"OK"
    assert guest.code_is_pristine()
    assert guest.ask(b"Z0,%x,1" % (square + 7)) == b"E16"  # inside `mov rbp, rsp`: not an instruction boundary
    assert guest.ask(b"Z0,ffffffffffff0000,1") == b"E14"    # no code there
    assert guest.ask(b"Z0,10,1") == b"E14"                  # linear memory (the mirror) is not code
    assert guest.ask(b"z0,%x,1" % (square + 1)) == b"E16"
    assert guest.ask(b"z0,%x,1" % square) == b"OK"          # removing an absent breakpoint
    assert guest.ask(b"Z2,10,4") == b"OK"                   # a watchpoint on linear memory (tests/test_agent_session.py)
    assert guest.ask(b"z2,10,4") == b"OK"
    assert guest.code_is_pristine()
    assert guest.ask(b"Z1,%x,1" % square) == b"OK"          # hardware: served as a software one
    assert guest.ask(b"Z0,%x,1" % square) == b"OK"          # idempotent
    assert guest.code.enabled_site_offsets() == [guest.code.offset_of(square)]
    assert guest.ask(b"z1,%x,1" % square) == b"OK"
    assert guest.code_is_pristine()


def test_breakpoint_then_continue_stops_with_swbreak(guest):
    guest.handshake()
    fact = guest.entry_pc("fact")
    assert guest.ask(b"Z0,%x,1" % fact) == b"OK"
    kind, signal, pairs = parse_stop(guest.resume(b"c"))
    assert (kind, signal) == ("T", 5)
    assert pairs["thread"] == "p%x.1" % guest.target.pid
    assert "swbreak" in pairs
    assert reg_value(pairs["10"]) == fact
    regs = guest.registers()
    assert pairs["06"] == regs[G_RBP:G_RBP + 8].hex() and pairs["07"] == regs[G_RSP:G_RSP + 8].hex()
    # The recursion stops at every level: fact(5) .. fact(1).
    for _ in range(4):
        assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == fact
    assert guest.ask(b"z0,%x,1" % fact) == b"OK"
    assert parse_stop(guest.resume(b"c"))[:2] == ("W", 0)
    assert guest.target.results == [DEMO_RESULT]
    # After the exit: resumes answer the exit again, stop-state requests fail cleanly.
    assert guest.ask(b"c") == b"W00;process:%x" % guest.target.pid
    assert guest.ask(b"g") == b"E02"
    assert guest.ask(b"qfThreadInfo") == b"l"


def test_the_threads_document_lists_the_guest_thread_as_qfthreadinfo_does_and_nothing_after_the_exit(guest):
    guest.handshake()
    pid = guest.target.pid
    assert guest.ask(b"qfThreadInfo") == b"mp%x.1" % pid
    assert guest.ask(b"qXfer:threads:read::0,1000") == (
        b'l<?xml version="1.0"?>\n<threads><thread id="p%x.1"/></threads>\n' % pid)
    # Read in pieces as gdb does with a small packet size: m while more follows.
    first = guest.ask(b"qXfer:threads:read::0,10")
    assert first.startswith(b"m") and len(first) == 1 + 0x10
    assert guest.ask(b"qXfer:threads:read:main:0,1000").startswith(b"E")
    # The document is kept, but follows what it depends on: the thread ids
    # without multiprocess, the exit.
    assert guest.ask(b"qSupported:swbreak+").startswith(b"PacketSize=")
    assert guest.ask(b"qXfer:threads:read::0,1000") == b'l<?xml version="1.0"?>\n<threads><thread id="1"/></threads>\n'
    assert guest.ask(b"qSupported:multiprocess+;swbreak+").startswith(b"PacketSize=")
    assert guest.ask(b"qXfer:threads:read::0,1000") == (
        b'l<?xml version="1.0"?>\n<threads><thread id="p%x.1"/></threads>\n' % pid)
    assert parse_stop(guest.resume(b"c"))[:2] == ("W", 0)
    assert guest.ask(b"qXfer:threads:read::0,1000") == b'l<?xml version="1.0"?>\n<threads></threads>\n'


def test_a_stops_patch_changes_share_one_unpublish_and_publish(guest, monkeypatch):
    """gdb's dance at every hit (z0, step, Z0, continue): the changes of one
    stop go into one edit; the image is writable only while the guest is
    stopped and executable again before it runs."""
    from codemem.code import CodeMemory
    from procmaps import mapping_perms

    guest.handshake()
    fact = guest.entry_pc("fact")
    assert guest.ask(b"Z0,%x,1" % fact) == b"OK"
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == fact
    calls = []
    for name in ("unpublish", "publish"):
        original = getattr(CodeMemory, name)
        monkeypatch.setattr(CodeMemory, name, lambda self, *a, _f=original, _n=name, **k: (calls.append(_n), _f(self, *a, **k))[1])
    assert guest.ask(b"z0,%x,1" % fact) == b"OK"
    assert mapping_perms(fact) == "rw-p", "stopped: the edit stays open"
    kind, _, pairs = parse_stop(guest.resume(b"vCont;s:p%x.1" % guest.target.pid))
    assert kind == "T" and reg_value(pairs["10"]) != fact
    # One pair for the z0 and the step's arming; the step's stop opened the
    # next edit at once, to disarm the step.
    assert calls == ["unpublish", "publish", "unpublish"]
    assert guest.ask(b"Z0,%x,1" % fact) == b"OK"
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == fact
    assert calls == ["unpublish", "publish"] * 2, "the step's disarming and the Z0 shared the second pair"
    # A stop that changes nothing leaves the code published.
    assert mapping_perms(fact) == mapping_perms(guest.code.base) == "r-xp"


def test_swbreak_only_when_the_client_offered_it(guest):
    guest.handshake("multiprocess+")
    square = guest.entry_pc("square")
    assert guest.ask(b"Z0,%x,1" % square) == b"OK"
    _, _, pairs = parse_stop(guest.resume(b"c"))
    assert reg_value(pairs["10"]) == square and "swbreak" not in pairs


def test_breakpoints_and_stops_without_multiprocess(guest):
    guest.handshake("swbreak+")
    fact = guest.entry_pc("fact")
    guest.ask(b"Z0,%x,1" % fact)
    _, _, pairs = parse_stop(guest.resume(b"c"))
    assert pairs["thread"] == "1"
    guest.ask(b"z0,%x,1" % fact)
    assert guest.resume(b"c") == b"W00"


# ---------------------------------------------------------------- stepping

def test_step_stops_at_the_next_sequence_point(guest):
    """From the invoked function's first byte a step runs `push rbp`, then
    `mov rbp, rsp` (each a stop, the stub runs them), then reaches the ENTRY
    site and each sequence point in order; a call is entered at the callee's
    first byte."""
    guest.handshake()
    run_sites = [pc for pc, p in guest.points("run")]
    callee = guest.start_pc("sum_of_squares")
    start = guest.start_pc("run")
    for expected in (start + 1, guest.entry_pc("run")):
        kind, signal, pairs = parse_stop(guest.resume(b"s"))
        assert (kind, signal) == ("T", 5) and reg_value(pairs["10"]) == expected
    pcs = [guest.entry_pc("run")]
    for _ in range(len(run_sites)):
        kind, signal, pairs = parse_stop(guest.resume(b"s"))
        assert (kind, signal) == ("T", 5) and "swbreak" not in pairs
        pc = reg_value(pairs["10"])
        # A step leaves no site of its own enabled.
        assert guest.code.enabled_site_offsets() == []
        pcs.append(pc)
        if pc not in run_sites:
            break
    # Straight-line code up to the call: each step is the next sequence point in order.
    assert pcs[-1] == callee
    body = pcs[:-1]
    assert body == run_sites[:len(body)]
    assert guest.table.sequence_point_at_or_before(guest.code.offset_of(body[-1])).kind == SequencePointKind.INSTRUCTION


def test_step_out_of_a_callee_stops_at_the_return_point(guest):
    guest.handshake()
    square = guest.entry_pc("square")
    guest.ask(b"Z0,%x,1" % square)
    guest.resume(b"c")
    guest.ask(b"z0,%x,1" % square)
    square_sites = {pc for pc, _ in guest.points("square")}
    for _ in range(len(square_sites) + 1):
        pc = reg_value(parse_stop(guest.resume(b"s"))[2]["10"])
        if pc not in square_sites:
            break
    caller_points = {pc: p for pc, p in guest.points("sum_of_squares")}
    assert pc in caller_points and caller_points[pc].kind == SequencePointKind.RETURN_POINT
    assert guest.resume(b"c").startswith(b"W00")
    assert guest.target.results == [DEMO_RESULT]


def test_vcont_range_step_runs_until_it_leaves_the_range(guest):
    guest.handshake()
    assert guest.ask(b"vCont?") == b"vCont;c;C;s;S;r"
    run = guest.function("run")
    start, end = guest.code.base + run.native_start, guest.code.base + run.native_end
    thread = b"p%x.1" % guest.target.pid
    # A user breakpoint inside the range ends the range step there.
    inside = guest.points("run")[4][0]
    guest.ask(b"Z0,%x,1" % inside)
    _, _, pairs = parse_stop(guest.resume(b"vCont;r%x,%x:%s" % (start, end, thread)))
    assert reg_value(pairs["10"]) == inside
    guest.ask(b"z0,%x,1" % inside)
    # Otherwise it runs until the pc leaves [start, end): the call into
    # sum_of_squares, shown at its first byte.
    _, _, pairs = parse_stop(guest.resume(b"vCont;r%x,%x:%s;c" % (start, end, thread)))
    assert reg_value(pairs["10"]) == guest.start_pc("sum_of_squares")
    assert guest.code.enabled_site_offsets() == []
    # Leftmost matching action wins; an action for another thread is skipped.
    assert parse_stop(guest.resume(b"vCont;s:p%x.7;c" % guest.target.pid))[:2] == ("W", 0)
    assert guest.target.results == [DEMO_RESULT]


def test_a_range_step_runs_the_range_at_full_speed_and_stops_once_where_it_leaves(guest, monkeypatch):
    """No site inside the range is armed (issue 13): sum_of_squares' loop runs
    through many sequence points of the range, and the guest stops once, at
    the first place outside it (square's entry: a call in the range), not at
    every point as a stepped range would."""
    guest.handshake()
    thread = b"p%x.1" % guest.target.pid
    caller = guest.function("sum_of_squares")
    guest.ask(b"Z0,%x,1" % guest.entry_pc("sum_of_squares"))
    guest.resume(b"c")
    guest.ask(b"z0,%x,1" % guest.entry_pc("sum_of_squares"))
    body = [pc for pc, p in guest.points("sum_of_squares") if p.kind == SequencePointKind.INSTRUCTION]
    start, end = body[0], guest.code.base + caller.native_end
    guest.ask(b"Z0,%x,1" % body[0])
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == body[0]
    guest.ask(b"z0,%x,1" % body[0])
    steps = []
    original = guest.target._resume_step
    monkeypatch.setattr(guest.target, "_resume_step", lambda: (steps.append(1), original())[1])
    _, _, pairs = parse_stop(guest.resume(b"vCont;r%x,%x:%s" % (start, end, thread)))
    assert reg_value(pairs["10"]) == guest.start_pc("square")  # entered: shown at its first byte
    assert len(steps) == 1, f"{len(steps)} stops inside the range"
    assert guest.code.enabled_site_offsets() == []


def test_vcont_for_no_thread_of_ours_is_refused(guest):
    guest.handshake()
    assert guest.ask(b"vCont;c:p%x.1" % (guest.target.pid + 1)) == b"E02"
    assert guest.ask(b"vCont;t") == b"OK"
    assert guest.target.current_stop is not None


# ---------------------------------------------------------------- traps

RUNAWAY_WAT = """
(module
  (func $f (export "f") (param $depth i32) (param $magic i32) (result i32)
    (call $f (i32.add (local.get $depth) (i32.const 1)) (local.get $magic))))
"""


@pytest.fixture
def runaway():
    yield from _wat_guest(RUNAWAY_WAT, "runaway", (0, 0x5EED))


def test_at_a_stack_exhaustion_trap_rsi_is_the_argument_array_the_arguments_read_from(runaway):
    """The stack check traps at the ENTRY point, before the prologue copies
    the parameters into their slots: a debugger reads the arguments from the
    argument array in rsi there (dwarf_translate's entry locations, the wasm
    dialect's locals at ENTRY).  The trap stub's own ``lea rsi`` must not
    show: the stop reports the array (codemem.abi "Traps")."""
    runaway.handshake()
    stop = runaway.resume(b"c")
    assert stop.startswith(b"T0b"), stop
    regs = runaway.registers()
    rip, rbp, rsp, rsi = (struct.unpack_from("<Q", regs, at)[0] for at in (G_RIP, G_RBP, G_RSP, G_RSI))
    assert rip == runaway.entry_pc("f")
    frames = runaway.store.backtrace(rip, rbp, rsp, limit=1 << 20)
    assert len(frames) > 1000 and {frame.func_name for frame in frames} == {"f"}, len(frames)
    depth, magic = struct.unpack("<2Q", bytes.fromhex(runaway.ask(b"m%x,10" % rsi).decode()))
    assert (depth, magic) == (len(frames) - 1, 0x5EED)


# ---------------------------------------------------------------- register writes

def test_register_writes_the_runtime_owns_are_refused(guest):
    guest.handshake()
    fact = guest.entry_pc("fact")
    guest.ask(b"Z0,%x,1" % fact)
    guest.resume(b"c")
    guest.ask(b"z0,%x,1" % fact)
    regs = guest.registers()
    assert guest.ask(b"P10=" + le64(fact + 1)) == b"E01"                 # not a sequence point
    assert guest.ask(b"P10=" + le64(fact + 5)) == b"E01"                 # an instruction, not a site
    assert guest.ask(b"P10=" + le64(0x1000)) == b"E01"                   # not code at all
    assert guest.ask(b"P7=" + le64(0x1000)) == b"E01"                    # rsp off the stack
    assert guest.ask(b"P6=" + le64(0x1000)) == b"E01"                    # rbp off the stack
    assert guest.ask(b"Pf=" + le64(0x1000)) == b"E01"                    # r15: the instance context
    # A site of another function, or rsp moved within the stack: each could
    # be part of a state a debugger writes one register at a time (a popped
    # frame, an inferior call), so the state is checked as a whole when the
    # guest resumes: refused then as the fault it would be natively (a
    # SIGSEGV stop with the reason as console output; an error reply makes
    # gdb retry for ever), and the guest stays stopped with what was written.
    other = guest.point_pc("run", RUN_PUSH_FACT_ARG)  # a site of the caller, with fact's rsp and rbp
    bad_rsp = bytearray(regs)
    bad_rsp[G_RSP] ^= 0x10
    assert guest.ask(b"G" + bytes(bad_rsp).hex().encode()) == b"OK"
    for resume in (b"c", b"vCont;s:p%x.1" % guest.target.pid):
        console, stop = guest.send(resume)
        assert b"cannot resume" in bytes.fromhex(console[1:].decode()) and stop.startswith(b"T0b"), (console, stop)
        assert guest.target.current_stop is not None and guest.registers() == bytes(bad_rsp)
    assert guest.ask(b"G" + regs.hex().encode()) == b"OK"
    assert guest.ask(b"P10=" + le64(other)) == b"OK"
    console, stop = guest.send(b"c")
    assert stop.startswith(b"T0b") and reg_value(parse_stop(stop)[2]["10"]) == other, stop
    assert guest.ask(b"G" + regs.hex().encode()) == b"OK"                # echoing g back is fine
    assert guest.ask(b"G00") == b"E16"
    assert guest.registers() == regs
    assert guest.resume(b"c").startswith(b"W00")
    assert guest.target.results == [DEMO_RESULT]


def _stop_after_fact_returns(guest) -> int:
    after = guest.point_pc("run", RUN_AFTER_FACT)
    guest.ask(b"Z0,%x,1" % after)
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == after
    guest.ask(b"z0,%x,1" % after)
    return after


def test_rip_write_to_a_sequence_point_replays_the_call(guest):
    """Back from fact(5) to before its argument is pushed: fact(5) runs again,
    run() still returns 505."""
    guest.handshake()
    _stop_after_fact_returns(guest)
    fact = guest.entry_pc("fact")
    guest.ask(b"Z0,%x,1" % fact)
    back = guest.point_pc("run", RUN_PUSH_FACT_ARG)
    assert guest.ask(b"P10=" + le64(back)) == b"OK"
    assert reg_value(parse_stop(guest.ask(b"?"))[2]["10"]) == back
    assert int.from_bytes(guest.registers()[G_RIP:G_RIP + 8], "little") == back
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == fact  # called again
    guest.ask(b"z0,%x,1" % fact)
    assert guest.resume(b"c").startswith(b"W00")
    assert guest.target.results == [DEMO_RESULT]


def test_rip_write_reuses_the_operand_slot_predictably(guest):
    """Back from fact's return to the `call $fact` itself: operand slot 0 now
    holds fact(5) = 120, so the call is fact(120), which is 0 in i32 (120! has
    116 factors of two), and run() returns 385 + 0."""
    guest.handshake()
    _stop_after_fact_returns(guest)
    assert guest.ask(b"P10=" + le64(guest.point_pc("run", RUN_CALL_FACT))) == b"OK"
    assert guest.resume(b"c").startswith(b"W00")
    fact120 = 1
    for n in range(2, 121):
        fact120 = (fact120 * n) & 0xFFFFFFFF
    assert guest.target.results == [385 + fact120] == [385]


def _entry_rip_scenario(case: str) -> None:
    """Run in a subprocess (a stub that accepts these writes crashes the
    host): moving rip into or out of a function's entry site, which lies before
    the prologue, must be refused; afterwards the guest still returns 505."""
    engine = codemem.Engine(debug=True)
    guest = GuestHarness(codemem.Module(engine, DEMO_WASM.read_bytes(), name="demo.O0"))
    guest.handshake()
    body = guest.point_pc("run", RUN_PUSH_FACT_ARG)
    if case == "body-to-entry":
        guest.ask(b"Z0,%x,1" % body)
        guest.resume(b"c")
        guest.ask(b"z0,%x,1" % body)
        reply = guest.ask(b"P10=" + le64(guest.entry_pc("run")))
    else:  # "entry-to-body": still at the entry stop (run's first byte), before its prologue
        reply = guest.ask(b"P10=" + le64(body))
    # Accepted as one register of a state to come; refused as the state the
    # guest would resume from (reported as a SIGSEGV stop).
    print("write", reply.decode(), flush=True)
    print("reply", guest.send(b"c")[-1].decode(), flush=True)
    guest.ask(b"P10=" + le64(body if case == "body-to-entry" else guest.start_pc("run")))
    print("end", guest.resume(b"c").decode(), guest.target.results, flush=True)


@pytest.mark.parametrize("case", ["body-to-entry", "entry-to-body"])
def test_rip_write_into_or_out_of_a_prologue_is_refused(case):
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']; "
            "import test_session; test_session._entry_rip_scenario(sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), case], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"host died (status {proc.returncode}): {proc.stdout}{proc.stderr[-2000:]}"
    assert "reply T0b" in proc.stdout, proc.stdout  # a SIGSEGV stop: the guest cannot resume there
    assert f"[{DEMO_RESULT}]" in proc.stdout, proc.stdout


# ---------------------------------------------------------------- monitor

# ------------------------------------------------- registers mirroring slots

MIRRORED_WAT = """
(module
  (func (export "f") (param $x i32) (result i32) (local $y i32)
    local.get $x
    i32.const 1
    i32.add
    local.set $y
    local.get $y      ;; the point the tests stop at: $y is in its slot and in a register
    local.get $y
    i32.mul))
"""


def _wat_guest(wat: str, name: str, args: tuple):
    """A harness running export ``f`` of the module ``wat`` with ``args``."""
    import wasmtime

    module = codemem.Module(codemem.Engine(debug=True), wasmtime.wat2wasm(wat), name=name)
    harness = GuestHarness(module, "f", args)
    yield harness
    harness.close()


@pytest.fixture
def mirrored():
    yield from _wat_guest(MIRRORED_WAT, "mirrored", (4,))


def _stop_where_y_is_mirrored(guest):
    """Runs to the first ``local.get $y``; returns (rbp, y's slot, y's mirror register)."""
    guest.handshake()
    func = guest.function("f")
    points = [(pc, p) for pc, p in guest.points("f") if p.kind == SequencePointKind.INSTRUCTION]
    pc = points[4][0]  # get x, const 1, add, set y, >get y<
    assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == pc
    slot = next(local.frame_offset for local in guest.table.locals(func) if local.index == 1)
    mirrors = dict((offset, name) for name, offset in guest.table.register_mirrors_at(guest.code.offset_of(pc)))
    assert slot in mirrors, f"$y is not mirrored at the stop: {mirrors}"
    rbp = struct.unpack_from("<Q", guest.registers(), G_RBP)[0]
    return rbp, slot, mirrors[slot]


def test_a_local_written_by_the_debugger_is_what_the_guest_uses(mirrored):
    rbp, slot, _ = _stop_where_y_is_mirrored(mirrored)
    assert mirrored.ask(b"m%x,8" % (rbp + slot)) == le64(5)
    assert mirrored.ask(b"M%x,8:%s" % (rbp + slot, le64(10))) == b"OK"
    assert parse_stop(mirrored.resume(b"c"))[:2] == ("W", 0)
    assert mirrored.target.results == [100], "the guest must use the slot's new value, not its register copy"


def test_a_mirror_register_written_by_the_debugger_reaches_its_slot(mirrored):
    rbp, slot, register = _stop_where_y_is_mirrored(mirrored)
    regnum = arch_amd64.regnum_by_name(register)
    assert mirrored.ask(b"P%x=%s" % (regnum, le64(7))) == b"OK"
    assert mirrored.ask(b"m%x,8" % (rbp + slot)) == le64(7)
    assert parse_stop(mirrored.resume(b"c"))[:2] == ("W", 0)
    assert mirrored.target.results == [49]


MEMORY_WAT = """
(module
  (memory 1)
  (func (export "f") (param $p i32) (result i32)
    local.get $p
    i32.const 7
    i32.store
    local.get $p      ;; the point the tests stop at: memory 0's base and length are in registers
    i32.load))
"""


@pytest.fixture
def memory_guest():
    yield from _wat_guest(MEMORY_WAT, "memory", (16,))


def _context_mirror_point(guest) -> tuple[int, str]:
    """(pc of the ``local.get $p`` before the load, the register holding memory 0's base there)."""
    points = [pc for pc, p in guest.points("f") if p.kind == SequencePointKind.INSTRUCTION]
    pc = points[3]  # get p, const 7, store, >get p<
    context = dict(guest.table.context_mirrors_at(guest.code.offset_of(pc)))
    base = next((name for name, source in context.items() if source is MirrorSource.MEMORY0_BASE), None)
    assert base is not None, f"memory 0's base is not in a register at the load: {context}"
    return pc, base


def test_a_register_holding_memory_base_cannot_be_written(memory_guest):
    memory_guest.handshake()
    pc, base_register = _context_mirror_point(memory_guest)
    assert memory_guest.ask(b"Z0,%x,1" % pc) == b"OK"
    assert reg_value(parse_stop(memory_guest.resume(b"c"))[2]["10"]) == pc
    regnum = arch_amd64.regnum_by_name(base_register)
    assert memory_guest.ask(b"P%x=%s" % (regnum, le64(0x10))) == b"E01"
    regs = bytearray(memory_guest.registers())
    struct.pack_into("<Q", regs, arch_amd64.register_by_name(base_register).offset, 0x10)
    assert memory_guest.ask(b"G" + regs.hex().encode()) == b"E01"
    assert parse_stop(memory_guest.resume(b"c"))[:2] == ("W", 0)
    assert memory_guest.target.results == [7]


def test_moving_rip_to_a_point_that_trusts_memory_registers_reloads_them(memory_guest):
    # Stop before anything cached memory's base; scribble on the register that
    # will hold it at the load, then move rip to the load's point, skipping the
    # code that fills it.  The resume must reload the register from the
    # instance context (else the load would use 0x10 as memory's base).
    memory_guest.handshake()
    pc, base_register = _context_mirror_point(memory_guest)
    first = memory_guest.points("f")
    first_pc = next(p for p, point in first if point.kind == SequencePointKind.INSTRUCTION)
    assert memory_guest.ask(b"Z0,%x,1" % first_pc) == b"OK"
    assert reg_value(parse_stop(memory_guest.resume(b"c"))[2]["10"]) == first_pc
    assert dict(memory_guest.table.context_mirrors_at(memory_guest.code.offset_of(first_pc))) == {}
    assert memory_guest.ask(b"P%x=%s" % (arch_amd64.regnum_by_name(base_register), le64(0x10))) == b"OK"
    assert memory_guest.ask(b"P%x=%s" % (arch_amd64.regnum_by_name("rip"), le64(pc))) == b"OK"
    assert memory_guest.ask(b"z0,%x,1" % first_pc) == b"OK"
    assert parse_stop(memory_guest.resume(b"c"))[:2] == ("W", 0)
    assert memory_guest.target.results == [0], "the store was skipped: the load reads untouched memory"


def test_a_resume_reloads_memory_registers_with_the_loads_the_code_makes(memory_guest):
    """A resume's context mirrors are reloaded by walking _CONTEXT_LOADS (the
    resume's fast path): they must read what _context_value, the compiled
    code's own loads, reads, for memory 0's base and its length."""
    from gdbstub import target as target_module

    memory_guest.handshake()
    pc, _ = _context_mirror_point(memory_guest)
    assert memory_guest.ask(b"Z0,%x,1" % pc) == b"OK"
    assert reg_value(parse_stop(memory_guest.resume(b"c"))[2]["10"]) == pc
    vmctx = struct.unpack_from("<Q", memory_guest.registers(), arch_amd64.register_by_name("r15").offset)[0]
    for source in (MirrorSource.MEMORY0_BASE, MirrorSource.MEMORY0_LENGTH):
        value = vmctx
        for offset in target_module._CONTEXT_LOADS[source]:
            value = codemem.native.ffi.cast("uint64_t *", value + offset)[0]
        assert value == target_module._context_value(vmctx, source), source
    assert target_module._context_value(vmctx, MirrorSource.MEMORY0_LENGTH) == 65536
    facts = memory_guest.target._resume_facts(pc)
    assert {loads for _, loads in facts.context_mirrors} <= set(target_module._CONTEXT_LOADS.values())
    assert facts.context_mirrors, "the point trusts memory 0's registers"
    assert parse_stop(memory_guest.resume(b"c"))[:2] == ("W", 0)
    assert memory_guest.target.results == [7]


def test_a_resumes_code_facts_are_found_again_when_the_registered_code_changes(guest, monkeypatch):
    """_resume_facts keeps its last answer apart from the code-fact memo:
    it must not outlive a registry change (a module registered or dropped
    may change what the pc is)."""
    guest.handshake()
    pc = guest.entry_pc("sum_of_squares")
    assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == pc
    target = guest.target
    facts = target._resume_facts(pc)
    assert target._resume_facts(pc) is facts
    assert facts.in_function and facts.frame_setup is None and facts.return_slot is None
    registry = target.store.registry
    monkeypatch.setattr(registry, "generation", registry.generation + 1)
    again = target._resume_facts(pc)
    assert again is not facts and again == facts
    assert target._resume_facts(guest.start_pc("sum_of_squares")).frame_setup == (
        guest.start_pc("sum_of_squares"), pc)


def test_registers_as_the_guest_stopped_resume_without_the_general_check_and_written_ones_with_it(
        guest, monkeypatch):
    """The resume's fast settle (rip, rsp, rbp and r15 as the guest
    stopped, where the general check has nothing to check) leaves the
    general check (_settle_registers) to every state that differs."""
    guest.handshake()
    pc = guest.entry_pc("sum_of_squares")
    assert guest.ask(b"Z0,%x,1" % pc) == b"OK"
    assert reg_value(parse_stop(guest.resume(b"c"))[2]["10"]) == pc
    target = guest.target
    checked = []
    original = target._settle_registers
    monkeypatch.setattr(target, "_settle_registers", lambda stopped: (checked.append(stopped), original(stopped))[1])
    assert reg_value(parse_stop(guest.resume(b"s"))[2]["10"]) != pc
    assert checked == [], "nothing written: no general check"
    rbp = struct.unpack_from("<Q", guest.registers(), G_RBP)[0]
    assert guest.ask(b"P%x=%s" % (arch_amd64.regnum_by_name("rbp"), le64(rbp + 8))) == b"OK"
    replies = guest.send(b"s")
    assert len(checked) == 1, "rbp written: the general check"
    assert parse_stop(replies[-1])[:2] == ("T", 11), "an rbp off its frame is refused (SIGSEGV)"
    assert guest.ask(b"P%x=%s" % (arch_amd64.regnum_by_name("rbp"), le64(rbp))) == b"OK"
    assert parse_stop(guest.resume(b"c"))[:2] == ("W", 0)
    assert len(checked) == 1, "written back as it stopped: nothing to check"
    assert guest.target.results == [DEMO_RESULT]


def monitor(guest, command: str) -> str:
    replies = guest.send(b"qRcmd," + hexs(command))
    assert replies[-1] == b"OK" and all(r.startswith(b"O") for r in replies[:-1]), replies
    return "".join(bytes.fromhex(r[1:].decode()).decode() for r in replies[:-1])


def test_monitor_commands(guest):
    guest.handshake()
    text = monitor(guest, "help")
    for command in ("help", "stores", "patches", "frame-table"):
        assert re.search(rf"^\s+{command}\b", text, re.M), command
    assert monitor(guest, "") == text
    stores = monitor(guest, "stores")
    assert f"store {guest.target.pid}" in stores and "stopped" in stores
    assert f"{guest.code.base:#x}-{guest.code.end:#x}" in stores
    assert f"{guest.table.num_sites} patch sites, 0 enabled" in stores
    assert monitor(guest, "patches") == "no patch site is enabled\n"
    square = guest.entry_pc("square")
    guest.ask(b"Z0,%x,1" % square)
    patches = monitor(guest, "patches")
    assert patches.strip() == f"{square:#x} demo.O0!square refs=1 breakpoint"
    table = monitor(guest, "frame-table fact")
    fact = guest.function("fact")
    assert table.splitlines()[0].startswith(f"fact (wasm function {fact.wasm_index}): {guest.start_pc('fact'):#x}-")
    point_lines = [line for line in table.splitlines() if " wasm@" in line]
    assert len(point_lines) == len(guest.points("fact"))
    assert all(line.endswith(" site") for line in point_lines)
    assert monitor(guest, "frame-table 2") == table  # by wasm index too
    assert monitor(guest, "frame-table nosuch") == "no function 'nosuch'\n"
    assert "unknown monitor command 'bogus'" in monitor(guest, "bogus")
    guest.ask(b"z0,%x,1" % square)


# ---------------------------------------------------------------- vFile

@pytest.fixture
def guest_with_images(demo_module, tmp_path):
    images = DebugImageSet(tmp_path / "cache", process_tag="h5test")
    harness = GuestHarness(demo_module, config=SessionConfig(images=images, file_server=ImageFileServer(images)))
    yield harness
    harness.close()


def vfile_reply(reply: bytes) -> tuple[int, int | None, bytes]:
    match = re.fullmatch(rb"F(-?[0-9a-f]+)(?:,([0-9a-f]+))?(?:;(.*))?", reply, re.S)
    assert match, reply
    errno = int(match.group(2), 16) if match.group(2) else None
    return int(match.group(1), 16), errno, match.group(3) or b""


def test_vfile_serves_only_the_debug_images(guest_with_images, tmp_path):
    guest = guest_with_images
    guest.handshake()
    library_list = guest.ask(b"qXfer:libraries-svr4:read::0,3fff")
    assert library_list.startswith(b"l<library-list-svr4")
    names = re.findall(rb'name="([^"]+)"', library_list)
    assert names and all(Path(n.decode()).is_relative_to(tmp_path / "cache") for n in names)
    assert guest.ask(b"vFile:setfs:0") == b"F0"
    fd, errno, _ = vfile_reply(guest.ask(b"vFile:open:%s,0,0" % names[0].hex().encode()))
    assert fd >= 0 and errno is None
    count, _, data = vfile_reply(guest.ask(b"vFile:pread:%x,40,0" % fd))
    assert count == len(data) == 0x40 and data.startswith(b"\x7fELF")
    assert data == Path(names[0].decode()).read_bytes()[:0x40]
    size, _, stat = vfile_reply(guest.ask(b"vFile:fstat:%x" % fd))
    assert size == len(stat) == 64
    assert guest.ask(b"vFile:pread:%x,ffffffffffff,0" % fd).startswith(b"F")  # clamped to a packet
    assert guest.ask(b"vFile:close:%x" % fd) == b"F0"
    assert vfile_reply(guest.ask(b"vFile:close:%x" % fd))[:2] == (-1, 9)  # EBADF

    enoent, eacces = (-1, 2), (-1, 13)
    real = names[0].decode()
    for path in ("/etc/passwd", str(ROOT / "pyproject.toml"), real + "/", real.replace("/cache/", "/cache/./"),
                 real.replace("/cache/", "/cache/../cache/"), os.path.basename(real), ""):
        assert vfile_reply(guest.ask(b"vFile:open:%s,0,0" % hexs(path)))[:2] == enoent, path
    for flags in (1, 2, 0x200, 0x400, 0x8):  # O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND
        assert vfile_reply(guest.ask(b"vFile:open:%s,%x,1ff" % (names[0].hex().encode(), flags)))[:2] == eacces
    assert vfile_reply(guest.ask(b"vFile:pwrite:3,0,abc"))[:2] == eacces
    assert vfile_reply(guest.ask(b"vFile:unlink:%s" % names[0].hex().encode()))[:2] == eacces
    assert Path(real).exists()


def test_vfile_without_images_finds_nothing(guest):
    guest.handshake()
    assert vfile_reply(guest.ask(b"vFile:open:%s,0,0" % hexs("/etc/passwd")))[:2] == (-1, 2)
    assert guest.ask(b"qXfer:libraries-svr4:read::0,3fff") == b""


# ---------------------------------------------------------------- detach, kill

def test_detach_restores_every_site_and_the_guest_finishes(guest):
    guest.handshake()
    for name in ("square", "fact", "sum_of_squares"):
        assert guest.ask(b"Z0,%x,1" % guest.entry_pc(name)) == b"OK"
    guest.resume(b"c")            # sum_of_squares
    guest.resume(b"s")            # a step in flight is also a set of enabled sites ...
    assert guest.send(b"s") == []  # ... and this one is still pending when we detach
    assert guest.ask(b"D") == b"OK"
    assert guest.session.finished
    assert guest.code_is_pristine()
    exited = guest.finish()
    assert exited.results == [DEMO_RESULT]
    assert guest.code_is_pristine()


def test_detach_names_the_process(guest):
    guest.handshake()
    assert guest.ask(b"D;%x" % (guest.target.pid + 1)) == b"E02"
    assert not guest.session.finished
    assert guest.ask(b"D;%x" % guest.target.pid) == b"OK"
    assert guest.finish().results == [DEMO_RESULT]


def test_kill_ends_the_guest(guest):
    guest.handshake()
    fact = guest.entry_pc("fact")
    guest.ask(b"Z0,%x,1" % fact)
    guest.resume(b"c")
    # gdb reads no reply to `k`; lldb waits for one, as lldb-server's X09.
    assert guest.send(b"k") == [b"X09;process:%x" % guest.target.pid]
    assert guest.session.finished
    assert guest.target.join(EVENT_TIMEOUT)
    exited = guest.finish()
    assert exited.results is None and isinstance(exited.error, codemem.Trap)
    assert guest.code_is_pristine()


def test_killing_a_stopped_guest_unwinds_it_without_arming_every_site(guest, monkeypatch):
    """Only a running guest needs every site armed to be caught; a stopped
    one unwinds from its stop (gdb's `run` kills the previous run first)."""
    guest.handshake()
    monkeypatch.setattr(type(guest.target), "_all_sites", lambda self: pytest.fail("armed every site"))
    assert guest.ask(b"vKill;%x" % guest.target.pid) == b"OK"
    assert guest.target.join(EVENT_TIMEOUT)
    assert guest.finish().results is None
    assert guest.code_is_pristine()


def test_vkill_answers_ok(guest):
    guest.handshake()
    assert guest.ask(b"vKill;%x" % guest.target.pid) == b"OK"
    assert guest.target.join(EVENT_TIMEOUT)
    assert guest.finish().results is None


NESTED_WAT = """
(module
  (import "env" "host" (func $host (param i32) (result i32)))
  (func $inner (export "inner") (param i32) (result i32)
    local.get 0
    i32.const 1
    i32.add)
  (func $outer (export "outer") (param i32) (result i32)
    local.get 0
    call $host
    i32.const 2
    i32.add))
"""


def test_stepping_out_of_a_function_the_host_called_from_wasm_stops_in_the_outer_wasm_frame():
    """outer (wasm) -> host (Python) -> inner (wasm): a step off inner's last
    instruction returns through the host into outer, after its call; the step
    must stop there (it arms every site for this nested return), not run on."""
    import wasmtime

    module = codemem.Module(codemem.Engine(debug=True), wasmtime.wat2wasm(NESTED_WAT), name="nested")
    store = codemem.Store(module.engine)
    instance_box = []
    host = codemem.Func(store, codemem.FuncType([codemem.ValType.i32], [codemem.ValType.i32]),
                        lambda x: instance_box[0].exports["inner"](x))
    instance = codemem.Instance(store, module, [host])
    instance_box.append(instance)
    news = threading.Event()
    target = StoreTarget(store, instance, instance.exports["outer"], [5], notify=news.set)
    code = store.registry.entries()[0].store_code
    table = code.frame_table
    inner, outer = (table.function_by_wasm_index(i) for i in (1, 2))

    def next_event():
        assert news.wait(EVENT_TIMEOUT), "no event"
        news.clear()
        event = target.take_event()
        assert event is not None
        return event

    target.start(stop_at_entry=True)
    assert next_event().reason == StopReason.ENTRY
    target.insert_breakpoint(code.base + inner.native_start)
    target.resume()
    assert next_event().pc == code.base + inner.native_start
    target.remove_breakpoint(code.base + inner.native_start)
    for _ in range(table.function(1).num_seqpoints + 2):
        target.step()
        event = next_event()
        assert getattr(event, "pc", None) is not None, f"the step ran on to {event}"
        if outer.contains(code.offset_of(event.pc)):
            break
    else:
        raise AssertionError("the steps never came back to outer")
    # Outer's point right after `call $host`: its RETURN_POINT.
    point = table.sequence_point_at_or_before(code.offset_of(event.pc))
    assert point.kind == SequencePointKind.RETURN_POINT
    target.resume()
    exited = next_event()
    assert exited.results == [8]
    assert not code.enabled_site_offsets()


# ---------------------------------------------------------------- dispatch contract

def test_every_parsed_packet_kind_has_a_handler(guest):
    """A packet the parser knows is answered on purpose, never by falling
    through to the empty "unsupported" reply by accident."""
    from gdbstub.protocol import packets as P
    kinds = [getattr(P, name) for name in P.__all__]
    requests = [k for k in kinds if isinstance(k, type) and issubclass(k, P.Request) and k is not P.Request]
    missing = [k.__name__ for k in requests if type(k) is type and k not in guest.session._handlers]
    assert missing == []


def test_packets_without_support_are_refused_with_a_reason(guest):
    guest.handshake()
    assert guest.ask(b"QNonStop:0") == b"OK"
    assert guest.ask(b"QEnableErrorStrings") == b"OK"
    reply = guest.ask(b"QNonStop:1")
    assert reply.startswith(b"E16;") and b"non-stop".hex().encode() in reply
    assert guest.ask(b"qGetWorkingDir").startswith(b"E02;")


def test_a_handler_bug_is_not_reported_as_bad_input(guest, monkeypatch):
    """Only bad input becomes an error reply: a ValueError from inside a
    handler is a bug of the stub and reaches the transport's guard."""
    from gdbstub.protocol import packets as P

    def broken(request):
        raise ValueError("a bug in the handler")

    monkeypatch.setitem(guest.session._handlers, P.QueryCurrentThread, broken)
    with pytest.raises(ValueError, match="a bug in the handler"):
        guest.send(b"qC")
