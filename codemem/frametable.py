"""The frame table: what the compiler knows about every byte it emitted.

Everything debugger-facing (stop pc -> wasm location, backtraces, locals, line
tables, qWasm* answers) is derived from this table, so it is stored with the
EngineCode image and all its offsets are image-relative (position independent:
the same table describes every StoreCode copy).

Binary layout (little-endian; every offset below is relative to the start of
the frame table unless it says "image"):

    Header (80 bytes)
    +--------+---------+-------+-----------+-----------+-------------+----------+-----------+
    | "WFT\1"| version | flags | code_size | bp_veneer | trap_veneer | bp_slot  | trap_slot |
    |  4     |  u16    |  u16  |  u32      | u32 image | u32 image   | u32 image| u32 image |
    +--------+---------+-------+-----------+-----------+-------------+----------+-----------+
    | num_functions, functions_offset, num_sites, sites_offset, num_seqpoints,           |
    | seqpoints_offset, num_locals, locals_offset, types_size, types_offset,            |
    | num_mirrors, mirrors_offset  (u32 each), 4 reserved bytes                          |
    +------------------------------------------------------------------------------------+
    FunctionRecord[num_functions]   40 bytes each, sorted by native_start, disjoint
    SequencePoint[num_seqpoints]    20 bytes each; a function's points are contiguous
                                    and sorted by native_offset
    LocalSlot[num_locals]           8 bytes each; a function's slots are contiguous
                                    (params first, then declared locals)
    PatchSite[num_sites]            16 bytes each, sorted by offset
    types pool                      one ValType byte per operand-stack entry
    RegisterMirror[num_mirrors]     8 bytes each: the mirror pool (below)

Register mirrors (version 3).  At every sequence point every wasm value is in its
frame slot.  The code after an INSTRUCTION sequence point may also rely on
registers that hold a copy of a slot ("mirror" it), or a copy of a field of the
instance context: a SequencePoint's ``num_mirrors`` records starting at index
``first_mirror`` of the mirror pool say which.  A RegisterMirror is::

    +----------+--------+----------+--------------------+
    | register | source | reserved | frame_offset       |
    |  u8      |  u8    |  2 bytes |  i32, rbp-relative |
    +----------+--------+----------+--------------------+

``register`` is a hardware GPR number (``codemem.x64.regs.Reg``: 0 rax, 1 rcx,
2 rdx, 3 rbx, 6 rsi, 7 rdi, 8..14 r8..r14; never rsp, rbp or r15) and appears
at most once per sequence point; ENTRY and RETURN_POINT points have no mirrors.
``source`` (:class:`MirrorSource`) says what the register holds:

* SLOT (0): exactly the 64 bits stored at ``[rbp + frame_offset]`` (a local or
  operand-stack slot, 8-aligned, below rbp).  Whoever resumes the guest from a
  stop at the point must reload the register from its slot (a debugger may
  have written the slot), and a debugger's write to the register must be
  written through to its slot.
* MEMORY0_BASE (1) / MEMORY0_LENGTH (2): memory 0's base address / current
  byte length, as the instance context (r15) gives them (``codemem.abi``
  VMCTX_MEMORY_BASE, VMCTX_MEMORY_DEF -> MEMDEF_LENGTH); ``frame_offset`` is
  0.  The code's bounds checks trust these registers, so whoever resumes the
  guest must reload them from the context, and a debugger must not change
  them.

Equal mirror lists are stored once (the pool is interned).

A patch site's 5 bytes never straddle an 8-byte boundary (``offset % 8 <= 3``)
so a running guest can be patched with one atomic 8-byte store.
"""
from __future__ import annotations

import bisect
import enum
import mmap
import struct
import sys
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from operator import itemgetter, lshift, mul, or_
from typing import Iterable, Iterator, NamedTuple, Sequence

import construct as cs

from ._native import ffi, lib
from .errors import FrameTableError

MAGIC = b"WFT\x01"
VERSION = 3
FLAG_DEBUG = 1

#: The disabled form of every patch site: ``nopl 0x0(%rax,%rax,1)``.
SITE_DISABLED = bytes.fromhex("0f1f440000")
SITE_SIZE = 5
#: The DS segment prefix: pads a site's instruction (ignored on a NOP, a call, a mov).
SITE_PAD_PREFIX = 0x3E

#: Hardware GPR number (ModRM/REX encoding) -> name.
HARDWARE_GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                      "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
#: The breakpoint regfile's ``gpr[]`` order (csrc/codemem_rt.h; gdbstub/arch_amd64.py GPR_NAMES).
REGFILE_GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
#: Hardware GPR number -> index in the regfile's ``gpr[]``.
_REGFILE_GPR_INDEX = tuple(REGFILE_GPR_NAMES.index(name) for name in HARDWARE_GPR_NAMES)


#: Hardware register numbers of the two bases a carrier store writes through.
RSP_REGISTER, RBP_REGISTER = 4, 5


@dataclass(frozen=True)
class CarrierStore:
    """A *carrier site*'s instruction (docs/compiler-speed.md): the site's
    disabled bytes are not the NOP but the last instruction of the previous
    sequence point's code, which the code has without debugging too.  Four
    kinds, each exactly 5 bytes (DS prefixes before the first, part of its
    instruction but not of the site, keep the 5 bytes off 8-byte boundaries,
    as for a NOP site):

    * a *slot store*, the previous instruction's result to its operand-stack
      slot, ``mov [rsp+disp8], r64`` (``base`` RSP_REGISTER)::

          REX.W(+R)  89  ModRM          SIB   disp8
          48 | 4c    89  01 reg 100     24    0..120     (mod=01 rm=100: [SIB+disp8],
                                                          SIB base=rsp, no index;
                                                          a multiple of 8: a slot)

      (``mov [rsp], r64`` is compiled to its disp8 form with a disp8 of 0);
    * a *local store*, a ``local.set``/``local.tee``'s value to the local's
      home, ``mov [rbp+disp8], r64`` with one DS prefix (``base``
      RBP_REGISTER; without debugging the same store has no prefix)::

          DS   REX.W(+R)  89  ModRM          disp8
          3e   48 | 4c    89  01 reg 101     -128..-8    (mod=01 rm=101: [rbp+disp8],
                                                          a multiple of 8: a home)

    * a *move*, a ``local.tee``'s value copied to the register that mirrors the
      local, ``mov r64, r64`` with two DS prefixes (``base`` None, ``target``
      the destination register, ``disp`` 0)::

          DS   DS   REX.W(+R+B)       89   ModRM
          3e   3e   48 | 49 | 4c | 4d 89   11 reg rm       (reg: the source, rm: the target)

    * a *producer* (``immediate`` set), a constant's ``mov r32, imm32``
      whose slot store was left out (a deferred store, as for
      :func:`deferred_carrier_bytes`): a stop loads the constant (zero-extended)
      and stores the register to the point's top slot.  A REX.B before the 5
      bytes stays a prefix of the site's instruction (``41 e8 rel32`` is a
      call), so the bytes name only the register's low 3 bits and no slot:
      :func:`carrier_store` gives ``disp`` -1 and the low bits, and
      :meth:`FrameTable.site_carrier` completes it from the site's point (its
      top slot and the register mirroring it)::

          [41]   b8+r   imm32

    Enabled, the site's ``call`` replaces the instruction, so whoever takes the
    call performs it first (the breakpoint prelude, every hook veneer): then
    every value is where the frame table says at every stop.  A *deferred*
    carrier's disabled bytes are a NOP naming a slot store
    (:func:`deferred_carrier_bytes`): the code never performs it, only a stop."""

    register: int  # x86 register number of the value (0 = rax .. 15 = r15): the store's or move's source
    disp: int  # the destination's offset from ``base`` at the site (0 for a move)
    base: int | None = RSP_REGISTER  # RSP_REGISTER (a slot), RBP_REGISTER (a local's home), None (a move)
    target: int | None = None  # a move's destination register (x86 number), else None
    immediate: int | None = None  # a producer's constant (u32), else None

    @property
    def regfile_index(self) -> int:
        """The source register's index in the breakpoint regfile's ``gpr[]``."""
        return _REGFILE_GPR_INDEX[self.register]

    @property
    def base_regfile_index(self) -> int | None:
        """The base register's index in the regfile's ``gpr[]`` (None: a move)."""
        return None if self.base is None else _REGFILE_GPR_INDEX[self.base]

    @property
    def target_regfile_index(self) -> int | None:
        """A move's destination register's index in the regfile's ``gpr[]``."""
        return None if self.target is None else _REGFILE_GPR_INDEX[self.target]

    @property
    def slot(self) -> int | None:
        """The operand-stack slot a slot store writes (``disp / 8``, slot 0 at
        the rsp); None for a local store or a move."""
        return self.disp // 8 if self.base == RSP_REGISTER else None

    @property
    def kind(self) -> str:
        """"slot", "local", "move" or "producer"."""
        if self.immediate is not None:
            return "producer"
        return "slot" if self.base == RSP_REGISTER else "local" if self.base == RBP_REGISTER else "move"

    def registers(self) -> frozenset[int]:
        """The registers a stop reads or writes to perform it (besides the
        bases rsp and rbp): no veneer may use them as scratch before it."""
        return frozenset((self.register,) if self.target is None else (self.register, self.target))


