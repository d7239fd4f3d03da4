"""One step of one Mixpanel task: submit, poll, cancel or download, whichever its state calls for.

``task_step`` is idempotent and safe to run twice at once: it first takes the task with a conditional UPDATE
of ``running_until`` (a lease of GDPR_STEP_LEASE_SECONDS; a crashed worker's task is due again once it passes),
then a slot from the project's rate limiter (none free: the task is rescheduled for when one frees, nobody
sleeps), then makes its one HTTP call outside any transaction, and writes the outcome and its audit events in one
transaction. The slot is taken ``until_finished``: the database work between taking it and sending can outlast
the limiter's interval, and the next call must not start before this one was sent and answered.

``attempts`` counts the unsuccessful attempts in a row of the current phase. It goes up before each call and
back to 0 on success, so a step that crashes mid-call counts too, and MIXPANEL_MAX_ATTEMPTS ends any loop.
For a PENDING_SUBMIT task it also marks that a create was sent: planning no longer adds ids to it.
"""

from __future__ import annotations

import logging

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gdpr_requests.crypto import DecryptionError
from gdpr_requests.mixpanel import ratelimit
from gdpr_requests.mixpanel.client import (
    CONFLICT,
    CREDENTIAL,
    NOT_FOUND,
    RATE_LIMITED,
    TRANSIENT,
    DeletionStatus,
    MixpanelError,
    RetrievalStatus,
)
from gdpr_requests.models import ApiCall, CredentialStatus, MixpanelProject, MixpanelTask, TaskRequestLink, TaskState
from gdpr_requests.pipeline.alerts import alert_staff_orphaned_retrieval
from gdpr_requests.pipeline.credentials import credential_failed, credential_refused
from gdpr_requests.pipeline.outcomes import (
    begin_attempt,
    child_task,
    give_up,
    may_have_created,
    retry_later,
    split_batch,
)
from gdpr_requests.pipeline.queries import live_ids, live_requests
from gdpr_requests.pipeline.retrieval import download
from gdpr_requests.pipeline.settling import settle_inline_or_chunked, settle_now
from gdpr_requests.pipeline.task_states import (
    ADOPTED,
    CANCEL_REFUSED,
    CANCELLABLE_REMOTE,
    DISPATCHABLE,
    FAILURE,
    LINKED_BY_CONFLICT,
    REMOTE_NOT_FOUND,
    REVOKED,
    SUCCESS,
    UNKNOWN,
    is_deletion,
)
from gdpr_requests.pipeline.task_updates import finish_step, history, task_audit
from gdpr_requests.pipeline.timing import after, poll_delay, step_lease_seconds

logger = logging.getLogger("gdpr_requests.pipeline")

SUBMIT, POLL, CANCEL, DOWNLOAD = "submit", "poll", "cancel", "download"


def task_step(*, task_id: int) -> str:
    """Do what the task's state calls for, once. Returns a word for logs and tests: what happened."""
    outcome = _step(task_id)
    logger.info("mixpanel task %s: %s", task_id, outcome)
    return outcome


def _step(task_id: int) -> str:
    now = timezone.now()
    taken = (
        MixpanelTask.objects.filter(pk=task_id, state__in=DISPATCHABLE, next_attempt_at__lte=now)
        .filter(Q(running_until__isnull=True) | Q(running_until__lte=now))
        .update(running_until=after(step_lease_seconds(), now))
    )
    if not taken:
        return "skipped"  # not due, not active, or another worker has it: a duplicate message
    task = MixpanelTask.objects.select_related("project").get(pk=task_id)
    project = task.project
    if project.credential_status == CredentialStatus.FAILING:
        with transaction.atomic():
            task.state = TaskState.PAUSED
            finish_step(task, next_at=None, fields=["state"])
            task_audit(task, "task.paused", why="the project's credential is failing")
        return "paused"
    action = _action_for(task)
    if action is None:
        return "cancelled"
    try:
        key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)
    except DecryptionError:
        credential_failed(
            project, http_status=None, error="The stored OAuth token cannot be decrypted with FIELD_ENCRYPTION_KEYS."
        )
        return "paused"
    try:
        wait = ratelimit.acquire(key, until_finished=True)
    except ratelimit.RateLimiterUnavailable:
        wait = float(settings.GDPR_DISPATCH_INTERVAL_SECONDS)
    if wait > 0:
        with transaction.atomic():
            finish_step(task, next_at=after(wait), follow_up=False)
        logger.debug("mixpanel task %s waits %.2fs for the rate limiter", task_id, wait)
        return "waiting"
    session = requests.Session()
    try:
        handler = {SUBMIT: _submit, POLL: _poll, CANCEL: _cancel, DOWNLOAD: download}[action]
        return handler(task, project, session)
    finally:
        session.close()
        ratelimit.finished(key)


