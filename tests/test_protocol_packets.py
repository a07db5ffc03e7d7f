"""parse_packet for every packet kind, and the reply builders in replies.py."""
from __future__ import annotations

import struct

import pytest

from gdbstub.protocol.encoding import hex_encode
from gdbstub.protocol.packets import (
    ExtendedMode,
    BreakpointType,
    Continue,
    ContinueWithSignal,
    Detach,
    EnableErrorStrings,
    FileIOOpenFlags,
    GetWorkingDir,
    HaltReason,
    HostInfo,
    InsertBreakpoint,
    Kill,
    ListThreadsInStopReply,
    MalformedPacket,
    MemoryRegionInfo,
    MonitorCommand,
    MustReplyEmpty,
    ProcessInfo,
    ProcessInfoFirst,
    ProcessInfoNext,
    QueryAttached,
    QueryCurrentThread,
    QueryOffsets,
    QuerySupported,
    ReadMemory,
    ReadMemoryBinary,
    ReadRegister,
    ReadRegisters,
    RegisterInfo,
    RemoveBreakpoint,
    SetNonStop,
    SetThread,
    ShlibInfoAddr,
    StartNoAckMode,
    Step,
    StepWithSignal,
    StructuredDataPlugins,
    SymbolLookup,
    ThreadAlive,
    ThreadEvents,
    ThreadExtendedInfoJson,
    ThreadId,
    ThreadInfoFirst,
    ThreadInfoNext,
    ThreadsInfoJson,
    ThreadStopInfo,
    ThreadSuffixSupported,
    TraceStatus,
    UnknownPacket,
    VAttach,
    VAttachOrWaitSupported,
    VCont,
    VContAction,
    VContQuery,
    VFileClose,
    VFileFstat,
    VFileOpen,
    VFilePread,
    VFilePwrite,
    VFileReadlink,
    VFileSetFs,
    VFileUnlink,
    VKill,
    VRun,
    WasmCallStack,
    WasmGlobal,
    WasmLocal,
    WasmMemory,
    WasmStackValue,
    WriteMemory,
    WriteMemoryBinary,
    WriteRegister,
    WriteRegisters,
    XferRead,
    parse_packet,
    parse_thread_id,
)
from gdbstub.protocol.encoding import ProtocolError
from gdbstub.protocol import replies
from gdbstub.protocol.replies import Capabilities, FileIOErrno, Signal

H = hex_encode
T = ThreadId


# ------------------------------------------------------------------- thread ids
@pytest.mark.parametrize(
    "text, expected",
    [
        (b"1", T(None, 1)),
        (b"0", T(None, T.ANY)),
        (b"-1", T(None, T.ALL)),
        (b"7fffffff", T(None, 0x7FFFFFFF)),
        (b"p1.2", T(1, 2)),
        (b"p1", T(1, T.ALL)),
        (b"p-1", T(T.ALL, T.ALL)),
        (b"p0.0", T(T.ANY, T.ANY)),
        (b"pa.-1", T(10, T.ALL)),
    ],
)
def test_parse_thread_id(text, expected):
    assert parse_thread_id(text) == expected


@pytest.mark.parametrize("text", [b"", b"p", b"p.1", b"p1.", b"-2", b"x1", b"1.2", b"p1.2.3"])
def test_parse_thread_id_rejects(text):
    with pytest.raises(ProtocolError):
        parse_thread_id(text)


def test_thread_id_encode():
    assert T(1, 2).encode() == b"p1.2"
    assert T(1, 2).encode(multiprocess=False) == b"2"
    assert T(None, 0x1F).encode() == b"1f"
    assert T(T.ALL, T.ALL).encode() == b"p-1.-1"
    assert T(None, T.ALL).is_all and T(None, T.ANY).is_any


