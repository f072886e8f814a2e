"""Outbound request policy: every connection flowbus opens for a connector, a webhook, a TSA or a sign-in provider goes to an address the operator allows.

By default a public address is allowed and loopback, link-local, private, shared (CGNAT),
multicast, unspecified and reserved addresses are refused, as are schemes other than http(s);
the operator allows hosts or networks explicitly with ``FLOWBUS_OUTBOUND_ALLOW``
(``127.0.0.1,10.0.0.0/8,s2low.example,*.interne.example``).

The check is made on the address actually connected to:

* HTTP: ``client_session(policy)`` is an aiohttp session whose resolver (``PolicyResolver``,
  wrapping aiohttp's default one) drops the refused addresses of every name it resolves, and whose
  connector checks IP-literal hosts, for the first request and for every redirect;
* SMTP: ``open_socket(policy, host, port)`` resolves, checks and connects one socket, which the
  SMTP client then uses (no second resolution).

``check_url`` / ``check_host`` give the same answer when a URL is configured (webhook, connector
instance), so a refused address is named at the field, in French, before any call is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from flowbus.errors import ConfigError, PermanentError, ValidationError

log = structlog.get_logger(__name__)

SETTING = "FLOWBUS_OUTBOUND_ALLOW"
SCHEMES = ("http", "https")
RESOLVE_TIMEOUT = 5.0  # seconds a configuration-time lookup may take
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


class OutboundRefused(PermanentError, ValidationError):
    """The address a URL or host leads to is not allowed by the outbound policy: a wrong value when it is
    configured (422), a permanent connector error when it is called (never retried)."""

    status = 422
    title = "Adresse de destination refusée"
    type_slug = "outbound-refused"


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def reason(ip: IPAddress) -> str | None:
    """Why the default policy refuses ``ip`` (« une adresse de bouclage »…), None for a public address."""
    ip = _embedded_ipv4(ip)
    if ip.is_unspecified:
        return "l'adresse non spécifiée"
    if ip.is_loopback:
        return "une adresse de bouclage"
    if ip.is_link_local:
        return "une adresse lien-local"
    if ip.is_multicast:
        return "une adresse de multidiffusion"
    if any(ip.version == net.version and ip in net for net in PRIVATE):
        return "une adresse privée"
    if ip.version == 4 and ip in SHARED:
        return "une adresse partagée (CGNAT)"
    if not ip.is_global:
        return "une adresse réservée"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public destinations the operator allows: networks, host names, domains (``*.example``)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()  # ".example.fr" for an entry "*.example.fr"

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> OutboundPolicy:
        """``"127.0.0.1, 10.0.0.0/8, s2low.example, *.interne.example"`` → a policy; ConfigError on a bad entry."""
        entries = text.split(",") if isinstance(text, str) else list(text)
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        domains: list[str] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _HOST.match(entry):
                raise ConfigError(f"{SETTING} : « {raw.strip()} » n'est ni une adresse IP, ni un réseau (10.0.0.0/8), "
                                  "ni un nom d'hôte (s2low.example ou *.example)", field="outbound_allow")
            if entry.startswith("*."):
                domains.append(entry[1:])
            else:
                hosts.add(entry)
        return cls(tuple(networks), frozenset(hosts), tuple(domains))

    @classmethod
    def from_settings(cls, settings: Any) -> OutboundPolicy:
        return cls.parse(getattr(settings, "outbound_allow", "") or "")

    @property
    def description(self) -> str:
        parts = [str(n) for n in self.networks] + sorted(self.hosts) + [f"*{d}" for d in self.domains]
        return ", ".join(parts) or "aucune exception"

    def host_allowed(self, host: str) -> bool:
        """The operator allowed this host name itself (every address it resolves to)."""
        name = host.lower().rstrip(".")
        return name in self.hosts or any(name.endswith(d) for d in self.domains)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused under this policy, None when it may be connected to."""
        why = reason(ip)
        if why is None:
            return None
        inner = _embedded_ipv4(ip)
        for net in self.networks:
            if (ip.version == net.version and ip in net) or (inner.version == net.version and inner in net):
                return None
        return why

    def refused(self, host: str, ip: IPAddress | str, why: str, *, field: str | None = None) -> OutboundRefused:
        who = str(ip) if str(ip) == host.strip("[]") else f"{host} ({ip})"
        return OutboundRefused(f"Adresse refusée par la politique de sortie : {who} est {why} (réglage {SETTING})",
                               field=field, hint="si cette destination est voulue, l'opérateur de la plateforme l'ajoute à ce réglage")

    def check_address(self, host: str, ip: IPAddress | str, *, field: str | None = None) -> None:
        """Raise OutboundRefused unless ``ip`` (an address ``host`` resolved to) may be connected to."""
        address = ip if not isinstance(ip, str) else ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
        why = self.refusal(address)
        if why is not None:
            raise self.refused(host, address, why, field=field)

    def allowed_addresses(self, host: str, addresses: Sequence[str], *, field: str | None = None) -> list[str]:
        """The addresses of ``addresses`` that may be connected to; OutboundRefused when none may."""
        if self.host_allowed(host):
            return list(addresses)
        kept: list[str] = []
        first: OutboundRefused | None = None
        for address in addresses:
            try:
                self.check_address(host, address, field=field)
            except OutboundRefused as exc:
                first = first or exc
                continue
            kept.append(address)
        if not kept and first is not None:
            raise first
        return kept

    # ---- configuration time ----------------------------------------------------------------------

    async def check_host(self, host: str, *, field: str | None = None, port: int = 0) -> None:
        """A host (name or address) that will be connected to: refused now if every address it has is refused.

        A name that does not resolve yet is let through (the call will be checked again)."""
        host = host.strip()
        if not host:
            return
        literal = _literal(host)
        if literal is not None:
            self.check_address(host, literal, field=field)
            return
        if self.host_allowed(host):
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port or None, type=socket.SOCK_STREAM),
                                           RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError) as exc:
            log.info("outbound.unresolved", host=host, error=str(exc))
            return
        self.allowed_addresses(host, [str(info[4][0]) for info in infos], field=field)

    async def check_url(self, url: str, *, field: str | None = "url") -> None:
        """An http(s) URL that will be called: OutboundRefused naming the rule when it is not allowed."""
        parts = urlsplit(str(url or "").strip())
        if parts.scheme.lower() not in SCHEMES:
            raise OutboundRefused(f"Adresse refusée par la politique de sortie : le schéma « {parts.scheme or '(aucun)'} » "
                                  "n'est pas permis (http ou https seulement)", field=field)
        if not parts.hostname:
            raise OutboundRefused(f"Adresse refusée par la politique de sortie : « {url} » ne nomme aucun hôte",
                                  field=field)
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise OutboundRefused(f"Adresse refusée par la politique de sortie : le port de « {url} » est invalide",
                                  field=field) from None
        await self.check_host(parts.hostname, field=field, port=port)


