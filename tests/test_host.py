"""The many-Store session over real TCP, packet by packet: a DebugHost in this
process (tests/hostkit.py LoopHost) and a minimal RSP client (test_server's).

What gdb hides is checked here: the exact replies to ``!``, ``?`` with nothing
attached, ``vAttach`` (SIGSTOP, ``thread:pPID.1``), the osdata document,
lldb's ``qfProcessInfo``, error strings naming why an attach is refused,
``vKill`` of one Store, and replies tagged with the Store they concern.
"""
from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET

import pytest

from hostkit import LoopHost
from test_server import Client
from test_session import parse_stop

TIMEOUT = 10.0


@pytest.fixture
def host(tmp_path):
    loop_host = LoopHost(tmp_path, long_workers=("a", "b"), short_workers=1)
    yield loop_host
    loop_host.close()


def connect(host: LoopHost, *, error_strings: bool = True) -> Client:
    client = Client(int(host.address.rsplit(":", 1)[1]))
    assert client.ask(b"qSupported:multiprocess+;swbreak+").startswith(b"PacketSize=")
    assert client.ask(b"QStartNoAckMode") == b"OK"
    client.no_ack = True
    assert client.ask(b"!") == b"OK"
    if error_strings:
        assert client.ask(b"QEnableErrorStrings") == b"OK"
    return client


def error_text(reply: bytes) -> str:
    match = re.fullmatch(rb"E([0-9a-f]{2});([0-9a-f]*)", reply)
    assert match, reply
    return bytes.fromhex(match.group(2).decode()).decode()


def test_the_extended_host_advertises_osdata_and_has_no_process_at_first(host):
    client = connect(host)
    try:
        assert client.ask(b"?") == b"W00"
        assert client.ask(b"qfThreadInfo") == b"l"
        assert client.ask(b"qC").startswith(b"E02")
    finally:
        client.close()


def test_osdata_lists_every_live_store_with_its_module_entry_and_state(host):
    a, b = host.wait_for("a"), host.wait_for("b")
    client = connect(host)
    try:
        reply = client.ask(b"qXfer:osdata:read:processes:0,fffff")
        assert reply[:1] == b"l"
        root = ET.fromstring(reply[1:].decode().split("\n", 2)[-1])
        rows = {int(item.find("column[@name='pid']").text): {c.get("name"): c.text for c in item}
                for item in root.findall("item")}
        assert {a, b} <= set(rows)
        assert rows[a]["command"] == "bench_loop.O0 call_loop" and rows[a]["state"] == "running"
        types = client.ask(b"qXfer:osdata:read::0,fff")
        assert b"processes" in types
    finally:
        client.close()


def test_vattach_answers_sigstop_tagged_with_the_store_and_d_pid_lets_it_go(host):
    a = host.wait_for("a")
    client = connect(host)
    try:
        kind, signal, pairs = parse_stop(client.ask(b"vAttach;%x" % a))
        assert (kind, signal, pairs["thread"]) == ("T", 0x11, "p%x.1" % a)
        assert client.ask(b"qfThreadInfo") == b"mp%x.1" % a
        assert client.ask(b"qAttached:%x" % a) == b"1"
        assert client.ask(b"D;%x" % a) == b"OK"
        assert client.ask(b"?") == b"W00"  # extended mode: still connected, nothing attached
        assert host.host.owner_of(a) is None
    finally:
        client.close()


def test_an_attach_refused_says_why(host):
    a = host.wait_for("a")
    gone = host.ended_store("b0")
    first, second = connect(host), connect(host)
    try:
        assert "no Store 999999" in error_text(second.ask(b"vAttach;%x" % 999999))
        text = error_text(second.ask(b"vAttach;%x" % gone))
        assert f"no Store {gone}" in text
        assert first.ask(b"vAttach;%x" % a).startswith(b"T11")
        reply = second.ask(b"vAttach;%x" % a)
        assert reply.startswith(b"E10;") and "being debugged by another client" in error_text(reply)
        assert first.ask(b"D;%x" % a) == b"OK"
        assert second.ask(b"vAttach;%x" % a).startswith(b"T11")
        assert second.ask(b"D;%x" % a) == b"OK"
    finally:
        first.close()
        second.close()


