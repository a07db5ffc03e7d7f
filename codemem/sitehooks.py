"""Per-site hooks: work done at a patch site, in the Store, without a stop.

A patch site is a 5-byte ``call``.  Normally it calls the image's breakpoint
veneer (codemem.veneer), which jumps to the C breakpoint trampoline: a stop.
A *hooked* site calls a veneer of its own instead, generated here, that runs
checks natively with the guest's registers as they are at the site (a
condition compiled from gdb's agent bytecode, a watched-range check on a
store's effective address) and either returns straight to the guest (no
Python, no lock, no thread switch) or, when the client must see it, records
why in the hook area's data and tail-jumps to the breakpoint trampoline, which
then stops exactly as for a plain breakpoint (its return address is still the
site's, so the stop pc is the site).

A plain reference on the site (a breakpoint without condition, a step, an
interrupt) wins: the site then calls the breakpoint veneer directly
(codemem.code.StoreCode._site_bytes), so stepping over a hooked site stops.

Hook area (one per debug StoreCode, private to its Store)::

    +--------------------------- code (r-x, CODE_PAGES pages) ---------------+
    | bp_slot: dq cm_breakpoint_trampoline; printf_slot: dq cm_agent_printf  |
    | checked_read helper (see _emit_checked_read)                           |
    | veneers, bump-allocated; rebuilt when a site's checks change           |
    +--------------------------- data (rw-, DATA_PAGES pages) ---------------+
    | hit record (kind, index, address, size, error)     DATA_HIT_*          |
    | loop budget, host-write pending flag                                   |
    | region table: count, then {start, end, memdef, kind} x MAX_REGIONS     |
    | watch table: count, then {lo, hi, kinds} x MAX_WATCHES                 |
    | trace state variables: 64 x u64                                       |
    +------------------------------------------------------------------------+

It is placed by codemem.placement (the policy every mapping that must reach
the code follows): within rel32 reach of the whole image, so every site
reaches every veneer with a rel32 call, and for a Store placed below 4 GiB
inside that Store's [2 GiB, 4 GiB) window.

Veneer frame (what every check may rely on; r10 points at the save area)::

    r10+88   the guest's stack at the site (its rsp there is r10+88)
    r10+80   return address (site + 5)
    r10+72   the guest's rflags (pushfq)
    r10+64   rax   r10+56 rcx   r10+48 rdx   r10+40 rsi   r10+32 rdi
    r10+24   r8    r10+16 r9    r10+8  r10   r10+0  r11

rbx, rbp, r12-r15 are never written by a veneer: checks read them live.
Flags: the guest's rflags are restored (popfq) on both ways out, so nothing
depends on whether the compiler keeps flags live across a site (tests/
test_agentexpr.py checks registers and flags after a veneer ran).  Stack: a veneer only pushes
below the guest's rsp (the ABI has no red zone, codemem.abi), at most
VENEER_STACK_BYTES (plus a dprintf's C call, which it aligns to 16 first);
the trampoline it may jump to does not depend on the stack's alignment (it
aligns the host stack itself, csrc/codemem_rt.c).

Memory access sites (for watchpoints): at every sequence point every wasm
value is in its frame slot (codemem.abi), so a load or store's address
operand lives at ``[rbp + FunctionInfo.operand_slot_offset(depth - k)]`` and
its size and static offset come from the instruction at
``SequencePoint.wasm_offset``.  :func:`access_sites` derives that once per
EngineCode (cached on it; nothing is added to the frame table).
"""
from __future__ import annotations

import contextlib
import logging
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from . import abi, native
from .errors import CodeMemoryError, CompileError
from .frametable import CarrierStore, SequencePointKind
from .placement import map_near_code
from .native import PROT_EXEC, PROT_READ, PROT_WRITE, ffi, lib
from .wasm.binary import read_uleb
from .x64.asm import Assembler, Cond, Label, Mem, Reg

log = logging.getLogger(__name__)

PAGE = 4096
CODE_PAGES = 2048  # 8 MiB of address space; only pages written cost memory
DATA_PAGES = 8
CODE_SIZE = CODE_PAGES * PAGE
DATA_SIZE = DATA_PAGES * PAGE

# Data area offsets.
DATA_HIT_KIND = 0
DATA_HIT_INDEX = 8
DATA_HIT_ADDRESS = 16
DATA_HIT_SIZE = 24
DATA_HIT_ERROR = 32
DATA_LOOP_BUDGET = 40
DATA_HOST_WRITE = 48
_WATCH_TABLE_END_POINTER = 56  # absolute address one past the last watch row (set_watches)
DATA_REGIONS = 64
REGION_ENTRY = 32
MAX_REGIONS = 256
DATA_WATCHES = DATA_REGIONS + 8 + REGION_ENTRY * MAX_REGIONS
WATCH_ENTRY = 24
MAX_WATCHES = 512
DATA_TSV = DATA_WATCHES + 8 + WATCH_ENTRY * MAX_WATCHES
NUM_TSV = 64
#: The MemoryDefinition the watch table's offsets are in: an access is checked
#: only when the running instance's memory 0 (r15's VMCTX_MEMORY_DEF) is it.
DATA_WATCH_MEMDEF = DATA_TSV + 8 * NUM_TSV
#: Watched wasm global cells: count, then cell addresses (GlobalCheck).
DATA_GLOBAL_WATCHES = DATA_WATCH_MEMDEF + 8
MAX_GLOBAL_WATCHES = 16
assert DATA_GLOBAL_WATCHES + 8 * (1 + MAX_GLOBAL_WATCHES) <= DATA_SIZE

#: hit kinds (DATA_HIT_KIND)
HIT_NONE = 0
HIT_CONDITION = 1        # condition ``index`` was true
HIT_CONDITION_ERROR = 2  # condition ``index`` could not be evaluated (error, address)
HIT_ACCESS = 3           # a watched range was accessed (index = watch, address, size)
HIT_HOST_WRITE = 4       # a host function wrote a watched range (recorded by the host side)
HIT_GLOBAL = 5           # a global.set to a watched global (address = its cell)

#: error codes (DATA_HIT_ERROR) of HIT_CONDITION_ERROR
ERROR_UNREADABLE = 1
ERROR_DIVIDE_BY_ZERO = 2
ERROR_LOOP_BUDGET = 3
ERROR_MESSAGES = {
    ERROR_UNREADABLE: "cannot read memory at {address:#x}",
    ERROR_DIVIDE_BY_ZERO: "division by zero",
    ERROR_LOOP_BUDGET: "too many backward jumps (a loop?)",
}

