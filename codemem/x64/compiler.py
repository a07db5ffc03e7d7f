"""The baseline WebAssembly -> x86-64 compiler: one pass, one patch site per sequence point.

``compile_module(info, debug=...)`` validates a decoded module while compiling it
and returns the image code (functions, trap stubs, veneers and their slots) with
its frame table.  The calling convention, frame layout, value representation,
trap path and libcalls are the contract in ``codemem/abi.py``; this module only
implements it.

Code shape (a "stack machine in memory", made for exact frame tables rather than
speed):

* Locals live at fixed rbp-relative slots (``rbp - FRAME_FIXED_SIZE - 8*(i+1)``),
  the operand stack at ``rsp + 8*i`` (rsp = rbp - frame_size for the whole body,
  so a slot's address never depends on frame_size, which is known only at the end
  and patched into the prologue).  Every instruction loads its operands into
  scratch registers and stores its result back, so at every sequence point every
  wasm value is in its slot.  One exception, invisible to a debugger: a value
  the very next instruction pops from its register (and which cannot trap)
  is not stored (a *deferred carrier*, ``_store_deferrable``): it is on the
  stack at that one point only, whose site (debug) names the store, and
  every stop at a site performs it (docs/compiler-speed.md).
* Below the locals and above the operand stack: save slots for the params of an
  ``if`` with block parameters (the then-branch may overwrite them before the
  else-branch needs them).
* Numeric and most memory/variable instructions are emitted from templates cached
  per ``(opcode, depth, immediate)`` (plus, for those that use it, the register
  cache state they read): their bytes depend on nothing else.
* A write-through register cache (``regcache.py``) keeps recent values in
  registers that mirror their slots, so the next instruction reads a register
  instead of reloading a just-stored slot.  Every result is still stored.  The
  cache's entries at each INSTRUCTION sequence point go into the frame table
  ("register mirrors"): a debugger stop there reloads them from the slots on
  resume.  The cache is emptied at every call and libcall, and by any
  instruction that does not go through it.  A label keeps the entries all
  edges reaching it agree on; a loop label keeps the entry state's mirrors of
  the locals its body reads, and every back edge re-establishes them (register
  copies, or reloads from the always up-to-date slots).  Memory 0's base and
  length are cached too (pseudo-locations, recorded as context mirrors the
  target reloads from the instance context on resume).
* Float instructions reuse the value the previous one left in xmm0 after
  checking it against the operand's mirror register (numeric.py "xmm0 reuse").
* Traps are ``jcc`` to out-of-line stubs at the end of the function
  (``lea rsi, [rip + sequence point]; mov edi, CODE; call trap_veneer``).
* debug=True adds patch sites (5-byte NOPs, never straddling an 8-byte boundary)
  at the function entry, before every reachable instruction and at every call's
  return address (a carrier store or a deferred carrier's NOP is the site where
  it can be); everything else is identical between the two modes.

Dead code (after ``br``/``return``/``unreachable``/``br_table`` until the end of
the enclosing frame) is validated but emits nothing and has no sequence points.
"""
from __future__ import annotations

import bisect
import gc
import logging
import os
import pickle
import struct
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter

from ..abi import (
    FRAME_ARGS_PTR,
    FRAME_FIXED_SIZE,
    FRAME_LIBCALL_AREA,
    FRAME_SAVED_CTX,
    FRAME_SETUP,
    FUNCREF_CODE,
    FUNCREF_CTX,
    FUNCREF_TYPE_ID,
    IMPORTED_FUNC_CODE,
    IMPORTED_FUNC_CTX,
    LIBCALL_TRAP_SLOT,
    MEMDEF_LENGTH,
    STACK_CHECK_EXTRA,
    TABLEDEF_ELEMENTS,
    TABLEDEF_SIZE,
    VMCTX_HOST_TRAMPOLINE,
    VMCTX_LIBCALL_CTX,
    VMCTX_MEMORY_BASE,
    VMCTX_MEMORY_DEF,
    VMCTX_STACK_CTX,
    Libcall,
    TrapCode,
    VMContextLayout,
)
from ..errors import CompileError
from ..frametable import (
    SITE_DISABLED,
    SITE_PAD_PREFIX,  # a DS segment override: changes nothing for ``nopl``, ``call rel32`` or a ``mov``
    SITE_SIZE,
    carrier_store,
    deferred_carrier_bytes,
    FrameTableBuilder,
    PackedFunctions,
    PackedPoints,
    FunctionBuild,
    MirrorList,
    MirrorSource,
    SequencePointKind,
    pack_mirror,
)
from ..native import STACK_CTX_STACK_LIMIT
from ..veneer import append_veneers
from ..wasm.instructions import Instr
from ..wasm.module import ModuleInfo
from ..wasm.opcodes import OP_BY_NAME
from ..wasm.types import ValType
from ..wasm.validator import LOOP, FuncValidator, validate_module
from .asm import Assembler, Cond, Label, Mem, Reg, Xmm, nop_bytes
from .ccore import CFunctionCompiler, c_compiler_enabled
from .numeric import (
    NUMERIC,
    NUMERIC_ARITY,
    NUMERIC_OPERANDS,
    XMM0_AFTER,
    XMM_X_INPUT,
    XMM_Y_INPUT,
    TemplateAssembler,
    slot,
)
from .regcache import CACHE_REGISTERS, MEMORY_BASE, MEMORY_LENGTH, RegCache, common_state, local_location

log = logging.getLogger(__name__)

__all__ = ["CompiledModule", "compile_module"]

RAX, RCX, RDX, RSI, RDI, RSP, RBP, R15 = Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.RSP, Reg.RBP, Reg.R15
XMM0 = Xmm.XMM0

_INSTRUCTION = int(SequencePointKind.INSTRUCTION)
_RETURN_POINT = int(SequencePointKind.RETURN_POINT)
_ENTRY = int(SequencePointKind.ENTRY)
_MIRROR_SLOT = MirrorSource.SLOT
_MIRROR_MEMORY0_BASE = MirrorSource.MEMORY0_BASE
_MIRROR_MEMORY0_LENGTH = MirrorSource.MEMORY0_LENGTH

_OP_ELSE, _OP_END = 0x05, 0x0B
_OP_BLOCK, _OP_LOOP, _OP_IF = 0x02, 0x03, 0x04
_OP_LOCAL_GET, _OP_LOCAL_TEE = 0x20, 0x22
_OP_F32_LOAD, _OP_F64_LOAD = 0x2A, 0x2B
_offset_of = attrgetter("offset")

#: How many declared locals are zeroed by unrolled stores; more use ``rep stosq``.
_UNROLLED_ZEROING = 8

_LIBCALL_SLOT0 = Mem(RBP, FRAME_LIBCALL_AREA)
_LIBCALL_TRAP = Mem(RBP, FRAME_LIBCALL_AREA + 8 * LIBCALL_TRAP_SLOT)
_SAVED_CTX = Mem(RBP, FRAME_SAVED_CTX)
_FLOAT_TYPES = frozenset((ValType.F32, ValType.F64))
_ARGS_PTR = Mem(RBP, FRAME_ARGS_PTR)


@dataclass
class CompiledModule:
    """What the runtime turns into an EngineCode: ``code`` is the whole image
    (``frame_table``'s code_size bytes), ``layout`` the module's VMContext layout;
    ``c_functions`` / ``c_body_bytes``: how many defined functions (and bytes
    of their bodies) the C core compiled (ccore.py; the rest: Python)."""

    code: bytes
    frame_table: bytes
    layout: VMContextLayout
    c_functions: int = 0
    c_body_bytes: int = 0


def compile_module(info: ModuleInfo, *, debug: bool, jobs: int | None = None) -> CompiledModule:
    """Validate and compile every defined function of ``info``.

    Raises ``CompileError`` (with the module offset) for a malformed or invalid
    module; no code is produced then.  Function records are in native order, one
    per defined function, ``wasm_index`` in the full function index space.

    ``jobs``: how many processes compile (None: :func:`compile_jobs` for this
    module).  With more than one, contiguous runs of functions are compiled
    in forked children while this process compiles the first run, and the
    parts are linked here; the image is byte for byte the one a single
    process makes (each function's code depends only on the function: it
    starts at 28 mod 32, FUNCTION_START_PHASE, and calls between functions are linked last).  Any
    CompileError, or a child that fails, falls back to the one-process
    compile, which reports errors in the spec's order."""
    with _gc_paused():
        n = len(info.codes)
        jobs = compile_jobs(info) if jobs is None else max(1, min(jobs, n))
        if jobs > 1:
            chunks = _compile_in_processes(info, debug, _split(info, jobs))
            if chunks is not None:
                return _link(info, debug, chunks)
        if c_compiler_enabled():
            # Bodies are decoded as they are compiled (most of them in C);
            # any error is reported by the ordered compile below instead.
            try:
                validate_module(info)
                return _link(info, debug, [_ModuleCompiler(info, debug, 0, n).compile_chunk()])
            except CompileError:
                log.debug("compile failed; compiling again in Python for the error in the spec's order")
        # Decode every body first: a malformed body is reported before any
        # validation error, as the reference interpreter does.
        bodies = [info.read_body(i) for i in range(n)]
        validate_module(info)
        return _link(info, debug, [_ModuleCompiler(info, debug, 0, n, use_c=False).compile_chunk(bodies)])


#: Code sections smaller than this are compiled in one process (a fork, and
#: moving a part's image and frame table back, cost more than they save).
PARALLEL_MIN_CODE_BYTES = 256 * 1024
#: The environment variable that sets how many processes compile a module (1: no fork).
JOBS_ENV = "WASM_GDBSTUB_COMPILE_JOBS"


def compile_jobs(info: ModuleInfo) -> int:
    """Processes that compile ``info`` by default: ``$WASM_GDBSTUB_COMPILE_JOBS``
    if set; else one for a small code section; else one per CPU this process
    may run on that the 1-minute load average leaves idle, counting this one
    (at most 4): on a busy machine a second process only competes with the
    first, and the fork and the linking are then pure cost."""
    setting = os.environ.get(JOBS_ENV, "")
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            log.warning("ignoring %s=%r (not a number)", JOBS_ENV, setting)
    if (info.code_section_end or 0) - (info.code_section_offset or 0) < PARALLEL_MIN_CODE_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0))
    return max(1, min(cpus, 4, int(cpus - os.getloadavg()[0] + 1)))


def _split(info: ModuleInfo, jobs: int) -> list[tuple[int, int]]:
    """``jobs`` contiguous runs ``(first, last)`` of defined functions with
    about the same number of body bytes each."""
    sizes = [body.end_offset - body.body_offset for body in info.codes]
    total = sum(sizes)
    runs, first, done = [], 0, 0
    for k in range(1, jobs):
        goal = total * k // jobs
        last = first
        while last < len(sizes) and done + sizes[last] <= goal:
            done += sizes[last]
            last += 1
        if last > first:
            runs.append((first, last))
            first = last
    runs.append((first, len(sizes)))
    return [run for run in runs if run[1] > run[0]]


@dataclass
class _Chunk:
    """The compiled code of a run of functions, as if the image started at the
    first one: what a compile process hands to :func:`_link`.

    ``starts``: each function's offset; ``calls``: ``(rel32 field, defined
    function index)`` of calls to functions outside the run; ``trap_calls``:
    the rel32 fields of calls to the trap veneer; ``sites``: patch sites;
    ``frame``: the run's frame table records."""

    code: bytes
    starts: list[int]
    calls: list[tuple[int, int]]
    trap_calls: array  # uint32
    sites: array  # uint32
    frame: PackedFunctions
    c_functions: int = 0
    c_body_bytes: int = 0


