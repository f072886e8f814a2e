"""CAdES: detached CMS signatures (``.p7s``) of any file, signed with signing-time and signingCertificateV2.

Signing builds the CMS with asn1crypto (CAdES-BES attributes: content-type, message-digest,
signing-time, signing-certificate-v2; a signature timestamp from pyHanko's RFC 3161 client
when a TSA URL is given, i.e. CAdES-T) — pyHanko's generic CMS signer spends ~90 ms per
signature re-encoding certificates.  Verification is done here, synchronously, with asn1crypto and
pyHanko's integrity check: the message digest against the content, the signature over the
signed attributes, the signing-certificate attribute against the certificate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from asn1crypto import cms, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyhanko.sign import signers
from pyhanko.sign.validation.generic_cms import validate_sig_integrity
from pyhanko_certvalidator.registry import SimpleCertificateStore

from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import STRICT, OutboundPolicy
from flowbus.signature.base import Verification, pick_leaf, subject_cn
from flowbus.signature.etsi import SubIndication
from flowbus.signature.keys import SigningKey, check_validity

T = TypeVar("T")

_DIGESTS = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a pyHanko coroutine from sync code, even when an event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="flowbus-signature")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _KeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner, signing with the already-loaded ``cryptography`` key.

    SimpleSigner re-parses (and re-validates) the DER private key on every signature, which
    costs ~60 ms for RSA-2048: more than everything else in a CAdES or PAdES signature.
    """

    def __init__(self, key: SigningKey, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key = key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        if mechanism in ("rsassa_pkcs1v15", "ecdsa"):
            return self._key.sign(data, _DIGESTS[digest_algorithm]())
        return super().sign_raw(data, digest_algorithm)


@lru_cache(maxsize=32)
def pyhanko_signer(key: SigningKey) -> signers.SimpleSigner:
    """A pyHanko signer for ``key`` (the chain goes into the CMS certificates)."""
    der_key = key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    cert = asn1_x509.Certificate.load(key.certificate.public_bytes(serialization.Encoding.DER))
    chain = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in key.chain]
    return _KeySigner(key, signing_cert=cert, signing_key=asn1_keys.PrivateKeyInfo.load(der_key),
                      cert_registry=SimpleCertificateStore.from_certs(chain))


@lru_cache(maxsize=1)
def _policy_stamper_class() -> type:
    from contextlib import asynccontextmanager

    from pyhanko.sign.timestamps import HTTPTimeStamper

    from flowbus.outbound import client_session

    class PolicyTimeStamper(HTTPTimeStamper):
        """pyHanko's RFC 3161 client, on a session of the outbound policy (one per request: each signature
        runs its own event loop)."""

        def __init__(self, url: str, policy: OutboundPolicy, **kwargs: Any) -> None:
            super().__init__(url, **kwargs)
            self.policy = policy

        @asynccontextmanager
        async def _acquire_session(self):  # type: ignore[override]
            async with client_session(self.policy) as session:
                yield session

    return PolicyTimeStamper


def timestamper(tsa_url: str | None, outbound: OutboundPolicy = STRICT):
    """pyHanko's timestamp client for ``tsa_url``, connecting only where ``outbound`` allows (None: no TSA)."""
    if not tsa_url:
        return None
    return _policy_stamper_class()(tsa_url, outbound, timeout=30)


def sign_cades(data: bytes, key: SigningKey, *, now: datetime | None = None, tsa_url: str | None = None,
               outbound: OutboundPolicy = STRICT) -> bytes:
    """Detached CAdES signature of ``data`` (DER bytes of a CMS ContentInfo, for a ``.p7s`` file).

    Signed attributes: content-type, signing-time, message-digest (SHA-256),
    signing-certificate-v2 (CAdES-BES).  With ``tsa_url`` a signature timestamp token is
    added as an unsigned attribute (CAdES-T).

    Raises:
        PermanentError: expired or not-yet-valid certificate.
        TransientError: the timestamp authority could not be reached or refused.
    """
    check_validity(key.certificate, now)
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    cert, certificates, signing_certificate = _signer_parts(key)
    # RFC 5652: UTCTime up to 2049, GeneralizedTime after.
    signing_time = cms.Time({"utc_time": when} if when.year < 2050 else {"generalized_time": when})
    attributes = [
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [signing_time]}),
        cms.CMSAttribute({"type": "message_digest", "values": [h.finalize()]}),
        cms.CMSAttribute.load(signing_certificate),
    ]
    # DER: a SET OF is sorted by encoding; verifiers (OpenSSL) re-encode it that way before checking.
    signed_attrs = cms.CMSAttributes(sorted(attributes, key=lambda a: a.dump()))
    signature = key.sign(signed_attrs.dump(), hashes.SHA256())
    signer_info = {
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": "sha256_rsa" if key.is_rsa else "sha256_ecdsa"},
        "signature": signature,
    }
    if tsa_url:
        token = _timestamp_token(tsa_url, signature, outbound)
        signer_info["unsigned_attrs"] = cms.CMSAttributes([cms.CMSAttribute(
            {"type": "signature_time_stamp_token", "values": [token]})])
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data"},  # detached: no content
        "certificates": list(certificates),
        "signer_infos": [cms.SignerInfo(signer_info)],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


