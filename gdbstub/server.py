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

_READ_CHUNK = 1 << 16


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
        self._writer: asyncio.StreamWriter | None = None
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
        server = await asyncio.start_server(self._on_client, self.host, self.port)
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
        if self.session is None or self._writer is None:
            return
        data = self.session.take_output()
        if data:
            self._writer.write(data)

    # ------------------------------------------------------------ clients

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.session is not None or (self.once and self._clients_served):
            log.info("refusing a second client %s", peer)
            why = "another debugger is attached" if self.session is not None else "this stub served its one client"
            writer.write(Framer.encode(R.error(0x10, why, True)))
            await _close(writer)
            return
        log.info("client %s connected", peer)
        self._clients_served += 1
        session = GdbSession(self.target, self.config)
        self.session = session
        self._writer = writer
        try:
            # Anything that happened while nobody was attached.
            session.target_event()
            while not session.finished:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                session.receive(data)
                self._flush()
                await writer.drain()
            # Let a last reply (the detach OK) leave before closing.
            self._flush()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("client %s dropped: %s", peer, e)
        except Exception:  # the outermost guard of a connection: log, detach, go on serving
            log.exception("session with %s failed; detaching", peer)
        finally:
            self.session = None
            self._writer = None
            session.client_gone()
            await _close(writer)
            log.info("client %s gone", peer)
            if self.once:
                self._wait_guest_then_stop()
            self._check_done()

    def _wait_guest_then_stop(self) -> None:
        """``once``: no further clients; done when the guest ends."""
        self._check_done()


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
