"""OpenID Connect sign-in (authorization code with PKCE): discovery, the provider's keys, the code exchange, and an ID token checked claim by claim.

The ID token's signature is checked with joserfc against the provider's published keys (RS256,
PS256, ES256 only: never ``none`` nor a shared-secret algorithm), then ``iss``, ``aud`` (and
``azp`` when there are several audiences), ``exp``, ``iat`` and ``nonce``.  The configured claim
(``FLOWBUS_OIDC_CLAIM``, default ``preferred_username``) names the flowbus account.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from flowbus.errors import FlowbusError

log = structlog.get_logger(__name__)
ALGORITHMS = ["RS256", "PS256", "ES256"]
LEEWAY = 60  # seconds of clock difference tolerated
TIMEOUT = aiohttp.ClientTimeout(total=15)


class SsoRefused(FlowbusError):
    """The identity provider, or what it sent, was not accepted: the message says why, in French."""

    status = 401
    title = "Connexion refusée"


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    claim: str
    meta: dict[str, Any] | None = None
    keys: KeySet | None = None
    keys_at: float = 0.0


_PROVIDERS: dict[tuple[str, str], Provider] = {}


def provider(settings: Any) -> Provider:
    """The platform's provider (its discovery document and keys are cached for the process)."""
    key = (settings.oidc_issuer.rstrip("/"), settings.oidc_client_id)
    p = _PROVIDERS.get(key)
    if p is None:
        p = _PROVIDERS[key] = Provider(key[0], settings.oidc_client_id,
                                       settings.oidc_client_secret.get_secret_value(), settings.oidc_claim)
    return p


async def _get_json(http: aiohttp.ClientSession, url: str, what: str) -> dict[str, Any]:
    try:
        async with http.get(url, timeout=TIMEOUT) as resp:
            if resp.status != 200:
                raise SsoRefused(f"Le fournisseur d'identité a répondu HTTP {resp.status} pour {what}.")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SsoRefused(f"Le fournisseur d'identité est injoignable ({what}) : {exc}") from exc


async def discover(http: aiohttp.ClientSession, p: Provider) -> dict[str, Any]:
    if p.meta is None:
        meta = await _get_json(http, f"{p.issuer}/.well-known/openid-configuration", "la découverte")
        if meta.get("issuer", "").rstrip("/") != p.issuer:
            raise SsoRefused(f"Le document de découverte annonce l'émetteur « {meta.get('issuer')} », pas "
                             f"« {p.issuer} ».")
        for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not meta.get(needed):
                raise SsoRefused(f"Le document de découverte du fournisseur n'a pas de « {needed} ».")
        p.meta = meta
    return p.meta


async def keys(http: aiohttp.ClientSession, p: Provider, *, refresh: bool = False) -> KeySet:
    if p.keys is None or refresh:
        meta = await discover(http, p)
        p.keys = KeySet.import_key_set(await _get_json(http, meta["jwks_uri"], "les clés publiques"))
        p.keys_at = time.time()
    return p.keys


def new_attempt() -> tuple[str, str, str, str]:
    """(state, nonce, PKCE verifier, its S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return secrets.token_urlsafe(24), secrets.token_urlsafe(24), verifier, challenge


async def authorization_url(http: aiohttp.ClientSession, p: Provider, *, redirect_uri: str, state: str, nonce: str,
                            challenge: str) -> str:
    meta = await discover(http, p)
    query = {"response_type": "code", "client_id": p.client_id, "redirect_uri": redirect_uri,
             "scope": "openid profile email", "state": state, "nonce": nonce, "code_challenge": challenge,
             "code_challenge_method": "S256"}
    sep = "&" if "?" in meta["authorization_endpoint"] else "?"
    return f"{meta['authorization_endpoint']}{sep}{urlencode(query)}"


async def exchange(http: aiohttp.ClientSession, p: Provider, *, code: str, redirect_uri: str, verifier: str) -> str:
    """The ID token for an authorization code (client_secret_basic)."""
    meta = await discover(http, p)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    headers = {}
    if p.client_secret:  # client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1)
        pair = f"{quote_plus(p.client_id)}:{quote_plus(p.client_secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form["client_id"] = p.client_id
    try:
        async with http.post(meta["token_endpoint"], data=form, headers=headers, timeout=TIMEOUT) as resp:
            body = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SsoRefused(f"Le fournisseur d'identité est injoignable (jeton) : {exc}") from exc
    if status != 200:
        error = body.get("error", "") if isinstance(body, dict) else ""
        if error == "invalid_grant":
            raise SsoRefused("Le code de connexion a déjà servi ou a expiré : recommencez la connexion.")
        raise SsoRefused(f"Le fournisseur d'identité a refusé l'échange du code ({status} {error}).".replace(" )",
                                                                                                             ")"))
    if not isinstance(body, dict) or not body.get("id_token"):
        raise SsoRefused("Le fournisseur d'identité n'a pas renvoyé de jeton d'identité.")
    return str(body["id_token"])


async def check_id_token(http: aiohttp.ClientSession, p: Provider, id_token: str, *, nonce: str,
                         now: float | None = None) -> dict[str, Any]:
    """The ID token's claims once every check passed; SsoRefused naming the first that failed."""
    key_set = await keys(http, p)
    try:
        try:
            token = jwt.decode(id_token, key_set, algorithms=ALGORITHMS)
        except JoseError as exc:
            if "kid" not in str(exc).lower() and "key" not in str(exc).lower():
                raise
            token = jwt.decode(id_token, await keys(http, p, refresh=True), algorithms=ALGORITHMS)
    except JoseError as exc:
        log.warning("oidc.bad_signature", error=str(exc))
        raise SsoRefused(f"Jeton d'identité invalide : signature ou algorithme refusé ({exc.error}).") from exc
    claims = token.claims
    registry = jwt.JWTClaimsRegistry(now=int(now) if now else None, leeway=LEEWAY,
                                     iss={"essential": True, "value": p.issuer},
                                     exp={"essential": True}, iat={"essential": True},
                                     nonce={"essential": True, "value": nonce})
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise SsoRefused(f"Jeton d'identité invalide : {exc.description or exc.error}.") from exc
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if p.client_id not in audiences:
        raise SsoRefused("Jeton d'identité invalide : il n'est pas destiné à flowbus (aud).")
    if len(audiences) > 1 and claims.get("azp") != p.client_id:
        raise SsoRefused("Jeton d'identité invalide : partie autorisée (azp) différente de flowbus.")
    if not claims.get(p.claim):
        raise SsoRefused(f"Le jeton d'identité ne contient pas la donnée « {p.claim} » qui désigne le compte.")
    return claims


async def health(http: aiohttp.ClientSession, settings: Any) -> tuple[bool, str]:
    """For doctor: discovery and keys reachable."""
    p = Provider(settings.oidc_issuer.rstrip("/"), settings.oidc_client_id, "", settings.oidc_claim)
    try:
        await keys(http, p)
    except SsoRefused as exc:
        return False, exc.message
    return True, f"OpenID Connect {p.issuer}: discovery and keys reachable"
