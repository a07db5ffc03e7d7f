"""The x86-64 register description the native dialect serves to gdb and lldb.

The stub presents an x86-64 GNU/Linux-like target. Register values come from the
*regfile*, the C struct the breakpoint trampoline fills (layout fixed by csrc/,
little-endian, packed, ``REGFILE_SIZE`` = 424 bytes)::

    offset   0  uint64 gpr[16]      rax rbx rcx rdx rsi rdi rbp rsp r8..r15
    offset 128  uint64 rip
    offset 136  uint64 rflags
    offset 144  uint8  xmm[16][16]  xmm0..xmm15
    offset 400  uint32 mxcsr
    offset 404  uint32 pad
    offset 408  uint64 fs_base
    offset 416  uint64 gs_base

What this module provides (pure functions over bytes, no I/O):

- ``REGISTERS``: one :class:`Register` per register, in the order of the remote
  ``g`` packet, which is also target.xml order; a register's ``regnum`` is its
  index there (gdb's and lldb's "remote register number", used by ``p``/``P``).
- ``target_xml()`` for ``qXfer:features:read:target.xml`` (one self-contained
  document, no ``xi:include``), plus lldb's ``qRegisterInfoN``, ``qHostInfo`` and
  ``qProcessInfo`` replies.
- Byte mappings between the regfile and the ``g``/``G``/``p``/``P`` payloads.

The ``g`` layout is that of gdbserver's amd64-linux description with SSE (no AVX):
features ``org.gnu.gdb.i386.core``, ``.sse``, ``.linux`` (orig_rax) and
``.segments`` (fs_base, gs_base), 60 registers, 560 bytes.

Registers the regfile does not hold (segment selectors, x87 stack and control
registers, orig_rax) are *synthesized*: they read as a fixed default and refuse
writes, except a write of the value they already have (so a client restoring a
whole register set after an inferior call, or a ``G`` echoing back a ``g``, is
accepted). fs_base and gs_base come from the regfile but are read-only too: on
a guest thread they are the host thread's TLS bases, which a client must not be
able to move under the host's feet.

Errors: every rejected input raises :class:`RegisterError` (a ``ValueError``)
whose message names the register or the size that was wrong.
"""
from __future__ import annotations

import dataclasses

import logging
import struct
from dataclasses import dataclass
from typing import Iterable

from .protocol.xmltext import quoteattr

log = logging.getLogger(__name__)

__all__ = [
    "REGFILE_SIZE", "G_PACKET_SIZE", "REGISTERS", "Register", "RegisterError",
    "RIP_REGNUM", "RSP_REGNUM", "RBP_REGNUM", "EFLAGS_REGNUM", "ES_REGNUM", "Synthesized",
    "TARGET_TRIPLE", "LLDB_SET_GPR", "LLDB_SET_FPR",
    "register_by_name", "regnum_by_name", "make_regfile",
    "target_xml", "feature_document", "register_info_reply", "host_info_reply",
    "process_info_reply", "regfile_to_g", "g_to_regfile", "read_register", "read_registers",
    "write_register",
]


class RegisterError(ValueError):
    """A register access was refused: unknown register, wrong size, a write to a
    read-only register, or a regfile / ``G`` payload of the wrong length."""


# ---------------------------------------------------------------------------
# The regfile (csrc/ breakpoint trampoline's saved-state struct)
# ---------------------------------------------------------------------------

REGFILE_SIZE = 424
REGFILE_GPR_OFFSET = 0
REGFILE_RIP_OFFSET = 128
REGFILE_RFLAGS_OFFSET = 136
REGFILE_XMM_OFFSET = 144
REGFILE_MXCSR_OFFSET = 400
REGFILE_FS_BASE_OFFSET = 408
REGFILE_GS_BASE_OFFSET = 416

#: gdb's amd64 general register order, which the regfile's gpr[] also uses.
GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

_REGFILE_STRUCT = struct.Struct("<16QQQ256sIIQQ")
assert _REGFILE_STRUCT.size == REGFILE_SIZE


