"""A minimal blocking RSP server loop for tests that drive a real client
against canned answers (no acks checked, no run-length encoding)."""
from __future__ import annotations

import re
import socket
from typing import Callable

from gdbstub.protocol.framing import encode_packet

_PACKET = re.compile(rb"\$([^#]*)#[0-9a-f]{2}")


def serve_one_client(server: socket.socket, answer: Callable[[str], bytes], *,
                     last: tuple[str, ...] = ("D",)) -> None:
    """Accepts one client on ``server`` and answers each packet with
    ``answer(payload)`` until the client closes or sends a packet starting
    with one of ``last``."""
    connection, _ = server.accept()
    with connection:
        buffer = b""
        while True:
            received = connection.recv(65536)
            if not received:
                return
            buffer += received
            while (match := _PACKET.search(buffer)):
                buffer = buffer[match.end():]
                packet = match[1].decode("latin-1")
                connection.sendall(b"+" + encode_packet(answer(packet)))
                if packet.startswith(last):
                    return
