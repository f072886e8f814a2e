"""The secure-mail doors (link token, link password) are limited per source address in the store: 20 wrong
attempts from one address end in 429 with Retry-After and journal entries; the recipient's right link and
password from another address still open the document."""

from __future__ import annotations

import json

from flowbus.connectors.mailsec import tokens
from tests.mailsec.test_mailsec_security import _payslips, _secrets_of
from tests.people.test_auth_limits import ATTACKER, OWNER, assert_throttled, from_address


async def _failures(rt, door: str) -> list[dict]:
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT data FROM journal WHERE entity_id = 'platform' AND kind = 'auth.failed' "
                              "ORDER BY seq")
    return [d for d in (json.loads(r["data"]) for r in rows) if d["door"] == door]


async def test_unknown_links_then_the_right_one(runtime_factory, server_factory, mailsec_config, smtp, wait_state, ms):
    rt = await runtime_factory("embedded", config_dir=mailsec_config)
    srv = await server_factory(rt)
    async with srv.client() as api:
        await _payslips(api, rt, wait_state, 1)
    url, password = _secrets_of(smtp, ms, 0)
    path = url.split(srv.url, 1)[1]
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for _ in range(20):
            async with http.get(f"/mail/{tokens.new_token()}") as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
                if resp.status == 429:
                    assert "depuis votre adresse" in await resp.text()
    assert [s for s, _ in statuses[:7]] == [404] * 7
    assert all(s == 429 for s, _ in statuses[7:]) and all(0 < int(w) <= 900 for s, w in statuses[7:])
    async with from_address(OWNER, srv.url) as http:
        async with http.post(path, data={"mot_de_passe": password}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(path) as resp:
            assert resp.status == 200 and "bulletin-0.pdf" in await resp.text()
    failed = await _failures(rt, "mailsec-token")
    assert len(failed) == 8 and {f["address"] for f in failed} == {ATTACKER}


async def test_wrong_link_passwords_from_one_address(runtime_factory, server_factory, mailsec_config, smtp, wait_state,
                                                      ms):
    rt = await runtime_factory("embedded", config_dir=mailsec_config)
    srv = await server_factory(rt)
    async with srv.client() as api:
        await _payslips(api, rt, wait_state, 3)
    links = [_secrets_of(smtp, ms, i) for i in range(3)]
    paths = [url.split(srv.url, 1)[1] for url, _ in links]
    statuses = []
    async with from_address(ATTACKER, srv.url) as http:
        for i in range(20):  # spread over the first two links: each link's own lock (5 in a row) is not reached alone
            path = paths[i % 2]
            async with http.post(path, data={"mot_de_passe": f"faux-{i}"}, allow_redirects=False) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert_throttled(statuses)
    async with from_address(OWNER, srv.url) as http:
        async with http.post(paths[2], data={"mot_de_passe": links[2][1]}, allow_redirects=False) as resp:
            assert resp.status == 303
    failed = await _failures(rt, "mailsec-password")
    assert len(failed) == 8 and {f["address"] for f in failed} == {ATTACKER}
