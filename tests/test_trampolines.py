"""Hand-assembled guest code through the entry, breakpoint, trap and host-call trampolines."""
import threading

import capstone
import pytest

from codemem import native
from codemem.code import EngineCode
from imagekit import ADD, CALL_HOST, SPIN, TRAP7, HandStore, build_image

REG = {name: i for i, name in enumerate("rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15".split())}


def disasm(code: bytes, start: int, end: int):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return [(i.address, i.mnemonic, i.op_str) for i in md.disasm(code[start:end], start)]


@pytest.fixture(scope="module")
def image():
    built = build_image([ADD, SPIN, TRAP7, CALL_HOST])
    engine = EngineCode(built.code, built.table, name="hand")
    yield built, engine
    engine.close()


@pytest.fixture
def store(image):
    built, engine = image
    s = HandStore(debug=True)
    entry = s.registry.register(None, engine)
    s.code = entry.store_code
    s.built = built
    yield s
    native.unregister_event_handler(s.ctx.store_id)
    native.unregister_host_call_handler(s.ctx.store_id)
    s.close()


class Events:
    def __init__(self, store, on_event=None):
        self.seen = []
        self.on_event = on_event
        native.register_event_handler(store.ctx.store_id, self)

    def __call__(self, kind, code, regfile, vmctx):
        snapshot = {name: regfile.gpr[i] for name, i in REG.items()}
        snapshot.update(rip=regfile.rip, rflags=regfile.rflags, kind=kind, code=code)
        snapshot["return_address"] = native.ffi.cast("uint64_t *", regfile.gpr[REG["rsp"]] - 8)[0]
        self.seen.append(snapshot)
        if self.on_event:
            self.on_event(regfile)


def test_hand_assembly_is_what_we_think(image):
    built, _ = image
    add = built.functions[0]
    listing = disasm(built.code, add, built.functions[1])
    text = [f"{m} {o}".strip() for _, m, o in listing if m != "int3"]
    assert text == [
        "nop dword ptr [rax + rax]",
        "push rbp",
        "mov rbp, rsp",
        "mov rax, qword ptr [rsi]",
        "mov rcx, qword ptr [rsi + 8]",
        "nop dword ptr [rax + rax]",
        "add rax, rcx",
        "mov qword ptr [rsi], rax",
        "pop rbp",
        "ret",
    ]
    spin = built.functions[1]
    jump = [x for x in disasm(built.code, spin, built.functions[2]) if x[1] == "je"][0]
    assert int(jump[2], 16) == built.sites[1][1], "the loop jumps back to the loop-head site"


def test_entry_trampoline_runs_guest_code(store):
    pc = store.code.pc_of(store.built.functions[0])
    assert store.call(pc, 40, 2) == (0, 42)
    assert store.call(pc, 2**63, 2**63) == (0, 0)  # wraps, as x86 does
    assert store.ctx.depth == 0


def test_patched_site_calls_back_with_registers(store):
    events = Events(store)
    site = store.code.pc_of(store.built.sites[0][1])
    with store.registry.patch_edit() as edit:
        store.registry.enable_site(site, edit)
    try:
        code, result = store.call(store.code.pc_of(store.built.functions[0]), 30, 12)
    finally:
        with store.registry.patch_edit() as edit:
            store.registry.disable_site(site, edit)
    assert (code, result) == (0, 42)
    assert len(events.seen) == 1
    ev = events.seen[0]
    assert ev["kind"] == native.EVENT_BREAKPOINT
    assert ev["rip"] == site
    assert ev["return_address"] == site + 5
    assert (ev["rax"], ev["rcx"]) == (30, 12)
    assert ev["r15"] == store.vmctx_address
    assert store.ctx.stack.contains(ev["rsp"]) and ev["rbp"] == ev["rsp"]


def test_callback_register_writes_are_restored(store):
    def set_rax(regfile):
        regfile.gpr[REG["rax"]] = 1000

    Events(store, set_rax)
    site = store.code.pc_of(store.built.sites[0][1])
    with store.registry.patch_edit() as edit:
        store.registry.enable_site(site, edit)
    assert store.call(store.code.pc_of(store.built.functions[0]), 1, 2) == (0, 1002)


def _run_add_to_its_breakpoint(store, on_event, stopped: threading.Event):
    """Starts ADD(5, 6) on a guest thread with a breakpoint at its first
    instruction handled by ``on_event``; returns once ``stopped`` is set."""
    Events(store, on_event)
    site = store.code.pc_of(store.built.sites[0][1])
    with store.registry.patch_edit() as edit:
        store.registry.enable_site(site, edit)
    result = {}
    guest = threading.Thread(target=lambda: result.update(r=store.call(store.code.pc_of(store.built.functions[0]), 5, 6)))
    guest.start()
    assert stopped.wait(10), "the guest never reached the breakpoint"
    return guest, result


