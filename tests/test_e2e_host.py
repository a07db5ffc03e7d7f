"""Many Stores in one host, debugged with a real gdb 13 over extended-remote.

The host runs in this process (tests/hostkit.py LoopHost: workers running
examples/bench_loop.O0.wasm ``call_loop`` in fresh Stores), so the tests see
what gdb cannot: each Store's raw code bytes, each worker's completed runs,
who holds which Store.  gdb scripts hand control to the test at sync points
(hostkit.GdbSync) so those checks happen while gdb holds a Store stopped.
"""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from hostkit import NOP5, GdbSync, LoopHost, finish_client, loop_host, run_gdb, start_gdb  # noqa: F401
from stubproc import stub  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(180)


def detail(run, host: LoopHost | None = None) -> str:
    text = str(run)
    if host is not None:
        text += "\nworkers: " + ", ".join(f"{w.name}: {w.runs} runs, store {w.store_id}, errors {w.errors!r}"
                                        for w in host.workers.values())
    return text


def runs_while(host: LoopHost, name: str, seconds: float) -> int:
    before = host.workers[name].runs
    time.sleep(seconds)
    return host.workers[name].runs - before


def test_info_os_processes_lists_the_live_stores_and_attach_stops_one_with_symbols(loop_host):
    host = loop_host()
    a = host.wait_for("a")
    run = run_gdb(host.address, ["info os processes", f"attach {a}", "bt", "info inferiors", "monitor stores",
                                 "detach"])
    assert re.search(rf"^{a}\s+wasm\s+bench_loop\.O0 call_loop\s+running", run.output, re.M), detail(run, host)
    # "ADDR in" is left out when the attach lands exactly on a line's start.
    assert re.search(r"(^| in )(tick|call_loop) \([^)]*\) at examples/bench_loop\.c:\d+", run.output, re.M), \
        detail(run, host)
    assert re.search(rf"^\* 1\s+process {a}\s", run.output, re.M), detail(run, host)
    assert re.search(rf"^store {a} \(pid {a:#x}\): bench_loop\.O0 call_loop, attached, stopped \(this debugger\)",
                     run.output, re.M), detail(run, host)
    assert f"[Inferior 1 (process {a}) detached]" in run.output, detail(run, host)
    # Detached: its code is back to the EngineCode's bytes and it runs on.
    assert host.pristine(a) is True
    assert host.host.target(a) is not None and host.host.target(a).is_running


def test_a_breakpoint_in_store_a_stops_a_only_while_b_runs_on_from_clean_code(loop_host, tmp_path):
    """Isolation: the breakpoint is a patched call in A's code; B (the same
    function, in parallel) never stops, its code at tick reads as the NOP,
    it keeps completing runs while A sits stopped, and a Store created while A
    is stopped starts from clean code.  Detaching restores A's bytes."""
    host = loop_host(short_workers=1)
    a = host.wait_for("a")
    tick_a = host.site_pc(a, "tick")
    sync = GdbSync(tmp_path / "sync")
    proc, argv = start_gdb(host.address, [
        f"attach {a}", "set breakpoint always-inserted on", f"break *{tick_a:#x}", "continue", "bt 2",
        *sync.gdb_commands("a_stopped"), f"x/5xb {tick_a:#x}", "detach"])
    try:
        assert sync.reached("a_stopped"), "gdb never reached the breakpoint"
        assert host.raw_bytes(a, tick_a)[:1] == b"\xe8", "A's tick site is not a patched call"
        assert host.host.target(a).current_stop is not None
        b_before = host.workers["b0"].store_id
        b_runs = runs_while(host, "b0", 1.0)
        assert b_runs >= 20, f"B completed only {b_runs} runs in a second while A was stopped"
        assert not host.workers["b0"].errors
        b_store, tick_b, raw_b = host.fresh_short_store("b0", after=b_before)
        assert raw_b == NOP5, f"Store {b_store}, created while A was stopped, has {raw_b.hex()} at tick"
        assert host.host.target(a).current_stop is not None, "A moved"
    finally:
        sync.resume("a_stopped")
    run = finish_client(proc, argv, 60)
    assert re.search(r"Breakpoint 1, (0x[0-9a-f]+ in )?tick \([^)]*\) at examples/bench_loop\.c", run.output), \
        detail(run, host)
    assert re.search(rf"{tick_a:#x} <tick(\+4)?>:\s+0x0f\s+0x1f\s+0x44\s+0x00\s+0x00", run.output), detail(run, host)
    assert f"[Inferior 1 (process {a}) detached]" in run.output, detail(run, host)
    assert host.pristine(a) is True, "detaching left A's code patched"


