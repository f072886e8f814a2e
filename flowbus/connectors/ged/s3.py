"""GED into an S3 bucket (minio SDK, blocking, so every call runs in a thread)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from flowbus.blobs.base import Health
from flowbus.errors import PermanentError, TransientError

SPOOL_IN_MEMORY = 8 * 1024 * 1024


class S3Target:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, prefix: str = "",
                 region: str | None = None, secure: bool | None = None, create_bucket: bool = False) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        if secure is None:
            secure = parts.scheme != "http"
        self.client = Minio(parts.netloc, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.create_bucket = create_bucket
        self._bucket_ready = False

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    async def _call(self, fn, *args, **kwargs):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise PermanentError(f"S3 refused access to bucket {self.bucket!r}: {exc.code}",
                                     field="access_key", hint="check the access key, secret and bucket policy") from exc
            if exc.code == "NoSuchBucket":
                raise PermanentError(f"S3 bucket {self.bucket!r} does not exist", field="bucket",
                                     hint="create the bucket or set create_bucket: true") from exc
            raise TransientError(f"S3 error on bucket {self.bucket!r}: {exc.code}") from exc
        except (Urllib3Error, OSError) as exc:
            raise TransientError(f"S3 endpoint unreachable: {exc}") from exc

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if self.create_bucket and not await self._call(self.client.bucket_exists, self.bucket):
            await self._call(self.client.make_bucket, self.bucket)
        self._bucket_ready = True

    async def make_dirs(self, path: str) -> None:
        # S3 has no folders: keys carry the path.
        await self._ensure_bucket()

    async def exists(self, path: str) -> bool:
        try:
            await asyncio.to_thread(self.client.stat_object, self.bucket, self._key(path))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise TransientError(f"S3 error on bucket {self.bucket!r}: {exc.code}") from exc

    async def write(self, path: str, chunks: AsyncIterator[bytes], size: int, media_type: str) -> None:
        await self._ensure_bucket()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            written = 0
            async for chunk in chunks:
                spool.write(chunk)
                written += len(chunk)
            spool.seek(0)
            await self._call(self.client.put_object, self.bucket, self._key(path), spool, written,
                             content_type=media_type, part_size=16 * 1024 * 1024)

    def location(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"

    async def check(self) -> Health:
        try:
            exists = await self._call(self.client.bucket_exists, self.bucket)
        except (TransientError, PermanentError) as exc:
            return Health(False, f"S3 GED: {exc}", "check the endpoint, keys and network")
        if not exists and not self.create_bucket:
            return Health(False, f"S3 bucket {self.bucket!r} does not exist", "create it or set create_bucket: true")
        return Health(True, f"S3 bucket {self.bucket!r} reachable")

    async def close(self) -> None:
        return None
