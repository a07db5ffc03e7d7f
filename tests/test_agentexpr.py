"""Agent expressions: the parser/verifier on byte literals, the reference
evaluator, and the x86-64 compilation checked against the reference on random
expressions, run for real in a site's veneer (codemem.sitehooks)."""
from __future__ import annotations

import random

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codemem
from codemem import sitehooks
from codemem.native import ffi
from gdbstub.agent_x64 import ConditionCheck, register_readable
from gdbstub.protocol.packets import parse_packet
from gdbstub.protocol.agentexpr import (
    MAX_BACKWARD_JUMPS,
    MAX_LENGTH,
    MAX_STACK,
    AgentExprError,
    Op,
    evaluate,
    format_printf,
    parse_agent_expr,
)

MASK64 = (1 << 64) - 1


def run_ref(bytecode: bytes, registers=None, memory=None, tsv=None):
    expr = parse_agent_expr(bytecode)
    regs = registers or {}
    mem = memory or {}

    def read(address, size):
        if all(address + k in mem for k in range(size)):
            return int.from_bytes(bytes(mem[address + k] for k in range(size)), "little")
        return None

    return evaluate(expr, lambda n: regs.get(n, 0), read, tsv)


# ------------------------------------------------------------------ parsing

def test_a_condition_gdb_sends_for_a_register_compare_parses():
    # `$rax == 5`: reg 0, const8 5, equal, end (what gdb 13 emits)
    expr = parse_agent_expr(bytes.fromhex("2600002205 13 27".replace(" ", "")))
    assert [ins.op for ins in expr.instructions] == [Op.REG, Op.CONST8, Op.EQUAL, Op.END]
    assert expr.registers == {0}
    assert expr.max_depth == 2


