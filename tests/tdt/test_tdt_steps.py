"""tdt-actes and tdt-helios connectors driven by hand: real SQLite store, in-memory blobs, the simulator."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from flowbus.blobs.base import put_bytes
from flowbus.connectors.base import ConnectorInstance, Outcome, StepContext
from flowbus.connectors.registry import connector_class
from flowbus.connectors.tdt.actes import Acte, ActeFile
from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus.connectors.tdt.helios import parse_pes_acquit
from flowbus.connectors.tdt.s2low import S2lowClient
from flowbus.connectors.tdt.steps import TdtActesConnector, TdtHeliosConnector
from flowbus.errors import PermanentError, TransientError
from flowbus.models import Document, FileRef
from flowbus.outbound import LOOPBACK, OutboundPolicy

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


def _instance(sim, family: str = "tdt-actes", **settings: Any) -> ConnectorInstance:
    return ConnectorInstance(id=f"{family}-s2low", family=family, kind="s2low", entity_id=None,
                             settings={"url": sim.url, "departement": "034", "siren": "123456789", **settings},
                             secret_keys=TdtActesConnector.secret_keys)


async def _document(rt, fields: dict[str, Any], files: dict[str, list[tuple[str, str, bytes]]],
                    doc_id: str = "doc-1") -> Document:
    refs = []
    for field_name, items in files.items():
        for i, (filename, media_type, content) in enumerate(items):
            blob = await put_bytes(rt.blobs, content)
            refs.append(FileRef(doc_id, field_name, i, filename, media_type, blob.size, blob.sha256, blob.key,
                                rt.clock.now()))
    return Document(doc_id, "mairie-test", "deliberation", "running", fields, 1, rt.clock.now(), rt.clock.now(),
                    "tdt", None, tuple(refs))


def _ctx(rt, instance, doc, data=None, params=None) -> StepContext:
    return StepContext(runtime=rt, document=doc, flow_id=doc.flow_id, step_id="tdt", params=params or {},
                       instance=instance, attempt=1, idempotency_key=f"{doc.id}:tdt:1", data=dict(data or {}),
                       started_at=rt.clock.now(), log=structlog.get_logger("test"))


def _apply(doc: Document, outcome: Outcome) -> Document:
    """What the engine does with an outcome's fields and files (enough for these tests)."""
    files = [f for f in doc.files if f.field not in {nf.field for nf in outcome.files}]
    files += [FileRef(doc.id, nf.field, 0, nf.filename, nf.media_type, nf.blob.size, nf.blob.sha256, nf.blob.key,
                      doc.created_at) for nf in outcome.files]
    return replace(doc, fields={**doc.fields, **outcome.fields}, files=tuple(files))


def _deliberation(pdf: bytes, **fields: Any) -> tuple[dict, dict]:
    values = {"numero_interne": "DEL_2026_001", "date_decision": "2026-01-02", "nature": "DE",
              "classification": "7.1", "objet": "Budget primitif 2026"}
    values.update(fields)
    return values, {"acte": [("deliberation.pdf", "application/pdf", pdf)],
                    "annexes": [("annexe.pdf", "application/pdf", pdf)]}


