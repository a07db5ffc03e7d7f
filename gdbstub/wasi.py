"""A minimal WASI (``wasi_snapshot_preview1``) for ``wasm-gdbstub run``.

Just enough of the WASI preview-1 ABI for C programs built with wasi-libc
(``clang --target=wasm32-wasi``) to print and exit: standard output and error,
``proc_exit``, command-line arguments, an empty environment, clocks and random
bytes, and the handful of descriptor calls stdio makes on fds 0-2.  There is no
filesystem: no preopened directories, every other descriptor is ``EBADF``.

Contract:

* :meth:`WasiContext.host_function` returns a :class:`codemem.Func` of exactly the
  type the module imports.  A known name imported with another type is a
  :class:`codemem.LinkError` (wasm spec 4.5.4: imports must match); an unknown
  name becomes a function that raises :class:`codemem.Trap` naming it when the
  guest calls it, so modules that merely *import* more of WASI still run.
* ``proc_exit(n)`` raises :class:`WasiExit` carrying ``n``; it unwinds the guest
  and comes out of the ``Func`` call (or ``Instance`` creation) that ran it.
* Pointers from the guest are checked against linear memory: a bad one makes the
  call return ``EFAULT`` instead of touching the host.

Function signatures and struct layouts follow the witx definitions of
``wasi_snapshot_preview1`` (WebAssembly/WASI, ``legacy/preview1/witx``).
"""
from __future__ import annotations

import codecs
import io
import logging
import os
import struct
import sys
import time
from typing import Any, Callable, Sequence

import codemem
from codemem import FuncType, LinkError, Trap, ValType

log = logging.getLogger(__name__)

MODULE = "wasi_snapshot_preview1"

# errno values (witx typenames.witx, enum errno).
ESUCCESS = 0
EBADF = 8
EFAULT = 21
EINVAL = 28
ESPIPE = 70

# filetype (witx enum filetype) and rights bits (witx flags rights) used by fd_fdstat_get.
FILETYPE_CHARACTER_DEVICE = 2
RIGHT_FD_READ = 1 << 1
RIGHT_FD_WRITE = 1 << 6

# clockid (witx enum clockid).
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3

STDIN, STDOUT, STDERR = 0, 1, 2
MASK32 = 0xFFFF_FFFF

_I32, _I64 = ValType.I32, ValType.I64


def _sig(params: Sequence[ValType], results: Sequence[ValType] = (_I32,)) -> FuncType:
    return FuncType(list(params), list(results))


#: The preview-1 functions implemented here, with their core-wasm types
#: (pointers and sizes are i32, timestamps/filesizes i64, every call returns an errno).
SIGNATURES: dict[str, FuncType] = {
    "args_get": _sig([_I32, _I32]),
    "args_sizes_get": _sig([_I32, _I32]),
    "environ_get": _sig([_I32, _I32]),
    "environ_sizes_get": _sig([_I32, _I32]),
    "clock_res_get": _sig([_I32, _I32]),
    "clock_time_get": _sig([_I32, _I64, _I32]),
    "fd_close": _sig([_I32]),
    "fd_fdstat_get": _sig([_I32, _I32]),
    "fd_prestat_get": _sig([_I32, _I32]),
    "fd_prestat_dir_name": _sig([_I32, _I32, _I32]),
    "fd_read": _sig([_I32, _I32, _I32, _I32]),
    "fd_seek": _sig([_I32, _I64, _I32, _I32]),
    "fd_write": _sig([_I32, _I32, _I32, _I32]),
    "proc_exit": _sig([_I32], []),
    "random_get": _sig([_I32, _I32]),
    "sched_yield": _sig([]),
}


class WasiExit(Exception):
    """``proc_exit`` was called; ``status`` is its argument (a signed i32)."""

    def __init__(self, status: int):
        self.status = status
        super().__init__(f"wasi proc_exit({status})")


class _GuestFault(Exception):
    """A guest pointer outside linear memory (becomes EFAULT)."""


class _OutputSink:
    """Writes guest bytes to a Python stream.

    Binary streams, and text streams with a ``buffer`` (``sys.stdout``), get the
    exact bytes; other text streams (``io.StringIO``) get UTF-8 decoded
    incrementally, so a character split across two ``fd_write`` calls still
    decodes.
    """

    def __init__(self, stream: Any):
        self.stream = stream
        self._text = isinstance(stream, io.TextIOBase)
        self._buffer = getattr(stream, "buffer", None) if self._text else None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> None:
        if not self._text:
            self.stream.write(data)
        elif self._buffer is not None:
            # Keep order with text already written through the text layer.
            self.stream.flush()
            self._buffer.write(data)
            self._buffer.flush()
        else:
            self.stream.write(self._decoder.decode(data))

    def flush(self) -> None:
        if self._text and self._buffer is None:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self.stream.write(tail)
        self.stream.flush()


