"""Single sign-on in headless Chromium against protocol-faithful providers: OpenID Connect (code + PKCE) and CAS 3.0;
forged, replayed or foreign answers are refused in French."""

from __future__ import annotations

import time

import aiohttp
import pytest
from joserfc import jwt

from flowbus.people import oidc
from flowbus.people.access import EVERY_ENTITY, Grant
from flowbus.people.oidc import SsoRefused
from tests.support.cas_provider import CasServer
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.chromium


@pytest.fixture
async def provider():
    p = OidcProvider()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def cas_server():
    c = CasServer()
    await c.start()
    yield c
    await c.stop()


async def _runtime(runtime_factory, provider, cas_server):
    return await runtime_factory("embedded", workers=False, oidc_issuer=provider.issuer, oidc_client_id="flowbus",
                                 oidc_client_secret="secret-du-client", oidc_label="Compte de la collectivité",
                                 cas_url=cas_server.url, cas_label="Connexion CAS du syndicat")


async def test_oidc_and_cas_sign_in_and_replays_are_refused(runtime_factory, server_factory, browser, people,
                                                             provider, cas_server, screenshots):
    rt = await _runtime(runtime_factory, provider, cas_server)
    srv = await server_factory(rt)
    await people.user(rt, "camille", name="Camille Sso", password=None, grants=(Grant(EVERY_ENTITY, "reader"),))

    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    await page.goto(f"{srv.url}/admin/documents/x")
    await screenshots(page, "signin-sso")
    await page.get_by_role("link", name="Compte de la collectivité").click()
    await page.wait_for_url(f"{srv.url}/admin/documents/x")  # back where the person was going
    await page.goto(f"{srv.url}/admin/")
    assert "Camille Sso" in await page.inner_text("header")
    # the provider's answer used once: the same callback again is refused
    callback = provider.redirects[-1]
    await page.goto(callback)
    assert "Réponse déjà utilisée ou expirée" in await page.inner_text("[role=alert]")
    await screenshots(page, "sso-refused")
    # another browser replaying it: refused too (no attempt started there)
    other = await browser.new_context()
    opage = await other.new_page()
    await opage.goto(callback)
    assert "inattendue dans ce navigateur" in await opage.inner_text("[role=alert]")
    await other.close()
    await context.close()

    # CAS
    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()
    await page.goto(f"{srv.url}/connexion")
    await page.get_by_role("link", name="Connexion CAS du syndicat").click()
    await page.wait_for_url(f"{srv.url}/admin/")
    assert "Camille Sso" in await page.inner_text("header")
    ticket_url = cas_server.redirects[-1]
    async with rt.store.transaction() as tx:
        methods = [r["data"] for r in await tx.fetch("SELECT data FROM journal WHERE kind = 'user.signed_in'")]
    assert any('"oidc"' in m for m in methods) and any('"cas"' in m for m in methods)
    # a replayed ticket: the attempt is gone, and CAS itself would refuse it (validated once)
    await page.goto(ticket_url)
    assert "Réponse déjà utilisée ou expirée" in await page.inner_text("[role=alert]")
    await context.close()


async def test_cas_refuses_a_ticket_already_validated_and_unknown_accounts(runtime_factory, server_factory, browser,
                                                                          people, provider, cas_server):
    from flowbus.people import cas
    rt = await _runtime(runtime_factory, provider, cas_server)
    srv = await server_factory(rt)
    async with aiohttp.ClientSession() as http:
        service = f"{srv.url}/sso/cas/retour?etat=abc"
        async with http.get(f"{cas_server.url}/login", params={"service": service}, allow_redirects=False) as resp:
            ticket = resp.headers["Location"].split("ticket=")[1]
        assert await cas.validate(http, cas_server.url, service=service, ticket=ticket) == "camille"
        with pytest.raises(SsoRefused, match="inconnu, expiré ou a déjà servi"):
            await cas.validate(http, cas_server.url, service=service, ticket=ticket)
        async with http.get(f"{cas_server.url}/login", params={"service": service}, allow_redirects=False) as resp:
            ticket = resp.headers["Location"].split("ticket=")[1]
        with pytest.raises(SsoRefused, match="délivré pour un autre service"):
            await cas.validate(http, cas_server.url, service=service + "x", ticket=ticket)
    # no account for the CAS user: refused, in French, never created
    page = await browser.new_page()
    await page.goto(f"{srv.url}/sso/cas")
    assert "Aucun compte actif ne correspond à l'identifiant « camille » transmis par le serveur CAS" in \
        await page.inner_text("[role=alert]")


@pytest.mark.parametrize("fault, message", [
    ("forged", "signature ou algorithme refusé"),
    ("audience", "n'est pas destiné à flowbus"),
    ("expired", "Jeton d'identité invalide"),
    ("no-nonce", "Jeton d'identité invalide"),
])
async def test_bad_id_tokens_are_refused(runtime_factory, server_factory, browser, people, provider, cas_server,
                                         fault, message):
    rt = await _runtime(runtime_factory, provider, cas_server)
    srv = await server_factory(rt)
    await people.user(rt, "camille", password=None, grants=(Grant(EVERY_ENTITY, "reader"),))
    provider.fault = fault
    page = await browser.new_page()
    await page.goto(f"{srv.url}/sso/oidc")
    assert message in await page.inner_text("[role=alert]")
    assert "/admin/" not in page.url
    cookies = {c["name"] for c in await page.context.cookies()}
    assert "flowbus_session" not in cookies


async def test_id_token_checks(provider):
    now = int(time.time())
    p = oidc.Provider(provider.issuer, "flowbus", "secret-du-client", "preferred_username")
    async with aiohttp.ClientSession() as http:
        def token(**over):
            claims = {"iss": provider.issuer, "aud": "flowbus", "iat": now, "exp": now + 60, "nonce": "n1",
                      "preferred_username": "camille", **over}
            return jwt.encode({"alg": "RS256", "kid": "cle-1"}, claims, provider.key)
        assert (await oidc.check_id_token(http, p, token(), nonce="n1"))["preferred_username"] == "camille"
        for claims, nonce, expected in [({"iss": "http://autre"}, "n1", "invalide"),
                                        ({}, "n2", "invalide"),
                                        ({"aud": ["flowbus", "autre"]}, "n1", "azp"),
                                        ({"preferred_username": ""}, "n1", "ne contient pas")]:
            with pytest.raises(SsoRefused, match=expected):
                await oidc.check_id_token(http, p, token(**claims), nonce=nonce)
        # alg none and HS256 signed with the public key are never accepted
        header = jwt.encode({"alg": "RS256", "kid": "cle-1"}, {"x": 1}, provider.key).split(".")[0]
        import base64
        import json
        none = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps({"iss": provider.issuer, "aud": "flowbus", "iat": now,
                                                    "exp": now + 60, "nonce": "n1",
                                                    "preferred_username": "camille"}).encode()).rstrip(b"=").decode()
        assert header
        with pytest.raises(SsoRefused, match="signature ou algorithme refusé"):
            await oidc.check_id_token(http, p, f"{none}.{body}.", nonce="n1")
