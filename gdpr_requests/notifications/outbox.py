"""Emails to data subjects: one per event of their request, plain text and HTML, from templates/emails/.

Events: ``created`` (received + confirm link), ``verify`` (confirmed), ``extend`` (new date and reason),
``complete`` (with the download page for access), ``reject`` (with reason), ``cancel`` (withdrawn), ``expire``;
and repeatable ones keyed by the audit event that caused them: ``duplicate:<id>`` (the existing request's
link), ``resend:<id>`` (fresh links), ``download_code:<id>`` (a one-time code, made when the email is sent so
that it never travels through the broker).

Sending is at-least-once and idempotent per (request, event): a SubjectNotification row is claimed with a
conditional UPDATE before sending and marked sent afterwards, and a sweep re-queues rows whose message was lost.
Task arguments are the request id and the event name only; the email is built from the row when it is sent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, SubjectNotification
from gdpr_requests.notifications.rendering import build_message, event_base
from gdpr_requests.requests import states

logger = logging.getLogger("gdpr_requests.notifications")

# The tasks' pinned names (notifications/tasks.py): services queue emails without importing a tasks module.
NOTIFY_SUBJECT = "gdpr_requests.tasks.notify_subject"
NOTIFY_SUBJECTS = "gdpr_requests.tasks.notify_subjects"

# A claim older than this belongs to a worker that died mid-send: another may take the row.
CLAIM_TIMEOUT = timedelta(minutes=10)
# The sweep leaves fresh rows to their own task, and gives up on rows that keep failing.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_MAX_AGE = timedelta(days=3)
MAX_ATTEMPTS = 5


def send_task(name: str, *args: object) -> None:
    current_app.signature(name, args=args).apply_async()


def _enqueue(due: list[tuple[int, str]]) -> None:
    """Queue the emails in ``due`` (request id, event): one message whether there is one email or many."""
    try:
        if len(due) == 1:
            send_task(NOTIFY_SUBJECT, *due[0])
        else:  # a batch of intake submissions: the worker fans it out, each email keeps its own task
            send_task(NOTIFY_SUBJECTS, [list(pair) for pair in due])
    except Exception:  # the broker is down: the rows stay unsent and the sweep queues them again
        logger.warning("could not queue %d subject email(s)", len(due), exc_info=True)


def notify_after_commit(*, request_id: int, event: str) -> None:
    """Record the email as due (in the caller's transaction) and queue it once that transaction commits."""
    notify_many_after_commit([(request_id, event)])


def notify_many_after_commit(due: list[tuple[int, str]]) -> None:
    """notify_after_commit for several emails at once: one INSERT now, one broker message after the commit."""
    if not due:
        return
    # Idempotent on the (request, event) unique constraint: intake is the hot path.
    SubjectNotification.objects.bulk_create(
        [SubjectNotification(request_id=request_id, event=event) for request_id, event in due], ignore_conflicts=True
    )
    transaction.on_commit(lambda: _enqueue(due))


def send_subject_notification(*, request_id: int, event: str) -> bool:
    """Send the email for ``event`` about request ``request_id`` unless it was sent already. True if sent."""
    base = event_base(event)
    if not base:
        logger.warning("unknown subject email event %r for request id %s", event[:40], request_id)
        return False
    request = DataSubjectRequest.objects.filter(pk=request_id).first()
    if request is None:
        logger.warning("subject email %s: request id %s no longer exists", base, request_id)
        return False
    if request.purged_at is not None:  # the address is gone with the rest of the personal data
        return False
    row, _ = SubjectNotification.objects.get_or_create(request=request, event=event)
    now = timezone.now()
    claimed = (
        SubjectNotification.objects.filter(pk=row.pk, sent_at__isnull=True)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT))
        .update(claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return False
    try:
        message = build_message(request, base)
        if message is not None:
            message.send()
    except Exception as exc:
        SubjectNotification.objects.filter(pk=row.pk).update(claimed_at=None)
        # The exception text may hold the address (SMTP refusals do): log its type and the reference only.
        logger.error("the %s email for %s could not be sent (%s)", base, request.reference, type(exc).__name__)
        return False
    with transaction.atomic():
        SubjectNotification.objects.filter(pk=row.pk).update(sent_at=timezone.now())
        if message is None:
            return False
        if base in {"created", "resend", "duplicate"} and request.status == states.UNVERIFIED:
            DataSubjectRequest.objects.filter(pk=request.pk).update(verification_sent_at=timezone.now())
        audit_record(
            action="notification.sent",
            actor=Actor.system(),
            request_reference=request.reference,
            payload={"event": base},
        )
    return True


def send_pending() -> int:
    """Queue again the emails whose task was lost (broker down, worker killed). Returns how many."""
    now = timezone.now()
    due = list(
        SubjectNotification.objects.filter(
            sent_at__isnull=True,
            created_at__lt=now - SWEEP_GRACE,
            created_at__gt=now - SWEEP_MAX_AGE,
            attempts__lt=MAX_ATTEMPTS,
        )
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT))
        .values_list("request_id", "event")[:500]
    )
    if due:
        _enqueue(due)
    return len(due)
