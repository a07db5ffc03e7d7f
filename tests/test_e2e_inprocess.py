"""End-to-end with the stub inside the test process: what a client cannot see.

A ``serve`` subprocess cannot be inspected from outside, so here a
StoreTarget and a StubServer are wired as gdbstub/cli.py ``serve()`` wires
them, the asyncio server runs on a thread of this process, and real gdb 13 /
lldb-22 attach to it.  The test can then look at the Store's code itself:

* while gdb holds a breakpoint inserted (``set breakpoint always-inserted
  on``) the StoreCode really executes a patched ``call`` at the site, gdb is
  shown the disabled NOP, the EngineCode and another Store of the same module
  are untouched (DESIGN.md, "Code memory", "Sequence points and patch sites");
* after every session (detach, kill, interrupt, trap, a client that vanishes)
  the StoreCode bytes equal the EngineCode bytes again and no site is enabled.

gdb pauses mid-session on a ``shell`` command that waits for a file the test
creates after its checks (a barrier between the two processes).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

import codemem
from gdbstub import runner
from gdbstub.cli import attach_commands
from gdbstub.image_files import ImageFileServer
from gdbstub.images import DebugImageSet
from gdbstub.server import StubServer
from gdbstub.session import SessionConfig
from gdbstub.target import StoreTarget
from gdbstub.wasi import WasiContext
from stubproc import (INTERRUPT_BY, NOP5, ClientRun, demo_line, finish_client, gdb_command, guest_path, kill_pid,
                      run_gdb, run_lldb, start_client)

DEMO = Path(__file__).resolve().parents[1] / "gdbstub" / "data" / "demo.wasm"
DEMO_RESULT = 505
CALL_OPCODE = 0xE8  # an enabled site: e8 rel32 (call to the breakpoint veneer)


class _TraceCollector(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:200])


class InProcessStub:
    """A StoreTarget running ``invoke(*args)`` of a module, served by a
    StubServer (``once``) on a thread of this process.  Same duck type as
    stubproc.StubProcess for run_gdb / run_lldb (``gdb_argv``, ``lldb_argv``)."""

    def __init__(self, workdir: Path, wasm_path: Path, invoke: str, args: list[str] = ()):
        self.engine = codemem.Engine(debug=True)
        self.module = codemem.Module(self.engine, wasm_path.read_bytes(), name=wasm_path.stem)
        self.store = codemem.Store(self.engine)
        self.wasi = WasiContext(args=[str(wasm_path)])
        self.instance = runner.instantiate(self.store, self.module, wasi=self.wasi)
        func = self.instance.exports[invoke]
        values = runner.parse_invoke_args(func, list(args))
        self.images = DebugImageSet(workdir / "images", process_tag=f"inproc{os.getpid()}")
        config = SessionConfig(images=self.images, file_server=ImageFileServer(self.images))
        self.target = StoreTarget(self.store, self.instance, func, values,
                                  notify=lambda: self.server.notify_from_guest())
        self._listening = threading.Event()
        self.server = StubServer(self.target, host="127.0.0.1", port=0, once=True, config=config,
                                 on_listening=lambda host, port: self._listening.set())
        self.exited = None
        self.serve_error: BaseException | None = None
        self.trace = _TraceCollector()
        # The packet trace goes to this stub's collector only (shown when a
        # test fails), not to pytest's log capture.
        trace_logger = logging.getLogger("gdbstub.protocol.trace")
        self._trace_state = (trace_logger.level, trace_logger.propagate)
        trace_logger.setLevel(logging.DEBUG)
        trace_logger.propagate = False
        trace_logger.addHandler(self.trace)
        self.target.start(stop_at_entry=True)
        self._thread = threading.Thread(target=self._serve, name="inprocess-stub", daemon=True)
        self._thread.start()
        assert self._listening.wait(30), "the in-process stub did not start listening"

    def _serve(self) -> None:
        try:
            self.exited = asyncio.run(self.server.serve())
        except BaseException as e:  # reported by the test through serve_error
            self.serve_error = e

    # -- the client side ----------------------------------------------------

    def _lines(self) -> list[str]:
        libraries = self.images.libraries(self.store)
        for image in libraries:
            image.data  # lldb reads them from disk: made (as serve does) before the line is used
        return attach_commands(self.server.host, self.server.port, libraries, self.images.executable(self.store))

    def gdb_argv(self) -> list[str]:
        return shlex.split(self._lines()[0][len("gdb: "):])

    def lldb_argv(self) -> list[str]:
        return shlex.split(self._lines()[1][len("lldb: "):])

    def describe(self) -> str:
        return "stub packets (last):\n  " + "\n  ".join(self.trace.lines[-40:])

    # -- the end ------------------------------------------------------------

    def wait_served(self, timeout: float = 20) -> None:
        """Waits for the server to finish (client gone and guest ended)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stub still serves:\n" + self.describe()
        assert self.serve_error is None, repr(self.serve_error)
        assert self.target.join(10), "the guest thread did not end"

    def close(self) -> None:
        """Teardown: stops a server and guest a failed test left running."""
        if self._thread.is_alive() and self.server._loop is not None:
            def abort():
                self.target.kill()
                if self.server._done is not None:
                    self.server._done.set()
            try:
                self.server._loop.call_soon_threadsafe(abort)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(10)
        self.target.join(10)
        logger = logging.getLogger("gdbstub.protocol.trace")
        logger.removeHandler(self.trace)
        logger.setLevel(self._trace_state[0])
        logger.propagate = self._trace_state[1]
        self.images.remove_files()


