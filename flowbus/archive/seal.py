"""Package seal: a detached CMS signature of manifest.xml by the platform's seal, plus an RFC 3161 token over it.

The seal (``manifest.xml.p7s``) is a CAdES-BES detached signature made with
``flowbus.signature.cades.sign_cades``.  The timestamp (``manifest.xml.p7s.tsr``) is an RFC 3161
TimeStampResp (status granted, holding the TimeStampToken: CMS SignedData over a TSTInfo) whose
message imprint is the SHA-256 of the seal file: it proves the seal, hence the manifest, hence every
file digest, existed then.  Being a response, it is what ``openssl ts -verify -in … -data …`` reads;
packages sealed before held the bare token, which is still read.
Two timestamp sources: ``HttpTimestamper`` (a real TSA, production) and
``InternalTimestamper`` (the embedded default: a TSTInfo built with asn1crypto and signed
by a local TSA key, e.g. ``flowbus.signature.pki``'s ``tsa.p12``).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import STRICT, OutboundPolicy
from flowbus.signature.cades import run_sync, sign_cades
from flowbus.signature.keys import SigningKey, check_validity

log = structlog.get_logger(__name__)

MANIFEST = "manifest.xml"
SEAL = "manifest.xml.p7s"
TIMESTAMP = "manifest.xml.p7s.tsr"
# ETSI EN 319 421 "best practices" time-stamp policy
TSA_POLICY = "0.4.0.2023.1.1"


class Timestamper(Protocol):
    async def timestamp(self, data: bytes) -> bytes:
        """DER of an RFC 3161 TimeStampToken whose imprint is SHA-256(``data``)."""


class InternalTimestamper:
    """Issue RFC 3161 tokens in-process with a local TSA key (the embedded default)."""

    def __init__(self, key: SigningKey, *, clock=None) -> None:
        self.key = key
        self._clock = clock

    def _now(self) -> datetime:
        now = self._clock.now() if self._clock is not None else datetime.now(UTC)
        return now.astimezone(UTC)

    def issue(self, digest: bytes, algorithm: str = "sha256") -> bytes:
        now = self._now()
        check_validity(self.key.certificate, now, field_name="tsa_p12")
        tst_info = tsp.TSTInfo({
            "version": "v1",
            "policy": TSA_POLICY,
            "message_imprint": tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
                                                   "hashed_message": digest}),
            "serial_number": secrets.randbits(63),
            "gen_time": core.GeneralizedTime(now),
            "accuracy": tsp.Accuracy({"seconds": 1}),
            "ordering": False,
        })
        content = tst_info.dump()
        cert_der = self.key.certificate.public_bytes(serialization.Encoding.DER)
        cert = asn1_x509.Certificate.load(cert_der)
        attrs = cms.CMSAttributes(sorted([
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": now.replace(microsecond=0)})]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(content).digest()]}),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2({"certs": [
                tsp.ESSCertIDv2({"cert_hash": hashlib.sha256(cert_der).digest()})]})]}),
        ], key=lambda a: a.dump()))
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "sha256_rsa" if self.key.is_rsa else "sha256_ecdsa"},
            "signature": self.key.sign(attrs.dump(), hashes.SHA256()),
        })
        signed_data = cms.SignedData({
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "tst_info", "content": cms.ParsableOctetString(content)},
            "certificates": [cert] + [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
                                      for c in self.key.chain],
            "signer_infos": [signer_info],
        })
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()

    async def timestamp(self, data: bytes) -> bytes:
        return await asyncio.to_thread(self.issue, hashlib.sha256(data).digest())


class HttpTimestamper:
    """RFC 3161 over HTTP (pyHanko's client) against a configured timestamp authority."""

    def __init__(self, url: str, *, timeout: int = 30, outbound: OutboundPolicy = STRICT) -> None:
        self.url = url
        self.timeout = timeout
        self.outbound = outbound

    async def timestamp(self, data: bytes) -> bytes:
        from pyhanko.sign.timestamps.common_utils import TimestampRequestError

        from flowbus.signature.cades import timestamper
        stamper = timestamper(self.url, self.outbound)
        stamper.timeout = self.timeout
        digest = hashlib.sha256(data).digest()
        try:
            token = await asyncio.to_thread(run_sync, stamper.async_timestamp(digest, "sha256"))
        except (OSError, TimestampRequestError) as exc:
            raise TransientError(f"the timestamp authority {self.url} did not answer: {exc}", field="tsa_url") \
                from exc
        return token.dump()


class Sealer:
    """Seal a manifest: detached CMS by the seal key, then a timestamp token over that signature."""

    def __init__(self, key: SigningKey, timestamper: Timestamper, *, clock=None) -> None:
        self.key = key
        self.timestamper = timestamper
        self._clock = clock

    async def seal(self, manifest: bytes) -> tuple[bytes, bytes]:
        """Return (``manifest.xml.p7s``, ``manifest.xml.p7s.tsr``) bytes.

        Raises:
            PermanentError: the seal certificate is expired or not yet valid.
            TransientError: the timestamp authority did not answer.
        """
        now = self._clock.now() if self._clock is not None else None
        signature = await asyncio.to_thread(sign_cades, manifest, self.key, now=now)
        token = await self.timestamper.timestamp(signature)
        log.info("archive.sealed", seal=self.key.subject, manifest_size=len(manifest))
        return signature, as_response(token)


def as_response(token: bytes) -> bytes:
    """The RFC 3161 TimeStampResp (status granted) carrying ``token``: the .tsr file openssl and archives read."""
    return tsp.TimeStampResp({"status": {"status": "granted"},
                              "time_stamp_token": cms.ContentInfo.load(token)}).dump()


def token_of(data: bytes) -> bytes:
    """The TimeStampToken of a .tsr file: a TimeStampResp (what flowbus writes), or a bare token (older packages).

    Raises:
        ValueError: a response whose status is not granted, or that holds no token.
    """
    try:
        response = tsp.TimeStampResp.load(data)
        status = response["status"]["status"].native
        token = response["time_stamp_token"]
        has_token = token.native is not None
    except Exception:  # noqa: BLE001 - not a response (asn1crypto parses lazily): a bare token, read as such
        return data
    if status not in ("granted", "granted_with_mods"):
        raise ValueError(f"the timestamp response says {status}")
    if not has_token:
        raise ValueError("the timestamp response holds no token")
    return token.dump()


# ---- timestamp verification ------------------------------------------------------------------


@dataclass
class TimestampCheck:
    gen_time: datetime | None
    tsa: str | None
    certificate: x509.Certificate | None
    errors: list[str]


_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512, "sha1": hashlib.sha1}


