"""The compliance summary's numbers against a data set computed by hand (see the comments on each request).

Period: Monday 2025-01-06 to Sunday 2025-01-26 (ISO weeks 2, 3, 4), generated on 2025-01-27; TIME_ZONE is UTC.
Requests are built through the services, with time travel for the dates. The deadline boundary (closed on the
due date, the day after, and late evening local time in a zone other than UTC) has its own tests below.
"""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime

import pytest
import time_machine

from gdpr_requests.models import ApiCall, MixpanelTask, TaskRequestLink
from gdpr_requests.reports import build_summary, percentile
from gdpr_requests.reports.summary import MONTH, WEEK, PeriodError, make_buckets
from gdpr_requests.requests import services

pytestmark = pytest.mark.django_db

PERIOD = (date(2025, 1, 6), date(2025, 1, 26))
NOW = datetime(2025, 1, 27, 9, 0, tzinfo=UTC)
EXTENSION_REASON = "Complex request: records held by the 東京 and Łódź offices (Ωμέγα system)"


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def _create(make_request, kind: str, regulation: str, received: str, **extra):
    with time_machine.travel(at(received), tick=False):
        return make_request(kind=kind, regulation=regulation, received_at=at(received), **extra)


def _answer(dsr, day: str, *, actor, reject: str = "", extend: tuple[str, str] | None = None):
    """Verify and, on ``day``, either reject or approve → process → complete."""
    with time_machine.travel(at(day, 8), tick=False):
        services.request_record_identity(request=dsr, how="email confirmed by phone", actor=actor)
    if extend:
        with time_machine.travel(at(extend[0], 9), tick=False):
            services.request_extend(request=dsr, reason=extend[1], actor=actor)
    with time_machine.travel(at(day, 11), tick=False):
        if reject:
            return services.request_reject(request=dsr, reason=reject, actor=actor)
        services.request_approve(request=dsr, actor=actor)
        services.request_start_processing(request=dsr, task_count=1)
        return services.request_complete(request=dsr)


