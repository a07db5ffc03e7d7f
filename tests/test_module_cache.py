"""The on-disk cache of compiled images (``Engine(cache_dir=...)``, ``Module._cached_image``).

Contract:

* a warm load (a second Engine on the same directory) gives byte-identical code
  and frame table, and does not run the compiler;
* a damaged entry (truncated, empty, garbage, wrong magic, a flipped byte in the
  code or in the frame table, an entry stored under another module's name) is
  ignored: the module is recompiled, runs correctly, and the entry is rewritten;
* the key changes with the module bytes, the debug flag and the compiler version (a digest of codemem's sources),
  so one directory serves every combination without mixing them up.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wasmtime

import codemem
import codemem.runtime as runtime
import codemem.x64.compiler as compiler

WAT = """(module $cached
  (memory 1)
  (func $sq (param i32) (result i32) (i32.mul (local.get 0) (local.get 0)))
  (func (export "f") (param i32) (result i32) (i32.add (call $sq (local.get 0)) (i32.const 0x1234567)))
  (func (export "g") (result f64) (f64.const 2.5)))"""
WASM = wasmtime.wat2wasm(WAT)
EXPECTED_F3 = 9 + 0x1234567


def image(module: codemem.Module) -> tuple[bytes, bytes]:
    code = module.engine_code
    return code.read(0, code.code_size), code.frame_table.data


def run(module: codemem.Module) -> tuple:
    store = codemem.Store(module.engine)
    try:
        exports = codemem.Instance(store, module, []).exports
        return exports["f"](3), exports["g"]()
    finally:
        store.close()


class CompileCounter:
    """Counts calls of the compiler (the cache must skip it on a hit)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = compiler.compile_module

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(compiler, "compile_module", counting)


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.suffix == ".img")


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
def test_warm_load_is_identical_and_skips_the_compiler(tmp_path, monkeypatch, debug):
    counter = CompileCounter(monkeypatch)
    cold = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    assert counter.calls == 1
    assert len(entries(tmp_path)) == 1
    warm = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    assert counter.calls == 1, "a warm load ran the compiler"
    assert image(warm) == image(cold)
    assert warm.engine_code.frame_table.debug is debug
    assert run(warm) == run(cold) == (EXPECTED_F3, 2.5)
    # And identical to a compile without any cache.
    uncached = codemem.Module(codemem.Engine(debug=debug), WASM)
    assert image(uncached) == image(cold)


def test_environment_variable_enables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WASM_GDBSTUB_CACHE", str(tmp_path / "env-cache"))
    codemem.Module(codemem.Engine(), WASM)
    assert len(entries(tmp_path / "env-cache")) == 1


def _flip(offset_from: str):
    """A corruption that flips one byte of the code or of the frame table payload,
    leaving the header and lengths intact."""

    def corrupt(blob: bytes, code: bytes, table: bytes) -> bytes:
        data = bytearray(blob)
        if offset_from == "code":
            at = blob.index(struct.pack("<I", 0x1234567))  # the constant's immediate
        elif offset_from == "table-header":
            at = len(blob) - len(table)  # the frame table's magic (the table ends the entry)
            assert blob[at : at + 4] == b"WFT\x01"
        else:
            at = len(blob) - 1  # the last byte of the frame table
        data[at] ^= 0x01
        return bytes(data)

    return corrupt


CORRUPTIONS = {
    "empty": lambda blob, code, table: b"",
    "truncated-header": lambda blob, code, table: blob[:7],
    "truncated-payload": lambda blob, code, table: blob[:-100],
    "extended": lambda blob, code, table: blob + b"\x00",
    "garbage": lambda blob, code, table: bytes(range(256)) * 8,
    "wrong-magic": lambda blob, code, table: b"XXXX" + blob[4:],
    "code-byte": _flip("code"),
    "padding-byte": lambda blob, code, table: blob[: len(blob) - len(table) - 1] + b"\x01" + blob[len(blob) - len(table):],
    "table-magic": _flip("table-header"),
    "table-last-byte": _flip("table-end"),
}


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_entry_is_ignored_and_rewritten(tmp_path, monkeypatch, name, debug):
    good = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    code, table = image(good)
    (entry,) = entries(tmp_path)
    blob = entry.read_bytes()
    entry.write_bytes(CORRUPTIONS[name](blob, code, table))
    counter = CompileCounter(monkeypatch)
    reloaded = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    assert counter.calls == 1, f"a {name} entry was used instead of recompiling"
    assert image(reloaded) == (code, table)
    assert run(reloaded) == (EXPECTED_F3, 2.5)
    assert entry.read_bytes() == blob, "the damaged entry was not replaced by a good one"
    codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    assert counter.calls == 1, "the rewritten entry is not used"


