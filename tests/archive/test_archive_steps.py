"""The ``sae`` connectors with a minimal runtime: an in-memory BlobStore (below), a real SQLite state store,
a manual clock and StepContexts built by hand; As@lae is the simulator over real HTTP."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import structlog

from flowbus.blobs.memory import MemoryBlobStore
from flowbus.archive.asalae_sim import AsalaeSimulator
from flowbus.archive.steps import SaeAsalaeConnector, SaeStoreConnector
from flowbus.archive.store import ArchiveStore, unit_tree
from flowbus.archive.verify import verify_package
from flowbus.clock import ManualClock
from flowbus.connectors.base import ConnectorInstance, StepContext
from flowbus.connectors.registry import connector_class
from flowbus.errors import PermanentError, TransientError
from flowbus.models import Document, FileRef
from flowbus.store.sqlite import SQLiteStore
from tests.support.pdfs import pdf

REPO = Path(__file__).resolve().parents[2]
XSD = REPO / ".." / "shared" / "schemas" / "seda"
PDF = pdf("Budget primitif 2027")


@pytest.fixture
async def runtime(tmp_path):
    store = SQLiteStore(tmp_path / "state.sqlite3")
    await store.migrate()
    from flowbus.models import Entity
    from flowbus.store.repo import insert_entity
    async with store.transaction() as tx:
        await insert_entity(tx, Entity("commune-demo", "Commune de Démo", "213400000", None,
                                       datetime(2026, 1, 1, tzinfo=UTC)))
    settings = SimpleNamespace(config_dir=REPO / "config", seda_xsd_dir=XSD, blob_backend="filesystem")
    async with aiohttp.ClientSession() as http:
        yield SimpleNamespace(settings=settings, store=store, blobs=MemoryBlobStore(),
                              clock=ManualClock(datetime(2026, 11, 23, 9, tzinfo=UTC)), http=http)
    await store.close()


async def _document(rt, flow: str, files: dict[str, list[tuple[str, bytes]]], fields: dict) -> Document:
    doc_id = uuid.uuid4().hex
    refs = []
    for field, items in files.items():
        for index, (name, body) in enumerate(items):
            blob = await rt.blobs.put(_one(body))
            refs.append(FileRef(doc_id, field, index, name, "application/octet-stream", len(body), blob.sha256,
                                blob.key, rt.clock.now()))
    return Document(doc_id, "commune-demo", flow, "sae", fields, 3, rt.clock.now(), rt.clock.now(), "sae",
                    files=tuple(refs))


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _ctx(rt, connector, doc: Document, params: dict, data: dict | None = None, attempt: int = 1) -> StepContext:
    return StepContext(runtime=rt, document=doc, flow_id=doc.flow_id, step_id="sae", params=params,
                       instance=connector.instance, attempt=attempt, idempotency_key=f"{doc.id}:sae:{attempt}",
                       data=data or {}, started_at=rt.clock.now(), log=structlog.get_logger("test"))


AGENCIES = {"archival_agency": "FRAD034", "archival_agreement": "ACCORD-2026-01", "archival_profile": "PROFIL-ACTES-34"}


def _settings(pki, **extra) -> dict:
    """A built-in archive store with the archives service's identifiers (the shipped profiles hold examples)."""
    return {"seal_p12_path": str(pki.seal_p12), "seal_p12_password": pki.password,
            "tsa_p12_path": str(pki.tsa_p12), "tsa_p12_password": pki.password, **AGENCIES, **extra}


DELIB_FIELDS = {"objet": "Budget supplémentaire", "numero_acte": "DEL2026_042", "date_decision": "2026-11-20",
                "classification": "7.1", "nature": "1"}


async def test_registry_names_the_sae_kinds():
    assert connector_class("sae", "store") is SaeStoreConnector
    assert connector_class("sae", "asalae") is SaeAsalaeConnector