# ------------------------------------------------------------- every packet kind
GOOD = [
    # connection set-up
    (
        b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;"
        b"exec-events+;vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+;xmlRegisters=i386",
        QuerySupported(
            {
                "multiprocess": True,
                "swbreak": True,
                "hwbreak": True,
                "qRelocInsn": True,
                "fork-events": True,
                "vfork-events": True,
                "exec-events": True,
                "vContSupported": True,
                "QThreadEvents": True,
                "no-resumed": True,
                "memory-tagging": True,
                "xmlRegisters": "i386",
            }
        ),
    ),
    (
        b"qSupported:xmlRegisters=i386,arm,mips,arc;multiprocess+;fork-events-;foo?",
        QuerySupported(
            {"xmlRegisters": "i386,arm,mips,arc", "multiprocess": True, "fork-events": False, "foo": None}
        ),
    ),
    (b"qSupported", QuerySupported({})),
    (b"vMustReplyEmpty", MustReplyEmpty()),
    (b"!", ExtendedMode()),
    (b"QStartNoAckMode", StartNoAckMode()),
    (b"qXfer:features:read:target.xml:0,1000", XferRead("features", "target.xml", 0, 0x1000)),
    (b"qXfer:features:read:target.xml:0,3fff", XferRead("features", "target.xml", 0, 0x3FFF)),
    (b"qXfer:libraries-svr4:read::0,1000", XferRead("libraries-svr4", "", 0, 0x1000)),
    (b"qXfer:libraries:read::10,20", XferRead("libraries", "", 0x10, 0x20)),
    (b"qXfer:exec-file:read:1:0,fff", XferRead("exec-file", "1", 0, 0xFFF)),
    (b"qXfer:auxv:read::0,131", XferRead("auxv", "", 0, 0x131)),
    (b"qAttached", QueryAttached()),
    (b"qAttached:1f", QueryAttached(0x1F)),
    (b"qC", QueryCurrentThread()),
    (b"qfThreadInfo", ThreadInfoFirst()),
    (b"qsThreadInfo", ThreadInfoNext()),
    (b"qTStatus", TraceStatus()),
    (b"qOffsets", QueryOffsets()),
    (b"qSymbol::", SymbolLookup()),
    (b"qSymbol:1234:" + H(b"main"), SymbolLookup(0x1234, b"main")),
    (b"qSymbol::" + H(b"_start"), SymbolLookup(None, b"_start")),
    (b"qHostInfo", HostInfo()),
    (b"qProcessInfo", ProcessInfo()),
    (b"qRegisterInfo0", RegisterInfo(0)),
    (b"qRegisterInfo1a", RegisterInfo(0x1A)),
    (b"QThreadSuffixSupported", ThreadSuffixSupported()),
    (b"QListThreadsInStopReply", ListThreadsInStopReply()),
    (b"QEnableErrorStrings", EnableErrorStrings()),
    (b"qStructuredDataPlugins", StructuredDataPlugins()),
    (b"qShlibInfoAddr", ShlibInfoAddr()),
    (b"qVAttachOrWaitSupported", VAttachOrWaitSupported()),
    (b"qMemoryRegionInfo:7ffff000", MemoryRegionInfo(0x7FFFF000)),
    (b"jThreadsInfo", ThreadsInfoJson()),
    (b"jThreadExtendedInfo:", ThreadExtendedInfoJson(b"")),
    (b'jThreadExtendedInfo:{"thread":1}', ThreadExtendedInfoJson(b'{"thread":1}')),
    (b"qRcmd," + H(b"help"), MonitorCommand(b"help")),
    (b"qRcmd,", MonitorCommand(b"")),
    (b"QThreadEvents:1", ThreadEvents(True)),
    (b"QThreadEvents:0", ThreadEvents(False)),
    (b"qGetWorkingDir", GetWorkingDir()),
    (b"qfProcessInfo", ProcessInfoFirst({})),
    (b"qfProcessInfo:name_match:equals;name:6c73;", ProcessInfoFirst({"name_match": "equals", "name": "6c73"})),
    (b"qsProcessInfo", ProcessInfoNext()),
    (b"qThreadStopInfo1", ThreadStopInfo(1)),
    (b"QNonStop:0", SetNonStop(False)),
    (b"QNonStop:1", SetNonStop(True)),
    # threads
    (b"Hg0", SetThread("g", T(None, 0))),
    (b"Hc-1", SetThread("c", T(None, -1))),
    (b"Hg1", SetThread("g", T(None, 1))),
    (b"Hgp1.1", SetThread("g", T(1, 1))),
    (b"Hcp2.-1", SetThread("c", T(2, -1))),
    (b"Tp1.1", ThreadAlive(T(1, 1))),
    (b"T5", ThreadAlive(T(None, 5))),
    (b"?", HaltReason()),
    # registers
    (b"g", ReadRegisters()),
    (b"g;thread:1;", ReadRegisters(T(None, 1))),
    (b"g;thread:p1.2", ReadRegisters(T(1, 2))),
    (b"G0102ff", WriteRegisters(b"\x01\x02\xff")),
    (b"G0102;thread:0001;", WriteRegisters(b"\x01\x02", T(None, 1))),
    (b"p0", ReadRegister(0)),
    (b"p10", ReadRegister(0x10)),
    (b"p10;thread:1;", ReadRegister(0x10, T(None, 1))),
    (b"P10=00112233", WriteRegister(0x10, b"\x00\x11\x22\x33")),
    (b"P1=aa;thread:p1.1;", WriteRegister(1, b"\xaa", T(1, 1))),
    # memory
    (b"m7fff0000,40", ReadMemory(0x7FFF0000, 0x40)),
    (b"m0,ffffffffffffffffffffffff", ReadMemory(0, (1 << 96) - 1)),
    (b"M1000,3:aabbcc", WriteMemory(0x1000, 3, b"\xaa\xbb\xcc")),
    (b"M1000,0:", WriteMemory(0x1000, 0, b"")),
    (b"x0,0", ReadMemoryBinary(0, 0)),
    (b"x400000,200", ReadMemoryBinary(0x400000, 0x200)),
    (b"X1000,4:\x00:#,", WriteMemoryBinary(0x1000, 4, b"\x00:#,")),
    (b"X1000,0:", WriteMemoryBinary(0x1000, 0, b"")),
    # breakpoints
    (b"Z0,401000,1", InsertBreakpoint(BreakpointType.SOFTWARE, 0x401000, 1)),
    (b"Z1,401000,1", InsertBreakpoint(BreakpointType.HARDWARE, 0x401000, 1)),
    (b"Z2,7000,8", InsertBreakpoint(BreakpointType.WRITE_WATCHPOINT, 0x7000, 8)),
    (b"Z4,7000,4", InsertBreakpoint(BreakpointType.ACCESS_WATCHPOINT, 0x7000, 4)),
    (
        b"Z0,401000,1;X2,2201X1,27",
        InsertBreakpoint(BreakpointType.SOFTWARE, 0x401000, 1, (b"\x22\x01", b"\x27")),
    ),
    (
        b"Z0,10,1;X1,27;cmds:1,X2,2627",
        InsertBreakpoint(BreakpointType.SOFTWARE, 0x10, 1, (b"\x27",), (b"\x26\x27",), True),
    ),
    (b"z0,401000,1", RemoveBreakpoint(BreakpointType.SOFTWARE, 0x401000, 1)),
    (b"z3,8,2", RemoveBreakpoint(BreakpointType.READ_WATCHPOINT, 8, 2)),
    # execution
    (b"c", Continue()),
    (b"c401000", Continue(0x401000)),
    (b"s", Step()),
    (b"s10", Step(0x10)),
    (b"C05", ContinueWithSignal(5)),
    (b"C0b;401000", ContinueWithSignal(11, 0x401000)),
    (b"S02", StepWithSignal(2)),
    (b"S02;10", StepWithSignal(2, 0x10)),
    (b"vCont?", VContQuery()),
    (b"vCont;c", VCont((VContAction("c"),))),
    (b"vCont;s:1;c", VCont((VContAction("s", thread=T(None, 1)), VContAction("c")))),
    (
        b"vCont;C05:p1.1;S0b:p1.-1;t",
        VCont(
            (
                VContAction("C", signal=5, thread=T(1, 1)),
                VContAction("S", signal=11, thread=T(1, -1)),
                VContAction("t"),
            )
        ),
    ),
    (b"vCont;r1000,1010:p1.1", VCont((VContAction("r", thread=T(1, 1), start=0x1000, end=0x1010),))),
    (b"vKill;1", VKill(1)),
    (b"k", Kill()),
    (b"D", Detach()),
    (b"D;1", Detach(1)),
    (b"vAttach;2a", VAttach(0x2A)),
    (b"vRun;", VRun(b"")),
    (b"vRun;" + H(b"/bin/true") + b";" + H(b"-x"), VRun(b"/bin/true", (b"-x",))),
    # host I/O
    (b"vFile:setfs:0", VFileSetFs(0)),
    (
        b"vFile:open:" + H(b"just probing") + b",0,1c0",
        VFileOpen(b"just probing", 0, 0o700),
    ),
    (b"vFile:open:" + H(b"/lib/x.so") + b",0,0", VFileOpen(b"/lib/x.so", FileIOOpenFlags.O_RDONLY, 0)),
    (b"vFile:pread:5,3fff,1000", VFilePread(5, 0x3FFF, 0x1000)),
    (b"vFile:pwrite:5,10,a,b;\x00", VFilePwrite(5, 0x10, b"a,b;\x00")),
    (b"vFile:close:5", VFileClose(5)),
    (b"vFile:fstat:5", VFileFstat(5)),
    (b"vFile:unlink:" + H(b"/tmp/x"), VFileUnlink(b"/tmp/x")),
    (b"vFile:readlink:" + H(b"/proc/1/exe"), VFileReadlink(b"/proc/1/exe")),
    # LLDB wasm extension
    (b"qWasmCallStack", WasmCallStack()),
    (b"qWasmCallStack:1", WasmCallStack(1)),
    (b"qWasmCallStack:202dbe040", WasmCallStack(0x202DBE040)),
    (b"qWasmLocal:0;2", WasmLocal(0, 2)),
    (b"qWasmLocal:12;10", WasmLocal(12, 10)),  # decimal, as LLDB prints them
    (b"qWasmGlobal:1;3", WasmGlobal(1, 3)),
    (b"qWasmStackValue:0;15", WasmStackValue(0, 15)),
    (b"qWasmMem:4;ffb8;10", WasmMemory(4, 0xFFB8, 0x10)),
]


