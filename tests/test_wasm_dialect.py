"""The wasm dialect (gdbstub.wasm_dialect) over a real StoreTarget, no sockets.

Guest: ``run()`` of examples/build/demo.O0.wasm (``run`` -> ``sum_of_squares(10)``
-> ``square(i)``; ``fact(5)``; 505), driven through test_session's
:class:`GuestHarness` with a :class:`WasmSession` in place of the native one.
Wasm offsets below are module file offsets from ``wasm-objdump -d``.
"""
from __future__ import annotations

import struct

import pytest
import wasmtime

import codemem
from codemem.frametable import SequencePointKind
from codemem import frames as walker
from gdbstub import wasm_dialect
from gdbstub.protocol import packets as P
from gdbstub.target import TargetError
from gdbstub.wasm_dialect import CODE_SPACE, WasmSession, code_address, split_address, value_bytes
from test_session import DEMO_RESULT, ERROR_RE, RUNAWAY_WAT, GuestHarness, demo_module, parse_stop  # noqa: F401

RUN_BODY = 0x20F             # run's first instruction (global.get __stack_pointer)
RUN_CALL_SUM = 0x230         # call $sum_of_squares
RUN_AFTER_SUM = 0x236        # local.set 4: where sum_of_squares returns to
SQUARE_BODY = 0x65           # square's first instruction
SQUARE_STORE_X = 0x7C        # i32.store 2 12, operand stack [frame address, x]
SQUARE_RETURN = 0x96         # return
SQUARE_END = 0x97            # end
SUM_LINE_24 = 0xFE           # sum_of_squares: local.get 3 (line 24's first instruction)
SUM_AFTER_SQUARE = 0x10D     # local.set 12: where square returns to


def wasm_pc(offset: int) -> int:
    return CODE_SPACE | offset


def le64(value: int) -> bytes:
    return struct.pack("<Q", value).hex().encode()


