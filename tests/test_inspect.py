"""`wasm-gdbstub inspect` backend (gdbstub.inspect): the listing is checked
against the frame table and against an independent capstone pass."""
from __future__ import annotations

import io
import re
from pathlib import Path

import capstone
import pytest
import wasmtime

import codemem
from codemem.frametable import HARDWARE_GPR_NAMES, SITE_DISABLED, carrier_store, deferred_carrier_bytes
from gdbstub.inspect import inspect_module, instruction_text, resolve_function

ROOT = Path(__file__).resolve().parents[1]
DEMO_O0 = ROOT / "examples" / "build" / "demo.O0.wasm"
DEMO_O2 = ROOT / "examples" / "build" / "demo.O2.wasm"

LINE_RE = re.compile(r"^\s+0x([0-9a-f]+):  ((?:[0-9a-f]{2} )*[0-9a-f]{2})\s+(\S.*)$")
SEQ_RE = re.compile(r"^\s+; wasm @0x([0-9a-f]+)  (.+)  \[(instruction|return point|entry), depth (\d+)(?::[ a-z0-9]+)?\]$")
SITE_RE = re.compile(r"^\s+; patch site #(\d+)(?: \(a (?:carrier store|deferred carrier|local carrier|move carrier|producer carrier): "
                     r"[^)]*\))?$")


