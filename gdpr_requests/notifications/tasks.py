"""Celery tasks for emails: to subjects (one per request and event) and to staff (alerts, digest, expiry)."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.notifications import outbox, staff_alerts
from gdpr_requests.tasking import options


@shared_task(**options("notify_subject"))
def notify_subject(request_id: int, event: str) -> None:
    outbox.send_subject_notification(request_id=request_id, event=event)


@shared_task(**options("notify_subjects"))
def notify_subjects(due: list[list]) -> None:
    """Fan a batch of [request id, event] pairs out into one notify_subject task each."""
    for request_id, event in due:
        notify_subject.delay(int(request_id), str(event))


@shared_task(**options("send_pending_subject_notifications"))
def send_pending_subject_notifications() -> None:
    """Queue again the subject emails whose message was lost (the rows say which)."""
    outbox.send_pending()


@shared_task(**options("send_staff_alerts"))
def send_staff_alerts() -> None:
    staff_alerts.send_alerts()


@shared_task(**options("send_staff_digest"))
def send_staff_digest() -> None:
    staff_alerts.send_digest()


@shared_task(**options("warn_expiring_credentials"))
def warn_expiring_credentials() -> None:
    staff_alerts.warn_expiring_credentials()