@pytest.fixture
def inproc(tmp_path):
    started: list[InProcessStub] = []

    def start(wasm_path: Path = DEMO, invoke: str = "run", args=()) -> InProcessStub:
        stub = InProcessStub(tmp_path / f"inproc{len(started)}", wasm_path, invoke, list(args))
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.close()


# ---------------------------------------------------------------- checks

def code_differences(store) -> list[str]:
    """Where a StoreCode's bytes differ from its EngineCode's (empty: equal),
    plus any site still counted as enabled."""
    problems = []
    for entry in store.registry.entries():
        store_code, engine_code = entry.store_code, entry.engine_code
        executed = store_code.read_raw(store_code.base, engine_code.size)
        canonical = engine_code.read(0, engine_code.size)
        if executed != canonical:
            offsets = [i for i, (a, b) in enumerate(zip(executed, canonical)) if a != b]
            problems.append(f"{engine_code.name}: {len(offsets)} bytes differ, first at offsets "
                            + ", ".join(hex(o) for o in offsets[:8]))
        enabled = store_code.enabled_site_offsets()
        if enabled:
            problems.append(f"{engine_code.name}: sites still enabled at " + ", ".join(hex(o) for o in enabled[:8]))
    return problems


def assert_code_restored(stub: InProcessStub, run: ClientRun) -> None:
    problems = code_differences(stub.store)
    assert not problems, "StoreCode != EngineCode after the session:\n" + "\n".join(problems) + f"\n{run}"


def gdb_breakpoint_address(run: ClientRun, number: int, function_line: str) -> int:
    """Where gdb said it put breakpoint ``number`` (``Breakpoint N at 0x...:
    file examples/demo.c, line L.``, L the demo line containing
    ``function_line``): by name, gdb places it after the prologue."""
    line = demo_line(function_line)
    found = re.search(rf"^Breakpoint {number} at (0x[0-9a-f]+): file examples/demo\.c, line {line}\.$",
                      run.output, re.M)
    assert found, f"gdb did not report breakpoint {number} at line {line}:\n{run}"
    return int(found.group(1), 16)


def function_start(stub: InProcessStub, name: str) -> tuple[object, int]:
    """(StoreCode, absolute address) of the first byte of function ``name``."""
    for entry in stub.store.registry.entries():
        code = entry.store_code
        for func in code.frame_table.functions():
            if entry.module.func_name(func.wasm_index) == name:
                return code, code.base + func.native_start
    raise LookupError(name)


