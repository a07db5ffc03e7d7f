"""Where clang's unoptimized wasm32 code stores each argument in its frame.

At -O0 clang describes a parameter by its home in the C stack frame
(``DW_OP_fbreg X``), which the function's first instructions fill from the
wasm parameter locals::

    global.get __stack_pointer      ; the frame base is computed ...
    i32.const 16
    i32.sub
    local.set FB                    ; ... into local FB (DW_AT_frame_base)
    local.get FB
    local.get K                     ; parameter K (a wasm local below the
    i32.store offset=X              ;   function type's parameter count)

Before that store the ``fbreg X`` location reads memory the function has
not written yet; the argument is in local K (and before the native
prologue, in the caller's argument array).  :func:`argument_stores` finds
those stores by decoding only the leading run of instructions such a
prologue is made of (no whole-body decode: a module has thousands of
functions and the translation is part of a cold start).
"""
from __future__ import annotations

from typing import NamedTuple

from codemem.wasm.binary import read_sleb, read_uleb
from codemem.errors import CompileError

_LOCAL_GET, _LOCAL_SET, _LOCAL_TEE = 0x20, 0x21, 0x22
_GLOBAL_GET, _GLOBAL_SET = 0x23, 0x24
#: Instructions whose immediate is one index (ULEB128).
_INDEXED = frozenset((_LOCAL_GET, _LOCAL_SET, _LOCAL_TEE, _GLOBAL_GET, _GLOBAL_SET))
_I32_CONST, _I64_CONST = 0x41, 0x42
#: Operators without immediates a frame computation uses (i32.add, i32.sub, i32.and).
_PLAIN = {0x6A, 0x6B, 0x71}
#: i32.store .. i64.store32 (wasm spec 5.4.6): a memarg follows.
_STORES = range(0x36, 0x3F)
#: Instructions scanned at most: a prologue stores each argument with three.
MAX_PROLOGUE_INSTRUCTIONS = 3 * 64 + 16


class ArgumentStore(NamedTuple):
    """``local.get FB; local.get local; STORE offset=frame_offset``, the
    store ending at module offset ``end`` (the next instruction's start).
    (A NamedTuple: made for every parameter of every function in a cold
    start, where a frozen dataclass's construction cost twice as much.)"""

    local: int
    frame_offset: int
    end: int


def _u32(code: bytes, pos: int, limit: int) -> tuple[int, int]:
    """``read_uleb(code, pos, limit, 32)``, with a one-byte LEB128 (an index
    or offset below 128, nearly every one in a prologue) read inline."""
    byte = code[pos] if pos < limit else 0x80
    if byte < 0x80:
        return byte, pos + 1
    return read_uleb(code, pos, limit, 32)


def argument_stores(code: bytes, start: int, limit: int, frame_base_local: int,
                    param_count: int) -> dict[int, ArgumentStore]:
    """The stores of parameter locals to ``frame_base_local`` + offset in
    the prologue starting at module offset ``start`` (the body's first
    instruction) of ``code`` (the module's bytes), keyed by frame offset;
    the scan ends at the first instruction such a prologue does not use,
    at ``limit``, or at malformed bytes (what was found so far stands)."""
    found: dict[int, ArgumentStore] = {}
    # (opcode, immediate) of the two instructions before (-1: none yet)
    last_op = last_immediate = before_op = before_immediate = -1
    pos = start
    try:
        for _ in range(MAX_PROLOGUE_INSTRUCTIONS):
            if pos >= limit:
                break
            op = code[pos]
            pos += 1
            immediate = 0
            if op in _INDEXED:  # _u32, inline: nearly every index is one byte
                immediate = code[pos] if pos < limit else 0x80
                if immediate < 0x80:
                    pos += 1
                else:
                    immediate, pos = read_uleb(code, pos, limit, 32)
            elif op == _I32_CONST:
                immediate = code[pos] if pos < limit else 0x80
                if immediate < 0x80:  # one byte: bit 6 is the sign (wasm spec 5.2.2)
                    immediate = immediate - 0x80 if immediate & 0x40 else immediate
                    pos += 1
                else:
                    immediate, pos = read_sleb(code, pos, limit, 32)
            elif op == _I64_CONST:
                immediate, pos = read_sleb(code, pos, limit, 64)
            elif op in _STORES:
                flags, pos = _u32(code, pos, limit)
                if flags & 0x40:  # multi-memory: a memory index follows (not memory 0's frame)
                    break
                immediate, pos = _u32(code, pos, limit)
                if (before_op == _LOCAL_GET and before_immediate == frame_base_local
                        and last_op == _LOCAL_GET and last_immediate < param_count):
                    if immediate not in found:  # the first store to a slot
                        found[immediate] = ArgumentStore(last_immediate, immediate, pos)
            elif op not in _PLAIN:
                break
            before_op, before_immediate, last_op, last_immediate = last_op, last_immediate, op, immediate
    except (CompileError, IndexError):
        pass
    return found
