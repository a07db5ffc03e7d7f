"""Typed requests: ``parse_packet(payload) -> Request``, one dataclass per packet kind.

Contract: :func:`parse_packet` never raises. A packet it recognises but cannot
parse becomes :class:`MalformedPacket` (the session answers with an error); a
packet it does not know becomes :class:`UnknownPacket` (the session answers with
the empty reply, which the protocol defines as "not supported"). Numbers are
parsed to Python ints however large they are; this layer never allocates based on
a parsed number, later layers bound them.

Syntax follows the GDB manual's "Remote Protocol" appendix ("Packets", "General
Query Packets", "Host I/O Packets") and LLDB's lldbgdbremote.md (qHostInfo,
qRegisterInfo, QThreadSuffixSupported, jThreadsInfo, qWasm*). Numbers are hex
unless stated. LLDB's WebAssembly packets (ProcessWasm in LLDB 21/22):
``qWasmCallStack:<tid hex>``, ``qWasmLocal:<frame>;<index>``,
``qWasmGlobal:<frame>;<index>``, ``qWasmStackValue:<frame>;<index>`` (frame and
index printed in *decimal*), and the older ``qWasmMem:<module id decimal>;<addr
hex>;<length hex>`` still answered by V8/WAMR stubs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from .encoding import ProtocolError, hex_decode, parse_dec_int, parse_hex_int
from .replies import FileIOOpenFlags  # noqa: F401  (re-exported: vFile:open's flags)

__all__ = [
    "ThreadId",
    "parse_thread_id",
    "BreakpointType",
    "FileIOOpenFlags",
    "Request",
    "parse_packet",
    # generic outcomes
    "Interrupt",
    "MalformedPacket",
    "UnknownPacket",
    # connection set-up and queries
    "QuerySupported",
    "MustReplyEmpty",
    "ExtendedMode",
    "StartNoAckMode",
    "XferRead",
    "QueryAttached",
    "QueryCurrentThread",
    "ThreadInfoFirst",
    "ThreadInfoNext",
    "TraceStatus",
    "QueryOffsets",
    "SymbolLookup",
    "HostInfo",
    "ProcessInfo",
    "WatchpointSupportInfo",
    "RegisterInfo",
    "ThreadSuffixSupported",
    "ListThreadsInStopReply",
    "EnableErrorStrings",
    "StructuredDataPlugins",
    "ShlibInfoAddr",
    "VAttachOrWaitSupported",
    "MemoryRegionInfo",
    "ThreadsInfoJson",
    "ThreadExtendedInfoJson",
    "MonitorCommand",
    "ThreadEvents",
    "GetWorkingDir",
    "LaunchGDBServer",
    "QueryGDBServer",
    "ProcessInfoFirst",
    "ProcessInfoNext",
    "ThreadStopInfo",
    "SetNonStop",
    # threads, registers, memory
    "SetThread",
    "ThreadAlive",
    "HaltReason",
    "ReadRegisters",
    "WriteRegisters",
    "ReadRegister",
    "WriteRegister",
    "ReadMemory",
    "WriteMemory",
    "ReadMemoryBinary",
    "WriteMemoryBinary",
    "InsertBreakpoint",
    "RemoveBreakpoint",
    # execution control
    "Continue",
    "Step",
    "ContinueWithSignal",
    "StepWithSignal",
    "VContQuery",
    "VContAction",
    "VCont",
    "VKill",
    "Kill",
    "Detach",
    "VAttach",
    "VRun",
    # host I/O
    "VFileSetFs",
    "VFileOpen",
    "VFilePread",
    "VFilePwrite",
    "VFileClose",
    "VFileFstat",
    "VFileUnlink",
    "VFileReadlink",
    # LLDB WebAssembly extension
    "WasmCallStack",
    "WasmLocal",
    "WasmGlobal",
    "WasmStackValue",
    "WasmMemory",
]


# --------------------------------------------------------------------------- ids
@dataclass(frozen=True, slots=True)
class ThreadId:
    """A thread-id (GDB manual, "Packets", thread-id syntax).

    ``pid`` is None when the client used the non-multiprocess form. ``tid`` (and
    ``pid``) may be :attr:`ALL` (-1, "all threads/processes") or :attr:`ANY`
    (0, "any thread/process"). ``p<pid>`` alone means every thread of that process,
    so it parses as ``ThreadId(pid, ALL)``."""

    pid: int | None
    tid: int

    ALL: ClassVar[int] = -1
    ANY: ClassVar[int] = 0

    def encode(self, multiprocess: bool = True) -> bytes:
        """``p<pid>.<tid>`` when multiprocess and a pid is known, else ``<tid>``."""
        tid = _encode_id(self.tid)
        if multiprocess and self.pid is not None:
            return b"p" + _encode_id(self.pid) + b"." + tid
        return tid

    @property
    def is_all(self) -> bool:
        return self.tid == self.ALL

    @property
    def is_any(self) -> bool:
        return self.tid == self.ANY


def _encode_id(value: int) -> bytes:
    return b"-1" if value == -1 else b"%x" % value


def _parse_id(text: bytes, what: str) -> int:
    if text == b"-1":
        return ThreadId.ALL
    return parse_hex_int(text, what)


def parse_thread_id(text: bytes) -> ThreadId:
    """Parse ``<tid>``, ``-1``, ``0``, ``p<pid>``, ``p<pid>.<tid>`` (hex).

    Raises :class:`~gdbstub.protocol.encoding.ProtocolError` on anything else."""
    if text.startswith(b"p"):
        pid_text, dot, tid_text = text[1:].partition(b".")
        pid = _parse_id(pid_text, "process id")
        if not dot:
            return ThreadId(pid, ThreadId.ALL)
        return ThreadId(pid, _parse_id(tid_text, "thread id"))
    return ThreadId(None, _parse_id(text, "thread id"))


class BreakpointType(enum.IntEnum):
    """The ``type`` of Z/z packets."""

    SOFTWARE = 0
    HARDWARE = 1
    WRITE_WATCHPOINT = 2
    READ_WATCHPOINT = 3
    ACCESS_WATCHPOINT = 4


# ----------------------------------------------------------------------- requests
class Request:
    """Base class of every parsed packet."""

    __slots__ = ()


def _request(cls):
    return dataclass(frozen=True, slots=True)(cls)


@_request
class Interrupt(Request):
    """0x03 between packets (produced by ProtocolConnection, not by parse_packet)."""


@_request
class MalformedPacket(Request):
    payload: bytes
    reason: str


@_request
class UnknownPacket(Request):
    payload: bytes


@_request
class QuerySupported(Request):
    """``qSupported[:feature;...]``: ``name+`` -> True, ``name-`` -> False,
    ``name=value`` -> value (str), ``name?`` -> None."""

    features: dict[str, bool | str | None] = field(default_factory=dict)


@_request
class MustReplyEmpty(Request):
    """``vMustReplyEmpty``: must get the empty reply (tests unknown-v handling)."""


@_request
class ExtendedMode(Request):
    """``!``: the client uses the extended protocol (gdb's ``target
    extended-remote``: attach, run, detach and kill without disconnecting)."""


@_request
class StartNoAckMode(Request):
    """``QStartNoAckMode``."""


@_request
class XferRead(Request):
    """``qXfer:<object>:read:<annex>:<offset>,<length>``."""

    object: str
    annex: str
    offset: int
    length: int


@_request
class QueryAttached(Request):
    """``qAttached[:pid]``."""

    pid: int | None = None


@_request
class QueryCurrentThread(Request):
    """``qC``."""


@_request
class ThreadInfoFirst(Request):
    """``qfThreadInfo``."""


@_request
class ThreadInfoNext(Request):
    """``qsThreadInfo``."""


@_request
class TraceStatus(Request):
    """``qTStatus``."""


@_request
class QueryOffsets(Request):
    """``qOffsets``."""


@_request
class SymbolLookup(Request):
    """``qSymbol::`` (value and name None: "ready to serve lookups") or
    ``qSymbol:<value>:<hex name>`` (value None when the client could not find it)."""

    value: int | None = None
    name: bytes | None = None


@_request
class HostInfo(Request):
    """``qHostInfo`` (LLDB)."""


@_request
class ProcessInfo(Request):
    """``qProcessInfo`` (LLDB)."""


@_request
class WatchpointSupportInfo(Request):
    """``qWatchpointSupportInfo`` / ``qWatchpointSupportInfo:`` (LLDB: how many
    watchpoints the target supports; answered ``num:N;``)."""


@_request
class RegisterInfo(Request):
    """``qRegisterInfo<hex regnum>`` (LLDB)."""

    regnum: int


@_request
class ThreadSuffixSupported(Request):
    """``QThreadSuffixSupported`` (LLDB)."""


@_request
class ListThreadsInStopReply(Request):
    """``QListThreadsInStopReply`` (LLDB)."""


@_request
class EnableErrorStrings(Request):
    """``QEnableErrorStrings`` (LLDB): later errors may be ``Exx;<hex text>``."""


@_request
class StructuredDataPlugins(Request):
    """``qStructuredDataPlugins`` (LLDB)."""


@_request
class ShlibInfoAddr(Request):
    """``qShlibInfoAddr`` (LLDB)."""


@_request
class VAttachOrWaitSupported(Request):
    """``qVAttachOrWaitSupported`` (LLDB)."""


@_request
class MemoryRegionInfo(Request):
    """``qMemoryRegionInfo:<addr>`` (LLDB)."""

    addr: int


@_request
class ThreadsInfoJson(Request):
    """``jThreadsInfo`` (LLDB)."""


@_request
class ThreadExtendedInfoJson(Request):
    """``jThreadExtendedInfo:<json>`` (LLDB); ``args`` is the raw JSON text."""

    args: bytes = b""


@_request
class MonitorCommand(Request):
    """``qRcmd,<hex command>``; ``command`` is the decoded bytes."""

    command: bytes

    @property
    def text(self) -> str:
        return self.command.decode("utf-8", errors="replace")


@_request
class ThreadEvents(Request):
    """``QThreadEvents:<0|1>``."""

    enable: bool


@_request
class GetWorkingDir(Request):
    """``qGetWorkingDir``."""


@_request
class LaunchGDBServer(Request):
    """``qLaunchGDBServer[;key:value;...]`` (LLDB's platform mode): start a
    gdb-remote server for ``process attach``; ``args`` as raw text pairs."""

    args: dict[str, str] = field(default_factory=dict)


@_request
class QueryGDBServer(Request):
    """``qQueryGDBServer`` (LLDB's platform mode): the gdb-remote servers running."""


@_request
class ProcessInfoFirst(Request):
    """``qfProcessInfo[:key:value;...]`` (LLDB); criteria as raw text pairs."""

    criteria: dict[str, str] = field(default_factory=dict)


@_request
class ProcessInfoNext(Request):
    """``qsProcessInfo`` (LLDB)."""


@_request
class ThreadStopInfo(Request):
    """``qThreadStopInfo<hex tid>`` (LLDB)."""

    tid: int


@_request
class SetNonStop(Request):
    """``QNonStop:<0|1>``."""

    enable: bool


@_request
class SetThread(Request):
    """``H<op><thread-id>``; ``op`` is ``"g"`` (registers/memory) or ``"c"``
    (continue/step), or whatever letter the client sent."""

    op: str
    thread: ThreadId


@_request
class ThreadAlive(Request):
    """``T<thread-id>``."""

    thread: ThreadId


@_request
class HaltReason(Request):
    """``?``."""


@_request
class ReadRegisters(Request):
    """``g[;thread:<id>;]``."""

    thread: ThreadId | None = None


@_request
class WriteRegisters(Request):
    """``G<hex>[;thread:<id>;]``."""

    data: bytes
    thread: ThreadId | None = None


@_request
class ReadRegister(Request):
    """``p<regnum>[;thread:<id>;]``."""

    regnum: int
    thread: ThreadId | None = None


@_request
class WriteRegister(Request):
    """``P<regnum>=<hex>[;thread:<id>;]``."""

    regnum: int
    value: bytes
    thread: ThreadId | None = None


@_request
class ReadMemory(Request):
    """``m<addr>,<length>`` (hex reply)."""

    addr: int
    length: int


@_request
class WriteMemory(Request):
    """``M<addr>,<length>:<hex>``; ``len(data) == length`` is checked."""

    addr: int
    length: int
    data: bytes


@_request
class ReadMemoryBinary(Request):
    """``x<addr>,<length>`` (binary reply; LLDB probes support with ``x0,0``)."""

    addr: int
    length: int


@_request
class WriteMemoryBinary(Request):
    """``X<addr>,<length>:<binary>``; ``len(data) == length`` is checked."""

    addr: int
    length: int
    data: bytes


@_request
class InsertBreakpoint(Request):
    """``Z<type>,<addr>,<kind>[;X<len>,<hex bytecode>...][;cmds:<persist>,...]``.

    ``conditions`` are the agent-expression bytecodes of the condition list;
    ``commands`` the bytecodes of the command list."""

    type: BreakpointType
    addr: int
    kind: int
    conditions: tuple[bytes, ...] = ()
    commands: tuple[bytes, ...] = ()
    persist: bool = False


@_request
class RemoveBreakpoint(Request):
    """``z<type>,<addr>,<kind>``."""

    type: BreakpointType
    addr: int
    kind: int


@_request
class Continue(Request):
    """``c[addr]``."""

    addr: int | None = None


@_request
class Step(Request):
    """``s[addr]``."""

    addr: int | None = None


@_request
class ContinueWithSignal(Request):
    """``C<sig>[;addr]``."""

    signal: int
    addr: int | None = None


@_request
class StepWithSignal(Request):
    """``S<sig>[;addr]``."""

    signal: int
    addr: int | None = None


@_request
class VContQuery(Request):
    """``vCont?``."""


@dataclass(frozen=True, slots=True)
class VContAction:
    """One vCont action. ``action`` is one of ``c C s S t r``; ``signal`` is set for
    C/S, ``start``/``end`` for ``r`` (step while start <= pc < end); ``thread`` is
    None when the action applies to every thread not named by an earlier action."""

    action: str
    signal: int | None = None
    thread: ThreadId | None = None
    start: int | None = None
    end: int | None = None


@_request
class VCont(Request):
    """``vCont;<action>[:thread-id];...``."""

    actions: tuple[VContAction, ...]


@_request
class VKill(Request):
    """``vKill;<pid>``."""

    pid: int


@_request
class Kill(Request):
    """``k``."""


@_request
class Detach(Request):
    """``D`` or ``D;<pid>``."""

    pid: int | None = None


@_request
class VAttach(Request):
    """``vAttach;<pid>``."""

    pid: int


@_request
class VRun(Request):
    """``vRun;<hex filename>[;<hex arg>]...``; an empty filename is b""."""

    filename: bytes
    args: tuple[bytes, ...] = ()


@_request
class VFileSetFs(Request):
    """``vFile:setfs:<pid>`` (0: the stub's own filesystem)."""

    pid: int


@_request
class VFileOpen(Request):
    """``vFile:open:<hex path>,<flags>,<mode>`` (flags: :class:`FileIOOpenFlags`)."""

    path: bytes
    flags: int
    mode: int


@_request
class VFilePread(Request):
    """``vFile:pread:<fd>,<count>,<offset>``."""

    fd: int
    count: int
    offset: int


@_request
class VFilePwrite(Request):
    """``vFile:pwrite:<fd>,<offset>,<binary data>``."""

    fd: int
    offset: int
    data: bytes


@_request
class VFileClose(Request):
    """``vFile:close:<fd>``."""

    fd: int


@_request
class VFileFstat(Request):
    """``vFile:fstat:<fd>``."""

    fd: int


@_request
class VFileUnlink(Request):
    """``vFile:unlink:<hex path>``."""

    path: bytes


@_request
class VFileReadlink(Request):
    """``vFile:readlink:<hex path>``."""

    path: bytes


@_request
class WasmCallStack(Request):
    """``qWasmCallStack[:<tid hex>]``."""

    tid: int | None = None


@_request
class WasmLocal(Request):
    """``qWasmLocal:<frame>;<index>`` (decimal)."""

    frame: int
    index: int


@_request
class WasmGlobal(Request):
    """``qWasmGlobal:<frame>;<index>`` (decimal)."""

    frame: int
    index: int


@_request
class WasmStackValue(Request):
    """``qWasmStackValue:<frame>;<index>`` (decimal)."""

    frame: int
    index: int


@_request
class WasmMemory(Request):
    """``qWasmMem:<module id decimal>;<addr hex>;<length hex>``."""

    module_id: int
    addr: int
    length: int


# ------------------------------------------------------------------------ parsing
class _Unknown(Exception):
    """Raised inside the parser for a packet kind we do not implement."""


# Packets whose whole payload is the name.
_BARE: dict[bytes, type[Request]] = {
    b"?": HaltReason,
    b"k": Kill,
    b"vMustReplyEmpty": MustReplyEmpty,
    b"QStartNoAckMode": StartNoAckMode,
    b"qC": QueryCurrentThread,
    b"qfThreadInfo": ThreadInfoFirst,
    b"qsThreadInfo": ThreadInfoNext,
    b"qTStatus": TraceStatus,
    b"qOffsets": QueryOffsets,
    b"qHostInfo": HostInfo,
    b"qProcessInfo": ProcessInfo,
    b"qWatchpointSupportInfo": WatchpointSupportInfo,
    b"qWatchpointSupportInfo:": WatchpointSupportInfo,
    b"QThreadSuffixSupported": ThreadSuffixSupported,
    b"QListThreadsInStopReply": ListThreadsInStopReply,
    b"QEnableErrorStrings": EnableErrorStrings,
    b"qStructuredDataPlugins": StructuredDataPlugins,
    b"qShlibInfoAddr": ShlibInfoAddr,
    b"qVAttachOrWaitSupported": VAttachOrWaitSupported,
    b"jThreadsInfo": ThreadsInfoJson,
    b"qGetWorkingDir": GetWorkingDir,
    b"qsProcessInfo": ProcessInfoNext,
    b"qQueryGDBServer": QueryGDBServer,
    b"vCont?": VContQuery,
    b"!": ExtendedMode,
}


def parse_packet(payload: bytes) -> Request:
    """Parse one decoded packet payload. Never raises (see module docstring)."""
    try:
        bare = _BARE.get(payload)
        if bare is not None:
            return bare()
        if not payload:
            raise _Unknown
        handler = _BY_FIRST_BYTE.get(payload[:1])
        if handler is None:
            raise _Unknown
        return handler(payload)
    except _Unknown:
        return UnknownPacket(payload)
    except ProtocolError as error:
        return MalformedPacket(payload, str(error))
    except (ValueError, IndexError, OverflowError) as error:
        # Defensive: every helper raises ProtocolError, but a parser bug must not
        # take down the connection.
        return MalformedPacket(payload, f"unparsable packet: {error}")


def _text(raw: bytes) -> str:
    # latin-1 is byte-preserving and cannot fail.
    return raw.decode("latin-1")


def _split_exact(raw: bytes, separator: bytes, count: int, what: str) -> list[bytes]:
    parts = raw.split(separator)
    if len(parts) != count:
        raise ProtocolError(f"expected {count} fields in {what}")
    return parts


def _addr_length(raw: bytes, what: str) -> tuple[int, int]:
    addr_text, length_text = _split_exact(raw, b",", 2, what)
    return parse_hex_int(addr_text, "address"), parse_hex_int(length_text, "length")


def _thread_suffix(raw: bytes) -> ThreadId | None:
    """LLDB's ``;thread:<id>;`` suffix (QThreadSuffixSupported); raw starts at ';'."""
    if not raw:
        return None
    if not raw.startswith(b";thread:"):
        raise ProtocolError("expected ;thread: suffix")
    body = raw[len(b";thread:") :]
    if body.endswith(b";"):
        body = body[:-1]
    return parse_thread_id(body)


def _split_suffix(raw: bytes) -> tuple[bytes, ThreadId | None]:
    head, semicolon, tail = raw.partition(b";")
    return head, _thread_suffix(semicolon + tail)


def _optional_addr(raw: bytes) -> int | None:
    return parse_hex_int(raw, "address") if raw else None


# -- single-letter packets ------------------------------------------------------
def _parse_H(payload: bytes) -> Request:
    if len(payload) < 3:
        raise ProtocolError("H needs an operation and a thread-id")
    return SetThread(_text(payload[1:2]), parse_thread_id(payload[2:]))


def _parse_T(payload: bytes) -> Request:
    return ThreadAlive(parse_thread_id(payload[1:]))


def _parse_g(payload: bytes) -> Request:
    return ReadRegisters(_thread_suffix(payload[1:]))


def _parse_G(payload: bytes) -> Request:
    data, thread = _split_suffix(payload[1:])
    return WriteRegisters(hex_decode(data, "register data"), thread)


def _parse_p(payload: bytes) -> Request:
    regnum, thread = _split_suffix(payload[1:])
    return ReadRegister(parse_hex_int(regnum, "register number"), thread)


def _parse_P(payload: bytes) -> Request:
    body, thread = _split_suffix(payload[1:])
    regnum, equals, value = body.partition(b"=")
    if not equals:
        raise ProtocolError("P needs <regnum>=<value>")
    return WriteRegister(
        parse_hex_int(regnum, "register number"), hex_decode(value, "register value"), thread
    )


def _parse_m(payload: bytes) -> Request:
    return ReadMemory(*_addr_length(payload[1:], "m packet"))


def _parse_x(payload: bytes) -> Request:
    return ReadMemoryBinary(*_addr_length(payload[1:], "x packet"))


def _parse_M(payload: bytes) -> Request:
    head, colon, data = payload[1:].partition(b":")
    if not colon:
        raise ProtocolError("M needs ':' before the data")
    addr, length = _addr_length(head, "M packet")
    decoded = hex_decode(data, "memory data")
    if len(decoded) != length:
        raise ProtocolError("M data length does not match the length field")
    return WriteMemory(addr, length, decoded)


def _parse_X(payload: bytes) -> Request:
    head, colon, data = payload[1:].partition(b":")
    if not colon:
        raise ProtocolError("X needs ':' before the data")
    addr, length = _addr_length(head, "X packet")
    if len(data) != length:
        raise ProtocolError("X data length does not match the length field")
    return WriteMemoryBinary(addr, length, data)


def _breakpoint_head(payload: bytes) -> tuple[BreakpointType, int, int, bytes]:
    head, _, rest = payload[1:].partition(b";")
    type_text, addr_text, kind_text = _split_exact(head, b",", 3, "breakpoint packet")
    type_number = parse_hex_int(type_text, "breakpoint type")
    if type_number not in BreakpointType._value2member_map_:
        # The manual: a stub that does not support a type replies empty.
        raise _Unknown
    return (
        BreakpointType(type_number),
        parse_hex_int(addr_text, "address"),
        parse_hex_int(kind_text, "kind"),
        rest,
    )


def _agent_expressions(raw: bytes, what: str) -> list[bytes]:
    """A run of ``X<len>,<hex bytecode>`` items -> bytecodes. gdb concatenates them
    with no separator (remote.c), so split before every ``X`` (hex has none)."""
    chunks = raw.strip(b";").split(b"X")
    if chunks[0]:
        raise ProtocolError(f"{what} must be X<len>,<bytes> items")
    expressions = []
    for chunk in chunks[1:]:
        length_text, comma, code = chunk.strip(b";").partition(b",")
        if not comma:
            raise ProtocolError(f"{what} item needs <len>,<bytes>")
        bytecode = hex_decode(code, "agent expression")
        if len(bytecode) != parse_hex_int(length_text, "agent expression length"):
            raise ProtocolError(f"{what} item length mismatch")
        expressions.append(bytecode)
    return expressions


def _parse_Z(payload: bytes) -> Request:
    bp_type, addr, kind, rest = _breakpoint_head(payload)
    # rest = "X<len>,<hex>X<len>,<hex>...[;cmds:<persist>,X<len>,<hex>...]"
    cond_part, cmds_marker, cmds_part = rest.partition(b"cmds:")
    conditions = _agent_expressions(cond_part, "condition") if cond_part.strip(b";") else []
    commands: list[bytes] = []
    persist = False
    if cmds_marker:
        persist_text, comma, command_list = cmds_part.partition(b",")
        if not comma:
            raise ProtocolError("cmds needs <persist>,<commands>")
        persist = parse_hex_int(persist_text, "persist flag") != 0
        commands = _agent_expressions(command_list, "command")
    return InsertBreakpoint(bp_type, addr, kind, tuple(conditions), tuple(commands), persist)


def _parse_z(payload: bytes) -> Request:
    bp_type, addr, kind, rest = _breakpoint_head(payload)
    if rest:
        raise ProtocolError("z takes no conditions")
    return RemoveBreakpoint(bp_type, addr, kind)


def _parse_c(payload: bytes) -> Request:
    return Continue(_optional_addr(payload[1:]))


def _parse_s(payload: bytes) -> Request:
    return Step(_optional_addr(payload[1:]))


def _signal_and_addr(payload: bytes) -> tuple[int, int | None]:
    signal_text, semicolon, addr_text = payload[1:].partition(b";")
    signal = parse_hex_int(signal_text, "signal")
    if semicolon and not addr_text:
        raise ProtocolError("empty address after ';'")
    return signal, _optional_addr(addr_text)


def _parse_C(payload: bytes) -> Request:
    return ContinueWithSignal(*_signal_and_addr(payload))


def _parse_S(payload: bytes) -> Request:
    return StepWithSignal(*_signal_and_addr(payload))


def _parse_D(payload: bytes) -> Request:
    if payload == b"D":
        return Detach()
    if not payload.startswith(b"D;"):
        raise ProtocolError("expected D or D;<pid>")
    return Detach(parse_hex_int(payload[2:], "process id"))


# -- q / Q packets --------------------------------------------------------------
def _parse_supported(payload: bytes) -> Request:
    if payload == b"qSupported":
        return QuerySupported({})
    if not payload.startswith(b"qSupported:"):
        raise _Unknown
    features: dict[str, bool | str | None] = {}
    for item in payload[len(b"qSupported:") :].split(b";"):
        if not item:
            continue
        name, equals, value = item.partition(b"=")
        if equals:
            features[_text(name)] = _text(value)
        elif item[-1:] == b"+":
            features[_text(item[:-1])] = True
        elif item[-1:] == b"-":
            features[_text(item[:-1])] = False
        elif item[-1:] == b"?":
            features[_text(item[:-1])] = None
        else:
            # Not one of the manual's four forms; keep the connection alive (a
            # malformed qSupported would end the session) and record it as offered.
            features[_text(item)] = True
    return QuerySupported(features)


def _parse_xfer(payload: bytes) -> Request:
    parts = payload.split(b":")
    # qXfer : object : read : annex... : offset,length  (annex may hold ':' in theory)
    if len(parts) < 3 or parts[2] != b"read":
        raise _Unknown  # qXfer writes and unknown operations: "not supported"
    if len(parts) < 5:
        raise ProtocolError("qXfer read needs :annex:offset,length")
    annex = b":".join(parts[3:-1])
    offset, length = _addr_length(parts[-1], "qXfer offset,length")
    return XferRead(_text(parts[1]), _text(annex), offset, length)


def _parse_attached(payload: bytes) -> Request:
    if payload == b"qAttached":
        return QueryAttached()
    if payload.startswith(b"qAttached:"):
        return QueryAttached(parse_hex_int(payload[len(b"qAttached:") :], "process id"))
    raise _Unknown


def _parse_symbol(payload: bytes) -> Request:
    body = payload[len(b"qSymbol:") :]
    value_text, colon, name_text = body.partition(b":")
    if not colon:
        raise ProtocolError("qSymbol needs <value>:<name>")
    value = parse_hex_int(value_text, "symbol value") if value_text else None
    name = hex_decode(name_text, "symbol name") if name_text else None
    return SymbolLookup(value, name)


def _parse_rcmd(payload: bytes) -> Request:
    return MonitorCommand(hex_decode(payload[len(b"qRcmd,") :], "monitor command"))


def _parse_bool_flag(raw: bytes, what: str) -> bool:
    if raw == b"0":
        return False
    if raw == b"1":
        return True
    raise ProtocolError(f"{what} must be 0 or 1")


def _parse_process_info_first(payload: bytes) -> Request:
    if payload == b"qfProcessInfo":
        return ProcessInfoFirst({})
    if not payload.startswith(b"qfProcessInfo:"):
        raise _Unknown
    criteria: dict[str, str] = {}
    for item in payload[len(b"qfProcessInfo:") :].split(b";"):
        if not item:
            continue
        key, colon, value = item.partition(b":")
        if not colon:
            raise ProtocolError("qfProcessInfo criteria must be key:value")
        criteria[_text(key)] = _text(value)
    return ProcessInfoFirst(criteria)


def _parse_launch_gdb_server(payload: bytes) -> Request:
    if payload == b"qLaunchGDBServer":
        return LaunchGDBServer({})
    if not payload.startswith(b"qLaunchGDBServer;"):
        raise _Unknown
    args: dict[str, str] = {}
    for item in payload[len(b"qLaunchGDBServer;") :].split(b";"):
        if item:
            key, _, value = item.partition(b":")
            args[_text(key)] = _text(value)
    return LaunchGDBServer(args)


def _two_decimals(body: bytes, what: str) -> tuple[int, int]:
    first, second = _split_exact(body, b";", 2, what)
    return parse_dec_int(first, "frame index"), parse_dec_int(second, "index")


def _parse_wasm(payload: bytes) -> Request:
    name, colon, body = payload.partition(b":")
    if name == b"qWasmCallStack":
        if not colon:
            return WasmCallStack()
        return WasmCallStack(parse_hex_int(body, "thread id"))
    if not colon:
        raise _Unknown
    if name == b"qWasmLocal":
        return WasmLocal(*_two_decimals(body, "qWasmLocal"))
    if name == b"qWasmGlobal":
        return WasmGlobal(*_two_decimals(body, "qWasmGlobal"))
    if name == b"qWasmStackValue":
        return WasmStackValue(*_two_decimals(body, "qWasmStackValue"))
    if name == b"qWasmMem":
        module_text, addr_text, length_text = _split_exact(body, b";", 3, "qWasmMem")
        return WasmMemory(
            parse_dec_int(module_text, "module id"),
            parse_hex_int(addr_text, "address"),
            parse_hex_int(length_text, "length"),
        )
    raise _Unknown


def _prefixed(prefix: bytes, build):
    """Handler for ``<prefix><hex number>`` packets."""

    def handler(payload: bytes) -> Request:
        return build(parse_hex_int(payload[len(prefix) :], "number"))

    return handler


# Ordered (prefix, handler) lists per leading byte; the first matching prefix wins,
# so longer names that share a prefix come first.
_Q_LOWER: list[tuple[bytes, object]] = [
    (b"qSupported", _parse_supported),
    (b"qXfer:", _parse_xfer),
    (b"qAttached", _parse_attached),
    (b"qSymbol:", _parse_symbol),
    (b"qRegisterInfo", _prefixed(b"qRegisterInfo", RegisterInfo)),
    (b"qMemoryRegionInfo:", _prefixed(b"qMemoryRegionInfo:", MemoryRegionInfo)),
    (b"qRcmd,", _parse_rcmd),
    (b"qfProcessInfo", _parse_process_info_first),
    (b"qLaunchGDBServer", _parse_launch_gdb_server),
    (b"qThreadStopInfo", _prefixed(b"qThreadStopInfo", ThreadStopInfo)),
    (b"qWasm", _parse_wasm),
]

_Q_UPPER: list[tuple[bytes, object]] = [
    (
        b"QThreadEvents:",
        lambda p: ThreadEvents(_parse_bool_flag(p[len(b"QThreadEvents:") :], "QThreadEvents")),
    ),
    (b"QNonStop:", lambda p: SetNonStop(_parse_bool_flag(p[len(b"QNonStop:") :], "QNonStop"))),
]


def _dispatch_prefixed(table):
    def handler(payload: bytes) -> Request:
        for prefix, parse in table:
            if payload.startswith(prefix):
                return parse(payload)
        raise _Unknown

    return handler


# -- v packets --------------------------------------------------------------------
def _parse_vcont(payload: bytes) -> Request:
    if not payload.startswith(b"vCont;"):
        raise _Unknown
    actions: list[VContAction] = []
    for item in payload[len(b"vCont;") :].split(b";"):
        if not item:
            raise ProtocolError("empty vCont action")
        action_text, colon, thread_text = item.partition(b":")
        thread = parse_thread_id(thread_text) if colon else None
        letter, argument = action_text[:1], action_text[1:]
        if letter in (b"c", b"s", b"t"):
            if argument:
                raise ProtocolError(f"vCont action {_text(letter)} takes no argument")
            actions.append(VContAction(_text(letter), thread=thread))
        elif letter in (b"C", b"S"):
            actions.append(
                VContAction(_text(letter), signal=parse_hex_int(argument, "signal"), thread=thread)
            )
        elif letter == b"r":
            start, end = _addr_length(argument, "vCont;r range")
            actions.append(VContAction("r", thread=thread, start=start, end=end))
        else:
            raise ProtocolError("unknown vCont action")
    return VCont(tuple(actions))


def _parse_vfile(payload: bytes) -> Request:
    operation, colon, args = payload[len(b"vFile:") :].partition(b":")
    if not colon:
        raise _Unknown
    if operation == b"setfs":
        return VFileSetFs(parse_hex_int(args, "process id"))
    if operation == b"open":
        path, flags, mode = _split_exact(args, b",", 3, "vFile:open")
        return VFileOpen(
            hex_decode(path, "path"), parse_hex_int(flags, "flags"), parse_hex_int(mode, "mode")
        )
    if operation == b"pread":
        fd, count, offset = _split_exact(args, b",", 3, "vFile:pread")
        return VFilePread(
            parse_hex_int(fd, "fd"), parse_hex_int(count, "count"), parse_hex_int(offset, "offset")
        )
    if operation == b"pwrite":
        # The data is binary and may itself contain ',' -- split only twice.
        fd, comma1, rest = args.partition(b",")
        offset, comma2, data = rest.partition(b",")
        if not (comma1 and comma2):
            raise ProtocolError("vFile:pwrite needs fd,offset,data")
        return VFilePwrite(parse_hex_int(fd, "fd"), parse_hex_int(offset, "offset"), data)
    if operation == b"close":
        return VFileClose(parse_hex_int(args, "fd"))
    if operation == b"fstat":
        return VFileFstat(parse_hex_int(args, "fd"))
    if operation == b"unlink":
        return VFileUnlink(hex_decode(args, "path"))
    if operation == b"readlink":
        return VFileReadlink(hex_decode(args, "path"))
    raise _Unknown


def _parse_vrun(payload: bytes) -> Request:
    if not payload.startswith(b"vRun;"):
        raise ProtocolError("expected vRun;<filename>")
    fields = payload[len(b"vRun;") :].split(b";")
    decoded = [hex_decode(item, "vRun argument") for item in fields]
    return VRun(decoded[0], tuple(decoded[1:]))


_V: list[tuple[bytes, object]] = [
    (b"vCont", _parse_vcont),
    (b"vFile:", _parse_vfile),
    (b"vKill;", _prefixed(b"vKill;", VKill)),
    (b"vAttach;", _prefixed(b"vAttach;", VAttach)),
    (b"vRun", _parse_vrun),
]


def _parse_j(payload: bytes) -> Request:
    if payload.startswith(b"jThreadExtendedInfo"):
        rest = payload[len(b"jThreadExtendedInfo") :]
        if rest and not rest.startswith(b":"):
            raise _Unknown
        return ThreadExtendedInfoJson(rest[1:])
    raise _Unknown


_BY_FIRST_BYTE = {
    b"H": _parse_H,
    b"T": _parse_T,
    b"g": _parse_g,
    b"G": _parse_G,
    b"p": _parse_p,
    b"P": _parse_P,
    b"m": _parse_m,
    b"M": _parse_M,
    b"x": _parse_x,
    b"X": _parse_X,
    b"Z": _parse_Z,
    b"z": _parse_z,
    b"c": _parse_c,
    b"s": _parse_s,
    b"C": _parse_C,
    b"S": _parse_S,
    b"D": _parse_D,
    b"q": _dispatch_prefixed(_Q_LOWER),
    b"Q": _dispatch_prefixed(_Q_UPPER),
    b"v": _dispatch_prefixed(_V),
    b"j": _parse_j,
}
