"""structlog configuration: JSON when not a TTY, a processor that drops secrets, step context."""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from typing import Any

import structlog

SECRET_KEYS = frozenset({"password", "token", "pkcs12", "p12", "secret", "api_key", "authorization",
                         "p12_password", "client_cert_password", "key"})
_configured = False


def drop_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Replace the value of any key that names a secret; never let one reach a log line."""
    for k in list(event):
        if k.lower() in SECRET_KEYS or k.lower().endswith(("_password", "_token", "_secret")):
            event[k] = "********"
    return event


def configure(fmt: str = "auto", level: str = "info") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def step_context(**kw: Any) -> AbstractContextManager[Any]:
    """Bind document, flow, step… to every log line emitted inside the block."""
    return structlog.contextvars.bound_contextvars(**kw)
