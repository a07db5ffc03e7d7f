#!/usr/bin/env python3
"""Benchmark: a conditional breakpoint whose condition is false, per hit.

The C loop of examples/agent.c (``cond_loop(n)`` calls the non-inlined ``f(i)``
n times) runs under stock gdb with ``break f if i == -1``, a condition that is
never true:

* ours:      examples/build/agent.O0.wasm under ``python -m gdbstub serve``;
             the condition is compiled to x86-64 and runs in the site's veneer;
* gdbserver: the same C built natively (``gcc -O0 -g``, scripts/bench/src/
             agent_main.c) under ``gdbserver``, which also evaluates the
             condition in the target (gdb sends it as agent bytecode to both:
             "target evals"), with a ptrace stop per hit.

Each side runs the program twice per round, with and without the breakpoint,
and gdb's own Python clock times the one ``continue`` that runs it to its end.
ns per false hit = (t(with) - t(without)) / n, each t the fastest of the rounds
(the machine is shared: another process can only slow a run down).  The guest's slowdown is
t(with) / t(without) of our side (the whole ``continue``, so it includes the
stub's fixed costs of a continue and the exit).

gdb does not see C variables of our images yet (another issue adds them); until
then our side's condition is the same test over the argument array at f's entry
site, ``break *f if *(int *)$rsi == -1`` (also compiled from gdb's bytecode).
The script tries ``break f if i == -1`` first and says which it used.

Checks: every session must end with gdb's "exited normally" and gdb must
count no hit; a first short session per side with ``set debug remote 1``
must show the condition sent with the ``Z0`` (``;X``) and no stop reply.

Prints the figures; the LAST line is one JSON object with
``ours_ns_per_false_hit``, ``gdbserver_ns_per_false_hit``,
``ours_over_gdbserver`` (target <= 0.01), ``ours_guest_slowdown`` and ``cpu``.
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
    remote_packets, run_gdb, start_gdbserver, start_stub, timed, work_directory,
)

WASM = EXAMPLES / "build" / "agent.O0.wasm"
VERIFY_CALLS = 200
BY_NAME = "break f if i == -1"
BY_REGISTER = "break *f if *(int *)$rsi == -1"


def gdb_commands(port: int, *, program: Path | None, server_pids: list[int], with_breakpoint: bool,
                 log_packets: bool = False) -> list[str]:
    lines = connect_prelude(port, program=program, server_pids=server_pids)
    if with_breakpoint:
        if program is None:
            lines += ["python",
                      "try:",
                      f"    gdb.execute({BY_NAME!r})",
                      "    print('BENCH-CONDITION by name')",
                      "except gdb.error:",
                      f"    gdb.execute({BY_REGISTER!r})",
                      "    print('BENCH-CONDITION by register')",
                      "end"]
        else:
            lines.append(BY_NAME)
    if log_packets:
        lines.append("set debug remote 1")
    lines += timed("run", "continue")
    if with_breakpoint:
        lines.append("info breakpoints")
    return lines


def session(name: str, server, program: Path | None, work: Path, *, with_breakpoint: bool,
            log_packets: bool = False) -> float:
    pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
    run = run_gdb(gdb_commands(server.port, program=program, server_pids=pids, with_breakpoint=with_breakpoint,
                               log_packets=log_packets), work)
    server.close()
    check_ran_to_end(name, run, server)
    if log_packets:
        # The verification session (VERIFY_CALLS calls): gdb sent the
        # condition as bytecode and the false hits did not stop (gdbserver
        # stops a few times for the dynamic loader's events, never per call).
        sent, received = remote_packets(run.stderr)
        if not any(re.match(r"Z0,[0-9a-f]+,\d;X", p) for p in sent):
            raise BenchError(f"{name}: gdb did not send the condition to the target: {sent}")
        stops = [p for p in received if p[:1] in ("T", "S")]
        if len(stops) >= VERIFY_CALLS // 10:
            raise BenchError(f"{name}: {len(stops)} stops for {VERIFY_CALLS} false hits: {stops[:3]}")
    if with_breakpoint:
        if re.search(r"breakpoint already hit \d+ time", run.stdout):
            raise BenchError(f"{name}: the breakpoint was reported as hit:\n{run.stdout[-2000:]}")
        if program is None:
            used = re.search(r"^BENCH-CONDITION (.*)$", run.stdout, re.M)
            session.condition = used.group(1) if used else "?"  # type: ignore[attr-defined]
    return parse_timings(run.stdout)["run"][0].wall


def run_ours(calls: int, work: Path, *, with_breakpoint: bool, log_packets: bool = False) -> float:
    with start_stub(WASM, "cond_loop", [calls], cache_dir=work / "images") as stub:
        return session("ours", stub, None, work, with_breakpoint=with_breakpoint, log_packets=log_packets)


def run_gdbserver(calls: int, work: Path, program: Path, *, with_breakpoint: bool,
                  log_packets: bool = False) -> float:
    with start_gdbserver(program, ["cond_loop", calls]) as server:
        return session("gdbserver", server, program, work, with_breakpoint=with_breakpoint,
                       log_packets=log_packets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls of f per run (default 100000)")
    parser.add_argument("--precise-calls", type=int, default=10_000_000,
                        help="calls of f in our extra, longer runs: the per-hit cost without the noise of "
                             "a continue's fixed costs (default 10000000; 0 skips them)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (default 5)")
    parser.add_argument("--work-dir", type=Path, help="keep builds and logs here (default: a temp dir)")
    args = parser.parse_args(argv)

    print(f"break f if i == -1 over {args.calls} calls of f: ns per false hit = (t(with) - t(without)) / calls; "
          f"{args.rounds} rounds, ours and gdbserver alternating")
    with work_directory(args.work_dir) as work:
        try:
            program = build_native([SRC / "agent_main.c"], work / "agent", include=[EXAMPLES])
            run_ours(VERIFY_CALLS, work, with_breakpoint=True, log_packets=True)
            run_gdbserver(VERIFY_CALLS, work, program, with_breakpoint=True, log_packets=True)
            ours_with, ours_without, native_with, native_without = [], [], [], []
            precise_with, precise_without = [], []
            for _ in range(args.rounds):
                ours_without.append(run_ours(args.calls, work, with_breakpoint=False))
                ours_with.append(run_ours(args.calls, work, with_breakpoint=True))
                native_without.append(run_gdbserver(args.calls, work, program, with_breakpoint=False))
                native_with.append(run_gdbserver(args.calls, work, program, with_breakpoint=True))
                if args.precise_calls:
                    precise_without.append(run_ours(args.precise_calls, work, with_breakpoint=False))
                    precise_with.append(run_ours(args.precise_calls, work, with_breakpoint=True))
        except BenchError as e:
            print(f"cond_bp: {e}", file=sys.stderr)
            return 1
    # The least disturbed run of each kind (the machine is shared: a run can
    # only be slowed down by others, never sped up).
    ours_ns = [1e9 * (w - wo) / args.calls for w, wo in zip(ours_with, ours_without)]
    native_ns = [1e9 * (w - wo) / args.calls for w, wo in zip(native_with, native_without)]
    ours = 1e9 * (min(ours_with) - min(ours_without)) / args.calls
    native = 1e9 * (min(native_with) - min(native_without)) / args.calls
    slowdown = min(ours_with) / min(ours_without)
    print(f"ours:      {ours:10.1f} ns per false hit (each round: {', '.join(f'{v:.1f}' for v in ours_ns)}); "
          f"continue to the end {1e3 * min(ours_without):.1f} ms without, {1e3 * min(ours_with):.1f} ms "
          f"with the breakpoint (condition {getattr(session, 'condition', '?')})")
    print(f"gdbserver: {native:10.1f} ns per false hit (each round: {', '.join(f'{v:.1f}' for v in native_ns)}); "
          f"continue to the end {1e3 * min(native_without):.1f} ms without, {1e3 * min(native_with):.1f} ms "
          f"with")
    figures = {
        "ours_ns_per_false_hit": ours,
        "gdbserver_ns_per_false_hit": native,
        "ours_over_gdbserver": ours / native,
        "ours_guest_slowdown": slowdown,
        "calls": args.calls,
    }
    if precise_with:
        precise_ns = [1e9 * (w - wo) / args.precise_calls for w, wo in zip(precise_with, precise_without)]
        precise = 1e9 * (min(precise_with) - min(precise_without)) / args.precise_calls
        figures["ours_ns_per_false_hit_precise"] = precise
        figures["ours_guest_slowdown_precise"] = min(precise_with) / min(precise_without)
        figures["precise_calls"] = args.precise_calls
        print(f"ours, {args.precise_calls} calls: {precise:.1f} ns per false hit "
              f"(each round: {', '.join(f'{v:.1f}' for v in precise_ns)}); the guest runs "
              f"{figures['ours_guest_slowdown_precise']:.2f}x as long with the breakpoint "
              f"({1e3 * min(precise_without):.1f} -> {1e3 * min(precise_with):.1f} ms)")
    print(f"ours / gdbserver: {ours / native:.4f} (target <= 0.01)")
    figures["cpu"] = cpu_model()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
