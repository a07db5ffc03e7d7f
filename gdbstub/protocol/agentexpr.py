"""GDB agent expressions: parse, verify and (as a reference) evaluate the bytecode.

gdb sends breakpoint conditions and dprintf commands as agent-expression
bytecode (GDB manual, appendix "Agent Expressions", sections "General Bytecode
Design" and "Bytecode Descriptions"), inside ``Z0,ADDR,KIND;X LEN,BYTES`` and
``;cmds:PERSIST,X LEN,BYTES`` (gdbstub.protocol.packets).  This module is pure:
it turns bytes into a verified :class:`AgentExpr` or raises
:class:`AgentExprError` naming the problem.  Nothing is installed for an
expression that does not verify.

The machine (manual, "General Bytecode Design"): a stack of 64-bit values,
bytecode operands big-endian, jump targets absolute offsets from the start of
the expression.  Values are unsigned 64-bit words here (two's complement);
``ext n`` sign-extends from bit n-1, ``zero_ext n`` clears bits n and up,
``refN`` reads N bits zero-extended.

Verification (what the manual asks an agent to check, "Bytecode
Descriptions" intro, and what gdbserver's ax.c checks at run time, done here
once at insert time like a JVM verifier):

* every opcode is known and supported, and its operands fit in the bytecode;
* every jump lands on the start of an instruction;
* the stack depth at each instruction is the same along every path that
  reaches it, never below what the instruction pops (underflow) and never
  above :data:`MAX_STACK` (overflow);
* every path ends with ``end``: running off the end is refused;
* the bytecode is at most :data:`MAX_LENGTH` bytes.

Backward jumps are allowed (gdb itself never emits them for C conditions, but
the manual allows loops); evaluation bounds them (:data:`MAX_BACKWARD_JUMPS`):
a condition that runs out of its budget counts as true ("the stop says why"),
like any other evaluation error (gdbserver's rule: a condition that cannot be
evaluated stops).

Unsupported on purpose, with a message: the floating-point group (``float``,
``ref_float``, ``ref_double``, ``ref_long_double``, ``l_to_d``, ``d_to_l``:
gdb never emits them and gdbserver does not implement them either).  The
trace-collection opcodes (``trace``, ``trace_quick``, ``trace16``,
``tracev``, ``tracenz``) are accepted with their stack effects and collect
nothing: a breakpoint condition has no trace frame to collect into.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from .encoding import ProtocolError

__all__ = [
    "AgentExprError",
    "AgentExpr",
    "EvalOutcome",
    "Instruction",
    "Op",
    "MAX_LENGTH",
    "MAX_STACK",
    "MAX_BACKWARD_JUMPS",
    "parse_agent_expr",
    "evaluate",
    "format_printf",
]

#: Longest bytecode accepted (gdbserver refuses nothing shorter in practice;
#: gdb's own conditions are tens of bytes).
MAX_LENGTH = 4096
#: Deepest stack allowed (gdbserver's STACK_MAX is 100).
MAX_STACK = 100
#: Backward jumps one evaluation may take before it gives up (counts as true).
MAX_BACKWARD_JUMPS = 10_000
#: Trace state variables a condition may use with getv/setv (numbers 0..N-1).
MAX_TRACE_STATE_VARIABLES = 64

MASK64 = (1 << 64) - 1


class AgentExprError(ProtocolError):
    """Bytecode that does not verify; the message names the offset and why."""


class Op(enum.IntEnum):
    """Opcodes of GDB's agent expressions (GDB manual, "Bytecode Descriptions")."""

    FLOAT = 0x01
    ADD = 0x02
    SUB = 0x03
    MUL = 0x04
    DIV_SIGNED = 0x05
    DIV_UNSIGNED = 0x06
    REM_SIGNED = 0x07
    REM_UNSIGNED = 0x08
    LSH = 0x09
    RSH_SIGNED = 0x0A
    RSH_UNSIGNED = 0x0B
    TRACE = 0x0C
    TRACE_QUICK = 0x0D
    LOG_NOT = 0x0E
    BIT_AND = 0x0F
    BIT_OR = 0x10
    BIT_XOR = 0x11
    BIT_NOT = 0x12
    EQUAL = 0x13
    LESS_SIGNED = 0x14
    LESS_UNSIGNED = 0x15
    EXT = 0x16
    REF8 = 0x17
    REF16 = 0x18
    REF32 = 0x19
    REF64 = 0x1A
    REF_FLOAT = 0x1B
    REF_DOUBLE = 0x1C
    REF_LONG_DOUBLE = 0x1D
    L_TO_D = 0x1E
    D_TO_L = 0x1F
    IF_GOTO = 0x20
    GOTO = 0x21
    CONST8 = 0x22
    CONST16 = 0x23
    CONST32 = 0x24
    CONST64 = 0x25
    REG = 0x26
    END = 0x27
    DUP = 0x28
    POP = 0x29
    ZERO_EXT = 0x2A
    SWAP = 0x2B
    GETV = 0x2C
    SETV = 0x2D
    TRACEV = 0x2E
    TRACENZ = 0x2F
    TRACE16 = 0x30
    PICK = 0x32
    ROT = 0x33
    PRINTF = 0x34