def carrier_store(disable: bytes) -> CarrierStore | None:
    """The instruction a site's disabled bytes ``disable`` are, or stand for (a
    deferred carrier, :func:`deferred_carrier_bytes`), or None when they are
    SITE_DISABLED (or anything else)."""
    if len(disable) != SITE_SIZE:
        return None
    b0, b1, b2, b3, b4 = disable
    if b0 in (0x48, 0x4C) and b1 == 0x89 and b2 & 0xC7 == 0x44 and b3 == 0x24 and b4 < 0x80 and not b4 % 8:
        return CarrierStore(((b0 & 4) << 1) | (b2 >> 3 & 7), b4)
    if disable[:3] == _NOPL_DISP8 and b3 & 0x87 == 0x04 and b4 < 0x80 and not b4 % 8:
        return CarrierStore((b3 >> 3 & 8) | (b3 >> 3 & 7), b4)
    if b0 == SITE_PAD_PREFIX and b1 in (0x48, 0x4C) and b2 == 0x89 and b3 & 0xC7 == 0x45 and b4 >= 0x80 \
            and not b4 % 8:
        return CarrierStore(((b1 & 4) << 1) | (b3 >> 3 & 7), b4 - 0x100, RBP_REGISTER)
    if b0 & 0xF8 == 0xB8:
        return CarrierStore(b0 & 7, -1, RSP_REGISTER, None, int.from_bytes(disable[1:], "little"))
    if b0 == b1 == SITE_PAD_PREFIX and b2 & 0xFA == 0x48 and b3 == 0x89 and b4 >= 0xC0:
        source, target = ((b2 & 4) << 1) | (b4 >> 3 & 7), ((b2 & 1) << 3) | (b4 & 7)
        if source != target and RSP_REGISTER not in (source, target) and RBP_REGISTER not in (source, target):
            return CarrierStore(source, 0, None, target)
    return None


def carrier_bytes(carrier: CarrierStore) -> bytes:
    """The 5 site bytes of a carrier (the inverse of :func:`carrier_store` for
    the four instruction kinds; a deferred carrier's are
    :func:`deferred_carrier_bytes`)."""
    reg = carrier.register
    if carrier.immediate is not None:
        return bytes((0xB8 | reg & 7,)) + carrier.immediate.to_bytes(4, "little")
    if carrier.base == RSP_REGISTER:
        return bytes((0x48 | (reg & 8) >> 1, 0x89, 0x44 | (reg & 7) << 3, 0x24, carrier.disp))
    if carrier.base == RBP_REGISTER:
        return bytes((SITE_PAD_PREFIX, 0x48 | (reg & 8) >> 1, 0x89, 0x45 | (reg & 7) << 3, carrier.disp & 0xFF))
    target = carrier.target
    return bytes((SITE_PAD_PREFIX, SITE_PAD_PREFIX, 0x48 | (reg & 8) >> 1 | target >> 3, 0x89,
                  0xC0 | (reg & 7) << 3 | target & 7))


#: ``nopl [SIB + disp8]``: 0F 1F /0 with ModRM mod=01 rm=100 (a SIB byte follows).
_NOPL_DISP8 = b"\x0f\x1f\x44"


def deferred_carrier_bytes(store: CarrierStore) -> bytes:
    """The disabled bytes of a *deferred carrier* site: a 5-byte NOP that
    names the store it stands for instead of performing it
    (docs/compiler-speed.md "Deferred carrier stores").  Where the value
    stored is consumed by the very next instruction, from its register, and
    that instruction cannot trap, only a stop at the site can observe the
    slot, and every stop performs the store (the breakpoint prelude, the
    hook veneers: the same as for a carrier store), so the store itself is
    left out of the code.  The NOP's SIB byte and disp8 are never used by
    the CPU (a hint NOP does not access memory, SDM Vol. 2B NOP), so they
    hold the register and the slot's disp::

        0F 1F 44      SIB                   disp8
        nopl [..]     0 r3 r2r1r0 100       the slot's disp (0..120, a multiple of 8)
                      (scale bit 6 = register bit 3, index = register bits 0-2,
                       base = 100: never SITE_DISABLED's SIB of 00)
    """
    assert store.base == RSP_REGISTER, "only a slot store is ever deferred"
    reg = store.register
    return _NOPL_DISP8 + bytes(((reg & 8) << 3 | (reg & 7) << 3 | 4, store.disp))


def is_deferred_carrier(disable: bytes) -> bool:
    """Whether a site's disabled bytes are a deferred carrier
    (:func:`deferred_carrier_bytes`): a NOP naming a slot store."""
    return disable[:3] == _NOPL_DISP8 and carrier_store(disable) is not None


def valid_site_disable(disable: bytes) -> bool:
    """Whether ``disable`` is a patch site's disabled form: SITE_DISABLED or a
    carrier store."""
    return disable == SITE_DISABLED or carrier_store(disable) is not None


class MirrorSource(enum.IntEnum):
    """What a mirror register holds (see "Register mirrors" above)."""

    SLOT = 0  # the u64 in an rbp-relative frame slot
    MEMORY0_BASE = 1  # memory 0's base address (instance context)
    MEMORY0_LENGTH = 2  # memory 0's current byte length (instance context)


class SequencePointKind(enum.IntEnum):
    INSTRUCTION = 0  # before a wasm instruction
    RETURN_POINT = 1  # right after a call returns
    ENTRY = 2  # after the frame setup (push rbp; mov rbp, rsp), before the prologue


_KINDS = tuple(SequencePointKind)  # kind number -> member, by index
assert all(kind == number for number, kind in enumerate(_KINDS))


Header = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "code_size" / cs.Int32ul,
    "bp_veneer" / cs.Int32ul,
    "trap_veneer" / cs.Int32ul,
    "bp_slot" / cs.Int32ul,
    "trap_slot" / cs.Int32ul,
    "num_functions" / cs.Int32ul,
    "functions_offset" / cs.Int32ul,
    "num_sites" / cs.Int32ul,
    "sites_offset" / cs.Int32ul,
    "num_seqpoints" / cs.Int32ul,
    "seqpoints_offset" / cs.Int32ul,
    "num_locals" / cs.Int32ul,
    "locals_offset" / cs.Int32ul,
    "types_size" / cs.Int32ul,
    "types_offset" / cs.Int32ul,
    "num_mirrors" / cs.Int32ul,
    "mirrors_offset" / cs.Int32ul,
    "reserved" / cs.Padding(4),
)

FunctionRecord = cs.Struct(
    "native_start" / cs.Int32ul,  # image offset of the first byte (`push rbp`; the ENTRY point follows the frame setup)
    "native_size" / cs.Int32ul,
    "wasm_index" / cs.Int32ul,  # index in the module's function index space
    "frame_size" / cs.Int32ul,  # bytes below rbp reserved by the prologue
    "body_wasm_offset" / cs.Int32ul,  # module file offset of the body's first instruction
    "first_local" / cs.Int32ul,
    "num_locals" / cs.Int32ul,
    "first_seqpoint" / cs.Int32ul,
    "num_seqpoints" / cs.Int32ul,
    "stack_base" / cs.Int32sl,  # rbp-relative offset of operand-stack slot 0 (slots grow up, 8 bytes)
)

SequencePointRecord = cs.Struct(
    "native_offset" / cs.Int32ul,  # image offset
    "wasm_offset" / cs.Int32ul,  # module file offset of the instruction
    "kind" / cs.Int8ul,
    "num_mirrors" / cs.Int8ul,  # register mirrors valid after this point (INSTRUCTION only)
    "stack_depth" / cs.Int16ul,
    "stack_types" / cs.Int32ul,  # offset of stack_depth ValType bytes in the types pool
    "first_mirror" / cs.Int32ul,  # index of the first RegisterMirror in the mirror pool
)

RegisterMirrorRecord = cs.Struct(
    "register" / cs.Int8ul,  # hardware GPR number (codemem.x64.regs.Reg)
    "source" / cs.Int8ul,  # MirrorSource
    "reserved" / cs.Padding(2),
    "frame_offset" / cs.Int32sl,  # rbp-relative slot the register mirrors (SLOT only, else 0)
)

LocalSlotRecord = cs.Struct(
    "frame_offset" / cs.Int32sl,  # rbp-relative
    "valtype" / cs.Int8ul,
    "reserved" / cs.Padding(3),
)

PatchSiteRecord = cs.Struct(
    "offset" / cs.Int32ul,  # image offset
    "enable" / cs.Bytes(SITE_SIZE),
    "disable" / cs.Bytes(SITE_SIZE),
    "reserved" / cs.Padding(2),
)

