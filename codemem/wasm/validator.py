"""Validation of decoded modules (spec chapter 3) and of function bodies.

Module-level rules live in ``validate_module``; function bodies are checked by
``FuncValidator``, which a single-pass compiler drives one instruction at a time
and whose state (operand types, control frames) it reads *before* each step.
The body algorithm is the spec appendix "Validation Algorithm" (operand stack of
value types with ``UNKNOWN`` as the bottom type, control frames with a height and
an unreachable flag, polymorphic stack after ``unreachable``/``br``/...).

Every failure is ``CompileError(message, offset)`` with the reference interpreter's
message text (``assert_invalid`` in the spec tests compares a prefix): "type
mismatch", "unknown local 3", "alignment must not be larger than natural", ...
"""
from __future__ import annotations

import logging

from ..errors import CompileError
from .decoder import decode_module
from .instructions import Instr
from .module import ConstExpr, ModuleInfo, SegmentMode
from .opcodes import OPCODES, Imm
from .types import UNKNOWN, ExternKind, FuncType, Limits, ValType

log = logging.getLogger(__name__)

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
FUNCREF, EXTERNREF = ValType.FUNCREF, ValType.EXTERNREF

# Control frame kinds.
BLOCK, LOOP, IF, ELSE, FUNCTION = "block", "loop", "if", "else", "function"

MAX_MEMORY_PAGES = 0x1_0000  # spec 3.2.4: memory limits within 2**16 pages
MAX_TABLE_SIZE = 0xFFFF_FFFF  # spec 3.2.3: table limits within 2**32-1

_NUM_OR_UNKNOWN = frozenset((I32, I64, F32, F64, UNKNOWN))
_REF_OR_UNKNOWN = frozenset((FUNCREF, EXTERNREF, UNKNOWN))


class ControlFrame:
    """One entry of the control stack (spec appendix ``ctrl_frame``).

    ``kind``: "block", "loop", "if", "else" or "function"; ``start_types`` /
    ``end_types``: the block type's params / results; ``height``: operand stack
    height at entry (after the params were popped, i.e. the params sit at
    ``[height:height+len(start_types)]`` on entry); ``unreachable``: the rest of
    the block is dead code; ``offset``: offset of the opening instruction (the
    function's first instruction for the function frame).
    """

    __slots__ = ("kind", "start_types", "end_types", "height", "unreachable", "offset")

    def __init__(self, kind: str, start_types: tuple, end_types: tuple, height: int, offset: int):
        self.kind = kind
        self.start_types = start_types
        self.end_types = end_types
        self.height = height
        self.unreachable = False
        self.offset = offset

    @property
    def label_types(self) -> tuple[ValType, ...]:
        """What a branch to this frame's label carries: loop -> params, else results."""
        return self.start_types if self.kind == LOOP else self.end_types

    def __repr__(self) -> str:
        dead = " unreachable" if self.unreachable else ""
        return f"<{self.kind} {self.start_types}->{self.end_types} @h{self.height}{dead}>"


def _mismatch(offset: int, detail: str = "") -> CompileError:
    return CompileError("type mismatch" + (f": {detail}" if detail else ""), offset)


# Instructions whose operands and results never depend on context (numeric ops,
# nop): checked by one table-driven fast path.
_SIMPLE: dict[int, tuple[tuple, tuple]] = {
    code: (info.params, info.results)
    for code, info in OPCODES.items()
    if info.params is not None and info.imm in (Imm.NONE, Imm.I32, Imm.I64, Imm.F32, Imm.F64)
}


