"""Recipient page security: no hint on a wrong token, French expiry page, lockout, isolation, no JS needed."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from flowbus.clock import ManualClock
from flowbus.connectors.mailsec import store, tokens
from tests.support.pdfs import pdf


async def _payslips(api, rt, wait_state, n: int) -> list[str]:
    entity = (await (await api.post("/api/v1/entities", json={"name": "Commune"})).json())["id"]
    docs = []
    for i in range(n):
        r = await api.post("/api/v1/documents", json={"entity": entity, "flow": "rh-paie", "fields": {
            "agent_nom": f"Agent {i}", "agent_email": f"agent{i}@agents.example.fr", "periode": "2026-02"}})
        doc = (await r.json())["id"]
        r = await api.put(f"/api/v1/documents/{doc}/files/bulletin", data=pdf(f"secret {i}"),
                          params={"filename": f"bulletin-{i}.pdf"}, headers={"Content-Type": "application/pdf"})
        assert r.status == 201, await r.text()
        assert (await api.post(f"/api/v1/documents/{doc}/actions/start")).status in (200, 202)
        docs.append(doc)
    for doc in docs:
        await wait_state(rt, doc, "done")
    return docs


def _secrets_of(smtp, ms, i: int) -> tuple[str, str]:
    got = smtp.to(f"agent{i}@agents.example.fr")
    link = [ms.LINK.search(m.text()) for m in got]
    [url] = [m.group(1) for m in link if m]
    [password] = [ms.PASSWORD.search(m.text()).group(1) for m in got if ms.PASSWORD.search(m.text())]
    return url, password


async def test_recipient_page_security(runtime_factory, server_factory, mailsec_config, smtp, wait_state, ms):
    clock = ManualClock()
    rt = await runtime_factory("embedded", config_dir=mailsec_config, clock=clock)
    srv = await server_factory(rt)
    async with srv.client() as api:
        await _payslips(api, rt, wait_state, 2)
    url_a, pw_a = _secrets_of(smtp, ms, 0)
    url_b, pw_b = _secrets_of(smtp, ms, 1)
    path_a, path_b = url_a.split(srv.url, 1)[1], url_b.split(srv.url, 1)[1]

    import aiohttp
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as web:
        # wrong, malformed and unknown links: the very same bare 404 as a route that does not exist
        unknown = await web.get("/pas/une/page")
        expected = (unknown.status, await unknown.text())
        for path in (f"/mail/{tokens.new_token()}", "/mail/abc", f"/mail/{secrets.token_urlsafe(32)}/files/0",
                     f"/mail/{path_a[6:-1]}"):
            r = await web.get(path)
            assert (r.status, await r.text()) == expected == (404, "404: Not Found")
        r = await web.post(f"/mail/{tokens.new_token()}", data={"mot_de_passe": "x"})
        assert (r.status, await r.text()) == expected

        # the password form is plain HTML (no script), labelled, in French
        r = await web.get(path_a)
        html = await r.text()
        assert r.status == 200 and '<html lang="fr">' in html and "<script" not in html
        assert '<label for="mot_de_passe">Mot de passe</label>' in html
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
        # before the password: no document, no download
        assert "bulletin-0.pdf" not in html
        r = await web.get(f"{path_a}/files/0", allow_redirects=False)
        assert r.status == 303

        # B's password does not open A's link; five wrong passwords lock it, even the right one then
        for attempt in range(1, 5):
            r = await web.post(path_a, data={"mot_de_passe": pw_b}, allow_redirects=False)
            assert r.status == 403 and f"Il vous reste {5 - attempt} essai(s)" in await r.text()
        r = await web.post(path_a, data={"mot_de_passe": "encore faux"}, allow_redirects=False)
        assert r.status == 429 and "bloqué jusqu'au" in await r.text()
        r = await web.post(path_a, data={"mot_de_passe": pw_a}, allow_redirects=False)
        assert r.status == 429
        assert (await web.get(path_a)).status == 429
        async with rt.store.transaction() as tx:
            rows = await tx.fetch("SELECT address, locked_until, read_at FROM mailsec_recipients ORDER BY address")
        assert rows[0]["locked_until"] and rows[0]["read_at"] is None and rows[1]["locked_until"] is None

        clock.advance(minutes=16)
        r = await web.post(path_a, data={"mot_de_passe": pw_a}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == path_a
        cookie = r.cookies["flowbus_mailsec"]
        assert cookie["httponly"] and cookie["path"] == path_a and cookie["samesite"] == "Strict"
        r = await web.get(path_a)
        page_a = await r.text()
        assert r.status == 200 and "bulletin-0.pdf" in page_a and "bulletin-1.pdf" not in page_a
        assert await (await web.get(f"{path_a}/files/0")).read() == pdf("secret 0")
        assert (await web.get(f"{path_a}/files/1")).status == 404
        assert (await web.get(f"{path_a}/files/x")).status == 404

    # A's session cookie does not open B's link (sessions are per recipient and per link path)
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        other.cookie_jar.update_cookies({"flowbus_mailsec": cookie.value})
        r = await other.get(path_b, headers={"Cookie": f"flowbus_mailsec={cookie.value}"})
        assert r.status == 200 and "bulletin-1.pdf" not in await r.text()
        assert "Mot de passe" in await r.text()

    async with rt.store.transaction() as tx:
        a = await store.recipient_by_token_hash(tx, tokens.hash_token(path_a.rsplit("/", 1)[1]))
        b = await store.recipient_by_token_hash(tx, tokens.hash_token(path_b.rsplit("/", 1)[1]))
    assert a.status == "read" and b.status == "sent" and a.failed_attempts == 0

    # rh-paie links live 60 days: after that, a French page says so
    clock.advance(days=61)
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as web:
        r = await web.get(path_b)
        text = await r.text()
        assert r.status == 410 and "Ce lien a expiré" in text and '<html lang="fr">' in text
        r = await web.get(f"{path_a}/files/0")
        assert r.status == 410


def test_lockout_policy_is_five_attempts():
    from flowbus.web.mailsec import LOCKOUT
    assert LOCKOUT.max_attempts == 5 and LOCKOUT.lock_for == timedelta(minutes=15)


async def test_lockout_is_configurable_per_instance(runtime_factory, server_factory, mailsec_config, smtp,
                                                    wait_state, ms):
    import aiohttp
    import yaml
    path = mailsec_config / "connectors" / "mailsec.yml"
    data = yaml.safe_load(path.read_text())
    data["instances"][0]["settings"].update(password_attempts=2, password_lock_for="1h")
    path.write_text(yaml.safe_dump(data))
    clock = ManualClock()
    rt = await runtime_factory("embedded", config_dir=mailsec_config, clock=clock)
    srv = await server_factory(rt)
    async with srv.client() as api:
        await _payslips(api, rt, wait_state, 1)
    url, password = _secrets_of(smtp, ms, 0)
    path_a = url.split(srv.url, 1)[1]
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as web:
        r = await web.post(path_a, data={"mot_de_passe": "faux"}, allow_redirects=False)
        assert r.status == 403 and "Il vous reste 1 essai(s)" in await r.text()
        assert (await web.post(path_a, data={"mot_de_passe": "faux"}, allow_redirects=False)).status == 429
        clock.advance(minutes=59)
        assert (await web.post(path_a, data={"mot_de_passe": password}, allow_redirects=False)).status == 429
        clock.advance(minutes=2)
        assert (await web.post(path_a, data={"mot_de_passe": password}, allow_redirects=False)).status == 303


@pytest.mark.parametrize("value", ["../../etc/passwd", "a" * 200, "", "abc def"])
def test_malformed_tokens_are_rejected_before_lookup(value):
    assert not tokens.looks_like_token(value)
