"""The guest's DWARF (clang --target=wasm32 -g) translated for the native view.

:func:`translate_guest_dwarf` turns a module's DWARF into sections a debug
image carries instead of its line-only description: compile units, subprograms,
inlined subroutines, lexical blocks, variables and every type, with locations
over the native frame (see :mod:`.translate`, :mod:`.expr`, :mod:`.codemap`).
"""
from .builder import GuestDwarfSections
from .translate import GuestDwarfError, TranslatedDwarf, translate_guest_dwarf

__all__ = ["GuestDwarfError", "GuestDwarfSections", "TranslatedDwarf", "translate_guest_dwarf"]
