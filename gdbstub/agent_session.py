"""The site agent as a session extension: breakpoint conditions, dprintf and
watchpoints over the protocol (docs/agent.md).

:class:`AgentExtension` is a :class:`~gdbstub.dialect.SessionExtension`
(docs/sessions.md, "Dialects and extensions") that every session has by
default (``SessionConfig.extension_factories``).  It adds:

* ``Z0``/``Z1`` with ``;X`` conditions and ``;cmds:`` agent commands
  (``ConditionalBreakpoints+``, ``BreakpointCommands+``; GDB manual,
  "Packets", ``Z0``), verified here (gdbstub.protocol.agentexpr) before
  anything is installed, and only where the dialect's registers are the
  bytecode's (x86-64: ``Dialect.agent_expressions``);
* ``Z2``/``Z3``/``Z4`` watchpoints, the client's address mapped into the
  Store by the dialect (``Dialect.watch_place``: native or mirrored linear
  memory and globals' cells; wasm memory addresses for lldb's wasm view);
* ``qWatchpointSupportInfo`` (lldb), the ``watch``/``rwatch``/``awatch``
  and ``description`` stop-reply keys, a console note before a stop whose
  condition could not be evaluated, ``monitor globals`` and the hooked sites
  in ``monitor patches``.

Each request is resolved to its target by the session (``session.target``:
the thread ``Hg`` selected), so a condition or watchpoint goes into that one
Store: its state is the target's :class:`~gdbstub.agent.SiteAgent`, its
veneers live in the hook area of that Store's own code.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from codemem import sitehooks
from codemem.wasm.types import ValType

from .agent_x64 import register_readable
from .dialect import SessionExtension
from .protocol import packets as P
from .protocol import replies as R
from .protocol.agentexpr import parse_agent_expr
from .protocol.encoding import hex_encode
from .protocol.replies import ErrorCode
from .target import Stop, StoreTarget, TargetError

if TYPE_CHECKING:
    from .session import GdbSession

#: Z/z types of watchpoints -> the accesses they watch (codemem.sitehooks).
WATCH_KINDS = {
    P.BreakpointType.WRITE_WATCHPOINT: sitehooks.WATCH_WRITE,
    P.BreakpointType.READ_WATCHPOINT: sitehooks.WATCH_READ,
    P.BreakpointType.ACCESS_WATCHPOINT: sitehooks.WATCH_WRITE | sitehooks.WATCH_READ,
}

#: Hooked sites `monitor patches` lists at most (a watchpoint hooks every
#: store site of the Store).
MONITOR_HOOKED_SITES = 200


class AgentExtension(SessionExtension):
    """Conditions, agent commands and watchpoints (see the module docstring)."""

    #: Its stop keys and console note are the stop's watch and note.
    stop_keys_need_details = True

    monitor_help = ("  globals              the wasm globals of each instance and the address of their cells\n"
                    "                       (what `watch *(long *)ADDR` names for a watchpoint on a global)\n")

    def capabilities(self, capabilities: R.Capabilities) -> R.Capabilities:
        return replace(capabilities, conditional_breakpoints=True, breakpoint_commands=True)

    def handlers(self, session: "GdbSession") -> dict[type, Callable]:
        return {
            P.InsertBreakpoint: lambda r: self._insert(session, r),
            P.RemoveBreakpoint: lambda r: self._remove(session, r),
            # Decimal (lldb's GDBRemoteCommunicationClient reads num: as such).
            P.WatchpointSupportInfo: lambda r: b"num:%d;" % sitehooks.MAX_WATCHES,
        }

    # ------------------------------------------------------------ Z and z

    @staticmethod
    def _insert(session: "GdbSession", request: P.InsertBreakpoint) -> bytes:
        target, dialect = session.target, session.dialect
        kinds = WATCH_KINDS.get(request.type)
        if kinds is not None:
            # Z2/Z3/Z4,ADDR,LENGTH (the kind field is the length in bytes).
            place = dialect.watch_place(target, request.addr, request.kind)
            target.insert_watchpoint(kinds, request.addr, request.kind, place)
            return R.ok()
        pc = dialect.breakpoint_pc(target, request.addr)
        if (request.conditions or request.commands) and not dialect.agent_expressions:
            raise TargetError(ErrorCode.EINVAL, "breakpoint conditions and commands are x86-64 agent "
                                                "expressions: not in this dialect (the client evaluates them)")
        # Every expression is verified before anything is installed: one bad
        # bytecode refuses the whole packet (E16 with the parser's message).
        conditions = tuple(parse_agent_expr(code, register_ok=register_readable)
                           for code in request.conditions) if request.conditions else ()
        commands = tuple(parse_agent_expr(code, register_ok=register_readable)
                         for code in request.commands) if request.commands else ()
        registers = dialect.agent_registers(target, pc) if conditions or commands else None
        target.insert_breakpoint(pc, conditions, commands, registers)
        dialect.breakpoint_inserted(target, request.addr, pc)
        return R.ok()

    @staticmethod
    def _remove(session: "GdbSession", request: P.RemoveBreakpoint) -> bytes:
        target = session.target
        kinds = WATCH_KINDS.get(request.type)
        if kinds is not None:
            target.remove_watchpoint(kinds, request.addr, request.kind)
            return R.ok()
        pc = session.dialect.breakpoint_pc(target, request.addr)
        target.remove_breakpoint(pc)
        session.dialect.breakpoint_removed(target, request.addr, pc)
        return R.ok()

    # ------------------------------------------------------------ stops

    def stop_reply_keys(self, target: StoreTarget, stop: Stop) -> list[tuple[str, object]]:
        keys: list[tuple[str, object]] = []
        if stop.watch is not None:
            # GDB manual, "Stop Reply Packets": watch/rwatch/awatch:ADDR, the
            # data address in the client's view; lldb reads the same keys.
            keys.append((stop.watch, "%x" % stop.watch_address))
        if stop.note:
            # LLDB shows a stop "description"; gdb gets the note as console output.
            keys.append(("description", hex_encode(stop.note.encode())))
        return keys

    def stop_console_text(self, target: StoreTarget, stop: Stop) -> str | None:
        return f"wasm-gdbstub: {stop.note}\n" if stop.note else None

    # ------------------------------------------------------------ monitor

    def monitor(self, session: "GdbSession", command: str, args: list[str]) -> str | None:
        if command != "globals":
            return None
        lines = []
        for instance in session.target.store.instances:
            for index, glob in enumerate(instance.globals):
                kind = "mut " if glob.type.mutable else ""
                lines.append(f"{instance.module.name} global {index}: {kind}{ValType(glob.type.valtype).wat_name} = "
                             f"{glob.get().value!r} @ {glob.cell_address:#x}")
        return ("\n".join(lines) or "no globals") + "\n"

    def patch_lines(self, target: StoreTarget) -> list[str]:
        """Sites that call a veneer of their own: conditions, agent commands,
        watchpoint checks (the first MONITOR_HOOKED_SITES of them)."""
        hooked = target.hooked_sites()
        if not hooked:
            return []
        shown = sorted(hooked.items())[:MONITOR_HOOKED_SITES]
        lines = [f"{len(hooked)} sites call their own veneer"
                 + (f" (the first {len(shown)}):" if len(shown) < len(hooked) else ":")]
        for pc, (entry, veneer) in shown:
            name = target.function_name_at(pc) or "?"
            what = "; ".join(target.describe_hooked_site(pc))
            lines.append(f"{pc:#x} {entry.module.name}!{name} -> veneer {veneer:#x}: {what}")
        return lines
