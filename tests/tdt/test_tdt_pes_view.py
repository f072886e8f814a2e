"""The PES viewer's reader (flowbus.connectors.tdt.pes_view): the real sample and a generated 3-bordereau PES read
as a stream into bordereaux, pièces, lignes, tiers and amounts; PJ decoded (gzip or not) without keeping their
text; refusals in French."""

from __future__ import annotations

import os
import re
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

from flowbus.connectors.tdt.helios import inspect_pes, pes_errors
from flowbus.connectors.tdt.pes_view import PjExtractor, read_pes_view
from flowbus.errors import ValidationError
from tests.support.pes import PJ, THREE, B, L, P, pes_aller

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "pes"
ALLER = SAMPLES / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


def _extract(data: bytes, position: int, chunk: int = 4096) -> tuple[PjExtractor, bytes]:
    out = bytearray()
    ex = PjExtractor(position, out.extend)
    for i in range(0, len(data), chunk):
        if ex.done:
            break
        ex.feed(data[i:i + chunk])
    if not ex.done:
        ex.finish()
    return ex, bytes(out)


@pytest.mark.parametrize("chunk", [7, 1 << 16])
def test_the_real_sample(chunk):
    view = read_pes_view(ALLER.read_bytes(), chunk=chunk)  # 7 bytes at a time: every value crosses a feed
    assert (view.nom_fic, view.typ_fic, view.id_coll, view.cod_col, view.cod_bud, view.libelle_col_bud,
            view.id_post, view.dte_str, view.exercices, view.signed_global, view.info_dematerialisee) == (
        "HELIOS_SIMU_ALR2_1496987735_826268894.xml", "PESALR2", "12345678912345", "123", "12", "COMMUNE",
        "034000", "2017-06-09", ["2009"], False, "0")
    [b] = view.bordereaux
    assert (b.domain, b.id, b.numero, b.date, b.exercice, b.type, b.nbr_pce, b.signed) == (
        "depense", "BORD767613", "1234567", "2009-07-16", "2009", "01", 1, False)
    # the sample declares more than its single line: both are kept, the page says so
    assert b.mt_ht == Decimal("75724.75") and b.lines_ht == Decimal("39724.75")
    assert b.mt_cumul_annuel == Decimal("6312190.16")
    [p] = b.pieces
    assert (p.numero, p.type, p.nature, p.objet) == ("832", "01", "01", "TEST HOMOLOGATION")
    [ln] = p.lignes
    assert (ln.numero, ln.libelle, ln.imputation, ln.mt_ht, ln.mt_tva, ln.mt_ttc) == (
        "1", "ECHEANCIER — LE NUMERO N EST PAS PRECISE", "compte 6553 · fonction 113", Decimal("39724.75"), None,
        Decimal("39724.75"))
    [t] = ln.tiers
    assert (t.nom, t.identifiers, t.adresse, t.banque, t.categorie, t.nature_juridique) == (
        "PAIERIE DEPART. HERAULT", ["réf. 811"], "1000 RUE ALCO, 34000 MONTPELLIER",
        "LA BANQUE DU FUTUR — PAIERIE DEPART. HERAULT", "22", "09")
    assert view.pjs == () and view.other_parts == ()
    marche = ALLER.read_bytes().replace(b" <PES_PJ>", b" <PES_Marche><EnTeteMarche/></PES_Marche>\n <PES_PJ>")
    assert read_pes_view(marche).other_parts == ("PES_Marche",)  # the page says it is there, not shown


def test_three_bordereaux_of_depense_and_recette():
    facture = os.urandom(3000)  # incompressible: the gzip is as big as the file
    note = "Convention signée le 2 mars\n".encode("utf-8") * 40
    data = pes_aller("PES_TROIS", pjs=(PJ("FACT20260001", "facture.pdf", facture),
                                       PJ("CONV202617", "convention.txt", note, "text/plain", gzip=False)))
    assert pes_errors(data)[1] == []  # a PES S²LOW would accept
    view = read_pes_view(data, chunk=1000)
    assert [(b.domain, b.numero, b.nb_pieces, b.nbr_pce) for b in view.bordereaux] == [
        ("depense", "41", 2, 2), ("depense", "42", 1, 1), ("recette", "17", 2, 2)]
    index = inspect_pes(data)  # the index parser (whole tree) agrees on what it reads too
    assert [(b.domain, b.id_bord, b.nb_pieces, b.id) for b in index.bordereaux] == [
        (b.domain, b.numero, b.nb_pieces, b.id) for b in view.bordereaux]
    for b, made in zip(view.bordereaux, THREE, strict=True):
        assert b.mt_ht == b.lines_ht == made.ht
        assert [p.mt_ht for p in b.pieces] == [sum(Decimal(ln.ht) for ln in p.lignes) for p in made.pieces]
    first = view.bordereaux[0].pieces[0]
    assert (first.numero, first.objet, first.mt_ht, first.mt_tva, first.mt_ttc, first.pj_refs) == (
        "101", "FOURNITURES DE BUREAU MARS", Decimal("1234.56"), Decimal("246.91"), Decimal("1481.47"),
        ("FACT20260001",))
    assert [(ln.numero, ln.libelle, ln.mt_ht, ln.mt_tva) for ln in first.lignes] == [
        ("1", "CAHIERS ET STYLOS", Decimal("1000.00"), Decimal("200.00")),
        ("2", "CLASSEURS", Decimal("234.56"), Decimal("46.91"))]
    assert [t.identifiers[0] for t in first.tiers] == ["SIRET 44306184100047"]  # one tiers for both lignes
    titre = view.bordereaux[2].pieces[0]  # recette: ObjPce, InfoLignePiece/ObjLignePce, CodProdLoc
    assert (titre.objet, titre.lignes[0].libelle, titre.lignes[0].imputation, titre.tiers[0].nom) == (
        "LOCATION SALLE DES FETES", "LOCATION DU 14 MARS", "compte 752 · fonction 024 · produit LOC1",
        "MME DUPONT JEANNE")
    assert view.bordereaux[0].total_ttc == Decimal("13580.23") + Decimal("246.91")
    assert [(pj.position, pj.id_unique, pj.nom, pj.media_type, pj.gzipped, pj.size, pj.problem) for pj in view.pjs] == [
        (0, "FACT20260001", "facture.pdf", "application/pdf", True, len(facture), None),
        (1, "CONV202617", "convention.txt", "text/plain", False, len(note), None)]
    for position, content in ((0, facture), (1, note)):
        for chunk in (13, 1 << 16):
            ex, out = _extract(data, position, chunk)
            assert ex.found and out == content
    ex, out = _extract(data, 2)
    assert not ex.found and out == b""


