"""PES V2 (Hélios): PES_Aller checks and index fields, PES_Acquit and PES_Retour parsing.

Files are read as finance software writes them: ISO-8859-1, values in attribute ``V``,
children unqualified, PJ as base64 of a gzip (``H4sI…``).  The checks are S²LOW's pre-send
checks (tdt.md §2.6, §6.3), not an XSD validation (S²LOW deliberately does not validate
PES_Aller against the XSD).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from lxml import etree

from flowbus.errors import PermanentError, ValidationError

ALLER_NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"
ACQUIT_NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2"
RETOUR_NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
DOMAINS = {"PES_DepenseAller": "depense", "PES_RecetteAller": "recette"}
DOMAINE_ACK = {0: "technique", 1: "signature technique", 2: "signature globale", 3: "signature bordereau",
               4: "PJ", 5: "dépense", 6: "recette", 7: "rôle", 8: "budget", 9: "état actif", 10: "état passif",
               11: "marché", 12: "facture", 99: "paramétrage"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def _v(parent: etree._Element | None, path: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(path)
    return el.get("V") if el is not None else None


def _parse(data: bytes, what: str, field_name: str) -> etree._Element:
    try:
        return etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValidationError(f"{what} illisible (XML mal formé) : {exc}", field=field_name) from exc


def declared_encoding(data: bytes) -> str | None:
    m = re.match(rb"^\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']", data[:200])
    return m.group(1).decode("ascii").upper() if m else None


def decode_pj(text: str) -> bytes:
    """A PJ ``Fichier`` payload: base64 of gzip (raw base64 is accepted when not gzipped)."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"contenu de PJ non décodable en base64 : {exc}", field="PES_PJ") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValidationError(f"contenu de PJ : gzip corrompu ({exc})", field="PES_PJ") from exc
    return raw


def encode_pj(content: bytes) -> str:
    return base64.b64encode(gzip.compress(content, mtime=0)).decode("ascii")


@dataclass(frozen=True)
class Bordereau:
    id: str | None  # Bordereau/@Id (target of a per-bordereau signature)
    domain: str  # depense | recette
    type: str | None  # TypBord
    id_bord: str | None
    exercice: str | None
    nb_pieces: int  # Piece elements counted (NbrPce is what the file declares)
    nbr_pce: int | None
    signed: bool


@dataclass(frozen=True)
class PieceJointe:
    id_unique: str | None
    nom_pj: str | None
    type_pj: str | None
    media_type: str | None
    size: int  # decoded size in bytes


@dataclass(frozen=True)
class PesIndex:
    """The index fields of a PES_Aller (what ``flowbus pes inspect`` prints)."""

    nom_fic: str | None
    typ_fic: str | None
    version: str | None
    encoding: str | None
    id_coll: str | None
    dte_str: str | None
    id_post: str | None
    cod_col: str | None
    cod_bud: str | None
    libelle_col_bud: str | None
    exercice: str | None
    info_dematerialisee: str | None
    signed_global: bool
    bordereaux: tuple[Bordereau, ...] = ()
    pjs: tuple[PieceJointe, ...] = ()

    @property
    def nb_bordereaux(self) -> int:
        return len(self.bordereaux)

    @property
    def nb_pj(self) -> int:
        return len(self.pjs)

    @property
    def signed(self) -> bool:
        return self.signed_global or (bool(self.bordereaux) and all(b.signed for b in self.bordereaux))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["bordereaux"] = [asdict(b) for b in self.bordereaux]
        out["pjs"] = [asdict(p) for p in self.pjs]
        out["nb_bordereaux"] = self.nb_bordereaux
        out["nb_pj"] = self.nb_pj
        out["signed"] = self.signed
        return out


