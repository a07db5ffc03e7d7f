"""Hypothesis: hostile byte streams into a GdbSession over a live, stopped guest.

The pure protocol layer is fuzzed on its own (test_protocol_fuzz.py); here the
same kind of input goes through the whole session into a real StoreTarget
(demo.O0's ``run()`` on its own guest thread), so what is checked is what the
session and target do with it:

* no exception escapes ``receive`` / ``target_event`` / ``take_output``;
* the output is always well-formed (acks and ``$..#cs`` packets only, valid
  checksums), every complete packet is acknowledged with ``+`` (ack mode) or
  ``-`` for a bad checksum, and every request gets exactly one reply except
  resumes and interrupts (a stop reply later; so for ``?`` on a running
  guest); error replies are ``Exx`` or ``Exx;hex``; whatever is sent is a
  reply of that chunk or a retransmission of the last one;
* afterwards the guest is intact: after a final ``qC`` (answered) and ``D``,
  ``run()`` returns 505 and every byte of the Store's code equals the
  EngineCode's.

Requests that legitimately change the guest's state (writes to writable
memory or to registers, ``k``/``vKill``) would make "still returns 505" false
for reasons that are not bugs; :class:`Guard` answers those ``E01`` in place
of the session (it lets through the writes the target must refuse: to code,
to unmapped memory, wrong-sized ``G``, unknown registers).  They are tested
one by one in test_session.py.
"""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import codemem
from gdbstub import arch_amd64
from gdbstub.protocol import packets as P
from gdbstub.protocol import replies as R
from gdbstub.protocol.framing import BadChecksum, InvalidEncoding, PacketReceived, PacketTooLong
from gdbstub.session import PACKET_SIZE

from test_session import DEMO_RESULT, DEMO_WASM, ERROR_RE, GuestHarness, frame, hexs, parse_stream

RESUMES = (P.Continue, P.ContinueWithSignal, P.Step, P.StepWithSignal, P.VCont)
#: Requests answered later (a stop reply), by the handler itself, or never.
DEFERRED = RESUMES + (P.Interrupt, P.HaltReason, P.StartNoAckMode)
#: Requests whose normal reply is binary (may begin with 'E').
BINARY_REPLIES = (P.ReadMemoryBinary, P.VFilePread, P.VFileFstat, P.VFileReadlink)
MEMORY_WRITES = (P.WriteMemory, P.WriteMemoryBinary)

FIXED_PAYLOADS = [
    b"?", b"g", b"qC", b"qfThreadInfo", b"qsThreadInfo", b"qAttached", b"vCont?", b"vMustReplyEmpty",
    b"QStartNoAckMode", b"QEnableErrorStrings", b"QListThreadsInStopReply", b"qHostInfo", b"qProcessInfo",
    b"QThreadSuffixSupported", b"qTStatus", b"qOffsets", b"qSymbol::", b"jThreadsInfo", b"jThreadExtendedInfo:",
    b"qStructuredDataPlugins", b"qShlibInfoAddr", b"qVAttachOrWaitSupported", b"QThreadEvents:1", b"c", b"s",
    b"vCont;c", b"vCont;s", b"vCont;t", b"", b"D", b"k", b"!", b"R00", b"r", b"bc", b"i", b"qThreadExtraInfo,1",
    b"qXfer:features:read:target.xml:0,fff", b"qXfer:libraries-svr4:read::0,fff", b"vFile:setfs:0",
    b"qSupported", b"qSupported:multiprocess+;swbreak+;xmlRegisters=i386", b"qSupported:swbreak-;;=;+",
    b"x0,0", b"qRcmd,", b"QNonStop:1", b"vStopped", b"vAttach;1", b"vRun;", b"qGetTLSAddr:1,0,0",
]
MONITOR_TEXTS = ["help", "stores", "patches", "frame-table", "frame-table run", "frame-table 3",
                 "frame-table nosuch", "bogus", " ", "patches extra args"]
SPECIAL_BYTES = b"\x03$#}*+-\x00\xff:;,"
HEX_DIGITS = b"0123456789abcdefABCDEF"


