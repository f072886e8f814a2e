"""Who calls ``/api/v2``, authenticated as Pastell 2–4 clients send it, through the rate limits of every door.

* ``Authorization: Basic`` with a person's login and password (Pastell 2), or with an API key
  (login: the key's id or name; password: the key itself);
* ``Authorization: Bearer <token>`` (Pastell 4): a person's personal token
  (``flowbus.people.tokens``) — the call acts as that person, with their grants of the moment — or an
  API key;
* no ``Authorization`` but a web session cookie: that person (CSRF header required to change anything).

Every failure counts against the source address and the identity tried (``flowbus.people.limits``,
door ``pastell``): a password is refused before it is even checked once the address is blocked; a
token or key (high entropy) is counted only when wrong.
"""

from __future__ import annotations

import base64
import binascii

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import authenticate_key_limited, csrf_matches, key_principal, session_principal
from flowbus.errors import Forbidden, Unauthorized
from flowbus.people import accounts, limits, passwords, sessions, throttle, tokens
from flowbus.people.access import Principal

log = structlog.get_logger(__name__)
DOOR = "pastell"
WRONG = "Accès interdit : identifiant ou mot de passe incorrect"


async def authenticate(request: web.Request) -> Principal:
    rt = request.app[RUNTIME]
    header = request.headers.get("Authorization", "")
    if not header:
        who = await session_principal(rt, request.cookies.get(sessions.COOKIE))
        if who is not None:
            if who.must_change_password:
                raise Forbidden("Accès interdit : choisissez d'abord votre propre mot de passe")
            if request.method not in ("GET", "HEAD") and not csrf_matches(who.session_csrf,
                                                                       request.headers.get("X-CSRF-Token")):
                raise Forbidden("Accès interdit : jeton CSRF (X-CSRF-Token) absent ou invalide")
            return who
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return await _bearer(request, value.strip())
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("Accès interdit : authentification requise — HTTP Basic (login et mot de passe du "
                           "compte, ou identifiant et valeur d'une clé d'API) ou Bearer (jeton personnel)")
    try:
        login, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Accès interdit : en-tête Authorization illisible") from None
    address = limits.source_address(request)
    if password.startswith("fbk_"):  # an API key: high entropy, counted only when wrong
        try:
            key = await authenticate_key_limited(rt, password, address, door=DOOR)
        except Unauthorized:
            raise Unauthorized(WRONG) from None
        if login not in (key.id, key.name):
            wait = await limits.failed(rt, DOOR, address, key.id, reason="identifiant ne correspondant pas à la clé")
            if wait:
                raise limits.TooManyAttempts(wait, field="Authorization")
            raise Unauthorized(WRONG)
        return key_principal(key)
    return await _password(request, login, password, address)


async def _bearer(request: web.Request, secret: str) -> Principal:
    rt = request.app[RUNTIME]
    address = limits.source_address(request)
    if secret.startswith("fbk_"):
        try:
            return key_principal(await authenticate_key_limited(rt, secret, address, door=DOOR))
        except Unauthorized:
            raise Unauthorized("Accès interdit : jeton inconnu ou révoqué") from None
    return await tokens.authenticate_limited(rt, secret, address, door=DOOR)


async def _password(request: web.Request, login: str, password: str, address: str) -> Principal:
    """A person's password: a blocked address (or login) is refused before the password is looked at."""
    rt = request.app[RUNTIME]
    wait = await limits.retry_after(rt, DOOR, address, login)
    if wait:
        raise limits.TooManyAttempts(wait, field="Authorization")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, login) if login else None
        if user is not None and throttle.is_locked(user, now):
            raise Unauthorized("Accès interdit : compte verrouillé après trop de mots de passe erronés")
        stored = await accounts.password_hash(tx, user.id) if user else None
        ok = passwords.verify(stored, password)
        if not ok and user is not None:
            await throttle.wrong_password(tx, user, now)  # kept: the block ends without raising
        who = await accounts.principal(tx, user) if ok and user is not None and user.active else None
    if not ok:
        log.warning("pastell.sign_in_failed", login=login, address=address)
        wait = await limits.failed(rt, DOOR, address, login, reason="mot de passe incorrect")
        if wait:
            raise limits.TooManyAttempts(wait, field="Authorization")
        raise Unauthorized(WRONG)
    if who is None:
        raise Unauthorized("Accès interdit : compte désactivé")
    return who
