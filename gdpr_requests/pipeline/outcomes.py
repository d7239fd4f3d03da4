"""Outcome writers shared by the steps: starting an attempt, retrying later, giving up, and replacing a task
with children for part of its ids (a FAILURE split, a 409's remainder, a withdrawal's others)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.mixpanel.client import OK, MixpanelClient, MixpanelError
from gdpr_requests.models import ApiCall, DataSubjectRequest, MixpanelProject, MixpanelTask, TaskRequestLink, TaskState
from gdpr_requests.pipeline.calls import AMBIGUOUS_CREATE_OUTCOMES, api_call_begin, api_calls_unanswered, build_client
from gdpr_requests.pipeline.queries import live_ids, live_requests
from gdpr_requests.pipeline.settling import settle_inline_or_chunked, settle_now
from gdpr_requests.pipeline.task_updates import finish_step, task_audit
from gdpr_requests.pipeline.timing import after, backoff_seconds


@dataclass
class Attempt:
    """One call a step is about to make: the re-read task, a client bound to the call's SENDING row, and the
    create calls of earlier attempts whose answer never reached the task (their worker died)."""

    task: MixpanelTask
    client: MixpanelClient
    call: ApiCall
    lost_creates: list[ApiCall] = field(default_factory=list)


def begin_attempt(
    task: MixpanelTask,
    project: MixpanelProject,
    session: requests.Session,
    *,
    operation: str,
    prepare: Callable[[MixpanelTask], str | None] | None = None,
) -> Attempt | str:
    """The prologue of every step that calls Mixpanel, in one transaction under the task's row lock: re-read the
    task (an outcome word when it moved on), write off the calls a dead worker left SENDING, let ``prepare``
    have its say (an outcome word stops the step), count the attempt (so a crash counts) and commit the
    SENDING row of the call about to be made. The caller holds the task's lease (task_step)."""
    with transaction.atomic():
        fresh = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        if fresh.state != task.state:
            finish_step(fresh, next_at=fresh.next_attempt_at)
            return "skipped"
        unanswered = api_calls_unanswered(task=fresh)
        lost = [c for c in unanswered if c.operation.startswith("create_")]
        if operation.startswith("create_") and not fresh.tracking_id:
            # A create answered OK whose task id never reached the task: its worker died between the two writes.
            last = fresh.api_calls.filter(operation__startswith="create_").order_by("-created_at", "-pk").first()
            if last is not None and last.outcome == OK:
                lost.append(last)
        if prepare is not None:
            stop = prepare(fresh)
            if stop:
                return stop
        fresh.attempts += 1
        fresh.save(update_fields=["attempts", "distinct_ids", "updated_at"])
        call = api_call_begin(task=fresh, operation=operation)
    client = build_client(project, session=session, task=fresh, call=call)
    return Attempt(task=fresh, client=client, call=call, lost_creates=lost)


def may_have_created(task: MixpanelTask, *, before: ApiCall | None = None) -> bool:
    """Whether an earlier create of this task may have made a task at Mixpanel that we have no id of: its answer
    was lost (a dead worker, a timeout, a 5xx, a garbled 2xx). A 429 or another 4xx created nothing."""
    earlier = task.api_calls.filter(operation__startswith="create_", outcome__in=AMBIGUOUS_CREATE_OUTCOMES)
    if before is not None:
        earlier = earlier.exclude(pk=before.pk)
    return earlier.exists()


def retry_later(task: MixpanelTask, exc: MixpanelError | str, *, final_state: str = TaskState.FAILED) -> str:
    """A transient failure (a Mixpanel error, or a message for one of ours): try again after a backoff
    (Retry-After wins), or give up after MIXPANEL_MAX_ATTEMPTS."""
    retry_after = exc.retry_after if isinstance(exc, MixpanelError) else None
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        if task.attempts < settings.MIXPANEL_MAX_ATTEMPTS:
            task.last_error = str(exc)[:500]
            wait = backoff_seconds(task.attempts, retry_after)
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


def child_task(
    parent: MixpanelTask, ids: list[str], requests: Iterable[DataSubjectRequest], now: datetime
) -> MixpanelTask:
    """A new task for part of ``parent``'s ids, serving those of ``requests`` that ask for them (a FAILURE split,
    a 409's remainder, a withdrawal's others). Inside the caller's transaction."""
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


def split_ways() -> int:
    """Into how many parts a failed batch is split (GDPR_FAILURE_SPLIT_WAYS, at least 2)."""
    return max(2, int(settings.GDPR_FAILURE_SPLIT_WAYS))


def split_parts(ids: list[str], ways: int) -> list[list[str]]:
    """``ids`` in at most ``ways`` consecutive parts of nearly equal size (order kept, none empty)."""
    size = math.ceil(len(ids) / max(1, ways)) if ids else 1
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def split_batch(task: MixpanelTask, *, why: str) -> str:
    """A multi-id deletion failed: resubmit it as GDPR_FAILURE_SPLIT_WAYS parts (parent SUPERSEDED), so that one
    bad id holds back only its part: the other parts complete one round later, and the bad id is alone after
    about log_k(n) rounds instead of log_2(n)."""
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        requests_live = list(live_requests(task))
        ids = live_ids(task)
        now = timezone.now()
        children = [child_task(task, part, requests_live, now) for part in split_parts(ids, split_ways())]
        task.state = TaskState.SUPERSEDED
        task.finished_at = now
        task.last_error = why[:500]
        finish_step(
            task, next_at=None, fields=["state", "finished_at", "last_error", "status_history", "remote_status"]
        )
        task_audit(task, "task.split", why=why[:200], id_count=len(ids), child_task_ids=[c.pk for c in children])
        settle_now(r.pk for r in requests_live)
    return "split"
