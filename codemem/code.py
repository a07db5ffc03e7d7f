"""Code memory: EngineCode (canonical, shared, sealed) and StoreCode (what one Store runs).

Address spaces are kept apart by type:

* ``ImageOffset``: a position-independent offset inside a compiled image.  The
  frame table, patch sites and EngineCode speak only in these.
* ``StoreCodePC``: an executable address inside one Store's mapping of an
  image.  Only StoreCode hands these out.

Invariants (asserted where they could break):

* EngineCode is immutable once published: its memfd is sealed (write, grow,
  shrink, seal) and mapped shared read+execute; the kernel itself refuses any
  write.  EngineCode never hands out an executable address.
* With debugging off a StoreCode shares the EngineCode mapping.  With debugging
  on it is a private copy-on-write mapping (``MAP_PRIVATE``) of the same memfd:
  O(1) to create; only pages that get patched are ever copied, and only into
  this Store.
* A StoreCode with debugging on never executes from EngineCode, so patching it
  never affects another Store.
* A closed debug StoreCode's mapping may be recycled for the next Store of the
  same EngineCode (no mmap on the hot path), but only after every private page
  was discarded (``MADV_DONTNEED``: a private file mapping then reads the sealed
  memfd again) and the mapping is published; a recycled copy is
  indistinguishable from a fresh one.  A closed StoreCode refuses every use.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import NewType

from . import native
from .errors import CodeMemoryError
from .frametable import SITE_DISABLED, SITE_SIZE, CarrierStore, FrameTable
from .native import PROT_EXEC, PROT_READ, PROT_WRITE, ffi, lib

#: Most pcs StoreCode.carrier_store_at remembers (a loop's stops ask a few).
_CARRIER_MEMO_LIMIT = 4096
#: PreparedSites lists a plan of at most this many sites in one C array (a
#: step plan in a function of ordinary size); a larger one keeps its ranges.
PREPARED_ARRAY_LIMIT = 4096

log = logging.getLogger(__name__)

ImageOffset = NewType("ImageOffset", int)
StoreCodePC = NewType("StoreCodePC", int)


class CodeMemory:
    """One page-aligned mapping of an image memfd.

    States: *published* (read+execute) and *writable*.  ``unpublish()`` makes a
    private mapping writable for patching: read+write when the code is not
    running (W^X), or read+write+execute for a *live* edit of code a guest
    thread may be executing (then patches must be written atomically, see
    :meth:`write_site_atomic`).  A sealed shared mapping (EngineCode) can never
    be unpublished: the kernel refuses, and so do we, earlier.

    Only the pages an edit writes change protection: ``unpublish(start=,
    end=)`` and :meth:`extend_writable` take image offsets, rounded out to
    pages, and :meth:`publish` restores just those spans.  (An mprotect of a
    real-size module's whole mapping, tens of MiB, costs milliseconds; a step
    touches a few pages.)
    """

    def __init__(self, fd: int, base: int, size: int, *, shared: bool, name: str, low_space=None):
        self.fd = fd
        self.base = base
        self.size = size
        self.shared = shared
        self.name = name
        #: The codemem.lowmem.LowAddressSpace this mapping was placed in, if any.
        self.low_space = low_space
        self.live_writable = False
        #: Whether this mapping was ever writable, i.e. may hold private pages.
        self.ever_unpublished = False
        #: Page-aligned image-offset spans made writable since the last publish.
        self._writable: list[tuple[int, int]] = []

    @property
    def published(self) -> bool:
        return not self._writable

    @classmethod
    def create_sealed(cls, image, name: str, patches: tuple[tuple[int, bytes], ...] = ()) -> "CodeMemory":
        """Writes ``image`` (any buffer: bytes, a memoryview of a mapped cache
        entry; it is not copied in Python), then each ``(offset, bytes)`` of
        ``patches`` over it, to a new memfd, seals it and maps it shared r-x."""
        size = native.page_round_up(max(len(image), 1))
        fd = native.check(lib.cm_memfd_create(name.encode(), size), f"memfd_create({name})")
        try:
            native.check(lib.cm_pwrite_all(fd, ffi.from_buffer(image), len(image), 0), f"write image {name}")
            for offset, data in patches:
                native.check(lib.cm_pwrite_all(fd, data, len(data), offset), f"patch image {name}")
            native.check(lib.cm_memfd_seal(fd), f"seal image {name}")
            base = native.check(lib.cm_map(fd, size, PROT_READ | PROT_EXEC, 1), f"map image {name}")
        except BaseException:
            lib.cm_close(fd)
            raise
        return cls(fd, base, size, shared=True, name=name)

    def map_private_copy(self, name: str, *, low_space=None) -> "CodeMemory":
        """A new copy-on-write mapping of the same memfd, published (r-x);
        placed by ``low_space`` (a codemem.lowmem.LowAddressSpace: below 4 GiB)
        when given."""
        if low_space is not None:
            base = low_space.map(self.fd, self.size, PROT_READ | PROT_EXEC, what=f"private copy {name}")
        else:
            base = native.check(lib.cm_map(self.fd, self.size, PROT_READ | PROT_EXEC, 0), f"map private copy {name}")
        return CodeMemory(self.fd, base, self.size, shared=False, name=name, low_space=low_space)

    def unpublish(self, *, live: bool = False, start: int = 0, end: int | None = None) -> None:
        """Makes the pages of image offsets [start, end) (default: all)
        writable; the mapping is unpublished until :meth:`publish`."""
        assert not self.shared, f"{self.name}: a shared (EngineCode) mapping is never made writable"
        assert not self._writable, f"{self.name}: already writable"
        self.live_writable = live
        self._protect_writable(start, self.size if end is None else end)
        self.ever_unpublished = True

    def extend_writable(self, start: int, end: int) -> None:
        """Makes the pages of [start, end) writable too, in the mode of the
        current :meth:`unpublish` (a later change of the same edit)."""
        assert self._writable, f"{self.name}: extending the writable part of published code"
        for s, e in self._writable:  # a loop, not any(): asked at every resume of a step
            if s <= start and end <= e:
                return
        self._protect_writable(start, end)

    def _protect_writable(self, start: int, end: int) -> None:
        page = native.PAGE_SIZE
        start -= start % page
        if end <= start:
            end = start + 1
        end = -(-end // page) * page  # native.page_round_up, inline: at every stop of a step
        if end > self.size:
            end = self.size
        prot = PROT_READ | PROT_WRITE | (PROT_EXEC if self.live_writable else 0)
        result = lib.cm_protect(self.base + start, end - start, prot)
        if result < 0:
            native.check(result, f"unpublish {self.name}")
        self._writable.append((start, end))

    def publish(self) -> None:
        assert self._writable, f"{self.name}: already published"
        for start, end in self._writable:
            result = lib.cm_protect(self.base + start, end - start, PROT_READ | PROT_EXEC)
            if result < 0:
                native.check(result, f"publish {self.name}")
        self._writable = []  # a fresh list, not clear(): one call less at every resume
        self.live_writable = False

    def _is_writable(self, offset: int, length: int) -> bool:
        return any(s <= offset and offset + length <= e for s, e in self._writable)

    def read(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= self.size, (offset, length, self.size)
        return bytes(ffi.buffer(ffi.cast("char *", self.base + offset), length))

    def write(self, offset: int, data: bytes) -> None:
        assert self._is_writable(offset, len(data)), f"{self.name}: write to published code at {offset:#x}"
        assert 0 <= offset and offset + len(data) <= self.size, (offset, len(data), self.size)
        ffi.memmove(ffi.cast("char *", self.base + offset), data, len(data))

    def write_site_atomic(self, offset: int, data: bytes) -> None:
        """Writes a 5-byte patch with one atomic 8-byte store (see csrc)."""
        assert self._is_writable(offset, SITE_SIZE) and len(data) == SITE_SIZE
        native.check(lib.cm_patch5_atomic(self.base + offset, data), f"atomic patch at {self.name}+{offset:#x}")

    def discard_private_pages(self) -> None:
        """Back to the memfd's bytes: every copied-on-write page is dropped."""
        assert not self.shared, f"{self.name}: only a private copy has private pages"
        native.check(lib.cm_discard_private_pages(self.base, self.size), f"discard private pages of {self.name}")
        self.ever_unpublished = False

    def unmap(self) -> None:
        if self.base:
            if self.low_space is not None:
                self.low_space.unmap(self.base, self.size)
            else:
                native.check(lib.cm_unmap(self.base, self.size), f"unmap {self.name}")
            self.base = 0


