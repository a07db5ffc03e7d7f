"""RSP framing: a sans-I/O state machine that turns received bytes into events,
and the inverse (payload -> ``$payload#cs``).

Rules this framer follows (GDB manual, "Remote Protocol" appendix, "Overview" and
"Packet Acknowledgment"; "Interrupts"):

* A packet is ``$`` + body + ``#`` + two hex checksum digits (either case). The
  checksum is the modulo-256 sum of the body bytes *as transmitted*.
* The body is decoded in one left-to-right pass (as LLDB does): ``}`` makes the next
  byte literal after XOR 0x20; ``*`` followed by a count byte ``n`` repeats the
  previous *decoded* byte ``n - 29`` more times. The count byte must be printable
  (0x20..0x7e, so at least 3 repeats); ``*`` first in a packet, ``*`` or ``}`` at the
  end of the body, or a non-printable count byte make the packet
  :class:`InvalidEncoding`. We never *emit* run-length encoding.
* Interrupt rule: a 0x03 byte is an interrupt request only **between** packets.
  Inside a packet body it is data (binary ``X`` / ``vFile:pwrite`` payloads may
  contain it). The manual lets a client send 0x03 at any time, but a client that
  is in the middle of sending a packet cannot mean "interrupt" with a body byte
  without making binary data ambiguous; gdb and lldb only send it between packets.
* Between packets, ``+`` and ``-`` are acknowledgments; every other byte that is
  not ``$`` or 0x03 is garbage and ignored (a stub must resynchronise on ``$``).
* A ``$`` inside a body abandons the partial packet and starts a new one: a raw
  ``$`` can never be body data (it must be escaped), so seeing one means the
  previous packet was truncated.
* No-ack mode (``no_ack``): ``+``/``-`` are neither expected nor reported (a client
  still sends one final ``+`` for the ``OK`` to QStartNoAckMode; it is ignored).
  A checksum mismatch cannot be answered with ``-`` then, so, as gdbserver does
  and as LLDB (which skips the check in no-ack mode) expects, the packet is
  delivered anyway with ``checksum_ok=False``.
* Size limit: the decoded payload may be at most ``max_packet_size`` bytes. A body
  whose raw (escaped, still encoded) length exceeds twice that without a ``#``
  yields :class:`PacketTooLong` at once; the framer then skips everything up to
  and including that packet's ``#xx`` trailer, or resynchronises at the next
  ``$``. A body within the raw limit that decodes to more than
  ``max_packet_size`` bytes (run-length encoding) yields :class:`PacketTooLong`
  when its trailer arrives. Memory held by a Framer is therefore O(max_packet_size)
  whatever the input.
"""
from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass

from .encoding import ESCAPE_BYTE, ESCAPE_XOR, checksum, escape_binary

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "FrameEvent",
    "PacketReceived",
    "InterruptReceived",
    "AckReceived",
    "NackReceived",
    "BadChecksum",
    "InvalidEncoding",
    "PacketTooLong",
    "Framer",
    "encode_packet",
    "decode_body",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PACKET_SIZE = 0x4000

_START = 0x24  # '$'
_END = 0x23  # '#'
_ACK = 0x2B  # '+'
_NACK = 0x2D  # '-'
_INTERRUPT = 0x03
_RUN = 0x2A  # '*'
_RUN_BIAS = 29  # GDB manual: repeat count = count byte - 29
_PREFIX_KEPT = 64  # bytes of an oversized packet kept for diagnostics

_HEX_VALUES = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_BODY_STOP = re.compile(rb"[#$]")


