"""/api/v1/documents/{id}/mailsec: secure-mail recipients and their status; resend one recipient's link."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import actor
from flowbus.api.documents import _readable_document
from flowbus.clock import isoformat
from flowbus.connectors.mailsec import store
from flowbus.errors import ConfigError, NotFound


async def get_mailsec(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request)
    async with rt.store.transaction() as tx:
        mailings = await store.mailings_of_document(tx, doc.id)
        out = []
        for m in mailings:
            recipients = await store.recipients_of(tx, m.id)
            replies = await store.replies_of(tx, m.id) if m.allow_reply else []
            out.append({"id": m.id, "step": m.step, "connector": m.instance_id, "subject": m.subject,
                        "created_at": isoformat(m.created_at), "files": [f["filename"] for f in m.files],
                        "recipients": [r.to_json() for r in recipients],
                        "replies": [{"id": p["id"], "recipient_id": p["recipient_id"], "address": p["address"],
                                     "created_at": p["created_at"], "text": p["text"],
                                     "files": [f["filename"] for f in p["files"]]} for p in replies]})
    read = sum(1 for m in out for r in m["recipients"] if r["status"] == "read")
    total = sum(len(m["recipients"]) for m in out)
    return web.json_response({"document": doc.id, "mailings": out,
                              "summary": {"recipients": total, "read": read, "unread": total - read - sum(
                                  1 for m in out for r in m["recipients"] if r["status"] == "undelivered"),
                                          "undelivered": sum(1 for m in out for r in m["recipients"]
                                                             if r["status"] == "undelivered")}})


async def resend(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    doc = await _readable_document(request, "editor")
    recipient_id = request.match_info["recipient_id"]
    async with rt.store.transaction() as tx:
        r = await store.get_recipient(tx, recipient_id)
        if r is None or r.document_id != doc.id:
            raise NotFound(f"document {doc.id} has no secure-mail recipient {recipient_id!r}", field="recipient_id")
        mailing = await store.get_mailing(tx, r.mailing_id)
        instance = await rt.instances.resolve(tx, mailing.instance_id, doc.entity_id)
    connector = rt.connector(instance)
    if not hasattr(connector, "resend"):
        raise ConfigError(f"connector instance {instance.id!r} ({instance.family}/{instance.kind}) cannot resend "
                          "secure mail", field="connector")
    updated = await connector.resend(recipient_id, document_id=doc.id, actor=actor(request))
    return web.json_response(updated.to_json())


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_RECIPIENT = {"type": "object", "properties": {
    "id": {"type": "string"}, "address": {"type": "string"}, "kind": {"enum": ["to", "cc", "bcc"]},
    "status": {"enum": list(store.STATUS_LABELS)}, "status_label": {"type": "string"},
    "sent_at": {"type": ["string", "null"]}, "read_at": {"type": ["string", "null"]},
    "read_ip": {"type": ["string", "null"]}, "read_user_agent": {"type": ["string", "null"]},
    "expires_at": {"type": "string"}, "password": {"type": "boolean"}, "locked_until": {"type": ["string", "null"]},
    "reminders_sent": {"type": "integer"}, "resent": {"type": "integer"}, "error": {"type": ["string", "null"]}}}

OPENAPI_PATHS = {
    "/api/v1/documents/{id}/mailsec": {
        "get": {"summary": "Secure-mail recipients of a document: sent, non délivré, lu (with date, IP, user agent)",
                "tags": ["mailsec"], "parameters": [_ID],
                "responses": {"200": {"description": "Mailings and their recipients", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "document": {"type": "string"},
                        "mailings": {"type": "array", "items": {"type": "object", "properties": {
                            "recipients": {"type": "array", "items": _RECIPIENT}}}},
                        "summary": {"type": "object"}}}}}},
                    "404": {"$ref": "#/components/responses/Problem"}}},
    },
    "/api/v1/documents/{id}/mailsec/{recipient_id}/resend": {
        "post": {"summary": "Send a fresh personal link to one recipient (journaled)", "tags": ["mailsec"],
                 "parameters": [_ID, {"name": "recipient_id", "in": "path", "required": True,
                                      "schema": {"type": "string"}}],
                 "responses": {"200": {"description": "The recipient after the resend",
                                       "content": {"application/json": {"schema": _RECIPIENT}}},
                               "404": {"$ref": "#/components/responses/Problem"},
                               "409": {"$ref": "#/components/responses/Problem"}}},
    },
}


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/api/v1/documents/{id}/mailsec", get_mailsec)
    app.router.add_post("/api/v1/documents/{id}/mailsec/{recipient_id}/resend", resend)
