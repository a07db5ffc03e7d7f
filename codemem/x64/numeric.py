"""Machine-code templates of the numeric wasm instructions, for the baseline compiler.

Contract: ``NUMERIC[opcode]`` is a builder ``build(a, d)`` that appends to ``a`` (a
:class:`TemplateAssembler`) the code of that instruction for an operand stack of
depth ``d`` *before* the instruction.  Operand-stack slot ``i`` is ``[rsp + 8*i]``
(rsp is the bottom of the operand stack in the function body, see
``codemem/abi.py``).  A template:

* reads its operands from, and writes its result to, those slots (the result of an
  instruction popping ``n`` operands lands in slot ``d - n``);
* uses only rax, rcx, rdx, xmm0-xmm2 and flags, and no memory but its slots;
* is position independent: internal jumps only, traps through
  :meth:`TemplateAssembler.trap_if` (a rel32 field the compiler points at an
  out-of-line trap stub of the instruction).

So a template depends only on ``(opcode, d)`` and the compiler caches its bytes.

Register form (the compiler's register cache, ``codemem/x64/regcache.py``):
``NUMERIC_OPERANDS[opcode]`` is the same code as a builder ``build(a, x, y)`` over
operand *locations*: ``x`` the first operand and the result, ``y`` the second
operand or None (``NUMERIC_ARITY[opcode]`` says which).  A location is a slot
(:class:`Mem`) or a general-purpose register other than rax/rcx/rdx (then it
holds the operand's whole 64-bit slot value, and afterwards the result as its
slot must hold it: 32-bit results zero-extended).  ``NUMERIC[op](a, d)`` is the
register form applied to slots.  A register ``x`` and ``y`` are distinct.

xmm0 reuse: a float instruction's chain through a mirror register costs a
GPR->xmm and an xmm->GPR move (about 7 cycles) on top of the operation, and
the next float instruction usually consumes the value the previous one left
in xmm0.  The compiler tracks which slots hold xmm0's value and, when an
operand's does, sets ``a.xmm0_holds``; the template then *verifies* the guess
(compare xmm0's low bits with the operand's register, off the critical path
when right, the branch predicted) and reloads xmm0 from the register when
wrong.  So the register stays the only source of truth (a debugger's write
to the slot, reloaded into the mirror on resume, is honoured) and a wrong
guess costs speed only.  Scalar SSE operations read and write only the low
lane, so xmm0's upper bits never matter.  ``XMM_X_INPUT`` / ``XMM_Y_INPUT``:
opcodes whose template takes the hint for x / y; ``XMM0_AFTER[op]``: what
xmm0 holds afterwards ("result", "x": the first operand's value, "keep":
untouched, "clobber": unknown).

Value representation (abi.py): i32/f32 are the low 32 bits of a slot, upper bits
unspecified; readers here always use 32-bit loads.  Results of 32-bit integer
operations are stored zero-extended (a 32-bit register write clears bits 32-63,
SDM Vol. 1 3.4.1.1), which keeps slots tidy for a debugger at no cost.

Float semantics follow the wasm spec 4.3.3 (IEEE 754-2019 with wasm's NaN rules):
x86 arithmetic returns a quiet NaN that is either the canonical NaN or a quieted
input NaN, which is exactly "canonical or arithmetic NaN"; min/max and the
conversions need explicit code (commented where it is).
"""
from __future__ import annotations

import struct
from typing import Callable

from ..abi import TrapCode
from ..wasm.opcodes import OP_BY_NAME
from .asm import Assembler, Cond, Mem, Reg, RoundMode, Xmm

RAX, RCX, RDX, RSP = Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSP
XMM0, XMM1, XMM2 = Xmm.XMM0, Xmm.XMM1, Xmm.XMM2


