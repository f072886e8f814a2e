"""Document page: ask the préfecture to cancel an act it acknowledged — a document of the shipped flow « Annulation d'un acte transmis » (annulation-acte) is created from the act and sent, after one confirmation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import documents
from flowbus.errors import FlowbusError
from flowbus.web import console

FLOW = "annulation-acte"
ACKNOWLEDGED = ("acquitte", "acquitte_archive_s2low")  # tdt_status of an act the préfecture acknowledged


def can_request(rt: Any, doc: Any) -> bool:
    """Whether the act may be cancelled: acknowledged by the préfecture, and the annulation flow in service."""
    return (doc.state == "done" and doc.flow_id != FLOW and bool(doc.fields.get("tdt_transaction_id"))
            and doc.fields.get("tdt_status") in ACKNOWLEDGED and FLOW in rt.flows)


async def request_annulation(request: web.Request, document_for: Any, document_title: Any) -> web.Response:
    rt = console.runtime(request)
    who, doc, _have = await document_for(request, "editor")
    back = f"/admin/documents/{doc.id}"
    if not can_request(rt, doc):
        raise console.failed(back, "Cet acte ne peut pas être annulé : il n'a pas été acquitté par la préfecture, "
                                   "ou le flux « Annulation d'un acte transmis » n'est pas en service.")
    form = await request.post()
    title = document_title(doc, rt.flows)
    if form.get("confirme") != "1":  # the préfecture is asked for real: once more
        return await console.page(request, "admin_confirm_annulation.html", who=who, doc=doc, title=title)
    try:
        created = await documents.create_document(rt, entity_id=doc.entity_id, flow_id=FLOW, actor=who.actor, fields={
            "title": f"Annulation : {title}"[:255], "acte_document_id": doc.id,
            "id_acte": doc.fields.get("ar_identifier") or doc.fields.get("unique_id"),
            "tdt_transaction_id": str(doc.fields["tdt_transaction_id"]), "envoi_annulation": True})
        await documents.run_action(rt, created.id, "start", actor=who.actor)
    except FlowbusError as exc:
        raise console.failed(back, f"L'annulation n'a pas pu être demandée : {exc.message}") from None
    raise console.done(f"/admin/documents/{created.id}", f"Annulation de « {title} » envoyée à la préfecture : "
                                                          "ce document suit son accusé de réception.")


def setup(app: web.Application, *, document_for: Any, document_title: Any) -> None:
    """``document_for`` / ``document_title``: the document page's own (flowbus.web.admin), handed down."""
    async def handler(request: web.Request) -> web.Response:
        return await request_annulation(request, document_for, document_title)
    app.router.add_post("/admin/documents/{id}/annulation", handler)


__all__ = ["FLOW", "can_request", "request_annulation", "setup"]
