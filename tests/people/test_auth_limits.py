"""Every authentication door is limited per source address and per identity, in the store: 20 wrong attempts from one
address end in 429 with Retry-After and journal entries, while a right credential from another address succeeds —
also when the attempts are spread over two API processes sharing one PostgreSQL database.

The test client picks its source address on loopback (127.0.0.2, 127.0.0.3…): the server sees distinct peers."""

from __future__ import annotations

import base64
import json
import re
import secrets

import aiohttp
import pytest

from flowbus.clock import ManualClock
from flowbus.people.access import EVERY_ENTITY, Grant

ATTACKER, OWNER = "127.0.0.2", "127.0.0.3"


def from_address(address: str, base_url: str) -> aiohttp.ClientSession:
    """A client whose connections leave from ``address`` (any 127/8 address is local on Linux)."""
    return aiohttp.ClientSession(base_url=base_url, connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


async def journal(rt, kind: str) -> list[dict]:
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT data FROM journal WHERE entity_id = 'platform' AND kind = $1 ORDER BY seq", kind)
    return [json.loads(r["data"]) for r in rows]


def assert_throttled(statuses: list[tuple[int, str | None]], *, limit: int = 8) -> None:
    """The first ``limit - 1`` wrong attempts are plain refusals, then every one is 429 with Retry-After."""
    assert [s for s, _ in statuses[:limit - 1]] == [statuses[0][0]] * (limit - 1) and statuses[0][0] in (401, 403)
    assert all(s == 429 for s, _ in statuses[limit - 1:]), statuses
    waits = [int(w) for s, w in statuses if s == 429]
    assert waits and all(0 < w <= 900 for w in waits), waits


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


async def _csrf(http: aiohttp.ClientSession, path: str) -> str:
    async with http.get(path) as resp:
        return re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)


# ---- API v1 keys ---------------------------------------------------------------------------------


async def test_api_keys(runtime_factory, server_factory):
    clock = ManualClock()
    rt = await runtime_factory("embedded", workers=False, clock=clock)
    srv = await server_factory(rt)
    admin_id = srv.admin_key.split("_")[1]
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for i in range(20):
            # random keys, and the administrator key's id with a wrong secret
            wrong = f"fbk_{admin_id}_{secrets.token_urlsafe(8)}" if i % 2 else f"fbk_{secrets.token_hex(8)}_x"
            async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer {wrong}"}) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
                if resp.status == 429:
                    problem = await resp.json()
                    assert problem["title"] == "Trop de tentatives" and "réessayez dans" in problem["detail"]
        assert_throttled(statuses)
        # a right key is never slowed down, even from the blocked address
        async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer {srv.admin_key}"}) as resp:
            assert resp.status == 200
    async with from_address(OWNER, srv.url) as http:
        async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer {srv.admin_key}"}) as resp:
            assert resp.status == 200
        async with http.get("/api/v1/entities", headers={"Authorization": "Bearer fbk_nope_nope"}) as resp:
            assert resp.status == 401  # another address is not blocked
    failed = await journal(rt, "auth.failed")
    assert len(failed) == 9 and {f["door"] for f in failed} == {"api"}
    assert [f["address"] for f in failed] == [ATTACKER] * 8 + [OWNER]
    assert admin_id in {f["identity"] for f in failed}
    assert not any(srv.admin_key.split("_", 2)[2][:8] in json.dumps(f) for f in failed)  # never the secret
    [blocked] = await journal(rt, "auth.blocked")
    assert blocked["keys"] == [f"address:{ATTACKER}"]
    # the block ends with its window
    clock.advance(minutes=16)
    async with from_address(ATTACKER, srv.url) as http:
        async with http.get("/api/v1/entities", headers={"Authorization": "Bearer fbk_nope_nope"}) as resp:
            assert resp.status == 401


async def test_an_identity_tried_from_many_addresses_is_refused(runtime_factory, server_factory):
    rt = await runtime_factory("embedded", workers=False, auth_address_max=5, auth_identity_max=12)
    srv = await server_factory(rt)
    admin_id = srv.admin_key.split("_")[1]
    statuses = []
    for n in range(4):  # 4 addresses × 4 attempts, each address below its own limit
        async with from_address(f"127.0.1.{n + 1}", srv.url) as http:
            for _ in range(4):
                async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer fbk_{admin_id}_x"}) as r:
                    statuses.append(r.status)
    assert statuses[:11] == [401] * 11 and set(statuses[11:]) == {429}
    [blocked] = await journal(rt, "auth.blocked")
    assert blocked["keys"] == [f"identity:{admin_id}"]


# ---- the Pastell layer ---------------------------------------------------------------------------