@pytest.fixture
def dataset(make_request, staff_actor, project):
    """The hand-computed data set. Days to close of the answered requests: 4, 4, 7, 12, 20, 52, 56."""
    made = {}
    # R1 deletion/GDPR, received W02, completed 01-10: 4 days, on time.
    made["R1"] = _answer(_create(make_request, "deletion", "gdpr", "2025-01-06"), "2025-01-10", actor=staff_actor)
    # R2 access/GDPR, received W02, rejected 01-14: 7 days, on time.
    made["R2"] = _answer(
        _create(make_request, "access", "gdpr", "2025-01-07"),
        "2025-01-14",
        actor=staff_actor,
        reject="Identity not confirmed",
    )
    # R3 access/CCPA, received W02, completed 01-20: 12 days, on time.
    made["R3"] = _answer(_create(make_request, "access", "ccpa", "2025-01-08"), "2025-01-20", actor=staff_actor)
    # R4 deletion/GDPR received before the period (due 2024-12-20), completed 01-15: 56 days, 26 days late.
    made["R4"] = _answer(_create(make_request, "deletion", "gdpr", "2024-11-20"), "2025-01-15", actor=staff_actor)
    # R5 deletion/GDPR received W03, cancelled 01-14: closed, not answered, not timed.
    r5 = _create(make_request, "deletion", "gdpr", "2025-01-13")
    with time_machine.travel(at("2025-01-14"), tick=False):
        made["R5"] = services.request_cancel(request=r5, actor=staff_actor, reason="withdrawn by phone")
    # R6 access/GDPR received W04, still open (verified), due 2025-02-21: not overdue.
    r6 = _create(make_request, "access", "gdpr", "2025-01-21")
    with time_machine.travel(at("2025-01-22"), tick=False):
        made["R6"] = services.request_record_identity(request=r6, how="email", actor=staff_actor)
    # R7 deletion/CCPA received 2024-10-01 (due 2024-11-15), on hold: overdue by 73 days on 2025-01-27.
    r7 = _create(make_request, "deletion", "ccpa", "2024-10-01")
    with time_machine.travel(at("2024-10-02"), tick=False):
        made["R7"] = services.request_hold(request=r7, reason="waiting for the subject", actor=staff_actor)
    # R8 deletion/GDPR received 2024-12-01 (due 2025-01-01), extended 01-16 to 2025-03-01, completed 01-22:
    # 52 days, on time against the extended date.
    made["R8"] = _answer(
        _create(make_request, "deletion", "gdpr", "2024-12-01"),
        "2025-01-22",
        actor=staff_actor,
        extend=("2025-01-16", EXTENSION_REASON),
    )
    # R9 access/GDPR received W04, rejected 01-24 with the same reason as R2 in other case and spacing: 4 days.
    made["R9"] = _answer(
        _create(make_request, "access", "gdpr", "2025-01-20"),
        "2025-01-24",
        actor=staff_actor,
        reject="identity   not  confirmed",
    )
    # R10 access/CCPA received 2024-12-20 (due 2025-02-03), rejected 01-09: 20 days, on time.
    made["R10"] = _answer(
        _create(make_request, "access", "ccpa", "2024-12-20"),
        "2025-01-09",
        actor=staff_actor,
        reject="Manifestly unfounded",
    )
    # Mixpanel: two tasks created in the period (one succeeded, one failed), one before it; four calls.
    with time_machine.travel(at("2025-01-10", 9), tick=False):
        ok = MixpanelTask.objects.create(
            project=project, kind="deletion", compliance_type="GDPR", tracking_id="trk-ok-1", state="succeeded"
        )
        TaskRequestLink.objects.create(task=ok, request=made["R1"])
        ApiCall.objects.create(project=project, task=ok, operation="create_deletion", http_status=201, outcome="ok")
        ApiCall.objects.create(project=project, task=ok, operation="deletion_status", http_status=200, outcome="ok")
    with time_machine.travel(at("2025-01-20", 9), tick=False):
        bad = MixpanelTask.objects.create(
            project=project,
            kind="retrieval",
            compliance_type="CCPA",
            tracking_id="trk-bad-2",
            state="failed",
            last_error="HTTP 400 from Mixpanel",
        )
        ApiCall.objects.create(
            project=project, task=bad, operation="create_retrieval", http_status=400, outcome="error"
        )
        ApiCall.objects.create(
            project=project, task=bad, operation="create_retrieval", http_status=None, outcome="timeout"
        )
    with time_machine.travel(at("2024-12-20", 9), tick=False):
        MixpanelTask.objects.create(project=project, kind="deletion", compliance_type="GDPR", state="failed")
    return made


def _summary(granularity: str = WEEK):
    return build_summary(start=PERIOD[0], end=PERIOD[1], granularity=granularity, now=NOW, generated_by="aud")


def test_it_counts_requests_received_and_closed_per_week_by_kind_and_regulation(dataset):
    summary = _summary()
    assert [b.key for b in summary.buckets] == ["2025-W02", "2025-W03", "2025-W04"]
    assert [b.received_total for b in summary.buckets] == [3, 1, 2]
    assert [b.closed_total for b in summary.buckets] == [2, 3, 3]
    assert summary.buckets[0].received == {"deletion/gdpr": 1, "access/gdpr": 1, "access/ccpa": 1}
    assert summary.buckets[2].closed == {"access/ccpa": 1, "deletion/gdpr": 1, "access/gdpr": 1}
    assert summary.received_by_segment == {"access/gdpr": 3, "access/ccpa": 1, "deletion/gdpr": 2, "deletion/ccpa": 0}
    assert summary.closed_total == 8
    assert dict(summary.closed_by_status) == {"Completed": 4, "Rejected": 3, "Cancelled": 1, "Expired": 0}


def test_median_p90_and_on_time_share_match_the_hand_computed_values(dataset):
    summary = _summary()
    assert summary.answered == 7
    assert summary.median_days == 12.0
    assert summary.p90_days == pytest.approx(53.6)  # rank 5.4 between 52 and 56
    assert (summary.on_time, summary.on_time_share) == (6, pytest.approx(6 / 7))
    assert [(row["reference"], row["days_late"]) for row in summary.late] == [(dataset["R4"].reference, 26)]
    figures = dict(summary.key_figures())
    assert figures["On time"] == "85.7% (6 of 7)"
    assert (figures["Median days to close"], figures["90th percentile days"]) == ("12.0", "53.6")


