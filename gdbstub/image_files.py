"""Host I/O (``vFile:``) over the debug images: the files a gdb that is not
on this machine reads them from (docs/debug-images.md, "Local files").

Kept apart from :mod:`gdbstub.images` so that ``serve`` makes and places its
images without importing the protocol's reply module before it listens.
"""
from __future__ import annotations

import logging
import zlib

from .debugimage import DebugImageError
from .images import DebugImage, DebugImageSet
from .protocol.replies import FileIOErrno, FileIOOpenFlags, fileio_stat

log = logging.getLogger(__name__)

__all__ = ["FIRST_FD", "FileServerError", "ImageFileServer", "MAX_OPEN_FILES", "SERVED_FILE_MODE"]

#: Most files one client may hold open at once (then EMFILE).
MAX_OPEN_FILES = 64
#: First fd handed out, as a POSIX process would after stdin/stdout/stderr.
FIRST_FD = 3
#: File-I/O mode of every served file: a regular file, read-only for everyone
#: (GDB manual, File-I/O "mode_t Values": S_IFREG 0100000, S_IRUSR|S_IRGRP|S_IROTH).
SERVED_FILE_MODE = 0o100444

_WRITE_FLAGS = (FileIOOpenFlags.O_WRONLY | FileIOOpenFlags.O_RDWR | FileIOOpenFlags.O_APPEND
                | FileIOOpenFlags.O_CREAT | FileIOOpenFlags.O_TRUNC | FileIOOpenFlags.O_EXCL)


class FileServerError(Exception):
    """A vFile request failed; ``errno`` is a File-I/O errno (FileIOErrno)."""

    def __init__(self, errno: FileIOErrno, message: str = ""):
        super().__init__(message or errno.name)
        self.errno = FileIOErrno(errno)


class ImageFileServer:
    """Host I/O (``vFile:open/pread/fstat/close``) semantics over the images of
    one :class:`DebugImageSet`, with no file-system access at all: the only
    files that exist are the set's current images, named exactly as reported
    (any other path, including ``..`` spellings of a real one, is ENOENT), and
    they are read-only (EACCES for any write, create or truncate flag).

    An open fd keeps serving the image it opened even if the set forgets it
    (like an unlinked file). Fds are the lowest free numbers from
    :data:`FIRST_FD`; at most :data:`MAX_OPEN_FILES` are open (then EMFILE).
    Sans-I/O: the session turns results and :class:`FileServerError` into
    ``F`` replies. Not thread-safe (one per client connection).
    """

    def __init__(self, images: DebugImageSet):
        self._images = images
        self._open: dict[int, DebugImage] = {}

    def open(self, path: str | bytes, flags: int, mode: int) -> int:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if flags & _WRITE_FLAGS:
            raise FileServerError(FileIOErrno.EACCES, f"{path}: debug images are read-only")
        image = self._images.find(path)
        if image is None:
            raise FileServerError(FileIOErrno.ENOENT, f"{path}: not a debug image")
        if len(self._open) >= MAX_OPEN_FILES:
            raise FileServerError(FileIOErrno.EMFILE, f"{MAX_OPEN_FILES} files already open")
        fd = FIRST_FD
        while fd in self._open:
            fd += 1
        self._open[fd] = image
        return fd

    def _image(self, fd: int) -> DebugImage:
        image = self._open.get(fd)
        if image is None:
            raise FileServerError(FileIOErrno.EBADF, f"fd {fd} is not open")
        return image

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """Up to ``count`` bytes at ``offset``; ``b""`` at or past the end. The
        caller bounds ``count`` by what fits in a reply packet."""
        image = self._image(fd)
        if count < 0 or offset < 0:
            raise FileServerError(FileIOErrno.EINVAL, f"pread count {count}, offset {offset}")
        return self._contents(image)[offset:offset + count]

    def fstat(self, fd: int) -> bytes:
        """The 64-byte File-I/O ``struct stat`` of an open image."""
        image = self._image(fd)
        size = len(self._contents(image))
        return fileio_stat(mode=SERVED_FILE_MODE, size=size, ino=zlib.crc32(image.name.encode()),
                           atime=image.mtime, mtime=image.mtime, ctime=image.mtime)

    def close(self, fd: int) -> None:
        self._image(fd)
        del self._open[fd]

    @staticmethod
    def _contents(image: DebugImage) -> bytes:
        """The image's bytes (made on first use); an image that cannot be made
        is a File-I/O error for the client (EUNKNOWN: the protocol has no EIO),
        logged here, never an exception out of the session."""
        try:
            return image.data
        except (DebugImageError, OSError) as e:
            log.error("debug image %s could not be made: %s", image.name, e)
            raise FileServerError(FileIOErrno.EUNKNOWN, f"{image.name}: {e}") from None

    @property
    def open_fds(self) -> list[int]:
        return sorted(self._open)
