"""Tests for gdbstub.arch_amd64: byte mappings, the descriptions, and real clients.

The client tests run Debian's gdb 13 and lldb-22 against a throwaway stub defined
here (minimal RSP framing over a socket thread), because the real protocol layer
is built separately; they check that each client accepts the description without
warnings and shows the register values of a known regfile.
"""
from __future__ import annotations

import socket
import struct
import subprocess
import threading
import xml.etree.ElementTree as ET

import pytest

from gdbstub import arch_amd64 as arch

# ---------------------------------------------------------------------------
# A known regfile
# ---------------------------------------------------------------------------

GPR_VALUES = [0x1111_0000_0000_0000 + i * 0x0101 for i in range(16)]
RAX = 0x0123_4567_89AB_CDEF
RSP = 0x7FFF_FFFF_E000
RBP = 0x7FFF_FFFF_E040
GPR_VALUES[0], GPR_VALUES[7], GPR_VALUES[6] = RAX, RSP, RBP
RIP = 0x7F00_DEAD_1000
RFLAGS = 0x246  # IF ZF PF (+ reserved bit 1)
XMM = [bytes((16 * i + j) & 0xFF for j in range(16)) for i in range(16)]
MXCSR = 0x1F80

KNOWN_REGFILE = arch.make_regfile(gpr=GPR_VALUES, rip=RIP, rflags=RFLAGS, xmm=XMM, mxcsr=MXCSR)


def u64(b: bytes) -> int:
    return int.from_bytes(b, "little")


# ---------------------------------------------------------------------------
# Table and byte mappings
# ---------------------------------------------------------------------------

def test_regfile_layout_matches_the_c_struct():
    rf = KNOWN_REGFILE
    assert len(rf) == arch.REGFILE_SIZE == 424
    assert struct.unpack_from("<16Q", rf, 0) == tuple(GPR_VALUES)
    assert struct.unpack_from("<QQ", rf, 128) == (RIP, RFLAGS)
    assert rf[144:400] == b"".join(XMM)
    assert struct.unpack_from("<IIQQ", rf, 400) == (MXCSR, 0, 0, 0)


def test_table_order_offsets_and_numbers():
    names = [r.name for r in arch.REGISTERS]
    assert names[:16] == list(arch.GPR_NAMES)
    assert names[16:24] == ["rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]
    assert names[24:32] == [f"st{i}" for i in range(8)]
    assert names[32:40] == ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]
    assert names[40:57] == [f"xmm{i}" for i in range(16)] + ["mxcsr"]
    assert names[57:] == ["orig_rax", "fs_base", "gs_base"]
    offset = 0
    for i, reg in enumerate(arch.REGISTERS):
        assert reg.regnum == i and reg.offset == offset
        offset += reg.size
    assert offset == arch.G_PACKET_SIZE == 560
    assert (arch.RIP_REGNUM, arch.RSP_REGNUM, arch.RBP_REGNUM) == (16, 7, 6)
    assert arch.regnum_by_name("pc") == 16 and arch.regnum_by_name("rflags") == 17
    with pytest.raises(ValueError, match="nosuch"):
        arch.regnum_by_name("nosuch")


@pytest.mark.parametrize("name,dwarf", [
    ("rax", 0), ("rdx", 1), ("rcx", 2), ("rbx", 3), ("rsi", 4), ("rdi", 5), ("rbp", 6),
    ("rsp", 7), ("r8", 8), ("r15", 15), ("rip", 16), ("xmm0", 17), ("xmm15", 32),
    ("st0", 33), ("st7", 40), ("eflags", 49), ("es", 50), ("cs", 51), ("ss", 52), ("ds", 53),
    ("fs", 54), ("gs", 55), ("fs_base", 58), ("gs_base", 59), ("mxcsr", 64), ("fctrl", 65),
    ("fstat", 66), ("ftag", None), ("orig_rax", None)])
def test_dwarf_numbers_follow_the_psabi(name, dwarf):
    reg = arch.register_by_name(name)
    assert reg.dwarf == dwarf and reg.ehframe == dwarf


def test_generic_roles():
    generic = {r.generic: r.name for r in arch.REGISTERS if r.generic}
    assert generic == {"pc": "rip", "sp": "rsp", "fp": "rbp", "flags": "eflags",
                       "arg1": "rdi", "arg2": "rsi", "arg3": "rdx", "arg4": "rcx",
                       "arg5": "r8", "arg6": "r9"}


