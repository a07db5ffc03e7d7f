"""Breakpoints at any instruction: displaced runs of the code between sequence points.

A breakpoint is a patch site (a 5-byte NOP at a sequence point, turned into a
``call``), but a debugger may ask to stop at any instruction: lldb's fast
stepping puts temporary breakpoints on the branch instructions inside a line,
and ``break *ADDR`` in gdb names any address.  An instruction X that is not a
site lies in the code of exactly one sequence point S, its *carrier*: the last
site at or before X in X's function.  X is honoured like this:

1. S is enabled (one reference, like any breakpoint on S).
2. When the guest leaves S (a stop at S, or one the debugger did not ask for,
   taken only for this), it resumes not after S but at a *displaced block*:
   a copy of the straight-line code from S's end up to the last armed X of
   S's code, placed in scratch memory within rel32 reach of the image, with a
   ``call`` to the image's breakpoint veneer inserted before every armed X
   (a *stop call*).  Relative branches and rip-relative operands are
   relocated: a branch to an instruction of the copied run goes to its copy
   (to its stop call when it is armed), any other to its real target (a trap
   stub, the code after the run).  The block ends with a stop call for the
   last armed X and a ``jmp`` to the real X.
3. The breakpoint trampoline reports the stop call's address (return address
   - 5); the target shows it as X with the registers as they are at X (they
   *are*: only the stop call, which the trampoline undoes, was added).
4. Resuming from X continues in the block right after X's stop call, so a
   later armed X' of the same code is caught as well, or at the real X when
   X is the last one.  (The trampoline resumes at ``rip + 5``: the target
   sets rip to the resume address minus 5.)

S may be a *carrier-store site* (codemem.frametable.CarrierStore; a different
"carrier" from S here): its 5 bytes are the store of the previous
instruction's result to its slot, which S's ``call`` replaces.  The stop at S
performs that store (codemem.registry.ModuleRegistry.perform_carrier_store) before
anything reads the frame, so a block still starts at S + 5: the store is
never copied, nor run twice.

Block layout (``BlockLayout``)::

    block:  copy of I0 (relocated)          I0 = the instruction at S + 5
            copy of I1
            call bp_veneer   <- stop call for X1 (= I2), shown as pc X1
            copy of I2                     <- resuming from X1 continues here
            ...
            call bp_veneer   <- stop call for Xn (the last armed X)
            jmp Xn                         <- resuming from Xn: the real code

Where an X cannot be honoured exactly, :func:`check_displaceable` refuses with
a reason (:class:`DisplacedError`), never a guess:

* X is not an instruction boundary, or outside every function;
* X is padding (a NOP the compiler put before a site: branches land on it);
* X is not reached by falling through from S (it follows an unconditional or
  indirect jump or a ``ret``: out-of-line code such as trap stubs, the else
  arm of an ``if``, a ``br_table``'s stubs);
* some branch outside the run reaches (S, X]: the guest could get to X
  without passing S, and the stop would be lost.

Everything derived from the code (the decoded function, its branch targets)
is computed once per EngineCode and function (:func:`function_code`); blocks
are built per StoreCode, for the set of armed addresses, and cached.
"""
from __future__ import annotations

import bisect
import logging
import struct
import threading
import weakref
from dataclasses import dataclass, field

import capstone
from capstone import x86 as cs_x86

from . import native
from .errors import CodeMemoryError
from .frametable import SITE_SIZE
from .native import PROT_EXEC, PROT_READ, PROT_WRITE, lib
from .placement import map_near_code

log = logging.getLogger(__name__)

__all__ = ["BlockLayout", "DisplacedArea", "DisplacedError", "FunctionCode", "check_displaceable",
           "function_code", "area_for"]

#: Address space of one StoreCode's scratch area (pages are touched on use):
#: thousands of blocks (a block is the few instructions of one wasm
#: instruction plus 5 bytes per stop call) before it starts over.
AREA_SIZE = 256 << 10
_REL32 = range(-(1 << 31), 1 << 31)


class DisplacedError(CodeMemoryError):
    """A breakpoint at a non-site address that cannot be honoured exactly; the
    message says why."""


# --------------------------------------------------------------------------
# Decoded functions (per EngineCode, position independent)
# --------------------------------------------------------------------------

