"""Agent expressions compiled to x86-64, run in a site's veneer (codemem.sitehooks).

A :class:`ConditionCheck` is one breakpoint condition (a verified
:class:`~gdbstub.protocol.agentexpr.AgentExpr`).  Its code runs inside the
site's veneer with r10 pointing at the saved guest registers
(codemem.sitehooks, "Veneer frame") and keeps the expression's stack on the
machine stack (one 8-byte push per value; the verifier bounds the depth by
agentexpr.MAX_STACK: 800 bytes, inside sitehooks.VENEER_STACK_BYTES).  At ``end`` it pops the result, puts rsp back at r10 and, when the
result is nonzero, records ``(HIT_CONDITION, index)`` and leaves through the
stop.  Evaluation errors (an unreadable address: checked_read, the same
region table as the ``m`` packet's confinement; a division by zero; the loop
budget) record ``(HIT_CONDITION_ERROR, index, error, address)`` and stop too:
the condition counts as true and the stop says why.

``reg N`` uses gdb's register numbers for this target (target.xml,
gdbstub/arch_amd64.py): the general registers come from the save area or
live, ``rsp`` is the guest's rsp at the site, ``rip`` the site itself (the
stop pc a client sees), ``eflags`` the saved flags; registers the regfile
shows as constants (segments, fs_base/gs_base, orig_rax, the x87 control
words) give those constants, except where the dialect gives a site's value of
one (:data:`SiteRegisters`: es, the C frame base in the native dialect's x32
view, gdbstub/frame_bases.py, is the function's frame-base slot); ``mxcsr`` is
read live.  st0-7 and xmm0-15 are
refused when the expression is parsed (gdb does not use them in integer
conditions).
"""
from __future__ import annotations

from codemem import sitehooks
from codemem.sitehooks import VeneerEmitter
from codemem.x64.asm import Cond, Mem, Reg, Xmm

from . import arch_amd64
from .protocol.agentexpr import MAX_BACKWARD_JUMPS, MAX_STACK, AgentExpr, Op

assert 8 * MAX_STACK <= sitehooks.VENEER_STACK_BYTES

#: gdb general-register order (arch_amd64.GPR_NAMES) -> hardware register.
_GPR = {
    "rax": Reg.RAX, "rbx": Reg.RBX, "rcx": Reg.RCX, "rdx": Reg.RDX, "rsi": Reg.RSI, "rdi": Reg.RDI,
    "rbp": Reg.RBP, "rsp": Reg.RSP, "r8": Reg.R8, "r9": Reg.R9, "r10": Reg.R10, "r11": Reg.R11,
    "r12": Reg.R12, "r13": Reg.R13, "r14": Reg.R14, "r15": Reg.R15,
}


#: What a synthesized register holds at one site, by gdb register number:
#: ``("const", value)`` or ``("rbp_u32", offset)`` (the 4 bytes at the guest's
#: rbp + offset, zero-extended: a frame slot; 0 reads as 1, as the stub shows
#: a frame base not yet set past the first wasm instruction,
#: gdbstub.frame_bases.NOT_YET_SET).
SiteRegisters = dict[int, tuple[str, int]]


def _register_source(regnum: int, site_registers: SiteRegisters | None = None):
    """('gpr', Reg) | ('rip', None) | ('eflags', None) | ('mxcsr', None) |
    ('const', value) | ('rbp_u32', offset) | None (not readable in the target)."""
    if not 0 <= regnum < len(arch_amd64.REGISTERS):
        return None
    if site_registers and regnum in site_registers:
        return site_registers[regnum]
    reg = arch_amd64.REGISTERS[regnum]
    if reg.name in _GPR:
        return ("gpr", _GPR[reg.name])
    if reg.name == "rip":
        return ("rip", None)
    if reg.name == "eflags":
        return ("eflags", None)
    if reg.name == "mxcsr":
        return ("mxcsr", None)
    if reg.name in ("fs_base", "gs_base"):
        return ("const", 0)
    if reg.source is None and reg.size <= 8:
        return ("const", int.from_bytes(reg.default, "little"))
    return None


def register_readable(regnum: int) -> bool:
    """Whether a condition evaluated in the target can read gdb register ``regnum``."""
    return _register_source(regnum) is not None


class ConditionCheck:
    """One compiled condition of a site (see the module docstring)."""

    def __init__(self, expr: AgentExpr, index: int, registers: SiteRegisters | None = None):
        self.expr = expr
        self.index = index
        self.registers = dict(registers or {})
        self.cache_key = ("condition", index, expr.bytecode, tuple(sorted(self.registers.items())))

    def emit(self, e: VeneerEmitter) -> None:
        _compile(self.expr, self.index, e, registers=self.registers)


