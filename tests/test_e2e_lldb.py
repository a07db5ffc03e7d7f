"""End-to-end: real lldb-22 (``--batch``) against a ``wasm-gdbstub serve`` process.

The same list as tests/test_e2e_gdb.py (issue 4), in LLDB's words:
``breakpoint set --name``, ``process continue``, ``thread backtrace``,
``register read``, ``memory read``, ``thread step-inst``, ``thread step-out``,
``process interrupt`` (async mode), traps as signals, ``process detach``,
``process kill``.  Each session starts with the attach line the stub printed
(``target create IMAGE ... gdb-remote HOST:PORT``).  Assertions are on
lldb's output; patch-site facts come from the stub's monitor commands, sent
with ``process plugin packet monitor ...``.

LLDB keeps breakpoints inserted while stopped, so ``memory read`` at a
breakpoint sees what the stub shows for an enabled site.  In batch mode lldb
stops running ``-o`` commands once the process stops for a signal it treats as
a crash (our traps); the ``-k`` commands run then instead.
"""
from __future__ import annotations

import re

import pytest

from stubproc import (section, ClientRun, _run_client, demo_line, example, guest_path, lldb_command,
                      monitor_function_ranges, monitor_sites, run_lldb, stub)  # noqa: F401  (stub is a fixture)

DEMO_RESULT = "505"  # examples/demo.c: run() = sum_of_squares(10) + fact(5)

#: Waits (at most 10 s) until the process reaches ``state`` (async mode).
WAIT_FOR = ("script import time; _p = lldb.debugger.GetSelectedTarget().GetProcess(); "
            "_ = [time.sleep(0.05) for _i in range(200) if _p.GetState() != lldb.{state}]")


def mark(name: str) -> str:
    return f'script print("=={name}==")'


def monitor(command: str) -> str:
    return f"process plugin packet monitor {command}"


def frames(text: str) -> list[str]:
    """Function names of ``thread backtrace`` frames (``?`` for a frame lldb
    could not symbolize)."""
    names = []
    for line in re.findall(r"^\s+\*?\s*frame #\d+: 0x[0-9a-f]+(.*)$", text, re.M):
        symbol = re.match(r"\s+\S+`(\w+)", line)
        names.append(symbol.group(1) if symbol else "?")
    return names


def frame_pcs(text: str) -> list[int]:
    return [int(pc, 16) for pc in re.findall(r"^\s+\*?\s*frame #\d+: (0x[0-9a-f]+)", text, re.M)]


def pc_of(text: str, run: ClientRun) -> int:
    """The value of ``register read pc``."""
    found = re.findall(r"^\s+rip = (0x[0-9a-f]+)", text, re.M)
    assert len(found) == 1, f"expected one rip = ... in:\n{text}\n---\n{run}"
    return int(found[0], 16)


def wasm_frames(names: list[str]) -> list[str]:
    return names[:-1] if names and names[-1] == "cm_enter" else names


def stop_replies(stub_process) -> list[str]:
    return re.findall(r"^packet -> b'([TSWX][0-9a-f]{2}[^']*)'", stub_process.stderr, re.M)


