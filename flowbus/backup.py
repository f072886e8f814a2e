"""Backup and restore of the embedded default (SQLite + files), consistent while the server runs.

``backup(settings, dest)``: the state store through SQLite's online backup API (a consistent snapshot,
whatever the server writes meanwhile), then the files of the blob store (documents and the built-in
archive store; content-addressed, never rewritten: every file the snapshot names was written before its
row committed), then the secrets key file, and a ``backup.json`` manifest.  Files already in ``dest``
with the same size are not copied again, so a backup into the same folder is incremental.

``restore(settings, src)``: into an empty data directory only; checks the manifest and every file.

PostgreSQL and S3 are backed up with their own tools (``pg_dump``/PITR, bucket versioning or
replication): see ``docs/operations.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowbus import secretbox
from flowbus.errors import ConfigError, ValidationError

FORMAT = 1
DB_NAME = "flowbus.sqlite3"


@dataclass(frozen=True)
class Report:
    documents: int
    files: int
    copied: int
    bytes: int


def _check_embedded(settings: Any) -> None:
    if settings.uses_postgres or settings.blob_backend != "filesystem":
        raise ConfigError("flowbus backup sauvegarde l'installation intégrée (SQLite et fichiers) ; avec PostgreSQL "
                          "et S3, utilisez leurs propres outils (pg_dump, versionnement du compartiment) : voir "
                          "docs/operations.md.", field="FLOWBUS_DATABASE_URL")


def _copy_tree(src: Path, dest: Path) -> tuple[int, int, int]:
    """(files, copied, bytes copied): files of ``src`` not already in ``dest`` with the same size."""
    files = copied = size = 0
    if not src.is_dir():
        return 0, 0, 0
    for path in src.rglob("*"):
        if not path.is_file() or path.name.endswith(".part") or path.relative_to(src).parts[0] == "tmp":
            continue  # uploads in progress: not part of any committed document
        files += 1
        target = dest / path.relative_to(src)
        length = path.stat().st_size
        if target.is_file() and target.stat().st_size == length:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        copied += 1
        size += length
    return files, copied, size


def backup(settings: Any, dest: Path) -> Report:
    _check_embedded(settings)
    db = settings.sqlite_path
    if not db.is_file():
        raise ConfigError(f"Aucune base à sauvegarder dans {settings.data_dir} (lancez d'abord flowbus init).",
                          field="FLOWBUS_DATA_DIR")
    dest.mkdir(parents=True, exist_ok=True)
    snapshot = dest / (DB_NAME + ".part")
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    target = sqlite3.connect(snapshot)
    try:
        with target:
            source.backup(target, pages=1024)
        documents = int(target.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    finally:
        target.close()
        source.close()
    os.replace(snapshot, dest / DB_NAME)
    files, copied, size = _copy_tree(settings.blob_dir, dest / "blobs")
    key = secretbox.key_file(settings)
    if key.is_file():
        shutil.copyfile(key, dest / "secret.key")
        os.chmod(dest / "secret.key", 0o600)
    (dest / "backup.json").write_text(json.dumps({
        "format": FORMAT, "at": datetime.now(UTC).isoformat(timespec="seconds"), "documents": documents,
        "files": files, "secret_key_file": key.is_file()}, indent=2), encoding="utf-8")
    return Report(documents, files, copied, size)


def restore(settings: Any, src: Path) -> Report:
    _check_embedded(settings)
    manifest_path = src / "backup.json"
    if not manifest_path.is_file() or not (src / DB_NAME).is_file():
        raise ValidationError(f"{src} n'est pas une sauvegarde flowbus (backup.json et {DB_NAME} attendus).",
                              field="source")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValidationError(f"Format de sauvegarde {manifest.get('format')} inconnu.", field="source")
    data = settings.data_dir
    if settings.sqlite_path.exists() or (settings.blob_dir.is_dir() and any(settings.blob_dir.iterdir())):
        raise ValidationError(f"Le dossier de données {data} n'est pas vide : la restauration n'écrase rien. "
                              "Choisissez un FLOWBUS_DATA_DIR neuf.", field="FLOWBUS_DATA_DIR")
    data.mkdir(parents=True, exist_ok=True)
    check = sqlite3.connect(f"file:{src / DB_NAME}?mode=ro", uri=True)
    try:
        if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise ValidationError("La base de la sauvegarde est endommagée (PRAGMA integrity_check).", field="source")
        documents = int(check.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    finally:
        check.close()
    shutil.copyfile(src / DB_NAME, settings.sqlite_path)
    files, copied, size = _copy_tree(src / "blobs", settings.blob_dir)
    if (src / "secret.key").is_file():
        key = secretbox.key_file(settings)
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "secret.key", key)
        os.chmod(key, 0o600)
    if files < int(manifest.get("files", 0)) or documents != manifest.get("documents"):
        raise ValidationError(f"Sauvegarde incomplète : {documents} documents et {files} fichiers trouvés, "
                              f"{manifest.get('documents')} et {manifest.get('files')} annoncés.", field="source")
    return Report(documents, files, copied, size)
