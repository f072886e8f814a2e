"""Text search answers from an index (SQLite FTS5, PostgreSQL full text) and answers the same on both
backends: no case, no accents, prefixes of a matricule or an act number, through the API v1, the
Pastell layer and the engine's fast record (issue 20 §3)."""

from __future__ import annotations

import asyncio
import base64

import aiohttp

from flowbus import documents
from flowbus.api.auth import create_api_key
from flowbus.api.entities import create_entity
from flowbus.store import repo, textsearch
from tests.support.pdfs import pdf as make_pdf

DOCS = {
    "acte": {"title": "Délibération n° 2024-DEL-017 : Budget primitif"},
    "paie": {"title": "Bulletin de paie — Matricule A12345, Œuvres sociales"},
    "voirie": {"title": "Arrêté de voirie rue de l'Église"},
    "autre": {"title": "Délibération 2023-ARR-004 : marché de travaux"},
}
QUERIES = {
    "2024-DE": ["acte"],
    "2024-del-017": ["acte"],
    "deliberation": ["acte", "autre"],
    "DÉLIBÉRATION budget": ["acte"],
    "a123": ["paie"],
    "A12345": ["paie"],
    "oeuvres": ["paie"],
    "eglise": ["voirie"],
    "église voirie": ["voirie"],
    "2023-ARR": ["autre"],
    "2024-ARR": [],
    "matricule paie": ["paie"],
    "pont": [],  # never from the middle of a word
    "--": ["acte", "autre", "paie", "voirie"],  # no word: no text condition
}


def test_words_are_folded_the_same_for_text_and_queries():
    assert textsearch.words("Délibération n° 2024-DEL-017") == ["deliberation", "n", "2024", "del", "017"]
    assert textsearch.words("ŒUVRES Straße") == ["oeuvres", "strasse"]
    assert textsearch.fts5_query("2024-DE dupont") == '"2024 de" * AND "dupont" *'
    assert textsearch.tsquery("2024-DE dupont") == "(2024 <-> de:*) & (dupont:*)"
    assert textsearch.fts5_query("« — »") is None


async def _search(runtime, entity_id, q):
    async with runtime.store.transaction() as tx:
        found = await repo.search_documents(tx, entity_ids=[entity_id], flow=None, state=None, since=None, until=None,
                                            q=q, limit=50, after=None)
    return found


async def test_same_answers_on_both_backends(runtime):
    ent = await create_entity(runtime, name="Recherche", siren=None, parent=None, actor_name="test")
    ids = {}
    for name, fields in DOCS.items():
        ids[(await documents.create_document(runtime, entity_id=ent.id, flow_id="demo", fields=fields,
                                             actor="test")).id] = name
    for q, expected in QUERIES.items():
        found = sorted(ids[d.id] for d in await _search(runtime, ent.id, q))
        assert found == sorted(expected), q


async def test_changed_fields_are_found_and_old_words_forgotten(runtime):
    ent = await create_entity(runtime, name="Modification", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(runtime, entity_id=ent.id, flow_id="demo",
                                          fields={"title": "Convention d'occupation"}, actor="test")
    await documents.update_fields(runtime, doc.id, {"title": "Arrêté de stationnement"}, actor="test")
    assert [d.id for d in await _search(runtime, ent.id, "stationnement")] == [doc.id]
    assert await _search(runtime, ent.id, "convention") == []


async def test_fast_record_keeps_the_index(runtime):
    """The engine's short record rewrites the fields (and their words) in its own SQL."""
    ent = await create_entity(runtime, name="Moteur", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(runtime, entity_id=ent.id, flow_id="demo",
                                          fields={"title": "Marché n° 2025-MAR-031"}, actor="test")
    async def pdf():
        yield make_pdf("Marché")
    await documents.attach_file(runtime, doc.id, "file", filename="marche.pdf", media_type="application/pdf",
                                chunks=pdf(), actor="test")
    await documents.run_action(runtime, doc.id, "start", actor="test")
    for _ in range(200):
        if (await documents.get_document(runtime, doc.id)).state == "done":
            break
        await asyncio.sleep(0.05)
    assert (await documents.get_document(runtime, doc.id)).state == "done"
    assert [d.id for d in await _search(runtime, ent.id, "2025-MAR")] == [doc.id]


async def test_api_and_pastell_layer_search_by_index(server):
    rt = server.rt
    ent = await create_entity(rt, name="Portail", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="demo",
                                          fields={"title": "Délibération 2024-DEL-099"}, actor="test")
    await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": "Autre acte"},
                                    actor="test")
    async with server.client() as app:
        r = await app.get("/api/v1/documents", params={"entity": ent.id, "q": "2024-de"})
        assert [d["id"] for d in (await r.json())["items"]] == [doc.id]
    _key, secret = await create_api_key(rt, name="logiciel-metier", roles={ent.id: "reader"})
    basic = "Basic " + base64.b64encode(f"logiciel-metier:{secret}".encode()).decode()
    async with aiohttp.ClientSession(base_url=server.url, headers={"Authorization": basic}) as pastell:
        r = await pastell.get(f"/api/v2/entite/{ent.id}/document", params={"search": "DELIBERATION 2024"})
        assert r.status == 200, await r.text()
        body = await r.json()
        assert [d["id_d"] for d in body] == [doc.id], body
