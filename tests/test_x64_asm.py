"""Encodings of codemem.x64.asm, checked against capstone's disassembly.

Every check assembles one instruction, disassembles it with capstone (x86-64,
Intel syntax) and requires exactly one instruction that consumes every byte and
prints exactly the expected mnemonic and operands. Expected text is built here from
the test's own register-name tables, independently of the encoder.

Capstone prints an immediate either signed ("-1") or as the unsigned pattern of
the operand width ("0xffffffff") depending on the opcode form; :func:`imm_texts`
accepts exactly those two spellings of the same value at the same width.
"""
from __future__ import annotations

import capstone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codemem.x64.asm import (
    ROUND_SUPPRESS_PRECISION,
    Assembler,
    CmpPred,
    Cond,
    EncodingError,
    Label,
    Mem,
    Reg,
    RipLabel,
    RoundMode,
    Xmm,
)

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)

R64 = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()
R32 = "eax ecx edx ebx esp ebp esi edi r8d r9d r10d r11d r12d r13d r14d r15d".split()
R16 = "ax cx dx bx sp bp si di r8w r9w r10w r11w r12w r13w r14w r15w".split()
R8 = "al cl dl bl spl bpl sil dil r8b r9b r10b r11b r12b r13b r14b r15b".split()
NAMES = {8: R8, 16: R16, 32: R32, 64: R64}
PTR = {8: "byte", 16: "word", 32: "dword", 64: "qword", 128: "xmmword"}
SIZES = [8, 16, 32, 64]
CC = "o no b ae e ne be a s ns p np l ge le g".split()

REGS = list(Reg)
XMMS = list(Xmm)
INDEXES = [r for r in Reg if r != Reg.RSP]

SETTINGS = settings(max_examples=120, deadline=None)


# ----------------------------------------------------------------- helpers


def rn(reg: int, size: int) -> str:
    return NAMES[size][reg]


def xn(x: int) -> str:
    return f"xmm{x}"


def num(v: int) -> str:
    """Capstone's number style: 0..9 in decimal, larger in hex, '-' for negatives."""
    if v < 0:
        return "-" + num(-v)
    return str(v) if v <= 9 else hex(v)


def imm_texts(v: int, size: int) -> set[str]:
    mask = (1 << size) - 1
    unsigned = v & mask
    signed = unsigned - (1 << size) if unsigned >> (size - 1) else unsigned
    return {num(unsigned), num(signed)}


def mem_inner(base, disp, index, scale) -> str:
    parts = []
    if base is not None:
        parts.append(R64[base])
    if index is not None:
        parts.append(R64[index] + (f"*{scale}" if scale != 1 else ""))
    if not parts:  # absolute disp32, sign-extended to 64 bits
        return num(disp & (2**64 - 1))
    text = " + ".join(parts)
    if disp > 0:
        text += f" + {num(disp)}"
    elif disp < 0:
        text += f" - {num(-disp)}"
    return text


def rip_inner(rel: int) -> str:
    return "rip" if rel == 0 else (f"rip + {num(rel)}" if rel > 0 else f"rip - {num(-rel)}")


def dis(code: bytes, address: int = 0) -> str:
    """The single instruction in ``code``, as 'mnemonic operands'."""
    insns = list(MD.disasm(code, address))
    assert len(insns) == 1, (code.hex(), [(i.mnemonic, i.op_str) for i in insns])
    assert insns[0].size == len(code), (code.hex(), insns[0].size)
    return f"{insns[0].mnemonic} {insns[0].op_str}".rstrip()


def enc(emit) -> bytes:
    a = Assembler()
    emit(a)
    return a.finish()


def check(emit, *expected: str | set[str] | list[str]) -> bytes:
    """Assemble with ``emit(asm)``; capstone must print one of ``expected``."""
    allowed: set[str] = set()
    for e in expected:
        allowed |= {e} if isinstance(e, str) else set(e)
    code = enc(emit)
    text = dis(code)
    assert text in allowed, (code.hex(), text, allowed)
    return code


disps = st.one_of(
    st.just(0),
    st.integers(-128, 127),
    st.sampled_from([-129, 128, -(2**31), 2**31 - 1, 8, -8]),
    st.integers(-(2**31), 2**31 - 1),
)


@st.composite
def mems(draw, allow_absolute: bool = True):
    """(Mem, text inside the brackets)."""
    bases = st.sampled_from(REGS)
    base = draw(st.one_of(bases, st.none()) if allow_absolute else bases)
    index = draw(st.one_of(st.none(), st.sampled_from(INDEXES)))
    scale = draw(st.sampled_from([1, 2, 4, 8])) if index is not None else 1
    disp = draw(disps)
    return Mem(base, disp, index, scale), mem_inner(base, disp, index, scale)


regs = st.sampled_from(REGS)
xmms = st.sampled_from(XMMS)
sizes = st.sampled_from(SIZES)


def imms(size: int):
    """Immediates valid for a size-bit ALU op (64-bit: sign-extended imm32)."""
    if size == 64:
        return st.one_of(st.integers(-128, 127), st.integers(-(2**31), 2**31 - 1))
    return st.one_of(st.integers(-128, 255), st.integers(-(2 ** (size - 1)), 2**size - 1))


# -------------------------------------------------------- memory operands


@SETTINGS
@given(reg=regs, mem=mems(), size=sizes)
def test_mov_load_store_all_addressing_forms(reg, mem, size):
    m, inner = mem
    check(lambda a: a.mov(reg, m, size), f"mov {rn(reg, size)}, {PTR[size]} ptr [{inner}]")
    check(lambda a: a.mov(m, reg, size), f"mov {PTR[size]} ptr [{inner}], {rn(reg, size)}")