#: region kinds (region table)
REGION_FIXED = 0    # [start, end) at its own address
REGION_MEMORY = 1   # a linear memory at its native address: memdef -> {base, length}
REGION_MIRROR = 2   # the same memory seen at [0, length)

#: watch kinds (bit set)
WATCH_WRITE = 1
WATCH_READ = 2

#: Saved registers, in push order (the save area is the reverse of this).
SAVED = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.R8, Reg.R9, Reg.R10, Reg.R11)
SAVE_FLAGS_OFFSET = 8 * len(SAVED)
SAVE_RETURN_OFFSET = SAVE_FLAGS_OFFSET + 8
SAVE_GUEST_RSP_OFFSET = SAVE_RETURN_OFFSET + 8
#: Most bytes a veneer's checks may push below the save area (an agent
#: expression's stack: at most 100 values), not counting a dprintf's C call
#: (cm_agent_printf: about 8 KiB).  The runtime keeps 64 KiB between any
#: guest rsp and the guard page (codemem.execution.LIMIT_MARGIN).
VENEER_STACK_BYTES = 1024


def carrier_store_bytes(carrier: CarrierStore) -> bytes:
    """The carrier as a veneer (entered by the site's ``call``) runs it: a
    slot store ``mov [rsp + disp + 8], reg`` (8: the return address the call
    pushed), a local store ``mov [rbp + disp], reg`` (the call leaves rbp
    alone), a move ``mov target, reg``; a producer ``mov reg32, imm32``
    before its slot store."""
    a = Assembler()
    source = Reg(carrier.register)
    if carrier.immediate is not None:  # a producer: its constant, then the slot store
        a.mov(source, carrier.immediate, 32)
    if carrier.base is None:
        a.mov(Reg(carrier.target), source, 64)
    elif carrier.base == Reg.RSP:
        a.mov(Mem(Reg.RSP, carrier.disp + 8), source, 64)
    else:
        assert carrier.base == Reg.RBP, carrier
        a.mov(Mem(Reg.RBP, carrier.disp), source, 64)
    return a.finish()


def saved_offset(reg: Reg) -> int | None:
    """Offset of ``reg``'s guest value from r10 in the save area, None for a
    register the veneer never writes (read it live)."""
    if reg not in SAVED:
        return None
    return 8 * (len(SAVED) - 1 - SAVED.index(reg))


class Check(Protocol):
    """Something a site's veneer runs.  ``emit`` appends code that falls
    through when nothing needs the client, and otherwise writes the hit
    record (``emitter.record_hit``) and jumps to ``emitter.stop``.  It may use
    rax, rcx, rdx, rsi, rdi, r8, r9, r11 and the stack below rsp; it must
    leave rsp = r10 when it falls through.  ``cache_key`` (optional): equal
    keys at one site mean equal code, so HookArea reuses the veneer.

    A site whose only check offers ``stub(area, address, carrier) -> bytes | None``
    or ``emit_standalone(emitter) -> bool`` gets that instead of the generic
    veneer (AccessCheck: the watchpoint hot path, see HookArea._build)."""

    def emit(self, emitter: "VeneerEmitter") -> None: ...


class VeneerEmitter:
    """What a Check's code generator needs: the assembler, the site's pc,
    rip-relative operands for the hook area's data, and the ways out.

    At a carrier site (codemem.frametable.CarrierStore) the veneer's first
    instruction is the one the site's ``call`` replaced (carrier_store_bytes:
    a slot store ``mov [rsp+disp+8], reg``, 8 for the return address the call
    pushed; a local store ``mov [rbp+disp], reg``; a move ``mov target,
    reg``), before any check reads a frame slot or a register: a check that
    falls through returns to the guest at site + 5, after the carrier's place."""

    def __init__(self, area: "HookArea", address: int, site_pc: int):
        self.area = area
        self.address = address
        self.site_pc = site_pc
        self.a = Assembler()
        self.start = self.a.new_label()
        self.a.bind(self.start)
        self.stop = self.a.new_label()
        #: The site's carrier store, or None (a NOP site).
        self.carrier = area.store_code.carrier_store_at(site_pc)
        if self.carrier is not None:
            self.a.emit_bytes(carrier_store_bytes(self.carrier))

    def data(self, offset: int) -> Mem:
        """[rip + the data area's byte ``offset``]."""
        return Mem.rip(self.start, self.area.data_address + offset - self.address)

    def code(self, absolute: int) -> Mem:
        return Mem.rip(self.start, absolute - self.address)

    def call_absolute(self, target: int) -> None:
        """``call target`` (rel32: the target is in this hook area)."""
        at = self.a.offset
        self.a.emit_bytes(b"\xe8\0\0\0\0")
        self.a.patch_rel32(at + 1, target - self.address)

    def record_hit(self, kind: int, index: int) -> None:
        self.a.mov(self.data(DATA_HIT_KIND), kind, 64)
        self.a.mov(self.data(DATA_HIT_INDEX), index, 64)

    def load_guest_register(self, dst: Reg, reg: Reg) -> None:
        """``dst`` = the guest's ``reg`` at the site."""
        if reg == Reg.RSP:
            self.a.lea(dst, Mem(Reg.R10, SAVE_GUEST_RSP_OFFSET))
            return
        offset = saved_offset(reg)
        if offset is None:
            if dst != reg:
                self.a.mov(dst, reg, 64)
        else:
            self.a.mov(dst, Mem(Reg.R10, offset), 64)

    def checked_read(self) -> None:
        """rax = the ``esi``-byte value at address ``rdi`` through the region
        table; CF set (and rdi kept) when it is not readable.  Clobbers rcx,
        rdx, r8, r9, r11."""
        self.call_absolute(self.area.checked_read_address)


# --------------------------------------------------------------------------
# Memory access sites
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessSite:
    """A sequence point before an instruction that reads or writes memory 0
    (or sets a global).  Operand slots are rbp-relative frame offsets.

    * loads/stores: address = u32 [rbp+address_slot] + static_offset, ``size`` bytes;
    * memory.fill / memory.init: writes [d, d + n) with d at ``address_slot``,
      n at ``length_slot``;
    * memory.copy: writes [d, d+n) and reads [s, s+n) (``source_slot``);
    * global.set: ``global_index``.
    """

    native_offset: int
    wasm_offset: int
    name: str
    writes: bool
    reads: bool
    address_slot: int | None = None
    static_offset: int = 0
    size: int = 0
    length_slot: int | None = None
    source_slot: int | None = None
    global_index: int | None = None
    #: Registers the code after the point relies on (its slot and context
    #: mirrors, codemem.frametable "Register mirrors"), a bit per hardware
    #: register number; every other register but rsp, rbp and r15 is dead
    #: there, so a veneer may use it freely.
    live_mask: int = 0

    def is_live(self, reg: Reg) -> bool:
        return bool(self.live_mask >> reg & 1)

    def describe(self) -> str:
        parts = [self.name]
        if self.address_slot is not None:
            parts.append(f"addr=[rbp{self.address_slot:+d}]" + (f"+{self.static_offset:#x}" if self.static_offset else ""))
        if self.size:
            parts.append(f"size={self.size}")
        if self.length_slot is not None:
            parts.append(f"len=[rbp{self.length_slot:+d}]")
        if self.source_slot is not None:
            parts.append(f"src=[rbp{self.source_slot:+d}]")
        if self.global_index is not None:
            parts.append(f"global={self.global_index}")
        return " ".join(parts)


