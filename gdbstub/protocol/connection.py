"""ProtocolConnection: framing + acknowledgments + parsing, still without I/O.

The transport feeds received bytes to :meth:`ProtocolConnection.receive`, gives
the returned requests to the session, and writes whatever
:meth:`ProtocolConnection.pending_output` returns. The session answers each
request with exactly one :meth:`ProtocolConnection.reply` (the empty payload for
"not supported"), except :class:`~gdbstub.protocol.packets.Interrupt` and resume
requests, which are answered later by a stop reply.

Acknowledgment rules (GDB manual, "Packet Acknowledgment"):

* Ack mode (the initial mode): every packet received intact is answered with
  ``+`` at once; a packet with a bad checksum with ``-`` (and is not delivered);
  a ``-`` from the client queues our last packet again (at most once until the
  output is taken, so a flood of ``-`` cannot grow memory).
* No-ack mode: entered by :meth:`enable_no_ack`, which the session calls *after*
  queueing the ``OK`` reply to QStartNoAckMode (that exchange itself still runs
  with acknowledgments). From then on nothing is acknowledged and ``+``/``-`` from
  the client are ignored.

Every complete packet yields exactly one request: the parsed request, or
``MalformedPacket`` for packets that broke the encoding rules or the size limit
(those are acknowledged with ``+``: they arrived intact, retransmitting would not
help, and the client needs an answer). Packet tracing goes to the
``gdbstub.protocol.trace`` logger at DEBUG level.
"""
from __future__ import annotations

import logging
from typing import Callable

from .framing import (
    DEFAULT_MAX_PACKET_SIZE,
    AckReceived,
    BadChecksum,
    Framer,
    InterruptReceived,
    InvalidEncoding,
    NackReceived,
    PacketReceived,
    PacketTooLong,
)
from .packets import Interrupt, MalformedPacket, Request, parse_packet

__all__ = ["ProtocolConnection"]

logger = logging.getLogger(__name__)
trace = logging.getLogger("gdbstub.protocol.trace")

_TRACE_LIMIT = 200
#: Parsed-request memo bounds: short packets only, and not too many of them.
_MEMO_PAYLOAD_MAX = 64
_MEMO_ENTRIES_MAX = 256
#: Replies up to this size are kept framed (a stop reply, `m SP,40`'s 128 hex digits).
_MEMO_REPLY_MAX = 160


def _shorten(data: bytes) -> bytes:
    return data if len(data) <= _TRACE_LIMIT else data[:_TRACE_LIMIT] + b"..."


