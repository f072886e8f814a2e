"""Signing keys: load a PKCS#12 (an entity's seal or a signer's), check its validity, never show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from flowbus.errors import PermanentError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def subject_cn(cert: x509.Certificate) -> str:
    """The certificate's common name, or its whole subject when it has none."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    return cert.subject.rfc4514_string()


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key with its certificate and the chain above it (issuer first).

    The private key is never part of ``repr``/``str``: log the certificate subject instead.
    """

    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        return (f"SigningKey(subject={self.certificate.subject.rfc4514_string()!r}, "
                f"serial={self.certificate.serial_number:x}, chain={len(self.chain)})")

    __str__ = __repr__

    @property
    def subject(self) -> str:
        return subject_cn(self.certificate)

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.private_key, rsa.RSAPrivateKey)

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        """Raw signature of ``data`` (RSA PKCS#1 v1.5 or ECDSA), SHA-256 by default."""
        algorithm = algorithm or hashes.SHA256()
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(data, padding.PKCS1v15(), algorithm)
        return self.private_key.sign(data, ec.ECDSA(algorithm))

    def to_pkcs12(self, password: str | bytes | None, name: str | None = None) -> bytes:
        """Serialise back to PKCS#12 (used by the test PKI and ``flowbus init``)."""
        pw = password.encode() if isinstance(password, str) else password
        encryption = (serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption())
        return pkcs12.serialize_key_and_certificates(
            (name or self.subject).encode(), self.private_key, self.certificate, list(self.chain) or None, encryption)


def check_validity(cert: x509.Certificate, now: datetime | None = None, *, field_name: str = "pkcs12") -> None:
    """Raise PermanentError when ``cert`` is expired or not yet valid at ``now``."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now > not_after:
        raise PermanentError(
            f"the certificate {subject_cn(cert)!r} expired on {not_after:%Y-%m-%d %H:%M} UTC",
            field=field_name, hint="install a valid certificate (PKCS#12) for this signer or seal")
    if now < not_before:
        raise PermanentError(
            f"the certificate {subject_cn(cert)!r} is not valid before {not_before:%Y-%m-%d %H:%M} UTC",
            field=field_name, hint="check the machine's clock or the certificate's validity dates")


def load_pkcs12(data: bytes, password: str | bytes | None, *, now: datetime | None = None,
                check_dates: bool = True) -> SigningKey:
    """Open a PKCS#12 file and return its key, certificate and chain.

    Raises:
        PermanentError: wrong password (field ``pkcs12_password``), unreadable file or no
            private key (field ``pkcs12``), expired or not-yet-valid certificate at ``now``
            (field ``pkcs12``).
    """
    pw = password.encode("utf-8") if isinstance(password, str) else password
    if pw == b"":
        pw = None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, pw)
    except ValueError as exc:
        # cryptography says "Invalid password or PKCS12 data" for both cases; tell them apart
        # by trying to parse the structure without a password only when we were given one.
        if _looks_like_pkcs12(data):
            raise PermanentError("wrong password for the PKCS#12 certificate file", field="pkcs12_password",
                                 hint="check the password configured for this certificate") from None
        raise PermanentError("the certificate file is not a readable PKCS#12 (.p12/.pfx)", field="pkcs12",
                             hint="export the certificate with its private key as PKCS#12") from exc
    except TypeError as exc:
        raise PermanentError("the PKCS#12 certificate file needs a password", field="pkcs12_password") from exc
    if key is None or cert is None:
        raise PermanentError("the PKCS#12 file holds no private key with its certificate", field="pkcs12",
                             hint="export the certificate with its private key")
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise PermanentError(f"unsupported private key type {type(key).__name__} (RSA or ECDSA expected)",
                             field="pkcs12")
    if check_dates:
        check_validity(cert, now)
    return SigningKey(key, cert, tuple(_order_chain(cert, list(extra or []))))


def _looks_like_pkcs12(data: bytes) -> bool:
    """True when ``data`` is DER of a PFX structure (version 3), whatever its password."""
    try:
        from asn1crypto import pkcs12 as asn1_pkcs12
        pfx = asn1_pkcs12.Pfx.load(data)
        return pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native is not None
    except Exception:
        return False


def _order_chain(leaf: x509.Certificate, others: list[x509.Certificate]) -> list[x509.Certificate]:
    """Order ``others`` from the leaf's issuer upwards; certificates not on the path follow."""
    ordered: list[x509.Certificate] = []
    current = leaf
    remaining = list(others)
    while True:
        parent = next((c for c in remaining if c.subject == current.issuer), None)
        if parent is None or parent == current:
            break
        ordered.append(parent)
        remaining.remove(parent)
        current = parent
    return ordered + remaining