@pytest.mark.parametrize("base", [Reg.RSP, Reg.RBP, Reg.R12, Reg.R13, Reg.RAX, Reg.R8])
@pytest.mark.parametrize("disp", [0, 8, -8, 127, 128, -128, -129, 0x7FFFFFFF, -0x80000000])
def test_special_bases(base, disp):
    """RSP/R12 need a SIB; RBP/R13 with no displacement need a zero disp8."""
    inner = mem_inner(base, disp, None, 1)
    code = check(lambda a: a.mov(Reg.RAX, Mem(base, disp), 64), f"mov rax, qword ptr [{inner}]")
    disp_len = 0 if disp == 0 and base not in (Reg.RBP, Reg.R13) else 1 if -128 <= disp <= 127 else 4
    sib = 1 if base in (Reg.RSP, Reg.R12) else 0
    assert len(code) == 3 + sib + disp_len  # REX.W 8B ModRM [SIB] disp


@pytest.mark.parametrize("index", INDEXES)
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_every_index_register_and_scale(index, scale):
    for base in (Reg.RSP, Reg.RBP, Reg.R12, Reg.R13, None):
        inner = mem_inner(base, -16, index, scale)
        check(lambda a: a.lea(Reg.R11, Mem(base, -16, index, scale)), f"lea r11, [{inner}]")


@SETTINGS
@given(reg=regs, mem=mems(), size=st.sampled_from([16, 32, 64]))
def test_lea(reg, mem, size):
    m, inner = mem
    check(lambda a: a.lea(reg, m, size), f"lea {rn(reg, size)}, [{inner}]")


def test_mem_rejects_unencodable_forms():
    with pytest.raises(EncodingError):
        Mem(Reg.RAX, 0, Reg.RSP)
    with pytest.raises(EncodingError):
        Mem(Reg.RAX, 0, Reg.RCX, 3)
    with pytest.raises(EncodingError):
        Mem(Reg.RAX, 0, None, 4)
    with pytest.raises(EncodingError):
        Mem(Reg.RAX, 2**31)
    with pytest.raises(EncodingError):
        Mem(Reg.RAX, -(2**31) - 1)
    with pytest.raises(EncodingError):
        Mem(Xmm.XMM1, 0)  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        RipLabel(3)  # type: ignore[arg-type]
    assert isinstance(Mem.rip(Assembler().new_label()), Mem)


# -------------------------------------------------------- integer: moves


@pytest.mark.parametrize("size", SIZES)
def test_mov_reg_reg_all_pairs(size):
    for d in REGS:
        for s in REGS:
            check(lambda a: a.mov(d, s, size), f"mov {rn(d, size)}, {rn(s, size)}")


@SETTINGS
@given(reg=regs, size=sizes, data=st.data())
def test_mov_reg_imm(reg, size, data):
    imm = data.draw(st.integers(-(2 ** (size - 1)), 2**size - 1))
    if size == 64:
        v = imm & (2**64 - 1)
        if v < 2**32:
            expected = {f"mov {rn(reg, 32)}, {num(v)}"}
        elif v >= 2**64 - 2**31:
            expected = {f"mov {rn(reg, 64)}, {t}" for t in imm_texts(v, 64)}
        else:
            expected = {f"movabs {rn(reg, 64)}, {t}" for t in imm_texts(v, 64)}
    else:
        expected = {f"mov {rn(reg, size)}, {t}" for t in imm_texts(imm, size)}
    check(lambda a: a.mov(reg, imm, size), expected)


@pytest.mark.parametrize(
    "imm, length",
    [(0, 5), (0xFFFFFFFF, 5), (-1, 7), (-(2**31), 7), (2**32, 10), (2**63, 10), (-(2**31) - 1, 10)],
)
def test_mov_reg_imm64_picks_shortest(imm, length):
    assert len(enc(lambda a: a.mov(Reg.RAX, imm, 64))) == length


@SETTINGS
@given(reg=regs, imm=st.integers(-(2**63), 2**64 - 1))
def test_mov_imm64_is_always_movabs(reg, imm):
    a = Assembler()
    a.nop(3)
    at = a.mov_imm64(reg, imm)
    code = a.finish()
    assert at == 5 and len(code) == 13
    assert code[at:] == (imm & (2**64 - 1)).to_bytes(8, "little")
    text = dis(code[3:])
    assert text in {f"movabs {rn(reg, 64)}, {t}" for t in imm_texts(imm, 64)}


@SETTINGS
@given(mem=mems(), size=sizes, data=st.data())
def test_mov_mem_imm(mem, size, data):
    m, inner = mem
    imm = data.draw(imms(size))
    check(lambda a: a.mov(m, imm, size), {f"mov {PTR[size]} ptr [{inner}], {t}" for t in imm_texts(imm, size)})


def test_zero():
    for r in REGS:
        check(lambda a: a.zero(r), f"xor {rn(r, 32)}, {rn(r, 32)}")


@SETTINGS
@given(dst=regs, src=regs, mem=mems(), data=st.data())
def test_movzx_movsx(dst, src, mem, data):
    m, inner = mem
    size = data.draw(st.sampled_from([16, 32, 64]))
    for src_size in (8, 16):
        if src_size == 16 and size == 16:
            continue
        sp = f"{PTR[src_size]} ptr [{inner}]"
        check(lambda a: a.movzx(dst, src, size, src_size), f"movzx {rn(dst, size)}, {rn(src, src_size)}")
        check(lambda a: a.movzx(dst, m, size, src_size), f"movzx {rn(dst, size)}, {sp}")
        check(lambda a: a.movsx(dst, src, size, src_size), f"movsx {rn(dst, size)}, {rn(src, src_size)}")
        check(lambda a: a.movsx(dst, m, size, src_size), f"movsx {rn(dst, size)}, {sp}")
    check(lambda a: a.movsx(dst, src, 64, 32), f"movsxd {rn(dst, 64)}, {rn(src, 32)}")
    check(lambda a: a.movsxd(dst, m), f"movsxd {rn(dst, 64)}, dword ptr [{inner}]")


