"""Délibérations (Webdelib / i-delibRE style): act PDF, annexes, nature, matière, numéro, date, objet, votes.

``POST /api/v1/inbound/deliberations`` (multipart) → a started document of the délibération flow.
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

ROUTE = "/api/v1/inbound/deliberations"
# ACTES natures: our flow stores Pastell's codes "1".."6"; the ACTES letter codes are accepted too
NATURES = {"1": "Délibération", "2": "Arrêté réglementaire", "3": "Arrêté individuel",
           "4": "Contrat, convention et avenant", "5": "Document budgétaire et financier", "6": "Autre"}
LETTER_NATURES = {"DE": "1", "AR": "2", "AI": "3", "CC": "4", "BF": "5", "AU": "6"}
NUMERO = re.compile(r"[A-Z0-9_]{1,15}")  # ACTES: NumeroInterne
MATIERE = re.compile(r"[1-9](\.[1-9][0-9]?){0,4}")
VOTES = ("vote_pour", "vote_contre", "vote_abstention", "presents")
ANNEX_TYPES = (b"%PDF", b"<?xml", b"\x89PNG", b"\xff\xd8\xff")


def validate(p: Payload) -> list[ValidationError]:
    errors: list[ValidationError] = []

    def err(field: str, message: str) -> None:
        errors.append(ValidationError(message, field=field))

    nature = p.text("nature").upper()
    nature = LETTER_NATURES.get(nature, nature)
    if nature not in NATURES:
        err("nature", f"nature {p.text('nature')!r} inconnue : 1 à 6 ou {', '.join(LETTER_NATURES)}")
    else:
        p.form["nature"] = nature
    numero = p.text("numero").upper()
    if not NUMERO.fullmatch(numero):
        err("numero", f"numéro {p.text('numero')!r} invalide : 1 à 15 caractères parmi A-Z, 0-9 et _ (norme ACTES)")
    else:
        p.form["numero"] = numero
    if not MATIERE.fullmatch(p.text("matiere")):
        err("matiere", f"matière {p.text('matiere')!r} invalide : un code de classification comme 1.2 ou 7.1.3")
    objet = p.text("objet")
    if not objet:
        err("objet", "l'objet est obligatoire")
    elif len(objet) > 499:
        err("objet", f"l'objet fait {len(objet)} caractères, au plus 499 (norme ACTES)")
    try:
        decided = date.fromisoformat(p.text("date_decision"))
        if decided > date.today():
            err("date_decision", "la date de décision est dans le futur")
    except ValueError:
        err("date_decision", f"date de décision {p.text('date_decision')!r} invalide : AAAA-MM-JJ")
    counts: dict[str, int] = {}
    for name in VOTES:
        raw = p.form.get(name)
        if raw in (None, ""):
            continue
        try:
            counts[name] = int(raw)
            if counts[name] < 0:
                raise ValueError
            p.form[name] = counts[name]
        except (TypeError, ValueError):
            err(name, f"{name} doit être un entier positif ou nul")
    if "presents" in counts and sum(counts.get(k, 0) for k in VOTES[:3]) > counts["presents"]:
        err("presents", "plus de votes (pour + contre + abstention) que de présents")
    if nature == "1" and counts and "vote_pour" not in counts:
        err("vote_pour", "le résultat du vote (vote_pour) manque")
    acts = p.files.get("acte", [])
    if len(acts) != 1:
        err("acte", "un fichier « acte » (le PDF de l'acte) est obligatoire, un seul")
    elif not is_pdf(p, "acte"):
        err("acte", f"l'acte {acts[0].filename!r} n'est pas un PDF")
    for i, annex in enumerate(p.files.get("annexes", [])):
        if not p.magic.get(("annexes", i), b"").startswith(ANNEX_TYPES):
            err("annexes", f"l'annexe n°{i + 1} {annex.filename!r} n'est ni un PDF, ni du XML, ni une image PNG/JPEG")
    return errors


SPEC = DomainSpec(
    "deliberations", "deliberation",
    fields={"nature": ("nature", "nature_acte", "acte_nature"),
            "matiere": ("matiere", "classification", "code_matiere"),
            "numero": ("numero", "numero_acte", "numero_de_lacte"),
            "date_decision": ("date_decision", "date_acte", "date_de_lacte"),
            "objet": ("objet",),
            "vote_pour": ("vote_pour",), "vote_contre": ("vote_contre",),
            "vote_abstention": ("vote_abstention",), "presents": ("presents", "nombre_presents"),
            "seance": ("seance", "date_seance"), "type_piece": ("type_piece", "typologie"),
            "document_papier": ("document_papier",), "envoi_signature": ("envoi_signature",),
            "envoi_tdt": ("envoi_tdt",), "envoi_publication": ("envoi_publication",), "envoi_sae": ("envoi_sae",)},
    files={"acte": ("acte", "acte_pdf", "arrete"), "annexes": ("annexes", "autre_document_attache")},
    validate=validate)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post(ROUTE, handler(SPEC))


OPENAPI_PATHS = {ROUTE: openapi_post(
    "Submit a délibération or an arrêté (act PDF, annexes, ACTES metadata, vote results)", "inbound",
    {**ENTITY_PROPS, "acte": FILE_PROP, "annexes": {"type": "array", "items": FILE_PROP},
     "nature": {"type": "string", "enum": list(NATURES) + list(LETTER_NATURES)}, "matiere": {"type": "string", "example": "1.2"},
     "numero": {"type": "string", "pattern": "^[A-Z0-9_]{1,15}$"}, "date_decision": {"type": "string", "format": "date"},
     "objet": {"type": "string", "maxLength": 499}, "vote_pour": {"type": "integer"},
     "vote_contre": {"type": "integer"}, "vote_abstention": {"type": "integer"}, "presents": {"type": "integer"},
     "seance": {"type": "string"}, "type_piece": {"type": "string"}},
    ["acte", "nature", "matiere", "numero", "date_decision", "objet"])}