_LOAD_SIZES = {0x28: 4, 0x29: 8, 0x2A: 4, 0x2B: 8, 0x2C: 1, 0x2D: 1, 0x2E: 2, 0x2F: 2,
               0x30: 1, 0x31: 1, 0x32: 2, 0x33: 2, 0x34: 4, 0x35: 4}
_STORE_SIZES = {0x36: 4, 0x37: 8, 0x38: 4, 0x39: 8, 0x3A: 1, 0x3B: 2, 0x3C: 1, 0x3D: 2, 0x3E: 4}
_LOAD_NAMES = ("i32.load", "i64.load", "f32.load", "f64.load", "i32.load8_s", "i32.load8_u",
               "i32.load16_s", "i32.load16_u", "i64.load8_s", "i64.load8_u", "i64.load16_s",
               "i64.load16_u", "i64.load32_s", "i64.load32_u")
_STORE_NAMES = ("i32.store", "i64.store", "f32.store", "f64.store", "i32.store8", "i32.store16",
                "i64.store8", "i64.store16", "i64.store32")


def decode_access(wasm: bytes, native_offset: int, wasm_offset: int, depth: int, func,
                  live_mask: int = 0) -> AccessSite | None:
    """The access the instruction at module offset ``wasm_offset`` makes (its
    INSTRUCTION sequence point at image offset ``native_offset`` with
    operand-stack depth ``depth`` in ``func``), or None."""
    at = wasm_offset
    if not 0 <= at < len(wasm):
        return None
    op = wasm[at]
    slot = func.operand_slot_offset
    limit = len(wasm)
    live = live_mask
    try:
        if op in _LOAD_SIZES or op in _STORE_SIZES:
            _align, pos = read_uleb(wasm, at + 1, limit, 32)
            offset, _ = read_uleb(wasm, pos, limit, 64)
            if op in _LOAD_SIZES:
                if depth < 1:
                    return None
                return AccessSite(native_offset, at, _LOAD_NAMES[op - 0x28], False, True,
                                  address_slot=slot(depth - 1), static_offset=offset, size=_LOAD_SIZES[op],
                                  live_mask=live)
            if depth < 2:
                return None
            return AccessSite(native_offset, at, _STORE_NAMES[op - 0x36], True, False,
                              address_slot=slot(depth - 2), static_offset=offset, size=_STORE_SIZES[op],
                              live_mask=live)
        if op == 0x24:
            index, _ = read_uleb(wasm, at + 1, limit, 32)
            return AccessSite(native_offset, at, "global.set", True, False, global_index=index)
        if op == 0xFC:
            sub, _ = read_uleb(wasm, at + 1, limit, 32)
            if sub in (8, 10, 11) and depth >= 3:
                name = {8: "memory.init", 10: "memory.copy", 11: "memory.fill"}[sub]
                return AccessSite(native_offset, at, name, True, sub == 10,
                                  address_slot=slot(depth - 3), length_slot=slot(depth - 1),
                                  source_slot=slot(depth - 2) if sub == 10 else None, live_mask=live)
    except CompileError as e:  # validated code decodes: a bug; skip the site rather than fail the watchpoint
        log.warning("cannot decode the access at wasm offset %#x: %s", at, e)
    return None


#: Opcodes that may access memory 0 or a global (the first byte).
_ACCESS_OPCODES = frozenset(_LOAD_SIZES) | frozenset(_STORE_SIZES) | {0x24, 0xFC}
_SEQPOINT_RECORD = struct.Struct("<IIBBHII")   # frametable.SequencePointRecord, field for field
_MIRROR_RECORD = struct.Struct("<BB2xi")       # frametable.RegisterMirrorRecord
_INSTRUCTION = int(SequencePointKind.INSTRUCTION)
_RETURN_POINT = int(SequencePointKind.RETURN_POINT)


def _raw_points(table, func):
    """(native_offset, wasm_offset, kind, num_mirrors, depth, first_mirror) of
    ``func``'s sequence points, straight from the packed records (building
    SequencePoint objects for a whole module would take minutes: DESIGN.md
    "Read in place, never in full"; this runs once per EngineCode)."""
    start = table.header.seqpoints_offset + func.first_seqpoint * _SEQPOINT_RECORD.size
    data = table.data[start:start + func.num_seqpoints * _SEQPOINT_RECORD.size]
    for native, wasm_offset, kind, num_mirrors, depth, _types, first_mirror in _SEQPOINT_RECORD.iter_unpack(data):
        yield native, wasm_offset, kind, num_mirrors, depth, first_mirror


def _live_mask(table, first: int, count: int) -> int:
    """The registers of a point's mirror records, a bit per register number
    (each record's first byte, frametable.RegisterMirrorRecord)."""
    if not count:
        return 0
    start = table.header.mirrors_offset + first * _MIRROR_RECORD.size
    mask = 0
    for register in table.data[start:start + count * _MIRROR_RECORD.size:_MIRROR_RECORD.size]:
        mask |= 1 << register
    return mask


def host_return_sites(engine_code, wasm: bytes, num_imported_funcs: int) -> frozenset[int]:
    """Image offsets of the RETURN_POINT sites after every call that may
    reach a host function (``call`` of an import, ``call_indirect``,
    ``return_call_indirect``), cached on the EngineCode: where a host's
    writes into linear memory are reported (PendingHostWriteCheck)."""
    cached = getattr(engine_code, "_host_return_sites", None)
    if cached is not None:
        return cached
    table = engine_code.frame_table
    site_set = set(table.site_offsets)
    sites = set()
    for func in table.functions():
        last_call = False
        for native, at, kind, _n, _depth, _first in _raw_points(table, func):
            if kind == _INSTRUCTION:
                op = wasm[at] if 0 <= at < len(wasm) else None
                if op == 0x10:
                    index, _ = read_uleb(wasm, at + 1, len(wasm), 32)
                    last_call = index < num_imported_funcs
                else:
                    last_call = op in (0x11, 0x13)
            elif kind == _RETURN_POINT:
                if last_call and native in site_set:
                    sites.add(native)
                last_call = False
    engine_code._host_return_sites = frozenset(sites)
    return engine_code._host_return_sites


