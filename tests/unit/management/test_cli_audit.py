"""``audit verify`` and ``audit export``, and the streaming export behind them (gdpr_requests.audit_export)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction

from gdpr_requests.audit import chain as audit
from gdpr_requests.audit import triggers as audit_triggers
from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.audit.export import CSV_COLUMNS, ExportError, export_lines
from gdpr_requests.models import AuditEvent
from tests.unit.management.cli_support import refused, run

ROOT = Path(__file__).resolve().parents[3]


def _events(n: int, *, label: str = "system", reference: str = "DSR-TEST-0001") -> list[AuditEvent]:
    return [
        audit_record(
            action=f"test.step{i % 3}",
            actor=Actor.system(label),
            request_reference=reference,
            payload={"i": i, "text": 'naïve, "quoted" — 東京', "nested": {"b": [1, 2.5, None], "a": True}},
        )
        for i in range(1, n + 1)
    ]


def _tamper(sql: str, params: list | None = None) -> None:
    """As an attacker with database access would: lift the triggers, change rows, put them back."""
    with transaction.atomic():
        audit_triggers.drop(connection)
        with connection.cursor() as cursor:
            cursor.execute(sql, params or [])
        audit_triggers.install(connection)


def _export(tmp_path: Path, *args: str, name: str = "trail.jsonl") -> Path:
    path = tmp_path / name
    run("audit", "export", "--output", str(path), *args)
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def broken(*args: str) -> str:
    """Run ``audit verify`` on a broken chain: exit status 1 and the report alone on stderr; return the report.

    A broken chain is a verdict, not an operator's mistake, so it must not read as Django's ``CommandError: ...``.
    """
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command(*args, stdout=out, stderr=err)
    assert info.value.code == 1
    report = err.getvalue()
    assert not report.startswith("CommandError"), report
    assert "Traceback" not in report
    assert report.endswith("\n") and report.count("\n") == 1, f"the report should be one line: {report!r}"
    assert out.getvalue() == ""
    return report.strip()


def _manage(*args: str) -> subprocess.CompletedProcess:
    """``python manage.py ...`` as an operator runs it, against this test's database."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_ENV": "development"}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


# --- verify against the database --------------------------------------------------------------------------
@pytest.mark.django_db
def test_verify_prints_ok_with_the_count_and_head():
    events = _events(4)
    out, _ = run("audit", "verify")
    assert out.strip() == f"OK: 4 events, head {events[-1].hash}"


@pytest.mark.django_db
def test_verify_names_an_edited_event_and_exits_1():
    _events(4)
    _tamper(f"UPDATE {audit_triggers.TABLE} SET action = 'forged' WHERE sequence = 3")
    report = broken("audit", "verify")
    assert report == "BROKEN at event 3: edited: its contents do not match its hash (changed after it was written)"