def test_registers_and_breakpoints_follow_hg_between_two_attached_stores(host):
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a, tick_b = host.site_pc(a, "tick"), host.site_pc(b, "tick")
    client = connect(host)
    try:
        assert client.ask(b"vAttach;%x" % a).startswith(b"T11")
        assert client.ask(b"vAttach;%x" % b).startswith(b"T11")
        assert client.ask(b"Hgp%x.1" % a) == b"OK"
        assert client.ask(b"Z0,%x,1" % tick_a) == b"OK"
        assert client.ask(b"Z0,%x,1" % tick_b).startswith(b"E14")  # B's address is not in A's code
        assert client.ask(b"Hgp%x.1" % b) == b"OK"
        rip_b = int.from_bytes(bytes.fromhex(client.ask(b"p10").decode()), "little")
        assert client.ask(b"p10;thread:p%x.1;" % a) != client.ask(b"p10")
        # Resume A only: its breakpoint stops it, tagged with A's pid; B stays where it was.
        kind, _, pairs = parse_stop(client.ask(b"vCont;c:p%x.-1" % a))
        assert pairs["thread"] == "p%x.1" % a and int.from_bytes(bytes.fromhex(pairs["10"]), "little") == tick_a
        # The stop made A the current thread (as gdbserver does); B did not move.
        assert int.from_bytes(bytes.fromhex(client.ask(b"p10").decode()), "little") == tick_a
        assert int.from_bytes(bytes.fromhex(client.ask(b"p10;thread:p%x.1;" % b).decode()), "little") == rip_b
        assert host.raw_bytes(a, tick_a)[:1] == b"\xe8" and host.raw_bytes(b, tick_b)[:1] == b"\x0f"
        assert client.ask(b"vKill;%x" % b) == b"OK"
        assert client.ask(b"qfThreadInfo") == b"mp%x.1" % a
        assert client.ask(b"D") == b"OK"
    finally:
        client.close()
    assert host.pristine(a) is True


def test_lldbs_process_list_names_each_store(host):
    a = host.wait_for("a")
    client = connect(host)
    try:
        first = client.ask(b"qfProcessInfo")
        seen = [first]
        while True:
            reply = client.ask(b"qsProcessInfo")
            if reply.startswith(b"E"):
                break
            seen.append(reply)
        pids = [int(re.search(rb"(?:^|;)pid:(\d+);", r).group(1)) for r in seen]  # decimal, as lldb-server
        assert a in pids
        mine = seen[pids.index(a)]
        name = bytes.fromhex(re.search(rb"name:([0-9a-f]+);", mine).group(1).decode()).decode()
        assert name == "bench_loop.O0:call_loop"
        only = client.ask(b"qfProcessInfo:pid:%d;" % a)
        assert only.startswith(b"pid:%d;" % a) and client.ask(b"qsProcessInfo").startswith(b"E")
    finally:
        client.close()


def test_serve_refuses_extended_mode_packets_with_a_reason(tmp_path):
    """A plain single-Store server: `!`, vAttach and qfProcessInfo are refused on purpose."""
    from test_session import GuestHarness, demo_module  # noqa: F401
    import codemem
    from test_session import DEMO_WASM
    module = codemem.Module(codemem.Engine(debug=True), DEMO_WASM.read_bytes(), name="demo.O0")
    guest = GuestHarness(module)
    try:
        guest.handshake()
        guest.ask(b"QEnableErrorStrings")
        assert "use `target remote`" in error_text(guest.ask(b"!"))
        assert "no attach" in error_text(guest.ask(b"vAttach;1"))
        assert "no process list" in error_text(guest.ask(b"qfProcessInfo"))
        assert "no run" in error_text(guest.ask(b"vRun;"))
    finally:
        guest.close()


def test_guest_code_runs_without_the_gil(tmp_path):
    """While one Store's guest code runs (a long call_loop on another thread),
    this thread keeps running Python: cffi releases the GIL for the call into
    guest code, so Stores run in parallel with each other and with the host."""
    host = LoopHost(tmp_path, long_workers=("a",), short_workers=0)
    try:
        a = host.wait_for("a")
        target = host.host.target(a)
        progress, deadline = 0, time.monotonic() + 0.3
        while time.monotonic() < deadline:
            progress += 1
        assert target.is_running and target.exited is None, "A's run ended: the check proves nothing"
        assert progress > 1000
    finally:
        host.close()