def _linked_by_conflict(task: MixpanelTask) -> bool:
    return bool(task.status_history) and task.status_history[0].get("status") == LINKED_BY_CONFLICT


def _wants_cancel(task: MixpanelTask) -> bool:
    if _linked_by_conflict(task):
        return False  # possibly someone else's deletion: never cancelled by us
    if any(entry.get("status") == CANCEL_REFUSED for entry in task.status_history or []):
        return False
    if task.cancel_requested:
        return True
    # Safety net for a lost cancel hook: a deletion no live request asks for any more is cancelled while it can be.
    return task.remote_status in CANCELLABLE_REMOTE and not live_requests(task).exists()


def _action_for(task: MixpanelTask) -> str | None:
    if task.state == TaskState.PENDING_SUBMIT:
        return SUBMIT
    # What we cannot (a retrieval) or must not (someone else's deletion) cancel at Mixpanel, we stop following
    # once nobody asks for it any more.
    follow_only = task.state == TaskState.DOWNLOADING or not is_deletion(task) or _linked_by_conflict(task)
    if follow_only and not live_requests(task).exists():
        with transaction.atomic():
            task.state = TaskState.CANCELLED
            task.result_url = ""
            task.finished_at = timezone.now()
            finish_step(task, next_at=None, fields=["state", "result_url", "finished_at"])
            task_audit(task, "task.cancelled", remote=False)
        return None
    if task.state == TaskState.DOWNLOADING:
        return DOWNLOAD
    if is_deletion(task) and _wants_cancel(task):
        return CANCEL
    return POLL


# --- submit -------------------------------------------------------------------------------------------


def _submit(task: MixpanelTask, project: MixpanelProject, session: requests.Session) -> str:
    operation = "create_deletion" if is_deletion(task) else "create_retrieval"
    attempt = begin_attempt(task, project, session, operation=operation, prepare=_prepare_submit)
    if isinstance(attempt, str):
        return attempt
    task, client = attempt.task, attempt.client
    if attempt.lost_creates:
        _create_answer_lost(task, attempt.lost_creates)
    ids = list(task.distinct_ids)
    try:
        if is_deletion(task):
            tracking_id = client.create_deletion(distinct_ids=ids, compliance_type=task.compliance_type)
        else:
            tracking_id = client.create_retrieval(
                distinct_ids=ids, compliance_type=task.compliance_type, disclosure_type=task.disclosure_type or None
            )
    except MixpanelError as exc:
        return _submit_failed(task, exc, call=attempt.call)
    return _submitted(task, tracking_id, id_count=len(ids))


def _prepare_submit(task: MixpanelTask) -> str | None:
    """Under the task's lock, before a create: fix the id list Mixpanel gets (planning leaves a task with
    attempts > 0 alone), or cancel a task nobody asks for any more."""
    ids = live_ids(task)
    if not ids:
        task.state = TaskState.CANCELLED
        task.finished_at = timezone.now()
        finish_step(task, next_at=None, fields=["state", "finished_at"])
        task_audit(task, "task.cancelled", remote=False, why="withdrawn before it was sent")
        return "cancelled"
    task.distinct_ids = ids
    return None


def _create_answer_lost(task: MixpanelTask, lost: list[ApiCall]) -> None:
    """An earlier create of this task was sent and its answer never recorded (the worker died). For a deletion,
    the resubmission's 409 names the task Mixpanel made, and it is adopted (_adopt). A retrieval cannot be
    looked up (the API has no list endpoint, MIXPANEL_GDPR_API.md "Limits"): Mixpanel may run it twice, so the
    orphan goes into the evidence and staff are told once."""
    with transaction.atomic():
        task_audit(
            task,
            "task.create_answer_lost",
            api_call_ids=[c.pk for c in lost],
            possibly_created=True,
            remote_id_known=False,
            resolution="resubmit; a 409 names the task" if is_deletion(task) else "resubmit; orphan cannot be found",
        )
        if not is_deletion(task):
            task_id, call_id = task.pk, lost[-1].pk
            transaction.on_commit(lambda: alert_staff_orphaned_retrieval(task_id=task_id, api_call_id=call_id))
    logger.warning("mixpanel task %s: the answer to an earlier create was lost; resubmitting", task.pk)


