"""Memory placed below 4 GiB, for the Stores of debug Engines.

Why: a debugger shows a wasm32 guest through an x32 debug image (gdb's
``i386:x64-32`` architecture: 4-byte pointers, 64-bit registers; see
docs/pointers.md). Such a debugger keeps every address it computes in 32 bits,
so everything it must dereference has to live below 4 GiB: the Store's code
(its private StoreCode copy), its guest stack, and the instance contexts and
global cells that variable locations read through r15.

Where: in ``[LOW_FLOOR, FRAME_BASE_WINDOW_START)`` = [2 GiB, 4 GiB - 64 MiB). The range below
``LOW_FLOOR`` is left to the linear-memory mirror, which a debugger sees at
``[0, memory size)`` (gdbstub/target.py): a C pointer is an offset into linear
memory and must dereference there, so nothing of ours may sit in that range.
Linear memory itself stays wherever it was reserved (high); only the mirror
is low. A memory larger than ``LOW_FLOOR`` is mirrored up to ``LOW_FLOOR`` only.
The top ``FRAME_BASE_WINDOW`` bytes below 4 GiB are never placed either: a
debugger's view synthesizes the frame-base window there (the C frame base of
every caller frame, read through each guest FDE's rule for ``es``;
gdbstub/dialect.py, docs/cvars.md "Latency"), so nothing real may sit there.

How: :class:`LowAddressSpace` (one per process) hands out page ranges first
fit, maps each with ``MAP_FIXED_NOREPLACE`` (``cm_map_at``), and learns
ranges some other part of the process mapped there from /proc/self/maps when
the kernel says EEXIST. When no range fits it raises
:class:`LowMemoryExhausted`, which names the size asked for and what is in use.

Nothing here is used by non-debug Engines.
"""
from __future__ import annotations

import bisect
import errno
import logging
import struct
import threading

from . import native
from .native import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, ffi, lib

log = logging.getLogger(__name__)

__all__ = ["CALL_LANDING_OFFSET", "ENTRY_THUNK_CODE", "ENTRY_THUNK_RETURN_OFFSET", "ENTRY_THUNK_PAGE_CODE_SIZE", "FRAME_BASE_WINDOW",
           "FRAME_BASE_WINDOW_START", "LOW_CEILING", "LOW_FLOOR", "LowAddressSpace", "LowHeap", "LowMemoryExhausted",
           "call_landing_address", "entry_thunk_address", "low_address_space"]

#: Lowest address of our placements; [0, LOW_FLOOR) is the linear-memory mirror.
LOW_FLOOR = 2 << 30
#: One past the highest address an x32 debugger can reach.
LOW_CEILING = 4 << 30
#: Size of the frame-base window, a power of two: a guest frame whose CFA is
#: ``cfa`` has its caller's C frame base at ``FRAME_BASE_WINDOW_START + cfa %
#: FRAME_BASE_WINDOW`` in a debugger's view (no memory is mapped there), so the
#: frames of one guest stack of up to this size never share a word.
FRAME_BASE_WINDOW = 64 << 20
#: Start of the frame-base window, the top of the x32-reachable range; it is
#: aligned to its size, so the address is also ``cfa % W | START``.
FRAME_BASE_WINDOW_START = LOW_CEILING - FRAME_BASE_WINDOW
#: Placement granularity (and alignment) of every range.
GRANULE = 64 << 10


class LowMemoryExhausted(MemoryError):
    """No free range of the requested size is left below 4 GiB."""


def _round_up(value: int, unit: int) -> int:
    return (value + unit - 1) // unit * unit


