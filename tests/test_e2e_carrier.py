"""End-to-end: a breakpoint at a carrier-store site (docs/compiler-speed.md).

A carrier site's disabled bytes are the store of the previous instruction's
result to its operand-stack slot (``mov [rsp+disp8], r64``), or a NOP naming
that store where the store is deferred (the next instruction consumes the
value from its register: frametable.deferred_carrier_bytes), or the
constant's load that produced such a value (a producer carrier), or a
local.set's store to the local's home (``ds mov [rbp+disp8], r64``); enabled, the
site's ``call`` replaces that store, and the breakpoint path performs it
before the debugger sees the stop (codemem.registry.ModuleRegistry.perform_carrier_store).
These sessions check, on the clients' output, that at such a stop the slot
holds the value just computed, that the code reads back as the store while
the breakpoint is inserted, and that the guest still computes its result.

The sites are found from the frame table of the same module compiled in
this process (the compiler is deterministic): square in examples/demo.c at
-O0 (its shadow-stack prologue ``global.get 0; i32.const 16; i32.sub``).
"""
from __future__ import annotations

import re

import pytest

import codemem
from codemem.frametable import SequencePointKind
from gdbstub.inspect import resolve_function
from stubproc import example, run_gdb, run_lldb, section, stub  # noqa: F401  (stub is a fixture)

DEMO_RESULT = "505"
I32_SUB = 0x6B
#: gdb's names of the x86 registers by number (codemem.frametable.CarrierStore.register).
GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{k}" for k in range(8, 16)))
POISON = 0x5EED5EED5EED5EED


def square_carrier_sites():
    """``(site offset from square's start, CarrierStore, SequencePoint, the
    previous site's offset from square's start, the site's disabled bytes)``
    of each carrier site of demo.O0's square, and the module's wasm bytes."""
    path = example("demo.O0")
    module = codemem.Module.from_file(codemem.Engine(debug=True), path)
    table = module.engine_code.frame_table
    func = table.function_by_wasm_index(resolve_function(module, "square"))
    points = {p.native_offset: p for p in table.sequence_points(func)}
    found = []
    previous = None
    for index in table.site_indexes_in(func.native_start, func.native_end):
        site = table.site(index)
        if site.carrier is not None and previous is not None:  # a producer's completed from its point
            found.append((site.offset - func.native_start, table.site_carrier(index), points[site.offset],
                          previous - func.native_start, site.disable))
        previous = site.offset
    module.engine_code.close()
    assert found, "square has no carrier-store site"
    return found, path.read_bytes()


def detail(run, stub_process) -> str:
    return f"{run}\n---\n{stub_process.describe()}"


def gdb_mark(name: str) -> str:
    return f"echo =={name}==\\n"


def _carrier_form(disable: bytes) -> str:
    """"stored" (a slot store), "deferred" (a NOP naming one), "local" (a
    local.set's store to the local's home), "move" or "producer" (a
    constant's load whose slot store is left out)."""
    if codemem.frametable.is_deferred_carrier(disable):
        return "deferred"
    kind = codemem.frametable.carrier_store(disable).kind
    return "stored" if kind == "slot" else kind


@pytest.mark.parametrize("form", ["stored", "deferred", "local", "producer"])
def test_gdb_at_a_carrier_site_sees_the_stored_value_in_its_slot_and_the_store_in_the_code(stub, form):
    """Stopped at the site before it, the slot (or, for a local carrier, the
    local's home) is overwritten with a poison value; at the carrier site it
    holds the register's value again (the store the breakpoint's call
    replaced, or the deferred store the site's NOP names, or a producer's
    load of its constant and then its store, was performed),
    ``x/5xb $pc`` shows the site's disabled bytes (the patch is hidden), and
    the guest's result is right."""
    sites, _ = square_carrier_sites()
    offset, carrier, point, previous, disable = next(site for site in sites if _carrier_form(site[4]) == form)
    assert point.kind == SequencePointKind.INSTRUCTION
    if form == "local":
        base = "$rbp"  # the local's home, [rbp + disp] (disp < 0)
    else:
        base = "$rsp"
        assert carrier.slot == point.stack_depth - 1
    register = GPR_NAMES[carrier.register]
    demo = stub()
    run = run_gdb(demo, [
        f"break *((char *) &square + {previous})", f"break *((char *) &square + {offset})",
        "continue", gdb_mark("before"), "p/x $pc",
        f"set var *(unsigned long long *) ({base} + {carrier.disp}) = {POISON:#x}",
        f"x/1gx {base} + {carrier.disp}",
        "continue", gdb_mark("carrier"), "p/x $pc", f"p/x ${register}", f"x/1gx {base} + {carrier.disp}",
        gdb_mark("code"), "x/5xb $pc",
        "delete", gdb_mark("end"), "continue",
    ], before_connect=("set breakpoint always-inserted on",))
    out = detail(run, demo)
    assert not run.timed_out, out
    before = section(run, "before")
    assert re.search(rf":\s+{POISON:#x}\s*$", before, re.M), out  # the poison is in the slot
    carrier_text = section(run, "carrier")
    pcs = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)\s*$", before + carrier_text, re.M)]
    assert len(pcs) == 3 and pcs[1] - pcs[0] == offset - previous, out
    value = pcs[2]
    slot = re.search(r"^0x[0-9a-f]+:\s+(0x[0-9a-f]+)\s*$", carrier_text, re.M)
    assert slot and int(slot.group(1), 16) == value != POISON, out
    code = re.search(r"^0x[0-9a-f]+ <square\+\d+>:((?:\s+0x[0-9a-f]{2}){5})\s*$", section(run, "code"), re.M)
    store = code and bytes(int(b, 16) for b in code.group(1).split())
    assert store == disable, out  # the store (or the NOP naming it, or the producer) the call replaced
    if form == "producer":
        assert value == carrier.immediate, out
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", section(run, "end")), out
    assert demo.wait() == 0, out
    assert demo.output_after_banner[:1] == [DEMO_RESULT], out


