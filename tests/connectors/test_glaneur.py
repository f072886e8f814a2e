"""Folder pickup: sidecar and zip units, errors explained in French, exactly-once across a restart."""

from __future__ import annotations

import asyncio
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

from flowbus.connectors.inbound.glaneur import Glaneur, GlaneurConfig
from flowbus.models import Entity
from flowbus.store import repo
from tests.support.pdfs import pdf


async def _entity(rt: Any, eid: str = "ville", siren: str | None = "213500001") -> None:
    async with rt.store.transaction() as tx:
        if await repo.find_entity(tx, eid) is None:
            await repo.insert_entity(tx, Entity(eid, "Ville", siren, None, rt.clock.now()))


def _age(path: Path, seconds: float = 10) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _drop_sidecar(directory: Path, i: int, *, entity: str = "ville", settled: bool = True) -> None:
    data = directory / f"doc-{i:04d}.pdf"
    data.write_bytes(pdf(f"document {i}"))
    meta = directory / f"doc-{i:04d}.json"
    meta.write_text(json.dumps({"entity": entity, "flow": "demo", "fields": {"title": f"Document {i}"},
                                "files": {"file": data.name}}), encoding="utf-8")
    if settled:
        _age(data)
        _age(meta)


async def _documents(rt: Any) -> list[dict[str, Any]]:
    async with rt.store.transaction() as tx:
        return await tx.fetch("SELECT id, fields, state FROM documents ORDER BY created_at")


async def test_sidecar_zip_and_errors(runtime_factory, tmp_path: Path) -> None:
    rt = await runtime_factory("embedded")
    await _entity(rt)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _drop_sidecar(inbox, 1)
    _drop_sidecar(inbox, 2, settled=False)  # still being written: waits
    with zipfile.ZipFile(inbox / "lot.zip", "w") as zf:
        zf.writestr("manifest.json", json.dumps({"documents": [
            {"siren": "213500001", "flow": "demo", "fields": {"title": "Z1"}, "files": {"file": "a.pdf"}},
            {"siren": "213500001", "flow": "demo", "fields": {"title": "Z2"}, "files": {"file": "b.pdf"}}]}))
        zf.writestr("a.pdf", pdf("a"))
        zf.writestr("b.pdf", pdf("b"))
    with zipfile.ZipFile(inbox / "sans-manifeste.zip", "w") as zf:
        zf.writestr("a.pdf", pdf("a"))
    (inbox / "mauvais.json").write_text(json.dumps({"flow": "demo", "entity": "ville", "fields": {}}))
    for p in inbox.iterdir():
        if p.name.startswith(("lot", "sans", "mauvais")):
            _age(p)
    glaneur = Glaneur(rt, GlaneurConfig(inbox, name="test", settle=2))
    report = await glaneur.scan_once()
    assert sorted(report.done) == ["doc-0001.json", "lot.zip"]
    assert len(report.created) == 3
    assert set(report.failed) == {"mauvais.json", "sans-manifeste.zip"}
    assert "title" in report.failed["mauvais.json"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["doc-0001.json", "doc-0001.pdf", "lot.zip"]
    errors = sorted(p.name for p in (inbox / "error").iterdir())
    assert errors == ["mauvais.json", "mauvais.json.error.txt", "sans-manifeste.zip", "sans-manifeste.zip.error.txt"]
    text = (inbox / "error" / "sans-manifeste.zip.error.txt").read_text(encoding="utf-8")
    assert "manifest.json" in text and "n'a pas pu être traité" in text
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["doc-0002.json", "doc-0002.pdf"]
    docs = await _documents(rt)
    assert sorted(json.loads(d["fields"])["title"] for d in docs) == ["Document 1", "Z1", "Z2"]
    # the same unit dropped again after being processed is recognised, not created twice
    _drop_sidecar(inbox, 1)
    _age(inbox / "doc-0002.json")
    _age(inbox / "doc-0002.pdf")
    report = await glaneur.scan_once()
    assert report.done == ["doc-0002.json"] and len(report.created) == 1
    assert len(await _documents(rt)) == 4
    assert not (inbox / "doc-0001.json").exists()


async def test_thousand_files_dropped_while_the_worker_restarts(runtime_factory, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rt = await runtime_factory("embedded", workers=False)
    await _entity(rt)
    for i in range(500):
        _drop_sidecar(inbox, i)
    config = GlaneurConfig(inbox, name="test", settle=1, interval=0.05, concurrency=8)
    first = asyncio.create_task(Glaneur(rt, config).run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        async with rt.store.transaction() as tx:
            n = await tx.fetchval("SELECT COUNT(*) FROM documents")
        if n >= 200:
            break
        await asyncio.sleep(0.05)
    first.cancel()  # the worker dies in the middle of units
    try:
        await first
    except asyncio.CancelledError:
        pass
    await rt.close()
    for i in range(500, 1000):  # dropped while the worker is down
        _drop_sidecar(inbox, i)
    rt2 = await runtime_factory("embedded", workers=False)  # same data directory: a restart
    async with rt2.store.transaction() as tx:
        interrupted = await tx.fetchval("SELECT COUNT(*) FROM glaneur_files WHERE status = 'processing'")
    print(f"interrupted units: {interrupted}")
    second = asyncio.create_task(Glaneur(rt2, config).run())
    try:
        while loop.time() < deadline:
            left = [p for p in inbox.iterdir() if p.is_file()]
            if not left:
                break
            await asyncio.sleep(0.1)
    finally:
        second.cancel()
        try:
            await second
        except asyncio.CancelledError:
            pass
    docs = await _documents(rt2)
    titles = [json.loads(d["fields"])["title"] for d in docs]
    assert len(titles) == 1000, f"{len(titles)} documents for 1000 units ({interrupted} interrupted)"
    assert len(set(titles)) == 1000
    assert len(list((inbox / "done").iterdir())) == 2000
    assert not (inbox / "error").exists()
    async with rt2.store.transaction() as tx:
        files = await tx.fetchval("SELECT COUNT(*) FROM document_files")
        states = {r["state"] for r in await tx.fetch("SELECT DISTINCT state FROM documents")}
    assert files == 1000
    assert states <= {"running", "done", "draft"} and "draft" not in states
