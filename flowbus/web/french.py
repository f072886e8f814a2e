"""How values read in French on the pages: dates (« 2 décembre 2026 », Paris time), amounts (« 1 234,56 € »), Oui/Non, choice labels.

Jinja filters (``flowbus.web.env``): ``date_fr``, ``dt`` (date and time). Secure-mail templates use the
same months and dates (``flowbus.connectors.mailsec.templates``, with « d'octobre 2026 »: ``de_mois``).
``field_value(field, value)`` is how one field of a document reads, in the pages and the CSV export.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")


def _local(value: datetime) -> datetime:
    return value.astimezone(PARIS) if value.tzinfo else value


def date_fr(value: Any) -> str:
    """« 2 décembre 2026 » (« 1er » for the first day); an ISO text date is read first."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value[:10])
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = _local(value)
    if not isinstance(value, date):
        return "" if value is None else str(value)
    day = "1er" if value.day == 1 else str(value.day)
    return f"{day} {MONTHS[value.month - 1]} {value.year}"


def datetime_fr(value: Any) -> str:
    """« 2 décembre 2026 à 14 h 05 », Paris time."""
    if not isinstance(value, datetime):
        return date_fr(value)
    local = _local(value)
    return f"{date_fr(local)} à {local.hour} h {local.minute:02d}"


# Fields the connectors write on a document whatever its flow (a flow may declare them with its own label)
PRODUCED_LABELS = {
    "tdt_transaction_id": "Transaction S²LOW", "tdt_status": "État S²LOW", "tdt_error": "Erreur S²LOW",
    "unique_id": "Identifiant de l'acte (préfecture)", "ar_identifier": "Identifiant de l'accusé de réception",
    "ar_date": "Date de l'accusé de réception", "ar_annulation": "AR de l'annulation",
    "ar_reponse": "AR de la réponse", "pes_acquit_date": "Date du PES Acquit", "pes_acquit_ok": "PES accepté",
    "pes_acquit_errors": "Erreurs du PES Acquit", "pes_nomfic": "Nom du fichier PES", "pes_id_coll": "IdColl",
    "pes_cod_col": "Code collectivité", "pes_cod_bud": "Code budget", "pes_id_post": "Poste comptable",
    "pes_exercice": "Exercice", "pes_dte_str": "Date du fichier PES", "pes_nb_bordereaux": "Nombre de bordereaux",
    "pes_nb_pj": "Nombre de pièces justificatives", "signature_date": "Date de signature",
    "signature_refus": "Motif du refus de signature", "signature_refus_date": "Date du refus de signature",
    "signature_refus_par": "Refusé par", "sae_transfer_id": "Identifiant du transfert (SAE)",
    "sae_package_id": "Identifiant du paquet (SAE)", "sae_reply_code": "Code de réponse du SAE",
    "sae_archived_at": "Archivé le", "sae_purged": "Purgé du SAE", "sae_bordereau": "Bordereau de transfert (SAE)",
    "sae_ack": "Accusé de réception du SAE", "sae_reply": "Réponse du SAE",
    "rejection_reason": "Motif du refus", "acte_tamponne": "Acte tamponné par S²LOW",
    "tdt_archive_status": "Archivage sur S²LOW", "tdt_confirm_url": "Confirmation RGS** sur S²LOW",
}


def field_label(flow: Any, name: str) -> str:
    """A field's label: the flow's own, else the connectors' usual one, else its name."""
    if flow is not None and flow.has_field(name):
        return str(flow.field(name).label)
    return PRODUCED_LABELS.get(name, name)


# tdt_status, as the TdT connectors write it
TDT_STATUS_LABELS = {
    "transmis": "Transmis", "acquitte": "Acquitté par la préfecture", "anomalie": "Anomalie signalée",
    "erreur": "Erreur signalée par S²LOW", "refuse": "Refusé", "annule": "Annulé",
    "annulation_demandee": "Annulation demandée", "reponse_transmise": "Réponse transmise",
    "reponse_acquittee": "Réponse acquittée", "acquit_ko": "Acquit négatif (erreurs)",
    "transmis_sans_acquit": "Transmis sans acquit", "acquitte_archive_s2low": "Acquitté, puis archivé par S²LOW",
}


def field_value(field: Any, value: Any, name: str | None = None) -> str:
    """One field's value as people read it: a choice's label, Oui/Non, a French date, a file count, a TdT status
    in words (``name``: the field's name when the flow does not declare it)."""
    if value is None or value == "":
        return ""
    if (name or getattr(field, "name", None)) == "tdt_status":
        return TDT_STATUS_LABELS.get(str(value), str(value))
    kind = getattr(field, "type", None)
    if kind == "boolean" or isinstance(value, bool):
        return "Oui" if value in (True, "true", "1", 1) else "Non"
    if kind == "choice" and getattr(field, "choices", None):
        return str(field.choices.get(str(value), value))
    if kind == "date":
        return date_fr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return str(value).replace(".", ",")
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def size(n: int) -> str:
    """« 1,2 Mo », « 830 Ko », « 12 octets »."""
    for unit, scale in (("Go", 1 << 30), ("Mo", 1 << 20), ("Ko", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".").replace(".", ",") + f" {unit}"
    return f"{n} octet{'s' if n > 1 else ''}"


NNBSP, NBSP = "\u202f", "\u00a0"  # French thousands separator (narrow no-break space); before the euro sign


def amount(value: Any) -> str:
    """« 1 234,56 € »: cents always shown, thousands grouped by a narrow no-break space (as CLDR writes French),
    a no-break space before the euro sign so it never starts a line; « » for no amount."""
    if value is None or value == "":
        return ""
    try:
        d = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return str(value)
    whole, cents = f"{abs(d):.2f}".split(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return f"{'-' if d < 0 else ''}{NNBSP.join(groups)},{cents}{NBSP}€"


def install(env: Any) -> None:
    env.filters["date_fr"] = date_fr
    env.filters["dt"] = datetime_fr
    env.globals["field_value"] = field_value
    env.globals["size"] = size
    env.globals["amount"] = amount
