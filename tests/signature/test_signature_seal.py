"""The ``signature``/``seal`` connector run by hand: one signed file per format, typed errors naming the setting."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import structlog

from flowbus.blobs.memory import MemoryBlobStore
from flowbus.blobs.base import put_bytes
from flowbus.clock import ManualClock
from flowbus.connectors.base import ConnectorInstance, StepContext
from flowbus.connectors.registry import connector_class
from flowbus.errors import PermanentError
from flowbus.models import Document, FileRef
from flowbus.outbound import LOOPBACK, OutboundPolicy
from flowbus.signature.pades import make_test_pdf
from flowbus.signature.steps import SealConnector
from flowbus.signature.verify import verify

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


@pytest.fixture
def runtime():
    return SimpleNamespace(blobs=MemoryBlobStore(), clock=ManualClock(datetime.now(UTC)), outbound=LOOPBACK_POLICY)


async def context(runtime, inst: ConnectorInstance, filename: str, media_type: str, content: bytes,
                  **params) -> StepContext:
    ref = await put_bytes(runtime.blobs, content)
    now = runtime.clock.now()
    file = FileRef("doc-1", "document", 0, filename, media_type, ref.size, ref.sha256, ref.key, now)
    doc = Document("doc-1", "demo", "pes", "signing", {}, 1, now, now, step="seal", files=(file,))
    return StepContext(runtime, doc, "pes", "seal", params, inst, 1, "doc-1:seal:1", {}, now,
                       structlog.get_logger("test"))


def seal_instance(pki, **settings) -> ConnectorInstance:
    base = {"p12_path": str(pki.seal_p12), "p12_password": pki.password, "role": "Ordonnateur"}
    base.update(settings)
    return ConnectorInstance("cachet", "signature", "seal", "demo", base, SealConnector.secret_keys)


def test_registered_under_signature_seal():
    assert connector_class("signature", "seal") is SealConnector
    assert SealConnector.secret_keys == frozenset({"p12_password", "p12_base64"})


@pytest.mark.parametrize("filename,media_type,expected_name,expected_type", [
    ("PESALR2_demo.xml", "application/xml", "PESALR2_demo.xml", "application/xml"),
    ("deliberation.pdf", "application/pdf", "deliberation.pdf", "application/pdf"),
    ("plan.dwg", "application/octet-stream", "plan.dwg.p7s", "application/pkcs7-signature"),
])
async def test_each_format_chosen_from_the_media_type(pki, pes3, runtime, filename, media_type, expected_name,
                                                      expected_type):
    content = {"application/xml": pes3, "application/pdf": make_test_pdf(3)}.get(media_type, b"\x00DWG" * 5000)
    inst = seal_instance(pki)
    ctx = await context(runtime, inst, filename, media_type, content, input="document", output="signed")
    outcome = await SealConnector(inst, runtime).start(ctx)
    assert outcome.status == "done"
    [new] = outcome.files
    assert (new.field, new.filename, new.media_type) == ("signed", expected_name, expected_type)
    assert outcome.fields["signature_date"].startswith(runtime.clock.now().strftime("%Y-%m-%dT%H:%M"))
    signed = await runtime.blobs.read(new.blob.key)
    if expected_type == "application/pkcs7-signature":
        results = verify(content, detached=signed, trusted=pki.trusted)
    else:
        results = verify(signed, trusted=pki.trusted)
    assert results and all(r.ok for r in results)
    assert {r.signer for r in results} == {"Cachet serveur — Commune de Démo"}


async def test_p12_base64_and_explicit_format(pki, runtime):
    inst = seal_instance(pki, p12_path=None, p12_base64=base64.b64encode(pki.seal_p12.read_bytes()).decode())
    ctx = await context(runtime, inst, "d.pdf", "application/pdf", make_test_pdf(2), format="cades")
    outcome = await SealConnector(inst, runtime).start(ctx)
    assert outcome.files[0].filename == "d.pdf.p7s"
    assert "p12_base64" in inst.secret_keys and "********" == inst.redacted()["p12_base64"]


async def test_errors_name_the_setting_or_field(pki, pes3, runtime):
    bad_password = seal_instance(pki, p12_password="faux")
    ctx = await context(runtime, bad_password, "p.xml", "application/xml", pes3)
    with pytest.raises(PermanentError) as err:
        await SealConnector(bad_password, runtime).start(ctx)
    assert err.value.field == "p12_password" and "faux" not in str(err.value)

    missing = seal_instance(pki, p12_path=str(pki.directory / "absent.p12"))
    with pytest.raises(PermanentError) as err:
        await SealConnector(missing, runtime).start(await context(runtime, missing, "p.xml", "application/xml", pes3))
    assert err.value.field == "p12_path"

    expired = seal_instance(pki)
    runtime.clock.advance(timedelta(days=3 * 365))  # the seal certificate has expired by then
    with pytest.raises(PermanentError, match="expired"):
        await SealConnector(expired, runtime).start(await context(runtime, expired, "p.xml", "application/xml", pes3))

    runtime.clock = ManualClock(datetime.now(UTC))
    no_id = pes3.replace(b' Id="BORD1001"', b"")
    inst = seal_instance(pki)
    with pytest.raises(PermanentError, match="Bordereau #2"):
        await SealConnector(inst, runtime).start(await context(runtime, inst, "p.xml", "application/xml", no_id))
    with pytest.raises(PermanentError) as err:
        await SealConnector(inst, runtime).start(
            await context(runtime, inst, "p.xml", "application/xml", pes3, format="xades-bes"))
    assert err.value.field == "format"
    with pytest.raises(PermanentError) as err:
        await SealConnector(inst, runtime).start(
            await context(runtime, inst, "p.xml", "application/xml", pes3, input="annexe"))
    assert err.value.field == "annexe"


async def test_xml_that_is_not_a_pes_gets_a_detached_signature(pki, runtime):
    inst = seal_instance(pki)
    actes = ('<?xml version="1.0" encoding="UTF-8"?>'
             '<actes:Acte xmlns:actes="urn:x">délibération</actes:Acte>').encode()
    ctx = await context(runtime, inst, "acte.xml", "application/xml", actes)
    outcome = await SealConnector(inst, runtime).start(ctx)
    [new] = outcome.files
    assert (new.filename, new.media_type) == ("acte.xml.p7s", "application/pkcs7-signature")
    [result] = verify(actes, detached=await runtime.blobs.read(new.blob.key), trusted=pki.trusted)
    assert result.ok