@pytest.mark.parametrize("payload, expected", GOOD, ids=[g[0][:40].decode("latin-1") for g in GOOD])
def test_parse_packet(payload, expected):
    assert parse_packet(payload) == expected


MALFORMED = [
    b"Hg",
    b"H",
    b"Hgq",
    b"T",
    b"Tp",
    b"g;thrad:1;",
    b"G012",
    b"Gzz",
    b"p",
    b"pzz",
    b"p1;thread:",
    b"P1",
    b"P1=0",
    b"Px=00",
    b"m",
    b"m10",
    b"m10,",
    b"m,10",
    b"m10,20,30",
    b"m0x10,4",
    b"m-1,4",
    b"m 10,4",
    b"M10,2",
    b"M10,2:aa",  # length mismatch
    b"M10,ffffffffffffffffffff:aa",  # huge length, short data
    b"M10,1:zz",
    b"x10",
    b"X10,2",
    b"X10,3:ab",
    b"Z0,10",
    b"Z0,10,1,2",
    b"Zz,10,1",
    b"Z0,10,1;Y",
    b"Z0,10,1;X2,00",
    b"Z0,10,1;cmds:",
    b"z0,10,1;X1,00",
    b"cq",
    b"s-1",
    b"C",
    b"Cxx",
    b"C05;",
    b"S",
    b"vCont;",
    b"vCont;x",
    b"vCont;c1",
    b"vCont;C",
    b"vCont;r10",
    b"vCont;c:",
    b"vCont;c;;s",
    b"vKill;",
    b"vKill;z",
    b"vAttach;",
    b"D1",
    b"D;",
    b"vRun",
    b"vRun;zz",
    b"vFile:setfs:",
    b"vFile:open:2f,0",
    b"vFile:open:zz,0,0",
    b"vFile:pread:1,2",
    b"vFile:pwrite:1",
    b"vFile:close:",
    b"vFile:fstat:x",
    b"vFile:unlink:2",
    b"vFile:readlink:2g",
    b"qAttached:",
    b"qAttached:xyz",
    b"qSymbol:",
    b"qSymbol:zz:",
    b"qRegisterInfo",
    b"qRegisterInfoxx",
    b"qMemoryRegionInfo:",
    b"qRcmd,6",
    b"QThreadEvents:2",
    b"QNonStop:",
    b"qfProcessInfo:name",
    b"qThreadStopInfo",
    b"qXfer:features:read:target.xml",
    b"qXfer:features:read:target.xml:0",
    b"qXfer:features:read:target.xml:x,1",
    b"qWasmCallStack:",
    b"qWasmLocal:0",
    b"qWasmLocal:0;",
    b"qWasmLocal:a;1",  # decimal only
    b"qWasmLocal:0;1;2",
    b"qWasmGlobal:-1;0",
    b"qWasmStackValue:",
    b"qWasmMem:1;2",
    b"qWasmMem:a;2;3",
    b"qWasmLocal:" + b"9" * 5000 + b";1",
]


