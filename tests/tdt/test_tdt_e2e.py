"""Through the engine (embedded backends; the AR and acquit cases on PostgreSQL + RabbitMQ + S3 too): délibération → tdt-actes → AR; PES → tdt-helios → PES_Acquit;
TdT down then an administrator's retry; refusal; worker restart while 100 acts wait for their AR."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus.connectors.tdt.helios import parse_pes_acquit
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator

ROOT = Path(__file__).resolve().parents[2]

DELIBERATION = """
id: deliberation
label: "Délibération"
description: "Délibération transmise au contrôle de légalité"
fields:
  - {name: numero_interne, type: text, label: "Numéro interne", required: true}
  - {name: date_decision, type: date, label: "Date de la décision", required: true}
  - {name: nature, type: text, label: "Nature de l'acte"}
  - {name: classification, type: text, label: "Classification"}
  - {name: objet, type: text, label: "Objet", required: true}
  - {name: acte, type: file, label: "Acte"}
  - {name: annexes, type: files, label: "Annexes"}
  - {name: ar_date, type: date, label: "Date de l'accusé de réception"}
  - {name: ar_identifier, type: text, label: "Identifiant de l'acte"}
  - {name: aractes, type: file, label: "Accusé de réception"}
  - {name: bordereau_acquittement, type: file, label: "Bordereau d'acquittement"}
  - {name: acte_tamponne, type: file, label: "Acte tamponné"}
steps:
  - id: tdt
    label: "Télétransmission à la préfecture"
    family: tdt-actes
    connector: s2low-actes
    retry: {attempts: 2, backoff: 1s, max_backoff: 1s}
    wait: {check_every: 1s, deadline: 1h}
    on: {rejected: {state: refuse}}
states:
  refuse: {label: "Refusé par la préfecture", terminal: true}
"""

PES = """
id: pes
label: "Flux PES"
description: "PES_Aller transmis à Hélios"
fields:
  - {name: title, type: text, label: "Titre"}
  - {name: pes, type: file, label: "PES_Aller"}
  - {name: pes_acquit, type: file, label: "PES_Acquit"}
steps:
  - id: helios
    label: "Transmission à Hélios"
    family: tdt-helios
    connector: s2low-helios
    wait: {check_every: 1s, deadline: 1h}
    on: {rejected: {state: refuse}}
states:
  refuse: {label: "Refusé par Hélios", terminal: true}
"""


COURRIER = """
id: courrier
label: "Courrier de la préfecture"
description: "Courrier reçu de la préfecture et sa réponse"
fields:
  - {name: title, type: text, label: "Titre"}
  - {name: letter_type, type: text, label: "Type de courrier"}
  - {name: letter_label, type: text, label: "Courrier"}
  - {name: id_acte, type: text, label: "Identifiant de l'acte"}
  - {name: letter_date, type: date, label: "Date du courrier"}
  - {name: letter_text, type: text, label: "Texte"}
  - {name: letter_transaction_id, type: text, label: "Transaction du courrier"}
  - {name: related_transaction_id, type: text, label: "Transaction de l'acte"}
  - {name: acte_document_id, type: text, label: "Document de l'acte"}
  - {name: type_envoie, type: number, label: "Type de réponse"}
  - {name: courrier, type: files, label: "Courrier"}
  - {name: courrier_xml, type: file, label: "Message ACTES"}
  - {name: reponse, type: file, label: "Réponse"}
  - {name: ar_reponse, type: file, label: "AR de la réponse"}
steps:
  - id: reponse
    label: "Réponse à la préfecture"
    family: tdt-actes
    connector: s2low-actes
    params: {action: reply}
    wait: {check_every: 1s, deadline: 1h}
"""

RETOUR = """
id: pes-retour
label: "PES Retour"
description: "PES_Retour reçu d'Hélios"
fields:
  - {name: title, type: text, label: "Titre"}
  - {name: pes_retour_nomfic, type: text, label: "NomFic"}
  - {name: pes_retour_typfic, type: text, label: "TypFic"}
  - {name: pes_id_coll, type: text, label: "IdColl"}
  - {name: pes_cod_col, type: text, label: "CodCol"}
  - {name: pes_dte_str, type: date, label: "Date"}
  - {name: pes_retour, type: file, label: "PES_Retour"}
