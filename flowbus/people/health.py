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
        return [("personnes", False, f"comptes illisibles : {exc}", "lancez `flowbus init`")]
    sso = bool(settings.oidc_issuer or settings.cas_url)
    usable = [a["login"] for a in admins if a["has_password"] or sso]
    if usable:
        out.append(("personnes", True, f"administrateur(s) de la plateforme pouvant se connecter : {', '.join(usable)}", None))
    elif admins:
        out.append(("personnes", False, "l'administrateur de la plateforme n'a pas encore choisi son mot de passe",
                    f"ouvrez le lien affiché par `flowbus init`, ou lancez `flowbus users reset-password {admins[0]['login']}`"))
    else:
        out.append(("personnes", False, "aucun compte actif d'administrateur de la plateforme",
                    "lancez `flowbus users create IDENTIFIANT --name … --email … --platform-admin`"))
    if settings.smtp_host:
        out.append(("courriel de la plateforme", True, f"SMTP {settings.smtp_host}:{settings.smtp_port} (mots de passe "
                                             "oubliés, invitations)", None))
    else:
        out.append(("courriel de la plateforme", False, "aucun serveur SMTP : personne ne peut retrouver un mot de passe "
                                              "oublié ni être invité par courriel",
                    "renseignez FLOWBUS_SMTP_HOST (et FLOWBUS_SMTP_PORT, FLOWBUS_SMTP_USER, FLOWBUS_SMTP_PASSWORD, "
                    "FLOWBUS_SMTP_FROM)"))
    if settings.oidc_issuer or settings.cas_url:
        from flowbus.outbound import OutboundPolicy, client_session
        from flowbus.people import cas, oidc
        async with client_session(OutboundPolicy.from_settings(settings)) as http:
            if settings.oidc_issuer:
                ok, detail = await oidc.health(http, settings)
                out.append(("OpenID Connect", ok, detail, None if ok else
                            "vérifiez FLOWBUS_OIDC_ISSUER (l'adresse du royaume, sans /.well-known/…) et que le "
                            "fournisseur répond depuis ce serveur"))
            if settings.cas_url:
                ok, detail = await cas.health(http, settings.cas_url)
                out.append(("CAS", ok, detail, None if ok else
                            "vérifiez FLOWBUS_CAS_URL (par exemple https://cas.example.fr/cas) et qu'il répond depuis "
                            "ce serveur"))
    return out
