"""A PES_Aller as people read it (bordereaux, pièces, lignes, tiers, amounts, PJ), parsed as a stream into plain dataclasses.

The file is fed to lxml's event-driven parser (``XMLParser(target=…)``) in chunks: every value of a PES is in an
attribute ``V``, so the start events carry all that is shown, and the text of a PJ's ``Fichier`` (the base64 of a
gzip, often most of the file) is decoded on the fly to learn its size and never kept.  ``iterparse`` would build
each ``Fichier`` element with its whole text; this never holds more than a chunk of it.  What is kept is bounded:
past ``max_lines`` lignes the reader stops with a French ``ValidationError`` instead of growing without end.

``PjExtractor`` reads the same stream for one PJ and hands its decoded bytes (base64, then gunzip when the payload
is a gzip) to a callback as they come.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from flowbus.errors import ValidationError

ALLER_NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
DOMAINS = {"PES_DepenseAller": "depense", "PES_RecetteAller": "recette"}
MAX_LINES = 10_000  # what one page can show (about 1 Ko of HTML each); a PES usually has a few hundred lignes
TIERS_ID_KINDS = {"01": "SIRET", "02": "SIREN", "03": "FINESS", "04": "NIR"}


def _amount(value: str | None) -> Decimal | None:
    if value is None or not value.strip():
        return None
    try:
        return Decimal(value.strip().replace(",", "."))
    except InvalidOperation:
        return None


def _sum(values: list[Decimal | None]) -> Decimal | None:
    present = [v for v in values if v is not None]
    return sum(present, Decimal(0)) if present else None


@dataclass(frozen=True)
class Tiers:
    nom: str | None  # Civilite Prenom Nom ComplNom, as a person reads it
    id_tiers: str | None  # IdTiers (SIRET, SIREN, FINESS; a NIR is never shown)
    id_kind: str | None  # NatIdTiers as a word: SIRET, SIREN, FINESS, NIR
    ref_tiers: str | None  # RefTiers: the ordonnateur's own reference
    categorie: str | None  # CatTiers
    nature_juridique: str | None  # NatJur
    adresse: str | None  # Adr1-3, CP Ville, Pays on one line
    banque: str | None  # LibBanc / TitCpte (the account numbers stay in the file)

    @property
    def identifiers(self) -> list[str]:
        """« SIRET 123… », « réf. 811 »: what tells this tiers apart (a NIR is said to exist, never shown)."""
        out = []
        if self.id_kind == "NIR":
            out.append("NIR (non affiché)")
        elif self.id_tiers:
            out.append(f"{self.id_kind or 'identifiant'} {self.id_tiers}")
        if self.ref_tiers:
            out.append(f"réf. {self.ref_tiers}")
        return out


@dataclass(frozen=True)
class Ligne:
    numero: str | None  # IdLigne
    libelle: str | None  # ObjLignePce (recette), LibVir1 + LibVir2 (dépense)
    nature: str | None  # compte par nature
    fonction: str | None
    operation: str | None
    produit: str | None  # CodProdLoc (recette)
    mt_ht: Decimal | None
    mt_tva: Decimal | None
    tiers: tuple[Tiers, ...] = ()

    @property
    def mt_ttc(self) -> Decimal | None:
        """HT + TVA; the HT alone when there is no TVA (MtHT is then the TTC amount, says the XSD)."""
        if self.mt_ht is None:
            return None
        return self.mt_ht + (self.mt_tva or Decimal(0))

    @property
    def imputation(self) -> str:
        parts = [f"compte {self.nature}" if self.nature else "", f"fonction {self.fonction}" if self.fonction else "",
                 f"opération {self.operation}" if self.operation else "",
                 f"produit {self.produit}" if self.produit else ""]
        return " · ".join(p for p in parts if p)


@dataclass(frozen=True)
class Piece:
    numero: str | None  # IdPce: the mandat's or titre's number
    type: str | None  # TypPce
    nature: str | None  # NatPce
    objet: str | None  # Obj (dépense) / ObjPce (recette)
    lignes: tuple[Ligne, ...] = ()
    pj_refs: tuple[str, ...] = ()  # IdUnique of the PJ it points to (PJRef)

    @property
    def mt_ht(self) -> Decimal | None:
        return _sum([ln.mt_ht for ln in self.lignes])

    @property
    def mt_tva(self) -> Decimal | None:
        return _sum([ln.mt_tva for ln in self.lignes])

    @property
    def mt_ttc(self) -> Decimal | None:
        return _sum([ln.mt_ttc for ln in self.lignes])

    @property
    def tiers(self) -> list[Tiers]:
        """Every distinct tiers of its lignes, in order."""
        seen: list[Tiers] = []
        for ln in self.lignes:
            seen += [t for t in ln.tiers if t not in seen]
        return seen

    @property
    def imputations(self) -> list[str]:
        out: list[str] = []
        for ln in self.lignes:
            if ln.imputation and ln.imputation not in out:
                out.append(ln.imputation)
        return out


@dataclass(frozen=True)
class Bordereau:
    domain: str  # depense | recette
    id: str | None  # Bordereau/@Id
    numero: str | None  # IdBord
    date: str | None  # DteBordEm (AAAA-MM-JJ)
    exercice: str | None  # Exer
    type: str | None  # TypBord
    nbr_pce: int | None  # NbrPce: what the file declares
    mt_ht: Decimal | None  # MtBordHT (dépense) / MtBordHt (recette): what the file declares
    mt_tva: Decimal | None  # MtBordTVA
    mt_cumul_annuel: Decimal | None
    signed: bool
    pieces: tuple[Piece, ...] = ()

    @property
    def nb_pieces(self) -> int:
        return len(self.pieces)

    @property
    def lines_ht(self) -> Decimal | None:
        """The sum of its lignes' HT amounts (to compare with the declared MtBordHT)."""
        return _sum([p.mt_ht for p in self.pieces])

    @property
    def lines_tva(self) -> Decimal | None:
        return _sum([p.mt_tva for p in self.pieces])

    @property
    def total_ht(self) -> Decimal | None:
        return self.mt_ht if self.mt_ht is not None else self.lines_ht

    @property
    def total_ttc(self) -> Decimal | None:
        ht = self.total_ht
        if ht is None:
            return None
        tva = self.mt_tva if self.mt_tva is not None else self.lines_tva
        return ht + (tva or Decimal(0))


