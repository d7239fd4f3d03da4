"""The compliance summary for a period: volumes, time to close, deadlines, extensions, rejections, Mixpanel.

Definitions (the page and the PDF print them too, so a reader knows what each number means):

- A request is *received* in the period when its local receipt date falls in it, and *closed* in the period
  when its local closing date does (any final state: completed, rejected, cancelled, expired).
- *Answered* requests are those closed as completed or rejected: the ones the organisation had to answer.
  Withdrawn (cancelled) and never-confirmed (expired) requests count as closed but are not timed.
- *Days to close* is the closing date minus the receipt date, in calendar days (local time zone).
- *On time* means the closing date is on or before the due date in force (the extended one, if extended).
- The median and the 90th percentile interpolate linearly between the two nearest ranks (the "inclusive"
  method of ``statistics.quantiles``; numpy's default).
- Open and overdue requests, and credentials, are a snapshot at the time the report is generated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from gdpr_requests.models import (
    ApiCall,
    DataSubjectRequest,
    MixpanelProject,
    MixpanelTask,
    Regulation,
    RejectionGround,
    RequestKind,
    TaskKind,
    TaskState,
)
from gdpr_requests.requests import states

WEEK = "week"
MONTH = "month"
GRANULARITIES = (WEEK, MONTH)
ANSWERED_STATES = (states.COMPLETED, states.REJECTED)
# Enough for any real queue; the count above the table says when rows were left out.
OPEN_ROWS_LIMIT = 1000
FAILURE_ROWS_LIMIT = 200
CREDENTIAL_WARNING_DAYS = 30
MAX_PERIOD_DAYS = 3 * 366
NO_VALUE = "\u2013"  # an en dash: "no value", e.g. a median of nothing


class PeriodError(ValueError):
    """A period the summary cannot be built for, with a message fit to show the user."""


@dataclass(frozen=True)
class Segment:
    """One kind-and-regulation combination, e.g. deletion under GDPR."""

    key: str
    label: str


SEGMENTS: tuple[Segment, ...] = tuple(
    Segment(f"{kind.value}/{regulation.value}", f"{kind.label} · {regulation.label}")
    for kind in RequestKind
    for regulation in Regulation
)


@dataclass
class Bucket:
    """One week (Monday to Sunday) or one calendar month of the period, clipped to the period."""

    key: str
    label: str
    start: date
    end: date
    short_label: str = ""
    received: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    on_time: int = 0
    median_days: float | None = None
    p90_days: float | None = None

    @property
    def received_total(self) -> int:
        return sum(self.received.values())

    @property
    def closed_total(self) -> int:
        return sum(self.closed.values())

    @property
    def received_cells(self) -> list[int]:
        return [self.received.get(segment.key, 0) for segment in SEGMENTS]

    @property
    def closed_cells(self) -> list[int]:
        return [self.closed.get(segment.key, 0) for segment in SEGMENTS]

    @property
    def median_display(self) -> str:
        return format_days(self.median_days)

    @property
    def p90_display(self) -> str:
        return format_days(self.p90_days)


@dataclass
class ComplianceSummary:
    organisation: str
    period_start: date
    period_end: date
    granularity: str
    generated_at: datetime
    generated_by: str
    segments: tuple[Segment, ...]
    buckets: list[Bucket]
    received_by_segment: dict[str, int]
    closed_by_segment: dict[str, int]
    closed_by_status: list[tuple[str, int]]
    answered: int
    on_time: int
    late: list[dict[str, Any]]
    median_days: float | None
    p90_days: float | None
    open_requests: list[dict[str, Any]]
    open_count: int
    overdue_count: int
    extensions: list[dict[str, Any]]
    rejections: list[dict[str, Any]]
    rejected_count: int
    approved_deletions: int
    two_approver_deletions: int
    task_outcomes: list[dict[str, Any]]
    task_failures: list[dict[str, Any]]
    task_failure_count: int
    api_calls: list[dict[str, Any]]
    api_call_count: int
    api_call_failures: int
    credentials: list[dict[str, Any]]

    @property
    def received_total(self) -> int:
        return sum(self.received_by_segment.values())

    @property
    def closed_total(self) -> int:
        return sum(self.closed_by_segment.values())

    @property
    def on_time_share(self) -> float | None:
        return self.on_time / self.answered if self.answered else None

    @property
    def period_label(self) -> str:
        return f"{self.period_start.isoformat()} to {self.period_end.isoformat()}"

    @property
    def bucket_noun(self) -> str:
        return "Week" if self.granularity == WEEK else "Month"

    def key_figures(self) -> list[tuple[str, str]]:
        """The headline numbers, formatted once, so the HTML page and the PDF print the same strings."""
        return [
            ("Received", str(self.received_total)),
            ("Closed", str(self.closed_total)),
            ("Answered", str(self.answered)),
            ("On time", format_share(self.on_time, self.answered)),
            ("Median days to close", format_days(self.median_days)),
            ("90th percentile days", format_days(self.p90_days)),
            ("Open now", str(self.open_count)),
            ("Overdue now", str(self.overdue_count)),
            ("Deletions approved by two", f"{self.two_approver_deletions} of {self.approved_deletions}"),
        ]

    def task_state_table(self) -> tuple[list[str], list[tuple[str, list[int], int]]]:
        """Task counts with one row per state and one column per kind, plus a total row."""
        kinds = [row["kind"] for row in self.task_outcomes]
        states_seen = [name for name, _count in self.task_outcomes[0]["states"]] if self.task_outcomes else []
        rows = []
        for index, state in enumerate(states_seen):
            counts = [row["states"][index][1] for row in self.task_outcomes]
            rows.append((state, counts, sum(counts)))
        totals = [row["total"] for row in self.task_outcomes]
        rows.append(("Total", totals, sum(totals)))
        return kinds, rows

    def scope(self) -> dict[str, str]:
        """What the report covers, for its audit event."""
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "granularity": self.granularity,
        }


def format_days(value: float | None) -> str:
    if value is None:
        return NO_VALUE
    return f"{value:.1f}"


def format_share(part: int, whole: int) -> str:
    if not whole:
        return NO_VALUE
    return f"{100 * part / whole:.1f}% ({part} of {whole})"


def percentile(values: list[float] | list[int], fraction: float) -> float | None:
    """The ``fraction`` quantile with linear interpolation between closest ranks (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def default_period(today: date | None = None) -> tuple[date, date]:
    """The current calendar quarter, from its first day up to today (the period auditors report on)."""
    today = today or timezone.localdate()
    start = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
    return start, today


def validate_period(start: date, end: date, granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise PeriodError(f"Group by {' or '.join(GRANULARITIES)}, not {granularity!r}.")
    if end < start:
        raise PeriodError("The period ends before it starts.")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise PeriodError("The period is longer than three years: choose a shorter one.")


def _local_date(moment: datetime) -> date:
    return timezone.localtime(moment).date()


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def make_buckets(start: date, end: date, granularity: str) -> list[Bucket]:
    buckets: list[Bucket] = []
    if granularity == WEEK:
        cursor = start - timedelta(days=start.weekday())
        while cursor <= end:
            year, week, _ = cursor.isocalendar()
            last = cursor + timedelta(days=6)
            buckets.append(
                Bucket(
                    f"{year}-W{week:02d}",
                    f"{year}-W{week:02d} ({cursor:%d %b})",
                    max(cursor, start),
                    min(last, end),
                    short_label=f"{cursor:%-d %b}",
                )
            )
            cursor += timedelta(days=7)
    else:
        cursor = start.replace(day=1)
        while cursor <= end:
            following = states.add_months(cursor, 1)
            buckets.append(
                Bucket(
                    f"{cursor:%Y-%m}",
                    f"{cursor:%b %Y}",
                    max(cursor, start),
                    min(following - timedelta(days=1), end),
                    short_label=f"{cursor:%b %Y}",
                )
            )
            cursor = following
    return buckets


def _bucket_for(buckets: list[Bucket], day: date) -> Bucket | None:
    for bucket in buckets:
        if bucket.start <= day <= bucket.end:
            return bucket
    return None


def build_summary(
    *,
    start: date,
    end: date,
    granularity: str = WEEK,
    now: datetime | None = None,
    generated_by: str = "",
) -> ComplianceSummary:
    """Compute every number of the compliance summary for ``start``..``end`` (inclusive, local dates)."""
    validate_period(start, end, granularity)
    now = now or timezone.now()
    today = _local_date(now)
    since, until = _local_midnight(start), _local_midnight(end + timedelta(days=1))
    buckets = make_buckets(start, end, granularity)

    received_by_segment: Counter[str] = Counter()
    closed_by_segment: Counter[str] = Counter()
    closed_by_status: Counter[str] = Counter()
    days_all: list[int] = []
    days_by_bucket: dict[str, list[int]] = defaultdict(list)
    late: list[dict[str, Any]] = []
    on_time = 0

    rows = (
        DataSubjectRequest.objects.filter(
            Q(received_at__gte=since, received_at__lt=until) | Q(closed_at__gte=since, closed_at__lt=until)
        )
        .order_by("received_at", "id")
        .values_list("reference", "kind", "regulation", "status", "received_at", "closed_at", "due_at")
        .iterator(chunk_size=2000)
    )
    for reference, kind, regulation, status, received_at, closed_at, due_at in rows:
        segment = f"{kind}/{regulation}"
        received_day = _local_date(received_at)
        if start <= received_day <= end:
            received_by_segment[segment] += 1
            bucket = _bucket_for(buckets, received_day)
            if bucket is not None:
                bucket.received[segment] = bucket.received.get(segment, 0) + 1
        if closed_at is None:
            continue
        closed_day = _local_date(closed_at)
        if not start <= closed_day <= end:
            continue
        closed_by_segment[segment] += 1
        closed_by_status[status] += 1
        bucket = _bucket_for(buckets, closed_day)
        if bucket is not None:
            bucket.closed[segment] = bucket.closed.get(segment, 0) + 1
        if status not in ANSWERED_STATES:
            continue
        days = (closed_day - received_day).days
        days_all.append(days)
        in_time = closed_day <= due_at
        if bucket is not None:
            days_by_bucket[bucket.key].append(days)
            bucket.answered += 1
            bucket.on_time += int(in_time)
        if in_time:
            on_time += 1
        else:
            late.append(
                {
                    "reference": reference,
                    "regulation": regulation,
                    "due_at": due_at,
                    "closed_on": closed_day,
                    "days_late": (closed_day - due_at).days,
                }
            )

    for bucket in buckets:
        values = days_by_bucket.get(bucket.key, [])
        bucket.median_days = percentile(values, 0.5)
        bucket.p90_days = percentile(values, 0.9)

    status_labels = dict(states.STATUS_CHOICES)
    open_requests, open_count, overdue_count = _open_requests(today)
    rejections, rejected_count = _rejections(since, until)
    approved_deletions, two_approver_deletions = _deletion_approvals(since, until)
    task_outcomes, task_failures, task_failure_count = _tasks(since, until)
    api_calls, api_call_count, api_call_failures = _api_calls(since, until)

    return ComplianceSummary(
        organisation=settings.ORGANISATION_NAME,
        period_start=start,
        period_end=end,
        granularity=granularity,
        generated_at=now,
        generated_by=generated_by,
        segments=SEGMENTS,
        buckets=buckets,
        received_by_segment={s.key: received_by_segment[s.key] for s in SEGMENTS},
        closed_by_segment={s.key: closed_by_segment[s.key] for s in SEGMENTS},
        closed_by_status=[(status_labels[s], closed_by_status[s]) for s in _FINAL_ORDER],
        answered=len(days_all),
        on_time=on_time,
        late=sorted(late, key=lambda row: (-row["days_late"], row["reference"])),
        median_days=percentile(days_all, 0.5),
        p90_days=percentile(days_all, 0.9),
        open_requests=open_requests,
        open_count=open_count,
        overdue_count=overdue_count,
        extensions=_extensions(since, until),
        rejections=rejections,
        rejected_count=rejected_count,
        approved_deletions=approved_deletions,
        two_approver_deletions=two_approver_deletions,
        task_outcomes=task_outcomes,
        task_failures=task_failures,
        task_failure_count=task_failure_count,
        api_calls=api_calls,
        api_call_count=api_call_count,
        api_call_failures=api_call_failures,
        credentials=_credentials(today),
    )


_FINAL_ORDER = (states.COMPLETED, states.REJECTED, states.CANCELLED, states.EXPIRED)


def _open_requests(today: date) -> tuple[list[dict[str, Any]], int, int]:
    status_labels = dict(states.STATUS_CHOICES)
    queryset = DataSubjectRequest.objects.filter(status__in=states.OPEN_STATES)
    open_count = queryset.count()
    overdue_count = queryset.filter(due_at__lt=today).count()
    rows = [
        {
            "reference": reference,
            "kind": RequestKind(kind).label,
            "regulation": Regulation(regulation).label,
            "status": status_labels.get(status, status),
            "received_on": _local_date(received_at),
            "due_at": due_at,
            "extended": extended_at is not None,
            "overdue": due_at < today,
            "days_overdue": max((today - due_at).days, 0),
        }
        for reference, kind, regulation, status, received_at, due_at, extended_at in queryset.order_by(
            "due_at", "received_at", "id"
        ).values_list("reference", "kind", "regulation", "status", "received_at", "due_at", "extended_at")[
            :OPEN_ROWS_LIMIT
        ]
    ]
    return rows, open_count, overdue_count


def _extensions(since: datetime, until: datetime) -> list[dict[str, Any]]:
    return [
        {
            "reference": reference,
            "regulation": Regulation(regulation).label,
            "extended_on": _local_date(extended_at),
            "original_due_at": original_due_at,
            "due_at": due_at,
            "reason": reason,
        }
        for reference, regulation, extended_at, original_due_at, due_at, reason in DataSubjectRequest.objects.filter(
            extended_at__gte=since, extended_at__lt=until
        )
        .order_by("extended_at", "id")
        .values_list("reference", "regulation", "extended_at", "original_due_at", "due_at", "extension_reason")
    ]


def _rejections(since: datetime, until: datetime) -> tuple[list[dict[str, Any]], int]:
    """Rejections closed in the period, grouped by their ground in the law's words (RejectionGround); those
    recorded before grounds existed, and "other", by their text (same text, ignoring case and spacing)."""
    grounds = dict(RejectionGround.choices)
    groups: dict[str, dict[str, Any]] = {}
    total = 0
    for reference, reason, ground in (
        DataSubjectRequest.objects.filter(status=states.REJECTED, closed_at__gte=since, closed_at__lt=until)
        .order_by("closed_at", "id")
        .values_list("reference", "rejection_reason", "rejection__ground")
    ):
        total += 1
        if ground and ground != RejectionGround.OTHER:
            text = str(grounds.get(ground, ground))
        else:
            text = " ".join(reason.split()) or "(no reason recorded)"
        group = groups.setdefault(text.casefold(), {"reason": text, "count": 0, "references": []})
        group["count"] += 1
        group["references"].append(reference)
    rows = sorted(groups.values(), key=lambda group: (-group["count"], group["reason"].casefold()))
    return rows, total


def _deletion_approvals(since: datetime, until: datetime) -> tuple[int, int]:
    """Deletions approved in the period, and how many of them by two different staff members."""
    approved = DataSubjectRequest.objects.filter(
        kind=RequestKind.DELETION, approved_at__gte=since, approved_at__lt=until
    ).annotate(approvers=Count("deletion_approvals__approver", distinct=True))
    return approved.count(), approved.filter(approvers__gte=2).count()


def _tasks(since: datetime, until: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Mixpanel tasks created in the period by kind and state, and those that failed or need attention."""
    in_period = MixpanelTask.objects.filter(created_at__gte=since, created_at__lt=until)
    state_labels = dict(TaskState.choices)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in in_period.values("kind", "state").annotate(n=Count("id")).order_by():
        counts[row["kind"]][row["state"]] = row["n"]
    outcomes = [
        {
            "kind": kind.label,
            "states": [(state_labels[state], counts[kind.value][state]) for state in TaskState.values],
            "total": sum(counts[kind.value].values()),
        }
        for kind in TaskKind
    ]
    failing = in_period.filter(state__in=(TaskState.FAILED, TaskState.NEEDS_ATTENTION, TaskState.PAUSED))
    failures = [
        {
            "task_id": task_id,
            "project": project_name,
            "kind": kind,
            "tracking_id": tracking_id,
            "state": state_labels.get(state, state),
            "remote_status": remote_status,
            "attempts": attempts,
            "last_error": last_error,
        }
        for task_id, project_name, kind, tracking_id, state, remote_status, attempts, last_error in failing.order_by(
            "created_at", "id"
        ).values_list("id", "project__name", "kind", "tracking_id", "state", "remote_status", "attempts", "last_error")[
            :FAILURE_ROWS_LIMIT
        ]
    ]
    return outcomes, failures, failing.count()


def _api_calls(since: datetime, until: datetime) -> tuple[list[dict[str, Any]], int, int]:
    """HTTP calls to Mixpanel in the period by operation, outcome and HTTP status.

    A call "failed" when it got no 2xx answer (timeouts and network errors have no status at all): a plain
    fact about the wire, independent of how the pipeline names its outcomes.
    """
    rows = list(
        ApiCall.objects.filter(created_at__gte=since, created_at__lt=until)
        .values("operation", "outcome", "http_status")
        .annotate(n=Count("id"))
        .order_by("operation", "outcome", "http_status")
    )
    table = [
        {
            "operation": row["operation"],
            "outcome": row["outcome"],
            "http_status": NO_VALUE if row["http_status"] is None else str(row["http_status"]),
            "count": row["n"],
        }
        for row in rows
    ]
    total = sum(row["n"] for row in rows)
    failures = sum(row["n"] for row in rows if row["http_status"] is None or not 200 <= row["http_status"] < 300)
    return table, total, failures


def _credentials(today: date) -> list[dict[str, Any]]:
    return [
        {
            "project": project.name,
            "active": project.is_active,
            "credential_status": project.get_credential_status_display(),
            "checked_at": project.credential_checked_at,
            "expires_on": project.token_expires_on,
            "days_left": (project.token_expires_on - today).days,
            "warning": (project.token_expires_on - today).days <= CREDENTIAL_WARNING_DAYS
            or project.credential_status == "failing",
        }
        for project in MixpanelProject.objects.order_by("name")
    ]
