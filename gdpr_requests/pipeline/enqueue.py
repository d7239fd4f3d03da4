"""Sending the pipeline's Celery messages by task name, so that no service imports a ``tasks`` module.

Call these from ``transaction.on_commit`` only. A lost message is harmless: every one has a sweep behind it
(the dispatch sweep for steps, the planning sweep for approvals, the settling sweep for chunks).
"""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger("gdpr_requests.pipeline")

# The tasks' pinned names (pipeline/tasks.py); messages already queued in a running installation carry them.
RUN_MIXPANEL_TASK = "gdpr_requests.tasks.run_mixpanel_task"
PLAN_REQUEST = "gdpr_requests.tasks.plan_request"
PLAN_REQUESTS = "gdpr_requests.tasks.plan_requests"
# Requests per planning message of a bulk approval (planning.PLAN_CHUNK plans as many per transaction).
PLAN_MESSAGE_CHUNK = 200
SETTLE_REQUESTS_CHUNK = "gdpr_requests.tasks.settle_requests_chunk"


def send(name: str, *args: object, countdown: float | None = None) -> None:
    """Send task ``name`` through the registered task (so task_always_eager and the routes' priorities apply)."""
    current_app.signature(name, args=args).apply_async(countdown=countdown)


def enqueue_step(task_id: int, countdown: float = 0.0) -> None:
    """Send run_mixpanel_task for one task."""
    try:
        send(RUN_MIXPANEL_TASK, task_id, countdown=countdown if countdown > 0 else None)
    except Exception as exc:  # the broker is down: the next sweep finds the row once its claim runs out
        logger.warning("could not enqueue mixpanel task %s (%s)", task_id, type(exc).__name__)


def enqueue_plan(request_id: int) -> None:
    """Send plan_request for one approved request.

    One message per approval: a bulk approval queues thousands. They go at the lowest priority
    (settings.CELERY_TASK_ROUTES), so on Redis the dispatch sweep and the steps overtake them.
    """
    try:
        send(PLAN_REQUEST, request_id)
    except Exception as exc:  # the beat sweep (plan_approved) is the safety net
        logger.warning("could not enqueue planning of request %s (%s)", request_id, type(exc).__name__)


def enqueue_plans(request_ids: list[int]) -> None:
    """Send plan_requests for approved requests, PLAN_MESSAGE_CHUNK per message: a bulk approval of 1,000
    sends 5 messages, not 1,000. A message the broker refuses is made up for by the planning sweep."""
    if len(request_ids) == 1:
        enqueue_plan(request_ids[0])
        return
    for start in range(0, len(request_ids), PLAN_MESSAGE_CHUNK):
        try:
            send(PLAN_REQUESTS, list(request_ids[start : start + PLAN_MESSAGE_CHUNK]))
        except Exception as exc:  # the beat sweep (plan_approved) is the safety net
            logger.warning(
                "could not enqueue planning of %d request(s) (%s)", len(request_ids) - start, type(exc).__name__
            )
            return


def enqueue_settle_chunks(chunks: list[list[int]]) -> None:
    """Send one settle_requests_chunk per chunk. A lost message is made up for by the settling sweep, so a
    broker that refuses one is not asked for the rest."""
    for sent, chunk in enumerate(chunks):
        try:
            send(SETTLE_REQUESTS_CHUNK, chunk)
        except Exception as exc:  # the broker is down: settle_finished catches up after its grace period
            logger.warning(
                "could not enqueue settling of %d request chunk(s) (%s)", len(chunks) - sent, type(exc).__name__
            )
            return