def test_two_stores_in_two_inferiors_with_breakpoints_patched_per_store(loop_host, tmp_path):
    """add-inferior / inferior 2 / attach: both Stores debugged at once; the
    breakpoint of inferior 1 is patched into A's code only, B's reads (in
    gdb and raw) as the NOP; both are restored by their detaches."""
    host = loop_host(long_workers=("a", "b"), short_workers=0)
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a, tick_b = host.site_pc(a, "tick"), host.site_pc(b, "tick")
    sync = GdbSync(tmp_path / "sync")
    proc, argv = start_gdb(host.address, [
        f"attach {a}", "set breakpoint always-inserted on", f"break *{tick_a:#x}", "continue",
        "add-inferior", "inferior 2", f"attach {b}", "info inferiors",
        "echo ==b_code==\\n", f"x/5xb {tick_b:#x}",
        *sync.gdb_commands("both_attached"),
        "inferior 1", "echo ==a_bt==\\n", "bt 1",
        "inferior 2", "detach", "inferior 1", "detach"])
    try:
        assert sync.reached("both_attached"), "gdb never attached both"
        assert host.host.owner_of(a) is not None and host.host.owner_of(b) is not None
        assert host.raw_bytes(a, tick_a)[:1] == b"\xe8"
        assert host.raw_bytes(b, tick_b) == NOP5, "inferior 1's breakpoint reached B's code"
    finally:
        sync.resume("both_attached")
    run = finish_client(proc, argv, 60)
    out = run.output
    assert re.search(rf"^\s+1\s+process {a}\s", out, re.M) and re.search(rf"^\*\s+2\s+process {b}\s", out, re.M), \
        detail(run, host)
    b_code = out.split("==b_code==", 1)[1]
    assert re.search(r":\s+0x0f\s+0x1f\s+0x44\s+0x00\s+0x00", b_code), detail(run, host)
    assert re.search(r"tick \([^)]*\) at examples/bench_loop\.c", out.split("==a_bt==", 1)[1]), detail(run, host)
    assert f"[Inferior 2 (process {b}) detached]" in out and f"[Inferior 1 (process {a}) detached]" in out, \
        detail(run, host)
    assert host.pristine(a) is True and host.pristine(b) is True


def test_kill_ends_one_stores_run_and_the_host_lives_on(loop_host):
    host = loop_host(short_workers=1)
    a = host.wait_for("a")
    run = run_gdb(host.address, [f"attach {a}", "kill", "info os processes"])
    assert f"[Inferior 1 (process {a}) killed]" in run.output, detail(run, host)
    deadline = time.monotonic() + 10
    while host.workers["a"].store_id == a and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host.workers["a"].store_id != a, "worker a did not move on to a fresh Store"
    assert host.host.trapped_runs >= 1
    assert runs_while(host, "b0", 0.5) > 0


def test_hold_new_stores_then_attach_the_next_one_and_see_it_exit(loop_host, tmp_path):
    """The next-Store workflow: hold new Stores, attach the first held one
    (stopped before its first instruction), release the rest, continue: gdb
    reports the Store's exit, and the host serves on."""
    host = loop_host(long_workers=(), short_workers=2)
    script = tmp_path / "next.gdb"
    script.write_text(
        "monitor hold-new-stores on\n"
        "shell sleep 1\n"
        "echo ==listed==\\n\n"
        "info os processes\n"
        "python\n"
        "out = gdb.execute('info os processes', to_string=True)\n"
        "held = [line.split()[0] for line in out.splitlines()[1:] if ' held ' in line]\n"
        "gdb.execute('attach ' + held[0])\n"
        "end\n"
        "echo ==attached==\\n\n"
        "bt 1\n"
        "monitor hold-new-stores off\n"
        "monitor stores\n"
        "echo ==continue==\\n\n"
        "continue\n")
    run = run_gdb(host.address, [f"source {script}"])
    out = run.output
    listed = out.split("==listed==", 1)[1].split("==attached==", 1)[0]
    assert re.search(r"^\d+\s+wasm\s+bench_loop\.O0 call_loop\s+held\s", listed, re.M), detail(run, host)
    attached = out.split("==attached==", 1)[1].split("==continue==", 1)[0]
    assert re.search(r"call_loop \([^)]*\) at examples/bench_loop\.c:\d+", attached), detail(run, host)
    pid = re.search(r"^store (\d+) \(pid 0x[0-9a-f]+\): bench_loop\.O0 call_loop, attached", attached, re.M)
    assert pid, detail(run, host)
    assert re.search(rf"\[Inferior 1 \(process {pid.group(1)}\) exited normally\]", out), detail(run, host)
    assert not host.host.held_pids()
    assert runs_while(host, "b0", 0.5) > 0, "the host stopped serving after the attached Store ended"