async def test_store_connector_archives_verifies_and_purges(runtime, pki, tmp_path):
    instance = ConnectorInstance("sae", "sae", "store", None, _settings(pki, purge=True))
    conn = SaeStoreConnector(instance, runtime)
    doc = await _document(runtime, "deliberation", {
        "arrete": [("délibération.pdf", PDF)], "annexes": [("annexe 1.pdf", PDF + b"1"), ("annexe 2.pdf", PDF + b"2")],
        "aractes": [("aractes.xml", b'<?xml version="1.0"?><ARActe/>')], "bordereau_signature": [("b.pdf", PDF + b"b")]},
        DELIB_FIELDS)
    outcome = await conn.start(_ctx(runtime, conn, doc, {"profile": "actes"}))
    assert outcome.status == "done" and outcome.fields["sae_purged"] is True
    package_id = outcome.fields["sae_package_id"]
    store = ArchiveStore(runtime)
    record = await store.get(package_id)
    assert (record.entity_id, record.flow_id, record.files) == ("commune-demo", "deliberation", 5)
    assert record.title == "Acte DEL2026_042 : Budget supplémentaire"
    assert record.seal_subject == "Cachet serveur — Commune de Démo" and record.timestamped_at
    # the document's working files are gone; the package (and the bordereau kept with the document) remain
    assert not any([await runtime.blobs.exists(f.blob_key) for f in doc.files])
    path = tmp_path / "downloaded.zip"
    path.write_bytes(b"".join([c async for c in await store.download(record, actor="archiviste")]))
    assert verify_package(path, trusted=pki.trusted, xsd_dir=XSD) == []
    tree = unit_tree(await store.manifest(package_id))
    assert [c["title"] for c in tree[0]["children"]] == [
        "Acte", "Annexe 1 (annexe 1.pdf)", "Annexe 2 (annexe 2.pdf)", "Accusé de réception de la préfecture",
        "Bordereau de signature"]
    assert tree[0]["children"][0]["object"]["filename"] == "délibération.pdf"
    [bordereau] = outcome.files
    assert bordereau.field == "sae_bordereau"
    # the download is in the entity's journal
    async with runtime.store.transaction() as tx:
        rows = await tx.fetch("SELECT kind, actor FROM journal WHERE entity_id = $1", "commune-demo")
    assert ("archive.downloaded", "archiviste") in [(r["kind"], r["actor"]) for r in rows]
    # a redelivery of the same attempt keeps the same package
    again = await conn.start(_ctx(runtime, conn, doc, {"profile": "actes"}))
    assert again.fields["sae_package_id"] == package_id
    assert (await store.search(entity_ids=["commune-demo"]))[1] == 1
    found, _ = await store.search(keyword="DEL2026", title="budget", flow="deliberation", date_from="2026-11-23",
                                  date_to="2026-11-23")
    assert [r.id for r in found] == [package_id]
    assert (await store.search(date_from="2026-11-24"))[1] == 0


async def test_store_connector_seda_22_and_pes_profile(runtime, pki):
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, _settings(pki, package_format="tar")),
                             runtime)
    doc = await _document(runtime, "pes", {"pes_aller": [("PES.xml", b'<?xml version="1.0"?><PES_Aller/>')],
                                           "pes_acquit": [("acquit.xml", b'<?xml version="1.0"?><PES_ACQUIT/>')]},
                          {"objet": "Mandats novembre"})
    outcome = await conn.start(_ctx(runtime, conn, doc, {"seda_version": "2.2"}))
    manifest = await ArchiveStore(runtime).manifest(outcome.fields["sae_package_id"])
    assert b"fr:gouv:culture:archivesdefrance:seda:v2.2" in manifest and b"<Title>PES Aller sign" in manifest
    assert outcome.fields["sae_purged"] is False and all([await runtime.blobs.exists(f.blob_key) for f in doc.files])


async def test_configuration_errors_name_the_setting(runtime, pki):
    doc = await _document(runtime, "deliberation", {"arrete": [("a.pdf", PDF)]}, DELIB_FIELDS)
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, {}), runtime)
    with pytest.raises(PermanentError) as err:  # the shipped profile's examples are never archived under
        await conn.start(_ctx(runtime, conn, doc, {}))
    assert err.value.field == "archival_agency" and "vaut encore l’exemple" in err.value.message
    assert "archival_agreement" in err.value.message and "archival_profile" in err.value.message
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, dict(AGENCIES)), runtime)
    with pytest.raises(PermanentError) as err:
        await conn.start(_ctx(runtime, conn, doc, {}))
    assert err.value.field == "seal_p12_path"
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None,
                                               _settings(pki, seal_p12_password="wrong")), runtime)
    with pytest.raises(PermanentError) as err:
        await conn.start(_ctx(runtime, conn, doc, {}))
    assert err.value.field == "seal_p12_password"
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, _settings(pki)), runtime)
    from flowbus.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        await conn.start(_ctx(runtime, conn, Document(**{**doc.__dict__, "flow_id": "unknown-flow"}), {}))
    assert err.value.field == "profile" and "unknown-flow.yml" in str(err.value)


