"""Finances: a PES_Aller from the finance software (optional visual PDF) → the PES flow.

``POST /api/v1/inbound/finances`` (multipart: ``pes_aller``, optional ``visuel_pdf``, ``objet``).
The PES is checked as S²LOW would before sending, except that it may still be unsigned: the flow
signs it.  Its index (NomFic, IdColl, CodBud, exercice…) fills the document's fields.
"""

from __future__ import annotations

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

ROUTE = "/api/v1/inbound/finances"
MAX_PES_CHECK = 64 * 1024 * 1024  # above this the PES is only checked by the TdT step


def validate(p: Payload) -> list[ValidationError]:
    return []  # the PES check needs the bytes: see check_pes below (async)


async def check_pes(rt: Any, p: Payload) -> list[ValidationError]:
    from flowbus.connectors.tdt.helios import pes_errors
    errors: list[ValidationError] = []
    pes = p.files.get("pes_aller", [])
    if len(pes) != 1:
        return [ValidationError("un fichier « pes_aller » (le PES_Aller XML) est obligatoire, un seul",
                                field="pes_aller")]
    if not p.magic.get(("pes_aller", 0), b"").lstrip().startswith(b"<"):
        return [ValidationError(f"{pes[0].filename!r} n'est pas un fichier XML", field="pes_aller")]
    chunks = []
    size = 0
    async for chunk in pes[0].open():
        size += len(chunk)
        if size > MAX_PES_CHECK:
            chunks = []
            break
        chunks.append(chunk)
    if chunks:
        index, problems = pes_errors(b"".join(chunks))
        for e in problems:
            if e.field == "InfoDematerialisee" and "exige un PES signé" in e.message:
                continue  # the flow signs it
            errors.append(ValidationError(f"PES_Aller : {e.message}", field=f"pes_aller.{e.field}"))
        if index is not None:
            if not p.text("objet"):
                p.form["objet"] = index.nom_fic or pes[0].filename
            for key in ("id_coll", "cod_bud", "exercice", "dte_str"):
                value = getattr(index, key)
                if value and not p.form.get(key):
                    p.form[key] = value
            if index.nom_fic and not p.form.get("nom_fic"):
                p.form["nom_fic"] = index.nom_fic
    for i, v in enumerate(p.files.get("visuel_pdf", [])):
        if not is_pdf(p, "visuel_pdf", i):
            errors.append(ValidationError(f"le visuel {v.filename!r} n'est pas un PDF", field="visuel_pdf"))
    return errors


SPEC = DomainSpec(
    "finances", "pes",
    fields={"objet": ("objet", "title"), "id_coll": ("id_coll",), "cod_bud": ("cod_bud",),
            "exercice": ("exercice",), "dte_str": ("dte_str",), "nom_fic": ("nom_fic",),
            "envoi_signature": ("envoi_signature",), "envoi_tdt": ("envoi_tdt",), "envoi_ged": ("envoi_ged",),
            "envoi_sae": ("envoi_sae",)},
    files={"pes_aller": ("pes_aller", "fichier_pes", "pes"), "visuel_pdf": ("visuel_pdf", "visuel")},
    validate=validate)


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post(ROUTE, handler(SPEC, extra_check=check_pes))


OPENAPI_PATHS = {ROUTE: openapi_post(
    "Submit a PES_Aller from the finance software (optional visual PDF)", "inbound",
    {**ENTITY_PROPS, "pes_aller": FILE_PROP, "visuel_pdf": FILE_PROP, "objet": {"type": "string"}},
    ["pes_aller"])}