def test_movzx_byte_registers_sil_dil():
    check(lambda a: a.movzx(Reg.RAX, Reg.RSI, 32, 8), "movzx eax, sil")
    check(lambda a: a.movzx(Reg.RAX, Reg.RDI, 32, 8), "movzx eax, dil")
    check(lambda a: a.movsx(Reg.RCX, Reg.RSP, 64, 8), "movsx rcx, spl")
    check(lambda a: a.movsx(Reg.RCX, Reg.RBP, 32, 8), "movsx ecx, bpl")
    # A REX.W already present also selects dil, not bh.
    check(lambda a: a.movzx(Reg.RAX, Reg.RDI, 64, 8), "movzx rax, dil")


def test_byte_ops_on_sil_dil_spl_bpl():
    for r in (Reg.RSP, Reg.RBP, Reg.RSI, Reg.RDI):
        n = R8[r]
        check(lambda a: a.mov(r, Reg.RAX, 8), f"mov {n}, al")
        check(lambda a: a.mov(Reg.RAX, r, 8), f"mov al, {n}")
        check(lambda a: a.mov(r, 0x7F, 8), f"mov {n}, 0x7f")
        check(lambda a: a.add(r, 1, 8), f"add {n}, 1")
        check(lambda a: a.and_(Reg.RCX, r, 8), f"and cl, {n}")
        check(lambda a: a.test(r, r, 8), f"test {n}, {n}")
        check(lambda a: a.test(r, 1, 8), f"test {n}, 1")
        check(lambda a: a.setcc(Cond.E, r), f"sete {n}")
        check(lambda a: a.neg(r, 8), f"neg {n}")
        check(lambda a: a.shl(r, 3, 8), f"shl {n}, 3")
        check(lambda a: a.xchg(r, Reg.RBX, 8), f"xchg {n}, bl")
        check(lambda a: a.mov(Mem(Reg.RAX), r, 8), f"mov byte ptr [rax], {n}")


@SETTINGS
@given(a_=regs, b=regs, mem=mems(), size=sizes)
def test_xchg(a_, b, mem, size):
    m, inner = mem
    check(lambda a: a.xchg(a_, b, size), f"xchg {rn(a_, size)}, {rn(b, size)}")
    check(lambda a: a.xchg(m, b, size), f"xchg {PTR[size]} ptr [{inner}], {rn(b, size)}")
    check(lambda a: a.xchg(b, m, size), f"xchg {PTR[size]} ptr [{inner}], {rn(b, size)}")


@SETTINGS
@given(reg=regs, mem=mems(), imm=st.integers(-(2**31), 2**31 - 1))
def test_push_pop(reg, mem, imm):
    m, inner = mem
    check(lambda a: a.push(reg), f"push {rn(reg, 64)}")
    check(lambda a: a.pop(reg), f"pop {rn(reg, 64)}")
    check(lambda a: a.push(m), f"push qword ptr [{inner}]")
    check(lambda a: a.pop(m), f"pop qword ptr [{inner}]")
    check(lambda a: a.push(imm), {f"push {t}" for t in imm_texts(imm, 64)})
    assert len(enc(lambda a: a.push(imm))) == (2 if -128 <= imm <= 127 else 5)


# -------------------------------------------------- integer: arithmetic


ALU = [("add", "add"), ("or_", "or"), ("adc", "adc"), ("sbb", "sbb"), ("and_", "and"), ("sub", "sub"), ("xor", "xor"), ("cmp", "cmp")]


@pytest.mark.parametrize("method, mnem", ALU)
def test_alu_reg_reg_all_pairs(method, mnem):
    for size in SIZES:
        for d in REGS:
            for s in REGS:
                check(lambda a: getattr(a, method)(d, s, size), f"{mnem} {rn(d, size)}, {rn(s, size)}")


@pytest.mark.parametrize("method, mnem", ALU)
@settings(max_examples=60, deadline=None)
@given(reg=regs, mem=mems(), size=sizes, data=st.data())
def test_alu_forms(method, mnem, reg, mem, size, data):
    m, inner = mem
    op = f"{PTR[size]} ptr [{inner}]"
    r = rn(reg, size)
    imm = data.draw(imms(size))
    check(lambda a: getattr(a, method)(reg, m, size), f"{mnem} {r}, {op}")
    check(lambda a: getattr(a, method)(m, reg, size), f"{mnem} {op}, {r}")
    check(lambda a: getattr(a, method)(reg, imm, size), {f"{mnem} {r}, {t}" for t in imm_texts(imm, size)})
    check(lambda a: getattr(a, method)(m, imm, size), {f"{mnem} {op}, {t}" for t in imm_texts(imm, size)})


def test_alu_short_immediate_forms():
    assert enc(lambda a: a.add(Reg.RAX, -1, 64)) == bytes.fromhex("4883c0ff")
    assert enc(lambda a: a.add(Reg.RAX, 128, 64)) == bytes.fromhex("4881c080000000")
    assert enc(lambda a: a.sub(Reg.R12, 0xFFFFFFFF, 32)) == bytes.fromhex("4183ecff")
    assert enc(lambda a: a.cmp(Reg.RCX, 0xFFFF, 16)) == bytes.fromhex("6683f9ff")