def access_sites(engine_code, wasm: bytes) -> dict[int, AccessSite]:
    """Image offsets -> AccessSite for every patch site before a memory access
    or global.set, derived once per EngineCode and cached on it."""
    cached = getattr(engine_code, "_access_sites", None)
    if cached is not None:
        return cached
    table = engine_code.frame_table
    site_set = set(table.site_offsets)
    sites: dict[int, AccessSite] = {}
    for func in table.functions():
        for native, at, kind, num_mirrors, depth, first_mirror in _raw_points(table, func):
            if kind != _INSTRUCTION or not 0 <= at < len(wasm) or wasm[at] not in _ACCESS_OPCODES \
                    or native not in site_set:
                continue
            access = decode_access(wasm, native, at, depth, func, _live_mask(table, first_mirror, num_mirrors))
            if access is not None:
                sites[native] = access
    engine_code._access_sites = sites
    return sites


# --------------------------------------------------------------------------
# The hook area
# --------------------------------------------------------------------------


class HookArea:
    """The hook code and data of one debug StoreCode (see the module docstring).

    Veneers are bump-allocated and never rewritten in place while the guest
    may run them: changing a site's checks writes a new veneer, then points
    the site at it.  When the arena is full it is compacted, but only while
    the guest is known to be outside every veneer (``compact_ok``: it is
    stopped, and a stopped guest is never inside a veneer, which jumps to
    the trampoline with the site's own return address)."""

    def __init__(self, store_code):
        self.store_code = store_code
        self.size = CODE_SIZE + DATA_SIZE
        # Within rel32 reach of every site, and for a low Store inside its
        # [2 GiB, 4 GiB) window (codemem.placement).
        self._mapping = map_near_code(store_code, self.size, what="hook area")
        self.base = self._mapping.base
        self.data_address = self.base + CODE_SIZE
        self._lock = threading.Lock()
        self.veneers: dict[int, tuple[int, int]] = {}  # site pc -> (address, size)
        self._edit_depth = 0
        self.site_checks: dict[int, list[Check]] = {}
        # (site pc, checks' cache keys) -> (address, size) of a veneer already
        # written (a check with a ``cache_key`` generates the same code each
        # time): re-enabling the same checks costs no assembly.
        self._cache: dict[tuple, tuple[int, int]] = {}
        header = Assembler()
        start = header.new_label()
        header.bind(start)
        header.dq(lib.cm_breakpoint_trampoline_address())
        header.dq(lib.cm_agent_printf_address())
        self.bp_slot_address = self.base
        self.printf_slot_address = self.base + 8
        self.checked_read_address = self.base + header.offset
        _emit_checked_read(header, start, self.base, self.data_address)
        # The shared access checks the watchpoint stubs call (AccessCheck.stub).
        self.access_routines: dict[tuple[tuple[Reg, Reg, Reg], int], int] = {}
        for triple in ACCESS_ROUTINE_REGISTERS:
            for kind in (WATCH_WRITE, WATCH_READ):
                header.align(16, 0xCC)
                self.access_routines[(triple, kind)] = self.base + header.offset
                _emit_access_routine(header, start, self.base, self.data_address, triple, kind)
        header.align(16, 0xCC)
        code = header.finish()
        self._write(self.base, code)
        self._fresh_arena = self.base + len(code)
        self._next = self._fresh_arena
        native.check(lib.cm_protect(self.base, CODE_SIZE, PROT_READ | PROT_EXEC), "publish hook code")

    # -- raw memory ----------------------------------------------------------

    def _write(self, address: int, data: bytes) -> None:
        assert self.base <= address and address + len(data) <= self.base + self.size
        ffi.memmove(ffi.cast("char *", address), data, len(data))

    def read_u64(self, offset: int) -> int:
        return ffi.cast("uint64_t *", self.data_address + offset)[0]

    def write_u64(self, offset: int, value: int) -> None:
        ffi.cast("uint64_t *", self.data_address + offset)[0] = value & ((1 << 64) - 1)

    # -- data tables ---------------------------------------------------------

    def set_regions(self, regions: Iterable[tuple[int, int, int, int]]) -> None:
        """The region table: (kind, start, end, memdef address) rows."""
        rows = list(regions)
        if len(rows) > MAX_REGIONS:
            raise CodeMemoryError(f"{len(rows)} memory regions; the hook area holds {MAX_REGIONS}")
        # Count last (0 first) so a veneer running meanwhile sees a consistent prefix.
        self.write_u64(DATA_REGIONS, 0)
        for k, (kind, start, end, memdef) in enumerate(rows):
            at = self.data_address + DATA_REGIONS + 8 + k * REGION_ENTRY
            ffi.memmove(ffi.cast("char *", at), struct.pack("<QQQQ", start, end, memdef, kind), REGION_ENTRY)
        self.write_u64(DATA_REGIONS, len(rows))

    def set_watches(self, watches: Iterable[tuple[int, int, int]], memdef: int = 0) -> None:
        """The watch table: (lo, hi, kinds) rows over offsets [lo, hi) of the
        linear memory whose MemoryDefinition is at ``memdef``."""
        rows = list(watches)
        self.write_u64(DATA_WATCH_MEMDEF, memdef)
        if len(rows) > MAX_WATCHES:
            raise CodeMemoryError(f"{len(rows)} watched ranges; at most {MAX_WATCHES}")
        first_row = self.data_address + DATA_WATCHES + 8
        self.write_u64(DATA_WATCHES, 0)
        self.write_u64(_WATCH_TABLE_END_POINTER, first_row)
        for k, (lo, hi, kinds) in enumerate(rows):
            at = first_row + k * WATCH_ENTRY
            ffi.memmove(ffi.cast("char *", at), struct.pack("<QQQ", lo, hi, kinds), WATCH_ENTRY)
        self.write_u64(DATA_WATCHES, len(rows))
        self.write_u64(_WATCH_TABLE_END_POINTER, first_row + len(rows) * WATCH_ENTRY)

    def record_host_write(self, index: int, address: int, size: int) -> None:
        """A host function wrote watched memory: the next PendingHostWriteCheck
        the guest reaches stops with HIT_HOST_WRITE and this record."""
        self.write_u64(DATA_HIT_INDEX, index)
        self.write_u64(DATA_HIT_ADDRESS, address)
        self.write_u64(DATA_HIT_SIZE, size)
        self.write_u64(DATA_HIT_ERROR, 0)
        self.write_u64(DATA_HOST_WRITE, 1)

    def take_host_write(self) -> tuple[int, int, int] | None:
        """(index, address, size) of a host write not reported yet (cleared)."""
        if not self.read_u64(DATA_HOST_WRITE):
            return None
        self.write_u64(DATA_HOST_WRITE, 0)
        return self.read_u64(DATA_HIT_INDEX), self.read_u64(DATA_HIT_ADDRESS), self.read_u64(DATA_HIT_SIZE)

    def set_global_watches(self, cells: Iterable[int]) -> None:
        """The watched global cells (their addresses, as VMContexts point at them)."""
        cells = list(cells)
        if len(cells) > MAX_GLOBAL_WATCHES:
            raise CodeMemoryError(f"{len(cells)} watched globals; at most {MAX_GLOBAL_WATCHES}")
        self.write_u64(DATA_GLOBAL_WATCHES, 0)
        for k, cell in enumerate(cells):
            self.write_u64(DATA_GLOBAL_WATCHES + 8 * (k + 1), cell)
        self.write_u64(DATA_GLOBAL_WATCHES, len(cells))

    def take_hit(self) -> tuple[int, int, int, int, int]:
        """(kind, index, address, size, error) of the last hit, then clears it."""
        kind, index, address, size, error = (self.read_u64(off) for off in
                                             (DATA_HIT_KIND, DATA_HIT_INDEX, DATA_HIT_ADDRESS, DATA_HIT_SIZE,
                                              DATA_HIT_ERROR))
        self.write_u64(DATA_HIT_KIND, HIT_NONE)
        if kind == HIT_ACCESS and error == _INDEX_IS_BYTE_OFFSET:
            index, error = index // WATCH_ENTRY, 0
        return kind, index, address, size, error

    # -- veneers -------------------------------------------------------------

    def build(self, site_pc: int, checks: list[Check], *, compact_ok: bool) -> dict[int, int]:
        """Writes a veneer running ``checks`` for the site at ``site_pc``.
        Returns site pc -> veneer address for every veneer that moved: this
        one, and all the others when the arena had to be compacted.  The
        sites themselves are not touched: the caller redirects them."""
        with self._lock:
            self.site_checks[site_pc] = list(checks)
            key = (site_pc, tuple(getattr(check, "cache_key", None) for check in checks))
            cached = self._cache.get(key) if None not in key[1] else None
            if cached is not None:
                self.veneers[site_pc] = cached
                return {site_pc: cached[0]}
            try:
                return {site_pc: self._build(site_pc, checks)}
            except _ArenaFull:
                if not compact_ok:
                    raise CodeMemoryError("the hook area is full; retry while the guest is stopped") from None
            self._next = self._fresh_arena
            self.veneers.clear()
            self._cache.clear()
            moved = {}
            for pc, site_checks in self.site_checks.items():
                try:
                    moved[pc] = self._build(pc, site_checks)
                except _ArenaFull:
                    raise CodeMemoryError(f"the hook area ({CODE_SIZE} bytes) cannot hold the checks of "
                                          f"{len(self.site_checks)} sites") from None
            return moved

    def forget(self, site_pc: int) -> None:
        """The site no longer has checks (its veneer becomes garbage)."""
        with self._lock:
            self.veneers.pop(site_pc, None)
            self.site_checks.pop(site_pc, None)

    def _build(self, site_pc: int, checks: list[Check]) -> int:
        address = self._next
        emitter = VeneerEmitter(self, address, site_pc)
        a = emitter.a
        stub = getattr(checks[0], "stub", None) if len(checks) == 1 else None
        data = stub(self, address, emitter.carrier) if stub is not None else None
        if data is not None:
            return self._place(site_pc, checks, address, data)
        standalone = getattr(checks[0], "emit_standalone", None) if len(checks) == 1 else None
        if standalone is not None and standalone(emitter):
            return self._place(site_pc, checks, address, a.finish())
        emitter = VeneerEmitter(self, address, site_pc)
        a = emitter.a
        a.emit_bytes(b"\x9c")  # pushfq
        for reg in SAVED:
            a.push(reg)
        a.mov(Reg.R10, Reg.RSP, 64)
        for check in checks:
            check.emit(emitter)
        done = a.new_label()
        a.bind(done)
        for reg in reversed(SAVED):
            a.pop(reg)
        a.emit_bytes(b"\x9d")  # popfq
        a.ret()
        a.bind(emitter.stop)
        a.mov(Reg.RSP, Reg.R10, 64)
        for reg in reversed(SAVED):
            a.pop(reg)
        a.emit_bytes(b"\x9d")
        a.jmp_mem(emitter.code(self.bp_slot_address))
        return self._place(site_pc, checks, address, a.finish())

    def _place(self, site_pc: int, checks: list[Check], address: int, code: bytes) -> int:
        code += b"\xcc" * (-len(code) % 8)
        if address + len(code) > self.base + CODE_SIZE:
            raise _ArenaFull()
        self._make_writable()
        try:
            self._write(address, code)
        finally:
            self._publish()
        self._next = address + len(code)
        self.veneers[site_pc] = (address, len(code))
        key = (site_pc, tuple(getattr(check, "cache_key", None) for check in checks))
        if None not in key[1]:
            self._cache[key] = (address, len(code))
        return address

    def _make_writable(self) -> None:
        # The code pages stay executable while written: a running guest may be
        # in another veneer (new code goes to fresh bytes only, never over
        # bytes a site can reach).
        self._edit_depth += 1
        if self._edit_depth == 1:
            native.check(lib.cm_protect(self.base, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC),
                         "unpublish hook code")

    def _publish(self) -> None:
        self._edit_depth -= 1
        if self._edit_depth == 0:
            native.check(lib.cm_protect(self.base, CODE_SIZE, PROT_READ | PROT_EXEC), "publish hook code")

    @contextlib.contextmanager
    def editing(self):
        """Many builds, one unprotect/protect pair (a watchpoint hooks every
        store site of the image at once)."""
        self._make_writable()
        try:
            yield self
        finally:
            self._publish()

    @property
    def closed(self) -> bool:
        return self._mapping.closed

    def close(self) -> None:
        self._mapping.close()


