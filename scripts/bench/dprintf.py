#!/usr/bin/env python3
"""Benchmark: one dprintf hit with ``set dprintf-style agent``, this stub vs gdbserver.

``cond_loop(n)`` of examples/agent.c calls ``f(i)`` n times; gdb sets
``dprintf`` at f printing ``i`` with the agent style (the printf goes to the
target as bytecode with the breakpoint, ``;cmds:``, and runs there with no
stop):

* ours:      examples/build/agent.O0.wasm under ``python -m gdbstub serve``:
             the printf is compiled into the site's veneer and formats with
             cm_agent_printf (csrc) on the stub's stdout;
* gdbserver: the same C built natively (scripts/bench/src/agent_main.c),
             whose agent printf runs in gdbserver at a ptrace stop and prints
             on gdbserver's stdout.

gdb does not see our C variables yet, so our dprintf takes ``i`` from f's
argument array at its entry site (``dprintf *f,"...",*(int *)$rsi``); the
native one is ``dprintf f,"...",i``.

ns per hit = (t(continue to the end with the dprintf) - t(without)) / n,
timed by gdb's Python around the one ``continue``, each t the fastest of the
rounds (the machine is shared: another process can only slow a run down).  Checks: both servers
printed exactly n lines with the right values, and gdb reported no stop.

Prints the figures; the LAST line is one JSON object with
``ours_ns_per_hit``, ``gdbserver_ns_per_hit``, ``ours_over_gdbserver``
(target <= 0.05) and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EXAMPLES, SRC, BenchError, build_native, check_ran_to_end, connect_prelude, cpu_model, parse_timings,
    run_gdb, start_gdbserver, start_stub, timed, work_directory,
)

WASM = EXAMPLES / "build" / "agent.O0.wasm"
OURS = r'dprintf *f,"dprintf-i=%d\n",*(int *)$rsi'
NATIVE = r'dprintf f,"dprintf-i=%d\n",i'
_LINE = re.compile(r"^dprintf-i=(\d+)$", re.M)


def session(name: str, server, program: Path | None, work: Path, *, dprintf: str | None, calls: int) -> float:
    pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
    lines = connect_prelude(server.port, program=program, server_pids=pids)
    if dprintf is not None:
        lines += ["set dprintf-style agent", dprintf]
    lines += timed("run", "continue")
    run = run_gdb(lines, work)
    server.close()
    check_ran_to_end(name, run, server)
    printed = [int(v) for v in _LINE.findall(server.output)]
    expected = list(range(calls)) if dprintf is not None else []
    if printed != expected:
        raise BenchError(f"{name}: the server printed {len(printed)} dprintf lines, expected {len(expected)} "
                         f"(first: {printed[:5]})")
    if re.search(r"^Dprintf 1, ", run.stdout, re.M):
        raise BenchError(f"{name}: gdb reported a dprintf stop:\n{run.stdout[-2000:]}")
    return parse_timings(run.stdout)["run"][0].wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="dprintf hits per run (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default 3)")
    parser.add_argument("--work-dir", type=Path, help="keep builds and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    n = args.calls
    print(f"dprintf at f over {n} calls, agent style: ns per hit = (t(with) - t(without)) / {n}; "
          f"{args.rounds} rounds, ours and gdbserver alternating")
    with work_directory(args.work_dir) as work:
        try:
            program = build_native([SRC / "agent_main.c"], work / "agent", include=[EXAMPLES])
            runs: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for label, text in (("with", OURS), ("without", None)):
                    with start_stub(WASM, "cond_loop", [n], cache_dir=work / "images") as stub:
                        runs.setdefault(("ours", label), []).append(
                            session("ours", stub, None, work, dprintf=text, calls=n))
                for label, text in (("with", NATIVE), ("without", None)):
                    with start_gdbserver(program, ["cond_loop", n]) as server:
                        runs.setdefault(("gdbserver", label), []).append(
                            session("gdbserver", server, program, work, dprintf=text, calls=n))
        except BenchError as e:
            print(f"dprintf: {e}", file=sys.stderr)
            return 1
    # The least disturbed run of each kind (the machine is shared).
    ours_ns, native_ns = (1e9 * (min(runs[(side, "with")]) - min(runs[(side, "without")])) / n
                          for side in ("ours", "gdbserver"))
    ours = [1e9 * (w - wo) / n for w, wo in zip(runs[("ours", "with")], runs[("ours", "without")])]
    native = [1e9 * (w - wo) / n for w, wo in zip(runs[("gdbserver", "with")], runs[("gdbserver", "without")])]
    print(f"ours:      {ours_ns:10.1f} ns per dprintf hit (each round: {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"gdbserver: {native_ns:10.1f} ns per dprintf hit (each round: {', '.join(f'{v:.1f}' for v in native)})")
    print(f"ours / gdbserver: {ours_ns / native_ns:.4f} (target <= 0.05)")
    print(json.dumps({
        "ours_ns_per_hit": ours_ns,
        "gdbserver_ns_per_hit": native_ns,
        "ours_over_gdbserver": ours_ns / native_ns,
        "calls": n,
        "cpu": cpu_model(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