def make_regfile(gpr: Iterable[int] = (0,) * 16, rip: int = 0, rflags: int = 0x202,
                 xmm: Iterable[bytes] = (bytes(16),) * 16, mxcsr: int = 0x1f80,
                 fs_base: int = 0, gs_base: int = 0) -> bytes:
    """Pack a regfile from field values (tests and synthesized stops use it).

    Defaults are the x86-64 reset-ish values a fresh thread has: IF set in
    rflags (bit 1 is always 1) and mxcsr with all exceptions masked (0x1f80).
    """
    gpr = list(gpr)
    xmm = list(xmm)
    if len(gpr) != 16 or len(xmm) != 16 or any(len(x) != 16 for x in xmm):
        raise RegisterError("make_regfile needs 16 gprs and 16 xmm values of 16 bytes")
    return _REGFILE_STRUCT.pack(*gpr, rip, rflags, b"".join(xmm), mxcsr, 0, fs_base, gs_base)


# ---------------------------------------------------------------------------
# The register table
# ---------------------------------------------------------------------------

LLDB_SET_GPR = "General Purpose Registers"
LLDB_SET_FPR = "Floating Point Registers"
_LLDB_SET_IDS = {LLDB_SET_GPR: 0, LLDB_SET_FPR: 1}

FEATURE_CORE = "org.gnu.gdb.i386.core"
FEATURE_SSE = "org.gnu.gdb.i386.sse"
FEATURE_LINUX = "org.gnu.gdb.i386.linux"
FEATURE_SEGMENTS = "org.gnu.gdb.i386.segments"


@dataclass(frozen=True)
class Register:
    """One register as both clients see it.

    ``regnum``: index in target.xml / ``g`` order (the remote number in ``p``/``P``).
    ``offset``: byte offset of its value in the ``g`` payload.
    ``dwarf``: x86-64 psABI DWARF number (None when the psABI assigns none);
    ``ehframe`` is the same numbering on x86-64.
    ``gdb_type`` / ``gdb_group`` / ``feature``: what target.xml says for gdb.
    ``lldb_set`` / ``encoding`` / ``lldb_format`` / ``generic``: lldb's view
    (``generic`` is one of pc, sp, fp, flags, arg1..arg6, or None).
    ``source``: byte offset of the value in the regfile, or None when synthesized
    (then ``default`` holds the bytes it reads as). ``writable``: whether a client
    may change it.
    """

    name: str
    bitsize: int
    regnum: int
    offset: int
    dwarf: int | None
    gdb_type: str
    feature: str
    gdb_group: str | None
    lldb_set: str
    encoding: str
    lldb_format: str
    generic: str | None
    source: int | None
    default: bytes
    writable: bool

    @property
    def size(self) -> int:
        """Size of the value in bytes."""
        return self.bitsize // 8

    @property
    def ehframe(self) -> int | None:
        """eh_frame register number (psABI: equal to the DWARF number on x86-64)."""
        return self.dwarf


