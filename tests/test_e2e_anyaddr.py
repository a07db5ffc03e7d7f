"""End-to-end: breakpoints at addresses that are not patch sites (issue 11 §4).

* gdb 13: ``break *ADDR`` at a machine instruction between two sequence
  points stops there, with the registers of that instruction (the ``imul``
  of ``square``: both operands hold ``x``), and ``stepi`` / ``continue`` go
  on from there (codemem/displaced.py).
* lldb-22 in the native view with its DEFAULT settings (fast stepping on: it
  puts temporary breakpoints on the branch instructions of a line): ``next``,
  ``step`` and ``finish`` stop on the same lines, with the same variables,
  as lldb-22 on the native gcc twin of examples/demo.c under gdbserver.
* lldb-22's wasm plugin at -O2: ``b square`` asks for a breakpoint at the
  function body's locals header (clang's ``DW_AT_low_pc``); it is set and
  hit, in every call.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import codemem
from codemem import displaced
from stubproc import LLDB, ROOT, _run_client, example, run_gdb, run_lldb, section, stub  # noqa: F401
from twinkit import GCC, TWINS, start_gdbserver

DEMO_RESULT = "505"


def function_in(wasm: Path, name: str):
    """(Module, FunctionInfo) of function ``name`` of ``wasm`` compiled for debugging
    (what the stub compiles: the same bytes at the same offsets)."""
    engine = codemem.Engine(debug=True)
    module = codemem.Module.from_file(engine, wasm)
    table = module.engine_code.frame_table
    for func in table.functions():
        if module.func_name(func.wasm_index) == name:
            return module, func
    raise AssertionError(f"no function {name} in {wasm}")


def instruction_in(wasm: Path, name: str, mnemonic: str) -> tuple[int, str]:
    """(offset from the function's start, text) of the first ``mnemonic``
    instruction of function ``name``, which must be a displaceable non-site."""
    module, func = function_in(wasm, name)
    fn = displaced.function_code(module.engine_code, func.native_start)
    for ins in fn.insns:
        if ins.text.startswith(mnemonic + " "):
            fn.check(ins.offset)
            return ins.offset - func.native_start, ins.text
    raise AssertionError(f"no {mnemonic} in {name}")


def mark(name: str) -> str:
    return f"echo =={name}==\\n"


def test_gdb_break_at_a_machine_instruction_between_sequence_points_stops_there_with_its_registers(stub):
    wasm = example("demo.O0")
    offset, text = instruction_in(wasm, "square", "imul")
    first, second = re.match(r"imul (\w+), (\w+)", text).groups()
    s = stub(wasm, invoke="run")
    run = run_gdb(s, [
        f"break *square+{offset}",
        mark("hit1"), "continue",
        mark("where1"), "x/i $pc", "p $pc == square+%d" % offset, f"p ${first}", f"p ${second}", "p x",
        "info frame",
        mark("stepi"), "stepi", "x/i $pc",
        mark("hit2"), "continue",
        mark("where2"), f"p ${first}", "p x", "bt",
        mark("end"), "delete", "continue",
    ])
    out = f"{run}\n---\n{s.describe()}"
    assert re.search(rf"Breakpoint 1 at 0x[0-9a-f]+: file examples/demo.c, line 18\.", run.output), out
    hit1 = section(run, "hit1")
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in square \(x=1\) at examples/demo.c:18", hit1), out
    where1 = section(run, "where1")
    assert re.search(rf"<square\+{offset}>:\s+imul", where1), out
    assert re.findall(r"^\$\d+ = (\S+)", where1, re.M) == ["1", "1", "1", "1"], out
    assert "Stack level 0" in where1 and "caller of" not in where1.split("Stack level 0")[0], out
    stepi = section(run, "stepi")
    # A step runs to the next sequence point: the site after the imul's run,
    # a NOP or a carrier store (the imul's result to its slot, docs/compiler-speed.md).
    site = re.search(r"<square\+(\d+)>:\s+(?:nopl|mov\s+%r\w+,(?:%ds:)?(?:0x[0-9a-f]+)?\(%rsp\))", stepi)
    assert site and int(site.group(1)) > offset, out
    hit2 = section(run, "hit2")
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in square \(x=2\) at examples/demo.c:18", hit2), out
    where2 = section(run, "where2")
    assert re.findall(r"^\$\d+ = (\S+)", where2, re.M) == ["2", "2"], out
    assert re.search(r"#1\s+0x[0-9a-f]+ in sum_of_squares \(n=10\)", where2), out
    assert re.search(r"#2\s+0x[0-9a-f]+ in run \(\)", where2), out
    assert "exited normally" in section(run, "end"), out
    assert s.wait() == 0 and DEMO_RESULT in s.output_after_banner, out


def test_gdb_refuses_a_break_inside_an_instruction_with_its_reason(stub):
    wasm = example("demo.O0")
    offset, _ = instruction_in(wasm, "square", "imul")
    s = stub(wasm, invoke="run")
    run = run_gdb(s, [f"break *square+{offset + 1}", "break sum_of_squares", "continue", "info breakpoints"])
    out = f"{run}\n---\n{s.describe()}"
    # gdb 13 shows a breakpoint the target refuses in a library image (each
    # module's image is one, docs/debug-images.md) as <PENDING> and runs on;
    # the stub's log says why.
    assert re.search(r"^1\s+breakpoint\s+keep y\s+<PENDING>\s+\*square\+%d" % (offset + 1), run.output, re.M), out
    assert "Breakpoint 2, sum_of_squares (n=10)" in run.output, out
    # Logged as a warning: the stub runs without -v, which shows no info lines.
    assert "InsertBreakpoint refused: no breakpoint at" in s.stderr, out
    assert "is not an instruction boundary (inside `imul" in s.stderr, out


# ---------------------------------------------------------------- lldb, native view

STEPS = ["b sum_of_squares", "c", "n", "n", "n", "n", "frame variable", "s", "bt", "finish", "n", "frame variable",
         "s", "finish", "c"]


def lldb_stops(output: str) -> list[str]:
    """``FUNC at demo.c:LINE`` of each stop lldb reports (frame #0 lines after
    ``Process N stopped``), and each ``frame variable`` block's values."""
    events = []
    for block in re.split(r"^\(lldb\) ", output, flags=re.M)[1:]:
        command, _, body = block.partition("\n")
        stop = re.search(r"stop reason = ([^\n]+)\n\s+frame #0: 0x[0-9a-f]+ \S+`(\w+)(?:\(.*?\))? at demo\.c:(\d+)",
                         body)
        if stop:
            events.append(f"{command}: {stop.group(1)} {stop.group(2)}:{stop.group(3)}")
        elif command == "frame variable":
            events.append("vars: " + ", ".join(re.findall(r"^\(\w+\) (\w+ = \S+)", body, re.M)))
        elif command == "bt":
            events.append("bt: " + " < ".join(re.findall(r"frame #\d+: 0x[0-9a-f]+ \S+`(\w+)", body)))
        elif "Return value" in body:
            events.append(f"{command}: " + re.search(r"Return value: (.*)", body).group(1))
        elif "exited with status" in body:
            events.append(f"{command}: " + re.search(r"exited with status = (\d+)", body).group(1))
    return events


@pytest.mark.timeout(180)
def test_lldb_default_fast_stepping_stops_on_the_lines_of_the_native_twin(stub, tmp_path):
    twin = tmp_path / "demo_twin"
    subprocess.run([GCC, "-g", "-O0", "-fno-inline-functions-called-once", "-no-pie",
                    str(TWINS / "demo_twin.c"), "-o", str(twin)], check=True, cwd=ROOT)
    server = start_gdbserver(twin)
    try:
        native = _run_client([LLDB, "--no-lldbinit", "--batch", "-o", f"target create {twin}",
                              "-o", f"gdb-remote 127.0.0.1:{server.port}"]
                             + [word for step in STEPS for word in ("-o", step)], 90)
    finally:
        server.kill()
    s = stub(example("demo.O0"), invoke="run")
    ours = run_lldb(s, ["settings show target.use-fast-stepping"] + STEPS, timeout=90)
    out = f"{ours}\n---\n{native}\n---\n{s.describe()}"
    assert "target.use-fast-stepping (boolean) = true" in ours.output, out
    assert "failed to set breakpoint site" not in ours.output, out
    # The twin's outermost frame is main, ours cm_enter (the runtime's entry).
    # Where each attaches differs (the twin's _start, our entry site): from
    # the first command on, the stops must be the same.
    expected = [event.replace(" < main", "") for event in lldb_stops(native.output)
                if not event.startswith("gdb-remote")]
    got = [event.replace(" < cm_enter", "") for event in lldb_stops(ours.output)
           if not event.startswith("gdb-remote")]
    assert len(expected) >= 14, f"{expected}\n{out}"
    assert got == expected, f"ours:   {got}\ntwin's: {expected}\n{out}"
    # lldb asked for breakpoints at instructions that are not sites, and got them.
    inserted = re.findall(r"^packet <- b'Z0,([0-9a-f]+),1'\n^packet -> b'(\w+)", s.stderr, re.M)
    assert inserted and all(reply == "OK" for _, reply in inserted), out


# ---------------------------------------------------------------- lldb, wasm dialect

def test_lldb_wasm_plugin_at_O2_breaks_on_a_function_whose_low_pc_is_its_locals_header(stub):
    s = stub(example("demo.O2"), invoke="run", args=("--dialect", "wasm"))
    run = run_lldb(s, [
        "b square",
        'script print("==hit1==")', "c", "frame variable",
        'script print("==hit2==")', "c", "frame variable", "bt",
        'script print("==end==")', "breakpoint delete", "c",
    ])
    out = f"{run}\n---\n{s.describe()}"
    where = re.search(r"Breakpoint 1: where = demo\.O2\.wasm`square, address = (0x[0-9a-f]+)", run.output)
    assert where, out
    address = where.group(1)
    hit1 = section(run, "hit1")
    assert "stop reason = breakpoint 1.1" in hit1 and f"frame #0: {address} demo.O2.wasm`square(x=1)" in hit1, out
    assert "(int) x = 1" in hit1, out
    hit2 = section(run, "hit2")
    assert "stop reason = breakpoint 1.1" in hit2 and "(int) x = 2" in hit2, out
    assert re.search(r"frame #1: 0x[0-9a-f]+ demo\.O2\.wasm`sum_of_squares\(n=10\) at demo\.c:24", hit2), out
    assert "All breakpoints removed" in section(run, "end"), out
    assert f"Z0,{int(address, 16):x},1" in s.stderr, out
    assert s.wait() == 0 and DEMO_RESULT in s.output_after_banner, out