@SETTINGS
@given(a_=regs, b=regs, mem=mems(), size=sizes, data=st.data())
def test_test(a_, b, mem, size, data):
    m, inner = mem
    op = f"{PTR[size]} ptr [{inner}]"
    imm = data.draw(imms(size))
    check(lambda a: a.test(a_, b, size), f"test {rn(a_, size)}, {rn(b, size)}")
    check(lambda a: a.test(m, b, size), f"test {op}, {rn(b, size)}")
    check(lambda a: a.test(b, m, size), f"test {op}, {rn(b, size)}")
    check(lambda a: a.test(a_, imm, size), {f"test {rn(a_, size)}, {t}" for t in imm_texts(imm, size)})
    check(lambda a: a.test(m, imm, size), {f"test {op}, {t}" for t in imm_texts(imm, size)})


UNARY = [("inc", "inc"), ("dec", "dec"), ("neg", "neg"), ("not_", "not"), ("mul", "mul"), ("imul1", "imul"), ("div", "div"), ("idiv", "idiv")]


@pytest.mark.parametrize("method, mnem", UNARY)
@settings(max_examples=40, deadline=None)
@given(reg=regs, mem=mems(), size=sizes)
def test_unary(method, mnem, reg, mem, size):
    m, inner = mem
    check(lambda a: getattr(a, method)(reg, size), f"{mnem} {rn(reg, size)}")
    check(lambda a: getattr(a, method)(m, size), f"{mnem} {PTR[size]} ptr [{inner}]")


@SETTINGS
@given(d=regs, s=regs, mem=mems(), size=st.sampled_from([16, 32, 64]), data=st.data())
def test_imul(d, s, mem, size, data):
    m, inner = mem
    op = f"{PTR[size]} ptr [{inner}]"
    imm = data.draw(imms(size))
    check(lambda a: a.imul(d, s, size), f"imul {rn(d, size)}, {rn(s, size)}")
    check(lambda a: a.imul(d, m, size), f"imul {rn(d, size)}, {op}")
    check(lambda a: a.imul_imm(d, s, imm, size), {f"imul {rn(d, size)}, {rn(s, size)}, {t}" for t in imm_texts(imm, size)})
    check(lambda a: a.imul_imm(d, m, imm, size), {f"imul {rn(d, size)}, {op}, {t}" for t in imm_texts(imm, size)})


def test_sign_extension_helpers_and_misc():
    check(lambda a: a.cdq(), "cdq")
    check(lambda a: a.cqo(), "cqo")
    check(lambda a: a.ret(), "ret")
    check(lambda a: a.ud2(), "ud2")
    check(lambda a: a.int3(), "int3")


SHIFTS = [("shl", "shl"), ("shr", "shr"), ("sar", "sar"), ("rol", "rol"), ("ror", "ror")]


@pytest.mark.parametrize("method, mnem", SHIFTS)
@settings(max_examples=50, deadline=None)
@given(reg=regs, mem=mems(), size=sizes, count=st.one_of(st.just(1), st.integers(0, 255)))
def test_shifts(method, mnem, reg, mem, size, count):
    m, inner = mem
    op = f"{PTR[size]} ptr [{inner}]"
    check(lambda a: getattr(a, method)(reg, Reg.RCX, size), f"{mnem} {rn(reg, size)}, cl")
    check(lambda a: getattr(a, method)(m, Reg.RCX, size), f"{mnem} {op}, cl")
    check(lambda a: getattr(a, method)(reg, count, size), f"{mnem} {rn(reg, size)}, {num(count)}")
    check(lambda a: getattr(a, method)(m, count, size), f"{mnem} {op}, {num(count)}")


@pytest.mark.parametrize("cond", list(Cond.__members__.values())[:16])
def test_setcc_cmovcc_every_condition(cond):
    name = CC[cond]
    for r in REGS:
        check(lambda a: a.setcc(cond, r), f"set{name} {rn(r, 8)}")
        for size in (16, 32, 64):
            check(lambda a: a.cmovcc(cond, r, Reg(15 - r), size), f"cmov{name} {rn(r, size)}, {rn(15 - r, size)}")
    check(lambda a: a.setcc(cond, Mem(Reg.R13)), f"set{name} byte ptr [r13]")
    check(lambda a: a.cmovcc(cond, Reg.R9, Mem(Reg.RSP, 8), 64), f"cmov{name} r9, qword ptr [rsp + 8]")


def test_cond_aliases_and_negation():
    assert Cond.Z is Cond.E and Cond.NZ is Cond.NE and Cond.C is Cond.B and Cond.NC is Cond.AE
    pairs = {"o": "no", "b": "ae", "e": "ne", "be": "a", "s": "ns", "p": "np", "l": "ge", "le": "g"}
    for c in list(Cond.__members__.values())[:16]:
        n = CC[c.negate()]
        assert pairs.get(CC[c]) == n or pairs.get(n) == CC[c]


BITSCAN = ["lzcnt", "tzcnt", "popcnt", "bsr", "bsf"]


@pytest.mark.parametrize("mnem", BITSCAN)
@settings(max_examples=40, deadline=None)
@given(d=regs, s=regs, mem=mems(), size=st.sampled_from([16, 32, 64]))
def test_bitscan(mnem, d, s, mem, size):
    m, inner = mem
    check(lambda a: getattr(a, mnem)(d, s, size), f"{mnem} {rn(d, size)}, {rn(s, size)}")
    check(lambda a: getattr(a, mnem)(d, m, size), f"{mnem} {rn(d, size)}, {PTR[size]} ptr [{inner}]")


def test_bswap():
    for r in REGS:
        check(lambda a: a.bswap(r, 32), f"bswap {rn(r, 32)}")
        check(lambda a: a.bswap(r, 64), f"bswap {rn(r, 64)}")


# -------------------------------------------------------- control flow


def test_indirect_calls_and_jumps():
    for r in REGS:
        check(lambda a: a.call_reg(r), f"call {rn(r, 64)}")
        check(lambda a: a.jmp_reg(r), f"jmp {rn(r, 64)}")
    check(lambda a: a.call_mem(Mem(Reg.R12, 0x40)), "call qword ptr [r12 + 0x40]")
    check(lambda a: a.jmp_mem(Mem(Reg.RBP, -8, Reg.R13, 8)), "jmp qword ptr [rbp + r13*8 - 8]")