@lru_cache(maxsize=32)
def _signer_parts(key: SigningKey) -> tuple[asn1_x509.Certificate, list[asn1_x509.Certificate], bytes]:
    """What does not change between two signatures by ``key``: its certificates and the DER of the
    signing-certificate-v2 attribute (building that one costs milliseconds in asn1crypto)."""
    cert_der = key.certificate.public_bytes(serialization.Encoding.DER)
    cert = asn1_x509.Certificate.load(cert_der)
    cert_hash = hashes.Hash(hashes.SHA256())
    cert_hash.update(cert_der)
    attribute = cms.CMSAttribute({"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2({"certs": [
        tsp.ESSCertIDv2({"cert_hash": cert_hash.finalize(), "issuer_serial": {
            "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
            "serial_number": cert.serial_number}})]})]})
    chain = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in key.chain]
    return cert, [cert, *chain], attribute.dump()


def _timestamp_token(tsa_url: str, signature: bytes, outbound: OutboundPolicy = STRICT) -> cms.ContentInfo:
    """RFC 3161 token over the signature value (CAdES signature-time-stamp)."""
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError
    h = hashes.Hash(hashes.SHA256())
    h.update(signature)
    try:
        return run_sync(timestamper(tsa_url, outbound).async_timestamp(h.finalize(), "sha256"))
    except (OSError, TimestampRequestError) as exc:
        raise TransientError(f"the timestamp authority {tsa_url} did not answer: {exc}", field="tsa_url") from exc


def load_cms(signature: bytes) -> cms.ContentInfo:
    """Parse a CMS SignedData (DER, or PEM with a ``-----BEGIN PKCS7/CMS-----`` armour)."""
    raw = signature  # never strip DER: its last byte (of the signature value) may well be 0x20 or 0x0a
    if signature.lstrip().startswith(b"-----BEGIN"):
        from asn1crypto import pem
        _, _, raw = pem.unarmor(signature.strip())
    try:
        info = cms.ContentInfo.load(raw)
        if info["content_type"].native != "signed_data":
            raise ValueError("not signed data")
        signed = info["content"]
        # Parse the outer layers now, not later (cheaper than .native, which decodes everything).
        for signer_info in signed["signer_infos"]:
            signer_info["sid"].chosen, signer_info["digest_algorithm"]["algorithm"].native
        for choice in signed["certificates"] or []:
            choice.chosen
    except Exception as exc:
        raise PermanentError(f"the signature file is not a CMS SignedData (.p7s): {exc}", field="signature") \
            from None
    return info


def looks_like_cms(data: bytes) -> bool:
    try:
        load_cms(data)
    except PermanentError:
        return False
    return True


def verify_cades(signature: bytes, content: bytes | None, *, trusted: list[x509.Certificate] | None = None,
                 now: datetime | None = None) -> list[Verification]:
    """Check each SignerInfo of ``signature`` against ``content`` (None: the encapsulated content).

    Raises:
        PermanentError: ``signature`` is not CMS, or has no content to check.
    """
    info = load_cms(signature)
    signed_data = info["content"]
    try:
        if content is None:
            content = signed_data["encap_content_info"]["content"].native
            reference = "encapsulated content"
        else:
            reference = "detached content"
        asn1_certs, certs = [], []
        for choice in signed_data["certificates"] or []:
            if choice.name != "certificate":
                continue
            try:  # an unreadable certificate is left out: the chain check then tells what is missing
                certs.append(x509.load_der_x509_certificate(choice.chosen.dump()))
                asn1_certs.append(choice.chosen)
            except Exception:
                continue
        expected_type = signed_data["encap_content_info"]["content_type"].native
        signer_infos = list(signed_data["signer_infos"])
    except (ValueError, TypeError, KeyError) as exc:
        raise PermanentError(f"the CMS signature is malformed: {exc}", field="signature") from None
    if content is None:
        raise PermanentError("the signature is detached: give the signed file too", field="detached")
    results = []
    for signer_info in signer_infos:
        result = Verification("cades", None, None, "unknown", False, reference=reference)
        try:
            _check_signer(signer_info, content, asn1_certs, certs, expected_type, trusted, now, result)
        except Exception as exc:  # a damaged SignerInfo is a verdict, not a crash
            result.intact = False
            result.problem(SubIndication.FORMAT_FAILURE, f"the signature is malformed: {exc}")
        results.append(result)
    return results