async def test_deliberation_to_ar(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    assert connector_class("tdt-actes", "s2low") is TdtActesConnector
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    out = await conn.start(_ctx(rt, conn.instance, doc, params={"check_every": "10m"}))
    assert out.status == "waiting" and out.check_in == timedelta(minutes=10)
    tid = out.data["transaction_id"]
    assert out.fields == {"tdt_transaction_id": tid, "tdt_status": "transmis"}
    assert out.data["id_acte"] == "034-123456789-20260102-DEL_2026_001-DE"
    doc, data = _apply(doc, out), dict(out.data)
    clock.advance(minutes=10)
    out = await conn.check(_ctx(rt, conn.instance, doc, data))
    assert out.status == "waiting" and out.fields == {"tdt_status": "Transmis"} and out.check_in == timedelta(minutes=15)
    out = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert out.status == "waiting" and out.fields == {}  # unchanged status: no document write
    clock.advance(hours=2)
    out = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert out.status == "done"
    assert out.fields == {"ar_date": "2026-01-05", "ar_identifier": "034-123456789-20260102-DEL_2026_001-DE",
                          "unique_id": "034-123456789-20260102-DEL_2026_001-DE", "tdt_transaction_id": tid,
                          "tdt_status": "acquitte"}
    ar_file, bordereau, stamped = out.files
    assert (ar_file.field, ar_file.filename) == ("aractes", "034-123456789-20260102-DEL_2026_001-DE-1-2.xml")
    assert parse_message(await rt.blobs.read(ar_file.blob.key)).event == "ar"
    assert bordereau.field == "bordereau_acquittement" and bordereau.media_type == "application/pdf"
    assert stamped.field == "acte_tamponne" and stamped.media_type == "application/pdf"
    assert b"034-123456789-20260102-DEL_2026_001-DE" in await rt.blobs.read(stamped.blob.key)
    assert sim.count("post_acte", "DEL_2026_001") == 1


async def test_never_posted_twice(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    first = await conn.start(_ctx(rt, conn.instance, doc))
    again = await conn.start(_ctx(rt, conn.instance, doc))  # redelivered start: ctx.data was not persisted
    assert again.data["transaction_id"] == first.data["transaction_id"]
    resumed = await conn.start(_ctx(rt, conn.instance, doc, first.data))  # start with data: only a status check
    assert resumed.status == "waiting"
    assert sim.count("post_acte", "DEL_2026_001") == 1 and sim.transmissions("DEL_2026_001") == 1
    # The worker died after S²LOW accepted the act and before the record: S²LOW refuses the number, we adopt it.
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        lost = await client.post_acte(Acte(1, (7, 1), date(2026, 1, 2), "DEL_2026_002", "x",
                                           ActeFile("d.pdf", pdf, "99_DE")))
    doc2 = await _document(rt, *_deliberation(pdf, numero_interne="DEL_2026_002"), doc_id="doc-2")
    out = await conn.start(_ctx(rt, conn.instance, doc2))
    assert out.data["transaction_id"] == lost and sim.transmissions("DEL_2026_002") == 1
    # The same number with another decision date is a different act: a clear error, nothing adopted.
    doc3 = await _document(rt, *_deliberation(pdf, numero_interne="DEL_2026_002", date_decision="2026-01-03"),
                           doc_id="doc-3")
    async with rt.store.transaction() as tx:
        await tx.execute("DELETE FROM tdt_transmissions")
    with pytest.raises(PermanentError, match="déjà servi") as err:
        await conn.start(_ctx(rt, conn.instance, doc3))
    assert err.value.field == "numero_interne"


@pytest.mark.parametrize("fields, files, field", [
    ({"date_decision": "2026-02-01"}, None, "decision_date"),
    ({"numero_interne": "DEL 2026/1"}, None, "numero_interne"),
    ({"classification": "7.9"}, None, "classification"),
    ({"classification": "sept"}, None, "classification"),
    ({"nature": "XX"}, None, "nature"),
    ({}, {"annexes": [("a.pdf", "application/pdf", b"%PDF")]}, "document"),
    ({}, {"acte": [("d.pdf", "application/pdf", b"%PDF-1.4")],
          "annexes": [("big.pdf", "application/pdf", b"%PDF" + b"0" * 3000)]}, "annexes[0]"),
])
async def test_invalid_acts_are_refused_before_sending(fake_runtime, sim, pdf, fields, files, field):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim, annex_max_size=2000), rt)
    values, default_files = _deliberation(pdf, **fields)
    doc = await _document(rt, values, files or default_files)
    with pytest.raises(PermanentError) as err:
        await conn.start(_ctx(rt, conn.instance, doc))
    assert err.value.field == field
    assert sim.count("post_acte") == 0


