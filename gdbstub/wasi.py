"""WASI preview 1 (``wasi_snapshot_preview1``) for ``wasm-gdbstub run`` and ``serve``.

What a C program built with wasi-libc (``clang --target=wasm32-wasi``) expects
from its host: argv and environment, stdin/stdout/stderr, preopened directories
with the POSIX file calls over them (open, read, write, seek, stat, readdir,
mkdir, rename, links, times), clocks, random bytes, ``poll_oneoff`` (sleep and
stdin readiness), ``proc_exit``.  Sockets are not offered (every ``sock_*`` call
answers ``ENOTSOCK``), ``proc_raise`` answers ``ENOSYS``.

Behaviour follows ``wasmtime run`` (49), checked call by call by
tests/test_wasi.py, including its errno for each refusal.  Where it differs:
stdio is reported as a character device (wasi-libc then line-buffers stdout, so
output under a debugger appears when it is printed), an unknown clock or advice
value answers ``EINVAL`` instead of trapping.

Contract:

* :meth:`WasiContext.host_function` returns a :class:`codemem.Func` of exactly the
  type the module imports.  A known name imported with another type is a
  :class:`codemem.LinkError` (wasm spec 4.5.4: imports must match); an unknown
  name becomes a function that raises :class:`codemem.Trap` naming it when the
  guest calls it, so modules that merely *import* more of WASI still run.
* ``proc_exit(n)`` raises :class:`WasiExit` carrying ``n``; it unwinds the guest
  and comes out of the ``Func`` call (or ``Instance`` creation) that ran it.
* Every other call returns a WASI errno (witx ``enum errno``, :class:`Errno`).
  Host ``OSError``s are mapped to it in one place (:func:`wasi_errno`); a guest
  pointer outside linear memory is ``EFAULT``, never a host crash.
* Sandbox: a guest path names something inside the directory descriptor it is
  relative to, and nothing else.  Paths are resolved one component at a time
  with ``openat``-style calls (:meth:`WasiContext._resolve`): ``..`` above that
  directory, absolute paths and symbolic links leading out are refused with
  ``EPERM``, as wasmtime refuses them.

Function signatures and struct layouts follow the witx definitions of
``wasi_snapshot_preview1`` (WebAssembly/WASI, ``legacy/preview1/witx``), as
wasi-libc's ``wasi/api.h`` declares them.
"""
from __future__ import annotations

import codecs
import contextlib
import enum
import errno as host_errno
import fcntl
import io
import logging
import os
import select
import stat
import struct
import sys
import termios
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import codemem

from . import guest_output
from codemem import FuncType, LinkError, Trap, ValType

log = logging.getLogger(__name__)

MODULE = "wasi_snapshot_preview1"


class Errno(enum.IntEnum):
    """witx ``enum errno`` (u16): the values wasi-libc turns into C ``errno``."""
    SUCCESS = 0
    TOOBIG = 1  # witx "2big"
    ACCES = 2
    ADDRINUSE = 3
    ADDRNOTAVAIL = 4
    AFNOSUPPORT = 5
    AGAIN = 6
    ALREADY = 7
    BADF = 8
    BADMSG = 9
    BUSY = 10
    CANCELED = 11
    CHILD = 12
    CONNABORTED = 13
    CONNREFUSED = 14
    CONNRESET = 15
    DEADLK = 16
    DESTADDRREQ = 17
    DOM = 18
    DQUOT = 19
    EXIST = 20
    FAULT = 21
    FBIG = 22
    HOSTUNREACH = 23
    IDRM = 24
    ILSEQ = 25
    INPROGRESS = 26
    INTR = 27
    INVAL = 28
    IO = 29
    ISCONN = 30
    ISDIR = 31
    LOOP = 32
    MFILE = 33
    MLINK = 34
    MSGSIZE = 35
    MULTIHOP = 36
    NAMETOOLONG = 37
    NETDOWN = 38
    NETRESET = 39
    NETUNREACH = 40
    NFILE = 41
    NOBUFS = 42
    NODEV = 43
    NOENT = 44
    NOEXEC = 45
    NOLCK = 46
    NOLINK = 47
    NOMEM = 48
    NOMSG = 49
    NOPROTOOPT = 50
    NOSPC = 51
    NOSYS = 52
    NOTCONN = 53
    NOTDIR = 54
    NOTEMPTY = 55
    NOTRECOVERABLE = 56
    NOTSOCK = 57
    NOTSUP = 58
    NOTTY = 59
    NXIO = 60
    OVERFLOW = 61
    OWNERDEAD = 62
    PERM = 63
    PIPE = 64
    PROTO = 65
    PROTONOSUPPORT = 66
    PROTOTYPE = 67
    RANGE = 68
    ROFS = 69
    SPIPE = 70
    SRCH = 71
    STALE = 72
    TIMEDOUT = 73
    TXTBSY = 74
    XDEV = 75
    NOTCAPABLE = 76



def _host_errno_table() -> dict[int, Errno]:
    # The witx names are the POSIX names without the leading E, so the host's
    # errno module gives each its Linux number (E2BIG is the one exception).
    table = {host_errno.E2BIG: Errno.TOOBIG}
    for code in Errno:
        number = getattr(host_errno, "E" + code.name, None)
        if number is not None:
            table.setdefault(number, code)
    return table


_HOST_ERRNO = _host_errno_table()


def wasi_errno(error: OSError) -> Errno:
    """The WASI errno of a host ``OSError`` (EIO for one WASI has no name for)."""
    return _HOST_ERRNO.get(error.errno or 0, Errno.IO)


class WasiError(Exception):
    """A WASI call fails with ``errno``; the call returns it to the guest."""

    def __init__(self, errno: Errno, why: str = ""):
        self.errno = errno
        super().__init__(f"{errno.name}{': ' + why if why else ''}")


class WasiExit(Exception):
    """``proc_exit`` was called; ``status`` is its argument (a signed i32)."""

    def __init__(self, status: int):
        self.status = status
        super().__init__(f"wasi proc_exit({status})")


class _GuestFault(Exception):
    """A guest pointer outside linear memory (becomes EFAULT)."""


# filetype (witx enum filetype, u8).
FILETYPE_UNKNOWN = 0
FILETYPE_BLOCK_DEVICE = 1
FILETYPE_CHARACTER_DEVICE = 2
FILETYPE_DIRECTORY = 3
FILETYPE_REGULAR_FILE = 4
FILETYPE_SOCKET_STREAM = 6
FILETYPE_SYMBOLIC_LINK = 7


