#!/usr/bin/env python3
"""Benchmark: gdb reading 16 MiB of target memory, this stub vs gdbserver.

The same C program (scripts/bench/src/mem_buffer.c: a 16 MiB static buffer,
filled with a position-dependent pattern, then a call to the non-inlined
``ready``) runs twice under stock gdb:

* ours:      built with clang-19 to wasm32 (the buffer is in linear memory),
             under ``python -m gdbstub serve``; gdb reads it through the
             linear-memory mirror at [0, size), at the buffer's wasm address
             (asked of the module with wasmtime: ``buffer_address()``);
* gdbserver: built natively with ``gcc -O0 -g``; gdb reads ``&buffer``.

gdb breaks on ``ready`` and times ``dump binary memory FILE START START+16MiB``
(gdb's own Python clock around the command) ``--reps`` times per session, with
``set remote memory-read-packet-size`` left at its default. The two dumps must
be identical and match the pattern (checked at sampled offsets), and a short
logged dump (``set debug remote 1``) shows the ``m`` request size gdb used.

With ``--profile OUT.prof`` a further session runs the stub under a cProfile
profiler in every thread and prints where its time goes per ``m`` packet.

Prints the figures; the LAST line is one JSON object with ``ours_mib_s``,
``gdbserver_mib_s`` and ``ours_over_gdbserver`` (ours / gdbserver in MiB/s;
target: >= 1.0).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    SRC, BenchError, build_native, build_wasm, median, parse_timings, print_mark, remote_packets, run_gdb,
    start_gdbserver, start_stub, summarize_profile, timed, timing_prelude, work_directory,
)

SIZE = 16 << 20
MIB = 1 << 20
SOURCE = SRC / "mem_buffer.c"
LOGGED_DUMP = 256 << 10  # bytes read with packet logging on
_ADDRESS = re.compile(r"^BENCH-ADDRESS (\d+)$", re.M)
_PACKET_SIZE_SETTING = re.compile(r"^The memory-read-packet-size is .*$", re.M)


def pattern_byte(i: int) -> int:
    """mem_buffer.c's fill: buffer[i] = i * 131 + (i >> 12), as an unsigned char."""
    return (i * 131 + (i >> 12)) & 0xFF


def wasm_buffer_address(wasm: Path) -> int:
    """``buffer_address()`` of the module, run under wasmtime (the reference
    runtime): where the buffer sits in linear memory, hence in the stub's mirror."""
    import wasmtime

    store = wasmtime.Store()
    module = wasmtime.Module(store.engine, wasm.read_bytes())
    instance = wasmtime.Instance(store, module, [])
    address = instance.exports(store)["buffer_address"](store)
    memory = instance.exports(store)["memory"]
    if address + SIZE > memory.data_len(store):
        raise BenchError(f"linear memory ({memory.data_len(store)} bytes) does not hold the buffer at {address:#x}")
    return address


def gdb_commands(port: int, *, program: Path | None, server_pids: list[int], address: int | None,
                 dump_file: Path, logged_file: Path, reps: int) -> list[str]:
    """The gdb session; ``program`` is the native executable (gdbserver side),
    ``address`` the buffer's address when gdb cannot evaluate ``&buffer``."""
    lines = ["set pagination off", "set confirm off", *timing_prelude(server_pids)]
    if program is not None:
        lines.append(f"file {program}")
    lines.append(f"target remote 127.0.0.1:{port}")
    if program is None:
        lines.append("sharedlibrary")  # as in bp_roundtrip.py: symbols of listed libraries, whatever the stub offers
    lines += ["break ready", "continue", "show remote memory-read-packet-size"]
    start = "(long)&buffer" if address is None else str(address)
    lines += [f"python _bench_start = int(gdb.parse_and_eval({start!r}))",
              "python print('BENCH-ADDRESS', _bench_start)"]
    dump = f"python gdb.execute('dump binary memory {{}} {{}} {{}}'.format({str(dump_file)!r}, _bench_start, " \
           f"_bench_start + {SIZE}))"
    for _ in range(reps):
        lines += timed("dump", dump)
    logged = f"python gdb.execute('dump binary memory {{}} {{}} {{}}'.format({str(logged_file)!r}, " \
             f"_bench_start, _bench_start + {LOGGED_DUMP}))"
    lines += [print_mark("BENCH-VERIFY"), "set debug remote 1", logged, "set debug remote 0", "detach"]
    return lines


