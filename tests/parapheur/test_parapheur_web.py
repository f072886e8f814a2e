"""The signer pages over plain HTTP: sessions, CSRF, who sees what, file headers, outside signer, delegations."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import aiohttp

from flowbus import documents
from flowbus.signature import parapheur
from flowbus.signature.parapheur_demo import seed_commune


def local_instance(pki) -> dict:
    return {"kind": "local", "settings": {"seal_p12_path": str(pki.seal_p12), "seal_password": pki.password,
                                          "circuit": "Délibérations"}}


async def _chunks(data: bytes):
    yield data


async def login(url: str, login_: str, password: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await http.post("/parapheur/connexion", data={"login": login_, "password": password}, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/parapheur/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/parapheur" in cookie
    return http


async def csrf_of(http, path) -> str:
    page = await (await http.get(path)).text()
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def test_signer_pages(seal_pki, acte_pdf, deliberation_runtime, server_factory, wait_state):
    rt = await deliberation_runtime(local_instance(seal_pki))
    server = await server_factory(rt)
    c = await seed_commune(rt)
    doc = await documents.create_document(rt, entity_id=c["entity"].id, flow_id="deliberation", actor="test", fields={
        "objet": "Tarifs de la piscine", "nature": "1", "numero_acte": "DEL2026_20", "date_decision": "2026-03-02",
        "classification": "7.1"})
    await documents.attach_file(rt, doc.id, "arrete", filename="acte.pdf", media_type="application/pdf",
                                chunks=_chunks(acte_pdf), actor="test")
    await documents.attach_file(rt, doc.id, "annexes", filename="grille.html", media_type="text/html",
                                chunks=_chunks(b"<script>alert(1)</script>"), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    await wait_state(rt, doc.id, "waiting")

    async with aiohttp.ClientSession(base_url=server.url) as anon:
        r = await anon.get("/parapheur/", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/parapheur/connexion"
        r = await anon.post("/parapheur/connexion", data={"login": c["dgs"].login, "password": "faux"})
        assert r.status == 401 and "Identifiant ou mot de passe incorrect." in await r.text()

    dgs = await login(server.url, c["dgs"].login, "dgs-motdepasse")
    maire = await login(server.url, c["maire"].login, "maire-motdepasse")
    try:
        for _ in range(200):
            inbox = await (await dgs.get("/parapheur/")).text()
            if "Tarifs de la piscine" in inbox:
                break
            await asyncio.sleep(0.05)
        task_id = re.search(r'href="/parapheur/taches/([0-9a-f]+)"', inbox).group(1)
        # the mayor cannot open the DGS's task nor its document yet
        r = await maire.get(f"/parapheur/taches/{task_id}")
        assert r.status == 403 and "pas dans votre parapheur" in await r.text()
        assert (await maire.get(f"/parapheur/taches/{task_id}/document")).status == 403
        # the PDF is inline for the viewer; an HTML annex is an attachment in a sandbox
        r = await dgs.get(f"/parapheur/taches/{task_id}/document")
        assert r.headers["Content-Type"] == "application/pdf" and r.headers["Content-Disposition"].startswith("inline")
        assert await r.read() == acte_pdf
        r = await dgs.get(f"/parapheur/taches/{task_id}/document", params={"annexe": "0"})
        assert r.headers["Content-Disposition"].startswith("attachment")
        assert r.headers["Content-Security-Policy"] == "sandbox"
        # a form without the session's CSRF token is refused and changes nothing
        r = await dgs.post(f"/parapheur/taches/{task_id}/decision", data={"decision": "approve"})
        assert r.status == 403
        csrf = await csrf_of(dgs, f"/parapheur/taches/{task_id}")
        r = await dgs.post(f"/parapheur/taches/{task_id}/decision",
                           data={"decision": "reject", "comment": "", "csrf": csrf}, allow_redirects=False)
        assert r.status == 303 and "motiv" in r.headers["Location"]
        r = await dgs.post(f"/parapheur/taches/{task_id}/decision", data={"decision": "approve", "csrf": csrf})
        assert "Dossier visé." in await r.text()

        # delegations: the mayor delegates her desk to the first deputy for a week
        csrf_m = await csrf_of(maire, "/parapheur/delegations")
        today = rt.clock.now().date()
        r = await maire.post("/parapheur/delegations", data={
            "csrf": csrf_m, "bureau": c["desk_maire"].id, "vers": c["desk_adjoint"].id,
            "debut": today.isoformat(), "fin": (today + timedelta(days=7)).isoformat()})
        assert "Délégation enregistrée." in await r.text()
        r = await maire.post("/parapheur/delegations", data={
            "csrf": csrf_m, "bureau": c["desk_dgs"].id, "vers": c["desk_adjoint"].id,
            "debut": today.isoformat(), "fin": today.isoformat()})
        assert "Vous ne pouvez déléguer que vos bureaux." in await r.text()
        adjoint = await login(server.url, c["adjoint"].login, "adjoint-motdepasse")
        try:
            inbox = await (await adjoint.get("/parapheur/")).text()
            assert "Tarifs de la piscine" in inbox and "(par délégation)" in inbox
        finally:
            await adjoint.close()

        # signing out ends the session on the server
        csrf = await csrf_of(dgs, "/parapheur/delegations")
        await dgs.post("/parapheur/deconnexion", data={"csrf": csrf})
        r = await dgs.get("/parapheur/", allow_redirects=False)
        assert r.status == 302
    finally:
        await dgs.close()
        await maire.close()


async def test_outside_signer_pages(seal_pki, acte_pdf, deliberation_runtime, server_factory):
    from flowbus.blobs.base import put_bytes
    from flowbus.signature.parapheur_actions import Actor, decide
    rt = await deliberation_runtime(local_instance(seal_pki))
    server = await server_factory(rt)
    c = await seed_commune(rt)
    blob = await put_bytes(rt.blobs, acte_pdf)
    async with rt.store.transaction() as tx:
        circuit = await parapheur.get_circuit(tx, c["entity"].id, "Convention")
        await parapheur.create_folder(tx, entity_id=c["entity"].id, document_id="doc-x", step_id="signature",
                                      instance_id="parapheur", idem_key="doc-x:signature:1", title="Convention",
                                      circuit=circuit, filename="convention.pdf", media_type="application/pdf",
                                      blob=blob, annexes=[], now=rt.clock.now())
        [item] = await parapheur.inbox(tx, c["maire"], rt.clock.now())
    result = await decide(rt, item.task.id, "approve",
                          Actor(f"signataire:{c['maire'].login}", c["maire"].name, signer=c["maire"]))
    token = result.external_link_token
    async with aiohttp.ClientSession(base_url=server.url) as outside:
        page = await (await outside.get(f"/parapheur/externe/{token}")).text()
        assert "Bonjour Sophie Leroy" in page and "Convention" in page
        pdf = await (await outside.get(f"/parapheur/externe/{token}/document")).read()
        assert pdf.startswith(acte_pdf)  # already sealed once by the mayor's step
        r = await outside.post(f"/parapheur/externe/{token}/decision", data={"decision": "approve"})
        assert "votre signature a été enregistrée" in await r.text()
        r = await outside.get(f"/parapheur/externe/{token}")
        assert r.status == 404  # the link is spent
        assert (await outside.get("/parapheur/externe/inconnu")).status == 404
