"""Framing rules of gdbstub.protocol: checksums, escaping, run-length decoding,
interrupts, acknowledgments, retransmission, no-ack mode, size limits, resync."""
from __future__ import annotations

import pytest

from gdbstub.protocol.connection import ProtocolConnection
from gdbstub.protocol.encoding import (
    ProtocolError,
    checksum,
    escape_binary,
    hex_decode,
    hex_encode,
    parse_dec_int,
    parse_hex_int,
    unescape_binary,
)
from gdbstub.protocol.framing import (
    AckReceived,
    BadChecksum,
    Framer,
    InterruptReceived,
    InvalidEncoding,
    NackReceived,
    PacketReceived,
    PacketTooLong,
    decode_body,
    encode_packet,
)
from gdbstub.protocol.packets import (
    parse_packet,
    HaltReason,
    ReadRegisters,
    Interrupt,
    MalformedPacket,
    QueryCurrentThread,
    ReadMemory,
    StartNoAckMode,
    WriteMemoryBinary,
)


def frame(body: bytes, checksum_override: int | None = None) -> bytes:
    """Frame a body exactly as given (no escaping), e.g. to hand-write RLE."""
    cs = checksum(body) if checksum_override is None else checksum_override
    return b"$%s#%02x" % (body, cs)


def payloads(events) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, PacketReceived)]


# ---------------------------------------------------------------- encoding helpers
def test_checksum_is_mod_256_sum():
    assert checksum(b"OK") == 0x9A
    assert checksum(b"") == 0
    assert checksum(b"\xff\xff") == 0xFE


@pytest.mark.parametrize("length", [63, 64, 255, 256, 257, 512, 513, 16384, 70001])
@pytest.mark.parametrize("fill", [0x00, 0x7F, 0xFF])
def test_long_checksum_is_exact_at_chunk_edges(length, fill):
    # The long-packet path sums in Adler-32 chunks: worst case all 0xff.
    data = bytes([fill]) * length
    assert checksum(data) == sum(data) & 0xFF
    mixed = bytes((i * 37 + fill) & 0xFF for i in range(length))
    assert checksum(mixed) == sum(mixed) & 0xFF


def test_encode_known_packets():
    assert encode_packet(b"OK") == b"$OK#9a"
    assert encode_packet(b"") == b"$#00"
    assert Framer.encode(b"qC") == b"$qC#b4"
    assert Framer.ack() == b"+" and Framer.nack() == b"-"


def test_encode_escapes_special_bytes_and_checksums_escaped_form():
    packet = encode_packet(b"a#b$c}d*e")
    assert packet == frame(b"a}\x03b}\x04c}]d}\x0ae")
    # No raw special byte survives in the body.
    body = packet[1:-3]
    assert b"#" not in body and b"$" not in body and b"*" not in body


def test_encode_never_emits_run_length_encoding():
    packet = encode_packet(b"0" * 100)
    assert packet == frame(b"0" * 100)


def test_escape_round_trip_all_bytes():
    data = bytes(range(256)) * 2
    assert unescape_binary(escape_binary(data)) == data
    events = Framer().feed(encode_packet(data))
    assert payloads(events) == [data]


def test_unescape_rejects_trailing_escape():
    with pytest.raises(ProtocolError):
        unescape_binary(b"ab}")


def test_hex_helpers_are_strict():
    assert hex_encode(b"\x01\xab") == b"01ab"
    assert hex_decode(b"01AB") == b"\x01\xab"
    assert hex_decode(b"") == b""
    for bad in (b"0", b"zz", b"0 1", b" 01", b"0x01"):
        with pytest.raises(ProtocolError):
            hex_decode(bad)
    assert parse_hex_int(b"ffFF") == 0xFFFF
    assert parse_hex_int(b"f" * 64) == (1 << 256) - 1
    for bad in (b"", b"-1", b"0x1", b"1_0", b" 1", b"+1", b"g"):
        with pytest.raises(ProtocolError):
            parse_hex_int(bad)
    assert parse_dec_int(b"0123") == 123
    for bad in (b"", b"a", b"-1", b"1" * 5000):
        with pytest.raises(ProtocolError):
            parse_dec_int(bad)


