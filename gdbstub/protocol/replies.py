"""Reply payload builders and the stub's advertised capabilities.

Every builder returns an *unescaped* payload: the framer
(:func:`gdbstub.protocol.framing.encode_packet`) escapes ``# $ } *`` on the way out,
so binary replies (``x``, ``qXfer``, ``vFile:pread``/``fstat``/``readlink``) must not
be escaped here or they would be escaped twice.

References: GDB manual "Remote Protocol" appendix ("Standard Replies", "Stop Reply
Packets", "General Query Packets" for qSupported and qXfer, "Host I/O Packets",
"File-I/O Remote Protocol Extension" for errno values and struct stat); LLDB's
lldbgdbremote.md for QEnableErrorStrings and qWasmCallStack.
"""
from __future__ import annotations

import enum
import struct
from binascii import hexlify
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Mapping

from .encoding import escape_binary, hex_decode, hex_encode, unescape_binary
from .framing import DEFAULT_MAX_PACKET_SIZE

if TYPE_CHECKING:
    from .packets import ThreadId

__all__ = [
    "ErrorCode",
    "Signal",
    "FileIOErrno",
    "Capabilities",
    "ok",
    "empty",
    "error",
    "hex_encode",
    "hex_decode",
    "escape_binary",
    "unescape_binary",
    "stop_reply",
    "exit_reply",
    "terminated_reply",
    "qxfer_chunk",
    "thread_list_reply",
    "current_thread_reply",
    "key_value_reply",
    "console_output",
    "vfile_result",
    "vfile_data",
    "fileio_stat",
    "wasm_call_stack_reply",
]


class Signal(enum.IntEnum):
    """GDB's target-independent signal numbers as used on the wire (GDB's
    ``gdb_signal`` numbering, which matches Linux for these but not for all:
    7 is EMT and 10 is BUS there)."""

    NONE = 0
    SIGHUP = 1
    SIGINT = 2
    SIGQUIT = 3
    SIGILL = 4
    SIGTRAP = 5
    SIGABRT = 6
    SIGFPE = 8
    SIGKILL = 9
    SIGBUS = 10
    SIGSEGV = 11
    SIGTERM = 15
    SIGSTOP = 17


class ErrorCode(enum.IntEnum):
    """The two hex digits of an ``Exx`` error reply: the stub's one list of them.

    The GDB manual ("Standard Replies") leaves the digits unspecified; gdb shows
    them only as text, lldb maps a few.  By the convention gdbserver follows,
    most are errno numbers written in hex (EINVAL, 22, is ``E16``).  One is not:
    a memory fault answers ``E14``, which reads like EFAULT's *decimal* number
    14 but is 0x14 on the wire (errno 20).  That reply is this stub's contract
    for a fault (clients and tests look for it), so it keeps its digits under a
    name that says what it means rather than pretending to be an errno."""

    EPERM = 0x01    # errno 1: refused (read-only code, runtime-managed registers)
    ENOENT = 0x02   # errno 2: no such process, thread, module, document
    EBUSY = 0x10    # errno 16: the guest is running
    EINVAL = 0x16   # errno 22: a request this target cannot carry out as asked
    #: Memory that no region of the target covers, or a read/write past one.
    MEMORY_FAULT = 0x14
    #: lldb-server's reply to ``qRegisterInfo`` past the last register, which
    #: lldb takes as the end of the register list (lldbgdbremote.md).
    NO_SUCH_REGISTER = 0x45


class FileIOOpenFlags(enum.IntFlag):
    """vFile:open flag values (GDB manual, File-I/O "Open Flags"; not the host's)."""

    O_RDONLY = 0x0
    O_WRONLY = 0x1
    O_RDWR = 0x2
    O_APPEND = 0x8
    O_CREAT = 0x200
    O_TRUNC = 0x400
    O_EXCL = 0x800