def test_attach_to_a_missing_or_ended_store_fails_and_changes_nothing(loop_host):
    host = loop_host(short_workers=1)
    a = host.wait_for("a")
    gone = host.ended_store("b0")
    run = run_gdb(host.address, ["attach 999999", f"attach {gone}", "info inferiors", f"attach {a}", "detach"])
    assert "Attaching to process 999999 failed" in run.output, detail(run, host)
    assert f"Attaching to process {gone} failed" in run.output, detail(run, host)
    assert f"[Inferior 1 (process {a}) detached]" in run.output, detail(run, host)
    assert host.pristine(a) is True


def test_a_second_client_cannot_attach_a_store_the_first_holds(loop_host, tmp_path):
    """The second-client policy: each client debugs its own Stores."""
    host = loop_host(long_workers=("a", "b"), short_workers=0)
    a, b = host.wait_for("a"), host.wait_for("b")
    sync = GdbSync(tmp_path / "sync")
    first, first_argv = start_gdb(host.address, [f"attach {a}", *sync.gdb_commands("holding"), "detach"])
    try:
        assert sync.reached("holding")
        second = run_gdb(host.address, [f"attach {a}", "info os processes", f"attach {b}", "bt 1", "detach"])
        assert f"Attaching to process {a} failed" in second.output, detail(second, host)
        assert re.search(rf"^{a}\s+wasm\s+bench_loop\.O0 call_loop\s+attached, stopped", second.output, re.M), \
            detail(second, host)
        assert f"[Inferior 1 (process {b}) detached]" in second.output, detail(second, host)
        assert host.host.target(a).current_stop is not None, "the second client moved the first one's Store"
    finally:
        sync.resume("holding")
    run = finish_client(first, first_argv, 60)
    assert f"[Inferior 1 (process {a}) detached]" in run.output, detail(run, host)


def test_a_client_that_vanishes_while_holding_several_stores_leaves_them_all_running(loop_host, tmp_path):
    host = loop_host(long_workers=("a", "b"), short_workers=0)
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a = host.site_pc(a, "tick")
    sync = GdbSync(tmp_path / "sync")
    proc, argv = start_gdb(host.address, [
        f"attach {a}", "set breakpoint always-inserted on", f"break *{tick_a:#x}", "continue",
        "add-inferior", "inferior 2", f"attach {b}", *sync.gdb_commands("holding", timeout=120)])
    try:
        assert sync.reached("holding")
        assert host.raw_bytes(a, tick_a)[:1] == b"\xe8"
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by its pid
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (host.host.owner_of(a) or host.host.owner_of(b)):
            time.sleep(0.02)
        for pid in (a, b):
            assert host.host.owner_of(pid) is None, f"Store {pid} still held by a vanished client"
            assert host.host.target(pid).is_running, f"Store {pid} was left stopped"
            assert host.pristine(pid) is True, f"Store {pid}'s code was left patched"
    finally:
        sync.resume("holding")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- the CLI

