"""GED deposit into a real directory, a small WebDAV server and an S3 server (moto)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from minio import Minio

from flowbus.blobs.base import put_bytes
from flowbus.blobs.filesystem import FilesystemBlobStore
from flowbus.connectors.base import ConnectorInstance, StepContext
from flowbus.connectors.registry import connector_class
from flowbus.errors import PermanentError, TransientError
from flowbus.models import Document, FileRef
from flowbus.outbound import LOOPBACK, OutboundPolicy
from tests.support.pdfs import pdf

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would

ACTE = pdf("acte " * 200)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass
class _Runtime:
    blobs: FilesystemBlobStore
    outbound: OutboundPolicy = LOOPBACK_POLICY


async def _document(blobs: FilesystemBlobStore) -> Document:
    files = []
    for field, idx, name, data in [("acte", 0, "délibération 12.pdf", ACTE),
                                   ("annexes", 0, "annexe.pdf", pdf("annexe 1")),
                                   ("annexes", 1, "annexe.pdf", pdf("annexe 2"))]:
        ref = await put_bytes(blobs, data)
        files.append(FileRef("doc-1", field, idx, name, "application/pdf", ref.size, ref.sha256, ref.key, NOW))
    return Document("doc-1", "ville", "deliberation", "signed", {"numero_de_lacte": "2026-012", "objet": "Budget"},
                    3, NOW, NOW, files=tuple(files))


def _ctx(runtime, doc, kind, settings, params=None) -> tuple[object, StepContext]:
    inst = ConnectorInstance("ged-1", "ged", kind, None, settings)
    conn = connector_class("ged", kind)(inst, runtime)
    ctx = StepContext(runtime=runtime, document=doc, flow_id=doc.flow_id, step_id="ged", params=params or {},
                      instance=inst, attempt=1, idempotency_key="doc-1:ged:1", data={}, started_at=NOW,
                      log=structlog.get_logger("test"))
    return conn, ctx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_filesystem_deposit_files_and_metadata(tmp_path: Path) -> None:
    rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
    doc = await _document(rt.blobs)
    conn, ctx = _ctx(rt, doc, "filesystem", {"directory": str(tmp_path / "ged"), "done_marker": "fini"},
                     {"folder": "{year}/{fields[numero_de_lacte]}", "location_field": "ged_url"})
    out = await conn.start(ctx)
    folder = tmp_path / "ged" / "2026" / "2026-012"
    assert out.status == "done"
    assert out.fields == {"ged_url": str(folder)}
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["annexe.pdf", "annexes-1-annexe.pdf", "deliberation 12.pdf", "fini", "metadata.json"]
    assert (folder / "deliberation 12.pdf").read_bytes() == ACTE
    assert (folder / "annexes-1-annexe.pdf").read_bytes() == pdf("annexe 2")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["fields"]["objet"] == "Budget"
    assert [f["path"] for f in meta["files"]] == ["deliberation 12.pdf", "annexe.pdf", "annexes-1-annexe.pdf"]
    assert meta["files"][0]["sha256"] == hashlib.sha256(ACTE).hexdigest()
    # a redelivered step writes the same files again, nothing more
    again = await conn.start(ctx)
    assert again.status == "done"
    assert sorted(p.name for p in folder.iterdir()) == names


async def test_filesystem_bad_template_is_permanent(tmp_path: Path) -> None:
    rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
    doc = await _document(rt.blobs)
    conn, ctx = _ctx(rt, doc, "filesystem", {"directory": str(tmp_path / "ged")}, {"folder": "{fields[absent]}"})
    with pytest.raises(PermanentError) as err:
        await conn.start(ctx)
    assert err.value.field == "folder"


async def test_filesystem_only_selected_fields(tmp_path: Path) -> None:
    rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
    doc = await _document(rt.blobs)
    conn, ctx = _ctx(rt, doc, "filesystem", {"directory": str(tmp_path / "ged"), "metadata": "none",
                                             "fields": ["acte"]})
    await conn.start(ctx)
    assert [p.name for p in (tmp_path / "ged" / "ville" / "deliberation" / "doc-1").iterdir()] == \
        ["deliberation 12.pdf"]


class WebdavServer:
    """Just enough RFC 4918: MKCOL (409 without parent, 405 if present), PUT, PROPFIND Depth 0."""

    def __init__(self, user: str, password: str) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = {"", "dav"}
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.fail_next: list[int] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.expected:
            return web.Response(status=401)
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0))
        path = request.path.strip("/")
        parent = path.rpartition("/")[0]
        if request.method == "MKCOL":
            if path in self.dirs or path in self.files:
                return web.Response(status=405)
            if parent not in self.dirs:
                return web.Response(status=409)
            self.dirs.add(path)
            return web.Response(status=201)
        if request.method == "PUT":
            if parent not in self.dirs:
                return web.Response(status=409)
            existed = path in self.files
            self.files[path] = await request.read()
            return web.Response(status=204 if existed else 201)
        if request.method == "PROPFIND":
            if path in self.dirs or path in self.files:
                return web.Response(status=207, text="<d:multistatus xmlns:d='DAV:'/>",
                                    content_type="application/xml")
            return web.Response(status=404)
        return web.Response(status=405)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/dav"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_webdav_deposit_creates_collections_and_puts_files(tmp_path: Path) -> None:
    server = WebdavServer("ged", "s3cret")
    url = await server.start()
    try:
        rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
        doc = await _document(rt.blobs)
        conn, ctx = _ctx(rt, doc, "webdav", {"url": url, "username": "ged", "password": "s3cret"})
        out = await conn.start(ctx)
        assert out.status == "done"
        assert out.data["location"] == f"{url}/ville/deliberation/doc-1"
        assert {"dav", "dav/ville", "dav/ville/deliberation", "dav/ville/deliberation/doc-1"} <= server.dirs
        assert server.files["dav/ville/deliberation/doc-1/deliberation 12.pdf"] == ACTE
        meta = json.loads(server.files["dav/ville/deliberation/doc-1/metadata.json"])
        assert meta["document"] == "doc-1"
        assert await conn.target.exists("ville/deliberation/doc-1/metadata.json")
        assert not await conn.target.exists("ville/nothing")
        assert (await conn.target.check()).ok
        server.fail_next = [503]
        conn2, ctx2 = _ctx(rt, doc, "webdav", {"url": url, "username": "ged", "password": "s3cret"})
        with pytest.raises(TransientError):
            await conn2.start(ctx2)
        await conn2.close()
        conn3, ctx3 = _ctx(rt, doc, "webdav", {"url": url, "username": "ged", "password": "wrong"})
        with pytest.raises(PermanentError) as err:
            await conn3.start(ctx3)
        assert err.value.field == "username"
        await conn3.close()
        await conn.close()
    finally:
        await server.stop()


async def test_webdav_unreachable_is_transient(tmp_path: Path) -> None:
    rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
    doc = await _document(rt.blobs)
    conn, ctx = _ctx(rt, doc, "webdav", {"url": f"http://127.0.0.1:{_free_port()}/dav"})
    with pytest.raises(TransientError):
        await conn.start(ctx)
    await conn.close()


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def test_s3_deposit(tmp_path: Path, moto_endpoint: str) -> None:
    rt = _Runtime(FilesystemBlobStore(tmp_path / "blobs"))
    doc = await _document(rt.blobs)
    settings = {"endpoint": moto_endpoint, "access_key": "test", "secret_key": "testtest", "bucket": "ged-ville",
                "prefix": "depots", "region": "us-east-1", "create_bucket": True}
    conn, ctx = _ctx(rt, doc, "s3", settings)
    out = await conn.start(ctx)
    assert out.data["location"] == "s3://ged-ville/depots/ville/deliberation/doc-1"
    client = Minio(moto_endpoint.split("//")[1], access_key="test", secret_key="testtest", secure=False,
                   region="us-east-1")
    keys = sorted(o.object_name for o in client.list_objects("ged-ville", prefix="depots/", recursive=True))
    assert keys == ["depots/ville/deliberation/doc-1/annexe.pdf",
                    "depots/ville/deliberation/doc-1/annexes-1-annexe.pdf",
                    "depots/ville/deliberation/doc-1/deliberation 12.pdf",
                    "depots/ville/deliberation/doc-1/metadata.json"]
    body = client.get_object("ged-ville", "depots/ville/deliberation/doc-1/deliberation 12.pdf").read()
    assert body == ACTE
    assert (await conn.target.check()).ok
    missing, ctx2 = _ctx(rt, doc, "s3", {**settings, "bucket": "absent", "create_bucket": False})
    with pytest.raises(PermanentError) as err:
        await missing.start(ctx2)
    assert err.value.field == "bucket"


async def test_cemetery_flow_deposits_into_the_entity_ged(runtime_factory, wait_state, tmp_path: Path) -> None:
    """Through the engine: the shipped cimetière flow, its ged step on a filesystem GED of the entity."""
    import shutil

    from flowbus import documents
    from flowbus.models import Entity
    from flowbus.store import repo

    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    (config / "connectors").mkdir()
    shutil.copy(root / "config" / "flows" / "cimetiere.yml", config / "flows" / "cimetiere.yml")
    ged_dir = tmp_path / "ged-ville"
    (config / "connectors" / "c.yml").write_text(f"""
