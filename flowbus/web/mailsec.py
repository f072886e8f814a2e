"""Secure-mail recipient page (French, no JavaScript): ``/mail/{token}``, downloads, password, reply.

A wrong or malformed token is a plain 404 that says nothing about why; an expired link is a
French page saying so.  The first successful opening is the read receipt (date, IP, user
agent), journaled.  The token is a secret: it never reaches a log line (no path is logged
here, and every error is handled before the generic middleware, which logs paths).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from flowbus import journal
from flowbus.api import RUNTIME
from flowbus.clock import isoformat
from flowbus.connectors.mailsec import store, tokens
from flowbus.connectors.mailsec.templates import datetime_fr
from flowbus.errors import PayloadTooLarge
from flowbus.people import limits
from flowbus.web import render

log = structlog.get_logger(__name__)
COOKIE = "flowbus_mailsec"
CHUNK = 256 * 1024
MAX_REPLY_TEXT = 20_000
MAX_REPLY_FILES = 10
LOCKOUT = tokens.Lockout()
_SECURITY_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                     "Content-Security-Policy": "default-src 'none'; style-src 'self'; "
                                                "form-action 'self'; frame-ancestors 'none'",
                     "X-Content-Type-Options": "nosniff"}


def _paris(dt: datetime | None) -> str:
    if dt is None:
        return ""
    try:
        from zoneinfo import ZoneInfo
        return datetime_fr(dt.astimezone(ZoneInfo("Europe/Paris")))
    except Exception:  # noqa: BLE001 - no tz database: show UTC
        return datetime_fr(dt) + " (UTC)"


def _page(template: str, status: int = 200, **context: Any) -> web.Response:
    return render(template, status=status, headers=dict(_SECURITY_HEADERS), **context)


def not_found() -> web.Response:
    """The same answer for every unknown, malformed or revoked link, byte for byte aiohttp's own 404."""
    return web.Response(status=404, text="404: Not Found", headers={"Cache-Control": "no-store"})


class _Access:
    def __init__(self, rt: Any, recipient: store.Recipient, mailing: store.Mailing, token: str) -> None:
        self.rt, self.recipient, self.mailing, self.token = rt, recipient, mailing, token

    @property
    def base(self) -> str:
        return f"/mail/{self.token}"


def _throttled(rt: Any, wait: int) -> web.Response:
    """429 for an address past its limit (flowbus.people.limits), with Retry-After."""
    from datetime import timedelta
    resp = _page("mailsec_locked.html", status=429, from_address=True,
                 until=_paris(rt.clock.now() + timedelta(seconds=wait)))
    resp.headers["Retry-After"] = str(wait)
    return resp


async def _unknown_link(request: web.Request) -> web.Response:
    """An unknown or malformed link: counted against the address (tokens are not guessable, so a right one
    is never slowed down); past the limit, 429 instead of the 404."""
    rt = request.app[RUNTIME]
    wait = await limits.failed(rt, "mailsec-token", limits.source_address(request), None, reason="lien inconnu")
    return _throttled(rt, wait) if wait else not_found()


async def _resolve(request: web.Request) -> _Access | web.Response:
    rt = request.app[RUNTIME]
    token = request.match_info.get("token", "")
    if not tokens.looks_like_token(token):
        return await _unknown_link(request)
    async with rt.store.transaction() as tx:
        recipient = await store.recipient_by_token_hash(tx, tokens.hash_token(token))
        mailing = await store.get_mailing(tx, recipient.mailing_id) if recipient else None
    if recipient is None or mailing is None:
        return await _unknown_link(request)
    now = rt.clock.now()
    if now >= recipient.expires_at:
        return _page("mailsec_expired.html", status=410, expired_at=_paris(recipient.expires_at))
    return _Access(rt, recipient, mailing, token)


def _unlocked(request: web.Request, access: _Access) -> bool:
    r = access.recipient
    if r.password_hash is None:
        return True
    session = request.cookies.get(COOKIE)
    return bool(session and r.session_hash and secrets.compare_digest(tokens.hash_token(session), r.session_hash))


def _client(request: web.Request) -> tuple[str | None, str]:
    return request.remote, request.headers.get("User-Agent", "")