def _submitted(task: MixpanelTask, tracking_id: str, *, id_count: int, adopted: bool = False) -> str:
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        if task.tracking_id or task.state not in (TaskState.PENDING_SUBMIT, TaskState.PAUSED):
            # Our lease ran out mid-call and another step went on with the task: keep the extra id in the evidence.
            task_audit(task, "task.create_duplicate", duplicate_tracking_id=tracking_id)
            return "skipped"
        now = timezone.now()
        task.tracking_id = tracking_id
        # A credential refused meanwhile (another worker's call) paused the task: it keeps the id and resumes polling.
        if task.state == TaskState.PENDING_SUBMIT:
            task.state = TaskState.SUBMITTED
        task.remote_status = ""
        task.submitted_at = now
        task.attempts = 0
        task.polls = 0
        task.last_error = ""
        history(task, ADOPTED if adopted else "CREATED", now)
        next_at = now if task.cancel_requested else after(poll_delay(0), now)
        finish_step(
            task,
            next_at=next_at,
            fields=[
                "tracking_id",
                "state",
                "remote_status",
                "submitted_at",
                "attempts",
                "polls",
                "last_error",
                "status_history",
            ],
        )
        extra = {"adopted": True} if adopted else {}
        task_audit(task, "task.submitted", id_count=id_count, request_count=task.requests.count(), **extra)
    return "adopted" if adopted else "submitted"


def _submit_failed(task: MixpanelTask, exc: MixpanelError, *, call: ApiCall) -> str:
    if exc.kind == CREDENTIAL:
        return credential_refused(task.project, exc)
    if exc.kind == CONFLICT and is_deletion(task):
        adopt = _adoptable(task, exc, call=call)
        if adopt:
            return _submitted(task, adopt, id_count=len(task.distinct_ids), adopted=True)
        return _conflict(task, exc)
    answered_ok = exc.http_status is not None and 200 <= exc.http_status < 300
    if exc.kind in (TRANSIENT, RATE_LIMITED) or answered_ok:
        if not is_deletion(task) and exc.kind != RATE_LIMITED and (exc.http_status is None or answered_ok):
            # The create may have gone through and its answer got lost. There is no way to look a retrieval
            # up, so we resubmit; a second retrieval of the same data costs Mixpanel work, not correctness.
            with transaction.atomic():
                task_audit(task, "task.create_ambiguous", error=str(exc)[:200], attempts=task.attempts)
        return retry_later(task, exc)
    # Mixpanel refused the payload (400, 404): repeating it would fail again. Halve a batch to find the bad id.
    if is_deletion(task) and len(task.distinct_ids) > 1:
        return split_batch(task, why=str(exc))
    return give_up(task, TaskState.FAILED, str(exc))


def _adoptable(task: MixpanelTask, exc: MixpanelError, *, call: ApiCall) -> str:
    """The tracking id to adopt when a 409 answers the resubmission of a create that may have gone through:
    every id we sent conflicts, with one task we do not know. Mixpanel answers a create for ids a deletion
    already runs for with 409 naming that task (MIXPANEL_GDPR_API.md, "Errors" and "Limits": "re-submitting
    answers 409 naming the existing task: use that as the confirmation"), so that task is ours. "" otherwise."""
    task_ids = set(exc.conflicting_task_ids)
    if len(task_ids) != 1 or not set(task.distinct_ids) <= set(exc.conflicting_distinct_ids):
        return ""
    if not may_have_created(task, before=call):
        return ""
    (tracking_id,) = task_ids
    if MixpanelTask.objects.filter(project=task.project_id, kind=task.kind, tracking_id=tracking_id).exists():
        return ""  # one of our tasks: linked by _conflict as usual
    return tracking_id