def _build_table() -> tuple[Register, ...]:
    # Each row: name, bitsize, dwarf, gdb_type, feature, gdb_group, lldb_set,
    # encoding, lldb_format, generic, regfile source, default value.
    rows: list[tuple] = []
    gpr_dwarf = {"rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5,
                 "rbp": 6, "rsp": 7, **{f"r{i}": i for i in range(8, 16)}}
    # SysV x86-64 argument registers and frame roles, as lldb names them.
    gpr_generic = {"rdi": "arg1", "rsi": "arg2", "rdx": "arg3", "rcx": "arg4",
                   "r8": "arg5", "r9": "arg6", "rsp": "sp", "rbp": "fp"}
    for i, name in enumerate(GPR_NAMES):
        # gdb's 64bit-core.xml types rbp/rsp as data pointers; lldb then shows
        # them with symbol info, like rip (code_ptr).
        gdb_type = "data_ptr" if name in ("rbp", "rsp") else "int64"
        rows.append((name, 64, gpr_dwarf[name], gdb_type, FEATURE_CORE, None, LLDB_SET_GPR,
                     "uint", "hex", gpr_generic.get(name), REGFILE_GPR_OFFSET + 8 * i, None))
    # psABI: DWARF 16 is the return-address column, which is where rip lives.
    rows.append(("rip", 64, 16, "code_ptr", FEATURE_CORE, None, LLDB_SET_GPR,
                 "uint", "hex", "pc", REGFILE_RIP_OFFSET, None))
    # gdb's core feature has a 32-bit eflags; the upper half of rflags is
    # reserved (always zero), so the low 4 bytes of the regfile's rflags are it.
    rows.append(("eflags", 32, 49, "i386_eflags", FEATURE_CORE, None, LLDB_SET_GPR,
                 "uint", "hex", "flags", REGFILE_RFLAGS_OFFSET, None))
    for name, dwarf in (("cs", 51), ("ss", 52), ("ds", 53), ("es", 50), ("fs", 54), ("gs", 55)):
        rows.append((name, 32, dwarf, "int32", FEATURE_CORE, None, LLDB_SET_GPR,
                     "uint", "hex", None, None, bytes(4)))
    for i in range(8):
        # lldb shows 80-bit x87 registers as byte vectors (that is what its own
        # lldb-server reports, and what it infers for gdb's i387_ext type).
        rows.append((f"st{i}", 80, 33 + i, "i387_ext", FEATURE_CORE, None, LLDB_SET_FPR,
                     "vector", "vector-uint8", None, None, bytes(10)))
    # x87 control registers as FNINIT leaves them (Intel SDM vol. 1, ch. 8, FINIT):
    # control word 0x37f, tag word 0xffff (all stack slots empty), rest zero.
    # gdb's i387 layer reads fstat/ftag to label st0-7, so "empty" is the
    # truthful answer for a thread that never touched the x87 unit.
    x87_control = (("fctrl", 65, 0x37F), ("fstat", 66, 0), ("ftag", None, 0xFFFF),
                   ("fiseg", None, 0), ("fioff", None, 0), ("foseg", None, 0),
                   ("fooff", None, 0), ("fop", None, 0))
    for name, dwarf, value in x87_control:
        rows.append((name, 32, dwarf, "int", FEATURE_CORE, "float", LLDB_SET_FPR,
                     "uint", "hex", None, None, value.to_bytes(4, "little")))
    for i in range(16):
        rows.append((f"xmm{i}", 128, 17 + i, "vec128", FEATURE_SSE, None, LLDB_SET_FPR,
                     "vector", "vector-uint8", None, REGFILE_XMM_OFFSET + 16 * i, None))
    rows.append(("mxcsr", 32, 64, "i386_mxcsr", FEATURE_SSE, "vector", LLDB_SET_FPR,
                 "uint", "hex", None, REGFILE_MXCSR_OFFSET, None))
    # gdb's amd64 GNU/Linux ABI only finishes its setup (syscall numbering,
    # SVR4 link-map offsets) when the tdesc has org.gnu.gdb.i386.linux
    # (amd64-linux-tdep.c), so orig_rax is described even though it is synthesized.
    # It reads as -1 ("not inside a syscall"): gdb writes exactly that whenever
    # it changes the pc (amd64_linux_write_pc), so that write must be accepted.
    rows.append(("orig_rax", 64, None, "int", FEATURE_LINUX, None, LLDB_SET_GPR,
                 "sint", "hex", None, None, (-1).to_bytes(8, "little", signed=True)))
    rows.append(("fs_base", 64, 58, "int", FEATURE_SEGMENTS, None, LLDB_SET_GPR,
                 "uint", "hex", None, REGFILE_FS_BASE_OFFSET, None))
    rows.append(("gs_base", 64, 59, "int", FEATURE_SEGMENTS, None, LLDB_SET_GPR,
                 "uint", "hex", None, REGFILE_GS_BASE_OFFSET, None))

    table = []
    offset = 0
    read_only_sourced = {"fs_base", "gs_base"}
    for regnum, (name, bitsize, dwarf, gdb_type, feature, group, lldb_set, encoding,
                 lldb_format, generic, source, default) in enumerate(rows):
        size = bitsize // 8
        table.append(Register(
            name=name, bitsize=bitsize, regnum=regnum, offset=offset, dwarf=dwarf,
            gdb_type=gdb_type, feature=feature, gdb_group=group, lldb_set=lldb_set,
            encoding=encoding, lldb_format=lldb_format, generic=generic, source=source,
            default=default if default is not None else bytes(size),
            writable=source is not None and name not in read_only_sourced))
        offset += size
    return tuple(table)


