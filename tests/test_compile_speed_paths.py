"""The compiler's fast paths produce exactly what the plain ones did.

The compile-throughput work (GC pause, bulk patch sites, interned mirror
lists, column-wise frame-table build, canonical register-cache states, the
precomputed patch-site padding) must not change a byte of output; the golden
hash checks whole images, these tests pin each helper against a slow, obvious
reference so that a regression names its culprit.
"""
from __future__ import annotations

import gc
import random

import capstone
import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from codemem.errors import CompileError
from codemem.frametable import (
    HEADER_SIZE,
    SITE_DISABLED,
    FrameTable,
    FrameTableBuilder,
    FunctionBuild,
    FunctionRecord,
    Header,
    LocalSlotRecord,
    MirrorList,
    MirrorSource,
    PatchSiteRecord,
    RegisterMirrorRecord,
    SequencePointKind,
    SequencePointRecord,
    pack_mirror,
)
from codemem.veneer import VeneerLayout, site_enable_bytes
from codemem.wasm.decoder import decode_module
from codemem.x64 import compiler
from codemem.x64.asm import Assembler
from codemem.x64.regcache import CACHE_REGISTERS, RegCache

INSTRUCTION, RETURN_POINT, ENTRY = (int(k) for k in SequencePointKind)


# ------------------------------------------------------------ frame-table builder

