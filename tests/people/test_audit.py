"""Administrative actions through the API are journaled with who and before/after, never a secret's value."""

from __future__ import annotations

import json

from flowbus.api.entities import create_entity


async def test_keys_and_connectors_are_journaled_without_secrets(backend, runtime_factory, server_factory):
    rt = await runtime_factory(backend, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune de Trace", siren=None, parent=None, actor_name="t")
    async with srv.client() as http:
        async with http.post("/api/v1/keys", json={"name": "logiciel-rh", "roles": {ent.id: "editor"}}) as resp:
            created = await resp.json()
        async with http.delete(f"/api/v1/keys/{created['id']}") as resp:
            assert resp.status == 204
        body = {"family": "mailsec", "kind": "smtp", "entity": ent.id,
                "settings": {"host": "smtp.commune.fr", "port": 587, "username": "u", "password": "tres-secret-1"}}
        async with http.put("/api/v1/connectors/courriel", json=body) as resp:
            assert resp.status == 200, await resp.text()
        body["settings"]["password"] = "tres-secret-2"
        async with http.put("/api/v1/connectors/courriel", json=body) as resp:
            assert resp.status == 200
        async with http.delete(f"/api/v1/connectors/courriel?entity={ent.id}") as resp:
            assert resp.status == 204
    async with rt.store.transaction() as tx:
        platform = await tx.fetch("SELECT actor, kind, data FROM journal WHERE entity_id = 'platform' ORDER BY seq")
        entity = await tx.fetch("SELECT actor, kind, data FROM journal WHERE entity_id = $1 ORDER BY seq", ent.id)
    keys = [(r["kind"], json.loads(r["data"])) for r in platform
            if r["kind"].startswith("admin.key.") and json.loads(r["data"])["name"] == "logiciel-rh"]
    assert [k for k, _ in keys] == ["admin.key.created", "admin.key.revoked"]
    assert keys[0][1]["after"] == {"roles": {ent.id: "editor"}} and keys[0][1]["name"] == "logiciel-rh"
    admin_actor = f"api-key:{srv.admin_key.split('_')[1]}"
    assert [r["actor"] for r in platform if r["kind"] == "admin.key.revoked"] == [admin_actor]
    saved = [json.loads(r["data"]) for r in entity if r["kind"] == "admin.connector.saved"]
    assert "before" not in saved[0]  # a new instance
    assert saved[0]["after"]["host"] == "smtp.commune.fr" and saved[0]["after"]["password"] == "••••"
    assert saved[1]["before"]["password"] == "••••" and saved[1]["after"]["password"] == "••••"
    assert [r["kind"] for r in entity].count("admin.connector.deleted") == 1
    everything = json.dumps([dict(r) for r in platform + entity], ensure_ascii=False)
    assert "tres-secret" not in everything and created["key"] not in everything