class CommandsCheck:
    """A breakpoint with agent commands (dprintf, ``set dprintf-style
    agent``): when it has no conditions, or one of them is true, the commands
    run and the guest goes on; it never stops (gdbserver's rule: a breakpoint
    whose commands the target runs is not reported).  An evaluation error in
    a condition or a command skips the rest of the commands silently."""

    def __init__(self, conditions: tuple[AgentExpr, ...], commands: tuple[AgentExpr, ...],
                 registers: SiteRegisters | None = None):
        self.conditions = conditions
        self.commands = commands
        self.registers = dict(registers or {})
        self.cache_key = ("commands", tuple(x.bytecode for x in conditions), tuple(x.bytecode for x in commands),
                          tuple(sorted(self.registers.items())))

    def emit(self, e: VeneerEmitter) -> None:
        a = e.a
        run, skip = a.new_label(), a.new_label()
        for k, expr in enumerate(self.conditions):
            _compile(expr, k, e, on_true=run, on_error=skip, registers=self.registers)
        if self.conditions:
            a.jmp(skip)
        a.bind(run)
        for k, expr in enumerate(self.commands):
            _compile(expr, k, e, on_error=skip, command=True, registers=self.registers)
        a.bind(skip)


def _compile(expr: AgentExpr, index: int, e: VeneerEmitter, *, on_true=None, on_error=None,
             command: bool = False, registers: SiteRegisters | None = None) -> None:
    """Code for ``expr`` falling through at its end.  A condition (default)
    stops when true, or jumps to ``on_true``; a ``command`` ignores its value.
    Errors stop with HIT_CONDITION_ERROR, or jump to ``on_error``."""
    a = e.a
    labels = {}
    for ins in expr.instructions:
        if ins.op in (Op.GOTO, Op.IF_GOTO) and ins.depth >= 0:
            labels.setdefault(ins.operand, a.new_label())
    error = a.new_label()
    after = a.new_label()
    has_backward = any(ins.op in (Op.GOTO, Op.IF_GOTO) and ins.operand <= ins.pc for ins in expr.instructions)
    if has_backward:
        a.mov(e.data(sitehooks.DATA_LOOP_BUDGET), MAX_BACKWARD_JUMPS, 64)

    def fail(code: int) -> None:
        a.mov(e.data(sitehooks.DATA_HIT_ERROR), code, 64)
        a.jmp(error)

    for ins in expr.instructions:
        if ins.pc in labels:
            a.bind(labels[ins.pc])
        if ins.depth < 0:
            continue  # unreachable: the verifier saw no path to it
        op = ins.op
        if op in (Op.CONST8, Op.CONST16, Op.CONST32, Op.CONST64):
            a.mov(Reg.RAX, ins.operand, 64)
            a.push(Reg.RAX)
        elif op is Op.REG:
            _load_register(e, ins.operand, registers)
            a.push(Reg.RAX)
        elif op in (Op.REF8, Op.REF16, Op.REF32, Op.REF64):
            size = {Op.REF8: 1, Op.REF16: 2, Op.REF32: 4, Op.REF64: 8}[op]
            a.pop(Reg.RDI)
            a.mov(Reg.RSI, size, 32)
            e.checked_read()
            ok = a.new_label()
            a.jcc(Cond.NC, ok)
            a.mov(e.data(sitehooks.DATA_HIT_ADDRESS), Reg.RDI, 64)
            a.mov(e.data(sitehooks.DATA_HIT_SIZE), size, 64)
            fail(sitehooks.ERROR_UNREADABLE)
            a.bind(ok)
            a.push(Reg.RAX)
        elif op in (Op.ADD, Op.SUB, Op.MUL, Op.BIT_AND, Op.BIT_OR, Op.BIT_XOR):
            a.pop(Reg.RCX)
            a.pop(Reg.RAX)
            if op is Op.ADD:
                a.add(Reg.RAX, Reg.RCX, 64)
            elif op is Op.SUB:
                a.sub(Reg.RAX, Reg.RCX, 64)
            elif op is Op.MUL:
                a.imul(Reg.RAX, Reg.RCX, 64)
            elif op is Op.BIT_AND:
                a.and_(Reg.RAX, Reg.RCX, 64)
            elif op is Op.BIT_OR:
                a.or_(Reg.RAX, Reg.RCX, 64)
            else:
                a.xor(Reg.RAX, Reg.RCX, 64)
            a.push(Reg.RAX)
        elif op in (Op.LSH, Op.RSH_SIGNED, Op.RSH_UNSIGNED):
            a.pop(Reg.RCX)  # the hardware masks the count to 6 bits, as the reference does
            a.pop(Reg.RAX)
            {Op.LSH: a.shl, Op.RSH_SIGNED: a.sar, Op.RSH_UNSIGNED: a.shr}[op](Reg.RAX, Reg.RCX, 64)
            a.push(Reg.RAX)
        elif op in (Op.DIV_SIGNED, Op.DIV_UNSIGNED, Op.REM_SIGNED, Op.REM_UNSIGNED):
            a.pop(Reg.RCX)
            a.pop(Reg.RAX)
            nonzero, done = a.new_label(), a.new_label()
            a.test(Reg.RCX, Reg.RCX, 64)
            a.jcc(Cond.NE, nonzero)
            fail(sitehooks.ERROR_DIVIDE_BY_ZERO)
            a.bind(nonzero)
            if op in (Op.DIV_UNSIGNED, Op.REM_UNSIGNED):
                a.zero(Reg.RDX)
                a.div(Reg.RCX, 64)
            else:
                # INT64_MIN / -1 faults in idiv: x / -1 is -x (wrapping), x % -1 is 0.
                normal = a.new_label()
                a.cmp(Reg.RCX, -1, 64)
                a.jcc(Cond.NE, normal)
                a.neg(Reg.RAX, 64)
                a.zero(Reg.RDX)
                a.jmp(done)
                a.bind(normal)
                a.cqo()
                a.idiv(Reg.RCX, 64)
            a.bind(done)
            a.push(Reg.RAX if op in (Op.DIV_SIGNED, Op.DIV_UNSIGNED) else Reg.RDX)
        elif op in (Op.EQUAL, Op.LESS_SIGNED, Op.LESS_UNSIGNED):
            a.pop(Reg.RCX)
            a.pop(Reg.RDX)
            a.zero(Reg.RAX)
            a.cmp(Reg.RDX, Reg.RCX, 64)
            a.setcc({Op.EQUAL: Cond.E, Op.LESS_SIGNED: Cond.L, Op.LESS_UNSIGNED: Cond.B}[op], Reg.RAX)
            a.push(Reg.RAX)
        elif op is Op.LOG_NOT:
            a.pop(Reg.RCX)
            a.zero(Reg.RAX)
            a.test(Reg.RCX, Reg.RCX, 64)
            a.setcc(Cond.E, Reg.RAX)
            a.push(Reg.RAX)
        elif op is Op.BIT_NOT:
            a.not_(Mem(Reg.RSP), 64)
        elif op in (Op.EXT, Op.ZERO_EXT):
            if ins.operand < 64:  # keep the low `operand` bits, sign- or zero-extended
                a.pop(Reg.RAX)
                a.shl(Reg.RAX, 64 - ins.operand, 64)
                (a.sar if op is Op.EXT else a.shr)(Reg.RAX, 64 - ins.operand, 64)
                a.push(Reg.RAX)
        elif op is Op.DUP:
            a.push(Mem(Reg.RSP))
        elif op is Op.POP:
            a.lea(Reg.RSP, Mem(Reg.RSP, 8))
        elif op is Op.SWAP:
            a.pop(Reg.RAX)
            a.pop(Reg.RCX)
            a.push(Reg.RAX)
            a.push(Reg.RCX)
        elif op is Op.PICK:
            a.push(Mem(Reg.RSP, 8 * ins.operand))
        elif op is Op.ROT:
            # a b c (c on top) => c a b (b on top)
            a.pop(Reg.RCX)  # c
            a.pop(Reg.RDX)  # b
            a.pop(Reg.RAX)  # a
            a.push(Reg.RCX)
            a.push(Reg.RAX)
            a.push(Reg.RDX)
        elif op is Op.GETV:
            a.push(e.data(sitehooks.DATA_TSV + 8 * ins.operand))
        elif op is Op.SETV:
            a.mov(Reg.RAX, Mem(Reg.RSP), 64)
            a.mov(e.data(sitehooks.DATA_TSV + 8 * ins.operand), Reg.RAX, 64)
        elif op in (Op.TRACE, Op.TRACENZ):
            a.lea(Reg.RSP, Mem(Reg.RSP, 16))
        elif op in (Op.TRACE_QUICK, Op.TRACE16, Op.TRACEV):
            pass  # nothing to collect into at a breakpoint
        elif op in (Op.GOTO, Op.IF_GOTO):
            target = labels[ins.operand]
            if op is Op.IF_GOTO:
                a.pop(Reg.RAX)
                a.test(Reg.RAX, Reg.RAX, 64)
            if ins.operand <= ins.pc:
                skip = a.new_label()
                if op is Op.IF_GOTO:
                    a.jcc(Cond.E, skip)
                a.sub(e.data(sitehooks.DATA_LOOP_BUDGET), 1, 64)
                exhausted = a.new_label()
                a.jcc(Cond.E, exhausted)
                a.jmp(target)
                a.bind(exhausted)
                fail(sitehooks.ERROR_LOOP_BUDGET)
                a.bind(skip)
            elif op is Op.IF_GOTO:
                a.jcc(Cond.NE, target)
            else:
                a.jmp(target)
        elif op is Op.PRINTF:
            _emit_printf(e, ins.operand)
        elif op is Op.END:
            if command:
                a.mov(Reg.RSP, Reg.R10, 64)
                a.jmp(after)
                continue
            if ins.depth:
                a.pop(Reg.RAX)
            else:
                a.zero(Reg.RAX)
            a.mov(Reg.RSP, Reg.R10, 64)
            a.test(Reg.RAX, Reg.RAX, 64)
            if on_true is not None:
                a.jcc(Cond.NE, on_true)
                a.jmp(after)
                continue
            a.jcc(Cond.E, after)
            e.record_hit(sitehooks.HIT_CONDITION, index)
            a.jmp(e.stop)
        else:  # pragma: no cover - parse_agent_expr refuses everything else
            raise AssertionError(op)
    a.bind(error)
    a.mov(Reg.RSP, Reg.R10, 64)
    if on_error is not None:
        a.jmp(on_error)
    else:
        e.record_hit(sitehooks.HIT_CONDITION_ERROR, index)
        a.jmp(e.stop)
    a.bind(after)


