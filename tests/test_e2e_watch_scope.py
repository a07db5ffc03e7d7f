"""End-to-end: a watchpoint on a C local that goes out of scope, with real gdb 13
and lldb-22, against the native twin.

The guest is tests/data/scope_watch.c (built here with clang-19 -O0): a local
of ``accumulate`` (``total``) lives in linear memory, on clang's shadow stack,
so ``watch total`` is a ``Z2`` on its address.  How each client notices that
the frame is gone (docs/agent.md, "A watchpoint on a local"):

* gdb inserts a breakpoint at the frame's caller resume address (its return
  address: here the return-point site after the ``call``), and when it is
  hit and the frame is gone, deletes the watchpoint and prints "Watchpoint N
  deleted because the program has left the block in which its expression is
  valid." with the stop in the caller;
* lldb-22 does the same with an internal breakpoint, disables the watchpoint
  and continues.

Both are compared with the same program built by gcc -g under gdbserver (the
native twin, tests/twinkit.py), and the stub's packet trace shows that the
watch was removed and that, once the guest ran on, no store site of the Store
calls a check any more.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stubproc import LLDB, ROOT, StubProcess, _run_client, run_lldb, stub  # noqa: F401  (stub is a fixture)
from twinkit import build_twin, command_outputs, normalize, run_gdb_on_stub_and_twin

SOURCE = ROOT / "tests" / "data" / "scope_watch.c"
CLANG = shutil.which("clang-19") or "clang-19"


def line_of(text: str) -> int:
    found = [n for n, line in enumerate(SOURCE.read_text().splitlines(), 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


CALL_LINE = line_of("int got = accumulate(n);")


@pytest.fixture(scope="module")
def scope_wasm(tmp_path_factory) -> Path:
    """tests/data/scope_watch.c as the examples are built (freestanding
    wasm32, -O0, paths relative to the repository root)."""
    target = tmp_path_factory.mktemp("scope_watch") / "scope_watch.wasm"
    subprocess.run([CLANG, "--target=wasm32", "-nostdlib", "-mbulk-memory", "-g", "-fdebug-compilation-dir=.",
                    "-O0", "-Wl,--no-entry", "-Wl,--export=scope_caller", str(SOURCE.relative_to(ROOT)),
                    "-o", str(target)], check=True, capture_output=True, cwd=ROOT)
    return target


def stop_replies(stub_process: StubProcess) -> list[str]:
    return re.findall(r"^packet -> b'(T[0-9a-f]{2}[^']*)'", stub_process.stderr, re.M)


def packets_after(stub_process: StubProcess, first: str) -> list[str]:
    """The client's packets from the first one starting with ``first`` on."""
    sent = [line for line in stub_process.packets() if line.startswith("packet <- ")]
    at = next(k for k, line in enumerate(sent) if line.startswith(f"packet <- b'{first}"))
    return sent[at:]


#: Three changes of `total` in scope (0 -> 0 is no change for gdb), then the
#: return: the watchpoint goes, the stop is in the caller.
GDB_COMMANDS = ["break accumulate", "continue", "watch total", "continue", "monitor patches", "continue",
                "continue", "continue", "info watchpoints", "bt", "break scribble", "continue", "monitor patches",
                "info watchpoints", "continue"]
#: Not sent to the twin's gdbserver (stub monitor commands).
STUB_ONLY = {"monitor patches"}


