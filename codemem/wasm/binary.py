"""Low-level binary reading for the wasm decoder: LEB128 with the spec's limits, a
bounded cursor, and ``construct`` schemas for the struct-level entries of sections.

Contract: every reader raises ``CompileError`` (never another exception) with the
reference interpreter's wording and the absolute file offset of the offending byte:

* a LEB128 with more bytes than ``ceil(N/7)`` -> "integer representation too long";
* unused bits of the last byte that are not zero (unsigned) or sign (signed)
  extension -> "integer too large" (spec 5.2.2, "Integers");
* a vector count, string or payload length larger than the bytes left in the *file*
  (counted from the length's own first byte, as the reference interpreter's
  ``len32`` does) -> "length out of bounds";
* running past the end of the enclosing section/body -> "unexpected end of section
  or function".

The ``construct`` adapters read from a ``Cursor`` (a bounded view on the module
bytes with absolute positions) and are parse-only: wasm modules are produced by
toolchains, never by this engine.
"""
from __future__ import annotations

from construct import Adapter, Construct, If, Struct, this

from ..errors import CompileError
from .types import REFTYPE_BY_CODE, VALTYPE_BY_CODE, FuncType, GlobalType, Limits, MemoryType, TableType

UNEXPECTED_END = "unexpected end of section or function"


def _overrun(data: bytes, start: int, limit: int, bits: int, reader) -> None:
    """A LEB128 runs past ``limit`` (its section or body). The reference
    interpreter reads one stream for the whole file, so it would report the
    integer's own malformation if it has one: check that first, reading on to the
    end of the file, then report the overrun."""
    if limit < len(data):
        reader(data, start, len(data), bits)
    raise CompileError(UNEXPECTED_END, limit)


def read_uleb(data: bytes, pos: int, limit: int, bits: int) -> tuple[int, int]:
    """Read an unsigned LEB128 of at most ``bits`` bits from ``data[pos:limit]``.

    Returns ``(value, new_pos)``. Mirrors the reference interpreter's ``vuN``: the
    check order (length before range) decides which message a bad encoding gets.
    """
    start = pos
    result = 0
    shift = 0
    n = bits
    while True:
        if n <= 0:
            raise CompileError("integer representation too long", pos)
        if pos >= limit:
            _overrun(data, start, limit, bits, read_uleb)
        b = data[pos]
        pos += 1
        if n < 7 and (b & 0x7F) >= (1 << n):
            raise CompileError("integer too large", pos - 1)
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        n -= 7


def read_sleb(data: bytes, pos: int, limit: int, bits: int) -> tuple[int, int]:
    """Read a signed LEB128 of at most ``bits`` bits; the value is sign-extended
    into a Python int. Same error rules as ``read_uleb`` (spec ``vsN``)."""
    start = pos
    result = 0
    shift = 0
    n = bits
    while True:
        if n <= 0:
            raise CompileError("integer representation too long", pos)
        if pos >= limit:
            _overrun(data, start, limit, bits, read_sleb)
        b = data[pos]
        pos += 1
        if n < 7:
            mask = (-1 << (n - 1)) & 0x7F
            if (b & mask) != 0 and (b & mask) != mask:
                raise CompileError("integer too large", pos - 1)
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos
        n -= 7


