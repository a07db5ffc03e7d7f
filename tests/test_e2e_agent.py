"""End-to-end: conditions and watchpoints evaluated at the patched call, with real gdb 13.

The guest is examples/agent.c (examples/build/agent.O0.wasm).  gdb sees no C
variables yet, so conditions are written over registers and raw addresses:
at ``f``'s entry site (``break *f``) its argument array is at ``$rsi``, so
``*(int *)$rsi`` is ``i``; globals are named by their linear-memory address
(the guest's ``address_of`` export, called in-process here), which the native
view mirrors at [0, size).

What is checked, on gdb's output and the stub's packet trace: gdb sends the
conditions as bytecode ("target evals"); a false condition never reaches gdb
(one stop reply per true hit); ``condition N`` and ``delete`` arrive as new
packets and take effect; an unreadable address in a condition stops and says
why; ``watch``/``watch -l``/``rwatch``/``awatch`` report Old/New values and
the line after the access; a watchpoint outside linear memory is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import codemem
from gdbstub import runner
from stubproc import example, run_gdb, stub  # noqa: F401  (stub is a fixture)

AGENT = example("agent.O0")
SOURCE_LINES = (AGENT.parent.parent / "agent.c").read_text().splitlines()


def line_of(text: str) -> int:
    found = [n for n, line in enumerate(SOURCE_LINES, 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


@pytest.fixture(scope="module")
def addresses() -> dict[str, int]:
    engine = codemem.Engine()
    store = codemem.Store(engine)
    instance = runner.instantiate(store, codemem.Module(engine, AGENT.read_bytes()))
    address_of = instance.exports["address_of"]
    names = ("watched", "arr", "items", "counter", "big")
    found = {name: address_of(k) for k, name in enumerate(names)}
    store.close()
    return found


def stop_replies(stub_process) -> list[str]:
    return re.findall(r"^packet -> b'(T[0-9a-f]{2}[^']*)'", stub_process.stderr, re.M)


def detail(run, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


def test_a_false_condition_never_stops_and_a_true_one_does(stub):
    demo = stub(AGENT, invoke="cond_loop", args=["100"])
    run = run_gdb(demo, ["break *f if *(int *)$rsi == 42", "continue", "x/dw $rsi", "info breakpoints",
                         "continue"])
    assert not run.timed_out, detail(run, demo)
    # (gdb shows f's argument since the x32 images carry variables; at the
    # entry site, before the prologue, its value is not the caller's yet.)
    assert re.search(r"^Breakpoint 1, f \(i=-?\d+\)", run.output, re.M), detail(run, demo)
    assert re.search(r":\s+42$", run.output, re.M), detail(run, demo)
    assert "(target evals)" in run.output, detail(run, demo)
    assert "breakpoint already hit 1 time" in run.output, detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    # gdb sent the condition as agent bytecode, and only the true hit stopped.
    assert any(re.search(r"Z0,[0-9a-f]+,1;X[0-9a-f]+,", line) for line in demo.packets()), demo.describe()
    assert sum("swbreak" in r for r in stop_replies(demo)) == 1, demo.describe()


def test_condition_changes_and_removal_arrive_as_new_packets(stub):
    demo = stub(AGENT, invoke="cond_loop", args=["100"])
    run = run_gdb(demo, ["break *f if *(int *)$rsi == 10", "continue", "x/dw $rsi",
                         "condition 1 *(int *)$rsi == 20 || *(int *)$rsi == 30", "continue", "x/dw $rsi",
                         "continue", "x/dw $rsi", "condition 1", "continue", "x/dw $rsi", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    seen = [int(v) for v in re.findall(r"^0x[0-9a-f]+:\s+(\d+)$", run.output, re.M)]
    # condition 1 (no expression) makes it unconditional: the next call, 31, stops.
    assert seen == [10, 20, 30, 31], detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    assert sum("swbreak" in r for r in stop_replies(demo)) == 4, demo.describe()


def test_a_condition_reading_an_unreadable_address_stops_and_says_why(stub):
    demo = stub(AGENT, invoke="cond_loop", args=["5"])
    # (gdb sees the guest through an x32 image: its addresses are 32-bit.
    # 0x70000000 lies past the linear-memory mirror and below our low area.)
    run = run_gdb(demo, ["break *f if *(int *)0x70000000 == 1", "continue", "x/dw $rsi", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    assert "could not be evaluated (cannot read memory at 0x70000000)" in run.output, detail(run, demo)
    # It stopped at the first call (the stop is gdb's to judge: gdb
    # re-evaluates and reports its own error for the condition).
    assert re.search(r"^0x[0-9a-f]+:\s+0$", run.output, re.M), detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)


def test_watch_reports_old_and_new_value_after_the_write(stub, addresses):
    demo = stub(AGENT, invoke="fill_loop", args=["1000"])
    watched = addresses["watched"]
    run = run_gdb(demo, [f"watch *(int *){watched}", "continue", "info watchpoints", "continue"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(rf"^Hardware watchpoint 1: \*\(int \*\){watched}$", run.output, re.M), detail(run, demo)
    text = run.output
    assert re.search(r"^Old value = 0\nNew value = 1000$", text, re.M), detail(run, demo)
    # Reported after the write: gdb shows the statement after `watched = n;`.
    assert re.search(rf"^fill_loop \(n=1000\) at examples/agent\.c:{line_of('return arr[(n - 1) & 63];')}$", text, re.M), \
        detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in text, detail(run, demo)
    assert any(f"watch:{watched:x}" in r for r in stop_replies(demo)), demo.describe()


def test_watch_on_an_array_element_sees_every_write_to_it(stub, addresses):
    demo = stub(AGENT, invoke="fill_loop", args=["200"])
    element = addresses["arr"] + 3 * 4
    run = run_gdb(demo, [f"watch -l *(int *){element}", "continue", "continue", "continue", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    changes = re.findall(r"^Old value = (-?\d+)\nNew value = (-?\d+)$", run.output, re.M)
    assert changes == [("0", "3"), ("3", "67"), ("67", "131")], detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)


def test_watch_on_a_struct_member(stub, addresses):
    demo = stub(AGENT, invoke="run_items", args=["20"])
    qty = addresses["items"] + 3 * 8 + 4  # items[3].qty
    run = run_gdb(demo, [f"watch *(int *){qty}", "continue", "bt 1", "continue", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    changes = re.findall(r"^Old value = (-?\d+)\nNew value = (-?\d+)$", run.output, re.M)
    # run_items zeroes qty (no change from 0: gdb does not stop), then
    # restock(&items[3], 3) and restock(&items[3], 11) add.
    assert changes == [("0", "3"), ("3", "14")], detail(run, demo)
    item = addresses["items"] + 3 * 8
    assert re.search(rf"^#0\s+.*restock \(it={item:#x} <items\+24>, amount=3\)", run.output, re.M), detail(run, demo)


def test_rwatch_reports_each_read(stub, addresses):
    demo = stub(AGENT, invoke="read_twice", args=["21"])
    counter = addresses["counter"]
    run = run_gdb(demo, [f"rwatch *(int *){counter}", "continue", "continue", "continue"])
    assert not run.timed_out, detail(run, demo)
    # `counter = n` writes (no stop), `return counter + counter` reads twice.
    assert run.output.count(f"Hardware read watchpoint 1: *(int *){counter}\n\nValue = 21") == 2, detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    assert [r for r in stop_replies(demo) if "watch:" in r] == \
        [r for r in stop_replies(demo) if f"rwatch:{counter:x};" in r + ";"] and \
        sum("rwatch:" in r for r in stop_replies(demo)) == 2, demo.describe()


def test_awatch_reports_the_write_then_the_reads(stub, addresses):
    demo = stub(AGENT, invoke="read_twice", args=["21"])
    counter = addresses["counter"]
    run = run_gdb(demo, [f"awatch *(int *){counter}", "continue", "continue", "continue", "continue"])
    assert not run.timed_out, detail(run, demo)
    prefix = f"Hardware access (read/write) watchpoint 1: *(int *){counter}\n\n"
    assert prefix + "Old value = 0\nNew value = 21" in run.output, detail(run, demo)
    assert run.output.count(prefix + "Value = 21") == 2, detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    assert sum("awatch:" in r for r in stop_replies(demo)) == 3, demo.describe()


def test_watch_sees_memory_fill_and_memory_copy(stub, addresses):
    demo = stub(AGENT, invoke="bulk", args=["100"])
    big = addresses["big"]
    run = run_gdb(demo, [f"watch *(int *){big + 40}", f"watch *(int *){big + 2048 + 40}", "continue",
                         "continue", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    changes = re.findall(r"^Old value = (-?\d+)\nNew value = (-?\d+)$", run.output, re.M)
    assert changes == [("0", "16843009"), ("0", "16843009")], detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)


def test_a_watchpoint_outside_linear_memory_is_refused(stub):
    demo = stub(AGENT, invoke="fill_loop", args=["10"])
    # The guest stack is readable memory, but not linear memory (`long` is
    # 4 bytes in the x32 image gdb reads).
    run = run_gdb(demo, ["python gdb.execute('watch *(long *)%d' % int(gdb.parse_and_eval('$rsp')))",
                         "continue"])
    assert not run.timed_out, detail(run, demo)
    assert "Could not insert hardware watchpoint" in run.output, detail(run, demo)
    # The refusal's reason is logged between the packet and its reply.
    assert re.search(r"packet <- b'Z2,[0-9a-f]+,4'\n(.*not inside linear memory.*\n)?packet -> b'E16'",
                     demo.stderr), demo.describe()


def test_dprintf_in_the_agent_prints_on_the_stubs_stdout_without_stopping(stub):
    demo = stub(AGENT, invoke="cond_loop", args=["5"])
    run = run_gdb(demo, ["set dprintf-style agent", r'dprintf *f,"f(%d) %c\n", *(int *)$rsi, 120',
                         "info breakpoints", "continue"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(r"^1\s+dprintf .*\n\s+agent-printf ", run.output, re.M), detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    demo.wait()
    printed = [line for line in demo.output_after_banner if line.startswith("f(")]
    assert printed == ["f(0) x", "f(1) x", "f(2) x", "f(3) x", "f(4) x"], detail(run, demo)
    # The commands went with the breakpoint and no hit was reported.
    assert any(";cmds:" in line for line in demo.packets()), demo.describe()
    assert not any("swbreak" in r for r in stop_replies(demo)), demo.describe()


def test_dprintf_with_a_condition_prints_only_when_it_holds(stub):
    demo = stub(AGENT, invoke="cond_loop", args=["6"])
    run = run_gdb(demo, ["set dprintf-style agent", r'dprintf *f,"hit %d\n", *(int *)$rsi',
                         "condition 1 *(int *)$rsi % 2 == 1", "continue"])
    assert not run.timed_out, detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    demo.wait()
    assert [line for line in demo.output_after_banner if line.startswith("hit")] == ["hit 1", "hit 3", "hit 5"], \
        detail(run, demo)


@pytest.fixture(scope="module")
def watch_stdin_wasm(tmp_path_factory):
    """tests/data/watch_stdin.c built with clang-19 and wasi-libc."""
    import subprocess

    target = tmp_path_factory.mktemp("watch_stdin") / "watch_stdin.wasm"
    source = Path(__file__).resolve().parent / "data" / "watch_stdin.c"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O0", str(source), "-o", str(target)],
                   check=True, capture_output=True)
    return target


def test_watch_sees_a_host_functions_write_wasi_fd_read(stub, watch_stdin_wasm):
    engine = codemem.Engine()
    store = codemem.Store(engine)
    inbuf = runner.instantiate(store, codemem.Module(engine, watch_stdin_wasm.read_bytes())) \
        .exports["inbuf_address"]()
    store.close()
    demo = stub(watch_stdin_wasm, log_packets=True, stdin_text="typed\n")
    run = run_gdb(demo, [f"watch *(char *){inbuf + 1}", "continue", "bt 2", "delete", "continue"])
    assert not run.timed_out, detail(run, demo)
    assert re.search(r"^Old value = 0 '\\000'\nNew value = 121 'y'$", run.output, re.M), detail(run, demo)
    assert "[Inferior 1 (process 1) exited normally]" in run.output, detail(run, demo)
    assert any(f"watch:{inbuf + 1:x}" in r for r in stop_replies(demo)), demo.describe()
    demo.wait()
    assert "read 6 bytes: typed" in demo.output_after_banner, demo.describe()
