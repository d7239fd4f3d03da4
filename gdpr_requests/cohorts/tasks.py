"""The cohort intake's Celery task: approving what an auto-approving intake took in."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.cohorts import services
from gdpr_requests.models import CohortSync
from gdpr_requests.tasking import options


@shared_task(**options("cohort_approve_sync"))
def cohort_approve_sync(sync_id: int) -> None:
    sync = CohortSync.objects.select_related("intake").filter(pk=sync_id).first()
    if sync is not None:
        services.cohort_sync_approve(sync=sync)