class EngineCode:
    """The canonical compiled image of one module, shared by every Store of an Engine.

    Image layout (image offsets)::

        [0, code_size)     functions, veneers, trampoline slots
        [code_size, size)  zero padding to the page

    The frame table is not part of the executable image (it is never executed,
    and a real-size module's table is twice its code): :attr:`frame_table`
    reads it where the caller keeps it (bytes, or the mapped cache entry).

    Exposes only position-independent data: the frame table, sizes, names and
    :meth:`read` of the canonical bytes.  The executable mapping is reachable
    only through :class:`StoreCode`.
    """

    def __init__(self, code, frame_table, *, name: str = "module", function_names=None,
                 low_private_copies: bool = False):
        """``code``: the image's code (any buffer); ``frame_table``: its frame
        table (bytes, or a buffer :class:`FrameTable` reads in place).  Neither
        is copied in Python: a warm load hands in the mapped cache entry."""
        table = FrameTable(frame_table)
        if table.code_size != len(code):
            raise CodeMemoryError(f"{name}: frame table says code_size={table.code_size:#x}, code is {len(code):#x} bytes")
        # The veneers jump through these slots; the trampolines' addresses are
        # only known in this process, so they are written into the memfd, over
        # the code, before sealing.
        patches = []
        if table.debug or table.header.trap_slot:
            for slot, address in (
                (table.header.bp_slot, lib.cm_breakpoint_trampoline_address()),
                (table.header.trap_slot, lib.cm_trap_trampoline_address()),
            ):
                if slot + 8 > len(code):
                    raise CodeMemoryError(f"{name}: trampoline slot {slot:#x} outside the code")
                patches.append((slot, address.to_bytes(8, "little")))
        self.name = name
        self.code_size = len(code)
        self.frame_table = table
        self.function_names = dict(function_names or {})
        #: Debug Stores' private copies go below 4 GiB (codemem.lowmem), for
        #: debuggers that see the guest through an x32 image.
        self.low_private_copies = bool(low_private_copies)
        self._memory = CodeMemory.create_sealed(code, f"engine-code:{name}", tuple(patches))
        self.size = self._memory.size
        # Private copies given back by closed StoreCodes, reset and published,
        # ready for the next debug Store (see StoreCode.close).
        self._spare_private_copies: list[CodeMemory] = []
        # Reentrant: a Store dropped by the garbage collector (Store.__del__
        # closes its StoreCodes, which give their copies back here) may be
        # collected on this very thread while it holds the lock (an allocation
        # inside it); a plain Lock then deadlocks the thread on itself.
        self._spare_lock = threading.RLock()
        # Without an explicit close, the memfd and mappings go when the last
        # reference does: every user of the mapping (StoreCode, instances via
        # their Module) holds this object, so nothing can still run from it.
        self._finalizer = weakref.finalize(self, _release_engine_memory, self._memory, self._spare_private_copies)

    def read(self, offset: ImageOffset, length: int) -> bytes:
        """Canonical bytes of the image (never patched)."""
        if offset < 0 or offset + length > self.size:
            raise CodeMemoryError(f"{self.name}: read {offset:#x}+{length:#x} outside the image ({self.size:#x} bytes)")
        return self._memory.read(offset, length)

    def seals(self) -> int:
        return native.check(lib.cm_memfd_seals(self._memory.fd), "F_GET_SEALS")

    def _mapping_for_store_code(self) -> CodeMemory:
        # Package-private: only StoreCode may learn where the canonical copy lives.
        return self._memory

    def _take_private_copy(self, name: str) -> CodeMemory:
        """A published private copy-on-write mapping with the canonical bytes:
        a recycled one when a closed Store gave one back, else a new mmap."""
        with self._spare_lock:
            if self._spare_private_copies:
                memory = self._spare_private_copies.pop()
                memory.name = name
                return memory
        if self.low_private_copies:
            from .lowmem import low_address_space

            return self._memory.map_private_copy(name, low_space=low_address_space())
        return self._memory.map_private_copy(name)

    def _give_back_private_copy(self, memory: CodeMemory) -> None:
        """Takes back a closed StoreCode's private copy: resets it for the next
        Store (bounded by SPARE_PRIVATE_COPIES) or unmaps it."""
        assert not memory.shared and memory.base
        with self._spare_lock:
            keep = self._finalizer.alive and memory.published and len(self._spare_private_copies) < SPARE_PRIVATE_COPIES
            if keep:
                if memory.ever_unpublished:
                    # Cost: proportional to the pages that were patched.
                    memory.discard_private_pages()
                self._spare_private_copies.append(memory)
                return
        memory.unmap()

    def close(self) -> None:
        self._finalizer()


