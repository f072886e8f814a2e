"""ACTES v1.1 (contrôle de légalité): validate an act, build its messages and archive.

What the standard fixes (../shared/reference/tdt.md §1): the act message ``actes:Acte`` (1-1),
the enveloppe ``actes:EnveloppeCLMISILL``, the flat tar.gz archive and the names of every file
in it (``<DEP>-<SIREN>-<YYYYMMDD>-<NUMERO>-<NAT>-1-1_<seq>``).  Messages are written in
ISO-8859-1, as S²LOW does.  The préfecture's answers are parsed in ``actes_messages.py``.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from lxml import etree

from flowbus import schemas
from flowbus.connectors.tdt.classification import Classification
from flowbus.errors import ValidationError

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
INSEE_NS = "http://xml.insee.fr/schema"
NSMAP = {"actes": NS, "insee": INSEE_NS}

# Code nature de l'acte → abbreviation used in file names and IDActe (TdtConnecteur::getShortenedNatureActe).
NATURES = {1: "DE", 2: "AR", 3: "AI", 4: "CC", 5: "BF", 6: "AU"}
NATURE_LABELS = {1: "Délibérations", 2: "Actes réglementaires", 3: "Actes individuels",
                 4: "Contrats, conventions et avenants", 5: "Documents budgétaires et financiers", 6: "Autres"}

NUMERO_RE = re.compile(r"^([A-Z0-9][A-Z0-9_]{0,13})?[A-Z0-9]$")  # S²LOW ActesTransaction rule
TYPE_PJ_RE = re.compile(r"^[A-Z0-9_]{5}$")
DEPARTEMENT_RE = re.compile(r"^[09][0-9][AB0-9]$")
SIREN_RE = re.compile(r"^[0-9]{9}$")
OBJET_MAX = 499  # S²LOW keeps 499 of the XSD's 500
ARCHIVE_MAX_SIZE = 150 * 1024 * 1024  # ACTES_ARCHIVE_MAX_SIZE of current S²LOW
ANNEX_MAX_SIZE = ARCHIVE_MAX_SIZE

MEDIA_EXT = {"application/pdf": "pdf", "application/xml": "xml", "text/xml": "xml",
             "image/png": "png", "image/jpeg": "jpg"}


def sniff_media_type(content: bytes) -> str | None:
    """Media type from the first bytes (what the préfecture accepts: PDF, XML, PNG, JPEG)."""
    head = content[:16].lstrip()
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "application/xml"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


@dataclass(frozen=True)
class ActeFile:
    """The act or one annex: its bytes, original name and typology code (``CodeTypePJ``)."""

    filename: str
    content: bytes
    type_pj: str | None = None

    @property
    def media_type(self) -> str | None:
        return sniff_media_type(self.content)

    @property
    def extension(self) -> str:
        return MEDIA_EXT.get(self.media_type or "", "bin")


@dataclass(frozen=True)
class Acte:
    """What an act transmission carries (the form fields of S²LOW ``actes_transac_create``)."""

    nature_code: int
    matiere: tuple[int, ...]  # classification codes, 2 to 5 levels, e.g. (7, 1)
    decision_date: date
    numero_interne: str
    objet: str
    document: ActeFile | None
    annexes: tuple[ActeFile, ...] = ()
    document_papier: bool = False
    precedent_id_acte: str | None = None

    @property
    def nature_abbrev(self) -> str:
        return NATURES[self.nature_code]

    @property
    def classif(self) -> str:
        return ".".join(str(c) for c in self.matiere)


@dataclass(frozen=True)
class Emetteur:
    """The collectivité as the enveloppe names it (checked by the TdT against its account)."""

    siren: str
    departement: str
    arrondissement: int = 0
    nature: str = "02"  # code nature de la collectivité (2 digits), as the préfecture registered the account
    adresses_retour: tuple[str, ...] = ()
    referent_nom: str | None = None
    referent_telephone: str | None = None
    referent_email: str | None = None


# ---- validation ------------------------------------------------------------------------------


def parse_classif(text: str | Sequence[int], *, field_name: str = "classification") -> tuple[int, ...]:
    """``"7.1"`` or ``[7, 1]`` → ``(7, 1)``; raises ValidationError naming the field."""
    if isinstance(text, str):
        parts = [p for p in text.strip().split(".")]
        if not text.strip() or not all(p.isdigit() for p in parts):
            raise ValidationError(f"code de classification {text!r} invalide : attendu des nombres séparés par "
                                  "des points, par ex. « 7.1 »", field=field_name)
        codes = tuple(int(p) for p in parts)
    else:
        codes = tuple(int(c) for c in text)
    if not 2 <= len(codes) <= 5:
        raise ValidationError(f"la classification doit avoir de 2 à 5 niveaux (reçu {'.'.join(map(str, codes))!r})",
                              field=field_name)
    return codes


def acte_errors(acte: Acte, *, today: date, classification: Classification | None = None,
                annex_max_size: int = ANNEX_MAX_SIZE, archive_max_size: int = ARCHIVE_MAX_SIZE) -> list[ValidationError]:
    """Every problem of ``acte`` before anything is sent, each naming its field."""
    errs: list[ValidationError] = []

    def err(field_name: str, message: str) -> None:
        errs.append(ValidationError(message, field=field_name))

    if acte.nature_code not in NATURES:
        err("nature_code", f"code nature {acte.nature_code!r} inconnu : attendu 1 (DE) à 6 (AU)")
    numero = acte.numero_interne
    if not numero:
        err("numero_interne", "le numéro interne de l'acte est obligatoire")
    elif len(numero) > 15:
        err("numero_interne", f"le numéro interne {numero!r} dépasse 15 caractères")
    elif not NUMERO_RE.match(numero):
        bad = sorted({c for c in numero if not (c.isascii() and (c.isupper() or c.isdigit() or c == "_"))})
        detail = f"caractères interdits {''.join(bad)!r}" if bad else "il ne peut ni commencer ni finir par « _ »"
        err("numero_interne", f"numéro interne {numero!r} invalide ({detail}) : seuls les majuscules A-Z, "
                              "les chiffres et « _ » sont permis")
    if acte.decision_date > today:
        err("decision_date", f"la date de décision {acte.decision_date.isoformat()} est dans le futur")
    objet = acte.objet.strip()
    if not objet:
        err("objet", "l'objet de l'acte est obligatoire")
    elif len(acte.objet) > OBJET_MAX:
        err("objet", f"l'objet fait {len(acte.objet)} caractères, au plus {OBJET_MAX} sont permis")
    else:
        try:
            acte.objet.encode("iso-8859-1")
        except UnicodeEncodeError as exc:
            err("objet", f"l'objet contient un caractère non transmissible ({acte.objet[exc.start]!r}) : "
                         "ACTES n'accepte que le jeu ISO-8859-1")
    if not 2 <= len(acte.matiere) <= 5:
        err("classification", "la classification doit avoir de 2 à 5 niveaux, par ex. « 7.1 »")
    elif classification is not None and not classification.has_matiere(acte.matiere):
        err("classification", f"le code de classification {acte.classif!r} n'existe pas dans la classification "
                              f"de la préfecture du {classification.date.isoformat()}")
    if acte.document is None:
        err("document", "le fichier de l'acte (PDF) est manquant")
    else:
        kind = acte.document.media_type
        xml_allowed = acte.nature_code == 5 and acte.matiere[:2] == (7, 1)
        if kind != "application/pdf" and not (xml_allowed and kind == "application/xml"):
            err("document", f"l'acte {acte.document.filename!r} doit être un PDF"
                            + (" ou un XML budgétaire" if xml_allowed else ""))
        _check_type_pj(err, "type_acte", acte.document.type_pj, acte, classification)
    total = len(acte.document.content) if acte.document else 0
    for i, annex in enumerate(acte.annexes):
        total += len(annex.content)
        if annex.media_type not in ("application/pdf", "application/xml", "image/png", "image/jpeg"):
            err(f"annexes[{i}]", f"l'annexe {annex.filename!r} n'est ni un PDF, ni un XML, ni une image PNG/JPEG")
        if len(annex.content) > annex_max_size:
            err(f"annexes[{i}]", f"l'annexe {annex.filename!r} fait {len(annex.content)} octets, "
                                 f"au-delà de la limite de {annex_max_size} octets")
        _check_type_pj(err, f"type_pj[{i}]", annex.type_pj, acte, classification)
    if total > archive_max_size:
        err("annexes", f"l'acte et ses annexes font {total} octets, au-delà de la limite de {archive_max_size} "
                       "octets d'une transmission")
    return errs


def _check_type_pj(err, field_name: str, code: str | None, acte: Acte, classification: Classification | None) -> None:
    if code is None:
        if classification is None or acte.nature_code not in classification.natures:
            err(field_name, "le type de pièce (typologie, par ex. « 99_DE ») est obligatoire")
        return
    if not TYPE_PJ_RE.match(code):
        err(field_name, f"type de pièce {code!r} invalide : 5 caractères A-Z, 0-9 ou « _ »")
    elif classification is not None and acte.nature_code in classification.natures:
        allowed = classification.natures[acte.nature_code].type_pj
        if code not in allowed:
            err(field_name, f"le type de pièce {code!r} n'est pas permis pour la nature "
                            f"{NATURES.get(acte.nature_code, '?')} (permis : {', '.join(allowed)})")


def validate_acte(acte: Acte, *, today: date, classification: Classification | None = None,
                  annex_max_size: int = ANNEX_MAX_SIZE, archive_max_size: int = ARCHIVE_MAX_SIZE) -> Acte:
    """Return ``acte`` with default typologies filled in, or raise the first ValidationError.

    The error's hint lists the other problems, so a person fixes everything at once.
    """
    acte = with_default_typology(acte, classification)
    errs = acte_errors(acte, today=today, classification=classification, annex_max_size=annex_max_size,
                       archive_max_size=archive_max_size)
    if errs:
        first = errs[0]
        others = "; ".join(f"{e.field}: {e.message}" for e in errs[1:])
        raise ValidationError(first.message, field=first.field, hint=f"aussi : {others}" if others else None)
    return acte


def with_default_typology(acte: Acte, classification: Classification | None) -> Acte:
    """Missing typology → first code of the act's nature (Pastell ``getDefaultTypology``)."""
    if classification is None or acte.nature_code not in classification.natures:
        return acte
    codes = classification.natures[acte.nature_code].type_pj
    if not codes:
        return acte
    default = codes[0]
    doc = acte.document
    if doc is not None and doc.type_pj is None:
        doc = ActeFile(doc.filename, doc.content, default)
    annexes = tuple(a if a.type_pj else ActeFile(a.filename, a.content, default) for a in acte.annexes)
    return Acte(acte.nature_code, acte.matiere, acte.decision_date, acte.numero_interne, acte.objet, doc,
                annexes, acte.document_papier, acte.precedent_id_acte)