@pytest.fixture
def host_process(tmp_path):
    from hostkit import HostProcess
    started: list[HostProcess] = []

    def start(*args: str) -> HostProcess:
        process = HostProcess(tmp_path / f"host{len(started)}", list(args))
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def wait_until(predicate, timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_host_cli_prints_a_status_line_each_second(host_process):
    from stubproc import example
    process = host_process(str(example("bench_loop.O0")), "--invoke", "call_loop", "1000", "--workers", "2")
    assert process.banner[0].startswith("wasm-gdbstub: hosting bench_loop.O0.wasm: call_loop 1000 in 2 workers")
    assert process.banner[1].startswith("gdb: gdb -ex 'target extended-remote 127.0.0.1:")
    wait_until(lambda: len(process.status_lines()) >= 2, what="two status lines")
    first = process.completed_runs()
    wait_until(lambda: process.completed_runs() > first, what="more completed runs")
    assert re.fullmatch(r"host: \d+ Stores live, \d+ runs completed, 0 trapped, 0 attached, 0 held",
                        process.status_lines()[-1])


def test_a_store_that_traps_with_no_debugger_is_logged_and_the_host_goes_on(host_process):
    from stubproc import example
    process = host_process(str(example("loops.O0")), "--invoke", "must_be_positive", "0", "--workers", "1")
    wait_until(lambda: process.completed_runs() >= 2, what="runs that trapped")
    text = process.stderr
    assert re.search(r"^host: Store \d+ trapped$", text, re.M), text[-2000:]
    assert "Error: wasm trap: unreachable" in text, text[-2000:]
    assert re.search(r"wasm backtrace:\n\s+0: loops\.O0!must_be_positive @ 0x[0-9a-f]+", text), text[-2000:]
    assert re.search(r"host: \d+ Stores live, \d+ runs completed, [1-9]\d* trapped", text), text[-2000:]
    assert process.proc.poll() is None, "the host died"


def test_run_over_extended_remote_restarts_the_served_program_in_a_fresh_store(stub):
    """gdb's `run` on `serve`: a fresh Store of the served module, stopped
    before its first instruction; the stub serves on (like gdbserver --multi)."""
    demo = stub()
    run = run_gdb(demo.address, ["break square", "continue", "info inferiors", "echo ==run==\\n", "run",
                                 "info inferiors", "bt 2", "kill"])
    out = run.output
    before, after = out.split("==run==", 1)
    assert re.search(r"Breakpoint 1, square \([^)]*\) at examples/demo\.c", before), f"{run}\n{demo.describe()}"
    first = re.search(r"^\*\s+1\s+process (\d+)\s", before, re.M)
    second = re.search(r"^\*\s+1\s+process (\d+)\s", after, re.M)
    assert first and second and first.group(1) != second.group(1), f"{run}\n{demo.describe()}"
    assert re.search(r"Breakpoint 1, square \([^)]*\) at examples/demo\.c", after), f"{run}\n{demo.describe()}"
    assert re.search(r"#1 .* in sum_of_squares \([^)]*\) at examples/demo\.c:\d+", after), f"{run}\n{demo.describe()}"
    assert re.search(r"\[Inferior 1 \(process \d+\) killed\]", after), f"{run}\n{demo.describe()}"


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes, timeout: float = 30) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_requests_are_answered_while_gdb_holds_one_in_its_handler(host_process, tmp_path):
    """host --http with examples/http_handler.c: the next request is held,
    gdb attaches it and stops in count_words; another request is answered
    meanwhile; continuing answers the first one."""
    import threading
    from stubproc import example
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    process = host_process("--http", f"127.0.0.1:{port}", str(example("http_handler.O0")), "--handler", "handle")
    assert _post(url, b"hello wasm") == (200, b"2 words, 10 bytes\nHELLO WASM\n")
    first: dict = {}
    sync = GdbSync(tmp_path / "sync")
    script = tmp_path / "http.gdb"
    script.write_text(
        "monitor hold-new-stores on\n"
        f"shell touch {tmp_path / 'holding'}\n"
        f"shell i=0; while [ ! -e {tmp_path / 'sent'} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n"
        "shell sleep 0.5\n"
        "python\n"
        "out = gdb.execute('info os processes', to_string=True)\n"
        "held = [line.split()[0] for line in out.splitlines()[1:] if ' held ' in line]\n"
        "gdb.execute('attach ' + held[0])\n"
        "end\n"
        "monitor hold-new-stores off\n"
        "break count_words\n"
        "continue\n"
        "bt 2\n"
        + "\n".join(sync.gdb_commands("in_handler")) + "\n"
        "detach\n")
    proc, argv = start_gdb(process.address, [f"source {script}"])
    try:
        wait_until(lambda: (tmp_path / "holding").exists(), what="gdb to turn holding on")
        sender = threading.Thread(target=lambda: first.update(reply=_post(url, b"debug me please")), daemon=True)
        sender.start()
        (tmp_path / "sent").touch()
        assert sync.reached("in_handler"), "gdb never stopped in the handler"
        assert "reply" not in first, "the held request was answered while stopped"
        assert _post(url, b"meanwhile") == (200, b"1 word, 9 bytes\nMEANWHILE\n")
    finally:
        sync.resume("in_handler")
    run = finish_client(proc, argv, 60)
    assert re.search(r"Breakpoint 1, count_words \([^)]*\) at examples/http_handler\.c", run.output), f"{run}\n{process.stderr[-2000:]}"
    assert re.search(r"#1 .* in handle \([^)]*\) at examples/http_handler\.c:\d+", run.output), str(run)
    sender.join(20)
    assert first.get("reply") == (200, b"3 words, 15 bytes\nDEBUG ME PLEASE\n"), first


