"""Sealed SEDA package writer: files streamed into a zip (or tar) while their SHA-512 is computed.

Layout of a package::

    content/001-deliberation.pdf     the files, at the Uri the manifest gives
    content/002-annexe.pdf
    manifest.xml                     the ArchiveTransfer (validated against the XSD before it is written)
    manifest.xml.p7s                 detached CMS signature of manifest.xml by the platform's seal
    manifest.xml.p7s.tsr             RFC 3161 timestamp token over manifest.xml.p7s

Files are read chunk by chunk (never whole in memory); hashing and writing run in two worker
threads side by side (``_Lane``), so the event loop stays free.  Zip entries are stored, not deflated: archived
files are mostly PDF and signed XML, and speed matters more than a few percent of space.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import re
import tarfile
import threading
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

import structlog

from flowbus.archive import seda
from flowbus.archive.formats import HEAD_SIZE, identify
from flowbus.archive.seal import MANIFEST, SEAL, TIMESTAMP, Sealer

log = structlog.get_logger(__name__)

PackageFormat = Literal["zip", "tar"]


@dataclass(frozen=True)
class SourceFile:
    """A file to archive: where its bytes come from and how the manifest names it."""

    filename: str
    title: str
    chunks: Callable[[], AsyncIterator[bytes]]
    size: int | None = None  # required for tar
    last_modified: datetime | None = None
    field: str = ""
    version: str = "BinaryMaster_1"


@dataclass(frozen=True)
class PackageResult:
    path: Path
    manifest: bytes
    objects: tuple[seda.DataObject, ...]
    sha256: str | None  # of the whole package file, when asked for
    size: int
    seal_sha256: str | None


def safe_name(filename: str) -> str:
    """A package path component: ASCII letters, digits, dot, dash, underscore."""
    text = unicodedata.normalize("NFKD", Path(filename).name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "fichier"
    return text[:120]


class _Writer:
    """Blocking archive writer (zip or tar), driven from a worker thread.

    The tar side writes POSIX (pax) headers itself: ``tarfile.addfile`` wants a file object
    it reads whole, while a package entry arrives as chunks from the BlobStore.
    """

    def __init__(self, path: Path, fmt: PackageFormat) -> None:
        self.fmt = fmt
        if fmt == "zip":
            self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        else:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._entry: IO[bytes] | None = None
        self._announced = 0
        self._written = 0
        self._name = ""

    def begin(self, name: str, size: int | None, mtime: datetime | None) -> None:
        self._name, self._written = name, 0
        if self.fmt == "zip":
            stamp = mtime.timetuple()[:6] if mtime and mtime.year >= 1980 else (1980, 1, 1, 0, 0, 0)
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            self._entry = self._zip.open(info, "w", force_zip64=True)
            return
        if size is None:
            raise ValueError(f"tar packages need the size of {name} in advance")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(mtime.timestamp()) if mtime else 0
        info.mode = 0o644
        self._announced = size
        self._file.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def write(self, chunk: bytes) -> None:
        self._written += len(chunk)
        if self.fmt == "zip":
            assert self._entry is not None
            self._entry.write(chunk)
        else:
            self._file.write(chunk)

    def end(self) -> None:
        if self.fmt == "zip":
            assert self._entry is not None
            self._entry.close()
            self._entry = None
            return
        if self._written != self._announced:
            raise ValueError(f"{self._name}: {self._written} bytes read, {self._announced} announced")
        remainder = self._written % tarfile.BLOCKSIZE
        if remainder:
            self._file.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def add_bytes(self, name: str, data: bytes, mtime: datetime | None) -> None:
        self.begin(name, len(data), mtime)
        self.write(data)
        self.end()

    def close(self) -> None:
        if self.fmt == "zip":
            self._zip.close()
        elif not self._file.closed:
            self._file.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
            self._file.close()


_END = object()


async def _read_ahead(files: Sequence[SourceFile], out: asyncio.Queue) -> None:
    try:
        for source in files:
            async for chunk in source.chunks():
                await out.put(chunk)
            await out.put(_END)
    except Exception as exc:  # handed to the consumer, which raises it
        await out.put(exc)


class _Lane:
    """One worker thread fed through a bounded queue (``DEPTH`` chunks: memory stays bounded).

    Two lanes run side by side, one hashing and one writing: hashlib, zlib's CRC-32 and file
    writes release the GIL, so a package is built at close to the SHA-512 speed of one core
    while the event loop reads the next chunks.  Back-pressure is an asyncio semaphore released
    by the worker (``call_soon_threadsafe``), not a thread-pool hop per chunk: on a busy
    two-core machine each hop costs milliseconds, more than hashing the chunk.
    """

    DEPTH = 8

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.DEPTH)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, future = item
            try:
                if self._error is None:
                    fn(*args)
            except BaseException as exc:  # re-raised in the event loop at the next sync()
                self._error = exc
            try:
                self._loop.call_soon_threadsafe(self._done, future)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return

    def _done(self, future: asyncio.Future | None) -> None:
        self._slots.release()
        if future is not None and not future.done():
            future.set_result(None)

    async def submit(self, fn: Callable[..., object], *args: object) -> None:
        await self._slots.acquire()
        self._queue.put((fn, args, None))

    async def sync(self) -> None:
        """Wait until everything submitted ran; raise the first error of this lane."""
        future = self._loop.create_future()
        await self._slots.acquire()
        self._queue.put((lambda: None, (), future))
        await future
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


async def build_package(path: Path, transfer: seda.Transfer, files: Sequence[SourceFile], *,
                        sealer: Sealer | None, xsd_dir: Path | None, fmt: PackageFormat = "zip",
                        package_sha256: bool = False) -> PackageResult:
    """Write a sealed SEDA package at ``path`` and return its manifest and digests.

    ``package_sha256``: also hash the finished package file (one more read of it); stores that
    stream the package elsewhere get that digest while copying it, for free.

    Raises:
        PermanentError: the manifest does not validate against the XSD (the partial file is removed).
        TransientError: the timestamp authority did not answer (the partial file is removed).
    """
    path = Path(path)
    writer = await asyncio.to_thread(_Writer, path, fmt)
    hasher, writing = _Lane("flowbus-package-hash"), _Lane("flowbus-package-write")
    objects: list[seda.DataObject] = []
    pending: list[tuple] = []
    used: set[str] = set()
    # Sources are read ahead by a task of their own: a file of two chunks would otherwise leave
    # the lanes idle while its first chunk is being read.
    chunks: asyncio.Queue = asyncio.Queue(_Lane.DEPTH)
    reader = asyncio.ensure_future(_read_ahead(files, chunks))
    try:
        for number, source in enumerate(files, 1):
            name = safe_name(source.filename)
            uri = f"content/{number:03d}-{name}"
            while uri in used:
                uri = f"content/{number:03d}-{len(used)}-{name}"
            used.add(uri)
            await writing.submit(writer.begin, uri, source.size, source.last_modified)
            digest = hashlib.sha512()
            head = bytearray()
            size = 0
            while True:
                chunk = await chunks.get()
                if isinstance(chunk, BaseException):
                    raise chunk
                if chunk is _END:
                    break
                if not chunk:
                    continue
                if len(head) < HEAD_SIZE:
                    head += chunk[:HEAD_SIZE - len(head)]
                size += len(chunk)
                await hasher.submit(digest.update, chunk)
                await writing.submit(writer.write, chunk)
            await writing.submit(writer.end)
            # no wait here: the lanes keep streaming into the next file; the digest is read at the end
            pending.append((number, uri, source, digest, size, identify(bytes(head), source.filename)))
        await hasher.sync()
        for number, uri, source, digest, size, fmt_id in pending:
            objects.append(seda.DataObject(
                id=f"BDO-{number}", uri=uri, sha512=digest.hexdigest(), size=size, format=fmt_id, filename=source.filename, title=source.title,
                last_modified=source.last_modified, version=source.version))
        await writing.sync()
        manifest = seda.build_transfer(transfer, objects)
        await asyncio.to_thread(seda.validate, manifest, xsd_dir)
        await asyncio.to_thread(writer.add_bytes, MANIFEST, manifest, transfer.date)
        seal_sha256 = None
        if sealer is not None:
            signature, token = await sealer.seal(manifest)
            await asyncio.to_thread(writer.add_bytes, SEAL, signature, transfer.date)
            await asyncio.to_thread(writer.add_bytes, TIMESTAMP, token, transfer.date)
            seal_sha256 = hashlib.sha256(signature).hexdigest()
        await asyncio.to_thread(writer.close)
    except BaseException:
        reader.cancel()
        for lane in (hasher, writing):
            await asyncio.to_thread(lane.close)
        try:
            await asyncio.to_thread(writer.close)
        except Exception:
            pass
        path.unlink(missing_ok=True)
        raise
    for lane in (hasher, writing):
        await asyncio.to_thread(lane.close)
    if package_sha256:
        sha256, total = await asyncio.to_thread(file_sha256, path)
    else:
        sha256, total = None, path.stat().st_size
    log.info("archive.package_built", message_id=transfer.message_id, files=len(objects), size=total,
             format=fmt, sealed=sealer is not None)
    return PackageResult(path, manifest, tuple(objects), sha256, total, seal_sha256)


def file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size

