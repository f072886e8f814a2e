"""Bad input: the right 4xx, a problem document naming the field, nothing half-stored; isolation between entities."""

from __future__ import annotations

import aiohttp
import pytest

from flowbus.store import repo


async def _entity(client, name="Commune"):
    r = await client.post("/api/v1/entities", json={"name": name})
    assert r.status == 201
    return (await r.json())["id"]


async def _problem(r, status, field=None):
    assert r.status == status, await r.text()
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = await r.json()
    assert body["status"] == status and body["title"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def _count_documents(rt):
    async with rt.store.transaction() as tx:
        return await tx.fetchval("SELECT COUNT(*) FROM documents")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_bad_input_is_refused_with_a_problem_naming_the_field(server, runtime):
    async with server.client() as c:
        ent = await _entity(c)
        before = await _count_documents(runtime)
        body = await _problem(await c.post("/api/v1/documents", json={"entity": "nope", "flow": "demo"}), 404,
                              "entity")
        assert body["title"] == "Ressource introuvable"
        await _problem(await c.post("/api/v1/documents", json={"entity": ent, "flow": "nope"}), 404, "flow")
        await _problem(await c.post("/api/v1/documents", json={"entity": ent, "flow": "demo",
                                                              "fields": {"title": 12}}), 422, "title")
        await _problem(await c.post("/api/v1/documents", json={"entity": ent, "flow": "demo",
                                                              "fields": {"colour": "red"}}), 422, "colour")
        await _problem(await c.post("/api/v1/documents", data=b"{not json",
                                    headers={"Content-Type": "application/json"}), 400, "body")
        assert await _count_documents(runtime) == before

        doc = await (await c.post("/api/v1/documents", json={"entity": ent, "flow": "demo",
                                                             "fields": {"title": "ok"}})).json()
        # missing required field at start
        await _problem(await c.post(f"/api/v1/documents/{doc['id']}/actions/start"), 422, "file")
        # path traversal in a file name
        form = aiohttp.FormData()
        form.add_field("file", b"x", filename="../../etc/passwd", content_type="text/plain")
        await _problem(await c.put(f"/api/v1/documents/{doc['id']}/files/file", data=form), 422, "filename")
        # a file into a text field
        form = aiohttp.FormData()
        form.add_field("file", b"x", filename="a.txt", content_type="text/plain")
        await _problem(await c.put(f"/api/v1/documents/{doc['id']}/files/title", data=form), 422, "title")
        async with runtime.store.transaction() as tx:
            assert await repo.list_files(tx, doc["id"]) == []


async def test_oversized_upload_keeps_nothing(runtime_factory, server_factory, tmp_path):
    rt = await runtime_factory("embedded", max_upload_size=1024 * 1024)
    srv = await server_factory(rt)
    async with srv.client() as c:
        ent = await _entity(c)
        doc = await (await c.post("/api/v1/documents", json={"entity": ent, "flow": "demo",
                                                             "fields": {"title": "gros"}})).json()
        form = aiohttp.FormData()
        form.add_field("file", b"\0" * (2 * 1024 * 1024), filename="gros.bin", content_type="application/pdf")
        await _problem(await c.put(f"/api/v1/documents/{doc['id']}/files/file", data=form), 413, "file")
        async with rt.store.transaction() as tx:
            assert await repo.list_files(tx, doc["id"]) == []
    blobs = [p for p in (rt.settings.blob_dir).rglob("*") if p.is_file()]
    assert blobs == [], "an oversized upload must leave no blob behind"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_unknown_and_revoked_keys(server):
    async with aiohttp.ClientSession(base_url=server.url) as anon:
        await _problem(await anon.get("/api/v1/entities"), 401, "Authorization")
        await _problem(await anon.get("/api/v1/entities", headers={"Authorization": "Bearer fbk_nope"}), 401,
                       "Authorization")
    async with server.client() as admin:
        ent = await _entity(admin)
        created = await (await admin.post("/api/v1/keys", json={"name": "k", "roles": {ent: "reader"}})).json()
        async with server.client(created["key"]) as c:
            assert (await c.get(f"/api/v1/entities/{ent}")).status == 200
        assert (await admin.delete(f"/api/v1/keys/{created['id']}")).status == 204
        async with server.client(created["key"]) as c:
            body = await _problem(await c.get(f"/api/v1/entities/{ent}"), 401, "Authorization")
            assert "revoked" in body["detail"]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_key_of_entity_a_gets_nothing_of_entity_b(server):
    async with server.client() as admin:
        a = await _entity(admin, "A")
        b = await _entity(admin, "B")
        key_a = (await (await admin.post("/api/v1/keys", json={"name": "a", "roles": {a: "admin"}})).json())["key"]
        doc_b = await (await admin.post("/api/v1/documents", json={"entity": b, "flow": "demo",
                                                                   "fields": {"title": "secret de B"}})).json()
    async with server.client(key_a) as c:
        await _problem(await c.get(f"/api/v1/entities/{b}"), 403, "entity")
        await _problem(await c.get(f"/api/v1/documents/{doc_b['id']}"), 404, "id")
        await _problem(await c.get(f"/api/v1/documents/{doc_b['id']}/files/file"), 404)
        await _problem(await c.patch(f"/api/v1/documents/{doc_b['id']}", json={"title": "x"}), 404)
        await _problem(await c.post("/api/v1/documents", json={"entity": b, "flow": "demo"}), 403, "entity")
        listing = await (await c.get("/api/v1/documents")).json()
        assert all(d["entity"] == a for d in listing["items"])
        await _problem(await c.get("/api/v1/documents", params={"entity": b}), 404, "entity")
        entities = await (await c.get("/api/v1/entities")).json()
        assert [e["id"] for e in entities["items"]] == [a]
