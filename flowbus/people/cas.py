"""CAS 3.0 sign-in: send the person to the CAS server, then validate the service ticket it brings back (``/p3/serviceValidate``)."""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
import structlog
from lxml import etree

from flowbus.people.oidc import SsoRefused

log = structlog.get_logger(__name__)
NS = {"cas": "http://www.yale.edu/tp/cas"}
TIMEOUT = aiohttp.ClientTimeout(total=15)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
FAILURES = {"INVALID_TICKET": "le ticket est inconnu, expiré ou a déjà servi",
            "INVALID_SERVICE": "le ticket a été délivré pour un autre service",
            "INVALID_REQUEST": "la demande de validation est incomplète",
            "UNAUTHORIZED_SERVICE_PROXY": "service non autorisé", "INTERNAL_ERROR": "erreur interne du serveur CAS"}


def login_url(cas_url: str, service: str) -> str:
    return f"{cas_url.rstrip('/')}/login?{urlencode({'service': service})}"


async def validate(http: aiohttp.ClientSession, cas_url: str, *, service: str, ticket: str) -> str:
    """The CAS user name the ticket proves, or SsoRefused saying why in French."""
    if not ticket.startswith("ST-"):
        raise SsoRefused("Ticket CAS absent ou mal formé.")
    url = f"{cas_url.rstrip('/')}/p3/serviceValidate"
    try:
        async with http.get(url, params={"service": service, "ticket": ticket}, timeout=TIMEOUT) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SsoRefused(f"Le serveur CAS est injoignable : {exc}") from exc
    if status != 200:
        raise SsoRefused(f"Le serveur CAS a répondu HTTP {status} à la validation du ticket.")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SsoRefused("Le serveur CAS a répondu autre chose qu'une réponse CAS.") from exc
    failure = root.find("cas:authenticationFailure", NS)
    if failure is not None:
        code = failure.get("code", "")
        log.warning("cas.ticket_refused", code=code)
        raise SsoRefused(f"Le serveur CAS a refusé le ticket : {FAILURES.get(code, code)}.")
    user = root.findtext("cas:authenticationSuccess/cas:user", namespaces=NS)
    if not user or not user.strip():
        raise SsoRefused("La réponse du serveur CAS ne nomme aucun utilisateur.")
    return user.strip()


async def health(http: aiohttp.ClientSession, cas_url: str) -> tuple[bool, str]:
    try:
        async with http.get(f"{cas_url.rstrip('/')}/login", allow_redirects=False, timeout=TIMEOUT) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"CAS {cas_url}: unreachable ({exc})"
    if status >= 500:
        return False, f"CAS {cas_url}: /login answered HTTP {status}"
    return True, f"CAS {cas_url}: /login answers (HTTP {status})"
