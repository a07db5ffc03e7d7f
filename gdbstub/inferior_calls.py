"""A debugger's inferior calls (gdb's ``call f(3)`` / ``print f(3)``) into
guest functions, and the register states a stopped guest may resume from.

gdb makes an inferior call itself (GDB manual, "Calling Program Functions";
amd64-tdep.c ``amd64_push_dummy_call``, infcall.c), with nothing but register
and memory writes:

1. it writes the arguments the System V way (integer class: rdi, rsi, rdx,
   rcx, r8, r9, then the stack; float/double: xmm0-7, then the stack),
2. it picks a return address where it inserts a breakpoint (its *dummy
   breakpoint*): on amd64 and x32 an address on the stack itself
   (i386-tdep.c sets ``call_dummy_location`` ON_STACK, ``i386_push_dummy_code``
   takes the current sp - 1, and gdb writes an int3 there); below that it
   writes the stack arguments and the return address,
3. it sets rsp to that return address, rbp to the same value (its fake frame
   pointer, which identifies the dummy frame: ``amd64_dummy_id``), rip to the
   function's address (``DW_AT_low_pc``: the function's ENTRY site), and
   resumes,
4. at the dummy breakpoint's stop it reads the result from rax or xmm0 and
   writes back every register it saved before step 1.

A guest function is not called that way (codemem/abi.py: its arguments come
in an array at rsi, and r15 must be its instance context), and a return onto
the stack would fault (the stack is not executable), so when the guest
resumes in such a state :func:`plan_call` turns gdb's System V call into the
guest's convention: it reads the arguments from where System V put them,
writes them into an argument array just below the return address, moves the
return address down and replaces it by the *call landing* (csrc
``cm_call_landing``, or the low thunk page's copy, codemem/lowmem.py: a
permanent breakpoint, also the executable image's ``e_entry``), and sets rsi
to the array and r15 to the instance context.  The callee returns result 0 in
rax/xmm0 (abi.py "Results"), where gdb reads it; the landing's stop is
reported at gdb's dummy address, and reads of the return-address slot show
gdb's address, so gdb's unwinder finds its dummy frame
(``<function called from gdb>``).  Why here and not in a per-function veneer:
docs/calls.md.

The layout the stub makes (addresses grow upwards)::

    gdb's rsp + 8 ...   gdb's stack arguments (read, left in place)
    gdb's rsp           (was gdb's return address; now array entry n-1 or free)
    ...                 argument array, n entries (n rounded up to even,
    new rsp + 8         entry 0                     so rsp keeps gdb's alignment)
    new rsp             the landing (reads show gdb's return address)

Everything stays inside the stop's *resume gap* (csrc/codemem_rt.h,
``CM_RESUME_GAP_BYTES``), the stack the trampolines leave alone below a
stopped guest's rsp.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from codemem.wasm.types import ValType

from .c_abi import INTEGER, Aggregate, FunctionAbi

#: The System V integer argument registers, in order, as indexes into the
#: regfile's ``gpr`` array (gdbstub.arch_amd64.GPR_NAMES order).
INTEGER_ARGUMENT_GPRS = (5, 4, 3, 2, 8, 9)  # rdi, rsi, rdx, rcx, r8, r9
#: xmm0-7 carry float and double arguments.
SSE_ARGUMENT_REGISTERS = 8
_FLOAT_TYPES = (ValType.F32, ValType.F64)


class CallSetupError(Exception):
    """The registers describe an inferior call the stub cannot carry out."""


@dataclass(frozen=True)
class RegisterState:
    """The registers that say where a guest is: a resume must lead to one of
    the shapes the runtime can continue from (see gdbstub.target)."""

    rip: int
    rsp: int
    rbp: int
    r15: int


@dataclass(frozen=True)
class InferiorCall:
    """An inferior call in progress: the state gdb will restore when it is
    done (the stop's state before gdb's writes) and, when that stop was at a
    non-site instruction (codemem.displaced), its pc."""

    saved: RegisterState
    displaced_pc: int | None
    function: str
    #: The return address gdb pushed (its dummy breakpoint: on the stack,
    #: amd64 gdb's ``call_dummy_location`` ON_STACK) and the stack slot that
    #: holds it, where the stub put the landing instead.  Reads of the slot
    #: show gdb's address, and the landing's stop is reported there.
    return_address: int = 0
    slot: int = 0
    #: The C stack pointer's cell (the ``__stack_pointer`` global) and its
    #: value before the call, restored when the call is done (0: none).
    stack_pointer_cell: int = 0
    stack_pointer: int = 0
    #: The whole regfile to resume from should the debugger leave before
    #: the call returns (its argument registers as gdb set them).
    saved_regfile: bytes = b""
    #: A C aggregate the function returns through memory (gdbstub.c_abi):
    #: where in linear memory the callee writes it, and, when System V
    #: returns it in memory too, gdb's buffer (its hidden rdi) to copy it to.
    result: Aggregate | None = None
    result_address: int = 0
    gdb_result_address: int = 0


@dataclass(frozen=True)
class CallPlan:
    """What the stub writes to start a call (see the module docstring)."""

    rsp: int  # the new rsp: the landing is written there
    array: int  # the argument array's address (rsi)
    values: tuple[int, ...]  # the array's entries, as 8-byte slot values
    #: (linear-memory address, bytes): the copies of aggregate arguments
    #: wasm32 passes by pointer (gdbstub.c_abi), written before the call.
    copies: tuple[tuple[int, bytes], ...] = ()
    #: Where the callee writes an aggregate it returns through memory
    #: (linear memory, 0: none) and gdb's buffer for it (System V MEMORY
    #: class: gdb's hidden first argument; 0 otherwise).
    result_address: int = 0
    gdb_result_address: int = 0


#: Bytes of linear memory below the C stack pointer a called function must
#: leave alone: clang's wasm32 leaf functions keep a frame of up to 128 bytes
#: there without moving ``__stack_pointer`` (WebAssemblyFrameLowering's red
#: zone), as native leaf functions do below rsp (the System V red zone,
#: which gdb skips for its dummy frames too).
LINEAR_RED_ZONE = 128


def lowered_stack_pointer(value: int) -> int | None:
    """The C stack pointer for an inferior call made while it is ``value``
    (16-byte aligned, below the red zone); None when there is no room."""
    lowered = (value - LINEAR_RED_ZONE) & ~15
    return lowered if lowered > 0 else None


class _SysvArguments:
    """Where gdb put each next argument by the System V convention: the
    registers and stack words of one call, taken in order."""

    def __init__(self, gpr, xmm_low64, stack_word, first_gpr: int = 0):
        self.gpr, self.xmm_low64, self.stack_word = gpr, xmm_low64, stack_word
        self.next_gpr, self.next_sse, self.next_stack = first_gpr, 0, 0

    def scalar(self, valtype) -> int:
        """An integer-class value (i32, i64, references) from the next of
        rdi, rsi, rdx, rcx, r8, r9, an f32/f64 from the next of xmm0-7 (its
        low 64 bits), else the next stack word."""
        if valtype in _FLOAT_TYPES and self.next_sse < SSE_ARGUMENT_REGISTERS:
            self.next_sse += 1
            return self.xmm_low64(self.next_sse - 1)
        if valtype not in _FLOAT_TYPES and self.next_gpr < len(INTEGER_ARGUMENT_GPRS):
            self.next_gpr += 1
            return self.gpr[INTEGER_ARGUMENT_GPRS[self.next_gpr - 1]]
        self.next_stack += 1
        return self.stack_word(self.next_stack - 1)

    def aggregate(self, aggregate: Aggregate) -> bytes:
        """A struct's bytes: eightbyte by eightbyte from the next register of
        its class when all of them fit in the registers left, else (and for
        class MEMORY) whole from the next stack words (psABI 3.2.3)."""
        integers = sum(1 for c in aggregate.classes if c == INTEGER)
        sses = len(aggregate.classes) - integers
        words = []
        if aggregate.classes and self.next_gpr + integers <= len(INTEGER_ARGUMENT_GPRS) \
                and self.next_sse + sses <= SSE_ARGUMENT_REGISTERS:
            for cls in aggregate.classes:
                words.append(self.scalar(ValType.I64 if cls == INTEGER else ValType.F64))
        else:
            for _ in range((aggregate.size + 7) // 8):
                self.next_stack += 1
                words.append(self.stack_word(self.next_stack - 1))
        return struct.pack(f"<{len(words)}Q", *[w & (2 ** 64 - 1) for w in words])[:aggregate.size]


def sysv_argument_values(params, gpr, xmm_low64, stack_word) -> list[int]:
    """The wasm arguments of a function with parameter types ``params`` as
    gdb passed them by the System V convention: each integer-class parameter
    (i32, i64, references) from the next of rdi, rsi, rdx, rcx, r8, r9, each
    f32/f64 from the next of xmm0-7 (its low 64 bits), the others from the
    stack in order (``stack_word(k)``: the k-th 8-byte word above the return
    address).  Values are 8-byte slot values (abi.py "Values in 8-byte
    slots": an i32 or f32 reader takes the low 32 bits)."""
    arguments = _SysvArguments(gpr, xmm_low64, stack_word)
    return [arguments.scalar(valtype) for valtype in params]


def sysv_result_value(valtype, gpr, xmm_low64) -> int:
    """Result 0 of a function as System V returns it, where gdb's ``return
    VALUE`` writes it (amd64-tdep.c ``amd64_return_value``): an
    integer-class value (i32, i64, references) in rax, an f32/f64 in xmm0
    (its low 64 bits); as an 8-byte slot value (abi.py)."""
    return xmm_low64(0) if valtype in _FLOAT_TYPES else gpr[0]


def linear_area_size(abi: FunctionAbi | None) -> int:
    """Bytes of linear memory a call of a function with ``abi`` needs below
    the C stack pointer: a 16-byte aligned place per aggregate argument
    copy and for an aggregate result."""
    if abi is None:
        return 0
    aggregates = [a for a in abi.params if a is not None] + ([abi.result] if abi.result is not None else [])
    return sum((a.size + 15) & ~15 for a in aggregates)


def plan_call(func_type, rsp: int, lowest_rsp: int, gpr, xmm_low64, stack_word, *,
              abi: FunctionAbi | None = None, linear_area: int = 0) -> CallPlan:
    """The argument array for a call of a function of type ``func_type``
    whose return address gdb wrote at ``rsp``; the new rsp must stay at or
    above ``lowest_rsp`` (the stop's resume gap).

    With ``abi`` (gdbstub.c_abi: the function passes or returns a C
    aggregate), gdb's System V placement of each aggregate is read and
    turned into wasm32's: a copy in linear memory at ``linear_area``
    onwards (:func:`linear_area_size` bytes, below the C stack pointer)
    passed by its address, and the address of the result's place as the
    hidden first argument."""
    entries = max(len(func_type.params), len(func_type.results))
    entries += entries & 1
    new_rsp = rsp - 8 * entries
    if new_rsp < lowest_rsp:
        raise CallSetupError(f"the call's stack at {rsp:#x} leaves no room for its {entries} arguments above "
                             f"{lowest_rsp:#x}, the lowest address the stopped guest can resume from")
    if abi is None:
        values = sysv_argument_values(func_type.params, gpr, xmm_low64, stack_word)
        values += [0] * (entries - len(values))
        return CallPlan(new_rsp, new_rsp + 8, tuple(values))
    if abi.wasm_param_count != len(func_type.params):
        raise CallSetupError(f"the function's C parameters ({abi.wasm_param_count} wasm values) do not match its "
                             f"wasm type ({len(func_type.params)} parameters)")
    return _plan_aggregate_call(func_type, abi, new_rsp, entries, gpr, xmm_low64, stack_word, linear_area)


def _plan_aggregate_call(func_type, abi: FunctionAbi, new_rsp: int, entries: int, gpr, xmm_low64, stack_word,
                         linear_area: int) -> CallPlan:
    """plan_call for a function with aggregates (System V AMD64 psABI 3.2.3,
    as gdb's amd64_push_dummy_call places them)."""
    values: list[int] = []
    copies: list[tuple[int, bytes]] = []
    area = linear_area
    result_address = gdb_result_address = 0
    first_gpr = 0
    if abi.result is not None:
        result_address, area = area, area + ((abi.result.size + 15) & ~15)
        if abi.result.in_memory:  # gdb passes its own buffer as the hidden first argument (rdi)
            gdb_result_address = gpr[INTEGER_ARGUMENT_GPRS[0]]
            first_gpr = 1
        values.append(result_address)
    arguments = _SysvArguments(gpr, xmm_low64, stack_word, first_gpr)
    for param, valtype in zip(abi.params, func_type.params[len(values):]):
        if param is None:  # a scalar: where System V puts one of its wasm type
            values.append(arguments.scalar(valtype))
            continue
        copies.append((area, arguments.aggregate(param)))
        values.append(area)
        area += (param.size + 15) & ~15
    values += [0] * (entries - len(values))
    return CallPlan(new_rsp, new_rsp + 8, tuple(values), tuple(copies), result_address, gdb_result_address)


def pack_plan(plan: CallPlan, landing: int) -> bytes:
    """The bytes written at ``plan.rsp``: the landing, then the array."""
    return struct.pack(f"<{1 + len(plan.values)}Q", landing, *[v & (2 ** 64 - 1) for v in plan.values])