@dataclass(frozen=True)
class PieceJointe:
    position: int  # 0-based rank in PES_PJ: how the page names it for download
    id_unique: str | None
    nom: str | None  # NomPJ
    type_pj: str | None  # TypePJ
    description: str | None
    media_type: str | None  # Fichier/@MIMEType
    gzipped: bool
    size: int | None  # decoded size in bytes; None when the payload cannot be decoded
    problem: str | None = None  # why it cannot be decoded, in French


@dataclass(frozen=True)
class PesView:
    nom_fic: str | None
    typ_fic: str | None
    emetteur: str | None  # Emetteur Sigle (Adresse: the software and its version)
    dte_str: str | None
    id_post: str | None
    libelle_poste: str | None
    id_coll: str | None
    cod_col: str | None
    cod_bud: str | None
    libelle_col_bud: str | None
    info_dematerialisee: str | None
    signed_global: bool
    bordereaux: tuple[Bordereau, ...] = ()
    pjs: tuple[PieceJointe, ...] = ()
    other_parts: tuple[str, ...] = ()  # PES_Facture, PES_Marche…: in the file, not shown here

    @property
    def exercices(self) -> list[str]:
        return sorted({b.exercice for b in self.bordereaux if b.exercice})

    @property
    def nb_pieces(self) -> int:
        return sum(b.nb_pieces for b in self.bordereaux)


