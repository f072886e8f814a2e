"""Signing for the parapheur simulator: a throw-away signer certificate, real signatures, a tiny PDF writer.

The simulator must hand back really signed documents, made with the project's own signature
code: PAdES (``flowbus.signature.pades``, when present) for a PDF of a ``pades`` type, XAdES
per bordereau (``flowbus.signature.xades``) for a PES of a ``xades`` type, and otherwise the
document unchanged with a detached CAdES signature (``flowbus.signature.cades``, ``.p7s``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from flowbus.errors import PermanentError
from flowbus.signature.cades import sign_cades
from flowbus.signature.keys import SigningKey
from flowbus.signature.xades import sign_pes


def generate_identity(common_name: str = "Simulateur i-Parapheur", organisation: str = "flowbus") -> SigningKey:
    """A self-signed RSA signer certificate valid for a year (simulator and demo only)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return SigningKey(key, cert, ())


def pades_available() -> bool:
    return importlib.util.find_spec("flowbus.signature.pades") is not None


class SimSigner:
    """Signs a main document the way its i-Parapheur type says (pades, xades, cades, visa)."""

    def __init__(self, identity: SigningKey | None = None) -> None:
        self.identity = identity or generate_identity()

    def sign(self, name: str, data: bytes, media_type: str, fmt: str, *,
             signer_name: str = "") -> tuple[bytes, tuple[str, bytes] | None]:
        """Return (document as it comes back, optional detached signature (file name, bytes))."""
        if fmt == "visa":
            return data, None
        is_pdf = media_type == "application/pdf" or data.startswith(b"%PDF-")
        if fmt == "pades" and is_pdf and pades_available():
            pades = importlib.import_module("flowbus.signature.pades")
            return pades.sign_pdf(data, self.identity, reason=f"Signé par {signer_name}" if signer_name else None), \
                None
        if fmt == "xades" and data.lstrip().startswith(b"<"):
            try:
                return sign_pes(data, self.identity), None
            except PermanentError:
                pass  # not a PES_Aller: fall back to a detached signature, as i-Parapheur does for plain XML
        return data, (f"{name}.p7s", sign_cades(data, self.identity))


def _pdf_text(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def simple_pdf(lines: list[str], *, title: str = "") -> bytes:
    """A one-page PDF 1.4 with the given lines in Helvetica (WinAnsi, so French accents show)."""
    content = b"BT /F1 10 Tf 50 800 Td 14 TL\n" + b"".join(b"(" + _pdf_text(line) + b") Tj T*\n"
                                                          for line in lines[:55]) + b"ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
        b"<< /Title (" + _pdf_text(title) + b") /Producer (flowbus) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)