# ---- names -----------------------------------------------------------------------------------


def id_acte(departement: str, siren: str, acte: Acte) -> str:
    """The préfecture's identifier ``DEP-SIREN-YYYYMMDD-NUMERO-NAT`` (decision date)."""
    return f"{departement}-{siren}-{acte.decision_date:%Y%m%d}-{acte.numero_interne}-{acte.nature_abbrev}"


def message_filename(departement: str, siren: str, acte: Acte, code: str = "1-1", seq: int = 0) -> str:
    return f"{id_acte(departement, siren, acte)}-{code}_{seq}.xml"


def piece_filename(departement: str, siren: str, acte: Acte, piece: ActeFile, seq: int, code: str = "1-1") -> str:
    prefix = f"{piece.type_pj}-" if piece.type_pj else ""
    return f"{prefix}{id_acte(departement, siren, acte)}-{code}_{seq}.{piece.extension}"


def enveloppe_filename(siren: str, on: date, serial: int, app: str = "EACT") -> str:
    if not 1 <= serial < 10000:
        raise ValidationError(f"numéro d'enveloppe {serial} hors de 1..9999", field="serial")
    return f"{app}--{siren}--{on:%Y%m%d}-{serial}.xml"


def archive_filename(enveloppe_name: str, trigramme: str = "SLO") -> str:
    return f"{trigramme}-{enveloppe_name[:-4]}.tar.gz"


