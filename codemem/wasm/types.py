"""WebAssembly 2.0 types (spec section 2.3 "Types", binary encoding in 5.3).

Contract: every class here is immutable and hashable, so decoded types can be
compared with ``==`` and used as dict keys (the compiler interns function types).
``ValType`` members carry their binary codes, so ``ValType(0x7F) is ValType.I32``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ValType(IntEnum):
    """A value type, valued by its one-byte binary code (spec 5.3.1-5.3.3).

    ``UNKNOWN`` is not a wasm type and is never decoded: it is the validator's
    bottom type for operands popped from the polymorphic stack of unreachable code
    (spec appendix "Validation Algorithm", ``Unknown``). It matches every type.
    """

    I32 = 0x7F
    I64 = 0x7E
    F32 = 0x7D
    F64 = 0x7C
    FUNCREF = 0x70
    EXTERNREF = 0x6F
    UNKNOWN = 0x00

    @property
    def is_num(self) -> bool:
        """True for i32/i64/f32/f64 and for UNKNOWN (which may stand for one)."""
        return self in _NUM_OR_UNKNOWN

    @property
    def is_ref(self) -> bool:
        """True for funcref/externref and for UNKNOWN."""
        return self in _REF_OR_UNKNOWN

    @property
    def wat_name(self) -> str:
        """The text-format spelling: ``i32``, ``funcref``, ... (``_`` for UNKNOWN)."""
        return _WAT_NAMES[self]


UNKNOWN = ValType.UNKNOWN
NUM_TYPES = (ValType.I32, ValType.I64, ValType.F32, ValType.F64)
REF_TYPES = (ValType.FUNCREF, ValType.EXTERNREF)
_NUM_OR_UNKNOWN = frozenset(NUM_TYPES + (UNKNOWN,))
_REF_OR_UNKNOWN = frozenset(REF_TYPES + (UNKNOWN,))
_WAT_NAMES = {
    ValType.I32: "i32", ValType.I64: "i64", ValType.F32: "f32", ValType.F64: "f64",
    ValType.FUNCREF: "funcref", ValType.EXTERNREF: "externref", ValType.UNKNOWN: "_",
}

#: Byte code -> ValType for the six types a module may spell (UNKNOWN excluded).
VALTYPE_BY_CODE: dict[int, ValType] = {t.value: t for t in NUM_TYPES + REF_TYPES}
#: Byte code -> ValType for reference types only (tables, ref.null, elem segments).
REFTYPE_BY_CODE: dict[int, ValType] = {t.value: t for t in REF_TYPES}


class ExternKind(IntEnum):
    """Import/export descriptor kinds, valued by their binary codes (spec 5.5.5)."""

    FUNC = 0
    TABLE = 1
    MEMORY = 2
    GLOBAL = 3


@dataclass(frozen=True, slots=True)
class FuncType:
    """``[params] -> [results]``; multi-value allows any number of results."""

    params: tuple[ValType, ...]
    results: tuple[ValType, ...]

    def __post_init__(self) -> None:
        # Accept any iterable (wasmtime-py users write FuncType([i32], [])):
        # stored as tuples of ValType so types stay hashable and comparable.
        object.__setattr__(self, "params", tuple(ValType(t) for t in self.params))
        object.__setattr__(self, "results", tuple(ValType(t) for t in self.results))

    def __str__(self) -> str:
        p = " ".join(t.wat_name for t in self.params)
        r = " ".join(t.wat_name for t in self.results)
        return f"[{p}] -> [{r}]"


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits in units of pages (memories) or elements (tables); ``max`` None
    means unbounded. Values are u32 as decoded; range checks are validation's."""

    min: int
    max: int | None = None


@dataclass(frozen=True, slots=True)
class TableType:
    elem: ValType
    limits: Limits


@dataclass(frozen=True, slots=True)
class MemoryType:
    limits: Limits


@dataclass(frozen=True, slots=True)
class GlobalType:
    valtype: ValType
    mutable: bool
