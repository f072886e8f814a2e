"""Domain endpoints: délibérations, finances (PES), RH (one document, zip batches), cimetières."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowbus.models import Entity
from flowbus.store import repo
from tests.support.pdfs import pdf

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
PDF = pdf("Acte de test")


async def _api(kind: str, runtime_factory: Any, server_factory: Any) -> Any:
    rt = await runtime_factory(kind)
    srv = await server_factory(rt)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ville", "Ville de Test", "213400013", None, rt.clock.now()))
    return rt, srv


@pytest.fixture
async def api(runtime_factory, server_factory) -> Any:
    rt, srv = await _api("embedded", runtime_factory, server_factory)
    async with srv.client() as http:
        yield rt, http


@pytest.fixture
async def api_both(backend, runtime_factory, server_factory) -> Any:
    """On both backend sets (embedded; PostgreSQL + RabbitMQ + S3)."""
    rt, srv = await _api(backend, runtime_factory, server_factory)
    async with srv.client() as http:
        yield rt, http


def _form(fields: dict[str, Any], files: dict[str, tuple[str, bytes, str]] | None = None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, str(v))
    for part, (name, data, ctype) in (files or {}).items():
        form.add_field(part.split("#")[0], data, filename=name, content_type=ctype)
    return form


async def _until_state(http: aiohttp.ClientSession, url: str, states: tuple[str, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(300):
        doc = await (await http.get(url)).json()
        if doc["state"] in states:
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} stayed {doc.get('state')}")


DELIB = {"entity": "ville", "nature": "DE", "matiere": "7.1", "numero": "DEL2026_012", "date_decision": "2026-03-02",
         "objet": "Vote du budget primitif 2026", "vote_pour": 21, "vote_contre": 3, "vote_abstention": 2,
         "presents": 27}


async def test_deliberation_created_started_and_done(api_both) -> None:
    rt, http = api_both
    r = await http.post("/api/v1/inbound/deliberations", data=_form(DELIB, {
        "acte": ("DEL2026_012.pdf", PDF, "application/pdf"),
        "annexes": ("annexe-1.pdf", PDF, "application/octet-stream"),
        "annexes#2": ("plan.png", b"\x89PNG\r\n\x1a\n....", "image/png")}))
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["status_url"] == f"/api/v1/documents/{body['id']}" and body["flow"] == "deliberation"
    doc = await _until_state(http, body["status_url"], ("done",))
    assert doc["fields"]["numero_acte"] == "DEL2026_012" and doc["fields"]["nature"] == "1"
    assert doc["fields"]["classification"] == "7.1" and doc["fields"]["date_decision"] == "2026-03-02"
    files = sorted((f["field"], f["filename"], f["media_type"]) for f in doc["files"])
    assert files == [("annexes", "annexe-1.pdf", "application/pdf"), ("annexes", "plan.png", "image/png"),
                     ("arrete", "DEL2026_012.pdf", "application/pdf")]


async def test_deliberation_payload_errors_name_the_field(api) -> None:
    rt, http = api
    cases = [({**DELIB, "numero": "del 12/2026"}, "numero"), ({**DELIB, "nature": "XX"}, "nature"),
             ({**DELIB, "matiere": "0.4"}, "matiere"), ({**DELIB, "date_decision": "02/03/2026"}, "date_decision"),
             ({**DELIB, "vote_pour": 30}, "presents"), ({**DELIB, "objet": "x" * 500}, "objet")]
    for fields, field in cases:
        r = await http.post("/api/v1/inbound/deliberations",
                            data=_form(fields, {"acte": ("a.pdf", PDF, "application/pdf")}))
        assert r.status == 422, (field, await r.text())
        assert (await r.json())["field"] == field
    r = await http.post("/api/v1/inbound/deliberations", data=_form(DELIB, {"acte": ("a.doc", b"PK\x03\x04", "x/y")}))
    assert r.status == 422 and (await r.json())["field"] == "acte"
    async with rt.store.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM documents") == 0  # nothing half-created


async def test_finances_pes_aller(api) -> None:
    rt, http = api
    pes = (SHARED / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml").read_bytes()
    r = await http.post("/api/v1/inbound/finances", data=_form({"siren": "213400013"}, {
        "pes_aller": ("pes.xml", pes, "application/octet-stream"), "visuel_pdf": ("visuel.pdf", PDF, "application/pdf")}))
    assert r.status == 201, await r.text()
    doc = await _until_state(http, (await r.json())["status_url"], ("done",))
    assert doc["fields"]["objet"] == "HELIOS_SIMU_ALR2_1496987735_826268894.xml"
    assert {(f["field"], f["media_type"]) for f in doc["files"]} >= {("pes_aller", "application/xml")}
    r = await http.post("/api/v1/inbound/finances", data=_form({"entity": "ville"}, {
        "pes_aller": ("pes.xml", b"<?xml version='1.0'?><Autre/>", "text/xml")}))
    assert r.status == 422 and (await r.json())["field"].startswith("pes_aller")


async def test_rh_single_contract_and_payslip(api) -> None:
    rt, http = api
    r = await http.post("/api/v1/inbound/rh", data=_form({
        "entity": "ville", "type": "contrat", "agent_nom": "Martin", "agent_prenom": "Claire",
        "agent_email": "claire.martin@example.org", "agent_matricule": "A123", "type_contrat": "cdd",
        "date_effet": "2026-04-01"}, {"document": ("contrat.pdf", PDF, "application/pdf")}))
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["flow"] == "rh-contrat"
    doc = await (await http.get(body["status_url"])).json()
    assert doc["fields"]["agent_prenom"] == "Claire" and doc["fields"]["date_debut"] == "2026-04-01"
    assert [f["field"] for f in doc["files"]] == ["contrat"]
    r = await http.post("/api/v1/inbound/rh", data=_form({
        "entity": "ville", "type": "bulletin", "agent_nom": "Martin", "agent_prenom": "Claire",
        "agent_email": "claire.martin@example.org", "periode": "2026-03"},
        {"document": ("bp.pdf", PDF, "application/pdf")}))
    assert r.status == 201, await r.text()
    doc = await (await http.get((await r.json())["status_url"])).json()
    assert doc["flow"] == "rh-paie" and doc["fields"]["agent_nom"] == "Claire Martin"
    r = await http.post("/api/v1/inbound/rh", data=_form({
        "entity": "ville", "type": "bulletin", "agent_nom": "Martin", "agent_email": "pas-une-adresse",
        "periode": "2026-03"}, {"document": ("bp.pdf", PDF, "application/pdf")}))
    assert r.status == 422 and (await r.json())["field"] == "agent_email"


def payslip_zip(n: int, *, bad: dict[int, str] | None = None, fmt: str = "csv") -> bytes:
    """n entries; ``bad`` = {position: kind of defect} (positions start at 1)."""
    bad = bad or {}
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for pos in range(1, n + 1):
            name = f"BP-2026-03-{pos:05d}.pdf"
            row = {"fichier": name, "matricule": f"M{pos:05d}", "nom": f"Agent{pos}", "prenom": "Camille",
                   "email": f"agent{pos}@example.org", "periode": "2026-03"}
            defect = bad.get(pos)
            if defect == "email":
                row["email"] = "agent-sans-arobase"
            elif defect == "missing-file":
                row["fichier"] = "absent.pdf"
            elif defect == "matricule":
                row["matricule"] = "m 12"
            elif defect == "not-pdf":
                zf.writestr(name, b"GIF89a")
                rows.append(row)
                continue
            zf.writestr(name, PDF + f"% agent {pos}\n".encode())
            rows.append(row)
        if fmt == "csv":
            lines = ["fichier;matricule;nom;prenom;email;periode"]
            lines += [";".join(r[k] for k in ("fichier", "matricule", "nom", "prenom", "email", "periode")) for r in rows]
            zf.writestr("manifest.csv", "\n".join(lines) + "\n")
        else:
            zf.writestr("manifest.json", json.dumps(rows))
    return buf.getvalue()


async def _wait_batch(http: aiohttp.ClientSession, url: str, timeout: float = 60) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        batch = await (await http.get(url)).json()
        if batch["status"] == "done" or loop.time() > deadline:
            return batch
        await asyncio.sleep(0.1)


async def test_rh_batch_reports_bad_entries_by_position_and_keeps_the_rest(api_both) -> None:
    await _batch_with_bad_entries(api_both, "csv")


async def test_rh_batch_json_manifest(api) -> None:
    await _batch_with_bad_entries(api, "json")


async def _batch_with_bad_entries(api: Any, fmt: str) -> None:
    rt, http = api
    data = payslip_zip(60, bad={7: "email", 23: "missing-file", 41: "matricule", 58: "not-pdf"}, fmt=fmt)
    form = aiohttp.FormData()
    form.add_field("entity", "ville")
    form.add_field("archive", data, filename="paie-2026-03.zip", content_type="application/zip")
    r = await http.post("/api/v1/inbound/rh/batches", data=form)
    assert r.status == 202, await r.text()
    body = await r.json()
    assert body["total"] == 60 and body["accepted"] == 56 and body["rejected"] == 4
    errors = {e["position"]: e for e in body["errors"]}
    assert sorted(errors) == [7, 23, 41, 58]
    assert errors[7]["field"] == "agent_email" and errors[23]["field"] == "fichier"
    assert errors[41]["field"] == "matricule" and "PDF" in errors[58]["error"]
    batch = await _wait_batch(http, body["status_url"])
    assert batch["status"] == "done" and batch["accepted"] == 56 and batch["rejected"] == 4
    done = [e for e in batch["entries"] if e["status"] == "done"]
    assert [e["position"] for e in done] == [p for p in range(1, 61) if p not in errors]
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT fields FROM documents WHERE flow_id = 'rh-paie'")
    names = sorted(json.loads(r["fields"])["agent_nom"] for r in rows)
    assert len(names) == 56 and "Camille Agent1" in names and "Camille Agent7" not in names
    doc = await (await http.get(done[0]["status_url"])).json()
    assert doc["files"][0]["filename"] == "BP-2026-03-00001.pdf" and doc["fields"]["periode"] == "2026-03"


async def test_rh_batch_without_manifest_is_refused_whole(api) -> None:
    rt, http = api
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.pdf", PDF)
    form = aiohttp.FormData()
    form.add_field("entity", "ville")
    form.add_field("archive", buf.getvalue(), filename="paie.zip", content_type="application/zip")
    r = await http.post("/api/v1/inbound/rh/batches", data=form)
    assert r.status == 422 and (await r.json())["field"] == "archive"


async def test_cimetiere(api) -> None:
    rt, http = api
    fields = {"entity": "ville", "cimetiere": "Cimetière de l'Est", "concession_numero": "C-2026-118",
              "duree": "30", "date_decision": "2026-02-10", "famille_nom": "Durand",
              "famille_email": "famille.durand@example.org", "emplacement": "Carré 4, rang 2, n°11"}
    r = await http.post("/api/v1/inbound/cimetieres", data=_form(fields, {
        "acte": ("concession.pdf", PDF, "application/pdf"), "plan": ("plan.pdf", PDF, "application/pdf")}))
    assert r.status == 201, await r.text()
    doc = await _until_state(http, (await r.json())["status_url"], ("done",))
    assert doc["fields"]["numero_concession"] == "C-2026-118" and doc["fields"]["concessionnaire_nom"] == "Durand"
    assert doc["fields"]["objet"].startswith("Acte de concession n° C-2026-118")
    r = await http.post("/api/v1/inbound/cimetieres", data=_form({**fields, "duree": "99"}, {
        "acte": ("concession.pdf", PDF, "application/pdf")}))
    assert r.status == 422 and (await r.json())["field"] == "duree"


async def test_rh_batch_resumes_after_a_worker_dies_mid_batch(runtime_factory, server_factory) -> None:
    """The worker is killed (its task cancelled) in the middle of the batch; the next delivery of the
    batch message resumes it: every valid entry becomes exactly one document."""
    from datetime import timedelta

    from flowbus.bus.base import Retry
    from flowbus.connectors.inbound import rh

    rt = await runtime_factory("embedded", workers=False)

    class DyingWorker(rh.BatchWorker):
        deaths = 0

        async def run(self, batch_id: str, token: str) -> None:
            if self.deaths:
                return await super().run(batch_id, token)
            self.deaths += 1
            task = asyncio.create_task(super().run(batch_id, token))
            while True:  # die once about a third of the entries are documents
                async with self.rt.store.transaction() as tx:
                    if await tx.fetchval("SELECT COUNT(*) FROM documents") >= 25:
                        break
                await asyncio.sleep(0.005)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            raise Retry(timedelta(milliseconds=100), "worker died")

    worker = DyingWorker(rt, lease=0.6)
    rt.inbound_batches = worker
    srv = await server_factory(rt)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ville", "Ville", None, None, rt.clock.now()))
    async with srv.client() as http:
        form = aiohttp.FormData()
        form.add_field("entity", "ville")
        form.add_field("archive", payslip_zip(80, bad={5: "email"}), filename="paie.zip",
                       content_type="application/zip")
        r = await http.post("/api/v1/inbound/rh/batches", data=form)
        assert r.status == 202, await r.text()
        batch = await _wait_batch(http, (await r.json())["status_url"], timeout=30)
    assert worker.deaths == 1
    assert batch["status"] == "done" and batch["accepted"] == 79 and batch["rejected"] == 1
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT fields FROM documents")
        files = await tx.fetchval("SELECT COUNT(*) FROM document_files")
    names = [json.loads(r["fields"])["agent_nom"] for r in rows]
    assert len(names) == 79 == len(set(names)) == files
    assert len({e["document"] for e in batch["entries"] if e["document"]}) == 79