# ---- XML -------------------------------------------------------------------------------------


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


def _fichier(parent: etree._Element, tag: str, filename: str) -> None:
    el = etree.SubElement(parent, _q(tag))
    etree.SubElement(el, _q("NomFichier")).text = filename


def donnees_acte(root: etree._Element, acte: Acte, *, classification_date: date, document_name: str,
                 annex_names: Sequence[str]) -> etree._Element:
    """Fill a ``DonneesActe`` element (used by ``Acte`` and echoed as ``ActeRecu``)."""
    root.set(_q("Date"), acte.decision_date.isoformat())
    root.set(_q("NumeroInterne"), acte.numero_interne)
    root.set(_q("CodeNatureActe"), str(acte.nature_code))
    for level, code in enumerate(acte.matiere, start=1):
        etree.SubElement(root, _q(f"CodeMatiere{level}")).set(_q("CodeMatiere"), str(code))
    etree.SubElement(root, _q("Objet")).text = acte.objet
    if acte.precedent_id_acte:
        etree.SubElement(root, _q("PrecedentIdentifiantActe")).set(_q("IDActe"), acte.precedent_id_acte)
    etree.SubElement(root, _q("ClassificationDateVersion")).text = classification_date.isoformat()
    _fichier(root, "Document", document_name)
    annexes = etree.SubElement(root, _q("Annexes"))
    annexes.set(_q("Nombre"), str(len(annex_names)))
    for name in annex_names:
        _fichier(annexes, "Annexe", name)
    etree.SubElement(root, _q("DocumentPapier")).text = "O" if acte.document_papier else "N"
    return root