def measure(name: str, server, program: Path | None, address: int | None, args, work: Path) -> dict:
    """One gdb session against ``server``: the figures, the dump file, checks."""
    dump_file, logged_file = work / f"{name}.dump", work / f"{name}.logged.dump"
    pids = [server.pid] + ([server.inferior_pid] if server.inferior_pid else [])
    run = run_gdb(gdb_commands(server.port, program=program, server_pids=pids, address=address,
                               dump_file=dump_file, logged_file=logged_file, reps=args.reps), work)
    server.close()
    if "BENCH-VERIFY" not in run.stdout:
        raise BenchError(f"{name}: the gdb session stopped early\n--- stdout\n{run.stdout[-3000:]}\n"
                         f"--- stderr\n{run.stderr[-3000:]}\n--- server\n{server.output[-2000:]}")
    dumps = parse_timings(run.stdout)["dump"]
    if dump_file.stat().st_size != SIZE:
        raise BenchError(f"{name}: the dump holds {dump_file.stat().st_size} bytes, not {SIZE}")
    sent, _received = remote_packets(run.stderr)
    start = int(_ADDRESS.search(run.stdout).group(1))
    # The dump's reads only (gdb may read elsewhere, e.g. around the pc at detach).
    reads = [(int(m.group(1), 16), int(m.group(2), 16))
             for m in (re.fullmatch(r"m([0-9a-f]+),([0-9a-f]+)", p) for p in sent) if m]
    reads = [(address, length) for address, length in reads if start <= address < start + LOGGED_DUMP]
    if not reads or reads[0][0] != start or reads[-1][0] + reads[-1][1] < start + LOGGED_DUMP:
        raise BenchError(f"{name}: the logged dump's m packets do not cover the {LOGGED_DUMP} bytes: {reads[:3]}...")
    requested = Counter(length for _address, length in reads).most_common(1)[0][0]
    # A reply may hold fewer bytes than asked (gdb then asks again from where it
    # ended): the step between consecutive requests is what one packet carried.
    carried = Counter(b[0] - a[0] for a, b in zip(reads, reads[1:])).most_common(1)[0][0] if len(reads) > 1 \
        else requested
    setting = _PACKET_SIZE_SETTING.search(run.stdout)
    walls = [t.wall for t in dumps]
    return {
        "address": start,
        "dump_file": dump_file,
        "mib_s": SIZE / MIB / median(walls),
        "mib_s_each": [SIZE / MIB / w for w in walls],
        "gdb_cpu_s": median([t.gdb_cpu for t in dumps]),
        "server_cpu_s": median([t.server_cpu for t in dumps]),
        "wall_s": median(walls),
        "m_request_bytes": requested,
        "m_packet_bytes": carried,
        "m_packets_per_dump": SIZE / carried,
        "packet_size_setting": setting.group(0) if setting else "?",
    }


def check_dumps(ours: Path, native: Path) -> None:
    """Both dumps are the same 16 MiB, and they are the program's pattern."""
    a, b = ours.read_bytes(), native.read_bytes()
    if a != b:
        first = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
        raise BenchError(f"the dumps differ first at offset {first:#x}")
    rng = random.Random(0)
    for i in [0, SIZE - 1, *rng.sample(range(SIZE), 4096)]:
        if a[i] != pattern_byte(i):
            raise BenchError(f"byte {i:#x} of the dumps is {a[i]:#04x}, the program wrote {pattern_byte(i):#04x}")


