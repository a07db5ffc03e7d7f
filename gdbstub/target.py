"""The target adapter: debugger semantics over one codemem Store.

A :class:`StoreTarget` runs one wasm function of one Store on its own guest
thread and turns the Store's debug events into stops a debugger understands.
It knows nothing of packets (that is :mod:`gdbstub.session`) and nothing of
asyncio (that is :mod:`gdbstub.server`); it speaks in addresses, register
files and stop events.

Threads
-------
* The **guest thread** runs the guest.  When it reaches an enabled patch site
  (or a trap), the C trampoline calls ``Store.debug_handler`` on that thread;
  :meth:`StoreTarget._on_guest_event` records the stop, hands it to the
  ``notify`` callback and returns; the guest then waits in C, at the target's
  resume gate, until the controller resumes it.  It never patches code itself
  (except as the controller, see below).
* The **controller** does everything else: it turns a raw stop into a
  :class:`Stop` with :meth:`StoreTarget.take_event`, reads and writes
  registers and memory while the guest is blocked, inserts breakpoints, and
  resumes.  The controller is whichever thread holds the owner's lock: the
  server's loop thread handling a packet, or the guest thread itself, inside
  ``notify``, answering its own stop (gdbstub.server).  One controller at a
  time, so two edits never race; the only edit made while the guest runs is
  :meth:`interrupt`'s live edit.

Patch edits during a stop share one :class:`~codemem.code.PatchEdit`, opened
by the stop's first change and finished (every touched image republished)
just before the guest is released: a breakpoint hit that removes the
breakpoint, arms a step, and after the step disarms it and reinserts the
breakpoint (what gdb does for every hit) then costs one unpublish and one
publish per image and stop instead of one pair per change.  The guest is
blocked while its images are writable, so W^X holds for anything that runs.

Breakpoints, stepping and interrupts share sites by refcount (DESIGN.md,
"Sequence points and patch sites"): a user breakpoint is one reference, a step
plan holds one reference on each site it armed, an interrupt one on every site.
Disarming a plan drops exactly its references, so the user's breakpoints stay.

Errors: every refusal raises :class:`TargetError` carrying the GDB errno-style
code the session puts in its ``Exx`` reply (one mapping place: here).
"""
from __future__ import annotations

import bisect
import contextlib
import enum
import logging
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable

from codemem import abi, native
from codemem import frames as walker
from codemem.code import PatchEdit
from codemem.errors import CodeMemoryError, Trap
from codemem.frametable import MirrorSource, SequencePointKind
from codemem.lowmem import ENTRY_THUNK_CODE, LOW_FLOOR
from codemem.native import ffi, lib
from codemem.registry import ModuleWithCode
from codemem.runtime import trap_for_code

from . import arch_amd64
from .protocol.replies import ErrorCode, Signal

log = logging.getLogger(__name__)