def build_acte_message(acte: Acte, *, departement: str, siren: str, classification_date: date) -> bytes:
    """The 1-1 ``actes:Acte`` message, naming the files as they appear in the archive."""
    if acte.document is None:
        raise ValidationError("le fichier de l'acte (PDF) est manquant", field="document")
    root = etree.Element(_q("Acte"), nsmap=NSMAP)
    doc_name = piece_filename(departement, siren, acte, acte.document, 1)
    annex_names = [piece_filename(departement, siren, acte, a, i + 2) for i, a in enumerate(acte.annexes)]
    donnees_acte(root, acte, classification_date=classification_date, document_name=doc_name,
                 annex_names=annex_names)
    return schemas.check_actes(_serialize(root), "acte")


def build_enveloppe(emetteur: Emetteur, message_names: Sequence[str]) -> bytes:
    """``actes:EnveloppeCLMISILL`` listing the message files of one archive."""
    if not SIREN_RE.match(emetteur.siren):
        raise ValidationError(f"SIREN {emetteur.siren!r} invalide : 9 chiffres", field="siren")
    if not DEPARTEMENT_RE.match(emetteur.departement):
        raise ValidationError(f"département {emetteur.departement!r} invalide : 3 caractères, par ex. 034, 02A, 974",
                              field="departement")
    if not emetteur.adresses_retour:
        raise ValidationError("au moins une adresse de retour est obligatoire", field="adresses_retour")
    root = etree.Element(_q("EnveloppeCLMISILL"), nsmap=NSMAP)
    em = etree.SubElement(root, _q("Emetteur"))
    idcl = etree.SubElement(em, _q("IDCL"))
    idcl.set(f"{{{INSEE_NS}}}SIREN", emetteur.siren)
    idcl.set(_q("Departement"), emetteur.departement)
    idcl.set(_q("Arrondissement"), str(emetteur.arrondissement))
    idcl.set(_q("Nature"), emetteur.nature)
    if emetteur.referent_nom or emetteur.referent_telephone or emetteur.referent_email:
        ref = etree.SubElement(em, _q("Referent"))
        for tag, value in (("Nom", emetteur.referent_nom), ("Telephone", emetteur.referent_telephone),
                           ("Email", emetteur.referent_email)):
            if value:
                etree.SubElement(ref, _q(tag)).text = value
    retour = etree.SubElement(root, _q("AdressesRetour"))
    for address in emetteur.adresses_retour:
        etree.SubElement(retour, _q("Email")).text = address
    forms = etree.SubElement(root, _q("FormulairesEnvoyes"))
    for name in message_names:
        _fichier(forms, "Formulaire", name)
    return schemas.check_actes(_serialize(root), "enveloppe")


@dataclass(frozen=True)
class Archive:
    """A built transmission: the tar.gz bytes and the names of what is inside."""

    name: str
    content: bytes
    members: tuple[str, ...]
    enveloppe_name: str
    message_name: str
    id_acte: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


def tar_gz(files: Sequence[tuple[str, bytes]], *, mtime: float = 0) -> bytes:
    """Flat tar (no directories) compressed with gzip, as ``tar cf - files | gzip``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for name, content in files:
            if "/" in name:
                raise ValueError(f"archive members must be flat, got {name!r}")
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = int(mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def untar_gz(content: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                out[member.name.rsplit("/", 1)[-1]] = handle.read() if handle else b""
    return out


def build_archive(acte: Acte, emetteur: Emetteur, *, classification_date: date, on: date, serial: int,
                  trigramme: str = "SLO") -> Archive:
    """The whole 1-1 transmission: enveloppe, message, act and annexes in one tar.gz."""
    if acte.document is None:
        raise ValidationError("le fichier de l'acte (PDF) est manquant", field="document")
    dep, siren = emetteur.departement, emetteur.siren
    message_name = message_filename(dep, siren, acte)
    message = build_acte_message(acte, departement=dep, siren=siren, classification_date=classification_date)
    env_name = enveloppe_filename(siren, on, serial)
    enveloppe = build_enveloppe(emetteur, [message_name])
    files = [(env_name, enveloppe), (message_name, message),
             (piece_filename(dep, siren, acte, acte.document, 1), acte.document.content)]
    files += [(piece_filename(dep, siren, acte, a, i + 2), a.content) for i, a in enumerate(acte.annexes)]
    return Archive(archive_filename(env_name, trigramme), tar_gz(files), tuple(n for n, _ in files), env_name,
                   message_name, id_acte(dep, siren, acte), dict(files))