def test_g_packet_places_every_register():
    g = arch.regfile_to_g(KNOWN_REGFILE)
    assert len(g) == 560
    for i, value in enumerate(GPR_VALUES):
        assert u64(g[8 * i:8 * i + 8]) == value
    assert u64(g[128:136]) == RIP
    assert u64(g[136:140]) == RFLAGS
    assert g[140:164] == bytes(24)                      # segment selectors
    assert g[164:244] == bytes(80)                      # st0-7
    assert struct.unpack_from("<8I", g, 244) == (0x37F, 0, 0xFFFF, 0, 0, 0, 0, 0)
    assert g[276:532] == b"".join(XMM)
    assert u64(g[532:536]) == MXCSR
    assert g[536:544] == b"\xff" * 8                    # orig_rax = -1
    assert g[544:560] == bytes(16)                      # fs_base, gs_base
    for reg in arch.REGISTERS:
        assert arch.read_register(KNOWN_REGFILE, reg.regnum) == g[reg.offset:reg.offset + reg.size]


def test_read_registers_gives_each_as_read_register_does():
    every = tuple(reg.regnum for reg in arch.REGISTERS)
    assert arch.read_registers(KNOWN_REGFILE, every) == {n: arch.read_register(KNOWN_REGFILE, n) for n in every}
    expedited = arch.read_registers(KNOWN_REGFILE, (arch.RBP_REGNUM, arch.RSP_REGNUM, arch.RIP_REGNUM))
    assert list(expedited) == [arch.RBP_REGNUM, arch.RSP_REGNUM, arch.RIP_REGNUM]
    assert u64(expedited[arch.RIP_REGNUM]) == RIP
    with pytest.raises(arch.RegisterError):
        arch.read_registers(KNOWN_REGFILE, (len(arch.REGISTERS),))
    with pytest.raises(arch.RegisterError):
        arch.read_registers(KNOWN_REGFILE[:-1], (arch.RIP_REGNUM,))


def test_write_register_updates_the_regfile():
    rf = bytearray(KNOWN_REGFILE)
    arch.write_register(rf, arch.regnum_by_name("r9"), (0xABCD).to_bytes(8, "little"))
    arch.write_register(rf, arch.RIP_REGNUM, (0x4242).to_bytes(8, "little"))
    arch.write_register(rf, arch.regnum_by_name("eflags"), (0x202).to_bytes(4, "little"))
    arch.write_register(rf, arch.regnum_by_name("xmm3"), b"\x5a" * 16)
    arch.write_register(rf, arch.regnum_by_name("mxcsr"), (0x9FC0).to_bytes(4, "little"))
    regs = struct.unpack_from("<16QQQ", rf, 0)
    assert regs[9] == 0xABCD and regs[16] == 0x4242 and regs[17] == 0x202
    assert rf[144 + 48:144 + 64] == b"\x5a" * 16
    assert struct.unpack_from("<I", rf, 400)[0] == 0x9FC0
    # untouched fields stay as they were
    assert regs[:9] == tuple(GPR_VALUES[:9]) and rf[144:144 + 48] == b"".join(XMM[:3])


@pytest.mark.parametrize("name", ["cs", "st0", "fctrl", "orig_rax", "fs_base", "gs_base"])
def test_read_only_registers_refuse_changes_but_accept_their_own_value(name):
    rf = bytearray(KNOWN_REGFILE)
    reg = arch.register_by_name(name)
    current = arch.read_register(rf, reg.regnum)
    arch.write_register(rf, reg.regnum, current)        # e.g. a register-set restore
    assert bytes(rf) == KNOWN_REGFILE
    changed = bytes([current[0] ^ 1]) + current[1:]
    with pytest.raises(ValueError, match=name):
        arch.write_register(rf, reg.regnum, changed)
    assert bytes(rf) == KNOWN_REGFILE


def test_write_register_rejects_bad_sizes_and_numbers():
    rf = bytearray(KNOWN_REGFILE)
    with pytest.raises(ValueError, match="rax"):
        arch.write_register(rf, 0, b"\x00" * 4)
    with pytest.raises(ValueError):
        arch.write_register(rf, len(arch.REGISTERS), b"\x00" * 8)
    with pytest.raises(ValueError):
        arch.read_register(KNOWN_REGFILE[:-1], 0)