class _ArenaFull(Exception):
    pass


def existing_hook_area(store_code) -> HookArea | None:
    """The StoreCode's open hook area, or None when it has none (yet)."""
    area = getattr(store_code, "_hook_area", None)
    return None if area is None or area.closed else area


def hook_area_for(store_code) -> HookArea:
    """The StoreCode's hook area, created on first use (again after
    :meth:`HookArea.close`, when the Store's target ended)."""
    area = getattr(store_code, "_hook_area", None)
    if area is None or area.closed:
        if store_code.closed:
            raise CodeMemoryError("the Store's code was closed")
        if not store_code.debug:
            raise CodeMemoryError("site hooks need a debug StoreCode (a private copy of the code)")
        area = store_code._hook_area = HookArea(store_code)
    return area


def _emit_checked_read(a: Assembler, start: Label, base: int, data_address: int) -> None:
    """The shared reader (see VeneerEmitter.checked_read).  Walks the region
    table; each row gives [start, end) and the bias from a client address to
    the native one."""

    def data(offset: int) -> Mem:
        return Mem.rip(start, data_address + offset - base)

    fail, loop, nxt, read = a.new_label(), a.new_label(), a.new_label(), a.new_label()
    fixed, memory = a.new_label(), a.new_label()
    a.lea(Reg.R8, Mem(Reg.RDI, 0, Reg.RSI, 1))       # r8 = end
    a.cmp(Reg.R8, Reg.RDI, 64)
    a.jcc(Cond.B, fail)                               # wrapped past 2^64
    a.lea(Reg.RCX, data(DATA_REGIONS + 8))
    a.mov(Reg.RDX, data(DATA_REGIONS), 64)
    a.bind(loop)
    a.test(Reg.RDX, Reg.RDX, 64)
    a.jcc(Cond.E, fail)
    a.mov(Reg.R9, Mem(Reg.RCX, 24), 64)              # kind
    a.test(Reg.R9, Reg.R9, 64)
    a.jcc(Cond.E, fixed)
    a.mov(Reg.R11, Mem(Reg.RCX, 16), 64)             # memdef
    a.cmp(Reg.R9, REGION_MEMORY, 64)
    a.jcc(Cond.E, memory)
    # mirror: [0, length), bias = base
    a.cmp(Reg.R8, Mem(Reg.R11, 8), 64)
    a.jcc(Cond.A, nxt)
    a.mov(Reg.R9, Mem(Reg.R11, 0), 64)
    a.jmp(read)
    a.bind(memory)                                    # [base, base+length), bias 0
    a.mov(Reg.R9, Mem(Reg.R11, 0), 64)
    a.cmp(Reg.RDI, Reg.R9, 64)
    a.jcc(Cond.B, nxt)
    a.add(Reg.R9, Mem(Reg.R11, 8), 64)
    a.cmp(Reg.R8, Reg.R9, 64)
    a.jcc(Cond.A, nxt)
    a.zero(Reg.R9)
    a.jmp(read)
    a.bind(fixed)
    a.cmp(Reg.RDI, Mem(Reg.RCX, 0), 64)
    a.jcc(Cond.B, nxt)
    a.cmp(Reg.R8, Mem(Reg.RCX, 8), 64)
    a.jcc(Cond.A, nxt)
    a.zero(Reg.R9)
    a.jmp(read)
    a.bind(nxt)
    a.add(Reg.RCX, REGION_ENTRY, 64)
    a.dec(Reg.RDX, 64)
    a.jmp(loop)
    a.bind(read)
    a.lea(Reg.R11, Mem(Reg.RDI, 0, Reg.R9, 1))       # native address (rdi kept for the caller)
    eight, four, two = a.new_label(), a.new_label(), a.new_label()
    a.cmp(Reg.RSI, 8, 32)
    a.jcc(Cond.E, eight)
    a.cmp(Reg.RSI, 4, 32)
    a.jcc(Cond.E, four)
    a.cmp(Reg.RSI, 2, 32)
    a.jcc(Cond.E, two)
    a.movzx(Reg.RAX, Mem(Reg.R11, 0), 32, 8)
    a.emit_bytes(b"\xf8")  # clc
    a.ret()
    a.bind(two)
    a.movzx(Reg.RAX, Mem(Reg.R11, 0), 32, 16)
    a.emit_bytes(b"\xf8")
    a.ret()
    a.bind(four)
    a.mov(Reg.RAX, Mem(Reg.R11, 0), 32)
    a.emit_bytes(b"\xf8")
    a.ret()
    a.bind(eight)
    a.mov(Reg.RAX, Mem(Reg.R11, 0), 64)
    a.emit_bytes(b"\xf8")
    a.ret()
    a.bind(fail)
    a.emit_bytes(b"\xf9")  # stc
    a.ret()