@pytest.mark.parametrize("schedule_multiple", ["off", "on"])
def test_continue_with_two_inferiors_follows_gdbs_schedule_multiple(loop_host, schedule_multiple):
    """All-stop over two attached Stores: with schedule-multiple off gdb
    resumes inferior 1 only (B stays stopped); with it on, both run, A's
    breakpoint stops A, and B is stopped with it (gdb sees all-stop)."""
    host = loop_host(long_workers=("a", "b"), short_workers=0)
    a, b = host.wait_for("a"), host.wait_for("b")
    tick_a = host.site_pc(a, "tick")
    run = run_gdb(host.address, [
        f"set schedule-multiple {schedule_multiple}",
        f"attach {a}", "add-inferior", "inferior 2", f"attach {b}", "inferior 1",
        f"break *{tick_a:#x}", "continue", "echo ==stopped==\\n", "info threads", "monitor stores",
        "inferior 2", "detach", "inferior 1", "detach"])
    out = run.output
    # tick's ENTRY site, after its frame setup: mid-line, so gdb names the pc.
    assert re.search(r"Breakpoint 1, (0x[0-9a-f]+ in )?tick \([^)]*\) at examples/bench_loop\.c", out), \
        detail(run, host)
    stopped = out.split("==stopped==", 1)[1]
    assert re.search(rf"^store {a} .*attached, stopped \(this debugger\)", stopped, re.M), detail(run, host)
    assert re.search(rf"^store {b} .*attached, stopped \(this debugger\)", stopped, re.M), detail(run, host)
    assert f"[Inferior 1 (process {a}) detached]" in out and f"[Inferior 2 (process {b}) detached]" in out, \
        detail(run, host)
    assert host.pristine(a) is True and host.pristine(b) is True


def test_the_embedding_example_runs_and_gdb_attaches_to_one_of_its_stores(tmp_path):
    """examples/embed_host.py, as a user runs it: gdb lists its Stores,
    attaches one and detaches while the tenants keep finishing jobs."""
    import subprocess
    import sys
    from stubproc import ROOT
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "embed_host.py"), "--listen", "127.0.0.1:0",
                             "--seconds", "6"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        first = proc.stdout.readline()
        match = re.search(r"listening on (\S+);", first)
        assert match, first
        run = run_gdb(match.group(1), [
            "info os processes",
            "python gdb.execute('attach ' + [l.split()[0] for l in gdb.execute('info os processes', "
            "to_string=True).splitlines()[1:] if l.strip()][0])",
            "bt 1", "detach"])
        assert re.search(r"^\d+\s+wasm\s+bench_loop\.O0 call_loop\s+running", run.output, re.M), str(run)
        assert re.search(r"\[Inferior 1 \(process \d+\) detached\]", run.output), str(run)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    counts = [line for line in out.splitlines() if line.startswith("jobs done per tenant: ")]
    assert counts and all(int(n) > 0 for n in counts[-1].split(": ")[1].split(", ")), out
    assert re.search(r"^\d+ jobs done$", out, re.M), out
