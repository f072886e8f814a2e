"""Package containers (stored ZIP64, POSIX tar): entries from chunks, or copied by the kernel from a local file.

``ZipContainer`` and ``TarContainer`` share one interface, driven from one worker thread:
``begin``/``write``/``end`` for an entry that arrives in chunks (any BlobStore), ``copy_file``
for a file on this machine (FilesystemBlobStore).  ``copy_file`` moves the bytes with
``os.copy_file_range`` (page cache to page cache, never through Python); zip's CRC-32 is
computed on each 8 MB block read into one reused buffer just before the kernel copies it.
Where the kernel cannot copy (another filesystem on an older kernel, another OS), the block is
written from that buffer instead.

Zip entries are stored, not deflated: archived files are mostly PDF and signed XML, and speed
matters more than a few percent of space.  Every local header carries ZIP64 sizes and is written
before the data, then its CRC-32 and sizes are filled in (``os.pwrite``) once the entry is complete,
as ``zipfile`` does; no data descriptor is used (streaming readers refuse them on stored entries).
"""

from __future__ import annotations

import abc
import errno
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from flowbus.errors import PermanentError

BLOCK = 8 * 1024 * 1024
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_ZIP64 = 0xFFFFFFFF
_VERSION = 45  # ZIP64
_MADE_BY = (3 << 8) | _VERSION  # Unix
_REGULAR_644 = 0o100644 << 16


