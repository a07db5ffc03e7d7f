"""DebugHost: many Stores of one debug Engine, served to debuggers while they run.

The embedding API::

    import codemem, gdbstub

    engine = codemem.Engine(debug=True)
    module = codemem.Module.from_file(engine, "handler.wasm")
    host = gdbstub.DebugHost(engine, listen="127.0.0.1:1234")
    host.start()                                   # serves on a thread of its own
    ...
    store = codemem.Store(engine)                  # per request, tenant, plugin
    instance = codemem.Instance(store, module, imports)
    result = host.run(instance.exports["handle"], 42)   # on this thread; debuggable
    store.close()
    ...
    host.close()

Every :meth:`DebugHost.run` makes its Store a process debuggers can see (pid =
the Store's id) for as long as the call runs: ``target extended-remote`` +
``info os processes`` lists it, ``attach PID`` stops it at its next sequence
point, ``detach`` lets it run on, ``kill`` ends the call (``run`` raises the
resulting Trap), and when the call returns an attached debugger is told the
process exited.  Registration is automatic: any Store of the host's Engine
can be run through the host, on any thread; guest code of different Stores
runs in parallel (the GIL is released while guest code runs: cffi drops it
for the call into cm_enter), and a Store stopped by a debugger blocks only
the thread that runs it.

``hold_new_stores`` (``monitor hold-new-stores on``): every run that starts
waits before its first instruction, listed as *held*, until a debugger
attaches to it (then it is stopped there) or it is released (``monitor
release PID|all``, or turning holding off).  That is how to debug the next
request: hold, wait for it to show up in ``info os processes``, attach.

Stores of other clients: each client debugs its own Stores; attaching one that
another client holds is refused with a message (docs/sessions.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import codemem

from .image_files import ImageFileServer
from .images import DebugImageSet
from .listen import parse_listen
from .protocol.replies import ErrorCode
from .server import StubServer
from .session import SessionConfig
from .target import Exited, StoreTarget, TargetError
from .targets import TargetHost

log = logging.getLogger(__name__)

HOST_MONITOR_HELP = """\
  hold-new-stores on|off   hold every new Store before its first instruction until attached or released
  release PID|all          let held Stores run
