"""Tests of gdbstub.images: debug images of real StoreCode and of the C runtime,
the library-list documents, and the confined vFile server.

The CFI is checked three ways: against the byte counts of the compiler's
prologue as capstone decodes them, against a capstone simulation of every
instruction's effect on rsp/rbp, and by real gdb unwinding a real stopped guest
(registers and stack captured at a patched breakpoint) through a minimal RSP
stub that serves our library list and our files over vFile.
"""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import capstone
import pytest
from elftools.dwarf.callframe import FDE as PyelftoolsFDE
from elftools.dwarf.callframe import RegisterRule
from elftools.elf.elffile import ELFFile

from codemem import native
from fakestub import serve_one_client
from codemem.frametable import SITE_DISABLED, SITE_SIZE
from codemem.runtime import Engine, Instance, Module, Store
from gdbstub import arch_amd64
from gdbstub.debugimage.dwarf import DWARF_REGISTERS
from gdbstub.image_files import FIRST_FD, MAX_OPEN_FILES, FileServerError, ImageFileServer
from gdbstub.images import (
    BREAKPOINT_SLOT_SYMBOL, BREAKPOINT_VENEER_SYMBOL, JUMP_TABLES_SYMBOL,
    IMAGE_LINK_ADDRESS, RUNTIME_SYMBOLS, TRAP_SLOT_SYMBOL, TRAP_VENEER_SYMBOL, DebugImage, DebugImageSet,
    LoadedImage, libraries_svr4_xml, libraries_xml,
)
from gdbstub.protocol.encoding import hex_decode
from gdbstub.protocol.packets import FileIOOpenFlags
from gdbstub.protocol.replies import FileIOErrno, qxfer_chunk, vfile_data, vfile_result
from codemem.lowmem import CALL_LANDING_OFFSET, ENTRY_THUNK_CODE, ENTRY_THUNK_PAGE_CODE_SIZE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "build"
MODES = pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
RSP, RBP, RIP = DWARF_REGISTERS["rsp"], DWARF_REGISTERS["rbp"], DWARF_REGISTERS["rip"]
GPR = {name: i for i, name in enumerate(arch_amd64.GPR_NAMES)}
#: Link address of image offset 0 in a module's (position-independent) image.
LINK = IMAGE_LINK_ADDRESS


@dataclass
class Loaded:
    store: Store
    module: Module
    instance: Instance


def load(path: Path, debug: bool, *, low_addresses: bool = False) -> Loaded:
    """A Store with ``path`` instantiated. Most tests here check the amd64
    (ELF64) images, so a debug Engine places nothing low unless asked
    (``low_addresses``: the x32 images of docs/pointers.md)."""
    store = Store(Engine(debug=debug, low_addresses=low_addresses and debug))
    module = Module.from_file(store.engine, path)
    return Loaded(store, module, Instance(store, module, []))


@pytest.fixture(scope="module")
def demo():
    return {debug: load(EXAMPLES / "demo.O0.wasm", debug) for debug in (True, False)}


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return DebugImageSet(tmp_path_factory.mktemp("images") / "cache", process_tag="test 1/2")


def elf(data: bytes) -> ELFFile:
    return ELFFile(io.BytesIO(data))


def symbols_of(data: bytes) -> dict[str, tuple[int, int, str]]:
    table = elf(data).get_section_by_name(".symtab")
    return {s.name: (s["st_value"], s["st_size"], s["st_info"]["type"]) for s in table.iter_symbols() if s.name}


def fdes_of(data: bytes) -> dict[int, PyelftoolsFDE]:
    entries = elf(data).get_dwarf_info().CFI_entries()
    return {e.header["initial_location"]: e for e in entries if isinstance(e, PyelftoolsFDE)}


def rule_table(fde: PyelftoolsFDE) -> list[tuple[int, tuple[int, int], str]]:
    """(pc, (cfa reg, cfa offset), rbp rule) rows of a decoded FDE."""
    rows = []
    for row in fde.get_decoded().table:
        rbp = row.get(RBP)
        rbp_rule = f"cfa{rbp.arg:+d}" if rbp is not None and rbp.type == RegisterRule.OFFSET else "same"
        rows.append((row["pc"], (row["cfa"].reg, row["cfa"].offset), rbp_rule))
    return rows


def rule_at(table, pc: int):
    current = None
    for row in table:
        if row[0] <= pc:
            current = row
    return current[1], current[2]


# ------------------------------------------------------------ prologue bytes
@MODES
def test_prologue_byte_counts_are_what_the_cfi_assumes(demo, debug):
    """The frame setup the CFI rows assume, checked on compiled code: `push
    rbp` (1 byte), `mov rbp, rsp` (3 bytes) at the function's first byte, then
    the ENTRY point, a 5-byte patch site in debug code (codemem.abi "Function
    layout")."""
    loaded = demo[debug]
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for func in code.frame_table.functions():
        data = code.read_for_debugger(code.base + func.native_start, 16)
        first = [(i.address, i.size, i.mnemonic, i.op_str) for i in disassembler.disasm(data, 0)][:3]
        assert first[:2] == [(0, 1, "push", "rbp"), (1, 3, "mov", "rbp, rsp")]
        assert code.frame_table.entry_offset(func) == func.native_start + 4
        if debug:
            assert data[4:4 + SITE_SIZE] == SITE_DISABLED
            assert first[2] == (4, 5, "nop", "dword ptr [rax + rax]")
            assert code.frame_table.site_index(func.native_start + 4) is not None


