"""The debugger session: RSP requests -> target operations -> replies.

This is rr's ``GdbServer`` half (debugger semantics) over the pure protocol
layer (``ProtocolConnection``: framing, acks, parsing).  It does no I/O: the
transport feeds it bytes with :meth:`GdbSession.receive`, tells it targets
have news with :meth:`GdbSession.target_event`, and sends
:meth:`GdbSession.take_output`.

Many Stores, one session
------------------------
A session debugs the Store targets it is *attached* to, out of those its
:class:`~gdbstub.targets.TargetHost` has (every Store is a process, pid =
Store id, with one thread, tid 1).  ``target remote`` to ``serve`` attaches
the served Store on connect; ``target extended-remote`` adds ``vAttach``,
``vRun``, ``D;pid``, ``vKill;pid`` and ``qXfer:osdata:read:processes``.
Each request is resolved to one target before its handler runs
(:meth:`GdbSession.target_for`): an explicit ``thread:`` suffix or pid, else
the thread ``Hg`` (registers, memory) or ``Hc`` (resumes) selected.

All-stop (GDB manual, "All-Stop Mode"): a resume names the targets it moves
(``vCont`` actions per ``pPID.TID``); the first stop or exit among them is
reported, stop replies tagged ``thread:pPID.1`` (exits ``;process:PID``),
and every other attached target still running is then stopped too, quietly.
A stop that happened meanwhile in another target is kept and reported by the
next resume that includes it, without resuming anything (as gdbserver does).

Every request gets exactly one reply, except resumes (``c``, ``s``,
``vCont``, ``vAttach`` of a running Store, ``?`` on a running guest), which
are answered by a stop reply when the target stops, and ``k``.  Errors map to
replies in one place, :meth:`_dispatch`: ``TargetError`` -> ``Exx`` with its
:class:`~gdbstub.protocol.replies.ErrorCode`, bad register or protocol input
-> ``E16`` (EINVAL), file-server errors -> ``F-1,errno``; the message goes
along when the client enabled error strings (LLDB's QEnableErrorStrings).

Dialects and extensions: what depends on how the client sees a Store
(registers, addresses, libraries) is the session's :class:`~gdbstub.dialect.Dialect`;
optional packet groups are :class:`~gdbstub.dialect.SessionExtension` objects
that add handlers and the qSupported features they need (docs/sessions.md,
"Adding a packet").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from codemem.wasm.types import ValType

from . import arch_amd64
from .agent_session import AgentExtension
from .dialect import Dialect, NativeDialect, SessionExtension
from .image_files import FileServerError
from .images import IMAGE_TRANSFERS
from .protocol import packets as P
from .protocol import replies as R
from .protocol.connection import ProtocolConnection
from .protocol.encoding import ProtocolError, hex_encode
from .protocol.replies import ErrorCode, Signal
from .protocol.xmltext import escape
from .target import Exited, ResumeRefused, Stop, StopReason, StopReport, StoreTarget, TargetError
from .targets import SingleStoreHost, TargetHost

log = logging.getLogger(__name__)

#: Guest output per ``O`` packet: hex doubles it, and it must fit the packet
#: size the client was told.
_CONSOLE_CHUNK = 1024
#: How long the first request after an all-stop stop waits for the other
#: Stores' stops (GdbSession._await_quiet_stops): a Store reaches its next
#: sequence point within microseconds unless its thread is off the CPU or
#: in a long host call.
_QUIET_STOP_WAIT_S = 0.5
#: The same wait for a Store inside a host function (which may block on
#: input for as long as it likes): a quick one returns within it.
_QUIET_STOP_WAIT_IN_HOST_S = 0.05

#: The largest packet we accept (advertised as PacketSize).  gdb sizes its
#: ``m`` requests from it (PacketSize/2 bytes, hex-encoded to PacketSize), so a
#: large one means few round trips for big reads.
PACKET_SIZE = 0x20000

MONITOR_HELP = """\
monitor commands of wasm-gdbstub:
  help                 this text
  stores               every live Store: pid, module, entry, state, enabled sites
  patches              every enabled patch site of this Store (breakpoints and internal uses)
                       and the sites calling veneers (conditions, dprintf, watchpoints)
  backtrace            the stopped guest's wasm frames (a caller is shown at its call)
  frame-table [FUNC]   functions, sequence points and patch sites of the frame table
