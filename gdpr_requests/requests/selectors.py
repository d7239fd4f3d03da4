"""Every non-trivial read: work queues, due and overdue lists, what needs attention, overview numbers.

Selectors return querysets or plain data and never write. "Today" is the local date in settings.TIME_ZONE;
callers may pass ``today``/``now`` so that a page, an email and a test agree on the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from gdpr_requests.models import (
    AuditEvent,
    CredentialStatus,
    DataSubjectRequest,
    MixpanelProject,
    MixpanelTask,
    TaskRequestLink,
    TaskState,
)
from gdpr_requests.requests import states

STAFF_GROUP = "Privacy staff"
# The request queue's "due soon" filter and the overview's card look this many days ahead. Staff alert emails
# use their own, shorter horizon (notifications.staff_alerts.ALERT_DUE_WITHIN_DAYS).
DUE_SOON_DAYS = 7
CREDENTIAL_WARNING_DAYS = 30
CHART_WEEKS = 12
# States in which a request waits on us (staff or the pipeline), so that time without a state change means
# it is stuck. Unverified waits on the subject, on hold waits on purpose, failed is flagged on its own.
STUCK_STATES = frozenset({states.VERIFIED, states.APPROVED, states.PROCESSING})
# Tasks that will not move again without a person: a lost task, or a project whose credential fails.
ATTENTION_TASK_STATES = (TaskState.NEEDS_ATTENTION, TaskState.PAUSED)


def _today(today: date | None) -> date:
    return today or timezone.localdate()


# --- Requests -----------------------------------------------------------------------------------------
def open_requests() -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(status__in=states.OPEN_STATES)


def overdue_q(*, today: date | None = None) -> Q:
    """Open and past its due date."""
    return Q(status__in=states.OPEN_STATES, due_at__lt=_today(today))


def due_soon_q(*, today: date | None = None, days: int = DUE_SOON_DAYS) -> Q:
    """Open and due from today up to ``days`` days ahead (today counts; overdue ones do not)."""
    start = _today(today)
    return Q(status__in=states.OPEN_STATES, due_at__gte=start, due_at__lt=start + timedelta(days=days))


def overdue_requests(*, today: date | None = None) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(overdue_q(today=today))


def due_soon_requests(*, today: date | None = None, days: int = DUE_SOON_DAYS) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(due_soon_q(today=today, days=days))


def stuck_cutoff(*, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(hours=settings.DSR_STUCK_HOURS)


def needs_attention_q(*, now: datetime | None = None) -> Q:
    """Failed; open with a failing project credential or a task that cannot move on; or stuck in a state
    that waits on us for longer than DSR_STUCK_HOURS (measured from the last state change).

    Built on subqueries rather than joins so that it never duplicates rows and can be OR-ed or negated.
    """
    failing_project_requests = DataSubjectRequest.projects.through.objects.filter(
        mixpanelproject__credential_status=CredentialStatus.FAILING, mixpanelproject__is_active=True
    ).values("datasubjectrequest_id")
    blocked_task_requests = TaskRequestLink.objects.filter(task__state__in=ATTENTION_TASK_STATES).values("request_id")
    return (
        Q(status=states.FAILED)
        | (Q(status__in=states.OPEN_STATES) & (Q(pk__in=failing_project_requests) | Q(pk__in=blocked_task_requests)))
        | Q(status__in=STUCK_STATES, status_changed_at__lt=stuck_cutoff(now=now))
    )


def needs_attention_requests(*, now: datetime | None = None) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(needs_attention_q(now=now))


def attention_reasons(request: DataSubjectRequest, *, now: datetime | None = None) -> list[str]:
    """Why one request needs attention, in words for staff (empty when it does not)."""
    reasons: list[str] = []
    if request.status == states.FAILED:
        reasons.append("processing failed")
    if request.status in states.OPEN_STATES:
        if request.projects.filter(credential_status=CredentialStatus.FAILING, is_active=True).exists():
            reasons.append("a project's Mixpanel credential is failing")
        if request.tasks.filter(state__in=ATTENTION_TASK_STATES).exists():
            reasons.append("a Mixpanel task needs attention")
    if request.status in STUCK_STATES and request.status_changed_at < stuck_cutoff(now=now):
        reasons.append(f"no progress for more than {settings.DSR_STUCK_HOURS} hours")
    return reasons


def request_timeline(request: DataSubjectRequest) -> QuerySet[AuditEvent]:
    """The request's audit events, newest first."""
    return AuditEvent.objects.filter(request_reference=request.reference).order_by("-sequence")


