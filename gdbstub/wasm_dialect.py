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

Stops are only ever shown at INSTRUCTION sequence points: a stop at a
function's ENTRY point (before its prologue: no frame yet) or at a call's
RETURN_POINT (which shares its wasm position with the next instruction) is
stepped on, inside the stub, to the next INSTRUCTION point.  So every wasm PC
lldb sees has one native place, every frame it sees has its slots, and a
single step always moves the wasm PC.

Errors are :class:`~gdbstub.target.TargetError` like the native dialect's,
so they become ``Exx`` replies in :meth:`GdbSession._dispatch`.
"""
from __future__ import annotations

import bisect
import logging
import struct
from dataclasses import dataclass, replace
from xml.sax.saxutils import quoteattr

from codemem.frametable import FunctionInfo, SequencePoint, SequencePointKind
from codemem.wasm.types import ValType

from .protocol import packets as P
from .protocol import replies as R
from .protocol.encoding import hex_encode
from .session import PACKET_SIZE, GdbSession, SessionConfig
from .target import EFAULT, EINVAL, ENOENT, EPERM, Stop, StopReason, StoreTarget, TargetError

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

#: Most frames a call stack lists (a runaway recursion stops at the guard page
#: long before, but a corrupt chain must not loop).
MAX_FRAMES = 100_000


def code_address(module_id: int, offset: int) -> int:
    """The wasm code address of byte ``offset`` of module ``module_id``'s file."""
    return CODE_SPACE | (module_id << _MODULE_SHIFT) | offset


def split_address(address: int) -> tuple[int, int, int]:
    """``(type, module_id, offset)`` of a wasm address; type 0 is linear
    memory, 1 code; anything else raises TargetError (EFAULT)."""
    kind = address >> _TYPE_SHIFT
    if kind not in (_TYPE_MEMORY, _TYPE_CODE):
        raise TargetError(EFAULT, f"{address:#x} is not a wasm memory or code address")
    return kind, (address >> _MODULE_SHIFT) & _MODULE_MASK, address & _OFFSET_MASK


def value_bytes(valtype: int, bits: int) -> bytes:
    """A value's bytes as the wasm dialect shows them (little-endian, sized by type)."""
    try:
        size = _VALUE_SIZE[ValType(valtype)]
    except (ValueError, KeyError):
        raise TargetError(EINVAL, f"value of unknown type {valtype:#x}") from None
    return (bits & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


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
        of any size costs a few bisects)."""
        offset = self.table.instruction_site_at_wasm_offset(wasm_offset)
        if offset is None:
            raise TargetError(EINVAL, f"no wasm instruction starts at module offset {wasm_offset:#x} of "
                                      f"{self.name} (breakpoints go at instruction boundaries in code)")
        return self.code.base + offset

    def function_at(self, pc: int) -> FunctionInfo | None:
        return self.table.function_at(self.code.offset_of(pc))

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
            raise TargetError(EFAULT, f"module offset {offset:#x} is past the end of {self.name} "
                                      f"({len(self.wasm):#x} bytes)")
        return self.wasm[offset:offset + length]

    def memory(self):
        if not self.instance.memories:
            raise TargetError(EFAULT, f"{self.name} has no linear memory")
        return self.instance.memories[0]


@dataclass
class WasmFrame:
    """One wasm frame of a stopped guest, innermost first.

    ``rbp`` is None for a frame stopped at its function's ENTRY point (before
    the prologue: its locals have no slots yet).  ``point`` is the sequence
    point whose operand stack describes the frame: the stop's own point for
    frame 0, the call's INSTRUCTION point for a caller."""

    view: WasmModuleView
    func: FunctionInfo
    native_pc: int
    wasm_offset: int
    rbp: int | None
    point: SequencePoint | None

    @property
    def pc(self) -> int:
        return code_address(self.view.module_id, self.wasm_offset)


