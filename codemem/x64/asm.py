"""x86-64 machine-code encoder for the baseline compiler.

Everything the compiler emits goes through :class:`Assembler`, which appends
encoded instructions to one ``bytearray`` and resolves label references when
:meth:`Assembler.finish` is called. The output is position independent: the only
references it can express are relative ones (``jmp``/``jcc``/``call`` rel8/rel32,
rip-relative memory operands, label differences in data).

Conventions (the contract the compiler relies on):

* Intel operand order: destination first (``a.add(Reg.RAX, Reg.RCX, 64)`` is
  ``add rax, rcx``).
* Integer instructions take the operation width in bits as a required ``size``
  argument (8, 16, 32 or 64, as the instruction allows). There is no default, so an
  i32 operation cannot silently become a 64-bit one. Exceptions: ``lea`` (default
  64), ``push``/``pop`` and control flow (always 64).
* Operands are :class:`Reg` (register), :class:`Mem` (memory, including
  rip-relative :class:`RipLabel`) or a plain ``int`` (immediate). Register enums are
  ``int`` subclasses but are never taken for immediates: dispatch is on the exact type.
* Immediates may be given signed or as the unsigned bit pattern of the operation
  width (``0xFFFFFFFF`` and ``-1`` are the same 32-bit immediate). 64-bit ALU and
  store immediates must be representable as a sign-extended imm32 (hardware limit);
  use :meth:`Assembler.mov` or :meth:`Assembler.mov_imm64` into a register otherwise.
* ``mov(reg, imm, 64)`` picks the shortest encoding with the same effect: ``mov r32,
  imm32`` (zero-extends) for 0 <= imm < 2**32, ``mov r64, simm32`` for small negative
  values, ``movabs`` otherwise. ``mov_imm64`` always emits the 10-byte ``movabs``.
* 8-bit operations on RSP/RBP/RSI/RDI mean SPL/BPL/SIL/DIL (a REX prefix is added);
  AH/CH/DH/BH are not supported.
* SSE methods are named by their real mnemonic (``addss`` is f32, ``addsd`` is f64),
  so what is written is exactly what a disassembler shows.
* Methods that emit a relative field (``jmp``, ``jcc``, ``call``) return the offset of
  that field; ``nop5`` returns the offset of the 5-byte site; ``mov_imm64`` returns
  the offset of its 8-byte immediate.

Anything that cannot be encoded (wrong operand types, out-of-range immediates or
displacements, an unbound label at ``finish``) raises :class:`EncodingError`, an
``AssertionError`` subclass: it is always a bug in the caller, never bad guest input
(see ``codemem/errors.py``).

Encodings follow the Intel 64 and IA-32 Architectures Software Developer's Manual,
Vol. 2 (instruction reference and section 2.1-2.2 on ModRM/SIB/REX).
"""
from __future__ import annotations

import logging
from enum import IntEnum

from .regs import Reg, Xmm

__all__ = [
    "Assembler",
    "CmpPred",
    "Cond",
    "EncodingError",
    "Label",
    "Mem",
    "Reg",
    "RipLabel",
    "RoundMode",
    "ROUND_SUPPRESS_PRECISION",
    "Xmm",
]

logger = logging.getLogger(__name__)


class EncodingError(AssertionError):
    """The caller asked for something x86-64 (or this encoder) cannot encode."""


class Cond(IntEnum):
    """Condition codes, numbered as the low nibble of Jcc/SETcc/CMOVcc opcodes
    (SDM Vol. 1 Appendix B). Unsigned: B/AE/BE/A; signed: L/GE/LE/G."""

    O = 0
    NO = 1
    B = 2
    AE = 3
    E = 4
    NE = 5
    BE = 6
    A = 7
    S = 8
    NS = 9
    P = 10
    NP = 11
    L = 12
    GE = 13
    LE = 14
    G = 15
    # Aliases (same encodings).
    C = 2
    NC = 3
    Z = 4
    NZ = 5

    def negate(self) -> "Cond":
        """The opposite condition: x86 pairs them as cc and cc ^ 1."""
        return Cond(self ^ 1)


class CmpPred(IntEnum):
    """The imm8 predicate of cmpss/cmpsd (SDM: CMPSS, Table 3-7, SSE subset 0-7)."""

    EQ = 0
    LT = 1
    LE = 2
    UNORD = 3
    NEQ = 4
    NLT = 5
    NLE = 6
    ORD = 7


class RoundMode(IntEnum):
    """Rounding-control bits of roundss/roundsd's imm8 (SDM: ROUNDSS, Table 4-18)."""

    NEAREST = 0  # round to nearest, ties to even (wasm fN.nearest)
    DOWN = 1  # toward -inf (floor)
    UP = 2  # toward +inf (ceil)
    TRUNC = 3  # toward zero (trunc)


#: OR into a RoundMode to suppress the precision (inexact) exception.
ROUND_SUPPRESS_PRECISION = 8


class Label:
    """A position in one Assembler's code, bound once with :meth:`Assembler.bind`.

    Created only by :meth:`Assembler.new_label`; usable only with that assembler."""

    __slots__ = ("_owner", "_id", "_offset")

    def __init__(self, owner: "Assembler", ident: int):
        self._owner = owner
        self._id = ident
        self._offset = -1

    @property
    def bound(self) -> bool:
        return self._offset >= 0

    def __repr__(self) -> str:
        where = f"@{self._offset:#x}" if self._offset >= 0 else " unbound"
        return f"<Label {self._id}{where}>"


# SIB scale field (bits 7:6), SDM Vol. 2A Table 2-3.
_SCALE_BITS = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}


