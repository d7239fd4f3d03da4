"""The pipeline's Celery tasks: each takes ids only (never personal data) and calls one service.

All share the one default queue with a priority each (settings.CELERY_TASK_ROUTES): the dispatch sweep and the
Mixpanel steps first, planning last, so a bulk approval's planning cannot hold back the calls of planned work.
"""

from __future__ import annotations

from celery import shared_task

from gdpr_requests import pipeline
from gdpr_requests.tasking import options


@shared_task(**options("plan_approved_requests"))
def plan_approved_requests() -> None:
    pipeline.plan_approved()


@shared_task(**options("plan_request"))
def plan_request(request_id: int) -> None:
    pipeline.request_plan(request_id=request_id)


@shared_task(**options("plan_requests"))
def plan_requests(request_ids: list[int]) -> None:
    """Plan a chunk of approved requests (a bulk approval) in one transaction."""
    pipeline.request_plan_many(request_ids=[int(pk) for pk in request_ids])


@shared_task(**options("dispatch_due_tasks"))
def dispatch_due_tasks() -> None:
    pipeline.dispatch_due()


@shared_task(**options("run_mixpanel_task"))
def run_mixpanel_task(task_id: int) -> None:
    """Submit, poll, cancel or download, whichever the task's state calls for."""
    pipeline.task_step(task_id=task_id)


@shared_task(**options("settle_requests_chunk"))
def settle_requests_chunk(request_ids: list[int]) -> None:
    """Complete or fail one chunk of a finished batch's requests in its own transaction (settling.py)."""
    pipeline.settle_chunk(request_ids=[int(pk) for pk in request_ids])


@shared_task(**options("settle_finished_requests"))
def settle_finished_requests() -> None:
    """Beat: settle the processing requests whose chunk message was lost."""
    pipeline.settle_finished()
