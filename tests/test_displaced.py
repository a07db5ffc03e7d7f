"""Breakpoints at instructions that are not patch sites (codemem/displaced.py).

Three tiers:

* byte literals: a hand-made function (a site, a rip-relative ``lea``, a
  ``jcc`` to an out-of-line stub, a short jump inside the run) is checked and
  its displaced block disassembled: every relative operand points where the
  original did, or at the copy when the original target is inside the run;
* a static sweep over every function of every example build: every non-site
  instruction is either accepted or refused with one of the documented
  reasons, and every accepted one builds a block;
* an execution sweep (an *instruction trace*): a guest runs with a
  breakpoint on every site and on every accepted non-site instruction of its
  code.  Between two consecutive stops the guest executed exactly one machine
  instruction (the one at the first stop; padding NOPs aside), so the second
  stop must be at that instruction's successor (fall-through or branch
  target), and every register the instruction does not write (capstone's
  ``regs_access``) must be unchanged.  Stopped by a displaced block, the
  registers are then those a real machine shows at that instruction.  The
  run's result equals the undebugged one.
"""
from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import capstone
import pytest

import codemem
from codemem import displaced
from codemem.frametable import HARDWARE_GPR_NAMES
from codemem.displaced import DisplacedError, FunctionCode, build_block
from gdbstub import runner
from gdbstub.target import Exited, StopReason, StoreTarget, TargetError

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "examples" / "build"
EXAMPLES = sorted(BUILD.glob("*.wasm"))
NOP5 = bytes.fromhex("0f1f440000")
EVENT_TIMEOUT = 20.0

#: The reasons a breakpoint at a non-site instruction may be refused.
REASONS = ("is padding the compiler put before a patch site",
           "is not reached by falling through from the sequence point",
           "can be reached from the branch at",
           "follows the indirect jump at",
           "is in the frame setup")

CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
CS.detail = True


def disassemble(code: bytes, address: int) -> list:
    return list(CS.disasm(code, address))


# --------------------------------------------------------------- byte literals

def hand_made_function() -> tuple[bytes, list[int]]:
    """A function as the compiler lays one out::

        0x00  site (nop5)
        0x05  lea rsi, [rip + 0x40]          rip-relative
        0x0c  cmp eax, 5
        0x0f  ja 0x30                        to the trap stub, out of the run
        0x15  jmp 0x19                       short, inside the run
        0x17  xor eax, eax                   skipped by the jump
        0x19  add eax, 1
        0x1c  site (nop5)
        0x21  ret
        ...   int3 padding
        0x30  trap stub: xor edi, edi; ret
    """
    code = bytearray()
    code += NOP5                                              # 0x00
    code += bytes.fromhex("488d3540000000")                  # 0x05 lea rsi, [rip+0x40] -> 0x4c
    code += bytes.fromhex("83f805")                          # 0x0c cmp eax, 5
    code += b"\x0f\x87" + struct.pack("<i", 0x30 - 0x15)     # 0x0f ja 0x30
    code += bytes.fromhex("eb02")                            # 0x15 jmp 0x19
    code += bytes.fromhex("31c0")                            # 0x17 xor eax, eax
    code += bytes.fromhex("83c001")                          # 0x19 add eax, 1
    code += NOP5                                              # 0x1c
    code += b"\xc3"                                          # 0x21 ret
    code += b"\xcc" * (0x30 - len(code))
    code += bytes.fromhex("31ffc3")                          # 0x30 xor edi, edi; ret
    return bytes(code), [0x00, 0x1C]


