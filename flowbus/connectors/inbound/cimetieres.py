"""Cimetières: a concession or funeral act PDF, the concession's data and the family's contact → the cemetery flow.

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
         "inhumation": "Autorisation d'inhumation", "exhumation": "Autorisation d'exhumation",
         "funeraire": "Autre acte funéraire"}
DURATIONS = (0, 10, 15, 30, 50)  # années ; 0 = perpétuelle (CGCT L2223-14)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+?[0-9 .\-]{10,20}")


def validate(p: Payload) -> list[ValidationError]:
    errors: list[ValidationError] = []

    def err(field: str, message: str) -> None:
        errors.append(ValidationError(message, field=field))

    kind = p.text("type_acte").lower() or "concession"
    if kind not in KINDS:
        err("type_acte", f"type d'acte {kind!r} inconnu : {', '.join(KINDS)}")
    p.form["type_acte"] = kind
    if not p.text("cimetiere"):
        err("cimetiere", "le nom du cimetière est obligatoire")
    if kind in ("concession", "renouvellement"):
        if not p.text("concession_numero"):
            err("concession_numero", "le numéro de concession est obligatoire")
        if not p.text("emplacement"):
            err("emplacement", "l'emplacement (carré, rang, numéro) est obligatoire")
        raw = p.text("duree")
        try:
            years = int(raw)
            if years not in DURATIONS:
                raise ValueError
            p.form["duree"] = years
        except ValueError:
            err("duree", f"durée {raw!r} invalide : 10, 15, 30, 50 ans ou 0 (perpétuelle)")
    if kind in ("inhumation", "exhumation") and not p.text("defunt_nom"):
        err("defunt_nom", "le nom du défunt est obligatoire pour une inhumation ou une exhumation")
    for name in ("date_debut", "date_deces"):
        if p.text(name):
            try:
                date.fromisoformat(p.text(name))
            except ValueError:
                err(name, f"{name} {p.text(name)!r} invalide : AAAA-MM-JJ")
    if not p.text("famille_nom"):
        err("famille_nom", "le nom du contact de la famille est obligatoire")
    email, phone = p.text("famille_email"), p.text("famille_telephone")
    if email and not EMAIL.fullmatch(email):
        err("famille_email", f"adresse e-mail {email!r} invalide")
    if phone and not PHONE.fullmatch(phone):
        err("famille_telephone", f"numéro de téléphone {phone!r} invalide")
    if not email and not p.text("famille_adresse"):
        err("famille_email", "une adresse e-mail ou postale de la famille est obligatoire")
    acts = p.files.get("acte", [])
    if len(acts) != 1:
        err("acte", "un fichier « acte » (le PDF de l'acte) est obligatoire, un seul")
    elif not is_pdf(p, "acte"):
        err("acte", f"l'acte {acts[0].filename!r} n'est pas un PDF")
    return errors


SPEC = DomainSpec(
    "cimetieres", "cimetiere",
    fields={"type_acte": ("type_acte", "nature", "type"), "cimetiere": ("cimetiere",),
            "concession_numero": ("concession_numero", "numero_concession", "numero"),
            "emplacement": ("emplacement",), "duree": ("duree", "duree_annees"),
            "date_debut": ("date_debut", "date_acte"), "defunt_nom": ("defunt_nom", "defunt"),
            "defunt_prenom": ("defunt_prenom",), "date_deces": ("date_deces",),
            "famille_nom": ("famille_nom", "contact_nom", "concessionnaire"),
            "famille_email": ("famille_email", "contact_email", "email"),
            "famille_telephone": ("famille_telephone", "contact_telephone", "telephone"),
            "famille_adresse": ("famille_adresse", "contact_adresse", "adresse"),
            "objet": ("objet", "title")},
    files={"acte": ("acte", "document", "acte_pdf"), "annexes": ("annexes",)},
    validate=validate)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post(ROUTE, handler(SPEC))


OPENAPI_PATHS = {ROUTE: openapi_post(
    "Submit a cemetery act (concession or funeral act PDF, concession data, family contact)", "inbound",
    {**ENTITY_PROPS, "acte": FILE_PROP, "annexes": {"type": "array", "items": FILE_PROP},
     "type_acte": {"type": "string", "enum": list(KINDS)}, "cimetiere": {"type": "string"},
     "concession_numero": {"type": "string"}, "emplacement": {"type": "string"},
     "duree": {"type": "integer", "enum": list(DURATIONS)}, "date_debut": {"type": "string", "format": "date"},
     "defunt_nom": {"type": "string"}, "defunt_prenom": {"type": "string"},
     "date_deces": {"type": "string", "format": "date"}, "famille_nom": {"type": "string"},
     "famille_email": {"type": "string", "format": "email"}, "famille_telephone": {"type": "string"},
     "famille_adresse": {"type": "string"}, "objet": {"type": "string"}},
    ["acte", "cimetiere", "famille_nom"])}
