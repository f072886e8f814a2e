"""Files checked at the door: broken PDFs, PDFs locked by a password, malformed XML and XML of the wrong
kind are refused at upload with a French message naming the file and the field; nothing is stored."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer

from flowbus import filecheck
from flowbus.errors import ValidationError
from flowbus.signature.textpdf import simple_pdf, text_pdf

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "pes"
PES_ALLER = SAMPLES / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"
PES_RETOUR = SAMPLES / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml"


def _encrypted(user_password: str) -> bytes:
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(simple_pdf(["confidentiel"]))))
    writer.encrypt("proprietaire", user_password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _inspect(data: bytes, filename: str = "acte.pdf", media_type: str = "application/pdf",
             content: str | None = None) -> filecheck.FileFacts:
    return filecheck.inspect(io.BytesIO(data), filename=filename, field="acte", media_type=media_type,
                             content=content)


def test_a_readable_pdf_passes_with_its_page_count():
    facts = _inspect(text_pdf([["page 1"], ["page 2"], ["page 3"]]))
    assert (facts.kind, facts.pages, facts.encrypted) == ("pdf", 3, False)
    assert facts.journal() == {"pages": 3}


@pytest.mark.parametrize("data, why", [
    (b"%PDF-1.4 t", "illisible ou endommagé"),
    (simple_pdf(["tronqué"])[:400], "illisible ou endommagé"),
    (b"PK\x03\x04 a zip named .pdf", "ce n'est pas un PDF"),
    (b"", "ce n'est pas un PDF"),
])
def test_an_unreadable_pdf_is_refused_naming_file_and_field(data, why):
    with pytest.raises(ValidationError) as caught:
        _inspect(data)
    assert caught.value.field == "acte"
    assert caught.value.message.startswith("Le fichier « acte.pdf » (champ « acte ») est refusé : ")
    assert why in caught.value.message


def test_a_pdf_locked_by_an_opening_password_is_refused_one_with_an_owner_password_only_passes():
    with pytest.raises(ValidationError, match="protégé par un mot de passe à l'ouverture"):
        _inspect(_encrypted("secret"))
    facts = _inspect(_encrypted(""))
    assert (facts.pages, facts.encrypted) == (1, True)


def test_a_pdf_is_recognised_by_its_name_when_sent_as_octet_stream():
    with pytest.raises(ValidationError, match="illisible"):
        _inspect(b"%PDF-1.7 garbage", media_type="application/octet-stream")
    assert _inspect(b"anything", filename="notes.txt", media_type="text/plain").kind == ""


def test_xml_must_be_well_formed_and_of_the_expected_kind():
    with pytest.raises(ValidationError, match=r"pas un XML bien formé \(ligne 1"):
        _inspect(b"<PES_Aller><EnTetePES>", filename="pes.xml", media_type="application/xml")
    with pytest.raises(ValidationError, match="un PES Aller est attendu, le fichier est un « PES_Retour »"):
        _inspect(b"<PES_Retour/>", filename="pes.xml", media_type="application/xml", content="pes_aller")
    with pytest.raises(ValidationError, match="un message ACTES est attendu"):
        _inspect(b"<Acte/>", filename="a.xml", media_type="text/xml", content="actes")
    ok = _inspect(b'<actes:Acte xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"/>',
                  filename="a.xml", media_type="text/xml", content="actes")
    assert ok.root == "Acte"


def test_xml_external_entities_are_not_read(tmp_path):
    # if the door expanded &e;, it would read this file — markup that breaks the document — and refuse it
    trap = tmp_path / "piege.txt"
    trap.write_text("<<< ceci casserait le XML")
    doc = (f'<?xml version="1.0"?><!DOCTYPE PES_Aller [<!ENTITY e SYSTEM "{trap.as_uri()}">]>'
           "<PES_Aller>&e;</PES_Aller>").encode()
    assert _inspect(doc, filename="p.xml", media_type="application/xml", content="pes_aller").root == "PES_Aller"
    from lxml import etree
    with pytest.raises(etree.XMLSyntaxError):  # the same document, entities resolved: the trap springs
        etree.fromstring(doc, etree.XMLParser(resolve_entities=True, load_dtd=True))


def test_the_real_pes_aller_passes_and_a_real_pes_retour_is_refused_where_an_aller_is_expected():
    assert _inspect(PES_ALLER.read_bytes(), filename="pes.xml", media_type="application/xml",
                    content="pes_aller").root == "PES_Aller"
    with pytest.raises(ValidationError, match="le fichier est un « PES_Retour »"):
        _inspect(PES_RETOUR.read_bytes(), filename="retour.xml", media_type="application/xml", content="pes_aller")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_the_api_refuses_a_broken_pdf_in_french_and_keeps_the_good_one(server, runtime):
    async with server.client() as c:
        ent = (await (await c.post("/api/v1/entities", json={"name": "Commune"})).json())["id"]
        doc = await (await c.post("/api/v1/documents", json={"entity": ent, "flow": "demo",
                                                             "fields": {"title": "ok"}})).json()
        url = f"/api/v1/documents/{doc['id']}/files/file"
        good = simple_pdf(["arrêté"])
        r = await c.put(url + "?filename=arrete.pdf", data=good, headers={"Content-Type": "application/pdf"})
        assert r.status in (200, 201), await r.text()
        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.4 abime", filename="casse.pdf", content_type="application/pdf")
        r = await c.put(url, data=form)
        assert r.status == 422
        body = await r.json()
        assert body["field"] == "file"
        assert "« casse.pdf »" in body["detail"] and "illisible" in body["detail"]
        assert await (await c.get(url)).read() == good, "the refused file replaced nothing"
        r = await c.get(f"/api/v1/documents/{doc['id']}/journal")
        added = [e["data"] for e in (await r.json())["items"] if e["kind"] == "file.added"]
        assert [(d["filename"], d.get("pages")) for d in added] == [("arrete.pdf", 1)]