def _conflict(task: MixpanelTask, exc: MixpanelError) -> str:
    """409: deletions already run for some ids. Link those ids to the running tasks, resubmit the rest."""
    conflicting = [value for value in task.distinct_ids if value in set(exc.conflicting_distinct_ids)]
    if not conflicting or not exc.conflicting_task_ids:
        # Nothing we can link to: the running deletion will end; try again later.
        return retry_later(task, exc)
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        requests_by_pk = {r.pk: r for r in live_requests(task)}
        known = {
            t.tracking_id: t
            for t in MixpanelTask.objects.select_for_update().filter(
                project=task.project, kind=task.kind, tracking_id__in=exc.conflicting_task_ids
            )
        }
        if any(t.state == TaskState.CANCELLED for t in known.values()):
            # Our own cancelled task still blocks the ids at Mixpanel for a moment: wait for it to go.
            return retry_later(task, exc)
        unknown_ids = [tid for tid in exc.conflicting_task_ids if tid not in known]
        # Ids that a known running task carries belong to it; the others go to the tasks we did not know.
        unassigned = [value for value in conflicting if not any(value in t.distinct_ids for t in known.values())]
        now = timezone.now()
        targets: list[tuple[MixpanelTask, list[str]]] = []
        for t in known.values():
            targets.append((t, [value for value in conflicting if value in t.distinct_ids]))
        for index, tracking_id in enumerate(unknown_ids):
            # One id per task when the lists pair up (Mixpanel lists them in the same order); else all to the first.
            paired = len(unknown_ids) == len(unassigned)
            share = [unassigned[index]] if paired else (unassigned if index == 0 else [])
            created = MixpanelTask.objects.create(
                project=task.project,
                kind=task.kind,
                compliance_type=task.compliance_type,
                distinct_ids=share,
                parent=task,
                tracking_id=tracking_id,
                state=TaskState.SUBMITTED,
                submitted_at=now,
                status_history=[{"at": now.isoformat(), "status": LINKED_BY_CONFLICT}],
                next_attempt_at=now,
            )
            task_audit(created, "task.linked_by_conflict", source_task_id=task.pk, id_count=len(share))
            targets.append((created, share))
        linked = 0
        for target, ids in targets:
            if target.state not in (TaskState.SUBMITTED, TaskState.SUCCEEDED, TaskState.PAUSED):
                # A task we had given up on (or retired) is evidently still running at Mixpanel: follow it again.
                target.state = TaskState.SUBMITTED
                target.attempts = 0
                target.next_attempt_at = now
                target.save(update_fields=["state", "attempts", "next_attempt_at", "updated_at"])
            wanted = set(ids) or set(conflicting)
            for request in requests_by_pk.values():
                if wanted.intersection(request.distinct_ids or []):
                    _, made = TaskRequestLink.objects.get_or_create(task=target, request=request)
                    linked += int(made)
        rest = [value for value in task.distinct_ids if value not in set(conflicting)]
        task.state = TaskState.SUPERSEDED
        task.finished_at = now
        task.last_error = str(exc)[:500]
        finish_step(task, next_at=None, fields=["state", "finished_at", "last_error"])
        child_id = None
        if rest:
            child = child_task(task, rest, requests_by_pk.values(), now)
            child_id = child.pk
        task_audit(
            task,
            "task.conflict",
            conflicting_count=len(conflicting),
            linked_tasks=len(targets),
            links_made=linked,
            resubmitted_count=len(rest),
            resubmitted_task_id=child_id,
        )
        settle_now(requests_by_pk)
    return "conflict"


# --- poll ---------------------------------------------------------------------------------------------


def _poll(task: MixpanelTask, project: MixpanelProject, session: requests.Session) -> str:
    operation = "deletion_status" if is_deletion(task) else "retrieval_status"
    attempt = begin_attempt(task, project, session, operation=operation)
    if isinstance(attempt, str):
        return attempt
    task, client = attempt.task, attempt.client
    try:
        if is_deletion(task):
            status: DeletionStatus | RetrievalStatus = client.deletion_status(tracking_id=task.tracking_id)
        else:
            status = client.retrieval_status(tracking_id=task.tracking_id)
    except MixpanelError as exc:
        if exc.kind == CREDENTIAL:
            return credential_refused(project, exc)
        if exc.kind == NOT_FOUND:
            return give_up(task, TaskState.NEEDS_ATTENTION, "Mixpanel does not know this task (HTTP 404)")
        return retry_later(task, exc, final_state=TaskState.NEEDS_ATTENTION)
    return _apply_status(task, status)


