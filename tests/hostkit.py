"""Test kit for many-Store hosts: a DebugHost in this process with worker
threads, and gdb batch runs that synchronise with the test.

:class:`LoopHost` runs examples/bench_loop.O0.wasm's ``call_loop(n)`` (which
calls ``tick`` n times) in fresh Stores on worker threads, like ``wasm-gdbstub
host`` does, but in the test's process, so a test can read any Store's raw
code bytes and count each worker's completed runs while gdb holds a Store
stopped.  Worker ``a`` runs one long call (a Store that stays alive for the
test), the others short ones, again and again.

:class:`GdbSync` lets a gdb batch script hand control to the test and wait:
the script's ``shell`` commands touch a file and wait for the test's answer
file, so the test checks the host's state at exactly that point of the
debugging session.
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import codemem
from gdbstub import runner
from gdbstub.host import DebugHost

from stubproc import EXAMPLES_BUILD, GDB, NOP5, ClientRun, finish_client, start_client

BENCH_LOOP = EXAMPLES_BUILD / "bench_loop.O0.wasm"
#: call_loop(n) of a long-lived Store: minutes of work (killed at teardown).
LONG_RUN = 1_000_000_000
#: call_loop(n) of the short runs: about a millisecond each.
SHORT_RUN = 2_000


@dataclass
class Worker:
    name: str
    n: int
    runs: int = 0
    store_id: int | None = None
    errors: list = field(default_factory=list)
    thread: threading.Thread | None = None


class LoopHost:
    """A DebugHost with one long-running worker ``a`` and short-run workers."""

    def __init__(self, tmp_path: Path, *, long_workers: tuple[str, ...] = ("a",), short_workers: int = 1,
                 dialect: str = "native"):
        self.engine = codemem.Engine(debug=True)
        self.module = codemem.Module(self.engine, BENCH_LOOP.read_bytes(), name="bench_loop.O0")
        self.host = DebugHost(self.engine, listen="127.0.0.1:0", cache_dir=tmp_path / "images", dialect=dialect)
        self.address = "%s:%d" % self.host.start()
        self.stop = threading.Event()
        self.workers: dict[str, Worker] = {}
        self.stores: dict[int, codemem.Store] = {}
        self._stores_lock = threading.Lock()
        for name in long_workers:
            self._add(Worker(name, LONG_RUN))
        for i in range(short_workers):
            self._add(Worker(f"b{i}", SHORT_RUN))

    def _add(self, worker: Worker) -> None:
        self.workers[worker.name] = worker
        worker.thread = threading.Thread(target=self._loop, args=(worker,), name=f"worker-{worker.name}",
                                         daemon=True)
        worker.thread.start()

    def _loop(self, worker: Worker) -> None:
        while not self.stop.is_set():
            store = codemem.Store(self.engine)
            instance = runner.instantiate(store, self.module)
            with self._stores_lock:
                self.stores[store.id] = store
            worker.store_id = store.id
            try:
                self.host.run_exited(instance.exports["call_loop"], [worker.n])
                worker.runs += 1
            except BaseException as e:  # noqa: BLE001 (recorded for the test to report)
                worker.errors.append(e)
            finally:
                with self._stores_lock:
                    self.stores.pop(store.id, None)
                store.close()

    def wait_for(self, name: str, timeout: float = 10.0) -> int:
        """The Store id of worker ``name``'s current run, once it runs."""
        deadline = time.monotonic() + timeout
        worker = self.workers[name]
        while time.monotonic() < deadline:
            if worker.store_id is not None and self.host.target(worker.store_id) is not None:
                return worker.store_id
            time.sleep(0.01)
        raise AssertionError(f"worker {name} never started a run")

    def ended_store(self, name: str, timeout: float = 10.0) -> int:
        """The id of a Store of worker ``name`` whose run has ended."""
        deadline = time.monotonic() + timeout
        worker = self.workers[name]
        while time.monotonic() < deadline:
            runs, store_id = worker.runs, worker.store_id
            if runs and store_id is not None:
                while worker.store_id == store_id and time.monotonic() < deadline:
                    time.sleep(0.005)
                if self.host.target(store_id) is None:
                    return store_id
            time.sleep(0.005)
        raise AssertionError(f"worker {name} ended no run")

    def _with_store(self, store_id: int, read):
        """``read(store)`` while Store ``store_id`` cannot be closed (its
        worker drops it from ``stores`` under the same lock before closing
        it); None once it is gone."""
        with self._stores_lock:
            store = self.stores.get(store_id)
            return None if store is None else read(store)

    def site_pc(self, store_id: int, func_name: str) -> int | None:
        """The entry site of ``func_name`` in Store ``store_id``'s code."""
        def find(store):
            entry = store.registry.entries()[0]
            table = entry.store_code.frame_table
            for func in table.functions():
                if entry.module.func_name(func.wasm_index) == func_name:
                    return entry.store_code.base + table.entry_offset(func)  # after `push rbp; mov rbp, rsp`
            raise KeyError(func_name)
        return self._with_store(store_id, find)

    def raw_bytes(self, store_id: int, pc: int, length: int = 5) -> bytes | None:
        return self._with_store(store_id, lambda store: store.registry.entries()[0].store_code.read_raw(pc, length))

    def pristine(self, store_id: int) -> bool | None:
        def check(store):
            code = store.registry.entries()[0].store_code
            return (code.read_raw(code.base, code.size) == code.engine_code.read(0, code.size)
                    and not code.enabled_site_offsets())
        return self._with_store(store_id, check)

    def fresh_short_store(self, name: str, after: int | None, timeout: float = 10.0) -> tuple[int, int, bytes]:
        """A Store of short-run worker ``name`` other than ``after``: (id, its
        tick site, the raw bytes there), read while it is alive."""
        deadline = time.monotonic() + timeout
        worker = self.workers[name]
        while time.monotonic() < deadline:
            store_id = worker.store_id
            if store_id is not None and store_id != after:
                def read(store):
                    entry = store.registry.entries()[0]
                    table = entry.store_code.frame_table
                    for func in table.functions():
                        if entry.module.func_name(func.wasm_index) == "tick":
                            pc = entry.store_code.base + table.entry_offset(func)
                            return pc, entry.store_code.read_raw(pc, 5)
                    raise KeyError("tick")
                found = self._with_store(store_id, read)
                if found is not None:
                    return store_id, found[0], found[1]
            time.sleep(0.001)
        raise AssertionError(f"worker {name} made no new Store")

    def close(self) -> None:
        self.stop.set()
        self.host.close()
        deadline = time.monotonic() + 20
        for worker in self.workers.values():
            while worker.thread.is_alive() and time.monotonic() < deadline:
                self.host.kill_all()
                worker.thread.join(0.2)
        alive = [w.name for w in self.workers.values() if w.thread.is_alive()]
        assert not alive, f"workers still running: {alive}"


