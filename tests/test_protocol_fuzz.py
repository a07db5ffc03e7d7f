"""Hypothesis fuzzing of the protocol layer: random and mutated byte streams into
ProtocolConnection and parse_packet. Nothing may raise, every complete packet
yields exactly one request, and memory stays bounded."""
from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbstub.protocol.connection import ProtocolConnection
from gdbstub.protocol.encoding import checksum, escape_binary
from gdbstub.protocol.framing import Framer, PacketReceived, encode_packet
from gdbstub.protocol.packets import (
    Interrupt,
    MalformedPacket,
    ReadMemory,
    ReadMemoryBinary,
    Request,
    UnknownPacket,
    VFilePread,
    WriteMemory,
    parse_packet,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX = 256  # small limit so oversized packets are common

PREFIXES = [
    b"qSupported:", b"qXfer:features:read:", b"qXfer:", b"qAttached:", b"qSymbol:",
    b"qRegisterInfo", b"qMemoryRegionInfo:", b"qRcmd,", b"QThreadEvents:", b"qfProcessInfo:",
    b"qThreadStopInfo", b"QNonStop:", b"jThreadExtendedInfo:", b"H", b"Hg", b"Hc", b"T",
    b"g", b"G", b"p", b"P", b"m", b"M", b"x", b"X", b"Z0,", b"Z", b"z", b"c", b"s", b"C",
    b"S", b"D", b"D;", b"vCont;", b"vCont", b"vKill;", b"vAttach;", b"vRun;",
    b"vFile:setfs:", b"vFile:open:", b"vFile:pread:", b"vFile:pwrite:", b"vFile:close:",
    b"vFile:fstat:", b"vFile:unlink:", b"vFile:readlink:", b"qWasmCallStack:", b"qWasmLocal:",
    b"qWasmGlobal:", b"qWasmStackValue:", b"qWasmMem:", b"vFile:", b"q", b"Q", b"v", b"j",
]
# Bytes that make argument text interesting: digits, hex, separators, signs.
ARG_ALPHABET = b"0123456789abcdefABCDEFxXp.-;:,=+?#$}*\x03 gzXY"

payload_bytes = st.binary(max_size=MAX)
args = st.lists(st.sampled_from(list(ARG_ALPHABET)), max_size=60).map(bytes)
prefixed_payloads = st.tuples(st.sampled_from(PREFIXES), args | st.binary(max_size=40)).map(
    lambda pair: pair[0] + pair[1]
)
huge_numbers = st.integers(min_value=0, max_value=1 << 600).map(lambda n: b"%x" % n)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_all(conn: ProtocolConnection, pieces: list[bytes]) -> tuple[list[Request], bytes]:
    requests: list[Request] = []
    output = bytearray()
    for piece in pieces:
        requests += conn.receive(piece)
        output += conn.pending_output()
        assert len(conn.framer._body) <= 2 * conn.max_packet_size
    return requests, bytes(output)


# --------------------------------------------------------------- parse_packet
@FUZZ
@given(st.binary(max_size=300))
def test_parse_packet_random_bytes_never_raises(payload):
    assert isinstance(parse_packet(payload), Request)


@FUZZ
@given(prefixed_payloads)
def test_parse_packet_prefixed_never_raises(payload):
    result = parse_packet(payload)
    assert isinstance(result, Request)
    if isinstance(result, (MalformedPacket, UnknownPacket)):
        assert result.payload == payload


@FUZZ
@given(huge_numbers, huge_numbers, huge_numbers)
def test_huge_numeric_arguments_parse_to_ints(a, b, c):
    assert parse_packet(b"m" + a + b"," + b) == ReadMemory(int(a, 16), int(b, 16))
    assert parse_packet(b"x" + a + b"," + b) == ReadMemoryBinary(int(a, 16), int(b, 16))
    assert parse_packet(b"vFile:pread:" + a + b"," + b + b"," + c) == VFilePread(
        int(a, 16), int(b, 16), int(c, 16)
    )
    # A huge length with little data is a length mismatch, never an allocation.
    write = parse_packet(b"M" + a + b"," + b + b":00")
    if int(b, 16) == 1:
        assert write == WriteMemory(int(a, 16), 1, b"\x00")
    else:
        assert isinstance(write, MalformedPacket)
    assert isinstance(parse_packet(b"qWasmMem:1;" + a + b";" + b), Request)
    assert isinstance(parse_packet(b"Z0," + a + b"," + b), Request)


@FUZZ
@given(st.sampled_from([b"m", b"M", b"x", b"X", b"p", b"P", b"G", b"vFile:pread:"]), args)
def test_invalid_hex_is_malformed_not_error(prefix, text):
    result = parse_packet(prefix + text)
    assert isinstance(result, Request)


# -------------------------------------------------------------- framing round trip
@FUZZ
@given(st.lists(payload_bytes, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_every_complete_packet_yields_exactly_one_request(bodies, cuts):
    stream = b"".join(encode_packet(body) for body in bodies)
    conn = ProtocolConnection(max_packet_size=MAX)
    requests, output = feed_all(conn, chunked(stream, cuts))
    assert requests == [parse_packet(body) for body in bodies]
    assert output == b"+" * len(bodies)


@FUZZ
@given(payload_bytes)
def test_escape_round_trip(body):
    assert Framer(MAX).feed(encode_packet(body)) == [PacketReceived(body)]


def rle_encode(data: bytes) -> bytes:
    """Reference run-length encoder following the manual's rules (escape first,
    runs of 3..97 extra repeats, avoid the counts that would give '#' or '$')."""
    out = bytearray()
    escaped = escape_binary(data)
    # Only compress runs of plain (unescaped) bytes to keep the encoder simple.
    for match in re.finditer(rb"(}.)|(([^}])\3*)", escaped, re.S):
        if match.group(1):
            out += match.group(1)
            continue
        run = match.group(2)
        byte, extra = run[:1], len(run) - 1
        out += byte
        while extra:
            take = min(extra, 97)
            if take < 3:
                out += byte * take
                break
            if take + 29 in (ord("#"), ord("$")):
                take = 5  # 6 and 7 would encode as '#' and '$'
            out += b"*" + bytes([take + 29])
            extra -= take
    return bytes(out)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(list(b"0a}*#\x03 ")), st.integers(1, 120)), max_size=6))
