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
from .connection import ProtocolConnection
from .encoding import ProtocolError, hex_decode, hex_encode
from .framing import DEFAULT_MAX_PACKET_SIZE, Framer, encode_packet
from .packets import Request, ThreadId, parse_packet, parse_thread_id
from .replies import Capabilities, FileIOErrno, Signal

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
