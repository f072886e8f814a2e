"""What ``flowbus doctor`` checks about people: someone can administer the platform, and the platform can e-mail them."""

from __future__ import annotations

from typing import Any

from flowbus.store.base import Store


async def checks(store: Store, settings: Any) -> list[tuple[str, bool, str, str | None]]:
    """(name, ok, detail, fix) lines for doctor."""
    out: list[tuple[str, bool, str, str | None]] = []
    try:
        async with store.transaction() as tx:
            admins = await tx.fetch(
                "SELECT u.login, u.password_hash IS NOT NULL AS has_password FROM users u "
                "JOIN user_grants g ON g.user_id = u.id WHERE g.entity_id = '*' AND g.role = 'admin' "
                "AND g.flows IS NULL AND u.active = 1 LIMIT 20")
    except Exception as exc:  # noqa: BLE001 - the store check above already says why
        return [("people", False, f"accounts unreadable: {exc}", "run `flowbus init`")]
    sso = bool(settings.oidc_issuer or settings.cas_url)
    usable = [a["login"] for a in admins if a["has_password"] or sso]
    if usable:
        out.append(("people", True, f"platform administrator(s) able to sign in: {', '.join(usable)}", None))
    elif admins:
        out.append(("people", False, "the platform administrator has not chosen a password yet",
                    f"open the link `flowbus init` printed, or run `flowbus users reset-password {admins[0]['login']}`"))
    else:
        out.append(("people", False, "no active platform administrator account",
                    "run `flowbus users create LOGIN --name … --email … --platform-admin`"))
    if settings.smtp_host:
        out.append(("platform e-mail", True, f"SMTP {settings.smtp_host}:{settings.smtp_port} (password resets, "
                                             "invitations)", None))
    else:
        out.append(("platform e-mail", False, "no SMTP server: people cannot reset a forgotten password nor be "
                                              "invited by e-mail",
                    "set FLOWBUS_SMTP_HOST (and FLOWBUS_SMTP_PORT, FLOWBUS_SMTP_USER, FLOWBUS_SMTP_PASSWORD, "
                    "FLOWBUS_SMTP_FROM)"))
    if settings.oidc_issuer or settings.cas_url:
        from flowbus.outbound import OutboundPolicy, client_session
        from flowbus.people import cas, oidc
        async with client_session(OutboundPolicy.from_settings(settings)) as http:
            if settings.oidc_issuer:
                ok, detail = await oidc.health(http, settings)
                out.append(("OpenID Connect", ok, detail, None if ok else
                            "check FLOWBUS_OIDC_ISSUER (the realm's URL, without /.well-known/…) and that the "
                            "provider answers from this server"))
            if settings.cas_url:
                ok, detail = await cas.health(http, settings.cas_url)
                out.append(("CAS", ok, detail, None if ok else
                            "check FLOWBUS_CAS_URL (e.g. https://cas.example.fr/cas) and that it answers from "
                            "this server"))
    return out