def reference_build(b: FrameTableBuilder) -> bytes:
    """The frame table of ``b`` built the obvious way: construct's schemas,
    one record at a time, pools interned in order of first occurrence."""
    types_pool, types_at = bytearray(), {}
    mirror_pool, mirror_at = bytearray(), {}
    funcs = seqs = locs = b""
    n_seq = n_locals = 0
    for fb in b.functions:
        funcs += FunctionRecord.build(dict(
            native_start=fb.native_start, native_size=fb.native_size, wasm_index=fb.wasm_index,
            frame_size=fb.frame_size, body_wasm_offset=fb.body_wasm_offset, first_local=n_locals,
            num_locals=len(fb.locals), first_seqpoint=n_seq, num_seqpoints=len(fb.seqpoints),
            stack_base=fb.stack_base))
        for point in fb.seqpoints:
            types = tuple(point[3])
            if types not in types_at:
                types_at[types] = len(types_pool)
                types_pool += bytes(types)
            mirrors = tuple(point[4]) if len(point) > 4 else ()
            if mirrors and mirrors not in mirror_at:
                mirror_at[mirrors] = len(mirror_pool) // 8
                for register, source, offset in mirrors:
                    mirror_pool += RegisterMirrorRecord.build(dict(register=register, source=source,
                                                                   frame_offset=offset))
            seqs += SequencePointRecord.build(dict(
                native_offset=point[0], wasm_offset=point[1], kind=point[2], num_mirrors=len(mirrors),
                stack_depth=len(types), stack_types=types_at[types],
                first_mirror=mirror_at[mirrors] if mirrors else 0))
        for offset, valtype in fb.locals:
            locs += LocalSlotRecord.build(dict(frame_offset=offset, valtype=valtype))
        n_seq += len(fb.seqpoints)
        n_locals += len(fb.locals)
    sites = b"".join(PatchSiteRecord.build(dict(offset=o, enable=e, disable=d))
                     for o, e, d in sorted(_reference_sites(b)))
    offsets = [HEADER_SIZE]
    for blob in (funcs, seqs, locs, sites, types_pool):
        offsets.append(offsets[-1] + len(blob))
    header = Header.build(dict(
        version=3, flags=1 if b.debug else 0, code_size=b.code_size, bp_veneer=b.bp_veneer,
        trap_veneer=b.trap_veneer, bp_slot=b.bp_slot, trap_slot=b.trap_slot,
        num_functions=len(b.functions), functions_offset=offsets[0], num_sites=len(b.site_records()),
        sites_offset=offsets[3], num_seqpoints=n_seq, seqpoints_offset=offsets[1], num_locals=n_locals,
        locals_offset=offsets[2], types_size=len(types_pool), types_offset=offsets[4],
        num_mirrors=len(mirror_pool) // 8, mirrors_offset=offsets[5]))
    return header + funcs + seqs + locs + sites + bytes(types_pool) + bytes(mirror_pool)


def _reference_sites(b: FrameTableBuilder) -> list[tuple[int, bytes, bytes]]:
    return [(offset, record[4:9], record[9:14]) for offset, record in b.site_records()]


@st.composite
def builders(draw):
    """Random builders: shared mirror lists (record tuples), stacks as tuples
    or lists, sites added in bulk and one by one."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    b = FrameTableBuilder(debug=draw(st.booleans()))
    start = 0
    lists = [tuple((reg, MirrorSource.SLOT, -8 * rnd.randrange(1, 9)) for reg in sorted(rnd.sample(range(6, 15), k)))
             for k in range(1, 4)] + [((3, MirrorSource.MEMORY0_BASE, 0),), ()]
    with_mirrors = rnd.choice((0.0, 0.6, 1.0))  # points with a fifth field: none, some, all
    for _ in range(draw(st.integers(0, 4))):
        fb = FunctionBuild(native_start=start, native_size=0x100, wasm_index=rnd.randrange(10),
                           frame_size=64, stack_base=-64, locals=[(-8 * k, 0x7F) for k in range(rnd.randrange(3))])
        offset = start
        for _ in range(rnd.randrange(12)):
            offset += rnd.randrange(8)
            stack = tuple(rnd.choice((0x7F, 0x7E, 0x7D, 0x7C)) for _ in range(rnd.randrange(4)))
            if rnd.random() < 0.2:
                stack = list(stack)
            kind = rnd.choice((INSTRUCTION, INSTRUCTION, RETURN_POINT, ENTRY))
            point = (offset, rnd.randrange(1000), kind, stack)
            if rnd.random() < with_mirrors:
                point += (rnd.choice(lists) if kind == INSTRUCTION else (),)
            fb.seqpoints.append(point)
        b.add_function(fb)
        start += 0x100
    b.code_size = start + 0x20
    b.add_call_sites([o for o in range(0, start, 8) if rnd.random() < 0.3], start)
    b.add_site(start + 8, b"\xe8\0\0\0\0")
    return b


@settings(max_examples=200, deadline=None)
@given(builders())
def test_builder_matches_the_record_by_record_reference(b):
    expected = reference_build(b)
    assert b.build() == expected
    FrameTable(expected)  # and it parses
    # As the compiler passes them: each list interned (a MirrorList) in point order.
    interned = FrameTableBuilder(debug=b.debug)
    for fb in b.functions:
        points = [p if len(p) == 4 else p[:4] + (interned.intern_mirrors(p[4]),) for p in fb.seqpoints]
        interned.add_function(FunctionBuild(fb.native_start, fb.native_size, fb.wasm_index, fb.frame_size,
                                            fb.body_wasm_offset, fb.stack_base, fb.locals, points))
    for offset, enable, disable in _reference_sites(b):
        interned.add_site(offset, enable, disable)
    interned.code_size = b.code_size
    assert interned.build() == expected


def test_intern_mirrors_dedupes_by_content_in_order_of_first_occurrence():
    b = FrameTableBuilder()
    a = ((6, MirrorSource.SLOT, -16), (12, MirrorSource.MEMORY0_LENGTH, 0))
    c = ((7, MirrorSource.SLOT, -24),)
    first = b.intern_mirrors(a)
    assert first == MirrorList(2, 0)
    assert b.intern_mirrors(c) == MirrorList(1, 2)
    assert b.intern_mirrors(list(a)) is first
    assert b.intern_mirrors(b"".join(pack_mirror(*r) for r in a)) is first
    assert b.intern_mirrors(()) == MirrorList(0, 0) and len(b._mirror_pool) == 24


def test_pack_mirror_refuses_a_slot_mirror_without_a_slot():
    with pytest.raises(AssertionError, match="slot"):
        pack_mirror(6, MirrorSource.SLOT, 0)
    with pytest.raises(AssertionError, match="slot"):
        pack_mirror(6, MirrorSource.MEMORY0_BASE, -8)


def test_call_sites_are_the_veneer_call_bytes():
    layout = VeneerLayout(bp_veneer=0x4000, trap_veneer=0x4006, bp_slot=0x4010, trap_slot=0x4018, end=0x4020)
    offsets = [0, 3, 8, 0x1000, 0x3FF8]
    bulk, one_by_one = FrameTableBuilder(), FrameTableBuilder()
    bulk.add_call_sites(offsets, layout.bp_veneer)
    for off in offsets:
        one_by_one.add_site(off, site_enable_bytes(off, layout))
    assert bulk.site_records() == one_by_one.site_records()
    with pytest.raises(AssertionError, match="straddles"):
        bulk.add_call_sites([4], layout.bp_veneer)


# ------------------------------------------------------------------ compiler bits

def test_site_bytes_pad_with_ds_prefixes_of_the_site_itself_and_never_straddle():
    """One instruction per site whatever the alignment: ``8 - r`` DS prefixes
    then the disabled site, which capstone decodes as a single nop."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for r in range(8):
        pad = 8 - r if r > 3 else 0
        assert compiler._SITE_BYTES[r] == b"\x3e" * pad + SITE_DISABLED
        assert compiler._SITE_PAD[r] == pad
        site = r + compiler._SITE_PAD[r]
        assert site % 8 <= 3
        (insn,) = md.disasm(compiler._SITE_BYTES[r], 0)
        assert insn.mnemonic == "nop" and insn.size == pad + 5


def test_register_cache_state_is_canonical_and_memoized():
    one, two = RegCache(), RegCache()
    rsi, rdi, r8 = CACHE_REGISTERS[:3]
    one.bind(rsi, 0)
    one.bind(rdi, -1)
    one.bind(r8, 3)
    two.bind(r8, 3)
    two.bind(rdi, -1)
    two.bind(rsi, 0)
    assert one.state() == two.state() and one.state() is one.state()
    assert one.state()[rsi] == 0 and one.state()[r8] == 3 and one.state()[0] is None
    assert one.entries() == ((int(rsi), 0), (int(rdi), -1), (int(r8), 3))
    before = one.state()
    one.forget(3)
    assert one.state() is not before and one.state()[r8] is None
    one.restore(two.snapshot())
    assert one.state() == two.state()
    one.clear()
    assert one.state() == () and not one


def test_register_cache_use_reads_a_mirror_or_binds_a_register_to_load():
    cache = RegCache()
    reg, load = cache.use(5)
    assert load and cache.get(5) is reg
    assert cache.use(5) == (reg, False)
    other, load = cache.use(6, (CACHE_REGISTERS[1],))
    assert load and other not in (reg, CACHE_REGISTERS[1])


def test_eviction_takes_the_least_recently_used_register():
    cache = RegCache()
    for loc in range(len(CACHE_REGISTERS)):
        cache.bind(cache.alloc(), loc)
    order = list(range(len(CACHE_REGISTERS)))
    random.Random(7).shuffle(order)
    for loc in order:
        cache.get(loc)
    victim = cache.alloc((cache.get(order[1]),))  # the least recent one but one is avoided
    assert victim == CACHE_REGISTERS[order[0]] and cache.get(order[0]) is None


def test_compile_pauses_the_collector_and_restores_it():
    info = decode_module(wasmtime.wat2wasm("(module (func (result i32) i32.const 1))"))
    seen = []
    original = compiler._ModuleCompiler.compile_chunk

    def spy(self, bodies=None):
        seen.append(gc.isenabled())
        return original(self, bodies)

    compiler._ModuleCompiler.compile_chunk = spy
    try:
        assert gc.isenabled()
        compiler.compile_module(info, debug=True)
        assert seen == [False] and gc.isenabled()
        bad = decode_module(_invalid_module())
        with pytest.raises(CompileError):
            compiler.compile_module(bad, debug=True)
        assert gc.isenabled()
        gc.disable()
        try:
            compiler.compile_module(info, debug=False)
            assert not gc.isenabled()  # a caller's pause is left alone
        finally:
            gc.enable()
    finally:
        compiler._ModuleCompiler.compile_chunk = original


def _invalid_module() -> bytes:
    """A function declared to return i32 that returns an i64 (type mismatch)."""
    return bytes.fromhex("0061736d01000000" "0105016000017f" "03020100" "0a0601040042010b")


def test_compiled_module_leaves_no_cyclic_garbage():
    info = decode_module(wasmtime.wat2wasm(
        "(module (memory 1) (func (param i32) (result i32) (local i32)"
        " (loop (local.set 1 (i32.add (local.get 1) (i32.load (local.get 0))))"
        " (br_if 0 (local.get 0))) (local.get 1)))"))
    gc.collect()
    gc.disable()
    try:
        compiler.compile_module(info, debug=True)
        # A few objects of construct's (the header's build) at most, not the
        # compiler's state: that would be millions of objects on a big module.
        assert gc.collect() < 10
    finally:
        gc.enable()


def test_hazard_mask_marks_exactly_the_offsets_where_a_branch_unit_meets_a_32_byte_boundary():
    rnd = random.Random(13)
    for _ in range(500):
        units = []
        for _ in range(rnd.randrange(1, 4)):
            start = rnd.randrange(0, 200)
            units.append((start, start + rnd.randrange(1, 16)))
        expected = sum(1 << at for at in range(32)
                       if any(((at + start) & 31) + (end - start) >= 32 for start, end in units))
        assert compiler._hazard_mask(tuple(units)) == expected, units


def test_a_template_padded_by_splicing_is_the_template_built_for_that_offset():
    """compiler._padded_template (NOPs spliced into the unpadded template,
    references and trap fields moved) against building it at each offset:
    bounds checks (fused cmp+ja), a float op reusing xmm0 (an internal short
    jump over a reload) and signed division (several traps)."""
    from codemem.x64.regs import Reg

    info = decode_module(wasmtime.wat2wasm("(module (memory 1) (func))"))
    mc = compiler._ModuleCompiler(info, True, 0, 1)
    mem = (Reg.RBX, True, Reg.R8, True)
    cases = [
        ("load", compiler._build_load_reg, 0x2A, 3, 16, Reg.RSI, True, mem),  # f32.load
        ("store", compiler._build_store_reg, 0x36, 4, 8, Reg.RSI, True, Reg.RDI, False, mem),
        ("f32.add", compiler._build_numeric_reg, 0x92, 1, Reg.RSI, False, Reg.RDI, True, "x"),
        ("i32.div_s", compiler._build_numeric_reg, 0x6D, 2, Reg.RSI, True, Reg.RDI, False, None),
    ]
    for name, build, *args in cases:
        unpadded = mc._template((name,), build, *args)
        for at in range(32):
            built = mc._template((name, "built", at), build, *args, origin=at)
            spliced = compiler._padded_template(unpadded, at)
            assert spliced is not None
            assert spliced == built, (name, at)
        assert any(compiler._padded_template(unpadded, at)[0] != unpadded[0] for at in range(32)), name
