"""IParapheurClient against the i-Parapheur simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import aiohttp
import pytest

from flowbus.clock import ManualClock
from flowbus.errors import PermanentError, TransientError
from flowbus.signature.iparapheur import IParapheurClient, UploadFile
from flowbus.signature.iparapheur_sim import IParapheurSimulator
from flowbus.signature.pades import verify_pdf
from flowbus.signature.premis import parse_premis
from flowbus.signature.sim_signing import simple_pdf

PDF = simple_pdf(["Délibération n° 2026-001", "Objet : tarifs de la cantine"])
ANNEX = simple_pdf(["Annexe : grille tarifaire"])


@pytest.fixture
async def sim():
    async with IParapheurSimulator() as s:
        yield s


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(sim, session, **kw) -> IParapheurClient:
    kw.setdefault("timeout", 5)
    return IParapheurClient(sim.url, "flowbus", "flowbus-secret", tenant_id="t-collectivite",
                            desk_id="d-secretariat", session=session, **kw)


def files() -> list[UploadFile]:
    return [UploadFile("deliberation.pdf", PDF, "application/pdf", True),
            UploadFile("annexe.pdf", ANNEX, "application/pdf", False)]


async def create_and_start(client, name="Délib 2026-001", subtype="Délibération"):
    created = await client.create_folder(name, "Pades", subtype, files(), metadata={"numero": "2026-001"})
    summary = await client.start_folder(created["id"], public_annotation="Pour signature")
    return created, summary


async def test_typology_and_auth(sim, session):
    client = make_client(sim, session)
    assert [t["id"] for t in await client.list_tenants()] == ["t-collectivite"]
    assert [d["id"] for d in await client.list_desks()] == ["d-secretariat"]
    types = await client.creation_allowed_types()
    assert {t["name"] for t in types} == {"Pades", "Xades", "Cades", "Visa"}
    subtypes = await client.list_subtypes("ty-pades")
    assert {s["name"] for s in subtypes} == {"Délibération", "Visa puis signature"}
    assert sim.count("token", "password") == 1  # one token for every call


async def test_wrong_password_is_permanent_and_names_the_field(sim, session):
    client = IParapheurClient(sim.url, "flowbus", "wrong", tenant_id="t-collectivite", desk_id="d-secretariat",
                              session=session)
    with pytest.raises(PermanentError) as err:
        await client.list_tenants()
    assert err.value.field == "password"
    assert "Invalid user credentials" in str(err.value)


async def test_create_start_and_state_progression(sim, session):
    client = make_client(sim, session)
    created = await client.create_folder("Délib 2026-001", "Pades", "Délibération", files(),
                                         metadata={"numero": "2026-001"})
    assert set(created) >= {"id", "name", "dueDate", "metadata"} and created["name"] == "Délib 2026-001"
    draft = await client.premis(created["id"])
    assert draft.state == "draft" and [e.type for e in draft.events] == ["START"]
    assert draft.metadata == {"numero": "2026-001"} and draft.type == "Pades" and draft.subtype == "Délibération"
    assert [(f.name, f.main) for f in draft.files] == [("deliberation.pdf", True), ("annexe.pdf", False)]
    page = await client.list_folders("DRAFT")
    assert page["totalElements"] == 1 and page["content"][0]["id"] == created["id"]

    await client.start_folder(created["id"], public_annotation="Pour signature")
    pending = await client.premis(created["id"])
    assert pending.state == "pending"
    assert [(e.type, e.date is None) for e in pending.events] == [("START", False), ("SIGNATURE", True)]
    assert (await client.list_folders("RETRIEVABLE"))["totalElements"] == 1
    assert (await client.list_folders("DRAFT"))["totalElements"] == 0
    # a pending folder cannot be deleted
    with pytest.raises(PermanentError, match="HTTP 403"):
        await client.delete_folder(created["id"])


async def test_approve_gives_signed_document_and_proof(sim, session):
    client = make_client(sim, session)
    created, _ = await create_and_start(client)
    sim.approve(created["id"])
    summary = await client.premis(created["id"])
    assert summary.state == "finished"
    assert summary.last_signature is not None and summary.agents[summary.last_signature.user_id] == "Jeanne Martin"
    archive = zipfile.ZipFile(io.BytesIO(await client.zip(created["id"])))
    names = set(archive.namelist())
    assert {"Documents principaux/deliberation.pdf", "Annexes/annexe.pdf", "Délib 2026-001_bordereau.pdf",
            "i_Parapheur_internal_premis.xml"} <= names
    assert archive.read("Délib 2026-001_bordereau.pdf").startswith(b"%PDF-")
    assert parse_premis(archive.read("i_Parapheur_internal_premis.xml")).state == "finished"
    signed = archive.read("Documents principaux/deliberation.pdf")
    assert not [n for n in names if n.endswith(".p7s")]  # PAdES: the signature is inside the PDF
    results = verify_pdf(signed)
    assert signed.startswith(PDF) and len(results) == 1  # incremental update over the original bytes
    assert results[0].intact and results[0].signer == "Simulateur i-Parapheur"
    # finished folder listed for the emitter, polled twice gives the same answer
    assert (await client.list_folders("FINISHED"))["content"][0]["id"] == created["id"]
    assert (await client.premis(created["id"])) == summary
    await client.delete_folder(created["id"])
    with pytest.raises(PermanentError, match="404"):
        await client.premis(created["id"])


async def test_two_step_circuit_visa_then_signature(sim, session):
    client = make_client(sim, session)
    created, _ = await create_and_start(client, "Marché 12", "Visa puis signature")
    sim.approve(created["id"])
    mid = await client.premis(created["id"])
    assert [e.type for e in mid.events] == ["START", "VISA", "SIGNATURE"] and mid.state == "pending"
    assert (await client.list_folders("RETRIEVABLE"))["totalElements"] == 0  # someone acted: no longer retrievable
    sim.approve(created["id"])
    assert (await client.premis(created["id"])).state == "finished"


async def test_reject_keeps_the_comment(sim, session):
    client = make_client(sim, session)
    created, _ = await create_and_start(client)
    sim.reject(created["id"], "Montant erroné à l'article 2")
    summary = await client.premis(created["id"])
    assert summary.state == "rejected"
    assert [e.type for e in summary.events] == ["START", "REJECT", "DELETE"]
    assert summary.rejection.note == "Montant erroné à l'article 2"
    assert (await client.list_folders("REJECTED"))["totalElements"] == 1


async def test_signer_acts_through_the_api(sim, session):
    client = make_client(sim, session)
    created, _ = await create_and_start(client)
    maire = IParapheurClient(sim.url, "maire", "maire-secret", tenant_id="t-collectivite", desk_id="d-maire",
                             session=session)
    assert [f["id"] for f in (await maire.list_folders("PENDING"))["content"]] == [created["id"]]
    task = (await maire.premis(created["id"])).current_task
    with pytest.raises(PermanentError, match="motivé"):
        await maire.task_action(created["id"], task.task_id, "reject")
    await maire.task_action(created["id"], task.task_id, "seal", public_annotation="Lu et approuvé")
    assert (await client.premis(created["id"])).state == "finished"


async def test_http_500_is_transient_then_recovers(sim, session):
    client = make_client(sim, session)
    created, _ = await create_and_start(client)
    sim.fail("premis", status=500, times=1)
    with pytest.raises(TransientError, match="HTTP 500"):
        await client.premis(created["id"])
    assert (await client.premis(created["id"])).state == "pending"


async def test_timeout_is_transient(sim, session):
    client = make_client(sim, session, timeout=0.3)
    await client.token()
    sim.latency = 1.0
    with pytest.raises(TransientError, match="TimeoutError|ServerTimeoutError"):
        await client.list_tenants()


async def test_unknown_subtype_is_named(sim, session):
    client = make_client(sim, session)
    with pytest.raises(PermanentError, match="Sous-type inconnu : Arrêté"):
        await client.create_folder("X", "Pades", "Arrêté", files())
    with pytest.raises(PermanentError, match="Type inconnu : Pdf"):
        await client.create_folder("X", "Pdf", "Délibération", files())


async def test_token_renewed_before_expiry_and_after_revocation(session):
    clock = ManualClock()
    async with IParapheurSimulator(clock=clock, token_ttl=300, refresh_ttl=600) as sim:
        client = make_client(sim, session, clock=clock)
        created, _ = await create_and_start(client)
        assert sim.count("token", "password") == 1
        clock.advance(timedelta(seconds=280))  # inside the refresh margin: renewed by the refresh grant
        await client.premis(created["id"])
        assert sim.count("token", "refresh_token") == 1
        clock.advance(timedelta(seconds=100))
        sim.expire_tokens()  # server-side logout mid-flow: one 401, then a new token, same call succeeds
        assert (await client.premis(created["id"])).state == "pending"
        assert sim.count("token", "password") == 2
        clock.advance(timedelta(hours=2))  # refresh token expired too: password grant
        await client.list_tenants()
        assert sim.count("token", "password") == 3


async def test_find_folder_by_name(sim, session):
    client = make_client(sim, session)
    created = await client.create_folder("Délib A", "Pades", "Délibération", files())
    for i in range(12):  # more than one page of 10
        await client.create_folder(f"Autre {i}", "Pades", "Délibération", files())
    found = await client.find_folder("Délib A")
    assert found["id"] == created["id"] and found["state"] == "DRAFT"
    assert await client.find_folder("Délib B") is None
    assert sim.count("create_folder", "Délib A") == 1


async def test_xades_type_signs_each_pes_bordereau(sim, session):
    from pathlib import Path

    from flowbus.signature.xades import verify_xml
    shared = Path(__file__).resolve().parents[2] / ".." / "shared"
    pes = (shared / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml").read_bytes()
    client = make_client(sim, session)
    created = await client.create_folder("PES 2026-07", "Xades", "Bordereau PES",
                                         [UploadFile("pes_aller.xml", pes, "application/xml", True)])
    await client.start_folder(created["id"])
    sim.approve(created["id"])
    archive = zipfile.ZipFile(io.BytesIO(await client.zip(created["id"])))
    signed = archive.read("Documents principaux/pes_aller.xml")
    results = verify_xml(signed)
    assert results and all(r.intact for r in results)
    assert results[0].signer == "Simulateur i-Parapheur"
    assert not [n for n in archive.namelist() if n.endswith(".p7s")]


async def test_demo_page_and_config_file(tmp_path, session):
    import yaml

    from flowbus.signature.iparapheur_sim import default_config
    cfg = default_config()
    cfg["tenants"][0]["name"] = "Syndicat des eaux"
    path = tmp_path / "sim.yml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    async with IParapheurSimulator.from_file(path) as sim:
        client = make_client(sim, session)
        assert (await client.list_tenants())[0]["name"] == "Syndicat des eaux"
        created, _ = await create_and_start(client)
        page = await (await session.get(f"{sim.url}/sim/")).text()
        assert "Délib 2026-001" in page and "Refuser" in page
        resp = await session.post(f"{sim.url}/sim/folders/{created['id']}/reject", data={"comment": "Pas à l'ordre du jour"},
                                  allow_redirects=False)
        assert resp.status == 303
        summary = await client.premis(created["id"])
        assert summary.state == "rejected" and summary.rejection.note == "Pas à l'ordre du jour"
