"""Caller frames' C frame bases through the frame-base window (gdbstub/frame_bases.py).

Unit tests on byte literals (the CFI rule, the DWARF operation, the window's
words), then end to end with gdb 13: every frame of a 100-deep recursion
shows its own values while gdb reads no frame base from memory.
"""
from __future__ import annotations

import re
import pytest

from codemem.lowmem import FRAME_BASE_WINDOW, FRAME_BASE_WINDOW_START, LOW_CEILING, LowAddressSpace
from gdbstub import frame_bases
from gdbstub.frame_bases import pack_slots, unpack_slots, window_address
from stubproc import ROOT, StubProcess, example, run_gdb

DEEP_BOTTOM = next(n for n, line in enumerate((ROOT / "examples" / "deep.c").read_text().splitlines(), 1)
                   if "return info.values[3] + squares[7];" in line)


# ------------------------------------------------------------------ bytes
def test_the_cfi_rule_puts_a_callers_es_at_the_window_word_of_the_callees_cfa():
    # DW_CFA_expression body: constu 0x3ffffff; and; constu 0xfc000000; or
    assert frame_bases.CFI_RULE == ("es", bytes.fromhex("10ffffff1f1a10808080e00f21"))
    assert FRAME_BASE_WINDOW_START == 0xFC000000 and FRAME_BASE_WINDOW == 64 << 20
    assert FRAME_BASE_WINDOW_START + FRAME_BASE_WINDOW == LOW_CEILING == 1 << 32


def test_the_frame_base_in_a_caller_frame_is_es_plus_zero():
    assert frame_bases.FRAME_BASE_IN_REGISTER == bytes.fromhex("923200")  # DW_OP_bregx 50 0


def test_a_cfa_maps_to_its_offset_modulo_the_window_above_its_start():
    assert window_address(0x80001230) == 0xFC001230
    assert window_address(0x83FFFFF0) == 0xFFFFFFF0
    assert window_address(0x84000000) == 0xFC000000


def test_slot_records_round_trip_sorted_by_function():
    data = pack_slots({0x200: -96, 0x10: -80})
    assert data == bytes.fromhex("10000000b0ffffff" "00020000a0ffffff")
    assert unpack_slots(data + b"\x01") == {0x10: -80, 0x200: -96}


def test_a_window_word_stands_for_the_one_stack_address_congruent_to_it():
    stack = (0x80100000, 0x80900000)  # 8 MiB
    assert frame_bases.cfa_of(window_address(0x80800F40), *stack) == 0x80800F40
    assert frame_bases.cfa_of(window_address(0x80100000), *stack) == 0x80100000
    assert frame_bases.cfa_of(window_address(0x80900000), *stack) is None  # congruent address above the stack
    assert frame_bases.cfa_of(window_address(0x80800F40), 0x80000000, 0x80000000 + FRAME_BASE_WINDOW + 0x1000) \
        is None  # a stack larger than the window: two candidates


def test_the_window_holds_each_callers_frame_base_at_its_callees_cfa_and_zeros_elsewhere():
    bases = {window_address(0x80800F40): 0xFFFF_FF80, window_address(0x80801000): 0x1234}
    read = lambda address, length: frame_bases.read_window(address, length, bases.get)  # noqa: E731
    assert read(window_address(0x80800F40), 8) == bytes.fromhex("80ffffff00000000")
    assert read(window_address(0x80801000), 4) == bytes.fromhex("34120000")
    # a line as gdb's stack cache reads it: the word inside, zeros around it
    line = read(window_address(0x80800F40) - 0x20, 64)
    assert line == bytes(0x20) + bytes.fromhex("80ffffff00000000") + bytes(0x18)
    assert read(window_address(0x80800F40) + 2, 4) == bytes.fromhex("ffff0000")  # unaligned
    assert read(FRAME_BASE_WINDOW_START + FRAME_BASE_WINDOW - 4, 16) == bytes(4)  # clipped at 4 GiB


def test_nothing_is_placed_in_the_window():
    assert LowAddressSpace().ceiling == FRAME_BASE_WINDOW_START


