#!/usr/bin/env python3
"""Benchmark: cost of one breakpoint hit, this stub vs gdbserver.

The same C program (examples/bench_loop.c: call_loop(n) calls the non-inlined
``tick`` n times) runs twice under stock gdb:

* ours:      examples/build/bench_loop.O0.wasm under ``python -m gdbstub serve``;
* gdbserver: the same C built natively with ``gcc -O0 -g`` (scripts/bench/src/
             bench_loop_main.c), under ``gdbserver``.

gdb does ``break tick``, ``continue`` once, then times ``continue N1`` and
``continue N2`` (gdb's own Python clock around each command). ``continue N``
sets an ignore count that gdb implements *in gdb*: the target still stops at
every hit and gdb resumes it, so each hit is a full stop / report / resume round
trip (with always-inserted off gdb also removes, steps over and reinserts the
breakpoint). Seconds per hit = (t(N2) - t(N1)) / (N2 - N1), which cancels the
fixed cost of one command; the median over ``--reps`` pairs is reported.

Checks, so the figures count what they claim: gdb's hit count of the breakpoint
(``info breakpoints``) must equal the hits requested, and a last short phase
with ``set debug remote 1`` must show exactly one ``swbreak`` stop reply per
hit; its packets per hit are reported too.

With ``--profile OUT.prof`` a further session runs the stub under a cProfile
profiler in every thread and prints where its time goes per hit.

Prints the figures; the LAST line is one JSON object with ``ours_s_per_hit``,
``gdbserver_s_per_hit`` and ``ours_over_gdbserver`` (target: <= 1.0).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EXAMPLES, SRC, BenchError, build_native, median, parse_timings, print_mark, remote_packets, run_gdb,
    start_gdbserver, start_stub, summarize_profile, timed, timing_prelude, work_directory,
)

WASM = EXAMPLES / "build" / "bench_loop.O0.wasm"
FUNCTION = "tick"
_HIT_COUNT = re.compile(r"breakpoint already hit (\d+) times?")


def gdb_commands(port: int, *, program: Path | None, server_pids: list[int], n1: int, n2: int, reps: int,
                 verify: int) -> list[str]:
    """The gdb session; ``program`` is the native executable (gdbserver side)."""
    lines = ["set pagination off", "set confirm off", *timing_prelude(server_pids)]
    if program is not None:
        lines.append(f"file {program}")
    lines.append(f"target remote 127.0.0.1:{port}")
    if program is None:
        # gdb 13 reads the symbols of listed libraries by itself only when it
        # has an executable (post_create_inferior calls solib_add only then);
        # a stub without qXfer:exec-file gives it none. Loading them explicitly
        # works either way and costs nothing in the timed part.
        lines.append("sharedlibrary")
    lines += [f"break {FUNCTION}", "continue", print_mark("BENCH-FIRST-HIT")]
    for _ in range(reps):
        lines += timed("n1", f"continue {n1}")
        lines += timed("n2", f"continue {n2}")
    lines += ["info breakpoints", print_mark("BENCH-VERIFY"), "set debug remote 1", f"continue {verify}",
              "set debug remote 0", "info breakpoints", "detach"]
    return lines


def measure(name: str, server, program: Path | None, args: argparse.Namespace, work: Path) -> dict:
    """One gdb session against ``server``; returns the figures and checks them."""
    pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
    run = run_gdb(gdb_commands(server.port, program=program, server_pids=pids, n1=args.n1, n2=args.n2,
                               reps=args.reps, verify=args.verify), work)
    server.close()
    if "BENCH-VERIFY" not in run.stdout:
        raise BenchError(f"{name}: the gdb session stopped early\n--- stdout\n{run.stdout[-3000:]}\n"
                         f"--- stderr\n{run.stderr[-3000:]}\n--- server\n{server.output[-2000:]}")
    timings = parse_timings(run.stdout)
    t1, t2 = timings["n1"], timings["n2"]
    span = args.n2 - args.n1
    per_hit = [(b.wall - a.wall) / span for a, b in zip(t1, t2)]
    gdb_cpu = [(b.gdb_cpu - a.gdb_cpu) / span for a, b in zip(t1, t2)]
    server_cpu = [(b.server_cpu - a.server_cpu) / span for a, b in zip(t1, t2)]

    counts = [int(c) for c in _HIT_COUNT.findall(run.stdout)]
    timed_hits = 1 + args.reps * (args.n1 + args.n2)
    expected = [timed_hits, timed_hits + args.verify]
    if counts != expected:
        raise BenchError(f"{name}: gdb counted {counts} hits, expected {expected}")
    sent, received = remote_packets(run.stderr)
    # Only the verification phase logged packets; leave out detach's.
    sent = [p for p in sent if not p.startswith("D")]
    stops = [p for p in received if p.startswith(("T", "S"))]
    breakpoint_stops = [p for p in stops if "swbreak" in p]
    if len(breakpoint_stops) != args.verify:
        raise BenchError(f"{name}: {len(breakpoint_stops)} swbreak stop replies for {args.verify} hits")
    kinds = Counter(_packet_kind(p) for p in sent)
    return {
        "s_per_hit": median(per_hit),
        "s_per_hit_each_rep": per_hit,
        "s_per_hit_including_fixed": median([b.wall / args.n2 for b in t2]),
        "gdb_cpu_s_per_hit_each_rep": gdb_cpu,
        "server_cpu_s_per_hit_each_rep": server_cpu,
        "hits_counted": counts[-1],
        "packets_per_hit": len(sent) / args.verify,
        "stop_replies_per_hit": len(stops) / args.verify,
        "packet_kinds_per_hit": {k: round(v / args.verify, 2) for k, v in kinds.most_common()},
    }


def _packet_kind(packet: str) -> str:
    """A packet's request name: ``vCont;c``, ``m``, ``Z0``, ``qXfer``..."""
    if packet.startswith("vCont"):
        return packet.split(":")[0]
    match = re.match(r"(q[A-Za-z]+|v[A-Za-z]+|Q[A-Za-z]+|[Zz][0-4]|[A-Za-z?!])", packet)
    return match.group(1) if match else packet[:8]


