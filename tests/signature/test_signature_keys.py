"""PKCS#12 loading: the test PKI's files, wrong password, expired certificate, secrets never shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from flowbus.errors import PermanentError
from flowbus.signature.keys import load_pkcs12
from flowbus.signature.pki import SEAL_CN, make_test_pki


def test_pki_files_load_with_their_chain(pki):
    for name in ("ca.pem", "seal.p12", "signer.p12", "expired.p12", "tsa.p12"):
        assert (pki.directory / name).is_file()
    seal = load_pkcs12(pki.seal_p12.read_bytes(), "flowbus")
    assert seal.subject == SEAL_CN
    assert seal.chain == (pki.ca.certificate,)
    seal.certificate.verify_directly_issued_by(pki.ca.certificate)
    tsa = load_pkcs12(pki.tsa_p12.read_bytes(), b"flowbus")
    eku = tsa.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.TIME_STAMPING]


def test_repr_never_shows_key_material(pki):
    key = load_pkcs12(pki.signer_p12.read_bytes(), "flowbus")
    text = repr(key) + str(key)
    assert "Marie Dupont" in text
    assert "PRIVATE" not in text and "RSAPrivateKey" not in text and "_rust" not in text


def test_wrong_password_names_the_field(pki):
    with pytest.raises(PermanentError) as err:
        load_pkcs12(pki.seal_p12.read_bytes(), "not-the-password")
    assert err.value.field == "pkcs12_password"
    assert "not-the-password" not in str(err.value)
    with pytest.raises(PermanentError) as err:
        load_pkcs12(pki.seal_p12.read_bytes(), None)
    assert err.value.field == "pkcs12_password"


def test_garbage_is_not_a_pkcs12(pki):
    with pytest.raises(PermanentError) as err:
        load_pkcs12(b"this is not a certificate", "flowbus")
    assert err.value.field == "pkcs12"


def test_expired_and_not_yet_valid(pki):
    with pytest.raises(PermanentError, match="expired on"):
        load_pkcs12(pki.expired_p12.read_bytes(), "flowbus")
    # The injectable clock: the same file was valid 500 days ago.
    old = load_pkcs12(pki.expired_p12.read_bytes(), "flowbus", now=datetime.now(UTC) - timedelta(days=500))
    assert old.subject == "Jean Périmé"
    with pytest.raises(PermanentError, match="not valid before"):
        load_pkcs12(pki.seal_p12.read_bytes(), "flowbus", now=datetime.now(UTC) - timedelta(days=30))


def test_pki_follows_the_injected_clock(tmp_path):
    then = datetime(2030, 6, 1, tzinfo=UTC)
    other = make_test_pki(tmp_path, now=then)
    assert other.seal.certificate.not_valid_before_utc < then < other.seal.certificate.not_valid_after_utc
    load_pkcs12(other.seal_p12.read_bytes(), "flowbus", now=then)
    with pytest.raises(PermanentError):
        load_pkcs12(other.seal_p12.read_bytes(), "flowbus")  # not valid yet today


def test_chain_status_refuses_an_end_entity_as_issuer(pki):
    """A certificate 'issued' by the seal (not a CA) never chains to the trusted root."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from flowbus.signature.base import chain_status
    from flowbus.signature.pki import _issue, _name

    now = datetime.now(UTC)
    forged = _issue(pki.seal, _name("Faux signataire"), rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    now - timedelta(days=1), now + timedelta(days=30))
    forged.verify_directly_issued_by(pki.seal.certificate)  # cryptographically issued by the seal…
    status, path = chain_status(forged, [pki.seal.certificate], pki.trusted, now)
    assert status == "untrusted" and path == [forged]  # …but the seal is not a CA
    assert chain_status(pki.seal.certificate, [], pki.trusted, now)[0] == "trusted"
    assert chain_status(pki.ca.certificate, [], pki.trusted, now)[0] == "trusted"
