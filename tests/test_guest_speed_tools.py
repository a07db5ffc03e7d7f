"""The static half of the debug-mode guest speed benchmarks (scripts/bench/
branch_alignment.py, debug_overhead.py, site_cost.py), and what it found.

* Unit tests on byte literals: which instructions of a loop are patch sites and
  which are padding, which branch units sit on a 32-byte boundary, which CPUs
  have Intel's JCC erratum, which bytes are a frame-slot store, which
  instruction before a deferred store a stop could replay (site_cost.py's
  producer shapes).
* The finding the benchmarks rest on (docs/compiler-speed.md "Guest speed with
  debugging on"): debugging adds nothing to the -O2 kernel's hot loop but patch
  sites and padding NOPs, and no branch unit on a 32-byte boundary.
"""
from __future__ import annotations

import sys
from pathlib import Path

import capstone

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from _common import jcc_erratum_cpu  # noqa: E402
from branch_alignment import EXAMPLE, EXPORT, analyse, branch_hazards, loop_nops  # noqa: E402
from site_cost import _producer  # noqa: E402

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def _listing(code: bytes, base: int = 0) -> list:
    return list(MD.disasm_lite(code, base))


def test_a_prefixed_site_counts_as_a_site_and_other_nops_as_padding():
    code = bytes.fromhex(
        "3e3e0f1f440000"  # 0: site at 2, after two DS prefixes
        "4c89542408"  # 7: mov [rsp+8], r10
        "0f1f4000"  # 12: a 4-byte alignment NOP
        "0f1f440000"  # 16: site at 16
        "90"  # 21: a 1-byte NOP
    )
    assert loop_nops(_listing(code), [2, 16]) == (2, 2, 0)
    assert loop_nops(_listing(code), []) == (0, 4, 0)
    # The store at 7 as a carrier-store site: a site, not an added instruction.
    assert loop_nops(_listing(code), [2, 7, 16]) == (3, 2, 1)


def test_a_jcc_ending_on_a_32_byte_boundary_is_a_hazard_and_one_before_it_is_not():
    before = b"\x90" * 26 + bytes.fromhex("0f8500000000")  # jne rel32 ends at 32
    hits = branch_hazards(_listing(before))
    assert [address for address, _ in hits] == [26]
    clear = b"\x90" * 25 + bytes.fromhex("0f8500000000" "90")  # ends at 31
    assert branch_hazards(_listing(clear)) == []


def test_a_cmp_fused_with_its_jcc_is_one_unit_across_the_boundary():
    code = b"\x90" * 29 + bytes.fromhex("4c39c2" "7700")  # cmp rdx, r8 at 29..32, ja at 32
    hits = branch_hazards(_listing(code))
    assert [address for address, _ in hits] == [29] and "cmp + ja" in hits[0][1]


def test_only_skylake_derived_intel_cores_have_the_jcc_erratum():
    assert jcc_erratum_cpu({"vendor": "GenuineIntel", "family": 6, "model": 0x55})  # Skylake-SP, Cascade Lake
    assert jcc_erratum_cpu({"vendor": "GenuineIntel", "family": 6, "model": 0x9E})  # Coffee Lake
    assert not jcc_erratum_cpu({"vendor": "GenuineIntel", "family": 6, "model": 0x8F})  # Sapphire Rapids
    assert not jcc_erratum_cpu({"vendor": "AuthenticAMD", "family": 25, "model": 1})  # Zen 3
    assert not jcc_erratum_cpu({"vendor": "unknown", "family": None, "model": None})


def test_debugging_adds_only_sites_and_padding_to_the_O2_kernels_hot_loop():
    wasm = EXAMPLE.read_bytes()
    plain, sited = analyse(wasm, EXPORT, False), analyse(wasm, EXPORT, True)
    assert plain["loop_sites"] == 0 and sited["loop_sites"] > 0
    # The code between the NOPs is the same instruction for instruction: no
    # spill, reload or move is added for the debugger (the frame-slot contract
    # holds in both modes).
    # Carrier-store sites are instructions of both modes (the store of a
    # result): only the NOP sites and padding are added.
    assert 0 < sited["loop_carrier_sites"] < sited["loop_sites"]
    assert (sited["loop_instructions"] - (sited["loop_sites"] - sited["loop_carrier_sites"])
            - sited["loop_padding_nops"] == plain["loop_instructions"] - plain["loop_padding_nops"])
    assert plain["loop_hazards"] == [] and sited["loop_hazards"] == []
    assert plain["code_hazards"] == 0 and sited["code_hazards"] == 0


#: A NOP site (the previous point's), then a producer, then the store ``mov [rsp+8], r`` it feeds.
_SITE = bytes.fromhex("0f1f440000")


def _store(register: int) -> bytes:
    return bytes((0x48 | (register & 8) >> 1, 0x89, 0x44 | (register & 7) << 3, 0x24, 8))


def _producer_of(producer_hex: str, register: int, last_point: int = 0):
    code = _SITE + bytes.fromhex(producer_hex) + _store(register)
    return _producer(code, last_point, len(code) - 5, register)


def test_a_constant_a_register_move_or_a_home_load_of_the_stored_register_is_a_producer():
    assert _producer_of("bf00000080", 7) == ("constant", 5)  # mov edi, 0x80000000: 5 bytes
    assert _producer_of("41ba00140000", 10) == ("constant", 5)  # mov r10d, 0x1400: REX + 5 bytes
    assert _producer_of("4c89e7", 7) == ("move", 5)  # mov rdi, r12
    assert _producer_of("4c8b6590", 12) == ("load", 5)  # mov r12, [rbp-0x70]


def test_another_register_a_narrow_move_arithmetic_or_no_code_since_the_point_is_no_producer():
    assert _producer_of("bf00000080", 6) is None  # the store is of rsi
    assert _producer_of("4489e7", 7) is None  # mov edi, r12d (a 32-bit move)
    assert _producer_of("4501f4", 12) is None  # add r12d, r14d
    assert _producer_of("48c7c701000000", 7) is None  # mov rdi, 1: 7 bytes
    assert _producer_of("4c8ba588000000", 12) is None  # mov r12, [rbp+0x88]: disp32
    assert _producer_of("bf00000080", 7, last_point=10) is None  # the point is after it: nothing between
