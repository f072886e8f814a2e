"""Single sign-on routes: /sso/oidc and /sso/cas send the person to the provider; their return opens a session for the matching active account."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.clock import isoformat
from flowbus.people import accounts, cas, oidc
from flowbus.people.oidc import SsoRefused
from flowbus.web import render
from flowbus.web.session import safe_next
from flowbus.web.signin import start_session

log = structlog.get_logger(__name__)
ATTEMPT_TTL = timedelta(minutes=10)
COOKIE = "flowbus_sso"  # ties the return to the browser that left (with the state, stored hashed)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _refused(request: web.Request, message: str, status: int = 401) -> web.Response:
    log.warning("sso.refused", path=request.path, reason=message)
    return render("sso_refused.html", status=status, message=message)


async def _account(request: web.Request, login: str, provider_name: str) -> Any:
    rt = request.app[RUNTIME]
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, login)
    if user is None or not user.active:
        raise SsoRefused(f"Aucun compte actif ne correspond à l'identifiant « {login} » transmis par "
                         f"{provider_name} : demandez à votre administrateur de vous ouvrir un compte.")
    return user


async def _remember(request: web.Request, protocol: str, state: str, nonce: str, verifier: str) -> None:
    rt = request.app[RUNTIME]
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        await tx.execute("DELETE FROM sso_attempts WHERE created_at < $1", isoformat(now - ATTEMPT_TTL))
        await tx.execute("INSERT INTO sso_attempts (state_hash, protocol, nonce, verifier, next_url, created_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6)", _hash(state), protocol, nonce, verifier,
                         safe_next(request.query.get("suivant")), isoformat(now))


async def _take(request: web.Request, protocol: str, state: str) -> dict[str, Any]:
    """The attempt ``state`` started, used once; refused when replayed, expired or from another browser."""
    rt = request.app[RUNTIME]
    if not state or request.cookies.get(COOKIE) != _hash(state)[:32]:
        raise SsoRefused("Réponse du fournisseur inattendue dans ce navigateur : recommencez la connexion.")
    async with rt.store.transaction() as tx:
        row = await tx.fetchrow("SELECT * FROM sso_attempts WHERE state_hash = $1 AND protocol = $2", _hash(state),
                                protocol)
        if row is None or not await tx.execute("DELETE FROM sso_attempts WHERE state_hash = $1", _hash(state)):
            raise SsoRefused("Réponse déjà utilisée ou expirée : recommencez la connexion.")
    if row["created_at"] < isoformat(rt.clock.now() - ATTEMPT_TTL):
        raise SsoRefused("La connexion a pris trop de temps : recommencez.")
    return row


def _leave(url: str, state: str) -> web.HTTPFound:
    resp = web.HTTPFound(url)
    resp.set_cookie(COOKIE, _hash(state)[:32], httponly=True, samesite="Lax", path="/sso", max_age=600)
    return resp


async def oidc_start(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not rt.settings.oidc_issuer:
        return _refused(request, "La connexion OpenID Connect n'est pas configurée sur cette plateforme.", 404)
    state, nonce, verifier, challenge = oidc.new_attempt()
    try:
        url = await oidc.authorization_url(rt.http, oidc.provider(rt.settings), state=state, nonce=nonce,
                                           challenge=challenge, redirect_uri=f"{rt.settings.base_url}/sso/oidc/retour")
    except SsoRefused as exc:
        return _refused(request, exc.message, 502)
    await _remember(request, "oidc", state, nonce, verifier)
    raise _leave(url, state)


async def oidc_return(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    q = request.query
    try:
        if q.get("error"):
            raise SsoRefused(f"Le fournisseur d'identité a refusé la connexion : {q.get('error_description') or q['error']}.")
        attempt = await _take(request, "oidc", q.get("state", ""))
        p = oidc.provider(rt.settings)
        id_token = await oidc.exchange(rt.http, p, code=q.get("code", ""), verifier=attempt["verifier"],
                                       redirect_uri=f"{rt.settings.base_url}/sso/oidc/retour")
        claims = await oidc.check_id_token(rt.http, p, id_token, nonce=attempt["nonce"])
        user = await _account(request, str(claims[p.claim]), "le fournisseur d'identité")
    except SsoRefused as exc:
        return _refused(request, exc.message)
    raise await start_session(request, user, method="oidc", to=attempt["next_url"])


async def cas_start(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not rt.settings.cas_url:
        return _refused(request, "La connexion CAS n'est pas configurée sur cette plateforme.", 404)
    state = oidc.new_attempt()[0]
    await _remember(request, "cas", state, "", "")
    service = f"{rt.settings.base_url}/sso/cas/retour?etat={state}"
    raise _leave(cas.login_url(rt.settings.cas_url, service), state)


async def cas_return(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    state = request.query.get("etat", "")
    try:
        attempt = await _take(request, "cas", state)
        service = f"{rt.settings.base_url}/sso/cas/retour?etat={state}"
        login = await cas.validate(rt.http, rt.settings.cas_url, service=service,
                                   ticket=request.query.get("ticket", ""))
        user = await _account(request, login, "le serveur CAS")
    except SsoRefused as exc:
        return _refused(request, exc.message)
    raise await start_session(request, user, method="cas", to=attempt["next_url"])


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/sso/oidc", oidc_start)
    r.add_get("/sso/oidc/retour", oidc_return)
    r.add_get("/sso/cas", cas_start)
    r.add_get("/sso/cas/retour", cas_return)
