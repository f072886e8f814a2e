"""Password sign-in in headless Chromium and over HTTP: wrong password, lockout, CSRF, single-use links, forced change."""

from __future__ import annotations

import re

import aiohttp
import pytest

from flowbus.people import accounts, links, throttle
from flowbus.people.access import EVERY_ENTITY, Grant

pytestmark = pytest.mark.chromium


async def _csrf_of(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        html = await resp.text()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def test_sign_in_wrong_password_then_right_then_sign_out(runtime_factory, server_factory, browser, people,
                                                            screenshots):
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    await people.admin(rt, "camille")
    page = await browser.new_page()
    await page.goto(f"{srv.url}/admin/documents/inconnu")
    assert "/connexion?suivant=" in page.url
    await screenshots(page, "signin")
    await page.fill("#login", "camille")
    await page.fill("#password", "pas-le-bon-mot-de-passe")
    await page.click("button[type=submit]")
    assert await page.inner_text("[role=alert]") == "Identifiant ou mot de passe incorrect."
    assert await page.get_attribute("#login", "value") == "camille"
    await page.fill("#password", people.password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/admin/documents/inconnu")  # back where the person was going
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["flowbus_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    await page.goto(f"{srv.url}/admin/")
    assert "Camille Admin" in await page.inner_text("header")
    await page.get_by_role("button", name="Se déconnecter").click()
    await page.wait_for_url(f"{srv.url}/connexion*")
    assert await page.inner_text("[role=status]") == "Vous êtes déconnecté."
    await page.goto(f"{srv.url}/admin/")
    assert "/connexion" in page.url
    async with rt.store.transaction() as tx:
        kinds = [r["kind"] for r in await tx.fetch("SELECT kind FROM journal WHERE entity_id = 'platform'")]
    assert "user.signed_in" in kinds


async def test_ten_wrong_passwords_lock_the_account(runtime_factory, server_factory, people):
    # one address is refused after 8 failures (flowbus.people.limits); the account lock is what a guesser
    # spreading over many addresses meets: raised here so that one test address reaches it
    rt = await runtime_factory("embedded", auth_address_max=50)
    srv = await server_factory(rt)
    await people.user(rt, "dominique", grants=(Grant(EVERY_ENTITY, "reader"),))
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for attempt in range(1, throttle.MAX_FAILURES + 1):
            csrf = await _csrf_of(http, "/connexion")
            async with http.post("/connexion", data={"login": "dominique", "password": f"faux-{attempt}",
                                                     "csrf": csrf}, allow_redirects=False) as resp:
                assert resp.status == 401
                text = await resp.text()
        assert "Compte verrouillé après 10 tentatives infructueuses" in text
        # the right password no longer opens it while it is locked
        csrf = await _csrf_of(http, "/connexion")
        async with http.post("/connexion", data={"login": "dominique", "password": people.password, "csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 401 and "Compte verrouillé" in await resp.text()
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, "dominique")
        assert throttle.is_locked(user, rt.clock.now())
        kinds = [r["kind"] for r in await tx.fetch("SELECT kind FROM journal WHERE entity_id = 'platform'")]
    assert "user.locked" in kinds
    # the operator's reset link unlocks it
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE users SET locked_until = NULL WHERE id = $1", user.id)
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await _csrf_of(http, "/connexion")
        async with http.post("/connexion", data={"login": "dominique", "password": people.password, "csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/admin/"


async def test_a_form_without_its_csrf_token_is_refused(runtime_factory, server_factory, people, engine_config):
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    await people.admin(rt, "camille")
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post("/connexion", data={"login": "camille", "password": people.password},
                             allow_redirects=False) as resp:
            assert resp.status == 403
            assert "jeton de sécurité absent ou invalide" in await resp.text()
        csrf = await _csrf_of(http, "/connexion")
        async with http.post("/connexion", data={"login": "camille", "password": people.password, "csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 302
        # signed in: a console form without the session's token, or with the pre-session one, is refused
        for token in (None, csrf):
            data = {"csrf": token} if token else {}
            async with http.post("/deconnexion", data=data, allow_redirects=False) as resp:
                assert resp.status == 403
        session_csrf = await _csrf_of(http, "/admin/")
        assert session_csrf != csrf
        async with http.post("/deconnexion", data={"csrf": session_csrf}, allow_redirects=False) as resp:
            assert resp.status == 302
        # the API with the session cookie: reading works, changing needs X-CSRF-Token
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await _csrf_of(http, "/connexion")
        await http.post("/connexion", data={"login": "camille", "password": people.password, "csrf": csrf})
        session_csrf = await _csrf_of(http, "/admin/")
        async with http.get("/api/v1/entities") as resp:
            assert resp.status == 200
        body = {"name": "Commune de Jetons"}
        async with http.post("/api/v1/entities", json=body) as resp:
            assert resp.status == 403 and (await resp.json())["field"] == "X-CSRF-Token"
        async with http.post("/api/v1/entities", json=body, headers={"X-CSRF-Token": session_csrf}) as resp:
            assert resp.status == 201


async def test_reset_link_works_once_and_the_mail_is_sent(runtime_factory, server_factory, browser, people,
                                                          smtp_server, screenshots):
    rt = await runtime_factory("embedded", smtp_host="127.0.0.1", smtp_port=smtp_server.port,
                               public_url="")
    srv = await server_factory(rt)
    await people.user(rt, "elodie", name="Élodie Martin", email="elodie@commune.fr",
                      grants=(Grant(EVERY_ENTITY, "reader"),))
    page = await browser.new_page()
    await page.goto(f"{srv.url}/connexion")
    await page.click("text=Mot de passe oublié ?")
    await page.fill("#login", "elodie@commune.fr")
    await screenshots(page, "password-forgot")
    await page.click("button[type=submit]")
    assert "Si un compte actif correspond" in await page.inner_text("[role=status]")
    [received] = smtp_server.received
    message = received.message()
    assert message["To"] == "elodie@commune.fr"
    assert message["Subject"] == "Réinitialisation de votre mot de passe flowbus"
    link = re.search(r"(http://\S+/mot-de-passe/nouveau/\S+)", received.text()).group(1)
    assert link.startswith(srv.url)
    await page.goto(link)
    assert "Compte « elodie »" in await page.inner_text("main")
    await page.fill("#password", "court")
    await page.fill("#confirm", "court")
    await page.evaluate("document.querySelectorAll('[minlength]').forEach(e => e.removeAttribute('minlength'))")
    await page.click("button[type=submit]")
    assert "au moins 12 caractères" in await page.inner_text("[role=alert]")
    await screenshots(page, "password-new-error")
    await page.fill("#password", "une-phrase-bien-longue-7")
    await page.fill("#confirm", "une-phrase-bien-longue-7")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/admin/")
    # the link worked once: a second use is refused
    other = await browser.new_page()
    await other.goto(link)
    assert "Lien expiré ou déjà utilisé" in await other.inner_text("h1")
    await screenshots(other, "password-link-used")
    # and the new password signs in
    await people.sign_in(other, srv.url, "elodie", "une-phrase-bien-longue-7")
    # an unknown address gets the same answer and no mail
    await other.goto(f"{srv.url}/mot-de-passe/oubli")
    await other.fill("#login", "personne@nulle.part")
    await other.click("button[type=submit]")
    assert "Si un compte actif correspond" in await other.inner_text("[role=status]")
    assert len(smtp_server.received) == 1


async def test_forgot_password_says_when_mail_is_not_configured(runtime_factory, server_factory, browser):
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    page = await browser.new_page()
    await page.goto(f"{srv.url}/mot-de-passe/oubli")
    assert "L'envoi de courriels n'est pas configuré" in await page.inner_text("[role=alert]")


async def test_first_password_must_be_changed(runtime_factory, server_factory, browser, people, screenshots):
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    await people.user(rt, "florent", grants=(Grant(EVERY_ENTITY, "reader"),), must_change=True)
    page = await browser.new_page()
    await page.goto(f"{srv.url}/connexion")
    await page.fill("#login", "florent")
    await page.fill("#password", people.password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/mot-de-passe/changer")
    assert "choisissez votre propre mot de passe" in await page.inner_text("[role=status]")
    await screenshots(page, "password-change-forced")
    await page.goto(f"{srv.url}/admin/")
    assert page.url.endswith("/mot-de-passe/changer")  # nothing else until it is changed
    resp = await page.request.get(f"{srv.url}/api/v1/entities")  # the API with this session neither
    assert resp.status == 403 and (await resp.json())["field"] == "password"
    await page.fill("#current", people.password)
    await page.fill("#password", people.password)
    await page.fill("#confirm", people.password)
    await page.click("button[type=submit]")
    assert "différent de l'actuel" in await page.inner_text("[role=alert]")
    await page.fill("#current", people.password)
    await page.fill("#password", "mon-propre-secret-2026")
    await page.fill("#confirm", "mon-propre-secret-2026")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/admin/*")
    assert "Votre mot de passe a été changé." in await page.inner_text("[role=status]")


async def test_first_administrator_link_from_init(runtime_factory, server_factory, browser):
    from flowbus.people.bootstrap import ensure_first_admin
    rt = await runtime_factory("embedded")
    srv = await server_factory(rt)
    link = await ensure_first_admin(rt)
    assert link and link.startswith(rt.settings.base_url + links.PATH)
    assert await ensure_first_admin(rt) is None  # once
    page = await browser.new_page()
    await page.goto(link)
    await page.fill("#password", "premiere-cle-de-la-plateforme")
    await page.fill("#confirm", "premiere-cle-de-la-plateforme")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{srv.url}/admin/")
    assert "Administrateur de la plateforme" in await page.inner_text("header")


async def test_sign_in_with_the_keyboard_only(runtime_factory, server_factory, browser, people):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    await people.admin(rt, "camille")
    page = await browser.new_page()
    await page.goto(f"{srv.url}/connexion")
    assert await page.evaluate("document.activeElement.id") == "login"  # the form is ready to type in
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Shift+Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Aller au contenu"
    assert await page.evaluate("document.activeElement.getBoundingClientRect().left") >= 0  # shown when focused
    assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "login"
    await page.keyboard.type("camille")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "password"
    await page.keyboard.type(people.password)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{srv.url}/admin/")
    labels = []  # the menu is reachable from the keyboard too
    for _ in range(12):
        await page.keyboard.press("Tab")
        labels.append(await page.evaluate("document.activeElement.textContent.trim()"))
    assert "Collectivités" in labels and "Personnes" in labels
