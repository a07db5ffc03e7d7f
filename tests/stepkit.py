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
