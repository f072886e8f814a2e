"""PES_Aller files for tests, derived from the real sample (its envelope and header kept): several bordereaux of
dépense and recette with their pièces, lignes and tiers shaped as the DGFiP schemas lay them out (dépense:
``BlocPiece/InfoPce/Obj``, ``InfoLignePce``; recette: ``BlocPiece/ObjPce``, ``InfoLignePiece``), and PJ as finance
software writes them (base64 of a gzip; raw base64 when ``gzip=False``)."""

from __future__ import annotations

import base64
import gzip as gz
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from lxml import etree

SAMPLE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "pes"
          / "HELIOS_SIMU_ALR2_1496987735_826268894.xml").resolve()


@dataclass(frozen=True)
class L:
    """A ligne de pièce: amounts as text (``"1234.56"``), a tiers name and SIRET."""

    ht: str
    tva: str | None = None
    libelle: str = "FOURNITURES"
    nature: str = "6064"
    fonction: str = "020"
    tiers: str = "PAPETERIE DU MIDI"
    siret: str | None = "44306184100047"


@dataclass(frozen=True)
class P:
    numero: str
    objet: str
    lignes: tuple[L, ...]
    pj_refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class B:
    domain: str  # depense | recette
    numero: str
    pieces: tuple[P, ...]
    date: str = "2026-03-02"
    exercice: str = "2026"

    @property
    def ht(self) -> Decimal:
        return sum((Decimal(ln.ht) for p in self.pieces for ln in p.lignes), Decimal(0))

    @property
    def tva(self) -> Decimal:
        return sum((Decimal(ln.tva) for p in self.pieces for ln in p.lignes if ln.tva), Decimal(0))


@dataclass(frozen=True)
class PJ:
    id_unique: str
    nom: str
    content: bytes
    media_type: str = "application/pdf"
    gzip: bool = True
    description: str = "Facture"


THREE = (
    B("depense", "41", (
        P("101", "FOURNITURES DE BUREAU MARS", (L("1000.00", "200.00", "CAHIERS ET STYLOS"),
                                                 L("234.56", "46.91", "CLASSEURS")), ("FACT20260001",)),
        P("102", "ENTRETIEN CHAUDIERE ECOLE", (L("12345.67", None, "CONTRAT ANNUEL", "61558", "212",
                                                 "THERMIQUE OCCITANE", "51234567800019"),)),
    )),
    B("depense", "42", (
        P("103", "SUBVENTION ASSOCIATION SPORTIVE", (L("800.00", None, "SUBVENTION 2026", "6574", "40",
                                                       "US SAINT-JEAN", None),)),
    )),
    B("recette", "17", (
        P("501", "LOCATION SALLE DES FETES", (L("150.00", None, "LOCATION DU 14 MARS", "752", "024",
                                               "DUPONT JEANNE", None),), ("CONV202617",)),
        P("502", "CANTINE FEVRIER", (L("987654.32", None, "REPAS FEVRIER", "7067", "251",
                                       "CAISSE DES ECOLES", "21340172200018"),)),
    )),
)