def inspect(path, func=None):
    out, err = io.StringIO(), io.StringIO()
    code = inspect_module(str(path), func, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def demo_module(path=DEMO_O0):
    return codemem.Module.from_file(codemem.Engine(debug=True), path)


def function_record(module, name):
    index = resolve_function(module, name)
    return index, module.engine_code.frame_table.function_by_wasm_index(index)


def test_square_sites_before_every_wasm_instruction():
    code, out, err = inspect(DEMO_O0, "square")
    assert code == 0 and err == ""
    lines = out.splitlines()
    module = demo_module()
    table = module.engine_code.frame_table
    _, record = function_record(module, "square")
    points = table.sequence_points(record)
    seq_lines = [k for k, line in enumerate(lines) if SEQ_RE.match(line)]
    assert len(seq_lines) == len(points) > 10
    carriers = deferred = locals_ = producers = 0
    for k, point in zip(seq_lines, points):
        m = SEQ_RE.match(lines[k])
        assert int(m.group(1), 16) == point.wasm_offset
        assert int(m.group(4)) == point.stack_depth
        # Right after it: the site marker, then the site's 5-byte nop at the
        # point's address, after the DS prefixes that pad it (if any).
        site = SITE_RE.match(lines[k + 1])
        assert site, lines[k:k + 3]
        assert int(site.group(1)) == table.site_index(point.native_offset)
        insn = LINE_RE.match(lines[k + 2])
        pad = point.native_offset - int(insn.group(1), 16)
        assert 0 <= pad <= 5  # DS prefixes (at most 4), and a producer's REX.B
        disabled = table.site(table.site_index(point.native_offset)).disable
        if disabled == SITE_DISABLED:
            assert insn.group(2) == "3e " * pad + "0f 1f 44 00 00"
            assert insn.group(3) == ("nop dword ptr ds:[rax + rax]" if pad else "nop dword ptr [rax + rax]")
        elif carrier_store(disabled).kind == "producer":  # a constant's load, its REX.B before the site
            carrier = table.site_carrier(table.site_index(point.native_offset))
            assert carrier.slot == point.stack_depth - 1
            rex = "41 " if carrier.register >= 8 else ""
            assert insn.group(2) == ("3e " * (pad - len(rex) // 3)) + rex + disabled.hex(" ")
            assert f"(a producer carrier: {HARDWARE_GPR_NAMES[carrier.register]} = {carrier.immediate:#x}, " \
                   f"then its store to slot {carrier.slot}" in lines[k + 1]
            assert insn.group(3).startswith("mov ")
            producers += 1
        elif carrier_store(disabled).kind == "local":  # the store of a local.set/tee: one own DS prefix
            carrier = carrier_store(disabled)
            assert any(slot.frame_offset == carrier.disp for slot in table.locals(record))
            assert insn.group(2) == "3e " * pad + disabled.hex(" ")
            assert f"(a local carrier: the store to the local at [rbp{carrier.disp:+d}]" in lines[k + 1]
            assert insn.group(3).startswith(f"mov qword ptr ds:[rbp - {-carrier.disp:#x}]")
            locals_ += 1
        else:  # a carrier: the site is the store of the previous instruction's result, or names it
            carrier = carrier_store(disabled)
            assert carrier is not None and carrier.slot == point.stack_depth - 1
            assert insn.group(2) == "3e " * pad + disabled.hex(" ")
            if disabled == deferred_carrier_bytes(carrier):  # a NOP: the store is left out
                assert f"(a deferred carrier: the store to slot {carrier.slot}" in lines[k + 1]
                assert insn.group(3).startswith("nop dword ptr ds:[rsp" if pad else "nop dword ptr [rsp")
                deferred += 1
            else:
                assert "(a carrier store" in lines[k + 1]
                assert insn.group(3).startswith("mov qword ptr ds:[rsp" if pad else "mov qword ptr [rsp")
            carriers += 1
    # The wasm instructions of square (x * x at -O0, through the shadow stack).
    texts = [SEQ_RE.match(lines[k]).group(2) for k in seq_lines]
    for name in ("global.get 0", "local.get 0", "i32.mul", "i32.store offset=12 align=4", "return", "end"):
        assert name in texts, name
    assert texts[0] == "(function entry)"
    assert carriers > deferred > 0 and locals_ > 0 and producers > 0


def test_square_header():
    _, out, _ = inspect(DEMO_O0, "square")
    module = demo_module()
    index, record = function_record(module, "square")
    assert f'function {index} "square"  [i32] -> [i32]' in out
    assert (f"native [{record.native_start:#x}, {record.native_end:#x}) {record.native_size} bytes, "
            f"frame size {record.frame_size},") in out
    slots = module.engine_code.frame_table.locals(record)
    assert f"  param 0: i32 @ [rbp{slots[0].frame_offset:+d}]" in out
    for slot in slots[1:]:
        assert f"  local {slot.index}: i32 @ [rbp{slot.frame_offset:+d}]" in out


@pytest.mark.parametrize("path", [DEMO_O0, DEMO_O2])
def test_listing_covers_each_function_exactly(path):
    """Every byte of every function is listed once, in order, with capstone's
    own decoding; every site and sequence point of the table is marked."""
    code, out, _ = inspect(path)
    assert code == 0
    module = demo_module(path)
    table = module.engine_code.frame_table
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    listed = [LINE_RE.match(line) for line in out.splitlines()]
    listed = [(int(m.group(1), 16), bytes.fromhex(m.group(2).replace(" ", "")), m.group(3)) for m in listed if m]
    expected = []
    for record in table.functions():
        data = module.engine_code.read(record.native_start, record.native_size)
        expected += [(i.address, bytes(i.bytes), f"{i.mnemonic} {i.op_str}".strip())
                     for i in md.disasm(data, record.native_start)]
        assert sum(len(i.bytes) for i in md.disasm(data, record.native_start)) == record.native_size
    assert [(a, b, t.split("  ;")[0]) for a, b, t in listed] == expected
    marked_sites = [int(m.group(1)) for m in map(SITE_RE.match, out.splitlines()) if m]
    function_sites = [i for i, off in enumerate(table.site_offsets) if table.function_at(off) is not None]
    assert marked_sites == function_sites
    for index, off in enumerate(table.site_offsets):
        disabled = table.site(index).disable
        assert module.engine_code.read(off, 5) == disabled
        assert disabled == SITE_DISABLED or carrier_store(disabled) is not None
    n_points = sum(f.num_seqpoints for f in table.functions())
    assert sum(1 for line in out.splitlines() if SEQ_RE.match(line)) == n_points


def test_return_points_and_call_targets():
    _, out, _ = inspect(DEMO_O2, "sum_of_squares")
    assert re.search(r"; wasm @0x[0-9a-f]+  call \d+ <square>  \[instruction, depth 1: i32\]", out)
    assert re.search(r"; wasm @0x[0-9a-f]+  call \d+ <square>  \[return point, depth 1: i32\]", out)
    assert re.search(r"call (0x[0-9a-f]+|[0-9]+)  ; <square>$", out, re.M)
    # The stack-check trap stub names its trap.
    assert "; trap: call stack exhausted" in out
    assert "; <trap veneer>" in out


def test_select_by_index_export_and_name_section(tmp_path):
    wat = """(module $named
      (import "env" "host" (func $host))
      (func $helper (param $x i32) (result i32) (local $tmp f64) (local.get $x))
      (func (export "api") (result i32) (call $helper (i32.const 3))))"""
    path = tmp_path / "named.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    by_name = inspect(path, "helper")
    assert by_name[0] == 0
    assert 'function 1 "helper"' in by_name[1] and "param 0 x: i32" in by_name[1] and "local 1 tmp: f64" in by_name[1]
    assert "import function 0: env::host" in by_name[1]
    assert inspect(path, "1")[1] == by_name[1]
    assert inspect(path, 1)[1] == by_name[1]
    api = inspect(path, "api")
    assert api[0] == 0 and 'function 2 "api"' in api[1] and "call 1 <helper>" in api[1]
    assert "function 1" not in api[1]
    everything = inspect(path)[1]
    assert 'function 1 "helper"' in everything and 'function 2 "api"' in everything
    code, out, err = inspect(path, "0")
    assert code == 2 and out == "" and "imported (env::host)" in err


def test_unknown_function_lists_names():
    code, out, err = inspect(DEMO_O0, "no_such_function")
    assert code == 2 and out == ""
    assert "no_such_function" in err
    for name in ("square", "sum_of_squares", "fact", "run"):
        assert name in err
    assert inspect(DEMO_O0, "99")[0] == 2


def test_bad_module_and_missing_file(tmp_path):
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x02\0\0\0")
    code, out, err = inspect(bad)
    assert code == 2 and out == "" and "failed to compile" in err
    code, _, err = inspect(tmp_path / "missing.wasm")
    assert code == 2 and "cannot read" in err


def test_instruction_text_immediates(tmp_path):
    wat = """(module (memory 1) (table 2 funcref) (type $t (func (param i32)))
      (func $f (param i32) (result f64)
        (i64.store8 offset=3 (i32.const 0) (i64.const -1))
        (call_indirect (type $t) (i32.const 5) (i32.const 0))
        (block $b (br_table 0 0 (i32.const 1)))
        (f64.const 0.5)))"""
    module = codemem.Module(codemem.Engine(), wasmtime.wat2wasm(wat))
    texts = [instruction_text(i, module.info) for i in module.info.read_body(0)]
    assert "i64.store8 offset=3 align=1" in texts
    assert "i64.const -1" in texts
    assert "call_indirect 0 (type 0)" in texts
    assert "br_table 0 0" in texts
    assert "f64.const 0.5" in texts
    assert texts[-1] == "end"
