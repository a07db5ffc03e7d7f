"""codemem: WebAssembly compiled to x86-64, with per-Store code memory and patch sites."""
from .errors import CodememError, CompileError, FrameTableError, CodeMemoryError, LinkError, Trap

__all__ = ["CodememError", "CompileError", "FrameTableError", "CodeMemoryError", "LinkError", "Trap"]
