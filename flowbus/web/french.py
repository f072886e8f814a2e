"""How values read in French on the pages: dates (« 2 décembre 2026 », Paris time), Oui/Non, choice labels.

Jinja filters (``flowbus.web.env``): ``date_fr``, ``dt`` (date and time). Secure-mail templates use the
same months and dates (``flowbus.connectors.mailsec.templates``, with « d'octobre 2026 »: ``de_mois``).
``field_value(field, value)`` is how one field of a document reads, in the pages and the CSV export.
"""

from __future__ import annotations

from datetime import date, datetime
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


def field_value(field: Any, value: Any) -> str:
    """One field's value as people read it: a choice's label, Oui/Non, a French date, a file count."""
    if value is None or value == "":
        return ""
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


def install(env: Any) -> None:
    env.filters["date_fr"] = date_fr
    env.filters["dt"] = datetime_fr
    env.globals["field_value"] = field_value
    env.globals["size"] = size
