"""Link tokens (SHA-256 at rest), link passwords (scrypt at rest), lockout after failed attempts.

A link token is ``secrets.token_urlsafe(32)``: 256 bits of randomness, so hashing it with a
plain SHA-256 is enough (nothing to brute-force) and 13,000 links cost milliseconds.  A link
password is chosen by people or short, so it is hashed with scrypt and a per-password salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowbus.errors import ConfigError

TOKEN_BYTES = 32
# scrypt cost: n=2**14, r=8 (16 MiB, ~50 ms) — OWASP's minimum — for passwords people choose.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
# Generated passwords carry 14 × log2(56) ≈ 81 bits: guessing one offline at 10^9 tries a second would
# take ~10^8 years whatever the hash cost, so their scrypt cost is minimal (n=2**4, ~30 µs) and 13,000
# payslips stay cheap.  The slow setting above protects the low-entropy passwords people choose.
GENERATED_N = 2 ** 4
GENERATED_LENGTH = 14
_PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"  # no 0/O, 1/l/I
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def new_token() -> str:
    """A fresh link token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Cheap shape check before any lookup (a malformed token is a plain 404 too)."""
    return bool(_TOKEN_RE.match(text or ""))


def new_password(length: int = GENERATED_LENGTH) -> str:
    """A random password easy to read aloud or copy (no ambiguous characters)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def hash_password(password: str, *, generated: bool = False) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), for a link password (``generated``: from ``new_password``)."""
    n = GENERATED_N if generated else SCRYPT_N
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against ``hash_password``'s output."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class Lockout:
    """After ``max_attempts`` wrong passwords in a row, the link is locked for ``lock_for``."""

    max_attempts: int = 5
    lock_for: timedelta = timedelta(minutes=15)

    def is_locked(self, locked_until: datetime | None, now: datetime) -> bool:
        return locked_until is not None and now < locked_until

    def after_failure(self, failed_attempts: int, now: datetime) -> tuple[int, datetime | None]:
        """New (failed_attempts, locked_until) after one more wrong password."""
        failed = failed_attempts + 1
        if failed >= self.max_attempts:
            return 0, now + self.lock_for
        return failed, None


def parse_duration(value: object, *, field: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``45s``, ``2w`` or a number of seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"{field}: {value!r} is not a duration", field=field,
                          hint="write a number followed by s, m, h, d or w, e.g. 30d or 12h")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