# ------------------------------------------------------------------------ framing
def test_single_packet():
    assert Framer().feed(b"$qC#b4") == [PacketReceived(b"qC")]


def test_checksum_digits_either_case():
    body = b"m0,4"
    upper = b"$%s#%02X" % (body, checksum(body))
    assert payloads(Framer().feed(upper)) == [body]


def test_bad_checksum_in_ack_mode():
    events = Framer().feed(frame(b"qC", 0x00))
    assert events == [BadChecksum(b"qC", 0xB4, 0x00)]


def test_non_hex_checksum_is_bad_checksum():
    events = Framer().feed(b"$qC#zz")
    assert len(events) == 1 and isinstance(events[0], BadChecksum)
    assert events[0].received is None


def test_one_byte_at_a_time():
    stream = b"+" + encode_packet(b"qSupported:multiprocess+") + b"+" + encode_packet(b"?")
    framer = Framer()
    events = []
    for byte in stream:
        events += framer.feed(bytes([byte]))
    assert events == [
        AckReceived(),
        PacketReceived(b"qSupported:multiprocess+"),
        AckReceived(),
        PacketReceived(b"?"),
    ]


def test_many_packets_in_one_feed():
    bodies = [b"qC", b"g", b"m1000,10", b"vCont?", b"c"]
    stream = b"".join(encode_packet(b) for b in bodies)
    assert payloads(Framer().feed(stream)) == bodies


def test_packet_split_across_every_boundary():
    stream = encode_packet(b"X10,3:a}b") + encode_packet(b"k")
    for cut in range(len(stream) + 1):
        framer = Framer()
        events = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert payloads(events) == [b"X10,3:a}b", b"k"], cut


def test_interrupt_between_packets():
    events = Framer().feed(b"\x03" + encode_packet(b"?") + b"\x03")
    assert events == [InterruptReceived(), PacketReceived(b"?"), InterruptReceived()]


def test_interrupt_byte_inside_packet_is_data():
    payload = b"X0,3:\x03\x03\x03"
    events = Framer().feed(encode_packet(payload))
    assert events == [PacketReceived(payload)]


def test_interrupt_inside_packet_fed_bytewise_is_data():
    framer = Framer()
    events = []
    for byte in encode_packet(b"X0,1:\x03"):
        events += framer.feed(bytes([byte]))
    assert events == [PacketReceived(b"X0,1:\x03")]


def test_garbage_between_packets_is_ignored():
    stream = b"hello\x00\xff" + encode_packet(b"qC") + b"#xx\r\n" + encode_packet(b"g")
    assert payloads(Framer().feed(stream)) == [b"qC", b"g"]


def test_dollar_inside_packet_restarts():
    # A truncated packet followed by a complete one: only the complete one counts.
    stream = b"$m1000,1" + encode_packet(b"qC")
    assert Framer().feed(stream) == [PacketReceived(b"qC")]


def test_dollar_in_checksum_position_reports_bad_and_restarts():
    stream = b"$qC#b" + encode_packet(b"g")
    events = Framer().feed(stream)
    assert isinstance(events[0], BadChecksum)
    assert events[1:] == [PacketReceived(b"g")]


def test_ack_and_nack_events_in_ack_mode():
    assert Framer().feed(b"+-+") == [AckReceived(), NackReceived(), AckReceived()]


# ------------------------------------------------------------- run-length decoding
@pytest.mark.parametrize(
    "body, expected",
    [
        (b"0* ", b"0000"),  # ' ' = 32: 3 more repeats
        (b"0*!", b"0" * 5),
        (b"a0*\"b", b"a" + b"0" * 6 + b"b"),
        (b"x*~", b"x" * 98),  # '~' = 126: 97 more
        (b"0* 1* ", b"0000" + b"1111"),
        (b"0* * ", b"0" * 7),  # a run can repeat the output of a run
        (b"}]* ", b"}" * 4),  # repeats the *decoded* escaped byte
        (b"a}\x0a", b"a*"),  # an escaped '*' is data, not a run marker
    ],
)
def test_run_length_decoding(body, expected):
    assert Framer().feed(frame(body)) == [PacketReceived(expected)]