class WasmSession(GdbSession):
    """One lldb client speaking the wasm dialect over a StoreTarget.

    Reuses the native session's framing, threads, execution control, detach
    and kill; replaces what depends on the architecture: registers (the PC),
    addresses (wasm code and memory spaces), breakpoints, the library list,
    host/process info, and adds the qWasm* queries."""

    def __init__(self, target: StoreTarget, config: SessionConfig | None = None):
        super().__init__(target, config)
        # No target.xml (lldb then asks qRegisterInfo), no ELF images, no svr4.
        self.capabilities = replace(self.capabilities, xfer_features=False, xfer_libraries=True,
                                    xfer_libraries_svr4=False, xfer_exec_file=False)
        self.negotiated = self.capabilities.negotiate({})
        self._views: list[WasmModuleView] | None = None
        # The reason and signal of a stop the stub stepped on from a
        # non-INSTRUCTION point (see the module docstring), shown on the stop
        # where that step ends.
        self._carried: tuple[StopReason, int] | None = None
        self._handlers.update({
            P.HostInfo: lambda r: f"triple:{_TRIPLE_HEX};endian:little;ptrsize:4;".encode(),
            P.VContQuery: lambda r: b"vCont;c;C;s;S",
            P.WasmCallStack: self._wasm_call_stack,
            P.WasmLocal: self._wasm_local,
            P.WasmGlobal: self._wasm_global,
            P.WasmStackValue: self._wasm_stack_value,
            P.WasmMemory: self._wasm_memory,
        })

    # ------------------------------------------------------------ modules

    def views(self) -> list[WasmModuleView]:
        """One view per instance of the Store, module id = its index."""
        instances = self.target.store.instances
        if self._views is None or len(self._views) != len(instances):
            self._views = [WasmModuleView(i, instance) for i, instance in enumerate(instances)]
        return self._views

    def view(self, module_id: int) -> WasmModuleView:
        views = self.views()
        if not 0 <= module_id < len(views):
            raise TargetError(ENOENT, f"no wasm module {module_id} (this Store has {len(views)})")
        return views[module_id]

    def view_at(self, pc: int) -> WasmModuleView | None:
        """The view whose native code contains ``pc``."""
        for view in self.views():
            if view.code.contains(pc):
                return view
        return None

    # ------------------------------------------------------------ frames

    def frames(self) -> list[WasmFrame]:
        """The stopped guest's wasm frames, innermost first (the rbp chain,
        as the compiler lays frames out: [rbp] the caller's rbp, [rbp+8] the
        return address; at an ENTRY point the return address is at [rsp])."""
        regfile = self.target.read_registers()  # raises unless stopped
        gpr = struct.unpack_from("<16QQ", regfile)
        pc, rbp, rsp = gpr[16], gpr[6], gpr[7]
        frames: list[WasmFrame] = []
        while len(frames) < MAX_FRAMES:
            view = self.view_at(pc)
            func = view.function_at(pc) if view is not None else None
            if func is None:
                break  # the host's entry trampoline: the end of the wasm stack
            at_entry = view.code.offset_of(pc) == func.native_start
            if not frames:
                point = view.point_at(pc)
                offset = self._stop_wasm_offset(view, func, pc, point)
            else:
                point = view.table.sequence_point_at_or_before(view.code.offset_of(pc) - 1)
                offset = view.wasm_offset_after_call(func, pc)
                if offset is None:
                    offset = point.wasm_offset if point is not None else func.body_wasm_offset
            frames.append(WasmFrame(view, func, pc, offset, None if at_entry else rbp, point))
            slot = rsp if at_entry else rbp + 8
            try:
                pc = struct.unpack("<Q", self.target.read_memory(slot, 8))[0]
                if not at_entry:
                    rbp = struct.unpack("<Q", self.target.read_memory(rbp, 8))[0]
            except TargetError:
                break
        return frames

    def _stop_wasm_offset(self, view: WasmModuleView, func: FunctionInfo, pc: int,
                          point: SequencePoint | None) -> int:
        if point is None:
            return func.body_wasm_offset
        if point.kind is SequencePointKind.RETURN_POINT:
            after = view.wasm_offset_after_call(func, pc)
            if after is not None:
                return after
        return point.wasm_offset

    def frame(self, index: int) -> WasmFrame:
        frames = self.frames()
        if not 0 <= index < len(frames):
            raise TargetError(EINVAL, f"frame {index} does not exist (the call stack has {len(frames)})")
        return frames[index]

    def _current_pc(self) -> int:
        frames = self.frames()
        if not frames:
            raise TargetError(ENOENT, "the guest is not stopped in wasm code")
        return frames[0].pc

    # ------------------------------------------------------------ stops

    def _needs_step_on(self, stop: Stop) -> bool:
        """True for a stop at an ENTRY or RETURN_POINT sequence point (see the
        module docstring); a trap is never stepped on (it unwinds)."""
        if stop.reason is StopReason.TRAP:
            return False
        view = self.view_at(stop.pc)
        point = view.point_at(stop.pc) if view is not None else None
        return point is not None and point.kind is not SequencePointKind.INSTRUCTION

    def _step_on(self, stop: Stop) -> None:
        if self._carried is None and stop.reason is not StopReason.STEP:
            self._carried = (stop.reason, stop.signal)
        self.target.step()
        self.waiting_for_stop = True

    def target_event(self) -> None:
        event = self.target.take_event()
        if event is None:
            return
        if isinstance(event, Stop) and self._needs_step_on(event):
            # Stepped on only when a client waits for this stop; otherwise
            # `?` does it when the client asks (see _halt_reason).
            if self.waiting_for_stop:
                self._step_on(event)
            return
        if isinstance(event, Stop) and self._carried is not None:
            event.reason, event.signal = self._carried
        self._carried = None
        if self.waiting_for_stop:
            self.waiting_for_stop = False
            self.conn.reply(self._event_reply(event))

    def _halt_reason(self, request) -> bytes | None:
        stop = self.target.current_stop
        if self.target.exited is None and stop is not None and self._needs_step_on(stop):
            self._step_on(stop)  # the entry stop: on to the function's first instruction
            return None
        return super()._halt_reason(request)

    def _stop_reply(self, stop: Stop) -> bytes:
        pc = self._current_pc()
        reason = "swbreak" if stop.reason == StopReason.BREAKPOINT and self.negotiated.swbreak else None
        extra: list[tuple[str, object]] = []
        if self.list_threads_in_stop_reply:
            extra.append(("threads", "%x" % self.target.tid))
            extra.append(("thread-pcs", "%x" % pc))
        if stop.reason == StopReason.TRAP and stop.trap_message:
            extra.append(("description", hex_encode(f"wasm trap: {stop.trap_message}".encode())))
        return R.stop_reply(stop.signal, self._thread_id(), {0: struct.pack("<Q", pc)}, reason, extra,
                            self._multiprocess)

    # ------------------------------------------------------------ info

    def _process_info(self, request) -> bytes:
        return f"pid:{self.target.pid:x};triple:{_TRIPLE_HEX};endian:little;ptrsize:4;".encode()

    def _register_info(self, request: P.RegisterInfo) -> bytes:
        if request.regnum != 0:
            return R.error(0x45, "no such register", self.error_strings)
        return PC_REGISTER_INFO.encode()

    def _xfer(self, request: P.XferRead) -> bytes:
        if request.object != "libraries" or request.annex:
            return R.empty()
        # lldb's DynamicLoaderWasmDYLD takes each library's section address
        # (decimal, as Wasmtime sends it) as where to read the module from.
        items = "".join(f"<library name={quoteattr(view.name)}><section address=\"{view.base_address}\"/>"
                        f"</library>" for view in self.views())
        document = f"<library-list>{items}</library-list>".encode()
        return R.qxfer_chunk(document, request.offset, request.length)

    # ------------------------------------------------------------ registers

    def _read_registers(self, request: P.ReadRegisters) -> bytes:
        self._check_thread(request.thread)
        return hex_encode(struct.pack("<Q", self._current_pc()))

    def _read_register(self, request: P.ReadRegister) -> bytes:
        self._check_thread(request.thread)
        if request.regnum != 0:
            raise TargetError(EINVAL, f"no register {request.regnum} (the wasm target has only the pc)")
        return hex_encode(struct.pack("<Q", self._current_pc()))

    def _write_registers(self, request) -> bytes:
        raise TargetError(EPERM, "the wasm pc cannot be written")

    _write_register = _write_registers

    # ------------------------------------------------------------ memory

    def read_wasm_memory(self, address: int, length: int) -> bytes:
        """Bytes at a wasm address: module file bytes or linear memory; a
        short read at the end of either, EFAULT when nothing is readable."""
        kind, module_id, offset = split_address(address)
        view = self.view(module_id)
        if kind == _TYPE_CODE:
            return view.read_code(offset, length)
        return self._read_linear(view, offset, length)

    def _read_linear(self, view: WasmModuleView, offset: int, length: int) -> bytes:
        memory = view.memory()
        size = memory.data_len
        if offset >= size:
            raise TargetError(EFAULT, f"linear memory offset {offset:#x} is past its end ({size:#x} bytes)")
        return memory.read(offset, min(length, size - offset))

    def _read_memory(self, request: P.ReadMemory) -> bytes:
        length = min(request.length, self._max_read())
        return hex_encode(self.read_wasm_memory(request.addr, length)) if length else b""

    def _read_memory_binary(self, request: P.ReadMemoryBinary) -> bytes:
        if request.length == 0:
            return R.ok()
        return self.read_wasm_memory(request.addr, min(request.length, self._max_read()))

    @staticmethod
    def _max_read() -> int:
        return PACKET_SIZE // 2

    def _write_memory(self, request) -> bytes:
        if len(request.data) != request.length:
            raise TargetError(EINVAL, f"length {request.length:#x} does not match the {len(request.data)} bytes sent")
        if not request.data:
            return R.ok()
        self.target.require_stopped()
        kind, module_id, offset = split_address(request.addr)
        view = self.view(module_id)
        if kind == _TYPE_CODE:
            raise TargetError(EPERM, "wasm code is read-only to the debugger")
        memory = view.memory()
        if offset + len(request.data) > memory.data_len:
            raise TargetError(EFAULT, f"write {offset:#x}+{len(request.data):#x} runs past the end of "
                                      f"linear memory ({memory.data_len:#x} bytes)")
        memory.write(offset, request.data)
        return R.ok()

    def _memory_region_info(self, request: P.MemoryRegionInfo) -> bytes:
        """The module bytes (r-x) or the linear memory (rw-) holding the
        address, else the unmapped gap up to the next region."""
        address = request.addr
        regions = []
        for view in self.views():
            regions.append((view.base_address, len(view.wasm), "rx", view.name))
            if view.instance.memories and view.instance.memories[0].data_len:
                regions.append((view.module_id << _MODULE_SHIFT, view.instance.memories[0].data_len, "rw",
                                f"{view.name} memory"))
        for start, size, perms, name in regions:
            if start <= address < start + size:
                return R.key_value_reply([("start", "%x" % start), ("size", "%x" % size),
                                          ("permissions", perms), ("name", hex_encode(name.encode()).decode())])
        following = [start for start, _, _, _ in regions if start > address]
        end = min(following) if following else 1 << 64
        return R.key_value_reply([("start", "%x" % address), ("size", "%x" % (end - address))])

    def _wasm_memory(self, request: P.WasmMemory) -> bytes:
        length = min(request.length, self._max_read())
        return hex_encode(self._read_linear(self.view(request.module_id), request.addr, length))

    # ------------------------------------------------------------ breakpoints

    def _native_site(self, address: int) -> int:
        kind, module_id, offset = split_address(address)
        if kind != _TYPE_CODE:
            raise TargetError(EINVAL, f"{address:#x} is a linear-memory address, not code")
        return self.view(module_id).native_site(offset)

    def _insert_breakpoint(self, request: P.InsertBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()
        self.target.insert_breakpoint(self._native_site(request.addr))
        return R.ok()

    def _remove_breakpoint(self, request: P.RemoveBreakpoint) -> bytes:
        if request.type not in (P.BreakpointType.SOFTWARE, P.BreakpointType.HARDWARE):
            return R.empty()
        self.target.remove_breakpoint(self._native_site(request.addr))
        return R.ok()

    # ------------------------------------------------------------ execution

    def _check_resume_address(self, addr: int | None) -> None:
        if addr is not None and self.target.current_stop is not None and addr != self._current_pc():
            raise TargetError(EINVAL, "resuming at another address is not supported")

    def _vcont(self, request: P.VCont) -> bytes | None:
        action = next((a for a in request.actions if self._known_thread(a.thread)), None)
        if action is not None and action.action == "r":
            raise TargetError(EINVAL, "vCont;r is not supported in the wasm dialect")
        return super()._vcont(request)

    # ------------------------------------------------------------ qWasm*

    def _wasm_call_stack(self, request: P.WasmCallStack) -> bytes:
        if request.tid is not None and request.tid != self.target.tid:
            raise TargetError(ENOENT, f"no thread {request.tid:x}")
        return R.wasm_call_stack_reply(frame.pc for frame in self.frames())

    def _frame_with_slots(self, index: int) -> tuple[WasmFrame, int]:
        frame = self.frame(index)
        if frame.rbp is None:
            raise TargetError(EINVAL, f"frame {index} is at its function's entry, before its prologue: "
                                      f"its values are not in their slots yet; step once")
        return frame, frame.rbp

    def _slot(self, rbp: int, frame_offset: int, valtype: int) -> bytes:
        bits = struct.unpack("<Q", self.target.read_memory(rbp + frame_offset, 8))[0]
        return value_bytes(valtype, bits)

    def _wasm_local(self, request: P.WasmLocal) -> bytes:
        frame, rbp = self._frame_with_slots(request.frame)
        slots = frame.view.table.locals(frame.func)
        if not 0 <= request.index < len(slots):
            raise TargetError(EINVAL, f"frame {request.frame} has {len(slots)} locals, not {request.index + 1}")
        slot = slots[request.index]
        return hex_encode(self._slot(rbp, slot.frame_offset, slot.valtype))

    def _wasm_stack_value(self, request: P.WasmStackValue) -> bytes:
        frame, rbp = self._frame_with_slots(request.frame)
        types = frame.point.stack_types if frame.point is not None else ()
        if not 0 <= request.index < len(types):
            raise TargetError(EINVAL, f"frame {request.frame}'s operand stack has {len(types)} values, "
                                      f"not {request.index + 1}")
        offset = frame.func.operand_slot_offset(request.index)
        return hex_encode(self._slot(rbp, offset, types[request.index]))

    def _wasm_global(self, request: P.WasmGlobal) -> bytes:
        frame = self.frame(request.frame)
        globals_ = frame.view.instance.globals
        if not 0 <= request.index < len(globals_):
            raise TargetError(EINVAL, f"{frame.view.name} has {len(globals_)} globals, not {request.index + 1}")
        global_ = globals_[request.index]
        return hex_encode(value_bytes(global_.type.valtype, int(global_.cell[0])))