def check_timestamp(token: bytes, data: bytes) -> TimestampCheck:
    """Check that ``token`` (a .tsr: TimeStampResp or bare TimeStampToken) is a valid RFC 3161 timestamp over
    ``data`` (imprint and TSA signature)."""
    result = TimestampCheck(None, None, None, [])
    try:
        info = cms.ContentInfo.load(token_of(token))
        signed_data = info["content"]
        eci = signed_data["encap_content_info"]
        if eci["content_type"].native != "tst_info":
            raise ValueError("its content is not a TSTInfo")
        raw = eci["content"].contents
        tst = tsp.TSTInfo.load(raw)
        imprint = tst["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        result.gen_time = tst["gen_time"].native
    except Exception as exc:
        result.errors.append(f"not an RFC 3161 timestamp token ({exc})")
        return result
    hasher = _HASHES.get(algorithm)
    if hasher is None:
        result.errors.append(f"unsupported imprint algorithm {algorithm}")
    elif hasher(data).digest() != imprint["hashed_message"].native:
        result.errors.append("the timestamp does not cover this seal (its imprint differs): "
                             "the seal was replaced or altered after timestamping")
    try:
        _check_token_signature(signed_data, raw, result)
    except Exception as exc:  # a corrupted token may fail to parse only here (asn1crypto parses lazily)
        result.errors.append(f"the timestamp token is corrupted ({exc})")
    return result


def _check_token_signature(signed_data: cms.SignedData, raw: bytes, result: TimestampCheck) -> None:
    from flowbus.signature.keys import subject_cn
    certs = [c.chosen for c in signed_data["certificates"] or [] if c.name == "certificate"]
    for signer_info in signed_data["signer_infos"]:
        sid = signer_info["sid"].chosen
        cert = next((c for c in certs if c.issuer == sid["issuer"] and c.serial_number == sid["serial_number"].native),
                    None) if signer_info["sid"].name == "issuer_and_serial_number" else None
        if cert is None:
            result.errors.append("the timestamp authority's certificate is not in the token")
            continue
        result.certificate = x509.load_der_x509_certificate(cert.dump())
        result.tsa = subject_cn(result.certificate)
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        digest = _HASHES.get(digest_name, hashlib.sha256)(raw).digest()
        try:
            intact, valid = validate_sig_integrity(signer_info, cert, "tst_info", digest)
        except Exception as exc:
            intact, valid = False, False
            result.errors.append(f"the timestamp signature is malformed: {exc}")
        if not (intact and valid):
            result.errors.append("the timestamp token's signature is invalid (token altered)")


def key_for_settings(data: bytes, password: str | None, *, prefix: str, now: datetime | None = None) -> SigningKey:
    """Load a PKCS#12 from connector settings; errors name ``<prefix>_p12_password`` or ``<prefix>_p12_path``."""
    from flowbus.signature.keys import load_pkcs12
    try:
        return load_pkcs12(data, password, now=now)
    except PermanentError as exc:
        exc.field = f"{prefix}_p12_password" if exc.field == "pkcs12_password" else f"{prefix}_p12_path"
        raise
