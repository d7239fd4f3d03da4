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

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from . import services, states, tokens
from .audit import Actor, audit_record
from .models import DataSubjectRequest, RequestKind, SubjectNotification

logger = logging.getLogger(__name__)

# Transitions (services hook actions) that the subject hears about; the action name is the event name.
TRANSITION_EVENTS = frozenset({"verify", "extend", "complete", "reject", "cancel", "expire"})
REPEATABLE_EVENTS = frozenset({"duplicate", "resend", "download_code"})

SUBJECTS = {
    "created": "Please confirm your privacy request {reference}",
    "verify": "We have confirmed your privacy request {reference}",
    "extend": "We need more time for your privacy request {reference}",
    "complete": "Your privacy request {reference} is complete",
    "reject": "We could not carry out your privacy request {reference}",
    "cancel": "Your privacy request {reference} has been withdrawn",
    "expire": "Your privacy request {reference} has expired",
    "duplicate": "You already have an open privacy request ({reference})",
    "resend": "Your new link for privacy request {reference}",
    "download_code": "Your download code for privacy request {reference}",
}

# A claim older than this belongs to a worker that died mid-send: another may take the row.
CLAIM_TIMEOUT = timedelta(minutes=10)
# The sweep leaves fresh rows to their own task, and gives up on rows that keep failing.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_MAX_AGE = timedelta(days=3)
MAX_ATTEMPTS = 5


def _enqueue(due: list[tuple[int, str]]) -> None:
    """Queue the emails in ``due`` (request id, event): one message whether there is one email or many."""
    from .tasks import notify_subject, notify_subjects

    try:
        if len(due) == 1:
            notify_subject.delay(*due[0])
        else:  # a batch of intake submissions: the worker fans it out, each email keeps its own task
            notify_subjects.delay([list(pair) for pair in due])
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


def _after_transition(request_id: int, action: str, new_status: str) -> None:
    if action in TRANSITION_EVENTS:
        notify_after_commit(request_id=request_id, event=action)


def _after_intake(requests: list[DataSubjectRequest]) -> None:
    # Every channel: a request that starts unverified asks its requester to confirm their email.
    notify_many_after_commit([(dsr.pk, "created") for dsr in requests if dsr.status == states.UNVERIFIED])


services.register_transition_hook(_after_transition)
services.register_intake_hook(_after_intake)


def _base(event: str) -> str:
    base, _, suffix = event.partition(":")
    if base in REPEATABLE_EVENTS and suffix.isdigit():
        return base
    if base in TRANSITION_EVENTS or base == "created":
        return base if not suffix else ""
    return ""


def _context(request: DataSubjectRequest, event: str) -> dict | None:
    """What the template of ``event`` needs, or None when there is nothing to send any more."""
    from .portal_services import export_code_issue, export_for

    unverified = request.status == states.UNVERIFIED
    context = {
        "request": request,
        "reference": request.reference,
        "name": request.requester_name,
        "kind": request.kind,
        "is_access": request.kind == RequestKind.ACCESS,
        "kind_label": "a copy of your data" if request.kind == RequestKind.ACCESS else "deletion of your data",
        "due_at": request.due_at,
        "organisation": settings.ORGANISATION_NAME,
        "contact_email": settings.PRIVACY_CONTACT_EMAIL,
        "site_url": settings.SITE_URL,
        "form_url": f"{settings.SITE_URL}{reverse('portal:request')}",
        "verification_hours": settings.DSR_VERIFICATION_HOURS,
        "status_url": "",
        "verification_url": "",
    }
    if event in {"created", "resend", "duplicate"} and unverified:
        context["verification_url"] = tokens.verification_url(request)
    elif event != "expire":
        context["status_url"] = tokens.status_url(request)
    if event == "cancel":
        last_cancel = request_audit_actor(request, "request.cancel")
        context["by_subject"] = last_cancel in {"subject", ""}
    if event == "complete" and request.kind == RequestKind.ACCESS:
        export = export_for(request)
        if export is not None and export.is_available:
            context["download_url"] = tokens.download_url(request)
            context["export_expires_at"] = export.expires_at
    if event == "download_code":
        export = export_for(request)
        if export is None or not export.is_available:
            return None
        context["code"] = export_code_issue(export=export)
        context["code_minutes"] = 15
        context["download_url"] = tokens.download_url(request)
    return context


def request_audit_actor(request: DataSubjectRequest, action: str) -> str:
    from .models import AuditEvent

    return (
        AuditEvent.objects.filter(request_reference=request.reference, action=action)
        .order_by("-sequence")
        .values_list("actor_type", flat=True)
        .first()
        or ""
    )


def build_message(request: DataSubjectRequest, event: str) -> EmailMultiAlternatives | None:
    """The email for ``event`` (a base event name), or None when there is nothing to send."""
    context = _context(request, event)
    if context is None:
        return None
    subject = SUBJECTS[event].format(reference=request.reference)
    text = render_to_string(f"emails/{event}.txt", context)
    html = render_to_string(f"emails/{event}.html", {**context, "subject": subject})
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[request.requester_email],
        reply_to=[settings.PRIVACY_CONTACT_EMAIL],
        headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
    )
    message.attach_alternative(html, "text/html")
    return message


def send_subject_notification(*, request_id: int, event: str) -> bool:
    """Send the email for ``event`` about request ``request_id`` unless it was sent already. True if sent."""
    base = _base(event)
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


def expire_unverified() -> int:
    """Expire requests whose email was not confirmed within DSR_UNVERIFIED_EXPIRY_DAYS of the last link sent."""
    cutoff = timezone.now() - timedelta(days=settings.DSR_UNVERIFIED_EXPIRY_DAYS)
    stale = DataSubjectRequest.objects.filter(status=states.UNVERIFIED).filter(
        Q(verification_sent_at__lt=cutoff) | Q(verification_sent_at__isnull=True, created_at__lt=cutoff)
    )
    count = 0
    for request in stale.iterator():
        try:
            services.request_expire(request=request)
        except states.TransitionNotAllowed:  # confirmed (or closed by staff) in the meantime
            continue
        count += 1
    return count
