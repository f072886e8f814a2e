"""Filesystem BlobStore (embedded default): content-addressed tree, temp file + atomic rename."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from flowbus.blobs.base import CHUNK, Health
from flowbus.errors import NotFound, PayloadTooLarge
from flowbus.models import BlobRef


class FilesystemBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; identical content is stored once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise NotFound(f"blob {key!r} does not exist")
        return self.root / key[:2] / key[2:4] / key

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> BlobRef:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise PayloadTooLarge(f"the file exceeds the size limit of {max_size} bytes", field="file")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            key = digest.hexdigest()
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        except BaseException:
            with _suppress():
                os.unlink(tmp_name)
            raise
        return BlobRef(key, key, size)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob {key} is missing from {self.root}") from exc
        loop = asyncio.get_running_loop()
        with handle:
            while True:
                chunk = await loop.run_in_executor(None, handle.read, CHUNK)
                if not chunk:
                    break
                yield chunk

    async def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {key} is missing from {self.root}") from exc

    def local_path(self, key: str) -> Path:
        """The blob's file (never written to once renamed into place). Raises NotFound if absent."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"blob {key} is missing from {self.root}")
        return path

    async def exists(self, key: str) -> bool:
        try:
            return self._path(key).exists()
        except NotFound:
            return False

    async def delete(self, key: str) -> None:
        with _suppress():
            self._path(key).unlink()

    async def check(self) -> Health:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".probe"
            probe.write_bytes(b"ok")
            probe.unlink()
            return Health(True, f"filesystem blobs under {self.root}")
        except OSError as exc:
            return Health(False, f"filesystem blobs under {self.root}: {exc}",
                          "rendez FLOWBUS_DATA_DIR inscriptible par l'utilisateur de flowbus, ou libérez de la place")

    async def close(self) -> None:
        return None


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]