# --------------------------------------------------------------------------
# Access checks (watchpoints)
# --------------------------------------------------------------------------


class AccessCheck:
    """Checks the access an AccessSite is about to make against the hook
    area's watch table; a hit records (HIT_ACCESS, watch index, first watched
    byte accessed, size) and stops.  A write is checked against WATCH_WRITE
    rows, a read against WATCH_READ rows (memory.copy: its destination as a
    write, its source as a read).

    Three forms, cheapest first: :meth:`stub` (a load or store: 25 bytes
    jumping to a shared routine), :meth:`emit_standalone` (a load or store whose
    point leaves no shared routine's registers free: its own code, still no
    saves), :meth:`emit` (inside the generic veneer: memory.fill/copy/init,
    or a site that also has a condition)."""

    def __init__(self, access: AccessSite):
        self.access = access
        self.cache_key = ("access",)

    def emit(self, e: VeneerEmitter) -> None:
        access = self.access
        a = e.a
        if access.address_slot is None:
            return  # global.set: a GlobalCheck
        other = a.new_label()
        a.mov(Reg.RAX, Mem(Reg.R15, abi.VMCTX_MEMORY_DEF), 64)
        a.cmp(Reg.RAX, e.data(DATA_WATCH_MEMDEF), 64)
        a.jcc(Cond.NE, other)
        # rax = first byte, rdx = one past the last
        if access.length_slot is None:
            a.mov(Reg.RAX, Mem(Reg.RBP, access.address_slot), 32)
            if access.static_offset:
                a.mov(Reg.RCX, access.static_offset, 64)
                a.add(Reg.RAX, Reg.RCX, 64)
            a.lea(Reg.RDX, Mem(Reg.RAX, access.size))
        else:
            a.mov(Reg.RAX, Mem(Reg.RBP, access.address_slot), 32)
            a.mov(Reg.RDX, Mem(Reg.RBP, access.length_slot), 32)
            a.add(Reg.RDX, Reg.RAX, 64)
        kind = WATCH_WRITE if access.writes else WATCH_READ
        self._scan(e, kind)
        if access.source_slot is not None:
            a.mov(Reg.RAX, Mem(Reg.RBP, access.source_slot), 32)
            a.mov(Reg.RDX, Mem(Reg.RBP, access.length_slot), 32)
            a.add(Reg.RDX, Reg.RAX, 64)
            self._scan(e, WATCH_READ)
        a.bind(other)

    def stub(self, area: "HookArea", address: int, carrier: CarrierStore | None = None) -> bytes | None:
        """The veneer of a site whose only check is a load or store, as a
        25-byte stub (after the ``carrier`` when the site is one:
        VeneerEmitter; its registers are then not scratch registers, since a
        stop performs it again from them)::

            lea A, [rip + operands]     ; A: the routine's first scratch register
            jmp ROUTINE                 ; shared by every such site (_emit_access_routine)
            operands: i32 slot, u64 static offset, u8 size

        A jump, not a call, so the routine's ``ret`` returns to the site as
        the return-stack predictor expects.  Built with struct.pack, not the
        assembler: a watchpoint hooks every store site of a module at once (a
        real-size module has 100,000 of them).  None when no routine's three
        scratch registers are all dead at this point (then emit_standalone)."""
        access = self.access
        if access.length_slot is not None or access.address_slot is None:
            return None
        kept = frozenset() if carrier is None else carrier.registers()
        triple = next((t for t in ACCESS_ROUTINE_REGISTERS
                       if not any(access.is_live(r) or r in kept for r in t)), None)
        if triple is None:
            return None
        routine = area.access_routines[(triple, WATCH_WRITE if access.writes else WATCH_READ)]
        first = triple[0]
        store = b"" if carrier is None else carrier_store_bytes(carrier)
        # lea r64, [rip + 5]: REX.W (+REX.R for r8-r15), 8D, ModRM mod=00 reg=r rm=101, disp32
        lea = bytes((0x48 | (0x04 if first >= 8 else 0), 0x8D, 0x05 | (first & 7) << 3)) + (5).to_bytes(4, "little")
        jmp = b"\xe9" + (routine - (address + len(store) + len(lea) + 5)).to_bytes(4, "little", signed=True)
        return store + lea + jmp + _STUB_OPERANDS.pack(access.address_slot, access.static_offset, access.size)

    def emit_standalone(self, e: VeneerEmitter) -> bool:
        """The whole veneer of a site whose only check is a load or store
        (the hot path of a watchpoint: every store site of the Store runs it).
        It saves nothing: it uses three registers that are dead at the point
        (not mirrors, not rsp/rbp/r15) and clobbers the flags, which no
        compiled code keeps live across a site (tests/test_sitehooks.py
        checks that on every site of the examples).  False when the access is
        not a plain load/store or fewer than three registers are free: the
        generic veneer then saves everything."""
        access = self.access
        if access.length_slot is not None or access.address_slot is None:
            return False
        kept = frozenset() if e.carrier is None else e.carrier.registers()  # a stop performs it again (stub)
        free = [r for r in _SCRATCH_ORDER if not access.is_live(r) and r not in kept]
        if len(free) < 3:
            return False
        first, end, row = free[:3]
        a = e.a
        kind = WATCH_WRITE if access.writes else WATCH_READ
        done = a.new_label()
        a.mov(first, Mem(Reg.R15, abi.VMCTX_MEMORY_DEF), 64)    # this instance's memory 0...
        a.cmp(first, e.data(DATA_WATCH_MEMDEF), 64)             # ...is the one watched?
        a.jcc(Cond.NE, done)
        a.mov(first, Mem(Reg.RBP, access.address_slot), 32)    # the i32 address, zero-extended
        if access.static_offset:
            if access.static_offset < (1 << 31):
                a.add(first, access.static_offset, 64)
            else:
                a.mov(end, access.static_offset, 64)
                a.add(first, end, 64)
        a.lea(end, Mem(first, access.size))
        _emit_watch_table_scan(a, e.data, first, end, row, kind, done, e.code(e.area.bp_slot_address))
        return True

    @staticmethod
    def _scan(e: VeneerEmitter, kind: int) -> None:
        """Watch rows overlapping [rax, rdx) whose kinds include ``kind`` -> stop."""
        a = e.a
        loop, nxt, done, hit = a.new_label(), a.new_label(), a.new_label(), a.new_label()
        a.cmp(Reg.RAX, Reg.RDX, 64)
        a.jcc(Cond.AE, done)                          # an empty range touches nothing
        a.mov(Reg.R8, e.data(DATA_WATCHES), 64)       # count
        a.lea(Reg.RCX, e.data(DATA_WATCHES + 8))
        a.bind(loop)
        a.test(Reg.R8, Reg.R8, 64)
        a.jcc(Cond.E, done)
        a.cmp(Reg.RAX, Mem(Reg.RCX, 8), 64)           # first < hi
        a.jcc(Cond.AE, nxt)
        a.cmp(Reg.RDX, Mem(Reg.RCX, 0), 64)           # end > lo
        a.jcc(Cond.BE, nxt)
        a.test(Mem(Reg.RCX, 16), kind, 32)
        a.jcc(Cond.NE, hit)
        a.bind(nxt)
        a.add(Reg.RCX, WATCH_ENTRY, 64)
        a.dec(Reg.R8, 64)
        a.jmp(loop)
        a.bind(hit)
        # rcx = the row: address = max(first, lo), size = end - address,
        # index = (row - table) / WATCH_ENTRY
        a.mov(Reg.R9, Mem(Reg.RCX, 0), 64)
        a.cmp(Reg.RAX, Reg.R9, 64)
        a.cmovcc(Cond.B, Reg.RAX, Reg.R9, 64)
        a.mov(e.data(DATA_HIT_ADDRESS), Reg.RAX, 64)
        a.sub(Reg.RDX, Reg.RAX, 64)
        a.mov(e.data(DATA_HIT_SIZE), Reg.RDX, 64)
        a.lea(Reg.R9, e.data(DATA_WATCHES + 8))
        a.sub(Reg.RCX, Reg.R9, 64)
        a.mov(Reg.RAX, Reg.RCX, 64)
        a.zero(Reg.RDX)
        a.mov(Reg.RCX, WATCH_ENTRY, 64)
        a.div(Reg.RCX, 64)
        a.mov(e.data(DATA_HIT_INDEX), Reg.RAX, 64)
        a.mov(e.data(DATA_HIT_KIND), HIT_ACCESS, 64)
        a.jmp(e.stop)
        a.bind(done)



