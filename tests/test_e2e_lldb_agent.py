"""End-to-end: lldb-22's watchpoints and conditional breakpoints, both dialects.

lldb has no agent bytecode: its breakpoint conditions are evaluated in lldb
at every hit (docs/agent.md), so these check that they give the right stop.
Its watchpoints are ``Z2``/``Z3``/``Z4`` like gdb's, after lldb asked
``qWatchpointSupportInfo``; a stop reports ``watch:ADDR`` after the write,
which lldb shows as "Watchpoint N hit: old value / new value".

Native dialect (``gdb-remote``): lldb sees no C variables in our images yet,
so the watched variable is named by its address (the guest's ``address_of``)
and conditions use registers.  wasm dialect (``--plugin wasm``): lldb reads
the module's DWARF, so ``watchpoint set variable`` and C conditions work.
"""
from __future__ import annotations

import re

import pytest

import codemem
from gdbstub import runner
from stubproc import example, run_lldb, stub  # noqa: F401  (stub is a fixture)

AGENT = example("agent.O0")
WASM = ("--dialect", "wasm")
RETURN_LINE = "agent.c:48"  # `return arr[(n - 1) & 63];`, the statement after `watched = n;`


@pytest.fixture(scope="module")
def addresses() -> dict[str, int]:
    engine = codemem.Engine()
    store = codemem.Store(engine)
    instance = runner.instantiate(store, codemem.Module(engine, AGENT.read_bytes()))
    found = {name: instance.exports["address_of"](k) for k, name in enumerate(("watched", "arr", "items", "counter"))}
    store.close()
    return found


def detail(run, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


def test_native_watchpoint_set_expression_reports_old_and_new_value(stub, addresses):
    s = stub(AGENT, invoke="fill_loop", args=["1000"])
    run = run_lldb(s, [f"watchpoint set expression -w write -s 4 -- {addresses['watched']}", "continue", "continue"])
    assert not run.timed_out, detail(run, s)
    assert re.search(r"Watchpoint 1 hit:\nold value: 0\nnew value: 1000", run.output), detail(run, s)
    assert re.search(rf"stop reason = watchpoint 1\n.*fill_loop\(n=1000\) at {RETURN_LINE}", run.output), detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)
    assert "packet <- b'qWatchpointSupportInfo" in s.stderr, s.describe()


def test_native_read_watchpoint(stub, addresses):
    s = stub(AGENT, invoke="read_twice", args=["21"])
    run = run_lldb(s, [f"watchpoint set expression -w read -s 4 -- {addresses['counter']}", "continue",
                       "continue", "watchpoint delete 1", "continue"])
    assert not run.timed_out, detail(run, s)
    assert run.output.count("stop reason = watchpoint 1") == 2, detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)


def test_native_conditional_breakpoint_is_evaluated_by_lldb(stub):
    s = stub(AGENT, invoke="cond_loop", args=["100"])
    run = run_lldb(s, ["breakpoint set -n f --skip-prologue false -c '*(int *)$rsi == 42'", "continue",
                       "memory read -s 4 -f d -c 1 $rsi", "breakpoint delete 1", "continue"])
    assert not run.timed_out, detail(run, s)
    assert re.search(r"stop reason = breakpoint 1\.1", run.output), detail(run, s)
    assert re.search(r"^0x[0-9a-f]+: 42$", run.output, re.M), detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)
    # lldb sent a plain Z0: the condition stayed in lldb.
    assert not re.search(r"Z0,[0-9a-f]+,1;X", s.stderr), s.describe()


def test_wasm_watchpoint_set_variable_and_expression(stub):
    s = stub(AGENT, invoke="fill_loop", args=["200", *WASM])
    run = run_lldb(s, ["watchpoint set expression -w write -s 4 -- &arr[3]", "continue", "continue",
                       "watchpoint delete 1", "watchpoint set variable watched", "continue", "continue"])
    assert not run.timed_out, detail(run, s)
    # An expression watchpoint shows raw words (hex): arr[3] = 3, then 67.
    assert re.search(r"Watchpoint 1 hit:\nold value: 0x00000000\nnew value: 0x00000003", run.output), \
        detail(run, s)
    assert re.search(r"Watchpoint 1 hit:\nold value: 0x00000003\nnew value: 0x00000043", run.output), \
        detail(run, s)
    assert re.search(r"Watchpoint 2 hit:\nold value: 0\nnew value: 200", run.output), detail(run, s)
    assert re.search(rf"stop reason = watchpoint 2\n.*fill_loop\(n=200\) at {RETURN_LINE}", run.output), \
        detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)


def test_wasm_conditional_breakpoint_on_a_c_variable(stub):
    s = stub(AGENT, invoke="cond_loop", args=["100", *WASM])
    run = run_lldb(s, ["b -n f -c 'i == 42'", "c", "frame variable", "breakpoint delete 1", "c"])
    assert not run.timed_out, detail(run, s)
    assert re.search(r"stop reason = breakpoint 1\.1\n.*f\(i=42\) at agent\.c:34", run.output), detail(run, s)
    assert "(int) i = 42" in run.output, detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)


def test_wasm_watchpoint_outside_linear_memory_is_refused(stub):
    s = stub(AGENT, invoke="fill_loop", args=["10", *WASM])
    run = run_lldb(s, ["watchpoint set expression -w write -s 4 -- 0x7fff0000"])
    assert not run.timed_out, detail(run, s)
    assert "Watchpoint creation failed (addr=0x7fff0000, size=4)" in run.output, detail(run, s)
    # The refusal's reason is logged between the packet and its reply.
    assert re.search(r"packet <- b'Z2,7fff0000,4'\n(.*not inside linear memory.*\n)?packet -> b'E16",
                     s.stderr), s.describe()