class Context:
    """The live guest's addresses, for strategies drawn inside the test.

    Every Store maps its code, stack and memory at new addresses, so the
    strategies draw offsets with fixed bounds and add the live base
    (Hypothesis replays and shrinks by the draws, which must not depend on
    where mmap put things)."""

    def __init__(self, guest: GuestHarness, g_hex: bytes):
        code = guest.code
        self.pid = guest.target.pid
        self.sites = guest.all_site_pcs()
        self.code_base, self.code_size = code.base, code.size
        stack = guest.store.ctx.stack
        self.stack_base, self.stack_size = stack.base + stack.guard, stack.top - stack.base - stack.guard
        memory = guest.instance.memories[0]
        self.memory_size = memory.data_len
        self.memory_base = memory.base
        self.g_hex = g_hex  # the stopped guest's own registers: a G that would be accepted

    def site(self) -> st.SearchStrategy[int]:
        sites = self.sites
        return st.integers(0, len(sites) - 1).map(lambda i: sites[i])

    def within(self, base: int, size: int, slack: int = 16) -> st.SearchStrategy[int]:
        return st.integers(-slack, size + slack).map(lambda offset: max(base + offset, 0))


def numbers() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 0x40), st.integers(0, 2**64 - 1),
                     st.sampled_from([0x1FFC, 0x1FFD, 0x2000, PACKET_SIZE, PACKET_SIZE * 2, 2**32, 2**63, 2**64 - 1]))


def addresses(ctx: Context) -> st.SearchStrategy[int]:
    return st.one_of(
        ctx.site(),
        st.builds(lambda pc, d: pc + d, ctx.site(), st.integers(-8, 8)),
        ctx.within(ctx.code_base, ctx.code_size),
        ctx.within(ctx.stack_base, ctx.stack_size),
        ctx.within(0, ctx.memory_size),
        ctx.within(ctx.memory_base, ctx.memory_size),
        st.integers(0, 2**64 - 1),
        st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64 - 8]),
    )


def threads(ctx: Context) -> st.SearchStrategy[bytes]:
    pid = ctx.pid
    return st.sampled_from([b"p%x.1" % pid, b"1", b"-1", b"0", b"p-1.-1", b"p%x.-1" % pid, b"p%x.1" % (pid + 1),
                            b"p%x.2" % pid, b"2", b"pz.1", b"", b"p.", b"p%x" % pid])


