#!/usr/bin/env python3
"""Benchmark: creating a Store's code for an 8 MiB image, three ways, in one run.

* shared: debugging off, the StoreCode is the EngineCode mapping itself
* cow:    debugging on, a MAP_PRIVATE copy-on-write mapping of the sealed memfd.
          Steady state: Stores are created and dropped one after another, and
          a dropped Store's copy, reset with MADV_DONTNEED, serves the next one
          (no mmap).  Also measured cold: no spare copy, a fresh mmap each time.
* copy:   the naive alternative, a fresh anonymous mapping with all 8 MiB copied

then the cost of the first patch in a fresh debug Store (one page copied).
Prints the figures; the last line is one JSON object.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from codemem import native  # noqa: E402
from codemem.code import EngineCode, StoreCode  # noqa: E402
from codemem.registry import ModuleRegistry  # noqa: E402
from codemem.native import PROT_EXEC, PROT_READ, PROT_WRITE, ffi, lib  # noqa: E402
from imagekit import SITE, build_image  # noqa: E402

IMAGE_SIZE = 8 << 20
ROUNDS = 200


def full_copy(engine: EngineCode) -> int:
    """What a Store without CoW would do: allocate, copy every byte, publish."""
    size = engine.size
    base = native.check(lib.cm_map(-1, size, PROT_READ | PROT_WRITE, 0), "map copy")
    ffi.memmove(ffi.cast("char *", base), ffi.cast("char *", engine._mapping_for_store_code().base), size)
    native.check(lib.cm_protect(base, size, PROT_READ | PROT_EXEC), "publish copy")
    return base


def timed(fn, rounds=ROUNDS) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    functions = [[SITE, b"\xc3"] for _ in range(IMAGE_SIZE // 4096)]
    built = build_image(functions, align=4096, pad_to=IMAGE_SIZE - 64)
    engine = EngineCode(built.code, built.table, name="bench8m")
    engine.read(0, engine.size)  # fault the canonical pages in once, as a running engine would have

    def create_only(make, rounds=ROUNDS):
        """Median time of make() alone; what it made is torn down untimed."""
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            made = make()
            samples.append(time.perf_counter() - t0)
            made.close() if hasattr(made, "close") else lib.cm_unmap(made, engine.size)
        return statistics.median(samples)

    class Registered:
        """A Store's way to get its code: ModuleRegistry.register (memoized, overlap-checked)."""

        def __init__(self, debug):
            self.registry = ModuleRegistry(debug=debug)
            self.registry.register(None, engine)

        def close(self):
            self.registry.unregister(engine)

    class RegisteredCold(Registered):
        """The first debug Store of an EngineCode: no spare copy to reuse."""

        def close(self):
            super().close()
            while engine._spare_private_copies:
                engine._spare_private_copies.pop().unmap()

    t_shared = create_only(lambda: Registered(False))
    t_cow = create_only(lambda: Registered(True))
    t_cow_cold = create_only(lambda: RegisteredCold(True))
    t_copy = create_only(lambda: full_copy(engine), 30)
    t_ctor_shared = create_only(lambda: StoreCode(engine, debug=False))
    t_ctor_cow = create_only(lambda: StoreCode(engine, debug=True))

    site = built.sites[len(built.sites) // 2][0]

    def first_patch():
        from codemem.code import PatchEdit

        code = StoreCode(engine, debug=True)
        code.memory.discard_private_pages()  # a first patch copies its page even in a recycled copy
        t0 = time.perf_counter()
        with PatchEdit() as edit:
            edit.enable_site(code, code.pc_of(site))
        elapsed = time.perf_counter() - t0
        code.close()
        return elapsed

    t_patch = statistics.median(first_patch() for _ in range(ROUNDS))
    engine.close()

    print(f"image: {IMAGE_SIZE >> 20} MiB, creation time, median of {ROUNDS} rounds (copy: 30)")
    print(f"  Store gets its code, debug off (shared mapping): {t_shared * 1e6:9.1f} us")
    print(f"  Store gets its code, debug on  (CoW mapping):    {t_cow * 1e6:9.1f} us  (steady state: recycled copy)")
    print(f"  the same, cold (first Store: a fresh mmap):      {t_cow_cold * 1e6:9.1f} us")
    print(f"  full private copy of the image:                  {t_copy * 1e6:9.1f} us")
    print(f"  bare StoreCode constructor, shared / CoW:        {t_ctor_shared * 1e6:9.1f} / {t_ctor_cow * 1e6:.1f} us")
    print(f"  first patch in a fresh debug Store:              {t_patch * 1e6:9.1f} us")
    result = {
        "image_mib": IMAGE_SIZE >> 20,
        "shared_us": round(t_shared * 1e6, 2),
        "cow_us": round(t_cow * 1e6, 2),
        "cow_cold_us": round(t_cow_cold * 1e6, 2),
        "copy_us": round(t_copy * 1e6, 2),
        "first_patch_us": round(t_patch * 1e6, 2),
        "ctor_cow_over_shared": round(t_ctor_cow / t_ctor_shared, 3),
        "cow_over_shared": round(t_cow / t_shared, 3),
        "cow_cold_over_shared": round(t_cow_cold / t_shared, 3),
        "copy_over_cow": round(t_copy / t_cow_cold, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