#: op -> (operand bytes, pops, pushes); PRINTF's operands and pops are
#: computed from its own operands (numargs, string).
_SHAPES: dict[Op, tuple[int, int, int]] = {
    Op.ADD: (0, 2, 1), Op.SUB: (0, 2, 1), Op.MUL: (0, 2, 1),
    Op.DIV_SIGNED: (0, 2, 1), Op.DIV_UNSIGNED: (0, 2, 1),
    Op.REM_SIGNED: (0, 2, 1), Op.REM_UNSIGNED: (0, 2, 1),
    Op.LSH: (0, 2, 1), Op.RSH_SIGNED: (0, 2, 1), Op.RSH_UNSIGNED: (0, 2, 1),
    Op.TRACE: (0, 2, 0), Op.TRACE_QUICK: (1, 1, 1),
    Op.LOG_NOT: (0, 1, 1), Op.BIT_AND: (0, 2, 1), Op.BIT_OR: (0, 2, 1),
    Op.BIT_XOR: (0, 2, 1), Op.BIT_NOT: (0, 1, 1),
    Op.EQUAL: (0, 2, 1), Op.LESS_SIGNED: (0, 2, 1), Op.LESS_UNSIGNED: (0, 2, 1),
    Op.EXT: (1, 1, 1),
    Op.REF8: (0, 1, 1), Op.REF16: (0, 1, 1), Op.REF32: (0, 1, 1), Op.REF64: (0, 1, 1),
    Op.IF_GOTO: (2, 1, 0), Op.GOTO: (2, 0, 0),
    Op.CONST8: (1, 0, 1), Op.CONST16: (2, 0, 1), Op.CONST32: (4, 0, 1), Op.CONST64: (8, 0, 1),
    Op.REG: (2, 0, 1), Op.END: (0, 0, 0),
    Op.DUP: (0, 1, 2), Op.POP: (0, 1, 0), Op.ZERO_EXT: (1, 1, 1), Op.SWAP: (0, 2, 2),
    Op.GETV: (2, 0, 1), Op.SETV: (2, 1, 1), Op.TRACEV: (2, 0, 0), Op.TRACENZ: (0, 2, 0),
    Op.TRACE16: (2, 1, 1), Op.ROT: (0, 3, 3),
}

