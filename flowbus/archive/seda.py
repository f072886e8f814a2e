"""SEDA 2.1/2.2 messages: ArchiveTransfer manifest (built with lxml), Acknowledgement, ArchiveTransferReply.

The file digests (SHA-512) are computed by ``package.py`` while it streams each file into
the package; this module turns them into ``BinaryDataObject``s, adds the ArchiveUnit tree,
and validates the result against the official XSD before it leaves, always: the one shipped in
``schemas/seda`` (``flowbus.schemas``), or ``seda_xsd_dir`` (a directory holding
``2.1/seda-2.1-main.xsd`` and ``2.2/seda-2.2-main.xsd``, or the version folder itself).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from lxml import etree

from flowbus import schemas
from flowbus.archive.formats import Format
from flowbus.clock import isoformat
from flowbus.errors import ConfigError, PermanentError

log = structlog.get_logger(__name__)

NAMESPACES = {"2.1": "fr:gouv:culture:archivesdefrance:seda:v2.1",
              "2.2": "fr:gouv:culture:archivesdefrance:seda:v2.2"}
CODE_LISTS = ("ReplyCodeListVersion", "MessageDigestAlgorithmCodeListVersion", "MimeTypeCodeListVersion",
              "EncodingCodeListVersion", "FileFormatCodeListVersion", "CompressionAlgorithmCodeListVersion",
              "DataObjectVersionCodeListVersion", "StorageRuleCodeListVersion", "AppraisalRuleCodeListVersion",
              "AccessRuleCodeListVersion", "DisseminationRuleCodeListVersion", "ReuseRuleCodeListVersion",
              "ClassificationRuleCodeListVersion", "AuthorizationReasonCodeListVersion",
              "RelationshipCodeListVersion")


@dataclass(frozen=True)
class DataObject:
    """One file of the package, as the manifest describes it."""

    id: str  # xs:ID, e.g. "BDO-1"
    uri: str  # path inside the package, e.g. "content/001-deliberation.pdf"
    sha512: str  # lowercase hex
    size: int
    format: Format
    filename: str
    title: str  # title of the Item ArchiveUnit that references this object
    last_modified: datetime | None = None
    version: str = "BinaryMaster_1"


@dataclass(frozen=True)
class Rules:
    appraisal_rule: str | None = None
    appraisal_start: str | None = None
    appraisal_final_action: str = "Keep"
    access_rule: str | None = None
    access_start: str | None = None


@dataclass(frozen=True)
class Transfer:
    """Everything the manifest says besides the files."""

    message_id: str
    date: datetime
    title: str
    archival_agency: str
    transferring_agency: str
    version: str = "2.1"
    comment: str | None = None
    description: str | None = None
    description_level: str = "File"
    keywords: Sequence[tuple[str, str | None]] = ()
    start_date: str | None = None
    end_date: str | None = None
    originating_agency: str | None = None
    submission_agency: str | None = None
    archival_agreement: str | None = None
    archival_profile: str | None = None
    rules: Rules = field(default_factory=Rules)


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{parent.nsmap[None]}}}{tag}", **attrs)
    if text is not None:
        el.text = text
    return el


def _date_only(value: str | None) -> str | None:
    return value[:10] if value else None


def build_transfer(transfer: Transfer, objects: Sequence[DataObject]) -> bytes:
    """The ArchiveTransfer XML (UTF-8 bytes), not yet validated: use ``validate``."""
    ns = NAMESPACES.get(transfer.version)
    if ns is None:
        raise ConfigError(f"unsupported SEDA version {transfer.version!r}", field="version", hint="use 2.1 or 2.2")
    root = etree.Element(f"{{{ns}}}ArchiveTransfer", nsmap={None: ns})
    if transfer.comment:
        _sub(root, "Comment", transfer.comment)
    _sub(root, "Date", isoformat(transfer.date))
    _sub(root, "MessageIdentifier", transfer.message_id)
    if transfer.archival_agreement:
        _sub(root, "ArchivalAgreement", transfer.archival_agreement)
    lists = _sub(root, "CodeListVersions")
    for name in CODE_LISTS:
        _sub(lists, name, f"{name}0")
    package = _sub(root, "DataObjectPackage")
    for obj in objects:
        bdo = _sub(package, "BinaryDataObject", id=obj.id)
        _sub(bdo, "DataObjectVersion", obj.version)
        _sub(bdo, "Uri", obj.uri)
        _sub(bdo, "MessageDigest", obj.sha512, algorithm="SHA-512")
        _sub(bdo, "Size", str(obj.size))
        fid = _sub(bdo, "FormatIdentification")
        _sub(fid, "FormatLitteral", obj.format.literal)
        _sub(fid, "MimeType", obj.format.mime_type)
        if obj.format.puid:
            _sub(fid, "FormatId", obj.format.puid)
        info = _sub(bdo, "FileInfo")
        _sub(info, "Filename", obj.filename)
        if obj.last_modified:
            _sub(info, "LastModified", isoformat(obj.last_modified))
    descriptive = _sub(package, "DescriptiveMetadata")
    top = _sub(descriptive, "ArchiveUnit", id="AU-ROOT")
    rules = transfer.rules
    if rules.appraisal_rule or rules.access_rule:
        management = _sub(top, "Management")
        if rules.appraisal_rule:
            appraisal = _sub(management, "AppraisalRule")
            _sub(appraisal, "Rule", rules.appraisal_rule)
            if rules.appraisal_start:
                _sub(appraisal, "StartDate", _date_only(rules.appraisal_start))
            _sub(appraisal, "FinalAction", rules.appraisal_final_action or "Keep")
        if rules.access_rule:
            access = _sub(management, "AccessRule")
            _sub(access, "Rule", rules.access_rule)
            if rules.access_start:
                _sub(access, "StartDate", _date_only(rules.access_start))
    content = _sub(top, "Content")
    _sub(content, "DescriptionLevel", transfer.description_level)
    _sub(content, "Title", transfer.title)
    if transfer.description:
        _sub(content, "Description", transfer.description)
    for text, kind in transfer.keywords:
        if not text:
            continue
        kw = _sub(content, "Keyword")
        _sub(kw, "KeywordContent", text)
        if kind:
            _sub(kw, "KeywordType", kind)
    if transfer.originating_agency:
        _sub(_sub(content, "OriginatingAgency"), "Identifier", transfer.originating_agency)
    if transfer.submission_agency:
        _sub(_sub(content, "SubmissionAgency"), "Identifier", transfer.submission_agency)
    if transfer.start_date:
        _sub(content, "StartDate", _date_only(transfer.start_date))
    if transfer.end_date:
        _sub(content, "EndDate", _date_only(transfer.end_date))
    for i, obj in enumerate(objects, 1):
        unit = _sub(top, "ArchiveUnit", id=f"AU-{i}")
        item = _sub(unit, "Content")
        _sub(item, "DescriptionLevel", "Item")
        _sub(item, "Title", obj.title)
        _sub(_sub(unit, "DataObjectReference"), "DataObjectReferenceId", obj.id)
    management_md = _sub(package, "ManagementMetadata")
    if transfer.archival_profile:
        _sub(management_md, "ArchivalProfile", transfer.archival_profile)
    if transfer.originating_agency:
        _sub(management_md, "OriginatingAgencyIdentifier", transfer.originating_agency)
    if transfer.submission_agency:
        _sub(management_md, "SubmissionAgencyIdentifier", transfer.submission_agency)
    _sub(_sub(root, "ArchivalAgency"), "Identifier", transfer.archival_agency)
    _sub(_sub(root, "TransferringAgency"), "Identifier", transfer.transferring_agency)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# ---- validation ------------------------------------------------------------------------------

_SCHEMAS: dict[tuple[str, str], etree.XMLSchema] = {}
_SCHEMA_LOCK = threading.Lock()


def _main_xsd(xsd_dir: Path, version: str) -> Path:
    for candidate in (xsd_dir / version / f"seda-{version}-main.xsd", xsd_dir / f"seda-{version}-main.xsd"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"seda_xsd_dir {xsd_dir} has no seda-{version}-main.xsd", field="seda_xsd_dir",
                      hint=f"point it at a folder holding {version}/seda-{version}-main.xsd")


def schema(xsd_dir: Path, version: str) -> etree.XMLSchema:
    """The compiled XSD, loaded once per (directory, version): compiling costs far more than validating."""
    key = (str(Path(xsd_dir).resolve()), version)
    with _SCHEMA_LOCK:
        if key not in _SCHEMAS:
            _SCHEMAS[key] = etree.XMLSchema(etree.parse(str(_main_xsd(Path(xsd_dir), version))))
        return _SCHEMAS[key]


def version_of(xml: bytes | etree._Element) -> str:
    root = etree.fromstring(xml) if isinstance(xml, bytes) else xml
    ns = etree.QName(root).namespace
    for version, uri in NAMESPACES.items():
        if uri == ns:
            return version
    raise PermanentError(f"not a SEDA 2.1/2.2 message (namespace {ns!r})", field="manifest")


def validate(xml: bytes, xsd_dir: Path | None) -> None:
    """Validate a SEDA message against the official XSD of its version.

    Raises:
        PermanentError: the message is invalid (each XSD error with its line), field ``manifest``.
    """
    try:
        root = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"the SEDA message is not well-formed XML: {exc}", field="manifest") from None
    version = version_of(root)
    # always against the official XSD: the one configured, else the one shipped in schemas/seda
    xsd = schema(Path(xsd_dir) if xsd_dir is not None else schemas.seda_dir(), version)
    if not xsd.validate(root):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(xsd.error_log)[:10])
        raise PermanentError(f"the SEDA {version} message does not validate against its XSD: {errors}",
                             field="manifest", hint="check the archiving profile (rule ids, dates, agencies)")


def data_objects(xml: bytes) -> dict[str, dict[str, str]]:
    """``uri → {id, digest, algorithm, size}`` for each BinaryDataObject of a manifest."""
    root = etree.fromstring(xml)
    ns = {"s": etree.QName(root).namespace}
    result = {}
    for bdo in root.iterfind(".//s:BinaryDataObject", ns):
        digest = bdo.find("s:MessageDigest", ns)
        result[bdo.findtext("s:Uri", default="", namespaces=ns)] = {
            "id": bdo.get("id", ""),
            "digest": (digest.text or "").strip().lower() if digest is not None else "",
            "algorithm": digest.get("algorithm", "") if digest is not None else "",
            "size": bdo.findtext("s:Size", default="", namespaces=ns),
        }
    return result


# ---- archive → producer messages -------------------------------------------------------------


def build_acknowledgement(*, message_id: str, received_id: str, sender: str, receiver: str, date: datetime,
                          version: str = "2.1") -> bytes:
    ns = NAMESPACES[version]
    root = etree.Element(f"{{{ns}}}Acknowledgement", nsmap={None: ns})
    _sub(root, "Date", isoformat(date))
    _sub(root, "MessageIdentifier", message_id)
    _sub(root, "MessageReceivedIdentifier", received_id)
    _sub(_sub(root, "Sender"), "Identifier", sender)
    _sub(_sub(root, "Receiver"), "Identifier", receiver)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_reply(*, message_id: str, request_id: str, reply_code: str, archival_agency: str,
                transferring_agency: str, date: datetime, comment: str | None = None,
                version: str = "2.1") -> bytes:
    """ArchiveTransferReply; with ``reply_code`` ``000`` (accepted) it carries a GrantDate."""
    ns = NAMESPACES[version]
    root = etree.Element(f"{{{ns}}}ArchiveTransferReply", nsmap={None: ns})
    if comment:
        _sub(root, "Comment", comment)
    _sub(root, "Date", isoformat(date))
    _sub(root, "MessageIdentifier", message_id)
    lists = _sub(root, "CodeListVersions")
    for name in CODE_LISTS:
        _sub(lists, name, f"{name}0")
    _sub(root, "ReplyCode", reply_code)
    _sub(root, "MessageRequestIdentifier", request_id)
    if reply_code == "000":
        _sub(root, "GrantDate", isoformat(date))
    _sub(_sub(root, "ArchivalAgency"), "Identifier", archival_agency)
    _sub(_sub(root, "TransferringAgency"), "Identifier", transferring_agency)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def parse_reply(xml: bytes) -> Mapping[str, str | None]:
    """``{kind, reply_code, request_id, message_id, comment}`` of an Acknowledgement or ArchiveTransferReply."""
    try:
        root = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"the archive's answer is not XML: {exc}", field="reply") from None
    ns = {"s": etree.QName(root).namespace}
    return {
        "kind": etree.QName(root).localname,
        "reply_code": root.findtext("s:ReplyCode", namespaces=ns),
        "request_id": root.findtext("s:MessageRequestIdentifier", namespaces=ns)
        or root.findtext("s:MessageReceivedIdentifier", namespaces=ns),
        "message_id": root.findtext("s:MessageIdentifier", namespaces=ns),
        "comment": root.findtext("s:Comment", namespaces=ns),
    }
