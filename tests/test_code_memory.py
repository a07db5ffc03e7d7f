"""EngineCode / StoreCode invariants, copy-on-write, patch edits and their failure paths."""
import pytest

from codemem import CodeMemoryError
from codemem.code import EngineCode, PatchEdit
from codemem.frametable import SITE_DISABLED
from codemem.native import PAGE_SIZE
from imagekit import ADD, SITE, HandStore, build_image
from procmaps import mapping_perms, smaps_total

F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8


@pytest.fixture(scope="module")
def engine():
    built = build_image([ADD, ADD])
    engine = EngineCode(built.code, built.table, name="two-adds")
    engine.built = built
    yield engine
    engine.close()


def new_store(engine, debug=True):
    s = HandStore(debug=debug)
    s.code = s.registry.register(None, engine).store_code
    return s


def test_engine_code_is_sealed_and_never_writable(engine):
    seals = engine.seals()
    for seal in (F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE):
        assert seals & seal
    mapping = engine._mapping_for_store_code()
    assert mapping_perms(mapping.base) == "r-xs"
    with pytest.raises(AssertionError):
        mapping.unpublish()
    # Even bypassing our assertion, the kernel refuses write access to a sealed shared mapping.
    from codemem.native import PROT_READ, PROT_WRITE, lib

    assert lib.cm_protect(mapping.base, mapping.size, PROT_READ | PROT_WRITE) < 0


def test_engine_code_exposes_no_executable_address(engine):
    public = [n for n in dir(engine) if not n.startswith("_")]
    for name in public:
        value = getattr(engine, name)
        if isinstance(value, int):
            assert value < 1 << 32, f"EngineCode.{name} looks like an address"


def test_debug_stores_patch_privately(engine):
    a, b = new_store(engine), new_store(engine)
    try:
        assert a.code.base != b.code.base != engine._mapping_for_store_code().base
        site = engine.built.sites[0][1]
        with a.registry.patch_edit() as edit:
            a.registry.enable_site(a.code.pc_of(site), edit)
        assert a.code.read_raw(a.code.pc_of(site), 5)[0] == 0xE8
        assert b.code.read_raw(b.code.pc_of(site), 5) == SITE_DISABLED
        assert engine.read(site, 5) == SITE_DISABLED
        assert mapping_perms(a.code.base) == "r-xp"
        # and the patch works only in a
        assert a.call(a.code.pc_of(engine.built.functions[0]), 1, 2) == (0, 3)
    finally:
        a.close()
        b.close()


def test_non_debug_stores_run_the_engine_mapping(engine):
    a, b = new_store(engine, debug=False), new_store(engine, debug=False)
    try:
        shared = engine._mapping_for_store_code().base
        assert a.code.base == b.code.base == shared
        assert a.code.shares_engine_mapping and b.code.shares_engine_mapping
        assert a.call(a.code.pc_of(engine.built.functions[1]), 4, 5) == (0, 9)
        assert b.call(b.code.pc_of(engine.built.functions[1]), 6, 5) == (0, 11)
        with pytest.raises(AssertionError):
            with a.registry.patch_edit() as edit:
                a.registry.enable_site(a.code.pc_of(engine.built.sites[0][0]), edit)
    finally:
        a.close()
        b.close()


def test_copy_on_write_dirties_only_the_patched_page():
    pages = 16
    # One function per page, each starting with a site.
    functions = [[SITE, bytes.fromhex("c3")] for _ in range(pages)]
    built = build_image(functions, align=PAGE_SIZE)
    engine = EngineCode(built.code, built.table, name="pages")
    s = new_store(engine)
    try:
        base = s.code.base
        # smaps counts a shared-memory page mapped by one mapping only as
        # "Private_Dirty" although nothing was copied, so fault every page in
        # through the engine's shared mapping too; "Anonymous" counts exactly
        # the pages the kernel copied on write.
        engine.read(0, engine.size)
        s.code.read_for_debugger(base, s.code.size)  # reading does not copy
        assert smaps_total(base, base + s.code.size, "Private_Dirty") == 0
        assert smaps_total(base, base + s.code.size, "Anonymous") == 0
        target = built.functions[5]
        with s.registry.patch_edit() as edit:
            s.registry.enable_site(s.code.pc_of(target), edit)
        assert smaps_total(base, base + s.code.size, "Private_Dirty") == PAGE_SIZE // 1024
        assert smaps_total(base, base + s.code.size, "Anonymous") == PAGE_SIZE // 1024
        assert smaps_total(base, base + s.code.size, "Size") >= pages * PAGE_SIZE // 1024
    finally:
        s.close()
        engine.close()


