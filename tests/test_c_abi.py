"""gdbstub/c_abi.py on literal layouts: System V classes of C aggregates
(AMD64 psABI 3.2.3), the registers a small one is returned in, and the image
section's records."""
from __future__ import annotations

import struct

import pytest

from gdbstub.c_abi import (
    INTEGER, SSE, Aggregate, AbiSectionError, FunctionAbi, classify, pack_abis, return_registers, returned_bytes,
    unpack_abis,
)


@pytest.mark.parametrize("size, fields, classes", [
    (8, [(0, 4, False), (4, 4, False)], (INTEGER,)),  # struct { int a, b; }
    (12, [(0, 4, False), (4, 4, False), (8, 4, False)], (INTEGER, INTEGER)),
    (8, [(0, 4, True), (4, 4, True)], (SSE,)),  # struct { float x, y; }
    (8, [(0, 4, True), (4, 4, False)], (INTEGER,)),  # a float and an int share an eightbyte: INTEGER
    (16, [(0, 8, True), (8, 4, False)], (SSE, INTEGER)),  # struct { double d; int n; }
    (24, [(0, 4, False)] * 6, ()),  # more than 16 bytes: MEMORY
    (8, [(2, 4, False)], ()),  # a field not aligned to its size: MEMORY
])
def test_aggregates_are_classified_by_their_eightbytes(size, fields, classes):
    assert classify(size, fields) == classes


def test_a_small_struct_is_returned_in_rax_rdx_or_xmm0_xmm1_by_class_in_order():
    data = struct.pack("<dii", 4.5, 4, 0)
    assert return_registers(Aggregate(16, (SSE, INTEGER)), data) == {"xmm0": struct.unpack("<Q", data[:8])[0],
                                                                      "rax": 4}
    trio = struct.pack("<3i", 1, 2, 3)
    registers = return_registers(Aggregate(12, (INTEGER, INTEGER)), trio)
    assert registers == {"rax": 0x0000000200000001, "rdx": 3}
    assert returned_bytes(Aggregate(12, (INTEGER, INTEGER)), registers) == trio


def test_records_survive_the_section_round_trip_and_a_truncated_section_is_an_error_naming_it():
    abis = {0x40: FunctionAbi(Aggregate(8, (INTEGER,)), (None,)),
            0x100: FunctionAbi(None, (Aggregate(24), None, Aggregate(16, (SSE, SSE))))}
    data = pack_abis(abis)
    assert unpack_abis(data) == abis
    with pytest.raises(AbiSectionError, match=r"\.wasm_gdbstub\.c_abi truncated"):
        unpack_abis(data[:-1])
    with pytest.raises(AbiSectionError, match="bad eightbyte class"):
        unpack_abis(pack_abis({0: FunctionAbi(Aggregate(8, (7,)), ())}))
