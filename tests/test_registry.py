"""ModuleRegistry: lookups, memoization, overlap checks, and the every-address sweep."""
import pytest

from codemem import CodeMemoryError
from codemem.code import EngineCode
from codemem.registry import ModuleRegistry, ModuleWithCode
from imagekit import ADD, CALL_HOST, SPIN, TRAP7, build_image


@pytest.fixture(scope="module")
def engines():
    images = [build_image(fs) for fs in ([ADD, SPIN], [TRAP7, ADD, CALL_HOST], [SPIN])]
    engines = [EngineCode(b.code, b.table, name=f"img{i}") for i, b in enumerate(images)]
    for e, b in zip(engines, images):
        e.built = b
    yield engines
    for e in engines:
        e.close()


@pytest.mark.parametrize("debug", [True, False])
def test_every_address_maps_back_to_its_image_and_function(engines, debug):
    registry = ModuleRegistry(debug=debug)
    entries = [registry.register(f"module{i}", e) for i, e in enumerate(engines)]
    try:
        for entry, engine in zip(entries, engines):
            code = entry.store_code
            starts = engine.built.functions
            for pc in range(code.base, code.end):
                found = registry.lookup(pc)
                assert found is entry, f"{pc:#x} maps to the wrong image"
                func = found.function_at(pc)
                offset = pc - code.base
                owner = [i for i, s in enumerate(starts) if s <= offset and (i + 1 == len(starts) or offset < starts[i + 1])]
                if func is not None:
                    assert owner and func.wasm_index == owner[0], f"{pc:#x} maps to function {func.wasm_index}"
                    assert func.native_start <= offset < func.native_end
                else:
                    # padding between functions, the veneers, the slots and the frame table
                    assert not owner or offset >= starts[owner[0]] + engine.frame_table.function(owner[0]).native_size
            for pc in (code.base - 1, code.end):
                other = registry.lookup(pc)
                assert other is None or other is not entry
    finally:
        for e in engines:
            registry.unregister(e)
    assert registry.entries() == []


def test_addresses_between_images_map_to_nothing(engines):
    registry = ModuleRegistry(debug=True)
    entries = [registry.register(None, e) for e in engines]
    try:
        spans = sorted((en.store_code.base, en.store_code.end) for en in entries)
        for (_, end), (next_start, _) in zip(spans, spans[1:]):
            for pc in (end, (end + next_start) // 2, next_start - 1):
                if end <= pc < next_start:
                    assert registry.lookup(pc) is None
        assert registry.lookup(0) is None and registry.lookup(2**64 - 1) is None
        with pytest.raises(CodeMemoryError, match="0x10 is outside every registered image"):
            registry.lookup_or_raise(0x10)
    finally:
        for e in engines:
            registry.unregister(e)


def test_engine_code_is_instantiated_once_per_store(engines):
    r1, r2 = ModuleRegistry(debug=True), ModuleRegistry(debug=True)
    a = r1.register("m", engines[0])
    b = r1.register("m", engines[0])
    c = r2.register("m", engines[0])
    assert a is b and a.store_code is b.store_code
    assert c.store_code.base != a.store_code.base
    assert r1.store_code_for(engines[0]) is a.store_code
    r1.unregister(engines[0])
    assert r1.lookup(a.store_code.base) is a, "still registered once"
    r1.unregister(engines[0])
    assert r1.lookup(a.store_code.base) is None
    with pytest.raises(CodeMemoryError, match="not registered"):
        r1.unregister(engines[0])
    r2.unregister(engines[0])


def test_overlapping_registration_is_refused(engines):
    registry = ModuleRegistry(debug=True)
    entry = registry.register(None, engines[0])
    try:
        # Forge an entry whose code claims to start inside the first image.
        class FakeCode:
            base = entry.store_code.base + 16
            end = entry.store_code.end + 16
            engine_code = engines[1]

        with pytest.raises(CodeMemoryError, match="overlaps img0"):
            registry._insert(ModuleWithCode(None, FakeCode()))
        assert registry.entries() == [entry]
    finally:
        registry.unregister(engines[0])
