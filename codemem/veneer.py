"""Per-image veneers: the only way compiled code reaches the C trampolines.

Compiled code is position independent (every StoreCode copy lives at its own
address), so a patch site or a trap check cannot call a trampoline directly.
Each image ends with two veneers that jump through 8-byte slots, which
EngineCode fills with the trampolines' addresses before sealing::

    bp_veneer:    ff 25 <rel32 to bp_slot>     jmp qword ptr [rip + bp_slot]
    trap_veneer:  ff 25 <rel32 to trap_slot>   jmp qword ptr [rip + trap_slot]
                  (cc padding to 8)
    bp_slot:      dq cm_breakpoint_trampoline
    trap_slot:    dq cm_trap_trampoline

An enabled patch site is ``e8 <rel32 to bp_veneer>``: a call, so the
trampoline finds the site (return address - 5) on the stack.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class VeneerLayout:
    bp_veneer: int
    trap_veneer: int
    bp_slot: int
    trap_slot: int
    end: int


def append_veneers(code: bytearray) -> VeneerLayout:
    """Appends both veneers and their (zeroed) slots to ``code``."""
    while len(code) % 8:
        code.append(0xCC)
    bp_veneer = len(code)
    code += b"\xff\x25\0\0\0\0"
    trap_veneer = len(code)
    code += b"\xff\x25\0\0\0\0"
    while len(code) % 8:
        code.append(0xCC)
    bp_slot = len(code)
    code += bytes(8)
    trap_slot = len(code)
    code += bytes(8)
    struct.pack_into("<i", code, bp_veneer + 2, bp_slot - (bp_veneer + 6))
    struct.pack_into("<i", code, trap_veneer + 2, trap_slot - (trap_veneer + 6))
    return VeneerLayout(bp_veneer, trap_veneer, bp_slot, trap_slot, len(code))


def call_rel32(at: int, target: int) -> bytes:
    """``call target`` encoded at image offset ``at`` (5 bytes)."""
    return b"\xe8" + struct.pack("<i", target - (at + 5))


def site_enable_bytes(site_offset: int, layout: VeneerLayout) -> bytes:
    return call_rel32(site_offset, layout.bp_veneer)
