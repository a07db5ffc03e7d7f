"""The GDB Remote Serial Protocol, sans I/O.

Bytes in, typed requests out (:class:`ProtocolConnection`, :class:`Framer`,
:func:`parse_packet`); reply payloads in, bytes out (:mod:`.replies`,
:func:`encode_packet`). Nothing in this package imports asyncio, sockets or the
engine (codemem): the transport shuttles bytes, the session decides what to answer.

Modules: :mod:`.encoding` (hex, escaping, strict numbers, :class:`ProtocolError`),
:mod:`.framing` (packets on the wire), :mod:`.packets` (one dataclass per request),
:mod:`.replies` (reply payloads, :class:`Capabilities`, :class:`Signal`),
:mod:`.connection` (framing + acknowledgments + parsing).
"""
import importlib

# Where each name of __all__ lives.  The package imports none of its modules
# itself (PEP 562 ``__getattr__`` below): ``from .protocol.replies import X``
# then costs the replies module only, not the 74 request dataclasses of
# .packets (tens of ms of ``serve``'s start before it listens).
_HOMES = {
    "ProtocolConnection": "connection",
    "ProtocolError": "encoding", "hex_decode": "encoding", "hex_encode": "encoding",
    "DEFAULT_MAX_PACKET_SIZE": "framing", "Framer": "framing", "encode_packet": "framing",
    "Request": "packets", "ThreadId": "packets", "parse_packet": "packets", "parse_thread_id": "packets",
    "Capabilities": "replies", "FileIOErrno": "replies", "Signal": "replies",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "ProtocolConnection",
    "ProtocolError",
    "hex_decode",
    "hex_encode",
    "DEFAULT_MAX_PACKET_SIZE",
    "Framer",
    "encode_packet",
    "Request",
    "ThreadId",
    "parse_packet",
    "parse_thread_id",
    "Capabilities",
    "FileIOErrno",
    "Signal",
]
