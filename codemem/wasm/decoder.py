"""Binary-format decoder: module bytes -> ``ModuleInfo`` (spec chapter 5).

Contract of ``decode_module``: returns a ``ModuleInfo`` or raises ``CompileError``
(never another exception) whose ``offset`` lies in ``[0, len(data)]`` and whose
message uses the reference interpreter's wording, so spec ``assert_malformed``
texts match. Work and memory are linear in ``len(data)``: a count is checked
against the bytes left before anything is built for it, and elements are built
only as their bytes are read.

Function bodies are split off (locals decoded, instructions not): instructions are
decoded by ``instructions.read_instructions`` when the validator or compiler
walks them, so malformed *code* is reported then ("illegal opcode", "END opcode
expected", "zero byte expected", ...). ``validator.validate`` decodes all bodies
before validating anything, which gives the spec's malformed-before-invalid order.
"""
from __future__ import annotations

import logging

from construct import Bytes, Int32ul, Struct, Switch, this

from ..errors import CompileError
from .binary import (
    UNEXPECTED_END, Cursor, FuncTypeSchema, GlobalTypeSchema, MemoryTypeSchema, Name,
    TableTypeSchema, TaggedByte, VarUInt, Vec, _CursorConstruct, read_len32, read_name, read_u32, read_valtype,
)
from .instructions import read_const_instrs
from .module import (
    ConstExpr, CustomSection, DataSegment, ElemSegment, Export, FunctionBody, GlobalDef, Import,
    ModuleInfo, NameInfo, SegmentMode,
)
from .types import ExternKind, ValType

log = logging.getLogger(__name__)

MAGIC = b"\x00asm"
VERSION = 1

#: Implementation limit on declared locals per function (the spec allows up to
#: 2**32-1; like V8 and Wasmtime we cap it, spec appendix "Implementation
#: Limitations"), so expanding ``FunctionBody.locals`` stays bounded.
MAX_LOCALS = 50_000

SECTION_NAMES = {
    0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
    7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount",
}
# Required order of non-custom sections (spec 5.5.2): datacount sits between
# element and code.
_ORDER_RANK = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 12: 10, 10: 11, 11: 12}


class ConstExprCon(_CursorConstruct):
    """A constant expression: instructions up to the closing ``end``."""

    def _read(self, cur):
        start = cur.pos
        instrs, cur.pos = read_const_instrs(cur.data, cur.pos, cur.limit)
        return ConstExpr(tuple(instrs), start, cur.pos)


_EXTERN_KIND_BYTES = {k.value: k for k in ExternKind}

ImportSchema = Struct(
    "module" / Name(),
    "name" / Name(),
    "kind" / TaggedByte(_EXTERN_KIND_BYTES, "malformed import kind"),
    "desc" / Switch(this.kind, {
        ExternKind.FUNC: VarUInt(32),
        ExternKind.TABLE: TableTypeSchema,
        ExternKind.MEMORY: MemoryTypeSchema,
        ExternKind.GLOBAL: GlobalTypeSchema,
    }),
)
ExportSchema = Struct(
    "name" / Name(),
    "kind" / TaggedByte(_EXTERN_KIND_BYTES, "malformed export kind"),
    "index" / VarUInt(32),
)
GlobalSchema = Struct("type" / GlobalTypeSchema, "init" / ConstExprCon())


