"""Step families ``tdt-actes`` and ``tdt-helios`` over S²LOW (kind ``s2low``).

``tdt-actes``: start = read the act from the document, validate it against the préfecture's
classification, post it once; check = poll the status until the AR (fields ``ar_date``,
``ar_identifier``/``unique_id``, file ``aractes``) or a refusal/anomaly (``Outcome.rejected``
with the préfecture's reason).  Setting ``envoi_en_attente`` (RGS**): the act is posted
``en_attente`` (17) and waits « en attente de confirmation RGS** » with field ``tdt_confirm_url``,
the S²LOW page where an agent confirms it with his RGS** certificate and comes back to the
document; the step goes on once S²LOW has it (17 → 1).  Step param ``action: cancel`` sends the annulation of the act
transmitted earlier and waits for its ARAnnulation.

``tdt-helios``: start = check the PES_Aller and extract its index fields, post it once;
check = poll until the PES_Acquit (file ``pes_acquit``, fields ``pes_acquit_ok``…).

Never twice: the S²LOW transaction id is recorded in table ``tdt_transmissions`` right after
the post, keyed by the act number (or the PES digest); a redelivered start finds it there.  If
the worker died between the post and that record, S²LOW itself refuses the duplicate number
and the connector takes the existing transaction over (``find_acte``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import aiohttp

from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, ConnectorInstance, Outcome, StepContext
from flowbus.connectors.tdt import actes as A
from flowbus.connectors.tdt.actes_messages import LETTER_LABELS, parse_message
from flowbus.connectors.tdt.classification import Classification, ClassificationCache, parse_ttl
from flowbus.connectors.tdt.helios import check_pes_aller, parse_pes_acquit, parse_pes_retour
from flowbus.connectors.tdt.s2low import (ACTES_ARCHIVING, ACTES_STATUS, DUPLICATE_NUMBER, HELIOS_ARCHIVING,
                                         S2lowClient, S2lowKO, client_options)
from flowbus.errors import PermanentError, TransientError, ValidationError
from flowbus.outbound import client_session

RGS_WAITING = "en attente de confirmation RGS**"
SECRETS = frozenset({"password", "client_cert_password", "client_cert_p12_base64"})
NATURE_BY_ABBREV = {v: k for k, v in A.NATURES.items()}


def _true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "on", "oui")


def _first(fields: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if fields.get(name) not in (None, ""):
            return fields[name]
    return None


class _S2lowBase(BaseConnector):
    kind = "s2low"
    secret_keys = SECRETS

    def __init__(self, instance: ConnectorInstance, runtime: Any) -> None:
        super().__init__(instance, runtime)
        self._options: dict[str, Any] = {}
        self._ssl_loaded = False
        self._session: aiohttp.ClientSession | None = None  # only when the runtime has no shared session

    def client(self) -> S2lowClient:
        if not self._ssl_loaded:
            self._options = client_options(self.instance.settings)  # the PKCS#12 is read once
            self._ssl_loaded = True
        session = getattr(self.runtime, "http", None)
        if session is None:
            if self._session is None or self._session.closed:
                self._session = client_session(self.runtime.outbound)
            session = self._session
        return S2lowClient(str(self.instance.settings.get("url") or ""), session=session, **self._options)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_in(self, ctx: StepContext) -> timedelta:
        """The step's ``wait.check_every`` (or params ``check_every``), else 15 minutes."""
        if ctx.params.get("check_every") is not None:
            return parse_ttl(ctx.params["check_every"])
        flows = getattr(self.runtime, "flows", None) or {}
        flow = flows.get(ctx.flow_id) if isinstance(flows, Mapping) else None
        step = None
        if flow is not None and hasattr(flow, "step"):
            try:
                step = flow.step(ctx.step_id)
            except Exception:  # noqa: BLE001 - an unknown step only means "no wait policy"
                step = None
        every = getattr(getattr(step, "wait", None), "check_every", None)
        if every:
            return every
        return timedelta(minutes=15)

    # ---- never post twice --------------------------------------------------------------------

    async def recorded(self, key: str) -> str | None:
        store = getattr(self.runtime, "store", None)
        if store is None:
            return None
        async with store.transaction() as tx:
            return await tx.fetchval("SELECT transaction_id FROM tdt_transmissions WHERE instance_id = $1 "
                                     "AND idem_key = $2", self.instance.id, key)

    async def record(self, key: str, transaction_id: str, document_id: str) -> None:
        store = getattr(self.runtime, "store", None)
        if store is None:
            return
        async with store.transaction() as tx:
            await tx.execute("DELETE FROM tdt_transmissions WHERE instance_id = $1 AND idem_key = $2",
                             self.instance.id, key)
            await tx.execute("INSERT INTO tdt_transmissions (instance_id, idem_key, transaction_id, document_id, "
                             "created_at) VALUES ($1, $2, $3, $4, $5)", self.instance.id, key, transaction_id,
                             document_id, isoformat(self.runtime.clock.now()))


