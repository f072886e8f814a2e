"""Step family ``ged``: deposit a document's files and a metadata file, one folder per document.

Instance settings (all kinds)::

    folder: "{entity}/{flow}/{document}"   # template: entity, flow, document, state, date, year, month,
                                           # fields (e.g. "{year}/{fields[numero_de_lacte]}")
    metadata: json                         # json (default) | none
    metadata_filename: metadata.json
    done_marker: ""                        # a file written last, once everything else is in place
    fields: []                             # file fields to deposit (default: every file of the document)

Kinds: ``filesystem`` (``directory``), ``webdav`` (``url``, ``username``, ``password``), ``s3``
(``endpoint``, ``access_key``, ``secret_key``, ``bucket``, ``prefix``, ``region``, ``secure``,
``create_bucket``).  Step ``params`` may override ``folder``, ``fields``, ``metadata`` and name a
``location_field`` that receives the folder's address.

A redelivered step writes the same paths again (files are replaced), so a deposit is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, Outcome, StepContext
from flowbus.connectors.ged.base import GedTarget, safe_name, safe_path
from flowbus.connectors.ged.filesystem import FilesystemTarget
from flowbus.connectors.ged.s3 import S3Target
from flowbus.connectors.ged.webdav import WebdavTarget
from flowbus.errors import ConfigError, PermanentError
from flowbus.models import Document

DEFAULT_FOLDER = "{entity}/{flow}/{document}"


def _render_folder(template: str, doc: Document) -> str:
    values = {"entity": doc.entity_id, "flow": doc.flow_id, "document": doc.id, "state": doc.state,
              "date": doc.created_at.strftime("%Y-%m-%d"), "year": f"{doc.created_at.year:04d}",
              "month": f"{doc.created_at.month:02d}", "fields": dict(doc.fields)}
    try:
        rendered = template.format_map(values)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise PermanentError(f"GED folder template {template!r} cannot be filled: {exc!r}", field="folder",
                             hint="use {entity}, {flow}, {document}, {date}, {year}, {month} or {fields[name]} "
                                  "with a field the document has") from exc
    path = safe_path(rendered)
    if not path:
        raise PermanentError(f"GED folder template {template!r} gives an empty path", field="folder")
    return path


def metadata_document(doc: Document, deposited: list[dict[str, Any]]) -> dict[str, Any]:
    return {"document": doc.id, "entity": doc.entity_id, "flow": doc.flow_id, "state": doc.state,
            "created_at": isoformat(doc.created_at), "updated_at": isoformat(doc.updated_at),
            "fields": doc.fields, "files": deposited}


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class GedConnector(BaseConnector):
    """Base of the three GED kinds; subclasses only build their ``GedTarget``."""

    family: ClassVar[str] = "ged"

    def __init__(self, instance, runtime) -> None:
        super().__init__(instance, runtime)
        self._target: GedTarget | None = None

    def make_target(self) -> GedTarget:  # pragma: no cover - abstract
        raise ConfigError(f"GED kind {self.kind!r} has no target")

    async def check_destination(self) -> None:
        """Before a deposit: the destination is allowed by the outbound policy (HTTP targets check each
        connection themselves)."""

    @property
    def target(self) -> GedTarget:
        if self._target is None:
            self._target = self.make_target()
        return self._target

    def _setting(self, params: Mapping[str, Any], name: str, default: Any) -> Any:
        if name in params and params[name] is not None:
            return params[name]
        return self.instance.settings.get(name, default)

    async def start(self, ctx: StepContext) -> Outcome:
        doc = ctx.document
        await self.check_destination()
        target = self.target
        folder = _render_folder(str(self._setting(ctx.params, "folder", DEFAULT_FOLDER)), doc)
        wanted = self._setting(ctx.params, "fields", None) or None
        files = [f for f in sorted(doc.files, key=lambda f: (f.field, f.index))
                 if wanted is None or f.field in wanted]
        if wanted:
            missing = [name for name in wanted if not doc.files_of(name)]
            if missing:
                ctx.log.info("ged.fields_without_file", fields=missing)
        await target.make_dirs(folder)
        used: set[str] = set()
        deposited: list[dict[str, Any]] = []
        for ref in files:
            name = safe_name(Path(ref.filename).name)
            if name.lower() in used:
                name = safe_name(f"{ref.field}-{ref.index}-{name}")
            used.add(name.lower())
            path = f"{folder}/{name}"
            await target.write(path, ctx.blobs.open(ref.blob_key), ref.size, ref.media_type)
            deposited.append({"field": ref.field, "index": ref.index, "filename": ref.filename, "path": name,
                              "media_type": ref.media_type, "size": ref.size, "sha256": ref.sha256})
        if str(self._setting(ctx.params, "metadata", "json")).lower() == "json":
            meta_name = safe_name(str(self._setting(ctx.params, "metadata_filename", "metadata.json")))
            body = json.dumps(metadata_document(doc, deposited), ensure_ascii=False, indent=2).encode()
            await target.write(f"{folder}/{meta_name}", _one(body), len(body), "application/json")
        marker = self._setting(ctx.params, "done_marker", "")
        if marker:
            await target.write(f"{folder}/{safe_name(str(marker))}", _one(b""), 0, "text/plain")
        location = target.location(folder)
        ctx.log.info("ged.deposited", location=location, files=len(deposited))
        location_field = ctx.params.get("location_field")
        return Outcome.done(fields={location_field: location} if location_field else None,
                            data={"location": location, "files": [d["path"] for d in deposited]},
                            message=f"Document déposé en GED ({len(deposited)} fichier(s)) : {location}")

    async def close(self) -> None:
        if self._target is not None:
            await self._target.close()


class FilesystemGed(GedConnector):
    kind: ClassVar[str] = "filesystem"

    def make_target(self) -> GedTarget:
        directory = self.instance.settings.get("directory")
        if not directory:
            raise ConfigError(f"GED instance {self.instance.id!r}: setting 'directory' is required",
                              field="directory")
        return FilesystemTarget(Path(directory))


class WebdavGed(GedConnector):
    kind: ClassVar[str] = "webdav"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password"})

    def make_target(self) -> GedTarget:
        s = self.instance.settings
        if not s.get("url"):
            raise ConfigError(f"GED instance {self.instance.id!r}: setting 'url' is required", field="url")
        return WebdavTarget(str(s["url"]), username=s.get("username"), password=s.get("password"),
                            timeout=float(s.get("timeout", 120)), outbound=self.runtime.outbound)


class S3Ged(GedConnector):
    kind: ClassVar[str] = "s3"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    async def check_destination(self) -> None:
        # the S3 client (minio, urllib3) resolves the name itself: checked here before each deposit
        from flowbus.outbound import endpoint_host
        await self.runtime.outbound.check_host(endpoint_host(str(self.instance.settings.get("endpoint", ""))),
                                               field="endpoint")

    def make_target(self) -> GedTarget:
        s = self.instance.settings
        missing = [k for k in ("endpoint", "access_key", "secret_key", "bucket") if not s.get(k)]
        if missing:
            raise ConfigError(f"GED instance {self.instance.id!r}: settings {', '.join(missing)} are required",
                              field=missing[0])
        return S3Target(str(s["endpoint"]), str(s["access_key"]), str(s["secret_key"]), str(s["bucket"]),
                        prefix=str(s.get("prefix", "")), region=s.get("region"), secure=s.get("secure"),
                        create_bucket=bool(s.get("create_bucket", False)))