class FrameEvent:
    """Base class of everything :meth:`Framer.feed` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PacketReceived(FrameEvent):
    """A complete packet. ``payload`` is unescaped and run-length decoded.
    ``checksum_ok`` is False only in no-ack mode (see module docstring)."""

    payload: bytes
    checksum_ok: bool = True


@dataclass(frozen=True, slots=True)
class InterruptReceived(FrameEvent):
    """A 0x03 byte between packets (Ctrl-C)."""


@dataclass(frozen=True, slots=True)
class AckReceived(FrameEvent):
    """'+' between packets, ack mode only."""


@dataclass(frozen=True, slots=True)
class NackReceived(FrameEvent):
    """'-' between packets, ack mode only: the client wants our last packet again."""


@dataclass(frozen=True, slots=True)
class BadChecksum(FrameEvent):
    """A packet whose checksum did not match (ack mode only); the transport answers
    ``-`` so the client retransmits. ``payload`` is the raw body as received."""

    payload: bytes
    expected: int | None = None
    received: int | None = None


@dataclass(frozen=True, slots=True)
class InvalidEncoding(FrameEvent):
    """A packet with a correct checksum whose body breaks the escape or run-length
    rules. It arrived intact, so it is acknowledged and answered as malformed."""

    payload: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PacketTooLong(FrameEvent):
    """A packet over the size limit was dropped. ``prefix`` is its first raw bytes
    (for logs and so the session can see which packet it was)."""

    prefix: bytes = b""


class _State(enum.Enum):
    IDLE = "idle"  # between packets
    BODY = "body"  # after '$'
    CHECKSUM = "checksum"  # after '#', collecting two digits
    SKIP = "skip"  # inside an oversized packet, waiting for '#' or '$'
    SKIP_CHECKSUM = "skip-checksum"  # oversized packet's two checksum digits


def encode_packet(payload: bytes) -> bytes:
    """``$`` + escaped payload + ``#`` + checksum. Escapes ``# $ } *`` (see
    :func:`gdbstub.protocol.encoding.escape_binary`); never emits run-length encoding.
    Reply builders therefore return *unescaped* payloads.

    Caveat: LLDB unescapes every packet, gdb only binary ones (qXfer, x, vFile).
    Text replies for gdb never contain these bytes in practice (hex, ``OK``,
    ``Exx``, stop replies); JSON replies (``{...}``) are LLDB-only, where the
    escaping is required."""
    body = escape_binary(payload)
    return b"$%s#%02x" % (body, checksum(body))


def decode_body(raw: bytes, limit: int) -> tuple[bytes | None, str | None]:
    """Unescape and run-length decode one packet body in a single pass.

    Returns ``(payload, None)``; ``(None, reason)`` if the encoding is invalid; or
    ``(None, "too long")`` as soon as the output would exceed ``limit`` bytes (so a
    hostile run-length body never allocates more than ``limit``)."""
    if ESCAPE_BYTE not in raw and _RUN not in raw:
        return (raw, None) if len(raw) <= limit else (None, "too long")
    out = bytearray()
    index = 0
    length = len(raw)
    while index < length:
        byte = raw[index]
        if byte == ESCAPE_BYTE:
            if index + 1 >= length:
                return None, "escape byte at end of packet"
            out.append(raw[index + 1] ^ ESCAPE_XOR)
            index += 2
        elif byte == _RUN:
            if not out:
                return None, "run-length marker with no preceding byte"
            if index + 1 >= length:
                return None, "run-length marker at end of packet"
            count_byte = raw[index + 1]
            if not 0x20 <= count_byte <= 0x7E:
                return None, "run-length count is not printable"
            repeat = count_byte - _RUN_BIAS
            if len(out) + repeat > limit:
                return None, "too long"
            out.extend(bytes((out[-1],)) * repeat)
            index += 2
        else:
            out.append(byte)
            index += 1
        if len(out) > limit:
            return None, "too long"
    return bytes(out), None


class Framer:
    """Incremental RSP receiver and packet encoder (no I/O).

    ``feed`` accepts any split of the byte stream (one byte at a time or many
    packets at once) and returns the events completed by that chunk, in order.
    ``no_ack`` may be flipped at any time (normally right after the ``OK`` reply to
    QStartNoAckMode has been queued)."""

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, no_ack: bool = False):
        if max_packet_size < 1:
            raise ValueError("max_packet_size must be positive")
        self.max_packet_size = max_packet_size
        self.max_raw_size = 2 * max_packet_size
        self.no_ack = no_ack
        self._state = _State.IDLE
        self._body = bytearray()
        self._checksum_digits = bytearray()
        self._skip_digits = 0

    # -- sending side ---------------------------------------------------------
    @staticmethod
    def encode(payload: bytes) -> bytes:
        """See :func:`encode_packet`."""
        return encode_packet(payload)

    @staticmethod
    def ack() -> bytes:
        return b"+"

    @staticmethod
    def nack() -> bytes:
        return b"-"

    # -- receiving side -------------------------------------------------------
    @property
    def in_packet(self) -> bool:
        """True while a packet has been started but not finished."""
        return self._state is not _State.IDLE

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume ``data``; return the events it completes. Never raises on input."""
        events: list[FrameEvent] = []
        index = 0
        length = len(data)
        while index < length:
            state = self._state
            if state is _State.IDLE and data[index] == _START:
                end = self._whole_plain_packet(data, index, events)
                if end:
                    index = end
                    continue
            if state is _State.BODY:
                index = self._feed_body(data, index, events)
                continue
            byte = data[index]
            index += 1
            if state is _State.IDLE:
                self._idle_byte(byte, events)
            elif state is _State.CHECKSUM:
                self._checksum_byte(byte, events)
            elif state is _State.SKIP:
                if byte == _START:
                    self._start_packet()
                elif byte == _END:
                    self._state = _State.SKIP_CHECKSUM
                    self._skip_digits = 0
            else:  # SKIP_CHECKSUM
                if byte == _START:
                    self._start_packet()
                else:
                    self._skip_digits += 1
                    if self._skip_digits == 2:
                        self._state = _State.IDLE
        return events

    def _whole_plain_packet(self, data: bytes, index: int, events: list[FrameEvent]) -> int:
        """Fast path for the common case, a whole packet in ``data`` at
        ``index`` with no escapes, no run-length encoding and a good checksum:
        appends its event and returns the index after it.  Anything else
        returns 0 and goes through the state machine, which is the reference."""
        end = data.find(b"#", index + 1)
        if end < 0 or end + 3 > len(data) or end - index - 1 > self.max_packet_size:
            return 0
        body = data[index + 1 : end]
        if b"$" in body or b"}" in body or b"*" in body:
            return 0
        high = _HEX_VALUES.get(data[end + 1])
        low = _HEX_VALUES.get(data[end + 2])
        if high is None or low is None or high * 16 + low != checksum(body):
            return 0
        events.append(PacketReceived(bytes(body), True))
        return end + 3

    def _idle_byte(self, byte: int, events: list[FrameEvent]) -> None:
        if byte == _START:
            self._start_packet()
        elif byte == _INTERRUPT:
            events.append(InterruptReceived())
        elif byte == _ACK:
            if not self.no_ack:
                events.append(AckReceived())
        elif byte == _NACK:
            if not self.no_ack:
                events.append(NackReceived())
        else:
            logger.debug("ignoring garbage byte %#04x between packets", byte)

    def _start_packet(self) -> None:
        self._state = _State.BODY
        self._body.clear()
        self._checksum_digits.clear()

    def _feed_body(self, data: bytes, index: int, events: list[FrameEvent]) -> int:
        # Copy body bytes in bulk up to the next '#' or '$'.
        match = _BODY_STOP.search(data, index)
        stop = match.start() if match else len(data)
        room = self.max_raw_size - len(self._body)
        if stop - index > room:
            prefix = bytes(self._body[:_PREFIX_KEPT])
            if len(prefix) < _PREFIX_KEPT:
                prefix += data[index : index + _PREFIX_KEPT - len(prefix)]
            logger.warning("dropping packet longer than %d raw bytes", self.max_raw_size)
            events.append(PacketTooLong(prefix))
            self._body.clear()
            self._state = _State.SKIP
            return index + room  # the SKIP state consumes the rest
        self._body += data[index:stop]
        if match is None:
            return stop
        if data[stop] == _START:
            logger.debug("'$' inside a packet: dropping %d partial bytes", len(self._body))
            self._start_packet()
        else:
            self._state = _State.CHECKSUM
        return stop + 1

    def _checksum_byte(self, byte: int, events: list[FrameEvent]) -> None:
        if byte == _START:
            # Trailer cut short by a new packet: the old one is corrupt.
            self._finish_bad(None, events)
            self._start_packet()
            return
        self._checksum_digits.append(byte)
        if len(self._checksum_digits) < 2:
            return
        high = _HEX_VALUES.get(self._checksum_digits[0])
        low = _HEX_VALUES.get(self._checksum_digits[1])
        received = None if high is None or low is None else high * 16 + low
        raw = bytes(self._body)
        self._body.clear()
        self._state = _State.IDLE
        expected = checksum(raw)
        checksum_ok = received == expected
        if not checksum_ok and not self.no_ack:
            events.append(BadChecksum(raw, expected, received))
            return
        if not checksum_ok:
            logger.warning(
                "bad checksum in no-ack mode (expected %02x, got %r); accepting packet",
                expected,
                bytes(self._checksum_digits),
            )
        payload, reason = decode_body(raw, self.max_packet_size)
        if payload is not None:
            events.append(PacketReceived(payload, checksum_ok))
        elif reason == "too long":
            events.append(PacketTooLong(raw[:_PREFIX_KEPT]))
        else:
            events.append(InvalidEncoding(raw, reason or "invalid encoding"))

    def _finish_bad(self, received: int | None, events: list[FrameEvent]) -> None:
        raw = bytes(self._body)
        self._body.clear()
        self._state = _State.IDLE
        if self.no_ack:
            # No way to ask for a resend and no trustworthy trailer: drop it.
            logger.warning("dropping packet with truncated trailer in no-ack mode")
            events.append(InvalidEncoding(raw, "truncated checksum"))
        else:
            events.append(BadChecksum(raw, checksum(raw), received))
