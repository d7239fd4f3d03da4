"""Data, choices, constraints and indexes. Business rules live in services.py and states.py."""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from . import states
from .crypto import EncryptedTextField


class Residency(models.TextChoices):
    US = "us", "United States"
    EU = "eu", "European Union"
    IN = "in", "India"


class CredentialStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked"
    OK = "ok", "Working"
    FAILING = "failing", "Failing"


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
    credential_status = models.CharField(
        max_length=10, choices=CredentialStatus.choices, default=CredentialStatus.UNKNOWN
    )
    credential_checked_at = models.DateTimeField(null=True, blank=True)
    credential_error = models.CharField(max_length=300, blank=True)
    # Days-before-expiry for which a warning was already sent for the current token, e.g. [30, 7].
    expiry_warnings_sent = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def base_url(self) -> str:
        from .mixpanel.client import base_url_for

        return base_url_for(self.residency, self.base_url_override)

    @property
    def days_until_token_expiry(self) -> int:
        return (self.token_expires_on - timezone.localdate()).days


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

    class Meta:
        ordering = ["due_at", "id"]
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


class TaskKind(models.TextChoices):
    RETRIEVAL = "retrieval", "Retrieval"
    DELETION = "deletion", "Deletion"


class TaskState(models.TextChoices):
    """Our side of a Mixpanel task (the remote status is kept beside it)."""

    PENDING_SUBMIT = "pending_submit", "Waiting to be submitted"
    SUBMITTED = "submitted", "Submitted, polling"
    DOWNLOADING = "downloading", "Downloading result"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Split or merged into other tasks"
    PAUSED = "paused", "Paused (credential failing)"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"


ACTIVE_TASK_STATES = (TaskState.PENDING_SUBMIT, TaskState.SUBMITTED, TaskState.DOWNLOADING)


class MixpanelTask(models.Model):
    project = models.ForeignKey(MixpanelProject, on_delete=models.PROTECT, related_name="tasks")
    kind = models.CharField(max_length=10, choices=TaskKind.choices)
    compliance_type = models.CharField(max_length=4, choices=[("GDPR", "GDPR"), ("CCPA", "CCPA")])
    disclosure_type = models.CharField(max_length=10, choices=DisclosureType.choices, blank=True)
    distinct_ids = models.JSONField(default=list)
    requests = models.ManyToManyField(DataSubjectRequest, through="TaskRequestLink", related_name="tasks")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    tracking_id = models.CharField(max_length=128, blank=True, db_index=True)
    remote_status = models.CharField(max_length=16, blank=True)
    status_history = models.JSONField(default=list, blank=True)
    requesting_user = models.CharField(max_length=254, blank=True, help_text="Reported by Mixpanel.")
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.PENDING_SUBMIT)
    attempts = models.PositiveIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # Pipeline: the subject withdrew; cancel at Mixpanel (DELETE) at the next step.
    cancel_requested = models.BooleanField(default=False)
    # Pipeline: a worker is running a step of this task until then (a crashed worker's lease just runs out).
    running_until = models.DateTimeField(null=True, blank=True)
    # Pipeline: a retrieval's result link between SUCCESS and the download. It opens the subject's export
    # without authentication, so it is encrypted and cleared once the file is stored.
    result_url = EncryptedTextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["project", "state"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} task {self.tracking_id or '#' + str(self.pk)}"


class RateLimitSlot(models.Model):
    """The pipeline's per project+credential rate limit when no Redis is configured (mixpanel/ratelimit.py):
    the next moment a call may start, taken with a conditional UPDATE."""

    key = models.CharField(max_length=100, unique=True)
    available_at = models.DateTimeField()
    waits = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"rate limit slot {self.pk}"


class TaskRequestLink(models.Model):
    task = models.ForeignKey(MixpanelTask, on_delete=models.CASCADE)
    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "request"], name="unique_task_request")]

    def __str__(self) -> str:
        return f"task #{self.task_id} serves request #{self.request_id}"


class ApiCall(models.Model):
    """One HTTP call to Mixpanel. No personal data, no tokens."""

    project = models.ForeignKey(MixpanelProject, on_delete=models.PROTECT, related_name="api_calls")
    task = models.ForeignKey(MixpanelTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_calls")
    operation = models.CharField(max_length=24)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "outcome"])]

    def __str__(self) -> str:
        return f"{self.operation} {self.http_status or '-'} {self.outcome}"


class SubjectExport(models.Model):
    """The file fetched for an access request, kept privately until it expires."""

    request = models.OneToOneField(DataSubjectRequest, on_delete=models.PROTECT, related_name="export")
    task = models.ForeignKey(MixpanelTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
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


class ActorType(models.TextChoices):
    STAFF = "staff", "Staff"
    SUBJECT = "subject", "Data subject"
    SYSTEM = "system", "System"
    AUDITOR = "auditor", "Auditor"


class AuditEvent(models.Model):
    """Append-only and hash-chained; the database refuses UPDATE and DELETE (see migrations)."""

    sequence = models.PositiveBigIntegerField(unique=True)
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    request_reference = models.CharField(max_length=16, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        indexes = [models.Index(fields=["occurred_at"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action}"


class SandboxTask(models.Model):
    """State of the built-in Mixpanel simulator (MIXPANEL_SANDBOX_ENABLED); not used against real Mixpanel."""

    tracking_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=10, choices=TaskKind.choices)
    project_token = models.CharField(max_length=64)
    compliance_type = models.CharField(max_length=4)
    disclosure_type = models.CharField(max_length=10, blank=True)
    distinct_ids = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    will_fail = models.BooleanField(default=False)
    # The project whose credential created the task: its API secret locks the retrieval archive.
    project = models.ForeignKey(MixpanelProject, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["project_token", "kind", "created_at"], name="sandbox_task_running_idx")]

    def __str__(self) -> str:
        return self.tracking_id


class SandboxRateSlot(models.Model):
    """The sandbox's last accepted call per project token, so that its 1 req/s limit holds across processes
    when no shared cache (Redis) is configured."""

    project_token = models.CharField(max_length=64, unique=True)
    last_call_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"rate slot {self.pk}"


class SubjectNotification(models.Model):
    """One email to a data subject about one event of a request (portal).

    The unique (request, event) pair makes a retried or redelivered task send it once; a row whose ``sent_at``
    stays empty is picked up again by a sweep, so a message lost by the broker still gets its email out.
    The row holds no personal data: the email is built from the request when it is sent.
    """

    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["request", "event"], name="unique_subject_notification")]
        indexes = [models.Index(fields=["sent_at", "created_at"])]

    def __str__(self) -> str:
        return f"{self.event} email for {self.request.reference}"


class StaffAlert(models.Model):
    """One staff email that was sent (or is being sent), so that the next sweep does not send it again.

    ``object_ref`` names what the alert is about (a request reference, ``project:<pk>``, or empty for a digest);
    ``key`` names the occasion (a due date, the time a request entered its state, a day), so that a new occasion
    for the same object alerts again. Alerts carry references and admin links only, never personal data.
    """

    kind = models.CharField(max_length=32)
    object_ref = models.CharField(max_length=64, blank=True)
    key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    recipient_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "object_ref", "key"], name="unique_staff_alert_occasion")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_ref} {self.key}".strip()