class FileIOErrno(enum.IntEnum):
    """errno values of the File-I/O protocol (vFile replies), not the host's."""

    EPERM = 1
    ENOENT = 2
    EINTR = 4
    EBADF = 9
    EACCES = 13
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    ENODEV = 19
    ENOTDIR = 20
    EISDIR = 21
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    EFBIG = 27
    ENOSPC = 28
    ESPIPE = 29
    EROFS = 30
    ENAMETOOLONG = 91
    EUNKNOWN = 9999


@dataclass(frozen=True)
class Capabilities:
    """What this stub supports; :meth:`supported_reply` advertises exactly the
    fields that are set, :meth:`negotiate` narrows them to what the client offered.

    ``packet_size`` is the largest packet the stub accepts (advertised as
    ``PacketSize``); keep it <= the framer's ``max_packet_size``.
    ``error_strings`` is *not* a qSupported feature: LLDB turns error strings on
    with the QEnableErrorStrings packet, which the session accepts only when this
    is set."""

    packet_size: int = DEFAULT_MAX_PACKET_SIZE
    no_ack_mode: bool = True
    xfer_features: bool = False
    xfer_libraries: bool = False
    xfer_libraries_svr4: bool = False
    xfer_exec_file: bool = False
    xfer_auxv: bool = False
    xfer_osdata: bool = False
    xfer_threads: bool = False
    swbreak: bool = False
    hwbreak: bool = False
    vcont: bool = False
    multiprocess: bool = False
    qthread_events: bool = False
    non_stop: bool = False
    conditional_breakpoints: bool = False
    breakpoint_commands: bool = False
    error_strings: bool = False

    # Unannotated, so not dataclass fields.
    # field name -> qSupported feature, in the order they are advertised.
    _FEATURES = (
        ("no_ack_mode", "QStartNoAckMode"),
        ("xfer_features", "qXfer:features:read"),
        ("xfer_libraries", "qXfer:libraries:read"),
        ("xfer_libraries_svr4", "qXfer:libraries-svr4:read"),
        ("xfer_exec_file", "qXfer:exec-file:read"),
        ("xfer_auxv", "qXfer:auxv:read"),
        ("xfer_osdata", "qXfer:osdata:read"),
        ("xfer_threads", "qXfer:threads:read"),
        ("swbreak", "swbreak"),
        ("hwbreak", "hwbreak"),
        ("vcont", "vContSupported"),
        ("multiprocess", "multiprocess"),
        ("qthread_events", "QThreadEvents"),
        ("non_stop", "QNonStop"),
        ("conditional_breakpoints", "ConditionalBreakpoints"),
        ("breakpoint_commands", "BreakpointCommands"),
    )
    # Features that only take effect when the client offered them too (the manual
    # describes each as "GDB supports ..." in its qSupported and the stub must not
    # use them otherwise, e.g. send swbreak stop reasons).
    _CLIENT_OPT_IN = {
        "swbreak": "swbreak",
        "hwbreak": "hwbreak",
        "vcont": "vContSupported",
        "multiprocess": "multiprocess",
    }

    def __post_init__(self):
        if self.packet_size < 1:
            raise ValueError("packet_size must be positive")

    def supported_reply(self) -> bytes:
        """The qSupported reply: ``PacketSize=<hex>`` then ``name+`` for every set
        feature (nothing for unset ones)."""
        items = [b"PacketSize=%x" % self.packet_size]
        for attribute, feature in self._FEATURES:
            if getattr(self, attribute):
                items.append(feature.encode("ascii") + b"+")
        return b";".join(items)

    def negotiate(self, client_features: Mapping[str, bool | str | None]) -> "Capabilities":
        """The capabilities in effect for a client whose qSupported offered
        ``client_features`` (as parsed by ``QuerySupported.features``)."""
        changes = {
            attribute: False
            for attribute, feature in self._CLIENT_OPT_IN.items()
            if getattr(self, attribute) and client_features.get(feature) is not True
        }
        return replace(self, **changes)

    def advertised(self) -> list[str]:
        """Names of the advertised features (without PacketSize), for logs/tests."""
        return [feature for attribute, feature in self._FEATURES if getattr(self, attribute)]


def ok() -> bytes:
    return b"OK"


def empty() -> bytes:
    """The empty reply: "packet not supported"."""
    return b""