def _emit_printf(e: VeneerEmitter, operand) -> None:
    """``printf nargs fmt``: the stack holds, from the top, the function and
    the channel (gdb's gen_printf pushes them last; this agent prints to its
    stdout whatever they are), then argument 0, 1, ... (pushed last-first, so
    they lie in ascending addresses).  Calls cm_agent_printf (csrc) on the
    guest stack, 16-aligned, with xmm0-15 and r10 saved around it (C may
    clobber them), then pops the printf's operands."""
    numargs, fmt = operand
    a = e.a
    text = a.new_label()
    skip = a.new_label()
    a.lea(Reg.RDX, Mem(Reg.RSP, 16))                       # args
    a.mov(Reg.RSI, numargs, 32)
    a.lea(Reg.RDI, Mem.rip(text))
    a.lea(Reg.RCX, e.data(sitehooks.DATA_REGIONS))
    a.mov(Reg.RAX, Reg.RSP, 64)
    a.and_(Reg.RSP, -16, 64)
    a.sub(Reg.RSP, 16 * 16 + 16, 64)
    for k in range(16):
        a.movdqu(Mem(Reg.RSP, 16 * k), Xmm(k))
    a.mov(Mem(Reg.RSP, 256), Reg.RAX, 64)
    a.mov(Mem(Reg.RSP, 264), Reg.R10, 64)                 # the save-area anchor: r10 is caller-saved in C
    a.call_mem(e.code(e.area.printf_slot_address))
    for k in range(16):
        a.movdqu(Xmm(k), Mem(Reg.RSP, 16 * k))
    a.mov(Reg.R10, Mem(Reg.RSP, 264), 64)
    a.mov(Reg.RSP, Mem(Reg.RSP, 256), 64)
    a.lea(Reg.RSP, Mem(Reg.RSP, 8 * (numargs + 2)))
    a.jmp(skip)
    a.bind(text)
    a.emit_bytes(bytes(fmt) + b"\0")
    a.bind(skip)


