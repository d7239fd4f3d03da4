"""API keys for the product's own systems, and the answers kept for Idempotency-Key retries (gdpr_requests/api)."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

# How long a stored answer is replayed for the same Idempotency-Key.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class ApiScope(models.TextChoices):
    REQUESTS_WRITE = "requests:write", "Create and cancel requests"
    REQUESTS_READ = "requests:read", "Read requests"
    AUDIT_READ = "audit:read", "Read the audit trail"


class ApiKey(models.Model):
    """A caller of the REST API. Only the SHA-256 of the key is stored: the key itself is shown once, at creation.

    The key carries 256 random bits, so a plain hash cannot be reversed by guessing and needs no slow KDF; it
    also survives a rotation of SECRET_KEY. ``prefix`` (the key's first characters) lets people tell keys apart.
    """

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an Idempotency-Key, replayed to retries for IDEMPOTENCY_WINDOW.

    The unique (api_key, key) pair is what makes concurrent retries create one request: the second INSERT waits
    for the first transaction and then finds its answer.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="unique_idempotency_key_per_api_key")]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"idempotency key of {self.api_key_id}"

    @property
    def is_expired(self) -> bool:
        return self.created_at < timezone.now() - IDEMPOTENCY_WINDOW