async def test_pastell_basic_password_and_key(runtime_factory, server_factory, people):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    await people.user(rt, "dominique", grants=(Grant(EVERY_ENTITY, "reader"),))
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for i in range(20):
            async with http.get("/api/v2/entite", headers=basic("dominique", f"faux-{i}")) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
                body = await resp.json()
                assert body["status"] == "error" and body["error-message"].startswith(("Accès interdit", "Trop de"))
    assert_throttled(statuses)
    async with from_address(OWNER, srv.url) as http:
        async with http.get("/api/v2/entite", headers=basic("dominique", people.password)) as resp:
            assert resp.status == 200, await resp.text()
    failed = await journal(rt, "auth.failed")
    assert [(f["door"], f["identity"]) for f in failed] == [("pastell", "dominique")] * 8
    # an API key given as the Basic password: same door, same limit
    key_id = srv.admin_key.split("_")[1]
    statuses = []
    async with from_address("127.0.0.4", srv.url) as http:
        for _ in range(20):
            async with http.get("/api/v2/entite", headers=basic(key_id, f"fbk_{key_id}_wrong")) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert_throttled(statuses)
    async with from_address(OWNER, srv.url) as http:
        async with http.get("/api/v2/entite", headers=basic(key_id, srv.admin_key)) as resp:
            assert resp.status == 200


# ---- people's sign-in and the parapheur's ----------------------------------------------------------


async def test_sign_in_page(runtime_factory, server_factory, people):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    await people.user(rt, "dominique", grants=(Grant(EVERY_ENTITY, "reader"),))
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for i in range(20):
            csrf = await _csrf(http, "/connexion")
            async with http.post("/connexion", data={"login": "dominique", "password": f"faux-{i}", "csrf": csrf},
                                 allow_redirects=False) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
                if resp.status == 429:
                    assert "Trop de tentatives" in await resp.text()
    assert_throttled(statuses)
    async with from_address(OWNER, srv.url) as http:
        csrf = await _csrf(http, "/connexion")
        async with http.post("/connexion", data={"login": "dominique", "password": people.password, "csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith("/admin/")
    failed = await journal(rt, "auth.failed")
    assert [(f["door"], f["identity"], f["address"]) for f in failed] == [("signin", "dominique", ATTACKER)] * 8


async def test_parapheur_sign_in(runtime_factory, server_factory):
    from flowbus.api.entities import create_entity
    from flowbus.signature import parapheur
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    entity = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    async with rt.store.transaction() as tx:
        await parapheur.create_signer(tx, entity_id=entity.id, login="maire", name="Le maire",
                                      password="mot-de-passe-du-maire", now=rt.clock.now())
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for i in range(20):
            async with http.post("/parapheur/connexion", data={"login": "maire", "password": f"faux-{i}"},
                                 allow_redirects=False) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert_throttled(statuses)
    async with from_address(OWNER, srv.url) as http:
        async with http.post("/parapheur/connexion", data={"login": "maire", "password": "mot-de-passe-du-maire"},
                             allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/parapheur/"
    failed = await journal(rt, "auth.failed")
    assert [(f["door"], f["identity"]) for f in failed] == [("parapheur", "maire")] * 8


# ---- two API processes, one PostgreSQL database ---------------------------------------------------


@pytest.mark.scaleout
async def test_two_api_processes_share_the_count(runtime_factory, server_factory):
    first = await runtime_factory("scaleout", workers=False)
    second = await runtime_factory("scaleout", workers=False)
    assert first.settings.database_url == second.settings.database_url
    a, b = await server_factory(first), await server_factory(second)
    statuses = []
    async with from_address(ATTACKER, a.url) as on_a, from_address(ATTACKER, b.url) as on_b:
        for i in range(20):  # alternately on each process: each alone sees 10 attempts
            http = on_a if i % 2 == 0 else on_b
            async with http.get("/api/v1/entities", headers={"Authorization": "Bearer fbk_0000_wrong"}) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert_throttled(statuses)
    async with from_address(OWNER, b.url) as http:
        async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer {a.admin_key}"}) as resp:
            assert resp.status == 200
    async with from_address(OWNER, a.url) as http:
        async with http.get("/api/v1/entities", headers={"Authorization": f"Bearer {b.admin_key}"}) as resp:
            assert resp.status == 200
    failed = await journal(second, "auth.failed")
    assert len(failed) == 8 and {f["address"] for f in failed} == {ATTACKER}
    async with first.store.transaction() as tx:
        row = await tx.fetchrow("SELECT failures, blocked_until FROM auth_limits WHERE door = 'api' AND key = $1",
                                f"address:{ATTACKER}")
    assert row["failures"] == 8 and row["blocked_until"]


async def test_old_rows_are_purged(runtime_factory, monkeypatch):
    from flowbus.people import limits
    monkeypatch.setattr(limits, "PURGE_CHANCE", 0.0)  # purged here on purpose, not by chance
    clock = ManualClock()
    rt = await runtime_factory("embedded", workers=False, clock=clock)
    for n in range(3):
        await limits.failed(rt, "api", f"192.0.2.{n}", "k", journal=False)
    clock.advance(days=2)
    await limits.failed(rt, "api", "192.0.2.9", journal=False)
    async with rt.store.transaction() as tx:
        assert await limits.purge(tx, rt.clock.now()) == 4  # three addresses and the identity; the new one stays
        assert await tx.fetchval("SELECT COUNT(*) FROM auth_limits") == 1


def test_an_ipv6_peer_counts_for_its_64():
    from types import SimpleNamespace

    from flowbus.people.limits import source_address
    assert source_address(SimpleNamespace(remote="2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert source_address(SimpleNamespace(remote="2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert source_address(SimpleNamespace(remote="::ffff:192.0.2.7")) == "192.0.2.7"
    assert source_address(SimpleNamespace(remote="192.0.2.7")) == "192.0.2.7"
