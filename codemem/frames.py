"""The one frame walker: a stopped guest's wasm frames from its pc, rbp and rsp.

Everything that needs a stopped Store's call stack asks here: trap backtraces
(:meth:`codemem.runtime.Store.backtrace`), the debugger's step planning and
stack-write guard (gdbstub.target), the wasm dialect's ``qWasmCallStack`` and
per-frame values (gdbstub.wasm_dialect), and ``monitor backtrace``.  The frame
layout is written down once, here and in codemem.abi ("Function layout")::

        higher addresses
        +--------------------------+
        | caller's frame ...       |
        +--------------------------+
        | return address           |  <- [rbp+8]
        +--------------------------+
        | caller's rbp             |  <- [rbp]
        +--------------------------+  <- rbp of this frame
        | locals, operand slots    |     rbp-relative slots (frame table)
        +--------------------------+  <- rsp (rbp - frame_size)

Every function starts with ``push rbp; mov rbp, rsp`` and its ENTRY point
follows (codemem.abi "Function layout").  Only a pc on those two
instructions has no frame of its own yet (:attr:`Frame.rbp` None): at the
first byte the return address is at [rsp], after the push at [rsp+8], and rbp
is still the caller's.  From the ENTRY point on rbp is the frame's; the
locals reach their slots only at the end of the prologue, at the first
INSTRUCTION point (:attr:`Frame.before_body`).

Where a caller frame is
-----------------------
A caller frame is suspended in a call.  It has two wasm positions, and the two
users that disagreed before this module each needed a different one:

* :attr:`Frame.wasm_offset`, the **call instruction** the frame is executing.
  Trap backtraces and ``monitor backtrace`` show this (as Wasmtime's trap
  backtraces do): "where is this frame" is the call.
* :attr:`Frame.resume_wasm_offset`, the **instruction after the call**, where
  the frame continues when the callee returns: the wasm image of the native
  return address.  The wasm dialect reports this as the frame's pc, because
  lldb treats every caller frame's pc as a return address and symbolicates it
  at pc - 1 (inside the call), as it does for native frames.

For the innermost frame both are the stop's own position.  The native pc of a
caller frame (:attr:`Frame.pc`) is always the return address itself, which is
what gdb's and lldb's native unwinders show too.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator

from .abi import FRAME_SETUP_MOV
from .frametable import FunctionInfo, SequencePoint, SequencePointKind
from .native import ffi

#: Most frames a walk returns (a runaway recursion stops at the guard page
#: long before; a corrupt chain must not loop).
MAX_FRAMES = 100_000


@dataclass(frozen=True)
class Frame:
    """One wasm frame of a stopped guest, innermost first.

    ``entry`` is the module with this Store's code (registry.ModuleWithCode);
    ``pc`` the native pc (the stop pc for frame 0, the return address for a
    caller); ``rbp`` the frame's own rbp, or None before ``mov rbp, rsp``
    has run (a pc at the function's first two instructions); ``point`` the
    sequence point whose operand stack describes the frame (the stop's point
    for frame 0, the call's INSTRUCTION point for a caller);
    ``before_body`` True for an innermost frame stopped before its first
    INSTRUCTION point (in the prologue, the ENTRY point included): its
    locals and saved argument pointer are not in their slots yet, the
    argument array is at rsi (codemem.abi "Registers")."""

    index: int
    entry: object
    func: FunctionInfo
    pc: int
    rbp: int | None
    point: SequencePoint | None
    wasm_offset: int
    resume_wasm_offset: int
    before_body: bool = False

    @property
    def before_frame_setup(self) -> bool:
        """rbp is not this frame's yet (pc at ``push rbp`` or ``mov rbp, rsp``)."""
        return self.rbp is None

    @property
    def func_name(self) -> str:
        return self.entry.module.func_name(self.func.wasm_index)

    @property
    def module_name(self) -> str:
        return self.entry.module.name


class StackReader:
    """8-byte reads of one guest stack, refused outside it (None)."""

    def __init__(self, stack):
        self.stack = stack

    def contains(self, address: int, size: int = 8) -> bool:
        return self.stack.contains(address) and self.stack.contains(address + size - 1)

    def u64(self, address: int) -> int | None:
        if not self.contains(address):
            return None
        return ffi.cast("uint64_t *", address)[0]


def rbp_chain(stack, rbp: int, limit: int = MAX_FRAMES) -> Iterator[int]:
    """The rbp values of the frames from ``rbp`` outward (each frame's saved
    rbp at [rbp]), while they lie on ``stack``: the guest frames and the
    entry trampoline's frames below them."""
    reader = StackReader(stack)
    for _ in range(limit):
        if not rbp or not reader.contains(rbp, 16):
            return
        yield rbp
        rbp = reader.u64(rbp)


def return_slot_above_rsp(func: FunctionInfo, offset: int) -> int | None:
    """Where a frame at image offset ``offset`` in ``func`` keeps its return
    address while rbp is not yet its own: at rsp + 0 on the function's first
    byte (``push rbp`` not run), at rsp + 8 after the push (``mov rbp, rsp``
    not run); None from the ENTRY point on (then at [rbp+8]).  These are the
    CFI rows CFA = rsp+8 and rsp+16 (gdbstub.images.function_cfi_rows)."""
    setup = offset - func.native_start
    if setup == 0:
        return 0
    if setup == FRAME_SETUP_MOV:
        return 8
    return None


def return_address(stack, *, rsp_slot: int | None, rbp: int, rsp: int) -> int | None:
    """A frame's return address: [rsp + rsp_slot] before its frame setup
    (:func:`return_slot_above_rsp`), else [rbp+8]; None when that slot is
    not on the stack.  (StackReader.u64's check, inline: asked at every
    resume of a step.)"""
    address = rbp + 8 if rsp_slot is None else rsp + rsp_slot
    if not (stack.contains(address) and stack.contains(address + 7)):
        return None
    return ffi.cast("uint64_t *", address)[0]


def _point_at(table, offset: int) -> SequencePoint | None:
    point = table.sequence_point_at_or_before(offset)
    return point if point is not None and point.native_offset == offset else None


def _next_instruction_offset(table, func: FunctionInfo, native_offset: int) -> int | None:
    """The wasm offset of the first INSTRUCTION point at or after ``native_offset``."""
    offsets = table.sequence_point_offsets(func)
    for index in range(bisect.bisect_left(offsets, native_offset), len(offsets)):
        point = table.sequence_point(func.first_seqpoint + index)
        if point.kind is SequencePointKind.INSTRUCTION:
            return point.wasm_offset
    return None


def _innermost(entry, func: FunctionInfo, pc: int, index: int, rbp: int | None) -> Frame:
    code = entry.store_code
    table = code.frame_table
    point = _point_at(table, code.offset_of(pc))
    if point is None:
        point = table.sequence_point_at_or_before(code.offset_of(pc))
        if point is not None and not func.contains(point.native_offset):
            point = None
    offset = point.wasm_offset if point is not None else func.body_wasm_offset
    if point is not None and point.kind is SequencePointKind.RETURN_POINT:
        # Stopped on a call's return: the frame is at the instruction after it.
        after = _next_instruction_offset(table, func, point.native_offset)
        offset = after if after is not None else offset
    # Before the ENTRY point (the frame setup) or from it to the first
    # INSTRUCTION point (the prologue): the locals are not in their slots.
    before_body = point is None or point.kind is SequencePointKind.ENTRY
    return Frame(index, entry, func, pc, rbp, point, offset, offset, before_body)


def _caller(entry, func: FunctionInfo, return_pc: int, index: int, rbp: int) -> Frame:
    code = entry.store_code
    table = code.frame_table
    # The return address sits just past the call: the point before it is the
    # call instruction's.
    call_point = table.sequence_point_at_or_before(code.offset_of(return_pc) - 1)
    if call_point is not None and not func.contains(call_point.native_offset):
        call_point = None
    call_offset = call_point.wasm_offset if call_point is not None else func.body_wasm_offset
    resume = _next_instruction_offset(table, func, code.offset_of(return_pc))
    return Frame(index, entry, func, return_pc, rbp, call_point, call_offset,
                 resume if resume is not None else call_offset)


def walk(registry, stack, pc: int, rbp: int, rsp: int, limit: int = MAX_FRAMES) -> list[Frame]:
    """The wasm frames of a guest stopped at ``pc`` with ``rbp``/``rsp``,
    innermost first, up to the first pc that is not wasm code of this Store
    (the host's entry trampoline) or the first slot off the stack."""
    reader = StackReader(stack)
    frames: list[Frame] = []
    while len(frames) < limit:
        entry = registry.lookup(pc)
        if entry is None:
            break
        code = entry.store_code
        func = code.frame_table.function_at(code.offset_of(pc))
        if func is None:
            break
        # Only the innermost frame can be in its frame setup: a caller's pc
        # is a return address.
        rsp_slot = return_slot_above_rsp(func, code.offset_of(pc)) if not frames else None
        frame_rbp = rbp if rsp_slot is None else None
        if not frames:
            frames.append(_innermost(entry, func, pc, 0, frame_rbp))
        else:
            frames.append(_caller(entry, func, pc, len(frames), frame_rbp))
        next_pc = reader.u64(rbp + 8 if rsp_slot is None else rsp + rsp_slot)
        if next_pc is None:
            break
        if rsp_slot is None:
            caller_rbp = reader.u64(rbp)
            if caller_rbp is None:
                break
            rsp, rbp = rbp + 16, caller_rbp
        else:
            rsp += rsp_slot + 8  # rbp is still the caller's
        pc = next_pc
    return frames


def unwound_states(registry, stack, pc: int, rbp: int, rsp: int, limit: int = MAX_FRAMES) -> list[tuple[int, int, int]]:
    """(pc, rsp, rbp) of every frame a debugger's unwinder finds above the
    innermost one of a guest stopped at ``pc``/``rbp``/``rsp``: what popping
    frames (gdb's ``return``) writes.  Each is the return address, the CFA
    of the frame below (its rbp + 16, or before its frame setup rsp + 8 at
    the first byte, rsp + 16 after the push) and the rbp saved there (before
    the frame setup: rbp unchanged).  The last is where the outermost guest frame
    returns to (the entry thunk, or a debugger's inferior-call landing)."""
    reader = StackReader(stack)
    states = []
    for frame in walk(registry, stack, pc, rbp, rsp, limit):
        if frame.before_frame_setup:
            rsp_slot = return_slot_above_rsp(frame.func, frame.entry.store_code.offset_of(frame.pc))
            return_pc, rsp = reader.u64(rsp + rsp_slot), rsp + rsp_slot + 8
        else:
            return_pc, saved_rbp = reader.u64(rbp + 8), reader.u64(rbp)
            if saved_rbp is None:
                break
            rsp, rbp = rbp + 16, saved_rbp
        if return_pc is None:
            break
        states.append((return_pc, rsp, rbp))
    return states