def _check_signer(signer_info: cms.SignerInfo, content: bytes, asn1_certs: list[asn1_x509.Certificate],
                  certs: list[x509.Certificate], expected_type: str, trusted: list[x509.Certificate] | None,
                  now: datetime | None, result: Verification) -> None:
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        asn1_cert = next((c for c in asn1_certs if c.issuer == sid.chosen["issuer"]
                          and c.serial_number == sid.chosen["serial_number"].native), None)
    else:
        asn1_cert = next((c for c in asn1_certs if c.key_identifier == sid.chosen.native), None)
    cert = x509.load_der_x509_certificate(asn1_cert.dump()) if asn1_cert is not None else pick_leaf(certs)
    result.certificate = cert
    result.signer = subject_cn(cert) if cert is not None else None
    signed_attrs = signer_info["signed_attrs"]
    for attr in signed_attrs or []:
        if attr["type"].native == "signing_time":
            value = attr["values"][0].native
            result.signed_at = value if value.tzinfo else value.replace(tzinfo=UTC)
    if cert is not None:
        result.judge_chain(cert, certs, trusted, now)
    algorithm = _DIGESTS.get(signer_info["digest_algorithm"]["algorithm"].native)
    if cert is None or asn1_cert is None:
        result.problem(SubIndication.NO_SIGNING_CERTIFICATE_FOUND, "the signer's certificate is not in the signature")
        return
    if algorithm is None:
        result.problem(SubIndication.CRYPTO_CONSTRAINTS_FAILURE,
                       f"unsupported digest {signer_info['digest_algorithm']['algorithm'].native}")
        return
    h = hashes.Hash(algorithm())
    h.update(content)
    try:
        intact, valid = validate_sig_integrity(signer_info, asn1_cert, expected_type, h.finalize())
    except Exception as exc:  # pyHanko raises on malformed attributes (e.g. a bad signing-certificate)
        intact, valid = False, False
        result.problem(_pyhanko_sub_indication(exc), f"the signature is malformed: {exc}")
    else:
        if not intact:
            result.problem(SubIndication.HASH_FAILURE, "the message digest does not match: the content was altered")
        if not valid:
            result.problem(SubIndication.SIG_CRYPTO_FAILURE,
                           "the signature value does not match the signer's certificate")
    _check_signing_certificate(signed_attrs, asn1_cert, result)
    result.intact = intact and valid


def _pyhanko_sub_indication(exc: Exception) -> SubIndication:
    """The sub-indication pyHanko gave its error, when it is one flowbus reports; FORMAT_FAILURE otherwise."""
    given = getattr(exc, "ades_subindication", None)
    name = getattr(given, "standard_name", None)
    try:
        return SubIndication(name) if name else SubIndication.FORMAT_FAILURE
    except ValueError:
        return SubIndication.FORMAT_FAILURE


def _check_signing_certificate(signed_attrs: cms.CMSAttributes, cert: asn1_x509.Certificate,
                               result: Verification) -> None:
    for attr in signed_attrs or []:
        kind = attr["type"].native
        if kind not in ("signing_certificate_v2", "signing_certificate"):
            continue
        first = attr["values"][0]["certs"][0]
        name = first["hash_algorithm"]["algorithm"].native if kind == "signing_certificate_v2" else "sha1"
        h = hashes.Hash(_DIGESTS.get(name, hashes.SHA256)())
        h.update(cert.dump())
        if h.finalize() != first["cert_hash"].native:
            # EN 319 102-1 5.2.3: the signing certificate cannot be identified.
            result.problem(SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                           "the signing-certificate attribute does not match the signer's certificate")
        return
