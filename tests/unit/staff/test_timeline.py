"""The timeline in sentences: decisions apart from machine steps, API calls on request, one date format, and
"History" opens it."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.audit.timeline import API_CALL, DECISION, STEP, human_timeline
from gdpr_requests.models import AuditEvent
from gdpr_requests.requests import services
from tests.unit.staff.admin_support import auditor_client, change_url, staff_client, verified_request  # noqa: F401

pytestmark = pytest.mark.django_db


def events_of(dsr):
    return list(AuditEvent.objects.filter(request_reference=dsr.reference))


def machine_events(dsr, project):
    system = Actor.system("pipeline")
    audit_record(
        action="task.submitted",
        actor=system,
        request_reference=dsr.reference,
        payload={"task_id": 1, "kind": "deletion", "project_pk": project.pk, "tracking_id": "4f3a9c01-77aa"},
    )
    audit_record(
        action="mixpanel.call",
        actor=system,
        request_reference=dsr.reference,
        payload={
            "operation": "create_deletion",
            "http_status": 200,
            "outcome": "ok",
            "duration_ms": 120,
            "project_pk": project.pk,
        },
    )
    audit_record(
        action="notification.sent", actor=system, request_reference=dsr.reference, payload={"event": "created"}
    )


def test_sentences_for_decisions_and_machine_steps(verified_request, project, staff_user):
    services.request_approve(request=verified_request, actor=Actor.staff(staff_user))
    machine_events(verified_request, project)
    entries = human_timeline(events_of(verified_request), include_machine_steps=False)
    sentences = [(e.sentence, e.kind) for e in entries]
    assert ("Approved by alice", DECISION) in sentences
    assert ("Deletion sent to Mixpanel (Main app), task 4f3a9c01…", STEP) in sentences
    assert ("Confirmation email sent", STEP) in sentences
    assert not any(kind == API_CALL for _, kind in sentences)
    assert [e.at for e in entries] == sorted(e.at for e in entries)

    with_calls = human_timeline(events_of(verified_request), include_machine_steps=True)
    assert ("API call to Mixpanel (Main app): create deletion, HTTP 200, 120 ms", API_CALL) in [
        (e.sentence, e.kind) for e in with_calls
    ]


def test_no_codes_or_payloads_reach_the_sentences(verified_request, project, staff_user):
    services.request_reject(
        request=verified_request, reason="x", ground="not_our_subject", actor=Actor.staff(staff_user)
    )
    machine_events(verified_request, project)
    text = " ".join(e.sentence for e in human_timeline(events_of(verified_request), include_machine_steps=True))
    assert "Rejected by alice: we hold no personal data about you" in text
    for code in ("request.", "task.", "notification.", "project_pk", "task_id=", "system (system)"):
        assert code not in text


def test_times_are_in_the_current_time_zone(verified_request, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    timezone.activate("Europe/Berlin")
    try:
        entry = human_timeline(events_of(verified_request), include_machine_steps=False)[0]
        assert entry.at.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    finally:
        timezone.deactivate()


def test_the_request_page_separates_decisions_and_toggles_api_calls(staff_client, verified_request, project):
    machine_events(verified_request, project)
    page = staff_client.get(change_url(verified_request)).content.decode()
    assert "Decisions" in page and "Processing and messages" in page and "Show API calls" in page
    assert "API call to Mixpanel" not in page and "Confirmation email sent" in page
    with_calls = staff_client.get(change_url(verified_request) + "?api_calls=1").content.decode()
    assert "API call to Mixpanel (Main app)" in with_calls
    timeline = page[page.index('id="dsr-timeline"') :]
    stamps = re.findall(r"<time datetime=\"[^\"]+\">([^<]+)</time>", timeline)
    assert stamps and all(re.fullmatch(r"\d{1,2} \w{3} \d{4}, \d{2}:\d{2}", s) for s in stamps), stamps


def test_history_opens_the_timeline(staff_client, auditor_client, verified_request):
    url = reverse("admin:gdpr_requests_datasubjectrequest_history", args=[verified_request.pk])
    for client in (staff_client, auditor_client):
        page = client.get(url).content.decode()
        assert "Request received through the staff" in page
        assert "change history" not in page


def test_history_is_refused_to_people_who_may_not_view_requests(client, django_user_model, verified_request):
    bare = django_user_model.objects.create_user("bare", "b@staff.example", "pw-pw-pw-pw", is_staff=True)
    client.force_login(bare)
    url = reverse("admin:gdpr_requests_datasubjectrequest_history", args=[verified_request.pk])
    assert client.get(url).status_code == 403


def test_unknown_actions_get_a_readable_fallback():
    class Event:
        occurred_at = datetime(2026, 1, 1, tzinfo=timezone.get_current_timezone())
        actor_type = "staff"
        actor_label = "alice"
        action = "request.something_new"
        payload: dict = {}

    (entry,) = human_timeline([Event()], include_machine_steps=False, project_names={})
    assert entry.sentence == "Something new by alice" and entry.kind == DECISION


def test_the_timeline_reads_in_the_staff_members_own_time_zone(staff_client, verified_request, settings):
    """The page's script stores the browser's zone in the dsr_tz cookie; the same event then reads in that zone.
    An unknown zone falls back to the installation's, and the public portal never follows the cookie."""
    settings.TIME_ZONE = "UTC"
    event = AuditEvent.objects.filter(request_reference=verified_request.reference).earliest("sequence")
    url = reverse("admin:gdpr_requests_datasubjectrequest_history", args=[verified_request.pk])

    def shown(zone: str | None) -> str:
        if zone is None:
            staff_client.cookies.pop("dsr_tz", None)
        else:
            staff_client.cookies["dsr_tz"] = zone
        return staff_client.get(url).content.decode()

    def stamp(zone: str) -> str:
        from zoneinfo import ZoneInfo

        return timezone.localtime(event.occurred_at, ZoneInfo(zone)).strftime("%H:%M")

    tokyo = shown("Asia/Tokyo")
    assert "Times in Asia/Tokyo" in tokyo and f", {stamp('Asia/Tokyo')}</time>" in tokyo
    assert '<meta name="dsr-tz" content="Asia/Tokyo">' in tokyo
    utc = shown("Mars/Olympus_Mons")
    assert "Times in UTC" in utc and f", {stamp('UTC')}</time>" in utc
    assert "Times in UTC" in shown(None)
    assert stamp("Asia/Tokyo") != stamp("UTC")


def test_the_zone_cookie_never_reaches_the_public_portal(rf, settings):
    from django.http import HttpResponse

    from gdpr_requests.staff.timezones import StaffTimeZoneMiddleware, zone_from_cookie

    settings.TIME_ZONE = "UTC"
    seen: list[str] = []

    def view(_request):
        seen.append(timezone.get_current_timezone_name())
        return HttpResponse()

    middleware = StaffTimeZoneMiddleware(view)
    for path in ("/request/", "/admin/", "/reports/summary/"):
        request = rf.get(path)
        request.COOKIES["dsr_tz"] = "Asia/Tokyo"
        middleware(request)
    assert seen == ["UTC", "Asia/Tokyo", "Asia/Tokyo"]
    assert timezone.get_current_timezone_name() == "UTC"  # deactivated after the response
    assert zone_from_cookie("../../etc/passwd") is None and zone_from_cookie("x" * 100) is None
    assert zone_from_cookie("") is None and zone_from_cookie(None) is None