class Rights(enum.IntFlag):
    """witx ``flags rights`` (u64)."""
    FD_DATASYNC = 1 << 0
    FD_READ = 1 << 1
    FD_SEEK = 1 << 2
    FD_FDSTAT_SET_FLAGS = 1 << 3
    FD_SYNC = 1 << 4
    FD_TELL = 1 << 5
    FD_WRITE = 1 << 6
    FD_ADVISE = 1 << 7
    FD_ALLOCATE = 1 << 8
    PATH_CREATE_DIRECTORY = 1 << 9
    PATH_CREATE_FILE = 1 << 10
    PATH_LINK_SOURCE = 1 << 11
    PATH_LINK_TARGET = 1 << 12
    PATH_OPEN = 1 << 13
    FD_READDIR = 1 << 14
    PATH_READLINK = 1 << 15
    PATH_RENAME_SOURCE = 1 << 16
    PATH_RENAME_TARGET = 1 << 17
    PATH_FILESTAT_GET = 1 << 18
    PATH_FILESTAT_SET_SIZE = 1 << 19
    PATH_FILESTAT_SET_TIMES = 1 << 20
    FD_FILESTAT_GET = 1 << 21
    FD_FILESTAT_SET_SIZE = 1 << 22
    FD_FILESTAT_SET_TIMES = 1 << 23
    PATH_SYMLINK = 1 << 24
    PATH_REMOVE_DIRECTORY = 1 << 25
    PATH_UNLINK_FILE = 1 << 26
    POLL_FD_READWRITE = 1 << 27
    SOCK_SHUTDOWN = 1 << 28
    SOCK_ACCEPT = 1 << 29


# What fd_fdstat_get reports, as wasmtime reports it: a file gets every right
# but the read/write it was not opened for; a directory the path operations.
RIGHTS_ALL = (1 << 30) - 1
DIRECTORY_RIGHTS = int(
    Rights.PATH_CREATE_DIRECTORY | Rights.PATH_CREATE_FILE | Rights.PATH_LINK_SOURCE | Rights.PATH_LINK_TARGET
    | Rights.PATH_OPEN | Rights.FD_READDIR | Rights.PATH_READLINK | Rights.PATH_RENAME_SOURCE
    | Rights.PATH_RENAME_TARGET | Rights.PATH_FILESTAT_GET | Rights.PATH_FILESTAT_SET_TIMES
    | Rights.FD_FILESTAT_GET | Rights.FD_FILESTAT_SET_TIMES | Rights.PATH_SYMLINK
    | Rights.PATH_REMOVE_DIRECTORY | Rights.PATH_UNLINK_FILE)
DIRECTORY_INHERITING_RIGHTS = RIGHTS_ALL & ~int(Rights.PATH_FILESTAT_SET_SIZE | Rights.SOCK_SHUTDOWN
                                                | Rights.SOCK_ACCEPT)
#: path_open's rights that need a host descriptor open for reading / writing
#: (as wasmtime decides the access mode).
_READ_RIGHTS = Rights.FD_READ | Rights.FD_READDIR
_WRITE_RIGHTS = Rights.FD_DATASYNC | Rights.FD_WRITE | Rights.FD_ALLOCATE | Rights.FD_FILESTAT_SET_SIZE

# oflags (u16), fdflags (u16), lookupflags (u32), fstflags (u16), whence (u8), advice (u8).
OFLAGS_CREAT, OFLAGS_DIRECTORY, OFLAGS_EXCL, OFLAGS_TRUNC = 1, 2, 4, 8
FDFLAGS_APPEND, FDFLAGS_DSYNC, FDFLAGS_NONBLOCK, FDFLAGS_RSYNC, FDFLAGS_SYNC = 1, 2, 4, 8, 16
LOOKUP_SYMLINK_FOLLOW = 1
FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW, FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW = 1, 2, 4, 8
_WHENCE = {0: os.SEEK_SET, 1: os.SEEK_CUR, 2: os.SEEK_END}
_ADVICE = {0: os.POSIX_FADV_NORMAL, 1: os.POSIX_FADV_SEQUENTIAL, 2: os.POSIX_FADV_RANDOM,
           3: os.POSIX_FADV_WILLNEED, 4: os.POSIX_FADV_DONTNEED, 5: os.POSIX_FADV_NOREUSE}

# clockid (witx enum clockid).
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3

# eventtype (u8) and subclockflags (u16) of poll_oneoff.
EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE = 0, 1, 2
SUBCLOCKFLAGS_ABSTIME = 1

STDIN, STDOUT, STDERR = 0, 1, 2
MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF

#: Linux's limit on symbolic links followed in one lookup (path_resolution(7)).
MAX_SYMLINK_EXPANSIONS = 40

# Struct layouts (witx, little-endian, C alignment):
#
#   fdstat (24)    u8 filetype | pad | u16 flags | pad[4] | u64 rights_base | u64 rights_inheriting
#   filestat (64)  u64 dev | u64 ino | u8 filetype | pad[7] | u64 nlink | u64 size | u64 atim | u64 mtim | u64 ctim
#   prestat (8)    u8 tag (0: dir) | pad[3] | u32 pr_name_len
#   dirent (24)    u64 d_next | u64 d_ino | u32 d_namlen | u8 d_type | pad[3]   (then d_namlen name bytes)
#   subscription (48)  u64 userdata | u8 tag | pad[7] | union @16:
#                      clock: u32 id | pad[4] | u64 timeout | u64 precision | u16 flags | pad[6]
#                      fd_read / fd_write: u32 file_descriptor
#   event (32)     u64 userdata | u16 error | u8 type | pad[5] | u64 nbytes | u16 flags | pad[6]
_FDSTAT = struct.Struct("<BxHxxxxQQ")
_FILESTAT = struct.Struct("<QQBxxxxxxxQQQQQ")
_PRESTAT = struct.Struct("<BxxxI")
_DIRENT = struct.Struct("<QQIBxxx")
_SUBSCRIPTION_HEAD = struct.Struct("<QB")
_SUBSCRIPTION_CLOCK = struct.Struct("<IxxxxQQH")  # at offset 16
_SUBSCRIPTION_FD = struct.Struct("<I")  # at offset 16
_SUBSCRIPTION_SIZE = 48
_EVENT = struct.Struct("<QHBxxxxxQHxxxxxx")

_I32, _I64 = ValType.I32, ValType.I64


def _sig(shape: str, results: Sequence[ValType] = (_I32,)) -> FuncType:
    """A core function type from ``shape``: one letter per parameter, ``i`` i32, ``I`` i64."""
    return FuncType([_I32 if c == "i" else _I64 for c in shape], list(results))


