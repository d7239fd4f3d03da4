"""What the pipeline's parts share: task state groups, timing rules, the client factory, call recording,
rescheduling, and settling requests once their tasks are done.

The database is the source of truth: every step reads the task row, does at most one HTTP call (outside any
transaction, so no row lock is held across the network), and writes the outcome and its audit events in one
transaction. Celery only carries task ids.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from .. import services, states
from ..audit import Actor, audit_record
from ..mixpanel.client import BASE_URLS, CallRecord, Credentials, MixpanelClient
from ..models import (
    ApiCall,
    DataSubjectRequest,
    MixpanelProject,
    MixpanelTask,
    RequestKind,
    TaskKind,
    TaskRequestLink,
    TaskState,
)

logger = logging.getLogger("gdpr_requests.pipeline")

SYSTEM = Actor.system("pipeline")

# States a sweep may hand to a worker.
DISPATCHABLE = (TaskState.PENDING_SUBMIT, TaskState.SUBMITTED, TaskState.DOWNLOADING)
# States whose ids count as being taken care of (planning does not plan them again).
COVERING = (*DISPATCHABLE, TaskState.PAUSED, TaskState.SUCCEEDED)
# States that no longer count for a request: replaced by other tasks, or withdrawn.
RETIRED = (TaskState.SUPERSEDED, TaskState.CANCELLED)
# States that send a request to `failed` for staff.
FAILING = (TaskState.FAILED, TaskState.NEEDS_ATTENTION)

# Remote statuses (MIXPANEL_GDPR_API.md).
PENDING, STAGING, STARTED = "PENDING", "STAGING", "STARTED"
SUCCESS, FAILURE, REVOKED, REMOTE_NOT_FOUND, UNKNOWN = "SUCCESS", "FAILURE", "REVOKED", "NOT_FOUND", "UNKNOWN"
CANCELLABLE_REMOTE = ("", PENDING, STAGING)
# Written into status_history when Mixpanel refused a cancel, so that no step tries again.
CANCEL_REFUSED = "CANCEL_REFUSED"
# The first status_history entry of a task we learnt about from a 409 (it may not be ours).
LINKED_BY_CONFLICT = "LINKED_BY_CONFLICT"

# Hosts a retrieval result may be downloaded from besides the project's own base URL.
MIXPANEL_DOWNLOAD_HOSTS = frozenset(
    {urlsplit(url).hostname for url in BASE_URLS.values()}
    | {"api.mixpanel.com", "api-eu.mixpanel.com", "api-in.mixpanel.com", "data.mixpanel.com", "data-eu.mixpanel.com"}
)

DELETION_CAVEAT = (
    "Mixpanel's deletion does not reach data already exported from Mixpanel to a data warehouse or other "
    "destination (for example through Data Pipelines), and it does not stop future tracking: if this person "
    "uses the product again, new data about them will be collected."
)


# --- timing -------------------------------------------------------------------------------------------


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempts``-th failure in a row (1-based).

    A server's Retry-After wins (capped at the maximum and never below the rate limit's interval): it knows
    better than our guess. Otherwise "equal jitter": half the exponential step for sure, the other half at
    random, so workers that failed together do not come back together.
    """
    ceiling = float(settings.MIXPANEL_BACKOFF_MAX_SECONDS)
    if retry_after is not None:
        return min(ceiling, max(float(retry_after), float(settings.MIXPANEL_MIN_INTERVAL_SECONDS)))
    step = min(ceiling, float(settings.MIXPANEL_BACKOFF_BASE_SECONDS) * 2 ** max(0, attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


def poll_delay(polls: int) -> float:
    """Seconds until the next status poll after ``polls`` polls: GDPR_POLL_INITIAL_SECONDS doubling to the max."""
    return min(float(settings.GDPR_POLL_MAX_SECONDS), float(settings.GDPR_POLL_INITIAL_SECONDS) * 2 ** max(0, polls))


def after(seconds: float, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=seconds)


def step_lease_seconds() -> float:
    """How long a step holds its task (GDPR_STEP_LEASE_SECONDS). Read at each step, not at import, so that
    override_settings and a test harness's environment reach it."""
    return float(settings.GDPR_STEP_LEASE_SECONDS)


def dispatch_lease_seconds() -> float:
    """How long a queued task stays claimed (GDPR_DISPATCH_LEASE_SECONDS): a message the broker lost is sent
    again by the first sweep after it. Read at call time, like step_lease_seconds."""
    return float(settings.GDPR_DISPATCH_LEASE_SECONDS)


# --- queries ------------------------------------------------------------------------------------------


def live_requests(task: MixpanelTask) -> QuerySet[DataSubjectRequest]:
    """The requests a task still serves: withdrawn ones no longer count."""
    return DataSubjectRequest.objects.filter(tasks=task).exclude(status=states.CANCELLED)


def live_ids(task: MixpanelTask) -> list[str]:
    """The task's distinct ids that some request it still serves asks for (task order kept)."""
    wanted: set[str] = set()
    for ids in live_requests(task).values_list("distinct_ids", flat=True):
        wanted.update(ids or [])
    return [value for value in task.distinct_ids if value in wanted]


def request_tasks(request_id: int) -> QuerySet[MixpanelTask]:
    return MixpanelTask.objects.filter(requests__pk=request_id)


def due_filter(now: datetime) -> Q:
    """Tasks whose next attempt is due and that no sweep or worker holds."""
    return (
        Q(state__in=DISPATCHABLE, next_attempt_at__lte=now)
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        & (Q(running_until__isnull=True) | Q(running_until__lte=now))
    )


def request_reference_of(task: MixpanelTask) -> str:
    """The request an event about this task belongs to, when it serves exactly one (a retrieval)."""
    refs = list(DataSubjectRequest.objects.filter(tasks=task).values_list("reference", flat=True)[:2])
    return refs[0] if len(refs) == 1 else ""


def project_folder(project: MixpanelProject) -> str:
    return slugify(project.name) or f"project-{project.pk}"


# --- the client and its call log ----------------------------------------------------------------------


def download_hosts(project: MixpanelProject) -> set[str]:
    hosts = set(MIXPANEL_DOWNLOAD_HOSTS)
    own = urlsplit(project.base_url).hostname
    if own:
        hosts.add(own)
    return hosts


def build_client(
    project: MixpanelProject, *, session: requests.Session, task: MixpanelTask | None = None
) -> MixpanelClient:
    """A client for ``project`` whose every HTTP attempt lands in ApiCall and the audit trail."""
    credentials = Credentials(
        base_url=project.base_url,
        project_token=project.project_token,
        oauth_token=project.oauth_token,
        integration_id=settings.MIXPANEL_INTEGRATION_ID,
    )
    reference = request_reference_of(task) if task is not None else ""
    return MixpanelClient(
        credentials,
        timeout=float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS),
        session=session,
        on_call=partial(_on_call, project=project, task=task, request_reference=reference),
    )


def _on_call(
    record: CallRecord, *, project: MixpanelProject, task: MixpanelTask | None, request_reference: str
) -> None:
    api_call_record(project=project, task=task, record=record, request_reference=request_reference)


def api_call_record(
    *, project: MixpanelProject, task: MixpanelTask | None, record: CallRecord, request_reference: str = ""
) -> ApiCall:
    """Log one HTTP attempt (no ids, tokens or links: the client's record carries none) and audit its outcome."""
    with transaction.atomic():
        call = ApiCall.objects.create(
            project=project,
            task=task,
            operation=record.operation,
            http_status=record.http_status,
            duration_ms=record.duration_ms,
            outcome=record.outcome,
        )
        payload: dict[str, Any] = {
            "operation": record.operation,
            "http_status": record.http_status,
            "outcome": record.outcome,
            "duration_ms": record.duration_ms,
            "project_pk": project.pk,
        }
        if task is not None:
            payload.update(task_id=task.pk, tracking_id=task.tracking_id, id_count=len(task.distinct_ids))
        audit_record(action="mixpanel.call", actor=SYSTEM, request_reference=request_reference, payload=payload)
    return call


# --- enqueueing ---------------------------------------------------------------------------------------


def enqueue_step(task_id: int, countdown: float = 0.0) -> None:
    """Send run_mixpanel_task for one task. Call it from on_commit only. A lost message is harmless."""
    from .. import tasks

    try:
        tasks.run_mixpanel_task.apply_async((task_id,), countdown=countdown if countdown > 0 else None)
    except Exception as exc:  # the broker is down: the next sweep finds the row once its claim runs out
        logger.warning("could not enqueue mixpanel task %s (%s)", task_id, type(exc).__name__)


def enqueue_plan(request_id: int) -> None:
    """Send plan_request for one approved request. Call it from on_commit only.

    One message per approval: a bulk approval queues thousands. They go at the lowest priority
    (settings.CELERY_TASK_ROUTES), so on Redis the dispatch sweep and the steps overtake them.
    """
    from .. import tasks

    try:
        tasks.plan_request.delay(request_id)
    except Exception as exc:  # the beat sweep (plan_approved) is the safety net
        logger.warning("could not enqueue planning of request %s (%s)", request_id, type(exc).__name__)


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


# --- settling requests --------------------------------------------------------------------------------


def settle_requests(request_ids: Iterable[int]) -> int:
    """Complete or fail every processing request whose tasks are all done. Inside the caller's transaction.

    A request completes when every task it counts on succeeded (across projects, 409-linked ones included);
    it fails, for staff, as soon as one of them failed or needs attention. A request on hold is settled when
    it resumes. Returns how many requests moved.

    Everything is read and decided before the first transition: the first audit event takes the chain's lock,
    held until the caller commits, so the reads stay out of it. A task serving many requests should not call
    this in its own transaction but through ``settling.settle_inline_or_chunked``.
    """
    requests = list(DataSubjectRequest.objects.filter(pk__in=set(request_ids), status=states.PROCESSING).order_by("pk"))
    if not requests:
        return 0
    tasks_of: dict[int, list[MixpanelTask]] = defaultdict(list)
    links = (
        TaskRequestLink.objects.filter(request_id__in=[r.pk for r in requests])
        .exclude(task__state__in=RETIRED)
        .select_related("task__project")
        .order_by("-task__created_at", "task_id")  # as request_tasks: the newest failure names the reason
    )
    for link in links:
        tasks_of[link.request_id].append(link.task)
    decisions: list[Callable[[], object]] = []
    for request in requests:
        tasks = tasks_of.get(request.pk)
        if not tasks:
            continue
        failed = [t for t in tasks if t.state in FAILING]
        if failed:
            why = failed[0].last_error or f"a Mixpanel {failed[0].kind} task {failed[0].get_state_display().lower()}"
            decisions.append(partial(services.request_fail, request=request, why=why))
        elif all(t.state == TaskState.SUCCEEDED for t in tasks):
            note = closing_note(request, tasks)
            decisions.append(partial(services.request_complete, request=request, closing_note=note))
    moved = 0
    for transition in decisions:
        try:
            transition()
        except states.TransitionNotAllowed:  # moved by someone else meanwhile: theirs wins
            continue
        moved += 1
    return moved


def closing_note(request: DataSubjectRequest, tasks: list[MixpanelTask]) -> str:
    names = sorted({t.project.name for t in tasks})
    where = f"{len(names)} Mixpanel project{'s' if len(names) != 1 else ''} ({', '.join(names)})"
    if request.kind == RequestKind.DELETION:
        return f"Mixpanel confirmed the deletion of this person's events and profile in {where}. {DELETION_CAVEAT}"
    export = getattr(request, "export", None)
    until = f" until {timezone.localdate(export.expires_at).isoformat()}" if export is not None else ""
    return f"Mixpanel's data about this person was retrieved from {where} and is available for download{until}."


def compliance_type_of(request: DataSubjectRequest) -> str:
    return request.regulation.upper()


def is_deletion(task: MixpanelTask) -> bool:
    return task.kind == TaskKind.DELETION