class Mem:
    """A memory operand ``[base + index*scale + disp]``; treat as immutable.

    The ModRM/SIB/displacement bytes (with a zero reg field) are computed once here,
    so a Mem reused for many instructions costs nothing extra per use. Handles:

    * base RSP/R12 (ModRM rm=100 means "SIB follows", so a SIB is always emitted);
    * base RBP/R13 with no displacement (mod=00 rm=101 means rip/disp32, so a zero
      disp8 is emitted);
    * no base (absolute disp32 via SIB base=101, since ModRM rm=101 is rip-relative
      in 64-bit mode: SDM Vol. 2A section 2.2.1.6).

    RSP cannot be an index (SIB index=100 means "none"). Use :meth:`Mem.rip` for
    rip-relative references to labels.
    """

    __slots__ = ("base", "disp", "index", "scale", "label", "_rex", "_tail")

    def __init__(self, base: Reg | None, disp: int = 0, index: Reg | None = None, scale: int = 1):
        if base is not None and type(base) is not Reg:
            raise EncodingError(f"memory base must be a Reg or None, not {base!r}")
        if type(disp) is not int or not -0x8000_0000 <= disp <= 0x7FFF_FFFF:
            raise EncodingError(f"displacement {disp!r} does not fit a signed 32-bit field")
        ss = _SCALE_BITS.get(scale)
        if ss is None:
            raise EncodingError(f"scale must be 1, 2, 4 or 8, not {scale!r}")
        rex = 0
        index_bits = 0x20  # SIB index=100: no index
        if index is not None:
            if type(index) is not Reg:
                raise EncodingError(f"memory index must be a Reg, not {index!r}")
            if index == Reg.RSP:
                raise EncodingError("rsp cannot be an index register")
            rex |= (index & 8) >> 2  # REX.X
            index_bits = (index & 7) << 3
        elif scale != 1:
            raise EncodingError("a scale needs an index register")
        self.base = base
        self.disp = disp
        self.index = index
        self.scale = scale
        self.label = None
        if base is None:
            tail = bytes((0x04, ss | index_bits | 0x05)) + disp.to_bytes(4, "little", signed=True)
        else:
            rex |= base >> 3  # REX.B
            low = base & 7
            if disp == 0 and low != 5:
                mod, disp_bytes = 0x00, b""
            elif -128 <= disp <= 127:
                mod, disp_bytes = 0x40, disp.to_bytes(1, "little", signed=True)
            else:
                mod, disp_bytes = 0x80, disp.to_bytes(4, "little", signed=True)
            if index is None and low != 4:
                tail = bytes((mod | low,)) + disp_bytes
            else:
                tail = bytes((mod | 0x04, ss | index_bits | low)) + disp_bytes
        self._rex = rex
        self._tail = tail

    @staticmethod
    def rip(label: Label, disp: int = 0) -> "RipLabel":
        """``[rip + (label + disp - end of instruction)]``, resolved by the assembler."""
        return RipLabel(label, disp)

    def __repr__(self) -> str:
        if self.label is not None:
            return f"Mem.rip({self.label!r}, {self.disp})"
        return f"Mem({self.base!r}, {self.disp}, {self.index!r}, {self.scale})"


class RipLabel(Mem):
    """A rip-relative memory operand addressing ``label + disp``."""

    __slots__ = ()

    def __init__(self, label: Label, disp: int = 0):  # pylint: disable=super-init-not-called
        if type(label) is not Label:
            raise EncodingError(f"RipLabel needs a Label, not {label!r}")
        if type(disp) is not int or not -0x8000_0000 <= disp <= 0x7FFF_FFFF:
            raise EncodingError(f"displacement {disp!r} does not fit a signed 32-bit field")
        self.base = None
        self.disp = disp
        self.index = None
        self.scale = 1
        self.label = label
        self._rex = 0
        # ModRM mod=00 rm=101: [rip + disp32] in 64-bit mode; disp32 patched later.
        self._tail = b"\x05\x00\x00\x00\x00"


# Operand-size prefix and REX.W per width (SDM Vol. 2A 2.2.1.2 / Table 2-4).
_OPSIZE = {8: (b"", 0), 16: (b"\x66", 0), 32: (b"", 0), 64: (b"", 8)}

#: ALU group digits (``_alu``) whose instruction can macro-fuse with a following jcc.
_FUSIBLE_ALU = frozenset((0, 4, 5, 7))  # add, and, sub, cmp

# Recommended multi-byte NOP forms, lengths 1..9 (SDM Vol. 2B, NOP, Table 4-12).
_NOPS = (
    b"",
    b"\x90",
    b"\x66\x90",
    b"\x0f\x1f\x00",
    b"\x0f\x1f\x40\x00",
    b"\x0f\x1f\x44\x00\x00",
    b"\x66\x0f\x1f\x44\x00\x00",
    b"\x0f\x1f\x80\x00\x00\x00\x00",
    b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
    b"\x66\x0f\x1f\x84\x00\x00\x00\x00\x00",
)

# Single-byte opcodes as bytes objects, so the hot path does no allocation for them.
_B = tuple(bytes((i,)) for i in range(256))


def _opsize(size: int, allowed: tuple[int, ...] = (8, 16, 32, 64)) -> tuple[bytes, int]:
    if size not in allowed:
        raise EncodingError(f"operand size {size!r} not supported here (allowed: {allowed})")
    return _OPSIZE[size]


def _signed(imm: int, bits: int) -> int:
    """``imm`` as a signed ``bits``-bit value; accepts signed or unsigned spellings."""
    if type(imm) is not int:
        raise EncodingError(f"immediate must be an int, not {imm!r}")
    if not -(1 << (bits - 1)) <= imm < (1 << bits):
        raise EncodingError(f"immediate {imm:#x} does not fit {bits} bits")
    return imm - (1 << bits) if imm >= (1 << (bits - 1)) else imm


def _imm_for_size(imm: int, size: int) -> int:
    """Signed immediate for a ``size``-bit ALU op; 64-bit ones must fit simm32."""
    value = _signed(imm, size)
    if size == 64 and not -0x8000_0000 <= value <= 0x7FFF_FFFF:
        raise EncodingError(f"64-bit immediate {imm:#x} is not a sign-extended imm32")
    return value


def _is_byte_rex_reg(r) -> bool:
    """SPL/BPL/SIL/DIL need a REX prefix (without one, 4..7 mean AH/CH/DH/BH)."""
    return type(r) is Reg and 4 <= r <= 7


def _need_reg(r, what: str = "operand") -> Reg:
    if type(r) is not Reg:
        raise EncodingError(f"{what} must be a Reg, not {r!r}")
    return r


def _need_xmm(r, what: str = "operand") -> Xmm:
    if type(r) is not Xmm:
        raise EncodingError(f"{what} must be an Xmm, not {r!r}")
    return r


def _need_reg_or_mem(r, what: str = "operand"):
    if type(r) is not Reg and not isinstance(r, Mem):
        raise EncodingError(f"{what} must be a Reg or Mem, not {r!r}")
    return r


def _need_xmm_or_mem(r, what: str = "operand"):
    if type(r) is not Xmm and not isinstance(r, Mem):
        raise EncodingError(f"{what} must be an Xmm or Mem, not {r!r}")
    return r


def nop_bytes(length: int) -> bytes:
    """``length`` bytes of NOPs in as few instructions as the manual's forms allow."""
    out = bytearray()
    while len(out) < length:
        out += _NOPS[min(length - len(out), 9)]
    return bytes(out)


