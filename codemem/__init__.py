"""codemem: WebAssembly compiled to x86-64, with per-Store code memory and patch sites.

The runtime API mirrors the ``wasmtime`` Python package (see codemem.runtime).
"""
from .errors import CodememError, CodeMemoryError, CompileError, FrameTableError, LinkError, Trap
from .runtime import (
    Engine,
    ExportType,
    FrameInfo,
    Func,
    FuncType,
    Global,
    GlobalType,
    ImportType,
    Instance,
    Limits,
    Memory,
    MemoryType,
    Module,
    Store,
    Table,
    TableType,
    Val,
    ValType,
)

__all__ = [
    "CodememError", "CodeMemoryError", "CompileError", "FrameTableError", "LinkError", "Trap",
    "Engine", "ExportType", "FrameInfo", "Func", "FuncType", "Global", "GlobalType", "ImportType", "Instance",
    "Limits", "Memory", "MemoryType", "Module", "Store", "Table", "TableType", "Val", "ValType",
]
