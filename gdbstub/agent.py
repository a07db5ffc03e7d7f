"""Conditions, agent commands and watchpoints of one Store, run at its patch sites (codemem.sitehooks).

:class:`SiteAgent` is the target adapter's helper for everything that runs in
the guest without a stop:

* **Conditions** (``Z0,ADDR,KIND;X LEN,BYTES...``): each site with conditions
  gets a veneer running every condition compiled to x86-64
  (gdbstub.agent_x64); it stops when any is true (GDB manual, "General Query
  Packets", ConditionalBreakpoints: "the target evaluates each condition and
  stops if one of them is true").  A new ``Z0`` at the same address replaces
  the condition list (that is how gdb sends ``condition N``).
* **Agent commands** (``;cmds:``, gdb's ``dprintf-style agent``): run in the
  veneer when the conditions hold (or there are none); never a stop.
* **Watchpoints** (``Z2``/``Z3``/``Z4``, any number, any length): linear
  memory ranges in a table in the hook area's data; while one is set every
  store site (loads for read/access watchpoints; memory.fill, memory.copy,
  memory.init) calls a veneer that compares the access with the table.  A hit
  is detected *before* the access; the target then runs to the next
  sequence point and reports the stop there, after the write, with
  ``watch:``/``rwatch:``/``awatch:`` and the address (the hardware's
  contract: gdb reads the new value and prints Old/New).  No watchpoint: the
  sites stay NOPs.  While the guest is stopped, inserting and removing
  watchpoints only changes the table; the sites follow at the resume
  (:meth:`SiteAgent.before_resume`), as gdb removes and reinserts every
  watchpoint around each stop.  A host function's writes (Store.host_write_hook)
  are reported at the return point after its call; a wasm global's watchpoint
  names its cell and is checked at every ``global.set``.

Addresses: the session's dialect maps the client's address to a
:class:`WatchPlace` (gdbstub.dialect.Dialect.watch_place): the native view
takes linear memory at its native address or in its mirror at [0, size)
(gdbstub.target.memory_regions) and a global's cell; the wasm view takes a
wasm memory address.  The stop reports the address in the client's view.

State: one :class:`SiteAgent` per StoreTarget (its ``agent``), so a
condition or watchpoint patches that Store's code only, with veneers in the
hook area of that Store's own StoreCode (codemem.sitehooks.hook_area_for).

Everything here runs on the controller thread (gdbstub.target), with the
guest stopped or running; veneers are never rewritten in place, so a running
guest is safe (codemem.sitehooks.HookArea).
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from codemem import abi, sitehooks
from codemem.native import ffi, lib
from codemem.sitehooks import (AccessCheck, AccessSite, GlobalCheck, PendingHostWriteCheck, access_sites,
                               existing_hook_area, hook_area_for, host_return_sites)

from .agent_x64 import CommandsCheck, ConditionCheck
from .protocol.agentexpr import AgentExpr

log = logging.getLogger(__name__)

WATCH_KIND_NAMES = {sitehooks.WATCH_WRITE: "watch", sitehooks.WATCH_READ: "rwatch",
                    sitehooks.WATCH_WRITE | sitehooks.WATCH_READ: "awatch"}


#: Direction bit of watchpoints on wasm globals (beside sitehooks.WATCH_*).
WATCH_GLOBAL = 4


@dataclass(frozen=True)
class Watch:
    """One watchpoint: ``kinds`` (sitehooks.WATCH_*), the client's address and
    length, and the watched linear-memory range [lo, lo+length); or, for a
    wasm global, the address of its cell (``cell``; ``lo`` unused).

    A stop reports ``address`` (the start of the watched range) whichever of
    its bytes was accessed, as x86 stubs do: gdbserver and lldb-server report
    the triggering debug register's address.  lldb-22 relies on it: it splits
    an unaligned watchpoint into aligned ones (8 bytes at 0x40c: ``Z2,408,8``
    and ``Z2,410,8``), and an access address inside such a range but not at
    its start (``watch:40c``) made it show "stop reason = watchpoint -1"
    without evaluating the watchpoint.  gdb takes any address in the range."""

    kinds: int
    address: int
    length: int
    lo: int
    cell: int | None = None

    @property
    def name(self) -> str:
        return WATCH_KIND_NAMES[self.kinds]



@dataclass(frozen=True)
class WatchPlace:
    """What a watchpoint's client address names in the Store: an offset in
    the linear memory (memory 0) of the instance debugged, or the native
    address of a wasm global's 8-byte cell.  The session's dialect maps the
    client's address to one (gdbstub.dialect.Dialect.watch_place)."""

    linear: int | None = None
    cell: int | None = None

    def __post_init__(self):
        if (self.linear is None) == (self.cell is None):
            raise ValueError("a watch place is linear memory or a global's cell, exactly one")