@pytest.mark.parametrize("bytecode, value", [
    ("22052203" "02" "27", 8),                       # add
    ("22052203" "03" "27", 2),                       # sub
    ("22032205" "03" "27", (3 - 5) & MASK64),        # sub wraps
    ("22062207" "04" "27", 42),                      # mul
    ("22f9" "1608" "2203" "05" "27", (-7 // 3 + 1) & MASK64),  # div_signed truncates toward 0: -2
    ("22072203" "06" "27", 2),                       # div_unsigned
    ("22f9" "1608" "2203" "07" "27", (-1) & MASK64),  # rem_signed: -7 % 3 == -1
    ("22072203" "08" "27", 1),                       # rem_unsigned
    ("22012204" "09" "27", 16),                      # lsh
    ("22f0" "1608" "2202" "0a" "27", (-4) & MASK64),  # rsh_signed
    ("22f0" "2202" "0b" "27", 0x3C),                 # rsh_unsigned
    ("2200" "0e" "27", 1),                           # log_not
    ("220c220a" "0f" "27", 8),                       # bit_and
    ("220c220a" "10" "27", 14),                      # bit_or
    ("220c220a" "11" "27", 6),                       # bit_xor
    ("2200" "12" "27", MASK64),                      # bit_not
    ("22052205" "13" "27", 1),                       # equal
    ("22ff" "1608" "2201" "14" "27", 1),             # less_signed: -1 < 1
    ("22ff" "2201" "15" "27", 0),                    # less_unsigned: 255 < 1 is false
    ("2280" "1608" "27", 0xFFFFFFFFFFFFFF80),        # ext 8
    ("24ffffffff" "2a10" "27", 0xFFFF),              # zero_ext 16
    ("230102" "27", 0x102),                          # const16 (big-endian)
    ("2401020304" "27", 0x01020304),                 # const32
    ("250102030405060708" "27", 0x0102030405060708),  # const64
    ("2207" "28" "02" "27", 14),                     # dup
    ("22072208" "29" "27", 7),                       # pop
    ("22072208" "2b" "03" "27", 1),                  # swap: 8 - 7
    ("220722082209" "3202" "27", 7),                 # pick 2
    ("220122022203" "33" "27", 2),                   # rot: a b c => c a b (b on top)
    ("220122022203" "33" "29" "27", 1),              # ... then a
    ("220122022203" "33" "29" "29" "27", 3),         # ... then c
    ("2209" "2d0003" "29" "2c0003" "27", 9),         # setv 3 keeps the value; getv 3 reads it
    ("2201" "20000a" "2205" "21000c" "2206" "27", 6),  # if_goto taken
    ("2200" "20000a" "2205" "21000c" "2206" "27", 5),  # if_goto not taken, goto over the other arm
    ("27", 0),                                       # empty stack at end: 0
    ("2204" "2203" "0c" "27", 0),                    # trace pops two
    ("2204" "0d08" "27", 4),                         # trace_quick keeps its address
    ("2204" "300010" "27", 4),                       # trace16 keeps its address
    ("2e0001" "2205" "27", 5),                       # tracev: no stack effect
    ("2204" "2203" "2f" "27", 0),                    # tracenz pops two
])
def test_every_opcode_has_the_manuals_meaning_in_the_reference(bytecode, value):
    outcome = run_ref(bytes.fromhex(bytecode))
    assert outcome.error is None
    assert outcome.value == value


def test_reg_and_refs_read_registers_and_little_endian_memory():
    memory = {0x100 + k: b for k, b in enumerate(bytes.fromhex("0102030405060708"))}
    for op, value in ((0x17, 0x01), (0x18, 0x0201), (0x19, 0x04030201), (0x1A, 0x0807060504030201)):
        outcome = run_ref(bytes([0x26, 0, 6, op, 0x27]), registers={6: 0x100}, memory=memory)
        assert outcome.value == value


def test_an_unreadable_address_is_an_error_that_names_it():
    outcome = run_ref(bytes.fromhex("2401020304" "19" "27"))
    assert outcome.error and outcome.fault_address == 0x01020304 and outcome.condition_true


def test_division_by_zero_is_an_error_not_a_crash():
    outcome = run_ref(bytes.fromhex("22012200" "05" "27"))
    assert outcome.error == "division by zero" and outcome.condition_true


def test_a_backward_goto_loop_is_bounded():
    outcome = run_ref(bytes.fromhex("2100" "00"))  # goto 0: forever
    assert "backward jumps" in outcome.error and outcome.condition_true


def test_printf_pops_its_arguments_channel_and_function():
    fmt = b"x=%d s=%s %%\0"
    # args pushed last-first (gdb's gen_printf), then channel, then function
    code = (bytes.fromhex("2200" "2207" "2200" "2200") + bytes([0x34, 2]) + len(fmt).to_bytes(2, "big")
            + fmt + b"\x27")
    expr = parse_agent_expr(code)
    outcome = evaluate(expr, lambda n: 0, lambda a, s: None, read_string=lambda a: b"hi")
    assert outcome.printed == [b"x=7 s=hi %"]


@pytest.mark.parametrize("fmt, args, text", [
    (b"%d|%5d|%-4d|", [(-3) & MASK64, 42, 7], b"-3|   42|7   |"),
    (b"%u %x %X %o", [(-1) & 0xFFFFFFFF, 255, 255, 8], b"4294967295 ff FF 10"),
    (b"%ld %lld %hhd %hd", [(-1) & MASK64, 1 << 40, 0x1FF, 0x18000], b"-1 1099511627776 -1 -32768"),
    (b"%c%c %p", [ord("o"), ord("k"), 0x1000], b"ok 0x1000"),
])
def test_agent_printf_formats_like_c(fmt, args, text):
    assert format_printf(fmt, args) == text


@pytest.mark.parametrize("bytecode, message", [
    ("", "empty"),
    ("ff27", "unknown opcode 0xff at offset 0"),
    ("3127", "unknown opcode 0x31"),
    ("0127", "floating-point"),
    ("1b27", "floating-point"),
    ("02" "27", "stack underflow at offset 0: add needs 2"),
    ("2201" "3201" "27", "stack underflow at offset 2: pick 1"),
    ("2201" "33" "27", "stack underflow at offset 2: rot needs 3"),
    ("2100ff", "jumps to offset 255, outside the expression"),
    ("2201" "2000" "03" "27", "not an instruction start"),
    ("2201", "runs past the end"),
    ("24010203", "needs 4 operand bytes"),
    ("1600" "27", "bit count 0"),
    ("2c0040" "27", "trace state variable 64"),
    ("2201" "2000" "07" "2202" "2203" "27", "reached with stack depths"),
    ("34 00 0003 6162 63 27".replace(" ", ""), "not NUL-terminated"),
    ("34 00 00ff 00".replace(" ", ""), "runs past the end"),
    ("2600 18 27".replace(" ", ""), "cannot be read"),  # st0 (regnum 24)
])
def test_malformed_bytecode_is_refused_with_a_message(bytecode, message):
    with pytest.raises(AgentExprError, match=message):
        parse_agent_expr(bytes.fromhex(bytecode), register_ok=register_readable)


def test_stack_overflow_is_refused():
    code = b"\x22\x01" * (MAX_STACK + 1) + b"\x27"
    with pytest.raises(AgentExprError, match="stack overflow"):
        parse_agent_expr(code)


def test_a_too_long_expression_is_refused():
    code = b"\x22\x01\x29" * (MAX_LENGTH // 3 + 1) + b"\x27"
    with pytest.raises(AgentExprError, match="too long"):
        parse_agent_expr(code)


def test_malformed_conditions_in_a_z0_packet_are_refused_and_nothing_is_installed():
    # The session parses every condition before it touches the target.
    from gdbstub.session import GdbSession

    class NoTarget:
        pid = 1
        tid = 1
        exited = None

        def insert_breakpoint(self, *args):
            raise AssertionError("a bad condition must not reach the target")

    session = GdbSession(NoTarget())
    for payload in (b"Z0,1000,1;X3,ff2727", b"Z0,1000,1;X2,2227;X1,02"):
        reply = session._dispatch(parse_packet(payload))
        assert reply.startswith(b"E16"), reply


# --------------------------------------------------------- compiled vs reference

WAT = """(module (memory (export "memory") 1)
  (func (export "f") (param i32) (result i32) (local.get 0)))"""


class VeneerRig:
    """A real Store whose function ``f`` has a site hook at its entry: each
    :meth:`run` installs one compiled condition there, calls ``f`` and reports
    what the veneer recorded."""

    def __init__(self):
        engine = codemem.Engine(debug=True)
        self.store = codemem.Store(engine)
        self.instance = codemem.Instance(self.store, codemem.Module(engine, bytes(wasmtime.wat2wasm(WAT))), [])
        self.code = self.instance.store_code
        func = next(iter(self.code.frame_table.functions()))
        self.site = self.code.base + self.code.frame_table.entry_offset(func)  # the ENTRY site
        self.area = sitehooks.hook_area_for(self.code)
        self.memory = self.instance.memories[0]
        self.area.set_regions([(sitehooks.REGION_MEMORY, 0, 0, self.memory.definition_address),
                               (sitehooks.REGION_MIRROR, 0, 0, self.memory.definition_address)])
        rng = random.Random(7)
        self.memory.write(0, bytes(rng.randrange(256) for _ in range(4096)))
        self.stops = 0
        self.rbp = None
        self.store.debug_handler = self._on_stop
        self.f = self.instance.exports["f"]
        # rbp at the ENTRY site is f's own frame (codemem.abi "Function
        # layout"): seen at a stop there (a condition that is always true).
        self.run(parse_agent_expr(b"\x22\x01\x27"))
        assert self.rbp

    def _on_stop(self, kind, code, regfile, vmctx):
        self.stops += 1
        self.rbp = regfile.gpr[6]

    def registers(self) -> dict[int, int]:
        # At f's entry site, called from the host: rbp is f's frame (the same
        # at every call from the host), r15 the instance context, rip the site.
        return {6: self.rbp, 15: self.instance.vmctx_address, 16: self.site}

    def read(self, address: int, size: int) -> int | None:
        base, length = self.memory.base, self.memory.data_len
        if 0 <= address and address + size <= length:
            offset = address
        elif base <= address and address + size <= base + length:
            offset = address - base
        else:
            return None
        return int.from_bytes(self.memory.read(offset, size), "little")

    def tsv(self) -> dict[int, int]:
        return {k: self.area.read_u64(sitehooks.DATA_TSV + 8 * k) for k in range(sitehooks.NUM_TSV)}

    def run(self, expr):
        moved = self.area.build(self.site, [ConditionCheck(expr, 0)], compact_ok=True)
        with self.store.registry.patch_edit() as edit:
            for pc, address in moved.items():
                edit.redirect_site(self.code, pc, address)
        before = self.stops
        assert self.f(3) == 3
        hit = self.area.take_hit()
        return self.stops - before, hit


@pytest.fixture(scope="module")
def rig():
    rig = VeneerRig()
    yield rig
    rig.store.close()


# A random expression generator.  Each expression is a function of its
# absolute start offset (jump targets are absolute) returning bytecode that
# leaves exactly one value.
RIG_BASE = [0]


def _const(draw):
    value = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 31, 32, 63, 64, 255, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                                  0x80000000, 0xFFFFFFFF, 1 << 63, MASK64, MASK64 - 1]) | st.integers(0, MASK64))
    if value < 1 << 8:
        return bytes([0x22, value])
    if value < 1 << 16:
        return bytes([0x23]) + value.to_bytes(2, "big")
    if value < 1 << 32:
        return bytes([0x24]) + value.to_bytes(4, "big")
    return bytes([0x25]) + value.to_bytes(8, "big")