#: Reset private copies an EngineCode keeps for its next Stores.  Each costs
#: address space only (its pages were discarded); a Store created and dropped
#: repeatedly (a request per Store, a test per Store) then needs no mmap.
SPARE_PRIVATE_COPIES = 4


def _call_bytes(site_pc: int, target: int) -> bytes:
    """``call target`` at absolute ``site_pc`` (5 bytes, rel32)."""
    rel = target - (site_pc + SITE_SIZE)
    if not -(1 << 31) <= rel < (1 << 31):
        raise CodeMemoryError(f"hook {target:#x} is out of rel32 reach of the site at {site_pc:#x}")
    return b"\xe8" + rel.to_bytes(4, "little", signed=True)


def _release_engine_memory(memory: "CodeMemory", spare_private_copies: list["CodeMemory"]) -> None:
    while spare_private_copies:
        spare_private_copies.pop().unmap()
    memory.unmap()
    if memory.fd >= 0:
        lib.cm_close(memory.fd)
        memory.fd = -1


class StoreCode:
    """What one Store executes for one EngineCode.

    Debug off: the EngineCode mapping itself.  Debug on: a private CoW copy in
    which patch sites may be enabled (refcounted: user breakpoints and internal
    uses such as stepping share a site).
    """

    def __init__(self, engine_code: EngineCode, *, debug: bool, store_name: str = "store"):
        self.engine_code = engine_code
        self.debug = debug
        shared = engine_code._mapping_for_store_code()
        if debug:
            self._memory = engine_code._take_private_copy(f"store-code:{store_name}:{engine_code.name}")
        else:
            self._memory = shared
        self.base = StoreCodePC(self._memory.base)
        self.size = self._memory.size
        self.frame_table = engine_code.frame_table
        # One reference count per patch site (made on the first edit), read and
        # written by C (cm_sites_update) so that enabling every site of a
        # real-size module (an interrupt: hundreds of thousands) is one call.
        self._refcounts = None
        # The frame table's site records as the cdata cm_sites_update reads
        # (a view of the table, which this code keeps alive): made once.
        self._site_records = None
        # The image's base as the cdata cm_sites_update takes and the table's
        # site count: made with the refcounts (a step edits at every stop).
        self._image_pointer = None
        self._num_sites = 0
        self._enabled = 0  # sites whose count is > 0
        # Sites whose call goes to a per-site hook (codemem.sitehooks) instead
        # of the breakpoint veneer: image offset -> absolute target address.
        self._site_redirect: dict[int, int] = {}
        # pc -> carrier_store_at(pc): the breakpoint prelude asks at every stop.
        self._carrier_stores: dict[int, CarrierStore | None] = {}
        self._lock = threading.RLock()

    # -- addresses ----------------------------------------------------------

    @property
    def end(self) -> StoreCodePC:
        return StoreCodePC(self.base + self.size)

    @property
    def low_space(self):
        """The codemem.lowmem.LowAddressSpace this StoreCode's private copy
        was placed in (below 4 GiB), or None; helper mappings that must reach
        the code go there too (codemem.placement)."""
        memory = self._memory
        return memory.low_space if memory is not None and not memory.shared else None

    @property
    def code_end(self) -> StoreCodePC:
        return StoreCodePC(self.base + self.engine_code.code_size)

    @property
    def shares_engine_mapping(self) -> bool:
        return self.memory is self.engine_code._mapping_for_store_code()

    def contains(self, pc: int) -> bool:
        return self.base <= pc < self.base + self.size

    def offset_of(self, pc: int) -> ImageOffset:
        if not self.contains(pc):
            raise CodeMemoryError(f"pc {pc:#x} is outside {self.engine_code.name} [{self.base:#x}, {self.end:#x})")
        return ImageOffset(pc - self.base)

    def pc_of(self, offset: int) -> StoreCodePC:
        assert 0 <= offset < self.size, (offset, self.size)
        return StoreCodePC(self.base + offset)

    # -- patch sites ------------------------------------------------------------

    def site_index_at(self, pc: int) -> int:
        """Index of the patch site at ``pc``; CodeMemoryError if there is none."""
        offset = self.offset_of(pc)
        index = self.frame_table.site_index(offset)
        if index is None:
            raise CodeMemoryError(f"{pc:#x} ({self.engine_code.name}+{offset:#x}) is not a patch site")
        return index

    def carrier_store_at(self, pc: int) -> CarrierStore | None:
        """The carrier of the patch site at ``pc`` (frametable.carrier_store: a
        slot store, a deferred one, a local store, a move or a producer,
        FrameTable.site_carrier): None when ``pc``
        is no site of this code or its disabled form is the NOP."""
        try:
            return self._carrier_stores[pc]
        except KeyError:
            pass
        if not self.contains(pc):
            return None
        index = self.frame_table.site_index(pc - self.base)
        found = None if index is None else self.frame_table.site_carrier(index)
        if len(self._carrier_stores) >= _CARRIER_MEMO_LIMIT:
            self._carrier_stores.clear()
        self._carrier_stores[pc] = found  # asked at every breakpoint stop (the prelude); the code never changes
        return found

    def is_site_enabled(self, pc: int) -> bool:
        return self.site_refcount(self.offset_of(pc)) > 0

    def enabled_site_offsets(self) -> list[int]:
        if not self._enabled:
            return []
        column = self.frame_table.site_offset_column
        return [column[i] for i, count in enumerate(self._refcounts) if count]

    def site_refcount(self, offset: int) -> int:
        index = self.frame_table.site_index(offset)
        if index is None or self._refcounts is None:
            return 0
        return self._refcounts[index]

    def _describe(self, offset: int) -> str:
        return f"{self.base + offset:#x} ({self.engine_code.name}+{offset:#x})"

    def _site_bytes(self, offset: int, index: int, count: int, redirect: int | None) -> bytes:
        """What the site executes: the breakpoint call while any reference
        holds it (a plain stop wins over a hook), else the call to its hook,
        else the disabled NOP."""
        if redirect is not None and not count:
            return _call_bytes(self.base + offset, redirect)
        site = self.frame_table.site(index)
        return site.enable if count else site.disable

    def _write_site(self, edit: "PatchEdit", offset: int, data: bytes) -> None:
        edit._touch(self, offset, offset + SITE_SIZE)
        memory = self.memory
        if memory.live_writable:
            memory.write_site_atomic(offset, data)
        else:
            memory.write(offset, data)

    def _change_sites(self, edit: "PatchEdit", indexes, enable: bool) -> int:
        """Adjusts the refcounts of the sites ``indexes`` (a range, or a
        sequence of site indexes) by one; a site's bytes are written when its
        count goes 0 -> 1 (enable) or 1 -> 0 (disable).  Returns how many
        sites were written.  Called by PatchEdit only, with the lock held;
        checks everything before changing anything (CodeMemoryError names the
        first bad site)."""
        count = len(indexes)
        if not count:
            return 0
        table = self.frame_table
        num_sites = table.num_sites
        if self._refcounts is None:
            self._make_refcounts()
        columns = table.site_offset_column.searchable
        if isinstance(indexes, range) and indexes.step == 1:
            if indexes.start < 0 or indexes.stop > num_sites:
                raise CodeMemoryError(f"{self.engine_code.name}: sites {indexes.start}..{indexes.stop - 1} are not "
                                      f"all among its {num_sites} patch sites")
            index_array, first = ffi.NULL, indexes.start
            span = (columns[first], columns[first + count - 1] + SITE_SIZE)
        else:
            index_array, first = ffi.new("uint32_t[]", [i if 0 <= i < 1 << 32 else num_sites
                                                       for i in indexes]), 0
            valid = [columns[i] for i in indexes if 0 <= i < num_sites]
            span = (min(valid), max(valid) + SITE_SIZE) if valid else (0, SITE_SIZE)
        edit._touch(self, *span)
        return self._update_sites(edit, indexes, index_array, first, count, enable)

    def _make_refcounts(self) -> None:
        """The C state of site edits, made on the first edit (with the lock
        held): the refcounts, the site records, the image pointer."""
        table = self.frame_table
        self._num_sites = table.num_sites
        self._refcounts = ffi.new("uint32_t[]", max(self._num_sites, 1))
        self._site_records = ffi.from_buffer("uint8_t[]", table.site_records())
        self._image_pointer = ffi.cast("uint8_t *", self.memory.base)

    def _update_sites(self, edit: "PatchEdit", indexes, index_array, first: int, count: int, enable: bool) -> int:
        """The C bulk edit of :meth:`_change_sites` over pages already made
        writable (``index_array`` NULL: the sites first .. first+count-1),
        all or nothing; CodeMemoryError names the first bad site of
        ``indexes``."""
        memory = self._memory
        assert memory is not None and self._image_pointer is not None, "edit of a closed StoreCode (touched first)"
        written = lib.cm_sites_update(self._image_pointer, self.engine_code.code_size,
                                      self._site_records, self._num_sites, self._refcounts,
                                      index_array, first, count, 1 if enable else -1,
                                      1 if memory.live_writable else 0)
        if written < 0:
            table = self.frame_table
            bad = indexes[-written - 1]
            if not 0 <= bad < table.num_sites:
                raise CodeMemoryError(f"{self.engine_code.name}: no patch site {bad}")
            offset = table.site_offset_column[bad]
            if not enable:
                raise CodeMemoryError(f"{self._describe(offset)}: disabling a site that is not enabled")
            raise CodeMemoryError(f"{self._describe(offset)}: malformed patch site record {bad}")
        self._enabled += written if enable else -written
        if not enable and written and self._site_redirect:
            self._rewrite_hooks(edit, indexes)
        return written

    def prepare_sites(self, groups) -> "PreparedSites":
        """``groups`` (ranges or sequences of this code's site indexes, as
        :meth:`PatchEdit.enable_sites` takes them) made ready for repeated
        bulk edits (PatchEdit.enable_prepared): the sequences joined into one
        C index array, the span of image offsets every group touches
        computed, once.  CodeMemoryError names a site index this code does
        not have."""
        return PreparedSites(self, groups)

    def _change_prepared(self, edit: "PatchEdit", prepared: "PreparedSites", enable: bool) -> int:
        """:meth:`_change_sites` over each part of ``prepared``, the pages
        made writable once; all or nothing (a part that fails undoes the
        parts before it).  Called by PatchEdit only, with the lock held."""
        if prepared.store_code is not self:
            raise CodeMemoryError(f"sites prepared for {prepared.store_code.engine_code.name} edited through "
                                  f"{self.engine_code.name}")
        parts = prepared.parts
        if not parts:
            return 0
        if self._refcounts is None:
            self._make_refcounts()
        edit._touch(self, *prepared.span)
        if prepared.single is not None:  # a step plan's one array: nothing to undo on failure
            return self._update_sites(edit, *prepared.single, enable)
        written = 0
        done = []
        try:
            for part in prepared.parts:
                written += self._update_sites(edit, *part, enable)
                done.append(part)
        except CodeMemoryError:
            for part in reversed(done):
                self._update_sites(edit, *part, not enable)
            raise
        return written

    def _rewrite_hooks(self, edit: "PatchEdit", indexes) -> None:
        """After references were dropped: a redirected site whose count reached
        0 was written back to its NOP by C; it calls its hook again."""
        table = self.frame_table
        dropped = indexes if isinstance(indexes, range) else set(indexes)
        for offset, target in self._site_redirect.items():
            index = table.site_index(offset)
            if index in dropped and not self._refcounts[index]:
                self._write_site(edit, offset, _call_bytes(self.base + offset, target))

    def _count(self, index: int) -> int:
        return self._refcounts[index] if self._refcounts is not None else 0

    def _redirect_site(self, edit: "PatchEdit", offset: int, target: int | None) -> bool:
        """Points the site's call at ``target`` (None: back to no hook).  The
        bytes change only while no plain reference holds the site."""
        index = self.frame_table.site_index(offset)
        if index is None:
            raise CodeMemoryError(f"{self._describe(offset)} is not a patch site")
        if target is not None:
            _call_bytes(self.base + offset, target)  # checks the reach first
        old = self._site_redirect.get(offset)
        if old == target:
            return False
        if target is None:
            self._site_redirect.pop(offset, None)
        else:
            self._site_redirect[offset] = target
        if self._count(index):
            return False
        self._write_site(edit, offset, self._site_bytes(offset, index, 0, target))
        return True

    def redirected_site_offsets(self) -> dict[int, int]:
        """Image offset -> hook address of every site with a hook."""
        return dict(self._site_redirect)

    # -- reading for a debugger --------------------------------------------

    def read_for_debugger(self, pc: int, length: int) -> bytes:
        """The bytes at [pc, pc+length) with every enabled site shown as its
        disabled bytes, so a debugger never sees our patches."""
        offset = self.offset_of(pc)
        if offset + length > self.size:
            raise CodeMemoryError(f"read {pc:#x}+{length:#x} runs past the end of {self.engine_code.name}")
        with self._lock:
            data = bytearray(self.memory.read(offset, length))
            if self._enabled or self._site_redirect:
                table = self.frame_table
                for index in table.site_indexes_in(offset - SITE_SIZE + 1, offset + length):
                    site = table.site(index)
                    if not self._count(index) and site.offset not in self._site_redirect:
                        continue
                    for k in range(SITE_SIZE):
                        at = site.offset + k - offset
                        if 0 <= at < length:
                            data[at] = site.disable[k]
        return bytes(data)

    def read_raw(self, pc: int, length: int) -> bytes:
        """The bytes as executed (patches visible); for tests and `inspect`."""
        offset = self.offset_of(pc)
        return self.memory.read(offset, length)

    @property
    def memory(self) -> CodeMemory:
        memory = self._memory
        if memory is None:
            raise CodeMemoryError(f"the {self.engine_code.name} code of a closed Store")
        return memory

    @property
    def closed(self) -> bool:
        return self._memory is None

    def close(self) -> None:
        """Ends this Store's use of the code.  A private copy goes back to the
        EngineCode (which resets or unmaps it); afterwards every access fails
        instead of reaching a mapping that may belong to another Store."""
        with self._lock:
            memory, self._memory = self._memory, None
            self._refcounts, self._site_records, self._enabled = None, None, 0
            self._image_pointer = None
            self._site_redirect.clear()
        if memory is not None and memory is not self.engine_code._mapping_for_store_code():
            self.engine_code._give_back_private_copy(memory)