@dataclass(frozen=True)
class Hit:
    """What a veneer recorded before it stopped the guest."""

    kind: int
    index: int
    address: int
    size: int
    error: int

    def condition_note(self) -> str | None:
        if self.kind != sitehooks.HIT_CONDITION_ERROR:
            return None
        message = sitehooks.ERROR_MESSAGES.get(self.error, "evaluation error").format(address=self.address)
        return f"condition {self.index + 1} of the breakpoint could not be evaluated ({message}): stopped"


class SiteAgent:
    """The conditions, commands and watchpoints of ``target``'s Store, and
    which sites call which veneer.  Used by gdbstub.target only."""

    def __init__(self, target, patch_edit):
        self.target = target
        #: The target's edit for site changes (its stop's shared edit while
        #: the guest is stopped, a live one while it runs).
        self._patch_edit = patch_edit
        self.conditions: dict[int, tuple[AgentExpr, ...]] = {}
        self.commands: dict[int, tuple[AgentExpr, ...]] = {}
        #: Per breakpoint pc, the dialect's values of synthesized registers
        #: there (agent_x64.SiteRegisters: es, the C frame base).
        self.registers: dict[int, dict] = {}
        self.watches: list[Watch] = []
        self._hooked: dict[int, object] = {}  # site pc -> StoreCode of every site with a veneer
        # The watch directions the access sites are hooked for (sync_sites).
        self._hooked_directions = 0
        self._regions_key = None

    # ------------------------------------------------------------ conditions

    def set_breakpoint_program(self, store_code, pc: int, conditions: tuple[AgentExpr, ...],
                               commands: tuple[AgentExpr, ...] = (), registers: dict | None = None) -> None:
        """The conditions and agent commands of the breakpoint at ``pc``
        (both empty: none; the site goes back to its bytes); ``registers``:
        what synthesized registers they read hold there (agent_x64.SiteRegisters)."""
        for table, exprs in ((self.conditions, conditions), (self.commands, commands)):
            if exprs:
                table[pc] = tuple(exprs)
            else:
                table.pop(pc, None)
        if (conditions or commands) and registers:
            self.registers[pc] = dict(registers)
        else:
            self.registers.pop(pc, None)
        self.refresh_regions()
        self._update_site(store_code, pc)

    def has_program(self, pc: int) -> bool:
        """Whether the breakpoint at ``pc`` runs in a veneer (conditions or commands)."""
        return pc in self.conditions or pc in self.commands

    # ------------------------------------------------------------ watchpoints

    def add_watch(self, kinds: int, address: int, length: int, place: WatchPlace) -> None:
        """Watch [address, address+length) of the client's view, which names
        ``place`` in this Store.  ValueError: more than the tables hold, or
        a global watched for reads."""
        if place.cell is not None:
            if kinds != sitehooks.WATCH_WRITE:
                raise ValueError("watchpoints on wasm globals see writes only (global.set); "
                                 "read and access watchpoints are not supported there")
            if len([w for w in self.watches if w.cell is not None]) >= sitehooks.MAX_GLOBAL_WATCHES:
                raise ValueError(f"at most {sitehooks.MAX_GLOBAL_WATCHES} watchpoints on globals")
            watch = Watch(kinds, address, length, 0, place.cell)
        else:
            watch = Watch(kinds, address, length, place.linear)
        if watch in self.watches:
            return
        if watch.cell is None and len([w for w in self.watches if w.cell is None]) >= sitehooks.MAX_WATCHES:
            raise ValueError(f"at most {sitehooks.MAX_WATCHES} watchpoints")
        self.watches.append(watch)
        self._write_watch_tables()
        self._sync_unless_stopped()

    def remove_watch(self, kinds: int, address: int, length: int) -> None:
        """Removing one that is not set is not an error."""
        matching = [w for w in self.watches if (w.kinds, w.address, w.length) == (kinds, address, length)]
        if not matching:
            return
        self.watches.remove(matching[0])
        self._write_watch_tables()
        self._sync_unless_stopped()

    def clear(self) -> None:
        """Every condition and watchpoint gone, every hooked site back to its bytes."""
        self.watches.clear()
        self.conditions.clear()
        self.commands.clear()
        self._write_watch_tables()
        self.sync_sites()
        for pc, code in list(self._hooked.items()):
            self._update_site(code, pc)

    def _directions(self) -> int:
        kinds = 0
        for watch in self.watches:
            kinds |= WATCH_GLOBAL if watch.cell is not None else watch.kinds
        return kinds

    def _linear_watches(self) -> list[Watch]:
        """The watches on linear memory, in watch-table order (a hit's index)."""
        return [w for w in self.watches if w.cell is None]

    def _write_watch_tables(self) -> None:
        rows = [(w.lo, w.lo + w.length, w.kinds) for w in self._linear_watches()]
        cells = sorted({w.cell for w in self.watches if w.cell is not None})
        memories = self.target.instance.memories
        memdef = memories[0].definition_address if memories else 0
        for entry in self.target.store.registry.entries():
            area = hook_area_for(entry.store_code)
            area.set_watches(rows, memdef)
            area.set_global_watches(cells)

    def _access_sites(self, entry) -> dict[int, AccessSite]:
        return access_sites(entry.engine_code, entry.module.wasm)

    def _host_return_sites(self, entry) -> list[int]:
        return host_return_sites(entry.engine_code, entry.module.wasm, entry.module.info.num_imported_funcs)

    def _sync_unless_stopped(self) -> None:
        # While the guest is stopped the access sites follow at the resume
        # (before_resume): gdb removes every watchpoint at each stop and
        # inserts it again before it resumes (breakpoint always-inserted
        # off), which must not rewrite every store site of the Store twice
        # per stop.  Meanwhile the hooked sites check the table as it is.
        if not self.target.is_stopped:
            self.sync_sites()

    def before_resume(self) -> None:
        """Called by the target just before the guest runs again."""
        self.refresh_regions()
        self.sync_sites()

    def sync_sites(self) -> None:
        """Hooks (or unhooks) the access sites for the directions the
        watchpoints now need; sites stay NOPs while no watchpoint is set."""
        before, after = self._hooked_directions, self._directions()
        self._hooked_directions = after
        self._update_access_sites(before, after)

    def _update_access_sites(self, before: int, after: int) -> None:
        if after == before:
            return
        self.refresh_regions()
        writes_changed = bool(before & sitehooks.WATCH_WRITE) != bool(after & sitehooks.WATCH_WRITE)
        store = self.target.store
        store.host_write_hook = self._on_host_write if after & sitehooks.WATCH_WRITE else None
        for entry in store.registry.entries():
            code = entry.store_code
            with hook_area_for(code).editing(), self._patch_edit() as edit:
                for offset, access in self._access_sites(entry).items():
                    if _applies(access, before) != _applies(access, after):
                        self._update_site(code, code.base + offset, edit, entry, after)
                if writes_changed:
                    for offset in self._host_return_sites(entry):
                        self._update_site(code, code.base + offset, edit, entry, after)

    def _on_host_write(self, memory, offset: int, length: int) -> None:
        """Store.host_write_hook (guest thread, inside a host function): a
        write into a watched range is recorded for the return point after
        the host call (PendingHostWriteCheck), which stops there."""
        memories = self.target.instance.memories
        if not memories or memory is not memories[0]:
            return
        end = offset + length
        for index, watch in enumerate(self._linear_watches()):
            if watch.kinds & sitehooks.WATCH_WRITE and offset < watch.lo + watch.length and end > watch.lo:
                first = max(offset, watch.lo)
                for entry in self.target.store.registry.entries():
                    hook_area_for(entry.store_code).record_host_write(index, first, end - first)
                return

    def take_host_write(self) -> tuple[Watch, int] | None:
        """A host write into a watched range not reported yet (then cleared
        everywhere): (watch, client address)."""
        found = None
        for entry in self.target.store.registry.entries():
            area = existing_hook_area(entry.store_code)
            record = area.take_host_write() if area is not None else None
            linear = self._linear_watches()
            if record is not None and found is None and record[0] < len(linear):
                watch = linear[record[0]]
                found = (watch, watch.address)
        return found

    # ------------------------------------------------------------ veneers

    def _checks(self, store_code, pc: int, entry=None, directions: int | None = None) -> list:
        """What the veneer of the site at ``pc`` runs: its breakpoint's
        conditions or commands, then a watch check when the access sites are
        hooked for its direction."""
        registers = self.registers.get(pc)
        if pc in self.commands:
            checks: list = [CommandsCheck(self.conditions.get(pc, ()), self.commands[pc], registers)]
        else:
            checks = [ConditionCheck(expr, k, registers) for k, expr in enumerate(self.conditions.get(pc, ()))]
        if self._hooked_directions or directions:
            if entry is None:
                entry = self.target.store.registry.lookup(pc)
            if directions is None:
                directions = self._hooked_directions
            offset = store_code.offset_of(pc)
            access = self._access_sites(entry).get(offset) if entry else None
            if access is not None and _applies(access, directions):
                if access.global_index is not None:
                    checks.append(GlobalCheck(entry.module.layout.global_cell(access.global_index)))
                else:
                    checks.append(AccessCheck(access))
            if directions & sitehooks.WATCH_WRITE and entry is not None and offset in self._host_return_sites(entry):
                checks.append(PendingHostWriteCheck())
        return checks

    def _update_site(self, store_code, pc: int, edit=None, entry=None, directions: int | None = None) -> None:
        """Rebuilds the veneer of the site at ``pc`` from its checks (none: the
        site goes back to its bytes), in ``edit`` or an edit of the target's."""
        if edit is None:
            with self._patch_edit() as own_edit:
                self._update_site(store_code, pc, own_edit)
            return
        checks = self._checks(store_code, pc, entry, directions)
        area = hook_area_for(store_code)
        if not checks:
            area.forget(pc)
            edit.redirect_site(store_code, pc, None)
            self._hooked.pop(pc, None)
            return
        moved = area.build(pc, checks, compact_ok=not self.target.is_running)
        for site_pc, address in moved.items():
            edit.redirect_site(store_code, site_pc, address)
        self._hooked[pc] = store_code

    def hooked_sites(self) -> dict[int, tuple[object, int]]:
        """pc -> (image, veneer address) of every hooked site."""
        found = {}
        registry = self.target.store.registry
        redirects = {}
        for pc, code in self._hooked.items():
            if code not in redirects:
                redirects[code] = code.redirected_site_offsets()
            entry = registry.lookup(pc)
            veneer = redirects[code].get(code.offset_of(pc))
            if entry is not None and veneer is not None:
                found[pc] = (entry, veneer)
        return found

    # ------------------------------------------------------------ regions

    def refresh_regions(self) -> None:
        """Cheap when nothing changed (a key over images, instances and
        memories).  The region table every veneer's reads go through: what the ``m``
        packet may read (gdbstub.target.memory_regions: images, runtime code,
        guest stack, linear memories and the mirror, instance contexts, global
        cells), with linear memories by their definition so a memory.grow needs
        no update."""
        store = self.target.store
        entries = store.registry.entries()
        key = (tuple(e.store_code.base for e in entries), len(store.instances), len(store.memories))
        if key == self._regions_key:
            return
        rows = []
        for entry in entries:
            code = entry.store_code
            rows.append((sitehooks.REGION_FIXED, code.base, code.end, 0))
        rows.append((sitehooks.REGION_FIXED, lib.cm_runtime_code_start_address(), lib.cm_runtime_code_end_address(), 0))
        stack = store.ctx.stack
        rows.append((sitehooks.REGION_FIXED, stack.base + stack.guard, stack.top, 0))
        for memory in store.memories:
            rows.append((sitehooks.REGION_MEMORY, 0, 0, memory.definition_address))
        if self.target.instance.memories:
            rows.append((sitehooks.REGION_MIRROR, 0, 0, self.target.instance.memories[0].definition_address))
        for instance in store.instances:
            rows.append((sitehooks.REGION_FIXED, instance.vmctx_address,
                         instance.vmctx_address + instance.layout.size, 0))
            for glob in instance.globals:
                rows.append((sitehooks.REGION_FIXED, glob.cell_address, glob.cell_address + 8, 0))
        for entry in entries:
            hook_area_for(entry.store_code).set_regions(rows)
        self._regions_key = key

    # ------------------------------------------------------------ stops

    def take_hit(self, pc: int) -> Hit | None:
        """The hit record the veneer of the site at ``pc`` left, if any (read
        and cleared on every stop, so a record left by a veneer whose site was
        unhooked meanwhile is never taken for a later one's)."""
        entry = self.target.store.registry.lookup(pc)
        if entry is None:
            return None
        area = existing_hook_area(entry.store_code)
        if area is None:
            return None
        kind, index, address, size, error = area.take_hit()
        if kind == sitehooks.HIT_NONE:
            return None
        return Hit(kind, index, address, size, error)

    def watch_at_host_write(self, hit: Hit) -> tuple[Watch, int] | None:
        """(watch, client address) of a HIT_HOST_WRITE stop (its record is
        then cleared in every hook area)."""
        self.take_host_write()
        return self.watch_for_hit(hit)

    def watch_for_hit(self, hit: Hit) -> tuple[Watch, int] | None:
        """(watch, client address) of an access or global hit."""
        if hit.kind == sitehooks.HIT_GLOBAL:
            watch = next((w for w in self.watches if w.cell == hit.address), None)
            return None if watch is None else (watch, watch.address)
        linear = self._linear_watches()
        if not 0 <= hit.index < len(linear):
            return None
        watch = linear[hit.index]
        return watch, watch.address

    def access_at(self, pc: int, regfile) -> tuple[Watch, int] | None:
        """The same check a site's veneer makes, in Python, for a guest that
        resumes from a stop at ``pc`` (the trampoline resumes after the site's
        call, so its veneer does not run): (watch, client address) or None."""
        if not self.watches:
            return None
        entry = self.target.store.registry.lookup(pc)
        if entry is None:
            return None
        access = self._access_sites(entry).get(entry.store_code.offset_of(pc))
        if access is None:
            return None
        vmctx = regfile.gpr[15]
        if access.global_index is not None:
            cell = _read_u64(vmctx + entry.module.layout.global_cell(access.global_index))
            watch = next((w for w in self.watches if w.cell == cell), None)
            return None if watch is None else (watch, watch.address)
        rbp = regfile.gpr[6]
        memories = self.target.instance.memories
        if not memories or _read_u64(vmctx + abi.VMCTX_MEMORY_DEF) != memories[0].definition_address:
            return None  # another instance's memory

        def slot(offset: int) -> int:
            return struct.unpack("<I", bytes(ffi.buffer(ffi.cast("char *", rbp + offset), 4)))[0]

        ranges = []
        if access.length_slot is None:
            first = slot(access.address_slot) + access.static_offset
            ranges.append((first, first + access.size, sitehooks.WATCH_WRITE if access.writes else sitehooks.WATCH_READ))
        else:
            first = slot(access.address_slot)
            n = slot(access.length_slot)
            ranges.append((first, first + n, sitehooks.WATCH_WRITE))
            if access.source_slot is not None:
                source = slot(access.source_slot)
                ranges.append((source, source + n, sitehooks.WATCH_READ))
        for first, end, kind in ranges:
            if first >= end:
                continue
            for watch in self._linear_watches():
                if watch.kinds & kind and first < watch.lo + watch.length and end > watch.lo:
                    return watch, watch.address
        return None

    def describe_site(self, store_code, pc: int) -> list[str]:
        """Lines for `monitor patches` / inspect: what the site's veneer runs."""
        lines = []
        for k, expr in enumerate(self.conditions.get(pc, ())):
            lines.append(f"condition {k + 1}: {len(expr.bytecode)} bytes of bytecode")
        for k, expr in enumerate(self.commands.get(pc, ())):
            lines.append(f"command {k + 1}: {len(expr.bytecode)} bytes of bytecode")
        entry = self.target.store.registry.lookup(pc)
        access = self._access_sites(entry).get(store_code.offset_of(pc)) if entry else None
        if access is not None and pc in self._hooked and _applies(access, self._hooked_directions):
            lines.append(f"watch check: {access.describe()}")
        if self.watches and entry is not None and store_code.offset_of(pc) in self._host_return_sites(entry):
            lines.append("host write check")
        return lines


def _read_u64(address: int) -> int:
    return ffi.cast("uint64_t *", address)[0]


def _applies(access: AccessSite, kinds: int) -> bool:
    if access.global_index is not None:
        return bool(kinds & WATCH_GLOBAL)
    return bool((access.writes and kinds & sitehooks.WATCH_WRITE) or (access.reads and kinds & sitehooks.WATCH_READ))