class TemplateAssembler(Assembler):
    """An Assembler whose code is a cacheable template: it may jump to the trap
    stub of the instruction being compiled, recorded in :attr:`traps` as
    ``(offset of the rel32 field, trap code)``.  A trap code of ``None`` means "the
    code the runtime left in the libcall area's trap slot"."""

    __slots__ = ("traps", "xmm0_holds", "_refs")

    def __init__(self) -> None:
        super().__init__()
        self.traps: list[tuple[int, int | None]] = []
        self._refs: list[tuple] = []
        #: The compiler's guess for a register-form float template (see
        #: "xmm0 reuse" in the module docstring): "x" or "y" if xmm0 probably
        #: already holds that operand's value, else None.
        self.xmm0_holds: str | None = None

    def _ref(self, pos: int, nbytes: int, label, anchor, addend: int) -> None:
        super()._ref(pos, nbytes, label, anchor, addend)
        self._refs.append((pos, nbytes, label, anchor, addend))

    def relocations(self) -> tuple[tuple[int, int, int, int], ...]:
        """After :meth:`finish`: every label reference in the template as
        ``(field offset, field bytes, target offset, anchor offset)`` (the
        field holds target - anchor), so the template can be moved apart
        (compiler._padded_template)."""
        return tuple((pos, nbytes, label._offset + addend, anchor if type(anchor) is int else anchor._offset)
                     for pos, nbytes, label, anchor, addend in self._refs)

    def trap_if(self, cond: Cond, code: int | None) -> None:
        """``jCC <trap stub>`` (rel32, resolved by the compiler)."""
        self.pad_for_branch(6, True)
        self.code += bytes((0x0F, 0x80 | cond, 0, 0, 0, 0))
        self.traps.append((len(self.code) - 4, code))

    def trap_always(self, code: int | None) -> None:
        """``jmp <trap stub>``."""
        self.pad_for_branch(5)
        self.code += b"\xe9\0\0\0\0"
        self.traps.append((len(self.code) - 4, code))


def slot(i: int) -> Mem:
    """Operand-stack slot ``i`` (0 = bottom)."""
    return Mem(RSP, 8 * i)


Builder = Callable[[TemplateAssembler, int], None]
OperandBuilder = Callable[[TemplateAssembler, "Mem | Reg", "Mem | Reg | None"], None]
NUMERIC: dict[int, Builder] = {}
NUMERIC_OPERANDS: dict[int, OperandBuilder] = {}
NUMERIC_ARITY: dict[int, int] = {}


def _on_slots(fn: OperandBuilder, arity: int) -> Builder:
    if arity == 2:
        def build(a: TemplateAssembler, d: int) -> None:
            fn(a, slot(d - 2), slot(d - 1))
    else:
        def build(a: TemplateAssembler, d: int) -> None:
            fn(a, slot(d - 1), None)
    return build


def _register(name: str, fn: OperandBuilder, arity: int) -> None:
    op = OP_BY_NAME[name]
    NUMERIC_OPERANDS[op] = fn
    NUMERIC_ARITY[op] = arity
    NUMERIC[op] = _on_slots(fn, arity)


def _verify_xmm0(a: TemplateAssembler, reg: Reg, size: int) -> None:
    """xmm0 = ``reg``'s low ``size`` bits, assuming it probably already is
    (module docstring "xmm0 reuse"): compare, and reload only if different."""
    same = a.new_label()
    if size == 32:
        a.movd(RAX, XMM0)
        a.cmp(RAX, reg, 32)
    else:
        a.movq(RAX, XMM0)
        a.cmp(RAX, reg, 64)
    a.jcc(Cond.E, same, short=True)
    _fload(a, XMM0, reg, size)
    a.bind(same)


def _fload_x(a: TemplateAssembler, x, size: int) -> None:
    """xmm0 = the first operand ``x`` (verified reuse when hinted).  Uses rax."""
    if a.xmm0_holds == "x" and type(x) is Reg:
        _verify_xmm0(a, x, size)
    else:
        _fload(a, XMM0, x, size)


def _sse_operand(a: TemplateAssembler, y, size: int, scratch: Xmm = XMM1):
    """An SSE instruction's second operand: ``y`` itself if it is a slot, else
    ``scratch`` loaded from the register (SSE takes xmm or memory only)."""
    if type(y) is Reg:
        _fload(a, scratch, y, size)
        return scratch
    return y


# --------------------------------------------------------------------------
# Integer
# --------------------------------------------------------------------------


