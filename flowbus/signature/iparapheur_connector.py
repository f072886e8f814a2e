"""Signature step family, kind ``iparapheur``: a document goes through an i-Parapheur 5 circuit.

``start`` creates the folder (type/subtype, main document, annexes, metadata) and starts its
workflow, then waits; ``check`` reads the folder's PREMIS: finished ⇒ the signed document, the
detached signatures and the bordereau become files of the document; rejected ⇒
``Outcome.rejected(comment)``; otherwise wait again.

Instance settings: ``url``, ``username``, ``password`` (secret), ``tenant_id``, ``desk_id``,
``type``, ``subtype``, optional ``verify_tls`` (default true), ``timeout`` (s).
Step params: ``input`` (file field to sign, default ``document``), ``annexes`` (files field),
``output`` (default ``document_signe``), ``proof`` (bordereau, default ``bordereau_signature``),
``signature`` (detached signatures, default ``signature``), ``premis`` (optional field for the
PREMIS summary), ``type``/``subtype`` (override the instance), ``metadata`` (parapheur key →
document field), ``name`` (folder name template, ``{title}`` and ``{document_id}``),
``annotation`` (public annotation), ``check_every`` (seconds).

Idempotency: the folder name carries the document id and the step; before creating, the
desk's folders in progress (draft, retrievable, pending, late) are searched by that name, so a
redelivered or retried start never creates a second folder (a draft found there is started
instead), while a step entered again after a refusal sends a new folder.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, ConnectorInstance, NewFile, Outcome, StepContext
from flowbus.errors import ConfigError, PermanentError
from flowbus.signature.iparapheur import IParapheurClient, UploadFile
from flowbus.signature.premis import FolderSummary, parse_premis

if TYPE_CHECKING:
    from flowbus.app import Runtime

REQUIRED = ("url", "username", "password", "tenant_id", "desk_id")
DEFAULT_CHECK = timedelta(minutes=5)
# a folder of the same name in these lists is this step's own (a redelivered or retried start);
# a finished or rejected one belongs to an earlier round of the step (e.g. sent again after a refusal)
IN_PROGRESS = ("DRAFT", "RETRIEVABLE", "PENDING", "LATE")


def _iso(premis_date: str | None) -> str | None:
    """``2025-08-05T10:02:52.618+0200`` → flowbus's UTC ISO-8601."""
    if not premis_date:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return isoformat(datetime.strptime(premis_date, fmt))
        except ValueError:
            continue
    try:
        return isoformat(datetime.fromisoformat(premis_date))
    except ValueError:
        return premis_date


def _title(ctx: StepContext) -> str:
    fields = ctx.document.fields
    for key in ("title", "titre", "objet", "subject", "name"):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())[:150]
    return ctx.document.id


