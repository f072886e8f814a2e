"""Folder pickup (« glaneur »): files dropped in a directory become documents.

A *unit* is either
* a JSON sidecar ``<name>.json`` naming the files beside it::

      {"entity": "ville", "flow": "deliberation", "fields": {"objet": "…"},
       "files": {"acte": "DEL-2026-012.pdf", "annexes": ["plan.pdf"]}, "start": true}

  (``siren`` may replace ``entity``; ``entity``/``flow`` default to the glaneur's settings), or
* a ``.zip`` holding ``manifest.json`` with the same content, or ``{"documents": [ … ]}`` for
  several documents, file names being zip members.

A unit is picked up once all its files have stopped changing for ``settle`` seconds.  It is
recorded (glaneur name, unit name, SHA-256 over its bytes) before any document is created, and
documents are created through ``inbound.common.submit`` with an origin derived from that record:
a restart at any point resumes the unit instead of creating its documents again.  Processed
files go to ``done/``; a unit that cannot be processed goes to ``error/`` with
``<name>.error.txt`` explaining why, in French.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from flowbus.clock import isoformat
from flowbus.connectors.inbound.common import Upload, submit
from flowbus.errors import FlowbusError
from flowbus.store import repo

log = structlog.get_logger(__name__)
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class GlaneurConfig:
    directory: Path
    name: str = "glaneur"
    entity: str | None = None  # default entity
    flow: str | None = None  # default flow
    start: bool = True
    settle: float = 2.0  # seconds a file must stay unchanged before pickup
    interval: float = 5.0  # seconds between scans
    concurrency: int = 4


@dataclass
class Unit:
    name: str  # the sidecar or zip file name
    paths: list[Path]  # every file of the unit (moved together)
    docs: list[dict[str, Any]] = field(default_factory=list)
    zip_path: Path | None = None


@dataclass
class ScanReport:
    created: list[str] = field(default_factory=list)  # document ids
    done: list[str] = field(default_factory=list)  # unit names
    failed: dict[str, str] = field(default_factory=dict)  # unit name → error


class UnitError(Exception):
    """Why a unit cannot be processed, in French, for ``<name>.error.txt``."""


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _file_reader(path: Path):
    async def gen() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        with path.open("rb") as fh:
            while True:
                chunk = await loop.run_in_executor(None, fh.read, CHUNK)
                if not chunk:
                    break
                yield chunk
    return gen


def _zip_reader(zip_path: Path, member: str):
    async def gen() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        with zipfile.ZipFile(zip_path) as zf, zf.open(member) as fh:
            while True:
                chunk = await loop.run_in_executor(None, fh.read, CHUNK)
                if not chunk:
                    break
                yield chunk
    return gen


def _media_type(name: str) -> str:
    import mimetypes
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Glaneur:
    def __init__(self, runtime: Any, config: GlaneurConfig) -> None:
        self.rt = runtime
        self.config = config
        self.dir = Path(config.directory)
        self.done_dir = self.dir / "done"
        self.error_dir = self.dir / "error"

    # ---- discovery ---------------------------------------------------------------------------

    def _stable(self, paths: list[Path]) -> bool:
        """Every file unchanged for ``settle`` seconds (file times are wall-clock, so is this check)."""
        wall = time.time()
        for p in paths:
            try:
                if wall - p.stat().st_mtime < self.config.settle:
                    return False
            except FileNotFoundError:
                return False
        return True

    def discover(self) -> list[Unit]:
        """Units whose files are all present and settled; the rest waits for a later scan."""
        units: list[Unit] = []
        try:
            entries = sorted(p for p in self.dir.iterdir() if p.is_file() and not p.name.startswith("."))
        except FileNotFoundError:
            return []
        names = {p.name for p in entries}
        for p in entries:
            if p.suffix.lower() == ".zip":
                unit = Unit(p.name, [p], zip_path=p)
            elif p.suffix.lower() == ".json":
                unit = Unit(p.name, [p])
                try:
                    meta = json.loads(p.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    units.append(unit)  # reported as an error when processed
                    continue
                listed = _listed_files(meta)
                if any(n not in names for n in listed):
                    continue  # the data files are not all there yet
                unit.paths += [self.dir / n for n in listed if n != p.name]
            else:
                continue  # a data file: processed with its sidecar
            if self._stable(unit.paths):
                units.append(unit)
        return units

    # ---- processing --------------------------------------------------------------------------

    def _load(self, unit: Unit) -> list[dict[str, Any]]:
        if unit.zip_path is not None:
            try:
                with zipfile.ZipFile(unit.zip_path) as zf:
                    members = set(zf.namelist())
                    if "manifest.json" not in members:
                        raise UnitError("l'archive ne contient pas de fichier manifest.json")
                    meta = json.loads(zf.read("manifest.json").decode("utf-8"))
            except zipfile.BadZipFile as exc:
                raise UnitError(f"l'archive zip est illisible ({exc})") from exc
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UnitError(f"le fichier manifest.json n'est pas un JSON valide ({exc})") from exc
        else:
            members = None
            try:
                meta = json.loads(unit.paths[0].read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UnitError(f"le fichier de métadonnées n'est pas un JSON valide ({exc})") from exc
        specs = meta.get("documents") if isinstance(meta, dict) and "documents" in meta else [meta]
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise UnitError("les métadonnées doivent décrire un document (objet JSON) ou une liste « documents »")
        for i, spec in enumerate(specs):
            for name in _listed_files(spec):
                if members is not None and name not in members:
                    raise UnitError(f"document n°{i + 1} : le fichier « {name} » est absent de l'archive")
        return specs

    async def _entity(self, spec: dict[str, Any], position: int) -> str:
        if spec.get("entity"):
            return str(spec["entity"])
        if spec.get("siren"):
            async with self.rt.store.transaction() as tx:
                entity = await repo.entity_by_siren(tx, str(spec["siren"]))
            if entity is None:
                raise UnitError(f"document n°{position} : aucune entité n'a le SIREN {spec['siren']}")
            return entity.id
        if self.config.entity:
            return self.config.entity
        raise UnitError(f"document n°{position} : l'entité n'est pas indiquée (clé « entity » ou « siren »)")

    def _uploads(self, unit: Unit, spec: dict[str, Any], position: int) -> list[Upload]:
        files = spec.get("files") or {}
        if not isinstance(files, dict):
            raise UnitError(f"document n°{position} : « files » doit associer un champ à un nom de fichier")
        uploads: list[Upload] = []
        for field_name, names in files.items():
            for name in names if isinstance(names, list) else [names]:
                if not isinstance(name, str) or "/" in name.replace("\\", "/") and unit.zip_path is None:
                    raise UnitError(f"document n°{position} : nom de fichier invalide pour le champ {field_name}")
                opener = _zip_reader(unit.zip_path, name) if unit.zip_path else _file_reader(self.dir / name)
                uploads.append(Upload(field_name, Path(name).name, _media_type(name), opener))
        return uploads

    async def _record(self, unit: Unit, digest: str) -> tuple[str, bool]:
        """Record the unit; return its status before ('new', 'processing', 'done') and whether to resume."""
        now = isoformat(self.rt.clock.now())
        async with self.rt.store.transaction() as tx:
            row = await tx.fetchrow("SELECT status FROM glaneur_files WHERE glaneur = $1 AND name = $2 AND sha256 = $3",
                                    self.config.name, unit.name, digest)
            if row is None:
                await tx.execute("INSERT INTO glaneur_files (glaneur, name, sha256, status, documents, created_at, "
                                 "updated_at) VALUES ($1, $2, $3, 'processing', '[]', $4, $4)",
                                 self.config.name, unit.name, digest, now)
                return "new", False
            if row["status"] == "error":
                await tx.execute("UPDATE glaneur_files SET status = 'processing', error = NULL, updated_at = $4 "
                                 "WHERE glaneur = $1 AND name = $2 AND sha256 = $3",
                                 self.config.name, unit.name, digest, now)
                return "processing", True
            return row["status"], row["status"] == "processing"

    async def _finish(self, unit: Unit, digest: str, status: str, doc_ids: list[str], error: str | None) -> None:
        async with self.rt.store.transaction() as tx:
            await tx.execute("UPDATE glaneur_files SET status = $4, documents = $5, error = $6, updated_at = $7 "
                             "WHERE glaneur = $1 AND name = $2 AND sha256 = $3", self.config.name, unit.name, digest,
                             status, json.dumps(doc_ids), error, isoformat(self.rt.clock.now()))

    def _move(self, unit: Unit, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for p in unit.paths:
            if not p.exists():
                continue
            dest = target / p.name
            if dest.exists():
                stamp = self.rt.clock.now().strftime("%Y%m%dT%H%M%S%f")
                dest = target / f"{p.stem}.{stamp}{p.suffix}"
            shutil.move(str(p), dest)

    def _write_error(self, unit: Unit, message: str) -> None:
        self.error_dir.mkdir(parents=True, exist_ok=True)
        text = (f"Le dépôt « {unit.name} » n'a pas pu être traité.\n\nCause : {message}\n\n"
                f"Fichiers concernés : {', '.join(p.name for p in unit.paths)}\n"
                "Corrigez le problème puis déposez à nouveau les fichiers dans le répertoire surveillé.\n")
        (self.error_dir / f"{unit.name}.error.txt").write_text(text, encoding="utf-8")

    async def process(self, unit: Unit, report: ScanReport) -> None:
        try:
            digest = await asyncio.to_thread(_sha256_files, unit.paths)
        except FileNotFoundError:
            return  # moved away meanwhile
        status, resume = await self._record(unit, digest)
        if status == "done":
            self._move(unit, self.done_dir)  # recorded before a crash, not moved yet
            return
        doc_ids: list[str] = []
        try:
            specs = self._load(unit)
            prepared = []
            for i, spec in enumerate(specs, 1):
                flow = spec.get("flow") or self.config.flow
                if not flow:
                    raise UnitError(f"document n°{i} : le flux n'est pas indiqué (clé « flow »)")
                fields = spec.get("fields") or {}
                if not isinstance(fields, dict):
                    raise UnitError(f"document n°{i} : « fields » doit être un objet JSON")
                prepared.append((await self._entity(spec, i), str(flow), fields, self._uploads(unit, spec, i),
                                 bool(spec.get("start", self.config.start))))
            for i, (entity, flow, fields, uploads, start) in enumerate(prepared, 1):
                try:
                    doc = await submit(self.rt, entity_id=entity, flow_id=flow, fields=fields, uploads=uploads,
                                       actor=f"glaneur:{self.config.name}", start=start,
                                       origin=f"{unit.name}:{digest[:32]}:{i}", resume=resume)
                except FlowbusError as exc:
                    where = f" (champ « {exc.field} »)" if exc.field else ""
                    raise UnitError(f"document n°{i} : {exc.message}{where}") from exc
                doc_ids.append(doc.id)
        except UnitError as exc:
            message = str(exc)
            if doc_ids:
                message += f" — les documents {', '.join(doc_ids)} ont déjà été créés pour ce dépôt"
            await self._finish(unit, digest, "error", doc_ids, message)
            self._write_error(unit, message)
            self._move(unit, self.error_dir)
            report.failed[unit.name] = message
            log.warning("glaneur.unit_failed", glaneur=self.config.name, unit=unit.name, error=message)
            return
        await self._finish(unit, digest, "done", doc_ids, None)
        self._move(unit, self.done_dir)
        report.created.extend(doc_ids)
        report.done.append(unit.name)
        log.info("glaneur.unit_done", glaneur=self.config.name, unit=unit.name, documents=len(doc_ids))

    async def scan_once(self) -> ScanReport:
        report = ScanReport()
        units = await asyncio.to_thread(self.discover)
        sem = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(unit: Unit) -> None:
            async with sem:
                await self.process(unit, report)

        await asyncio.gather(*(one(u) for u in units))
        return report

    async def run(self) -> None:
        """Scan forever (until cancelled)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        log.info("glaneur.started", glaneur=self.config.name, directory=str(self.dir))
        while True:
            try:
                await self.scan_once()
            except (OSError, FlowbusError) as exc:
                log.warning("glaneur.scan_failed", glaneur=self.config.name, error=str(exc))
            await asyncio.sleep(self.config.interval)


def _listed_files(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return []
    specs = meta.get("documents") if isinstance(meta.get("documents"), list) else [meta]
    out: list[str] = []
    for spec in specs:
        files = spec.get("files") if isinstance(spec, dict) else None
        if isinstance(files, dict):
            for names in files.values():
                for n in names if isinstance(names, list) else [names]:
                    if isinstance(n, str):
                        out.append(n)
    return out
