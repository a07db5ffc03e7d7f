"""The asyncio transport: TCP in, GdbSession, TCP out.  The only module that
knows about sockets and the event loop.

One client at a time (a second one is told so and closed).  The guest thread
reports through ``loop.call_soon_threadsafe``; the loop hands the news to the
session if a client is attached, and otherwise keeps the target moving: a
stop with nobody to show it to cannot happen (a detached target does not
stop), an exit without a client ends the server.

A client that goes away for any reason (detach, kill, dropped connection,
a protocol error) leaves the Store running with every site disabled; the
server then waits for the next client, or with ``once`` for the guest to end.
"""
from __future__ import annotations

import asyncio
import logging
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

    def notify_from_guest(self) -> None:
        """Target ``notify`` callback: runs on the guest thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_target_event)

    async def serve(self) -> Exited | None:
        """Runs until done; returns how the guest ended (None if it did not)."""
        self._loop = asyncio.get_running_loop()
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
            transport.write(Framer.encode(R.error(0x10, why, True)))
            transport.close()
            return False
        log.info("client %s connected", peer)
        self._clients_served += 1
        self.session = GdbSession(self.target, self.config)
        self._transport = transport
        # Anything that happened while nobody was attached.
        self.session.target_event()
        return True

    def _received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        try:
            session.receive(data)
            self._flush()
        except Exception:  # the outermost guard of a connection: log, detach, go on serving
            log.exception("session failed; detaching")
            self._transport.close()
            return
        if session.finished:
            self._transport.close()

    def _disconnected(self, exc: Exception | None) -> None:
        session, self.session, self._transport = self.session, None, None
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

