"""Sealed SEDA package writer: files streamed into a zip (or tar) while their SHA-512 is computed.

Layout of a package::

    content/001-deliberation.pdf     the files, at the Uri the manifest gives
    content/002-annexe.pdf
    manifest.xml                     the ArchiveTransfer (validated against the XSD before it is written)
    manifest.xml.p7s                 detached CMS signature of manifest.xml by the platform's seal
    manifest.xml.p7s.tsr             RFC 3161 timestamp token over manifest.xml.p7s

Files are read chunk by chunk (never whole in memory); the hashing and the writing run in a
worker thread so the event loop stays free.  Zip entries are stored, not deflated: archived
files are mostly PDF and signed XML, and speed matters more than a few percent of space.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tarfile
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
    sha256: str  # of the whole package file
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


async def build_package(path: Path, transfer: seda.Transfer, files: Sequence[SourceFile], *,
                        sealer: Sealer | None, xsd_dir: Path | None, fmt: PackageFormat = "zip") -> PackageResult:
    """Write a sealed SEDA package at ``path`` and return its manifest and digests.

    Raises:
        PermanentError: the manifest does not validate against the XSD (the partial file is removed).
        TransientError: the timestamp authority did not answer (the partial file is removed).
    """
    path = Path(path)
    writer = await asyncio.to_thread(_Writer, path, fmt)
    objects: list[seda.DataObject] = []
    used: set[str] = set()
    try:
        for number, source in enumerate(files, 1):
            name = safe_name(source.filename)
            uri = f"content/{number:03d}-{name}"
            while uri in used:
                uri = f"content/{number:03d}-{len(used)}-{name}"
            used.add(uri)
            await asyncio.to_thread(writer.begin, uri, source.size, source.last_modified)
            digest = hashlib.sha512()
            head = bytearray()
            size = 0

            def consume(chunk: bytes) -> None:
                digest.update(chunk)
                writer.write(chunk)

            async for chunk in source.chunks():
                if not chunk:
                    continue
                if len(head) < HEAD_SIZE:
                    head += chunk[:HEAD_SIZE - len(head)]
                size += len(chunk)
                await asyncio.to_thread(consume, chunk)
            await asyncio.to_thread(writer.end)
            objects.append(seda.DataObject(
                id=f"BDO-{number}", uri=uri, sha512=digest.hexdigest(), size=size,
                format=identify(bytes(head), source.filename), filename=source.filename, title=source.title,
                last_modified=source.last_modified, version=source.version))
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
        try:
            await asyncio.to_thread(writer.close)
        except Exception:
            pass
        path.unlink(missing_ok=True)
        raise
    sha256, total = await asyncio.to_thread(file_sha256, path)
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

