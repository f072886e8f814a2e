"""S²LOW HTTP client: one method per endpoint of the legacy API (tdt.md §3).

Authentication as S²LOW does it: a TLS client certificate (PKCS#12 or PEM) always, plus HTTP
Basic login/password when several accounts share the certificate, or (setting ``auth_method:
nounce``) a single-use nonce per request: ``get-nounce.php`` then ``nounce``, ``login`` and
``hash = sha256(password:nounce)`` in the query.  ``forward_x509_certificate``: the agent's RGS**
certificate sent in the ``org.s2low.forward-x509-identification`` header.  Replies are ISO-8859-1:
``OK\\n<payload>`` / ``KO\\n<message>`` for ACTES, small XML documents for Hélios.

Errors: network failures and HTTP 5xx raise ``TransientError``; 4xx and a bad configuration
raise ``PermanentError``; a ``KO`` answer raises ``S2lowKO`` (a PermanentError carrying the
TdT's message).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import hashlib
import re
import ssl
import tempfile
import time
from urllib.parse import unquote, urlencode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from lxml import etree

from flowbus.connectors.tdt.actes import Acte, ActeFile
from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import STRICT, OutboundPolicy, client_session

log = structlog.get_logger(__name__)

ACTES_STATUS = {-1: "Erreur", 0: "Annulé", 1: "Posté", 2: "En attente de transmission", 3: "Transmis",
                4: "Acquittement reçu", 5: "Validé", 6: "Refusé", 7: "Document reçu", 8: "Acquittement envoyé",
                9: "Document envoyé", 10: "Refus d'envoi", 11: "Acquittement de document reçu",
                12: "Envoyé au SAE", 13: "Archivé par le SAE", 14: "Erreur lors de l'archivage", 16: "Détruite",
                17: "En attente d'être postée", 18: "En attente d'être signée", 19: "En attente de transmission au SAE",
                20: "Erreur lors de l'envoi au SAE", 21: "Document reçu (pas d'AR)",
                22: "Erreur SAE : documents indisponibles"}
# an acknowledged act that S²LOW has since moved to its own archiving (tdt.md §3.5): the AR was received
ACTES_ARCHIVING = frozenset({12, 13, 14, 19, 20, 22})
HELIOS_STATUS = {-1: "Erreur", 0: "Annulé", 1: "Posté", 2: "En attente de transmission", 3: "Transmis",
                 4: "Acquitté", 5: "Validé", 6: "Refusé", 7: "En traitement", 8: "Information disponible",
                 9: "Envoyé au SAE", 10: "Accepté par le SAE", 11: "Refusé par le SAE", 13: "En attente d'être signé",
                 14: "En attente d'être posté", 19: "En attente de transmission au SAE",
                 20: "Erreur lors de l'envoi au SAE", 22: "Détruit", 24: "Transmis sans acquittement"}
# a PES whose acquit came, then moved to S²LOW's archiving: the acquit is still read from the transaction
HELIOS_ARCHIVING = frozenset({9, 10, 11, 19, 20})
FORWARD_HEADER = "org.s2low.forward-x509-identification"
AUTH_METHODS = ("basic", "nounce")
CONFIRM_PATH = "/modules/actes/actes_transac_post_confirm_api.php"
DUPLICATE_NUMBER = re.compile(r"num[ée]ro.*(d[ée]j[àa]|existe)|d[ée]j[àa].*num[ée]ro|unique", re.I)


class S2lowKO(PermanentError):
    """S²LOW answered ``KO``: the request is refused for a reason in ``message``."""

    title = "Refus du TdT"
    type_slug = "tdt-refused"


@dataclass(frozen=True)
class ConnectionInfo:
    """What S²LOW says of this connection (``info-connexion.php``)."""

    login: str
    user_name: str
    email: str
    authority_id: str
    authority_name: str
    departement: str


@dataclass(frozen=True)
class ActeStatus:
    transaction_id: str
    status: int
    payload: bytes  # the flux_retour of that status (ARActe when 4), or the error message when -1

    @property
    def label(self) -> str:
        return ACTES_STATUS.get(self.status, f"statut {self.status}")

    @property
    def message(self) -> str:
        return self.payload.decode("iso-8859-1").strip()


@dataclass(frozen=True)
class PesStatus:
    transaction_id: str
    status: int
    message: str

    @property
    def label(self) -> str:
        return HELIOS_STATUS.get(self.status, f"statut {self.status}")


def client_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """S2lowClient keyword arguments from connector settings (TLS, Basic or nonce, forwarded certificate)."""
    has_cert = bool(settings.get("client_cert_p12_base64") or settings.get("client_cert_path"))
    return {"login": settings.get("login") or None, "password": settings.get("password") or None,
            "ssl_ctx": ssl_context(settings), "timeout": float(settings.get("timeout", 120)),
            "auth_method": str(settings.get("auth_method") or "basic"),
            "forward_certificate": forwarded_certificate(settings), "client_certificate": has_cert}


def forwarded_certificate(settings: Mapping[str, Any]) -> bytes | None:
    """DER of ``forward_x509_certificate`` (PEM or base64 DER), sent as the agent's RGS** identity."""
    raw = str(settings.get("forward_x509_certificate") or "").strip()
    if not raw:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    try:
        cert = x509.load_pem_x509_certificate(raw.encode()) if raw.startswith("-----BEGIN") \
            else x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
    except ValueError as exc:
        raise PermanentError("certificat RGS** à transmettre illisible (PEM ou DER en base64 attendu)",
                             field="forward_x509_certificate") from exc
    return cert.public_bytes(Encoding.DER)