def _targets(code: bytes) -> dict[int, tuple[str, int]]:
    """Offset -> (mnemonic, target) of every direct branch in ``code``."""
    out = {}
    total = 0
    for insn in MD.disasm(code, 0):
        total += insn.size
        if insn.mnemonic in {"jmp", "call"} or insn.mnemonic in {f"j{c}" for c in CC}:
            out[insn.address] = (insn.mnemonic, int(insn.op_str, 0))
    assert total == len(code)
    return out


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["jmp", "jcc", "call", "bind", "pad"]),
            st.integers(0, 7),  # label number
            st.sampled_from(list(Cond.__members__.values())[:16]),
            st.integers(0, 40),  # pad length
        ),
        max_size=30,
    ),
    short=st.booleans(),
)
def test_labels_forward_and_backward(steps, short):
    a = Assembler()
    labels = [a.new_label() for _ in range(8)]
    expected = []  # (instruction offset, mnemonic, label)
    try:
        code = _assemble_steps(a, labels, steps, short, expected)
    except EncodingError:
        # Only a short branch that really does not reach may fail: a backward
        # one when it is emitted (its label is bound), a forward one at finish.
        assert short and len(a.code) > 127
        return
    targets = _targets(code)
    assert len(targets) == len(expected)
    for at, mnem, lab in expected:
        assert targets[at] == (mnem, a.label_offset(lab))


def _assemble_steps(a, labels, steps, short, expected):
    """Emits ``steps`` (bind/pad/jmp/jcc/call) into ``a``, recording each
    branch in ``expected``; binds every label left unbound; returns the code."""
    for kind, n, cond, pad in steps:
        lab = labels[n]
        at = a.offset
        if kind == "bind":
            if not lab.bound:
                a.bind(lab)
        elif kind == "pad":
            a.nop(pad)
        elif kind == "jmp":
            a.jmp(lab, short=short)
            expected.append((at, "jmp", lab))
        elif kind == "jcc":
            a.jcc(cond, lab, short=short)
            expected.append((at, f"j{CC[cond]}", lab))
        else:
            a.call(lab)
            expected.append((at, "call", lab))
    for lab in labels:
        if not lab.bound:
            a.bind(lab)
    return a.finish()


def test_jump_sizes_and_returned_field_offsets():
    a = Assembler()
    top = a.new_label()
    a.bind(top)
    assert a.jmp(top) == 1 and a.offset == 5
    assert a.jcc(Cond.NE, top) == 7 and a.offset == 11
    assert a.call(top) == 12 and a.offset == 16
    assert a.jmp(top, short=True) == 17 and a.offset == 18
    assert a.jcc(Cond.L, top, short=True) == 19 and a.offset == 20
    code = a.finish()
    assert code[:5] == bytes.fromhex("e9fbffffff")
    assert code[16:20] == bytes.fromhex("ebee7cec")


def test_short_jump_out_of_range_fails():
    a = Assembler()
    far = a.new_label()
    a.jmp(far, short=True)
    a.nop(128)
    a.bind(far)
    with pytest.raises(EncodingError):
        a.finish()
    b = Assembler()
    back = b.new_label()
    b.bind(back)
    b.nop(127)
    with pytest.raises(EncodingError):
        b.jcc(Cond.E, back, short=True)  # rel = -129, bound so checked at once


def test_short_jump_edges_of_range():
    a = Assembler()
    fwd = a.new_label()
    a.jmp(fwd, short=True)
    a.nop(127)
    a.bind(fwd)
    back = a.new_label()
    a.bind(back)
    a.nop(126)
    a.jmp(back, short=True)
    code = a.finish()
    assert code[:2] == b"\xeb\x7f" and code[-2:] == b"\xeb\x80"


def test_finish_rejects_unbound_labels():
    for emit in (
        lambda a, lab: a.jmp(lab),
        lambda a, lab: a.jcc(Cond.E, lab, short=True),
        lambda a, lab: a.call(lab),
        lambda a, lab: a.mov(Reg.RAX, Mem.rip(lab), 64),
        lambda a, lab: a.dd_label_diff(lab, lab),
    ):
        a = Assembler()
        lab = a.new_label()
        emit(a, lab)
        with pytest.raises(EncodingError, match="never bound"):
            a.finish()
        with pytest.raises(AssertionError):  # the project's programming-error type
            a.finish()


def test_label_misuse():
    a, b = Assembler(), Assembler()
    lab = a.new_label()
    with pytest.raises(EncodingError):
        a.label_offset(lab)
    a.bind(lab)
    assert a.label_offset(lab) == 0 and lab.bound
    with pytest.raises(EncodingError):
        a.bind(lab)
    with pytest.raises(EncodingError):
        b.jmp(lab)
    with pytest.raises(EncodingError):
        b.bind(lab)
    with pytest.raises(EncodingError):
        b.mov(Reg.RAX, Mem.rip(lab), 64)
    assert isinstance(lab, Label) and "Label" in repr(lab)


def test_finish_is_incremental():
    a = Assembler()
    lab = a.new_label()
    a.jmp(lab)
    a.bind(lab)
    first = a.finish()
    assert first == bytes.fromhex("e900000000")
    lab2 = a.new_label()
    a.call(lab2)
    a.bind(lab2)
    assert a.finish() == first + bytes.fromhex("e800000000")