def total_calls(args: argparse.Namespace) -> int:
    """call_loop's n: enough hits for every phase, with room to spare."""
    return 1 + args.reps * (args.n1 + args.n2) + args.verify + 1000


def run_ours(args, work: Path, *, profile_to: Path | None = None) -> dict:
    with start_stub(WASM, "call_loop", [total_calls(args)], profile_to=profile_to,
                    cache_dir=work / "images") as stub:
        figures = measure("ours", stub, None, args, work)
        status = stub.close()
        if status != 0:
            raise BenchError(f"the stub exited with status {status}:\n{stub.output[-2000:]}")
    return figures


def run_gdbserver(args, work: Path, program: Path) -> dict:
    with start_gdbserver(program, [total_calls(args)]) as server:
        return measure("gdbserver", server, program, args, work)


def merge(rounds: list[dict]) -> dict:
    """One side's figures over all rounds: the median of every (N1, N2) pair."""
    each = [v for r in rounds for v in r["s_per_hit_each_rep"]]
    merged = dict(rounds[-1])
    merged["s_per_hit_each_rep"] = each
    merged["s_per_hit"] = median(each)
    merged["s_per_hit_min"] = min(each)
    merged["gdb_cpu_s_per_hit"] = median([v for r in rounds for v in r["gdb_cpu_s_per_hit_each_rep"]])
    merged["server_cpu_s_per_hit"] = median([v for r in rounds for v in r["server_cpu_s_per_hit_each_rep"]])
    merged["s_per_hit_including_fixed"] = median([r["s_per_hit_including_fixed"] for r in rounds])
    return merged


def report(name: str, figures: dict) -> None:
    each = ", ".join(f"{1e3 * v:.3f}" for v in figures["s_per_hit_each_rep"])
    print(f"{name:9s}: {1e3 * figures['s_per_hit']:.3f} ms per hit, median (min "
          f"{1e3 * figures['s_per_hit_min']:.3f}; each pair: {each} ms; "
          f"t(N2)/N2 {1e3 * figures['s_per_hit_including_fixed']:.3f} ms); "
          f"{figures['hits_counted']} hits counted by gdb per session")
    print(f"{'':9s}  CPU per hit: gdb {1e3 * figures['gdb_cpu_s_per_hit']:.3f} ms, server "
          f"{1e3 * figures['server_cpu_s_per_hit']:.3f} ms (medians; the rest of the wall time is waiting)")
    print(f"{'':9s}  {figures['packets_per_hit']:.1f} packets and {figures['stop_replies_per_hit']:.1f} "
          f"stop replies per hit: {figures['packet_kinds_per_hit']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n1", type=int, default=100, help="hits of the short continue (default 100)")
    parser.add_argument("--n2", type=int, default=600, help="hits of the long continue (default 600)")
    parser.add_argument("--reps", type=int, default=3, help="(N1, N2) pairs timed (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="sessions per side, alternating ours and gdbserver (default 3)")
    parser.add_argument("--verify", type=int, default=20, help="hits of the packet-counting phase")
    parser.add_argument("--profile", type=Path, metavar="OUT.prof",
                        help="also profile the stub in a further session and print where time goes per hit")
    parser.add_argument("--work-dir", type=Path, help="keep builds and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not 0 < args.n1 < args.n2:
        parser.error("need 0 < N1 < N2")

    print(f"breakpoint on {FUNCTION}: per hit = (t(continue {args.n2}) - t(continue {args.n1})) / "
          f"{args.n2 - args.n1}; {args.rounds} rounds of {args.reps} pairs, ours and gdbserver alternating")
    with work_directory(args.work_dir) as work:
        try:
            program = build_native([SRC / "bench_loop_main.c"], work / "bench_loop", include=[EXAMPLES])
            rounds: dict[str, list[dict]] = {"ours": [], "gdbserver": []}
            for _ in range(args.rounds):
                rounds["ours"].append(run_ours(args, work))
                rounds["gdbserver"].append(run_gdbserver(args, work, program))
            ours, native = merge(rounds["ours"]), merge(rounds["gdbserver"])
            report("ours", ours)
            report("gdbserver", native)
            if args.profile is not None:
                profiled = run_ours(args, work, profile_to=args.profile.resolve())
                print(f"profiled run: {1e3 * profiled['s_per_hit']:.3f} ms per hit under the profiler; "
                      f"stub profile in {args.profile}")
                print(summarize_profile(args.profile, per=profiled["hits_counted"], unit="hit"))
        except BenchError as e:
            print(f"bp_roundtrip: {e}", file=sys.stderr)
            return 1
    ratio = ours["s_per_hit"] / native["s_per_hit"]
    print(f"ours / gdbserver: {ratio:.2f} (target <= 1.0)")
    print(json.dumps({
        "ours_s_per_hit": ours["s_per_hit"],
        "gdbserver_s_per_hit": native["s_per_hit"],
        "ours_over_gdbserver": ratio,
        "ours_server_cpu_s_per_hit": ours["server_cpu_s_per_hit"],
        "gdbserver_server_cpu_s_per_hit": native["server_cpu_s_per_hit"],
        "ours_packets_per_hit": ours["packets_per_hit"],
        "gdbserver_packets_per_hit": native["packets_per_hit"],
        "n1": args.n1, "n2": args.n2, "reps": args.reps,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