def _alu(method, size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        if type(x) is Reg:
            method(a, x, y, size)  # a 32-bit result zero-extends (SDM Vol. 1 3.4.1.1)
            return
        a.mov(RAX, x, size)
        method(a, RAX, y, size)
        a.mov(x, RAX, 64)

    return build


def _shift(method, size: int) -> Builder:
    # x86 masks the count to 5/6 bits exactly as wasm does (spec 4.3.2 ishl: k mod N).
    def build(a: TemplateAssembler, x, y) -> None:
        a.mov(RCX, y, 32)
        if type(x) is Reg:
            method(a, x, RCX, size)  # a 32-bit result zero-extends (SDM Vol. 1 3.4.1.1)
            return
        a.mov(RAX, x, size)
        method(a, RAX, RCX, size)
        a.mov(x, RAX, 64)

    return build


def _compare(cond: Cond, size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        a.zero(RCX)
        if type(x) is Reg:
            a.cmp(x, y, size)
        else:
            a.mov(RAX, x, size)
            a.cmp(RAX, y, size)
        a.setcc(cond, RCX)
        a.mov(x, RCX, 64)

    return build


def _eqz(size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        a.zero(RAX)
        a.cmp(x, 0, size)
        a.setcc(Cond.E, RAX)
        a.mov(x, RAX, 64)

    return build


def _bitcount(method, size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        method(a, RAX, x, size)
        a.mov(x, RAX, 64)

    return build


def _div(size: int, signed: bool, remainder: bool) -> Builder:
    """Integer division (spec 4.3.2 idiv/irem): divisor 0 traps; for div_s,
    INT_MIN / -1 traps (the quotient overflows); rem_s by -1 is 0 (x86's idiv
    would fault on INT_MIN % -1, so that case never reaches it)."""

    def build(a: TemplateAssembler, x, y) -> None:
        a.mov(RAX, x, size)
        a.mov(RCX, y, size)
        a.test(RCX, RCX, size)
        a.trap_if(Cond.E, TrapCode.INTEGER_DIVIDE_BY_ZERO)
        if not signed:
            a.zero(RDX)
            a.div(RCX, size)
            a.mov(x, RDX if remainder else RAX, 64)
            return
        divide = a.new_label()
        done = a.new_label()
        a.cmp(RCX, -1, size)
        a.jcc(Cond.NE, divide, short=True)
        if remainder:
            a.zero(RDX)  # x rem_s -1 = 0
            a.jmp(done, short=True)
        else:
            if size == 32:
                a.cmp(RAX, -0x8000_0000, 32)
            else:
                a.mov(RDX, 1 << 63, 64)
                a.cmp(RAX, RDX, 64)
            a.trap_if(Cond.E, TrapCode.INTEGER_OVERFLOW)
        a.bind(divide)
        if size == 32:
            a.cdq()
        else:
            a.cqo()
        a.idiv(RCX, size)
        a.bind(done)
        a.mov(x, RDX if remainder else RAX, 64)

    return build


def _extend(size: int, src_size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        a.movsx(RAX, x, size, src_size)
        a.mov(x, RAX, 64)

    return build


def _zero_extend32(a: TemplateAssembler, x, y) -> None:
    # i64.extend_i32_u and i32.wrap_i64: the low 32 bits, zero-extended.
    a.mov(RAX, x, 32)
    a.mov(x, RAX, 64)


def _nothing(a: TemplateAssembler, x, y) -> None:
    """reinterpret: the slot's bits already are the result."""


for _bits, _t in ((32, "i32"), (64, "i64")):
    for _name, _m in (("add", Assembler.add), ("sub", Assembler.sub), ("and", Assembler.and_),
                      ("or", Assembler.or_), ("xor", Assembler.xor), ("mul", Assembler.imul)):
        _register(f"{_t}.{_name}", _alu(_m, _bits), 2)
    for _name, _m in (("shl", Assembler.shl), ("shr_s", Assembler.sar), ("shr_u", Assembler.shr),
                      ("rotl", Assembler.rol), ("rotr", Assembler.ror)):
        _register(f"{_t}.{_name}", _shift(_m, _bits), 2)
    for _name, _c in (("eq", Cond.E), ("ne", Cond.NE), ("lt_s", Cond.L), ("lt_u", Cond.B),
                      ("gt_s", Cond.G), ("gt_u", Cond.A), ("le_s", Cond.LE), ("le_u", Cond.BE),
                      ("ge_s", Cond.GE), ("ge_u", Cond.AE)):
        _register(f"{_t}.{_name}", _compare(_c, _bits), 2)
    _register(f"{_t}.eqz", _eqz(_bits), 1)
    # lzcnt/tzcnt return the operand width for 0, as wasm's clz/ctz (spec 4.3.2).
    _register(f"{_t}.clz", _bitcount(Assembler.lzcnt, _bits), 1)
    _register(f"{_t}.ctz", _bitcount(Assembler.tzcnt, _bits), 1)
    _register(f"{_t}.popcnt", _bitcount(Assembler.popcnt, _bits), 1)
    _register(f"{_t}.div_s", _div(_bits, True, False), 2)
    _register(f"{_t}.div_u", _div(_bits, False, False), 2)
    _register(f"{_t}.rem_s", _div(_bits, True, True), 2)
    _register(f"{_t}.rem_u", _div(_bits, False, True), 2)
    _register(f"{_t}.extend8_s", _extend(_bits, 8), 1)
    _register(f"{_t}.extend16_s", _extend(_bits, 16), 1)
_register("i64.extend32_s", _extend(64, 32), 1)
_register("i64.extend_i32_s", _extend(64, 32), 1)
_register("i64.extend_i32_u", _zero_extend32, 1)
_register("i32.wrap_i64", _zero_extend32, 1)
for _name in ("i32.reinterpret_f32", "i64.reinterpret_f64", "f32.reinterpret_i32", "f64.reinterpret_i64"):
    _register(_name, _nothing, 1)


# --------------------------------------------------------------------------
# Float
# --------------------------------------------------------------------------


def _fload(a: TemplateAssembler, xmm: Xmm, mem: Mem, size: int) -> None:
    if size == 32:
        a.movd(xmm, mem)
    else:
        a.movq(xmm, mem)


def _fstore(a: TemplateAssembler, mem: Mem, xmm: Xmm, size: int) -> None:
    if size == 32:
        a.movd(mem, xmm)
    else:
        a.movq(mem, xmm)


def _fconst(a: TemplateAssembler, xmm: Xmm, bits: int, size: int) -> None:
    """Load a float constant by its bits through rcx (no constant pool)."""
    a.mov(RCX, bits, 64)
    if size == 32:
        a.movd(xmm, RCX)
    else:
        a.movq(xmm, RCX)


def _fbin(op32, op64, size: int) -> Builder:
    method = op32 if size == 32 else op64

    def build(a: TemplateAssembler, x, y) -> None:
        if a.xmm0_holds == "y" and type(y) is Reg:
            _fload(a, XMM1, x, size)
            _verify_xmm0(a, y, size)
            method(a, XMM1, XMM0)
            a.movaps(XMM0, XMM1)  # the result in xmm0 for the next instruction
        else:
            _fload_x(a, x, size)
            method(a, XMM0, _sse_operand(a, y, size))
        _fstore(a, x, XMM0, size)

    return build


def _fminmax(size: int, is_min: bool) -> Builder:
    """wasm fmin/fmax (spec 4.3.3): NaN if either operand is NaN; -0 < +0.  x86
    minss/maxss return the second operand for NaNs and for equal zeros, so
    unordered and equal operands take their own paths: a NaN comes from an
    addition (which propagates a quiet NaN), equal values are combined bitwise
    (or: min picks -0, and: max picks +0; identical for other equal values)."""
    f32 = size == 32

    def build(a: TemplateAssembler, x, y) -> None:
        _fload_x(a, x, size)
        _fload(a, XMM1, y, size)
        unordered, different, done = a.new_label(), a.new_label(), a.new_label()
        (a.ucomiss if f32 else a.ucomisd)(XMM0, XMM1)
        a.jcc(Cond.P, unordered, short=True)
        a.jcc(Cond.NE, different, short=True)
        if is_min:
            (a.orps if f32 else a.orpd)(XMM0, XMM1)
        else:
            (a.andps if f32 else a.andpd)(XMM0, XMM1)
        a.jmp(done, short=True)
        a.bind(unordered)
        (a.addss if f32 else a.addsd)(XMM0, XMM1)
        a.jmp(done, short=True)
        a.bind(different)
        if is_min:
            (a.minss if f32 else a.minsd)(XMM0, XMM1)
        else:
            (a.maxss if f32 else a.maxsd)(XMM0, XMM1)
        a.bind(done)
        _fstore(a, x, XMM0, size)

    return build


def _fabs(size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        if size == 32:
            a.and_(x, 0x7FFF_FFFF, 32)
        else:
            a.mov(RAX, x, 64)
            a.shl(RAX, 1, 64)
            a.shr(RAX, 1, 64)
            a.mov(x, RAX, 64)

    return build


def _fneg(size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        if size == 32:
            a.xor(x, 0x8000_0000, 32)
        else:
            a.mov(RAX, 1 << 63, 64)
            a.xor(x, RAX, 64)

    return build


def _fcopysign(size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        if size == 32:
            a.mov(RAX, x, 32)
            a.and_(RAX, 0x7FFF_FFFF, 32)
            a.mov(RCX, y, 32)
            a.and_(RCX, 0x8000_0000, 32)
        else:
            a.mov(RAX, x, 64)
            a.shl(RAX, 1, 64)
            a.shr(RAX, 1, 64)
            a.mov(RCX, y, 64)
            a.shr(RCX, 63, 64)
            a.shl(RCX, 63, 64)
        a.or_(RAX, RCX, 64)
        a.mov(x, RAX, 64)

    return build


def _fround(size: int, mode: RoundMode) -> Builder:
    # SSE4.1 round (ceil/floor/trunc/nearest-even); NaNs come out quiet (arithmetic).
    def build(a: TemplateAssembler, x, y) -> None:
        _fload_x(a, x, size)
        (a.roundss if size == 32 else a.roundsd)(XMM0, XMM0, mode)
        _fstore(a, x, XMM0, size)

    return build


def _fsqrt(size: int) -> Builder:
    def build(a: TemplateAssembler, x, y) -> None:
        _fload_x(a, x, size)
        (a.sqrtss if size == 32 else a.sqrtsd)(XMM0, XMM0)
        _fstore(a, x, XMM0, size)

    return build


def _fcompare(size: int, kind: str) -> Builder:
    """Float comparisons: ucomis sets ZF,PF,CF = 1,1,1 for unordered operands, so
    every relation is false on NaN except ``ne`` (spec 4.3.3 feq/fne/flt...):
    lt/le compare swapped operands and use above/above-or-equal (CF=0 excludes
    unordered); eq needs ZF=1 and PF=0, ne ZF=0 or PF=1."""
    f32 = size == 32

    def build(a: TemplateAssembler, x, y) -> None:
        ucomi = a.ucomiss if f32 else a.ucomisd
        if kind in ("lt", "le"):
            # xmm1/xmm2 only: xmm0 keeps its value for a later instruction.
            a.zero(RAX)
            _fload(a, XMM1, y, size)
            ucomi(XMM1, _sse_operand(a, x, size, XMM2))
            a.setcc(Cond.A if kind == "lt" else Cond.AE, RAX)
        elif kind in ("gt", "ge"):
            _fload_x(a, x, size)
            a.zero(RAX)
            ucomi(XMM0, _sse_operand(a, y, size))
            a.setcc(Cond.A if kind == "gt" else Cond.AE, RAX)
        else:
            _fload_x(a, x, size)
            a.zero(RAX)
            a.zero(RCX)
            ucomi(XMM0, _sse_operand(a, y, size))
            if kind == "eq":
                a.setcc(Cond.E, RAX)
                a.setcc(Cond.NP, RCX)
                a.and_(RAX, RCX, 32)
            else:
                a.setcc(Cond.NE, RAX)
                a.setcc(Cond.P, RCX)
                a.or_(RAX, RCX, 32)
        a.mov(x, RAX, 64)

    return build


for _size, _t in ((32, "f32"), (64, "f64")):
    _register(f"{_t}.add", _fbin(Assembler.addss, Assembler.addsd, _size), 2)
    _register(f"{_t}.sub", _fbin(Assembler.subss, Assembler.subsd, _size), 2)
    _register(f"{_t}.mul", _fbin(Assembler.mulss, Assembler.mulsd, _size), 2)
    _register(f"{_t}.div", _fbin(Assembler.divss, Assembler.divsd, _size), 2)
    _register(f"{_t}.min", _fminmax(_size, True), 2)
    _register(f"{_t}.max", _fminmax(_size, False), 2)
    _register(f"{_t}.abs", _fabs(_size), 1)
    _register(f"{_t}.neg", _fneg(_size), 1)
    _register(f"{_t}.copysign", _fcopysign(_size), 2)
    _register(f"{_t}.ceil", _fround(_size, RoundMode.UP), 1)
    _register(f"{_t}.floor", _fround(_size, RoundMode.DOWN), 1)
    _register(f"{_t}.trunc", _fround(_size, RoundMode.TRUNC), 1)
    _register(f"{_t}.nearest", _fround(_size, RoundMode.NEAREST), 1)
    _register(f"{_t}.sqrt", _fsqrt(_size), 1)
    for _kind in ("eq", "ne", "lt", "gt", "le", "ge"):
        _register(f"{_t}.{_kind}", _fcompare(_size, _kind), 2)


# --------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------


def _f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _f64_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def _trunc_bounds(fsize: int, isize: int, signed: bool) -> tuple[int, int]:
    """``(low, high)`` float bit patterns such that trunc(x) fits the integer type
    exactly when ``low < x < high`` (spec 4.3.3 trunc: out of range -> trap).

    ``low`` is the largest float whose truncation is below the integer minimum:
    -1.0 for unsigned; for signed the float at or below -2^(N-1)-1, which is
    -2^(N-1) minus one ulp of the float type at that magnitude, except that
    -2^31-1 itself is an f64 (every value in (-2^31-1, -2^31] truncates to
    -2^31).  ``high`` is 2^N (unsigned) or 2^(N-1) (signed), exact in both types."""
    bits = _f32_bits if fsize == 32 else _f64_bits
    mantissa = 24 if fsize == 32 else 53
    if not signed:
        low = -1.0
        high = float(1 << isize)
    else:
        magnitude = 1 << (isize - 1)
        ulp = 1 << max(0, (isize - 1) - (mantissa - 1))
        low = -float(magnitude + max(ulp, 1))
        high = float(magnitude)
    return bits(low), bits(high)


#: Largest/smallest results of the saturating conversions, as raw slot values.
def _int_limits(isize: int, signed: bool) -> tuple[int, int]:
    if signed:
        return (1 << (isize - 1)), (1 << (isize - 1)) - 1  # min as its bit pattern
    return 0, (1 << isize) - 1


def _convert_in_range(a: TemplateAssembler, fsize: int, isize: int, signed: bool) -> None:
    """rax = trunc(xmm0), for xmm0 known to be in range (see _trunc_bounds)."""
    f32 = fsize == 32
    cvtt = a.cvttss2si if f32 else a.cvttsd2si
    if signed:
        cvtt(RAX, XMM0, isize)
    elif isize == 32:
        # [0, 2^32) fits a signed 64-bit conversion.
        cvtt(RAX, XMM0, 64)
    else:
        # [2^63, 2^64): subtract 2^63 (exact), convert, set bit 63 back.
        big, done = a.new_label(), a.new_label()
        _fconst(a, XMM1, (_f32_bits if f32 else _f64_bits)(float(1 << 63)), fsize)
        (a.ucomiss if f32 else a.ucomisd)(XMM0, XMM1)
        a.jcc(Cond.AE, big, short=True)
        cvtt(RAX, XMM0, 64)
        a.jmp(done, short=True)
        a.bind(big)
        (a.subss if f32 else a.subsd)(XMM0, XMM1)
        cvtt(RAX, XMM0, 64)
        a.mov(RCX, 1 << 63, 64)
        a.xor(RAX, RCX, 64)
        a.bind(done)


def _trunc(fsize: int, isize: int, signed: bool) -> Builder:
    """Trapping float->int truncation: NaN -> "invalid conversion to integer",
    out of range -> "integer overflow" (conversions.wast).

    Signed: convert first, check only when the result is the "integer
    indefinite" value 0x80..0 (SDM Vol. 2A CVTTSS2SI: what a NaN or an
    out-of-range input gives).  ``cmp r, 1`` overflows exactly for that value
    (INT_MIN - 1), so an in-range input costs the conversion, the compare and
    one predicted branch instead of three comparisons against constants.  An
    input that truncates to the minimum itself (-2^(N-1), and for f64 -> i32
    everything in (-2^31-1, -2^31]) also gives 0x80..0: the full range check
    below tells it from a NaN or an overflow, and leaves the result as is."""
    low, high = _trunc_bounds(fsize, isize, signed)
    f32 = fsize == 32

    def build(a: TemplateAssembler, x, y) -> None:
        ucomi = a.ucomiss if f32 else a.ucomisd
        _fload_x(a, x, fsize)
        if signed:
            done = a.new_label()
            _convert_in_range(a, fsize, isize, signed)
            a.cmp(RAX, 1, isize)
            a.jcc(Cond.NO, done, short=True)
            _check_trunc_range(a, ucomi, low, high, fsize)
            a.bind(done)
        else:
            _check_trunc_range(a, ucomi, low, high, fsize)
            _convert_in_range(a, fsize, isize, signed)
        a.mov(x, RAX, 64)

    return build


def _check_trunc_range(a: TemplateAssembler, ucomi, low: int, high: int, fsize: int) -> None:
    """Trap unless ``low < xmm0 < high`` (``_trunc_bounds``); a NaN traps as an
    invalid conversion, anything else out of range as an overflow.  Uses xmm1, rcx."""
    ucomi(XMM0, XMM0)
    a.trap_if(Cond.P, TrapCode.INVALID_CONVERSION)
    _fconst(a, XMM1, low, fsize)
    ucomi(XMM0, XMM1)
    a.trap_if(Cond.BE, TrapCode.INTEGER_OVERFLOW)
    _fconst(a, XMM1, high, fsize)
    ucomi(XMM0, XMM1)
    a.trap_if(Cond.AE, TrapCode.INTEGER_OVERFLOW)


def _trunc_sat(fsize: int, isize: int, signed: bool) -> Builder:
    """Saturating truncation (spec 4.3.3 trunc_sat): NaN -> 0, below range ->
    the minimum, above -> the maximum."""
    low, high = _trunc_bounds(fsize, isize, signed)
    minimum, maximum = _int_limits(isize, signed)
    f32 = fsize == 32

    def build(a: TemplateAssembler, x, y) -> None:
        ucomi = a.ucomiss if f32 else a.ucomisd
        done = a.new_label()
        _fload_x(a, x, fsize)
        a.zero(RAX)
        ucomi(XMM0, XMM0)
        a.jcc(Cond.P, done)
        a.mov(RAX, minimum, 64)
        _fconst(a, XMM1, low, fsize)
        ucomi(XMM0, XMM1)
        a.jcc(Cond.BE, done)
        a.mov(RAX, maximum, 64)
        _fconst(a, XMM1, high, fsize)
        ucomi(XMM0, XMM1)
        a.jcc(Cond.AE, done)
        _convert_in_range(a, fsize, isize, signed)
        a.bind(done)
        a.mov(x, RAX, 64)

    return build


def _convert(fsize: int, isize: int, signed: bool) -> Builder:
    """int -> float with one IEEE rounding (round to nearest even)."""
    f32 = fsize == 32
    cvt = Assembler.cvtsi2ss if f32 else Assembler.cvtsi2sd

    def build(a: TemplateAssembler, x, y) -> None:
        # Break the dependency on xmm0's old contents (cvtsi2s* merges).
        a.pxor(XMM0, XMM0)
        if signed:
            cvt(a, XMM0, x, isize)
        elif isize == 32:
            a.mov(RAX, x, 32)  # zero-extended: exact as a signed 64-bit value
            cvt(a, XMM0, RAX, 64)
        else:
            # u64 >= 2^63: halve with the lost bit or-ed in ("round to odd"), so
            # the single rounding of the conversion stays correct, then double.
            big, done = a.new_label(), a.new_label()
            a.mov(RAX, x, 64)
            a.test(RAX, RAX, 64)
            a.jcc(Cond.S, big, short=True)
            cvt(a, XMM0, RAX, 64)
            a.jmp(done, short=True)
            a.bind(big)
            a.mov(RCX, RAX, 64)
            a.shr(RCX, 1, 64)
            a.and_(RAX, 1, 32)
            a.or_(RCX, RAX, 64)
            cvt(a, XMM0, RCX, 64)
            (a.addss if f32 else a.addsd)(XMM0, XMM0)
            a.bind(done)
        _fstore(a, x, XMM0, fsize)

    return build


def _demote(a: TemplateAssembler, x, y) -> None:
    _fload_x(a, x, 64)
    a.cvtsd2ss(XMM0, XMM0)
    a.movd(x, XMM0)


def _promote(a: TemplateAssembler, x, y) -> None:
    _fload_x(a, x, 32)
    a.cvtss2sd(XMM0, XMM0)
    a.movq(x, XMM0)


for _isize, _it in ((32, "i32"), (64, "i64")):
    for _fsize, _ft in ((32, "f32"), (64, "f64")):
        for _signed, _s in ((True, "s"), (False, "u")):
            _register(f"{_it}.trunc_{_ft}_{_s}", _trunc(_fsize, _isize, _signed), 1)
            _register(f"{_it}.trunc_sat_{_ft}_{_s}", _trunc_sat(_fsize, _isize, _signed), 1)
            _register(f"{_ft}.convert_{_it}_{_s}", _convert(_fsize, _isize, _signed), 1)
_register("f32.demote_f64", _demote, 1)
_register("f64.promote_f32", _promote, 1)


# xmm0 reuse metadata (module docstring).
XMM_X_INPUT: frozenset[int]
XMM_Y_INPUT: frozenset[int]
XMM0_AFTER: dict[int, str] = {}


def _xmm_tables() -> tuple[frozenset, frozenset]:
    x_input, y_input = set(), set()
    for t in ("f32", "f64"):
        for name in ("add", "sub", "mul", "div"):
            x_input.add(OP_BY_NAME[f"{t}.{name}"])
            y_input.add(OP_BY_NAME[f"{t}.{name}"])
            XMM0_AFTER[OP_BY_NAME[f"{t}.{name}"]] = "result"
        for name in ("min", "max", "ceil", "floor", "trunc", "nearest", "sqrt"):
            x_input.add(OP_BY_NAME[f"{t}.{name}"])
            XMM0_AFTER[OP_BY_NAME[f"{t}.{name}"]] = "result"
        for name in ("gt", "ge", "eq", "ne"):
            x_input.add(OP_BY_NAME[f"{t}.{name}"])
            XMM0_AFTER[OP_BY_NAME[f"{t}.{name}"]] = "x"
        for name in ("lt", "le", "abs", "neg", "copysign"):
            XMM0_AFTER[OP_BY_NAME[f"{t}.{name}"]] = "keep"
        for it in ("i32", "i64"):
            for sign in ("s", "u"):
                XMM0_AFTER[OP_BY_NAME[f"{t}.convert_{it}_{sign}"]] = "result"
                for kind in ("trunc", "trunc_sat"):
                    op = OP_BY_NAME[f"{it}.{kind}_{t}_{sign}"]
                    x_input.add(op)
                    # The u64 path subtracts 2^63 in xmm0.
                    XMM0_AFTER[op] = "clobber" if (it == "i64" and sign == "u") else "x"
    for name in ("f32.demote_f64", "f64.promote_f32"):
        x_input.add(OP_BY_NAME[name])
        XMM0_AFTER[OP_BY_NAME[name]] = "result"
    # Integer instructions and reinterpretations use no xmm register.
    for op in NUMERIC:
        XMM0_AFTER.setdefault(op, "keep")
    return frozenset(x_input), frozenset(y_input)


XMM_X_INPUT, XMM_Y_INPUT = _xmm_tables()


def build_template(op: int, d: int) -> tuple[bytes, tuple[tuple[int, int | None], ...]]:
    """The template of numeric opcode ``op`` at depth ``d``: (code, trap fields)."""
    a = TemplateAssembler()
    NUMERIC[op](a, d)
    return a.finish(), tuple(a.traps)