def detail(run: ClientRun, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


def run_lldb_with_crash_commands(stub_process, commands: list[str], on_crash: list[str],
                                 timeout: float = 60) -> ClientRun:
    """``-o`` commands, then ``-k`` commands lldb runs if the process stops
    for a crash-like signal (lldb --batch stops running ``-o`` commands then)."""
    argv = lldb_command(stub_process, commands)
    for command in on_crash:
        argv += ["-k", command]
    return _run_client(argv, timeout)


# ---------------------------------------------------------------- tests

def test_break_by_name_stops_at_the_functions_entry_site(stub):
    """``--skip-prologue false`` stops at square's first byte, before `push
    rbp; mov rbp, rsp` (carried by its ENTRY site right after them); plain ``breakpoint set --name`` (lldb skips the prologue by the
    demo's line table) stops in the same call on square's first body line, at
    a patch site past the prologue, with the frame set up."""
    body_line = demo_line("return x * x;")
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name square", "breakpoint set --name square --skip-prologue false",
                          mark("entry"), "process continue", "register read pc rsp",
                          mark("body"), "process continue", "register read pc rsp rbp",
                          mark("table"), monitor("frame-table square"), "process detach"])
    assert not run.timed_out, detail(run, demo)
    body_bp = re.search(rf"^Breakpoint 1: where = \S+`square \+ (\d+) at demo\.c:{body_line}:\d+, "
                        r"address = (0x[0-9a-f]+)$", run.output, re.M)
    entry_bp = re.search(r"^Breakpoint 2: where = \S+`square at demo\.c:\d+, address = (0x[0-9a-f]+)$",
                         run.output, re.M)
    assert body_bp and entry_bp, detail(run, demo)
    table = section(run, "table")
    sites = monitor_sites(table)
    start, end = monitor_function_ranges(table)["square"]

    entry = section(run, "entry")
    assert re.search(r"stop reason = breakpoint 2\.1", entry), detail(run, demo)
    pc = pc_of(entry, run)
    entry_rsp = int(re.search(r"^\s+rsp = (0x[0-9a-f]+)", entry, re.M).group(1), 16)
    assert sites.get(pc + 4) == "entry", f"{pc + 4:#x} is not square's ENTRY site\n{run}"
    assert pc == start == int(entry_bp.group(1), 16), detail(run, demo)

    body = section(run, "body")
    assert re.search(r"stop reason = breakpoint 1\.1", body), detail(run, demo)
    # lldb lists the arguments too (the image carries the guest's DWARF): square(x=1).
    assert re.search(rf"frame #0: 0x[0-9a-f]+ \S+`square(\(x=\d+\))? at demo\.c:{body_line}:\d+$", body, re.M), \
        detail(run, demo)
    pc = pc_of(body, run)
    assert pc == int(body_bp.group(2), 16) == start + int(body_bp.group(1)), detail(run, demo)
    assert start < pc < end, f"{pc:#x} is not inside square [{start:#x}, {end:#x})\n{run}"
    assert sites.get(pc) not in (None, "entry"), f"stop pc {pc:#x} is not a body patch site of square\n{run}"
    rsp = int(re.search(r"^\s+rsp = (0x[0-9a-f]+)", body, re.M).group(1), 16)
    rbp = int(re.search(r"^\s+rbp = (0x[0-9a-f]+)", body, re.M).group(1), 16)
    # Past the prologue: rbp pushed below the return address, the frame reserved below rbp.
    assert rsp < rbp < entry_rsp, f"rsp {rsp:#x} rbp {rbp:#x} entry rsp {entry_rsp:#x}\n{run}"


def test_backtrace_names_every_wasm_frame_down_to_the_entry(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name square", "process continue", mark("bt"), "thread backtrace",
                          mark("table"), monitor("frame-table"), "process detach"])
    assert not run.timed_out, detail(run, demo)
    text = section(run, "bt")
    assert wasm_frames(frames(text)) == ["square", "sum_of_squares", "run"], detail(run, demo)
    sites = monitor_sites(section(run, "table"))
    for pc in frame_pcs(text)[1:3]:
        assert sites.get(pc) == "return_point", f"{pc:#x} is not a return-point site:\n{text}"


def test_register_read_shows_the_stopped_guest(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name sum_of_squares", "process continue", mark("regs"),
                          "register read", "process detach"])
    assert not run.timed_out, detail(run, demo)
    regs = section(run, "regs")
    names = re.findall(r"^\s+(\w+) = 0x[0-9a-f]+", regs, re.M)
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{n}" for n in range(8, 16)),
                 "rip", "eflags"):
        assert name in names, f"{name} missing from register read:\n{regs}"
    assert re.search(r"^\s+rip = 0x[0-9a-f]+\s+\S+`sum_of_squares\b", regs, re.M), detail(run, demo)


def test_memory_at_an_inserted_breakpoint_reads_as_the_disabled_nop(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name square", "process continue", mark("pc"), "register read pc",
                          mark("bytes"), "memory read --size 1 --format x --count 5 $pc",
                          mark("patches"), monitor("patches"), "process detach"])
    assert not run.timed_out, detail(run, demo)
    pc = pc_of(section(run, "pc"), run)
    assert re.search(rf"^{pc:#x} demo!square refs=\d+ breakpoint$", section(run, "patches"), re.M), \
        detail(run, demo)
    shown = re.search(rf"^{pc:#x}: ((?:0x[0-9a-f]{{2}}\s*){{5}})$", section(run, "bytes"), re.M)
    assert shown, detail(run, demo)
    assert shown.group(1).split() == ["0x0f", "0x1f", "0x44", "0x00", "0x00"], detail(run, demo)


