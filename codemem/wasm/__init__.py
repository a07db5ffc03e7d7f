"""The WebAssembly 2.0 front end (no SIMD): binary decoder and validator.

* ``decode_module(data) -> ModuleInfo``: the binary format (spec chapter 5);
  function bodies stay byte ranges until ``ModuleInfo.read_body(i)`` /
  ``read_instructions`` decodes them.
* ``validate(data) -> ModuleInfo``: decode everything, then validate (chapter 3).
* ``FuncValidator``: per-instruction validation a single-pass compiler drives.

Every error is ``codemem.errors.CompileError(message, offset)`` with the spec
reference interpreter's wording.
"""
from .decoder import decode_module
from .instructions import Instr, read_instructions
from .module import (
    ConstExpr, CustomSection, DataSegment, ElemSegment, Export, FunctionBody, GlobalDef, Import,
    ModuleInfo, NameInfo, SegmentMode,
)
from .opcodes import OP_BY_NAME, OPCODES, Imm, OpInfo
from .types import UNKNOWN, ExternKind, FuncType, GlobalType, Limits, MemoryType, TableType, ValType
from .validator import ControlFrame, FuncValidator, validate, validate_function, validate_module

__all__ = [
    "decode_module", "validate", "validate_module", "validate_function", "FuncValidator", "ControlFrame",
    "read_instructions", "Instr", "OPCODES", "OP_BY_NAME", "Imm", "OpInfo",
    "ModuleInfo", "ConstExpr", "CustomSection", "DataSegment", "ElemSegment", "Export", "FunctionBody",
    "GlobalDef", "Import", "NameInfo", "SegmentMode",
    "ValType", "UNKNOWN", "ExternKind", "FuncType", "GlobalType", "Limits", "MemoryType", "TableType",
]