REGISTERS: tuple[Register, ...] = _build_table()
G_PACKET_SIZE = sum(r.size for r in REGISTERS)

_BY_NAME = {r.name: r for r in REGISTERS}
# Names clients and humans also use for the same registers.
_ALIASES = {"pc": "rip", "sp": "rsp", "fp": "rbp", "rflags": "eflags",
            "fsbase": "fs_base", "gsbase": "gs_base"}

RIP_REGNUM = _BY_NAME["rip"].regnum
RSP_REGNUM = _BY_NAME["rsp"].regnum
RBP_REGNUM = _BY_NAME["rbp"].regnum
ES_REGNUM = _BY_NAME["es"].regnum
EFLAGS_REGNUM = _BY_NAME["eflags"].regnum


def register_by_name(name: str) -> Register:
    """The register called ``name`` (also accepts pc, sp, fp, rflags).

    Raises RegisterError for an unknown name.
    """
    reg = _BY_NAME.get(_ALIASES.get(name, name))
    if reg is None:
        raise RegisterError(f"no register named {name!r}")
    return reg


def regnum_by_name(name: str) -> int:
    """The remote register number of ``name``; see :func:`register_by_name`."""
    return register_by_name(name).regnum


def _register(regnum: int) -> Register:
    if not 0 <= regnum < len(REGISTERS):
        raise RegisterError(f"no register number {regnum}")
    return REGISTERS[regnum]


# ---------------------------------------------------------------------------
# target.xml
# ---------------------------------------------------------------------------

# Field layouts follow the Intel SDM (vol. 1, 3.4.3 EFLAGS; 10.2.3 MXCSR), and
# the type names are the ones gdb's own i386 features use, so gdb's printers
# (e.g. "[ IF ZF ]") apply.
_EFLAGS_FIELDS = (("CF", 0), ("", 1), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7),
                  ("TF", 8), ("IF", 9), ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16),
                  ("VM", 17), ("AC", 18), ("VIF", 19), ("VIP", 20), ("ID", 21))
_MXCSR_FIELDS = (("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5),
                 ("DAZ", 6), ("IM", 7), ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11),
                 ("PM", 12), ("FZ", 15))
_VEC128_FIELDS = (("v4_float", "v4f", "ieee_single", 4), ("v2_double", "v2d", "ieee_double", 2),
                  ("v16_int8", "v16i8", "int8", 16), ("v8_int16", "v8i16", "int16", 8),
                  ("v4_int32", "v4i32", "int32", 4), ("v2_int64", "v2i64", "int64", 2))


def _flags_xml(type_id: str, fields: Iterable[tuple[str, int]]) -> list[str]:
    lines = [f'  <flags id="{type_id}" size="4">']
    lines += [f'    <field name="{name}" start="{bit}" end="{bit}"/>' for name, bit in fields]
    lines.append("  </flags>")
    return lines