@pytest.mark.parametrize(
    "body",
    [
        b"* ",  # nothing to repeat
        b"0*",  # count missing
        b"0*\x1f",  # count not printable
        b"0*\x80",
        b"ab}",  # dangling escape
    ],
)
def test_invalid_encoding(body):
    events = Framer().feed(frame(body))
    assert len(events) == 1 and isinstance(events[0], InvalidEncoding)
    assert events[0].payload == body


def test_decode_body_bounds_output():
    payload, reason = decode_body(b"0*~" * 10, limit=50)
    assert payload is None and reason == "too long"
    assert decode_body(b"0*~", limit=98) == (b"0" * 98, None)


# ------------------------------------------------------------------- size limits
def test_packet_at_limit_is_accepted():
    framer = Framer(max_packet_size=16)
    assert payloads(framer.feed(encode_packet(b"m" + b"1" * 15))) == [b"m" + b"1" * 15]


def test_decoded_packet_over_limit_is_too_long():
    framer = Framer(max_packet_size=16)
    events = framer.feed(encode_packet(b"m" + b"1" * 16))
    assert len(events) == 1 and isinstance(events[0], PacketTooLong)


def test_rle_bomb_is_too_long_without_allocating():
    framer = Framer(max_packet_size=64)
    events = framer.feed(frame(b"0*~0*~"))
    assert len(events) == 1 and isinstance(events[0], PacketTooLong)


def test_unterminated_raw_input_over_twice_limit_is_dropped_then_resyncs():
    framer = Framer(max_packet_size=16)
    events = framer.feed(b"$" + b"A" * 33)
    assert len(events) == 1 and isinstance(events[0], PacketTooLong)
    assert events[0].prefix.startswith(b"AAAA")
    # The rest of the oversized packet, including bytes that look like acks and
    # interrupts and its trailer, is skipped...
    events = framer.feed(b"AAA+-\x03AA#00")
    assert events == []
    # ...and the framer is back in sync.
    assert framer.feed(b"\x03" + encode_packet(b"qC")) == [
        InterruptReceived(),
        PacketReceived(b"qC"),
    ]


def test_oversized_packet_resyncs_at_next_dollar_without_trailer():
    framer = Framer(max_packet_size=8)
    events = framer.feed(b"$" + b"B" * 40 + encode_packet(b"g"))
    assert isinstance(events[0], PacketTooLong)
    assert events[1:] == [PacketReceived(b"g")]


def test_oversized_packet_fed_bytewise():
    framer = Framer(max_packet_size=8)
    events = []
    for byte in b"$" + b"C" * 40 + b"#00" + encode_packet(b"?"):
        events += framer.feed(bytes([byte]))
    assert [type(e) for e in events] == [PacketTooLong, PacketReceived]
    assert events[1].payload == b"?"


def test_framer_memory_is_bounded():
    framer = Framer(max_packet_size=32)
    framer.feed(b"$" + b"D" * 10_000)
    assert len(framer._body) <= 64


def test_max_packet_size_must_be_positive():
    with pytest.raises(ValueError):
        Framer(max_packet_size=0)


# ------------------------------------------------------------------- no-ack mode
def test_no_ack_framer_ignores_plus_and_minus():
    framer = Framer(no_ack=True)
    assert framer.feed(b"+-+" + encode_packet(b"?") + b"-") == [PacketReceived(b"?")]


def test_no_ack_bad_checksum_is_delivered_flagged():
    framer = Framer(no_ack=True)
    assert framer.feed(frame(b"qC", 0x11)) == [PacketReceived(b"qC", checksum_ok=False)]


# ------------------------------------------------------------- ProtocolConnection
def test_connection_acks_and_parses():
    conn = ProtocolConnection()
    requests = conn.receive(b"+" + encode_packet(b"qC") + encode_packet(b"?"))
    assert requests == [QueryCurrentThread(), HaltReason()]
    assert conn.pending_output() == b"++"
    assert conn.pending_output() == b""


