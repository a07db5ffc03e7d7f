"""End-to-end: lldb-22's watchpoints and conditional breakpoints, both dialects.

lldb has no agent bytecode: its breakpoint conditions are evaluated in lldb
at every hit (docs/agent.md), so these check that they give the right stop.
Its watchpoints are ``Z2``/``Z3``/``Z4`` like gdb's, after lldb asked
``qWatchpointSupportInfo``; a stop reports ``watch:ADDR`` after the write,
which lldb shows as "Watchpoint N hit: old value / new value".

Native dialect (``gdb-remote``): watched variables are named by address
(the guest's ``address_of``), by C expression or by name (the x32 images carry
the translated DWARF), conditions use registers; lldb-22 has no x32 ABI, so
pointer variables read as 8 bytes there (docs/agent.md, "lldb").  wasm dialect
(``--plugin wasm``): lldb reads the module's DWARF, so ``watchpoint set
variable`` and C conditions work.
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
    assert re.search(r"packet <- b'Z2,7fff0000,4'\n(.*not inside linear memory.*\n)?packet -> b'E16", s.stderr), \
        s.describe()


def test_native_watchpoints_on_c_expressions_and_variables_by_name(stub):
    # lldb-22 sees the translated DWARF in the native view: `&arr[3]` and
    # `arr[5]` evaluate without the JIT.  An expression watchpoint's default
    # size is the target's pointer size, 8 on x86-64 (lldb has no x32 ABI),
    # and lldb splits the unaligned 8 bytes at 0x40c into aligned ranges,
    # exactly as it does against lldb-server: Z2 at 0x408 and at 0x410.
    s = stub(AGENT, invoke="fill_loop", args=["200"])
    run = run_lldb(s, ["b fill_loop", "c", "watchpoint set expression -- &arr[3]", "c", "c", "watchpoint delete 1",
                       "watchpoint set variable arr[5]", "c", "c", "watchpoint delete 2", "c"])
    assert not run.timed_out, detail(run, s)
    assert re.search(r"Watchpoint created: Watchpoint 1: addr = 0x0000040c size = 8", run.output), detail(run, s)
    assert re.search(r"packet <- b'Z2,408,8'\npacket -> b'OK'\npacket <- b'Z2,410,8'", s.stderr), s.describe()
    # The write to arr[2] hits the range at 0x408 but leaves the watched
    # bytes as they were: lldb runs on silently, as natively.
    assert re.search(r"Watchpoint 1 hit:\nold value: 0x0000000000000000\nnew value: 0x0000000000000003",
                     run.output), detail(run, s)
    assert re.search(r"Watchpoint 1 hit:\nold value: 0x0000000000000003\nnew value: 0x0000000400000003",
                     run.output), detail(run, s)
    assert re.search(r"Watchpoint 2 hit:\nold value: 0\nnew value: 5\n", run.output), detail(run, s)
    assert re.search(r"Watchpoint 2 hit:\nold value: 5\nnew value: 69\n", run.output), detail(run, s)
    assert "watchpoint -1" not in run.output, detail(run, s)
    assert run.output.count("stop reason = watchpoint 1") == 2, detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)


def test_native_pointer_variables_read_as_8_bytes_so_watch_through_a_4_byte_read(stub):
    # lldb-22 has no x32 ABI (its x86-64 address size is 8 whatever the
    # image's class or DWARF say): the 4-byte pointer `it` is read together
    # with the 4 bytes after it (`amount`), so once amount is not 0 lldb
    # cannot resolve `it->qty` at all.  Reading the pointer as 4 bytes works.
    s = stub(AGENT, invoke="run_items", args=["20"])
    refused = run_lldb(s, ["b restock", "c", "c", "c", "frame variable it", "watchpoint set variable it->qty"])
    assert not refused.timed_out, detail(refused, s)
    assert "(item *) it = 0x0000000200000520" in refused.output, detail(refused, s)
    assert "error: Watchpoint creation failed" in refused.output, detail(refused, s)
    s = stub(AGENT, invoke="run_items", args=["20"])
    run = run_lldb(s, ["b restock", "c", "c", "c", "watchpoint set expression -s 4 -- *(unsigned *)&it + 4",
                       "breakpoint delete 1", "c", "c", "watchpoint delete 1", "c"])
    assert not run.timed_out, detail(run, s)
    # items[2].qty: restock(&items[2], 2) adds 2, restock(&items[2], 10) 10.
    assert re.search(r"Watchpoint 1 hit:\nold value: 0\nnew value: 2\n", run.output), detail(run, s)
    assert re.search(r"Watchpoint 1 hit:\nold value: 2\nnew value: 12\n", run.output), detail(run, s)
    assert "exited with status = 0" in run.output, detail(run, s)
