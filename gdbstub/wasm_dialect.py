"""LLDB's WebAssembly dialect of the remote protocol (``serve --dialect wasm``).

lldb's ``process connect --plugin wasm`` debugs a wasm32 target whose only
register is the PC and whose addresses are wasm addresses (LLDB
``lldb/source/Plugins/Process/wasm``, ``wasm_addr_t``):

* bits 63..62 = 0b01: a *code/object* address, ``0x4000000000000000 |
  module_id << 32 | offset``, ``offset`` being a byte offset in the module's
  file.  lldb reads the module itself (headers, code, DWARF) with ``m``
  packets at these addresses, starting at the one ``qXfer:libraries:read``
  gives; PCs, ``Z0`` breakpoints, stop replies and ``qWasmCallStack`` speak
  them too.
* bits 63..62 = 0b00: a *linear memory* address, ``module_id << 32 | offset``
  (module 0's memory is the plain offset, what clang's DWARF holds).

Values that live in no memory (locals, globals, the operand stack: clang's
``DW_OP_WASM_location``) are read with ``qWasmLocal:FRAME;INDEX``,
``qWasmGlobal:FRAME;INDEX`` and ``qWasmStackValue:FRAME;INDEX``; frames come
from ``qWasmCallStack:TID`` (the PCs, innermost first, little-endian u64).

Everything here is answered from the frame tables (codemem.frametable): a wasm
code offset maps to the INSTRUCTION sequence point compiled for it (its patch
site), a stop's native pc back to that point's wasm offset, and a frame's
locals and operand-stack values are its rbp-relative slots.  Frames are walked
along the rbp chain (codemem.abi "Function layout").

Stops are only ever shown at INSTRUCTION sequence points: a stop in a
function's frame setup (its first byte, where the target shows a step into
it and the session's first stop, codemem.abi "Function layout"), at its
ENTRY point (before its prologue: locals not in their slots yet) or at a call's
RETURN_POINT (which shares its wasm position with the next instruction) is
stepped on, inside the stub, to the next INSTRUCTION point.  So every wasm PC
lldb sees has one native place, every frame it sees has its slots, and a
single step always moves the wasm PC.  A watchpoint's report (a host
write stops at the call's RETURN_POINT) is carried to the stop shown.
Watchpoints name wasm memory addresses (:meth:`WasmDialect.watch_place`).

The dialect is a :class:`~gdbstub.dialect.Dialect` of the one session
(gdbstub.session): it answers what depends on the wasm view and adds the
qWasm* handlers; the session keeps framing, threads, execution control and
the many-Store bookkeeping.  Errors are :class:`~gdbstub.target.TargetError`
like the native dialect's, so they become ``Exx`` replies in one place.
"""
from __future__ import annotations

import bisect
import logging
import struct
from dataclasses import dataclass, replace
from typing import Any, Callable
from .protocol.xmltext import quoteattr

from codemem.errors import CompileError
from codemem.frames import MAX_FRAMES, Frame
from codemem.frametable import FunctionInfo, SequencePoint, SequencePointKind
from codemem.wasm.binary import read_uleb
from codemem.wasm.types import ValType

from .protocol import packets as P
from .protocol import replies as R
from .protocol.encoding import hex_encode
from .agent import WatchPlace
from .dialect import Dialect
from .session import PACKET_SIZE, GdbSession, SessionConfig
from .protocol.replies import ErrorCode
from .target import Stop, StopReason, StoreTarget, TargetError

log = logging.getLogger(__name__)

#: Address-type tag of code/object addresses (bits 63..62 = 0b01).
CODE_SPACE = 1 << 62
_TYPE_SHIFT = 62
_MODULE_SHIFT = 32
_MODULE_MASK = (1 << 30) - 1
_OFFSET_MASK = (1 << 32) - 1
_TYPE_MEMORY, _TYPE_CODE = 0, 1

#: lldb's triple for the plugin's targets (what Wasmtime's stub sends too).
WASM_TRIPLE = "wasm32-unknown-unknown-wasm"
_TRIPLE_HEX = WASM_TRIPLE.encode().hex()

