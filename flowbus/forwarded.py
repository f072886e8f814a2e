"""Who is asking, and over what: the client's address and scheme, read from ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when the TCP peer is one of the operator's trusted reverse proxies (``FLOWBUS_TRUSTED_PROXIES``); anyone else's headers are ignored, so a client cannot choose the address its failures are counted under."""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED = web.AppKey("trusted_proxies", tuple)  # the parsed networks, set by flowbus.api.create_app


def parse(value: str) -> tuple[Network, ...]:
    """``10.0.0.5, 10.1.0.0/16`` → networks.

    Raises:
        ValueError: an entry that is not an address or a network (its message names it, in French).
    """
    out = []
    for part in (p.strip() for p in (value or "").split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"« {part} » n'est ni une adresse IP ni un réseau (par exemple 10.0.0.5 ou "
                             "10.0.0.0/8)") from None
    return tuple(out)


def _ip(text: str) -> Any:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _trusted(request: web.Request) -> tuple[Network, ...]:
    return request.app.get(TRUSTED, ()) if hasattr(request, "app") else ()


def _is_proxy(ip: Any, nets: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in nets)


def client_address(request: web.Request) -> str:
    """The client's address: the TCP peer, or — behind a trusted proxy — the last address of X-Forwarded-For that
    is not itself a trusted proxy."""
    peer = getattr(request, "remote", None) or ""
    nets = _trusted(request)
    if not nets or not _is_proxy(_ip(peer), nets):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return peer  # a malformed chain: believe only the proxy itself
        if not _is_proxy(ip, nets):
            return str(ip)
    return str(_ip(hops[0])) if hops else peer


def is_https(request: web.Request) -> bool:
    """Whether the client reached us over HTTPS: directly, or through a trusted proxy that says so."""
    if request.secure:
        return True
    if not _is_proxy(_ip(getattr(request, "remote", None) or ""), _trusted(request)):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return proto == "https"


__all__ = ["TRUSTED", "client_address", "is_https", "parse"]
