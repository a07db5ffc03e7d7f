"""The debugger session: RSP requests -> target operations -> replies.

This is rr's ``GdbServer`` half (debugger semantics) over the pure protocol
layer (``ProtocolConnection``: framing, acks, parsing) and a
:class:`~gdbstub.target.StoreTarget`.  It does no I/O: the transport feeds it
bytes with :meth:`GdbSession.receive`, tells it the target has news with
:meth:`GdbSession.target_event`, and sends :meth:`GdbSession.take_output`.

Every request gets exactly one reply, except resumes (``c``, ``s``, ``vCont``,
``?`` on a running guest), which are answered by a stop reply when the target
stops, and ``k``.  Errors map to replies in one place, :meth:`_dispatch`:
``TargetError`` -> ``Exx`` with its code, register and protocol errors ->
``E16`` (EINVAL), file-server errors -> ``F-1,errno``; the message goes along
when the client enabled error strings (LLDB's QEnableErrorStrings).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from codemem.wasm.types import ValType

from . import arch_amd64
from .images import FileServerError, libraries_svr4_xml, libraries_xml
from .protocol import packets as P
from .protocol import replies as R
from .protocol.connection import ProtocolConnection
from .protocol.encoding import ProtocolError, hex_encode
from .target import EINVAL, ENOENT, Exited, Stop, StopReason, StoreTarget, TargetError

log = logging.getLogger(__name__)

#: The largest packet we accept (advertised as PacketSize).  gdb sizes its
#: ``m`` requests from it (PacketSize/2 bytes, hex-encoded to PacketSize), so a
#: large one means few round trips for big reads.
PACKET_SIZE = 0x20000

MONITOR_HELP = """\
monitor commands of wasm-gdbstub:
  help                 this text
  stores               the Stores served, their modules and code ranges
  patches              every enabled patch site (breakpoints and internal uses)
  frame-table [FUNC]   functions, sequence points and patch sites of the frame table
