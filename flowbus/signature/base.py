"""Value types shared by the signature formats: Verification, and the certificate chain check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from flowbus.signature.etsi import Status, SubIndication, assess, chain_sub_indication
from flowbus.signature.keys import subject_cn

ChainStatus = Literal["trusted", "untrusted", "expired", "unknown"]
Format = Literal["xades", "pades", "cades"]


@dataclass(frozen=True)
class ChainCheck:
    """The certificate path judged for one signature, at ``at`` (the validation time).

    ``anchored``: the path ends at one of the ``trusted`` certificates; ``trust_given``: the
    caller gave trust anchors at all.
    """

    status: ChainStatus
    path: list[x509.Certificate]
    at: datetime
    anchored: bool
    trust_given: bool

    def out_of_bounds(self, cert: x509.Certificate) -> bool:
        return not (cert.not_valid_before_utc <= self.at <= cert.not_valid_after_utc)

    @property
    def sub_indication(self) -> SubIndication | None:
        leaf, *cas = self.path
        return chain_sub_indication(signing_out_of_bounds=self.out_of_bounds(leaf), trust_given=self.trust_given,
                                    anchored=self.anchored, ca_out_of_bounds=any(self.out_of_bounds(c) for c in cas))


@dataclass
class Verification:
    """The result of checking one signature.

    ``chain_status``: ``trusted`` (the chain reaches a trusted certificate and every
    certificate is valid now), ``untrusted`` (trust anchors were given and the chain does not
    reach one), ``expired`` (a certificate of the chain is outside its validity dates now),
    ``unknown`` (no trust anchors were given).  ``intact``: every signed byte is unchanged and
    the signature value matches the signer's key.

    ``status`` is the ETSI EN 319 102-1 verdict (see ``flowbus.signature.etsi``); ``ok`` is
    older and weaker — no defect found, the chain possibly not judged — and is kept for
    callers that check integrity only.  Checks record a defect with ``problem``, which keeps
    its sub-indication beside the message.
    """

    format: Format
    signer: str | None
    signed_at: datetime | None
    chain_status: ChainStatus
    intact: bool
    reference: str | None = None  # what is signed: the Bordereau Id, "document", "detached content"…
    errors: list[str] = field(default_factory=list)
    policy: str | None = None  # signature policy identifier when the signature names one
    certificate: x509.Certificate | None = field(default=None, repr=False)
    findings: list[SubIndication] = field(default_factory=list)
    chain: ChainCheck | None = field(default=None, repr=False)

    def problem(self, sub_indication: SubIndication, message: str) -> None:
        """Record a defect: ``message`` (English, for the report) and its ETSI sub-indication."""
        self.errors.append(message)
        self.findings.append(sub_indication)

    def judge_chain(self, leaf: x509.Certificate, others: list[x509.Certificate],
                    trusted: list[x509.Certificate] | None, now: datetime | None) -> None:
        self.chain = check_chain(leaf, others, trusted, now)
        self.chain_status = self.chain.status

    @property
    def status(self) -> Status:
        chain = self.chain.sub_indication if self.chain is not None else SubIndication.NO_SIGNING_CERTIFICATE_FOUND
        return assess(self.findings, has_errors=bool(self.errors), intact=self.intact, chain=chain)

    @property
    def ok(self) -> bool:
        return self.intact and not self.errors and self.chain_status in ("trusted", "unknown")

    def to_json(self) -> dict:
        status = self.status
        return {"format": self.format, "signer": self.signer,
                "signed_at": self.signed_at.isoformat() if self.signed_at else None,
                "chain_status": self.chain_status, "intact": self.intact, "reference": self.reference,
                "policy": self.policy, "errors": list(self.errors), "ok": self.ok,
                "indication": str(status.indication),
                "sub_indication": str(status.sub_indication) if status.sub_indication else None,
                "validation_time": self.chain.at.isoformat() if self.chain is not None else None}


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject or cert == issuer:
        return False
    try:
        if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False  # an end-entity certificate cannot issue others
    except x509.ExtensionNotFound:
        pass  # old v1 roots carry no extensions
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_chain(leaf: x509.Certificate, others: list[x509.Certificate], trusted: list[x509.Certificate] | None,
                now: datetime | None = None) -> ChainCheck:
    """Build the path from ``leaf`` through ``others`` to a ``trusted`` certificate, judged at ``now``.

    A certificate equal to a trusted one is trusted by itself.
    """
    now = now or datetime.now(UTC)
    path = [leaf]
    pool = [c for c in others if c != leaf]
    anchors = list(trusted or [])
    reached = leaf in anchors
    current = leaf
    for _ in range(10):  # path length bound: no loops on malformed sets
        if reached:
            break
        anchor = next((a for a in anchors if _issued_by(current, a)), None)
        if anchor is not None:
            if anchor != current:
                path.append(anchor)
            reached = True
            break
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None or parent == current:
            break
        path.append(parent)
        pool.remove(parent)
        current = parent
    status: ChainStatus
    if trusted is not None and not reached:
        status = "untrusted"
    elif any(not (c.not_valid_before_utc <= now <= c.not_valid_after_utc) for c in path):
        status = "expired"
    else:
        status = "trusted" if trusted is not None else "unknown"
    return ChainCheck(status, path, now, reached, trusted is not None)


def chain_status(leaf: x509.Certificate, others: list[x509.Certificate], trusted: list[x509.Certificate] | None,
                 now: datetime | None = None) -> tuple[ChainStatus, list[x509.Certificate]]:
    """Build the path from ``leaf`` through ``others`` to a ``trusted`` certificate.

    Returns the status and the path found (leaf first).  A certificate equal to a trusted
    one is trusted by itself.
    """
    check = check_chain(leaf, others, trusted, now)
    return check.status, check.path


def pick_leaf(certs: list[x509.Certificate]) -> x509.Certificate | None:
    """The certificate that issued none of the others (the signer's, in a KeyInfo or CMS set)."""
    for cert in certs:
        if not any(other is not cert and other.issuer == cert.subject and other.subject != cert.subject
                   for other in certs):
            return cert
    return certs[0] if certs else None


__all__ = ["ChainCheck", "ChainStatus", "Verification", "chain_status", "check_chain", "pick_leaf", "subject_cn"]