def test_a_run_with_rip_relative_operands_and_branches_is_relocated_to_its_targets():
    code, sites = hand_made_function()
    fn = FunctionCode(code, 0, sites)
    assert fn.check(0x19) == 0x00
    base, address, veneer = 0x4000_0000, 0x4010_0000, 0x200
    block = build_block(fn, base, 0x00, [0x15, 0x19], address, veneer)
    insns = disassemble(block.code, address)
    listing = [(i.address, i.mnemonic, i.op_str) for i in insns]
    lea, cmp, ja, stop15, jmp, xor, stop19, jmp_back = listing
    assert lea[1] == "lea" and insns[0].address + insns[0].size + insns[0].disp == base + 0x4C
    assert cmp[1:] == ("cmp", "eax, 5")
    assert ja[1] == "ja" and int(ja[2], 16) == base + 0x30  # the real trap stub
    assert stop15[1] == "call" and int(stop15[2], 16) == base + veneer
    assert jmp[1] == "jmp" and int(jmp[2], 16) == stop19[0]  # inside the run: its copy (a stop call)
    assert xor[1:] == ("xor", "eax, eax")
    assert stop19[1] == "call" and int(stop19[2], 16) == base + veneer
    assert jmp_back[1] == "jmp" and int(jmp_back[2], 16) == base + 0x19
    assert block.stop_calls == {stop15[0]: base + 0x15, stop19[0]: base + 0x19}
    # Resuming from 0x15 continues at its copy, after its stop call.
    assert block.resume_address(base + 0x15) == jmp[0]
    assert block.resume_address(base + 0x19) is None  # the last one: the real code


@pytest.mark.parametrize("offset, reason", [
    (0x0E, "is not an instruction boundary (inside `cmp eax, 5`"),
    (0x30, "is not reached by falling through from the sequence point at 0x1c"),
    (0x1C, "is a patch site"),
])
def test_a_breakpoint_that_cannot_be_honoured_is_refused_with_its_reason(offset, reason):
    code, sites = hand_made_function()
    with pytest.raises(DisplacedError, match=None) as info:
        FunctionCode(code, 0, sites).check(offset)
    assert reason in str(info.value)


def test_an_instruction_reached_by_a_branch_that_skips_its_sequence_point_is_refused():
    # 0x00 site; 0x05 add eax, 1; 0x08 site; 0x0d jmp 0x05 (back, past the site)
    code = NOP5 + bytes.fromhex("83c001") + NOP5 + bytes.fromhex("ebf6")
    fn = FunctionCode(code, 0, [0x00, 0x08])
    with pytest.raises(DisplacedError, match="reached from the branch at 0xd without passing the sequence point at 0x0"):
        fn.check(0x05)


def test_padding_before_a_site_is_refused_and_names_the_site():
    code = NOP5 + bytes.fromhex("83c001") + b"\x90" + NOP5
    fn = FunctionCode(code, 0, [0x00, 0x09])
    with pytest.raises(DisplacedError, match="padding .* the next sequence point is at offset 0x9"):
        fn.check(0x08)


# --------------------------------------------------------------- static sweep

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_non_site_instruction_of_every_example_is_accepted_or_refused_with_a_reason(path):
    engine = codemem.Engine(debug=True)
    module = codemem.Module.from_file(engine, path)
    engine_code = module.engine_code
    table = engine_code.frame_table
    accepted = refused = 0
    for func in table.functions():
        fn = displaced.function_code(engine_code, func.native_start)
        assert fn is displaced.function_code(engine_code, func.native_start), "decoded once per EngineCode"
        entry = table.entry_offset(func)
        for ins in fn.insns:
            if ins.offset in fn.site_set:
                continue
            if ins.offset < entry:
                # push rbp; mov rbp, rsp: before any site.  No displaced
                # block can carry them; the target lets the ENTRY site carry
                # breakpoints there (test_frames).
                assert ins.offset in (func.native_start, func.native_start + 1), hex(ins.offset)
                with pytest.raises(DisplacedError, match="is in the frame setup"):
                    displaced.check_displaceable(engine_code, ins.offset)
                continue
            try:
                carrier = fn.check(ins.offset)
            except DisplacedError as e:
                assert any(reason in str(e) for reason in REASONS), str(e)
                refused += 1
                continue
            accepted += 1
            assert carrier in fn.site_set and carrier < ins.offset
            block = build_block(fn, 0x8000_0000, carrier, [ins.offset], 0x8100_0000, table.header.bp_veneer)
            assert len(block.stop_calls) == 1
    assert accepted > refused, (accepted, refused)


# ------------------------------------------------------------- execution sweep

_WIDE = {}
for _name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"):
    _short = _name[1:]
    _WIDE.update({_name: _name, "e" + _short: _name, _short: _name})
_WIDE.update({"al": "rax", "bl": "rbx", "cl": "rcx", "dl": "rdx", "sil": "rsi", "dil": "rdi", "bpl": "rbp",
              "spl": "rsp", "ah": "rax", "bh": "rbx", "ch": "rcx", "dh": "rdx"})