# ------------------------------------------------------------------ gdb
@pytest.mark.timeout(180)
def test_bt_full_100_frames_deep_reads_every_frames_own_values_and_no_frame_base_from_memory(tmp_path):
    """The first ``bt full`` reads the stack (and the window) through gdb's
    stack cache; the same command again, with the frames and registers
    forgotten, finds everything there: natively gdb sends nothing either. Only
    gdb's amd64 epilogue check reads the pc's byte (docs/cvars.md "Latency")."""
    stub = StubProcess.start(tmp_path / "stub", example("deep.O0"), invoke="deep_run", args=["100"])
    try:
        run = run_gdb(stub, [f"break deep.c:{DEEP_BOTTOM}", "continue", "bt full", "echo ==up==\\n", "up 40", "p/x $es",
                             "p &info", "frame 0", "maintenance flush register-cache", "set debug remote 1",
                             "echo ==again==\\n", "bt full", "set debug remote 0", "delete", "continue"],
                      timeout=120)
    finally:
        stub.kill()
    output = run.output
    first, again = output.split("==again==", 1)
    first, up = first.split("==up==", 1)
    for text in (first, again):
        depths = [int(d) for d in re.findall(r"in descend \(depth=(\d+), limit=100\)", text)]
        assert depths == list(range(99, -1, -1)), run
        for depth in range(0, 100, 9):
            assert f"info = {{depth = {depth}, values = {{0, {depth}, {2 * depth}, {3 * depth}}}}}" in text, depth
            squares = ", ".join(str(i * i + depth) for i in range(8))
            assert f"squares = {{{squares}}}" in text, depth
    # frame 40's es is its C frame base: its locals are just above it
    es = int(re.search(r"^\$1 = (0x[0-9a-f]+)$", up, re.M).group(1), 16)
    info = int(re.search(r"^\$2 = \(struct frame_info \*\) (0x[0-9a-f]+)$", up, re.M).group(1), 16)
    assert es <= info < es + 0x200 and es < 1 << 31, (hex(es), hex(info))
    reads = re.findall(r"Sending packet: \$m([0-9a-f]+),([0-9a-f]+)#", again.split("set debug remote 0")[0])
    assert len(reads) <= 4 and all(length == "1" for _, length in reads), reads


@pytest.mark.timeout(180)
def test_a_condition_on_a_variable_in_linear_memory_is_evaluated_at_the_site_with_the_frames_frame_base(tmp_path):
    """gdb compiles ``depth == 50`` (a -O0 parameter, at the frame base plus
    an offset) to an agent expression reading es; the site's veneer reads the
    function's frame-base slot for it, so the guest stops once, at depth 50,
    and a dprintf prints every depth's value where it runs."""
    stub = StubProcess.start(tmp_path / "stub", example("deep.O0"), invoke="deep_run", args=["100"])
    try:
        run = run_gdb(stub, ["set breakpoint condition-evaluation target", "break descend if depth == 50",
                             "continue", "p depth", "p info.depth", "bt 2", "info breakpoints", "delete",
                             "set dprintf-style agent", f"dprintf deep.c:{DEEP_BOTTOM},\"bottom %d\\n\", depth",
                             "continue"], timeout=120)
    finally:
        stub.kill()
    output = run.output
    assert re.search(r"Breakpoint 1, descend \(depth=50, limit=100\)", output), run
    assert re.search(r"^\$1 = 50$", output, re.M), run
    assert "breakpoint already hit 1 time" in output, run
    stub.wait(30)
    assert "bottom 100" in stub.output_after_banner, (run, stub.describe())


@pytest.mark.timeout(240)
def test_a_condition_and_a_dprintf_at_a_functions_first_byte_run_at_its_entry_site(tmp_path):
    """``break *descend if depth == 50``: no site runs before `push rbp; mov
    rbp, rsp`, so the ENTRY site after them carries the breakpoint and its
    condition (compiled by gdb for the first byte: es is 0 there, the
    parameter is read from the argument array); the stop is shown at the
    first byte, and `stepi` runs the push, then the mov, then reaches the
    ENTRY site.  An agent dprintf at the first byte prints every call's
    argument without stopping."""
    stub = StubProcess.start(tmp_path / "stub", example("deep.O0"), invoke="deep_run", args=["100"])
    try:
        run = run_gdb(stub, ["set breakpoint condition-evaluation target", "break *descend if depth == 50",
                             "continue", "p depth", "p/x $pc", "p &descend", "bt 2", "stepi", "p/x $pc", "p depth",
                             "stepi", "p/x $pc", "p depth", "delete", "set dprintf-style agent",
                             "dprintf *descend,\"enter %d\\n\", depth", "continue"], timeout=180)
    finally:
        stub.kill()
    output = run.output
    assert re.search(r"Breakpoint 1, descend \(depth=50, limit=100\) at examples/deep\.c:\d+", output), run
    start = int(re.search(r"^\$3 = \(int \(\*\)\(int, int\)\) (0x[0-9a-f]+) <descend>$", output, re.M).group(1), 16)
    pcs = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", output, re.M)]
    assert pcs == [start, start + 1, start + 4], run
    assert re.findall(r"^\$\d+ = (\d+)$", output, re.M) == ["50", "50", "50"], run
    assert re.search(r"^#1 .* in descend \(depth=49, limit=100\)", output, re.M), run
    stub.wait(30)
    # The dprintf was inserted at descend's 51st call (depth 50 stopped inside it).
    entered = [line[len("enter "):] for line in stub.output_after_banner if line.startswith("enter ")]
    assert entered == [str(d) for d in range(51, 101)], (run, stub.describe())
