"""The WebAssembly 2.0 opcode table, without SIMD (spec 5.4 "Instructions").

Each instruction has an int code: single-byte opcodes are their byte, 0xFC-prefixed
ones are ``0xFC00 | subopcode`` (so ``i32.trunc_sat_f32_s`` is 0xFC00 and
``table.fill`` is 0xFC11). ``OPCODES[code]`` describes it: text name, the kind of
immediate (``Imm``) that ``instructions.read_instructions`` decodes into
``Instr.imm``, and for instructions whose operand types never depend on context,
the fixed signature ``params -> results`` (``None`` otherwise).

Immediate shapes in ``Instr.imm``, by kind:

=============  ==============================================================
NONE           ``None``
BLOCKTYPE      ``None`` (empty), a ``ValType`` (one result), or an int type index
LABEL          int label depth (br, br_if)
BR_TABLE       ``(labels: tuple[int, ...], default: int)``
FUNC           int function index (call, ref.func)
CALL_INDIRECT  ``(type_index, table_index)``
LOCAL/GLOBAL   int index
TABLE          int table index (table.get/set/size/grow/fill)
MEMARG         ``(align_log2, offset)``, both u32 as encoded
MEMORY         int memory index, always 0 in 2.0 (memory.size/grow/fill)
I32/I64        the signed value (Python int in the signed range)
F32/F64        the raw IEEE bits as an unsigned int (NaN payloads survive)
SELECT_T       ``tuple[ValType, ...]`` (typed select; untyped select is NONE)
REFTYPE        ``ValType`` (ref.null)
DATA/ELEM      int segment index (data.drop, memory.init / elem.drop)
MEMORY_COPY    ``(dst_memory, src_memory)``, always (0, 0) in 2.0
TABLE_INIT     ``(elem_index, table_index)`` (binary order: segment first)
TABLE_COPY     ``(dst_table, src_table)``
=============  ==============================================================
"""
from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from .types import ValType

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64


class Imm(IntEnum):
    """Immediate kinds; see the module docstring for each one's decoded shape."""

    NONE = 0
    BLOCKTYPE = 1
    LABEL = 2
    BR_TABLE = 3
    FUNC = 4
    CALL_INDIRECT = 5
    LOCAL = 6
    GLOBAL = 7
    TABLE = 8
    MEMARG = 9
    MEMORY = 10
    I32 = 11
    I64 = 12
    F32 = 13
    F64 = 14
    SELECT_T = 15
    REFTYPE = 16
    DATA = 17
    ELEM = 18
    MEMORY_INIT = 19
    MEMORY_COPY = 20
    TABLE_INIT = 21
    TABLE_COPY = 22


class OpInfo(NamedTuple):
    """One opcode. ``params``/``results`` are set only for fixed-signature
    instructions; ``natural_align`` (log2 bytes) only for loads and stores."""

    code: int
    name: str
    imm: Imm
    params: tuple[ValType, ...] | None = None
    results: tuple[ValType, ...] | None = None
    natural_align: int | None = None


PREFIX_FC = 0xFC
PREFIX_SIMD = 0xFD

OPCODES: dict[int, OpInfo] = {}


def _op(code: int, name: str, imm: Imm = Imm.NONE, params=None, results=None, natural_align=None) -> None:
    assert code not in OPCODES, hex(code)
    OPCODES[code] = OpInfo(code, name, imm,
                           tuple(params) if params is not None else None,
                           tuple(results) if results is not None else None,
                           natural_align)


