"""Emails to data subjects: one per event of their request, plain text and HTML, from templates/emails/.

Events: ``created`` (received + confirm link), ``verify`` (confirmed), ``extend`` (new date and reason),
``complete`` (with the download page for access), ``reject`` (with reason), ``cancel`` (withdrawn), ``expire``;
and repeatable ones keyed by the audit event that caused them: ``duplicate:<id>`` (the existing request's
link), ``resend:<id>`` (fresh links), ``download_code:<id>`` (a one-time code, made when the email is sent so
that it never travels through the broker).

Sending is at-least-once and idempotent per (request, event): a SubjectNotification row is claimed with a
conditional UPDATE before sending and marked sent afterwards, and a sweep re-queues rows whose message was lost.
Task arguments are the request id and the event name only; the email is built from the row when it is sent.

Checked at send time, because a message can arrive late or twice:
- the event must still match the request (no "your request is complete" for a request that is not): a row
  that does not is closed unsent and the reason logged;
- the emails anyone can trigger by typing an address (``LINK_EVENTS``) are limited per address
  (``LINK_EMAILS_PER_HOUR``): over it, the row waits for the sweep, and the waiting rows of one request are
  coalesced into one, since each would carry the same, current link;
- a "resend" email makes the request's new links (older ones stop working) as it goes out, so that a
  waiting resend never revokes the links a person holds before the new ones reach them.

A row closed without an email keeps ``sent_at`` (nothing is left to send) and loses ``claimed_at`` (no email
went out). Rows the sweep gives up on stay unsent, and staff are told once per row.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, SubjectNotification
from gdpr_requests.notifications import staff_alerts
from gdpr_requests.notifications.rendering import LINK_EVENTS, build_message, event_base
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
# Emails with a request's link that anyone can trigger by typing an address: at most this many to one address
# per LINK_EMAIL_WINDOW (settings.DSR_LINK_EMAILS_PER_HOUR overrides it). A person needs one or two.
LINK_EMAILS_PER_HOUR = 5
LINK_EMAIL_WINDOW = timedelta(hours=1)


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


def _link_event_q() -> Q:
    """Rows of LINK_EVENTS ("created", "resend:<id>", "duplicate:<id>")."""
    return Q(event="created") | Q(event__startswith="resend:") | Q(event__startswith="duplicate:")


def event_mismatch(request: DataSubjectRequest, base: str) -> str:
    """Why the email for ``base`` no longer fits ``request`` (its state and history), or "" when it does."""
    expected = {
        "verify": request.verified_at is not None,
        "extend": request.extended_at is not None,
        "complete": request.status == states.COMPLETED,
        "reject": request.status == states.REJECTED,
        "cancel": request.status == states.CANCELLED,
        "expire": request.status == states.EXPIRED,
    }.get(base, True)
    if expected:
        return ""
    return f"the request is {request.status}" + ("" if request.verified_at else " and unverified")


def _close_unsent(rows: Q) -> int:
    """Close rows that will never be emailed (see the module docstring): sent_at set, claimed_at cleared."""
    return SubjectNotification.objects.filter(rows, sent_at__isnull=True).update(
        sent_at=timezone.now(), claimed_at=None
    )


def _link_emails_allowed() -> int:
    return int(getattr(settings, "DSR_LINK_EMAILS_PER_HOUR", LINK_EMAILS_PER_HOUR))


def _defer_link_email(request: DataSubjectRequest, row: SubjectNotification) -> bool:
    """True when the address has had its link emails for now: ``row`` then waits, alone for its request.

    The address's requests are locked while counting, so two workers cannot both take the last email.
    Counted: link emails claimed in the window (sent, or being sent); failed sends release their claim.
    """
    now = timezone.now()
    list(DataSubjectRequest.objects.select_for_update().filter(email_hash=request.email_hash).values_list("pk"))
    recent = (
        SubjectNotification.objects.filter(_link_event_q(), request__email_hash=request.email_hash)
        .filter(claimed_at__gte=now - LINK_EMAIL_WINDOW)
        .count()
    )
    if recent < _link_emails_allowed():
        return False
    # Every waiting link email of this request would carry the same link: keep this one.
    _close_unsent(
        _link_event_q()
        & Q(request_id=request.pk, claimed_at__isnull=True)
        & ~Q(pk=row.pk)
        & Q(created_at__lte=row.created_at)
    )
    return True


def _claim(request: DataSubjectRequest, row: SubjectNotification, base: str) -> bool:
    """Claim ``row`` for sending (conditional UPDATE); False when it is taken, sent, or has to wait."""
    now = timezone.now()
    with transaction.atomic():
        if base in LINK_EVENTS and _defer_link_email(request, row):
            logger.info("the %s email for %s waits: its address had its link emails for now", base, request.reference)
            return False
        return bool(
            SubjectNotification.objects.filter(pk=row.pk, sent_at__isnull=True)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT))
            .update(claimed_at=now, attempts=F("attempts") + 1)
        )


def _new_links(request: DataSubjectRequest) -> None:
    """Give the request a new link nonce: every link issued before stops working."""
    request.link_nonce = secrets.token_hex(8)
    DataSubjectRequest.objects.filter(pk=request.pk).update(link_nonce=request.link_nonce, updated_at=timezone.now())


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
    if row.sent_at is not None:
        return False
    mismatch = event_mismatch(request, base)
    if mismatch:
        # A stale or stray message (e.g. "complete" for a request that is not): never tell the subject a falsehood.
        if _close_unsent(Q(pk=row.pk)):
            logger.warning("dropped the %s email for %s: %s", base, request.reference, mismatch)
        return False
    if not _claim(request, row, base):
        return False
    try:
        if base == "resend":
            # Rotated now, not when asked: a failed send leaves no working link until its retry makes new ones,
            # which is the price of never revoking a person's links from a form anyone can post.
            _new_links(request)
        message = build_message(request, base)
        if message is not None:
            message.send()
    except Exception as exc:
        SubjectNotification.objects.filter(pk=row.pk).update(claimed_at=None)
        # The exception text may hold the address (SMTP refusals do): log its type and the reference only.
        logger.error("the %s email for %s could not be sent (%s)", base, request.reference, type(exc).__name__)
        return False
    if message is None:  # e.g. a download code for a file that is gone: nothing left to send
        _close_unsent(Q(pk=row.pk))
        return False
    with transaction.atomic():
        SubjectNotification.objects.filter(pk=row.pk).update(sent_at=timezone.now())
        if base in LINK_EVENTS and request.status == states.UNVERIFIED:
            DataSubjectRequest.objects.filter(pk=request.pk).update(verification_sent_at=timezone.now())
        audit_record(
            action="notification.sent",
            actor=Actor.system(),
            request_reference=request.reference,
            payload={"event": base},
        )
    return True


def _given_up_q(now: datetime) -> Q:
    return Q(attempts__gte=MAX_ATTEMPTS) | Q(created_at__lte=now - SWEEP_MAX_AGE)


def send_pending() -> int:
    """Queue again the emails whose task was lost (broker down, worker killed). Returns how many.

    Rows past MAX_ATTEMPTS or SWEEP_MAX_AGE are not queued again: they stay unsent, and staff are alerted
    about each of them once (staff_alerts.alert_unsent_subject_emails).
    """
    now = timezone.now()
    unsent = SubjectNotification.objects.filter(sent_at__isnull=True).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT)
    )
    due = list(
        unsent.filter(created_at__lt=now - SWEEP_GRACE)
        .exclude(_given_up_q(now))
        .values_list("request_id", "event")[:500]
    )
    if due:
        _enqueue(due)
    given_up = list(unsent.filter(_given_up_q(now)).select_related("request")[:500])
    if given_up:
        staff_alerts.alert_unsent_subject_emails(given_up)
    return len(due)


def oldest_unsent_email_age_seconds() -> float | None:
    """How long the oldest subject email still to be sent has waited (seconds), or None when none waits.

    Includes emails waiting for their address's limit and those the sweep gave up on (they stay unsent), not
    those of purged requests (their address is gone, so they are never sent).
    """
    oldest = SubjectNotification.objects.filter(sent_at__isnull=True, request__purged_at__isnull=True).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    if oldest is None:
        return None
    return max(0.0, (timezone.now() - oldest).total_seconds())