_UNSUPPORTED = {
    Op.FLOAT: "floating-point bytecodes are not supported (gdb does not emit them)",
    Op.REF_FLOAT: "floating-point bytecodes are not supported (gdb does not emit them)",
    Op.REF_DOUBLE: "floating-point bytecodes are not supported (gdb does not emit them)",
    Op.REF_LONG_DOUBLE: "floating-point bytecodes are not supported (gdb does not emit them)",
    Op.L_TO_D: "floating-point bytecodes are not supported (gdb does not emit them)",
    Op.D_TO_L: "floating-point bytecodes are not supported (gdb does not emit them)",
}


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction.  ``operand`` is the integer operand (register
    number, constant, jump target, bit count, variable number; for ``pick``
    the depth), None when the opcode has none; for ``printf`` it is
    ``(numargs, format bytes without the final NUL)``.  ``depth`` is the
    verified stack depth before the instruction runs."""

    pc: int
    op: Op
    operand: object
    size: int
    depth: int = 0

    @property
    def next_pc(self) -> int:
        return self.pc + self.size

    @property
    def pops(self) -> int:
        if self.op is Op.PICK:
            return self.operand + 1  # type: ignore[operator]
        if self.op is Op.PRINTF:
            return self.operand[0] + 2  # type: ignore[index]
        return _SHAPES[self.op][1]

    @property
    def pushes(self) -> int:
        if self.op is Op.PICK:
            return self.operand + 2  # type: ignore[operator]
        if self.op is Op.PRINTF:
            return 0
        return _SHAPES[self.op][2]


@dataclass(frozen=True)
class AgentExpr:
    """A verified expression: instructions in bytecode order (each reachable
    one carries its stack depth), and the deepest stack it can build."""

    bytecode: bytes
    instructions: tuple[Instruction, ...]
    max_depth: int
    registers: frozenset[int] = field(default_factory=frozenset)
    has_printf: bool = False

    def at(self, pc: int) -> Instruction:
        return self.instructions[self._index[pc]]

    @property
    def _index(self) -> dict[int, int]:
        index = self.__dict__.get("_pc_index")
        if index is None:
            index = {ins.pc: k for k, ins in enumerate(self.instructions)}
            object.__setattr__(self, "_pc_index", index)
        return index

    def disassemble(self) -> str:
        """One line per instruction, as the manual names them (for logs and `inspect`)."""
        lines = []
        for ins in self.instructions:
            operand = ""
            if ins.op is Op.PRINTF:
                operand = f" {ins.operand[0]} {ins.operand[1]!r}"  # type: ignore[index]
            elif ins.operand is not None:
                operand = f" {ins.operand}"
            lines.append(f"{ins.pc:4d}: {ins.op.name.lower()}{operand}")
        return "\n".join(lines)


def _decode(bytecode: bytes) -> list[Instruction]:
    """Bytes -> instructions (no stack analysis yet)."""
    out = []
    pc = 0
    n = len(bytecode)
    while pc < n:
        byte = bytecode[pc]
        try:
            op = Op(byte)
        except ValueError:
            raise AgentExprError(f"unknown opcode {byte:#04x} at offset {pc}") from None
        if op in _UNSUPPORTED:
            raise AgentExprError(f"opcode {op.name.lower()} ({byte:#04x}) at offset {pc}: {_UNSUPPORTED[op]}")
        if op is Op.PRINTF:
            # printf numargs(1) len(2, big-endian, counts the final NUL) string
            if pc + 4 > n:
                raise AgentExprError(f"printf at offset {pc} is truncated")
            numargs = bytecode[pc + 1]
            length = int.from_bytes(bytecode[pc + 2 : pc + 4], "big")
            end = pc + 4 + length
            if length == 0 or end > n:
                raise AgentExprError(f"printf at offset {pc}: format string of {length} bytes runs past the end")
            text = bytecode[pc + 4 : end]
            if text[-1] != 0:
                raise AgentExprError(f"printf at offset {pc}: format string is not NUL-terminated")
            out.append(Instruction(pc, op, (numargs, _unescape_format(bytes(text[:-1]), pc)), 4 + length))
            pc = end
            continue
        if op is Op.PICK:
            width = 1
        else:
            width = _SHAPES[op][0]
        if pc + 1 + width > n:
            raise AgentExprError(f"{op.name.lower()} at offset {pc} needs {width} operand bytes; the bytecode ends")
        operand = int.from_bytes(bytecode[pc + 1 : pc + 1 + width], "big") if width else None
        if op in (Op.EXT, Op.ZERO_EXT) and not 1 <= operand <= 64:  # type: ignore[operator]
            raise AgentExprError(f"{op.name.lower()} at offset {pc}: bit count {operand} is not in 1..64")
        if op in (Op.GETV, Op.SETV, Op.TRACEV) and operand >= MAX_TRACE_STATE_VARIABLES:  # type: ignore[operator]
            raise AgentExprError(f"{op.name.lower()} at offset {pc}: trace state variable {operand} "
                                 f"(this agent has {MAX_TRACE_STATE_VARIABLES}: 0..{MAX_TRACE_STATE_VARIABLES - 1})")
        out.append(Instruction(pc, op, operand, 1 + width))
        pc += 1 + width
    return out


#: The backslash escapes of a printf format (gdb sends the format as typed;
#: gdbserver's agent expands them as gdbsupport's format_pieces does).
_ESCAPES = {ord("\\"): b"\\", ord("a"): b"\a", ord("b"): b"\b", ord("e"): b"\x1b", ord("f"): b"\f",
            ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("v"): b"\v", ord('"'): b'"'}


def _unescape_format(text: bytes, pc: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == 0x5C:  # backslash
            if i + 1 >= len(text) or text[i + 1] not in _ESCAPES:
                what = chr(text[i + 1]) if i + 1 < len(text) else "at the end"
                raise AgentExprError(f"printf at offset {pc}: unrecognized escape \\{what} in the format")
            out += _ESCAPES[text[i + 1]]
            i += 2
        else:
            out.append(text[i])
            i += 1
    if 0 in out:
        raise AgentExprError(f"printf at offset {pc}: the format contains a NUL byte")
    return bytes(out)


def parse_agent_expr(bytecode: bytes, *, register_ok: Callable[[int], bool] | None = None) -> AgentExpr:
    """Decodes and verifies ``bytecode``; :class:`AgentExprError` if it is not
    a well-formed expression.  ``register_ok(n)`` may refuse register numbers
    the caller cannot provide."""
    if not bytecode:
        raise AgentExprError("empty agent expression")
    if len(bytecode) > MAX_LENGTH:
        raise AgentExprError(f"agent expression of {len(bytecode)} bytes is too long (at most {MAX_LENGTH})")
    decoded = _decode(bytes(bytecode))
    index = {ins.pc: k for k, ins in enumerate(decoded)}
    depths: dict[int, int] = {}
    registers = set()
    work = [(0, 0)]
    max_depth = 0
    while work:
        pc, depth = work.pop()
        if pc not in index:
            if pc >= len(bytecode):
                raise AgentExprError(f"execution runs past the end of the expression (offset {pc}) without 'end'")
            raise AgentExprError(f"jump to offset {pc}, which is not the start of an instruction")
        seen = depths.get(pc)
        if seen is not None:
            if seen != depth:
                raise AgentExprError(f"offset {pc} is reached with stack depths {seen} and {depth}")
            continue
        depths[pc] = depth
        ins = decoded[index[pc]]
        if ins.op is Op.PICK and depth < ins.operand + 1:  # type: ignore[operator]
            raise AgentExprError(f"stack underflow at offset {pc}: pick {ins.operand} needs "
                                 f"{ins.operand + 1} values, the stack has {depth}")  # type: ignore[operator]
        if depth < ins.pops:
            raise AgentExprError(f"stack underflow at offset {pc}: {ins.op.name.lower()} needs {ins.pops} "
                                 f"value(s), the stack has {depth}")
        after = depth - ins.pops + ins.pushes
        if after > MAX_STACK:
            raise AgentExprError(f"stack overflow at offset {pc}: depth {after} exceeds {MAX_STACK}")
        max_depth = max(max_depth, after)
        if ins.op is Op.REG:
            if register_ok is not None and not register_ok(ins.operand):  # type: ignore[arg-type]
                raise AgentExprError(f"reg {ins.operand} at offset {pc}: register {ins.operand} cannot be "
                                     f"read by a condition evaluated in the target")
            registers.add(ins.operand)
        if ins.op is Op.END:
            continue
        if ins.op in (Op.GOTO, Op.IF_GOTO):
            target = ins.operand
            if target >= len(bytecode) or target not in index:  # type: ignore[operator]
                raise AgentExprError(f"{ins.op.name.lower()} at offset {pc} jumps to offset {target}, "
                                     f"{'outside the expression' if target >= len(bytecode) else 'not an instruction start'}")  # type: ignore[operator]
            work.append((target, after))  # type: ignore[arg-type]
            if ins.op is Op.GOTO:
                continue
        work.append((ins.next_pc, after))
    instructions = tuple(
        Instruction(ins.pc, ins.op, ins.operand, ins.size, depths.get(ins.pc, -1)) for ins in decoded)
    return AgentExpr(bytes(bytecode), instructions, max_depth, frozenset(registers),
                     any(ins.op is Op.PRINTF for ins in decoded))


# --------------------------------------------------------------------------
# Reference evaluator
# --------------------------------------------------------------------------


@dataclass
class EvalOutcome:
    """What one evaluation gave: the top of the stack at ``end`` (0 when the
    stack was empty), or ``error`` (then a condition counts as true) with
    ``fault_address`` for an unreadable address; ``printed`` the text of
    every printf, in order."""

    value: int = 0
    error: str | None = None
    fault_address: int | None = None
    printed: list[bytes] = field(default_factory=list)

    @property
    def condition_true(self) -> bool:
        return self.error is not None or self.value != 0


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value -= 1 << bits
    return value & MASK64


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def evaluate(expr: AgentExpr, read_register: Callable[[int], int],
             read_memory: Callable[[int, int], int | None],
             trace_state: dict[int, int] | None = None,
             read_string: Callable[[int], bytes | None] | None = None) -> EvalOutcome:
    """Runs ``expr`` the slow, obvious way: the reference the compiled code is
    checked against.  ``read_memory(address, size)`` returns the value (little
    endian, zero-extended) or None when unreadable."""
    tsv = trace_state if trace_state is not None else {}
    stack: list[int] = []
    outcome = EvalOutcome()
    pc = 0
    backward = 0
    while True:
        ins = expr.at(pc)
        op = ins.op
        next_pc = ins.next_pc
        if op is Op.END:
            outcome.value = stack[-1] if stack else 0
            return outcome
        if op in (Op.ADD, Op.SUB, Op.MUL, Op.BIT_AND, Op.BIT_OR, Op.BIT_XOR, Op.EQUAL,
                  Op.LESS_SIGNED, Op.LESS_UNSIGNED, Op.LSH, Op.RSH_SIGNED, Op.RSH_UNSIGNED,
                  Op.DIV_SIGNED, Op.DIV_UNSIGNED, Op.REM_SIGNED, Op.REM_UNSIGNED):
            b = stack.pop()
            a = stack.pop()
            if op is Op.ADD:
                r = a + b
            elif op is Op.SUB:
                r = a - b
            elif op is Op.MUL:
                r = a * b
            elif op is Op.BIT_AND:
                r = a & b
            elif op is Op.BIT_OR:
                r = a | b
            elif op is Op.BIT_XOR:
                r = a ^ b
            elif op is Op.EQUAL:
                r = int(a == b)
            elif op is Op.LESS_SIGNED:
                r = int(_signed(a) < _signed(b))
            elif op is Op.LESS_UNSIGNED:
                r = int(a < b)
            elif op is Op.LSH:
                # x86 semantics for counts >= 64 would differ; the manual leaves
                # it open, both sides use the count modulo 64.
                r = a << (b & 63)
            elif op is Op.RSH_SIGNED:
                r = _signed(a) >> (b & 63)
            elif op is Op.RSH_UNSIGNED:
                r = a >> (b & 63)
            else:
                if b == 0:
                    outcome.error = "division by zero"
                    return outcome
                if op is Op.DIV_UNSIGNED:
                    r = a // b
                elif op is Op.REM_UNSIGNED:
                    r = a % b
                else:
                    sa, sb = _signed(a), _signed(b)
                    q = abs(sa) // abs(sb)
                    if (sa < 0) != (sb < 0):
                        q = -q
                    r = q if op is Op.DIV_SIGNED else sa - q * sb
            stack.append(r & MASK64)
        elif op is Op.LOG_NOT:
            stack.append(int(stack.pop() == 0))
        elif op is Op.BIT_NOT:
            stack.append(~stack.pop() & MASK64)
        elif op is Op.EXT:
            stack.append(_sext(stack.pop(), ins.operand))  # type: ignore[arg-type]
        elif op is Op.ZERO_EXT:
            stack.append(stack.pop() & ((1 << ins.operand) - 1))  # type: ignore[operator]
        elif op in (Op.REF8, Op.REF16, Op.REF32, Op.REF64):
            size = {Op.REF8: 1, Op.REF16: 2, Op.REF32: 4, Op.REF64: 8}[op]
            address = stack.pop()
            value = read_memory(address, size)
            if value is None:
                outcome.error = f"cannot read {size} bytes at {address:#x}"
                outcome.fault_address = address
                return outcome
            stack.append(value & MASK64)
        elif op in (Op.CONST8, Op.CONST16, Op.CONST32, Op.CONST64):
            stack.append(ins.operand)  # type: ignore[arg-type]
        elif op is Op.REG:
            stack.append(read_register(ins.operand) & MASK64)  # type: ignore[arg-type]
        elif op is Op.DUP:
            stack.append(stack[-1])
        elif op is Op.POP:
            stack.pop()
        elif op is Op.SWAP:
            stack[-1], stack[-2] = stack[-2], stack[-1]
        elif op is Op.PICK:
            stack.append(stack[-1 - ins.operand])  # type: ignore[operator]
        elif op is Op.ROT:
            # "a b c => c a b": the top goes third, the others move up.
            c, b_, a_ = stack.pop(), stack.pop(), stack.pop()
            stack.extend((c, a_, b_))
        elif op is Op.GETV:
            stack.append(tsv.get(ins.operand, 0))  # type: ignore[arg-type]
        elif op is Op.SETV:
            tsv[ins.operand] = stack[-1]  # type: ignore[index]
        elif op in (Op.TRACE, Op.TRACENZ):
            stack.pop()
            stack.pop()
        elif op in (Op.TRACE_QUICK, Op.TRACE16, Op.TRACEV):
            pass
        elif op is Op.PRINTF:
            numargs, fmt = ins.operand  # type: ignore[misc]
            stack.pop()  # function
            stack.pop()  # channel
            args = [stack.pop() for _ in range(numargs)]
            outcome.printed.append(format_printf(fmt, args, read_string))
        elif op in (Op.GOTO, Op.IF_GOTO):
            take = True if op is Op.GOTO else stack.pop() != 0
            if take:
                if ins.operand <= pc:  # type: ignore[operator]
                    backward += 1
                    if backward > MAX_BACKWARD_JUMPS:
                        outcome.error = f"more than {MAX_BACKWARD_JUMPS} backward jumps (a loop?)"
                        return outcome
                next_pc = ins.operand  # type: ignore[assignment]
        else:  # pragma: no cover - every verified opcode is handled above
            raise AssertionError(op)
        pc = next_pc


def format_printf(fmt: bytes, args: list[int], read_string: Callable[[int], bytes | None] | None = None) -> bytes:
    """The agent's printf: C conversions over 64-bit argument words (GDB manual,
    "Bytecode Descriptions", printf; gdb only sends formats it has checked).
    Supported: %d %i %u %x %X %o %c %s %p %% with flags, width, precision and
    the h/hh/l/ll/z/j/t length modifiers; ``%s`` reads the string through
    ``read_string`` ("<unreadable>" when it cannot)."""
    out = bytearray()
    i = 0
    k = 0
    n = len(fmt)
    while i < n:
        ch = fmt[i]
        if ch != 0x25:  # '%'
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and fmt[j] in b"-+ #0":
            j += 1
        while j < n and (fmt[j] in b"0123456789."):
            j += 1
        spec_start = j
        while j < n and fmt[j] in b"hlzjtqL":
            j += 1
        if j >= n:
            out += fmt[i:]
            break
        conv = chr(fmt[j])
        flags_width = fmt[i + 1 : spec_start].decode()
        length = fmt[spec_start:j].decode()
        j += 1
        if conv == "%":
            out += b"%"
            i = j
            continue
        value = args[k] if k < len(args) else 0
        k += 1
        bits = 64 if length in ("l", "ll", "z", "j", "t", "q", "L") else 16 if length == "h" else 8 if length == "hh" else 32
        if conv in "di":
            text = ("%" + flags_width + "d") % _signed(_sext(value, bits))
        elif conv == "o" and "#" in flags_width:
            # C's alternate octal form is a leading 0 (Python's is "0o").
            text = ("%" + flags_width.replace("#", "") + "s") % ("0%o" % (value & ((1 << bits) - 1)))
        elif conv in "uxXo":
            text = ("%" + flags_width + conv) % (value & ((1 << bits) - 1))
        elif conv == "c":
            text = ("%" + flags_width + "c") % chr(value & 0xFF)
        elif conv == "p":
            text = ("%" + flags_width + "s") % f"{value:#x}"
        elif conv == "s":
            data = read_string(value) if read_string is not None else None
            text = ("%" + flags_width + "s") % (data.decode("utf-8", "replace") if data is not None else "<unreadable>")
        else:
            text = fmt[i:j].decode("latin-1")
        out += text.encode("utf-8", "replace")
        i = j
    return bytes(out)