def test_per_week_timing_matches_the_hand_computed_values(dataset):
    buckets = _summary().buckets
    assert [(b.answered, b.on_time) for b in buckets] == [(2, 2), (2, 1), (3, 3)]
    assert [b.median_days for b in buckets] == [12.0, 31.5, 12.0]
    assert [b.p90_days for b in buckets] == [pytest.approx(18.4), pytest.approx(51.1), pytest.approx(44.0)]


def test_open_and_overdue_requests_are_a_snapshot_at_generation(dataset):
    summary = _summary()
    assert (summary.open_count, summary.overdue_count) == (2, 1)
    rows = {row["reference"]: row for row in summary.open_requests}
    overdue = rows[dataset["R7"].reference]
    assert (overdue["overdue"], overdue["days_overdue"], overdue["status"]) == (True, 73, "On hold")
    assert rows[dataset["R6"].reference]["overdue"] is False
    assert summary.open_requests[0]["reference"] == dataset["R7"].reference  # by due date


def test_extensions_and_rejections_by_reason(dataset):
    summary = _summary()
    assert summary.extensions == [
        {
            "reference": dataset["R8"].reference,
            "regulation": "GDPR",
            "extended_on": date(2025, 1, 16),
            "original_due_at": date(2025, 1, 1),
            "due_at": date(2025, 3, 1),
            "reason": EXTENSION_REASON,
        }
    ]
    assert summary.rejected_count == 3
    assert [(row["reason"], row["count"]) for row in summary.rejections] == [
        ("Identity not confirmed", 2),
        ("Manifestly unfounded", 1),
    ]


def test_mixpanel_task_outcomes_failures_and_api_calls_in_the_period(dataset, project):
    summary = _summary()
    by_kind = {row["kind"]: dict(row["states"]) for row in summary.task_outcomes}
    assert by_kind["Deletion"]["Succeeded"] == 1 and by_kind["Deletion"]["Failed"] == 0  # the December one is out
    assert by_kind["Retrieval"]["Failed"] == 1
    assert [(row["tracking_id"], row["last_error"]) for row in summary.task_failures] == [
        ("trk-bad-2", "HTTP 400 from Mixpanel")
    ]
    assert (summary.api_call_count, summary.api_call_failures) == (4, 2)
    assert {(r["operation"], r["http_status"], r["count"]) for r in summary.api_calls} == {
        ("create_deletion", "201", 1),
        ("deletion_status", "200", 1),
        ("create_retrieval", "400", 1),
        ("create_retrieval", "\u2013", 1),
    }
    assert summary.credentials[0]["project"] == project.name
    assert summary.credentials[0]["days_left"] == (date(2027, 6, 1) - date(2025, 1, 27)).days


def test_month_granularity_clips_buckets_to_the_period(dataset):
    summary = build_summary(start=date(2024, 12, 15), end=date(2025, 1, 26), granularity=MONTH, now=NOW)
    assert [(b.key, b.start, b.end) for b in summary.buckets] == [
        ("2024-12", date(2024, 12, 15), date(2024, 12, 31)),
        ("2025-01", date(2025, 1, 1), date(2025, 1, 26)),
    ]
    assert [b.received_total for b in summary.buckets] == [1, 6]  # R10 in December


def test_week_buckets_start_on_monday_and_cover_a_year_boundary():
    buckets = make_buckets(date(2024, 12, 28), date(2025, 1, 7), WEEK)
    assert [(b.key, b.start, b.end) for b in buckets] == [
        ("2024-W52", date(2024, 12, 28), date(2024, 12, 29)),
        ("2025-W01", date(2024, 12, 30), date(2025, 1, 5)),
        ("2025-W02", date(2025, 1, 6), date(2025, 1, 7)),
    ]


@pytest.mark.parametrize("values", [[5], [1, 2], [3, 1, 2], [4, 4, 7, 12, 20, 52, 56], list(range(0, 101, 7))])
def test_percentile_agrees_with_the_inclusive_method_of_statistics(values):
    assert percentile(values, 0.5) == pytest.approx(statistics.median(values))
    if len(values) > 1:
        assert percentile(values, 0.9) == pytest.approx(statistics.quantiles(values, n=10, method="inclusive")[8])
    assert percentile([], 0.9) is None


