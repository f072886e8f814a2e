"""One entry point to check signatures: PES/XML (XAdES), PDF (PAdES), CMS (CAdES, detached or not)."""

from __future__ import annotations

from pathlib import Path

from datetime import datetime

from cryptography import x509

from flowbus.errors import PermanentError
from flowbus.signature.base import Verification

__all__ = ["Verification", "detect_format", "load_certificates", "verify"]


def detect_format(data: bytes) -> str:
    """``pdf``, ``xml`` or ``cms`` from the first bytes; PermanentError when none fits."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(b"<"):
        return "xml"
    if head[:1] == b"\x30" or head.startswith(b"-----BEGIN PKCS7") or head.startswith(b"-----BEGIN CMS"):
        from flowbus.signature.cades import looks_like_cms
        if looks_like_cms(data):
            return "cms"
    raise PermanentError("unrecognised file: neither XML, PDF nor a CMS signature", field="document",
                         hint="for a detached .p7s signature, give the signed file and the signature")


def verify(data: bytes, *, detached: bytes | None = None, trusted: list[x509.Certificate] | None = None,
           now: datetime | None = None) -> list[Verification]:
    """Check every signature found; an empty list means the file carries none.

    ``detached``: a CMS signature (``.p7s``) of ``data``.  ``trusted``: trust anchors (without
    them the chain status is ``unknown`` or ``expired``).  ``now``: when to judge certificate
    validity (default: now).

    Raises:
        PermanentError: unreadable input (malformed XML, unreadable or encrypted PDF, a
            detached signature that is not CMS).
    """
    if detached is not None:
        from flowbus.signature.cades import verify_cades
        return verify_cades(detached, data, trusted=trusted, now=now)
    kind = detect_format(data)
    if kind == "pdf":
        from flowbus.signature.pades import verify_pdf
        return verify_pdf(data, trusted=trusted, now=now)
    if kind == "xml":
        from flowbus.signature.xades import verify_xml
        return verify_xml(data, trusted=trusted, now=now)
    from flowbus.signature.cades import verify_cades
    return verify_cades(data, None, trusted=trusted, now=now)


def load_trust_dir(directory: Path) -> list[x509.Certificate]:
    """Every CA certificate of a trust-list folder (``*.pem``, ``*.crt``, ``*.cer``, ``*.der``; PEM bundles or DER),
    in name order; README files and others are ignored.

    Raises:
        PermanentError: a certificate file that cannot be read (named, field ``trust_dir``).
    """
    found: list[x509.Certificate] = []
    if not directory.is_dir():
        return found
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in (".pem", ".crt", ".cer", ".der")):
        try:
            found += load_certificates(path.read_bytes())
        except (PermanentError, OSError) as exc:
            raise PermanentError(f"Liste de confiance : {path.name} ne se lit pas comme un certificat ({exc})",
                                 field="trust_dir", hint="remove or replace the file") from None
    return found


def load_certificates(pem_or_der: bytes) -> list[x509.Certificate]:
    """Trust anchors from a PEM bundle or one DER certificate."""
    try:
        if b"-----BEGIN" in pem_or_der:
            return x509.load_pem_x509_certificates(pem_or_der)
        return [x509.load_der_x509_certificate(pem_or_der)]
    except ValueError as exc:
        raise PermanentError(f"the trusted certificates cannot be read: {exc}", field="trusted") from None
