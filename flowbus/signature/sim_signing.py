"""Signing for the parapheur simulator: a throw-away signer certificate, real signatures, re-exports ``simple_pdf``.

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
from flowbus.signature.textpdf import simple_pdf
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


__all__ = ["SimSigner", "generate_identity", "pades_available", "simple_pdf"]