def inspect_pes(data: bytes) -> PesIndex:
    """Index fields of a PES_Aller; raises ValidationError if it is not one."""
    root = _parse(data, "PES_Aller", "pes")
    if root.tag != f"{{{ALLER_NS}}}PES_Aller":
        raise ValidationError(f"élément racine {etree.QName(root).localname!r} : attendu un PES_Aller "
                              f"(espace de noms {ALLER_NS})", field="pes")
    env, head = root.find("Enveloppe"), root.find("EnTetePES")
    bordereaux: list[Bordereau] = []
    info_demat = None
    for tag, domain in DOMAINS.items():
        for part in root.findall(tag):
            info_demat = info_demat or _v(part, "./*/InfoDematerialisee")
            for b in part.findall("Bordereau"):
                bloc = b.find("BlocBordereau")
                nbr = _v(bloc, "NbrPce")
                bordereaux.append(Bordereau(
                    id=b.get("Id"), domain=domain, type=_v(bloc, "TypBord"), id_bord=_v(bloc, "IdBord"),
                    exercice=_v(bloc, "Exer"), nb_pieces=len(b.findall("Piece")),
                    nbr_pce=int(nbr) if nbr and nbr.isdigit() else None,
                    signed=b.find(f"{{{DS_NS}}}Signature") is not None))
    pjs: list[PieceJointe] = []
    for pj in root.findall("PES_PJ/PJ"):
        fichier = pj.find("Contenu/Fichier")
        size = len(decode_pj(fichier.text or "")) if fichier is not None and fichier.text else 0
        pjs.append(PieceJointe(_v(pj, "IdUnique"), _v(pj, "NomPJ"), _v(pj, "TypePJ"),
                               fichier.get("MIMEType") if fichier is not None else None, size))
    exercices = [b.exercice for b in bordereaux if b.exercice]
    return PesIndex(
        nom_fic=_v(env, "Parametres/NomFic"), typ_fic=_v(env, "Parametres/TypFic"),
        version=_v(env, "Parametres/Version"), encoding=declared_encoding(data),
        id_coll=_v(head, "IdColl"), dte_str=_v(head, "DteStr"), id_post=_v(head, "IdPost"),
        cod_col=_v(head, "CodCol"), cod_bud=_v(head, "CodBud"), libelle_col_bud=_v(head, "LibelleColBud"),
        exercice=max(exercices) if exercices else None, info_dematerialisee=info_demat,
        signed_global=root.find(f"{{{DS_NS}}}Signature") is not None,
        bordereaux=tuple(bordereaux), pjs=tuple(pjs))


