"""ModuleRegistry: one per Store, from executable address to (module, this Store's code).

Entries are keyed by their StoreCode *start* address; a pc lookup takes the
last entry whose start is <= pc (bisect) and then checks containment.
EngineCode -> StoreCode is memoized, so each EngineCode is instantiated once
per Store however many instances use it.  Inserting asserts no overlap; every
register is paired with an unregister (refcounted per EngineCode).
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Any

from .code import EngineCode, PatchEdit, StoreCode
from .errors import CodeMemoryError
from .frametable import FunctionInfo
from .native import ffi


@dataclass(frozen=True)
class ModuleWithCode:
    """A module's metadata paired with *this Store's* code for it.

    Lookups return this pair so nothing can combine a module with another
    Store's copy.  ``module`` is whatever the runtime registered (a compiled
    Module); ``engine_code`` is always ``store_code.engine_code``.
    """

    module: Any
    store_code: StoreCode

    @property
    def engine_code(self) -> EngineCode:
        return self.store_code.engine_code

    def function_at(self, pc: int) -> FunctionInfo | None:
        return self.store_code.frame_table.function_at(self.store_code.offset_of(pc))


class ModuleRegistry:
    def __init__(self, *, debug: bool, store_name: str = "store"):
        self.debug = debug
        self.store_name = store_name
        self._starts: list[int] = []
        self._ends: list[int] = []  # each entry's StoreCode end, beside _starts (lookup asks no property)
        self._entries: list[ModuleWithCode] = []
        self._by_engine_code: dict[int, ModuleWithCode] = {}
        self._refcounts: dict[int, int] = {}
        self._lock = threading.RLock()
        #: Bumped whenever an image is registered or unregistered: what is
        #: derived from the registered code alone (a pc's function, its frame
        #: setup, a step plan) stays valid while it is unchanged.
        self.generation = 0

    def register(self, module: Any, engine_code: EngineCode) -> ModuleWithCode:
        """This Store's code for ``engine_code``, creating it on first use."""
        with self._lock:
            key = id(engine_code)
            entry = self._by_engine_code.get(key)
            if entry is not None:
                self._refcounts[key] += 1
                return entry
            store_code = StoreCode(engine_code, debug=self.debug, store_name=self.store_name)
            entry = ModuleWithCode(module, store_code)
            self._insert(entry)
            self._by_engine_code[key] = entry
            self._refcounts[key] = 1
            return entry

    def _insert(self, entry: ModuleWithCode) -> None:
        start, end = entry.store_code.base, entry.store_code.end
        i = bisect.bisect_left(self._starts, start)
        if i > 0:
            previous = self._entries[i - 1].store_code
            if previous.end > start:
                raise CodeMemoryError(f"image at {start:#x} overlaps {previous.engine_code.name} [{previous.base:#x}, {previous.end:#x})")
        if i < len(self._starts) and self._starts[i] < end:
            following = self._entries[i].store_code
            raise CodeMemoryError(f"image [{start:#x}, {end:#x}) overlaps {following.engine_code.name} at {following.base:#x}")
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        self._entries.insert(i, entry)
        self.generation += 1

    def unregister(self, engine_code: EngineCode) -> None:
        with self._lock:
            key = id(engine_code)
            if key not in self._refcounts:
                raise CodeMemoryError(f"{engine_code.name} is not registered in {self.store_name}")
            self._refcounts[key] -= 1
            if self._refcounts[key]:
                return
            del self._refcounts[key]
            entry = self._by_engine_code.pop(key)
            i = self._entries.index(entry)
            del self._entries[i]
            del self._starts[i]
            del self._ends[i]
            self.generation += 1
            entry.store_code.close()

    def lookup(self, pc: int) -> ModuleWithCode | None:
        """The entry whose StoreCode contains ``pc``, or None."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0 or pc >= self._ends[i]:
            return None
        return self._entries[i]

    def perform_carrier_store(self, regfile) -> None:
        """A Store's breakpoint prelude (native.register_breakpoint_prelude:
        it runs on every breakpoint before the event handler, whichever is
        registered, or none).  At a carrier site
        (codemem.frametable.CarrierStore) the site's ``call`` replaced the
        previous instruction's last one, so it is done here, before anything
        (a debugger, a frame walk) reads the frame or the registers, whether
        or not a debugger is attached (the guest resumes at site + 5, after
        it): a slot or local store writes the regfile's source register to
        the regfile's rsp or rbp + disp, a move copies it to the regfile's
        target register (which the resume loads), a producer loads its
        constant into the regfile's register and stores it as a slot store.  Idempotent: a hook veneer
        that already performed it and jumped to the trampoline left the source
        register unchanged.  Anything that is not a site of this registry's
        code (a displaced block's stop call, the inferior-call landing) has
        none."""
        pc = regfile.rip
        entry = self.lookup(pc)
        if entry is None:
            return
        carried = entry.store_code.carrier_store_at(pc)
        if carried is None:
            return
        gpr = regfile.gpr
        if carried.immediate is not None:  # a producer: the constant's load first, then its slot store
            gpr[carried.regfile_index] = carried.immediate
        value = gpr[carried.regfile_index]
        base = carried.base_regfile_index
        if base is None:
            gpr[carried.target_regfile_index] = value
        else:
            ffi.cast("uint64_t *", gpr[base] + carried.disp)[0] = value

    def lookup_or_raise(self, pc: int) -> ModuleWithCode:
        entry = self.lookup(pc)
        if entry is None:
            raise CodeMemoryError(f"pc {pc:#x} is outside every registered image of {self.store_name}")
        return entry

    def store_code_for(self, engine_code: EngineCode) -> StoreCode | None:
        entry = self._by_engine_code.get(id(engine_code))
        return entry.store_code if entry else None

    def entries(self) -> list[ModuleWithCode]:
        return list(self._entries)

    def code_bases(self) -> tuple[int, ...]:
        """Where each registered StoreCode starts, ascending: equal tuples,
        equal registrations (a key for what is derived from them)."""
        return tuple(self._starts)

    def patch_edit(self, *, live: bool = False) -> PatchEdit:
        """A batched edit over this Store's images (see :class:`PatchEdit`)."""
        return PatchEdit(live=live)

    def enable_site(self, pc: int, edit: PatchEdit) -> bool:
        return edit.enable_site(self.lookup_or_raise(pc).store_code, pc)

    def disable_site(self, pc: int, edit: PatchEdit) -> bool:
        return edit.disable_site(self.lookup_or_raise(pc).store_code, pc)

    def read_code(self, pc: int, length: int) -> bytes:
        """Code bytes for a debugger: enabled patches shown as their disabled bytes."""
        return self.lookup_or_raise(pc).store_code.read_for_debugger(pc, length)