def test_run_length_decoding_matches_reference_encoder(runs):
    data = b"".join(bytes([b]) * n for b, n in runs)
    body = rle_encode(data)
    packet = b"$%s#%02x" % (body, checksum(body))
    expected = [PacketReceived(data)] if len(data) <= 4 * MAX else None
    events = Framer(4 * MAX).feed(packet)
    if expected is not None:
        assert events == expected


# ------------------------------------------------------------ mutated streams
segment = st.one_of(
    st.tuples(st.just("good"), payload_bytes),
    st.tuples(st.just("badsum"), payload_bytes),
    st.tuples(st.just("truncated"), payload_bytes),
    st.tuples(st.just("interrupt"), st.just(b"")),
    st.tuples(st.just("garbage"), st.binary(max_size=20)),
)


@FUZZ
@given(st.lists(segment, max_size=12), st.lists(st.integers(0, 10_000), max_size=12))
def test_mutated_streams(segments, cuts):
    """Good packets survive any mix of bad checksums, truncated packets (always
    followed by a new '$'), interrupts and garbage between packets."""
    stream = bytearray()
    expected: list[Request] = []
    expected_minus = 0
    pending_truncated = False
    for kind, body in segments:
        if pending_truncated and kind != "good":
            continue  # a truncated packet must be followed by a new '$'
        if kind == "good":
            stream += encode_packet(body)
            expected.append(parse_packet(body))
            pending_truncated = False
        elif kind == "badsum":
            escaped = escape_binary(body)
            stream += b"$%s#%02x" % (escaped, (checksum(escaped) + 1) & 0xFF)
            expected_minus += 1
        elif kind == "truncated":
            stream += b"$" + escape_binary(body)[: len(body) // 2]
            pending_truncated = True
        elif kind == "interrupt":
            stream += b"\x03"
            expected.append(Interrupt())
        else:
            stream += bytes(b for b in body if b not in b"$+-\x03")
    if pending_truncated:
        stream += encode_packet(b"?")
        expected.append(parse_packet(b"?"))
    conn = ProtocolConnection(max_packet_size=MAX)
    requests, output = feed_all(conn, chunked(bytes(stream), cuts))
    assert requests == expected
    assert output.count(b"-") == expected_minus
    assert output.count(b"+") == sum(1 for r in expected if not isinstance(r, Interrupt))


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"$", b"#", b"}", b"*", b"\x03", b"+", b"-", b"#00", b"$qC#b4"]),
            payload_bytes.map(encode_packet),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_random_streams_never_raise_and_stay_bounded(pieces, no_ack):
    conn = ProtocolConnection(max_packet_size=MAX)
    conn.reply(b"E01")
    conn.pending_output()
    if no_ack:
        conn.enable_no_ack()
    for piece in pieces:
        requests = conn.receive(piece)
        assert all(isinstance(r, Request) for r in requests)
        output = conn.pending_output()
        # At most one ack/nak per byte plus one retransmission per call.
        assert len(output) <= len(piece) + len(encode_packet(b"E01"))
        if no_ack:
            assert output == b""
        assert len(conn.framer._body) <= 2 * MAX


@FUZZ
@given(st.binary(min_size=1, max_size=4 * MAX), st.integers(1, 64))
def test_oversized_unterminated_input_is_dropped(body, step):
    conn = ProtocolConnection(max_packet_size=MAX)
    stream = b"$" + bytes(b for b in body if b not in b"#$") * 3 + encode_packet(b"qC")
    requests = []
    for index in range(0, len(stream), step):
        requests += conn.receive(stream[index : index + step])
        assert len(conn.framer._body) <= 2 * MAX
    assert requests[-1] == parse_packet(b"qC")
    assert all(isinstance(r, MalformedPacket) for r in requests[:-1])
    assert len(requests) <= 2
