"""x86-64 register numbers, shared by the encoder, the compiler and anything that
describes machine state (trampoline save areas, frame tables, debugger register maps).

Values are the *hardware* encodings (the 4-bit number split across REX.{R,X,B} and
ModRM/SIB, Intel SDM Vol. 2A section 2.2.1.2), not DWARF numbers: DWARF orders the
first eight differently (rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp). Whoever needs
DWARF numbers maps them explicitly.
"""
from __future__ import annotations

from enum import IntEnum


class Reg(IntEnum):
    """General-purpose registers. The operand width is chosen by the instruction's
    ``size`` argument, so ``Reg.RSI`` at size 8 means SIL (the encoder adds the REX
    prefix that selects SPL/BPL/SIL/DIL; AH/CH/DH/BH are not expressible)."""

    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


class Xmm(IntEnum):
    """SSE registers xmm0..xmm15 (hardware numbers)."""

    XMM0 = 0
    XMM1 = 1
    XMM2 = 2
    XMM3 = 3
    XMM4 = 4
    XMM5 = 5
    XMM6 = 6
    XMM7 = 7
    XMM8 = 8
    XMM9 = 9
    XMM10 = 10
    XMM11 = 11
    XMM12 = 12
    XMM13 = 13
    XMM14 = 14
    XMM15 = 15