class Barrier:
    """gdb/lldb run ``shell_command``: it creates ``ready`` and waits (at most
    60 s) for ``go``, which the test creates when its checks are done."""

    def __init__(self, directory: Path, name: str):
        self.ready = directory / f"{name}.ready"
        self.go = directory / f"{name}.go"

    @property
    def shell_command(self) -> str:
        return (f"touch {self.ready}; i=0; while [ ! -e {self.go} ] && [ $i -lt 1200 ]; "
                f"do sleep 0.05; i=$((i+1)); done")

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the client ended before the barrier:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("the client never reached the barrier")
            time.sleep(0.05)

    def release(self) -> None:
        self.go.touch()


# ---------------------------------------------------------------- tests

def test_gdb_breakpoint_patches_only_this_stores_copy_and_detach_restores_it(inproc, tmp_path):
    stub = inproc()
    code, square = function_start(stub, "square")
    # Another Store of the same module: it must never see this Store's patches.
    other_store = codemem.Store(stub.engine)
    runner.instantiate(other_store, stub.module, wasi=WasiContext(args=["other"]))
    other_code = other_store.registry.entries()[0].store_code

    barrier = Barrier(tmp_path, "at-square")
    argv = gdb_command(stub, ["break square", "continue", "x/5xb $pc", f"shell {barrier.shell_command}",
                              "stepi", "finish", "detach"],
                       before_connect=("set breakpoint always-inserted on",))
    proc = start_client(argv)
    # gdb's output (where it put the breakpoint) is read when it ends, so the
    # code is captured at the barrier and checked against it afterwards.
    try:
        barrier.wait_ready(proc)
        stop = stub.target.current_stop
        stop_pc = None if stop is None else stop.pc
        inserted = set(stub.target.breakpoints)
        if stop_pc is not None:
            offset = code.offset_of(stop_pc)
            executed = code.read_raw(stop_pc, 5)
            for_debugger = code.read_for_debugger(stop_pc, 5)
            canonical = code.engine_code.read(offset, 5)
            other = other_code.read_raw(other_code.base + offset, 5)
        other_problems = code_differences(other_store)
    finally:
        barrier.release()
    run = finish_client(proc, argv)
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    site = gdb_breakpoint_address(run, 1, "return x * x;")
    assert square < site, f"break square at {site:#x}: not past square's entry {square:#x}"
    assert stop_pc == site, f"stopped at {stop}, gdb's breakpoint is at {site:#x}"
    assert inserted == {site}, [hex(a) for a in inserted]
    assert executed[0] == CALL_OPCODE, f"site at {site:#x} not patched: {executed.hex()}"
    assert for_debugger == NOP5
    assert canonical == NOP5
    assert other == NOP5
    assert not other_problems
    # What gdb was shown at the same moment: the disabled NOP.
    assert re.search(rf"^{site:#x} <square\+{site - square}>:\s+0x0f\s+0x1f\s+0x44\s+0x00\s+0x00$", run.output,
                     re.M), run
    assert re.search(r"\[Inferior 1 \(process \d+\) detached\]", run.output), run
    stub.wait_served()
    assert stub.exited is not None and stub.exited.results == [DEMO_RESULT], stub.exited
    assert_code_restored(stub, run)
    assert not code_differences(other_store)


def test_gdb_kill_restores_the_code(inproc):
    stub = inproc()
    run = run_gdb(stub, ["break fact", "continue", "continue", "continue", "stepi", "kill"])
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    assert re.search(r"\[Inferior 1 \(process \d+\) killed\]", run.output), run
    stub.wait_served()
    assert stub.exited is not None and stub.exited.results is None, stub.exited
    assert_code_restored(stub, run)


def test_gdb_interrupt_then_kill_restores_the_code(inproc, tmp_path):
    stub = inproc(guest_path(tmp_path), "spin")
    run = run_gdb(stub, [INTERRUPT_BY["interrupt-command"], "continue", "stepi", "kill"], timeout=30)
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    assert "Program received signal SIGINT" in run.output, run
    stub.wait_served()
    assert_code_restored(stub, run)


