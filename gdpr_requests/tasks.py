"""Celery tasks: each takes ids only (never personal data), fetches what it needs and calls one service.

The work itself lives in the modules named in each task; the tasks are idempotent, acknowledged late, and
time-limited (the defaults are in settings: CELERY_TASK_*).

All of them share the one default queue, with a priority each (settings: CELERY_TASK_ROUTES, which says why):
the dispatch sweep and Mixpanel steps first, planning last, so a bulk approval's planning messages cannot
hold back the Mixpanel calls of work already planned. A task added here gets the middle priority.
"""

from __future__ import annotations

from celery import shared_task

TASK_OPTIONS = {"acks_late": True, "soft_time_limit": 120, "time_limit": 180, "ignore_result": True}


# --- Mixpanel pipeline (pipeline.py) ------------------------------------------------------------------
@shared_task(**TASK_OPTIONS)
def plan_approved_requests() -> None:
    from . import pipeline

    pipeline.plan_approved()


@shared_task(**TASK_OPTIONS)
def plan_request(request_id: int) -> None:
    from . import pipeline

    pipeline.request_plan(request_id=request_id)


@shared_task(**TASK_OPTIONS)
def dispatch_due_tasks() -> None:
    from . import pipeline

    pipeline.dispatch_due()


@shared_task(**TASK_OPTIONS)
def run_mixpanel_task(task_id: int) -> None:
    """Submit, poll, cancel or download, whichever the task's state calls for."""
    from . import pipeline

    pipeline.task_step(task_id=task_id)


@shared_task(**TASK_OPTIONS)
def settle_requests_chunk(request_ids: list[int]) -> None:
    """Complete or fail one chunk of a finished batch's requests in its own transaction (pipeline/settling.py)."""
    from . import pipeline

    pipeline.requests_settle(request_ids=[int(pk) for pk in request_ids])


@shared_task(**TASK_OPTIONS)
def settle_finished_requests() -> None:
    """Beat: settle the processing requests whose chunk message was lost."""
    from . import pipeline

    pipeline.settle_finished()


# --- Subjects' emails and exports (notifications.py, exports.py) ----------------------------------------
@shared_task(**TASK_OPTIONS)
def notify_subject(request_id: int, event: str) -> None:
    from . import notifications

    notifications.send_subject_notification(request_id=request_id, event=event)


@shared_task(**TASK_OPTIONS)
def notify_subjects(due: list[list]) -> None:
    """Fan a batch of [request id, event] pairs out into one notify_subject task each."""
    for request_id, event in due:
        notify_subject.delay(int(request_id), str(event))


@shared_task(**TASK_OPTIONS)
def expire_unverified_requests() -> None:
    from . import notifications

    notifications.expire_unverified()


@shared_task(**TASK_OPTIONS)
def send_pending_subject_notifications() -> None:
    """Queue again the subject emails whose message was lost (the rows say which)."""
    from . import notifications

    notifications.send_pending()


@shared_task(**TASK_OPTIONS)
def delete_expired_exports() -> None:
    from . import exports

    exports.delete_expired()


# --- Staff alerts (staff_alerts.py) ---------------------------------------------------------------------
@shared_task(**TASK_OPTIONS)
def send_staff_alerts() -> None:
    from . import staff_alerts

    staff_alerts.send_alerts()


@shared_task(**TASK_OPTIONS)
def send_staff_digest() -> None:
    from . import staff_alerts

    staff_alerts.send_digest()


@shared_task(**TASK_OPTIONS)
def warn_expiring_credentials() -> None:
    from . import staff_alerts

    staff_alerts.warn_expiring_credentials()


# --- Retention (retention.py) ---------------------------------------------------------------------------
@shared_task(**TASK_OPTIONS)
def purge_retained_personal_data() -> None:
    from . import retention

    retention.purge_due()
