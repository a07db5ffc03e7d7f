"""What a session consults for everything that depends on how the client sees
a Store: session extensions and dialects.

A :class:`SessionExtension` is one optional part of a session: the packet
handlers it adds (or replaces) and the qSupported features they need.  The
session (gdbstub.session) builds its handler table and its
:class:`~gdbstub.protocol.replies.Capabilities` from its base set plus each
extension, so a feature is advertised exactly when its handler is there (the
Rust gdbstub crate's model: optional features as methods that are absent by
default, qSupported derived from them).  To add a packet:

1. a request dataclass and its parser in gdbstub/protocol/packets.py;
2. a handler ``def handle(request) -> bytes | None`` in an extension's
   :meth:`SessionExtension.handlers` (or the session's base table);
3. if clients must be told, a field of ``Capabilities`` set in
   :meth:`SessionExtension.capabilities`.

An extension may also add keys to stop replies, console text before them,
and ``monitor`` commands.  The default extension besides the dialect is the
site agent's (gdbstub.agent_session: conditions, dprintf, watchpoints).

A :class:`Dialect` is the extension every session has exactly one of: the
architecture the client sees (register file, address space, libraries, how a
stop is shown).  :class:`NativeDialect` is x86-64 (gdb, lldb ``gdb-remote``);
gdbstub.wasm_dialect.WasmDialect is LLDB's WebAssembly dialect.  Every method
takes the :class:`~gdbstub.target.StoreTarget` the request resolved to, so one
dialect object serves every Store a session is attached to; per-Store caches
are keyed by pid and dropped in :meth:`Dialect.forget`.

Errors: methods raise :class:`~gdbstub.target.TargetError` (or
``arch_amd64.RegisterError`` for bad register input); the session maps them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from codemem.frametable import SequencePointKind

from . import arch_amd64, frame_bases
from .agent import WatchPlace
from .images import libraries_svr4_xml, libraries_xml, uses_x32_images
from .protocol import replies as R
from .protocol.encoding import hex_encode
from .protocol.replies import ErrorCode
from .target import Stop, TargetError

if TYPE_CHECKING:
    from .session import GdbSession
    from .target import StoreTarget

Handler = Callable[[object], "bytes | None"]
#: The end of frame_bases' window: read_memory asks frame_bases.in_window's
#: question of every `m` read without the call.
_WINDOW_END = frame_bases.WINDOW_START + frame_bases.WINDOW
#: The registers a native stop reply carries (gdb needs no `g` to build frame 0).
_EXPEDITED = (arch_amd64.RBP_REGNUM, arch_amd64.RSP_REGNUM, arch_amd64.RIP_REGNUM)


class SessionExtension:
    """An optional part of a session (see the module docstring)."""

    def capabilities(self, capabilities: R.Capabilities) -> R.Capabilities:
        """The capabilities with this extension's features set."""
        return capabilities

    def handlers(self, session: "GdbSession") -> dict[type, Handler]:
        """Request type -> handler; these replace the session's own."""
        return {}

    #: True when :meth:`stop_reply_keys` and :meth:`stop_console_text` add
    #: nothing to a stop without details (no ``watch``, no ``note``): the
    #: session asks such an extension only at stops with them.
    stop_keys_need_details: bool = False

    def stop_reply_keys(self, target: "StoreTarget", stop: Stop) -> list[tuple[str, object]]:
        """Keys this extension adds to ``stop``'s stop reply (GDB manual,
        "Stop Reply Packets": a client ignores keys it does not know)."""
        return []

    def stop_console_text(self, target: "StoreTarget", stop: Stop) -> str | None:
        """Console output to send just before ``stop``'s reply (gdb prints
        ``O`` packets as they arrive, before it shows the stop)."""
        return None

    #: Lines this extension adds to ``monitor help``.
    monitor_help: str = ""

    def monitor(self, session: "GdbSession", command: str, args: list[str]) -> str | None:
        """The output of ``monitor COMMAND ARGS`` when this extension has the
        command, else None."""
        return None

    def patch_lines(self, target: "StoreTarget") -> list[str]:
        """Lines this extension adds to ``monitor patches`` for ``target``."""
        return []