#: The PC is register 0, 64 bits, in lldb's qRegisterInfo words.
PC_REGISTER_INFO = ("name:pc;alt-name:pc;bitsize:64;offset:0;encoding:uint;format:hex;"
                    "set:General Purpose Registers;gcc:16;dwarf:16;generic:pc;")

#: Bytes of a value of each type as qWasmLocal & co. answer it (the low bytes
#: of its 8-byte slot, little-endian); references are shown as their 64 bits.
_VALUE_SIZE = {ValType.I32: 4, ValType.F32: 4, ValType.I64: 8, ValType.F64: 8,
               ValType.FUNCREF: 8, ValType.EXTERNREF: 8}


#: How much of the stopped module's file a stop reply carries (see
#: WasmDialect.stop_reply_keys).
EXPEDITED_MODULE_BYTES = 0x200


def code_address(module_id: int, offset: int) -> int:
    """The wasm code address of byte ``offset`` of module ``module_id``'s file."""
    return CODE_SPACE | (module_id << _MODULE_SHIFT) | offset


def split_address(address: int) -> tuple[int, int, int]:
    """``(type, module_id, offset)`` of a wasm address; type 0 is linear
    memory, 1 code; anything else raises TargetError (MEMORY_FAULT)."""
    kind = address >> _TYPE_SHIFT
    if kind not in (_TYPE_MEMORY, _TYPE_CODE):
        raise TargetError(ErrorCode.MEMORY_FAULT, f"{address:#x} is not a wasm memory or code address")
    return kind, (address >> _MODULE_SHIFT) & _MODULE_MASK, address & _OFFSET_MASK