@pytest.mark.timeout(240)
def test_gdb_deletes_a_watchpoint_whose_local_went_out_of_scope_and_stops_in_the_caller_as_natively(
        tmp_path, scope_wasm):
    twin_commands = [c for c in GDB_COMMANDS if c not in STUB_ONLY]
    both = run_gdb_on_stub_and_twin(tmp_path, scope_wasm, "scope_caller", ["4"], ("scope", "O0"), GDB_COMMANDS,
                                    twin_commands)
    ours, theirs, stub_process, twin_output = both.ours, both.theirs, both.stub, both.twin_output
    assert not ours.timed_out and not theirs.timed_out, (ours, theirs)
    detail = f"{ours}\n---\n{theirs}\n---\n{stub_process.describe()}"

    outputs = command_outputs(ours, GDB_COMMANDS)
    compared = [(c, normalize(a)) for c, a in outputs if c not in STUB_ONLY and c != "bt"]
    reference = [(c, normalize(b)) for c, b in command_outputs(theirs, twin_commands) if c != "bt"]
    assert compared == reference, detail
    scope_exit = [text for command, text in compared if "left the block" in text]
    assert len(scope_exit) == 1, detail
    assert "Watchpoint 2 deleted because the program has left the block in\nwhich its expression is valid." \
        in scope_exit[0], detail
    assert re.search(rf"^ADDR in scope_caller \(n=4\) at scope_watch\.c:{CALL_LINE}$", scope_exit[0], re.M), detail
    assert re.findall(r"New value = (\d+)", "\n".join(text for _, text in compared)) == ["1", "3", "6"], detail
    assert [text for command, text in compared if command == "info watchpoints"] == ["No watchpoints."] * 2, detail
    # The backtrace in the caller: scope_caller, then the host (cm_enter) or main.
    bt = normalize(outputs[GDB_COMMANDS.index("bt")][1]).splitlines()
    assert re.match(r"#0 ADDR in scope_caller \(n=4\) at scope_watch\.c:\d+", bt[0]), detail
    assert "1006" in twin_output and "1006" in stub_process.output_after_banner, detail

    # What gdb sent: a breakpoint at the return-point site after the call
    # (accepted), the stop there, then the watch removed for good.
    sent = packets_after(stub_process, "Z2,")
    watch = re.match(r"packet <- b'Z2,([0-9a-f]+),4'", sent[0]).group(1)
    first_resume = next(k for k, line in enumerate(sent) if line.startswith("packet <- b'vCont"))
    before_watch = set(re.findall(r"packet <- b'Z0,([0-9a-f]+),1'", stub_process.stderr.split(sent[0], 1)[0]))
    with_watch = {m.group(1) for line in sent[:first_resume]
                  for m in [re.match(r"packet <- b'Z0,([0-9a-f]+),1'", line)] if m}
    (resume_pc,) = with_watch - before_watch  # the caller's resume address
    assert re.search(rf"packet <- b'Z0,{resume_pc},1'\npacket -> b'OK'", stub_process.stderr), detail
    replies = stop_replies(stub_process)
    scope_stop = next(r for r in replies if f"10:{_le64(resume_pc)};" in r)
    assert "swbreak" in scope_stop, detail
    after_exit = stub_process.stderr.split(scope_stop, 1)[1]
    assert f"z2,{watch},4" in after_exit and f"Z2,{watch},4" not in after_exit, detail
    # Five writes in scope (`total = 0` and four `total += i`); gdb shows the
    # three that change the value and silently resumes after the others.
    assert sum(f"watch:{watch}" in r for r in replies) == 5, detail
    # monitor patches: while the watch was set every store site of the Store
    # called its check; after the scope exit, once the guest ran on, none does.
    patches = [text for command, text in outputs if command == "monitor patches"]
    assert re.search(r"^\d+ sites call their own veneer", patches[0], re.M), detail
    assert "call their own veneer" not in patches[1], detail


def _le64(hex_address: str) -> str:
    """A register value as the stop reply spells it (little-endian hex)."""
    return int(hex_address, 16).to_bytes(8, "little").hex()


def lldb_native_twin(twin: Path, commands: list[str]):
    """lldb-22 launching the native twin itself (lldb-server under the hood)."""
    argv = [LLDB, "--no-lldbinit", "--batch"]
    for command in ["b accumulate", "run", *commands]:
        argv += ["-o", command]
    argv.append(str(twin))
    return _run_client(argv, 90)


LLDB_COMMANDS = ["watchpoint set variable total", "c", "c", "c", "c", "watchpoint list"]


def _watch_hits(text: str) -> list[tuple[str, str]]:
    return re.findall(r"Watchpoint 1 hit:\nold value: (\d+)\nnew value: (\d+)", text)


@pytest.mark.timeout(240)
def test_lldb_native_view_watches_a_local_and_disables_it_when_its_frame_returns(tmp_path, stub, scope_wasm):
    s = stub(scope_wasm, invoke="scope_caller", args=["4"])
    run = run_lldb(s, ["b accumulate", "c", *LLDB_COMMANDS])
    assert not run.timed_out, f"{run}\n{s.describe()}"
    twin = lldb_native_twin(build_twin("scope", "O0", tmp_path), LLDB_COMMANDS)
    detail = f"{run}\n---\n{twin}\n---\n{s.describe()}"
    assert "Watchpoint created: Watchpoint 1: addr = 0x" in run.output and "size = 4" in run.output, detail
    assert _watch_hits(run.output) == _watch_hits(twin.output) == [("0", "1"), ("1", "3"), ("3", "6")], detail
    # The frame returned: lldb stopped at its internal breakpoint on the
    # return address, disabled the watchpoint and ran on to the end.
    for text in (run.output, twin.output):
        assert re.search(r"Watchpoint 1: addr = 0x[0-9a-f]+ size = 4 state = disabled type = m", text), detail
        assert "exited with status = 0" in text, detail
    assert "packet <- b'qWatchpointSupportInfo" in s.stderr, detail
    sent = packets_after(s, "Z2,")
    inserts = [re.match(r"packet <- b'Z0,([0-9a-f]+),1'", line) for line in sent]
    assert any(m for m in inserts), detail
    assert not re.search(r"packet <- b'Z0,[0-9a-f]+,1'\npacket -> b'E", s.stderr), detail


