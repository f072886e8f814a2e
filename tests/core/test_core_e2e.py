"""Issue 2's end-to-end test: entity, API key, document with fields and a 20 MB file over HTTP,
byte-identical download, search, journal verification — on both backend sets."""

from __future__ import annotations

import hashlib
import os

import aiohttp

from flowbus import journal
from tests.support.pdfs import large_pdf


async def test_document_with_20mb_file_end_to_end(server, runtime):
    payload = large_pdf(20 * 1024 * 1024)  # opened at the door: a real PDF, spooled to disk
    async with server.client() as admin:
        r = await admin.post("/api/v1/entities", json={"name": "Syndicat de test", "siren": "253514491"})
        assert r.status == 201, await r.text()
        syndicat = await r.json()
        r = await admin.post("/api/v1/entities", json={"name": "Commune de Test", "siren": "213502388",
                                                       "parent": syndicat["id"]})
        assert r.status == 201, await r.text()
        commune = await r.json()
        assert commune["parent"] == syndicat["id"]
        r = await admin.post("/api/v1/keys", json={"name": "logiciel métier", "roles": {commune["id"]: "editor"}})
        assert r.status == 201, await r.text()
        key = (await r.json())["key"]

    async with server.client(key) as app:
        r = await app.post("/api/v1/documents", json={"entity": commune["id"], "flow": "demo",
                                                      "fields": {"title": "Arrêté de voirie n°12"}})
        assert r.status == 201, await r.text()
        doc = await r.json()
        assert doc["state"] == "draft" and doc["fields"]["title"] == "Arrêté de voirie n°12"

        form = aiohttp.FormData()
        form.add_field("file", payload, filename="arrêté 12.pdf", content_type="application/pdf")
        r = await app.put(f"/api/v1/documents/{doc['id']}/files/file", data=form)
        assert r.status == 201, await r.text()
        stored = await r.json()
        assert stored["size"] == len(payload)
        assert stored["sha256"] == hashlib.sha256(payload).hexdigest()

        r = await app.get(f"/api/v1/documents/{doc['id']}/files/file")
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/pdf"
        assert await r.read() == payload

        r = await app.get("/api/v1/documents", params={"entity": commune["id"], "flow": "demo", "q": "voirie"})
        found = await r.json()
        assert [d["id"] for d in found["items"]] == [doc["id"]]
        r = await app.get("/api/v1/documents", params={"entity": commune["id"], "q": "inexistant"})
        assert (await r.json())["items"] == []

        r = await app.get(f"/api/v1/documents/{doc['id']}/journal")
        entries = await r.json()
        assert entries["chain_ok"] is True
        kinds = [e["kind"] for e in entries["items"]]
        assert kinds[:2] == ["document.created", "file.added"]

    async with runtime.store.transaction() as tx:
        assert await journal.verify(tx) == []


async def test_search_pagination(server):
    async with server.client() as admin:
        ent = await (await admin.post("/api/v1/entities", json={"name": "Pagination"})).json()
        ids = []
        for i in range(7):
            r = await admin.post("/api/v1/documents", json={"entity": ent["id"], "flow": "demo",
                                                            "fields": {"title": f"doc {i}"}})
            ids.append((await r.json())["id"])
        seen, cursor = [], None
        while True:
            params = {"entity": ent["id"], "limit": "3"}
            if cursor:
                params["cursor"] = cursor
            page = await (await admin.get("/api/v1/documents", params=params)).json()
            seen += [d["id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 7
