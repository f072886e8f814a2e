"""Message templates: subject, text and HTML bodies in French, with the document's fields.

Templates are Jinja2 in a sandboxed environment (a flow author cannot reach Python
objects); the HTML body is autoescaped, so a field holding ``<script>`` shows as text.
Sources, first found wins:

1. step params ``subject``, ``body_text``, ``body_html`` (inline templates);
2. files ``config/mailsec/<template>/{subject.txt, body.txt, body.html}`` where ``<template>``
   is ``params.template`` or, by default, the flow id;
3. the French defaults below.

Variables: ``fields`` (the document's fields), ``document`` (``id``, ``flow``, ``entity``),
``link`` (the recipient's personal link), ``expires_at`` (datetime; filter ``date_fr``),
``recipient`` (``address``, ``kind``), ``sender`` (``name``, ``address``), ``password_required``.
Filters: ``date_fr`` (« 4 février 2026 »), ``datetime_fr``, ``mois_fr`` (``2026-01`` → « janvier 2026 »),
``de_mois`` (``2026-10`` → « d'octobre 2026 »).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from flowbus.errors import ConfigError, PermanentError
from flowbus.web.french import MONTHS, date_fr

DEFAULT_SUBJECT = "{{ sender.name or 'Votre administration' }} vous a adressé un document sécurisé"
DEFAULT_TEXT = """Bonjour,

{{ sender.name or "Votre administration" }} vous a adressé un document par courrier sécurisé.

Pour le consulter et le télécharger, ouvrez ce lien personnel :
{{ link }}

{% if password_required %}Un mot de passe vous est communiqué dans un message séparé.
{% endif %}Ce lien est valable jusqu'au {{ expires_at | date_fr }}. Il vous est personnel : ne le transmettez pas.

Ce message est envoyé automatiquement, merci de ne pas y répondre.
"""
DEFAULT_HTML = """<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body>
<p>Bonjour,</p>
<p>{{ sender.name or "Votre administration" }} vous a adressé un document par courrier sécurisé.</p>
<p><a href="{{ link }}">Consulter et télécharger le document</a></p>
{% if password_required %}<p>Un mot de passe vous est communiqué dans un message séparé.</p>{% endif %}
<p>Ce lien est valable jusqu'au {{ expires_at | date_fr }}. Il vous est personnel : ne le transmettez pas.</p>
<p>Ce message est envoyé automatiquement, merci de ne pas y répondre.</p>
</body></html>
"""
PASSWORD_SUBJECT = "Mot de passe de votre document sécurisé"
PASSWORD_TEXT = """Bonjour,

Voici le mot de passe qui protège le document sécurisé que {{ sender.name or "votre administration" }} vous a adressé
dans un message séparé :

    {{ password }}

Ce mot de passe vous est personnel : ne le transmettez pas.
"""
REMINDER_PREFIX = "Rappel : "


def datetime_fr(value: Any) -> str:
    """``datetime`` → « 5 janvier 2026 à 09:30 » (UTC)."""
    if not isinstance(value, datetime):
        return str(value)
    return f"{date_fr(value)} à {value:%H:%M}"


def mois_fr(value: Any) -> str:
    """``2026-01`` → « janvier 2026 » (anything else is shown as is)."""
    text = str(value)
    if len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit() and 1 <= int(text[5:]) <= 12:
        return f"{MONTHS[int(text[5:]) - 1]} {text[:4]}"
    return text


def de_mois(value: Any) -> str:
    """``2026-10`` → « d'octobre 2026 », ``2026-01`` → « de janvier 2026 » (the elision French writes)."""
    month = mois_fr(value)
    return ("d'" if month[:1] in "aeiouéèh" else "de ") + month


def _env(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["date_fr"] = date_fr
    env.filters["datetime_fr"] = datetime_fr
    env.filters["mois_fr"] = mois_fr
    env.filters["de_mois"] = de_mois
    return env


_TEXT_ENV = _env(False)
_HTML_ENV = _env(True)


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str | None


class MessageTemplates:
    """The compiled templates of one step; ``render(context)`` per recipient."""

    def __init__(self, subject: str, text: str, html: str | None, *, origin: str) -> None:
        self.origin = origin
        try:
            self._subject = _TEXT_ENV.from_string(subject)
            self._text = _TEXT_ENV.from_string(text)
            self._html = _HTML_ENV.from_string(html) if html else None
            self._password = _TEXT_ENV.from_string(PASSWORD_TEXT)
        except TemplateError as exc:
            raise ConfigError(f"mailsec template {origin}: {exc}", field="subject/body_text/body_html",
                              hint="fix the Jinja2 syntax of the template") from exc

    @classmethod
    def for_step(cls, params: Mapping[str, Any], *, flow_id: str, config_dir: Path) -> MessageTemplates:
        """Inline params first, then ``config/mailsec/<template>/``, then the French defaults."""
        name = str(params.get("template") or flow_id)
        folder = config_dir / "mailsec" / name
        if params.get("template") and not folder.is_dir():
            raise ConfigError(f"mailsec template folder {folder} does not exist", field="template",
                              hint="create subject.txt, body.txt (and body.html) there, or remove 'template'")

        def pick(param: str, filename: str, default: str | None) -> str | None:
            if params.get(param):
                return str(params[param])
            path = folder / filename
            if path.is_file():
                return path.read_text(encoding="utf-8")
            return default

        subject = pick("subject", "subject.txt", DEFAULT_SUBJECT)
        text = pick("body_text", "body.txt", DEFAULT_TEXT)
        html = pick("body_html", "body.html", None if params.get("body_text") else DEFAULT_HTML)
        assert subject is not None and text is not None
        origin = "params" if params.get("subject") or params.get("body_text") else str(folder)
        return cls(subject, text, html, origin=origin)

    def _error(self, exc: TemplateError) -> PermanentError:
        if isinstance(exc, UndefinedError):
            return PermanentError(f"mailsec template {self.origin}: {exc.message}", field="fields",
                                  hint="the template names a field the document does not have; fill it or "
                                       "write {{ fields.x | default('') }}")
        return PermanentError(f"mailsec template {self.origin}: {exc}", field="fields")

    def render_subject(self, context: Mapping[str, Any]) -> str:
        """The subject alone (one line: newlines in a field must not inject headers)."""
        try:
            return " ".join(self._subject.render(context).split())
        except TemplateError as exc:
            raise self._error(exc) from exc

    def render(self, context: Mapping[str, Any]) -> RenderedMessage:
        subject = self.render_subject(context)
        ctx = {**context, "subject": subject}
        try:
            text = self._text.render(ctx)
            html = self._html.render(ctx) if self._html is not None else None
        except TemplateError as exc:
            raise self._error(exc) from exc
        return RenderedMessage(subject, text, html)

    def render_password(self, context: Mapping[str, Any], password: str) -> RenderedMessage:
        return RenderedMessage(PASSWORD_SUBJECT, self._password.render({**context, "password": password}), None)