async def test_tdt_down_then_back(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    sim.down = True
    for _ in range(3):
        with pytest.raises(TransientError, match="503"):
            await conn.start(_ctx(rt, conn.instance, doc))
    sim.down = False
    out = await conn.start(_ctx(rt, conn.instance, doc))
    assert out.status == "waiting" and sim.transmissions("DEL_2026_001") == 1
    sim.fail = {"get_status": [500]}
    with pytest.raises(TransientError):
        await conn.check(_ctx(rt, conn.instance, doc, out.data))
    clock.advance(hours=3)
    assert (await conn.check(_ctx(rt, conn.instance, doc, out.data))).status == "done"


async def test_refusal_and_anomaly_are_rejections_with_the_reason(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    sim.script_acte("DEL_REF", "refused", "Acte refusé : l'acte n'est pas signé")
    sim.script_acte("DEL_ANO", "anomaly")
    outs = {}
    for numero in ("DEL_REF", "DEL_ANO"):
        doc = await _document(rt, *_deliberation(pdf, numero_interne=numero), doc_id=numero)
        outs[numero] = (doc, await conn.start(_ctx(rt, conn.instance, doc)))
    assert await conn.classifications.get(conn.instance.id, "mairie-test") is not None
    clock.advance(hours=3)
    doc, out = outs["DEL_REF"]
    refused = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert (refused.status, refused.reason) == ("rejected", "Acte refusé : l'acte n'est pas signé")
    assert refused.fields["tdt_status"] == "refuse"
    doc, out = outs["DEL_ANO"]
    anomaly = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert anomaly.status == "rejected" and anomaly.fields["tdt_status"] == "anomalie"
    assert "002" in anomaly.reason and "classification" in anomaly.reason
    # an anomaly about the classification drops the cached one: the next act fetches it again
    assert await conn.classifications.get(conn.instance.id, "mairie-test") is None


async def test_classification_is_cached_per_entity(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim, classification_ttl="1d"), rt)
    for i in range(3):
        doc = await _document(rt, *_deliberation(pdf, numero_interne=f"DEL_{i}"), doc_id=f"d{i}")
        await conn.start(_ctx(rt, conn.instance, doc))
    assert sim.count("classification") == 1
    other = replace(await _document(rt, *_deliberation(pdf, numero_interne="DEL_X"), doc_id="dx"),
                    entity_id="autre-commune")
    await conn.start(_ctx(rt, conn.instance, other))
    assert sim.count("classification") == 2
    clock.advance(days=1, seconds=1)
    doc = await _document(rt, *_deliberation(pdf, numero_interne="DEL_Y", date_decision="2026-01-06"), doc_id="dy")
    await conn.start(_ctx(rt, conn.instance, doc))
    assert sim.count("classification") == 3
    cached = await conn.classifications.get(conn.instance.id, "mairie-test")
    assert cached.classification.date == date(2019, 4, 18) and cached.fetched_at == clock.now()


async def test_cancellation_step(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    out = await conn.start(_ctx(rt, conn.instance, doc))
    clock.advance(hours=3)
    done = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    doc = _apply(doc, done)
    params = {"action": "cancel"}
    out = await conn.start(_ctx(rt, conn.instance, doc, params=params))
    assert out.status == "waiting" and out.fields["tdt_status"] == "annulation_demandee"
    again = await conn.start(_ctx(rt, conn.instance, doc, params=params))
    assert again.data["cancel_id"] == out.data["cancel_id"] and sim.count("cancel") == 1
    clock.advance(hours=3)
    final = await conn.check(_ctx(rt, conn.instance, doc, out.data, params))
    assert final.status == "done" and final.fields == {"tdt_status": "annule", "cancel_date": "2026-01-05"}
    assert parse_message(await rt.blobs.read(final.files[0].blob.key)).event == "cancelled"


async def test_prefecture_letters_are_fetched_then_marked_read(fake_runtime, sim, clock, pdf):
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    out = await conn.start(_ctx(rt, conn.instance, doc))
    tid = out.data["transaction_id"]
    clock.advance(hours=3)
    for kind in ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations", "DefereTA"):
        sim.send_letter(tid, kind, text=f"texte {kind}")
    got = []

    async def persist(letter):
        got.append(letter)

    assert await conn.fetch_prefecture_letters(persist) == 4
    assert [g.event for g in got] == ["courrier_simple", "demande_pieces", "lettre_observations", "defere"]
    assert all(g.related_transaction_id == tid and g.id_acte == "034-123456789-20260102-DEL_2026_001-DE"
               for g in got)
    assert got[1].text == "texte DemandePieceComplementaire" and any(n.endswith(".pdf") for n in got[1].files)
    assert await conn.fetch_prefecture_letters(persist) == 0  # marked read only after persist

    async def failing(letter):
        raise RuntimeError("disk full")

    sim.send_letter(tid, "CourrierSimple")
    with pytest.raises(RuntimeError):
        await conn.fetch_prefecture_letters(failing)
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        assert len(await client.list_prefecture_documents()) == 1  # still unread: nothing lost
    answer = await conn.reply(got[1].transaction_id, 4, ActeFile("pv.pdf", pdf, "99_DE"))
    assert parse_message(sim.transactions[int(answer)].files["reponse"]).root == "PieceComplementaire"


async def test_pes_to_acquit(fake_runtime, sim, clock, make_pes):
    rt = fake_runtime
    assert connector_class("tdt-helios", "s2low") is TdtHeliosConnector
    conn = TdtHeliosConnector(_instance(sim, "tdt-helios"), rt)
    pes = make_pes("PES_2026_0001", pjs=[("TI0001", "facture.pdf", b"%PDF-1.4 facture")])
    doc = await _document(rt, {}, {"pes": [("pes.xml", "application/xml", pes)]})
    out = await conn.start(_ctx(rt, conn.instance, doc))
    assert out.status == "waiting"
    assert {k: out.fields[k] for k in ("pes_nomfic", "pes_id_coll", "pes_cod_col", "pes_cod_bud", "pes_exercice",
                                       "pes_nb_bordereaux", "pes_nb_pj", "pes_dte_str")} == {
        "pes_nomfic": "PES_2026_0001", "pes_id_coll": "12345678912345", "pes_cod_col": "123", "pes_cod_bud": "12",
        "pes_exercice": "2009", "pes_nb_bordereaux": 1, "pes_nb_pj": 1, "pes_dte_str": "2017-06-09"}
    assert (await conn.start(_ctx(rt, conn.instance, doc))).data == out.data  # redelivered: no second post
    clock.advance(minutes=6)
    assert (await conn.check(_ctx(rt, conn.instance, doc, out.data))).status == "waiting"
    clock.advance(hours=1)
    done = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert done.status == "done" and done.fields["pes_acquit_ok"] is True and done.fields["tdt_status"] == "acquitte"
    assert done.files[0].field == "pes_acquit"
    assert parse_pes_acquit(await rt.blobs.read(done.files[0].blob.key)).nom_fic == "PES_2026_0001"
    assert sim.count("post_pes", "PES_2026_0001") == 1


async def test_pes_acquit_with_errors_and_invalid_pes(fake_runtime, sim, clock, make_pes, shared: Path):
    rt = fake_runtime
    sim.pes_outcome = "errors"
    conn = TdtHeliosConnector(_instance(sim, "tdt-helios"), rt)
    doc = await _document(rt, {}, {"pes": [("pes.xml", "application/xml", make_pes("PES_KO"))]})
    out = await conn.start(_ctx(rt, conn.instance, doc))
    clock.advance(hours=2)
    ko = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert ko.status == "rejected" and "ERREUR_DOUBLON_PJ" in ko.reason and ko.files[0].field == "pes_acquit"
    assert ko.fields["pes_acquit_ok"] is False
    bad = make_pes("PES_BAD").replace(b'<CodCol V="123"/>', b'<CodCol V="000"/>')
    doc = await _document(rt, {}, {"pes": [("bad.xml", "application/xml", bad)]}, doc_id="bad")
    with pytest.raises(PermanentError) as err:
        await conn.start(_ctx(rt, conn.instance, doc))
    assert err.value.field == "CodCol" and sim.count("post_pes", "PES_BAD") == 0


async def test_pes_retour_fetch(fake_runtime, sim, shared: Path):
    conn = TdtHeliosConnector(_instance(sim, "tdt-helios"), fake_runtime)
    sim.add_pes_retour("R1.xml", (shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml")
                       .read_bytes())
    got = []

    async def persist(name, xml, parsed):
        got.append((name, parsed.typ_fic))

    assert await conn.fetch_pes_retours(persist) == 1 and got == [("R1.xml", "PESRETOUR_DEP")]
    assert await conn.fetch_pes_retours(persist) == 0


async def test_restart_while_100_acts_wait_for_their_ar(fake_runtime, sim, clock, pdf):
    """A worker restart: a new connector, a new HTTP session, only what the engine persisted (ctx.data)
    survives; ten start messages are redelivered because their outcome was lost.  All complete, none twice."""
    import asyncio

    import aiohttp

    class Flow:  # the flow's wait policy reaches the connector through runtime.flows
        def step(self, step_id):
            return type("Step", (), {"wait": type("Wait", (), {"check_every": timedelta(minutes=20)})()})()

    rt = fake_runtime
    rt.flows = {"deliberation": Flow()}
    inst = _instance(sim)
    conn = TdtActesConnector(inst, rt)
    docs = [await _document(rt, *_deliberation(pdf, numero_interne=f"DEL_{i:03d}"), doc_id=f"doc-{i}")
            for i in range(100)]
    persisted = {}
    for doc in docs:
        out = await conn.start(_ctx(rt, inst, doc))
        assert out.check_in == timedelta(minutes=20)
        persisted[doc.id] = dict(out.data)
    async with aiohttp.ClientSession() as http:
        restarted = type(rt)(rt.store, rt.blobs, rt.clock, http)
        conn2 = TdtActesConnector(inst, restarted)
        for doc in docs[:10]:
            again = await conn2.start(_ctx(restarted, inst, doc))
            assert again.data["transaction_id"] == persisted[doc.id]["transaction_id"]
        clock.advance(hours=3)
        outs = await asyncio.gather(*(conn2.check(_ctx(restarted, inst, d, persisted[d.id])) for d in docs))
    assert [o.status for o in outs] == ["done"] * 100
    assert len({o.fields["ar_identifier"] for o in outs}) == 100
    assert all(sim.count("post_acte", f"DEL_{i:03d}") == 1 and sim.transmissions(f"DEL_{i:03d}") == 1
               for i in range(100))
    assert sim.count("post_acte") == 100


async def test_newer_classification_in_the_ar_triggers_a_request(fake_runtime, sim, clock, pdf):
    from flowbus.connectors.tdt.classification import sample_classification
    rt = fake_runtime
    conn = TdtActesConnector(_instance(sim), rt)
    doc = await _document(rt, *_deliberation(pdf))
    out = await conn.start(_ctx(rt, conn.instance, doc))
    sim.classification = sample_classification(date(2025, 9, 1))  # the préfecture publishes a new classification
    clock.advance(hours=3)
    done = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert done.status == "done"
    assert sim.count("classification_request") == 1
    assert await conn.classifications.get(conn.instance.id, "mairie-test") is None
    assert (await conn.classification("mairie-test")).date == date(2025, 9, 1)


def test_simulator_runs_as_a_program(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flowbus.connectors.tdt.s2low_sim", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{info['url']}/api/test-connexion.php", timeout=5) as r:
            assert r.read() == b"OK\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_real_classification_is_downloaded_and_stored_per_entity(fake_runtime, clock, shared: Path, pdf):
    from flowbus.connectors.tdt.classification import parse_classification
    from flowbus.connectors.tdt.s2low_sim import S2lowSimulator
    xml = (shared / "samples" / "actes" / "999-1234----7-2_1.xml").read_bytes()
    async with S2lowSimulator(clock=clock, classification=parse_classification(xml)) as sim:
        conn = TdtActesConnector(_instance(sim), fake_runtime)
        stored = await conn.classification("mairie-test")
        cached = await conn.classifications.get(conn.instance.id, "mairie-test")
        assert stored.date == cached.classification.date == date(2019, 4, 18)
        assert cached.classification.matieres == parse_classification(xml).matieres  # all 291 matières kept
        assert cached.classification.natures[4].type_pj[0] == "99_DC"
        # an act typed with a code of the real classification goes through; an unknown code is refused
        doc = await _document(fake_runtime, *_deliberation(pdf, classification="1.1.10", type_acte="21_EP"))
        assert (await conn.start(_ctx(fake_runtime, conn.instance, doc))).status == "waiting"
        bad = await _document(fake_runtime, *_deliberation(pdf, numero_interne="X2", type_acte="32_DP"), doc_id="x2")
        with pytest.raises(PermanentError) as err:
            await conn.start(_ctx(fake_runtime, conn.instance, bad))
        assert err.value.field == "type_acte" and sim.count("classification") == 1


async def test_missing_classification_is_requested_then_used(fake_runtime, clock, pdf):
    from flowbus.connectors.tdt.s2low_sim import S2lowSimulator
    async with S2lowSimulator(clock=clock, classification=False) as sim:
        conn = TdtActesConnector(_instance(sim), fake_runtime)
        doc = await _document(fake_runtime, *_deliberation(pdf))
        with pytest.raises(TransientError, match="demandée") as err:
            await conn.start(_ctx(fake_runtime, conn.instance, doc))
        assert err.value.field == "classification" and sim.count("classification_request") == 1
        assert sim.count("post_acte") == 0
        out = await conn.start(_ctx(fake_runtime, conn.instance, doc))  # the engine's retry
        assert out.status == "waiting" and sim.count("post_acte") == 1
