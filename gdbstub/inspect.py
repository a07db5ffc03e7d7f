"""``wasm-gdbstub inspect``: what the debug-mode compiler made of a module.

For every function (or one), a header from the frame table (wasm index, names,
native range, frame size, local slots) and the capstone disassembly of its code
(Intel syntax), interleaved with the frame table's sequence points (the wasm
instruction each one stands before, its kind and operand-stack depth, and the
registers that mirror frame slots after it) and its
patch sites (the 5-byte ``nop dword ptr [rax + rax]`` a breakpoint turns into a
call), with what a watchpoint's veneer at that site checks (the access the
instruction makes: where its address operand lives and its size,
codemem.sitehooks.access_sites).  Addresses are image offsets: the module is compiled but never
instantiated, and EngineCode has no executable address to show (DESIGN.md,
"Code memory").
"""
from __future__ import annotations

import logging
import re
import struct
import sys
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import TextIO

import capstone

import codemem
from codemem import CompileError
from codemem.abi import TRAP_MESSAGES, TrapCode
from codemem.frametable import HARDWARE_GPR_NAMES, MirrorSource, SequencePointKind
from codemem.sitehooks import access_sites
from codemem.wasm.instructions import Instr
from codemem.wasm.opcodes import OPCODES, Imm
from codemem.wasm.types import ExternKind, ValType
from codemem.x64.compiler import site_in_instruction

log = logging.getLogger(__name__)

__all__ = ["inspect_module", "instruction_text", "resolve_function"]

EXIT_USAGE = 2
_NUMBER_RE = re.compile(r"0x[0-9a-f]+|[0-9]+")
_NAMES_LISTED = 8
_KIND_TEXT = {
    SequencePointKind.INSTRUCTION: "instruction",
    SequencePointKind.RETURN_POINT: "return point",
    SequencePointKind.ENTRY: "entry",
}

_CONTEXT_MIRROR_TEXT = {
    MirrorSource.MEMORY0_BASE: "memory0.base",
    MirrorSource.MEMORY0_LENGTH: "memory0.length",
}


def _type_name(code: int) -> str:
    try:
        return ValType(code).wat_name
    except ValueError:
        return f"type{code:#x}"


def _float_text(bits: int, width: int) -> str:
    fmt, ifmt = ("<f", "<I") if width == 32 else ("<d", "<Q")
    value = struct.unpack(fmt, struct.pack(ifmt, bits))[0]
    return repr(value)


def instruction_text(ins: Instr, info=None) -> str:
    """A wasm instruction in (roughly) text-format spelling: ``i32.add``,
    ``local.get 0``, ``call 2 <square>``, ``i32.load offset=12 align=4``.
    ``info`` (a ModuleInfo), when given, adds function names to calls."""
    name, imm = ins.name, ins.imm
    if imm is None:
        return name
    kind = OPCODES[ins.op].imm if ins.op in OPCODES else None
    if kind == Imm.MEMARG:
        align, offset = imm
        parts = [name]
        if offset:
            parts.append(f"offset={offset}")
        parts.append(f"align={1 << align}")
        return " ".join(parts)
    if kind == Imm.FUNC:
        fname = info.func_name(imm) if info is not None else None
        return f"{name} {imm}" + (f" <{fname}>" if fname else "")
    if kind == Imm.F32:
        return f"{name} {_float_text(imm, 32)}"
    if kind == Imm.F64:
        return f"{name} {_float_text(imm, 64)}"
    if kind == Imm.BLOCKTYPE:
        if isinstance(imm, ValType):
            return f"{name} (result {imm.wat_name})"
        return f"{name} (type {imm})"
    if kind == Imm.BR_TABLE:
        labels, default = imm
        return " ".join([name, *map(str, labels), str(default)])
    if kind == Imm.CALL_INDIRECT:
        type_index, table_index = imm
        return f"{name} {table_index} (type {type_index})"
    if kind in (Imm.SELECT_T,):
        return f"{name} (result {' '.join(t.wat_name for t in imm)})"
    if kind == Imm.REFTYPE:
        return f"{name} {'func' if imm == ValType.FUNCREF else 'extern'}"
    if kind in (Imm.MEMORY, Imm.MEMORY_COPY):
        return name  # the memory index is always 0 in wasm 2.0
    if isinstance(imm, tuple):
        return " ".join([name, *map(str, imm)])
    return f"{name} {imm}"


