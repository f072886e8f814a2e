"""A signature verdict told in French for people: the ETSI indication, what it means, and what to do next.

The ETSI tokens (``INDETERMINATE``, ``OUT_OF_BOUNDS_NO_POE``…) stay as ETSI writes them; the
sentence after them is French.  ``headline`` is the one line ``flowbus verify`` prints per
signature; ``french_date`` writes « 12 mars 2021 » without depending on the system locale.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from flowbus.signature.base import Verification
from flowbus.signature.etsi import Indication, SubIndication
from flowbus.signature.keys import subject_cn

MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")
TRUST_HINT = "une liste de confiance (--ca FICHIER.pem, le certificat de l'autorité)"

_FIXED = {
    SubIndication.FORMAT_FAILURE: "la signature est mal formée : elle ne peut pas être vérifiée.",
    SubIndication.HASH_FAILURE: "le contenu signé a été modifié depuis la signature (son empreinte ne correspond "
                                "plus).",
    SubIndication.SIG_CRYPTO_FAILURE: "la valeur de signature ne correspond pas au certificat du signataire : la "
                                      "signature a été altérée ou n'a pas été faite avec ce certificat.",
    SubIndication.NO_SIGNING_CERTIFICATE_FOUND: "le certificat du signataire est absent de la signature, ou ne "
                                                "correspond pas à celui qu'elle désigne.",
    SubIndication.SIGNED_DATA_NOT_FOUND: "les données signées n'ont pas pu être retrouvées (référence absente ou "
                                         "externe, transformation non prise en charge).",
    SubIndication.CRYPTO_CONSTRAINTS_FAILURE: "la signature utilise un algorithme que flowbus ne prend pas en "
                                              "charge : elle n'a pas pu être vérifiée.",
    SubIndication.SIG_CONSTRAINTS_FAILURE: "la partie signée est intacte, mais une contrainte de la signature n'est "
                                           "pas respectée (modification du PDF non autorisée après la signature, ou "
                                           "horodatage invalide) : voir le détail.",
}


def french_date(when: datetime) -> str:
    """« 1er mars 2021 », « 12 mars 2021 » (UTC day)."""
    when = when.astimezone(UTC)
    day = "1er" if when.day == 1 else str(when.day)
    return f"{day} {MONTHS[when.month - 1]} {when.year}"


def _validity(cert: x509.Certificate) -> str:
    return f"du {french_date(cert.not_valid_before_utc)} au {french_date(cert.not_valid_after_utc)}"


def _judged_on(result: Verification, at_given: bool) -> str:
    at = result.chain.at if result.chain is not None else datetime.now(UTC)
    return f"le {french_date(at)}, date donnée par --at" if at_given else "aujourd'hui"


def explain(result: Verification, *, at_given: bool = False) -> str:
    """The French sentence for ``result``'s verdict (``at_given``: the validation time came from ``--at``)."""
    status = result.status
    chain = result.chain
    if status.indication is Indication.TOTAL_PASSED and chain is not None:
        return (f"la signature est intacte et le certificat du signataire remonte à une autorité de confiance ; "
                f"toute la chaîne était valide {_judged_on(result, at_given)}. La révocation des certificats "
                f"n'a pas été vérifiée (aucune CRL ni OCSP consultée).")
    sub = status.sub_indication
    if sub in _FIXED:
        return _FIXED[sub]
    if chain is None:  # no certificate at all: recorded as NO_SIGNING_CERTIFICATE_FOUND above
        return _FIXED[SubIndication.NO_SIGNING_CERTIFICATE_FOUND]
    leaf = chain.path[0]
    if sub is SubIndication.OUT_OF_BOUNDS_NO_POE:
        if chain.at > leaf.not_valid_after_utc:
            what = f"le certificat du signataire a expiré le {french_date(leaf.not_valid_after_utc)}"
        else:
            what = (f"le certificat du signataire n'était pas encore valide {_judged_on(result, at_given)} "
                    f"(il est valide {_validity(leaf)})")
        return f"{what} ; la signature est intacte. {_out_of_bounds_hint(result, leaf, at_given)}"
    if sub is SubIndication.NO_CERTIFICATE_CHAIN_FOUND:
        if not chain.trust_given:
            return ("la signature est intacte, mais aucune liste de confiance n'a été donnée : la chaîne de "
                    f"certificats n'a pas été jugée. Relancez avec {TRUST_HINT}.")
        return ("la signature est intacte, mais le certificat du signataire ne remonte à aucune des autorités "
                "de confiance données (--ca).")
    if sub is SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE:
        bad = next((c for c in chain.path[1:] if chain.out_of_bounds(c)), leaf)
        return (f"la signature est intacte, mais le certificat d'autorité « {subject_cn(bad)} » de la chaîne "
                f"n'était pas valide {_judged_on(result, at_given)} (il est valide {_validity(bad)}).")
    return "la signature n'a pas pu être jugée."


def _out_of_bounds_hint(result: Verification, leaf: x509.Certificate, at_given: bool) -> str:
    trust = "" if result.chain is not None and result.chain.trust_given else f" et {TRUST_HINT}"
    signed = result.signed_at
    if signed is not None and leaf.not_valid_before_utc <= signed <= leaf.not_valid_after_utc:
        signed = signed.astimezone(UTC)
        day = datetime(signed.year, signed.month, signed.day, tzinfo=UTC)  # what --at YYYY-MM-DD means
        shown = (day.date().isoformat() if leaf.not_valid_before_utc <= day <= leaf.not_valid_after_utc
                 else signed.strftime("%Y-%m-%dT%H:%M:%SZ"))
        date = f"{shown} (la date de signature qu'elle déclare)"
    else:
        date = f"AAAA-MM-JJ (une date où le certificat était valide : {_validity(leaf)})"
    again = "avec une autre date" if at_given else "avec"
    return f"Pour juger la signature à sa date, relancez {again} --at {date}{trust}."


def headline(result: Verification, *, at_given: bool = False) -> str:
    """« INDETERMINATE (OUT_OF_BOUNDS_NO_POE) : le certificat du signataire a expiré le … »."""
    return f"{result.status} : {explain(result, at_given=at_given)}"


__all__ = ["explain", "french_date", "headline"]
