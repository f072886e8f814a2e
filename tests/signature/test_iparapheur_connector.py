"""The ``signature``/``iparapheur`` connector driven by hand against the simulator (real HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import structlog

from flowbus.blobs.memory import MemoryBlobStore
from flowbus.blobs.base import put_bytes
from flowbus.connectors.base import ConnectorInstance, StepContext
from flowbus.connectors.registry import connector_class
from flowbus.errors import ConfigError, PermanentError, TransientError
from flowbus.models import Document, FileRef
from flowbus.outbound import LOOPBACK, OutboundPolicy, client_session
from flowbus.signature.iparapheur_sim import IParapheurSimulator
from flowbus.signature.pades import verify_pdf
from flowbus.signature.sim_signing import simple_pdf

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would

PDF = simple_pdf(["Délibération n° 2026-014", "Objet : subvention au club de voile"])
ANNEX = simple_pdf(["Annexe : budget prévisionnel"])


@pytest.fixture
async def sim():
    async with IParapheurSimulator() as s:
        yield s


@pytest.fixture
async def runtime():
    async with client_session(LOOPBACK_POLICY) as http:
        yield SimpleNamespace(blobs=MemoryBlobStore(), http=http, outbound=LOOPBACK_POLICY)


def instance(sim, **overrides) -> ConnectorInstance:
    settings = {"url": sim.url, "username": "flowbus", "password": "flowbus-secret", "tenant_id": "t-collectivite",
                "desk_id": "d-secretariat", "type": "Pades", "subtype": "Délibération", "timeout": 5}
    settings.update(overrides)
    return ConnectorInstance("parapheur", "signature", "iparapheur", None, settings, frozenset({"password"}))


async def make_doc(runtime, doc_id="deliberation-14") -> Document:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    files = []
    for field, index, name, content in (("document", 0, "deliberation.pdf", PDF), ("annexes", 0, "budget.pdf", ANNEX),
                                        ("annexes", 1, "budget.pdf", ANNEX + b"\n")):
        ref = await put_bytes(runtime.blobs, content)
        files.append(FileRef(doc_id, field, index, name, "application/pdf", ref.size, ref.sha256, ref.key, now))
    return Document(doc_id, "commune", "deliberation", "running",
                    {"objet": "Subvention au club de voile", "numero": "2026-014"}, 1, now, now, "signature",
                    files=tuple(files))


def context(runtime, inst, doc, data=None, attempt=1) -> StepContext:
    params = {"input": "document", "annexes": "annexes", "output": "document_signe", "proof": "bordereau",
              "premis": "premis", "metadata": {"numero_acte": "numero"}, "check_every": 60}
    return StepContext(runtime=runtime, document=doc, flow_id="deliberation", step_id="signature", params=params,
                       instance=inst, attempt=attempt, idempotency_key=f"{doc.id}:signature:{attempt}",
                       data=dict(data or {}), started_at=doc.created_at, log=structlog.get_logger("test"))


def connector(sim, runtime, **overrides):
    cls = connector_class("signature", "iparapheur")
    return cls(instance(sim, **overrides), runtime)


async def test_approve_path_gives_signed_files_and_fields(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    started = await conn.start(context(runtime, conn.instance, doc))
    assert started.status == "waiting" and started.check_in.total_seconds() == 60
    folder_id = started.data["folder_id"]
    folder = sim.folders[folder_id]
    assert folder.name == "Subvention au club de voile (deliberation-14:signature)"
    assert [(f.name, f.main) for f in folder.files] == [("deliberation.pdf", True), ("budget.pdf", False),
                                                          ("budget_2.pdf", False)]
    assert folder.metadata == {"numero_acte": "2026-014"} and folder.state == "PENDING"

    waiting = await conn.check(context(runtime, conn.instance, doc, started.data))
    assert waiting.status == "waiting" and waiting.data["folder_id"] == folder_id

    sim.approve(folder_id)
    done = await conn.check(context(runtime, conn.instance, doc, started.data))
    assert done.status == "done"
    assert done.fields["signataire"] == "Jeanne Martin"
    assert done.fields["signature_date"].endswith("Z") and done.fields["iparapheur_dossier"] == folder_id
    by_field = {f.field: f for f in done.files}
    assert set(by_field) >= {"document_signe", "bordereau", "premis"}
    signed = await runtime.blobs.read(by_field["document_signe"].blob.key)
    assert "signature" not in by_field  # PAdES: no detached signature
    results = verify_pdf(signed)
    assert len(results) == 1 and results[0].intact and results[0].signer == "Simulateur i-Parapheur"
    assert (await runtime.blobs.read(by_field["bordereau"].blob.key)).startswith(b"%PDF-")

    again = await conn.check(context(runtime, conn.instance, doc, started.data))  # polled twice: same answer
    assert again.status == "done" and again.fields == done.fields
    assert [f.blob for f in again.files] == [f.blob for f in done.files]


async def test_reject_path_keeps_the_comment(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    started = await conn.start(context(runtime, conn.instance, doc))
    sim.reject(started.data["folder_id"], "Il manque la pièce jointe n° 3")
    outcome = await conn.check(context(runtime, conn.instance, doc, started.data))
    assert outcome.status == "rejected" and outcome.reason == "Il manque la pièce jointe n° 3"
    assert outcome.fields["signature_refus"] == "Il manque la pièce jointe n° 3"
    assert outcome.fields["signature_refus_par"] == "Jeanne Martin"


async def test_start_is_idempotent(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    first = await conn.start(context(runtime, conn.instance, doc))
    again = await conn.start(context(runtime, conn.instance, doc))  # redelivery of the same attempt
    assert again.data["folder_id"] == first.data["folder_id"]
    assert sim.count("create_folder", first.data["folder_name"]) == 1


async def test_start_failing_after_creation_is_resumed_without_a_second_folder(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    sim.fail("start", status=500)
    with pytest.raises(TransientError, match="HTTP 500"):
        await conn.start(context(runtime, conn.instance, doc))
    retried = await conn.start(context(runtime, conn.instance, doc, attempt=2))  # the engine's retry
    name = retried.data["folder_name"]
    assert sim.count("create_folder", name) == 1
    assert sim.folders[retried.data["folder_id"]].state == "PENDING"


async def test_server_errors_and_timeouts_are_transient_and_lose_nothing(sim, runtime):
    conn = connector(sim, runtime, timeout=0.3)
    doc = await make_doc(runtime)
    started = await conn.start(context(runtime, conn.instance, doc))
    sim.fail("premis", status=503, times=1)
    with pytest.raises(TransientError):
        await conn.check(context(runtime, conn.instance, doc, started.data))
    sim.latency = 1.0
    with pytest.raises(TransientError):
        await conn.check(context(runtime, conn.instance, doc, started.data))
    sim.latency = 0
    sim.approve(started.data["folder_id"])
    assert (await conn.check(context(runtime, conn.instance, doc, started.data))).status == "done"


async def test_expired_token_mid_flow(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    started = await conn.start(context(runtime, conn.instance, doc))
    sim.expire_tokens()
    sim.script(started.data["folder_name"], "approve")
    assert (await conn.check(context(runtime, conn.instance, doc, started.data))).status == "done"


async def test_unknown_subtype_is_a_clear_permanent_error(sim, runtime):
    conn = connector(sim, runtime, subtype="Arrêté du maire")
    doc = await make_doc(runtime)
    with pytest.raises(PermanentError) as err:
        await conn.start(context(runtime, conn.instance, doc))
    assert err.value.field == "subtype" and "Arrêté du maire" in str(err.value)


async def test_missing_setting_is_a_config_error(sim, runtime):
    with pytest.raises(ConfigError) as err:
        connector(sim, runtime, desk_id="")
    assert err.value.field == "desk_id"


async def test_cades_type_gives_a_detached_signature_file(sim, runtime):
    from flowbus.signature.cades import verify_cades
    conn = connector(sim, runtime, type="Cades", subtype="Document")
    doc = await make_doc(runtime, "convention-3")
    started = await conn.start(context(runtime, conn.instance, doc))
    sim.approve(started.data["folder_id"])
    done = await conn.check(context(runtime, conn.instance, doc, started.data))
    by_field = {f.field: f for f in done.files}
    assert by_field["signature"].filename == "deliberation.pdf.p7s"
    assert by_field["signature"].media_type == "application/pkcs7-signature"
    signed = await runtime.blobs.read(by_field["document_signe"].blob.key)
    assert signed == PDF
    [result] = verify_cades(await runtime.blobs.read(by_field["signature"].blob.key), signed)
    assert result.intact and result.signer == "Simulateur i-Parapheur"


async def test_step_entered_again_after_a_refusal_sends_a_new_folder(sim, runtime):
    conn = connector(sim, runtime)
    doc = await make_doc(runtime)
    first = await conn.start(context(runtime, conn.instance, doc))
    sim.reject(first.data["folder_id"], "Annexe manquante")
    assert (await conn.check(context(runtime, conn.instance, doc, first.data))).status == "rejected"
    second = await conn.start(context(runtime, conn.instance, doc, attempt=2))  # the document was corrected
    assert second.data["folder_id"] != first.data["folder_id"]
    assert sim.folders[second.data["folder_id"]].state == "PENDING"
    assert sim.count("create_folder", first.data["folder_name"]) == 2