def test_lldb_wasm_dialect_reads_the_value_just_computed_at_a_carrier_site(stub):
    """lldb-22 (``--plugin wasm``) stopped at the carrier site of square's
    ``i32.sub`` (on its second call: the slot then still holds the first
    call's older value) reads the top of the operand stack with
    ``qWasmStackValue``: the 16 of ``i32.const 16``, stored by the breakpoint
    path (the site is a deferred carrier: no code stores it)."""
    sites, wasm = square_carrier_sites()
    at_sub = [(o, c, p, disable) for o, c, p, _, disable in sites if wasm[p.wasm_offset] == I32_SUB]
    assert at_sub, "no carrier site before square's i32.sub"
    _, carrier, point, disable = at_sub[0]
    # The constant is consumed by the i32.sub from its register: a deferred
    # carrier (a NOP naming the store; the code never stores it), so the 16
    # read below is in the slot only because the stop performed the store.
    assert disable == codemem.frametable.deferred_carrier_bytes(carrier)
    s = stub(example("demo.O0"), invoke="run", args=("--dialect", "wasm"))
    address = 0x4000000000000000 | point.wasm_offset
    top = point.stack_depth - 1
    run = run_lldb(s, [
        f"breakpoint set -a {address:#x}",
        "c", "c",
        'script print("==stopped==")', "register read pc",
        f"process plugin packet send 'qWasmStackValue:0;{top}'",
        'script print("==end==")', "detach",
    ])
    out = detail(run, s)
    assert not run.timed_out, out
    stopped = section(run, "stopped")
    assert f"pc = {address:#018x}" in stopped, out
    assert re.search(r"response: 10000000\s*$", stopped, re.M), out


def rex_producer_instruction(function: str):
    """``(instruction offset from the function's start, site offset from it,
    CarrierStore)`` of the first producer carrier in demo.O0's ``function``
    whose ``mov r32, imm32`` needs a REX (r8d-r15d) and has no other prefix:
    the instruction starts at that REX byte, one byte before its site (the
    ``b8+r imm32`` the call replaces, docs/compiler-speed.md "Producer
    carriers")."""
    module = codemem.Module.from_file(codemem.Engine(debug=True), example("demo.O0"))
    code = module.engine_code
    table = code.frame_table
    func = table.function_by_wasm_index(resolve_function(module, function))
    try:
        for index in table.site_indexes_in(func.native_start, func.native_end):
            site = table.site(index)
            if site.carrier is None:
                continue
            carrier = table.site_carrier(index)
            before = code.read(site.offset - 2, 2)
            if carrier.kind == "producer" and carrier.register >= 8 and before[1] & 0xF0 == 0x40 \
                    and before[0] != 0x3E:
                return site.offset - 1 - func.native_start, site.offset - func.native_start, carrier
    finally:
        code.close()
    raise AssertionError(f"{function} has no REX producer carrier without a ds prefix")


def test_gdb_breaks_at_a_producers_rex_byte_and_then_at_its_site(stub):
    """``break *ADDR`` at the first byte of a producer's instruction (its REX,
    the address gdb's disassembly shows; not a patch site: a displaced
    breakpoint) and at its site, one byte later: the first stop shows the
    whole instruction (``mov $IMM,%r10d``) not yet executed, the second the
    register loaded with the constant, and the guest computes its result."""
    start, site, carrier = rex_producer_instruction("sum_of_squares")
    register = GPR_NAMES[carrier.register]
    demo = stub()
    run = run_gdb(demo, [
        f"break *((char *) &sum_of_squares + {start})", f"break *((char *) &sum_of_squares + {site})",
        "continue", gdb_mark("instruction"), "p/x $pc", "x/i $pc", f"set var ${register} = {POISON:#x}",
        "continue", gdb_mark("site"), "p/x $pc", f"p/x ${register}",
        "delete", gdb_mark("end"), "continue",
    ])
    out = detail(run, demo)
    assert not run.timed_out, out
    at_instruction, at_site = section(run, "instruction"), section(run, "site")
    pcs = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)\s*$", at_instruction + at_site, re.M)]
    assert len(pcs) == 3 and pcs[1] - pcs[0] == site - start == 1, out
    register32 = f"%{register}d"  # r10 -> r10d: decoded from the REX, not the low register after it
    assert re.search(rf"<sum_of_squares\+{start}>:\s+mov\s+\${carrier.immediate:#x},{register32}\s*$",
                     at_instruction, re.M), out
    assert pcs[2] == carrier.immediate != POISON, out  # the poison was overwritten by the constant
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", section(run, "end")), out
    assert demo.wait() == 0, out
    assert demo.output_after_banner[:1] == [DEMO_RESULT], out