@pytest.mark.timeout(240)
def test_lldb_wasm_dialect_watches_a_local_by_name_until_its_frame_returns(stub, scope_wasm):
    s = stub(scope_wasm, invoke="scope_caller", args=["4", "--dialect", "wasm"])
    run = run_lldb(s, ["b accumulate", "c", *LLDB_COMMANDS])
    detail = f"{run}\n---\n{s.describe()}"
    assert not run.timed_out, detail
    assert _watch_hits(run.output) == [("0", "1"), ("1", "3"), ("3", "6")], detail
    assert re.search(r"Watchpoint 1: addr = 0x[0-9a-f]+ size = 4 state = disabled type = m", run.output), detail
    assert "exited with status = 0" in run.output, detail


#: A local of the invoked (outermost) function: its caller is the host here
#: (cm_enter, through the entry thunk) and main natively.
OUTERMOST_COMMANDS = ["break scope_caller", "continue", "watch got", "continue", "continue", "info watchpoints",
                      "continue"]


@pytest.mark.timeout(240)
def test_gdb_deletes_a_watchpoint_on_a_local_of_the_outermost_frame_when_it_returns_to_the_host(
        tmp_path, scope_wasm):
    both = run_gdb_on_stub_and_twin(tmp_path, scope_wasm, "scope_caller", ["4"], ("scope", "O0"),
                                    OUTERMOST_COMMANDS)
    ours, theirs, stub_process = both.ours, both.theirs, both.stub
    assert not ours.timed_out and not theirs.timed_out, (ours, theirs)
    detail = f"{ours}\n---\n{theirs}\n---\n{stub_process.describe()}"
    mine = [normalize(text) for _, text in command_outputs(ours, OUTERMOST_COMMANDS)]
    native = [normalize(text) for _, text in command_outputs(theirs, OUTERMOST_COMMANDS)]
    deleted = "Watchpoint 2 deleted because the program has left the block in\nwhich its expression is valid."
    # The same session, but where the frame returns to: the host's entry
    # thunk (shown as cm_enter, the runtime image's name for it) or main.
    # (`got` starts as whatever the stack held: 0 here, garbage natively.)
    assert deleted in mine[4] and deleted in native[4], detail
    assert mine[4].endswith("ADDR in cm_enter ()") and "in main () at scope_twin.c" in native[4], detail
    assert "New value = 6" in mine[3] and "New value = 6" in native[3], detail
    assert mine[5] == native[5] == "No watchpoints.", detail
    assert "exited normally" in ours.output and "exited normally" in theirs.output, detail
    # gdb's breakpoint at the thunk's `ret` was accepted and hit.
    thunk_ret = re.search(r"packet <- b'Z0,([0-9a-f]+),1'\npacket -> b'OK'", stub_process.stderr.split("Z2,", 1)[1])
    assert thunk_ret is not None, detail
    assert any(f"10:{_le64(thunk_ret.group(1))};swbreak" in r for r in stop_replies(stub_process)), detail
    assert not re.search(r"packet <- b'Z0,[0-9a-f]+,1'\npacket -> b'E", stub_process.stderr), detail


@pytest.mark.timeout(240)
def test_lldb_native_view_sets_its_scope_breakpoint_where_the_outermost_frame_returns_to_the_host(stub, scope_wasm):
    s = stub(scope_wasm, invoke="scope_caller", args=["4"])
    run = run_lldb(s, ["b scope_caller", "c", "watchpoint set variable got", "c", "c", "watchpoint list"])
    detail = f"{run}\n---\n{s.describe()}"
    assert not run.timed_out, detail
    # Before, lldb warned "failed to set breakpoint site at 0x... for
    # breakpoint -1.1" (the thunk's `ret` was refused) and never disabled it.
    assert "failed to set breakpoint site" not in run.output, detail
    assert re.search(r"Watchpoint 1 hit:\nold value: \d+\nnew value: 6", run.output), detail
    assert re.search(r"Watchpoint 1: addr = 0x[0-9a-f]+ size = 4 state = disabled type = m", run.output), detail
    assert "exited with status = 0" in run.output, detail