_KIND_PLAIN, _KIND_JCC, _KIND_JMP, _KIND_CALL, _KIND_INDIRECT_JMP, _KIND_RET, _KIND_INDIRECT_CALL = range(7)


@dataclass(frozen=True)
class Insn:
    """One decoded instruction at image offset ``offset``."""

    offset: int
    raw: bytes
    kind: int
    target: int | None = None  # image offset of a relative branch's target
    cond: int | None = None  # a jcc's condition code (0..15)
    disp_offset: int | None = None  # where a rip-relative disp32 sits in ``raw``
    text: str = ""

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)

    @property
    def falls_through(self) -> bool:
        return self.kind not in (_KIND_JMP, _KIND_INDIRECT_JMP, _KIND_RET)

    @property
    def is_nop(self) -> bool:
        return self.text.startswith("nop")


def _classify(ins) -> tuple[int, int | None, int | None]:
    """(kind, relative target, jcc condition) of a capstone instruction."""
    groups = set(ins.groups)
    raw = bytes(ins.bytes)
    if capstone.CS_GRP_RET in groups:
        return _KIND_RET, None, None
    relative = capstone.CS_GRP_BRANCH_RELATIVE in groups
    if capstone.CS_GRP_CALL in groups:
        if relative:
            if raw[0] != 0xE8:
                raise DisplacedError(f"unexpected call encoding {raw.hex()}")
            return _KIND_CALL, ins.operands[0].imm, None
        return _KIND_INDIRECT_CALL, None, None
    if capstone.CS_GRP_JUMP in groups:
        if not relative:
            return _KIND_INDIRECT_JMP, None, None
        target = ins.operands[0].imm
        if raw[0] in (0xEB, 0xE9):
            return _KIND_JMP, target, None
        if 0x70 <= raw[0] <= 0x7F:
            return _KIND_JCC, target, raw[0] - 0x70
        if raw[0] == 0x0F and 0x80 <= raw[1] <= 0x8F:
            return _KIND_JCC, target, raw[1] - 0x80
        # loop, jrcxz, xbegin...: the compiler emits none
        return -1, target, None
    return _KIND_PLAIN, None, None


