"""End to end on both backend sets: délibération and PES flows end with a sealed package in the archive store
(BlobStore on the embedded set, an S3 bucket with versioning/object lock on the scale-out set); an archivist
finds it through the API and in headless Chromium, downloads it, and the download is journaled."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from flowbus.people.access import Grant

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.archive.store import ArchiveStore
from flowbus.archive.verify import verify_package
from tests.support.pdfs import pdf

REPO = Path(__file__).resolve().parents[2]
XSD = REPO / ".." / "shared" / "schemas" / "seda"
PDF = pdf("Budget primitif 2027")
PES = b'<?xml version="1.0" encoding="ISO-8859-1"?><PES_Aller/>'

CASES = {
    "deliberation": ({"objet": "Budget primitif 2027", "nature": "1", "numero_acte": "DEL2027_001",
                      "date_decision": "2026-11-20", "classification": "7.1"},
                     {"arrete": ("deliberation.pdf", "application/pdf", PDF),
                      "annexes": ("annexe.pdf", "application/pdf", PDF + b"% annexe\n")}),
    "pes": ({"objet": "Bordereaux de novembre"}, {"pes_aller": ("PES.xml", "application/xml", PES)}),
}


def make_siren(prefix: str) -> str:
    """A SIREN with a valid Luhn check digit after an 8-digit prefix."""
    for last in "0123456789":
        digits = [int(c) for c in prefix + last]
        total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
        if total % 10 == 0:
            return prefix + last
    raise AssertionError(prefix)


@pytest.fixture
def archive_config(tmp_path, pki) -> Path:
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    for name in ("deliberation.yml", "pes.yml"):
        shutil.copy(REPO / "config" / "flows" / name, cfg / "flows" / name)
    shutil.copytree(REPO / "config" / "archive", cfg / "archive")
    seal = (f"seal_p12_path: '{pki.seal_p12}', seal_p12_password: {pki.password}, "
            f"tsa_p12_path: '{pki.tsa_p12}', tsa_p12_password: {pki.password}, retention_days: 3650, "
            "archival_agency: FRAD034, archival_agreement: ACCORD-2026-01, archival_profile: PROFIL-ACTES-34")
    (cfg / "connectors" / "archive.yml").write_text(
        "instances:\n"
        + "".join(f"  - {{id: {i}, family: {f}, kind: test, entity: null, settings: {{}}}}\n"
                  for i, f in (("parapheur", "signature"), ("tdt-actes", "tdt-actes"), ("tdt-helios", "tdt-helios"),
                               ("publication", "notify")))
        + f"  - {{id: sae, family: sae, kind: store, entity: null, settings: {{{seal}}}}}\n")
    return cfg


async def _archive(rt, flow_id: str, wait_state, siren: str):
    fields, files = CASES[flow_id]
    ent = await create_entity(rt, name=f"Commune {flow_id}", siren=siren, parent=None, actor_name="test")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id=flow_id, fields=dict(fields), actor="test")
    for field, (name, media, content) in files.items():
        async def chunks(data=content):
            yield data
        await documents.attach_file(rt, doc.id, field, filename=name, media_type=media, chunks=chunks(), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return ent, await wait_state(rt, doc.id, "done", timeout=60)


async def test_flows_end_in_the_archive_store(backend, runtime_factory, archive_config, wait_state, server_factory,
                                              pki, tmp_path):
    rt = await runtime_factory(backend, config_dir=archive_config, seda_xsd_dir=XSD)
    await _flows_end_in_the_archive_store(rt, "s3" if backend == "scaleout" else "blobs", wait_state, server_factory,
                                          pki, tmp_path)


@pytest.mark.scaleout
async def test_flows_end_in_the_archive_store_postgres_s3(runtime_factory, archive_config, wait_state, server_factory,
                                                          pki, tmp_path, pg_database, s3_server):
    """PostgreSQL + S3 with the embedded bus: the archive path of the scale-out set without RabbitMQ."""
    import uuid
    rt = await runtime_factory("embedded", config_dir=archive_config, seda_xsd_dir=XSD, database_url=pg_database,
                               blob_backend="s3", s3_endpoint=s3_server, s3_access_key="test", s3_secret_key="test",
                               s3_bucket=f"flowbus-{uuid.uuid4().hex[:10]}")
    await _flows_end_in_the_archive_store(rt, "s3", wait_state, server_factory, pki, tmp_path)


async def _flows_end_in_the_archive_store(rt, expected_backend, wait_state, server_factory, pki, tmp_path):
    server = await server_factory(rt)
    store = ArchiveStore.for_runtime(rt)
    for flow_id, siren in (("deliberation", make_siren("21340001")), ("pes", make_siren("21340002"))):
        ent, doc = await _archive(rt, flow_id, wait_state, siren)
        assert doc.fields["sae_transfer_id"].startswith("FLOWBUS-")
        assert [f.field for f in doc.files_of("sae_bordereau")] == ["sae_bordereau"]
        async with server.client() as http:
            async with http.get("/api/v1/archives", params={"entity": ent.id, "flow": flow_id}) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["total"] == 1
            item = body["items"][0]
            assert item["backend"] == expected_backend
            if expected_backend == "s3":
                assert item["version_id"] and item["retain_until"]  # versioned bucket, object lock retention
            async with http.get(f"/api/v1/archives/{item['id']}") as resp:
                detail = await resp.json()
            assert detail["tree"][0]["children"][0]["object"]["filename"] in ("deliberation.pdf", "PES.xml")
            async with http.get(f"/api/v1/archives/{item['id']}/package") as resp:
                assert resp.status == 200
                data = await resp.read()
        path = tmp_path / f"{flow_id}.zip"
        path.write_bytes(data)
        assert verify_package(path, trusted=pki.trusted, xsd_dir=XSD) == []
        with zipfile.ZipFile(path) as z:
            assert any(n.startswith("content/") for n in z.namelist())
        async with rt.store.transaction() as tx:
            entries = await journal.for_document(tx, doc.id)
            assert await journal.verify(tx, ent.id) == []
        assert "archive.downloaded" in [e.kind for e in entries]
        assert (await store.search(entity_ids=[ent.id]))[1] == 1


@pytest.mark.chromium
async def test_archivist_finds_and_downloads_in_chromium(backend, runtime_factory, archive_config, wait_state,
                                                         server_factory, browser, pki, tmp_path, people):
    rt = await runtime_factory(backend, config_dir=archive_config, seda_xsd_dir=XSD)
    server = await server_factory(rt)
    ent, doc = await _archive(rt, "deliberation", wait_state, make_siren("21340003"))
    other, _ = await _archive(rt, "pes", wait_state, make_siren("21340004"))
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    await people.user(rt, "archiviste", grants=(Grant(ent.id, "reader"), Grant(other.id, "reader")))
    await page.goto(f"{server.url}/archives/")
    assert "/connexion?suivant=" in page.url
    await page.fill("#login", "archiviste")
    await page.fill("#password", "mauvais-mot-de-passe")
    await page.click("button[type=submit]")
    assert "Identifiant ou mot de passe incorrect." in await page.inner_text("[role=alert]")
    await page.fill("#password", people.password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server.url}/archives/")
    assert "2 paquets trouvés" in await page.inner_text("#resultats")
    await page.select_option("#flow", "deliberation")
    await page.fill("#keyword", "DEL2027")
    await page.fill("#title", "budget")
    await page.click("form[role=search] button[type=submit]")
    assert "1 paquet trouvé" in await page.inner_text("#resultats")
    await page.click("text=Acte DEL2027_001 : Budget primitif 2027")
    tree = await page.inner_text("#arborescence")
    assert "Acte DEL2027_001 : Budget primitif 2027" in tree and "deliberation.pdf" in tree and "fmt/18" in tree
    assert "Cachet serveur" in await page.inner_text("main")
    async with page.expect_download() as info:
        await page.click("#telecharger")
    download = await info.value
    target = tmp_path / "telecharge.zip"
    await download.save_as(target)
    assert verify_package(target, trusted=pki.trusted, xsd_dir=XSD) == []
    async with rt.store.transaction() as tx:
        entries = await journal.for_document(tx, doc.id)
    downloads = [e for e in entries if e.kind == "archive.downloaded"]
    assert len(downloads) == 1 and downloads[0].actor == "archiviste:user:archiviste"
    await page.goto(f"{server.url}/archives/?from=pas-une-date")
    assert "Critère invalide" in await page.inner_text("[role=alert]")
    await context.close()


@pytest.mark.parametrize("outcome", ["accept", "reject"])
async def test_deliberation_through_asalae_simulator(runtime_factory, archive_config, wait_state, pki, outcome):
    """The sae step on As@lae (simulator over HTTP): accepted → done, rejected → the flow's rejet_sae state;
    the bordereau, the Acknowledgement and the ArchiveTransferReply are kept with the document."""
    from flowbus.archive import seda
    from flowbus.archive.asalae_sim import AsalaeSimulator
    async with AsalaeSimulator(login="cg34", password="pw", xsd_dir=XSD, outcome=outcome, reject_code="301",
                               reject_comment="Accord de versement inconnu") as sim:
        text = (archive_config / "connectors" / "archive.yml").read_text()
        text = text.replace("kind: store, entity: null, settings: {",
                            f"kind: asalae, entity: null, settings: {{url: '{sim.url}', login: cg34, password: pw, "
                            "check_every: 0.2, ")
        (archive_config / "connectors" / "archive.yml").write_text(text)
        rt = await runtime_factory("embedded", config_dir=archive_config, seda_xsd_dir=XSD)
        fields, files = CASES["deliberation"]
        ent = await create_entity(rt, name="Commune As@lae", siren=make_siren("21340005"), parent=None,
                                  actor_name="test")
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="deliberation", fields=dict(fields),
                                              actor="test")
        for field, (name, media, content) in files.items():
            async def chunks(data=content):
                yield data
            await documents.attach_file(rt, doc.id, field, filename=name, media_type=media, chunks=chunks(),
                                        actor="test")
        await documents.run_action(rt, doc.id, "start", actor="test")
        doc = await wait_state(rt, doc.id, "done" if outcome == "accept" else "rejet_sae", timeout=60)
        assert len(sim.transfers) == 1 and sim.count("send") == 1
        reply = seda.parse_reply(await rt.blobs.read(doc.files_of("sae_reply")[0].blob_key))
        assert reply["reply_code"] == ("000" if outcome == "accept" else "301")
        assert doc.fields["sae_reply_code"] == reply["reply_code"]
        seda.validate(await rt.blobs.read(doc.files_of("sae_ack")[0].blob_key), XSD)
        seda.validate(await rt.blobs.read(doc.files_of("sae_bordereau")[0].blob_key), XSD)
