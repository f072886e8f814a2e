"""The platform's own e-mail to people: password-reset and invitation links, notifications, in French, through the configured SMTP server."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import aiosmtplib
import structlog

from flowbus.errors import BackendError, ConfigError

log = structlog.get_logger(__name__)

_TEXTS = {
    "reset": ("Réinitialisation de votre mot de passe flowbus",
              "Bonjour {name},\n\nUne réinitialisation du mot de passe de votre compte « {login} » a été demandée.\n"
              "Pour choisir un nouveau mot de passe, ouvrez ce lien (valable une heure, une seule fois) :\n\n{url}\n\n"
              "Si vous n'êtes pas à l'origine de cette demande, ignorez ce message : votre mot de passe reste "
              "inchangé.\n"),
    "invite": ("Votre compte flowbus",
               "Bonjour {name},\n\nUn compte « {login} » vous a été ouvert sur flowbus par {by}.\n"
               "Pour choisir votre mot de passe et vous connecter, ouvrez ce lien (valable 7 jours, une seule "
               "fois) :\n\n{url}\n"),
}


def configured(settings: Any) -> bool:
    return bool(settings.smtp_host)


async def send_link(settings: Any, *, purpose: str, to: str, name: str, login: str, url: str, by: str = "") -> None:
    """Send a link e-mail.

    Raises:
        ConfigError: the platform has no SMTP server configured (FLOWBUS_SMTP_HOST).
        BackendError: the SMTP server refused or could not be reached.
    """
    if not configured(settings):
        raise ConfigError("L'envoi de courriels de la plateforme n'est pas configuré.", field="FLOWBUS_SMTP_HOST",
                          hint="renseignez FLOWBUS_SMTP_HOST (et FLOWBUS_SMTP_PORT, FLOWBUS_SMTP_USER…)")
    subject, body = _TEXTS[purpose]
    await send(settings, to=to, subject=subject, body=body.format(name=name, login=login, url=url,
                                                                  by=by or "l'administrateur"), purpose=purpose)


async def send(settings: Any, *, to: str, subject: str, body: str, purpose: str) -> None:
    """Send one plain-text message (raises as ``send_link``)."""
    if not configured(settings):
        raise ConfigError("L'envoi de courriels de la plateforme n'est pas configuré.", field="FLOWBUS_SMTP_HOST",
                          hint="renseignez FLOWBUS_SMTP_HOST (et FLOWBUS_SMTP_PORT, FLOWBUS_SMTP_USER…)")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = settings.smtp_from, to, subject
    msg.set_content(body)
    password = settings.smtp_password.get_secret_value()
    try:
        await aiosmtplib.send(msg, hostname=settings.smtp_host, port=settings.smtp_port,
                              username=settings.smtp_user or None, password=password or None,
                              start_tls=settings.smtp_starttls, use_tls=settings.smtp_tls, timeout=30)
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("people.mail_failed", purpose=purpose, error=str(exc))
        raise BackendError(f"Le serveur de courriel n'a pas accepté le message : {exc}", field="email") from exc
    log.info("people.mail_sent", purpose=purpose)
