"""End-to-end: an IDE's data breakpoint through lldb-dap-22 (Debug Adapter Protocol).

lldb-dap attaches with ``process connect --plugin wasm`` to ``serve --dialect
wasm``; the test plays the IDE (tests/dapkit.py): it finds the C global
``watched`` in the Globals scope, asks ``dataBreakpointInfo`` for it, sets a
write data breakpoint with ``setDataBreakpoints`` (lldb sends ``Z2``), continues,
and expects a ``stopped`` event with reason "data breakpoint" on the statement
after the write, with the new value readable.
"""
from __future__ import annotations

import re

import pytest

from dapkit import DapClient
from stubproc import ROOT, example, stub  # noqa: F401  (stub is a fixture)


@pytest.fixture
def dap():
    client = DapClient(cwd=str(ROOT))
    yield client
    client.close()


def test_a_dap_data_breakpoint_on_a_c_global_stops_after_the_write(stub, dap):
    s = stub(example("agent.O0"), invoke="fill_loop", args=["1000", "--dialect", "wasm"])
    capabilities = dap.request("initialize", {"adapterID": "lldb-dap", "clientID": "wasm-gdbstub-tests",
                                              "linesStartAt1": True, "columnsStartAt1": True,
                                              "pathFormat": "path"})
    assert capabilities.get("supportsDataBreakpoints")
    attach = dap.send_request("attach", {"attachCommands": [f"process connect --plugin wasm connect://{s.address}"],
                                         "stopOnEntry": True})
    dap.wait_event("initialized")
    dap.request("configurationDone")
    assert dap.response(attach)["success"]
    thread = dap.wait_event("stopped", reason="entry")["body"]["threadId"]

    frame = dap.request("stackTrace", {"threadId": thread})["stackFrames"][0]
    assert frame["name"] == "fill_loop", frame
    scopes = {scope["name"]: scope["variablesReference"] for scope in
              dap.request("scopes", {"frameId": frame["id"]})["scopes"]}
    names = [v["name"] for v in dap.request("variables", {"variablesReference": scopes["Globals"]})["variables"]]
    assert "watched" in names, names
    info = dap.request("dataBreakpointInfo", {"variablesReference": scopes["Globals"], "name": "watched"})
    assert "write" in info.get("accessTypes", []), info
    result = dap.request("setDataBreakpoints", {"breakpoints": [{"dataId": info["dataId"], "accessType": "write"}]})
    assert [b["verified"] for b in result["breakpoints"]] == [True], result

    dap.request("continue", {"threadId": thread})
    stopped = dap.wait_event("stopped", reason="data breakpoint")["body"]
    assert stopped["hitBreakpointIds"] == [result["breakpoints"][0]["id"]], stopped
    frame = dap.request("stackTrace", {"threadId": thread})["stackFrames"][0]
    assert (frame["name"], frame["source"]["name"], frame["line"]) == ("fill_loop", "agent.c", 48), frame
    value = dap.request("evaluate", {"expression": "watched", "frameId": frame["id"], "context": "watch"})
    assert value["result"] == "1000", value
    assert re.search(r"packet <- b'Z2,500,4'", s.stderr), s.describe()

    dap.request("setDataBreakpoints", {"breakpoints": []})
    dap.request("continue", {"threadId": thread})
    assert dap.wait_event("exited")["body"]["exitCode"] == 0