def test_step_inst_moves_to_the_next_sequence_point(stub):
    demo = stub()
    commands = ["breakpoint set --name square", "process continue", mark("s0"), "register read pc"]
    for n in range(1, 4):
        commands += ["thread step-inst", mark(f"s{n}"), "register read pc"]
    commands += [mark("table"), monitor("frame-table square"), "process detach"]
    run = run_lldb(demo, commands)
    assert not run.timed_out, detail(run, demo)
    sites = monitor_sites(section(run, "table"))
    pcs = [pc_of(section(run, f"s{n}"), run) for n in range(4)]
    assert len(set(pcs)) == 4, f"step-inst did not move: {[hex(p) for p in pcs]}\n{run}"
    for pc in pcs:
        assert pc in sites, f"{pc:#x} is not a sequence point of square:\n{run}"
    assert pcs == sorted(pcs)


def test_step_out_returns_to_the_caller(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name square", "process continue", mark("bt"), "thread backtrace",
                          "thread step-out", mark("after"), "register read pc", "thread backtrace",
                          mark("table"), monitor("frame-table sum_of_squares"), mark("again"), "process continue",
                          "process detach"])
    assert not run.timed_out, detail(run, demo)
    caller_pc = frame_pcs(section(run, "bt"))[1]
    after = section(run, "after")
    pc = pc_of(after, run)
    assert pc == caller_pc, f"step-out stopped at {pc:#x}, the return address is {caller_pc:#x}\n{run}"
    assert wasm_frames(frames(after)) == ["sum_of_squares", "run"], detail(run, demo)
    assert monitor_sites(section(run, "table")).get(pc) == "return_point", detail(run, demo)
    assert re.search(r"stop reason = breakpoint 1\.1", section(run, "again")), detail(run, demo)


def test_breakpoint_in_a_recursive_function_hits_at_every_depth(stub):
    demo = stub()
    commands = ["breakpoint set --name fact"]
    for depth in range(1, 6):
        commands += [mark(f"d{depth}"), "process continue", "thread backtrace"]
    commands += ["breakpoint delete --force", mark("end"), "process continue"]
    run = run_lldb(demo, commands)
    assert not run.timed_out, detail(run, demo)
    for depth in range(1, 6):
        text = section(run, f"d{depth}")
        assert re.search(r"stop reason = breakpoint 1\.1", text), detail(run, demo)
        backtrace = text[text.index("(lldb) thread backtrace"):]
        assert wasm_frames(frames(backtrace)) == ["fact"] * depth + ["run"], detail(run, demo)
    assert re.search(r"Process \d+ exited with status = 0 ", section(run, "end")), detail(run, demo)
    assert demo.wait() == 0, demo.describe()
    assert DEMO_RESULT in demo.output_after_banner, demo.describe()


