"""BlobStore contract on the filesystem and on S3 (moto): content addressing, streaming, limits."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from flowbus.blobs.base import put_bytes
from flowbus.errors import NotFound, PayloadTooLarge


@pytest.fixture(params=["filesystem", "s3"])
async def blobs(request, tmp_path):
    if request.param == "filesystem":
        from flowbus.blobs.filesystem import FilesystemBlobStore
        store = FilesystemBlobStore(tmp_path / "blobs")
    else:
        from flowbus.blobs.s3 import S3BlobStore
        endpoint = request.getfixturevalue("s3_server")
        store = S3BlobStore.from_settings(endpoint, "test", "test", f"b-{uuid.uuid4().hex[:10]}")
    yield store
    await store.close()


async def _gen(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_put_open_roundtrip_is_content_addressed(blobs):
    data = os.urandom(3 * 1024 * 1024 + 17)
    ref = await blobs.put(_gen(data))
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert b"".join([c async for c in blobs.open(ref.key)]) == data
    again = await blobs.put(_gen(data, 4096))
    assert again.key == ref.key
    assert await blobs.exists(ref.key)
    await blobs.delete(ref.key)
    assert not await blobs.exists(ref.key)
    with pytest.raises(NotFound):
        await blobs.read(ref.key)


async def test_size_limit_stores_nothing(blobs):
    with pytest.raises(PayloadTooLarge):
        await blobs.put(_gen(b"x" * 5000, 1000), max_size=4000)
    small = await put_bytes(blobs, b"")
    assert small.size == 0 and await blobs.read(small.key) == b""


async def test_check_reports_health(blobs):
    health = await blobs.check()
    assert health.ok, health.detail


async def test_s3_multipart_large_file(s3_server):
    from flowbus.blobs.s3 import S3BlobStore
    store = S3BlobStore.from_settings(s3_server, "test", "test", f"b-{uuid.uuid4().hex[:10]}")
    data = os.urandom(23 * 1024 * 1024)  # three 10 MB parts
    ref = await store.put(_gen(data))
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join([c async for c in store.open(ref.key)])).hexdigest() == ref.sha256