class Container(abc.ABC):
    """The package file, written sequentially through one descriptor; ``offset`` is where the next byte goes."""

    needs_bytes: ClassVar[bool] = False  # does the format need an entry's bytes (zip: CRC-32)?

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.offset = 0
        self._size = 0  # bytes of the current entry
        self._view: memoryview | None = None  # reused BLOCK buffer of copy_file
        self._kernel = hasattr(os, "copy_file_range")

    @abc.abstractmethod
    def begin(self, name: str, size: int | None, mtime: datetime | None) -> None:
        """Start an entry: write its header (tar needs ``size`` in advance)."""

    def _take(self, data: memoryview | bytes) -> None:
        """The bytes of the current entry, seen before they are written (zip: CRC-32)."""

    @abc.abstractmethod
    def end(self) -> None:
        """Finish the current entry (zip: fill in its CRC-32 and sizes; tar: pad to a block)."""

    @abc.abstractmethod
    def _trailer(self) -> None:
        """Write what closes the container (zip: central directory; tar: end blocks)."""

    def write(self, chunk: bytes | memoryview) -> None:
        self._take(chunk)
        self._emit(chunk)
        self._size += len(chunk)

    def add_bytes(self, name: str, data: bytes, mtime: datetime | None) -> None:
        self.begin(name, len(data), mtime)
        self.write(data)
        self.end()

    def copy_file(self, name: str, path: Path, mtime: datetime | None) -> int:
        """Add the file at ``path`` as ``name``; return its size.

        Raises:
            PermanentError: the file is shorter than its size when the copy started.
        """
        if self._view is None:
            self._view = memoryview(bytearray(BLOCK))
        with open(path, "rb", buffering=0) as src:
            size = os.fstat(src.fileno()).st_size
            self.begin(name, size, mtime)
            done = 0
            while done < size:
                n = min(BLOCK, size - done)
                block = None
                if self.needs_bytes:
                    block = _pread(src.fileno(), self._view[:n], done, path)
                    self._take(block)
                if not self._copy_in_kernel(src.fileno(), done, n, path):
                    self._emit(block if block is not None else _pread(src.fileno(), self._view[:n], done, path))
                done += n
            self._size = size
            self.end()
        return size

    def _copy_in_kernel(self, src: int, at: int, count: int, path: Path) -> bool:
        """Copy ``count`` bytes of ``src`` from ``at`` to the end of the package; False if the kernel cannot."""
        done = 0
        while self._kernel and done < count:
            try:
                n = os.copy_file_range(src, self._fd, count - done, at + done)
            except OSError as exc:
                if done or exc.errno not in _NO_KERNEL_COPY:
                    raise
                self._kernel = False
                return False
            if n == 0:
                raise PermanentError(f"{path} ended at byte {at + done}, before its size of {at + count} or more")
            done += n
            self.offset += n
        return done == count

    def _emit(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.offset += n

    def close(self) -> None:
        """Write the trailer (central directory, end blocks) and close; a second call does nothing."""
        if self._fd < 0:
            return
        try:
            self._trailer()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close without a trailer (the build failed; the caller removes the file)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pread(fd: int, into: memoryview, at: int, path: Path) -> memoryview:
    n = os.preadv(fd, [into], at)
    if n < len(into):
        raise PermanentError(f"{path} ended at byte {at + n}, before its size of {at + len(into)} or more")
    return into


@dataclass
class _ZipEntry:
    name: bytes
    flags: int
    time: int
    date: int
    offset: int
    crc: int = 0
    size: int = 0


class ZipContainer(Container):
    needs_bytes = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._entries: list[_ZipEntry] = []
        self._entry: _ZipEntry | None = None
        self._crc = 0

    def begin(self, name: str, size: int | None, mtime: datetime | None) -> None:
        stamp = mtime.timetuple()[:6] if mtime and mtime.year >= 1980 else (1980, 1, 1, 0, 0, 0)
        entry = _ZipEntry(name.encode(), 0 if name.isascii() else 0x800,  # 0x800: the name is UTF-8
                          stamp[3] << 11 | stamp[4] << 5 | stamp[5] // 2,
                          (stamp[0] - 1980) << 9 | stamp[1] << 5 | stamp[2], self.offset)
        self._emit(struct.pack("<IHHHHHIIIHH", 0x04034B50, _VERSION, entry.flags, 0, entry.time, entry.date,
                               0, _ZIP64, _ZIP64, len(entry.name), 20)
                   + entry.name + struct.pack("<HHQQ", 1, 16, 0, 0))  # ZIP64 extra: sizes filled in by end()
        self._entry, self._crc, self._size = entry, 0, 0

    def _take(self, data: memoryview | bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def end(self) -> None:
        entry = self._entry
        assert entry is not None
        entry.crc, entry.size = self._crc, self._size
        os.pwrite(self._fd, struct.pack("<I", entry.crc), entry.offset + 14)
        os.pwrite(self._fd, struct.pack("<QQ", entry.size, entry.size), entry.offset + 30 + len(entry.name) + 4)
        self._entries.append(entry)
        self._entry = None

    def _trailer(self) -> None:
        start = self.offset
        for e in self._entries:
            big = [e.size, e.size] if e.size >= _ZIP64 else []
            if e.offset >= _ZIP64:
                big.append(e.offset)
            extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
            size = _ZIP64 if e.size >= _ZIP64 else e.size
            self._emit(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_BY, _VERSION, e.flags, 0, e.time, e.date,
                                   e.crc, size, size, len(e.name), len(extra), 0, 0, 0, _REGULAR_644,
                                   min(e.offset, _ZIP64)) + e.name + extra)
        count, length = len(self._entries), self.offset - start
        if count >= 0xFFFF or start >= _ZIP64 or length >= _ZIP64:
            record = self.offset
            self._emit(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY, _VERSION, 0, 0, count, count,
                                   length, start))
            self._emit(struct.pack("<IIQI", 0x07064B50, 0, record, 1))
        self._emit(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                               min(length, _ZIP64), min(start, _ZIP64), 0))


class TarContainer(Container):
    """POSIX (pax) tar, headers written here: ``tarfile.addfile`` wants a file object it reads whole."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._name = ""
        self._announced = 0

    def begin(self, name: str, size: int | None, mtime: datetime | None) -> None:
        if size is None:
            raise PermanentError(f"tar packages need the size of {name} in advance", field="package_format",
                                 hint="use package_format: zip")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(mtime.timestamp()) if mtime else 0
        info.mode = 0o644
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self._name, self._announced, self._size = name, size, 0

    def end(self) -> None:
        if self._size != self._announced:
            raise PermanentError(f"{self._name}: {self._size} bytes read, {self._announced} announced")
        if remainder := self._size % tarfile.BLOCKSIZE:
            self._emit(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def _trailer(self) -> None:
        self._emit(tarfile.NUL * (2 * tarfile.BLOCKSIZE))


def open_container(path: Path, fmt: str) -> Container:
    """A new, empty package file at ``path`` (``fmt``: zip or tar)."""
    return ZipContainer(path) if fmt == "zip" else TarContainer(path)
