"""Identity resolution (gdpr_requests/identity): looking a request's email up in Mixpanel's profiles.

- IdentityLookup: one per request and project, the lookup's lifecycle (waiting → running → done | failed);
- IdentityCandidate: a profile the lookup found, for staff to accept (its id joins the request) or reject.
  Its distinct id and profile name are personal data: the name is encrypted, and both go when the request's
  personal data is purged (identity/candidates.py candidates_purge);
- ProjectLookupState: a project's backoff after 429s and server errors;
- ProfileLookupAccess: a proxy of MixpanelProject for the admin page that sets its Query API access;
- QueryBudgetUse, QueryBudgetLock: the database store of the Query API's rate limiter (identity/query_limiter.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from gdpr_requests.crypto import EncryptedTextField
from gdpr_requests.models.projects import MixpanelProject
from gdpr_requests.models.requests import DataSubjectRequest


class LookupStatus(models.TextChoices):
    WAITING = "waiting", "Waiting"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class CandidateState(models.TextChoices):
    PENDING = "pending", "Pending review"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class IdentityLookup(models.Model):
    """The lookup of one request's email in one project. ``claim_token`` names the batch (and the rate
    limiter's slot) that runs it; ``error`` is shown to staff and holds no personal data."""

    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="identity_lookups")
    project = models.ForeignKey(MixpanelProject, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=LookupStatus.choices, default=LookupStatus.WAITING)
    queued_at = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(default=timezone.now)
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    candidate_count = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request", "project"], name="unique_identity_lookup")]
        indexes = [
            models.Index(fields=["project", "status", "not_before"], name="identity_lookup_due_idx"),
            models.Index(fields=["claim_token"], name="identity_lookup_claim_idx"),
        ]

    def __str__(self) -> str:
        return f"lookup {self.pk} ({self.status})"


class IdentityCandidate(models.Model):
    """A profile whose email property matched the request's email."""

    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="identity_candidates")
    project = models.ForeignKey(MixpanelProject, on_delete=models.CASCADE, related_name="+")
    distinct_id = models.CharField(max_length=255)
    matched_property = models.CharField(max_length=255)
    last_seen = models.CharField("last seen", max_length=40, blank=True)
    profile_name = EncryptedTextField(blank=True)
    state = models.CharField(max_length=8, choices=CandidateState.choices, default=CandidateState.PENDING)
    found_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["request_id", "project_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "project", "distinct_id"], name="unique_identity_candidate")
        ]

    def __str__(self) -> str:
        return f"candidate {self.pk} of {self.request_id}"


class ProjectLookupState(models.Model):
    """A project's backoff: no query before ``backoff_until`` after a 429 or a server error."""

    project = models.OneToOneField(MixpanelProject, on_delete=models.CASCADE, related_name="lookup_state")
    backoff_until = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"lookup state of project {self.project_id}"


class QueryBudgetLock(models.Model):
    """One row per limiter key; taking a slot updates it first, which serialises takers of the same key."""

    key = models.CharField(max_length=64, unique=True)
    takes = models.PositiveBigIntegerField(default=0)
    waits = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return self.key


class QueryBudgetUse(models.Model):
    """One query taken against a key's budget. It counts for the window from ``counts_from``: when it was taken,
    moved to when it ended once released (so the window holds at Mixpanel's end, whatever the delays between
    taking a slot, arriving there and hearing back); and for concurrency until ``released_at`` (or
    ``held_until``, should its caller die)."""

    key = models.CharField(max_length=64)
    token = models.CharField(max_length=32, unique=True)
    counts_from = models.DateTimeField()
    held_until = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["key", "counts_from"], name="query_budget_key_idx")]

    def __str__(self) -> str:
        return f"{self.key} {self.counts_from:%H:%M:%S}"


class ProfileLookupAccess(MixpanelProject):
    """A project seen as its Query API access (the admin's "Profile lookup access" page; no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "profile lookup access"
        verbose_name_plural = "profile lookup access"