#: Registers a standalone access veneer may take when they are dead at the point.
_SCRATCH_ORDER = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.R8, Reg.R9, Reg.R10, Reg.R11, Reg.RDI, Reg.RSI, Reg.RBX,
                  Reg.R12, Reg.R13, Reg.R14)
#: DATA_HIT_ERROR of an access hit whose DATA_HIT_INDEX is the row's byte offset.
_INDEX_IS_BYTE_OFFSET = 1

#: Scratch register triples of the shared access routines, in order of preference.
ACCESS_ROUTINE_REGISTERS = (
    (Reg.RAX, Reg.RCX, Reg.RDX), (Reg.R8, Reg.R9, Reg.R10), (Reg.R11, Reg.RDI, Reg.RSI),
    (Reg.RBX, Reg.R12, Reg.R13), (Reg.RAX, Reg.R14, Reg.R11), (Reg.RCX, Reg.RDX, Reg.R14),
)
#: The operands after a stub's jump: i32 slot, u64 static offset, u8 size.
_STUB_OPERANDS = struct.Struct("<iQB")


def _emit_access_routine(a: Assembler, start: Label, base: int, data_address: int,
                         registers: tuple[Reg, Reg, Reg], kind: int) -> None:
    """A load/store check shared by every stub that names it.  On entry the
    first register points at the stub's operands and [rsp] is the site's
    return address, so its ``ret`` returns to the guest and a hit's jump to
    the breakpoint trampoline stops at the site.  Uses only ``registers``
    (dead at every point whose stub jumps here) and the flags (never live
    across a site)."""
    A, B, C = registers

    def data(offset: int) -> Mem:
        return Mem.rip(start, data_address + offset - base)

    done = a.new_label()
    a.mov(B, Mem(Reg.R15, abi.VMCTX_MEMORY_DEF), 64)
    a.cmp(B, data(DATA_WATCH_MEMDEF), 64)
    a.jcc(Cond.NE, done)                            # another instance's memory
    a.movsxd(B, Mem(A, 0))                          # the address operand's slot (rbp-relative)
    a.mov(B, Mem(Reg.RBP, 0, B, 1), 32)             # the i32 address, zero-extended
    a.add(B, Mem(A, 4), 64)                         # + the static offset: first byte
    a.movzx(C, Mem(A, 12), 32, 8)
    a.add(C, B, 64)                                 # one past the last byte
    _emit_watch_table_scan(a, data, B, C, A, kind, done, Mem.rip(start, 0))  # bp_slot: the area's first quadword


