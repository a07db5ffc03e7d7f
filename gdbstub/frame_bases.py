"""The C frame base of every frame, as a register a debugger already has.

Why
---
Every C variable of a frame is at its frame base plus an offset
(``DW_OP_fbreg``), and clang's frame base for wasm32 is the value of a wasm
local, i.e. of a frame slot. Described as a memory read (``...; DW_OP_deref``)
it costs one ``m`` packet per variable per frame and command: gdb 13 caches a
frame's registers and the stack memory holding values, but never a read
inside a DWARF expression (dwarf2/expr.c ``read_mem``). ``bt full`` 100 frames
deep sent 404 such reads where gdbserver on the native twin sends none.

So the translated frame base of a function whose frame base is a local is a
*register*, ``DW_OP_bregx 50 0``: es (psABI DWARF 50), a 32-bit segment
selector that 64-bit code, guest code included, never uses, so it has no other
meaning in a guest frame (gdb 13 maps the selectors but not fs_base/gs_base,
amd64-tdep.c amd64_dwarf_regmap; 32 bits hold a wasm32 frame base exactly).

* The innermost frame: the stub reports es as that frame's frame base in
  ``g``/``p`` (:func:`innermost_frame_base`; gdbstub.dialect.NativeDialect).
* A caller frame: a caller's registers come from its callee's CFI, and gdb
  reads a register "saved at" an address through its stack cache, like the
  saved rbp and return address. Every guest FDE of an x32 image says
  (DW_CFA_expression, DWARF 5 section 6.4.2.3)::

      caller's es is saved at  WINDOW_START + CFA % WINDOW
                               (DW_OP_constu WINDOW-1; DW_OP_and;
                                DW_OP_constu WINDOW_START; DW_OP_or)

The *frame-base window* ``[WINDOW_START, 4 GiB)`` holds no memory
(codemem.lowmem never places anything there); the stub's native view
synthesizes it (:func:`read_window`): a word stands for the one guest-stack
address congruent to it modulo the window, a callee C's CFA; the return
address at CFA - 8 names the caller F (a call's return point in guest code),
F's rbp is CFA + F's frame size (a callee's CFA is its caller's rsp at the
call, ``rbp - frame_size``, codemem/abi.py "Frames"), and the word is F's
frame base, read from F's frame-base slot. One stack of up to ``WINDOW``
bytes never maps two frames to one word::

    guest stack                                  frame-base window
    +--------------------+
    | F: slots, FB local |---- value of F's FB local ----+
    |    operand stack   |                              |
    +--------------------+ <- rsp of F = CFA of C        v
    | C: ret, rbp, ...   |             WINDOW_START + CFA(C) % WINDOW: FB(F)
    +--------------------+

Which local is a function's frame base is the DWARF translation's knowledge;
the image carries it for the stub in its own section (:data:`SECTION`).
"""
from __future__ import annotations

import struct

from codemem.lowmem import FRAME_BASE_WINDOW, FRAME_BASE_WINDOW_START

from .debugimage.dwarf import uleb128

__all__ = ["CFI_RULE", "FRAME_BASE_IN_REGISTER", "SECTION", "WINDOW", "WINDOW_START",
           "cfa_of", "in_window", "innermost_frame_base", "pack_slots", "read_window", "unpack_slots",
           "window_address"]

WINDOW = FRAME_BASE_WINDOW
WINDOW_START = FRAME_BASE_WINDOW_START
#: The register carrying a caller frame's frame base (psABI DWARF number).
REGISTER = "es"
REGISTER_DWARF = 50

_DW_OP_constu = 0x10
_DW_OP_and = 0x1A
_DW_OP_or = 0x21
_DW_OP_bregx = 0x92

#: The guest FDEs' rule: (register, DW_CFA_expression body) for debugimage.Fde.saved_at.
CFI_RULE = (REGISTER, bytes([_DW_OP_constu]) + uleb128(WINDOW - 1) + bytes([_DW_OP_and, _DW_OP_constu])
            + uleb128(WINDOW_START) + bytes([_DW_OP_or]))