@pytest.mark.django_db
def test_verify_names_a_deleted_event():
    _events(4)
    _tamper(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence = 2")
    assert broken("audit", "verify").startswith("BROKEN at event 2: missing")


@pytest.mark.django_db
def test_verify_fails_when_events_are_reordered_and_relinked_without_the_key():
    # Swap events 3 and 4 and rewrite every prev_hash so the links read as an unbroken chain: without the key
    # the hashes cannot be recomputed, and the HMAC covers prev_hash, so the first moved event no longer matches.
    events = _events(5)
    moves = [(3, 100), (4, 3), (100, 4)]
    for old, new in moves:
        _tamper(f"UPDATE {audit_triggers.TABLE} SET sequence = %s WHERE sequence = %s", [new, old])
    relinks = {3: events[1].hash, 4: events[3].hash, 5: events[2].hash}
    for sequence, prev_hash in relinks.items():
        _tamper(f"UPDATE {audit_triggers.TABLE} SET prev_hash = %s WHERE sequence = %s", [prev_hash, sequence])
    chain = list(AuditEvent.objects.order_by("sequence").values_list("prev_hash", "hash"))
    assert all(chain[i][0] == chain[i - 1][1] for i in range(1, 5)), "the links were made to look intact"
    assert broken("audit", "verify").startswith("BROKEN at event 3: edited")


@pytest.mark.django_db
def test_verify_names_an_edited_last_event():
    _events(4)
    _tamper(f"UPDATE {audit_triggers.TABLE} SET payload = %s WHERE sequence = 4", [json.dumps({"i": 0})])
    assert broken("audit", "verify").startswith("BROKEN at event 4: edited")


@pytest.mark.django_db
@pytest.mark.parametrize(("kept", "report"), [(2, "3 events missing at the end"), (4, "1 event missing at the end")])
def test_verify_reports_events_deleted_from_the_end(kept, report):
    _events(5)
    _tamper(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence > %s", [kept])
    assert broken("audit", "verify") == (
        f"BROKEN at event {kept + 1}: truncated: {report} (the chain head checkpoint is event 5)"
    )


@pytest.mark.django_db
def test_verify_reports_an_emptied_trail():
    _events(3)
    _tamper(f"DELETE FROM {audit_triggers.TABLE}")
    assert "3 events missing at the end" in broken("audit", "verify")


@pytest.mark.django_db
def test_verify_fails_when_the_append_only_triggers_are_missing():
    _events(2)
    with connection.cursor() as cursor:  # DDL is undone with the test's transaction on both databases
        for name in audit_triggers.expected(connection):
            on_table = f" ON {audit_triggers._PG_TRIGGERS[name][0]}" if connection.vendor == "postgresql" else ""
            cursor.execute(f"DROP TRIGGER {name}{on_table}")
    report = broken("audit", "verify")
    assert report.startswith("BROKEN: unprotected: the database triggers that keep the trail append-only are")
    assert "auditevent_no_delete" in report or "auditevent_no_change" in report


@pytest.mark.django_db
def test_verify_file_reports_an_export_of_a_truncated_trail(tmp_path):
    _events(5)
    _tamper(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence > 3")
    path = _export(tmp_path)
    report = broken("audit", "verify", "--file", str(path))
    # The header carries the checkpoint (5) read before the export recorded itself; the events end at 3.
    assert report == "BROKEN at event 4: truncated: 2 events missing at the end (the header's chain head is event 5)"


@pytest.mark.django_db(transaction=True)
def test_manage_py_audit_verify_exits_0_when_intact_and_1_with_the_plain_report_when_broken():
    events = _events(3)
    good = _manage("audit", "verify")
    assert (good.returncode, good.stdout, good.stderr) == (0, f"OK: 3 events, head {events[-1].hash}\n", "")

    _tamper(f"UPDATE {audit_triggers.TABLE} SET action = 'forged' WHERE sequence = 2")
    bad = _manage("audit", "verify")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr == (
        "BROKEN at event 2: edited: its contents do not match its hash (changed after it was written)\n"
    )


def test_manage_py_audit_verify_of_a_missing_file_is_a_one_line_error_exiting_non_zero(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    result = _manage("audit", "verify", "--file", str(missing))
    assert result.returncode == 1
    assert result.stderr == f"CommandError: The file {str(missing)!r} does not exist.\n"


# --- export as JSON Lines ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_jsonl_export_has_header_events_exactly_as_event_record_and_footer(tmp_path):
    events = _events(7)
    records = _jsonl(_export(tmp_path))
    header, *lines, footer = records
    assert header["record_type"] == "header"
    assert header["filtered"] is False
    assert header["start_prev_hash"] == audit.GENESIS_HASH
    assert header["chain_head"] == {"sequence": 7, "hash": events[-1].hash}
    assert header["filters"] == {"since": None, "until": None, "action": None, "reference": None, "actor": None}
    assert lines == [audit.event_record(AuditEvent.objects.get(pk=e.pk)) for e in events]
    assert footer == {"record_type": "footer", "count": 7, "last_hash": events[-1].hash}


@pytest.mark.django_db
def test_the_export_records_who_took_it_without_appearing_in_itself(tmp_path):
    _events(2)
    records = _jsonl(_export(tmp_path, "--action", "test.*"))
    assert records[-1]["count"] == 2
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.payload["format"] == "jsonl" and event.payload["action"] == "test.*"
    assert event.sequence == 3


@pytest.mark.django_db
def test_verify_file_accepts_an_export_without_touching_the_database(tmp_path, django_assert_num_queries):
    events = _events(5)
    path = _export(tmp_path)
    with django_assert_num_queries(0):
        out, _ = run("audit", "verify", "--file", str(path))
    assert out.strip() == f"OK: 5 events, head {events[-1].hash}"


@pytest.mark.django_db
def test_verify_file_names_an_edited_event_in_the_export(tmp_path):
    _events(5)
    path = _export(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[3])  # the header is line 1: this is event 3
    record["payload"]["i"] = 999
    lines[3] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert broken("audit", "verify", "--file", str(path)).startswith("BROKEN at event 3: edited")


@pytest.mark.django_db
def test_verify_file_names_an_event_removed_from_the_export(tmp_path):
    _events(5)
    path = _export(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    del lines[2]  # event 2
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert broken("audit", "verify", "--file", str(path)).startswith("BROKEN at event 2: missing")


@pytest.mark.django_db
def test_verify_file_notices_events_cut_from_the_end(tmp_path):
    _events(5)
    path = _export(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    del lines[-2]  # the last event, keeping the footer that names its hash
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "truncated" in broken("audit", "verify", "--file", str(path))


def test_verify_file_needs_no_database_at_all(tmp_path, settings):
    """No database fixture here: pytest-django fails any query, so this proves --file stays off the database."""
    prev, lines = audit.GENESIS_HASH, []
    for sequence in (1, 2, 3):
        record = {
            "sequence": sequence,
            "occurred_at": f"2025-01-0{sequence}T10:00:00.000000+00:00",
            "actor_type": "system",
            "actor_id": "",
            "actor_label": "cli",
            "action": "test",
            "request_reference": "",
            "payload": {"n": sequence},
            "prev_hash": prev,
        }
        record["hash"] = prev = audit.compute_hash(record["prev_hash"], record)
        lines.append(json.dumps(record))
    path = tmp_path / "hand-made.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, _ = run("audit", "verify", "--file", str(path))
    assert out.strip() == f"OK: 3 events, head {prev}"

    settings.AUDIT_CHAIN_KEY = "another-key-entirely-another-key-entirely"
    assert broken("audit", "verify", "--file", str(path)).startswith("BROKEN at event 1: edited")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"not json\n", "line 1 is not JSON"),
        (b"\xff\xfe\x00junk", "not UTF-8"),
        (b'{"sequence": 1}\n', "line 1 lacks"),
    ],
)
def test_verify_file_refuses_unusable_files_with_one_line(tmp_path, content, expected):
    path = tmp_path / "export.jsonl"
    if content is not None:
        path.write_bytes(content)
    message, _ = refused("audit", "verify", "--file", str(path))
    assert expected in message


@pytest.mark.django_db
def test_a_date_range_exports_whole_days_and_still_verifies_from_its_first_link(tmp_path, settings):
    settings.TIME_ZONE = "Europe/Paris"
    with time_machine.travel(datetime(2025, 3, 1, 12, tzinfo=UTC), tick=False):
        _events(2)
    # 23:30 UTC on 2 March is already 3 March in Paris: inside the range below.
    with time_machine.travel(datetime(2025, 3, 2, 23, 30, tzinfo=UTC), tick=False):
        inside = _events(3)
    with time_machine.travel(datetime(2025, 3, 4, 23, 30, tzinfo=UTC), tick=False):
        _events(1)  # 5 March in Paris: after the range
    path = _export(tmp_path, "--since", "2025-03-02", "--until", "2025-03-04")
    header, *lines, footer = _jsonl(path)
    assert [line["sequence"] for line in lines] == [3, 4, 5]
    assert header["start_prev_hash"] == inside[0].prev_hash != audit.GENESIS_HASH
    assert header["filtered"] is False and header["filters"]["since"] == "2025-03-02"
    assert footer == {"record_type": "footer", "count": 3, "last_hash": inside[-1].hash}
    out, _ = run("audit", "verify", "--file", str(path))
    assert out.strip() == f"OK: 3 events, head {inside[-1].hash}"


@pytest.mark.django_db
def test_filters_on_action_reference_and_actor_mark_the_export_filtered(tmp_path):
    _events(3, label="alice", reference="DSR-AAAA-AAAA")
    _events(3, label="bob", reference="DSR-BBBB-BBBB")
    path = _export(tmp_path, "--actor", "bob", "--reference", "dsr-bbbb-bbbb", "--action", "test.step1")
    header, *lines, footer = _jsonl(path)
    assert header["filtered"] is True
    assert [(e["actor_label"], e["request_reference"], e["action"]) for e in lines] == [
        ("bob", "DSR-BBBB-BBBB", "test.step1")
    ]
    assert footer["count"] == 1
    out, _ = run("audit", "verify", "--file", str(path))  # gaps are expected: each event's own HMAC is checked
    assert out.startswith("OK: 1 events")


@pytest.mark.django_db
def test_an_empty_export_has_a_header_and_a_zero_footer(tmp_path):
    header, footer = _jsonl(_export(tmp_path, "--since", "2001-01-01", "--until", "2001-01-02"))
    assert header["record_type"] == "header" and footer["count"] == 0
    assert footer["last_hash"] == header["start_prev_hash"] == audit.GENESIS_HASH


@pytest.mark.django_db
def test_export_streams_in_chunks_of_many_rows():
    _events(2500)
    chunks = list(export_lines(fmt="jsonl"))
    # header, three chunks of at most 1000 events, footer
    assert len(chunks) == 5
    assert [chunk.count("\n") for chunk in chunks] == [1, 1000, 1000, 500, 1]


@pytest.mark.django_db
def test_export_to_stdout():
    events = _events(2)
    out, _ = run("audit", "export", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("hash") for line in lines[1:-1]] == [e.hash for e in events]


# --- export as CSV ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_csv_export_is_a_plain_table_and_escapes_formula_cells(tmp_path):
    events = _events(3)
    events += _events(1, label='=HYPERLINK("http://x")', reference="")
    events += _events(1, label="+cmd", reference="")
    events += _events(1, label='a, "quoted"\nlabel', reference="")
    path = _export(tmp_path, "--format", "csv", name="trail.csv")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    # The column names first and nothing but events after them: a spreadsheet reads no comment as data.
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[0][:7] == [
        "sequence",
        "occurred_at",
        "actor_type",
        "actor_id",
        "actor_label",
        "action",
        "request_reference",
    ]
    assert rows[0][-3:] == ["payload_json", "prev_hash", "hash"]
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(body) == 6
    assert [row["sequence"] for row in body] == ["1", "2", "3", "4", "5", "6"]
    assert [row["hash"] for row in body] == [e.hash for e in events]
    assert [row["prev_hash"] for row in body] == [e.prev_hash for e in events]
    assert body[3]["actor_label"] == '\'=HYPERLINK("http://x")'
    assert body[4]["actor_label"] == "'+cmd"
    assert body[5]["actor_label"] == 'a, "quoted"\nlabel'
    assert body[0]["actor_label"] == "system"
    assert json.loads(body[0]["payload_json"]) == events[0].payload
    assert "\n" not in body[0]["payload_json"]  # one line per event, payload included


@pytest.mark.django_db
def test_csv_export_writes_its_manifest_with_the_chain_head_count_and_last_hash(tmp_path):
    events = _events(3)
    manifest_path = tmp_path / "trail.manifest.json"
    path = _export(tmp_path, "--format", "csv", "--manifest", str(manifest_path), name="trail.csv")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["record_type"] == "manifest" and manifest["format"] == "csv"
    assert manifest["chain_head"] == {"sequence": 3, "hash": events[-1].hash}
    assert manifest["count"] == 3 and manifest["last_hash"] == events[-1].hash
    assert manifest["start_prev_hash"] == events[0].prev_hash and manifest["filtered"] is False
    assert manifest["columns"] == path.read_text(encoding="utf-8").splitlines()[0].split(",")


@pytest.mark.django_db
def test_a_jsonl_export_stays_verifiable_and_can_have_a_manifest_too(tmp_path):
    _events(2)
    manifest_path = tmp_path / "m.json"
    path = _export(tmp_path, "--manifest", str(manifest_path))
    lines = _jsonl(path)
    assert lines[0]["record_type"] == "header" and lines[-1]["record_type"] == "footer"
    assert json.loads(manifest_path.read_text())["count"] == lines[-1]["count"] == 2
    out, _ = run("audit", "verify", "--file", str(path))
    assert out.startswith("OK: 2 events")


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "2025-02-30"], "is not a date"),
        (["--since", "2025-03-02", "--until", "2025-03-01"], "ends (2025-03-01) before it starts (2025-03-02)"),
        (["--format", "xml"], "invalid choice"),
    ],
)
def test_export_refuses_bad_input(args, expected):
    message, _ = refused("audit", "export", *args)
    assert expected in message
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


@pytest.mark.django_db
def test_export_to_an_unwritable_place_is_one_clear_error(tmp_path):
    message, _ = refused("audit", "export", "--output", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert "Cannot write" in message
    assert not list(tmp_path.iterdir())


def test_export_lines_refuses_an_unknown_format():
    with pytest.raises(ExportError, match="Unknown export format"):
        export_lines(fmt="xml", since=date(2025, 1, 1))