def test_a_trap_in_an_attached_store_stops_with_its_signal(tmp_path):
    """With a debugger attached, a trapping Store stops with the trap's
    signal (SIGILL for unreachable) instead of being logged."""
    from hostkit import HostProcess, run_gdb
    from stubproc import example
    process = HostProcess(tmp_path / "host", [str(example("loops.O0")), "--invoke", "must_be_positive", "0",
                                              "--workers", "1", "--hold"])
    try:
        deadline = time.monotonic() + 20
        run = None
        while time.monotonic() < deadline:
            run = run_gdb(process.address, [
                "python\n"
                "out = gdb.execute('info os processes', to_string=True)\n"
                "held = [l.split()[0] for l in out.splitlines()[1:] if ' held ' in l]\n"
                "gdb.execute('attach ' + held[0]) if held else print('NOTHING HELD')\n"
                "end",
                "continue", "bt 1", "kill"])
            if "NOTHING HELD" not in run.output:
                break
            time.sleep(0.2)
        assert "Program received signal SIGILL" in run.output, f"{run}\n{process.stderr[-2000:]}"
        assert re.search(r"must_be_positive \(x=0\) at examples/loops\.c:\d+", run.output), str(run)
    finally:
        process.stop()


@contextlib.contextmanager
def two_attached_with_b_late(host: LoopHost, delay: float):
    """A client attached to Stores ``a`` and ``b``, a breakpoint at A's tick,
    and B's guest thread made ``delay`` seconds late handing over its stops
    (as a loaded machine can make it): yields (client, a, b, tick_a, B's
    target, the times B's stops arrived)."""
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a = host.site_pc(a, "tick")
    client = connect(host)
    target_b = None
    try:
        assert client.ask(b"vAttach;%x" % a).startswith(b"T11")
        assert client.ask(b"vAttach;%x" % b).startswith(b"T11")
        assert client.ask(b"Hgp%x.1" % a) == b"OK"
        assert client.ask(b"Z0,%x,1" % tick_a) == b"OK"
        target_b = host.host.target(b)
        on_event = target_b.store.debug_handler
        late = []

        def late_event(*args):
            late.append(time.monotonic())
            time.sleep(delay)
            on_event(*args)

        target_b.store.debug_handler = late_event
        try:
            yield client, a, b, tick_a, target_b, late
        finally:
            target_b.store.debug_handler = on_event
    finally:
        client.close()


def test_after_an_all_stop_stop_the_next_request_waits_for_the_other_stores_stop(host):
    """All-stop: A's stop reply goes out at once, and B, told to stop, stops
    at its next sequence point.  gdb may ask for B's registers right away
    (`info threads`): the answer waits for B's stop instead of refusing a
    running Store.  B's stop is made 0.2 s late here."""
    with two_attached_with_b_late(host, 0.2) as (client, a, b, tick_a, target_b, late):
        _, _, pairs = parse_stop(client.ask(b"vCont;c"))
        assert pairs["thread"] == "p%x.1" % a
        registers = client.ask(b"p10;thread:p%x.1;" % b)
        assert late, "B stopped only after A's stop was reported"
        assert re.fullmatch(rb"[0-9a-f]{16}", registers), registers
        assert client.ask(b"D;%x" % b) == b"OK"
        assert client.ask(b"z0,%x,1" % tick_a) == b"OK"
        assert client.ask(b"D;%x" % a) == b"OK"
    assert host.pristine(a) is True and host.pristine(b) is True


def test_a_store_in_a_host_function_is_waited_for_briefly_then_answers_as_running(host, monkeypatch):
    """The same all-stop wait for a Store whose thread is in a host function
    (which may block on input indefinitely): only _QUIET_STOP_WAIT_IN_HOST_S,
    then the request is answered and the Store answers as running (here its
    stop comes 2 s late, and the general wait is set far longer, so only the
    host-function bound can answer first)."""
    from gdbstub import session as session_module

    monkeypatch.setattr(session_module, "_QUIET_STOP_WAIT_S", 30.0)
    with two_attached_with_b_late(host, 2.0) as (client, a, b, tick_a, target_b, _):
        target_b.store._in_host_function += 1  # as if B's thread were in an import (it is in late_event)
        try:
            _, _, pairs = parse_stop(client.ask(b"vCont;c"))
            assert pairs["thread"] == "p%x.1" % a
            assert error_text(client.ask(b"p10;thread:p%x.1;" % b)) == "the guest is running"
        finally:
            target_b.store._in_host_function -= 1
        assert client.ask(b"z0,%x,1" % tick_a) == b"OK"
        assert client.ask(b"D;%x" % a) == b"OK"
        assert client.ask(b"D;%x" % b) == b"OK"
    assert host.pristine(a) is True
