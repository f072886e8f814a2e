"""Issue 16's first « Done when », in Chromium: an agent creates a délibération through the form with the act
and two annexes, is told in French at the field about a bad number, sends it, follows its route until the
préfecture (S²LOW simulator) acknowledges it, and downloads the AR."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from pathlib import Path

import pytest

from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus import notifications
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant
from flowbus.signature.textpdf import simple_pdf
from tests.tdt.test_tdt_e2e import s2low  # noqa: F401 - the simulator fixture

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.chromium


@pytest.fixture
def shipped_deliberation(tmp_path: Path, s2low) -> Path:  # noqa: F811
    """The shipped délibération flow (polling the AR every second) with its TdT bound to the simulator."""
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    text = (ROOT / "config" / "flows" / "deliberation.yml").read_text(encoding="utf-8")
    slow = "wait: {check_every: 15m, deadline: 10d}"
    assert slow in text, "the TdT step's wait policy of config/flows/deliberation.yml changed"
    (cfg / "flows" / "deliberation.yml").write_text(text.replace(slow, "wait: {check_every: 1s, deadline: 10d}"),
                                                    encoding="utf-8")
    (cfg / "connectors" / "tdt.yml").write_text(textwrap.dedent(f"""
        instances:
          - {{id: tdt-actes, family: tdt-actes, kind: s2low, entity: null,
              settings: {{url: "{s2low.url}", departement: "034", siren: "123456789", classification_ttl: 1d}}}}
          - {{id: parapheur, family: signature, kind: test, entity: null, settings: {{}}}}
          - {{id: publication, family: notify, kind: test, entity: null, settings: {{}}}}
          - {{id: sae, family: sae, kind: test, entity: null, settings: {{}}}}
        """), encoding="utf-8")
    shutil.copytree(ROOT / "config" / "mailsec", cfg / "mailsec", dirs_exist_ok=True)
    return cfg


async def test_agent_sends_a_deliberation_and_downloads_its_ar(runtime_factory, server_factory, shipped_deliberation,
                                                               browser, people, tmp_path, screenshots, smtp_server):
    rt = await runtime_factory("embedded", config_dir=shipped_deliberation, smtp_host="127.0.0.1",
                               smtp_port=smtp_server.port)
    await notifications.install(rt).start()
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune de l'Hérault", siren=None, parent=None, actor_name="t")
    agent = await people.user(rt, "agent.actes", email="actes@herault.fr",
                              grants=(Grant(commune.id, "editor", ("deliberation",)),))
    async with rt.store.transaction() as tx:  # the agent wants to know when the préfecture acknowledges
        await notifications.subscribe(tx, user_id=agent.id, entity_id=commune.id, flow_id="deliberation",
                                      event="acknowledged", mode="immediate", now=rt.clock.now())
    files = {"acte.pdf": ["Délibération n° DEL2026_40", "Objet : voirie"], "annexe-1.pdf": ["Annexe 1 : plan"],
             "annexe-2.pdf": ["Annexe 2 : devis"]}
    for name, lines in files.items():
        (tmp_path / name).write_bytes(simple_pdf(lines))

    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.actes")
    await page.goto(f"{srv.url}/admin/documents/nouveau?collectivite={commune.id}&flux=deliberation")
    await page.fill("#f-objet", "Travaux de voirie")
    await page.select_option("#f-nature", label="Délibération")
    await page.fill("#f-numero_acte", "DEL-2026-40")
    await page.fill("#f-date_decision", "2026-11-30")
    await page.fill("#f-classification", "7.1")
    await page.uncheck("#f-envoi_signature")
    await page.uncheck("#f-envoi_sae")
    await page.set_input_files("#f-arrete", str(tmp_path / "acte.pdf"))
    await page.set_input_files("#f-annexes", [str(tmp_path / "annexe-1.pdf"), str(tmp_path / "annexe-2.pdf")])
    await page.get_by_role("button", name="Envoyer").click()
    assert "n'a pas la forme attendue" in await page.inner_text("#e-numero_acte")
    await page.fill("#f-numero_acte", "DEL2026_40")
    await page.set_input_files("#f-arrete", str(tmp_path / "acte.pdf"))
    await page.set_input_files("#f-annexes", [str(tmp_path / "annexe-1.pdf"), str(tmp_path / "annexe-2.pdf")])
    await page.get_by_role("button", name="Envoyer").click()
    assert "Document envoyé" in await page.inner_text("[role=status]")

    tdt_step = page.locator("ol.route li", has_text="Télétransmission en préfecture (ACTES)")
    for _ in range(40):
        current = await tdt_step.inner_text()
        if "acquitté par la préfecture" in current or "en erreur" in current:
            break
        await asyncio.sleep(0.5)
        await page.reload()
    text = await tdt_step.inner_text()
    assert "acquitté par la préfecture (le " in text, (text, await page.locator("#erreur").all_inner_texts())
    assert await page.inner_text("#etat") == "Terminé"
    fields = await page.locator("th[scope=row]").all_inner_texts()  # what the TdT wrote, named for people
    assert "Identifiant de l'accusé de réception" in fields and "ar_identifier" not in fields, fields
    await screenshots(page, "deliberation-acquittee")
    ar_row = page.locator("tr", has_text="Accusé de réception de la préfecture")
    async with page.expect_download() as info:
        await ar_row.get_by_role("link").click()
    ar = parse_message((await (await info.value).path()).read_bytes())
    assert ar.event == "ar" and ar.id_acte.endswith("-DEL2026_40-DE") and ar.numero_interne == "DEL2026_40"
    for _ in range(100):
        if smtp_server.to("actes@herault.fr"):
            break
        await asyncio.sleep(0.05)
    [mail] = smtp_server.to("actes@herault.fr")
    assert mail.message()["Subject"] == "[flowbus] Acquitté : Travaux de voirie"
    assert "Télétransmission en préfecture (ACTES) : fait" in mail.message().get_content()


async def test_agent_asks_the_prefecture_to_cancel_an_acknowledged_act(runtime_factory, server_factory,
                                                                        shipped_deliberation, browser, people,
                                                                        wait_state, screenshots, s2low):  # noqa: F811
    """Issue 18: an annulation is sent from the document's button and acknowledged (the shipped flow
    « Annulation d'un acte transmis », its 6-2 AR kept)."""
    from flowbus import documents
    text = (ROOT / "config" / "flows" / "annulation-acte.yml").read_text(encoding="utf-8")
    (shipped_deliberation / "flows" / "annulation-acte.yml").write_text(
        text.replace("check_every: 15m", "check_every: 1s"), encoding="utf-8")
    rt = await runtime_factory("embedded", config_dir=shipped_deliberation)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune de l'Hérault", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.actes", grants=(Grant(commune.id, "editor"),))
    acte = await documents.create_document(rt, entity_id=commune.id, flow_id="deliberation", actor="t", fields={
        "objet": "Travaux de voirie", "nature": "1", "numero_acte": "DEL2026_41", "date_decision": "2026-11-30",
        "classification": "7.1", "envoi_signature": False, "envoi_publication": False, "envoi_sae": False})

    async def chunks():
        yield simple_pdf(["Délibération n° DEL2026_41"])

    await documents.attach_file(rt, acte.id, "arrete", filename="acte.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="t")
    await documents.run_action(rt, acte.id, "start", actor="t")
    await wait_state(rt, acte.id, "done", timeout=30)

    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.actes")
    await page.goto(f"{srv.url}/admin/documents/{acte.id}")
    await page.get_by_role("button", name="Demander l'annulation à la préfecture").click()
    assert "ne peut plus être retirée" in await page.inner_text("main")
    await screenshots(page, "annulation-confirm")
    await page.get_by_role("button", name="Oui, demander l'annulation").click()
    assert "Annulation de « Travaux de voirie » envoyée à la préfecture" in await page.inner_text("[role=status]")
    annulation_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    done = await wait_state(rt, annulation_id, "done", timeout=30)
    assert done.flow_id == "annulation-acte" and done.fields["acte_document_id"] == acte.id
    assert done.fields["tdt_status"] == "annule" and done.files_of("ar_annulation")
    assert parse_message(await rt.blobs.read(done.files_of("ar_annulation")[0].blob_key)).root == "ARAnnulation"
    assert s2low.count("cancel") == 1
    await page.reload()
    assert "Annulation d'un acte transmis" in await page.inner_text("main")
    fields = await page.inner_text("section[aria-labelledby=champs]") if await page.locator(
        "section[aria-labelledby=champs]").count() else await page.inner_text("main")
    assert "Annulé" in fields and acte.id not in fields, "the act by its title, the status in words"
    await page.get_by_role("link", name="Travaux de voirie").click()  # back to the act
    assert page.url.endswith(f"/admin/documents/{acte.id}")
    await page.go_back()
    await screenshots(page, "annulation-done")
