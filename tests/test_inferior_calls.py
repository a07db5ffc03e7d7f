"""Unit tests of the System V -> guest convention of inferior calls
(gdbstub/inferior_calls.py), on literal register values."""
from __future__ import annotations

import struct

import pytest

from codemem.wasm.types import FuncType, ValType
from gdbstub.inferior_calls import (
    LINEAR_RED_ZONE, CallSetupError, lowered_stack_pointer, pack_plan, plan_call, sysv_argument_values,
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
