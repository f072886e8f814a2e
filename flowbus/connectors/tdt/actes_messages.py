"""ACTES messages after the transmission: parse what the préfecture sends, build the other messages.

Dispatch is on the XML root element, never on the file name (tdt.md §1.6).  ``parse_message``
turns every préfecture message into an ``ActesMessage`` whose ``event`` says what it means for
the document: ``ar`` (acquittement, with IDActe and DateReception), ``anomaly`` (with the
reason), ``cancelled`` (ARAnnulation), ``classification``, ``courrier_simple``,
``demande_pieces``, ``lettre_observations``, ``defere``…  The builders write the messages
of both directions (the préfecture's side serves the S²LOW simulator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from lxml import etree

from flowbus import schemas
from flowbus.connectors.tdt.actes import NS, NSMAP, Acte, _fichier, _q, _serialize, donnees_acte
from flowbus.errors import PermanentError

# root element → (message code, event)
MESSAGE_KINDS: dict[str, tuple[str | None, str]] = {
    "Acte": ("1-1", "acte"),
    "ARActe": ("1-2", "ar"),
    "AnomalieActe": ("1-3", "anomaly"),
    "AnomalieEnveloppe": (None, "anomaly"),
    "CourrierSimple": ("2-1", "courrier_simple"),
    "ReponseCourrierSimple": ("2-2", "reponse"),
    "DemandePieceComplementaire": ("3-1", "demande_pieces"),
    "ARDemandePieceComplementaire": ("3-2", "ar_courrier"),
    "RefusPieceComplementaire": ("3-3", "reponse"),
    "PieceComplementaire": ("3-4", "reponse"),
    "ARPieceComplementaire": ("3-5", "ar_reponse"),
    "LettreObservations": ("4-1", "lettre_observations"),
    "ARLettreObservations": ("4-2", "ar_courrier"),
    "RejetLettreObservations": ("4-3", "reponse"),
    "ReponseLettreObservations": ("4-4", "reponse"),
    "ARReponseRejetLettreObservations": ("4-5", "ar_reponse"),
    "DefereTA": ("5-1", "defere"),
    "Annulation": ("6-1", "annulation"),
    "ARAnnulation": ("6-2", "cancelled"),
    "DemandeClassification": ("7-1", "demande_classification"),
    "RetourClassification": ("7-2", "classification"),
    "ReponseClassificationSansChangement": ("7-2", "classification_unchanged"),
    "EnveloppeMISILLCL": (None, "enveloppe"),
    "EnveloppeCLMISILL": (None, "enveloppe"),
}

# Préfecture letters that open a new exchange, with their S²LOW transaction type (tdt.md §3.5).
PREFECTURE_LETTERS = {"CourrierSimple": 2, "DemandePieceComplementaire": 3, "LettreObservations": 4, "DefereTA": 5}
LETTER_LABELS = {"courrier_simple": "Courrier simple", "demande_pieces": "Demande de pièces complémentaires",
                 "lettre_observations": "Lettre d'observations", "defere": "Déféré au tribunal administratif"}


@dataclass(frozen=True)
class ActesMessage:
    """One parsed ACTES message.  ``date`` is the message's own date: DateReception for ARs,
    DateCourrierPref for letters, Date for anomalies, DateDepot for a déféré."""

    root: str
    code: str | None
    event: str
    id_acte: str | None = None
    date: date | None = None
    numero_interne: str | None = None
    decision_date: date | None = None
    nature_code: int | None = None
    anomaly_nature: str | None = None
    detail: str | None = None
    text: str | None = None  # DescriptionPieces, Motif, NatureIllegalite
    classification_date: date | None = None  # ClassificationDateVersionEnCours / DateClassification
    files: tuple[str, ...] = ()
    siren: str | None = None  # Destinataire / IDCL

    @property
    def reason(self) -> str | None:
        """For an anomaly: the préfecture's reason as a person reads it."""
        if self.event != "anomaly":
            return None
        what = "de l'enveloppe" if self.root == "AnomalieEnveloppe" else "de l'acte"
        text = f"Anomalie {what} signalée par la préfecture (nature {self.anomaly_nature})"
        return f"{text} : {self.detail}" if self.detail else text


def _d(text: str | None) -> date | None:
    return date.fromisoformat(text.strip()) if text and text.strip() else None


def _attr(el: etree._Element | None, name: str) -> str | None:
    if el is None:
        return None
    return el.get(f"{{{NS}}}{name}", el.get(name))


