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

Once a client has resumed its Stores (a packet read by the loop left its
session waiting for a stop), the loop stops reading that client's socket
and the guest thread that answers the next stop goes on serving the client
itself: it reads the packets, answers them under the lock, and on the
resume of its own stop simply returns into its guest, which runs at once
(its gate was opened from its own thread).  A stop -> packets -> resume
cycle then has no gate wake-up and no GIL hand-over between threads.  The
loop takes the socket back whenever no guest thread can read it: a stop it
answers itself, an exit, a run that read nothing for a whole
_READ_BACK_PERIOD_S (a continue that lasts: gdb's ^C and a disconnect are
read by the loop, as before), an end of file, a detach or kill, or a
session failure.

A client that goes away for any reason (detach, kill, dropped connection, a
protocol error) leaves every Store it debugged running with every site
disabled; ``serve``'s server then waits for the next client, or with
``once`` for the guest to end.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
from dataclasses import dataclass
from typing import Callable

from .listen import is_loopback
from .protocol import replies as R
from .protocol.framing import Framer
from .session import GdbSession, SessionConfig
from .target import Exited, StoreTarget, stop_announced_on_this_thread
from .targets import SingleStoreHost, TargetHost

log = logging.getLogger(__name__)

#: While a guest thread has a client's socket to read and its guest runs,
#: the loop looks this often for a run that read nothing since its last look
#: (a continue that lasts) and takes the socket back, so that gdb's ^C and a
#: disconnect are read within two periods.
_READ_BACK_PERIOD_S = 0.02
#: How long a serving guest thread waits for a packet before it looks again
#: whether its client is still there (the loop may have dropped it).
_SERVE_POLL_MS = 100


