"""A throw-away PKI for tests and the demo: a CA, a server seal, a signer, an expired certificate, a TSA.

``make_test_pki(directory)`` writes ``ca.pem`` and ``seal.p12``, ``signer.p12``,
``expired.p12``, ``tsa.p12`` (password ``flowbus``).  Nothing here is fit for production:
the CA key is kept in memory only and thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flowbus.signature.keys import SigningKey

PASSWORD = "flowbus"
SEAL_CN = "Cachet serveur — Commune de Démo"
SIGNER_CN = "Marie Dupont"
CA_CN = "flowbus Autorité de test"
TSA_CN = "flowbus Horodatage de test"


@dataclass(frozen=True)
class TestPKI:
    """Paths and keys of a generated test PKI (``ca`` is the root; the others are issued by it)."""

    __test__ = False  # not a pytest test class

    directory: Path
    password: str
    ca: SigningKey
    seal: SigningKey
    signer: SigningKey
    expired: SigningKey
    tsa: SigningKey

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def seal_p12(self) -> Path:
        return self.directory / "seal.p12"

    @property
    def signer_p12(self) -> Path:
        return self.directory / "signer.p12"

    @property
    def expired_p12(self) -> Path:
        return self.directory / "expired.p12"

    @property
    def tsa_p12(self) -> Path:
        return self.directory / "tsa.p12"

    @property
    def trusted(self) -> list[x509.Certificate]:
        return [self.ca.certificate]


def _name(cn: str, *, org: str = "Commune de Démo", unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _issue(ca: SigningKey | None, subject: x509.Name, key: rsa.RSAPrivateKey, not_before: datetime,
           not_after: datetime, *, is_ca: bool = False, eku: list[x509.ObjectIdentifier] | None = None
           ) -> x509.Certificate:
    issuer_name = ca.certificate.subject if ca else subject
    signing_key = ca.private_key if ca else key
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None if not is_ca else 0), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()), critical=False)
    if is_ca:
        usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
    else:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=eku is None, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
    builder = builder.add_extension(usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    return builder.sign(signing_key, hashes.SHA256())


def make_test_pki(directory: Path, *, now: datetime | None = None) -> TestPKI:
    """Generate the test PKI and write its files into ``directory`` (created if needed).

    Certificates are valid from one day before ``now`` for two years, except ``expired``
    (valid two years ago for one year) and the CA (ten years).
    """
    now = now or datetime.now(UTC)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = now - timedelta(days=1)

    ca_key = _rsa()
    ca_cert = _issue(None, _name(CA_CN, org="flowbus"), ca_key, start - timedelta(days=730),
                     now + timedelta(days=3650), is_ca=True)
    ca = SigningKey(ca_key, ca_cert)

    def leaf(cn: str, not_before: datetime, not_after: datetime, *, unit: str | None = None,
             eku: list[x509.ObjectIdentifier] | None = None) -> SigningKey:
        key = _rsa()
        cert = _issue(ca, _name(cn, unit=unit), key, not_before, not_after, eku=eku)
        return SigningKey(key, cert, (ca_cert,))

    seal = leaf(SEAL_CN, start, now + timedelta(days=730), unit="Cachet serveur")
    signer = leaf(SIGNER_CN, start, now + timedelta(days=730), unit="Direction des finances")
    expired = leaf("Jean Périmé", now - timedelta(days=730), now - timedelta(days=365))
    tsa = leaf(TSA_CN, start, now + timedelta(days=730), eku=[ExtendedKeyUsageOID.TIME_STAMPING])

    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name, key in (("seal", seal), ("signer", signer), ("expired", expired), ("tsa", tsa)):
        (directory / f"{name}.p12").write_bytes(key.to_pkcs12(PASSWORD, name=name))
    return TestPKI(directory, PASSWORD, ca, seal, signer, expired, tsa)