def test_g_round_trip_and_atomic_refusal():
    rf = bytearray(arch.REGFILE_SIZE)
    arch.g_to_regfile(arch.regfile_to_g(KNOWN_REGFILE), rf)
    # Everything the client may write came across; fs/gs_base stayed (equal: 0).
    assert bytes(rf) == KNOWN_REGFILE
    g = bytearray(arch.regfile_to_g(KNOWN_REGFILE))
    g[0:8] = (7).to_bytes(8, "little")                  # a legal change to rax ...
    fctrl = arch.register_by_name("fctrl")
    g[fctrl.offset:fctrl.offset + 4] = (0x27F).to_bytes(4, "little")  # ... and an illegal one
    with pytest.raises(ValueError, match="fctrl"):
        arch.g_to_regfile(bytes(g), rf)
    assert bytes(rf) == KNOWN_REGFILE                   # nothing applied
    with pytest.raises(ValueError):
        arch.g_to_regfile(bytes(g[:-1]), rf)


def test_target_xml_is_well_formed_and_matches_the_table():
    root = ET.fromstring(arch.target_xml())
    assert root.tag == "target"
    assert root.findtext("architecture") == "i386:x86-64"
    features = [f.get("name") for f in root.findall("feature")]
    assert features == ["org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse",
                        "org.gnu.gdb.i386.linux", "org.gnu.gdb.i386.segments"]
    regs = root.findall("feature/reg")
    assert [r.get("name") for r in regs] == [r.name for r in arch.REGISTERS]
    for xml_reg, reg in zip(regs, arch.REGISTERS):
        assert int(xml_reg.get("bitsize")) == reg.bitsize
        assert int(xml_reg.get("regnum")) == reg.regnum
        assert xml_reg.get("generic") == reg.generic
    assert arch.feature_document("target.xml") == arch.target_xml()
    assert arch.feature_document("64bit-core.xml") is None


def test_register_info_replies():
    assert arch.register_info_reply(0) == (
        "name:rax;bitsize:64;offset:0;encoding:uint;format:hex;"
        "set:General Purpose Registers;ehframe:0;dwarf:0;")
    rip = arch.register_info_reply(arch.RIP_REGNUM)
    assert "name:rip;" in rip and "offset:128;" in rip and "generic:pc;" in rip
    xmm1 = dict(kv.split(":", 1) for kv in arch.register_info_reply(41).rstrip(";").split(";"))
    assert xmm1 == {"name": "xmm1", "bitsize": "128", "offset": "292", "encoding": "vector",
                    "format": "vector-uint8", "set": "Floating Point Registers",
                    "ehframe": "18", "dwarf": "18"}
    assert arch.register_info_reply(len(arch.REGISTERS)) is None
    assert arch.register_info_reply(-1) is None


def test_host_and_process_info():
    host = dict(kv.split(":", 1) for kv in arch.host_info_reply().rstrip(";").split(";"))
    assert bytes.fromhex(host["triple"]).decode() == arch.TARGET_TRIPLE
    assert arch.TARGET_TRIPLE.startswith("x86_64-")
    assert host["ptrsize"] == "8" and host["endian"] == "little"
    proc = dict(kv.split(":", 1) for kv in arch.process_info_reply(0x2A).rstrip(";").split(";"))
    assert proc["pid"] == "2a" and bytes.fromhex(proc["triple"]).decode() == arch.TARGET_TRIPLE


# ---------------------------------------------------------------------------
# A throwaway stub for real clients
# ---------------------------------------------------------------------------

def _checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) & 0xFF)


def _escape(payload: bytes) -> bytes:
    # RSP binary escaping (gdb manual, "Overview"): '}' then byte ^ 0x20.
    out = bytearray()
    for byte in payload:
        if byte in b"#$}*":
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