def _sub(parent: etree._Element, tag: str, value: object = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if value is not None:
        el.set("V", str(value))
    return el


def _tiers(parent: etree._Element, ln: L, domain: str) -> None:
    tiers = _sub(parent, "Tiers")
    info = _sub(tiers, "InfoTiers")
    if ln.siret:
        _sub(info, "IdTiers", ln.siret)
        _sub(info, "NatIdTiers", "01")
    _sub(info, "RefTiers", f"T{zlib.crc32(ln.tiers.encode()) % 10000:04d}")
    _sub(info, "CatTiers", "20" if ln.siret else "01")
    _sub(info, "NatJur", "01")
    if not ln.siret:
        _sub(info, "Civilite", "MME" if domain == "recette" else "M")
    _sub(info, "Nom", ln.tiers)
    adresse = _sub(tiers, "Adresse")
    _sub(adresse, "TypAdr", 1)
    _sub(adresse, "Adr2", "12 RUE DE LA MAIRIE")
    _sub(adresse, "CP", "34000")
    _sub(adresse, "Ville", "MONTPELLIER")
    _sub(adresse, "CodRes", 0)


def _bordereau(parent: etree._Element, b: B) -> None:
    bord = _sub(parent, "Bordereau")
    bord.set("Id", f"BORD_{b.domain}_{b.numero}")
    bloc = _sub(bord, "BlocBordereau")
    _sub(bloc, "Exer", b.exercice)
    _sub(bloc, "IdBord", b.numero)
    _sub(bloc, "DteBordEm", b.date)
    _sub(bloc, "TypBord", "01")
    _sub(bloc, "NbrPce", len(b.pieces))
    _sub(bloc, "MtCumulAnnuel", f"{b.ht * 3:.2f}")
    _sub(bloc, "MtBordHT" if b.domain == "depense" else "MtBordHt", f"{b.ht:.2f}")
    if b.tva:
        _sub(bloc, "MtBordTVA", f"{b.tva:.2f}")
    for p in b.pieces:
        piece = _sub(bord, "Piece")
        bloc_p = _sub(piece, "BlocPiece")
        info = _sub(bloc_p, "InfoPce") if b.domain == "depense" else bloc_p
        _sub(info, "IdPce", p.numero)
        _sub(info, "TypPce", "01")
        _sub(info, "NatPce", "01")
        _sub(info, "Obj" if b.domain == "depense" else "ObjPce", p.objet)
        for ref in p.pj_refs:
            pjref = _sub(info, "PJRef")
            _sub(pjref, "Support", "01")
            _sub(pjref, "IdUnique", ref)
        for n, ln in enumerate(p.lignes, 1):
            ligne = _sub(piece, "LigneDePiece")
            bloc_l = _sub(ligne, "BlocLignePiece")
            if b.domain == "depense":
                il = _sub(bloc_l, "InfoLignePce")
                _sub(il, "IdLigne", n)
                _sub(il, "Nature", ln.nature)
                _sub(il, "Fonction", ln.fonction)
                _sub(il, "LibVir1", ln.libelle)
                _sub(il, "ModRegl", "03" if ln.siret else "01")
                _sub(il, "TVAIntraCom", 0)
                _sub(il, "MtHT", ln.ht)
                if ln.tva:
                    _sub(il, "MtTVA", ln.tva)
            else:
                il = _sub(bloc_l, "InfoLignePiece")
                _sub(il, "IdLigne", n)
                _sub(il, "ObjLignePce", ln.libelle)
                _sub(il, "CodProdLoc", "LOC1")
                _sub(il, "Nature", ln.nature)
                _sub(il, "Fonction", ln.fonction)
                _sub(il, "Majo", 0)
                _sub(il, "TvaIntraCom", 0)
                _sub(il, "MtHT", ln.ht)
                if ln.tva:
                    _sub(il, "MtTVA", ln.tva)
            _tiers(ligne, ln, b.domain)


def pes_aller(nom_fic: str = "PES_TROIS_BORDEREAUX", bordereaux: tuple[B, ...] = THREE,
              pjs: tuple[PJ, ...] = ()) -> bytes:
    """An unsigned PES_Aller (ISO-8859-1) with ``bordereaux`` and ``pjs``, envelope and header from the real sample."""
    root = etree.fromstring(SAMPLE.read_bytes())
    root.find("Enveloppe/Parametres/NomFic").set("V", nom_fic)
    for old in root.findall("PES_DepenseAller") + root.findall("PES_PJ"):
        root.remove(old)
    for domain, tag, head in (("depense", "PES_DepenseAller", "EnTeteDepense"),
                              ("recette", "PES_RecetteAller", "EnTeteRecette")):
        mine = [b for b in bordereaux if b.domain == domain]
        if not mine:
            continue
        part = _sub(root, tag)
        entete = _sub(part, head)
        _sub(entete, "IdVer", 2)
        _sub(entete, "InfoDematerialisee", 0)
        for b in mine:
            _bordereau(part, b)
    if pjs:
        part = _sub(root, "PES_PJ")
        _sub(_sub(part, "EnTetePES_PJ"), "IdVer", 1)
        for pj in pjs:
            el = _sub(part, "PJ")
            payload = gz.compress(pj.content, mtime=0) if pj.gzip else pj.content
            fichier = _sub(_sub(el, "Contenu"), "Fichier")
            fichier.set("MIMEType", pj.media_type)
            text = base64.b64encode(payload).decode("ascii")
            fichier.text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # as MIME tools wrap it
            _sub(el, "IdUnique", pj.id_unique)
            _sub(el, "NomPJ", pj.nom)
            _sub(el, "TypePJ", "003")
            _sub(el, "Description", pj.description)
    etree.indent(root, space=" ")
    return etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1")
