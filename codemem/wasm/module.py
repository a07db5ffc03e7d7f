"""The decoded form of a wasm module (spec 2.5 "Modules", binary 5.5).

``ModuleInfo`` is what ``decoder.decode_module`` returns and what the validator
and the compiler read. It is plain data: treat every field as read-only. Function
bodies are kept as byte ranges; ``read_body`` decodes one on demand with
``instructions.read_instructions``, so decoding a module never pays for its code.

Index spaces (spec 2.5.1) put imports first: function ``i`` is the i-th imported
function if ``i < num_imported_funcs``, else defined function
``i - num_imported_funcs`` (whose type is ``func_type_indices[...]`` and whose
body is ``codes[...]``). The same holds for tables, memories and globals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import NamedTuple, Union

from .instructions import Instr, read_instructions
from .types import ExternKind, FuncType, GlobalType, MemoryType, TableType, ValType


@dataclass(frozen=True)
class ConstExpr:
    """A constant expression as decoded: its instructions without the final
    ``end`` (validation decides whether they are constant), ``offset`` of the first
    instruction byte and ``end_offset`` just past the ``end``. Float constants
    keep their raw bits in ``Instr.imm``."""

    instrs: tuple[Instr, ...]
    offset: int
    end_offset: int

    @property
    def single(self) -> Instr | None:
        """The instruction if the expression is exactly one (the only valid
        shape in wasm 2.0), else None."""
        return self.instrs[0] if len(self.instrs) == 1 else None


class SegmentMode(Enum):
    ACTIVE = "active"
    PASSIVE = "passive"
    DECLARATIVE = "declarative"


@dataclass(frozen=True)
class Import:
    """``desc`` is a type index (FUNC), a TableType, a MemoryType or a GlobalType.
    ``offset``: file offset of the import entry (for error reports)."""

    module: str
    name: str
    kind: ExternKind
    desc: Union[int, TableType, MemoryType, GlobalType]
    offset: int = 0


@dataclass(frozen=True)
class Export:
    name: str
    kind: ExternKind
    index: int
    offset: int = 0


@dataclass(frozen=True)
class GlobalDef:
    type: GlobalType
    init: ConstExpr
    offset: int = 0


@dataclass(frozen=True)
class ElemSegment:
    """An element segment (spec 5.5.12). ``items`` holds function indices (ints)
    for the flag forms 0-3 and ``ConstExpr``s for 4-7 (``uses_exprs``).
    ``table_index``/``offset`` are meaningful only for ACTIVE segments (0/None
    otherwise)."""

    mode: SegmentMode
    table_index: int
    offset: ConstExpr | None
    elem_type: ValType
    items: tuple[Union[int, ConstExpr], ...]
    uses_exprs: bool
    flags: int
    position: int  # file offset of the segment's flags field

    def func_indices(self) -> list[int | None]:
        """Each item as a function index, or None for ``ref.null``. For items that
        are ``global.get`` (only possible for imported globals) this raises
        ValueError: their value is known only at instantiation."""
        out: list[int | None] = []
        for item in self.items:
            if isinstance(item, int):
                out.append(item)
                continue
            ins = item.single
            if ins is not None and ins.name == "ref.func":
                out.append(ins.imm)
            elif ins is not None and ins.name == "ref.null":
                out.append(None)
            else:
                raise ValueError(f"element item at {item.offset:#x} is not ref.func/ref.null")
        return out


@dataclass(frozen=True)
class DataSegment:
    """A data segment (spec 5.5.14). ``data_offset`` is the file offset of
    ``data``; ``memory_index``/``offset`` matter only for ACTIVE segments."""

    mode: SegmentMode
    memory_index: int
    offset: ConstExpr | None
    data: bytes
    data_offset: int
    position: int  # file offset of the segment's flags field


@dataclass(frozen=True)
class FunctionBody:
    """One entry of the code section.

    ``locals``: the declared locals expanded one per local (parameters are NOT
    included). ``size_offset``: offset of the entry's size field; ``locals_offset``:
    offset just after it (where the locals vector starts; LLVM's DWARF
    ``DW_AT_low_pc`` of a function points here, relative to the code section
    payload). ``body_offset``: first instruction byte; ``end_offset``: just past
    the final ``end``. ``code`` is ``data[body_offset:end_offset]``.
    """

    locals: tuple[ValType, ...]
    size_offset: int
    locals_offset: int
    body_offset: int
    end_offset: int
    code: bytes


class CustomSection(NamedTuple):
    """A custom section: its name, payload (after the name) and the payload's
    file offset."""

    name: str
    data: bytes
    offset: int


@dataclass
class NameInfo:
    """The ``name`` custom section (spec 7.4), or empty if absent or malformed."""

    module: str | None = None
    functions: dict[int, str] = field(default_factory=dict)
    locals: dict[int, dict[int, str]] = field(default_factory=dict)
    #: Global names (the extended name section's subsection 7, which
    #: wasm-ld writes: ``__stack_pointer``, the C stack pointer).
    globals: dict[int, str] = field(default_factory=dict)


@dataclass
class ModuleInfo:
    """A decoded (not necessarily valid) module; see the module docstring."""

    data: bytes
    types: list[FuncType] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    func_type_indices: list[int] = field(default_factory=list)
    tables: list[TableType] = field(default_factory=list)
    memories: list[MemoryType] = field(default_factory=list)
    globals: list[GlobalDef] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    start: int | None = None
    elems: list[ElemSegment] = field(default_factory=list)
    datas: list[DataSegment] = field(default_factory=list)
    data_count: int | None = None
    #: The bodies, or None until ``codes`` is first read when the decoder was
    #: told to leave them (``decode_module(..., bodies=False)``).
    _codes: list[FunctionBody] | None = field(default_factory=list, repr=False)
    customs: list[CustomSection] = field(default_factory=list)
    names: NameInfo = field(default_factory=NameInfo)
    dwarf: dict[str, bytes] = field(default_factory=dict)
    #: File offset of the code section's payload (its count field); wasm DWARF
    #: code addresses are relative to it. None when there is no code section.
    code_section_offset: int | None = None
    #: File offset just past the code section (None without one).
    code_section_end: int | None = None
    #: Section id -> file offset of its payload (last one for custom sections);
    #: the location reported for errors in entries that keep no offset.
    section_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def codes(self) -> list[FunctionBody]:
        """The function bodies (code section entries), in definition order."""
        if self._codes is None:
            from .decoder import decode_code_section  # the decoder imports this module

            self._codes = decode_code_section(self.data, self.code_section_offset, self.code_section_end)
        return self._codes

    @codes.setter
    def codes(self, bodies: list[FunctionBody]) -> None:
        self._codes = bodies

    def __repr__(self) -> str:
        return (f"<ModuleInfo {len(self.data)} bytes: {len(self.types)} types, "
                f"{len(self.imports)} imports, {len(self.codes)} functions>")

    # --- index spaces (imports first) -----------------------------------------

    def _imported(self, kind: ExternKind) -> list:
        return [imp.desc for imp in self.imports if imp.kind == kind]

    @cached_property
    def all_func_type_indices(self) -> list[int]:
        """Type index of every function in the function index space."""
        return self._imported(ExternKind.FUNC) + list(self.func_type_indices)

    @cached_property
    def all_tables(self) -> list[TableType]:
        return self._imported(ExternKind.TABLE) + list(self.tables)

    @cached_property
    def all_memories(self) -> list[MemoryType]:
        return self._imported(ExternKind.MEMORY) + list(self.memories)

    @cached_property
    def all_globals(self) -> list[GlobalType]:
        return self._imported(ExternKind.GLOBAL) + [g.type for g in self.globals]

    @cached_property
    def all_func_types(self) -> list[FuncType | None]:
        """FuncType of every function in the index space; None where the type index
        is out of range (only in modules that fail validation)."""
        types = self.types
        n = len(types)
        return [types[i] if i < n else None for i in self.all_func_type_indices]

    @cached_property
    def num_imported_funcs(self) -> int:
        return sum(1 for imp in self.imports if imp.kind == ExternKind.FUNC)

    @cached_property
    def num_imported_tables(self) -> int:
        return sum(1 for imp in self.imports if imp.kind == ExternKind.TABLE)

    @cached_property
    def num_imported_memories(self) -> int:
        return sum(1 for imp in self.imports if imp.kind == ExternKind.MEMORY)

    @cached_property
    def num_imported_globals(self) -> int:
        return sum(1 for imp in self.imports if imp.kind == ExternKind.GLOBAL)

    @property
    def num_funcs(self) -> int:
        return len(self.all_func_type_indices)

    def func_type(self, func_index: int) -> FuncType:
        """Type of function ``func_index`` (whole index space). IndexError if the
        function or its type index does not exist (only in invalid modules)."""
        if func_index < 0:
            raise IndexError(func_index)
        return self.types[self.all_func_type_indices[func_index]]

    def global_type(self, global_index: int) -> GlobalType:
        if global_index < 0:
            raise IndexError(global_index)
        return self.all_globals[global_index]

    def table_type(self, table_index: int) -> TableType:
        if table_index < 0:
            raise IndexError(table_index)
        return self.all_tables[table_index]

    def memory_type(self, memory_index: int) -> MemoryType:
        if memory_index < 0:
            raise IndexError(memory_index)
        return self.all_memories[memory_index]

    def func_name(self, func_index: int) -> str | None:
        """Name from the name section, else the export name, else None."""
        name = self.names.functions.get(func_index)
        if name is not None:
            return name
        for exp in self.exports:
            if exp.kind == ExternKind.FUNC and exp.index == func_index:
                return exp.name
        return None

    @cached_property
    def declared_func_refs(self) -> frozenset[int]:
        """Functions a ``ref.func`` in code may name (spec 3.4.10 "C.refs"): those
        referenced from element segments, exports and global initializers."""
        refs: set[int] = set()

        def scan(expr: ConstExpr | None) -> None:
            if expr is not None:
                for ins in expr.instrs:
                    if ins.name == "ref.func":
                        refs.add(ins.imm)

        for g in self.globals:
            scan(g.init)
        for seg in self.elems:
            for item in seg.items:
                if isinstance(item, int):
                    refs.add(item)
                else:
                    scan(item)
        for exp in self.exports:
            if exp.kind == ExternKind.FUNC:
                refs.add(exp.index)
        return frozenset(refs)

    def read_body(self, defined_index: int) -> list[Instr]:
        """Decode the instructions of defined function ``defined_index`` (0-based
        among *defined* functions). Raises CompileError if malformed."""
        body = self.codes[defined_index]
        return read_instructions(self.data, body.body_offset, body.end_offset,
                                 section_end=self.code_section_end)
