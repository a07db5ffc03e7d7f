"""Where a debug StoreCode's own helper mappings go: one placement policy.

A debug StoreCode's code reaches memory outside its image with ``call rel32``
and ``jmp rel32``: a hooked patch site calls its veneer in the StoreCode's
hook area (codemem.sitehooks), a displaced block jumps back into the image
and the image's carriers jump into the block (codemem.displaced).  A rel32
displacement reaches [next instruction - 2 GiB, next instruction + 2 GiB), so
every such mapping must lie within that reach of every byte of the image.

Where the image itself went decides the rest:

* **Placed below 4 GiB** (its CodeMemory has a ``low_space``: a debug Engine
  with ``low_addresses``, whose debuggers see the guest through an x32 image,
  docs/pointers.md).  Then the helpers go through that same
  :class:`codemem.lowmem.LowAddressSpace`, i.e. into [LOW_FLOOR, LOW_CEILING)
  = [2 GiB, 4 GiB):  never below 2 GiB, where the debugger reads the
  linear-memory mirror at [0, size), never over another Store's code, stack or
  contexts (the space's bookkeeping is shared by all of them), and never above
  4 GiB, where an x32 debugger cannot follow a pc.  That window is exactly
  2 GiB wide, so anything in it is within rel32 reach of anything else in it::

        0            2 GiB                                    4 GiB
        |-- mirror --|-- code | stacks | contexts | helpers --|
                      <------------- < 2 GiB apart ---------->

* **Placed anywhere** (non-low Engines): the first free range right after the
  image, else right before it, else 1 MiB steps further out, while the whole
  range stays within reach (:func:`_map_anywhere_near`).

:func:`map_near_code` is the only way in, and it asserts the invariant on
every mapping it returns (:func:`placement_violation` says what is wrong, so
tests can sweep many Stores with it).
"""
from __future__ import annotations

import weakref

from . import native
from .errors import CodeMemoryError
from .native import PROT_READ, PROT_WRITE, lib

__all__ = ["NearMapping", "map_near_code", "placement_violation"]

#: A rel32 displacement reaches this far from the end of its instruction.
REL32_REACH = 1 << 31
#: Slack for the instruction length (a rel32 is counted from the instruction's end).
_INSTRUCTION_SLACK = 16


def placement_violation(code_base: int, code_end: int, base: int, size: int, *,
                        window: tuple[int, int] | None = None) -> str | None:
    """Why [base, base + size) may not serve the image [code_base, code_end),
    or None when it may: within rel32 reach of the whole image both ways, not
    overlapping it, and inside ``window`` when given (a low image's: its
    LowAddressSpace's [floor, ceiling), i.e. [LOW_FLOOR, LOW_CEILING))."""
    end = base + size
    if base < code_end and end > code_base:
        return f"[{base:#x}, {end:#x}) overlaps the code at [{code_base:#x}, {code_end:#x})"
    if end - code_base > REL32_REACH - _INSTRUCTION_SLACK or code_end - base > REL32_REACH - _INSTRUCTION_SLACK:
        return f"[{base:#x}, {end:#x}) is out of rel32 reach of the code at [{code_base:#x}, {code_end:#x})"
    if window is not None and not (window[0] <= base and end <= window[1]):
        return (f"[{base:#x}, {end:#x}) is outside [{window[0]:#x}, {window[1]:#x}), where a low Store's "
                f"mappings must be (below is the linear-memory mirror, above x32 debuggers cannot reach)")
    return None


class NearMapping:
    """An anonymous read+write mapping placed by :func:`map_near_code`.

    Owners change its protection themselves (code pages r-x).  :meth:`close`
    unmaps it (and frees its range in the low space); without one, it goes
    when the object is collected."""

    def __init__(self, base: int, size: int, low_space, what: str):
        self.base = base
        self.size = size
        self.low = low_space is not None
        self.what = what
        self._finalizer = weakref.finalize(self, _release, base, size, low_space)

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()


def _release(base: int, size: int, low_space) -> None:
    if low_space is not None:
        # May run inside the garbage collector, on a thread that holds the
        # space's lock: the space unmaps now and forgets the range later.
        low_space.unmap_deferred(base, size)
    else:
        lib.cm_unmap(base, size)


def map_near_code(store_code, size: int, *, what: str) -> NearMapping:
    """``size`` bytes of zeroed read+write memory for ``store_code``'s helpers
    (``what`` names them in errors), placed by the policy of the module
    docstring.  Raises CodeMemoryError (LowMemoryExhausted for a low Store
    whose window is full)."""
    size = native.page_round_up(size)
    code_base, code_end = store_code.base, store_code.end
    low_space = store_code.low_space
    if low_space is not None:
        base = low_space.map(-1, size, PROT_READ | PROT_WRITE, what=f"{what} of {store_code.engine_code.name}")
    else:
        base = _map_anywhere_near(code_base, code_end, size, what)
    window = None if low_space is None else (low_space.floor, low_space.ceiling)
    problem = placement_violation(code_base, code_end, base, size, window=window)
    assert problem is None, f"{what}: {problem}"
    return NearMapping(base, size, low_space, what)


def _map_anywhere_near(code_base: int, code_end: int, size: int, what: str) -> int:
    step = 1 << 20
    page = native.PAGE_SIZE
    after = (code_end + page - 1) & ~(page - 1)
    before = (code_base - size) & ~(page - 1)
    candidates = []
    for k in range(1024):
        candidates.append(after + k * step)
        if before - k * step > 0:
            candidates.append(before - k * step)
    for hint in candidates:
        if placement_violation(code_base, code_end, hint, size) is not None:
            continue
        result = lib.cm_map_at(-1, size, PROT_READ | PROT_WRITE, 0, hint)
        if result >= 0:
            return result
    raise CodeMemoryError(f"no free address space for the {what} within rel32 reach of the code at {code_base:#x}")