def test_enable_refcounts_and_debugger_reads_hide_patches(engine):
    s = new_store(engine)
    try:
        site_pc = s.code.pc_of(engine.built.sites[1][1])
        func_pc = s.code.pc_of(engine.built.functions[1])
        before = s.code.read_for_debugger(func_pc, 40)
        with s.registry.patch_edit() as edit:
            assert s.registry.enable_site(site_pc, edit) is True
            assert s.registry.enable_site(site_pc, edit) is False  # second owner: no write
        assert s.code.read_raw(site_pc, 1) == b"\xe8"
        assert s.code.read_for_debugger(func_pc, 40) == before
        # Reads that start or end inside the site are hidden too.
        assert s.code.read_for_debugger(site_pc + 2, 2) == SITE_DISABLED[2:4]
        with s.registry.patch_edit() as edit:
            s.registry.disable_site(site_pc, edit)
        assert s.code.read_raw(site_pc, 1) == b"\xe8", "one owner remains"
        with s.registry.patch_edit() as edit:
            s.registry.disable_site(site_pc, edit)
        assert s.code.read_raw(site_pc, 5) == SITE_DISABLED
        assert s.code.read_raw(s.code.base, s.code.size) == engine.read(0, engine.size)
        with pytest.raises(CodeMemoryError, match="not enabled"):
            with s.registry.patch_edit() as edit:
                s.registry.disable_site(site_pc, edit)
    finally:
        s.close()


def test_bad_patch_requests_name_the_address_and_change_nothing(engine):
    s = new_store(engine)
    try:
        snapshot = s.code.read_raw(s.code.base, s.code.size)
        not_a_site = s.code.pc_of(engine.built.sites[0][1] + 1)
        with pytest.raises(CodeMemoryError, match=f"{not_a_site:#x}.*not a patch site"):
            with s.registry.patch_edit() as edit:
                s.registry.enable_site(not_a_site, edit)
        outside = s.code.end + 0x1000
        with pytest.raises(CodeMemoryError, match=f"{outside:#x}"):
            with s.registry.patch_edit() as edit:
                s.registry.enable_site(outside, edit)
        assert s.code.read_raw(s.code.base, s.code.size) == snapshot
        assert mapping_perms(s.code.base) == "r-xp"
        assert s.code.enabled_site_offsets() == []
    finally:
        s.close()


def test_failure_inside_an_edit_republishes_every_touched_image():
    built_a, built_b = build_image([ADD]), build_image([ADD])
    ea, eb = EngineCode(built_a.code, built_a.table, name="a"), EngineCode(built_b.code, built_b.table, name="b")
    s = HandStore(debug=True)
    try:
        ca = s.registry.register(None, ea).store_code
        cb = s.registry.register(None, eb).store_code
        with pytest.raises(RuntimeError, match="boom"):
            with s.registry.patch_edit() as edit:
                s.registry.enable_site(ca.pc_of(built_a.sites[0][0]), edit)
                s.registry.enable_site(cb.pc_of(built_b.sites[0][0]), edit)
                assert mapping_perms(ca.base) == "rw-p" and mapping_perms(cb.base) == "rw-p"
                raise RuntimeError("boom")
        assert mapping_perms(ca.base) == "r-xp" and mapping_perms(cb.base) == "r-xp"
        # A live edit uses rwx while it lasts, and also ends published.
        with s.registry.patch_edit(live=True) as edit:
            s.registry.disable_site(ca.pc_of(built_a.sites[0][0]), edit)
            assert mapping_perms(ca.base) == "rwxp"
        assert mapping_perms(ca.base) == "r-xp"
        assert s.call(ca.pc_of(built_a.functions[0]), 1, 1) == (0, 2)
    finally:
        s.close()
        ea.close()
        eb.close()


def test_patch_edit_touches_each_image_once(engine, monkeypatch):
    s = new_store(engine)
    try:
        calls = []
        original = type(s.code.memory).unpublish
        monkeypatch.setattr(type(s.code.memory), "unpublish", lambda self, **kw: (calls.append(1), original(self, **kw)))
        with PatchEdit() as edit:
            for site in engine.built.sites[0] + engine.built.sites[1]:
                edit.enable_site(s.code, s.code.pc_of(site))
        assert len(calls) == 1
        assert len(s.code.enabled_site_offsets()) == 4
    finally:
        s.close()


