#!/usr/bin/env python3
"""Benchmark: a write watchpoint that triggers once, after a million other writes.

``fill_loop(n)`` of examples/agent.c writes ``arr[i % 64] = i`` n times, then
``watched = n`` once.  Under stock gdb with a watchpoint on ``watched``:

* ours:      examples/build/agent.O0.wasm under ``python -m gdbstub serve``;
             ``watch *(int *)ADDR`` (gdb does not see our C variables yet, so
             the variable is named by its linear-memory address, which the
             guest's ``address_of`` export gives): every store site of the
             Store checks its effective address in a veneer;
* gdbserver: the same C built natively (``gcc -O0 -g``, scripts/bench/src/
             agent_main.c) under ``gdbserver`` with ``watch watched``, an x86
             debug-register (hardware) watchpoint.

Timed by gdb's own Python clock: the one ``continue`` from the first
instruction until gdb reports the watchpoint (``Old value = 0``, ``New value =
n``).  ``watched_over_unwatched`` is our guest's speed with the watchpoint
over without: the same ``continue`` with no watchpoint (it runs to the end,
which is one statement later).

Each figure is the fastest of the rounds (the machine is shared: another
process can only slow a run down).

Prints the figures; the LAST line is one JSON object with ``ours_s``,
``gdbserver_hw_s``, ``ours_over_gdbserver`` (target <= 3.0),
``watched_over_unwatched`` (target <= 3.0) and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EXAMPLES, ROOT, SRC, BenchError, build_native, check_ran_to_end, connect_prelude, cpu_model,
    parse_timings, run_gdb, start_gdbserver, start_stub, timed, work_directory,
)

WASM = EXAMPLES / "build" / "agent.O0.wasm"


def watched_address() -> int:
    """``&watched`` in the wasm build's linear memory (its address_of(0))."""
    sys.path.insert(0, str(ROOT))
    import codemem
    from gdbstub import runner

    engine = codemem.Engine()
    store = codemem.Store(engine)
    try:
        instance = runner.instantiate(store, codemem.Module(engine, WASM.read_bytes()))
        return instance.exports["address_of"](0)
    finally:
        store.close()


def session(name: str, server, program: Path | None, work: Path, *, watch: str | None, n: int) -> float:
    pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
    lines = connect_prelude(server.port, program=program, server_pids=pids)
    if watch is not None:
        lines.append(watch)
    lines += timed("run", "continue")
    if watch is not None:
        lines += ["delete", "continue"]
    run = run_gdb(lines, work)
    server.close()
    check_ran_to_end(name, run, server)
    if watch is not None:
        if not re.search(r"^Hardware watchpoint 1: ", run.stdout, re.M):
            raise BenchError(f"{name}: not a hardware watchpoint:\n{run.stdout[-2000:]}")
        if not re.search(rf"^Old value = 0\nNew value = {n}$", run.stdout, re.M):
            raise BenchError(f"{name}: the watchpoint did not report the write:\n{run.stdout[-2000:]}")
    return parse_timings(run.stdout)["run"][0].wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=1_000_000, help="array writes before the watched one")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default 3)")
    parser.add_argument("--work-dir", type=Path, help="keep builds and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    n = args.writes
    print(f"fill_loop({n}): time from continue until gdb reports the watchpoint on `watched`; "
          f"{args.rounds} rounds, ours and gdbserver alternating")
    with work_directory(args.work_dir) as work:
        try:
            program = build_native([SRC / "agent_main.c"], work / "agent", include=[EXAMPLES])
            address = watched_address()
            ours, ours_unwatched, native = [], [], []
            for _ in range(args.rounds):
                with start_stub(WASM, "fill_loop", [n], cache_dir=work / "images") as stub:
                    ours.append(session("ours", stub, None, work, watch=f"watch *(int *){address}", n=n))
                with start_stub(WASM, "fill_loop", [n], cache_dir=work / "images") as stub:
                    ours_unwatched.append(session("ours", stub, None, work, watch=None, n=n))
                with start_gdbserver(program, ["fill_loop", n]) as server:
                    native.append(session("gdbserver", server, program, work, watch="watch watched", n=n))
        except BenchError as e:
            print(f"watch: {e}", file=sys.stderr)
            return 1
    # The least disturbed run of each kind (the machine is shared).
    ours_s, native_s, unwatched_s = min(ours), min(native), min(ours_unwatched)
    print(f"ours:      {ours_s:.4f} s to the watchpoint (each: {', '.join(f'{v:.4f}' for v in ours)}); "
          f"without a watchpoint the same continue takes {unwatched_s:.4f} s")
    print(f"gdbserver: {native_s:.4f} s to the hardware watchpoint (each: {', '.join(f'{v:.4f}' for v in native)})")
    print(f"ours / gdbserver: {ours_s / native_s:.2f} (target <= 3.0); watched / unwatched: "
          f"{ours_s / unwatched_s:.2f} (target <= 3.0)")
    print(json.dumps({
        "ours_s": ours_s,
        "gdbserver_hw_s": native_s,
        "ours_over_gdbserver": ours_s / native_s,
        "watched_over_unwatched": ours_s / unwatched_s,
        "ours_unwatched_s": unwatched_s,
        "writes": n,
        "cpu": cpu_model(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