def _function_names(info, func_index: int) -> list[str]:
    """Every name of a function: name-section name, then export names."""
    names = []
    section_name = info.names.functions.get(func_index)
    if section_name:
        names.append(section_name)
    for exp in info.exports:
        if exp.kind == ExternKind.FUNC and exp.index == func_index and exp.name not in names:
            names.append(exp.name)
    return names


def resolve_function(module: codemem.Module, spec: str | int) -> int:
    """The wasm function index ``spec`` names: an export name, a name-section
    name, or an index (``3`` or ``0x3``).  Raises LookupError listing some names."""
    info = module.info
    if isinstance(spec, int):
        index = spec
    else:
        index = None
        for exp in info.exports:
            if exp.kind == ExternKind.FUNC and exp.name == spec:
                index = exp.index
                break
        if index is None:
            for i, name in sorted(info.names.functions.items()):
                if name == spec:
                    index = i
                    break
        if index is None:
            try:
                index = int(spec, 0)
            except ValueError:
                index = None
    if index is None or not 0 <= index < info.num_funcs:
        known = []
        for i in range(info.num_imported_funcs, info.num_funcs):
            known.extend(_function_names(info, i)[:1])
        listed = ", ".join(known[:_NAMES_LISTED]) + (", ..." if len(known) > _NAMES_LISTED else "")
        bound = f"indices {info.num_imported_funcs}..{info.num_funcs - 1}" if info.num_funcs else "no functions"
        raise LookupError(f"no function {spec!r} in {module.name}; known: {listed or 'none'} ({bound})")
    return index