for _k in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        _WIDE[f"r{_k}{_suffix}"] = f"r{_k}"
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{k}" for k in range(8, 16))


def written_registers(code: bytes, address: int) -> set[str]:
    """The registers the one instruction at the start of ``code`` writes:
    64-bit GPR names, ``xmmN``, ``rflags``."""
    ins = next(CS.disasm(code, address, 1))
    _, written = ins.regs_access()
    names = set()
    for reg in written:
        name = CS.reg_name(reg)
        names.add(_WIDE.get(name, "rflags" if name in ("rflags", "eflags", "flags") else name))
    return names


class TraceTarget:
    """A StoreTarget of ``export(*args)`` stopped at its entry."""

    def __init__(self, path: Path, export: str, args: list, *, low_addresses: bool = True):
        self.engine = codemem.Engine(debug=True, low_addresses=low_addresses)
        self.module = codemem.Module.from_file(self.engine, path)
        self.store = codemem.Store(self.engine)
        self.instance = runner.instantiate(self.store, self.module)
        self.news = threading.Event()
        func = self.instance.exports[export]
        self.target = StoreTarget(self.store, self.instance, func, list(args), notify=self.news.set)
        self.target.start(stop_at_entry=True)
        self.wait()

    def wait(self):
        while True:
            assert self.news.wait(EVENT_TIMEOUT), "no stop"
            self.news.clear()
            event = self.target.take_event()
            if event is not None:
                return event

    def snapshot(self) -> dict[str, int]:
        regs = self.target.read_registers()
        values = struct.unpack_from("<16QQQ", regs)
        snap = dict(zip(GPRS, values[:16]))
        snap["rip"], snap["rflags"] = values[16], values[17]
        for k in range(16):
            snap[f"xmm{k}"] = regs[144 + 16 * k:160 + 16 * k]
        return snap

    def close(self) -> None:
        if self.target.exited is None:
            self.target.kill()
            self.wait()
        self.store.close()


TRACE_CALLS = [(name, call["func"], call["args"], call["expect"])
               for program in json.loads((ROOT / "examples" / "exports.json").read_text())["programs"]
               for name in (program["program"],) for call in program["calls"][:1]
               if "expect" in call and all(isinstance(a, int) for a in call["args"])]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("opt", ["O0", "O2"])
@pytest.mark.parametrize("program, export, args, expect", TRACE_CALLS, ids=[c[0] for c in TRACE_CALLS])
def test_an_instruction_trace_through_displaced_breakpoints_shows_each_instruction_s_effect_only(
        program, export, args, expect, opt):
    trace = TraceTarget(BUILD / f"{program}.{opt}.wasm", export, args)
    try:
        target = trace.target
        code = trace.store.registry.entries()[0].store_code
        table = code.frame_table
        armed: set[int] = set()
        for func in table.functions():
            fn = displaced.function_code(code.engine_code, func.native_start)
            for ins in fn.insns:
                pc = code.base + ins.offset
                try:
                    target.insert_breakpoint(pc)
                    armed.add(pc)
                except TargetError as e:
                    assert any(reason in str(e) for reason in REASONS), str(e)
        previous = trace.snapshot()
        checked = displaced_stops = 0
        for _ in range(6000):
            target.resume()
            event = trace.wait()
            if isinstance(event, Exited):
                break
            assert event.reason == StopReason.BREAKPOINT and event.pc in armed, event
            now = trace.snapshot()
            assert now["rip"] == event.pc
            displaced_stops += table.site_index(code.offset_of(event.pc)) is None
            checked += check_one_instruction(code, armed, previous, now)
            previous = now
        else:
            target.remove_all_breakpoints()
            target.resume()
            event = trace.wait()
        assert isinstance(event, Exited) and event.error is None, event
        assert event.results == [expect]
        assert checked > 20 and displaced_stops > 10, (checked, displaced_stops)
    finally:
        trace.close()


