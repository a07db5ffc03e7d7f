#!/usr/bin/env python3
"""Benchmark: the stub's own cost per gdb ``next``, without gdb (issue 13).

gdb's ``next`` over examples/bench_loop.c's loop is periodic: two ``next``s
(line 25 -> 24 -> 25) send the same 16 packets every iteration.  This script
records them once (gdb 13 with ``set remotelogfile`` against a stub), then
replays them from a raw client against a fresh stub, ``--nexts`` times over,
and reads from /proc what the stub spent per ``next``:

* ``stub_cpu_ms_per_next``: the stub process's CPU time (user + system);
* ``switches_per_next``: voluntary + involuntary context switches over all of
  its threads (/proc/PID/task/*/status), a count the machine's load hardly
  moves;
* ``wall_ms_per_next``: the replay's wall time (no gdb CPU in it);
* with ``--calls``: ``python_calls_per_next``, from the all-thread profiler
  (_common.py ``profile``) over two replays of different lengths, whose
  difference cancels the start-up.  Deterministic.

The replies are checked: every stop reply is a ``T05`` and every other reply
is not an error, so a replay that went wrong cannot report a figure.  The
LAST line printed is one JSON object.  Run it from each checkout to compare
(its stub is the checkout's own), alternating.
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EXAMPLES, BenchError, guest_profile_path, median, start_stub, work_directory,
)

WASM = EXAMPLES / "build" / "bench_loop.O0.wasm"
FUNCTION = "call_loop"
ITERATIONS = 1_000_000
#: gdb marks each ``next`` in its remote log with a ``c next`` line.
_COMMAND_NEXT = "c next"
_PACKET = re.compile(rb"\$([^#]*)#[0-9a-fA-F]{2}")


def record(work: Path) -> tuple[list[bytes], list[bytes]]:
    """(packets up to the loop, packets of two ``next``s in the loop): gdb's
    own, from its remote log of a session against a stub."""
    log_path = work / "remote.log"
    with start_stub(WASM, FUNCTION, [ITERATIONS], cache_dir=work / "stub-cache") as server:
        commands = ["set pagination off", "set confirm off", f"set remotelogfile {log_path}",
                    f"target remote 127.0.0.1:{server.port}", f"break {FUNCTION}", "continue", "delete",
                    *["next"] * 7, "kill"]
        argv = ["gdb", "-nx", "-batch", *[a for c in commands for a in ("-ex", c)]]
        subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=work)
    return loop_packets(log_path.read_text(errors="replace"))


def loop_packets(remote_log: str) -> tuple[list[bytes], list[bytes]]:
    """Splits gdb's remote log (``set remotelogfile``) of a session that
    connected, ran to ``call_loop`` and took 7 ``next``s: (every packet gdb
    wrote before the 4th ``next``, the packets of the 4th and 5th), checked
    to repeat in the 6th and 7th."""
    chunks: list[list[bytes]] = [[]]
    for line in remote_log.splitlines():
        if line == _COMMAND_NEXT:
            chunks.append([])
        elif line.startswith("w "):
            written = line[2:].lstrip("+").encode()
            if written.startswith(b"$"):
                chunks[-1].append(written)
    # chunks[0]: the connection and `break`/`continue`; chunks[1..3]: the
    # `next`s into the loop; 4..7 the loop's (the last one is followed by
    # `kill`'s vKill, left out).
    if len(chunks) != 8:
        raise BenchError(f"unexpected remote log: {len(chunks) - 1} nexts")
    prelude = [p for chunk in chunks[:4] for p in chunk]
    period = chunks[4] + chunks[5]
    if chunks[6] + chunks[7][:len(chunks[5])] != period:
        raise BenchError("the loop's packets are not periodic over two nexts")
    return prelude, period


class RawClient:
    """gdb's side of the wire, no more: sends recorded packets, waits for
    each reply (acknowledging until no-ack mode is on)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.acks = True

    def exchange(self, packet: bytes) -> bytes:
        self.sock.sendall(packet)
        while True:
            match = _PACKET.search(self.buffer)
            if match is None:
                data = self.sock.recv(65536)
                if not data:
                    raise BenchError("the stub closed the connection")
                self.buffer += data
                continue
            self.buffer = self.buffer[match.end():]
            reply = match.group(1)
            if reply.startswith(b"O") and reply != b"OK":
                continue  # console output before a stop reply
            if self.acks:
                self.sock.sendall(b"+")
            if packet.startswith(b"$QStartNoAckMode"):
                self.acks = False
            return reply

    def close(self) -> None:
        self.sock.close()


def _check(packet: bytes, reply: bytes) -> None:
    if packet.startswith(b"$vCont;") and not reply.startswith(b"T05"):
        raise BenchError(f"{packet!r}: not a stop: {reply[:200]!r}")
    if re.fullmatch(rb"E[0-9a-fA-F]{2}.*", reply):
        raise BenchError(f"{packet!r}: error {reply[:200]!r}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except FileNotFoundError:  # a thread that just ended
            continue
        total += sum(int(m) for m in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", text, re.M))
    return total


def replay(work: Path, prelude: list[bytes], period: list[bytes], nexts: int, *,
           profile_to: Path | None = None) -> dict:
    """Replays ``nexts`` nexts (pairs of them) against a fresh stub."""
    with start_stub(WASM, FUNCTION, [ITERATIONS], cache_dir=work / "stub-cache", profile_to=profile_to) as server:
        client = RawClient(server.port)
        for packet in prelude:
            _check(packet, client.exchange(packet))
        for packet in period:  # warm: the memos the loop fills
            _check(packet, client.exchange(packet))
        cpu, switches, wall = _cpu_seconds(server.pid), _context_switches(server.pid), time.perf_counter()
        for _ in range(nexts // 2):
            for packet in period:
                _check(packet, client.exchange(packet))
        wall = time.perf_counter() - wall
        cpu, switches = _cpu_seconds(server.pid) - cpu, _context_switches(server.pid) - switches
        client.exchange(b"$vKill;1#6e")
        client.close()
    done = nexts // 2 * 2
    return {"stub_cpu_ms_per_next": round(1000 * cpu / done, 4),
            "switches_per_next": round(switches / done, 2),
            "wall_ms_per_next": round(1000 * wall / done, 4)}


def _python_calls(profile: Path) -> int:
    calls = 0
    for path in (profile, guest_profile_path(profile)):
        if path.exists():
            calls += pstats.Stats(str(path)).total_calls
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nexts", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=3, help="replays; the medians are reported")
    parser.add_argument("--calls", action="store_true", help="also count Python calls per next (profiled)")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    with work_directory(args.keep) as work:
        prelude, period = record(work)
        print(f"{len(period) / 2} packets per next, {sum(p.startswith(b'$vCont') for p in period) / 2} "
              f"resumes per next")
        runs = [replay(work, prelude, period, args.nexts) for _ in range(args.sessions)]
        for run in runs:
            print(json.dumps(run))
        result = {key: median([run[key] for run in runs]) for key in runs[0]}
        if args.calls:
            short, long_ = args.nexts // 4, args.nexts
            counts = []
            for n in (short, long_):
                profile = work / f"replay{n}.prof"
                replay(work, prelude, period, n, profile_to=profile)
                counts.append(_python_calls(profile))
            result["python_calls_per_next"] = round((counts[1] - counts[0]) / (long_ // 2 * 2 - short // 2 * 2), 1)
        result["packets_per_next"] = len(period) / 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
