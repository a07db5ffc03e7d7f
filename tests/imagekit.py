"""Hand-assembled test images: functions as byte chunks, sites, trap calls.

Lets the foundation tests build EngineCode images (code + frame table) without
the compiler.  A function is a list of chunks:

* ``bytes``: literal machine code
* ``SITE``: a patch site (the 5-byte NOP), padded with 1-byte NOPs first if
  needed so it does not straddle an 8-byte boundary
* ``Trap(code)``: ``mov edi, code; call trap_veneer``
"""
from __future__ import annotations

from dataclasses import dataclass

from codemem.frametable import SITE_DISABLED, FrameTableBuilder, FunctionBuild, SequencePointKind
from codemem.veneer import append_veneers, call_rel32, site_enable_bytes

SITE = "site"


@dataclass(frozen=True)
class Trap:
    code: int


@dataclass
class BuiltImage:
    code: bytes
    table: bytes
    functions: list[int]  # image offset of each function
    sites: list[list[int]]  # image offsets of each function's sites


def build_image(functions: list[list], *, align: int = 16, pad_to: int = 0) -> BuiltImage:
    code = bytearray()
    builder = FrameTableBuilder(debug=True)
    starts, all_sites, trap_fixups, ranges = [], [], [], []
    for index, chunks in enumerate(functions):
        while len(code) % align:
            code.append(0xCC)
        start = len(code)
        sites = []
        for chunk in chunks:
            if chunk == SITE:
                while len(code) % 8 > 3:
                    code.append(0x90)
                sites.append(len(code))
                code += SITE_DISABLED
            elif isinstance(chunk, Trap):
                code += b"\xbf" + chunk.code.to_bytes(4, "little")
                trap_fixups.append(len(code))
                code += b"\xe8\0\0\0\0"
            else:
                code += chunk
        starts.append(start)
        all_sites.append(sites)
        ranges.append((start, len(code) - start, index, sites))
    if pad_to and len(code) < pad_to:
        code += b"\xcc" * (pad_to - len(code))
    layout = append_veneers(code)
    for at in trap_fixups:
        code[at : at + 5] = call_rel32(at, layout.trap_veneer)
    for start, size, index, sites in ranges:
        fb = FunctionBuild(native_start=start, native_size=size, wasm_index=index, frame_size=0)
        for k, site in enumerate(sites):
            kind = SequencePointKind.ENTRY if site == start else SequencePointKind.INSTRUCTION
            fb.seqpoints.append((site, 0x100 * index + k, kind, ()))
            builder.add_site(site, site_enable_bytes(site, layout))
        builder.add_function(fb)
    builder.code_size = len(code)
    builder.bp_veneer, builder.trap_veneer = layout.bp_veneer, layout.trap_veneer
    builder.bp_slot, builder.trap_slot = layout.bp_slot, layout.trap_slot
    return BuiltImage(bytes(code), builder.build(), starts, all_sites)


# -- a few hand-assembled functions (guest ABI: r15 = context, rsi = args/results) --

# add(a, b) -> a + b, with an entry site and a site before the add.
ADD = [
    SITE,
    bytes.fromhex("55"),  # push rbp
    bytes.fromhex("4889e5"),  # mov rbp, rsp
    bytes.fromhex("488b06"),  # mov rax, qword ptr [rsi]
    bytes.fromhex("488b4e08"),  # mov rcx, qword ptr [rsi + 8]
    SITE,
    bytes.fromhex("4801c8"),  # add rax, rcx
    bytes.fromhex("488906"),  # mov qword ptr [rsi], rax
    bytes.fromhex("5d"),  # pop rbp
    bytes.fromhex("c3"),  # ret
]

# spin() -> iterations: loops until a debugger sets rcx != 0 at the loop site.
SPIN = [
    SITE,
    bytes.fromhex("31c9"),  # xor ecx, ecx
    bytes.fromhex("31c0"),  # xor eax, eax
    SITE,  # loop head (image-relative offset must be function start + 9)
    bytes.fromhex("48ffc0"),  # inc rax
    bytes.fromhex("4885c9"),  # test rcx, rcx
    bytes.fromhex("74f3"),  # je loop head
    bytes.fromhex("488906"),  # mov qword ptr [rsi], rax
    bytes.fromhex("c3"),  # ret
]

# trap7(): traps with code 7.
TRAP7 = [SITE, Trap(7), bytes.fromhex("c3")]

# call_host(): calls the host function whose context is at [r15+8] through the
# trampoline address at [r15+16], passing its own args array along.
CALL_HOST = [
    SITE,
    bytes.fromhex("55"),  # push rbp
    bytes.fromhex("4889e5"),  # mov rbp, rsp
    bytes.fromhex("4157"),  # push r15
    bytes.fromhex("4883ec08"),  # sub rsp, 8
    bytes.fromhex("498b4710"),  # mov rax, qword ptr [r15 + 0x10]
    bytes.fromhex("4d8b7f08"),  # mov r15, qword ptr [r15 + 8]
    bytes.fromhex("ffd0"),  # call rax
    SITE,  # return point
    bytes.fromhex("4883c408"),  # add rsp, 8
    bytes.fromhex("415f"),  # pop r15
    bytes.fromhex("5d"),  # pop rbp
    bytes.fromhex("c3"),  # ret
]


class HandStore:
    """A minimal Store for foundation tests: execution context, registry,
    a vmctx ``[sc, hostctx, host_trampoline]`` and an args array."""

    def __init__(self, *, debug: bool = True):
        from codemem.execution import ExecutionContext
        from codemem.native import ffi, lib
        from codemem.registry import ModuleRegistry

        self.ffi = ffi
        self.ctx = ExecutionContext()
        self.registry = ModuleRegistry(debug=debug, store_name=f"test{self.ctx.store_id}")
        self.hostctx = ffi.new("uint64_t[2]", [self.ctx.address, 1])
        self.vmctx = ffi.new(
            "uint64_t[3]",
            [self.ctx.address, int(ffi.cast("uintptr_t", self.hostctx)), lib.cm_host_call_trampoline_address()],
        )
        self.args = ffi.new("uint64_t[8]")
        self.vmctx_address = int(ffi.cast("uintptr_t", self.vmctx))

    def call(self, pc: int, *args: int) -> tuple[int, int]:
        """Runs the function at ``pc``; returns (trap code, args[0] afterwards)."""
        for i, a in enumerate(args):
            self.args[i] = a
        code = self.ctx.enter(pc, self.vmctx_address, int(self.ffi.cast("uintptr_t", self.args)))
        return code, self.args[0]

    def close(self):
        for entry in self.registry.entries():
            self.registry.unregister(entry.engine_code)
        self.ctx.close()