def test_a_closed_debug_stores_copy_is_recycled_only_after_a_full_reset():
    pages = 8
    functions = [[SITE, bytes.fromhex("c3")] for _ in range(pages)]
    built = build_image(functions, align=PAGE_SIZE)
    engine = EngineCode(built.code, built.table, name="recycled")
    canonical = engine.read(0, engine.size)
    first = new_store(engine)
    patched = first.code.pc_of(built.functions[3])
    with first.registry.patch_edit() as edit:
        first.registry.enable_site(patched, edit)
    assert smaps_total(first.code.base, first.code.base + first.code.size, "Anonymous") == PAGE_SIZE // 1024
    closed_code, base = first.code, first.code.base
    first.close()
    # Whatever still holds the closed StoreCode cannot reach the mapping, which
    # may now be another Store's.
    assert closed_code.closed
    with pytest.raises(CodeMemoryError, match="closed Store"):
        closed_code.read_for_debugger(patched, 5)
    second = new_store(engine)
    try:
        assert second.code.base == base, "the given-back copy is reused"
        assert second.code.enabled_site_offsets() == []
        assert second.code.read_raw(second.code.base, engine.size) == canonical
        assert smaps_total(base, base + second.code.size, "Anonymous") == 0, "the patched page was discarded, not kept"
        assert mapping_perms(base) == "r-xp"
        # And it is a working private copy again.
        with second.registry.patch_edit() as edit:
            second.registry.enable_site(second.code.pc_of(built.functions[1]), edit)
        assert engine.read(built.functions[1], 5) == SITE_DISABLED
    finally:
        second.close()
        engine.close()
    with pytest.raises(LookupError):
        mapping_perms(base)  # the engine's close unmapped its spare copies


def test_spare_copies_are_bounded():
    from codemem.code import SPARE_PRIVATE_COPIES

    built = build_image([ADD])
    engine = EngineCode(built.code, built.table, name="bounded")
    stores = [new_store(engine) for _ in range(SPARE_PRIVATE_COPIES + 2)]
    bases = [s.code.base for s in stores]
    for s in stores:
        s.close()
    assert len(engine._spare_private_copies) == SPARE_PRIVATE_COPIES
    unmapped = 0
    for base in bases:
        try:
            mapping_perms(base)
        except LookupError:
            unmapped += 1
    assert unmapped == 2
    engine.close()
    assert engine._spare_private_copies == []


# ------------------------------------------------------------ bulk edits (C)
def site_bytes(s, engine) -> list[bytes]:
    table = engine.frame_table
    return [s.code.read_raw(s.code.pc_of(table.site(i).offset), 5) for i in range(table.num_sites)]


@pytest.mark.parametrize("live", [False, True], ids=["stopped", "live"])
def test_bulk_enable_and_disable_keep_the_refcounts_of_single_edits(engine, live):
    """enable_sites over every site (what an interrupt arms) writes each
    site's enable bytes once, shares sites with a single owner by refcount,
    and disable_sites restores exactly the state before; in live mode too."""
    s = new_store(engine)
    table = engine.frame_table
    everything = range(table.num_sites)
    try:
        one = s.code.pc_of(table.site(1).offset)
        with s.registry.patch_edit() as edit:
            s.registry.enable_site(one, edit)  # a user's breakpoint
        with PatchEdit(live=live) as edit:
            assert edit.enable_sites(s.code, everything) == table.num_sites - 1  # site 1 was already written
        assert site_bytes(s, engine) == [table.site(i).enable for i in everything]
        assert s.code.site_refcount(table.site(1).offset) == 2
        assert s.code.enabled_site_offsets() == list(table.site_offsets)
        assert s.code.read_for_debugger(s.code.base, engine.code_size) == engine.read(0, engine.code_size)
        with PatchEdit(live=live) as edit:
            assert edit.disable_sites(s.code, everything) == table.num_sites - 1
        assert s.code.enabled_site_offsets() == [table.site(1).offset]  # the user's stays
        with s.registry.patch_edit() as edit:
            s.registry.disable_site(one, edit)
        assert s.code.read_raw(s.code.base, s.code.size) == engine.read(0, engine.size)
    finally:
        s.close()