def test_connection_reply_is_framed_and_escaped():
    conn = ProtocolConnection()
    conn.reply(b"l<x>#</x>")
    assert conn.pending_output() == encode_packet(b"l<x>#</x>")
    assert conn.last_packet == encode_packet(b"l<x>#</x>")


def test_connection_repeated_replies_are_framed_the_same_however_many_replies_came_between():
    # Short replies are kept framed (a stop reply, OK, the same stack words
    # come back on every stop); one-off replies beyond the memo's bound must
    # not change what is sent, nor keep a repeated reply from being framed.
    from gdbstub.protocol import connection

    conn = ProtocolConnection()
    stop = b"T05thread:p1.1;06:e8ff7f8000000000;07:e8fe7f8000000000;10:4805818000000000;swbreak:;"
    escaped = b"O}#$*" * 10
    big = b"l" + b"x" * (connection._MEMO_REPLY_MAX + 1)
    for k in range(3 * connection._MEMO_ENTRIES_MAX):
        for payload in (stop, b"OK", escaped, b"%064x" % k, big):
            conn.reply(payload)
            assert conn.pending_output() == encode_packet(payload)
            assert conn.last_packet == encode_packet(payload)
    assert len(conn._framed) <= connection._MEMO_ENTRIES_MAX
    assert big not in conn._framed


def test_connection_bad_checksum_sends_minus_and_no_request():
    conn = ProtocolConnection()
    assert conn.receive(frame(b"qC", 0x00)) == []
    assert conn.pending_output() == b"-"
    # The client retransmits; now it goes through.
    assert conn.receive(encode_packet(b"qC")) == [QueryCurrentThread()]
    assert conn.pending_output() == b"+"


def test_connection_retransmits_last_reply_on_minus():
    conn = ProtocolConnection()
    conn.receive(encode_packet(b"qC"))
    conn.reply(b"QCp1.1")
    sent = conn.pending_output()
    assert sent == b"+" + encode_packet(b"QCp1.1")
    assert conn.receive(b"-") == []
    assert conn.pending_output() == encode_packet(b"QCp1.1")
    # '+' is simply accepted.
    assert conn.receive(b"+") == []
    assert conn.pending_output() == b""


def test_connection_minus_flood_is_bounded():
    conn = ProtocolConnection()
    conn.reply(b"x" * 100)
    conn.pending_output()
    conn.receive(b"-" * 10_000)
    assert conn.pending_output() == encode_packet(b"x" * 100)


def test_connection_minus_before_any_reply_is_ignored():
    conn = ProtocolConnection()
    assert conn.receive(b"-") == []
    assert conn.pending_output() == b""


def test_connection_minus_while_reply_unsent_does_not_duplicate():
    conn = ProtocolConnection()
    conn.reply(b"OK")
    conn.receive(b"-")
    assert conn.pending_output() == encode_packet(b"OK")


def test_connection_no_ack_negotiation():
    conn = ProtocolConnection()
    assert conn.receive(encode_packet(b"QStartNoAckMode")) == [StartNoAckMode()]
    conn.reply(b"OK")
    conn.enable_no_ack()
    assert conn.no_ack
    # The exchange itself is acknowledged; the OK is the last thing framed.
    assert conn.pending_output() == b"+" + encode_packet(b"OK")
    # gdb acks the OK once more; afterwards nothing is acknowledged.
    assert conn.receive(b"+" + encode_packet(b"m10,4")) == [ReadMemory(0x10, 4)]
    assert conn.pending_output() == b""
    conn.reply(b"E01")
    conn.pending_output()
    assert conn.receive(b"-") == []
    assert conn.pending_output() == b""


