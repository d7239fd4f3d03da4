"""The evidence pack of a request served by a coalesced deletion: the shared task's own events are in it.

A Mixpanel task serving several requests records what happens to it (planned, submitted, polled, succeeded)
against the task, not against a request. Each request's pack must show those events, marked as task events, and
nothing that belongs to another request. The scenarios run the real pipeline; only Mixpanel's HTTP is faked.
"""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.audit import chain as audit
from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelTask
from gdpr_requests.pipeline.outcomes import child_task
from gdpr_requests.pipeline.task_updates import task_audit
from gdpr_requests.reports import build_evidence_pack, evidence_json, pdf
from gdpr_requests.requests import states
from tests.unit.pipeline.pipeline_support import approve, clock, drive, mixpanel, pipeline_settings, statuses  # noqa: F401  # noqa: F401
from tests.unit.reports.test_reports_pdf import _text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


@pytest.fixture
def coalesced(make_request, staff_actor, project, clock, mixpanel) -> dict[str, Any]:
    """Two GDPR deletions carried out by one shared task, and a CCPA deletion by a task of its own, all done."""
    first = approve(make_request, staff_actor, distinct_ids=["first-id"], email="first@example.org")
    second = approve(make_request, staff_actor, distinct_ids=["second-id"], email="second@example.org")
    other = approve(make_request, staff_actor, distinct_ids=["other-id"], email="other@example.org", regulation="ccpa")
    drive(clock)
    assert statuses(first, second, other) == [states.COMPLETED] * 3
    shared = MixpanelTask.objects.get(requests=first)
    assert set(shared.requests.all()) == {first, second}
    return {"first": first, "second": second, "other": other, "shared": shared}


def _task_of(record: dict[str, Any]) -> int:
    return record["payload"]["task_id"]


def test_the_shared_tasks_own_events_are_in_each_requests_pack_in_sequence_order(coalesced):
    first, second, shared = coalesced["first"], coalesced["second"], coalesced["shared"]
    pack = build_evidence_pack(reference=first.reference)

    events = pack["task_events"]
    assert {_task_of(e) for e in events} == {shared.pk}
    assert all(e["request_reference"] == "" for e in events)
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    actions = [e["action"] for e in events]
    for expected in ("task.planned", "task.submitted", "mixpanel.call", "task.succeeded"):
        assert expected in actions
    assert actions.index("task.planned") < actions.index("task.submitted") < actions.index("task.succeeded")
    # Exactly as the trail holds them, so they verify like the request's own events.
    assert events == [audit.event_record(AuditEvent.objects.get(sequence=e["sequence"])) for e in events]
    assert all(audit.compute_hash(e["prev_hash"], e) == e["hash"] for e in events)
    assert pack["chain"]["task_event_count"] == len(events)
    assert pack["chain"]["task_events_verified"] is True and pack["chain"]["unverified_sequences"] == []
    # Each task says which of them are its own.
    [task] = pack["tasks"]
    assert task["id"] == shared.pk and task["requests_served"] == 2
    assert task["task_event_sequences"] == [e["sequence"] for e in events]

    # The other request served by the same task gets the same task events, but keeps its own timeline.
    other_pack = build_evidence_pack(reference=second.reference)
    assert other_pack["task_events"] == events
    assert {e["sequence"] for e in pack["timeline"]}.isdisjoint(e["sequence"] for e in other_pack["timeline"])