# ---- base64 (+ gzip) payloads, decoded as they stream ------------------------------------------------


class PayloadDecoder:
    """A PJ ``Fichier`` text fed in pieces → its bytes: base64 decoded 4 characters at a time, then gunzipped when
    the decoded payload starts with the gzip magic (finance software gzips; a raw base64 payload is accepted)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._pending = ""
        self._head = b""
        self._gzip: Any = None  # zlib decompressor once the payload is known to be a gzip
        self._decided = False
        self.gzipped = False
        self.size = 0

    def feed(self, text: str) -> None:
        self._pending += "".join(text.split())
        cut = len(self._pending) - len(self._pending) % 4
        if cut:
            chunk, self._pending = self._pending[:cut], self._pending[cut:]
            self._bytes(self._b64(chunk))

    def close(self) -> None:
        if self._pending:
            raise ValidationError("contenu de PJ non décodable en base64 : longueur incomplète", field="PES_PJ")
        if not self._decided:  # fewer than 2 bytes in all: too short to be a gzip
            data, self._head = self._head, b""
            self._decide_on(data)
            self._bytes(data)
        if self._gzip is not None:
            try:
                self._out(self._gzip.flush())
            except zlib.error as exc:
                raise ValidationError(f"contenu de PJ : gzip corrompu ({exc})", field="PES_PJ") from exc
            if not self._gzip.eof:
                raise ValidationError("contenu de PJ : gzip tronqué", field="PES_PJ")

    @staticmethod
    def _b64(chunk: str) -> bytes:
        try:
            return base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError(f"contenu de PJ non décodable en base64 : {exc}", field="PES_PJ") from exc

    def _bytes(self, data: bytes) -> None:
        if not self._decided:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._decide_on(data)
        if self._gzip is not None:
            try:
                self._out(self._gzip.decompress(data))
            except zlib.error as exc:
                raise ValidationError(f"contenu de PJ : gzip corrompu ({exc})", field="PES_PJ") from exc
        else:
            self._out(data)

    def _decide_on(self, first: bytes) -> None:
        self._decided = True
        if first[:2] == b"\x1f\x8b":
            self.gzipped = True
            self._gzip = zlib.decompressobj(wbits=31)

    def _out(self, data: bytes) -> None:
        if data:
            self.size += len(data)
            self._sink(data)


# ---- the stream reader ------------------------------------------------------------------------------------


def _malformed(exc: etree.XMLSyntaxError) -> ValidationError:
    return ValidationError(f"le fichier n'est pas un XML bien formé (ligne {exc.lineno} : {exc.msg})", field="pes")


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


class _Obj:
    """One object being read (bordereau, pièce, ligne, tiers, PJ): its values by element name, its children."""

    def __init__(self, kind: str, depth: int, **extra: Any) -> None:
        self.kind, self.depth = kind, depth
        self.values: dict[str, str] = {}
        self.children: list[Any] = []
        self.extra = dict(extra)


_SHOWN = {"Enveloppe", "EnTetePES", "PES_DepenseAller", "PES_RecetteAller", "PES_PJ"}
# where an object takes its values: the child blocks of the object's element whose ``V`` belong to it
_BLOCKS = {"bordereau": ("BlocBordereau",), "piece": ("BlocPiece",), "ligne": ("BlocLignePiece",),
           "tiers": ("InfoTiers", "Adresse", "CpteBancaire")}


class PesViewReader:
    """lxml parser target building a ``PesView``; feed it with ``reader.feed(chunk)``, then ``reader.close()``."""

    def __init__(self, *, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self._stack: list[str] = []
        self._objs: list[_Obj] = []
        self._root_seen = False
        self._skip_below: int | None = None  # inside a ds:Signature: nothing there is shown
        self._head: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._info_demat: str | None = None
        self._signed_global = False
        self._domain: str | None = None
        self._bordereaux: list[Bordereau] = []
        self._pjs: list[PieceJointe] = []
        self._lines = 0
        self._others: list[str] = []
        self._decoder: PayloadDecoder | None = None
        self._decode_problem: str | None = None
        self._parser = etree.XMLParser(target=self, resolve_entities=False, no_network=True, huge_tree=True,
                                       load_dtd=False)

    # -- feeding
    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.feed(chunk)
        except etree.XMLSyntaxError as exc:
            raise _malformed(exc) from exc

    def result(self) -> PesView:
        """The PES once every chunk is fed; raises ``ValidationError`` (French) for an empty or cut file."""
        try:
            self._parser.close()
        except etree.XMLSyntaxError as exc:
            if not self._root_seen:
                raise ValidationError("le fichier est vide ou n'est pas du XML", field="pes") from exc
            raise _malformed(exc) from exc
        h, e = self._head, self._env
        return PesView(e.get("NomFic"), e.get("TypFic"), e.get("Sigle"), h.get("DteStr"), h.get("IdPost"),
                       h.get("LibellePoste"), h.get("IdColl"), h.get("CodCol"), h.get("CodBud"),
                       h.get("LibelleColBud"), self._info_demat, self._signed_global, tuple(self._bordereaux),
                       tuple(self._pjs), tuple(self._others))

    # -- lxml target interface
    def start(self, tag: Any, attrib: Any) -> None:
        name = _local(tag)
        depth = len(self._stack)
        self._stack.append(name)
        if self._skip_below is not None:
            return
        if depth == 0:
            if tag != f"{{{ALLER_NS}}}PES_Aller":
                raise ValidationError(
                    f"son élément racine « {name} » n'est pas dans l'espace de noms des PES V2 ({ALLER_NS})"
                    if name == "PES_Aller" else f"ce fichier est un « {name} », pas un PES_Aller", field="pes")
            self._root_seen = True
            return
        if isinstance(tag, str) and tag.startswith(f"{{{DS_NS}}}"):
            if name == "Signature" and depth == 1:
                self._signed_global = True
            elif name == "Signature" and self._objs and self._objs[-1].kind == "bordereau" \
                    and self._objs[-1].depth == depth - 1:
                self._objs[-1].extra["signed"] = True
            self._skip_below = depth  # nothing inside a signature is shown
            return
        if depth == 1:
            self._domain = DOMAINS.get(name)
            if name not in _SHOWN and name not in self._others:
                self._others.append(name)
            return
        parent = self._stack[-2]
        if self._open(name, parent, depth, attrib):
            return
        value = attrib.get("V")
        top = self._stack[1]
        if top == "Enveloppe":
            if parent in ("Parametres", "Emetteur") and value is not None:
                self._env.setdefault(name, value)
            return
        if top == "EnTetePES":
            if value is not None:
                self._head.setdefault(name, value)
            return
        if name == "InfoDematerialisee" and value is not None and self._info_demat is None:
            self._info_demat = value
        if not self._objs:
            return
        obj = self._objs[-1]
        if name == "IdUnique" and parent == "PJRef":
            holder = next((o for o in reversed(self._objs) if o.kind == "piece"), None)
            if holder is not None and value and value not in holder.extra.setdefault("refs", []):
                holder.extra["refs"].append(value)
            return
        if obj.kind == "pj":
            if depth == obj.depth + 1 and value is not None:
                obj.values.setdefault(name, value)
            elif name == "Fichier" and parent == "Contenu" and depth == obj.depth + 2:
                obj.extra["media_type"] = attrib.get("MIMEType")
                self._decoder = PayloadDecoder(lambda _b: None)
                self._decode_problem = None
            return
        blocks = _BLOCKS.get(obj.kind, ())
        if value is not None and len(self._stack) > obj.depth + 1 and self._stack[obj.depth + 1] in blocks:
            obj.values.setdefault(name, value)

    def data(self, text: str) -> None:
        if self._decoder is not None and self._decode_problem is None:
            try:
                self._decoder.feed(text)
            except ValidationError as exc:
                self._decode_problem = exc.message

    def end(self, tag: Any) -> None:
        depth = len(self._stack) - 1
        name = self._stack.pop()
        if self._skip_below is not None:
            if depth == self._skip_below:
                self._skip_below = None
            return
        if name == "Fichier" and self._decoder is not None:
            if self._decode_problem is None:
                try:
                    self._decoder.close()
                except ValidationError as exc:
                    self._decode_problem = exc.message
            pj = self._objs[-1]
            pj.extra["gzipped"] = self._decoder.gzipped
            pj.extra["size"] = None if self._decode_problem else self._decoder.size
            pj.extra["problem"] = self._decode_problem
            self._decoder = None
            return
        if self._objs and self._objs[-1].depth == depth:
            self._close(self._objs.pop())

    def close(self) -> None:
        return None

    def comment(self, text: str) -> None:  # comments carry nothing shown
        return None

    # -- objects
    def _open(self, name: str, parent: str, depth: int, attrib: Any) -> bool:
        kind = None
        if name == "Bordereau" and parent in DOMAINS:
            kind = "bordereau"
        elif name == "Piece" and parent == "Bordereau":
            kind = "piece"
        elif name == "LigneDePiece" and parent == "Piece":
            kind = "ligne"
            self._lines += 1
            if self._lines > self.max_lines:
                raise ValidationError(f"ce PES compte plus de {self.max_lines:,} lignes de pièce ; c'est trop pour "
                                      f"une page : téléchargez le fichier pour le lire dans votre logiciel financier"
                                      .replace(",", " "), field="pes")
        elif name == "Tiers" and parent == "LigneDePiece":
            kind = "tiers"
        elif name == "PJ" and parent == "PES_PJ":
            kind = "pj"
        if kind is None:
            return False
        self._objs.append(_Obj(kind, depth, domain=self._domain, id=attrib.get("Id")))
        return True

    def _close(self, obj: _Obj) -> None:
        v = obj.values
        if obj.kind == "tiers":
            self._objs[-1].children.append(_tiers(v))
        elif obj.kind == "ligne":
            libelle = v.get("ObjLignePce") or " — ".join(x for x in (v.get("LibVir1"), v.get("LibVir2")) if x) or None
            self._objs[-1].children.append(Ligne(
                v.get("IdLigne"), libelle, v.get("Nature"), v.get("Fonction"), v.get("Operation"), v.get("CodProdLoc"),
                _amount(v.get("MtHT")), _amount(v.get("MtTVA")), tuple(obj.children)))
        elif obj.kind == "piece":
            self._objs[-1].children.append(Piece(
                v.get("IdPce"), v.get("TypPce"), v.get("NatPce"), v.get("Obj") or v.get("ObjPce"),
                tuple(obj.children), tuple(obj.extra.get("refs", ()))))
        elif obj.kind == "bordereau":
            nbr = v.get("NbrPce")
            self._bordereaux.append(Bordereau(
                obj.extra.get("domain") or "depense", obj.extra.get("id"), v.get("IdBord"), v.get("DteBordEm"),
                v.get("Exer"), v.get("TypBord"), int(nbr) if nbr and nbr.isdigit() else None,
                _amount(v.get("MtBordHT") or v.get("MtBordHt")), _amount(v.get("MtBordTVA")),
                _amount(v.get("MtCumulAnnuel")), bool(obj.extra.get("signed")), tuple(obj.children)))
        elif obj.kind == "pj":
            self._pjs.append(PieceJointe(
                len(self._pjs), v.get("IdUnique"), v.get("NomPJ"), v.get("TypePJ"), v.get("Description"),
                obj.extra.get("media_type"), bool(obj.extra.get("gzipped")), obj.extra.get("size"),
                obj.extra.get("problem") or (None if "size" in obj.extra else "la PJ n'a pas de contenu (Fichier)")))


def _tiers(v: dict[str, str]) -> Tiers:
    nom = " ".join(x for x in (v.get("Civilite"), v.get("Prenom"), v.get("Nom"), v.get("ComplNom")) if x) or None
    street = ", ".join(x for x in (v.get("Adr1"), v.get("Adr2"), v.get("Adr3")) if x)
    town = " ".join(x for x in (v.get("CP"), v.get("Ville")) if x)
    adresse = ", ".join(x for x in (street, town, v.get("Pays")) if x) or None
    banque = " — ".join(x for x in (v.get("LibBanc"), v.get("TitCpte")) if x) or None
    id_tiers = v.get("IdTiers")
    kind = TIERS_ID_KINDS.get(v.get("NatIdTiers") or "")
    if kind is None and id_tiers and len(id_tiers) == 15:  # 13 digits and a 2-digit key: a NIR, whatever the file says
        kind = "NIR"
    if kind == "NIR":
        id_tiers = None  # a person's social security number: never kept for the page
    return Tiers(nom, id_tiers, kind, v.get("RefTiers"), v.get("CatTiers"), v.get("NatJur"), adresse, banque)


def read_pes_view(data: bytes, *, max_lines: int = MAX_LINES, chunk: int = 1 << 16) -> PesView:
    """The whole file at once (tests, commands): the same stream reader, fed ``chunk`` bytes at a time."""
    reader = PesViewReader(max_lines=max_lines)
    for i in range(0, len(data), chunk):
        reader.feed(data[i:i + chunk])
    return reader.result()


# ---- one PJ's bytes -----------------------------------------------------------------------------------


@dataclass
class PjExtractor:
    """lxml parser target that hands the decoded bytes of the PJ at ``position`` (0-based) to ``sink``.

    After ``close()``: ``found``, ``nom``, ``id_unique``, ``media_type`` (its ``NomPJ`` follows its content in the
    file, so the name is known only at the end).
    """

    position: int
    sink: Callable[[bytes], None]
    found: bool = False
    done: bool = False  # the PJ has been read whole: the rest of the file need not be parsed
    nom: str | None = None
    id_unique: str | None = None
    media_type: str | None = None
    _stack: list[str] = field(default_factory=list)
    _seen: int = -1
    _decoder: PayloadDecoder | None = None
    _parser: Any = None

    def __post_init__(self) -> None:
        self._parser = etree.XMLParser(target=self, resolve_entities=False, no_network=True, huge_tree=True,
                                       load_dtd=False)

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.feed(chunk)
        except etree.XMLSyntaxError as exc:
            raise _malformed(exc) from exc

    def finish(self) -> None:
        try:
            self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise _malformed(exc) from exc

    def start(self, tag: Any, attrib: Any) -> None:
        name = _local(tag)
        self._stack.append(name)
        path = self._stack
        if len(path) == 3 and path[1] == "PES_PJ" and name == "PJ":
            self._seen += 1
            if self._seen == self.position:
                self.found = True
        if not self.found or self._seen != self.position or len(path) < 3 or path[2] != "PJ":
            return
        if len(path) == 4 and name in ("NomPJ", "IdUnique"):
            setattr(self, "nom" if name == "NomPJ" else "id_unique", attrib.get("V"))
        elif len(path) == 5 and name == "Fichier" and path[3] == "Contenu":
            self.media_type = attrib.get("MIMEType")
            self._decoder = PayloadDecoder(self.sink)

    def data(self, text: str) -> None:
        if self._decoder is not None:
            self._decoder.feed(text)

    def end(self, tag: Any) -> None:
        name = self._stack.pop()
        if name == "Fichier" and self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        elif name == "PJ" and len(self._stack) == 2 and self.found and self._seen == self.position:
            self.done = True

    def close(self) -> None:
        return None

    def comment(self, text: str) -> None:
        return None
