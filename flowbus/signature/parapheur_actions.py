"""Built-in parapheur, the actions: approve or reject a task; the server seals on a signature step.

``decide`` is what the signer inbox calls.  It checks who may act (a member of the task's
desk, a member of a desk it delegates to for now, or the holder of the external link), seals
the current version of the document with the entity's seal (PAdES for a PDF, XAdES per
bordereau for a PES, detached CAdES otherwise), then records the decision, moves the folder
on and journals it (who, on behalf of which desk, when) in one transaction.  The engine
learns the outcome when the ``local`` connector's ``check`` reads the folder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from flowbus import journal
from flowbus.blobs.base import put_bytes
from flowbus.clock import isoformat
from flowbus.errors import ConfigError, Conflict, Forbidden, PermanentError, ValidationError
from flowbus.outbound import STRICT, OutboundPolicy
from flowbus.signature import parapheur
from flowbus.signature.keys import SigningKey, load_pkcs12

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who decides: a signer through the inbox, or an outside signer through their link."""

    id: str  # "signataire:<login>" or "externe:<task id>"
    name: str
    signer: parapheur.Signer | None = None
    link_token: str | None = None


@dataclass(frozen=True)
class DecisionResult:
    folder: parapheur.Folder
    decision: str
    next_task: parapheur.Task | None
    external_link_token: str | None  # set when the next step is an outside signer: hand the link over
    link_mailed: bool = False  # the link was also mailed to the outside signer (instance has smtp_host)
    signed_with: str | None = None  # « certificat personnel « CN=… » » or « cachet de la collectivité »


def seal_key(settings: dict[str, Any] | Any, now: Any = None) -> SigningKey:
    """The entity's seal from the connector instance: ``seal_p12_path`` or ``seal_p12_base64`` + ``seal_password``.

    Raises:
        ConfigError: no seal configured (names the setting).
        PermanentError: unreadable PKCS#12, wrong password, expired certificate.
    """
    password = settings.get("seal_password")
    if settings.get("seal_p12_base64"):
        data = base64.b64decode(settings["seal_p12_base64"])
    elif settings.get("seal_p12_path"):
        path = Path(str(settings["seal_p12_path"]))
        if not path.is_file():
            raise ConfigError(f"the seal file {path} does not exist", field="seal_p12_path")
        data = path.read_bytes()
    else:
        raise ConfigError("the built-in parapheur has no seal to sign with", field="seal_p12_path",
                          hint="set seal_p12_path (or seal_p12_base64) and seal_password on the connector instance")
    return load_pkcs12(data, password, now=now)


def seal_document(data: bytes, filename: str, media_type: str, key: SigningKey, *, reason: str,
                  tsa_url: str | None = None, outbound: OutboundPolicy = STRICT) -> tuple[bytes, bytes | None]:
    """(new version of the document, detached signature or None).  CPU-bound: run it in a thread."""
    if media_type == "application/pdf" or data.startswith(b"%PDF-"):
        from flowbus.signature.pades import sign_pdf
        return sign_pdf(data, key, reason=reason, tsa_url=tsa_url, outbound=outbound), None
    if data.lstrip().startswith(b"<") and b"PES_Aller" in data[:2000]:
        from flowbus.signature.xades import sign_pes
        return sign_pes(data, key), None
    from flowbus.signature.cades import sign_cades
    return data, sign_cades(data, key, tsa_url=tsa_url, outbound=outbound)


async def _settings_of(rt: Any, folder: parapheur.Folder) -> dict[str, Any]:
    async with rt.store.transaction() as tx:
        instance = await rt.instances.resolve(tx, folder.instance_id, folder.entity_id)
    return dict(instance.settings)


async def signing_means(rt: Any, signer: parapheur.Signer | None) -> parapheur.SignerKey | None:
    """The signer's own certificate if they gave one (signatures then need its code), else None (the seal)."""
    if signer is None:
        return None
    async with rt.store.transaction() as tx:
        return await parapheur.signer_key(tx, signer.id, rt.secrets)


def open_personal_key(personal: parapheur.SignerKey, code: str | None, now: Any) -> SigningKey:
    """The signer's key, unlocked by the code they typed.

    Raises:
        ValidationError: no code, a wrong code, or a certificate that cannot sign now (field ``code``).
    """
    if not code:
        raise ValidationError("Saisissez le code de votre certificat pour signer.", field="code")
    try:
        return load_pkcs12(personal.p12, code, now=now)
    except PermanentError as exc:
        if exc.field == "pkcs12_password":
            raise ValidationError("Code du certificat incorrect.", field="code") from None
        raise ValidationError(f"Votre certificat ne peut pas signer : {exc.message}", field="code") from None