# ------------------------------------------------------------ store images
@MODES
def test_every_function_has_a_symbol_and_an_fde(demo, image_set, debug):
    loaded = demo[debug]
    images = image_set.for_store(loaded.store)
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    image = images[0]
    assert (image.start, image.end) == (code.base, code.code_end)
    assert image.load_bias == code.base - LINK
    assert Path(image.name) == image.path and image.path.is_absolute()
    assert image.data == image.path.read_bytes()
    assert image.path.parent.parent.parent == image_set.cache_dir
    parsed = elf(image.data)
    assert parsed["e_type"] == "ET_DYN"
    (load_segment,) = [s for s in parsed.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert load_segment["p_vaddr"] == LINK  # position independent: each Store's base is its load bias
    text = parsed.get_section_by_name(".text")
    assert text["sh_addr"] == LINK
    # The Store's code, but for the trampoline slots (this process's addresses: zero in the file).
    header = code.frame_table.header
    expected = bytearray(code.read_for_debugger(code.base, code.engine_code.code_size))
    if debug or header.trap_slot:
        expected[header.bp_slot:header.bp_slot + 8] = expected[header.trap_slot:header.trap_slot + 8] = bytes(8)
    assert text.data() == bytes(expected)
    symbols, fdes = symbols_of(image.data), fdes_of(image.data)
    functions = code.frame_table.functions()
    assert [f.wasm_index for f in functions] == [0, 1, 2, 3]
    for func in functions:
        name = loaded.module.func_name(func.wasm_index)
        assert symbols[name] == (LINK + func.native_start, func.native_size, "STT_FUNC")
        fde = fdes[LINK + func.native_start]
        assert fde.header["address_range"] == func.native_size
    assert {"square", "sum_of_squares", "fact", "run"} <= set(symbols)


@MODES
def test_veneers_have_symbols_and_call_frame_rules(demo, image_set, debug):
    loaded = demo[debug]
    image = image_set.for_store(loaded.store)[0]
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    header = code.frame_table.header
    symbols, fdes = symbols_of(image.data), fdes_of(image.data)
    for name, offset in ((BREAKPOINT_VENEER_SYMBOL, header.bp_veneer), (TRAP_VENEER_SYMBOL, header.trap_veneer)):
        assert symbols[name] == (LINK + offset, 6, "STT_FUNC")
        assert rule_table(fdes[LINK + offset]) == [(LINK + offset, (RSP, 8), "same")]
        (row,) = fdes[LINK + offset].get_decoded().table
        assert row[RIP].type == RegisterRule.OFFSET and row[RIP].arg == -8
    assert symbols[BREAKPOINT_SLOT_SYMBOL] == (LINK + header.bp_slot, 8, "STT_OBJECT")
    assert symbols[TRAP_SLOT_SYMBOL] == (LINK + header.trap_slot, 8, "STT_OBJECT")
    assert JUMP_TABLES_SYMBOL not in symbols  # demo.c has no switch


def test_jump_tables_symbol_covers_the_br_table_entries(image_set):
    loaded = load(EXAMPLES / "switch.O0.wasm", True)
    image = image_set.for_store(loaded.store)[0]
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    address, size, kind = symbols_of(image.data)[JUMP_TABLES_SYMBOL]
    assert kind == "STT_OBJECT" and size % 4 == 0 and size > 0
    functions = code.frame_table.functions()
    assert address == LINK + -(-functions[-1].native_end // 4) * 4
    address += code.base - LINK
    table = code.read_for_debugger(address, size)
    targets = set()
    # Every entry is `target - table start` for one of the tables laid end to
    # end; each must land inside some function whichever table it belongs to.
    for k in range(0, size, 4):
        relative = int.from_bytes(table[k:k + 4], "little", signed=True)
        assert relative < 0
        targets.add(relative)
    assert all(any(f.native_start <= address - code.base + r + t < f.native_end
                   for f in functions for t in range(0, size, 4)) for r in targets)


# ------------------------------------------------------------ CFI, simulated
def simulate_frame_rules(code: bytes, base: int, start: int, end: int) -> dict[int, tuple[tuple[int, int], str]]:
    """Per instruction address: (CFA rule, rbp rule) from what each instruction
    does to rsp/rbp, for the compiler's rbp-chained frames. Code after `ret`
    is reached by jumps from the body (trap stubs): the body's rule applies."""
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    state, body_state, rules = ((RSP, 8), "same"), None, {}
    for address, size, mnemonic, operands in disassembler.disasm_lite(code[start:end], base + start):
        rules[address] = state
        (cfa_reg, cfa_offset), rbp_rule = state
        if mnemonic == "push":
            assert operands == "rbp" and state == ((RSP, 8), "same")
            state = ((RSP, 16), "cfa-16")
        elif (mnemonic, operands) == ("mov", "rbp, rsp"):
            state = body_state = ((RBP, 16), rbp_rule)
        elif mnemonic == "pop":
            assert operands == "rbp" and cfa_reg == RBP
            state = ((RSP, 8), "same")
        elif mnemonic == "ret":
            state = body_state
        else:
            # Nothing else may move rsp while the CFA is rsp-based, or touch rbp.
            assert not operands.startswith("rbp,"), (hex(address), mnemonic, operands)
            if cfa_reg == RSP:
                assert not operands.startswith("rsp,"), (hex(address), mnemonic, operands)
    return rules


@pytest.mark.parametrize("name", ["demo.O0", "switch.O0", "recursion.O2", "memory.O2"])
@MODES
def test_cfi_equals_capstone_simulation_at_every_instruction(image_set, name, debug):
    loaded = load(EXAMPLES / f"{name}.wasm", debug)
    image = image_set.for_store(loaded.store)[0]
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    data = code.read_for_debugger(code.base, code.engine_code.code_size)
    fdes = fdes_of(image.data)
    for func in code.frame_table.functions():
        table = rule_table(fdes[LINK + func.native_start])
        simulated = simulate_frame_rules(data, LINK, func.native_start, func.native_end)
        for address, expected in simulated.items():
            assert rule_at(table, address) == expected, (name, hex(address - LINK))
        start = func.native_start
        assert [row[0] - LINK for row in table][:3] == [start, start + 1, start + 4]


# ------------------------------------------------------------ runtime image
def test_runtime_image_covers_the_trampolines_and_ends_the_stack(image_set, demo):
    runtime = image_set.runtime_image()
    assert image_set.for_store(demo[True].store)[-1] is runtime
    assert runtime.load_bias == 0 and image_set.executable(demo[True].store) is runtime
    lib = native.lib
    assert (runtime.start, runtime.end) == (lib.cm_runtime_code_start_address(), lib.cm_runtime_code_end_address())
    text = elf(runtime.data).get_section_by_name(".text")
    assert text.data() == bytes(native.ffi.buffer(native.ffi.cast("char *", runtime.start),
                                                  runtime.end - runtime.start))
    symbols = symbols_of(runtime.data)
    addresses = {"cm_enter": lib.cm_enter_address(),
                 "cm_breakpoint_trampoline": lib.cm_breakpoint_trampoline_address(),
                 "cm_trap_trampoline": lib.cm_trap_trampoline_address(),
                 "cm_host_call_trampoline": lib.cm_host_call_trampoline_address(),
                 "cm_call_landing": lib.cm_call_landing_address()}
    assert elf(runtime.data)["e_entry"] == lib.cm_call_landing_address()
    assert set(RUNTIME_SYMBOLS) <= set(symbols)
    for name, address in addresses.items():
        assert symbols[name][0] == address and symbols[name][1] > 0
    assert sum(symbols[name][1] for name in RUNTIME_SYMBOLS) == runtime.end - runtime.start
    (fde,) = fdes_of(runtime.data).values()
    assert (fde.header["initial_location"], fde.header["address_range"]) == (runtime.start, runtime.end - runtime.start)
    assert all(row[RIP].type == RegisterRule.UNDEFINED for row in fde.get_decoded().table)


def test_x32_stores_get_elf32_images_and_the_low_entry_thunk_ends_their_stack(image_set):
    loaded = load(EXAMPLES / "demo.O0.wasm", True, low_addresses=True)
    *store_images, runtime = image_set.for_store(loaded.store)
    assert runtime is image_set.executable(loaded.store) and runtime is not image_set.runtime_image()
    for image in store_images + [runtime]:
        assert elf(image.data).elfclass == 32 and elf(image.data)["e_machine"] == "EM_X86_64"
        assert image.end <= 1 << 32
    thunk = loaded.store.ctx.entry_thunk
    assert (runtime.start, runtime.end, runtime.load_bias) == (thunk, thunk + ENTRY_THUNK_PAGE_CODE_SIZE, 0)
    assert elf(runtime.data).get_section_by_name(".text").data().startswith(ENTRY_THUNK_CODE)
    assert symbols_of(runtime.data)["cm_enter"][:2] == (thunk, len(ENTRY_THUNK_CODE))
    # Its entry point is the inferior-call landing, a permanent breakpoint.
    assert elf(runtime.data)["e_entry"] == thunk + CALL_LANDING_OFFSET
    assert symbols_of(runtime.data)["cm_call_landing"][0] == thunk + CALL_LANDING_OFFSET
    (fde,) = fdes_of(runtime.data).values()
    assert all(row[RIP].type == RegisterRule.UNDEFINED for row in fde.get_decoded().table)
    # The module's x32 image is position independent too: every function's
    # FDE, with 4-byte addresses, at its link address; placed by its load bias.
    (entry,) = loaded.store.registry.entries()
    (image,) = store_images
    assert image.load_bias == entry.store_code.base - LINK
    fdes = fdes_of(image.data)
    assert {LINK + f.native_start for f in entry.store_code.frame_table.functions()} <= set(fdes)


# ------------------------------------------------------------ the set
def test_images_are_memoized_unique_and_forgotten_when_unregistered(image_set, demo):
    first = image_set.for_store(demo[True].store)
    assert image_set.for_store(demo[True].store) == first
    assert all(a is b for a, b in zip(image_set.for_store(demo[True].store), first))
    other = image_set.for_store(demo[False].store)
    names = [image.name for image in first[:-1] + other[:-1]]
    assert len(set(names)) == len(names)  # debug and nodebug code differ
    assert all(Path(n).name == "demo.O0.elf" for n in names)
    assert image_set.find(first[0].name) is first[0].image
    assert image_set.find(first[-1].name) is image_set.runtime_image().image
    assert Path(first[-1].name).parent.name.startswith("test_1_2-runtime-")

    # A Store with one module registered by hand, unregistered, registered again.
    store = Store(Engine(debug=True, low_addresses=False))
    module = Module.from_file(store.engine, EXAMPLES / "demo.O0.wasm")
    store.registry.register(module, module.engine_code)
    (image,) = image_set.for_store(store)[:-1]
    # Another Store of another Engine, same module bytes: the same file (content-addressed).
    assert image.name == first[0].name and image.start != first[0].start
    store.registry.unregister(module.engine_code)
    assert image_set.for_store(store) == [image_set.runtime_image()]
    store.registry.register(module, module.engine_code)
    (again,) = image_set.for_store(store)[:-1]
    (entry,) = store.registry.entries()
    assert again.start == entry.store_code.base and image_set.find(again.name) is again.image
    store.registry.unregister(module.engine_code)


def test_remove_files_deletes_the_runtime_image_and_keeps_the_cached_module_images(tmp_path, demo):
    images = DebugImageSet(tmp_path / "fresh", process_tag="gone")
    written = images.for_store(demo[False].store)
    module_image, runtime = written
    assert runtime.path.exists() and not module_image.path.exists()  # made on first use of its data
    data = module_image.data
    assert module_image.path.read_bytes() == data
    images.remove_files()
    assert not runtime.path.exists() and module_image.path.exists()
    assert images.find(runtime.name) is None
    # Another set (another run) reads the cached file instead of building it again.
    again = DebugImageSet(tmp_path / "fresh", process_tag="again").for_store(demo[False].store)[0]
    assert again.name == module_image.name and again.data == data


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrites ``path`` (same inode) and moves its mtime on, as any later
    write would (the file system's clock is coarser than a test is fast)."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_damaged_cached_image_is_rebuilt(tmp_path, demo):
    images = DebugImageSet(tmp_path / "cache", process_tag="damage")
    image = images.for_store(demo[True].store)[0]
    good = image.data
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    _rewrite_in_place(image.path, bytes(damaged))
    again = DebugImageSet(tmp_path / "cache", process_tag="damage2").for_store(demo[True].store)[0]
    assert not again.image.on_disk  # its stamp no longer matches: checked (and rebuilt) on use
    assert again.data == good and image.path.read_bytes() == good
    _rewrite_in_place(image.path, good[:100])
    assert DebugImageSet(tmp_path / "cache", process_tag="damage3").for_store(demo[True].store)[0].data == good


def test_a_stamped_cached_image_is_read_without_hashing_and_an_unstamped_one_is_checked_once(
        tmp_path, demo, monkeypatch):
    import gdbstub.images as images_module
    written = DebugImageSet(tmp_path / "cache", process_tag="w").for_store(demo[True].store)[0]
    good = written.data
    assert written.image.on_disk and Path(str(written.path) + ".stamp").is_file()
    hashed = []
    real_check = images_module.build_id_is_intact
    monkeypatch.setattr(images_module, "build_id_is_intact", lambda data: hashed.append(1) or real_check(data))
    assert DebugImageSet(tmp_path / "cache", process_tag="r1").for_store(demo[True].store)[0].data == good
    assert hashed == []
    # A cache filled by a version without stamps: the first read checks the
    # build id and stamps the file; the next one trusts the stamp.
    Path(str(written.path) + ".stamp").unlink()
    assert DebugImageSet(tmp_path / "cache", process_tag="r2").for_store(demo[True].store)[0].data == good
    assert hashed == [1]
    assert DebugImageSet(tmp_path / "cache", process_tag="r3").for_store(demo[True].store)[0].data == good
    assert hashed == [1]


def test_an_x32_executable_takes_its_data_symbols_from_the_cached_images_without_loading_them(tmp_path):
    loaded = load(EXAMPLES / "inventory.O0.wasm", True, low_addresses=True)
    first = DebugImageSet(tmp_path / "cache", process_tag="first")
    expected = first.executable(loaded.store).data  # builds the module image
    assert {"greeting", "hidden_total"} <= set(symbols_of(expected))
    fresh = DebugImageSet(tmp_path / "cache", process_tag="first")
    (module_image,) = fresh.libraries(loaded.store)
    assert module_image.image.on_disk and not module_image.image.ready
    assert fresh.executable(loaded.store).data == expected
    assert not module_image.image.ready  # one section read in place, not the 10 MiB a real module has


# ------------------------------------------------------------ library lists
def test_svr4_library_list_has_what_gdb_13_requires(image_set, demo):
    images = image_set.for_store(demo[True].store)
    root = ET.fromstring(libraries_svr4_xml(images))
    assert root.tag == "library-list-svr4" and root.get("version") == "1.0"
    assert int(root.get("main-lm"), 16) == 0
    libraries = root.findall("library")
    assert [lib.get("name") for lib in libraries] == [image.name for image in images]
    for lib, image in zip(libraries, images):
        assert set(lib.attrib) == {"name", "lm", "l_addr", "l_ld", "lmid"}
        assert int(lib.get("l_addr"), 16) == image.load_bias and int(lib.get("lmid"), 16) == 0
        assert int(lib.get("lm"), 16) == image.start
    assert len({lib.get("lm") for lib in libraries}) == len(libraries)


@pytest.mark.parametrize("form", ["segment", "section"])
def test_library_list_names_each_image_with_its_code_address(image_set, demo, form):
    images = image_set.for_store(demo[True].store)
    root = ET.fromstring(libraries_xml(images, form=form) if form == "section" else libraries_xml(images))
    assert root.tag == "library-list" and root.get("version") == "1.0"
    for lib, image in zip(root.findall("library"), images, strict=True):
        (child,) = list(lib)
        assert lib.get("name") == image.name
        assert child.tag == form and int(child.get("address"), 16) == image.start
    with pytest.raises(ValueError):
        libraries_xml(images, form="sections")


def test_library_names_are_xml_escaped():
    odd = LoadedImage(DebugImage(Path('/tmp/a"b<&>.elf'), 0x1000, 0x1000, data=b""), 0x1000)
    for document in (libraries_svr4_xml([odd]), libraries_xml([odd])):
        assert ET.fromstring(document).find("library").get("name") == '/tmp/a"b<&>.elf'


# ------------------------------------------------------------ vFile server
def test_file_server_serves_only_images_read_only(image_set, demo):
    image = image_set.for_store(demo[True].store)[0]
    server = ImageFileServer(image_set)
    fd = server.open(image.name, 0, 0)
    assert fd == FIRST_FD
    assert server.pread(fd, 16, 0) == image.data[:16] and image.data[:4] == b"\x7fELF"
    assert server.pread(fd, 100, len(image.data) - 10) == image.data[-10:]
    assert server.pread(fd, 100, len(image.data)) == b"" and server.pread(fd, 100, 1 << 40) == b""
    stat = server.fstat(fd)
    assert len(stat) == 64
    assert int.from_bytes(stat[8:12], "big") == 0o100444  # st_mode: regular, read-only
    assert int.from_bytes(stat[28:36], "big") == len(image.data)  # st_size
    with pytest.raises(FileServerError) as error:
        server.pread(fd, -1, 0)
    assert error.value.errno == FileIOErrno.EINVAL

    parent = str(Path(image.name).parent)
    tricks = ["/etc/passwd", f"{parent}/../{Path(parent).name}/{Path(image.name).name}",
              f"{parent}//{Path(image.name).name}", f"{parent}/./{Path(image.name).name}",
              Path(image.name).name, image.name + "\0", image.name + "/", parent, "just probing", ""]
    for path in tricks:
        with pytest.raises(FileServerError) as error:
            server.open(path, 0, 0)
        assert error.value.errno == FileIOErrno.ENOENT, path
    for flags in (FileIOOpenFlags.O_WRONLY, FileIOOpenFlags.O_RDWR, FileIOOpenFlags.O_CREAT,
                  FileIOOpenFlags.O_TRUNC, FileIOOpenFlags.O_APPEND | FileIOOpenFlags.O_WRONLY):
        with pytest.raises(FileServerError) as error:
            server.open(image.name, int(flags), 0o644)
        assert error.value.errno == FileIOErrno.EACCES
    assert server.open(image.name.encode(), 0, 0) == FIRST_FD + 1  # bytes from the packet parser


def test_file_server_fds_reuse_limit_and_ebadf(image_set, demo):
    images = image_set.for_store(demo[True].store)
    server = ImageFileServer(image_set)
    fds = [server.open(images[k % len(images)].name, 0, 0) for k in range(MAX_OPEN_FILES)]
    assert fds == list(range(FIRST_FD, FIRST_FD + MAX_OPEN_FILES))
    with pytest.raises(FileServerError) as error:
        server.open(images[0].name, 0, 0)
    assert error.value.errno == FileIOErrno.EMFILE
    server.close(FIRST_FD + 5)
    server.close(FIRST_FD + 2)
    assert server.open(images[-1].name, 0, 0) == FIRST_FD + 2  # lowest free first
    assert server.pread(FIRST_FD + 2, 4, 0) == images[-1].data[:4]
    for call in (lambda: server.pread(FIRST_FD + 5, 1, 0), lambda: server.fstat(FIRST_FD + 5),
                 lambda: server.close(FIRST_FD + 5), lambda: server.pread(0, 1, 0), lambda: server.close(-1)):
        with pytest.raises(FileServerError) as error:
            call()
        assert error.value.errno == FileIOErrno.EBADF


# ------------------------------------------------------------ real gdb, file
def run_gdb(*commands: str, target: str | None = None) -> str:
    arguments = ["gdb", "-nx", "-batch"]
    for command in commands:
        arguments += ["-ex", command]
    if target:
        arguments.append(target)
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def test_gdb_names_every_function_veneer_and_runtime_symbol(image_set, demo):
    loaded = demo[True]
    images = image_set.for_store(loaded.store)
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    functions = code.frame_table.functions()
    # gdb FILE loads it at its link addresses.
    commands = [f"info symbol {LINK + f.native_start + 9:#x}" for f in functions]
    commands.append(f"info symbol {LINK + code.frame_table.header.trap_veneer:#x}")
    output = run_gdb(f"set $base = {images[0].load_bias:#x}", *commands, "info functions ^wasm|^square|^run",
                     target=str(images[0].path))
    for func in functions:
        assert f"{loaded.module.func_name(func.wasm_index)} + 9 in section .text" in output, output
    assert f"{TRAP_VENEER_SYMBOL} in section .text" in output
    runtime = images[-1]
    lib = native.lib
    output = run_gdb(f"info symbol {lib.cm_enter_address() + 1:#x}",
                     f"info symbol {lib.cm_trap_trampoline_address():#x}", target=str(runtime.path))
    assert "cm_enter + 1 in section .text" in output and "cm_trap_trampoline in section .text" in output, output


# ------------------------------------------------------------ real gdb, remote
@dataclass
class Stop:
    regfile: bytes
    stack_base: int
    stack: bytes
    frames: list[str]


def stop_in_square(loaded: Loaded, site_index_in_square: int) -> Stop:
    """Run `run()` with one site of `square` patched; capture the first stop."""
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    square = next(f for f in code.frame_table.functions() if loaded.module.func_name(f.wasm_index) == "square")
    site = code.base + code.frame_table.sequence_points(square)[site_index_in_square].native_offset
    stops: list[Stop] = []

    def handler(kind, trap_code, regfile, vmctx):
        if stops:
            return
        rsp = regfile.gpr[GPR["rsp"]]
        top = loaded.store.ctx.stack.top
        base = rsp - 512
        stack = bytes(native.ffi.buffer(native.ffi.cast("char *", base), top - base))
        frames = [f.func_name for f in loaded.store.backtrace(regfile.rip, regfile.gpr[GPR["rbp"]], rsp)]
        stops.append(Stop(bytes(native.ffi.buffer(regfile, arch_amd64.REGFILE_SIZE)), base, stack, frames))

    loaded.store.debug_handler = handler
    with loaded.store.registry.patch_edit() as edit:
        loaded.store.registry.enable_site(site, edit)
    try:
        assert loaded.instance.exports["run"]() == 505
    finally:
        with loaded.store.registry.patch_edit() as edit:
            loaded.store.registry.disable_site(site, edit)
        loaded.store.debug_handler = None
    (stop,) = stops
    assert int.from_bytes(stop.regfile[128:136], "little") == site
    return stop


class MiniStub:
    """The least RSP stub that lets gdb/lldb load our images and unwind a stop:
    registers from a captured regfile, memory from captured regions, library
    lists from gdbstub.images, files from an ImageFileServer."""

    def __init__(self, regfile: bytes, regions: list[tuple[int, bytes]], *, svr4: str | None = None,
                 libraries: str | None = None, files: ImageFileServer, osabi: bool = True):
        self.regfile, self.regions, self.files = regfile, regions, files
        self.documents = {"libraries-svr4": svr4, "libraries": libraries,
                          "features": arch_amd64.target_xml() if osabi
                          else arch_amd64.target_xml().replace("<osabi>GNU/Linux</osabi>", "")}
        self.packets: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def supported(self) -> bytes:
        features = ["PacketSize=4000", "qXfer:features:read+"]
        features += [f"qXfer:{name}:read+" for name in ("libraries-svr4", "libraries") if self.documents[name]]
        return ";".join(features).encode()

    def vfile(self, operation: str, arguments: str) -> bytes:
        try:
            if operation == "setfs":
                return vfile_result(0)
            if operation == "open":
                path, flags, mode = arguments.split(",")
                return vfile_result(self.files.open(hex_decode(path.encode()).decode(), int(flags, 16),
                                                    int(mode, 16)))
            if operation == "pread":
                fd, count, offset = (int(x, 16) for x in arguments.split(","))
                return vfile_data(self.files.pread(fd, min(count, 0x3000), offset))
            if operation == "fstat":
                return vfile_data(self.files.fstat(int(arguments, 16)))
            if operation == "close":
                self.files.close(int(arguments, 16))
                return vfile_result(0)
        except FileServerError as error:
            return vfile_result(-1, error.errno)
        return b""

    def answer(self, packet: str) -> bytes:
        simple = {"?": b"T05thread:1;", "qfThreadInfo": b"m1", "qsThreadInfo": b"l", "qC": b"QC1",
                  "qAttached": b"1", "qHostInfo": arch_amd64.host_info_reply().encode(),
                  "qProcessInfo": arch_amd64.process_info_reply(1).encode()}
        if packet in simple:
            return simple[packet]
        if packet.startswith("qSupported"):
            return self.supported()
        if packet.startswith(("Hg", "Hc", "D")):
            return b"OK"
        if packet == "g":
            return arch_amd64.regfile_to_g(self.regfile).hex().encode()
        if (match := re.fullmatch(r"p([0-9a-f]+)(;thread:[0-9a-f]+;)?", packet)):
            return arch_amd64.read_register(self.regfile, int(match[1], 16)).hex().encode()
        if (match := re.fullmatch(r"qRegisterInfo([0-9a-f]+)", packet)):
            reply = arch_amd64.register_info_reply(int(match[1], 16))
            return reply.encode() if reply else b"E45"
        if (match := re.fullmatch(r"qXfer:([a-z0-9-]+):read:[^:]*:([0-9a-f]+),([0-9a-f]+)", packet)):
            document = self.documents.get(match[1])
            if document is None:
                return b"E00"
            return qxfer_chunk(document.encode(), int(match[2], 16), int(match[3], 16))
        if (match := re.fullmatch(r"m([0-9a-f]+),([0-9a-f]+)", packet)):
            address, length = int(match[1], 16), int(match[2], 16)
            for base, data in self.regions:
                if base <= address and address + length <= base + len(data):
                    return data[address - base:address - base + length].hex().encode()
            return b"E01"
        if (match := re.fullmatch(r"vFile:([a-z]+):(.*)", packet)):
            return self.vfile(match[1], match[2])
        return b""

    def serve(self) -> None:
        serve_one_client(self.server, self._record_and_answer, last=("D", "k"))

    def _record_and_answer(self, packet: str) -> bytes:
        self.packets.append(packet)
        return self.answer(packet)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.server.close()


def backtrace_of(output: str) -> list[str]:
    """Function names of the first `bt` listing in gdb's output (a later
    `frame N` prints its line again)."""
    frames: dict[int, str] = {}
    # A frame with arguments (the DWARF of demo.c names them) lists them in
    # the parentheses; these stubs serve no linear memory, so they may be errors.
    for number, name in re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+) \(.*\)", output, re.M):
        if int(number) != len(frames):
            break
        frames[int(number)] = name
    return list(frames.values())


def syms_read_column(images, image) -> str:
    """The regex of gdb's ``Syms Read`` column for ``image`` in ``info
    sharedlibrary``: the StoreCode images of demo.O0 (built with ``-g``) carry
    the guest's line table, so gdb has debugging information for them
    (``Yes``); the runtime image has symbols and CFI only (``Yes (*)``)."""
    has_lines = elf(image.data).get_section_by_name(".debug_line") is not None
    assert has_lines == (image is not images[-1]), f"{image.name}: .debug_line present = {has_lines}"
    return r"Yes" if has_lines else r"Yes \(\*\)"


def regions_for(loaded: Loaded, images, stop: Stop) -> list[tuple[int, bytes]]:
    """The code as the Store runs it (slots filled), then the stack."""
    regions = [(entry.store_code.base, entry.store_code.read_for_debugger(
        entry.store_code.base, entry.engine_code.code_size)) for entry in loaded.store.registry.entries()]
    runtime = images[-1]
    regions.append((runtime.start, elf(runtime.data).get_section_by_name(".text").data()))
    return regions + [(stop.stack_base, stop.stack)]


@pytest.mark.parametrize("site_index", [0, 3], ids=["entry-site", "body-site"])
def test_gdb_fetches_images_by_vfile_and_unwinds_to_cm_enter(image_set, site_index):
    loaded = load(EXAMPLES / "demo.O0.wasm", True)
    images = image_set.for_store(loaded.store)
    stop = stop_in_square(loaded, site_index)
    if site_index:  # Store.backtrace walks the rbp chain, which skips the caller at an entry site
        assert stop.frames == ["square", "sum_of_squares", "run"]
    stub = MiniStub(stop.regfile, regions_for(loaded, images, stop), svr4=libraries_svr4_xml(images),
                    files=ImageFileServer(image_set))
    try:
        # Default sysroot "target:": gdb reads each library over vFile.
        # No exec file: gdb lists the libraries on connect but reads their
        # symbols only when asked (see test_debugimage), hence `sharedlibrary`.
        output = run_gdb(f"target remote 127.0.0.1:{stub.port}", "sharedlibrary", "info sharedlibrary", "bt",
                         "frame 1", "info frame", "detach")
    finally:
        stub.close()
    for image in images:
        assert f"Reading {image.name} from remote target" in output, output
        assert re.search(rf"{image.start:#018x}\s+{image.end:#018x}\s+{syms_read_column(images, image)}\s+"
                         rf"target:{re.escape(image.name)}", output), output
    assert backtrace_of(output) == ["square", "sum_of_squares", "run", "cm_enter"], output
    assert "Backtrace stopped" not in output and "#4" not in output
    assert "caller of frame at" in output  # `info frame` of frame 1 found its caller through the CFI
    assert any(p.startswith("vFile:open:") for p in stub.packets)
    assert not any(p.startswith("vFile:pwrite") for p in stub.packets)


def test_gdb_reads_the_segment_form_library_list(image_set):
    """gdb's solib-target (no GNU/Linux osabi) with qXfer:libraries: each
    library's <segment> is its PT_LOAD address, so symbols resolve unslid."""
    loaded = load(EXAMPLES / "demo.O0.wasm", True)
    images = image_set.for_store(loaded.store)
    stop = stop_in_square(loaded, 3)
    stub = MiniStub(stop.regfile, regions_for(loaded, images, stop), libraries=libraries_xml(images),
                    files=ImageFileServer(image_set), osabi=False)
    (entry,) = loaded.store.registry.entries()
    fact = next(f for f in entry.store_code.frame_table.functions()
                if loaded.module.func_name(f.wasm_index) == "fact")
    try:
        output = run_gdb("set osabi none", f"target remote 127.0.0.1:{stub.port}", "sharedlibrary",
                         "info sharedlibrary",
                         f"info symbol {entry.store_code.base + fact.native_start + 2:#x}", "bt", "detach")
    finally:
        stub.close()
    assert any(p.startswith("qXfer:libraries:read") for p in stub.packets)
    for image in images:
        assert re.search(rf"{image.start:#018x}\s+{image.end:#018x}\s+{syms_read_column(images, image)}\s+"
                         rf"target:{re.escape(image.name)}", output), output
    assert "fact + 2 in section .text" in output, output
    assert backtrace_of(output) == ["square", "sum_of_squares", "run", "cm_enter"], output


# ------------------------------------------------------------ real lldb
def test_lldb_uses_the_images_cfi_to_unwind_a_remote_stop(image_set):
    """lldb-22 loads no library over a plain gdb-remote without an executable
    (no dynamic loader takes such a target), so the images are added by hand
    at slide 0; lldb then picks our .debug_frame as the unwind plan."""
    loaded = load(EXAMPLES / "demo.O0.wasm", True)
    images = image_set.for_store(loaded.store)
    stop = stop_in_square(loaded, 0)  # the entry site: an rbp-chain walk would skip sum_of_squares
    (entry,) = loaded.store.registry.entries()
    code = entry.store_code
    sum_of_squares = next(f for f in code.frame_table.functions()
                          if loaded.module.func_name(f.wasm_index) == "sum_of_squares")
    stub = MiniStub(stop.regfile, regions_for(loaded, images, stop), svr4=libraries_svr4_xml(images),
                    files=ImageFileServer(image_set))
    commands = [f"gdb-remote {stub.port}"]
    commands += [f"target modules add {image.name}" for image in images]
    commands += [f"target modules load -f {image.name} -s {image.load_bias:#x}" for image in images]
    commands += ["bt", f"image show-unwind -a {code.base + sum_of_squares.native_start + 4:#x}",
                 f"image show-unwind -a {images[-1].start + 1:#x}", "process detach"]
    arguments = ["lldb-22", "-b", "--no-lldbinit"]
    for command in commands:
        arguments += ["-o", command]
    try:
        done = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    finally:
        stub.close()
    output = done.stdout + done.stderr
    names = re.findall(r"frame #\d+: 0x[0-9a-f]+ \S+`(\w+)", output)
    assert names[:3] == ["square", "sum_of_squares", "run"], output
    plans = output.split("UNWIND PLANS for ")
    function_plan, runtime_plan = plans[1], plans[2]
    assert "Asynchronous (not restricted to call-sites) UnwindPlan is 'DWARF CFI'" in function_plan
    debug_frame = function_plan.split("debug_frame UnwindPlan:")[1].split("\n\n")[0]
    rows = re.findall(r"row\[\d+\]:\s+(\d+): CFA=(\w+) ?\+(\d+) => (.*)", debug_frame)
    assert [(int(o), r, int(n)) for o, r, n, _ in rows][:3] == [(0, "rsp", 8), (1, "rsp", 16), (4, "rbp", 16)]
    assert runtime_plan.startswith(f"{Path(images[-1].name).name}`cm_enter"), runtime_plan[:200]
    runtime_rows = runtime_plan.split("debug_frame UnwindPlan:")[1].split("\n\n")[0]
    assert re.search(r"row\[0\]:\s+0: CFA=rsp \+8 => rip=\?", runtime_rows), runtime_rows


# ------------------------------------------------------------ the extension point
@dataclass
class AddSections:
    """An ImageSectionBuilder returning fixed sections, recording its context."""

    name: str
    digest: str
    result: dict
    seen: list = None

    def sections(self, context):
        if self.seen is not None:
            self.seen.append(context)
        return dict(self.result)


def test_section_builders_add_sections_to_the_cached_image_and_its_key(tmp_path, demo):
    seen = []
    builder = AddSections("guest-vars", "v1", {".debug_str": b"x\0y\0", ".debug_loclists": b"\1\2"}, seen)
    images = DebugImageSet(tmp_path, process_tag="ext", section_builders=(builder,))
    image = images.for_store(demo[True].store)[0]
    parsed = elf(image.data)
    assert parsed.get_section_by_name(".debug_str").data() == b"x\0y\0"
    assert parsed.get_section_by_name(".debug_loclists").data() == b"\1\2"
    assert parsed.get_section_by_name(".debug_line") is not None  # the image's own sections stay
    (context,) = seen
    assert context.link_address == LINK and context.address_of(0x10) == LINK + 0x10
    assert context.lines.rows and {s.name for s in context.symbols} >= {"square", "run"}
    (entry,) = demo[True].store.registry.entries()
    point = next(p for p in entry.store_code.frame_table.sequence_points(
        entry.store_code.frame_table.function(0)) if p.kind.name == "INSTRUCTION")
    assert context.native_offset_of_wasm(point.wasm_offset) == point.native_offset
    # The builder's digest is part of the content address.
    other = DebugImageSet(tmp_path, process_tag="ext2", section_builders=(AddSections("guest-vars", "v2", {}),))
    plain = DebugImageSet(tmp_path, process_tag="ext3")
    names = {image.name, other.for_store(demo[True].store)[0].name, plain.for_store(demo[True].store)[0].name}
    assert len(names) == 3


def test_a_builder_replaces_the_compile_unit_only_whole(tmp_path, demo):
    from gdbstub.debugimage import DebugImageError
    from gdbstub.debugimage.dwarf import build_debug_abbrev
    abbrev = build_debug_abbrev()
    replaced = DebugImageSet(tmp_path, process_tag="cu", section_builders=(
        AddSections("cu", "1", {".debug_info": b"\0" * 12, ".debug_abbrev": abbrev}),))
    parsed = elf(replaced.for_store(demo[True].store)[0].data)
    assert parsed.get_section_by_name(".debug_info").data() == b"\0" * 12
    for sections, message in (({".debug_info": b"\0"}, "together"), ({".text": b"\x90"}, "reserved"),
                              ({".symtab": b""}, "reserved")):
        images = DebugImageSet(tmp_path, process_tag="bad", section_builders=(AddSections("bad", "1", sections),))
        with pytest.raises(DebugImageError, match=message):
            images.for_store(demo[True].store)[0].data


def test_an_image_that_cannot_be_made_is_a_file_io_error_not_a_crash(tmp_path, demo):
    images = DebugImageSet(tmp_path, process_tag="broken", section_builders=(
        AddSections("bad", "1", {".text": b"\x90"}),))
    image = images.for_store(demo[True].store)[0]
    server = ImageFileServer(images)
    fd = server.open(image.name, 0, 0)  # known by name before it is made
    for call in (lambda: server.pread(fd, 16, 0), lambda: server.fstat(fd)):
        with pytest.raises(FileServerError) as error:
            call()
        assert error.value.errno == FileIOErrno.EUNKNOWN and "reserved" in str(error.value)


def test_the_collector_is_paused_while_images_are_built_and_restored_after_the_last_pause():
    import gc
    import threading

    from gdbstub.images import collector_paused

    assert gc.isenabled()
    inner_started, release = threading.Event(), threading.Event()

    def other_build():
        with collector_paused():
            inner_started.set()
            release.wait(10)

    with collector_paused():
        assert not gc.isenabled()
        worker = threading.Thread(target=other_build)
        worker.start()
        assert inner_started.wait(10)
    assert not gc.isenabled()  # the other build still runs
    release.set()
    worker.join(10)
    assert gc.isenabled()

    gc.disable()  # a pause leaves a collector its caller turned off as it was
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed build")
    assert gc.isenabled()
