"""End-to-end: position-independent debug images placed by their load bias,
and a real-size module (issue 13).

* gdb 13 on the demo: the module's image is one ET_DYN per EngineCode, linked
  at gdbstub.images.IMAGE_LINK_ADDRESS; the stub's ``qXfer:libraries-svr4``
  gives the Store's code base as ``l_addr``, and gdb's symbols, CFI, line
  table, ``break FILE:LINE``, ``info line``, ``bt`` (through every frame into
  the runtime image) and ``finish`` all land on the Store's addresses.  A
  second run of the same module reuses the same file (content-addressed).
* lldb-22 with its default settings (5 s packet timeout) on the generated
  real-size module (scripts/bench/bigmodule.py: 2,000 functions, clang -g -O0,
  built here into the test's directory): ``b f_last`` is set (one ``Z0``,
  answered from the frame table in place) and hit, in the wasm dialect and in
  the native one (lldb reads the cached image from disk).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import stubproc
from gdbstub.images import IMAGE_LINK_ADDRESS
from stubproc import StubProcess, run_gdb, run_lldb, section, stub  # noqa: F401  (stub is a fixture)
from test_e2e_gdb import assert_clean_backtrace, detail, mark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import bigmodule  # noqa: E402

DEMO_SOURCE = (ROOT / "examples" / "demo.c").read_text().splitlines()
CALL_SQUARE = next(n for n, line in enumerate(DEMO_SOURCE, 1) if "total += square(i);" in line)
#: Building the real-size module (clang, ~14 s) and compiling it cold (several
#: seconds) on a loaded 2-core machine.
REAL_SIZE_TIMEOUT = 900


def loaded_module_image(run, stub_process) -> tuple[int, Path]:
    """(where gdb placed the module image's code, the image's path), from
    ``info sharedlibrary``."""
    # "target:" when gdb read it over vFile; a loopback client reads it by its path.
    found = re.findall(r"^(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+Yes\s+(?:target:)?(\S+/demo\.elf)$", run.output, re.M)
    assert len(found) == 1, detail(run, stub_process)
    return int(found[0][0], 16), Path(found[0][1])


def elf_symbol(image: Path, name: str) -> tuple[int, int]:
    """(link address, size) of symbol ``name`` of ``image``."""
    with open(image, "rb") as handle:
        (symbol,) = ELFFile(handle).get_section_by_name(".symtab").get_symbol_by_name(name)
        return symbol["st_value"], symbol["st_size"]


def test_gdb_places_the_position_independent_image_at_the_stores_base(stub):
    demo = stub()
    run = run_gdb(demo, ["info sharedlibrary", mark("address"), "info address square",
                         f"break demo.c:{CALL_SQUARE}", mark("infoline"),
                         f"info line demo.c:{CALL_SQUARE}", mark("go"), "continue", "break square", "continue",
                         mark("bt"), "bt", mark("finish"), "finish", mark("after"), "p/x $pc", "detach"])
    assert not run.timed_out, detail(run, demo)
    base, image = loaded_module_image(run, demo)
    assert image.is_file()
    # Position independent: linked at IMAGE_LINK_ADDRESS (the file never
    # names the Store's address), placed by the load bias the stub reports.
    with open(image, "rb") as handle:
        elf = ELFFile(handle)
        assert elf["e_type"] == "ET_DYN"
        assert elf.get_section_by_name(".text")["sh_addr"] == IMAGE_LINK_ADDRESS
    bias = base - IMAGE_LINK_ADDRESS
    assert bias > 0
    square = bias + elf_symbol(image, "square")[0]
    assert f'Symbol "square" is a function at address {square:#x}.' in section(run, "address"), detail(run, demo)
    # gdb's line table, breakpoints, unwinding and `finish` at the Store's addresses.
    line = re.search(rf'Line {CALL_SQUARE} of "examples/demo\.c" starts at address (0x[0-9a-f]+) '
                     r"<sum_of_squares\+\d+>", section(run, "infoline"))
    assert line and int(line.group(1), 16) > base, detail(run, demo)
    assert f"Breakpoint 1, sum_of_squares (n=10) at examples/demo.c:{CALL_SQUARE}" in section(run, "go")
    bt = section(run, "bt")
    assert re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", bt, re.M) == ["square", "sum_of_squares", "run",
                                                                               "cm_enter"], detail(run, demo)
    assert_clean_backtrace(bt, run)
    assert re.search(rf"^0x[0-9a-f]+ in sum_of_squares \(n=10\) at examples/demo\.c:{CALL_SQUARE}$",
                     section(run, "finish"), re.M), detail(run, demo)
    pc = int(re.search(r"= (0x[0-9a-f]+)", section(run, "after")).group(1), 16)
    caller, size = elf_symbol(image, "sum_of_squares")
    assert bias + caller < pc < bias + caller + size

    # Another run with the same cache (another process): the same file.  (Its
    # code may well get the same low address: codemem.lowmem places Stores
    # below 4 GiB deterministically.)
    again = StubProcess.start(demo.cache_dir.parent)
    try:
        rerun = run_gdb(again, ["info sharedlibrary", "detach"])
    finally:
        again.kill()
    assert not rerun.timed_out, detail(rerun, again)
    _, other_image = loaded_module_image(rerun, again)
    assert other_image == image


@pytest.fixture(scope="module")
def real_size(tmp_path_factory) -> Path:
    """The generated real-size module (the benchmarks'), built once here."""
    wasm, _native = bigmodule.build(tmp_path_factory.mktemp("bigmodule"))
    return wasm


def start_real_size(workdir: Path, wasm: Path, monkeypatch, *extra: str) -> StubProcess:
    monkeypatch.setattr(stubproc, "BANNER_TIMEOUT", REAL_SIZE_TIMEOUT)  # a cold compile and image build
    return StubProcess.start(workdir, wasm, invoke=bigmodule.ENTRY, args=["1", *extra], log_packets=False)


@pytest.mark.timeout(REAL_SIZE_TIMEOUT)
def test_lldb_with_default_settings_sets_and_hits_a_breakpoint_in_the_real_size_module(
        real_size, tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("lldb-wasm")
    s = start_real_size(work, real_size, monkeypatch, "--dialect", "wasm")
    try:
        # No `settings set plugin.process.gdb-remote.packet-timeout`: lldb-22's 5 s default.
        run = run_lldb(s, [f"breakpoint set --name {bigmodule.LAST_FUNCTION}", "c", "bt", "detach"], timeout=300)
    finally:
        s.kill()
    out = f"{run}\n---\n{s.describe()}"
    assert not run.timed_out, out
    assert re.search(r"Breakpoint 1: where = \S+`f_last \+ \d+ at bigmodule\.c:\d+", run.output), out
    assert "stop reason = breakpoint 1.1" in run.output and "f_last(seed=2000, depth=0)" in run.output, out
    assert re.search(r"frame #1: 0x[0-9a-f]+ \S+`run\(n=1\) at bigmodule\.c:\d+", run.output), out
    assert "Process 1 detached" in run.output, out
    assert "timed out" not in run.output and "failed to set breakpoint" not in run.output, out


@pytest.mark.timeout(REAL_SIZE_TIMEOUT)
def test_gdb_and_lldb_break_in_the_real_size_module_through_its_cached_image(
        real_size, tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("native")
    s = start_real_size(work, real_size, monkeypatch)
    try:
        run = run_gdb(s, [f"break {bigmodule.LAST_FUNCTION}", "continue", mark("bt"), "bt", "kill"], timeout=300)
    finally:
        s.kill()
    out = detail(run, s)
    assert not run.timed_out, out
    assert re.search(r"^Breakpoint 1, f_last \(seed=2000, depth=0\) at \S*bigmodule\.c:\d+$", run.output, re.M), out
    bt = section(run, "bt")
    assert re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", bt, re.M) == ["f_last", "run", "cm_enter"], out
    # The second stub of the same module reads its image from the cache, and
    # lldb (the banner's line: the image from disk, slid to the Store) hits too.
    s = start_real_size(work, real_size, monkeypatch)
    try:
        run = run_lldb(s, [f"breakpoint set --name {bigmodule.LAST_FUNCTION}", "c", "bt", "kill"], timeout=300)
    finally:
        s.kill()
    out = f"{run}\n---\n{s.describe()}"
    assert "stop reason = breakpoint 1.1" in run.output, out
    assert re.search(r"frame #0: 0x[0-9a-f]+ \S+\.elf`f_last(\(seed=2000, depth=0\))? at bigmodule\.c:\d+",
                     run.output), out
    assert re.search(r"frame #1: 0x[0-9a-f]+ \S+\.elf`run(\(n=1\))? at bigmodule\.c:\d+", run.output), out