def ssl_context(settings: Mapping[str, Any]) -> ssl.SSLContext | bool | None:
    """TLS context from connector settings: client certificate (PKCS#12 base64/path or PEM), CA, verify_tls.

    Returns None for plain http URLs without a certificate (the simulator in tests).
    """
    p12_b64 = settings.get("client_cert_p12_base64")
    cert_path = settings.get("client_cert_path")
    password = settings.get("client_cert_password") or None
    verify = settings.get("verify_tls", True)
    if isinstance(verify, str):
        verify = verify.strip().lower() not in ("0", "false", "no", "non")
    if not p12_b64 and not cert_path and str(settings.get("url", "")).startswith("http://"):
        return None
    ctx = ssl.create_default_context(cafile=settings.get("ca_path") or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if p12_b64 or (cert_path and str(cert_path).lower().endswith((".p12", ".pfx"))):
        try:
            raw = base64.b64decode(p12_b64) if p12_b64 else Path(cert_path).read_bytes()
        except (OSError, ValueError) as exc:
            field = "client_cert_p12_base64" if p12_b64 else "client_cert_path"
            raise PermanentError(f"certificat client illisible : {exc}", field=field) from exc
        _load_p12(ctx, raw, password)
    elif cert_path:
        try:
            ctx.load_cert_chain(cert_path, password=password)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentError(f"certificat client PEM {cert_path!r} illisible (certificat + clé attendus) : {exc}",
                                 field="client_cert_path") from exc
    return ctx


def _load_p12(ctx: ssl.SSLContext, raw: bytes, password: str | None) -> None:
    from cryptography.hazmat.primitives.serialization import (BestAvailableEncryption, Encoding, PrivateFormat,
                                                              pkcs12)
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(raw, password.encode() if password else None)
    except ValueError as exc:
        raise PermanentError("certificat PKCS#12 illisible : mot de passe faux ou fichier corrompu",
                             field="client_cert_password") from exc
    if key is None or cert is None:
        raise PermanentError("le PKCS#12 ne contient pas de clé privée et de certificat", field="client_cert_p12_base64")
    # ssl can only load files: write the chain and an encrypted key to a private temporary directory.
    secret = base64.b64encode(os.urandom(24))
    with tempfile.TemporaryDirectory(prefix="flowbus-s2low-") as tmp:
        pem = Path(tmp) / "client.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(cert.public_bytes(Encoding.PEM))
            for extra in chain or ():
                out.write(extra.public_bytes(Encoding.PEM))
            out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret)))
        ctx.load_cert_chain(pem, password=secret)


