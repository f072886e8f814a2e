"""PREMIS v3 as i-Parapheur 5 speaks it: the folder draft a client sends, the summary it reads back.

Shapes follow Libriciel's fixtures (Pastell ``tests/Connector/IparapheurRest/fixtures``): one
``intellectualEntity`` object for the folder (type, subtype, metadata as significant properties),
one ``file`` object per document, one ``event`` per workflow task in order (an empty
``eventDateTime`` marks the task not yet done), and ``agent`` entries naming users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from flowbus.errors import PermanentError

NS = "http://www.loc.gov/premis/v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{NS} http://www.loc.gov/standards/premis/v3/premis.xsd"
RESERVED_TYPE = "i_Parapheur_reserved_type"
RESERVED_SUBTYPE = "i_Parapheur_reserved_subtype"
RESERVED_DUE_DATE = "i_Parapheur_reserved_dueDate"
RESERVED_MAIN = "i_Parapheur_reserved_mainDocument"
_RESERVED = {RESERVED_TYPE, RESERVED_SUBTYPE, RESERVED_DUE_DATE}
_XSI_TYPE = f"{{{XSI}}}type"


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


@dataclass(frozen=True)
class PremisFile:
    name: str
    main: bool
    document_id: str | None = None
    sha256: str | None = None
    size: int | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class PremisEvent:
    task_id: str
    type: str  # START, VISA, SIGNATURE, REJECT, ARCHIVE, DELETE, ...
    date: str | None  # None: the task is not done yet (the current step)
    note: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class FolderSummary:
    """A folder as its PREMIS tells it; ``state`` is read the way Pastell reads it."""

    folder_id: str | None
    name: str
    type: str | None
    subtype: str | None
    metadata: dict[str, str]
    files: tuple[PremisFile, ...]
    events: tuple[PremisEvent, ...]
    agents: dict[str, str] = field(default_factory=dict)  # user id → name

    @property
    def state(self) -> str:
        """``draft``, ``pending``, ``finished`` or ``rejected``.

        The last event is the current step: ARCHIVE ⇒ finished (signed); DELETE after a REJECT
        ⇒ rejected; a START not done yet ⇒ draft; anything else ⇒ pending.
        """
        if not self.events:
            return "draft"
        last = self.events[-1]
        if last.type == "ARCHIVE":
            return "finished"
        if last.type == "REJECT" or (last.type == "DELETE" and any(e.type == "REJECT" for e in self.events)):
            return "rejected"
        if last.type == "START" and last.date is None:
            return "draft"
        return "pending"

    @property
    def start_task_id(self) -> str | None:
        for event in self.events:
            if event.type == "START":
                return event.task_id
        return None

    @property
    def current_task(self) -> PremisEvent | None:
        for event in self.events:
            if event.date is None:
                return event
        return None

    @property
    def rejection(self) -> PremisEvent | None:
        rejects = [e for e in self.events if e.type == "REJECT"]
        return rejects[-1] if rejects else None

    @property
    def last_signature(self) -> PremisEvent | None:
        signed = [e for e in self.events if e.type in ("SIGNATURE", "EXTERNAL_SIGNATURE", "SEAL", "PAPER_SIGNATURE")
                  and e.date]
        return signed[-1] if signed else None

    @property
    def main_files(self) -> list[PremisFile]:
        return [f for f in self.files if f.main]


def _sig_prop(parent: etree._Element, key: str, value: str) -> None:
    prop = etree.SubElement(parent, _q("significantProperties"))
    etree.SubElement(prop, _q("significantPropertiesType")).text = key
    etree.SubElement(prop, _q("significantPropertiesValue")).text = value


def _identifier(parent: etree._Element, kind: str, value: str) -> None:
    ident = etree.SubElement(parent, _q("objectIdentifier"))
    etree.SubElement(ident, _q("objectIdentifierType")).text = kind
    etree.SubElement(ident, _q("objectIdentifierValue")).text = value


def _root() -> etree._Element:
    root = etree.Element(_q("premis"), nsmap={None: NS, "xsi": XSI})
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA_LOCATION)
    root.set("version", "3.0")
    return root


def build_premis(summary: FolderSummary, *, due_date: datetime | str | None = None) -> bytes:
    """Serialise a folder: a draft (no ids, no events) or a full summary (simulator side)."""
    root = _root()
    entity = etree.SubElement(root, _q("object"))
    entity.set(_XSI_TYPE, "intellectualEntity")
    if summary.folder_id:
        _identifier(entity, "folderId", summary.folder_id)
    if summary.type:
        _sig_prop(entity, RESERVED_TYPE, summary.type)
    if summary.subtype:
        _sig_prop(entity, RESERVED_SUBTYPE, summary.subtype)
    if due_date:
        _sig_prop(entity, RESERVED_DUE_DATE, due_date if isinstance(due_date, str) else due_date.isoformat())
    for key, value in summary.metadata.items():
        _sig_prop(entity, key, str(value))
    etree.SubElement(entity, _q("originalName")).text = summary.name
    for doc in summary.files:
        obj = etree.SubElement(root, _q("object"))
        obj.set(_XSI_TYPE, "file")
        if doc.document_id:
            _identifier(obj, "documentId", doc.document_id)
        _sig_prop(obj, RESERVED_MAIN, "true" if doc.main else "false")
        if doc.sha256 is not None:
            chars = etree.SubElement(obj, _q("objectCharacteristics"))
            fixity = etree.SubElement(chars, _q("fixity"))
            etree.SubElement(fixity, _q("messageDigestAlgorithm")).text = "SHA-256"
            etree.SubElement(fixity, _q("messageDigest")).text = doc.sha256
            etree.SubElement(chars, _q("size")).text = str(doc.size or 0)
            fmt = etree.SubElement(etree.SubElement(chars, _q("format")), _q("formatDesignation"))
            etree.SubElement(fmt, _q("formatName")).text = doc.media_type or "application/octet-stream"
            etree.SubElement(fmt, _q("formatVersion")).text = "1.0"
        etree.SubElement(obj, _q("originalName")).text = doc.name
    for event in summary.events:
        ev = etree.SubElement(root, _q("event"))
        ident = etree.SubElement(ev, _q("eventIdentifier"))
        etree.SubElement(ident, _q("eventIdentifierType")).text = "taskId"
        etree.SubElement(ident, _q("eventIdentifierValue")).text = event.task_id
        etree.SubElement(ev, _q("eventType")).text = event.type
        etree.SubElement(ev, _q("eventDateTime")).text = event.date
        if event.note:
            info = etree.SubElement(ev, _q("eventOutcomeInformation"))
            detail = etree.SubElement(info, _q("eventOutcomeDetail"))
            etree.SubElement(detail, _q("eventOutcomeDetailNote")).text = event.note
        agent = etree.SubElement(ev, _q("linkingAgentIdentifier"))
        etree.SubElement(agent, _q("linkingAgentIdentifierType")).text = "userId"
        etree.SubElement(agent, _q("linkingAgentIdentifierValue")).text = event.user_id
        etree.SubElement(agent, _q("linkingAgentRole")).text = "user"
    for user_id, name in summary.agents.items():
        agent = etree.SubElement(root, _q("agent"))
        ident = etree.SubElement(agent, _q("agentIdentifier"))
        etree.SubElement(ident, _q("agentIdentifierType")).text = "userId"
        etree.SubElement(ident, _q("agentIdentifierValue")).text = user_id
        etree.SubElement(agent, _q("agentName")).text = name
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_draft(name: str, type_: str, subtype: str, files: list[tuple[str, bool]], *,
                metadata: dict[str, str] | None = None, due_date: datetime | str | None = None) -> bytes:
    """The ``folder`` part of a folder creation: names, type/subtype, metadata, main/annex flags."""
    summary = FolderSummary(None, name, type_, subtype, dict(metadata or {}),
                            tuple(PremisFile(n, main) for n, main in files), ())
    return build_premis(summary, due_date=due_date)


def _text(el: etree._Element | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path, {"p": NS})
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def _props(obj: etree._Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for prop in obj.findall("p:significantProperties", {"p": NS}):
        key = _text(prop, "p:significantPropertiesType")
        if key:
            out[key] = _text(prop, "p:significantPropertiesValue") or ""
    return out


def parse_premis(data: bytes) -> FolderSummary:
    """Read a PREMIS draft or summary.

    Raises:
        PermanentError: not PREMIS v3, or no intellectual entity (names what is missing).
    """
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"the PREMIS document is not well-formed XML: {exc}", field="folder") from exc
    if root.tag != _q("premis"):
        raise PermanentError(f"expected a PREMIS v3 document ({{{NS}}}premis), got {root.tag}", field="folder")
    ns = {"p": NS}
    entity = None
    files: list[PremisFile] = []
    for obj in root.findall("p:object", ns):
        kind = obj.get(_XSI_TYPE, "")
        if kind.endswith("intellectualEntity"):
            entity = obj
        elif kind.endswith("file"):
            props = _props(obj)
            size = _text(obj, "p:objectCharacteristics/p:size")
            files.append(PremisFile(
                name=_text(obj, "p:originalName") or "",
                main=props.get(RESERVED_MAIN, "false").lower() == "true",
                document_id=_text(obj, "p:objectIdentifier/p:objectIdentifierValue"),
                sha256=_text(obj, "p:objectCharacteristics/p:fixity/p:messageDigest"),
                size=int(size) if size else None,
                media_type=_text(obj, "p:objectCharacteristics/p:format/p:formatDesignation/p:formatName"),
            ))
    if entity is None:
        raise PermanentError("the PREMIS document has no intellectualEntity object (the folder)", field="folder")
    props = _props(entity)
    events = tuple(
        PremisEvent(
            task_id=_text(ev, "p:eventIdentifier/p:eventIdentifierValue") or "",
            type=_text(ev, "p:eventType") or "UNKNOWN",
            date=_text(ev, "p:eventDateTime"),
            note=_text(ev, "p:eventOutcomeInformation/p:eventOutcomeDetail/p:eventOutcomeDetailNote"),
            user_id=_text(ev, "p:linkingAgentIdentifier/p:linkingAgentIdentifierValue"),
        )
        for ev in root.findall("p:event", ns)
    )
    agents = {}
    for agent in root.findall("p:agent", ns):
        uid = _text(agent, "p:agentIdentifier/p:agentIdentifierValue")
        if uid:
            agents[uid] = _text(agent, "p:agentName") or uid
    return FolderSummary(
        folder_id=_text(entity, "p:objectIdentifier/p:objectIdentifierValue"),
        name=_text(entity, "p:originalName") or "",
        type=props.get(RESERVED_TYPE),
        subtype=props.get(RESERVED_SUBTYPE),
        metadata={k: v for k, v in props.items() if k not in _RESERVED},
        files=tuple(files),
        events=events,
        agents=agents,
    )