def request_tasks(request: DataSubjectRequest) -> QuerySet[MixpanelTask]:
    return request.tasks.select_related("project").order_by("-created_at", "-id")


# --- Projects -----------------------------------------------------------------------------------------
def failing_projects() -> QuerySet[MixpanelProject]:
    return MixpanelProject.objects.filter(is_active=True, credential_status=CredentialStatus.FAILING)


def expiring_projects(*, today: date | None = None, days: int = CREDENTIAL_WARNING_DAYS) -> QuerySet[MixpanelProject]:
    """Active projects whose OAuth token expires within ``days`` days (or already has)."""
    return MixpanelProject.objects.filter(is_active=True, token_expires_on__lte=_today(today) + timedelta(days=days))


# --- Staff --------------------------------------------------------------------------------------------
def staff_alert_recipients() -> list[str]:
    """Active members of "Privacy staff" with an email address, plus settings.STAFF_ALERT_EMAILS (deduplicated)."""
    users = get_user_model().objects.filter(is_active=True, groups__name=STAFF_GROUP).exclude(email="")
    addresses = list(users.order_by("email").values_list("email", flat=True).distinct())
    addresses += [address.strip() for address in settings.STAFF_ALERT_EMAILS if address.strip()]
    seen: set[str] = set()
    unique: list[str] = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def staff_assignees() -> QuerySet:
    """Users a request can be assigned to: active staff members of the "Privacy staff" group, or superusers."""
    return (
        get_user_model()
        .objects.filter(is_active=True, is_staff=True)
        .filter(Q(groups__name=STAFF_GROUP) | Q(is_superuser=True))
        .distinct()
        .order_by("username")
    )


# --- Overview -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int


@dataclass(frozen=True)
class Overview:
    today: date
    by_status: list[StatusCount]
    open_total: int
    overdue: int
    due_this_week: int
    needs_attention: int
    awaiting_review: int
    credentials_expiring: int
    credentials_failing: int


def status_counts() -> dict[str, int]:
    rows = DataSubjectRequest.objects.values("status").annotate(n=Count("id")).order_by()
    found = {row["status"]: row["n"] for row in rows}
    return {value: found.get(value, 0) for value, _label in states.STATUS_CHOICES}


def overview(*, today: date | None = None, now: datetime | None = None) -> Overview:
    """The numbers on the admin index and in the daily digest."""
    today = _today(today)
    counts = status_counts()
    labels = dict(states.STATUS_CHOICES)
    return Overview(
        today=today,
        by_status=[StatusCount(status, labels[status], n) for status, n in counts.items()],
        open_total=sum(n for status, n in counts.items() if status in states.OPEN_STATES),
        overdue=overdue_requests(today=today).count(),
        due_this_week=due_soon_requests(today=today).count(),
        needs_attention=needs_attention_requests(now=now).count(),
        awaiting_review=counts[states.VERIFIED],
        credentials_expiring=expiring_projects(today=today).count(),
        credentials_failing=failing_projects().count(),
    )


@dataclass(frozen=True)
class WeekCount:
    week_start: date
    received: int
    closed: int


def week_start(day: date) -> date:
    """The Monday of ``day``'s week."""
    return day - timedelta(days=day.weekday())


def weekly_received_closed(*, today: date | None = None, weeks: int = CHART_WEEKS) -> list[WeekCount]:
    """Requests received and closed per week (Monday to Sunday, local time) for the last ``weeks`` weeks,
    oldest first; the last week is the current one."""
    first = week_start(_today(today)) - timedelta(weeks=weeks - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))

    def per_week(field_name: str, extra: Q) -> dict[date, int]:
        rows = (
            DataSubjectRequest.objects.filter(extra, **{f"{field_name}__gte": start})
            .annotate(week=TruncWeek(field_name))
            .values("week")
            .annotate(n=Count("id"))
            .order_by()
        )
        result: dict[date, int] = {}
        for row in rows:
            week = row["week"]
            day = timezone.localtime(week).date() if isinstance(week, datetime) else week
            result[day] = result.get(day, 0) + row["n"]
        return result

    received = per_week("received_at", Q())
    closed = per_week("closed_at", Q(status__in=states.FINAL_STATES))
    series = []
    for index in range(weeks):
        monday = first + timedelta(weeks=index)
        series.append(WeekCount(monday, received.get(monday, 0), closed.get(monday, 0)))
    return series
