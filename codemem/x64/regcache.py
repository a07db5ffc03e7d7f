"""The baseline compiler's register cache: registers that mirror frame slots.

The compiled code keeps every wasm value in its frame slot at every sequence
point (abi.py), so the cache is *write-through*: an instruction still stores its
result to its slot, but it also leaves the value in a register the next
instructions read instead of reloading the slot.  That takes the store->load
round trip (store-forwarding latency, several cycles per dependent instruction)
out of the dependency chains, and evicting an entry costs nothing (the slot is
already up to date).

Invariant (whenever code is emitted): for each ``(register, location)`` entry,
the register's 64 bits equal the 64 bits stored in the location's slot, but
for the operand-stack slot of a deferred carrier (compiler.py
``_store_deferrable``) at its one sequence point: its store is left out, the
instruction there reads the register, and any stop there performs the store
before anything reads the slot or reloads the mirror.  A
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


_NUM_GPRS = 16  # hardware register numbers 0-15 index RegCache._by_reg
_NO_ENTRIES = [None] * _NUM_GPRS

#: Pseudo-locations (module docstring): below every local's location.
MEMORY_BASE = -(1 << 40)
MEMORY_LENGTH = MEMORY_BASE - 1


def local_location(index: int) -> int:
    """The cache location of wasm local ``index``."""
    return -(index + 1)


class RegCache:
    """Compile-time state of which register mirrors which slot (see module docstring).

    Kept twice, one map per direction: ``_reg_of`` ``{location: register}``,
    and ``_by_reg``, a list indexed by hardware register number holding the
    location each register mirrors (or None).  The list makes :meth:`state`,
    which the compiler takes before nearly every instruction, one cheap copy
    that is already in register order, hashes fast and is equal for equal
    states."""

    __slots__ = ("_by_reg", "_reg_of", "_stamp", "_clock", "_entries")

    def __init__(self) -> None:
        self._by_reg: list[int | None] = [None] * _NUM_GPRS
        self._reg_of: dict[int, Reg] = {}
        #: LRU stamps by register number: the clock when last bound or read.
        self._stamp: list[int] = [0] * _NUM_GPRS
        self._clock = 0
        self._entries: tuple | None = ()  # state() memo; None: recompute

    def __bool__(self) -> bool:
        return bool(self._reg_of)

    def clear(self) -> None:
        """Forget every entry (a label, a call, anything that may change slots)."""
        if self._reg_of:
            self._by_reg[:] = _NO_ENTRIES
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
        by_reg = self._by_reg
        by_reg[:] = _NO_ENTRIES
        for loc, reg in state.items():
            by_reg[reg] = loc
        self._entries = None

    def get(self, loc: int) -> Reg | None:
        """The register mirroring ``loc``, if any (marks it recently used)."""
        reg = self._reg_of.get(loc)
        if reg is not None:
            self._clock = clock = self._clock + 1
            self._stamp[reg] = clock
        return reg

    def peek(self, loc: int) -> Reg | None:
        """The register mirroring ``loc``, if any, without marking it used."""
        return self._reg_of.get(loc)

    def bind(self, reg: Reg, loc: int) -> None:
        """From now on ``reg`` mirrors ``loc`` (and nothing else does)."""
        # release(reg) and forget(loc), inlined (this runs for most instructions).
        by_reg = self._by_reg
        reg_of = self._reg_of
        old_loc = by_reg[reg]
        if old_loc is not None:
            del reg_of[old_loc]
        old_reg = reg_of.pop(loc, None)
        if old_reg is not None:
            by_reg[old_reg] = None
        by_reg[reg] = loc
        reg_of[loc] = reg
        self._entries = None
        self._clock = clock = self._clock + 1
        self._stamp[reg] = clock

    def use(self, loc: int, avoid: tuple[Reg, ...] = ()) -> tuple[Reg, bool]:
        """A register holding location ``loc`` for reading: ``(its mirror,
        False)``, or ``(a register now bound to loc, True)`` whose value the
        caller's code must load from the location (:meth:`alloc` avoiding
        ``avoid``, then :meth:`bind`)."""
        reg = self._reg_of.get(loc)
        if reg is not None:
            self._clock = clock = self._clock + 1
            self._stamp[reg] = clock
            return reg, False
        reg = self.alloc(avoid)
        self.bind(reg, loc)
        return reg, True

    def forget(self, loc: int) -> None:
        """``loc`` is about to change (or die): drop its mirror."""
        reg = self._reg_of.pop(loc, None)
        if reg is not None:
            self._by_reg[reg] = None
            self._entries = None

    def release(self, reg: Reg) -> None:
        """``reg`` is about to change: drop what it mirrors."""
        loc = self._by_reg[reg]
        if loc is not None:
            self._by_reg[reg] = None
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
        by_reg = self._by_reg
        for reg in CACHE_REGISTERS:
            if by_reg[reg] is None and reg not in avoid:
                return reg
        # Every register not avoided mirrors something, so it was stamped when
        # bound; stamps are distinct (one clock tick each): the victim is unique.
        stamp = self._stamp
        victim = min((r for r in CACHE_REGISTERS if r not in avoid), key=stamp.__getitem__)
        self.release(victim)
        return victim

    def free_register(self, avoid: tuple[Reg, ...] = ()) -> Reg | None:
        """A register mirroring nothing (not in ``avoid``), or None: for
        optional extra mirrors that are not worth an eviction."""
        by_reg = self._by_reg
        for reg in CACHE_REGISTERS:
            if by_reg[reg] is None and reg not in avoid:
                return reg
        return None

    def state(self) -> tuple:
        """What the compiler records at a sequence point: ``()`` if there are
        no entries, else the location each register mirrors (or None), indexed
        by hardware register number.  Cheap to take (it runs before nearly
        every instruction), equal for equal states, and the same tuple object
        until the next change."""
        entries = self._entries
        if entries is None:
            entries = self._entries = tuple(self._by_reg) if self._reg_of else ()
        return entries

    def entries(self) -> tuple[tuple[int, int], ...]:
        """``((register number, location), ...)`` sorted by register."""
        return tuple((reg, loc) for reg, loc in enumerate(self._by_reg) if loc is not None)


def common_state(states: list[dict[int, Reg]]) -> dict[int, Reg]:
    """The entries every one of ``states`` has: what holds at a label all of
    those control-flow edges reach (empty for no edges)."""
    if not states:
        return {}
    first, *rest = states
    if not rest:
        return dict(first)
    return {loc: reg for loc, reg in first.items() if all(s.get(loc) is reg for s in rest)}