def _reg_xml(reg: Register) -> str:
    # gdb reads name/bitsize/type/group/regnum and ignores the rest (unknown
    # attributes are only reported with "set debug xml"). lldb
    # (ProcessGDBRemote.cpp ParseRegisters) additionally reads group_id (its
    # register-set name, from <groups>), dwarf_regnum, ehframe_regnum and generic.
    # encoding/format are left for lldb to infer from the gdb type except for
    # the flags types, which lldb cannot map to an encoding by itself.
    attrs = [("name", reg.name), ("bitsize", str(reg.bitsize)), ("type", reg.gdb_type),
             ("regnum", str(reg.regnum))]
    if reg.gdb_group:
        attrs.append(("group", reg.gdb_group))
    attrs.append(("group_id", str(_LLDB_SET_IDS[reg.lldb_set])))
    if reg.gdb_type in ("i386_eflags", "i386_mxcsr"):
        attrs += [("encoding", reg.encoding), ("format", reg.lldb_format)]
    if reg.dwarf is not None:
        attrs += [("dwarf_regnum", str(reg.dwarf)), ("ehframe_regnum", str(reg.ehframe))]
    if reg.generic:
        attrs.append(("generic", reg.generic))
    return "    <reg " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs) + "/>"


#: gdb's x32 core feature (features/i386/x32-core.xml) types rbp, rsp and rip
#: as plain 64-bit integers: its data_ptr and code_ptr are 4 bytes wide there.
_X32_TYPES = {"rbp": "int64", "rsp": "int64", "rip": "uint64"}


def _build_target_xml(x32: bool = False) -> str:
    architecture = "i386:x64-32" if x32 else "i386:x86-64"
    lines = ['<?xml version="1.0"?>',
             '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             '<target version="1.0">',
             f"  <architecture>{architecture}</architecture>",
             "  <osabi>GNU/Linux</osabi>",
             # lldb extension: names for the group_id attributes. gdb skips
             # elements it does not know.
             "  <groups>"]
    lines += [f'    <group id="{set_id}" name="{name}"/>' for name, set_id in _LLDB_SET_IDS.items()]
    lines.append("  </groups>")
    for feature in (FEATURE_CORE, FEATURE_SSE, FEATURE_LINUX, FEATURE_SEGMENTS):
        lines.append(f'  <feature name="{feature}">')
        if feature == FEATURE_CORE:
            lines += ["  " + s for s in _flags_xml("i386_eflags", _EFLAGS_FIELDS)]
        elif feature == FEATURE_SSE:
            for _, vec_id, elem, count in _VEC128_FIELDS:
                lines.append(f'    <vector id="{vec_id}" type="{elem}" count="{count}"/>')
            lines.append('    <union id="vec128">')
            for field, vec_id, _, _ in _VEC128_FIELDS:
                lines.append(f'      <field name="{field}" type="{vec_id}"/>')
            lines.append('      <field name="uint128" type="uint128"/>')
            lines.append("    </union>")
            lines += ["  " + s for s in _flags_xml("i386_mxcsr", _MXCSR_FIELDS)]
        registers = [r for r in REGISTERS if r.feature == feature]
        if x32:
            registers = [dataclasses.replace(r, gdb_type=_X32_TYPES.get(r.name, r.gdb_type)) for r in registers]
        lines += [_reg_xml(r) for r in registers]
        lines.append("  </feature>")
    lines.append("</target>")
    return "\n".join(lines) + "\n"


_TARGET_XML = _build_target_xml()
_TARGET_XML_X32 = _build_target_xml(x32=True)


def target_xml(x32: bool = False) -> str:
    """The whole target description (all features inline), for
    ``qXfer:features:read:target.xml``. ``x32``: gdb's ``i386:x64-32``
    architecture (the same registers, 4-byte pointers; docs/pointers.md)."""
    return _TARGET_XML_X32 if x32 else _TARGET_XML


def feature_document(annex: str, x32: bool = False) -> str | None:
    """The document for a ``qXfer:features:read:ANNEX`` request, or None when
    there is no such annex (the session then replies E00). Only target.xml exists."""
    return target_xml(x32) if annex == "target.xml" else None


# ---------------------------------------------------------------------------
# lldb's qRegisterInfo / qHostInfo / qProcessInfo
# ---------------------------------------------------------------------------

