"""Built-in archive store (SAE kind ``store``): sealed packages kept in the BlobStore or an S3 bucket, indexed in the Store.

Two places for the package bytes:

* ``blobs`` (embedded default): the runtime's BlobStore, content-addressed;
* ``s3``: a dedicated bucket (minio SDK) created with object lock when it does not exist,
  versioning on, each package written with a retention (``retention_mode``
  GOVERNANCE|COMPLIANCE, ``retention_days``) where the bucket supports object lock.

The index (``archive_packages``, migration 030) keeps what archivists search on (entity,
flow, dates, keywords, title) and the manifest, from which the ArchiveUnit tree is shown.
Every download is written to the entity's hash-chained journal (``archive.downloaded``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from lxml import etree

from flowbus.store import textsearch
from flowbus.store.base import Where
from flowbus.clock import isoformat
from flowbus.errors import BackendError, ConfigError, NotFound

log = structlog.get_logger(__name__)
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveRecord:
    id: str
    entity_id: str
    flow_id: str
    document_id: str
    transfer_id: str
    seda_version: str
    title: str
    description: str
    keywords: list[str]
    start_date: str | None
    end_date: str | None
    archived_at: str
    size: int
    sha256: str
    files: int
    backend: str
    location: str
    version_id: str | None
    retain_until: str | None
    seal_subject: str | None
    timestamped_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("location",)}


def _record(row: Mapping[str, Any]) -> ArchiveRecord:
    return ArchiveRecord(
        id=row["id"], entity_id=row["entity_id"], flow_id=row["flow_id"], document_id=row["document_id"],
        transfer_id=row["transfer_id"], seda_version=row["seda_version"], title=row["title"],
        description=row["description"], keywords=json.loads(row["keywords"] or "[]"), start_date=row["start_date"],
        end_date=row["end_date"], archived_at=row["archived_at"], size=int(row["size"]), sha256=row["sha256"],
        files=int(row["files"]), backend=row["backend"], location=row["location"], version_id=row["version_id"],
        retain_until=row["retain_until"], seal_subject=row["seal_subject"], timestamped_at=row["timestamped_at"])


_COLUMNS = ("id, entity_id, flow_id, document_id, transfer_id, seda_version, title, description, keywords, "
            "start_date, end_date, archived_at, size, sha256, files, backend, location, version_id, retain_until, "
            "seal_subject, timestamped_at")


class S3Target:
    """An S3 bucket for packages, with object lock and versioning when the server supports them."""

    def __init__(self, client: Any, bucket: str, *, retention_mode: str = "GOVERNANCE",
                 retention_days: int = 0, prefix: str = "archives/") -> None:
        if retention_mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise ConfigError(f"retention_mode must be GOVERNANCE or COMPLIANCE, not {retention_mode!r}",
                              field="retention_mode")
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.retention_mode, self.retention_days = retention_mode, retention_days
        self.object_lock = False
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Any, bucket: str, **kwargs: Any) -> S3Target:
        from minio import Minio
        client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                       secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
                       region=settings.s3_region)
        return cls(client, bucket, **kwargs)

    def _prepare(self) -> None:
        from minio.commonconfig import ENABLED
        from minio.error import S3Error
        from minio.versioningconfig import VersioningConfig
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket, object_lock=True)
        try:
            self.client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))
        except S3Error as exc:
            log.warning("archive.s3_versioning_unavailable", bucket=self.bucket, error=exc.code)
        try:
            config = self.client.get_object_lock_config(self.bucket)
            self.object_lock = config is not None
        except S3Error:
            self.object_lock = False
        if not self.object_lock:
            log.warning("archive.s3_object_lock_unavailable", bucket=self.bucket,
                        detail="packages are versioned but not write-protected by the bucket")

    async def ensure(self) -> None:
        if self._ready:
            return
        try:
            await asyncio.to_thread(self._prepare)
        except Exception as exc:
            raise BackendError(f"cannot prepare the archive bucket {self.bucket!r}: {exc}", field="s3_bucket") \
                from exc
        self._ready = True

    async def put(self, name: str, path: Path, now: datetime) -> tuple[str, str | None, str | None]:
        """Upload; return (object name, version id, retain-until ISO date or None)."""
        await self.ensure()
        retention, retain_until = None, None
        if self.object_lock and self.retention_days > 0:
            from minio.retention import COMPLIANCE, GOVERNANCE, Retention
            until = now + timedelta(days=self.retention_days)
            retention = Retention(COMPLIANCE if self.retention_mode == "COMPLIANCE" else GOVERNANCE, until)
            retain_until = isoformat(until)
        key = f"{self.prefix}{name}"

        def upload() -> Any:
            result = self.client.fput_object(self.bucket, key, str(path), content_type="application/zip")
            if retention is not None:
                # a retention sent with the upload needs a Content-MD5 of the whole body, which a
                # streamed multipart upload cannot give: set it on the stored version instead
                self.client.set_object_retention(self.bucket, key, retention,
                                                 version_id=getattr(result, "version_id", None))
            return result
        try:
            result = await asyncio.to_thread(upload)
        except Exception as exc:
            raise BackendError(f"cannot store the package in bucket {self.bucket!r}: {exc}") from exc
        return f"{self.bucket}/{key}", getattr(result, "version_id", None), retain_until

    async def open(self, location: str, version_id: str | None) -> AsyncIterator[bytes]:
        bucket, _, key = location.partition("/")
        response = await asyncio.to_thread(self.client.get_object, bucket, key, version_id=version_id)
        try:
            while chunk := await asyncio.to_thread(response.read, CHUNK):
                yield chunk
        finally:
            response.close()
            response.release_conn()


class ArchiveStore:
    """Keep sealed packages and find them again.  One per runtime (``for_runtime``) and S3 target."""

    def __init__(self, runtime: Any, s3: S3Target | None = None) -> None:
        self.runtime = runtime
        self.s3 = s3

    @classmethod
    def for_runtime(cls, runtime: Any, *, storage: str | None = None, bucket: str | None = None,
                    retention_days: int = 0, retention_mode: str = "GOVERNANCE") -> ArchiveStore:
        """``storage``: ``blobs`` or ``s3``; by default S3 when the runtime's blobs are in S3, else the BlobStore.
        The S3 bucket defaults to ``<s3_bucket>-archives``."""
        settings = runtime.settings
        storage = storage or ("s3" if getattr(settings, "blob_backend", "filesystem") == "s3" else "blobs")
        if storage not in ("blobs", "s3"):
            raise ConfigError(f"storage must be blobs or s3, not {storage!r}", field="storage")
        if storage == "blobs":
            return cls(runtime)
        return cls(runtime, S3Target.from_settings(settings, bucket or f"{settings.s3_bucket}-archives",
                                                   retention_days=retention_days, retention_mode=retention_mode))

    async def put(self, package: Path, *, entity_id: str, flow_id: str, document_id: str, transfer_id: str,
                  seda_version: str, title: str, description: str, keywords: list[str], start_date: str | None,
                  end_date: str | None, manifest: bytes, size: int, files: int,
                  seal_subject: str | None, timestamped_at: str | None) -> ArchiveRecord:
        """Store the package bytes, then index it; a transfer id already indexed returns its record."""
        existing = await self.by_transfer(transfer_id)
        if existing is not None:
            return existing
        now = self.runtime.clock.now()
        package_id = uuid.uuid4().hex
        version_id = retain_until = None
        if self.s3 is not None:
            backend = "s3"
            location, version_id, retain_until = await self.s3.put(f"{entity_id}/{package_id}.zip", package, now)
            from flowbus.archive.package import file_sha256
            sha256, size = await asyncio.to_thread(file_sha256, package)
        else:
            backend = "blobs"
            ref = await self.runtime.blobs.put(_file_chunks(package))
            location, sha256, size = ref.key, ref.sha256, ref.size
        search = textsearch.folded([title, description, *keywords, transfer_id])
        async with self.runtime.store.transaction() as tx:
            await tx.execute(
                f"INSERT INTO archive_packages ({_COLUMNS}, manifest, search_text) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, "
                "$22, $23)",
                package_id, entity_id, flow_id, document_id, transfer_id, seda_version, title, description,
                json.dumps(keywords, ensure_ascii=False), start_date, end_date, isoformat(now), size, sha256, files,
                backend, location, version_id, retain_until, seal_subject, timestamped_at,
                manifest.decode("utf-8"), search)
        log.info("archive.stored", package=package_id, transfer_id=transfer_id, backend=backend, size=size)
        record = await self.get(package_id)
        return record

    async def by_transfer(self, transfer_id: str) -> ArchiveRecord | None:
        async with self.runtime.store.transaction() as tx:
            row = await tx.fetchrow(f"SELECT {_COLUMNS} FROM archive_packages WHERE transfer_id = $1", transfer_id)
        return _record(row) if row else None

    async def get(self, package_id: str) -> ArchiveRecord:
        async with self.runtime.store.transaction() as tx:
            row = await tx.fetchrow(f"SELECT {_COLUMNS} FROM archive_packages WHERE id = $1", package_id)
        if row is None:
            raise NotFound(f"archive package {package_id!r} does not exist", field="id")
        return _record(row)

    async def manifest(self, package_id: str) -> bytes:
        async with self.runtime.store.transaction() as tx:
            text = await tx.fetchval("SELECT manifest FROM archive_packages WHERE id = $1", package_id)
        if text is None:
            raise NotFound(f"archive package {package_id!r} does not exist", field="id")
        return text.encode("utf-8")

    async def search(self, *, entity_ids: list[str] | None = None, flow: str | None = None,
                     date_from: str | None = None, date_to: str | None = None, keyword: str | None = None,
                     title: str | None = None, text: str | None = None, limit: int = 50,
                     offset: int = 0) -> tuple[list[ArchiveRecord], int]:
        """Packages matching every given criterion, newest first; dates bound ``archived_at`` (YYYY-MM-DD)."""
        w = Where()
        if entity_ids is not None:
            if not entity_ids:
                return [], 0
            w.add_in("entity_id", entity_ids)
        if flow:
            w.add("flow_id = {}", flow)
        if date_from:
            w.add("archived_at >= {}", date_from[:10])
        if date_to:
            w.add("archived_at < {}", date_to[:10] + "T99")
        if keyword:
            w.add("LOWER(keywords) LIKE {}", "%" + keyword.lower() + "%")
        if title:
            w.add("LOWER(title) LIKE {}", "%" + title.lower() + "%")
        text_cond = textsearch.condition(self.runtime.store.dialect, "archive_packages", text, w.arg)
        if text_cond is not None:
            w.clauses.append(text_cond)
        clause, args = w.sql, w.args
        async with self.runtime.store.transaction() as tx:
            total = await tx.fetchval(f"SELECT COUNT(*) FROM archive_packages {clause}", *args)
            rows = await tx.fetch(f"SELECT {_COLUMNS} FROM archive_packages {clause} "
                                  f"ORDER BY archived_at DESC, id LIMIT {int(limit)} OFFSET {int(offset)}", *args)
        return [_record(r) for r in rows], int(total)

    async def download(self, record: ArchiveRecord, *, actor: str) -> AsyncIterator[bytes]:
        """Journal the download in the entity's chain, then return the package's chunks."""
        from flowbus import journal
        async with self.runtime.store.transaction() as tx:
            await journal.append(tx, entity_id=record.entity_id, actor=actor, kind="archive.downloaded",
                                 at=self.runtime.clock.now(), document_id=record.document_id,
                                 data={"package": record.id, "transfer_id": record.transfer_id,
                                       "sha256": record.sha256})
        log.info("archive.downloaded", package=record.id, actor=actor)
        return self.open(record)

    def open(self, record: ArchiveRecord) -> AsyncIterator[bytes]:
        if record.backend == "s3":
            target = self.s3 or S3Target.from_settings(self.runtime.settings, record.location.partition("/")[0])
            return target.open(record.location, record.version_id)
        return self.runtime.blobs.open(record.location)


def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
    return gen()


def unit_tree(manifest: bytes) -> list[dict[str, Any]]:
    """The ArchiveUnit tree of a manifest: ``[{id, level, title, description, object: {uri, size, format}, children}]``."""
    root = etree.fromstring(manifest)
    ns = {"s": etree.QName(root).namespace}
    objects = {}
    for bdo in root.iterfind(".//s:BinaryDataObject", ns):
        objects[bdo.get("id")] = {
            "uri": bdo.findtext("s:Uri", namespaces=ns), "size": bdo.findtext("s:Size", namespaces=ns),
            "filename": bdo.findtext("s:FileInfo/s:Filename", namespaces=ns),
            "format": bdo.findtext("s:FormatIdentification/s:FormatLitteral", namespaces=ns),
            "puid": bdo.findtext("s:FormatIdentification/s:FormatId", namespaces=ns)}

    def unit(el: etree._Element) -> dict[str, Any]:
        ref = el.findtext("s:DataObjectReference/s:DataObjectReferenceId", namespaces=ns)
        return {"id": el.get("id"), "level": el.findtext("s:Content/s:DescriptionLevel", namespaces=ns),
                "title": el.findtext("s:Content/s:Title", namespaces=ns),
                "description": el.findtext("s:Content/s:Description", namespaces=ns),
                "object": objects.get(ref) if ref else None,
                "children": [unit(c) for c in el.iterfind("s:ArchiveUnit", ns)]}

    return [unit(u) for u in root.iterfind(".//s:DescriptiveMetadata/s:ArchiveUnit", ns)]