def _foreign_ranges(floor: int, ceiling: int) -> list[tuple[int, int]]:
    """Mappings of this process overlapping [floor, ceiling), from /proc/self/maps."""
    ranges = []
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            span = line.split(" ", 1)[0]
            start, _, end = span.partition("-")
            start, end = int(start, 16), int(end, 16)
            if start < ceiling and end > floor:
                ranges.append((max(start, floor) // GRANULE * GRANULE, min(_round_up(end, GRANULE), ceiling)))
    return ranges


class LowAddressSpace:
    """First-fit placement of page ranges in ``[floor, ceiling)``. Thread-safe."""

    def __init__(self, floor: int = LOW_FLOOR, ceiling: int = FRAME_BASE_WINDOW_START):
        assert floor % GRANULE == 0 and ceiling % GRANULE == 0 and floor < ceiling
        self.floor, self.ceiling = floor, ceiling
        self._lock = threading.Lock()
        self._starts: list[int] = []  # sorted starts of the ranges in use (ours and foreign ones)
        self._ends: dict[int, int] = {}  # start -> end
        self._ours: dict[int, int] = {}  # start -> end of ranges we mapped
        self._released: list[int] = []  # starts unmapped by unmap_deferred, still in the bookkeeping

    # -- bookkeeping ------------------------------------------------------------

    def _insert(self, start: int, end: int) -> None:
        bisect.insort(self._starts, start)
        self._ends[start] = end

    def _remove(self, start: int) -> None:
        self._starts.pop(bisect.bisect_left(self._starts, start))
        del self._ends[start]

    def _first_fit(self, size: int, after: int) -> int | None:
        at = after
        for start in self._starts:
            end = self._ends[start]
            if end <= at:
                continue
            if start - at >= size:
                return at
            at = max(at, end)
        return at if self.ceiling - at >= size else None

    def _learn_foreign(self) -> None:
        for start, end in _foreign_ranges(self.floor, self.ceiling):
            if any(s < end and self._ends[s] > start for s in self._starts):
                continue  # ours, or already known
            self._insert(start, end)

    @property
    def bytes_in_use(self) -> int:
        with self._lock:
            self._forget_released()
            return sum(end - start for start, end in self._ours.items())

    # -- mapping ----------------------------------------------------------------

    def map(self, fd: int, size: int, prot: int, *, shared: bool = False, what: str = "memory") -> int:
        """Maps ``size`` bytes of ``fd`` (anonymous when ``fd`` < 0) below 4 GiB;
        returns the address. Raises LowMemoryExhausted, or OSError for any
        other mmap failure."""
        size = native.page_round_up(size)
        span = _round_up(size, GRANULE)
        with self._lock:
            self._forget_released()
            after, learned = self.floor, False
            while True:
                at = self._first_fit(span, after)
                if at is None:
                    if not learned:
                        learned = True
                        self._learn_foreign()
                        after = self.floor
                        continue
                    in_use = sum(end - start for start, end in self._ours.items())
                    raise LowMemoryExhausted(
                        f"no free {span >> 10} KiB range for {what} in [{self.floor:#x}, {self.ceiling:#x}) "
                        f"(debug Stores use {in_use >> 20} MiB there; close some Stores)")
                result = lib.cm_map_at(fd, size, prot, 1 if shared else 0, at)
                if result == -errno.EEXIST:
                    # Someone else mapped memory there: learn what, then look again.
                    if not learned:
                        learned = True
                        self._learn_foreign()
                        after = self.floor
                    else:
                        after = at + GRANULE
                    continue
                native.check(result, f"map {what} below 4 GiB at {at:#x}")
                self._insert(at, at + span)
                self._ours[at] = at + span
                return at

    def map_anonymous(self, size: int, *, what: str = "memory") -> int:
        """Zeroed read+write memory below 4 GiB."""
        return self.map(-1, size, PROT_READ | PROT_WRITE, what=what)

    def map_stack(self, size: int, guard: int) -> int:
        """A guest stack below 4 GiB whose lowest ``guard`` bytes are PROT_NONE
        (what ``cm_stack_alloc`` makes elsewhere)."""
        base = self.map_anonymous(size, what="guest stack")
        if guard:
            try:
                native.check(lib.cm_protect(base, guard, PROT_NONE), "guard page of a guest stack")
            except OSError:
                self.unmap(base, size)
                raise
        return base

    def unmap(self, address: int, size: int) -> None:
        """Unmaps a range :meth:`map` returned and makes it free again.

        Never waits for the lock: a finalizer that the garbage collector runs
        inside :meth:`map` on the same thread (a dropped EngineCode while a
        Store is being placed) would wait for itself. When the lock is taken,
        the range is unmapped at once and freed in the bookkeeping later, as
        :meth:`unmap_deferred` does."""
        if not self._lock.acquire(blocking=False):
            self.unmap_deferred(address, size)
            return
        try:
            self._forget_released()
            end = self._ours.pop(address, None)
            assert end is not None, f"{address:#x} was not mapped by this LowAddressSpace"
            native.check(lib.cm_unmap(address, native.page_round_up(size)), f"unmap {address:#x}")
            self._remove(address)
        finally:
            self._lock.release()

    def unmap_deferred(self, address: int, size: int) -> None:
        """:meth:`unmap` for finalizers: unmaps at once without the lock (a
        finalizer may run inside the garbage collector on a thread that holds
        it), and the range stays taken in the bookkeeping (so nothing is placed
        there meanwhile) until the next :meth:`map` or :meth:`unmap` frees it."""
        assert address in self._ours, f"{address:#x} was not mapped by this LowAddressSpace"
        lib.cm_unmap(address, native.page_round_up(size))
        self._released.append(address)  # list.append is atomic: no lock needed

    def _forget_released(self) -> None:
        while self._released:
            address = self._released.pop()
            if self._ours.pop(address, None) is not None:
                self._remove(address)


_process_space: LowAddressSpace | None = None
_process_space_lock = threading.Lock()


def low_address_space() -> LowAddressSpace:
    """The process's LowAddressSpace (one: placements must not collide)."""
    global _process_space
    with _process_space_lock:
        if _process_space is None:
            _process_space = LowAddressSpace()
        return _process_space


#: The entry thunk (csrc cm_enter's ``entry_thunk``): ``call rdi; nop; ret``.
#: The outermost guest frame returns to its ``nop``, below 4 GiB, where an x32
#: debug image can describe it (an FDE with an undefined return address ends
#: the backtrace there, as the runtime image's does for cm_enter).  The
#: ``nop`` is for gdb: in a frame 0 whose pc is a ``ret`` of code without a
#: GCC compile unit, amd64's epilogue unwinder (amd64-tdep.c
#: ``amd64_stack_frame_destroyed_p``) takes precedence over the FDE and
#: unwinds into the host's stack (seen when gdb stops there after a
#: ``return`` out of the outermost frame).
ENTRY_THUNK_CODE = b"\xff\xd7\x90\xc3"
#: Offset in the thunk of the outermost guest frame's return address.
ENTRY_THUNK_RETURN_OFFSET = 2

#: Offset in the thunk page of the inferior-call landing (csrc
#: cm_call_landing_address has the same for Stores placed anywhere): the
#: return address a debugger pushes for an inferior call, a permanent
#: breakpoint.  Layout of the page's code::
#:
#:     0   ff d7 90 c3            call rdi; nop; ret       (the entry thunk)
#:     4   cc x4
#:     8   e8 <rel32 to 16>       call veneer              (the landing: a
#:    13   eb f9                  jmp 8                     5-byte call, so the
#:    15   cc                                               trampoline's stop pc
#:    16   ff 25 02 00 00 00      jmp [rip + slot]          is 8)
#:    22   cc cc
#:    24   dq cm_breakpoint_trampoline
CALL_LANDING_OFFSET = 8
ENTRY_THUNK_PAGE_CODE_SIZE = 32


def entry_thunk_page_code(breakpoint_trampoline: int) -> bytes:
    """The thunk page's code (layout above) for a breakpoint trampoline at
    ``breakpoint_trampoline``."""
    code = bytearray(ENTRY_THUNK_CODE.ljust(CALL_LANDING_OFFSET, b"\xcc"))
    code += b"\xe8" + struct.pack("<i", 16 - (CALL_LANDING_OFFSET + 5))
    code += b"\xeb" + struct.pack("<b", CALL_LANDING_OFFSET - (len(code) + 2))
    code = code.ljust(16, b"\xcc")
    code += b"\xff\x25" + struct.pack("<i", 24 - 22)
    code = code.ljust(24, b"\xcc")
    code += struct.pack("<Q", breakpoint_trampoline)
    assert len(code) == ENTRY_THUNK_PAGE_CODE_SIZE
    return bytes(code)


_entry_thunk = 0


def entry_thunk_address() -> int:
    """The process's entry thunk below 4 GiB (mapped and made read+execute on
    first use, then kept for the process's lifetime)."""
    global _entry_thunk
    with _process_space_lock:
        if _entry_thunk:
            return _entry_thunk
    space = low_address_space()
    address = space.map_anonymous(native.page_round_up(1), what="entry thunk")
    code = entry_thunk_page_code(lib.cm_breakpoint_trampoline_address())
    ffi.memmove(ffi.cast("char *", address), code, len(code))
    native.check(lib.cm_protect(address, native.page_round_up(1), PROT_READ | PROT_EXEC), "publish the entry thunk")
    with _process_space_lock:
        if _entry_thunk:  # another thread won the race: keep its thunk
            space.unmap(address, native.page_round_up(1))
        else:
            _entry_thunk = address
        return _entry_thunk


def call_landing_address(low: bool) -> int:
    """Where a debugger's inferior calls return (a permanent breakpoint): in
    the low thunk page for Stores placed below 4 GiB (an x32 debugger sees
    only 32-bit addresses), else in the C runtime."""
    if low:
        return entry_thunk_address() + CALL_LANDING_OFFSET
    return lib.cm_call_landing_address()


class LowHeap:
    """Small objects below 4 GiB for one Store: instance contexts, global cells.

    A bump allocator over 64 KiB chunks (bigger requests get a chunk of their
    own); everything is freed at once by :meth:`close`, when the Store closes
    (the objects live exactly as long as their Store). ``alloc`` returns a
    zeroed ``uint64_t *`` cdata and its address.
    """

    CHUNK = 64 << 10
    ALIGN = 16

    def __init__(self, space: LowAddressSpace | None = None):
        self._space = space or low_address_space()
        self._chunks: list[tuple[int, int]] = []  # (address, size)
        self._at = self._end = 0
        self._lock = threading.Lock()

    def alloc(self, nbytes: int, *, what: str = "object"):
        nbytes = _round_up(max(nbytes, 8), self.ALIGN)
        with self._lock:
            if self._at + nbytes > self._end:
                size = max(self.CHUNK, native.page_round_up(nbytes))
                address = self._space.map_anonymous(size, what=what)
                self._chunks.append((address, size))
                self._at, self._end = address, address + size
            address = self._at
            self._at += nbytes
        return ffi.cast("uint64_t *", address), address

    def alloc_pages(self, nbytes: int, *, what: str = "object"):
        """Like :meth:`alloc`, but whole pages of their own (nothing else of
        the heap shares them): for memory a debugger reads in cache lines."""
        size = native.page_round_up(max(nbytes, 1))
        address = self._space.map_anonymous(size, what=what)
        with self._lock:
            self._chunks.append((address, size))
        return ffi.cast("uint64_t *", address), address

    def close(self) -> None:
        with self._lock:
            chunks, self._chunks = self._chunks, []
            self._at = self._end = 0
        for address, size in chunks:
            self._space.unmap(address, size)