def test_patch_rel32():
    a = Assembler()
    lab = a.new_label()
    a.nop(16)
    at = a.call(lab)
    with pytest.raises(EncodingError, match="pending"):
        a.patch_rel32(at, 3)  # finish() would overwrite it
    a.bind(lab)
    a.finish()
    a.patch_rel32(at, 3)
    a.emit_bytes(b"\xe9\x00\x00\x00\x00")  # a raw placeholder, patched by offset
    a.patch_rel32(a.offset - 4, 0)
    code = a.finish()
    assert _targets(code) == {16: ("call", 3), 21: ("jmp", 0)}
    with pytest.raises(EncodingError):
        a.patch_rel32(at, 2**32)
    with pytest.raises(EncodingError):
        a.patch_rel32(len(a.code) - 2, 0)


def test_dd_label_diff_jump_table():
    a = Assembler()
    table, case0, case1 = a.new_label(), a.new_label(), a.new_label()
    a.bind(case0)
    a.ret()
    a.align(8, 0xCC)
    a.bind(table)
    a.dd_label_diff(case0, table)
    a.dd_label_diff(case1, table)
    a.bind(case1)
    a.ud2()
    code = a.finish()
    assert code[8:12] == (-8).to_bytes(4, "little", signed=True)
    assert code[12:16] == (8).to_bytes(4, "little", signed=True)
    assert code[1:8] == b"\xcc" * 7


# ------------------------------------------------------- rip-relative


RIP_CASES = [
    (lambda a, m: a.mov(Reg.RAX, m, 64), "mov rax, qword ptr [{m}]"),
    (lambda a, m: a.mov(m, Reg.R15, 32), "mov dword ptr [{m}], r15d"),
    (lambda a, m: a.mov(m, 0x7F, 8), "mov byte ptr [{m}], 0x7f"),
    (lambda a, m: a.mov(m, 0x1234, 16), "mov word ptr [{m}], 0x1234"),
    (lambda a, m: a.mov(m, 0x12345678, 32), "mov dword ptr [{m}], 0x12345678"),
    (lambda a, m: a.mov(m, 0x12345678, 64), "mov qword ptr [{m}], 0x12345678"),
    (lambda a, m: a.add(m, 0x1000, 64), "add qword ptr [{m}], 0x1000"),
    (lambda a, m: a.cmp(m, 5, 32), "cmp dword ptr [{m}], 5"),
    (lambda a, m: a.test(m, 0x100, 16), "test word ptr [{m}], 0x100"),
    (lambda a, m: a.shl(m, 3, 32), "shl dword ptr [{m}], 3"),
    (lambda a, m: a.imul_imm(Reg.R9, m, 1000, 64), "imul r9, qword ptr [{m}], 0x3e8"),
    (lambda a, m: a.lea(Reg.R13, m), "lea r13, [{m}]"),
    (lambda a, m: a.call_mem(m), "call qword ptr [{m}]"),
    (lambda a, m: a.jmp_mem(m), "jmp qword ptr [{m}]"),
    (lambda a, m: a.push(m), "push qword ptr [{m}]"),
    (lambda a, m: a.movzx(Reg.RDI, m, 32, 8), "movzx edi, byte ptr [{m}]"),
    (lambda a, m: a.movss(Xmm.XMM3, m), "movss xmm3, dword ptr [{m}]"),
    (lambda a, m: a.movsd(m, Xmm.XMM12), "movsd qword ptr [{m}], xmm12"),
    (lambda a, m: a.andps(Xmm.XMM8, m), "andps xmm8, xmmword ptr [{m}]"),
    (lambda a, m: a.roundsd(Xmm.XMM9, m, RoundMode.TRUNC), "roundsd xmm9, qword ptr [{m}], 3"),
    (lambda a, m: a.cmpss(Xmm.XMM1, m, CmpPred.LE), "cmpless xmm1, dword ptr [{m}]"),
    (lambda a, m: a.movdqu(m, Xmm.XMM15), "movdqu xmmword ptr [{m}], xmm15"),
    (lambda a, m: a.cvtsi2sd(Xmm.XMM0, m, 64), "cvtsi2sd xmm0, qword ptr [{m}]"),
]


@settings(max_examples=200, deadline=None)
@given(
    case=st.sampled_from(RIP_CASES),
    pre=st.integers(0, 300),
    gap=st.integers(0, 300),
    before=st.booleans(),
    disp=st.one_of(st.just(0), st.integers(-1000, 1000)),
)
def test_rip_relative_to_label_before_and_after(case, pre, gap, before, disp):
    emit, fmt = case
    a = Assembler()
    lab = a.new_label()
    a.nop(pre)
    if before:
        a.bind(lab)
        a.emit_bytes(b"\xcc" * gap)
    start = a.offset
    emit(a, Mem.rip(lab, disp))
    end = a.offset
    if not before:
        a.emit_bytes(b"\xcc" * gap)
        a.bind(lab)
    code = a.finish()
    rel = a.label_offset(lab) + disp - end
    assert dis(code[start:end]) == fmt.format(m=rip_inner(rel))


# ------------------------------------------------------------------- SSE

# (method, mnemonic, capstone's pointer size for the memory form)
SSE_BINARY = [
    ("addss", "addss", 32), ("addsd", "addsd", 64), ("subss", "subss", 32), ("subsd", "subsd", 64),
    ("mulss", "mulss", 32), ("mulsd", "mulsd", 64), ("divss", "divss", 32), ("divsd", "divsd", 64),
    ("sqrtss", "sqrtss", 32), ("sqrtsd", "sqrtsd", 64), ("minss", "minss", 32), ("minsd", "minsd", 64),
    ("maxss", "maxss", 32), ("maxsd", "maxsd", 64),
    ("ucomiss", "ucomiss", 32), ("ucomisd", "ucomisd", 64), ("comiss", "comiss", 32),
    ("comisd", "comisd", 128),  # capstone prints xmmword for comisd's m64 operand
    ("cvtss2sd", "cvtss2sd", 32), ("cvtsd2ss", "cvtsd2ss", 64),
    ("andps", "andps", 128), ("andpd", "andpd", 128), ("andnps", "andnps", 128), ("andnpd", "andnpd", 128),
    ("orps", "orps", 128), ("orpd", "orpd", 128), ("xorps", "xorps", 128), ("xorpd", "xorpd", 128),
    ("pxor", "pxor", 128),
]