def test_a_repeated_packet_in_no_ack_mode_gives_the_same_request_and_nothing_to_send():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    packet = encode_packet(b"m808104a0,1")
    first = conn.receive(packet)
    assert first == [ReadMemory(0x808104A0, 1)]
    # The second time the whole chunk is recognised without framing it again.
    assert conn.receive(packet) == first
    assert conn.receive(packet) == first
    assert conn.pending_output() == b""
    # A chunk that is more than the packet, or a different checksum, is framed.
    assert conn.receive(packet + b"\x03") == [ReadMemory(0x808104A0, 1), Interrupt()]
    assert conn.receive(frame(b"m808104a0,1", 0x00)) == [ReadMemory(0x808104A0, 1)]


def test_a_repeated_packet_split_across_chunks_is_still_framed_from_its_parts():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    packet = encode_packet(b"qC")
    assert conn.receive(packet) == [QueryCurrentThread()]
    # A packet begun in one chunk: the next chunk is not a whole packet of its own.
    assert conn.receive(packet[:3]) == []
    assert conn.receive(packet[3:] + packet) == [QueryCurrentThread(), QueryCurrentThread()]
    assert conn.receive(packet) == [QueryCurrentThread()]


def test_in_ack_mode_every_packet_is_acknowledged_even_when_repeated():
    conn = ProtocolConnection()
    packet = encode_packet(b"qC")
    for _ in range(3):
        assert conn.receive(packet) == [QueryCurrentThread()]
        assert conn.pending_output() == b"+"


def test_connection_no_ack_accepts_bad_checksum():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    assert conn.receive(frame(b"qC", 0x00)) == [QueryCurrentThread()]
    assert conn.pending_output() == b""


def test_connection_interrupts():
    conn = ProtocolConnection()
    requests = conn.receive(b"\x03" + encode_packet(b"X0,1:\x03") + b"\x03")
    assert requests == [Interrupt(), WriteMemoryBinary(0, 1, b"\x03"), Interrupt()]
    assert conn.pending_output() == b"+"


def test_connection_too_long_packet_is_acked_and_malformed():
    conn = ProtocolConnection(max_packet_size=16)
    requests = conn.receive(b"$" + b"M" * 40)
    assert len(requests) == 1 and isinstance(requests[0], MalformedPacket)
    assert requests[0].reason == "packet too long"
    assert conn.pending_output() == b"+"
    requests = conn.receive(b"#00" + encode_packet(b"?"))
    assert requests == [HaltReason()]


def test_connection_invalid_encoding_is_malformed():
    conn = ProtocolConnection()
    requests = conn.receive(frame(b"*!"))
    assert len(requests) == 1 and isinstance(requests[0], MalformedPacket)
    assert conn.pending_output() == b"+"


def test_connection_binary_write_round_trip():
    data = bytes(range(256))
    conn = ProtocolConnection()
    payload = b"X1000,100:" + data
    assert conn.receive(encode_packet(payload)) == [WriteMemoryBinary(0x1000, 256, data)]


def test_no_ack_truncated_trailer_is_malformed_not_lost():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    requests = conn.receive(b"$qC#b" + encode_packet(b"g"))
    assert len(requests) == 2 and isinstance(requests[0], MalformedPacket)
    assert requests[1] == ReadRegisters()
    assert conn.pending_output() == b""


def test_repeated_short_packets_are_parsed_once():
    calls = []

    def counting_parse(payload):
        calls.append(payload)
        return parse_packet(payload)

    conn = ProtocolConnection(parse=counting_parse)
    step = b"vCont;s:p1.1;c:p1.-1"
    long_write = b"M1000,40:" + b"00" * 0x40
    stream = Framer.encode(step) + Framer.encode(long_write)
    first = conn.receive(stream)
    second = conn.receive(stream)
    assert first[0] is second[0] and first[0] == parse_packet(step)
    assert first[1] == second[1] and first[1] is not second[1], "long packets are not kept"
    assert calls == [step, long_write, long_write]


class _Answerer:
    """A stand-in session for ProtocolConnection.answer: a reply per request
    type (None for a resume), QStartNoAckMode queued by hand as the session
    does, and every dispatched request recorded."""

    def __init__(self, conn: ProtocolConnection):
        self.conn = conn
        self.seen: list = []

    def __call__(self, request):
        self.seen.append(request)
        if isinstance(request, StartNoAckMode):
            self.conn.reply(b"OK")
            self.conn.enable_no_ack()
            return None
        if isinstance(request, ReadMemory):
            return b"%02x" % (request.addr & 0xFF) * request.length
        if isinstance(request, QueryCurrentThread):
            return b"QCp1.1"
        if isinstance(request, Interrupt):
            return None
        return b"E16" if isinstance(request, MalformedPacket) else b""


