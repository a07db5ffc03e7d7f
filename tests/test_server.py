"""StubServer over real TCP on 127.0.0.1: clients that vanish, a second client,
``once``.

The server runs ``asyncio.run(server.serve())`` on a background thread, as
``wasm-gdbstub serve`` runs it on the main one.  The guest is a small module
whose ``main`` calls a host function ``gate(n)`` twice; the gate blocks the
guest thread (the guest is *running* as far as a debugger can tell) until the
test opens it, so a client can be made to vanish while the guest runs, while
it is stopped, or in the middle of a packet, deterministically:

    main() = gate(1); acc = square(7); gate(2); return acc + square(2)  -> 53

After a client vanishes the server must have detached: every patch site
disabled (the Store's code equal to the EngineCode's), the guest going on by
itself, and the next client accepted.  Every wait has a timeout.
"""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest
import wasmtime

import codemem
from gdbstub.server import StubServer, _Client
from gdbstub.session import SessionConfig
from gdbstub.target import StoreTarget

from test_session import DEMO_WASM, GuestHarness, frame, parse_stop, parse_stream, reg_value

TIMEOUT = 10.0
GATED_WAT = """
(module
  (import "env" "gate" (func $gate (param i32)))
  (func $square (param i32) (result i32)
    local.get 0
    local.get 0
    i32.mul)
  (func (export "main") (result i32)
    (local $acc i32)
    i32.const 1
    call $gate
    i32.const 7
    call $square
    local.set $acc
    i32.const 2
    call $gate
    local.get $acc
    i32.const 2
    call $square
    i32.add))
"""
GATED_RESULT = 7 * 7 + 2 * 2