class S2lowClient:
    """Client of one S²LOW account.  ``session`` is shared (runtime.http) or owned when omitted."""

    def __init__(self, url: str, *, session: aiohttp.ClientSession | None = None, login: str | None = None,
                 password: str | None = None, ssl_ctx: ssl.SSLContext | bool | None = None,
                 timeout: float = 120.0, outbound: OutboundPolicy = STRICT, auth_method: str = "basic",
                 forward_certificate: bytes | None = None, client_certificate: bool | None = None) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise PermanentError(f"URL S²LOW {url!r} invalide : attendu https://…", field="url")
        self.url = url.rstrip("/")
        self._session = session
        self._owned = session is None
        self._outbound = outbound  # for the session this client opens itself
        # HTTP Basic as S²LOW reads it (PHP_AUTH_USER / PHP_AUTH_PW), credentials in ISO-8859-1.
        self._headers = {"Authorization": "Basic " + base64.b64encode(
            f"{login}:{password or ''}".encode("iso-8859-1", "replace")).decode("ascii")} if login else {}
        self._ssl = ssl_ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        if auth_method not in AUTH_METHODS:
            raise PermanentError(f"méthode d'authentification S²LOW {auth_method!r} inconnue : basic ou nounce",
                                 field="auth_method")
        if auth_method == "nounce" and not login:
            raise PermanentError("l'authentification par nonce demande l'identifiant et le mot de passe",
                                 field="login")
        self._nounce = auth_method == "nounce"
        self._login, self._password = login or "", password or ""
        if forward_certificate:
            self._headers = {**self._headers, FORWARD_HEADER: base64.b64encode(forward_certificate).decode("ascii")}
        # whether a client certificate is configured (None: unknown): names the cause of a refused handshake
        self._client_certificate = client_certificate
        self.last_location = ""  # Location of the last answer (post_confirm reads S²LOW's redirect)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], session: aiohttp.ClientSession | None = None, *,
                      outbound: OutboundPolicy = STRICT) -> S2lowClient:
        return cls(str(settings.get("url") or ""), session=session, **client_options(settings), outbound=outbound)

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> S2lowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- transport ---------------------------------------------------------------------------

    async def _nonce_params(self) -> dict[str, str]:
        """A fresh single-use nonce (asked with Basic) and the query parameters that prove the password."""
        body = await self._send("GET", "/api/get-nounce.php", what="demande de nonce", headers=self._headers)
        try:
            nonce = str(json.loads(body.decode("utf-8"))["nounce"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"réponse S²LOW illisible (demande de nonce) : {body[:120]!r}") from exc
        digest = hashlib.sha256(f"{self._password}:{nonce}".encode("iso-8859-1", "replace")).hexdigest()
        return {"nounce": nonce, "login": self._login, "hash": digest}

    async def _request(self, method: str, path: str, *, what: str, params: Mapping[str, Any] | None = None,
                       data: Any = None, redirects: bool = True) -> bytes:
        if not self._nounce:
            return await self._send(method, path, what=what, params=params, data=data, headers=self._headers,
                                    redirects=redirects)
        headers = {k: v for k, v in self._headers.items() if k != "Authorization"}
        return await self._send(method, path, what=what, params={**(params or {}), **await self._nonce_params()},
                                data=data, headers=headers, redirects=redirects)

    async def _send(self, method: str, path: str, *, what: str, params: Mapping[str, Any] | None = None,
                    data: Any = None, headers: Mapping[str, str], redirects: bool = True) -> bytes:
        if self._session is None:
            self._session = client_session(self._outbound)
        url = f"{self.url}{path}"
        kwargs: dict[str, Any] = {"params": params, "data": data, "headers": headers, "timeout": self._timeout,
                                  "allow_redirects": redirects}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        started = time.monotonic()
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                body = await resp.read()
                status = resp.status
                self.last_location = resp.headers.get("Location", "")
        except aiohttp.ClientConnectorCertificateError as exc:
            log.warning("s2low.server_certificate_refused", path=path)
            raise PermanentError(f"le certificat du serveur S²LOW n'est pas reconnu ({what}) : "
                                 f"{exc.certificate_error}", field="ca_path",
                                 hint="indiquez l'autorité de certification du serveur S²LOW (fichier PEM)") from exc
        except aiohttp.ServerDisconnectedError as exc:
            if self.url.startswith("https://") and self._client_certificate is False:
                # TLS 1.3: a server that requires a client certificate closes the connection after the handshake
                log.warning("s2low.no_client_certificate", path=path)
                raise PermanentError(f"S²LOW a fermé la connexion TLS ({what}) : aucun certificat client n'est "
                                     "configuré, or S²LOW exige un certificat d'authentification",
                                     field="client_cert_p12_base64",
                                     hint="déposez le certificat client (PKCS#12) du connecteur et son mot de passe"
                                     ) from exc
            log.warning("s2low.unreachable", method=method, path=path, error=type(exc).__name__)
            raise TransientError(f"S²LOW a fermé la connexion ({what})",
                                 hint=f"vérifiez que {self.url} répond ; sur une connexion TLS, que S²LOW accepte "
                                      "le certificat client") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("s2low.unreachable", method=method, path=path, error=type(exc).__name__)
            raise TransientError(f"S²LOW injoignable ({what}) : {type(exc).__name__} {exc}".strip(),
                                 hint=f"vérifiez que {self.url} répond") from exc
        # path only: the query may carry a nonce, and no header or setting is ever logged
        log.debug("s2low.request", method=method, path=path, status=status, bytes=len(body),
                  duration_ms=round((time.monotonic() - started) * 1000, 1))
        if status >= 500:
            raise TransientError(f"S²LOW a répondu HTTP {status} ({what})", hint="le TdT est en panne ; nouvel essai")
        if status in (401, 403):
            said = body.decode("iso-8859-1", "replace").strip().removeprefix("KO").strip().splitlines()
            reason = f" : {said[0][:200]}" if said and "<" not in said[0] else ""
            field = "client_cert_p12_base64" if "certificat client" in reason.lower() else "login"
            raise PermanentError(f"S²LOW refuse l'authentification (HTTP {status}, {what}){reason}", field=field,
                                 hint="vérifiez le certificat client, l'identifiant et le mot de passe du connecteur")
        if status == 404:
            raise PermanentError(f"S²LOW : {path} introuvable (HTTP 404, {what})", field="url",
                                 hint="vérifiez l'URL du connecteur")
        if status >= 400:
            raise PermanentError(f"S²LOW a répondu HTTP {status} ({what}) : {body[:200]!r}")
        return body

    @staticmethod
    def _ok(body: bytes, what: str) -> list[bytes]:
        """Split an ``OK\\n…`` answer into lines; ``KO\\n<message>`` raises S2lowKO."""
        lines = body.split(b"\n")
        head = lines[0].strip()
        if head.startswith(b"OK"):
            return lines
        message = body.decode("iso-8859-1").strip()
        if head.startswith(b"KO"):
            message = message[2:].strip()
        raise S2lowKO(f"S²LOW a refusé ({what}) : {message or 'réponse vide'}")

    # ---- probes and classification ----------------------------------------------------------

    async def test_connexion(self) -> bool:
        body = await self._request("GET", "/api/test-connexion.php", what="test de connexion")
        return body.strip().startswith(b"OK")

    async def info_connexion(self) -> ConnectionInfo:
        """Who S²LOW sees behind this connection: the user and his collectivité."""
        data = _json(await self._request("GET", "/api/info-connexion.php", what="informations de connexion"),
                     "informations de connexion")
        user, authority = data.get("user_info") or {}, data.get("authority_info") or {}
        return ConnectionInfo(str(user.get("login") or ""), str(user.get("name") or ""), str(user.get("email") or ""),
                              str(authority.get("id") or ""), str(authority.get("name") or ""),
                              str(authority.get("department") or ""))

    async def test_rgs(self) -> bool:
        """Whether S²LOW sees this connection as RGS** (the certificate, or the forwarded one)."""
        body = await self._request("GET", "/api/test-rgs.php", what="test RGS")
        return body.strip().startswith(b"OK")

    async def list_logins(self) -> list[str]:
        """The logins of the accounts that share this client certificate (``api-list-login.php``)."""
        body = await self._request("GET", "/admin/users/api-list-login.php", what="comptes du certificat")
        return [line.strip() for line in body.decode("iso-8859-1").splitlines() if line.strip()]

    async def get_classification(self) -> bytes:
        body = await self._request("GET", "/modules/actes/actes_classification_fetch.php", params={"api": 1},
                                   what="classification")
        if body.lstrip().startswith(b"KO"):
            self._ok(body, "classification")
        return body

    async def request_classification(self) -> str:
        body = await self._request("GET", "/modules/actes/actes_classification_request.php", params={"api": 1},
                                   what="demande de classification")
        return self._ok(body, "demande de classification")[1].decode().strip()

    # ---- ACTES ------------------------------------------------------------------------------

    async def post_acte(self, acte: Acte, *, en_attente: bool = False) -> str:
        """POST ``actes_transac_create.php``; returns the transaction id."""
        if acte.document is None:
            raise PermanentError("le fichier de l'acte (PDF) est manquant", field="document")
        form = aiohttp.FormData()
        fields: list[tuple[str, str]] = [
            ("api", "1"), ("nature_code", str(acte.nature_code)), ("number", acte.numero_interne),
            ("decision_date", acte.decision_date.isoformat()), ("subject", acte.objet),
            ("document_papier", "1" if acte.document_papier else "0"), ("en_attente", "1" if en_attente else "0"),
            ("type_acte", acte.document.type_pj or "")]
        fields += [(f"classif{i}", str(code)) for i, code in enumerate(acte.matiere, start=1)]
        fields += [("type_pj[]", a.type_pj or "") for a in acte.annexes]
        for name, value in fields:
            form.add_field(name, value)
        _add_file(form, "acte_pdf_file", acte.document)
        for annex in acte.annexes:
            _add_file(form, "acte_attachments[]", annex)
        body = await self._request("POST", "/modules/actes/actes_transac_create.php", data=form,
                                   what=f"dépôt de l'acte {acte.numero_interne}")
        return self._ok(body, f"dépôt de l'acte {acte.numero_interne}")[1].decode().strip()

    async def get_acte_status(self, transaction_id: str) -> ActeStatus:
        body = await self._request("GET", "/modules/actes/actes_transac_get_status.php",
                                   params={"transaction": transaction_id}, what=f"statut {transaction_id}")
        lines = self._ok(body, f"statut de la transaction {transaction_id}")
        try:
            status = int(lines[1].strip())
        except (IndexError, ValueError) as exc:
            raise TransientError(f"réponse de statut S²LOW inattendue : {body[:100]!r}") from exc
        return ActeStatus(transaction_id, status, b"\n".join(lines[2:]).strip())

    def confirm_url(self, transaction_id: str, url_return: str) -> str:
        """Where the agent's browser confirms an act posted ``en_attente`` with his RGS** certificate (17 → 1);
        S²LOW then sends him to ``url_return`` with %%ERROR%% and %%MESSAGE%% replaced."""
        return f"{self.url}{CONFIRM_PATH}?" + urlencode({"id": transaction_id, "url_return": url_return})

    async def post_confirm(self, transaction_id: str) -> None:
        """Confirm an act posted ``en_attente`` over this connection (RGS** certificate, or forwarded one)."""
        marker = "s2low-confirm:%%ERROR%%:%%MESSAGE%%"
        body = await self._request("GET", CONFIRM_PATH, params={"id": transaction_id, "url_return": marker},
                                   what=f"confirmation de {transaction_id}", redirects=False)
        location = self.last_location
        if location.startswith("s2low-confirm:"):
            _, error, message = location.split(":", 2)
            if error != "0":
                raise S2lowKO(f"S²LOW n'a pas confirmé la transaction {transaction_id} : {unquote(message)}")
            return
        self._ok(body, f"confirmation de la transaction {transaction_id}")

    async def get_tampon(self, transaction_id: str) -> bytes:
        """The stamped act (S²LOW < 2, ``actes_transac_get_tampon.php``)."""
        body = await self._request("GET", "/modules/actes/actes_transac_get_tampon.php",
                                   params={"transaction": transaction_id}, what=f"acte tamponné {transaction_id}")
        if not body.startswith(b"%PDF"):
            self._ok(body, f"acte tamponné de la transaction {transaction_id}")
            raise S2lowKO(f"S²LOW n'a pas rendu de PDF pour l'acte tamponné {transaction_id}")
        return body

    async def actes_statuses(self) -> dict[int, str]:
        """S²LOW's own list of ACTES statuses (``api/actes_status.php``)."""
        rows = _json(await self._request("GET", "/modules/actes/api/actes_status.php", what="statuts ACTES"),
                     "statuts ACTES")
        return {int(r["id"]): str(r.get("name") or "") for r in rows}

    async def number_actes(self, status_id: int) -> int:
        """How many acts of this collectivité are in ``status_id`` (``api/number_actes.php``)."""
        data = _json(await self._request("GET", "/modules/actes/api/number_actes.php",
                                         params={"status_id": status_id}, what="nombre d'actes"), "nombre d'actes")
        return int(data.get("nb_transactions") or 0)

    async def cancel_acte(self, transaction_id: str) -> str:
        """POST ``actes_transac_cancel.php``; returns the id of the cancellation transaction."""
        body = await self._request("POST", "/modules/actes/actes_transac_cancel.php",
                                   data={"api": "1", "id": transaction_id}, what=f"annulation {transaction_id}")
        return self._ok(body, f"annulation de la transaction {transaction_id}")[1].decode().strip()

    async def list_actes(self, *, status_id: int | None = None, offset: int = 0, limit: int = 100) -> list[dict]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status_id is not None:
            params["status_id"] = status_id
        body = await self._request("GET", "/modules/actes/api/list_actes.php", params=params, what="liste des actes")
        return _json(body, "liste des actes")

    async def find_acte(self, number: str, *, page: int = 100) -> dict | None:
        """The transmission (type 1) carrying ``number`` (S²LOW keeps numbers unique per authority)."""
        offset = 0
        while True:
            rows = await self.list_actes(offset=offset, limit=page)
            for row in rows:
                if str(row.get("number")) == number and str(row.get("type", "1")) == "1":
                    return row
            if len(rows) < page:
                return None
            offset += page

    async def get_bordereau(self, transaction_id: str) -> bytes:
        return await self._request("GET", "/modules/actes/actes_create_pdf.php", params={"trans_id": transaction_id},
                                   what=f"bordereau d'acquittement {transaction_id}")

    async def list_files(self, transaction_id: str) -> list[dict]:
        body = await self._request("GET", "/modules/actes/actes_transac_get_files_list.php",
                                   params={"transaction": transaction_id}, what=f"fichiers {transaction_id}")
        if body.lstrip().startswith(b"KO"):
            self._ok(body, f"fichiers de la transaction {transaction_id}")
        return _json(body, "liste des fichiers")

    async def download_file(self, file_id: str, *, tampon: bool = False) -> bytes:
        params = {"file": file_id}
        if tampon:
            params["tampon"] = "true"
        return await self._request("GET", "/modules/actes/actes_download_file.php", params=params,
                                   what=f"fichier {file_id}")

    async def related_documents(self, transaction_id: str) -> list[tuple[int, int, str]]:
        """Préfecture messages linked to an act: (type, status, transaction id) per line."""
        body = await self._request("GET", "/modules/actes/actes_transac_get_document.php",
                                   params={"id": transaction_id}, what=f"documents liés à {transaction_id}")
        out = []
        for line in body.decode("iso-8859-1").split("\n"):
            parts = line.strip().split("-")
            if len(parts) == 3 and parts[0].isdigit():
                out.append((int(parts[0]), int(parts[1]), parts[2]))
        return out

    async def get_prefecture_document(self, transaction_id: str) -> bytes:
        """The tar.gz the préfecture sent for a type 2/3/4/5 transaction."""
        return await self._request("GET", "/modules/actes/actes_transac_get_document.php",
                                   params={"id": transaction_id}, what=f"document préfecture {transaction_id}")

    async def list_prefecture_documents(self) -> list[dict]:
        body = await self._request("GET", "/modules/actes/api/list_document_prefecture.php",
                                   what="documents de la préfecture non lus")
        return _json(body, "documents de la préfecture")

    async def mark_prefecture_document_read(self, transaction_id: str) -> None:
        body = await self._request("GET", "/modules/actes/api/document_prefecture_mark_as_read.php",
                                   params={"transaction_id": transaction_id}, what=f"marquer lu {transaction_id}")
        if _json(body, "marquer lu").get("result") != "ok":
            raise S2lowKO(f"S²LOW n'a pas marqué le document {transaction_id} comme lu : {body[:200]!r}")

    async def reply_prefecture(self, transaction_id: str, type_envoie: int, document: ActeFile,
                               annexes: Sequence[ActeFile] = ()) -> str:
        """Answer a préfecture letter (2-2, 3-3 refus, 3-4 envoi, 4-3 rejet, 4-4 réponse)."""
        form = aiohttp.FormData()
        form.add_field("api", "1")
        form.add_field("id", transaction_id)
        form.add_field("type_envoie", str(type_envoie))
        form.add_field("type_acte", document.type_pj or "")
        for annex in annexes:
            form.add_field("type_pj[]", annex.type_pj or "")
        _add_file(form, "acte_pdf_file", document)
        for annex in annexes:
            _add_file(form, "acte_attachments[]", annex)
        body = await self._request("POST", "/modules/actes/actes_transac_reponse_create.php", data=form,
                                   what=f"réponse à {transaction_id}")
        return self._ok(body, f"réponse au courrier {transaction_id}")[1].decode().strip()

    # ---- HELIOS -----------------------------------------------------------------------------

    async def post_pes(self, content: bytes, filename: str) -> str:
        form = aiohttp.FormData()
        form.add_field("enveloppe", content, filename=filename, content_type="application/xml")
        body = await self._request("POST", "/modules/helios/api/helios_importer_fichier.php", data=form,
                                   what=f"dépôt du PES {filename}")
        root = _xml(body, "dépôt du PES")
        if root.findtext("resultat") != "OK":
            raise S2lowKO(f"S²LOW a refusé le PES {filename} : {root.findtext('message') or 'KO'}")
        return (root.findtext("id") or "").strip()

    async def get_pes_status(self, transaction_id: str) -> PesStatus:
        body = await self._request("GET", "/modules/helios/api/helios_transac_get_status.php",
                                   params={"transaction": transaction_id}, what=f"statut PES {transaction_id}")
        root = _xml(body, "statut PES")
        if root.findtext("resultat") != "OK":
            raise S2lowKO(f"S²LOW : statut du PES {transaction_id} indisponible : {root.findtext('message')}")
        return PesStatus(transaction_id, int(root.findtext("status") or "-1"), root.findtext("message") or "")

    async def get_pes_acquit(self, transaction_id: str) -> bytes:
        body = await self._request("GET", "/modules/helios/helios_download_acquit.php", params={"id": transaction_id},
                                   what=f"acquit PES {transaction_id}")
        if b"PES_ACQUIT" not in body[:2000] and b"PES_NONACQUIT" not in body[:2000]:
            raise TransientError(f"S²LOW n'a pas encore l'acquit du PES {transaction_id}")
        return body

    async def list_pes_retour(self) -> list[dict]:
        body = await self._request("GET", "/modules/helios/api/helios_get_list.php", what="liste des PES_Retour")
        root = _xml(body, "liste des PES_Retour")
        if root.findtext("resultat") not in (None, "OK"):
            raise S2lowKO(f"S²LOW : liste des PES_Retour indisponible : {root.findtext('message')}")
        return [{"id": r.findtext("id"), "nom": r.findtext("nom"), "date": r.findtext("date")}
                for r in root.findall("pes_retour")]

    async def get_pes_retour(self, retour_id: str) -> bytes:
        body = await self._request("GET", "/modules/helios/api/helios_get_retour.php", params={"id": retour_id},
                                   what=f"PES_Retour {retour_id}")
        if b"<get_retour" in body[:300]:
            raise S2lowKO(f"S²LOW : PES_Retour {retour_id} indisponible : {_xml(body, 'PES_Retour').findtext('message')}")
        return body

    async def mark_pes_retour_read(self, retour_id: str) -> None:
        body = await self._request("GET", "/modules/helios/api/helios_change_status.php", params={"id": retour_id},
                                   what=f"PES_Retour {retour_id} lu")
        root = _xml(body, "marquer le PES_Retour lu")
        if root.findtext("resultat") != "OK":
            raise S2lowKO(f"S²LOW n'a pas marqué le PES_Retour {retour_id} lu : {root.findtext('message')}")


def _add_file(form: aiohttp.FormData, name: str, f: ActeFile) -> None:
    form.add_field(name, f.content, filename=Path(f.filename).name or "document.pdf",
                   content_type=f.media_type or "application/octet-stream")


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        text = body.decode("iso-8859-1").strip()
        if text.startswith("KO"):
            raise S2lowKO(f"S²LOW a refusé ({what}) : {text[2:].strip()}") from exc
        raise TransientError(f"réponse S²LOW illisible ({what}) : {text[:120]!r}") from exc


def _xml(body: bytes, what: str) -> etree._Element:
    try:
        return etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise TransientError(f"réponse S²LOW illisible ({what}) : {body[:120]!r}") from exc
