"""Webhooks out: endpoints, one outbox row per (endpoint, event), and every delivery attempt (gdpr_requests/webhooks).

Rows hold references and statuses only: the payload is built from the request without its personal data.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gdpr_requests.crypto import EncryptedTextField

WEBHOOK_EVENTS = (
    "request.created",
    "request.verified",
    "request.approved",
    "request.completed",
    "request.rejected",
    "request.cancelled",
    "request.failed",
    "request.extended",
    "request.overdue",
)


class WebhookEndpoint(models.Model):
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    # "whsec_" + base64 of 32 random bytes (Standard Webhooks); encrypted at rest, shown once.
    secret = EncryptedTextField(editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return f"webhook {self.pk}: {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one endpoint. ``event_id`` is the ``webhook-id`` header: the same on every retry, so
    receivers can drop duplicates. A worker claims the row (``claimed_until``) with a conditional UPDATE."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=80)
    event_type = models.CharField(max_length=40)
    request_reference = models.CharField(max_length=16, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error_class = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="unique_webhook_delivery_per_event")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event_type} {self.request_reference} to webhook {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what came back and how long it took (no response body is kept)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error_class = models.CharField(max_length=80, blank=True)
    outcome = models.CharField(max_length=10)  # succeeded, retry, failed

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
