"""HTTP route modules, an explicit list.

Each module exposes ``setup(app: aiohttp.web.Application, runtime: Runtime) -> None`` that adds
its routes, and, if it serves routes under ``/api/v1``, ``OPENAPI_PATHS: dict`` (OpenAPI 3.1
``paths`` fragment) — ``tests/api`` fails on any ``/api/v1`` route missing from the document.

Authentication: routes under ``/api/v1/`` are authenticated by the middleware in
``flowbus.api.auth`` (``request[auth.PRINCIPAL]`` is the caller's ``Principal``: an API key or a
person's web session); call ``auth.require_role(request, entity_id, "reader"|"editor"|"admin",
flow_id)`` before touching an entity's data.  Console pages use ``flowbus.web.console``; the
``/api/v2`` Pastell layer and the simulators do their own.
"""

ROUTE_MODULES: list[str] = [
    "flowbus.api.health",
    "flowbus.api.entities",
    "flowbus.api.documents",
    "flowbus.api.admin",
    "flowbus.api.tokens",
    "flowbus.web.static",
    "flowbus.web.signin",
    "flowbus.web.sso",
    "flowbus.web.console_document_form",  # before web.admin: /admin/documents/nouveau is not a document id
    "flowbus.web.console_batches",  # before web.admin: /admin/documents/lot is not a document id
    "flowbus.web.admin",
    "flowbus.web.document_mailsec",
    "flowbus.web.document_pes",
    "flowbus.web.console_entities",
    "flowbus.web.console_people",
    "flowbus.web.console_keys",
    "flowbus.web.console_connectors",
    "flowbus.web.console_operations",
    "flowbus.web.console_journal",
    "flowbus.web.console_flows",
    "flowbus.web.console_notifications",
    "flowbus.web.console_addressbook",
    "flowbus.web.signer",
    "flowbus.web.signer_batch",
    "flowbus.connectors.webhooks_api",
    "flowbus.connectors.inbound.pastell_v2.routes",
    "flowbus.connectors.inbound.deliberations",
    "flowbus.connectors.inbound.finances",
    "flowbus.connectors.inbound.rh",
    "flowbus.connectors.inbound.cimetieres",
    "flowbus.api.mailsec",
    "flowbus.web.mailsec",
    "flowbus.api.archives",
    "flowbus.web.archivist",
]