def test_prepared_sites_edit_as_their_groups_would_one_by_one_and_a_bad_part_undoes_the_parts_before_it(
        engine, monkeypatch):
    """PreparedSites (a step plan's sites, made ready once): ranges and lists
    of one StoreCode enabled and disabled together, with the refcounts of
    single edits, as one array or (over the array limit) range by range;
    a part that fails undoes the ones before it and names the site."""
    from codemem import code as code_module

    s = new_store(engine)
    table = engine.frame_table
    assert table.num_sites >= 4
    try:
        with s.registry.patch_edit() as edit:
            edit.enable_sites(s.code, [1])  # a user's breakpoint, shared by the plan
        for limit in (code_module.PREPARED_ARRAY_LIMIT, 1):
            monkeypatch.setattr(code_module, "PREPARED_ARRAY_LIMIT", limit)
            prepared = s.code.prepare_sites([range(0, 2), [3, 2], range(0)])
            assert len(prepared.parts) == (1 if limit > 1 else 2)
            with s.registry.patch_edit() as edit:
                assert edit.enable_prepared(prepared) == 3  # site 1 was already written
            assert [s.code.site_refcount(table.site(i).offset) for i in range(4)] == [1, 2, 1, 1]
            assert mapping_perms(s.code.base) == "r-xp"
            with s.registry.patch_edit() as edit:
                assert edit.disable_prepared(prepared) == 3
            assert s.code.enabled_site_offsets() == [table.site(1).offset]
        # Disabling what is not enabled (limit 1: a range part, then a list
        # part): the range part is undone, the list part names its site.
        prepared = s.code.prepare_sites([range(0, 2), [3]])
        snapshot = s.code.read_raw(s.code.base, s.code.size)
        with pytest.raises(CodeMemoryError, match="not enabled"):
            with s.registry.patch_edit() as edit:
                edit.disable_prepared(s.code.prepare_sites([range(1, 2), [3]]))
        assert s.code.read_raw(s.code.base, s.code.size) == snapshot
        assert s.code.enabled_site_offsets() == [table.site(1).offset]
        with pytest.raises(CodeMemoryError, match=f"no patch site {table.num_sites}"):
            s.code.prepare_sites([[0, table.num_sites]])
        with pytest.raises(CodeMemoryError, match="not all among its"):
            s.code.prepare_sites([range(1, table.num_sites + 1)])
        other = new_store(engine)
        try:
            with pytest.raises(CodeMemoryError, match="prepared for"):
                with other.registry.patch_edit() as edit:
                    other.code._change_prepared(edit, prepared, True)
        finally:
            other.close()
        with s.registry.patch_edit() as edit:
            edit.disable_sites(s.code, [1])
        assert s.code.read_raw(s.code.base, s.code.size) == engine.read(0, engine.size)
    finally:
        s.close()


def test_a_bad_bulk_edit_names_the_site_and_changes_nothing(engine):
    s = new_store(engine)
    table = engine.frame_table
    try:
        with s.registry.patch_edit() as edit:
            edit.enable_sites(s.code, [0, 2])
        snapshot = s.code.read_raw(s.code.base, s.code.size)
        with pytest.raises(CodeMemoryError, match="not enabled"):
            with s.registry.patch_edit() as edit:
                edit.disable_sites(s.code, [0, 1, 2])  # 1 is not enabled
        # Listed twice but enabled once: the first disable is undone again.
        with pytest.raises(CodeMemoryError, match="not enabled"):
            with s.registry.patch_edit() as edit:
                edit.disable_sites(s.code, [2, 0, 2])
        with pytest.raises(CodeMemoryError, match=f"no patch site {table.num_sites}"):
            with s.registry.patch_edit() as edit:
                edit.enable_sites(s.code, [1, table.num_sites])
        for bad in (range(-1, 2), range(1, table.num_sites + 1)):
            with pytest.raises(CodeMemoryError, match="not all among its"):
                with s.registry.patch_edit() as edit:
                    edit.enable_sites(s.code, bad)
        assert s.code.read_raw(s.code.base, s.code.size) == snapshot
        assert [s.code.site_refcount(table.site(i).offset) for i in range(3)] == [1, 0, 1]
        assert mapping_perms(s.code.base) == "r-xp"
        with s.registry.patch_edit() as edit:
            edit.disable_sites(s.code, range(0, 3, 2))
        assert s.code.read_raw(s.code.base, s.code.size) == engine.read(0, engine.size)
    finally:
        s.close()


def test_an_edit_makes_only_the_pages_it_writes_writable():
    """A step on a real-size module patches a few pages of a mapping of tens
    of MiB: only those pages change protection (W^X still holds: writable,
    never executable, while the guest is stopped), and all are executable
    again when the edit ends."""
    pages = 8
    built = build_image([[SITE, bytes.fromhex("c3")] for _ in range(pages)], align=PAGE_SIZE)
    engine = EngineCode(built.code, built.table, name="paged")
    s = new_store(engine)
    try:
        near, far = (s.code.pc_of(built.functions[k]) for k in (1, 6))
        edit = s.registry.patch_edit()
        s.registry.enable_site(near, edit)
        assert mapping_perms(near) == "rw-p"
        assert mapping_perms(far) == mapping_perms(s.code.pc_of(built.functions[3])) == "r-xp"
        s.registry.enable_site(far, edit)  # the same edit extends its writable part
        assert mapping_perms(far) == "rw-p" and mapping_perms(s.code.pc_of(built.functions[3])) == "r-xp"
        edit.finish()
        assert {mapping_perms(s.code.pc_of(f)) for f in built.functions} == {"r-xp"}
        with PatchEdit(live=True) as live:
            live.disable_site(s.code, near)
            assert mapping_perms(near) == "rwxp" and mapping_perms(far) == "r-xp"
        with s.registry.patch_edit() as edit:
            s.registry.disable_site(far, edit)
        assert s.code.read_raw(s.code.base, s.code.size) == engine.read(0, engine.size)
    finally:
        s.close()
        engine.close()
