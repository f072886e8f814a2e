"""S3 BlobStore through the minio SDK (blocking, so run in threads); multipart via streaming parts.

The SHA-256 (the key) is only known once the whole file has been read, so the bytes are
uploaded to a temporary object name with a multipart upload fed from the stream, then
server-side copied to ``blobs/<sha256>`` (or dropped if that content already exists).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from flowbus.blobs.base import CHUNK, Health
from flowbus.errors import BackendError, NotFound, PayloadTooLarge
from flowbus.models import BlobRef

PART_SIZE = 10 * 1024 * 1024
SMALL_FILE = 8 * 1024 * 1024  # up to this size a file is buffered, hashed, then written once
# uploads wait on the event loop for their data: they get their own threads, never the default executor's
_UPLOADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="s3-upload")


class _PullReader(io.RawIOBase):
    """A file-like object the minio SDK reads from its thread, pulling chunks from the event loop.

    The uploading thread asks the loop for the next chunk (``run_coroutine_threadsafe``), so an
    upload holds exactly one thread and never needs a second one to feed it.
    """

    def __init__(self, next_chunk: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._next_chunk = next_chunk
        self._loop = loop
        self._buf = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buf) < size):
            chunk = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop).result()
            if chunk is None:
                self._done = True
            else:
                self._buf += chunk
        if size < 0:
            out, self._buf = bytes(self._buf), bytearray()
        else:
            out, self._buf = bytes(self._buf[:size]), self._buf[size:]
        return out


async def loop_run(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_UPLOADS, fn, *args)


class S3BlobStore:
    def __init__(self, client: Minio, bucket: str, *, prefix: str = "blobs/") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._ready = False

    @classmethod
    def from_settings(cls, endpoint: str, access_key: str, secret_key: str, bucket: str, *,
                      secure: bool = False, region: str = "us-east-1") -> S3BlobStore:
        return cls(Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region),
                   bucket)

    async def _ensure_bucket(self) -> None:
        if self._ready:
            return

        def make() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        try:
            await asyncio.to_thread(make)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise BackendError(f"cannot create the S3 bucket {self.bucket!r}: {exc}") from exc
        except Exception as exc:  # urllib3 connection errors
            raise BackendError(f"S3 endpoint unreachable: {exc}", hint="check FLOWBUS_S3_ENDPOINT") from exc
        self._ready = True

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> BlobRef:
        await self._ensure_bucket()
        tmp_name = f"{self.prefix}tmp/{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        iterator = chunks.__aiter__()

        async def next_chunk() -> bytes | None:
            nonlocal size
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return None
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise PayloadTooLarge(f"the file exceeds the size limit of {max_size} bytes", field="file")
            digest.update(chunk)
            return chunk

        # small files (the usual case) are hashed in memory first and written once, under their final name
        head = bytearray()
        while len(head) < SMALL_FILE:
            chunk = await next_chunk()
            if chunk is None:
                key = digest.hexdigest()
                await loop_run(self._put_small, self._name(key), bytes(head))
                return BlobRef(key, key, size)
            head += chunk

        pending = [bytes(head)]

        async def rest() -> bytes | None:
            return pending.pop() if pending else await next_chunk()

        loop = asyncio.get_running_loop()
        reader = _PullReader(rest, loop)
        try:
            await loop.run_in_executor(_UPLOADS, lambda: self.client.put_object(
                self.bucket, tmp_name, reader, -1, part_size=PART_SIZE))
        except BaseException:
            await asyncio.to_thread(self._remove_quietly, tmp_name)
            raise
        key = digest.hexdigest()
        final = self._name(key)

        def promote() -> None:
            try:
                self.client.stat_object(self.bucket, final)
            except S3Error:
                self.client.copy_object(self.bucket, final, CopySource(self.bucket, tmp_name))
            self.client.remove_object(self.bucket, tmp_name)

        await asyncio.to_thread(promote)
        return BlobRef(key, key, size)

    def _put_small(self, name: str, data: bytes) -> None:
        try:
            self.client.stat_object(self.bucket, name)
            return  # identical content is already stored
        except S3Error:
            pass
        self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))

    def _remove_quietly(self, name: str) -> None:
        try:
            self.client.remove_object(self.bucket, name)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass

    async def open(self, key: str) -> AsyncIterator[bytes]:
        await self._ensure_bucket()
        try:
            response = await asyncio.to_thread(self.client.get_object, self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"blob {key} is missing from bucket {self.bucket}") from exc
            raise BackendError(f"S3 read of blob {key} failed: {exc}") from exc
        try:
            while True:
                chunk = await asyncio.to_thread(response.read, CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def read(self, key: str) -> bytes:
        parts = [chunk async for chunk in self.open(key)]
        return b"".join(parts)

    def local_path(self, key: str) -> None:
        """None: blobs are in a bucket, not in local files."""
        return None

    async def exists(self, key: str) -> bool:
        await self._ensure_bucket()
        try:
            await asyncio.to_thread(self.client.stat_object, self.bucket, self._name(key))
            return True
        except S3Error:
            return False

    async def delete(self, key: str) -> None:
        await self._ensure_bucket()
        await asyncio.to_thread(self._remove_quietly, self._name(key))

    async def check(self) -> Health:
        try:
            await self._ensure_bucket()
            await asyncio.to_thread(self.client.bucket_exists, self.bucket)
            return Health(True, f"S3 bucket {self.bucket!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the operator
            return Health(False, f"S3 bucket {self.bucket!r}: {exc}",
                          "démarrez le serveur S3 (docker compose up minio) ou corrigez FLOWBUS_S3_ENDPOINT et les clés d'accès")

    async def close(self) -> None:
        return None


__all__ = ["S3BlobStore"]
