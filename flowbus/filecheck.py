"""Files checked at the door: a PDF is opened (readable, page count, password), an XML file parsed
(well-formed, of the kind the field expects), before anything is stored.

``inspect`` runs in a worker thread on a spooled copy of the upload; it raises ``ValidationError``
with a French message naming the file and the field, so the person who sends a broken file learns
it then — never a signer days later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from lxml import etree

from flowbus.errors import ValidationError

PDF_TYPES = frozenset({"application/pdf"})
XML_TYPES = frozenset({"application/xml", "text/xml"})
ACTES_NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
# the kinds a field may require with ``content:`` (flow YAML); pdf and xml need no declaration
CONTENT_KINDS = {"pdf": "un PDF", "xml": "un fichier XML", "pes_aller": "un PES Aller (PES V2)",
                 "actes": "un message ACTES"}


@dataclass(frozen=True)
class FileFacts:
    """What the door learnt of a file, kept in the journal entry of its upload."""

    kind: str  # "pdf", "xml", or "" for a file the door does not open
    pages: int | None = None
    encrypted: bool = False  # PDF with an owner password only: it opens, but may not be changed
    root: str | None = None  # XML: the root element's local name

    def journal(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.pages is not None:
            data["pages"] = self.pages
        if self.encrypted:
            data["encrypted"] = True
        if self.root:
            data["xml_root"] = self.root
        return data


def kind_of(media_type: str, filename: str, content: str | None) -> str:
    """Which check a file gets: its field's declared content first, then its type or extension."""
    if content:
        return "pdf" if content == "pdf" else "xml"
    lower = filename.lower()
    if media_type in PDF_TYPES or lower.endswith(".pdf"):
        return "pdf"
    if media_type in XML_TYPES or lower.endswith(".xml"):
        return "xml"
    return ""


def inspect(stream: IO[bytes], *, filename: str, field: str, media_type: str,
            content: str | None = None, label: str | None = None) -> FileFacts:
    """Check an uploaded file (seekable ``stream``, at its start); raise ``ValidationError`` if refused.
    ``field``: the field's name (the error's ``field``); ``label``: how people know it (the message)."""
    kind = kind_of(media_type, filename, content)
    where = _Where(filename, field, label or field)
    if kind == "pdf":
        return _pdf(stream, where)
    if kind == "xml":
        return _xml(stream, where, content)
    return FileFacts(kind="")


@dataclass(frozen=True)
class _Where:
    filename: str
    field: str
    label: str


def _refuse(where: _Where, why: str) -> ValidationError:
    return ValidationError(f"Le fichier « {where.filename} » (champ « {where.label} ») est refusé : {why}.",
                           field=where.field)


def _pdf(stream: IO[bytes], where: _Where) -> FileFacts:
    from pyhanko.pdf_utils.crypt import AuthStatus
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader

    head = stream.read(1024)
    stream.seek(0)
    if b"%PDF-" not in head:
        raise _refuse(where, "ce n'est pas un PDF (il ne commence pas par l'en-tête %PDF)")
    try:
        reader = PdfFileReader(stream, strict=False)
        encrypted = bool(reader.encrypted)
        if encrypted and reader.decrypt("").status == AuthStatus.FAILED:
            raise _refuse(where, "il est protégé par un mot de passe à l'ouverture ; "
                                           "envoyez-le sans mot de passe")
        pages = int(reader.root["/Pages"]["/Count"])
        if pages < 1:
            raise _refuse(where, "il ne contient aucune page")
        reader.find_page_for_modification(pages - 1)  # the page tree holds as many pages as it says
    except ValidationError:
        raise
    except (PdfError, KeyError, TypeError, ValueError, IndexError, AttributeError, OSError) as exc:
        raise _refuse(where, f"le PDF est illisible ou endommagé ({_short(exc)})") from exc
    return FileFacts(kind="pdf", pages=pages, encrypted=encrypted)


def _xml(stream: IO[bytes], where: _Where, content: str | None) -> FileFacts:
    root: Any = None
    try:
        # external entities and the network stay closed; a 200 MB PES is parsed element by element
        for event, element in etree.iterparse(stream, events=("start", "end"), resolve_entities=False,
                                              no_network=True, huge_tree=True, load_dtd=False):
            if root is None:
                root = element
                _expect(root, where, content)
            elif event == "end" and element.getparent() is root:
                root.remove(element)  # keep memory flat
    except ValidationError:
        raise
    except etree.XMLSyntaxError as exc:
        raise _refuse(where, f"ce n'est pas un XML bien formé (ligne {exc.lineno} : {exc.msg})") from exc
    if root is None:
        raise _refuse(where, "le fichier est vide")
    return FileFacts(kind="xml", root=etree.QName(root).localname)


def _expect(root: Any, where: _Where, content: str | None) -> None:
    name = etree.QName(root)
    if content == "pes_aller" and name.localname != "PES_Aller":
        raise _refuse(where, f"un PES Aller est attendu, le fichier est un « {name.localname} »")
    if content == "actes" and name.namespace != ACTES_NS:
        raise _refuse(where, f"un message ACTES est attendu, le fichier est un « {name.localname} »")


def _short(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "…"
