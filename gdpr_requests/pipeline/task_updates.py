"""Writing a step's outcome on its task: release and reschedule, status history, the task's audit events.

The database is the source of truth: every step reads the task row, does at most one HTTP call (outside any
transaction, so no row lock is held across the network), and writes the outcome and its audit events in one
transaction. Celery only carries task ids."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import (
    MixpanelTask,
)
from gdpr_requests.pipeline.enqueue import enqueue_step
from gdpr_requests.pipeline.queries import request_reference_of
from gdpr_requests.pipeline.task_states import DISPATCHABLE
from gdpr_requests.pipeline.timing import dispatch_lease_seconds

SYSTEM = Actor.system("pipeline")


def finish_step(
    task: MixpanelTask, *, next_at: datetime | None, fields: Iterable[str] = (), follow_up: bool = True
) -> None:
    """Save the step's outcome fields, set the next attempt and release the task. Inside a transaction.

    With ``follow_up``, a next step due before the next sweep is enqueued with a countdown (and claimed, so the
    sweep leaves it): a download right after SUCCESS, a resubmission after a 409, a quick retry. A step that only
    found the rate limiter busy passes False: the sweep hands out a project's tasks at the limiter's pace, and
    tasks re-enqueueing themselves every second would only crowd the queue.
    """
    now = timezone.now()
    task.next_attempt_at = next_at
    task.running_until = None
    task.claimed_until = None
    soon = follow_up and next_at is not None and task.state in DISPATCHABLE
    countdown = max(0.0, (next_at - now).total_seconds()) if soon else 0.0
    if soon and countdown <= float(settings.GDPR_DISPATCH_INTERVAL_SECONDS):
        task.claimed_until = next_at + timedelta(seconds=dispatch_lease_seconds())
        transaction.on_commit(partial(enqueue_step, task.pk, countdown))
    task.save(update_fields=sorted({*fields, "next_attempt_at", "running_until", "claimed_until", "updated_at"}))


def history(task: MixpanelTask, status: str, now: datetime | None = None) -> None:
    """Note a remote status change (or one of our own milestones) in the task's status_history."""
    entries = list(task.status_history or [])
    if entries and entries[-1].get("status") == status:
        return
    entries.append({"at": (now or timezone.now()).isoformat(), "status": status})
    task.status_history = entries


def task_audit(task: MixpanelTask, action: str, **payload: Any) -> None:
    base = {"task_id": task.pk, "kind": task.kind, "project_pk": task.project_id, "tracking_id": task.tracking_id}
    audit_record(action=action, actor=SYSTEM, request_reference=request_reference_of(task), payload={**base, **payload})
