"""End-to-end: C variables, types and values in real gdb 13 through the native
dialect, compared with the same program built by gcc -g and run under
gdbserver (its *native twin*, tests/twinkit.py).

The stub's debug images carry the guest's DWARF translated onto the native
code (gdbstub/dwarf_translate) and are x32 images (docs/pointers.md), so gdb
reads wasm32's 4-byte pointers as pointers. One gdb batch session per program
and level runs every command; the twin gets the same commands.

At -O0 every command prints the same as natively once addresses, source
paths and offsets from data symbols are normalized (twinkit.normalize), with
five inherent exceptions checked on their own: ``bt``'s outermost frame (the
stub's ``cm_enter``, the twin's ``main``), ``info scope`` (the stub's
locations are DWARF expressions, gcc's DW_OP_addr statics are "static
storage"), ``p sizeof`` of a struct holding a pointer (28 vs 32 bytes),
``x`` of memory holding pointers, and ``info frame`` listing ``es`` among the
saved registers (a guest frame's CFI recovers its caller's C frame base there,
gdbstub/frame_bases.py). At -O2 clang and gcc optimize differently;
there every value the stub shows must be right (equal to the twin's) and
inlined frames must appear.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from stubproc import ROOT, StubProcess, example
from twinkit import command_outputs, frames, normalize, run_gdb_on_new_stub, run_gdb_on_stub, run_gdb_on_stub_and_twin

SOURCES = ROOT / "examples"


def line_of(source: str, text: str) -> int:
    found = [n for n, line in enumerate((SOURCES / source).read_text().splitlines(), 1) if text in line]
    assert len(found) == 1, (source, text, found)
    return found[0]


WALK_LOOP = line_of("inventory.c", "total += current_scorer(it);")
DEEP_BOTTOM = line_of("deep.c", "return info.values[3] + squares[7];")

#: Commands whose output must equal the twin's at -O0 (after normalize).
INVENTORY_COMMANDS = [
    f"break inventory.c:{WALK_LOOP}", "continue", "info args", "info locals",
    "p *it", "p it->next->id", "p it->name", "p it->flags", "p it->weight", "p items[1]", "p items",
    "p ptrs[2]->id", "p *ptrs[1]", "ptype struct item", "ptype it", "whatis it->flags", "whatis items",
    "ptype union number", "ptype struct flags", "ptype enum color", "ptype scorer_fn", "whatis current_scorer",
    "p grid", "p grid[1]", "p grid[2][3]", "p counter", "p hidden_total", "p walk::calls", "p/x it->flags.code",
    "p it->flags.delta", "x/8xw &grid", "p small", "p ratio", "p big", "p greeting", "p limit * 2 + steps",
    "p items[0].name[1]", "p &items[1]", "p *it->next", "p it->next->next->name", "p it->color == GREEN",
    "p/d BLUE", "whatis &items[0]", "p sizeof(union number)", "p sizeof(grid)",
    "up", "info locals", "p **pp", "p (*pp)->next->next->id", "p probe", "p n", "down", "info frame",
    "set var limit = 2", "set var items[2].id = 30", "set var counter = 100",
    "display total", "next", "next", "info display", "undisplay 1", "delete",
    "break score if it->id == 99", "condition 2 it->id == 2 && it->color == BLUE", "info breakpoints",
    "continue", "p it->id", "frame 1", "p steps", "p total", "frame 0", "delete", "continue",
]
#: Compared in their own way (see the module docstring).
INVENTORY_SPECIAL = ["bt", "info scope walk", "p sizeof(void *)", "p sizeof(struct item)", "x/7xw it"]


def run_both(tmp_path: Path, program: str, level: str, args: list[str], commands: list[str]):
    """(stub outputs, twin outputs, stub's printed result, twin's printed result)."""
    both = run_gdb_on_stub_and_twin(tmp_path, example(f"{program}.{level}"), f"{program}_run", args,
                                    (program, level), commands)
    ours, theirs, stub, twin_output = both.ours, both.theirs, both.stub, both.twin_output
    assert not ours.timed_out and not theirs.timed_out, (ours, theirs)
    stub_result = [line for line in stub.output_after_banner if line.strip()]
    twin_result = [line for line in twin_output.splitlines() if re.fullmatch(r"-?\d+", line.strip())]
    return command_outputs(ours, commands), command_outputs(theirs, commands), stub_result, twin_result, ours


def without_frame_base_register(text: str) -> str:
    """``info frame`` output without the ``es`` entry of "Saved registers:"
    (gdbstub/frame_bases.py), which the native twin does not have."""
    return re.sub(r", es at 0x[0-9a-f]+", "", text)


def differences(ours, theirs) -> list[str]:
    out = []
    for (command, a), (_, b) in zip(ours, theirs):
        if normalize(a) != normalize(b):
            out.append(f"--- {command}\nstub: {normalize(a)}\ntwin: {normalize(b)}")
    return out


@pytest.mark.timeout(240)
def test_every_inventory_command_at_O0_prints_what_the_native_twin_prints(tmp_path):
    commands = INVENTORY_COMMANDS[:4] + INVENTORY_SPECIAL + INVENTORY_COMMANDS[4:]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, "inventory", "O0", ["3"], commands)
    special = {command: (a, b) for (command, a), (_, b) in zip(ours, theirs) if command in INVENTORY_SPECIAL}
    compared = [(c, a) for c, a in ours if c not in INVENTORY_SPECIAL]
    reference = [(c, b) for c, b in theirs if c not in INVENTORY_SPECIAL]
    assert re.search(r"rip at 0x[0-9a-f]+, es at 0x[0-9a-f]+", dict(compared)["info frame"]), raw
    compared = [(c, without_frame_base_register(a) if c == "info frame" else a) for c, a in compared]
    assert differences(compared, reference) == [], "\n".join(differences(compared, reference)) + f"\n{raw}"
    # The values really are there (not two empty outputs agreeing).
    values = dict(compared)
    assert "it = 0x" in values["info args"] and "<items>" in values["info args"], raw
    assert re.search(r"\$\d+ = 2$", values["p it->next->id"].strip()), raw
    assert "next = 0x" in values["p *it"] and "name = \"abcd" in values["p *it"], raw
    # set var on a local, a struct member in linear memory and a global: the
    # program computed with the new values, exactly as natively.
    assert stub_result == twin_result and stub_result, (stub_result, twin_result)
    assert stub_result != ["1462"], "the writes changed nothing"

    bt_stub, bt_twin = special["bt"]
    assert frames(bt_stub) == frames(bt_twin) and len(frames(bt_stub)) == 2, (bt_stub, bt_twin)
    assert "cm_enter ()" in bt_stub
    scope_stub, scope_twin = special["info scope walk"]
    names = lambda text: sorted(re.findall(r"Symbol (\w+) is", text))  # noqa: E731
    assert names(scope_stub) == names(scope_twin) == ["calls", "it", "limit", "steps", "total"], scope_stub
    # wasm32's layout: 4-byte pointers, so struct item is 28 bytes and its
    # words are id, color, flags, weight, name[0..3], name[4..7], next.
    assert normalize(special["p sizeof(void *)"][0]).endswith("= 4")
    assert normalize(special["p sizeof(struct item)"][0]).endswith("= 28")
    words = re.findall(r"0x([0-9a-f]{8})", special["x/7xw it"][0].split(":", 1)[1])
    assert [int(w, 16) for w in words[:2]] == [1, 5] and int(words[3], 16) == 0x41424344, special["x/7xw it"][0]
    assert int(words[6], 16) == int(re.search(r"next = (0x[0-9a-f]+)", values["p *it"]).group(1), 16)


@pytest.mark.timeout(240)
def test_values_the_stub_shows_at_O2_are_right_and_inlined_frames_appear(tmp_path):
    commands = [f"break inventory.c:{WALK_LOOP}", "continue", "info args", "info locals", "p limit",
                "p items[1]", "p ptrs[2]->id", "p *ptrs[1]", "p grid", "p counter", "p walk::calls", "p big",
                "p ratio", "p greeting", "up", "p n", "info locals", "down",
                "delete", "break score", "continue", "bt", "info frame", "p it", "up", "p limit", "delete",
                "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, "inventory", "O2", ["3"], commands)
    assert stub_result == twin_result == ["1462"]
    shown = 0
    for (command, a), (_, b) in zip(ours, theirs):
        if not command.startswith("p ") or "optimized out" in a:
            continue
        assert normalize(a).split("=", 1)[-1] == normalize(b).split("=", 1)[-1], f"{command}\n{a}\n{b}\n{raw}"
        shown += 1
    assert shown >= 10, raw
    outputs = dict(ours)
    assert re.search(r"limit = 3", outputs["info args"]), raw
    # clang inlines score into walk: gdb shows the inline frame, with walk as
    # its caller at the same pc (no "0x... in" for an inline frame's caller).
    backtrace = frames(outputs["bt"])
    assert backtrace[0].startswith("#0 score (") and backtrace[1].startswith("#1 walk ("), outputs["bt"]
    assert "inlined into frame 1" in outputs["info frame"], outputs["info frame"]


@pytest.mark.timeout(240)
def test_recursive_frames_show_their_own_values_like_the_native_twin(tmp_path):
    commands = [f"break deep.c:{DEEP_BOTTOM}", "continue", "bt", "info args", "info locals", "p info",
                "p squares", "p squares[3] + info.values[2]", "frame 3", "info args", "p info", "p squares[7]",
                "up", "p depth", "up 2", "p info.depth", "down", "p depth", "frame 5", "info locals", "bt -3",
                "frame 0", "set var squares[7] = 1000", "delete", "continue"]
    ours, theirs, stub_result, twin_result, raw = run_both(tmp_path, "deep", "O0", ["5"], commands)
    plain = [(c, a) for c, a in ours if c not in ("bt", "bt -3")]
    reference = [(c, b) for c, b in theirs if c not in ("bt", "bt -3")]
    assert differences(plain, reference) == [], "\n".join(differences(plain, reference)) + f"\n{raw}"
    outputs, twin_outputs = dict(ours), dict(theirs)
    assert frames(outputs["bt"]) == frames(twin_outputs["bt"]), (outputs["bt"], twin_outputs["bt"])
    depths = re.findall(r"descend \(depth=(\d+), limit=5\)", outputs["bt"])
    assert depths == ["5", "4", "3", "2", "1", "0"], outputs["bt"]
    assert "p info" in outputs and "depth = 2" in outputs["p info"], raw
    assert stub_result == twin_result and stub_result, (stub_result, twin_result)


@pytest.mark.timeout(180)
def test_lldb_native_view_shows_frame_variables_and_structs_through_the_same_image(tmp_path):
    """lldb-22 with the printed attach line (the same x32 image): arguments,
    locals, statics, a struct through a pointer and a global array read right.
    lldb has no x32 ABI, so a pointer stored in memory reads as 8 bytes
    (docs/pointers.md): chains like it->next->id are not checked here."""
    from stubproc import run_lldb

    stub = StubProcess.start(tmp_path / "stub", example("inventory.O0"), invoke="inventory_run", args=["3"])
    try:
        run = run_lldb(stub, [f"breakpoint set --file inventory.c --line {WALK_LOOP}", "process continue",
                              "frame variable", "p *it", "p it->weight", "frame variable grid",
                              "p counter", "up", "frame variable probe", "process detach"])
    finally:
        stub.kill()
    output = run.output
    assert re.search(r"\(int\) limit = 3", output) and re.search(r"\(int\) calls = 1", output), output
    assert re.search(r"\(item \*\) it = 0x0+480", output), output
    assert "id = 1" in output and "color = GREEN" in output and 'name = "abcd"' in output, output
    assert "flags = (active = 0, level = 2, delta = 0, code = 64)" in output, output
    assert "[2] = ([0] = 20, [1] = 21, [2] = 22, [3] = 23)" in output, output
    assert re.search(r"\(int\) 7", output) and "f = 1.5" in output, output


@pytest.mark.timeout(180)
def test_every_value_shown_in_every_recursive_frame_at_O2_is_the_programs(tmp_path):
    """deep.c at -O2: clang keeps depth and limit in wasm locals, info in
    pieces (locals, constants, an operand-stack entry), squares in linear
    memory. In every frame each value gdb shows must be what the program
    computed for that depth (info.values[i] = depth * i, squares[i] = i * i +
    depth); the rest is <optimized out>, never a wrong number nor gdb's
    <synthetic pointer> for a short composite."""
    commands = [f"break deep.c:{DEEP_BOTTOM}", "continue"]
    for k in range(7):
        commands += [f"frame {k}", "info args", "info locals"]
    commands += ["delete", "continue"]
    run, _ = run_gdb_on_new_stub(tmp_path / "stub", example("deep.O2"), commands, invoke="deep_run", args=["5"])
    outputs = command_outputs(run, commands)
    assert "synthetic pointer" not in run.output, run
    seen = 0
    for index in range(7):
        frame = outputs[2 + 3 * index][1]
        arguments, locals_ = outputs[3 + 3 * index][1], outputs[4 + 3 * index][1]
        if "deep_run" in frame:
            assert re.search(r"limit = 5", arguments), run
            continue
        depth = int(re.search(r"^depth = (\d+)$", arguments, re.M).group(1))
        assert depth == 5 - index and re.search(r"^limit = 5$", arguments, re.M), run
        info = re.search(r"info = \{depth = (\w+), values = \{(.*)\}\}", locals_)
        assert info and info.group(1) == str(depth), locals_
        for i, value in enumerate(v.strip() for v in info.group(2).split(",")):
            if value != "<optimized out>":
                assert int(value) == depth * i, (index, i, value, locals_)
                seen += 1
        squares = re.search(r"squares = \{(.*)\}", locals_)
        assert squares, locals_
        for i, value in enumerate(v.strip() for v in squares.group(1).split(",")):
            if value != "<optimized out>":
                assert int(value) == i * i + depth, (index, i, value, locals_)
                seen += 1
    assert seen >= 6 * 8, run


@pytest.mark.timeout(180)
def test_set_var_on_an_O2_local_in_a_mirrored_register_changes_what_the_program_computes(tmp_path):
    """At -O2 walk's `limit` is a wasm local whose slot the register cache
    mirrors; `set var` writes the slot (the translated location) and the
    target reloads mirrors from slots on resume, so the -O2 build computes
    what the -O0 build computes after the same write."""
    results = {}
    for level in ("O0", "O2"):
        stub = StubProcess.start(tmp_path / f"stub-{level}", example(f"inventory.{level}"), invoke="inventory_run",
                                 args=["3"])
        try:
            run = run_gdb_on_stub(stub, [f"break inventory.c:{WALK_LOOP}", "continue", "set var limit = 1",
                                         "p limit", "delete", "continue"])
            stub.wait(30)
        finally:
            stub.kill()
        assert "$1 = 1" in run.output, run
        results[level] = [line for line in stub.output_after_banner if line.strip()]
    assert results["O0"] == results["O2"] and results["O2"] != ["1462"], results


@pytest.mark.timeout(240)
def test_a_wasi_programs_strings_arrays_and_errno_read_right(tmp_path):
    """examples/wasi_tour.c (wasi-libc) in `escape` mode with no preopened
    directory: mkdir fails with ENOTCAPABLE (76). gdb shows the C strings,
    the array of string pointers, main's arguments and wasi-libc's errno
    (thread-local in the DWARF, plain data in a module without threads)."""
    import subprocess

    wasm = tmp_path / "wasi_tour.wasm"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O0", "-fdebug-compilation-dir=.",
                    "examples/wasi_tour.c", "-o", str(wasm)], cwd=ROOT, check=True, capture_output=True, timeout=120)
    commands = ["break report", "continue", "info args", "p errno", "bt", "up", "p attempts[1]", "p path",
                "frame 2", "p argv[1]", "p *argv@argc", "detach"]
    stub = StubProcess.start(tmp_path / "stub", wasm, args=["--", "escape", "/nonexistent"])
    try:
        run = run_gdb_on_stub(stub, commands)
    finally:
        stub.kill()
    outputs = [text for _, text in command_outputs(run, commands)]
    assert re.search(r'what = 0x[0-9a-f]+ "mkdir \.\./created_outside"\nresult = -1', outputs[2]), run
    assert outputs[3].strip().endswith("= 76"), run
    assert re.search(r"#2 +0x[0-9a-f]+ in main \(argc=3, argv=0x[0-9a-f]+\)", outputs[4]), run
    assert '"sub/../../outside.txt"' in outputs[6] and '"/nonexistent/../created_outside' in outputs[7], run
    assert outputs[9].strip().endswith('"escape"'), run
    assert re.search(r'\{0x[0-9a-f]+ "[^"]*wasi_tour\.wasm", 0x[0-9a-f]+ "escape", 0x[0-9a-f]+ "/nonexistent"\}',
                     outputs[10]), run