def _seq(*parts):
    """Concatenate placeable parts (bytes or functions of the start offset)."""
    def place(start):
        out = b""
        for part in parts:
            out += part(start + len(out)) if callable(part) else part
        return out
    return place


@st.composite
def expressions(draw, depth=0):
    leaf = depth >= 4 or draw(st.integers(0, 3)) == 0
    if leaf:
        kind = draw(st.sampled_from(["const", "reg", "ref", "getv"]))
        if kind == "const":
            return _seq(_const(draw))
        if kind == "reg":
            return _seq(bytes([0x26, 0, draw(st.sampled_from([6, 15, 16]))]))
        if kind == "getv":
            return _seq(bytes([0x2C, 0, draw(st.integers(0, 3))]))
        size_op = draw(st.sampled_from([0x17, 0x18, 0x19, 0x1A]))
        where = draw(st.sampled_from(["mirror", "native", "bad", "edge"]))
        offset = draw(st.integers(0, 4095))
        if where == "mirror":
            address = offset
        elif where == "native":
            address = RIG_BASE[0] + offset
        elif where == "edge":
            address = 65536 - draw(st.integers(1, 8))
        else:
            address = draw(st.sampled_from([65536, 1 << 40, MASK64 - 2, RIG_BASE[0] - 1]))
        return _seq(bytes([0x25]) + address.to_bytes(8, "big") + bytes([size_op]))
    sub = lambda: draw(expressions(depth + 1))  # noqa: E731
    shape = draw(st.sampled_from(["binary", "unary", "ext", "stack", "cond", "setv", "ref"]))
    if shape == "binary":
        op = draw(st.sampled_from([0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
                                   0x0F, 0x10, 0x11, 0x13, 0x14, 0x15]))
        return _seq(sub(), sub(), bytes([op]))
    if shape == "unary":
        return _seq(sub(), bytes([draw(st.sampled_from([0x0E, 0x12]))]))
    if shape == "ext":
        return _seq(sub(), bytes([draw(st.sampled_from([0x16, 0x2A])),
                                  draw(st.sampled_from([1, 7, 8, 16, 31, 32, 63, 64]))]))
    if shape == "setv":
        return _seq(sub(), bytes([0x2D, 0, draw(st.integers(0, 3))]))
    if shape == "ref":
        # an address computed into the mirror: (x & 0xfff), then a read
        return _seq(sub(), bytes([0x23, 0x0F, 0xFF, 0x0F, draw(st.sampled_from([0x17, 0x18, 0x19, 0x1A]))]))
    if shape == "stack":
        a, b, c = sub(), sub(), sub()
        variant = draw(st.sampled_from(["dup", "swap", "pick", "rot", "pop"]))
        if variant == "dup":
            return _seq(a, bytes([0x28, 0x03]))                   # a dup sub
        if variant == "swap":
            return _seq(a, b, bytes([0x2B, 0x03]))                # a b swap sub
        if variant == "pick":
            return _seq(a, b, bytes([0x32, 0x01, 0x02, 0x03]))    # a b pick1 add sub
        if variant == "rot":
            return _seq(a, b, c, bytes([0x33, 0x03, 0x04]))       # a b c rot sub mul
        return _seq(a, b, bytes([0x29]))                          # a b pop
    c, a, b = sub(), sub(), sub()

    def conditional(start):
        # c if_goto L1; b; goto L2; L1: a; L2:
        c_code = c(start)
        b_start = start + len(c_code) + 3
        b_code = b(b_start)
        a_start = b_start + len(b_code) + 3
        a_code = a(a_start)
        end = a_start + len(a_code)
        return (c_code + bytes([0x20]) + a_start.to_bytes(2, "big") + b_code + bytes([0x21])
                + end.to_bytes(2, "big") + a_code)
    return conditional