def _link(info: ModuleInfo, debug: bool, chunks: list[_Chunk]) -> CompiledModule:
    """The image and frame table of ``chunks`` (runs in function order):
    their code one after the other, calls between runs resolved, then the
    veneers.  A chunk was compiled from offset 0, so its first function is
    at FUNCTION_START_PHASE after 0xCC padding: it goes at the 32-byte
    multiple ``base`` that puts that function where one process would have
    (the next FUNCTION_START_PHASE offset), and the part of its padding
    before the previous chunk's end is left out."""
    code = bytearray()
    builder = FrameTableBuilder(debug=debug)
    bases, starts, sites, trap_calls = [], [], array("I"), array("I")
    for chunk in chunks:
        base = (len(code) + _function_start_padding(len(code))) - FUNCTION_START_PHASE
        if base >= len(code):
            code += b"\xcc" * (base - len(code))
            code += chunk.code
        else:
            overlap = len(code) - base  # padding of the chunk's already in place
            assert chunk.code[:overlap] == b"\xcc" * overlap
            code += chunk.code[overlap:]
        assert base % _BRANCH_BOUNDARY == 0
        bases.append(base)
        starts += map(base.__add__, chunk.starts)
        sites += array("I", map(base.__add__, chunk.sites)) if base else chunk.sites
        trap_calls += array("I", map(base.__add__, chunk.trap_calls)) if base else chunk.trap_calls
        builder.add_packed(chunk.frame, base)
    for chunk, base in zip(chunks, bases):
        for field, callee in chunk.calls:
            struct.pack_into("<i", code, base + field, starts[callee] - (base + field + 4))
    veneers = append_veneers(code)
    for pos in trap_calls:
        struct.pack_into("<i", code, pos, veneers.trap_veneer - (pos + 4))
    builder.add_call_sites(sites, veneers.bp_veneer, code)  # site_enable_bytes, in bulk; disabled: the code's
    builder.code_size = len(code)
    builder.bp_veneer, builder.trap_veneer = veneers.bp_veneer, veneers.trap_veneer
    builder.bp_slot, builder.trap_slot = veneers.bp_slot, veneers.trap_slot
    c_functions = sum(chunk.c_functions for chunk in chunks)
    c_body_bytes = sum(chunk.c_body_bytes for chunk in chunks)
    log.debug("compiled %d functions in %d part(s) (%d in C): %d bytes of code, %d sites, debug=%s",
              len(starts), len(chunks), c_functions, len(code), len(sites), debug)
    return CompiledModule(bytes(code), builder.build(), VMContextLayout.for_module(info), c_functions,
                          c_body_bytes)


def _compile_in_processes(info: ModuleInfo, debug: bool, runs: list[tuple[int, int]]) -> list[_Chunk] | None:
    """Each run of ``runs`` but the first compiled in a forked child (the
    first here, meanwhile); None if any part failed (a CompileError, a child
    that died, no fork: the caller compiles in one process).  Every child is
    reaped, whatever happens here."""
    pending: dict[int, int] = {}  # child pid -> read end of its pipe, until reaped
    try:
        for first, last in runs[1:]:
            read_end, write_end = os.pipe()
            try:
                pid = os.fork()
            except OSError as e:
                os.close(read_end)
                os.close(write_end)
                log.info("cannot fork a compile process (%s): compiling in one", e)
                return None
            if pid == 0:
                _compile_child(info, debug, first, last, read_end, write_end)  # never returns
            os.close(write_end)
            pending[pid] = read_end
        try:
            chunks = [_ModuleCompiler(info, debug, *runs[0]).compile_chunk()]
        except CompileError:
            chunks = None
        for pid in list(pending):
            with os.fdopen(pending.pop(pid), "rb") as incoming:
                try:
                    data = incoming.read()
                finally:
                    _, status = os.waitpid(pid, 0)
            chunk = pickle.loads(data) if status == 0 and data else None
            if chunk is None or chunks is None:
                chunks = None
            else:
                chunks.append(chunk)
        return chunks
    finally:
        for pid, read_end in pending.items():  # left by an exception: a child blocked
            os.close(read_end)  # writing gets EPIPE and leaves
            os.waitpid(pid, 0)


def _compile_child(info: ModuleInfo, debug: bool, first: int, last: int, read_end: int, write_end: int):
    """In a forked child: compile a run, send it (or None for a CompileError)
    down the pipe, and leave with ``os._exit`` (the parent's atexit handlers,
    buffers and threads are not the child's)."""
    status = 1
    try:
        os.close(read_end)
        try:
            chunk = _ModuleCompiler(info, debug, first, last).compile_chunk()
        except CompileError:
            chunk = None
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
        status = 0
    finally:
        os._exit(status)


