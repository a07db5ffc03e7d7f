"""End-to-end: an IDE session through lldb-dap-22 in the native view.

The test plays VS Code (tests/dapkit.py, a minimal Debug Adapter Protocol
client): lldb-dap-22 attaches to ``wasm-gdbstub serve`` with
``attachCommands``, the commands of the ``lldb:`` line the stub prints (the
launch.json of the README does the same).  On tests/data/dap_program.c, a WASI
program built with clang-19:

``setBreakpoints`` by file and line, the ``stopped`` event, ``stackTrace`` with
the source's path, ``scopes``, ``variables`` with a struct expanded (a nested
struct, a char array), ``stepIn`` into a function, ``next``, ``evaluate`` of
an expression over a local, ``setVariable`` on a local (the program then
computes with it), ``stepOut``, the guest's stdout as ``output`` events
(forwarded by the stub as ``O`` packets), ``disconnect``.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dapkit import DapClient
from stubproc import ROOT, stub  # noqa: F401  (stub is a fixture)

SOURCE = ROOT / "tests" / "data" / "dap_program.c"


def source_line(text: str) -> int:
    found = [n for n, line in enumerate(SOURCE.read_text().splitlines(), 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]




@pytest.fixture
def program(tmp_path) -> Path:
    out = tmp_path / "dap_program.wasm"
    subprocess.run([shutil.which("clang-19") or "clang-19", "--target=wasm32-wasi", "-g", "-O0",
                    "-fdebug-compilation-dir=.", str(SOURCE.relative_to(ROOT)), "-o", str(out)],
                   check=True, cwd=ROOT, capture_output=True, text=True)
    return out


@pytest.fixture
def dap():
    client = DapClient(cwd=str(ROOT))
    yield client
    client.close()


def variables(dap: DapClient, reference: int) -> dict[str, dict]:
    return {v["name"]: v for v in dap.request("variables", {"variablesReference": reference})["variables"]}


def top_frame(dap: DapClient, thread: int) -> dict:
    return dap.request("stackTrace", {"threadId": thread})["stackFrames"][0]


def locals_of(dap: DapClient, frame: dict) -> dict[str, dict]:
    scopes = {scope["name"]: scope["variablesReference"]
              for scope in dap.request("scopes", {"frameId": frame["id"]})["scopes"]}
    return variables(dap, scopes["Locals"]), scopes["Locals"]


def stdout_text(dap: DapClient) -> str:
    return "".join(e["body"]["output"] for e in dap.events_seen
                   if e.get("event") == "output" and e["body"].get("category") == "stdout")


@pytest.mark.timeout(180)
def test_an_ide_session_through_lldb_dap_breaks_steps_inspects_and_changes_a_c_program(stub, dap, program):
    s = stub(program)
    first_call = [n for n, line in enumerate(SOURCE.read_text().splitlines(), 1)
                  if "total += area(&b);" in line][0]
    area_body = source_line("int w = b->width;")
    area_return = source_line("return w * w;")
    after_first_call = source_line("b.width = 6;")

    dap.request("initialize", {"adapterID": "lldb-dap", "clientID": "wasm-gdbstub-tests", "linesStartAt1": True,
                               "columnsStartAt1": True, "pathFormat": "path"})
    attach = dap.send_request("attach", {"attachCommands": s.lldb_attach_commands(), "stopOnEntry": True})
    dap.wait_event("initialized")
    placed = dap.request("setBreakpoints", {"source": {"path": str(SOURCE)},
                                             "breakpoints": [{"line": first_call}]})["breakpoints"]
    assert [(b["verified"], b["line"]) for b in placed] == [(True, first_call)], placed
    dap.request("configurationDone")
    assert dap.response(attach)["success"], s.describe()
    thread = dap.wait_event("stopped", reason="entry")["body"]["threadId"]

    # Continue to the breakpoint; what the program printed on the way is an output event.
    dap.request("continue", {"threadId": thread})
    stopped = dap.wait_event("stopped", reason="breakpoint")["body"]
    assert stopped["hitBreakpointIds"] == [placed[0]["id"]], stopped
    assert stdout_text(dap) == "start first\n", dap.events_seen
    frame = top_frame(dap, thread)
    assert (frame["name"], frame["line"]) == ("main", first_call), frame
    assert Path(frame["source"]["path"]) == SOURCE, frame

    # Locals, with the struct expanded two levels.
    local, _ = locals_of(dap, frame)
    assert local["total"]["value"] == "0", local
    box = variables(dap, local["b"]["variablesReference"])
    assert box["width"]["value"] == "5" and box["tag"]["value"] == '"first"', box
    corner = variables(dap, box["corner"]["variablesReference"])
    assert (corner["x"]["value"], corner["y"]["value"]) == ("3", "4"), corner

    # Into area(), a member through the pointer, a step, a local changed.
    dap.request("stepIn", {"threadId": thread})
    dap.wait_event("stopped", reason="step")
    frame = top_frame(dap, thread)
    assert (frame["name"], frame["line"]) == ("area", area_body), frame
    dap.request("next", {"threadId": thread})
    dap.wait_event("stopped", reason="step")
    frame = top_frame(dap, thread)
    assert (frame["name"], frame["line"]) == ("area", area_return), frame
    local, reference = locals_of(dap, frame)
    assert local["w"]["value"] == "5", local
    # (Not `b->width`: lldb-22 has no x32 ABI and reads the pointer b as 8
    # bytes, docs/clients.md.)
    value = dap.request("evaluate", {"expression": "w * 2 + 1", "frameId": frame["id"], "context": "watch"})
    assert value["result"] == "11", value
    changed = dap.request("setVariable", {"variablesReference": reference, "name": "w", "value": "7"})
    assert changed["value"] == "7", changed

    # Out to main: area returned 7 * 7.
    dap.request("stepOut", {"threadId": thread})
    dap.wait_event("stopped", reason="step")
    frame = top_frame(dap, thread)
    assert frame["name"] == "main" and frame["line"] in (first_call, after_first_call), frame
    if frame["line"] == first_call:
        dap.request("next", {"threadId": thread})
        dap.wait_event("stopped", reason="step")
        frame = top_frame(dap, thread)
    assert frame["line"] == after_first_call, frame
    local, reference = locals_of(dap, frame)
    assert local["total"]["value"] == "49", local
    dap.request("setVariable", {"variablesReference": reference, "name": "total", "value": "100"})

    # The program goes on with total = 100: 100 + 6 * 6.
    dap.request("setBreakpoints", {"source": {"path": str(SOURCE)}, "breakpoints": []})
    dap.request("continue", {"threadId": thread})
    assert dap.wait_event("exited")["body"]["exitCode"] == 0
    assert stdout_text(dap) == "start first\ntotal 136\n", dap.events_seen
    dap.request("disconnect", {"terminateDebuggee": False})
    assert s.wait() == 0, s.describe()
    # The stub's own stdout has the program's output too (docs/clients.md).
    assert "total 136" in s.output_after_banner, s.describe()


@pytest.mark.timeout(120)
def test_an_ide_attaches_with_command_source_of_the_file_serve_writes(stub, dap, program, tmp_path):
    # README's launch.json: `serve --lldb-commands FILE`, attachCommands
    # ["command source FILE"] (the file's path does not change between runs).
    commands = tmp_path / "attach.lldb"
    s = stub(program, args=["--lldb-commands", str(commands)])
    assert commands.read_text().splitlines() == s.lldb_attach_commands()
    printed = source_line('printf("total %d\\n", total);')
    dap.request("initialize", {"adapterID": "lldb-dap", "clientID": "wasm-gdbstub-tests", "linesStartAt1": True,
                               "columnsStartAt1": True, "pathFormat": "path"})
    attach = dap.send_request("attach", {"attachCommands": [f"command source {commands}"], "stopOnEntry": True})
    dap.wait_event("initialized")
    dap.request("setBreakpoints", {"source": {"path": str(SOURCE)}, "breakpoints": [{"line": printed}]})
    dap.request("configurationDone")
    assert dap.response(attach)["success"], s.describe()
    thread = dap.wait_event("stopped", reason="entry")["body"]["threadId"]
    dap.request("continue", {"threadId": thread})
    dap.wait_event("stopped", reason="breakpoint")
    frame = top_frame(dap, thread)
    assert (frame["name"], frame["line"]) == ("main", printed), frame
    assert locals_of(dap, frame)[0]["total"]["value"] == "61"
    dap.request("continue", {"threadId": thread})
    assert dap.wait_event("exited")["body"]["exitCode"] == 0
    assert stdout_text(dap) == "start first\ntotal 61\n", dap.events_seen
    dap.request("disconnect", {})
