"""Withdrawing a request while Mixpanel works on it.

A deletion can be withdrawn only while none of its tasks has gone past PENDING/STAGING at Mixpanel (after that
Mixpanel will not cancel it). On withdrawal, its deletion tasks are cancelled: a task never sent just drops the
request's ids; a sent one is cancelled with DELETE by its next step. When a sent task also serves other
requests, it is still cancelled and the others' ids go into a new task, so the withdrawn ids are not deleted
and nobody else waits. Retrievals cannot be cancelled at Mixpanel: we just stop following them.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.utils import timezone

from gdpr_requests.models import DataSubjectRequest, MixpanelTask, RequestKind, TaskKind, TaskRequestLink, TaskState
from gdpr_requests.pipeline.calls import AMBIGUOUS_CREATE_OUTCOMES
from gdpr_requests.pipeline.enqueue import enqueue_step
from gdpr_requests.pipeline.outcomes import child_task
from gdpr_requests.pipeline.queries import live_requests
from gdpr_requests.pipeline.task_states import (
    CANCEL_REFUSED,
    CANCELLABLE_REMOTE,
    COVERING,
    DISPATCHABLE,
    LINKED_BY_CONFLICT,
)
from gdpr_requests.pipeline.task_updates import task_audit


def may_have_been_created(task: MixpanelTask) -> bool:
    """Whether Mixpanel may know this task: it has a tracking id, a create is in flight, or the last create got
    no clear answer (a timeout, a 5xx, a garbled 2xx). A 429 or another 4xx means nothing was created."""
    if task.tracking_id:
        return True
    if task.attempts == 0:
        return False
    if task.running_until is not None and task.running_until > timezone.now():
        return True
    last = task.api_calls.filter(operation__startswith="create_").order_by("-created_at", "-pk").first()
    if last is None or last.outcome in AMBIGUOUS_CREATE_OUTCOMES:
        return True
    return last.http_status is not None and 200 <= last.http_status < 300


def request_withdrawal_blocker(request: DataSubjectRequest) -> str:
    """Why the request cannot be withdrawn now ("" when the subject or staff may cancel it)."""
    if request.kind != RequestKind.DELETION:
        return ""
    for task in MixpanelTask.objects.filter(requests=request, state__in=COVERING, kind=TaskKind.DELETION):
        if task.state == TaskState.SUCCEEDED:
            return "Mixpanel has already carried out this deletion, so it can no longer be withdrawn."
        refused = any(entry.get("status") == CANCEL_REFUSED for entry in task.status_history or [])
        if task.remote_status not in CANCELLABLE_REMOTE or refused:
            return (
                f"Mixpanel has started this deletion (status {task.remote_status or 'STARTED'}), "
                "so it can no longer be withdrawn."
            )
        if not task.tracking_id and may_have_been_created(task):
            return (
                "This deletion is being sent to Mixpanel right now and its answer is not in yet; "
                "try again in a few minutes."
            )
    return ""


def request_cancel_tasks(*, request_id: int) -> int:
    """After a request was withdrawn: stop the work done only for it. Returns how many tasks were touched."""
    touched = 0
    to_run: list[int] = []
    with transaction.atomic():
        request = DataSubjectRequest.objects.filter(pk=request_id).first()
        if request is None:
            return 0
        tasks = list(
            MixpanelTask.objects.select_for_update(of=("self",))
            .filter(requests=request, state__in=(*DISPATCHABLE, TaskState.PAUSED))
            .select_related("project")
        )
        now = timezone.now()
        for task in tasks:
            others = list(live_requests(task))
            wanted: set[str] = set()
            for other in others:
                wanted.update(other.distinct_ids or [])
            other_ids = [value for value in task.distinct_ids if value in wanted]
            never_sent = not may_have_been_created(task)
            # A task we only know from a 409 may be someone else's deletion: never cancel that one at Mixpanel.
            not_ours = bool(task.status_history) and task.status_history[0].get("status") == LINKED_BY_CONFLICT
            if never_sent or not_ours or task.kind == TaskKind.RETRIEVAL:
                if other_ids and not not_ours:
                    task.distinct_ids = other_ids
                    task.save(update_fields=["distinct_ids", "updated_at"])
                    TaskRequestLink.objects.filter(task=task, request=request).delete()
                    task_audit(task, "task.request_withdrawn", id_count=len(other_ids))
                elif other_ids:
                    TaskRequestLink.objects.filter(task=task, request=request).delete()
                    task_audit(task, "task.request_withdrawn", id_count=len(other_ids))
                else:
                    task.state = TaskState.CANCELLED
                    task.finished_at = now
                    task.result_url = ""
                    task.save(update_fields=["state", "finished_at", "result_url", "updated_at"])
                    task_audit(task, "task.cancelled", remote=False, why="withdrawn")
                touched += 1
                continue
            # Sent to Mixpanel (or being sent): cancel it there, and give the other requests a task of their own.
            if other_ids:
                child = child_task(task, other_ids, others, now)
                TaskRequestLink.objects.filter(task=task, request__in=others).delete()
                task_audit(child, "task.resubmitted_for_others", source_task_id=task.pk, id_count=len(other_ids))
                to_run.append(child.pk)
            task.cancel_requested = True
            fields = ["cancel_requested", "updated_at"]
            if task.state in DISPATCHABLE and (task.next_attempt_at is None or task.next_attempt_at > now):
                task.next_attempt_at = now
                fields.append("next_attempt_at")
            task.save(update_fields=fields)
            task_audit(task, "task.cancel_requested", shared_with=len(others))
            to_run.append(task.pk)
            touched += 1
        for task_id in to_run:
            transaction.on_commit(partial(enqueue_step, task_id))
    return touched