#: The triple qHostInfo and qProcessInfo report to lldb. Its OS part decides
#: lldb's dynamic loader (a ``triple`` key overrides ``ostype``; verified with
#: lldb-22's gdb-remote log). With OS "linux" lldb picks its POSIX-DYLD loader,
#: which starts from qXfer:auxv:read and the main executable's r_debug, neither of
#: which a wasm Store has, and never asks for the library list. With OS
#: "unknown" lldb still uses the SysV x86-64 ABI (unwinding, eax/ax/al
#: sub-registers) and the generic Unix signal numbers (SIGTRAP, SIGILL, SIGFPE,
#: SIGSEGV equal Linux's), and asks qShlibInfoAddr and qXfer:libraries(-svr4),
#: which is where the stub describes its images. gdb is unaffected: it takes the
#: GNU/Linux osabi from target.xml.
TARGET_TRIPLE = "x86_64-pc-unknown"
_TRIPLE_HEX = TARGET_TRIPLE.encode().hex()


def register_info_reply(n: int) -> str | None:
    """lldb's ``qRegisterInfoN`` answer for register ``n``, or None past the end
    (the session replies E45, which lldb takes as "no more registers").

    lldb only asks when target.xml gave it no registers; it describes the same
    ``g`` layout (names, offsets, sizes) as target.xml.
    """
    if not 0 <= n < len(REGISTERS):
        return None
    reg = REGISTERS[n]
    fields = [("name", reg.name), ("bitsize", str(reg.bitsize)), ("offset", str(reg.offset)),
              ("encoding", reg.encoding), ("format", reg.lldb_format), ("set", reg.lldb_set)]
    if reg.name == "eflags":
        fields.append(("alt-name", "rflags"))
    if reg.dwarf is not None:
        fields += [("ehframe", str(reg.ehframe)), ("dwarf", str(reg.dwarf))]
    if reg.generic:
        fields.append(("generic", reg.generic))
    return "".join(f"{k}:{v};" for k, v in fields)


# watchpoint_exceptions_received:after: a watchpoint stop is reported after
# the access (gdbstub.agent), as x86 debug registers do (lldbgdbremote.md).
_HOST_INFO = (f"triple:{_TRIPLE_HEX};ptrsize:8;endian:little;ostype:unknown;vendor:pc;"
              "watchpoint_exceptions_received:after;")


def host_info_reply() -> str:
    """lldb's ``qHostInfo`` answer (triple hex-encoded, as lldb-server sends it;
    see ``TARGET_TRIPLE`` for why the OS is "unknown")."""
    return _HOST_INFO


def process_info_reply(pid: int) -> str:
    """lldb's ``qProcessInfo`` answer for process ``pid`` (hex, like every pid
    in the protocol). Parent, uids and gids are reported as 0: the guest is not
    an OS process."""
    return (f"pid:{pid:x};parent-pid:0;real-uid:0;real-gid:0;effective-uid:0;"
            f"effective-gid:0;triple:{_TRIPLE_HEX};ostype:unknown;"
            "endian:little;ptrsize:8;")


# ---------------------------------------------------------------------------
# Byte mappings
# ---------------------------------------------------------------------------

def _check_regfile(regfile: bytes | bytearray) -> None:
    if len(regfile) != REGFILE_SIZE:
        raise RegisterError(f"regfile is {len(regfile)} bytes, expected {REGFILE_SIZE}")


#: Values of synthesized registers for one stop, instead of their defaults:
#: regnum -> raw bytes (the native dialect's frame base in es, gdbstub.frame_bases).
#: Such a value is a view of the guest's state: writes to it are accepted and
#: change nothing (gdb writes every register back when it pops a frame for
#: ``return`` or restores them after an inferior call, with the values it
#: unwound or saved for another frame).
Synthesized = dict[int, bytes]