def parse_message(xml: bytes) -> ActesMessage:
    """Parse any ACTES message; raises PermanentError if it is not ACTES XML."""
    try:
        root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"message ACTES illisible : {exc}") from exc
    qname = etree.QName(root)
    if qname.namespace != NS or qname.localname not in MESSAGE_KINDS:
        raise PermanentError(f"élément {qname.localname!r} : ce n'est pas un message ACTES v1.1")
    name = qname.localname
    code, event = MESSAGE_KINDS[name]

    def text(tag: str, el: etree._Element = root) -> str | None:
        value = el.findtext(f"{{{NS}}}{tag}")
        return value.strip() if value is not None else None

    recu = root.find(f"{{{NS}}}ActeRecu")
    acte_el = root if name == "Acte" else recu
    files = tuple(t.strip() for t in (e.text for e in root.iter(f"{{{NS}}}NomFichier")) if t)
    msg_date = _d(_attr(root, "DateReception")) or _d(_attr(root, "DateCourrierPref")) or _d(text("Date")) \
        or _d(text("DateDepot"))
    if name == "ARPieceComplementaire" or name == "ARReponseRejetLettreObservations":
        infos = root.find(f"{{{NS}}}InfosCourrierPref")
        id_acte = _attr(infos, "IDActe")
    else:
        id_acte = _attr(root, "IDActe")
    siren = None
    for el in (root.find(f"{{{NS}}}Destinataire"), root.find(f".//{{{NS}}}IDCL")):
        if el is not None:
            siren = el.get("{http://xml.insee.fr/schema}SIREN")
            break
    nature = _attr(acte_el, "CodeNatureActe")
    return ActesMessage(
        root=name, code=code, event=event, id_acte=id_acte, date=msg_date,
        numero_interne=_attr(acte_el, "NumeroInterne"), decision_date=_d(_attr(acte_el, "Date")),
        nature_code=int(nature) if nature else None,
        anomaly_nature=text("Nature") if event == "anomaly" else None,
        detail=text("Detail"),
        text=text("DescriptionPieces") or text("Motif") or text("NatureIllegalite"),
        classification_date=_d(text("ClassificationDateVersionEnCours")) or _d(text("DateClassification")),
        files=files, siren=siren,
    )


# ---- préfecture → collectivité (simulator side) -------------------------------------------------


def build_ar_acte(acte: Acte, *, id_acte: str, date_reception: date, classification_date: date,
                  classification_en_cours: date, document_name: str, annex_names: Sequence[str]) -> bytes:
    root = etree.Element(_q("ARActe"), nsmap=NSMAP)
    root.set(_q("IDActe"), id_acte)
    root.set(_q("DateReception"), date_reception.isoformat())
    donnees_acte(etree.SubElement(root, _q("ActeRecu")), acte, classification_date=classification_date,
                 document_name=document_name, annex_names=annex_names)
    etree.SubElement(root, _q("ClassificationDateVersionEnCours")).text = classification_en_cours.isoformat()
    return _serialize(root)


def build_anomalie_acte(acte: Acte, *, on: date, nature: str, detail: str | None, classification_date: date,
                        classification_en_cours: date, document_name: str, annex_names: Sequence[str]) -> bytes:
    root = etree.Element(_q("AnomalieActe"), nsmap=NSMAP)
    etree.SubElement(root, _q("Date")).text = on.isoformat()
    etree.SubElement(root, _q("Nature")).text = nature
    if detail:
        etree.SubElement(root, _q("Detail")).text = detail
    donnees_acte(etree.SubElement(root, _q("ActeRecu")), acte, classification_date=classification_date,
                 document_name=document_name, annex_names=annex_names)
    etree.SubElement(root, _q("ClassificationDateVersionEnCours")).text = classification_en_cours.isoformat()
    return _serialize(root)


def build_ar_annulation(id_acte: str, date_reception: date) -> bytes:
    root = etree.Element(_q("ARAnnulation"), nsmap=NSMAP)
    root.set(_q("IDActe"), id_acte)
    root.set(_q("DateReception"), date_reception.isoformat())
    return _serialize(root)


