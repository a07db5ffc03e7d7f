"""``wasm-gdbstub host``: a DebugHost running a module's function in fresh
Stores, the shape of a request server, while debuggers attach to any Store.

Worker pool (``--invoke FUNC [ARGS...] --workers N``): N threads, each running
``FUNC(ARGS)`` again and again, every run in a fresh Store.  HTTP
(``--http HOST:PORT --handler FUNC``): gdbstub.http_host, each request in a
fresh Store.  Either way, once a second a status line goes to stderr::

    host: 2 Stores live, 1234 runs completed, 0 trapped, 1 attached, 0 held

A run that traps with no debugger attached is logged with its wasm backtrace
and the worker goes on with a fresh Store; nothing a guest does ends the host.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import codemem
from codemem import Trap

from . import runner
from .cli import UsageError, parse_listen
from .host import DebugHost
from .wasi import WasiContext, WasiExit

log = logging.getLogger(__name__)


def _exit_status_of(exc: BaseException) -> int:
    if isinstance(exc, WasiExit):
        return exc.status & 0xFF
    return 1


class StoreFactory:
    """Fresh Stores of one module, instantiated with WASI, and the function to run."""

    def __init__(self, engine: codemem.Engine, module: codemem.Module, path: Path, func_name: str):
        self.engine = engine
        self.module = module
        self.path = path
        self.func_name = func_name
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the host)

    def instantiate(self) -> tuple[codemem.Store, codemem.Instance, codemem.Func]:
        store = codemem.Store(self.engine)
        try:
            wasi = WasiContext(args=[str(self.path)], stdout=sys.stdout, stderr=sys.stderr)
            instance = runner.instantiate(store, self.module, wasi=wasi)
            func = instance.exports.get(self.func_name)
            if not isinstance(func, codemem.Func):
                raise UsageError(f"{self.func_name!r} is not an exported function of {self.path}")
            return store, instance, func
        except BaseException:
            store.close()
            raise


def log_run_end(store_id: int, exited, err=sys.stderr) -> None:
    """What a worker says about a run that did not return normally."""
    error = exited.error
    if isinstance(error, Trap):
        print(f"host: Store {store_id} trapped", file=err)
        runner._print_trap(error, err)
    elif isinstance(error, WasiExit):
        if error.status:
            print(f"host: Store {store_id} exited with status {error.status}", file=err)
    elif error is not None:
        print(f"host: Store {store_id} failed: {error!r}", file=err)


def host_command(args: argparse.Namespace) -> int:
    listen_host, listen_port = parse_listen(args.listen, args.allow_remote)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    path = Path(args.module)
    try:
        wasm = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if args.http:
        if not args.handler_export:
            raise UsageError("--http needs --handler FUNC")
        func_name = args.handler_export
    else:
        if not args.invoke:
            raise UsageError("host needs --invoke FUNC (or --http HOST:PORT --handler FUNC)")
        func_name = args.invoke
    engine = codemem.Engine(debug=True)
    module = codemem.Module(engine, wasm, name=path.stem)
    factory = StoreFactory(engine, module, path, func_name)
    store, _, func = factory.instantiate()  # checks the export and the arguments once, up front
    try:
        values = [] if args.http else runner.parse_invoke_args(func, args.args)
    finally:
        store.close()

    def fresh_run():
        _, _, fresh = factory.instantiate()
        return fresh, list(values)

    host = DebugHost(engine, listen=f"[{listen_host}]:{listen_port}" if ":" in listen_host
                     else f"{listen_host}:{listen_port}", allow_remote=args.allow_remote,
                     dialect=args.dialect, cache_dir=args.cache_dir, exit_status_of=_exit_status_of,
                     fresh_run=None if args.http else fresh_run, image_transfer=args.image_transfer)
    host.hold_new_stores = args.hold
    stop = threading.Event()
    bound_host, bound_port = host.start()
    address = f"{bound_host}:{bound_port}" if ":" not in bound_host else f"[{bound_host}]:{bound_port}"

    if args.http:
        from .http_host import HttpFront
        front = HttpFront(host, factory, args.http, allow_remote=args.allow_remote, workers=args.workers)
        http_address = front.start()
        what = f"HTTP on http://{http_address} ({func_name} per request)"
        workers: list[threading.Thread] = []
    else:
        front = None
        shown = " ".join([func_name, *args.args])
        what = f"{shown} in {args.workers} worker{'s' if args.workers != 1 else ''}"
        workers = [threading.Thread(target=_worker, args=(host, factory, values, stop, args.runs),
                                    name=f"worker{i}", daemon=True) for i in range(args.workers)]
    print(f"wasm-gdbstub: hosting {path.name}: {what}; listening on {address}", flush=True)
    for line in host_attach_commands(address, args.dialect):
        print(line, flush=True)
    for worker in workers:
        worker.start()
    status = threading.Thread(target=_status_loop, args=(host, stop), name="status", daemon=True)
    status.start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.is_set():
            if workers and not any(w.is_alive() for w in workers):
                break  # --runs reached
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        if front is not None:
            front.close()
        host.close()
        for worker in workers:
            worker.join(5)
    print(_status_line(host), file=sys.stderr, flush=True)
    return 0


def host_attach_commands(address: str, dialect: str) -> list[str]:
    """The banner's attach lines (stubproc parses ``gdb:`` and ``lldb:``);
    lldb attaches through its platform mode (docs/lldb.md)."""
    platform = ["-o", shlex.quote("platform select remote-gdb-server"),
                "-o", shlex.quote(f"platform connect connect://{address}"),
                "-o", shlex.quote("platform process list")]
    attach = "process attach --plugin wasm --pid PID" if dialect == "wasm" else "process attach --pid PID"
    lldb = "lldb: lldb-22 " + " ".join(platform) + " -o " + shlex.quote(attach)
    if dialect == "wasm":
        return ["gdb: none (gdb does not speak the wasm dialect; use lldb)", lldb]
    return [f"gdb: gdb -ex {shlex.quote('target extended-remote ' + address)} -ex 'info os processes'", lldb]


def _worker(host: DebugHost, factory: StoreFactory, values: list, stop: threading.Event, runs: int | None) -> None:
    """Runs the function again and again, each time in a fresh Store."""
    while not stop.is_set():
        if runs is not None and host.completed_runs >= runs:
            return
        try:
            store, _, func = factory.instantiate()
        except (Trap, WasiExit) as e:  # the start function trapped or exited
            print(f"host: instantiating failed: {e}", file=sys.stderr)
            time.sleep(0.1)
            continue
        try:
            exited = host.run_exited(func, list(values))
            log_run_end(store.id, exited)
        finally:
            store.close()


def _status_line(host: DebugHost) -> str:
    targets = host.targets()
    attached = sum(1 for t in targets if host.owner_of(t.pid) is not None)
    return (f"host: {len(targets)} Stores live, {host.completed_runs} runs completed, "
            f"{host.trapped_runs} trapped, {attached} attached, {len(host.held_pids())} held")


def _status_loop(host: DebugHost, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        print(_status_line(host), file=sys.stderr, flush=True)