class FunctionCode:
    """One function's machine code, decoded once (per EngineCode): its
    instructions, its sites, and who branches where."""

    def __init__(self, code: bytes, start: int, sites: list[int]):
        self.start = start
        self.end = start + len(code)
        self.sites = sites  # image offsets of this function's sites, sorted
        self.site_set = frozenset(sites)
        decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        decoder.detail = True
        self.insns: list[Insn] = []
        #: target offset -> offsets of the direct branches to it (inside the function)
        self.incoming: dict[int, list[int]] = {}
        for ins in decoder.disasm(code, start):
            kind, target, cond = _classify(ins)
            disp_offset = None
            if any(op.type == cs_x86.X86_OP_MEM and op.mem.base == cs_x86.X86_REG_RIP for op in ins.operands):
                if ins.disp_size != 4:
                    kind = -1
                disp_offset = ins.disp_offset
            insn = Insn(ins.address, bytes(ins.bytes), kind, target, cond, disp_offset,
                        f"{ins.mnemonic} {ins.op_str}".strip())
            self.insns.append(insn)
            if target is not None and self.start <= target < self.end:
                self.incoming.setdefault(target, []).append(ins.address)
        self.offsets = [insn.offset for insn in self.insns]
        decoded_end = self.insns[-1].end if self.insns else start
        if decoded_end != self.end:
            log.debug("function at %#x decodes only up to %#x of %#x", start, decoded_end, self.end)

    def index_of(self, offset: int) -> int | None:
        k = bisect.bisect_left(self.offsets, offset)
        return k if k < len(self.offsets) and self.offsets[k] == offset else None

    def check(self, offset: int) -> int:
        """The carrier site of a breakpoint at ``offset`` (not a site), or
        DisplacedError naming why it cannot be honoured exactly."""
        index = self.index_of(offset)
        if index is None:
            k = bisect.bisect_right(self.offsets, offset) - 1
            within = self.insns[k] if k >= 0 else None
            what = f" (inside `{within.text}` at offset {within.offset:#x})" if within is not None else ""
            raise DisplacedError(f"offset {offset:#x} is not an instruction boundary{what}")
        if offset in self.site_set:
            raise DisplacedError(f"offset {offset:#x} is a patch site")
        insn = self.insns[index]
        carrier = self.carrier(offset)
        if insn.is_nop:
            k = bisect.bisect_right(self.sites, offset)
            where = f"; the next sequence point is at offset {self.sites[k]:#x}" if k < len(self.sites) else ""
            raise DisplacedError(f"offset {offset:#x} is padding the compiler put before a patch site "
                                 f"(branches may land on it){where}")
        first = self.index_of(carrier + SITE_SIZE)
        if first is None:
            raise DisplacedError(f"the code after the sequence point at {carrier:#x} does not decode")
        # Which instructions of the run [carrier+5, offset] the guest reaches
        # from the carrier (a fixpoint: branches inside the run may go back).
        run = self.insns[first:index + 1]
        run_start = run[0].offset
        reached = {run_start}
        changed = True
        while changed:
            changed = False
            for k, ins in enumerate(run[:-1]):
                if ins.offset not in reached:
                    continue
                if ins.kind == -1:
                    raise DisplacedError(f"`{ins.text}` at offset {ins.offset:#x}, between the sequence point at "
                                         f"{carrier:#x} and {offset:#x}, cannot be relocated")
                if ins.kind == _KIND_INDIRECT_JMP:
                    raise DisplacedError(f"offset {offset:#x} follows the indirect jump at {ins.offset:#x} "
                                         f"(a jump table's targets are not known here)")
                follows = []
                if ins.falls_through:
                    follows.append(run[k + 1].offset)
                if ins.target is not None and run_start <= ins.target <= offset:
                    follows.append(ins.target)
                for at in follows:
                    if at not in reached:
                        reached.add(at)
                        changed = True
        if offset not in reached:
            raise DisplacedError(f"offset {offset:#x} is not reached by falling through from the sequence point "
                                 f"at {carrier:#x} (out-of-line code after a jump or a return, such as a trap stub)")
        # Every way into (carrier, offset] must come through the run.
        for target, sources in self.incoming.items():
            if carrier < target <= offset:
                for source in sources:
                    if not run_start <= source < offset:
                        raise DisplacedError(f"offset {offset:#x} can be reached from the branch at {source:#x} "
                                             f"without passing the sequence point at {carrier:#x}")
        return carrier

    def pops_frame(self, carrier: int, offset: int) -> bool:
        """Whether the run from site ``carrier`` to ``offset`` restores the
        caller's rbp (an epilogue: ``pop rbp`` or ``leave``)."""
        lo = bisect.bisect_left(self.offsets, carrier)
        hi = bisect.bisect_left(self.offsets, offset)
        return any(ins.text in ("pop rbp", "leave") for ins in self.insns[lo:hi])

    def carrier(self, offset: int) -> int:
        """The last site at or before ``offset``."""
        k = bisect.bisect_right(self.sites, offset) - 1
        if k < 0:
            raise DisplacedError(f"no sequence point before offset {offset:#x}")
        return self.sites[k]


_function_cache: "weakref.WeakKeyDictionary[object, dict[int, FunctionCode]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def function_code(engine_code, native_start: int) -> FunctionCode:
    """The decoded function of ``engine_code`` starting at image offset
    ``native_start`` (memoized per EngineCode)."""
    with _cache_lock:
        per_engine = _function_cache.setdefault(engine_code, {})
        found = per_engine.get(native_start)
    if found is not None:
        return found
    table = engine_code.frame_table
    func = table.function_at(native_start)
    if func is None or func.native_start != native_start:
        raise DisplacedError(f"no function starts at offset {native_start:#x}")
    offsets = table.site_offsets
    lo = bisect.bisect_left(offsets, func.native_start)
    hi = bisect.bisect_left(offsets, func.native_end)
    found = FunctionCode(engine_code.read(func.native_start, func.native_size), func.native_start,
                         list(offsets[lo:hi]))
    with _cache_lock:
        per_engine[native_start] = found
    return found