async def _receipt(request: web.Request, access: _Access) -> None:
    """The first opening: read receipt in the recipient's row and in the journal."""
    r = access.recipient
    if r.read_at is not None:
        return
    rt = access.rt
    now = rt.clock.now()
    ip, agent = _client(request)
    async with rt.store.transaction() as tx:
        if await store.mark_read(tx, r.id, now, ip, agent):
            await journal.append(tx, entity_id=access.mailing.entity_id, actor=f"mailsec:{r.address}",
                                 kind="mailsec.read", at=now, document_id=r.document_id,
                                 data={"recipient": r.address, "recipient_id": r.id, "ip": ip,
                                       "user_agent": agent[:500], "message": f"{r.address} a consulté le document"})
    log.info("mailsec.read", document_id=r.document_id, recipient_id=r.id)


def _guard(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - never let the middleware log the path (it holds the token)
            log.error("mailsec.page_failed", error=type(exc).__name__)
            return _page("mailsec_error.html", status=500)
    return wrapped


def _show(access: _Access, *, notice: str | None = None, error: str | None = None, status: int = 200) -> web.Response:
    m = access.mailing
    files = [{"n": i, "filename": f["filename"], "size": _size(int(f["size"])), "href": f"{access.base}/files/{i}"}
             for i, f in enumerate(m.files)]
    return _page("mailsec_page.html", status=status, subject=m.subject, message=m.message, files=files,
                 expires=_paris(access.recipient.expires_at), allow_reply=m.allow_reply,
                 reply_action=f"{access.base}/reponse", notice=notice, error=error)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} octets"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} Ko".replace(".", ",")
    return f"{n / 1024 / 1024:.1f} Mo".replace(".", ",")


def _password_form(access: _Access, *, error: str | None = None, status: int = 200) -> web.Response:
    return _page("mailsec_password.html", status=status, action=access.base, error=error,
                 subject=access.mailing.subject)


def _locked(access: _Access) -> web.Response:
    return _page("mailsec_locked.html", status=429, until=_paris(access.recipient.locked_until))


@_guard
async def page(request: web.Request) -> web.Response:
    access = await _resolve(request)
    if isinstance(access, web.Response):
        return access
    if not _unlocked(request, access):
        if LOCKOUT.is_locked(access.recipient.locked_until, access.rt.clock.now()):
            return _locked(access)
        return _password_form(access)
    await _receipt(request, access)
    notice = "Votre réponse a bien été transmise. Merci." if request.query.get("reponse") == "ok" else None
    return _show(access, notice=notice)


@_guard
async def password(request: web.Request) -> web.Response:
    access = await _resolve(request)
    if isinstance(access, web.Response):
        return access
    r = access.recipient
    if r.password_hash is None:
        raise web.HTTPSeeOther(access.base)
    rt = access.rt
    now = rt.clock.now()
    if LOCKOUT.is_locked(r.locked_until, now):
        return _locked(access)
    address = limits.source_address(request)
    wait = await limits.retry_after(rt, "mailsec-password", address, r.id)
    if wait:
        return _throttled(rt, wait)
    form = await request.post()
    given = str(form.get("mot_de_passe", ""))[:200]
    ok = bool(given) and await asyncio.to_thread(tokens.verify_password, given, r.password_hash)
    if not ok:
        policy = await _lockout(rt, access.mailing)
        failed, until = policy.after_failure(r.failed_attempts, now)
        async with rt.store.transaction() as tx:
            await store.password_failed(tx, r.id, failed, until, now)
            if until is not None:
                await journal.append(tx, entity_id=access.mailing.entity_id, actor="mailsec", kind="mailsec.locked",
                                     at=now, document_id=r.document_id,
                                     data={"recipient": r.address, "recipient_id": r.id, "until": isoformat(until)})
        log.info("mailsec.password_failed", document_id=r.document_id, recipient_id=r.id, locked=until is not None)
        wait = await limits.failed(rt, "mailsec-password", address, r.id, reason="mot de passe du lien incorrect",
                                   document_id=r.document_id)
        if wait and until is None:
            return _throttled(rt, wait)
        if until is not None:
            access.recipient = await _reload(rt, r.id)
            return _locked(access)
        left = policy.max_attempts - failed
        return _password_form(access, status=403, error=f"Mot de passe incorrect. Il vous reste {left} essai(s) "
                                                          "avant le blocage temporaire du lien.")
    session = secrets.token_urlsafe(32)
    async with rt.store.transaction() as tx:
        await store.password_ok(tx, r.id, tokens.hash_token(session), now)
    resp = web.HTTPSeeOther(access.base)
    resp.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path=access.base,
                    secure=rt.settings.base_url.startswith("https"))
    raise resp


