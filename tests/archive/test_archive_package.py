"""Packages from local blob files (kernel copy) and from chunks: same digests, valid zip/tar, tampering still found."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
import tarfile
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowbus.archive import container, seda
from flowbus.archive.package import SourceFile, blob_source, build_package
from flowbus.archive.seal import InternalTimestamper, Sealer
from flowbus.archive.verify import verify_package
from flowbus.blobs.filesystem import FilesystemBlobStore
from flowbus.blobs.memory import MemoryBlobStore
from flowbus.errors import PermanentError

REPO = Path(__file__).resolve().parents[2]
XSD = REPO / ".." / "shared" / "schemas" / "seda"
WHEN = datetime(2026, 11, 23, 10, tzinfo=UTC)
CONTENTS = {
    "deliberation.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n",
    "court.txt": b"x",
    "grand.pdf": b"%PDF-1.7\n" + os.urandom(container.BLOCK + 3),  # two blocks, the second of 12 bytes
    "Annexe n°2 été.xml": b'<?xml version="1.0"?><a>' + b"x" * 70000 + b"</a>",
}


def _transfer() -> seda.Transfer:
    return seda.Transfer(message_id="TR-7", date=WHEN, title="Paquet", archival_agency="AD34",
                         transferring_agency="21340000000017")


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _sources(blobs) -> list[SourceFile]:
    sources = []
    for name, data in CONTENTS.items():
        ref = await blobs.put(_one(data))
        sources.append(blob_source(blobs, ref.key, name, name, ref.size, WHEN))
    return sources


async def _build(path: Path, sources: list[SourceFile], pki, fmt: str = "zip"):
    return await build_package(path, _transfer(), sources, sealer=Sealer(pki.seal, InternalTimestamper(pki.tsa)),
                               xsd_dir=XSD, fmt=fmt)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
async def test_local_blob_files_are_copied_and_verify(tmp_path, pki, fmt):
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    sources = await _sources(blobs)
    assert all(s.path is not None and s.path.is_file() for s in sources)
    result = await _build(tmp_path / f"p.{fmt}", sources, pki, fmt)
    assert verify_package(result.path, trusted=pki.trusted, xsd_dir=XSD) == []
    expected = {o.uri: data for o, data in zip(result.objects, CONTENTS.values(), strict=True)}
    for obj, data in zip(result.objects, CONTENTS.values(), strict=True):
        assert obj.sha512 == hashlib.sha512(data).hexdigest() and obj.size == len(data)
    if fmt == "zip":
        with zipfile.ZipFile(result.path) as z:
            assert z.testzip() is None
            assert {n: z.read(n) for n in expected} == expected
        if shutil.which("unzip"):
            run = subprocess.run(["unzip", "-tq", str(result.path)], capture_output=True, text=True)
            assert run.returncode == 0, run.stdout + run.stderr
    else:
        with tarfile.open(result.path) as tar:
            assert {n: tar.extractfile(n).read() for n in expected} == expected


async def test_local_and_chunked_sources_give_the_same_manifest_entries(tmp_path, pki):
    local = await _build(tmp_path / "local.zip", await _sources(FilesystemBlobStore(tmp_path / "blobs")), pki)
    chunked_sources = await _sources(MemoryBlobStore())
    assert all(s.path is None for s in chunked_sources)
    chunked = await _build(tmp_path / "chunked.zip", chunked_sources, pki)
    assert local.objects == chunked.objects
    with zipfile.ZipFile(local.path) as a, zipfile.ZipFile(chunked.path) as b:
        content = [[(i.filename, i.CRC, i.file_size) for i in z.infolist() if i.filename.startswith("content/")]
                   for z in (a, b)]
    assert content[0] == content[1] and len(content[0]) == len(CONTENTS)


async def test_without_kernel_copy_the_bytes_are_written_from_the_buffer(tmp_path, pki, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "copy_file_range", refuse)
    for fmt in ("zip", "tar"):
        result = await _build(tmp_path / f"p.{fmt}", await _sources(FilesystemBlobStore(tmp_path / "blobs")),
                              pki, fmt)
        assert verify_package(result.path, trusted=pki.trusted) == []


async def test_one_changed_byte_in_a_copied_file_is_found(tmp_path, pki):
    result = await _build(tmp_path / "p.zip", await _sources(FilesystemBlobStore(tmp_path / "blobs")), pki)
    uri = result.objects[2].uri
    with zipfile.ZipFile(result.path) as z:
        info = z.getinfo(uri)
        entries = {n: z.read(n) for n in z.namelist()}
    # rewritten with a valid CRC-32: the SHA-512 differs from the manifest's
    entries[uri] = entries[uri][:1000] + bytes([entries[uri][1000] ^ 1]) + entries[uri][1001:]
    with zipfile.ZipFile(tmp_path / "rewritten.zip", "w") as out:
        for name, body in entries.items():
            out.writestr(name, body)
    # changed in place: zip's own CRC-32 no longer matches
    raw = bytearray(result.path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_length + extra_length + 1000] ^= 1
    (tmp_path / "in-place.zip").write_bytes(raw)
    for tampered in ("rewritten.zip", "in-place.zip"):
        problems = verify_package(tmp_path / tampered)
        assert [p.where for p in problems] == [uri] and "content altered" in problems[0].what, tampered


async def test_a_blob_shorter_than_announced_fails_and_leaves_no_file(tmp_path, pki):
    sources = await _sources(FilesystemBlobStore(tmp_path / "blobs"))
    s = sources[0]
    sources[0] = SourceFile(s.filename, s.title, s.chunks, (s.size or 0) + 1, s.last_modified, path=s.path)
    with pytest.raises(PermanentError, match="bytes read"):
        await _build(tmp_path / "p.zip", sources, pki)
    assert not (tmp_path / "p.zip").exists()


def test_zip64_end_records_past_65535_entries(tmp_path):
    zc = container.ZipContainer(tmp_path / "many.zip")
    for i in range(70000):
        zc.add_bytes(f"f{i}", b"%d" % i, WHEN)
    zc.close()
    with zipfile.ZipFile(tmp_path / "many.zip") as z:
        assert len(z.infolist()) == 70000 and z.read("f69999") == b"69999"
