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


#: What argument_stores does at each opcode: stop, or read an instruction of
#: one of these kinds.
_STOP, _GET, _INDEX, _CONST32, _CONST64, _STORE, _NO_IMMEDIATE = range(7)
_KINDS = bytes(_GET if op == _LOCAL_GET else _INDEX if op in _INDEXED else _CONST32 if op == _I32_CONST else
               _CONST64 if op == _I64_CONST else _STORE if op in _STORES else _NO_IMMEDIATE if op in _PLAIN else
               _STOP for op in range(256))


def argument_stores(code: bytes, start: int, limit: int, frame_base_local: int,
                    param_count: int) -> dict[int, ArgumentStore]:
    """The stores of parameter locals to ``frame_base_local`` + offset in
    the prologue starting at module offset ``start`` (the body's first
    instruction) of ``code`` (the module's bytes), keyed by frame offset;
    the scan ends at the first instruction such a prologue does not use,
    at ``limit``, or at malformed bytes (what was found so far stands)."""
    found: dict[int, ArgumentStore] = {}
    # The window of the two instructions before a store, as a state: the
    # last one was ``local.get FB`` (after_base), or it was ``local.get K``
    # of a parameter K right after one (stored: K, else -1).
    after_base = False
    stored = -1
    kinds = _KINDS
    pos = start
    try:
        for _ in range(MAX_PROLOGUE_INSTRUCTIONS):
            if pos >= limit:
                break
            kind = kinds[code[pos]]
            pos += 1
            if kind == _GET or kind == _INDEX:  # _u32, inline: nearly every index is one byte
                index = code[pos] if pos < limit else 0x80
                if index < 0x80:
                    pos += 1
                else:
                    index, pos = read_uleb(code, pos, limit, 32)
                if kind == _GET:
                    stored = index if after_base and index < param_count else -1
                    after_base = index == frame_base_local
                    continue
            elif kind == _CONST32:
                if pos < limit and code[pos] < 0x80:  # one byte
                    pos += 1
                else:
                    _, pos = read_sleb(code, pos, limit, 32)
            elif kind == _STORE:
                flags, pos = _u32(code, pos, limit)
                if flags & 0x40:  # multi-memory: a memory index follows (not memory 0's frame)
                    break
                offset, pos = _u32(code, pos, limit)
                if stored >= 0 and offset not in found:  # the first store to a slot
                    found[offset] = ArgumentStore(stored, offset, pos)
            elif kind == _CONST64:
                _, pos = read_sleb(code, pos, limit, 64)
            elif kind == _STOP:
                break
            after_base = False
            stored = -1
    except (CompileError, IndexError):
        pass
    return found
