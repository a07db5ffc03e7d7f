"""Helpers for tests that stop a guest at every sequence point in-process
(no debugger): the breakpoint handler sees the saved register file."""
from __future__ import annotations

import codemem
from codemem.frametable import SequencePointKind
from codemem.native import ffi

EVENT_BREAKPOINT = 1
INSTRUCTION = SequencePointKind.INSTRUCTION
#: csrc/codemem_rt.h: regfile gpr[] order.
GPR_INDEX = {name: i for i, name in enumerate(
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{k}" for k in range(8, 16)])}


def debug_instance(wasm: bytes):
    """(store, instance) of ``wasm`` compiled with debugging, no imports."""
    engine = codemem.Engine(debug=True)
    store = codemem.Store(engine)
    return store, codemem.Instance(store, codemem.Module(engine, wasm), [])


def step_everything(store, instance, on_stop) -> None:
    """Enable every site of the instance's code; call ``on_stop(point, regfile,
    func)`` at each INSTRUCTION stop (the regfile is what the guest resumes with)."""
    code = instance.store_code
    table = code.frame_table

    def handler(kind, _code, regfile, _vmctx):
        if kind != EVENT_BREAKPOINT:
            return
        offset = code.offset_of(regfile.rip)
        point = table.sequence_point_at_or_before(offset)
        if point is not None and point.native_offset == offset and point.kind == INSTRUCTION:
            on_stop(point, regfile, table.function_at(offset))

    store.debug_handler = handler
    with store.registry.patch_edit() as edit:
        for off in table.site_offsets:
            edit.enable_site(code, code.pc_of(off))


def u64(address: int) -> int:
    """The u64 at a host ``address``."""
    return ffi.cast("uint64_t *", address)[0]


def check_mirrors(instance, point, regfile, func) -> tuple[list[str], list[str]]:
    """Asserts the frame-table contract at an INSTRUCTION stop: every slot
    mirror register equals the u64 in its slot (a local or a live operand-stack
    slot), every context mirror equals memory 0's base or length.  Returns the
    names checked: (slot mirrors, context mirrors)."""
    from codemem.frametable import MirrorSource

    table = instance.store_code.frame_table
    rbp = regfile.gpr[GPR_INDEX["rbp"]]
    locals_ = {slot.frame_offset for slot in table.locals(func)}
    stack = {func.operand_slot_offset(i) for i in range(point.stack_depth)}
    slots, context = [], []
    for name, offset in point.mirrors:
        assert offset in locals_ or offset in stack, (point, name, offset)
        assert regfile.gpr[GPR_INDEX[name]] == u64(rbp + offset), (point, name, offset)
        slots.append(name)
    for name, source in point.context_mirrors:
        memory = instance.memories[0]
        expected = memory.base if source is MirrorSource.MEMORY0_BASE else memory.data_len
        assert regfile.gpr[GPR_INDEX[name]] == expected, (point, name, source)
        context.append(name)
    return slots, context
