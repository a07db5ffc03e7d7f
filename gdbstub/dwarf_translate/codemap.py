"""Guest code addresses -> native image offsets, through the frame table.

Guest DWARF addresses are offsets into the wasm code section's payload
(LLVM's wasm convention); ``code_section_offset + address`` is a module file
offset, which is what the frame table's sequence points record
(codemem.frametable: ``SequencePoint.wasm_offset``, ``FunctionInfo.body_wasm_offset``).

* A guest *function* (a subprogram's low_pc lies in its body entry, locals
  header included) is the native function's whole range ``[native_start,
  native_end)``: prologue, body, epilogue and trap stubs.
* A guest *range* inside a function ([lo, hi): a lexical block, an inlined
  call, a location-list entry) becomes the native code of the INSTRUCTION
  sequence points whose wasm offset is in [lo, hi). Each such point covers the
  native code from its offset up to the next INSTRUCTION point (so a call's
  return point, and the pc-1 a debugger looks up in a caller frame, stay in the
  call instruction's range); the last covers up to the function's end. The code
  before the first INSTRUCTION point (the ENTRY site and the prologue, where
  rbp is not yet this frame's) is in no range. A ``loop`` instruction's point
  does not count (its code joins the point before it): the loop's first body
  instruction is where every iteration passes, so a range that starts at the
  ``loop`` starts there (guest_lines.is_loop_entry).

Everything is image-relative and built lazily per function: one debug image
asks only about the functions its DWARF describes.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from codemem.frametable import FrameTable, FunctionInfo

from ..guest_lines import LineMapper

__all__ = ["CodeMap", "merge_ranges"]


def merge_ranges(ranges) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-empty ranges covering the same bytes as ``ranges``."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class _Coverage:
    wasm_offsets: list[int]  # INSTRUCTION points' module offsets, ascending
    native: list[tuple[int, int]]  # the native range each covers, same order


class CodeMap:
    """The mapping for one compiled module (``info``: its decoded ModuleInfo);
    ``lines`` is the LineMapper of the same module (shared: it knows each
    function's points)."""

    def __init__(self, info, frame_table: FrameTable, lines: LineMapper | None = None):
        self.info = info
        self.frame_table = frame_table
        self.lines = lines or LineMapper(info, frame_table)
        self.code_section_offset = info.code_section_offset or 0
        self._coverage: dict[int, _Coverage] = {}

    def module_offset(self, address: int) -> int:
        return self.code_section_offset + address

    def function_at(self, address: int) -> FunctionInfo | None:
        """The compiled function whose body entry holds guest ``address``."""
        found = self.lines.function_at(self.module_offset(address))
        return found[2] if found is not None else None

    def _coverage_of(self, func: FunctionInfo) -> _Coverage:
        coverage = self._coverage.get(func.position)
        if coverage is None:
            # Points in native order (a loop's own point left out, see the
            # module docstring); each covers up to the next one.
            points = sorted((native, wasm) for wasm, native in self.lines.points(func))
            rows = []
            for k, (native, wasm) in enumerate(points):
                end = points[k + 1][0] if k + 1 < len(points) else func.native_end
                rows.append((wasm, native, max(end, native)))
            rows.sort()
            coverage = self._coverage[func.position] = _Coverage([r[0] for r in rows], [(r[1], r[2]) for r in rows])
        return coverage

    def native_ranges(self, low: int, high: int, func: FunctionInfo | None = None) -> list[tuple[int, int]]:
        """Image-offset ranges of the native code compiled from guest [low, high)
        (guest code addresses), merged; ``func`` (default: the function holding
        ``low``) bounds the search."""
        if high <= low:
            return []
        func = func or self.function_at(low)
        if func is None:
            return []
        coverage = self._coverage_of(func)
        lo = bisect.bisect_left(coverage.wasm_offsets, self.module_offset(low))
        hi = bisect.bisect_left(coverage.wasm_offsets, self.module_offset(high))
        return merge_ranges(coverage.native[lo:hi])