steps: []
"""


@pytest.fixture
async def s2low(check_actes_messages: Any) -> AsyncIterator[S2lowSimulator]:
    sim = S2lowSimulator(delays={"transmit": timedelta(milliseconds=200), "ar": timedelta(milliseconds=800),
                                 "pes_transmit": timedelta(milliseconds=200), "pes_acquit": timedelta(milliseconds=800)})
    await sim.start()
    yield sim
    await sim.stop()
    check_actes_messages(sim)  # every enveloppe, act message, AR, letter and answer against the official XSD


@pytest.fixture
def tdt_config(tmp_path: Path, s2low: S2lowSimulator) -> Path:
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    (cfg / "flows" / "deliberation.yml").write_text(textwrap.dedent(DELIBERATION))
    (cfg / "flows" / "pes.yml").write_text(textwrap.dedent(PES))
    (cfg / "flows" / "courrier.yml").write_text(textwrap.dedent(COURRIER))
    (cfg / "flows" / "pes-retour.yml").write_text(textwrap.dedent(RETOUR))
    shutil.copy(ROOT / "config" / "flows" / "demo.yml", cfg / "flows" / "demo.yml")
    (cfg / "connectors" / "demo.yml").write_text(
        "instances:\n  - {id: demo-notify, family: notify, kind: test, entity: null, settings: {}}\n")
    (cfg / "connectors" / "tdt.yml").write_text(textwrap.dedent(f"""
        instances:
          - id: s2low-actes
            family: tdt-actes
            kind: s2low
            entity: null
            settings: {{url: "{s2low.url}", departement: "034", siren: "123456789", classification_ttl: 1d}}
          - id: s2low-helios
            family: tdt-helios
            kind: s2low
            entity: null
            settings: {{url: "{s2low.url}"}}
        """))
    return cfg


async def _deliberation(rt: Any, entity_id: str, numero: str, pdf: bytes, **fields: Any) -> Any:
    doc = await documents.create_document(rt, entity_id=entity_id, flow_id="deliberation", actor="test", fields={
        "numero_interne": numero, "date_decision": "2026-01-02", "nature": "DE", "classification": "7.1",
        "objet": f"Délibération {numero}", **fields})

    async def chunks() -> AsyncIterator[bytes]:
        yield pdf

    await documents.attach_file(rt, doc.id, "acte", filename="deliberation.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return doc


async def test_deliberation_to_ar_visible_through_the_api(backend, runtime_factory, tdt_config, s2low, wait_state,
                                                          server_factory, pdf):
    rt = await runtime_factory(backend, config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune de Test", siren=None, parent=None, actor_name="test")
    doc = await _deliberation(rt, ent.id, "DEL_2026_001", pdf)
    done = await wait_state(rt, doc.id, "done", timeout=30)
    assert done.fields["ar_identifier"] == "034-123456789-20260102-DEL_2026_001-DE"
    assert done.fields["ar_date"] == rt.clock.now().date().isoformat()
    server = await server_factory(rt)
    async with server.client() as admin:
        r = await admin.get(f"/api/v1/documents/{doc.id}")
        body = await r.json()
        assert body["fields"]["ar_identifier"] == "034-123456789-20260102-DEL_2026_001-DE"
        assert {f["field"] for f in body["files"]} >= {"acte", "aractes", "bordereau_acquittement", "acte_tamponne"}
        r = await admin.get(f"/api/v1/documents/{doc.id}/files/acte_tamponne")
        stamped = await r.read()
        assert stamped.startswith(b"%PDF") and b"034-123456789-20260102-DEL_2026_001-DE" in stamped
        r = await admin.get(f"/api/v1/documents/{doc.id}/files/aractes")
        assert parse_message(await r.read()).event == "ar"
    assert s2low.count("post_acte", "DEL_2026_001") == 1


async def test_tdt_down_then_admin_retry(runtime_factory, tdt_config, s2low, wait_state, pdf):
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    s2low.down = True
    doc = await _deliberation(rt, ent.id, "DEL_DOWN", pdf)
    err = await wait_state(rt, doc.id, "error", timeout=30)
    assert "503" in err.last_error and s2low.failures["classification"] >= 2  # retried, then a visible error
    s2low.down = False
    await documents.run_action(rt, doc.id, "retry", actor="admin:alice")
    done = await wait_state(rt, doc.id, "done", timeout=30)
    assert done.fields["ar_identifier"].endswith("-DEL_DOWN-DE")
    assert s2low.transmissions("DEL_DOWN") == 1


async def test_refusal_and_anomaly_reach_the_refused_state(runtime_factory, tdt_config, s2low, wait_state, pdf):
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    s2low.script_acte("DEL_REF", "refused", "Acte refusé : la délibération n'est pas signée")
    s2low.script_acte("DEL_ANO", "anomaly")
    ref = await _deliberation(rt, ent.id, "DEL_REF", pdf)
    ano = await _deliberation(rt, ent.id, "DEL_ANO", pdf)
    refused = await wait_state(rt, ref.id, "refuse", timeout=30)
    assert refused.fields["rejection_reason"] == "Acte refusé : la délibération n'est pas signée"
    assert refused.fields["tdt_status"] == "refuse"
    anomaly = await wait_state(rt, ano.id, "refuse", timeout=30)
    assert "Anomalie" in anomaly.fields["rejection_reason"] and anomaly.fields["tdt_status"] == "anomalie"


async def test_pes_to_acquit(backend, runtime_factory, tdt_config, s2low, wait_state, make_pes, server_factory):
    rt = await runtime_factory(backend, config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="pes", fields={"title": "Mandats"},
                                          actor="test")

    async def chunks() -> AsyncIterator[bytes]:
        yield make_pes("PES_E2E_0001", pjs=[("TI0001", "facture.pdf", b"%PDF-1.4 facture")])

    await documents.attach_file(rt, doc.id, "pes", filename="pes.xml", media_type="application/xml",
                                chunks=chunks(), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    done = await wait_state(rt, doc.id, "done", timeout=30)
    assert done.fields["pes_acquit_ok"] is True and done.fields["pes_nomfic"] == "PES_E2E_0001"
    assert done.fields["pes_nb_pj"] == 1
    acquit = done.files_of("pes_acquit")[0]
    assert parse_pes_acquit(await rt.blobs.read(acquit.blob_key)).nom_fic == "PES_E2E_0001"
    assert s2low.count("post_pes", "PES_E2E_0001") == 1
    server = await server_factory(rt)
    async with server.client() as admin:
        body = await (await admin.get(f"/api/v1/documents/{doc.id}")).json()
        assert body["fields"]["pes_acquit_ok"] is True and body["fields"]["pes_id_coll"] == "12345678912345"
        r = await admin.get(f"/api/v1/documents/{doc.id}/files/pes_acquit")
        assert parse_pes_acquit(await r.read()).ok


async def test_worker_restart_while_100_acts_wait_for_their_ar(runtime_factory, tdt_config, s2low, wait_state, pdf):
    from flowbus.clock import ManualClock
    s2low.clock = ManualClock(start=datetime.now(UTC))  # the préfecture answers only when this test says so
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    t0 = time.monotonic()
    docs = [await _deliberation(rt, ent.id, f"DEL_{i:03d}", pdf) for i in range(100)]
    for d in docs:
        await wait_state(rt, d.id, "waiting", timeout=60)
    posted = time.monotonic() - t0
    await rt.close()  # the worker stops while every act waits for its AR
    assert s2low.count("post_acte") == 100
    s2low.clock.advance(minutes=5)
    rt2 = await runtime_factory("embedded", config_dir=tdt_config)
    t1 = time.monotonic()
    finals = [await wait_state(rt2, d.id, "done", timeout=60) for d in docs]
    print(f"100 acts posted in {posted:.1f}s; all acknowledged {time.monotonic() - t1:.1f}s after the restart")
    assert len({d.fields["ar_identifier"] for d in finals}) == 100
    assert all(s2low.count("post_acte", f"DEL_{i:03d}") == 1 for i in range(100))
    assert s2low.count("post_acte") == 100 and all(s2low.transmissions(f"DEL_{i:03d}") == 1 for i in range(100))


async def test_prefecture_letter_becomes_a_document_and_is_answered(runtime_factory, tdt_config, s2low, wait_state,
                                                                    pdf, shared: Path):
    from flowbus.connectors.tdt.inbox import collect_pes_retours, collect_prefecture_letters
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    acte = await _deliberation(rt, ent.id, "DEL_PC", pdf)
    done = await wait_state(rt, acte.id, "done", timeout=30)
    s2low.send_letter(done.fields["tdt_transaction_id"], "DemandePieceComplementaire",
                      text="Merci de transmettre le procès-verbal de la séance")
    created = await collect_prefecture_letters(rt, instance_id="s2low-actes", entity_id=ent.id, flow_id="courrier",
                                               start=False)
    assert len(created) == 1
    assert await collect_prefecture_letters(rt, instance_id="s2low-actes", entity_id=ent.id,
                                            flow_id="courrier") == []  # marked read: not twice
    letter = await documents.get_document(rt, created[0])
    assert letter.fields["letter_type"] == "demande_pieces"
    assert letter.fields["letter_text"] == "Merci de transmettre le procès-verbal de la séance"
    assert letter.fields["id_acte"] == done.fields["ar_identifier"]
    assert letter.fields["acte_document_id"] == acte.id
    assert [f.filename.endswith(".pdf") for f in letter.files_of("courrier")] == [True]

    async def chunks() -> AsyncIterator[bytes]:
        yield pdf

    await documents.update_fields(rt, letter.id, {"type_envoie": 4}, actor="agent")
    await documents.attach_file(rt, letter.id, "reponse", filename="pv.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="agent")
    await documents.run_action(rt, letter.id, "start", actor="agent")
    answered = await wait_state(rt, letter.id, "done", timeout=30)
    assert answered.fields["tdt_status"] == "reponse_acquittee"
    ar = answered.files_of("ar_reponse")[0]
    assert parse_message(await rt.blobs.read(ar.blob_key)).root == "ARPieceComplementaire"
    assert s2low.count("reply") == 1

    retour = (shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes()
    s2low.add_pes_retour("HELIOS_SIMU_RETOUR.xml", retour)
    (doc_id,) = await collect_pes_retours(rt, instance_id="s2low-helios", entity_id=ent.id, flow_id="pes-retour")
    stored = await documents.get_document(rt, doc_id)
    assert stored.fields["pes_retour_typfic"] == "PESRETOUR_DEP" and stored.fields["pes_id_coll"] == "12345678900012"
    assert await rt.blobs.read(stored.files_of("pes_retour")[0].blob_key) == retour


async def test_tdt_poll_command(runtime_factory, tdt_config, s2low, wait_state, pdf, tmp_path: Path):
    import json
    import os
    import sys
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    acte = await _deliberation(rt, ent.id, "DEL_POLL", pdf)
    done = await wait_state(rt, acte.id, "done", timeout=30)
    s2low.send_letter(done.fields["tdt_transaction_id"], "CourrierSimple", text="Pour information")
    data_dir = rt.settings.data_dir
    await rt.close()
    env = {**os.environ, "FLOWBUS_DATA_DIR": str(data_dir), "FLOWBUS_CONFIG_DIR": str(tdt_config), "FLOWBUS_DEMO": "true",
           "FLOWBUS_OUTBOUND_ALLOW": "127.0.0.0/8,::1",
           "FLOWBUS_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowbus", "tdt", "poll", "--entity", ent.id, "--letters-flow", "courrier",
        "--no-start", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    (doc_id,) = json.loads(out)["letters"]
    rt2 = await runtime_factory("embedded", config_dir=tdt_config, workers=False)
    letter = await documents.get_document(rt2, doc_id)
    assert (letter.fields["letter_type"], letter.fields["id_acte"]) == ("courrier_simple", done.fields["ar_identifier"])
    assert "letter_text" not in letter.fields  # a courrier simple carries only its document (ACTES 2-1)
    assert len(letter.files_of("courrier")) == 1
    assert s2low.count("mark_read") == 1


async def test_the_server_collects_letters_and_pes_retours_on_its_own(runtime_factory, tdt_config, s2low,
                                                                      wait_state, pdf, shared: Path):
    """No cron: the scheduler's « tdt.inbox » job reads S²LOW for each collectivité whose S²LOW instances name a
    flow for letters and PES_Retour, once per period whatever the number of processes."""
    from flowbus.jobs import inboxes, platform_jobs
    from flowbus.scheduler import Scheduler, last_runs
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    other = await runtime_factory("embedded", config_dir=tdt_config, workers=False)  # a second process
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    quiet = await create_entity(rt, name="Commune sans relève", siren=None, parent=None, actor_name="test")
    async with rt.store.transaction() as tx:
        await rt.instances.save(tx, {"id": "s2low-actes", "family": "tdt-actes", "kind": "s2low", "entity": ent.id,
                                     "settings": {"url": s2low.url, "departement": "034", "siren": "123456789",
                                                  "letters_flow": "courrier"}}, at=rt.clock.now())
        await rt.instances.save(tx, {"id": "s2low-helios", "family": "tdt-helios", "kind": "s2low",
                                     "entity": ent.id, "settings": {"url": s2low.url, "retours_flow": "pes-retour"}},
                                at=rt.clock.now())
    assert await inboxes(rt) == [("s2low-actes", ent.id, "tdt-actes", "courrier"),
                                 ("s2low-helios", ent.id, "tdt-helios", "pes-retour")]
    acte = await _deliberation(rt, ent.id, "DEL_JOB", pdf)
    done = await wait_state(rt, acte.id, "done", timeout=30)
    s2low.send_letter(done.fields["tdt_transaction_id"], "LettreObservations", text="Observations sur l'acte")
    s2low.add_pes_retour("HELIOS_SIMU_RETOUR.xml",
                         (shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())

    jobs = platform_jobs()
    first, second = Scheduler(rt, jobs), Scheduler(other, jobs)
    assert "tdt.inbox" in await first.run_due()
    assert "tdt.inbox" not in await second.run_due(), "the period is claimed by the first process"
    async with rt.store.transaction() as tx:
        letters = await tx.fetch("SELECT id, state, entity_id FROM documents WHERE flow_id = 'courrier'")
        retours = await tx.fetch("SELECT id, state FROM documents WHERE flow_id = 'pes-retour'")
        runs = {r["job"].name: r["run"] for r in await last_runs(tx, jobs)}
    assert [(r["state"], r["entity_id"]) for r in letters] == [("draft", ent.id)], "the agent answers it"
    letter = await documents.get_document(rt, letters[0]["id"])
    assert letter.fields["letter_type"] == "lettre_observations" and letter.fields["acte_document_id"] == acte.id
    assert len(retours) == 1
    await wait_state(rt, retours[0]["id"], "done", timeout=30)
    assert runs["tdt.inbox"]["outcome"] == "done"
    assert runs["tdt.inbox"]["detail"] == "1 courrier(s), 1 PES Retour, 0 relève(s) en échec"
    assert runs["tdt.inbox"]["process"] == first.process and quiet.id not in str(await inboxes(rt))
    assert await first.run_due() == [], "nothing more in the same period"


@pytest.mark.parametrize("outcome, state, archive_status", [
    ("archived", "done", "Archivé par le SAE"),  # 4 → 19 → 12 → 13, all before our first poll
    ("archive_error", "done", "Erreur lors de l'envoi au SAE"),  # 4 → 19 → 20
    ("destroyed", "error", None),  # 4 → 16: nothing left to fetch
])
async def test_an_act_archived_by_s2low_before_the_poll(backend, runtime_factory, tdt_config, s2low, wait_state,
                                                        pdf, outcome, state, archive_status):
    rt = await runtime_factory(backend, config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    number = {"archived": "DEL_ARCH", "archive_error": "DEL_ARCH_KO", "destroyed": "DEL_DETRUIT"}[outcome]
    s2low.script_acte(number, outcome)
    doc = await _deliberation(rt, ent.id, number, pdf)
    final = await wait_state(rt, doc.id, state, timeout=30)
    if state == "error":
        assert "détruite sur S²LOW (statut 16)" in final.last_error
        return
    assert final.fields["tdt_status"] == "acquitte_archive_s2low"
    assert final.fields["tdt_archive_status"] == archive_status
    assert final.fields["ar_identifier"] == f"034-123456789-20260102-{number}-DE"  # computed at posting
    files = {f.field for f in final.files}
    assert {"bordereau_acquittement", "acte_tamponne"} <= files and "aractes" not in files
    assert s2low.count("download_tampon", number) == 1
    async with rt.store.transaction() as tx:
        entries = await tx.fetch("SELECT data FROM journal WHERE document_id = $1 AND kind = 'step.done'", doc.id)
    assert any("ARActe n'est plus fourni" in e["data"] for e in entries)


@pytest.mark.parametrize("outcome, state, archive_status", [
    ("archived", "done", "Accepté par le SAE"),  # 4 → 9 → 10 before our poll: the acquit is still read
    ("sae_refused", "done", "Refusé par le SAE"),
    ("cancelled", "refuse", None),
    ("destroyed", "error", None),
])
async def test_a_pes_past_its_acquit_before_the_poll(backend, runtime_factory, tdt_config, s2low, wait_state,
                                                     make_pes, outcome, state, archive_status):
    rt = await runtime_factory(backend, config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    nom_fic = f"PES_{outcome.upper()}"
    s2low.script_pes(nom_fic, outcome)
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="pes", fields={"title": "Mandats"},
                                          actor="test")

    async def chunks() -> AsyncIterator[bytes]:
        yield make_pes(nom_fic)

    await documents.attach_file(rt, doc.id, "pes", filename="pes.xml", media_type="application/xml",
                                chunks=chunks(), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    final = await wait_state(rt, doc.id, state, timeout=30)
    if outcome == "destroyed":
        assert "détruit sur S²LOW (statut 22)" in final.last_error
    elif outcome == "cancelled":
        assert final.fields["tdt_status"] == "annule"
    else:
        assert final.fields["pes_acquit_ok"] is True and final.fields["tdt_archive_status"] == archive_status
        assert parse_pes_acquit(await rt.blobs.read(final.files_of("pes_acquit")[0].blob_key)).nom_fic == nom_fic


async def test_shipped_letter_and_pes_retour_flows(runtime_factory, tdt_config, s2low, wait_state, pdf,
                                                   shared: Path):
    """The shipped flows « Courrier de la préfecture » and « PES Retour », fed by the server's relève: a demande de
    pièces complémentaires arrives as a draft, the agent answers it; a PES_Retour is filed, done."""
    from flowbus.jobs import poll_tdt_inboxes
    for name in ("courrier-prefecture.yml", "pes-retour.yml"):  # as shipped, checked every second instead of 15 min
        text = (ROOT / "config" / "flows" / name).read_text(encoding="utf-8")
        (tdt_config / "flows" / name).write_text(text.replace("check_every: 15m", "check_every: 1s"), encoding="utf-8")
    rt = await runtime_factory("embedded", config_dir=tdt_config)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    async with rt.store.transaction() as tx:
        # the acts go through s2low-actes here (the test flow): its letters feed the shipped flow, whose answer
        # step names the shipped instance id tdt-actes
        await rt.instances.save(tx, {"id": "s2low-actes", "family": "tdt-actes", "kind": "s2low", "entity": ent.id,
                                     "settings": {"url": s2low.url, "departement": "034", "siren": "123456789",
                                                  "letters_flow": "courrier-prefecture"}}, at=rt.clock.now())
        await rt.instances.save(tx, {"id": "tdt-actes", "family": "tdt-actes", "kind": "s2low", "entity": ent.id,
                                     "settings": {"url": s2low.url}}, at=rt.clock.now())
        await rt.instances.save(tx, {"id": "tdt-helios", "family": "tdt-helios", "kind": "s2low", "entity": ent.id,
                                     "settings": {"url": s2low.url, "retours_flow": "pes-retour"}}, at=rt.clock.now())
    acte = await _deliberation(rt, ent.id, "DEL_PC2", pdf)
    done = await wait_state(rt, acte.id, "done", timeout=30)
    s2low.send_letter(done.fields["tdt_transaction_id"], "DemandePieceComplementaire",
                      text="Merci de transmettre la convention signée")
    s2low.add_pes_retour("HELIOS_SIMU_RETOUR.xml",
                         (shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())
    assert await poll_tdt_inboxes(rt) == {"letters": 1, "pes_retours": 1, "failed": 0}
    async with rt.store.transaction() as tx:
        (letter_id,) = [r["id"] for r in await tx.fetch(
            "SELECT id FROM documents WHERE flow_id = 'courrier-prefecture'")]
        (retour_id,) = [r["id"] for r in await tx.fetch("SELECT id FROM documents WHERE flow_id = 'pes-retour'")]
    retour = await wait_state(rt, retour_id, "done", timeout=30)
    assert retour.fields["pes_retour_typfic"] == "PESRETOUR_DEP" and retour.files_of("pes_retour")
    letter = await documents.get_document(rt, letter_id)
    assert letter.state == "draft" and letter.fields["letter_type"] == "demande_pieces"
    assert letter.fields["acte_document_id"] == acte.id and letter.files_of("courrier")

    async def chunks():
        yield pdf

    await documents.update_fields(rt, letter.id, {"envoi_reponse": True, "type_envoie": "4"}, actor="agent")
    await documents.attach_file(rt, letter.id, "reponse", filename="convention.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="agent")
    await documents.run_action(rt, letter.id, "start", actor="agent")
    answered = await wait_state(rt, letter.id, "done", timeout=30)
    assert answered.fields["tdt_status"] == "reponse_acquittee" and answered.files_of("ar_reponse")
    assert s2low.count("reply") == 1
