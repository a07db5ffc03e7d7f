"""codemem/lowmem.py: debug Stores' memory below 4 GiB (docs/pointers.md).

Placement in a private window so the tests never compete with the process's
own LowAddressSpace: first fit, foreign mappings learned from EEXIST, a clear
error when the window is full, ranges reused after unmap; and, end to end, a
debug Store whose code, stack, contexts and global cells all lie in
[LOW_FLOOR, LOW_CEILING) while a non-debug Store's do not have to.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from codemem import Engine, Instance, Module, Store
from codemem.lowmem import GRANULE, LOW_CEILING, LOW_FLOOR, LowAddressSpace, LowHeap, LowMemoryExhausted
from codemem.native import PROT_READ, PROT_WRITE, ffi, lib

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "build"

#: A window of our own, far from the process's [2 GiB, 4 GiB) one.
WINDOW = (0x5_0000_0000, 0x5_0040_0000)  # 4 MiB at 20 GiB


def test_ranges_are_placed_first_fit_inside_the_window_and_reused_after_unmap():
    space = LowAddressSpace(*WINDOW)
    a = space.map_anonymous(4096)
    b = space.map_anonymous(GRANULE + 1)
    assert a == WINDOW[0] and b == WINDOW[0] + GRANULE
    ffi.cast("uint64_t *", b)[0] = 7  # mapped read+write
    space.unmap(a, 4096)
    assert space.map_anonymous(100) == a
    assert space.bytes_in_use == 3 * GRANULE  # a again (one granule) and b (two)
    space.unmap(a, 100)
    space.unmap(b, GRANULE + 1)
    assert space.bytes_in_use == 0


@pytest.mark.timeout(20)
def test_an_unmap_while_the_same_thread_holds_the_lock_does_not_wait_for_itself():
    # What the garbage collector does when it finalizes a dropped EngineCode
    # inside map() on the thread that is placing a Store.
    space = LowAddressSpace(*WINDOW)
    a = space.map_anonymous(4096)
    with space._lock:
        space.unmap(a, 4096)  # must return: unmapped now, freed in the bookkeeping later
    assert lib.cm_map_at(-1, 4096, PROT_READ | PROT_WRITE, 0, a) == a  # nothing mapped there any more
    lib.cm_unmap(a, 4096)
    assert space.bytes_in_use == 0
    assert space.map_anonymous(100) == a  # the range is free again
    space.unmap(a, 100)


def test_memory_someone_else_mapped_in_the_window_is_stepped_over():
    space = LowAddressSpace(*WINDOW)
    foreign = lib.cm_map_at(-1, GRANULE, PROT_READ | PROT_WRITE, 0, WINDOW[0])
    assert foreign == WINDOW[0]
    try:
        placed = space.map_anonymous(4096)
        assert placed >= WINDOW[0] + GRANULE
        space.unmap(placed, 4096)
    finally:
        lib.cm_unmap(foreign, GRANULE)


def test_a_full_window_says_what_it_needed_and_how_much_is_in_use():
    space = LowAddressSpace(*WINDOW)
    held = space.map_anonymous(WINDOW[1] - WINDOW[0])
    with pytest.raises(LowMemoryExhausted, match=r"no free 64 KiB range for guest stack .* use 4 MiB"):
        space.map_stack(4096, 0)
    space.unmap(held, WINDOW[1] - WINDOW[0])


def test_a_stacks_guard_is_unreadable():
    space = LowAddressSpace(*WINDOW)
    base = space.map_stack(4 * GRANULE, GRANULE)
    with open("/proc/self/maps") as maps:
        guard = [line for line in maps if line.startswith(f"{base:x}-")]
    assert guard and guard[0].split()[1].startswith("---"), guard
    space.unmap(base, 4 * GRANULE)


def test_a_low_heap_hands_out_zeroed_aligned_cells_and_frees_them_all_at_close():
    space = LowAddressSpace(*WINDOW)
    heap = LowHeap(space)
    cells, address = heap.alloc(24)
    other, address2 = heap.alloc(8)
    assert address % 16 == 0 and address2 == address + 32
    assert list(cells[0:3]) == [0, 0, 0]
    big, big_address = heap.alloc(LowHeap.CHUNK + 8)
    assert big_address >= address + LowHeap.CHUNK
    heap.close()
    assert space.bytes_in_use == 0


def test_a_debug_store_lives_below_4_gib_and_above_the_mirror():
    store = Store(Engine(debug=True))
    module = Module.from_file(store.engine, EXAMPLES / "demo.O0.wasm")
    instance = Instance(store, module, [])
    stack = store.ctx.stack
    addresses = [instance.store_code.base, instance.store_code.end, stack.base, stack.top, instance.vmctx_address,
                 store.ctx.entry_thunk] + [g.cell_address for g in instance.globals]
    assert all(LOW_FLOOR <= a <= LOW_CEILING for a in addresses), [hex(a) for a in addresses]
    assert instance.exports["run"]() == 505
    store.close()


def test_a_non_debug_engine_places_nothing_low_and_refuses_to():
    store = Store(Engine(debug=False))
    assert store.low_heap is None and store.ctx.entry_thunk == 0
    with pytest.raises(ValueError, match="debug Engines only"):
        Engine(debug=False, low_addresses=True)
