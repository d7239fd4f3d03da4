"""Celery beat tasks that keep requests tidy: expiring unconfirmed ones, deleting expired exports, retention."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.requests import expiry, exports, retention
from gdpr_requests.tasking import options


@shared_task(**options("expire_unverified_requests"))
def expire_unverified_requests() -> None:
    expiry.expire_unverified()


@shared_task(**options("delete_expired_exports"))
def delete_expired_exports() -> None:
    exports.delete_expired()


@shared_task(**options("purge_retained_personal_data"))
def purge_retained_personal_data() -> None:
    retention.purge_due()