def test_detach_lets_the_program_finish_and_print_its_result(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name sum_of_squares", "process continue", "thread step-inst",
                          "process detach"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(r"^Process \d+ detached$", run.output, re.M), detail(run, demo)
    assert demo.wait() == 0, demo.describe()
    assert demo.output_after_banner[:1] == [DEMO_RESULT], demo.describe()


def test_kill_ends_the_guest(stub):
    demo = stub()
    run = run_lldb(demo, ["breakpoint set --name square", "process continue", mark("kill"), "process kill"])
    assert not run.timed_out, detail(run, demo)
    killed = section(run, "kill")
    assert re.search(r"^Process \d+ exited with status = ", killed, re.M), detail(run, demo)
    assert "failed" not in killed and "error" not in killed, f"lldb's kill failed:\n{detail(run, demo)}"
    demo.wait(10)
    assert DEMO_RESULT not in demo.output_after_banner, "killed before it could finish:\n" + demo.describe()


def test_process_interrupt_stops_a_guest_in_an_infinite_loop(stub, tmp_path):
    spinner = stub(guest_path(tmp_path), invoke="spin")
    run = run_lldb(spinner, [
        "script lldb.debugger.SetAsync(True)",
        "process continue",
        WAIT_FOR.format(state="eStateRunning") + "; time.sleep(0.5)",  # let it spin a while
        "process interrupt",
        WAIT_FOR.format(state="eStateStopped"),
        "script lldb.debugger.SetAsync(False)",
        mark("stop"), "register read pc", "thread backtrace",
        mark("table"), monitor("frame-table"), mark("patches"), monitor("patches"),
        "process kill"], timeout=30)
    assert not run.timed_out, detail(run, spinner)
    stop = section(run, "stop")
    assert re.search(r"stop reason = signal SIGINT", stop), detail(run, spinner)
    pc = pc_of(stop, run)
    assert monitor_sites(section(run, "table")).get(pc) is not None, f"{pc:#x} is not a site\n{run}"
    # The backtrace's own lines, up to the next command: lldb may print the
    # asynchronous stop again (its frame #0) before the next marker.
    backtrace = stop[stop.index("(lldb) thread backtrace"):]
    backtrace = backtrace[:backtrace.find("(lldb) ", 1)] if "(lldb) " in backtrace[1:] else backtrace
    assert wasm_frames(frames(backtrace)) == ["spin_forever", "spin"], detail(run, spinner)
    assert "no patch site is enabled" in section(run, "patches"), detail(run, spinner)


# (invoke, args, signal name, signal number, wasm frames innermost first)
TRAPS = {
    "unreachable": ("trap_unreachable", ["0"], "SIGILL", 4, ["hit_unreachable", "trap_unreachable"]),
    "divide-by-zero": ("trap_div", ["7", "0"], "SIGFPE", 8, ["divide", "trap_div"]),
    "bad-conversion": ("trap_convert", [], "SIGFPE", 8, ["to_int", "trap_convert"]),
    "out-of-bounds": ("trap_oob", ["70000"], "SIGSEGV", 11, ["load_at", "trap_oob"]),
}

#: Prints the stop reason (5 = eStopReasonSignal) and its signal number.
PRINT_STOP_SIGNAL = ("script _t = lldb.debugger.GetSelectedTarget().GetProcess().GetSelectedThread(); "
                     "print('stop-signal', _t.GetStopReason(), _t.GetStopReasonDataAtIndex(0))")


@pytest.mark.parametrize("case", sorted(TRAPS))
def test_trap_shows_as_a_signal_with_a_backtrace(stub, tmp_path, case):
    invoke, args, signame, signo, expected_frames = TRAPS[case]
    guest = stub(guest_path(tmp_path), invoke=invoke, args=args)
    run = run_lldb_with_crash_commands(guest, ["process continue"], [
        mark("stop"), PRINT_STOP_SIGNAL, "register read pc", "thread backtrace",
        mark("table"), monitor("frame-table"), mark("end"), "process continue"])
    assert not run.timed_out, detail(run, guest)
    stop = section(run, "stop")
    assert re.search(rf"^stop-signal 5 {signo}$", stop, re.M), f"not stopped by {signame}:\n{detail(run, guest)}"
    assert re.search(r"stop reason = wasm trap: ", stop), detail(run, guest)
    pc = pc_of(stop, run)
    assert monitor_sites(section(run, "table")).get(pc) is not None, f"trap pc {pc:#x} is not a site\n{run}"
    backtrace = stop[stop.index("(lldb) thread backtrace"):]
    assert wasm_frames(frames(backtrace)) == expected_frames, detail(run, guest)
    assert re.search(rf"Process \d+ exited with status = {signo} ", section(run, "end")), detail(run, guest)
    assert guest.wait() == 1, guest.describe()
    assert any(r.startswith("T%02x" % signo) for r in stop_replies(guest)), guest.describe()


def test_trap_in_an_example_program(stub):
    loops = stub(example("loops.O0"), invoke="must_be_positive", args=["0"])
    run = run_lldb_with_crash_commands(loops, ["process continue"], [mark("stop"), PRINT_STOP_SIGNAL,
                                                                     "thread backtrace", "process kill"])
    assert not run.timed_out, detail(run, loops)
    stop = section(run, "stop")
    assert re.search(r"^stop-signal 5 4$", stop, re.M), detail(run, loops)
    assert wasm_frames(frames(stop[stop.index("(lldb) thread backtrace"):])) == ["must_be_positive"], \
        detail(run, loops)


def test_stack_exhaustion_shows_as_sigsegv_with_a_backtrace(stub, tmp_path):
    guest = stub(guest_path(tmp_path), invoke="trap_stack")
    run = run_lldb_with_crash_commands(guest, ["process continue"], [
        mark("stop"), PRINT_STOP_SIGNAL, "thread backtrace --count 4", "process kill"])
    assert not run.timed_out, detail(run, guest)
    stop = section(run, "stop")
    assert re.search(r"^stop-signal 5 11$", stop, re.M), detail(run, guest)
    assert frames(stop[stop.index("(lldb) thread backtrace"):]) == ["recurse"] * 4, detail(run, guest)