def payloads(ctx: Context) -> st.SearchStrategy[bytes]:
    """Mostly well-formed requests aimed at the guest's real addresses, plus
    arbitrary bytes."""
    addr, num, thread = addresses(ctx), numbers(), threads(ctx)
    hexdata = st.binary(max_size=12).map(lambda b: b.hex().encode())
    action = st.one_of(
        st.sampled_from([b";c", b";s", b";t", b";C05", b";S0b", b";x", b";", b";r"]),
        st.builds(lambda a, t: a + b":" + t, st.sampled_from([b";c", b";s", b";t"]), thread),
        st.builds(lambda a, b, t: b";r%x,%x" % (a, b) + t, addr, addr, st.sampled_from([b"", b":-1"]) | thread.map(
            lambda t: b":" + t)),
    )
    file_path = st.sampled_from(["/etc/passwd", "", ".", "..", "/proc/self/mem", "a" * 300]) | st.text(max_size=20)
    site = ctx.site()
    weighted = [
        # What moves the guest: breakpoints at real sites, resumes, range steps.
        (6, st.builds(lambda z, a: b"%c0,%x,1" % (z, a), st.sampled_from(b"ZZz"), site)),
        (5, st.sampled_from([b"c", b"s", b"vCont;c", b"vCont;s", b"vCont;s:p%x.1" % ctx.pid, b"C05", b"S05",
                             b"vCont;c:-1", b"?"])),
        (2, st.builds(lambda a, n: b"vCont;r%x,%x:p%x.1" % (a, a + n, ctx.pid), site, st.integers(0, 0x800))),
        (3, st.builds(lambda a, n: b"m%x,%x" % (a, n), addr, num)),
        (2, st.sampled_from(FIXED_PAYLOADS)),
        (1, st.builds(lambda a, n: b"x%x,%x" % (a, n), addr, num)),
        (1, st.builds(lambda a, n, d: b"M%x,%x:%s" % (a, n, d), addr, num, hexdata)),
        (1, st.builds(lambda a, d: b"X%x,%x:%s" % (a, len(d), d), addr, st.binary(max_size=12))),
        (1, st.builds(lambda z, t, a, k: b"%c%c,%x,%x" % (z, t, a, k), st.sampled_from(b"Zz"),
                      st.sampled_from(b"012345"), addr, st.sampled_from([1, 0, 8, 2**64 - 1]))),
        (1, st.builds(lambda n: b"p%x" % n, st.integers(0, 80) | num)),
        (1, st.builds(lambda n, v: b"P%x=%s" % (n, v), st.integers(0, 80) | num, hexdata)),
        (1, st.builds(lambda d: b"G" + d, hexdata | st.just(ctx.g_hex))),
        (1, st.builds(lambda c, a: c + b"%x" % a, st.sampled_from([b"c", b"s"]), addr)),
        (1, st.builds(lambda c, sig, a: c + b"%02x" % sig + a, st.sampled_from([b"C", b"S"]), st.integers(0, 255),
                      st.just(b"") | addr.map(lambda a: b";%x" % a))),
        (1, st.builds(lambda acts: b"vCont" + b"".join(acts), st.lists(action, max_size=3))),
        (1, st.builds(lambda op, t: b"H%c%s" % (op, t), st.sampled_from(b"gcx"), thread)),
        (1, st.builds(lambda t: b"T" + t, thread)),
        (1, st.builds(lambda t: b"qRcmd," + hexs(t), st.sampled_from(MONITOR_TEXTS) | st.text(max_size=16))),
        (1, st.builds(lambda o, a, off, n: b"qXfer:%s:read:%s:%x,%x" % (o, a, off, n),
                      st.sampled_from([b"features", b"libraries-svr4", b"libraries", b"auxv", b"exec-file", b"bogus"]),
                      st.sampled_from([b"target.xml", b"i386-64bit.xml", b"", b"../target.xml", b"%00"]), num, num)),
        (1, st.builds(lambda a: b"qMemoryRegionInfo:%x" % a, addr)),
        (1, st.builds(lambda n: b"qRegisterInfo%x" % n, st.integers(0, 70) | num)),
        (1, st.builds(lambda p, f, m: b"vFile:open:%s,%x,%x" % (hexs(p), f, m), file_path,
                      st.sampled_from([0, 1, 2, 0x200, 0x400]) | num, st.sampled_from([0, 0o644]) | num)),
        (1, st.builds(lambda fd, n, off: b"vFile:pread:%x,%x,%x" % (fd, n, off), st.integers(0, 8) | num, num, num)),
        (1, st.builds(lambda fd, off, d: b"vFile:pwrite:%x,%x,%s" % (fd, off, d), st.integers(0, 8), num,
                      st.binary(max_size=8))),
        (1, st.builds(lambda c, fd: b"vFile:%s:%x" % (c, fd), st.sampled_from([b"close", b"fstat"]),
                      st.integers(0, 8) | num)),
        (1, st.builds(lambda c, p: b"vFile:%s:%s" % (c, hexs(p)), st.sampled_from([b"unlink", b"readlink"]),
                      file_path)),
        (1, st.builds(lambda pid: b"D;%x" % pid, st.sampled_from([ctx.pid + 1, 0]) | num)),
        (1, st.builds(lambda pid: b"vKill;%x" % pid, st.sampled_from([ctx.pid, ctx.pid + 1]) | num)),
        # Numbers that are not hex, or not numbers at all, where the parser wants hex.
        (2, st.builds(lambda c, a, b: c + a + b"," + b,
                      st.sampled_from([b"m", b"x", b"M", b"Z0,", b"z1,", b"p", b"P", b"X", b"c", b"vFile:pread:",
                                       b"qXfer:features:read:target.xml:", b"qMemoryRegionInfo:", b"vCont;r"]),
                      st.text(alphabet="0123456789abcdefABCDEFgxz-+ :;=", max_size=24).map(str.encode),
                      st.text(alphabet="0123456789abcdefgxz-:=", max_size=24).map(str.encode))),
        (1, st.binary(max_size=40)),
    ]
    return st.one_of([strategy for weight, strategy in weighted for _ in range(weight)])


