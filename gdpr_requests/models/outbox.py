"""Outbox rows: emails to subjects and to staff, each sent once (the unique constraints make resends no-ops)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gdpr_requests.models.requests import DataSubjectRequest


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