@dataclass(frozen=True)
class PrefectureLetter:
    """A préfecture message fetched from S²LOW (courrier simple, demande de pièces, lettre d'observations, déféré)."""

    transaction_id: str
    related_transaction_id: str | None
    event: str
    label: str
    id_acte: str | None
    date: date | None
    text: str | None
    files: dict[str, bytes]


class TdtActesConnector(_S2lowBase):
    """ACTES through S²LOW.  Settings: url, login, password, client_cert_*, verify_tls, departement, siren,
    classification_ttl."""

    family = "tdt-actes"

    def __init__(self, instance: ConnectorInstance, runtime: Any) -> None:
        super().__init__(instance, runtime)
        self.classifications = ClassificationCache(getattr(runtime, "store", None), runtime.blobs)

    async def classification(self, entity_id: str, *, refresh: bool = False) -> Classification:
        """The préfecture's classification for ``entity_id``: cached, refreshed after ``classification_ttl``."""
        ttl = parse_ttl(self.instance.settings.get("classification_ttl"))
        now = self.runtime.clock.now()
        cached = None if refresh else await self.classifications.get(self.instance.id, entity_id)
        if cached is not None and now - cached.fetched_at < ttl:
            return cached.classification
        client = self.client()
        try:
            xml = await client.get_classification()
        except S2lowKO as exc:
            # S²LOW has no classification for this authority yet: ask the préfecture, retry later.
            await client.request_classification()
            raise TransientError(f"classification de la préfecture indisponible ({exc.message}) : demandée, "
                                 "nouvel essai plus tard", field="classification", retry_in=600) from exc
        return await self.classifications.put(self.instance.id, entity_id, xml, now)

    async def acte_from(self, ctx: StepContext, classification: Classification | None) -> A.Acte:
        """Read the act from the document; field names may be renamed with params ``fields``/``files``."""
        names = {**{"numero_interne": "numero_interne", "decision_date": "date_decision", "nature": "nature",
                    "classification": "classification", "objet": "objet", "document_papier": "document_papier",
                    "type_acte": "type_acte", "type_pj": "type_pj"}, **dict(ctx.params.get("fields") or {})}
        f = ctx.document.fields
        numero = _first(f, names["numero_interne"], "numero", "numero_interne")
        raw_date = _first(f, names["decision_date"], "decision_date", "date_decision")
        nature = _first(f, names["nature"], "nature_code", "nature")
        classif = _first(f, names["classification"], "classification", "matiere")
        objet = _first(f, names["objet"], "objet", "title")
        if numero is None:
            raise ValidationError("le numéro interne de l'acte est obligatoire", field=names["numero_interne"])
        if raw_date is None:
            raise ValidationError("la date de décision est obligatoire", field=names["decision_date"])
        try:
            decision = raw_date if isinstance(raw_date, date) else date.fromisoformat(str(raw_date)[:10])
        except ValueError:
            raise ValidationError(f"date de décision {raw_date!r} invalide (AAAA-MM-JJ)",
                                  field=names["decision_date"]) from None
        if nature is None:
            raise ValidationError("la nature de l'acte est obligatoire (1 à 6 ou DE, AR, AI, CC, BF, AU)",
                                  field=names["nature"])
        code = NATURE_BY_ABBREV.get(str(nature).upper()) or (int(nature) if str(nature).isdigit() else None)
        if code is None:
            raise ValidationError(f"nature d'acte {nature!r} inconnue (1 à 6 ou DE, AR, AI, CC, BF, AU)",
                                  field=names["nature"])
        if classif is None:
            raise ValidationError("la classification (matière, par ex. « 7.1 ») est obligatoire",
                                  field=names["classification"])
        matiere = A.parse_classif(classif if isinstance(classif, str) else list(classif),
                                  field_name=names["classification"])
        files = {"document": "acte", "annexes": "annexes", **dict(ctx.params.get("files") or {})}
        doc_field = files["document"] if ctx.files(files["document"]) else "document"
        document = None
        if ctx.files(doc_field):
            ref = ctx.file(doc_field)
            document = A.ActeFile(ref.filename, await ctx.file_bytes(doc_field), f.get(names["type_acte"]) or None)
        types = list(f.get(names["type_pj"]) or [])
        annexes = []
        for i, ref in enumerate(ctx.files(files["annexes"])):
            annexes.append(A.ActeFile(ref.filename, await ctx.file_bytes(files["annexes"], i),
                                      types[i] if i < len(types) and types[i] else None))
        papier = f.get(names["document_papier"])
        return A.Acte(code, matiere, decision, str(numero), str(objet or ""), document, tuple(annexes),
                      papier in (True, 1, "1", "true", "oui", "O"))

    async def start(self, ctx: StepContext) -> Outcome:
        if ctx.params.get("action") == "cancel":
            return await self._start_cancel(ctx)
        if ctx.params.get("action") == "reply":
            return await self._start_reply(ctx)
        if ctx.data.get("transaction_id"):
            return await self.check(ctx)
        s = self.instance.settings
        classification = await self.classification(ctx.document.entity_id)
        try:
            acte = A.validate_acte(await self.acte_from(ctx, classification), today=self.runtime.clock.now().date(),
                                   classification=classification,
                                   annex_max_size=int(s.get("annex_max_size", A.ANNEX_MAX_SIZE)),
                                   archive_max_size=int(s.get("archive_max_size", A.ARCHIVE_MAX_SIZE)))
        except ValidationError as exc:
            raise PermanentError(exc.message, field=exc.field, hint=exc.hint) from exc
        key = f"actes:{ctx.document.entity_id}:{acte.numero_interne}"
        tid = await self.recorded(key)
        client = self.client()
        en_attente = _true(s.get("envoi_en_attente"))
        if tid is None:
            try:
                tid = await client.post_acte(acte, en_attente=en_attente)
            except S2lowKO as exc:
                if not DUPLICATE_NUMBER.search(exc.message):
                    raise
                found = await client.find_acte(acte.numero_interne)
                if found is None or (found.get("decision_date") and found["decision_date"] !=
                                     acte.decision_date.isoformat()):
                    raise PermanentError(f"le numéro {acte.numero_interne} a déjà servi pour un autre acte sur S²LOW",
                                         field="numero_interne", hint="donnez à l'acte un numéro interne neuf") \
                        from exc
                tid = str(found["id"])
                ctx.log.warning("tdt.actes.adopted", transaction_id=tid, numero=acte.numero_interne)
            await self.record(key, tid, ctx.document.id)
        expected = None
        if s.get("departement") and s.get("siren"):
            expected = A.id_acte(str(s["departement"]), str(s["siren"]), acte)
        data = {"transaction_id": tid, "numero": acte.numero_interne, "id_acte": expected}
        if en_attente:
            url = client.confirm_url(tid, self._return_url(ctx))
            fields = {"tdt_transaction_id": tid, "tdt_status": RGS_WAITING, "tdt_confirm_url": url}
            return Outcome.waiting(self.check_in(ctx), data={**data, "status": 17, "en_attente": True},
                                   fields=fields,
                                   message=f"Acte {acte.numero_interne} déposé sur le TdT en attente (transaction "
                                           f"{tid}) : un agent doit confirmer la télétransmission avec son "
                                           "certificat RGS**")
        return Outcome.waiting(self.check_in(ctx), data=data,
                               fields={"tdt_transaction_id": tid, "tdt_status": "transmis"},
                               message=f"Acte {acte.numero_interne} déposé sur le TdT (transaction {tid})")

    def _return_url(self, ctx: StepContext) -> str:
        """The document's page, where S²LOW sends the agent back (%%ERROR%% 0/1, %%MESSAGE%%)."""
        base = str(getattr(getattr(self.runtime, "settings", None), "base_url", "") or "")
        return f"{base}/admin/documents/{ctx.document.id}?confirmation_tdt=%%ERROR%%&message_tdt=%%MESSAGE%%"

    async def check(self, ctx: StepContext) -> Outcome:
        tid = ctx.data.get("transaction_id")
        if not tid:
            raise PermanentError("aucune transaction S²LOW connue pour cette étape : relancez l'étape")
        if ctx.data.get("action") == "cancel":
            return await self._check_cancel(ctx)
        if ctx.data.get("action") == "reply":
            return await self._check_reply(ctx)
        client = self.client()
        st = await client.get_acte_status(str(tid))
        spent = {"tdt_confirm_url": None} if ctx.data.get("en_attente") else {}  # the RGS** link, once confirmed
        if st.status in (1, 2, 3, 17, 18):
            changed = st.status != ctx.data.get("status")
            fields: dict[str, Any] | None = None
            if changed:
                fields = {"tdt_status": RGS_WAITING if st.status == 17 else st.label}
                if st.status != 17:
                    fields.update(spent)
            return Outcome.waiting(self.check_in(ctx), data={**ctx.data, "status": st.status}, fields=fields)
        if st.status in (4, 5):
            msg = parse_message(st.payload)
            if msg.event != "ar" or not msg.id_acte:
                raise PermanentError(f"S²LOW a répondu « acquittement reçu » sans ARActe lisible ({msg.root})")
            await self._note_classification(ctx, msg.classification_date)
            files = [await ctx.new_file(ctx.params.get("ar_field", "aractes"), f"{msg.id_acte}-1-2.xml",
                                        "application/xml", st.payload)]
            files += await self._receipts(ctx, client, str(tid), msg.id_acte)
            return Outcome.done(fields={"ar_date": msg.date.isoformat() if msg.date else None,
                                        "ar_identifier": msg.id_acte, "unique_id": msg.id_acte,
                                        "tdt_transaction_id": str(tid), "tdt_status": "acquitte", **spent},
                                files=files, data={**ctx.data, "id_acte": msg.id_acte},
                                message=f"Acquittement de la préfecture reçu : {msg.id_acte} le {msg.date}")
        if st.status in ACTES_ARCHIVING:
            # acknowledged, then moved by S²LOW to its archiving before this poll: the status no longer carries
            # the ARActe (tdt.md §3.5); the bordereau and the stamped act are still read from the transaction
            id_acte = ctx.data.get("id_acte")
            files = await self._receipts(ctx, client, str(tid), id_acte or str(tid))
            problem = st.status in (14, 20, 22)
            return Outcome.done(fields={"ar_identifier": id_acte, "unique_id": id_acte,
                                        "tdt_transaction_id": str(tid), "tdt_status": "acquitte_archive_s2low",
                                        "tdt_archive_status": st.label, **spent},
                                files=files, data={**ctx.data, "status": st.status},
                                message=f"Acte acquitté par la préfecture puis passé par S²LOW à l'état « {st.label} » "
                                        "avant la relève : l'ARActe n'est plus fourni par S²LOW"
                                        + (" ; l'archivage de S²LOW a échoué, à suivre avec le SAE" if problem else ""))
        if st.status == 16:
            raise PermanentError(f"la transaction {tid} a été détruite sur S²LOW (statut 16) : ni AR ni fichiers à "
                                 "récupérer", hint="vérifiez l'acte sur S²LOW, puis passez l'étape ou renvoyez-le")
        if st.status == -1:
            reason = st.message or "erreur signalée par S²LOW"
            if "classification" in reason.lower():
                await self.classifications.invalidate(self.instance.id, ctx.document.entity_id)
            kind = "anomalie" if "anomalie" in reason.lower() else "erreur"
            return Outcome.rejected(reason, fields={"tdt_status": kind, "tdt_error": reason,
                                                    "tdt_transaction_id": str(tid)}, data=dict(ctx.data))
        if st.status == 6:
            reason = st.message or "acte refusé"
            return Outcome.rejected(reason, fields={"tdt_status": "refuse", "tdt_error": reason,
                                                    "tdt_transaction_id": str(tid)}, data=dict(ctx.data))
        if st.status == 0:
            return Outcome.rejected("transmission annulée", fields={"tdt_status": "annule"}, data=dict(ctx.data))
        label = st.label
        if st.status not in ACTES_STATUS:  # a status this version does not know: S²LOW names it
            try:
                label = (await client.actes_statuses()).get(st.status, label)
            except (PermanentError, TransientError, KeyError, ValueError, TypeError) as exc:
                ctx.log.warning("tdt.actes.status_list_unavailable", error=str(exc))
        raise PermanentError(f"statut S²LOW inattendu pour la transaction {tid} : {st.status} ({label})",
                             hint="signalez ce statut à l'équipe flowbus ; l'acte est à vérifier sur S²LOW")

    async def _receipts(self, ctx: StepContext, client: S2lowClient, tid: str, id_acte: str) -> list[Any]:
        """The bordereau d'acquittement and the act stamped by S²LOW (« acte tamponné »), each when S²LOW has it:
        a missing one is logged, never a failure of the step."""
        files = []
        try:
            pdf = await client.get_bordereau(tid)
            if pdf.startswith(b"%PDF"):
                files.append(await ctx.new_file(ctx.params.get("bordereau_field", "bordereau_acquittement"),
                                                f"bordereau-{id_acte}.pdf", "application/pdf", pdf))
        except PermanentError as exc:
            ctx.log.warning("tdt.actes.bordereau_missing", error=str(exc))
        try:
            listed = await client.list_files(tid)
            act = listed[1] if len(listed) > 1 else None  # [0] the message, [1] the act, [2…] the annexes
            if act is not None:
                stamped = await client.download_file(str(act["id"]), tampon=True)
                if stamped.startswith(b"%PDF"):
                    name = str(act.get("posted_filename") or act.get("name") or "acte.pdf")
                    files.append(await ctx.new_file(ctx.params.get("tampon_field", "acte_tamponne"),
                                                    f"tampon-{name}", "application/pdf", stamped))
        except (PermanentError, KeyError, TypeError) as exc:
            ctx.log.info("tdt.actes.files_list_unavailable", error=str(exc))
        if not any(f.field == ctx.params.get("tampon_field", "acte_tamponne") for f in files):
            try:  # S²LOW < 2 has no files list: its actes_transac_get_tampon.php gives the stamped act
                stamped = await client.get_tampon(tid)
                files.append(await ctx.new_file(ctx.params.get("tampon_field", "acte_tamponne"),
                                                f"tampon-{id_acte}.pdf", "application/pdf", stamped))
            except PermanentError as exc:
                ctx.log.warning("tdt.actes.tampon_missing", error=str(exc))
        return files

    async def _note_classification(self, ctx: StepContext, en_cours: date | None) -> None:
        """A newer ``ClassificationDateVersionEnCours`` makes the cached classification stale: drop it and ask
        the préfecture for the new one (7-1), so the next act is checked against it (tdt.md §6.4)."""
        if en_cours is None:
            return
        cached = await self.classifications.get(self.instance.id, ctx.document.entity_id)
        if cached is not None and cached.classification.date < en_cours:
            await self.classifications.invalidate(self.instance.id, ctx.document.entity_id)
            try:
                await self.client().request_classification()
            except (S2lowKO, TransientError) as exc:  # best effort: the AR itself is what this step waited for
                ctx.log.warning("tdt.classification.request_failed", error=str(exc))
            ctx.log.info("tdt.classification.stale", cached=cached.classification.date.isoformat(),
                         current=en_cours.isoformat())

    async def _start_cancel(self, ctx: StepContext) -> Outcome:
        if ctx.data.get("transaction_id"):
            return await self.check(ctx)
        tid = ctx.document.fields.get("tdt_transaction_id")
        if not tid:
            raise PermanentError("aucun acte transmis à annuler", field="tdt_transaction_id")
        key = f"annulation:{ctx.document.entity_id}:{tid}"
        cancel_id = await self.recorded(key)
        if cancel_id is None:
            cancel_id = await self.client().cancel_acte(str(tid))
            await self.record(key, cancel_id, ctx.document.id)
        return Outcome.waiting(self.check_in(ctx), data={"transaction_id": str(tid), "cancel_id": cancel_id,
                                                         "action": "cancel"},
                               fields={"tdt_status": "annulation_demandee"},
                               message=f"Annulation de l'acte demandée (transaction {cancel_id})")

    async def _check_cancel(self, ctx: StepContext) -> Outcome:
        st = await self.client().get_acte_status(str(ctx.data["cancel_id"]))
        if st.status == 4:
            msg = parse_message(st.payload)
            f = await ctx.new_file(ctx.params.get("ar_field", "ar_annulation"), f"{msg.id_acte}-6-2.xml",
                                   "application/xml", st.payload)
            return Outcome.done(fields={"tdt_status": "annule", "cancel_date": msg.date.isoformat() if msg.date
                                        else None}, files=[f], data=dict(ctx.data),
                                message=f"Annulation acquittée par la préfecture le {msg.date}")
        if st.status in (-1, 6):
            return Outcome.rejected(st.message or "annulation refusée", data=dict(ctx.data))
        return Outcome.waiting(self.check_in(ctx), data=dict(ctx.data))

    async def _start_reply(self, ctx: StepContext) -> Outcome:
        """Answer the préfecture letter this document carries (created by ``inbox.collect_prefecture_letters``).

        Fields: ``letter_transaction_id``, ``type_envoie`` (2 réponse à un courrier simple, 3 refus, 4 envoi
        des pièces / réponse); files ``reponse`` (the answer, PDF) and ``reponse_annexes`` (3-4 only).
        """
        if ctx.data.get("transaction_id"):
            return await self.check(ctx)
        f = ctx.document.fields
        letter = f.get("letter_transaction_id")
        if not letter:
            raise PermanentError("le document ne porte pas de courrier de la préfecture auquel répondre",
                                 field="letter_transaction_id")
        try:
            type_envoie = int(f.get("type_envoie") or 4)
        except (TypeError, ValueError):
            raise PermanentError(f"type_envoie {f.get('type_envoie')!r} invalide : 2, 3 ou 4",
                                 field="type_envoie") from None
        key = f"reponse:{ctx.document.entity_id}:{letter}"
        rid = await self.recorded(key)
        if rid is None:
            ref = ctx.file("reponse")
            document = A.ActeFile(ref.filename, await ctx.file_bytes("reponse"), f.get("type_acte") or "99_AU")
            annexes = tuple([A.ActeFile(r.filename, await ctx.file_bytes("reponse_annexes", i), "99_AU")
                             for i, r in enumerate(ctx.files("reponse_annexes"))])
            for item in (document, *annexes):
                if item.media_type != "application/pdf":
                    raise PermanentError(f"la réponse {item.filename!r} doit être un PDF", field="reponse")
            rid = await self.reply(str(letter), type_envoie, document, annexes)
            await self.record(key, rid, ctx.document.id)
        return Outcome.waiting(self.check_in(ctx), data={"transaction_id": rid, "action": "reply",
                                                         "letter_type": f.get("letter_type")},
                               fields={"reponse_transaction_id": rid, "tdt_status": "reponse_transmise"},
                               message=f"Réponse à la préfecture déposée (transaction {rid})")

    async def _check_reply(self, ctx: StepContext) -> Outcome:
        st = await self.client().get_acte_status(str(ctx.data["transaction_id"]))
        if st.status in (-1, 6, 10):
            return Outcome.rejected(st.message or "réponse refusée", data=dict(ctx.data))
        if st.status in (4, 11) and st.payload:
            msg = parse_message(st.payload)
            f = await ctx.new_file("ar_reponse", f"AR-reponse-{ctx.data['transaction_id']}.xml", "application/xml",
                                   st.payload)
            return Outcome.done(fields={"tdt_status": "reponse_acquittee",
                                        "reponse_ar_date": msg.date.isoformat() if msg.date else None},
                                files=[f], data=dict(ctx.data), message="La préfecture a acquitté la réponse")
        if st.status >= 3 and ctx.data.get("letter_type") == "courrier_simple":
            return Outcome.done(fields={"tdt_status": "reponse_transmise"}, data=dict(ctx.data),
                                message="Réponse au courrier simple transmise (pas d'accusé de réception)")
        return Outcome.waiting(self.check_in(ctx), data=dict(ctx.data))

    # ---- préfecture messages (a global job calls these; marking read happens only after persisting) --

    async def fetch_prefecture_letters(self, persist: Callable[[PrefectureLetter], Awaitable[None]]) -> int:
        """List unread préfecture messages, hand each to ``persist``, then mark it read.  Returns the count."""
        client = self.client()
        count = 0
        for row in await client.list_prefecture_documents():
            tid = str(row["id"])
            files = A.untar_gz(await client.get_prefecture_document(tid))
            letter = None
            for name, content in files.items():
                if name.endswith(".xml") and not name.startswith("EACT"):
                    msg = parse_message(content)
                    if msg.event in LETTER_LABELS:
                        letter = PrefectureLetter(tid, str(row.get("related_transaction_id") or "") or None,
                                                  msg.event, LETTER_LABELS[msg.event], msg.id_acte, msg.date,
                                                  msg.text, files)
            if letter is None:
                raise PermanentError(f"le document préfecture {tid} ne contient aucun courrier ACTES lisible")
            await persist(letter)
            await client.mark_prefecture_document_read(tid)
            count += 1
        return count

    async def reply(self, letter_transaction_id: str, type_envoie: int, document: A.ActeFile,
                    annexes: tuple[A.ActeFile, ...] = ()) -> str:
        """Answer a préfecture letter (2 réponse au courrier simple, 3 refus, 4 envoi/réponse)."""
        return await self.client().reply_prefecture(letter_transaction_id, type_envoie, document, annexes)