def test_signatures_nir_and_broken_pj_are_read_as_such():
    data = pes_aller("PES_SIGNE", bordereaux=(
        B("depense", "7", (P("70", "AIDE SOCIALE", (L("50.00", tiers="MARTIN PAUL", siret=None),)),)),
        B("depense", "8", (P("80", "LOYER", (L("600.00"),)),))),
        pjs=(PJ("P1", "casse.pdf", b"%PDF-1.4"),)).decode("iso-8859-1")
    sig = ('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:Reference URI="#x">'
           '<IdBord V="999"/></ds:Reference></ds:SignedInfo></ds:Signature>')
    data = re.sub(r"</Piece>(\s*)</Bordereau>", lambda m: f"</Piece>{sig}{m.group(1)}</Bordereau>", data, count=1)
    data = data.replace('<RefTiers V=', '<IdTiers V="185057800608436"/><NatIdTiers V="04"/><RefTiers V=', 1)
    start = data.index('<Fichier MIMEType="application/pdf">') + len('<Fichier MIMEType="application/pdf">')
    data = data[:start] + "H4sI!!!!" + data[start + 8:]  # not base64 any more
    view = read_pes_view(data.encode("iso-8859-1"))
    assert [(b.numero, b.signed) for b in view.bordereaux] == [("7", True), ("8", False)]  # IdBord 999 is ignored
    tiers = view.bordereaux[0].pieces[0].tiers[0]
    assert tiers.id_kind == "NIR" and tiers.id_tiers is None and tiers.identifiers[0] == "NIR (non affiché)"
    assert "185057800608436" not in repr(view)
    [pj] = view.pjs
    assert pj.size is None and pj.problem.startswith("contenu de PJ non décodable en base64")
    with pytest.raises(ValidationError, match="non décodable en base64"):
        _extract(data.encode("iso-8859-1"), 0)


@pytest.mark.parametrize("data, message", [
    ((SAMPLES / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes(), "ce fichier est un « PES_Retour », pas un PES_Aller"),
    ((SAMPLES / "006111_190130123456-ACK-A3020100_A0000SEN_KO.xml").read_bytes(), "ce fichier est un « PES_ACQUIT »"),
    (b'<?xml version="1.0"?><PES_Aller><Enveloppe/></PES_Aller>', "n'est pas dans l'espace de noms des PES V2"),
    (ALLER.read_bytes()[:1500], "le fichier n'est pas un XML bien formé (ligne"),
    (b"", "le fichier est vide"),
    (b"%PDF-1.4", "le fichier n'est pas un XML bien formé (ligne 1"),
])
def test_what_is_not_a_readable_pes_aller_is_said_in_french(data, message):
    with pytest.raises(ValidationError) as err:
        read_pes_view(data, chunk=100)
    assert message in err.value.message and err.value.field == "pes"


def test_too_many_lines_for_a_page():
    data = pes_aller()
    assert len(read_pes_view(data, max_lines=6).bordereaux) == 3  # 6 lignes in all
    with pytest.raises(ValidationError, match="plus de 5 lignes de pièce ; c'est trop pour une page"):
        read_pes_view(data, max_lines=5)


def test_a_big_pj_is_never_held_as_text():
    """16 Mo of PJ fed 64 Ko at a time: Python never holds more than a few chunks (an element tree, or text
    gathered before decoding, would hold the 21 Mo of base64)."""
    content = os.urandom(16 * 1024 * 1024)
    data = pes_aller("PES_LOURD", pjs=(PJ("LOURD-1", "plan.pdf", content),))
    tracemalloc.start()
    try:
        view = read_pes_view(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view.pjs[0].size == len(content)
    assert peak < 2 * 1024 * 1024, peak
