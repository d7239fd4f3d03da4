"""State of the built-in Mixpanel simulator (development only: never installed in production)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gdpr_requests.models import MixpanelProject, TaskKind


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
