#!/usr/bin/env python3
"""Benchmark: seconds per source-level ``next`` over a loop body (issue 13).

The loop is examples/bench_loop.c's ``call_loop``: ``for (...; i < n; i++)``
(line 24) and ``acc += tick(i);`` (line 25, a call stepped over), so ``next``
alternates between the two lines for as long as the loop runs.

* gdb 13: this stub (examples/build/bench_loop.O0.wasm, native dialect) against
  gdbserver running the same C built natively (scripts/bench/src/
  bench_loop_main.c, ``gcc -O0 -g``).  Timed inside gdb (its Python clock
  around ``next`` N times); seconds per next = (t(N2) - t(N1)) / (N2 - N1),
  which cancels a command's fixed cost; the median over ``--reps`` sessions
  per side, the sides alternating session by session (the load of a shared
  machine moves within seconds).  N1 = 20 and N2 = 420 by default: each
  session times 400 `next`s (about 0.4-0.6 s), and 7 sessions a side.  With
  100 `next`s (0.1 s) and 5 sessions, one slow moment of the virtual machine
  moved a run's figure by 20 % (0.76-1.10 over one hour, the median 0.90).
  A last phase with ``set debug remote 1`` counts packets and range steps
  (``vCont;r``) per ``next``.
* lldb-22 (wasm dialect, default settings): this stub against Wasmtime
  (``wasmtime run -g``), ``SBThread.StepOver`` N times in lldb's Python, the
  same difference of two counts.

Each side checks that its steps stayed on the loop's lines.  Prints the
figures; the LAST line is one JSON object: ``next_over_gdbserver`` (target <=
1.0), ``lldb_next_over_wasmtime`` (target <= 0.5), the seconds per next of each
side, packets and range steps per gdb ``next``, and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EXAMPLES, ROOT, SRC, BenchError, build_native, cpu_model, free_port, median, parse_timings, remote_packets,
    run_gdb, start_gdbserver, start_stub, timed, timing_prelude, wait_listening, wasmtime_cli, work_directory,
)

WASM = EXAMPLES / "build" / "bench_loop.O0.wasm"
FUNCTION = "call_loop"
LOOP_LINES = {24, 25}
ITERATIONS = 1_000_000  # call_loop's n: more than any run steps through
LLDB = "lldb-22"
_LINE = re.compile(r"^(\d+)\t", re.M)


def gdb_commands(port: int, *, program: Path | None, server_pids: list[int], n1: int, n2: int, reps: int,
                 verify: int) -> list[str]:
    lines = ["set pagination off", "set confirm off", *timing_prelude(server_pids)]
    if program is not None:
        lines.append(f"file {program}")
    lines += [f"target remote 127.0.0.1:{port}", f"break {FUNCTION}", "continue", "delete",
              "next", "next", "next"]  # into the loop: on line 24 or 25 from here on
    for rep in range(reps):
        for label, count in (("n1", n1), ("n2", n2)):
            lines += timed(label, f"python [gdb.execute('next', to_string=True) for _ in range({count})]")
    lines += ["python print('BENCH-LINE', gdb.selected_frame().find_sal().line)",
              "set debug remote 1", *["next"] * verify, "set debug remote 0",
              "python print('BENCH-LINE', gdb.selected_frame().find_sal().line)", "kill"]
    return lines


def run_gdb_side(work: Path, *, ours: bool, n1: int, n2: int, reps: int, verify: int) -> dict:
    if ours:
        server = start_stub(WASM, FUNCTION, [ITERATIONS], cache_dir=work / "stub-cache")
        program = None
    else:
        program = build_native([SRC / "bench_loop_main.c"], work / "bench_loop", include=[EXAMPLES])
        server = start_gdbserver(program, [str(ITERATIONS)])
    with server:
        pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
        run = run_gdb(gdb_commands(server.port, program=program, server_pids=pids, n1=n1, n2=n2, reps=reps,
                                   verify=verify), work, timeout=900)
    name = "stub" if ours else "gdbserver"
    timings = parse_timings(run.stdout)
    if len(timings.get("n1", [])) != reps or len(timings.get("n2", [])) != reps:
        raise BenchError(f"gdb + {name}: missing timings\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    lines = [int(x) for x in re.findall(r"^BENCH-LINE (\d+)$", run.stdout, re.M)]
    if len(lines) != 2 or not set(lines) <= LOOP_LINES:
        raise BenchError(f"gdb + {name}: the steps left the loop (lines {lines})\n{run.stdout[-2000:]}")
    # `set debug remote 1` is on only around the verify phase's nexts.
    verify_sent, _ = remote_packets(run.stderr)
    per_next = [(b.wall - a.wall) / (n2 - n1) for a, b in zip(timings["n1"], timings["n2"])]
    return {
        "gdb_cpu_per_next": median([(b.gdb_cpu - a.gdb_cpu) / (n2 - n1) for a, b in zip(timings["n1"], timings["n2"])]),
        "server_cpu_per_next": median([(b.server_cpu - a.server_cpu) / (n2 - n1)
                                       for a, b in zip(timings["n1"], timings["n2"])]),
        "s_per_next": median(per_next),
        "each": per_next,
        "packets_per_next": len(verify_sent) / verify,
        "range_steps_per_next": sum(p.startswith("vCont;r") for p in verify_sent) / verify,
    }


def lldb_commands(port: int, n1: int, n2: int, reps: int) -> list[str]:
    commands = [f"process connect --plugin wasm connect://127.0.0.1:{port}", f"breakpoint set --name {FUNCTION}",
                "process continue", "breakpoint delete --force",
                "script import time; lldb.debugger.SetAsync(False); "
                "_thread = lldb.debugger.GetSelectedTarget().GetProcess().GetSelectedThread()",
                "script [_thread.StepOver() for _ in range(3)]"]
    for _ in range(reps):
        for label, count in (("n1", n1), ("n2", n2)):
            commands.append(f"script _t0 = time.perf_counter(); [_thread.StepOver() for _ in range({count})]; "
                            f"print('BENCH-TIMING {label} %.9f 0 0' % (time.perf_counter() - _t0))")
    commands += ["script print('BENCH-LINE', _thread.GetFrameAtIndex(0).GetLineEntry().GetLine())", "process kill"]
    return commands


def run_lldb_side(work: Path, *, ours: bool, n1: int, n2: int, reps: int) -> dict:
    name = "stub" if ours else "wasmtime"
    if ours:
        server = start_stub(WASM, FUNCTION, [ITERATIONS], cache_dir=work / "stub-cache", extra=["--dialect", "wasm"])
        port = server.port
        process = server.process
    else:
        cli, why = wasmtime_cli()
        if cli is None:
            raise BenchError(why)
        port = free_port()
        process = subprocess.Popen([cli, "run", "-g", f"127.0.0.1:{port}", "--invoke", FUNCTION, str(WASM),
                                    str(ITERATIONS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(process, port)
    try:
        argv = [LLDB, "--no-lldbinit", "--batch"]
        for command in lldb_commands(port, n1, n2, reps):
            argv += ["-o", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    output = done.stdout + done.stderr
    timings = parse_timings(output)
    if len(timings.get("n1", [])) != reps or len(timings.get("n2", [])) != reps:
        raise BenchError(f"lldb + {name}: missing timings\n{output[-3000:]}")
    lines = [int(x) for x in re.findall(r"^BENCH-LINE (\d+)$", output, re.M)]
    if not lines or not set(lines) <= LOOP_LINES:
        raise BenchError(f"lldb + {name}: the steps left the loop (lines {lines})\n{output[-2000:]}")
    per_next = [(b.wall - a.wall) / (n2 - n1) for a, b in zip(timings["n1"], timings["n2"])]
    return {"s_per_next": median(per_next), "each": per_next}


def merged_runs(runs: list[dict]) -> dict:
    """One side's figures over several sessions: the median of every
    session's seconds per next (and CPU), packets and range steps of the
    first (every session checks it stepped the same lines)."""
    merged = dict(runs[0])
    merged["each"] = [value for run in runs for value in run["each"]]
    merged["s_per_next"] = median(merged["each"])
    for key in ("gdb_cpu_per_next", "server_cpu_per_next"):
        if key in merged:
            merged[key] = median([run[key] for run in runs])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n1", type=int, default=20)
    parser.add_argument("--n2", type=int, default=420)
    parser.add_argument("--reps", type=int, default=7, help="sessions per side, alternating")
    parser.add_argument("--verify", type=int, default=10, help="nexts with packet logging")
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--gdb-only", action="store_true", help="skip the lldb pair (no JSON line)")
    args = parser.parse_args(argv)
    with work_directory(args.keep) as work:
        # One session per side and rep, the sides alternating: on a shared
        # machine the load moves within seconds, and a side measured whole
        # before the other can get a quiet minute the other did not.
        ours_runs, reference_runs = [], []
        for _ in range(args.reps):
            ours_runs.append(run_gdb_side(work, ours=True, n1=args.n1, n2=args.n2, reps=1, verify=args.verify))
            reference_runs.append(run_gdb_side(work, ours=False, n1=args.n1, n2=args.n2, reps=1,
                                               verify=args.verify))
        ours, reference = merged_runs(ours_runs), merged_runs(reference_runs)
        if args.gdb_only:
            for name, side in (("gdb + stub", ours), ("gdb + gdbserver", reference)):
                print(f"{name:16s} {1000 * side['s_per_next']:8.3f} ms per next, "
                      f"{side['packets_per_next']:.1f} packets, {side['range_steps_per_next']:.1f} range steps, "
                      f"cpu ms: gdb {1000 * side['gdb_cpu_per_next']:.3f} server "
                      f"{1000 * side['server_cpu_per_next']:.3f}")
            return 0
        lldb_ours_runs, lldb_wasmtime_runs = [], []
        for _ in range(args.reps):
            lldb_ours_runs.append(run_lldb_side(work, ours=True, n1=args.n1, n2=args.n2, reps=1))
            lldb_wasmtime_runs.append(run_lldb_side(work, ours=False, n1=args.n1, n2=args.n2, reps=1))
        lldb_ours, lldb_wasmtime = merged_runs(lldb_ours_runs), merged_runs(lldb_wasmtime_runs)
    for name, side in (("gdb + stub", ours), ("gdb + gdbserver", reference), ("lldb + stub", lldb_ours),
                       ("lldb + wasmtime", lldb_wasmtime)):
        extra = (f", {side['packets_per_next']:.1f} packets and {side['range_steps_per_next']:.1f} range steps "
                 f"per next" if "packets_per_next" in side else "")
        print(f"{name:16s} {1000 * side['s_per_next']:8.3f} ms per next (each rep: "
              + " ".join(f"{1000 * v:.3f}" for v in side["each"]) + f"){extra}")
    result = {
        "next_over_gdbserver": round(ours["s_per_next"] / reference["s_per_next"], 3),
        "lldb_next_over_wasmtime": round(lldb_ours["s_per_next"] / lldb_wasmtime["s_per_next"], 3),
        "ours_s_per_next": round(ours["s_per_next"], 6),
        "gdbserver_s_per_next": round(reference["s_per_next"], 6),
        "lldb_ours_s_per_next": round(lldb_ours["s_per_next"], 6),
        "lldb_wasmtime_s_per_next": round(lldb_wasmtime["s_per_next"], 6),
        "ours_packets_per_next": ours["packets_per_next"],
        "gdbserver_packets_per_next": reference["packets_per_next"],
        "ours_range_steps_per_next": ours["range_steps_per_next"],
        "gdbserver_range_steps_per_next": reference["range_steps_per_next"],
        "cpu": cpu_model(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"step_latency: {e}", file=sys.stderr)
        sys.exit(1)
