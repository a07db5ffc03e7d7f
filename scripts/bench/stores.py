"""Benchmark: many Stores in one host (issue 10).

Three figures, each measured with ours and its reference in one run:

* **Isolation.**  A DebugHost in this process with two workers running
  examples/bench_loop.O0.wasm: worker A one long ``call_loop`` (so a debugger
  can hold it), worker B ``call_loop(B_N)`` again and again, each run in a
  fresh Store.  B's runs per second with no debugger, while gdb holds A
  stopped at a breakpoint, and while gdb makes A hit a breakpoint in a loop
  (``continue`` over and over).  Keys ``b_runs_per_s_alone``,
  ``b_runs_per_s_while_a_stopped``, ``b_runs_per_s_while_a_hits``,
  ``isolation_ratio`` (= while_a_hits / alone; target >= 0.90).
* **Store churn.**  Debug Stores created, instantiated, run on a trivial
  export (``tick(5)``) through ``DebugHost.run`` and dropped, per second,
  over the same with debugging off and no host.  Key
  ``debug_store_churn_ratio`` (target >= 0.8).
* **Restart.**  Seconds from gdb's ``starti`` (``vRun`` over extended-remote:
  kill the current process, start a fresh one, stopped at its first
  instruction) to the stop, for the real-size C program of
  scripts/bench/bigmodule.py: ``wasm-gdbstub serve`` on its wasm build vs
  ``gdbserver --multi`` on its native build.  Key ``restart_over_gdbserver``
  (target <= 1.0).  ``restart_store_s`` is the Store side alone (a fresh
  Store instantiated and stopped at its entry, no debug image): what
  copy-on-write code makes cheap; the rest of ``restart_s`` is building and
  loading the new Store's debug image.

The last line is one JSON object with those keys and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codemem  # noqa: E402
from gdbstub import runner  # noqa: E402
from gdbstub.host import DebugHost  # noqa: E402

import bigmodule  # noqa: E402
from _common import (  # noqa: E402
    GDB, BenchError, cpu_model, parse_timings, run_gdb, start_stub, timed, timing_prelude, work_directory,
    _start_and_wait_for,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BENCH_LOOP = ROOT / "examples" / "build" / "bench_loop.O0.wasm"
A_N = 2_000_000_000  # worker A's one call: hours of work; it is killed at the end
B_N = 20_000         # worker B's calls: about a millisecond each


# ------------------------------------------------------------------ isolation

class TwoWorkers:
    """Worker A (one long run) and worker B (short runs), each run in a fresh Store."""

    def __init__(self, cache_dir: Path):
        self.engine = codemem.Engine(debug=True)
        self.module = codemem.Module(self.engine, BENCH_LOOP.read_bytes(), name="bench_loop.O0")
        self.host = DebugHost(self.engine, listen="127.0.0.1:0", cache_dir=cache_dir)
        self.address = "%s:%d" % self.host.start()
        self.stop = threading.Event()
        self.b_runs = 0
        self.a_store: codemem.Store | None = None
        self.a_ready = threading.Event()
        self.threads = [threading.Thread(target=self._a, daemon=True), threading.Thread(target=self._b, daemon=True)]
        for thread in self.threads:
            thread.start()
        if not self.a_ready.wait(30):
            raise BenchError("worker A did not start")

    def _a(self) -> None:
        while not self.stop.is_set():
            store = codemem.Store(self.engine)
            instance = runner.instantiate(store, self.module)
            self.a_store = store
            self.a_ready.set()
            try:
                self.host.run_exited(instance.exports["call_loop"], [A_N])
            finally:
                store.close()

    def _b(self) -> None:
        while not self.stop.is_set():
            store = codemem.Store(self.engine)
            instance = runner.instantiate(store, self.module)
            try:
                self.host.run_exited(instance.exports["call_loop"], [B_N])
                self.b_runs += 1
            finally:
                store.close()

    def tick_site(self) -> int:
        entry = self.a_store.registry.entries()[0]
        table = entry.store_code.frame_table
        for func in table.functions():
            if entry.module.func_name(func.wasm_index) == "tick":
                return entry.store_code.base + func.native_start
        raise BenchError("no tick in bench_loop")

    def b_rate(self, seconds: float) -> float:
        before, t0 = self.b_runs, time.perf_counter()
        time.sleep(seconds)
        return (self.b_runs - before) / (time.perf_counter() - t0)

    def close(self) -> None:
        self.stop.set()
        self.host.close()
        deadline = time.monotonic() + 20
        while any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
            self.host.kill_all()
            for thread in self.threads:
                thread.join(0.2)


def _wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"gdb never reached {path.name}")
        time.sleep(0.005)


def measure_isolation(work: Path, seconds: float, hits_seconds: float) -> dict:
    workers = TwoWorkers(work / "images")
    try:
        time.sleep(0.5)  # both workers warm
        alone = [workers.b_rate(seconds)]
        a_pid = workers.a_store.id
        tick = workers.tick_site()
        marks = {name: work / f"{name}.flag" for name in ("stopped", "stopped_go", "hits", "hits_done")}
        for mark in marks.values():
            mark.unlink(missing_ok=True)
        commands = [
            "set pagination off", "set confirm off",
            f"target extended-remote {workers.address}", f"attach {a_pid}", f"break *{tick:#x}", "continue",
            f"shell touch {marks['stopped']}",
            f"shell while [ ! -e {marks['stopped_go']} ]; do sleep 0.02; done",
            f"shell touch {marks['hits']}",
            "python",
            "import time",
            "_end = time.monotonic() + %f" % hits_seconds,
            "_hits = 0",
            "while time.monotonic() < _end:",
            "    gdb.execute('continue', to_string=True)",
            "    _hits += 1",
            "print('HITS', _hits)",
            "end",
            f"shell touch {marks['hits_done']}",
            "detach",
        ]
        result: dict = {}
        gdb_thread = threading.Thread(target=lambda: result.update(run=run_gdb(commands, work, timeout=600)),
                                      daemon=True)
        gdb_thread.start()
        _wait_file(marks["stopped"], 60)
        stopped = workers.b_rate(seconds)
        marks["stopped_go"].touch()
        _wait_file(marks["hits"], 60)
        before, t0 = workers.b_runs, time.perf_counter()
        _wait_file(marks["hits_done"], hits_seconds + 120)
        hits_rate = (workers.b_runs - before) / (time.perf_counter() - t0)
        gdb_thread.join(60)
        run = result.get("run")
        if run is None or "HITS" not in run.stdout:
            raise BenchError("the gdb session failed:\n" + (run.stdout + run.stderr if run else "no output"))
        hits = int(run.stdout.split("HITS", 1)[1].split()[0])
        time.sleep(0.3)
        alone.append(workers.b_rate(seconds))
        b_alone = statistics.mean(alone)
        return {"b_runs_per_s_alone": b_alone, "b_runs_per_s_while_a_stopped": stopped,
                "b_runs_per_s_while_a_hits": hits_rate, "isolation_ratio": hits_rate / b_alone,
                "a_hits_per_s": hits / hits_seconds}
    finally:
        workers.close()


# ------------------------------------------------------------------ churn

def churn_rate(engine: codemem.Engine, module: codemem.Module, seconds: float, host: DebugHost | None) -> float:
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        store = codemem.Store(engine)
        instance = codemem.Instance(store, module, [])
        func = instance.exports["tick"]
        if host is None:
            func(5)
        else:
            host.run(func, 5)
        store.close()
        runs += 1
    return runs / (time.perf_counter() - t0)


def measure_churn(work: Path, seconds: float, rounds: int) -> dict:
    wasm = BENCH_LOOP.read_bytes()
    off_engine = codemem.Engine(debug=False)
    on_engine = codemem.Engine(debug=True)
    off_module = codemem.Module(off_engine, wasm, name="bench_loop.O0")
    on_module = codemem.Module(on_engine, wasm, name="bench_loop.O0")
    host = DebugHost(on_engine, listen="127.0.0.1:0", cache_dir=work / "churn-images")
    host.start()
    try:
        off, on, on_plain = [], [], []
        for _ in range(rounds):
            off.append(churn_rate(off_engine, off_module, seconds, None))
            on.append(churn_rate(on_engine, on_module, seconds, host))
            on_plain.append(churn_rate(on_engine, on_module, seconds, None))
    finally:
        host.close()
    return {"stores_per_s_debug_off": statistics.median(off), "stores_per_s_debug_on_hosted": statistics.median(on),
            "stores_per_s_debug_on_unhosted": statistics.median(on_plain),
            "debug_store_churn_ratio": statistics.median(on) / statistics.median(off)}


# ------------------------------------------------------------------ restart

def restart_commands(address: str, server_pids: list[int], reps: int, before: list[str]) -> list[str]:
    # A generous remote timeout on both sides: a reply slower than gdb's
    # default 2 s is otherwise taken for a lost packet and the session derails.
    commands = ["set pagination off", "set confirm off", "set remotetimeout 120", *timing_prelude(server_pids),
                f"target extended-remote {address}", *before]
    for _ in range(reps):
        commands += timed("starti", "starti")
    commands.append("kill")
    return commands


def store_restart_seconds(wasm: Path, reps: int) -> list[float]:
    """The Store side of a restart alone, in this process: a fresh Store of
    the module, instantiated, its guest thread started and stopped at its
    entry (what ``serve``'s vRun does before any debug image is made)."""
    from gdbstub.target import StoreTarget
    engine = codemem.Engine(debug=True)
    module = codemem.Module(engine, wasm.read_bytes(), name=wasm.stem)
    times = []
    for _ in range(reps):
        stopped = threading.Event()
        t0 = time.perf_counter()
        store = codemem.Store(engine)
        instance = runner.instantiate(store, module)
        target = StoreTarget(store, instance, instance.exports[bigmodule.ENTRY], [3], notify=stopped.set)
        target.start(stop_at_entry=True)
        if not stopped.wait(60):
            raise BenchError("the fresh Store never reached its entry")
        times.append(time.perf_counter() - t0)
        target.take_event()
        target.kill()
        target.join(10)
        store.close()
    return times


def measure_restart(work: Path, reps: int) -> dict:
    wasm, native = bigmodule.build(work / "bigmodule")
    store_side = store_restart_seconds(wasm, reps)
    ours, theirs = [], []
    with start_stub(wasm, bigmodule.ENTRY, ["3"], cache_dir=work / "restart-images") as stub:
        run = run_gdb(restart_commands(f"127.0.0.1:{stub.port}", [stub.pid], reps, []), work)
        ours = [t.wall for t in parse_timings(run.stdout).get("starti", [])]
        if len(ours) != reps:
            raise BenchError("the stub's starti timings are missing:\n" + run.stdout[-3000:] + run.stderr[-3000:])
    argv = ["gdbserver", "--multi", "127.0.0.1:0"]
    with _start_and_wait_for("gdbserver", argv, __import__("re").compile(r"Listening on port (\d+)"),
                             cwd=native.parent) as server:
        run = run_gdb(restart_commands(f"127.0.0.1:{server.port}", [server.pid], reps,
                                       [f"set remote exec-file {native}", f"file {native}"]), work)
        theirs = [t.wall for t in parse_timings(run.stdout).get("starti", [])]
        if len(theirs) != reps:
            raise BenchError("gdbserver's starti timings are missing:\n" + run.stdout[-3000:] + run.stderr[-3000:])
    # The first starti of ours also replaces the Store serve started with.
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    store_s = statistics.median(store_side)
    return {"restart_s": ours_s, "gdbserver_restart_s": theirs_s, "restart_over_gdbserver": ours_s / theirs_s,
            "restart_store_s": store_s, "restart_store_over_gdbserver": store_s / theirs_s,
            "restart_s_all": ours, "gdbserver_restart_s_all": theirs,
            "restart_module_mib": round(wasm.stat().st_size / (1 << 20), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each B-rate window")
    parser.add_argument("--hits-seconds", type=float, default=5.0, help="how long A hits its breakpoint")
    parser.add_argument("--churn-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="churn rounds (debug off/on interleaved)")
    parser.add_argument("--restarts", type=int, default=5, help="starti repetitions per side")
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    parser.add_argument("--only", choices=("isolation", "churn", "restart"), help="measure one figure only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures: dict = {}
    with work_directory(args.keep) as work:
        try:
            if args.only in (None, "isolation"):
                figures.update(measure_isolation(work, args.seconds, args.hits_seconds))
                print(f"isolation: B alone {figures['b_runs_per_s_alone']:.0f} runs/s, while A stopped "
                      f"{figures['b_runs_per_s_while_a_stopped']:.0f}, while A hits "
                      f"{figures['b_runs_per_s_while_a_hits']:.0f} (A: {figures['a_hits_per_s']:.0f} hits/s); "
                      f"ratio {figures['isolation_ratio']:.2f} (target >= 0.90)")
            if args.only in (None, "churn"):
                figures.update(measure_churn(work, args.churn_seconds, args.rounds))
                print(f"churn: {figures['stores_per_s_debug_off']:.0f} Stores/s debug off, "
                      f"{figures['stores_per_s_debug_on_hosted']:.0f} debug on through DebugHost.run "
                      f"({figures['stores_per_s_debug_on_unhosted']:.0f} without the host); "
                      f"ratio {figures['debug_store_churn_ratio']:.2f} (target >= 0.8)")
            if args.only in (None, "restart"):
                figures.update(measure_restart(work, args.restarts))
                print(f"restart: starti {figures['restart_s'] * 1e3:.0f} ms ({figures['restart_module_mib']} MiB module) "
                      f"vs gdbserver --multi {figures['gdbserver_restart_s'] * 1e3:.0f} ms; ratio "
                      f"{figures['restart_over_gdbserver']:.2f} (target <= 1.0); the fresh Store alone "
                      f"{figures['restart_store_s'] * 1e3:.0f} ms (ratio {figures['restart_store_over_gdbserver']:.2f}), "
                      f"the rest is its new debug image")
        except BenchError as e:
            print(f"stores: {e}", file=sys.stderr)
            return 1
    figures["cpu"] = cpu_model()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
