"""Secrets at rest: connector passwords and keys, webhook secrets are stored encrypted (Fernet: AES-128-CBC
+ HMAC-SHA256, from ``cryptography``), never in clear in the database.

The keys come from ``FLOWBUS_SECRET_KEYS`` (Fernet keys separated by commas, the first one encrypts, the
others still decrypt) or, by default, from the key file ``FLOWBUS_SECRET_KEY_FILE``
(``<data dir>/secret.key``, created at first use, readable by its owner only).  ``flowbus secrets rotate``
re-encrypts every stored secret with the first key.  A stored secret reads ``enc:v1:<token>``; a value
without the prefix (written before this module existed) is read as it is and encrypted at the next rotate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from flowbus.errors import ConfigError

PREFIX = "enc:v1:"


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("Aucune clé de chiffrement des secrets.", field="FLOWBUS_SECRET_KEYS")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigError("Clé de chiffrement des secrets invalide : 32 octets en base64 url-safe (Fernet) "
                              "attendus.", field="FLOWBUS_SECRET_KEYS",
                              hint="generate one with: python -c 'from cryptography.fernet import Fernet; "
                                   "print(Fernet.generate_key().decode())'") from exc

    def seal(self, value: Any) -> Any:
        """An encrypted text for a secret string (anything else is returned as is)."""
        if not isinstance(value, str) or value.startswith(PREFIX) or value == "":
            return value
        return PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, value: Any) -> Any:
        """The clear text of a sealed value (a value not sealed is returned as is).

        Raises:
            ConfigError: sealed with a key this server does not have (field ``FLOWBUS_SECRET_KEYS``).
        """
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        try:
            return self._fernet.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ConfigError("Un secret enregistré ne se déchiffre avec aucune des clés de ce serveur : la clé "
                              "a changé sans « flowbus secrets rotate ».", field="FLOWBUS_SECRET_KEYS") from None

    def rotate(self, value: Any) -> Any:
        """The value sealed with the first key (clear values get sealed)."""
        if isinstance(value, str) and value.startswith(PREFIX):
            return PREFIX + self._fernet.rotate(value[len(PREFIX):].encode("ascii")).decode("ascii")
        return self.seal(value)

    def seal_settings(self, settings: dict[str, Any], secret_keys: frozenset[str]) -> dict[str, Any]:
        return {k: self.seal(v) if k in secret_keys else v for k, v in settings.items()}

    def open_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {k: self.open(v) for k, v in settings.items()}


def key_file(settings: Any) -> Path:
    configured = getattr(settings, "secret_key_file", None)
    return Path(configured) if configured else Path(settings.data_dir) / "secret.key"


def read_keys(settings: Any, *, create: bool = True) -> list[bytes]:
    env = getattr(settings, "secret_keys", None)
    text = env.get_secret_value() if env is not None else ""
    if text.strip():
        return [k.strip().encode("ascii") for k in text.split(",") if k.strip()]
    path = key_file(settings)
    if not path.exists():
        if not create:
            return []
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode("ascii") + "\n")
    return [line.strip().encode("ascii") for line in path.read_text(encoding="ascii").splitlines() if line.strip()]


def for_settings(settings: Any) -> SecretBox:
    return SecretBox(read_keys(settings))
