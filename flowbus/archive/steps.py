"""Step family ``sae``: archive a finished document, wait for the archive's acceptance, optionally purge.

Kinds:

* ``store`` (``SaeStoreConnector``): the built-in archive store.  The sealed package is kept
  (BlobStore or S3 bucket) and indexed; acceptance is immediate.
* ``asalae`` (``SaeAsalaeConnector``): As@lae over REST.  The transfer is sent, then the step
  waits (delayed bus messages, ``check_every``) for the Acknowledgement and the
  ArchiveTransferReply; both are kept with the document (fields ``sae_ack``, ``sae_reply``).
  Reply code ``000`` is done, any other code is ``rejected`` with the code and comment.

Connector settings (every kind)::

    seal_p12_path: /etc/flowbus/seal.p12    # or seal_p12_base64 (secret); seal_p12_password (secret)
    tsa_url: https://tsa.example/           # or tsa_p12_path/tsa_p12_base64 + tsa_p12_password:
                                            # the internal timestamp signer; without either the
                                            # seal key signs the timestamp tokens itself
    package_format: zip                     # or tar
    purge: false                            # after acceptance, delete the document's file bytes
    archival_agency, archival_agreement, archival_profile, transferring_agency, originating_agency
                                            # override the profile's per-entity defaults
    # store: storage (blobs|s3), bucket, retention_days, retention_mode (GOVERNANCE|COMPLIANCE)
    # asalae: url, login, password (secret), check_every (seconds, default 900)

Step params: ``profile`` (archiving profile name, default the flow id), ``seda_version``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from flowbus.archive import seda
from flowbus.archive.package import PackageResult, SourceFile, blob_source, build_package
from flowbus.archive.profile import AGENCY_KEYS, Profile, load_profile, placeholders, render
from flowbus.archive.verify import verify_report
from flowbus.archive.seal import HttpTimestamper, InternalTimestamper, Sealer, Timestamper, key_for_settings
from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, Outcome, StepContext
from flowbus.errors import PermanentError
from flowbus.signature.keys import SigningKey


class _SaeConnector(BaseConnector):
    family: ClassVar[str] = "sae"
    secret_keys: ClassVar[frozenset[str]] = frozenset(
        {"seal_p12_password", "seal_p12_base64", "tsa_p12_password", "tsa_p12_base64", "password"})

    # ---- keys --------------------------------------------------------------------------------

    def _p12(self, prefix: str, *, required: bool) -> bytes | None:
        settings = self.instance.settings
        if settings.get(f"{prefix}_p12_base64"):
            try:
                return base64.b64decode(settings[f"{prefix}_p12_base64"])
            except (binascii.Error, ValueError):
                raise PermanentError(f"{prefix}_p12_base64 is not valid base64", field=f"{prefix}_p12_base64") \
                    from None
        path = settings.get(f"{prefix}_p12_path")
        if not path:
            if required:
                raise PermanentError(f"the sae connector needs {prefix}_p12_path or {prefix}_p12_base64",
                                     field=f"{prefix}_p12_path",
                                     hint="configure the platform's seal certificate (PKCS#12)")
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise PermanentError(f"cannot read {path}: {exc.strerror}", field=f"{prefix}_p12_path") from None

    def sealer(self) -> Sealer:
        now = self.runtime.clock.now()
        settings = self.instance.settings
        seal_key = key_for_settings(self._p12("seal", required=True), settings.get("seal_p12_password"),
                                    prefix="seal", now=now)
        stamper: Timestamper
        if settings.get("tsa_url"):
            stamper = HttpTimestamper(settings["tsa_url"], outbound=self.runtime.outbound)
        else:
            tsa_data = self._p12("tsa", required=False)
            tsa_key: SigningKey = seal_key if tsa_data is None else key_for_settings(
                tsa_data, settings.get("tsa_p12_password"), prefix="tsa", now=now)
            stamper = InternalTimestamper(tsa_key, clock=self.runtime.clock)
        return Sealer(seal_key, stamper, clock=self.runtime.clock)

    # ---- the package ---------------------------------------------------------------------------

    async def _entity(self, entity_id: str) -> dict[str, Any]:
        from flowbus.store.repo import find_entity
        async with self.runtime.store.transaction() as tx:
            entity = await find_entity(tx, entity_id)
        if entity is None:
            return {"id": entity_id, "name": entity_id, "siren": None}
        return {"id": entity.id, "name": entity.name, "siren": entity.siren}

    def profile(self, ctx: StepContext) -> Profile:
        return load_profile(self.runtime.settings.config_dir, ctx.params.get("profile"), ctx.flow_id)

    def transfer_id(self, ctx: StepContext) -> str:
        return f"FLOWBUS-{ctx.document.id}-{ctx.attempt}"

    async def build(self, ctx: StepContext, directory: Path) -> tuple[PackageResult, seda.Transfer]:
        """Build the sealed package of the document in ``directory``."""
        profile = self.profile(ctx)
        doc = ctx.document
        entity = await self._entity(doc.entity_id)
        now = self.runtime.clock.now()
        context = {"fields": doc.fields, "entity": entity, "now": now,
                   "document": {"id": doc.id, "created_at": doc.created_at, "updated_at": doc.updated_at,
                                "flow": doc.flow_id}}
        agencies = profile.agencies(doc.entity_id, entity.get("siren"), self.instance.settings)
        missing = [k for k in ("archival_agency", "transferring_agency") if not agencies.get(k)]
        if missing:
            raise PermanentError(f"no {' nor '.join(missing)} for entity {doc.entity_id!r}", field=missing[0],
                                 hint="set it in the archiving profile (defaults/entities) or the sae connector")
        examples = placeholders({k: v for k, v in agencies.items() if k in AGENCY_KEYS})
        if examples:
            raise PermanentError(
                f"Versement refusé : {', '.join(f'{k} vaut encore l’exemple « {agencies[k]} »' for k in examples)} dans "
                f"le profil d'archivage « {profile.name} ». Renseignez l'identifiant donné par le service d'archives "
                "dans le connecteur SAE de la collectivité (ou le profil).", field=examples[0],
                hint="console « Connecteurs » → SAE, or config/archive/<profile>.yml (defaults / entities)")
        rules = seda.Rules(
            appraisal_rule=agencies.get("appraisal_rule") or (profile.appraisal.rule if profile.appraisal else None),
            appraisal_start=render(profile.appraisal.start_date, context) or None if profile.appraisal else None,
            appraisal_final_action=agencies.get("appraisal_final_action")
            or (profile.appraisal.final_action if profile.appraisal and profile.appraisal.final_action else "Keep"),
            access_rule=agencies.get("access_rule") or (profile.access.rule if profile.access else None),
            access_start=render(profile.access.start_date, context) or None if profile.access else None)
        transfer = seda.Transfer(
            message_id=self.transfer_id(ctx), date=now, version=str(ctx.params.get("seda_version") or profile.version),
            title=render(profile.title, context) or doc.id, comment=render(profile.comment, context) or None,
            description=render(profile.description, context) or None, description_level=profile.description_level,
            keywords=[(render(text, context), kind) for text, kind in profile.keywords],
            start_date=render(profile.start_date, context) or None, end_date=render(profile.end_date, context) or None,
            archival_agency=agencies["archival_agency"], transferring_agency=agencies["transferring_agency"],
            originating_agency=agencies.get("originating_agency"), submission_agency=agencies.get("submission_agency"),
            archival_agreement=agencies.get("archival_agreement"), archival_profile=agencies.get("archival_profile"),
            rules=rules)
        result = await build_package(directory / f"{transfer.message_id}.{self._format()}", transfer,
                                     self.sources(ctx, profile), sealer=self.sealer(),
                                     xsd_dir=self.runtime.settings.seda_xsd_dir, fmt=self._format())
        return result, transfer

    def _format(self) -> str:
        fmt = self.instance.settings.get("package_format", "zip")
        if fmt not in ("zip", "tar"):
            raise PermanentError(f"package_format must be zip or tar, not {fmt!r}", field="package_format")
        return fmt

    def sources(self, ctx: StepContext, profile: Profile) -> list[SourceFile]:
        """Every file of the document: the profile's fields first (in its order), then the others."""
        files = sorted(ctx.document.files, key=lambda f: (f.field not in profile.files,
                                                          list(profile.files).index(f.field)
                                                          if f.field in profile.files else 0, f.field, f.index))
        counts: dict[str, int] = {}
        for ref in files:
            counts[ref.field] = counts.get(ref.field, 0) + 1
        sources = []
        for ref in files:
            title = profile.files.get(ref.field) or ref.field
            if counts[ref.field] > 1:
                title = f"{title} {ref.index + 1} ({ref.filename})"
            sources.append(blob_source(self.runtime.blobs, ref.blob_key, ref.filename, title, ref.size,
                                       ref.created_at, field=ref.field))
        return sources

    # ---- purge ---------------------------------------------------------------------------------

    async def purge(self, ctx: StepContext) -> int:
        """Delete the bytes of the document's files (not the journal, not blobs other documents share)."""
        if not _truthy(self.instance.settings.get("purge", ctx.params.get("purge", False))):
            return 0
        deleted = 0
        for ref in ctx.document.files:
            async with self.runtime.store.transaction() as tx:
                shared = await tx.fetchval("SELECT COUNT(*) FROM document_files WHERE blob_key = $1 "
                                           "AND document_id <> $2", ref.blob_key, ctx.document.id)
            if not shared:
                await self.runtime.blobs.delete(ref.blob_key)
                deleted += 1
        ctx.log.info("sae.purged", files=deleted)
        return deleted


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "oui")


