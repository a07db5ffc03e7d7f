#!/usr/bin/env python3
"""Benchmark helper (issue 11): the DWARF translation's share of a cold
start, this checkout and a reference checkout side by side.

inspect_latency.py's ``dwarf_translate_cold_share`` times pairs of cold
starts (line-only image, then x32 image with translated DWARF) in fresh
processes by their CPU time. On a machine shared with other work one
start's CPU time moves by a quarter with the others' load, so a pair moves
by +-0.25 and one run's median of five pairs by about +-0.1 (docs/cvars.md):
two versions measured in separate runs cannot be compared. Here the pairs
of the two checkouts alternate (ours, reference, ours, ...), so a change of
load hits both sides alike, with the same measurement (inspect_latency's
cold start and share, the same interpreter and module).

The reference is a directory holding an importable ``codemem`` (its C
extension built) and ``gdbstub``, e.g. a worktree of main after
``scripts/bootstrap``, or an export of a commit with this checkout's
``codemem/_native.abi3.so`` copied in when csrc/ is the same::

    git worktree add /tmp/ref main && (cd /tmp/ref && scripts/bootstrap)
    python scripts/bench/cold_share_ab.py --reference /tmp/ref --pairs 8

Prints each pair's figures; the LAST line is one JSON object with
``dwarf_translate_cold_share`` and ``reference_cold_share``, each side's
share of its parts' least CPU time over its starts (inspect_latency's
estimator), their pairs' medians (``*_median``), both sides' pairs and
seconds (compile, line-only image, x32 image) and ``cpu``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bigmodule  # noqa: E402
from _common import ROOT, BenchError, cpu_model, median, work_directory  # noqa: E402
from inspect_latency import cold_start  # noqa: E402

#: The clock inspect_latency's share is reported in (cold_start: 0 wall, 1 CPU).
_CPU = 1


def pair(wasm: Path, root: Path) -> tuple[float, float, float]:
    """One pair of cold starts: (compile, line-only image, x32 image), CPU seconds."""
    lines_compile, lines_image, _ = cold_start(wasm, "lines", root)[_CPU]
    _, x32_image, _ = cold_start(wasm, "x32", root)[_CPU]
    return lines_compile, lines_image, x32_image


def share(compile_s: float, lines_image: float, x32_image: float) -> float:
    """(x32 image - line-only image) / (compile + line-only image)."""
    return (x32_image - lines_image) / (compile_s + lines_image)


def best_share(pairs: list[tuple[float, float, float]]) -> float:
    """inspect_latency's estimator: the share of each part's least CPU time
    over the starts (a neighbour's load only ever adds CPU time)."""
    return share(*(min(p[k] for p in pairs) for k in range(3)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="a checkout with an importable codemem (built) and gdbstub")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of cold starts per side (default 8)")
    parser.add_argument("--work-dir", type=Path, help="keep the bigmodule build here (default: a temp dir)")
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    if not (reference / "codemem").is_dir() or not (reference / "gdbstub").is_dir():
        print(f"cold_share_ab: {reference} holds no codemem/ and gdbstub/", file=sys.stderr)
        return 2
    pairs: dict[str, list[tuple[float, float, float]]] = {"ours": [], "reference": []}
    with work_directory(args.work_dir) as work:
        try:
            wasm, _ = bigmodule.build(work / "bigmodule")
            for k in range(max(1, args.pairs)):
                for side, root in (("ours", ROOT), ("reference", reference)):
                    pairs[side].append(pair(wasm, root))
                    print(f"pair {k + 1} {side:9s}: the translation adds {100 * share(*pairs[side][-1]):.1f} % "
                          f"of the CPU time", flush=True)
        except BenchError as e:
            print(f"cold_share_ab: {e}", file=sys.stderr)
            return 1
    shares = {side: [share(*p) for p in found] for side, found in pairs.items()}
    ours, theirs = best_share(pairs["ours"]), best_share(pairs["reference"])
    print(f"best of {len(shares['ours'])} starts each (CPU): ours {100 * ours:.1f} %, reference {100 * theirs:.1f} % "
          f"(target <= 20 %); median of the pairs: ours {100 * median(shares['ours']):.1f} %, "
          f"reference {100 * median(shares['reference']):.1f} %")
    print(json.dumps({"dwarf_translate_cold_share": ours, "reference_cold_share": theirs,
                      "dwarf_translate_cold_share_median": median(shares["ours"]),
                      "reference_cold_share_median": median(shares["reference"]),
                      "cold_share_pairs": shares["ours"], "reference_pairs": shares["reference"],
                      "cold_seconds": pairs["ours"], "reference_seconds": pairs["reference"],
                      "reference": str(reference), "cpu": cpu_model()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
