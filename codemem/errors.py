"""The engine's exception types: one module so every layer raises the same ones.

Contract: nothing in ``codemem`` lets a bare ``Exception`` escape for bad *input*
(a malformed module, a bad frame table, an invalid patch request). Programming
errors inside the engine stay ``AssertionError``.
"""
from __future__ import annotations


class CodememError(Exception):
    """Base of every error the engine raises on purpose."""


class CompileError(CodememError):
    """A module is malformed (binary format) or invalid (validation).

    ``offset`` is the byte offset in the module where the problem was found, and
    ``message`` uses the spec's wording ("type mismatch", "unexpected end", ...)
    so the spec test runner can compare it with ``assert_invalid`` texts.
    """

    def __init__(self, message: str, offset: int | None = None):
        self.message = message
        self.offset = offset
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class FrameTableError(CodememError):
    """A frame table is malformed; the message names the field that is wrong."""


class CodeMemoryError(CodememError):
    """A code-memory request named something that is not there: an address outside
    every registered image, an offset that is not a patch site, an overlapping
    registration. The message names the address."""


class LinkError(CodememError):
    """An import is missing or has the wrong type (wasm spec: instantiation fails)."""


class Trap(CodememError):
    """A guest trap. ``message`` is the spec's text ("integer divide by zero", ...);
    ``frames`` is the wasm backtrace, innermost first; ``code`` the trap code."""

    def __init__(self, message: str, frames=(), *, code: int | None = None):
        self.message = message
        self.frames = list(frames)
        self.code = code  # the codemem.abi.TrapCode, when the trap came from one
        super().__init__(message)
