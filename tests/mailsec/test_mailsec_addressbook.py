"""The secure-mail address book: a CSV imported in the browser (bad lines named, good ones kept), contacts
suggested in the document form, and a group written « groupe:<nom> » as a step's recipients — the
nearest collectivité's group wins, a missing group stops the step with a French error."""

from __future__ import annotations

import pytest

from flowbus import addressbook, documents
from flowbus.api.entities import create_entity
from flowbus.connectors.mailsec.steps import MailsecParams, recipient_addresses
from flowbus.people.access import Grant
from tests.support.pdfs import pdf

CSV = ("nom;courriel;groupes\n"
       "Jeanne Martin;jeanne.martin@mairie.fr;Élus,Conseil municipal\n"
       "Luc Bernard;LUC.BERNARD@mairie.fr;Conseil municipal\n"
       "Sans adresse;pas-une-adresse;Élus\n"
       "Paul Durand;paul.durand@mairie.fr\n").encode("utf-8")


@pytest.mark.chromium
async def test_import_in_the_browser_and_suggestions_in_the_form(runtime_factory, server_factory, browser, people,
                                                                 tmp_path, screenshots):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune du Carnet", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.carnet", grants=(Grant(commune.id, "editor"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.carnet")
    await page.get_by_role("link", name="Carnet d'adresses").click()
    await page.get_by_role("button", name="Afficher").click()
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_bytes(CSV)
    await page.set_input_files("#fichier", str(csv_file))
    await page.get_by_role("button", name="Importer").click()
    alert = await page.inner_text("[role=alert]")
    assert "3 contact(s) ajouté(s), 0 mis à jour, 1 ligne(s) refusée(s)" in alert
    assert "ligne 4 : Adresse électronique invalide « pas-une-adresse »" in alert
    rows = await page.locator("section[aria-labelledby=contacts] tbody tr").all_inner_texts()
    assert len(rows) == 3 and any("luc.bernard@mairie.fr" in r for r in rows), "addresses kept in lower case"
    groups = await page.inner_text("section[aria-labelledby=groupes]")
    assert "groupe:Conseil municipal — 2 contacts" in groups and "groupe:Élus — 1 contact" in groups
    await screenshots(page, "carnet-adresses")

    await page.goto(f"{srv.url}/admin/documents/nouveau?collectivite={commune.id}&flux=cimetiere")
    options = await page.locator("datalist#carnet option").evaluate_all("(os) => os.map(o => o.value)")
    assert sorted(options) == ["jeanne.martin@mairie.fr", "luc.bernard@mairie.fr", "paul.durand@mairie.fr"]
    assert await page.get_attribute("#f-famille_email", "list") == "carnet"


async def test_groups_as_recipients_nearest_book_wins(runtime_factory):
    rt = await runtime_factory("embedded", workers=False)
    syndicat = await create_entity(rt, name="Syndicat", siren=None, parent=None, actor_name="t")
    commune = await create_entity(rt, name="Commune membre", siren=None, parent=syndicat.id, actor_name="t")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        await addressbook.save_contact(tx, syndicat.id, name="DSI", email="dsi@syndicat.fr", groups=["Informatique"],
                                       now=now)
        await addressbook.save_contact(tx, syndicat.id, name="Élu S", email="elu@syndicat.fr", groups=["Élus"],
                                       now=now)
        await addressbook.save_contact(tx, commune.id, name="Maire", email="maire@commune.fr",
                                       groups=["Élus", "Conseil municipal"], now=now)
        groups = await addressbook.expand(tx, commune.id, ["Élus", "Informatique"])
        with pytest.raises(Exception, match="Le groupe « Inconnu » n'existe pas dans le carnet d'adresses de "
                                            "« Commune membre » ni au-dessus"):
            await addressbook.expand(tx, commune.id, ["Inconnu"])
    assert groups == {"Élus": ["maire@commune.fr"], "Informatique": ["dsi@syndicat.fr"]}
    params = MailsecParams.parse({"to": ["groupe:Élus", "destinataires"], "cc": ["groupe:Informatique"]})
    got = recipient_addresses(params, {"destinataires": "maire@commune.fr; autre@commune.fr"}, groups)
    assert got == [("to", "maire@commune.fr"), ("to", "autre@commune.fr"), ("cc", "dsi@syndicat.fr")]


async def test_a_step_addressed_to_a_group_sends_to_each_member(runtime_factory, tmp_path, smtp, mailsec_config,
                                                               wait_state):
    flow = (mailsec_config / "flows" / "rh-paie.yml").read_text(encoding="utf-8")
    assert "to: [agent_email]" in flow, "the shipped payslip flow addresses the agent's field"
    (mailsec_config / "flows" / "rh-paie.yml").write_text(
        flow.replace("to: [agent_email]", 'to: [agent_email, "groupe:Service RH"]'), encoding="utf-8")
    rt = await runtime_factory("embedded", config_dir=mailsec_config)
    ville = await create_entity(rt, name="Ville des Groupes", siren=None, parent=None, actor_name="t")
    async with rt.store.transaction() as tx:
        for name in ("drh", "gestionnaire"):
            await addressbook.save_contact(tx, ville.id, name=name, email=f"{name}@ville.fr", groups=["Service RH"],
                                           now=rt.clock.now())

    async def chunks():
        yield pdf("bulletin")
    doc = await documents.create_document(rt, entity_id=ville.id, flow_id="rh-paie", actor="t", fields={
        "agent_nom": "Agent", "agent_email": "agent@agents.example.fr", "matricule": "M1", "periode": "2026-11"})
    await documents.attach_file(rt, doc.id, "bulletin", filename="b.pdf", media_type="application/pdf",
                                chunks=chunks(), actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    done = await wait_state(rt, doc.id, "done", timeout=60)
    assert done.fields["mailsec_sent"] == 3
    for address in ("agent@agents.example.fr", "drh@ville.fr", "gestionnaire@ville.fr"):
        assert smtp.to(address), address