async def decide(rt: Any, task_id: str, decision: str, actor: Actor, *, comment: str | None = None,
                 code: str | None = None) -> DecisionResult:
    """Approve (``approve``) or reject (``reject``, comment required) the active task ``task_id``.

    Raises:
        ValidationError: reject without a comment, unknown decision.
        Forbidden: the actor may not act on this task.
        Conflict: the task is no longer active (someone else decided first).
    """
    if decision not in ("approve", "reject"):
        raise ValidationError(f"unknown decision {decision!r}", field="decision")
    comment = (comment or "").strip() or None
    if decision == "reject" and not comment:
        raise ValidationError("un refus doit être motivé : saisissez un commentaire", field="comment")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        task, folder, on_behalf = await _check_actor(tx, task_id, actor, now)
    if task.status == "waiting":
        raise Conflict("ce dossier n'est pas encore arrivé à cette étape du circuit", field="task")
    if task.status != "active" or folder.status != "pending":
        raise Conflict("ce dossier a déjà été traité", field="task")

    new_blob, detached, signed_with = None, None, None
    if decision == "approve" and task.kind in ("signature", "external"):
        settings = await _settings_of(rt, folder)
        personal = await signing_means(rt, actor.signer) if task.kind == "signature" else None
        if personal is not None:
            key = open_personal_key(personal, code, now)
            signed_with = f"certificat personnel « {personal.subject} »"
        else:
            key = seal_key(settings, now)
            signed_with = "cachet de la collectivité"
        current = await rt.blobs.read(folder.current_blob)
        reason = f"Approuvé par {actor.name}" + (" (signataire extérieur)" if task.kind == "external" else "")
        signed, sig = await asyncio.to_thread(seal_document, current, folder.filename, folder.media_type, key,
                                              reason=reason, tsa_url=settings.get("tsa_url"), outbound=rt.outbound)
        new_blob = await put_bytes(rt.blobs, signed)
        if sig is not None:
            detached = await put_bytes(rt.blobs, sig)

    kind = {"visa": "visa", "signature": "signature", "external": "signature"}[task.kind] \
        if decision == "approve" else "reject"
    async with rt.store.transaction() as tx:
        at = isoformat(now)
        changed = await tx.execute("UPDATE parapheur_tasks SET status = $2, decided_by = $3, decided_at = $4, "
                                   "comment = $5, link_hash = NULL WHERE id = $1 AND status = 'active'", task.id,
                                   "approved" if decision == "approve" else "rejected", actor.id, at, comment)
        if changed != 1:
            raise Conflict("ce dossier a déjà été traité", field="task")
        await tx.execute("INSERT INTO parapheur_decisions (id, folder_id, task_id, entity_id, document_id, decision, "
                         "actor, actor_name, desk_id, on_behalf_of, at, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                         "$8, $9, $10, $11, $12)", uuid.uuid4().hex, folder.id, task.id, folder.entity_id,
                         folder.document_id, kind, actor.id, actor.name, task.desk_id, on_behalf, at, comment)
        if new_blob is not None:
            detached_list = folder.detached + ([{"blob": detached.key, "size": detached.size,
                                                 "sha256": detached.sha256, "signer": actor.name}]
                                               if detached is not None else [])
            await tx.execute("UPDATE parapheur_folders SET current_blob = $2, current_size = $3, current_sha256 = $4, "
                             "detached = $5, updated_at = $6 WHERE id = $1", folder.id, new_blob.key, new_blob.size,
                             new_blob.sha256, json.dumps(detached_list), at)
        next_task, link = None, None
        if decision == "reject":
            await tx.execute("UPDATE parapheur_folders SET status = 'rejected', comment = $2, updated_at = $3 "
                             "WHERE id = $1", folder.id, comment, at)
            await tx.execute("UPDATE parapheur_tasks SET status = 'cancelled' WHERE folder_id = $1 "
                             "AND status = 'waiting'", folder.id)
        else:
            tasks = await parapheur.tasks_of(tx, folder.id)
            following = [t for t in tasks if t.position > task.position]
            if following:
                next_task = following[0]
                await tx.execute("UPDATE parapheur_tasks SET status = 'active', activated_at = $2 WHERE id = $1",
                                 next_task.id, at)
                await tx.execute("UPDATE parapheur_folders SET position = $2, updated_at = $3 WHERE id = $1",
                                 folder.id, next_task.position, at)
                from flowbus import notifications  # the next desk's members are told by e-mail
                await notifications.folder_arrived(rt, tx, folder=folder, desk_id=next_task.desk_id,
                                                   kind=next_task.kind)
                if next_task.kind == "external":
                    link = await parapheur.new_link(tx, next_task.id)
            else:
                await tx.execute("UPDATE parapheur_folders SET status = 'approved', updated_at = $2 WHERE id = $1",
                                 folder.id, at)
        await journal.append(tx, entity_id=folder.entity_id, actor=actor.id, kind="signature.decision", at=now,
                             document_id=folder.document_id,
                             data={"decision": kind, "step": task.label, "desk": task.desk_id,
                                   "on_behalf_of": on_behalf, "signer": actor.name, "comment": comment,
                                   "folder": folder.id, "sealed_sha256": new_blob.sha256 if new_blob else None,
                                   "signed_with": signed_with})
        updated = await parapheur.get_folder(tx, folder.id)
    log.info("parapheur.decision", folder=folder.id, document_id=folder.document_id, decision=kind,
             actor=actor.id, on_behalf_of=on_behalf)
    mailed = False
    if link is not None and next_task is not None:
        mailed = await send_link(rt, updated, next_task, link, await _settings_of(rt, folder))
    return DecisionResult(updated, kind, next_task, link, mailed, signed_with)