#: The preview-1 functions, with their core-wasm types (pointers and sizes are
#: i32, offsets/timestamps/rights i64, every call but proc_exit returns an errno).
SIGNATURES: dict[str, FuncType] = {
    "args_get": _sig("ii"),
    "args_sizes_get": _sig("ii"),
    "environ_get": _sig("ii"),
    "environ_sizes_get": _sig("ii"),
    "clock_res_get": _sig("ii"),
    "clock_time_get": _sig("iIi"),
    "fd_advise": _sig("iIIi"),
    "fd_allocate": _sig("iII"),
    "fd_close": _sig("i"),
    "fd_datasync": _sig("i"),
    "fd_fdstat_get": _sig("ii"),
    "fd_fdstat_set_flags": _sig("ii"),
    "fd_fdstat_set_rights": _sig("iII"),
    "fd_filestat_get": _sig("ii"),
    "fd_filestat_set_size": _sig("iI"),
    "fd_filestat_set_times": _sig("iIIi"),
    "fd_pread": _sig("iiiIi"),
    "fd_prestat_get": _sig("ii"),
    "fd_prestat_dir_name": _sig("iii"),
    "fd_pwrite": _sig("iiiIi"),
    "fd_read": _sig("iiii"),
    "fd_readdir": _sig("iiiIi"),
    "fd_renumber": _sig("ii"),
    "fd_seek": _sig("iIii"),
    "fd_sync": _sig("i"),
    "fd_tell": _sig("ii"),
    "fd_write": _sig("iiii"),
    "path_create_directory": _sig("iii"),
    "path_filestat_get": _sig("iiiii"),
    "path_filestat_set_times": _sig("iiiiIIi"),
    "path_link": _sig("iiiiiii"),
    "path_open": _sig("iiiiiIIii"),
    "path_readlink": _sig("iiiiii"),
    "path_remove_directory": _sig("iii"),
    "path_rename": _sig("iiiiii"),
    "path_symlink": _sig("iiiii"),
    "path_unlink_file": _sig("iii"),
    "poll_oneoff": _sig("iiii"),
    "proc_exit": _sig("i", []),
    "proc_raise": _sig("i"),
    "random_get": _sig("ii"),
    "sched_yield": _sig(""),
    "sock_accept": _sig("iii"),
    "sock_recv": _sig("iiiiii"),
    "sock_send": _sig("iiiii"),
    "sock_shutdown": _sig("ii"),
}


# --------------------------------------------------------------------------
# Configuration: what the command line grants the guest
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preopen:
    """A host directory the guest may use, under the name ``guest``."""
    host: str
    guest: str

    @classmethod
    def parse(cls, text: str) -> "Preopen":
        """``HOST`` or ``HOST::GUEST``, as ``wasmtime run --dir`` takes it."""
        host, sep, guest = text.partition("::")
        if not host or (sep and not guest):
            raise ValueError(f"--dir {text!r}: expected HOST_DIR or HOST_DIR::GUEST_DIR")
        return cls(host, guest if sep else host)


def parse_env(items: Sequence[str], environ: dict[str, str] | None = None) -> list[str]:
    """``NAME=VALUE`` items as given, ``NAME`` alone inherits the host's value
    (and is left out when the host has none), as ``wasmtime run --env`` does."""
    environ = os.environ if environ is None else environ
    result = []
    for item in items:
        name, sep, _ = item.partition("=")
        if not name:
            raise ValueError(f"--env {item!r}: the variable name is empty")
        if sep:
            result.append(item)
        elif name in environ:
            result.append(f"{name}={environ[name]}")
    return result


@dataclass(frozen=True)
class WasiOptions:
    """What ``run``/``serve`` grant a guest: preopened directories, environment
    (``NAME=value`` strings) and stdin (a binary stream; None: always at EOF)."""
    preopens: tuple[Preopen, ...] = ()
    env: tuple[str, ...] = ()
    stdin: Any = None

    def context(self, args: Sequence[str], *, stdout: Any = None, stderr: Any = None) -> "WasiContext":
        """A :class:`WasiContext` with these grants and ``args`` as argv
        (raises ValueError naming a ``--dir`` that cannot be opened)."""
        return WasiContext(args=args, env=self.env, preopens=self.preopens, stdin=self.stdin,
                           stdout=stdout, stderr=stderr)


# --------------------------------------------------------------------------
# Streams and descriptors
# --------------------------------------------------------------------------


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


class _InputSource:
    """The guest's stdin: a binary stream (or a text stream's ``buffer``), or
    nothing (always at end of file).

    A stream backed by a file descriptor is read with ``os.read`` on that
    descriptor: one read returns what is there (a line typed on a terminal)
    instead of waiting until the guest's whole buffer is full.
    """

    def __init__(self, stream: Any):
        if isinstance(stream, io.TextIOBase):
            stream = getattr(stream, "buffer", stream)
        self.stream = stream
        self.fd: int | None = None
        if stream is not None and not isinstance(stream, io.BytesIO):
            try:
                self.fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                self.fd = None  # not backed by a descriptor (pytest's capture, a pipe object)

    def read(self, size: int) -> bytes:
        if self.stream is None or size == 0:
            return b""
        if self.fd is not None:
            return os.read(self.fd, size)
        read1 = getattr(self.stream, "read1", None)
        data = read1(size) if read1 is not None else self.stream.read(size)
        if isinstance(data, str):
            data = data.encode()
        return data or b""

    def ready(self, timeout: float | None) -> bool:
        """True when a read would not block (within ``timeout`` seconds; None: wait)."""
        if self.stream is None or self.fd is None:
            return True
        readable, _, _ = select.select([self.fd], [], [], timeout)
        return bool(readable)

    def available(self) -> int:
        """Bytes readable now (FIONREAD), for poll_oneoff's ``nbytes``."""
        if self.fd is None:
            return 1
        try:
            buffer = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 1
        return struct.unpack("<i", buffer)[0]


@dataclass
class _Descriptor:
    """One entry of the guest's descriptor table.

    stdio entries carry a ``sink`` or ``source``; files and directories a
    ``host_fd`` this context owns; a preopened directory also its guest name.
    """
    filetype: int
    rights_base: int
    rights_inheriting: int
    fdflags: int = 0
    host_fd: int | None = None
    sink: _OutputSink | None = None
    source: _InputSource | None = None
    preopen: bytes | None = None
    #: fd_readdir's listing, taken when the guest reads from cookie 0.
    listing: list[tuple[bytes, int, int]] | None = field(default=None, repr=False)


def _filetype_of(mode: int) -> int:
    if stat.S_ISREG(mode):
        return FILETYPE_REGULAR_FILE
    if stat.S_ISDIR(mode):
        return FILETYPE_DIRECTORY
    if stat.S_ISLNK(mode):
        return FILETYPE_SYMBOLIC_LINK
    if stat.S_ISCHR(mode):
        return FILETYPE_CHARACTER_DEVICE
    if stat.S_ISBLK(mode):
        return FILETYPE_BLOCK_DEVICE
    if stat.S_ISSOCK(mode):
        return FILETYPE_SOCKET_STREAM
    return FILETYPE_UNKNOWN  # a FIFO: WASI has no filetype for it