class TargetError(Exception):
    """A request the target refuses; ``code`` goes into the ``Exx`` reply."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


class StopReason(enum.Enum):
    ENTRY = "entry"            # stopped before the first instruction of the invoked function
    BREAKPOINT = "breakpoint"  # a user breakpoint
    STEP = "step"              # a single step or range step finished
    INTERRUPT = "interrupt"    # the client's ^C
    TRAP = "trap"              # a wasm trap, reported before it unwinds


@dataclass
class Stop:
    """The guest is stopped (blocked on its thread) at ``pc``."""

    reason: StopReason
    pc: int
    signal: int
    trap_code: int | None = None
    trap_message: str | None = None


@dataclass
class Exited:
    """The invoked function returned (``results``) or unwound with a trap or a
    host exception (``error``); ``status`` is the process-style exit status."""

    status: int
    results: list | None = None
    error: BaseException | None = None
    signal: int | None = None  # set when a trap ended it (reported as ``X``)


Event = Stop | Exited


@dataclass
class _GuestStop:
    """What the guest thread hands over while it waits.

    The guest waits in C, at its target's resume gate (csrc cm_defer_resume):
    the event handler returns at once, so the waiting guest holds no GIL, and
    once resumed it runs guest code at once instead of first competing for
    the GIL with the thread that resumed it.  (A breakpoint hit resumes the
    guest twice; with the wait in Python each resume cost the two threads a
    few extra context switches.)"""

    kind: int
    code: int
    regfile: Any  # cm_regfile * (valid until resumed)
    gate: Any  # uint32_t *, the target's resume gate, closed (1) for this stop
    resumed: bool = False

    def resume(self) -> None:
        """Opens the gate (once: the next stop closes the same gate again)."""
        if not self.resumed:
            self.resumed = True
            lib.cm_gate_open(self.gate)


@dataclass
class MemoryRegion:
    """A range the client may access.  ``read``/``write`` take absolute
    addresses inside [start, end)."""

    name: str
    start: int
    end: int
    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None] | None = None
    executable: bool = False

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


def _read_u64(address: int) -> int:
    return ffi.cast("uint64_t *", address)[0]


def _context_value(vmctx: int, source: MirrorSource) -> int:
    """Memory 0's base or byte length as the instance context at ``vmctx``
    gives them (codemem.abi "VMContext"), the way compiled code loads them."""
    if source is MirrorSource.MEMORY0_BASE:
        return _read_u64(vmctx + abi.VMCTX_MEMORY_BASE)
    return _read_u64(_read_u64(vmctx + abi.VMCTX_MEMORY_DEF) + abi.MEMDEF_LENGTH)


def _raw_read(address: int, length: int) -> bytes:
    return bytes(ffi.buffer(ffi.cast("char *", address), length))


def _raw_write(address: int, data: bytes) -> None:
    ffi.memmove(ffi.cast("char *", address), data, len(data))


#: Wasm opcodes after which control may go anywhere but the next instruction
#: (wasm spec 5.4.1 "Control Instructions"): unreachable, if, else, end, br,
#: br_if, br_table, return, call, call_indirect, return_call(_indirect).
#: block (0x02) and loop (0x03) fall into their body, so they are not here.
_CONTROL_OPCODES = frozenset({0x00, 0x04, 0x05, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13})

#: rflags bits a client may change: the arithmetic flags (CF PF AF ZF SF OF).
#: TF would make the host take SIGTRAP, DF breaks the ABI the runtime relies on.
_RFLAGS_WRITABLE = 0x8D5
_GPR_INDEX = {name: index for index, name in enumerate(arch_amd64.GPR_NAMES)}


class StoreTarget:
    """Debugger semantics for one Store running ``func(*args)``.

    ``notify(event)`` is called on the guest thread whenever the guest stops or
    exits; the controller must then call :meth:`take_event` (on its own thread)
    to learn what happened.  Construct, then :meth:`start`.
    """

    def __init__(self, store, instance, func, args: list, *, notify: Callable[[], None],
                 exit_status_of: Callable[[BaseException], int] | None = None):
        self.store = store
        self.instance = instance
        self.func = func
        self.args = list(args)
        self._notify = notify
        self._exit_status_of = exit_status_of or (lambda exc: 1)
        self._lock = threading.Lock()
        self._pending: list[Any] = []  # _GuestStop | Exited, in arrival order
        self._stopped: _GuestStop | None = None
        self._current: Stop | None = None
        self.exited: Exited | None = None
        self.debugging = True  # False after detach: events no longer block
        self.breakpoints: set[int] = set()
        # The sites the last resume armed (a step or an interrupt), each held
        # once; the next stop releases them.
        self._plan: list[tuple[Any, int]] | None = None
        # The edit the current stop's changes share (see the module docstring).
        self._stop_edit: PatchEdit | None = None
        self._entry_site: int | None = None
        self._interrupt_requested = False
        self._kill_requested = False
        self._entry_sites_memo: tuple[tuple, list] | None = None
        self._regions_memo: tuple[tuple, list] | None = None
        self._range: tuple[int, int] | None = None
        # The word a stopped guest waits on (see _GuestStop); one per target,
        # as the target has one guest thread, and alive as long as it is.
        self._resume_gate = ffi.new("uint32_t *", 0)
        #: How a resume is carried out: ``schedule_resume(open_gate)``.  At once
        #: by default; an owner may postpone it to the end of what its thread
        #: is doing (gdbstub.server: the loop thread opens the gate just before
        #: it goes back to sleep, so the resumed guest, which soon needs the GIL
        #: for its next stop, does not find the loop thread still holding it).
        #: The target counts the guest as running from the call on.
        self.schedule_resume: Callable[[Callable[[], None]], None] = lambda open_gate: open_gate()
        self._thread: threading.Thread | None = None
        self.results: list | None = None
        self.closed = False
        store.debug_handler = self._on_guest_event

    # ------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int:
        return self.store.id

    #: The one thread of every Store target (its guest thread).
    TID = 1

    @property
    def tid(self) -> int:
        return self.TID

    def start(self, *, stop_at_entry: bool = True) -> None:
        """Starts the guest thread; with ``stop_at_entry`` the guest stops at
        the entry site of the invoked function before running any of it."""
        if stop_at_entry:
            self._arm_entry(self.func.code_pc)
        self._thread = threading.Thread(target=self._run_guest, name=f"guest-store{self.pid}", daemon=True)
        self._thread.start()

    def run_here(self, *, stop_at_entry: bool = False) -> Exited:
        """Runs the guest on the calling thread (which becomes the guest
        thread) and returns how it ended; the Exited event is also queued
        for the controller, as from :meth:`start`'s thread."""
        if stop_at_entry:
            self._arm_entry(self.func.code_pc)
        self._thread = threading.current_thread()
        return self._run_guest()

    def _run_guest(self) -> Exited:
        try:
            vals = self.func.call_vals(self.args)
            exited = Exited(status=0, results=[v.value for v in vals])
        except Trap as trap:
            signal = _trap_signal(trap.code) if trap.code is not None else int(Signal.SIGILL)
            exited = Exited(status=1, error=trap, signal=signal)
        except BaseException as exc:  # a host function's own exception ends the guest
            exited = Exited(status=self._exit_status_of(exc), error=exc)
        with self._lock:
            self._pending.append(exited)
        self._notify()
        return exited

    def mark_closed(self) -> None:
        """The Store is about to be closed (its memory unmapped): from now on
        every access is refused (ENOENT) instead of touching freed memory.
        Call with the lock its controller holds, after the guest ended."""
        self.closed = True

    def require_open(self) -> None:
        if self.closed:
            raise TargetError(ErrorCode.ENOENT, f"Store {self.pid} has ended")

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -------------------------------------------------------- guest thread

    def _on_guest_event(self, kind: int, code: int, regfile, vmctx: int) -> None:
        """Store.debug_handler: runs on the guest thread.  A stop returns at
        once with its resume deferred to the gate (the guest waits in C)."""
        self._resume_gate[0] = 1  # closed: nothing can open it before the stop is queued
        stop = _GuestStop(kind, code, regfile, self._resume_gate)
        # Decided under the lock that detach and kill take first, so a stop
        # can never be queued after they drained the queue (nobody would
        # release it: the guest would hang).
        with self._lock:
            if self._kill_requested and kind == native.EVENT_BREAKPOINT:
                regfile.rip = 0  # unwind now (see kill)
                return
            if not self.debugging:
                return
            if kind == native.EVENT_TRAP:
                # rsi carries the trapping instruction's sequence point
                # (codemem.abi): that is where the debugger should see the stop.
                regfile.rip = regfile.gpr[4]
                self._present_trap_at_entry_site(regfile)
            self._pending.append(stop)
        lib.cm_defer_resume(self._resume_gate)
        self._notify()

    def _present_trap_at_entry_site(self, regfile) -> None:
        """A trap in a prologue is reported at the function's entry site:
        show the registers as they were there (codemem.frames,
        prologue_trap_registers) so unwinders agree with the CFI
        (gdbstub.images, _AT_ENTRY).  The trap trampoline unwinds from its
        own saved rsp, never from this regfile."""
        regfile.gpr[6], regfile.gpr[7] = walker.prologue_trap_registers(
            self.store.registry, self.store.ctx.stack, regfile.rip, regfile.gpr[6], regfile.gpr[7])

    # ----------------------------------------------------- controller side

    @property
    def is_stopped(self) -> bool:
        return self._stopped is not None

    @property
    def is_running(self) -> bool:
        return self._stopped is None and self.exited is None

    @property
    def current_stop(self) -> Stop | None:
        return self._current

    def take_event(self) -> Event | None:
        """Processes what the guest thread reported.  Returns the event to show
        the client, or None when nothing is pending or the event was internal
        (a range step still in range, say: the guest was resumed)."""
        while True:
            with self._lock:
                if not self._pending:
                    return None
                raw = self._pending.pop(0)
            event = self._process(raw)
            if event is not None:
                return event

    def _process(self, raw) -> Event | None:
        if isinstance(raw, Exited):
            self.exited = raw
            # The process is gone and no client removes breakpoints after a
            # W/X reply: put the code back to the EngineCode bytes here.
            self._drop_debug_state()
            self.results = raw.results
            self._stopped = None
            self._current = None
            return raw
        assert self._stopped is None, "guest stopped twice without a resume"
        pc = raw.regfile.rip
        self._stopped = raw
        if raw.kind == native.EVENT_TRAP:
            self._disarm()
            message = trap_for_code(raw.code).message
            stop = Stop(StopReason.TRAP, pc, _trap_signal(raw.code), raw.code, message)
        else:
            was_stepping = self._plan is not None
            was_interrupt = self._interrupt_requested
            self._disarm()
            if self._entry_site is not None and pc == self._entry_site:
                self._disarm_entry()
                stop = Stop(StopReason.ENTRY, pc, Signal.SIGTRAP)
            elif was_interrupt:
                stop = Stop(StopReason.INTERRUPT, pc, Signal.SIGINT)
            elif was_stepping and self._range is not None and self._range[0] <= pc < self._range[1] \
                    and pc not in self.breakpoints:
                self._resume_step()  # vCont;r: keep stepping while inside the range
                return None
            elif pc in self.breakpoints and not was_stepping:
                stop = Stop(StopReason.BREAKPOINT, pc, Signal.SIGTRAP)
            elif was_stepping:
                stop = Stop(StopReason.STEP, pc, Signal.SIGTRAP)
            elif pc in self.breakpoints:
                stop = Stop(StopReason.BREAKPOINT, pc, Signal.SIGTRAP)
            else:
                # A site nobody armed any more (a breakpoint removed while the
                # guest was already on its way to it): not a stop.
                log.debug("stale stop at %#x ignored", pc)
                self._release()
                return None
        self._range = None
        self._current = stop
        return stop

    def require_stopped(self) -> _GuestStop:
        """The current stop; TargetError (EBUSY running, ENOENT exited) if none."""
        self.require_open()
        if self._stopped is None:
            raise TargetError(ErrorCode.EBUSY if self.exited is None else ErrorCode.ENOENT,
                              "the guest is running" if self.exited is None else "the guest has exited")
        return self._stopped

    # ---------------------------------------------------------- resuming

    def _release(self) -> None:
        self._finish_stop_edit()
        stopped, self._stopped, self._current = self._stopped, None, None
        if stopped is not None:
            self._reload_register_mirrors(stopped)
            self.schedule_resume(stopped.resume)

    def _register_mirrors(self, pc: int) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, MirrorSource], ...]]:
        """(slot mirrors, context mirrors): the registers the code after the
        sequence point at ``pc`` relies on (codemem.frametable, "Register
        mirrors")."""
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return (), ()
        code = entry.store_code
        offset = code.offset_of(pc)
        table = code.frame_table
        return table.register_mirrors_at(offset), table.context_mirrors_at(offset)

    def _reload_register_mirrors(self, stopped: _GuestStop) -> None:
        """The frame slots are the truth a debugger edits (locals, the operand
        stack): before the guest resumes at a sequence point, every register
        that mirrors a slot there is reloaded from it.  (A debugger's write to
        such a register went to the slot too, see write_registers.)  The
        registers holding memory 0's base and length, which the code's bounds
        checks trust, are reloaded from the instance context (r15), as the
        code itself loads them."""
        regfile = stopped.regfile
        if stopped.kind != native.EVENT_BREAKPOINT or regfile.rip == 0:
            return  # a trap unwinds; rip 0 is the kill path
        slot_mirrors, context_mirrors = self._register_mirrors(regfile.rip)
        rbp = regfile.gpr[_GPR_INDEX["rbp"]]
        for name, offset in slot_mirrors:
            regfile.gpr[_GPR_INDEX[name]] = _read_u64(rbp + offset)
        if context_mirrors:
            vmctx = regfile.gpr[_GPR_INDEX["r15"]]
            for name, source in context_mirrors:
                regfile.gpr[_GPR_INDEX[name]] = _context_value(vmctx, source)

    def _finish_stop_edit(self) -> None:
        """Republishes what the current stop's edit touched; always before the
        guest may run again."""
        edit, self._stop_edit = self._stop_edit, None
        if edit is not None:
            edit.finish()

    def _patch_edit(self):
        """The edit a change goes into: the stop's shared one while the guest
        is stopped, else an edit of its own (live while the guest runs)."""
        if self._stopped is not None:
            if self._stop_edit is None:
                self._stop_edit = self.store.registry.patch_edit()
            return contextlib.nullcontext(self._stop_edit)
        return self.store.registry.patch_edit(live=self.is_running)

    def resume(self) -> None:
        """Continue until a breakpoint, a trap or the end."""
        self.require_stopped()
        self._range = None
        self._release()

    def step(self, range_: tuple[int, int] | None = None) -> None:
        """Run to the next sequence point reached (in this function, a callee,
        or the caller after a return).  With ``range_`` (vCont;r), keep going
        while the pc stays in [start, end)."""
        stopped = self.require_stopped()
        if stopped.kind == native.EVENT_TRAP:
            # A trap is fatal: the next thing that happens is the unwind.
            self._release()
            return
        self._range = range_
        self._resume_step()

    def _resume_step(self) -> None:
        stopped = self._stopped
        assert stopped is not None
        self._arm(self._step_sites(stopped.regfile))
        self._release()

    def interrupt(self) -> None:
        """^C: make the running guest stop at the next sequence point it reaches
        (every site of every image, patched live)."""
        if self.closed or not self.is_running or self._interrupt_requested:
            return
        self._disarm()  # a step in flight: the interrupt plan replaces it
        self._arm(self._all_sites())
        self._interrupt_requested = True

    def detach(self) -> None:
        """Every site back to its disabled bytes; the guest runs on freely
        (a stop it already reported or is about to report is released too)."""
        with self._lock:
            self.debugging = False
        if self.closed:
            return
        self._drop_debug_state()
        self._release()
        self._release_pending()

    def kill(self) -> None:
        """Ends the guest: stopped at a site, it unwinds at once (the
        trampoline's kill path, csrc CM_TRAP_KILLED); stopped at a trap, the
        trap unwinds it; running, it is killed at the next sequence point."""
        with self._lock:
            self._kill_requested = True
            self.debugging = False
        if self.closed:
            return
        self._drop_debug_state()
        stopped = self._stopped
        if stopped is not None and stopped.kind == native.EVENT_BREAKPOINT:
            stopped.regfile.rip = 0
        self._release()
        self._release_pending(kill=True)
        if self.is_running:
            self._arm(self._all_sites())

    def _drop_debug_state(self) -> None:
        self._disarm()
        self._disarm_entry()
        self.remove_all_breakpoints()
        self._interrupt_requested = False
        self._range = None

    def _release_pending(self, *, kill: bool = False) -> None:
        self._finish_stop_edit()
        with self._lock:
            stops = [raw for raw in self._pending if isinstance(raw, _GuestStop)]
            self._pending = [raw for raw in self._pending if not isinstance(raw, _GuestStop)]
        for raw in stops:
            if kill and raw.kind == native.EVENT_BREAKPOINT:
                raw.regfile.rip = 0
            self.schedule_resume(raw.resume)

    # ------------------------------------------------------ site plumbing

    def _site_for(self, pc: int) -> tuple[Any, int]:
        entry = self.store.registry.lookup(pc)
        if entry is None:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"{pc:#x} is not in any code of this Store")
        try:
            entry.store_code.site_index_at(pc)
        except CodeMemoryError as e:
            raise TargetError(ErrorCode.EINVAL, f"{e}; breakpoints go at sequence points (patch sites)") from None
        return (entry.store_code, pc)

    def _arm(self, sites: list[tuple[Any, int]]) -> None:
        """Enables ``sites`` as the plan the next stop releases (a live edit
        when the guest is running: an interrupt or a kill)."""
        assert self._plan is None, "arming over an armed plan"
        with self._patch_edit() as edit:
            for store_code, pc in sites:
                edit.enable_site(store_code, pc)
        self._plan = list(sites)

    def _disarm(self) -> None:
        plan, self._plan = self._plan, None
        self._interrupt_requested = False
        if not plan:
            return
        # Live while the guest may be executing the image (an interrupt or a
        # kill racing a step); a stopped guest allows the cheaper edit.
        with self._patch_edit() as edit:
            for store_code, pc in plan:
                edit.disable_site(store_code, pc)

    def _arm_entry(self, pc: int) -> None:
        site = self._site_for(pc)
        with self._patch_edit() as edit:
            edit.enable_site(*site)
        self._entry_site = pc

    def _disarm_entry(self) -> None:
        pc, self._entry_site = self._entry_site, None
        if pc is None:
            return
        with self._patch_edit() as edit:
            edit.disable_site(*self._site_for(pc))

    def _step_sites(self, regfile) -> list[tuple[Any, int]]:
        """The sites a step must arm to catch the next sequence point reached:
        every site of the current function (any branch), every function's entry
        site (any call, direct, indirect or from a host function), and the
        caller's return site (a return).  When the caller is not wasm (the
        outermost frame returns to the host, which may call back into wasm
        anywhere), every site of every image."""
        pc = regfile.rip
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return self._all_sites()
        code = entry.store_code
        table = code.frame_table
        func = table.function_at(code.offset_of(pc))
        if func is None:
            return self._all_sites()
        following = self._next_in_straight_line(entry, func, code.offset_of(pc))
        if following is not None:
            return [(code, following)]
        return_address = self._return_address(regfile, code.base + func.native_start)
        caller = self.store.registry.lookup(return_address) if return_address else None
        if caller is None:
            return self._all_sites()
        sites: dict[int, Any] = {}
        offsets = table.site_offsets
        lo = bisect.bisect_left(offsets, func.native_start)
        hi = bisect.bisect_left(offsets, func.native_end)
        for off in offsets[lo:hi]:
            sites[code.base + off] = code
        for start, other_code in self._entry_sites():
            sites[start] = other_code
        caller_code = caller.store_code
        if caller_code.frame_table.site_index(caller_code.offset_of(return_address)) is not None:
            sites[return_address] = caller_code
        return [(c, p) for p, c in sites.items()]

    def _next_in_straight_line(self, entry: ModuleWithCode, func, offset: int) -> int | None:
        """When the instruction at sequence point ``offset`` cannot transfer
        control (not a branch, call, return, trap-only or structured-control
        instruction; or the function's entry point), the next sequence point
        reached is simply the next one of the function: return its pc.  The
        single-pass compiler emits code in wasm order, so "next" is the next
        native offset.  None when that does not hold: use the general plan."""
        code = entry.store_code
        table = code.frame_table
        point = table.sequence_point_at_or_before(offset)
        if point is None or point.native_offset != offset:
            return None
        if point.kind != SequencePointKind.ENTRY:
            if point.kind != SequencePointKind.INSTRUCTION:
                return None
            wasm = entry.module.wasm
            if not 0 <= point.wasm_offset < len(wasm) or wasm[point.wasm_offset] in _CONTROL_OPCODES:
                return None
        offsets = table.sequence_point_offsets(func)
        k = bisect.bisect_right(offsets, offset)
        if k >= len(offsets) or table.site_index(offsets[k]) is None:
            return None
        return code.base + offsets[k]

    def _entry_sites(self) -> list[tuple[int, Any]]:
        """(pc, StoreCode) of every function's entry site, memoized per set of
        registered images."""
        entries = self.store.registry.entries()
        key = tuple(entry.store_code.base for entry in entries)
        if self._entry_sites_memo is None or self._entry_sites_memo[0] != key:
            sites = []
            for entry in entries:
                code = entry.store_code
                table = code.frame_table
                for f in table.functions():
                    if table.site_index(f.native_start) is not None:
                        sites.append((code.base + f.native_start, code))
            self._entry_sites_memo = (key, sites)
        return self._entry_sites_memo[1]

    def _all_sites(self) -> list[tuple[Any, int]]:
        return [(entry.store_code, entry.store_code.base + off)
                for entry in self.store.registry.entries()
                for off in entry.store_code.frame_table.site_offsets]

    def _return_address(self, regfile, function_start: int) -> int | None:
        """The current frame's return address (codemem.frames)."""
        return walker.return_address(self.store.ctx.stack, at_entry=regfile.rip == function_start,
                                     rbp=regfile.gpr[6], rsp=regfile.gpr[7])

    def frames(self) -> list[walker.Frame]:
        """The stopped guest's wasm frames, innermost first (codemem.frames.walk)."""
        regfile = self.require_stopped().regfile
        return walker.walk(self.store.registry, self.store.ctx.stack, regfile.rip, regfile.gpr[6], regfile.gpr[7])

    # ------------------------------------------------------- breakpoints

    def insert_breakpoint(self, pc: int) -> None:
        """A user breakpoint at a patch site of this Store (idempotent)."""
        self.require_open()
        if self.exited is not None:
            raise TargetError(ErrorCode.ENOENT, "the guest has exited")
        if pc in self.breakpoints:
            return
        site = self._site_for(pc)
        with self._patch_edit() as edit:
            edit.enable_site(*site)
        self.breakpoints.add(pc)

    def remove_breakpoint(self, pc: int) -> None:
        """Removes a user breakpoint (removing an absent one is not an error:
        clients remove what they believe they inserted)."""
        self.require_open()
        if pc not in self.breakpoints:
            self._site_for(pc)  # still name a bad address as such
            return
        site = self._site_for(pc)
        with self._patch_edit() as edit:
            edit.disable_site(*site)
        self.breakpoints.discard(pc)

    def remove_all_breakpoints(self) -> None:
        for pc in sorted(self.breakpoints):
            self.remove_breakpoint(pc)

    def enabled_sites(self) -> list[tuple[ModuleWithCode, int]]:
        """(image, pc) of every enabled site, for `monitor patches`."""
        self.require_open()
        return [(entry, entry.store_code.base + off)
                for entry in self.store.registry.entries()
                for off in entry.store_code.enabled_site_offsets()]

    # -------------------------------------------------------- registers

    def read_registers(self) -> bytes:
        """The regfile bytes of the stopped guest (``REGFILE_SIZE``)."""
        stopped = self.require_stopped()
        return bytes(ffi.buffer(stopped.regfile, arch_amd64.REGFILE_SIZE))

    def write_registers(self, new_regfile: bytes) -> None:
        """Writes a whole regfile back, refusing changes the guest cannot
        survive: rsp, rbp and r15 (the instance context) are the runtime's;
        rip may only move to a sequence point of the same function; only the
        arithmetic rflags bits; mxcsr must keep every exception masked."""
        stopped = self.require_stopped()
        old = self.read_registers()
        if len(new_regfile) != len(old):
            raise TargetError(ErrorCode.EINVAL, "register file of the wrong size")
        old_gpr = struct.unpack_from("<16QQQ", old)
        new_gpr = struct.unpack_from("<16QQQ", new_regfile)
        for index, name in ((7, "rsp"), (6, "rbp"), (15, "r15")):
            if old_gpr[index] != new_gpr[index]:
                raise TargetError(ErrorCode.EPERM, f"{name} is managed by the runtime and cannot be written")
        old_rip, new_rip = old_gpr[16], new_gpr[16]
        if old_rip != new_rip:
            if stopped.kind == native.EVENT_TRAP:
                raise TargetError(ErrorCode.EPERM, "the guest stopped at a trap and cannot resume elsewhere")
            self._check_new_rip(old_rip, new_rip)
        if (old_gpr[17] ^ new_gpr[17]) & ~_RFLAGS_WRITABLE:
            raise TargetError(ErrorCode.EPERM, "only the arithmetic flags of rflags can be written")
        mxcsr = struct.unpack_from("<I", new_regfile, arch_amd64.REGFILE_MXCSR_OFFSET)[0]
        if mxcsr & 0x1F80 != 0x1F80:
            raise TargetError(ErrorCode.EPERM, "mxcsr must keep every floating-point exception masked")
        # A register that mirrors a frame slot where the guest will resume is
        # reloaded from that slot on resume: write the new value there too.
        # One holding memory 0's base or length is the runtime's.
        slot_mirrors, context_mirrors = self._register_mirrors(new_rip)
        for name, source in context_mirrors:
            if new_gpr[_GPR_INDEX[name]] != old_gpr[_GPR_INDEX[name]]:
                what = "base address" if source is MirrorSource.MEMORY0_BASE else "length"
                raise TargetError(ErrorCode.EPERM, f"{name} holds memory 0's {what} for the guest's bounds checks "
                                         f"here and cannot be written")
        rbp = old_gpr[_GPR_INDEX["rbp"]]
        for name, offset in slot_mirrors:
            index = _GPR_INDEX[name]
            if new_gpr[index] != old_gpr[index]:
                self._write_stack(rbp + offset, struct.pack("<Q", new_gpr[index]))
        ffi.memmove(stopped.regfile, new_regfile, len(new_regfile))
        if self._current is not None:
            self._current.pc = new_rip

    def _check_new_rip(self, old_rip: int, new_rip: int) -> None:
        entry = self.store.registry.lookup(old_rip)
        if entry is None or not entry.store_code.contains(new_rip):
            raise TargetError(ErrorCode.EPERM, f"rip {new_rip:#x} is not in the current function")
        code = entry.store_code
        table = code.frame_table
        old_func = table.function_at(code.offset_of(old_rip))
        new_offset = code.offset_of(new_rip)
        new_func = table.function_at(new_offset)
        if old_func is None or new_func is None or old_func.native_start != new_func.native_start:
            raise TargetError(ErrorCode.EPERM, f"rip {new_rip:#x} is not in the current function")
        point = table.sequence_point_at_or_before(new_offset)
        if point is None or point.native_offset != new_offset or table.site_index(new_offset) is None:
            raise TargetError(ErrorCode.EPERM, f"rip {new_rip:#x} is not a sequence point")
        # The entry site is before the prologue, where this function's frame
        # does not exist yet: moving there would build a second frame over
        # this one (and return through one of its slots); moving away from it
        # would run the body on the caller's frame.
        if new_offset == new_func.native_start or code.offset_of(old_rip) == old_func.native_start:
            raise TargetError(ErrorCode.EPERM, "rip cannot move into or out of a function's entry site "
                                     "(before its prologue); step once first")

    # ----------------------------------------------------------- memory

    def memory_regions(self) -> list[MemoryRegion]:
        """Everything a client may see, sorted by start address (memoized until
        a memory grows or code or instances come and go)."""
        self.require_open()
        key = (tuple(memory.data_len for memory in self.store.memories), len(self.store.instances),
               tuple(entry.store_code.base for entry in self.store.registry.entries()))
        if self._regions_memo is None or self._regions_memo[0] != key:
            self._regions_memo = (key, self._build_memory_regions())
        return self._regions_memo[1]

    def _build_memory_regions(self) -> list[MemoryRegion]:
        regions: list[MemoryRegion] = []
        for entry in self.store.registry.entries():
            code = entry.store_code
            regions.append(MemoryRegion(f"code:{entry.engine_code.name}", code.base, code.end,
                                        code.read_for_debugger, None, executable=True))
        start, end = lib.cm_runtime_code_start_address(), lib.cm_runtime_code_end_address()
        regions.append(MemoryRegion("code:runtime", start, end, _raw_read, None, executable=True))
        thunk = self.store.ctx.entry_thunk
        if thunk:
            regions.append(MemoryRegion("code:entry-thunk", thunk, thunk + len(ENTRY_THUNK_CODE), _raw_read, None,
                                        executable=True))
        stack = self.store.ctx.stack
        regions.append(MemoryRegion("stack", stack.base + stack.guard, stack.top, _raw_read, self._write_stack))
        for index, memory in enumerate(self.store.memories):
            length = memory.data_len
            if length:
                regions.append(MemoryRegion(f"memory{index}", memory.base, memory.base + length,
                                            _raw_read, _raw_write))
        if self.instance.memories:
            memory = self.instance.memories[0]
            length = memory.data_len
            if self.store.low_heap is not None:
                # Our low objects start at LOW_FLOOR (codemem.lowmem): a
                # larger memory is mirrored up to there only.
                length = min(length, LOW_FLOOR)
            if length:
                base = memory.base
                regions.append(MemoryRegion(
                    "memory0-mirror", 0, length,
                    lambda a, n, base=base: _raw_read(base + a, n),
                    lambda a, d, base=base: _raw_write(base + a, d)))
        for instance in self.store.instances:
            size = instance.layout.size
            regions.append(MemoryRegion(f"vmctx:{instance.module.name}", instance.vmctx_address,
                                        instance.vmctx_address + size, _raw_read, None))
            # The cells of the instance's globals (vmctx points at them): the
            # translated DWARF reads __stack_pointer there, and `set var` on a
            # wasm global writes there.
            for index, glob in enumerate(instance.globals):
                if glob.store is self.store:
                    regions.append(MemoryRegion(f"global{index}:{instance.module.name}", glob.cell_address,
                                                glob.cell_address + 8, _raw_read, _raw_write))
        regions.sort(key=lambda r: r.start)
        return regions

    def region_at(self, address: int) -> MemoryRegion | None:
        for region in self.memory_regions():
            if region.contains(address):
                return region
        return None

    def read_memory(self, address: int, length: int) -> bytes:
        """Bytes from [address, address+length), stopping early at the end of
        a region (a short read, as gdbserver gives); MEMORY_FAULT if none is readable.
        Allowed while the guest runs too (gdb reads memory of a running target
        in non-stop clients; values may be torn, as with any live process)."""
        if length == 0:
            return b""
        self.require_open()
        out = bytearray()
        regions = self.memory_regions()
        while len(out) < length:
            at = address + len(out)
            region = next((r for r in regions if r.contains(at)), None)
            if region is None:
                break
            n = min(length - len(out), region.end - at)
            out += region.read(at, n)
        if not out:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"cannot access memory at {address:#x}")
        return bytes(out)

    def write_memory(self, address: int, data: bytes) -> None:
        """All or nothing: every byte must lie in one writable region."""
        if not data:
            return
        self.require_stopped()
        region = self.region_at(address)
        end = address + len(data)
        if region is None:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"cannot access memory at {address:#x}")
        if region.write is None:
            raise TargetError(ErrorCode.EPERM, f"{region.name} is read-only to the debugger")
        if end > region.end:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"write {address:#x}+{len(data):#x} runs past the end of {region.name}")
        region.write(address, data)

    def _write_stack(self, address: int, data: bytes) -> None:
        """Stack writes: only the live part of the stack, and never the saved
        rbp / return address words the runtime unwinds through."""
        stopped = self.require_stopped()
        end = address + len(data)
        if address < stopped.regfile.gpr[7]:
            raise TargetError(ErrorCode.EPERM, "writes below the guest's rsp are refused (the runtime's frames live there)")
        for rbp in walker.rbp_chain(self.store.ctx.stack, stopped.regfile.gpr[6]):
            if address < rbp + 16 and end > rbp:
                raise TargetError(ErrorCode.EPERM, f"{rbp:#x}: a saved frame pointer / return address cannot be written")
        _raw_write(address, data)

    # ------------------------------------------------------- descriptions

    def function_name_at(self, pc: int) -> str | None:
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return None
        func = entry.function_at(pc)
        return None if func is None else entry.module.func_name(func.wasm_index)


def _trap_signal(code: int) -> int:
    try:
        return int(abi.TRAP_SIGNALS[abi.TrapCode(code)])
    except (ValueError, KeyError):
        return int(Signal.SIGILL)
