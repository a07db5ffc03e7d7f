"""End-to-end: real lldb-22 with its WebAssembly plugin (``process connect
--plugin wasm``) against ``wasm-gdbstub serve --dialect wasm``.

lldb reads the module (DWARF included) from the stub's code address space
and evaluates clang's DW_OP_WASM_location with qWasmLocal & co., so these
are C source-level sessions: breakpoints by name and file:line, backtraces
with file:line, ``frame variable``, ``p *ptr``, ``memory read`` of linear
memory, ``n``/``s``/``finish``, detach.  Assertions are on lldb's output
(sections cut at ``==name==`` markers) and on the guest's result.

Variables are checked at -O0 only: lldb-22 shows clang's -O2 location lists
in wasm as "not available" (Wasmtime 49's stub gives the same output).
"""
from __future__ import annotations

import re

from stubproc import example, run_lldb, section, stub  # noqa: F401  (stub is a fixture)

DEMO_RESULT = "505"
WASM = ("--dialect", "wasm")


def mark(name: str) -> str:
    return f'script print("=={name}==")'


def frame_lines(text: str) -> list[str]:
    """``FUNC at FILE:LINE`` of each ``frame #N`` line of a backtrace."""
    return [f"{func} at {where}" for func, where in
            re.findall(r"frame #\d+: 0x[0-9a-f]+ \S+`(\w+)(?:\(.*?\))? at (\w+\.c:\d+)", text)]


def detail(run, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


def test_demo_break_step_finish_variables_and_detach(stub):
    s = stub(example("demo.O0"), invoke="run", args=WASM)
    assert "process connect --plugin wasm" in s.lldb_line
    run = run_lldb(s, [
        mark("images"), "image list",
        "b sum_of_squares", "b demo.c:24",
        mark("first"), "c",
        mark("bt1"), "bt",
        mark("second"), "c",
        mark("vars"), "frame variable",
        mark("global"), "p last_total",
        mark("memory"), "memory read -s 4 -f x -c 2 &last_total",
        "b square",
        mark("square"), "c",
        mark("bt2"), "bt",
        mark("finish"), "finish",
        mark("next"), "n",
        mark("vars2"), "frame variable",
        mark("step"), "s",
        mark("pc"), "register read pc",
        mark("detach"), "detach",
    ])
    out = detail(run, s)
    assert not run.timed_out, out
    assert re.search(r"0x4000000000000000 demo\.O0\.wasm", section(run, "images")), out
    assert re.search(r"stop reason = breakpoint 1\.1.*\n.*sum_of_squares\(n=10\) at demo\.c:22", section(run, "first")), out
    assert frame_lines(section(run, "bt1")) == ["sum_of_squares at demo.c:22", "run at demo.c:35"], out
    assert re.search(r"stop reason = breakpoint 2\.1.*\n.*sum_of_squares\(n=10\) at demo\.c:24", section(run, "second")), out
    variables = section(run, "vars")
    for expected in (r"\(int\) n = 10", r"\(int\) total = 0", r"\(int\) i = 1"):
        assert re.search(expected, variables), out
    assert "(int) 0" in section(run, "global"), out
    assert re.search(r"0x00000400: 0x00000000 0x00000000", section(run, "memory")), out
    assert frame_lines(section(run, "bt2")) == ["square at demo.c:18", "sum_of_squares at demo.c:24",
                                                "run at demo.c:35"], out
    assert re.search(r"square\(x=1\) at demo\.c:18", section(run, "square")), out
    # finish: back in sum_of_squares, right after the call, with square's result.
    assert re.search(r"stop reason = step out.*\n.*0x400000000000010d .*sum_of_squares\(n=10\) at demo\.c:24",
                     section(run, "finish")), out
    assert re.search(r"stop reason = step over.*\n.*sum_of_squares\(n=10\) at demo\.c:23", section(run, "next")), out
    assert re.search(r"\(int\) total = 1", section(run, "vars2")), out
    assert re.search(r"sum_of_squares\(n=10\) at demo\.c:24", section(run, "step")), out
    assert re.search(r"pc = 0x40000000000000[0-9a-f]{2}", section(run, "pc")), out
    assert "Process 1 detached" in section(run, "detach") or "detached" in section(run, "detach"), out
    # Detached with every patch restored: the guest runs to its end.
    assert s.wait() == 0, out
    assert [line for line in s.output_after_banner if line] == [DEMO_RESULT], out
    packets = s.packets()
    assert any("qWasmLocal:" in p for p in packets) and any("qWasmCallStack:" in p for p in packets), out


def test_structs_pointer_values_and_memory(stub):
    s = stub(example("structs.O0"), invoke="list_sum", args=("10",) + WASM)
    run = run_lldb(s, [
        "b structs.c:89", "c", "c",
        mark("vars"), "frame variable",
        mark("deref"), "p *p",
        mark("chain"), "p p->next->value",
        mark("memory"), "memory read -s 4 -f x -c 2 p",
        mark("bt"), "bt",
        "detach",
    ])
    out = detail(run, s)
    assert not run.timed_out, out
    variables = section(run, "vars")
    assert re.search(r"\(int\) n = 10", variables), out
    assert re.search(r"\(int\) position = 1", variables), out
    pointer = re.search(r"\(node \*\) p = (0x[0-9a-f]+)", variables)
    assert pointer, out
    assert re.search(r"value = 3\s+next = 0x[0-9a-f]+", section(run, "deref")), out
    assert "(int) 6" in section(run, "chain"), out
    p = int(pointer.group(1), 16)
    # The node at p: value 3, next = the node after it in the pool (8 bytes on).
    assert re.search(rf"0x{p:08x}: 0x00000003 0x{p + 8:08x}", section(run, "memory")), out
    assert frame_lines(section(run, "bt")) == ["list_sum at structs.c:89"], out
    assert s.wait() == 0, out
    assert [line for line in s.output_after_banner if line] == ["855"], out