HEADER_SIZE = Header.sizeof()
FUNCTION_SIZE = FunctionRecord.sizeof()
SEQPOINT_SIZE = SequencePointRecord.sizeof()
LOCAL_SIZE = LocalSlotRecord.sizeof()
SITE_RECORD_SIZE = PatchSiteRecord.sizeof()
MIRROR_SIZE = RegisterMirrorRecord.sizeof()
assert (HEADER_SIZE, FUNCTION_SIZE, SEQPOINT_SIZE, LOCAL_SIZE, SITE_RECORD_SIZE, MIRROR_SIZE) == (80, 40, 20, 8, 16, 8)

# The builder's hot records, as struct formats (construct is the schema, and
# the parser; per record it is far too slow for the ~one record per wasm
# instruction a build writes).  Same layouts, field for field.
_FUNCTION_STRUCT = struct.Struct("<IIIIIIIIIi")
_SEQPOINT_STRUCT = struct.Struct("<IIBBHII")
_LOCAL_STRUCT = struct.Struct("<iB3x")
_SITE_STRUCT = struct.Struct("<I5s5s2x")
_MIRROR_STRUCT = struct.Struct("<BB2xi")
_CALL_SITE_STRUCT = struct.Struct("<IBi5s2x")  # a PatchSite whose enable bytes are a call rel32
_POINT_PREFIX = struct.Struct("<IIB11x")  # a SequencePoint's native_offset, wasm_offset, kind
assert (_FUNCTION_STRUCT.size, _SEQPOINT_STRUCT.size, _LOCAL_STRUCT.size, _SITE_STRUCT.size, _CALL_SITE_STRUCT.size,
        _MIRROR_STRUCT.size) == (FUNCTION_SIZE, SEQPOINT_SIZE, LOCAL_SIZE, SITE_RECORD_SIZE, SITE_RECORD_SIZE,
                                 MIRROR_SIZE)

#: Hardware GPR number -> name, as gdbstub/arch_amd64.py (the regfile) names
#: them; only these may be mirrors (rsp, rbp and r15 never are: frame and context).
MIRROR_REGISTER_NAMES = {number: name for number, name in enumerate(HARDWARE_GPR_NAMES)
                         if name not in ("rsp", "rbp", "r15")}



class FrameTableHeader(NamedTuple):
    """The parsed :data:`Header` (its fields but the magic and the padding)."""

    version: int
    flags: int
    code_size: int
    bp_veneer: int
    trap_veneer: int
    bp_slot: int
    trap_slot: int
    num_functions: int
    functions_offset: int
    num_sites: int
    sites_offset: int
    num_seqpoints: int
    seqpoints_offset: int
    num_locals: int
    locals_offset: int
    types_size: int
    types_offset: int
    num_mirrors: int
    mirrors_offset: int


# The header is read with this struct format, field for field the schema's
# (tests/test_frametable.py checks both read the same values): compiling the
# schema with construct's ``compile()`` cost about 10 ms of every start of
# the process, a tenth of a warm ``serve``; building with the schema is a
# builder's business.
_HEADER_STRUCT = struct.Struct("<4sHH17I4x")
assert _HEADER_STRUCT.size == HEADER_SIZE


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------


class RecordColumn(Sequence):
    """One fixed-size field of a record array, read in place.

    ``column[i]`` unpacks the field of record ``i`` straight from the table's
    bytes (``struct.unpack_from``), so ``bisect`` finds a record by a sorted
    field in O(log n) without parsing the array: the reader answers one
    question (a ``Z0``, a stop, a backtrace) without touching the rest of a
    module's hundreds of thousands of records (DESIGN.md, "Read in place,
    never in full")."""

    __slots__ = ("_data", "_base", "_stride", "_unpack", "_count", "_fmt", "_searchable")

    def __init__(self, data: bytes, base: int, stride: int, count: int, field_offset: int = 0,
                 fmt: str = "<I"):
        self._data = data
        self._base = base + field_offset
        self._stride = stride
        self._count = count
        self._unpack = struct.Struct(fmt).unpack_from
        self._fmt = fmt
        self._searchable = None

    @property
    def searchable(self) -> Sequence[int]:
        """The column as a sequence ``bisect`` indexes in C: a strided
        ``memoryview`` over the records (no copy) where the host's byte order
        and the field allow, else the column itself.  A bisect through
        :meth:`__getitem__` costs a Python call per probe, ~20 of them per
        lookup in a real-size table, several lookups per step."""
        view = self._searchable
        if view is None:
            view = self._searchable = _strided_view(self._data, self._base, self._stride, self._count,
                                                    self._fmt) or self
        return view

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._unpack(self._data, self._base + index * self._stride)[0]


#: struct formats a strided memoryview can stand for on a little-endian host.
_VIEW_CODES = {"<I": "I", "<i": "i", "<B": "B"}


