"""Fast instruction reader for function bodies and constant expressions (spec 5.4).

``read_instructions`` is the compiler's hot path (it reads every byte of code
once), so it is a single hand-written loop over a 256-entry dispatch table, with
one-byte fast paths for LEB128 immediates; ``construct`` is deliberately not used
here. It enforces the *binary-format* rules of instruction sequences, as the
reference interpreter's decoder does: immediates well-formed, ``else`` only directly
inside an ``if`` ("END opcode expected" otherwise), exactly one final ``end`` that
is the last byte of the body. Typing is the validator's job.
"""
from __future__ import annotations

from ..errors import CompileError
from .binary import UNEXPECTED_END, read_sleb, read_uleb, read_valtype
from .opcodes import OPCODES, Imm


class Instr:
    """One decoded instruction.

    ``offset``: absolute file offset of its first byte; ``op``: int code (see
    ``opcodes``); ``name``: text name; ``imm``: immediates in the shape documented
    in ``opcodes`` for ``OPCODES[op].imm``. Treat instances as immutable.
    """

    __slots__ = ("offset", "op", "name", "imm")

    def __init__(self, offset: int, op: int, name: str, imm=None):
        self.offset = offset
        self.op = op
        self.name = name
        self.imm = imm

    def __repr__(self) -> str:
        imm = "" if self.imm is None else f" {self.imm!r}"
        return f"<{self.name}{imm} @{self.offset:#x}>"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Instr):
            return NotImplemented
        return (self.offset, self.op, self.imm) == (other.offset, other.op, other.imm)

    def __hash__(self) -> int:
        return hash((self.offset, self.op, self.imm))


# Reader-internal immediate classes (finer grained for the loop than ``Imm``).
_K_NONE, _K_U32, _K_I32, _K_MEMARG, _K_BLOCK, _K_I64, _K_F32, _K_F64, _K_BR_TABLE, \
    _K_CALL_INDIRECT, _K_ZERO, _K_SELECT_T, _K_REFTYPE, _K_FC, _K_END, _K_ELSE = range(16)

_IMM_TO_K = {
    Imm.NONE: _K_NONE, Imm.LABEL: _K_U32, Imm.FUNC: _K_U32, Imm.LOCAL: _K_U32, Imm.GLOBAL: _K_U32,
    Imm.TABLE: _K_U32, Imm.DATA: _K_U32, Imm.ELEM: _K_U32, Imm.I32: _K_I32, Imm.MEMARG: _K_MEMARG,
    Imm.BLOCKTYPE: _K_BLOCK, Imm.I64: _K_I64, Imm.F32: _K_F32, Imm.F64: _K_F64,
    Imm.BR_TABLE: _K_BR_TABLE, Imm.CALL_INDIRECT: _K_CALL_INDIRECT, Imm.MEMORY: _K_ZERO,
    Imm.SELECT_T: _K_SELECT_T, Imm.REFTYPE: _K_REFTYPE,
}

_KIND: list[int | None] = [None] * 256
_NAME: list[str | None] = [None] * 256
for _code, _info in OPCODES.items():
    if _code < 0x100:
        _KIND[_code] = _IMM_TO_K[_info.imm]
        _NAME[_code] = _info.name
_KIND[0x0B] = _K_END
_KIND[0x05] = _K_ELSE
_KIND[0xFC] = _K_FC
_FC_NAME = {code & 0xFF: info.name for code, info in OPCODES.items() if code >= 0xFC00}
_FC_IMM = {code & 0xFF: info.imm for code, info in OPCODES.items() if code >= 0xFC00}
del _code, _info

_BLOCK, _IF, _IF_ELSE = 0, 1, 2  # frame kinds the reader tracks for else/end nesting


def _zero_byte(data: bytes, pos: int, limit: int) -> int:
    """The reserved memory-index byte of memory.size/grow/... : a raw 0x00, not a
    LEB128 (spec 5.4.6; an 0x80 0x00 encoding is "zero byte expected")."""
    if pos >= limit:
        raise CompileError(UNEXPECTED_END, limit)
    if data[pos] != 0:
        raise CompileError("zero byte expected", pos)
    return pos + 1