@pytest.mark.parametrize("payload", MALFORMED, ids=[m[:40].decode("latin-1") for m in MALFORMED])
def test_malformed_packets(payload):
    result = parse_packet(payload)
    assert isinstance(result, MalformedPacket), result
    assert result.payload == payload and result.reason


UNKNOWN = [
    b"",
    b"!!",
    b"qCRC:0,10",
    b"qC1",
    b"qTfV",
    b"qFoo",
    b"QPassSignals:0e",
    b"vFile:size:2f",
    b"vFile",
    b"vFoo",
    b"vKill",
    b"qXfer:features:write:target.xml:0:abc",
    b"qXfer",
    b"Z9,10,1",
    b"z5,10,1",
    b"jFoo",
    b"jThreadExtendedInfox",
    b"qWasmFoo:1",
    b"qWasmLocal",
    b"vContX",
    b"\xff\xfe",
    b"i",
    b"bc",
]


@pytest.mark.parametrize("payload", UNKNOWN, ids=[u.decode("latin-1") or "empty" for u in UNKNOWN])
def test_unknown_packets(payload):
    assert parse_packet(payload) == UnknownPacket(payload)


def test_huge_numbers_parse_to_ints():
    big = b"f" * 8000
    request = parse_packet(b"m" + big + b"," + big)
    assert isinstance(request, ReadMemory)
    assert request.addr == request.length == (1 << (4 * 8000)) - 1
    request = parse_packet(b"vFile:pread:" + big + b"," + big + b"," + big)
    assert isinstance(request, VFilePread) and request.count.bit_length() == 32000


