"""Mixpanel projects: credentials (encrypted at rest), residency, batch size and credential health."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from gdpr_requests.crypto import EncryptedTextField


class Residency(models.TextChoices):
    US = "us", "United States"
    EU = "eu", "European Union"
    IN = "in", "India"


class CredentialStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked"
    OK = "ok", "Working"
    FAILING = "failing", "Failing"


def default_identity_properties() -> list[str]:
    """The profile properties that hold an email, unless a project names others (docs/identity.md §1.10)."""
    return ["$email"]


class MixpanelProject(models.Model):
    name = models.CharField(max_length=100, unique=True)
    mixpanel_project_id = models.CharField("Mixpanel project id", max_length=32)
    project_token = models.CharField(max_length=64, help_text="The public ingestion token; selects the project.")
    oauth_token = EncryptedTextField("GDPR OAuth token", help_text="Encrypted at rest.")
    oauth_token_changed_at = models.DateTimeField(null=True, blank=True)
    token_owner_email = models.EmailField(blank=True, help_text="The Mixpanel user who created the OAuth token.")
    token_expires_on = models.DateField(help_text="OAuth tokens expire one year after creation.")
    api_secret = EncryptedTextField(blank=True, help_text="Opens password-protected retrieval archives.")
    api_secret_changed_at = models.DateTimeField(null=True, blank=True)
    residency = models.CharField(max_length=2, choices=Residency.choices, default=Residency.US)
    base_url_override = models.URLField(blank=True, help_text="A sandbox, test server or proxy.")
    deletion_batch_size = models.PositiveIntegerField(
        default=1999, validators=[MinValueValidator(1), MaxValueValidator(2000)]
    )
    is_active = models.BooleanField(default=True)
    deletion_approvals_required = models.PositiveSmallIntegerField(
        "deletion approvals required",
        choices=[(1, "One staff member"), (2, "Two different staff members")],
        default=1,
        help_text="With two, a deletion touching this project waits for a second, different approver.",
    )
    credential_status = models.CharField(
        max_length=10, choices=CredentialStatus.choices, default=CredentialStatus.UNKNOWN
    )
    credential_checked_at = models.DateTimeField(null=True, blank=True)
    credential_error = models.CharField(max_length=300, blank=True)
    # Days-before-expiry for which a warning was already sent for the current token, e.g. [30, 7].
    expiry_warnings_sent = models.JSONField(default=list, blank=True)
    # Identity lookups (gdpr_requests/identity): the Query API's service account, where emails live on profiles,
    # whether a lone match is accepted without review, and why lookups are paused (a refused credential).
    query_username = models.CharField("service account username", max_length=255, blank=True)
    query_secret = EncryptedTextField("service account secret", blank=True, help_text="Encrypted at rest.")
    identity_properties = models.JSONField(default=default_identity_properties, blank=True)
    auto_accept_single_match = models.BooleanField(default=False)
    lookup_paused_at = models.DateTimeField(null=True, blank=True)
    lookup_paused_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def base_url(self) -> str:
        from gdpr_requests.mixpanel.client import base_url_for

        return base_url_for(self.residency, self.base_url_override)

    @property
    def days_until_token_expiry(self) -> int:
        return (self.token_expires_on - timezone.localdate()).days
