"""Native twins: the same C program built with gcc -g and run under
gdbserver, so a test can run the same gdb commands against the stub and
against native code and compare what gdb prints (issue 11's bar: at -O0 the
values match the native twin exactly, addresses aside).

A gdb run is one batch session; each command is preceded by an ``echo`` of a
marker line ``==kN==`` so :func:`command_outputs` can cut the output per
command. :func:`normalize` removes what legitimately differs between the two
targets: addresses, breakpoint numbers' addresses, the outermost frames (the
stub's ``cm_enter``, the twin's ``main``), gdbserver's and the stub's own
chatter.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stubproc import GDB, ROOT, ClientRun, StubProcess, _run_client, gdb_command, sections

TWINS = Path(__file__).resolve().parent / "data" / "twins"
GDBSERVER = shutil.which("gdbserver") or "gdbserver"
GCC = shutil.which("gcc") or "gcc"


def build_twin(name: str, level: str, out_dir: Path) -> Path:
    """tests/data/twins/NAME_twin.c compiled with ``gcc -g -LEVEL`` (no PIE, so
    its code addresses are fixed, like the stub's)."""
    out = out_dir / f"{name}_twin.{level}"
    if not out.exists():
        subprocess.run([GCC, "-g", f"-{level}", "-fno-inline-functions-called-once", "-no-pie",
                        str(TWINS / f"{name}_twin.c"), "-o", str(out)], check=True, cwd=ROOT,
                       capture_output=True, text=True)
    return out


@dataclass
class Gdbserver:
    proc: subprocess.Popen
    port: int

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        """The twin's stdout and gdbserver's messages (after it ended)."""
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
        return out


def start_gdbserver(program: Path, args: tuple = ()) -> Gdbserver:
    proc = subprocess.Popen([GDBSERVER, "--once", "127.0.0.1:0", str(program), *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"Listening on port (\d+)", line)
        if match:
            return Gdbserver(proc, int(match.group(1)))
    proc.kill()
    raise RuntimeError(f"gdbserver did not start {program}")


def marked(commands: list[str]) -> list[str]:
    """``commands`` each preceded by an echo of marker ``==kN==``."""
    out = []
    for k, command in enumerate(commands):
        out += [f"echo ==k{k}==\\n", command]
    return out


def run_gdb_on_stub(stub: StubProcess, commands: list[str], timeout: float = 90) -> ClientRun:
    return _run_client(gdb_command(stub, marked(commands)), timeout)


def run_gdb_on_new_stub(workdir: Path, module: Path, commands: list[str], **start) -> tuple[ClientRun, StubProcess]:
    """``commands`` in gdb against a stub started for them
    (``StubProcess.start(workdir, module, **start)``), which is waited for
    (the guest ends) and then killed: (gdb's run, the stub, for its output)."""
    stub = StubProcess.start(workdir, module, **start)
    try:
        run = run_gdb_on_stub(stub, commands)
        stub.wait(30)
    finally:
        stub.kill()
    return run, stub


def run_gdb_on_twin(program: Path, server: Gdbserver, commands: list[str], timeout: float = 90) -> ClientRun:
    argv = [GDB, "-nx", "-batch", "-ex", "set pagination off", "-ex", "set confirm off", str(program),
            "-ex", f"target remote 127.0.0.1:{server.port}"]
    for command in marked(commands):
        argv += ["-ex", command]
    return _run_client(argv, timeout)


def command_outputs(run: ClientRun, commands: list[str]) -> list[tuple[str, str]]:
    """(command, what gdb printed for it) in order; the k-th command's text
    follows marker k."""
    found = sections(run)
    return [(command, found.get(f"k{k}", "<missing>")) for k, command in enumerate(commands)]


_ADDRESS = re.compile(r"0x[0-9a-f]+")
#: A source path as each build spells it (the twin includes the example
#: through tests/data/twins/../../../examples/).
_SOURCE_PATH = re.compile(r"(?<![\w.])(?:[\w.-]*/)+(\w+\.[ch])\b")
#: An offset from a data symbol: member offsets after a pointer differ
#: (4-byte pointers in wasm32, 8 natively), the symbol does not.
_SYMBOL_OFFSET = re.compile(r"<(\w+)\+\d+>")
_NOISE = (
    re.compile(r"^Reading .* from remote target\.\.\.$"),
    re.compile(r"^warning: File transfers from remote targets can be slow.*$"),
    re.compile(r"^\[Inferior 1 \(process \d+\) (detached|exited normally|exited with code \d+)\]$"),
    re.compile(r"^Remote debugging from host .*$"),
    re.compile(r"^Detaching from process \d+$"),
)


def normalize(text: str) -> str:
    """What must agree between the stub and the twin: addresses become ADDR,
    runs of blanks one space; noise lines go."""
    lines = []
    for line in text.splitlines():
        if any(p.match(line) for p in _NOISE):
            continue
        # gdbserver evaluates conditions itself (ConditionalBreakpoints+) when it
        # can and gdb marks the others "(host evals)"; the stub leaves all to gdb.
        line = line.replace(" (host evals)", "")
        line = _SYMBOL_OFFSET.sub(r"<\1+OFF>", _SOURCE_PATH.sub(r"\1", line.rstrip()))
        # Column widths follow the address width (8 hex digits in x32, 16 natively).
        lines.append(re.sub(r"[ \t]+", " ", _ADDRESS.sub("ADDR", line)))
    return "\n".join(lines).strip()


def frames(text: str) -> list[str]:
    """Backtrace lines without the outermost frames that are not the guest's
    code (the stub's ``cm_enter``, the twin's ``main``) and without pcs."""
    out = []
    for line in normalize(text).splitlines():
        if not line.startswith("#"):
            continue
        if " cm_enter " in line or " main " in line or "in main (" in line:
            break
        out.append(re.sub(r"^#(\d+)\s+(ADDR in )?", r"#\1 ", line))
    return out


@dataclass
class TwinSessions:
    """One gdb batch session against the stub and one against the native twin."""

    ours: ClientRun
    theirs: ClientRun
    stub: StubProcess  # ended: its packets, stderr and the guest's output stay readable
    twin_output: str  # the twin's stdout and gdbserver's messages


def run_gdb_on_stub_and_twin(workdir: Path, module: Path, invoke: str, args: list[str], twin: tuple[str, str],
                             commands: list[str], twin_commands: list[str] | None = None) -> TwinSessions:
    """``commands`` in gdb against ``serve MODULE --invoke INVOKE ARGS`` and
    ``twin_commands`` (default: the same) against the twin ``(name, level)``
    (:func:`build_twin`) run with the same ``args`` under gdbserver."""
    stub = StubProcess.start(workdir / "stub", module, invoke=invoke, args=args)
    try:
        ours = run_gdb_on_stub(stub, commands)
        stub.wait(30)
    finally:
        stub.kill()
    program = build_twin(*twin, workdir)
    server = start_gdbserver(program, tuple(args))
    try:
        theirs = run_gdb_on_twin(program, server, commands if twin_commands is None else twin_commands)
        twin_output = server.output()
    finally:
        server.kill()
    return TwinSessions(ours, theirs, stub, twin_output)