def endpoint_host(endpoint: str) -> str:
    """The host of an S3-style endpoint (``host:port``, ``[::1]:9000`` or a URL)."""
    text = endpoint.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    return parts.hostname or ""


STRICT = OutboundPolicy()  # no exception: public addresses only
LOOPBACK = "127.0.0.0/8,::1"  # what the demonstration (and the tests) add: their simulators listen on loopback


# ---- aiohttp ---------------------------------------------------------------------------------------


class PolicyResolver(AbstractResolver):
    """aiohttp's default resolver, with the addresses the policy refuses removed from every answer."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            return results
        kept = set(self.policy.allowed_addresses(host, [r["host"] for r in results]))
        dropped = [r["host"] for r in results if r["host"] not in kept]
        if dropped:
            log.warning("outbound.addresses_dropped", host=host, dropped=dropped)
        return [r for r in results if r["host"] in kept]

    async def close(self) -> None:
        await self._inner.close()


class PolicyConnector(aiohttp.TCPConnector):
    """A TCP connector resolving through ``PolicyResolver`` and checking IP-literal hosts (which aiohttp
    never hands to a resolver) — on every connection, so redirects are checked too."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(resolver=PolicyResolver(policy), **kwargs)
        self.policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        literal = _literal(host)
        if literal is not None:
            self.policy.check_address(host, literal)
        return await super()._resolve_host(host, port, traces=traces)


def client_session(policy: OutboundPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session that connects only where ``policy`` allows (never through an environment proxy)."""
    kwargs.setdefault("trust_env", False)
    return aiohttp.ClientSession(connector=PolicyConnector(policy), **kwargs)


# ---- plain sockets (SMTP) --------------------------------------------------------------------------


async def open_socket(policy: OutboundPolicy, host: str, port: int, *, timeout: float | None = 30.0,
                      field: str | None = "host") -> socket.socket:
    """A non-blocking TCP socket connected to ``host:port`` at an address ``policy`` allows.

    Raises:
        OutboundRefused: every address of ``host`` is refused.
        OSError: no allowed address answered.
    """
    loop = asyncio.get_running_loop()
    literal = _literal(host)
    if literal is not None:
        policy.check_address(host, literal, field=field)
    infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    allowed = set(policy.allowed_addresses(host, [str(i[4][0]) for i in infos], field=field))
    last: OSError | None = None
    for family, type_, proto, _name, sockaddr in infos:
        if str(sockaddr[0]) not in allowed:
            continue
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"{host}:{port} ne répond pas")
            continue
        return sock
    raise last or OSError(f"aucune adresse de {host}")
