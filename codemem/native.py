"""The compiled extension (csrc/ via cffi) and the dispatch of its host callbacks.

The C runtime calls exactly two Python functions, both on a guest thread after
switching back to that thread's own stack:

* ``cm_py_event(kind, code, regfile, vmctx)``: a breakpoint (patched site) or a
  trap.  It is routed to the handler registered for the Store whose stack
  context ``vmctx`` points at; the handler may block (the guest is stopped) and
  may modify the register file, which the trampoline restores.  A breakpoint
  first runs the Store's *prelude*, handler or not (register_breakpoint_prelude:
  a carrier-store site's store).
* ``cm_py_host_call(hostctx, args)``: an import implemented in Python.  Routed
  by the host-function id stored in the host context.

These two are the outermost guard between C and Python: an exception escaping a
handler would be printed by cffi and silently ignored, so both catch
everything, log it, and turn it into a trap code.
"""
from __future__ import annotations

import logging
import mmap
from typing import Callable

from ._native import ffi, lib

log = logging.getLogger(__name__)

PROT_NONE = mmap.PROT_READ & 0  # 0
PROT_READ = mmap.PROT_READ
PROT_WRITE = mmap.PROT_WRITE
PROT_EXEC = mmap.PROT_EXEC

EVENT_BREAKPOINT = lib.CM_EVENT_BREAKPOINT
EVENT_TRAP = lib.CM_EVENT_TRAP

#: Offsets inside ``cm_stack_ctx`` (csrc/codemem_rt.h), used by generated code.
STACK_CTX_HOST_RSP = 0
STACK_CTX_GUEST_RSP = 8
STACK_CTX_STACK_LIMIT = 16

#: Trap code a host callback returns when a Python host function raised.
TRAP_CODE_HOST_ERROR = 0xFFFF

REGFILE_SIZE = ffi.sizeof("cm_regfile")
assert REGFILE_SIZE == 424

EventHandler = Callable[[int, int, object, int], None]
HostCallHandler = Callable[[int, object], int]

_event_handlers: dict[int, EventHandler] = {}
_breakpoint_preludes: dict[int, Callable[[object], None]] = {}
_host_call_handlers: dict[int, HostCallHandler] = {}


def check(result: int, what: str) -> int:
    """Turns a ``-errno`` result of a csrc function into ``OSError`` naming ``what``."""
    if result < 0:
        import os

        raise OSError(-result, f"{what}: {os.strerror(-result)}")
    return result


def store_id_of_context(vmctx: int) -> int:
    """The store id of the stack context that context ``vmctx`` (quadword 0) points at."""
    sc_address = ffi.cast("uint64_t *", vmctx)[0]
    return ffi.cast("cm_stack_ctx *", sc_address).store_id


def register_event_handler(store_id: int, handler: EventHandler) -> None:
    assert store_id not in _event_handlers, f"store {store_id} already has an event handler"
    _event_handlers[store_id] = handler


def unregister_event_handler(store_id: int) -> None:
    _event_handlers.pop(store_id, None)


def register_breakpoint_prelude(store_id: int, prelude: Callable[[object], None]) -> None:
    """``prelude(regfile)`` runs first on every breakpoint event of the Store,
    before its event handler and whether it has one or not: what the site's
    ``call`` replaced must be done before anything reads the guest's frame
    or registers (codemem.registry.ModuleRegistry.perform_carrier_store: a
    carrier site's store or move).  It must not block and must be idempotent."""
    assert store_id not in _breakpoint_preludes, f"store {store_id} already has a breakpoint prelude"
    _breakpoint_preludes[store_id] = prelude


def unregister_breakpoint_prelude(store_id: int) -> None:
    _breakpoint_preludes.pop(store_id, None)


def register_host_call_handler(store_id: int, handler: HostCallHandler) -> None:
    assert store_id not in _host_call_handlers, f"store {store_id} already has a host-call handler"
    _host_call_handlers[store_id] = handler


def unregister_host_call_handler(store_id: int) -> None:
    _host_call_handlers.pop(store_id, None)


@ffi.def_extern()
def cm_py_event(kind, code, regfile, vmctx):
    try:
        # store_id_of_context, inline: this runs at every stop.
        store_id = ffi.cast("cm_stack_ctx *", ffi.cast("uint64_t *", vmctx)[0]).store_id
        if kind == EVENT_BREAKPOINT:
            prelude = _breakpoint_preludes.get(store_id)
            if prelude is not None:
                prelude(regfile)
        handler = _event_handlers.get(store_id)
        if handler is None:
            # No handler (no debugger machinery for this Store): resume at once.
            return
        handler(kind, code, regfile, vmctx)
    except BaseException:  # outermost guard between C and Python
        log.exception("event handler failed (kind %d, code %d); resuming the guest", kind, code)


@ffi.def_extern()
def cm_py_host_call(hostctx, args):
    try:
        store_id = store_id_of_context(hostctx)
        handler = _host_call_handlers.get(store_id)
        if handler is None:
            log.error("host call in store %d, which has no host-call handler", store_id)
            return TRAP_CODE_HOST_ERROR
        return handler(hostctx, args)
    except BaseException:  # outermost guard between C and Python
        log.exception("host call handler failed")
        return TRAP_CODE_HOST_ERROR


lib.cm_set_callbacks(lib.cm_py_event, lib.cm_py_host_call)

PAGE_SIZE = lib.cm_page_size()


def page_round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