def error(code: int, message: str | None = None, error_strings_enabled: bool = False) -> bytes:
    """``Exx`` (two hex digits), or ``Exx;<hex message>`` once the client has sent
    QEnableErrorStrings (LLDB's format; GDB manual "Standard Replies")."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"error code {code} does not fit in two hex digits")
    reply = b"E%02x" % code
    if error_strings_enabled and message:
        reply += b";" + hex_encode(message.encode("utf-8"))
    return reply


def _check_byte(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit in two hex digits")


def _format_value(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("ascii")
    if isinstance(value, int):
        return b"%x" % value
    raise TypeError(f"cannot format {type(value).__name__} in a reply")


#: (pid, tid, multiprocess) -> a stop reply's ``thread:ID;`` part (stop_reply).
_THREAD_PARTS: dict[tuple[int | None, int, bool], bytes] = {}
#: Entries of _THREAD_PARTS before it starts over (thread ids come and go with Stores).
_THREAD_PARTS_LIMIT = 256


def stop_reply(
    signal: int,
    thread: ThreadId | None = None,
    registers: Mapping[int, bytes] | None = None,
    reason: str | None = None,
    extra: Mapping[str, bytes | str | int] | Iterable[tuple[str, bytes | str | int]] | None = None,
    multiprocess: bool = True,
) -> bytes:
    """``T<sig>thread:<id>;<regnum>:<hex value>;...;<reason>:;<key>:<value>;...``.

    ``registers`` maps register numbers to their raw target-order bytes.
    ``reason`` is a value-less stop reason such as ``swbreak`` or ``hwbreak`` (send
    only if the client offered it, see :meth:`Capabilities.negotiate`). ``extra``
    adds ``key:value`` pairs in order (ints in hex, str/bytes verbatim), e.g.
    ``watch`` with an address or LLDB's ``threads``/``thread-pcs``/``reason``."""
    if not 0 <= signal <= 0xFF:
        _check_byte(signal, "signal")
    parts = [b"T%02x" % signal]
    if thread is not None:
        # A stub names the same few threads in every stop reply: each one's
        # `thread:` part is made once (ThreadId is frozen, so the part is too).
        key = (thread.pid, thread.tid, multiprocess)
        part = _THREAD_PARTS.get(key)
        if part is None:
            if len(_THREAD_PARTS) >= _THREAD_PARTS_LIMIT:
                _THREAD_PARTS.clear()
            part = _THREAD_PARTS[key] = b"thread:" + thread.encode(multiprocess) + b";"
        parts.append(part)
    if registers:
        for regnum in sorted(registers):
            parts.append(b"%02x:%s;" % (regnum, hexlify(registers[regnum])))
    if reason:
        parts.append(reason.encode("ascii") + b":;")
    if extra:
        # (a list of pairs is what sessions pass: no ABC check for it)
        pairs = extra if type(extra) is list or not isinstance(extra, Mapping) else extra.items()
        for key, value in pairs:
            text = value.encode("ascii") if type(value) is str else _format_value(value)
            parts.append(key.encode("ascii") + b":" + text + b";")
    return b"".join(parts)


def exit_reply(status: int, pid: int | None = None) -> bytes:
    """``W<status>[;process:<pid>]`` (pid only with the multiprocess extension)."""
    _check_byte(status, "exit status")
    reply = b"W%02x" % status
    if pid is not None:
        reply += b";process:%x" % pid
    return reply


def terminated_reply(signal: int, pid: int | None = None) -> bytes:
    """``X<signal>[;process:<pid>]``: the process was killed by a signal."""
    _check_byte(signal, "signal")
    reply = b"X%02x" % signal
    if pid is not None:
        reply += b";process:%x" % pid
    return reply


def qxfer_chunk(data: bytes, offset: int, length: int) -> bytes:
    """The qXfer read reply for ``data[offset:offset+length]``: ``m`` + chunk when
    more follows, ``l`` + chunk when the chunk reaches the end (``l`` alone past
    the end). ``offset``/``length`` may be arbitrarily large."""
    if offset < 0 or length < 0:
        raise ValueError("negative offset or length")
    if offset >= len(data):
        return b"l"
    end = offset + length
    chunk = data[offset:end]
    return (b"m" if end < len(data) else b"l") + chunk