def _read_fc(data: bytes, start: int, pos: int, limit: int) -> tuple["Instr", int]:
    sub, pos = read_uleb(data, pos, limit, 32)
    imm_kind = _FC_IMM.get(sub)
    if imm_kind is None:
        raise CompileError(f"illegal opcode fc {sub:02x}", start)
    if imm_kind is Imm.NONE:
        imm = None
    elif imm_kind is Imm.MEMORY_INIT:
        imm, pos = read_uleb(data, pos, limit, 32)
        pos = _zero_byte(data, pos, limit)
    elif imm_kind is Imm.MEMORY_COPY:
        pos = _zero_byte(data, pos, limit)
        pos = _zero_byte(data, pos, limit)
        imm = (0, 0)
    elif imm_kind is Imm.MEMORY:
        pos = _zero_byte(data, pos, limit)
        imm = 0
    elif imm_kind is Imm.TABLE_INIT or imm_kind is Imm.TABLE_COPY:
        a, pos = read_uleb(data, pos, limit, 32)
        b, pos = read_uleb(data, pos, limit, 32)
        imm = (a, b)
    else:  # TABLE, DATA, ELEM: one index
        imm, pos = read_uleb(data, pos, limit, 32)
    return Instr(start, 0xFC00 | sub, _FC_NAME[sub], imm), pos


def _read_blocktype(data: bytes, pos: int, limit: int):
    """Block type (spec 5.4.1): 0x40 empty, a value type, or an s33 type index."""
    if pos >= limit:
        raise CompileError(UNEXPECTED_END, limit)
    b = data[pos]
    if b == 0x40:
        return None, pos + 1
    if b & 0xC0 == 0x40:
        return read_valtype(data, pos, limit)
    start = pos
    idx, pos = read_sleb(data, pos, limit, 33)
    if idx < 0:
        # Negative s33 values other than the one-byte forms name no type.
        raise CompileError(f"unknown type {idx & 0xFFFFFFFF}", start)
    return idx, pos


