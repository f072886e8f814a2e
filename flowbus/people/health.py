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
    return out
