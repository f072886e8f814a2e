"""The préfecture's classification (ACTES 7-2 ``RetourClassification``): parse, build, cache per entity.

Every act names a matière code (``7.1``) and a typology code per file (``99_DE``) taken from
this classification; the préfecture answers « classification pas à jour » (anomaly 002) when
an act carries an older ``ClassificationDateVersion`` than its own.  The cache keeps one
classification per (connector instance, entity): the XML in the BlobStore, its date and key
in table ``tdt_classifications`` (migration 040_tdt.sql).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from lxml import etree

from flowbus.blobs.base import BlobStore, put_bytes
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import NotFound, PermanentError

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"


def _a(el: etree._Element, name: str) -> str | None:
    return el.get(f"{{{NS}}}{name}", el.get(name))


@dataclass(frozen=True)
class NatureActe:
    code: int
    libelle: str
    abbrev: str  # TypeAbrege: DE, AR, AI, CC, BF, AU
    type_pj: tuple[str, ...]  # CodeTypePJ in the préfecture's order (the first is the default)
    type_pj_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Classification:
    date: date
    natures: Mapping[int, NatureActe]
    matieres: Mapping[tuple[int, ...], str]  # (7,) → "Finances locales", (7, 1) → "Décisions budgétaires"

    def has_matiere(self, codes: Sequence[int]) -> bool:
        return tuple(codes) in self.matieres

    def label(self, codes: Sequence[int]) -> str | None:
        return self.matieres.get(tuple(codes))

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "natures": [{"code": n.code, "libelle": n.libelle, "abrege": n.abbrev, "types_pj": list(n.type_pj)}
                        for n in sorted(self.natures.values(), key=lambda n: n.code)],
            "matieres": {".".join(map(str, k)): v for k, v in sorted(self.matieres.items())},
        }


def parse_classification(xml: bytes) -> Classification:
    """Parse a ``RetourClassification``; raises PermanentError if it is not one."""
    try:
        root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"classification illisible : {exc}", field="classification") from exc
    if root.tag != f"{{{NS}}}RetourClassification":
        raise PermanentError(f"attendu une RetourClassification, reçu {etree.QName(root).localname}",
                             field="classification")
    when = date.fromisoformat(root.findtext(f"{{{NS}}}DateClassification").strip())
    natures: dict[int, NatureActe] = {}
    for nat in root.iter(f"{{{NS}}}NatureActe"):
        codes, labels = [], {}
        for t in nat.iter(f"{{{NS}}}TypePJNatureActe"):
            code = _a(t, "CodeTypePJ") or ""
            codes.append(code)
            labels[code] = _a(t, "Libelle") or ""
        code = int(_a(nat, "CodeNatureActe") or 0)
        natures[code] = NatureActe(code, _a(nat, "Libelle") or "", _a(nat, "TypeAbrege") or "", tuple(codes), labels)
    matieres: dict[tuple[int, ...], str] = {}

    def walk(el: etree._Element, level: int, prefix: tuple[int, ...]) -> None:
        for child in el.findall(f"{{{NS}}}Matiere{level}"):
            key = prefix + (int(_a(child, "CodeMatiere") or 0),)
            matieres[key] = _a(child, "Libelle") or ""
            if level < 5:
                walk(child, level + 1, key)

    matieres_el = root.find(f"{{{NS}}}Matieres")
    if matieres_el is not None:
        walk(matieres_el, 1, ())
    return Classification(when, natures, matieres)


def build_classification(classification: Classification) -> bytes:
    """A ``RetourClassification`` message (what the préfecture sends; used by the simulator)."""
    q = lambda tag: f"{{{NS}}}{tag}"  # noqa: E731
    root = etree.Element(q("RetourClassification"), nsmap={"actes": NS})
    etree.SubElement(root, q("DateClassification")).text = classification.date.isoformat()
    natures = etree.SubElement(root, q("NaturesActes"))
    for nat in sorted(classification.natures.values(), key=lambda n: n.code):
        el = etree.SubElement(natures, q("NatureActe"))
        el.set(q("CodeNatureActe"), str(nat.code))
        el.set(q("Libelle"), nat.libelle)
        el.set(q("TypeAbrege"), nat.abbrev)
        for code in nat.type_pj:
            t = etree.SubElement(el, q("TypePJNatureActe"))
            t.set(q("CodeTypePJ"), code)
            t.set(q("Libelle"), nat.type_pj_labels.get(code, code))
    matieres = etree.SubElement(root, q("Matieres"))
    elements: dict[tuple[int, ...], etree._Element] = {}
    for key in sorted(classification.matieres, key=lambda k: (len(k), k)):
        parent = matieres if len(key) == 1 else elements.get(key[:-1])
        if parent is None:
            raise ValueError(f"matière {key} has no parent")
        el = etree.SubElement(parent, q(f"Matiere{len(key)}"))
        el.set(q("CodeMatiere"), str(key[-1]))
        el.set(q("Libelle"), classification.matieres[key])
        elements[key] = el
    return etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


def sample_classification(on: date = date(2019, 4, 18)) -> Classification:
    """A small but real-shaped classification: the six natures and the nine matières with a few sub-matières."""
    natures = {
        1: NatureActe(1, "Délibérations", "DE", ("99_DE", "99_SE"), {"99_DE": "Délibération"}),
        2: NatureActe(2, "Actes réglementaires", "AR", ("99_AR", "21_EP", "99_SE"), {"99_AR": "Acte réglementaire"}),
        3: NatureActe(3, "Actes individuels", "AI", ("99_AI", "99_SE"), {"99_AI": "Acte individuel"}),
        4: NatureActe(4, "Contrats,conventions et avenants", "CC", ("99_CO", "99_SE"), {"99_CO": "Contrat"}),
        5: NatureActe(5, "Documents budgétaires et financiers", "BF", ("99_BU", "99_SE"), {"99_BU": "Budget"}),
        6: NatureActe(6, "Autres", "AU", ("99_AU", "99_SE"), {"99_AU": "Autre document"}),
    }
    matieres = {
        (1,): "Commande Publique", (1, 1): "Marchés publics", (1, 2): "Délégation de service public",
        (2,): "Urbanisme", (2, 1): "Documents d'urbanisme", (2, 2): "Actes relatifs au droit d'occupation",
        (3,): "Domaine et patrimoine", (3, 1): "Acquisitions", (3, 2): "Aliénations",
        (4,): "Fonction publique", (4, 1): "Personnels titulaires", (4, 2): "Personnels contractuels",
        (5,): "Institutions et vie politique", (5, 1): "Election exécutif", (5, 2): "Fonctionnement des assemblées",
        (5, 2, 1): "Règlement intérieur",
        (6,): "Libertés publiques et pouvoirs de police", (6, 1): "Police municipale",
        (7,): "Finances locales", (7, 1): "Décisions budgétaires", (7, 2): "Fiscalité",
        (7, 1, 1): "Budget primitif", (7, 1, 2): "Décision modificative",
        (8,): "Domaines de compétences par thèmes", (8, 1): "Enseignement",
        (9,): "Autres domaines de compétences", (9, 1): "Autres domaines de compétences des communes",
    }
    return Classification(on, natures, matieres)


def parse_ttl(value: Any, default: timedelta = timedelta(days=1)) -> timedelta:
    """``3600``, ``"90m"``, ``"24h"``, ``"7d"`` → timedelta (setting ``classification_ttl``)."""
    if value in (None, ""):
        return default
    if isinstance(value, (int, float)):
        return timedelta(seconds=float(value))
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    if text.replace(".", "", 1).isdigit():
        return timedelta(seconds=float(text))
    raise PermanentError(f"classification_ttl {value!r} invalide : par ex. 3600, 90m, 24h ou 7d",
                         field="classification_ttl")


@dataclass(frozen=True)
class CachedClassification:
    classification: Classification
    xml: bytes
    fetched_at: datetime


class ClassificationCache:
    """One classification per (connector instance, entity), in the Store + BlobStore.

    ``store`` may be None (no state store wired): then nothing is cached across calls.
    """

    def __init__(self, store: Any, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    async def get(self, instance_id: str, entity_id: str) -> CachedClassification | None:
        if self.store is None:
            return None
        async with self.store.transaction() as tx:
            row = await tx.fetchrow("SELECT blob_key, fetched_at FROM tdt_classifications "
                                    "WHERE instance_id = $1 AND entity_id = $2", instance_id, entity_id)
        if row is None:
            return None
        try:
            xml = await self.blobs.read(row["blob_key"])
        except NotFound:
            return None
        return CachedClassification(parse_classification(xml), xml, parse_iso(row["fetched_at"]))

    async def put(self, instance_id: str, entity_id: str, xml: bytes, fetched_at: datetime) -> Classification:
        classification = parse_classification(xml)
        if self.store is None:
            return classification
        ref = await put_bytes(self.blobs, xml)
        async with self.store.transaction() as tx:
            await tx.execute("DELETE FROM tdt_classifications WHERE instance_id = $1 AND entity_id = $2",
                             instance_id, entity_id)
            await tx.execute("INSERT INTO tdt_classifications (instance_id, entity_id, classification_date, "
                             "blob_key, fetched_at) VALUES ($1, $2, $3, $4, $5)", instance_id, entity_id,
                             classification.date.isoformat(), ref.key, isoformat(fetched_at))
        return classification

    async def invalidate(self, instance_id: str, entity_id: str) -> None:
        if self.store is None:
            return
        async with self.store.transaction() as tx:
            await tx.execute("DELETE FROM tdt_classifications WHERE instance_id = $1 AND entity_id = $2",
                             instance_id, entity_id)