def report(name: str, figures: dict) -> None:
    each = ", ".join(f"{v:.1f}" for v in figures["mib_s_each"])
    print(f"{name:9s}: {figures['mib_s']:.1f} MiB/s median (each dump: {each}); "
          f"{1e3 * figures['wall_s']:.1f} ms per 16 MiB: CPU gdb {1e3 * figures['gdb_cpu_s']:.1f} ms, "
          f"server {1e3 * figures['server_cpu_s']:.1f} ms")
    print(f"{'':9s}  m packets asking {figures['m_request_bytes']} bytes, answered with "
          f"{figures['m_packet_bytes']} ({figures['m_packets_per_dump']:.0f} "
          f"per 16 MiB; {1e6 * figures['wall_s'] / figures['m_packets_per_dump']:.1f} us each); "
          f"buffer at {figures['address']:#x}; gdb: {figures['packet_size_setting']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed dumps per session (default 3)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="sessions per side, alternating ours and gdbserver (default 2)")
    parser.add_argument("--profile", type=Path, metavar="OUT.prof",
                        help="also profile the stub in a further session and print where time goes per packet")
    parser.add_argument("--work-dir", type=Path, help="keep builds and dumps here (default: a temp dir)")
    args = parser.parse_args(argv)

    print(f"dump binary memory of {SIZE // MIB} MiB; {args.rounds} rounds of {args.reps} dumps, "
          "ours and gdbserver alternating; memory-read-packet-size left at its default")
    with work_directory(args.work_dir) as work:
        try:
            wasm = build_wasm([SOURCE], work / "mem_buffer.wasm", exports=["fill_and_stop", "buffer_address"])
            program = build_native([SOURCE], work / "mem_buffer")
            address = wasm_buffer_address(wasm)
            rounds: dict[str, list[dict]] = {"ours": [], "gdbserver": []}
            for _ in range(args.rounds):
                with start_stub(wasm, "fill_and_stop", [], cache_dir=work / "images") as stub:
                    rounds["ours"].append(measure("ours", stub, None, address, args, work))
                with start_gdbserver(program, []) as server:
                    rounds["gdbserver"].append(measure("gdbserver", server, program, None, args, work))
                check_dumps(rounds["ours"][-1]["dump_file"], rounds["gdbserver"][-1]["dump_file"])
            ours, native = merge(rounds["ours"]), merge(rounds["gdbserver"])
            report("ours", ours)
            report("gdbserver", native)
            print("dumps identical on both sides and equal to the program's pattern")
            if args.profile is not None:
                profile = args.profile.resolve()
                with start_stub(wasm, "fill_and_stop", [], cache_dir=work / "images", profile_to=profile) as stub:
                    profiled = measure("ours", stub, None, address, args, work)
                packets = round(args.reps * profiled["m_packets_per_dump"])
                print(f"profiled run: {profiled['mib_s']:.1f} MiB/s under the profiler; stub profile in {profile}")
                print(summarize_profile(profile, per=packets, unit="m packet"))
        except BenchError as e:
            print(f"mem_read: {e}", file=sys.stderr)
            return 1
    ratio = ours["mib_s"] / native["mib_s"]
    print(f"ours / gdbserver: {ratio:.2f} (target >= 1.0)")
    print(json.dumps({
        "ours_mib_s": ours["mib_s"],
        "gdbserver_mib_s": native["mib_s"],
        "ours_over_gdbserver": ratio,
        "ours_m_request_bytes": ours["m_request_bytes"],
        "ours_m_reply_bytes": ours["m_packet_bytes"],
        "gdbserver_m_request_bytes": native["m_request_bytes"],
        "gdbserver_m_reply_bytes": native["m_packet_bytes"],
        "ours_server_cpu_s_per_16mib": ours["server_cpu_s"],
        "gdbserver_server_cpu_s_per_16mib": native["server_cpu_s"],
    }))
    return 0


def merge(rounds: list[dict]) -> dict:
    """One side's figures over all rounds: the median of every dump."""
    merged = dict(rounds[-1])
    merged["mib_s_each"] = [v for r in rounds for v in r["mib_s_each"]]
    merged["mib_s"] = median(merged["mib_s_each"])
    merged["wall_s"] = SIZE / MIB / merged["mib_s"]
    merged["gdb_cpu_s"] = median([r["gdb_cpu_s"] for r in rounds])
    merged["server_cpu_s"] = median([r["server_cpu_s"] for r in rounds])
    return merged


if __name__ == "__main__":
    sys.exit(main())