class Assembler:
    """Appends encoded x86-64 instructions to :attr:`code`.

    Label references to labels not yet bound are recorded as fixups and written by
    :meth:`finish`; references to already-bound labels are written immediately.
    """

    __slots__ = ("code", "_fixups", "_labels", "branch_boundary", "origin", "branch_units", "_fusible_at",
                 "_fusible_end", "carrier_end")

    def __init__(self) -> None:
        self.code = bytearray()
        # Pending references, keyed by field offset: (field bytes (1 or 4), label,
        # anchor, addend); field := label + addend - anchor, anchor an offset or a Label.
        self._fixups: dict[int, tuple[int, Label, int | Label, int]] = {}
        self._labels = 0
        #: 32: keep every branch unit off 32-byte boundaries (:meth:`pad_for_branch`);
        #: 0 (the default): emit branches where they fall.
        self.branch_boundary = 0
        #: The address of ``code[0]`` modulo ``branch_boundary`` (a template is
        #: built for where it will be copied); None: not known, so branch units
        #: are only recorded (``branch_units``), never padded.
        self.origin: int | None = 0
        #: When a list: ``(start, end)`` of every branch unit emitted, appended
        #: by :meth:`pad_for_branch` (a template's, to check it at another origin).
        self.branch_units: list[tuple[int, int]] | None = None
        # The last instruction that can macro-fuse with a following jcc
        # (cmp/test/add/sub/and/inc/dec): its start and end offsets.
        self._fusible_at = self._fusible_end = -1
        #: Where the last *carrier store* ends: a 64-bit register store to an
        #: operand-stack slot, ``mov [rsp+disp8], r64`` with 0 < disp8 < 128 a
        #: multiple of 8 (5 bytes, codemem.frametable.carrier_store) or ``mov [rsp], r64``
        #: (4 bytes, whose disp8 form is 5); or, set by the compiler's
        #: local.set template, a local's store ``mov [rbp+disp8], r64`` (4
        #: bytes) or a ``mov r64, r64`` (3); -1 after a label is bound (a
        #: branch there would skip a site made of that store).  While it
        #: equals :attr:`offset` the store is the last instruction and may be
        #: the next sequence point's patch site (compiler.py _instruction_site).
        self.carrier_end = -1

    # ------------------------------------------------------------------ labels

    @property
    def offset(self) -> int:
        """Offset of the next byte to be emitted."""
        return len(self.code)

    def new_label(self) -> Label:
        self._labels += 1
        return Label(self, self._labels)

    def bind(self, label: Label) -> None:
        """Bind ``label`` to the current offset; a label is bound exactly once."""
        self._own(label)
        if label._offset >= 0:
            raise EncodingError(f"{label!r} is already bound")
        label._offset = len(self.code)
        self._fusible_end = -1  # a jump target between a cmp and its jcc: they are no unit
        self.carrier_end = -1

    def label_offset(self, label: Label) -> int:
        self._own(label)
        if label._offset < 0:
            raise EncodingError(f"{label!r} is not bound")
        return label._offset

    def _own(self, label: Label) -> None:
        if type(label) is not Label or label._owner is not self:
            raise EncodingError(f"{label!r} is not a label of this assembler")

    def _ref(self, pos: int, nbytes: int, label: Label, anchor: int | Label, addend: int) -> None:
        """Record that the ``nbytes`` field at ``pos`` holds ``label + addend - anchor``."""
        if label._owner is not self:
            raise EncodingError(f"{label!r} is not a label of this assembler")
        if label._offset >= 0 and (type(anchor) is int or anchor._offset >= 0):
            self._write_field(pos, nbytes, label, anchor, addend)
        else:
            self._fixups[pos] = (nbytes, label, anchor, addend)

    def _write_field(self, pos: int, nbytes: int, label: Label, anchor: int | Label, addend: int) -> None:
        base = anchor if type(anchor) is int else anchor._offset
        value = label._offset + addend - base
        limit = 1 << (nbytes * 8 - 1)
        if not -limit <= value < limit:
            raise EncodingError(f"reference to {label!r} at {pos:#x}: {value} does not fit {nbytes} bytes")
        self.code[pos : pos + nbytes] = value.to_bytes(nbytes, "little", signed=True)

    def finish(self) -> bytes:
        """Resolve every pending label reference and return the code.

        Raises EncodingError if a referenced label is unbound or a short (rel8)
        reference is out of range. Emission may continue afterwards; a later
        ``finish`` resolves only what was added since."""
        fixups = self._fixups
        for pos, (nbytes, label, anchor, addend) in fixups.items():
            if label._offset < 0:
                raise EncodingError(f"{label!r} is referenced at {pos:#x} but never bound")
            if type(anchor) is Label and anchor._offset < 0:
                raise EncodingError(f"{anchor!r} is referenced at {pos:#x} but never bound")
            self._write_field(pos, nbytes, label, anchor, addend)
        logger.debug("assembled %d bytes, resolved %d fixups", len(self.code), len(fixups))
        self._fixups = {}
        return bytes(self.code)

    def patch_rel32(self, at_offset: int, target_offset: int) -> None:
        """Rewrite the rel32 field at ``at_offset`` (as returned by jmp/jcc/call) so it
        reaches ``target_offset``: the field is relative to its own end, which is the
        end of the instruction for jmp/jcc/call.

        The field must not hold a still-pending label reference (finish() would
        overwrite the patch), so that is an error."""
        if at_offset in self._fixups:
            pending = self._fixups[at_offset][1]
            raise EncodingError(f"rel32 at {at_offset:#x} is a pending reference to {pending!r}")
        value = target_offset - (at_offset + 4)
        if not -0x8000_0000 <= value <= 0x7FFF_FFFF or not 0 <= at_offset <= len(self.code) - 4:
            raise EncodingError(f"cannot patch rel32 at {at_offset:#x} to {target_offset:#x}")
        self.code[at_offset : at_offset + 4] = value.to_bytes(4, "little", signed=True)

    # ------------------------------------------------------ branch alignment

    def pad_for_branch(self, length: int, conditional: bool = False) -> None:
        """Called just before a branch of ``length`` bytes is appended (jcc, jmp,
        call, ret, their indirect forms): with ``branch_boundary`` set, NOP
        padding so that the branch unit neither crosses nor ends at a 32-byte
        boundary.  The unit is the branch or, for a ``conditional`` one (jcc),
        the cmp/test/add/sub/and/inc/dec right before it and the jcc (a
        macro-fused pair): the padding then goes before that instruction.

        Why: on Intel's Skylake-derived cores the microcode fix for the "JCC
        erratum" keeps any 32-byte chunk holding such a unit out of the decoded
        uop cache, so a loop that has one runs from the legacy decoders (Intel,
        "Mitigations for Jump Conditional Code Erratum", 2019; GNU as
        ``-mbranches-within-32B-boundaries`` pads the same way).  Patch sites
        move code by a few bytes, so without this the same loop could be fast
        with debugging off and slow with it on."""
        boundary = self.branch_boundary
        if not boundary:
            return
        code = self.code
        end = len(code)
        start = self._fusible_at if conditional and self._fusible_end == end else end
        origin = self.origin
        at = (start if origin is None else origin + start) & (boundary - 1)
        pad = 0 if origin is None or at + (end - start) + length < boundary else boundary - at
        if pad:
            # Only the fusible instruction (never a label target, never a
            # label reference: see _note_fusible) follows ``start``.
            code[start:start] = nop_bytes(pad)
            start += pad
        self._fusible_end = -1
        if self.branch_units is not None:
            self.branch_units.append((start, len(code) + length))

    def _note_fusible(self, start: int, operand) -> None:
        """The instruction just emitted at ``start`` can fuse with a next jcc
        (unless it has a rip-relative operand, whose pending reference
        pad_for_branch must not move)."""
        if self.branch_boundary and not isinstance(operand, RipLabel):
            self._fusible_at = start
            self._fusible_end = len(self.code)

    # -------------------------------------------------------------- raw bytes

    def emit_bytes(self, data: bytes) -> None:
        self.code += data

    def db(self, value: int) -> None:
        self.code.append(_signed(value, 8) & 0xFF)

    def dd(self, value: int) -> None:
        """A 32-bit little-endian datum (signed or unsigned spelling)."""
        self.code += _signed(value, 32).to_bytes(4, "little", signed=True)

    def dq(self, value: int) -> None:
        """A 64-bit little-endian datum (signed or unsigned spelling)."""
        self.code += _signed(value, 64).to_bytes(8, "little", signed=True)

    def dd_label_diff(self, label: Label, base: Label) -> None:
        """A 32-bit datum ``offset(label) - offset(base)`` (position-independent jump
        tables: ``lea r, [rip+table]; movsxd t, [r+i*4]; add t, r; jmp t``)."""
        self._own(base)
        pos = len(self.code)
        self.code += b"\x00\x00\x00\x00"
        self._ref(pos, 4, label, base, 0)

    def nop(self, length: int = 1) -> None:
        """``length`` bytes of NOPs, using the manual's multi-byte forms (<= 9 bytes each)."""
        while length > 0:
            chunk = min(length, 9)
            self.code += _NOPS[chunk]
            length -= chunk

    def nop5(self) -> int:
        """The disabled patch site ``0f 1f 44 00 00`` (nop dword [rax+rax]); returns its offset."""
        pos = len(self.code)
        self.code += b"\x0f\x1f\x44\x00\x00"
        return pos

    def align(self, n: int, fill: int | None = None) -> None:
        """Pad to a multiple of ``n`` (a power of two) with multi-byte NOPs, or with
        the byte ``fill`` repeated (e.g. 0xCC) when given."""
        if n <= 0 or n & (n - 1):
            raise EncodingError(f"alignment {n!r} is not a power of two")
        pad = -len(self.code) & (n - 1)
        if fill is None:
            self.nop(pad)
        else:
            self.code += bytes((fill,)) * pad

    # ---------------------------------------------------------- core encoding

    def _rm(
        self, prefix: bytes, w: int, opcode: bytes, reg: int, rm, force_rex: bool = False, imm_size: int = 0
    ) -> None:
        """Emit ``prefix [REX] opcode ModRM [SIB] [disp]``.

        ``reg`` goes in ModRM.reg (a register number or an opcode-extension digit),
        ``rm`` is a register number or a Mem; ``w`` is 8 for REX.W; ``force_rex``
        requests an empty REX (byte registers SPL..DIL); ``imm_size`` is the number of
        immediate bytes the caller appends, which a rip-relative displacement must
        skip (it is relative to the end of the instruction)."""
        code = self.code
        if prefix:
            code += prefix
        if isinstance(rm, Mem):
            rex = w | ((reg & 8) >> 1) | rm._rex
            if rex or force_rex:
                code.append(0x40 | rex)
            code += opcode
            pos = len(code)
            code += rm._tail
            code[pos] |= (reg & 7) << 3
            if rm.label is not None:
                self._ref(pos + 1, 4, rm.label, pos + 5 + imm_size, rm.disp)
        else:
            rex = w | ((reg & 8) >> 1) | (rm >> 3)
            if rex or force_rex:
                code.append(0x40 | rex)
            code += opcode
            code.append(0xC0 | ((reg & 7) << 3) | (rm & 7))

    def _imm(self, value: int, nbytes: int) -> None:
        self.code += value.to_bytes(nbytes, "little", signed=True)

    # ---------------------------------------------------------- integer: moves

    def mov(self, dst, src, size: int) -> None:
        """``mov dst, src``: (reg, reg), (reg, mem), (mem, reg), (reg, imm), (mem, imm).

        (reg, imm) picks the shortest equivalent encoding (see module docstring)."""
        prefix, w = _opsize(size)
        ts = type(src)
        if ts is Reg:
            _need_reg_or_mem(dst, "mov destination")
            force = size == 8 and (_is_byte_rex_reg(src) or _is_byte_rex_reg(dst))
            self._rm(prefix, w, b"\x88" if size == 8 else b"\x89", src, dst, force)
            if w and type(dst) is Mem and dst.base is Reg.RSP and dst.index is None \
                    and 0 <= dst.disp < 128 and not dst.disp & 7:  # an operand-stack slot
                self.carrier_end = len(self.code)
        elif isinstance(src, Mem):
            _need_reg(dst, "mov destination with a memory source")
            force = size == 8 and _is_byte_rex_reg(dst)
            self._rm(prefix, w, b"\x8a" if size == 8 else b"\x8b", dst, src, force)
        elif ts is int:
            if type(dst) is Reg:
                self._mov_reg_imm(dst, src, size)
            elif isinstance(dst, Mem):
                value = _imm_for_size(src, size)
                nbytes = 1 if size == 8 else 2 if size == 16 else 4
                self._rm(prefix, w, b"\xc6" if size == 8 else b"\xc7", 0, dst, imm_size=nbytes)
                self._imm(value, nbytes)
            else:
                raise EncodingError(f"mov destination must be a Reg or Mem, not {dst!r}")
        else:
            raise EncodingError(f"mov source must be a Reg, Mem or int, not {src!r}")

    def _mov_reg_imm(self, dst: Reg, imm: int, size: int) -> None:
        code = self.code
        low = dst & 7
        rex_b = dst >> 3
        if size == 8:
            value = _signed(imm, 8)
            if rex_b or 4 <= dst <= 7:
                code.append(0x40 | rex_b)
            code.append(0xB0 | low)
            self._imm(value, 1)
        elif size == 16:
            value = _signed(imm, 16)
            code.append(0x66)
            if rex_b:
                code.append(0x41)
            code.append(0xB8 | low)
            self._imm(value, 2)
        elif size == 32:
            value = _signed(imm, 32)
            if rex_b:
                code.append(0x41)
            code.append(0xB8 | low)
            self._imm(value, 4)
        elif size == 64:
            value = _signed(imm, 64)
            if 0 <= value <= 0xFFFF_FFFF:
                # mov r32, imm32 zero-extends into the full register (SDM Vol. 1 3.4.1.1).
                if rex_b:
                    code.append(0x41)
                code.append(0xB8 | low)
                code += value.to_bytes(4, "little")
            elif -0x8000_0000 <= value < 0:
                # REX.W C7 /0 sign-extends imm32.
                code.append(0x48 | rex_b)
                code.append(0xC7)
                code.append(0xC0 | low)
                self._imm(value, 4)
            else:
                self.mov_imm64(dst, value)
        else:
            raise EncodingError(f"operand size {size!r} not supported for mov")

    def mov_imm64(self, dst: Reg, imm: int) -> int:
        """Always the 10-byte ``movabs dst, imm64``; returns the offset of the imm64
        (so it can be patched)."""
        _need_reg(dst, "movabs destination")
        value = _signed(imm, 64)
        self.code.append(0x48 | (dst >> 3))
        self.code.append(0xB8 | (dst & 7))
        pos = len(self.code)
        self._imm(value, 8)
        return pos

    def zero(self, dst: Reg) -> None:
        """``xor dst32, dst32``: zeroes all 64 bits (clobbers flags)."""
        _need_reg(dst)
        self._rm(b"", 0, b"\x31", dst, dst)

    def movzx(self, dst: Reg, src, size: int, src_size: int) -> None:
        """Zero-extend an 8- or 16-bit ``src`` (Reg or Mem) into ``size`` (16/32/64)
        bits. 32 -> 64 zero extension is a plain ``mov(dst, src, 32)``."""
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "movzx destination")
        _need_reg_or_mem(src, "movzx source")
        if src_size == 8:
            self._rm(prefix, w, b"\x0f\xb6", dst, src, _is_byte_rex_reg(src))
        elif src_size == 16 and size != 16:
            self._rm(prefix, w, b"\x0f\xb7", dst, src)
        else:
            raise EncodingError(f"movzx from {src_size} to {size} bits is not an instruction")

    def movsx(self, dst: Reg, src, size: int, src_size: int) -> None:
        """Sign-extend an 8-, 16- or 32-bit ``src`` (Reg or Mem) into ``size`` bits;
        32 -> 64 is ``movsxd``."""
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "movsx destination")
        _need_reg_or_mem(src, "movsx source")
        if src_size == 8:
            self._rm(prefix, w, b"\x0f\xbe", dst, src, _is_byte_rex_reg(src))
        elif src_size == 16 and size != 16:
            self._rm(prefix, w, b"\x0f\xbf", dst, src)
        elif src_size == 32 and size == 64:
            self._rm(prefix, w, b"\x63", dst, src)
        else:
            raise EncodingError(f"movsx from {src_size} to {size} bits is not an instruction")

    def movsxd(self, dst: Reg, src) -> None:
        """``movsxd dst64, src32``."""
        self.movsx(dst, src, 64, 32)

    def lea(self, dst: Reg, src: Mem, size: int = 64) -> None:
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "lea destination")
        if not isinstance(src, Mem):
            raise EncodingError(f"lea source must be a Mem, not {src!r}")
        self._rm(prefix, w, b"\x8d", dst, src)

    def xchg(self, a, b, size: int) -> None:
        """``xchg a, b`` with (reg, reg), (mem, reg) or (reg, mem). A memory operand
        makes it an implicitly locked access (SDM: XCHG)."""
        prefix, w = _opsize(size)
        if type(b) is not Reg:
            a, b = b, a
        _need_reg(b, "xchg operand")
        _need_reg_or_mem(a, "xchg operand")
        force = size == 8 and (_is_byte_rex_reg(a) or _is_byte_rex_reg(b))
        self._rm(prefix, w, b"\x86" if size == 8 else b"\x87", b, a, force)

    def push(self, src) -> None:
        """``push`` a 64-bit Reg, Mem or sign-extended imm32."""
        code = self.code
        if type(src) is Reg:
            if src >= 8:
                code.append(0x41)
            code.append(0x50 | (src & 7))
        elif isinstance(src, Mem):
            self._rm(b"", 0, b"\xff", 6, src)
        elif type(src) is int:
            value = _imm_for_size(src, 64)
            if -128 <= value <= 127:
                code.append(0x6A)
                self._imm(value, 1)
            else:
                code.append(0x68)
                self._imm(value, 4)
        else:
            raise EncodingError(f"push operand must be a Reg, Mem or int, not {src!r}")

    def pop(self, dst) -> None:
        """``pop`` into a 64-bit Reg or Mem."""
        if type(dst) is Reg:
            if dst >= 8:
                self.code.append(0x41)
            self.code.append(0x58 | (dst & 7))
        elif isinstance(dst, Mem):
            self._rm(b"", 0, b"\x8f", 0, dst)
        else:
            raise EncodingError(f"pop operand must be a Reg or Mem, not {dst!r}")

    # ------------------------------------------------------ integer: arithmetic

    def _alu(self, digit: int, dst, src, size: int) -> None:
        """The classic ALU group: opcodes digit*8 + {0,1,2,3} and 80/81/83 /digit."""
        start = len(self.code)
        prefix, w = _opsize(size)
        ts = type(src)
        if ts is Reg:
            _need_reg_or_mem(dst)
            force = size == 8 and (_is_byte_rex_reg(src) or _is_byte_rex_reg(dst))
            self._rm(prefix, w, _B[digit * 8 + (size != 8)], src, dst, force)
        elif isinstance(src, Mem):
            _need_reg(dst, "destination with a memory source")
            self._rm(prefix, w, _B[digit * 8 + 2 + (size != 8)], dst, src, size == 8 and _is_byte_rex_reg(dst))
        elif ts is int:
            _need_reg_or_mem(dst)
            value = _imm_for_size(src, size)
            if size == 8:
                self._rm(prefix, w, b"\x80", digit, dst, _is_byte_rex_reg(dst), 1)
                self._imm(value, 1)
            elif -128 <= value <= 127:
                self._rm(prefix, w, b"\x83", digit, dst, False, 1)
                self._imm(value, 1)
            else:
                nbytes = 2 if size == 16 else 4
                self._rm(prefix, w, b"\x81", digit, dst, False, nbytes)
                self._imm(value, nbytes)
        else:
            raise EncodingError(f"source must be a Reg, Mem or int, not {src!r}")
        if self.branch_boundary and digit in _FUSIBLE_ALU:
            self._note_fusible(start, src if ts is not Reg and ts is not int else dst)

    def add(self, dst, src, size: int) -> None:
        self._alu(0, dst, src, size)

    def or_(self, dst, src, size: int) -> None:
        self._alu(1, dst, src, size)

    def adc(self, dst, src, size: int) -> None:
        self._alu(2, dst, src, size)

    def sbb(self, dst, src, size: int) -> None:
        self._alu(3, dst, src, size)

    def and_(self, dst, src, size: int) -> None:
        self._alu(4, dst, src, size)

    def sub(self, dst, src, size: int) -> None:
        self._alu(5, dst, src, size)

    def xor(self, dst, src, size: int) -> None:
        self._alu(6, dst, src, size)

    def cmp(self, dst, src, size: int) -> None:
        self._alu(7, dst, src, size)

    def test(self, a, b, size: int) -> None:
        """``test a, b``: (reg, reg), (mem, reg), (reg, imm), (mem, imm). (reg, mem) is
        accepted and encoded as (mem, reg), which is the same instruction."""
        prefix, w = _opsize(size)
        start = len(self.code)
        if isinstance(b, Mem) and type(a) is Reg:
            a, b = b, a
        _need_reg_or_mem(a, "test operand")
        if type(b) is Reg:
            force = size == 8 and (_is_byte_rex_reg(a) or _is_byte_rex_reg(b))
            self._rm(prefix, w, b"\x84" if size == 8 else b"\x85", b, a, force)
        elif type(b) is int:
            value = _imm_for_size(b, size)
            nbytes = 1 if size == 8 else 2 if size == 16 else 4
            self._rm(prefix, w, b"\xf6" if size == 8 else b"\xf7", 0, a, size == 8 and _is_byte_rex_reg(a), nbytes)
            self._imm(value, nbytes)
        else:
            raise EncodingError(f"test operand must be a Reg or int, not {b!r}")
        self._note_fusible(start, a)

    def _unary(self, digit: int, op8: bytes, op: bytes, dst, size: int) -> None:
        prefix, w = _opsize(size)
        _need_reg_or_mem(dst)
        if size == 8:
            self._rm(prefix, w, op8, digit, dst, _is_byte_rex_reg(dst))
        else:
            self._rm(prefix, w, op, digit, dst)

    def inc(self, dst, size: int) -> None:
        start = len(self.code)
        self._unary(0, b"\xfe", b"\xff", dst, size)
        self._note_fusible(start, dst)

    def dec(self, dst, size: int) -> None:
        start = len(self.code)
        self._unary(1, b"\xfe", b"\xff", dst, size)
        self._note_fusible(start, dst)

    def not_(self, dst, size: int) -> None:
        self._unary(2, b"\xf6", b"\xf7", dst, size)

    def neg(self, dst, size: int) -> None:
        self._unary(3, b"\xf6", b"\xf7", dst, size)

    def mul(self, src, size: int) -> None:
        """Unsigned widening multiply: rdx:rax = rax * src (al/ax/eax forms by size)."""
        self._unary(4, b"\xf6", b"\xf7", src, size)

    def imul1(self, src, size: int) -> None:
        """Signed widening multiply (one-operand imul): rdx:rax = rax * src."""
        self._unary(5, b"\xf6", b"\xf7", src, size)

    def div(self, src, size: int) -> None:
        """Unsigned divide of rdx:rax (by size) by src: quotient in rax, remainder in rdx."""
        self._unary(6, b"\xf6", b"\xf7", src, size)

    def idiv(self, src, size: int) -> None:
        """Signed divide of rdx:rax (by size) by src: quotient in rax, remainder in rdx."""
        self._unary(7, b"\xf6", b"\xf7", src, size)

    def imul(self, dst: Reg, src, size: int) -> None:
        """``imul dst, src`` (truncating), src a Reg or Mem; sizes 16/32/64."""
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "imul destination")
        _need_reg_or_mem(src, "imul source")
        self._rm(prefix, w, b"\x0f\xaf", dst, src)

    def imul_imm(self, dst: Reg, src, imm: int, size: int) -> None:
        """``imul dst, src, imm`` (truncating), src a Reg or Mem; sizes 16/32/64."""
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "imul destination")
        _need_reg_or_mem(src, "imul source")
        value = _imm_for_size(imm, size)
        if -128 <= value <= 127:
            self._rm(prefix, w, b"\x6b", dst, src, imm_size=1)
            self._imm(value, 1)
        else:
            nbytes = 2 if size == 16 else 4
            self._rm(prefix, w, b"\x69", dst, src, imm_size=nbytes)
            self._imm(value, nbytes)

    def cdq(self) -> None:
        """Sign-extend eax into edx:eax (before a 32-bit idiv)."""
        self.code.append(0x99)

    def cqo(self) -> None:
        """Sign-extend rax into rdx:rax (before a 64-bit idiv)."""
        self.code += b"\x48\x99"

    # ------------------------------------------------------------ integer: shifts

    def _shift(self, digit: int, dst, count, size: int) -> None:
        prefix, w = _opsize(size)
        _need_reg_or_mem(dst)
        force = size == 8 and _is_byte_rex_reg(dst)
        byte = size == 8
        if type(count) is Reg:
            if count != Reg.RCX:
                raise EncodingError("a variable shift count must be in cl (Reg.RCX)")
            self._rm(prefix, w, b"\xd2" if byte else b"\xd3", digit, dst, force)
        elif type(count) is int:
            if not 0 <= count <= 255:
                raise EncodingError(f"shift count {count} does not fit imm8")
            if count == 1:
                self._rm(prefix, w, b"\xd0" if byte else b"\xd1", digit, dst, force)
            else:
                self._rm(prefix, w, b"\xc0" if byte else b"\xc1", digit, dst, force, 1)
                self.code.append(count)
        else:
            raise EncodingError(f"shift count must be Reg.RCX or an int, not {count!r}")

    def rol(self, dst, count, size: int) -> None:
        """Rotate left by an imm8 or by cl (pass ``Reg.RCX``)."""
        self._shift(0, dst, count, size)

    def ror(self, dst, count, size: int) -> None:
        self._shift(1, dst, count, size)

    def shl(self, dst, count, size: int) -> None:
        self._shift(4, dst, count, size)

    def shr(self, dst, count, size: int) -> None:
        self._shift(5, dst, count, size)

    def sar(self, dst, count, size: int) -> None:
        self._shift(7, dst, count, size)

    # ------------------------------------------------- integer: flags and bits

    def setcc(self, cond: Cond, dst) -> None:
        """``setCC dst8`` (a Reg, meaning its low byte, or a byte Mem)."""
        _need_reg_or_mem(dst, "setcc destination")
        self._rm(b"", 0, bytes((0x0F, 0x90 | cond)), 0, dst, _is_byte_rex_reg(dst))

    def cmovcc(self, cond: Cond, dst: Reg, src, size: int) -> None:
        """``cmovCC dst, src`` (src a Reg or Mem); sizes 16/32/64. The 32-bit form
        zero-extends dst even when the condition is false."""
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "cmov destination")
        _need_reg_or_mem(src, "cmov source")
        self._rm(prefix, w, bytes((0x0F, 0x40 | cond)), dst, src)

    def _bitscan(self, rep: bytes, opcode: bytes, dst: Reg, src, size: int) -> None:
        prefix, w = _opsize(size, (16, 32, 64))
        _need_reg(dst, "destination")
        _need_reg_or_mem(src, "source")
        # The mandatory F3 comes after 66: legacy prefixes must precede REX.
        self._rm(prefix + rep, w, opcode, dst, src)

    def lzcnt(self, dst: Reg, src, size: int) -> None:
        """LZCNT (ABM/LZCNT extension; on CPUs without it, F3 0F BD executes as bsr)."""
        self._bitscan(b"\xf3", b"\x0f\xbd", dst, src, size)

    def tzcnt(self, dst: Reg, src, size: int) -> None:
        """TZCNT (BMI1; on CPUs without it, F3 0F BC executes as bsf)."""
        self._bitscan(b"\xf3", b"\x0f\xbc", dst, src, size)

    def popcnt(self, dst: Reg, src, size: int) -> None:
        self._bitscan(b"\xf3", b"\x0f\xb8", dst, src, size)

    def bsr(self, dst: Reg, src, size: int) -> None:
        self._bitscan(b"", b"\x0f\xbd", dst, src, size)

    def bsf(self, dst: Reg, src, size: int) -> None:
        self._bitscan(b"", b"\x0f\xbc", dst, src, size)

    def bswap(self, dst: Reg, size: int) -> None:
        """Byte swap a 32- or 64-bit register."""
        _, w = _opsize(size, (32, 64))
        _need_reg(dst, "bswap operand")
        rex = w | (dst >> 3)
        if rex:
            self.code.append(0x40 | rex)
        self.code.append(0x0F)
        self.code.append(0xC8 | (dst & 7))

    # ---------------------------------------------------------- control flow

    def jmp(self, label: Label, short: bool = False) -> int:
        """``jmp label`` (rel32, or rel8 if ``short``); returns the field's offset.
        A short jump whose target ends up out of range fails in finish()."""
        self.pad_for_branch(2 if short else 5)
        if short:
            self.code += b"\xeb\x00"
            pos = len(self.code) - 1
            self._ref(pos, 1, label, pos + 1, 0)
        else:
            self.code += b"\xe9\x00\x00\x00\x00"
            pos = len(self.code) - 4
            self._ref(pos, 4, label, pos + 4, 0)
        return pos

    def jcc(self, cond: Cond, label: Label, short: bool = False) -> int:
        """``jCC label`` (rel32, or rel8 if ``short``); returns the field's offset."""
        self.pad_for_branch(2 if short else 6, True)
        if short:
            self.code.append(0x70 | cond)
            self.code.append(0)
            pos = len(self.code) - 1
            self._ref(pos, 1, label, pos + 1, 0)
        else:
            self.code.append(0x0F)
            self.code.append(0x80 | cond)
            self.code += b"\x00\x00\x00\x00"
            pos = len(self.code) - 4
            self._ref(pos, 4, label, pos + 4, 0)
        return pos

    def call(self, label: Label) -> int:
        """``call rel32`` to ``label``; returns the field's offset (the return
        address is the current offset afterwards)."""
        self.pad_for_branch(5)
        self.code += b"\xe8\x00\x00\x00\x00"
        pos = len(self.code) - 4
        self._ref(pos, 4, label, pos + 4, 0)
        return pos

    def call_reg(self, target: Reg) -> None:
        self.pad_for_branch(3 if _need_reg(target, "call target") >= 8 else 2)
        self._rm(b"", 0, b"\xff", 2, target)

    def call_mem(self, target: Mem) -> None:
        """``call qword ptr [target]`` (e.g. ``Mem.rip(slot_label)``); never
        padded for ``branch_boundary`` (the veneers' form)."""
        if not isinstance(target, Mem):
            raise EncodingError(f"call_mem needs a Mem, not {target!r}")
        self._rm(b"", 0, b"\xff", 2, target)

    def jmp_reg(self, target: Reg) -> None:
        self.pad_for_branch(3 if _need_reg(target, "jmp target") >= 8 else 2)
        self._rm(b"", 0, b"\xff", 4, target)

    def jmp_mem(self, target: Mem) -> None:
        if not isinstance(target, Mem):
            raise EncodingError(f"jmp_mem needs a Mem, not {target!r}")
        self._rm(b"", 0, b"\xff", 4, target)

    def ret(self) -> None:
        self.pad_for_branch(1)
        self.code.append(0xC3)

    def ud2(self) -> None:
        self.code += b"\x0f\x0b"

    def int3(self) -> None:
        self.code.append(0xCC)

    # ------------------------------------------------------------------- SSE

    def _sse(self, prefix: bytes, opcode: bytes, dst, src, imm_size: int = 0) -> None:
        """``op xmm, xmm/mem``."""
        _need_xmm(dst, "destination")
        _need_xmm_or_mem(src, "source")
        self._rm(prefix, 0, opcode, dst, src, False, imm_size)

    def _sse_move(self, prefix: bytes, load: bytes, store: bytes, dst, src) -> None:
        """Moves with a load form (xmm <- xmm/mem) and a store form (mem <- xmm)."""
        if type(dst) is Xmm:
            _need_xmm_or_mem(src, "source")
            self._rm(prefix, 0, load, dst, src)
        elif isinstance(dst, Mem):
            self._rm(prefix, 0, store, _need_xmm(src, "source"), dst)
        else:
            raise EncodingError(f"destination must be an Xmm or Mem, not {dst!r}")

    def movss(self, dst, src) -> None:
        """(xmm, xmm) merges the low f32; (xmm, mem) loads and zeroes the rest; (mem, xmm) stores 32 bits."""
        self._sse_move(b"\xf3", b"\x0f\x10", b"\x0f\x11", dst, src)

    def movsd(self, dst, src) -> None:
        """(xmm, xmm) merges the low f64; (xmm, mem) loads and zeroes the rest; (mem, xmm) stores 64 bits."""
        self._sse_move(b"\xf2", b"\x0f\x10", b"\x0f\x11", dst, src)

    def movaps(self, dst, src) -> None:
        """Full-register copy (mem forms need 16-byte alignment)."""
        self._sse_move(b"", b"\x0f\x28", b"\x0f\x29", dst, src)

    def movapd(self, dst, src) -> None:
        self._sse_move(b"\x66", b"\x0f\x28", b"\x0f\x29", dst, src)

    def movdqu(self, dst, src) -> None:
        """Unaligned 128-bit load/store (saving and restoring xmm registers)."""
        self._sse_move(b"\xf3", b"\x0f\x6f", b"\x0f\x7f", dst, src)

    def movd(self, dst, src) -> None:
        """32-bit move: (xmm, reg/mem) zeroes the upper bits; (reg/mem, xmm) takes the low 32."""
        if type(dst) is Xmm:
            self._rm(b"\x66", 0, b"\x0f\x6e", dst, _need_reg_or_mem(src, "movd source"))
        elif type(src) is Xmm:
            self._rm(b"\x66", 0, b"\x0f\x7e", src, _need_reg_or_mem(dst, "movd destination"))
        else:
            raise EncodingError("movd needs an Xmm operand")

    def movq(self, dst, src) -> None:
        """64-bit move: (xmm, reg/mem/xmm) zeroes bits 64..127; (reg/mem, xmm) takes the low 64."""
        if type(dst) is Xmm:
            if type(src) is Reg:
                self._rm(b"\x66", 8, b"\x0f\x6e", dst, src)
            else:
                # F3 0F 7E: movq xmm, xmm/m64 (one byte shorter than 66 REX.W 0F 6E for memory).
                self._rm(b"\xf3", 0, b"\x0f\x7e", dst, _need_xmm_or_mem(src, "movq source"))
        elif type(src) is Xmm:
            if type(dst) is Reg:
                self._rm(b"\x66", 8, b"\x0f\x7e", src, dst)
            elif isinstance(dst, Mem):
                self._rm(b"\x66", 0, b"\x0f\xd6", src, dst)
            else:
                raise EncodingError(f"movq destination must be a Reg, Mem or Xmm, not {dst!r}")
        else:
            raise EncodingError("movq needs an Xmm operand")

    def addss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x58", dst, src)

    def addsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x58", dst, src)

    def mulss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x59", dst, src)

    def mulsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x59", dst, src)

    def subss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x5c", dst, src)

    def subsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x5c", dst, src)

    def minss(self, dst: Xmm, src) -> None:
        """x86 min: returns src if either is NaN or both are zero (not wasm's fmin)."""
        self._sse(b"\xf3", b"\x0f\x5d", dst, src)

    def minsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x5d", dst, src)

    def divss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x5e", dst, src)

    def divsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x5e", dst, src)

    def maxss(self, dst: Xmm, src) -> None:
        """x86 max: returns src if either is NaN or both are zero (not wasm's fmax)."""
        self._sse(b"\xf3", b"\x0f\x5f", dst, src)

    def maxsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x5f", dst, src)

    def sqrtss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x51", dst, src)

    def sqrtsd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x51", dst, src)

    def roundss(self, dst: Xmm, src, mode: int) -> None:
        """SSE4.1 ``roundss dst, src, mode`` (a RoundMode, optionally | ROUND_SUPPRESS_PRECISION)."""
        self._round(b"\x0f\x3a\x0a", dst, src, mode)

    def roundsd(self, dst: Xmm, src, mode: int) -> None:
        self._round(b"\x0f\x3a\x0b", dst, src, mode)

    def _round(self, opcode: bytes, dst, src, mode: int) -> None:
        if type(mode) not in (int, RoundMode) or not 0 <= mode <= 255:
            raise EncodingError(f"rounding mode {mode!r} does not fit imm8")
        self._sse(b"\x66", opcode, dst, src, 1)
        self.code.append(mode)

    def ucomiss(self, a: Xmm, b) -> None:
        """Unordered compare (quiet on QNaN): ZF,PF,CF = 1,1,1 when unordered."""
        self._sse(b"", b"\x0f\x2e", a, b)

    def ucomisd(self, a: Xmm, b) -> None:
        self._sse(b"\x66", b"\x0f\x2e", a, b)

    def comiss(self, a: Xmm, b) -> None:
        self._sse(b"", b"\x0f\x2f", a, b)

    def comisd(self, a: Xmm, b) -> None:
        self._sse(b"\x66", b"\x0f\x2f", a, b)

    def _cvt_from_int(self, prefix: bytes, dst, src, size: int) -> None:
        _, w = _opsize(size, (32, 64))
        _need_xmm(dst, "destination")
        self._rm(prefix, w, b"\x0f\x2a", dst, _need_reg_or_mem(src, "source"))

    def cvtsi2ss(self, dst: Xmm, src, size: int) -> None:
        """Signed ``size``-bit (32/64) integer Reg/Mem -> f32."""
        self._cvt_from_int(b"\xf3", dst, src, size)

    def cvtsi2sd(self, dst: Xmm, src, size: int) -> None:
        """Signed ``size``-bit (32/64) integer Reg/Mem -> f64."""
        self._cvt_from_int(b"\xf2", dst, src, size)

    def _cvt_to_int(self, prefix: bytes, dst, src, size: int) -> None:
        _, w = _opsize(size, (32, 64))
        _need_reg(dst, "destination")
        self._rm(prefix, w, b"\x0f\x2c", dst, _need_xmm_or_mem(src, "source"))

    def cvttss2si(self, dst: Reg, src, size: int) -> None:
        """f32 -> signed ``size``-bit integer, truncating; out of range/NaN gives
        the "integer indefinite" value 0x80..0 (SDM: CVTTSS2SI)."""
        self._cvt_to_int(b"\xf3", dst, src, size)

    def cvttsd2si(self, dst: Reg, src, size: int) -> None:
        """f64 -> signed ``size``-bit integer, truncating (see cvttss2si)."""
        self._cvt_to_int(b"\xf2", dst, src, size)

    def cvtss2sd(self, dst: Xmm, src) -> None:
        self._sse(b"\xf3", b"\x0f\x5a", dst, src)

    def cvtsd2ss(self, dst: Xmm, src) -> None:
        self._sse(b"\xf2", b"\x0f\x5a", dst, src)

    def andps(self, dst: Xmm, src) -> None:
        """Bitwise ops read 128 bits: a Mem source must be 16-byte aligned."""
        self._sse(b"", b"\x0f\x54", dst, src)

    def andpd(self, dst: Xmm, src) -> None:
        self._sse(b"\x66", b"\x0f\x54", dst, src)

    def andnps(self, dst: Xmm, src) -> None:
        """dst = ~dst & src."""
        self._sse(b"", b"\x0f\x55", dst, src)

    def andnpd(self, dst: Xmm, src) -> None:
        self._sse(b"\x66", b"\x0f\x55", dst, src)

    def orps(self, dst: Xmm, src) -> None:
        self._sse(b"", b"\x0f\x56", dst, src)

    def orpd(self, dst: Xmm, src) -> None:
        self._sse(b"\x66", b"\x0f\x56", dst, src)

    def xorps(self, dst: Xmm, src) -> None:
        self._sse(b"", b"\x0f\x57", dst, src)

    def xorpd(self, dst: Xmm, src) -> None:
        self._sse(b"\x66", b"\x0f\x57", dst, src)

    def pxor(self, dst: Xmm, src) -> None:
        self._sse(b"\x66", b"\x0f\xef", dst, src)

    def cmpss(self, dst: Xmm, src, pred: CmpPred) -> None:
        """dst.low32 = all-ones if (dst pred src) else 0."""
        self._cmp_pred(b"\xf3", dst, src, pred)

    def cmpsd(self, dst: Xmm, src, pred: CmpPred) -> None:
        """dst.low64 = all-ones if (dst pred src) else 0 (SSE2 cmpsd, not the string op)."""
        self._cmp_pred(b"\xf2", dst, src, pred)

    def _cmp_pred(self, prefix: bytes, dst, src, pred) -> None:
        if type(pred) not in (int, CmpPred) or not 0 <= pred <= 7:
            raise EncodingError(f"comparison predicate {pred!r} is not 0..7")
        self._sse(prefix, b"\x0f\xc2", dst, src, 1)
        self.code.append(pred)

    def movmskps(self, dst: Reg, src: Xmm) -> None:
        """dst32 = the sign bits of src's four f32 lanes (bit 0 = low lane)."""
        self._rm(b"", 0, b"\x0f\x50", _need_reg(dst, "destination"), _need_xmm(src, "source"))

    def movmskpd(self, dst: Reg, src: Xmm) -> None:
        """dst32 = the sign bits of src's two f64 lanes (bit 0 = low lane)."""
        self._rm(b"\x66", 0, b"\x0f\x50", _need_reg(dst, "destination"), _need_xmm(src, "source"))
