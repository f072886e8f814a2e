"""BlobStore: the seam for file bytes. Content-addressed by SHA-256 computed while streaming."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flowbus.models import BlobRef

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    fix: str | None = None


class BlobStore(Protocol):
    """Where document files live.

    Implementations: ``FilesystemBlobStore`` (embedded default) and ``S3BlobStore`` (minio SDK).
    A file is never held whole in memory: ``put`` consumes an async iterator of chunks and
    ``open`` yields chunks.
    """

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> BlobRef:
        """Store the bytes; return their key, SHA-256 and size.

        Raises:
            PayloadTooLarge: more than ``max_size`` bytes were sent (nothing is kept).
        """

    def open(self, key: str) -> AsyncIterator[bytes]:
        """Yield the bytes of ``key`` in chunks.  Raises NotFound if absent."""

    async def read(self, key: str) -> bytes:
        """Whole content of a small blob (XML messages, receipts). Raises NotFound."""

    def local_path(self, key: str) -> Path | None:
        """The blob's file on this machine, for kernel-side copies (archive packages); None if the store keeps none.

        The file must not be written to: blobs are immutable.
        """

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def check(self) -> Health:
        """Reachability and write access, for /readyz and ``flowbus doctor``."""

    async def close(self) -> None: ...


async def put_bytes(store: BlobStore, data: bytes) -> BlobRef:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]
        if not data:
            yield b""
    return await store.put(gen())