class Dialect(SessionExtension):
    """How the client sees a Store (see the module docstring).  Subclasses
    implement every method that raises NotImplementedError here."""

    #: The ``vCont?`` reply: the actions this dialect can carry out.
    vcont_actions: bytes = b"vCont;c;C;s;S;r"
    #: Whether breakpoint conditions and commands (agent bytecode, GDB manual
    #: "Agent Expressions", compiled by gdbstub.agent_x64) can run in this
    #: dialect: their register numbers are x86-64 ones.
    agent_expressions: bool = False

    def forget(self, target: "StoreTarget") -> None:
        """The session no longer debugs ``target``: drop what was cached for it."""

    # -- registers
    def read_registers(self, target: "StoreTarget") -> bytes:
        raise NotImplementedError

    def write_registers(self, target: "StoreTarget", data: bytes) -> None:
        raise NotImplementedError

    def read_register(self, target: "StoreTarget", regnum: int) -> bytes:
        raise NotImplementedError

    def write_register(self, target: "StoreTarget", regnum: int, value: bytes) -> None:
        raise NotImplementedError

    def register_info(self, regnum: int) -> str | None:
        """lldb's ``qRegisterInfo`` answer, None past the last register."""
        raise NotImplementedError

    # -- descriptions
    def host_info(self) -> str:
        raise NotImplementedError

    def process_info(self, target: "StoreTarget") -> str:
        raise NotImplementedError

    def xfer(self, target: "StoreTarget", object_name: str, annex: str) -> bytes | None:
        """The document of ``qXfer:OBJECT:read:ANNEX`` for ``target``; None
        when this dialect has none (the empty "unsupported" reply)."""
        return None

    # -- stops
    def stop_registers(self, target: "StoreTarget", stop: Stop) -> tuple[dict[int, bytes], int]:
        """(registers to expedite in the stop reply, the pc to show)."""
        raise NotImplementedError

    def hides_stop(self, target: "StoreTarget", stop: Stop) -> bool:
        """True for a stop the client cannot be shown where it is; the
        session then steps on to the next one it can (see WasmDialect)."""
        return False

    def current_pc(self, target: "StoreTarget") -> int:
        """The stopped guest's pc as the client knows it."""
        raise NotImplementedError

    # -- memory and breakpoints
    def read_memory(self, target: "StoreTarget", address: int, length: int) -> bytes:
        raise NotImplementedError

    def write_memory(self, target: "StoreTarget", address: int, data: bytes) -> None:
        raise NotImplementedError

    def memory_region_info(self, target: "StoreTarget", address: int) -> list[tuple[str, str]]:
        """lldb's ``qMemoryRegionInfo`` pairs for ``address``."""
        raise NotImplementedError

    def breakpoint_pc(self, target: "StoreTarget", address: int) -> int:
        """The native patch-site pc of a breakpoint the client places at ``address``."""
        raise NotImplementedError

    def breakpoint_inserted(self, target: "StoreTarget", address: int, pc: int) -> None:
        """The client's breakpoint at ``address`` is in, at native ``pc``."""

    def breakpoint_removed(self, target: "StoreTarget", address: int, pc: int) -> None:
        """The client removed its breakpoint at ``address`` (native ``pc``)."""

    def agent_registers(self, target: "StoreTarget", pc: int) -> dict | None:
        """What registers this dialect synthesizes hold at ``pc``, for agent
        expressions evaluated there (gdbstub.agent_x64.SiteRegisters); None:
        their fixed defaults."""
        return None

    def check_range_step(self) -> None:
        """Raises TargetError when ``vCont;r`` cannot be honoured."""

    def watch_place(self, target: "StoreTarget", address: int, length: int) -> WatchPlace:
        """What a watchpoint (``Z2``/``Z3``/``Z4``) on [address,
        address+length) of the client's view names in ``target``'s Store
        (gdbstub.agent); TargetError (EINVAL) when it names nothing
        watchable."""
        raise TargetError(ErrorCode.EINVAL, "watchpoints are not supported in this dialect")

    def image_paths(self, target: "StoreTarget") -> list[str]:
        """Files a client loads to see ``target``'s code (none by default)."""
        return []


