"""In-memory BlobStore: content-addressed like the real ones, for unit tests of connectors and tools."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator

from flowbus.blobs.base import Health
from flowbus.errors import NotFound, PayloadTooLarge
from flowbus.models import BlobRef


class MemoryBlobStore:
    """Blobs in a dict (``data``: key → bytes); nothing survives the process."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> BlobRef:
        buf = bytearray()
        async for chunk in chunks:
            buf += chunk
            if max_size is not None and len(buf) > max_size:
                raise PayloadTooLarge(f"the file exceeds the size limit of {max_size} bytes", field="file")
        key = hashlib.sha256(buf).hexdigest()
        self.data[key] = bytes(buf)
        return BlobRef(key, key, len(buf))

    async def open(self, key: str) -> AsyncIterator[bytes]:
        body = await self.read(key)
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]
        if not body:
            yield b""

    async def read(self, key: str) -> bytes:
        if key not in self.data:
            raise NotFound(f"blob {key} does not exist")
        return self.data[key]

    def local_path(self, key: str) -> None:
        """None: blobs are in memory, not in local files."""
        return None

    async def exists(self, key: str) -> bool:
        return key in self.data

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def check(self) -> Health:
        return Health(True, "in-memory blobs")

    async def close(self) -> None:
        return None