class SaeStoreConnector(_SaeConnector):
    """Archive into flowbus's own archive store; accepted as soon as the package is kept."""

    kind: ClassVar[str] = "store"

    def archive_store(self):
        from flowbus.archive.store import ArchiveStore
        s = self.instance.settings
        return ArchiveStore.for_runtime(self.runtime, storage=s.get("storage"), bucket=s.get("bucket"),
                                        retention_days=int(s.get("retention_days", 0)),
                                        retention_mode=str(s.get("retention_mode", "GOVERNANCE")))

    async def start(self, ctx: StepContext) -> Outcome:
        store = self.archive_store()
        transfer_id = self.transfer_id(ctx)
        record = await store.by_transfer(transfer_id)  # a redelivery after the package was kept
        manifest: bytes | None = None
        if record is None:
            directory = Path(tempfile.mkdtemp(prefix="flowbus-sae-"))
            try:
                result, transfer = await self.build(ctx, directory)
                report = await asyncio.to_thread(verify_report, result.path)
                if report.problems:  # never keep a package that does not prove itself
                    raise PermanentError("the sealed package does not verify: "
                                         + "; ".join(str(p) for p in report.problems), field="package")
                record = await store.put(
                    result.path, entity_id=ctx.document.entity_id, flow_id=ctx.flow_id, document_id=ctx.document.id,
                    transfer_id=transfer.message_id, seda_version=transfer.version, title=transfer.title,
                    description=transfer.description or "", keywords=[k for k, _ in transfer.keywords if k],
                    start_date=transfer.start_date, end_date=transfer.end_date, manifest=result.manifest,
                    size=result.size, files=len(result.objects),
                    seal_subject=report.seal_subject, timestamped_at=report.timestamp)
                manifest = result.manifest
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        else:
            manifest = await store.manifest(record.id)
        files = [await ctx.new_file("sae_bordereau", "bordereau.xml", "application/xml", manifest)]
        purged = await self.purge(ctx)
        ctx.log.info("sae.archived", package=record.id, transfer_id=record.transfer_id, backend=record.backend)
        return Outcome.done(fields={"sae_transfer_id": record.transfer_id, "sae_package_id": record.id,
                                    "sae_archived_at": record.archived_at, "sae_purged": purged > 0},
                            files=files, data={"package_id": record.id},
                            message=f"Paquet SEDA scellé conservé dans le magasin d'archives ({record.files} fichiers)")