def build_prefecture_letter(kind: str, *, id_acte: str, on: date, document_name: str,
                            text: str = "", pieces: Sequence[str] = ()) -> bytes:
    """A préfecture letter: ``CourrierSimple``, ``DemandePieceComplementaire``, ``LettreObservations``
    or ``DefereTA`` (for a déféré ``on`` is the DateDepot and ``text`` the NatureIllegalite)."""
    if kind not in PREFECTURE_LETTERS:
        raise ValueError(f"unknown préfecture letter {kind!r}")
    root = etree.Element(_q(kind), nsmap=NSMAP)
    root.set(_q("IDActe"), id_acte)
    if kind == "DefereTA":
        etree.SubElement(root, _q("DateDepot")).text = on.isoformat()
        etree.SubElement(root, _q("NatureIllegalite")).text = text or "Illégalité externe"
        pj = etree.SubElement(root, _q("PiecesJointes"))
        for name in [document_name, *pieces]:
            _fichier(pj, "PieceJointe", name)
        return _serialize(root)
    root.set(_q("DateCourrierPref"), on.isoformat())
    if kind == "DemandePieceComplementaire":
        etree.SubElement(root, _q("DescriptionPieces")).text = text or "Pièces complémentaires"
    elif kind == "LettreObservations":
        etree.SubElement(root, _q("Motif")).text = text or "Observations"
    _fichier(root, "Document", document_name)
    return _serialize(root)


def build_ar_reponse(kind: str, *, id_acte: str, date_courrier: date, date_reception: date) -> bytes:
    """``ARPieceComplementaire`` or ``ARReponseRejetLettreObservations``: the AR of the collectivité's answer."""
    root = etree.Element(_q(kind), nsmap=NSMAP)
    root.set(_q("DateReception"), date_reception.isoformat())
    infos = etree.SubElement(root, _q("InfosCourrierPref"))
    infos.set(_q("IDActe"), id_acte)
    infos.set(_q("DateCourrierPref"), date_courrier.isoformat())
    return _serialize(root)


def build_enveloppe_misillcl(*, departement: str, siren: str, message_names: Sequence[str],
                             arrondissement: int | None = None) -> bytes:
    root = etree.Element(_q("EnveloppeMISILLCL"), nsmap=NSMAP)
    em = etree.SubElement(root, _q("Emetteur"))
    if arrondissement is None:
        etree.SubElement(em, _q("IDPref")).set(_q("Departement"), departement)
    else:
        sp = etree.SubElement(em, _q("IDSousPref"))
        sp.set(_q("Departement"), departement)
        sp.set(_q("Arrondissement"), str(arrondissement))
    forms = etree.SubElement(root, _q("FormulairesEnvoyes"))
    for name in message_names:
        _fichier(forms, "Formulaire", name)
    etree.SubElement(root, _q("Destinataire")).set("{http://xml.insee.fr/schema}SIREN", siren)
    return _serialize(root)


# ---- collectivité → préfecture ----------------------------------------------------------------


def build_annulation(id_acte: str) -> bytes:
    root = etree.Element(_q("Annulation"), nsmap=NSMAP)
    root.set(_q("IDActe"), id_acte)
    return schemas.check_actes(_serialize(root), "annulation")


def build_demande_classification(current: date | None = None) -> bytes:
    root = etree.Element(_q("DemandeClassification"), nsmap=NSMAP)
    if current is not None:
        etree.SubElement(root, _q("DateClassification")).text = current.isoformat()
    return schemas.check_actes(_serialize(root), "demande de classification")


# answer kind (S²LOW type_envoie per letter type) → root element
RESPONSE_ROOTS = {
    (2, 2): "ReponseCourrierSimple",
    (3, 3): "RefusPieceComplementaire",
    (3, 4): "PieceComplementaire",
    (4, 3): "RejetLettreObservations",
    (4, 4): "ReponseLettreObservations",
}


def build_reponse(letter_type: int, type_envoi: int, *, id_acte: str, date_courrier: date,
                  document_names: Sequence[str]) -> bytes:
    """The collectivité's answer to a préfecture letter (codes 2-2, 3-3, 3-4, 4-3, 4-4)."""
    kind = RESPONSE_ROOTS.get((letter_type, type_envoi))
    if kind is None:
        raise PermanentError(f"réponse {letter_type}-{type_envoi} impossible : attendu 2-2, 3-3, 3-4, 4-3 ou 4-4",
                             field="type_envoie")
    if not document_names:
        raise PermanentError("une réponse à la préfecture doit porter un document", field="document")
    root = etree.Element(_q(kind), nsmap=NSMAP)
    root.set(_q("IDActe"), id_acte)
    root.set(_q("DateCourrierPref"), date_courrier.isoformat())
    if kind == "PieceComplementaire":
        docs = etree.SubElement(root, _q("Documents"))
        for name in document_names:
            _fichier(docs, "Document", name)
    else:
        _fichier(root, "Document", document_names[0])
    return schemas.check_actes(_serialize(root), "réponse à la préfecture")
