"""Where a stub listens: ``--listen`` parsing and the listening socket.

Kept apart from the server (asyncio, the session and the protocol) so that
``wasm-gdbstub serve`` can bind its socket and print its banner before it
imports them (docs/debug-images.md, "Warm start").
"""
from __future__ import annotations

import ipaddress
import socket


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``PORT`` (loopback) -> (host, port).
    ValueError naming the problem; a non-loopback host is refused unless
    ``allow_remote`` (anyone who can reach it could run code in this process)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"{text!r}: {host} is not a loopback address; anyone who can reach it "
                         "could run code in this process. Pass --allow-remote if you mean it.")
    return host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127/8, ::1, and
    IPv4-mapped ones, as an IPv6 listener sees IPv4 clients)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def listening_socket(host: str, port: int) -> socket.socket | None:
    """A TCP socket bound to the literal address ``host`` and listening
    (``SO_REUSEADDR``, as asyncio's ``create_server`` sets it on POSIX), or
    None when ``host`` is a name: a name may stand for several addresses
    (``localhost``: 127.0.0.1 and ::1), which the server then binds itself.
    Raises OSError when the address cannot be bound."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(100)  # asyncio's default backlog
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
