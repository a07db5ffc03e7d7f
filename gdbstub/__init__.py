"""wasm-gdbstub: a GDB remote stub for WebAssembly Stores (see README.md).

``gdbstub.DebugHost`` is the embedding API (gdbstub.host); it is imported on
first use, so ``import gdbstub.protocol`` stays free of the engine.
"""
from __future__ import annotations

__all__ = ["DebugHost"]


def __getattr__(name: str):
    if name == "DebugHost":
        from .host import DebugHost
        return DebugHost
    raise AttributeError(f"module 'gdbstub' has no attribute {name!r}")
