"""Celery tasks of the API: forgetting Idempotency-Key answers past their 24 hours."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.api import idempotency
from gdpr_requests.tasking import options


@shared_task(**options("purge_idempotency_records"))
def purge_idempotency_records() -> None:
    idempotency.purge_expired()