@pytest.mark.parametrize("method, mnem, ptr", SSE_BINARY)
def test_sse_binary_all_register_pairs(method, mnem, ptr):
    for d in XMMS:
        for s in XMMS:
            check(lambda a: getattr(a, method)(d, s), f"{mnem} {xn(d)}, {xn(s)}")


@pytest.mark.parametrize("method, mnem, ptr", SSE_BINARY)
@settings(max_examples=30, deadline=None)
@given(d=xmms, mem=mems())
def test_sse_binary_memory(method, mnem, ptr, d, mem):
    m, inner = mem
    check(lambda a: getattr(a, method)(d, m), f"{mnem} {xn(d)}, {PTR[ptr]} ptr [{inner}]")


@SETTINGS
@given(d=xmms, s=xmms, mem=mems(), mode=st.integers(0, 15))
def test_roundss_roundsd(d, s, mem, mode):
    m, inner = mem
    check(lambda a: a.roundss(d, s, mode), f"roundss {xn(d)}, {xn(s)}, {num(mode)}")
    check(lambda a: a.roundsd(d, s, mode), f"roundsd {xn(d)}, {xn(s)}, {num(mode)}")
    check(lambda a: a.roundss(d, m, mode), f"roundss {xn(d)}, dword ptr [{inner}], {num(mode)}")
    check(lambda a: a.roundsd(d, m, mode), f"roundsd {xn(d)}, qword ptr [{inner}], {num(mode)}")


def test_round_modes():
    check(lambda a: a.roundsd(Xmm.XMM0, Xmm.XMM1, RoundMode.UP | ROUND_SUPPRESS_PRECISION), "roundsd xmm0, xmm1, 0xa")
    assert [int(m) for m in RoundMode] == [0, 1, 2, 3]


CMP_NAMES = ["eq", "lt", "le", "unord", "neq", "nlt", "nle", "ord"]


@SETTINGS
@given(d=xmms, s=xmms, mem=mems(), pred=st.sampled_from(list(CmpPred)))
def test_cmpss_cmpsd(d, s, mem, pred):
    m, inner = mem
    p = CMP_NAMES[pred]
    check(lambda a: a.cmpss(d, s, pred), f"cmp{p}ss {xn(d)}, {xn(s)}")
    check(lambda a: a.cmpsd(d, s, pred), f"cmp{p}sd {xn(d)}, {xn(s)}")
    check(lambda a: a.cmpss(d, m, pred), f"cmp{p}ss {xn(d)}, dword ptr [{inner}]")
    check(lambda a: a.cmpsd(d, m, pred), f"cmp{p}sd {xn(d)}, qword ptr [{inner}]")


@SETTINGS
@given(x=xmms, y=xmms, mem=mems())
def test_sse_moves(x, y, mem):
    m, inner = mem
    for method, ptr in (("movss", 32), ("movsd", 64), ("movaps", 128), ("movapd", 128), ("movdqu", 128)):
        check(lambda a: getattr(a, method)(x, y), f"{method} {xn(x)}, {xn(y)}")
        check(lambda a: getattr(a, method)(x, m), f"{method} {xn(x)}, {PTR[ptr]} ptr [{inner}]")
        check(lambda a: getattr(a, method)(m, x), f"{method} {PTR[ptr]} ptr [{inner}], {xn(x)}")
    check(lambda a: a.movq(x, y), f"movq {xn(x)}, {xn(y)}")
    check(lambda a: a.movq(x, m), f"movq {xn(x)}, qword ptr [{inner}]")
    check(lambda a: a.movq(m, x), f"movq qword ptr [{inner}], {xn(x)}")
    check(lambda a: a.movd(x, m), f"movd {xn(x)}, dword ptr [{inner}]")
    check(lambda a: a.movd(m, x), f"movd dword ptr [{inner}], {xn(x)}")


def test_movd_movq_gpr_all_pairs():
    for x in XMMS:
        for r in REGS:
            check(lambda a: a.movd(x, r), f"movd {xn(x)}, {rn(r, 32)}")
            check(lambda a: a.movd(r, x), f"movd {rn(r, 32)}, {xn(x)}")
            check(lambda a: a.movq(x, r), f"movq {xn(x)}, {rn(r, 64)}")
            check(lambda a: a.movq(r, x), f"movq {rn(r, 64)}, {xn(x)}")


@SETTINGS
@given(x=xmms, r=regs, mem=mems(), size=st.sampled_from([32, 64]))
def test_int_float_conversions(x, r, mem, size):
    m, inner = mem
    op = f"{PTR[size]} ptr [{inner}]"
    for mnem in ("cvtsi2ss", "cvtsi2sd"):
        check(lambda a: getattr(a, mnem)(x, r, size), f"{mnem} {xn(x)}, {rn(r, size)}")
        check(lambda a: getattr(a, mnem)(x, m, size), f"{mnem} {xn(x)}, {op}")
    check(lambda a: a.cvttss2si(r, x, size), f"cvttss2si {rn(r, size)}, {xn(x)}")
    check(lambda a: a.cvttsd2si(r, x, size), f"cvttsd2si {rn(r, size)}, {xn(x)}")
    check(lambda a: a.cvttss2si(r, m, size), f"cvttss2si {rn(r, size)}, dword ptr [{inner}]")
    check(lambda a: a.cvttsd2si(r, m, size), f"cvttsd2si {rn(r, size)}, qword ptr [{inner}]")