class WasmHarness(GuestHarness):
    """GuestHarness with the wasm dialect's session."""

    def __init__(self, module, export: str = "run", args=()):
        super().__init__(module, export, args)
        self.session = WasmSession(self.target)

    def stop_pc(self, reply: bytes) -> int:
        kind, _, pairs = parse_stop(reply)
        assert kind == "T", reply
        return int.from_bytes(bytes.fromhex(pairs["00"]), "little")

    def call_stack(self) -> list[int]:
        data = bytes.fromhex(self.ask(b"qWasmCallStack:1").decode())
        assert len(data) % 8 == 0
        return list(struct.unpack("<%dQ" % (len(data) // 8), data))

    def value(self, packet: bytes) -> int:
        reply = self.ask(packet)
        assert not ERROR_RE.fullmatch(reply), f"{packet!r} -> {reply!r}"
        return int.from_bytes(bytes.fromhex(reply.decode()), "little")

    def run_to(self, offset: int) -> bytes:
        """Breakpoint at wasm ``offset``, continue, remove it; the stop reply."""
        assert self.ask(b"Z0,%x,1" % wasm_pc(offset)) == b"OK"
        reply = self.resume(b"vCont;c:p%x.-1" % self.target.pid)
        assert self.ask(b"z0,%x,1" % wasm_pc(offset)) == b"OK"
        return reply


@pytest.fixture
def guest(demo_module):  # noqa: F811 (the fixture imported from test_session)
    harness = WasmHarness(demo_module)
    harness.handshake("multiprocess+", "swbreak+")
    yield harness
    harness.close()


def native_point_kind(guest: WasmHarness) -> SequencePointKind:
    pc = guest.target.current_stop.pc
    point = guest.table.sequence_point_at_or_before(guest.code.offset_of(pc))
    assert point.native_offset == guest.code.offset_of(pc)
    return point.kind


# ---------------------------------------------------------------- pure helpers

def test_addresses_split_into_space_module_and_offset():
    assert code_address(0, 0x20F) == 0x400000000000020F
    assert code_address(3, 0x10) == 0x4000000300000010
    assert split_address(0x400000000000020F) == (1, 0, 0x20F)
    assert split_address(0x0000000200001000) == (0, 2, 0x1000)
    with pytest.raises(TargetError):
        split_address(0x8000000000000000)  # type 0b10: not a wasm address
    assert split_address(0xFFFF0110) == (0, 0, 0xFFFF0110)  # lldb's probe: module 0's memory


def test_value_bytes_are_sized_by_type():
    assert value_bytes(0x7F, 0xFFFFFFFF_0000000A) == bytes.fromhex("0a000000")
    assert value_bytes(0x7E, 0x0102030405060708) == bytes.fromhex("0807060504030201")
    assert value_bytes(0x7D, 0x3F800000) == bytes.fromhex("0000803f")
    assert value_bytes(0x7C, 0x3FF0000000000000) == bytes.fromhex("000000000000f03f")
    with pytest.raises(TargetError):
        value_bytes(0x40, 0)


# ---------------------------------------------------------------- handshake

def test_host_process_and_register_info_describe_wasm32(guest):
    triple = b"wasm32-unknown-unknown-wasm".hex().encode()
    assert guest.ask(b"qHostInfo") == (b"triple:%s;endian:little;ptrsize:4;watchpoint_exceptions_received:after;"
                                       % triple)
    assert guest.ask(b"qProcessInfo") == b"pid:%x;triple:%s;endian:little;ptrsize:4;" % (guest.target.pid, triple)
    info = guest.ask(b"qRegisterInfo0")
    assert info.startswith(b"name:pc;") and b"bitsize:64;" in info and b"generic:pc;" in info
    assert guest.ask(b"qRegisterInfo1") == b"E45"
    supported = guest.ask(b"qSupported:multiprocess+;swbreak+")
    assert b"qXfer:libraries:read+" in supported
    assert b"qXfer:features:read" not in supported and b"libraries-svr4" not in supported
    assert guest.ask(b"qXfer:features:read:target.xml:0,fff") == b""


def test_library_list_names_the_module_at_its_code_address(guest):
    reply = guest.ask(b"qXfer:libraries:read::0,fff")
    assert reply == (b'l<library-list><library name="demo.O0.wasm"><section address="%d"/></library>'
                     b"</library-list>" % CODE_SPACE)


def test_entry_stop_is_shown_at_the_first_instruction(guest):
    """The stub stops at run's ENTRY point (before its prologue); `?` steps on
    to the INSTRUCTION point of the same wasm position."""
    assert guest.send(b"?") == []
    reply = guest.wait_reply()
    assert guest.stop_pc(reply) == wasm_pc(RUN_BODY)
    assert native_point_kind(guest) is SequencePointKind.INSTRUCTION
    assert guest.ask(b"p0") == le64(wasm_pc(RUN_BODY))
    assert guest.ask(b"g") == le64(wasm_pc(RUN_BODY))
    assert guest.call_stack() == [wasm_pc(RUN_BODY)]
    assert guest.ask(b"?") == reply  # asked again: the same stop, no more stepping


def test_stop_replies_carry_the_head_of_the_stopped_module_as_expedited_memory(guest):
    """lldb reads the module's first 0x200 bytes after every stop of a step;
    the stop reply carries them (``memory:0xADDR=HEX``, lldb's memory cache)."""
    assert guest.send(b"?") == []
    _, _, pairs = parse_stop(guest.wait_reply())
    address, _, data = pairs["memory"].partition("=")
    wasm = guest.entry.module.wasm
    assert int(address, 16) == CODE_SPACE and address.startswith("0x")
    assert bytes.fromhex(data) == wasm[:0x200]
    _, _, pairs = parse_stop(guest.resume(b"vCont;s:p%x.1" % guest.target.pid))
    assert pairs["memory"] == f"{CODE_SPACE:#x}={wasm[:0x200].hex()}"


def test_the_stops_lldb_is_not_shown_are_known_per_pc_once(guest, monkeypatch):
    """WasmModuleView.hides_pc (hides_stop's memo): a function's frame setup
    and its ENTRY and RETURN_POINT sequence points are hidden, an
    INSTRUCTION point is not; asked again, the frame table is not."""
    view = guest.session.dialect.view_at(guest.target, guest.entry_pc("run"))
    expected = {}
    for name in ("run", "sum_of_squares"):
        start = guest.start_pc(name)
        expected[start] = expected[start + 1] = True
        for pc, point in guest.points(name):
            expected[pc] = point.kind is not SequencePointKind.INSTRUCTION
    assert True in expected.values() and False in expected.values()
    assert {pc: view.hides_pc(pc) for pc in expected} == expected
    monkeypatch.setattr(view.table, "sequence_point_at_or_before", None)  # any lookup now fails
    monkeypatch.setattr(view.table, "function_at", None)
    assert {pc: view.hides_pc(pc) for pc in expected} == expected


# ---------------------------------------------------------------- memory

def test_code_space_reads_the_module_file(guest):
    wasm = guest.entry.module.wasm
    assert bytes.fromhex(guest.ask(b"m%x,20" % CODE_SPACE).decode()) == wasm[:0x20]
    assert bytes.fromhex(guest.ask(b"m%x,8" % wasm_pc(RUN_CALL_SUM)).decode()) == wasm[RUN_CALL_SUM:RUN_CALL_SUM + 8]
    # A read running past the end is short; one starting past it fails.
    tail = guest.ask(b"m%x,100" % wasm_pc(len(wasm) - 4))
    assert bytes.fromhex(tail.decode()) == wasm[-4:]
    assert ERROR_RE.fullmatch(guest.ask(b"m%x,4" % wasm_pc(len(wasm))))
    assert guest.ask(b"x%x,4" % CODE_SPACE) == b"\0asm"
    assert ERROR_RE.fullmatch(guest.ask(b"M%x,1:00" % CODE_SPACE))  # code is read-only


def test_memory_space_is_linear_memory(guest):
    memory = guest.instance.memories[0]
    assert bytes.fromhex(guest.ask(b"m400,10").decode()) == memory.read(0x400, 0x10)
    assert guest.ask(b"M400,4:2a000000") == b"OK"
    assert memory.read(0x400, 4) == bytes.fromhex("2a000000")
    assert guest.ask(b"m400,4") == b"2a000000"
    assert guest.ask(b"qWasmMem:0;400;4") == b"2a000000"
    assert guest.ask(b"M400,4:00000000") == b"OK"
    assert ERROR_RE.fullmatch(guest.ask(b"m%x,4" % memory.data_len))          # past the end
    assert ERROR_RE.fullmatch(guest.ask(b"m100000400,4"))                      # module 1: none
    assert guest.ask(b"m8000000000000000,4").startswith(b"E14")               # not a wasm address
    region = guest.ask(b"qMemoryRegionInfo:400")
    assert region.startswith(b"start:0;size:%x;permissions:rw;" % memory.data_len)
    assert guest.ask(b"qMemoryRegionInfo:%x" % wasm_pc(0x10)).startswith(b"start:%x;" % CODE_SPACE)


# ---------------------------------------------------------------- breakpoints and frames

def test_breakpoint_by_wasm_offset_then_frames_and_values(guest):
    reply = guest.run_to(SQUARE_STORE_X)
    kind, signal, pairs = parse_stop(reply)
    assert signal == 5 and "swbreak" in pairs
    assert guest.stop_pc(reply) == wasm_pc(SQUARE_STORE_X)
    assert guest.call_stack() == [wasm_pc(SQUARE_STORE_X), wasm_pc(SUM_AFTER_SQUARE), wasm_pc(RUN_AFTER_SUM)]
    assert guest.value(b"qWasmLocal:0;0") == 1                              # square(x = 1)
    frame_address = guest.value(b"qWasmLocal:0;3")
    stack_pointer = guest.value(b"qWasmGlobal:0;0")
    # square (a leaf) never moves __stack_pointer: its local 1 is the global,
    # its frame (local 3) 16 bytes below, and the global is sum_of_squares's frame.
    assert guest.value(b"qWasmLocal:0;1") == stack_pointer
    assert frame_address == stack_pointer - 16
    assert guest.value(b"qWasmLocal:1;3") == stack_pointer
    # i32.store's operands: [frame address, x].
    assert guest.value(b"qWasmStackValue:0;0") == frame_address
    assert guest.value(b"qWasmStackValue:0;1") == 1
    assert len(guest.ask(b"qWasmLocal:0;0")) == 8                          # an i32: 4 bytes
    # sum_of_squares (frame 1) has n = 10 in local 0; run's (frame 2) sets its locals later.
    assert guest.value(b"qWasmLocal:1;0") == 10
    assert guest.value(b"qWasmGlobal:2;0") == stack_pointer
    # The frames' values in linear memory agree: sum_of_squares stored n at [frame+12].
    sum_frame = guest.value(b"qWasmLocal:1;3")
    assert int.from_bytes(bytes.fromhex(guest.ask(b"m%x,4" % (sum_frame + 12)).decode()), "little") == 10


def test_locals_at_a_stack_exhaustion_trap_are_the_arguments_passed():
    """The stack check traps at the ENTRY point, before the prologue copies
    the parameters to their slots, and a trap is not stepped on: qWasmLocal
    reads a parameter from the argument array there, not the stale slot."""
    module = codemem.Module(codemem.Engine(debug=True), wasmtime.wat2wasm(RUNAWAY_WAT), name="runaway")
    guest = WasmHarness(module, "f", (0, 0x5EED))
    try:
        guest.handshake("multiprocess+", "swbreak+")
        stop = guest.resume(b"vCont;c:p%x.-1" % guest.target.pid)
        assert stop.startswith(b"T0b"), stop
        depth = len(guest.target.frames(1 << 20))
        assert depth > 1000
        assert guest.value(b"qWasmLocal:0;0") == depth - 1
        assert guest.value(b"qWasmLocal:0;1") == 0x5EED
        assert guest.value(b"qWasmLocal:1;0") == depth - 2   # a caller's slots are filled
    finally:
        guest.close()


def test_a_stop_is_walked_once_and_the_next_stop_again(guest, monkeypatch):
    """The stop reply's pc (asked twice), qWasmCallStack and the per-frame
    packets of one stop share one walk of the native stack, to its outermost
    frame; the next stop is walked afresh."""
    walks = []
    original = type(guest.target).frames

    def counting(target, limit=walker.MAX_FRAMES):
        walks.append(limit)
        return original(target, limit)

    monkeypatch.setattr(type(guest.target), "frames", counting)
    guest.run_to(SQUARE_STORE_X)
    assert walks == [walker.MAX_FRAMES]  # the stop reply's, for everything asked at this stop
    assert guest.call_stack() == [wasm_pc(SQUARE_STORE_X), wasm_pc(SUM_AFTER_SQUARE), wasm_pc(RUN_AFTER_SUM)]
    assert guest.value(b"qWasmLocal:0;0") == 1
    assert guest.value(b"qWasmLocal:1;0") == 10
    assert guest.call_stack()[0] == wasm_pc(SQUARE_STORE_X)
    assert walks == [walker.MAX_FRAMES]
    reply = guest.run_to(SQUARE_STORE_X)  # square(2)
    assert guest.stop_pc(reply) == wasm_pc(SQUARE_STORE_X)
    assert guest.value(b"qWasmLocal:0;0") == 2
    assert walks == [walker.MAX_FRAMES] * 2


def test_a_stops_wasm_frames_are_made_once_and_the_header_rule_follows_lldbs_breakpoints(guest, monkeypatch):
    """The stop reply's frame 0 and qWasmCallStack share one list of wasm
    frames per stop; a breakpoint lldb places at a locals header while the
    guest is stopped there still shows that stop at the header."""
    made = []
    original = wasm_dialect.WasmFrame

    def counting(*args):
        made.append(args[2])
        return original(*args)

    monkeypatch.setattr(wasm_dialect, "WasmFrame", counting)
    func = guest.function("sum_of_squares")
    first = func.body_wasm_offset
    header = {body.body_offset: body for body in guest.entry.module.info.codes}[first].locals_offset
    guest.run_to(first)
    assert guest.call_stack() == [wasm_pc(first), wasm_pc(RUN_AFTER_SUM)]
    assert len(made) == 2  # each frame once, for the stop reply and the call stack
    assert guest.ask(b"Z0,%x,1" % wasm_pc(header)) == b"OK"
    assert guest.call_stack() == [wasm_pc(header), wasm_pc(RUN_AFTER_SUM)]
    assert guest.ask(b"z0,%x,1" % wasm_pc(header)) == b"OK"
    assert guest.call_stack() == [wasm_pc(first), wasm_pc(RUN_AFTER_SUM)]
    assert len(made) == 2


def test_a_breakpoint_offset_is_looked_up_in_the_frame_table_once(guest, monkeypatch):
    """lldb sets and removes its step breakpoints at the same offsets every
    step: each offset's site is looked up once per module view, hits and
    misses alike."""
    table = guest.table
    lookups = []
    original = type(table).instruction_site_at_wasm_offset

    def counting(self, wasm_offset):
        lookups.append(wasm_offset)
        return original(self, wasm_offset)

    monkeypatch.setattr(type(table), "instruction_site_at_wasm_offset", counting)
    for _ in range(3):
        assert guest.ask(b"Z0,%x,1" % wasm_pc(SQUARE_STORE_X)) == b"OK"
        assert guest.ask(b"z0,%x,1" % wasm_pc(SQUARE_STORE_X)) == b"OK"
        assert ERROR_RE.fullmatch(guest.ask(b"Z0,%x,1" % wasm_pc(SQUARE_STORE_X + 1)))  # inside an instruction
    assert sorted(set(lookups)) == sorted(lookups)
    assert SQUARE_STORE_X in lookups and SQUARE_STORE_X + 1 in lookups


def test_bad_qwasm_arguments_are_error_replies(guest):
    guest.run_to(SQUARE_STORE_X)
    for packet in (b"qWasmLocal:3;0",          # only frames 0..2
                   b"qWasmLocal:0;7",          # square has 7 locals
                   b"qWasmLocal:0;4294967296",
                   b"qWasmStackValue:0;2",     # the operand stack holds 2 values
                   b"qWasmStackValue:9;0",
                   b"qWasmGlobal:0;1",         # one global
                   b"qWasmGlobal:5;0",
                   b"qWasmLocal:x;0",          # malformed
                   b"qWasmLocal:0",
                   b"qWasmCallStack:2",        # no thread 2
                   b"qWasmMem:7;0;4"):         # no module 7
        assert ERROR_RE.fullmatch(guest.ask(packet)), packet
    assert guest.value(b"qWasmLocal:0;0") == 1  # the session is fine


def test_a_frame_past_the_stack_names_the_stacks_real_depth(guest):
    # Frames are walked only up to the one asked for; a shorter walk is the
    # whole stack, so the error still counts every frame.
    guest.run_to(SQUARE_STORE_X)
    assert guest.ask(b"QEnableErrorStrings") == b"OK"
    for index in (3, 4, 1000):
        reply = guest.ask(b"qWasmLocal:%d;0" % index)
        assert ERROR_RE.fullmatch(reply) and b";" in reply, reply
        message = bytes.fromhex(reply.split(b";", 1)[1].decode()).decode()
        assert f"frame {index} does not exist (the call stack has 3)" in message
    assert guest.value(b"qWasmLocal:2;0") is not None  # the outermost frame is there


def test_breakpoints_only_at_instruction_boundaries_in_code(guest):
    assert guest.ask(b"Z0,%x,1" % wasm_pc(SQUARE_BODY + 1)).startswith(b"E16")  # inside global.get
    assert guest.ask(b"Z0,%x,1" % wasm_pc(0x10)).startswith(b"E16")              # a section header
    assert guest.ask(b"Z0,400,1").startswith(b"E16")                             # linear memory
    assert guest.ask(b"Z0,%x,1" % (CODE_SPACE | 1 << 32)).startswith(b"E02")     # no module 1
    assert guest.ask(b"Z0,%x,1" % wasm_pc(SQUARE_BODY)) == b"OK"
    assert guest.ask(b"z0,%x,1" % wasm_pc(SQUARE_BODY)) == b"OK"
    assert not guest.target.breakpoints


def test_breakpoint_conditions_are_refused_in_the_wasm_dialect(guest):
    # Agent bytecode names x86-64 registers (gdbstub.agent_session): lldb
    # evaluates its conditions itself and never sends any.
    assert guest.ask(b"Z0,%x,1;X3,220127" % wasm_pc(SQUARE_BODY)).startswith(b"E16")
    assert not guest.target.breakpoints
    assert guest.ask(b"Z2,%x,4" % (CODE_SPACE | SQUARE_BODY)).startswith(b"E16")  # code is not watchable


def test_step_into_a_call_skips_the_entry_point(guest):
    guest.run_to(RUN_CALL_SUM)
    reply = guest.resume(b"vCont;s:p%x.1" % guest.target.pid)
    _, signal, pairs = parse_stop(reply)
    assert signal == 5 and "swbreak" not in pairs
    sum_body = guest.function("sum_of_squares").body_wasm_offset
    assert guest.stop_pc(reply) == wasm_pc(sum_body)
    assert native_point_kind(guest) is SequencePointKind.INSTRUCTION
    assert guest.call_stack() == [wasm_pc(sum_body), wasm_pc(RUN_AFTER_SUM)]
    assert guest.value(b"qWasmLocal:0;0") == 10  # the parameter is in its slot


def test_step_out_of_a_return_skips_the_return_point(guest):
    guest.run_to(SQUARE_RETURN)
    reply = guest.resume(b"vCont;s:p%x.1" % guest.target.pid)
    assert guest.stop_pc(reply) == wasm_pc(SQUARE_END)  # `return` goes through the function's `end`
    reply = guest.resume(b"vCont;s:p%x.1" % guest.target.pid)
    assert guest.stop_pc(reply) == wasm_pc(SUM_AFTER_SQUARE)
    assert native_point_kind(guest) is SequencePointKind.INSTRUCTION
    assert guest.call_stack() == [wasm_pc(SUM_AFTER_SQUARE), wasm_pc(RUN_AFTER_SUM)]
    assert guest.value(b"qWasmStackValue:0;0") == 1  # square(1)'s result
    # Every step moves the wasm pc.
    reply = guest.resume(b"s")
    assert guest.stop_pc(reply) > wasm_pc(SUM_AFTER_SQUARE)


def test_finish_style_breakpoint_at_the_callers_pc(guest):
    """lldb's `finish`: a breakpoint at frame 1's pc from qWasmCallStack."""
    guest.run_to(SQUARE_BODY)
    caller_pc = guest.call_stack()[1]
    assert caller_pc == wasm_pc(SUM_AFTER_SQUARE)
    reply = guest.run_to(SUM_AFTER_SQUARE)
    assert guest.stop_pc(reply) == caller_pc
    assert guest.value(b"qWasmStackValue:0;0") == 1


def test_vcont_range_and_resume_elsewhere_are_refused(guest):
    guest.run_to(SQUARE_BODY)
    assert guest.ask(b"vCont?") == b"vCont;c;C;s;S"
    assert ERROR_RE.fullmatch(guest.ask(b"vCont;r%x,%x:p%x.1" % (wasm_pc(0x65), wasm_pc(0x90), guest.target.pid)))
    assert ERROR_RE.fullmatch(guest.ask(b"c%x" % wasm_pc(SQUARE_RETURN)))
    assert ERROR_RE.fullmatch(guest.ask(b"P0=%s" % le64(wasm_pc(SQUARE_RETURN))))


def test_detach_restores_every_site_and_the_guest_finishes(guest):
    for offset in (SQUARE_BODY, SUM_LINE_24, SUM_AFTER_SQUARE):
        assert guest.ask(b"Z0,%x,1" % wasm_pc(offset)) == b"OK"
    guest.run_to(SQUARE_RETURN)
    guest.resume(b"s")
    assert guest.code.enabled_site_offsets()
    assert guest.ask(b"D;%x" % guest.target.pid) == b"OK"
    exited = guest.finish()
    assert exited.error is None and exited.results == [DEMO_RESULT]
    assert guest.code_is_pristine()


def test_random_wasm_packets_always_get_one_reply(guest):
    """Arguments in and out of range, malformed ones, addresses in every
    space: one reply each (data or Exx), never an exception."""
    import random
    guest.run_to(SQUARE_STORE_X)
    rng = random.Random(1234)
    numbers = [b"0", b"1", b"2", b"3", b"7", b"99", b"4294967295", b"18446744073709551616", b"-1", b"x", b""]
    addresses = [b"0", b"400", b"ffff0110", b"%x" % CODE_SPACE, b"%x" % wasm_pc(0x7c), b"%x" % wasm_pc(0x7d),
                 b"4000000100000000", b"8000000000000000", b"ffffffffffffffff", b"zz"]
    templates = [b"qWasmLocal:%s;%s", b"qWasmGlobal:%s;%s", b"qWasmStackValue:%s;%s", b"qWasmCallStack:%s",
                 b"qWasmMem:%s;%s;%s", b"m%s,%s", b"x%s,%s", b"Z0,%s,%s", b"z0,%s,%s", b"M%s,%s:00",
                 b"qMemoryRegionInfo:%s", b"p%s", b"qRegisterInfo%s"]
    for _ in range(400):
        template = rng.choice(templates)
        fields = tuple(rng.choice(addresses if i == 0 and template[:1] in b"mxZzMq" else numbers)
                       for i in range(template.count(b"%s")))
        replies = guest.send(template % fields)
        assert len(replies) == 1, (template % fields, replies)
    for offset in (SQUARE_STORE_X, 0x7D):
        guest.ask(b"z0,%x,1" % wasm_pc(offset))
    assert guest.value(b"qWasmLocal:0;0") == 1


def test_wasm_packets_parse():
    assert P.parse_packet(b"qWasmCallStack:1") == P.WasmCallStack(1)
    assert P.parse_packet(b"qWasmLocal:0;3") == P.WasmLocal(0, 3)
    assert isinstance(P.parse_packet(b"qWasmLocal:0;x"), P.MalformedPacket)
