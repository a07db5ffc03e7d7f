"""The Stores a debugger may see: a registry of Store targets by pid.

Every Store is a process to the debugger, its pid the Store's id, with one
thread (its guest thread, tid 1).  A :class:`TargetHost` answers, for the
sessions of one server:

* which targets exist (``info os processes``, ``monitor stores``, lldb's
  ``qfProcessInfo``), each with its module, entry function and state;
* which one a request means (:meth:`TargetHost.target`, by pid);
* who debugs which: :meth:`TargetHost.attach` gives a target to one session
  and refuses it to any other while that one holds it (the second-client
  policy of docs/sessions.md: *each client debugs its own Stores*);
  :meth:`TargetHost.release` gives it back (detach, kill, disconnect, exit);
* optionally how to start a fresh one (``vRun``).

:class:`SingleStoreHost` is ``wasm-gdbstub serve``: one served Store, which
the first client is attached to on connect (``target remote`` as always), and,
when given a ``restart`` factory, ``vRun`` for ``target extended-remote`` +
``run``.  gdbstub.host.DebugHost is the many-Store host of embedders and
``wasm-gdbstub host``.

Thread safety: a host's state changes under its :attr:`TargetHost.lock`,
which is also the lock every session of its server is driven under
(gdbstub.server), so a session's view of the host never changes mid-request.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from .protocol.replies import ErrorCode
from .target import StoreTarget, TargetError


@dataclass(frozen=True)
class StoreInfo:
    """One line of the process list."""

    pid: int
    module: str
    entry: str
    state: str  # running, stopped, held or exited; "attached, ..." while a debugger holds it
    enabled_sites: int


class TargetHost:
    """Targets by pid and their owners (see the module docstring)."""

    #: vAttach, vRun and the process list are offered (gdb's extended-remote).
    extended = False

    def __init__(self, lock: threading.RLock | None = None):
        self.lock = lock or threading.RLock()
        self._owners: dict[int, object] = {}
        self._schedule_resume: Callable | None = None
        #: Set by the server: ``notify_server(target)`` on a guest thread
        #: that has news (gdbstub.server.StubServer.notify_from_guest).
        self.notify_server: Callable[[StoreTarget | None], None] | None = None
        #: Set by the server: ``output_server(target, fd, data)`` on a guest
        #: thread that wrote to its stdout or stderr.
        self.output_server: Callable[[StoreTarget, int, bytes], None] | None = None
        #: The TCP port the server listens on (lldb's platform mode hands it
        #: out for ``process attach``); set by the server.
        self.listening_port: int | None = None

    # -- wiring a server in
    @property
    def schedule_resume(self) -> Callable | None:
        return self._schedule_resume

    @schedule_resume.setter
    def schedule_resume(self, scheduler: Callable) -> None:
        """How every target (present and future) opens its resume gate
        (StoreTarget.schedule_resume; the server's loop-aware scheduler)."""
        self._schedule_resume = scheduler
        for target in self.targets():
            self._adopt(target)

    def _adopt(self, target: StoreTarget) -> None:
        if self._schedule_resume is not None:
            target.schedule_resume = self._schedule_resume
        target.output_listener = self.target_output

    def target_output(self, target: StoreTarget, fd: int, data: bytes) -> None:
        """A target's output listener: on its guest thread, after the guest
        wrote ``data`` to stdout (1) or stderr (2)."""
        forward = self.output_server
        if forward is not None:
            forward(target, fd, data)

    def target_news(self, target: StoreTarget) -> None:
        """A target's ``notify``: on its guest thread, when it stopped or ended."""
        notify = self.notify_server
        if notify is not None:
            notify(target)
        else:
            with self.lock:
                if self._owners.get(target.pid) is None:
                    self._take_events(target)

    def take_unowned_events(self) -> None:
        """Takes the events of every target no session debugs (under the
        lock): an ended Store's exit is recorded, and the host may forget it."""
        with self.lock:
            for target in self.targets():
                if self._owners.get(target.pid) is None:
                    self._take_events(target)

    def _take_events(self, target: StoreTarget) -> None:
        while target.take_event() is not None:
            pass

    # -- what exists
    def targets(self) -> list[StoreTarget]:
        """The live targets, by pid."""
        raise NotImplementedError

    def target(self, pid: int) -> StoreTarget | None:
        for target in self.targets():
            if target.pid == pid:
                return target
        return None

    def initial_targets(self) -> list[StoreTarget]:
        """The targets a new client is attached to when it connects."""
        return []

    def is_held(self, target: StoreTarget) -> bool:
        """True for a Store waiting before its first instruction for a debugger."""
        return False

    def describe(self, target: StoreTarget) -> StoreInfo:
        if target.exited is not None:
            state = "exited"
        elif self.is_held(target):
            state = "held"
        elif target.current_stop is not None:
            state = "stopped"
        else:
            state = "running"
        if target.pid in self._owners and target.exited is None:
            state = "attached, " + state
        enabled = sum(len(entry.store_code.enabled_site_offsets()) for entry in target.store.registry.entries())
        entry_name = getattr(target.func, "name", None) or "?"
        modules = ",".join(instance.module.name or "?" for instance in target.store.instances) or "?"
        return StoreInfo(target.pid, modules, entry_name, state, enabled)

    # -- who debugs which
    def owner_of(self, pid: int) -> object | None:
        return self._owners.get(pid)

    def attach(self, pid: int, owner: object) -> StoreTarget:
        """Gives target ``pid`` to ``owner`` (a session); TargetError naming
        the reason when it does not exist, has ended, or another session
        holds it."""
        with self.lock:
            target = self.target(pid)
            if target is None or target.exited is not None:
                raise TargetError(ErrorCode.ENOENT, f"no Store {pid} (pid {pid:#x}) is running in this host"
                                                    + ("; it has ended" if target is not None else ""))
            holder = self._owners.get(pid)
            if holder is not None and holder is not owner:
                raise TargetError(ErrorCode.EBUSY, f"Store {pid} is being debugged by another client")
            self._owners[pid] = owner
            self._attached(target)
            return target

    def release(self, target: StoreTarget, owner: object) -> None:
        """``owner`` no longer debugs ``target`` (it detached, killed it,
        disconnected, or the Store ended)."""
        with self.lock:
            if self._owners.get(target.pid) is owner:
                del self._owners[target.pid]
                self._released(target)

    def _attached(self, target: StoreTarget) -> None:
        """Hook: ``target`` now has an owner."""

    def _released(self, target: StoreTarget) -> None:
        """Hook: ``target`` has no owner any more."""

    # -- starting
    def run_fresh(self, owner: object, filename: str, args: list[str]) -> StoreTarget:
        """``vRun``: a fresh Store stopped before its first instruction, given
        to ``owner``.  TargetError when this host cannot start one."""
        raise TargetError(ErrorCode.EINVAL, "this host does not start Stores (no vRun)")

    # -- monitor commands of the host
    def monitor(self, command: str, args: list[str]) -> str | None:
        """Text for a host-level ``monitor`` command, None if it is not one."""
        return None

    monitor_help = ""


class SingleStoreHost(TargetHost):
    """``wasm-gdbstub serve``: one served Store (see the module docstring).

    ``restart()`` makes the next served target (a fresh Store of the same
    module, started and stopped at its entry); with it the host is
    extended (``target extended-remote`` + ``run``)."""

    def __init__(self, target: StoreTarget, *, restart: Callable[[], StoreTarget] | None = None,
                 lock: threading.RLock | None = None):
        super().__init__(lock)
        self.served = target
        self._restart = restart
        self.extended = restart is not None

    def targets(self) -> list[StoreTarget]:
        return [self.served]

    def initial_targets(self) -> list[StoreTarget]:
        return [self.served] if self.served.exited is None else []

    def run_fresh(self, owner: object, filename: str, args: list[str]) -> StoreTarget:
        if self._restart is None:
            return super().run_fresh(owner, filename, args)
        if args:
            raise TargetError(ErrorCode.EINVAL, "run takes no arguments here: the served function's "
                                                "arguments were given to `serve`")
        with self.lock:
            previous = self.served
            if previous.exited is None and self._owners.get(previous.pid) not in (None, owner):
                raise TargetError(ErrorCode.EBUSY, f"Store {previous.pid} is being debugged by another client")
            self.served = self._restart()
            self._adopt(self.served)
            return self.attach(self.served.pid, owner)
