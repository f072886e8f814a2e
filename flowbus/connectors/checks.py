"""« Tester » a connector instance: the real check of its kind (S²LOW test-connexion, SMTP EHLO and AUTH, i-Parapheur token and desks, WebDAV PROPFIND, S3 bucket, As@lae ping, PKCS#12), answered in plain French.

Nothing is sent on anyone's behalf: no mail, no act, no folder. A test connector says that it
contacted nobody — never that all is well.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import structlog

from flowbus.errors import FlowbusError, PermanentError
from flowbus.outbound import OutboundPolicy, OutboundRefused, endpoint_host, open_socket

log = structlog.get_logger(__name__)
TIMEOUT = 15.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool | None  # None: nothing was checked (test connector)
    message: str
    detail: str = ""


def _fail(message: str, detail: str = "") -> CheckResult:
    return CheckResult(False, message, detail)


def _unreachable(what: str, exc: BaseException) -> CheckResult:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return _fail(f"{what} ne répond pas dans les {int(TIMEOUT)} secondes.", "vérifiez l'adresse, le port et le "
                                                                                "pare-feu")
    return _fail(f"{what} injoignable : {exc}".rstrip(" :"), "vérifiez l'adresse et le port")


async def _smtp(s: dict[str, Any], outbound: OutboundPolicy) -> CheckResult:
    use_tls = str(s.get("use_tls", "")).lower() in ("1", "true", "on", "oui")
    starttls = s.get("starttls")
    port = int(s.get("port") or (465 if use_tls else 25))
    host = str(s.get("host", ""))
    where = f"Le serveur SMTP {s.get('host')}:{port}"
    try:
        sock = await open_socket(outbound, host, port, timeout=TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        return _unreachable(where, exc)
    client = aiosmtplib.SMTP(hostname=host, sock=sock, use_tls=use_tls,
                             start_tls=None if starttls in (None, "", "auto") else str(starttls).lower() == "true",
                             timeout=TIMEOUT)
    try:
        await client.connect()
        await client.ehlo()
        if s.get("username"):
            await client.login(str(s["username"]), str(s.get("password") or ""))
        await client.quit()
    except aiosmtplib.SMTPAuthenticationError as exc:
        return _fail(f"Authentification refusée par le serveur SMTP ({exc.code}) : vérifiez l'identifiant et le mot "
                     "de passe.", exc.message)
    except aiosmtplib.SMTPConnectError as exc:
        return _unreachable(where, exc)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
            return _unreachable(where, asyncio.TimeoutError())
        return _fail(f"{where} a refusé la connexion : {exc}")
    finally:
        if client.is_connected:
            client.close()
    auth = f", authentifié en tant que « {s['username']} »" if s.get("username") else ", sans authentification"
    return CheckResult(True, f"{where} répond{auth}.", "aucun message n'a été envoyé")


async def _s2low(s: dict[str, Any], http: aiohttp.ClientSession | None) -> CheckResult:
    """test-connexion, then who S²LOW sees (info-connexion) and whether the connection is RGS** (test-rgs)."""
    from flowbus.connectors.tdt.s2low import S2lowClient
    try:
        client = S2lowClient.from_settings({**s, "timeout": TIMEOUT}, session=http)
        try:
            ok = await client.test_connexion()
            info = await client.info_connexion() if ok else None
            rgs = await client.test_rgs() if ok else False
            # acts posted en_attente that no agent confirmed yet (status 17)
            waiting = await client.number_actes(17) if ok and s.get("envoi_en_attente") else 0
        finally:
            await client.close()
    except PermanentError as exc:
        if exc.field == "client_cert_p12_base64":
            return _fail(f"S²LOW refuse la connexion : {exc.message}.", exc.hint or "")
        if exc.field == "login":
            logins = await _s2low_logins(s, http) if not s.get("login") else []
            if len(logins) > 1:
                return _fail(f"Plusieurs comptes S²LOW utilisent ce certificat ({', '.join(logins)}) : indiquez "
                             "l'identifiant et le mot de passe du compte à utiliser.", exc.message)
            return _fail("Authentification refusée par S²LOW : vérifiez le certificat client, l'identifiant et le "
                         "mot de passe.", exc.message)
        return _fail(exc.message, exc.hint or "")
    except FlowbusError as exc:
        return _fail(exc.message, exc.hint or "")
    if not ok or info is None:
        return _fail("S²LOW répond, mais pas « OK » au test de connexion.")
    who = f"« {info.login} »" + (f" ({info.user_name})" if info.user_name else "")
    where = f"pour « {info.authority_name} »" if info.authority_name else "sans collectivité"
    if rgs:
        rgs_text = "la connexion est RGS** : les actes peuvent être télétransmis directement"
    elif s.get("envoi_en_attente"):
        rgs_text = ("la connexion n'est pas RGS** : les actes seront déposés en attente et confirmés par un agent "
                    "muni de son certificat RGS**")
    else:
        rgs_text = ("la connexion n'est pas RGS** : si S²LOW l'exige pour télétransmettre, cochez « Confirmation "
                    "par un agent (RGS**) » ou transmettez le certificat RGS** d'un agent")
    if waiting:
        rgs_text += f" ; {waiting} acte(s) attendent sur S²LOW la confirmation d'un agent"
    return CheckResult(True, f"S²LOW ({s.get('url')}) accepte la connexion : compte {who} {where} ; {rgs_text}.",
                       f"test-connexion : OK ; test-rgs : {'OK' if rgs else 'KO'}")


async def _s2low_logins(s: dict[str, Any], http: aiohttp.ClientSession | None) -> list[str]:
    """The accounts sharing the client certificate (``api-list-login.php``); empty when S²LOW does not say."""
    from flowbus.connectors.tdt.s2low import S2lowClient
    try:
        async with S2lowClient.from_settings({**s, "timeout": TIMEOUT}, session=http) as client:
            return await client.list_logins()
    except FlowbusError:
        return []


async def _iparapheur(s: dict[str, Any], http: aiohttp.ClientSession) -> CheckResult:
    from flowbus.signature.iparapheur import IParapheurClient
    missing = [k for k in ("url", "username", "password", "tenant_id", "desk_id") if not s.get(k)]
    if missing:
        return _fail(f"Réglages manquants : {', '.join(missing)}.")
    client = IParapheurClient(str(s["url"]), str(s["username"]), str(s["password"]), tenant_id=str(s["tenant_id"]),
                              desk_id=str(s["desk_id"]), session=http, timeout=TIMEOUT,
                              verify_tls=str(s.get("verify_tls", True)).lower() not in ("false", "0", "no"))
    try:
        await client.token(force=True)
        desks = await client.list_desks()
    except FlowbusError as exc:
        if exc.field in ("username", "password") or "401" in exc.message or "invalid_grant" in exc.message:
            return _fail("Authentification refusée par i-Parapheur : vérifiez l'identifiant et le mot de passe.",
                         exc.message)
        return _fail(f"i-Parapheur : {exc.message}", exc.hint or "")
    names = [str(d.get("name", d.get("id"))) for d in desks]
    if not any(str(d.get("id")) == str(s["desk_id"]) for d in desks):
        return _fail(f"Connexion réussie, mais le bureau « {s['desk_id']} » n'est pas parmi les vôtres.",
                     "bureaux : " + ", ".join(names))
    return CheckResult(True, f"i-Parapheur accepte la connexion ; {len(desks)} bureau(x) accessible(s).",
                       ", ".join(names))


async def _webdav(s: dict[str, Any], http: aiohttp.ClientSession) -> CheckResult:
    headers = {"Depth": "0"}
    if s.get("username"):
        pair = f"{s['username']}:{s.get('password') or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    try:
        async with http.request("PROPFIND", str(s["url"]), headers=headers,
                                timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return _unreachable(f"Le serveur WebDAV {s.get('url')}", exc)
    if status in (401, 403):
        return _fail(f"Authentification refusée par le serveur WebDAV (HTTP {status}) : vérifiez l'identifiant et le "
                     "mot de passe.")
    if status == 404:
        return _fail("Le dossier WebDAV n'existe pas (HTTP 404) : vérifiez l'adresse.")
    if status != 207:
        return _fail(f"Le serveur ne répond pas comme un serveur WebDAV (HTTP {status} à PROPFIND).")
    return CheckResult(True, "Le dossier WebDAV est accessible.", "PROPFIND : 207 Multi-Status")


async def _s3(s: dict[str, Any]) -> CheckResult:
    from minio import Minio
    from minio.error import S3Error

    def probe() -> bool:
        client = Minio(str(s["endpoint"]), access_key=str(s["access_key"]), secret_key=str(s["secret_key"]),
                       secure=str(s.get("secure", False)).lower() in ("1", "true", "on", "oui"),
                       region=s.get("region") or None)
        return client.bucket_exists(str(s["bucket"]))

    try:
        exists = await asyncio.wait_for(asyncio.to_thread(probe), TIMEOUT)
    except S3Error as exc:
        if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            return _fail("Accès refusé par le serveur S3 : vérifiez la clé d'accès et la clé secrète.", exc.code)
        return _fail(f"Le serveur S3 a refusé : {exc.code}", exc.message or "")
    except Exception as exc:  # noqa: BLE001 - urllib3/minio raise many kinds of network errors
        return _unreachable(f"Le serveur S3 {s.get('endpoint')}", exc)
    if not exists:
        return _fail(f"Le compartiment « {s['bucket']} » n'existe pas.")
    return CheckResult(True, f"Le compartiment « {s['bucket']} » est accessible.")


def _directory(s: dict[str, Any]) -> CheckResult:
    path = Path(str(s.get("directory", "")))
    if not path.is_dir():
        return _fail(f"Le répertoire {path} n'existe pas sur le serveur.")
    if not os.access(path, os.W_OK):
        return _fail(f"flowbus ne peut pas écrire dans {path} : vérifiez les droits.")
    return CheckResult(True, f"Le répertoire {path} existe et flowbus peut y écrire.")


def _p12(s: dict[str, Any], prefix: str, password_key: str) -> CheckResult:
    from flowbus.signature.keys import load_pkcs12
    raw_b64, path = s.get(f"{prefix}p12_base64"), s.get(f"{prefix}p12_path")
    try:
        data = base64.b64decode(raw_b64) if raw_b64 else Path(str(path)).read_bytes() if path else None
    except (OSError, ValueError) as exc:
        return _fail(f"Le fichier du cachet est illisible : {exc}")
    if data is None:
        return _fail("Aucun cachet configuré (fichier PKCS#12).")
    try:
        key = load_pkcs12(data, s.get(password_key))
    except FlowbusError as exc:
        return _fail(f"Le cachet ne s'ouvre pas : {exc.message}")
    cert = key.certificate
    return CheckResult(True, f"Le cachet s'ouvre : « {cert.subject.rfc4514_string()} », valable jusqu'au "
                             f"{cert.not_valid_after_utc:%d/%m/%Y}.")


async def _asalae(s: dict[str, Any], http: aiohttp.ClientSession) -> CheckResult:
    from flowbus.archive.asalae import AsalaeClient
    client = AsalaeClient(str(s["url"]), str(s.get("login") or ""), str(s.get("password") or ""), session=http)
    try:
        await client.ping()
        versions = await client.versions()
    except PermanentError as exc:
        if exc.field == "login":
            return _fail("Authentification refusée par As@lae : vérifiez l'identifiant et le mot de passe.",
                         exc.message)
        return _fail(f"As@lae : {exc.message}")
    except FlowbusError as exc:
        return _fail(f"As@lae injoignable : {exc.message}")
    return CheckResult(True, "As@lae répond et accepte l'identifiant.", ", ".join(f"{k} {v}" for k, v in
                                                                                  versions.items()))


async def _http(s: dict[str, Any], http: aiohttp.ClientSession) -> CheckResult:
    try:
        async with http.request("OPTIONS", str(s["url"]), timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return _unreachable(f"L'application {s.get('url')}", exc)
    if status >= 500:
        return _fail(f"L'application répond, mais en erreur (HTTP {status}).")
    return CheckResult(True, f"L'application répond (HTTP {status} à OPTIONS).", "aucune notification envoyée")


async def test_instance(rt: Any, instance: Any) -> CheckResult:
    """Run the check of ``instance``'s kind with its settings; never raises for an outside failure."""
    s, kind, family = dict(instance.settings), instance.kind, instance.family
    http = rt.http
    try:
        if kind.startswith("test") or kind == "instant":
            return CheckResult(None, "Connecteur de test : aucun système extérieur n'a été contacté.",
                               "remplacez-le par un connecteur réel pour une installation en service")
        if kind == "smtp":
            return await _smtp(s, rt.outbound)
        if kind == "s2low":
            return await _s2low(s, http)
        if kind == "iparapheur":
            return await _iparapheur(s, http)
        if kind == "webdav":
            return await _webdav(s, http)
        if family == "ged" and kind == "s3":
            await rt.outbound.check_host(endpoint_host(str(s.get("endpoint", ""))), field="endpoint")
            return await _s3(s)
        if kind == "filesystem":
            return _directory(s)
        if kind == "seal":
            return _p12(s, "", "p12_password")
        if kind == "local":
            return _p12(s, "seal_", "seal_password")
        if kind == "asalae":
            return await _asalae(s, http)
        if kind == "store":
            health = await rt.blobs.check()
            seal = _p12(s, "seal_", "seal_p12_password") if (s.get("seal_p12_path") or s.get("seal_p12_base64")) \
                else CheckResult(False, "Aucun cachet configuré pour sceller les paquets.")
            if not health.ok:
                return _fail(f"Le stockage des archives ne répond pas : {health.detail}")
            return seal if not seal.ok else CheckResult(True, f"Stockage des archives disponible ; {seal.message}")
        if kind == "http":
            return await _http(s, http)
    except (ssl.SSLError, KeyError) as exc:
        return _fail(f"Réglage manquant ou invalide : {exc}")
    except OutboundRefused as exc:
        return _fail(exc.message, exc.hint or "")
    return CheckResult(None, f"Aucun test n'existe pour les connecteurs « {kind} ».")
