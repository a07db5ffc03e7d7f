"""``wasm-gdbstub host --http``: each HTTP request handled in a fresh Store.

A small threaded HTTP server (the standard library's ThreadingHTTPServer) in
front of a :class:`~gdbstub.host.DebugHost`.  Every request (GET or POST):

1. a fresh Store of the module is instantiated (WASI provided);
2. the body (at most ``REQUEST_MAX`` bytes) is written into linear memory at
   ``http_buffer(len)``, an export of the guest;
3. the handler export runs through the host (so it is a debuggable process
   while it runs): ``handler(ptr, len) -> i64``, the response's pointer in
   the high 32 bits and its length in the low 32;
4. the response bytes are read back out of linear memory and sent as
   ``200 text/plain``; a trap answers ``500`` with the trap and its wasm
   backtrace; the Store is closed.

At most ``workers`` requests run guest code at once; more wait their turn.
examples/http_handler.c is a handler in C (README, "Debugging one request
of many").
"""
from __future__ import annotations

import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import codemem

from . import runner
from .host import DebugHost, parse_listen

log = logging.getLogger(__name__)

#: The largest request body accepted (413 beyond).
REQUEST_MAX = 65536
#: The handler ABI's exports besides the handler itself.
BUFFER_EXPORT = "http_buffer"
MEMORY_EXPORT = "memory"


class HandlerError(Exception):
    """The guest does not follow the handler ABI; the message says how."""


def handle_request(host: DebugHost, factory, body: bytes) -> tuple[int, bytes]:
    """One request in a fresh Store: (HTTP status, response body)."""
    store, instance, handler = factory.instantiate()
    try:
        memory = instance.exports.get(MEMORY_EXPORT)
        make_buffer = instance.exports.get(BUFFER_EXPORT)
        if not isinstance(memory, codemem.Memory) or not isinstance(make_buffer, codemem.Func):
            raise HandlerError(f"the module must export `{MEMORY_EXPORT}` and `{BUFFER_EXPORT}(size) -> ptr`")
        pointer = make_buffer(len(body)) & 0xFFFFFFFF
        if pointer == 0 and body:
            return 413, b"the guest has no room for a body of this size\n"
        memory.write(pointer, body)
        exited = host.run_exited(handler, [pointer, len(body)])
        if exited.error is not None:
            if isinstance(exited.error, codemem.Trap):
                text = io.StringIO()
                runner._print_trap(exited.error, text)
                log.warning("Store %d: %s", store.id, text.getvalue().strip())
                return 500, text.getvalue().encode()
            raise exited.error
        results = exited.results or []
        if len(results) != 1 or not isinstance(results[0], int):
            raise HandlerError("the handler must return one i64: (pointer << 32) | length")
        packed = results[0] & 0xFFFFFFFFFFFFFFFF
        out_pointer, out_length = packed >> 32, packed & 0xFFFFFFFF
        if out_pointer + out_length > memory.data_len:
            raise HandlerError(f"the handler's response [{out_pointer:#x}, +{out_length:#x}) is outside "
                               f"linear memory ({memory.data_len:#x} bytes)")
        return 200, memory.read(out_pointer, out_length)
    finally:
        store.close()


class HttpFront:
    """The HTTP server (see the module docstring); :meth:`start` serves on a
    thread of its own and returns ``HOST:PORT``."""

    def __init__(self, host: DebugHost, factory, listen: str, *, allow_remote: bool = False, workers: int = 2):
        self.host = host
        self.factory = factory
        address = parse_listen(listen, allow_remote=allow_remote)
        self._slots = threading.BoundedSemaphore(max(1, workers))
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
                front._serve(self, b"")

            def do_POST(self) -> None:  # noqa: N802
                length_text = self.headers.get("Content-Length", "0")
                try:
                    length = int(length_text)
                except ValueError:
                    front._reply(self, 400, f"bad Content-Length {length_text!r}\n".encode())
                    return
                if not 0 <= length <= REQUEST_MAX:
                    front._reply(self, 413, f"the body may have at most {REQUEST_MAX} bytes\n".encode())
                    return
                front._serve(self, self.rfile.read(length))

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's signature)
                log.info("http %s: %s", self.address_string(), format % args)

        self.server = ThreadingHTTPServer(address, Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()
        host, port = self.server.server_address[:2]
        return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._slots:
            try:
                status, payload = handle_request(self.host, self.factory, body)
            except HandlerError as e:
                status, payload = 500, f"handler ABI: {e}\n".encode()
            except Exception as e:  # the outermost guard of a request: log it, answer 500, serve on
                log.exception("request failed")
                status, payload = 500, f"internal error: {e}\n".encode()
        self._reply(request, status, payload)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)
