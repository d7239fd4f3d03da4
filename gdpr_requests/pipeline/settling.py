"""Settling the requests of a finished task in short transactions, and the sweep that catches up on lost ones.

A coalesced deletion serves up to a batch size (1999) of requests. Completing them all in the transaction that
records the task's outcome writes an audit event per request, so the audit chain's lock (taken at the first
event, held to COMMIT) would be held for the whole settle: every other audit writer, the public request form
included, waits, and the step runs close to its Celery time limit (past it, everything rolls back and repeats).

So a task serving more than SETTLE_INLINE_MAX requests records its outcome alone, and once that commits, sends
their ids in settle_requests_chunk messages of SETTLE_CHUNK_SIZE, each settled in its own transaction. The
common case (a few requests) still settles inline, in the outcome's transaction. A chunk is idempotent: only
requests still in processing whose tasks are done move. A message the broker loses is made up for by the beat
sweep ``settle_finished``, which settles processing requests whose tasks all finished a while ago.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import partial

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from gdpr_requests.models import DataSubjectRequest, MixpanelTask, RequestKind, TaskRequestLink, TaskState
from gdpr_requests.pipeline.enqueue import enqueue_settle_chunks
from gdpr_requests.pipeline.task_states import FAILING, RETIRED
from gdpr_requests.requests import services, states

logger = logging.getLogger("gdpr_requests.pipeline")

# More requests than this are settled after the outcome commits, in chunk messages, not in its transaction.
SETTLE_INLINE_MAX = 50
# Requests per chunk message and transaction: the chain lock is held for about this many transitions.
SETTLE_CHUNK_SIZE = 100
# The sweep leaves a finished task's requests to its chunk messages this long, then settles them itself.
SETTLE_SWEEP_GRACE = timedelta(minutes=10)
# One sweep settles at most this many requests, and stops starting chunks after this long (Celery's soft time
# limit is 120 s); the next sweep takes the rest.
SETTLE_SWEEP_MAX = 2000
SETTLE_SWEEP_BUDGET_SECONDS = 60.0


DELETION_CAVEAT = (
    "Mixpanel's deletion does not reach data already exported from Mixpanel to a data warehouse or other "
    "destination (for example through Data Pipelines), and it does not stop future tracking: if this person "
    "uses the product again, new data about them will be collected."
)


def settle_now(request_ids: Iterable[int]) -> int:
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


def chunked(ids: Sequence[int], size: int = SETTLE_CHUNK_SIZE) -> list[list[int]]:
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]


def settle_inline_or_chunked(request_ids: Iterable[int]) -> int:
    """Settle a finished task's requests: inline when few, else in chunk messages after the caller commits.

    Inside the outcome's transaction. Returns how many chunk messages will be sent (0: settled inline). The
    task's own events are committed before any request moves, so the trail tells the story in order.
    """
    ids = sorted(set(request_ids))
    if len(ids) <= SETTLE_INLINE_MAX:
        settle_now(ids)
        return 0
    chunks = chunked(ids)
    transaction.on_commit(partial(enqueue_settle_chunks, chunks))
    return len(chunks)


def settle_chunk(*, request_ids: Sequence[int]) -> int:
    """Settle one chunk of requests in its own transaction (a settle_requests_chunk message). Idempotent.

    Returns how many requests moved. The chunk's processing rows are locked first, skipping any that another
    transaction holds: a settler that waited for a row while holding the audit chain's lock could deadlock
    with one holding that row and waiting for the chain. A skipped request is being moved by someone else;
    should it still be processing afterwards, the sweep settles it.
    """
    with transaction.atomic():
        query = DataSubjectRequest.objects.filter(pk__in=list(request_ids), status=states.PROCESSING)
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True)
        ids = list(query.order_by("pk").values_list("pk", flat=True))
        return settle_now(ids)


def finished_unsettled(*, settled_before: timedelta = SETTLE_SWEEP_GRACE, limit: int = SETTLE_SWEEP_MAX) -> list[int]:
    """Processing requests that settle_now would move, whose tasks all finished more than
    ``settled_before`` ago (so their own chunk messages had their chance): one of their tasks failed or needs
    attention, or every task they count on succeeded."""
    cutoff = timezone.now() - settled_before
    counted = MixpanelTask.objects.filter(requests=OuterRef("pk")).exclude(state__in=RETIRED)
    return list(
        DataSubjectRequest.objects.filter(status=states.PROCESSING)
        .filter(Exists(counted))
        .exclude(Exists(counted.filter(finished_at__gt=cutoff)))
        .filter(Exists(counted.filter(state__in=FAILING)) | ~Exists(counted.exclude(state=TaskState.SUCCEEDED)))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def settle_finished() -> int:
    """Beat sweep: settle the requests whose settling message was lost (or failed), in chunk transactions.
    Returns how many requests moved."""
    deadline = time.monotonic() + SETTLE_SWEEP_BUDGET_SECONDS
    moved = 0
    due = finished_unsettled(settled_before=SETTLE_SWEEP_GRACE, limit=SETTLE_SWEEP_MAX)
    for chunk in chunked(due):
        if time.monotonic() >= deadline:
            break
        moved += settle_chunk(request_ids=chunk)
    if moved:
        logger.warning("settled %d request(s) whose tasks had finished but which were still processing", moved)
    return moved