class FuncValidator:
    """Validates one defined function's body, one instruction at a time.

    Usage: ``v = FuncValidator(info, i)``; for each ``Instr`` of
    ``info.read_body(i)``: inspect state, ``v.step(instr)``; then ``v.finish()``.

    Public read-only state (do not mutate):

    * ``local_types``: params then declared locals;
    * ``func_type``: the function's ``FuncType``;
    * ``operand_types``: list of ``ValType``, bottom first; ``ValType.UNKNOWN``
      marks a value of unknown type (only in unreachable code);
    * ``control``: list of ``ControlFrame``, outermost (the function) first;
    * ``done``: True once the function's final ``end`` was stepped.
    """

    def __init__(self, info: ModuleInfo, defined_func_index: int):
        self.info = info
        if not 0 <= defined_func_index < len(info.codes):
            raise IndexError(defined_func_index)
        body = info.codes[defined_func_index]
        type_index = info.func_type_indices[defined_func_index]
        if type_index >= len(info.types):
            raise CompileError(f"unknown type {type_index}", body.body_offset)
        self.func_index = info.num_imported_funcs + defined_func_index
        self.func_type: FuncType = info.types[type_index]
        self.local_types: tuple[ValType, ...] = self.func_type.params + body.locals
        self.operand_types: list[ValType] = []
        self.control: list[ControlFrame] = [
            ControlFrame(FUNCTION, (), self.func_type.results, 0, body.body_offset)]
        self.done = False
        # Per-module context, copied to attributes for fast access in step().
        self._types = info.types
        self._func_types = info.all_func_types
        self._globals = info.all_globals
        self._tables = info.all_tables
        self._num_memories = len(info.all_memories)
        self._elem_types = [seg.elem_type for seg in info.elems]
        self._num_datas = len(info.datas)
        self._data_count = info.data_count
        self._refs = info.declared_func_refs

    # --- read-only queries for the compiler ------------------------------------

    def is_unreachable(self) -> bool:
        """True if the current instruction is dead code (stack is polymorphic)."""
        return self.control[-1].unreachable

    def label_types(self, depth: int) -> tuple[ValType, ...]:
        """Types carried by a branch to label ``depth`` (0 = innermost frame)."""
        return self.control[-1 - depth].label_types

    # --- stack primitives (spec appendix) --------------------------------------

    def _pop(self, expect: ValType | None, offset: int) -> ValType:
        vals = self.operand_types
        frame = self.control[-1]
        if len(vals) == frame.height:
            if frame.unreachable:
                return UNKNOWN
            raise _mismatch(offset, "operand stack underflow")
        actual = vals.pop()
        if expect is not None and actual is not expect and actual is not UNKNOWN and expect is not UNKNOWN:
            raise _mismatch(offset, f"expected {expect.wat_name}, got {actual.wat_name}")
        return actual

    def _pop_vals(self, types: tuple, offset: int) -> list[ValType]:
        vals = self.operand_types
        n = len(types)
        base = len(vals) - n
        if base >= self.control[-1].height:
            # Fast path: all operands are real stack entries.
            popped = vals[base:]
            for actual, expect in zip(popped, types):
                if actual is not expect and actual is not UNKNOWN:
                    raise _mismatch(offset, f"expected {expect.wat_name}, got {actual.wat_name}")
            del vals[base:]
            return popped
        popped = [UNKNOWN] * n
        for i in range(n - 1, -1, -1):
            popped[i] = self._pop(types[i], offset)
        return popped

    def _push_ctrl(self, kind: str, start: tuple, end: tuple, offset: int) -> None:
        self.control.append(ControlFrame(kind, start, end, len(self.operand_types), offset))
        self.operand_types.extend(start)

    def _pop_ctrl(self, offset: int) -> ControlFrame:
        frame = self.control[-1]
        self._pop_vals(frame.end_types, offset)
        if len(self.operand_types) != frame.height:
            raise _mismatch(offset, "values remaining on stack at end of block")
        self.control.pop()
        return frame

    def _set_unreachable(self) -> None:
        frame = self.control[-1]
        del self.operand_types[frame.height:]
        frame.unreachable = True

    def _label(self, depth: int, offset: int) -> tuple:
        if depth >= len(self.control):
            raise CompileError(f"unknown label {depth}", offset)
        return self.control[-1 - depth].label_types

    def _block_type(self, bt, offset: int) -> tuple[tuple, tuple]:
        if bt is None:
            return (), ()
        if isinstance(bt, ValType):
            return (), (bt,)
        if bt >= len(self._types):
            raise CompileError(f"unknown type {bt}", offset)
        ft = self._types[bt]
        return ft.params, ft.results

    def _memory(self, offset: int) -> None:
        if self._num_memories == 0:
            raise CompileError("unknown memory 0", offset)

    def _table(self, idx: int, offset: int):
        if idx >= len(self._tables):
            raise CompileError(f"unknown table {idx}", offset)
        return self._tables[idx]

    def _elem(self, idx: int, offset: int) -> ValType:
        if idx >= len(self._elem_types):
            raise CompileError(f"unknown elem segment {idx}", offset)
        return self._elem_types[idx]

    def _data(self, idx: int, offset: int) -> None:
        if idx >= self._num_datas:
            raise CompileError(f"unknown data segment {idx}", offset)
        # memory.init/data.drop need the datacount section (spec 5.5.13), a
        # binary-format rule; checked after the index so that a module that is
        # invalid anyway reports "unknown data segment" as the spec tests expect
        # (wabt omits the section when there are no data segments).
        if self._data_count is None:
            raise CompileError("data count section required", offset)

    # --- the step ----------------------------------------------------------------

    def step(self, instr: Instr) -> None:
        """Validate ``instr`` and update the state; CompileError at ``instr.offset``."""
        op = instr.op
        sig = _SIMPLE.get(op)
        if sig is not None:
            if self.done:
                raise CompileError("instruction after the function's end", instr.offset)
            params, results = sig
            vals = self.operand_types
            n = len(params)
            base = len(vals) - n
            if base >= self.control[-1].height:
                if n == 2:
                    a = vals[-2]
                    b = vals[-1]
                    p = params[0]
                    if (a is not p and a is not UNKNOWN) or (b is not params[1] and b is not UNKNOWN):
                        raise _mismatch(instr.offset, f"{instr.name} operands")
                    del vals[-2:]
                elif n == 1:
                    a = vals[-1]
                    if a is not params[0] and a is not UNKNOWN:
                        raise _mismatch(instr.offset, f"{instr.name} operand")
                    vals.pop()
                elif n:
                    self._pop_vals(params, instr.offset)
            else:
                self._pop_vals(params, instr.offset)
            if results:
                vals.append(results[0])
            return
        if self.done:
            raise CompileError("instruction after the function's end", instr.offset)
        handler = _HANDLERS.get(op)
        if handler is None:  # pragma: no cover - the reader only yields known opcodes
            raise CompileError(f"illegal opcode {op:x}", instr.offset)
        handler(self, instr)

    def finish(self) -> None:
        """Check that the whole body was stepped (its final ``end`` included)."""
        if not self.done:
            raise CompileError("END opcode expected", self.control[-1].offset)

    # --- handlers ------------------------------------------------------------------

    def _h_unreachable(self, ins):
        self._set_unreachable()

    def _h_block(self, ins):
        params, results = self._block_type(ins.imm, ins.offset)
        self._pop_vals(params, ins.offset)
        self._push_ctrl(BLOCK if ins.op == 0x02 else LOOP, params, results, ins.offset)

    def _h_if(self, ins):
        params, results = self._block_type(ins.imm, ins.offset)
        self._pop(I32, ins.offset)
        self._pop_vals(params, ins.offset)
        self._push_ctrl(IF, params, results, ins.offset)

    def _h_else(self, ins):
        if self.control[-1].kind != IF:
            raise CompileError("else without matching if", ins.offset)
        frame = self._pop_ctrl(ins.offset)
        self._push_ctrl(ELSE, frame.start_types, frame.end_types, ins.offset)

    def _h_end(self, ins):
        frame = self._pop_ctrl(ins.offset)
        if frame.kind == IF:
            # An if without else has an implicit empty else branch: its params
            # must already be its results (spec 3.3.8.5).
            self._push_ctrl(ELSE, frame.start_types, frame.end_types, ins.offset)
            self._pop_ctrl(ins.offset)
        self.operand_types.extend(frame.end_types)
        if not self.control:
            self.done = True

    def _h_br(self, ins):
        self._pop_vals(self._label(ins.imm, ins.offset), ins.offset)
        self._set_unreachable()

    def _h_br_if(self, ins):
        self._pop(I32, ins.offset)
        types = self._label(ins.imm, ins.offset)
        self._pop_vals(types, ins.offset)
        self.operand_types.extend(types)

    def _h_br_table(self, ins):
        labels, default = ins.imm
        self._pop(I32, ins.offset)
        default_types = self._label(default, ins.offset)
        arity = len(default_types)
        for depth in labels:
            types = self._label(depth, ins.offset)
            if len(types) != arity:
                raise _mismatch(ins.offset, "br_table labels have different arities")
            self.operand_types.extend(self._pop_vals(types, ins.offset))
        self._pop_vals(default_types, ins.offset)
        self._set_unreachable()

    def _h_return(self, ins):
        self._pop_vals(self.func_type.results, ins.offset)
        self._set_unreachable()

    def _h_call(self, ins):
        idx = ins.imm
        ft = self._func_types[idx] if idx < len(self._func_types) else None
        if ft is None:
            raise CompileError(f"unknown function {idx}", ins.offset)
        self._pop_vals(ft.params, ins.offset)
        self.operand_types.extend(ft.results)

    def _h_call_indirect(self, ins):
        type_idx, table_idx = ins.imm
        table = self._table(table_idx, ins.offset)
        if type_idx >= len(self._types):
            raise CompileError(f"unknown type {type_idx}", ins.offset)
        if table.elem is not FUNCREF:
            raise _mismatch(ins.offset, "call_indirect on a table of externref")
        ft = self._types[type_idx]
        self._pop(I32, ins.offset)
        self._pop_vals(ft.params, ins.offset)
        self.operand_types.extend(ft.results)

    def _h_drop(self, ins):
        self._pop(None, ins.offset)

    def _h_select(self, ins):
        off = ins.offset
        if ins.op == 0x1C:
            types = ins.imm
            if len(types) != 1:
                raise CompileError("invalid result arity", off)
            t = types[0]
            self._pop(I32, off)
            self._pop(t, off)
            self._pop(t, off)
            self.operand_types.append(t)
            return
        self._pop(I32, off)
        t1 = self._pop(None, off)
        t2 = self._pop(None, off)
        if t1 not in _NUM_OR_UNKNOWN or t2 not in _NUM_OR_UNKNOWN:
            raise _mismatch(off, "untyped select needs numeric operands")
        if t1 is not t2 and t1 is not UNKNOWN and t2 is not UNKNOWN:
            raise _mismatch(off, "select operands differ")
        self.operand_types.append(t2 if t1 is UNKNOWN else t1)

    def _local(self, idx, offset) -> ValType:
        if idx >= len(self.local_types):
            raise CompileError(f"unknown local {idx}", offset)
        return self.local_types[idx]

    def _h_local_get(self, ins):
        self.operand_types.append(self._local(ins.imm, ins.offset))

    def _h_local_set(self, ins):
        self._pop(self._local(ins.imm, ins.offset), ins.offset)

    def _h_local_tee(self, ins):
        t = self._local(ins.imm, ins.offset)
        self._pop(t, ins.offset)
        self.operand_types.append(t)

    def _global(self, idx, offset):
        if idx >= len(self._globals):
            raise CompileError(f"unknown global {idx}", offset)
        return self._globals[idx]

    def _h_global_get(self, ins):
        self.operand_types.append(self._global(ins.imm, ins.offset).valtype)

    def _h_global_set(self, ins):
        g = self._global(ins.imm, ins.offset)
        if not g.mutable:
            raise CompileError("global is immutable", ins.offset)
        self._pop(g.valtype, ins.offset)

    def _h_table_get(self, ins):
        t = self._table(ins.imm, ins.offset).elem
        self._pop(I32, ins.offset)
        self.operand_types.append(t)

    def _h_table_set(self, ins):
        t = self._table(ins.imm, ins.offset).elem
        self._pop(t, ins.offset)
        self._pop(I32, ins.offset)

    def _h_table_size(self, ins):
        self._table(ins.imm, ins.offset)
        self.operand_types.append(I32)

    def _h_table_grow(self, ins):
        t = self._table(ins.imm, ins.offset).elem
        self._pop(I32, ins.offset)
        self._pop(t, ins.offset)
        self.operand_types.append(I32)

    def _h_table_fill(self, ins):
        t = self._table(ins.imm, ins.offset).elem
        self._pop(I32, ins.offset)
        self._pop(t, ins.offset)
        self._pop(I32, ins.offset)

    def _h_table_copy(self, ins):
        dst, src = ins.imm
        t_dst = self._table(dst, ins.offset).elem
        t_src = self._table(src, ins.offset).elem
        if t_dst is not t_src:
            raise _mismatch(ins.offset, "table.copy between tables of different types")
        self._pop_vals((I32, I32, I32), ins.offset)

    def _h_table_init(self, ins):
        elem_idx, table_idx = ins.imm
        t_table = self._table(table_idx, ins.offset).elem
        t_elem = self._elem(elem_idx, ins.offset)
        if t_table is not t_elem:
            raise _mismatch(ins.offset, "table.init from a segment of another type")
        self._pop_vals((I32, I32, I32), ins.offset)

    def _h_elem_drop(self, ins):
        self._elem(ins.imm, ins.offset)

    def _h_memarg(self, ins):
        self._memory(ins.offset)
        info = OPCODES[ins.op]
        if ins.imm[0] > info.natural_align:
            raise CompileError("alignment must not be larger than natural", ins.offset)
        self._pop_vals(info.params, ins.offset)
        self.operand_types.extend(info.results)

    def _h_memory(self, ins):
        # memory.size/grow/fill/copy: fixed signatures once a memory exists.
        self._memory(ins.offset)
        info = OPCODES[ins.op]
        self._pop_vals(info.params, ins.offset)
        self.operand_types.extend(info.results)

    def _h_memory_init(self, ins):
        self._memory(ins.offset)
        self._data(ins.imm, ins.offset)
        self._pop_vals((I32, I32, I32), ins.offset)

    def _h_data_drop(self, ins):
        self._data(ins.imm, ins.offset)

    def _h_ref_null(self, ins):
        self.operand_types.append(ins.imm)

    def _h_ref_is_null(self, ins):
        t = self._pop(None, ins.offset)
        if t not in _REF_OR_UNKNOWN:
            raise _mismatch(ins.offset, "ref.is_null needs a reference")
        self.operand_types.append(I32)

    def _h_ref_func(self, ins):
        idx = ins.imm
        if idx >= len(self._func_types):
            raise CompileError(f"unknown function {idx}", ins.offset)
        if idx not in self._refs:
            raise CompileError(f"undeclared function reference {idx}", ins.offset)
        self.operand_types.append(FUNCREF)