class PreparedSites:
    """Site indexes of one StoreCode made ready for repeated bulk edits
    (StoreCode.prepare_sites): a step plan is armed and disarmed at every
    stop of a loop, so what each edit would otherwise rebuild (the C index
    array, the span of pages to make writable) is made once.  ``parts`` are
    ``(indexes, C index array or NULL, first, count)``: a plan of at most
    :data:`PREPARED_ARRAY_LIMIT` sites is one array (one C call per edit);
    in a larger one each range stays a range (a large function's sites never
    become a list) and the sequences are joined into one array."""

    __slots__ = ("store_code", "parts", "span", "single")

    def __init__(self, store_code: StoreCode, groups):
        table = store_code.frame_table
        num_sites = table.num_sites
        offsets = table.site_offset_column.searchable
        parts = []
        listed: list[int] = []
        lo, hi = None, None
        for indexes in groups:
            if not len(indexes):
                continue
            if isinstance(indexes, range) and indexes.step == 1:
                if indexes.start < 0 or indexes.stop > num_sites:
                    raise CodeMemoryError(f"{store_code.engine_code.name}: sites {indexes.start}..{indexes.stop - 1} "
                                          f"are not all among its {num_sites} patch sites")
                parts.append((indexes, ffi.NULL, indexes.start, len(indexes)))
                first, last = offsets[indexes.start], offsets[indexes.stop - 1]
            else:
                bad = next((i for i in indexes if not 0 <= i < num_sites), None)
                if bad is not None:
                    raise CodeMemoryError(f"{store_code.engine_code.name}: no patch site {bad}")
                listed.extend(indexes)
                first, last = min(offsets[i] for i in indexes), max(offsets[i] for i in indexes)
            lo = first if lo is None else min(lo, first)
            hi = last if hi is None else max(hi, last)
        if sum(part[3] for part in parts) + len(listed) <= PREPARED_ARRAY_LIMIT:
            # Few enough to list: everything in one array, one C call per edit.
            listed = [index for part in parts for index in part[0]] + listed
            parts = []
        if listed:
            parts.append((listed, ffi.new("uint32_t[]", listed), 0, len(listed)))
        self.store_code = store_code
        self.parts = tuple(parts)
        self.span = (lo, hi + SITE_SIZE) if parts else (0, SITE_SIZE)
        #: The one part of a plan that has just one (most: a step's), else None.
        self.single = parts[0] if len(parts) == 1 else None


