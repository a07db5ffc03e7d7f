#!/usr/bin/env python3
"""Two Stores run the same hand-assembled function; a breakpoint patched into
one Store's private copy stops only that Store, on its own guest thread."""
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import capstone  # noqa: E402

from codemem import native  # noqa: E402
from codemem.code import EngineCode  # noqa: E402
from imagekit import ADD, HandStore, build_image  # noqa: E402

built = build_image([ADD])
engine = EngineCode(built.code, built.table, name="add")
debugged, other = HandStore(debug=True), HandStore(debug=True)
for s in (debugged, other):
    s.code = s.registry.register(None, engine).store_code
site = debugged.code.pc_of(built.sites[0][1])
md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def show(label, data, address):
    insn = next(md.disasm(data, address))
    print(f"  {label:<28} {address:#x}: {data.hex(' ')}  {insn.mnemonic} {insn.op_str}")


stopped, resume = threading.Event(), threading.Event()


def on_breakpoint(kind, code, regfile, vmctx):
    print(f"guest thread stopped at {regfile.rip:#x}: rax={regfile.gpr[0]} rcx={regfile.gpr[2]} (return address {regfile.rip + 5:#x})")
    stopped.set()
    resume.wait()


native.register_event_handler(debugged.ctx.store_id, on_breakpoint)
with debugged.registry.patch_edit() as edit:
    debugged.registry.enable_site(site, edit)
print("site bytes after enabling a breakpoint in one Store:")
show("patched Store (executed)", debugged.code.read_raw(site, 5), site)
show("patched Store (as a debugger reads it)", debugged.code.read_for_debugger(site, 5), site)
other_site = other.code.pc_of(built.sites[0][1])
show("other Store", other.code.read_raw(other_site, 5), other_site)
print(f"other Store: add(2, 3) = {other.call(other.code.pc_of(built.functions[0]), 2, 3)[1]} (no stop)")
result = {}
guest = threading.Thread(target=lambda: result.update(r=debugged.call(debugged.code.pc_of(built.functions[0]), 40, 2)))
guest.start()
stopped.wait(10)
print("host: guest is blocked at the breakpoint; resuming it")
resume.set()
guest.join(10)
print(f"patched Store: add(40, 2) = {result['r'][1]}")
native.unregister_event_handler(debugged.ctx.store_id)
