"""A minimal Debug Adapter Protocol client for end-to-end tests with lldb-dap-22.

DAP messages are JSON bodies behind a ``Content-Length: N\\r\\n\\r\\n`` header, over
the adapter's stdin/stdout (the Debug Adapter Protocol specification, "Base
Protocol").  :class:`DapClient` sends requests and collects responses and events
on a reader thread; every wait has a deadline, and :meth:`close` kills exactly
the adapter process it started.
"""
from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from typing import Any

LLDB_DAP = shutil.which("lldb-dap-22") or "lldb-dap-22"


class DapError(AssertionError):
    """The adapter answered with success=false, or did not answer in time."""


class DapClient:
    def __init__(self, argv: list[str] | None = None, *, cwd: str | None = None):
        self.proc = subprocess.Popen(argv or [LLDB_DAP, "--no-lldbinit"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                     start_new_session=True)
        self._seq = 0
        self._responses: dict[int, dict] = {}
        self._events: "queue.Queue[dict]" = queue.Queue()
        self.events_seen: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name="dap-reader")
        self._reader.start()

    # ------------------------------------------------------------ wire

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                byte = stream.read(1)
                if not byte:
                    return
                header += byte
            length = next(int(line.split(b":")[1]) for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            body = stream.read(length)
            message = json.loads(body)
            if message.get("type") == "response":
                with self._cond:
                    self._responses[message["request_seq"]] = message
                    self._cond.notify_all()
            elif message.get("type") == "event":
                self.events_seen.append(message)
                self._events.put(message)
            elif message.get("type") == "request":
                # Reverse requests (runInTerminal, startDebugging): not used here.
                self._send({"type": "response", "request_seq": message["seq"], "success": False,
                            "command": message.get("command")})

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    # ------------------------------------------------------------ requests

    def send_request(self, command: str, arguments: dict | None = None) -> int:
        self._seq += 1
        self._send({"seq": self._seq, "type": "request", "command": command, "arguments": arguments or {}})
        return self._seq

    def response(self, seq: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DapError(f"no response to request {seq} within {timeout} s")
                self._cond.wait(left)
            return self._responses.pop(seq)

    def request(self, command: str, arguments: dict | None = None, *, timeout: float = 30.0) -> Any:
        """Sends a request and returns its response body; DapError if it failed."""
        reply = self.response(self.send_request(command, arguments), timeout)
        if not reply.get("success"):
            raise DapError(f"{command} failed: {reply.get('message')} {reply.get('body')}")
        return reply.get("body") or {}

    def wait_event(self, name: str, timeout: float = 30.0, **match) -> dict:
        """The next event called ``name`` whose body has the ``match`` items."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e.get("event") for e in self.events_seen]
                raise DapError(f"no {name} event {match} within {timeout} s (events: {seen})")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            body = event.get("body") or {}
            if event.get("event") == name and all(body.get(k) == v for k, v in match.items()):
                return event

    def close(self) -> str:
        """Ends the adapter (kills it if it does not exit) and returns its stderr."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        return err
