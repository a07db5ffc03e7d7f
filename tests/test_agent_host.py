"""Conditions and watchpoints in a DebugHost with several Stores running the
same code (tests/hostkit.py LoopHost, packets over real TCP): each is put
into the Store the request resolved to, with veneers in that Store's own
hook area; another Store of the same module stays byte for byte pristine
and never stops for them."""
from __future__ import annotations

import time

import pytest

from hostkit import LoopHost
from test_host import connect
from test_session import parse_stop

#: Agent bytecode of a condition that is never true: const8 0; end.
FALSE_CONDITION = bytes([0x22, 0x00, 0x27])


@pytest.fixture
def host(tmp_path):
    loop_host = LoopHost(tmp_path, long_workers=("a", "b"), short_workers=0)
    yield loop_host
    loop_host.close()


def stack_pointer(host: LoopHost, store_id: int) -> int:
    """Store ``store_id``'s ``__stack_pointer`` (global 0 of clang's output):
    the -O0 frames of call_loop and tick are stored just around it."""
    return host._with_store(store_id, lambda store: store.instances[0].globals[0].get().value)


def watched_bytes(host: LoopHost, store_id: int, address: int) -> bytes:
    return host._with_store(store_id, lambda store: store.instances[0].memories[0].read(address, 0x80))


def has_hook_area(host: LoopHost, store_id: int) -> bool:
    return host._with_store(
        store_id, lambda store: getattr(store.registry.entries()[0].store_code, "_hook_area", None) is not None)


def test_a_condition_and_a_watchpoint_on_store_a_leave_store_b_running_the_same_code_untouched(host):
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a, tick_b = host.site_pc(a, "tick"), host.site_pc(b, "tick")
    client = connect(host)
    try:
        assert client.ask(b"vAttach;%x" % a).startswith(b"T11")
        assert client.ask(b"vAttach;%x" % b).startswith(b"T11")
        assert client.ask(b"Hgp%x.1" % a) == b"OK"
        condition = b";X%x,%s" % (len(FALSE_CONDITION), FALSE_CONDITION.hex().encode())
        assert client.ask(b"Z0,%x,1" % tick_a + condition) == b"OK"
        # B's tick is not in A's code: the request names A, so it is refused.
        assert client.ask(b"Z0,%x,1" % tick_b + condition).startswith(b"E14")
        # Both Stores run call_loop: their -O0 frames sit at the same linear
        # addresses, so a watchpoint leaking into B's code would stop B too.
        sp_a = stack_pointer(host, a)
        assert sp_a == stack_pointer(host, b)
        watched = sp_a - 64
        assert client.ask(b"Z2,%x,80" % watched) == b"OK"

        # A's tick site calls a veneer of A's hook area; B has none, its code is the engine's.
        assert host.raw_bytes(a, tick_a)[:1] == b"\xe8"
        assert has_hook_area(host, a) and not has_hook_area(host, b)
        assert host.pristine(b) is True
        assert "sites call their own veneer" in monitor(client, "patches")
        assert client.ask(b"Hgp%x.1" % b) == b"OK"
        assert "call their own veneer" not in monitor(client, "patches")

        # B runs the same loop and writes the same addresses: nothing stops it
        # until the interrupt.
        before = watched_bytes(host, b, watched)
        client.send(b"vCont;c:p%x.-1" % b)
        time.sleep(0.5)
        client.send_raw(b"\x03")
        kind, signal, pairs = parse_stop(client.packet())
        assert (kind, signal, pairs["thread"]) == ("T", 0x02, "p%x.1" % b)
        assert not {"watch", "rwatch", "awatch"} & set(pairs)
        assert watched_bytes(host, b, watched) != before  # B did write there
        assert host.pristine(b) is True

        # A stops at the first write into the watched range (and never at its
        # false condition), after the write.
        kind, signal, pairs = parse_stop(client.ask(b"vCont;c:p%x.-1" % a))
        assert (kind, signal, pairs["thread"]) == ("T", 0x05, "p%x.1" % a)
        assert "watch" in pairs, pairs
        assert watched <= int(pairs["watch"], 16) < watched + 0x80

        assert client.ask(b"Hgp%x.1" % a) == b"OK"
        assert client.ask(b"z2,%x,80" % watched) == b"OK"
        assert client.ask(b"z0,%x,1" % tick_a) == b"OK"
        assert client.ask(b"D;%x" % a) == b"OK"
        assert client.ask(b"D;%x" % b) == b"OK"
    finally:
        client.close()
    assert host.pristine(a) is True
    assert host.pristine(b) is True


def monitor(client, command: str) -> str:
    """The console text of ``monitor COMMAND`` (O packets, then OK)."""
    client.send(b"qRcmd," + command.encode().hex().encode())
    text = b""
    while True:
        packet = client.packet()
        if packet == b"OK":
            return text.decode()
        assert packet.startswith(b"O"), packet
        text += bytes.fromhex(packet[1:].decode())