def check_displaceable(engine_code, offset: int) -> tuple[FunctionCode, int]:
    """(function, carrier site offset) for a breakpoint at image offset
    ``offset``, which is not a site; DisplacedError naming why it cannot be
    honoured exactly otherwise (see the module docstring)."""
    func = engine_code.frame_table.function_at(offset)
    if func is None:
        raise DisplacedError(f"offset {offset:#x} is not inside a compiled function")
    if offset < engine_code.frame_table.entry_offset(func):
        raise DisplacedError(f"offset {offset:#x} is in the frame setup (`push rbp; mov rbp, rsp`) of the function "
                             f"at {func.native_start:#x}, before its ENTRY site: no site runs before it (a "
                             f"breakpoint at the function's first byte is its ENTRY site's)")
    fn = function_code(engine_code, func.native_start)
    return fn, fn.check(offset)


# --------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------


@dataclass
class BlockLayout:
    """A displaced block at absolute ``address`` (see the module docstring).
    Keys are absolute pcs of the StoreCode the block was built for."""

    address: int
    code: bytes
    carrier: int
    #: stop call address -> the armed pc it stands for
    stop_calls: dict[int, int] = field(default_factory=dict)
    #: original instruction pc -> the address of its copy
    copies: dict[int, int] = field(default_factory=dict)

    def resume_address(self, pc: int) -> int | None:
        """Where the guest continues from a stop at ``pc`` (its copy here)."""
        return self.copies.get(pc)


def build_block(fn: FunctionCode, base: int, carrier: int, armed: list[int], address: int,
                bp_veneer: int) -> BlockLayout:
    """The block for site ``carrier`` (image offset) with stop calls at the
    image offsets ``armed`` (each checked by :func:`check_displaceable`),
    for a StoreCode at ``base``, to be written at ``address``; ``bp_veneer``
    is the image offset of the breakpoint veneer."""
    armed = sorted(set(armed))
    last = armed[-1]
    first = fn.index_of(carrier + SITE_SIZE)
    stop = fn.index_of(last)
    assert first is not None and stop is not None
    run = fn.insns[first:stop]
    armed_set = set(armed)
    # Pass 1: where each instruction's copy (and stop call) goes.
    sizes = []
    for ins in run:
        if ins.kind == _KIND_JCC:
            sizes.append(6)
        elif ins.kind in (_KIND_JMP, _KIND_CALL):
            sizes.append(5)
        else:
            sizes.append(len(ins.raw))
    entry: dict[int, int] = {}  # original offset -> where a branch to it goes in the block
    copies: dict[int, int] = {}
    stop_calls: dict[int, int] = {}
    at = address
    for ins, size in zip(run, sizes):
        if ins.offset in armed_set:
            entry[ins.offset] = at
            stop_calls[at] = base + ins.offset
            at += 5
        else:
            entry[ins.offset] = at
        copies[base + ins.offset] = at
        at += size
    entry[last] = at
    stop_calls[at] = base + last
    # Pass 2: the bytes.
    out = bytearray()

    def rel32(source_end: int, target: int) -> bytes:
        delta = target - source_end
        if delta not in _REL32:
            raise DisplacedError(f"scratch code at {source_end:#x} cannot reach {target:#x}")
        return struct.pack("<i", delta)

    def branch_target(target: int) -> int:
        if carrier + SITE_SIZE <= target <= last and target in entry:
            return entry[target]
        return base + target

    def stop_call() -> None:
        here = address + len(out)
        out.extend(b"\xe8" + rel32(here + 5, base + bp_veneer))

    for ins in run:
        if ins.offset in armed_set:
            stop_call()
        here = address + len(out)
        if ins.kind == _KIND_JCC:
            out.extend(bytes((0x0F, 0x80 + ins.cond)) + rel32(here + 6, branch_target(ins.target)))
        elif ins.kind == _KIND_JMP:
            out.extend(b"\xe9" + rel32(here + 5, branch_target(ins.target)))
        elif ins.kind == _KIND_CALL:
            out.extend(b"\xe8" + rel32(here + 5, base + ins.target))
        elif ins.disp_offset is not None:
            raw = bytearray(ins.raw)
            old = struct.unpack_from("<i", raw, ins.disp_offset)[0]
            absolute = base + ins.end + old
            raw[ins.disp_offset:ins.disp_offset + 4] = rel32(here + len(raw), absolute)
            out.extend(raw)
        elif ins.kind == -1:
            raise DisplacedError(f"`{ins.text}` at offset {ins.offset:#x} cannot be relocated")
        else:
            out.extend(ins.raw)
    stop_call()
    here = address + len(out)
    out.extend(b"\xe9" + rel32(here + 5, base + last))
    assert address + len(out) - 10 == at, (hex(address + len(out)), hex(at))
    return BlockLayout(address, bytes(out), base + carrier, stop_calls, copies)


