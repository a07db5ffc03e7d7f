"""End-to-end: real gdb 13 (batch mode) gets source lines for the bundled demo
(examples/demo.c at -O0, whose DWARF line table the stub maps onto the native
code, gdbstub/guest_lines.py): ``break FILE:LINE`` resolves and hits, ``bt``
shows ``at examples/demo.c:LINE`` for every wasm frame, ``next``/``step``/
``finish`` go by source line, ``break FUNC`` stops after the prologue, and
``info line``/``list`` work (gdb runs from the repository root, where the
DWARF's relative paths resolve)."""
from __future__ import annotations

import re
from pathlib import Path

from stubproc import section, monitor_function_ranges, monitor_sites, run_gdb, stub  # noqa: F401  (stub is a fixture)
from test_e2e_gdb import assert_clean_backtrace, detail, mark, one_value

DEMO_SOURCE = (Path(__file__).resolve().parent.parent / "examples" / "demo.c").read_text().splitlines()


def line_of(text: str) -> int:
    found = [n for n, line in enumerate(DEMO_SOURCE, 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


CALL_SQUARE = line_of("total += square(i);")  # 24
TOTAL_INIT = line_of("int total = 0;")  # 22
LOOP = line_of("for (int i = 1; i <= n; i++)")  # 23
SQUARE_BODY = line_of("return x * x;")  # 18
RUN_CALL = line_of("int squares = sum_of_squares(10);")  # 35


def frame_lines(text: str) -> list[tuple[str, int]]:
    """(function, line) of each ``bt`` line that has ``at examples/demo.c:N``."""
    return [(f, int(n)) for f, n in re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(.*\) at examples/demo\.c:(\d+)$",
                                               text, re.M)]


def stopped_at(text: str) -> list[tuple[str, int]]:
    """(function, line) of each ``FUNC () at examples/demo.c:N`` location line."""
    return [(f, int(n)) for f, n in re.findall(r"(?:^|, )(?:0x[0-9a-f]+ in )?(\w+) \(.*\) at examples/demo\.c:(\d+)$",
                                               text, re.M)]


def test_break_file_line_hits_and_bt_has_lines_for_every_wasm_frame(stub):
    demo = stub()
    run = run_gdb(demo, [f"break demo.c:{CALL_SQUARE}", mark("go"), "continue", mark("bt"), "bt", mark("pc"),
                         "p/x $pc", mark("table"), "monitor frame-table sum_of_squares",
                         "break square", mark("inner"), "continue", "bt", "detach"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(rf"^Breakpoint 1 at 0x[0-9a-f]+: file examples/demo\.c, line {CALL_SQUARE}\.$",
                     run.output, re.M), detail(run, demo)
    assert re.search(rf"^Breakpoint 1, sum_of_squares \(.*\) at examples/demo\.c:{CALL_SQUARE}$",
                     section(run, "go"), re.M), detail(run, demo)
    bt = section(run, "bt")
    assert frame_lines(bt) == [("sum_of_squares", CALL_SQUARE), ("run", RUN_CALL)], detail(run, demo)
    assert_clean_backtrace(bt, run)
    # The breakpoint is a patch site of the function.
    pc = one_value(section(run, "pc"), run)
    assert pc in monitor_sites(section(run, "table")), detail(run, demo)
    inner = section(run, "inner")
    assert frame_lines(inner) == [("square", SQUARE_BODY), ("sum_of_squares", CALL_SQUARE), ("run", RUN_CALL)], \
        detail(run, demo)
    assert_clean_backtrace(inner, run)


def test_break_function_stops_after_its_prologue_on_its_first_body_line(stub):
    demo = stub()
    run = run_gdb(demo, ["break sum_of_squares", "continue", mark("pc"), "p/x $pc", mark("regs"),
                         "p/x $rsp", "p/x $rbp", mark("table"), "monitor frame-table sum_of_squares", "detach"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(rf"^Breakpoint 1 at 0x[0-9a-f]+: file examples/demo\.c, line {TOTAL_INIT}\.$",
                     run.output, re.M), detail(run, demo)
    pc = one_value(section(run, "pc"), run)
    table = section(run, "table")
    start, end = monitor_function_ranges(table)["sum_of_squares"]
    assert start < pc < end and monitor_sites(table).get(pc) not in (None, "entry"), detail(run, demo)
    # Past the prologue: the frame is set up (rbp pushed and the frame reserved below it).
    rsp, rbp = re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", section(run, "regs"), re.M)
    assert int(rsp, 16) < int(rbp, 16), detail(run, demo)


def test_next_step_and_finish_go_by_source_line(stub):
    demo = stub()
    run = run_gdb(demo, [f"break demo.c:{TOTAL_INIT}", "continue", mark("n1"), "next", mark("n2"), "next",
                         mark("step"), "step", mark("finish"), "finish", mark("n3"), "next", "detach"])
    assert not run.timed_out, detail(run, demo)

    def first_source_line(name: str) -> int:
        found = re.findall(r"^(\d+)\t", section(run, name), re.M)
        assert found, detail(run, demo)
        return int(found[0])

    assert first_source_line("n1") == LOOP, detail(run, demo)
    assert first_source_line("n2") == CALL_SQUARE, detail(run, demo)
    # step enters square past its prologue, on the body's line.
    assert stopped_at(section(run, "step")) == [("square", SQUARE_BODY)], detail(run, demo)
    finish = section(run, "finish")
    # Back at the return address, in the middle of the calling line.
    assert stopped_at(finish) == [("sum_of_squares", CALL_SQUARE)], detail(run, demo)
    assert first_source_line("n3") in (LOOP, CALL_SQUARE), detail(run, demo)
    assert not re.search(r"Program (received|terminated)", run.output), detail(run, demo)


def test_info_line_and_list_show_the_source(stub):
    demo = stub()
    run = run_gdb(demo, [mark("info"), f"info line demo.c:{CALL_SQUARE}", mark("list"),
                         f"list {CALL_SQUARE - 1},{CALL_SQUARE}", "detach"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(rf'^Line {CALL_SQUARE} of "examples/demo\.c" starts at address 0x[0-9a-f]+ '
                     rf'<sum_of_squares\+\d+> and ends at 0x[0-9a-f]+ <sum_of_squares\+\d+>\.$',
                     section(run, "info"), re.M), detail(run, demo)
    listed = section(run, "list")
    assert f"{CALL_SQUARE}\t{DEMO_SOURCE[CALL_SQUARE - 1]}" in listed, detail(run, demo)
    assert f"{LOOP}\t{DEMO_SOURCE[LOOP - 1]}" in listed, detail(run, demo)
