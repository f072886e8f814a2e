"""Document fields checked against the flow's declared fields: normalised values or a precise error.

Used by the API for every create/PATCH and by the engine before ``start``.  Messages name the
field (``ValidationError.field``) and say what is expected.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from flowbus.errors import ValidationError
from flowbus.flows.model import FILE_TYPES, FieldDef, Flow

_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = {"true", "1", "yes", "on", "oui", "vrai"}
_FALSE = {"false", "0", "no", "off", "non", "faux", ""}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "un booléen"
    if isinstance(value, (int, float)):
        return "un nombre"
    if isinstance(value, str):
        return f"le texte « {value} »" if len(value) <= 40 else "un texte"
    if isinstance(value, (list, tuple)):
        return "une liste"
    if isinstance(value, Mapping):
        return "un objet"
    return type(value).__name__


def _n(f: FieldDef) -> str:
    """How a message names a field: its label, then its name."""
    return f"« {f.label} » ({f.name})" if f.label and f.label != f.name else f"« {f.name} »"


def normalize_value(f: FieldDef, value: Any) -> Any:
    """One value of field ``f`` → its stored form; ValidationError(field=f.name) if it does not fit."""
    name, n = f.name, _n(f)
    if value is None:
        return None
    if f.type in FILE_TYPES:
        raise ValidationError(f"{n} est un champ fichier : envoyez le fichier à "
                              f"/api/v1/documents/{{id}}/files/{name} au lieu de lui donner une valeur", field=name)
    if f.type == "text":
        if not isinstance(value, str):
            raise ValidationError(f"{n} attend du texte, pas {_describe(value)}.", field=name)
        if f.max_length is not None and len(value) > f.max_length:
            raise ValidationError(f"{n} compte {len(value)} caractères ; {f.max_length} au plus sont permis.",
                                  field=name)
        if f.pattern is not None and value != "" and re.fullmatch(f.pattern, value) is None:
            raise ValidationError(f"{n} : « {value} » n'a pas la forme attendue ({f.pattern}).", field=name)
        return value
    if f.type == "number":
        if isinstance(value, bool):
            raise ValidationError(f"{n} attend un nombre, pas un booléen.", field=name)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError(f"{n} attend un nombre fini.", field=name)
            return int(value) if value.is_integer() else value
        if isinstance(value, str):
            text = value.strip().replace(",", ".") if value.count(",") == 1 and "." not in value else value.strip()
            try:
                number = Decimal(text)
            except InvalidOperation:
                raise ValidationError(f"{n} attend un nombre, pas « {value} ».", field=name) from None
            if not number.is_finite():
                raise ValidationError(f"{n} attend un nombre fini.", field=name)
            return int(number) if number == number.to_integral_value() else float(number)
        raise ValidationError(f"{n} attend un nombre, pas {_describe(value)}.", field=name)
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValidationError(f"{n} attend oui ou non (true ou false), pas {_describe(value)}.", field=name)
    if f.type == "choice":
        choices = f.choices or {}
        key = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if key is None or key not in choices:
            listed = ", ".join(f"{k} ({label})" for k, label in choices.items())
            raise ValidationError(f"{n} : « {value} » ne fait pas partie des valeurs permises : {listed}.",
                                  field=name)
        return key
    if f.type == "date":
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if not isinstance(value, str) or not _DATE_RE.match(value.strip()):
            raise ValidationError(f"{n} attend une date écrite AAAA-MM-JJ, pas {_describe(value)}.", field=name)
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValidationError(f"{n} : « {value} » n'est pas une date qui existe (AAAA-MM-JJ).",
                                  field=name) from None
    if f.type == "email":
        if not isinstance(value, str):
            raise ValidationError(f"{n} attend une adresse électronique, pas {_describe(value)}.", field=name)
        address = value.strip()
        if not _EMAIL_RE.match(address) or len(address) > 254:
            raise ValidationError(f"{n} : « {value} » n'est pas une adresse électronique valide.", field=name)
        return address
    raise ValidationError(f"{n} a un type inconnu « {f.type} ».", field=name)


def check_fields(flow: Flow, values: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    """Normalise and validate ``values`` against ``flow``'s fields.

    ``partial=True``: only the given fields are checked (PATCH, draft creation).
    ``partial=False``: required non-file fields must also be present and non-empty.

    Raises:
        ValidationError: naming the first offending field.
    """
    if not isinstance(values, Mapping):
        raise ValidationError(f"Les champs s'envoient en objet nom → valeur, pas en {_describe(values)}.",
                              field="fields")
    declared = {f.name: f for f in flow.fields}
    out: dict[str, Any] = {}
    for name, value in values.items():
        f = declared.get(name)
        if f is None:
            from flowbus.flows.validate import did_you_mean
            hint = did_you_mean(str(name), declared) or f"champs de {flow.id} : {', '.join(declared) or '(aucun)'}"
            raise ValidationError(f"Le flux « {flow.label} » n'a pas de champ « {name} ».", field=str(name),
                                  hint=hint)
        out[name] = normalize_value(f, value)
    if not partial:
        for f in flow.fields:
            if f.required and not f.is_file and _empty(out.get(f.name)):
                raise ValidationError(f"{_n(f)} est obligatoire.", field=f.name)
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def missing_for_start(flow: Flow, fields: Mapping[str, Any], file_fields_present: set[str]) -> list[str]:
    """Required fields and files still missing, in declaration order."""
    missing = []
    for f in flow.fields:
        if not f.required:
            continue
        if f.is_file:
            if f.name not in file_fields_present:
                missing.append(f.name)
        elif _empty(fields.get(f.name)):
            missing.append(f.name)
    return missing