"""


class DebugHost(TargetHost):
    """Many Stores of ``engine`` served to gdb and lldb (see the module docstring).

    ``dialect``: "native" (x86-64, gdb and lldb ``gdb-remote``) or "wasm"
    (lldb ``--plugin wasm``).  ``cache_dir``: where native debug images are
    written (default: a per-process directory under the user's cache).
    ``exit_status_of(exception)``: the exit status a debugger is shown for a
    run that ended with a host exception (a WASI ``proc_exit``, say).
    ``fresh_run()``: a function of a fresh Store and its arguments, which gdb's
    ``run`` (``vRun``) starts on a thread of its own, stopped before its
    first instruction; without it ``run`` is refused with a message.
    ``allow_remote``: allow a non-loopback ``listen`` address.  ``image_transfer``: how
    clients get the debug images (gdbstub.session.SessionConfig: "auto", "vfile", "local")."""

    extended = True
    monitor_help = HOST_MONITOR_HELP

    def __init__(self, engine: codemem.Engine, *, listen: str = "127.0.0.1:1234", dialect: str = "native",
                 cache_dir: os.PathLike | str | None = None,
                 exit_status_of: Callable[[BaseException], int] | None = None,
                 fresh_run: Callable[[], tuple[codemem.Func, list]] | None = None, allow_remote: bool = False,
                 image_transfer: str = "auto"):
        super().__init__()
        if not engine.debug:
            raise ValueError("DebugHost needs an Engine with debug=True (each Store then runs its own "
                             "copy of the code, where breakpoints go)")
        self.engine = engine
        self.listen_host, self.listen_port = parse_listen(listen, allow_remote=allow_remote)
        self._exit_status_of = exit_status_of
        self._fresh_run = fresh_run
        self._targets: dict[int, StoreTarget] = {}
        self._held: set[int] = set()
        self.hold_new_stores = False
        #: Runs that returned (whatever their outcome), and those of them
        #: that ended in a trap (the debugger's kill included).
        self.completed_runs = 0
        self.trapped_runs = 0
        self._counter_lock = threading.Lock()
        if dialect == "wasm":
            from .wasm_dialect import WasmDialect
            self.images = None
            config = SessionConfig(dialect_factory=WasmDialect)
        elif dialect == "native":
            if cache_dir is None:
                base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
                cache_dir = Path(base) / "wasm-gdbstub"  # images go to DIR/debug-images (gdbstub.images)
            self.images = DebugImageSet(cache_dir, process_tag=f"pid{os.getpid()}-host")
            config = SessionConfig(images=self.images, file_server=ImageFileServer(self.images),
                                   image_transfer=image_transfer)
        else:
            raise ValueError(f"dialect must be 'native' or 'wasm', not {dialect!r}")
        self.server = StubServer(self, host=self.listen_host, port=self.listen_port, config=config)
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._serve_error: BaseException | None = None

    # ------------------------------------------------------------ serving

    def start(self, timeout: float = 30.0) -> tuple[str, int]:
        """Starts serving on a daemon thread; returns the bound (host, port)."""
        if self._thread is not None:
            raise RuntimeError("the host is already serving")
        self._thread = threading.Thread(target=self._serve_thread, name="gdbstub-host", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            raise RuntimeError("the debug host did not start listening in time")
        if self._serve_error is not None:
            raise self._serve_error
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        return self.server.host, self.server.port

    def _serve_thread(self) -> None:
        def listening(host: str, port: int) -> None:
            self._listening.set()

        self.server.on_listening = listening
        try:
            asyncio.run(self.server.serve())
        except OSError as e:  # the address is taken, say: start() raises it
            self._serve_error = e
            self._listening.set()
        except Exception:  # the outermost guard of the serving thread: log it
            log.exception("the debug host's server failed")
            self._listening.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stops serving: clients are disconnected (their Stores detached and
        running on); runs in progress continue."""
        self.server.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.images is not None:
            self.images.remove_files()

    # ------------------------------------------------------------ running Stores

    def run(self, func: codemem.Func, *args: Any) -> Any:
        """Calls ``func(*args)`` on this thread with its Store served to
        debuggers for the duration of the call; returns what ``func(*args)``
        returns, raises what it raises (a Trap, a host function's exception)."""
        exited = self.run_exited(func, list(args))
        if exited.error is not None:
            raise exited.error
        results = exited.results or []
        if not results:
            return None
        return results[0] if len(results) == 1 else tuple(results)

    def run_exited(self, func: codemem.Func, args: list, *, stop_at_entry: bool | None = None) -> Exited:
        """:meth:`run`, returning how the run ended (never raises for the guest)."""
        instance = func.instance
        if instance is None:
            raise ValueError("DebugHost.run needs a wasm function of an instance, not a host function")
        if instance.store.engine is not self.engine:
            raise ValueError("the function's Store belongs to another Engine than this host's")
        return self._execute(*self._new_target(func, args, stop_at_entry))

    def _execute(self, target: StoreTarget, stop_at_entry: bool) -> Exited:
        """Runs ``target`` on this thread to its end."""
        try:
            exited = target.run_here(stop_at_entry=stop_at_entry)
        finally:
            self._run_ended(target)
        with self._counter_lock:
            self.completed_runs += 1
            if isinstance(exited.error, codemem.Trap):
                self.trapped_runs += 1
        return exited

    def _new_target(self, func: codemem.Func, args: list, stop_at_entry: bool | None) -> tuple[StoreTarget, bool]:
        """A registered target for one run, and whether it stops at its entry."""
        store = func.instance.store
        holder: list[StoreTarget] = []
        target = StoreTarget(store, func.instance, func, args, notify=lambda: self.target_news(holder[0]),
                             exit_status_of=self._exit_status_of)
        holder.append(target)
        with self.lock:
            if target.pid in self._targets:
                raise ValueError(f"Store {target.pid} is already running a function under this host")
            hold = self.hold_new_stores if stop_at_entry is None else stop_at_entry
            target.debugging = hold  # nobody debugs it: no stop unless it is held
            if hold:
                self._held.add(target.pid)
            self._targets[target.pid] = target
            self._adopt(target)
        return target, hold

    def _run_ended(self, target: StoreTarget) -> None:
        """The guest returned: take its exit if nobody debugs it, forget it,
        and refuse any later access to the Store (which its owner may now
        close) under the lock every session works under."""
        with self.lock:
            if self.owner_of(target.pid) is None:
                self._take_events(target)
            self._held.discard(target.pid)
            self._targets.pop(target.pid, None)
            target.mark_closed()
        target.store.debug_handler = None

    # ------------------------------------------------------------ TargetHost

    def targets(self) -> list[StoreTarget]:
        with self.lock:
            return list(self._targets.values())

    def target(self, pid: int) -> StoreTarget | None:
        with self.lock:
            return self._targets.get(pid)

    def target_news(self, target: StoreTarget) -> None:
        """A target's ``notify`` (its guest thread).  Only a debugged Store's
        news goes to the server; an undebugged run's exit is taken by the
        thread that ran it (:meth:`_run_ended`) and a held Store's entry stop
        by whoever attaches or releases it, so a run that nobody debugs
        wakes no other thread."""
        if self.owner_of(target.pid) is not None:
            super().target_news(target)

    def is_held(self, target: StoreTarget) -> bool:
        return target.pid in self._held

    def _attached(self, target: StoreTarget) -> None:
        self._held.discard(target.pid)
        target.debugging = True

    def live_count(self) -> int:
        with self.lock:
            return len(self._targets)

    def held_pids(self) -> list[int]:
        with self.lock:
            return sorted(self._held)

    def release_held(self, pid: int | None = None) -> list[int]:
        """Lets held Stores run (``pid`` None: all); returns their pids."""
        with self.lock:
            pids = [p for p in sorted(self._held) if pid is None or p == pid]
            for p in pids:
                self._held.discard(p)
                target = self._targets.get(p)
                if target is not None and self.owner_of(p) is None:
                    self._take_events(target)
                    target.detach()
            return pids

    def kill(self, pid: int) -> bool:
        """Ends Store ``pid``'s run (its :meth:`run` raises the "killed" Trap)
        whether or not a debugger holds it; False if no such run is live."""
        with self.lock:
            target = self._targets.get(pid)
            if target is None or target.exited is not None:
                return False
            target.kill()
            return True

    def kill_all(self) -> int:
        """:meth:`kill` for every live run; returns how many."""
        with self.lock:
            return sum(self.kill(pid) for pid in list(self._targets))

    def run_fresh(self, owner: object, filename: str, args: list[str]) -> StoreTarget:
        """vRun: ``fresh_run()`` on a thread of its own, held at its entry and
        given to ``owner``; its Store is closed when the run ends."""
        if self._fresh_run is None:
            raise TargetError(ErrorCode.EINVAL, "this host has no program of its own to run; "
                                                "attach to a running Store (`info os processes`)")
        if args:
            raise TargetError(ErrorCode.EINVAL, "run takes no arguments here: the function's arguments "
                                                "were given to the host")
        func, values = self._fresh_run()
        with self.lock:
            target, _ = self._new_target(func, values, stop_at_entry=True)
            self.attach(target.pid, owner)

        def run_and_close() -> None:
            try:
                self._execute(target, True)
            finally:
                func.instance.store.close()

        threading.Thread(target=run_and_close, name=f"vrun-store{target.pid}", daemon=True).start()
        return target

    def monitor(self, command: str, args: list[str]) -> str | None:
        if command == "hold-new-stores":
            if args and args[0] in ("on", "off"):
                self.hold_new_stores = args[0] == "on"
                released = [] if self.hold_new_stores else self.release_held()
                text = f"hold-new-stores is {args[0]}"
                if released:
                    text += f"; released {len(released)} held Store(s): {', '.join(map(str, released))}"
                return text + "\n"
            state = "on" if self.hold_new_stores else "off"
            return f"hold-new-stores is {state} (monitor hold-new-stores on|off)\n"
        if command == "release":
            if not args:
                return "usage: monitor release PID|all\n"
            if args[0] == "all":
                pid = None
            else:
                try:
                    pid = int(args[0], 0)
                except ValueError:
                    return f"release: {args[0]!r} is not a Store id\n"
            released = self.release_held(pid)
            if not released:
                return "no such held Store\n" if pid is not None else "no Store is held\n"
            return f"released {', '.join(map(str, released))}\n"
        return None
