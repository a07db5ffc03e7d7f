"""Input records of a debug image, and the one error type of this package.

Everything here is plain data: frozen dataclasses a caller fills from the frame
tables of a StoreCode image. Addresses are absolute runtime addresses; offsets
inside a :class:`CfiRow` are relative to the start of their :class:`Fde`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class DebugImageError(ValueError):
    """The inputs cannot describe a valid image: a symbol, FDE or line row outside
    the code, an unknown register name, an offset the encoding cannot express,
    a duplicate section name. The message names the offending item."""


@dataclass(frozen=True)
class Symbol:
    """An ELF symbol. ``kind`` is ``"func"`` (STT_FUNC; must lie inside the code)
    or ``"object"`` (STT_OBJECT; may lie anywhere, e.g. a linear memory mirror)."""

    name: str
    address: int
    size: int
    kind: str = "func"


@dataclass(frozen=True)
class CfiRow:
    """One row of a call-frame table, valid from ``offset`` (bytes from the FDE
    start) until the next row.

    ``cfa_reg``/``cfa_offset``: CFA = value of ``cfa_reg`` + ``cfa_offset``.
    ``saved``: register name -> CFA-relative offset where the caller's value is
    saved. Register names are the x86-64 psABI DWARF names (rax..r15, rip).

    Rules for registers a row does not list: ``rip`` keeps the CIE rule (saved at
    CFA-8, where ``call`` put it); any other register has the "same value" rule
    (not saved by this frame).
    """

    offset: int
    cfa_reg: str
    cfa_offset: int
    saved: dict[str, int] = field(default_factory=dict)

    # dict is not hashable; frozen dataclasses hash all fields, so hash by items.
    def __hash__(self) -> int:
        return hash((self.offset, self.cfa_reg, self.cfa_offset, tuple(sorted(self.saved.items()))))


@dataclass(frozen=True)
class Fde:
    """Unwind information for the code ``[start, start + size)`` (absolute
    addresses). ``rows`` are sorted by offset and the first has offset 0.

    ``undefined_rip=True`` marks the outermost frame (the entry trampoline): the
    return address is "undefined" (DWARF 5 section 6.4.1) in every row, which both
    gdb and lldb take as the end of the stack. Any ``rip`` entry in ``rows`` is
    then ignored.

    ``clobbered``: registers (psABI DWARF names) whose caller value this code
    neither keeps nor saves; they get the "undefined" rule in every row that
    does not list them in ``saved``, so a debugger shows them as unavailable in
    the caller's frame instead of this frame's values.

    ``saved_at``: (register name, DWARF expression) pairs: in every row the
    caller's value of that register is saved at the address the expression
    computes from the CFA, which the debugger pushes first (DW_CFA_expression,
    DWARF 5 section 6.4.2.3). A debugger reads it like any saved register,
    through its stack cache.
    """

    start: int
    size: int
    rows: tuple[CfiRow, ...]
    undefined_rip: bool = False
    clobbered: tuple[str, ...] = ()
    saved_at: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class LineRow:
    """A line-table row: the instruction at ``address`` (absolute) begins source
    ``line`` (1-based; 0 = no source line) of ``file`` at ``column`` (0 = unknown).
    ``file`` is a path, absolute or relative to the image's ``comp_dir``.
    ``prologue_end``: the address is where a breakpoint on the function should
    go, after its prologue (DWARF 5 section 6.2.2; gdb 13 honours it).
    ``epilogue_begin``: the address is where the function's epilogue starts
    (section 6.2.2)."""

    address: int
    file: str
    line: int
    column: int = 0
    is_stmt: bool = True
    prologue_end: bool = False
    epilogue_begin: bool = False
