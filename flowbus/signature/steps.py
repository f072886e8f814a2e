"""Step ``signature/seal``: sign a document file with the entity's server seal (cachet serveur).

Instance settings::

    p12_path: /etc/flowbus/seal.p12     # or p12_base64: the PKCS#12 file, base64 (secret)
    p12_password: "…"                   # secret
    tsa_url: https://tsa.example/       # optional: PAdES B-T, CAdES-T
    role: Ordonnateur                   # optional, XAdES ClaimedRole
    city / postal_code / country        # optional, XAdES SignatureProductionPlace
    visible: false                      # PAdES: draw « Signé par … le … » on the last page

Step params: ``input`` (file field, default ``document``), ``output`` (file field, default
``signed``), ``format`` (``xades-pes`` | ``pades`` | ``cades``; default from the media type:
PDF → pades, a PES_Aller → xades-pes, anything else (other XML included) → cades).
``cades`` produces ``<name>.p7s`` beside the untouched file.  Signing is a pure function of
the input, so a redelivered step signs again and replaces the output field: safe to repeat.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, Outcome, StepContext
from flowbus.errors import PermanentError
from flowbus.signature.keys import SigningKey, load_pkcs12

FORMATS = ("xades-pes", "pades", "cades")


def default_format(media_type: str, filename: str) -> str:
    media_type = (media_type or "").lower()
    name = filename.lower()
    if media_type == "application/pdf" or name.endswith(".pdf"):
        return "pades"
    if media_type in ("application/xml", "text/xml") or media_type.endswith("+xml") or name.endswith(".xml"):
        return "xades-pes"
    return "cades"


class SealConnector(BaseConnector):
    """Sign with the seal certificate configured on the connector instance."""

    family: ClassVar[str] = "signature"
    kind: ClassVar[str] = "seal"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"p12_password", "p12_base64"})

    def _pkcs12_bytes(self) -> bytes:
        settings = self.instance.settings
        if settings.get("p12_base64"):
            try:
                return base64.b64decode(settings["p12_base64"], validate=False)
            except (binascii.Error, ValueError):
                raise PermanentError("p12_base64 is not valid base64", field="p12_base64") from None
        path = settings.get("p12_path")
        if not path:
            raise PermanentError("the seal connector needs p12_path or p12_base64", field="p12_path",
                                 hint="configure the entity's seal certificate (PKCS#12)")
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise PermanentError(f"cannot read the seal certificate {path}: {exc.strerror}", field="p12_path") \
                from None

    def load_key(self, now: datetime | None) -> SigningKey:
        """The seal key, checked valid at ``now``; errors name the instance setting to fix."""
        try:
            return load_pkcs12(self._pkcs12_bytes(), self.instance.settings.get("p12_password"), now=now)
        except PermanentError as exc:
            if exc.field == "pkcs12_password":
                exc.field = "p12_password"
            elif exc.field == "pkcs12":
                exc.field = "p12_base64" if self.instance.settings.get("p12_base64") else "p12_path"
            raise

    async def start(self, ctx: StepContext) -> Outcome:
        input_field = ctx.params.get("input", "document")
        output_field = ctx.params.get("output", "signed")
        ref = ctx.file(input_field)
        fmt = ctx.params.get("format") or default_format(ref.media_type, ref.filename)
        if fmt not in FORMATS:
            raise PermanentError(f"unknown signature format {fmt!r}", field="format",
                                 hint=f"use one of {', '.join(FORMATS)}")
        clock = getattr(self.runtime, "clock", None)
        now = clock.now() if clock is not None else None
        key = self.load_key(now)
        data = await ctx.file_bytes(input_field)
        if fmt == "xades-pes" and not ctx.params.get("format") and b"PES_Aller" not in data[:4096]:
            fmt = "cades"  # an XML file that is not a PES (ACTES message, export…): detached signature
        settings = self.instance.settings
        # CPU-bound (RSA, canonicalisation, PDF writing): keep the event loop free.
        if fmt == "xades-pes":
            from flowbus.signature.xades import sign_pes
            signed = await asyncio.to_thread(
                sign_pes, data, key, now=now, role=settings.get("role"), city=settings.get("city"),
                postal_code=settings.get("postal_code"), country=settings.get("country"))
            name, media_type = ref.filename, ref.media_type or "application/xml"
        elif fmt == "pades":
            from flowbus.signature.pades import VisibleSignature, sign_pdf
            visible = VisibleSignature() if settings.get("visible") else None
            signed = await asyncio.to_thread(sign_pdf, data, key, now=now, tsa_url=settings.get("tsa_url"),
                                             visible=visible, location=settings.get("city"),
                                             outbound=self.runtime.outbound)
            name, media_type = ref.filename, "application/pdf"
        else:
            from flowbus.signature.cades import sign_cades
            signed = await asyncio.to_thread(sign_cades, data, key, now=now, tsa_url=settings.get("tsa_url"),
                                             outbound=self.runtime.outbound)
            name, media_type = f"{ref.filename}.p7s", "application/pkcs7-signature"
        new = await ctx.new_file(output_field, name, media_type, signed)
        signed_at = isoformat(now) if now is not None else isoformat(datetime.now().astimezone())
        ctx.log.info("signature.sealed", format=fmt, signer=key.subject, input=input_field, output=output_field,
                     size=len(signed))
        return Outcome.done(files=[new], fields={"signature_date": signed_at, "signature_signer": key.subject},
                            message=f"Document signé avec le cachet « {key.subject} »")
