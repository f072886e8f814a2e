"""Connector instances in the console (Chromium): an SMTP and an S²LOW instance for a commune, configured from
their declared settings and pointed at the simulators; « Tester » green, then red in French after a wrong password."""

from __future__ import annotations

import json

import pytest

from flowbus.api.entities import create_entity
from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator

pytestmark = pytest.mark.chromium


async def _configure(page, url, entity_id, type_value, values: dict[str, str], instance_id: str | None) -> None:
    await page.goto(f"{url}/admin/connecteurs?collectivite={entity_id}")
    await page.select_option("#type", type_value)
    await page.click("section[aria-labelledby=ajouter] button[type=submit]")
    if instance_id:
        await page.fill("#id", instance_id)
    for name, value in values.items():
        tag = await page.evaluate(f"document.getElementById('f-{name}').tagName")
        if tag == "SELECT":
            await page.select_option(f"#f-{name}", value)
        else:
            await page.fill(f"#f-{name}", value)
    await page.get_by_role("button", name="Enregistrer").click()


async def test_admin_configures_smtp_and_s2low_and_tests_them(runtime_factory, server_factory, browser, people,
                                                             screenshots):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune des Connecteurs", siren=None, parent=None, actor_name="t")
    await people.admin(rt, "camille")
    s2low = S2lowSimulator(login="commune", password="mot-de-passe-s2low")
    s2low_url = await s2low.start()
    with SmtpSimulator(credentials=("flowbus", "mot-de-passe-smtp")) as smtp:
        page = await browser.new_page()
        await people.sign_in(page, srv.url, "camille")
        await page.get_by_role("link", name="Connecteurs").click()
        await page.fill("#collectivite", commune.id)
        await page.click("form.filters button[type=submit]")
        assert "Commune des Connecteurs" in await page.inner_text("h1")

        # a required field left empty, and a port that is not a number: refused at the field, nothing lost
        await page.goto(f"{srv.url}/admin/connecteurs?collectivite={commune.id}")
        await page.select_option("#type", "mailsec/smtp")
        await page.click("section[aria-labelledby=ajouter] button[type=submit]")
        await page.fill("#id", "mailsec")
        await page.fill("#f-host", "127.0.0.1")
        # what the browser would stop, the server refuses too (API clients, old browsers)
        await page.evaluate("document.querySelectorAll('[required]').forEach(e => e.removeAttribute('required'));"
                            "document.getElementById('f-port').type = 'text'")
        await page.fill("#f-port", "vingt-cinq")
        await page.get_by_role("button", name="Enregistrer").click()
        assert "« Port » doit être un nombre entier." in await page.inner_text("#e-port")
        assert await page.input_value("#f-host") == "127.0.0.1"  # nothing typed is lost
        await page.fill("#f-port", str(smtp.port))
        await page.evaluate("document.querySelectorAll('[required]').forEach(e => e.removeAttribute('required'))")
        await page.get_by_role("button", name="Enregistrer").click()
        assert "« Adresse d'expédition » est obligatoire." in await page.inner_text("#e-from_address")
        await page.fill("#f-from_address", "ne-pas-repondre@commune.fr")
        await page.fill("#f-username", "flowbus")
        await page.fill("#f-password", "mot-de-passe-smtp")
        await page.get_by_role("button", name="Enregistrer").click()
        assert "Connecteur « mailsec » enregistré." in await page.inner_text("[role=status]")

        await _configure(page, srv.url, commune.id, "tdt-actes/s2low",
                         {"url": s2low_url, "login": "commune", "password": "mot-de-passe-s2low"}, "tdt-actes")
        assert "Connecteur « tdt-actes » enregistré." in await page.inner_text("[role=status]")
        table = await page.inner_text("table")
        assert "Mail sécurisé — serveur SMTP" in table and "Télétransmission ACTES — S²LOW" in table
        assert "propre à cette collectivité" in table
        # the shipped test instances are inherited and say they send nothing
        assert "test : n'envoie rien" in table and "commun à toutes les collectivités" in table
        await screenshots(page, "console-connectors")

        await page.get_by_role("button", name="Tester le connecteur mailsec").click()
        status = await page.inner_text("[role=status]")
        assert "Test de « mailsec » : Le serveur SMTP 127.0.0.1" in status
        assert "authentifié en tant que « flowbus »" in status and "aucun message n'a été envoyé" in status
        assert smtp.received == [] and smtp.logins == ["flowbus"]
        await page.get_by_role("button", name="Tester le connecteur tdt-actes").click()
        assert "S²LOW" in await page.inner_text("[role=status]")
        assert "accepte la connexion" in await page.inner_text("[role=status]")

        # a wrong password: red, in French; the secret is never sent back to the browser
        await page.get_by_role("link", name="Modifier le connecteur mailsec").click()
        assert await page.input_value("#f-password") == ""
        assert "mot-de-passe-smtp" not in await page.content()
        assert "laisser vide pour le conserver" in await page.inner_text("main form")
        await screenshots(page, "console-connector-form")
        await page.get_by_role("button", name="Enregistrer").click()  # password kept
        await page.get_by_role("button", name="Tester le connecteur mailsec").click()
        assert "authentifié" in await page.inner_text("[role=status]")
        await page.get_by_role("link", name="Modifier le connecteur mailsec").click()
        await page.fill("#f-password", "mauvais-mot-de-passe")
        await page.get_by_role("button", name="Enregistrer").click()
        await page.get_by_role("button", name="Tester le connecteur mailsec").click()
        alert = await page.inner_text("[role=alert]")
        assert "Authentification refusée par le serveur SMTP (535)" in alert
        assert "vérifiez l'identifiant et le mot de passe" in alert
        await page.get_by_role("link", name="Modifier le connecteur tdt-actes").click()
        await page.fill("#f-password", "mauvais")
        await page.get_by_role("button", name="Enregistrer").click()
        await page.get_by_role("button", name="Tester le connecteur tdt-actes").click()
        assert "Authentification refusée par S²LOW" in await page.inner_text("[role=alert]")
        await screenshots(page, "console-connectors-red")
    # unreachable: another French message
    await s2low.stop()
    await page.get_by_role("button", name="Tester le connecteur tdt-actes").click()
    assert "S²LOW injoignable" in await page.inner_text("[role=alert]")

    # journaled with before/after, secrets masked
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT actor, data FROM journal WHERE entity_id = $1 AND kind = "
                              "'admin.connector.saved'", commune.id)
    assert rows and all(r["actor"] == "user:camille" for r in rows)
    text = json.dumps([r["data"] for r in rows], ensure_ascii=False)
    assert "mot-de-passe-smtp" not in text and "mauvais" not in text