def test_an_empty_period_has_no_timing_and_says_so(db):
    summary = build_summary(start=PERIOD[0], end=PERIOD[1], now=NOW)
    assert (summary.received_total, summary.answered, summary.median_days, summary.on_time_share) == (0, 0, None, None)
    assert dict(summary.key_figures())["On time"] == "\u2013"


# The deadline boundary: R1 to R10 above all close days away from their due dates, so a summary that counted a
# request closed on its due date as late (``<`` for ``<=``), or that compared the UTC closing date with the
# local due date, passed them all. A GDPR request received on 2025-01-06 is due on 2025-02-06.
RECEIVED_JAN_6 = datetime(2025, 1, 6, 17, 0, tzinfo=UTC)  # midday in New York, evening in Berlin: 6 Jan in both
DUE = date(2025, 2, 6)


def _complete_at(make_request, closed: datetime, *, actor):
    """A GDPR deletion received on RECEIVED_JAN_6, verified, approved and completed at ``closed``."""
    with time_machine.travel(RECEIVED_JAN_6, tick=False):
        dsr = make_request(kind="deletion", regulation="gdpr", received_at=RECEIVED_JAN_6)
    assert dsr.due_at == DUE
    with time_machine.travel(closed, tick=False):
        services.request_record_identity(request=dsr, how="email confirmed by phone", actor=actor)
        services.request_approve(request=dsr, actor=actor)
        services.request_start_processing(request=dsr, task_count=1)
        return services.request_complete(request=dsr)


def _february():
    return build_summary(start=date(2025, 2, 1), end=date(2025, 2, 28), now=datetime(2025, 3, 3, 9, tzinfo=UTC))


def test_a_request_closed_on_its_due_date_is_on_time(make_request, staff_actor):
    _complete_at(make_request, datetime(2025, 2, 6, 23, 59, tzinfo=UTC), actor=staff_actor)
    summary = _february()
    assert (summary.answered, summary.on_time, summary.late) == (1, 1, [])
    assert dict(summary.key_figures())["On time"] == "100.0% (1 of 1)"
    assert [(b.answered, b.on_time) for b in summary.buckets if b.answered] == [(1, 1)]


def test_a_request_closed_the_day_after_its_due_date_is_one_day_late(make_request, staff_actor):
    dsr = _complete_at(make_request, datetime(2025, 2, 7, 0, 1, tzinfo=UTC), actor=staff_actor)
    summary = _february()
    assert (summary.answered, summary.on_time) == (1, 0)
    assert summary.late == [
        {"reference": dsr.reference, "regulation": "gdpr", "due_at": DUE, "closed_on": date(2025, 2, 7), "days_late": 1}
    ]
    assert dict(summary.key_figures())["On time"] == "0.0% (0 of 1)"


@pytest.mark.parametrize(
    ("zone", "closed_utc", "late_by"),
    [
        # 22:30 on 6 Feb in New York is 03:30 on 7 Feb in UTC: closed on the due date, on time.
        ("America/New_York", datetime(2025, 2, 7, 3, 30, tzinfo=UTC), None),
        # 00:30 on 7 Feb in Berlin is 23:30 on 6 Feb in UTC: closed the day after the due date, late.
        ("Europe/Berlin", datetime(2025, 2, 6, 23, 30, tzinfo=UTC), 1),
    ],
)
def test_the_due_date_is_compared_with_the_local_closing_date(
    settings, make_request, staff_actor, zone, closed_utc, late_by
):
    settings.TIME_ZONE = zone
    _complete_at(make_request, closed_utc, actor=staff_actor)
    summary = _february()
    assert summary.answered == 1
    assert [row["days_late"] for row in summary.late] == ([] if late_by is None else [late_by])
    assert summary.on_time == (1 if late_by is None else 0)


@pytest.mark.parametrize(
    ("start", "end", "granularity", "message"),
    [
        (date(2025, 2, 1), date(2025, 1, 1), WEEK, "ends before it starts"),
        (date(2020, 1, 1), date(2025, 1, 1), WEEK, "longer than three years"),
        (date(2025, 1, 1), date(2025, 2, 1), "day", "Group by"),
    ],
)
def test_it_refuses_a_bad_period_with_a_clear_message(db, start, end, granularity, message):
    with pytest.raises(PeriodError, match=message):
        build_summary(start=start, end=end, granularity=granularity)
