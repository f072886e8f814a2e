"""What the TdT holds for an entity without being asked: préfecture letters and PES_Retour, as documents.

S²LOW pushes nothing (tdt.md §6.2): a periodic job (``flowbus tdt poll``) lists what is unread,
creates one document per message in the flow the administrator chose, then marks it read on
S²LOW only once the document is stored.  A letter document carries what its answer needs
(``letter_transaction_id``): a step ``tdt-actes`` with ``params: {action: reply}`` sends the answer.

Fields of a letter document: ``letter_type`` (courrier_simple, demande_pieces, lettre_observations,
defere), ``letter_label``, ``id_acte``, ``letter_date``, ``letter_text``, ``letter_transaction_id``,
``related_transaction_id``, ``acte_document_id`` (the flowbus document of the act, when known);
files ``courrier`` (the préfecture's PDF files) and ``courrier_xml`` (the ACTES message).
PES_Retour documents: fields ``pes_retour_nomfic``, ``pes_retour_typfic``, ``pes_id_coll``,
``pes_cod_col``, ``pes_dte_str``; file ``pes_retour``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import structlog

from flowbus import documents
from flowbus.connectors.tdt.steps import PrefectureLetter, TdtActesConnector, TdtHeliosConnector
from flowbus.errors import ConfigError

log = structlog.get_logger(__name__)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _connector(rt: Any, instance_id: str, entity_id: str, cls: type) -> Any:
    async with rt.store.transaction() as tx:
        instance = await rt.instances.resolve(tx, instance_id, entity_id)
    conn = rt.connector(instance)
    if not isinstance(conn, cls):
        raise ConfigError(f"connector {instance_id!r} is a {instance.family}/{instance.kind}, "
                          f"not a {cls.family}/s2low connector", field="instance")
    return conn


async def collect_prefecture_letters(rt: Any, *, instance_id: str, entity_id: str, flow_id: str,
                                     actor: str = "tdt", start: bool = True) -> list[str]:
    """One document per unread préfecture letter; returns the ids of the documents created."""
    conn: TdtActesConnector = await _connector(rt, instance_id, entity_id, TdtActesConnector)
    created: list[str] = []

    async def persist(letter: PrefectureLetter) -> None:
        key = f"courrier:{letter.transaction_id}"
        if await conn.recorded(key):  # stored by an earlier run that died before marking it read
            return
        acte_doc = None
        if letter.related_transaction_id:
            async with rt.store.transaction() as tx:
                acte_doc = await tx.fetchval("SELECT document_id FROM tdt_transmissions WHERE instance_id = $1 "
                                             "AND transaction_id = $2 AND idem_key LIKE 'actes:%'",
                                             conn.instance.id, letter.related_transaction_id)
        fields = {"letter_type": letter.event, "letter_label": letter.label, "id_acte": letter.id_acte,
                  "letter_date": letter.date.isoformat() if letter.date else None, "letter_text": letter.text,
                  "letter_transaction_id": letter.transaction_id,
                  "related_transaction_id": letter.related_transaction_id, "acte_document_id": acte_doc,
                  "title": f"{letter.label} — {letter.id_acte or letter.transaction_id}"}
        flow = rt.flow(flow_id)
        declared = {f.name for f in flow.fields}
        doc = await documents.create_document(rt, entity_id=entity_id, flow_id=flow_id, actor=actor,
                                              fields={k: v for k, v in fields.items() if k in declared and v})
        for name, content in sorted(letter.files.items()):
            if name.endswith(".pdf") and "courrier" in declared:
                await documents.attach_file(rt, doc.id, "courrier", filename=name, media_type="application/pdf",
                                            chunks=_chunks(content), actor=actor, append=True)
            elif name.endswith(".xml") and not name.startswith("EACT") and "courrier_xml" in declared:
                await documents.attach_file(rt, doc.id, "courrier_xml", filename=name,
                                            media_type="application/xml", chunks=_chunks(content), actor=actor)
        await conn.record(key, letter.transaction_id, doc.id)
        if start and flow.start:
            await documents.run_action(rt, doc.id, "start", actor=actor)
        created.append(doc.id)
        log.info("tdt.letter.stored", document_id=doc.id, letter=letter.event, transaction_id=letter.transaction_id)

    await conn.fetch_prefecture_letters(persist)
    return created


async def collect_pes_retours(rt: Any, *, instance_id: str, entity_id: str, flow_id: str,
                              actor: str = "tdt", start: bool = True) -> list[str]:
    """One document per unread PES_Retour; returns the ids of the documents created."""
    conn: TdtHeliosConnector = await _connector(rt, instance_id, entity_id, TdtHeliosConnector)
    created: list[str] = []

    async def persist(name: str, xml: bytes, parsed: Any) -> None:
        key = f"pes_retour:{name}"
        if await conn.recorded(key):
            return
        flow = rt.flow(flow_id)
        declared = {f.name for f in flow.fields}
        fields = {"pes_retour_nomfic": parsed.nom_fic, "pes_retour_typfic": parsed.typ_fic,
                  "pes_id_coll": parsed.id_coll, "pes_cod_col": parsed.cod_col, "pes_dte_str": parsed.dte_str,
                  "title": f"PES_Retour {parsed.nom_fic or name}"}
        doc = await documents.create_document(rt, entity_id=entity_id, flow_id=flow_id, actor=actor,
                                              fields={k: v for k, v in fields.items() if k in declared and v})
        await documents.attach_file(rt, doc.id, "pes_retour", filename=name, media_type="application/xml",
                                    chunks=_chunks(xml), actor=actor)
        await conn.record(key, name, doc.id)
        if start:  # a flow without steps ends at once: the PES_Retour is filed, done
            await documents.run_action(rt, doc.id, "start", actor=actor)
        created.append(doc.id)

    await conn.fetch_pes_retours(persist)
    return created
