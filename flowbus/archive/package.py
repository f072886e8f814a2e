"""Sealed SEDA package writer: files streamed into a zip (or tar) while their SHA-512 is computed.

Layout of a package::

    content/001-deliberation.pdf     the files, at the Uri the manifest gives
    content/002-annexe.pdf
    manifest.xml                     the ArchiveTransfer (validated against the XSD before it is written)
    manifest.xml.p7s                 detached CMS signature of manifest.xml by the platform's seal
    manifest.xml.p7s.tsr             RFC 3161 timestamp response (TimeStampResp) over manifest.xml.p7s

Hashing and writing run in two worker threads side by side (``_Lane``), so the event loop stays
free and a package is built at close to the SHA-512 speed of one core.  A source the BlobStore
keeps as a file on this machine (``SourceFile.path``, FilesystemBlobStore) is one job per lane:
the hashing lane reads it in 8 MB blocks into a reused buffer, the writing lane has the kernel copy
it into the package (``container.copy_file``).  Both read the same immutable blob (content-addressed,
replaced only by an atomic rename) and their byte counts are compared.  Any other source arrives in
chunks, read ahead by a task of its own, each chunk handed to both lanes.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog

from flowbus.archive import seda
from flowbus.archive.container import BLOCK, Container, open_container
from flowbus.archive.formats import HEAD_SIZE, Format, identify
from flowbus.archive.seal import MANIFEST, SEAL, TIMESTAMP, Sealer
from flowbus.blobs.base import BlobStore
from flowbus.errors import PermanentError

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
    path: Path | None = None  # the file itself, when the BlobStore keeps one here: hashed and copied from it


def blob_source(blobs: BlobStore, key: str, filename: str, title: str, size: int | None,
                last_modified: datetime | None, field: str = "") -> SourceFile:
    """A package source for a blob: its local file when the store has one (kernel copy), else its chunks."""
    return SourceFile(filename, title, lambda: blobs.open(key), size, last_modified, field=field,
                      path=blobs.local_path(key))


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


_END = object()


class _Entry:
    """One file on its way into the package: what the hashing lane saw and the writing lane copied."""

    def __init__(self, number: int, uri: str, source: SourceFile) -> None:
        self.number, self.uri, self.source = number, uri, source
        self.digest = hashlib.sha512()
        self.size = 0
        self.head = bytearray()  # the first HEAD_SIZE bytes, until finish() identifies the format
        self.format: Format | None = None
        self.copied: int | None = None  # bytes the container copied from ``source.path``

    def take(self, block: bytes | memoryview) -> None:
        """Hash one block (hashing lane); hashlib releases the GIL while it works."""
        if len(self.head) < HEAD_SIZE:
            self.head += block[:HEAD_SIZE - len(self.head)]
        self.digest.update(block)
        self.size += len(block)

    def hash_file(self, buffer: memoryview) -> None:
        """Hash ``source.path`` whole, in blocks read into ``buffer`` (hashing lane)."""
        assert self.source.path is not None
        with open(self.source.path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                self.take(buffer[:n])
        self.finish()

    def finish(self) -> None:
        """All bytes hashed (hashing lane): identify the format and let the head go."""
        self.format = identify(bytes(self.head), self.source.filename)
        self.head = bytearray()

    def copy_file(self, container: Container) -> None:
        """Copy ``source.path`` into the package (writing lane)."""
        self.copied = container.copy_file(self.uri, self.source.path, self.source.last_modified)

    def data_object(self) -> seda.DataObject:
        source = self.source
        if self.copied is not None and self.copied != self.size:
            raise PermanentError(f"{source.filename}: {self.size} bytes hashed but {self.copied} copied: "
                                 "the blob changed while it was archived")
        if source.size is not None and self.size != source.size:
            raise PermanentError(f"{source.filename}: {self.size} bytes read, {source.size} announced")
        assert self.format is not None  # finish() ran
        return seda.DataObject(id=f"BDO-{self.number}", uri=self.uri, sha512=self.digest.hexdigest(),
                               size=self.size, format=self.format,
                               filename=source.filename, title=source.title,
                               last_modified=source.last_modified, version=source.version)


async def _read_ahead(files: Sequence[SourceFile], out: asyncio.Queue) -> None:
    """Chunks of every source without a local file, each source followed by ``_END``."""
    try:
        for source in files:
            if source.path is None:
                async for chunk in source.chunks():
                    await out.put(chunk)
                await out.put(_END)
    except Exception as exc:  # handed to the consumer, which raises it
        await out.put(exc)


class _Lane:
    """One worker thread fed through a bounded queue (``DEPTH`` jobs: memory stays bounded).

    Two lanes run side by side, one hashing and one writing: hashlib, zlib's CRC-32, reads,
    writes and kernel copies release the GIL, so a package is built at close to the SHA-512 speed
    of one core while the event loop reads the next chunks.  A job is one chunk, or one whole
    local file (``_Entry.hash_file``, ``_Entry.copy_file``).  Back-pressure is an asyncio semaphore released
    by the worker (``call_soon_threadsafe``), not a thread-pool hop per chunk: on a busy
    two-core machine each hop costs milliseconds, more than hashing the chunk.
    """

    DEPTH = 8

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.DEPTH)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._closing = False  # set by close(): jobs still queued are skipped
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, future = item
            try:
                if self._error is None and not self._closing:
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
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout=30)


async def build_package(path: Path, transfer: seda.Transfer, files: Sequence[SourceFile], *,
                        sealer: Sealer | None, xsd_dir: Path | None, fmt: PackageFormat = "zip",
                        package_sha256: bool = False) -> PackageResult:
    """Write a sealed SEDA package at ``path`` and return its manifest and digests.

    ``package_sha256``: also hash the finished package file (one more read of it); stores that
    stream the package elsewhere get that digest while copying it, for free.

    Raises:
        PermanentError: the manifest does not validate against the XSD, a source has not the size it
            announced, or a local blob changed while it was copied (the partial file is removed).
        TransientError: the timestamp authority did not answer (the partial file is removed).
    """
    path = Path(path)
    container = await asyncio.to_thread(open_container, path, fmt)
    hasher, writing = _Lane("flowbus-package-hash"), _Lane("flowbus-package-write")
    buffer = memoryview(bytearray(BLOCK))  # the hashing lane's, for local files
    entries: list[_Entry] = []
    used: set[str] = set()
    # Chunked sources are read ahead by a task of their own: a file of two chunks would otherwise
    # leave the lanes idle while its first chunk is being read.
    chunks: asyncio.Queue = asyncio.Queue(_Lane.DEPTH)
    reader = asyncio.ensure_future(_read_ahead(files, chunks))
    try:
        for number, source in enumerate(files, 1):
            name = safe_name(source.filename)
            uri = f"content/{number:03d}-{name}"
            while uri in used:
                uri = f"content/{number:03d}-{len(used)}-{name}"
            used.add(uri)
            entry = _Entry(number, uri, source)
            entries.append(entry)
            # no wait for the lanes: they keep streaming into the next file; digests are read at the end
            if source.path is not None:
                await hasher.submit(entry.hash_file, buffer)
                await writing.submit(entry.copy_file, container)
                continue
            await writing.submit(container.begin, uri, source.size, source.last_modified)
            while True:
                chunk = await chunks.get()
                if isinstance(chunk, BaseException):
                    raise chunk
                if chunk is _END:
                    break
                if chunk:
                    await hasher.submit(entry.take, chunk)
                    await writing.submit(container.write, chunk)
            await hasher.submit(entry.finish)
            await writing.submit(container.end)
        await hasher.sync()
        await writing.sync()
        objects = [entry.data_object() for entry in entries]
        manifest = seda.build_transfer(transfer, objects)
        await asyncio.to_thread(seda.validate, manifest, xsd_dir)
        await asyncio.to_thread(container.add_bytes, MANIFEST, manifest, transfer.date)
        seal_sha256 = None
        if sealer is not None:
            signature, token = await sealer.seal(manifest)
            await asyncio.to_thread(container.add_bytes, SEAL, signature, transfer.date)
            await asyncio.to_thread(container.add_bytes, TIMESTAMP, token, transfer.date)
            seal_sha256 = hashlib.sha256(signature).hexdigest()
        await asyncio.to_thread(container.close)
    except BaseException:
        reader.cancel()
        for lane in (hasher, writing):
            await asyncio.to_thread(lane.close)
        container.abandon()
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

