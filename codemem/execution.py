"""Guest stacks and the per-Store execution context (the C ``cm_stack_ctx``).

Each Store runs guest code on one OS thread at a time, on a dedicated mmap'd
stack whose lowest pages are a PROT_NONE guard.  Generated prologues compare
rsp against ``stack_limit`` (above the guard by a margin that leaves room for
the trampolines' register file and a host call) and trap with "call stack
exhausted" before the guard could ever be touched.
"""
from __future__ import annotations

import itertools
import logging

from . import native
from .native import ffi, lib

log = logging.getLogger(__name__)

DEFAULT_STACK_SIZE = 8 << 20
GUARD_SIZE = 64 << 10
#: Room kept below stack_limit for trampolines and nested host entries.
LIMIT_MARGIN = 64 << 10

_store_ids = itertools.count(1)


def new_store_id() -> int:
    return next(_store_ids)


class GuestStack:
    """``low_space``: a codemem.lowmem.LowAddressSpace to place the stack in
    (below 4 GiB, for debug Stores), else anywhere."""

    def __init__(self, size: int = DEFAULT_STACK_SIZE, guard: int = GUARD_SIZE, *, low_space=None):
        size = native.page_round_up(size)
        assert size > guard + LIMIT_MARGIN
        self.size = size
        self.guard = guard
        self.low_space = low_space
        if low_space is not None:
            self.base = low_space.map_stack(size, guard)
        else:
            self.base = native.check(lib.cm_stack_alloc(size, guard), "allocate guest stack")

    @property
    def top(self) -> int:
        return self.base + self.size

    @property
    def limit(self) -> int:
        return self.base + self.guard + LIMIT_MARGIN

    def contains(self, address: int) -> bool:
        base = self.base
        return base + self.guard <= address < base + self.size  # top, without the property: asked per stack read

    def close(self) -> None:
        if self.base:
            if self.low_space is not None:
                self.low_space.unmap(self.base, self.size)
            else:
                native.check(lib.cm_stack_free(self.base, self.size), "free guest stack")
            self.base = 0


class ExecutionContext:
    """One Store's ``cm_stack_ctx`` and guest stack.

    ``context_header()`` gives the 8 bytes every guest context (vmctx, host
    function context) must start with: the address of this stack context.
    """

    def __init__(self, store_id: int | None = None, stack_size: int = DEFAULT_STACK_SIZE, *, low_space=None):
        self.store_id = new_store_id() if store_id is None else store_id
        self.stack = GuestStack(stack_size, low_space=low_space)
        #: Where the outermost guest frame returns: a low thunk for low Stores
        #: (codemem.lowmem.entry_thunk_address), else cm_enter itself (0).
        self.entry_thunk = 0
        if low_space is not None:
            from .lowmem import entry_thunk_address

            self.entry_thunk = entry_thunk_address()
        self.sc = ffi.new("cm_stack_ctx *")
        self.sc.store_id = self.store_id
        self.sc.stack_limit = self.stack.limit
        self.address = int(ffi.cast("uintptr_t", self.sc))

    def context_header(self) -> bytes:
        return self.address.to_bytes(8, "little")

    @property
    def depth(self) -> int:
        return self.sc.depth

    def enter(self, code_pc: int, vmctx: int, args: int) -> int:
        """Runs guest code at ``code_pc`` with r15=vmctx, rsi=args on the guest
        stack (continuing below the current guest frame when nested inside a
        host call).  Returns 0, or the trap code.  Releases the GIL (cffi)."""
        guest_sp = self.stack.top if self.sc.depth == 0 else 0
        return lib.cm_enter(code_pc, vmctx, args, self.sc, guest_sp, self.entry_thunk)

    def close(self) -> None:
        assert self.sc.depth == 0, "closing an execution context with guest code running"
        self.stack.close()