def value_bytes(valtype: int, bits: int) -> bytes:
    """A value's bytes as the wasm dialect shows them (little-endian, sized by type)."""
    try:
        size = _VALUE_SIZE[ValType(valtype)]
    except (ValueError, KeyError):
        raise TargetError(ErrorCode.EINVAL, f"value of unknown type {valtype:#x}") from None
    return (bits & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


#: Entries of a module view's memo of instruction sites by wasm offset.
_SITE_MEMO_ENTRIES = 4096


class WasmModuleView:
    """One instance of the Store as lldb sees it: module ``module_id``, its
    file bytes at ``code_address(module_id, 0)``, its memory 0, its globals,
    and the map between wasm code offsets and this Store's sequence points."""

    def __init__(self, module_id: int, instance):
        self.module_id = module_id
        self.instance = instance
        self.module = instance.module
        self.wasm: bytes = bytes(instance.module.wasm)
        self.code = instance.store_code
        self.table = self.code.frame_table
        #: wasm offset -> instruction_site (the table does not change): lldb
        #: sets and removes a breakpoint at the same few offsets every step.
        self._instruction_sites: dict[int, int | None] = {}
        #: native pc -> hides_pc (the code does not change either): a step
        #: stops at the same few pcs again and again.
        self._hidden_pcs: dict[int, bool] = {}
        #: The stop reply's expedited module head (expedited_memory), made once.
        self._expedited_memory: str | None = None

    def instruction_site(self, wasm_offset: int) -> int | None:
        """The frame table's ``instruction_site_at_wasm_offset``, memoized."""
        sites = self._instruction_sites
        if wasm_offset in sites:
            return sites[wasm_offset]
        if len(sites) >= _SITE_MEMO_ENTRIES:
            sites.clear()  # one-off lookups filled it: start over with what repeats
        offset = sites[wasm_offset] = self.table.instruction_site_at_wasm_offset(wasm_offset)
        return offset

    @property
    def name(self) -> str:
        """The library name lldb shows (``image list``).  Not a path: lldb
        would prefer a file of that name on disk to the bytes it reads here."""
        return f"{self.module.name}.wasm"

    @property
    def base_address(self) -> int:
        return code_address(self.module_id, 0)

    def native_site(self, wasm_offset: int) -> int:
        """The native pc of the patch site of the instruction at ``wasm_offset``
        (looked up in the frame table in place: lldb's first ``Z0`` on a module
        of any size costs a few bisects); at a function body's locals header,
        its first instruction's (see :meth:`body_at_locals_header`)."""
        offset = self.instruction_site(wasm_offset)
        if offset is None:
            func = self.body_at_locals_header(wasm_offset)
            if func is not None:
                offset = self.table.instruction_site_at_wasm_offset(func.body_wasm_offset)
        if offset is None:
            raise TargetError(ErrorCode.EINVAL, f"no wasm instruction starts at module offset {wasm_offset:#x} of "
                                      f"{self.name} (breakpoints go at instruction boundaries in code, or at a "
                                      f"function body's locals header)")
        return self.code.base + offset

    def body_at_locals_header(self, wasm_offset: int) -> FunctionInfo | None:
        """The function whose body's locals declarations start at
        ``wasm_offset`` (wasm spec 5.5.13: ``code ::= size func``, ``func ::=
        vec(locals) expr``), else None.  clang's DWARF gives a function's
        ``DW_AT_low_pc`` there (the body after its size) when the first
        instruction is not where its code starts, e.g. at -O2; lldb's wasm
        plugin then asks for a breakpoint at it, meaning the function's
        first instruction."""
        # The function after the one whose body holds wasm_offset (bodies are
        # in code order; the decoding below makes any other table miss, never
        # answer wrong).
        table = self.table
        before = table.function_at_wasm_offset(wasm_offset)
        position = 0 if before is None else before.position + 1
        if position >= table.num_functions:
            return None
        func = table.function(position)
        first_instruction = func.body_wasm_offset
        if first_instruction <= wasm_offset:
            return None
        try:
            count, pos = read_uleb(self.wasm, wasm_offset, first_instruction, 32)
            for _ in range(count):
                _, pos = read_uleb(self.wasm, pos, first_instruction, 32)
                pos += 1  # the value type
                if pos > first_instruction:
                    return None
        except CompileError:  # not a locals vector
            return None
        return func if pos == first_instruction else None

    def function_at(self, pc: int) -> FunctionInfo | None:
        return self.table.function_at(self.code.offset_of(pc))

    def hides_pc(self, pc: int) -> bool:
        """Whether a stop at ``pc`` (in this view's code) is one lldb cannot
        be shown: in a function's frame setup, or at an ENTRY or
        RETURN_POINT sequence point (WasmDialect.hides_stop); memoized."""
        hidden = self._hidden_pcs.get(pc)
        if hidden is None:
            if len(self._hidden_pcs) >= _SITE_MEMO_ENTRIES:
                self._hidden_pcs.clear()
            func = self.function_at(pc)
            if func is not None and self.code.offset_of(pc) < self.table.entry_offset(func):
                hidden = True  # push rbp / mov rbp, rsp: the step goes on through them
            else:
                point = self.point_at(pc)
                hidden = point is not None and point.kind is not SequencePointKind.INSTRUCTION
            self._hidden_pcs[pc] = hidden
        return hidden

    def expedited_memory(self) -> str:
        """``0xADDR=HEX``: the first :data:`EXPEDITED_MODULE_BYTES` of the
        module's file at its address, a stop reply's ``memory`` key."""
        if self._expedited_memory is None:
            self._expedited_memory = f"{self.base_address:#x}={self.wasm[:EXPEDITED_MODULE_BYTES].hex()}"
        return self._expedited_memory

    def point_at(self, pc: int) -> SequencePoint | None:
        """The sequence point at exactly native ``pc``, if one is there."""
        offset = self.code.offset_of(pc)
        point = self.table.sequence_point_at_or_before(offset)
        return point if point is not None and point.native_offset == offset else None

    def wasm_offset_after_call(self, func: FunctionInfo, return_pc: int) -> int | None:
        """A caller frame's position: the wasm offset of the instruction after
        the call that ``return_pc`` returns from (Wasmtime's convention too)."""
        table = self.table
        offsets = table.sequence_point_offsets(func)
        k = bisect.bisect_left(offsets, self.code.offset_of(return_pc))
        for index in range(k, len(offsets)):
            point = table.sequence_point(func.first_seqpoint + index)
            if point.kind is SequencePointKind.INSTRUCTION:
                return point.wasm_offset
        return None

    def read_code(self, offset: int, length: int) -> bytes:
        if offset >= len(self.wasm):
            raise TargetError(ErrorCode.MEMORY_FAULT, f"module offset {offset:#x} is past the end of {self.name} "
                                      f"({len(self.wasm):#x} bytes)")
        return self.wasm[offset:offset + length]

    def memory(self):
        if not self.instance.memories:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"{self.name} has no linear memory")
        return self.instance.memories[0]