def test_monitor_command_text():
    assert parse_packet(b"qRcmd," + H("héllo".encode())).text == "héllo"


# ------------------------------------------------------------------------ replies
def test_ok_empty_error():
    assert replies.ok() == b"OK"
    assert replies.empty() == b""
    assert replies.error(1) == b"E01"
    assert replies.error(0x2A, "ignored") == b"E2a"
    assert replies.error(9, "bad address", error_strings_enabled=True) == b"E09;" + H(b"bad address")
    assert replies.error(9, None, error_strings_enabled=True) == b"E09"
    with pytest.raises(ValueError):
        replies.error(256)


def test_signal_numbers():
    assert (Signal.SIGINT, Signal.SIGILL, Signal.SIGTRAP, Signal.SIGFPE) == (2, 4, 5, 8)
    assert (Signal.SIGKILL, Signal.SIGSEGV) == (9, 0x0B)


def test_stop_reply():
    reply = replies.stop_reply(
        Signal.SIGTRAP,
        thread=T(1, 1),
        registers={0x10: b"\x00\x10\x40\x00\x00\x00\x00\x00", 6: b"\x01\x02"},
        reason="swbreak",
    )
    assert reply == b"T05thread:p1.1;06:0102;10:0010400000000000;swbreak:;"


def test_stop_reply_plain_and_extra():
    assert replies.stop_reply(Signal.SIGINT) == b"T02"
    assert replies.stop_reply(11, T(None, 3), multiprocess=False) == b"T0bthread:3;"
    reply = replies.stop_reply(5, T(1, 1), extra=[("watch", 0x7000), ("threads", "1,2"), ("x", b"y")])
    assert reply == b"T05thread:p1.1;watch:7000;threads:1,2;x:y;"
    assert replies.stop_reply(5, extra={"reason": "breakpoint"}) == b"T05reason:breakpoint;"
    with pytest.raises(ValueError):
        replies.stop_reply(300)


