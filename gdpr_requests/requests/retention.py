"""Data retention: forget the requester's personal data once a closed request has been kept long enough.

``DSR_RETENTION_DAYS`` after a request closed (completed, rejected, cancelled or expired), ``purge_due`` replaces
the requester's name, email, message and distinct ids with placeholders, clears the distinct ids from finished
Mixpanel tasks that served only purged requests, deletes the stored export, sets ``purged_at`` and records a
``request.purged`` audit event. What stays: the reference, dates, status, the keyed email hash (so a later
request from the same person can still be matched) and the whole audit trail, which never held personal data.

Staff free-text fields (reasons, closing note, internal notes) are kept as the record of the decision; staff
are asked not to write personal data into them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, MixpanelTask, SubjectExport, TaskState
from gdpr_requests.requests import states
from gdpr_requests.requests.exports import export_delete

logger = logging.getLogger(__name__)

PURGED_NAME = "[purged]"
PURGED_MESSAGE = "[purged]"
# Syntactically an address, so the model still validates; the reserved .invalid domain can never deliver.
PURGED_EMAIL = "purged@purged.invalid"

_FINISHED_TASK_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SUPERSEDED)


def due_for_purge(*, now: datetime | None = None) -> QuerySet[DataSubjectRequest]:
    """Closed requests whose retention period has ended and that still hold personal data."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.DSR_RETENTION_DAYS)
    return DataSubjectRequest.objects.filter(
        status__in=states.FINAL_STATES, closed_at__lt=cutoff, purged_at__isnull=True
    ).order_by("closed_at", "id")


def purge_due(dry_run: bool = False) -> list[str]:
    """Purge every request that is due (see the module docstring); return their references.

    With ``dry_run`` nothing changes and the references that would be purged are returned. Each request is
    purged in its own transaction, so a failure leaves the others done; a request purged meanwhile by another
    process is skipped (the conditional UPDATE finds it already purged).
    """
    due = due_for_purge()
    if dry_run:
        return list(due.values_list("reference", flat=True))
    purged: list[str] = []
    for request_id in list(due.values_list("id", flat=True)):
        reference = request_purge(request_id=request_id)
        if reference:
            purged.append(reference)
    if purged:
        logger.info("retention purge finished", extra={"outcome": "purged", "count": len(purged)})
    return purged


def request_purge(*, request_id: int) -> str | None:
    """Purge one closed request's personal data; return its reference, or None when it was not due."""
    now = timezone.now()
    cutoff = now - timedelta(days=settings.DSR_RETENTION_DAYS)
    with transaction.atomic():
        dsr = (
            DataSubjectRequest.objects.select_for_update()
            .filter(pk=request_id, status__in=states.FINAL_STATES, closed_at__lt=cutoff, purged_at__isnull=True)
            .first()
        )
        if dsr is None:
            return None
        id_count = len(dsr.distinct_ids or [])
        moved = DataSubjectRequest.objects.filter(pk=dsr.pk, purged_at__isnull=True).update(
            requester_name=PURGED_NAME if dsr.requester_name else "",
            requester_email=PURGED_EMAIL,
            message=PURGED_MESSAGE if dsr.message else "",
            distinct_ids=[],
            purged_at=now,
            updated_at=now,
        )
        if moved != 1:
            return None
        tasks_cleared = _clear_task_ids(dsr)
        export = SubjectExport.objects.filter(request=dsr, deleted_at__isnull=True).select_related("request").first()
        if export is not None:
            export_delete(export=export, why="retention")
        audit_record(
            action="request.purged",
            actor=Actor.system("retention"),
            request_reference=dsr.reference,
            payload={
                "status": dsr.status,
                "closed_at": dsr.closed_at.isoformat(),
                "retention_days": settings.DSR_RETENTION_DAYS,
                "distinct_id_count": id_count,
                "tasks_cleared": tasks_cleared,
                "export_deleted": export is not None,
            },
        )
    logger.info("request purged", extra={"reference": dsr.reference, "outcome": "purged"})
    return dsr.reference


def _clear_task_ids(dsr: DataSubjectRequest) -> int:
    # A deletion task may serve several requests: its ids are cleared only when every request it serves has
    # been purged (this one is, inside the current transaction) and the task will not be sent again.
    candidates = MixpanelTask.objects.filter(requests=dsr, state__in=_FINISHED_TASK_STATES).exclude(distinct_ids=[])
    cleared = 0
    for task in candidates:
        if task.requests.filter(Q(purged_at__isnull=True)).exists():
            continue
        cleared += MixpanelTask.objects.filter(pk=task.pk).update(distinct_ids=[], updated_at=timezone.now())
    return cleared