_HANDLERS = {
    0x00: FuncValidator._h_unreachable,
    0x02: FuncValidator._h_block,
    0x03: FuncValidator._h_block,
    0x04: FuncValidator._h_if,
    0x05: FuncValidator._h_else,
    0x0B: FuncValidator._h_end,
    0x0C: FuncValidator._h_br,
    0x0D: FuncValidator._h_br_if,
    0x0E: FuncValidator._h_br_table,
    0x0F: FuncValidator._h_return,
    0x10: FuncValidator._h_call,
    0x11: FuncValidator._h_call_indirect,
    0x1A: FuncValidator._h_drop,
    0x1B: FuncValidator._h_select,
    0x1C: FuncValidator._h_select,
    0x20: FuncValidator._h_local_get,
    0x21: FuncValidator._h_local_set,
    0x22: FuncValidator._h_local_tee,
    0x23: FuncValidator._h_global_get,
    0x24: FuncValidator._h_global_set,
    0x25: FuncValidator._h_table_get,
    0x26: FuncValidator._h_table_set,
    0x3F: FuncValidator._h_memory,
    0x40: FuncValidator._h_memory,
    0xD0: FuncValidator._h_ref_null,
    0xD1: FuncValidator._h_ref_is_null,
    0xD2: FuncValidator._h_ref_func,
    0xFC08: FuncValidator._h_memory_init,
    0xFC09: FuncValidator._h_data_drop,
    0xFC0A: FuncValidator._h_memory,
    0xFC0B: FuncValidator._h_memory,
    0xFC0C: FuncValidator._h_table_init,
    0xFC0D: FuncValidator._h_elem_drop,
    0xFC0E: FuncValidator._h_table_copy,
    0xFC0F: FuncValidator._h_table_grow,
    0xFC10: FuncValidator._h_table_size,
    0xFC11: FuncValidator._h_table_fill,
}
for _code, _info in OPCODES.items():
    if _info.imm is Imm.MEMARG:
        _HANDLERS[_code] = FuncValidator._h_memarg