@dataclass
class _Client:
    """One connection: its session, its transport, and a dup of its socket's
    descriptor for guest threads' writes (ours to close, so it can never name
    another file)."""

    session: GdbSession
    transport: asyncio.Transport
    guest_write_fd: int | None
    #: The loop does not read this socket (its transport's reading is
    #: paused): guest threads do, while one of them is stopped and serving.
    guest_reads: bool = False
    #: A guest thread is serving the client now (reading guest_write_fd).
    serving: bool = False
    #: Reads by guest threads, and the count at the loop's last look.
    guest_read_count: int = 0
    read_count_at_look: int | None = None
    #: guest_write_fd is to be closed by the serving thread when it is done.
    close_fd_after_serving: bool = False


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
        self._read_back_timer: asyncio.TimerHandle | None = None
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
        """The client whose session debugs ``target`` (None: the one client,
        if there is exactly one); None when there is no such client.  Call
        it under the lock: clients come and go, sessions attach and detach."""
        if target is None:
            return self.clients[0] if len(self.clients) == 1 else None
        owner = self.targets.owner_of(target.pid)
        # A plain loop: this runs at every stop, and there is mostly one client.
        for client in self.clients:
            if client.session is owner:
                return client
        return None

    def _answer_on_guest_thread(self, target: StoreTarget | None) -> bool:
        """Hands the event to the session of the client debugging ``target``
        and writes the reply from this (the guest) thread; False when the
        loop must do it instead (no such client, or its transport still has
        data to send).  One hold of the lock: who the client is cannot
        change before the reply is out.

        When the loop has left the client's socket to guest threads
        (:meth:`_hand_reading_to_guests`) and this thread is a guest's, now
        stopped at its gate, it serves the client's packets itself until
        its stop is resumed (:meth:`_serve_on_guest_thread`): a stop, the
        client's packets and the resume then wake no other thread."""
        with self._lock:
            client = self._client_for(target)
            fd = client.guest_write_fd if client is not None else None
            if fd is None or client.transport.get_write_buffer_size():
                return False
            session = client.session
            session.target_event()
            self._write_from_guest(client, fd, session.take_output())
            if not client.guest_reads or client.serving or session.waiting_for_stop:
                return True
            stop = stop_announced_on_this_thread()
            if stop is None or stop.resumed:
                # An exit, or a stop shown from another thread: this thread
                # cannot wait for the client's next packet.
                self._return_reading_to_loop(client)
                return True
            client.serving = True
        self._serve_on_guest_thread(client, fd, stop)
        return True

    def _serve_on_guest_thread(self, client: _Client, fd: int, stop) -> None:
        """Reads and answers ``client``'s packets on this guest thread,
        stopped at ``stop``, until that stop is resumed (the thread then
        returns into its guest, and the socket stays with guest threads),
        the client goes, or the loop must take over (end of file, a session
        failure, a detach or kill: the loop reads the end and cleans up)."""
        session = client.session
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while True:
                ready = poller.poll(_SERVE_POLL_MS)
                with self._lock:
                    if client not in self.clients or stop.resumed or self._loop.is_closed():
                        return
                    if not ready:
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        log.info("client read failed on a guest thread: %s", e)
                        data = b""
                    if not data:
                        self._return_reading_to_loop(client)
                        return
                    client.guest_read_count += 1
                    try:
                        reply = session.answer(data)
                    except Exception:  # as the loop's guard in _received: log, detach, go on serving
                        log.exception("session failed; detaching")
                        self._return_reading_to_loop(client, close=True)
                        return
                    if reply:
                        self._write_from_guest(client, fd, reply)
                    if session.finished:
                        self._return_reading_to_loop(client, close=True)
                        return
                    if stop.resumed:
                        return
        finally:
            with self._lock:
                client.serving = False
                if client.close_fd_after_serving:
                    client.close_fd_after_serving = False
                    self._close_guest_write_fd(client)
                elif client in self.clients and client.guest_reads and not session.waiting_for_stop:
                    # Resumed by something that shows no stop (vKill of
                    # this Store, say): the next packet needs a reader.
                    self._return_reading_to_loop(client)

    def _hand_reading_to_guests(self, client: _Client) -> None:
        """On the loop thread, under the lock, after a packet that resumed
        ``client``'s Stores: the loop stops reading its socket, and the
        guest thread that shows the next stop serves it.  The loop looks
        every _READ_BACK_PERIOD_S for a run that lasts (:meth:`_look_at_guest_reading`)."""
        client.transport.pause_reading()
        client.guest_reads = True
        client.read_count_at_look = None
        if self._read_back_timer is None:
            self._read_back_timer = self._loop.call_later(_READ_BACK_PERIOD_S, self._look_at_guest_reading)

    def _return_reading_to_loop(self, client: _Client, *, close: bool = False) -> None:
        """Under the lock, on any thread: the loop reads ``client``'s socket
        again (and with ``close``, closes the connection, as after a
        detach)."""
        client.guest_reads = False
        loop = self._loop
        if threading.get_ident() == self._loop_thread:
            self._resume_reading(client, close)
        elif loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._resume_reading_locked, client, close)
            except RuntimeError:  # the loop closed since the check: the server has stopped
                if not loop.is_closed():
                    raise

    def _resume_reading_locked(self, client: _Client, close: bool) -> None:
        with self._lock:
            self._resume_reading(client, close)

    def _resume_reading(self, client: _Client, close: bool) -> None:
        if client not in self.clients:
            return
        if close:
            self._close_transport(client)
        elif not client.guest_reads and not client.transport.is_closing():
            client.transport.resume_reading()

    def _look_at_guest_reading(self) -> None:
        """The loop's periodic look (while guest threads read some socket):
        a client whose guest runs and read nothing since the last look gets
        its socket read by the loop again, so a long continue still sees
        ^C and a disconnect."""
        self._read_back_timer = None
        with self._lock:
            looking = False
            for client in self.clients:
                if not client.guest_reads:
                    continue
                if not client.serving and client.guest_read_count == client.read_count_at_look:
                    self._return_reading_to_loop(client)
                    continue
                client.read_count_at_look = client.guest_read_count
                looking = True
            if looking and self._loop is not None and not self._loop.is_closed():
                self._read_back_timer = self._loop.call_later(_READ_BACK_PERIOD_S, self._look_at_guest_reading)

    def output_from_guest(self, target: StoreTarget, fd: int, data: bytes) -> None:
        """The targets' output server: on ``target``'s guest thread, which
        wrote ``data`` to stdout or stderr.  The client debugging it gets it
        as ``O`` packets if it is waiting for a stop (gdbstub.session,
        forward_output); written before the guest goes on, so it always
        precedes the stop reply."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            client = self._client_for(target)
            if client is None or not client.session.forward_output(target, data):
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
                if client.guest_reads and not client.serving and not client.session.waiting_for_stop:
                    self._return_reading_to_loop(client)  # this stop's client waits for a reply
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
                reply = session.answer(data)
                if reply:
                    client.transport.write(reply)
            except Exception:  # the outermost guard of a connection: log, detach, go on serving
                log.exception("session failed; detaching")
                self._close_transport(client)
                return
            if client.session.finished:
                self._close_transport(client)
            elif session.waiting_for_stop and client.guest_write_fd is not None:
                self._hand_reading_to_guests(client)

    def _close_transport(self, client: _Client) -> None:
        """Closes the connection; the guest threads' descriptor first, so
        nothing of ours keeps the socket open.  Called with the lock."""
        self._close_guest_write_fd(client)
        client.transport.close()

    @staticmethod
    def _close_guest_write_fd(client: _Client) -> None:
        if client.serving:  # a guest thread polls it: that thread closes it
            client.close_fd_after_serving = True
            return
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
