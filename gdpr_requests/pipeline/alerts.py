"""Emails to staff about pipeline trouble that needs a person: once per occasion, after commit.

Each alert claims a StaffAlert row for (kind, object, occasion) first, as the staff alert sweeps do
(notifications/staff_alerts.py), so a step that runs again, or a second worker, does not email again. A mail
that cannot be sent gives its row back, so a later occasion can try again. Alerts carry task numbers,
request references and admin links, never personal data.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import audit_record
from gdpr_requests.models import MixpanelTask, StaffAlert
from gdpr_requests.pipeline.queries import request_reference_of
from gdpr_requests.pipeline.task_updates import SYSTEM
from gdpr_requests.requests import selectors

logger = logging.getLogger("gdpr_requests.pipeline")

ORPHANED_RETRIEVAL = "orphaned_retrieval"
EXPORTS_UNWRITABLE = "exports_unwritable"


def alert_staff_once(*, kind: str, object_ref: str, key: str, subject: str, body: str) -> bool:
    """Email staff about (kind, object_ref, key) unless that was done before. Never raises (runs after commit,
    and the worker's step is already recorded). True when an email went out."""
    recipients = selectors.staff_alert_recipients()
    if not recipients:
        logger.warning("pipeline alert %s for %s: no staff address to alert", kind, object_ref)
        return False
    try:
        with transaction.atomic():
            StaffAlert.objects.create(kind=kind, object_ref=object_ref, key=key[:100])
    except IntegrityError:
        return False  # alerted before
    try:
        send_mail(
            f"[{settings.ORGANISATION_NAME} privacy] {subject}",
            f"{body}\n\n{settings.SITE_URL.rstrip('/')}/admin/\n",
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except Exception as exc:  # SMTP errors can quote addresses: log the error type only
        logger.error("pipeline alert %s for %s could not be sent (%s)", kind, object_ref, type(exc).__name__)
        StaffAlert.objects.filter(kind=kind, object_ref=object_ref, key=key[:100]).delete()
        return False
    with transaction.atomic():
        StaffAlert.objects.filter(kind=kind, object_ref=object_ref, key=key[:100]).update(
            recipient_count=len(recipients)
        )
        audit_record(
            action="staff.alert_sent",
            actor=SYSTEM,
            payload={"kind": kind, "count": 1, "references": [object_ref], "recipient_count": len(recipients)},
        )
    return True


def alert_staff_orphaned_retrieval(*, task_id: int, api_call_id: int) -> None:
    """A retrieval create was sent and its answer lost: Mixpanel may run a second retrieval we cannot see."""
    task = MixpanelTask.objects.filter(pk=task_id).select_related("project").first()
    if task is None:
        return
    reference = request_reference_of(task) or f"task #{task.pk}"
    alert_staff_once(
        kind=ORPHANED_RETRIEVAL,
        object_ref=f"task:{task.pk}",
        key=str(api_call_id),
        subject=f"A Mixpanel retrieval may have been created twice ({reference})",
        body=(
            f'A worker stopped while creating the Mixpanel data retrieval of task #{task.pk} (project "'
            f"{task.project.name}\", request {reference}); Mixpanel's answer, with the id of the task it may have "
            "created, was never recorded. Mixpanel offers no way to look that task up, so the retrieval was "
            "sent again. Nothing is needed for the request itself; Mixpanel may run one extra retrieval for "
            f"this project. The call is API call #{api_call_id} in the task's evidence."
        ),
    )


def alert_staff_exports_unwritable(*, task_id: int, error: str) -> None:
    """Downloaded results cannot be stored (EXPORTS_DIR is not writable): every retrieval waits for it."""
    alert_staff_once(
        kind=EXPORTS_UNWRITABLE,
        object_ref="exports",
        key=timezone.localdate().isoformat(),  # at most one email a day while it lasts
        subject="Downloaded Mixpanel results cannot be stored",
        body=(
            f"The result of Mixpanel task #{task_id} was downloaded but could not be written to the exports "
            f"folder (EXPORTS_DIR): {error}.\n\nRetrievals retry with backoff and give up for staff after "
            "MIXPANEL_MAX_ATTEMPTS attempts. Fix the folder's permissions or free space for the worker's user."
        ),
    )