def _current(regfile: bytes | bytearray, reg: Register, synthesized: Synthesized | None = None) -> bytes:
    if reg.source is None:
        if synthesized and reg.regnum in synthesized:
            return synthesized[reg.regnum]
        return reg.default
    return bytes(regfile[reg.source:reg.source + reg.size])


def read_register(regfile: bytes | bytearray, regnum: int, synthesized: Synthesized | None = None) -> bytes:
    """The raw little-endian bytes of register ``regnum`` (``p`` reply payload
    before hex encoding)."""
    _check_regfile(regfile)
    return _current(regfile, _register(regnum), synthesized)


#: regnum -> (start, end) of its bytes in the regfile, or its default bytes
#: for a register the regfile does not hold (read_registers: one lookup each).
_REGFILE_SPANS: dict[int, tuple[int, int] | bytes] = {
    reg.regnum: reg.default if reg.source is None else (reg.source, reg.source + reg.size) for reg in REGISTERS}


def read_registers(regfile: bytes | bytearray, regnums: tuple[int, ...]) -> dict[int, bytes]:
    """``{regnum: raw bytes}`` of several registers that the regfile holds
    (a stop reply's expedited ones, at every stop); their defaults for
    synthesized ones.  RegisterError for a regfile of the wrong size or an
    unknown register number."""
    if len(regfile) != REGFILE_SIZE:
        _check_regfile(regfile)
    values = {}
    for regnum in regnums:
        try:
            span = _REGFILE_SPANS[regnum]
        except KeyError:
            raise RegisterError(f"no register number {regnum}") from None
        values[regnum] = span if type(span) is bytes else bytes(regfile[span[0]:span[1]])
    return values


def regfile_to_g(regfile: bytes | bytearray, synthesized: Synthesized | None = None) -> bytes:
    """The ``g`` reply payload (before hex encoding): every register in
    target.xml order at its ``offset``, ``G_PACKET_SIZE`` bytes."""
    _check_regfile(regfile)
    return b"".join(_current(regfile, reg, synthesized) for reg in REGISTERS)


def _check_write(regfile: bytes | bytearray, reg: Register, value: bytes,
                 synthesized: Synthesized | None = None) -> bool:
    """Validate a write; True if it changes the regfile."""
    if len(value) != reg.size:
        raise RegisterError(f"register {reg.name} is {reg.size} bytes, got {len(value)}")
    if reg.writable:
        return True
    if reg.source is None and synthesized and reg.regnum in synthesized:
        return False
    if bytes(value) != _current(regfile, reg, synthesized):
        raise RegisterError(f"register {reg.name} is read-only in this target")
    return False


def write_register(regfile: bytearray, regnum: int, value: bytes, synthesized: Synthesized | None = None) -> None:
    """Apply a ``P`` write of ``value`` (raw little-endian bytes) to ``regfile``.

    Raises RegisterError naming the register when it is read-only and ``value``
    differs from what it reads as, or when ``value`` has the wrong size.
    """
    _check_regfile(regfile)
    reg = _register(regnum)
    if _check_write(regfile, reg, value, synthesized):
        regfile[reg.source:reg.source + reg.size] = value


def g_to_regfile(g: bytes, regfile: bytearray, synthesized: Synthesized | None = None) -> None:
    """Apply a whole ``G`` payload (raw bytes, ``G_PACKET_SIZE`` long) to ``regfile``.

    All or nothing: every register is checked before any byte changes, and a
    change to a read-only register raises RegisterError naming it.
    """
    _check_regfile(regfile)
    if len(g) != G_PACKET_SIZE:
        raise RegisterError(f"G payload is {len(g)} bytes, expected {G_PACKET_SIZE}")
    writes = []
    for reg in REGISTERS:
        value = bytes(g[reg.offset:reg.offset + reg.size])
        if _check_write(regfile, reg, value, synthesized):
            writes.append((reg, value))
    for reg, value in writes:
        regfile[reg.source:reg.source + reg.size] = value
    log.debug("G applied %d writable registers", len(writes))
