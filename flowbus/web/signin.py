"""Sign-in pages (French): password sign-in with lockout, sign-out, forgotten password, single-use links, password change."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.errors import BackendError, ValidationError
from flowbus.people import accounts, limits, links, mail, passwords, sessions, throttle
from flowbus.people.accounts import User
from flowbus.web import french, render
from flowbus.web.session import (clear_session_cookie, client_ip, csrf_token, current, safe_next,
                                 set_session_cookie, signed_in)

log = structlog.get_logger(__name__)
WRONG = "Identifiant ou mot de passe incorrect."


def _page(request: web.Request, template: str, *, status: int = 200, **ctx: Any) -> web.Response:
    rt = request.app[RUNTIME]
    return render(template, status=status, csrf=csrf_token(request), oidc=bool(rt.settings.oidc_issuer),
                  oidc_label=rt.settings.oidc_label, cas=bool(rt.settings.cas_url), cas_label=rt.settings.cas_label,
                  **ctx)


def too_many(resp: web.Response, wait: int) -> web.Response:
    resp.headers["Retry-After"] = str(wait)
    return resp


async def start_session(request: web.Request, user: User, *, method: str, to: str) -> web.HTTPFound:
    """Open a session for ``user`` (already authenticated by ``method``) and go to ``to``."""
    rt = request.app[RUNTIME]
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        token, _csrf = await sessions.open_session(tx, user, method=method, ip=client_ip(request), now=now)
        await accounts.record_sign_in(tx, user, method=method, now=now)
    log.info("people.signed_in", login=user.login, method=method)
    resp = web.HTTPFound(safe_next(to))
    set_session_cookie(resp, request, token)
    return resp


async def sign_in_form(request: web.Request) -> web.Response:
    if await current(request) is not None:
        raise web.HTTPFound(safe_next(request.query.get("suivant")))
    return _page(request, "signin.html", error=None, login="", suivant=request.query.get("suivant", ""),
                 message=request.query.get("message"))


async def sign_in(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    form = await request.post()
    login, password = str(form.get("login", "")).strip().lower(), str(form.get("password", ""))
    suivant = str(form.get("suivant", ""))
    ip = limits.source_address(request)
    wait = await limits.retry_after(rt, "signin", ip, login)
    if wait:
        log.warning("people.sign_in_throttled", ip=ip)
        return too_many(_page(request, "signin.html", status=429, login=login, suivant=suivant,
                              error=limits.TooManyAttempts(wait).message), wait)
    now = rt.clock.now()
    error = None
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, login) if login else None
        if user is not None and throttle.is_locked(user, now):
            error = (f"Compte verrouillé après {throttle.MAX_FAILURES} tentatives infructueuses : réessayez après "
                     f"{user.locked_until.astimezone(french.PARIS).strftime('%H h %M')} ou demandez un nouveau mot de passe.")
            return _page(request, "signin.html", status=401, login=login, suivant=suivant, error=error)
        stored = await accounts.password_hash(tx, user.id) if user else None
        ok = passwords.verify(stored, password)
        if not ok:
            locked = await throttle.wrong_password(tx, user, now) if user is not None else False
            log.warning("people.sign_in_failed", login=login, ip=ip, locked=locked)
            error = WRONG if not locked else (f"Compte verrouillé après {throttle.MAX_FAILURES} tentatives "
                                              "infructueuses : réessayez dans 15 minutes ou demandez un nouveau "
                                              "mot de passe.")
    if error is not None:  # counted once the account's own count is written (never inside that transaction)
        wait = await limits.failed(rt, "signin", ip, login, reason="mot de passe incorrect")
        if wait:
            return too_many(_page(request, "signin.html", status=429, login=login, suivant=suivant,
                                  error=limits.TooManyAttempts(wait).message), wait)
        return _page(request, "signin.html", status=401, login=login, suivant=suivant, error=error)
    async with rt.store.transaction() as tx:
        assert user is not None and stored is not None
        if not user.active:
            return _page(request, "signin.html", status=401, login=login, suivant=suivant,
                         error="Ce compte est désactivé : adressez-vous à votre administrateur.")
        if passwords.needs_rehash(stored):
            await tx.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user.id,
                             passwords.hash_password(password))
    raise await start_session(request, user, method="password", to=suivant)


async def sign_out(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    token = request.cookies.get(sessions.COOKIE)
    if token:
        async with rt.store.transaction() as tx:
            await sessions.end(tx, token)
    resp = web.HTTPFound("/connexion?message=" + quote("Vous êtes déconnecté."))
    clear_session_cookie(resp)
    raise resp


# ---- forgotten password ------------------------------------------------------------------------


async def forgot_form(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return _page(request, "password_forgot.html", sent=False, error=None, mail_ok=mail.configured(rt.settings))


async def forgot(request: web.Request) -> web.Response:
    """Always the same answer whether or not an account matches (nobody learns who has one)."""
    rt = request.app[RUNTIME]
    if not mail.configured(rt.settings):
        return _page(request, "password_forgot.html", status=503, sent=False, mail_ok=False, error=None)
    ip = limits.source_address(request)
    wait = await limits.retry_after(rt, "forgot", ip)
    if wait:
        return too_many(_page(request, "password_forgot.html", status=429, sent=False, mail_ok=True,
                              error="Trop de demandes depuis votre adresse : réessayez plus tard."), wait)
    # each request counts (not journaled: it is no failure), so the form cannot be used to flood mailboxes
    await limits.failed(rt, "forgot", ip, journal=False)
    value = str((await request.post()).get("login", "")).strip()
    now = rt.clock.now()
    if value:
        async with rt.store.transaction() as tx:
            matches = [u for u in await accounts.by_login_or_email(tx, value) if u.active]
            tokens = [(u, await links.issue(tx, u.id, "reset", now)) for u in matches]
        for user, token in tokens:
            try:
                await mail.send_link(rt.settings, purpose="reset", to=user.email, name=user.name, login=user.login,
                                     url=links.url(rt.settings.base_url, token))
            except BackendError:
                return _page(request, "password_forgot.html", status=503, sent=False, mail_ok=True,
                             error="Le serveur de courriel est indisponible : réessayez plus tard.")
    return _page(request, "password_forgot.html", sent=True, mail_ok=True, error=None)


async def link_form(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        row = await links.peek(tx, request.match_info["token"], rt.clock.now())
        user = await accounts.get(tx, row["user_id"]) if row else None
    if row is None or user is None or not user.active:
        return _page(request, "password_link_invalid.html", status=410)
    return _page(request, "password_new.html", user=user, error=None, purpose=row["purpose"],
                 action=request.path)


async def link_use(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    form = await request.post()
    password, confirm = str(form.get("password", "")), str(form.get("confirm", ""))
    token = request.match_info["token"]
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        row = await links.peek(tx, token, now)
        user = await accounts.get(tx, row["user_id"]) if row else None
    if row is None or user is None or not user.active:
        return _page(request, "password_link_invalid.html", status=410)
    try:
        if password != confirm:
            raise ValidationError("Les deux mots de passe ne sont pas identiques.", field="confirm")
        async with rt.store.transaction() as tx:
            if await links.consume(tx, token, now) is None:
                return _page(request, "password_link_invalid.html", status=410)
            await accounts.set_password(tx, user, password, actor=f"user:{user.login}", now=now)
            await sessions.end_others(tx, user.id, None)
    except ValidationError as exc:
        return _page(request, "password_new.html", status=422, user=user, error=exc.message, field=exc.field,
                     purpose=row["purpose"], action=request.path)
    raise await start_session(request, user, method="link", to="/admin/")


# ---- changing one's password ---------------------------------------------------------------------


async def change_form(request: web.Request) -> web.Response:
    who = await signed_in(request, allow_password_change=True)
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        user = await accounts.get(tx, who.id)
    return _page(request, "password_change.html", user=user, error=None, forced=user.must_change_password,
                 need_current=user.has_password)


async def change(request: web.Request) -> web.Response:
    who = await signed_in(request, allow_password_change=True)
    rt = request.app[RUNTIME]
    form = await request.post()
    current_pw, password, confirm = (str(form.get(k, "")) for k in ("current", "password", "confirm"))
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.get(tx, who.id)
        stored = await accounts.password_hash(tx, user.id)
    try:
        if stored is not None and not passwords.verify(stored, current_pw):
            raise ValidationError("Le mot de passe actuel est incorrect.", field="current")
        if password != confirm:
            raise ValidationError("Les deux mots de passe ne sont pas identiques.", field="confirm")
        if stored is not None and passwords.verify(stored, password):
            raise ValidationError("Le nouveau mot de passe doit être différent de l'actuel.", field="password")
        async with rt.store.transaction() as tx:
            await accounts.set_password(tx, user, password, actor=who.actor, now=now)
            session_hash = sessions.token_hash(request.cookies.get(sessions.COOKIE, ""))
            await sessions.end_others(tx, user.id, session_hash)
    except ValidationError as exc:
        return _page(request, "password_change.html", status=422, user=user, error=exc.message, field=exc.field,
                     forced=user.must_change_password, need_current=stored is not None)
    raise web.HTTPFound("/admin/?message=" + quote("Votre mot de passe a été changé."))


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/", root)
    r.add_get("/connexion", sign_in_form)
    r.add_post("/connexion", sign_in)
    r.add_post("/deconnexion", sign_out)
    r.add_get("/mot-de-passe/oubli", forgot_form)
    r.add_post("/mot-de-passe/oubli", forgot)
    r.add_get(links.PATH + "{token}", link_form)
    r.add_post(links.PATH + "{token}", link_use)
    r.add_get("/mot-de-passe/changer", change_form)
    r.add_post("/mot-de-passe/changer", change)

