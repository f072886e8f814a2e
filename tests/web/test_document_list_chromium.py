"""The document list in headless Chromium: counts by state, date filters, per-flow columns, CSV export,
a batch retry of 50 documents in error with a result per document, ticked documents as a zip."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import timedelta

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant
from tests.support.pdfs import pdf
from flowbus.store import repo
from flowbus.connectors.mailsec.templates import de_mois
from flowbus.web.french import date_fr
from tests.support.pdfs import pdf


async def _one(data: bytes):
    yield data


@pytest.mark.chromium
async def test_fifty_documents_in_error_are_retried_in_one_batch(runtime_factory, server_factory, engine_config,
                                                                browser, wait_state, people, screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune de Lots", siren=None, parent=None, actor_name="t")
    broken = []
    for n in range(50):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="broken",
                                              fields={"title": f"Arrêté en panne n°{n}"}, actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        broken.append(doc.id)
    for doc_id in broken:
        await wait_state(rt, doc_id, "error", timeout=60)
    for n in range(3):
        await documents.create_document(rt, entity_id=ent.id, flow_id="four",
                                        fields={"title": f"Brouillon {n}", "skip_third": n == 0}, actor="t")

    await people.admin(rt, "camille")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "camille")
    counts = page.get_by_role("navigation", name="Nombre de documents par état")
    assert "En erreur : 50" in await counts.inner_text() and "Brouillon : 3" in await counts.inner_text()
    await counts.get_by_role("link", name="En erreur : 50").click()
    await screenshots(page, "documents-en-erreur")
    await page.check("#tous")
    await page.select_option("#action", "retry")
    await page.get_by_role("button", name="Lancer").click()
    await page.wait_for_url(re.compile(r"/admin/lots/[0-9a-f]{32}$"))
    status = page.get_by_role("status")
    await status.get_by_text("Terminée le").wait_for(timeout=60_000)  # the page refreshes itself until then
    assert "50 réussis, 0 en échec ou refusé" in await status.inner_text()
    results = await page.locator("table.stack tbody tr").all_inner_texts()
    assert len(results) == 50 and all("Fait" in r for r in results)
    await screenshots(page, "action-groupee")
    async with rt.store.transaction() as tx:
        for doc_id in broken:
            actions = [e for e in await _journal(tx, doc_id) if e.kind == "admin.action"]
            assert [(e.actor, e.data["action"]) for e in actions][-1] == ("user:camille", "retry"), actions

    # two drafts ticked, a refusal for the one already sent, a result per document
    await page.goto(f"{srv.url}/admin/?flow=four")
    headers = await page.locator("table.stack thead th").all_inner_texts()
    assert "Sauter la 3e" in headers and "Flux" not in headers, "the flow's columns replace the flow column"
    assert "Oui" in await page.locator("table.stack tbody").inner_text()
    await page.get_by_label("Choisir « Brouillon 0 »").check()
    await page.get_by_label("Choisir « Brouillon 1 »").check()
    await page.select_option("#action", "start")
    await page.get_by_role("button", name="Lancer").click()
    await page.get_by_role("status").get_by_text("Terminée le").wait_for(timeout=30_000)
    assert "2 réussis" in await page.get_by_role("status").inner_text()
    await page.goto(f"{srv.url}/admin/?flow=four")
    await page.get_by_label("Choisir « Brouillon 0 »").check()
    await page.select_option("#action", "start")
    await page.get_by_role("button", name="Lancer").click()
    await page.get_by_role("status").get_by_text("Terminée le").wait_for(timeout=30_000)
    row = await page.locator("table.stack tbody tr").first.inner_text()
    assert "Échec" in row and "seul un brouillon peut être envoyé" in row


async def _journal(tx, doc_id):
    from flowbus import journal
    return await journal.for_document(tx, doc_id)


@pytest.mark.chromium
async def test_dates_csv_and_zip_from_the_list(runtime_factory, server_factory, engine_config, browser, people,
                                               screenshots, tmp_path):
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune d'Export", siren=None, parent=None, actor_name="t")
    other = await create_entity(rt, name="Commune voisine", siren=None, parent=None, actor_name="t")
    now = rt.clock.now()
    ids = []
    for n in range(6):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="demo",
                                              fields={"title": f"Arrêté « {n} » ; virgule, guillemet \""}, actor="t")
        await documents.attach_file(rt, doc.id, "file", filename=f"arrete-{n}.pdf", media_type="application/pdf",
                                    chunks=_one(pdf(f"arrêté {n}")), actor="t")
        ids.append(doc.id)
    await documents.create_document(rt, entity_id=other.id, flow_id="demo", fields={"title": "Pas à moi"}, actor="t")
    async with rt.store.transaction() as tx:  # three of them were created ten days ago
        for doc_id in ids[:3]:
            await tx.execute("UPDATE documents SET created_at = $1 WHERE id = $2",
                             (now - timedelta(days=10)).isoformat(), doc_id)
    await people.user(rt, "agent", grants=(Grant(ent.id, "editor"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent")
    ten_days_ago = (now - timedelta(days=10)).date()
    await page.fill("#du", ten_days_ago.isoformat())
    await page.fill("#au", ten_days_ago.isoformat())
    await page.get_by_role("button", name="Rechercher").click()
    rows = page.locator("table.stack tbody tr")
    assert await rows.count() == 3
    assert date_fr(ten_days_ago) in await rows.first.inner_text(), "dates read in French"
    assert re.search(r"\d{1,2}(er)? \w+ \d{4} à \d{1,2} h \d{2}", await rows.first.inner_text())

    async with page.expect_download() as info:
        await page.get_by_role("link", name="Exporter ces documents (CSV)").click()
    text = (await (await info.value).path()).read_bytes().decode("utf-8-sig")
    table = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert table[0][:4] == ["Document", "Collectivité", "Flux", "État"]
    assert len(table) == 4 and {r[-1] for r in table[1:]} == set(ids[:3])
    assert table[1][0].startswith("Arrêté « ") and table[1][0].endswith('virgule, guillemet "')
    assert table[1][1] == "Commune d'Export" and table[1][3] == "Brouillon"

    # a bad date is named, the rest of the filter still applies
    await page.goto(f"{srv.url}/admin/?du=2026-13-45")
    assert "Date invalide « 2026-13-45 »" in await page.get_by_role("alert").inner_text()
    assert await rows.count() == 6, "the neighbour's document stays out of sight"

    await page.get_by_label("Choisir « " + "Arrêté « 4 » ; virgule, guillemet \"" + " »").check()
    await page.get_by_label("Choisir « " + "Arrêté « 5 » ; virgule, guillemet \"" + " »").check()
    await page.select_option("#action", "zip")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Lancer").click()
    with zipfile.ZipFile(await (await info.value).path()) as zf:
        names = sorted(zf.namelist())
        assert len(names) == 2 and all(n.endswith(".pdf") for n in names)
        assert {zf.read(n) for n in names} == {pdf("arrêté 4"), pdf("arrêté 5")}
    await screenshots(page, "documents-filtres")
    assert de_mois("2026-10") == "d'octobre 2026" and de_mois("2026-12") == "de décembre 2026"
    assert de_mois("2026-04") == "d'avril 2026" and de_mois("2026-08") == "d'août 2026"


@pytest.mark.parametrize("backend", ["embedded", "scaleout"])
async def test_counts_by_state_are_bounded_and_use_the_state_index(backend, runtime_factory):
    rt = await runtime_factory(backend, workers=False)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    for n in range(7):
        await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": f"d{n}"}, actor="t")
    async with rt.store.transaction() as tx:
        counts = await repo.count_documents_by_state(tx, ["draft", "error"], scope=None, entity_ids=[ent.id],
                                                     flow=None, since=None, until=None, cap=5)
        assert counts == {"draft": 6, "error": 0}, "stops at cap + 1"
        if backend == "embedded":
            plan = " ".join(str(r) for r in await tx.fetch(
                "EXPLAIN QUERY PLAN SELECT 1 FROM documents WHERE entity_id IN ($1) AND state = $2 LIMIT 1001",
                ent.id, "error"))
            assert "documents_state_entity" in plan and "SCAN documents" not in plan, plan
        # PostgreSQL's plans are only meaningful with realistic statistics: tests/core/test_document_list_plans.py
        # checks the counts' SQL on 20,000 skewed rows after ANALYZE


@pytest.mark.chromium
async def test_pages_carry_security_headers_and_no_inline_script_is_blocked(runtime_factory, server_factory,
                                                                          engine_config, browser, people):
    rt = await runtime_factory("embedded", config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": "Arrêté"},
                                          actor="t")

    async def pdf_chunks():
        yield pdf("Arrêté")

    await documents.attach_file(rt, doc.id, "file", filename="arrete.pdf", media_type="application/pdf",
                                chunks=pdf_chunks(), actor="t")
    await people.admin(rt, "prudente")
    page = await browser.new_page()
    # the listener is injected by the browser itself (not an inline script the policy would block)
    await page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                               "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    await people.sign_in(page, srv.url, "prudente")
    pages = ("/admin/", "/admin/documents/nouveau", "/compte/notifications", "/admin/collectivites",
             "/admin/personnes", "/admin/connecteurs", "/admin/flux", "/admin/journal", "/admin/operations",
             "/admin/cles", "/admin/carnet", f"/admin/documents/{doc.id}", "/admin/flux/four")
    for path in pages:
        response = await page.goto(f"{srv.url}{path}")
        assert response.status == 200, path
        h = response.headers
        csp = h["content-security-policy"]
        assert csp.startswith("default-src 'self'; script-src 'self'; style-src 'self'") and \
            "frame-ancestors 'none'" in csp, (path, csp)
        assert ("'unsafe-inline'" in csp) == (path == "/admin/flux/four"), (path, csp)  # Mermaid's page only
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer", path
        assert h["x-content-type-options"] == "nosniff" and "strict-transport-security" not in h, path
        assert await page.evaluate("window.__csp") == [], (path, await page.evaluate("window.__csp"))
    await page.wait_for_selector("#diagramme svg", timeout=15_000)  # the vendored Mermaid still draws
    # the PDF preview may be framed by our own page only; a download runs nothing
    preview = await page.request.get(f"{srv.url}/admin/documents/{doc.id}/files/file?apercu=1")
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"
    download = await page.request.get(f"{srv.url}/admin/documents/{doc.id}/files/file")
    assert download.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in download.headers["content-security-policy"]


@pytest.mark.chromium
async def test_refusal_states_named_by_flows_count_and_filter_as_refused(runtime_factory, server_factory,
                                                                        engine_config, browser, people, wait_state):
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune Refusée", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="refusal", fields={"title": "Refusé"},
                                          actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    await wait_state(rt, doc.id, "refuse", timeout=30)
    await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": "Brouillon"}, actor="t")
    await people.admin(rt, "lectrice")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "lectrice")
    counts = page.get_by_role("navigation", name="Nombre de documents par état")
    assert "Refusé : 1" in await counts.inner_text(), "a flow's own refusal state counts as refused"
    await counts.get_by_role("link", name="Refusé : 1").click()
    rows = await page.locator("section[aria-labelledby=liste] tbody tr").all_inner_texts()
    assert len(rows) == 1 and "Refusé" in rows[0]


@pytest.mark.chromium
async def test_stored_markup_never_runs_in_any_page(runtime_factory, server_factory, engine_config, browser,
                                                    people, wait_state):
    """A hostile agent's markup in a field, a file name and a comment is shown as text on every page that shows
    it; nothing runs (escaping, and the policy behind it)."""
    rt = await runtime_factory("embedded", config_dir=engine_config)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune <b>gras</b>", siren=None, parent=None, actor_name="t")
    payload = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": payload},
                                          actor="t")

    async def chunks():
        yield pdf("Piège")

    await documents.attach_file(rt, doc.id, "file", filename='"><img src=x onerror="window.__xss=3">.pdf',
                                media_type="application/pdf", chunks=chunks(), actor="t")
    await documents.run_action(rt, doc.id, "cancel", actor="t", comment='<svg onload="window.__xss=4">')
    await people.admin(rt, "vigilante")
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await people.sign_in(page, srv.url, "vigilante")
    for path in ("/admin/", f"/admin/documents/{doc.id}", f"/admin/journal?collectivite={ent.id}",
                 f"/admin/collectivites/{ent.id}", "/admin/collectivites"):
        await page.goto(f"{srv.url}{path}")
        await page.wait_for_load_state("load")
        assert await page.evaluate("window.__xss") is None, path
    html = await (await page.goto(f"{srv.url}/admin/documents/{doc.id}")).text()
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html and "<script>window.__xss" not in html
    assert payload in await page.inner_text("main"), "shown as the text it is"
    assert dialogs == []