@dataclass
class WasmFrame:
    """One wasm frame of a stopped guest, innermost first.

    ``rbp`` is None for a frame stopped in its function's frame setup.
    ``point`` is the sequence point whose operand stack describes the frame:
    the stop's own point for frame 0, the call's INSTRUCTION point for a
    caller.  ``walked`` is the target's frame it was made from."""

    view: WasmModuleView
    func: FunctionInfo
    native_pc: int
    wasm_offset: int
    rbp: int | None
    point: SequencePoint | None
    walked: Frame

    @property
    def pc(self) -> int:
        return code_address(self.view.module_id, self.wasm_offset)


def _kept_for_stop(kept: tuple[Any, int, list] | None, stop, limit: int) -> list | None:
    """The first ``limit`` items of ``kept`` (a memo ``(stop, limit it was
    made to, items)``) when it was made at ``stop`` and answers ``limit``: made
    to a higher limit, or ended before its own (the whole stack); else None."""
    if kept is None or stop is None or kept[0] is not stop:
        return None
    _, made_limit, items = kept
    return items[:limit] if limit <= made_limit or len(items) < made_limit else None


def _view_containing(views: list[WasmModuleView], pc: int) -> WasmModuleView | None:
    """The view of ``views`` whose native code contains ``pc``."""
    for view in views:
        if view.code.contains(pc):
            return view
    return None


