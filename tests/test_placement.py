"""codemem/placement.py: one placement policy for the mappings a debug
StoreCode's code must reach (its hook area, its displaced-breakpoint scratch).

The invariant, on literals (:func:`placement_violation`), then swept over many
low Stores at once: every helper mapping is within rel32 reach of its code,
inside [2 GiB, 4 GiB) (never in the linear-memory mirror's range below), in
the low space's bookkeeping (so nothing else is placed over it) and disjoint
from every other Store's code, stack and helpers; closing gives the room back,
also when the garbage collector does it.
"""
from __future__ import annotations

import gc
from pathlib import Path

import pytest

from codemem import Engine, Instance, Module, Store, displaced, sitehooks
from codemem.lowmem import GRANULE, LOW_CEILING, LOW_FLOOR, LowAddressSpace, low_address_space
from codemem.placement import REL32_REACH, map_near_code, placement_violation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "build"

MiB = 1 << 20
CODE = (0x9000_0000, 0x9010_0000)  # a 1 MiB image at 2.25 GiB


LOW = (LOW_FLOOR, LOW_CEILING)


@pytest.mark.parametrize("base, size, window, problem", [
    (CODE[1], MiB, LOW, None),
    (CODE[0] - 8 * MiB, 8 * MiB, LOW, None),
    (CODE[0] + 4096, 4096, LOW, "overlaps the code"),
    (LOW_FLOOR - MiB, 2 * MiB, LOW, "outside [0x80000000, 0x100000000)"),   # into the mirror's range
    (LOW_CEILING - MiB, 2 * MiB, LOW, "outside [0x80000000, 0x100000000)"),  # past what x32 reaches
    (LOW_FLOOR - MiB, MiB, None, None),  # a Store placed anywhere may use it
    (0x7_0000_0000, MiB, None, "out of rel32 reach"),
    (CODE[0] - REL32_REACH, MiB, None, "out of rel32 reach"),
    (CODE[1] + 64 * MiB, MiB, None, None),
])
def test_the_placement_invariant_on_literal_ranges(base, size, window, problem):
    found = placement_violation(*CODE, base, size, window=window)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def _ranges_overlap(ranges: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    ordered = sorted(ranges)
    return [(a[2], b[2]) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]]


def test_many_low_stores_get_hook_areas_and_scratch_inside_their_window_disjoint_and_booked():
    space = low_address_space()
    engine = Engine(debug=True)
    modules = [Module.from_file(engine, EXAMPLES / name) for name in ("demo.O0.wasm", "agent.O0.wasm")]
    stores, ranges = [], []
    # The space is the process's: a collection in the middle of the loop would
    # run the finalizers of earlier tests' Stores, whose unmaps change
    # bytes_in_use between `before` and the check.
    gc.collect()
    gc.disable()
    try:
        for k in range(24):
            store = Store(engine)
            stores.append(store)
            stack = store.ctx.stack
            ranges.append((stack.base, stack.top, f"stack {k}"))
            for module in modules:
                instance = Instance(store, module, [])
                code = instance.store_code
                before = space.bytes_in_use
                hooks = sitehooks.hook_area_for(code)
                scratch = displaced.area_for(code)
                # Both went through the space's bookkeeping (nothing else can
                # be placed over them), each rounded up to its granule.
                booked = -(-hooks.size // GRANULE) * GRANULE + -(-scratch.size // GRANULE) * GRANULE
                assert space.bytes_in_use - before == booked
                ranges.append((code.base, code.end, f"code {k} {module.name}"))
                for what, base, size in (("hooks", hooks.base, hooks.size), ("scratch", scratch.base, scratch.size)):
                    assert placement_violation(code.base, code.end, base, size, window=LOW) is None, \
                        (what, k, hex(base))
                    assert LOW_FLOOR <= base and base + size <= LOW_CEILING
                    ranges.append((base, base + size, f"{what} {k} {module.name}"))
        assert _ranges_overlap(ranges) == []
    finally:
        in_use = space.bytes_in_use
        freed = 0
        for store in stores:
            for entry in store.registry.entries():
                for area in (sitehooks.existing_hook_area(entry.store_code), entry.store_code._displaced_area):
                    if area is not None and not area.closed:
                        freed += -(-area.size // GRANULE) * GRANULE
                        area.close()
            store.close()
        gc.enable()
    assert in_use - space.bytes_in_use >= freed


def test_a_store_placed_anywhere_gets_its_hook_area_within_reach_of_its_code():
    store = Store(Engine(debug=True, low_addresses=False))
    try:
        instance = Instance(store, Module.from_file(store.engine, EXAMPLES / "demo.O0.wasm"), [])
        code = instance.store_code
        assert code.low_space is None
        hooks = sitehooks.hook_area_for(code)
        assert placement_violation(code.base, code.end, hooks.base, hooks.size) is None
        hooks.close()
        assert hooks.closed
    finally:
        store.close()


class _FakeStoreCode:
    """What map_near_code reads of a StoreCode, over a private window."""

    def __init__(self, space: LowAddressSpace, base: int, end: int):
        self.low_space, self.base, self.end = space, base, end
        self.engine_code = type("E", (), {"name": "fake"})()


def test_a_collected_mapping_gives_its_room_back_at_the_next_placement():
    # A private window at 20 GiB (as tests/test_lowmem.py): this test's
    # bookkeeping is exact.  The "code" sits in the window's first granule.
    window = (0x5_0000_0000, 0x5_0010_0000)
    space = LowAddressSpace(*window)
    code = space.map_anonymous(GRANULE)
    fake = _FakeStoreCode(space, code, code + GRANULE)
    mapping = map_near_code(fake, 3 * GRANULE, what="hook area")
    assert mapping.base == code + GRANULE and space.bytes_in_use == 4 * GRANULE
    del mapping
    gc.collect()
    # Unmapped at once, forgotten by the next call that takes the lock.
    assert space.bytes_in_use == GRANULE
    again = map_near_code(fake, 3 * GRANULE, what="hook area")
    assert again.base == code + GRANULE
    again.close()
    space.unmap(code, GRANULE)
    assert space.bytes_in_use == 0


def test_a_full_window_refuses_a_helper_with_a_message_naming_it():
    window = (0x5_0000_0000, 0x5_0004_0000)  # 4 granules
    space = LowAddressSpace(*window)
    code = space.map_anonymous(3 * GRANULE)
    fake = _FakeStoreCode(space, code, code + 3 * GRANULE)
    with pytest.raises(MemoryError, match=r"no free 128 KiB range for hook area of fake"):
        map_near_code(fake, 2 * GRANULE, what="hook area")
    space.unmap(code, 3 * GRANULE)
