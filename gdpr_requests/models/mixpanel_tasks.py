"""Mixpanel GDPR tasks, the requests each serves, every HTTP call made for them, and the
rate-limit slot used when no Redis is configured."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gdpr_requests.crypto import EncryptedTextField
from gdpr_requests.models.projects import MixpanelProject
from gdpr_requests.models.requests import DataSubjectRequest, DisclosureType


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
