"""Celery tasks for webhooks out: one delivery, the sweep that queues due ones, and the overdue announcements."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.tasking import options
from gdpr_requests.webhooks import services


@shared_task(**options("deliver_webhook"))
def deliver_webhook(delivery_id: int) -> None:
    services.delivery_attempt(delivery_id=int(delivery_id))


@shared_task(**options("send_due_webhooks"))
def send_due_webhooks() -> None:
    services.send_due()


@shared_task(**options("announce_overdue_requests"))
def announce_overdue_requests() -> None:
    services.announce_overdue()
