"""The audit trail export through the auditor view: rows, filters, chain fields, CSV escaping, verification, streaming.

The known data set: 30 events over three days (10 a day) by three actors on two references.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import re
from collections.abc import Iterator, Sized
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command
from django.http import StreamingHttpResponse
from django.urls import reverse

from gdpr_requests.audit import chain as audit
from gdpr_requests.audit import export as audit_export
from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/reports/audit-trail/"
REF_A, REF_B = "DSR-AAAA-1111", "DSR-BBBB-2222"


@pytest.fixture
def trail(staff_user):
    """Day 1: 10 request.created on A by the system; day 2: 10 request.approve on B by alice; day 3: 10 task.polled."""
    staff = Actor.staff(staff_user)
    plan = [
        ("2025-01-05", "request.created", Actor.system(), REF_A),
        ("2025-01-06", "request.approve", staff, REF_B),
        ("2025-01-07", "task.polled", Actor.system("pipeline"), ""),
    ]
    for day, action, actor, reference in plan:
        for i in range(10):
            with time_machine.travel(datetime.fromisoformat(day).replace(hour=9, minute=i, tzinfo=UTC), tick=False):
                audit_record(action=action, actor=actor, request_reference=reference, payload={"i": i, "day": day})
    return staff_user


def _download(client, **query) -> tuple[StreamingHttpResponse, str]:
    response = client.get(URL, query)
    assert response.status_code == 200, response.content[:500]
    return response, b"".join(response.streaming_content).decode()


def _jsonl(text: str) -> tuple[dict, list[dict], dict]:
    records = [json.loads(line) for line in text.splitlines()]
    return records[0], records[1:-1], records[-1]


def test_a_whole_trail_jsonl_export_has_every_event_with_its_chain_fields(client, auditor_user, trail):
    client.force_login(auditor_user)
    response, text = _download(client, format="jsonl")
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    header, events, footer = _jsonl(text)
    # 30 events plus the export's own audit event, recorded before the export starts.
    assert len(events) == 31 == footer["count"]
    database = [audit.event_record(e) for e in AuditEvent.objects.order_by("sequence")]
    assert events == database
    assert header["record_type"] == "header" and header["filtered"] is False
    assert header["chain_head"] == {"sequence": 31, "hash": database[-1]["hash"]}
    assert footer["last_hash"] == database[-1]["hash"]
    assert events[-1]["action"] == "report.downloaded" and events[-1]["actor_type"] == "auditor"
    assert events[-1]["payload"] == {
        "report": "audit_trail",
        "format": "jsonl",
        "since": None,
        "until": None,
        "action": None,
        "reference": None,
        "actor": None,
    }
    for record in events:
        assert len(record["hash"]) == len(record["prev_hash"]) == 64


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"since": "2025-01-06", "until": "2025-01-06"}, [("request.approve", REF_B)] * 10),
        (
            {"since": "2025-01-06"},
            [("request.approve", REF_B)] * 10 + [("task.polled", "")] * 10 + [("report.downloaded", "")],
        ),
        ({"until": "2025-01-05"}, [("request.created", REF_A)] * 10),
        ({"action": "request.*"}, [("request.created", REF_A)] * 10 + [("request.approve", REF_B)] * 10),
        ({"reference": REF_A.lower()}, [("request.created", REF_A)] * 10),
        ({"actor": "alice"}, [("request.approve", REF_B)] * 10),
        ({"actor": "pipeline", "until": "2025-01-07"}, [("task.polled", "")] * 10),
    ],
)
def test_the_filters_select_exactly_the_known_rows(client, auditor_user, trail, query, expected):
    client.force_login(auditor_user)
    _response, text = _download(client, format="csv", **query)
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == list(audit_export.CSV_COLUMNS)
    rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    assert [(row["action"], row["request_reference"]) for row in rows] == expected
    for row in rows:
        event = AuditEvent.objects.get(sequence=int(row["sequence"]))
        assert (row["prev_hash"], row["hash"]) == (event.prev_hash, event.hash)
        assert json.loads(row["payload_json"]) == event.payload


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(client, auditor_user, db):
    for label in ('=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tTAB", "\rCR", "plain"):
        audit_record(action="test.label", actor=Actor.system(label), payload={"why": label})
    client.force_login(auditor_user)
    _response, text = _download(client, format="csv", action="test.label")
    rows = list(csv.DictReader(io.StringIO(text)))
    escaped = ['\'=HYPERLINK("http://x")', "'+1+1", "'-2", "'@SUM(A1)", "'\tTAB", "'\rCR", "plain"]
    assert [row["actor_label"] for row in rows] == escaped
    assert [row["why"] for row in rows] == escaped  # payload columns too


def test_the_csv_puts_common_payload_fields_in_columns_of_their_own(client, auditor_user, db):
    audit_record(
        action="request.approve",
        actor=Actor.system(),
        request_reference=REF_A,
        payload={"from": "verified", "to": "approved", "count": 3, "projects": [1, 2]},
    )
    client.force_login(auditor_user)
    _response, text = _download(client, format="csv", action="request.approve")
    (row,) = csv.DictReader(io.StringIO(text))
    assert (row["from"], row["to"], row["count"], row["method"]) == ("verified", "approved", "3", "")
    assert json.loads(row["payload_json"])["projects"] == [1, 2]


def test_the_manifest_download_describes_exactly_the_csv_downloaded_from_the_same_form(client, auditor_user, trail):
    client.force_login(auditor_user)
    page = client.get(URL)
    (upto,) = re.findall(r'name="upto" value="(\d+)"', page.content.decode())
    assert "Download its manifest" in page.content.decode()
    query = {"format": "csv", "since": "2025-01-06", "upto": upto}
    _response, text = _download(client, **query)
    manifest_response = client.get(URL, {**query, "manifest": "1"})
    assert manifest_response["Content-Disposition"].endswith('.csv.manifest.json"')
    manifest = json.loads(manifest_response.content)
    rows = list(csv.DictReader(io.StringIO(text)))
    # The CSV's own download event came after the form's chain head: neither file includes it.
    assert manifest["count"] == len(rows) == 20
    assert manifest["last_hash"] == rows[-1]["hash"]
    assert manifest["chain_head"]["sequence"] == int(upto) == 30
    assert manifest["filters"]["since"] == "2025-01-06" and manifest["start_prev_hash"] == rows[0]["prev_hash"]
    assert manifest["columns"] == list(audit_export.CSV_COLUMNS)
    downloads = AuditEvent.objects.filter(action="report.downloaded").values_list("payload__format", flat=True)
    assert sorted(downloads) == ["csv", "csv-manifest"]


def test_an_export_verifies_offline_and_an_edited_one_fails(client, auditor_user, trail, tmp_path):
    client.force_login(auditor_user)
    _response, text = _download(client, format="jsonl")
    path = tmp_path / "export.jsonl"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("audit", "verify", "--file", str(path), stdout=out)
    assert out.getvalue().startswith("OK: 31 events, head ")

    lines = text.splitlines(keepends=True)
    edited = json.loads(lines[12])  # event 12: an approval on day 2
    edited["payload"]["i"] = 99
    lines[12] = json.dumps(edited, ensure_ascii=False) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("audit", "verify", "--file", str(path), stderr=err)
    assert exited.value.code == 1
    assert err.getvalue().startswith("BROKEN at event 12: edited")


def test_a_date_range_export_verifies_from_its_first_event_and_a_removed_row_is_named(
    client, auditor_user, trail, tmp_path
):
    client.force_login(auditor_user)
    _response, text = _download(client, format="jsonl", since="2025-01-06", until="2025-01-06")
    path = tmp_path / "day2.jsonl"
    path.write_text(text, encoding="utf-8")
    assert audit.verify_file(str(path)).ok
    lines = text.splitlines(keepends=True)
    del lines[5]  # the fifth event of the day (sequence 15)
    path.write_text("".join(lines), encoding="utf-8")
    result = audit.verify_file(str(path))
    assert (result.ok, result.broken_sequence, result.reason) == (False, 15, audit.MISSING)


def test_the_export_is_a_stream_pulled_chunk_by_chunk(client, auditor_user, monkeypatch, trail):
    """A large export never holds the trail: rows are pulled from the database as the response is read."""
    for i in range(270):
        audit_record(action="bulk.event", actor=Actor.system(), payload={"i": i})
    monkeypatch.setattr(audit_export, "ROWS_PER_CHUNK", 50)
    monkeypatch.setattr(audit_export, "FETCH_SIZE", 50)
    pulled = 0
    real_rows = audit_export._rows

    def counting_rows(events):
        nonlocal pulled
        for row in real_rows(events):
            pulled += 1
            yield row

    monkeypatch.setattr(audit_export, "_rows", counting_rows)
    client.force_login(auditor_user)
    response = client.get(URL, {"format": "jsonl"})
    assert isinstance(response, StreamingHttpResponse)
    assert inspect.isgenerator(response._iterator)  # what the view handed to the response
    content = response.streaming_content
    assert isinstance(content, Iterator) and not isinstance(content, Sized)
    assert pulled == 0  # nothing is read before the client reads
    header = next(content)
    assert b'"record_type":"header"' in header
    first = next(content)
    assert first.count(b"\n") == 50 and pulled == 50
    second = next(content)
    assert second.count(b"\n") == 50 and pulled == 100
    rest = list(content)
    assert pulled == 301 == 30 + 270 + 1
    assert b'"count":301' in rest[-1]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"format": "csv", "since": "2025-02-01", "until": "2025-01-01"}, "ends before it starts"),
        ({"format": "csv", "reference": "not-a-ref"}, "looks like DSR-"),
        ({"format": "xml"}, "Select a valid choice"),
        ({"format": "csv", "since": "2025-13-45"}, "Enter a valid date"),
    ],
)
def test_bad_export_parameters_get_the_form_back_with_a_message(client, auditor_user, query, message):
    client.force_login(auditor_user)
    response = client.get(URL, query)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="report.").exists()


def test_the_form_page_lists_known_actions_and_records_nothing(client, auditor_user, trail):
    client.force_login(auditor_user)
    response = client.get(reverse("reports:audit_trail"))
    page = response.content.decode()
    assert '<option value="request.approve">' in page and '<option value="task.polled">' in page
    assert "python manage.py audit verify --file EXPORT.jsonl" in page
    assert not AuditEvent.objects.filter(action__startswith="report.").exists()
