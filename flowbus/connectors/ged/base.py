"""The GedTarget seam: where a deposit writes (a directory, a WebDAV collection, an S3 prefix)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Protocol

from flowbus.blobs.base import Health

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class GedTarget(Protocol):
    """One GED backend.  Paths are relative, ``/``-separated, already made safe by ``safe_path``."""

    async def make_dirs(self, path: str) -> None:
        """Create the folder ``path`` and its parents (no error if it exists)."""

    async def exists(self, path: str) -> bool: ...

    async def write(self, path: str, chunks: AsyncIterator[bytes], size: int, media_type: str) -> None:
        """Write the file ``path`` (replacing it), streaming ``chunks`` of ``size`` bytes in total.

        Raises:
            TransientError: the server is unreachable or answered 5xx (the engine retries).
            PermanentError: refused for good (authentication, permission, bad configuration).
        """

    def location(self, path: str) -> str:
        """A human-readable address of ``path`` (file path, URL, s3://bucket/key)."""

    async def check(self) -> Health: ...

    async def close(self) -> None: ...


def safe_name(name: str, *, default: str = "fichier") -> str:
    """One path segment: accents folded, no separators, no ``..``, at most 150 characters."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", folded.replace("/", "_").replace("\\", "_")).strip(" .")
    return cleaned[:150] or default


def safe_path(path: str) -> str:
    """A relative path whose every segment went through ``safe_name``."""
    parts = [safe_name(p) for p in path.replace("\\", "/").split("/") if p.strip() not in ("", ".", "..")]
    return "/".join(parts)