def test_entry_of_another_module_under_this_name_is_ignored(tmp_path, monkeypatch):
    """A (copied, renamed) valid entry of a different module is not loaded."""
    other = wasmtime.wat2wasm(WAT.replace("0x1234567", "0x7654321"))
    engine = codemem.Engine(cache_dir=tmp_path)
    codemem.Module(engine, WASM)
    (mine,) = entries(tmp_path)
    codemem.Module(engine, other)
    (theirs,) = [p for p in entries(tmp_path) if p != mine]
    mine.write_bytes(theirs.read_bytes())
    counter = CompileCounter(monkeypatch)
    reloaded = codemem.Module(codemem.Engine(cache_dir=tmp_path), WASM)
    assert counter.calls == 1
    assert run(reloaded) == (EXPECTED_F3, 2.5)


def test_key_changes_with_module_debug_and_compiler_version(tmp_path, monkeypatch):
    counter = CompileCounter(monkeypatch)
    codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM)
    codemem.Module(codemem.Engine(debug=False, cache_dir=tmp_path), WASM)
    assert counter.calls == 2 and len(entries(tmp_path)) == 2
    # Another module.
    codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM + b"\x00\x03\x02hi")  # + a custom section
    assert counter.calls == 3 and len(entries(tmp_path)) == 3
    # A new compiler version: nothing old may be loaded, both modes recompile.
    keys_before = {p.name for p in entries(tmp_path)}
    monkeypatch.setattr(runtime, "COMPILER_VERSION", runtime._compiler_version() + "-next")
    for debug in (True, False):
        module = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
        assert run(module) == (EXPECTED_F3, 2.5)
    assert counter.calls == 5
    assert len(entries(tmp_path)) == 5 and keys_before < {p.name for p in entries(tmp_path)}
    # Each combination is now warm.
    for debug in (True, False):
        codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    assert counter.calls == 5


def test_the_debug_flag_of_a_loaded_image_matches_the_engine(tmp_path):
    """Both modes cached side by side: each Engine gets its own kind of image."""
    for debug in (True, False):
        codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM)
    for debug in (True, False):
        table = codemem.Module(codemem.Engine(debug=debug, cache_dir=tmp_path), WASM).engine_code.frame_table
        assert table.debug is debug
        assert (table.num_sites > 0) is debug


def test_unwritable_cache_directory_does_not_break_compilation(tmp_path):
    """The cache is best effort: a directory that cannot be created (a file is in
    the way) only costs the caching."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    module = codemem.Module(codemem.Engine(cache_dir=blocker / "cache"), WASM)
    assert run(module) == (EXPECTED_F3, 2.5)


def test_a_warm_load_leaves_the_code_section_until_asked_and_then_reads_the_same_bodies(tmp_path):
    cold = codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM)
    warm = codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM)
    assert warm.info._codes is None, "a warm load split the code section it does not compile"
    assert warm.info.codes == cold.info.codes and len(warm.info.codes) == 3
    assert [ins.op for ins in warm.info.read_body(0)] == [ins.op for ins in cold.info.read_body(0)]


def test_a_warm_load_reads_the_frame_table_in_place_from_the_entry(tmp_path):
    import mmap

    codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM)
    warm = codemem.Module(codemem.Engine(debug=True, cache_dir=tmp_path), WASM)
    table = warm.engine_code.frame_table
    assert isinstance(table._data, mmap.mmap), "the warm table was copied out of the cache entry"
    (entry,) = entries(tmp_path)
    assert entry.read_bytes().endswith(table.data)
    assert table.function(0).num_seqpoints > 0 and table.sequence_point(0).native_offset == table.entry_offset(table.function(0))


def test_the_compiler_version_changes_with_the_c_extension_alone(tmp_path):
    """The C compiler core lives in the built extension: a change to csrc/
    code generation alone must not load images the old one made."""
    (tmp_path / "compiler.py").write_text("x = 1\n")
    (tmp_path / "_native.abi3.so").write_bytes(b"\x7fELF one")
    before = runtime._package_digest(tmp_path)
    (tmp_path / "_native.abi3.so").write_bytes(b"\x7fELF two")
    assert runtime._package_digest(tmp_path) != before
    (tmp_path / "compiler.py").write_text("x = 2\n")
    assert len({before, runtime._package_digest(tmp_path)}) == 2
