"""Signature step family, kind ``local``: the built-in parapheur.

``start`` puts the document into a circuit (a folder with one task per step, the first one
active in its desk's inbox) and waits; ``check`` reads the folder: approved ⇒ the sealed
document and a bordereau of the decisions become files of the document; rejected ⇒
``Outcome.rejected(comment)``; otherwise wait again.

Instance settings: ``seal_p12_path`` or ``seal_p12_base64`` (the entity's seal, PKCS#12),
``seal_password`` (secret), optional ``tsa_url``, ``circuit`` (default circuit name), and to
mail outside signers their link: ``smtp_host``, ``smtp_port``, ``smtp_from``, ``smtp_username``,
``smtp_password`` (secret), ``smtp_starttls``, ``smtp_use_tls``.
Step params: ``circuit`` (a circuit name of the entity or a parent) or ``steps`` (an inline
circuit: ``[{kind: visa|signature|external, desk: <desk id>, label, name, email}]``),
``input`` (default ``document``), ``annexes``, ``output`` (default ``document_signe``),
``proof`` (default ``bordereau_signature``), ``signature`` (detached signatures, default
``signature``), ``check_every`` (seconds).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, ConnectorInstance, NewFile, Outcome, StepContext
from flowbus.errors import PermanentError
from flowbus.signature import parapheur
from flowbus.signature.textpdf import simple_pdf

if TYPE_CHECKING:
    from flowbus.app import Runtime

DEFAULT_CHECK = timedelta(minutes=5)
DECISION_LABELS = {"visa": "Visa", "signature": "Signature", "reject": "Refus"}


class LocalParapheurConnector(BaseConnector):
    family = "signature"
    kind = "local"
    secret_keys = frozenset({"seal_password", "seal_p12_base64", "smtp_password"})

    def __init__(self, instance: ConnectorInstance, runtime: Runtime) -> None:
        super().__init__(instance, runtime)

    def _check_in(self, ctx: StepContext) -> timedelta:
        if ctx.params.get("check_every"):
            return timedelta(seconds=float(ctx.params["check_every"]))
        try:
            wait = ctx.runtime.flow_of(ctx.document).step(ctx.step_id).wait
        except Exception:  # noqa: BLE001 - a step without a flow model (ad-hoc runs)
            wait = None
        return getattr(wait, "check_every", None) or DEFAULT_CHECK

    async def _circuit(self, tx: Any, ctx: StepContext) -> parapheur.Circuit:
        if ctx.params.get("steps"):
            steps = parapheur.parse_steps(list(ctx.params["steps"]), where="steps")
            for step in steps:
                if step.desk_id:
                    await parapheur.get_desk(tx, step.desk_id)
            return parapheur.Circuit("inline", ctx.document.entity_id, f"{ctx.flow_id}/{ctx.step_id}", steps)
        name = ctx.params.get("circuit") or self.instance.settings.get("circuit")
        if not name:
            raise PermanentError(f"step {ctx.step_id!r} names no parapheur circuit", field="circuit",
                                 hint="set params.circuit (a circuit name) or params.steps (an inline circuit)")
        return await parapheur.get_circuit(tx, ctx.document.entity_id, str(name))

    async def start(self, ctx: StepContext) -> Outcome:
        doc = ctx.document
        input_field = str(ctx.params.get("input", "document"))
        main = ctx.file(input_field)
        annexes = [{"filename": f.filename, "media_type": f.media_type, "blob": f.blob_key}
                   for f in (ctx.files(str(ctx.params["annexes"])) if ctx.params.get("annexes") else [])]
        title = next((str(doc.fields[k]) for k in ("title", "titre", "objet", "subject")
                      if isinstance(doc.fields.get(k), str) and doc.fields[k].strip()), doc.id)
        async with ctx.runtime.store.transaction() as tx:
            folder = await parapheur.find_folder(tx, idem_key=ctx.idempotency_key, document_id=doc.id,
                                                 step_id=ctx.step_id)
            if folder is None:
                circuit = await self._circuit(tx, ctx)
                blob = _Blob(main.blob_key, main.size, main.sha256)
                folder = await parapheur.create_folder(
                    tx, entity_id=doc.entity_id, document_id=doc.id, step_id=ctx.step_id,
                    instance_id=self.instance.id, idem_key=ctx.idempotency_key, title=title[:200], circuit=circuit,
                    filename=main.filename, media_type=main.media_type, blob=blob, annexes=annexes,
                    now=ctx.runtime.clock.now())
                first = circuit.steps[0]
                from flowbus import notifications  # the first desk's members are told by e-mail
                told = await notifications.folder_arrived(ctx.runtime, tx, folder=folder, desk_id=first.desk_id,
                                                          kind=first.kind)
                ctx.log.info("parapheur.folder_created", folder=folder.id, circuit=circuit.name, signers_told=told)
        return Outcome.waiting(self._check_in(ctx), data={"folder_id": folder.id},
                               message=f"Dossier déposé dans le parapheur (circuit « {folder.circuit} »)")

    async def check(self, ctx: StepContext) -> Outcome:
        folder_id = ctx.data.get("folder_id")
        if not folder_id:
            raise PermanentError("no parapheur folder recorded for this step", field="folder_id",
                                 hint="restart the step")
        async with ctx.runtime.store.transaction() as tx:
            folder = await parapheur.get_folder(tx, folder_id)
            decisions = await parapheur.decisions_of(tx, folder_id)
        if folder.status == "pending":
            return Outcome.waiting(self._check_in(ctx), data=dict(ctx.data))
        if folder.status == "rejected":
            last = decisions[-1] if decisions else None
            comment = folder.comment or "Refusé dans le parapheur"
            return Outcome.rejected(comment, data=dict(ctx.data), fields={
                "signature_refus": comment, "signature_refus_par": last.actor_name if last else None,
                "signature_refus_date": isoformat(last.at) if last else None})
        files: list[NewFile] = []
        content = await ctx.blobs.read(folder.current_blob)
        files.append(await ctx.new_file(str(ctx.params.get("output", "document_signe")), folder.filename,
                                        folder.media_type, content))
        for i, sig in enumerate(folder.detached):
            files.append(await ctx.new_file(str(ctx.params.get("signature", "signature")),
                                            f"{folder.filename}.{i + 1}.p7s" if i else f"{folder.filename}.p7s",
                                            "application/pkcs7-signature", await ctx.blobs.read(sig["blob"]),
                                            append=i > 0))
        files.append(await ctx.new_file(str(ctx.params.get("proof", "bordereau_signature")),
                                        "bordereau_signature.pdf", "application/pdf", bordereau(folder, decisions)))
        signatures = [d for d in decisions if d.decision == "signature"]
        last = signatures[-1] if signatures else (decisions[-1] if decisions else None)
        return Outcome.done(
            data=dict(ctx.data), files=files,
            fields={"signature_date": isoformat(last.at) if last else None,
                    "signataire": last.actor_name if last else None},
            message=f"Approuvé dans le parapheur{f' par {last.actor_name}' if last else ''}")


class _Blob:
    def __init__(self, key: str, size: int, sha256: str) -> None:
        self.key, self.size, self.sha256 = key, size, sha256


def bordereau(folder: parapheur.Folder, decisions: list[parapheur.Decision]) -> bytes:
    """The signature slip: the folder, then one line per decision (what, who, for which desk, when)."""
    lines = [f"Bordereau de signature - {folder.title}", f"Circuit : {folder.circuit}",
             f"Document : {folder.filename} (SHA-256 {folder.current_sha256[:16]}...)", ""]
    for d in decisions:
        when = d.at.strftime("%d/%m/%Y %H:%M:%S UTC")
        behalf = f" pour le bureau {d.on_behalf_of} (délégation)" if d.on_behalf_of else ""
        lines.append(f"{DECISION_LABELS.get(d.decision, d.decision)} - {d.actor_name}{behalf} - {when}")
        if d.comment:
            lines.append(f"    Commentaire : {d.comment}")
    return simple_pdf(lines, title=f"Bordereau de signature - {folder.title}")