def test_no_event_of_another_request_or_another_task_leaks_into_the_pack(coalesced):
    first, second, other, shared = (coalesced[k] for k in ("first", "second", "other", "shared"))
    pack = build_evidence_pack(reference=first.reference)
    own_sequences = {e["sequence"] for e in pack["timeline"]} | {e["sequence"] for e in pack["task_events"]}

    foreign = AuditEvent.objects.filter(request_reference__in=[second.reference, other.reference])
    assert foreign.exists()
    assert own_sequences.isdisjoint(foreign.values_list("sequence", flat=True))
    # The CCPA task's planning event names no request either; it is that task's, not this pack's.
    other_task = MixpanelTask.objects.get(requests=other)
    assert other_task.pk != shared.pk
    assert AuditEvent.objects.filter(request_reference="", payload__task_id=other_task.pk).exists()
    assert other_task.pk not in {_task_of(e) for e in pack["task_events"]}
    raw = evidence_json(pack).decode()
    assert second.reference not in raw and other.reference not in raw
    for secret in ("first@example.org", "first-id", "second-id"):
        assert secret not in raw


def test_the_pdf_shows_the_task_events_marked_as_such_and_nothing_of_the_other_requests(coalesced):
    first, second, other, shared = (coalesced[k] for k in ("first", "second", "other", "shared"))
    pack = build_evidence_pack(reference=first.reference, generated_by="aud")
    text = _text(pdf.render_evidence_pdf(pack))
    assert f"Events of its Mixpanel tasks ({len(pack['task_events'])})" in text
    assert "task.submitted" in text and "task.succeeded" in text
    # In the hash list, each task event names its task.
    assert f"task.succeeded (task {shared.pk})" in text
    for e in pack["task_events"]:
        assert e["hash"] in text.replace(" ", "")
    assert second.reference not in text and other.reference not in text


def test_a_task_serving_one_request_adds_only_its_events_that_name_no_request(coalesced):
    """The CCPA deletion's task serves it alone: its steps carry the request's reference and sit in the timeline;
    only its planning (recorded before it is known whom a deletion task will serve) is a task event. None twice."""
    other = coalesced["other"]
    pack = build_evidence_pack(reference=other.reference)
    assert [e["action"] for e in pack["task_events"]] == ["task.planned"]
    assert {"task.submitted", "task.succeeded"} <= {e["action"] for e in pack["timeline"]}
    assert {e["sequence"] for e in pack["timeline"]}.isdisjoint(e["sequence"] for e in pack["task_events"])
    assert "Events of its Mixpanel tasks (1)" in _text(pdf.render_evidence_pdf(pack))


def test_the_pack_takes_the_same_number_of_queries_however_many_task_events_and_tasks(coalesced):
    first, second, shared = coalesced["first"], coalesced["second"], coalesced["shared"]

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            build_evidence_pack(reference=first.reference)
        return len(captured)

    before = queries()
    with transaction.atomic():
        for polls in range(1, 6):
            task_audit(shared, "task.status", status="STARTED", polls=polls)
        requests = list(DataSubjectRequest.objects.filter(pk__in=[first.pk, second.pk]))
        child = child_task(shared, ["first-id", "second-id"], requests, timezone.now())
        task_audit(child, "task.submitted", id_count=2, request_count=2)
    pack = build_evidence_pack(reference=first.reference)
    assert {_task_of(e) for e in pack["task_events"]} == {shared.pk, child.pk}
    assert [e["action"] for e in pack["task_events"]][-6:] == ["task.status"] * 5 + ["task.submitted"]
    assert queries() == before


def test_the_task_id_lookup_is_a_json_key_match_not_a_text_match(coalesced):
    """Task 1's events must not be found for task 11 (or the other way round), on SQLite and PostgreSQL alike."""
    shared = coalesced["shared"]
    # The id as a string, not the number the pipeline records: a text search would take it.
    audit.audit_record(action="test.lookalike", actor=audit.Actor.system(), payload={"task_id": str(shared.pk)})
    audit.audit_record(action="test.other", actor=audit.Actor.system(), payload={"task_id": shared.pk * 10 + 1})
    pack = build_evidence_pack(reference=coalesced["first"].reference)
    assert not {"test.lookalike", "test.other"} & {e["action"] for e in pack["task_events"]}


# --- the HTML page (/reports/evidence/<reference>/) ----------------------------------------------------

