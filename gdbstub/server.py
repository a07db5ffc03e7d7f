"""The asyncio transport: TCP in, GdbSession, TCP out.  The only module that
knows about sockets and the event loop.

A server serves the Store targets of one :class:`~gdbstub.targets.TargetHost`:
``serve``'s one Store (:class:`~gdbstub.targets.SingleStoreHost`: one client
at a time, a second one is told so and closed) or a many-Store host
(gdbstub.host.DebugHost: any number of clients, each debugging its own
Stores; attaching a Store another client holds is refused with a message).

Threads: the loop thread handles the clients' packets; guest threads report
stops and exits.  Everything that drives sessions and targets runs under the
host's lock.  While a client is attached to a Store, that Store's guest
thread answers its own event: it takes the lock, lets the owning session
make the stop reply and writes it to that client's socket itself.  A
breakpoint hit then wakes no thread but the client: the loop stays asleep in
its poll until the client's next packet (the round trip a debugger waits for
on every stop; see scripts/bench/bp_roundtrip.py).  Without an owning client,
or when its transport still has unsent data, the guest thread hands the news
to the loop with ``loop.call_soon_threadsafe``; the loop keeps the targets
moving: events of Stores nobody debugs are taken (and an ended Store
forgotten) by the host.

A client that goes away for any reason (detach, kill, dropped connection, a
protocol error) leaves every Store it debugged running with every site
disabled; ``serve``'s server then waits for the next client, or with
``once`` for the guest to end.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Callable

from .listen import is_loopback
from .protocol import replies as R
from .protocol.framing import Framer
from .session import GdbSession, SessionConfig
from .target import Exited, StoreTarget
from .targets import SingleStoreHost, TargetHost

log = logging.getLogger(__name__)


@dataclass
class _Client:
    """One connection: its session, its transport, and a dup of its socket's
    descriptor for guest threads' writes (ours to close, so it can never name
    another file)."""

    session: GdbSession
    transport: asyncio.Transport
    guest_write_fd: int | None


class StubServer:
    """Serves ``targets`` (a TargetHost, or one StoreTarget as ``serve``
    does) on ``host:port``.  A single-Store server runs until the guest has
    exited and no client is attached (or, with ``once``, after the first
    client left and the guest ended); a many-Store server until
    :meth:`close`."""

    def __init__(self, targets: TargetHost | StoreTarget, *, host: str = "127.0.0.1", port: int = 1234,
                 once: bool = False, config: SessionConfig | None = None,
                 on_listening: Callable[[str, int], None] | None = None, sock: socket.socket | None = None):
        self.targets: TargetHost = targets if isinstance(targets, TargetHost) else SingleStoreHost(targets)
        self.host = host
        self.port = port
        self.once = once
        self.config = config or SessionConfig()
        self.on_listening = on_listening
        #: A socket already bound and listening (gdbstub.listen.listening_socket)
        #: to serve on instead of binding ``host:port``.
        self._listening_socket = sock
        #: One client at a time for ``serve``; any number for a many-Store host.
        self.single_client = isinstance(self.targets, SingleStoreHost)
        self.clients: list[_Client] = []
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients_served = 0
        self._lock = self.targets.lock
        self._loop_thread: int | None = None
        self.targets.schedule_resume = self._schedule_resume
        self.targets.notify_server = self.notify_from_guest
        self.targets.output_server = self.output_from_guest

    @property
    def session(self) -> GdbSession | None:
        """The (first) connected client's session."""
        return self.clients[0].session if self.clients else None

    def _schedule_resume(self, open_gate: Callable[[], None]) -> None:
        """The targets' resume scheduler: on the loop thread, the gate opens
        once the loop is done with the current callback (call_soon runs it
        right before the loop polls again); on any other thread, at once."""
        loop = self._loop
        if loop is not None and threading.get_ident() == self._loop_thread and not loop.is_closed():
            loop.call_soon(open_gate)
        else:
            open_gate()

    def notify_from_guest(self, target: StoreTarget | None = None) -> None:
        """A target's ``notify`` callback: runs on its guest thread.  ``target``
        None means any target of the host (``serve``'s one)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if not self._answer_on_guest_thread(target):
            try:
                loop.call_soon_threadsafe(self._on_target_event)
            except RuntimeError:  # the loop closed since the check: the server has stopped
                if not loop.is_closed():
                    raise

    def _client_for(self, target: StoreTarget | None) -> _Client | None:
        with self._lock:
            if target is None:
                return self.clients[0] if len(self.clients) == 1 else None
            owner = self.targets.owner_of(target.pid)
            return next((c for c in self.clients if c.session is owner), None)

    def _answer_on_guest_thread(self, target: StoreTarget | None) -> bool:
        """Hands the event to the session of the client debugging ``target``
        and writes the reply from this (the guest) thread; False when the
        loop must do it instead (no such client, or its transport still has
        data to send).  One hold of the lock: who the client is cannot
        change before the reply is out."""
        with self._lock:
            client = self._client_for(target)
            fd = client.guest_write_fd if client is not None else None
            if fd is None or client.transport.get_write_buffer_size():
                return False
            client.session.target_event()
            self._write_from_guest(client, fd, client.session.take_output())
        return True

    def output_from_guest(self, target: StoreTarget, fd: int, data: bytes) -> None:
        """The targets' output server: on ``target``'s guest thread, which
        wrote ``data`` to stdout or stderr.  The client debugging it gets it
        as ``O`` packets if it is waiting for a stop (gdbstub.session,
        forward_output); written before the guest goes on, so it always
        precedes the stop reply."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        client = self._client_for(target)
        if client is None:
            return
        with self._lock:
            if client not in self.clients or not client.session.forward_output(target, data):
                return
            out = client.session.take_output()
            fd_out = client.guest_write_fd
            if fd_out is None or client.transport.get_write_buffer_size():
                loop.call_soon_threadsafe(self._write_queued, client, out)
            else:
                self._write_from_guest(client, fd_out, out)

    def _write_from_guest(self, client: _Client, fd: int, data: bytes) -> None:
        """Writes ``data`` to the client's socket from a guest thread (under
        the lock); what does not fit goes to the transport's queue."""
        while data:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            except OSError as e:  # the client is gone: the loop sees it too, and cleans up
                log.info("reply not delivered: %s", e)
                return
            data = data[written:]
            if data and written == 0:
                # A full socket buffer: the transport queues the rest (and
                # nothing of ours is written before it: the client waits
                # for this reply before it sends anything).
                self._loop.call_soon_threadsafe(self._write_queued, client, data)
                return

    def _write_queued(self, client: _Client, data: bytes) -> None:
        with self._lock:
            if client in self.clients:
                client.transport.write(data)

    async def serve(self) -> Exited | None:
        """Runs until done; returns how ``serve``'s guest ended (None if it
        did not, or for a many-Store host)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._done = asyncio.Event()
        if self._listening_socket is not None:
            server = await self._loop.create_server(lambda: _ClientProtocol(self), sock=self._listening_socket)
        else:
            server = await self._loop.create_server(lambda: _ClientProtocol(self), self.host, self.port)
        sockets = server.sockets or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.targets.listening_port = self.port
        if self.on_listening:
            self.on_listening(self.host, self.port)
        # Events that arrived before the loop knew about them (the entry stop).
        self._on_target_event()
        async with server:
            await self._done.wait()
        if isinstance(self.targets, SingleStoreHost):
            return self.targets.served.exited
        return None

    def close(self) -> None:
        """Ends :meth:`serve` (thread-safe); clients are disconnected, which
        detaches them."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._shut_down)

    def _shut_down(self) -> None:
        with self._lock:
            clients = list(self.clients)
        for client in clients:
            client.transport.abort()
        if self._done is not None:
            self._done.set()

    # ------------------------------------------------------------ events

    def _on_target_event(self) -> None:
        with self._lock:
            for client in list(self.clients):
                client.session.target_event()
                self._flush(client)
            # Nobody debugs the rest: the host records their events (an exit).
            self.targets.take_unowned_events()
        self._check_done()

    def _check_done(self) -> None:
        if self._done is None or self.clients:
            return
        if isinstance(self.targets, SingleStoreHost) and self.targets.served.exited is not None:
            self._done.set()

    def _flush(self, client: _Client) -> None:
        data = client.session.take_output()
        if data:
            client.transport.write(data)

    # ------------------------------------------------------------ clients

    def _connected(self, transport: asyncio.Transport) -> _Client | None:
        """A client connected; None when it is refused (and closed)."""
        peer = transport.get_extra_info("peername")
        busy = self.single_client and self.clients
        if busy or (self.once and self._clients_served):
            log.info("refusing a client %s", peer)
            why = ("another debugger is attached (this stub serves one client at a time)" if busy
                   else "this stub served its one client")
            transport.write(Framer.encode(R.error(R.ErrorCode.EBUSY, why, True)))
            transport.close()
            return None
        log.info("client %s connected", peer)
        self._clients_served += 1
        sock = transport.get_extra_info("socket")
        with self._lock:
            session = GdbSession(self.targets, self.config.for_client(_peer_is_local(peer)))
            client = _Client(session, transport, os.dup(sock.fileno()) if sock is not None else None)
            self.clients.append(client)
            # Anything that happened while nobody was attached.
            session.target_event()
        return client

    def _received(self, client: _Client, data: bytes) -> None:
        with self._lock:
            if client not in self.clients:
                return
            try:
                session = client.session
                session.receive(data)
                reply = session.take_output()
                if reply:
                    client.transport.write(reply)
            except Exception:  # the outermost guard of a connection: log, detach, go on serving
                log.exception("session failed; detaching")
                self._close_transport(client)
                return
            if client.session.finished:
                self._close_transport(client)

    def _close_transport(self, client: _Client) -> None:
        """Closes the connection; the guest threads' descriptor first, so
        nothing of ours keeps the socket open.  Called with the lock."""
        self._close_guest_write_fd(client)
        client.transport.close()

    @staticmethod
    def _close_guest_write_fd(client: _Client) -> None:
        fd, client.guest_write_fd = client.guest_write_fd, None
        if fd is not None:
            os.close(fd)

    def _disconnected(self, client: _Client, exc: Exception | None) -> None:
        with self._lock:
            if client not in self.clients:
                return
            self.clients.remove(client)
            self._close_guest_write_fd(client)
            if exc is not None:
                log.info("client dropped: %s", exc)
            client.session.client_gone()
            self.targets.take_unowned_events()
        log.info("client gone")
        self._check_done()


def _peer_is_local(peer) -> bool:
    """True for a client on this machine: a loopback TCP peer, or a Unix
    socket's (whose peer name is a string or empty)."""
    if isinstance(peer, tuple) and peer:
        return is_loopback(str(peer[0]))
    return isinstance(peer, (str, bytes))


class _ClientProtocol(asyncio.Protocol):
    """Bytes in and out for one connection; all decisions are the server's."""

    def __init__(self, server: StubServer):
        self.server = server
        self.client: _Client | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = self.server._connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.server._received(self.client, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.server._disconnected(self.client, exc)