def check_one_instruction(code, armed: set[int], before: dict, after: dict) -> int:
    """The step from stop ``before`` to stop ``after`` ran one instruction
    (and padding): check successor and unchanged registers.  Returns 1 when
    the pair was checked (0: a call, return or jump table went elsewhere)."""
    pc = before["rip"]
    entry_code = code
    if not entry_code.contains(pc):
        return 0
    data = entry_code.read_for_debugger(pc, 16)
    ins = next(CS.disasm(data, pc, 1))
    groups = set(ins.groups)
    if groups & {capstone.CS_GRP_CALL, capstone.CS_GRP_RET} or (
            capstone.CS_GRP_JUMP in groups and capstone.CS_GRP_BRANCH_RELATIVE not in groups):
        return 0
    written = written_registers(data, pc)
    successors = set()
    if capstone.CS_GRP_JUMP in groups:
        successors.add(ins.operands[0].imm)
    if ins.mnemonic != "jmp":
        successors.add(pc + ins.size)
    # Unarmed instructions on the way (padding NOPs) execute too.
    expected = set()
    for at in successors:
        while at not in armed and code.contains(at):
            pad = next(CS.disasm(code.read_for_debugger(at, 16), at, 1))
            if not pad.mnemonic.startswith("nop"):
                break
            at += pad.size
        expected.add(at)
    assert after["rip"] in expected, (
        f"after `{ins.mnemonic} {ins.op_str}` at {pc:#x} the guest stopped at {after['rip']:#x}, "
        f"expected one of {sorted(hex(e) for e in expected)}")
    # A stop at a producer carrier loads its constant (the prelude performs
    # the instruction the site's call replaced): its register changes there.
    carried = code.carrier_store_at(after["rip"])
    if carried is not None and carried.kind == "producer":
        written = written | {HARDWARE_GPR_NAMES[carried.register]}
    for name, value in before.items():
        if name == "rip" or name in written:
            continue
        assert after[name] == value, (f"`{ins.mnemonic} {ins.op_str}` at {pc:#x} changed {name}: "
                                      f"{value!r} -> {after[name]!r}")
    return 1


@pytest.mark.parametrize("low_addresses", [True, False], ids=["below-4GiB", "anywhere"])
def test_the_scratch_area_is_within_rel32_reach_of_the_code_wherever_the_store_is_placed(low_addresses):
    trace = TraceTarget(BUILD / "demo.O0.wasm", "run", [], low_addresses=low_addresses)
    try:
        target = trace.target
        code = trace.store.registry.entries()[0].store_code
        func = next(f for f in code.frame_table.functions() if trace.module.func_name(f.wasm_index) == "square")
        fn = displaced.function_code(code.engine_code, func.native_start)
        imul = next(ins for ins in fn.insns if ins.text.startswith("imul"))
        target.insert_breakpoint(code.base + imul.offset)
        target.resume()
        event = trace.wait()
        assert event.reason == StopReason.BREAKPOINT and event.pc == code.base + imul.offset
        area = displaced.area_for(code)
        assert abs(area.base - code.base) < (1 << 31) and abs(area.base + area.size - code.end) < (1 << 31)
        target.remove_breakpoint(code.base + imul.offset)
        target.resume()
        assert trace.wait().results == [505]
    finally:
        trace.close()


def test_conditions_are_refused_between_sites_and_at_a_site_that_carries_breakpoints():
    from gdbstub.protocol.agentexpr import parse_agent_expr

    always = parse_agent_expr(bytes([0x22, 0x01, 0x27]))  # const8 1; end
    trace = TraceTarget(BUILD / "demo.O0.wasm", "run", [])
    try:
        target = trace.target
        code = trace.store.registry.entries()[0].store_code
        func = next(f for f in code.frame_table.functions() if trace.module.func_name(f.wasm_index) == "square")
        fn = displaced.function_code(code.engine_code, func.native_start)
        imul = next(ins for ins in fn.insns if ins.text.startswith("imul"))
        pc, carrier = code.base + imul.offset, code.base + fn.check(imul.offset)
        with pytest.raises(TargetError, match="between sequence points, where conditions and commands are not"):
            target.insert_breakpoint(pc, (always,))
        target.insert_breakpoint(pc)
        with pytest.raises(TargetError, match=f"{carrier:#x} carries breakpoints at instructions after it"):
            target.insert_breakpoint(carrier, (always,))
        target.remove_breakpoint(pc)
        target.insert_breakpoint(carrier, (always,))
        with pytest.raises(TargetError, match=f"the one before it, {carrier:#x}, has a conditional breakpoint"):
            target.insert_breakpoint(pc)
        target.remove_breakpoint(carrier)
        target.resume()
        assert trace.wait().results == [505]
    finally:
        trace.close()