@pytest.fixture
def loop_host(tmp_path):
    """A factory of LoopHosts (keyword arguments as LoopHost's); every one is
    closed at teardown, its long runs killed."""
    hosts: list[LoopHost] = []

    def make(**kwargs) -> LoopHost:
        host = LoopHost(tmp_path / f"host{len(hosts)}", **kwargs)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


class GdbSync:
    """Sync points between a gdb batch script and the test (see the module
    docstring): ``gdb_commands(name)`` in the script, ``reached(name)`` then
    ``resume(name)`` in the test."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def gdb_commands(self, name: str, timeout: float = 60) -> list[str]:
        flag, go = self.directory / f"{name}.reached", self.directory / f"{name}.go"
        loops = int(timeout / 0.05)
        return [f"shell touch {flag}",
                f"shell i=0; while [ ! -e {go} ] && [ $i -lt {loops} ]; do sleep 0.05; i=$((i+1)); done"]

    def reached(self, name: str, timeout: float = 60) -> bool:
        flag = self.directory / f"{name}.reached"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if flag.exists():
                return True
            time.sleep(0.02)
        return False

    def resume(self, name: str) -> None:
        (self.directory / f"{name}.go").touch()


def gdb_argv(address: str, commands: list[str], *, extended: bool = True) -> list[str]:
    argv = [GDB, "-nx", "-batch", "-ex", "set pagination off", "-ex", "set confirm off",
            "-ex", "set debuginfod enabled off",
            "-ex", f"target {'extended-remote' if extended else 'remote'} {address}"]
    for command in commands:
        argv += ["-ex", command]
    return argv


def start_gdb(address: str, commands: list[str], *, extended: bool = True) -> tuple[subprocess.Popen, list[str]]:
    argv = gdb_argv(address, commands, extended=extended)
    return start_client(argv), argv


def run_gdb(address: str, commands: list[str], *, extended: bool = True, timeout: float = 90) -> ClientRun:
    proc, argv = start_gdb(address, commands, extended=extended)
    return finish_client(proc, argv, timeout)


__all__ = ["BENCH_LOOP", "GdbSync", "LoopHost", "NOP5", "run_gdb", "start_gdb", "finish_client"]


class HostProcess:
    """``python -m gdbstub host ARGS --listen 127.0.0.1:0`` as a subprocess;
    the banner gives the address; stderr (status lines, trap logs) goes to a
    file.  Killed (our own child, by its pid) by :meth:`stop`."""

    def __init__(self, workdir: Path, args: list[str]):
        import os
        import re
        import sys
        from stubproc import ROOT

        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / "host.stderr"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "gdbstub", "host", *args, "--listen", "127.0.0.1:0",
                   "--cache-dir", str(workdir / "images")]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
        self.banner = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.banner.append(line.rstrip("\n"))
            if line.startswith("lldb: "):
                break
        match = re.search(r"listening on (\S+)$", self.banner[0] if self.banner else "")
        if not match:
            self.stop()
            raise AssertionError(f"no banner from {command}: {self.banner}\n{self.stderr}")
        self.address = match.group(1)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("host: ") and "runs completed" in line]

    def completed_runs(self) -> int:
        import re
        lines = self.status_lines()
        if not lines:
            return 0
        return int(re.search(r"(\d+) runs completed", lines[-1]).group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