"""


@dataclass
class SessionConfig:
    """What the transport knows and the session needs."""

    images: object | None = None         # gdbstub.images.DebugImageSet (libraries + vFile)
    file_server: object | None = None    # gdbstub.images.ImageFileServer
    #: Makes each client's session: ``session_factory(target, config)``;
    #: None is the native dialect (:class:`GdbSession`).  The wasm dialect
    #: passes gdbstub.wasm_dialect.WasmSession.
    session_factory: Callable | None = None


class GdbSession:
    """One connected client, native x86-64 dialect."""

    def __init__(self, target: StoreTarget, config: SessionConfig | None = None):
        self.target = target
        self.config = config or SessionConfig()
        self.conn = ProtocolConnection(max_packet_size=PACKET_SIZE)
        self.capabilities = R.Capabilities(
            packet_size=PACKET_SIZE,
            no_ack_mode=True,
            xfer_features=True,
            xfer_libraries=self.config.images is not None,
            xfer_libraries_svr4=self.config.images is not None,
            xfer_exec_file=self.config.images is not None,
            swbreak=True,
            vcont=True,
            multiprocess=True,
            qthread_events=True,
        )
        self.negotiated = self.capabilities.negotiate({})
        self.error_strings = False
        self.list_threads_in_stop_reply = False
        self.waiting_for_stop = False
        self.detached = False
        self.killed = False
        self._handlers: dict[type, Callable] = self._build_handlers()

    # ------------------------------------------------------------ transport API

    def receive(self, data: bytes) -> None:
        """Feed bytes from the client; replies queue in the output."""
        for request in self.conn.receive(data):
            reply = self._dispatch(request)
            if reply is not None:
                self.conn.reply(reply)

    def take_output(self) -> bytes:
        return self.conn.pending_output()

    def target_event(self) -> None:
        """The target has something pending: take it, and answer a waiting
        resume with the stop reply."""
        event = self.target.take_event()
        if event is None:
            return
        if self.waiting_for_stop:
            self.waiting_for_stop = False
            self.conn.reply(self._event_reply(event))

    @property
    def finished(self) -> bool:
        """The client detached or killed: the transport may close."""
        return self.detached or self.killed

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, request: P.Request) -> bytes | None:
        handler = self._handlers.get(type(request))
        if handler is None:
            return R.empty()
        try:
            return handler(request)
        except TargetError as e:
            log.info("%s refused: %s", type(request).__name__, e)
            return R.error(e.code, str(e), self.error_strings)
        except (arch_amd64.RegisterError, ProtocolError, ValueError) as e:
            log.info("%s refused: %s", type(request).__name__, e)
            return R.error(EINVAL, str(e), self.error_strings)

    def _build_handlers(self) -> dict[type, Callable]:
        simple_ok = lambda request: R.ok()  # noqa: E731
        empty = lambda request: R.empty()  # noqa: E731
        return {
            P.Interrupt: self._interrupt,
            P.MalformedPacket: self._malformed,
            P.UnknownPacket: empty,
            P.QuerySupported: self._supported,
            P.MustReplyEmpty: empty,
            P.StartNoAckMode: self._start_no_ack,
            P.XferRead: self._xfer,
            P.QueryAttached: lambda r: b"1",
            P.QueryCurrentThread: lambda r: R.current_thread_reply(self._thread_id(), self._multiprocess),
            P.ThreadInfoFirst: self._thread_info_first,
            P.ThreadInfoNext: lambda r: b"l",
            P.TraceStatus: empty,
            P.QueryOffsets: empty,
            P.SymbolLookup: simple_ok,
            P.HostInfo: lambda r: arch_amd64.host_info_reply().encode(),
            P.ProcessInfo: self._process_info,
            P.RegisterInfo: self._register_info,
            P.ThreadSuffixSupported: simple_ok,
            P.ListThreadsInStopReply: self._list_threads,
            P.EnableErrorStrings: self._enable_error_strings,
            P.StructuredDataPlugins: empty,
            P.ShlibInfoAddr: empty,
            P.VAttachOrWaitSupported: empty,
            P.MemoryRegionInfo: self._memory_region_info,
            P.ThreadsInfoJson: empty,
            P.ThreadExtendedInfoJson: empty,
            P.MonitorCommand: self._monitor,
            P.ThreadEvents: simple_ok,
            P.SetThread: self._set_thread,
            P.ThreadAlive: self._thread_alive,
            P.ThreadStopInfo: self._thread_stop_info,
            P.HaltReason: self._halt_reason,
            P.ReadRegisters: self._read_registers,
            P.WriteRegisters: self._write_registers,
            P.ReadRegister: self._read_register,
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
            P.VContQuery: lambda r: b"vCont;c;C;s;S;r",
            P.VCont: self._vcont,
            P.Kill: self._kill,
            P.VKill: self._kill,
            P.Detach: self._detach,
            P.VFileSetFs: self._vfile_setfs,
            P.VFileOpen: self._vfile_open,
            P.VFilePread: self._vfile_pread,
            P.VFileClose: self._vfile_close,
            P.VFileFstat: self._vfile_fstat,
            P.VFilePwrite: lambda r: R.vfile_result(-1, R.FileIOErrno.EACCES),
            P.VFileUnlink: lambda r: R.vfile_result(-1, R.FileIOErrno.EACCES),
            P.VFileReadlink: lambda r: R.vfile_result(-1, R.FileIOErrno.EINVAL),
        }

    # ------------------------------------------------------------ handshake

    @property
    def _multiprocess(self) -> bool:
        return self.negotiated.multiprocess

    def _thread_id(self) -> P.ThreadId:
        return P.ThreadId(self.target.pid, self.target.tid)

    def _malformed(self, request: P.MalformedPacket) -> bytes:
        log.info("malformed packet %r: %s", request.payload[:80], request.reason)
        return R.error(EINVAL, f"malformed packet: {request.reason}", self.error_strings)

    def _supported(self, request: P.QuerySupported) -> bytes:
        self.negotiated = self.capabilities.negotiate(request.features)
        return self.capabilities.supported_reply()

    def _start_no_ack(self, request) -> None:
        self.conn.reply(R.ok())
        self.conn.enable_no_ack()
        return None

    def _enable_error_strings(self, request) -> bytes:
        self.error_strings = True
        return R.ok()

    def _list_threads(self, request) -> bytes:
        self.list_threads_in_stop_reply = True
        return R.ok()

    def _process_info(self, request) -> bytes:
        return arch_amd64.process_info_reply(self.target.pid).encode()

    def _register_info(self, request: P.RegisterInfo) -> bytes:
        reply = arch_amd64.register_info_reply(request.regnum)
        if reply is None:
            return R.error(0x45, "no such register", self.error_strings)
        return reply.encode()

    def _xfer(self, request: P.XferRead) -> bytes:
        document: bytes | None = None
        if request.object == "features":
            text = arch_amd64.feature_document(request.annex)
            if text is None:
                raise TargetError(ENOENT, f"no feature document {request.annex!r}")
            document = text.encode()
        elif request.object in ("libraries-svr4", "libraries") and self.config.images is not None:
            # The Store's modules, each at its load bias (gdbstub.images); the
            # runtime is the "executable" (qXfer:exec-file).
            images = self.config.images.libraries(self.target.store)
            build = libraries_svr4_xml if request.object == "libraries-svr4" else libraries_xml
            document = build(images).encode()
        elif request.object == "exec-file" and self.config.images is not None:
            # gdb loads this as the program (no "No executable" warning).
            document = self.config.images.executable(self.target.store).name.encode()
        if document is None:
            return R.empty()
        return R.qxfer_chunk(document, request.offset, request.length)

    # ------------------------------------------------------------ threads

    def _thread_info_first(self, request) -> bytes:
        if self.target.exited is not None:
            return b"l"
        return R.thread_list_reply([self._thread_id()], self._multiprocess)

    def _known_thread(self, thread: P.ThreadId | None) -> bool:
        if thread is None or thread.is_all or thread.is_any:
            return True
        pid_ok = thread.pid in (None, P.ThreadId.ALL, P.ThreadId.ANY, self.target.pid)
        return pid_ok and thread.tid == self.target.tid

    def _set_thread(self, request: P.SetThread) -> bytes:
        if not self._known_thread(request.thread):
            raise TargetError(ENOENT, "no such thread")
        return R.ok()

    def _thread_alive(self, request: P.ThreadAlive) -> bytes:
        if self.target.exited is None and self._known_thread(request.thread):
            return R.ok()
        raise TargetError(ENOENT, "no such thread")

    # ------------------------------------------------------------ stops

    def _event_reply(self, event) -> bytes:
        if isinstance(event, Exited):
            pid = self.target.pid if self._multiprocess else None
            if event.signal is not None:
                return R.terminated_reply(event.signal, pid)
            return R.exit_reply(event.status & 0xFF, pid)
        return self._stop_reply(event)

    def _stop_reply(self, stop: Stop) -> bytes:
        regfile = self.target.read_registers()
        registers = {regnum: arch_amd64.read_register(regfile, regnum)
                     for regnum in (arch_amd64.RBP_REGNUM, arch_amd64.RSP_REGNUM, arch_amd64.RIP_REGNUM)}
        reason = "swbreak" if stop.reason == StopReason.BREAKPOINT and self.negotiated.swbreak else None
        extra: list[tuple[str, object]] = []
        if self.list_threads_in_stop_reply:
            extra.append(("threads", "%x" % self.target.tid))
            extra.append(("thread-pcs", "%x" % stop.pc))
        if stop.reason == StopReason.TRAP and stop.trap_message:
            # LLDB shows a stop "description"; gdb ignores keys it does not know.
            extra.append(("description", hex_encode(f"wasm trap: {stop.trap_message}".encode())))
        return R.stop_reply(stop.signal, self._thread_id(), registers, reason, extra, self._multiprocess)

    def _halt_reason(self, request) -> bytes | None:
        target = self.target
        if target.exited is not None:
            return self._event_reply(target.exited)
        if target.current_stop is not None:
            return self._stop_reply(target.current_stop)
        # Attaching to a guest that runs (an earlier client detached): stop it.
        self._stop_running_guest()
        return None

    def _thread_stop_info(self, request) -> bytes:
        if self.target.current_stop is None:
            raise TargetError(ENOENT, "the thread is not stopped")
        return self._stop_reply(self.target.current_stop)

    def _interrupt(self, request) -> None:
        if self.target.is_running:
            self._stop_running_guest()
        return None

    def _stop_running_guest(self) -> None:
        """Stop the running guest and answer with its stop reply.  Also for a
        client that attached to a guest an earlier one left running undebugged:
        it resumed nothing, yet wants the stop."""
        self.target.debugging = True
        self.target.interrupt()
        self.waiting_for_stop = True

    # ------------------------------------------------------------ registers

    def _check_thread(self, thread: P.ThreadId | None) -> None:
        if not self._known_thread(thread):
            raise TargetError(ENOENT, "no such thread")

    def _read_registers(self, request: P.ReadRegisters) -> bytes:
        self._check_thread(request.thread)
        return hex_encode(arch_amd64.regfile_to_g(self.target.read_registers()))

    def _write_registers(self, request: P.WriteRegisters) -> bytes:
        self._check_thread(request.thread)
        regfile = bytearray(self.target.read_registers())
        arch_amd64.g_to_regfile(request.data, regfile)
        self.target.write_registers(bytes(regfile))
        return R.ok()

    def _read_register(self, request: P.ReadRegister) -> bytes:
        self._check_thread(request.thread)
        return hex_encode(arch_amd64.read_register(self.target.read_registers(), request.regnum))

    def _write_register(self, request: P.WriteRegister) -> bytes:
        self._check_thread(request.thread)
        regfile = bytearray(self.target.read_registers())
        arch_amd64.write_register(regfile, request.regnum, request.value)
        self.target.write_registers(bytes(regfile))
        return R.ok()

    # ------------------------------------------------------------ memory

    def _read_memory(self, request: P.ReadMemory) -> bytes:
        # The hex payload fills at most PacketSize (framing is not counted,
        # as in gdbserver), so gdb's PacketSize/2 requests are answered whole.
        length = min(request.length, PACKET_SIZE // 2)
        return hex_encode(self.target.read_memory(request.addr, length))

    def _read_memory_binary(self, request: P.ReadMemoryBinary) -> bytes:
        # LLDB's convention (lldb-server): the reply is the bytes alone, and a
        # zero-length read (its `x0,0` probe) answers OK.  GDB only sends `x`
        # to stubs advertising binary-upload, which we do not.
        if request.length == 0:
            return R.ok()
        length = min(request.length, PACKET_SIZE // 2)
        return self.target.read_memory(request.addr, length)

    def _write_memory(self, request) -> bytes:
        if len(request.data) != request.length:
            raise TargetError(EINVAL, f"length {request.length:#x} does not match the {len(request.data)} bytes sent")
        self.target.write_memory(request.addr, request.data)
        return R.ok()

    def _memory_region_info(self, request: P.MemoryRegionInfo) -> bytes:
        """LLDB's qMemoryRegionInfo: the region holding addr, or the unmapped
        gap up to the next region (no permissions)."""
        regions = self.target.memory_regions()
        for region in regions:
            if region.contains(request.addr):
                perms = "r" + ("w" if region.write else "") + ("x" if region.executable else "")
                return R.key_value_reply([
                    ("start", "%x" % region.start), ("size", "%x" % (region.end - region.start)),
                    ("permissions", perms), ("name", hex_encode(region.name.encode()).decode())])
        following = [r.start for r in regions if r.start > request.addr]
        end = min(following) if following else 1 << 64
        return R.key_value_reply([("start", "%x" % request.addr), ("size", "%x" % (end - request.addr))])

    # ------------------------------------------------------------ breakpoints

    def _insert_breakpoint(self, request: P.InsertBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()  # watchpoints: not supported (the empty reply says so)
        self.target.insert_breakpoint(request.addr)
        return R.ok()

    def _remove_breakpoint(self, request: P.RemoveBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()
        self.target.remove_breakpoint(request.addr)
        return R.ok()

    # ------------------------------------------------------------ execution

    def _resume_reply(self) -> bytes | None:
        """After a resume: wait for the stop, or answer at once if the guest
        already exited."""
        if self.target.exited is not None:
            return self._event_reply(self.target.exited)
        self.waiting_for_stop = True
        return None

    def _check_resume_address(self, addr: int | None) -> None:
        if addr is not None and self.target.current_stop is not None and addr != self.target.current_stop.pc:
            raise TargetError(EINVAL, "resuming at another address is not supported; write rip instead")

    def _continue(self, request) -> bytes | None:
        if self.target.exited is not None:
            return self._event_reply(self.target.exited)
        self._check_resume_address(request.addr)
        self.target.resume()
        return self._resume_reply()

    def _step(self, request) -> bytes | None:
        if self.target.exited is not None:
            return self._event_reply(self.target.exited)
        self._check_resume_address(request.addr)
        self.target.step()
        return self._resume_reply()

    def _vcont(self, request: P.VCont) -> bytes | None:
        """One thread: the first action that applies to it decides (GDB manual,
        "vCont": the leftmost action matching a thread wins)."""
        if self.target.exited is not None:
            return self._event_reply(self.target.exited)
        action = next((a for a in request.actions if self._known_thread(a.thread)), None)
        if action is None:
            raise TargetError(ENOENT, "vCont names no thread of this target")
        kind = action.action
        if kind in ("c", "C"):
            self.target.resume()
        elif kind in ("s", "S"):
            self.target.step()
        elif kind == "r":
            self.target.step((action.start, action.end))
        elif kind == "t":
            return R.ok()  # already stopped
        else:
            raise TargetError(EINVAL, f"vCont action {kind!r} is not supported")
        return self._resume_reply()

    def _kill(self, request) -> bytes | None:
        self.killed = True
        self.target.kill()
        if isinstance(request, P.VKill):
            return R.ok()
        # GDB reads no reply to `k` (GDB manual, "k"); LLDB waits for one and
        # takes the exit status from it (lldb-server answers X09), else reports
        # "failed to send k packet".
        pid = self.target.pid if self._multiprocess else None
        return R.terminated_reply(R.Signal.SIGKILL, pid)

    def _detach(self, request: P.Detach) -> bytes:
        if request.pid is not None and request.pid != self.target.pid:
            raise TargetError(ENOENT, f"no process {request.pid:x}")
        self.detached = True
        self.target.detach()
        return R.ok()

    def client_gone(self) -> None:
        """The connection dropped: leave the Store running, undebugged."""
        if self.target.exited is None and not self.killed:
            self.target.detach()

    # ------------------------------------------------------------ monitor

    def _monitor(self, request: P.MonitorCommand) -> bytes:
        words = request.text.split()
        command, args = (words[0], words[1:]) if words else ("help", [])
        if command == "help":
            text = MONITOR_HELP
        elif command == "stores":
            text = self._monitor_stores()
        elif command == "patches":
            text = self._monitor_patches()
        elif command == "frame-table":
            text = self._monitor_frame_table(args[0] if args else None)
        else:
            text = f"unknown monitor command {command!r}; try 'monitor help'\n"
        # Output as console packets, then the final OK (GDB manual, "qRcmd").
        self.conn.reply(R.console_output(text.encode()))
        return R.ok()

    def _monitor_stores(self) -> str:
        target = self.target
        state = ("exited" if target.exited is not None else
                 "stopped" if target.current_stop is not None else "running")
        lines = [f"store {target.pid} (pid {target.pid:#x}), guest {state}"]
        for entry in target.store.registry.entries():
            code = entry.store_code
            lines.append(f"  {entry.module.name}: code {code.base:#x}-{code.end:#x}, "
                         f"{code.frame_table.num_functions} functions, {code.frame_table.num_sites} patch sites, "
                         f"{len(code.enabled_site_offsets())} enabled")
        return "\n".join(lines) + "\n"

    def _monitor_patches(self) -> str:
        target = self.target
        sites = target.enabled_sites()
        if not sites:
            return "no patch site is enabled\n"
        lines = []
        for entry, pc in sites:
            name = target.function_name_at(pc) or "?"
            refs = entry.store_code.site_refcount(entry.store_code.offset_of(pc))
            user = " breakpoint" if pc in target.breakpoints else ""
            lines.append(f"{pc:#x} {entry.module.name}!{name} refs={refs}{user}")
        return "\n".join(lines) + "\n"

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

    def _file_server(self):
        if self.config.file_server is None:
            raise _NoFiles()
        return self.config.file_server

    def _vfile_setfs(self, request: P.VFileSetFs) -> bytes:
        return R.vfile_result(0)

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
        try:
            return operation(self._file_server())
        except _NoFiles:
            return R.vfile_result(-1, R.FileIOErrno.ENOENT)
        except FileServerError as e:
            return R.vfile_result(-1, e.errno)


def _type_name(valtype: int) -> str:
    try:
        return ValType(valtype).wat_name
    except ValueError:
        return f"type {valtype:#x}"


class _NoFiles(Exception):
    """No file server configured: every path is ENOENT."""
