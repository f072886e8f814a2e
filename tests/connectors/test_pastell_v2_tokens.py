"""Pastell 4 clients: ``Authorization: Bearer`` personal tokens, answered as HTTP Basic as the same person, rate-limited."""

from __future__ import annotations

from typing import Any

import aiohttp

from flowbus.models import Entity
from flowbus.people import accounts
from flowbus.people.access import EVERY_ENTITY, Grant
from flowbus.store import repo
from tests.conftest import make_user
from tests.connectors.test_pastell_v2_entities import basic


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bearer_token_acts_as_its_person(backend, runtime_factory, server_factory) -> None:
    rt = await runtime_factory(backend, auth_address_max=5)
    srv = await server_factory(rt)
    async with rt.store.transaction() as tx:
        for ident, name in (("ville", "Ville de Test"), ("autre", "Autre commune")):
            await repo.insert_entity(tx, Entity(ident, name, None, None, rt.clock.now()))
    await make_user(rt, "agent", grants=(Grant("ville", "editor"),))
    await make_user(rt, "admin-ville", grants=(Grant("ville", "admin"),))
    await make_user(rt, "plateforme", grants=(Grant(EVERY_ENTITY, "admin"),))

    # the platform's API key gives the collectivité's administrator a token; with it, they create the agent's
    async with srv.client() as platform:
        r = await platform.post("/api/v1/users/admin-ville/tokens", json={"name": "provisioning"})
        assert r.status == 201, await r.text()
        admin_token = (await r.json())["token"]
    async with aiohttp.ClientSession(base_url=srv.url, headers=bearer(admin_token)) as web_admin:
        r = await web_admin.post("/api/v1/users/agent/tokens", json={"name": "webdelib", "expires_in_days": 365})
        assert r.status == 201, await r.text()
        created = await r.json()
        token = created["token"]
        assert token.startswith("fbt_") and created["name"] == "webdelib" and created["expires_at"]
        # never a token carrying rights its creator does not have
        r = await web_admin.post("/api/v1/users/plateforme/tokens", json={"name": "vol"})
        assert r.status == 403
    async with rt.store.transaction() as tx:
        stored = await tx.fetchrow("SELECT * FROM user_tokens WHERE id = $1", created["id"])
    assert token not in str(dict(stored))  # only its hash is kept

    # the same calls with Basic (login, password) and with Bearer answer the same
    async with aiohttp.ClientSession(base_url=srv.url, headers=basic("agent")) as by_password, \
            aiohttp.ClientSession(base_url=srv.url, headers=bearer(token)) as by_token:
        listed = await (await by_token.get("/api/v2/entite")).json()
        assert listed == await (await by_password.get("/api/v2/entite")).json()
        assert [e["denomination"] for e in listed] == ["Ville de Test"]
        id_e = listed[0]["id_e"]
        r = await by_token.post(f"/api/v2/entite/{id_e}/document", data={"type": "pdf-generique"})
        assert r.status == 201, await r.text()
        id_d = (await r.json())["id_d"]
        one = await (await by_token.get(f"/api/v2/entite/{id_e}/document/{id_d}")).json()
        assert one == await (await by_password.get(f"/api/v2/entite/{id_e}/document/{id_d}")).json()
        journal = await (await by_token.get("/api/v2/journal", params={"id_e": id_e, "id_d": id_d})).json()
        authors = {j["id_u"] for j in journal}
        # no right on the other commune: Pastell's 403, the same for both doors, naming the same id_u
        refused = []
        for api in (by_token, by_password):
            r = await api.get("/api/v2/entite/autre")
            refused.append((r.status, (await r.json())["error-message"]))
        assert refused[0] == refused[1] and refused[0][0] == 403
        assert refused[0][1].endswith(f"droit=entite:lecture,id_u={authors.pop()}")

        # the person's token also opens the API v1 as that person: they create a second token themselves
        r = await by_token.post("/api/v1/users/agent/tokens", json={"name": "script"})
        assert r.status == 201
        second = (await r.json())["token"]
        r = await by_token.post("/api/v1/users/admin-ville/tokens", json={"name": "vol"})
        assert r.status == 403  # never a token carrying someone else's rights
    async with aiohttp.ClientSession(base_url=srv.url, headers=bearer(second)) as agent_script:
        r = await agent_script.get("/api/v2/version")
        assert r.status == 200

    # revoked, or the account deactivated: refused with Pastell's 401
    async with srv.client() as admin:
        r = await admin.delete(f"/api/v1/users/agent/tokens/{created['id']}")
        assert r.status == 204
    async with aiohttp.ClientSession(base_url=srv.url, headers=bearer(token)) as revoked:
        r = await revoked.get("/api/v2/version")
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert (await r.json())["error-message"] == "Accès interdit : ce jeton a été révoqué"
    async with rt.store.transaction() as tx:
        agent = await accounts.by_login(tx, "agent")
        await accounts.set_active(tx, agent, False, actor="test", now=rt.clock.now())
    async with aiohttp.ClientSession(base_url=srv.url, headers=bearer(second)) as disabled:
        r = await disabled.get("/api/v2/version")
        assert r.status == 401 and (await r.json())["error-message"] == "Votre compte a été désactivé"

    # wrong tokens go through the same limits as every door: past the address's limit, 429 with Retry-After
    async with aiohttp.ClientSession(base_url=srv.url, headers=bearer("fbt_0123456789abcdef_nope")) as guesser:
        # the revoked and the deactivated attempts above counted already: 2 of the address's 5
        statuses = [(await guesser.get("/api/v2/version")).status for _ in range(2)]
        r = await guesser.get("/api/v2/version")
        assert statuses == [401, 401] and r.status == 429 and int(r.headers["Retry-After"]) > 0
        assert (await r.json())["status"] == "error"
    async with rt.store.transaction() as tx:
        failures = await tx.fetch("SELECT key, failures FROM auth_limits WHERE door = 'pastell'")
    assert any(f["key"] == "identity:token:0123456789abcdef" for f in failures)