class PatchEdit:
    """A batch of site changes across images.

    Each touched image is unpublished once, on first touch; every touched image
    is republished when the edit ends, also when it ends by an exception (so
    no Store is ever left with non-executable code).  ``live=True`` is for code
    a guest thread may be running: images become r-w-x for the edit and sites
    are written with one atomic store each.
    """

    def __init__(self, *, live: bool = False):
        self.live = live
        self._touched: list[StoreCode] = []
        self.changed = 0

    def _touch(self, store_code: StoreCode, start: int, end: int) -> None:
        """Makes the pages of image offsets [start, end) of ``store_code``
        writable for this edit: the first touch of an image unpublishes it,
        later ones extend its writable part."""
        memory = store_code._memory
        if memory is None:
            memory = store_code.memory  # raises: the code of a closed Store
        if store_code not in self._touched:
            assert store_code.debug, "patching a StoreCode with debugging off"
            memory.unpublish(live=self.live, start=start, end=end)
            self._touched.append(store_code)
        else:
            memory.extend_writable(start, end)

    def enable_site(self, store_code: StoreCode, pc: int) -> bool:
        """Enables the site at ``pc`` (refcounted). True if bytes changed."""
        return self.enable_sites(store_code, [store_code.site_index_at(pc)]) > 0

    def disable_site(self, store_code: StoreCode, pc: int) -> bool:
        return self.disable_sites(store_code, [store_code.site_index_at(pc)]) > 0

    def enable_sites(self, store_code: StoreCode, indexes) -> int:
        """Enables the sites ``indexes`` of ``store_code`` (site indexes of its
        frame table: a ``range`` or a sequence; a site listed twice gets two
        references), all in one C call.  Returns the number of sites whose
        bytes changed.  All or nothing: CodeMemoryError names the first bad
        site and nothing changes."""
        with store_code._lock:
            changed = store_code._change_sites(self, indexes, True)
        self.changed += changed
        return changed

    def disable_sites(self, store_code: StoreCode, indexes) -> int:
        """Drops one reference of each of the sites ``indexes`` (see
        :meth:`enable_sites`); a site that is not enabled is an error."""
        with store_code._lock:
            changed = store_code._change_sites(self, indexes, False)
        self.changed += changed
        return changed

    def enable_prepared(self, prepared: PreparedSites) -> int:
        """:meth:`enable_sites` of sites prepared once (StoreCode.prepare_sites),
        all or nothing; returns the number of sites whose bytes changed."""
        store_code = prepared.store_code
        with store_code._lock:
            changed = store_code._change_prepared(self, prepared, True)
        self.changed += changed
        return changed

    def disable_prepared(self, prepared: PreparedSites) -> int:
        """:meth:`disable_sites` of sites prepared once, all or nothing."""
        store_code = prepared.store_code
        with store_code._lock:
            changed = store_code._change_prepared(self, prepared, False)
        self.changed += changed
        return changed

    def redirect_site(self, store_code: StoreCode, pc: int, target: int | None) -> bool:
        """Makes the site at ``pc`` call ``target`` (a per-site hook,
        codemem.sitehooks) whenever no plain reference enables it; None
        removes the hook.  True if bytes changed."""
        with store_code._lock:
            changed = store_code._redirect_site(self, store_code.offset_of(pc), target)
        self.changed += changed
        return changed

    def __enter__(self) -> "PatchEdit":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def finish(self) -> None:
        """Republishes every touched image (idempotent).  For an edit that
        spans more than one ``with`` block, the owner calls this itself."""
        touched = self._touched
        if not touched:
            return
        errors = []
        for store_code in touched:
            memory = store_code._memory
            if memory is None:
                memory = store_code.memory  # raises: the code of a closed Store
            try:
                memory.publish()
            except OSError as e:  # keep republishing the others
                errors.append(e)
        self._touched = []
        if errors:
            raise errors[0]
