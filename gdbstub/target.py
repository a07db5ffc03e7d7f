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
Conditions, agent commands and watchpoints make sites call veneers of their
own (gdbstub.agent, codemem.sitehooks); a plain reference on such a site wins
(it stops), and a veneer that wants a stop jumps to the same trampoline, so
:meth:`StoreTarget._process` reads the hit record to tell why.

A breakpoint at an instruction that is not a site is carried by the site
before it (codemem.displaced, docs/breakpoints.md): the carrier holds one
reference; whenever the guest leaves the carrier while such breakpoints are
armed, :meth:`_release` points it at a displaced block, whose stop calls
:meth:`_process` shows as stops at the instructions they stand for.

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

from codemem import abi, native, sitehooks
from codemem import frames as walker
from codemem import displaced
from codemem.code import PatchEdit, PreparedSites
from codemem.errors import CodeMemoryError, CompileError, Trap
from codemem.frametable import MirrorSource, SequencePointKind
from codemem.lowmem import ENTRY_THUNK_PAGE_CODE_SIZE, ENTRY_THUNK_RETURN_OFFSET, LOW_FLOOR, call_landing_address
from codemem.native import ffi, lib
from codemem.registry import ModuleWithCode
from codemem.runtime import WASM_PAGE, trap_for_code
from codemem.wasm.binary import read_uleb
from codemem.wasm.types import ValType

from . import arch_amd64, guest_output
from .agent import SiteAgent, WatchPlace
from .c_abi import return_registers, returned_bytes
from .inferior_calls import (LINEAR_RED_ZONE, CallSetupError, InferiorCall, RegisterState, linear_area_size,
                             lowered_stack_pointer, pack_plan, plan_call, sysv_result_value)
from .protocol.replies import ErrorCode, Signal

log = logging.getLogger(__name__)