ROW = re.compile(r'<tr><td class="num">(\d+)</td><td>[^<]*</td><td(?: class="num")?>([^<]*)</td>')


def _section(html: str, heading: str) -> str:
    """The page from ``heading`` to the next h2."""
    start = html.index(heading)
    end = html.find("<h2", start + len(heading))
    return html[start : end if end != -1 else len(html)]


def _task_rows(html: str) -> list[tuple[int, str]]:
    """(sequence, task column) of each row in the page's task events table."""
    return [(int(seq), task) for seq, task in ROW.findall(_section(html, '<h2 id="task-events">'))]


def _timeline_rows(html: str) -> set[int]:
    return {int(seq) for seq in re.findall(r'<tr><td class="num">(\d+)</td>', _section(html, "<h2>Timeline</h2>"))}


def test_the_page_shows_the_shared_tasks_events_for_each_request_and_not_the_other_requests_own(
    client, auditor_user, coalesced
):
    first, second, other, shared = (coalesced[k] for k in ("first", "second", "other", "shared"))
    client.force_login(auditor_user)
    for request, neighbour in ((first, second), (second, first)):
        response = client.get(reverse("reports:evidence", args=[request.reference]))
        assert response.status_code == 200
        html = response.content.decode()
        task_events = build_evidence_pack(reference=request.reference)["task_events"]
        assert task_events

        assert f"Events of its Mixpanel tasks ({len(task_events)})" in html
        assert f"<dt>Events of its Mixpanel tasks</dt><dd>{len(task_events)}</dd>" in _section(html, "<h2>Chain</h2>")
        # Every task event, in sequence order, each naming the shared task in its own column.
        assert _task_rows(html) == [(e["sequence"], str(shared.pk)) for e in task_events]
        section = _section(html, '<h2 id="task-events">')
        assert "task.submitted" in section and "task.succeeded" in section
        assert "task_id:" not in section  # the task is in its column, not repeated in the details

        # The neighbour's own events (and the CCPA request's) are nowhere on the page.
        shown = _timeline_rows(html) | {seq for seq, _task in _task_rows(html)}
        foreign = AuditEvent.objects.filter(request_reference__in=[neighbour.reference, other.reference])
        assert foreign.exists()
        assert shown.isdisjoint(foreign.values_list("sequence", flat=True))
        assert neighbour.reference not in html and other.reference not in html
        own = set(AuditEvent.objects.filter(request_reference=request.reference).values_list("sequence", flat=True))
        assert _timeline_rows(html) and _timeline_rows(html) <= own
        assert "style=" not in html and "<style" not in html
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline script (the CSP allows files only)


def test_the_page_takes_the_same_number_of_queries_however_many_task_events(client, auditor_user, coalesced):
    first, second, shared = coalesced["first"], coalesced["second"], coalesced["shared"]
    client.force_login(auditor_user)
    url = reverse("reports:evidence", args=[first.reference])
    assert client.get(url).status_code == 200  # a first visit may fill caches (content types, sessions...)

    def visit() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200
        return len(captured), response.content.decode()

    before, html = visit()
    shown_before = len(_task_rows(html))
    with transaction.atomic():
        for polls in range(1, 6):
            task_audit(shared, "task.status", status="STARTED", polls=polls)
        task_audit(shared, "task.status", status="<b>STARTED</b>", polls=6)  # whatever Mixpanel says is escaped
        requests = list(DataSubjectRequest.objects.filter(pk__in=[first.pk, second.pk]))
        child = child_task(shared, ["first-id", "second-id"], requests, timezone.now())
        task_audit(child, "task.submitted", id_count=2, request_count=2)
    after, html = visit()
    rows = _task_rows(html)
    assert len(rows) == shown_before + 7
    assert rows[-1][1] == str(child.pk) and {task for _seq, task in rows} == {str(shared.pk), str(child.pk)}
    assert "&lt;b&gt;STARTED&lt;/b&gt;" in html and "<b>STARTED" not in html
    assert after == before
