"""Frame-table sweep over every function of every example, through the real pipeline.

``tests/test_compiler.py`` checks the compiler's output bytes against its frame
table, using our own wasm decoder for instruction boundaries.  This sweep closes
the two remaining gaps:

* it reads the *published EngineCode image* (``Module(engine, wasm).engine_code``:
  after the trampoline slots were filled and the memfd sealed) and a debug
  Store's copy-on-write StoreCode, not the compiler's return value;
* it takes wasm instruction boundaries from ``wasm-objdump -d`` (wabt), so a
  decoder bug cannot agree with itself.

For every function of every ``examples/build/*.wasm``, debug on and off:

* debug: every patch site reads its PatchSite record's disabled bytes in
  EngineCode and in the StoreCode, and those are either ``0f 1f 44 00 00``,
  which capstone decodes as one ``nop`` (after its DS prefixes) at a boundary
  of a linear sweep of its function, or a *carrier store*
  (codemem.frametable.carrier_store): one ``mov qword ptr [rsp + d], reg``
  (after its DS prefixes) at such a boundary, at an INSTRUCTION point whose
  top operand-stack slot is the one it stores (``d / 8 == depth - 1``); the
  function's first byte is a (NOP) site; or a *local carrier* (``ds mov
  qword ptr [rbp - d], reg``) or a *move carrier* (``ds ds mov r, r``) right
  after a ``local.set``/``local.tee``'s point, whose destination is that
  local's home (LocalSlot) or a register that mirrors it at the site's point;
* every sequence point's wasm offset is an instruction boundary of that
  function per wasm-objdump;
* every native ``call`` (except the trap veneer, which never returns, and
  libcalls into the runtime, which are not wasm calls) is followed by a
  RETURN_POINT sequence point (and, debug, a patch site) whose wasm offset is a
  ``call``/``call_indirect`` of that function; every RETURN_POINT is such a
  return address.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import capstone
import pytest

import codemem
from codemem.abi import VMCTX_LIBCALL_CTX
from codemem.frametable import SITE_DISABLED, SITE_SIZE, SequencePointKind, carrier_bytes, carrier_store
from codemem.wasm.opcodes import OP_BY_NAME
from codemem.x64.compiler import _DEFERRING

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "build").glob("*.wasm"))
DISASSEMBLER = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
LIBCALL_LOAD = f"r15, qword ptr [r15 + {VMCTX_LIBCALL_CTX:#x}]"

_GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{k}" for k in range(8, 16)))
_FUNCTION_LINE = re.compile(r"^[0-9a-f]+ func\[(\d+)\]")
_INSTRUCTION_LINE = re.compile(r"^\s*([0-9a-f]+):\s[0-9a-f ]*\|\s*(\S+)")


def objdump_instructions(path: Path) -> dict[int, dict[int, str]]:
    """function index -> {module offset: mnemonic}, from ``wasm-objdump -d``."""
    tool = shutil.which("wasm-objdump")
    assert tool, "wasm-objdump (Debian package wabt) is required"
    listing = subprocess.run([tool, "-d", str(path)], check=True, capture_output=True, text=True).stdout
    functions: dict[int, dict[int, str]] = {}
    current = None
    for line in listing.splitlines():
        if m := _FUNCTION_LINE.match(line):
            current = functions.setdefault(int(m.group(1)), {})
        elif current is not None and (m := _INSTRUCTION_LINE.match(line)):
            current[int(m.group(1), 16)] = m.group(2)
    return functions


def _leb_u32(data: bytes, at: int) -> int:
    """The unsigned LEB128 at ``data[at:]`` (a local.set's local index)."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        at += 1
        shift += 7


def test_every_example_is_swept():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "nodebug"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_sweep(path: Path, debug: bool):
    wasm_instructions = objdump_instructions(path)
    engine = codemem.Engine(debug=debug)
    module = codemem.Module.from_file(engine, path)
    engine_code = module.engine_code
    table = engine_code.frame_table
    code = engine_code.read(0, engine_code.code_size)
    sites = table.site_offsets
    site_set = set(sites)
    store = codemem.Store(engine)
    try:
        store_code = codemem.Instance(store, module, []).store_code
        assert store_code.shares_engine_mapping is (not debug)
        if not debug:
            assert sites == []
        swept_sites = set()
        carriers = deferred = local_carriers = move_carriers = producers = 0
        wasm = path.read_bytes()
        trap_veneer = table.header.trap_veneer
        assert table.num_functions == len(module.info.codes)
        for func in table.functions():
            where = f"{path.name} function {func.wasm_index}"
            boundaries = wasm_instructions[func.wasm_index]
            listing = list(DISASSEMBLER.disasm_lite(code[func.native_start:func.native_end], func.native_start))
            assert sum(size for _, size, _, _ in listing) == func.native_size, f"{where}: capstone stopped early"
            native_boundaries = {address for address, _, _, _ in listing}
            # A site padded to its 8-byte rule is one instruction with its DS
            # prefixes (compiler._site_bytes): the site starts after them.
            # So is a carrier store with its DS prefixes.
            native_boundaries |= {address + size - SITE_SIZE for address, size, mnemonic, _ in listing
                                  if mnemonic in ("nop", "mov") and size > SITE_SIZE
                                  and code[address:address + size - SITE_SIZE] == b"\x3e" * (size - SITE_SIZE)}
            # So is a producer carrier with a REX.B before it (and DS prefixes before that).
            native_boundaries |= {address + size - SITE_SIZE for address, size, mnemonic, _ in listing
                                  if mnemonic == "mov" and size > SITE_SIZE
                                  and code[address + size - SITE_SIZE - 1] == 0x41
                                  and code[address + size - SITE_SIZE] & 0xF8 == 0xB8
                                  and code[address:address + size - SITE_SIZE - 1] == b"\x3e" * (size - SITE_SIZE - 1)}
            points = table.sequence_points(func)
            for point in points:
                assert point.wasm_offset in boundaries, \
                    f"{where}: sequence point at wasm {point.wasm_offset:#x} is not an instruction (wasm-objdump)"
                assert point.native_offset in native_boundaries or point.native_offset == func.native_end
            return_points = {p.native_offset: p for p in points if p.kind == SequencePointKind.RETURN_POINT}
            points_at = {p.native_offset: p for p in points}
            point_before = {p.native_offset: q for q, p in zip(points, points[1:])}
            homes = [slot.frame_offset for slot in table.locals(func)]

            # codemem.abi "Function layout": push rbp; mov rbp, rsp, then
            # the ENTRY point (its site in debug code).
            assert code[func.native_start:func.native_start + 4] == b"\x55\x48\x89\xe5", \
                f"{where}: no `push rbp; mov rbp, rsp` at the function's first byte"
            assert points[0].kind == SequencePointKind.ENTRY and points[0].native_offset == func.native_start + 4
            if debug:
                assert func.native_start + 4 in site_set, f"{where}: no site after the function's frame setup"
            previous = None
            call_returns = set()
            for address, size, mnemonic, operands in listing:
                site = address + size - SITE_SIZE
                if site in site_set:
                    record = table.site(table.site_index(site))
                    assert code[site:site + SITE_SIZE] == record.disable
                    assert store_code.read_raw(store_code.pc_of(site), SITE_SIZE) == record.disable
                    carried = carrier_store(record.disable)
                    if carried is None:
                        assert mnemonic == "nop" and code[address:site] == b"\x3e" * (site - address), \
                            f"{where}: site {site:#x} is in {mnemonic} at {address:#x}"
                        assert record.disable == SITE_DISABLED
                    elif carried.kind == "producer":
                        # A producer carrier: a constant's load (its slot store
                        # left out, as for a deferred carrier), completed from
                        # the point: its top slot and the register mirroring it.
                        point = points_at[site]
                        full = table.site_carrier(table.site_index(site))
                        prefixes = code[address:site]
                        rex = full.register >= 8
                        assert mnemonic == "mov" and set(prefixes[:len(prefixes) - rex]) <= {0x3E} \
                            and prefixes[len(prefixes) - rex:] == (b"\x41" if rex else b"") \
                            and len(prefixes) - rex <= 4, f"{where}: producer carrier {site:#x} is in {mnemonic}"
                        assert boundaries[point_before[site].wasm_offset] in ("i32.const", "i64.const", "f32.const",
                                                                              "f64.const"), f"{where}: {site:#x}"
                        assert OP_BY_NAME[boundaries[point.wasm_offset]] in _DEFERRING, \
                            f"{where}: producer carrier {site:#x} before {boundaries[point.wasm_offset]}"
                        assert (_GPR_NAMES[full.register], func.operand_slot_offset(full.slot)) in point.mirrors, \
                            f"{where}: the register of the producer carrier {site:#x} does not mirror its slot"
                        assert full.slot == point.stack_depth - 1 and carrier_bytes(full) == record.disable
                        carriers += 1
                        producers += 1
                    elif carried.kind != "slot":
                        # A local carrier (the store to a local's home) or a move
                        # carrier (the copy to the register that mirrors it): the
                        # last instruction of the local.set/local.tee at the
                        # point before, with its own DS prefixes.
                        point = points_at[site]
                        before = point_before[site]
                        setter = boundaries[before.wasm_offset]
                        assert setter in ("local.set", "local.tee"), f"{where}: carrier {site:#x} after {setter}"
                        home = homes[_leb_u32(wasm, before.wasm_offset + 1)]
                        assert mnemonic == "mov" and set(code[address:site]) <= {0x3E} and site - address <= 4, \
                            f"{where}: carrier site {site:#x} is in {mnemonic}"
                        assert point.kind == SequencePointKind.INSTRUCTION, f"{where}: carrier site {site:#x}"
                        if carried.kind == "local":
                            # capstone: "qword ptr ds:[rbp - 0x58], rdi"
                            shown = re.fullmatch(r"qword ptr ds:\[rbp - (\w+)\], (\w+)", operands)
                            assert shown and -int(shown.group(1), 0) == carried.disp == home \
                                and shown.group(2) == _GPR_NAMES[carried.register], (where, operands, home)
                            assert any(offset == home for _, offset in point.mirrors) or setter == "local.tee", \
                                f"{where}: no register mirrors the local stored at {site:#x}"
                            local_carriers += 1
                        else:
                            assert setter == "local.tee", f"{where}: move carrier {site:#x} after {setter}"
                            assert operands == f"{_GPR_NAMES[carried.target]}, {_GPR_NAMES[carried.register]}"
                            assert (_GPR_NAMES[carried.target], home) in point.mirrors, \
                                f"{where}: the move carrier {site:#x} does not load the local's mirror"
                            move_carriers += 1
                        carriers += 1
                    elif record.deferred:
                        # A deferred carrier: a NOP standing for the store, which
                        # only a stop performs.  Sound only where the instruction
                        # at the point reads the value from the register that
                        # mirrors the slot there and cannot trap (compiler._DEFERRING).
                        point = points_at[site]
                        assert mnemonic == "nop" and code[address:site] == b"\x3e" * (site - address) \
                            and site - address <= 4, f"{where}: deferred carrier {site:#x} is in {mnemonic}"
                        assert OP_BY_NAME[boundaries[point.wasm_offset]] in _DEFERRING, \
                            f"{where}: deferred carrier {site:#x} before {boundaries[point.wasm_offset]}"
                        assert (_GPR_NAMES[carried.register], func.operand_slot_offset(carried.slot)) in point.mirrors, \
                            f"{where}: the register of the deferred carrier {site:#x} does not mirror its slot"
                        assert carried.slot == point.stack_depth - 1, f"{where}: deferred carrier {site:#x}"
                        carriers += 1
                        deferred += 1
                    else:
                        point = points_at[site]
                        assert mnemonic == "mov" and code[address:site] == b"\x3e" * (site - address) \
                            and site - address <= 4, f"{where}: carrier site {site:#x} is in {mnemonic}"
                        # capstone: "qword ptr [rsp + 8], r8" (DS-prefixed: "ds:[...]"; [rsp + 0]: "[rsp]")
                        shown = re.fullmatch(r"qword ptr (?:ds:)?\[rsp(?: \+ (\w+))?\], (\w+)", operands)
                        assert shown and int(shown.group(1) or "0", 0) == carried.disp \
                            and shown.group(2) == _GPR_NAMES[carried.register], operands
                        assert point.kind == SequencePointKind.INSTRUCTION, f"{where}: carrier site {site:#x}"
                        assert carried.slot == point.stack_depth - 1, \
                            f"{where}: the carrier store at {site:#x} writes slot {carried.slot}, not the top of " \
                            f"the operand stack ({point.stack_depth} values)"
                        carriers += 1
                    swept_sites.add(site)
                if mnemonic == "call":
                    libcall = operands == "rax" and previous is not None and previous[2:] == ("mov", LIBCALL_LOAD)
                    to_trap = operands != "rax" and int(operands, 0) == trap_veneer
                    if not (libcall or to_trap):
                        ret = address + size
                        call_returns.add(ret)
                        assert ret in return_points, f"{where}: call at {address:#x} has no RETURN_POINT after it"
                        assert boundaries[return_points[ret].wasm_offset] in ("call", "call_indirect")
                        if debug:
                            assert ret in site_set, f"{where}: call at {address:#x} is not followed by a site"
                if mnemonic != "nop":  # branch padding may separate a libcall's mov from its call
                    previous = (address, size, mnemonic, operands)
            assert set(return_points) == call_returns, f"{where}: RETURN_POINTs that follow no call"
        if debug:
            assert swept_sites == site_set, f"{len(site_set - swept_sites)} sites are not at instruction boundaries"
            assert len(site_set) >= sum(f.num_seqpoints for f in table.functions()) > 0
            # Most wasm instructions end with their result's store: every
            # example has carrier sites (docs/compiler-speed.md).
            assert carriers > 0, f"{path.name}: no carrier-store site"
            assert deferred > 0, f"{path.name}: no deferred carrier"
            assert local_carriers > 0, f"{path.name}: no local carrier"
            assert producers > 0, f"{path.name}: no producer carrier"
            if path.name == "bench_loop.O2.wasm":  # far locals tee'd into a mirror (docs/compiler-speed.md)
                assert move_carriers > 0, f"{path.name}: no move carrier"
    finally:
        store.close()
        engine_code.close()