# --------------------------------------------------------------------------
# Scratch memory
# --------------------------------------------------------------------------


class DisplacedArea:
    """The scratch code of one debug StoreCode's displaced blocks.

    Placed as the StoreCode's hook area is (codemem.placement: within rel32
    reach of the image, inside a low Store's window), but a mapping of its own: hook
    veneers live as long as their site's checks and are compacted by
    rebuilding them, blocks as long as an armed set, so the two allocators
    stay independent.  Blocks are bump-allocated and cached by (carrier,
    armed set); they are never rewritten while they may run: a new set gets
    a new block.  :meth:`reset` forgets every block; call it only when no
    guest can be inside one (see gdbstub.target)."""

    def __init__(self, store_code, size: int = AREA_SIZE):
        self.store_code = store_code
        self.size = size
        try:
            self._mapping = map_near_code(store_code, size, what="displaced-breakpoint scratch")
        except CodeMemoryError as e:
            raise DisplacedError(str(e)) from None
        self.base = self._mapping.base
        self._next = self.base
        self._blocks: dict[tuple[int, tuple[int, ...]], BlockLayout] = {}
        self._by_stop_call: dict[int, BlockLayout] = {}
        native.check(lib.cm_protect(self.base, self.size, PROT_READ | PROT_EXEC), "publish displaced code")

    @property
    def closed(self) -> bool:
        return self._mapping.closed

    def contains(self, pc: int) -> bool:
        return self.base <= pc < self.base + self.size

    def block(self, fn: FunctionCode, carrier: int, armed: list[int]) -> BlockLayout:
        """The block for ``carrier`` (an absolute site pc) stopping at the
        absolute pcs ``armed`` (cached)."""
        code = self.store_code
        key = (carrier, tuple(sorted(set(armed))))
        found = self._blocks.get(key)
        if found is not None:
            return found
        base = code.base
        veneer = code.frame_table.header.bp_veneer
        offsets = [pc - base for pc in key[1]]
        # Size first (the layout does not depend on the address), then place.
        probe = build_block(fn, base, carrier - base, offsets, self._next, veneer)
        if self._next + len(probe.code) > self.base + self.size:
            raise DisplacedError("the displaced-breakpoint scratch area is full")
        layout = probe
        native.check(lib.cm_protect(self.base, self.size, PROT_READ | PROT_WRITE), "unpublish displaced code")
        try:
            native.ffi.memmove(native.ffi.cast("char *", layout.address), layout.code, len(layout.code))
        finally:
            native.check(lib.cm_protect(self.base, self.size, PROT_READ | PROT_EXEC), "publish displaced code")
        self._next = (layout.address + len(layout.code) + 15) & ~15
        self._blocks[key] = layout
        for call in layout.stop_calls:
            self._by_stop_call[call] = layout
        return layout

    def stop_call(self, pc: int) -> tuple[BlockLayout, int] | None:
        """(block, armed pc) when ``pc`` is a stop call of one of the blocks."""
        layout = self._by_stop_call.get(pc)
        return None if layout is None else (layout, layout.stop_calls[pc])

    @property
    def used(self) -> int:
        return self._next - self.base

    def reset(self) -> None:
        """Forgets every block (their bytes may be overwritten from now on)."""
        self._blocks.clear()
        self._by_stop_call.clear()
        self._next = self.base

    def close(self) -> None:
        self._mapping.close()


def area_for(store_code) -> DisplacedArea:
    """The StoreCode's displaced-breakpoint area, created on first use."""
    area = getattr(store_code, "_displaced_area", None)
    if area is None or area.closed:
        if not store_code.debug:
            raise DisplacedError("breakpoints need a debug StoreCode (a private copy of the code)")
        area = store_code._displaced_area = DisplacedArea(store_code)
    return area
