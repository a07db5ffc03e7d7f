"""The baseline compiler's register cache: registers that mirror frame slots.

The compiled code keeps every wasm value in its frame slot at every sequence
point (abi.py), so the cache is *write-through*: an instruction still stores its
result to its slot, but it also leaves the value in a register the next
instructions read instead of reloading the slot.  That takes the store->load
round trip (store-forwarding latency, several cycles per dependent instruction)
out of the dependency chains, and evicting an entry costs nothing (the slot is
already up to date).

Invariant (whenever code is emitted): for each ``(register, location)`` entry,
the register's 64 bits equal the 64 bits stored in the location's slot.  A
register mirrors at most one location and a location is mirrored by at most one
register.  Locations are ints: operand-stack slot ``i`` is ``i`` (>= 0), local
``j`` is ``-(j + 1)``.

The compiler records the entries at every INSTRUCTION sequence point in the
frame table (``codemem/frametable.py`` "Register mirrors"); whoever resumes the
guest from a stop there reloads each register from its slot, so a debugger's
writes to slots are honoured.  Entries must be dropped wherever a value can
change behind the cache: calls and libcalls (every register but r15/rbp/rsp is
clobbered), writes to a slot by code that does not go through the cache.  A
label (control-flow merge) keeps only the entries every edge reaching it has
(``snapshot``/``state_below`` per edge, ``common_state`` at the label); a
loop label assumes a state its back edges first establish (compiler.py).

Besides wasm values, the cache holds two *pseudo-locations* that are not
slots: the base address and the current byte length of memory 0
(``MEMORY_BASE``, ``MEMORY_LENGTH``), so a memory access's bounds check does
not reload them through the VMContext each time.  The base never moves (abi.py
"MemoryDefinition"); the length only changes in memory.grow (a libcall) or in
a callee, and both empty the cache.  Bounds checks trust these registers, so
sequence points record them too ("context mirrors", MirrorSource.MEMORY0_BASE
/ MEMORY0_LENGTH): a debugger that moves rip to another sequence point or
writes registers cannot leave a wrong base or length behind, because the
target reloads them from the instance context on resume and refuses writes
to them.

Only registers no template or call sequence uses as scratch are in the pool:
templates use rax, rcx, rdx and xmm0-2 (numeric.py), call sequences rsi and rax
(but a call drops every entry anyway).
"""
from __future__ import annotations

from .regs import Reg

__all__ = ["CACHE_REGISTERS", "MEMORY_BASE", "MEMORY_LENGTH", "RegCache", "common_state", "local_location"]

#: Allocation order: caller-saved first (cheaper to reason about in a
#: disassembly), then the SysV callee-saved ones the entry trampoline saves.
CACHE_REGISTERS: tuple[Reg, ...] = (
    Reg.RSI, Reg.RDI, Reg.R8, Reg.R9, Reg.R10, Reg.R11, Reg.RBX, Reg.R12, Reg.R13, Reg.R14,
)


#: Pseudo-locations (module docstring): below every local's location.
MEMORY_BASE = -(1 << 40)
MEMORY_LENGTH = MEMORY_BASE - 1


def local_location(index: int) -> int:
    """The cache location of wasm local ``index``."""
    return -(index + 1)


class RegCache:
    """Compile-time state of which register mirrors which slot (see module docstring)."""

    __slots__ = ("_loc_of", "_reg_of", "_stamp", "_clock", "_entries")

    def __init__(self) -> None:
        self._loc_of: dict[Reg, int] = {}
        self._reg_of: dict[int, Reg] = {}
        self._stamp: dict[Reg, int] = {}
        self._clock = 0
        self._entries: tuple | None = ()  # entries() memo; None: recompute

    def __bool__(self) -> bool:
        return bool(self._reg_of)

    def clear(self) -> None:
        """Forget every entry (a label, a call, anything that may change slots)."""
        if self._reg_of:
            self._loc_of.clear()
            self._reg_of.clear()
            self._entries = ()

    def snapshot(self) -> dict[int, Reg]:
        """The entries as ``{location: register}`` (a copy), for :meth:`restore`."""
        return dict(self._reg_of)

    def state_below(self, height: int) -> dict[int, Reg]:
        """The entries of locals, pseudo-locations and operand-stack slots
        below ``height``: what stays true along a branch to a label of a frame
        at that height (the branch rewrites or abandons the slots above)."""
        return {loc: reg for loc, reg in self._reg_of.items() if loc < height}

    def restore(self, state: dict[int, Reg]) -> None:
        """Make ``state`` (``{location: register}``, a partial bijection) the
        entries: the code is at a point where each of them is known to hold."""
        self._reg_of = dict(state)
        self._loc_of = {reg: loc for loc, reg in state.items()}
        self._entries = None

    def get(self, loc: int) -> Reg | None:
        """The register mirroring ``loc``, if any (marks it recently used)."""
        reg = self._reg_of.get(loc)
        if reg is not None:
            self._clock += 1
            self._stamp[reg] = self._clock
        return reg

    def bind(self, reg: Reg, loc: int) -> None:
        """From now on ``reg`` mirrors ``loc`` (and nothing else does)."""
        self.release(reg)
        self.forget(loc)
        self._loc_of[reg] = loc
        self._reg_of[loc] = reg
        self._entries = None
        self._clock += 1
        self._stamp[reg] = self._clock

    def forget(self, loc: int) -> None:
        """``loc`` is about to change (or die): drop its mirror."""
        reg = self._reg_of.pop(loc, None)
        if reg is not None:
            del self._loc_of[reg]
            self._entries = None

    def release(self, reg: Reg) -> None:
        """``reg`` is about to change: drop what it mirrors."""
        loc = self._loc_of.pop(reg, None)
        if loc is not None:
            del self._reg_of[loc]
            self._entries = None

    def truncate(self, depth: int) -> None:
        """Operand-stack slots at and above ``depth`` are dead or rewritten."""
        if self._reg_of:
            for loc in [loc for loc in self._reg_of if loc >= depth]:
                self.forget(loc)

    def alloc(self, avoid: tuple[Reg, ...] = ()) -> Reg:
        """A register to write: a free one, else the least recently used one
        not in ``avoid`` (its entry is dropped; the slot keeps the value)."""
        loc_of = self._loc_of
        for reg in CACHE_REGISTERS:
            if reg not in loc_of and reg not in avoid:
                return reg
        stamp = self._stamp
        victim = min((r for r in loc_of if r not in avoid), key=lambda r: stamp.get(r, 0))
        self.release(victim)
        return victim

    def free_register(self, avoid: tuple[Reg, ...] = ()) -> Reg | None:
        """A register mirroring nothing (not in ``avoid``), or None: for
        optional extra mirrors that are not worth an eviction."""
        loc_of = self._loc_of
        for reg in CACHE_REGISTERS:
            if reg not in loc_of and reg not in avoid:
                return reg
        return None

    def entries(self) -> tuple[tuple[int, int], ...]:
        """``((register number, location), ...)`` sorted by register: what a
        sequence point records.  Memoized: equal states at consecutive points
        share one tuple."""
        entries = self._entries
        if entries is None:
            items = [(reg._value_, loc) for reg, loc in self._loc_of.items()]
            items.sort()
            entries = self._entries = tuple(items)
        return entries


def common_state(states: list[dict[int, Reg]]) -> dict[int, Reg]:
    """The entries every one of ``states`` has: what holds at a label all of
    those control-flow edges reach (empty for no edges)."""
    if not states:
        return {}
    first, *rest = states
    if not rest:
        return dict(first)
    return {loc: reg for loc, reg in first.items() if all(s.get(loc) is reg for s in rest)}