class ProtocolConnection:
    """One client connection's protocol state (see module docstring)."""

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        parse: Callable[[bytes], Request] = parse_packet,
    ):
        self.framer = Framer(max_packet_size)
        self._parse_payload = parse
        # Debuggers repeat the same short packets on every stop (gdb's z0/Z0 at
        # one address, vCont;s / vCont;c for one thread): requests are frozen,
        # so a parsed one can be handed out again.
        self._parsed: dict[bytes, Request] = {}
        # In no-ack mode a chunk of received bytes that is exactly one short
        # packet (``$m...#cs``: what gdb sends on every stop) is looked up
        # whole: the same bytes, checksum included, frame and parse the same.
        self._whole_packets: dict[bytes, Request] = {}
        # The same short replies come back as often (OK, a stop reply at the
        # same pc, the same stack words): their framed bytes are kept.
        self._framed: dict[bytes, bytes] = {}
        self._output = bytearray()
        self._last_packet: bytes | None = None
        self._retransmit_queued = False
        # True only while the framer is idle in no-ack mode (kept by
        # :meth:`receive` and :meth:`enable_no_ack`, the only ways its state
        # changes): then a chunk may be looked up whole, without asking the
        # framer first.
        self._whole_lookup = False

    @property
    def no_ack(self) -> bool:
        return self.framer.no_ack

    @property
    def max_packet_size(self) -> int:
        return self.framer.max_packet_size

    @property
    def last_packet(self) -> bytes | None:
        """The framed bytes of the last reply (what a ``-`` retransmits)."""
        return self._last_packet

    def enable_no_ack(self) -> None:
        """Switch to no-ack mode (call after queueing the OK for QStartNoAckMode)."""
        self.framer.no_ack = True
        self._whole_lookup = not self.framer.in_packet

    def _parse(self, payload: bytes) -> Request:
        request = self._parsed.get(payload)
        if request is None:
            request = self._parse_payload(payload)
            if len(payload) <= _MEMO_PAYLOAD_MAX and len(self._parsed) < _MEMO_ENTRIES_MAX:
                self._parsed[payload] = request
        return request

    def receive(self, data: bytes) -> list[Request]:
        """Consume received bytes; return the requests they complete, in order.
        Acknowledgments and retransmissions are queued for :meth:`pending_output`.
        Never raises on input."""
        framer = self.framer
        known = self._whole_packets.get(data) if self._whole_lookup else None
        if known is not None:
            if trace.isEnabledFor(logging.DEBUG):
                trace.debug("<- %r", _shorten(data[1:-3]))
            return [known]
        requests: list[Request] = []
        events = framer.feed(data)
        self._whole_lookup = framer.no_ack and not framer.in_packet
        for event in events:
            if isinstance(event, PacketReceived):
                self._acknowledge(b"+")
                if trace.isEnabledFor(logging.DEBUG):
                    trace.debug("<- %r", _shorten(event.payload))
                request = self._parse(event.payload)
                requests.append(request)
                if (len(events) == 1 and event.checksum_ok and framer.no_ack and not framer.in_packet
                        and data[:1] == b"$" and len(data) == len(event.payload) + 4
                        and len(data) <= _MEMO_PAYLOAD_MAX and len(self._whole_packets) < _MEMO_ENTRIES_MAX):
                    # Exactly ``$payload#cs``, unescaped and checked.
                    self._whole_packets[data] = request
            elif isinstance(event, InterruptReceived):
                trace.debug("<- ^C")
                requests.append(Interrupt())
            elif isinstance(event, BadChecksum):
                logger.info(
                    "bad checksum (expected %s, got %s); asking for retransmission",
                    event.expected,
                    event.received,
                )
                self._acknowledge(b"-")
            elif isinstance(event, InvalidEncoding):
                self._acknowledge(b"+")
                trace.debug("<- (invalid encoding) %r", _shorten(event.payload))
                requests.append(MalformedPacket(event.payload, event.reason))
            elif isinstance(event, PacketTooLong):
                self._acknowledge(b"+")
                trace.debug("<- (too long) %r", _shorten(event.prefix))
                requests.append(MalformedPacket(event.prefix, "packet too long"))
            elif isinstance(event, NackReceived):
                self._retransmit()
            elif isinstance(event, AckReceived):
                pass
        return requests

    def answer(self, data: bytes, dispatch: Callable[[Request], bytes | None]) -> bytes:
        """:meth:`receive` of ``data``, each request's reply (``dispatch``'s
        answer, None for none) queued with :meth:`reply`, then
        :meth:`pending_output`, in one call: the bytes for the client.
        ``dispatch`` may queue replies of its own (:meth:`reply`) too.

        The common case of a client that waits for each reply in no-ack
        mode (one short packet already seen, nothing queued before it) takes
        a short path with the same result: the request from the whole-packet
        memo, its reply framed from the reply memo, no output buffer."""
        known = self._whole_packets.get(data) if self._whole_lookup and not self._output else None
        if known is None:
            for request in self.receive(data):
                payload = dispatch(request)
                if payload is not None:
                    self.reply(payload)
            return self.pending_output()
        tracing = trace.isEnabledFor(logging.DEBUG)
        if tracing:
            trace.debug("<- %r", _shorten(data[1:-3]))
        payload = dispatch(known)
        if self._output:  # dispatch queued a reply of its own: the general way
            if payload is not None:
                self.reply(payload)
            return self.pending_output()
        if payload is None:
            self._retransmit_queued = False
            return b""
        packet = self._framed.get(payload)
        if packet is None:
            self.reply(payload)
            return self.pending_output()
        if tracing:
            trace.debug("-> %r", _shorten(payload))
        self._last_packet = packet
        self._retransmit_queued = False  # taken at once, as by pending_output
        return packet

    def reply(self, payload: bytes) -> None:
        """Queue one reply packet (``payload`` unescaped; framing escapes it)."""
        packet = self._framed.get(payload)
        if packet is None:
            packet = Framer.encode(payload)
            if len(payload) <= _MEMO_REPLY_MAX:
                if len(self._framed) >= _MEMO_ENTRIES_MAX:
                    self._framed.clear()  # one-off replies filled it: start over with what repeats
                self._framed[payload] = packet
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("-> %r", _shorten(payload))
        self._last_packet = packet
        # The packet is in the output already: a '-' arriving before the output is
        # taken must not queue a second copy.
        self._retransmit_queued = True
        self._output += packet

    def pending_output(self) -> bytes:
        """Take every byte queued for the client (acks, replies, resends)."""
        data = bytes(self._output)
        self._output.clear()
        self._retransmit_queued = False
        return data

    def _acknowledge(self, ack: bytes) -> None:
        if not self.framer.no_ack:
            self._output += ack

    def _retransmit(self) -> None:
        if self._last_packet is None or self._retransmit_queued:
            return
        logger.info("client sent '-': retransmitting the last packet")
        self._output += self._last_packet
        self._retransmit_queued = True
