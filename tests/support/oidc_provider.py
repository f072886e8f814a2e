"""A small OpenID provider for tests, over real HTTP: discovery, JWKS, authorize (auto-approving one user, as
Keycloak does after its login page), token (client authentication, redirect URI, PKCE S256, single-use codes),
RS256 ID tokens — and the faults a test asks for (a token signed with another key, another audience, expired)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: str


@dataclass
class OidcProvider:
    client_id: str = "flowbus"
    client_secret: str = "secret-du-client"
    user: str = "camille"
    fault: str | None = None  # "forged" | "audience" | "expired" | "no-nonce"
    codes: dict[str, _Code] = field(default_factory=dict)
    redirects: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "cle-1", "use": "sig", "alg": "RS256"})
        self.other = RSAKey.generate_key(2048, parameters={"kid": "cle-1", "use": "sig", "alg": "RS256"})
        self.app = web.Application()
        self.app.router.add_get("/realms/collectivites/.well-known/openid-configuration", self.discovery)
        self.app.router.add_get("/realms/collectivites/certs", self.jwks)
        self.app.router.add_get("/realms/collectivites/auth", self.authorize)
        self.app.router.add_post("/realms/collectivites/token", self.token)
        self._runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/collectivites"

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self.issuer

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                                  "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/certs",
                                  "response_types_supported": ["code"], "subject_types_supported": ["public"],
                                  "id_token_signing_alg_values_supported": ["RS256"],
                                  "code_challenge_methods_supported": ["S256"],
                                  "token_endpoint_auth_methods_supported": ["client_secret_basic"]})

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.Response(status=400, text="unauthorized_client")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.Response(status=400, text="PKCE required")
        code = secrets.token_urlsafe(16)
        self.codes[code] = _Code(q["client_id"], q["redirect_uri"], q["code_challenge"], q.get("nonce", ""), self.user)
        target = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        self.redirects.append(target)
        raise web.HTTPFound(target)

    async def token(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if auth != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        code = self.codes.pop(str(form.get("code", "")), None)  # single use: a second exchange fails
        if code is None:
            return web.json_response({"error": "invalid_grant", "error_description": "Code not valid"}, status=400)
        if form.get("redirect_uri") != code.redirect_uri:
            return web.json_response({"error": "invalid_grant", "error_description": "Incorrect redirect_uri"},
                                     status=400)
        digest = base64.urlsafe_b64encode(hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest())
        if digest.rstrip(b"=").decode() != code.challenge:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE verification failed"},
                                     status=400)
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": f"sub-{code.user}", "aud": self.client_id,
                                  "azp": self.client_id, "iat": now, "exp": now + 300, "nonce": code.nonce,
                                  "preferred_username": code.user, "email": f"{code.user}@collectivite.fr"}
        if self.fault == "audience":
            claims["aud"] = "autre-application"
        if self.fault == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 1800
        if self.fault == "no-nonce":
            claims.pop("nonce")
        key = self.other if self.fault == "forged" else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "cle-1"}, claims, key)
        return web.json_response({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": id_token})