def test_blocking_callback_resumed_from_main_thread(store):
    stopped, resume = threading.Event(), threading.Event()

    def block(regfile):
        stopped.set()
        assert resume.wait(10)

    guest, result = _run_add_to_its_breakpoint(store, block, stopped)
    assert guest.is_alive() and "r" not in result
    resume.set()
    guest.join(10)
    assert result["r"] == (0, 11)


def test_a_deferred_resume_waits_at_the_gate_without_the_gil(store):
    """cm_defer_resume: the handler returns at once, the guest waits in C (the
    GIL is free: this thread runs Python meanwhile), a register the opener
    writes before cm_gate_open is what the guest resumes with."""
    gate = native.ffi.new("uint32_t *", 1)
    stopped = threading.Event()
    saved = {}

    def defer(regfile):
        saved["regfile"] = regfile
        native.lib.cm_defer_resume(gate)
        stopped.set()

    guest, result = _run_add_to_its_breakpoint(store, defer, stopped)
    guest.join(0.2)
    assert guest.is_alive() and "r" not in result, "the guest went on past a closed gate"
    saved["regfile"].gpr[REG["rax"]] = 100
    native.lib.cm_gate_open(gate)
    guest.join(10)
    assert result["r"] == (0, 106) and gate[0] == 0


def test_live_patch_stops_a_running_guest(store):
    """Ctrl-C's mechanism: enable a site while another thread runs the code."""
    stopped = threading.Event()

    def release(regfile):
        regfile.gpr[REG["rcx"]] = 1  # lets the loop exit
        stopped.set()

    events = Events(store, release)
    loop_site = store.code.pc_of(store.built.sites[1][1])
    result = {}
    guest = threading.Thread(target=lambda: result.update(r=store.call(store.code.pc_of(store.built.functions[1]))))
    guest.start()
    guest.join(0.2)
    assert guest.is_alive(), "spin should spin until patched"
    with store.registry.patch_edit(live=True) as edit:
        store.registry.enable_site(loop_site, edit)
    assert stopped.wait(10)
    guest.join(10)
    code, iterations = result["r"]
    assert code == 0 and iterations > 1000
    assert events.seen[0]["rip"] == loop_site


def test_trap_unwinds_and_stack_is_reusable(store):
    events = Events(store)
    trap_pc = store.code.pc_of(store.built.functions[2])
    for _ in range(3):
        code, _ = store.call(trap_pc)
        assert code == 7
        assert store.ctx.depth == 0
        assert store.ctx.sc.trap_code == 7
    assert [e["kind"] for e in events.seen] == [native.EVENT_TRAP] * 3
    # The reported pc is the trap call's return address, inside trap7.
    assert store.code.frame_table.function_at(store.code.offset_of(events.seen[0]["rip"])).wasm_index == 2
    assert store.call(store.code.pc_of(store.built.functions[0]), 2, 3) == (0, 5)


def test_host_call_and_nested_entry(store):
    add_pc = store.code.pc_of(store.built.functions[0])
    inner_args = native.ffi.new("uint64_t[2]")

    def host(hostctx, args):
        # Re-enter the guest from the host: add(args[0], 100) on the same stack.
        inner_args[0], inner_args[1] = args[0], 100
        code = store.ctx.enter(add_pc, store.vmctx_address, int(native.ffi.cast("uintptr_t", inner_args)))
        assert code == 0
        args[0] = inner_args[0] * 2
        return 0

    native.register_host_call_handler(store.ctx.store_id, host)
    assert store.call(store.code.pc_of(store.built.functions[3]), 21) == (0, 242)
    assert store.ctx.depth == 0


def test_host_call_trap_unwinds(store):
    native.register_host_call_handler(store.ctx.store_id, lambda hostctx, args: 99)
    assert store.call(store.code.pc_of(store.built.functions[3]), 1) == (99, 1)
    assert store.call(store.code.pc_of(store.built.functions[0]), 2, 3) == (0, 5)


def test_host_exception_becomes_trap(store):
    def boom(hostctx, args):
        raise RuntimeError("host failed")

    native.register_host_call_handler(store.ctx.store_id, boom)
    code, _ = store.call(store.code.pc_of(store.built.functions[3]), 1)
    assert code == native.TRAP_CODE_HOST_ERROR
