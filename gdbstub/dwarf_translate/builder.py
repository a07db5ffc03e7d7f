"""The translation as a debug-image section builder.

The position-independent debug images (one per EngineCode, each Store placed
by its load bias; docs/debug-images.md once that work is merged) take extra
sections from builders with a ``name``, a ``digest`` (part of the image's
cache key) and ``sections(context)``, where ``context`` carries ``module``,
``frame_table`` and ``link_address`` (image offset 0's address). This class is
that builder for the guest's DWARF: it returns the translated units, their
line programs and lists, all at link addresses, so the debugger's load bias
places them with the code. Static data symbols (``TranslatedDwarf.data_symbols``)
are not sections and stay out: their addresses are linear-memory ones, which a
load bias must not move (docs/cvars.md).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .translate import GuestDwarfError, translate_guest_dwarf

log = logging.getLogger(__name__)

__all__ = ["GuestDwarfSections"]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class GuestDwarfSections:
    """``sections(context)`` -> the translated ``.debug_*`` sections of
    ``context.module`` (empty when it has no DWARF, when its Engine does not
    place Stores below 4 GiB, i.e. its images are not x32, or when its DWARF
    cannot be translated, which is logged)."""

    name = "guest-dwarf"

    def __init__(self) -> None:
        self.digest = _sources_digest()

    def sections(self, context) -> dict[str, bytes]:
        module = context.module
        engine = getattr(module, "engine", None)
        info = getattr(module, "info", None)
        if info is None or not getattr(engine, "low_addresses", False):
            return {}
        try:
            translated = translate_guest_dwarf(info, context.frame_table, code_address=context.link_address,
                                               address_size=4)
        except GuestDwarfError as e:
            log.warning("module %s: its DWARF cannot be translated, so no variables or types: %s",
                        getattr(module, "name", "?"), e)
            return {}
        return dict(translated.sections) if translated is not None else {}