instances:
  - {{id: parapheur, family: signature, kind: test, entity: null, settings: {{}}}}
  - {{id: mailsec, family: mailsec, kind: test, entity: null, settings: {{}}}}
  - {{id: sae, family: sae, kind: test, entity: null, settings: {{}}}}
  - {{id: ged, family: ged, kind: test, entity: null, settings: {{}}}}
  - id: ged
    family: ged
    kind: filesystem
    entity: ville
    settings: {{directory: "{ged_dir}", done_marker: "FIN"}}
""", encoding="utf-8")
    rt = await runtime_factory("embedded", config_dir=config)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ville", "Ville", None, None, rt.clock.now()))
        await repo.insert_entity(tx, Entity("autre", "Autre", None, None, rt.clock.now()))

    async def one(data: bytes):
        yield data

    ids = {}
    for entity in ("ville", "autre"):
        doc = await documents.create_document(rt, entity_id=entity, flow_id="cimetiere", actor="test", fields={
            "objet": "Concession", "cimetiere": "Est", "numero_concession": f"C-{entity}", "concessionnaire_nom": "D",
            "duree": "30", "date_decision": "2026-02-10"})
        await documents.attach_file(rt, doc.id, "arrete", filename="arrete.pdf", media_type="application/pdf",
                                    chunks=one(pdf(f"arrete {entity}")), actor="test")
        await documents.run_action(rt, doc.id, "start", actor="test")
        ids[entity] = doc.id
    for doc_id in ids.values():
        assert (await wait_state(rt, doc_id, "done")).state == "done"
    # the flow's folder template (step params) with the entity's GED settings (instance settings)
    folder = ged_dir / "cimetieres" / "Est" / str(rt.clock.now().year) / "C-ville"
    assert sorted(p.name for p in folder.iterdir()) == ["FIN", "arrete.pdf", "metadata.json"]
    assert (folder / "arrete.pdf").read_bytes() == pdf("arrete ville")
    assert json.loads((folder / "metadata.json").read_text())["document"] == ids["ville"]
    assert [p.name for p in folder.parent.iterdir()] == ["C-ville"]  # the other entity: the global (test) GED