#: A frame base held in that register (a memory location at its value; the
#: x32 address type keeps the low 32 bits, the i32).
FRAME_BASE_IN_REGISTER = bytes([_DW_OP_bregx]) + uleb128(REGISTER_DWARF) + bytes([0])

#: The image section naming each function's frame-base slot: records of
#: u32 image offset of the function's first byte, i32 rbp offset of the slot,
#: sorted by offset. Functions whose frame base is not a local have none.
SECTION = ".wasm_gdbstub.frame_bases"
_RECORD = struct.Struct("<Ii")


def window_address(cfa: int) -> int:
    """Where a frame whose CFA is ``cfa`` keeps its caller's frame base."""
    return WINDOW_START | (cfa & (WINDOW - 1))


def in_window(address: int) -> bool:
    """Whether ``address`` is in the frame-base window."""
    return WINDOW_START <= address < WINDOW_START + WINDOW


def pack_slots(slots: dict[int, int]) -> bytes:
    """The :data:`SECTION` bytes of ``{function image offset: slot rbp offset}``."""
    return b"".join(_RECORD.pack(start, offset) for start, offset in sorted(slots.items()))


def unpack_slots(data: bytes) -> dict[int, int]:
    """Inverse of :func:`pack_slots` (a trailing partial record is ignored)."""
    usable = len(data) - len(data) % _RECORD.size
    return dict(_RECORD.iter_unpack(data[:usable]))


#: es past the first wasm instruction while the frame-base local still
#: holds its initial 0 (the guest's own prologue sets it a few instructions
#: on): not 0, which means "before the first wasm instruction".
NOT_YET_SET = 1


def innermost_frame_base(frame, frame_base_slot, read_u32) -> int:
    """The innermost frame's frame base, the stub's value of es: its
    frame-base slot's value, or 0 where the function has none or has not yet
    run its first wasm instruction (at its frame setup, its ENTRY site and
    in its prologue the slot is stale stack; 0 makes arguments read linear
    memory, as natively they read stack garbage there).

    A function whose frame base is es is told apart by es alone before its
    first wasm instruction (0) and after it (not 0: :data:`NOT_YET_SET`
    until the guest sets the local): its parameters' locations test es
    first (gdbstub.dwarf_translate _parameter_by_pc), which lldb evaluates
    right too."""
    if frame.rbp is None or frame.before_body:
        return 0
    slot = frame_base_slot(frame)
    if slot is None:
        return 0
    return read_u32(frame.rbp + slot) or NOT_YET_SET


def cfa_of(address: int, stack_start: int, stack_end: int) -> int | None:
    """The stack address a window ``address`` stands for: the one in
    ``[stack_start, stack_end)`` congruent to it modulo the window (None when
    there is none, or when the stack is larger than the window and the
    address could stand for two)."""
    if stack_end - stack_start > WINDOW:
        return None
    cfa = stack_start + ((address - stack_start) & (WINDOW - 1))
    return cfa if cfa < stack_end else None


def read_window(address: int, length: int, caller_frame_base) -> bytes:
    """``length`` bytes of the window at ``address`` (clipped at its end):
    each 8-byte word is ``caller_frame_base(word)`` (an int: the frame base of
    the caller whose callee's CFA the word stands for, or None: zeros).

    Words are computed from their own address, not from a walk of the
    current stop's frames, so frames gdb reaches another way read right too:
    those above the dummy frame of an inferior call (gdbstub.inferior_calls),
    whose return address is the call landing, where a walk ends."""
    end = min(address + length, WINDOW_START + WINDOW)
    out = bytearray(max(0, end - address))
    for word in range(address & ~7, end, 8):
        value = caller_frame_base(word)
        if not value:
            continue
        data = struct.pack("<Q", value)
        lo, hi = max(word, address), min(word + 8, end)
        out[lo - address:hi - address] = data[lo - word:hi - word]
    return bytes(out)
