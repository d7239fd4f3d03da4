"""The admin index: today's numbers and the 12-week chart, against a data set whose answers are known."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from gdpr_requests.models import CredentialStatus, MixpanelProject
from gdpr_requests.requests import selectors, services
from gdpr_requests.staff.site import nice_ceiling, weekly_chart
from tests.unit.staff.admin_support import auditor_client, bare_staff, make_failed, staff_client  # noqa: F401

pytestmark = pytest.mark.django_db

# "Today" is Wednesday 18 March 2026; its week starts on Monday 16 March.
TODAY = date(2026, 3, 18)
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def known_world(make_request, project, staff_actor, settings):
    """Requests received and closed on known days (all GDPR: due one month after receipt)."""
    settings.DSR_STUCK_HOURS = 72
    made = {}

    def make(name: str, received: date, **kwargs):
        with time_machine.travel(at(received), tick=False):
            made[name] = make_request(email=f"{name}@example.org", received_at=at(received, 9), **kwargs)
        return made[name]

    # Closed ones: received and closed in earlier weeks.
    make("done", date(2026, 1, 5), verified_by_staff="known")  # week of 5 Jan
    with time_machine.travel(at(date(2026, 1, 20)), tick=False):  # closed in the week of 19 Jan
        services.request_approve(request=made["done"], actor=staff_actor)
        services.request_start_processing(request=made["done"], task_count=1)
        services.request_complete(request=made["done"])
    make("rejected", date(2026, 2, 2))  # week of 2 Feb
    with time_machine.travel(at(date(2026, 3, 17)), tick=False):  # closed in this week (16 Mar)
        services.request_reject(request=made["rejected"], reason="not ours", actor=staff_actor)
    make("too_old", date(2025, 11, 3), verified_by_staff="known")  # before the 12 weeks (first week: 29 Dec)
    with time_machine.travel(at(date(2025, 11, 4)), tick=False):
        services.request_cancel(request=made["too_old"], actor=staff_actor)
    # Open ones.
    make("overdue_a", date(2026, 2, 10))  # due 10 Mar: overdue
    make("overdue_b", date(2026, 2, 17), verified_by_staff="known")  # due 17 Mar: overdue; verified 17 Feb: stuck
    make("due_today", date(2026, 2, 18))  # due 18 Mar: due this week
    make("due_24", date(2026, 2, 24))  # due 24 Mar: due this week (today + 6)
    make("due_25", date(2026, 2, 25))  # due 25 Mar: not this week (today + 7)
    make("failed", date(2026, 3, 16), verified_by_staff="known")  # this week; fails today
    with time_machine.travel(NOW, tick=False):
        make_failed(made["failed"], staff_actor)
        make("fresh", date(2026, 3, 18), verified_by_staff="known")  # verified just now: not stuck
    # Projects: the fixture's expires in 2027; one expires within 30 days, one is failing.
    MixpanelProject.objects.create(
        name="Expiring",
        mixpanel_project_id="2",
        project_token="t2",
        oauth_token="o",
        token_expires_on=TODAY + timedelta(days=30),
    )
    MixpanelProject.objects.create(
        name="Later",
        mixpanel_project_id="3",
        project_token="t3",
        oauth_token="o",
        token_expires_on=TODAY + timedelta(days=31),
    )
    MixpanelProject.objects.create(
        name="Broken",
        mixpanel_project_id="4",
        project_token="t4",
        oauth_token="o",
        token_expires_on=TODAY + timedelta(days=200),
        credential_status=CredentialStatus.FAILING,
    )
    return made


def test_overview_numbers_for_a_known_day(known_world):
    with time_machine.travel(NOW, tick=False):
        overview = selectors.overview()
    counts = {row.status: row.count for row in overview.by_status}
    assert counts == {
        "unverified": 4,  # overdue_a, due_today, due_24, due_25
        "verified": 2,  # overdue_b, fresh
        "approved": 0,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "rejected": 1,
        "cancelled": 1,
        "expired": 0,
        "on_hold": 0,
    }
    assert overview.open_total == 7
    assert overview.overdue == 2
    assert overview.due_this_week == 2  # due today and due on the 24th; the 25th is a week away
    assert overview.needs_attention == 2  # failed; overdue_b verified a month ago and never reviewed
    assert overview.awaiting_review == 2
    assert overview.credentials_expiring == 1
    assert overview.credentials_failing == 1


def test_weekly_series_counts_received_and_closed_per_week(known_world):
    with time_machine.travel(NOW, tick=False):
        series = selectors.weekly_received_closed()
    assert len(series) == 12
    assert series[0].week_start == date(2025, 12, 29) and series[-1].week_start == date(2026, 3, 16)
    by_week = {w.week_start: (w.received, w.closed) for w in series}
    assert by_week[date(2026, 1, 5)] == (1, 0)
    assert by_week[date(2026, 1, 19)] == (0, 1)
    assert by_week[date(2026, 2, 2)] == (1, 0)
    assert by_week[date(2026, 2, 9)] == (1, 0)
    assert by_week[date(2026, 2, 16)] == (2, 0)  # overdue_b (17th) and due_today (18th)
    assert by_week[date(2026, 2, 23)] == (2, 0)
    assert by_week[date(2026, 3, 16)] == (2, 1)  # failed, fresh received; rejected closed
    assert sum(w.received for w in series) == 9 and sum(w.closed for w in series) == 2


def test_the_index_shows_the_numbers_and_an_inline_svg_chart(staff_client, known_world):
    with time_machine.travel(NOW, tick=False):
        page = staff_client.get(reverse("admin:index")).content.decode()
    numbers = dict(re.findall(r'data-metric="(\w+)">\s*<span class="dsr-card-number">(\d+)<', page))
    assert numbers == {
        "overdue": "2",
        "due_this_week": "2",
        "needs_attention": "2",
        "awaiting_review": "2",
        "credentials_expiring": "1",
        "credentials_failing": "1",
    }
    assert '<td data-status="unverified">4</td>' in page
    start = page.index('<figure class="dsr-chart">')
    svg = page[start : page.index("</svg>", start)]
    assert svg.count('class="dsr-bar dsr-bar-received"') == 12 and svg.count('class="dsr-bar dsr-bar-closed"') == 12
    assert "Week of 16 Mar: 2 received" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    assert "<script" not in page[page.index('class="dsr-overview"') : page.index("</section>")]


def test_auditors_see_the_overview_and_staff_without_a_role_do_not(auditor_client, client, bare_staff, known_world):
    assert "dsr-overview" in auditor_client.get(reverse("admin:index")).content.decode()
    client.force_login(bare_staff)
    assert "dsr-overview" not in client.get(reverse("admin:index")).content.decode()


def test_an_empty_database_draws_an_empty_chart(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()
    assert "0 received, 0 closed" in page


@pytest.mark.parametrize(
    ("value", "expected"), [(0, (4, 1)), (3, (4, 1)), (7, (8, 2)), (130, (200, 50)), (40, (40, 10))]
)
def test_the_chart_axis_ends_on_a_round_number(value, expected):
    assert nice_ceiling(value) == expected


def test_bar_heights_are_proportional_to_the_counts():
    series = [selectors.WeekCount(date(2026, 1, 5) + timedelta(weeks=i), i, 0) for i in range(12)]
    chart = weekly_chart(series)
    received = [bar for bar in chart["bars"] if bar.series == "received"]
    assert received[0].height == 0
    assert received[11].height == pytest.approx(received[1].height * 11, abs=0.6)
    assert all(bar.y + bar.height == pytest.approx(chart["baseline"], abs=0.1) for bar in chart["bars"])


def test_the_due_soon_card_says_the_horizon_it_counts(staff_client, monkeypatch):
    monkeypatch.setattr(selectors, "DUE_SOON_DAYS", 5)
    assert "due within 5 days" in staff_client.get("/admin/").content.decode()