class FakeStub:
    """Answers just enough RSP for a client to connect, read the target
    description and registers, and detach. One connection, then it stops."""

    def __init__(self, regfile: bytes, *, xml: bool = True, serve_p: bool = False):
        self.regfile = bytearray(regfile)
        self.xml = xml
        self.serve_p = serve_p
        self.packets: list[str] = []
        self.refusals: list[str] = []
        self.ack = True                         # until QStartNoAckMode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def reply(self, packet: str) -> str | None:
        """The reply payload for one packet; None closes the connection."""
        if packet.startswith("qSupported"):
            features = "PacketSize=4000;QStartNoAckMode+"
            return features + (";qXfer:features:read+" if self.xml else "")
        if packet == "QStartNoAckMode":
            self.ack = False
            return "OK"
        if packet.startswith("qXfer:features:read:"):
            annex, window = packet[len("qXfer:features:read:"):].rsplit(":", 1)
            document = arch.feature_document(annex)
            if document is None:
                return "E00"
            offset, length = (int(x, 16) for x in window.split(","))
            chunk = document[offset:offset + length]
            return ("l" if offset + length >= len(document) else "m") + chunk
        if packet == "?":
            return "S05"
        if packet == "g":
            return arch.regfile_to_g(self.regfile).hex()
        if packet.startswith("P"):
            # lldb appends ";thread:TID;" (QThreadSuffixSupported is not
            # advertised, but tolerate it).
            regnum, value = packet[1:].split(";")[0].split("=")
            try:
                arch.write_register(self.regfile, int(regnum, 16), bytes.fromhex(value))
            except ValueError as error:
                self.refusals.append(str(error))
                return "E01"
            return "OK"
        if packet.startswith("G"):
            try:
                arch.g_to_regfile(bytes.fromhex(packet[1:].split(";")[0]), self.regfile)
            except ValueError as error:
                self.refusals.append(str(error))
                return "E01"
            return "OK"
        if packet.startswith("p") and self.serve_p:
            regnum = int(packet[1:].split(";")[0], 16)
            try:
                return arch.read_register(self.regfile, regnum).hex()
            except ValueError:
                return "E45"
        if packet == "qHostInfo":
            return arch.host_info_reply()
        if packet.startswith("qRegisterInfo"):
            info = arch.register_info_reply(int(packet[len("qRegisterInfo"):], 16))
            return "E45" if info is None else info
        if packet == "qProcessInfo":
            return arch.process_info_reply(1)
        if packet == "qC":
            return "QC1"
        if packet == "qfThreadInfo":
            return "m1"
        if packet == "qsThreadInfo":
            return "l"
        if packet.startswith("m"):
            return "E14"
        if packet.startswith("D"):
            return "OK"
        if packet == "k":
            return None
        return ""

    def _serve(self) -> None:
        self.listener.settimeout(30)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            buffer = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while True:
                    buffer = buffer.lstrip(b"+-\x03")
                    start = buffer.find(b"$")
                    end = buffer.find(b"#", start)
                    if start < 0 or end < 0 or len(buffer) < end + 3:
                        break
                    packet = buffer[start + 1:end].decode("latin-1")
                    buffer = buffer[end + 3:]
                    self.packets.append(packet)
                    if self.ack:                # acknowledge before a reply can end ack mode
                        conn.sendall(b"+")
                    answer = self.reply(packet)
                    if answer is None:
                        return
                    payload = _escape(answer.encode("latin-1"))
                    conn.sendall(b"$" + payload + b"#" + _checksum(payload))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def stub_factory():
    stubs = []

    def make(**kwargs) -> FakeStub:
        stub = FakeStub(KNOWN_REGFILE, **kwargs)
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.close()





def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=40,
                            stdin=subprocess.DEVNULL)
    return result.stdout + result.stderr


def _warnings(output: str) -> list[str]:
    # Without an executable gdb always says so; that is not about registers.
    return [line for line in output.splitlines()
            if ("warning" in line.lower() or "error" in line.lower())
            and "No executable has been specified" not in line]


def _lldb_blocks(output: str) -> dict[str, str]:
    """lldb's batch output split into {command: what it printed}."""
    blocks = {}
    for chunk in output.split("(lldb) ")[1:]:
        command, _, printed = chunk.partition("\n")
        blocks[command.strip()] = printed
    return blocks


def test_gdb_reads_registers_and_agrees_on_the_g_layout(stub_factory):
    stub = stub_factory()
    out = _run(["gdb", "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{stub.port}",
                "-ex", "info registers rip rsp rax eflags", "-ex", "p $xmm1",
                "-ex", "p/x $fctrl", "-ex", "p $orig_rax", "-ex", "maint print remote-registers"])
    print(out)
    assert _warnings(out) == []
    assert "qXfer:features:read:target.xml:0,1000" in stub.packets and "g" in stub.packets
    assert f"rip            {RIP:#x}" in out
    assert f"rsp            {RSP:#x}" in out
    assert f"rax            {RAX:#x}" in out
    assert "eflags         0x246               [ PF ZF IF ]" in out
    assert "v16_int8 = {16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}" in out
    assert f"uint128 = {int.from_bytes(XMM[1], 'little')}" in out
    assert "= 0x37f" in out and "= -1" in out
    # gdb's own view of every register's remote number and g offset.
    layout = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[0] in {r.name for r in arch.REGISTERS}:
            layout[fields[0]] = (int(fields[6]), int(fields[7]))
    assert layout == {r.name: (r.regnum, r.offset) for r in arch.REGISTERS}


