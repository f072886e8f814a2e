"""S3 uploads in parallel: more concurrent uploads than executor threads must not deadlock."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

from flowbus.blobs.s3 import S3BlobStore


async def test_twenty_concurrent_uploads(s3_server):
    store = S3BlobStore.from_settings(s3_server, "test", "test", f"b-{uuid.uuid4().hex[:10]}")
    payloads = [os.urandom(300_000 + i) for i in range(20)]

    async def upload(data: bytes):
        async def chunks():
            for i in range(0, len(data), 65536):
                await asyncio.sleep(0)
                yield data[i:i + 65536]
        return await store.put(chunks())

    refs = await asyncio.wait_for(asyncio.gather(*(upload(p) for p in payloads)), timeout=120)
    assert [r.sha256 for r in refs] == [hashlib.sha256(p).hexdigest() for p in payloads]
    assert await store.read(refs[7].key) == payloads[7]
