"""GED into a local (or mounted) directory: temp file + atomic rename, so a reader never sees half a file."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from flowbus.blobs.base import Health
from flowbus.errors import PermanentError, TransientError


class FilesystemTarget:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        return self.root.joinpath(*path.split("/")) if path else self.root

    async def make_dirs(self, path: str) -> None:
        try:
            self._path(path).mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermanentError(f"GED directory {self._path(path)} cannot be created: {exc}",
                                 field="directory", hint="give the flowbus user write access") from exc
        except OSError as exc:
            raise TransientError(f"GED directory {self._path(path)} cannot be created: {exc}") from exc

    async def exists(self, path: str) -> bool:
        return self._path(path).exists()

    async def write(self, path: str, chunks: AsyncIterator[bytes], size: int, media_type: str) -> None:
        final = self._path(path)
        loop = asyncio.get_running_loop()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".", suffix=".part")
        except PermissionError as exc:
            raise PermanentError(f"cannot write into {final.parent}: {exc}", field="directory") from exc
        except OSError as exc:
            raise TransientError(f"cannot write into {final.parent}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    await loop.run_in_executor(None, out.write, chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise TransientError(f"cannot write {final}: {exc}") from exc
            raise

    def location(self, path: str) -> str:
        return str(self._path(path))

    async def check(self) -> Health:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".flowbus-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
            return Health(True, f"GED directory {self.root} is writable")
        except OSError as exc:
            return Health(False, f"GED directory {self.root}: {exc}",
                          "create the directory and give the flowbus user write access")

    async def close(self) -> None:
        return None