assert all(code in _HANDLERS or code in _SIMPLE for code in OPCODES), \
    [OPCODES[c].name for c in OPCODES if c not in _HANDLERS and c not in _SIMPLE]
del _code, _info


def validate_function(info: ModuleInfo, defined_func_index: int, instrs: list[Instr] | None = None) -> None:
    """Validate one defined function's body (decoding it unless ``instrs`` are given)."""
    if instrs is None:
        instrs = info.read_body(defined_func_index)
    v = FuncValidator(info, defined_func_index)
    step = v.step
    for ins in instrs:
        step(ins)
    v.finish()


# --- module level ---------------------------------------------------------------

def _check_limits(lim: Limits, bound: int, message: str, offset: int) -> None:
    if lim.min > bound or (lim.max is not None and lim.max > bound):
        raise CompileError(message, offset)
    if lim.max is not None and lim.min > lim.max:
        raise CompileError("size minimum must not be greater than maximum", offset)


def _check_const(info: ModuleInfo, expr: ConstExpr, expected: ValType, num_globals: int) -> None:
    """A constant expression (spec 3.3.10): only t.const, ref.null, ref.func and
    global.get of an immutable global visible to it (in 2.0: imported ones, so
    ``num_globals`` is the number of imported globals), producing ``expected``."""
    globals_ = info.all_globals
    for ins in expr.instrs:
        if ins.name == "global.get":
            if ins.imm >= num_globals:
                raise CompileError(f"unknown global {ins.imm}", ins.offset)
            if globals_[ins.imm].mutable:
                raise CompileError("constant expression required", ins.offset)
        elif ins.name not in ("i32.const", "i64.const", "f32.const", "f64.const", "ref.null", "ref.func"):
            raise CompileError("constant expression required", ins.offset)
    stack: list[ValType] = []
    for ins in expr.instrs:
        name = ins.name
        if name == "global.get":
            stack.append(globals_[ins.imm].valtype)
        elif name == "ref.null":
            stack.append(ins.imm)
        elif name == "ref.func":
            if ins.imm >= len(info.all_func_type_indices):
                raise CompileError(f"unknown function {ins.imm}", ins.offset)
            stack.append(FUNCREF)
        else:
            stack.append(OPCODES[ins.op].results[0])
    if stack != [expected]:
        raise _mismatch(expr.end_offset - 1, f"constant expression must produce exactly one {expected.wat_name}")