def test_movmsk():
    for r in REGS:
        for x in XMMS:
            check(lambda a: a.movmskps(r, x), f"movmskps {rn(r, 32)}, {xn(x)}")
            check(lambda a: a.movmskpd(r, x), f"movmskpd {rn(r, 32)}, {xn(x)}")


# --------------------------------------------------------- data, padding


def test_nop5_is_the_patch_site():
    a = Assembler()
    a.ret()
    assert a.nop5() == 1
    assert a.finish() == b"\xc3\x0f\x1f\x44\x00\x00"


@pytest.mark.parametrize("length", range(0, 30))
def test_nop_and_align(length):
    a = Assembler()
    a.nop(length)
    code = a.finish()
    assert len(code) == length
    assert sum(i.size for i in MD.disasm(code, 0)) == length
    assert all(i.mnemonic == "nop" for i in MD.disasm(code, 0))
    a.align(16)
    assert a.offset % 16 == 0 and a.offset - length < 16
    assert all(i.mnemonic == "nop" for i in MD.disasm(a.finish(), 0))
    b = Assembler()
    b.emit_bytes(b"\x90" * length)
    b.align(8, fill=0xCC)
    assert b.finish() == b"\x90" * length + b"\xcc" * (-length % 8)


def test_data():
    a = Assembler()
    a.dd(-1)
    a.dd(0x3F800000)
    a.dq(2**64 - 1)
    a.dq(-(2**63))
    a.db(0xAB)
    assert a.finish() == bytes.fromhex("ffffffff0000803fffffffffffffffff0000000000000080ab")
    with pytest.raises(EncodingError):
        a.dd(2**32)
    with pytest.raises(EncodingError):
        a.align(3)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "emit",
    [
        lambda a: a.add(Reg.RAX, 2**31, 64),  # not a sign-extended imm32
        lambda a: a.mov(Mem(Reg.RAX), 2**32, 64),
        lambda a: a.add(Reg.RAX, 256, 8),
        lambda a: a.add(Reg.RAX, Xmm.XMM0, 64),  # an Xmm is not an immediate
        lambda a: a.add(Xmm.XMM0, Reg.RAX, 64),
        lambda a: a.add(Reg.RAX, Reg.RCX, 128),
        lambda a: a.mov(Mem(Reg.RAX), Mem(Reg.RCX), 64),
        lambda a: a.movzx(Reg.RAX, Reg.RCX, 64, 32),
        lambda a: a.movsx(Reg.RAX, Reg.RCX, 32, 32),
        lambda a: a.imul(Reg.RAX, Reg.RCX, 8),
        lambda a: a.shl(Reg.RAX, Reg.RDX, 64),
        lambda a: a.shl(Reg.RAX, 256, 64),
        lambda a: a.lea(Reg.RAX, Reg.RCX),
        lambda a: a.addsd(Reg.RAX, Xmm.XMM0),
        lambda a: a.addsd(Xmm.XMM0, Reg.RAX),
        lambda a: a.cmpss(Xmm.XMM0, Xmm.XMM1, 8),
        lambda a: a.roundss(Xmm.XMM0, Xmm.XMM1, 256),
        lambda a: a.movq(Reg.RAX, Reg.RCX),
        lambda a: a.movd(Reg.RAX, Reg.RCX),
        lambda a: a.push(2**31),
        lambda a: a.bswap(Reg.RAX, 16),
        lambda a: a.cvtsi2sd(Xmm.XMM0, Reg.RAX, 16),
        lambda a: a.call_mem(Reg.RAX),
        lambda a: a.test(Reg.RAX, Xmm.XMM1, 64),
    ],
)
def test_unencodable_requests_raise(emit):
    with pytest.raises(EncodingError):
        emit(Assembler())


def test_carrier_end_marks_a_64_bit_register_store_to_an_rsp_slot_until_a_label_is_bound():
    """Assembler.carrier_end (compiler.py: a carrier store may be the next
    INSTRUCTION site): set by ``mov [rsp+disp8], r64`` with a slot's disp8
    (0..120, a multiple of 8) and by nothing else; a label bound at the end
    takes it back."""
    a = Assembler()
    a.mov(Mem(Reg.RSP, 8), Reg.R8, 64)
    assert bytes(a.code) == bytes.fromhex("4c89442408") and a.carrier_end == 5
    a.mov(Reg.RAX, Mem(Reg.RSP, 8), 64)  # a load: the store is no longer last
    assert a.carrier_end == 5 != a.offset
    for not_carrier in (lambda: a.mov(Mem(Reg.RSP, 8), Reg.RAX, 32),     # 32-bit
                        lambda: a.mov(Mem(Reg.RBP, 8), Reg.RAX, 64),     # not rsp
                        lambda: a.mov(Mem(Reg.RSP, 128), Reg.RAX, 64),   # disp32
                        lambda: a.mov(Mem(Reg.RSP, 12), Reg.RAX, 64),    # not an 8-byte slot
                        lambda: a.mov(Mem(Reg.RSP, 8, Reg.RCX), Reg.RAX, 64),  # an index
                        lambda: a.mov(Mem(Reg.RSP, 8), 5, 64)):          # an immediate
        before = a.carrier_end
        not_carrier()
        assert a.carrier_end == before != a.offset
    a.mov(Mem(Reg.RSP, 0x78), Reg.R15, 64)
    assert bytes(a.code[-5:]) == bytes.fromhex("4c897c2478") and a.carrier_end == a.offset
    a.mov(Mem(Reg.RSP, 0), Reg.RDI, 64)  # [rsp]: 4 bytes, whose disp8 form (disp8 0) the compiler makes the site
    assert bytes(a.code[-4:]) == bytes.fromhex("48893c24") and a.carrier_end == a.offset
    label = a.new_label()
    a.bind(label)  # a branch to here would skip a site made of the store
    assert a.carrier_end == -1