def thread_list_reply(threads: Iterable[ThreadId], multiprocess: bool = True) -> bytes:
    """qfThreadInfo/qsThreadInfo: ``m<id>,<id>...``, or ``l`` for an empty list."""
    ids = [thread.encode(multiprocess) for thread in threads]
    return b"m" + b",".join(ids) if ids else b"l"


def threads_document(threads: Iterable[ThreadId], multiprocess: bool = True) -> bytes:
    """The ``qXfer:threads:read`` document (GDB manual, "Thread List
    Format"): one ``<thread id="..."/>`` per thread, ids as in
    ``qfThreadInfo``.  gdb reads it in one packet where ``qfThreadInfo`` and
    ``qsThreadInfo`` take two, at every stop of a ``next`` (it refreshes its
    thread list after each range step)."""
    items = b"".join(b'<thread id="%s"/>' % thread.encode(multiprocess) for thread in threads)
    return b'<?xml version="1.0"?>\n<threads>' + items + b"</threads>\n"


def current_thread_reply(thread: ThreadId, multiprocess: bool = True) -> bytes:
    """qC: ``QC<thread-id>``."""
    return b"QC" + thread.encode(multiprocess)


def key_value_reply(pairs: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]) -> bytes:
    """``key:value;`` list (qHostInfo, qProcessInfo, qRegisterInfo,
    qMemoryRegionInfo). Values are preformatted: LLDB mixes decimal and hex."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = []
    for key, value in items:
        if not isinstance(value, (str, bytes)):
            raise TypeError("key_value_reply values must be preformatted str or bytes")
        out.append(key.encode("ascii") + b":" + _format_value(value) + b";")
    return b"".join(out)


def console_output(text: bytes) -> bytes:
    """``O<hex>``: console output (e.g. qRcmd results before the final OK)."""
    return b"O" + hex_encode(text)


def vfile_result(result: int, errno: int | None = None) -> bytes:
    """``F<result>[,<errno>]`` with both numbers in hex (result -1 as ``-1``)."""
    reply = b"F-%x" % -result if result < 0 else b"F%x" % result
    if errno is not None:
        reply += b",%x" % errno
    return reply


def vfile_data(data: bytes) -> bytes:
    """``F<length>;<binary data>`` for vFile:pread, vFile:fstat and vFile:readlink."""
    return b"F%x;" % len(data) + data


_FILEIO_STAT = struct.Struct(">IIIIIIIQQQIII")


def fileio_stat(
    *,
    mode: int,
    size: int,
    dev: int = 0,
    ino: int = 0,
    nlink: int = 1,
    uid: int = 0,
    gid: int = 0,
    rdev: int = 0,
    blksize: int = 4096,
    blocks: int | None = None,
    atime: int = 0,
    mtime: int = 0,
    ctime: int = 0,
) -> bytes:
    """The File-I/O ``struct stat`` (64 bytes, big-endian; GDB manual "struct
    stat" in the File-I/O appendix) for a vFile:fstat reply. Values are masked to
    their field widths."""
    if blocks is None:
        blocks = (size + 511) // 512
    u32 = 0xFFFFFFFF
    u64 = 0xFFFFFFFFFFFFFFFF
    return _FILEIO_STAT.pack(
        dev & u32,
        ino & u32,
        mode & u32,
        nlink & u32,
        uid & u32,
        gid & u32,
        rdev & u32,
        size & u64,
        blksize & u64,
        blocks & u64,
        atime & u32,
        mtime & u32,
        ctime & u32,
    )


def wasm_call_stack_reply(pcs: Iterable[int]) -> bytes:
    """qWasmCallStack: the PCs as consecutive little-endian u64, hex encoded
    (lldbgdbremote.md: little endian regardless of the host)."""
    values = [pc & 0xFFFFFFFFFFFFFFFF for pc in pcs]
    return hex_encode(struct.pack("<%dQ" % len(values), *values))