def test_gdb_trap_restores_the_code(inproc, tmp_path):
    stub = inproc(guest_path(tmp_path), "trap_div", ["7", "0"])
    run = run_gdb(stub, ["break divide", "continue", "continue", "continue"],
                  before_connect=("set breakpoint always-inserted on",))
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    assert "Program received signal SIGFPE" in run.output, run
    assert "Program terminated with signal SIGFPE" in run.output, run
    stub.wait_served()
    assert isinstance(stub.exited.error, codemem.Trap), stub.exited
    assert_code_restored(stub, run)


def test_gdb_exit_with_breakpoints_inserted_restores_the_code(inproc):
    """The guest returns while gdb still has breakpoints in (always-inserted):
    after the W reply the process is gone and gdb never removes them.
    ``break *run`` is at the pc the guest stopped at (run's entry), so gdb
    steps over it; the by-name ones are past the prologues and hit."""
    stub = inproc()
    run = run_gdb(stub, ["break sum_of_squares", "break run", "break *run", "continue", "continue", "continue"],
                  before_connect=("set breakpoint always-inserted on",))
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    hits = re.findall(r"^Breakpoint (\d+), (\w+) \(.*\) at examples/demo\.c:(\d+)$", run.output, re.M)
    assert hits == [("2", "run", str(demo_line("int squares = sum_of_squares(10);"))),
                    ("1", "sum_of_squares", str(demo_line("int total = 0;")))], run
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", run.output), run
    stub.wait_served()
    assert stub.exited is not None and stub.exited.results == [DEMO_RESULT], stub.exited
    assert_code_restored(stub, run)


def test_a_client_that_vanishes_mid_session_leaves_the_code_restored(inproc, tmp_path):
    stub = inproc()
    barrier = Barrier(tmp_path, "vanish")
    argv = gdb_command(stub, ["break square", "break fact", "continue", f"shell {barrier.shell_command}", "detach"],
                       before_connect=("set breakpoint always-inserted on",))
    proc = start_client(argv)
    try:
        barrier.wait_ready(proc)
        code, _ = function_start(stub, "square")
        # The first byte at each address the stub has a breakpoint inserted.
        patched = {address: code.read_raw(address, 1)[0] for address in stub.target.breakpoints}
        kill_pid(proc.pid)  # gdb dies with two breakpoints inserted
    finally:
        barrier.release()
    run = finish_client(proc, argv)
    # gdb printed where it put them before it reached the barrier.
    sites = {gdb_breakpoint_address(run, 1, "return x * x;"), gdb_breakpoint_address(run, 2, "if (n <= 1)")}
    assert patched == {site: CALL_OPCODE for site in sites}, (patched, [hex(s) for s in sites], str(run))
    stub.wait_served()
    assert stub.exited is not None and stub.exited.results == [DEMO_RESULT], stub.exited
    assert_code_restored(stub, run)


def test_lldb_session_restores_the_code(inproc):
    stub = inproc()
    run = run_lldb(stub, ["breakpoint set --name square", "breakpoint set --name fact", "process continue",
                          "thread step-inst", "thread step-out", "process continue", "process detach"])
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    assert re.search(r"^Process \d+ detached$", run.output, re.M), run
    stub.wait_served()
    assert stub.exited is not None and stub.exited.results == [DEMO_RESULT], stub.exited
    assert_code_restored(stub, run)


def test_lldb_interrupt_then_kill_restores_the_code(inproc, tmp_path):
    stub = inproc(guest_path(tmp_path), "spin")
    wait = ("script import time; _p = lldb.debugger.GetSelectedTarget().GetProcess(); "
            "_ = [time.sleep(0.05) for _i in range(200) if _p.GetState() != lldb.{state}]")
    run = run_lldb(stub, ["script lldb.debugger.SetAsync(True)", "process continue",
                          wait.format(state="eStateRunning") + "; time.sleep(0.5)", "process interrupt",
                          wait.format(state="eStateStopped"), "script lldb.debugger.SetAsync(False)",
                          "thread step-inst", "process kill"], timeout=30)
    assert not run.timed_out, f"{run}\n{stub.describe()}"
    assert "stop reason = signal SIGINT" in run.output, run
    stub.wait_served()
    assert_code_restored(stub, run)
