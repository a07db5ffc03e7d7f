"""End-to-end test kit: a ``wasm-gdbstub serve`` subprocess and batch runs of
real gdb 13 / lldb-22 against it.

:class:`StubProcess` starts ``python -m gdbstub serve [MODULE] [--invoke F]
[ARGS] --listen 127.0.0.1:0 --once --cache-dir DIR``, waits for the banner
(``listening on HOST:PORT`` then the ``gdb: ...`` and ``lldb: ...`` attach
lines, see gdbstub/cli.py ``attach_commands``), and parses them.  It is always
killed at teardown (the ``stub`` fixture), whatever the test did.

:func:`run_gdb` / :func:`run_lldb` run a client in batch mode with a list of
commands and return its combined output; the tests check that OUTPUT, not just
exit codes.  Each run has a wall-clock limit so a hung client fails the test
instead of hanging the suite.

Guests for traps and the interrupt test are wat text (tests/data/e2e_guests.wat)
assembled with ``wasmtime.wat2wasm``; the examples' committed builds are used
as they are.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_BUILD = ROOT / "examples" / "build"
DATA = Path(__file__).resolve().parent / "data"
GUESTS_WAT = DATA / "e2e_guests.wat"

GDB = shutil.which("gdb") or "gdb"
LLDB = shutil.which("lldb-22") or "lldb-22"

#: How long the stub may take to compile its module and print its banner.
BANNER_TIMEOUT = 30.0
#: Default wall-clock limit of one client run.
CLIENT_TIMEOUT = 60.0

#: The bytes of a disabled patch site (DESIGN.md, "Sequence points and patch sites").
NOP5 = bytes.fromhex("0f1f440000")

_LISTENING = re.compile(r"listening on (\S+):(\d+)\s*$")


class StubStartError(Exception):
    """The stub did not print its banner (it died, or took too long)."""


@dataclass
class StubProcess:
    """One ``serve --once`` subprocess.  Construct with :meth:`start`."""

    proc: subprocess.Popen
    stderr_path: Path
    cache_dir: Path
    host: str = ""
    port: int = 0
    gdb_line: str = ""
    lldb_line: str = ""
    banner: list[str] = field(default_factory=list)
    _stdout_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    _banner_done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, workdir: Path, module: Path | str | None = None, *, invoke: str | None = None,
              args: list[str] | tuple = (), log_packets: bool = True,
              stdin_text: str | None = None) -> "StubProcess":
        """Starts the stub on an ephemeral loopback port and waits for its
        banner; raises StubStartError (with its stderr) if it never comes.
        ``log_packets`` traces every packet to the stderr file, which failing
        tests print (see :meth:`describe`).  ``stdin_text`` is the stub's stdin
        (the guest's WASI stdin), then end of file; default: /dev/null."""
        workdir.mkdir(parents=True, exist_ok=True)
        cache_dir = workdir / "images"
        command = [sys.executable, "-m", "gdbstub", "serve"]
        if module is not None:
            command.append(str(module))
        if invoke is not None:
            command += ["--invoke", invoke]
        command += ["--listen", "127.0.0.1:0", "--once", "--cache-dir", str(cache_dir)]
        if log_packets:
            command.append("--log-packets")
        command += [str(a) for a in args]
        stderr_path = workdir / f"stub-{time.monotonic_ns()}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(command, cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    start_new_session=True)
        if stdin_text is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin_text)  # small: fits the pipe, so this does not block
            proc.stdin.close()
        stub = cls(proc=proc, stderr_path=stderr_path, cache_dir=cache_dir)
        stub._reader = threading.Thread(target=stub._read_stdout, daemon=True, name="stub-stdout")
        stub._reader.start()
        if not stub._banner_done.wait(BANNER_TIMEOUT) or not stub.port:
            stub.kill()
            raise StubStartError(f"no banner from {shlex.join(command)}\n{stub.describe()}")
        return stub

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self._stdout_lines.append(line)
            if not self._banner_done.is_set():
                self.banner.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.host, self.port = match.group(1), int(match.group(2))
                elif line.startswith("gdb: "):
                    self.gdb_line = line[len("gdb: "):]
                elif line.startswith("lldb: "):
                    self.lldb_line = line[len("lldb: "):]
                if self.port and self.gdb_line and self.lldb_line:
                    self._banner_done.set()
        self._banner_done.set()  # EOF: whatever we have

    # ------------------------------------------------------------ results

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def gdb_argv(self) -> list[str]:
        """The printed gdb attach line, split as a shell would."""
        return shlex.split(self.gdb_line)

    def lldb_argv(self) -> list[str]:
        """The printed lldb attach line, split as a shell would."""
        return shlex.split(self.lldb_line)

    def lldb_attach_commands(self) -> list[str]:
        """The ``-o`` commands of the printed lldb line, in order."""
        argv = self.lldb_argv()
        return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("-o", "--one-line")]

    def wait(self, timeout: float = 20.0) -> int:
        """Waits for the stub to exit; returns its status (kills it and
        raises TimeoutExpired if it does not end in time)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self._reader is not None:
            self._reader.join(5)
        return status

    @property
    def output_after_banner(self) -> list[str]:
        """stdout lines printed after the banner (the guest's results)."""
        return self._stdout_lines[len(self.banner):]

    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def packets(self) -> list[str]:
        """The ``--log-packets`` trace lines (``packet <- ...`` / ``packet -> ...``)."""
        return [line for line in self.stderr.splitlines() if line.startswith("packet ")]

    def describe(self, packets: int = 40, other: int = 20) -> str:
        """Exit status, stdout, the last packets (long payloads shortened) and
        the last other stderr lines, for assertion messages."""
        lines = self.stderr.splitlines()
        trace = [line[:200] for line in lines if line.startswith("packet ")][-packets:]
        rest = [line[:200] for line in lines if not line.startswith("packet ")][-other:]
        return (f"stub exit status: {self.proc.poll()}\nstub stdout:\n  " + "\n  ".join(self._stdout_lines)
                + "\nstub packets (last):\n  " + "\n  ".join(trace)
                + "\nstub stderr (last, without packets):\n  " + "\n  ".join(rest))

    def kill(self) -> None:
        """Ends the stub (our own child, by its pid) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("stub %d did not die", self.proc.pid)
        if self.proc.stdout is not None:
            if self._reader is not None:
                self._reader.join(5)
            self.proc.stdout.close()


@pytest.fixture
def stub(tmp_path):
    """A factory: ``stub(module=None, invoke=None, args=())`` starts a stub;
    every stub started is killed at teardown."""
    started: list[StubProcess] = []

    def start(module=None, *, invoke=None, args=(), log_packets=True, stdin_text=None) -> StubProcess:
        process = StubProcess.start(tmp_path / f"stub{len(started)}", module, invoke=invoke, args=args,
                                    log_packets=log_packets, stdin_text=stdin_text)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


# ---------------------------------------------------------------- guests

def guest_path(tmp_path: Path) -> Path:
    """tests/data/e2e_guests.wat assembled into tmp_path (with its name section,
    so functions have their $names)."""
    import wasmtime

    out = tmp_path / "e2e_guests.wasm"
    if not out.exists():
        out.write_bytes(wasmtime.wat2wasm(GUESTS_WAT.read_text()))
    return out


#: The source of the bundled demo (gdbstub/data/demo.wasm, examples/build/demo.*.wasm);
#: its DWARF names it ``examples/demo.c``, relative to the repository root.
DEMO_SOURCE = ROOT / "examples" / "demo.c"


def demo_line(text: str) -> int:
    """The number of the one line of examples/demo.c that contains ``text``
    (so tests name source lines by their contents, not by a number)."""
    found = [n for n, line in enumerate(DEMO_SOURCE.read_text().splitlines(), 1) if text in line]
    assert len(found) == 1, f"{text!r} is on lines {found} of {DEMO_SOURCE}"
    return found[0]


def example(name: str) -> Path:
    """A committed example build, e.g. ``example("loops.O0")``."""
    return EXAMPLES_BUILD / f"{name}.wasm"


# ---------------------------------------------------------------- clients

@dataclass
class ClientRun:
    """What one batch client run printed."""

    argv: list[str]
    returncode: int | None
    output: str  # stdout and stderr, interleaved as the client wrote them
    timed_out: bool = False

    def __str__(self) -> str:
        status = "TIMED OUT" if self.timed_out else f"exit {self.returncode}"
        return f"$ {shlex.join(self.argv)}\n[{status}]\n{self.output}"


def start_client(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """Starts a client in its own session (so a stray ^C or a hang cannot touch
    pytest)."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True, env=env, cwd=ROOT)


def finish_client(proc: subprocess.Popen, argv: list[str], timeout: float = 60) -> ClientRun:
    """Waits for a client; kills exactly that process when it overruns."""
    try:
        output, _ = proc.communicate(timeout=timeout)
        return ClientRun(argv, proc.returncode, output)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        return ClientRun(argv, None, output, timed_out=True)


def _run_client(argv: list[str], timeout: float, env: dict | None = None) -> ClientRun:
    return finish_client(start_client(argv, env), argv, timeout)


def sections(run: ClientRun) -> dict[str, str]:
    """A client's output cut at marker lines ``==name==``: {name: text after
    it}; what precedes the first marker is ``_start``."""
    parts = re.split(r"^==(\w+)==$", run.output, flags=re.M)
    found = {"_start": parts[0]}
    for i in range(1, len(parts) - 1, 2):
        found[parts[i]] = parts[i + 1]
    return found


def section(run: ClientRun, name: str) -> str:
    found = sections(run)
    assert name in found, f"marker {name} missing from the client's output:\n{run}"
    return found[name]


def gdb_command(stub_process: StubProcess, commands: list[str], *, before_connect: tuple = ()) -> list[str]:
    """``gdb -nx -batch`` with ``before_connect`` commands, the printed attach
    line's ``target remote``, then ``commands``, each one ``-ex``."""
    attach = stub_process.gdb_argv()
    assert attach[0] == "gdb", stub_process.gdb_line
    argv = [GDB, "-nx", "-batch", "-ex", "set pagination off", "-ex", "set confirm off"]
    for command in before_connect:
        argv += ["-ex", command]
    argv += attach[1:]
    for command in commands:
        argv += ["-ex", command]
    return argv


def run_gdb(stub_process: StubProcess, commands: list[str], *, before_connect: tuple = (),
            timeout: float = CLIENT_TIMEOUT) -> ClientRun:
    return _run_client(gdb_command(stub_process, commands, before_connect=before_connect), timeout)


def lldb_command(stub_process: StubProcess, commands: list[str], *, before_connect: tuple = ()) -> list[str]:
    """``lldb-22 --batch`` with ``before_connect`` commands, the printed attach
    line's commands (target create ... gdb-remote ...), then ``commands``."""
    attach = stub_process.lldb_argv()
    assert attach[0] == "lldb-22", stub_process.lldb_line
    argv = [LLDB, "--no-lldbinit", "--batch"]
    for command in before_connect:
        argv += ["-o", command]
    argv += attach[1:]
    for command in commands:
        argv += ["-o", command]
    return argv


def run_lldb(stub_process: StubProcess, commands: list[str], *, before_connect: tuple = (),
             timeout: float = CLIENT_TIMEOUT) -> ClientRun:
    # LLDB_USE_NATIVE_PDB_READER etc. are irrelevant; keep lldb from reading
    # the user's ~/.lldbinit (--no-lldbinit) and from colouring output.
    env = dict(os.environ, TERM="dumb")
    return _run_client(lldb_command(stub_process, commands, before_connect=before_connect), timeout, env)


# gdb's batch mode runs `continue` synchronously; the interrupt comes from a
# daemon thread in gdb's Python, one second later: either the `interrupt`
# command posted to gdb's event loop, or a real SIGINT to gdb itself (what
# Ctrl-C in a terminal does).  Daemon, so it never keeps gdb from exiting.
INTERRUPT_BY = {
    "interrupt-command": "python import threading, time; threading.Thread(daemon=True, target=lambda: "
                         "(time.sleep(1.0), gdb.post_event(lambda: gdb.execute('interrupt')))).start()",
    "ctrl-c": "python import os, signal, threading, time; threading.Thread(daemon=True, target=lambda: "
              "(time.sleep(1.0), os.kill(os.getpid(), signal.SIGINT))).start()",
}


# ---------------------------------------------------------------- parsing

def monitor_sites(frame_table_text: str) -> dict[int, str]:
    """Sequence points that are patch sites, from ``monitor frame-table`` output:
    {address: kind}."""
    sites: dict[int, str] = {}
    for match in re.finditer(r"^\s+(0x[0-9a-f]+) wasm@0x[0-9a-f]+ (\w+) depth=\d+ site\s*$",
                             frame_table_text, re.M):
        sites[int(match.group(1), 16)] = match.group(2)
    return sites


def monitor_function_ranges(frame_table_text: str) -> dict[str, tuple[int, int]]:
    """{function name: (start, end)} from ``monitor frame-table`` output."""
    ranges = {}
    for match in re.finditer(r"^(\S+) \(wasm function \d+\): (0x[0-9a-f]+)-(0x[0-9a-f]+)", frame_table_text, re.M):
        ranges[match.group(1)] = (int(match.group(2), 16), int(match.group(3), 16))
    return ranges


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signals one process we started, by its id."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
