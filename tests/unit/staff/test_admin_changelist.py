"""The request queue: columns, default order, filters, search through the keyed email hash, and a query count
that does not grow with the number of rows."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gdpr_requests.models import CredentialStatus, MixpanelProject, MixpanelTask, TaskState
from gdpr_requests.requests import services
from gdpr_requests.staff.requests_admin import DataSubjectRequestAdmin
from tests.unit.staff.admin_support import auditor_client, make_failed, other_staff, staff_client  # noqa: F401

pytestmark = pytest.mark.django_db

LIST = "/admin/gdpr_requests/datasubjectrequest/"
# 12:00 UTC on a Wednesday; the deadlines below count from days before it.
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def references(response) -> list[str]:
    return re.findall(r">(DSR-[0-9A-Z]{4}-[0-9A-Z]{4})</a>", response.content.decode())


def received(days_before: int) -> datetime:
    return NOW - timedelta(days=days_before)


@pytest.fixture
def queue(make_request, project, staff_actor):
    """GDPR deadlines are one month after receipt; at NOW (18 March) these are:"""
    with time_machine.travel(NOW, tick=False):
        made = {
            "overdue": make_request(email="a@example.org", received_at=datetime(2026, 2, 16, 9, tzinfo=UTC)),
            "in3": make_request(email="b@example.org", received_at=datetime(2026, 2, 21, 9, tzinfo=UTC)),
            "later": make_request(
                email="c@example.org",
                received_at=datetime(2026, 3, 10, 9, tzinfo=UTC),
                channel="staff",
                verified_by_staff="known",
            ),
            "failed": make_request(
                email="d@example.org", received_at=datetime(2026, 3, 12, 9, tzinfo=UTC), verified_by_staff="known"
            ),
        }
        make_failed(made["failed"], staff_actor)
    return made


def test_columns_say_how_long_until_or_since_the_due_date(staff_client, queue):
    with time_machine.travel(NOW, tick=False):
        page = staff_client.get(LIST).content.decode()
    assert re.search(r'dsr-due-overdue">overdue by 2 days<', page)  # due 16 March
    assert re.search(r'dsr-due-soon">in 3 days<', page)  # due 21 March
    assert re.search(r'dsr-due-later">in 23 days<', page)  # due 10 April
    assert "dsr-status-failed" in page and "needs attention" in page
    assert "Main app" in page  # the projects column


def test_the_queue_is_sorted_by_due_date(staff_client, queue):
    with time_machine.travel(NOW, tick=False):
        shown = references(staff_client.get(LIST))
    expected = [d.reference for d in sorted(queue.values(), key=lambda d: (d.due_at, d.pk))]
    assert shown == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("overdue=yes", {"overdue"}),
        ("overdue=no", {"in3", "later", "failed"}),
        ("due_soon=yes", {"in3"}),
        ("attention=yes", {"failed"}),
        ("attention=no", {"overdue", "in3", "later"}),
        ("channel__exact=staff", {"later"}),
        ("status__exact=unverified", {"overdue", "in3"}),
        ("received_at_from=2026-02-20&received_at_to=2026-03-10", {"in3", "later"}),
        ("received_at_to=2026-02-16", {"overdue"}),
    ],
)
def test_filters(staff_client, queue, query, expected):
    with time_machine.travel(NOW, tick=False):
        shown = set(references(staff_client.get(f"{LIST}?{query}")))
    assert shown == {queue[name].reference for name in expected}


def test_needs_attention_covers_failing_credentials_stuck_requests_and_blocked_tasks(
    staff_client, queue, project, staff_actor, settings
):
    settings.DSR_STUCK_HOURS = 72
    with time_machine.travel(NOW, tick=False):
        assert set(references(staff_client.get(f"{LIST}?attention=yes"))) == {queue["failed"].reference}
    # "later" was verified on 18 March; four days on, nobody has approved it: stuck.
    with time_machine.travel(NOW + timedelta(days=4), tick=False):
        shown = set(references(staff_client.get(f"{LIST}?attention=yes")))
    assert shown == {queue["failed"].reference, queue["later"].reference}
    # A project whose credential fails holds up every open request of it.
    MixpanelProject.objects.filter(pk=project.pk).update(credential_status=CredentialStatus.FAILING)
    with time_machine.travel(NOW, tick=False):
        shown = set(references(staff_client.get(f"{LIST}?attention=yes")))
    assert shown == {d.reference for d in queue.values()}
    MixpanelProject.objects.filter(pk=project.pk).update(credential_status=CredentialStatus.OK)
    task = MixpanelTask.objects.create(
        project=project, kind="deletion", compliance_type="GDPR", distinct_ids=["x"], state=TaskState.NEEDS_ATTENTION
    )
    task.requests.add(queue["in3"])
    with time_machine.travel(NOW, tick=False):
        shown = set(references(staff_client.get(f"{LIST}?attention=yes")))
    assert shown == {queue["failed"].reference, queue["in3"].reference}


def test_filter_by_project(staff_client, queue, staff_actor):
    other = MixpanelProject.objects.create(
        name="Other",
        mixpanel_project_id="9",
        project_token="t9",
        oauth_token="o",
        token_expires_on=NOW.date() + timedelta(days=300),
    )
    services.request_set_projects(request=queue["in3"], projects=[other], actor=staff_actor)
    with time_machine.travel(NOW, tick=False):
        shown = references(staff_client.get(f"{LIST}?projects__id__exact={other.pk}"))
    assert shown == [queue["in3"].reference]


def test_a_bad_date_in_the_range_filter_is_a_notice_not_an_error(staff_client, queue):
    response = staff_client.get(f"{LIST}?received_at_from=yesterday")
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_search_by_email_uses_the_keyed_hash_and_never_the_clear_text_column(staff_client, queue):
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(LIST, {"q": "  B@Example.ORG "})
    assert references(response) == [queue["in3"].reference]
    filtering = [
        q["sql"].split(" WHERE ", 1)[1]
        for q in queries.captured_queries
        if "gdpr_requests_datasubjectrequest" in q["sql"] and " WHERE " in q["sql"]
    ]
    assert filtering, "the search ran no filtered query on requests"
    assert all("requester_email" not in where for where in filtering)
    assert any("email_hash" in where for where in filtering)
    assert references(staff_client.get(LIST, {"q": "example.org@"})) == []  # exact match only, no scan
    assert references(staff_client.get(LIST, {"q": "b@example"})) == []


def test_search_by_reference_ignores_case(staff_client, queue):
    assert references(staff_client.get(LIST, {"q": queue["later"].reference.lower()})) == [queue["later"].reference]


@pytest.mark.django_db
def test_the_queue_costs_the_same_number_of_queries_for_10_and_500_rows(
    staff_client, project, other_staff, system_actor, staff_actor, monkeypatch
):
    second = MixpanelProject.objects.create(
        name="Second",
        mixpanel_project_id="2",
        project_token="t2",
        oauth_token="o",
        token_expires_on=timezone.localdate(),
    )
    # Every row on one page, so that a per-row query would show.
    monkeypatch.setattr(DataSubjectRequestAdmin, "list_per_page", 1000)

    def add(n: int) -> None:
        for i in range(n):
            dsr = services.request_create(
                kind="deletion",
                regulation="gdpr",
                email=f"p{i}@example.org",
                distinct_ids=[f"u{i}"],
                projects=[project, second],
                actor=system_actor,
            )
            services.request_assign(request=dsr, assignee=other_staff, actor=staff_actor)

    def count_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = staff_client.get(LIST)
        assert response.status_code == 200
        return len(queries.captured_queries), len(references(response))

    add(10)
    small, rows = count_queries()
    assert rows == 10
    add(490)
    large, rows = count_queries()
    assert rows == 500
    assert small == large, f"{small} queries for 10 rows, {large} for 500"


def test_the_queue_shows_open_requests_unless_asked_for_closed_ones(staff_client, queue, staff_actor):
    services.request_reject(request=queue["in3"], reason="duplicate", actor=staff_actor)
    with time_machine.travel(NOW, tick=False):
        assert queue["in3"].reference not in references(staff_client.get(LIST))
        assert references(staff_client.get(LIST, {"open": "closed"})) == [queue["in3"].reference]
        assert len(references(staff_client.get(LIST, {"open": "all"}))) == 4
        # A search or a status filter looks at every request.
        assert references(staff_client.get(LIST, {"q": "b@example.org"})) == [queue["in3"].reference]
        assert references(staff_client.get(LIST, {"status__exact": "rejected"})) == [queue["in3"].reference]
