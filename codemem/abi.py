"""The contract between compiled code (codemem/x64/compiler.py) and the runtime.

Both sides import their constants from here; nothing else may hard-code them.

Registers
---------
* ``r15``: the current context.  In a wasm function it is the instance's
  VMContext; in a host function it is that function's HostContext.  Quadword 0
  of either is the Store's ``cm_stack_ctx*`` (csrc/codemem_rt.h).  Every wasm
  function preserves r15; a caller that switches context (imported function,
  call_indirect to another instance, libcall) saves it in its frame and
  restores it after the call.
* ``rsi`` on function entry: pointer to the argument array, 8 bytes per value.
  The callee writes its results into the same array (result k at rsi+8k), so
  the array has max(params, results) entries.  For a wasm->wasm call the array
  is the caller's operand-stack slots holding the arguments, so results land
  exactly where the operand stack wants them.
* Results (System V's registers too, for debuggers: gdb's ``finish`` reads a
  function's value from rax or xmm0 at the return address, and its ``return
  VALUE`` and inferior calls write/read them there, amd64-tdep.c
  ``amd64_return_value``): every callee also leaves result 0 in ``rax`` (i32,
  i64, references) or ``xmm0`` (f32, f64; the host-call trampoline sets
  both), and a wasm caller takes result 0 from that register into its operand
  slot after the RETURN_POINT site.  A callee with no result leaves its first
  argument (8 bytes) in ``rax``: clang's wasm32 C ABI passes the address of a
  struct returned in memory as the first parameter, and System V returns it in
  rax.  The array stays the contract for ``cm_enter``'s callers.
* ``rbp``: frame pointer, frames are rbp-chained; the chain ends at 0 (the
  entry trampoline clears rbp).  No red zone.  Every other register, GPR or
  XMM, is clobbered by a call.

Values in 8-byte slots
----------------------
i32 and f32: the low 32 bits (upper 32 bits unspecified: readers mask).  i64
and f64: all 64 bits (floats as their raw IEEE-754 bits; NaN payloads kept).
funcref: address of a FuncRef (below) or 0 for null.  externref: a nonzero
host handle, or 0 for null.

Frames (what the frame table describes)
---------------------------------------
::

    rbp+8                return address
    rbp                  caller's rbp
    rbp-8                saved rsi (the args/results array)          FRAME_ARGS_PTR
    rbp-16               saved r15 across context-switching calls    FRAME_SAVED_CTX
    rbp-24 .. rbp-72     libcall area (LIBCALL_AREA_SLOTS slots)     FRAME_LIBCALL_AREA
    ...                  wasm locals (params first), one slot each
    rbp-frame_size ...   operand stack: slot i at rbp-frame_size+8*i (grows up)

``frame_size`` is a multiple of 16.  At every sequence point every wasm value
(locals and the whole operand stack) is in its slot.

Function layout (debug)::

    f:   55                  push rbp             (f = 28 mod 32)
    f+1: 48 89 e5            mov rbp, rsp
    f+4: 0f 1f 44 00 00      ENTRY site, on 32 bytes: the frame exists here
                             (return address at [rbp+8]); debug off: the ENTRY
                             point, no site
         stack check BEFORE allocating: rsp-(frame_size+STACK_CHECK_EXTRA) vs
           [cm_stack_ctx.stack_limit] -> TRAP_STACK_EXHAUSTED (a huge frame must
           not move rsp past the guard margin before the trap trampoline pushes)
         sub rsp, frame_size
         save rsi; copy params to their local slots; zero the other locals
         ... per instruction: site, code ...
         after every call: a RETURN_POINT site at the return address

Traps
-----
Generated code reaches the trap trampoline as::

    lea rsi, [rip + <sequence point of the trapping instruction>]
    mov edi, TRAP_CODE
    call trap_veneer

so the runtime finds the trapping wasm instruction from the saved rsi (an
address in StoreCode) whatever layout the check code has (out-of-line stubs
included).  The stack check's stub (TRAP_STACK_EXHAUSTED, at the ENTRY point,
before the prologue has copied the parameters) starts with ``mov rax, rsi``:
there rsi is still the caller's argument array, which a debugger reads the
arguments from (rax holds nothing at that point), so the host puts it back
into the reported rsi.  The trap trampoline reports a CM_EVENT_TRAP (the debugger may
inspect), then unwinds to the entry trampoline, which returns the code.

Libcalls
--------
Operations done by the runtime in Python: the generated code writes the
libcall number and operands into the frame's libcall area (slot 0 = number,
slots 1.. = operands, each a plain 8-byte value), then::

    mov [rbp-16], r15
    lea rsi, [rbp + FRAME_LIBCALL_AREA]       ; the area's slot 0
    mov rax, [r15 + VMCTX_HOST_TRAMPOLINE]
    mov r15, [r15 + VMCTX_LIBCALL_CTX]
    call rax
    mov r15, [rbp-16]

The runtime writes the result (if any) to slot 0 and a trap code (0 = none) to
slot LIBCALL_TRAP_SLOT; the generated code checks it and traps through the
normal trap path, so libcall traps are reported like any other.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

# --------------------------------------------------------------------------
# Trap codes (passed in edi to the trap veneer; returned by cm_enter)
# --------------------------------------------------------------------------


class TrapCode(enum.IntEnum):
    UNREACHABLE = 1
    INTEGER_DIVIDE_BY_ZERO = 2
    INTEGER_OVERFLOW = 3
    INVALID_CONVERSION = 4
    OUT_OF_BOUNDS_MEMORY = 5
    UNDEFINED_ELEMENT = 6  # call_indirect index >= table size
    UNINITIALIZED_ELEMENT = 7  # call_indirect on a null entry
    INDIRECT_CALL_TYPE_MISMATCH = 8
    STACK_EXHAUSTED = 9
    OUT_OF_BOUNDS_TABLE = 10  # table.get/set/fill/copy/init
    NULL_REFERENCE = 11
    KILLED = 0xFFFE  # a debugger killed the guest (csrc CM_TRAP_KILLED)
    HOST_ERROR = 0xFFFF  # a host function raised (codemem.native.TRAP_CODE_HOST_ERROR)


#: The spec interpreter's wording for each trap (what assert_trap expects).
TRAP_MESSAGES = {
    TrapCode.UNREACHABLE: "unreachable",
    TrapCode.INTEGER_DIVIDE_BY_ZERO: "integer divide by zero",
    TrapCode.INTEGER_OVERFLOW: "integer overflow",
    TrapCode.INVALID_CONVERSION: "invalid conversion to integer",
    TrapCode.OUT_OF_BOUNDS_MEMORY: "out of bounds memory access",
    TrapCode.UNDEFINED_ELEMENT: "undefined element",
    TrapCode.UNINITIALIZED_ELEMENT: "uninitialized element",
    TrapCode.INDIRECT_CALL_TYPE_MISMATCH: "indirect call type mismatch",
    TrapCode.STACK_EXHAUSTED: "call stack exhausted",
    TrapCode.OUT_OF_BOUNDS_TABLE: "out of bounds table access",
    TrapCode.NULL_REFERENCE: "null reference",
    TrapCode.KILLED: "killed by the debugger",
    TrapCode.HOST_ERROR: "host function error",
}

#: POSIX signal a debugger sees for each trap (GDB stop reply T<sig>).
TRAP_SIGNALS = {
    TrapCode.UNREACHABLE: 4,  # SIGILL
    TrapCode.INTEGER_DIVIDE_BY_ZERO: 8,  # SIGFPE
    TrapCode.INTEGER_OVERFLOW: 8,
    TrapCode.INVALID_CONVERSION: 8,
    TrapCode.OUT_OF_BOUNDS_MEMORY: 11,  # SIGSEGV
    TrapCode.UNDEFINED_ELEMENT: 11,
    TrapCode.UNINITIALIZED_ELEMENT: 11,
    TrapCode.INDIRECT_CALL_TYPE_MISMATCH: 11,
    TrapCode.STACK_EXHAUSTED: 11,
    TrapCode.OUT_OF_BOUNDS_TABLE: 11,
    TrapCode.NULL_REFERENCE: 11,
    TrapCode.KILLED: 9,  # SIGKILL
    TrapCode.HOST_ERROR: 6,  # SIGABRT
}

# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------

#: Every function's first bytes, before its ENTRY point ("Function layout"):
#: ``push rbp; mov rbp, rsp``.  At the function's first byte the return
#: address is at [rsp] (CFA = rsp+8), after the push at [rsp+8] (CFA =
#: rsp+16), and from the ENTRY point on at [rbp+8] (CFA = rbp+16).
FRAME_SETUP = b"\x55\x48\x89\xe5"
#: Offset of the ``mov rbp, rsp`` in FRAME_SETUP (the push is at 0).
FRAME_SETUP_MOV = 1

FRAME_ARGS_PTR = -8
FRAME_SAVED_CTX = -16
LIBCALL_AREA_SLOTS = 7
FRAME_LIBCALL_AREA = -16 - 8 * LIBCALL_AREA_SLOTS  # rbp-72: slot 0 (slot k at +8k)
FRAME_FIXED_SIZE = 16 + 8 * LIBCALL_AREA_SLOTS  # bytes below rbp before the locals
LIBCALL_TRAP_SLOT = 6

#: Bytes a prologue's stack check adds to frame_size, for the callee's
#: argument copy and the trampolines (cm_stack_ctx.stack_limit already keeps a
#: margin below; this is the compiler's own headroom).
STACK_CHECK_EXTRA = 256

# --------------------------------------------------------------------------
# Libcalls: slot 0 = number, slots 1.. = operands in wasm operand order
# --------------------------------------------------------------------------


class Libcall(enum.IntEnum):
    MEMORY_GROW = 1  # (delta_pages) -> old pages or -1 (as i32)          memory 0
    MEMORY_INIT = 2  # (data_index, dst, src, len)                         traps OOB memory
    DATA_DROP = 3  # (data_index)
    MEMORY_COPY = 4  # (dst, src, len)                                     traps OOB memory
    MEMORY_FILL = 5  # (dst, value, len)                                   traps OOB memory
    TABLE_GROW = 6  # (table_index, init_ref, delta) -> old size or -1
    TABLE_FILL = 7  # (table_index, i, ref, n)                             traps OOB table
    TABLE_COPY = 8  # (dst_table, src_table, d, s, n)                      traps OOB table
    TABLE_INIT = 9  # (table_index, elem_index, d, s, n)                   traps OOB table
    ELEM_DROP = 10  # (elem_index)
    TABLE_GET = 11  # (table_index, i) -> ref                              traps OOB table
    TABLE_SET = 12  # (table_index, i, ref)                                traps OOB table
    TABLE_SIZE = 13  # (table_index) -> size


# --------------------------------------------------------------------------
# Runtime structures
# --------------------------------------------------------------------------

#: FuncRef (24 bytes): what funcref values point at and tables hold.
FUNCREF_CODE = 0  # address to call (a StoreCode pc, or cm_host_call_trampoline)
FUNCREF_CTX = 8  # r15 for the callee (its instance's VMContext, or a HostContext)
FUNCREF_TYPE_ID = 16  # canonical signature id (compare with VMContext type ids)
FUNCREF_SIZE = 24

#: MemoryDefinition (24 bytes).  The base never moves: the whole maximum is
#: reserved when the memory is created, so VMCTX_MEMORY_BASE can be cached.
MEMDEF_BASE = 0
MEMDEF_LENGTH = 8  # current size in bytes
MEMDEF_MAX_PAGES = 16
MEMDEF_SIZE = 24

#: TableDefinition (24 bytes): elements is an array of 8-byte references.
TABLEDEF_ELEMENTS = 0
TABLEDEF_SIZE = 8  # current number of elements
TABLEDEF_MAX = 16
TABLEDEF_STRUCT_SIZE = 24

#: HostContext (what r15 holds in a host function): [sc, host id].
HOSTCTX_STACK_CTX = 0
HOSTCTX_ID = 8
HOSTCTX_SIZE = 16

#: ImportedFunction entries inside the VMContext (16 bytes): code, ctx.
IMPORTED_FUNC_CODE = 0
IMPORTED_FUNC_CTX = 8
IMPORTED_FUNC_SIZE = 16

# Fixed VMContext header.
VMCTX_STACK_CTX = 0
VMCTX_MEMORY_BASE = 8  # base of memory 0, or 0 when the module has none
VMCTX_MEMORY_DEF = 16  # MemoryDefinition* of memory 0, or 0
VMCTX_LIBCALL_CTX = 24  # HostContext* for this instance's libcalls
VMCTX_HOST_TRAMPOLINE = 32  # address of cm_host_call_trampoline
VMCTX_HEADER_SIZE = 40


@dataclass(frozen=True)
class VMContextLayout:
    """Offsets of a module's VMContext arrays, computed from its counts.

    ::

        header (VMCTX_HEADER_SIZE)
        imported functions   num_imported_funcs x {code, ctx}
        funcrefs             num_funcs x FuncRef*   (every function index)
        globals              num_globals x cell*    (8-byte value cells)
        tables               num_tables x TableDefinition*
        type ids             num_types x canonical signature id
    """

    num_imported_funcs: int
    num_funcs: int
    num_globals: int
    num_tables: int
    num_types: int

    @property
    def imported_funcs(self) -> int:
        return VMCTX_HEADER_SIZE

    @property
    def funcrefs(self) -> int:
        return self.imported_funcs + IMPORTED_FUNC_SIZE * self.num_imported_funcs

    @property
    def globals(self) -> int:
        return self.funcrefs + 8 * self.num_funcs

    @property
    def tables(self) -> int:
        return self.globals + 8 * self.num_globals

    @property
    def type_ids(self) -> int:
        return self.tables + 8 * self.num_tables

    @property
    def size(self) -> int:
        return self.type_ids + 8 * self.num_types

    def imported_func(self, index: int) -> int:
        assert 0 <= index < self.num_imported_funcs
        return self.imported_funcs + IMPORTED_FUNC_SIZE * index

    def funcref(self, func_index: int) -> int:
        assert 0 <= func_index < self.num_funcs
        return self.funcrefs + 8 * func_index

    def global_cell(self, global_index: int) -> int:
        assert 0 <= global_index < self.num_globals
        return self.globals + 8 * global_index

    def table(self, table_index: int) -> int:
        assert 0 <= table_index < self.num_tables
        return self.tables + 8 * table_index

    def type_id(self, type_index: int) -> int:
        assert 0 <= type_index < self.num_types
        return self.type_ids + 8 * type_index

    @classmethod
    def for_module(cls, info) -> "VMContextLayout":
        """Layout for a decoded ``codemem.wasm.module.ModuleInfo``."""
        return cls(
            num_imported_funcs=info.num_imported_funcs,
            num_funcs=info.num_imported_funcs + len(info.func_type_indices),
            num_globals=info.num_imported_globals + len(info.globals),
            num_tables=info.num_imported_tables + len(info.tables),
            num_types=len(info.types),
        )
