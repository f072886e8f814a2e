"""Cimetières: a concession act PDF, the concession's data and the family's contact → the cemetery flow.

``POST /api/v1/inbound/cimetieres`` (multipart).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from flowbus.connectors.inbound.domain import (
    ENTITY_PROPS,
    FILE_PROP,
    DomainSpec,
    Payload,
    handler,
    is_pdf,
    openapi_post,
)
from flowbus.errors import ValidationError

ROUTE = "/api/v1/inbound/cimetieres"
KINDS = {"concession": "Acte de concession", "renouvellement": "Renouvellement de concession",
         "conversion": "Conversion de concession"}
DURATIONS = {"15": "15", "30": "30", "50": "50", "perpetuelle": "perpetuelle", "0": "perpetuelle"}
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+?[0-9 .\-]{10,20}")
NUMERO = re.compile(r"[A-Za-z0-9/_-]{1,30}")


def validate(p: Payload) -> list[ValidationError]:
    errors: list[ValidationError] = []

    def err(field: str, message: str) -> None:
        errors.append(ValidationError(message, field=field))

    kind = p.text("type_acte").lower() or "concession"
    if kind not in KINDS:
        err("type_acte", f"type d'acte {kind!r} inconnu : {', '.join(KINDS)}")
    if not p.text("cimetiere"):
        err("cimetiere", "le nom du cimetière est obligatoire")
    numero = p.text("concession_numero")
    if not NUMERO.fullmatch(numero):
        err("concession_numero", f"numéro de concession {numero!r} invalide : 1 à 30 caractères parmi lettres, "
                                 "chiffres, / _ -")
    raw = p.text("duree").lower()
    if raw not in DURATIONS:
        err("duree", f"durée {raw!r} invalide : 15, 30, 50 ou perpetuelle (CGCT L2223-14)")
    else:
        p.form["duree"] = DURATIONS[raw]
    for name in ("date_decision", "date_deces"):
        if p.text(name):
            try:
                date.fromisoformat(p.text(name))
            except ValueError:
                err(name, f"{name} {p.text(name)!r} invalide : AAAA-MM-JJ")
    if not p.text("date_decision"):
        err("date_decision", "la date de l'arrêté de concession est obligatoire")
    if not p.text("famille_nom"):
        err("famille_nom", "le nom du concessionnaire (contact de la famille) est obligatoire")
    email, phone = p.text("famille_email"), p.text("famille_telephone")
    if email and not EMAIL.fullmatch(email):
        err("famille_email", f"adresse e-mail {email!r} invalide")
    if phone and not PHONE.fullmatch(phone):
        err("famille_telephone", f"numéro de téléphone {phone!r} invalide")
    if not email and not p.text("famille_adresse"):
        err("famille_email", "une adresse e-mail ou postale de la famille est obligatoire")
    acts = p.files.get("acte", [])
    if len(acts) != 1:
        err("acte", "un fichier « acte » (le PDF de l'arrêté) est obligatoire, un seul")
    elif not is_pdf(p, "acte"):
        err("acte", f"l'acte {acts[0].filename!r} n'est pas un PDF")
    if not p.text("objet") and not errors:
        p.form["objet"] = f"{KINDS[kind]} n° {numero} — cimetière {p.text('cimetiere')}"
    return errors


SPEC = DomainSpec(
    "cimetieres", "cimetiere",
    fields={"type_acte": ("type_acte",), "cimetiere": ("cimetiere",),
            "concession_numero": ("numero_concession", "concession_numero"),
            "emplacement": ("emplacement",), "duree": ("duree",),
            "date_decision": ("date_decision",), "defunt_nom": ("defunt_nom", "defunt"),
            "defunt_prenom": ("defunt_prenom",), "date_deces": ("date_deces",),
            "famille_nom": ("concessionnaire_nom", "famille_nom"),
            "famille_email": ("famille_email",),
            "famille_telephone": ("famille_telephone",),
            "famille_adresse": ("famille_adresse",),
            "objet": ("objet",), "envoi_signature": ("envoi_signature",), "envoi_mailsec": ("envoi_mailsec",),
            "envoi_ged": ("envoi_ged",), "envoi_sae": ("envoi_sae",)},
    files={"acte": ("arrete", "acte"), "plan": ("plan",)},
    validate=validate)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post(ROUTE, handler(SPEC))


OPENAPI_PATHS = {ROUTE: openapi_post(
    "Submit a cemetery act (concession or funeral act PDF, concession data, family contact)", "inbound",
    {**ENTITY_PROPS, "acte": FILE_PROP, "plan": FILE_PROP,
     "type_acte": {"type": "string", "enum": list(KINDS)}, "cimetiere": {"type": "string"},
     "concession_numero": {"type": "string"}, "emplacement": {"type": "string"},
     "duree": {"type": "string", "enum": list(DURATIONS)}, "date_decision": {"type": "string", "format": "date"},
     "defunt_nom": {"type": "string"}, "defunt_prenom": {"type": "string"},
     "date_deces": {"type": "string", "format": "date"}, "famille_nom": {"type": "string"},
     "famille_email": {"type": "string", "format": "email"}, "famille_telephone": {"type": "string"},
     "famille_adresse": {"type": "string"}, "objet": {"type": "string"}},
    ["acte", "cimetiere", "concession_numero", "duree", "date_decision", "famille_nom"])}