class TdtHeliosConnector(_S2lowBase):
    """PES V2 through S²LOW.  Step params: ``file_field`` (default ``pes``), ``acquit_field`` (``pes_acquit``)."""

    family = "tdt-helios"

    async def start(self, ctx: StepContext) -> Outcome:
        if ctx.data.get("transaction_id"):
            return await self.check(ctx)
        field_name = ctx.params.get("file_field", "pes")
        content = await ctx.file_bytes(field_name)
        try:
            index = check_pes_aller(content)
        except ValidationError as exc:
            raise PermanentError(exc.message, field=exc.field, hint=exc.hint) from exc
        key = f"helios:{hashlib.sha256(content).hexdigest()}"
        tid = await self.recorded(key)
        if tid is None:
            try:
                tid = await self.client().post_pes(content, ctx.file(field_name).filename)
            except S2lowKO as exc:
                if "oublon" in exc.message:
                    raise PermanentError(f"ce PES a déjà été déposé sur S²LOW ({exc.message})", field=field_name,
                                         hint="retrouvez la transaction existante sur S²LOW ; un PES ne se dépose "
                                              "qu'une fois") from exc
                raise
            await self.record(key, tid, ctx.document.id)
        fields = {"tdt_transaction_id": tid, "tdt_status": "transmis", "pes_nomfic": index.nom_fic,
                  "pes_id_coll": index.id_coll, "pes_dte_str": index.dte_str, "pes_id_post": index.id_post,
                  "pes_cod_col": index.cod_col, "pes_cod_bud": index.cod_bud, "pes_exercice": index.exercice,
                  "pes_nb_bordereaux": index.nb_bordereaux, "pes_nb_pj": index.nb_pj}
        return Outcome.waiting(self.check_in(ctx), data={"transaction_id": tid, "nom_fic": index.nom_fic},
                               fields=fields, message=f"PES {index.nom_fic} déposé sur le TdT (transaction {tid})")

    async def check(self, ctx: StepContext) -> Outcome:
        tid = ctx.data.get("transaction_id")
        if not tid:
            raise PermanentError("aucune transaction S²LOW connue pour cette étape : relancez l'étape")
        client = self.client()
        st = await client.get_pes_status(str(tid))
        if st.status in (1, 2, 3, 7, 13, 14):
            return Outcome.waiting(self.check_in(ctx), data=dict(ctx.data))
        if st.status in (4, 5, 8) or st.status in HELIOS_ARCHIVING:  # archived since: the acquit is still there
            raw = await client.get_pes_acquit(str(tid))
            acquit = parse_pes_acquit(raw)
            f = await ctx.new_file(ctx.params.get("acquit_field", "pes_acquit"),
                                   f"PES_Acquit_{acquit.nom_fic or tid}.xml", "application/xml", raw)
            fields = {"tdt_transaction_id": str(tid), "pes_acquit_ok": acquit.ok,
                      "pes_acquit_date": self.runtime.clock.now().date().isoformat(),
                      "pes_acquit_errors": acquit.errors, "tdt_status": "acquitte" if acquit.ok else "acquit_ko"}
            if st.status in HELIOS_ARCHIVING:
                fields["tdt_archive_status"] = st.label
            if acquit.ok:
                return Outcome.done(fields=fields, files=[f], data=dict(ctx.data),
                                    message=f"PES_Acquit reçu pour {acquit.nom_fic}")
            return Outcome.rejected("; ".join(acquit.errors) or "acquit négatif", fields=fields, files=[f],
                                    data=dict(ctx.data))
        if st.status in (-1, 6):
            reason = st.message or ("refusé par Hélios" if st.status == 6 else "erreur S²LOW")
            return Outcome.rejected(reason, fields={"tdt_status": "refuse" if st.status == 6 else "erreur",
                                                    "tdt_error": reason}, data=dict(ctx.data))
        if st.status == 0:
            return Outcome.rejected("transmission du PES annulée sur S²LOW", fields={"tdt_status": "annule"},
                                    data=dict(ctx.data))
        if st.status == 22:
            raise PermanentError(f"le PES {tid} a été détruit sur S²LOW (statut 22) : pas d'acquit à récupérer",
                                 hint="vérifiez le fichier sur S²LOW, puis passez l'étape ou renvoyez-le")
        if st.status == 24:
            return Outcome.done(fields={"tdt_status": "transmis_sans_acquit", "pes_acquit_ok": None},
                                data=dict(ctx.data), message="PES transmis, Hélios n'enverra pas d'acquit")
        raise PermanentError(f"statut S²LOW inattendu pour le PES {tid} : {st.status} ({st.label})")

    async def fetch_pes_retours(self, persist: Callable[[str, bytes, Any], Awaitable[None]]) -> int:
        """Unread PES_Retour files: ``persist(name, xml, parsed)`` each, then mark it read."""
        client = self.client()
        count = 0
        for row in await client.list_pes_retour():
            xml = await client.get_pes_retour(str(row["id"]))
            await persist(str(row.get("nom") or row["id"]), xml, parse_pes_retour(xml))
            await client.mark_pes_retour_read(str(row["id"]))
            count += 1
        return count