def pes_errors(data: bytes) -> tuple[PesIndex | None, list[ValidationError]]:
    """S²LOW's pre-send checks on a PES_Aller; every error names the PES element at fault."""
    errs: list[ValidationError] = []
    enc = declared_encoding(data)
    if enc not in ("ISO-8859-1", "ISO8859-1", "LATIN1"):
        errs.append(ValidationError(f"le PES doit déclarer l'encodage ISO-8859-1 dans son en-tête XML "
                                    f"(déclaré : {enc or 'aucun'})", field="encoding"))
    try:
        index = inspect_pes(data)
    except ValidationError as exc:
        return None, errs + [exc]

    def err(f: str, m: str) -> None:
        errs.append(ValidationError(m, field=f))

    if not index.nom_fic:
        err("NomFic", "Enveloppe/Parametres/NomFic est absent : c'est la clé qui relie le PES à son acquit")
    elif len(index.nom_fic) > 100:
        err("NomFic", f"NomFic fait {len(index.nom_fic)} caractères, au plus 100")
    if not index.id_coll or not re.fullmatch(r"[0-9]{1,14}", index.id_coll):
        err("IdColl", f"IdColl {index.id_coll!r} invalide : le SIRET du budget, 14 chiffres au plus")
    if not index.cod_col or not re.fullmatch(r"[0-9A-Z]{3}", index.cod_col) or index.cod_col == "000":
        err("CodCol", f"CodCol {index.cod_col!r} invalide : 3 caractères, pas « 000 »")
    if not index.cod_bud or not re.fullmatch(r"[0-9A-Z]{2}", index.cod_bud):
        err("CodBud", f"CodBud {index.cod_bud!r} invalide : 2 caractères")
    if not index.id_post or not re.fullmatch(r"[0-9]{6,7}|02[AB][0-9]{3,4}", index.id_post):
        err("IdPost", f"IdPost {index.id_post!r} invalide : le codique du poste comptable (6 ou 7 chiffres)")
    try:
        date.fromisoformat(index.dte_str or "")
    except ValueError:
        err("DteStr", f"DteStr {index.dte_str!r} n'est pas une date AAAA-MM-JJ")
    root = etree.fromstring(data, parser=_PARSER)
    if not index.bordereaux and not index.pjs and root.find("PES_Marche") is None \
            and root.find("PES_Facture") is None:
        err("PES_Aller", "le PES est vide : ni bordereau, ni PJ, ni marché (un PES vide n'a jamais d'acquit)")
    for b in index.bordereaux:
        if b.nbr_pce is not None and b.nbr_pce != b.nb_pieces:
            err(f"Bordereau[{b.id_bord}]", f"le bordereau {b.id_bord} annonce {b.nbr_pce} pièces (NbrPce) "
                                           f"mais en contient {b.nb_pieces}")
    if index.info_dematerialisee == "1" and not index.signed:
        err("InfoDematerialisee", "InfoDematerialisee=1 exige un PES signé (chaque bordereau ou le PES entier)")
    if index.info_dematerialisee == "0" and (index.signed_global or any(b.signed for b in index.bordereaux)):
        err("InfoDematerialisee", "un PES signé doit porter InfoDematerialisee=1")
    for pj in root.findall("PES_PJ/PJ"):
        if pj.find(f".//{{{DS_NS}}}Signature") is not None:
            err("PES_PJ", f"la PJ {_v(pj, 'IdUnique')} est signée : les PJ ne doivent pas l'être")
    return index, errs


def check_pes_aller(data: bytes) -> PesIndex:
    """Return the index of a sendable PES_Aller or raise the first ValidationError (others in the hint)."""
    index, errs = pes_errors(data)
    if errs:
        first = errs[0]
        others = "; ".join(f"{e.field}: {e.message}" for e in errs[1:])
        raise ValidationError(first.message, field=first.field, hint=f"aussi : {others}" if others else None)
    assert index is not None
    return index


# ---- PES_Acquit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckError:
    code: str | None  # NumAnoAck
    label: str | None  # LibelleAnoAck
    piece: str | None = None  # DetailPiece/NumPiece
    ligne: str | None = None  # DetailPiece/DetailLigne/NumLigne


@dataclass(frozen=True)
class AckElement:
    domaine: int
    ok: bool
    num_bord: str | None = None
    exercice: str | None = None
    id_marche: str | None = None
    id_unique: str | None = None
    errors: tuple[AckError, ...] = ()


@dataclass(frozen=True)
class AckIssue:
    """One error of an acquit with everything it points to (tdt.md §6.5): domain, bordereau, marché, PJ,
    pièce, ligne — so two errors on two pièces never read the same."""

    domaine: int
    element_ok: bool  # EtatAck of its ElementACQUIT
    code: str | None
    label: str | None
    num_bord: str | None = None
    exercice: str | None = None
    id_marche: str | None = None
    id_unique: str | None = None
    num_piece: str | None = None
    num_ligne: str | None = None

    @property
    def where(self) -> str:
        """« dépense, bordereau 123 (exercice 2018), pièce 45, ligne 2 », « PJ TI00064567 », « signature globale »."""
        parts = []
        if not (self.domaine == 4 and self.id_unique):  # « PJ TI… » says the domain already
            parts.append(DOMAINE_ACK.get(self.domaine, f"domaine {self.domaine}"))
        if self.num_bord:
            parts.append(f"bordereau {self.num_bord}" + (f" (exercice {self.exercice})" if self.exercice else ""))
        if self.id_marche:
            parts.append(f"marché {self.id_marche}")
        if self.id_unique:
            parts.append(f"PJ {self.id_unique}")
        if self.num_piece:
            parts.append(f"pièce {self.num_piece}")
        if self.num_ligne:
            parts.append(f"ligne {self.num_ligne}")
        return ", ".join(parts)

    @property
    def text(self) -> str:
        what = f"{self.code or ''} {self.label or ''}".strip() or "refusé sans motif donné (EtatAck = 0)"
        return f"{self.where} : {what}"


