"""Passwords: argon2id hashes (argon2-cffi, OWASP parameters), the length policy, rehash on sign-in."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from flowbus.errors import ValidationError

MIN_LENGTH = 12
MAX_LENGTH = 256
# argon2id with 19 MiB, 2 passes, 1 lane: OWASP's password-storage minimum, about 30 ms here.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the login is unknown, so that both answers take the same time.
_DUMMY = _HASHER.hash("flowbus-dummy-password")


def check_policy(password: str, *, login: str = "", field: str = "password") -> None:
    """Refuse a password people could guess; the message says what is expected."""
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"Le mot de passe doit compter au moins {MIN_LENGTH} caractères.", field=field)
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"Le mot de passe ne peut dépasser {MAX_LENGTH} caractères.", field=field)
    if login and login.lower() in password.lower():
        raise ValidationError("Le mot de passe ne doit pas contenir l'identifiant.", field=field)
    if len(set(password)) < 5:
        raise ValidationError("Le mot de passe est trop répétitif.", field=field)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored`` (an argon2 hash); a missing hash never matches."""
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)