def _stack_reader(target: "StoreTarget") -> Callable[[int], int]:
    """A u32 reader of ``target``'s memory (frame slots)."""
    return lambda address: int.from_bytes(target.read_memory(address, 4), "little")


class NativeDialect(Dialect):
    """An x86-64 target: amd64 registers (gdbstub.arch_amd64), native
    addresses, each Store's code as ELF debug images (gdbstub.images)."""

    agent_expressions = True

    def __init__(self, images=None):
        self.images = images  # gdbstub.images.DebugImageSet, or None (no libraries)
        # The innermost frame's es (_synthesized) at the last stop read:
        # (target, stop, writes, value), the target and stop by identity (two
        # stops at one pc, a recursive function's breakpoint hit again, are
        # equal Stop values); any write starts over.
        self._innermost_memo: tuple | None = None
        self._writes = 0

    def capabilities(self, capabilities: R.Capabilities) -> R.Capabilities:
        from dataclasses import replace
        with_images = self.images is not None
        return replace(capabilities, xfer_features=True, xfer_libraries=with_images,
                       xfer_libraries_svr4=with_images, xfer_exec_file=with_images)

    # -- registers
    def read_registers(self, target: "StoreTarget") -> bytes:
        return arch_amd64.regfile_to_g(target.read_registers(), self._synthesized(target))

    def _bind(self, target: "StoreTarget") -> None:
        """Gives ``target`` the C calling-convention records of its
        functions (gdbstub.c_abi, in the images): a ``finish`` out of a
        function returning a C aggregate and inferior calls passing them
        convert between System V and wasm32 with them."""
        if self.images is not None and target.function_abi is None and self._has_window(target):
            images = self.images
            target.function_abi = lambda entry, func: images.function_abis(
                entry.module, entry.engine_code).get(func.native_start)

    def write_registers(self, target: "StoreTarget", data: bytes) -> None:
        self._bind(target)
        regfile = bytearray(target.read_registers())
        arch_amd64.g_to_regfile(data, regfile, self._synthesized(target))
        self._writes += 1
        target.write_registers(bytes(regfile))

    def read_register(self, target: "StoreTarget", regnum: int) -> bytes:
        return arch_amd64.read_register(target.read_registers(), regnum, self._synthesized(target))

    def write_register(self, target: "StoreTarget", regnum: int, value: bytes) -> None:
        self._bind(target)
        regfile = bytearray(target.read_registers())
        arch_amd64.write_register(regfile, regnum, value, self._synthesized(target))
        self._writes += 1
        target.write_registers(bytes(regfile))

    def _synthesized(self, target: "StoreTarget") -> arch_amd64.Synthesized | None:
        """es = the innermost frame's C frame base where the guest is shown
        through x32 images (gdbstub.frame_bases), else nothing."""
        if not self._has_window(target):
            return None
        stop = target.current_stop
        memo = self._innermost_memo
        if memo is None or memo[0] is not target or memo[1] is not stop or memo[2] != self._writes:
            try:
                frames = target.frames(limit=1)
                value = frame_bases.innermost_frame_base(frames[0], self._frame_base_slot, _stack_reader(target)) \
                    if frames else 0
            except TargetError:
                # Registers a debugger is rewriting one by one (gdb's `return`
                # writes rbp, then rsp, then rip) need not describe a frame
                # until the last write: no frame, no frame base.
                value = 0
            memo = self._innermost_memo = (target, stop, self._writes,
                                           {arch_amd64.ES_REGNUM: value.to_bytes(4, "little")})
        return memo[3]

    def agent_registers(self, target: "StoreTarget", pc: int) -> dict | None:
        """es at a breakpoint's site: its function's frame-base slot (0
        before the function's first instruction), as ``g`` reports it there."""
        if not self._has_window(target):
            return None
        entry = target.store.registry.lookup(pc)
        func = entry.function_at(pc) if entry is not None else None
        if func is None:
            return None
        table = entry.store_code.frame_table
        point = table.sequence_point_at_or_before(entry.store_code.offset_of(pc))
        slot = self.images.frame_base_slots(entry.module, entry.engine_code).get(func.native_start)
        if slot is None or point is None or point.native_offset < func.native_start \
                or point.kind is SequencePointKind.ENTRY:
            # Up to the first wasm instruction (the frame setup, the ENTRY
            # site, the prologue; a breakpoint at the first byte runs at the
            # ENTRY site) the slot is stale stack: innermost_frame_base's 0.
            return {arch_amd64.ES_REGNUM: ("const", 0)}
        return {arch_amd64.ES_REGNUM: ("rbp_u32", slot)}

    def _frame_base_slot(self, frame) -> int | None:
        """The rbp offset of ``frame``'s frame-base slot (its image's
        frame-base section), or None when its frame base is no local."""
        return self.images.frame_base_slots(frame.entry.module, frame.entry.engine_code).get(frame.func.native_start)

    def register_info(self, regnum: int) -> str | None:
        return arch_amd64.register_info_reply(regnum)

    # -- descriptions
    def host_info(self) -> str:
        return arch_amd64.host_info_reply()

    def process_info(self, target: "StoreTarget") -> str:
        return arch_amd64.process_info_reply(target.pid)

    def xfer(self, target: "StoreTarget", object_name: str, annex: str) -> bytes | None:
        if object_name == "features":
            text = arch_amd64.feature_document(annex, x32=uses_x32_images(target.store))
            if text is None:
                raise TargetError(ErrorCode.ENOENT, f"no feature document {annex!r}")
            return text.encode()
        if self.images is None or object_name not in ("libraries-svr4", "libraries", "exec-file"):
            return None
        if object_name == "exec-file":
            # gdb loads this as the program (no "No executable" warning): the
            # runtime's image, the host process's own code (gdbstub.images).
            return self.images.executable(target.store).name.encode()
        # The Store's modules, each at its load bias (l_addr, gdbstub.images),
        # their files written first: a client that reads them from this file
        # system (SessionConfig.files_are_local) opens them next.
        build = libraries_svr4_xml if object_name == "libraries-svr4" else libraries_xml
        libraries = self.images.libraries(target.store)
        self.images.write_files(libraries)
        return build(libraries).encode()

    def image_paths(self, target: "StoreTarget") -> list[str]:
        """The files of ``target``'s debug images, each with the slide lldb's
        native view loads it at (``monitor stores``: ``target modules add`` /
        ``target modules load --slide``; the load bias, gdbstub.images)."""
        if self.images is None:
            return []
        lines = []
        for image in self.images.for_store(target.store):
            image.data  # on disk before a client is told to load it (made on first use)
            lines.append(f"{image.path} (target modules load --slide {image.load_bias:#x})")
        return lines

    # -- stops
    def stop_registers(self, target: "StoreTarget", stop: Stop) -> tuple[dict[int, bytes], int]:
        if target.function_abi is None:  # bound once (_bind): no call at the stops after
            self._bind(target)
        target.present_aggregate_return()
        return arch_amd64.read_registers(target.read_registers(), _EXPEDITED), stop.pc

    def current_pc(self, target: "StoreTarget") -> int:
        stop = target.current_stop
        if stop is None:
            raise TargetError(ErrorCode.EBUSY, "the guest is running")
        return stop.pc

    # -- memory and breakpoints
    def read_memory(self, target: "StoreTarget", address: int, length: int) -> bytes:
        if frame_bases.WINDOW_START <= address < _WINDOW_END and self._has_window(target):
            target.require_stopped()
            stack = target.store.ctx.stack
            if stack.size > frame_bases.WINDOW:
                raise TargetError(ErrorCode.MEMORY_FAULT, f"frame-base window at {address:#x}: the guest stack is "
                                                          f"larger than the window ({frame_bases.WINDOW >> 20} MiB)")
            return frame_bases.read_window(address, length, lambda word: self._caller_frame_base(target, word))
        return target.read_memory(address, length)

    def write_memory(self, target: "StoreTarget", address: int, data: bytes) -> None:
        self._writes += 1
        target.write_memory(address, data)

    def _has_window(self, target: "StoreTarget") -> bool:
        """Whether ``target`` is shown through x32 images, whose guest FDEs
        read caller frame bases from the frame-base window."""
        return self.images is not None and uses_x32_images(target.store)

    def _caller_frame_base(self, target: "StoreTarget", word: int) -> int | None:
        """The frame base of the guest frame whose callee's CFA the window
        ``word`` stands for (gdbstub.frame_bases), or None."""
        stack = target.store.ctx.stack
        cfa = frame_bases.cfa_of(word, stack.base + stack.guard, stack.top)
        if cfa is None or cfa - 8 < stack.base + stack.guard:
            return None
        return_pc = int.from_bytes(target.read_memory(cfa - 8, 8), "little")
        entry = target.store.registry.lookup(return_pc)
        func = entry.function_at(return_pc) if entry is not None else None
        if func is None:
            return None
        offset = entry.store_code.offset_of(return_pc)
        point = entry.store_code.frame_table.sequence_point_at_or_before(offset)
        if point is None or point.native_offset != offset or point.kind is not SequencePointKind.RETURN_POINT:
            return None  # not a call's return address: no frame's CFA
        slot = self.images.frame_base_slots(entry.module, entry.engine_code).get(func.native_start)
        if slot is None:
            return None
        try:
            return int.from_bytes(target.read_memory(cfa + func.frame_size + slot, 4), "little")
        except TargetError:
            return None

    def memory_region_info(self, target: "StoreTarget", address: int) -> list[tuple[str, str]]:
        """The region holding ``address``, or the unmapped gap up to the next
        region (no permissions)."""
        if frame_bases.WINDOW_START <= address < _WINDOW_END and self._has_window(target):
            return [("start", "%x" % frame_bases.WINDOW_START), ("size", "%x" % frame_bases.WINDOW),
                    ("permissions", "r"), ("name", hex_encode(b"frame-bases").decode())]
        regions = target.memory_regions()
        for region in regions:
            if region.contains(address):
                perms = "r" + ("w" if region.write else "") + ("x" if region.executable else "")
                return [("start", "%x" % region.start), ("size", "%x" % (region.end - region.start)),
                        ("permissions", perms), ("name", hex_encode(region.name.encode()).decode())]
        following = [r.start for r in regions if r.start > address]
        end = min(following) if following else 1 << 64
        return [("start", "%x" % address), ("size", "%x" % (end - address))]

    def breakpoint_pc(self, target: "StoreTarget", address: int) -> int:
        return address

    def watch_place(self, target: "StoreTarget", address: int, length: int) -> WatchPlace:
        """A wasm global's cell (``monitor globals`` lists them; writes only),
        else linear memory at its native address or in its mirror at
        [0, size) (what a guest pointer holds, see memory_regions)."""
        if length <= 0:
            raise TargetError(ErrorCode.EINVAL, f"watchpoint length {length} must be positive")
        target.require_open()
        for instance in target.store.instances:
            for glob in instance.globals:
                if glob.cell_address <= address and address + length <= glob.cell_address + 8:
                    return WatchPlace(cell=glob.cell_address)
        memories = target.instance.memories
        if not memories:
            raise TargetError(ErrorCode.EINVAL, "the module has no linear memory to watch")
        memory = memories[0]
        size = memory.data_len
        if memory.base <= address and address + length <= memory.base + size:
            return WatchPlace(linear=address - memory.base)
        if 0 <= address and address + length <= size:
            return WatchPlace(linear=address)
        raise TargetError(ErrorCode.EINVAL, f"{address:#x}+{length:#x} is not inside linear memory "
                                            f"(native {memory.base:#x}-{memory.base + size:#x}, or 0-{size:#x})")