def decode_module(data: bytes, *, bodies: bool = True) -> ModuleInfo:
    """Decode a binary module (``bytes``, ``bytearray`` or ``memoryview``).

    Checks everything the binary format requires (spec 5), except the contents
    of function bodies (see the module docstring). Raises ``CompileError``.

    ``bodies=False`` leaves the code section's entries (function sizes and
    locals) to the first read of ``ModuleInfo.codes``: only for a module known
    to be well formed (a compile-cache hit: the cache is keyed by the module's
    sha256 and holds only modules that compiled), whose code the caller does
    not compile.  Its errors are then raised late, and out of the spec's
    order, so a module of unknown origin is always decoded whole.
    """
    data = bytes(data)
    info = ModuleInfo(data=data)
    _decode_preamble(data)
    pos = 8
    end = len(data)
    last_rank = 0
    num_bodies = 0  # entries of the code section
    while pos < end:
        section_id = data[pos]
        if section_id not in SECTION_NAMES:
            raise CompileError("malformed section id", pos)
        if section_id != 0:
            rank = _ORDER_RANK[section_id]
            if rank <= last_rank:
                # The reference decoder reads sections in their fixed order, so a
                # duplicate or misplaced one is left over at the end.
                raise CompileError("unexpected content after last section", pos)
            last_rank = rank
        size_pos = pos + 1
        size, payload = _len32(data, size_pos, end)
        if payload + size > end:
            # len32 measures from the size's first byte, so a size may pass its
            # check yet overrun the file by the size field's own length.
            raise CompileError(UNEXPECTED_END, end)
        cur = Cursor(data, payload, payload + size)
        info.section_offsets[section_id] = payload
        if section_id == 0:
            _decode_custom(info, cur)
        elif section_id == 1:
            info.types = list(cur.parse(Vec(FuncTypeSchema)))
        elif section_id == 2:
            info.imports = _decode_entries(cur, ImportSchema, lambda c, at: Import(c.module, c.name, c.kind, c.desc, at))
        elif section_id == 3:
            info.func_type_indices = _decode_u32_vec(cur)
        elif section_id == 4:
            info.tables = list(cur.parse(Vec(TableTypeSchema)))
        elif section_id == 5:
            info.memories = list(cur.parse(Vec(MemoryTypeSchema)))
        elif section_id == 6:
            info.globals = _decode_entries(cur, GlobalSchema, lambda c, at: GlobalDef(c.type, c.init, at))
        elif section_id == 7:
            info.exports = _decode_entries(cur, ExportSchema, lambda c, at: Export(c.name, c.kind, c.index, at))
        elif section_id == 8:
            info.start = cur.u32()
        elif section_id == 9:
            info.elems = _decode_elems(cur)
        elif section_id == 12:
            info.data_count = cur.u32()
        elif section_id == 10:
            info.code_section_offset = payload
            info.code_section_end = payload + size
            if bodies:
                info.codes = _decode_codes(cur)
                num_bodies = len(info.codes)
            else:
                num_bodies = cur.len32()
                info._codes = None  # split on first use (ModuleInfo.codes)
                cur.pos = cur.limit
        elif section_id == 11:
            info.datas = _decode_datas(cur)
        if cur.pos != cur.limit:
            raise CompileError("section size mismatch", cur.pos)
        pos = cur.limit
    if len(info.func_type_indices) != num_bodies:
        raise CompileError("function and code section have inconsistent lengths", end)
    if info.data_count is not None and info.data_count != len(info.datas):
        raise CompileError("data count and data section have inconsistent lengths", end)
    return info


def _decode_preamble(data: bytes) -> None:
    # The reference interpreter reads the magic as one u32 and checks it before
    # reading the version, so "asm\0" is a bad magic while "\0asm\1" is too short.
    cur = Cursor(data, 0, len(data))
    if len(data) < 4:
        raise CompileError("unexpected end", len(data))
    if cur.parse(Bytes(4)) != MAGIC:
        raise CompileError("magic header not detected", 0)
    if len(data) < 8:
        raise CompileError("unexpected end", len(data))
    if cur.parse(Int32ul) != VERSION:
        raise CompileError("unknown binary version", 4)


