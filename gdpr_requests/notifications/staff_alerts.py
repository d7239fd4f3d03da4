"""Emails to privacy staff: what waits for them, what went wrong, what is due, and a daily digest.

Celery beat calls ``send_alerts`` (every 15 minutes: verified requests waiting for review, requests that need
attention, requests due within ALERT_DUE_WITHIN_DAYS days), ``warn_expiring_credentials`` (every 6 hours: 30, 7 and 1 days before
a project's OAuth token expires, and once it has) and ``send_digest`` (daily: all of these, with the numbers).
A credential that Mixpanel refuses is emailed by the pipeline the moment it happens
(pipeline.credentials.alert_staff_credential_failing); the sweeps do not repeat it, the digest lists it.

Each alert is sent once: before sending, a StaffAlert row is inserted for (kind, object, occasion), and the
unique constraint makes a second sweep, or a second worker running the same sweep, skip it. The occasion is
part of the key, so a request that fails again later, or a deadline that moves, alerts again. If the email
cannot be sent, its rows are deleted so that the next sweep tries again.

Recipients: active members of the "Privacy staff" group with an email address, plus STAFF_ALERT_EMAILS.
Staff emails carry references, dates and admin links, never the requester's name, email or distinct ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from gdpr_requests.audit.chain import Actor, audit_record, chain_head
from gdpr_requests.models import DataSubjectRequest, MixpanelProject, StaffAlert
from gdpr_requests.requests import selectors, states

logger = logging.getLogger(__name__)

AWAITING_REVIEW = "awaiting_review"
NEEDS_ATTENTION = "needs_attention"
DUE_SOON = "due_soon"
CREDENTIAL_EXPIRING = "credential_expiring"
SUBJECT_EMAIL_UNSENT = "subject_email_unsent"
DIGEST = "digest"

ALERT_DUE_WITHIN_DAYS = 3
# An email lists at most this many items and links to the filtered list for the rest.
MAX_LINES = 50


@dataclass(frozen=True)
class Candidate:
    """Something that may deserve an alert: what it is about, on which occasion, and the object itself."""

    object_ref: str
    key: str
    obj: Any


@dataclass(frozen=True)
class AlertLine:
    text: str
    url: str


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def _request_url(request: DataSubjectRequest) -> str:
    return _absolute(reverse("admin:gdpr_requests_datasubjectrequest_change", args=[request.pk]))


def _project_url(project: MixpanelProject) -> str:
    return _absolute(reverse("admin:gdpr_requests_mixpanelproject_change", args=[project.pk]))


def _list_url(query: str = "") -> str:
    return _absolute(reverse("admin:gdpr_requests_datasubjectrequest_changelist") + query)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _day(value: date) -> str:
    return date_format(value, "j M Y")


def _moment(value: Any) -> str:
    return timezone.localtime(value).isoformat(timespec="seconds") if value else ""


# --- Claiming and sending -------------------------------------------------------------------------------
def _claim(kind: str, candidates: Iterable[Candidate]) -> list[Candidate]:
    """Record each candidate as alerted; return the ones that were not alerted before."""
    candidates = list(candidates)
    if not candidates:
        return []
    existing = set(
        StaffAlert.objects.filter(kind=kind, object_ref__in={c.object_ref for c in candidates}).values_list(
            "object_ref", "key"
        )
    )
    claimed = []
    for candidate in candidates:
        if (candidate.object_ref, candidate.key) in existing:
            continue
        try:
            with transaction.atomic():
                StaffAlert.objects.create(kind=kind, object_ref=candidate.object_ref, key=candidate.key)
        except IntegrityError:  # another sweep claimed it first
            continue
        claimed.append(candidate)
    return claimed


def _release(kind: str, candidates: Iterable[Candidate]) -> None:
    for candidate in candidates:
        StaffAlert.objects.filter(kind=kind, object_ref=candidate.object_ref, key=candidate.key).delete()


def _send(*, kind: str, subject: str, template: str, context: dict[str, Any], recipients: list[str]) -> bool:
    body = render_to_string(
        template,
        {
            "organisation": settings.ORGANISATION_NAME,
            "admin_url": _absolute(reverse("admin:index")),
            **context,
        },
    )
    message = EmailMessage(
        subject=f"[{settings.ORGANISATION_NAME} privacy] {subject}",
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
    )
    try:
        message.send()
    except Exception as exc:  # SMTP errors can quote addresses: log the kind and the error type only
        logger.error("staff %s email could not be sent (%s)", kind, type(exc).__name__)
        return False
    return True


def _alert(
    *,
    kind: str,
    candidates: Iterable[Candidate],
    describe: Callable[[Any], AlertLine],
    subject: Callable[[list[Candidate]], str],
    intro: str,
    more_url: str,
    recipients: list[str],
) -> list[Candidate]:
    """Claim the new candidates of one kind and send them in one email. Returns the ones alerted."""
    claimed = _claim(kind, candidates)
    if not claimed:
        return []
    lines = [describe(c.obj) for c in claimed[:MAX_LINES]]
    sent = _send(
        kind=kind,
        subject=subject(claimed),
        template="admin/gdpr_requests/email/staff_alert.txt",
        context={"intro": intro, "lines": lines, "more": len(claimed) - len(lines), "more_url": more_url},
        recipients=recipients,
    )
    if not sent:
        _release(kind, claimed)
        return []
    references = [c.object_ref for c in claimed]
    audit_record(
        action="staff.alert_sent",
        actor=Actor.system("staff alerts"),
        payload={
            "kind": kind,
            "count": len(claimed),
            "references": references[:MAX_LINES],
            "recipient_count": len(recipients),
        },
    )
    StaffAlert.objects.filter(kind=kind, object_ref__in=references).update(recipient_count=len(recipients))
    return claimed


def _recipients() -> list[str]:
    recipients = selectors.staff_alert_recipients()
    if not recipients:
        logger.warning(
            "no staff alert recipients: add staff with an email to 'Privacy staff' or set STAFF_ALERT_EMAILS"
        )
    return recipients


# --- What each alert says (references, dates and links only) ---------------------------------------------
def _describe_review(request: DataSubjectRequest) -> AlertLine:
    verified = timezone.localtime(request.verified_at).date() if request.verified_at else None
    return AlertLine(
        f"{request.reference}: {request.get_kind_display().lower()} ({request.get_regulation_display()}), "
        f"verified {_day(verified) if verified else ''}, due {_day(request.due_at)}",
        _request_url(request),
    )


def _describe_attention(request: DataSubjectRequest) -> AlertLine:
    reasons = "; ".join(selectors.attention_reasons(request)) or "needs a look"
    return AlertLine(
        f"{request.reference}: {request.get_status_display().lower()}, {reasons}; due {_day(request.due_at)}",
        _request_url(request),
    )


def _describe_due(request: DataSubjectRequest) -> AlertLine:
    days = request.days_until_due()
    when = "today" if days == 0 else f"in {_plural(days, 'day')}"
    return AlertLine(
        f"{request.reference}: due {when} ({_day(request.due_at)}), {request.get_status_display().lower()}"
        f"{', assigned to ' + request.assignee.get_username() if request.assignee else ', unassigned'}",
        _request_url(request),
    )


def _describe_failing(project: MixpanelProject) -> AlertLine:
    since = f" (checked {_moment(project.credential_checked_at)})" if project.credential_checked_at else ""
    error = f": {project.credential_error[:200]}" if project.credential_error else ""
    return AlertLine(
        f"{project.name}: the GDPR OAuth token is refused by Mixpanel{since}{error}", _project_url(project)
    )


def _describe_expiry(project: MixpanelProject) -> AlertLine:
    days = project.days_until_token_expiry
    if days < 0:
        when = f"expired on {_day(project.token_expires_on)}"
    elif days == 0:
        when = "expires today"
    else:
        when = f"expires in {_plural(days, 'day')} ({_day(project.token_expires_on)})"
    return AlertLine(
        f"{project.name}: the GDPR OAuth token {when}. Create a new one in Mixpanel.", _project_url(project)
    )


def _subject(one: str, many: str) -> Callable[[list[Candidate]], str]:
    """``one`` names the single item ({label}); ``many`` counts them ({n})."""

    def subject(claimed: list[Candidate]) -> str:
        if len(claimed) == 1:
            obj = claimed[0].obj
            return one.format(label=obj.name if isinstance(obj, MixpanelProject) else claimed[0].object_ref)
        return many.format(n=len(claimed))

    return subject


# --- The sweeps ----------------------------------------------------------------------------------------
def send_alerts(*, now: Any = None) -> dict[str, int]:
    """Email staff about what is new since the last sweep. Returns how many items of each kind were alerted."""
    recipients = _recipients()
    if not recipients:
        return {}
    now = now or timezone.now()
    today = timezone.localdate(now)
    requests = DataSubjectRequest.objects.select_related("assignee").order_by("due_at", "id")
    sent: dict[str, int] = {}

    sent[AWAITING_REVIEW] = len(
        _alert(
            kind=AWAITING_REVIEW,
            candidates=(
                Candidate(r.reference, _moment(r.status_changed_at), r) for r in requests.filter(status=states.VERIFIED)
            ),
            describe=_describe_review,
            subject=_subject(
                "{label} is verified and waits for review", "{n} requests are verified and wait for review"
            ),
            intro="These requests are verified and wait for staff to approve or reject them:",
            more_url=_list_url("?status__exact=verified"),
            recipients=recipients,
        )
    )
    sent[NEEDS_ATTENTION] = len(
        _alert(
            kind=NEEDS_ATTENTION,
            candidates=(
                Candidate(r.reference, f"{r.status}:{_moment(r.status_changed_at)}", r)
                for r in requests.filter(selectors.needs_attention_q(now=now))
            ),
            describe=_describe_attention,
            subject=_subject("{label} needs attention", "{n} requests need attention"),
            intro="These requests need attention:",
            more_url=_list_url("?attention=yes"),
            recipients=recipients,
        )
    )
    sent[DUE_SOON] = len(
        _alert(
            kind=DUE_SOON,
            candidates=(
                Candidate(r.reference, r.due_at.isoformat(), r)
                for r in requests.filter(selectors.due_soon_q(today=today, days=ALERT_DUE_WITHIN_DAYS + 1))
            ),
            describe=_describe_due,
            subject=_subject(
                f"{{label}} is due within {ALERT_DUE_WITHIN_DAYS} days",
                f"{{n}} requests are due within {ALERT_DUE_WITHIN_DAYS} days",
            ),
            intro=f"These open requests are due within {ALERT_DUE_WITHIN_DAYS} days:",
            more_url=_list_url("?due_soon=yes"),
            recipients=recipients,
        )
    )
    return {kind: n for kind, n in sent.items() if n}


def expiry_threshold(days_left: int, thresholds: Iterable[int] | None = None) -> int | None:
    """The warning a token with ``days_left`` days is due for: the smallest threshold it has reached
    (0 once expired), or None when it is not yet within any."""
    if days_left <= 0:
        return 0
    reached = [t for t in (thresholds or settings.CREDENTIAL_EXPIRY_WARNING_DAYS) if days_left <= t]
    return min(reached) if reached else None


def warn_expiring_credentials(*, today: date | None = None) -> int:
    """Warn staff 30, 7 and 1 days before a project's OAuth token expires, and once it has. Returns how many
    projects were warned about."""
    recipients = _recipients()
    if not recipients:
        return 0
    today = today or timezone.localdate()
    longest = max(settings.CREDENTIAL_EXPIRY_WARNING_DAYS)
    candidates = []
    thresholds: dict[int, int] = {}
    for project in selectors.expiring_projects(today=today, days=longest):
        threshold = expiry_threshold((project.token_expires_on - today).days)
        if threshold is None:
            continue
        thresholds[project.pk] = threshold
        # A new token (new expiry date or change time) starts its warnings afresh.
        key = f"{project.token_expires_on.isoformat()}:{_moment(project.oauth_token_changed_at)}:{threshold}"
        candidates.append(Candidate(f"project:{project.pk}", key, project))
    warned = _alert(
        kind=CREDENTIAL_EXPIRING,
        candidates=candidates,
        describe=_describe_expiry,
        subject=_subject("Mixpanel credential expires soon: {label}", "{n} Mixpanel credentials expire soon"),
        intro="These Mixpanel GDPR OAuth tokens expire soon. Without a new token their requests cannot be carried out:",
        more_url=_absolute(reverse("admin:gdpr_requests_mixpanelproject_changelist")),
        recipients=recipients,
    )
    for candidate in warned:
        # Mirrored on the project for people reading it; project_update empties it when the token changes.
        project = candidate.obj
        sent_days = sorted({*project.expiry_warnings_sent, thresholds[project.pk]}, reverse=True)
        MixpanelProject.objects.filter(pk=project.pk).update(expiry_warnings_sent=sent_days)
    return len(warned)


def _lines(queryset: Any, describe: Callable[[Any], AlertLine]) -> list[AlertLine]:
    return [describe(obj) for obj in queryset[:MAX_LINES]]


def send_digest(*, today: date | None = None) -> bool:
    """Once a day: the overview numbers and every list that needs staff. True if the digest was sent."""
    recipients = _recipients()
    if not recipients:
        return False
    today = today or timezone.localdate()
    digest = Candidate("", today.isoformat(), None)
    if not _claim(DIGEST, [digest]):
        return False
    overview = selectors.overview(today=today)
    requests = DataSubjectRequest.objects.select_related("assignee").order_by("due_at", "id")
    sections = [
        (
            "Overdue",
            overview.overdue,
            _lines(requests.filter(selectors.overdue_q(today=today)), _describe_due_or_late),
            _list_url("?overdue=yes"),
        ),
        (
            "Due within 7 days",
            overview.due_this_week,
            _lines(requests.filter(selectors.due_soon_q(today=today)), _describe_due),
            _list_url("?due_soon=yes"),
        ),
        (
            "Need attention",
            overview.needs_attention,
            _lines(requests.filter(selectors.needs_attention_q()), _describe_attention),
            _list_url("?attention=yes"),
        ),
        (
            "Verified, waiting for review",
            overview.awaiting_review,
            _lines(requests.filter(status=states.VERIFIED), _describe_review),
            _list_url("?status__exact=verified"),
        ),
        (
            "Mixpanel credentials failing",
            overview.credentials_failing,
            _lines(selectors.failing_projects(), _describe_failing),
            "",
        ),
        (
            "Mixpanel credentials expiring within 30 days",
            overview.credentials_expiring,
            _lines(selectors.expiring_projects(today=today), _describe_expiry),
            "",
        ),
    ]
    subject = (
        f"Daily digest: {overview.overdue} overdue, {overview.due_this_week} due this week, "
        f"{overview.needs_attention} need attention"
    )
    sent = _send(
        kind=DIGEST,
        subject=subject,
        template="admin/gdpr_requests/email/staff_digest.txt",
        context={"overview": overview, "sections": sections, "today": _day(today), "chain_head": chain_head()},
        recipients=recipients,
    )
    if not sent:
        _release(DIGEST, [digest])
        return False
    audit_record(
        action="staff.digest_sent",
        actor=Actor.system("staff alerts"),
        payload={
            "day": today.isoformat(),
            "overdue": overview.overdue,
            "due_this_week": overview.due_this_week,
            "needs_attention": overview.needs_attention,
            "recipient_count": len(recipients),
        },
    )
    StaffAlert.objects.filter(kind=DIGEST, key=digest.key).update(recipient_count=len(recipients))
    return True


def _describe_due_or_late(request: DataSubjectRequest) -> AlertLine:
    days = -request.days_until_due()
    return AlertLine(
        f"{request.reference}: overdue by {_plural(days, 'day')} (was due {_day(request.due_at)}), "
        f"{request.get_status_display().lower()}"
        f"{', assigned to ' + request.assignee.get_username() if request.assignee else ', unassigned'}",
        _request_url(request),
    )


# --- Subject emails the outbox sweep gave up on --------------------------------------------------------------
def _describe_unsent(row: Any) -> AlertLine:
    event = row.event.partition(":")[0]
    return AlertLine(
        f"{row.request.reference}: the {event} email was not sent after {_plural(row.attempts, 'attempt')} "
        f"(queued {_moment(row.created_at)}); it stays unsent until someone looks",
        _request_url(row.request),
    )


def alert_unsent_subject_emails(rows: Iterable[Any]) -> int:
    """Tell staff about subject emails the sweep no longer retries (SubjectNotification rows), once per row.

    The occasion is the row (request reference and event): a later email of the same request alerts again.
    Returns how many rows were alerted.
    """
    rows = list(rows)
    if not rows:
        return 0
    recipients = _recipients()
    if not recipients:
        return 0
    return len(
        _alert(
            kind=SUBJECT_EMAIL_UNSENT,
            candidates=(Candidate(row.request.reference, row.event, row) for row in rows),
            describe=_describe_unsent,
            subject=_subject(
                "An email to the requester of {label} was not sent", "{n} emails to requesters were not sent"
            ),
            intro="These emails to requesters could not be sent and are no longer retried. Check the mail server "
            "and the address, then contact the requester another way if needed:",
            more_url=_list_url(),
            recipients=recipients,
        )
    )