def _read_seq(data: bytes, pos: int, limit: int, eos_message: str) -> tuple[list[Instr], int]:
    """Read instructions until the ``end`` that closes the sequence (inclusive).

    Returns the instructions (the closing ``end`` included) and the position after
    it. Running out of bytes between instructions raises ``eos_message`` at
    ``limit``; inside an instruction, "unexpected end of section or function".
    """
    out: list[Instr] = []
    append = out.append
    frames: list[int] = []
    kinds = _KIND
    names = _NAME
    _Instr = Instr
    while True:
        if pos >= limit:
            raise CompileError(eos_message, limit)
        start = pos
        op = data[pos]
        pos += 1
        k = kinds[op]
        if k == _K_NONE:
            append(_Instr(start, op, names[op], None))
        elif k == _K_U32:
            if pos < limit and data[pos] < 0x80:
                v = data[pos]
                pos += 1
            else:
                v, pos = read_uleb(data, pos, limit, 32)
            append(_Instr(start, op, names[op], v))
        elif k == _K_I32:
            if pos < limit and data[pos] < 0x80:
                v = data[pos]
                pos += 1
                if v & 0x40:
                    v -= 0x80
            else:
                v, pos = read_sleb(data, pos, limit, 32)
            append(_Instr(start, op, names[op], v))
        elif k == _K_MEMARG:
            if pos + 1 < limit and data[pos] < 0x80 and data[pos + 1] < 0x80:
                v = (data[pos], data[pos + 1])
                pos += 2
            else:
                a, pos = read_uleb(data, pos, limit, 32)
                o, pos = read_uleb(data, pos, limit, 32)
                v = (a, o)
            append(_Instr(start, op, names[op], v))
        elif k == _K_END:
            append(_Instr(start, op, "end", None))
            if not frames:
                return out, pos
            frames.pop()
        elif k == _K_BLOCK:
            if pos < limit and data[pos] == 0x40:
                v = None
                pos += 1
            else:
                v, pos = _read_blocktype(data, pos, limit)
            frames.append(_IF if op == 0x04 else _BLOCK)
            append(_Instr(start, op, names[op], v))
        elif k == _K_ELSE:
            # The reference decoder ends an if's then-branch at 0x05 and any other
            # block at 0x05 too, expecting END there: else outside `if` is malformed.
            if not frames or frames[-1] != _IF:
                raise CompileError("END opcode expected", start)
            frames[-1] = _IF_ELSE
            append(_Instr(start, op, "else", None))
        elif k == _K_I64:
            v, pos = read_sleb(data, pos, limit, 64)
            append(_Instr(start, op, names[op], v))
        elif k == _K_F32:
            if pos + 4 > limit:
                raise CompileError(UNEXPECTED_END, limit)
            append(_Instr(start, op, names[op], int.from_bytes(data[pos:pos + 4], "little")))
            pos += 4
        elif k == _K_F64:
            if pos + 8 > limit:
                raise CompileError(UNEXPECTED_END, limit)
            append(_Instr(start, op, names[op], int.from_bytes(data[pos:pos + 8], "little")))
            pos += 8
        elif k == _K_BR_TABLE:
            count_pos = pos
            n, pos = read_uleb(data, pos, limit, 32)
            if n > len(data) - count_pos:
                raise CompileError("length out of bounds", count_pos)
            labels = []
            for _ in range(n):
                if pos < limit and data[pos] < 0x80:
                    labels.append(data[pos])
                    pos += 1
                else:
                    v, pos = read_uleb(data, pos, limit, 32)
                    labels.append(v)
            default, pos = read_uleb(data, pos, limit, 32)
            append(_Instr(start, op, "br_table", (tuple(labels), default)))
        elif k == _K_CALL_INDIRECT:
            t, pos = read_uleb(data, pos, limit, 32)
            tab, pos = read_uleb(data, pos, limit, 32)
            append(_Instr(start, op, "call_indirect", (t, tab)))
        elif k == _K_ZERO:
            pos = _zero_byte(data, pos, limit)
            append(_Instr(start, op, names[op], 0))
        elif k == _K_FC:
            ins, pos = _read_fc(data, start, pos, limit)
            append(ins)
        elif k == _K_SELECT_T:
            count_pos = pos
            n, pos = read_uleb(data, pos, limit, 32)
            if n > len(data) - count_pos:
                raise CompileError("length out of bounds", count_pos)
            types = []
            for _ in range(n):
                t, pos = read_valtype(data, pos, limit)
                types.append(t)
            append(_Instr(start, op, "select", tuple(types)))
        elif k == _K_REFTYPE:
            t, pos = read_valtype(data, pos, limit, "reference")
            append(_Instr(start, op, "ref.null", t))
        elif op == 0xFD:
            raise CompileError("SIMD instructions are not supported (opcode fd)", start)
        else:
            raise CompileError(f"illegal opcode {op:02x}", start)


def read_instructions(data: bytes, start: int, end: int, *, section_end: int | None = None) -> list[Instr]:
    """Decode the instruction sequence of a function body occupying
    ``data[start:end]`` (absolute offsets; ``start`` is the first instruction byte,
    i.e. ``FunctionBody.body_offset``). The result ends with the body's final
    ``end`` instruction.

    Raises ``CompileError`` for malformed code. When the bytes run out before the
    final ``end``, the message follows what the reference interpreter (which reads
    on past the body) reports: "unexpected end of section or function" at the end
    of the file, "section size mismatch" at the end of the code section
    (``section_end``), "END opcode expected" otherwise. Bytes after the final
    ``end`` are "section size mismatch".
    """
    limit = min(end, len(data))
    if limit >= len(data):
        eos = UNEXPECTED_END
    elif section_end is not None and limit == section_end:
        eos = "section size mismatch"
    else:
        eos = "END opcode expected"
    out, pos = _read_seq(data, start, limit, eos)
    if pos != limit:
        raise CompileError("section size mismatch", pos)
    return out


def read_const_instrs(data: bytes, pos: int, limit: int) -> tuple[list[Instr], int]:
    """Decode a constant expression's instructions up to and including its ``end``.

    Returns ``(instructions without the final end, position after the end)``. Any
    instruction decodes here; "constant expression required" is validation's.
    """
    out, pos = _read_seq(data, pos, limit, UNEXPECTED_END)
    out.pop()
    return out, pos


__all__ = ["Instr", "read_instructions", "read_const_instrs"]