def _validate_module_head(info: ModuleInfo) -> None:
    """Everything the spec's ``check_module`` checks before the function bodies."""
    sec = info.section_offsets
    n_types = len(info.types)
    for imp in info.imports:
        if imp.kind == ExternKind.FUNC:
            if imp.desc >= n_types:
                raise CompileError(f"unknown type {imp.desc}", imp.offset)
        elif imp.kind == ExternKind.TABLE:
            _check_limits(imp.desc.limits, MAX_TABLE_SIZE, "table size must be at most 2^32-1", imp.offset)
        elif imp.kind == ExternKind.MEMORY:
            _check_limits(imp.desc.limits, MAX_MEMORY_PAGES,
                          "memory size must be at most 65536 pages (4GiB)", imp.offset)
    for i, type_index in enumerate(info.func_type_indices):
        if type_index >= n_types:
            offset = info.codes[i].size_offset if i < len(info.codes) else sec.get(3, 0)
            raise CompileError(f"unknown type {type_index}", offset)
    n_imported_globals = info.num_imported_globals
    for g in info.globals:
        _check_const(info, g.init, g.type.valtype, n_imported_globals)
    for table in info.tables:
        _check_limits(table.limits, MAX_TABLE_SIZE, "table size must be at most 2^32-1", sec.get(4, 0))
    for memory in info.memories:
        _check_limits(memory.limits, MAX_MEMORY_PAGES,
                      "memory size must be at most 65536 pages (4GiB)", sec.get(5, 0))
    if len(info.all_memories) > 1:
        raise CompileError("multiple memories", sec.get(5, sec.get(2, 0)))
    n_funcs = len(info.all_func_type_indices)
    for seg in info.elems:
        for item in seg.items:
            if isinstance(item, int):
                if item >= n_funcs:
                    raise CompileError(f"unknown function {item}", seg.position)
            else:
                _check_const(info, item, seg.elem_type, n_imported_globals)
        if seg.mode is SegmentMode.ACTIVE:
            if seg.table_index >= len(info.all_tables):
                raise CompileError(f"unknown table {seg.table_index}", seg.position)
            table_elem = info.all_tables[seg.table_index].elem
            if table_elem is not seg.elem_type:
                raise _mismatch(seg.position, f"element segment's type {seg.elem_type.wat_name} does not "
                                              f"match table's element type {table_elem.wat_name}")
            _check_const(info, seg.offset, I32, n_imported_globals)
    for seg in info.datas:
        if seg.mode is SegmentMode.ACTIVE:
            if seg.memory_index >= len(info.all_memories):
                raise CompileError(f"unknown memory {seg.memory_index}", seg.position)
            _check_const(info, seg.offset, I32, n_imported_globals)