def test_gdb_register_writes_reach_the_regfile(stub_factory):
    stub = stub_factory()
    out = _run(["gdb", "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{stub.port}",
                "-ex", "set $rbx = 0x1234", "-ex", "set $pc = 0x5000",
                "-ex", "set $xmm2.v4_int32[0] = -1", "-ex", "set $cs = 7",
                "-ex", "p $rbx"])
    print(out)
    regs = struct.unpack_from("<16QQQ", stub.regfile, 0)
    assert regs[1] == 0x1234 and regs[16] == 0x5000
    assert stub.regfile[144 + 32:144 + 36] == b"\xff" * 4
    # gdb sets orig_rax to -1 with every pc write (amd64_linux_write_pc); it
    # reads as -1 already, so gdb skips the P or the stub accepts it. Only the
    # cs write may be refused.
    assert stub.refusals == ["register cs is read-only in this target"]
    assert 'Could not write register "cs"' in out


@pytest.mark.parametrize("serve_p", [False, True], ids=["g", "p"])
def test_lldb_reads_registers_from_target_xml(stub_factory, serve_p):
    stub = stub_factory(serve_p=serve_p)
    out = _run(["lldb-22", "-b", "-o", f"gdb-remote 127.0.0.1:{stub.port}",
                "-o", "register read rax rip", "-o", "register read xmm1",
                "-o", "register read pc sp fp flags", "-o", "register read eflags",
                "-o", "register write rdx 0x77", "-o", "register read --all",
                "-o", "process detach"])
    print(out)
    # The stub refuses every memory read, which lldb reports once at the stop.
    assert [line for line in _warnings(out) if "memory read failed" not in line] == []
    assert not any(p.startswith("qRegisterInfo") for p in stub.packets)
    assert f"rax = {RAX:#018x}" in out and f"rip = {RIP:#018x}" in out
    assert "xmm1 = {" + " ".join(f"0x{b:02x}" for b in XMM[1]) + "}" in out
    # generic roles: lldb resolves pc/sp/fp/flags through them
    generic = _lldb_blocks(out)["register read pc sp fp flags"]
    assert f"rip = {RIP:#018x}" in generic and f"rsp = {RSP:#018x}" in generic
    assert f"rbp = {RBP:#018x}" in generic and "eflags = 0x00000246" in generic
    assert ("g" in stub.packets) != serve_p      # which read path was exercised
    assert "IF = 1" in out and "ZF = 1" in out
    assert "General Purpose Registers:" in out and "Floating Point Registers:" in out
    assert "eax = 0x89abcdef" in out             # lldb's ABI recognised x86-64
    assert struct.unpack_from("<Q", stub.regfile, 3 * 8)[0] == 0x77
    assert stub.refusals == []


def test_lldb_reads_registers_from_qregisterinfo(stub_factory):
    stub = stub_factory(xml=False)
    out = _run(["lldb-22", "-b", "-o", f"gdb-remote 127.0.0.1:{stub.port}",
                "-o", "register read rax rip", "-o", "register read xmm1",
                "-o", "register read pc sp fp", "-o", "process detach"])
    print(out)
    asked = [p for p in stub.packets if p.startswith("qRegisterInfo")]
    assert asked[0] == "qRegisterInfo0" and asked[-1] == f"qRegisterInfo{len(arch.REGISTERS):x}"
    assert f"rax = {RAX:#018x}" in out and f"rip = {RIP:#018x}" in out
    assert "xmm1 = {" + " ".join(f"0x{b:02x}" for b in XMM[1]) + "}" in out
    generic = _lldb_blocks(out)["register read pc sp fp"]
    assert f"rsp = {RSP:#018x}" in generic and f"rbp = {RBP:#018x}" in generic


def test_a_synthesized_register_with_a_value_for_this_stop_reads_it_and_takes_any_write_unchanged():
    from gdbstub.arch_amd64 import ES_REGNUM, G_PACKET_SIZE, g_to_regfile, make_regfile, read_register, \
        regfile_to_g, register_by_name, write_register, RegisterError
    regfile = bytearray(make_regfile())
    synthesized = {ES_REGNUM: bytes.fromhex("a0ff0000")}
    es = register_by_name("es")
    assert read_register(regfile, ES_REGNUM, synthesized) == bytes.fromhex("a0ff0000")
    assert read_register(regfile, ES_REGNUM) == bytes(4)
    g = bytearray(regfile_to_g(regfile, synthesized))
    assert len(g) == G_PACKET_SIZE and g[es.offset:es.offset + 4] == bytes.fromhex("a0ff0000")
    before = bytes(regfile)
    write_register(regfile, ES_REGNUM, bytes.fromhex("10000000"), synthesized)
    g[es.offset:es.offset + 4] = bytes.fromhex("20000000")
    g_to_regfile(bytes(g), regfile, synthesized)
    assert bytes(regfile) == before
    with pytest.raises(RegisterError, match="es"):
        write_register(regfile, ES_REGNUM, bytes.fromhex("10000000"))
