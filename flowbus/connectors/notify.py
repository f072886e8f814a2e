"""Step family ``notify``: tell someone a step was reached — by e-mail (kind ``smtp``) or by an HTTP
POST to another application (kind ``http``: a publication site, a business application).

``smtp`` settings: those of a mailsec instance (``host``, ``port``, ``username``, ``password``,
``starttls``, ``from_address`` …).  Step params: ``to`` (a list of addresses and/or field names
holding one), ``subject`` and ``body`` (Jinja templates over ``fields``, ``document``, ``step``).

``http`` settings: ``url``, ``secret`` (HMAC-SHA256 of the body in ``X-Flowbus-Signature``),
``timeout`` (seconds).  The JSON carries the document's id, entity, flow, fields and file list;
``Idempotency-Key`` lets the receiver ignore a repeat after a crash.

Both send the idempotency key (header ``X-Flowbus-Idempotency-Key`` for mail), so a redelivered step is recognisable
by the receiver; neither system can be asked whether it already got a message.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import aiohttp
from jinja2.sandbox import SandboxedEnvironment

from flowbus.connectors.base import BaseConnector, Outcome, StepContext
from flowbus.errors import ConfigError, PermanentError, TransientError

_ENV = SandboxedEnvironment(autoescape=False)


def _recipients(ctx: StepContext) -> list[str]:
    raw = ctx.params.get("to") or []
    items = [raw] if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for item in items:
        value = ctx.document.fields.get(item) if item in ctx.document.fields else item
        if isinstance(value, str) and "@" in value:
            out.append(value.strip())
    if not out:
        raise PermanentError(f"step {ctx.step_id!r}: no recipient address (param 'to': {raw!r})", field="to",
                             hint="name addresses, or fields holding one, in the step's params.to")
    return out


def _context(ctx: StepContext) -> dict[str, Any]:
    doc = ctx.document
    return {"fields": doc.fields, "step": ctx.step_id,
            "document": {"id": doc.id, "entity": doc.entity_id, "flow": doc.flow_id, "state": doc.state}}


class NotifyEmailConnector(BaseConnector):
    family: ClassVar[str] = "notify"
    kind: ClassVar[str] = "smtp"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password"})

    def __init__(self, instance: Any, runtime: Any) -> None:
        super().__init__(instance, runtime)
        from flowbus.connectors.mailsec.send import SmtpConfig, SmtpPool
        try:
            self._pool = SmtpPool(SmtpConfig.from_settings(instance.settings), outbound=runtime.outbound)
        except ConfigError as exc:
            raise ConfigError(f"notify instance {instance.id!r}: {exc.message}", field=exc.field) from exc

    async def start(self, ctx: StepContext) -> Outcome:
        from flowbus.connectors.mailsec.send import OutgoingMail
        context = _context(ctx)
        try:
            subject = _ENV.from_string(str(ctx.params.get("subject", "Document {{ document.id }}"))).render(context)
            body = _ENV.from_string(str(ctx.params.get("body", "L'étape « {{ step }} » du document "
                                                               "{{ document.id }} est atteinte."))).render(context)
        except Exception as exc:  # noqa: BLE001 - a template error is a configuration error
            raise PermanentError(f"step {ctx.step_id!r}: template error: {exc}", field="subject/body") from exc
        refused = []
        for address in _recipients(ctx):
            delivery = await self._pool.send(OutgoingMail(address=address, subject=" ".join(subject.split()),
                                                          text=body,
                                                          headers={"X-Flowbus-Idempotency-Key": ctx.idempotency_key}))
            if delivery.temporary:
                raise TransientError(f"SMTP server answered {delivery.code} for {address}: {delivery.message}")
            if delivery.refused:
                refused.append(f"{address} ({delivery.code} {delivery.message})")
        if refused:
            raise PermanentError(f"notification refused for {', '.join(refused)}", field="to")
        return Outcome.done(message="Notification envoyée par courriel")

    async def close(self) -> None:
        await self._pool.close()


class NotifyHttpConnector(BaseConnector):
    family: ClassVar[str] = "notify"
    kind: ClassVar[str] = "http"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"secret"})

    async def start(self, ctx: StepContext) -> Outcome:
        url = self.instance.settings.get("url")
        if not url:
            raise PermanentError(f"notify instance {self.instance.id!r} has no 'url'", field="url")
        doc = ctx.document
        payload = {"event": "notify", "step": ctx.step_id, "idempotency_key": ctx.idempotency_key,
                   "document": {"id": doc.id, "entity": doc.entity_id, "flow": doc.flow_id, "state": doc.state,
                                "fields": doc.fields, "files": [f.to_json() for f in doc.files]}}
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": ctx.idempotency_key}
        secret = self.instance.settings.get("secret")
        if secret:
            from flowbus.connectors.webhooks import sign
            headers["X-Flowbus-Signature"] = sign(str(secret), body)
        timeout = aiohttp.ClientTimeout(total=float(self.instance.settings.get("timeout", 30)))
        try:
            async with self.runtime.http.post(url, data=body, headers=headers, timeout=timeout) as resp:
                text = (await resp.text())[:300]
                if resp.status >= 500 or resp.status == 429:
                    raise TransientError(f"{url} answered HTTP {resp.status}: {text}")
                if resp.status >= 400:
                    raise PermanentError(f"{url} refused the notification: HTTP {resp.status}: {text}", field="url")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"{url} unreachable: {exc}") from exc
        return Outcome.done(message=f"Notification transmise à {url}")