class TargetError(Exception):
    """A request the target refuses; ``code`` goes into the ``Exx`` reply."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


class ResumeRefused(TargetError):
    """The registers a debugger wrote describe no state the guest can go on
    from (gdbstub.target ``_settle_registers``): the guest stays stopped,
    nothing changed."""


class StopReason(enum.Enum):
    ENTRY = "entry"            # stopped before the first instruction of the invoked function
    BREAKPOINT = "breakpoint"  # a user breakpoint
    STEP = "step"              # a single step or range step finished
    INTERRUPT = "interrupt"    # the client's ^C
    TRAP = "trap"              # a wasm trap, reported before it unwinds
    WATCH = "watch"            # a watchpoint's access, reported after it


@dataclass
class Stop:
    """The guest is stopped (blocked on its thread) at ``pc``."""

    reason: StopReason
    pc: int
    signal: int
    trap_code: int | None = None
    trap_message: str | None = None
    #: A watchpoint stop: its kind ("watch", "rwatch", "awatch") and the first
    #: watched address accessed, in the client's view (gdbstub.agent).
    watch: str | None = None
    watch_address: int | None = None
    #: Why a conditional breakpoint stopped when its condition could not be
    #: evaluated (shown to the client, gdbstub.session).
    note: str | None = None

    def report(self) -> "StopReport":
        """What this stop tells the client, apart from where it is."""
        return StopReport(self.reason, self.signal, self.watch, self.watch_address, self.note)

    def show_as(self, report: "StopReport") -> None:
        """Report ``report`` at this stop's place: the session steps on from a
        stop its dialect cannot show (carrying that stop's report, a
        watchpoint's included) and shows an attach's stop as SIGSTOP."""
        self.reason, self.signal = report.reason, report.signal
        self.watch, self.watch_address, self.note = report.watch, report.watch_address, report.note


@dataclass(frozen=True)
class StopReport:
    """The reason, signal and details of a stop (see :meth:`Stop.show_as`)."""

    reason: StopReason
    signal: int
    watch: str | None = None
    watch_address: int | None = None
    note: str | None = None


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
    #: rip, rsp, rbp, r15 as the guest stopped (before a debugger's writes)
    origin: RegisterState | None = None
    #: The registers were checked for the resume (see StoreTarget._settle_registers)
    settled: bool = False
    #: Set when the stub reports this stop again at another pc without
    #: running the guest (StoreTarget._stop_without_running): the reason.
    virtual: Any = None
    #: The resume runs the patch site at the registers' rip instead of
    #: resuming after it (StoreTarget._through_frame_setup: a conditional
    #: breakpoint's program at the ENTRY site reached through the frame setup).
    run_site: bool = False

    def resume(self) -> None:
        """Opens the gate (once: the next stop closes the same gate again)."""
        if not self.resumed:
            self.resumed = True
            lib.cm_gate_open(self.gate)


class _HostReturnStop(_GuestStop):
    """The invoked function returned to the host while a breakpoint is set
    where it returns (:attr:`StoreTarget.host_return_pc`).  The guest thread
    has left guest code, so there is no trampoline frame and no gate: it waits
    in Python (it holds no guest state, so the GIL does not matter) and the
    registers are those at the entry thunk's return address, rebuilt
    (:meth:`StoreTarget._stop_at_host_return`)."""

    def __init__(self, regfile):
        super().__init__(native.EVENT_BREAKPOINT, 0, regfile, None)
        self._released = threading.Event()

    def resume(self) -> None:
        self.resumed = True
        self._released.set()

    def wait(self) -> None:
        self._released.wait()


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


def _prepared_plan(plan: list[tuple[Any, Any]]) -> tuple[PreparedSites, ...]:
    """``plan`` (StoreCode, site indexes) pairs as one PreparedSites per
    StoreCode (codemem StoreCode.prepare_sites): its lists joined into one
    C index array (a step's callee entry and return sites), its ranges kept
    ranges, so a large function's sites never become a Python list, and the
    pages to make writable computed once.  A site listed twice still gets
    two references."""
    groups: dict[Any, list] = {}
    for store_code, indexes in plan:
        if len(indexes):
            groups.setdefault(store_code, []).append(indexes)
    return tuple(store_code.prepare_sites(parts) for store_code, parts in groups.items())


def _prepare_one_site(site: tuple[Any, int]) -> PreparedSites:
    store_code, pc = site
    index = store_code.site_index_at(pc)
    return store_code.prepare_sites([range(index, index + 1)])


def _read_u64(address: int) -> int:
    return ffi.cast("uint64_t *", address)[0]


def _context_value(vmctx: int, source: MirrorSource) -> int:
    """Memory 0's base or byte length as the instance context at ``vmctx``
    gives them (codemem.abi "VMContext"), the way compiled code loads them."""
    if source is MirrorSource.MEMORY0_BASE:
        return _read_u64(vmctx + abi.VMCTX_MEMORY_BASE)
    return _read_u64(_read_u64(vmctx + abi.VMCTX_MEMORY_DEF) + abi.MEMDEF_LENGTH)


#: _context_value as the loads it makes: each source's 8-byte reads, the
#: first at r15 + its offset, the next at the value read + its offset.  A
#: resume's context mirrors are reloaded by walking these (no helper calls).
_CONTEXT_LOADS: dict[MirrorSource, tuple[int, ...]] = {
    MirrorSource.MEMORY0_BASE: (abi.VMCTX_MEMORY_BASE,),
    MirrorSource.MEMORY0_LENGTH: (abi.VMCTX_MEMORY_DEF, abi.MEMDEF_LENGTH),
}


@dataclass(frozen=True)
class _ResumeFacts:
    """What a resume from a stop at one pc needs to know of the code there,
    found once per pc and registry generation (StoreTarget._resume_facts): a
    loop's resumes ask the same few pcs at every stop."""

    #: StoreTarget._frame_setup_at(pc): (function start, ENTRY site pc) or None.
    frame_setup: tuple[int, int] | None
    #: Whether ``pc`` is in a function (then the frame has a return address).
    in_function: bool
    #: Where that return address is (codemem.frames.return_slot_above_rsp).
    return_slot: int | None
    #: The register mirrors at ``pc`` (StoreTarget._register_mirrors) by
    #: regfile gpr index: (index, rbp offset of the slot), (index, the
    #: source's _CONTEXT_LOADS).
    slot_mirrors: tuple[tuple[int, int], ...]
    context_mirrors: tuple[tuple[int, tuple[int, ...]], ...]


def _raw_read(address: int, length: int) -> bytes:
    return bytes(ffi.buffer(ffi.cast("char *", address), length))


def _raw_write(address: int, data: bytes) -> None:
    ffi.memmove(ffi.cast("char *", address), data, len(data))


def _put_return_registers(regfile, values: dict[str, int]) -> None:
    """Writes gdbstub.c_abi.return_registers' values (rax, rdx: whole
    registers; xmm0, xmm1: their low 64 bits) into ``regfile``."""
    for name, value in values.items():
        if name.startswith("xmm"):
            regfile.xmm[int(name[3:])][0:8] = value.to_bytes(8, "little")
        else:
            regfile.gpr[_GPR_INDEX[name]] = value


def _call_immediates(data: bytes, wasm_offset: int) -> tuple[int, list[int]] | None:
    """(opcode, its u32 immediates) of a ``call`` (0x10: function index) or
    ``call_indirect`` (0x11: type index, table index) at ``wasm_offset``
    (wasm spec 5.4.1); None for another instruction or malformed bytes."""
    if wasm_offset >= len(data) or data[wasm_offset] not in (0x10, 0x11):
        return None
    opcode, pos, immediates = data[wasm_offset], wasm_offset + 1, []
    try:
        for _ in range(1 if opcode == 0x10 else 2):
            value, pos = read_uleb(data, pos, len(data), 32)
            immediates.append(value)
    except CompileError:
        return None
    return opcode, immediates


#: Wasm opcodes after which control may go anywhere but the next instruction
#: (wasm spec 5.4.1 "Control Instructions"): unreachable, if, else, end, br,
#: br_if, br_table, return, call, call_indirect, return_call(_indirect).
#: block (0x02) and loop (0x03) fall into their body, so they are not here.
_CONTROL_OPCODES = frozenset({0x00, 0x04, 0x05, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13})

#: Opcodes after which the next instruction may be outside the function (wasm
#: spec 5.4.1): br, br_if, br_table (their label may be the function's), return,
#: return_call, return_call_indirect.
_LEAVING_OPCODES = frozenset({0x0C, 0x0D, 0x0E, 0x0F, 0x12, 0x13})
_CALL = 0x10
#: Entries of a target's per-range memo before it starts over.
_MEMO_LIMIT = 4096

#: Per thread: the stop a guest thread is announcing (set for the duration of
#: its ``notify`` in StoreTarget._on_guest_event), so that the server may let
#: that thread serve its client until the stop is resumed (gdbstub.server).
_announcing = threading.local()


def stop_announced_on_this_thread() -> "_GuestStop | None":
    """The stop this thread will wait for at its resume gate once its
    ``notify`` returns (only a guest thread announcing a stop has one); its
    ``resumed`` turns True when a resume opens that gate."""
    return getattr(_announcing, "stop", None)


#: StoreTarget._direct_call_result: the call is a call_indirect.
_NOT_DIRECT = object()
#: call_indirect, return_call, return_call_indirect: any function may be next
#: (return_call's callee is known, but it is reached without a return point).
_INDIRECT_CALLS = frozenset({0x11, 0x12, 0x13})


def _read_uleb(data: bytes, at: int) -> int:
    """An unsigned LEB128 (wasm spec 5.2.2) at ``data[at]`` (a call's function index)."""
    result = shift = 0
    while at < len(data):
        byte = data[at]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        at += 1
        shift += 7
    return result


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
        #: The Store's id, which names it to clients (a plain attribute: read
        #: several times per packet, and a Store's id never changes).
        self.pid: int = store.id
        self.instance = instance
        self.func = func
        self.args = list(args)
        self._notify = notify
        self._exit_status_of = exit_status_of or (lambda exc: 1)
        self._lock = threading.Lock()
        self._pending: list[Any] = []  # _GuestStop | Exited, in arrival order
        #: Set whenever an event is queued (wait_for_event).
        self._event_queued = threading.Event()
        self._stopped: _GuestStop | None = None
        self._current: Stop | None = None
        self.exited: Exited | None = None
        self.debugging = True  # False after detach: events no longer block
        self.breakpoints: set[int] = set()
        #: Breakpoints at instructions that are not sites (codemem.displaced):
        #: pc -> (StoreCode, carrier site pc), and carrier pc -> those pcs.
        self._displaced: dict[int, tuple[Any, int]] = {}
        self._carried: dict[int, set[int]] = {}
        #: The pc shown for the current stop when it is at such an
        #: instruction (a displaced block's stop call, see _process).
        self._displaced_stop: int | None = None
        self._areas: list[displaced.DisplacedArea] = []
        # The sites the last resume armed (a step or an interrupt), each held
        # once; the next stop releases them.
        self._plan: tuple[PreparedSites, ...] | None = None  # what _arm enabled, one per StoreCode
        # The edit the current stop's changes share (see the module docstring).
        self._stop_edit: PatchEdit | None = None
        self._entry_site: int | None = None
        #: Where a debugger's inferior calls return (gdbstub.inferior_calls),
        #: and the calls in progress, innermost last.
        self.call_landing = call_landing_address(low=bool(store.ctx.entry_thunk))
        self._calls: list[InferiorCall] = []
        #: ``(ModuleWithCode, FunctionInfo) -> gdbstub.c_abi.FunctionAbi |
        #: None``: how a function passes C aggregates, from its debug image
        #: (set by the native dialect, which has the images; None: unknown).
        self.function_abi: Callable[[Any, Any], Any] | None = None
        self._aggregate_return_shown: Stop | None = None
        #: Breakpoints the client inserted on the stack (gdb's dummy
        #: breakpoints) or at the landing: the return addresses a call may use.
        self._stack_breakpoints: set[int] = set()
        self._interrupt_requested = False
        self._kill_requested = False
        self._entry_sites_memo: tuple[tuple, list] | None = None
        #: ENTRY site pc -> the user breakpoints in its function's frame
        #: setup (``break *f`` at its first byte, or one at the ``mov rbp,
        #: rsp`` after the push): there is no patch site before the ENTRY
        #: site, so it carries them, and its stop is shown at the first of
        #: them with the setup undone (_process); a resume runs the setup in
        #: the stub (_through_frame_setup, _route_resume).
        self._start_aliases: dict[int, set[int]] = {}
        # (EngineCode, function, range) -> what its instructions may do: a
        # loop's `next`s ask the same few again and again.
        self._calls_and_exits_memo: dict[tuple, tuple[list | None, bool]] = {}
        # (question, pc) -> its answer, for questions about a pc whose answer
        # the registered code alone decides (_code_fact): every stop of a
        # loop asks the same few again.  Emptied when the registry changes.
        self._code_facts: dict[tuple[str, Any], Any] = {}
        self._code_facts_generation = -1
        #: (pc, registry generation, _resume_facts(pc)) of the last resume.
        self._last_resume_facts: tuple[int, int, _ResumeFacts] | None = None
        self._regions_memo: tuple[tuple, list, list | None] | None = None
        self._stack_window: tuple[int, int] | None = None  # _direct_stack_window, made on first use
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
        # Conditions and watchpoints run at the sites (gdbstub.agent); made on
        # first use.  A watchpoint access seen before it happened waits here
        # for the stop at the next sequence point, which reports it.
        self._agent: SiteAgent | None = None
        self._pending_watch = None
        store.debug_handler = self._on_guest_event
        #: ``output_listener(target, fd, data)`` hears the guest's writes to
        #: its stdout and stderr, on the guest thread (set by the TargetHost:
        #: the server forwards them to an attached client).
        self.output_listener: Callable[["StoreTarget", int, bytes], None] | None = None
        guest_output.listen(store, self._on_guest_output)

    # ------------------------------------------------------------ lifecycle

    #: The one thread of every Store target (its guest thread).
    TID = 1
    #: Its thread id (a class constant, read as an attribute).
    tid = TID

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
            self._stop_at_host_return(vals)
            exited = Exited(status=0, results=[v.value for v in vals])
        except Trap as trap:
            signal = _trap_signal(trap.code) if trap.code is not None else int(Signal.SIGILL)
            exited = Exited(status=1, error=trap, signal=signal)
        except BaseException as exc:  # a host function's own exception ends the guest
            exited = Exited(status=self._exit_status_of(exc), error=exc)
        with self._lock:
            self._queue_event(exited)
        self._notify()
        return exited

    @property
    def host_return_pc(self) -> int | None:
        """Where the invoked function returns to the host: after the low
        entry thunk's ``call rdi`` (codemem.lowmem), which a debugger
        sees as the return address of the outermost frame; None for a Store
        placed anywhere (its outermost frame returns into cm_enter)."""
        thunk = self.store.ctx.entry_thunk
        return thunk + ENTRY_THUNK_RETURN_OFFSET if thunk else None

    def _stop_at_host_return(self, results: list) -> None:
        """On the guest thread, after the invoked function returned normally:
        with a breakpoint at :attr:`host_return_pc` (gdb puts one there to
        watch a local of the outermost frame go out of scope, lldb-22 for any
        variable watchpoint set there), stop as if at the thunk's return address
        and wait for the controller.  The registers are what the guest left
        there (csrc cm_enter: rsp 16-aligned below the stack top, minus the
        return address ``call r9`` pushed; rbp 0, which ends the rbp chain;
        r15 the instance context; result 0 (the Vals ``results``) in rax or
        xmm0, where every guest function leaves it (abi.py "Results") and a
        debugger's ``finish`` reads it); the rest is zero."""
        pc = self.host_return_pc
        with self._lock:
            if pc is None or pc not in self.breakpoints or not self.debugging or self._kill_requested:
                return
            regfile = ffi.new("cm_regfile *")
            regfile.rip = pc
            regfile.gpr[_GPR_INDEX["rsp"]] = (self.store.ctx.stack.top & ~15) - 8
            regfile.gpr[_GPR_INDEX["r15"]] = self.instance.vmctx_address
            regfile.rflags = 0x202  # IF, and bit 1 (always set)
            regfile.mxcsr = 0x1F80  # the default (all exceptions masked)
            if results and results[0].type in (ValType.F32, ValType.F64):
                ffi.memmove(regfile.xmm[0], struct.pack("<Q", results[0].bits), 8)
            elif results and results[0].ref is None:
                regfile.gpr[_GPR_INDEX["rax"]] = results[0].bits
            stop = _HostReturnStop(regfile)
            self._queue_event(stop)
        self._notify()
        stop.wait()

    def mark_closed(self) -> None:
        """The Store is about to be closed (its memory unmapped): from now on
        every access is refused (ENOENT) instead of touching freed memory.
        Call with the lock its controller holds, after the guest ended."""
        self.closed = True
        for area in self._areas:
            area.close()
        self._areas.clear()
        # The hook areas too: a low Store's take room in the [2 GiB, 4 GiB)
        # window every debug Store shares (codemem.placement).
        for entry in self.store.registry.entries():
            hooks = sitehooks.existing_hook_area(entry.store_code)
            if hooks is not None:
                hooks.close()

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
                if kind == native.EVENT_BREAKPOINT and regfile.rip == self.call_landing:
                    self._abandon_call(regfile)
                return
            if kind == native.EVENT_TRAP:
                # rsi carries the trapping instruction's sequence point
                # (codemem.abi): that is where the debugger should see the stop.
                regfile.rip = regfile.gpr[4]
                if code == abi.TrapCode.STACK_EXHAUSTED:
                    # Its stub kept the argument array in rax (codemem.abi
                    # "Traps"): the arguments read as at the ENTRY point.
                    regfile.gpr[4] = regfile.gpr[0]
            self._queue_event(stop)
        lib.cm_defer_resume(self._resume_gate)
        _announcing.stop = stop
        try:
            self._notify()
        finally:
            _announcing.stop = None

    def _abandon_call(self, regfile) -> None:
        """An inferior call returned after the debugger left (under the
        lock, on the guest thread): back to the registers before the call,
        or, with none in progress, end the guest (the landing has nowhere to
        return to)."""
        if not self._calls:
            regfile.rip = 0
            return
        call = self._calls.pop()
        self._end_call(call)
        ffi.memmove(regfile, call.saved_regfile, len(call.saved_regfile))
        log.info("inferior call of %s returned after the debugger detached: the guest resumes as before it",
                 call.function)

    def _on_guest_output(self, fd: int, data: bytes) -> None:
        listener = self.output_listener
        if listener is not None and self.debugging:
            listener(self, fd, data)

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

    def _queue_event(self, raw, *, first: bool = False) -> None:
        """Queues ``raw`` (a _GuestStop or Exited; ``first``: ahead of the
        others) for take_event, and wakes wait_for_event.  Under the lock."""
        if first:
            self._pending.insert(0, raw)
        else:
            self._pending.append(raw)
        self._event_queued.set()

    def wait_for_event(self, timeout: float) -> bool:
        """True as soon as an event is pending for :meth:`take_event` (at
        once when one is), False after ``timeout`` seconds without one.  The
        guest thread queues a stop before it announces it, so this sees a
        stop whose announcement waits for a lock the caller holds (the
        server's, while it answers a packet)."""
        self._event_queued.clear()
        with self._lock:
            if self._pending:
                return True
        return self._event_queued.wait(timeout)

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
        # A plain guest stop is nearly every event: one type test keeps the
        # exit's and the host return's tests off its path.
        rare = type(raw) is not _GuestStop
        if rare and isinstance(raw, Exited):
            self.exited = raw
            # The process is gone and no client removes breakpoints after a
            # W/X reply: put the code back to the EngineCode bytes here.
            self._drop_debug_state()
            self.results = raw.results
            self._stopped = None
            self._current = None
            return raw
        assert self._stopped is None, "guest stopped twice without a resume"
        self._stopped = raw
        self._displaced_stop = None
        regfile = raw.regfile
        gpr = regfile.gpr
        if raw.virtual is not None:
            # A step through a frame setup, or the breakpoint after one
            # (_stop_without_running): the guest has not run.
            reason, raw.virtual = raw.virtual, None
            pc = regfile.rip
            raw.origin = RegisterState(pc, gpr[7], gpr[6], gpr[15])
            self._range = None
            self._current = Stop(reason, pc, Signal.SIGTRAP)
            return self._current
        if rare and isinstance(raw, _HostReturnStop):
            self._disarm()  # a step that left the outermost frame ends here
            self._range = None
            self._current = Stop(StopReason.BREAKPOINT, regfile.rip, Signal.SIGTRAP)
            return self._current
        if self._areas and raw.kind != native.EVENT_TRAP:
            self._show_displaced_stop(regfile)
        pc = regfile.rip
        raw.origin = RegisterState(pc, gpr[7], gpr[6], gpr[15])
        hit = self._agent.take_hit(pc) if self._agent is not None else None
        if raw.kind == native.EVENT_TRAP:
            self._disarm()
            self._pending_watch = None
            message = trap_for_code(raw.code).message
            stop = Stop(StopReason.TRAP, pc, _trap_signal(raw.code), raw.code, message)
        else:
            was_stepping = self._plan is not None
            was_interrupt = self._interrupt_requested
            self._disarm()
            if hit is not None and hit.kind == sitehooks.HIT_HOST_WRITE:
                # A host function (e.g. WASI fd_read) wrote a watched range:
                # this is the return point after its call, after the write.
                self._pending_watch = self._agent.watch_at_host_write(hit)
            elif self._agent is not None and self._pending_watch is None:
                # A host write whose return point had a plain stop (a step, a
                # breakpoint) that ran no veneer: report it here.
                self._pending_watch = self._agent.take_host_write()
            if hit is not None and hit.kind in (sitehooks.HIT_ACCESS, sitehooks.HIT_GLOBAL) \
                    and self._pending_watch is None:
                # Seen before the access: run to the next sequence point, and
                # report it there, after the write.
                found = self._agent.watch_for_hit(hit)
                if found is not None:
                    self._pending_watch = found
                    self._range = None
                    self._resume_step()
                    return None
            if pc == self.call_landing:
                # An inferior call returned: always a stop (the landing is a
                # permanent breakpoint), shown where gdb's dummy breakpoint is.
                if self._calls:
                    self._deliver_aggregate_result(self._calls[-1], raw.regfile)
                    pc = raw.regfile.rip = self._calls[-1].return_address
                    raw.origin = RegisterState(pc, raw.origin.rsp, raw.origin.rbp, raw.origin.r15)
                stop = Stop(StopReason.BREAKPOINT, pc, Signal.SIGTRAP)
            elif self._pending_watch is not None:
                watch, address = self._pending_watch
                self._pending_watch = None
                stop = Stop(StopReason.WATCH, pc, Signal.SIGTRAP, watch=watch.name, watch_address=address)
            elif self._entry_site is not None and pc == self._entry_site:
                self._disarm_entry()
                stop = Stop(StopReason.ENTRY, pc, Signal.SIGTRAP)
            elif was_interrupt:
                stop = Stop(StopReason.INTERRUPT, pc, Signal.SIGINT)
            elif was_stepping and self._range is not None and self._range[0] <= pc < self._range[1] \
                    and pc not in self.breakpoints and not self._start_aliases.get(pc):
                self._resume_step()  # vCont;r: keep stepping while inside the range
                return None
            elif (pc in self.breakpoints or self._start_aliases.get(pc)) and not was_stepping:
                stop = Stop(StopReason.BREAKPOINT, pc, Signal.SIGTRAP)
            elif was_stepping:
                stop = Stop(StopReason.STEP, pc, Signal.SIGTRAP)
            elif pc in self.breakpoints or self._start_aliases.get(pc):
                stop = Stop(StopReason.BREAKPOINT, pc, Signal.SIGTRAP)
            else:
                if pc in self._carried and self._watch_on_resume(raw):
                    # A site that only carries breakpoints after it: its own
                    # reference kept its access check from running, so it is
                    # made here, as on any resume from a site.
                    self._resume_step()
                    return None
                # A site nobody armed any more (a breakpoint removed while the
                # guest was already on its way to it), or one that only
                # carries breakpoints after it (_release routes the guest
                # through their displaced block): not a stop.
                log.debug("stop at %#x not reported", pc)
                self._release()
                return None
            if gpr[6] == gpr[7]:  # rbp == rsp: the one case _show_before_frame_setup may move (the cheap test first)
                self._show_before_frame_setup(raw, stop)
        if hit is not None and stop.reason == StopReason.BREAKPOINT:
            stop.note = hit.condition_note()
        self._range = None
        self._current = stop
        return stop

    def _show_before_frame_setup(self, raw: _GuestStop, stop: Stop) -> None:
        """A stop at an ENTRY site that stands for the function's first byte
        is shown there, before its `push rbp; mov rbp, rsp` (codemem.abi
        "Function layout"), as natively: a step into the function and the
        session's first stop (a function is entered at its first byte), and
        a breakpoint in the frame setup (``break *f``, carried by the ENTRY
        site: shown at the first of them).  Only a breakpoint at the ENTRY
        site itself, a watch hit and a call's return stay where they are.
        The registers are rewritten as before the setup (at the ENTRY site
        rsp == rbp and [rbp] is the caller's rbp); a resume runs it again
        (_through_frame_setup, _route_resume)."""
        if stop.reason not in (StopReason.BREAKPOINT, StopReason.STEP, StopReason.ENTRY, StopReason.INTERRUPT):
            return
        pc = stop.pc
        aliases = self._start_aliases.get(pc)
        if stop.reason is StopReason.BREAKPOINT and not aliases:
            return
        regs = raw.regfile.gpr
        if regs[6] != regs[7]:
            return
        start = self._code_fact("start of ENTRY site", pc, self._start_of_entry_site)
        if start is None:
            return
        shown = min(aliases) if stop.reason is StopReason.BREAKPOINT else start
        saved_rbp = _read_u64(regs[7])
        regs[6], regs[7] = saved_rbp, regs[7] + (8 if shown == start else 0)
        raw.regfile.rip = stop.pc = shown
        raw.origin = RegisterState(shown, regs[7], regs[6], regs[15])

    def _start_of_entry_site(self, pc: int) -> int | None:
        """The first byte of the function whose ENTRY site is at ``pc``, or
        None when ``pc`` is no function's ENTRY site."""
        entry = self.store.registry.lookup(pc)
        func = entry.function_at(pc) if entry is not None else None
        if func is None or entry.store_code.base + entry.store_code.frame_table.entry_offset(func) != pc:
            return None
        return entry.store_code.base + func.native_start

    def _show_displaced_stop(self, regfile) -> None:
        """A stop at a displaced block's stop call is shown at the instruction
        it stands for (codemem.displaced): the registers are those at that
        instruction, only rip names the copy."""
        for area in self._areas:
            if area.contains(regfile.rip):
                hit = area.stop_call(regfile.rip)
                if hit is None:
                    raise AssertionError(f"stop at {regfile.rip:#x} inside displaced code but not at a stop call")
                regfile.rip = hit[1]
                self._displaced_stop = hit[1]
                return

    def require_stopped(self) -> _GuestStop:
        """The current stop; TargetError (EBUSY running, ENOENT exited) if none."""
        self.require_open()
        if self._stopped is None:
            raise TargetError(ErrorCode.EBUSY if self.exited is None else ErrorCode.ENOENT,
                              "the guest is running" if self.exited is None else "the guest has exited")
        return self._stopped

    # ---------------------------------------------------------- resuming

    def _release(self) -> None:
        if self._agent is not None:
            self._agent.before_resume()  # regions (instances come and go), access sites
        edit = self._stop_edit
        if edit is not None:  # _finish_stop_edit, inline: at every resume
            self._stop_edit = None
            edit.finish()
        stopped = self._stopped
        if stopped is not None and not stopped.settled:
            try:
                self._settle_registers(stopped)
            except TargetError as e:
                log.warning("the guest resumes as it stopped: %s", e)
                self._restore_origin(stopped)
        self._stopped, self._current = None, None
        displaced_pc, self._displaced_stop = self._displaced_stop, None
        if stopped is None:
            return
        regfile = stopped.regfile
        if stopped.kind == native.EVENT_BREAKPOINT and regfile.rip != 0:  # else a trap unwinds, or the kill path
            facts = self._resume_facts(regfile.rip)
            if displaced_pc is None or regfile.rip != displaced_pc:
                # Registers are the truth between sequence points: nothing
                # mirrors a slot there.
                self._reload_register_mirrors(regfile, facts)
            if stopped.run_site or facts.frame_setup is not None or displaced_pc is not None or self._carried:
                self._route_resume(stopped, displaced_pc, facts.frame_setup)
        self.schedule_resume(stopped.resume)

    def _route_resume(self, stopped: _GuestStop, displaced_pc: int | None, setup: tuple[int, int] | None) -> None:
        """Points the resume at a displaced block when breakpoints at
        non-site instructions are armed on the way (codemem.displaced), runs
        the frame setup at ``setup`` (_frame_setup_at of the registers' rip).
        The trampoline resumes at ``rip + 5``.  Only for a breakpoint stop
        that is not on the kill path (rip 0)."""
        regfile = stopped.regfile
        assert stopped.kind == native.EVENT_BREAKPOINT and regfile.rip != 0, "a trap unwinds; rip 0 is the kill path"
        if stopped.run_site:
            # The trampoline resumes at rip + 5: 5 bytes before the site, it
            # resumes at the site's call (its frame setup was run here).
            stopped.run_site = False
            regfile.rip -= 5
            return
        rip = regfile.rip
        if setup is not None:
            # A function's first byte (a breakpoint there, an inferior call,
            # a detach) or the one after its push: run the frame setup here
            # and resume after the ENTRY site (the trampoline resumes at
            # rip + 5).
            try:
                self._run_frame_setup(regfile, *setup)
            except TargetError as e:
                log.error("cannot resume at %#x: %s; the guest is ended", rip, e)
                regfile.rip = 0  # the kill path: better than running push-less code
            return
        if displaced_pc is not None and rip == displaced_pc:
            # Resume at this instruction: in the block of its carrier while
            # a later armed instruction needs one, else the real code.
            entry = self.store.registry.lookup(rip)
            code = entry.store_code
            fn, carrier = displaced.check_displaceable(code.engine_code, code.offset_of(rip))
            block = self._block_for(code, fn, code.base + carrier)
            resume = block.resume_address(rip) if block is not None else None
            regfile.rip = (resume if resume is not None else rip) - 5
            return
        if rip in self._carried:
            code, _ = self._displaced[next(iter(self._carried[rip]))]
            fn = displaced.function_code(code.engine_code, code.frame_table.function_at(code.offset_of(rip)).native_start)
            block = self._block_for(code, fn, rip)
            if block is not None:
                regfile.rip = block.address - 5

    def _block_for(self, code, fn, carrier: int) -> displaced.BlockLayout | None:
        """The displaced block of ``carrier`` for the breakpoints armed in its
        code now, or None when none is."""
        armed = self._carried.get(carrier)
        if not armed:
            return None
        area = displaced.area_for(code)
        if area not in self._areas:
            self._areas.append(area)
        try:
            return area.block(fn, carrier, sorted(armed))
        except displaced.DisplacedError:
            if area.used == 0:
                raise
            # Full: no guest is inside any block now (the one guest is
            # stopped here, outside them), so start over.
            area.reset()
            return area.block(fn, carrier, sorted(armed))

    def _register_mirrors(self, pc: int) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, MirrorSource], ...]]:
        """(slot mirrors, context mirrors): the registers the code after the
        sequence point at ``pc`` relies on (codemem.frametable, "Register
        mirrors"); memoized, asked at every resume."""
        return self._code_fact("register mirrors", pc, self._find_register_mirrors)

    def _find_register_mirrors(self, pc: int) -> tuple[tuple[tuple[str, int], ...],
                                                       tuple[tuple[str, MirrorSource], ...]]:
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return (), ()
        code = entry.store_code
        offset = code.offset_of(pc)
        table = code.frame_table
        return table.register_mirrors_at(offset), table.context_mirrors_at(offset)

    def _resume_facts(self, pc: int) -> _ResumeFacts:
        """What a resume at ``pc`` needs of the code there (memoized; the
        last answer kept apart: a resume asks it three times, a step plan,
        the frame setup, the release)."""
        last = self._last_resume_facts
        generation = self.store.registry.generation
        if last is not None and last[0] == pc and last[1] == generation:
            return last[2]
        facts = self._code_fact("resume facts", pc, self._find_resume_facts)
        self._last_resume_facts = (pc, generation, facts)
        return facts

    def _find_resume_facts(self, pc: int) -> _ResumeFacts:
        place = self._function_place(pc)
        slot_mirrors, context_mirrors = self._register_mirrors(pc)
        return _ResumeFacts(frame_setup=self._frame_setup_at(pc), in_function=place is not None,
                            return_slot=walker.return_slot_above_rsp(*place) if place is not None else None,
                            slot_mirrors=tuple((_GPR_INDEX[name], offset) for name, offset in slot_mirrors),
                            context_mirrors=tuple((_GPR_INDEX[name], _CONTEXT_LOADS[source])
                                                  for name, source in context_mirrors))

    def _reload_register_mirrors(self, regfile, facts: _ResumeFacts) -> None:
        """The frame slots are the truth a debugger edits (locals, the operand
        stack): before the guest resumes at a sequence point, every register
        that mirrors a slot there is reloaded from it.  (A debugger's write to
        such a register went to the slot too, see write_registers.)  The
        registers holding memory 0's base and length, which the code's bounds
        checks trust, are reloaded from the instance context (r15), as the
        code itself loads them.  ``facts``: _resume_facts of the registers'
        rip, a breakpoint stop's."""
        gpr = regfile.gpr
        slot_mirrors = facts.slot_mirrors
        if slot_mirrors:
            rbp = gpr[_GPR_INDEX["rbp"]]
            for index, offset in slot_mirrors:
                gpr[index] = ffi.cast("uint64_t *", rbp + offset)[0]
        if facts.context_mirrors:
            vmctx = gpr[_GPR_INDEX["r15"]]
            for index, loads in facts.context_mirrors:
                value = vmctx
                for offset in loads:  # _context_value's reads
                    value = ffi.cast("uint64_t *", value + offset)[0]
                gpr[index] = value

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
            return contextlib.nullcontext(self._edit_of_stop())
        return self.store.registry.patch_edit(live=self.is_running)

    def _edit_of_stop(self) -> PatchEdit:
        """The stopped guest's shared edit (_patch_edit), made on first use;
        republished by _finish_stop_edit before the guest runs."""
        assert self._stopped is not None, "a stop edit without a stop"
        edit = self._stop_edit
        if edit is None:
            edit = self._stop_edit = self.store.registry.patch_edit()
        return edit

    def _settle_for_resume(self, stopped: _GuestStop) -> None:
        """_settle_registers before a resume, its refusal a ResumeRefused.
        Registers as they stopped (nothing written, no inferior call in
        progress, which may redirect a stop at its return address) are
        settled without the general check: a loop's every resume."""
        origin = stopped.origin
        if origin is not None and not self._calls and stopped.kind == native.EVENT_BREAKPOINT:
            regfile = stopped.regfile
            gpr = regfile.gpr
            if regfile.rip == origin.rip and gpr[7] == origin.rsp and gpr[6] == origin.rbp and gpr[15] == origin.r15:
                stopped.settled = True
                return
        try:
            self._settle_registers(stopped)
        except ResumeRefused:
            raise
        except TargetError as e:
            raise ResumeRefused(e.code, str(e)) from None

    def resume(self) -> None:
        """Continue until a breakpoint, a trap or the end.  ResumeRefused when
        the registers are no state to continue from."""
        stopped = self.require_stopped()
        if not stopped.settled:
            self._settle_for_resume(stopped)
        self._range = None
        if self._through_frame_setup(stopped, False, None):
            return
        if self._agent is not None and self._watch_on_resume(stopped):
            self._resume_step()
            return
        self._release()

    def _watch_on_resume(self, stopped: _GuestStop) -> bool:
        """A guest resumes from a stop at a site after the site's call, so
        the site's own access check must be made here: True when the access
        the guest is about to make hits a watchpoint (then it is pending,
        reported at the next sequence point)."""
        if (self._agent is None or stopped.kind != native.EVENT_BREAKPOINT or self._pending_watch is not None
                or stopped.run_site):  # the site runs: its own program makes the check
            return False
        found = self._agent.access_at(stopped.regfile.rip, stopped.regfile)
        if found is None:
            return False
        self._pending_watch = found
        return True

    def step(self, range_: tuple[int, int] | None = None) -> None:
        """Run to the next sequence point reached (in this function, a callee,
        or the caller after a return).  With ``range_`` (vCont;r), keep going
        while the pc stays in [start, end)."""
        stopped = self._stopped
        if stopped is None or self.closed:
            stopped = self.require_stopped()  # raises: not stopped, or ended
        if stopped.kind == native.EVENT_TRAP or isinstance(stopped, _HostReturnStop):
            # A trap is fatal: the next thing that happens is the unwind.
            # Back in the host, the next thing is the end of the invocation.
            self._release()
            return
        if not stopped.settled:
            self._settle_for_resume(stopped)
        if self._resume_facts(stopped.regfile.rip).frame_setup is not None \
                and self._through_frame_setup(stopped, True, range_):
            return
        self._range = None if self._agent is not None and self._watch_on_resume(stopped) else range_
        self._resume_step()

    def _through_frame_setup(self, stopped: _GuestStop, stepping: bool, range_: tuple[int, int] | None) -> bool:
        """A resume from a function's frame setup (its first byte, where a
        breakpoint there or an inferior call put the pc, or the byte after
        the push): its instructions are run here (_run_frame_setup), since
        the guest waits at a site.  True when that already ends the resume
        with a stop reported without running the guest: a single step stops
        after each of them (``stepi`` from the first byte: after the push,
        then at the ENTRY site, as natively), a range step at the ENTRY site
        when it leaves the range, and any resume there when a user
        breakpoint is at the ENTRY site itself.  False: resume as usual
        (from the ENTRY site when the setup was run)."""
        if stopped.kind != native.EVENT_BREAKPOINT or isinstance(stopped, _HostReturnStop):
            return False
        regfile = stopped.regfile
        setup = self._resume_facts(regfile.rip).frame_setup
        if setup is None:
            return False
        start, entry_pc = setup
        while regfile.rip != entry_pc:
            try:
                self._run_frame_setup(regfile, start, regfile.rip + 1 if regfile.rip == start else entry_pc)
            except TargetError as e:
                raise ResumeRefused(e.code, str(e)) from None
            pc = regfile.rip
            leaves_range = stepping and (range_ is None or not range_[0] <= pc < range_[1])
            if pc in self.breakpoints and self._is_hooked(pc) and not leaves_range:
                # Its conditions (or commands) are the site's program: the
                # guest runs the site itself (_route_resume), which stops
                # only when a condition holds.
                stopped.run_site = True
                return False
            if pc in self.breakpoints:
                self._stop_without_running(stopped, StopReason.BREAKPOINT)
                return True
            if leaves_range:
                self._stop_without_running(stopped, StopReason.STEP)
                return True
        return False

    def _stop_without_running(self, stopped: _GuestStop, reason: StopReason) -> None:
        """Reports ``stopped`` again at its (changed) registers' pc with
        ``reason``, without releasing the guest: it is queued as the next
        event, and announced from another thread, as the guest thread
        announces a stop (the owner's ``notify`` may answer the client on
        the announcing thread, under the lock the caller may hold now)."""
        if self._agent is not None:
            self._agent.before_resume()  # as a resume would: the access sites are hooked from here on
        self._finish_stop_edit()
        stopped.virtual = reason
        stopped.settled = False
        self._stopped, self._current = None, None
        with self._lock:
            self._queue_event(stopped, first=True)
        threading.Thread(target=self._notify, name=f"stop-store{self.pid}", daemon=True).start()

    def _resume_step(self) -> None:
        stopped = self._stopped
        assert stopped is not None
        self._arm(self._step_plan(stopped.regfile))
        self._release()

    def interrupt(self) -> None:
        """^C: make the running guest stop at the next sequence point it reaches
        (every site of every image, patched live)."""
        if self.closed or not self.is_running or self._interrupt_requested:
            return
        self._disarm()  # a step in flight: the interrupt plan replaces it
        self._arm(_prepared_plan(self._all_sites()))
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
        if stopped is None and self.is_running:
            # Running: killed at the next sequence point it reaches.  A guest
            # released from a stop unwinds at once (above) and needs none of
            # this: arming every site of a real-size module cost gdb's `run`
            # (vKill, then vRun) 50 ms.
            self._arm(_prepared_plan(self._all_sites()))

    def _drop_debug_state(self) -> None:
        self._disarm()
        self._disarm_entry()
        self.remove_all_breakpoints()
        if self._agent is not None:
            self._agent.clear()
        self._pending_watch = None
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

    def _entry_site_of_start(self, pc: int) -> int | None:
        """The ENTRY site pc of the function whose first byte is ``pc``
        (after its ``push rbp; mov rbp, rsp``, codemem.abi "Function
        layout"), or None when ``pc`` is no function's first byte or the code
        has no sites."""
        setup = self._frame_setup_at(pc)
        return setup[1] if setup is not None and setup[0] == pc else None

    def _code_fact(self, question: str, pc: Any, answer: Callable[[Any], Any]) -> Any:
        """``answer(pc)``, memoized per ``(question, pc)`` for as long as the
        registry's images are the same (ModuleRegistry.generation): only for
        questions the code alone answers (``pc`` may be a tuple that holds
        whatever else the answer depends on), never the registers or memory."""
        registry = self.store.registry
        facts = self._code_facts
        if self._code_facts_generation != registry.generation:
            facts.clear()
            self._code_facts_generation = registry.generation
        key = (question, pc)
        try:
            return facts[key]
        except KeyError:
            if len(facts) >= _MEMO_LIMIT:  # bounded: counted when it grows, not at every hit
                facts.clear()
            found = facts[key] = answer(pc)
            return found

    def _frame_setup_at(self, pc: int) -> tuple[int, int] | None:
        """(function start pc, ENTRY site pc) when ``pc`` is on a function's
        frame setup (its ``push rbp`` or ``mov rbp, rsp``, before its ENTRY
        site), else None.  Asked several times per resume: memoized."""
        return self._code_fact("frame setup", pc, self._find_frame_setup)

    def _find_frame_setup(self, pc: int) -> tuple[int, int] | None:
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return None
        code = entry.store_code
        func = code.frame_table.function_at(code.offset_of(pc))
        if func is None or walker.return_slot_above_rsp(func, code.offset_of(pc)) is None \
                or code.frame_table.entry_site_index(func) is None:
            return None
        return code.base + func.native_start, code.base + code.frame_table.entry_offset(func)

    def _run_frame_setup(self, regfile, start: int, until: int) -> None:
        """Runs the frame setup instructions from the one at ``regfile.rip``
        (``start`` or ``start + 1``) up to ``until`` (``start + 1``: the push
        only; the ENTRY site pc: both) on the saved registers and the guest
        stack, as the CPU would: ``push rbp`` writes rbp below rsp, ``mov
        rbp, rsp`` copies rsp.  A stop there is virtual: the guest itself
        waits at a site (its trampoline resumes at the registers' rip + 5),
        so a resume from a frame setup pc always runs it here first."""
        if regfile.rip == start:
            rsp = regfile.gpr[7] - 8
            if not self._on_stack(rsp):
                raise TargetError(ErrorCode.EPERM, f"push rbp at {start:#x}: rsp {rsp:#x} is off the guest stack")
            ffi.cast("uint64_t *", rsp)[0] = regfile.gpr[6]
            regfile.gpr[7] = rsp
            regfile.rip = start + abi.FRAME_SETUP_MOV
        if regfile.rip == start + abi.FRAME_SETUP_MOV and until != regfile.rip:
            regfile.gpr[6] = regfile.gpr[7]
            regfile.rip = until

    def _site_for(self, pc: int) -> tuple[Any, int]:
        entry = self.store.registry.lookup(pc)
        if entry is None:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"{pc:#x} is not in any code of this Store")
        try:
            entry.store_code.site_index_at(pc)
        except CodeMemoryError as e:
            raise TargetError(ErrorCode.EINVAL, f"{e}; breakpoints go at sequence points (patch sites)") from None
        return (entry.store_code, pc)

    def _breakpoint_site(self, pc: int) -> tuple[tuple[Any, int], bool]:
        """((StoreCode, site pc), displaced) for a breakpoint at ``pc``: its
        own site, or the carrier site of a non-site instruction
        (codemem.displaced); TargetError naming why it cannot be honoured."""
        entry = self.store.registry.lookup(pc)
        if entry is None:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"{pc:#x} is not in any code of this Store")
        code = entry.store_code
        offset = code.offset_of(pc)
        if code.frame_table.site_index(offset) is not None:
            return (code, pc), False
        if not code.debug:
            raise TargetError(ErrorCode.EINVAL, f"{pc:#x} is not a patch site and the code is not a debug copy")
        try:
            _, carrier = displaced.check_displaceable(code.engine_code, offset)
        except displaced.DisplacedError as e:
            raise TargetError(ErrorCode.EINVAL, f"no breakpoint at {pc:#x} ({entry.engine_code.name}+{offset:#x}): "
                                                f"{e}") from None
        return (code, code.base + carrier), True

    def _arm(self, plan: tuple[PreparedSites, ...]) -> None:
        """Enables ``plan`` (:func:`_prepared_plan`: the sites of each
        StoreCode prepared for bulk edits) as the plan the next stop releases
        (a live edit when the guest is running: an interrupt or a kill).
        Each StoreCode's sites are one edit (codemem PatchEdit.enable_prepared):
        arming every site of a real-size module is one C call."""
        assert self._plan is None, "arming over an armed plan"
        if self._stopped is not None:
            # The stop's edit (as _patch_edit gives it, without its context):
            # a step's arm at every resume, mostly after the stop's disarm.
            edit = self._stop_edit or self._edit_of_stop()
            for prepared in plan:
                edit.enable_prepared(prepared)
        else:
            with self._patch_edit() as edit:
                for prepared in plan:
                    edit.enable_prepared(prepared)
        self._plan = plan

    def _disarm(self) -> None:
        plan, self._plan = self._plan, None
        self._interrupt_requested = False
        if not plan:
            return
        # Live while the guest may be executing the image (an interrupt or a
        # kill racing a step); a stopped guest allows the cheaper edit, the
        # stop's (as _patch_edit gives it: a step's disarm at every stop).
        if self._stopped is not None:
            edit = self._edit_of_stop()
            for prepared in plan:
                edit.disable_prepared(prepared)
        else:
            with self._patch_edit() as edit:
                for prepared in plan:
                    edit.disable_prepared(prepared)

    def _arm_entry(self, pc: int) -> None:
        """Arms the ENTRY site of the function starting at ``pc`` (its
        first byte): the stop a session starts at, frame set up."""
        pc = self._entry_site_of_start(pc) or pc
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

    def _step_plan(self, regfile) -> tuple[PreparedSites, ...]:
        """:meth:`_step_sites`, prepared (:func:`_prepared_plan`) and
        memoized: a loop's `next`s arm the same few plans at every stop.  The
        plan depends only on the pc, the step's range, the frame's return
        address, whether the host was itself called by wasm, and the
        registered code (the memo's lifetime, _code_fact); a stop between
        sequence points (a displaced instruction) is planned afresh."""
        pc = regfile.rip
        if self._displaced_stop == pc:
            return _prepared_plan(self._step_sites(regfile))
        facts = self._resume_facts(pc)
        return_address = None
        ctx = self.store.ctx
        if facts.in_function:
            return_address = walker.return_address(ctx.stack, rsp_slot=facts.return_slot, rbp=regfile.gpr[6],
                                                   rsp=regfile.gpr[7])
        key = (pc, self._range, return_address, ctx.depth > 1)
        return self._code_fact("step plan", key, lambda _: _prepared_plan(self._step_sites(regfile)))

    def _function_place(self, pc: int):
        """(FunctionInfo, image offset) of ``pc``, or None outside every function."""
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return None
        offset = entry.store_code.offset_of(pc)
        func = entry.store_code.frame_table.function_at(offset)
        return None if func is None else (func, offset)

    def _step_sites(self, regfile) -> list[tuple[Any, Any]]:
        """The sites a step must arm (a plan for :meth:`_arm`) to catch the next
        sequence point reached outside the step's range (``self._range``; with
        none, the next one at all):

        * the current function's sites outside the range (any branch; a plain
          step arms them all: a loop may come back to the same point);
        * the entry site of each function a call in the range may enter: the
          callee of a direct ``call``, every function's for an indirect call or
          a call of an import (a host function may call any export);
        * where the function returns to: the caller's return site, or every
          function's entry site when the caller is the host (it may call any
          export next), when the range may leave the function; when the host
          was itself called by wasm (a nested entry), every site: the host
          returns into an outer wasm frame.

        Inside the range nothing is armed, so a range step (``vCont;r``) runs
        the whole range at full speed and stops once, where it leaves it, as
        gdbserver's range stepping does.  Cost: proportional to the current
        function, never to the module (every site of every image only for a
        nested entry's return, or when the pc is in no function, which a stop
        at a sequence point never is)."""
        pc = regfile.rip
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return self._all_sites()
        code = entry.store_code
        table = code.frame_table
        offset = code.offset_of(pc)
        func = table.function_at(offset)
        if func is None:
            return self._all_sites()
        frame_popped = False
        if self._displaced_stop == pc:
            # Between sequence points: where control goes next is decided by
            # the wasm instruction of the carrier site (codemem.displaced).
            fn, carrier = displaced.check_displaceable(code.engine_code, offset)
            frame_popped = fn.pops_frame(carrier, offset)
            offset = carrier
        if self._range is None or not self._range[0] <= pc < self._range[1]:
            following = self._next_in_straight_line(entry, func, offset)
            if following is not None:
                return [(code, [table.site_index(code.offset_of(following))])]
            lo, hi = offset, offset + 1  # the instruction at pc (its carrier's)
            plan: list[tuple[Any, Any]] = [(code, table.site_indexes_in(func.native_start, func.native_end))]
        else:
            lo = max(func.native_start, self._range[0] - code.base)
            hi = min(func.native_end, self._range[1] - code.base)
            plan = [(code, table.site_indexes_in(func.native_start, lo)),
                    (code, table.site_indexes_in(hi, func.native_end))]
        callees, leaves = self._calls_and_exits(entry, func, lo, hi)
        if callees is None:
            plan += self._entry_sites()
        else:
            for callee in callees:
                index = table.entry_site_index(callee)
                if index is not None:
                    plan.append((code, [index]))
        if leaves:
            if frame_popped:
                # In the epilogue after `pop rbp`: the return address is at rsp.
                return_address = _read_u64(regfile.gpr[7])
            else:
                return_address = self._return_address(regfile, func, offset)
            caller = self.store.registry.lookup(return_address) if return_address else None
            if caller is None:
                if self.store.ctx.depth > 1:
                    # Entered from a host function that wasm called: returning
                    # through it resumes an outer wasm frame after its call.
                    return self._all_sites()
                if callees is not None:
                    plan += self._entry_sites()
            else:
                caller_code = caller.store_code
                index = caller_code.frame_table.site_index(caller_code.offset_of(return_address))
                if index is not None:
                    plan.append((caller_code, [index]))
        return plan

    def _calls_and_exits(self, entry: ModuleWithCode, func, lo: int, hi: int) -> tuple[list | None, bool]:
        """What the wasm instructions at the sequence points in image offsets
        [lo, hi) of ``func`` may do besides falling through or branching inside
        the function: (the functions their direct calls enter, or None when one
        may enter any function: an indirect call, a call of an import; whether
        one may leave the function: a return, a branch (conservatively: it may
        target the function's own label), its final ``end``, a tail call)."""
        key = (entry.store_code.engine_code, func.position, lo, hi)  # held: no id reuse
        found = self._calls_and_exits_memo.get(key)
        if found is None:
            if len(self._calls_and_exits_memo) >= _MEMO_LIMIT:
                self._calls_and_exits_memo.clear()
            found = self._calls_and_exits_memo[key] = self._scan_calls_and_exits(entry, func, lo, hi)
        return found

    @staticmethod
    def _scan_calls_and_exits(entry: ModuleWithCode, func, lo: int, hi: int) -> tuple[list | None, bool]:
        """:meth:`_calls_and_exits` read from the frame table: only the points
        in [lo, hi) (bisected), and the function's final ``end`` (its last
        INSTRUCTION point), so a line of a huge function costs what the line
        has, not what the function has."""
        table = entry.store_code.frame_table
        wasm = entry.module.wasm
        offsets = table.sequence_point_column(func, 0).searchable
        kinds = table.sequence_point_column(func, 8, "<B").searchable
        wasm_offsets = table.sequence_point_column(func, 4).searchable
        instruction = SequencePointKind.INSTRUCTION
        final_end = next((offsets[k] for k in range(len(offsets) - 1, -1, -1) if kinds[k] == instruction), None)
        callees: list | None = []
        leaves = False
        for k in range(bisect.bisect_left(offsets, lo), bisect.bisect_left(offsets, hi)):
            wasm_offset = wasm_offsets[k]
            if kinds[k] != instruction or not 0 <= wasm_offset < len(wasm):
                continue
            opcode = wasm[wasm_offset]
            if offsets[k] == final_end or opcode in _LEAVING_OPCODES:
                leaves = True
            if opcode == _CALL:
                callee = table.function_by_wasm_index(_read_uleb(wasm, wasm_offset + 1))
                if callee is None:  # an import: the host may call back into any export
                    callees = None
                elif callees is not None:
                    callees.append(callee)
            elif opcode in _INDIRECT_CALLS:
                callees = None
        return callees, leaves

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
        offsets = table.sequence_point_offsets(func).searchable
        k = bisect.bisect_right(offsets, offset)
        if k >= len(offsets) or table.site_index(offsets[k]) is None:
            return None
        return code.base + offsets[k]

    def _entry_sites(self) -> list[tuple[Any, list[int]]]:
        """(StoreCode, site indexes) of every function's entry site, per
        registered image (memoized per set of registered images)."""
        entries = self.store.registry.entries()
        key = self.store.registry.code_bases()
        if self._entry_sites_memo is None or self._entry_sites_memo[0] != key:
            plan = []
            for entry in entries:
                table = entry.store_code.frame_table
                plan.append((entry.store_code, table.entry_site_indexes()))
            self._entry_sites_memo = (key, plan)
        return self._entry_sites_memo[1]

    def _all_sites(self) -> list[tuple[Any, range]]:
        """Every site of every image: what an interrupt (or a kill) arms."""
        return [(entry.store_code, range(entry.store_code.frame_table.num_sites))
                for entry in self.store.registry.entries()]

    def _return_address(self, regfile, func, offset: int) -> int | None:
        """The return address of the current frame, at image offset
        ``offset`` of ``func`` (codemem.frames)."""
        return walker.return_address(self.store.ctx.stack, rsp_slot=walker.return_slot_above_rsp(func, offset),
                                     rbp=regfile.gpr[6], rsp=regfile.gpr[7])

    def frames(self, limit: int = walker.MAX_FRAMES) -> list[walker.Frame]:
        """The stopped guest's wasm frames, innermost first, at most ``limit``
        (codemem.frames.walk)."""
        regfile = self.require_stopped().regfile
        return walker.walk(self.store.registry, self.store.ctx.stack, regfile.rip, regfile.gpr[6], regfile.gpr[7],
                           limit)

    def argument_array(self, frame: walker.Frame) -> int | None:
        """The address of ``frame``'s argument array (parameter k at +8k,
        codemem.abi), one of :meth:`frames` of the current stop; None when it
        is unknown."""
        return self._argument_array(frame, self.require_stopped().regfile)

    # ------------------------------------------------------- breakpoints

    @property
    def agent(self) -> SiteAgent:
        """Conditions and watchpoints at the sites of this Store (gdbstub.agent)."""
        if self._agent is None:
            self._agent = SiteAgent(self, self._patch_edit)
        return self._agent

    def _is_hooked(self, pc: int) -> bool:
        return self._agent is not None and self._agent.has_program(pc)

    def _require_live(self) -> None:
        self.require_open()
        if self.exited is not None:
            raise TargetError(ErrorCode.ENOENT, "the guest has exited")

    def insert_breakpoint(self, pc: int, conditions: tuple = (), commands: tuple = (),
                          registers: dict | None = None) -> None:
        """A user breakpoint at a patch site of this Store, or at any other
        instruction it can honour exactly (codemem.displaced), idempotent.
        ``conditions`` (verified agent expressions): stop only when one is
        true, evaluated at the site; ``commands`` (agent printf, gdb's
        dprintf-style agent): run at the site instead of stopping.  A new
        insert at the same pc replaces both (gdb's ``condition N``); none
        makes it a plain breakpoint.  At the call landing (the image's
        entry point) or on the stack (where gdb puts the breakpoint that ends
        an inferior call) it is accepted as it is: the landing always stops.
        ``registers``: the dialect's values of synthesized registers at ``pc``
        (gdbstub.agent_x64.SiteRegisters)."""
        self._require_live()
        if pc is not None and pc == self.host_return_pc:
            if conditions or commands:
                raise TargetError(ErrorCode.EINVAL, f"{pc:#x} is where the invoked function returns to the host: "
                                                    f"conditions and commands are not evaluated there")
            self.breakpoints.add(pc)  # see _stop_at_host_return
            return
        if pc == self.call_landing or self._on_stack(pc):
            # gdb's dummy breakpoint of an inferior call (on the stack, see
            # gdbstub.inferior_calls): the call's landing stops there.
            self._stack_breakpoints.add(pc)
            return
        setup = self._frame_setup_at(pc)
        if setup is not None:
            # The function's first byte (or its `mov rbp, rsp`): no site runs
            # before its frame setup, so its ENTRY site carries the
            # breakpoint (conditions and commands included: they run there;
            # _process shows the stop at pc).
            entry_pc = setup[1]
            self._check_shared_entry_site(entry_pc, pc, conditions, commands)
            self._insert_at_site(pc, self._code_fact("site", entry_pc, self._site_for), conditions, commands,
                                 registers)
            self._start_aliases.setdefault(entry_pc, set()).add(pc)
            return
        # gdb inserts and removes the same few (its `next`'s at the return
        # address, every time): where is a question of the code alone.
        site, carried = self._code_fact("breakpoint site", pc, self._breakpoint_site)
        if carried:
            self._insert_displaced(pc, site, bool(conditions or commands))
            return
        if pc in self._start_aliases:
            self._check_shared_entry_site(pc, pc, conditions, commands)
        self._insert_at_site(pc, site, conditions, commands, registers)

    def _check_shared_entry_site(self, entry_pc: int, pc: int, conditions: tuple, commands: tuple) -> None:
        """Breakpoints in a function's frame setup and at its ENTRY site
        share the site: all may be plain, but one site runs one program, so
        none may have conditions or commands then."""
        sharing = (self._start_aliases.get(entry_pc, set()) | {entry_pc}) & self.breakpoints
        others = sorted(sharing - {pc})
        if others and (conditions or commands or self._is_hooked(entry_pc)):
            raise TargetError(ErrorCode.EBUSY, f"{pc:#x} shares the ENTRY site {entry_pc:#x} with the breakpoint "
                                               f"at {others[0]:#x} (one patch site carries breakpoints at a "
                                               f"function's frame setup and ENTRY site): a breakpoint with "
                                               f"conditions or commands can be only one of them")

    def _insert_at_site(self, pc: int, site: tuple[Any, int], conditions: tuple, commands: tuple,
                        registers: dict | None) -> None:
        """The user breakpoint ``pc`` on patch site ``site`` (its own, or
        for a function's first byte its ENTRY site)."""
        site_pc = site[1]
        if conditions or commands:
            if site_pc in self._carried:
                raise TargetError(ErrorCode.EBUSY, f"{site_pc:#x} carries breakpoints at instructions after it "
                                                   f"({', '.join(f'{x:#x}' for x in sorted(self._carried[site_pc]))}):"
                                                   f" its conditions could not be evaluated there")
            if pc in self.breakpoints and not self._is_hooked(site_pc):
                with self._patch_edit() as edit:
                    edit.disable_site(*site)
            try:
                self.agent.set_breakpoint_program(site[0], site_pc, tuple(conditions), tuple(commands), registers)
            except CodeMemoryError as e:
                raise TargetError(ErrorCode.EBUSY, str(e)) from None
            self.breakpoints.add(pc)
            return
        if pc in self.breakpoints:
            if self._is_hooked(site_pc):
                self.agent.set_breakpoint_program(site[0], site_pc, (), ())
                with self._patch_edit() as edit:
                    edit.enable_site(*site)
            return
        with self._patch_edit() as edit:
            edit.enable_prepared(self._one_site(site))
        self.breakpoints.add(pc)

    def _one_site(self, site: tuple[Any, int]) -> PreparedSites:
        """The patch site ``site`` (:meth:`_site_for`'s (StoreCode, pc))
        prepared for PatchEdit.enable_prepared / disable_prepared, the same
        edit as enable_site / disable_site without finding its index again:
        memoized with the code (a breakpoint a client inserts and removes at
        every stop)."""
        return self._code_fact("one site", site, _prepare_one_site)

    def _insert_displaced(self, pc: int, site: tuple[Any, int], programmed: bool) -> None:
        """A breakpoint at a non-site instruction, carried by ``site``."""
        if programmed:
            raise TargetError(ErrorCode.EINVAL, f"{pc:#x} is between sequence points, where conditions and "
                                                f"commands are not evaluated (gdb: set breakpoint "
                                                f"condition-evaluation host)")
        if self._is_hooked(site[1]):
            raise TargetError(ErrorCode.EBUSY, f"{pc:#x} is between sequence points and the one before it, "
                                               f"{site[1]:#x}, has a conditional breakpoint or commands")
        if pc in self.breakpoints:
            return
        with self._patch_edit() as edit:
            edit.enable_site(*site)
        self.breakpoints.add(pc)
        self._displaced[pc] = site
        self._carried.setdefault(site[1], set()).add(pc)

    def remove_breakpoint(self, pc: int) -> None:
        """Removes a user breakpoint (removing an absent one is not an error:
        clients remove what they believe they inserted)."""
        self.require_open()
        if pc == self.call_landing or self._on_stack(pc):
            self._stack_breakpoints.discard(pc)
            return
        if pc not in self.breakpoints:
            if pc != self.host_return_pc and self._frame_setup_at(pc) is None:
                self._breakpoint_site(pc)  # still name a bad address as such
            return
        if pc == self.host_return_pc:
            self.breakpoints.discard(pc)
            return
        site = self._displaced.pop(pc, None)
        if site is not None:
            carried = self._carried[site[1]]
            carried.discard(pc)
            if not carried:
                del self._carried[site[1]]
            with self._patch_edit() as edit:
                edit.disable_site(*site)
            self.breakpoints.discard(pc)
            return
        setup = self._frame_setup_at(pc)
        site = self._code_fact("site", pc if setup is None else setup[1], self._site_for)
        if self._is_hooked(site[1]):
            self.agent.set_breakpoint_program(site[0], site[1], (), ())
        else:
            with self._patch_edit() as edit:
                edit.disable_prepared(self._one_site(site))
        self.breakpoints.discard(pc)
        if setup is not None:
            aliases = self._start_aliases.get(setup[1], set())
            aliases.discard(pc)
            if not aliases:
                self._start_aliases.pop(setup[1], None)

    # ------------------------------------------------------- watchpoints

    def insert_watchpoint(self, kinds: int, address: int, length: int, place: WatchPlace) -> None:
        """A watchpoint of this Store (gdbstub.agent): ``kinds`` is a set of
        codemem.sitehooks.WATCH_WRITE / WATCH_READ, ``address`` and
        ``length`` the client's (reported back in its stop), ``place`` what
        they name in this Store (the session's dialect decides:
        gdbstub.dialect.Dialect.watch_place)."""
        self._require_live()
        try:
            self.agent.add_watch(kinds, address, length, place)
        except ValueError as e:
            raise TargetError(ErrorCode.EINVAL, str(e)) from None
        except CodeMemoryError as e:
            raise TargetError(ErrorCode.EBUSY, str(e)) from None

    def remove_watchpoint(self, kinds: int, address: int, length: int) -> None:
        """Removing one that is not set is not an error."""
        if self._agent is not None:
            self._agent.remove_watch(kinds, address, length)

    def remove_all_breakpoints(self) -> None:
        for pc in sorted(self.breakpoints):
            self.remove_breakpoint(pc)

    def displaced_breakpoints(self, carrier: int) -> list[int]:
        """The breakpoints at non-site instructions that the site at
        ``carrier`` carries (codemem.displaced), sorted."""
        return sorted(self._carried.get(carrier, ()))

    def hooked_sites(self) -> dict[int, tuple[ModuleWithCode, int]]:
        """pc -> (image, veneer address) of every site calling a veneer of its
        own (gdbstub.agent), for `monitor patches`."""
        return {} if self._agent is None else self._agent.hooked_sites()

    def describe_hooked_site(self, pc: int) -> list[str]:
        """What the veneer of the hooked site at ``pc`` runs, one line per check."""
        entry = self.store.registry.lookup(pc)
        if self._agent is None or entry is None:
            return []
        return self._agent.describe_site(entry.store_code, pc)

    def enabled_sites(self) -> list[tuple[ModuleWithCode, int]]:
        """(image, pc) of every enabled site, for `monitor patches`."""
        self.require_open()
        return [(entry, entry.store_code.base + off)
                for entry in self.store.registry.entries()
                for off in entry.store_code.enabled_site_offsets()]

    # -------------------------------------------------------- registers

    def read_registers(self) -> bytes:
        """The regfile bytes of the stopped guest (``REGFILE_SIZE``);
        TargetError as :meth:`require_stopped` when it is not stopped."""
        stopped = self._stopped
        if stopped is None or self.closed:  # (read at every stop reply: the checks' calls only when they fail)
            stopped = self.require_stopped()
        return bytes(ffi.buffer(stopped.regfile, arch_amd64.REGFILE_SIZE))

    def write_registers(self, new_regfile: bytes) -> None:
        """Writes a whole regfile back, refusing values the guest can never
        run with: rsp outside the stack part a resume may use, rbp off the
        stack, r15 not an instance context of this Store, rip not a site of
        this Store's code (nor the current non-site stop pc, nor the call
        landing); only the arithmetic rflags bits; mxcsr must keep every
        exception masked.  After a trap only rip may not change.

        Debuggers write a new state one register at a time (gdb's ``return``
        pops a frame by writing rip, rsp and rbp; its inferior calls write
        rsp, rbp and rip), so whether the registers *together* are a state
        the guest can continue from is checked when it resumes
        (:meth:`_settle_registers`)."""
        stopped = self.require_stopped()
        old = self.read_registers()
        if len(new_regfile) != len(old):
            raise TargetError(ErrorCode.EINVAL, "register file of the wrong size")
        old_gpr = struct.unpack_from("<16QQQ", old)
        new_gpr = struct.unpack_from("<16QQQ", new_regfile)
        old_rip, new_rip = old_gpr[16], new_gpr[16]
        if stopped.kind == native.EVENT_TRAP:
            if old_rip != new_rip:
                raise TargetError(ErrorCode.EPERM, "the guest stopped at a trap and cannot resume elsewhere")
            for index, name in ((7, "rsp"), (6, "rbp"), (15, "r15")):
                if old_gpr[index] != new_gpr[index]:
                    raise TargetError(ErrorCode.EPERM, f"{name} is managed by the runtime and cannot be written "
                                                       f"after a trap")
        if new_gpr[7] != old_gpr[7]:
            self._check_new_rsp(stopped, new_gpr[7])
        # rbp 0 ends the rbp chain where the outermost frame returns to the
        # host (cm_enter clears it): gdb's `return` out of that frame writes
        # it; _settle_registers checks the whole state before a resume.
        if new_gpr[6] != old_gpr[6] and not self._on_stack(new_gpr[6]) \
                and not (new_gpr[6] == 0 and self.host_return_pc is not None):
            raise TargetError(ErrorCode.EPERM, f"rbp {new_gpr[6]:#x} is not on the guest's stack")
        if new_gpr[15] != old_gpr[15] and not any(
                instance.vmctx_address == new_gpr[15] for instance in self.store.instances):
            raise TargetError(ErrorCode.EPERM, f"r15 {new_gpr[15]:#x} is not an instance context of this Store "
                                               f"(the runtime's register)")
        if old_rip != new_rip:
            # gdb has written the call's stack (its return address, on the
            # stack itself) and rsp before rip.
            in_call = self._on_stack(new_gpr[7]) and new_gpr[7] != stopped.origin.rsp \
                and self._on_stack(_read_u64(new_gpr[7]))
            entry_pc = self._function_pointer_target(new_rip, new_gpr[15]) if in_call else None
            if entry_pc is not None:
                # A call through a C function pointer (below): the call goes
                # to the function's entry, as a wasm call_indirect would.
                new_regfile = bytearray(new_regfile)
                struct.pack_into("<Q", new_regfile, arch_amd64.REGFILE_RIP_OFFSET, entry_pc)
                new_regfile = bytes(new_regfile)
                new_rip = entry_pc
            self._check_possible_rip(new_rip, stopped)
        if (old_gpr[17] ^ new_gpr[17]) & ~_RFLAGS_WRITABLE:
            raise TargetError(ErrorCode.EPERM, "only the arithmetic flags of rflags can be written")
        mxcsr = struct.unpack_from("<I", new_regfile, arch_amd64.REGFILE_MXCSR_OFFSET)[0]
        if mxcsr & 0x1F80 != 0x1F80:
            raise TargetError(ErrorCode.EPERM, "mxcsr must keep every floating-point exception masked")
        # A register that mirrors a frame slot where the guest will resume is
        # reloaded from that slot on resume: write the new value there too.
        # One holding memory 0's base or length is the runtime's.  (Only in
        # the same frame: a state that moves frames has no mirrors at its
        # pc, a return point or an entry site.)
        same_frame = new_gpr[6] == old_gpr[6] and new_gpr[7] == old_gpr[7]
        if not same_frame:
            slot_mirrors, context_mirrors = (), ()
        elif self._displaced_stop is not None and new_rip == old_rip == self._displaced_stop:
            # Between sequence points the registers are the truth (no slot
            # mirrors); those holding memory 0's base and length at the
            # carrier site still are the runtime's.
            entry = self.store.registry.lookup(old_rip)
            _, carrier = displaced.check_displaceable(entry.engine_code, entry.store_code.offset_of(old_rip))
            slot_mirrors = ()
            context_mirrors = self._register_mirrors(entry.store_code.base + carrier)[1]
        else:
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
        stopped.settled = False
        if self._current is not None:
            self._current.pc = new_rip

    def _on_stack(self, address: int) -> bool:
        stack = self.store.ctx.stack
        return stack.base + stack.guard <= address < stack.top

    def _resume_floor(self, stopped: _GuestStop) -> int:
        """The lowest rsp the guest may resume with after this stop: the
        trampoline's frame lies below the stop's resume gap
        (csrc/codemem_rt.h, CM_RESUME_GAP_BYTES)."""
        rsp = stopped.origin.rsp if stopped.origin is not None else stopped.regfile.gpr[7]
        return rsp - lib.CM_RESUME_GAP_BYTES + 16

    def _check_new_rsp(self, stopped: _GuestStop, rsp: int) -> None:
        if rsp & 7 or not self._on_stack(rsp) or rsp < self._resume_floor(stopped):
            raise TargetError(ErrorCode.EPERM, f"rsp {rsp:#x} is not a place the guest can resume from (8-byte "
                                               f"aligned, at most {lib.CM_RESUME_GAP_BYTES - 16} bytes below the "
                                               f"stop's rsp {self._resume_floor(stopped) + lib.CM_RESUME_GAP_BYTES - 16:#x})")

    def _function_pointer_target(self, value: int, vmctx: int) -> int | None:
        """The entry pc of the function a wasm32 C function pointer ``value``
        names, or None.  A C function pointer is an index into the module's
        indirect function table (table 0; clang's ``__indirect_function_table``,
        tool-conventions BasicCABI.md), not a code address, so gdb's ``print
        fp(3)`` writes that index into rip (after rsp and rbp, with the
        return address on the stack, infcall.c); it is taken as the function's
        entry, which is what a ``call_indirect`` of it runs."""
        instance = self._instance_at(vmctx) or self.instance
        if instance is None or not instance.tables or value >= instance.tables[0].definition[1]:
            return None
        funcref = _read_u64(instance.tables[0].definition[0] + 8 * value)
        target = _read_u64(funcref + abi.FUNCREF_CODE) if funcref else 0
        entry = self.store.registry.lookup(target) if target else None
        func = entry.function_at(target) if entry is not None else None
        if func is None or entry.store_code.base + func.native_start != target:
            return None  # null, or a host function
        return target

    def _check_possible_rip(self, rip: int, stopped: _GuestStop) -> None:
        """A pc the guest may resume at in some state: a site of this
        Store's code, the current stop's non-site pc, the call landing, or
        the host's return address of the outermost guest frame (gdb's
        ``return`` out of it)."""
        if rip in (self.call_landing, self._displaced_stop) or any(call.return_address == rip for call in self._calls):
            return
        host = self._host_return(stopped.origin)
        if host is not None and host[1][0] == rip:
            return
        entry = self.store.registry.lookup(rip)
        if entry is None:
            raise TargetError(ErrorCode.EPERM, f"rip {rip:#x} is not in this Store's code")
        if self._entry_site_of_start(rip) is not None:
            return  # a function's first byte (gdb's inferior calls): _route_resume runs its frame setup
        code = entry.store_code
        offset = code.offset_of(rip)
        point = code.frame_table.sequence_point_at_or_before(offset)
        if point is None or point.native_offset != offset or code.frame_table.site_index(offset) is None:
            raise TargetError(ErrorCode.EPERM, f"rip {rip:#x} is not a sequence point")

    def _restore_origin(self, stopped: _GuestStop) -> None:
        origin = stopped.origin
        regfile = stopped.regfile
        regfile.rip, regfile.gpr[7], regfile.gpr[6], regfile.gpr[15] = origin.rip, origin.rsp, origin.rbp, origin.r15
        if any(call.return_address == origin.rip for call in self._calls):
            # Stopped where a call returned, shown at gdb's dummy breakpoint
            # (on the stack): the guest itself waits at the landing.
            regfile.rip = self.call_landing
        stopped.settled = True

    def _settle_registers(self, stopped: _GuestStop) -> None:
        """Before a resume: the registers a debugger wrote must together be a
        state the guest can continue from (TargetError EPERM otherwise, and
        nothing changes).  One of:

        * the stop's own frame: rsp, rbp and r15 as they stopped, rip a
          sequence point of the same function (not into or out of its entry
          site), or the stop's own pc;
        * a frame above it (gdb's ``return`` pops frames): rip, rsp and rbp
          what the unwinder finds for a caller frame (codemem.frames,
          unwound_states), r15 as it stopped;
        * an inferior call (gdb's ``call``): rip a function's entry site
          with the call landing as its return address at [rsp]; the call is
          set up in the guest's convention here (gdbstub.inferior_calls);
        * the state before the innermost inferior call in progress (gdb
          restores it when the call is done)."""
        if stopped.settled or stopped.kind != native.EVENT_BREAKPOINT or stopped.regfile.rip == 0 \
                or isinstance(stopped, _HostReturnStop):
            return  # a trap unwinds, rip 0 is the kill path, the host return runs no guest code
        regfile = stopped.regfile
        state = RegisterState(regfile.rip, regfile.gpr[7], regfile.gpr[6], regfile.gpr[15])
        origin = stopped.origin
        if self._calls and state == self._calls[-1].saved and state != origin:
            call = self._calls.pop()
            self._end_call(call)
            log.debug("inferior call of %s done: back at %#x", call.function, state.rip)
            if call.displaced_pc is not None and state.rip == call.displaced_pc:
                self._displaced_stop = call.displaced_pc
        elif (state.rsp, state.rbp, state.r15) == (origin.rsp, origin.rbp, origin.r15):
            if state.rip not in (origin.rip, self._displaced_stop):
                if origin.rip == self.call_landing:
                    raise TargetError(ErrorCode.EPERM, "the guest is at an inferior call's landing: only the "
                                                       "registers before the call can be restored")
                self._check_new_rip(origin.rip, state.rip)
        elif not self._start_call(stopped, state, after=self._returned_call(origin)):
            if not self._is_unwound_state(origin, state):
                raise TargetError(ErrorCode.EPERM, f"the registers (rip {state.rip:#x}, rsp {state.rsp:#x}, rbp "
                                                   f"{state.rbp:#x}, r15 {state.r15:#x}) are neither this frame, a "
                                                   f"frame above it, an inferior call nor the state before one")
            self._store_aggregate_return(origin, state, regfile)
            host = self._host_return(origin)
            if host is not None and host[1] == (state.rip, state.rsp, state.rbp):
                self._return_to_host(host[0], regfile)
        if self._calls and any(call.return_address == regfile.rip for call in self._calls):
            # At gdb's dummy breakpoint (on the stack): the guest waits at
            # the landing, which stops again at once.
            regfile.rip = self.call_landing
        stopped.settled = True

    @staticmethod
    def _lower_stack_pointer(instance, area: int = 0) -> tuple[int, int, int]:
        """Moves the instance's C stack pointer below its red zone and
        ``area`` more bytes for an inferior call (gdbstub.inferior_calls,
        LINEAR_RED_ZONE): (its cell, the value to restore, the new value,
        where the area starts), or (0, 0, 0) when the module has none or
        its stack has no room."""
        names = instance.module.info.names.globals
        index = next((k for k, name in names.items() if name == "__stack_pointer"), None)
        if index is None or index >= len(instance.globals):
            return 0, 0, 0
        cell = instance.globals[index].cell_address
        value = _read_u64(cell) & 0xFFFFFFFF
        lowered = lowered_stack_pointer(value - area) if value > area else None
        if lowered is None:
            return 0, 0, 0
        _raw_write(cell, struct.pack("<Q", lowered))
        return cell, value, lowered

    @staticmethod
    def _linear_memory(instance, address: int, length: int) -> int:
        """The native address of ``instance``'s linear memory 0 at
        ``address`` (TargetError if ``length`` bytes there are out of it)."""
        if not instance.memories:
            raise TargetError(ErrorCode.EPERM, f"{instance.module.name} has no linear memory for C aggregates")
        memory = instance.memories[0]
        if address < 0 or address + length > memory.data_len:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"linear memory {address:#x}+{length:#x} is out of "
                                                      f"{instance.module.name}'s memory ({memory.data_len:#x} bytes)")
        return memory.base + address

    def _instance_at(self, vmctx: int):
        return next((i for i in self.store.instances if i.vmctx_address == vmctx), None)

    def _deliver_aggregate_result(self, call: InferiorCall, regfile) -> None:
        """At the landing of a call of a function returning a C aggregate
        through memory (wasm32), put it where System V returns it for gdb to
        read (gdbstub.c_abi): its eightbytes in rax, rdx / xmm0, xmm1, or,
        for class MEMORY, copied into gdb's buffer whose address is rax."""
        if call.result is None:
            return
        instance = self._instance_at(regfile.gpr[15])
        try:
            if instance is None:
                raise TargetError(ErrorCode.EPERM, "the call returned into no instance")
            data = _raw_read(self._linear_memory(instance, call.result_address, call.result.size), call.result.size)
        except TargetError as e:
            log.warning("the aggregate %s returned cannot be shown: %s", call.function, e)
            return
        if call.result.in_memory:
            if self._on_stack(call.gdb_result_address) and self._on_stack(call.gdb_result_address + len(data) - 1):
                _raw_write(call.gdb_result_address, data)
            else:
                log.warning("the aggregate %s returned is not copied: gdb's buffer at %#x is off the stack",
                            call.function, call.gdb_result_address)
            regfile.gpr[0] = call.gdb_result_address
            return
        _put_return_registers(regfile, return_registers(call.result, data))

    def present_aggregate_return(self) -> None:
        """At a stop on the return point of a call of a function that returns
        a C aggregate of 16 bytes or less (wasm32: through memory, at the
        address the callee leaves in rax, codemem/abi.py "Results"), put its
        bytes where System V returns it (rax, rdx / xmm0, xmm1, gdbstub.c_abi),
        where gdb's and lldb's ``finish`` read it.  Those registers are dead
        at a return point after a call without a wasm result (the caller
        reads no register there), so the guest runs on unchanged.  Once per
        stop; only direct calls (``call N``): after a ``call_indirect`` the
        callee is not known any more."""
        stop = self._current
        stopped = self._stopped
        if stop is None or stopped is None or self.function_abi is None or self._aggregate_return_shown is stop \
                or stopped.kind != native.EVENT_BREAKPOINT:
            return
        self._aggregate_return_shown = stop
        regfile = stopped.regfile
        found = self._code_fact("return point", regfile.rip, self._find_return_point)
        if found is None:
            return
        entry, point = found
        direct = self._code_fact("direct call's result", (regfile.rip, self.function_abi), self._direct_call_result)
        if direct is _NOT_DIRECT:
            instance = self._instance_at(regfile.gpr[15])
            callee = self._callee_at_return_point(entry, point, regfile, instance) if instance is not None else None
            abi = self.function_abi(*callee) if callee is not None else None
            result = abi.result if abi is not None else None
        else:
            result = direct  # known without the registers: most stops at a return point end here
            instance = self._instance_at(regfile.gpr[15]) if result is not None and not result.in_memory else None
        if result is None or result.in_memory or instance is None:
            return  # MEMORY class: rax already holds the address, as System V returns it
        try:
            data = _raw_read(self._linear_memory(instance, regfile.gpr[0] & 0xFFFFFFFF, result.size), result.size)
        except TargetError as e:
            log.debug("no aggregate shown at %#x: %s", regfile.rip, e)
            return
        _put_return_registers(regfile, return_registers(result, data))

    def _direct_call_result(self, key):
        """The C result (function_abi's ``result``) of the callee of the
        direct call (``call N``) whose return point is at ``key[0]``, or None
        (no aggregate, an import, no ABI known); _NOT_DIRECT when that call
        is a ``call_indirect``, whose callee only the registers tell."""
        pc, function_abi = key
        entry, point = self._find_return_point(pc)
        decoded = _call_immediates(entry.module.info.data, point.wasm_offset)
        if decoded is None or decoded[0] != 0x10:
            return _NOT_DIRECT if decoded is not None else None
        func = entry.store_code.frame_table.function_by_wasm_index(decoded[1][0])
        abi = function_abi(entry, func) if func is not None else None
        return abi.result if abi is not None else None

    def _find_return_point(self, pc: int):
        """(ModuleWithCode, SequencePoint) of the RETURN_POINT at exactly
        ``pc``, or None."""
        entry = self.store.registry.lookup(pc)
        if entry is None:
            return None
        code = entry.store_code
        point = code.frame_table.sequence_point_at_or_before(code.offset_of(pc))
        if point is None or point.kind is not SequencePointKind.RETURN_POINT or code.base + point.native_offset != pc:
            return None
        return entry, point

    def _callee_at_return_point(self, entry, point, regfile, instance):
        """(ModuleWithCode, FunctionInfo) of the function whose call returned
        to ``point`` (a RETURN_POINT of ``entry``'s code): a ``call N``
        names it; after a ``call_indirect`` the table index the caller used is
        still in its operand slot (above the arguments, which the callee's
        results do not reach when it has none, codemem/abi.py), and the table
        entry names it.  None when unknown (an import, a changed table)."""
        code = entry.store_code
        decoded = _call_immediates(entry.module.info.data, point.wasm_offset)
        if decoded is None:
            return None
        opcode, immediates = decoded
        if opcode == 0x10:
            func = code.frame_table.function_by_wasm_index(immediates[0])
            return (entry, func) if func is not None else None
        type_index, table_index = immediates
        types = entry.module.info.types
        caller = code.frame_table.function_at(point.native_offset)
        if type_index >= len(types) or types[type_index].results or caller is None \
                or table_index >= len(instance.tables):
            return None  # only functions without a wasm result return aggregates through memory
        slot = regfile.gpr[6] + caller.operand_slot_offset(len(point.stack_types) + len(types[type_index].params))
        if not self._on_stack(slot):
            return None
        index = _read_u64(slot) & 0xFFFFFFFF
        elements, size = instance.tables[table_index].definition[0], instance.tables[table_index].definition[1]
        funcref = _read_u64(elements + 8 * index) if index < size and elements else 0
        target = _read_u64(funcref + abi.FUNCREF_CODE) if funcref else 0
        callee_entry = self.store.registry.lookup(target) if target else None
        func = callee_entry.function_at(target) if callee_entry is not None else None
        return (callee_entry, func) if func is not None and callee_entry.store_code.base + func.native_start \
            == target else None

    @staticmethod
    def _end_call(call: InferiorCall) -> None:
        if call.stack_pointer_cell:
            _raw_write(call.stack_pointer_cell, struct.pack("<Q", call.stack_pointer))

    def _store_aggregate_return(self, origin: RegisterState, state: RegisterState, regfile) -> None:
        """gdb's ``return VALUE`` out of a function returning a C aggregate of
        16 bytes or less: gdb wrote it where System V returns it (rax, rdx /
        xmm0, xmm1) and popped the frames up to ``state``; wasm32's caller
        reads it from the memory whose address it passed as the hidden first
        argument (gdbstub.c_abi), so it is stored there."""
        if self.function_abi is None:
            return
        registry, stack = self.store.registry, self.store.ctx.stack
        frames = walker.walk(registry, stack, origin.rip, origin.rbp, origin.rsp)
        unwound = walker.unwound_states(registry, stack, origin.rip, origin.rbp, origin.rsp)
        shown = {call.slot: call.return_address for call in self._calls}
        for frame, (pc, rsp, rbp) in zip(frames, unwound):
            if (shown.get(rsp - 8, pc), rsp, rbp) == (state.rip, state.rsp, state.rbp):
                break
        else:
            return
        convention = self.function_abi(frame.entry, frame.func)
        if convention is None or convention.result is None or convention.result.in_memory:
            return  # MEMORY class: gdb stores nothing either ("the return value ... will be ignored")
        # The hidden first argument: entry 0 of the frame's argument array.
        array = self._argument_array(frame, regfile)
        instance = self._instance_at(regfile.gpr[15])
        if array is None or instance is None or self.region_at(array) is None:
            log.warning("return from %s: its result's memory is unknown, the caller reads it unchanged",
                        frame.func_name)
            return
        values = {"rax": regfile.gpr[0], "rdx": regfile.gpr[3],
                  "xmm0": struct.unpack_from("<Q", bytes(regfile.xmm[0]))[0],
                  "xmm1": struct.unpack_from("<Q", bytes(regfile.xmm[1]))[0]}
        data = returned_bytes(convention.result, values)
        try:
            _raw_write(self._linear_memory(instance, _read_u64(array) & 0xFFFFFFFF, len(data)), data)
        except TargetError as e:
            log.warning("return from %s: its result cannot be stored: %s", frame.func_name, e)

    @staticmethod
    def _argument_array(frame: walker.Frame, regfile) -> int | None:
        """The address of ``frame``'s argument (and result) array: rsi until
        the end of the prologue (an innermost frame before its first wasm
        instruction, frame setup included), saved at rbp-8 from then on
        (abi.py); None when it is unknown."""
        if frame.before_body:
            return regfile.gpr[4]
        if frame.rbp is None:
            return None
        return _read_u64(frame.rbp + abi.FRAME_ARGS_PTR)

    def _host_return(self, origin: RegisterState | None) -> tuple[walker.Frame, tuple[int, int, int]] | None:
        """The outermost guest frame of the stop at ``origin`` and the state
        (pc, rsp, rbp) in which it returns to the host, after the entry
        thunk's call (:attr:`host_return_pc`); None when it returns elsewhere (a
        debugger's inferior-call landing) or the Store has no entry thunk."""
        if origin is None or self.host_return_pc is None:
            return None
        registry, stack = self.store.registry, self.store.ctx.stack
        frames = walker.walk(registry, stack, origin.rip, origin.rbp, origin.rsp)
        unwound = walker.unwound_states(registry, stack, origin.rip, origin.rbp, origin.rsp)
        if not frames or len(unwound) != len(frames) or unwound[-1][0] != self.host_return_pc:
            return None
        return frames[-1], unwound[-1]

    def _return_to_host(self, frame: walker.Frame, regfile) -> None:
        """gdb's ``return`` (or ``return VALUE``) out of the outermost guest
        frame, settled before the resume: the invocation ends there with
        the value gdb wrote where System V returns it.  The host reads the
        results from the frame's argument array (abi.py, cm_enter), so
        result 0 is stored there; a function with more results keeps the
        others as they are.  The trampolines resume at rip + 5 (rip is a
        patch site, which is a no-op: csrc/codemem_rt.c cm_resume_regfile),
        so rip is set 5 bytes before the thunk's return address, whose
        ``nop; ret`` then returns to cm_enter with rsp as gdb popped it."""
        func_type = frame.entry.module.info.all_func_types[frame.func.wasm_index]
        if func_type.results:
            array = self._argument_array(frame, regfile)
            value = sysv_result_value(func_type.results[0], list(regfile.gpr),
                                      lambda k: struct.unpack_from("<Q", bytes(regfile.xmm[k]))[0])
            if array is None or not (self._on_stack(array) or any(
                    start <= array <= start + size - 8 for start, size in self.store.argument_regions())):
                log.warning("return from %s: its result array is unknown, the host reads it unchanged",
                            frame.func_name)
            else:
                _raw_write(array, struct.pack("<Q", value))
            if len(func_type.results) > 1:
                log.warning("return from %s: only its first result is set (System V returns one)",
                            frame.func_name)
        regfile.rip -= 5

    def _is_unwound_state(self, origin: RegisterState, state: RegisterState) -> bool:
        if state.r15 != origin.r15:
            return False
        unwound = walker.unwound_states(self.store.registry, self.store.ctx.stack, origin.rip, origin.rbp,
                                        origin.rsp)
        shown = {call.slot: call.return_address for call in self._calls}
        for k, (pc, rsp, rbp) in enumerate(unwound):
            if pc == self.call_landing:
                pc = shown.get(rsp - 8, pc)  # the debugger sees its own return address there
            if (pc, rsp, rbp) != (state.rip, state.rsp, state.rbp):
                continue
            # A return point of a guest frame, or the landing the outermost
            # frame returns to (gdb's `return` out of a called function).
            if pc in shown.values() or pc == self.call_landing or self.store.registry.lookup(pc) is not None:
                return True
            # The host's return address of the outermost frame (gdb's
            # `return` out of the invoked function): the invocation ends.
            if k == len(unwound) - 1 and pc == self.host_return_pc:
                return True
        return False

    def _returned_call(self, origin: RegisterState) -> InferiorCall | None:
        """The innermost inferior call when the guest stopped where it
        returned (at the landing, shown at gdb's dummy breakpoint)."""
        if self._calls and origin.rip == self._calls[-1].return_address:
            return self._calls[-1]
        return None

    def _start_call(self, stopped: _GuestStop, state: RegisterState, after: InferiorCall | None = None) -> bool:
        """Sets up the inferior call the registers describe; False when they
        describe none (gdbstub.inferior_calls).  ``after``: a call that has
        returned and that gdb follows with this one without resuming in
        between (``print f("abc")`` calls ``malloc`` for the string first,
        then ``f``): it is over, and this call returns to the state before
        it."""
        entry = self.store.registry.lookup(state.rip)
        if entry is None or not self._on_stack(state.rsp):
            return False
        return_address = _read_u64(state.rsp)
        if return_address != self.call_landing and return_address not in self._stack_breakpoints:
            return False
        code = entry.store_code
        func = code.frame_table.function_at(code.offset_of(state.rip))
        if func is None or code.base + func.native_start != state.rip:
            return False
        module = entry.module
        func_type = module.info.all_func_types[func.wasm_index]
        regfile = stopped.regfile
        stack = self.store.ctx.stack

        def stack_word(k: int) -> int:
            address = state.rsp + 8 + 8 * k
            if not self._on_stack(address):
                raise TargetError(ErrorCode.EPERM, f"argument {k} on the stack at {address:#x} is off the stack")
            return _read_u64(address)

        instances = [i for i in self.store.instances if i.entry.store_code is code]
        if not instances:
            raise TargetError(ErrorCode.EPERM, f"no instance of {module.name} runs the code at {state.rip:#x}")
        # gdb leaves r15 as it was in the selected frame: right when the call
        # is into the same instance; the function's own instance otherwise.
        vmctx = next((i.vmctx_address for i in instances if i.vmctx_address == state.r15),
                     instances[0].vmctx_address)
        instance = next((i for i in instances if i.vmctx_address == vmctx), instances[0])
        abi = self.function_abi(entry, func) if self.function_abi is not None else None
        area = linear_area_size(abi)

        def plan_at(linear_area: int):
            return plan_call(func_type, state.rsp, self._resume_floor(stopped), list(regfile.gpr),
                             lambda k: struct.unpack_from("<Q", bytes(regfile.xmm[k]))[0], stack_word,
                             abi=abi, linear_area=linear_area)

        try:
            plan = plan_at(0)  # everything checked before anything is written
        except CallSetupError as e:
            raise TargetError(ErrorCode.EPERM, str(e)) from None
        assert stack.contains(plan.rsp)
        if after is not None:
            assert self._calls[-1] is after
            # Its C stack pointer back before this call lowers it again; the
            # call itself stays until this one is set up (a refusal below
            # changes nothing).
            after_lowered = _read_u64(after.stack_pointer_cell) if after.stack_pointer_cell else 0
            self._end_call(after)
            before, displaced, saved_regfile = after.saved, after.displaced_pc, after.saved_regfile
        else:
            saved = bytearray(self.read_registers())
            struct.pack_into("<Q", saved, arch_amd64.REGFILE_RIP_OFFSET, stopped.origin.rip)
            for index, value in ((7, stopped.origin.rsp), (6, stopped.origin.rbp), (15, stopped.origin.r15)):
                struct.pack_into("<Q", saved, 8 * index, value)
            before, displaced, saved_regfile = stopped.origin, self._displaced_stop, bytes(saved)
        sp_cell, sp_value, lowered = self._lower_stack_pointer(instance, area)
        if area:
            # Aggregate copies and the result's place go from the lowered C
            # stack pointer up, below its old red zone (gdbstub.c_abi).
            try:
                if not sp_cell:
                    raise TargetError(ErrorCode.EPERM, f"{module.func_name(func.wasm_index)} passes C aggregates "
                                                       f"through linear memory, and {module.name} has no C stack "
                                                       f"pointer with {area + LINEAR_RED_ZONE} bytes below it")
                plan = plan_at(lowered)
                for address, data in plan.copies:
                    _raw_write(self._linear_memory(instance, address, len(data)), data)
            except TargetError:
                if sp_cell:
                    _raw_write(sp_cell, struct.pack("<Q", sp_value))
                if after is not None and after.stack_pointer_cell:
                    _raw_write(after.stack_pointer_cell, struct.pack("<Q", after_lowered))
                raise
        if after is not None:
            self._calls.pop()
            log.debug("inferior call of %s done: another follows", after.function)
        _raw_write(plan.rsp, pack_plan(plan, self.call_landing))
        self._calls.append(InferiorCall(before, displaced, module.func_name(func.wasm_index),
                                        return_address=return_address, slot=plan.rsp, saved_regfile=saved_regfile,
                                        stack_pointer_cell=sp_cell, stack_pointer=sp_value,
                                        result=abi.result if abi is not None else None,
                                        result_address=plan.result_address,
                                        gdb_result_address=plan.gdb_result_address))
        regfile.gpr[7] = plan.rsp
        regfile.gpr[4] = plan.array
        regfile.gpr[15] = vmctx
        log.debug("inferior call of %s: %d arguments at %#x", self._calls[-1].function, len(plan.values),
                  plan.array)
        return True

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
        # Up to the ENTRY site the prologue has not run: rsp is still rbp
        # (no frame allocated), the locals are not in their slots.  Moving
        # there would allocate a second frame below this one and copy
        # arguments from a stale rsi; moving away from there (or from the
        # frame setup before it) would run the body on an unallocated frame.
        entry_offset = table.entry_offset(new_func)
        if new_offset <= entry_offset or code.offset_of(old_rip) <= entry_offset:
            raise TargetError(ErrorCode.EPERM, "rip cannot move into or out of a function's frame setup or "
                                     "ENTRY site (before its prologue); step once first")

    # ----------------------------------------------------------- memory

    def memory_regions(self) -> list[MemoryRegion]:
        """Everything a client may see, sorted by start address (memoized until
        a memory grows or code or instances come and go)."""
        return self._regions_index()[0]

    def _regions_index(self) -> tuple[list[MemoryRegion], list[int] | None]:
        """(:meth:`memory_regions`, their start addresses for a bisect, or
        None when two regions overlap and the first of them must win)."""
        self.require_open()
        store = self.store
        key = (tuple([memory.data_len for memory in store.memories]), len(store.instances),
               store.registry.generation, tuple(store.argument_regions()))
        memo = self._regions_memo
        if memo is None or memo[0] != key:
            regions = self._build_memory_regions()
            disjoint = all(a.end <= b.start for a, b in zip(regions, regions[1:]))
            memo = self._regions_memo = (key, regions, [r.start for r in regions] if disjoint else None)
        return memo[1], memo[2]

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
            regions.append(MemoryRegion("code:entry-thunk", thunk, thunk + ENTRY_THUNK_PAGE_CODE_SIZE, _raw_read, None,
                                        executable=True))
        # The argument arrays of the host's calls into the guest: a function
        # entered from the host reads its arguments there (rsi) until its
        # prologue has copied them, and so does the translated DWARF of its
        # parameters at its first instruction (docs/calls.md).
        for k, (address, size) in enumerate(self.store.argument_regions()):
            regions.append(MemoryRegion(f"arguments{k}", address, address + size, _raw_read, _raw_write))
        stack = self.store.ctx.stack
        regions.append(MemoryRegion("stack", stack.base + stack.guard, stack.top, self._read_stack, self._write_stack))
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
            # wasm global writes there; a watchpoint on a global names its
            # cell (gdbstub.agent), and `monitor globals` lists them.
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
        window = self._stack_window
        if window is None:
            window = self._stack_window = self._direct_stack_window()
        if window[0] <= address and address + length <= window[1] and not self._calls and not self.closed:
            # The guest stack (a debugger reads the frame at every stop): no
            # other region covers it, and no inferior call's slot is shown
            # otherwise (_read_stack), so the bytes are what the regions give.
            return _raw_read(address, length)
        regions, starts = self._regions_index()
        if starts is not None:
            # One region holds it all (a debugger's reads almost always):
            # found by a bisect over the disjoint regions' starts.
            index = bisect.bisect_right(starts, address) - 1
            if index >= 0:
                region = regions[index]
                if address + length <= region.end:
                    return bytes(region.read(address, length))
        out = bytearray()
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

    def _direct_stack_window(self) -> tuple[int, int]:
        """[start, end): the part of the guest stack that no other region of
        :meth:`memory_regions` can ever cover, whatever grows or comes and
        goes (the stack never moves).  Every region is a mapping or an
        allocation of its own except memory 0's mirror at [0, its length),
        and that length never passes memory 0's maximum (nor LOW_FLOOR in a
        low Store): the window starts above it."""
        stack = self.store.ctx.stack
        start, end = stack.base + stack.guard, stack.top
        if self.instance.memories:
            mirror_end = self.instance.memories[0].max_pages * WASM_PAGE
            if self.store.low_heap is not None:
                mirror_end = min(mirror_end, LOW_FLOOR)
            start = max(start, mirror_end)
        return start, max(start, end)

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

    def _read_stack(self, address: int, length: int) -> bytes:
        """Stack bytes as the debugger left them: the return-address slot of
        an inferior call in progress shows gdb's own return address, not the
        landing the stub put there (gdbstub.inferior_calls)."""
        data = _raw_read(address, length)
        for call in self._calls:
            if address < call.slot + 8 and call.slot < address + length:
                shown = bytearray(data)
                word = struct.pack("<Q", call.return_address)
                for k in range(8):
                    if address <= call.slot + k < address + length:
                        shown[call.slot + k - address] = word[k]
                data = bytes(shown)
        return data

    def _write_stack(self, address: int, data: bytes) -> None:
        """Stack writes: only the live part of the stack, and never the saved
        rbp / return address words the runtime unwinds through."""
        stopped = self.require_stopped()
        end = address + len(data)
        # Below the stop's rsp lies its resume gap (free stack: gdb writes an
        # inferior call's return address and arguments there before it moves
        # rsp), then the trampoline's frame.
        if address < min(stopped.regfile.gpr[7], self._resume_floor(stopped)):
            raise TargetError(ErrorCode.EPERM, "writes below the guest's rsp and its resume gap are refused "
                                               "(the runtime's frames live there)")
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
