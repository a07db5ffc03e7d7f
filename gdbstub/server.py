"""The asyncio transport: TCP in, GdbSession, TCP out.  The only module that
knows about sockets and the event loop.

One client at a time (a second one is told so and closed).

Threads: the loop thread handles the client's packets; the guest thread
reports stops and the exit.  While a client is attached the guest thread
answers its own event: it takes the session lock (which the loop thread holds
while it handles packets, so the two never interleave), lets the session make
the stop reply and writes it to the socket itself.  A breakpoint hit then
wakes no thread but the client: the loop stays asleep in its poll until the
client's next packet (the round trip a debugger waits for on every stop; see
scripts/bench/bp_roundtrip.py).  Without a client, or when the transport still
has unsent data, the guest thread hands the news to the loop with
``loop.call_soon_threadsafe``; the loop keeps the target moving: a stop with
nobody to show it to cannot happen (a detached target does not stop), an exit
without a client ends the server.

A client that goes away for any reason (detach, kill, dropped connection,
a protocol error) leaves the Store running with every site disabled; the
server then waits for the next client, or with ``once`` for the guest to end.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Callable

from .protocol import replies as R
from .protocol.framing import Framer
from .session import GdbSession, SessionConfig
from .target import Exited, StoreTarget

log = logging.getLogger(__name__)


class StubServer:
    """Serves ``target`` on ``host:port`` until the guest has exited and no
    client is attached (or, with ``once``, after the first client left and the
    guest ended)."""

    def __init__(self, target: StoreTarget, *, host: str = "127.0.0.1", port: int = 1234,
                 once: bool = False, config: SessionConfig | None = None,
                 on_listening: Callable[[str, int], None] | None = None):
        self.target = target
        self.host = host
        self.port = port
        self.once = once
        self.config = config or SessionConfig()
        self.on_listening = on_listening
        self.session: GdbSession | None = None
        self._transport: asyncio.Transport | None = None
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients_served = 0
        # Held by whichever thread drives the session (see the module docstring).
        self._session_lock = threading.Lock()
        # A dup of the client socket's descriptor, for the guest thread's
        # writes: ours to close, so it can never name another file.
        self._guest_write_fd: int | None = None
        self._loop_thread: int | None = None
        target.schedule_resume = self._schedule_resume

    def _schedule_resume(self, open_gate: Callable[[], None]) -> None:
        """The target's resume scheduler: on the loop thread, the gate opens
        once the loop is done with the current callback (call_soon runs it
        right before the loop polls again); on any other thread, at once."""
        loop = self._loop
        if loop is not None and threading.get_ident() == self._loop_thread and not loop.is_closed():
            loop.call_soon(open_gate)
        else:
            open_gate()

    def notify_from_guest(self) -> None:
        """Target ``notify`` callback: runs on the guest thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if not self._answer_on_guest_thread():
            loop.call_soon_threadsafe(self._on_target_event)

    def _answer_on_guest_thread(self) -> bool:
        """Hands the event to the attached session and writes the reply from
        this (the guest) thread; False when the loop must do it instead."""
        with self._session_lock:
            session, fd = self.session, self._guest_write_fd
            if session is None or fd is None or self._transport.get_write_buffer_size():
                return False
            session.target_event()
            data = session.take_output()
            while data:
                try:
                    written = os.write(fd, data)
                except BlockingIOError:
                    written = 0
                except OSError as e:  # the client is gone: the loop sees it too, and cleans up
                    log.info("stop reply not delivered: %s", e)
                    return True
                data = data[written:]
                if data and written == 0:
                    # A full socket buffer: the transport queues the rest (and
                    # nothing of ours is written before it: the client waits
                    # for this reply before it sends anything).
                    self._loop.call_soon_threadsafe(self._write_queued, data)
                    return True
        return True

    def _write_queued(self, data: bytes) -> None:
        with self._session_lock:
            if self._transport is not None:
                self._transport.write(data)

    async def serve(self) -> Exited | None:
        """Runs until done; returns how the guest ended (None if it did not)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._done = asyncio.Event()
        server = await self._loop.create_server(lambda: _ClientProtocol(self), self.host, self.port)
        sockets = server.sockets or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.on_listening:
            self.on_listening(self.host, self.port)
        # Events that arrived before the loop knew about them (the entry stop).
        self._on_target_event()
        async with server:
            await self._done.wait()
        return self.target.exited

    # ------------------------------------------------------------ events

    def _on_target_event(self) -> None:
        with self._session_lock:
            if self.session is not None:
                self.session.target_event()
                self._flush()
            else:
                # Nobody attached: record the event (an exit) and keep going.
                while self.target.take_event() is not None:
                    pass
        self._check_done()

    def _check_done(self) -> None:
        if self._done is None or self.session is not None:
            return
        if self.target.exited is not None:
            self._done.set()

    def _flush(self) -> None:
        if self.session is None or self._transport is None:
            return
        data = self.session.take_output()
        if data:
            self._transport.write(data)

    # ------------------------------------------------------------ clients

    def _connected(self, transport: asyncio.Transport) -> bool:
        """A client connected; False when it is refused (and closed)."""
        peer = transport.get_extra_info("peername")
        if self.session is not None or (self.once and self._clients_served):
            log.info("refusing a client %s", peer)
            why = "another debugger is attached" if self.session is not None else "this stub served its one client"
            transport.write(Framer.encode(R.error(R.ErrorCode.EBUSY, why, True)))
            transport.close()
            return False
        log.info("client %s connected", peer)
        self._clients_served += 1
        sock = transport.get_extra_info("socket")
        with self._session_lock:
            factory = self.config.session_factory or GdbSession
            self.session = factory(self.target, self.config)
            self._transport = transport
            self._guest_write_fd = os.dup(sock.fileno()) if sock is not None else None
            # Anything that happened while nobody was attached.
            self.session.target_event()
        return True

    def _received(self, data: bytes) -> None:
        with self._session_lock:
            session = self.session
            if session is None:
                return
            try:
                session.receive(data)
                self._flush()
            except Exception:  # the outermost guard of a connection: log, detach, go on serving
                log.exception("session failed; detaching")
                self._close_transport()
                return
            if session.finished:
                self._close_transport()

    def _close_transport(self) -> None:
        """Closes the connection; the guest thread's descriptor first, so
        nothing of ours keeps the socket open.  Called with the session lock."""
        self._close_guest_write_fd()
        self._transport.close()

    def _close_guest_write_fd(self) -> None:
        fd, self._guest_write_fd = self._guest_write_fd, None
        if fd is not None:
            os.close(fd)

    def _disconnected(self, exc: Exception | None) -> None:
        with self._session_lock:
            session, self.session, self._transport = self.session, None, None
            self._close_guest_write_fd()
            if session is None:
                return
            if exc is not None:
                log.info("client dropped: %s", exc)
            session.client_gone()
        log.info("client gone")
        self._check_done()


class _ClientProtocol(asyncio.Protocol):
    """Bytes in and out for one connection; all decisions are the server's."""

    def __init__(self, server: StubServer):
        self.server = server
        self.accepted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted = self.server._connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.accepted:
            self.server._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.accepted:
            self.server._disconnected(exc)

