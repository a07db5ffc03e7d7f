"""lldb-22 attaching to one Store of many, in both dialects (docs/lldb.md).

lldb's platform mode: ``platform select remote-gdb-server``, ``platform
connect connect://HOST:PORT`` (the host's process list is lldb's
``platform process list``), then ``process attach --pid PID``: lldb asks the
platform for a gdb-remote server (``qLaunchGDBServer``), is given the host's
own port, connects a second time and attaches with ``vAttach``.  The wasm
dialect's lldb plugin attaches the same way (``process attach --plugin wasm``).
"""
from __future__ import annotations

import os
import re

import pytest

from hostkit import LoopHost, loop_host  # noqa: F401 (fixture)
from stubproc import LLDB, ClientRun, finish_client, start_client

pytestmark = pytest.mark.timeout(180)


def run_lldb(commands: list[str], timeout: float = 90) -> ClientRun:
    argv = [LLDB, "--no-lldbinit", "--batch"]
    for command in commands:
        argv += ["-o", command]
    return finish_client(start_client(argv, env=dict(os.environ, TERM="dumb")), argv, timeout)


def platform(address: str) -> list[str]:
    return ["platform select remote-gdb-server", f"platform connect connect://{address}"]


def test_lldb_lists_the_stores_and_attaches_one_in_the_native_view(loop_host):
    host = loop_host(long_workers=("a",), short_workers=1)
    a = host.wait_for("a")
    images = host._with_store(a, lambda store: host.host.images.for_store(store))
    image, slide = images[0].path, images[0].load_bias  # position independent: placed by its load bias
    images[0].data  # on disk for lldb
    run = run_lldb([*platform(host.address), "platform process list", f"process attach --pid {a}",
                    "process plugin packet monitor stores",
                    f"target modules add {image}", f"target modules load --file {image} --slide {slide:#x}",
                    "thread backtrace", "detach"])
    out = run.output
    assert re.search(rf"^{a}\s+0\s+0\s+x86_64-pc-unknown\s+bench_loop\.O0:call_loop", out, re.M), str(run)
    assert f"Process {a} stopped" in out and "stop reason = signal SIGSTOP" in out, str(run)
    assert f"image {image} (target modules load --slide {slide:#x})" in out, str(run)
    assert re.search(r"frame #0: 0x[0-9a-f]+ bench_loop\.O0\.elf`(tick|call_loop)", out), str(run)
    assert f"Process {a} detached" in out, str(run)
    assert run.returncode == 0, str(run)
    assert host.host.owner_of(a) is None and host.pristine(a) is True


def test_lldb_attaches_one_store_with_the_wasm_plugin_and_sees_source_and_variables(loop_host):
    host = loop_host(long_workers=("a",), short_workers=1, dialect="wasm")
    a = host.wait_for("a")
    run = run_lldb([*platform(host.address), "platform process list", f"process attach --plugin wasm --pid {a}",
                    "thread backtrace", "image list", "detach"])
    out = run.output
    assert re.search(rf"^{a}\s+0\s+0\s+x86_64-pc-unknown\s+bench_loop\.O0:call_loop", out, re.M), str(run)
    assert re.search(r"frame #0: 0x40000000000[0-9a-f]+ bench_loop\.O0\.wasm`(tick|call_loop)\(.*\) at bench_loop\.c:\d+",
                     out), str(run)
    assert "bench_loop.O0.wasm (0x4000000000000000)" in out, str(run)
    assert f"Process {a} detached" in out, str(run)
    assert run.returncode == 0, str(run)
    assert host.pristine(a) is True


def test_lldb_gets_the_reason_when_the_store_is_taken(loop_host, tmp_path):
    """lldb shows error strings: attaching a Store another client holds says so."""
    from hostkit import GdbSync, start_gdb
    host = loop_host(long_workers=("a",), short_workers=0)
    a = host.wait_for("a")
    sync = GdbSync(tmp_path / "sync")
    gdb, argv = start_gdb(host.address, [f"attach {a}", *sync.gdb_commands("holding"), "detach"])
    try:
        assert sync.reached("holding")
        run = run_lldb([*platform(host.address), f"process attach --pid {a}"])
        assert f"Store {a} is being debugged by another client" in run.output, str(run)
    finally:
        sync.resume("holding")
    assert f"[Inferior 1 (process {a}) detached]" in finish_client(gdb, argv, 60).output
