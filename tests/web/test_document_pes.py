"""The PES viewer over HTTP on both backend sets (files streamed from the filesystem and from S3): « Visualiser le PES »
on the document page for every PES_Aller (declared by its field, or found by its root element) and for nothing
else; the page shows every bordereau, pièce and amount; each PJ downloads decoded; the document's reading right
is the viewer's; unreadable and oversized files are refused in French."""

from __future__ import annotations

import re
from html import unescape

import aiohttp
import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.people.access import Grant
from tests.support.pdfs import pdf
from tests.support.pes import PJ, pes_aller

FACTURE = pdf("Facture FACT20260001 — Papeterie du Midi")
CONVENTION = "Convention de location de la salle des fêtes\n".encode() * 50


async def _one(data: bytes):
    yield data


async def _document(rt, entity, flow: str, fields: dict, field: str, name: str, media: str, data: bytes):
    doc = await documents.create_document(rt, entity_id=entity.id, flow_id=flow, fields=fields, actor="t")
    await documents.attach_file(rt, doc.id, field, filename=name, media_type=media, chunks=_one(data), actor="t")
    return doc


async def _signed_in(url: str, login: str, password: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get("/connexion") as resp:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)
    async with http.post("/connexion", data={"login": login, "password": password, "csrf": csrf},
                         allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
    return http


def _pes_links(html: str) -> list[str]:
    return re.findall(r'href="(/admin/documents/[0-9a-f]+/pes/[^"]+)"', html)


@pytest.mark.parametrize("backend", ["embedded", "scaleout"])
async def test_viewer_over_http(backend, runtime_factory, server_factory, people, shared_dir):
    rt = await runtime_factory(backend, workers=False, pes_view_max_size=100_000)
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune de Saint-Jean", siren=None, parent=None, actor_name="t")
    other = await create_entity(rt, name="Autre commune", siren=None, parent=None, actor_name="t")
    data = pes_aller("PES_HTTP_0001", pjs=(PJ("FACT20260001", "facture.pdf", FACTURE),
                                           PJ("CONV202617", "convention.txt", CONVENTION, "text/plain", gzip=False)))
    pes = await _document(rt, commune, "pes", {"objet": "Mandats de mars"}, "pes_aller", "pes.xml", "application/xml",
                          data)
    # a field that declares nothing: the PES is recognised by its root element
    plain = await _document(rt, commune, "demo", {"title": "PES déposé tel quel"}, "file", "PES_depose.xml",
                            "application/xml", data)
    retour = await _document(rt, commune, "demo", {"title": "Retour"}, "file", "retour.xml",
                             "application/xml",
                             (shared_dir / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())
    text = await _document(rt, commune, "demo", {"title": "Pas un PES"}, "file", "notes.txt", "text/plain",
                           b"Notes de la tr\xc3\xa9sorerie : PES de mars")
    big = await _document(rt, commune, "demo", {"title": "Trop gros"}, "file", "gros.xml", "application/xml",
                          pes_aller("PES_GROS", pjs=(PJ("GROS-1", "gros.bin", bytes(range(256)) * 1000, gzip=False),)))
    await people.user(rt, "lecteur", grants=(Grant(commune.id, "reader"),))
    await people.user(rt, "voisin", grants=(Grant(other.id, "admin"),))

    http = await _signed_in(srv.url, "lecteur", people.password)
    try:
        links = {}
        for doc in (pes, plain, retour, text):
            async with http.get(f"/admin/documents/{doc.id}") as resp:
                assert resp.status == 200
                links[doc.id] = _pes_links(await resp.text())
        assert links[pes.id] == [f"/admin/documents/{pes.id}/pes/pes_aller/0"]
        assert links[plain.id] == [f"/admin/documents/{plain.id}/pes/file/0"]
        assert links[retour.id] == [] and links[text.id] == []

        for url in links[pes.id] + links[plain.id]:
            async with http.get(url) as resp:
                assert resp.status == 200
                assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
                html = await resp.text()
            assert "<script" not in html and "style=" not in html  # the CSP allows neither inline
            for amount in ("1\u202f234,56\u00a0€", "12\u202f345,67\u00a0€", "800,00\u00a0€", "150,00\u00a0€",
                           "987\u202f654,32\u00a0€", "1\u202f481,47\u00a0€"):  # pièces HT; 101's TTC with its TVA
                assert amount in html, amount
            assert html.count('class="pes-piece"') == 5 and html.count('class="pes-bordereau"') == 3
            assert "Bordereau de dépense n° 41" in html and "Bordereau de recette n° 17" in html
            assert "SIRET 44306184100047" in html and "compte 6064 · fonction 020" in html
            pj_urls = re.findall(r'href="([^"]+/pj/\d+)"', html)
            assert [u.rsplit("/", 1)[1] for u in pj_urls] == ["0", "1"]
            async with http.get(pj_urls[0]) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "application/pdf"
                assert "attachment" in resp.headers["Content-Disposition"]
                assert resp.headers["Content-Disposition"].endswith("''facture.pdf")
                assert await resp.read() == FACTURE  # base64, then gunzip
            async with http.get(pj_urls[1]) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain")
                assert await resp.read() == CONVENTION  # raw base64

        async with http.get(f"/admin/documents/{pes.id}/pes/pes_aller/0/pj/7") as resp:
            assert resp.status == 404
        async with http.get(f"/admin/documents/{text.id}/pes/file/0") as resp:
            assert resp.status == 422
            assert "Ce fichier ne peut pas être affiché : le fichier n'est pas un XML bien formé" in unescape(
                await resp.text())
        async with http.get(f"/admin/documents/{retour.id}/pes/file/0") as resp:
            assert resp.status == 422 and "ce fichier est un « PES_Retour », pas un PES_Aller" in unescape(
                await resp.text())
        async with http.get(f"/admin/documents/{big.id}/pes/file/0") as resp:
            assert resp.status == 413
            body = unescape(await resp.text())
            assert "la visualisation est limitée aux fichiers de 97,7 Ko" in body and "FLOWBUS_PES_VIEW_MAX_SIZE" in body
    finally:
        await http.close()

    # no right on the document's collectivité: the viewer and its PJ do not exist for them
    http = await _signed_in(srv.url, "voisin", people.password)
    try:
        for url in (f"/admin/documents/{pes.id}/pes/pes_aller/0", f"/admin/documents/{pes.id}/pes/pes_aller/0/pj/0"):
            async with http.get(url) as resp:
                assert resp.status == 404, url
    finally:
        await http.close()
    async with aiohttp.ClientSession(base_url=srv.url) as anonymous:
        async with anonymous.get(f"/admin/documents/{pes.id}/pes/pes_aller/0/pj/0", allow_redirects=False) as resp:
            assert resp.status in (302, 303) and "/connexion" in resp.headers["Location"]