def _len32(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    n, new_pos = read_u32(data, pos, limit)
    if n > len(data) - pos:
        raise CompileError("length out of bounds", pos)
    return n, new_pos


def _decode_entries(cur: Cursor, schema, make) -> list:
    """A vec of ``schema`` entries, each turned into ``make(container, offset)``."""
    out = []
    for _ in range(cur.len32()):
        at = cur.pos
        out.append(make(cur.parse(schema), at))
    return out


def _decode_u32_vec(cur: Cursor) -> list[int]:
    n = cur.len32()
    out = []
    for _ in range(n):
        out.append(cur.u32())
    return out


def _decode_custom(info: ModuleInfo, cur: Cursor) -> None:
    name = cur.name()
    payload_pos = cur.pos
    payload = cur.read(cur.limit - cur.pos)
    info.customs.append(CustomSection(name, payload, payload_pos))
    if name == "name":
        info.names = _decode_name_section(cur.data, payload_pos, cur.limit)
    elif name.startswith(".debug_"):
        if name in info.dwarf:
            log.warning("duplicate custom section %r at %#x ignored", name, payload_pos)
        else:
            info.dwarf[name] = payload


def _decode_name_section(data: bytes, start: int, end: int) -> NameInfo:
    """Decode the name section (spec 7.4.1). A malformed one is ignored, as the
    spec requires of custom sections: the module stays valid, names stay empty."""
    names = NameInfo()
    cur = Cursor(data, start, end)
    last_id = -1
    try:
        while not cur.at_end():
            sub_id = cur.byte()
            if sub_id <= last_id:
                raise CompileError("name subsections out of order", cur.pos - 1)
            last_id = sub_id
            size = cur.len32()
            if cur.pos + size > end:
                raise CompileError(UNEXPECTED_END, end)
            sub = Cursor(data, cur.pos, cur.pos + size)
            if sub_id == 0:
                names.module = sub.name()
            elif sub_id == 1:
                names.functions = _read_name_map(sub)
            elif sub_id == 2:
                names.locals = {}
                for _ in range(sub.len32()):
                    index = sub.u32()
                    names.locals[index] = _read_name_map(sub)
            elif sub_id == 7:  # global names (extended name section proposal)
                names.globals = _read_name_map(sub)
            else:
                sub.pos = sub.limit  # later extensions (labels, types, ...): skip
            if sub.pos != sub.limit:
                raise CompileError("section size mismatch", sub.pos)
            cur.pos = sub.limit
    except CompileError as exc:
        log.info("ignoring malformed name section: %s", exc)
        return NameInfo()
    return names


def _read_name_map(cur: Cursor) -> dict[int, str]:
    """A name map (spec 7.4.1 ``namemap``: ``vec(idx name)``) at the cursor.

    Read with the plain LEB128/name readers rather than a construct schema: a
    real-size module names every function, and a warm load (which reads
    little else) would spend most of its time in construct's per-entry
    parsing.  Same checks, same result (a later duplicate index wins)."""
    data, limit = cur.data, cur.limit
    count, pos = read_len32(data, cur.pos, limit)
    names = {}
    for _ in range(count):
        index, pos = read_u32(data, pos, limit)
        names[index], pos = read_name(data, pos, limit)
    cur.pos = pos
    return names


def decode_code_section(data: bytes, payload: int, end: int) -> list[FunctionBody]:
    """The entries of the code section whose payload is ``data[payload:end]``."""
    cur = Cursor(data, payload, end)
    codes = _decode_codes(cur)
    if cur.pos != cur.limit:
        raise CompileError("section size mismatch", cur.pos)
    return codes


def _decode_codes(cur: Cursor) -> list[FunctionBody]:
    data = cur.data
    count = cur.len32()
    out: list[FunctionBody] = []
    for _ in range(count):
        size_pos = cur.pos
        size = cur.len32()
        locals_pos = cur.pos
        body_end = locals_pos + size
        if body_end > cur.limit:
            raise CompileError(UNEXPECTED_END, cur.limit)
        body = Cursor(data, locals_pos, body_end)
        groups = []
        total = 0
        for _ in range(body.len32()):
            n = body.u32()
            t, body.pos = read_valtype(data, body.pos, body.limit)
            total += n
            groups.append((n, t))
        if total > 0xFFFF_FFFF:
            raise CompileError("too many locals", locals_pos)
        if total > MAX_LOCALS:
            raise CompileError("too many locals", locals_pos)
        locals_: list[ValType] = []
        for n, t in groups:
            locals_.extend([t] * n)
        out.append(FunctionBody(tuple(locals_), size_pos, locals_pos, body.pos, body_end,
                                data[body.pos:body_end]))
        cur.pos = body_end
    return out


def _elem_kind(cur: Cursor) -> ValType:
    # elemkind (spec 5.5.12): only 0x00 = funcref exists in 2.0.
    b = cur.byte()
    if b != 0x00:
        raise CompileError("malformed element kind", cur.pos - 1)
    return ValType.FUNCREF


def _const(cur: Cursor) -> ConstExpr:
    start = cur.pos
    instrs, cur.pos = read_const_instrs(cur.data, cur.pos, cur.limit)
    return ConstExpr(tuple(instrs), start, cur.pos)


def _decode_elems(cur: Cursor) -> list[ElemSegment]:
    """Element segments: flags 0-7 select active/passive/declarative, explicit
    table index, and function indices vs. expressions (spec 5.5.12)."""
    out: list[ElemSegment] = []
    for _ in range(cur.len32()):
        position = cur.pos
        flags = cur.u32()
        if flags > 7:
            raise CompileError("malformed elements segment kind", position)
        table = 0
        offset = None
        if flags & 1:
            mode = SegmentMode.DECLARATIVE if flags & 2 else SegmentMode.PASSIVE
        else:
            mode = SegmentMode.ACTIVE
            if flags & 2:
                table = cur.u32()
            offset = _const(cur)
        uses_exprs = bool(flags & 4)
        if flags in (0, 4):
            elem_type = ValType.FUNCREF  # implicit in the short forms
        elif uses_exprs:
            elem_type, cur.pos = read_valtype(cur.data, cur.pos, cur.limit, "reference")
        else:
            elem_type = _elem_kind(cur)
        n = cur.len32()
        items: list = []
        if uses_exprs:
            for _ in range(n):
                items.append(_const(cur))
        else:
            for _ in range(n):
                items.append(cur.u32())
        out.append(ElemSegment(mode, table, offset, elem_type, tuple(items), uses_exprs, flags, position))
    return out


def _decode_datas(cur: Cursor) -> list[DataSegment]:
    out: list[DataSegment] = []
    for _ in range(cur.len32()):
        position = cur.pos
        flags = cur.u32()
        memory = 0
        offset = None
        if flags == 1:
            mode = SegmentMode.PASSIVE
        elif flags in (0, 2):
            mode = SegmentMode.ACTIVE
            if flags == 2:
                memory = cur.u32()
            offset = _const(cur)
        else:
            raise CompileError("malformed data segment kind", position)
        n = cur.len32()
        data_pos = cur.pos
        out.append(DataSegment(mode, memory, offset, cur.read(n), data_pos, position))
    return out