def _by_receive(conn: ProtocolConnection, dispatch, data: bytes) -> bytes:
    for request in conn.receive(data):
        payload = dispatch(request)
        if payload is not None:
            conn.reply(payload)
    return conn.pending_output()


_ANSWER_STREAM = [
    encode_packet(b"m10,4"), b"+", encode_packet(b"QStartNoAckMode"), b"+",
    encode_packet(b"m10,4"), encode_packet(b"m10,4"), encode_packet(b"qC"), encode_packet(b"qC"),
    encode_packet(b"vCont;c:p1.-1"), encode_packet(b"vCont;c:p1.-1"), b"\x03", encode_packet(b"m10,4"),
    # A packet split across chunks: the chunk after its start is no packet of its own.
    encode_packet(b"qC")[:4], encode_packet(b"qC"), encode_packet(b"qC"),
    encode_packet(b"m20,2")[:2], encode_packet(b"m20,2")[2:] + encode_packet(b"m10,4"), encode_packet(b"m10,4"),
    frame(b"m10,4", 0x00), encode_packet(b"m10,4") + b"\x03", b"-", encode_packet(b"m10,4"),
]


def test_answer_gives_what_receive_reply_and_pending_output_give():
    reference, fused = ProtocolConnection(), ProtocolConnection()
    by_receive, by_answer = _Answerer(reference), _Answerer(fused)
    for chunk in _ANSWER_STREAM:
        expected = _by_receive(reference, by_receive, chunk)
        assert fused.answer(chunk, by_answer) == expected, chunk
        assert fused.last_packet == reference.last_packet
        assert fused.pending_output() == reference.pending_output() == b""
    assert by_answer.seen == by_receive.seen
    assert len(by_answer.seen) == 20


def test_answer_of_a_known_packet_neither_frames_nor_parses_it():
    calls = []

    def counting_parse(payload):
        calls.append(payload)
        return parse_packet(payload)

    conn = ProtocolConnection(parse=counting_parse)
    conn.enable_no_ack()
    answerer = _Answerer(conn)
    packet = encode_packet(b"m10,4")
    assert conn.answer(packet, answerer) == encode_packet(b"10" * 4)
    conn.framer.feed = None  # the framer is not asked again
    for _ in range(3):
        assert conn.answer(packet, answerer) == encode_packet(b"10" * 4)
    assert calls == [b"m10,4"] and len(answerer.seen) == 4
    assert conn.last_packet == encode_packet(b"10" * 4)


def test_answer_inside_a_begun_packet_frames_the_chunk():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    answerer = _Answerer(conn)
    packet = encode_packet(b"qC")
    assert conn.answer(packet, answerer) == encode_packet(b"QCp1.1")
    # "$qC#" leaves the framer waiting for checksum digits: the whole known
    # packet after it ends that one (truncated) and is a packet again.
    assert conn.answer(packet[:4], answerer) == b""
    assert conn.answer(packet, answerer) == encode_packet(b"E16") + encode_packet(b"QCp1.1")
    assert isinstance(answerer.seen[-2], MalformedPacket)


def test_answer_when_dispatch_queues_its_own_reply_keeps_the_order():
    conn = ProtocolConnection()
    conn.enable_no_ack()
    packet = encode_packet(b"qC")

    def dispatch(request):
        conn.reply(b"O6869")  # console output queued before the reply
        return b"QCp1.1"

    assert conn.answer(packet, dispatch) == encode_packet(b"O6869") + encode_packet(b"QCp1.1")
    assert conn.answer(packet, dispatch) == encode_packet(b"O6869") + encode_packet(b"QCp1.1")
    assert conn.last_packet == encode_packet(b"QCp1.1")
