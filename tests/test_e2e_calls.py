"""End-to-end: values returned (``finish``), forced returns (``return VALUE``)
and inferior calls (``call f(3)`` / ``print f(3)``) in real gdb 13 through the
native dialect, compared with examples/calls.c built by gcc -g and run under
gdbserver (its native twin, tests/twinkit.py).

gdb does all three with System V registers (amd64-tdep.c
``amd64_return_value``, ``amd64_push_dummy_call``): guest functions leave
result 0 in rax/xmm0 and callers take it from there (codemem/abi.py
"Results"), and the stub turns gdb's call into the guest's convention when
the guest resumes (gdbstub/inferior_calls.py, docs/calls.md).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from stubproc import ROOT, StubProcess, example, run_lldb
from twinkit import (build_twin, command_outputs, frames, normalize, run_gdb_on_new_stub, run_gdb_on_stub,
                     run_gdb_on_twin, start_gdbserver)

SOURCE = ROOT / "examples" / "calls.c"


def run_both(tmp_path: Path, commands: list[str], arg: str = "3", *, level: str = "O0",
             twin_commands: list[str] | None = None):
    """(stub outputs, twin outputs, stub's printed result, twin's printed result, raw stub run)."""
    stub = StubProcess.start(tmp_path / "stub", example(f"calls.{level}"), invoke="calls_run", args=[arg])
    try:
        ours = run_gdb_on_stub(stub, commands)
        stub.wait(30)
    finally:
        stub.kill()
    twin = build_twin("calls", level, tmp_path)
    server = start_gdbserver(twin, (arg,))
    try:
        theirs = run_gdb_on_twin(twin, server, commands if twin_commands is None else twin_commands)
        twin_output = server.output()
    finally:
        server.kill()
    assert not ours.timed_out and not theirs.timed_out, (ours, theirs)
    stub_result = [line.strip() for line in stub.output_after_banner if line.strip()]
    twin_result = [line.strip() for line in twin_output.splitlines() if re.fullmatch(r"-?\d+", line.strip())]
    return (command_outputs(ours, commands), command_outputs(theirs, commands if twin_commands is None else
                                                            twin_commands), stub_result, twin_result, ours)


def differences(ours, theirs, skip=()) -> list[str]:
    out = []
    for (command, a), (_, b) in zip(ours, theirs):
        if command not in skip and normalize(a) != normalize(b):
            out.append(f"--- {command}\nstub: {normalize(a)}\ntwin: {normalize(b)}")
    return out


def value_returned(text: str) -> str:
    found = re.findall(r"Value returned is \$\d+ = (.*)", text)
    assert len(found) == 1, text
    return found[0]


@pytest.mark.timeout(240)
def test_finish_prints_the_value_returned_as_natively_for_each_scalar_type_and_a_large_struct(tmp_path):
    functions = ["twice", "widen", "halve", "scale", "slot_of", "make_big", "mix"]
    commands = [f"break {f}" for f in functions]
    for _ in functions:
        commands += ["continue", "finish"]
    commands += ["delete", "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, commands)
    # make_big's call is the last instruction of its line natively, so gcc's
    # return address starts line 83 while ours is still in line 82: compare
    # the value only there.
    finishes = [(a, b) for (c, a), (_, b) in zip(ours, theirs) if c == "finish"]
    big = functions.index("make_big")
    assert differences(ours, theirs, skip={"finish"}) == [], "\n".join(differences(ours, theirs, {"finish"}))
    for k, (a, b) in enumerate(finishes):
        if k != big:
            assert normalize(a) == normalize(b), f"{functions[k]}:\nstub: {a}\ntwin: {b}\n{raw}"
        assert value_returned(normalize(a)) == value_returned(normalize(b)), (functions[k], a, b)
    values = [value_returned(normalize(a)) for a, _ in finishes]
    assert values[:5] == ["6", "25769803781", "1.5", "4.5", "(int *) ADDR <table+OFF>"], values
    assert values[5] == "{v = {3, 4, 5, 6, 7, 8}}" and values[6] == "57", values
    assert stub_result == twin_result == ["159"]


@pytest.mark.timeout(240)
def test_return_forces_an_early_return_and_the_caller_computes_with_the_value(tmp_path):
    commands = ["break twice", "break halve", "break scale", "continue", "return 100", "bt 1", "continue",
                "return 7.5", "continue", "return -2.25", "next", "p s", "delete", "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, commands)
    assert differences(ours, theirs) == [], "\n".join(differences(ours, theirs)) + f"\n{raw}"
    assert normalize(dict(ours)["p s"]).endswith("= -2.25"), raw
    # 100 instead of 6, 7 instead of 1, -2 instead of 4: 159 + 94 + 6 - 6
    # (and mix's arguments follow) -- whatever it is, natively the same.
    assert stub_result == twin_result and stub_result != ["159"], (stub_result, twin_result)


@pytest.mark.timeout(240)
def test_inferior_calls_return_each_type_stop_at_breakpoints_inside_and_report_traps_as_natively(tmp_path):
    commands = ["break mix", "continue", "p twice(21)", "p widen(2)", "p halve(5)", "p scale(2.5, 3)",
                "p *slot_of(2)", "p slot_of(1)", "call twice(a) + twice(e)",
                # A breakpoint inside the called function: a stop there, the
                # dummy frame in bt, the caller's frame intact, finish out.
                "p mix(1, 4294967296, 2.5, 1.25, 7)", "bt", "info args", "up 2", "info args", "down 2",
                "finish",
                # A trap inside the called function (SIGFPE natively too).
                "delete", "call divide(7, 0)", "bt", "info args", "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, commands)
    special = {"bt"}
    assert differences(ours, theirs, skip=special) == [], "\n".join(differences(ours, theirs, special)) + f"\n{raw}"
    outputs = [(c, normalize(a), normalize(b)) for (c, a), (_, b) in zip(ours, theirs)]
    values = dict((c, a) for c, a, _ in outputs)
    assert values["p twice(21)"].endswith("= 42") and values["p halve(5)"].endswith("= 2.5"), raw
    assert values["p scale(2.5, 3)"].endswith("= 7.5") and values["p *slot_of(2)"].endswith("= 30"), raw
    assert values["call twice(a) + twice(e)"].endswith("= 18"), raw
    assert "in a function called from GDB" in values["p mix(1, 4294967296, 2.5, 1.25, 7)"], raw
    assert re.search(r"Value returned is \$\d+ = 29", values["finish"]), raw
    assert "SIGFPE" in values["call divide(7, 0)"], raw
    # bt: identical but for the outermost frame (the stub's cm_enter, the twin's main).
    for command, a, b in outputs:
        if command == "bt":
            frames_a = [line for line in a.splitlines() if line.startswith("#") and "cm_enter" not in line]
            frames_b = [line for line in b.splitlines() if line.startswith("#") and " main " not in line]
            assert frames_a == frames_b and "<function called from gdb>" in a, (a, b)
    assert "Program terminated with signal SIGFPE" in values["continue"] or \
        "Program terminated with signal SIGFPE" in normalize(raw.output), raw


@pytest.mark.timeout(120)
def test_lldb_native_view_finish_stops_in_the_caller_and_shows_the_value_returned(tmp_path):
    """lldb-22 with default settings (issue 11 Acceptance): ``finish`` out of
    a function returning an int, a float and a double stops at the return
    address in the caller and prints the value its x86-64 ABI reads from
    rax/xmm0."""
    stub = StubProcess.start(tmp_path / "stub", example("calls.O0"), invoke="calls_run", args=["3"])
    try:
        commands = []
        for function in ("twice", "halve", "scale"):
            commands += [f"breakpoint set --name {function}", "process continue", "finish"]
        run = run_lldb(stub, commands + ["process detach"])
    finally:
        stub.kill()
    assert not run.timed_out, run
    values = re.findall(r"Return value: \((\w+)\) \$\d+ = (\S+)", run.output)
    assert values == [("int", "6"), ("float", "1.5"), ("double", "4.5")], run
    callers = re.findall(r"stop reason = step out\n.*\n\s+frame #0: 0x[0-9a-f]+ \S+`(\w+)", run.output)
    assert callers == ["calls_run"] * 3, run


@pytest.mark.timeout(240)
def test_calls_with_string_literals_go_through_the_guests_malloc_and_the_program_then_runs_on(tmp_path):
    """gdb copies a string literal argument into the inferior with a call of
    its ``malloc`` first (valops.c ``value_coerce_to_target``), then makes the
    call, restoring the registers only after both: the stub takes the second
    call as following the first (they return to the same state), and the
    guest then steps and runs to its end.  examples/wasi_tour.c with
    wasi-libc (its malloc, strlen, strcmp, printf)."""
    import subprocess

    wasm = tmp_path / "wasi_tour.wasm"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O0", "-fdebug-compilation-dir=.",
                    "examples/wasi_tour.c", "-o", str(wasm)], cwd=ROOT, check=True, capture_output=True, timeout=120)
    commands = ["break report", "continue", 'p (int)strlen("banana")', "delete", 'call report("from gdb", 1)',
                'p (int)strcmp("abc", "abd") < 0', "info args", "next", "continue"]
    run, stub = run_gdb_on_new_stub(tmp_path / "stub", wasm, commands, args=["--", "escape", "/nonexistent"])
    outputs = dict(command_outputs(run, commands))
    assert outputs['p (int)strlen("banana")'].strip().endswith("= 6"), run
    assert outputs['p (int)strcmp("abc", "abd") < 0'].strip().endswith("= 1"), run
    assert re.search(r'what = 0x[0-9a-f]+ "mkdir \.\./created_outside"\nresult = -1', outputs["info args"]), run
    assert "Remote failure" not in run.output and re.match(r"\s*74\t", outputs["next"]), run
    assert re.search(r"\[Inferior 1 \(process \d+\) exited (normally|with code)", outputs["continue"]), run
    printed = "\n".join(stub.output_after_banner)
    assert "from gdb: ok" in printed and "mkdir ../created_outside: error 76" in printed, printed


def printed(text: str) -> str:
    found = re.findall(r"^\$\d+ = (.*)$", text, re.M)
    assert len(found) == 1, text
    return found[0]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("level", ["O0", "O2"])
def test_arguments_at_a_functions_first_instruction_are_the_values_passed(tmp_path, level):
    """``break *f`` stops before the prologue: the stub shows the arguments
    (from the argument array, then the parameter locals, docs/calls.md)
    that the native twin shows once its prologue has stored them (natively,
    gcc -O0 code shows stale stack at ``break *f``; gcc -O2 code entry
    values). The session's first stop, at calls_run's first byte, too."""
    ours_commands = ["info args", "bt", "break *twice", "break *mix", "continue", "info args", "continue",
                     "info args", "bt 1", "stepi", "info args", "delete", "continue"]
    twin_commands = ["info args", "bt", "break twice", "break mix", "continue", "info args", "continue",
                     "info args", "bt 1", "stepi", "info args", "delete", "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, ours_commands, level=level,
                                                           twin_commands=twin_commands)
    assert stub_result == twin_result == ["159"]
    first = dict(ours[:2])
    assert normalize(first["info args"]) == "n = 3", raw
    assert frames(first["bt"]) == ["#0 calls_run (n=3) at calls.c:75"], raw
    args = [(normalize(a), normalize(b)) for (c, a), (_, b) in zip(ours[2:], theirs[2:]) if c == "info args"]
    assert args[0] == ("x = 3", "x = 3"), args
    mix = "a = 3\nb = 25769803781\nc = 1.5"
    if level == "O0":
        mix += "\nd = 4.5\ne = 6"  # -O2: clang describes no location for d and e at all
    for ours_args, twin_args in args[1:]:
        assert ours_args.startswith(mix) and twin_args.startswith(mix), args
    assert "mix (a=3, b=25769803781, c=1.5" in normalize(dict(ours[2:])["bt 1"]), raw


@pytest.mark.timeout(240)
def test_at_o2_finish_return_and_calls_show_the_native_values(tmp_path):
    commands = ["break twice", "break scale", "break mix", "continue", "finish", "continue", "return 7.5",
                "continue", "finish", "delete", "p twice(21)", "p widen(2)", "p halve(5)", "p scale(2.5, 3)",
                "p *slot_of(2)", "p mix(1, 4294967296, 2.5, 1.25, 7)", "p make_pair(4)", "p make_big(2)",
                "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, commands, level="O2")
    finishes = [(value_returned(normalize(a)), value_returned(normalize(b)))
                for (c, a), (_, b) in zip(ours, theirs) if c == "finish"]
    # return 7.5 from scale makes s 7.5 and so mix's result 81.
    assert finishes == [("6", "6"), ("81", "81")], raw
    calls = [(c, printed(normalize(a)), printed(normalize(b))) for (c, a), (_, b) in zip(ours, theirs)
             if c.startswith("p ")]
    assert [(c, a) for c, a, b in calls if a != b] == [], calls
    assert dict((c, a) for c, a, _ in calls) == {
        "p twice(21)": "42", "p widen(2)": "17179869189", "p halve(5)": "2.5", "p scale(2.5, 3)": "7.5",
        "p *slot_of(2)": "30", "p mix(1, 4294967296, 2.5, 1.25, 7)": "29", "p make_pair(4)": "{a = 4, b = 5}",
        "p make_big(2)": "{v = {2, 3, 4, 5, 6, 7}}"}, calls
    assert stub_result == twin_result and stub_result != ["159"], (stub_result, twin_result)


@pytest.mark.timeout(240)
def test_at_o2_an_inlined_function_finishes_and_refuses_return_as_gdb_defines_it(tmp_path):
    """clang -O2 inlines inventory.c's score into walk (gcc keeps it out of
    line, so there is no twin to compare): gdb's ``finish`` out of an inline
    frame runs to the end of the inlined code and prints no value, ``return``
    is refused, as gdb does natively for gcc's inlined code; ``finish`` out
    of walk itself prints its value."""
    stub = StubProcess.start(tmp_path / "stub", example("inventory.O2"), invoke="inventory_run", args=["3"])
    try:
        commands = ["break score", "continue", "bt 2", "finish", "continue", "return 5", "bt 1", "delete",
                    "finish", "finish", "continue"]
        run = run_gdb_on_stub(stub, commands)
        stub.wait(30)
    finally:
        stub.kill()
    assert not run.timed_out, run
    outputs = command_outputs(run, commands)
    text = {command: body for command, body in outputs}  # the commands given once
    assert "#0  score (" in text["bt 2"] and "#1  walk (" in text["bt 2"], run
    finishes = [body for command, body in outputs if command == "finish"]
    # Out of the inline frame: in walk, at the same pc's caller line, no value.
    assert re.search(r"^(Run till exit.*\n)?walk \(", finishes[0].strip(), re.M), run
    assert "Value returned" not in finishes[0] and "Value returned" not in finishes[1], run
    assert "Can not force return from an inlined function." in text["return 5"], run
    assert "#0  score (" in text["bt 1"], run
    assert re.search(r"inventory_run \(n=3\).*\n.*\nValue returned is \$\d+ = \d+", finishes[2]), run
    assert [line.strip() for line in stub.output_after_banner if line.strip()] == ["1462"]


@pytest.mark.timeout(120)
def test_lldb_native_view_shows_the_arguments_at_a_functions_first_instruction(tmp_path):
    """lldb-22 reads the same parameter locations: at the session's first
    stop (calls_run's first byte, its argument array passed by the host) and
    at ``breakpoint set --address mix`` (before mix's prologue)."""
    stub = StubProcess.start(tmp_path / "stub", example("calls.O0"), invoke="calls_run", args=["3"])
    try:
        run = run_lldb(stub, ["frame variable n", "breakpoint set --address mix", "process continue",
                              "frame variable a b c d e", "process detach"])
    finally:
        stub.kill()
    assert not run.timed_out, run
    assert "(int) n = 3" in run.output, run
    values = re.findall(r"\((int|long long|float|double)\) ([a-e]) = (\S+)", run.output)
    assert values[-5:] == [("int", "a", "3"), ("long long", "b", "25769803781"), ("float", "c", "1.5"),
                           ("double", "d", "4.5"), ("int", "e", "6")], run


@pytest.mark.timeout(180)
@pytest.mark.parametrize("from_frame", ["outermost", "a frame below it"])
def test_return_out_of_the_invoked_function_ends_the_invocation_with_the_value(tmp_path, from_frame):
    """gdb's ``return VALUE`` out of the outermost guest frame (at the first
    stop, or after ``up`` from a breakpoint in a callee: gdb pops every frame
    up to the host's): the backtrace ends at the entry thunk (``cm_enter``,
    not frames of the host's stack), and the host gets the value as the
    invoked function's result."""
    setup = [] if from_frame == "outermost" else ["break twice", "continue", "up"]
    commands = setup + ["return 42", "bt", "continue"]
    run, stub = run_gdb_on_new_stub(tmp_path / "stub", example("calls.O0"), commands, invoke="calls_run",
                                    args=["3"])
    assert not run.timed_out, run
    text = dict(command_outputs(run, commands))
    assert normalize(text["bt"]).strip() == "#0 ADDR in cm_enter ()", run
    assert "exited normally" in run.output, run
    assert "Could not write" not in run.output and "SIGSEGV" not in run.output, run
    assert [line.strip() for line in stub.output_after_banner if line.strip()] == ["42"], run


@pytest.mark.timeout(120)
def test_lldb_thread_return_out_of_the_invoked_function_ends_the_invocation_with_the_value(tmp_path):
    stub = StubProcess.start(tmp_path / "stub", example("calls.O0"), invoke="calls_run", args=["3"])
    try:
        run = run_lldb(stub, ["thread return 9", "bt", "process continue"])
        stub.wait(30)
    finally:
        stub.kill()
    assert not run.timed_out, run
    assert re.search(r"frame #0: 0x[0-9a-f]+ codemem-runtime\.elf`cm_enter \+ 2\n", run.output), run
    assert "exited with status = 0" in run.output, run
    assert [line.strip() for line in stub.output_after_banner if line.strip()] == ["9"], run
