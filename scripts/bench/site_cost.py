#!/usr/bin/env python3
"""What-if benchmark: what a patch site costs in a dispatch-bound loop, by shape.

debug_overhead.py measures the shipped code.  This script asks *why* it costs
what it costs, by timing the -O2 ``cpu_kernel`` of bench_loop with debugging on
(sites disabled) against debugging off, with the debug code's sites compiled in
other shapes.  Some shapes break the patching rules (a site that straddles an
8-byte boundary cannot be patched atomically; a 2-byte site cannot hold a
``call``): the code they make runs correctly with every site disabled, which
is all that is timed here, and is never patched.  It is an experiment, not a
code path: the shapes are made by replacing the compiler's site table for the
one-process Python compiler (``WASM_GDBSTUB_C_COMPILER=0``) in a child process.

Shapes (``--shape``):

* ``shipped``: what the compiler emits (``0f 1f 44 00 00``, DS prefixes so it
  does not straddle 8 bytes).
* ``no_padding``: the same NOP without its DS prefixes (fewer bytes, the same
  instructions).
* ``two_byte``: ``66 90`` instead (far fewer bytes, the same instructions).
* ``carrier_aligned``: no NOP where the code just before the site ends with a
  64-bit store of a register to an operand-stack slot, ``mov [rsp+disp8], r64``
  (5 bytes), starting at an offset that is 3 or less mod 8: the store itself
  is the site, as it would be with *carrier-store sites* (docs/compiler-speed.md):
  enabled, the ``call`` replaces the store and whoever takes the call performs it.
  What a first implementation without re-encoding would remove.
* ``carrier_all``: the same for every 64-bit slot store that ends the code
  before a site and is not a jump target (``[rsp]`` and ``[rbp+disp8]`` stores,
  4 bytes, made 5 with a ``disp8`` of 0 or a DS prefix), at any offset: the
  upper bound of that design.

Each shape is measured in ``--processes`` fresh processes (the same code runs at
different speeds from one process to the next: where code, stacks and memory
land); each process times nodebug, the shipped debug code and the shape's
debug code interleaved (best of ``ROUNDS`` each, CPU time), so the shape is
compared with both in the same process.  The figures are medians of the
per-process ratios.  The last line is one JSON object: for each shape
``{shape}_debug_over_nodebug``, ``{shape}_over_shipped`` and
``{shape}_loop_instructions`` (debug hot loop), and ``cpu``.

    python scripts/bench/site_cost.py [--processes N] [--shape NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model  # noqa: E402
from debug_overhead import EXAMPLE, EXPORT, PASSES, ROUNDS, codemem_runner  # noqa: E402

SHAPES = ("shipped", "no_padding", "two_byte", "carrier_aligned", "carrier_all")


def _slot_store(code: bytearray, end: int) -> tuple[int, bool] | None:
    """``(length, needs_reencoding)`` if the bytes before ``end`` are a 64-bit
    register store to a frame slot as the compiler encodes it: ``REX.W 89 /r``
    with ``[rsp+disp8]`` (5 bytes), ``[rsp]`` or ``[rbp+disp8]`` (4 bytes)."""
    for n in (5, 4):
        b = code[end - n : end]
        if len(b) < n or b[0] not in (0x48, 0x4C) or b[1] != 0x89:
            continue
        mod, rm = b[2] >> 6, b[2] & 7
        if n == 5 and mod == 1 and rm == 4 and b[3] == 0x24:
            return 5, False
        if n == 4 and ((mod == 0 and rm == 4 and b[3] == 0x24) or (mod == 1 and rm == 5)):
            return 4, True
    return None


def _install(shape: str) -> None:
    """Replaces the Python compiler's site table by one that makes ``shape``
    (this process only), and lifts the checks those shapes break."""
    os.environ["WASM_GDBSTUB_C_COMPILER"] = "0"
    from codemem import frametable
    from codemem.x64 import asm as asm_module
    from codemem.x64 import compiler

    if shape == "shipped":
        return

    def add_call_sites(self, offsets, target):
        for off in offsets:
            enable = b"\xe8" + (target - off - 5).to_bytes(4, "little", signed=True)
            self.sites.append((off, frametable._SITE_STRUCT.pack(off, enable, frametable.SITE_DISABLED)))

    frametable.FrameTableBuilder.add_call_sites = add_call_sites
    frametable.FrameTable._check_site = lambda self, index, offset: None
    frametable.FrameTable.site_offsets = property(lambda self: [  # unchecked (see FrameTable.site_offsets)
        int.from_bytes(self._data[at : at + 4], "little")
        for at in range(self.header.sites_offset, self.header.sites_offset + self.num_sites
                        * frametable.SITE_RECORD_SIZE, frametable.SITE_RECORD_SIZE)])

    shipped_bytes, shipped_pad = compiler._SITE_BYTES, compiler._SITE_PAD
    if shape in ("no_padding", "two_byte"):
        site = compiler.SITE_DISABLED if shape == "no_padding" else b"\x66\x90"
        compiler._SITE_BYTES, compiler._SITE_PAD = (site,) * 8, (0,) * 8
        return

    # carrier_*: the inlined site code reads _SITE_PAD[r] (the site's offset
    # from the current end) then appends _SITE_BYTES[r]; both tables look at
    # the code being compiled.
    current = {}
    bound_at = {}
    original_compile = compiler._ModuleCompiler._compile_function
    original_bind = asm_module.Assembler.bind

    def compile_function(self, index, instrs):
        current["asm"] = self.asm
        return original_compile(self, index, instrs)

    def bind(self, label):
        bound_at[id(self)] = len(self.code)
        return original_bind(self, label)

    compiler._ModuleCompiler._compile_function = compile_function
    asm_module.Assembler.bind = bind
    decision = {}

    def carrier() -> int | None:
        """The site's offset from the end of the code if the store before it
        is the site (re-encoded in place for carrier_all), else None."""
        asm = current["asm"]
        code = asm.code
        end = len(code)
        found = _slot_store(code, end)
        if found is None or bound_at.get(id(asm)) == end:
            return None
        length, reencode = found
        if shape == "carrier_aligned":
            return -5 if not reencode and (end - 5) % 8 <= 3 else None
        if reencode:
            store = bytes(code[end - 4 :])
            if store[2] >> 6 == 0:  # [rsp] -> [rsp+0] (disp8)
                code[end - 4 :] = store[:2] + bytes([store[2] | 0x40, 0x24, 0])
            else:  # [rbp+disp8]: a DS prefix
                code[end - 4 :] = b"\x3e" + store
            return -4  # the code grew by one byte: the site starts 4 before the old end
        return -5

    class Pad(tuple):
        def __getitem__(self, r):
            decision["at"] = carrier()
            return shipped_pad[r] if decision["at"] is None else decision["at"]

    class Bytes(tuple):
        def __getitem__(self, r):
            return shipped_bytes[r] if decision.get("at") is None else b""

    compiler._SITE_PAD, compiler._SITE_BYTES = Pad(shipped_pad), Bytes(shipped_bytes)


def measure(shape: str) -> dict:
    """One process: nodebug, the shipped debug code and ``shape``'s debug code,
    interleaved, best of ROUNDS each (CPU time)."""
    os.environ["WASM_GDBSTUB_C_COMPILER"] = "0"  # _install replaces the Python compiler's tables
    import branch_alignment

    runners, keep = {}, []
    for name, debug in (("nodebug", False), ("shipped", True), ("shape", True)):
        if name == "shape":
            _install(shape)
        func, store = codemem_runner(EXAMPLE, debug)
        runners[name] = func
        keep.append(store)
    best = {name: float("inf") for name in runners}
    for _ in range(ROUNDS):
        for name, func in runners.items():
            t0 = time.process_time()
            func(PASSES)
            best[name] = min(best[name], time.process_time() - t0)
    for store in keep:
        store.close()
    loop = branch_alignment.analyse(EXAMPLE.read_bytes(), EXPORT, True)
    return {"shape": shape, "nodebug_s": best["nodebug"], "shipped_s": best["shipped"], "debug_s": best["shape"],
            "ratio": best["shape"] / best["nodebug"], "over_shipped": best["shape"] / best["shipped"],
            "loop_instructions": loop["loop_instructions"], "loop_sites": loop["loop_sites"]}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--shape", action="append", choices=SHAPES)
    parser.add_argument("--one", choices=SHAPES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    shapes = args.shape or list(SHAPES)
    runs: dict[str, list[dict]] = {shape: [] for shape in shapes}
    for _ in range(args.processes):
        for shape in shapes:
            done = subprocess.run([sys.executable, __file__, "--one", shape], capture_output=True, text=True,
                                  timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"measuring {shape} failed: {done.stderr.strip()[-2000:]}")
            runs[shape].append(json.loads(done.stdout.strip().splitlines()[-1]))
    result: dict = {"cpu": cpu_model(), "example": EXAMPLE.name, "export": EXPORT, "passes": PASSES,
                    "rounds": ROUNDS, "processes": args.processes}
    for shape, rows in runs.items():
        ratio = statistics.median(row["ratio"] for row in rows)
        over_shipped = statistics.median(row["over_shipped"] for row in rows)
        per_process = ", ".join(f"{row['ratio']:.3f}" for row in rows)
        print(f"{shape:16s} debug / nodebug {ratio:.3f} (per process: {per_process}); over the shipped "
              f"debug code {over_shipped:.3f}; debug hot loop {rows[0]['loop_instructions']} instructions, "
              f"{rows[0]['loop_sites']} of them sites")
        result[f"{shape}_debug_over_nodebug"] = round(ratio, 4)
        result[f"{shape}_over_shipped"] = round(over_shipped, 4)
        result[f"{shape}_loop_instructions"] = rows[0]["loop_instructions"]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
