"""Outcome writers shared by the steps: counting an attempt, retrying later, giving up, and replacing a task
with children for part of its ids (a FAILURE split, a 409's remainder, a withdrawal's others)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.mixpanel.client import MixpanelError
from gdpr_requests.models import MixpanelTask, TaskRequestLink, TaskState
from gdpr_requests.pipeline.queries import live_ids, live_requests
from gdpr_requests.pipeline.settling import settle_inline_or_chunked, settle_now
from gdpr_requests.pipeline.task_updates import finish_step, task_audit
from gdpr_requests.pipeline.timing import after, backoff_seconds


def begin_attempt(task: MixpanelTask) -> MixpanelTask | None:
    """Count the attempt before the call (so a crash counts) and re-read the row; None when it moved on."""
    with transaction.atomic():
        fresh = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        if fresh.state != task.state:
            return None
        fresh.attempts += 1
        fresh.save(update_fields=["attempts", "updated_at"])
    return fresh


def retry_later(task: MixpanelTask, exc: MixpanelError, *, final_state: str = TaskState.FAILED) -> str:
    """A transient failure: try again after a backoff (Retry-After wins), or give up after MIXPANEL_MAX_ATTEMPTS."""
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        if task.attempts < settings.MIXPANEL_MAX_ATTEMPTS:
            task.last_error = str(exc)[:500]
            wait = backoff_seconds(task.attempts, exc.retry_after)
            finish_step(task, next_at=after(wait), fields=["last_error"])
            return "retry"
    return give_up(task, final_state, f"gave up after {task.attempts} attempts: {exc}")


def give_up(task: MixpanelTask, state: str, why: str) -> str:
    """End the task as FAILED or NEEDS_ATTENTION (``why`` holds no personal data) and fail its requests for staff."""
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        task.state = state
        task.last_error = why[:500]
        task.finished_at = timezone.now()
        task.result_url = ""
        finish_step(task, next_at=None, fields=["state", "last_error", "finished_at", "result_url"])
        task_audit(task, "task.failed" if state == TaskState.FAILED else "task.needs_attention", why=why[:200])
        # A whole batch failing (a lost task, a REVOKED one) fails its requests in chunks, as SUCCESS completes them.
        settle_inline_or_chunked(task.requests.values_list("pk", flat=True))
    return state


def child_task(parent: MixpanelTask, ids: list[str], requests: Any, now: Any) -> MixpanelTask:
    """A new task for part of ``parent``'s ids, serving the requests that ask for them."""
    child = MixpanelTask.objects.create(
        project=parent.project,
        kind=parent.kind,
        compliance_type=parent.compliance_type,
        disclosure_type=parent.disclosure_type,
        distinct_ids=ids,
        parent=parent,
        next_attempt_at=now,
    )
    wanted = set(ids)
    TaskRequestLink.objects.bulk_create(
        [TaskRequestLink(task=child, request=r) for r in requests if wanted.intersection(r.distinct_ids or [])],
        ignore_conflicts=True,
    )
    return child


def split_batch(task: MixpanelTask, *, why: str) -> str:
    """A multi-id deletion failed: resubmit it as two halves (parent SUPERSEDED), so one bad id fails alone."""
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        requests_live = list(live_requests(task))
        ids = live_ids(task)
        now = timezone.now()
        middle = (len(ids) + 1) // 2
        children = [child_task(task, half, requests_live, now) for half in (ids[:middle], ids[middle:]) if half]
        task.state = TaskState.SUPERSEDED
        task.finished_at = now
        task.last_error = why[:500]
        finish_step(
            task, next_at=None, fields=["state", "finished_at", "last_error", "status_history", "remote_status"]
        )
        task_audit(task, "task.split", why=why[:200], id_count=len(ids), child_task_ids=[c.pk for c in children])
        settle_now(r.pk for r in requests_live)
    return "split"
