"""Byte-level encodings shared by framing, packet parsing and reply building.

Everything here is pure and works on ``bytes``. The one error type of the protocol
layer, :class:`ProtocolError`, is raised by the strict decoders in this module;
:func:`gdbstub.protocol.packets.parse_packet` catches it and turns it into a
``MalformedPacket`` so that nothing ever escapes to the transport.

References: GDB manual, "Remote Protocol" appendix, sections "Overview" (checksum,
binary data escaping, run-length encoding).
"""
from __future__ import annotations

import binascii
import re
import zlib

__all__ = [
    "ProtocolError",
    "ESCAPE_BYTE",
    "ESCAPE_XOR",
    "checksum",
    "hex_encode",
    "hex_decode",
    "escape_binary",
    "unescape_binary",
    "parse_hex_int",
    "parse_dec_int",
]

#: '}' introduces an escaped byte; the byte that follows is XORed with 0x20.
ESCAPE_BYTE = 0x7D
ESCAPE_XOR = 0x20

# Bytes that may never appear raw inside a packet body: '#' ends the packet, '$'
# starts one, '}' escapes and '*' introduces a run-length count. GDB manual,
# "Overview": binary data must escape '#', '$' and '}'; '*' is escaped too because a
# receiver decodes run-length encoding in every packet (gdb's read_frame does).
_MUST_ESCAPE = re.compile(rb"[#$}*]")
_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]+")
_DEC_DIGITS = re.compile(rb"[0-9]+")
# Python refuses to convert decimal strings longer than this (CVE-2020-10735 guard);
# a longer decimal number is reported as malformed rather than raising ValueError.
_MAX_DECIMAL_DIGITS = 4000


class ProtocolError(ValueError):
    """Input bytes that do not follow the Remote Serial Protocol's encoding rules.

    The message says what was expected ("invalid hex number for address", ...)."""


#: Adler-32's first half is 1 + sum(bytes) mod 65521; over at most 256 bytes
#: (256 * 255 + 1 < 65521) it never wraps, so it is the exact byte sum, in C.
_CHECKSUM_CHUNK = 256


def checksum(raw: bytes) -> int:
    """The RSP checksum: the modulo-256 sum of every byte between '$' and '#',
    computed over the bytes as transmitted (escaped, run-length encoded)."""
    if len(raw) < 64:
        return sum(raw) & 0xFF
    view = memoryview(raw)
    total = 0
    for start in range(0, len(raw), _CHECKSUM_CHUNK):
        total += (zlib.adler32(view[start:start + _CHECKSUM_CHUNK]) & 0xFFFF) - 1
    return total & 0xFF


#: ``hex_encode(data) -> bytes``: two lowercase hex digits per byte, most
#: significant nibble first (binascii's, one C call: every ``m`` and ``g``
#: reply is made with it).
hex_encode = binascii.hexlify


def hex_decode(text: bytes, what: str = "hex data") -> bytes:
    """Strict inverse of :func:`hex_encode` (either case accepted).

    Raises ProtocolError on an odd length or any non-hex byte (``bytes.fromhex``
    alone would also accept whitespace, which the protocol does not)."""
    if not text:
        return b""
    if len(text) % 2 or not _HEX_DIGITS.fullmatch(text):
        raise ProtocolError(f"invalid {what}")
    return bytes.fromhex(text.decode("ascii"))


def _escape_one(match: re.Match[bytes]) -> bytes:
    return bytes((ESCAPE_BYTE, match[0][0] ^ ESCAPE_XOR))


def escape_binary(data: bytes) -> bytes:
    """Escape ``# $ } *`` as ``}`` followed by the byte XOR 0x20 (GDB manual,
    "Overview", binary data). Never produces run-length encoding."""
    # Hex and text replies need none: four memchr scans beat one regex search.
    if b"}" not in data and b"#" not in data and b"$" not in data and b"*" not in data:
        return data
    return _MUST_ESCAPE.sub(_escape_one, data)


def unescape_binary(data: bytes) -> bytes:
    """Inverse of :func:`escape_binary` (run-length encoding is *not* decoded here;
    the framer does both in one pass). Raises ProtocolError on a trailing '}'."""
    if ESCAPE_BYTE not in data:
        return data
    out = bytearray()
    index = 0
    length = len(data)
    while index < length:
        byte = data[index]
        if byte == ESCAPE_BYTE:
            if index + 1 >= length:
                raise ProtocolError("escape byte at end of data")
            out.append(data[index + 1] ^ ESCAPE_XOR)
            index += 2
        else:
            out.append(byte)
            index += 1
    return bytes(out)


def parse_hex_int(text: bytes, what: str = "number") -> int:
    """A non-negative hex number with at least one digit and nothing else (no sign,
    no ``0x``, no whitespace, no underscores: ``int(x, 16)`` would accept those).

    Arbitrarily large values are returned as they are; bounding them is the
    caller's job (the protocol layer never allocates based on a parsed number)."""
    if not _HEX_DIGITS.fullmatch(text):
        raise ProtocolError(f"invalid hex {what}")
    return int(text, 16)


def parse_dec_int(text: bytes, what: str = "number") -> int:
    """A non-negative decimal number (LLDB's qWasm* indices are printed with %d)."""
    if not _DEC_DIGITS.fullmatch(text):
        raise ProtocolError(f"invalid decimal {what}")
    if len(text) > _MAX_DECIMAL_DIGITS:
        raise ProtocolError(f"decimal {what} too long")
    return int(text, 10)
