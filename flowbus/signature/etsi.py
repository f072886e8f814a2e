"""ETSI EN 319 102-1 status of a checked signature: TOTAL-PASSED, TOTAL-FAILED or INDETERMINATE, and why.

The format checks (``xades``, ``cades``, ``pades``) record each defect they find with the
sub-indication EN 319 102-1 (clause 5.1.3) gives it; ``assess`` turns those findings and the
certificate check into one main indication and sub-indication, in the order of the basic
signature validation (format, signing certificate, cryptographic verification, certificate
chain at the validation time).

What flowbus judges, and what it does not (the validation policy, stated once here):

* the signed data's digests and the signature value (HASH_FAILURE, SIG_CRYPTO_FAILURE);
* the signing certificate named by the signature (NO_SIGNING_CERTIFICATE_FOUND);
* a path from the signing certificate to a trust anchor the caller gives
  (NO_CERTIFICATE_CHAIN_FOUND: none given, or none reached), every certificate of it within
  its validity dates at the validation time (OUT_OF_BOUNDS_NO_POE for the signing
  certificate, CERTIFICATE_CHAIN_GENERAL_FAILURE for a CA);
* no revocation (no CRL, no OCSP): REVOKED / REVOKED_NO_POE are never returned, and a
  TOTAL-PASSED says nothing about revocation;
* no proof of existence: signature timestamps are not used as POE, so a signing certificate
  out of its validity at the validation time is always OUT_OF_BOUNDS_NO_POE (never
  EXPIRED or NOT_YET_VALID, which need a POE of the signing time).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Indication(StrEnum):
    """Main status indication (EN 319 102-1, clause 5.1.3), spelt as ETSI writes it."""

    TOTAL_PASSED = "TOTAL-PASSED"
    TOTAL_FAILED = "TOTAL-FAILED"
    INDETERMINATE = "INDETERMINATE"


class SubIndication(StrEnum):
    """The sub-indications flowbus can actually establish (a subset of EN 319 102-1, table 5)."""

    # TOTAL-FAILED
    FORMAT_FAILURE = "FORMAT_FAILURE"
    HASH_FAILURE = "HASH_FAILURE"
    SIG_CRYPTO_FAILURE = "SIG_CRYPTO_FAILURE"
    # INDETERMINATE
    NO_SIGNING_CERTIFICATE_FOUND = "NO_SIGNING_CERTIFICATE_FOUND"
    SIGNED_DATA_NOT_FOUND = "SIGNED_DATA_NOT_FOUND"
    CRYPTO_CONSTRAINTS_FAILURE = "CRYPTO_CONSTRAINTS_FAILURE"
    SIG_CONSTRAINTS_FAILURE = "SIG_CONSTRAINTS_FAILURE"
    OUT_OF_BOUNDS_NO_POE = "OUT_OF_BOUNDS_NO_POE"
    NO_CERTIFICATE_CHAIN_FOUND = "NO_CERTIFICATE_CHAIN_FOUND"
    CERTIFICATE_CHAIN_GENERAL_FAILURE = "CERTIFICATE_CHAIN_GENERAL_FAILURE"

    @property
    def indication(self) -> Indication:
        return Indication.TOTAL_FAILED if self in _FAILED else Indication.INDETERMINATE


_FAILED = frozenset({SubIndication.FORMAT_FAILURE, SubIndication.HASH_FAILURE, SubIndication.SIG_CRYPTO_FAILURE})

# Which finding is reported when several hold: a failure before an indeterminate, and within each
# the order of the validation steps (format, identification, then cryptographic verification).
_PRECEDENCE = (
    SubIndication.FORMAT_FAILURE,
    SubIndication.HASH_FAILURE,
    SubIndication.SIG_CRYPTO_FAILURE,
    SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
    SubIndication.SIGNED_DATA_NOT_FOUND,
    SubIndication.CRYPTO_CONSTRAINTS_FAILURE,
    SubIndication.SIG_CONSTRAINTS_FAILURE,
)


@dataclass(frozen=True)
class Status:
    """One signature's verdict: the main indication and, unless it passed, the sub-indication."""

    indication: Indication
    sub_indication: SubIndication | None = None

    def __str__(self) -> str:
        return f"{self.indication} ({self.sub_indication})" if self.sub_indication else str(self.indication)


PASSED = Status(Indication.TOTAL_PASSED)


def assess(findings: list[SubIndication], *, has_errors: bool, intact: bool,
           chain: SubIndication | None) -> Status:
    """The verdict from the defects found and the certificate check.

    ``findings``: sub-indications recorded by the format checks.  ``has_errors``/``intact``:
    the legacy result fields — a defect recorded without a sub-indication can never pass (it
    is reported as FORMAT_FAILURE).  ``chain``: the certificate check's sub-indication (None:
    a trusted chain, every certificate valid at the validation time).
    """
    for sub in _PRECEDENCE:
        if sub in findings and sub.indication is Indication.TOTAL_FAILED:
            return Status(Indication.TOTAL_FAILED, sub)
    if not findings and (has_errors or not intact):
        return Status(Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)
    for sub in _PRECEDENCE:
        if sub in findings:
            return Status(sub.indication, sub)
    if chain is not None:
        return Status(chain.indication, chain)
    return PASSED


def chain_sub_indication(*, signing_out_of_bounds: bool, trust_given: bool, anchored: bool,
                         ca_out_of_bounds: bool) -> SubIndication | None:
    """The X.509 validation outcome, as a sub-indication (None: passed).

    The signing certificate out of its validity comes first, even without trust anchors:
    it is what the reader must act on (judge at another date, with ``--at``), and giving
    trust anchors alone would not change it.
    """
    if signing_out_of_bounds:
        return SubIndication.OUT_OF_BOUNDS_NO_POE
    if not trust_given or not anchored:
        return SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    if ca_out_of_bounds:
        return SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
    return None


__all__ = ["PASSED", "Indication", "Status", "SubIndication", "assess", "chain_sub_indication"]