async def _lockout(rt: Any, mailing: store.Mailing) -> tokens.Lockout:
    """The instance's ``password_attempts`` (default 5) and ``password_lock_for`` (default 15m)."""
    try:
        async with rt.store.transaction() as tx:
            instance = await rt.instances.resolve(tx, mailing.instance_id, mailing.entity_id)
        settings = instance.settings
        return tokens.Lockout(max_attempts=max(1, int(settings.get("password_attempts") or LOCKOUT.max_attempts)),
                              lock_for=tokens.parse_duration(settings.get("password_lock_for") or "15m",
                                                             field="password_lock_for"))
    except Exception:  # noqa: BLE001 - instance removed or misconfigured: the safe default applies
        return LOCKOUT


async def _reload(rt: Any, recipient_id: str) -> store.Recipient:
    async with rt.store.transaction() as tx:
        r = await store.get_recipient(tx, recipient_id)
    assert r is not None
    return r


@_guard
async def download(request: web.Request) -> web.StreamResponse:
    access = await _resolve(request)
    if isinstance(access, web.Response):
        return access
    if not _unlocked(request, access):
        raise web.HTTPSeeOther(access.base)
    try:
        n = int(request.match_info["n"])
        f = access.mailing.files[n]
    except (ValueError, IndexError):
        return not_found()
    await _receipt(request, access)
    rt = access.rt
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        await journal.append(tx, entity_id=access.mailing.entity_id, actor=f"mailsec:{access.recipient.address}",
                             kind="mailsec.download", at=now, document_id=access.recipient.document_id,
                             data={"recipient": access.recipient.address, "recipient_id": access.recipient.id,
                                   "filename": f["filename"], "sha256": f["sha256"]})
    resp = web.StreamResponse(headers={
        **_SECURITY_HEADERS, "Content-Type": f["media_type"], "Content-Length": str(f["size"]),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(f['filename'])}"})
    await resp.prepare(request)
    async for chunk in rt.blobs.open(f["blob_key"]):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


@_guard
async def reply(request: web.Request) -> web.Response:
    access = await _resolve(request)
    if isinstance(access, web.Response):
        return access
    if not _unlocked(request, access):
        raise web.HTTPSeeOther(access.base)
    if not access.mailing.allow_reply:
        return not_found()
    rt = access.rt
    text = ""
    files: list[dict[str, Any]] = []
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        return _show(access, status=400, error="Le formulaire de réponse est incomplet.")
    while (part := await reader.next()) is not None:
        name = getattr(part, "name", None)
        if name == "message":
            text = (await part.text())[:MAX_REPLY_TEXT]
        elif name == "fichiers" and getattr(part, "filename", None):
            if len(files) >= MAX_REPLY_FILES:
                return _show(access, status=400, error=f"{MAX_REPLY_FILES} fichiers au plus par réponse.")

            async def chunks(p: Any = part) -> AsyncIterator[bytes]:
                while chunk := await p.read_chunk(CHUNK):
                    yield chunk
            try:
                blob = await rt.blobs.put(chunks(), max_size=rt.settings.max_upload_size)
            except PayloadTooLarge:
                return _show(access, status=413, error="Un fichier joint est trop volumineux.")
            if blob.size == 0:
                continue
            filename = part.filename.replace("/", "_").replace("\\", "_")[:200]
            files.append({"filename": filename, "media_type": part.headers.get("Content-Type",
                                                                                "application/octet-stream"),
                          "size": blob.size, "sha256": blob.sha256, "blob_key": blob.key})
    if not text.strip() and not files:
        return _show(access, status=400, error="Écrivez un message ou joignez un fichier avant d'envoyer.")
    now = rt.clock.now()
    r = access.recipient
    async with rt.store.transaction() as tx:
        await store.insert_reply(tx, recipient=r, text=text, files=files, at=now)
        await journal.append(tx, entity_id=access.mailing.entity_id, actor=f"mailsec:{r.address}",
                             kind="mailsec.reply", at=now, document_id=r.document_id,
                             data={"recipient": r.address, "recipient_id": r.id, "files": [f["filename"] for f in files],
                                   "length": len(text)})
    # after the reply is stored: the check that sees « all read » must also see the reply
    await _receipt(request, access)
    raise web.HTTPSeeOther(f"{access.base}?reponse=ok")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/mail/{token}", page)
    app.router.add_post("/mail/{token}", password)
    app.router.add_get("/mail/{token}/files/{n}", download)
    app.router.add_post("/mail/{token}/reponse", reply)