def _build() -> None:
    # Control (spec 5.4.1).
    _op(0x00, "unreachable")
    _op(0x01, "nop", params=(), results=())
    _op(0x02, "block", Imm.BLOCKTYPE)
    _op(0x03, "loop", Imm.BLOCKTYPE)
    _op(0x04, "if", Imm.BLOCKTYPE)
    _op(0x05, "else")
    _op(0x0B, "end")
    _op(0x0C, "br", Imm.LABEL)
    _op(0x0D, "br_if", Imm.LABEL)
    _op(0x0E, "br_table", Imm.BR_TABLE)
    _op(0x0F, "return")
    _op(0x10, "call", Imm.FUNC)
    _op(0x11, "call_indirect", Imm.CALL_INDIRECT)
    # Reference (5.4.2) and parametric (5.4.3).
    _op(0xD0, "ref.null", Imm.REFTYPE)
    _op(0xD1, "ref.is_null")
    _op(0xD2, "ref.func", Imm.FUNC)
    _op(0x1A, "drop")
    _op(0x1B, "select")
    _op(0x1C, "select", Imm.SELECT_T)
    # Variable (5.4.4) and table (5.4.5).
    _op(0x20, "local.get", Imm.LOCAL)
    _op(0x21, "local.set", Imm.LOCAL)
    _op(0x22, "local.tee", Imm.LOCAL)
    _op(0x23, "global.get", Imm.GLOBAL)
    _op(0x24, "global.set", Imm.GLOBAL)
    _op(0x25, "table.get", Imm.TABLE)
    _op(0x26, "table.set", Imm.TABLE)
    _op(0xFC0C, "table.init", Imm.TABLE_INIT)
    _op(0xFC0D, "elem.drop", Imm.ELEM)
    _op(0xFC0E, "table.copy", Imm.TABLE_COPY)
    _op(0xFC0F, "table.grow", Imm.TABLE)
    _op(0xFC10, "table.size", Imm.TABLE)
    _op(0xFC11, "table.fill", Imm.TABLE)
    # Memory (5.4.6).
    loads = [("i32.load", I32, 2), ("i64.load", I64, 3), ("f32.load", F32, 2), ("f64.load", F64, 3),
             ("i32.load8_s", I32, 0), ("i32.load8_u", I32, 0), ("i32.load16_s", I32, 1),
             ("i32.load16_u", I32, 1), ("i64.load8_s", I64, 0), ("i64.load8_u", I64, 0),
             ("i64.load16_s", I64, 1), ("i64.load16_u", I64, 1), ("i64.load32_s", I64, 2),
             ("i64.load32_u", I64, 2)]
    for i, (name, t, align) in enumerate(loads):
        _op(0x28 + i, name, Imm.MEMARG, (I32,), (t,), align)
    stores = [("i32.store", I32, 2), ("i64.store", I64, 3), ("f32.store", F32, 2), ("f64.store", F64, 3),
              ("i32.store8", I32, 0), ("i32.store16", I32, 1), ("i64.store8", I64, 0),
              ("i64.store16", I64, 1), ("i64.store32", I64, 2)]
    for i, (name, t, align) in enumerate(stores):
        _op(0x36 + i, name, Imm.MEMARG, (I32, t), (), align)
    _op(0x3F, "memory.size", Imm.MEMORY, (), (I32,))
    _op(0x40, "memory.grow", Imm.MEMORY, (I32,), (I32,))
    _op(0xFC08, "memory.init", Imm.MEMORY_INIT, (I32, I32, I32), ())
    _op(0xFC09, "data.drop", Imm.DATA, (), ())
    _op(0xFC0A, "memory.copy", Imm.MEMORY_COPY, (I32, I32, I32), ())
    _op(0xFC0B, "memory.fill", Imm.MEMORY, (I32, I32, I32), ())
    # Numeric (5.4.7).
    _op(0x41, "i32.const", Imm.I32, (), (I32,))
    _op(0x42, "i64.const", Imm.I64, (), (I64,))
    _op(0x43, "f32.const", Imm.F32, (), (F32,))
    _op(0x44, "f64.const", Imm.F64, (), (F64,))

    def run(start: int, names: str, params, results) -> None:
        for i, name in enumerate(names.split()):
            _op(start + i, name, Imm.NONE, params, results)

    cmp = "eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u"
    fcmp = "eq ne lt gt le ge"
    ibin = "add sub mul div_s div_u rem_s rem_u and or xor shl shr_s shr_u rotl rotr"
    fun = "abs neg ceil floor trunc nearest sqrt"
    fbin = "add sub mul div min max copysign"

    def pre(p: str, names: str) -> str:
        return " ".join(f"{p}.{n}" for n in names.split())

    run(0x45, "i32.eqz", (I32,), (I32,))
    run(0x46, pre("i32", cmp), (I32, I32), (I32,))
    run(0x50, "i64.eqz", (I64,), (I32,))
    run(0x51, pre("i64", cmp), (I64, I64), (I32,))
    run(0x5B, pre("f32", fcmp), (F32, F32), (I32,))
    run(0x61, pre("f64", fcmp), (F64, F64), (I32,))
    run(0x67, "i32.clz i32.ctz i32.popcnt", (I32,), (I32,))
    run(0x6A, pre("i32", ibin), (I32, I32), (I32,))
    run(0x79, "i64.clz i64.ctz i64.popcnt", (I64,), (I64,))
    run(0x7C, pre("i64", ibin), (I64, I64), (I64,))
    run(0x8B, pre("f32", fun), (F32,), (F32,))
    run(0x92, pre("f32", fbin), (F32, F32), (F32,))
    run(0x99, pre("f64", fun), (F64,), (F64,))
    run(0xA0, pre("f64", fbin), (F64, F64), (F64,))
    conversions = [
        ("i32.wrap_i64", I64, I32), ("i32.trunc_f32_s", F32, I32), ("i32.trunc_f32_u", F32, I32),
        ("i32.trunc_f64_s", F64, I32), ("i32.trunc_f64_u", F64, I32),
        ("i64.extend_i32_s", I32, I64), ("i64.extend_i32_u", I32, I64),
        ("i64.trunc_f32_s", F32, I64), ("i64.trunc_f32_u", F32, I64),
        ("i64.trunc_f64_s", F64, I64), ("i64.trunc_f64_u", F64, I64),
        ("f32.convert_i32_s", I32, F32), ("f32.convert_i32_u", I32, F32),
        ("f32.convert_i64_s", I64, F32), ("f32.convert_i64_u", I64, F32), ("f32.demote_f64", F64, F32),
        ("f64.convert_i32_s", I32, F64), ("f64.convert_i32_u", I32, F64),
        ("f64.convert_i64_s", I64, F64), ("f64.convert_i64_u", I64, F64), ("f64.promote_f32", F32, F64),
        ("i32.reinterpret_f32", F32, I32), ("i64.reinterpret_f64", F64, I64),
        ("f32.reinterpret_i32", I32, F32), ("f64.reinterpret_i64", I64, F64),
        ("i32.extend8_s", I32, I32), ("i32.extend16_s", I32, I32),
        ("i64.extend8_s", I64, I64), ("i64.extend16_s", I64, I64), ("i64.extend32_s", I64, I64),
    ]
    for i, (name, src, dst) in enumerate(conversions):
        _op(0xA7 + i, name, Imm.NONE, (src,), (dst,))
    saturating = [("i32.trunc_sat_f32_s", F32, I32), ("i32.trunc_sat_f32_u", F32, I32),
                  ("i32.trunc_sat_f64_s", F64, I32), ("i32.trunc_sat_f64_u", F64, I32),
                  ("i64.trunc_sat_f32_s", F32, I64), ("i64.trunc_sat_f32_u", F32, I64),
                  ("i64.trunc_sat_f64_s", F64, I64), ("i64.trunc_sat_f64_u", F64, I64)]
    for i, (name, src, dst) in enumerate(saturating):
        _op(0xFC00 + i, name, Imm.NONE, (src,), (dst,))


_build()
assert max(c for c in OPCODES if c < 0x100) == 0xD2 and OPCODES[0xC4].name == "i64.extend32_s"

#: Text name -> code. ``select`` maps to the untyped 0x1B; typed select is 0x1C.
OP_BY_NAME: dict[str, int] = {}
for _code, _info in sorted(OPCODES.items(), reverse=True):
    OP_BY_NAME[_info.name] = _code
del _code, _info