class IParapheurConnector(BaseConnector):
    family = "signature"
    kind = "iparapheur"
    secret_keys = frozenset({"password"})

    def __init__(self, instance: ConnectorInstance, runtime: Runtime) -> None:
        super().__init__(instance, runtime)
        settings = instance.settings
        for key in REQUIRED:
            if not settings.get(key):
                raise ConfigError(f"connector {instance.id!r} (i-Parapheur): setting {key!r} is missing", field=key)
        self._client: IParapheurClient | None = None

    def client(self) -> IParapheurClient:
        if self._client is None:
            s = self.instance.settings
            if self.runtime.http is None:
                raise PermanentError("the runtime has no HTTP session (runtime.http)")
            self._client = IParapheurClient(
                str(s["url"]), str(s["username"]), str(s["password"]), tenant_id=str(s["tenant_id"]),
                desk_id=str(s["desk_id"]), session=self.runtime.http,
                verify_tls=str(s.get("verify_tls", True)).lower() not in ("false", "0", "no"),
                timeout=float(s.get("timeout", 60)))
        return self._client

    # ---- helpers --------------------------------------------------------------------------

    def folder_name(self, ctx: StepContext) -> str:
        template = ctx.params.get("name")
        if template:
            return str(template).format(title=_title(ctx), document_id=ctx.document.id, step=ctx.step_id)
        return f"{_title(ctx)} ({ctx.document.id}:{ctx.step_id})"

    def _typology(self, ctx: StepContext, key: str) -> str:
        value = ctx.params.get(key) or self.instance.settings.get(key)
        if not value:
            raise PermanentError(f"no i-Parapheur {key} for step {ctx.step_id!r}", field=key,
                                 hint=f"set {key!r} in the connector instance or in the step params")
        return str(value)

    def _check_in(self, ctx: StepContext) -> timedelta:
        if ctx.params.get("check_every"):
            return timedelta(seconds=float(ctx.params["check_every"]))
        try:
            wait = ctx.runtime.flow_of(ctx.document).step(ctx.step_id).wait
        except Exception:  # noqa: BLE001 - a step without a flow model (tests, ad-hoc runs)
            wait = None
        return getattr(wait, "check_every", None) or DEFAULT_CHECK

    async def _uploads(self, ctx: StepContext) -> list[UploadFile]:
        input_field = str(ctx.params.get("input", "document"))
        main = ctx.file(input_field)
        files = [UploadFile(main.filename, await ctx.file_bytes(input_field), main.media_type, True)]
        annex_field = ctx.params.get("annexes")
        if annex_field:
            names = {main.filename}
            for i, ref in enumerate(ctx.files(str(annex_field))):
                name = ref.filename
                if name in names:  # the PREMIS links parts by name: keep them distinct
                    stem, ext = posixpath.splitext(name)
                    name = f"{stem}_{i + 1}{ext}"
                names.add(name)
                files.append(UploadFile(name, await ctx.file_bytes(str(annex_field), i), ref.media_type, False))
        return files

    def _metadata(self, ctx: StepContext) -> dict[str, str]:
        mapping = ctx.params.get("metadata") or {}
        out = {}
        for key, field_name in mapping.items():
            value = ctx.document.fields.get(field_name)
            if value is not None:
                out[str(key)] = str(value)
        return out

    # ---- the contract ---------------------------------------------------------------------

    async def start(self, ctx: StepContext) -> Outcome:
        client = self.client()
        name = self.folder_name(ctx)
        existing = await client.find_folder(name, IN_PROGRESS)
        if existing is not None:
            folder_id = existing["id"]
            if existing["state"] == "DRAFT":
                await client.start_folder(folder_id, public_annotation=ctx.params.get("annotation"))
            ctx.log.info("iparapheur.folder_found", folder_id=folder_id, state=existing["state"])
        else:
            type_, subtype = self._typology(ctx, "type"), self._typology(ctx, "subtype")
            uploads = await self._uploads(ctx)
            try:
                created = await client.create_folder(name, type_, subtype, uploads, metadata=self._metadata(ctx),
                                                     due_date=ctx.params.get("due_date"))
            except PermanentError as exc:
                raise PermanentError(f"i-Parapheur refused folder {name!r} (type {type_!r}, subtype {subtype!r}): "
                                     f"{exc.message}", field="subtype",
                                     hint="check the type and subtype against the parapheur's typology") from exc
            folder_id = created["id"]
            ctx.log.info("iparapheur.folder_created", folder_id=folder_id, files=len(uploads))
            await client.start_folder(folder_id, public_annotation=ctx.params.get("annotation"))
        return Outcome.waiting(self._check_in(ctx), data={"folder_id": folder_id, "folder_name": name},
                               message="Dossier déposé dans i-Parapheur, en attente de signature")

    async def check(self, ctx: StepContext) -> Outcome:
        folder_id = ctx.data.get("folder_id")
        if not folder_id:
            raise PermanentError("no i-Parapheur folder id recorded for this step", field="folder_id",
                                 hint="restart the step to create the folder again")
        client = self.client()
        summary = await client.premis(folder_id)
        state = summary.state
        if state == "draft":  # created by a start that failed before starting it
            await client.start_folder(folder_id, public_annotation=ctx.params.get("annotation"))
            return Outcome.waiting(self._check_in(ctx), data=dict(ctx.data))
        if state == "rejected":
            event = summary.rejection
            comment = (event.note if event else None) or "Dossier refusé dans i-Parapheur (sans motif)"
            who = summary.agents.get(event.user_id or "", event.user_id) if event else None
            return Outcome.rejected(comment, fields={"signature_refus": comment, "signature_refus_par": who,
                                                     "signature_refus_date": _iso(event.date if event else None)},
                                    data=dict(ctx.data))
        if state != "finished":
            return Outcome.waiting(self._check_in(ctx), data=dict(ctx.data))
        return await self._finished(ctx, folder_id, summary)

    async def _finished(self, ctx: StepContext, folder_id: str, summary: FolderSummary) -> Outcome:
        archive = zipfile.ZipFile(io.BytesIO(await self.client().zip(folder_id)))
        names = archive.namelist()
        premis_bytes = archive.read("i_Parapheur_internal_premis.xml") if "i_Parapheur_internal_premis.xml" in names \
            else None
        if premis_bytes is not None:
            summary = parse_premis(premis_bytes)
        main = summary.main_files
        if not main:
            raise PermanentError(f"i-Parapheur folder {folder_id} has no main document in its PREMIS")
        known = {f.name for f in summary.files}
        output = str(ctx.params.get("output", "document_signe"))
        files: list[NewFile] = []
        for f in main:
            path = f"Documents principaux/{f.name}"
            if path not in names:
                raise PermanentError(f"the ZIP of i-Parapheur folder {folder_id} lacks {path!r}")
            files.append(await ctx.new_file(output, f.name, f.media_type or "application/octet-stream",
                                            archive.read(path), append=len(files) > 0))
        detached = [n for n in names if n.startswith("Documents principaux/") and not n.endswith("/")
                    and n[len("Documents principaux/"):] not in known]
        sig_field = str(ctx.params.get("signature", "signature"))
        for i, path in enumerate(detached):
            files.append(await ctx.new_file(sig_field, posixpath.basename(path), _media_type(path),
                                            archive.read(path), append=i > 0))
        bordereaux = [n for n in names if "/" not in n and n.endswith("_bordereau.pdf")]
        if bordereaux:
            files.append(await ctx.new_file(str(ctx.params.get("proof", "bordereau_signature")),
                                            posixpath.basename(bordereaux[0]), "application/pdf",
                                            archive.read(bordereaux[0])))
        if ctx.params.get("premis") and premis_bytes is not None:
            files.append(await ctx.new_file(str(ctx.params["premis"]), "i_Parapheur_internal_premis.xml",
                                            "application/xml", premis_bytes))
        event = summary.last_signature
        signer = summary.agents.get(event.user_id or "", event.user_id) if event else None
        fields: dict[str, Any] = {"signature_date": _iso(event.date if event else None), "signataire": signer,
                                  "iparapheur_dossier": folder_id}
        return Outcome.done(fields=fields, files=files, data=dict(ctx.data),
                            message=f"Signé dans i-Parapheur{f' par {signer}' if signer else ''}")


def _media_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".p7s"):
        return "application/pkcs7-signature"
    if lower.endswith(".xml"):
        return "application/xml"
    if lower.endswith(".pdf"):
        return "application/pdf"
    return "application/octet-stream"