@pytest.mark.timeout(300)
def test_compiled_conditions_agree_with_the_reference_evaluator(rig):
    RIG_BASE[0] = rig.memory.base

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(expressions())
    def check(place):
        body = place(0)
        if len(body) > MAX_LENGTH - 16:
            return
        expr = parse_agent_expr(body + b"\x27", register_ok=register_readable)
        regs = rig.registers()
        tsv = rig.tsv()
        reference = evaluate(expr, lambda n: regs[n], rig.read, dict(tsv))
        stops, hit = rig.run(expr)
        kind, _index, address, _size, error = hit
        if reference.error is not None:
            assert stops == 1 and kind == sitehooks.HIT_CONDITION_ERROR, (expr.disassemble(), reference, hit)
            expected = {"division": sitehooks.ERROR_DIVIDE_BY_ZERO, "cannot": sitehooks.ERROR_UNREADABLE}
            code = next(v for k, v in expected.items() if reference.error.startswith(k))
            assert error == code
            if code == sitehooks.ERROR_UNREADABLE:
                assert address == reference.fault_address
            return
        assert (stops, kind) == ((1, sitehooks.HIT_CONDITION) if reference.value else (0, sitehooks.HIT_NONE)), \
            (expr.disassemble(), reference.value, hit)
        # The exact value: "value != reference" must be false.
        exact = parse_agent_expr(body + bytes([0x25]) + reference.value.to_bytes(8, "big") + b"\x13\x0e\x27",
                                 register_ok=register_readable)
        for k, v in tsv.items():
            rig.area.write_u64(sitehooks.DATA_TSV + 8 * k, v)
        stops, hit = rig.run(exact)
        assert stops == 0 and hit[0] == sitehooks.HIT_NONE, (expr.disassemble(), hex(reference.value), hit)

    check()


