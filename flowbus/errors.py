"""The FlowbusError tree: every exception flowbus raises on purpose derives from FlowbusError.

Each error carries a message a person can act on, and the API maps it to an RFC 9457
problem document (French ``title``, offending ``field``).  Connector errors tell the engine
whether to retry: TransientError (retry per the step's policy), PermanentError (the
document goes to a visible error state).  A business refusal is not an error: connectors
return ``Outcome.rejected(reason)``.
"""

from __future__ import annotations

from dataclasses import dataclass


class FlowbusError(Exception):
    """Base of every flowbus error."""

    status = 500
    title = "Erreur interne"
    type_slug = "internal-error"

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


# ---- configuration ---------------------------------------------------------------------------


class ConfigError(FlowbusError):
    """Settings, flow or connector configuration is wrong."""

    title = "Configuration invalide"
    type_slug = "invalid-configuration"


class NotConfigured(ConfigError):
    """No connector instance is configured for a collectivité (nor above it, nor for the platform)."""


@dataclass(frozen=True)
class SourcePosition:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class FlowDefinitionError(ConfigError):
    """One error in a flow definition, with its position in the YAML file."""

    def __init__(self, message: str, *, position: SourcePosition | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.position = position

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position else ""
        text = f"{where}{self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return text


class InvalidFlows(ConfigError):
    """Raised at start-up when one or more flow definitions are invalid."""

    def __init__(self, errors: list[FlowDefinitionError]) -> None:
        self.errors = errors
        super().__init__("invalid flow definitions:\n" + "\n".join(str(e) for e in errors))


# ---- API / user input ------------------------------------------------------------------------


class ValidationError(FlowbusError):
    """User input is wrong; ``field`` names the offending field."""

    status = 422
    title = "Donnée invalide"
    type_slug = "validation-error"


class BadRequest(FlowbusError):
    status = 400
    title = "Requête invalide"
    type_slug = "bad-request"


class PayloadTooLarge(FlowbusError):
    status = 413
    title = "Fichier trop volumineux"
    type_slug = "payload-too-large"


class Unauthorized(FlowbusError):
    status = 401
    title = "Authentification requise"
    type_slug = "unauthorized"


class Forbidden(FlowbusError):
    status = 403
    title = "Accès refusé"
    type_slug = "forbidden"


class NotFound(FlowbusError):
    status = 404
    title = "Ressource introuvable"
    type_slug = "not-found"


class Conflict(FlowbusError):
    """Optimistic concurrency failure or an action not allowed in the current state."""

    status = 409
    title = "Conflit"
    type_slug = "conflict"

    def __init__(self, message: str, *, field: str | None = None, expected_version: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, field=field, hint=hint)
        self.expected_version = expected_version


# ---- backends --------------------------------------------------------------------------------


class BackendError(FlowbusError):
    """A backend (database, broker, blob store) failed or is unreachable."""

    status = 503
    title = "Service indisponible"
    type_slug = "backend-unavailable"


# ---- connectors ------------------------------------------------------------------------------


class ConnectorError(FlowbusError):
    """Base for errors raised by connectors while running a step."""

    title = "Erreur du connecteur"
    type_slug = "connector-error"


class TransientError(ConnectorError):
    """The outside system failed in a way that may succeed later (network, HTTP 5xx, timeout).

    The engine retries according to the step's retry policy; ``retry_in`` (seconds) overrides
    the policy's delay for the next attempt.
    """

    def __init__(self, message: str, *, retry_in: float | None = None, field: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, field=field, hint=hint)
        self.retry_in = retry_in


class PermanentError(ConnectorError):
    """Retrying will not help (bad input, wrong configuration, rejected certificate).

    The document goes straight to a visible error state; an administrator fixes the cause
    and retries.
    """