def _strided_view(data, start: int, stride: int, count: int, fmt: str) -> memoryview | None:
    """The field at ``start``, ``start + stride``, ... (``count`` of them) as
    a read-only memoryview of ints, or None when one cannot be made (a
    big-endian host, a stride that is not a multiple of the field's size)."""
    code = _VIEW_CODES.get(fmt)
    if code is None or sys.byteorder != "little":
        return None
    size = struct.calcsize(code)
    if stride % size or count < 0:
        return None
    if count == 0:
        return memoryview(b"").cast(code)
    end = start + (count - 1) * stride + size
    if start < 0 or end > len(data):
        return None
    return memoryview(data)[start:end].toreadonly().cast(code)[::stride // size]


@dataclass(frozen=True)
class LocalSlot:
    index: int
    frame_offset: int
    valtype: int


@dataclass(frozen=True)
class SequencePoint:
    """``mirrors``: ``(register name, rbp-relative slot offset)`` pairs, the
    registers the code after this point relies on holding a copy of a slot;
    ``context_mirrors``: ``(register name, MirrorSource)`` pairs, the registers
    it relies on holding memory 0's base or length (see "Register mirrors"
    above).  Both are empty except at INSTRUCTION points."""

    native_offset: int
    wasm_offset: int
    kind: SequencePointKind
    stack_types: tuple[int, ...]
    mirrors: tuple[tuple[str, int], ...] = ()
    context_mirrors: tuple[tuple[str, MirrorSource], ...] = ()

    @property
    def stack_depth(self) -> int:
        return len(self.stack_types)


@dataclass(frozen=True)
class PatchSite:
    offset: int
    enable: bytes
    disable: bytes  # SITE_DISABLED, a carrier (CarrierStore), or a deferred carrier naming a slot store

    @property
    def carrier(self) -> CarrierStore | None:
        """The instruction this site carries, if its disabled bytes are one."""
        return carrier_store(self.disable)

    @property
    def deferred(self) -> bool:
        """Whether the site is a deferred carrier (a NOP naming a slot store)."""
        return is_deferred_carrier(self.disable)


@dataclass(frozen=True)
class FunctionInfo:
    """One compiled function. ``native_start``/``native_end`` are image offsets."""

    position: int  # index in the table (not the wasm index)
    native_start: int
    native_size: int
    wasm_index: int
    frame_size: int
    body_wasm_offset: int
    stack_base: int
    first_seqpoint: int
    num_seqpoints: int
    first_local: int
    num_locals: int

    @property
    def native_end(self) -> int:
        return self.native_start + self.native_size

    def contains(self, offset: int) -> bool:
        return self.native_start <= offset < self.native_end

    def operand_slot_offset(self, depth_index: int) -> int:
        """rbp-relative offset of operand-stack slot ``depth_index`` (0 = bottom)."""
        return self.stack_base + 8 * depth_index


class FrameTable:
    """Lazy reader over frame-table bytes.

    The header and the bounds of every array are checked at construction; a
    record is parsed (and checked) when first used.  Every problem raises
    :class:`FrameTableError` naming the field.

    ``data`` is bytes, or an ``mmap.mmap`` of exactly the table (a warm load
    maps it from the compile cache): read in place, never copied whole.
    """

    def __init__(self, data: bytes | mmap.mmap):
        self._data = data if isinstance(data, (bytes, mmap.mmap)) else bytes(data)
        if len(self._data) < HEADER_SIZE:
            raise FrameTableError(f"frame table truncated: {len(self._data)} bytes, header needs {HEADER_SIZE}")
        magic, *fields = _HEADER_STRUCT.unpack_from(self._data, 0)
        if magic != MAGIC:
            raise FrameTableError(f"frame table header: bad magic {magic!r} (expected {MAGIC!r})")
        h = FrameTableHeader(*fields)
        if h.version != VERSION:
            raise FrameTableError(f"frame table version {h.version} is not {VERSION}")
        self.header = h
        self.debug = bool(h.flags & FLAG_DEBUG)
        self.code_size = h.code_size
        for name in ("bp_veneer", "trap_veneer", "bp_slot", "trap_slot"):
            value = getattr(h, name)
            if value > h.code_size:
                raise FrameTableError(f"frame table field {name}={value:#x} is outside the code ({h.code_size:#x} bytes)")
        self._check_array("functions", h.functions_offset, h.num_functions, FUNCTION_SIZE)
        self._check_array("sites", h.sites_offset, h.num_sites, SITE_RECORD_SIZE)
        self._check_array("seqpoints", h.seqpoints_offset, h.num_seqpoints, SEQPOINT_SIZE)
        self._check_array("locals", h.locals_offset, h.num_locals, LOCAL_SIZE)
        self._check_array("types", h.types_offset, h.types_size, 1)
        self._check_array("mirrors", h.mirrors_offset, h.num_mirrors, MIRROR_SIZE)
        self._functions: dict[int, FunctionInfo] = {}
        data = self._data
        #: Function records' native_start / wasm_index / body_wasm_offset and
        #: patch sites' offsets, in place (see RecordColumn).
        self.function_starts = RecordColumn(data, h.functions_offset, FUNCTION_SIZE, h.num_functions, 0)
        self._function_wasm_indexes = RecordColumn(data, h.functions_offset, FUNCTION_SIZE, h.num_functions, 8)
        self._function_bodies = RecordColumn(data, h.functions_offset, FUNCTION_SIZE, h.num_functions, 16)
        self._function_first_points = RecordColumn(data, h.functions_offset, FUNCTION_SIZE, h.num_functions, 28)
        self._function_point_counts = RecordColumn(data, h.functions_offset, FUNCTION_SIZE, h.num_functions, 32)
        self.site_offset_column = RecordColumn(data, h.sites_offset, SITE_RECORD_SIZE, h.num_sites, 0)
        self._sites: dict[int, PatchSite] = {}
        self._seqpoints: dict[int, SequencePoint] = {}
        self._mirror_point_memo: dict[int, SequencePoint | None] = {}
        self._mirror_lists: dict[tuple[int, int], tuple[tuple, tuple]] = {}

    def _check_array(self, name: str, offset: int, count: int, size: int) -> None:
        end = offset + count * size
        if offset < HEADER_SIZE and count:
            raise FrameTableError(f"frame table field {name}_offset={offset:#x} overlaps the header")
        if end > len(self._data):
            raise FrameTableError(
                f"frame table field num_{name}={count} at {name}_offset={offset:#x} runs past the end "
                f"({end:#x} > {len(self._data):#x})"
            )

    def site_records(self) -> memoryview:
        """The PatchSite records as stored (``num_sites`` x 16 bytes, in
        place: no copy), for C code that reads them (cm_sites_update)."""
        h = self.header
        return memoryview(self._data)[h.sites_offset:h.sites_offset + h.num_sites * SITE_RECORD_SIZE]

    @property
    def data(self) -> bytes:
        """The table's bytes (a copy when the table is mapped)."""
        return self._data if isinstance(self._data, bytes) else self._data[:]

    # -- functions --------------------------------------------------------

    @property
    def num_functions(self) -> int:
        return self.header.num_functions

    def function(self, position: int) -> FunctionInfo:
        """The ``position``-th function record (table order = native order)."""
        info = self._functions.get(position)
        if info is not None:
            return info
        if not 0 <= position < self.num_functions:
            raise IndexError(position)
        at = self.header.functions_offset + position * FUNCTION_SIZE
        (native_start, native_size, wasm_index, frame_size, body_wasm_offset, first_local, num_locals,
         first_seqpoint, num_seqpoints, stack_base) = _FUNCTION_STRUCT.unpack_from(self._data, at)
        where = f"function record {position}"
        if native_start + native_size > self.code_size or native_size == 0:
            raise FrameTableError(f"{where}: native range {native_start:#x}+{native_size:#x} outside the code")
        if first_seqpoint + num_seqpoints > self.header.num_seqpoints:
            raise FrameTableError(f"{where}: first_seqpoint/num_seqpoints outside the sequence-point array")
        if first_local + num_locals > self.header.num_locals:
            raise FrameTableError(f"{where}: first_local/num_locals outside the local-slot array")
        if position:
            # Sorted and disjoint, checked pairwise as records are read (bisect
            # over function_starts relies on it).
            previous_start, previous_size = struct.unpack_from("<II", self._data, at - FUNCTION_SIZE)
            if native_start < previous_start + previous_size:
                raise FrameTableError(f"{where}: native_start {native_start:#x} overlaps the previous function")
        info = FunctionInfo(
            position=position,
            native_start=native_start,
            native_size=native_size,
            wasm_index=wasm_index,
            frame_size=frame_size,
            body_wasm_offset=body_wasm_offset,
            stack_base=stack_base,
            first_seqpoint=first_seqpoint,
            num_seqpoints=num_seqpoints,
            first_local=first_local,
            num_locals=num_locals,
        )
        self._functions[position] = info
        return info

    def functions(self):
        return [self.function(i) for i in range(self.num_functions)]

    def function_at(self, offset: int) -> FunctionInfo | None:
        """The function whose native range contains image offset ``offset``, if
        any (a bisect over the records in place)."""
        i = bisect.bisect_right(self.function_starts.searchable, offset) - 1
        if i < 0:
            return None
        f = self.function(i)
        return f if f.contains(offset) else None

    def function_by_wasm_index(self, wasm_index: int) -> FunctionInfo | None:
        """The record of wasm function ``wasm_index`` (None for an import).
        The compiler writes functions in index order, so this is a bisect;
        a table written otherwise is indexed once (a dict) instead."""
        indexes = self._function_wasm_indexes
        k = bisect.bisect_left(indexes, wasm_index)
        if k < len(indexes) and indexes[k] == wasm_index:
            return self.function(k)
        if not self._wasm_indexes_ascending:
            return self._function_by_wasm_index.get(wasm_index)
        return None

    @cached_property
    def _wasm_indexes_ascending(self) -> bool:
        indexes = self._function_wasm_indexes
        return all(indexes[k] < indexes[k + 1] for k in range(len(indexes) - 1))

    @cached_property
    def _function_by_wasm_index(self) -> dict[int, FunctionInfo]:
        return {f.wasm_index: f for f in self.functions()}

    @cached_property
    def native_start_by_wasm_index(self) -> dict[int, int]:
        """``{wasm function index: native_start}`` of every record, read once
        per table with one ``struct.iter_unpack`` (an instance needs every
        function's code address: one :meth:`function` per function cost a
        bisect and a record object each, 2,000 of them on every start of a
        real-size module).  Each record's native range is checked as
        :meth:`function` checks it (inside the code, not empty, after the
        previous one); raises FrameTableError otherwise."""
        h = self.header
        records = memoryview(self._data)[h.functions_offset:h.functions_offset + h.num_functions * FUNCTION_SIZE]
        starts: dict[int, int] = {}
        previous_end = 0
        for position, (native_start, native_size, wasm_index, *_rest) in enumerate(
                _FUNCTION_STRUCT.iter_unpack(records)):
            if native_start + native_size > self.code_size or native_size == 0:
                raise FrameTableError(f"function record {position}: native range {native_start:#x}"
                                      f"+{native_size:#x} outside the code")
            if native_start < previous_end:
                raise FrameTableError(f"function record {position}: native_start {native_start:#x} overlaps "
                                      "the previous function")
            previous_end = native_start + native_size
            starts[wasm_index] = native_start
        return starts

    def function_at_wasm_offset(self, wasm_offset: int) -> FunctionInfo | None:
        """The function whose body holds module offset ``wasm_offset``, as far
        as the records tell (a body's end is not recorded: the last function
        whose body starts at or before it).  Bisect over body_wasm_offset,
        ascending in a table the compiler wrote (bodies are compiled in code
        section order); another table is searched record by record."""
        bodies = self._function_bodies
        if self._bodies_ascending:
            k = bisect.bisect_right(bodies, wasm_offset) - 1
        else:
            candidates = [(bodies[i], i) for i in range(len(bodies)) if bodies[i] <= wasm_offset]
            k = max(candidates)[1] if candidates else -1
        return self.function(k) if k >= 0 else None

    @cached_property
    def _bodies_ascending(self) -> bool:
        bodies = self._function_bodies
        return all(bodies[k] < bodies[k + 1] for k in range(len(bodies) - 1))

    # -- locals -----------------------------------------------------------

    def locals(self, func: FunctionInfo) -> list[LocalSlot]:
        # The records read in place with struct (the LocalSlotRecord layout):
        # a debug image asks for every described function's slots.
        base = self.header.locals_offset + func.first_local * LOCAL_SIZE
        records = memoryview(self._data)[base:base + func.num_locals * LOCAL_SIZE]
        return [LocalSlot(k, frame_offset, valtype)
                for k, (frame_offset, valtype) in enumerate(_LOCAL_STRUCT.iter_unpack(records))]

    def local(self, func: FunctionInfo, index: int) -> LocalSlot | None:
        """Local ``index`` of ``func`` (None if it has no such local), read
        in place: a function of thousands of locals whose debug info names a
        few (clang -O0) need not have them all parsed."""
        if not 0 <= index < func.num_locals:
            return None
        frame_offset, valtype = _LOCAL_STRUCT.unpack_from(
            self._data, self.header.locals_offset + (func.first_local + index) * LOCAL_SIZE)
        return LocalSlot(index, frame_offset, valtype)

    def local_home(self, func: FunctionInfo, index: int) -> tuple[int, int] | None:
        """(frame offset, valtype) of local ``index`` of ``func`` (None if it
        has no such local): :meth:`local` without its record object, for
        callers that ask for thousands (a DWARF translation's frame bases
        and parameters)."""
        if not 0 <= index < func.num_locals:
            return None
        return _LOCAL_STRUCT.unpack_from(self._data, self.header.locals_offset + (func.first_local + index) * LOCAL_SIZE)

    # -- sequence points --------------------------------------------------

    def _types(self, at: int, depth: int) -> tuple[int, ...]:
        if at + depth > self.header.types_size:
            raise FrameTableError(f"sequence point stack_types={at:#x}+{depth} outside the types pool")
        start = self.header.types_offset + at
        return tuple(self._data[start : start + depth])

    def sequence_point(self, index: int) -> SequencePoint:
        point = self._seqpoints.get(index)
        if point is None:
            point = self._seqpoints[index] = self._parse_sequence_point(index)
        return point

    def _parse_sequence_point(self, index: int) -> SequencePoint:
        if not 0 <= index < self.header.num_seqpoints:
            raise IndexError(index)
        at = self.header.seqpoints_offset + index * SEQPOINT_SIZE
        (native_offset, wasm_offset, kind_number, num_mirrors, stack_depth, stack_types,
         first_mirror) = _SEQPOINT_STRUCT.unpack_from(self._data, at)
        try:
            kind = _KINDS[kind_number]
        except IndexError:
            raise FrameTableError(f"sequence point {index}: unknown kind {kind_number}") from None
        if native_offset >= self.code_size:
            raise FrameTableError(f"sequence point {index}: native_offset {native_offset:#x} outside the code")
        mirrors, context_mirrors = self._mirrors(index, kind, first_mirror, num_mirrors)
        return SequencePoint(native_offset, wasm_offset, kind, self._types(stack_types, stack_depth),
                             mirrors, context_mirrors)

    def _mirrors(self, index: int, kind: SequencePointKind, first: int, count: int) -> tuple[tuple, tuple]:
        """Parse and check sequence point ``index``'s register mirrors:
        (slot mirrors, context mirrors)."""
        if not count:
            return (), ()
        where = f"sequence point {index}"
        if kind is not SequencePointKind.INSTRUCTION:
            raise FrameTableError(f"{where}: a {kind.name} point has {count} register mirrors (only INSTRUCTION may)")
        # Equal mirror lists are stored once (interned), so a list is parsed and
        # checked once however many points share it.
        parsed = self._mirror_lists.get((first, count))
        if parsed is None:
            parsed = self._mirror_lists[first, count] = self._parse_mirrors(where, first, count)
        return parsed

    def _parse_mirrors(self, where: str, first: int, count: int) -> tuple[tuple, tuple]:
        if first + count > self.header.num_mirrors:
            raise FrameTableError(f"{where}: first_mirror/num_mirrors={first}+{count} outside the mirror pool "
                                  f"({self.header.num_mirrors} records)")
        slots, context = [], []
        seen = set()
        base = self.header.mirrors_offset
        for register, source_number, frame_offset in _MIRROR_STRUCT.iter_unpack(
                self._data[base + first * MIRROR_SIZE : base + (first + count) * MIRROR_SIZE]):
            name = MIRROR_REGISTER_NAMES.get(register)
            if name is None:
                raise FrameTableError(f"{where}: mirror register number {register} is not a mirrorable GPR")
            if name in seen:
                raise FrameTableError(f"{where}: register {name} is recorded as two mirrors")
            seen.add(name)
            try:
                source = MirrorSource(source_number)
            except ValueError:
                raise FrameTableError(f"{where}: mirror of {name} has unknown source {source_number}") from None
            if source is MirrorSource.SLOT:
                if frame_offset >= 0 or frame_offset % 8:
                    raise FrameTableError(f"{where}: mirror of {name} at rbp{frame_offset:+d} is not an "
                                          f"8-aligned slot below rbp")
                slots.append((name, frame_offset))
            else:
                if frame_offset:
                    raise FrameTableError(f"{where}: {source.name} mirror of {name} has frame_offset "
                                          f"{frame_offset} (must be 0)")
                context.append((name, source))
        return tuple(slots), tuple(context)

    def register_mirrors(self, index: int) -> tuple[tuple[str, int], ...]:
        """The register mirrors of sequence point ``index`` (global index, as
        ``FunctionInfo.first_seqpoint + k``): ``((register name, rbp-relative
        slot offset), ...)``, names as in gdbstub/arch_amd64.py.  On resuming
        from a stop at the point, reload each register with the u64 at
        ``[rbp + offset]``; write a debugger's write to the register through to
        the slot.  Raises FrameTableError for a malformed record."""
        return self.sequence_point(index).mirrors

    def register_mirrors_at(self, native_offset: int) -> tuple[tuple[str, int], ...]:
        """The slot mirrors of the sequence point at exactly image offset
        ``native_offset`` (a stop pc), or ``()`` when no sequence point is
        there or it has none.  When an INSTRUCTION point and a RETURN_POINT
        share an offset, none (a caller's frame may be stopped there)."""
        point = self._mirror_point_at(native_offset)
        return point.mirrors if point is not None else ()

    def context_mirrors_at(self, native_offset: int) -> tuple[tuple[str, MirrorSource], ...]:
        """The context mirrors (memory 0's base and length) of the sequence
        point at exactly image offset ``native_offset``, as
        :meth:`register_mirrors_at` finds it: on resuming there, reload each
        register from the instance context; a debugger must not change them."""
        point = self._mirror_point_at(native_offset)
        return point.context_mirrors if point is not None else ()

    def _mirror_point_at(self, native_offset: int) -> SequencePoint | None:
        """The INSTRUCTION point whose mirrors hold at ``native_offset`` (memoized:
        asked on every resume)."""
        memo = self._mirror_point_memo
        if native_offset in memo:
            return memo[native_offset]
        point = memo[native_offset] = self._find_mirror_point(native_offset)
        return point

    def _find_mirror_point(self, native_offset: int) -> SequencePoint | None:
        func = self.function_at(native_offset)
        if func is None:
            return None
        offsets = self.sequence_point_offsets(func).searchable
        lo = bisect.bisect_left(offsets, native_offset)
        hi = bisect.bisect_right(offsets, native_offset)
        points = [self.sequence_point(func.first_seqpoint + k) for k in range(lo, hi)]
        if not points or any(p.kind is not SequencePointKind.INSTRUCTION for p in points):
            return None
        return points[-1]

    def sequence_points(self, func: FunctionInfo) -> list[SequencePoint]:
        return [self.sequence_point(func.first_seqpoint + k) for k in range(func.num_seqpoints)]

    def point_offsets(self, func: FunctionInfo) -> list[tuple[int, int, SequencePointKind]]:
        """(native offset, wasm offset, kind) of each of ``func``'s sequence
        points, in native order: the three fields read in place from the
        packed records (no stack types, no mirrors), for callers that sweep
        whole functions (the debug images' line and range mapping)."""
        base = self.header.seqpoints_offset + func.first_seqpoint * SEQPOINT_SIZE
        records = memoryview(self._data)[base:base + func.num_seqpoints * SEQPOINT_SIZE]
        kinds = tuple(SequencePointKind)
        return [(native, wasm, kinds[kind]) for native, wasm, kind, _, _, _, _ in _SEQPOINT_STRUCT.iter_unpack(records)]

    def first_point_offset(self, func: FunctionInfo, kind: SequencePointKind) -> int | None:
        """Native offset of ``func``'s first sequence point (in native order)
        of ``kind``, None if it has none: records read in place from the
        first on, for a question whose answer is near the start (the end of
        a function's prologue is its second point)."""
        data, at = self._data, self.header.seqpoints_offset + func.first_seqpoint * SEQPOINT_SIZE
        for _ in range(func.num_seqpoints):
            native, _, point_kind = _POINT_PREFIX.unpack_from(data, at)
            if point_kind == kind:
                return native
            at += SEQPOINT_SIZE
        return None

    def sequence_point_offsets(self, func: FunctionInfo) -> "RecordColumn":
        """Native offsets of ``func``'s sequence points, ascending: a read-only
        sequence over the records in place (index it, bisect it; ``list()`` it
        for a copy), so a stop in a function of tens of thousands of points
        parses none of the others."""
        return self.sequence_point_column(func, 0)

    def sequence_point_column(self, func: FunctionInfo, field_offset: int, fmt: str = "<I") -> RecordColumn:
        """A field of ``func``'s sequence points, in place (0: native_offset,
        4: wasm_offset, 8: kind as "<B")."""
        return RecordColumn(self._data, self.header.seqpoints_offset + func.first_seqpoint * SEQPOINT_SIZE,
                            SEQPOINT_SIZE, func.num_seqpoints, field_offset, fmt)

    def point_records(self, func: FunctionInfo) -> list[tuple[int, int, int]]:
        """``(native_offset, wasm_offset, kind number)`` of each of ``func``'s
        sequence points, in native order: the bulk read for whoever derives
        something from every point once (a debug image's line table), without
        the per-point parse and checks of :meth:`sequence_point`."""
        start = self.header.seqpoints_offset + func.first_seqpoint * SEQPOINT_SIZE
        return list(_POINT_PREFIX.iter_unpack(self._data[start : start + func.num_seqpoints * SEQPOINT_SIZE]))

    def instruction_site_at_wasm_offset(self, wasm_offset: int) -> int | None:
        """Image offset of the patch site of the INSTRUCTION sequence point
        compiled for the wasm instruction at module offset ``wasm_offset`` (the
        first in native order, should two share it), or None when no
        instruction with a site starts there.

        Read in place: a bisect to the function (body offsets), then one to the
        point (a function's points are in wasm order: the single-pass compiler
        emits code in instruction order), then the site (site offsets); a
        table whose points are not in wasm order is searched point by point
        within the one function."""
        func = self.function_at_wasm_offset(wasm_offset)
        if func is None or not func.num_seqpoints:
            return None
        wasm_offsets = self.sequence_point_column(func, 4)
        kinds = self.sequence_point_column(func, 8, "<B")
        native_offsets = self.sequence_point_column(func, 0)
        k = bisect.bisect_left(wasm_offsets, wasm_offset)
        found_by_bisect = k < len(wasm_offsets) and wasm_offsets[k] == wasm_offset
        # The run of equal offsets from k; else (maybe not in wasm order) every point.
        for k in range(k, len(wasm_offsets)) if found_by_bisect else range(len(wasm_offsets)):
            if wasm_offsets[k] != wasm_offset:
                if found_by_bisect:
                    break  # past the run
                continue
            if kinds[k] == SequencePointKind.INSTRUCTION and self.site_index(native_offsets[k]) is not None:
                return native_offsets[k]
        return None

    def sequence_point_at_or_before(self, offset: int) -> SequencePoint | None:
        """The last sequence point of the function containing ``offset`` whose
        native offset is <= ``offset`` (where a trap or return address belongs)."""
        func = self.function_at(offset)
        if func is None or func.num_seqpoints == 0:
            return None
        offsets = self.sequence_point_offsets(func).searchable
        k = bisect.bisect_right(offsets, offset) - 1
        if k < 0:
            return None
        return self.sequence_point(func.first_seqpoint + k)

    # -- patch sites ------------------------------------------------------

    @property
    def num_sites(self) -> int:
        return self.header.num_sites

    def site(self, index: int) -> PatchSite:
        # Memoized: stepping and interrupts enable and disable the same sites
        # over and over, and a record never changes.
        site = self._sites.get(index)
        if site is None:
            if not 0 <= index < self.num_sites:
                raise IndexError(index)
            at = self.header.sites_offset + index * SITE_RECORD_SIZE
            offset, enable, disable = _SITE_STRUCT.unpack_from(self._data, at)
            self._check_site(index, offset)
            site = self._sites[index] = PatchSite(offset, enable, disable)
        return site

    def site_carrier(self, index: int) -> CarrierStore | None:
        """The carrier of site ``index`` (:attr:`PatchSite.carrier`), a
        producer's completed from the site's sequence point: its slot is the
        point's top one and its register the one mirroring that slot."""
        site = self.site(index)
        carried = site.carrier
        if carried is None or carried.immediate is None:
            return carried
        point = self.sequence_point_at_or_before(site.offset)
        assert point is not None and point.native_offset == site.offset and point.stack_depth, site
        slot = point.stack_depth - 1
        frame_offset = self.function_at(site.offset).operand_slot_offset(slot)
        register = next(HARDWARE_GPR_NAMES.index(name) for name, at in point.mirrors if at == frame_offset)
        assert register & 7 == carried.register, (site, register)
        return CarrierStore(register, 8 * slot, RSP_REGISTER, None, carried.immediate)

    @cached_property
    def site_offsets(self) -> list[int]:
        """Sorted image offsets of every patch site (checked: sorted, in the
        code, not straddling an 8-byte boundary)."""
        base = self.header.sites_offset
        offsets = [struct.unpack_from("<I", self._data, base + i * SITE_RECORD_SIZE)[0] for i in range(self.num_sites)]
        previous = -SITE_SIZE
        for i, off in enumerate(offsets):
            if off < previous + SITE_SIZE:
                raise FrameTableError(f"patch site {i}: offset {off:#x} is not after the previous site")
            if off + SITE_SIZE > self.code_size:
                raise FrameTableError(f"patch site {i}: offset {off:#x} outside the code")
            if off % 8 > 8 - SITE_SIZE:
                raise FrameTableError(f"patch site {i}: offset {off:#x} straddles an 8-byte boundary")
            previous = off
        return offsets

    def _check_site(self, index: int, offset: int) -> None:
        """The checks of :attr:`site_offsets` for one site (and its order
        against the one before), as a lookup finds it."""
        if offset + SITE_SIZE > self.code_size:
            raise FrameTableError(f"patch site {index}: offset {offset:#x} outside the code")
        if offset % 8 > 8 - SITE_SIZE:
            raise FrameTableError(f"patch site {index}: offset {offset:#x} straddles an 8-byte boundary")
        if index and self.site_offset_column.searchable[index - 1] + SITE_SIZE > offset:
            raise FrameTableError(f"patch site {index}: offset {offset:#x} is not after the previous site")

    def site_index(self, offset: int) -> int | None:
        """Index of the patch site at exactly image offset ``offset``, if any
        (a bisect over the site records in place)."""
        offsets = self.site_offset_column.searchable
        i = bisect.bisect_left(offsets, offset)
        if i < len(offsets) and offsets[i] == offset:
            self._check_site(i, offset)
            return i
        return None

    def entry_offset(self, func: FunctionInfo) -> int:
        """Image offset of ``func``'s ENTRY point: its first sequence point,
        after the frame setup (abi.py "Function layout": ``push rbp; mov rbp,
        rsp`` at ``native_start``, so the ENTRY point is ``native_start + 4``).
        In debug mode the ENTRY site is there.  Everything that means "where
        the function's body begins, frame set up" asks this, never
        ``native_start``."""
        if not func.num_seqpoints:
            raise FrameTableError(f"function at {func.native_start:#x} has no sequence point (no ENTRY point)")
        return self.sequence_point_column(func, 0)[0]

    def entry_site_index(self, func: FunctionInfo) -> int | None:
        """Index of ``func``'s ENTRY patch site (:meth:`entry_offset`), or
        None (debug off)."""
        if not func.num_seqpoints:
            return None
        return self.site_index(self.entry_offset(func))

    def entry_site_indexes(self) -> list[int]:
        """The site index of every function's ENTRY site (debug code; empty
        otherwise), read from the packed records in place: what a step that
        may enter any function arms."""
        if not self.debug:
            return []
        h = self.header
        seqpoints = RecordColumn(self._data, h.seqpoints_offset, SEQPOINT_SIZE, h.num_seqpoints, 0)
        sites = self.site_offset_column.searchable
        out = []
        for first, count in zip(self._function_first_points, self._function_point_counts):
            if count:
                offset = seqpoints[first]
                i = bisect.bisect_left(sites, offset)
                if i < len(sites) and sites[i] == offset:
                    out.append(i)
        return out

    def function_starting_at(self, offset: int) -> FunctionInfo | None:
        """The function whose first byte (``native_start``: its ``push rbp``)
        is at image offset ``offset``, or None."""
        func = self.function_at(offset)
        return func if func is not None and func.native_start == offset else None

    def site_indexes_in(self, start: int, end: int) -> range:
        """Indexes of the patch sites at image offsets in [start, end)."""
        offsets = self.site_offset_column.searchable
        return range(bisect.bisect_left(offsets, start), bisect.bisect_left(offsets, end))


# --------------------------------------------------------------------------
# Builder (used by the compiler, and by tests that make tables by hand)
# --------------------------------------------------------------------------


@dataclass
class FunctionBuild:
    native_start: int
    native_size: int
    wasm_index: int
    frame_size: int = 0
    body_wasm_offset: int = 0
    stack_base: int = 0
    locals: list[tuple[int, int]] = field(default_factory=list)  # (frame_offset, valtype)
    #: (native_offset, wasm_offset, kind, stack_types[, mirrors]) where mirrors
    #: is a tuple of (hardware GPR number, MirrorSource, rbp-relative slot
    #: offset or 0), or the MirrorList that FrameTableBuilder.intern_mirrors
    #: returned for such a list (what the compiler passes: it interns each
    #: distinct list once, not once per point).
    seqpoints: list[tuple] = field(default_factory=list)
    #: Instead of ``seqpoints``: the records already packed (the C compiler's,
    #: codemem/x64/ccore.py), their stack types still to be interned.
    packed_seqpoints: "PackedPoints | None" = None
    #: Instead of ``locals``: their LocalSlot records, packed (the C compiler's).
    packed_locals: bytes | None = None

    @property
    def num_seqpoints(self) -> int:
        packed = self.packed_seqpoints
        return len(self.seqpoints) if packed is None else len(packed.records) // SEQPOINT_SIZE


@dataclass
class PackedPoints:
    """A function's SequencePoint records, packed, with native offsets and
    mirror lists final but each stack_types field an index into ``types``
    (the function's distinct stacks in order of first occurrence):
    FrameTableBuilder interns them into its types pool when it packs the
    function, in function order like every other function's.  With no
    ``types`` the records are final (the C compiler's: it interns into the
    builder's ``pools`` itself)."""

    records: bytes
    types: list[tuple[int, ...]]


class MirrorList(NamedTuple):
    """A mirror list in a FrameTableBuilder's pool (``intern_mirrors``)."""

    count: int  # records
    first: int  # index of the first record in the mirror pool (0 when count is 0)


_NO_MIRRORS = MirrorList(0, 0)


def pack_mirror(register: int, source: int, frame_offset: int) -> bytes:
    """One RegisterMirror record (see "Register mirrors"); a mirror list's
    records, joined, are what ``FrameTableBuilder.intern_mirrors`` takes."""
    assert (frame_offset < 0) == (source == MirrorSource.SLOT), "a slot mirror needs a slot"
    return _MIRROR_STRUCT.pack(register, source, frame_offset)


def _indices_of_none(values: list) -> Iterator[int]:
    """The indices of the Nones in ``values``, ascending (searched in C: in a
    build's columns they are the few first occurrences)."""
    k = -1
    while True:
        try:
            k = values.index(None, k + 1)
        except ValueError:
            return
        yield k


@dataclass
class PackedFunctions:
    """Functions packed by one FrameTableBuilder (:meth:`FrameTableBuilder.pack`),
    to be moved into another builder's table (:meth:`FrameTableBuilder.add_packed`):
    how a compile split over several processes puts its parts together.

    ``records``: the FunctionRecord fields of each function, with native
    offsets relative to the part's code and first_local / first_seqpoint
    relative to ``locals`` / ``seqpoints``; ``seqpoints``: the packed
    SequencePoint records, native offsets likewise relative, stack_types and
    first_mirror indexing this part's pools, which are ``types`` (the types
    pool's entries in pool order) and ``mirrors`` (the mirror lists, packed,
    in pool order)."""

    records: list[tuple]
    seqpoints: bytes
    locals: bytes
    types: list[tuple[int, ...]]
    mirrors: list[bytes]


class FrameTableBuilder:
    """Accumulates functions, sequence points and sites; ``build()`` returns bytes.

    Functions must be added in native order; sequence points in native order
    within their function.  ``build`` asserts these (they are compiler
    invariants, not input errors).  Functions come either one by one
    (``add_function``) or already packed by other builders (``add_packed``),
    not both.
    """

    def __init__(self, *, debug: bool = True, pools=None):
        """``pools``: where the stack-types and mirror pools are kept instead
        of here (the C compiler's, codemem.x64.ccore.CPools: it interns its
        functions' lists itself and gives their records final); such a
        builder interns everything as functions are added, in order, and is
        only ever packed (:meth:`pack`), never built."""
        self.debug = debug
        self._pools = pools
        self.functions: list[FunctionBuild] = []
        self.sites: list[tuple[int, bytes]] = []  # (offset, PatchSite record)
        #: add_call_sites' ascending offsets: (first offset, last offset, their records)
        self._site_runs: list[tuple[int, int, bytes]] = []
        self.code_size = 0
        self.bp_veneer = self.trap_veneer = self.bp_slot = self.trap_slot = 0
        self._types_pool = bytearray()
        self._types_index: dict[tuple[int, ...], int] = {}
        self._mirror_pool = bytearray()
        self._mirror_index: dict[bytes, MirrorList] = {}  # packed records -> their place in the pool
        # What add_packed accumulated: FunctionRecords, SequencePoint and
        # LocalSlot records, and the counts so far.
        self._packed_functions = bytearray()
        self._packed_seqpoints: list[bytes] = []
        self._packed_locals: list[bytes] = []
        self._packed_counts = [0, 0, 0]  # functions, sequence points, locals
        #: The first part's mirror lists, pooled but not yet in _mirror_index.
        self._unindexed_mirrors: list[bytes] | None = None

    def add_function(self, fb: FunctionBuild) -> FunctionBuild:
        if self.functions:
            assert fb.native_start >= self.functions[-1].native_start + self.functions[-1].native_size
        if self._pools is not None and fb.seqpoints:
            # Interned now, not when packed: the C compiler's functions
            # intern theirs as they are compiled, and the pool is in order.
            for types in map(itemgetter(3), fb.seqpoints):
                self._intern_types(tuple(types))
        self.functions.append(fb)
        return fb

    def add_site(self, offset: int, enable: bytes, disable: bytes = SITE_DISABLED) -> None:
        assert len(enable) == SITE_SIZE and valid_site_disable(disable), f"site {offset:#x}: disabled {disable.hex()}"
        assert offset % 8 <= 8 - SITE_SIZE, f"site {offset:#x} straddles an 8-byte boundary"
        # Kept as (offset, PatchSite record): build() sorts by offset, and an
        # equal offset compares the records, i.e. enable then disable bytes.
        self.sites.append((offset, _SITE_STRUCT.pack(offset, enable, disable)))

    def add_call_sites(self, offsets: Iterable[int], target: int, code: bytes | bytearray | None = None) -> None:
        """``add_site`` for each of ``offsets`` with the enabled form ``call
        target`` (``e8 rel32``, image offsets: codemem.veneer.site_enable_bytes)
        and as the disabled form the 5 bytes of ``code`` (the image) at the
        site, each SITE_DISABLED or a carrier store (:func:`carrier_store`),
        or SITE_DISABLED for all when ``code`` is None, in one call: a debug
        image has a site per wasm instruction."""
        offsets = array("I", offsets)
        n = len(offsets)
        if not n:
            return
        # In C (csrc/codemem_compile.c): a real-size module has half a million.
        out = bytearray(n * SITE_RECORD_SIZE)
        image = ffi.NULL if code is None else ffi.from_buffer(code)
        ascending = lib.cm_call_site_records(ffi.from_buffer("uint32_t[]", offsets), n, target, image,
                                             0 if code is None else len(code), ffi.from_buffer(out))
        assert ascending != -1, "a site straddles an 8-byte boundary"
        assert ascending != -2, "a site's code is neither the disabled NOP nor a carrier store"
        records = bytes(out)
        if ascending:
            self._site_runs.append((offsets[0], offsets[-1], records))  # ascending: stays one blob
        else:
            self.sites += zip(offsets, (records[k : k + SITE_RECORD_SIZE] for k in range(0, len(records),
                                                                                        SITE_RECORD_SIZE)))

    def site_records(self) -> list[tuple[int, bytes]]:
        """``(offset, PatchSite record)`` of every site added so far, in the
        order added (bulk runs included)."""
        records = list(self.sites)
        for _, _, run in self._site_runs:
            records += ((struct.unpack_from("<I", run, k)[0], run[k : k + SITE_RECORD_SIZE])
                        for k in range(0, len(run), SITE_RECORD_SIZE))
        return records

    def _intern_types(self, types: tuple[int, ...]) -> int:
        if self._pools is not None:
            return self._pools.intern_types(types)
        at = self._types_index.get(types)
        if at is None:
            at = len(self._types_pool)
            self._types_pool += bytes(types)
            self._types_index[types] = at
        return at

    def _index_mirrors(self) -> None:
        """Index the mirror lists a first add_packed took over as they were."""
        first = 0
        for packed in self._unindexed_mirrors:
            self._mirror_index[packed] = MirrorList(len(packed) // MIRROR_SIZE, first)
            first += len(packed) // MIRROR_SIZE
        self._unindexed_mirrors = None

    def intern_mirrors(self, mirrors) -> MirrorList:
        """The place of mirror list ``mirrors`` in the mirror pool, added at
        its end if no equal list is there yet (the pool is in order of first
        occurrence).  ``mirrors``: a tuple of (register, MirrorSource, frame
        offset) records, or the :func:`pack_mirror` records joined."""
        if type(mirrors) is bytes:
            packed = mirrors
            assert len(packed) % MIRROR_SIZE == 0
        else:
            packed = b"".join(pack_mirror(register, source, offset) for register, source, offset in mirrors)
        if self._pools is not None:
            return MirrorList(*self._pools.intern_mirrors(packed)) if packed else _NO_MIRRORS
        if self._unindexed_mirrors is not None:
            self._index_mirrors()
        found = self._mirror_index.get(packed)
        if found is None:
            if not packed:
                return _NO_MIRRORS
            found = self._mirror_index[packed] = MirrorList(
                len(packed) // MIRROR_SIZE, len(self._mirror_pool) // MIRROR_SIZE)
            self._mirror_pool += packed
        return found

    def _seqpoint_records(self, points: list[tuple]) -> bytes:
        """The SequencePoint records of one function's ``points``
        (FunctionBuild.seqpoints), interning their stack types and mirror
        lists in point order.

        Column-wise, so that the per-point work runs in C (``zip``, ``map``):
        a build writes one record per wasm instruction."""
        if not points:
            return b""
        lengths = set(map(len, points))
        assert lengths <= {4, 5}, f"a sequence point is 4 or 5 fields, not {lengths}"
        columns = list(zip(*points))  # as many as the shortest point has fields
        offsets, wasm_offsets, kinds, types = columns[:4]
        assert list(offsets) == sorted(offsets), "sequence points out of native order"

        if self._pools is not None:
            types_at = [self._intern_types(tuple(t)) for t in types]
        else:
            try:
                types_at = list(map(self._types_index.get, types))
            except TypeError:  # a stack given as a list
                types = [tuple(t) for t in types]
                types_at = list(map(self._types_index.get, types))
            for k in _indices_of_none(types_at):
                types_at[k] = self._intern_types(types[k])

        if 5 in lengths:
            mirrors = columns[4] if len(columns) == 5 else [point[4] if len(point) == 5 else _NO_MIRRORS
                                                             for point in points]
            intern = self.intern_mirrors
            lists = [m if type(m) is MirrorList else intern(m) for m in mirrors]
            counts, firsts = zip(*lists)
            instruction = SequencePointKind.INSTRUCTION
            assert all(kind == instruction for kind, count in zip(kinds, counts) if count), \
                "mirrors at a non-instruction point"
        else:
            counts = firsts = repeat(0)
        return b"".join(map(_SEQPOINT_STRUCT.pack, offsets, wasm_offsets, kinds, counts, map(len, types),
                            types_at, firsts))

    def _intern_packed_types(self, points: PackedPoints) -> bytes:
        """``points``' records with their stack types interned (in order)."""
        at = [self._intern_types(types) for types in points.types]
        if not at:
            return points.records
        words = array("I", points.records)
        words[3::5] = array("I", map(at.__getitem__, words[3::5]))
        return words.tobytes()

    def _pack_functions(self) -> tuple[list[tuple], bytes, bytes]:
        """(FunctionRecord fields, SequencePoint records, LocalSlot records)
        of the functions added one by one, interning into this builder's pools."""
        records = []
        seq_records: list[bytes] = []
        locals_blob = bytearray()
        n_seq = n_locals = 0
        for fb in self.functions:
            num_seqpoints = fb.num_seqpoints
            if fb.packed_locals is None:
                num_locals = len(fb.locals)
                for frame_offset, valtype in fb.locals:
                    locals_blob += _LOCAL_STRUCT.pack(frame_offset, valtype)
            else:
                num_locals = len(fb.packed_locals) // LOCAL_SIZE
                locals_blob += fb.packed_locals
            records.append((fb.native_start, fb.native_size, fb.wasm_index, fb.frame_size, fb.body_wasm_offset,
                            n_locals, num_locals, n_seq, num_seqpoints, fb.stack_base))
            if fb.packed_seqpoints is None:
                seq_records.append(self._seqpoint_records(fb.seqpoints))
            else:
                seq_records.append(self._intern_packed_types(fb.packed_seqpoints))
            n_seq += num_seqpoints
            n_locals += num_locals
        return records, b"".join(seq_records), bytes(locals_blob)

    def pack(self) -> PackedFunctions:
        """This builder's functions (added one by one), for another builder's
        ``add_packed``."""
        records, seqpoints, locals_blob = self._pack_functions()
        if self._pools is not None:
            return PackedFunctions(records, seqpoints, locals_blob, self._pools.types_entries(),
                                   self._pools.mirror_lists())
        return PackedFunctions(records, seqpoints, locals_blob, list(self._types_index), list(self._mirror_index))

    def add_packed(self, part: PackedFunctions, code_base: int) -> None:
        """Append the functions of ``part`` (another builder's :meth:`pack`),
        whose code now starts at image offset ``code_base``: its pools'
        entries are interned into this builder's in their order, so parts
        added in native order give the table one builder would have built.

        Column-wise, over the packed records (the per-record work runs in C:
        ``array`` slices and ``map``)."""
        assert not self.functions, "add_packed after add_function"
        functions, seqpoints, locals_ = self._packed_counts
        n = len(part.seqpoints) // SEQPOINT_SIZE
        if self._unindexed_mirrors is not None:
            self._index_mirrors()
        if not (functions or self._types_index or self._mirror_index or code_base):
            # The first part at offset 0 (a compile in one process): its pools
            # become this builder's, its records stay as they are.
            for types in part.types:
                self._intern_types(types)
            self._mirror_pool = bytearray(b"".join(part.mirrors))
            self._unindexed_mirrors = part.mirrors  # indexed if another part comes
            self._packed_seqpoints.append(part.seqpoints)
        else:
            # Types pool: an entry is found by (offset, depth): an empty stack
            # shares its offset with the entry after it.
            types_at: dict[int, int] = {}
            at = 0
            for types in part.types:
                types_at[at << 16 | len(types)] = self._intern_types(types)
                at += len(types)
            firsts = [0] * (sum(len(m) for m in part.mirrors) // MIRROR_SIZE or 1)
            at = 0
            for packed in part.mirrors:
                firsts[at] = self.intern_mirrors(packed).first
                at += len(packed) // MIRROR_SIZE
            words = array("I", part.seqpoints)  # 5 per record (_SEQPOINT_STRUCT)
            halves = array("H", part.seqpoints)  # stack_depth is the 6th of 10
            words[0::5] = array("I", map(code_base.__add__, words[0::5]))
            words[3::5] = array("I", map(types_at.__getitem__, map(or_, map(lshift, words[3::5], repeat(16, n)),
                                                                        halves[5::10])))
            words[4::5] = array("I", map(mul, map(firsts.__getitem__, words[4::5]),
                                         map(bool, part.seqpoints[9::20])))
            self._packed_seqpoints.append(words.tobytes())
        self._packed_locals.append(part.locals)
        for (start, size, wasm_index, frame_size, body_offset, first_local, num_locals, first_seqpoint,
             num_seqpoints, stack_base) in part.records:
            self._packed_functions += _FUNCTION_STRUCT.pack(
                code_base + start, size, wasm_index, frame_size, body_offset, locals_ + first_local, num_locals,
                seqpoints + first_seqpoint, num_seqpoints, stack_base)
        self._packed_counts = [functions + len(part.records), seqpoints + n, locals_ + len(part.locals) // LOCAL_SIZE]

    def build(self) -> bytes:
        assert self._pools is None, "a builder with external pools is packed, not built"
        if self.functions:
            records, seq_blob, locals_blob = self._pack_functions()
            funcs_blob = b"".join(_FUNCTION_STRUCT.pack(*record) for record in records)
            num_functions, n_seq, n_locals = len(records), len(seq_blob) // SEQPOINT_SIZE, len(locals_blob) // LOCAL_SIZE
        else:
            funcs_blob = self._packed_functions
            seq_blob = b"".join(self._packed_seqpoints)
            locals_blob = b"".join(self._packed_locals)
            num_functions, n_seq, n_locals = self._packed_counts
        runs = sorted(self._site_runs)
        if not self.sites and all(a[1] < b[0] for a, b in zip(runs, runs[1:])):
            sites_blob = b"".join(run[2] for run in runs)  # add_call_sites' ascending runs, in order
        else:
            sites_blob = b"".join(record for _, record in sorted(self.site_records()))
        num_sites = len(sites_blob) // SITE_RECORD_SIZE
        functions_offset = HEADER_SIZE
        seqpoints_offset = functions_offset + len(funcs_blob)
        locals_offset = seqpoints_offset + len(seq_blob)
        sites_offset = locals_offset + len(locals_blob)
        types_offset = sites_offset + len(sites_blob)
        mirrors_offset = types_offset + len(self._types_pool)
        header = Header.build(
            dict(
                version=VERSION,
                flags=FLAG_DEBUG if self.debug else 0,
                code_size=self.code_size,
                bp_veneer=self.bp_veneer,
                trap_veneer=self.trap_veneer,
                bp_slot=self.bp_slot,
                trap_slot=self.trap_slot,
                num_functions=num_functions,
                functions_offset=functions_offset,
                num_sites=num_sites,
                sites_offset=sites_offset,
                num_seqpoints=n_seq,
                seqpoints_offset=seqpoints_offset,
                num_locals=n_locals,
                locals_offset=locals_offset,
                types_size=len(self._types_pool),
                types_offset=types_offset,
                num_mirrors=len(self._mirror_pool) // MIRROR_SIZE,
                mirrors_offset=mirrors_offset,
            )
        )
        return b"".join((header, funcs_blob, seq_blob, locals_blob, sites_blob, self._types_pool, self._mirror_pool))