def test_a_compiled_loop_stops_with_the_loop_budget_error(rig):
    stops, hit = rig.run(parse_agent_expr(bytes.fromhex("2100" "00")))
    assert stops == 1 and hit[0] == sitehooks.HIT_CONDITION_ERROR and hit[4] == sitehooks.ERROR_LOOP_BUDGET


def test_a_compiled_loop_that_ends_runs_every_iteration(rig):
    # v0 = 100; do { v0 -= 1 } while (v0); v0 == 0
    code = bytes.fromhex("2264" "2d0000" "29"         # 0: setv 0 = 100
                         "2c0000" "2201" "03" "2d0000"  # 6: v0 - 1 -> v0
                         "200006"                       # 15: if_goto 6 (nonzero)
                         "2c0000" "2200" "13" "27")     # 18: v0 == 0
    assert MAX_BACKWARD_JUMPS > 100
    stops, hit = rig.run(parse_agent_expr(code))
    assert stops == 1 and hit[0] == sitehooks.HIT_CONDITION


def test_the_veneer_preserves_every_register_and_the_flags(rig):
    """A false condition that uses every scratch register the veneer saves
    leaves the guest's registers and flags as they were.  A plain breakpoint
    at f's entry sets every register to a known value (the trampoline
    restores them), the veneer runs at the next site, and a plain breakpoint
    at the site after that records the registers: with and without the
    veneer they are the same."""
    table = rig.code.frame_table
    func = next(iter(table.functions()))
    sites = [rig.code.base + p.native_offset for p in table.sequence_points(func)
             if table.site_index(p.native_offset) is not None]
    assert len(sites) >= 3
    entry, hooked, after = sites[0], sites[1], sites[2]
    seen = []

    def on_stop(kind, code, regfile, vmctx):
        if regfile.rip == entry:
            for k in (0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14):  # not rsi (args), rbp, rsp, r15
                regfile.gpr[k] = 0x1111111111111111 * (k + 1) & MASK64
            regfile.rflags = 0x8D5 | 0x202  # every arithmetic flag set
            for i in range(16):
                for j in range(16):
                    regfile.xmm[i][j] = i * 16 + j
        elif regfile.rip == after:
            seen.append(bytes(ffi.buffer(regfile, 424)))

    rig.store.debug_handler = on_stop
    try:
        with rig.store.registry.patch_edit() as edit:
            edit.enable_site(rig.code, entry)
            edit.enable_site(rig.code, after)
        rig.f(3)
        # A false condition with memory reads, a division and a loop.
        code = bytes.fromhex("2201" "2d0001" "29" "2c0001" "2201" "03" "2d0001" "200006"
                             "2402000000" "2201" "05" "2210" "19" "02" "2200" "13" "0e" "0e" "27")
        moved = rig.area.build(hooked, [ConditionCheck(parse_agent_expr(code), 0)], compact_ok=True)
        with rig.store.registry.patch_edit() as edit:
            for pc, address in moved.items():
                edit.redirect_site(rig.code, pc, address)
        rig.area.take_hit()  # forget earlier tests' hits
        rig.f(3)
        assert rig.area.take_hit()[0] == sitehooks.HIT_NONE
    finally:
        with rig.store.registry.patch_edit() as edit:
            edit.disable_site(rig.code, entry)
            edit.disable_site(rig.code, after)
            edit.redirect_site(rig.code, hooked, None)
        rig.area.forget(hooked)
        rig.store.debug_handler = rig._on_stop
    assert len(seen) == 2
    before, with_veneer = seen
    # rsi (gpr 4) is the host's argument array, new for each call.
    assert before[:32] + before[40:] == with_veneer[:32] + with_veneer[40:]