@dataclass(frozen=True)
class PesAcquit:
    root: str  # PES_ACQUIT | PES_NONACQUIT
    nom_fic: str | None
    typ_fic: str | None
    id_post: str | None
    id_coll: str | None
    cod_col: str | None
    cod_bud: str | None
    elements: tuple[AckElement, ...] = ()

    @property
    def ok(self) -> bool:
        """The verdict is the AND of every EtatAck (not only the first, unlike Pastell)."""
        return self.root == "PES_ACQUIT" and all(e.ok for e in self.elements)

    @property
    def issues(self) -> list[AckIssue]:
        """Every Erreur of every element (of a pièce, of a ligne), and each refused element that gives none."""
        out = []
        for e in self.elements:
            where = {"num_bord": e.num_bord, "exercice": e.exercice, "id_marche": e.id_marche,
                     "id_unique": e.id_unique}
            for err in e.errors:
                out.append(AckIssue(e.domaine, e.ok, err.code, err.label, **where, num_piece=err.piece,
                                    num_ligne=err.ligne))
            if not e.ok and not e.errors:
                out.append(AckIssue(e.domaine, e.ok, None, None, **where))
        if self.root == "PES_NONACQUIT" and not out:
            out.append(AckIssue(0, False, None, "PES_NONACQUIT : le fichier entier est refusé"))
        return out

    @property
    def errors(self) -> list[str]:
        """One line per issue, in French (field ``pes_acquit_errors`` of the tdt-helios step)."""
        return [i.text for i in self.issues]

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "nom_fic": self.nom_fic, "ok": self.ok, "id_coll": self.id_coll,
                "cod_col": self.cod_col, "errors": self.errors,
                "elements": [asdict(e) for e in self.elements]}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return -1


def parse_pes_acquit(data: bytes) -> PesAcquit:
    """A PES_ACQUIT (or PES_NONACQUIT) with every error where it points.

    Raises:
        ValidationError: not XML (field ``acquit``).
        PermanentError: another root element (field ``acquit``).
    """
    root = _parse(data, "PES_Acquit", "acquit")
    name = etree.QName(root).localname
    if name not in ("PES_ACQUIT", "PES_NONACQUIT"):
        raise PermanentError(f"attendu un PES_ACQUIT, reçu {name}", field="acquit")
    env, head = root.find("Enveloppe"), root.find("EnTetePES")

    def errors_of(el: etree._Element, piece: str | None = None, ligne: str | None = None) -> list[AckError]:
        return [AckError(_v(e, "NumAnoAck"), _v(e, "LibelleAnoAck"), piece, ligne) for e in el.findall("Erreur")]

    elements = []
    for el in root.findall("ACQUIT/ElementACQUIT"):
        errs = errors_of(el)
        for piece in el.findall("DetailPiece"):
            num = _v(piece, "NumPiece")
            errs += errors_of(piece, num)
            for ligne in piece.findall("DetailLigne"):
                errs += errors_of(ligne, num, _v(ligne, "NumLigne"))
        elements.append(AckElement(_int(_v(el, "DomaineAck")), _v(el, "EtatAck") in ("1", "true"),
                                   _v(el, "NumBord"), _v(el, "ExerciceBord"), _v(el, "IdMarche"),
                                   _v(el, "IdUnique"), tuple(errs)))
    return PesAcquit(name, _v(env, "Parametres/NomFic"), _v(env, "Parametres/TypFic"), _v(head, "IdPost"),
                     _v(head, "IdColl"), _v(head, "CodCol"), _v(head, "CodBud"), tuple(elements))


