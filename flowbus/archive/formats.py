"""PRONOM format identification by magic bytes (the formats flowbus archives: PDF, XML, zip, CMS…).

``identify(head, filename)`` looks at the first bytes of a file (``HEAD_SIZE`` is enough)
and returns a ``Format`` (PRONOM PUID, literal, MIME type) for the SEDA
``FormatIdentification``.  The PUIDs are PRONOM's (https://www.nationalarchives.gov.uk/PRONOM/);
PDF is told apart by its header version and PDF/A by the ``pdfaid`` XMP properties.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEAD_SIZE = 64 * 1024


@dataclass(frozen=True)
class Format:
    puid: str | None
    literal: str
    mime_type: str


_PDF_VERSIONS = {
    "1.0": "fmt/14", "1.1": "fmt/15", "1.2": "fmt/16", "1.3": "fmt/17", "1.4": "fmt/18",
    "1.5": "fmt/19", "1.6": "fmt/20", "1.7": "fmt/276", "2.0": "fmt/1129",
}
_PDFA = {
    ("1", "A"): "fmt/95", ("1", "B"): "fmt/354",
    ("2", "A"): "fmt/476", ("2", "B"): "fmt/477", ("2", "U"): "fmt/478",
    ("3", "A"): "fmt/479", ("3", "B"): "fmt/480", ("3", "U"): "fmt/481",
}
_PDFA_PART = re.compile(rb"pdfaid:part(?:=[\"']|>)\s*(\d)")
_PDFA_CONF = re.compile(rb"pdfaid:conformance(?:=[\"']|>)\s*([ABUabu])")

XML = Format("fmt/101", "Extensible Markup Language 1.0", "application/xml")
ZIP = Format("x-fmt/263", "ZIP Format", "application/zip")
CMS = Format("fmt/670", "PKCS #7 Cryptographic Message File", "application/pkcs7-signature")
TSR = Format(None, "RFC 3161 Time-Stamp Token", "application/timestamp-reply")
GZIP = Format("x-fmt/266", "GZIP Format", "application/gzip")
TAR = Format("x-fmt/265", "Tape Archive Format", "application/x-tar")
PNG = Format("fmt/12", "Portable Network Graphics 1.1", "image/png")
JPEG = Format("fmt/43", "JPEG File Interchange Format 1.01", "image/jpeg")
TIFF = Format("fmt/353", "Tagged Image File Format", "image/tiff")
EML = Format("fmt/950", "MIME Email", "message/rfc822")
JSON = Format("fmt/817", "JSON Data Interchange Format", "application/json")
TEXT = Format("x-fmt/111", "Plain Text File", "text/plain")
CSV = Format("x-fmt/18", "Comma Separated Values", "text/csv")
ODT = Format("fmt/290", "OpenDocument Text 1.1", "application/vnd.oasis.opendocument.text")
ODS = Format("fmt/294", "OpenDocument Spreadsheet 1.1", "application/vnd.oasis.opendocument.spreadsheet")
DOCX = Format("fmt/412", "Microsoft Word for Windows 2007 onwards",
              "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
XLSX = Format("fmt/214", "Microsoft Excel for Windows 2007 onwards",
              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
UNKNOWN = Format(None, "Format inconnu", "application/octet-stream")


def _pdf(head: bytes) -> Format:
    match = re.match(rb"%PDF-(\d\.\d)", head)
    version = match.group(1).decode() if match else "1.7"
    part, conf = _PDFA_PART.search(head), _PDFA_CONF.search(head)
    if part and conf:
        key = (part.group(1).decode(), conf.group(1).decode().upper())
        if key in _PDFA:
            return Format(_PDFA[key], f"PDF/A-{key[0]}{key[1].lower()}", "application/pdf")
    return Format(_PDF_VERSIONS.get(version, "fmt/276"),
                  f"Acrobat PDF {version} - Portable Document Format", "application/pdf")


def _zip(head: bytes) -> Format:
    # OpenDocument stores an uncompressed "mimetype" entry first; OOXML has [Content_Types].xml.
    if head[30:38] == b"mimetype":
        if b"opendocument.text" in head[:200]:
            return ODT
        if b"opendocument.spreadsheet" in head[:200]:
            return ODS
    if b"word/" in head:
        return DOCX
    if b"xl/" in head:
        return XLSX
    return ZIP


def _looks_like_cms(head: bytes) -> bool:
    # DER SEQUENCE then the OID 1.2.840.113549.1.7.2 (signedData) within the first bytes.
    return head[:1] == b"\x30" and b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02" in head[:32]


def identify(head: bytes, filename: str = "") -> Format:
    """Identify a file from its first bytes (at least ``HEAD_SIZE`` when the file is larger)."""
    name = filename.lower()
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"%PDF-"):
        return _pdf(head)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip(head)
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head[257:262] == b"ustar":
        return TAR
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    if _looks_like_cms(head):
        return CMS
    if head.startswith(b"-----BEGIN PKCS7") or head.startswith(b"-----BEGIN CMS"):
        return CMS
    if stripped.startswith(b"<?xml") or (stripped.startswith(b"<") and name.endswith(".xml")):
        return XML
    if name.endswith(".tsr"):
        return TSR
    if name.endswith(".eml") or re.match(rb"(?i)(received|return-path|from|message-id|mime-version):", head):
        return EML
    if stripped[:1] in (b"{", b"[") and name.endswith(".json"):
        return JSON
    if _is_text(head):
        return CSV if name.endswith(".csv") else TEXT
    return UNKNOWN


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the head is still text
        return exc.start >= len(head) - 3
    return True