def _apply_status(task: MixpanelTask, status: DeletionStatus | RetrievalStatus) -> str:
    remote = status.status
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task.pk)
        if task.state != TaskState.SUBMITTED:
            finish_step(task, next_at=task.next_attempt_at)
            return "skipped"
        now = timezone.now()
        changed = remote != task.remote_status and remote != UNKNOWN
        history(task, remote, now)
        if remote != UNKNOWN:
            task.remote_status = remote  # UNKNOWN is a failed lookup, not news: keep the last real status
        task.polls += 1
        fields = ["remote_status", "status_history", "polls", "attempts", "last_error", "requesting_user"]
        if isinstance(status, DeletionStatus) and status.requesting_user:
            task.requesting_user = status.requesting_user[:254]
        if changed:
            task_audit(task, "task.status", status=remote, polls=task.polls)
        if remote == SUCCESS and is_deletion(task):
            task.state = TaskState.SUCCEEDED
            task.attempts = 0
            task.last_error = ""
            task.finished_at = now
            finish_step(task, next_at=None, fields=[*fields, "state", "finished_at"])
            task_audit(task, "task.succeeded", id_count=len(task.distinct_ids))
            # A coalesced batch's requests settle in chunks after this commits: not under this transaction's
            # hold of the audit chain's lock (settling.py).
            settle_inline_or_chunked(task.requests.values_list("pk", flat=True))
            return "succeeded"
        if remote == SUCCESS:
            link = getattr(status, "result_url", "")
            if not link:
                # SUCCESS with an empty link: look again later, but not forever (attempts keep counting).
                task.last_error = "Mixpanel reported SUCCESS without a result link"
                if task.attempts >= settings.MIXPANEL_MAX_ATTEMPTS:
                    finish_step(task, next_at=None, fields=fields)  # given up on below
                else:
                    finish_step(task, next_at=after(poll_delay(task.polls - 1), now), fields=fields)
                    return "polled"
            else:
                # Download at once: the link's lifetime is undocumented.
                task.state = TaskState.DOWNLOADING
                task.result_url = link
                task.attempts = 0
                task.last_error = ""
                # The slot this poll used frees one interval after it: be there then.
                finish_step(
                    task, next_at=after(ratelimit.interval_seconds(), now), fields=[*fields, "state", "result_url"]
                )
                return "downloading"
        elif remote == FAILURE:
            task.attempts = 0
            finish_step(task, next_at=None, fields=fields)
        elif remote == REVOKED:
            task.attempts = 0
            if task.cancel_requested:
                task.state = TaskState.CANCELLED
                task.finished_at = now
                finish_step(task, next_at=None, fields=[*fields, "state", "finished_at"])
                task_audit(task, "task.cancelled", remote=True)
                return "cancelled"
            finish_step(task, next_at=None, fields=fields)
        elif remote == REMOTE_NOT_FOUND:
            task.attempts = 0
            finish_step(task, next_at=None, fields=fields)
        else:  # PENDING, STAGING, STARTED, UNKNOWN, or a status we do not know: look again later
            task.attempts = 0
            task.last_error = ""
            cancel_now = is_deletion(task) and remote in CANCELLABLE_REMOTE and _wants_cancel(task)
            next_at = now if cancel_now else after(poll_delay(task.polls), now)
            finish_step(task, next_at=next_at, fields=fields)
            return "polled"
    # Final remote answers that end the task badly (outside the transaction above: these open their own).
    if remote == SUCCESS:
        return give_up(task, TaskState.NEEDS_ATTENTION, "Mixpanel reported SUCCESS without a result link")
    if remote == FAILURE:
        if is_deletion(task) and len(task.distinct_ids) > 1:
            return split_batch(task, why="Mixpanel reported FAILURE for the batch")
        return give_up(task, TaskState.FAILED, f"Mixpanel reported FAILURE for this {task.kind}")
    if remote == REVOKED:
        return give_up(task, TaskState.NEEDS_ATTENTION, "the task was cancelled at Mixpanel (REVOKED)")
    return give_up(task, TaskState.NEEDS_ATTENTION, "Mixpanel does not know this task (NOT_FOUND)")


# --- cancel -------------------------------------------------------------------------------------------


def _cancel(task: MixpanelTask, project: MixpanelProject, session: requests.Session) -> str:
    attempt = begin_attempt(task, project, session, operation="cancel_deletion")
    if isinstance(attempt, str):
        return attempt
    task, client = attempt.task, attempt.client
    try:
        client.cancel_deletion(tracking_id=task.tracking_id)
    except MixpanelError as exc:
        if exc.kind == CREDENTIAL:
            return credential_refused(project, exc)
        if exc.kind in (TRANSIENT, RATE_LIMITED):
            return retry_later(task, exc, final_state=TaskState.NEEDS_ATTENTION)
        if exc.kind != NOT_FOUND:
            # Refused (400/409): it has started, or Mixpanel will not say. Follow it to its end instead.
            with transaction.atomic():
                task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
                history(task, CANCEL_REFUSED)
                task.cancel_requested = False
                task.attempts = 0
                task.last_error = str(exc)[:500]
                finish_step(
                    task,
                    next_at=after(poll_delay(task.polls)),
                    fields=["status_history", "cancel_requested", "attempts", "last_error"],
                )
                task_audit(task, "task.cancel_refused", http_status=exc.http_status)
            return "cancel_refused"
    with transaction.atomic():
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        now = timezone.now()
        history(task, REVOKED, now)
        task.remote_status = REVOKED
        task.state = TaskState.CANCELLED
        task.finished_at = now
        task.attempts = 0
        finish_step(task, next_at=None, fields=["status_history", "remote_status", "state", "finished_at", "attempts"])
        task_audit(task, "task.cancelled", remote=True)
        settle_now(live_requests(task).values_list("pk", flat=True))
    return "cancelled"