"""


@dataclass
class SessionConfig:
    """What the transport knows and the session needs."""

    images: object | None = None         # gdbstub.images.DebugImageSet (libraries + vFile)
    file_server: object | None = None    # gdbstub.image_files.ImageFileServer
    #: How a client gets the debug images' files: "vfile" serves them with
    #: vFile (Host I/O); "local" answers vFile as unsupported, so gdb reads
    #: the files by their paths from its own file system (gdb's
    #: remote_target::filesystem_is_local: with sysroot "target:" and no
    #: vFile:open, "attempting to access files from local filesystem");
    #: "auto" is "local" for a client connected from a loopback address,
    #: else "vfile".  The transport decides per connection
    #: (:attr:`files_are_local`).  docs/debug-images.md, "Local files".
    image_transfer: str = "auto"
    #: Set by the transport for one connection: this client reads the
    #: images from the stub's file system (every vFile packet gets the
    #: empty, unsupported, reply).
    files_are_local: bool = False
    #: Makes each session's dialect (it keeps per-Store state, so one per
    #: session); None is the native dialect over ``images``.
    dialect_factory: Callable[[], Dialect] | None = None
    #: Makes each session's optional extensions (gdbstub.dialect.SessionExtension);
    #: by default the site agent's (conditions, dprintf, watchpoints).
    extension_factories: list[Callable[[], SessionExtension]] = field(default_factory=lambda: [AgentExtension])

    def __post_init__(self):
        if self.image_transfer not in IMAGE_TRANSFERS:
            raise ValueError(f"image_transfer {self.image_transfer!r} is not one of {', '.join(IMAGE_TRANSFERS)}")

    def for_client(self, client_is_local: bool) -> "SessionConfig":
        """This configuration for one client, with :attr:`files_are_local`
        decided by :attr:`image_transfer` and where the client is."""
        local = self.image_transfer == "local" or (self.image_transfer == "auto" and client_is_local)
        return self if local == self.files_are_local else replace(self, files_are_local=local)

    def make_dialect(self) -> Dialect:
        if self.dialect_factory is not None:
            return self.dialect_factory()
        return NativeDialect(self.images)


@dataclass
class Attached:
    """A target this session debugs, and its all-stop bookkeeping."""

    target: StoreTarget
    #: Interrupted because another target's stop was reported: its stop is
    #: not reported (gdb already believes it stopped).
    quiet: bool = False
    #: A stop (or exit) not yet reported: the next resume including this
    #: target reports it instead of resuming.
    unreported: Stop | Exited | None = None
    #: What to report at the next stop (a stop the dialect hid and stepped
    #: on from, a watchpoint's included, or an attach, which gdb expects as
    #: SIGSTOP).
    carried: StopReport | None = None
    #: Started by this session's vRun (qAttached answers 0: gdb kills it on quit).
    created: bool = False
    #: Moved by the client's last resume and not yet seen to stop.
    resumed: bool = False


class GdbSession:
    """One connected client.

    ``targets`` is a :class:`~gdbstub.targets.TargetHost`, or one
    :class:`~gdbstub.target.StoreTarget` (then served as ``serve`` does:
    attached from the start)."""

    def __init__(self, targets: TargetHost | StoreTarget, config: SessionConfig | None = None):
        self.host: TargetHost = targets if isinstance(targets, TargetHost) else SingleStoreHost(targets)
        self.config = config or SessionConfig()
        self.dialect: Dialect = self.config.make_dialect()
        self.extensions: list[SessionExtension] = [self.dialect] + [
            make() for make in self.config.extension_factories]
        # Asked at every stop: only the extensions that add anything to a
        # stop's reply, each at the stops it may add to (a stop with a watch
        # or a note: every such extension; other stops: the ones that do not
        # declare stop_keys_need_details).
        self._stop_extensions_any = tuple(e for e in self.extensions if _adds_to_stops(e)
                                          and not e.stop_keys_need_details)
        self._stop_extensions_details = tuple(e for e in self.extensions if _adds_to_stops(e))
        #: The dialect may hide stops (Dialect.hides_stop is overridden).
        self._dialect_hides_stops = type(self.dialect).hides_stop is not Dialect.hides_stop
        self.conn = ProtocolConnection(max_packet_size=PACKET_SIZE)
        capabilities = R.Capabilities(packet_size=PACKET_SIZE, no_ack_mode=True, swbreak=True, vcont=True,
                                      multiprocess=True, qthread_events=True, xfer_osdata=self.host.extended,
                                      xfer_threads=True)
        for extension in self.extensions:
            capabilities = extension.capabilities(capabilities)
        self.capabilities = capabilities
        self.negotiated = self.capabilities.negotiate({})
        self.error_strings = False
        self.list_threads_in_stop_reply = False
        #: The client sent one of LLDB's own set-up packets (QThreadSuffixSupported,
        #: QListThreadsInStopReply, qHostInfo): where gdb and lldb expect
        #: different answers (`?` with no process), lldb's are given.
        self.client_is_lldb = False
        self.waiting_for_stop = False
        #: Stores were told to stop for all-stop and may still run (_await_quiet_stops).
        self._quieting = False
        self.extended_mode = False
        self.detached = False
        self.killed = False
        self.attached: dict[int, Attached] = {}
        self._current_g: int | None = None
        self._current_c: int | None = None  # None: every attached target
        self._process_list: list = []  # lldb's qfProcessInfo answers still to give
        self._threads_memo: tuple[tuple, bytes] | None = None  # _threads_document
        self._handlers: dict[type, Callable] = self._build_handlers()
        for extension in self.extensions:
            self._handlers.update(extension.handlers(self))
        for target in self.host.initial_targets():
            self._attach(self.host.attach(target.pid, self))

    # ------------------------------------------------------------ transport API

    def receive(self, data: bytes) -> None:
        """Feed bytes from the client; replies queue in the output."""
        for request in self.conn.receive(data):
            reply = self._dispatch(request)
            if reply is not None:
                self.conn.reply(reply)

    def take_output(self) -> bytes:
        return self.conn.pending_output()

    def answer(self, data: bytes) -> bytes:
        """:meth:`receive` of ``data``, then :meth:`take_output`, in one
        call (what a transport that writes each reply at once wants): the
        connection answers a repeated short packet without framing, parsing
        or an output buffer (ProtocolConnection.answer)."""
        return self.conn.answer(data, self._dispatch)

    def target_event(self) -> None:
        """Attached targets have something pending: take it, and answer a
        waiting resume with the stop reply."""
        for attached in list(self.attached.values()):
            self._take_events(attached)

    def forward_output(self, target: StoreTarget, data: bytes) -> bool:
        """Queues ``data``, which ``target``'s guest wrote to its stdout or
        stderr, as console output (``O`` packets, GDB manual "Stop Reply
        Packets") when this session debugs ``target`` and waits for a stop:
        only then may a stub send ``O`` packets.  True when queued."""
        attached = self.attached.get(target.pid)
        if attached is None or not self.waiting_for_stop or not attached.resumed or self.detached:
            return False
        for start in range(0, len(data), _CONSOLE_CHUNK):
            self.conn.reply(R.console_output(data[start:start + _CONSOLE_CHUNK]))
        return True

    @property
    def finished(self) -> bool:
        """The client detached or killed: the transport may close."""
        return self.detached or self.killed

    @property
    def target(self) -> StoreTarget:
        """The target of the thread ``Hg`` selected (registers, memory)."""
        try:
            return self.attached[self._current_g].target  # every packet of a stop asks: no call
        except KeyError:
            return self._current().target

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, request: P.Request) -> bytes | None:
        if self._quieting:
            self._await_quiet_stops()
        handler = self._handlers.get(type(request))
        if handler is None:
            return R.empty()
        try:
            return handler(request)
        except TargetError as e:
            # A refused breakpoint is something the user asked for (gdb
            # shows only "Cannot insert breakpoint N" whatever the reply
            # carries): its reason goes to the stub's terminal too.
            level = logging.WARNING if isinstance(request, P.InsertBreakpoint) else logging.INFO
            log.log(level, "%s refused: %s", type(request).__name__, e)
            return R.error(e.code, str(e), self.error_strings)
        except (arch_amd64.RegisterError, ProtocolError) as e:
            # Bad input only (a register the client named or sized wrongly, a
            # field it encoded wrongly): anything else a handler raises is a
            # bug of ours and goes up to the transport's outermost guard.
            log.info("%s refused: %s", type(request).__name__, e)
            return R.error(ErrorCode.EINVAL, str(e), self.error_strings)

    def _build_handlers(self) -> dict[type, Callable]:
        simple_ok = lambda request: R.ok()  # noqa: E731
        empty = lambda request: R.empty()  # noqa: E731
        return {
            P.Interrupt: self._interrupt,
            P.MalformedPacket: self._malformed,
            P.UnknownPacket: empty,
            P.ExtendedMode: self._extended_mode,
            P.QuerySupported: self._supported,
            P.MustReplyEmpty: empty,
            P.StartNoAckMode: self._start_no_ack,
            P.XferRead: self._xfer,
            P.QueryAttached: self._query_attached,
            P.QueryCurrentThread: lambda r: R.current_thread_reply(self._thread_id(self.target),
                                                                   self._multiprocess),
            P.ThreadInfoFirst: self._thread_info_first,
            P.ThreadInfoNext: lambda r: b"l",
            P.TraceStatus: empty,
            P.QueryOffsets: empty,
            P.SymbolLookup: simple_ok,
            P.HostInfo: self._host_info,
            P.ProcessInfo: lambda r: self.dialect.process_info(self.target).encode(),
            P.RegisterInfo: self._register_info,
            P.ThreadSuffixSupported: self._thread_suffix_supported,
            P.ListThreadsInStopReply: self._list_threads,
            P.EnableErrorStrings: self._enable_error_strings,
            P.StructuredDataPlugins: empty,
            P.ShlibInfoAddr: empty,
            P.VAttachOrWaitSupported: empty,
            P.MemoryRegionInfo: lambda r: R.key_value_reply(self.dialect.memory_region_info(self.target, r.addr)),
            P.ThreadsInfoJson: empty,
            P.ThreadExtendedInfoJson: empty,
            P.MonitorCommand: self._monitor,
            P.ThreadEvents: simple_ok,
            P.SetThread: self._set_thread,
            P.ThreadAlive: self._thread_alive,
            P.ThreadStopInfo: self._thread_stop_info,
            P.HaltReason: self._halt_reason,
            P.ReadRegisters: lambda r: hex_encode(self.dialect.read_registers(self.target_for(r.thread))),
            P.WriteRegisters: self._write_registers,
            P.ReadRegister: lambda r: hex_encode(self.dialect.read_register(self.target_for(r.thread), r.regnum)),
            P.WriteRegister: self._write_register,
            P.ReadMemory: self._read_memory,
            P.ReadMemoryBinary: self._read_memory_binary,
            P.WriteMemory: self._write_memory,
            P.WriteMemoryBinary: self._write_memory,
            P.InsertBreakpoint: self._insert_breakpoint,
            P.RemoveBreakpoint: self._remove_breakpoint,
            P.Continue: self._continue,
            P.ContinueWithSignal: self._continue,
            P.Step: self._step,
            P.StepWithSignal: self._step,
            P.VContQuery: lambda r: self.dialect.vcont_actions,
            P.VCont: self._vcont,
            P.Kill: self._kill,
            P.VKill: self._vkill,
            P.Detach: self._detach,
            P.VAttach: self._vattach,
            P.VRun: self._vrun,
            P.VFileSetFs: self._local_files_or(lambda r: R.vfile_result(0)),
            P.VFileOpen: self._local_files_or(self._vfile_open),
            P.VFilePread: self._local_files_or(self._vfile_pread),
            P.VFileClose: self._local_files_or(self._vfile_close),
            P.VFileFstat: self._local_files_or(self._vfile_fstat),
            P.VFilePwrite: self._local_files_or(lambda r: R.vfile_result(-1, R.FileIOErrno.EACCES)),
            P.VFileUnlink: self._local_files_or(lambda r: R.vfile_result(-1, R.FileIOErrno.EACCES)),
            P.VFileReadlink: self._local_files_or(lambda r: R.vfile_result(-1, R.FileIOErrno.EINVAL)),
            P.SetNonStop: self._set_non_stop,
            P.ProcessInfoFirst: self._process_info_first,
            P.ProcessInfoNext: self._process_info_next,
            P.GetWorkingDir: self._no_working_dir,
            P.LaunchGDBServer: self._launch_gdb_server,
            P.QueryGDBServer: self._query_gdb_server,
            # Watchpoints belong to the site agent's extension (gdbstub.agent_session,
            # which replaces this); without it there are none.
            P.WatchpointSupportInfo: empty,
            # LLDB's WebAssembly queries belong to the wasm dialect (which
            # replaces these); to the native one they are unsupported.
            P.WasmCallStack: empty,
            P.WasmLocal: empty,
            P.WasmGlobal: empty,
            P.WasmStackValue: empty,
            P.WasmMemory: empty,
        }

    # ------------------------------------------------------------ targets

    def _attach(self, target: StoreTarget, *, created: bool = False) -> Attached:
        for gone in [a for a in self.attached.values() if a.target.exited is not None]:
            self._forget(gone)
        attached = self.attached.get(target.pid)
        if attached is None:
            attached = self.attached[target.pid] = Attached(target, created=created)
        self._current_g = target.pid
        return attached

    def _forget(self, attached: Attached) -> None:
        """The session no longer debugs this target (detached, killed, ended)."""
        pid = attached.target.pid
        if self.attached.pop(pid, None) is None:
            return
        self.dialect.forget(attached.target)
        self.host.release(attached.target, self)
        if self._current_g == pid:
            self._current_g = next(iter(self.attached), None)
        if self._current_c == pid:
            self._current_c = None

    def _current(self) -> Attached:
        attached = self.attached.get(self._current_g) if self._current_g is not None else None
        if attached is None and self.attached:
            attached = next(iter(self.attached.values()))
            self._current_g = attached.target.pid
        if attached is None:
            raise TargetError(ErrorCode.ENOENT, "no process is attached"
                              + (" (attach one: `info os processes`, `attach PID`)" if self.host.extended else ""))
        return attached

    def _by_pid(self, pid: int) -> Attached:
        attached = self.attached.get(pid)
        if attached is None:
            raise TargetError(ErrorCode.ENOENT, f"process {pid:x} is not attached")
        return attached

    def target_for(self, thread: P.ThreadId | None) -> StoreTarget:
        """The target a request names: its ``thread:`` suffix, else ``Hg``'s."""
        if thread is None or thread.pid in (None, P.ThreadId.ALL, P.ThreadId.ANY):
            if thread is not None and not (thread.is_all or thread.is_any or thread.tid == StoreTarget.TID):
                raise TargetError(ErrorCode.ENOENT, "no such thread")
            return self.target
        attached = self._by_pid(thread.pid)
        if not (thread.is_all or thread.is_any or thread.tid == attached.target.tid):
            raise TargetError(ErrorCode.ENOENT, "no such thread")
        return attached.target

    def _matches(self, thread: P.ThreadId | None, target: StoreTarget) -> bool:
        """Whether a thread-id (of a vCont action, say) names ``target``'s thread."""
        if thread is None:
            return True
        # (ALL and ANY tested by value: the is_all/is_any properties cost a call each, at every vCont)
        tid = thread.tid
        return thread.pid in (None, P.ThreadId.ALL, P.ThreadId.ANY, target.pid) \
            and tid in (P.ThreadId.ALL, P.ThreadId.ANY, target.tid)

    def _thread_id(self, target: StoreTarget) -> P.ThreadId:
        return P.ThreadId(target.pid, target.tid)

    # ------------------------------------------------------------ handshake

    @property
    def _multiprocess(self) -> bool:
        return self.negotiated.multiprocess

    def _malformed(self, request: P.MalformedPacket) -> bytes:
        log.info("malformed packet %r: %s", request.payload[:80], request.reason)
        return R.error(ErrorCode.EINVAL, f"malformed packet: {request.reason}", self.error_strings)

    def _supported(self, request: P.QuerySupported) -> bytes:
        self.negotiated = self.capabilities.negotiate(request.features)
        return self.capabilities.supported_reply()

    def _extended_mode(self, request) -> bytes:
        """``!``: gdb's ``target extended-remote``.  Refused by a host that
        cannot attach or run (gdb then still works, as with ``target remote``)."""
        if not self.host.extended:
            raise TargetError(ErrorCode.EINVAL, "this stub serves one Store; use `target remote`")
        self.extended_mode = True
        return R.ok()

    def _start_no_ack(self, request) -> None:
        self.conn.reply(R.ok())
        self.conn.enable_no_ack()
        return None

    def _enable_error_strings(self, request) -> bytes:
        self.error_strings = True
        return R.ok()

    def _list_threads(self, request) -> bytes:
        self.list_threads_in_stop_reply = True
        self.client_is_lldb = True
        return R.ok()

    def _thread_suffix_supported(self, request) -> bytes:
        self.client_is_lldb = True
        return R.ok()

    def _host_info(self, request) -> bytes:
        self.client_is_lldb = True
        return self.dialect.host_info().encode()

    def _set_non_stop(self, request: P.SetNonStop) -> bytes:
        """``QNonStop``: all-stop (0) is what this stub does; non-stop (1) is
        not offered in qSupported, and refused here with a reason."""
        if request.enable:
            raise TargetError(ErrorCode.EINVAL, "non-stop mode is not supported (all-stop only)")
        return R.ok()

    def _no_working_dir(self, request) -> bytes:
        raise TargetError(ErrorCode.ENOENT, "a Store has no working directory")

    def _register_info(self, request: P.RegisterInfo) -> bytes:
        reply = self.dialect.register_info(request.regnum)
        if reply is None:
            return R.error(ErrorCode.NO_SUCH_REGISTER, "no such register", self.error_strings)
        return reply.encode()

    def _query_attached(self, request: P.QueryAttached) -> bytes:
        """1: attached to an existing process (gdb detaches on quit); 0: one
        this session started with vRun (gdb kills it on quit)."""
        attached = self._by_pid(request.pid) if request.pid is not None else self.attached.get(self._current_g)
        return b"0" if attached is not None and attached.created else b"1"

    def _xfer(self, request: P.XferRead) -> bytes:
        if request.object == "osdata":
            document = self._osdata(request.annex)
        elif request.object == "threads":
            if request.annex:
                raise TargetError(ErrorCode.ENOENT, f"no threads document {request.annex!r} (its annex is empty)")
            document = self._threads_document()
        else:
            target = self.target
            if request.object == "exec-file" and request.annex:
                target = self._by_pid(int(request.annex, 16)).target if _is_hex(request.annex) else target
            document = self.dialect.xfer(target, request.object, request.annex)
        if document is None:
            return R.empty()
        return R.qxfer_chunk(document, request.offset, request.length)

    def _osdata(self, annex: str) -> bytes | None:
        """``qXfer:osdata:read:processes`` (GDB manual, "Process list"): the
        host's live Stores.  gdb's ``info os processes`` shows the columns."""
        if annex == "":
            return (b'<?xml version="1.0"?>\n<osdata type="types">'
                    b'<item><column name="Type">processes</column>'
                    b'<column name="Description">Listing of all Stores</column>'
                    b'<column name="Title">Stores</column></item></osdata>')
        if annex != "processes":
            raise TargetError(ErrorCode.ENOENT, f"no osdata {annex!r} (only 'processes')")
        items = []
        for info in self._store_infos():
            items.append(
                "<item>"
                f'<column name="pid">{info.pid}</column>'
                f'<column name="user">wasm</column>'
                f'<column name="command">{escape(info.module)} {escape(info.entry)}</column>'
                f'<column name="state">{escape(info.state)}</column>'
                f'<column name="sites">{info.enabled_sites}</column>'
                "</item>")
        return ('<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "osdata.dtd">\n<osdata type="processes">'
                + "".join(items) + "</osdata>").encode()

    def _store_infos(self):
        with self.host.lock:
            return [self.host.describe(target) for target in self.host.targets() if target.exited is None]

    # ------------------------------------------------------------ lldb's process list

    def _process_info_first(self, request: P.ProcessInfoFirst) -> bytes:
        """lldb's ``qfProcessInfo``: the first matching Store (lldb then asks
        ``qsProcessInfo`` until an error reply ends the list)."""
        if not self.host.extended:
            raise TargetError(ErrorCode.EINVAL, "this stub serves one Store (no process list)")
        self._process_list = [info for info in self._store_infos() if _matches_criteria(info, request.criteria)]
        return self._process_info_next(request)

    def _process_info_next(self, request) -> bytes:
        if not self._process_list:
            raise TargetError(ErrorCode.ENOENT, "no more processes")
        info = self._process_list.pop(0)
        name = f"{info.module}:{info.entry}"
        # Platform style (lldb-server's CreateProcessInfoResponse): pids in
        # *decimal*, unlike qProcessInfo's hex; lldb drops an entry whose pid
        # does not parse (a hex "19d", say).
        return R.key_value_reply([
            ("pid", "%d" % info.pid), ("parent-pid", "0"), ("name", hex_encode(name.encode()).decode()),
            ("uid", "0"), ("gid", "0"), ("euid", "0"), ("egid", "0"),
            # The machine code's triple in both dialects: lldb-22 lists no
            # process whose triple is wasm32 (its platform filters them out),
            # and `process attach --plugin wasm` sets the wasm architecture.
            ("triple", hex_encode(arch_amd64.TARGET_TRIPLE.encode()).decode()),
            ("ostype", "unknown")])

    def _launch_gdb_server(self, request: P.LaunchGDBServer) -> bytes:
        """LLDB's platform mode (``platform connect``, then ``process attach
        --pid``) asks for a gdb-remote server to attach through: this very
        server, whose sessions attach any Store (docs/lldb.md).  lldb-server
        answers ``pid:PID;port:PORT;`` in decimal; there is no new process."""
        port = self._extended_port()
        return f"pid:0;port:{port};".encode()

    def _query_gdb_server(self, request) -> bytes:
        """The gdb-remote servers already debugging a process, which lldb's
        ``platform connect`` would connect to at once: none (as lldb-server
        answers when it has launched none); each ``process attach`` asks
        qLaunchGDBServer."""
        raise TargetError(ErrorCode.ENOENT, "no gdb-remote server is debugging a process yet")

    def _extended_port(self) -> int:
        port = self.host.listening_port
        if not self.host.extended or port is None:
            raise TargetError(ErrorCode.EINVAL, "this stub serves one Store (no platform mode)")
        return port

    # ------------------------------------------------------------ threads

    def _thread_info_first(self, request) -> bytes:
        if not self.attached and self.client_is_lldb:
            # lldb takes an empty list from a stub with no process as one
            # process (pid 1) it must find a stop for; lldb-server refuses.
            raise TargetError(ErrorCode.ENOENT, "no process is attached")
        return R.thread_list_reply(self._live_threads(), self._multiprocess)

    def _live_threads(self) -> list[P.ThreadId]:
        """The guest thread of every attached Store that has not exited."""
        return [self._thread_id(a.target) for a in self.attached.values() if a.target.exited is None]

    def _threads_document(self) -> bytes:
        """R.threads_document of :meth:`_live_threads` (gdb reads it after
        every range step of a `next`): kept for as long as the live Stores
        and the multiprocess choice, all it depends on, are the same."""
        key = (self.negotiated.multiprocess, [a.target.pid for a in self.attached.values() if a.target.exited is None])
        memo = self._threads_memo
        if memo is None or memo[0] != key:
            memo = self._threads_memo = (key, R.threads_document(self._live_threads(), key[0]))
        return memo[1]

    def _set_thread(self, request: P.SetThread) -> bytes:
        thread = request.thread
        if thread.pid in (None, P.ThreadId.ALL, P.ThreadId.ANY):
            if not (thread.is_all or thread.is_any or thread.tid == StoreTarget.TID):
                raise TargetError(ErrorCode.ENOENT, "no such thread")
            if request.op == "c" and (thread.is_all or thread.pid == P.ThreadId.ALL):
                self._current_c = None  # Hc-1: resumes move every attached target
            return R.ok()
        target = self.target_for(thread)
        if request.op == "c":
            self._current_c = target.pid
        else:
            self._current_g = target.pid
        return R.ok()

    def _thread_alive(self, request: P.ThreadAlive) -> bytes:
        for attached in self.attached.values():
            if attached.target.exited is None and self._matches(request.thread, attached.target):
                return R.ok()
        raise TargetError(ErrorCode.ENOENT, "no such thread")

    # ------------------------------------------------------------ events and stops

    def _on_event(self, attached: Attached, event: Stop | Exited) -> None:
        target = attached.target
        if type(event) is not Stop and isinstance(event, Exited):
            # The Store is gone: the host may forget it.  The session keeps it
            # as its (exited) process until the client attaches another, so
            # `?`, a resume or `D` still get the answers gdb and lldb expect.
            self.host.release(target, self)
            if self.waiting_for_stop:
                self.waiting_for_stop = False
                self.conn.reply(self._exit_reply(target, event))
                self._stop_others(None)
            return
        if self._dialect_hides_stops and self.dialect.hides_stop(target, event):
            # Stepped on only when a client waits for this stop; otherwise
            # `?` does it when the client asks (see _halt_reason).
            if self.waiting_for_stop:
                self._step_on(attached, event)
            return
        if attached.carried is not None:
            event.show_as(attached.carried)
            attached.carried = None
        resumed, attached.resumed = attached.resumed, False
        if attached.quiet:
            attached.quiet = False
            if event.reason is StopReason.INTERRUPT:
                return  # stopped for all-stop; gdb believes it already stopped
        if self.waiting_for_stop:
            self.waiting_for_stop = False
            self._current_g = self._current_c = target.pid
            details = event.watch is not None or event.note
            for extension in self._stop_extensions_details if details else self._stop_extensions_any:
                text = extension.stop_console_text(target, event)
                if text:
                    self.conn.reply(R.console_output(text.encode()))
            self.conn.reply(self._stop_reply(target, event))
            if len(self.attached) > 1:
                self._stop_others(attached)
        elif resumed:
            # Another target's stop was reported first: keep this one for the
            # next resume that includes this target.
            attached.unreported = event

    def _stop_others(self, reported: Attached | None) -> None:
        """All-stop: once a stop is reported, no other attached target runs.
        They stop at their next sequence point; the next request waits for
        them (_await_quiet_stops)."""
        for attached in self.attached.values():
            if attached is not reported and attached.target.is_running:
                attached.quiet = True
                attached.target.interrupt()
                self._quieting = True

    def _await_quiet_stops(self) -> None:
        """All-stop (GDB manual, "All-Stop Mode"): after a stop reply the
        client may ask for any thread's registers at once (gdb's `info
        threads` does), and the other Stores were only told to stop
        (_stop_others).  So the first request after it waits up to
        _QUIET_STOP_WAIT_S for their stops and takes them; a Store still
        running then (blocked in a host call: it is waited for
        _QUIET_STOP_WAIT_IN_HOST_S at most) answers as running, and later
        requests do not wait again."""
        self._quieting = False
        start = time.monotonic()
        for attached in list(self.attached.values()):
            target = attached.target
            while attached.quiet and target.pid in self.attached and target.is_running:
                wait = _QUIET_STOP_WAIT_IN_HOST_S if target.store.in_host_function else _QUIET_STOP_WAIT_S
                remaining = start + wait - time.monotonic()
                if remaining <= 0 or not target.wait_for_event(remaining):
                    break
                self._take_events(attached)

    def _step_on(self, attached: Attached, stop: Stop) -> None:
        if attached.carried is None and stop.reason is not StopReason.STEP:
            attached.carried = stop.report()
        attached.target.step()
        self.waiting_for_stop = True

    def _exit_reply(self, target: StoreTarget, event: Exited) -> bytes:
        return self._exit_reply_for(target.pid, event)

    def _stop_reply(self, target: StoreTarget, stop: Stop) -> bytes:
        registers, pc = self.dialect.stop_registers(target, stop)
        reason = "swbreak" if stop.reason is StopReason.BREAKPOINT and self.negotiated.swbreak else None
        extra: list[tuple[str, object]] = []
        if self.list_threads_in_stop_reply:
            extra.append(("threads", "%x" % target.tid))
            extra.append(("thread-pcs", "%x" % pc))
        if stop.reason is StopReason.TRAP and stop.trap_message:
            # LLDB shows a stop "description"; gdb ignores keys it does not know.
            extra.append(("description", hex_encode(f"wasm trap: {stop.trap_message}".encode())))
        details = stop.watch is not None or stop.note
        for extension in self._stop_extensions_details if details else self._stop_extensions_any:
            extra += extension.stop_reply_keys(target, stop)
        return R.stop_reply(stop.signal, self._thread_id(target), registers, reason, extra,
                            self.negotiated.multiprocess)

    def _halt_reason(self, request) -> bytes | None:
        if not self.attached:
            # Nothing attached (extended mode, lldb's platform mode): "no
            # process".  GDB's remote.c takes W00 to mean connected but not
            # running; lldb takes W00 as "the process exited" and then crashes
            # on the attach that follows (lldb 22), so it gets lldb-server's
            # answer, an error.
            if self.client_is_lldb:
                raise TargetError(ErrorCode.ENOENT, "no process is attached")
            return R.exit_reply(0)
        attached = self._current()
        target = attached.target
        if attached.unreported is not None:
            event, attached.unreported = attached.unreported, None
            return self._stop_reply(target, event) if isinstance(event, Stop) else self._exit_reply(target, event)
        if target.exited is not None:
            return self._exit_reply(target, target.exited)
        stop = target.current_stop
        if stop is not None and self.dialect.hides_stop(target, stop):
            self._step_on(attached, stop)  # the entry stop: on to one the client can be shown
            return None
        if stop is not None:
            return self._stop_reply(target, stop)
        # Attaching to a guest that runs (an earlier client detached): stop it.
        self._stop_running(attached, Signal.SIGINT)
        return None

    def _thread_stop_info(self, request: P.ThreadStopInfo) -> bytes:
        target = self.target
        if request.tid != target.tid or target.current_stop is None:
            raise TargetError(ErrorCode.ENOENT, "the thread is not stopped")
        return self._stop_reply(target, target.current_stop)

    def _interrupt(self, request) -> None:
        running = [a for a in self.attached.values() if a.target.is_running]
        for attached in running:
            self._stop_running(attached, Signal.SIGINT)
        return None

    def _stop_running(self, attached: Attached, signal: int) -> None:
        """Stop a running guest and answer with its stop reply.  Also for a
        client that attached to a guest an earlier one left running undebugged:
        it resumed nothing, yet wants the stop."""
        if signal != Signal.SIGINT:
            attached.carried = StopReport(StopReason.INTERRUPT, signal)
        attached.target.debugging = True
        attached.target.interrupt()
        self.waiting_for_stop = True

    # ------------------------------------------------------------ registers

    def _write_registers(self, request: P.WriteRegisters) -> bytes:
        self.dialect.write_registers(self.target_for(request.thread), request.data)
        return R.ok()

    def _write_register(self, request: P.WriteRegister) -> bytes:
        self.dialect.write_register(self.target_for(request.thread), request.regnum, request.value)
        return R.ok()

    # ------------------------------------------------------------ memory

    def _read_memory(self, request: P.ReadMemory) -> bytes:
        # The hex payload fills at most PacketSize (framing is not counted,
        # as in gdbserver), so gdb's PacketSize/2 requests are answered whole.
        length = request.length if request.length <= PACKET_SIZE // 2 else PACKET_SIZE // 2
        return hex_encode(self.dialect.read_memory(self.target, request.addr, length)) if length else b""

    def _read_memory_binary(self, request: P.ReadMemoryBinary) -> bytes:
        # LLDB's convention (lldb-server): the reply is the bytes alone, and a
        # zero-length read (its `x0,0` probe) answers OK.  GDB only sends `x`
        # to stubs advertising binary-upload, which we do not.
        if request.length == 0:
            return R.ok()
        return self.dialect.read_memory(self.target, request.addr, min(request.length, PACKET_SIZE // 2))

    def _write_memory(self, request) -> bytes:
        if len(request.data) != request.length:
            raise TargetError(ErrorCode.EINVAL, f"length {request.length:#x} does not match the "
                                                f"{len(request.data)} bytes sent")
        if request.data:
            self.dialect.write_memory(self.target, request.addr, request.data)
        return R.ok()

    # ------------------------------------------------------------ breakpoints

    def _insert_breakpoint(self, request: P.InsertBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()  # watchpoints: not supported (the empty reply says so)
        target = self.target
        pc = self.dialect.breakpoint_pc(target, request.addr)
        target.insert_breakpoint(pc)
        self.dialect.breakpoint_inserted(target, request.addr, pc)
        return R.ok()

    def _remove_breakpoint(self, request: P.RemoveBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()
        target = self.target
        pc = self.dialect.breakpoint_pc(target, request.addr)
        target.remove_breakpoint(pc)
        self.dialect.breakpoint_removed(target, request.addr, pc)
        return R.ok()

    # ------------------------------------------------------------ execution

    def _resume(self, plan: list[tuple[Attached, Callable[[StoreTarget], None]]]) -> bytes | None:
        """Carries out ``plan`` (each target with what to do to it) after
        the checks that may answer at once: a stop or an exit not yet
        reported, or a target that already exited."""
        for attached, _ in plan:
            if attached.unreported is not None:
                event, attached.unreported = attached.unreported, None
                self._current_g = self._current_c = attached.target.pid
                if isinstance(event, Exited):
                    return self._exit_reply(attached.target, event)
                return self._stop_reply(attached.target, event)
        for attached, _ in plan:
            if attached.target.exited is not None:
                return self._exit_reply(attached.target, attached.target.exited)
        for attached, action in plan:
            attached.resumed = True
            try:
                action(attached.target)
            except ResumeRefused as e:
                attached.resumed = False
                return self._refused_resume_reply(attached, e)
        self.waiting_for_stop = True
        return None

    def _refused_resume_reply(self, attached: Attached, refusal: ResumeRefused) -> bytes:
        """A resume from registers the guest cannot continue from (a pc
        outside its code, a stack pointer off its stack) is answered as the
        fault it would be natively, a SIGSEGV stop where the guest is, with
        the reason as console output: an error reply instead makes gdb 13
        retry its step for ever.  The guest stays stopped as it was; the
        debugger can write other registers, or kill."""
        target = attached.target
        log.warning("resume refused, reported as SIGSEGV: %s", refusal)
        self.conn.reply(R.console_output(f"wasm-gdbstub: the guest cannot resume: {refusal}\n".encode()))
        self._current_g = self._current_c = target.pid
        self._stop_others(attached)
        stop = target.current_stop
        assert stop is not None, "a refused resume leaves the guest stopped"
        return self._stop_reply(target, replace(stop, reason=StopReason.TRAP, signal=Signal.SIGSEGV,
                                                trap_message=f"cannot resume: {refusal}"))

    def _check_resume_address(self, target: StoreTarget, addr: int | None) -> None:
        if addr is not None and target.current_stop is not None and addr != self.dialect.current_pc(target):
            raise TargetError(ErrorCode.EINVAL, "resuming at another address is not supported; write the pc instead")

    def _stopped_targets(self, only: int | None) -> list[Attached]:
        chosen = [self._by_pid(only)] if only is not None else list(self.attached.values())
        chosen = [a for a in chosen if not a.target.is_running]
        if not chosen:
            raise TargetError(ErrorCode.ENOENT, "no stopped process to resume")
        return chosen

    def _continue(self, request) -> bytes | None:
        targets = self._stopped_targets(self._current_c)
        for attached in targets:
            self._check_resume_address(attached.target, request.addr)
        return self._resume([(a, lambda t: t.resume()) for a in targets])

    def _step(self, request) -> bytes | None:
        attached = self.attached.get(self._current_c) if self._current_c is not None else None
        attached = attached or self._current()
        self._check_resume_address(attached.target, request.addr)
        return self._resume([(attached, lambda t: t.step())])

    def _exit_reply_for(self, pid: int, exited: Exited) -> bytes:
        pid_field = pid if self._multiprocess else None
        if exited.signal is not None:
            return R.terminated_reply(exited.signal, pid_field)
        return R.exit_reply(exited.status & 0xFF, pid_field)

    def _vcont(self, request: P.VCont) -> bytes | None:
        """Each attached target gets the first action that names its thread
        (GDB manual, "vCont": the leftmost action matching a thread wins);
        targets no action names stay stopped."""
        if not self.attached:
            raise TargetError(ErrorCode.ENOENT, "no process is attached")
        plan: list[tuple[Attached, Callable[[StoreTarget], None]]] = []
        for attached in self.attached.values():
            for action in request.actions:  # a loop, not next(genexpr): gdb's every resume
                if self._matches(action.thread, attached.target):
                    break
            else:
                continue
            if attached.target.is_running:
                continue
            kind = action.action
            if kind in ("c", "C"):
                plan.append((attached, lambda t: t.resume()))
            elif kind in ("s", "S"):
                plan.append((attached, lambda t: t.step()))
            elif kind == "r":
                self.dialect.check_range_step()
                plan.append((attached, lambda t, a=action: t.step((a.start, a.end))))
            elif kind == "t":
                continue  # already stopped
            else:
                raise TargetError(ErrorCode.EINVAL, f"vCont action {kind!r} is not supported")
        if not plan:
            if any(a.action == "t" for a in request.actions):
                return R.ok()
            raise TargetError(ErrorCode.ENOENT, "vCont names no stopped thread of an attached process")
        return self._resume(plan)

    def _kill(self, request) -> bytes | None:
        """``k``: every attached target.  GDB reads no reply (GDB manual, "k");
        LLDB waits for one and takes the exit status from it (lldb-server
        answers X09), else reports "failed to send k packet"."""
        pids = list(self.attached)
        if not pids:
            # lldb's platform connection sends `k` before `process attach`:
            # nothing to end.  lldb-server's platform does not know `k`
            # (the empty reply); an exit reply would make lldb report a
            # process 0 that exited, and end its batch mode there.
            return R.empty()
        for pid in pids:
            self._kill_target(self.attached[pid])
        if not self.extended_mode:
            self.killed = True
        pid = pids[0] if pids and self._multiprocess else None
        return R.terminated_reply(R.Signal.SIGKILL, pid)

    def _vkill(self, request: P.VKill) -> bytes:
        attached = self.attached.get(request.pid)
        if attached is None:
            raise TargetError(ErrorCode.ENOENT, f"process {request.pid:x} is not attached")
        self._kill_target(attached)
        if not self.attached and not self.extended_mode:
            self.killed = True
        return R.ok()

    def _kill_target(self, attached: Attached) -> None:
        target = attached.target
        self._forget(attached)
        if target.exited is None:
            target.kill()

    def _detach(self, request: P.Detach) -> bytes:
        if request.pid is not None:
            attached = self.attached.get(request.pid)
            if attached is None:
                raise TargetError(ErrorCode.ENOENT, f"no process {request.pid:x}")
            victims = [attached]
        else:
            victims = list(self.attached.values())
        for attached in victims:
            self._detach_target(attached)
        if not self.attached and not self.extended_mode:
            self.detached = True
        return R.ok()

    def _detach_target(self, attached: Attached) -> None:
        target = attached.target
        self._forget(attached)
        target.detach()  # of an exited one too: whatever a late request patched goes

    def _take_events(self, attached: Attached) -> None:
        target = attached.target
        pid = target.pid
        while pid in self.attached:
            event = target.take_event()
            if event is None:
                return
            self._on_event(attached, event)

    def _vattach(self, request: P.VAttach) -> bytes | None:
        """``vAttach;PID`` (extended mode): stop that Store at its next sequence
        point (every site enabled live) and answer with the stop: SIGSTOP, as
        gdbserver's attach.  A Store already stopped (held before its first
        instruction) answers at once."""
        if not self.host.extended:
            raise TargetError(ErrorCode.EINVAL, "this stub serves one Store (use `target remote`, no attach)")
        attached = self._attach(self.host.attach(request.pid, self))
        self._current_c = attached.target.pid
        # An attach stops with SIGSTOP, as gdbserver's and lldb-server's do:
        # gdb expects it, and lldb's batch mode counts only SIGSTOP and SIGINT
        # stops as normal after an attach (any other signal ends the batch).
        attached.carried = StopReport(StopReason.INTERRUPT, Signal.SIGSTOP)
        return self._report_first_stop(attached, interrupt=True)

    def _vrun(self, request: P.VRun) -> bytes | None:
        """``vRun`` (extended mode): a fresh Store stopped before its first
        instruction; the reply is that stop (SIGTRAP, as after an exec)."""
        if not self.host.extended:
            raise TargetError(ErrorCode.EINVAL, "this stub serves one Store (use `target remote`, no run)")
        args = [arg.decode("utf-8", "replace") for arg in request.args]
        target = self.host.run_fresh(self, request.filename.decode("utf-8", "replace"), args)
        attached = self._attach(target, created=True)
        self._current_c = target.pid
        return self._report_first_stop(attached, interrupt=False)

    def _report_first_stop(self, attached: Attached, *, interrupt: bool) -> bytes | None:
        """The stop a newly attached target answers vAttach/vRun with: one
        pending (queued by the reply here), the one it is already in, or
        (``interrupt``) one made now by stopping it."""
        target = attached.target
        self.waiting_for_stop = True
        self._take_events(attached)
        if not self.waiting_for_stop:
            return None  # the pending stop was just answered
        stop = target.current_stop
        if stop is not None:
            self.waiting_for_stop = False
            if self.dialect.hides_stop(target, stop):
                self._step_on(attached, stop)
                return None
            if attached.carried is not None:
                stop.show_as(attached.carried)
                attached.carried = None
            return self._stop_reply(target, stop)
        if target.exited is not None:
            self.waiting_for_stop = False
            exited = target.exited
            self._forget(attached)
            return self._exit_reply(target, exited)
        if interrupt:
            target.debugging = True
            target.interrupt()
        return None

    def client_gone(self) -> None:
        """The connection dropped: every attached Store runs on, undebugged."""
        for attached in list(self.attached.values()):
            self._detach_target(attached)

    # ------------------------------------------------------------ monitor

    def _monitor(self, request: P.MonitorCommand) -> bytes:
        words = request.text.split()
        command, args = (words[0], words[1:]) if words else ("help", [])
        text = self.host.monitor(command, args)
        for extension in self.extensions:
            if text is None:
                text = extension.monitor(self, command, args)
        if text is not None:
            pass
        elif command == "help":
            text = MONITOR_HELP + "".join(e.monitor_help for e in self.extensions) + self.host.monitor_help
        elif command == "stores":
            text = self._monitor_stores()
        elif command == "patches":
            text = self._monitor_patches()
        elif command == "backtrace":
            text = self._monitor_backtrace()
        elif command == "frame-table":
            text = self._monitor_frame_table(args[0] if args else None)
        else:
            text = f"unknown monitor command {command!r}; try 'monitor help'\n"
        # Output as console packets, then the final OK (GDB manual, "qRcmd").
        self.conn.reply(R.console_output(text.encode()))
        return R.ok()

    def _monitor_stores(self) -> str:
        lines = []
        with self.host.lock:
            for target in self.host.targets():
                if target.exited is not None:
                    continue  # ended; its worker is about to forget it
                info = self.host.describe(target)
                mine = " (this debugger)" if target.pid in self.attached else ""
                lines.append(f"store {info.pid} (pid {info.pid:#x}): {info.module} {info.entry}, "
                             f"{info.state}{mine}, {info.enabled_sites} sites enabled")
                if target.pid in self.attached:
                    for path in self.dialect.image_paths(target):
                        lines.append(f"  image {path}")
                    for entry in target.store.registry.entries():
                        code = entry.store_code
                        lines.append(f"  {entry.module.name}: code {code.base:#x}-{code.end:#x}, "
                                     f"{code.frame_table.num_functions} functions, "
                                     f"{code.frame_table.num_sites} patch sites, "
                                     f"{len(code.enabled_site_offsets())} enabled")
        return "\n".join(lines) + "\n" if lines else "no Store is live\n"

    def _monitor_patches(self) -> str:
        target = self.target
        lines = []
        for entry, pc in target.enabled_sites():
            name = target.function_name_at(pc) or "?"
            refs = entry.store_code.site_refcount(entry.store_code.offset_of(pc))
            user = " breakpoint" if pc in target.breakpoints else ""
            carried = target.displaced_breakpoints(pc)
            if carried:
                user += " carries " + ", ".join(f"{x:#x}" for x in carried)
            lines.append(f"{pc:#x} {entry.module.name}!{name} refs={refs}{user}")
        for extension in self.extensions:
            lines += extension.patch_lines(target)
        if not lines:
            return "no patch site is enabled\n"
        return "\n".join(lines) + "\n"

    def _monitor_backtrace(self) -> str:
        target = self.target
        if target.current_stop is None:
            return "the guest is not stopped\n"
        lines = [f"#{frame.index} {frame.pc:#x} {frame.module_name}!{frame.func_name} wasm@{frame.wasm_offset:#x}"
                 + (" (frame setup: rbp is the caller's)" if frame.before_frame_setup
                    else " (prologue: locals not yet in their slots)" if frame.before_body else "")
                 for frame in target.frames()]
        return "\n".join(lines) + "\n" if lines else "no wasm frames\n"

    def _monitor_frame_table(self, func_name: str | None) -> str:
        lines = []
        for entry in self.target.store.registry.entries():
            code = entry.store_code
            table = code.frame_table
            for func in table.functions():
                name = entry.module.func_name(func.wasm_index)
                if func_name is not None and func_name not in (name, str(func.wasm_index)):
                    continue
                lines.append(f"{name} (wasm function {func.wasm_index}): "
                             f"{code.base + func.native_start:#x}-{code.base + func.native_end:#x} "
                             f"frame {func.frame_size} bytes")
                for slot in table.locals(func):
                    lines.append(f"  local {slot.index}: {_type_name(slot.valtype)} @ [rbp{slot.frame_offset:+d}]")
                for point in table.sequence_points(func):
                    site = " site" if table.site_index(point.native_offset) is not None else ""
                    lines.append(f"  {code.base + point.native_offset:#x} wasm@{point.wasm_offset:#x} "
                                 f"{point.kind.name.lower()} depth={point.stack_depth}{site}")
        if not lines:
            return f"no function {func_name!r}\n" if func_name else "no code\n"
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ vFile

    def _local_files_or(self, handler: Callable) -> Callable:
        """``handler``, or for a client that reads the images from this file
        system (SessionConfig.files_are_local) the empty reply: Host I/O not
        supported, so gdb opens the library paths itself (GDB manual,
        "Host I/O Packets"; gdb's remote_target::filesystem_is_local).  A
        real-size module's image is megabytes of DWARF that gdb reads again
        after every ``run``: over vFile that was most of a restart."""
        if self.config.files_are_local:
            return lambda request: R.empty()
        return handler

    def _vfile_open(self, request: P.VFileOpen) -> bytes:
        return self._vfile(lambda fs: R.vfile_result(
            fs.open(request.path.decode("utf-8", "replace"), request.flags, request.mode)))

    def _vfile_pread(self, request: P.VFilePread) -> bytes:
        count = min(request.count, (PACKET_SIZE - 16) // 2)
        return self._vfile(lambda fs: R.vfile_data(fs.pread(request.fd, count, request.offset)))

    def _vfile_fstat(self, request: P.VFileFstat) -> bytes:
        return self._vfile(lambda fs: R.vfile_data(fs.fstat(request.fd)))

    def _vfile_close(self, request: P.VFileClose) -> bytes:
        def close(fs):
            fs.close(request.fd)
            return R.vfile_result(0)
        return self._vfile(close)

    def _vfile(self, operation) -> bytes:
        if self.config.file_server is None:
            return R.vfile_result(-1, R.FileIOErrno.ENOENT)  # no file server: every path is ENOENT
        try:
            return operation(self.config.file_server)
        except FileServerError as e:
            return R.vfile_result(-1, e.errno)


def _adds_to_stops(extension: SessionExtension) -> bool:
    """Whether ``extension`` has its own stop reply keys or stop console text."""
    kind = type(extension)
    return (kind.stop_reply_keys is not SessionExtension.stop_reply_keys
            or kind.stop_console_text is not SessionExtension.stop_console_text)


def _type_name(valtype: int) -> str:
    try:
        return ValType(valtype).wat_name
    except ValueError:
        return f"type {valtype:#x}"


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


def _matches_criteria(info, criteria: dict[str, str]) -> bool:
    """lldb's qfProcessInfo filters (lldbgdbremote.md): ``name`` with
    ``name_match`` equals/starts_with/ends_with/contains, ``pid`` (decimal)."""
    if "pid" in criteria and criteria["pid"].isdigit() and int(criteria["pid"]) != info.pid:
        return False  # decimal, as the pids of the reply
    wanted = criteria.get("name")
    if wanted:
        try:
            wanted = bytes.fromhex(wanted).decode("utf-8", "replace")
        except ValueError:
            pass
        name = f"{info.module}:{info.entry}"
        how = criteria.get("name_match", "equals")
        checks = {"equals": name == wanted, "starts_with": name.startswith(wanted),
                  "ends_with": name.endswith(wanted), "contains": wanted in name}
        if not checks.get(how, name == wanted):
            return False
    return True
