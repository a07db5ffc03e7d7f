"""Unit tests of the System V -> guest convention of inferior calls
(gdbstub/inferior_calls.py), on literal register values."""
from __future__ import annotations

import struct

import pytest

from codemem.wasm.types import FuncType, ValType
from gdbstub.c_abi import INTEGER, SSE, Aggregate, FunctionAbi
from gdbstub.inferior_calls import (
    LINEAR_RED_ZONE, CallSetupError, linear_area_size, lowered_stack_pointer, pack_plan, plan_call,
    sysv_argument_values,
)

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
# gpr in regfile order: rax rbx rcx rdx rsi rdi rbp rsp r8 .. r15
GPR = [0xA0, 0xB0, 0xC1, 0xD1, 0x51, 0xD0, 0xBB, 0x5F, 0x80, 0x90, 0, 0, 0, 0, 0, 0]


def xmm(k: int) -> int:
    return 0x1000 + k


def test_integer_arguments_come_from_rdi_rsi_rdx_rcx_r8_r9_then_the_stack():
    stack = {0: 0x5000, 1: 0x5001}
    values = sysv_argument_values([I32] * 8, GPR, xmm, stack.__getitem__)
    assert values == [0xD0, 0x51, 0xD1, 0xC1, 0x80, 0x90, 0x5000, 0x5001]


def test_float_arguments_take_xmm_registers_in_their_own_order():
    values = sysv_argument_values([I32, F64, I64, F32, I32], GPR, xmm, lambda k: pytest.fail("no stack"))
    assert values == [0xD0, 0x1000, 0x51, 0x1001, 0xD1]


def test_a_ninth_float_goes_on_the_stack_after_earlier_stack_integers():
    params = [F64] * 9 + [I32] * 7
    values = sysv_argument_values(params, GPR, xmm, lambda k: 0x7000 + k)
    assert values[:9] == [0x1000 + k for k in range(8)] + [0x7000]
    assert values[9:] == [0xD0, 0x51, 0xD1, 0xC1, 0x80, 0x90, 0x7001]


def test_the_plan_puts_an_even_sized_array_above_the_moved_return_address():
    plan = plan_call(FuncType((I32, I64, F64), (I32,)), 0x8000, 0x7000, GPR, xmm, lambda k: 0)
    assert plan.rsp == 0x8000 - 8 * 4 and plan.array == plan.rsp + 8
    assert plan.values == (0xD0, 0x51, 0x1000, 0)
    data = pack_plan(plan, 0x80000008)
    assert struct.unpack("<5Q", data) == (0x80000008, 0xD0, 0x51, 0x1000, 0)


def test_a_function_without_parameters_or_results_needs_no_array():
    plan = plan_call(FuncType((), ()), 0x8000, 0x7000, GPR, xmm, lambda k: 0)
    assert (plan.rsp, plan.values) == (0x8000, ())


def test_a_call_with_no_room_above_the_resume_floor_is_refused_with_the_addresses():
    with pytest.raises(CallSetupError, match=r"0x8000.*0x7ff8"):
        plan_call(FuncType((I32, I32), ()), 0x8000, 0x7FF8, GPR, xmm, lambda k: 0)


def test_the_c_stack_pointer_moves_below_the_red_zone_and_stays_aligned():
    assert lowered_stack_pointer(0x10000) == 0x10000 - LINEAR_RED_ZONE
    assert lowered_stack_pointer(0x10008) == (0x10008 - LINEAR_RED_ZONE) & ~15
    assert lowered_stack_pointer(LINEAR_RED_ZONE) is None


# ------------------------------------------------- C aggregates (gdbstub.c_abi)
PAIR = Aggregate(8, (INTEGER,))  # struct { int a, b; }
TRIO = Aggregate(12, (INTEGER, INTEGER))
VEC2 = Aggregate(8, (SSE,))  # struct { float x, y; }
BIG = Aggregate(24)  # MEMORY


def test_a_small_struct_argument_is_read_from_its_eightbytes_registers_and_passed_as_a_linear_copy():
    # int f(struct trio t, struct vec2 v, int k): rdi:rsi hold t, xmm0 v, rdx k.
    gpr = list(GPR)
    gpr[5], gpr[4], gpr[3] = 0x0000000200000001, 0x3, 0x77  # t = {1, 2, 3}; k
    abi = FunctionAbi(None, (TRIO, VEC2, None))
    plan = plan_call(FuncType((I32, I32, I32), (I32,)), 0x8000, 0x7000, gpr, lambda k: 0x4000000040800000,
                     lambda k: pytest.fail("no stack"), abi=abi, linear_area=0x500)
    assert plan.values == (0x500, 0x510, 0x77, 0)
    assert plan.copies == ((0x500, struct.pack("<3i", 1, 2, 3)), (0x510, struct.pack("<2f", 4.0, 2.0)))
    assert linear_area_size(abi) == 32


def test_a_struct_of_more_than_16_bytes_is_read_from_the_stack_and_a_memory_result_uses_gdbs_rdi():
    # struct big f(struct big b, int k): gdb's buffer in rdi, k in rsi, b on the stack.
    gpr = list(GPR)
    gpr[5], gpr[4] = 0x7F00, 9
    words = struct.unpack("<3Q", struct.pack("<6i", 1, 2, 3, 4, 5, 6))
    abi = FunctionAbi(BIG, (BIG, None))
    plan = plan_call(FuncType((I32, I32, I32), ()), 0x8000, 0x7000, gpr, xmm, words.__getitem__, abi=abi,
                     linear_area=0x1000)
    assert (plan.result_address, plan.gdb_result_address) == (0x1000, 0x7F00)
    assert plan.values == (0x1000, 0x1020, 9, 0)
    assert plan.copies == ((0x1020, struct.pack("<6i", 1, 2, 3, 4, 5, 6)),)


def test_a_small_struct_result_takes_no_register_and_gets_a_place_in_linear_memory():
    plan = plan_call(FuncType((I32, I32), ()), 0x8000, 0x7000, GPR, xmm, lambda k: 0,
                     abi=FunctionAbi(PAIR, (None,)), linear_area=0x2000)
    assert plan.values == (0x2000, 0xD0) and plan.result_address == 0x2000 and plan.gdb_result_address == 0


def test_a_struct_whose_registers_ran_out_goes_on_the_stack_whole():
    # five ints take rdi..r8; the trio needs two more integer registers: only r9 is left.
    abi = FunctionAbi(None, (None,) * 5 + (TRIO,))
    words = struct.unpack("<2Q", struct.pack("<3iI", 7, 8, 9, 0))
    plan = plan_call(FuncType((I32,) * 6, ()), 0x8000, 0x7000, GPR, xmm, words.__getitem__, abi=abi,
                     linear_area=0x300)
    assert plan.values[:6] == (0xD0, 0x51, 0xD1, 0xC1, 0x80, 0x300)
    assert plan.copies == ((0x300, struct.pack("<3i", 7, 8, 9)),)


def test_a_record_that_does_not_match_the_wasm_type_is_refused():
    with pytest.raises(CallSetupError, match="do not match"):
        plan_call(FuncType((I32,), ()), 0x8000, 0x7000, GPR, xmm, lambda k: 0, abi=FunctionAbi(PAIR, (PAIR,)))