def _emit_watch_table_scan(a: Assembler, data: Callable[[int], Mem], first: Reg, end: Reg, row: Reg, kind: int,
                           done: Label, stop_slot: Mem) -> None:
    """The watch-table scan of a load/store check, shared by the standalone
    veneer and the shared access routines: with [first, end) the bytes the
    access touches, a row overlapping them whose kinds include ``kind``
    records (byte offset of the row, first watched byte, size) and jumps
    through ``stop_slot`` (the breakpoint trampoline's slot); otherwise
    binds ``done`` (the callers' early exits jump there too) and returns to
    the guest.  Clobbers ``row`` and the flags; ``first``/``end`` on a hit."""
    loop, nxt, hit, lo = a.new_label(), a.new_label(), a.new_label(), a.new_label()
    a.lea(row, data(DATA_WATCHES + 8))
    a.bind(loop)
    a.cmp(row, data(_WATCH_TABLE_END_POINTER), 64)
    a.jcc(Cond.AE, done)
    a.cmp(first, Mem(row, 8), 64)                   # first < hi
    a.jcc(Cond.AE, nxt)
    a.cmp(end, Mem(row, 0), 64)                     # end > lo
    a.jcc(Cond.BE, nxt)
    a.test(Mem(row, 16), kind, 32)
    a.jcc(Cond.NE, hit)
    a.bind(nxt)
    a.add(row, WATCH_ENTRY, 64)
    a.jmp(loop)
    a.bind(done)
    a.ret()
    a.bind(hit)
    # Rare: the hit's address is max(first, lo), its size end - address.
    a.mov(data(DATA_HIT_KIND), HIT_ACCESS, 64)
    a.cmp(first, Mem(row, 0), 64)
    a.jcc(Cond.AE, lo)
    a.mov(first, Mem(row, 0), 64)
    a.bind(lo)
    a.mov(data(DATA_HIT_ADDRESS), first, 64)
    a.sub(end, first, 64)
    a.mov(data(DATA_HIT_SIZE), end, 64)
    a.lea(first, data(DATA_WATCHES + 8))
    a.sub(row, first, 64)
    a.mov(data(DATA_HIT_INDEX), row, 64)            # a byte offset; take_hit divides
    a.mov(data(DATA_HIT_ERROR), _INDEX_IS_BYTE_OFFSET, 64)
    a.jmp_mem(stop_slot)


class GlobalCheck:
    """At a ``global.set``: stops when the cell the instance context points
    at for that global (``[r15 + VMContextLayout.global_cell(index)]``, so an
    imported global shared by several instances is one cell) is in the
    watched-globals table; the hit's address is the cell.  Reported after
    the set, like a store."""

    def __init__(self, vmctx_offset: int):
        self.vmctx_offset = vmctx_offset
        self.cache_key = ("global", vmctx_offset)

    def emit(self, e: VeneerEmitter) -> None:
        a = e.a
        loop, done, hit = a.new_label(), a.new_label(), a.new_label()
        a.mov(Reg.RAX, Mem(Reg.R15, self.vmctx_offset), 64)
        a.mov(Reg.RCX, e.data(DATA_GLOBAL_WATCHES), 64)
        a.lea(Reg.RDX, e.data(DATA_GLOBAL_WATCHES + 8))
        a.bind(loop)
        a.test(Reg.RCX, Reg.RCX, 64)
        a.jcc(Cond.E, done)
        a.cmp(Reg.RAX, Mem(Reg.RDX, 0), 64)
        a.jcc(Cond.E, hit)
        a.add(Reg.RDX, 8, 64)
        a.dec(Reg.RCX, 64)
        a.jmp(loop)
        a.bind(hit)
        a.mov(e.data(DATA_HIT_ADDRESS), Reg.RAX, 64)
        a.mov(e.data(DATA_HIT_SIZE), 8, 64)
        a.mov(e.data(DATA_HIT_INDEX), 0, 64)
        a.mov(e.data(DATA_HIT_KIND), HIT_GLOBAL, 64)
        a.jmp(e.stop)
        a.bind(done)


class PendingHostWriteCheck:
    """At the return point after a call that may reach a host function: stops
    if the host wrote into a watched range meanwhile (the host side sets the
    flag and the hit record)."""

    cache_key = ("host-write",)

    def emit(self, e: VeneerEmitter) -> None:
        a = e.a
        skip = a.new_label()
        a.cmp(e.data(DATA_HOST_WRITE), 0, 64)
        a.jcc(Cond.E, skip)
        a.mov(e.data(DATA_HIT_KIND), HIT_HOST_WRITE, 64)
        a.jmp(e.stop)
        a.bind(skip)