def _load_register(e: VeneerEmitter, regnum: int, registers: SiteRegisters | None = None) -> None:
    a = e.a
    source = _register_source(regnum, registers)
    if source is None:  # pragma: no cover - the parser refused it
        raise ValueError(f"register {regnum} cannot be read in the target")
    kind, value = source
    if kind == "gpr":
        e.load_guest_register(Reg.RAX, value)
    elif kind == "rip":
        a.mov(Reg.RAX, e.site_pc, 64)
    elif kind == "eflags":
        a.mov(Reg.RAX, Mem(Reg.R10, sitehooks.SAVE_FLAGS_OFFSET), 64)
    elif kind == "mxcsr":
        a.push(0)
        a.emit_bytes(b"\x0f\xae\x1c\x24")  # stmxcsr [rsp]
        a.pop(Reg.RAX)
    elif kind == "rbp_u32":
        e.load_guest_register(Reg.RAX, Reg.RBP)
        a.mov(Reg.RAX, Mem(Reg.RAX, value), 32)  # a frame slot of the site's frame (zero-extends)
        a.emit_bytes(b"\x83\xf8\x01\x83\xd0\x00")  # cmp eax, 1; adc eax, 0: 0 -> 1 (NOT_YET_SET)
    else:
        a.mov(Reg.RAX, value, 64)