def test_stop_reply_thread_parts_are_made_per_thread_and_mode():
    """The ``thread:`` part is made once per (pid, tid, multiprocess): the
    same ids in the other mode, or another thread, get their own."""
    assert replies.stop_reply(5, T(7, 1)) == b"T05thread:p7.1;"
    assert replies.stop_reply(5, T(7, 1), multiprocess=False) == b"T05thread:1;"
    assert replies.stop_reply(5, T(7, 2)) == b"T05thread:p7.2;"
    assert replies.stop_reply(5, T(None, 1)) == b"T05thread:1;"
    assert replies.stop_reply(5, T(7, -1)) == b"T05thread:p7.-1;"
    for pid in range(replies._THREAD_PARTS_LIMIT + 5):  # the memo starts over instead of growing
        assert replies.stop_reply(5, T(pid, 1)) == b"T05thread:p%x.1;" % pid
    assert len(replies._THREAD_PARTS) <= replies._THREAD_PARTS_LIMIT
    with pytest.raises(ValueError):
        replies.stop_reply(-1, T(7, 1))


def test_exit_replies():
    assert replies.exit_reply(0) == b"W00"
    assert replies.exit_reply(3, pid=0x1F) == b"W03;process:1f"
    assert replies.terminated_reply(Signal.SIGKILL, pid=1) == b"X09;process:1"


@pytest.mark.parametrize(
    "offset, length, expected",
    [
        (0, 4, b"m0123"),
        (0, 10, b"l0123456789"),
        (0, 100, b"l0123456789"),
        (6, 4, b"l6789"),
        (6, 3, b"m678"),
        (10, 5, b"l"),
        (1 << 80, 1 << 80, b"l"),
        (2, 1 << 80, b"l23456789"),
    ],
)
def test_qxfer_chunk(offset, length, expected):
    assert replies.qxfer_chunk(b"0123456789", offset, length) == expected


def test_qxfer_chunk_is_not_escaped_here():
    # Framing escapes; a builder must not (or '#' would be escaped twice).
    assert replies.qxfer_chunk(b"a#b", 0, 10) == b"la#b"


def test_thread_replies():
    assert replies.thread_list_reply([T(1, 1), T(1, 2)]) == b"mp1.1,p1.2"
    assert replies.thread_list_reply([T(1, 1)], multiprocess=False) == b"m1"
    assert replies.thread_list_reply([]) == b"l"
    assert replies.current_thread_reply(T(1, 1)) == b"QCp1.1"


def test_key_value_and_console():
    assert replies.key_value_reply({"ptrsize": "8", "endian": "little"}) == b"ptrsize:8;endian:little;"
    assert replies.key_value_reply([("start", b"1000")]) == b"start:1000;"
    with pytest.raises(TypeError):
        replies.key_value_reply({"ptrsize": 8})
    assert replies.console_output(b"hi\n") == b"O68690a"