def _validate_module_tail(info: ModuleInfo) -> None:
    """``check_module``'s checks after the function bodies: start and exports."""
    if info.start is not None:
        offset = info.section_offsets.get(8, 0)
        if info.start >= len(info.all_func_type_indices):
            raise CompileError(f"unknown function {info.start}", offset)
        ft = info.func_type(info.start)
        if ft.params or ft.results:
            raise CompileError("start function must not have parameters or results", offset)
    spaces = {
        ExternKind.FUNC: ("function", len(info.all_func_type_indices)),
        ExternKind.TABLE: ("table", len(info.all_tables)),
        ExternKind.MEMORY: ("memory", len(info.all_memories)),
        ExternKind.GLOBAL: ("global", len(info.all_globals)),
    }
    seen: set[str] = set()
    for exp in info.exports:
        what, count = spaces[exp.kind]
        if exp.index >= count:
            raise CompileError(f"unknown {what} {exp.index}", exp.offset)
        if exp.name in seen:
            raise CompileError("duplicate export name", exp.offset)
        seen.add(exp.name)


def validate_module(info: ModuleInfo) -> None:
    """Module-level validation (spec 3.4): everything except function bodies,
    which ``validate_function``/``FuncValidator`` check."""
    _validate_module_head(info)
    _validate_module_tail(info)


def validate(data: bytes) -> ModuleInfo:
    """Decode and fully validate a module; returns its ``ModuleInfo``.

    Order follows the reference interpreter: the whole binary (function bodies
    included) is decoded first, so a malformed module reports its malformation
    even if an earlier part is also invalid; then module-level checks, the bodies
    in order, then the start function and exports.
    """
    info = decode_module(data)
    bodies = [info.read_body(i) for i in range(len(info.codes))]
    _validate_module_head(info)
    for i, instrs in enumerate(bodies):
        validate_function(info, i, instrs)
    _validate_module_tail(info)
    return info
