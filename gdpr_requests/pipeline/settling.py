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

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import partial

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .. import states
from ..models import DataSubjectRequest, MixpanelTask, TaskState
from .common import FAILING, RETIRED, logger, settle_requests

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


def chunked(ids: Sequence[int], size: int = SETTLE_CHUNK_SIZE) -> list[list[int]]:
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]


def settle_inline_or_chunked(request_ids: Iterable[int]) -> int:
    """Settle a finished task's requests: inline when few, else in chunk messages after the caller commits.

    Inside the outcome's transaction. Returns how many chunk messages will be sent (0: settled inline). The
    task's own events are committed before any request moves, so the trail tells the story in order.
    """
    ids = sorted(set(request_ids))
    if len(ids) <= SETTLE_INLINE_MAX:
        settle_requests(ids)
        return 0
    chunks = chunked(ids)
    transaction.on_commit(partial(enqueue_settle_chunks, chunks))
    return len(chunks)


def enqueue_settle_chunks(chunks: list[list[int]]) -> None:
    """Send one settle_requests_chunk per chunk. Call it from on_commit only. A lost message is made up for
    by the sweep, so a broker that refuses one is not asked for the rest."""
    from .. import tasks

    for sent, chunk in enumerate(chunks):
        try:
            tasks.settle_requests_chunk.delay(chunk)
        except Exception as exc:  # the broker is down: settle_finished catches up after its grace period
            logger.warning(
                "could not enqueue settling of %d request chunk(s) (%s)", len(chunks) - sent, type(exc).__name__
            )
            return


def requests_settle(*, request_ids: Sequence[int]) -> int:
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
        return settle_requests(ids)


def finished_unsettled(*, settled_before: timedelta = SETTLE_SWEEP_GRACE, limit: int = SETTLE_SWEEP_MAX) -> list[int]:
    """Processing requests that settle_requests would move, whose tasks all finished more than
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
        moved += requests_settle(request_ids=chunk)
    if moved:
        logger.warning("settled %d request(s) whose tasks had finished but which were still processing", moved)
    return moved
