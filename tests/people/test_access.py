"""The one access check: grants inherited down the entity tree, restricted to flows, the same through API v1 and the Pastell layer; query plans."""

from __future__ import annotations

import base64


from flowbus import documents
from flowbus.api.auth import create_api_key
from flowbus.api.entities import create_entity
from flowbus.people import access
from flowbus.people.access import EVERY_ENTITY, Grant, Principal


async def _tree(rt):
    cc = await create_entity(rt, name="Communauté de communes du Lac", siren=None, parent=None, actor_name="t")
    a = await create_entity(rt, name="Commune A", siren=None, parent=cc.id, actor_name="t")
    a1 = await create_entity(rt, name="Hameau de A", siren=None, parent=a.id, actor_name="t")
    b = await create_entity(rt, name="Commune B", siren=None, parent=cc.id, actor_name="t")
    return cc, a, a1, b


async def _doc(rt, entity, flow, title):
    return await documents.create_document(rt, entity_id=entity.id, flow_id=flow, fields={"title": title}, actor="t")


async def test_grants_inherit_down_and_flows_restrict(runtime_factory, engine_config):
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    cc, a, a1, b = await _tree(rt)
    agent = Principal("user", "u1", "Agent", (Grant(a.id, "editor", ("four",)),), login="agent")
    admin_cc = Principal("user", "u2", "Admin", (Grant(cc.id, "admin"),), login="admincc")
    async with rt.store.transaction() as tx:
        assert await access.ancestors(tx, a1.id) == [a1.id, a.id, cc.id]
        assert sorted(await access.subtree(tx, [a.id])) == sorted([a.id, a1.id])
        # the agent: editor of flow "four" in A and its hamlet; nothing on the entity itself, nothing in B
        assert await access.role_on(tx, agent, a1.id, "four") == "editor"
        assert await access.role_on(tx, agent, a.id, "retry") is None
        assert await access.role_on(tx, agent, a.id) is None
        assert await access.role_on(tx, agent, b.id, "four") is None
        assert await access.role_on(tx, admin_cc, a1.id) == "admin"
        scope = await access.scope(tx, agent)
    assert scope.allows(a1.id, "four") and not scope.allows(a.id, "retry") and not scope.allows(b.id, "four")
    visible = [await _doc(rt, a, "four", "A quatre"), await _doc(rt, a1, "four", "Hameau quatre")]
    for e, f in ((a, "retry"), (b, "four"), (cc, "four")):
        await _doc(rt, e, f, f"{e.name} {f}")
    from flowbus.store import repo
    async with rt.store.transaction() as tx:
        found = await repo.search_documents(tx, scope=scope, entity_ids=None, flow=None, state=None, since=None,
                                            until=None, q=None, limit=50, after=None)
    assert sorted(d.id for d in found) == sorted(d.id for d in visible)


async def test_a_key_restricted_to_a_flow_sees_only_its_documents(backend, runtime_factory, server_factory,
                                                                  engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    cc, a, a1, b = await _tree(rt)
    mine = await _doc(rt, a1, "four", "Visible")
    other_flow = await _doc(rt, a, "retry", "Autre flux")
    other_entity = await _doc(rt, b, "four", "Autre commune")
    key, secret = await create_api_key(rt, name="rh-a", roles={a.id: {"role": "editor", "flows": ["four"]}})
    async with srv.client(secret) as http:
        async with http.get("/api/v1/documents") as resp:
            assert [d["id"] for d in (await resp.json())["items"]] == [mine.id]
        for doc in (other_flow, other_entity):
            async with http.get(f"/api/v1/documents/{doc.id}") as resp:
                assert resp.status == 404
        async with http.post("/api/v1/documents", json={"entity": a.id, "flow": "retry", "fields": {}}) as resp:
            assert resp.status == 403
        async with http.post("/api/v1/documents", json={"entity": a.id, "flow": "four",
                                                        "fields": {"title": "Nouveau"}}) as resp:
            assert resp.status == 201
        async with http.post("/api/v1/keys", json={"name": "x", "roles": {a.id: "reader"}}) as resp:
            assert resp.status == 403  # a flow-restricted key has no right on the entity itself
    basic = "Basic " + base64.b64encode(f"rh-a:{secret}".encode()).decode()
    import aiohttp
    async with aiohttp.ClientSession(base_url=srv.url, headers={"Authorization": basic}) as http:
        async with http.get(f"/api/v2/entite/{a.id}/document") as resp:
            listed = {d["id_d"] for d in await resp.json()}
        assert mine.id not in listed  # documents of A itself only; the hamlet's are under its own id_e
        async with http.get(f"/api/v2/entite/{a1.id}/document") as resp:
            assert {d["id_d"] for d in await resp.json()} == {mine.id}
        async with http.get(f"/api/v2/entite/{a.id}/document/{other_flow.id}") as resp:
            assert resp.status == 404
        async with http.get(f"/api/v2/entite/{b.id}/document") as resp:
            assert resp.status == 403


async def test_people_sign_in_to_the_pastell_layer_with_their_password(runtime_factory, server_factory, people,
                                                                       engine_config):
    import aiohttp
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    cc, a, a1, b = await _tree(rt)
    await people.user(rt, "agent-a", grants=(Grant(a.id, "reader"),))
    good = "Basic " + base64.b64encode(f"agent-a:{people.password}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"agent-a:faux").decode()
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.get("/api/v2/entite", headers={"Authorization": good}) as resp:
            assert resp.status == 200
            assert {e["denomination"] for e in await resp.json()} == {"Commune A", "Hameau de A"}
        async with http.get("/api/v2/entite", headers={"Authorization": bad}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error-message"] == "Accès interdit : identifiant ou mot de passe incorrect"


async def test_tree_queries_use_the_parent_index(runtime_factory):
    rt = await runtime_factory("embedded", workers=False)
    await _tree(rt)
    async with rt.store.transaction() as tx:
        plan = " ".join(str(r) for r in await tx.fetch(
            "EXPLAIN QUERY PLAN WITH RECURSIVE down(id, depth) AS (SELECT id, 0 FROM entities WHERE id IN ($1)"
            " UNION ALL SELECT e.id, down.depth + 1 FROM entities e JOIN down ON e.parent_id = down.id"
            " WHERE down.depth < 64) SELECT DISTINCT id FROM down", "x"))
    assert "SEARCH e USING INDEX entities_parent" in plan
    assert "SCAN entities" not in plan and "SCAN e " not in plan


def test_platform_admin_and_roles_shape():
    p = Principal("key", "k", "k", (Grant(EVERY_ENTITY, "admin"), Grant("e1", "reader", ("four",))))
    assert p.is_platform_admin and p.roles == {EVERY_ENTITY: "admin"}
    q = Principal("key", "k", "k", (Grant(EVERY_ENTITY, "admin", ("four",)),))
    assert not q.is_platform_admin
    assert Grant(EVERY_ENTITY, "admin").label() == "Administrateur de la plateforme"
    assert access.Scope(((None, ("four",)),)).sql(lambda v: "?") == "((flow_id IN (?)))"