def _recompute(framed: bytes) -> bytes:
    """Fixes the checksum of a mutated ``$body#cs`` (the body is what lies
    between the first '$' and the last '#')."""
    body = framed[1:framed.rindex(b"#")]
    return b"$%s#%02x" % (body, sum(body) % 256)


@st.composite
def mutated_packet(draw, ctx: Context) -> bytes:
    payload = draw(payloads(ctx))
    framed = frame(payload)
    kind = draw(st.sampled_from(["as-is"] * 4 + ["checksum", "truncate", "insert", "flip", "rle", "escape",
                                                   "oversize", "rle-bomb", "lowercase-trailer"]))
    body_end = len(framed) - 3
    if kind == "checksum":
        return framed[:-2] + bytes(draw(st.lists(st.sampled_from(HEX_DIGITS + b"xyz#$\x03"), min_size=2,
                                                  max_size=2)))
    if kind == "truncate":
        return framed[:draw(st.integers(1, len(framed) - 1))]
    if kind == "insert":
        at = draw(st.integers(1, len(framed)))
        junk = draw(st.binary(min_size=1, max_size=3) | st.sampled_from(SPECIAL_BYTES).map(lambda b: bytes([b])))
        out = framed[:at] + junk + framed[at:]
        return _recompute(out) if draw(st.booleans()) and b"#" in out[1:] else out
    if kind == "flip" and body_end > 1:
        at = draw(st.integers(1, body_end - 1))
        out = bytearray(framed)
        out[at] ^= 1 << draw(st.integers(0, 7))
        out = bytes(out)
        return _recompute(out) if draw(st.booleans()) and out.count(b"#") else out
    if kind == "rle" and body_end > 1:
        at = draw(st.integers(1, body_end))
        count = draw(st.sampled_from(b" !\"#$%&~\x1f\x7f}*") | st.integers(0, 255))
        return _recompute(framed[:at] + b"*" + bytes([count]) + framed[at:])
    if kind == "escape" and body_end > 1:
        at = draw(st.integers(1, body_end - 1))
        return _recompute(framed[:at] + b"}" + bytes([framed[at] ^ 0x20]) + framed[at + 1:])
    if kind == "oversize":
        body = framed[1:body_end] or b"m"
        big = (body * (2 * PACKET_SIZE // len(body) + 2))[:draw(st.integers(PACKET_SIZE - 8, 3 * PACKET_SIZE))]
        return frame(big)
    if kind == "rle-bomb":
        # A short body whose run-length encoding decodes past the packet size.
        return frame(b"m0" + b"0*~" * draw(st.integers(PACKET_SIZE // 97 - 2, PACKET_SIZE // 97 + 4)))
    if kind == "lowercase-trailer":
        return framed[:-2] + framed[-2:].upper()
    return framed


def stream_items(ctx: Context) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_packet(ctx), mutated_packet(ctx), mutated_packet(ctx),
        st.sampled_from([b"\x03", b"+", b"-", b"$", b"#", b"}", b"$#00"]),
        st.binary(min_size=1, max_size=24),
    )


class Guard:
    """Wraps ``session._dispatch``: answers state-changing requests that would
    succeed with ``E01`` (see the module docstring), and records what every
    request got."""

    def __init__(self, guest: GuestHarness):
        self.guest = guest
        self.session = guest.session
        self.inner = guest.session._dispatch
        self.answered: list[tuple[P.Request, bytes | None]] = []

    def _refuse(self, request: P.Request) -> bool:
        target = self.guest.target
        if isinstance(request, (P.Kill, P.VKill)):
            return True
        if isinstance(request, MEMORY_WRITES):
            region = target.region_at(request.addr)
            return region is not None and region.write is not None
        if isinstance(request, P.WriteRegister):
            return request.regnum < len(arch_amd64.REGISTERS)
        if isinstance(request, P.WriteRegisters):
            return len(request.data) == arch_amd64.G_PACKET_SIZE
        return False

    def __call__(self, request: P.Request) -> bytes | None:
        if self._refuse(request):
            result = R.error(0x01)
        else:
            result = self.inner(request)
        self.check(request, result)
        self.answered.append((request, result))
        return result

    def check(self, request: P.Request, result: bytes | None) -> None:
        if result is None:
            assert isinstance(request, DEFERRED), f"{request!r} got no reply"
            if isinstance(request, RESUMES):
                assert self.session.waiting_for_stop, f"{request!r}: no reply and not waiting for a stop"
            return
        assert isinstance(result, bytes), (request, result)
        if isinstance(request, P.MalformedPacket):
            assert ERROR_RE.fullmatch(result), (request, result)
        elif result[:1] == b"E" and not isinstance(request, BINARY_REPLIES):
            assert ERROR_RE.fullmatch(result), (request, result)
        if isinstance(request, P.ReadMemory):
            assert len(result) <= PACKET_SIZE, (request, len(result))


class FuzzDriver:
    """Plays the transport for one guest, checking every chunk's output."""

    def __init__(self, guest: GuestHarness):
        self.guest = guest
        self.session = guest.session
        self.guard = Guard(guest)
        self.session._dispatch = self.guard  # the instance attribute shadows the method receive() calls
        conn = self.session.conn
        self.events: list = []
        feed = conn.framer.feed

        def recording_feed(data):
            events = feed(data)
            self.events.extend(events)
            return events
        conn.framer.feed = recording_feed
        self.replies: list[bytes] = []
        reply = conn.reply

        def recording_reply(payload):
            self.replies.append(payload)
            reply(payload)
        conn.reply = recording_reply

    def feed(self, chunk: bytes) -> list:
        ack_mode = not self.session.conn.no_ack
        self.events.clear()
        self.replies.clear()
        last = self.session.conn.last_packet
        self.session.receive(chunk)
        items = parse_stream(self.session.take_output())
        complete = sum(isinstance(e, (PacketReceived, InvalidEncoding, PacketTooLong)) for e in self.events)
        bad = sum(isinstance(e, BadChecksum) for e in self.events)
        if ack_mode:
            assert items.count("+") == complete and items.count("-") == bad, (chunk[:200], items[:20])
        else:
            assert "+" not in items and "-" not in items, items[:20]
        packets = [i for i in items if isinstance(i, bytes)]
        # Everything sent is a reply of this chunk or a retransmission of the last one.
        expected = list(self.replies)
        for packet in packets:
            if expected and packet == expected[0]:
                expected.pop(0)
            else:
                assert packet in (self.replies + [_payload_of(last)]), (packet[:80], self.replies)
        assert not expected, f"replies never sent: {expected!r}"
        return packets

    def pump(self, patience: float = 0.0) -> list:
        """Hands the guest's news to the session; with ``patience``, first
        waits that long for news if a resume is outstanding."""
        self.replies.clear()
        if patience and self.session.waiting_for_stop:
            self.guest.news.wait(patience)
        self.guest.pump()
        packets = [i for i in parse_stream(self.session.take_output()) if isinstance(i, bytes)]
        assert packets == self.replies
        return packets


def _payload_of(framed: bytes | None) -> bytes | None:
    """The payload of the last framed packet (what a '-' retransmits)."""
    if framed is None:
        return None
    return parse_stream(framed)[0]


@pytest.fixture(scope="module")
def demo_module():
    engine = codemem.Engine(debug=True)
    return codemem.Module(engine, DEMO_WASM.read_bytes(), name="demo.O0")


def run_stream(module, draw_stream, *, no_ack: bool, record_events: bool = True) -> None:
    guest = GuestHarness(module)
    try:
        if no_ack:
            guest.handshake()
        ctx = Context(guest, guest.ask(b"g"))
        driver = FuzzDriver(guest)
        chunks, patience = draw_stream(ctx)
        for chunk in chunks:
            driver.feed(chunk)
            driver.pump(patience)
            if guest.session.finished:
                break  # the transport closes the connection after D (or k)
        target = guest.target
        note = event if record_events else (lambda text: None)
        note("guest " + ("exited" if target.exited else "stopped" if target.is_stopped else "running")
              + (", session finished" if guest.session.finished else ""))
        for request, result in driver.guard.answered:
            if isinstance(request, RESUMES) and result is None:
                note("a resume was accepted")
            if isinstance(request, P.InsertBreakpoint) and result == b"OK":
                note("a breakpoint was inserted")
            if isinstance(request, P.MalformedPacket):
                note("a malformed packet was answered")
        if not guest.session.finished:
            # Resynchronise on '$' whatever state the framer was left in.
            driver.feed(frame(b"qC"))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and guest.session.waiting_for_stop:
                driver.pump()
                time.sleep(0.005)
            packets = driver.feed(frame(b"qC"))
            assert packets[-1] == b"QCp%x.1" % guest.target.pid or packets[-1] == b"QC1", packets
            packets = driver.feed(frame(b"D"))
            assert packets[-1] == b"OK", packets
        guest.session.client_gone()  # what the server does when the connection closes
        exited = guest.finish()
        assert exited is not None and exited.error is None, exited
        assert exited.results == [DEMO_RESULT]
        assert guest.code_is_pristine()
    finally:
        guest.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


#: How long the transport waits for the guest after a chunk: not at all (the
#: guest's news races the next packets) or until it stops.
PATIENCE = st.sampled_from([0.0, 1.0])

FUZZ_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                 HealthCheck.data_too_large])


@FUZZ_SETTINGS
@given(data=st.data(), no_ack=st.booleans())
def test_packet_streams_leave_the_guest_intact(demo_module, data, no_ack):
    def draw_stream(ctx):
        items = data.draw(st.lists(stream_items(ctx), max_size=16), label="items")
        cuts = data.draw(st.lists(st.integers(0, 2**16), max_size=6), label="cuts")
        return split(b"".join(items), cuts), data.draw(PATIENCE, label="patience")
    run_stream(demo_module, draw_stream, no_ack=no_ack)


@FUZZ_SETTINGS
@given(data=st.data())
def test_well_formed_request_sequences_leave_the_guest_intact(demo_module, data):
    """Valid framing, so every request reaches the session: resumes,
    breakpoints, steps and reads in any order."""
    def draw_stream(ctx):
        packets = st.one_of(payloads(ctx).map(frame), st.just(b"\x03"))
        return data.draw(st.lists(packets, max_size=24), label="packets"), data.draw(PATIENCE, label="patience")
    run_stream(demo_module, draw_stream, no_ack=True)


@pytest.mark.parametrize("stream", [
    b"$m%x,\x034#00",                       # 0x03 inside a body is data, not an interrupt
    b"$c#63\x03\x03$?#3f",                   # interrupts while the guest runs to its end
    b"$s#73\x03$g#67",                       # interrupt racing a step
    b"$Z0,%x,1#00$mffffffffffffffff,ffffffffffffffff#00",
    b"$vCont;r0,ffffffffffffffff#00",        # range step over all of memory: runs to the end
    b"$" + b"m0" * PACKET_SIZE + b"#00$qC#b4",  # oversized, then resynchronised
    b"$m0,1*~*~*~*~*~#00",                   # run-length encoding past the length field
    b"$QStartNoAckMode#b0$c#00$g#00",        # no-ack: bad checksums are accepted
])
def test_handpicked_streams(demo_module, stream):
    def draw_stream(ctx):
        data = stream.replace(b"%x", b"%x" % ctx.sites[0]) if b"%x" in stream else stream
        # Fix every '#00' checksum except in the no-ack case, where they stay wrong on purpose.
        if not data.startswith(b"$QStartNoAckMode"):
            data = b"$".join(_fix(part) for part in data.split(b"$"))
        return [data], 0.5
    run_stream(demo_module, draw_stream, no_ack=False, record_events=False)


def _fix(part: bytes) -> bytes:
    if b"#00" not in part:
        return part
    body, _, rest = part.partition(b"#00")
    return b"%s#%02x%s" % (body, sum(body) % 256, rest)