class WasmDialect(Dialect):
    """LLDB's WebAssembly dialect as the session's dialect: the register file
    (the PC only), the address space (wasm code and memory spaces), the
    library list, host/process info, which stops can be shown, and the
    qWasm* queries as packet handlers.  Everything else (framing, threads,
    execution control, attach, detach, kill) is the one session's.  Per-Store
    state (the module views) is keyed by pid, so one dialect object serves
    every Store a session is attached to."""

    vcont_actions = b"vCont;c;C;s;S"

    def __init__(self) -> None:
        self._views: dict[int, list[WasmModuleView]] = {}
        #: pid -> {native pc: wasm addresses of breakpoints lldb placed at a
        #: locals header and that stop there} (see breakpoint_inserted)
        self._header_breakpoints: dict[int, dict[int, set[int]]] = {}
        #: pid -> (the stop, the limit walked to, its native frames): a stop
        #: reply asks for the innermost frame twice and qWasmCallStack for all
        #: of them, at the same stop.  The wasm dialect cannot write registers
        #: or the native stack, so a stop's frames stay what they were.
        self._walks: dict[int, tuple[Any, int, list]] = {}
        #: pid -> (the stop, the limit, its wasm frames before the header
        #: rule): made from the walk once per stop (_stop_frames).
        self._stop_frame_lists: dict[int, tuple[Any, int, list[WasmFrame]]] = {}

    def capabilities(self, capabilities: R.Capabilities) -> R.Capabilities:
        # No target.xml (lldb then asks qRegisterInfo), no ELF images, no svr4.
        return replace(capabilities, xfer_features=False, xfer_libraries=True,
                       xfer_libraries_svr4=False, xfer_exec_file=False)

    def handlers(self, session) -> dict[type, Callable]:
        return {
            P.WasmCallStack: lambda r: self._wasm_call_stack(session.target, r),
            P.WasmLocal: lambda r: self._wasm_local(session.target, r),
            P.WasmGlobal: lambda r: self._wasm_global(session.target, r),
            P.WasmStackValue: lambda r: self._wasm_stack_value(session.target, r),
            P.WasmMemory: lambda r: self._wasm_memory(session.target, r),
        }

    def forget(self, target: StoreTarget) -> None:
        self._views.pop(target.pid, None)
        self._header_breakpoints.pop(target.pid, None)
        self._walks.pop(target.pid, None)
        self._stop_frame_lists.pop(target.pid, None)

    # ------------------------------------------------------------ modules

    def views(self, target: StoreTarget) -> list[WasmModuleView]:
        """One view per instance of the Store, module id = its index."""
        target.require_open()
        instances = target.store.instances
        views = self._views.get(target.pid)
        if views is None or len(views) != len(instances):
            views = self._views[target.pid] = [WasmModuleView(i, instance) for i, instance in enumerate(instances)]
        return views

    def view(self, target: StoreTarget, module_id: int) -> WasmModuleView:
        views = self.views(target)
        if not 0 <= module_id < len(views):
            raise TargetError(ErrorCode.ENOENT, f"no wasm module {module_id} (this Store has {len(views)})")
        return views[module_id]

    def view_at(self, target: StoreTarget, pc: int) -> WasmModuleView | None:
        """The view whose native code contains ``pc``."""
        return _view_containing(self.views(target), pc)

    # ------------------------------------------------------------ frames

    def frames(self, target: StoreTarget, limit: int = MAX_FRAMES) -> list[WasmFrame]:
        """The stopped guest's wasm frames, innermost first (codemem.frames.walk),
        at most ``limit``.  A caller frame's pc is the instruction after its
        call (the frame's ``resume_wasm_offset``): lldb symbolicates a
        caller's pc at pc - 1."""
        frames = self._stop_frames(target, limit)
        headers = self._header_breakpoints.get(target.pid)
        stop = target.current_stop
        if frames and headers and stop is not None and stop.reason is StopReason.BREAKPOINT:
            addresses = headers.get(frames[0].native_pc)
            if addresses:
                # lldb recognises its breakpoint only at the address it
                # asked for: show the header it named.
                _, _, offset = split_address(min(addresses))
                frames[0] = replace(frames[0], wasm_offset=offset)
        return frames

    def _stop_frames(self, target: StoreTarget, limit: int) -> list[WasmFrame]:
        """:meth:`frames` before the header rule (a new list, at most
        ``limit``), made once per stop from its walk (:meth:`_native_frames`,
        to the outermost frame): the stop reply asks for frame 0, and
        qWasmCallStack right after it for all of them.  A list made to a
        higher limit, or one that ended before its limit, answers a lower
        limit too.  The header rule is not kept: lldb's breakpoints, which
        it depends on, change while the guest is stopped."""
        stop = target.current_stop
        kept = _kept_for_stop(self._stop_frame_lists.get(target.pid), stop, limit)
        if kept is not None:
            return kept
        made_limit = max(limit, MAX_FRAMES)
        frames = []
        views = self.views(target)  # (once for every frame: the stop's views do not change)
        for frame in self._native_frames(target, made_limit):
            view = _view_containing(views, frame.pc)
            if view is None:
                break
            frames.append(WasmFrame(view, frame.func, frame.pc, frame.resume_wasm_offset, frame.rbp, frame.point,
                                    frame))
        if stop is not None:
            self._stop_frame_lists[target.pid] = (stop, made_limit, frames)
        return frames[:limit]

    def _native_frames(self, target: StoreTarget, limit: int) -> list:
        """``target.frames(limit)`` (raises unless stopped), walked once per
        stop, and then to the outermost frame: lldb asks for the whole call
        stack (qWasmCallStack) right after every stop reply it gets, which
        asks for the innermost frame, so the first ask walks for both.  A
        walk to a higher limit, or one that reached the outermost frame,
        answers a lower limit too."""
        stop = target.current_stop
        kept = _kept_for_stop(self._walks.get(target.pid), stop, limit)
        if kept is not None:
            return kept
        if stop is None:
            return target.frames(limit)
        walked_limit = max(limit, MAX_FRAMES)
        native = target.frames(walked_limit)
        self._walks[target.pid] = (stop, walked_limit, native)
        return native[:limit]

    def frame(self, target: StoreTarget, index: int) -> WasmFrame:
        if index < 0:
            raise TargetError(ErrorCode.EINVAL, f"frame {index} does not exist")
        # Walked up to the frame asked for: a shorter list is the whole stack.
        frames = self.frames(target, index + 1)
        if index >= len(frames):
            raise TargetError(ErrorCode.EINVAL, f"frame {index} does not exist (the call stack has {len(frames)})")
        return frames[index]

    def current_pc(self, target: StoreTarget) -> int:
        # Asked twice for every stop reply: the stop's one walk answers both
        # (and the qWasmCallStack that follows, _native_frames).
        frames = self.frames(target, 1)
        if not frames:
            raise TargetError(ErrorCode.ENOENT, "the guest is not stopped in wasm code")
        return frames[0].pc

    # ------------------------------------------------------------ stops

    def hides_stop(self, target: StoreTarget, stop: Stop) -> bool:
        """True for a stop in a function's frame setup or at an ENTRY or
        RETURN_POINT sequence point (see the module docstring); a trap is
        never stepped on (it unwinds)."""
        if stop.reason is StopReason.TRAP:
            return False
        view = self.view_at(target, stop.pc)
        return view is not None and view.hides_pc(stop.pc)

    def stop_registers(self, target: StoreTarget, stop: Stop) -> tuple[dict[int, bytes], int]:
        pc = self.current_pc(target)
        return {0: struct.pack("<Q", pc)}, pc

    def stop_reply_keys(self, target: StoreTarget, stop: Stop) -> list[tuple[str, object]]:
        """The first :data:`EXPEDITED_MODULE_BYTES` of the stopped module's
        file, as expedited memory (``memory:0xADDR=HEX``, which lldb's stop
        reply parser puts in its memory cache, ProcessGDBRemote
        SetThreadStopInfo): lldb-22 reads exactly those bytes (``x
        MODULE,200``) after every stop of a step, one round trip of the
        seven or so a ``next`` costs (docs/stepping.md)."""
        try:
            # The module of current_pc (frame 0's): the view that holds the
            # innermost native frame's pc (the stop's walk is memoized).
            native = self._native_frames(target, 1)
            view = self.view_at(target, native[0].pc) if native else None
        except TargetError:
            return []
        if view is None:
            return []
        return [("memory", view.expedited_memory())]

    # ------------------------------------------------------------ info

    def host_info(self) -> str:
        # watchpoint_exceptions_received:after: a watchpoint stop comes after
        # the access (gdbstub.agent), as x86 debug registers do (lldbgdbremote.md).
        return f"triple:{_TRIPLE_HEX};endian:little;ptrsize:4;watchpoint_exceptions_received:after;"

    def process_info(self, target: StoreTarget) -> str:
        return f"pid:{target.pid:x};triple:{_TRIPLE_HEX};endian:little;ptrsize:4;"

    def register_info(self, regnum: int) -> str | None:
        return PC_REGISTER_INFO if regnum == 0 else None

    def xfer(self, target: StoreTarget, object_name: str, annex: str) -> bytes | None:
        if object_name != "libraries" or annex:
            return None
        # lldb's DynamicLoaderWasmDYLD takes each library's section address
        # (decimal, as Wasmtime sends it) as where to read the module from.
        items = "".join(f"<library name={quoteattr(view.name)}><section address=\"{view.base_address}\"/>"
                        f"</library>" for view in self.views(target))
        return f"<library-list>{items}</library-list>".encode()

    # ------------------------------------------------------------ registers

    def read_registers(self, target: StoreTarget) -> bytes:
        return struct.pack("<Q", self.current_pc(target))

    def read_register(self, target: StoreTarget, regnum: int) -> bytes:
        if regnum != 0:
            raise TargetError(ErrorCode.EINVAL, f"no register {regnum} (the wasm target has only the pc)")
        return struct.pack("<Q", self.current_pc(target))

    def write_registers(self, target: StoreTarget, data: bytes) -> None:
        raise TargetError(ErrorCode.EPERM, "the wasm pc cannot be written")

    def write_register(self, target: StoreTarget, regnum: int, value: bytes) -> None:
        raise TargetError(ErrorCode.EPERM, "the wasm pc cannot be written")

    # ------------------------------------------------------------ memory

    def read_memory(self, target: StoreTarget, address: int, length: int) -> bytes:
        """Bytes at a wasm address: module file bytes or linear memory; a
        short read at the end of either, MEMORY_FAULT when nothing is readable."""
        kind, module_id, offset = split_address(address)
        view = self.view(target, module_id)
        if kind == _TYPE_CODE:
            return view.read_code(offset, length)
        return self._read_linear(view, offset, length)

    @staticmethod
    def _read_linear(view: WasmModuleView, offset: int, length: int) -> bytes:
        memory = view.memory()
        size = memory.data_len
        if offset >= size:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"linear memory offset {offset:#x} is past its end "
                                                      f"({size:#x} bytes)")
        return memory.read(offset, min(length, size - offset))

    def write_memory(self, target: StoreTarget, address: int, data: bytes) -> None:
        target.require_stopped()
        kind, module_id, offset = split_address(address)
        view = self.view(target, module_id)
        if kind == _TYPE_CODE:
            raise TargetError(ErrorCode.EPERM, "wasm code is read-only to the debugger")
        memory = view.memory()
        if offset + len(data) > memory.data_len:
            raise TargetError(ErrorCode.MEMORY_FAULT, f"write {offset:#x}+{len(data):#x} runs past the end of "
                                                      f"linear memory ({memory.data_len:#x} bytes)")
        memory.write(offset, data)

    def memory_region_info(self, target: StoreTarget, address: int) -> list[tuple[str, str]]:
        """The module bytes (r-x) or the linear memory (rw-) holding the
        address, else the unmapped gap up to the next region."""
        regions = []
        for view in self.views(target):
            regions.append((view.base_address, len(view.wasm), "rx", view.name))
            if view.instance.memories and view.instance.memories[0].data_len:
                regions.append((view.module_id << _MODULE_SHIFT, view.instance.memories[0].data_len, "rw",
                                f"{view.name} memory"))
        for start, size, perms, name in regions:
            if start <= address < start + size:
                return [("start", "%x" % start), ("size", "%x" % size),
                        ("permissions", perms), ("name", hex_encode(name.encode()).decode())]
        following = [start for start, _, _, _ in regions if start > address]
        end = min(following) if following else 1 << 64
        return [("start", "%x" % address), ("size", "%x" % (end - address))]

    # ------------------------------------------------------------ breakpoints, execution

    def breakpoint_pc(self, target: StoreTarget, address: int) -> int:
        kind, module_id, offset = split_address(address)
        if kind != _TYPE_CODE:
            raise TargetError(ErrorCode.EINVAL, f"{address:#x} is a linear-memory address, not code")
        return self.view(target, module_id).native_site(offset)

    def breakpoint_inserted(self, target: StoreTarget, address: int, pc: int) -> None:
        """A breakpoint at a function's locals header (lldb at -O2: clang's
        ``DW_AT_low_pc``) is set at the first instruction; a stop there is
        then shown at the header, where lldb placed it: lldb-22 treats a
        SIGTRAP stop anywhere else as a signal, not as its breakpoint, and
        its batch mode stops running commands."""
        _, module_id, offset = split_address(address)
        view = self.view(target, module_id)
        if view.instruction_site(offset) is None:
            self._header_breakpoints.setdefault(target.pid, {}).setdefault(pc, set()).add(address)

    def breakpoint_removed(self, target: StoreTarget, address: int, pc: int) -> None:
        headers = self._header_breakpoints.get(target.pid, {})
        addresses = headers.get(pc)
        if addresses is not None:
            addresses.discard(address)
            if not addresses:
                del headers[pc]

    def check_range_step(self) -> None:
        raise TargetError(ErrorCode.EINVAL, "vCont;r is not supported in the wasm dialect")

    def watch_place(self, target: StoreTarget, address: int, length: int) -> WatchPlace:
        """A wasm memory address (``module_id << 32 | offset``) in the linear
        memory of the instance debugged (watchpoints cover that one memory)."""
        kind, module_id, offset = split_address(address)
        if kind != _TYPE_MEMORY:
            raise TargetError(ErrorCode.EINVAL, f"{address:#x} is a code address; watchpoints go on linear memory")
        memory = self.view(target, module_id).memory()
        if not target.instance.memories or memory is not target.instance.memories[0]:
            raise TargetError(ErrorCode.EINVAL, f"module {module_id}'s memory is not the memory of the "
                                                f"instance debugged")
        if length <= 0 or offset + length > memory.data_len:
            raise TargetError(ErrorCode.EINVAL, f"{address:#x}+{length:#x} is not inside linear memory "
                                                f"({memory.data_len:#x} bytes)")
        return WatchPlace(linear=offset)

    # ------------------------------------------------------------ qWasm*

    def _wasm_call_stack(self, target: StoreTarget, request: P.WasmCallStack) -> bytes:
        if request.tid is not None and request.tid != target.tid:
            raise TargetError(ErrorCode.ENOENT, f"no thread {request.tid:x}")
        return R.wasm_call_stack_reply(frame.pc for frame in self.frames(target))

    def _frame_with_slots(self, target: StoreTarget, index: int) -> tuple[WasmFrame, int]:
        frame = self.frame(target, index)
        if frame.rbp is None:
            raise TargetError(ErrorCode.EINVAL, f"frame {index} is at its function's entry, before its prologue: "
                                                f"its values are not in their slots yet; step once")
        return frame, frame.rbp

    @staticmethod
    def _slot(target: StoreTarget, rbp: int, frame_offset: int, valtype: int) -> bytes:
        bits = struct.unpack("<Q", target.read_memory(rbp + frame_offset, 8))[0]
        return value_bytes(valtype, bits)

    def _wasm_local(self, target: StoreTarget, request: P.WasmLocal) -> bytes:
        frame, rbp = self._frame_with_slots(target, request.frame)
        # One record read in place: -O0 entry functions of real programs have
        # thousands of locals, and lldb asks for one.
        slot = frame.view.table.local(frame.func, request.index)
        if slot is None:
            raise TargetError(ErrorCode.EINVAL, f"frame {request.frame} has {frame.func.num_locals} locals, "
                                                f"not {request.index + 1}")
        if frame.walked.before_body:
            return hex_encode(self._local_before_body(target, frame, slot))
        return hex_encode(self._slot(target, rbp, slot.frame_offset, slot.valtype))

    def _local_before_body(self, target: StoreTarget, frame: WasmFrame, slot) -> bytes:
        """A local of a frame stopped at its ENTRY point, which only a trap
        shows (the stack check's; other stops there are stepped on): the
        prologue has not run, so the slots are stale stack.  A parameter is
        still in the caller's argument array (codemem.abi), a declared local
        is zero (wasm spec 4.5.5, function invocation: locals start at their
        type's default value)."""
        func_type = frame.view.module.info.all_func_types[frame.func.wasm_index]
        if slot.index >= len(func_type.params):
            return value_bytes(slot.valtype, 0)
        array = target.argument_array(frame.walked)
        if array is None:
            raise TargetError(ErrorCode.EINVAL, f"the arguments of {frame.view.name}'s function "
                                                f"{frame.func.wasm_index} are not known at this stop")
        bits = struct.unpack("<Q", target.read_memory(array + 8 * slot.index, 8))[0]
        return value_bytes(slot.valtype, bits)

    def _wasm_stack_value(self, target: StoreTarget, request: P.WasmStackValue) -> bytes:
        frame, rbp = self._frame_with_slots(target, request.frame)
        types = frame.point.stack_types if frame.point is not None else ()
        if not 0 <= request.index < len(types):
            raise TargetError(ErrorCode.EINVAL, f"frame {request.frame}'s operand stack has {len(types)} values, "
                                                f"not {request.index + 1}")
        offset = frame.func.operand_slot_offset(request.index)
        return hex_encode(self._slot(target, rbp, offset, types[request.index]))

    def _wasm_global(self, target: StoreTarget, request: P.WasmGlobal) -> bytes:
        frame = self.frame(target, request.frame)
        globals_ = frame.view.instance.globals
        if not 0 <= request.index < len(globals_):
            raise TargetError(ErrorCode.EINVAL, f"{frame.view.name} has {len(globals_)} globals, "
                                                f"not {request.index + 1}")
        global_ = globals_[request.index]
        return hex_encode(value_bytes(global_.type.valtype, int(global_.cell[0])))

    def _wasm_memory(self, target: StoreTarget, request: P.WasmMemory) -> bytes:
        length = min(request.length, PACKET_SIZE // 2)
        return hex_encode(self._read_linear(self.view(target, request.module_id), request.addr, length))


class WasmSession(GdbSession):
    """A session speaking the wasm dialect: :class:`GdbSession` with a
    :class:`WasmDialect` (a convenience for code that makes one session by
    hand; servers pass ``SessionConfig(dialect_factory=WasmDialect)``)."""

    def __init__(self, targets, config: SessionConfig | None = None):
        config = replace(config or SessionConfig(), dialect_factory=WasmDialect)
        super().__init__(targets, config)
