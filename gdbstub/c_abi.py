"""Where C aggregates (structs and unions) go in a call: the System V x86-64
convention gdb and lldb use in the native view, and the wasm32 C ABI the
guest was compiled with.

System V (AMD64 psABI 3.2.3, "Parameter Passing"; gdb amd64-tdep.c
``amd64_classify_aggregate``): an aggregate of more than 16 bytes has class
MEMORY (passed as a copy on the stack; returned through a hidden pointer the
caller passes in rdi and the callee returns in rax).  A smaller one is split
into eightbytes, each INTEGER if any field in it is not floating point, else
SSE; INTEGER eightbytes travel in the next of rdi, rsi, rdx, rcx, r8, r9
(results: rax, rdx), SSE ones in the next of xmm0-7 (results: xmm0, xmm1); an
argument whose eightbytes do not all fit in the registers left goes on the
stack whole.

wasm32 (clang's WebAssemblyABIInfo, tool-conventions BasicCABI.md): an
aggregate with a single scalar element (``struct { int x; }``) is passed and
returned as that scalar; an empty one is not passed at all; any other is
passed as a pointer to a copy the caller made in linear memory (*byval*) and
returned through memory whose address the caller passes as a hidden first
parameter (*sret*; the function has no wasm result).

So the two agree for scalars and single-element aggregates (guest functions
take their scalar arguments and leave result 0 where System V has them,
codemem/abi.py "Results"), and differ for the others. The DWARF translation
records, per function that has such a parameter or result, a
:class:`FunctionAbi` in the debug image (:data:`SECTION`); the stub uses it
to show a returned aggregate in rax:rdx / xmm0:xmm1 at the caller's return
point (``finish``) and to convert an inferior call (gdbstub.inferior_calls).

Section layout (little-endian), one record per function::

    u32 image offset of the function's first byte
    u8  1 if the function returns an aggregate through memory (sret), else 0
        [aggregate]           the returned one, when present
    u8  number of C parameters
        per parameter: u8 0 (a scalar: one wasm parameter) or 1 + [aggregate]

    aggregate: u32 size in bytes, u8 number of eightbyte classes (0: MEMORY),
               u8 class per eightbyte (1 INTEGER, 2 SSE)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["INTEGER", "SSE", "SECTION", "Aggregate", "FunctionAbi", "classify", "pack_abis", "return_registers", "returned_bytes",
           "unpack_abis"]

#: The image section holding the records.
SECTION = ".wasm_gdbstub.c_abi"

INTEGER = 1
SSE = 2
#: The largest aggregate System V passes in registers.
MAX_REGISTER_AGGREGATE = 16


@dataclass(frozen=True)
class Aggregate:
    """A struct or union the two conventions pass differently: its size and
    System V eightbyte classes (empty: class MEMORY)."""

    size: int
    classes: tuple[int, ...] = ()

    @property
    def in_memory(self) -> bool:
        return not self.classes


@dataclass(frozen=True)
class FunctionAbi:
    """``result``: the aggregate returned through memory (wasm32's hidden
    first parameter), or None; ``params``: per C parameter, None for one
    passed as it is (a scalar, a single-element aggregate) or the Aggregate
    passed as a pointer to a copy."""

    result: Aggregate | None
    params: tuple[Aggregate | None, ...]

    @property
    def wasm_param_count(self) -> int:
        return len(self.params) + (1 if self.result is not None else 0)


def classify(size: int, fields) -> tuple[int, ...]:
    """System V classes of an aggregate of ``size`` bytes whose scalar
    fields are ``fields`` ((byte offset, byte size, floating point?), nested
    members and array elements flattened); () for MEMORY (more than 16
    bytes, or a field not aligned to its size, psABI 3.2.3 rule 1)."""
    if size > MAX_REGISTER_AGGREGATE or size <= 0:
        return ()
    classes = [0] * ((size + 7) // 8)
    for offset, field_size, floating in fields:
        if field_size and offset % min(field_size, 8):
            return ()
        for eightbyte in range(offset // 8, (offset + max(field_size, 1) - 1) // 8 + 1):
            if eightbyte >= len(classes):
                return ()
            if not floating:
                classes[eightbyte] = INTEGER
            elif classes[eightbyte] == 0:
                classes[eightbyte] = SSE
    # An eightbyte with no field (padding only) is passed like the others'
    # class NO_CLASS; gdb treats it as SSE when it merges (amd64_classify_aggregate).
    return tuple(c or SSE for c in classes)


def return_registers(aggregate: Aggregate, data: bytes) -> dict[str, int]:
    """Where System V returns ``aggregate`` (not MEMORY) whose bytes are
    ``data``: register name (rax, rdx, xmm0, xmm1) -> 64-bit value."""
    data = bytes(data).ljust(8 * len(aggregate.classes), b"\0")
    integer, sse = iter(("rax", "rdx")), iter(("xmm0", "xmm1"))
    out = {}
    for k, cls in enumerate(aggregate.classes):
        out[next(integer) if cls == INTEGER else next(sse)] = struct.unpack_from("<Q", data, 8 * k)[0]
    return out


def returned_bytes(aggregate: Aggregate, registers: dict[str, int]) -> bytes:
    """The inverse of :func:`return_registers`: the ``aggregate`` whose
    eightbytes System V returns in ``registers`` (rax, rdx, xmm0, xmm1 ->
    their low 64 bits), as gdb's ``return VALUE`` leaves them."""
    integer, sse = iter(("rax", "rdx")), iter(("xmm0", "xmm1"))
    words = [registers[next(integer) if cls == INTEGER else next(sse)] for cls in aggregate.classes]
    return struct.pack(f"<{len(words)}Q", *[w & (2 ** 64 - 1) for w in words])[:aggregate.size]


def _pack_aggregate(aggregate: Aggregate) -> bytes:
    return struct.pack("<IB", aggregate.size, len(aggregate.classes)) + bytes(aggregate.classes)


def pack_abis(abis: dict[int, FunctionAbi]) -> bytes:
    """The section bytes for ``{image offset: FunctionAbi}``."""
    out = bytearray()
    for offset in sorted(abis):
        abi = abis[offset]
        out += struct.pack("<IB", offset, 1 if abi.result is not None else 0)
        if abi.result is not None:
            out += _pack_aggregate(abi.result)
        out.append(len(abi.params))
        for param in abi.params:
            out += b"\0" if param is None else b"\1" + _pack_aggregate(param)
    return bytes(out)


class AbiSectionError(ValueError):
    """The section is malformed (the message says where)."""


def unpack_abis(data: bytes) -> dict[int, FunctionAbi]:
    """The records of a :data:`SECTION`; raises AbiSectionError."""
    data = bytes(data)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise AbiSectionError(f"{SECTION} truncated at byte {pos}")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    def aggregate() -> Aggregate:
        size, count = take("<IB")
        classes = take(f"<{count}B") if count else ()
        if any(c not in (INTEGER, SSE) for c in classes):
            raise AbiSectionError(f"{SECTION}: bad eightbyte class in {classes} at byte {pos}")
        return Aggregate(size, tuple(classes))

    out = {}
    while pos < len(data):
        offset, has_result = take("<IB")
        result = aggregate() if has_result else None
        (count,) = take("<B")
        params = tuple(aggregate() if take("<B")[0] else None for _ in range(count))
        out[offset] = FunctionAbi(result, params)
    return out
