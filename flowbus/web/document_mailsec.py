"""The secure mail of a document, on its page (French): each recipient's status (envoyé, lu, non délivré…)
and « Renvoyer » — a new link sent to one recipient, by the connector instance that sent the first."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.connectors.mailsec import store
from flowbus.errors import FlowbusError
from flowbus.web import console

STATUS_LABELS = {"sending": "En cours d'envoi", "sent": "Envoyé, pas encore lu", "deferred": "Envoi différé",
                 "undelivered": "Non délivré", "read": "Lu"}


async def mailings(tx: Any, document_id: str) -> list[tuple[Any, list[Any]]]:
    """The document's mailings with their recipients (a document has a handful: its steps)."""
    out = []
    for m in await store.mailings_of_document(tx, document_id):
        out.append((m, await store.recipients_of(tx, m.id)))
    return out


async def resend(request: web.Request) -> web.Response:
    from flowbus.web.admin import document_for  # the page's own access rule
    rt = console.runtime(request)
    who, doc, _role = await document_for(request, "editor")
    back = f"/admin/documents/{doc.id}"
    async with rt.store.transaction() as tx:
        r = await store.get_recipient(tx, request.match_info["rid"])
        if r is None or r.document_id != doc.id:
            raise console.failed(back, "Ce destinataire n'appartient pas à ce document.")
        mailing = await store.get_mailing(tx, r.mailing_id)
        instance = await rt.instances.resolve(tx, mailing.instance_id, doc.entity_id)
    connector = rt.connector(instance)
    if not hasattr(connector, "resend"):
        raise console.failed(back, f"Le connecteur « {instance.id} » ne sait pas renvoyer un courriel sécurisé.")
    try:
        await connector.resend(r.id, document_id=doc.id, actor=who.actor)
    except FlowbusError as exc:
        raise console.failed(back, f"Renvoi à {r.address} impossible : {exc.message}") from None
    raise console.done(back, f"Un nouveau lien a été envoyé à {r.address}.")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_post("/admin/documents/{id}/courriel/{rid}/renvoyer", resend)
