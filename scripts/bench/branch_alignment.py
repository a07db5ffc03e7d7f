#!/usr/bin/env python3
"""Static check: branches on 32-byte boundaries in compiled guest code (Intel's JCC erratum).

On Intel's Skylake-derived cores the microcode fix for the "JCC erratum" keeps
every 32-byte chunk of code that holds a jump, call or return (or a cmp/test/
add/sub/and/inc/dec macro-fused with the jcc after it) crossing or ending at a
32-byte boundary out of the decoded-uop cache; a loop with such a unit runs
from the legacy decoders, much slower (Intel, "Mitigations for Jump
Conditional Code Erratum", 2019).  Patch sites shift code by a few bytes, so
the same loop can be clean with debugging off and hit with it on: one
explanation of an Intel-only debug slowdown that no AMD machine shows.

This script compiles a module in both modes, finds its loops (backward jumps
inside a function) and counts the branch units on a boundary, in the hot
(innermost nested) loop and in the whole code.  It measures nothing and needs
no Intel CPU: the layout is the same on every machine.

    python scripts/bench/branch_alignment.py [MODULE.wasm [EXPORT]]

(default: examples/build/bench_loop.O2.wasm, cpu_kernel).  The last line is
one JSON object; scripts/bench/debug_overhead.py reports the same counts.
"""
from __future__ import annotations

import bisect
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import capstone  # noqa: E402

from _common import cpu_model  # noqa: E402
from codemem.frametable import FrameTable  # noqa: E402
from codemem.wasm.decoder import decode_module  # noqa: E402
from codemem.x64.compiler import compile_module  # noqa: E402

EXAMPLE = ROOT / "examples" / "build" / "bench_loop.O2.wasm"
EXPORT = "cpu_kernel"
BOUNDARY = 32
#: Instructions that macro-fuse with an adjacent following jcc (Intel).
FUSIBLE = ("cmp", "test", "add", "sub", "and", "inc", "dec")


def branch_hazards(listing) -> list[tuple[int, str]]:
    """``(address, text)`` of every branch unit in ``listing`` (capstone
    ``disasm_lite`` tuples) that crosses or ends at a 32-byte boundary."""
    found = []
    previous = None
    for address, size, mnemonic, operands in listing:
        if mnemonic.startswith("j") or mnemonic in ("call", "ret"):
            unit = address
            if (mnemonic not in ("jmp", "call") and previous is not None and previous[2] in FUSIBLE
                    and previous[0] + previous[1] == address):
                unit = previous[0]
            end = address + size
            if unit // BOUNDARY != (end - 1) // BOUNDARY or end % BOUNDARY == 0:
                fused = f"{previous[2]} + " if unit != address else ""
                found.append((unit, f"{fused}{mnemonic} {operands} at {address:#x}, unit {unit:#x}..{end:#x}"))
        previous = (address, size, mnemonic, operands)
    return found


def analyse(wasm: bytes, export: str, debug: bool) -> dict:
    """Hazard counts of ``export``'s innermost nested loop and of all code."""
    info = decode_module(wasm)
    func_index = next(e.index for e in info.exports if e.name == export)
    compiled = compile_module(info, debug=debug)
    table = FrameTable(compiled.frame_table)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    total = 0
    for f in table.functions():
        total += len(branch_hazards(md.disasm_lite(compiled.code[f.native_start:f.native_end], f.native_start)))
    f = table.function_by_wasm_index(func_index)
    listing = list(md.disasm_lite(compiled.code[f.native_start:f.native_end], f.native_start))
    loops = [(int(ops, 16), addr + size) for addr, size, mn, ops in listing
             if mn.startswith("j") and ops.startswith("0x") and int(ops, 16) <= addr]
    nested = [loop for loop in loops if any(o != loop and o[0] <= loop[0] and loop[1] <= o[1] for o in loops)]
    head, end = min(nested or loops, key=lambda loop: loop[1] - loop[0])
    body = [ins for ins in listing if head <= ins[0] < end]
    hazards = branch_hazards(body)
    site_offsets = table.site_offsets if debug else []
    sites, padding, carriers = loop_nops(body, site_offsets)
    deferred = sum(1 for k, off in enumerate(site_offsets) if head <= off < end and is_deferred(table.site(k)))
    return {"loop": (head, end), "loop_bytes": end - head, "loop_instructions": len(body),
            "loop_sites": sites, "loop_carrier_sites": carriers, "loop_deferred_sites": deferred,
            "loop_padding_nops": padding,
            "loop_hazards": [text for _, text in hazards], "code_hazards": total}


def is_deferred(site) -> bool:
    """Whether ``site`` (a PatchSite) is a deferred carrier: a NOP standing for
    a store that is in neither mode's code (frametable.deferred_carrier_bytes)."""
    return site.deferred


def loop_nops(body, site_offsets: list[int]) -> tuple[int, int, int]:
    """``(sites, padding, carriers)``: how many instructions of ``body``
    (capstone ``disasm_lite`` tuples) are patch sites (the instruction holds
    a site offset: a site's DS prefixes come before it), how many other NOPs
    there are (branch and loop alignment, return-site padding), and how many
    of the sites are carriers (a site that is the previous instruction's last
    one, not a NOP: the store of its result to its slot, a local.set's store
    to the local's home, a tee's copy to the local's mirror;
    docs/compiler-speed.md; it is in the code without debugging too).  Together with the instruction counts they
    say what debugging adds to a loop: ``sites - carriers + padding``."""
    sites = padding = carriers = 0
    for address, size, mnemonic, _ in body:
        k = bisect.bisect_left(site_offsets, address)
        if k < len(site_offsets) and site_offsets[k] < address + size:
            sites += 1
            carriers += mnemonic != "nop"
        elif mnemonic == "nop":
            padding += 1
    return sites, padding, carriers


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else EXAMPLE
    export = argv[1] if len(argv) > 1 else EXPORT
    wasm = path.read_bytes()
    result = {"cpu": cpu_model(), "module": path.name, "export": export}
    for debug in (False, True):
        mode = "debug" if debug else "nodebug"
        a = analyse(wasm, export, debug)
        print(f"{mode}: hot loop {a['loop'][0]:#x}..{a['loop'][1]:#x} ({a['loop_bytes']} bytes, "
              f"{a['loop_instructions']} instructions: {a['loop_sites']} patch sites ({a['loop_carrier_sites']} of "
              f"them carrier stores, {a['loop_deferred_sites']} deferred carriers), {a['loop_padding_nops']} "
              f"padding NOPs): {len(a['loop_hazards'])} branch units on a 32-byte boundary; whole code: "
              f"{a['code_hazards']}")
        for text in a["loop_hazards"]:
            print(f"    {text}")
        result[f"hot_loop_hazards_{mode}"] = len(a["loop_hazards"])
        result[f"code_hazards_{mode}"] = a["code_hazards"]
        result[f"hot_loop_instructions_{mode}"] = a["loop_instructions"]
        result[f"hot_loop_sites_{mode}"] = a["loop_sites"]
        result[f"hot_loop_carrier_sites_{mode}"] = a["loop_carrier_sites"]
        result[f"hot_loop_deferred_sites_{mode}"] = a["loop_deferred_sites"]
        result[f"hot_loop_padding_nops_{mode}"] = a["loop_padding_nops"]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