# ------------------------------------------------------------------ dprintf

@pytest.mark.parametrize("fmt, args", [
    (b"plain text", []),
    (b"%d|%5d|%-4d|%+d|%05d", [(-3) & MASK64, 42, 7, 9, 12]),
    (b"%u %x %X %o %#x %#o", [(-1) & 0xFFFFFFFF, 255, 255, 8, 255, 8]),
    (b"%ld %lld %hhd %hd %lu %llx %zu", [(-1) & MASK64, 1 << 40, 0x1FF, 0x18000, MASK64, MASK64, 5]),
    (b"%c%c %p %10p", [ord("o"), ord("k"), 0x1000, 0xABC]),
    (b"100%% %d%%", [50]),
    (b"%.3d %8.3x", [7, 255]),
])
def test_the_c_agent_printf_formats_as_the_reference_does(fmt, args):
    from codemem.native import lib

    buf = ffi.new("char[4096]")
    words = ffi.new("uint64_t[]", args or [0])
    n = lib.cm_agent_format(buf, 4096, fmt, len(args), words, ffi.NULL)
    assert ffi.string(buf, n) == format_printf(fmt, args)


def test_the_c_agent_printf_reads_strings_only_through_the_region_table(rig):
    from codemem.native import lib

    rig.memory.write(0x300, b"hello\0")
    table = ffi.cast("uint64_t *", rig.area.data_address + sitehooks.DATA_REGIONS)
    buf = ffi.new("char[256]")
    fmt = b"[%s] [%s] [%8s]"
    words = ffi.new("uint64_t[]", [0x300, 1 << 40, rig.memory.base + 0x300])
    n = lib.cm_agent_format(buf, 256, fmt, 3, words, table)
    assert ffi.string(buf, n) == b"[hello] [<unreadable>] [   hello]"
    reference = format_printf(fmt, [0x300, 1 << 40, rig.memory.base + 0x300],
                              lambda a: b"hello" if a in (0x300, rig.memory.base + 0x300) else None)
    assert ffi.string(buf, n) == reference


def test_printf_format_escapes_are_expanded_and_bad_ones_refused():
    fmt = b'a\\tb\\n\\"q\\"\\\\\0'
    code = bytes.fromhex("2200" "2200") + bytes([0x34, 0]) + len(fmt).to_bytes(2, "big") + fmt + b"\x27"
    expr = parse_agent_expr(code)
    assert expr.instructions[2].operand == (0, b'a\tb\n"q"\\')
    bad = b"\\q\0"
    code = bytes.fromhex("2200" "2200") + bytes([0x34, 0]) + len(bad).to_bytes(2, "big") + bad + b"\x27"
    with pytest.raises(AgentExprError, match="unrecognized escape"):
        parse_agent_expr(code)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.binary(min_size=1, max_size=64) | st.lists(st.sampled_from(list(Op)), min_size=1, max_size=40).map(
    lambda ops: bytes(b for op in ops for b in ([op] + [1] * (8 if op is Op.CONST64 else 2)))))
def test_any_bytecode_is_refused_with_a_message_or_compiles(bytecode):
    """Whatever arrives in a Z0: an AgentExprError naming the problem, or a
    verified expression that compiles into a veneer (never another exception)."""
    try:
        expr = parse_agent_expr(bytecode, register_ok=register_readable)
    except AgentExprError as e:
        assert str(e)
        return
    area = _shared_rig().area
    area.build(_shared_rig().site, [ConditionCheck(expr, 0)], compact_ok=True)


_RIG = []


def _shared_rig() -> "VeneerRig":
    if not _RIG:
        _RIG.append(VeneerRig())
    return _RIG[0]
