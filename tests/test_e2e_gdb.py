"""End-to-end: real gdb 13 (batch mode) against a ``wasm-gdbstub serve`` process.

Issue 4's list, each checked on gdb's OUTPUT: ``break FUNC`` by name and
``continue`` stop at a patch site; ``bt`` names every wasm frame down to the
entry; ``info registers``; ``x/5xb $pc`` shows the disabled NOP while the
breakpoint is inserted; ``stepi``; ``finish``; a breakpoint in a recursive
function hits at every depth; ``interrupt`` / Ctrl-C stops an infinite loop;
traps show as SIGILL / SIGFPE / SIGSEGV with a backtrace; ``detach`` lets the
program print its result; ``kill``.

Patch-site facts come from the stub's own monitor commands (``monitor
frame-table`` marks sequence points that are sites, ``monitor patches`` lists
enabled ones); the stub's packet trace (``--log-packets``) shows the stop
replies.  That the code is back to the EngineCode bytes after a session can
only be seen from inside the process: tests/test_e2e_inprocess.py.
"""
from __future__ import annotations

import re

import pytest

from stubproc import (section, INTERRUPT_BY, ClientRun, demo_line, example, guest_path, monitor_function_ranges,
                      monitor_sites, run_gdb, stub)  # noqa: F401  (stub is a fixture)

DEMO_RESULT = "505"  # examples/demo.c: run() = sum_of_squares(10) + fact(5)
# Lines of examples/demo.c.  The demo carries DWARF lines, so gdb puts
# `break FUNC` after FUNC's prologue, on its first body line, and a stop
# there prints `FUNC (ARGS) at examples/demo.c:LINE` (no address: a line start).
SQUARE_DECL = demo_line("int square(int x) {")  # 17: square's entry site carries it
SQUARE_BODY = demo_line("return x * x;")  # 18
TOTAL_INIT = demo_line("int total = 0;")  # 22: sum_of_squares's first body line
FACT_BODY = demo_line("if (n <= 1)")  # 29
ALWAYS_INSERTED = ("set breakpoint always-inserted on",)


# ---------------------------------------------------------------- output parsing

def mark(name: str) -> str:
    """A gdb command printing a marker line, to cut the output into sections."""
    return f"echo =={name}==\\n"