class _Printer:
    def __init__(self, module: codemem.Module, out: TextIO):
        self.module = module
        self.info = module.info
        self.table = module.engine_code.frame_table
        self.out = out
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.md.syntax = capstone.CS_OPT_SYNTAX_INTEL
        # Bytes capstone cannot decode still get a line (".byte 0x..") instead
        # of ending the listing.
        self.md.skipdata = True

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def module_header(self) -> None:
        t, info = self.table, self.info
        h = t.header
        self.line(f"module {self.module.name}: {info.num_funcs} functions "
                  f"({info.num_imported_funcs} imported), code {t.code_size:#x} bytes, "
                  f"{t.num_sites} patch sites")
        self.line(f"  veneers: breakpoint @{h.bp_veneer:#x}, trap @{h.trap_veneer:#x}; "
                  f"addresses are image offsets")
        for imp_index, imp in enumerate(i for i in info.imports if i.kind == ExternKind.FUNC):
            self.line(f"  import function {imp_index}: {imp.module}::{imp.name}")

    def function(self, func_index: int) -> None:
        info, table = self.info, self.table
        record = table.function_by_wasm_index(func_index)
        assert record is not None, f"function {func_index} has no frame-table record"
        names = _function_names(info, func_index)
        title = f"function {func_index}"
        if names:
            title += " " + " / ".join(f'"{n}"' for n in names)
        ftype = info.func_type(func_index)
        self.line()
        self.line(f"{title}  {ftype}")
        self.line(f"  native [{record.native_start:#x}, {record.native_end:#x}) {record.native_size} bytes, "
                  f"frame size {record.frame_size}, operand stack at rbp{record.stack_base:+d}, "
                  f"wasm body @{record.body_wasm_offset:#x}")
        local_names = info.names.locals.get(func_index, {})
        nparams = len(ftype.params)
        for slot in table.locals(record):
            role = "param" if slot.index < nparams else "local"
            label = f" {local_names[slot.index]}" if slot.index in local_names else ""
            self.line(f"  {role} {slot.index}{label}: {_type_name(slot.valtype)} @ [rbp{slot.frame_offset:+d}]")
        self.disassembly(func_index, record)

    @cached_property
    def _accesses(self):
        return access_sites(self.module.engine_code, self.module.wasm)

    @cached_property
    def _targets(self) -> dict[int, str]:
        """Image offsets a call or jump may name, with what is there."""
        h = self.table.header
        targets = {h.bp_veneer: "breakpoint veneer", h.trap_veneer: "trap veneer"}
        for record in self.table.functions():
            names = _function_names(self.info, record.wasm_index)
            targets[record.native_start] = names[0] if names else f"function {record.wasm_index}"
        return targets

    def annotation(self, insn, stub_point):
        """A comment for ``insn`` (call targets, trap stubs), and the sequence
        point a trap stub names (abi.py "Traps": ``lea rsi, [rip + point]``,
        ``mov edi, CODE``, ``call trap_veneer``)."""
        mnemonic, ops = insn.mnemonic, insn.op_str
        if mnemonic == "lea" and ops.startswith("rsi, [rip"):
            disp = ops[len("rsi, [rip"):].rstrip("]").replace(" ", "")
            try:
                target = insn.address + insn.size + (int(disp, 16) if disp else 0)
            except ValueError:
                return "", None
            point = self.table.sequence_point_at_or_before(target)
            if point is not None and point.native_offset == target:
                return f"trap stub for the sequence point at {target:#x} (wasm @{point.wasm_offset:#x})", point
            return "", None
        if mnemonic == "mov" and ops.startswith("edi, ") and stub_point is not None:
            try:
                code = TrapCode(int(ops[len("edi, "):], 0))
            except ValueError:
                return "", None
            return f"trap: {TRAP_MESSAGES.get(code, code.name)}", None
        if mnemonic in ("call", "jmp") and _NUMBER_RE.fullmatch(ops):
            name = self._targets.get(int(ops, 0))  # capstone writes 0 (not 0x0) for address 0
            return (f"<{name}>" if name else ""), None
        return "", None

    def disassembly(self, func_index: int, record) -> None:
        info, table = self.info, self.table
        defined = func_index - info.num_imported_funcs
        instrs = {ins.offset: ins for ins in info.read_body(defined)}
        points = defaultdict(list)
        for point in table.sequence_points(record):
            points[point.native_offset].append(point)
        code = self.module.engine_code.read(record.native_start, record.native_size)
        stub_point = None  # the sequence point a trap stub's `lea rsi` just named
        pending_mirrors = None
        for insn in self.md.disasm(code, record.native_start):
            # A padded site is one instruction whose prefixes come before the
            # site (and its sequence point): compiler._site_bytes.
            anchor = insn.address + (site_in_instruction(bytes(insn.bytes)) or 0)
            for point in points.pop(anchor, ()):
                if point.kind == SequencePointKind.ENTRY:
                    text = "(function entry)"
                else:
                    ins = instrs.get(point.wasm_offset)
                    text = instruction_text(ins, info) if ins is not None else "?"
                stack = " ".join(_type_name(t) for t in point.stack_types)
                depth = f"depth {point.stack_depth}" + (f": {stack}" if stack else "")
                self.line(f"    ; wasm @{point.wasm_offset:#x}  {text}  [{_KIND_TEXT[point.kind]}, {depth}]")
                if point.mirrors or point.context_mirrors:
                    mirrors = [f"{reg}=[rbp{offset:+d}]" for reg, offset in point.mirrors]
                    mirrors += [f"{reg}={_CONTEXT_MIRROR_TEXT[source]}" for reg, source in point.context_mirrors]
                    pending_mirrors = f"    ; register mirrors: {', '.join(mirrors)}"
            site = table.site_index(anchor)
            pending_watch = None
            if site is not None:
                # A carrier site is the instruction itself (codemem.frametable.CarrierStore:
                # a slot store, a local's store, a move or a constant's load whose
                # store is left out), or a NOP naming a slot
                # store when it is deferred (deferred_carrier_bytes).
                patch = table.site(site)
                carried = table.site_carrier(site)
                if carried is None:
                    carrier = ""
                elif patch.deferred:
                    carrier = (f" (a deferred carrier: the store to slot {carried.slot} it names is left out; "
                               "the call performs it)")
                elif carried.kind == "slot":
                    carrier = " (a carrier store: the call replaces it and performs it)"
                elif carried.kind == "producer":
                    carrier = (f" (a producer carrier: {HARDWARE_GPR_NAMES[carried.register]} = "
                               f"{carried.immediate:#x}, then its store to slot {carried.slot}, left out; "
                               "the call replaces it and performs both)")
                elif carried.kind == "local":
                    carrier = (f" (a local carrier: the store to the local at [rbp{carried.disp:+d}]; "
                               "the call replaces it and performs it)")
                else:
                    carrier = (f" (a move carrier: {HARDWARE_GPR_NAMES[carried.target]} = "
                               f"{HARDWARE_GPR_NAMES[carried.register]}; the call replaces it and performs it)")
                self.line(f"    ; patch site #{site}{carrier}")
                access = self._accesses.get(anchor)
                if access is not None:
                    pending_watch = f"    ; watch check: {access.describe()}"
            raw = insn.bytes.hex(" ")
            note, stub_point = self.annotation(insn, stub_point)
            text = f"  {insn.address:#8x}:  {raw:<30} {insn.mnemonic} {insn.op_str}".rstrip()
            self.line(f"{text}  ; {note}" if note else text)
            if pending_watch:
                # What a watchpoint's veneer at this site reads (codemem.sitehooks).
                self.line(pending_watch)
            if pending_mirrors:
                # After the point's first instruction (its patch site in debug
                # code): the registers the code from here on reads as slots.
                self.line(pending_mirrors)
                pending_mirrors = None
        for native_offset, left in sorted(points.items()):
            # A sequence point not at an instruction boundary would be a compiler bug.
            self.line(f"    ; (sequence point at {native_offset:#x} is not at an instruction boundary)")
            log.warning("function %d: sequence point %#x is not at an instruction boundary", func_index,
                        native_offset)


