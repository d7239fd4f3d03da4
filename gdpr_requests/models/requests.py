"""Data subject requests, staff notes on them, and the export an access request produces."""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.db import models
from django.utils import timezone

from gdpr_requests.models.projects import MixpanelProject
from gdpr_requests.requests import states


class RequestKind(models.TextChoices):
    ACCESS = "access", "Access"
    DELETION = "deletion", "Deletion"


class Regulation(models.TextChoices):
    GDPR = states.GDPR, "GDPR"
    CCPA = states.CCPA, "CCPA"


class DisclosureType(models.TextChoices):
    DATA = "Data", "Specific pieces of data"
    CATEGORIES = "Categories", "Categories of data"
    SOURCES = "Sources", "Sources of data"


class Channel(models.TextChoices):
    WEB = "web", "Web form"
    STAFF = "staff", "Staff"
    IMPORT = "import", "Import"
    API = "api", "API"
    COHORT = "cohort", "Mixpanel cohort"


class DataSubjectRequest(models.Model):
    reference = models.CharField(max_length=16, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=RequestKind.choices)
    regulation = models.CharField(max_length=4, choices=Regulation.choices)
    disclosure_type = models.CharField(
        "CCPA disclosure type", max_length=10, choices=DisclosureType.choices, blank=True
    )
    # Personal data: replaced by a placeholder when the retention period ends (email_hash stays).
    requester_name = models.CharField(max_length=200, blank=True)
    requester_email = models.EmailField(max_length=254)
    email_hash = models.CharField(max_length=64, db_index=True, editable=False)
    message = models.TextField(blank=True)
    distinct_ids = models.JSONField(default=list, blank=True)
    projects = models.ManyToManyField(MixpanelProject, blank=True, related_name="requests")
    status = models.CharField(max_length=12, choices=states.STATUS_CHOICES, default=states.UNVERIFIED)
    status_before_hold = models.CharField(max_length=12, choices=states.STATUS_CHOICES, blank=True)
    hold_reason = models.TextField(blank=True)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.WEB)
    # The subject's language (settings.LANGUAGES), taken at intake: their emails are written in it.
    language = models.CharField(max_length=8, choices=settings.LANGUAGES, default="en")
    received_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    identity_verification = models.TextField(blank=True, help_text="How the requester's identity was checked.")
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    original_due_at = models.DateField()
    due_at = models.DateField(db_index=True)
    extended_at = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True)
    extended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_requests"
    )
    rejection_reason = models.TextField(blank=True)
    closing_note = models.TextField(blank=True)
    # Rotated whenever a new verification or status link is issued, so older links stop working.
    link_nonce = models.CharField(max_length=32, blank=True)
    verification_sent_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Requests made through the REST API (gdpr_requests/api): the key that made it and the caller's own id.
    api_key = models.ForeignKey(
        "gdpr_requests.ApiKey", null=True, blank=True, on_delete=models.PROTECT, related_name="requests"
    )
    external_id = models.CharField(max_length=100, null=True, blank=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["api_key", "external_id"], name="unique_external_id_per_api_key")
        ]
        indexes = [
            models.Index(fields=["status", "due_at"]),
            models.Index(fields=["email_hash", "kind", "status"]),
            models.Index(fields=["received_at"]),
            models.Index(fields=["closed_at"]),
        ]
        permissions = [("work_request", "Can work privacy requests (approve, reject, hold, ...)")]

    def __str__(self) -> str:
        return self.reference

    @property
    def is_open(self) -> bool:
        return self.status in states.OPEN_STATES

    @property
    def is_extended(self) -> bool:
        return self.extended_at is not None

    def days_until_due(self, today: date | None = None) -> int:
        return (self.due_at - (today or timezone.localdate())).days


class RequestNote(models.Model):
    """An internal staff note on a request (not shown to the subject; the audit trail records that it exists)."""

    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"note on {self.request.reference}"


class SubjectExport(models.Model):
    """The file fetched for an access request, kept privately until it expires."""

    request = models.OneToOneField(DataSubjectRequest, on_delete=models.PROTECT, related_name="export")
    task = models.ForeignKey(
        "gdpr_requests.MixpanelTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    file_path = models.CharField(max_length=300, blank=True, help_text="Relative to EXPORTS_DIR.")
    original_name = models.CharField(max_length=100, blank=True)
    content_type = models.CharField(max_length=100, default="application/zip")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    download_count = models.PositiveIntegerField(default=0)
    last_downloaded_at = models.DateTimeField(null=True, blank=True)
    # One-time download code, sent by email at the time of download; only its hash is kept.
    code_hash = models.CharField(max_length=128, blank=True)
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_attempts = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"export for {self.request.reference}"

    @property
    def is_available(self) -> bool:
        return self.deleted_at is None and self.expires_at > timezone.now()
