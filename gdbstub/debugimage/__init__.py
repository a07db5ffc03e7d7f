"""Synthesized ELF64 debug images for StoreCode images.

For each StoreCode image the stub reports a library whose file is built here:
symbols, call-frame information and (optionally) DWARF line tables describing
the code at its absolute runtime address. See :mod:`.image` for why the file is
an ET_DYN linked at that address.
"""
from .image import build_debug_image
from .model import CfiRow, DebugImageError, Fde, LineRow, Symbol

__all__ = ["CfiRow", "DebugImageError", "Fde", "LineRow", "Symbol", "build_debug_image"]