class WasiContext:
    """The host state of one WASI program: its arguments, environment and stdio.

    ``args`` is the whole argv (argv[0] included, as wasmtime passes the module
    name); ``env`` a sequence of ``"NAME=value"`` strings (empty by default: no
    host environment leaks into the guest).  ``stdout``/``stderr`` are Python
    streams, text or binary; ``stdin`` an optional binary stream (absent: EOF).
    """

    def __init__(self, *, args: Sequence[str] = (), env: Sequence[str] = (),
                 stdout: Any = None, stderr: Any = None, stdin: Any = None):
        self.args = list(args)
        self.env = list(env)
        self._sinks = {
            STDOUT: _OutputSink(stdout if stdout is not None else sys.stdout),
            STDERR: _OutputSink(stderr if stderr is not None else sys.stderr),
        }
        self.stdin = stdin
        self._closed: set[int] = set()
        self._store: codemem.Store | None = None
        self._module: codemem.Module | None = None
        self._instance: codemem.Instance | None = None

    # -- linking ------------------------------------------------------------

    def attach(self, store: codemem.Store, module: codemem.Module) -> None:
        """Names the store and module whose instance's memory the calls use."""
        self._store, self._module = store, module

    def bind(self, instance: codemem.Instance) -> None:
        """Sets the instance whose exported ``memory`` the calls read and write."""
        self._instance = instance

    def host_function(self, store: codemem.Store, name: str, functype: FuncType) -> codemem.Func:
        """The host function for import ``wasi_snapshot_preview1::name`` of type ``functype``."""
        expected = SIGNATURES.get(name)
        if expected is None:
            return codemem.Func(store, functype, self._unimplemented(name))
        if functype != expected:
            raise LinkError(f"incompatible import type for {MODULE}::{name}: module wants {functype}, "
                            f"WASI defines {expected}")
        method = getattr(self, f"_wasi_{name}")
        return codemem.Func(store, functype, self._errno_guard(name, method))

    @staticmethod
    def _unimplemented(name: str) -> Callable:
        def trap(*_args):
            raise Trap(f"unimplemented WASI function {MODULE}::{name} was called")
        trap.__name__ = name
        return trap

    @staticmethod
    def _errno_guard(name: str, method: Callable) -> Callable:
        def call(*args):
            try:
                return method(*args)
            except _GuestFault as fault:
                log.debug("%s: %s -> EFAULT", name, fault)
                return EFAULT
        call.__name__ = name
        return call

    def flush(self) -> None:
        """Flushes stdout and stderr (call after the program ends)."""
        for sink in self._sinks.values():
            sink.flush()

    # -- guest memory -------------------------------------------------------

    def _memory(self) -> codemem.Memory:
        instance = self._instance
        if instance is None and self._store is not None:
            # A start function runs before Instance() returns; the instance is
            # already in store.instances by then.
            for candidate in reversed(self._store.instances):
                if candidate.module is self._module:
                    instance = candidate
                    break
        memory = instance.exports.get("memory") if instance is not None else None
        if not isinstance(memory, codemem.Memory):
            # The WASI ABI requires the module to export its memory as "memory".
            raise Trap(f"{MODULE}: the module exports no memory named \"memory\"")
        return memory

    def _read(self, pointer: int, length: int) -> bytes:
        try:
            return self._memory().read(pointer & MASK32, length)
        except IndexError as e:
            raise _GuestFault(str(e)) from None

    def _write(self, pointer: int, data: bytes) -> None:
        try:
            self._memory().write(pointer & MASK32, data)
        except IndexError as e:
            raise _GuestFault(str(e)) from None

    def _write_u32(self, pointer: int, value: int) -> None:
        self._write(pointer, struct.pack("<I", value & MASK32))

    def _write_u64(self, pointer: int, value: int) -> None:
        self._write(pointer, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))

    def _iovecs(self, iovs: int, count: int) -> list[tuple[int, int]]:
        """(buf, len) pairs of an iovec/ciovec array (witx: two u32 each)."""
        raw = self._read(iovs, 8 * (count & MASK32))
        return [struct.unpack_from("<II", raw, 8 * k) for k in range(count & MASK32)]

    # -- args and environment ---------------------------------------------

    @staticmethod
    def _strings_sizes(strings: Sequence[str]) -> tuple[int, int]:
        return len(strings), sum(len(s.encode()) + 1 for s in strings)

    def _strings_get(self, strings: Sequence[str], pointers: int, buffer: int) -> int:
        # Layout as the WASI witx describes args_get: an array of pointers into
        # one buffer of NUL-terminated strings.
        at = buffer & MASK32
        for k, s in enumerate(strings):
            data = s.encode() + b"\0"
            self._write(at, data)
            self._write_u32((pointers & MASK32) + 4 * k, at)
            at += len(data)
        return ESUCCESS

    def _wasi_args_sizes_get(self, argc_ptr: int, size_ptr: int) -> int:
        count, size = self._strings_sizes(self.args)
        self._write_u32(argc_ptr, count)
        self._write_u32(size_ptr, size)
        return ESUCCESS

    def _wasi_args_get(self, argv: int, argv_buf: int) -> int:
        return self._strings_get(self.args, argv, argv_buf)

    def _wasi_environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        count, size = self._strings_sizes(self.env)
        self._write_u32(count_ptr, count)
        self._write_u32(size_ptr, size)
        return ESUCCESS

    def _wasi_environ_get(self, environ: int, environ_buf: int) -> int:
        return self._strings_get(self.env, environ, environ_buf)

    # -- clocks and randomness ---------------------------------------------

    _CLOCKS = {
        CLOCK_REALTIME: time.CLOCK_REALTIME,
        CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
        CLOCK_PROCESS_CPUTIME_ID: time.CLOCK_PROCESS_CPUTIME_ID,
        CLOCK_THREAD_CPUTIME_ID: time.CLOCK_THREAD_CPUTIME_ID,
    }

    def _wasi_clock_res_get(self, clock_id: int, res_ptr: int) -> int:
        clock = self._CLOCKS.get(clock_id)
        if clock is None:
            return EINVAL
        self._write_u64(res_ptr, max(1, int(time.clock_getres(clock) * 1e9)))
        return ESUCCESS

    def _wasi_clock_time_get(self, clock_id: int, _precision: int, time_ptr: int) -> int:
        clock = self._CLOCKS.get(clock_id)
        if clock is None:
            return EINVAL
        self._write_u64(time_ptr, time.clock_gettime_ns(clock))
        return ESUCCESS

    def _wasi_random_get(self, buf: int, length: int) -> int:
        self._write(buf, os.urandom(length & MASK32))
        return ESUCCESS

    def _wasi_sched_yield(self) -> int:
        return ESUCCESS

    # -- descriptors ------------------------------------------------------------

    def _is_open(self, fd: int) -> bool:
        return fd in (STDIN, STDOUT, STDERR) and fd not in self._closed

    def _wasi_fd_write(self, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        sink = self._sinks.get(fd)
        if sink is None or not self._is_open(fd):
            return EBADF
        data = b"".join(self._read(buf, length) for buf, length in self._iovecs(iovs, iovs_len))
        sink.write(data)
        self._write_u32(nwritten_ptr, len(data))
        return ESUCCESS

    def _wasi_fd_read(self, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
        if fd != STDIN or not self._is_open(fd):
            return EBADF
        total = 0
        for buf, length in self._iovecs(iovs, iovs_len):
            data = self.stdin.read(length) if (self.stdin is not None and length) else b""
            self._write(buf, data)
            total += len(data)
            if len(data) < length:
                break
        self._write_u32(nread_ptr, total)
        return ESUCCESS

    def _wasi_fd_close(self, fd: int) -> int:
        if not self._is_open(fd):
            return EBADF
        self._closed.add(fd)
        return ESUCCESS

    def _wasi_fd_seek(self, fd: int, _offset: int, _whence: int, _newoffset_ptr: int) -> int:
        # stdio is a character device: not seekable (POSIX lseek on a tty: ESPIPE).
        return ESPIPE if self._is_open(fd) else EBADF

    def _wasi_fd_fdstat_get(self, fd: int, stat_ptr: int) -> int:
        if not self._is_open(fd):
            return EBADF
        # struct fdstat (witx): u8 fs_filetype, u16 fs_flags @2, u64 rights_base @8,
        # u64 rights_inheriting @16; 24 bytes.  No seek/tell rights, so wasi-libc's
        # isatty() sees a terminal and line-buffers stdout.
        rights = RIGHT_FD_READ if fd == STDIN else RIGHT_FD_WRITE
        self._write(stat_ptr, struct.pack("<BxHxxxxQQ", FILETYPE_CHARACTER_DEVICE, 0, rights, 0))
        return ESUCCESS

    def _wasi_fd_prestat_get(self, _fd: int, _buf: int) -> int:
        # No preopened directories: wasi-libc probes fds from 3 up until EBADF.
        return EBADF

    def _wasi_fd_prestat_dir_name(self, _fd: int, _path: int, _length: int) -> int:
        return EBADF

    def _wasi_proc_exit(self, status: int) -> None:
        raise WasiExit(status)


__all__ = ["MODULE", "SIGNATURES", "WasiContext", "WasiExit"]