async def test_asalae_connector_accept_reject_and_500(runtime, pki):
    async with AsalaeSimulator(login="cg34", password="pw", clock=runtime.clock, xsd_dir=XSD,
                               delays={"ack": timedelta(minutes=5), "reply": timedelta(hours=1)},
                               fail={"send": [500]}) as sim:
        instance = ConnectorInstance("asalae", "sae", "asalae", None,
                                     _settings(pki, url=sim.url, login="cg34", password="pw", check_every=600))
        conn = SaeAsalaeConnector(instance, runtime)
        doc = await _document(runtime, "deliberation", {"arrete": [("acte.pdf", PDF)]}, DELIB_FIELDS)
        with pytest.raises(TransientError):
            await conn.start(_ctx(runtime, conn, doc, {}))
        outcome = await conn.start(_ctx(runtime, conn, doc, {}))
        assert outcome.status == "waiting" and outcome.check_in == timedelta(minutes=10)
        assert [f.field for f in outcome.files] == ["sae_bordereau"]
        # redelivered start: not sent twice
        again = await conn.start(_ctx(runtime, conn, doc, {}))
        assert again.status == "waiting" and len(sim.transfers) == 1 and sim.count("send") == 1
        data = dict(outcome.data)
        assert (await conn.check(_ctx(runtime, conn, doc, {}, data))).status == "waiting"
        runtime.clock.advance(minutes=5)
        step = await conn.check(_ctx(runtime, conn, doc, {}, data))
        assert step.status == "waiting" and [f.field for f in step.files] == ["sae_ack"]
        runtime.clock.advance(hours=1)
        done = await conn.check(_ctx(runtime, conn, doc, {}, dict(step.data)))
        assert done.status == "done" and done.fields["sae_reply_code"] == "000"
        assert [f.field for f in done.files] == ["sae_reply"]

        doc2 = await _document(runtime, "deliberation", {"arrete": [("acte2.pdf", PDF + b"2")]}, DELIB_FIELDS)
        sim.script(f"FLOWBUS-{doc2.id}-1", "reject", "301", "Profil d'archives inconnu")
        first = await conn.start(_ctx(runtime, conn, doc2, {}))
        runtime.clock.advance(hours=2)
        refused = await conn.check(_ctx(runtime, conn, doc2, {}, dict(first.data)))
        assert refused.status == "rejected" and refused.fields["sae_reply_code"] == "301"
        assert "code 301" in refused.reason and "Profil d'archives inconnu" in refused.reason
        assert sorted(f.field for f in refused.files) == ["sae_ack", "sae_reply"]


async def test_store_connector_on_s3_with_object_lock(runtime, pki, s3_server, tmp_path):
    """The store kind on an S3 bucket (moto): created with object lock, versioned, retention on each package."""
    from pydantic import SecretStr
    runtime.settings.__dict__.update(s3_endpoint=s3_server, s3_access_key="test", s3_secret_key=SecretStr("test"),
                                     s3_secure=False, s3_region="us-east-1", s3_bucket=f"t{uuid.uuid4().hex[:10]}")
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, _settings(
        pki, storage="s3", retention_days=30, retention_mode="COMPLIANCE")), runtime)
    doc = await _document(runtime, "deliberation", {"arrete": [("acte.pdf", PDF)]}, DELIB_FIELDS)
    outcome = await conn.start(_ctx(runtime, conn, doc, {}))
    store = conn.archive_store()
    record = await store.get(outcome.fields["sae_package_id"])
    assert record.backend == "s3" and record.version_id
    assert record.retain_until.startswith((runtime.clock.now() + timedelta(days=30)).date().isoformat())
    bucket, _, key = record.location.partition("/")
    assert bucket == f"{runtime.settings.s3_bucket}-archives"
    from minio.error import S3Error
    with pytest.raises(S3Error) as err:  # the version is locked: even its owner cannot delete it
        store.s3.client.remove_object(bucket, key, version_id=record.version_id)
    assert err.value.code == "AccessDenied"
    assert store.s3.client.get_bucket_versioning(bucket).status == "Enabled"
    path = tmp_path / "from-s3.zip"
    path.write_bytes(b"".join([c async for c in await store.download(record, actor="archiviste")]))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
    assert verify_package(path, trusted=pki.trusted) == []


@pytest.mark.parametrize("flow, fields, files", [
    ("rh-contrat", {"agent_nom": "Martin", "agent_prenom": "Léa", "type_contrat": "cdd", "date_debut": "2027-01-01",
                    "matricule": "A-12"}, {"contrat": [("contrat.pdf", PDF)]}),
    ("rh-paie", {"agent_nom": "Martin", "periode": "2026-11"}, {"bulletin": [("bulletin.pdf", PDF)]}),
    ("cimetiere", {"objet": "Concession", "cimetiere": "Cimetière de l'Est", "numero_concession": "C-2026/041",
                   "concessionnaire_nom": "Famille Durand", "duree": "30", "date_decision": "2026-11-02"},
     {"arrete": [("concession.pdf", PDF)], "plan": [("plan.png", b"\x89PNG\r\n\x1a\n....")]}),
])
async def test_every_shipped_profile_gives_a_valid_manifest(runtime, pki, flow, fields, files):
    """The profiles of the other shipped flows (params.profile names them) render to XSD-valid manifests."""
    conn = SaeStoreConnector(ConnectorInstance("sae", "sae", "store", None, _settings(pki)), runtime)
    doc = await _document(runtime, flow, files, fields)
    outcome = await conn.start(_ctx(runtime, conn, doc, {"profile": flow}))
    manifest = await ArchiveStore(runtime).manifest(outcome.fields["sae_package_id"])
    from flowbus.archive import seda
    seda.validate(manifest, XSD)
    assert fields[next(k for k in ("agent_nom", "concessionnaire_nom") if k in fields)].encode() in manifest