def build_pes_acquit(index: PesIndex, *, errors: Sequence[tuple[int, str, str]] = (),
                     emetteur: str = "HELIOS") -> bytes:
    """A PES_ACQUIT for ``index`` (the DGFiP side; used by the S²LOW simulator).

    ``errors``: (DomaineAck, NumAnoAck, LibelleAnoAck) to report as failed elements.
    """
    q = etree.Element(f"{{{ACQUIT_NS}}}PES_ACQUIT", nsmap={"n": ACQUIT_NS})

    def sub(parent: etree._Element, tag: str, value: Any = None) -> etree._Element:
        el = etree.SubElement(parent, tag)
        if value is not None:
            el.set("V", str(value))
        return el

    env = sub(q, "Enveloppe")
    params = sub(env, "Parametres")
    sub(params, "Version", 2)
    sub(params, "TypFic", index.typ_fic or "PESALR2")
    sub(params, "NomFic", index.nom_fic)
    em = sub(env, "Emetteur")
    sub(em, "Sigle", emetteur)
    sub(em, "Adresse", "DGFIP")
    head = sub(q, "EnTetePES")
    for tag, value in (("DteStr", index.dte_str), ("IdPost", index.id_post), ("IdColl", index.id_coll),
                       ("CodCol", index.cod_col), ("CodBud", index.cod_bud),
                       ("LibelleColBud", index.libelle_col_bud)):
        if value:
            sub(head, tag, value)
    acquit = sub(q, "ACQUIT")
    sub(sub(acquit, "EnTeteAcquit"), "IdVer", 2)
    for b in index.bordereaux:
        el = sub(acquit, "ElementACQUIT")
        sub(el, "DomaineAck", 5 if b.domain == "depense" else 6)
        sub(el, "EtatAck", 1)
        if b.id_bord:
            sub(el, "NumBord", b.id_bord)
        if b.exercice:
            sub(el, "ExerciceBord", b.exercice)
    for pj in index.pjs:
        el = sub(acquit, "ElementACQUIT")
        sub(el, "DomaineAck", 4)
        sub(el, "EtatAck", 1)
        if pj.id_unique:
            sub(el, "IdUnique", pj.id_unique)
    for domaine, code, label in errors:
        el = sub(acquit, "ElementACQUIT")
        sub(el, "DomaineAck", domaine)
        sub(el, "EtatAck", 0)
        err = sub(el, "Erreur")
        sub(err, "NumAnoAck", code)
        sub(err, "LibelleAnoAck", label)
    if not len(acquit.findall("ElementACQUIT")):
        el = sub(acquit, "ElementACQUIT")
        sub(el, "DomaineAck", 0)
        sub(el, "EtatAck", 1)
    return etree.tostring(q, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


# ---- PES_Retour ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PesRetour:
    nom_fic: str | None
    typ_fic: str | None
    dte_str: str | None
    id_post: str | None
    id_coll: str | None
    cod_col: str | None
    cod_bud: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_pes_retour(data: bytes) -> PesRetour:
    root = _parse(data, "PES_Retour", "pes_retour")
    if etree.QName(root).localname != "PES_Retour":
        raise PermanentError(f"attendu un PES_Retour, reçu {etree.QName(root).localname}", field="pes_retour")
    env, head = root.find("Enveloppe"), root.find("EnTetePES")
    return PesRetour(_v(env, "Parametres/NomFic"), _v(env, "Parametres/TypFic"), _v(head, "DteStr"),
                     _v(head, "IdPost"), _v(head, "IdColl"), _v(head, "CodColl") or _v(head, "CodCol"),
                     _v(head, "CodBud"))
