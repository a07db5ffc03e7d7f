"""Guest DWARF expressions rewritten for the native frame.

clang's wasm32 DWARF describes values with ``DW_OP_WASM_location KIND INDEX``
(0xed; LLVM's WebAssembly target, "WebAssembly-specific DWARF"): KIND 0 is
wasm local INDEX, 1 global INDEX (ULEB128), 2 the operand-stack entry INDEX
counted from the bottom of the function's operand stack, 3 global INDEX as a
fixed u32. The operation pushes the *value* of that wasm location (LLVM emits it
as an implicit location followed by ``DW_OP_stack_value``, or alone when the
value is the address of the variable in linear memory, and as the frame base).

In this stub's native code every such value has a home (codemem/abi.py
"Frames"; the frame table says where): locals and operand-stack entries are
8-byte frame slots at ``rbp + offset``, and global N is the 8-byte cell whose
address is the N-th pointer of the globals array of the instance context,
which r15 holds in every guest frame (an unwinder keeps it: the guest FDEs give
r15 the same-value rule). So:

=============================================  =========================================
guest expression                               native expression
=============================================  =========================================
``WASM_location local N; stack_value``         ``slot(N)`` (``call_frame_cfa; consts
                                               N-16; plus``, i.e. rbp + N): the slot *is*
                                               the variable
                                               (a memory location: any size, and ``set var``
                                               writes the slot, which stays the truth the
                                               register mirrors reload from, abi.py)
``WASM_location global N; stack_value``        ``breg15 cell_ptr(N); deref``: the cell
``WASM_location K N`` inside a larger           ``slot(N); deref_size 4`` (or the cell
expression (or alone: the local holds an        read), the value as the rest expects it
address, and as a frame base)
``fbreg X``                                    unchanged: the frame base is translated too,
                                               to a memory location whose address is the
                                               value (gdb's frame base must be a memory or
                                               register location, dwarf2/expr.c)
``addr X`` (linear memory)                     ``constu X``: X is an offset in linear
                                               memory, which the stub mirrors at [0, size),
                                               and must not be moved by the image's load
                                               bias as gdb moves ``DW_OP_addr``
``form_tls_address`` (thread-local data)        dropped: with no threads, the address pushed
                                               is the data's linear-memory address
register operations (``regN``, ``bregN``...)   untranslatable: wasm has no registers
=============================================  =========================================

Values are i32 except where the local's or global's wasm type says i64/f64;
an 8-byte value pushed inside a larger expression is read as 4 bytes when the
image's address size is 4 (the x32 DWARF stack is 4 bytes wide), which only
matters for 64-bit values combined arithmetically, which clang does not emit.

Branches (``bra``/``skip``) are re-targeted after ops change length.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

from elftools.common.exceptions import DWARFError, ELFParseError
from elftools.construct.core import ConstructError
from elftools.dwarf.dwarf_expr import DWARFExprParser

from ..debugimage.dwarf import sleb128, uleb128

__all__ = ["ExprContext", "UntranslatableExpression", "WasmLocationKind", "local_location", "translate_expression"]

DW_OP_addr = 0x03
DW_OP_deref = 0x06
DW_OP_constu = 0x10
DW_OP_skip = 0x2F
DW_OP_bra = 0x28
DW_OP_reg0, DW_OP_reg31 = 0x50, 0x6F
DW_OP_breg0, DW_OP_breg31 = 0x70, 0x8F
DW_OP_regx = 0x90
DW_OP_fbreg = 0x91
DW_OP_bregx = 0x92
DW_OP_piece = 0x93
DW_OP_deref_size = 0x94
DW_OP_call_frame_cfa = 0x9C
DW_OP_stack_value = 0x9F
DW_OP_consts = 0x11
DW_OP_plus = 0x22
#: CFA - rbp in a guest function's body (gdbstub/images.py _FRAME_SET: the
#: saved rbp and the return address).
CFA_ABOVE_RBP = 16
DW_OP_WASM_location = 0xED
DW_OP_form_tls_address = 0x9B
DW_OP_GNU_push_tls_address = 0xE0
DW_OP_addrx = 0xA1
DW_OP_constx = 0xA2
DW_OP_GNU_addr_index = 0xFB
DW_OP_GNU_const_index = 0xFC

#: Operations that name a machine register or a frame the guest has no notion
#: of; clang never emits them for wasm32, so seeing one means the input is not
#: what this translator understands.
_REGISTER_OPS = set(range(DW_OP_reg0, DW_OP_reg31 + 1)) | set(range(DW_OP_breg0, DW_OP_breg31 + 1)) | {
    DW_OP_regx, DW_OP_bregx, DW_OP_call_frame_cfa,
    0xA3, 0xA4, 0xF3, 0xF5}  # entry_value, regval_type and their GNU forms

#: wasm-ld's address for removed code or data.
TOMBSTONE = 0xFFFFFFFF

RSI = 4  # x86-64 psABI DWARF register numbers
RBP = 6
R15 = 15

# wasm value types (binary encoding)
_VALTYPE_SIZE = {0x7F: 4, 0x7E: 8, 0x7D: 4, 0x7C: 8}


class WasmLocationKind:
    LOCAL = 0
    GLOBAL = 1
    OPERAND_STACK = 2
    GLOBAL_FIXED = 3


class UntranslatableExpression(ValueError):
    """The expression cannot be expressed over the native frame (the message
    says why); the variable is then described without a location."""


class ExprContext(NamedTuple):
    """Where the wasm values of one function live (immutable: a NamedTuple,
    which a translation makes two of per function at less than half a frozen
    dataclass's cost).

    ``local_slot(n)`` -> (rbp offset, wasm valtype) of local n, or None;
    ``operand_slot(n)`` -> rbp offset of operand-stack entry n (bottom = 0);
    ``global_cell(n)`` -> (offset of the cell pointer in the instance context,
    wasm valtype), or None. ``address_size``: 4 (x32 image) or 8.
    A context without a function (compile-unit level) has ``local_slot`` and
    ``operand_slot`` None."""

    address_size: int
    global_cell: Callable[[int], tuple[int, int] | None]
    local_slot: Callable[[int], tuple[int, int] | None] | None = None
    operand_slot: Callable[[int], int] | None = None
    #: The codemem FunctionInfo these slots belong to (None at unit level).
    function: object = None
    #: DWARF 5 ``DW_OP_addrx``/``DW_OP_constx`` operand -> the value in the
    #: unit's ``.debug_addr`` table (None: such operations are refused).
    indexed_address: Callable[[int], int] | None = None
    #: The register ``local_slot`` offsets are relative to: rbp in a
    #: function's body; rsi before its prologue, where the arguments are
    #: still in the caller's argument array (codemem/abi.py "Registers").
    locals_register: int = RBP


def _parse(expr: bytes, parser: DWARFExprParser):
    try:
        return parser.parse_expr(list(expr))
    except (DWARFError, ELFParseError, ConstructError, KeyError, IndexError, ValueError, TypeError) as e:
        raise UntranslatableExpression(f"malformed expression {expr.hex()}: {e}") from e


def _home(kind: int, index: int, context: ExprContext) -> tuple[int, int, int]:
    """(base register, offset, value size) of a wasm location's 8-byte home;
    for a global the base/offset locate the *pointer* to its cell."""
    if kind == WasmLocationKind.LOCAL:
        slot = context.local_slot(index) if context.local_slot else None
        if slot is None:
            raise UntranslatableExpression(f"wasm local {index} does not exist here")
        offset, valtype = slot
        return context.locals_register, offset, _VALTYPE_SIZE.get(valtype, 8)
    if kind == WasmLocationKind.OPERAND_STACK:
        if context.operand_slot is None:
            raise UntranslatableExpression("an operand-stack location outside a function")
        return RBP, context.operand_slot(index), 4
    if kind in (WasmLocationKind.GLOBAL, WasmLocationKind.GLOBAL_FIXED):
        cell = context.global_cell(index)
        if cell is None:
            raise UntranslatableExpression(f"wasm global {index} does not exist")
        offset, valtype = cell
        return R15, offset, _VALTYPE_SIZE.get(valtype, 8)
    raise UntranslatableExpression(f"unknown DW_OP_WASM_location kind {kind}")


@functools.lru_cache(maxsize=4096)
def _breg(register: int, offset: int) -> bytes:
    # Memoized: a module's functions use a few dozen distinct slot offsets,
    # and every parameter's location at entry asks for two of them.
    if register == RBP:
        # rbp + offset, written CFA-relative (the body's CFI rule is CFA =
        # rbp + 16): right at every pc of the frame, and before the prologue
        # has set rbp (a stop at the ENTRY site) it reads the not yet
        # allocated slots below rsp instead of failing on whatever rbp holds.
        return bytes([DW_OP_call_frame_cfa, DW_OP_consts]) + sleb128(offset - CFA_ABOVE_RBP) + bytes([DW_OP_plus])
    return bytes([DW_OP_breg0 + register]) + sleb128(offset)


def _location_of(kind: int, index: int, context: ExprContext) -> bytes:
    """A memory location description of the wasm value's home."""
    register, offset, _ = _home(kind, index, context)
    if register == R15:
        return _breg(R15, offset) + bytes([DW_OP_deref])
    return _breg(register, offset)


def local_location(index: int, context: ExprContext) -> bytes:
    """What ``WASM_location local INDEX; stack_value`` translates to: the
    memory location of the local's home (UntranslatableExpression if none)."""
    return _location_of(WasmLocationKind.LOCAL, index, context)


def _push_value(kind: int, index: int, context: ExprContext) -> bytes:
    """Operations that push the wasm value (at most address-size bytes of it)."""
    size = min(_home(kind, index, context)[2], context.address_size)
    return _location_of(kind, index, context) + bytes([DW_OP_deref_size, size])


def _is_whole_value(ops, *, frame_base: bool) -> bool:
    """[WASM_location, stack_value] (or a lone WASM_location as a frame base)."""
    if not ops or ops[0].op != DW_OP_WASM_location:
        return False
    if len(ops) == 2 and ops[1].op == DW_OP_stack_value:
        return True
    return frame_base and len(ops) == 1


def translate_expression(expr: bytes, context: ExprContext, parser: DWARFExprParser, *,
                         frame_base: bool = False) -> bytes:
    """The native expression for guest expression ``expr`` (see the module
    docstring). ``frame_base``: ``expr`` is a DW_AT_frame_base, whose value
    (an address in linear memory) must come out as a memory location at that
    address. Raises UntranslatableExpression."""
    expr = bytes(expr)
    ops = _parse(expr, parser)
    if not ops:
        return b""
    if frame_base:
        if _is_whole_value(ops, frame_base=True):
            kind, index = ops[0].args
            return _push_value(kind, index, context)
        raise UntranslatableExpression(f"frame base {expr.hex()} is not a wasm location")
    return _translate_ops(ops, expr, context)


def _translate_ops(ops, expr: bytes, context: ExprContext) -> bytes:
    # A whole value, alone or as a piece ([WASM_location, stack_value] then
    # the end or DW_OP_piece), becomes the memory location of its home.
    out_ops: list[bytes] = []
    k = 0
    while k < len(ops):
        op = ops[k]
        end = ops[k + 1].offset if k + 1 < len(ops) else len(expr)
        raw = expr[op.offset:end]
        if op.op == DW_OP_WASM_location:
            kind, index = op.args
            following = ops[k + 1].op if k + 1 < len(ops) else None
            after = ops[k + 2].op if k + 2 < len(ops) else None
            starts_piece = k == 0 or ops[k - 1].op == DW_OP_piece
            if starts_piece and following == DW_OP_stack_value and after in (None, DW_OP_piece):
                out_ops.append(_location_of(kind, index, context))
                out_ops.append(b"")  # the stack_value is dropped: a memory location
                k += 2
                continue
            out_ops.append(_push_value(kind, index, context))
        elif op.op in (DW_OP_addr, DW_OP_addrx, DW_OP_constx, DW_OP_GNU_addr_index, DW_OP_GNU_const_index):
            out_ops.append(bytes([DW_OP_constu]) + uleb128(_address_operand(op, context)))
        elif op.op in (DW_OP_form_tls_address, DW_OP_GNU_push_tls_address):
            # Thread-local storage: codemem runs no threads (no shared memory),
            # and wasm-ld then lays thread_local data out like any other, at
            # the linear-memory address the expression already pushed
            # (wasi-libc's errno: DW_OP_const4u ADDR, DW_OP_GNU_push_tls_address).
            out_ops.append(b"")
        elif op.op in _REGISTER_OPS:
            raise UntranslatableExpression(f"{op.op_name} names a register the guest does not have")
        else:
            out_ops.append(raw)
        k += 1
    assert len(out_ops) == len(ops)  # one chunk per input op (b"" for a dropped stack_value)
    return _retarget_branches(ops, expr, out_ops)


def _address_operand(op, context: ExprContext) -> int:
    """The linear-memory address (or constant) ``DW_OP_addr`` carries, or
    that ``DW_OP_addrx`` and friends index in ``.debug_addr`` (DWARF 5 section
    2.5.1.1)."""
    if op.op == DW_OP_addr:
        value = op.args[0]
    else:
        if context.indexed_address is None:
            raise UntranslatableExpression(f"{op.op_name} without a .debug_addr table")
        try:
            value = context.indexed_address(op.args[0])
        except (DWARFError, ELFParseError, ConstructError, KeyError, IndexError, ValueError, TypeError) as e:
            raise UntranslatableExpression(f"{op.op_name} {op.args[0]}: {e}") from e
    if value == TOMBSTONE and op.op != DW_OP_constx:
        raise UntranslatableExpression("an address of data the linker removed")
    return value


def _retarget_branches(ops, expr: bytes, out_ops: list[bytes]) -> bytes:
    """Join ``out_ops`` (one per input op) with bra/skip offsets fixed for the
    new op lengths (DWARF 5 section 2.5.1.5: a 2-byte signed offset from the end
    of the branch operation)."""
    if not any(op.op in (DW_OP_bra, DW_OP_skip) for op in ops):
        return b"".join(out_ops)
    old_starts = [op.offset for op in ops] + [len(expr)]
    new_starts = [0]
    for chunk in out_ops:
        new_starts.append(new_starts[-1] + len(chunk))
    fixed = list(out_ops)
    for k, op in enumerate(ops):
        if op.op not in (DW_OP_bra, DW_OP_skip):
            continue
        target = old_starts[k + 1] + op.args[0]
        if target not in old_starts:
            raise UntranslatableExpression(f"{op.op_name} into the middle of an operation")
        new_target = new_starts[old_starts.index(target)]
        delta = new_target - new_starts[k + 1]
        fixed[k] = bytes([op.op]) + delta.to_bytes(2, "little", signed=True)
    return b"".join(fixed)
