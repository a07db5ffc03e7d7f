"""Where a stub listens (gdbstub.listen) and the XML quoting of the qXfer
documents (gdbstub.protocol.xmltext), both kept free of heavy imports so
``serve`` can listen before it imports the session."""
import socket
from xml.sax.saxutils import escape as sax_escape
from xml.sax.saxutils import quoteattr as sax_quoteattr

import pytest

from gdbstub.listen import is_loopback, listening_socket, parse_listen
from gdbstub.protocol.xmltext import escape, quoteattr

SAMPLES = ["", "plain", "a&b", "<lib>", "x>y", 'say "hi"', "it's", "both \" and '", "tab\there",
           "line\nbreak\r", "/tmp/dir with space/demo.elf", "ünïcödé &amp;"]


@pytest.mark.parametrize("text", SAMPLES)
def test_xml_quoting_gives_what_saxutils_gives(text):
    assert escape(text) == sax_escape(text)
    assert quoteattr(text) == sax_quoteattr(text)


def test_a_literal_address_is_bound_and_listening_before_the_server_starts():
    sock = listening_socket("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0 and not sock.getblocking()
        with socket.create_connection((host, port), timeout=5):
            pass  # accepted into the backlog: nobody has called accept yet
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port)  # taken
    finally:
        sock.close()


def test_a_host_name_is_left_to_the_server():
    assert listening_socket("localhost", 0) is None


def test_listen_addresses_parse_and_remote_ones_need_permission():
    assert parse_listen("1234") == ("127.0.0.1", 1234)
    assert parse_listen("[::1]:99") == ("::1", 99)
    with pytest.raises(ValueError, match="not a loopback address"):
        parse_listen("10.1.2.3:5")
    assert parse_listen("10.1.2.3:5", allow_remote=True) == ("10.1.2.3", 5)
    with pytest.raises(ValueError, match="port must be a number"):
        parse_listen("host:x")
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("::ffff:10.0.0.1") and not is_loopback("example")