def test_vfile_replies():
    assert replies.vfile_result(3) == b"F3"
    assert replies.vfile_result(-1, FileIOErrno.ENOENT) == b"F-1,2"
    assert replies.vfile_result(-1, FileIOErrno.ENAMETOOLONG) == b"F-1,5b"
    assert replies.vfile_data(b"\x7fELF}") == b"F5;\x7fELF}"
    assert replies.vfile_data(b"") == b"F0;"


def test_fileio_stat_layout():
    stat = replies.fileio_stat(mode=0o100644, size=0x1234, mtime=7)
    assert len(stat) == 64
    fields = struct.unpack(">IIIIIIIQQQIII", stat)
    assert fields[2] == 0o100644 and fields[7] == 0x1234 and fields[9] == 10 and fields[11] == 7


def test_wasm_call_stack_reply():
    reply = replies.wasm_call_stack_reply([0x400000000000019C, 0x40000000000001E5])
    assert reply == b"9c01000000000040e501000000000040"


def test_capabilities_default_and_full():
    assert Capabilities().supported_reply() == b"PacketSize=4000;QStartNoAckMode+"
    full = Capabilities(
        packet_size=0x1000,
        xfer_features=True,
        xfer_libraries=True,
        xfer_libraries_svr4=True,
        xfer_exec_file=True,
        xfer_auxv=True,
        xfer_threads=True,
        swbreak=True,
        hwbreak=True,
        vcont=True,
        multiprocess=True,
        qthread_events=True,
        non_stop=True,
        conditional_breakpoints=True,
        breakpoint_commands=True,
        error_strings=True,
    )
    assert full.supported_reply() == (
        b"PacketSize=1000;QStartNoAckMode+;qXfer:features:read+;qXfer:libraries:read+;"
        b"qXfer:libraries-svr4:read+;qXfer:exec-file:read+;qXfer:auxv:read+;qXfer:threads:read+;swbreak+;hwbreak+;"
        b"vContSupported+;multiprocess+;QThreadEvents+;QNonStop+;ConditionalBreakpoints+;"
        b"BreakpointCommands+"
    )


def test_capabilities_advertise_only_what_is_set():
    caps = Capabilities(no_ack_mode=False, xfer_libraries_svr4=True, swbreak=True)
    assert caps.supported_reply() == b"PacketSize=4000;qXfer:libraries-svr4:read+;swbreak+"
    assert caps.advertised() == ["qXfer:libraries-svr4:read", "swbreak"]


def test_capabilities_negotiate_with_client_features():
    caps = Capabilities(swbreak=True, hwbreak=True, multiprocess=True, vcont=True, xfer_features=True)
    lldb = parse_packet(
        b"qSupported:xmlRegisters=i386,arm,mips,arc;multiprocess+;fork-events+;vfork-events+;swbreak+;hwbreak+"
    )
    effective = caps.negotiate(lldb.features)
    assert effective.swbreak and effective.hwbreak and effective.multiprocess
    assert not effective.vcont  # lldb did not offer vContSupported+
    assert effective.xfer_features  # stub-only features are unaffected
    bare = caps.negotiate({})
    assert not (bare.swbreak or bare.hwbreak or bare.multiprocess or bare.vcont)
    assert caps.negotiate({"multiprocess": False}).multiprocess is False


def test_protocol_package_is_sans_io():
    """The layering rule: gdbstub/protocol imports neither asyncio, sockets nor the
    engine (codemem), nor any other gdbstub layer."""
    import ast
    import pathlib

    import gdbstub.protocol

    forbidden = {"asyncio", "socket", "selectors", "threading", "codemem", "ssl"}
    package = pathlib.Path(gdbstub.protocol.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside the package
                    assert node.level == 1, path
                    continue
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top not in forbidden, f"{path.name} imports {module}"
                assert top != "gdbstub", f"{path.name} imports {module}"
