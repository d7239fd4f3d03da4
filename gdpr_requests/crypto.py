"""Secrets at rest (MultiFernet over FIELD_ENCRYPTION_KEYS) and the keyed hash of requester emails."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class DecryptionError(Exception):
    """A stored secret could not be opened with any key in FIELD_ENCRYPTION_KEYS."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS: "
            "the key that encrypted it is missing from the list."
        ) from exc


def rotate(ciphertext: str) -> str:
    """Re-encrypt under the first key (MultiFernet.rotate keeps the original timestamp)."""
    try:
        return fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS.") from exc


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; Python code sees the clear text. Empty stays empty."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_hash(email: str) -> str:
    """Keyed hash for lookups and duplicate detection without scanning clear text."""
    key = settings.EMAIL_HASH_KEY.encode()
    return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()