class SaeAsalaeConnector(_SaeConnector):
    """Transfer to As@lae; wait for its Acknowledgement and ArchiveTransferReply."""

    kind: ClassVar[str] = "asalae"

    def client(self):
        from flowbus.archive.asalae import AsalaeClient
        s = self.instance.settings
        for key in ("url", "login", "password"):
            if not s.get(key):
                raise PermanentError(f"the As@lae connector needs {key}", field=key)
        session = self.runtime.http
        if session is None:
            raise PermanentError("the runtime has no HTTP client session", field="url")
        return AsalaeClient(s["url"], s["login"], s["password"], session=session)

    def _check_in(self) -> timedelta:
        return timedelta(seconds=float(self.instance.settings.get("check_every", 900)))

    async def _recorded(self, document_id: str) -> dict[str, Any] | None:
        async with self.runtime.store.transaction() as tx:
            return await tx.fetchrow("SELECT transfer_id, status FROM archive_transfers WHERE instance_id = $1 "
                                     "AND document_id = $2", self.instance.id, document_id)

    async def _record(self, document_id: str, transfer_id: str, status: str, reply_code: str | None = None) -> None:
        now = isoformat(self.runtime.clock.now())
        async with self.runtime.store.transaction() as tx:
            updated = await tx.execute(
                "UPDATE archive_transfers SET transfer_id = $3, status = $4, reply_code = $5, updated_at = $6 "
                "WHERE instance_id = $1 AND document_id = $2",
                self.instance.id, document_id, transfer_id, status, reply_code, now)
            if not updated:
                await tx.execute(
                    "INSERT INTO archive_transfers (instance_id, document_id, transfer_id, status, reply_code, "
                    "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    self.instance.id, document_id, transfer_id, status, reply_code, now)

    async def start(self, ctx: StepContext) -> Outcome:
        client = self.client()
        transfer_id = self.transfer_id(ctx)
        recorded = await self._recorded(ctx.document.id)
        if recorded is not None and recorded["transfer_id"] == transfer_id and recorded["status"] != "building":
            # redelivery: the transfer already left; follow it instead of sending it again
            agency = (await self._agencies(ctx))["transferring_agency"]
            return Outcome.waiting(self._check_in(), data={"transfer_id": transfer_id, "agency": agency})
        directory = Path(tempfile.mkdtemp(prefix="flowbus-sae-"))
        try:
            result, transfer = await self.build(ctx, directory)
            await self._record(ctx.document.id, transfer_id, "building")
            await client.send_transfer(result.manifest, result.path, transfer_id=transfer_id)
            await self._record(ctx.document.id, transfer_id, "sent")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        bordereau = await ctx.new_file("sae_bordereau", "bordereau.xml", "application/xml", result.manifest)
        ctx.log.info("sae.transfer_sent", transfer_id=transfer_id)
        return Outcome.waiting(self._check_in(), files=[bordereau],
                               data={"transfer_id": transfer_id, "agency": transfer.transferring_agency},
                               message="Transfert envoyé au service d'archives (As@lae)")

    async def _agencies(self, ctx: StepContext) -> dict[str, str]:
        entity = await self._entity(ctx.document.entity_id)
        return self.profile(ctx).agencies(ctx.document.entity_id, entity.get("siren"), self.instance.settings)

    async def check(self, ctx: StepContext) -> Outcome:
        client = self.client()
        transfer_id = ctx.data.get("transfer_id") or self.transfer_id(ctx)
        agency = ctx.data.get("agency") or (await self._agencies(ctx))["transferring_agency"]
        files = []
        data = dict(ctx.data, transfer_id=transfer_id, agency=agency)
        if not ctx.data.get("ack"):
            ack = await client.acknowledgement(agency, transfer_id)
            if ack is None:
                return Outcome.waiting(self._check_in(), data=data)
            files.append(await ctx.new_file("sae_ack", "acknowledgement.xml", "application/xml", ack))
            data["ack"] = True
            await self._record(ctx.document.id, transfer_id, "acknowledged")
        reply = await client.reply(agency, transfer_id)
        if reply is None:
            return Outcome.waiting(self._check_in(), data=data, files=files,
                                   message="Accusé de réception du service d'archives reçu" if files else None)
        parsed = seda.parse_reply(reply)
        code = parsed["reply_code"] or ""
        files.append(await ctx.new_file("sae_reply", "archive_transfer_reply.xml", "application/xml", reply))
        fields = {"sae_transfer_id": transfer_id, "sae_reply_code": code}
        if code == "000":
            await self._record(ctx.document.id, transfer_id, "accepted", code)
            purged = await self.purge(ctx)
            fields["sae_purged"] = purged > 0
            return Outcome.done(fields=fields, files=files, data=data,
                                message="Archivage accepté par le service d'archives")
        await self._record(ctx.document.id, transfer_id, "rejected", code)
        comment = parsed["comment"] or "sans motif"
        return Outcome.rejected(f"Transfert refusé par le service d'archives (code {code}) : {comment}",
                                fields=fields, files=files, data=data)
