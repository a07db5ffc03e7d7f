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

* ``shipped``: what the compiler emits: carrier-store sites (the store of the
  previous instruction's result to its slot *is* the site wherever the code
  before a point ends with one, docs/compiler-speed.md), deferred carriers
  (a NOP naming that store, where the instruction at the point consumes the
  value from its register and cannot trap: the store is left out), else the
  NOP ``0f 1f 44 00 00``, each with DS prefixes so it does not straddle 8 bytes.
* ``deferred_constants``: no producer carriers (docs/compiler-speed.md
  "Producer carriers (built)"): a constant the next instruction consumes is
  a deferred carrier, a NOP naming its store, as before them.
* ``slot_carriers``: no local or move carriers (docs/compiler-speed.md
  "Local and move carriers"): a NOP site after a ``local.set``/``local.tee``,
  as before them (the shipped code of the previous step; the tee's copy to
  its mirror still goes first, which changes no instruction count).
* ``no_nop_sites`` and ``no_nops``: upper bounds, not debuggable: the NOP
  sites left out (nothing at those points), and for ``no_nops`` the deferred
  carriers' NOPs too (the store dropped, as without debugging): what is left
  of the debug code's cost is the carriers' DS prefixes and where the code
  lands (a Store's private copy, other offsets).
* ``producer_carriers`` and ``producer_loads``: upper bounds of *producer
  carriers* (docs/compiler-speed.md "Producer carriers (measured, not
  built)"), not debuggable: a deferred carrier whose value came from a
  constant's ``mov r32, imm32`` or a register's ``mov r64, r64`` (given two
  DS prefixes, as a move carrier) loses its NOP, as if that instruction were
  the site; ``producer_loads`` also takes a local's load from its home
  ``mov r64, [rbp+disp8]`` (one DS prefix).  The constant is left in the
  register the cache chose (r8-r15 take a REX: 6 bytes, no alignment
  prefixes), which a built version would move to eax..edi; every other site
  is as shipped.
* ``stored_carriers``: no deferred carriers (docs/compiler-speed.md "Deferred
  carrier stores"): every carrier-store site is the store itself, as before
  deferral; the shapes below have no deferred carriers either.
* ``carrier_aligned``: carrier stores only where the 5-byte
  ``mov [rsp+disp8], r64`` already starts at 0-3 mod 8 (no DS prefixes, no
  re-encoding of ``mov [rsp], r64``): the first version of this design.
* ``nop_sites``: no carrier stores, a NOP at every sequence point (what the
  compiler shipped before carrier-store sites).
* ``no_padding``: ``nop_sites`` without the NOP's DS prefixes (fewer bytes, the
  same instructions; not patchable atomically).
* ``two_byte``: ``nop_sites`` with ``66 90`` instead (far fewer bytes, the same
  instructions; cannot hold a call).

Each shape is measured in ``--processes`` fresh processes (the same code runs at
different speeds from one process to the next: where code, stacks and memory
land); each process times nodebug, the shipped debug code and the shape's
debug code interleaved (best of ``ROUNDS`` each, CPU time), so the shape is
compared with both in the same process.  The figures are medians of the
per-process ratios.  The last line is one JSON object: for each shape
``{shape}_debug_over_nodebug``, ``{shape}_over_shipped`` and
``{shape}_loop_instructions`` (debug hot loop), and ``cpu``.

    python scripts/bench/site_cost.py [--processes N] [--shape NAME ...]
    python scripts/bench/site_cost.py --producers [MODULE.wasm ...]

``--producers`` times nothing: it compiles the modules (default: every
examples/build module) with debugging and counts their deferrable slot stores
(each a producer carrier where a constant produced the value, else a deferred
carrier) and those with a producer a stop could replay, by kind (``constant_low``: already
in eax..edi, 5 bytes; ``constant_rex``: r8-r15, a REX before the 5 bytes).
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

SHAPES = ("shipped", "deferred_constants", "slot_carriers", "no_nop_sites", "no_nops", "producer_carriers",
          "producer_loads",
          "stored_carriers", "carrier_aligned", "nop_sites", "no_padding", "two_byte")


def _install(shape: str) -> None:
    """Replaces the Python compiler's site choice by one that makes ``shape``
    (this process only), and lifts the checks those shapes break."""
    os.environ["WASM_GDBSTUB_C_COMPILER"] = "0"
    from codemem import frametable
    from codemem.x64 import compiler

    if shape == "shipped":
        return
    if shape == "deferred_constants":
        defer = compiler._ModuleCompiler._defer_carrier_store

        def no_producer(self) -> int:
            self.producer_end = -1
            return defer(self)

        compiler._ModuleCompiler._defer_carrier_store = no_producer
        return
    if shape == "slot_carriers":
        carrier_site = compiler._ModuleCompiler._carrier_site

        def slot_stores_only(self) -> int:
            if compiler._carrier_kind(self.asm.code) in (compiler._SLOT_STORE, compiler._SLOT_STORE_RSP):
                return carrier_site(self)
            self.asm.carrier_end = -1
            return self._site()

        compiler._ModuleCompiler._carrier_site = slot_stores_only
        return
    if shape in ("no_nop_sites", "no_nops"):
        # Upper bounds, not debuggable: NOP sites emit nothing and no site is
        # recorded (the carriers stay the instructions they are, prefixes and all).
        compiler._SITE_BYTES, compiler._SITE_PAD = (b"",) * 8, (0,) * 8
        compiler._ModuleCompiler._site = lambda self: len(self.asm.code)
        recorded = []

        def one_record(self, offsets, target, code=None):  # debug code has sites: keep one, unchecked
            if offsets and not recorded:
                recorded.append(offsets[0])
                enable = b"\xe8" + (target - offsets[0] - 5).to_bytes(4, "little", signed=True)
                self.sites.append((offsets[0], frametable._SITE_STRUCT.pack(offsets[0], enable,
                                                                            frametable.SITE_DISABLED)))

        frametable.FrameTableBuilder.add_call_sites = one_record
        frametable.FrameTable._check_site = lambda self, index, offset: None
        if shape == "no_nops":
            def drop_store(self) -> int:  # what nodebug does with a deferrable store
                code = self.asm.code
                del code[len(code) - compiler._carrier_kind(code):]
                self.asm.carrier_end = -1
                return len(code)

            compiler._ModuleCompiler._defer_carrier_store = drop_store
        return
    if shape in ("producer_carriers", "producer_loads"):
        _install_producer_carriers(compiler, frametable, loads=shape == "producer_loads")
        return
    # Every other shape is one without deferred carriers: each carrier store
    # stays a store (debug code only; the nodebug code timed beside it is the
    # shipped one, which has no deferred stores at all).
    compiler._ModuleCompiler._store_deferrable = lambda self, op, d, last_point: False
    if shape == "stored_carriers":
        return
    carrier_site = compiler._ModuleCompiler._carrier_site
    if shape == "carrier_aligned":
        def aligned_only(self) -> int:
            code = self.asm.code
            end = len(code)
            if code[end - 1] != 0x24 and ((end - 5) & 7) <= 3:  # 5 bytes, placed well: no change
                return carrier_site(self)
            self.asm.carrier_end = -1
            return self._site()

        compiler._ModuleCompiler._carrier_site = aligned_only
        return
    compiler._ModuleCompiler._carrier_site = compiler._ModuleCompiler._site
    if shape == "nop_sites":
        return

    def add_call_sites(self, offsets, target, code=None):
        for off in offsets:
            enable = b"\xe8" + (target - off - 5).to_bytes(4, "little", signed=True)
            self.sites.append((off, frametable._SITE_STRUCT.pack(off, enable, frametable.SITE_DISABLED)))

    frametable.FrameTableBuilder.add_call_sites = add_call_sites
    frametable.FrameTable._check_site = lambda self, index, offset: None
    frametable.FrameTable.site_offsets = property(lambda self: [  # unchecked (see FrameTable.site_offsets)
        int.from_bytes(self._data[at : at + 4], "little")
        for at in range(self.header.sites_offset, self.header.sites_offset + self.num_sites
                        * frametable.SITE_RECORD_SIZE, frametable.SITE_RECORD_SIZE)])
    site = compiler.SITE_DISABLED if shape == "no_padding" else b"\x66\x90"
    compiler._SITE_BYTES, compiler._SITE_PAD = (site,) * 8, (0,) * 8


#: Producer kinds _producer finds (site_cost's counts; "load" only for producer_loads).
PRODUCER_KINDS = ("constant", "move", "load")


def _producer(code: bytes, last_point: int, store_start: int, register: int) -> tuple[str, int] | None:
    """``(kind, start)`` of the instruction that ends right before the
    deferrable slot store at ``store_start`` and produced its ``register``,
    when it is one a stop could replay from the regfile (a PRODUCER_KINDS
    instruction) and starts at or after the previous sequence point
    ``last_point`` (the code from there disassembles linearly: a point's
    offset is its site's start, after the site's DS prefixes); else None."""
    import capstone
    from capstone import x86

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    last = None
    for ins in md.disasm(code[last_point:store_start], last_point):
        last = ins
    if last is None or last.address + last.size != store_start or last.mnemonic != "mov":
        return None
    dst, src = last.operands
    if dst.type != x86.X86_OP_REG or _HW_NUMBER.get(last.reg_name(dst.reg)) != register:
        return None
    if src.type == x86.X86_OP_IMM and last.size <= 6 and last.bytes[-5] & 0xF8 == 0xB8:
        return "constant", last.address
    if src.type == x86.X86_OP_REG and last.size == 3 and dst.size == 8:
        return "move", last.address
    if (src.type == x86.X86_OP_MEM and last.size == 4 and last.reg_name(src.mem.base) == "rbp"
            and src.mem.index == 0 and -128 <= src.mem.disp < 0):
        return "load", last.address
    return None


_HW_NUMBER = {name: k for k, names in enumerate((
    ("rax", "eax"), ("rcx", "ecx"), ("rdx", "edx"), ("rbx", "ebx"), ("rsp", "esp"), ("rbp", "ebp"),
    ("rsi", "esi"), ("rdi", "edi"), *((f"r{n}", f"r{n}d") for n in range(8, 16)))) for name in names}


def _install_producer_carriers(compiler, frametable, loads: bool) -> None:
    """The producer_carriers / producer_loads shapes (see the module
    docstring): a deferrable store whose producer _producer finds is dropped
    with no site (as without debugging), the producer padded to 5 bytes; the
    site records are one (unchecked), as for no_nops."""
    store_deferrable = compiler._ModuleCompiler._store_deferrable
    defer = compiler._ModuleCompiler._defer_carrier_store
    found = PRODUCERS_FOUND

    def remember_point(self, op, d, last_point):
        self._last_point_seen = last_point
        return store_deferrable(self, op, d, last_point)

    def producer_site(self) -> int:
        code = self.asm.code
        kind = compiler._carrier_kind(code)
        start = len(code) - kind
        register = (code[start] & 4) << 1 | (code[start + 2] >> 3 & 7)
        producer = _producer(bytes(code), self._last_point_seen, start, register)
        if producer is None or (producer[0] == "load" and not loads):
            return defer(self)
        found[producer[0]] += 1
        del code[start:]
        self.asm.carrier_end = -1
        name, at = producer
        pad = {"constant": 0, "move": 2, "load": 1}[name]
        code[at:at] = bytes([frametable.SITE_PAD_PREFIX]) * pad
        return at + pad  # the point's offset: the producer is its site

    def one_record(self, offsets, target, code=None):  # debug code has sites: keep one, unchecked
        if offsets and not self.sites:
            enable = b"\xe8" + (target - offsets[0] - 5).to_bytes(4, "little", signed=True)
            self.sites.append((offsets[0], frametable._SITE_STRUCT.pack(offsets[0], enable, frametable.SITE_DISABLED)))

    compiler._ModuleCompiler._store_deferrable = remember_point
    compiler._ModuleCompiler._defer_carrier_store = producer_site
    frametable.FrameTableBuilder.add_call_sites = one_record
    frametable.FrameTable._check_site = lambda self, index, offset: None


def count_producers(paths: list[Path]) -> dict[str, int]:
    """The ``--producers`` counts (module docstring) over ``paths``, from the
    one-process Python compiler (this process's compiler is wrapped: call it
    in a process of its own); the code compiled is the shipped code."""
    os.environ["WASM_GDBSTUB_C_COMPILER"] = "0"
    from codemem.wasm.decoder import decode_module
    from codemem.x64 import compiler

    store_deferrable = compiler._ModuleCompiler._store_deferrable
    defer = compiler._ModuleCompiler._defer_carrier_store
    counts = dict.fromkeys(("deferred", *PRODUCER_KINDS, "constant_low", "constant_rex"), 0)

    def remember_point(self, op, d, last_point):
        self._last_point_seen = last_point
        return store_deferrable(self, op, d, last_point)

    def count(self) -> int:
        code = self.asm.code
        start = len(code) - compiler._carrier_kind(code)
        register = (code[start] & 4) << 1 | (code[start + 2] >> 3 & 7)
        producer = _producer(bytes(code), self._last_point_seen, start, register)
        counts["deferred"] += 1
        if producer is not None:
            counts[producer[0]] += 1
            if producer[0] == "constant":
                counts["constant_low" if code[producer[1]] & 0xF8 == 0xB8 else "constant_rex"] += 1
        return defer(self)

    compiler._ModuleCompiler._store_deferrable = remember_point
    compiler._ModuleCompiler._defer_carrier_store = count
    for path in paths:
        compiler.compile_module(decode_module(path.read_bytes()), debug=True)
    return counts


#: How many deferred carriers the producer shapes turned into producers, by kind (this process).
PRODUCERS_FOUND = dict.fromkeys(PRODUCER_KINDS, 0)


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
    producers = dict(PRODUCERS_FOUND)  # the whole module's, before analyse compiles it again
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
            "loop_instructions": loop["loop_instructions"], "loop_sites": loop["loop_sites"], "producers": producers}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--shape", action="append", choices=SHAPES)
    parser.add_argument("--one", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--producers", nargs="*", type=Path, metavar="MODULE")
    args = parser.parse_args(argv)
    if args.producers is not None:
        paths = args.producers or sorted((ROOT / "examples" / "build").glob("*.wasm"))
        counts = count_producers(paths)
        print(f"{len(paths)} modules: {counts['deferred']} deferrable slot stores; producers a stop could replay: "
              f"{counts['constant']} constants ({counts['constant_low']} in eax..edi, {counts['constant_rex']} "
              f"in r8-r15), {counts['move']} register moves, {counts['load']} local home loads")
        print(json.dumps(counts))
        return
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
              f"{rows[0]['loop_sites']} of them sites"
              + (f"; producers (whole module) {rows[0]['producers']}" if any(rows[0]["producers"].values()) else ""))
        result[f"{shape}_debug_over_nodebug"] = round(ratio, 4)
        result[f"{shape}_over_shipped"] = round(over_shipped, 4)
        result[f"{shape}_loop_instructions"] = rows[0]["loop_instructions"]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