def wait_until(condition, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Client:
    """A minimal RSP client over a real socket (ack mode until handshake)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        self.no_ack = False
        self.reset = False

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.send_raw(frame(payload))

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self.buffer += data
        return bool(data)

    def packet(self) -> bytes:
        """The next packet payload (acks skipped)."""
        while True:
            self.buffer = self.buffer.lstrip(b"+")
            end = self.buffer.find(b"#")
            if self.buffer.startswith(b"$") and end >= 0 and len(self.buffer) >= end + 3:
                raw, self.buffer = self.buffer[:end + 3], self.buffer[end + 3:]
                return parse_stream(raw)[0]
            if not self._fill():
                raise AssertionError(f"connection closed; unread {self.buffer!r}")

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.packet()

    def handshake(self) -> None:
        assert self.ask(b"qSupported:multiprocess+;swbreak+").startswith(b"PacketSize=")
        assert self.ask(b"QStartNoAckMode") == b"OK"
        self.no_ack = True

    def closed_by_peer(self) -> bytes:
        """Reads until EOF; returns everything read."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            # The server closed with our unread packet in its buffer, so its
            # kernel answered with RST; what it sent first was delivered.
            self.reset = True
        data, self.buffer = self.buffer, b""
        return data

    def close(self) -> None:
        self.sock.close()


class ServedGuest:
    """A gated guest, its StoreTarget and a StubServer on an ephemeral port."""

    def __init__(self, *, once: bool = False, open_gates: tuple[int, ...] = (), config: SessionConfig | None = None):
        engine = codemem.Engine(debug=True)
        self.module = codemem.Module(engine, wasmtime.wat2wasm(GATED_WAT), name="gated")
        self.store = codemem.Store(engine)
        self.gates = {1: threading.Event(), 2: threading.Event()}
        self.reached = {1: threading.Event(), 2: threading.Event()}
        for n in open_gates:
            self.gates[n].set()
        gate = codemem.Func(self.store, codemem.FuncType([codemem.ValType.I32], []), self._gate)
        self.instance = codemem.Instance(self.store, self.module, [gate])
        self.code = self.store.registry.entries()[0].store_code
        self.server: StubServer | None = None
        self.target = StoreTarget(self.store, self.instance, self.instance.exports["main"], [],
                                  notify=lambda: self.server.notify_from_guest())
        listening = threading.Event()
        self.server = StubServer(self.target, host="127.0.0.1", port=0, once=once, config=config,
                                 on_listening=lambda host, port: listening.set())
        self.result = None
        self.error: BaseException | None = None
        self.target.start(stop_at_entry=True)
        self.thread = threading.Thread(target=self._serve, name="stub-server", daemon=True)
        self.thread.start()
        assert listening.wait(TIMEOUT), "the server never listened"
        self.port = self.server.port
        self.clients: list[Client] = []

    def _gate(self, n: int) -> None:
        self.reached[n].set()
        # Bounded, so a failing test cannot leave the guest thread stuck.
        self.gates[n].wait(TIMEOUT * 3)

    def _serve(self) -> None:
        try:
            self.result = asyncio.run(self.server.serve())
        except BaseException as e:  # reported by the test
            self.error = e

    def connect(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def func_pc(self, name: str) -> int:
        table = self.code.frame_table
        for func in table.functions():
            if self.module.func_name(func.wasm_index) == name:
                return self.code.base + func.native_start
        raise KeyError(name)

    def is_main_site(self, pc: int) -> bool:
        table = self.code.frame_table
        func = table.function_at(self.code.offset_of(pc))
        return (func is not None and self.module.func_name(func.wasm_index) == "main"
                and table.site_index(self.code.offset_of(pc)) is not None)

    def pristine(self) -> bool:
        size = self.code.size
        return (not self.code.enabled_site_offsets()
                and self.code.read_raw(self.code.base, size) == self.code.engine_code.read(0, size))

    def wait_detached(self) -> None:
        """The server noticed the client is gone and detached the target."""
        wait_until(lambda: (self.server.session is None and not self.target.debugging
                            and not self.target.breakpoints and self.pristine()),
                   what="the server to detach")

    def wait_interrupt_armed(self) -> None:
        """The server has handled the client's interrupt: the guest's sites are
        armed (it is blocked in a gate, so it cannot have stopped yet)."""
        wait_until(lambda: len(self.code.enabled_site_offsets()) == self.code.frame_table.num_sites,
                   what="the interrupt to arm every site")

    def stopped_at_square_and_served(self):
        """A client that connected, set a breakpoint at square and continued
        to it, and its connection, once the stopped guest's thread serves it:
        (client, square's pc, connection)."""
        client = self.connect()
        client.handshake()
        square = self.func_pc("square")
        assert client.ask(b"Z0,%x,1" % square) == b"OK"
        assert reg_value(parse_stop(client.ask(b"c"))[2]["10"]) == square
        connection = self.server.clients[0]
        wait_until(lambda: connection.serving, what="the guest thread serving")
        return client, square, connection

    def interrupt_at_gate(self, client, gate: int) -> dict:
        """``client`` sends ^C while the guest is blocked in ``gate``; the
        gate opens once the interrupt armed every site: the stop reply is
        SIGINT, its pairs returned."""
        client.send_raw(b"\x03")
        self.wait_interrupt_armed()
        self.gates[gate].set()
        kind, signal, pairs = parse_stop(client.packet())
        assert (kind, signal) == ("T", 2), (kind, signal)  # SIGINT
        return pairs

    def finish(self) -> None:
        """Opens the gates and expects the server to end on its own with the
        guest's result."""
        for gate in self.gates.values():
            gate.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the server did not end after the guest did"
        assert self.error is None, repr(self.error)
        assert self.result is not None and self.result.results == [GATED_RESULT], self.result

    def shutdown(self) -> None:
        """Teardown: whatever happened, leave no thread behind."""
        for gate in self.gates.values():
            gate.set()
        for client in self.clients:
            client.close()
        self.thread.join(TIMEOUT)
        if self.thread.is_alive() and self.server._loop is not None and self.server._done is not None:
            self.server._loop.call_soon_threadsafe(self.server._done.set)
            self.thread.join(TIMEOUT)
        self.target.join(TIMEOUT)


@pytest.fixture
def served():
    made: list[ServedGuest] = []

    def make(**kwargs) -> ServedGuest:
        made.append(ServedGuest(**kwargs))
        return made[-1]
    yield make
    for guest in made:
        guest.shutdown()


PROBE = b"vFile:open:%s,0,1c0" % b"just probing".hex().encode()  # gdb's probe of Host I/O support


@pytest.mark.parametrize("transfer, local", [("auto", True), ("local", True), ("vfile", False)])
def test_a_loopback_client_reads_the_images_from_this_file_system_unless_vfile_is_asked_for(
        served, transfer, local):
    guest = served(open_gates=(1, 2), config=SessionConfig(image_transfer=transfer))
    client = guest.connect()
    client.handshake()
    # Local: Host I/O is "not supported" (the empty reply), so gdb opens the
    # library paths itself; else the probe is answered as a failed open.
    assert client.ask(b"vFile:setfs:0") == (b"" if local else b"F0")
    assert client.ask(PROBE) == (b"" if local else b"F-1,2")
    client.close()
    guest.finish()


def test_an_image_transfer_mode_is_decided_per_client():
    assert SessionConfig().for_client(True).files_are_local
    assert not SessionConfig().for_client(False).files_are_local
    assert SessionConfig(image_transfer="local").for_client(False).files_are_local
    assert not SessionConfig(image_transfer="vfile").for_client(True).files_are_local
    with pytest.raises(ValueError, match="image_transfer 'ftp'"):
        SessionConfig(image_transfer="ftp")


@pytest.mark.parametrize("peer, local", [
    (("127.0.0.1", 5), True), (("127.9.9.9", 5), True), (("::1", 5, 0, 0), True),
    (("::ffff:127.0.0.1", 5, 0, 0), True), (("10.0.0.2", 5), False), (("fe80::1", 5, 0, 2), False),
    ("", True), (None, False)])
def test_a_client_is_local_when_it_connects_from_loopback_or_a_unix_socket(peer, local):
    from gdbstub.server import _peer_is_local
    assert _peer_is_local(peer) is local


def test_the_guest_runs_to_its_result_under_a_client(served):
    guest = served(open_gates=(1, 2))
    client = guest.connect()
    client.handshake()
    square = guest.func_pc("square")
    assert client.ask(b"Z0,%x,1" % square) == b"OK"
    for _ in range(2):
        assert reg_value(parse_stop(client.ask(b"c"))[2]["10"]) == square
    assert client.ask(b"c") == b"W00;process:%x" % guest.target.pid
    client.close()
    guest.finish()


def test_stop_replies_come_from_the_guest_thread_unless_the_transport_is_busy(served, monkeypatch):
    """A stop's reply is written by the guest thread itself (no loop wake-up),
    which then serves the client's packets until a resume; when that path is
    not open (unsent data in the transport) the loop writes it, in order,
    takes the client's socket back, and the session sees the same
    conversation."""
    guest = served(open_gates=(1, 2))
    server = guest.server
    announced, answered = [], []
    original = StubServer._answer_on_guest_thread

    def recording(self, target):
        announced.append(threading.current_thread().name)
        result = original(self, target)
        answered.append(result)
        return result

    monkeypatch.setattr(StubServer, "_answer_on_guest_thread", recording)
    client = guest.connect()
    client.handshake()
    square = guest.func_pc("square")
    assert client.ask(b"Z0,%x,1" % square) == b"OK"
    assert reg_value(parse_stop(client.ask(b"c"))[2]["10"]) == square
    # (The reply may reach us before the recorder has appended.)
    wait_until(lambda: announced, what="the guest thread's answer")
    assert announced == [guest.target._thread.name]
    connection = server.clients[0]
    # The guest thread reads the next packet (it sets that right after its reply).
    wait_until(lambda: connection.guest_reads and connection.serving, what="the guest thread serving")
    # The transport reports unsent data: the guest thread hands over to the loop.
    monkeypatch.setattr(connection, "transport", _BusyTransport(connection.transport))
    assert reg_value(parse_stop(client.ask(b"c"))[2]["10"]) == square
    wait_until(lambda: len(answered) == 2, what="the guest thread's hand-over")
    assert announced == [guest.target._thread.name] * 2
    assert answered == [True, False]  # served the `c`, then left the stop to the loop
    wait_until(lambda: not connection.guest_reads, what="the loop reading again")
    monkeypatch.setattr(connection, "transport", connection.transport.inner)
    assert client.ask(b"c") == b"W00;process:%x" % guest.target.pid
    client.close()
    guest.finish()


def test_a_stopped_guest_thread_serves_the_packets_up_to_the_next_resume(served, monkeypatch):
    """After the first resume the loop reads nothing of the client's while
    the guest only stops and resumes: the stopped guest's thread reads and
    answers every packet (registers, memory, breakpoints, the resume)."""
    guest = served(open_gates=(1, 2))
    loop_reads = []
    original = StubServer._received

    def counting(self, client, data):
        loop_reads.append(data)
        return original(self, client, data)

    monkeypatch.setattr(StubServer, "_received", counting)
    client, square, connection = guest.stopped_at_square_and_served()
    read_by_loop = len(loop_reads)
    registers = client.ask(b"g")
    assert client.ask(b"g") == registers
    assert client.ask(b"m%x,4" % square) != b""
    assert reg_value(parse_stop(client.ask(b"c"))[2]["10"]) == square  # square(2)
    assert client.ask(b"z0,%x,1" % square) == b"OK"
    assert client.ask(b"c") == b"W00;process:%x" % guest.target.pid
    assert len(loop_reads) == read_by_loop
    assert connection.guest_read_count == 6
    client.close()
    guest.finish()


def test_a_continue_that_lasts_gives_the_socket_back_to_the_loop_for_an_interrupt(served):
    """A resume served by the guest thread into a long run: the loop takes
    the socket back (within two of its looks) and reads gdb's ^C."""
    guest = served(open_gates=(1,))
    client, square, connection = guest.stopped_at_square_and_served()
    assert client.ask(b"z0,%x,1" % square) == b"OK"
    client.send(b"c")  # read by the guest thread; the guest blocks in gate 2
    assert guest.reached[2].wait(TIMEOUT)
    wait_until(lambda: not connection.guest_reads, what="the loop taking the socket back")
    guest.interrupt_at_gate(client, 2)
    assert client.ask(b"D") == b"OK"
    assert client.closed_by_peer() == b""
    guest.finish()


def test_a_client_gone_while_its_guest_thread_serves_it(served):
    """The client vanishes while the stopped guest's thread waits for its
    next packet: the end of file goes to the loop, which detaches; the guest
    runs on, and the next client is served."""
    guest = served(open_gates=(1, 2))
    first, _, connection = guest.stopped_at_square_and_served()
    first.close()
    guest.wait_detached()
    wait_until(lambda: not connection.serving and connection.guest_write_fd is None,
               what="the guest thread to let go")
    guest.finish()


def test_the_server_closes_while_a_guest_thread_serves_a_client(served):
    """close() with a stopped guest's thread serving its client: the
    connection ends, the Store is detached and runs to its end, and the
    guest thread closes the descriptor it was reading."""
    guest = served(open_gates=(1, 2))
    client, _, connection = guest.stopped_at_square_and_served()
    guest.server.close()
    client.closed_by_peer()
    wait_until(lambda: not connection.serving and connection.guest_write_fd is None,
               what="the guest thread to let go")
    assert guest.target.join(TIMEOUT), "the guest did not run on"
    assert guest.pristine()


class _BusyTransport:
    """A transport that claims to hold unsent bytes (and writes through)."""

    def __init__(self, inner):
        self.inner = inner

    def get_write_buffer_size(self) -> int:
        return 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_client_gone_while_the_guest_runs(served):
    guest = served()
    first = guest.connect()
    first.handshake()
    assert first.ask(b"Z0,%x,1" % guest.func_pc("square")) == b"OK"
    first.send(b"c")
    assert guest.reached[1].wait(TIMEOUT)  # running (blocked in the host), breakpoint armed
    first.close()
    guest.wait_detached()

    # The next client attaches to the running guest: `?` stops it (an interrupt).
    second = guest.connect()
    second.handshake()
    second.send(b"?")
    guest.wait_interrupt_armed()
    guest.gates[1].set()
    kind, signal, pairs = parse_stop(second.packet())
    assert (kind, signal) == ("T", 2)  # SIGINT
    assert guest.is_main_site(reg_value(pairs["10"]))
    # The breakpoint died with the first client: `c` runs into gate 2.
    second.send(b"c")
    assert guest.reached[2].wait(TIMEOUT)
    guest.interrupt_at_gate(second, 2)
    assert second.ask(b"D") == b"OK"
    assert second.closed_by_peer() == b""
    guest.finish()


def test_client_gone_while_the_guest_is_stopped(served):
    guest = served(open_gates=(1,))
    first = guest.connect()
    first.handshake()
    square = guest.func_pc("square")
    first.ask(b"Z0,%x,1" % square)
    assert reg_value(parse_stop(first.ask(b"c"))[2]["10"]) == square
    assert guest.target.is_stopped
    first.close()
    guest.wait_detached()
    assert guest.reached[2].wait(TIMEOUT), "the guest did not go on after its client left"

    second = guest.connect()
    second.handshake()
    assert second.ask(b"qC") == b"QCp%x.1" % guest.target.pid
    second.send(b"?")
    guest.wait_interrupt_armed()
    guest.gates[2].set()
    assert parse_stop(second.packet())[:2] == ("T", 2)
    assert second.ask(b"c") == b"W00;process:%x" % guest.target.pid
    second.close()
    guest.finish()


def test_a_new_client_interrupts_a_guest_left_running(served):
    """A client that attaches to a guest an earlier client left running and
    sends ^C straight away (no `?` first) gets its stop."""
    guest = served()
    first = guest.connect()
    first.handshake()
    first.send(b"c")
    assert guest.reached[1].wait(TIMEOUT)
    first.close()
    guest.wait_detached()

    second = guest.connect()
    second.handshake()
    pairs = guest.interrupt_at_gate(second, 1)
    assert guest.is_main_site(reg_value(pairs["10"]))
    assert second.ask(b"D") == b"OK"
    second.close()
    guest.finish()


@pytest.mark.parametrize("partial", [b"$m1234,", b"$Z0,", b"$qSupported:multipro", b"$g#6", b"$" + b"m" * 40000])
def test_client_gone_in_the_middle_of_a_packet(served, partial):
    guest = served()
    first = guest.connect()
    first.handshake()
    assert first.ask(b"Z0,%x,1" % guest.func_pc("square")) == b"OK"
    first.send_raw(partial)
    first.close()
    guest.wait_detached()
    assert guest.reached[1].wait(TIMEOUT)  # released from its entry stop, running freely

    second = guest.connect()
    assert second.ask(b"qAttached") == b"1"  # ack mode: the '+' is skipped by the reader
    assert second.ask(b"D") == b"OK"
    second.close()
    guest.finish()


def test_once_serves_one_client_and_exits_when_the_guest_ends(served):
    guest = served(once=True)
    first = guest.connect()
    first.handshake()
    assert first.ask(b"D") == b"OK"
    assert first.closed_by_peer() == b""
    assert guest.reached[1].wait(TIMEOUT)

    late = guest.connect()
    refusal = late.closed_by_peer()
    match = re.fullmatch(rb"\$(E10;([0-9a-f]*))#[0-9a-f]{2}", refusal)
    assert match, refusal
    assert parse_stream(refusal) == [match.group(1)]
    assert b"one client" in bytes.fromhex(match.group(2).decode())
    assert guest.thread.is_alive()  # still waiting for the guest
    guest.finish()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", guest.port), timeout=2).close()


def test_once_after_a_client_vanished(served):
    guest = served(once=True, open_gates=(1, 2))
    first = guest.connect()
    first.handshake()
    first.send(b"g")
    first.close()
    guest.finish()


def test_a_second_client_is_refused_while_the_first_keeps_working(served):
    guest = served(open_gates=(1, 2))
    first = guest.connect()
    first.handshake()
    registers = first.ask(b"g")

    second = guest.connect()
    second.send(b"qSupported")  # what it says does not matter: it is refused
    refusal = second.closed_by_peer()
    match = re.fullmatch(rb"\$(E10;([0-9a-f]*))#[0-9a-f]{2}", refusal)
    assert match, refusal
    assert b"another debugger is attached" in bytes.fromhex(match.group(2).decode())

    assert first.ask(b"g") == registers
    square = guest.func_pc("square")
    assert first.ask(b"Z0,%x,1" % square) == b"OK"
    assert reg_value(parse_stop(first.ask(b"c"))[2]["10"]) == square
    assert first.ask(b"z0,%x,1" % square) == b"OK"
    assert first.ask(b"c").startswith(b"W00")
    first.close()
    guest.finish()


# ------------------------------------------------------------ a detach race

class _GuestHoldingLock:
    """Stands in for StoreTarget._lock: the first time the guest thread takes
    it, it waits until the test says go, so the controller's detach runs
    entirely inside the window between the guest's ``debugging`` check and its
    queueing of the stop."""

    def __init__(self, inner, guest_thread_name: str):
        self.inner = inner
        self.guest_thread_name = guest_thread_name
        self.guest_waiting = threading.Event()
        self.go = threading.Event()
        self.armed = True

    def __enter__(self):
        if self.armed and threading.current_thread().name == self.guest_thread_name:
            self.armed = False
            self.guest_waiting.set()
            self.go.wait(TIMEOUT)
        return self.inner.__enter__()

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def test_a_disconnect_racing_a_breakpoint_hit_releases_the_guest(demo_module):
    """The client vanishes (the server calls ``client_gone``, which detaches)
    just as the guest reaches an armed breakpoint: the guest must still run to
    its end, not stay blocked on a stop nobody will ever release."""
    guest = GuestHarness(demo_module)
    try:
        guest.handshake()
        assert guest.ask(b"Z0,%x,1" % guest.entry_pc("square")) == b"OK"
        lock = _GuestHoldingLock(guest.target._lock, f"guest-store{guest.target.pid}")
        guest.target._lock = lock
        assert guest.send(b"c") == []
        assert lock.guest_waiting.wait(TIMEOUT)  # the guest is inside its debug handler
        guest.session.client_gone()
        lock.go.set()
        finished = guest.target.join(5)
        assert finished, "the guest stayed blocked on a stop queued after the detach"
    finally:
        guest.target._lock = getattr(guest.target._lock, "inner", guest.target._lock)
        guest.close()


@pytest.fixture(scope="module")
def demo_module():
    engine = codemem.Engine(debug=True)
    return codemem.Module(engine, DEMO_WASM.read_bytes(), name="demo.O0")


def test_resumes_from_the_loop_thread_wait_for_the_end_of_its_callback():
    """The server's resume scheduler: on the loop thread the gate opens after
    the current callback (just before the loop polls again); elsewhere at once."""

    class FakeTarget:
        schedule_resume = None

    target = FakeTarget()
    server = StubServer(target)  # type: ignore[arg-type]
    assert target.schedule_resume == server._schedule_resume
    order: list[str] = []

    async def scenario():
        server._loop = asyncio.get_running_loop()
        server._loop_thread = threading.get_ident()
        target.schedule_resume(lambda: order.append("loop-thread open"))
        order.append("callback continues")
        other = threading.Thread(target=lambda: target.schedule_resume(lambda: order.append("other-thread open")))
        other.start()
        other.join()
        order.append("callback ends")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert order == ["callback continues", "other-thread open", "callback ends", "loop-thread open"]


def test_a_guest_thread_gives_the_socket_back_quietly_once_the_loop_has_closed():
    """A serving guest thread that must give its client's socket back after
    the server's loop has closed (the server stopped under it) does not
    raise into its guest's event callback: there is no loop left to read."""

    class FakeTarget:
        schedule_resume = None

    class FakeTransport:
        resumed = False

        def is_closing(self) -> bool:
            return False

        def resume_reading(self) -> None:
            self.resumed = True

    server = StubServer(FakeTarget())  # type: ignore[arg-type]

    async def scenario():
        server._loop = asyncio.get_running_loop()
        server._loop_thread = threading.get_ident()

    asyncio.run(scenario())
    assert server._loop.is_closed()
    transport = FakeTransport()
    client = _Client(None, transport, None, guest_reads=True)  # type: ignore[arg-type]
    server.clients.append(client)
    errors: list[BaseException] = []

    def give_back() -> None:
        try:
            server._return_reading_to_loop(client)
        except BaseException as e:  # reported by the test
            errors.append(e)

    other = threading.Thread(target=give_back)
    other.start()
    other.join()
    assert errors == []
    assert not client.guest_reads and not transport.resumed