def external_url(rt: Any, token: str) -> str:
    return f"{rt.settings.base_url}/parapheur/externe/{token}"


async def send_link(rt: Any, folder: parapheur.Folder, task: parapheur.Task, token: str,
                    settings: dict[str, Any]) -> bool:
    """Mail the personal link to the outside signer when the instance names an SMTP server (``smtp_host``).

    Returns True when the server accepted the message.  A failure is logged, not raised: the
    link is also shown to the person who approved the step before, who can hand it over.
    """
    if not settings.get("smtp_host") or not task.external_email:
        return False
    from flowbus.connectors.mailsec.send import OutgoingMail, SmtpConfig, SmtpPool
    from flowbus.errors import FlowbusError
    config = SmtpConfig.from_settings({
        "host": settings["smtp_host"], "port": settings.get("smtp_port"), "username": settings.get("smtp_username"),
        "password": settings.get("smtp_password"), "starttls": settings.get("smtp_starttls"),
        "use_tls": settings.get("smtp_use_tls"), "validate_certs": settings.get("smtp_validate_certs"),
        "from_address": settings.get("smtp_from") or "ne-pas-repondre@localhost",
        "from_name": settings.get("smtp_from_name") or "Parapheur"})
    text = (f"Bonjour {task.external_name or ''},\n\n"
            f"Le document « {folder.title} » attend votre signature.\n"
            f"Pour le lire puis le signer ou le refuser, ouvrez ce lien personnel :\n\n{external_url(rt, token)}\n\n"
            "Ce lien ne sert qu'une fois ; ne le transmettez pas.\n")
    pool = SmtpPool(config, outbound=rt.outbound)
    try:
        delivery = await pool.send(OutgoingMail(task.external_email, f"Document à signer : {folder.title}", text))
    except FlowbusError as exc:
        log.warning("parapheur.link_not_mailed", task=task.id, error=str(exc))
        return False
    finally:
        await pool.close()
    if not delivery.ok:
        log.warning("parapheur.link_refused", task=task.id, code=delivery.code)
    return delivery.ok


async def _check_actor(tx: Any, task_id: str, actor: Actor, now: Any) -> tuple[parapheur.Task, parapheur.Folder,
                                                                               str | None]:
    if actor.link_token is not None:
        task, folder = await parapheur.task_for_link(tx, actor.link_token)
        if task.id != task_id or task.kind != "external":
            raise Forbidden("ce lien ne donne pas accès à ce dossier", field="token")
        return task, folder, None
    if actor.signer is None:
        raise Forbidden("signataire inconnu", field="signer")
    item = await parapheur.task_for_signer(tx, task_id, actor.signer, now)
    return item.task, item.folder, (item.desk.id if item.delegated else None)


async def regenerate_link(rt: Any, task_id: str, signer: parapheur.Signer) -> str:
    """A new link for the active external task, asked by a member of the desk of the step before it."""
    async with rt.store.transaction() as tx:
        task = await parapheur.get_task(tx, task_id)
        if task.kind != "external" or task.status != "active":
            raise Conflict("aucune signature extérieure n'est en attente sur cette tâche", field="task")
        tasks = await parapheur.tasks_of(tx, task.folder_id)
        before = [t for t in tasks if t.position < task.position and t.desk_id]
        desks = await parapheur.desks_of(tx, signer, rt.clock.now())
        if not before or before[-1].desk_id not in desks:
            raise Forbidden("seul le bureau de l'étape précédente peut transmettre ce lien", field="task")
        token = await parapheur.new_link(tx, task.id)
        folder = await parapheur.get_folder(tx, task.folder_id)
        await journal.append(tx, entity_id=folder.entity_id, actor=f"signataire:{signer.login}",
                             kind="signature.link", at=rt.clock.now(), document_id=folder.document_id,
                             data={"task": task.id, "external": task.external_name})
    await send_link(rt, folder, task, token, await _settings_of(rt, folder))
    return token