@contextmanager
def _gc_paused():
    """Suspend the cyclic garbage collector for the duration of a compile.

    A compile allocates millions of small objects that all stay alive until it
    ends (decoded instructions, sequence points, templates), so each
    collection the allocation count triggers traverses an ever larger heap
    and finds nothing: that was about a third of the compile time.  The
    compiler holds no reference cycles, so its garbage is freed by reference
    counting all the same and pausing costs no memory.  The collector is
    enabled again even on a CompileError; one the caller paused stays
    paused."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def local_offset(index: int) -> int:
    """rbp-relative offset of local ``index`` (params first)."""
    return -(FRAME_FIXED_SIZE + 8 * (index + 1))


class _Ctl:
    """The compiler's view of one control frame (parallel to the validator's).

    ``height``: operand-stack height below the frame's params; ``arity``: values a
    branch to the frame's label carries; ``label``: the branch target (loop start,
    else the end); ``dead``: the frame was entered in dead code (nothing of it is
    emitted).

    Register cache across labels: ``states`` are the cache states of the
    forward edges to the end label so far (the label keeps what they all
    agree on), ``else_state`` the state of the ``if``'s jump to the else
    label, ``header`` a loop's assumed state at its label (every back edge
    establishes it first)."""

    __slots__ = ("kind", "height", "arity", "label", "else_label", "else_seen", "end_types",
                 "nparams", "save_offset", "dead", "states", "else_state", "header")

    def __init__(self, kind, height, arity, label, end_types, nparams=0, dead=False):
        self.kind = kind
        self.height = height
        self.arity = arity
        self.label = label
        self.end_types = end_types
        self.nparams = nparams
        self.dead = dead
        self.else_label = None
        self.else_seen = False
        self.save_offset = 0
        self.states: list = []
        self.else_state: dict = {}
        self.header: dict = {}


def _frame_mirror(reg: int, loc: int, frame_size: int) -> tuple[int, int, int]:
    """The frame-table mirror record ``(register, MirrorSource, rbp offset)``
    of register cache entry ``(reg, loc)`` (regcache.py locations)."""
    if loc >= 0:
        return reg, _MIRROR_SLOT, -frame_size + 8 * loc
    if loc == MEMORY_BASE:
        return reg, _MIRROR_MEMORY0_BASE, 0
    if loc == MEMORY_LENGTH:
        return reg, _MIRROR_MEMORY0_LENGTH, 0
    return reg, _MIRROR_SLOT, local_offset(-loc - 1)


def _new_mirror_list(memo: tuple[dict, list], builder: FrameTableBuilder, frame_size: int,
                     state: tuple) -> MirrorList:
    """The frame-table mirror list of register cache ``state``
    (RegCache.state: locations by register number) in a frame of
    ``frame_size``, its records in register order, interned in ``builder``;
    remembered in ``memo``.

    ``memo``: ``({state: MirrorList}, records)`` for this frame size, kept
    module-wide (functions of one shape share most states); ``records[r]`` is
    ``{location: packed record}`` of register r."""
    states, records = memo
    built = []
    for reg in _CACHE_REGISTER_NUMBERS:
        loc = state[reg]
        if loc is not None:
            by_loc = records[reg]
            record = by_loc.get(loc)
            if record is None:
                record = by_loc[loc] = pack_mirror(*_frame_mirror(reg, loc, frame_size))
            built.append(record)
    mirrors = states[state] = builder.intern_mirrors(b"".join(built))
    return mirrors


#: The registers a cache state can name, in register order (mirror records' order).
_CACHE_REGISTER_NUMBERS = tuple(sorted(int(reg) for reg in CACHE_REGISTERS))


#: _carrier_kind's answers: the carrier's length in bytes as compiled.
_SLOT_STORE, _SLOT_STORE_RSP, _LOCAL_STORE, _REGISTER_MOVE = 5, 4, 4 + 0x100, 3


def _carrier_kind(code: bytearray) -> int:
    """What the carrier that ends ``code`` (Assembler.carrier_end) is:
    _SLOT_STORE ``mov [rsp+disp8], r64`` (its disp8 is 0..120: the SIB byte 24
    is second to last), _SLOT_STORE_RSP ``mov [rsp], r64`` (SIB 24 last),
    _REGISTER_MOVE ``REX 89 ModRM(mod=11)``, or _LOCAL_STORE ``REX 89
    ModRM(mod=01 rm=101) disp8`` (its disp8 is negative, 0x80..0xF8: never
    24 nor a mod=11 ModRM).  The low byte of the answer is its length."""
    last = code[-1]
    if last == 0x24:
        return _SLOT_STORE_RSP
    if code[-2] == 0x24:
        return _SLOT_STORE
    if code[-2] == 0x89 and last >= 0xC0:
        return _REGISTER_MOVE
    assert code[-3] == 0x89 and code[-2] & 0xC7 == 0x45 and last >= 0x80, "not a carrier"
    return _LOCAL_STORE


def _site_bytes(r: int) -> bytes:
    """What a patch site at an offset ``r`` (mod 8) takes: the disabled site,
    after padding when it would straddle an 8-byte boundary.

    The padding is ``8 - r`` (1 to 4) DS prefixes of the site's own
    instruction, not a NOP before it: disabled, ``3e .. 0f 1f 44 00 00`` is
    one ``nopl``; enabled, ``3e .. e8 rel32`` is one ``call`` (the prefixes are
    never patched, and the site's return address is still site + 5).  A padding
    NOP was a second instruction on the hot path, and each takes a decode and
    dispatch slot: on an AMD Zen 3 the -O2 kernel of bench_loop ran 1.27x
    slower with debugging on, 1.15x with the prefixes.  (GNU as pads with
    segment prefixes the same way for -malign-branch-prefix-size, up to 5 per
    instruction.)  A linear disassembly therefore sees ``ds nopl`` starting
    before the site offset; the 5 site bytes are SITE_DISABLED as always."""
    return bytes([SITE_PAD_PREFIX] * (8 - r if r > 3 else 0)) + SITE_DISABLED


def site_in_instruction(raw: bytes) -> int | None:
    """Where the patch site is in the disabled site instruction ``raw`` (the
    bytes of one disassembled instruction): after its padding prefixes, for
    the NOP and for a carrier store alike (frametable.carrier_store: the
    store is the site), and after a producer's REX.B; None if ``raw`` is not
    a site instruction."""
    pad = len(raw) - len(SITE_DISABLED)
    prefixes = pad
    if pad > 0 and raw[pad] & 0xF8 == 0xB8 and raw[pad - 1] == 0x41:  # a producer's REX.B stays before its site
        prefixes -= 1
    if 0 <= prefixes <= 4 and raw[:prefixes] == bytes([SITE_PAD_PREFIX]) * prefixes and (
            raw.endswith(SITE_DISABLED) or carrier_store(raw[pad:]) is not None):
        return pad
    return None


#: Indexed by the current code offset mod 8: the bytes of a patch site there
#: (padding included) and the padding's length (the site's offset is after it).
_SITE_BYTES = tuple(_site_bytes(r) for r in range(8))
_SITE_PAD = tuple(len(b) - len(SITE_DISABLED) for b in _SITE_BYTES)


def _hazard_mask(units: tuple[tuple[int, int], ...]) -> int:
    """Bit k set: at a code offset of k mod 32, one of the branch ``units``
    (``(start, end)`` in a template) would cross or end at a 32-byte boundary."""
    mask = 0
    for start, end in units:
        # Hazard where (at + start) mod 32 is one of the last end - start
        # values of a block: those bits, rotated right by start.
        last = ((1 << (end - start)) - 1) << (_BRANCH_BOUNDARY - (end - start))
        r = start & (_BRANCH_BOUNDARY - 1)
        mask |= (last >> r | last << (_BRANCH_BOUNDARY - r)) & ((1 << _BRANCH_BOUNDARY) - 1)
    return mask


def _padded_template(t: tuple, origin: int) -> tuple | None:
    """Template ``t`` (made unpadded) as building it for code offset
    ``origin`` (mod 32) would make it: NOP padding before each branch unit
    that would cross or end at a 32-byte boundary (Assembler.pad_for_branch's
    rule, unit by unit), its label references, trap fields and units moved;
    None if a short jump no longer reaches.  Cheaper than building again.

    Padding inserted at ``p`` moves the bytes from ``p`` on, but a label bound
    at ``p`` stays (it was bound before the unit's first instruction), and so
    does an anchor there (the end of an instruction before ``p``)."""
    code, traps, _, relocations, units, carrier = t
    inserts: list[tuple[int, int]] = []
    moved_units = []
    shift = 0
    for start, end in units:
        at = (origin + start + shift) & (_BRANCH_BOUNDARY - 1)
        if at + (end - start) >= _BRANCH_BOUNDARY:
            inserts.append((start, _BRANCH_BOUNDARY - at))
            shift += _BRANCH_BOUNDARY - at
        moved_units.append((start + shift, end + shift))
    if not inserts:
        return t

    def moved(x: int) -> int:
        return x + sum(pad for at, pad in inserts if x > at)

    out = bytearray()
    done = 0
    for at, pad in inserts:
        out += code[done:at]
        out += nop_bytes(pad)
        done = at
    out += code[done:]
    moved_relocations = []
    for pos, nbytes, target, anchor in relocations:
        pos, target, anchor = moved(pos), moved(target), moved(anchor)
        value = target - anchor
        if not -(1 << (8 * nbytes - 1)) <= value < 1 << (8 * nbytes - 1):
            return None
        out[pos : pos + nbytes] = value.to_bytes(nbytes, "little", signed=True)
        moved_relocations.append((pos, nbytes, target, anchor))
    moved_units = tuple(moved_units)
    # Padding goes before branch units, never after the last instruction: a
    # carrier store that ended the template still does.
    return (bytes(out), tuple((moved(pos), code) for pos, code in traps), _hazard_mask(moved_units),
            tuple(moved_relocations), moved_units, carrier)


def _align16(n: int) -> int:
    return (n + 15) & ~15


def _fits_simm32(value: int) -> bool:
    return -0x8000_0000 <= value <= 0x7FFF_FFFF


#: Branches stay within 32-byte blocks (Assembler.pad_for_branch), and
#: functions start on one, so a function's code does not depend on where the
#: previous one ended.
_BRANCH_BOUNDARY = 32
_LOOP_ALIGN = 32

#: Functions start at this offset mod 32, so that their ENTRY point, right
#: after FRAME_SETUP, is on a 32-byte boundary: a patch site there needs no
#: padding prefix, and the code from the ENTRY point on does not depend on
#: where the previous function ended.
FUNCTION_START_PHASE = -len(FRAME_SETUP) & (_BRANCH_BOUNDARY - 1)


def _function_start_padding(length: int) -> int:
    """How many bytes to pad code of ``length`` bytes with so that the next
    function starts at FUNCTION_START_PHASE mod 32."""
    return (FUNCTION_START_PHASE - length) & (_BRANCH_BOUNDARY - 1)


class _ModuleCompiler:
    """Compiles the defined functions ``first`` .. ``last - 1`` of a module
    (all of them, or one process's run) into a :class:`_Chunk`."""

    def __init__(self, info: ModuleInfo, debug: bool, first: int, last: int, *, use_c: bool | None = None):
        self.info = info
        self.first, self.last = first, last
        self.debug = debug
        self.layout = VMContextLayout.for_module(info)
        self.asm = Assembler()
        self.asm.branch_boundary = _BRANCH_BOUNDARY
        self.num_imported = info.num_imported_funcs
        self.func_types = info.all_func_types
        self.templates: dict = {}
        #: frame size -> _new_mirror_list's memo (see _compile_function)
        self.mirror_memo: dict[int, tuple[dict, list]] = {}
        self.site_offsets = array("I")  # image offsets of the patch sites
        self.trap_call_fields = array("I")
        self.func_labels: dict[int, Label] = {}
        #: (rel32 field, defined function index) of calls to functions of other runs
        self.calls: list[tuple[int, int]] = []
        self.jump_tables: list[tuple[Label, list[Label]]] = []
        # Per-function state (reset by _compile_function).
        self.seq = 0
        self.seqpoints: list = []
        self.trap_fields: list = []
        self.ctls: list[_Ctl] = []
        self.nsave = 0
        self.nlocals = 0
        self.validator: FuncValidator | None = None
        self.instrs: list[Instr] = []
        self.cache = RegCache()
        #: Where the last constant's ``mov r32, imm32`` ends (its slot store
        #: starts there), or -1: a *producer carrier* may be made of it
        #: (_defer_carrier_store).  Taken by the next deferral either way.
        self.producer_end = -1
        #: Cache locations whose slot holds xmm0's value (numeric.py "xmm0
        #: reuse"): a guess the float templates verify, so it may be stale.
        self.xmm0_locs: set[int] = set()
        self.handlers = _HANDLERS
        self.cache_aware, self.scratch_only = _CACHE_AWARE, _SCRATCH_ONLY
        self.xmm_result_only, self.xmm_untouched = _XMM_RESULT_ONLY, _XMM_UNTOUCHED
        #: The C core (ccore.py), tried first for each function; None: Python only.
        self.ccore = (CFunctionCompiler(info, debug, self)
                      if (c_compiler_enabled() if use_c is None else use_c) else None)
        #: With the C core, the frame table's pools are kept in C (it interns
        #: its functions' lists there; Python's go through ccore.pools).
        self.builder = FrameTableBuilder(debug=debug, pools=None if self.ccore is None else self.ccore.pools)
        #: (rel32 field, defined function index) of the C core's direct calls,
        #: resolved by compile_chunk once every function of the run has a place.
        self.c_calls: list[tuple[int, int]] = []
        self.c_functions = self.c_body_bytes = 0

    # ------------------------------------------------------------------ module

    def compile_chunk(self, bodies: list[list[Instr]] | None = None) -> _Chunk:
        """Compile the run (``bodies``: its decoded bodies, else decoded here)."""
        info, first, last = self.info, self.first, self.last
        asm = self.asm
        self.func_labels = {index: asm.new_label() for index in range(first, last)}
        ccore = self.ccore
        try:
            for index in range(first, last):
                if ccore is not None and self._compile_function_c(index):
                    continue
                self._compile_function(index, info.read_body(index) if bodies is None else bodies[index - first])
        finally:
            if ccore is not None:
                ccore.close()
        asm.finish()
        starts = [asm.label_offset(self.func_labels[index])
                  for index in range(first, last)]
        for field, callee in self.c_calls:
            if first <= callee < last:
                struct.pack_into("<i", asm.code, field, starts[callee - first] - (field + 4))
            else:  # in another process's run: linked by _link
                self.calls.append((field, callee))
        if ccore is not None:
            log.debug("C core: %d of %d functions (%d body bytes); Python for opcodes %s",
                      self.c_functions, last - first, self.c_body_bytes,
                      {f"{op:#x}": count for op, count in ccore.fallbacks.items()})
        return _Chunk(bytes(asm.code), starts, self.calls, self.trap_call_fields, self.site_offsets,
                      self.builder.pack(), self.c_functions, self.c_body_bytes)

    def _compile_function_c(self, index: int) -> bool:
        """Compile defined function ``index`` with the C core; False if it
        does not handle the body (then nothing was emitted)."""
        info = self.info
        type_index = info.func_type_indices[index]
        if type_index >= len(info.types):
            return False  # the Python compiler reports it
        body = info.codes[index]
        ft = info.types[type_index]
        local_types = ft.params + body.locals
        asm = self.asm
        code = asm.code
        start = len(code) + _function_start_padding(len(code))
        fn = self.ccore.compile(index, local_types, start)
        if fn is None:
            return False
        code += b"\xcc" * (start - len(code))
        asm.bind(self.func_labels[index])
        code += fn.code
        self.site_offsets += fn.sites
        self.trap_call_fields += fn.trap_calls
        self.c_calls += ((start + field, callee) for field, callee in fn.calls)
        self.builder.add_function(FunctionBuild(
            native_start=start,
            native_size=fn.native_size,
            wasm_index=self.num_imported + index,
            frame_size=fn.frame_size,
            body_wasm_offset=body.body_offset,
            stack_base=-fn.frame_size,
            packed_locals=fn.locals,
            packed_seqpoints=PackedPoints(fn.seqpoints, []),
        ))
        self.c_functions += 1
        self.c_body_bytes += body.end_offset - body.body_offset
        return True

    def _template_for_c(self, fields: list[int], at: int) -> tuple[bytes, tuple, int, bool]:
        """``(code, traps, hazard mask, ends with a carrier store)`` of the template the C core asks for
        (ccore.py): ``fields`` its kind (csrc/codemem_compile.c K_*) and
        numbers, ``at`` -1 for the template as made, else the code offset mod
        32 it is padded for (``_emit``'s variant).  The keys, builders and
        cache are ``_emit``'s, so both compilers share them."""
        key, build, args = self._c_template_key(fields)
        t = self.templates.get(key)
        if t is None:
            t = self._template(key, build, *args)
        if at >= 0:
            t = self._template_padded_for(key, build, args, t, at)
        return t[0], t[1], t[2], t[5]

    def _template_padded_for(self, key, build, args: tuple, t, at: int):
        """Template ``t`` (built for ``key``) padded so that no branch in it
        crosses or ends at a 32-byte boundary when it starts at offset ``at``
        mod 32; cached under ``(key, at)``."""
        variant = self.templates.get((key, at))
        if variant is None:
            variant = _padded_template(t, at)
            if variant is None:  # a short jump out of range: build it padded
                variant = self._template((key, at), build, *args, origin=at)
            self.templates[(key, at)] = variant
        return variant

    def _c_template_key(self, fields: list[int]) -> tuple[tuple, object, tuple]:
        """``_emit``'s (key, builder, builder arguments) for a C template request."""
        kind, *f = fields
        reg = _c_reg
        if kind == _K_COPY:
            return ("copy", *f), _build_copy, tuple(f)
        if kind == _K_SAVE:
            return ("save", *f), _build_save, tuple(f)
        if kind == _K_RESTORE:
            return ("restore", *f), _build_restore, tuple(f)
        if kind == _K_EPILOGUE:
            return ("epilogue", *f), _build_epilogue, tuple(f)
        if kind == _K_TAKE_RESULT:
            return ("take_result", *f), _build_take_result, tuple(f)
        if kind == _K_UNREACHABLE:
            return ("unreachable",), _build_trap, (TrapCode.UNREACHABLE,)
        if kind == _K_SELECT:
            return ("select", *f), _build_select, tuple(f)
        if kind == _K_LOCAL_GET:
            d, index, local_reg, value, load = f
            args = (d, index, reg(local_reg), reg(value), bool(load))
            return ("local.get", *args), _build_local_get_reg, args
        if kind == _K_LOCAL_SET:
            d, index, value, load, keep = f
            args = (d, index, reg(value), bool(load), reg(keep))
            return ("local.set", *args), _build_local_set_reg, args
        if kind == _K_GLOBAL_GET:
            d, cell, value = f
            return ("global.get", d, cell, reg(value)), _build_global_get_reg, (d, cell, reg(value))
        if kind == _K_GLOBAL_SET:
            d, cell, wide = f
            return ("global.set", d, cell, bool(wide)), _build_global_set, (d, cell, bool(wide))
        if kind == _K_TO_SLOT:
            d, value = f
            return ("to_slot", d, reg(value)), _build_store_slot, (d, reg(value))
        if kind == _K_RNUM2:
            op, d, x, load_x, y, load_y, hint = f
            x, load_x, y, load_y, hint = reg(x), bool(load_x), reg(y), bool(load_y), _C_HINTS[hint]
            return (("rnum", op, d, x, load_x, y, load_y, hint), _build_numeric_reg,
                    (op, d - 2, x, load_x, y, load_y, hint))
        if kind == _K_RNUM1:
            op, d, x, load_x, hint = f
            x, load_x, hint = reg(x), bool(load_x), _C_HINTS[hint]
            return ("rnum", op, d, x, load_x, hint), _build_numeric_reg, (op, d - 1, x, load_x, None, False, hint)
        if kind == _K_LOAD:
            op, d, offset, address, load, base, load_base, length, load_length = f
            args = (op, d, offset, reg(address), bool(load),
                    (reg(base), bool(load_base), reg(length), bool(load_length)))
            return ("load", *args), _build_load_reg, args
        if kind == _K_STORE:
            op, d, offset, address, load_address, value, load_value, base, load_base, length, load_length = f
            args = (op, d, offset, reg(address), bool(load_address), reg(value), bool(load_value),
                    (reg(base), bool(load_base), reg(length), bool(load_length)))
            return ("store", *args), _build_store_reg, args
        if kind == _K_MEMORY_SIZE:
            return ("memory.size", *f), _build_memory_size, tuple(f)
        if kind == _K_CALL_IMPORT:
            return ("call_import", *f), _build_call_import, tuple(f)
        if kind == _K_CALL_INDIRECT:
            d, type_index, table_index = f
            base = d - 1 - len(self.info.types[type_index].params)
            return (("call_indirect", d, type_index, table_index), _build_call_indirect,
                    (d, base, self.layout.table(table_index), self.layout.type_id(type_index)))
        if kind == _K_MEMORY_GROW:
            (d,) = f
            args = (Libcall.MEMORY_GROW, (("i32", d - 1),), d - 1)  # _h_memory_grow's
            return ("libcall", *args), _build_libcall, args
        raise ValueError(f"unknown template kind {kind} from the C compiler")

    # ---------------------------------------------------------------- emission

    def _site(self) -> int:
        """A disabled patch site, padded so it does not straddle 8 bytes."""
        code = self.asm.code
        r = len(code) & 7
        off = len(code) + _SITE_PAD[r]
        code += _SITE_BYTES[r]
        self.site_offsets.append(off)
        return off

    def _instruction_site(self) -> int:
        """The patch site of an INSTRUCTION sequence point: the carrier store
        just emitted (Assembler.carrier_end) when it is still the last
        instruction and no label is bound after it (its bytes are the site's
        disabled form, and whoever takes the site's call performs the store:
        docs/compiler-speed.md), else a disabled NOP (:meth:`_site`).
        (The compile loop inlines the test; csrc/codemem_compile.c
        instruction_site decides alike.)"""
        if self.asm.carrier_end == len(self.asm.code):
            return self._carrier_site()
        return self._site()

    def _carrier_site(self) -> int:
        """Makes the carrier that ends the code (Assembler.carrier_end) the
        patch site, and returns its offset.  The carrier is the last
        instruction, so its bytes may still change (nothing refers to them or
        to anything after them):

        * ``mov [rsp], r64`` (4 bytes, ModRM mod=00) becomes its disp8 form
          with a disp8 of 0 (5 bytes): ``REX 89 04|r 24`` -> ``REX 89 44|r 24 00``;
        * a local's store ``mov [rbp+disp8], r64`` (4 bytes) gets one DS
          prefix, a ``mov r64, r64`` (3 bytes) two: 5 bytes each
          (frametable.CarrierStore);
        * a carrier starting at 4-7 mod 8 would straddle an 8-byte boundary:
          DS prefixes go before it, as before a NOP site (_site_bytes), so the
          5 bytes of the carrier proper start on a valid site offset and the
          prefixes stay part of its instruction, enabled (``3e .. e8 rel32``)
          or not."""
        asm = self.asm
        code = asm.code
        end = len(code)
        asm.carrier_end = -1
        kind = _carrier_kind(code)
        if kind == _SLOT_STORE_RSP:  # [rsp]: the SIB byte ends it
            code[end - 2] |= 0x40
            code.append(0)
            end += 1
        elif kind != _SLOT_STORE:
            length = kind & 0xFF
            own = SITE_SIZE - length  # the local store's or move's own DS prefixes
            code[end - length:end - length] = bytes([SITE_PAD_PREFIX]) * own
            end += own
        start = end - SITE_SIZE
        r = start & 7
        if r > 8 - SITE_SIZE:
            code[start:start] = bytes([SITE_PAD_PREFIX]) * (8 - r)
            start += 8 - r
        self.site_offsets.append(start)
        return start

    def _store_deferrable(self, op: int, d: int, last_point: int) -> bool:
        """Whether the carrier store that ends the code (Assembler.carrier_end)
        may become a deferred carrier (:meth:`_defer_carrier_store`) at the
        point of ``op`` (one of _DEFERRING) with ``d`` values on the stack:
        it is a slot store (not a local's store or a move), the previous
        sequence point (at ``last_point``) is not after the
        store's start (else the value is on the stack there too: an
        instruction between them emitted no code, and no site without
        debugging), it stores slot d-1 from the register that mirrors it, and ``op``'s
        code will read that register, never the slot (a unary operation's
        operand, or local.set's value, is that entry; a binary one's first
        operand is mirrored or gets a free register, so nothing evicts the
        entry first)."""
        code = self.asm.code
        kind = _carrier_kind(code)
        if kind != _SLOT_STORE and kind != _SLOT_STORE_RSP:
            return False
        end = len(code)
        start = end - kind
        disp = 0 if kind == _SLOT_STORE_RSP else code[end - 1]
        register = (code[start] & 4) << 1 | (code[start + 2] >> 3 & 7)
        cache = self.cache
        if last_point > start or disp != 8 * (d - 1) or cache.peek(d - 1) != register:
            return False
        return NUMERIC_ARITY.get(op) != 2 or cache.peek(d - 2) is not None or cache.free_register() is not None

    def _defer_carrier_store(self) -> int:
        """Leaves the carrier store that ends the code out (checked by
        :meth:`_store_deferrable`) and returns the point's offset.  Debug: the
        point's site is a *deferred carrier* (frametable.deferred_carrier_bytes:
        a NOP naming the store, which every stop there performs, as for a
        carrier store); without debugging there are no stops, so nothing is
        left.  The store is the last instruction: nothing refers to its bytes."""
        asm = self.asm
        if self.debug:
            code = asm.code
            store_start = len(code) - _carrier_kind(code)
            producer_end, self.producer_end = self.producer_end, -1
            if producer_end == store_start:
                return self._producer_site(store_start)
            start = self._carrier_site()
            store = carrier_store(bytes(asm.code[start:start + SITE_SIZE]))
            asm.code[start:start + SITE_SIZE] = deferred_carrier_bytes(store)
            return start
        code = asm.code
        del code[len(code) - _carrier_kind(code):]
        asm.carrier_end = -1
        return len(code)

    def _producer_site(self, store_start: int) -> int:
        """Debug: the deferrable slot store at ``store_start`` (the code's
        last instruction) stores the constant loaded right before it: the
        store is left out (as without debugging) and the constant's ``mov
        r32, imm32`` becomes the point's site, a *producer carrier*
        (frametable.CarrierStore): its 5 bytes ``b8+r imm32`` are the site, a
        REX.B before them stays a prefix of the site's instruction (enabled,
        ``41 e8 rel32`` is a call, REX.B ignored), and DS prefixes go before
        both when the 5 bytes would straddle 8 bytes.  A stop there loads the
        constant and stores it to the point's top slot (the frame table names
        slot and register).  Returns the site's offset."""
        asm = self.asm
        code = asm.code
        register = (code[store_start] & 4) << 1 | (code[store_start + 2] >> 3 & 7)
        del code[store_start:]
        asm.carrier_end = -1
        site = store_start - SITE_SIZE
        assert code[site] == 0xB8 | (register & 7) and (register < 8 or code[site - 1] == 0x41), "not the constant"
        r = site & 7
        if r > 8 - SITE_SIZE:
            at = site - (register >> 3)
            code[at:at] = bytes([SITE_PAD_PREFIX]) * (8 - r)
            site += 8 - r
        self.site_offsets.append(site)
        return site

    def _pad_for_return_site(self, call_length: int) -> None:
        """Debug only: NOPs before a call so that its return address (where the
        RETURN_POINT site goes) is a valid site offset, and the call stays off
        32-byte boundaries (Assembler.pad_for_branch; it then adds nothing)."""
        if self.debug:
            here = len(self.asm.code)
            pad = 0
            while ((here + pad + call_length) & 7) > 3 or ((here + pad) & 31) + call_length >= 32:
                pad += 1
            self.asm.nop(pad)

    def _instruction_point(self, ins: Instr, types: tuple) -> None:
        """The INSTRUCTION sequence point (and site) of ``ins`` with operand
        ``types``, recording the register cache state the code after it relies
        on.  (The compile loop inlines the same for ordinary instructions.)"""
        off = self._instruction_site() if self.debug else len(self.asm.code)
        self.seq = off
        state = self.cache.state()
        if state:
            self.seqpoints.append((off, ins.offset, _INSTRUCTION, types, state))
        else:
            self.seqpoints.append((off, ins.offset, _INSTRUCTION, types))

    def _return_point(self, ins: Instr) -> None:
        """The RETURN_POINT sequence point (and site) at the current offset, the
        return address of the call just emitted; the stack types are the ones
        after the call (results in place)."""
        off = self._site() if self.debug else len(self.asm.code)
        self.seqpoints.append((off, ins.offset, _RETURN_POINT, tuple(self.validator.operand_types)))

    def _template(self, key, build, *args, origin: int | None = None):
        """The cached template ``key``; ``build(a, *args)`` makes it on a miss.
        A template is ``(code, trap fields, hazard mask (_hazard_mask),
        relocations, branch units, carrier)``, positions relative to its
        start; ``carrier``: its last instruction is a carrier store no label
        of it is bound after (Assembler.carrier_end), which the next
        INSTRUCTION site may be.  ``origin``: the code offset (mod 32)
        it is made for, its branches padded off 32-byte boundaries there
        (Assembler.pad_for_branch); None: not padded, units only recorded."""
        t = self.templates.get(key)
        if t is None:
            a = TemplateAssembler()
            a.branch_boundary = _BRANCH_BOUNDARY
            a.origin = origin
            a.branch_units = []
            build(a, *args)
            units = tuple(a.branch_units)
            t = (a.finish(), tuple(a.traps), _hazard_mask(units), a.relocations() if units else (), units,
                 a.carrier_end == len(a.code))
            self.templates[key] = t
        return t

    def _emit(self, key, build, *args) -> None:
        """Append the cached template ``key`` (made by ``build(a, *args)`` on a
        miss) and register its trap fields against the current sequence point.
        Where the unpadded template would have a branch unit across or at the
        end of a 32-byte block, its variant padded for this offset is used
        instead: the bytes depend only on the key and the offset mod 32, never
        on what was compiled before (a module compiled in parts is the same)."""
        t = self.templates.get(key)
        if t is None:
            t = self._template(key, build, *args)
        code_bytes, traps, hazards = t[0], t[1], t[2]
        code = self.asm.code
        base = len(code)
        if hazards >> (base & (_BRANCH_BOUNDARY - 1)) & 1:
            variant = self._template_padded_for(key, build, args, t, base & (_BRANCH_BOUNDARY - 1))
            code_bytes, traps = variant[0], variant[1]
        if traps:
            seq = self.seq
            for pos, trap_code in traps:
                self.trap_fields.append((base + pos, seq, trap_code))
        code += code_bytes
        if t[5]:
            self.asm.carrier_end = len(code)

    def _trap_stubs(self) -> None:
        """Out-of-line trap stubs of the current function, one per (sequence
        point, trap code), and the jumps to them."""
        asm = self.asm
        code = asm.code
        stubs: dict[tuple[int, int | None], int] = {}
        for field, seq, trap_code in self.trap_fields:
            key = (seq, trap_code)
            stub = stubs.get(key)
            if stub is None:
                stub = len(code)
                stubs[key] = stub
                if trap_code == TrapCode.STACK_EXHAUSTED:
                    # mov rax, rsi: the argument array survives the lea below
                    # (abi.py "Traps": the stop at the ENTRY point shows it)
                    code += b"\x48\x89\xf0"
                # lea rsi, [rip + sequence point]  (abi.py "Traps")
                code += b"\x48\x8d\x35" + struct.pack("<i", seq - (len(code) + 7))
                if trap_code is None:
                    # mov edi, [rbp + libcall trap slot]: the runtime's code
                    asm.mov(RDI, _LIBCALL_TRAP, 32)
                else:
                    code += b"\xbf" + struct.pack("<I", int(trap_code))
                # call trap_veneer (patched once the veneers exist)
                asm.pad_for_branch(5)
                code += b"\xe8\0\0\0\0"
                self.trap_call_fields.append(len(code) - 4)
            struct.pack_into("<i", code, field, stub - (field + 4))

    # ---------------------------------------------------------------- function

    def _compile_function(self, index: int, instrs: list[Instr]) -> None:
        info = self.info
        debug = self.debug
        asm = self.asm
        code = asm.code
        body = info.codes[index]
        v = FuncValidator(info, index)
        self.validator = v
        ft = v.func_type
        local_types = v.local_types
        nparams = len(ft.params)
        self.nlocals = nlocals = len(local_types)
        self.nsave = 0
        self.trap_fields = []
        self.instrs = instrs
        seqpoints = self.seqpoints = []

        code += b"\xcc" * _function_start_padding(len(code))
        start = len(code)
        asm.bind(self.func_labels[index])
        # Prologue (abi.py "Function layout"): the frame setup, then the ENTRY
        # point (its patch site on 32 bytes, no padding: FUNCTION_START_PHASE).
        # The frame is set up first so that a debugger's prologue analyser
        # (gdb 13 amd64_analyze_prologue) sees a standard `push %rbp; mov
        # %rsp,%rbp` at the function's first byte, and the frame exists at the
        # ENTRY site (docs/stepping.md "Function layout").
        # The stack check comes before the frame is allocated, so a huge frame
        # never moves rsp into the guard page; frame_size is patched in once
        # the body is compiled.
        code += FRAME_SETUP
        entry = self._site() if debug else len(code)
        seqpoints.append((entry, body.body_offset, _ENTRY, ()))
        self.seq = entry
        code += b"\x48\x8d\x84\x24\0\0\0\0"  # lea rax, [rsp - (frame_size + extra)]
        check_field = len(code) - 4
        asm.mov(RCX, Mem(R15, VMCTX_STACK_CTX), 64)
        asm.cmp(RAX, Mem(RCX, STACK_CTX_STACK_LIMIT), 64)
        asm.pad_for_branch(6, True)
        code += b"\x0f\x82\0\0\0\0"  # jb <stack exhausted>
        self.trap_fields.append((len(code) - 4, entry, TrapCode.STACK_EXHAUSTED))  # frame set up: reported at ENTRY
        code += b"\x48\x81\xec\0\0\0\0"  # sub rsp, frame_size
        frame_field = len(code) - 4
        asm.mov(_ARGS_PTR, RSI, 64)
        for k in range(nparams):
            asm.mov(RAX, Mem(RSI, 8 * k), 64)
            asm.mov(Mem(RBP, local_offset(k)), RAX, 64)
        ndeclared = nlocals - nparams
        if ndeclared:
            asm.zero(RAX)
            if ndeclared <= _UNROLLED_ZEROING:
                for k in range(nparams, nlocals):
                    asm.mov(Mem(RBP, local_offset(k)), RAX, 64)
            else:
                asm.lea(RDI, Mem(RBP, local_offset(nlocals - 1)))
                asm.mov(RCX, ndeclared, 32)
                code += b"\xf3\x48\xab"  # rep stosq (DF is clear: SysV ABI, trampolines)

        fn_label = asm.new_label()
        self.ctls = ctls = [_Ctl("function", 0, len(ft.results), fn_label, ft.results)]
        handlers = self.handlers
        cache = self.cache
        cache.clear()
        self.producer_end = -1  # per function, as C's (offsets only grow, but a fallback starts afresh)
        cache_aware, scratch_only = self.cache_aware, self.scratch_only
        xmm0_locs = self.xmm0_locs
        xmm0_locs.clear()
        xmm_result_only, xmm_untouched = self.xmm_result_only, self.xmm_untouched
        deferring = _DEFERRING
        step = v.step
        control = v.control
        vals = v.operand_types  # the validator mutates this one list in place
        site_bytes, site_pad = _SITE_BYTES, _SITE_PAD
        add_site = self.site_offsets.append
        add_point = seqpoints.append
        max_depth = 0
        # The hot loop: _site() is inlined, and locals stand for attributes.
        for ins in instrs:
            op = ins.op
            top = ctls[-1]
            d = len(vals)
            if top.dead or control[-1].unreachable:
                self._dead(ins, op, top)
            elif op == _OP_END:
                self._end(ins, True)
            elif op == _OP_ELSE:
                self._else(ins, True)
            else:
                off = len(code)
                if asm.carrier_end == off and op in deferring and self._store_deferrable(op, d, seqpoints[-1][0]):
                    off = self._defer_carrier_store()
                elif debug:
                    if asm.carrier_end == off:  # _instruction_site
                        off = self._carrier_site()
                    else:
                        r = off & 7
                        off += site_pad[r]
                        code += site_bytes[r]
                        add_site(off)
                self.seq = off
                state = cache.state()
                if state:
                    add_point((off, ins.offset, _INSTRUCTION, tuple(vals), state))
                else:
                    add_point((off, ins.offset, _INSTRUCTION, tuple(vals)))
                step(ins)
                handlers[op](self, ins, d)
                if op not in cache_aware:
                    if op in scratch_only:
                        # Wrote at most the result slot with rax/rcx/rdx/xmm.
                        cache.truncate(len(vals) - 1)
                    else:
                        cache.clear()
                if op in xmm_result_only:
                    xmm0_locs.discard(len(vals) - 1)
                elif op not in xmm_untouched:
                    xmm0_locs.clear()
            if len(vals) > max_depth:
                max_depth = len(vals)
        v.finish()

        frame_size = _align16(FRAME_FIXED_SIZE + 8 * (nlocals + self.nsave + max_depth))
        # The points recorded cache states: now that frame_size is known, each
        # becomes its mirror list, interned in the frame table's pool in order
        # of first occurrence (consecutive points often share one state).
        memo = self.mirror_memo.get(frame_size)
        if memo is None:
            memo = self.mirror_memo[frame_size] = ({}, [{} for _ in range(len(Reg))])
        states = memo[0]
        builder = self.builder
        last_state = last_mirrors = None
        for k, point in enumerate(seqpoints):
            if len(point) == 5:
                off, wasm_offset, kind, types, state = point
                if state is not last_state:
                    last_state = state
                    last_mirrors = states.get(state)
                    if last_mirrors is None:
                        last_mirrors = _new_mirror_list(memo, builder, frame_size, state)
                seqpoints[k] = (off, wasm_offset, kind, types, last_mirrors)
        struct.pack_into("<i", code, check_field, -(frame_size + STACK_CHECK_EXTRA))
        struct.pack_into("<i", code, frame_field, frame_size)
        self._trap_stubs()
        fb = FunctionBuild(
            native_start=start,
            native_size=len(code) - start,
            wasm_index=self.num_imported + index,
            frame_size=frame_size,
            body_wasm_offset=body.body_offset,
            stack_base=-frame_size,
            locals=[(local_offset(i), int(t)) for i, t in enumerate(local_types)],
            seqpoints=seqpoints,
        )
        self.builder.add_function(fb)
        if self.jump_tables:
            # br_table's jump tables follow the function, outside its native
            # range (its code disassembles linearly), so each function's bytes
            # depend on nothing after it.
            asm.align(4, 0xCC)
            for table, targets in self.jump_tables:
                asm.bind(table)
                for target in targets:
                    asm.dd_label_diff(target, table)
            self.jump_tables = []

    # ----------------------------------------------------------- control flow

    def _dead(self, ins: Instr, op: int, top: _Ctl) -> None:
        """An instruction in dead code: validate, keep the control stack parallel."""
        v = self.validator
        if op == _OP_BLOCK or op == _OP_LOOP or op == _OP_IF:
            v.step(ins)
            self.ctls.append(_Ctl("dead", 0, 0, None, (), dead=True))
        elif op == _OP_END:
            if top.dead:
                v.step(ins)
                self.ctls.pop()
            else:
                self._end(ins, False)
        elif op == _OP_ELSE:
            if top.dead:
                v.step(ins)
            else:
                self._else(ins, False)
        else:
            v.step(ins)

    def _copy(self, src: int, dst: int, n: int) -> None:
        """Move operand slots [src, src+n) to [dst, dst+n) (dst <= src)."""
        if n and src != dst:
            self._emit(("copy", src, dst, n), _build_copy, src, dst, n)

    def _branch(self, target: _Ctl, d: int) -> None:
        """Unconditional branch to ``target``'s label from depth ``d``."""
        self._copy(d - target.arity, target.height, target.arity)
        self._edge_to(target)
        self.asm.jmp(target.label)

    def _edge_to(self, target: _Ctl) -> None:
        """Just before a jump to ``target``'s label (its values copied): a
        loop's header state is established, a forward edge's state recorded."""
        if target.kind == LOOP:
            self._establish(target.header)
        else:
            target.states.append(self.cache.state_below(target.height))

    def _establish(self, header: dict) -> None:
        """Emit register moves (flags untouched) after which each register of
        ``header`` (``{location: register}``) mirrors its location, and bind
        them.  A register already mirroring the location is copied; otherwise
        (or to break a cycle of copies) it is reloaded: slots are always
        up to date (write-through)."""
        cache = self.cache
        current = cache.snapshot()
        moves = {reg: (loc, current.get(loc)) for loc, reg in header.items() if current.get(loc) is not reg}
        if not moves:
            return
        asm = self.asm
        pending = dict(moves)
        while pending:
            # A register is the source of at most one move (it mirrors one
            # location): write first the destinations no pending move reads.
            sources = {src for _, src in pending.values() if src is not None}
            dst = next((r for r in pending if r not in sources), None)
            if dst is None:
                # Every destination is still read: a cycle; load one reader instead.
                blocked = next(iter(pending))
                reader = next(r for r, (_, src) in pending.items() if src is blocked)
                pending[reader] = (pending[reader][0], None)
                continue
            loc, src = pending.pop(dst)
            if src is not None:
                asm.mov(dst, src, 64)
            else:
                self._load_location(dst, loc)
        for reg, (loc, _) in moves.items():
            cache.bind(reg, loc)

    def _load_location(self, reg: Reg, loc: int) -> None:
        """``reg`` = the value of cache location ``loc`` from where it lives."""
        asm = self.asm
        if loc >= 0:
            asm.mov(reg, slot(loc), 64)
        elif loc == MEMORY_BASE:
            asm.mov(reg, Mem(R15, VMCTX_MEMORY_BASE), 64)
        elif loc == MEMORY_LENGTH:
            asm.mov(reg, Mem(R15, VMCTX_MEMORY_DEF), 64)
            asm.mov(reg, Mem(reg, MEMDEF_LENGTH), 64)
        else:
            asm.mov(reg, Mem(RBP, local_offset(-loc - 1)), 64)

    def _loop_header(self, ins: Instr) -> dict:
        """The cache state a loop's label assumes: the current entries of the
        locals its body reads (and memory's base and length if it accesses
        memory), so back edges re-establish only what the body may use."""
        instrs = self.instrs
        # Where the loop is in the body: offsets ascend along it.
        start = bisect.bisect_left(instrs, ins.offset, key=_offset_of)
        assert instrs[start] is ins
        reads: set[int] = set()
        memory = False
        depth = 0
        for k in range(start + 1, len(instrs)):
            op = instrs[k].op
            if op == _OP_LOCAL_GET:
                reads.add(instrs[k].imm)
            elif op == _OP_BLOCK or op == _OP_LOOP or op == _OP_IF:
                depth += 1
            elif op == _OP_END:
                if not depth:
                    break
                depth -= 1
            elif 0x28 <= op <= 0x3E:
                memory = True
        header = {}
        for loc, reg in self.cache.snapshot().items():
            if loc >= 0:
                continue  # operand-stack slots: rarely live across a loop
            if loc >= -self.nlocals:
                if -loc - 1 in reads:
                    header[loc] = reg
            elif memory:
                header[loc] = reg
        return header

    def _h_block(self, ins: Instr, d: int) -> None:
        frame = self.validator.control[-1]
        nparams = len(frame.start_types)
        if ins.op == _OP_LOOP:
            # The loop label is a control merge: keep what every back edge
            # will re-establish (_establish), a subset of the entry state.
            header = self._loop_header(ins)
            self.cache.restore(header)
            self.xmm0_locs.clear()
            label = self.asm.new_label()
            self.asm.align(_LOOP_ALIGN)  # NOPs run once per entry; every back edge lands aligned
            self.asm.bind(label)  # after the loop's site: a branch lands on the next instruction
            ctl = _Ctl(LOOP, frame.height, nparams, label, frame.end_types, nparams)
            ctl.header = header
            self.ctls.append(ctl)
        else:
            self.ctls.append(_Ctl("block", frame.height, len(frame.end_types), self.asm.new_label(),
                                  frame.end_types, nparams))

    def _h_if(self, ins: Instr, d: int) -> None:
        frame = self.validator.control[-1]
        nparams = len(frame.start_types)
        asm = self.asm
        ctl = _Ctl("if", frame.height, len(frame.end_types), asm.new_label(), frame.end_types, nparams)
        ctl.else_label = asm.new_label()
        if nparams:
            # The then-branch may overwrite the params; the else-branch needs them.
            ctl.save_offset = local_offset(self.nlocals + self.nsave + nparams - 1)
            self.nsave += nparams
            self._emit(("save", frame.height, ctl.save_offset, nparams), _build_save, frame.height,
                       ctl.save_offset, nparams)
        self.ctls.append(ctl)
        self._test_condition(d - 1)
        ctl.else_state = self.cache.snapshot()
        asm.jcc(Cond.E, ctl.else_label)

    def _else(self, ins: Instr, reachable: bool) -> None:
        ctl = self.ctls[-1]
        v = self.validator
        asm = self.asm
        cache = self.cache
        if reachable:
            self._instruction_point(ins, tuple(v.operand_types))
            asm.jmp(ctl.label)
            ctl.states.append(cache.snapshot())  # the then-branch's results are in place
        v.step(ins)
        ctl.else_seen = True
        asm.bind(ctl.else_label)
        cache.restore(ctl.else_state)
        self.xmm0_locs.clear()
        if ctl.nparams:
            cache.truncate(ctl.height)
            self._emit(("restore", ctl.height, ctl.save_offset, ctl.nparams), _build_restore, ctl.height,
                       ctl.save_offset, ctl.nparams)

    def _end(self, ins: Instr, fallthrough: bool) -> None:
        """``end`` of a frame entered in live code: its label(s) are bound before
        its sequence point, so branches to the frame land on it too.
        ``fallthrough``: the instruction before it is reachable."""
        ctl = self.ctls.pop()
        v = self.validator
        asm = self.asm
        cache = self.cache
        if ctl.kind == LOOP:
            if not fallthrough:  # nothing branches to a loop's end
                cache.clear()
        else:
            # The label is a control merge: keep the entries every edge agrees on.
            states = ctl.states
            if ctl.kind == "if" and not ctl.else_seen:
                states.append(ctl.else_state)
            if fallthrough:
                states.append(cache.snapshot())
            cache.restore(common_state(states))
            self.xmm0_locs.clear()
        if ctl.kind == "if" and not ctl.else_seen:
            asm.bind(ctl.else_label)
        if ctl.kind != LOOP:
            asm.bind(ctl.label)
        self._instruction_point(ins, tuple(v.operand_types[: ctl.height]) + tuple(ctl.end_types))
        v.step(ins)
        if ctl.kind == "function":
            key = _epilogue_key(self.validator.func_type)
            self._emit(key, _build_epilogue, *key[1:])

    def _test_condition(self, index: int) -> None:
        """Flags for an i32 condition in operand slot ``index`` (ZF=1: zero),
        from its mirror register when there is one; the slot is popped."""
        reg = self.cache.get(index)
        if reg is not None:
            self.asm.test(reg, reg, 32)
        else:
            self.asm.cmp(slot(index), 0, 32)
        self.cache.forget(index)

    def _h_br(self, ins: Instr, d: int) -> None:
        self._branch(self.ctls[-1 - ins.imm], d)

    def _h_return(self, ins: Instr, d: int) -> None:
        self._branch(self.ctls[0], d)

    def _h_br_if(self, ins: Instr, d: int) -> None:
        target = self.ctls[-1 - ins.imm]
        asm = self.asm
        n = target.arity
        src = d - 1 - n
        self._test_condition(d - 1)
        if n == 0 or src == target.height:
            # _establish only moves registers: the flags survive to the jcc
            # (and the fallthrough continues with the established state).
            self._edge_to(target)
            asm.jcc(Cond.NE, target.label)
        else:
            skip = asm.new_label()
            asm.jcc(Cond.E, skip)
            fallthrough = self.cache.snapshot()
            self._branch(target, d - 1)
            self.cache.restore(fallthrough)
            asm.bind(skip)

    def _h_br_table(self, ins: Instr, d: int) -> None:
        labels, default = ins.imm
        asm = self.asm
        ctls = self.ctls
        cache = self.cache
        index = d - 1
        state = cache.snapshot()

        def target_label(depth: int) -> Label:
            target = ctls[-1 - depth]
            if (target.arity == 0 or index - target.arity == target.height) and not (
                    target.kind == LOOP and target.header):
                if target.kind != LOOP:
                    target.states.append(cache.state_below(target.height))
                return target.label
            stub = stubs.get(depth)
            if stub is None:
                stub = stubs[depth] = asm.new_label()
            return stub

        stubs: dict[int, Label] = {}
        default_label = target_label(default)
        if labels:
            # The table itself goes after the function (outside its range, so
            # function code disassembles linearly).
            table = asm.new_label()
            asm.mov(RAX, slot(index), 32)
            asm.cmp(RAX, len(labels), 32)
            asm.jcc(Cond.AE, default_label)
            asm.lea(RCX, Mem.rip(table))
            asm.movsxd(RAX, Mem(RCX, 0, RAX, 4))
            asm.add(RAX, RCX, 64)
            asm.jmp_reg(RAX)
            self.jump_tables.append((table, [target_label(depth) for depth in labels]))
        else:
            asm.jmp(default_label)
        for depth, stub in stubs.items():
            asm.bind(stub)
            cache.restore(state)
            self._branch(ctls[-1 - depth], index)

    def _h_unreachable(self, ins: Instr, d: int) -> None:
        self._emit(("unreachable",), _build_trap, TrapCode.UNREACHABLE)

    def _h_nop(self, ins: Instr, d: int) -> None:
        pass

    # ------------------------------------------------------------------ calls

    def _h_call(self, ins: Instr, d: int) -> None:
        index = ins.imm
        ft = self.func_types[index]
        base = d - len(ft.params)
        asm = self.asm
        if index < self.num_imported:
            entry = self.layout.imported_func(index)
            self._emit(("call_import", base, entry), _build_call_import, base, entry)
            self._pad_for_return_site(2)
            asm.call_reg(RAX)
            self._return_point(ins)
            asm.mov(R15, _SAVED_CTX, 64)
            self._take_result(ft, base)
        else:
            asm.lea(RSI, slot(base))
            self._pad_for_return_site(5)
            callee = index - self.num_imported
            label = self.func_labels.get(callee)
            if label is not None:
                asm.call(label)
            else:  # in another process's run: linked by _link
                asm.pad_for_branch(5)
                asm.code += b"\xe8\0\0\0\0"
                self.calls.append((len(asm.code) - 4, callee))
            self._return_point(ins)
            self._take_result(ft, base)

    def _take_result(self, ft, base: int) -> None:
        """After a call's RETURN_POINT: result 0 from rax or xmm0 into its
        operand slot (abi.py "Results"), so a debugger that sets that
        register at the return point (gdb's ``return VALUE``) is what the
        caller computes with."""
        if ft.results:
            is_float = ft.results[0] in _FLOAT_TYPES
            self._emit(("take_result", base, is_float), _build_take_result, base, is_float)

    def _h_call_indirect(self, ins: Instr, d: int) -> None:
        type_index, table_index = ins.imm
        ft = self.info.types[type_index]
        base = d - 1 - len(ft.params)
        key = ("call_indirect", d, type_index, table_index)
        self._emit(key, _build_call_indirect, d, base, self.layout.table(table_index),
                   self.layout.type_id(type_index))
        self._pad_for_return_site(2)
        self.asm.call_reg(RAX)
        self._return_point(ins)
        self.asm.mov(R15, _SAVED_CTX, 64)
        self._take_result(ft, base)

    # -------------------------------------------------------------- variables

    def _h_drop(self, ins: Instr, d: int) -> None:
        self.cache.forget(d - 1)

    def _h_select(self, ins: Instr, d: int) -> None:
        self._emit(("select", d), _build_select, d)

    def _h_local_get(self, ins: Instr, d: int) -> None:
        cache = self.cache
        index = ins.imm
        loc = -(index + 1)  # local_location(index)
        if loc in self.xmm0_locs:
            self.xmm0_locs.add(d)
        else:
            self.xmm0_locs.discard(d)
        mirror = cache.get(loc)
        if mirror is not None:
            value = cache.alloc((mirror,))
            self._emit(("local.get", d, index, mirror, value, False), _build_local_get_reg, d, index, mirror, value, False)
            cache.bind(value, d)
            return
        value = cache.alloc()
        cache.bind(value, d)
        # Keep the local mirrored too when a register is free (it is read again
        # often: loop counters, addresses); a register-to-register mov is cheap.
        keep = cache.free_register((value,))
        self._emit(("local.get", d, index, keep, value, True), _build_local_get_reg, d, index, keep, value, True)
        if keep is not None:
            cache.bind(keep, loc)

    def _h_local_set(self, ins: Instr, d: int) -> None:
        cache = self.cache
        index = ins.imm
        loc = local_location(index)
        value, load = self.cache.use(d - 1)
        tee = ins.op == _OP_LOCAL_TEE
        if d - 1 in self.xmm0_locs:
            self.xmm0_locs.add(loc)
        else:
            self.xmm0_locs.discard(loc)
        keep = None
        cache.forget(loc)
        if tee:
            keep = cache.free_register((value,))
        self._emit(("local.set", d, index, value, load, keep), _build_local_set_reg, d, index, value, load, keep)
        if not tee:
            cache.bind(value, loc)  # the popped slot's register now mirrors the local
        elif keep is not None:
            cache.bind(keep, loc)

    def _h_global_get(self, ins: Instr, d: int) -> None:
        cell = self.layout.global_cell(ins.imm)
        value = self.cache.alloc()
        self._emit(("global.get", d, cell, value), _build_global_get_reg, d, cell, value)
        self.cache.bind(value, d)

    def _h_global_set(self, ins: Instr, d: int) -> None:
        cell = self.layout.global_cell(ins.imm)
        wide = self.info.all_globals[ins.imm].valtype not in (ValType.I32, ValType.F32)
        self._emit(("global.set", d, cell, wide), _build_global_set, d, cell, wide)

    # -------------------------------------------------------------- constants

    def _const(self, d: int, bits: int) -> None:
        """The constant (its unsigned bit pattern; i32/f32 zero-extended) in a
        cache register and slot d.  Most constants occur once, so a template
        per constant would cost more to build than it saves: the ``mov reg,
        imm`` is encoded in place and only the store to the slot is cached."""
        value = self.cache.alloc()
        self.asm.mov(value, bits, 64)
        if bits <= 0xFFFF_FFFF:  # ``[REX.B] b8+r imm32`` (asm._mov_reg_imm): a producer carrier's form
            self.producer_end = len(self.asm.code)
        self._emit(("to_slot", d, value), _build_store_slot, d, value)
        self.cache.bind(value, d)

    def _h_i32_const(self, ins: Instr, d: int) -> None:
        self._const(d, ins.imm & 0xFFFF_FFFF)

    def _h_i64_const(self, ins: Instr, d: int) -> None:
        self._const(d, ins.imm & 0xFFFF_FFFF_FFFF_FFFF)

    def _h_float_const(self, ins: Instr, d: int) -> None:
        self._const(d, ins.imm)

    def _h_numeric(self, ins: Instr, d: int) -> None:
        # Register form: operands in mirror registers, the result computed in
        # place in the first operand's register (its slot is the result slot).
        op = ins.op
        xmm0_locs = self.xmm0_locs
        if NUMERIC_ARITY[op] == 2:
            result = d - 2
            hint = ("x" if result in xmm0_locs and op in XMM_X_INPUT else
                    "y" if d - 1 in xmm0_locs and op in XMM_Y_INPUT else None)
            cache = self.cache
            x, load_x = cache.use(result)
            y, load_y = cache.use(d - 1, (x,))
            self._emit(("rnum", op, d, x, load_x, y, load_y, hint), _build_numeric_reg, op, result, x, load_x,
                       y, load_y, hint)
            cache.forget(d - 1)
        else:
            result = d - 1
            hint = "x" if result in xmm0_locs and op in XMM_X_INPUT else None
            x, load_x = self.cache.use(result)
            self._emit(("rnum", op, d, x, load_x, hint), _build_numeric_reg, op, result, x, load_x, None, False,
                       hint)
        after = XMM0_AFTER[op]
        if after == "result":
            xmm0_locs.clear()
            xmm0_locs.add(result)
        elif after == "x" and result in xmm0_locs:
            xmm0_locs.discard(result)  # the others still hold the operand's value
        elif after == "keep":
            xmm0_locs.discard(result)
        else:
            xmm0_locs.clear()

    # ----------------------------------------------------------------- memory

    def _memory_registers(self, avoid: tuple) -> tuple:
        """``(base, load_base, length, load_length)``: registers holding memory
        0's base and byte length (pseudo-locations of the cache), and whether
        the access's code must load them first."""
        base, load_base = self.cache.use(MEMORY_BASE, avoid)
        length, load_length = self.cache.use(MEMORY_LENGTH, avoid + (base,))
        return base, load_base, length, load_length

    def _h_load(self, ins: Instr, d: int) -> None:
        # The loaded value replaces the address in its slot and its register.
        offset = ins.imm[1]
        address, load = self.cache.use(d - 1)
        mem = self._memory_registers((address,))
        self._emit(("load", ins.op, d, offset, address, load, mem), _build_load_reg, ins.op, d, offset, address,
                   load, mem)
        if ins.op == _OP_F32_LOAD or ins.op == _OP_F64_LOAD:
            # _build_load_reg loaded the value into xmm0 too.
            self.xmm0_locs.clear()
            self.xmm0_locs.add(d - 1)

    def _h_store(self, ins: Instr, d: int) -> None:
        offset = ins.imm[1]
        address, load_address = self.cache.use(d - 2)
        value, load_value = self.cache.use(d - 1, (address,))
        mem = self._memory_registers((address, value))
        self._emit(("store", ins.op, d, offset, address, load_address, value, load_value, mem), _build_store_reg,
                   ins.op, d, offset, address, load_address, value, load_value, mem)
        self.cache.forget(d - 2)
        self.cache.forget(d - 1)

    def _h_memory_size(self, ins: Instr, d: int) -> None:
        self._emit(("memory.size", d), _build_memory_size, d)

    def _libcall(self, number: Libcall, operands: tuple, result: int | None) -> None:
        """Operands: ("imm", value) | ("i32", slot) | ("ref", slot), in wasm order;
        ``result``: the slot receiving the libcall's result, or None."""
        self._emit(("libcall", number, operands, result), _build_libcall, number, operands, result)

    def _h_memory_grow(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.MEMORY_GROW, (("i32", d - 1),), d - 1)

    def _h_memory_init(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.MEMORY_INIT, (("imm", ins.imm), ("i32", d - 3), ("i32", d - 2), ("i32", d - 1)),
                      None)

    def _h_data_drop(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.DATA_DROP, (("imm", ins.imm),), None)

    def _h_memory_copy(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.MEMORY_COPY, (("i32", d - 3), ("i32", d - 2), ("i32", d - 1)), None)

    def _h_memory_fill(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.MEMORY_FILL, (("i32", d - 3), ("i32", d - 2), ("i32", d - 1)), None)

    # ----------------------------------------------------------------- tables

    def _h_table_get(self, ins: Instr, d: int) -> None:
        table = self.layout.table(ins.imm)
        self._emit(("table.get", d, table), _build_table_get, d, table)

    def _h_table_set(self, ins: Instr, d: int) -> None:
        table = self.layout.table(ins.imm)
        self._emit(("table.set", d, table), _build_table_set, d, table)

    def _h_table_size(self, ins: Instr, d: int) -> None:
        table = self.layout.table(ins.imm)
        self._emit(("table.size", d, table), _build_table_size, d, table)

    def _h_table_grow(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.TABLE_GROW, (("imm", ins.imm), ("ref", d - 2), ("i32", d - 1)), d - 2)

    def _h_table_fill(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.TABLE_FILL, (("imm", ins.imm), ("i32", d - 3), ("ref", d - 2), ("i32", d - 1)),
                      None)

    def _h_table_copy(self, ins: Instr, d: int) -> None:
        dst_table, src_table = ins.imm
        self._libcall(Libcall.TABLE_COPY, (("imm", dst_table), ("imm", src_table), ("i32", d - 3),
                                           ("i32", d - 2), ("i32", d - 1)), None)

    def _h_table_init(self, ins: Instr, d: int) -> None:
        elem_index, table_index = ins.imm  # binary order: segment first
        self._libcall(Libcall.TABLE_INIT, (("imm", table_index), ("imm", elem_index), ("i32", d - 3),
                                           ("i32", d - 2), ("i32", d - 1)), None)

    def _h_elem_drop(self, ins: Instr, d: int) -> None:
        self._libcall(Libcall.ELEM_DROP, (("imm", ins.imm),), None)

    # ------------------------------------------------------------- references

    def _h_ref_null(self, ins: Instr, d: int) -> None:
        self._emit(("const", d, 0), _build_const, d, 0)

    def _h_ref_is_null(self, ins: Instr, d: int) -> None:
        self._emit(("ref.is_null", d), _build_ref_is_null, d)

    def _h_ref_func(self, ins: Instr, d: int) -> None:
        entry = self.layout.funcref(ins.imm)
        self._emit(("ref.func", d, entry), _build_load_ctx_field, d, entry)

    # --------------------------------------------------------------- dispatch

    @staticmethod
    def _cache_classes() -> tuple[frozenset, frozenset]:
        """Opcodes whose handlers keep the register cache right themselves, and
        opcodes whose code uses only rax/rcx/rdx/xmm scratch and writes at most
        the result slot (the compiler drops that slot's mirror); every other
        instruction empties the cache."""
        aware = {OP_BY_NAME[name] for name in (
            "nop", "block", "loop", "if", "br_if", "drop", "local.get", "local.set", "local.tee",
            "global.get", "i32.const", "i64.const", "f32.const", "f64.const")}
        aware.update(range(0x28, 0x3F))  # loads and stores
        aware.update(NUMERIC)
        scratch = {OP_BY_NAME[name] for name in (
            "global.set", "table.get", "table.set", "table.size", "memory.size", "ref.null",
            "ref.is_null", "ref.func")}
        scratch.update((0x1B, 0x1C))  # select
        return frozenset(aware), frozenset(scratch)

    @staticmethod
    def _xmm0_classes() -> tuple[frozenset, frozenset]:
        """For the xmm0 guess (numeric.py "xmm0 reuse"), besides the handlers
        that update it themselves (numeric, local.get/set/tee): instructions
        that write at most their result slot and no xmm register, and
        instructions that write neither (and bind no label); any other
        instruction forgets the guess."""
        result_only = {OP_BY_NAME[name] for name in (
            "i32.const", "i64.const", "f32.const", "f64.const", "global.get", "table.get", "table.size",
            "memory.size", "ref.null", "ref.is_null", "ref.func")}
        result_only.update(range(0x28, 0x36))  # loads
        result_only -= {_OP_F32_LOAD, _OP_F64_LOAD}  # _h_load sets the guess
        result_only.update((0x1B, 0x1C))  # select
        untouched = {OP_BY_NAME[name] for name in (
            "nop", "block", "if", "br_if", "drop", "global.set", "table.set", "local.get", "local.set",
            "local.tee")}
        untouched.update(range(0x36, 0x3F))  # stores
        untouched.update((_OP_F32_LOAD, _OP_F64_LOAD))
        untouched.update(NUMERIC)
        return frozenset(result_only), frozenset(untouched)

    @classmethod
    def _make_handlers(cls) -> dict:
        """Opcode -> handler, as plain functions ``handler(compiler, ins, d)``
        (built once: bound methods stored on the compiler would make every
        compiler a reference cycle that only the garbage collector frees)."""
        h = {}
        named = {
            "unreachable": cls._h_unreachable, "nop": cls._h_nop, "block": cls._h_block,
            "loop": cls._h_block, "if": cls._h_if, "br": cls._h_br, "br_if": cls._h_br_if,
            "br_table": cls._h_br_table, "return": cls._h_return, "call": cls._h_call,
            "call_indirect": cls._h_call_indirect, "drop": cls._h_drop,
            "local.get": cls._h_local_get, "local.set": cls._h_local_set, "local.tee": cls._h_local_set,
            "global.get": cls._h_global_get, "global.set": cls._h_global_set,
            "table.get": cls._h_table_get, "table.set": cls._h_table_set,
            "table.size": cls._h_table_size, "table.grow": cls._h_table_grow,
            "table.fill": cls._h_table_fill, "table.copy": cls._h_table_copy,
            "table.init": cls._h_table_init, "elem.drop": cls._h_elem_drop,
            "memory.size": cls._h_memory_size, "memory.grow": cls._h_memory_grow,
            "memory.init": cls._h_memory_init, "data.drop": cls._h_data_drop,
            "memory.copy": cls._h_memory_copy, "memory.fill": cls._h_memory_fill,
            "i32.const": cls._h_i32_const, "i64.const": cls._h_i64_const,
            "f32.const": cls._h_float_const, "f64.const": cls._h_float_const,
            "ref.null": cls._h_ref_null, "ref.is_null": cls._h_ref_is_null, "ref.func": cls._h_ref_func,
        }
        for name, fn in named.items():
            h[OP_BY_NAME[name]] = fn
        h[0x1B] = h[0x1C] = cls._h_select  # untyped and typed select
        for op in range(0x28, 0x36):
            h[op] = cls._h_load
        for op in range(0x36, 0x3F):
            h[op] = cls._h_store
        for op in NUMERIC:
            h[op] = cls._h_numeric
        return h


#: Template kinds of the C core's requests (csrc/codemem_compile.c, enum K_*).
(_K_COPY, _K_SAVE, _K_RESTORE, _K_EPILOGUE, _K_UNREACHABLE, _K_SELECT, _K_LOCAL_GET, _K_LOCAL_SET, _K_GLOBAL_GET,
 _K_GLOBAL_SET, _K_TO_SLOT, _K_RNUM2, _K_RNUM1, _K_LOAD, _K_STORE, _K_MEMORY_SIZE, _K_CALL_IMPORT,
 _K_CALL_INDIRECT, _K_TAKE_RESULT, _K_MEMORY_GROW) = range(1, 21)
#: The C core's xmm0 hint numbers -> numeric.py's.
_C_HINTS = (None, "x", "y")


def _c_reg(number: int) -> Reg | None:
    """A register number from the C core (-1: none)."""
    return None if number < 0 else Reg(number)


_HANDLERS = _ModuleCompiler._make_handlers()
#: Instructions whose point may defer the store of their last operand
#: (_ModuleCompiler._store_deferrable): they pop it, read it from its mirror
#: register, and cannot trap (a trap stop there would see the slot without a
#: site's call having stored it): numeric instructions but divisions and
#: trapping truncations, and local.set (not local.tee: its value stays).
_DEFERRING = frozenset(NUMERIC) - frozenset(OP_BY_NAME[f"{t}.{name}"] for t in ("i32", "i64") for name in (
    "div_s", "div_u", "rem_s", "rem_u", "trunc_f32_s", "trunc_f32_u", "trunc_f64_s", "trunc_f64_u")) | {
    OP_BY_NAME["local.set"]}
_CACHE_AWARE, _SCRATCH_ONLY = _ModuleCompiler._cache_classes()
_XMM_RESULT_ONLY, _XMM_UNTOUCHED = _ModuleCompiler._xmm0_classes()


# --------------------------------------------------------------------------
# Template builders (see numeric.py for the conventions)
# --------------------------------------------------------------------------


def _build_copy(a: TemplateAssembler, src: int, dst: int, n: int) -> None:
    for k in range(n):
        a.mov(RAX, slot(src + k), 64)
        a.mov(slot(dst + k), RAX, 64)


def _build_save(a: TemplateAssembler, height: int, save_offset: int, n: int) -> None:
    for k in range(n):
        a.mov(RAX, slot(height + k), 64)
        a.mov(Mem(RBP, save_offset + 8 * k), RAX, 64)


def _build_restore(a: TemplateAssembler, height: int, save_offset: int, n: int) -> None:
    for k in range(n):
        a.mov(RAX, Mem(RBP, save_offset + 8 * k), 64)
        a.mov(slot(height + k), RAX, 64)


def _build_take_result(a: TemplateAssembler, base: int, is_float: bool) -> None:
    if is_float:
        a.movq(slot(base), XMM0)
    else:
        a.mov(slot(base), RAX, 64)


def _epilogue_key(ft) -> tuple:
    """The epilogue template key of a function of type ``ft``: ("epilogue",
    number of results, result 0 is a float, the function has no result but a
    parameter)."""
    results = ft.results
    float_result = bool(results) and results[0] in _FLOAT_TYPES
    return ("epilogue", len(results), float_result, not results and bool(ft.params))


def _build_epilogue(a: TemplateAssembler, nresults: int, float_result: bool, param0_to_rax: bool) -> None:
    """Results into the argument array, and result 0 also where the System V
    ABI returns a scalar (abi.py "Results"): rax for i32/i64, xmm0 for
    f32/f64.  A function with no result leaves its first argument in rax
    (for clang's wasm32 C ABI, the pointer to a struct returned in memory:
    System V returns that pointer in rax, where gdb's ``finish`` looks)."""
    a.mov(RSI, _ARGS_PTR, 64)
    for k in reversed(range(nresults)):  # result 0 last: it stays in rax
        a.mov(RAX, slot(k), 64)
        a.mov(Mem(RSI, 8 * k), RAX, 64)
    if float_result:
        a.movq(XMM0, RAX)
    if param0_to_rax:
        a.mov(RAX, Mem(RSI, 0), 64)
    # Any branch padding goes before `mov rsp, rbp; pop rbp; ret` (5 bytes),
    # which stay together: gdbstub/images.py finds the epilogue by them.
    a.pad_for_branch(5)
    a.mov(RSP, RBP, 64)
    a.pop(RBP)
    a.ret()


def _build_trap(a: TemplateAssembler, code: int) -> None:
    a.trap_always(code)


def _build_const(a: TemplateAssembler, d: int, bits: int) -> None:
    """Store a constant given by its unsigned bit pattern (i32/f32 zero-extended)."""
    if bits <= 0x7FFF_FFFF or bits >= 0xFFFF_FFFF_8000_0000:
        a.mov(slot(d), bits, 64)  # sign-extended imm32 gives the same 64 bits
    else:
        a.mov(RAX, bits, 64)
        a.mov(slot(d), RAX, 64)


def _build_select(a: TemplateAssembler, d: int) -> None:
    x, y, c = slot(d - 3), slot(d - 2), slot(d - 1)
    a.mov(RAX, x, 64)
    a.mov(RCX, c, 32)
    a.test(RCX, RCX, 32)
    a.cmovcc(Cond.E, RAX, y, 64)
    a.mov(x, RAX, 64)


def _build_numeric_reg(a: TemplateAssembler, op: int, result: int, x: Reg, load_x: bool, y, load_y: bool,
                       hint: str | None) -> None:
    """A numeric instruction in register form (numeric.py): operands loaded into
    their cache registers if needed, the result in ``x`` and stored to its slot.
    ``hint``: which operand xmm0 probably holds (numeric.py "xmm0 reuse")."""
    a.xmm0_holds = hint
    if load_x:
        a.mov(x, slot(result), 64)
    if load_y:
        a.mov(y, slot(result + 1), 64)
    NUMERIC_OPERANDS[op](a, x, y)
    a.mov(slot(result), x, 64)


def _build_local_get_reg(a: TemplateAssembler, d: int, index: int, local_reg, value: Reg, load: bool) -> None:
    """local.get into ``value`` (and slot d); ``load``: from the local's slot,
    then copy to ``local_reg`` (if any) which mirrors the local; else from the
    local's mirror ``local_reg``."""
    if load:
        a.mov(value, Mem(RBP, local_offset(index)), 64)
        if local_reg is not None:
            a.mov(local_reg, value, 64)
    else:
        a.mov(value, local_reg, 64)
    a.mov(slot(d), value, 64)


def _build_local_set_reg(a: TemplateAssembler, d: int, index: int, value: Reg, load: bool, keep) -> None:
    """local.set/local.tee of ``value`` (loaded from slot d-1 first when
    ``load``); ``keep``: a tee's free register that will mirror the local.
    The last instruction is a carrier for the next point's site where it can
    be one (frametable.CarrierStore, docs/compiler-speed.md "Local and move
    carriers"): the store to a home within disp8 of rbp (a tee's copy to
    ``keep`` goes first), else a tee's copy to ``keep``."""
    if load:
        a.mov(value, slot(d - 1), 64)
    home = local_offset(index)
    near = home >= -128
    if keep is not None and near:
        a.mov(keep, value, 64)
    a.mov(Mem(RBP, home), value, 64)
    if keep is not None and not near:
        a.mov(keep, value, 64)
    if near or keep is not None:
        a.carrier_end = len(a.code)


def _build_store_slot(a: TemplateAssembler, d: int, value: Reg) -> None:
    a.mov(slot(d), value, 64)


def _build_global_get_reg(a: TemplateAssembler, d: int, cell: int, value: Reg) -> None:
    a.mov(RAX, Mem(R15, cell), 64)
    a.mov(value, Mem(RAX, 0), 64)
    a.mov(slot(d), value, 64)


def _build_global_set(a: TemplateAssembler, d: int, cell: int, wide: bool) -> None:
    # Cells of 32-bit globals are written zero-extended (a cell is a plain value).
    a.mov(RAX, Mem(R15, cell), 64)
    a.mov(RCX, slot(d - 1), 64 if wide else 32)
    a.mov(Mem(RAX, 0), RCX, 64)


def _build_load_ctx_field(a: TemplateAssembler, d: int, offset: int) -> None:
    a.mov(RAX, Mem(R15, offset), 64)
    a.mov(slot(d), RAX, 64)


def _build_ref_is_null(a: TemplateAssembler, d: int) -> None:
    x = slot(d - 1)
    a.zero(RAX)
    a.cmp(x, 0, 64)
    a.setcc(Cond.E, RAX)
    a.mov(x, RAX, 64)


# Memory accesses: opcode -> access size in bytes, and how to load/store.
_LOADS = {
    0x28: (4, "mov32"), 0x29: (8, "mov64"), 0x2A: (4, "mov32"), 0x2B: (8, "mov64"),
    0x2C: (1, "sx32"), 0x2D: (1, "zx"), 0x2E: (2, "sx32"), 0x2F: (2, "zx"),
    0x30: (1, "sx64"), 0x31: (1, "zx"), 0x32: (2, "sx64"), 0x33: (2, "zx"),
    0x34: (4, "sx64"), 0x35: (4, "mov32"),
}
_STORES = {0x36: 4, 0x37: 8, 0x38: 4, 0x39: 8, 0x3A: 1, 0x3B: 2, 0x3C: 1, 0x3D: 2, 0x3E: 4}


def _bounds_check(a: TemplateAssembler, address: Reg, offset: int, size: int, mem: tuple) -> Mem:
    """Trap unless the zero-extended i32 ``address`` + offset + size (33 bits,
    spec 4.4.7 "ea") is <= the memory's length; returns the access's operand
    (rax = the address, rdx = its end).
    ``mem``: (base register, load it?, length register, load it?) from the
    register cache (pseudo-locations), loaded here first if asked."""
    base, load_base, length, load_length = mem
    if load_length:
        a.mov(length, Mem(R15, VMCTX_MEMORY_DEF), 64)
        a.mov(length, Mem(length, MEMDEF_LENGTH), 64)
    if load_base:
        a.mov(base, Mem(R15, VMCTX_MEMORY_BASE), 64)
    a.mov(RAX, address, 32)
    end = offset + size
    if _fits_simm32(end):
        a.lea(RDX, Mem(RAX, end))
    else:
        a.mov(RDX, end, 64)
        a.add(RDX, RAX, 64)
    a.cmp(RDX, length, 64)
    a.trap_if(Cond.A, TrapCode.OUT_OF_BOUNDS_MEMORY)
    if _fits_simm32(offset):
        # Address from rax, not rdx: the access need not wait for the lea.
        return Mem(base, offset, RAX)
    return Mem(base, -size, RDX)


def _build_load_reg(a: TemplateAssembler, op: int, d: int, offset: int, reg: Reg, load: bool, mem: tuple) -> None:
    """A memory load: address in ``reg`` (loaded from slot d-1 first if
    ``load``), the value into ``reg`` and slot d-1; a float's also into xmm0
    (a second load in parallel: the next float instruction likely uses it,
    numeric.py "xmm0 reuse")."""
    size, how = _LOADS[op]
    if load:
        a.mov(reg, slot(d - 1), 64)
    m = _bounds_check(a, reg, offset, size, mem)
    if how == "mov32":
        a.mov(reg, m, 32)
        if op == _OP_F32_LOAD:
            a.movd(XMM0, m)
    elif how == "mov64":
        a.mov(reg, m, 64)
        if op == _OP_F64_LOAD:
            a.movq(XMM0, m)
    elif how == "zx":
        a.movzx(reg, m, 32, size * 8)
    elif how == "sx32":
        a.movsx(reg, m, 32, size * 8)
    else:
        a.movsx(reg, m, 64, size * 8)
    a.mov(slot(d - 1), reg, 64)


def _build_store_reg(a: TemplateAssembler, op: int, d: int, offset: int, address: Reg, load_address: bool,
                     value: Reg, load_value: bool, mem: tuple) -> None:
    size = _STORES[op]
    if load_address:
        a.mov(address, slot(d - 2), 64)
    if load_value:
        a.mov(value, slot(d - 1), 64)
    m = _bounds_check(a, address, offset, size, mem)
    a.mov(m, value, size * 8)


def _build_memory_size(a: TemplateAssembler, d: int) -> None:
    a.mov(RCX, Mem(R15, VMCTX_MEMORY_DEF), 64)
    a.mov(RAX, Mem(RCX, MEMDEF_LENGTH), 64)
    a.shr(RAX, 16, 64)  # bytes -> 64 KiB pages
    a.mov(slot(d), RAX, 64)


def _build_libcall(a: TemplateAssembler, number: int, operands: tuple, result: int | None) -> None:
    """abi.py "Libcalls": number and operands into the frame's libcall area, the
    host trampoline with r15 = the libcall HostContext, then the trap slot."""
    a.mov(_LIBCALL_SLOT0, int(number), 64)
    for k, (kind, value) in enumerate(operands, 1):
        area = Mem(RBP, FRAME_LIBCALL_AREA + 8 * k)
        if kind == "imm":
            if _fits_simm32(value):
                a.mov(area, value, 64)
            else:
                a.mov(RAX, value, 64)
                a.mov(area, RAX, 64)
        else:
            a.mov(RAX, slot(value), 32 if kind == "i32" else 64)
            a.mov(area, RAX, 64)
    a.mov(_LIBCALL_TRAP, 0, 64)
    a.mov(_SAVED_CTX, R15, 64)
    a.lea(RSI, _LIBCALL_SLOT0)
    a.mov(RAX, Mem(R15, VMCTX_HOST_TRAMPOLINE), 64)
    a.mov(R15, Mem(R15, VMCTX_LIBCALL_CTX), 64)
    a.call_reg(RAX)
    a.mov(R15, _SAVED_CTX, 64)
    a.cmp(_LIBCALL_TRAP, 0, 64)
    a.trap_if(Cond.NE, None)
    if result is not None:
        a.mov(RAX, _LIBCALL_SLOT0, 64)
        a.mov(slot(result), RAX, 64)


def _build_call_import(a: TemplateAssembler, base: int, entry: int) -> None:
    """Everything of an imported call up to ``call rax``."""
    a.mov(_SAVED_CTX, R15, 64)
    a.lea(RSI, slot(base))
    a.mov(RAX, Mem(R15, entry + IMPORTED_FUNC_CODE), 64)
    a.mov(R15, Mem(R15, entry + IMPORTED_FUNC_CTX), 64)


def _build_call_indirect(a: TemplateAssembler, d: int, base: int, table: int, type_id: int) -> None:
    """call_indirect up to ``call rax`` (spec 4.4.8): index >= table size ->
    undefined element, null -> uninitialized element, signature id mismatch ->
    indirect call type mismatch."""
    a.mov(RAX, slot(d - 1), 32)
    a.mov(RCX, Mem(R15, table), 64)
    a.cmp(RAX, Mem(RCX, TABLEDEF_SIZE), 64)
    a.trap_if(Cond.AE, TrapCode.UNDEFINED_ELEMENT)
    a.mov(RCX, Mem(RCX, TABLEDEF_ELEMENTS), 64)
    a.mov(RCX, Mem(RCX, 0, RAX, 8), 64)
    a.test(RCX, RCX, 64)
    a.trap_if(Cond.E, TrapCode.UNINITIALIZED_ELEMENT)
    a.mov(RAX, Mem(RCX, FUNCREF_TYPE_ID), 64)
    a.cmp(RAX, Mem(R15, type_id), 64)
    a.trap_if(Cond.NE, TrapCode.INDIRECT_CALL_TYPE_MISMATCH)
    a.mov(_SAVED_CTX, R15, 64)
    a.lea(RSI, slot(base))
    a.mov(RAX, Mem(RCX, FUNCREF_CODE), 64)
    a.mov(R15, Mem(RCX, FUNCREF_CTX), 64)


def _table_bounds(a: TemplateAssembler, index_slot: int, table: int) -> None:
    """rax = index, rcx = elements; trap out of bounds table access."""
    a.mov(RAX, slot(index_slot), 32)
    a.mov(RCX, Mem(R15, table), 64)
    a.cmp(RAX, Mem(RCX, TABLEDEF_SIZE), 64)
    a.trap_if(Cond.AE, TrapCode.OUT_OF_BOUNDS_TABLE)
    a.mov(RCX, Mem(RCX, TABLEDEF_ELEMENTS), 64)


def _build_table_get(a: TemplateAssembler, d: int, table: int) -> None:
    _table_bounds(a, d - 1, table)
    a.mov(RAX, Mem(RCX, 0, RAX, 8), 64)
    a.mov(slot(d - 1), RAX, 64)


def _build_table_set(a: TemplateAssembler, d: int, table: int) -> None:
    _table_bounds(a, d - 2, table)
    a.mov(RDX, slot(d - 1), 64)
    a.mov(Mem(RCX, 0, RAX, 8), RDX, 64)


def _build_table_size(a: TemplateAssembler, d: int, table: int) -> None:
    a.mov(RCX, Mem(R15, table), 64)
    a.mov(RAX, Mem(RCX, TABLEDEF_SIZE), 64)
    a.mov(slot(d), RAX, 64)