def inspect_module(path: str, func: str | int | None = None, *, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    """Prints the debug-mode compilation of ``path`` to ``out``; returns an exit code.

    ``func`` selects one function (export name, name-section name or index);
    None prints all defined functions.  ``out``/``err`` default to ``sys.stdout``/
    ``sys.stderr`` at call time.  Returns 0, or 2 with a message on ``err`` for an unreadable or invalid module, an unknown
    function, or an imported one (no code).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        wasm = Path(path).read_bytes()
    except OSError as e:
        print(f"Error: cannot read {path}: {e.strerror or e}", file=err)
        return EXIT_USAGE
    try:
        module = codemem.Module(codemem.Engine(debug=True), wasm, name=Path(path).stem)
    except CompileError as e:
        print(f"Error: failed to compile {path}: {e}", file=err)
        return EXIT_USAGE
    info = module.info
    if func is not None:
        try:
            index = resolve_function(module, func)
        except LookupError as e:
            print(f"Error: {e.args[0]}", file=err)
            return EXIT_USAGE
        if index < info.num_imported_funcs:
            imp = [i for i in info.imports if i.kind == ExternKind.FUNC][index]
            print(f"Error: function {index} is imported ({imp.module}::{imp.name}); it has no code here", file=err)
            return EXIT_USAGE
        selected = [index]
    else:
        selected = list(range(info.num_imported_funcs, info.num_funcs))
    printer = _Printer(module, out)
    printer.module_header()
    for index in selected:
        printer.function(index)
    return 0