def frames(text: str) -> list[str]:
    """Function names of the ``bt`` lines in ``text`` (``??`` when unknown)."""
    return re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(", text, re.M)


def frame_pcs(text: str) -> dict[int, int]:
    """{frame number: pc} of the ``bt`` lines that show their pc (``#N  0x... in``):
    every caller frame; frame #0 only when it is not at the start of a line."""
    return {int(n): int(pc, 16) for n, pc in re.findall(r"^#(\d+)\s+(0x[0-9a-f]+) in ", text, re.M)}


def values(text: str) -> list[int]:
    """The hex values gdb printed as ``$N = 0x...``."""
    return [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)\s*$", text, re.M)]


def one_value(text: str, run: ClientRun) -> int:
    found = values(text)
    assert len(found) == 1, f"expected one $N = 0x... in:\n{text}\n---\n{run}"
    return found[0]


def wasm_frames(names: list[str]) -> list[str]:
    """The frames above the runtime's entry trampoline (cm_enter ends a
    wasm backtrace: its image's CFI marks the return address undefined)."""
    return names[:-1] if names and names[-1] == "cm_enter" else names


def assert_clean_backtrace(text: str, run: ClientRun) -> None:
    assert "??" not in frames(text), f"an unnamed frame in the backtrace:\n{text}\n---\n{run}"
    for complaint in ("Backtrace stopped", "corrupt stack", "previous frame identical", "Cannot access memory"):
        assert complaint not in text, f"gdb complained ({complaint!r}):\n{text}\n---\n{run}"


def stop_replies(stub_process) -> list[str]:
    """Stop replies the stub sent (``T..``/``S..``/``W..``/``X..``), from its packet trace."""
    return re.findall(r"^packet -> b'([TSWX][0-9a-f]{2}[^']*)'", stub_process.stderr, re.M)


def detail(run: ClientRun, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


# ---------------------------------------------------------------- tests

def test_break_by_name_stops_at_the_functions_entry_site(stub):
    """``break *square`` (square's address) stops at its first byte, before
    `push rbp; mov rbp, rsp` (its ENTRY site right after them carries the
    breakpoint; the stop is shown with the two undone); ``break square`` (by
    name: gdb skips the prologue) stops in the same call on square's first
    body line, at a patch site past the prologue, with the frame set up."""
    demo = stub()
    run = run_gdb(demo, ["break *square", "break square", mark("entry"), "continue", "p/x $pc", "p/x $rsp",
                         "info symbol $pc", mark("body"), "continue", "p/x $pc", "p/x $rsp", "p/x $rbp",
                         "info symbol $pc", mark("table"), "monitor frame-table square", "detach"])
    assert not run.timed_out, detail(run, demo)
    start_text = section(run, "_start")
    entry_bp = re.search(rf"^Breakpoint 1 at (0x[0-9a-f]+): file examples/demo\.c, line {SQUARE_DECL}\.$",
                         start_text, re.M)
    body_bp = re.search(rf"^Breakpoint 2 at (0x[0-9a-f]+): file examples/demo\.c, line {SQUARE_BODY}\.$",
                        start_text, re.M)
    assert entry_bp and body_bp, detail(run, demo)
    table = section(run, "table")
    sites = monitor_sites(table)
    start, end = monitor_function_ranges(table)["square"]

    entry = section(run, "entry")
    assert re.search(rf"^Breakpoint 1, square \(.*\) at examples/demo\.c:{SQUARE_DECL}$", entry, re.M), \
        detail(run, demo)
    entry_pc, entry_rsp = values(entry)
    assert entry_pc == start == int(entry_bp.group(1), 16), detail(run, demo)
    assert sites.get(entry_pc + 4) == "entry", f"{entry_pc + 4:#x} is not square's ENTRY site:\n{table}"
    assert re.search(r"^square in section \.text", entry, re.M), detail(run, demo)

    body = section(run, "body")
    assert re.search(rf"^Breakpoint 2, square \(.*\) at examples/demo\.c:{SQUARE_BODY}$", body, re.M), \
        detail(run, demo)
    pc, rsp, rbp = values(body)
    assert pc == int(body_bp.group(1), 16), detail(run, demo)
    assert start < pc < end, f"{pc:#x} is not inside square [{start:#x}, {end:#x})\n{run}"
    assert sites.get(pc) not in (None, "entry"), f"stop pc {pc:#x} is not a body patch site of square:\n{table}"
    assert re.search(rf"^square \+ {pc - start} in section \.text", body, re.M), detail(run, demo)
    # Past the prologue: rbp pushed below the return address, the frame reserved below rbp.
    assert rsp < rbp < entry_rsp, f"rsp {rsp:#x} rbp {rbp:#x} entry rsp {entry_rsp:#x}\n{run}"
    # Two software-breakpoint stops: the entry site, then the body site.
    assert sum(r.startswith("T05") and "swbreak:" in r for r in stop_replies(demo)) == 2, demo.describe()


def test_backtrace_names_every_wasm_frame_down_to_the_entry(stub):
    demo = stub()
    run = run_gdb(demo, ["break square", "continue", mark("bt"), "bt", mark("table"), "monitor frame-table",
                         "frame 1", mark("caller"), "p $rbx", "p $rsi", "p/x $r15", "p/x $rbp", "detach"])
    assert not run.timed_out, detail(run, demo)
    text = section(run, "bt")
    assert wasm_frames(frames(text)) == ["square", "sum_of_squares", "run"], detail(run, demo)
    assert_clean_backtrace(text, run)
    # The callee may have clobbered the caller's registers (its CFI says so),
    # except the frame pointer and the instance context.
    caller = section(run, "caller")
    assert re.findall(r"^\$\d+ = (.*)$", caller, re.M)[:2] == ["<not saved>", "<not saved>"], detail(run, demo)
    assert len(values(caller)) == 2, detail(run, demo)
    # Every caller frame's pc is a return address, which is a return-point site.
    sites = monitor_sites(section(run, "table"))
    pcs = frame_pcs(text)
    assert 1 in pcs and 2 in pcs, detail(run, demo)
    for pc in (pcs[1], pcs[2]):
        assert sites.get(pc) == "return_point", f"{pc:#x} is not a return-point site:\n{text}"


def test_info_registers_shows_the_stopped_guest(stub):
    demo = stub()
    run = run_gdb(demo, ["break sum_of_squares", "continue", mark("regs"), "info registers", "info registers eip",
                         mark("pc"), "p/x $pc", mark("table"), "monitor frame-table sum_of_squares", "detach"])
    assert not run.timed_out, detail(run, demo)
    regs = section(run, "regs")
    pc = one_value(section(run, "pc"), run)
    names = re.findall(r"^(\w+)\s+0x[0-9a-f]+\s", regs, re.M)
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{n}" for n in range(8, 16)),
                 "rip", "eflags"):
        assert name in names, f"{name} missing from info registers:\n{regs}"
    # `break sum_of_squares` stops past the prologue: rip is sum_of_squares+N.
    start, _ = monitor_function_ranges(section(run, "table"))["sum_of_squares"]
    # The x32 architecture (docs/pointers.md) types rip as a 64-bit integer and
    # names the pc with symbols through its 32-bit eip pseudo register.
    rip = re.search(r"^eip\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+ <(\w+)\+(\d+)>", regs, re.M)
    assert rip and int(rip.group(1), 16) == pc and rip.group(2) == "sum_of_squares", regs
    assert int(rip.group(3)) == pc - start > 0, f"{regs}\nsum_of_squares starts at {start:#x}"
    rsp = int(re.search(r"^rsp\s+(0x[0-9a-f]+)", regs, re.M).group(1), 16)
    rbp = int(re.search(r"^rbp\s+(0x[0-9a-f]+)", regs, re.M).group(1), 16)
    # Past the prologue the frame is set up: its locals region lies below rbp.
    assert rsp < rbp, regs


def test_memory_at_an_inserted_breakpoint_reads_as_the_disabled_nop(stub):
    demo = stub()
    run = run_gdb(demo, ["break square", "continue", mark("pc"), "p/x $pc", mark("bytes"), "x/5xb $pc",
                         mark("patches"), "monitor patches", mark("table"), "monitor frame-table square", "detach"],
                  before_connect=ALWAYS_INSERTED)
    assert not run.timed_out, detail(run, demo)
    pc = one_value(section(run, "pc"), run)
    # gdb really left the breakpoint in: the site at pc is enabled in the stub.
    assert re.search(rf"^{pc:#x} demo!square refs=\d+ breakpoint$", section(run, "patches"), re.M), \
        detail(run, demo)
    # The stop is past square's prologue (a body site): gdb shows it as square+N.
    start, _ = monitor_function_ranges(section(run, "table"))["square"]
    assert pc > start, detail(run, demo)
    shown = re.search(rf"^{pc:#x} <square\+{pc - start}>:((?:\s+0x[0-9a-f]{{2}}){{5}})\s*$", section(run, "bytes"),
                      re.M)
    assert shown, detail(run, demo)
    assert shown.group(1).split() == ["0x0f", "0x1f", "0x44", "0x00", "0x00"], detail(run, demo)


def test_stepi_moves_to_the_next_sequence_point(stub):
    demo = stub()
    commands = ["break square", "continue", mark("s0"), "p/x $pc"]
    for n in range(1, 4):
        commands += ["stepi", mark(f"s{n}"), "p/x $pc"]
    commands += [mark("table"), "monitor frame-table square", "detach"]
    run = run_gdb(demo, commands)
    assert not run.timed_out, detail(run, demo)
    sites = monitor_sites(section(run, "table"))
    pcs = [one_value(section(run, f"s{n}"), run) for n in range(4)]
    assert len(set(pcs)) == 4, f"stepi did not move: {[hex(p) for p in pcs]}\n{run}"
    for pc in pcs:
        assert pc in sites, f"{pc:#x} is not a sequence point of square:\n{run}"
    assert pcs == sorted(pcs), "square has no branches: each step goes forward"
    assert not re.search(r"Program (received|terminated)", run.output), detail(run, demo)


def test_finish_returns_to_the_caller(stub):
    demo = stub()
    run = run_gdb(demo, ["break square", "continue", mark("bt"), "bt", "finish", mark("after"), "p/x $pc",
                         "bt", mark("table"), "monitor frame-table sum_of_squares", mark("again"), "continue",
                         "detach"])
    assert not run.timed_out, detail(run, demo)
    caller_pc = frame_pcs(section(run, "bt")).get(1)
    assert caller_pc is not None, detail(run, demo)
    after = section(run, "after")
    pc = one_value(after, run)
    assert pc == caller_pc, f"finish stopped at {pc:#x}, the return address is {caller_pc:#x}\n{run}"
    assert wasm_frames(frames(after)) == ["sum_of_squares", "run"], detail(run, demo)
    assert monitor_sites(section(run, "table")).get(pc) == "return_point", detail(run, demo)
    # The loop calls square again: the breakpoint still works after finish.
    assert re.search(rf"^Breakpoint 1, square \(.*\) at examples/demo\.c:{SQUARE_BODY}$", section(run, "again"),
                     re.M), detail(run, demo)


def test_breakpoint_in_a_recursive_function_hits_at_every_depth(stub):
    demo = stub()
    commands = ["break fact"]
    for depth in range(1, 6):  # fact(5) -> fact(4) -> ... -> fact(1)
        commands += [mark(f"d{depth}"), "continue", "bt"]
    commands += ["delete", mark("end"), "continue"]
    run = run_gdb(demo, commands)
    assert not run.timed_out, detail(run, demo)
    for depth in range(1, 6):
        text = section(run, f"d{depth}")
        assert re.search(rf"^Breakpoint 1, fact \(.*\) at examples/demo\.c:{FACT_BODY}$", text, re.M), \
            detail(run, demo)
        assert wasm_frames(frames(text)) == ["fact"] * depth + ["run"], detail(run, demo)
        assert_clean_backtrace(text, run)
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", section(run, "end")), detail(run, demo)
    assert demo.wait() == 0, demo.describe()
    assert DEMO_RESULT in demo.output_after_banner, demo.describe()


def test_detach_lets_the_program_finish_and_print_its_result(stub):
    demo = stub()
    run = run_gdb(demo, ["break sum_of_squares", "continue", "stepi", "detach"], before_connect=ALWAYS_INSERTED)
    assert not run.timed_out, detail(run, demo)
    assert re.search(r"\[Inferior 1 \(process \d+\) detached\]", run.output), detail(run, demo)
    assert demo.wait() == 0, demo.describe()
    assert demo.output_after_banner[:1] == [DEMO_RESULT], demo.describe()


def test_kill_ends_the_guest(stub):
    demo = stub()
    run = run_gdb(demo, ["break square", "continue", "kill", mark("after"), "info registers rip"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(r"\[Inferior 1 \(process \d+\) killed\]", run.output), detail(run, demo)
    assert "The program has no registers now." in section(run, "after"), detail(run, demo)
    demo.wait(10)
    assert DEMO_RESULT not in demo.output_after_banner, "killed before it could finish:\n" + demo.describe()


@pytest.mark.parametrize("how", sorted(INTERRUPT_BY))
def test_interrupt_stops_a_guest_in_an_infinite_loop(stub, tmp_path, how):
    spinner = stub(guest_path(tmp_path), invoke="spin")
    run = run_gdb(spinner, [INTERRUPT_BY[how], "continue", mark("stop"), "p/x $pc", "bt",
                            mark("table"), "monitor frame-table", mark("patches"), "monitor patches", "kill"],
                  timeout=30)
    assert not run.timed_out, detail(run, spinner)
    stop = section(run, "stop")
    assert re.search(r"^Program received signal SIGINT, Interrupt\.$", run.output, re.M), detail(run, spinner)
    pc = one_value(stop, run)
    assert monitor_sites(section(run, "table")).get(pc) is not None, f"{pc:#x} is not a site\n{run}"
    assert wasm_frames(frames(stop)) == ["spin_forever", "spin"], detail(run, spinner)
    assert_clean_backtrace(stop, run)
    # The interrupt patched every site; once stopped they are all disabled again.
    assert "no patch site is enabled" in section(run, "patches"), detail(run, spinner)
    assert any(reply.startswith("T02") for reply in stop_replies(spinner)), spinner.describe()


# (invoke, args, signal name, gdb's description, the stop reply's signal, wasm frames innermost first)
TRAPS = {
    "unreachable": ("trap_unreachable", ["0"], "SIGILL", "Illegal instruction", "04",
                    ["hit_unreachable", "trap_unreachable"]),
    "divide-by-zero": ("trap_div", ["7", "0"], "SIGFPE", "Arithmetic exception", "08", ["divide", "trap_div"]),
    "bad-conversion": ("trap_convert", [], "SIGFPE", "Arithmetic exception", "08", ["to_int", "trap_convert"]),
    "out-of-bounds": ("trap_oob", ["70000"], "SIGSEGV", "Segmentation fault", "0b", ["load_at", "trap_oob"]),
}


@pytest.mark.parametrize("case", sorted(TRAPS))
def test_trap_shows_as_a_signal_with_a_backtrace(stub, tmp_path, case):
    invoke, args, signame, description, number, expected_frames = TRAPS[case]
    guest = stub(guest_path(tmp_path), invoke=invoke, args=args)
    run = run_gdb(guest, ["continue", mark("stop"), "p/x $pc", "bt", mark("table"), "monitor frame-table",
                          mark("end"), "continue"])
    assert not run.timed_out, detail(run, guest)
    assert re.search(rf"^Program received signal {signame}, {description}\.$", run.output, re.M), detail(run, guest)
    stop = section(run, "stop")
    pc = one_value(stop, run)
    assert monitor_sites(section(run, "table")).get(pc) is not None, f"trap pc {pc:#x} is not a site\n{run}"
    assert wasm_frames(frames(stop)) == expected_frames, detail(run, guest)
    assert_clean_backtrace(stop, run)
    # Continuing a trap unwinds the guest: the process ends with that signal.
    assert re.search(rf"^Program terminated with signal {signame}, {description}\.$", section(run, "end"), re.M), \
        detail(run, guest)
    assert guest.wait() == 1, guest.describe()
    replies = stop_replies(guest)
    assert any(r.startswith("T" + number) for r in replies), f"no T{number} stop reply: {replies}"
    assert any(r.startswith("X" + number) for r in replies), f"no X{number} exit reply: {replies}"


def test_trap_in_an_example_program(stub):
    """examples/loops.c must_be_positive(0) is `__builtin_trap()`: unreachable."""
    loops = stub(example("loops.O0"), invoke="must_be_positive", args=["0"])
    run = run_gdb(loops, ["continue", mark("stop"), "bt", "kill"])
    assert not run.timed_out, detail(run, loops)
    assert re.search(r"^Program received signal SIGILL, Illegal instruction\.$", run.output, re.M), \
        detail(run, loops)
    assert wasm_frames(frames(section(run, "stop"))) == ["must_be_positive"], detail(run, loops)


def test_stack_exhaustion_shows_as_sigsegv_with_a_backtrace(stub, tmp_path):
    """Unbounded recursion: tens of thousands of frames, so only the innermost
    few are printed (a whole ``bt`` over the wire takes tens of seconds)."""
    guest = stub(guest_path(tmp_path), invoke="trap_stack")
    run = run_gdb(guest, ["continue", mark("stop"), "p/x $pc", "bt 4", mark("table"), "monitor frame-table recurse",
                          "kill"])
    assert not run.timed_out, detail(run, guest)
    assert re.search(r"^Program received signal SIGSEGV, Segmentation fault\.$", run.output, re.M), \
        detail(run, guest)
    stop = section(run, "stop")
    pc = one_value(stop, run)
    assert monitor_sites(section(run, "table")).get(pc) is not None, f"trap pc {pc:#x} is not a site\n{run}"
    assert frames(stop) == ["recurse"] * 4, detail(run, guest)
    assert "Backtrace stopped" not in stop, detail(run, guest)
    assert any(r.startswith("T0b") for r in stop_replies(guest)), guest.describe()


@pytest.mark.parametrize("transfer", ["auto", "vfile"])
def test_gdb_gets_the_debug_images_from_this_file_system_or_over_vfile(stub, transfer):
    """On loopback (``auto``) the stub answers Host I/O as unsupported and
    gdb opens the images by their paths (it says so once); ``vfile`` serves
    them over the connection.  Either way gdb has the module's symbols and
    lines, and unwinds through them."""
    demo = stub(args=["--image-transfer", transfer])
    run = run_gdb(demo, ["break square", "continue", mark("bt"), "bt", mark("libs"), "info sharedlibrary", "detach"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(rf"^Breakpoint 1, square \(.*\) at examples/demo\.c:{SQUARE_BODY}$", run.output, re.M), \
        detail(run, demo)
    assert_clean_backtrace(section(run, "bt"), run)
    assert wasm_frames(frames(section(run, "bt"))) == ["square", "sum_of_squares", "run"], detail(run, demo)
    assert re.search(r"^0x[0-9a-f]+\s+0x[0-9a-f]+\s+Yes\s+\S+/demo[^/]*\.elf$", section(run, "libs"), re.M), \
        detail(run, demo)
    preads = re.findall(r"^packet <- b'vFile:pread", demo.stderr, re.M)
    local_warning = "attempting to access files from local filesystem" in run.output
    if transfer == "vfile":
        assert preads and not local_warning, detail(run, demo)
    else:
        assert not preads and local_warning, detail(run, demo)


def test_a_resume_the_guest_cannot_make_is_a_sigsegv_stop_with_its_reason_not_an_endless_retry(stub):
    """gdb 13 retries a refused `vCont;s` for ever; natively a pc that is no
    place to run faults.  Moving the pc of a stopped frame onto its
    function's entry site (``set var $pc = square``, allowed as a write)
    makes the next ``next`` a SIGSEGV stop whose reason gdb prints; the
    pc written back, the guest goes on and ends as it should."""
    demo = stub()
    run = run_gdb(demo, ["break square", "continue", "set var $saved = $pc", "set var $pc = square",
                         mark("refused"), "next", mark("again"), "set var $pc = $saved", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    refused = section(run, "refused")
    assert "the guest cannot resume" in refused and "Program received signal SIGSEGV" in refused, \
        detail(run, demo)
    assert run.output.count("Remote failure reply") == 0, detail(run, demo)
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", section(run, "again")), detail(run, demo)


def test_a_recursive_functions_breakpoint_hit_again_shows_the_new_frames_values(stub):
    """Two stops at one pc (fact's breakpoint, hit by fact(5) and then by
    fact(4)) are two stops: the inner frame's C frame base (es) and so its
    arguments are its own, not the previous stop's."""
    demo = stub()
    run = run_gdb(demo, ["break fact", "continue", "continue", mark("inner"), "p n", "bt", "detach"])
    assert not run.timed_out, detail(run, demo)
    inner = section(run, "inner")
    assert re.search(r"^\$\d+ = 4$", inner, re.M), detail(run, demo)
    assert re.search(r"^#0 +fact \(n=4\)", inner, re.M) and re.search(r"^#1 +0x[0-9a-f]+ in fact \(n=5\)", inner, re.M), \
        detail(run, demo)