def _filestat_bytes(st: os.stat_result) -> bytes:
    return _FILESTAT.pack(st.st_dev & MASK64, st.st_ino & MASK64, _filetype_of(st.st_mode), st.st_nlink,
                          st.st_size, st.st_atime_ns & MASK64, st.st_mtime_ns & MASK64, st.st_ctime_ns & MASK64)


# --------------------------------------------------------------------------
# The context
# --------------------------------------------------------------------------


class WasiContext:
    """The host state of one WASI program: arguments, environment, stdio and
    its descriptor table.

    ``args`` is the whole argv (argv[0] included, as wasmtime passes the module
    name); ``env`` a sequence of ``"NAME=value"`` strings (empty by default: no
    host environment leaks into the guest).  ``stdout``/``stderr`` are Python
    streams, text or binary; ``stdin`` an optional binary stream (absent: EOF).
    ``preopens`` are opened now, as descriptors 3, 4, ... in order (ValueError
    naming one that is not a directory we can open); :meth:`close` releases them
    and every file the guest left open.
    """

    def __init__(self, *, args: Sequence[str] = (), env: Sequence[str] = (),
                 stdout: Any = None, stderr: Any = None, stdin: Any = None,
                 preopens: Sequence[Preopen] = ()):
        self.args = list(args)
        self.env = list(env)
        self._fds: dict[int, _Descriptor] = {
            STDIN: _Descriptor(FILETYPE_CHARACTER_DEVICE, int(Rights.FD_READ), int(Rights.FD_READ),
                               source=_InputSource(stdin)),
            STDOUT: _Descriptor(FILETYPE_CHARACTER_DEVICE, int(Rights.FD_WRITE), int(Rights.FD_WRITE),
                                sink=_OutputSink(stdout if stdout is not None else sys.stdout)),
            STDERR: _Descriptor(FILETYPE_CHARACTER_DEVICE, int(Rights.FD_WRITE), int(Rights.FD_WRITE),
                                sink=_OutputSink(stderr if stderr is not None else sys.stderr)),
        }
        self._sinks = [self._fds[STDOUT].sink, self._fds[STDERR].sink]
        try:
            for preopen in preopens:
                self._open_preopen(preopen)
        except BaseException:
            self.close()
            raise
        self._store: codemem.Store | None = None
        self._module: codemem.Module | None = None
        self._instance: codemem.Instance | None = None

    def _open_preopen(self, preopen: Preopen) -> None:
        try:
            host_fd = os.open(preopen.host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ValueError(f"--dir {preopen.host}: cannot open the directory: {e.strerror}") from None
        self._fds[len(self._fds)] = _Descriptor(FILETYPE_DIRECTORY, DIRECTORY_RIGHTS, DIRECTORY_INHERITING_RIGHTS,
                                                host_fd=host_fd, preopen=os.fsencode(preopen.guest))

    def close(self) -> None:
        """Closes every host descriptor the guest holds (idempotent)."""
        for number in list(self._fds):
            descriptor = self._fds[number]
            if descriptor.host_fd is not None:
                self._fds.pop(number)
                with contextlib.suppress(OSError):
                    os.close(descriptor.host_fd)

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
        """The one place where failures become the errno the guest sees."""
        def call(*args):
            try:
                result = method(*args)
            except WasiError as e:
                log.debug("%s%r -> %s", name, args, e)
                return int(e.errno)
            except _GuestFault as fault:
                log.debug("%s: %s -> EFAULT", name, fault)
                return int(Errno.FAULT)
            except OSError as e:
                code = wasi_errno(e)
                log.debug("%s%r: %s -> %s", name, args, e, code.name)
                return int(code)
            except OverflowError as e:  # an offset or time the host's types cannot hold
                log.debug("%s%r: %s -> EINVAL", name, args, e)
                return int(Errno.INVAL)
            return int(result) if result is not None else None
        call.__name__ = name
        return call

    def flush(self) -> None:
        """Flushes stdout and stderr (call after the program ends)."""
        for sink in self._sinks:
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
            return self._memory().read(pointer & MASK32, length & MASK32)
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
        self._write(pointer, struct.pack("<Q", value & MASK64))

    def _iovecs(self, iovs: int, count: int) -> list[tuple[int, int]]:
        """(buf, len) pairs of an iovec/ciovec array (witx: two u32 each)."""
        count &= MASK32
        raw = self._read(iovs, 8 * count)
        return [struct.unpack_from("<II", raw, 8 * k) for k in range(count)]

    def _gather(self, iovs: int, count: int) -> bytes:
        return b"".join(self._read(buf, length) for buf, length in self._iovecs(iovs, count))

    def _scatter(self, iovecs: list[tuple[int, int]], data: bytes) -> None:
        at = 0
        for buf, length in iovecs:
            if at >= len(data):
                break
            self._write(buf, data[at:at + length])
            at += length

    def _path(self, pointer: int, length: int) -> bytes:
        return self._read(pointer, length)

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
        return Errno.SUCCESS

    def _wasi_args_sizes_get(self, argc_ptr: int, size_ptr: int) -> int:
        count, size = self._strings_sizes(self.args)
        self._write_u32(argc_ptr, count)
        self._write_u32(size_ptr, size)
        return Errno.SUCCESS

    def _wasi_args_get(self, argv: int, argv_buf: int) -> int:
        return self._strings_get(self.args, argv, argv_buf)

    def _wasi_environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        count, size = self._strings_sizes(self.env)
        self._write_u32(count_ptr, count)
        self._write_u32(size_ptr, size)
        return Errno.SUCCESS

    def _wasi_environ_get(self, environ: int, environ_buf: int) -> int:
        return self._strings_get(self.env, environ, environ_buf)

    # -- clocks, randomness, scheduling, signals ----------------------------

    _CLOCKS = {
        CLOCK_REALTIME: time.CLOCK_REALTIME,
        CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
        CLOCK_PROCESS_CPUTIME_ID: time.CLOCK_PROCESS_CPUTIME_ID,
        CLOCK_THREAD_CPUTIME_ID: time.CLOCK_THREAD_CPUTIME_ID,
    }

    def _clock(self, clock_id: int) -> int:
        clock = self._CLOCKS.get(clock_id)
        if clock is None:
            raise WasiError(Errno.INVAL, f"unknown clock {clock_id}")
        return clock

    def _wasi_clock_res_get(self, clock_id: int, res_ptr: int) -> int:
        self._write_u64(res_ptr, max(1, int(time.clock_getres(self._clock(clock_id)) * 1e9)))
        return Errno.SUCCESS

    def _wasi_clock_time_get(self, clock_id: int, _precision: int, time_ptr: int) -> int:
        self._write_u64(time_ptr, time.clock_gettime_ns(self._clock(clock_id)))
        return Errno.SUCCESS

    def _wasi_random_get(self, buf: int, length: int) -> int:
        self._write(buf, os.urandom(length & MASK32))
        return Errno.SUCCESS

    def _wasi_sched_yield(self) -> int:
        os.sched_yield()
        return Errno.SUCCESS

    def _wasi_proc_raise(self, _signal: int) -> int:
        # No signals in this host (wasi-libc no longer imports proc_raise).
        return Errno.NOSYS

    def _wasi_proc_exit(self, status: int) -> None:
        raise WasiExit(status)

    # -- the descriptor table ---------------------------------------------

    def _descriptor(self, fd: int) -> _Descriptor:
        descriptor = self._fds.get(fd & MASK32)
        if descriptor is None:
            raise WasiError(Errno.BADF, f"fd {fd} is not open")
        return descriptor

    def _file(self, fd: int) -> _Descriptor:
        """A descriptor with a host file behind it: a file or a directory."""
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            raise WasiError(Errno.BADF, f"fd {fd} is not a file")
        return descriptor

    def _regular(self, fd: int) -> int:
        """The host fd of a non-directory file (reads, writes and seeks)."""
        descriptor = self._file(fd)
        if descriptor.filetype == FILETYPE_DIRECTORY:
            raise WasiError(Errno.BADF, f"fd {fd} is a directory")
        return descriptor.host_fd

    def _directory(self, fd: int) -> int:
        """The host fd of a directory descriptor (the base of a path call)."""
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            raise WasiError(Errno.BADF, f"fd {fd} is not a directory")
        if descriptor.filetype != FILETYPE_DIRECTORY:
            raise WasiError(Errno.NOTDIR, f"fd {fd} is not a directory")
        return descriptor.host_fd

    def _insert(self, descriptor: _Descriptor) -> int:
        number = 0
        while number in self._fds:  # the lowest free number, as POSIX open() picks
            number += 1
        self._fds[number] = descriptor
        return number

    # -- descriptor calls ---------------------------------------------------

    def _wasi_fd_write(self, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        descriptor = self._descriptor(fd)
        data = self._gather(iovs, iovs_len)
        if descriptor.sink is not None:
            descriptor.sink.write(data)
            written = len(data)
            if self._store is not None:
                # An attached debugger's console hears it too.
                guest_output.emit(self._store, STDOUT if descriptor.sink is self._sinks[0] else STDERR, data)
        elif descriptor.source is not None:
            raise WasiError(Errno.BADF, "stdin is not writable")
        else:
            written = os.write(self._regular(fd), data)
        self._write_u32(nwritten_ptr, written)
        return Errno.SUCCESS

    def _wasi_fd_pwrite(self, fd: int, iovs: int, iovs_len: int, offset: int, nwritten_ptr: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            raise WasiError(Errno.SPIPE, "stdio cannot be written at an offset")
        written = os.pwrite(self._regular(fd), self._gather(iovs, iovs_len), offset)
        self._write_u32(nwritten_ptr, written)
        return Errno.SUCCESS

    def _wasi_fd_read(self, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
        descriptor = self._descriptor(fd)
        iovecs = self._iovecs(iovs, iovs_len)
        size = sum(length for _, length in iovecs)
        # One host read for all the buffers, as readv(2) does: a short read
        # (a terminal line, the end of a pipe's contents) ends the call.
        if descriptor.source is not None:
            data = descriptor.source.read(size)
        elif descriptor.sink is not None:
            raise WasiError(Errno.BADF, "stdout/stderr are not readable")
        else:
            data = os.read(self._regular(fd), size)
        self._scatter(iovecs, data)
        self._write_u32(nread_ptr, len(data))
        return Errno.SUCCESS

    def _wasi_fd_pread(self, fd: int, iovs: int, iovs_len: int, offset: int, nread_ptr: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            raise WasiError(Errno.SPIPE, "stdio cannot be read at an offset")
        iovecs = self._iovecs(iovs, iovs_len)
        data = os.pread(self._regular(fd), sum(length for _, length in iovecs), offset)
        self._scatter(iovecs, data)
        self._write_u32(nread_ptr, len(data))
        return Errno.SUCCESS

    def _seekable(self, fd: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            # stdio is a character device: not seekable (POSIX lseek on a tty: ESPIPE).
            raise WasiError(Errno.SPIPE)
        return self._regular(fd)

    def _wasi_fd_seek(self, fd: int, offset: int, whence: int, newoffset_ptr: int) -> int:
        host_fd = self._seekable(fd)
        if whence not in _WHENCE:
            raise WasiError(Errno.INVAL, f"whence {whence}")
        self._write_u64(newoffset_ptr, os.lseek(host_fd, offset, _WHENCE[whence]))
        return Errno.SUCCESS

    def _wasi_fd_tell(self, fd: int, offset_ptr: int) -> int:
        self._write_u64(offset_ptr, os.lseek(self._seekable(fd), 0, os.SEEK_CUR))
        return Errno.SUCCESS

    def _wasi_fd_close(self, fd: int) -> int:
        descriptor = self._descriptor(fd)
        del self._fds[fd & MASK32]
        if descriptor.host_fd is not None:
            os.close(descriptor.host_fd)
        return Errno.SUCCESS

    def _wasi_fd_renumber(self, fd: int, to: int) -> int:
        # Both must be open (wasmtime answers EBADF for a closed `to`).
        descriptor, target = self._descriptor(fd), self._descriptor(to)
        if fd == to:
            return Errno.SUCCESS
        self._fds[to & MASK32] = descriptor
        del self._fds[fd & MASK32]
        if target.host_fd is not None:
            os.close(target.host_fd)
        return Errno.SUCCESS

    def _wasi_fd_sync(self, fd: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.sink is not None:
            descriptor.sink.flush()
        elif descriptor.host_fd is not None:
            os.fsync(descriptor.host_fd)
        return Errno.SUCCESS

    def _wasi_fd_datasync(self, fd: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.sink is not None:
            descriptor.sink.flush()
        elif descriptor.host_fd is not None:
            os.fdatasync(descriptor.host_fd)
        return Errno.SUCCESS

    def _wasi_fd_advise(self, fd: int, offset: int, length: int, advice: int) -> int:
        host_fd = self._regular(fd)
        if advice not in _ADVICE:
            raise WasiError(Errno.INVAL, f"advice {advice}")
        os.posix_fadvise(host_fd, offset, length, _ADVICE[advice])
        return Errno.SUCCESS

    def _wasi_fd_allocate(self, fd: int, _offset: int, _length: int) -> int:
        self._regular(fd)
        return Errno.NOTSUP  # as wasmtime: preview 2 has no allocate

    def _wasi_fd_fdstat_get(self, fd: int, stat_ptr: int) -> int:
        # stdio has no seek/tell rights, so wasi-libc's isatty() sees a terminal
        # and line-buffers stdout.
        d = self._descriptor(fd)
        self._write(stat_ptr, _FDSTAT.pack(d.filetype, d.fdflags, d.rights_base, d.rights_inheriting))
        return Errno.SUCCESS

    def _wasi_fd_fdstat_set_flags(self, fd: int, flags: int) -> int:
        descriptor = self._descriptor(fd)
        if flags & ~(FDFLAGS_APPEND | FDFLAGS_NONBLOCK) or descriptor.host_fd is None:
            raise WasiError(Errno.NOTSUP, f"flags {flags:#x} cannot be changed on fd {fd}")
        host_flags = os.O_APPEND if flags & FDFLAGS_APPEND else 0
        host_flags |= os.O_NONBLOCK if flags & FDFLAGS_NONBLOCK else 0
        current = fcntl.fcntl(descriptor.host_fd, fcntl.F_GETFL)
        fcntl.fcntl(descriptor.host_fd, fcntl.F_SETFL, (current & ~(os.O_APPEND | os.O_NONBLOCK)) | host_flags)
        descriptor.fdflags = (descriptor.fdflags & ~(FDFLAGS_APPEND | FDFLAGS_NONBLOCK)) | flags
        return Errno.SUCCESS

    def _wasi_fd_fdstat_set_rights(self, fd: int, base: int, inheriting: int) -> int:
        descriptor = self._descriptor(fd)
        base, inheriting = base & MASK64, inheriting & MASK64
        if base & ~descriptor.rights_base or inheriting & ~descriptor.rights_inheriting:
            raise WasiError(Errno.NOTCAPABLE, "rights can only be dropped")
        descriptor.rights_base, descriptor.rights_inheriting = base, inheriting
        return Errno.SUCCESS

    def _wasi_fd_filestat_get(self, fd: int, buf: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None:
            self._write(buf, _FILESTAT.pack(0, 0, descriptor.filetype, 0, 0, 0, 0, 0))
        else:
            self._write(buf, _filestat_bytes(os.fstat(descriptor.host_fd)))
        return Errno.SUCCESS

    def _wasi_fd_filestat_set_size(self, fd: int, size: int) -> int:
        os.ftruncate(self._regular(fd), size)
        return Errno.SUCCESS

    @staticmethod
    def _times(current: os.stat_result, atim: int, mtim: int, fstflags: int) -> tuple[int, int]:
        """The (atime, mtime) in ns for a set_times call; the one not named keeps its value."""
        if (fstflags & FSTFLAGS_ATIM and fstflags & FSTFLAGS_ATIM_NOW) or \
                (fstflags & FSTFLAGS_MTIM and fstflags & FSTFLAGS_MTIM_NOW):
            raise WasiError(Errno.INVAL, "a time is both given and `now`")
        now = time.time_ns()
        atime = now if fstflags & FSTFLAGS_ATIM_NOW else atim if fstflags & FSTFLAGS_ATIM else current.st_atime_ns
        mtime = now if fstflags & FSTFLAGS_MTIM_NOW else mtim if fstflags & FSTFLAGS_MTIM else current.st_mtime_ns
        return atime & MASK64, mtime & MASK64

    def _wasi_fd_filestat_set_times(self, fd: int, atim: int, mtim: int, fstflags: int) -> int:
        host_fd = self._file(fd).host_fd
        os.utime(host_fd, ns=self._times(os.fstat(host_fd), atim, mtim, fstflags))
        return Errno.SUCCESS

    def _wasi_fd_prestat_get(self, fd: int, buf: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.preopen is None:
            raise WasiError(Errno.BADF, f"fd {fd} is not a preopened directory")
        self._write(buf, _PRESTAT.pack(0, len(descriptor.preopen)))
        return Errno.SUCCESS

    def _wasi_fd_prestat_dir_name(self, fd: int, path: int, length: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.preopen is None:
            raise WasiError(Errno.BADF, f"fd {fd} is not a preopened directory")
        if (length & MASK32) < len(descriptor.preopen):
            raise WasiError(Errno.NAMETOOLONG)
        self._write(path, descriptor.preopen)
        return Errno.SUCCESS

    def _listing(self, descriptor: _Descriptor) -> list[tuple[bytes, int, int]]:
        """(name, inode, filetype) of a directory's entries, ``.`` and ``..`` first
        (as wasmtime lists them), the rest in the host's order."""
        host_fd = descriptor.host_fd
        here = os.fstat(host_fd)
        up = os.stat("..", dir_fd=host_fd)
        entries = [(b".", here.st_ino, FILETYPE_DIRECTORY), (b"..", up.st_ino, FILETYPE_DIRECTORY)]
        with os.scandir(host_fd) as scan:
            for entry in scan:
                try:
                    filetype = _filetype_of(entry.stat(follow_symlinks=False).st_mode)
                except OSError:
                    filetype = FILETYPE_UNKNOWN  # removed since it was listed
                entries.append((os.fsencode(entry.name), entry.inode(), filetype))
        return entries

    def _wasi_fd_readdir(self, fd: int, buf: int, buf_len: int, cookie: int, bufused_ptr: int) -> int:
        descriptor = self._descriptor(fd)
        if descriptor.host_fd is None or descriptor.filetype != FILETYPE_DIRECTORY:
            raise WasiError(Errno.BADF, f"fd {fd} is not a directory")
        cookie &= MASK64
        if cookie == 0 or descriptor.listing is None:
            descriptor.listing = self._listing(descriptor)
        # Entries are packed back to back; the last one is cut off where the
        # buffer ends, and a full buffer tells the reader to call again from
        # the last whole entry's d_next (witx fd_readdir).
        out = bytearray()
        buf_len &= MASK32
        for index in range(cookie, len(descriptor.listing)):
            if len(out) >= buf_len:
                break
            name, inode, filetype = descriptor.listing[index]
            out += _DIRENT.pack(index + 1, inode & MASK64, len(name), filetype) + name
        out = out[:buf_len]
        self._write(buf, bytes(out))
        self._write_u32(bufused_ptr, len(out))
        return Errno.SUCCESS

    # -- path resolution: the sandbox -----------------------------------------

    @contextlib.contextmanager
    def _resolve(self, base_fd: int, path: bytes, *, follow: bool) -> Iterator[tuple[int, bytes, bool]]:
        """Yields ``(dir_fd, name, must_be_directory)`` for ``path`` relative to
        the directory ``base_fd``: ``name`` is one component (never ``..``, maybe
        ``.``) in the directory ``dir_fd``, which is ``base_fd`` or below it.

        The walk opens each intermediate directory with ``O_NOFOLLOW`` relative
        to the previous one (openat), keeping the chain open so ``..`` goes back
        one step and can never climb above ``base_fd``.  A symbolic link met on
        the way (and the last component's when ``follow``) is read and its
        target spliced into the remaining components, so it gets the same
        checks.  Refused with EPERM, as wasmtime refuses them: an absolute
        path, an absolute link target, ``..`` above ``base_fd``.  A trailing
        ``/`` follows a final link and requires a directory (POSIX
        path_resolution(7)).  Because every step is relative to an open
        descriptor and never follows a link itself, renaming directories while
        the walk runs cannot lead it outside either.
        """
        if not path:
            raise WasiError(Errno.NOENT, "empty path")
        if b"\0" in path:
            raise WasiError(Errno.INVAL, "NUL in a path")
        if path.startswith(b"/"):
            raise WasiError(Errno.PERM, f"absolute path {path!r}")
        pending = path.split(b"/")
        chain = [base_fd]
        expansions = 0
        try:
            while True:
                name = pending.pop(0)
                rest_is_empty = all(part in (b"", b".") for part in pending)
                if name in (b"", b"."):
                    if not pending:
                        yield chain[-1], b".", True
                        return
                    continue
                must_be_directory = rest_is_empty and bool(pending)
                if name == b"..":
                    if len(chain) == 1:
                        raise WasiError(Errno.PERM, f"{path!r} leads out of its directory")
                    os.close(chain.pop())
                    if rest_is_empty:
                        yield chain[-1], b".", True
                        return
                    continue
                last = rest_is_empty
                if last and not follow and not must_be_directory:
                    yield chain[-1], name, False
                    return
                try:
                    target = os.readlink(name, dir_fd=chain[-1])
                except OSError as e:
                    if e.errno == host_errno.EINVAL:
                        target = None  # not a symbolic link
                    elif e.errno == host_errno.ENOENT and last:
                        yield chain[-1], name, must_be_directory  # to be created, or ENOENT
                        return
                    else:
                        raise
                if target is not None:
                    expansions += 1
                    if expansions > MAX_SYMLINK_EXPANSIONS:
                        raise WasiError(Errno.LOOP, f"too many symbolic links in {path!r}")
                    if target.startswith(b"/"):
                        raise WasiError(Errno.PERM, f"{path!r} meets a link to the absolute path {target!r}")
                    pending[:0] = target.split(b"/")
                    continue
                if last:
                    yield chain[-1], name, must_be_directory
                    return
                chain.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=chain[-1]))
        finally:
            for opened in chain[1:]:
                os.close(opened)

    def _resolved(self, fd: int, path_ptr: int, path_len: int, *, follow: bool):
        return self._resolve(self._directory(fd), self._path(path_ptr, path_len), follow=follow)

    # -- path calls -----------------------------------------------------------

    def _wasi_path_open(self, fd: int, dirflags: int, path_ptr: int, path_len: int, oflags: int,
                        rights_base: int, rights_inheriting: int, fdflags: int, fd_ptr: int) -> int:
        rights_base &= MASK64
        readable = bool(rights_base & _READ_RIGHTS)
        writable = bool(rights_base & _WRITE_RIGHTS) or bool(fdflags & FDFLAGS_APPEND)
        flags = os.O_CLOEXEC | os.O_NOFOLLOW  # a final link was resolved already, or must not be followed
        flags |= os.O_RDWR if readable and writable else os.O_WRONLY if writable else os.O_RDONLY
        flags |= os.O_CREAT if oflags & OFLAGS_CREAT else 0
        flags |= os.O_EXCL if oflags & OFLAGS_EXCL else 0
        flags |= os.O_TRUNC if oflags & OFLAGS_TRUNC else 0
        flags |= os.O_APPEND if fdflags & FDFLAGS_APPEND else 0
        flags |= os.O_NONBLOCK if fdflags & FDFLAGS_NONBLOCK else 0
        flags |= os.O_DSYNC if fdflags & FDFLAGS_DSYNC else 0
        flags |= os.O_SYNC if fdflags & (FDFLAGS_SYNC | FDFLAGS_RSYNC) else 0
        with self._resolved(fd, path_ptr, path_len, follow=bool(dirflags & LOOKUP_SYMLINK_FOLLOW)) as \
                (dir_fd, name, must_be_directory):
            if oflags & OFLAGS_DIRECTORY or must_be_directory:
                flags |= os.O_DIRECTORY
            host_fd = os.open(name, flags, 0o666, dir_fd=dir_fd)
        try:
            filetype = _filetype_of(os.fstat(host_fd).st_mode)
            if filetype == FILETYPE_DIRECTORY:
                base, inheriting = DIRECTORY_RIGHTS, DIRECTORY_INHERITING_RIGHTS
            else:
                base = RIGHTS_ALL & ~(0 if readable else int(Rights.FD_READ)) \
                    & ~(0 if writable else int(Rights.FD_WRITE))
                inheriting = base
            number = self._insert(_Descriptor(filetype, int(base), int(inheriting),
                                              fdflags=fdflags & (FDFLAGS_APPEND | FDFLAGS_NONBLOCK | FDFLAGS_DSYNC
                                                                 | FDFLAGS_SYNC | FDFLAGS_RSYNC),
                                              host_fd=host_fd))
        except BaseException:
            os.close(host_fd)
            raise
        try:
            self._write_u32(fd_ptr, number)
        except _GuestFault:
            self._wasi_fd_close(number)
            raise
        return Errno.SUCCESS

    def _wasi_path_filestat_get(self, fd: int, flags: int, path_ptr: int, path_len: int, buf: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=bool(flags & LOOKUP_SYMLINK_FOLLOW)) as \
                (dir_fd, name, must_be_directory):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if must_be_directory and not stat.S_ISDIR(st.st_mode):
            raise WasiError(Errno.NOTDIR)
        self._write(buf, _filestat_bytes(st))
        return Errno.SUCCESS

    def _wasi_path_filestat_set_times(self, fd: int, flags: int, path_ptr: int, path_len: int,
                                      atim: int, mtim: int, fstflags: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=bool(flags & LOOKUP_SYMLINK_FOLLOW)) as \
                (dir_fd, name, _):
            current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            os.utime(name, ns=self._times(current, atim, mtim, fstflags), dir_fd=dir_fd, follow_symlinks=False)
        return Errno.SUCCESS

    def _wasi_path_create_directory(self, fd: int, path_ptr: int, path_len: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=False) as (dir_fd, name, _):
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        return Errno.SUCCESS

    def _wasi_path_remove_directory(self, fd: int, path_ptr: int, path_len: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=False) as (dir_fd, name, _):
            os.rmdir(name, dir_fd=dir_fd)
        return Errno.SUCCESS

    def _wasi_path_unlink_file(self, fd: int, path_ptr: int, path_len: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=False) as (dir_fd, name, must_be_directory):
            if must_be_directory:
                # "file/" names a directory that is not there (unlinkat would
                # remove the file); a real directory is EISDIR as always.
                is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
                raise WasiError(Errno.ISDIR if is_dir else Errno.NOTDIR)
            os.unlink(name, dir_fd=dir_fd)
        return Errno.SUCCESS

    def _wasi_path_rename(self, fd: int, old_ptr: int, old_len: int, new_fd: int, new_ptr: int,
                          new_len: int) -> int:
        with self._resolved(fd, old_ptr, old_len, follow=False) as (old_dir, old_name, _), \
                self._resolved(new_fd, new_ptr, new_len, follow=False) as (new_dir, new_name, _):
            os.rename(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir)
        return Errno.SUCCESS

    def _wasi_path_link(self, old_fd: int, old_flags: int, old_ptr: int, old_len: int, new_fd: int,
                        new_ptr: int, new_len: int) -> int:
        with self._resolved(old_fd, old_ptr, old_len, follow=bool(old_flags & LOOKUP_SYMLINK_FOLLOW)) as \
                (old_dir, old_name, _), \
                self._resolved(new_fd, new_ptr, new_len, follow=False) as (new_dir, new_name, _):
            os.link(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir, follow_symlinks=False)
        return Errno.SUCCESS

    def _wasi_path_symlink(self, old_ptr: int, old_len: int, fd: int, new_ptr: int, new_len: int) -> int:
        target = self._path(old_ptr, old_len)
        if target.startswith(b"/"):
            # A link to an absolute path could never be followed in the sandbox;
            # wasmtime refuses to make one.
            raise WasiError(Errno.PERM, f"absolute link target {target!r}")
        if b"\0" in target:
            raise WasiError(Errno.INVAL, "NUL in a link target")
        with self._resolved(fd, new_ptr, new_len, follow=False) as (dir_fd, name, _):
            os.symlink(target, name, dir_fd=dir_fd)
        return Errno.SUCCESS

    def _wasi_path_readlink(self, fd: int, path_ptr: int, path_len: int, buf: int, buf_len: int,
                            bufused_ptr: int) -> int:
        with self._resolved(fd, path_ptr, path_len, follow=False) as (dir_fd, name, _):
            target = os.readlink(name, dir_fd=dir_fd)
        if target.startswith(b"/"):
            raise WasiError(Errno.PERM, f"link to the absolute path {target!r}")  # as wasmtime
        data = target[:buf_len & MASK32]  # truncated to the buffer, like readlink(2)
        self._write(buf, data)
        self._write_u32(bufused_ptr, len(data))
        return Errno.SUCCESS

    # -- poll_oneoff --------------------------------------------------------------

    def _wasi_poll_oneoff(self, in_ptr: int, out_ptr: int, nsubscriptions: int, nevents_ptr: int) -> int:
        """Waits for the first of: a clock deadline, stdin readable, any other
        descriptor ready (files and stdout are always ready).  Each ready
        subscription gets one event, written to ``out`` in subscription order."""
        count = nsubscriptions & MASK32
        if count == 0:
            raise WasiError(Errno.INVAL, "no subscriptions")
        raw = self._read(in_ptr, _SUBSCRIPTION_SIZE * count)
        events: list[bytes] = []
        clocks: list[tuple[int, float]] = []  # (userdata, seconds to wait)
        waiting: list[tuple[int, int, _InputSource]] = []  # (userdata, type, stdin source)
        for k in range(count):
            at = _SUBSCRIPTION_SIZE * k
            userdata, tag = _SUBSCRIPTION_HEAD.unpack_from(raw, at)
            if tag == EVENTTYPE_CLOCK:
                clock_id, timeout, _precision, flags = _SUBSCRIPTION_CLOCK.unpack_from(raw, at + 16)
                clock = self._CLOCKS.get(clock_id)
                if clock is None:
                    events.append(_EVENT.pack(userdata, Errno.INVAL, tag, 0, 0))
                    continue
                if flags & SUBCLOCKFLAGS_ABSTIME:
                    timeout -= time.clock_gettime_ns(clock)
                clocks.append((userdata, max(0, timeout) / 1e9))
            elif tag in (EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE):
                (fd,) = _SUBSCRIPTION_FD.unpack_from(raw, at + 16)
                descriptor = self._fds.get(fd)
                if descriptor is None:
                    events.append(_EVENT.pack(userdata, Errno.BADF, tag, 0, 0))
                elif descriptor.source is not None and tag == EVENTTYPE_FD_READ:
                    waiting.append((userdata, tag, descriptor.source))
                elif descriptor.host_fd is not None and tag == EVENTTYPE_FD_READ:
                    size = os.fstat(descriptor.host_fd).st_size
                    position = os.lseek(descriptor.host_fd, 0, os.SEEK_CUR) \
                        if descriptor.filetype == FILETYPE_REGULAR_FILE else size
                    events.append(_EVENT.pack(userdata, 0, tag, max(0, size - position), 0))
                else:
                    events.append(_EVENT.pack(userdata, 0, tag, 0, 0))
            else:
                raise WasiError(Errno.INVAL, f"subscription {k} has the unknown type {tag}")
        if not events:
            deadline = min((seconds for _, seconds in clocks), default=None)
            started = time.monotonic()
            if waiting:
                waiting[0][2].ready(deadline)  # all stdin subscriptions wait on the same source
            elif deadline is not None:
                time.sleep(deadline)
            elapsed = time.monotonic() - started
            for userdata, tag, source in waiting:
                if source.ready(0):
                    events.append(_EVENT.pack(userdata, 0, tag, source.available(), 0))
            for userdata, seconds in clocks:
                if seconds <= elapsed or (not events and seconds == deadline):
                    events.append(_EVENT.pack(userdata, 0, EVENTTYPE_CLOCK, 0, 0))
        self._write(out_ptr, b"".join(events))
        self._write_u32(nevents_ptr, len(events))
        return Errno.SUCCESS

    # -- sockets: none are ever open ---------------------------------------------

    def _not_a_socket(self, fd: int) -> int:
        self._descriptor(fd)
        return Errno.NOTSOCK

    def _wasi_sock_accept(self, fd: int, _flags: int, _fd_ptr: int) -> int:
        return self._not_a_socket(fd)

    def _wasi_sock_recv(self, fd: int, *_rest: int) -> int:
        return self._not_a_socket(fd)

    def _wasi_sock_send(self, fd: int, *_rest: int) -> int:
        return self._not_a_socket(fd)

    def _wasi_sock_shutdown(self, fd: int, _how: int) -> int:
        return self._not_a_socket(fd)


__all__ = ["Errno", "MODULE", "Preopen", "SIGNATURES", "WasiContext", "WasiError", "WasiExit", "WasiOptions",
           "parse_env", "wasi_errno"]