def read_u32(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """u32 LEB128 with a one-byte fast path (most indices and counts are < 128)."""
    if pos < limit:
        b = data[pos]
        if b < 0x80:
            return b, pos + 1
    return read_uleb(data, pos, limit, 32)


def read_len32(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """A u32 that counts bytes or vector elements still to come.

    Rejects, before anything is allocated for it, a count larger than the bytes
    left in the whole file from the count's first byte ("length out of bounds",
    reference interpreter ``len32``). Counts that fit the file but not the
    section fail later, where the section runs out ("unexpected end ...").
    """
    try:
        n, new_pos = read_u32(data, pos, limit)
    except CompileError as exc:
        if exc.message != UNEXPECTED_END or limit >= len(data):
            raise
        # Past the section end the reference interpreter still checks the length
        # against the file, so "length out of bounds" wins if it applies.
        n, _ = read_u32(data, pos, len(data))
        if n > len(data) - pos:
            raise CompileError("length out of bounds", pos) from None
        raise
    if n > len(data) - pos:
        raise CompileError("length out of bounds", pos)
    return n, new_pos


def read_name(data: bytes, pos: int, limit: int) -> tuple[str, int]:
    """A name: len32 byte count then UTF-8 (spec 5.2.4); invalid UTF-8 (overlong
    forms, surrogates, > U+10FFFF) -> "malformed UTF-8 encoding" at the count."""
    start = pos
    n, pos = read_len32(data, pos, limit)
    if pos + n > limit:
        raise CompileError(UNEXPECTED_END, limit)
    try:
        text = data[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError:
        raise CompileError("malformed UTF-8 encoding", start) from None
    return text, pos + n


def read_valtype(data: bytes, pos: int, limit: int, what: str = "value") -> tuple[int, int]:
    """A value type (``what`` = "value") or reference type (``what`` = "reference").

    Types are s7 LEB128 in the reference interpreter, so a byte with the
    continuation bit set is "integer representation too long"; an unknown code is
    "malformed value type" / "malformed reference type". 0x7B (v128) is SIMD,
    which this engine does not support.
    """
    if pos >= limit:
        raise CompileError(UNEXPECTED_END, limit)
    b = data[pos]
    table = VALTYPE_BY_CODE if what == "value" else REFTYPE_BY_CODE
    t = table.get(b)
    if t is not None:
        return t, pos + 1
    if b & 0x80:
        raise CompileError("integer representation too long", pos + 1)
    if b == 0x7B and what == "value":
        raise CompileError("SIMD (v128) is not supported", pos)
    raise CompileError(f"malformed {what} type", pos)


class Cursor:
    """A read position over ``data`` bounded by ``limit`` (a section or body end),
    with absolute offsets. ``construct`` sees it as a stream; the adapters below
    read ``data``/``pos`` directly so they can apply the spec's LEB rules."""

    __slots__ = ("data", "pos", "limit")

    def __init__(self, data: bytes, pos: int, limit: int):
        self.data = data
        self.pos = pos
        self.limit = min(limit, len(data))

    # The stream protocol, for any stock construct primitive that reads raw bytes.
    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.limit - self.pos
        if self.pos + n > self.limit:
            raise CompileError(UNEXPECTED_END, self.limit)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise ValueError("Cursor only seeks to absolute offsets")
        self.pos = pos
        return pos

    def at_end(self) -> bool:
        return self.pos >= self.limit

    def byte(self) -> int:
        if self.pos >= self.limit:
            raise CompileError(UNEXPECTED_END, self.limit)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        v, self.pos = read_u32(self.data, self.pos, self.limit)
        return v

    def len32(self) -> int:
        v, self.pos = read_len32(self.data, self.pos, self.limit)
        return v

    def bytes(self, n: int) -> bytes:
        return self.read(n)

    def name(self) -> str:
        v, self.pos = read_name(self.data, self.pos, self.limit)
        return v

    def parse(self, con: Construct):
        """Parse one ``construct`` schema at the cursor."""
        return con.parse_stream(self)


class _CursorConstruct(Construct):
    """Base of the parse-only adapters; ``_read(cursor)`` does the work."""

    def _parse(self, stream, context, path):
        if not isinstance(stream, Cursor):  # pragma: no cover - programming error
            raise TypeError("wasm schemas parse from a binary.Cursor")
        return self._read(stream)

    def _build(self, obj, stream, context, path):  # pragma: no cover - parse-only
        raise NotImplementedError("wasm schemas are parse-only")

    def _read(self, cur: Cursor):  # pragma: no cover - abstract
        raise NotImplementedError


class VarUInt(_CursorConstruct):
    """Unsigned LEB128 of at most ``bits`` bits (spec ``uN``)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def _read(self, cur):
        v, cur.pos = read_uleb(cur.data, cur.pos, cur.limit, self.bits)
        return v


class Len32(_CursorConstruct):
    """A u32 length/count checked against the bytes left in the file."""

    def _read(self, cur):
        return cur.len32()


class Name(_CursorConstruct):
    """A UTF-8 name (spec 5.2.4)."""

    def _read(self, cur):
        return cur.name()


class ValTypeCon(_CursorConstruct):
    """A value type -> ``ValType``."""

    def __init__(self, what: str = "value"):
        super().__init__()
        self.what = what

    def _read(self, cur):
        v, cur.pos = read_valtype(cur.data, cur.pos, cur.limit, self.what)
        return v


class TaggedByte(_CursorConstruct):
    """One raw byte that must be in ``allowed``; otherwise ``message`` at it.

    Import/export kinds and mutability are plain bytes in the spec (not LEB128), so
    0x80 is "malformed import kind", not a LEB128 error."""

    def __init__(self, allowed: dict[int, object], message: str):
        super().__init__()
        self.allowed = allowed
        self.message = message

    def _read(self, cur):
        b = cur.byte()
        if b not in self.allowed:
            raise CompileError(self.message, cur.pos - 1)
        return self.allowed[b]


class FuncTypeForm(_CursorConstruct):
    """The 0x60 that opens a function type; read as s7 like the reference interpreter."""

    def _read(self, cur):
        b = cur.byte()
        if b == 0x60:
            return b
        if b & 0x80:
            raise CompileError("integer representation too long", cur.pos)
        raise CompileError("malformed function type", cur.pos - 1)


class Vec(_CursorConstruct):
    """``vec(X)``: a len32 count then that many ``subcon``; returns a tuple.

    Elements are appended as they parse, so a huge claimed count costs nothing
    until the bytes actually run out."""

    def __init__(self, subcon: Construct):
        super().__init__()
        self.subcon = subcon

    def _read(self, cur):
        n = cur.len32()
        sub = self.subcon
        return tuple(sub.parse_stream(cur) for _ in range(n))


class _Into(Adapter):
    """Adapter from a parsed ``Container`` to one of our dataclasses."""

    def __init__(self, subcon, factory):
        super().__init__(subcon)
        self.factory = factory

    def _decode(self, obj, context, path):
        return self.factory(obj)

    def _encode(self, obj, context, path):  # pragma: no cover - parse-only
        raise NotImplementedError("wasm schemas are parse-only")


# --- Struct-level schemas (spec 5.3 "Types", 5.5 "Modules") --------------------

# Limits: the flag is a u1 LEB128 in the reference interpreter, so 0x02 is
# "integer too large" and 0x81 0x00 "integer representation too long".
LimitsSchema = _Into(
    Struct("has_max" / VarUInt(1), "min" / VarUInt(32), "max" / If(this.has_max == 1, VarUInt(32))),
    lambda c: Limits(c.min, c.max),
)
FuncTypeSchema = _Into(
    Struct("form" / FuncTypeForm(), "params" / Vec(ValTypeCon()), "results" / Vec(ValTypeCon())),
    lambda c: FuncType(c.params, c.results),
)
TableTypeSchema = _Into(
    Struct("elem" / ValTypeCon("reference"), "limits" / LimitsSchema),
    lambda c: TableType(c.elem, c.limits),
)
MemoryTypeSchema = _Into(Struct("limits" / LimitsSchema), lambda c: MemoryType(c.limits))
GlobalTypeSchema = _Into(
    Struct("valtype" / ValTypeCon(),
           "mutable" / TaggedByte({0: False, 1: True}, "malformed mutability")),
    lambda c: GlobalType(c.valtype, c.mutable),
)
