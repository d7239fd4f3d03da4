"""The ``dsr`` command: intake, import, transitions, show/list, purge; and its errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.db import connection

from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelProject, MixpanelTask, TaskRequestLink
from gdpr_requests.requests import states
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[3]


def _create(*extra: str) -> str:
    out, _ = run("dsr", "create", "--kind", "deletion", "--regulation", "gdpr", "--email", "Pat@Example.org", *extra)
    return out.strip()


# --- create -------------------------------------------------------------------------------------------
def test_create_prints_the_new_reference_and_starts_unverified(project):
    reference = _create("--distinct-id", "u-1", "u-2")
    dsr = DataSubjectRequest.objects.get(reference=reference)
    assert dsr.status == states.UNVERIFIED
    assert dsr.channel == "staff"
    assert dsr.requester_email == "Pat@Example.org"  # as typed; duplicates and search go by the lower-cased hash
    assert dsr.distinct_ids == ["u-1", "u-2"]
    assert list(dsr.projects.all()) == [project]
    event = AuditEvent.objects.get(action="request.created", request_reference=reference)
    assert (event.actor_type, event.actor_label) == ("system", "cli")


def test_create_json_has_the_required_keys_and_the_deadline_counts_from_received_at():
    data = run_json(
        "dsr",
        "create",
        "--kind",
        "access",
        "--regulation",
        "gdpr",
        "--email",
        "a@example.org",
        "--received-at",
        "2024-01-31",
        "--json",
    )
    assert {"reference", "status", "kind", "regulation", "due_at"} <= data.keys()
    assert (data["status"], data["kind"], data["regulation"]) == ("unverified", "access", "gdpr")
    assert data["due_at"] == "2024-02-29"  # a month after 31 January in a leap year
    assert DataSubjectRequest.objects.filter(reference=data["reference"]).exists()


def test_create_with_verified_by_staff_and_by_starts_verified_as_that_user(staff_user, project):
    other = MixpanelProject.objects.create(
        name="Other", mixpanel_project_id="2", project_token="t2", oauth_token="x", token_expires_on=date(2030, 1, 1)
    )
    data = run_json(
        "dsr",
        "create",
        "--kind",
        "deletion",
        "--regulation",
        "ccpa",
        "--email",
        "b@example.org",
        "--verified-by-staff",
        "passport seen at the desk",
        "--by",
        "alice",
        "--project",
        "other",
        "--json",
    )
    dsr = DataSubjectRequest.objects.get(reference=data["reference"])
    assert dsr.status == states.VERIFIED
    assert dsr.verified_by == staff_user
    assert list(dsr.projects.all()) == [other]
    event = AuditEvent.objects.get(action="request.created", request_reference=dsr.reference)
    assert (event.actor_type, event.actor_label) == ("staff", "alice")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--email", "not-an-email"], "not a valid email"),
        (["--email", "a@example.org", "--received-at", "2024-13-01"], "is not a date"),
        (["--email", "a@example.org", "--received-at", "2999-01-01"], "in the future"),
        (["--email", "a@example.org", "--project", "Nope"], "No Mixpanel project named 'Nope'"),
        (["--email", "a@example.org", "--by", "nobody"], "No user named 'nobody'"),
        (["--email", "a@example.org", "--distinct-id", "x" * 300], "longer than"),
    ],
)
def test_create_refuses_bad_input_with_one_clear_line(project, args, expected):
    message, _ = refused("dsr", "create", "--kind", "access", "--regulation", "gdpr", *args)
    assert expected in message
    assert not DataSubjectRequest.objects.exists()


def test_create_refuses_an_unknown_kind():
    message, _ = refused("dsr", "create", "--kind", "erase", "--regulation", "gdpr", "--email", "a@example.org")
    assert "invalid choice" in message and "erase" in message


def test_by_a_user_without_the_staff_role_is_refused(django_user_model):
    django_user_model.objects.create_user("bob", "bob@example.org", "pw-long-enough-1")
    message, _ = refused(
        "dsr", "create", "--kind", "access", "--regulation", "gdpr", "--email", "a@example.org", "--by", "bob"
    )
    assert "may not work privacy requests" in message


# --- transitions --------------------------------------------------------------------------------------
def test_verify_then_approve_moves_the_request_and_records_the_user(staff_user):
    reference = _create("--distinct-id", "u-1")
    out, _ = run("dsr", "verify", reference, "--how", "called back on the number on file", "--by", "alice")
    assert f"{reference}: unverified -> verified" in out
    out, _ = run("dsr", "approve", reference.lower(), "--by", "alice")  # references are case-insensitive
    assert f"{reference}: verified -> approved" in out
    dsr = DataSubjectRequest.objects.get(reference=reference)
    assert dsr.status == states.APPROVED
    assert dsr.approved_by == staff_user
    assert AuditEvent.objects.filter(action="request.approve", actor_label="alice").count() == 1


def test_approve_of_an_unverified_request_names_its_state():
    reference = _create("--distinct-id", "u-1")
    message, _ = refused("dsr", "approve", reference)
    assert f"Request {reference} is unverified" in message
    assert DataSubjectRequest.objects.get(reference=reference).status == states.UNVERIFIED


def test_approve_without_distinct_ids_is_refused():
    reference = _create("--verified-by-staff", "id card")
    message, _ = refused("dsr", "approve", reference)
    assert "no Mixpanel distinct id" in message


@pytest.mark.parametrize(
    "subcommand",
    [
        ["approve"],
        ["reject", "--reason", "x"],
        ["cancel"],
        ["extend", "--reason", "x"],
        ["show"],
        ["verify", "--how", "x"],
        ["set-ids", "--distinct-id", "a"],
    ],
)
def test_an_unknown_reference_is_one_clear_error(subcommand):
    name, *rest = subcommand
    message, _ = refused("dsr", name, "DSR-0000-0000", *rest)
    assert message == "No request with reference 'DSR-0000-0000'."


def test_reject_needs_a_reason_and_keeps_it():
    reference = _create()
    message, _ = refused("dsr", "reject", reference)
    assert "--reason" in message
    message, _ = refused("dsr", "reject", reference, "--reason", "   ")
    assert "A reason is required" in message
    data = run_json("dsr", "reject", reference, "--reason", "identity could not be confirmed", "--json")
    assert data["status"] == "rejected"
    assert DataSubjectRequest.objects.get(reference=reference).rejection_reason == "identity could not be confirmed"


def test_cancel_closes_the_request_and_a_second_cancel_is_refused():
    reference = _create()
    out, _ = run("dsr", "cancel", reference)
    assert "-> cancelled" in out
    message, _ = refused("dsr", "cancel", reference)
    assert "is cancelled" in message


def test_extend_moves_the_due_date_once():
    reference = _create("--received-at", "2024-01-31")
    out, _ = run("dsr", "extend", reference, "--reason", "complex request")
    assert "due 2024-02-29 -> 2024-04-30" in out
    message, _ = refused("dsr", "extend", reference, "--reason", "again")
    assert "already extended once" in message


def test_set_ids_replaces_the_distinct_ids():
    reference = _create("--distinct-id", "old")
    out, _ = run("dsr", "set-ids", reference, "--distinct-id", "new-1", "new-2")
    assert "2 distinct id(s) set" in out
    assert DataSubjectRequest.objects.get(reference=reference).distinct_ids == ["new-1", "new-2"]


def test_hold_and_resume_go_back_to_the_previous_state():
    reference = _create("--verified-by-staff", "id card")
    run("dsr", "hold", reference, "--reason", "waiting for the subject")
    assert DataSubjectRequest.objects.get(reference=reference).status == states.ON_HOLD
    run("dsr", "resume", reference)
    assert DataSubjectRequest.objects.get(reference=reference).status == states.VERIFIED


def test_resume_keeps_its_note_as_an_internal_note():
    reference = _create("--verified-by-staff", "id card")
    run("dsr", "hold", reference, "--reason", "waiting for the subject")
    run("dsr", "resume", reference, "--note", "the subject sent the missing document")
    dsr = DataSubjectRequest.objects.get(reference=reference)
    assert dsr.status == states.VERIFIED
    assert list(dsr.notes.values_list("text", flat=True)) == ["the subject sent the missing document"]


# --- show and list --------------------------------------------------------------------------------------
def test_show_json_includes_the_mixpanel_tasks(project):
    reference = _create("--distinct-id", "u-1")
    dsr = DataSubjectRequest.objects.get(reference=reference)
    task = MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["u-1"],
        tracking_id="trk-42",
        remote_status="PENDING",
        state="submitted",
    )
    TaskRequestLink.objects.create(task=task, request=dsr)
    data = run_json("dsr", "show", reference, "--json")
    assert {"reference", "status", "kind", "regulation", "due_at", "tasks"} <= data.keys()
    assert data["reference"] == reference and data["status"] == "unverified"
    assert data["tasks"] == [
        {**data["tasks"][0], "tracking_id": "trk-42", "remote_status": "PENDING", "state": "submitted"}
    ]
    assert data["projects"] == ["Main app"]

    out, _ = run("dsr", "show", reference)
    assert reference in out and "unverified" in out and "trk-42" in out and "PENDING" in out


def test_list_json_filters_by_status_with_state_names():
    first = _create()
    second = _create("--verified-by-staff", "id card")
    everything = run_json("dsr", "list", "--json")
    assert {row["reference"]: row["status"] for row in everything} == {first: "unverified", second: "verified"}
    verified = run_json("dsr", "list", "--status", "verified", "--json")
    assert [row["reference"] for row in verified] == [second]
    assert all("email" not in key for row in everything for key in row)

    out, _ = run("dsr", "list")
    assert first in out and "unverified" in out
    assert "pat@example.org" not in out  # listings carry no personal data


def test_list_refuses_an_unknown_status():
    message, _ = refused("dsr", "list", "--status", "pending")
    assert "invalid choice" in message


# --- import ---------------------------------------------------------------------------------------------
def _csv(tmp_path: Path, text: str, *, encoding: str = "utf-8") -> str:
    path = tmp_path / "requests.csv"
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_import_creates_valid_rows_and_lists_invalid_ones_by_line(tmp_path, project):
    path = _csv(
        tmp_path,
        (
            "kind,regulation,email,name,distinct_ids,projects,received_at\n"
            "deletion,gdpr,one@example.org,One,a;b,Main app,2024-01-31\n"  # line 2: fine
            "access,gdpr,not-an-email,Two,,,\n"  # line 3: bad email
            "access,ccpa,three@example.org,Three,,Nope,\n"  # line 4: unknown project
            "access,gdpr,four@example.org,Four,,,31/01/2024\n"  # line 5: bad date
            "erase,gdpr,five@example.org,Five,,,\n"  # line 6: bad kind
            "\n"  # line 7: blank, skipped
            "ACCESS,CCPA,six@example.org,,x,,\n"  # line 8: fine
        ),
    )
    message, err = refused("dsr", "import", path)
    assert message == "2 request(s) created, 4 invalid row(s)."
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["line 3", "line 4", "line 5", "line 6"]
    assert "not a valid email" in lines[0]
    assert "unknown project 'Nope'" in lines[1]
    assert "received_at '31/01/2024' is not a date" in lines[2]
    assert "Unknown request kind 'erase'" in lines[3]

    created = DataSubjectRequest.objects.order_by("id")
    assert [r.requester_email for r in created] == ["one@example.org", "six@example.org"]
    first = created[0]
    assert (first.channel, first.status, first.distinct_ids) == ("import", "unverified", ["a", "b"])
    assert first.due_at == date(2024, 2, 29)
    assert created[1].regulation == "ccpa" and created[1].kind == "access"


def test_import_json_reports_lines_and_verified_by_staff_starts_verified(tmp_path):
    path = _csv(tmp_path, "email,kind,regulation,verified_by_staff\nz@example.org,deletion,gdpr,signed letter\n")
    data = run_json("dsr", "import", path, "--json")
    assert data["invalid"] == []
    [row] = data["created"]
    assert (row["line"], row["status"]) == (2, "verified")
    assert DataSubjectRequest.objects.get(reference=row["reference"]).identity_verification == "signed letter"


def test_import_counts_lines_across_quoted_newlines(tmp_path):
    path = _csv(tmp_path, 'kind,regulation,email,name\naccess,gdpr,a@example.org,"Two\nlines"\naccess,gdpr,bad,x\n')
    _message, err = refused("dsr", "import", path)
    assert err.strip().startswith("line 4:")


def test_import_dry_run_creates_nothing(tmp_path):
    path = _csv(tmp_path, "kind,regulation,email\naccess,gdpr,a@example.org\n")
    out, _ = run("dsr", "import", path, "--dry-run")
    assert "line 2: would create" in out
    assert not DataSubjectRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="request.created").exists()


@pytest.mark.parametrize(
    ("content", "encoding", "expected"),
    [
        ("kind,email\naccess,a@example.org\n", "utf-8", "lacks the required column(s) regulation"),
        ("kind,regulation,email,colour\naccess,gdpr,a@example.org,red\n", "utf-8", "unknown column(s) colour"),
        ("", "utf-8", "is empty"),
        ("kind,regulation,email,name\naccess,gdpr,a@example.org,Zoë\n", "latin-1", "is not UTF-8 text"),
    ],
)
def test_an_unusable_import_file_is_one_clear_error(tmp_path, content, encoding, expected):
    message, err = refused("dsr", "import", _csv(tmp_path, content, encoding=encoding))
    assert expected in message
    assert err == ""
    assert not DataSubjectRequest.objects.exists()


def test_import_of_a_missing_file_is_one_clear_error(tmp_path):
    message, _ = refused("dsr", "import", str(tmp_path / "nope.csv"))
    assert "does not exist" in message


# --- purge --------------------------------------------------------------------------------------------------
def test_purge_dry_run_prints_what_retention_would_purge(monkeypatch):
    pytest.importorskip("gdpr_requests.requests.retention", reason="retention.py is written in another issue")
    from gdpr_requests.requests import retention

    calls = []

    def fake_purge_due(dry_run: bool = False) -> list[str]:
        calls.append(dry_run)
        return ["DSR-AAAA-BBBB", "DSR-CCCC-DDDD"]

    monkeypatch.setattr(retention, "purge_due", fake_purge_due)
    out, _ = run("dsr", "purge", "--dry-run")
    assert calls == [True]
    assert "Would purge personal data of 2 request(s):" in out
    assert "DSR-AAAA-BBBB" in out and "DSR-CCCC-DDDD" in out
    data = run_json("dsr", "purge", "--json")
    assert calls == [True, False]
    assert data == {"dry_run": False, "references": ["DSR-AAAA-BBBB", "DSR-CCCC-DDDD"]}


def test_purge_dry_run_agrees_with_the_real_retention_module():
    retention = pytest.importorskip(
        "gdpr_requests.requests.retention", reason="retention.py is written in another issue"
    )
    data = run_json("dsr", "purge", "--dry-run", "--json")
    assert data["references"] == list(retention.purge_due(dry_run=True))


def test_purge_without_the_retention_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gdpr_requests.requests.retention", None)  # import now raises ImportError
    message, _ = refused("dsr", "purge")
    assert "gdpr_requests.retention is missing" in message


# --- as a real process ----------------------------------------------------------------------------------
def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_manage_py_dsr_create_exits_0_and_bad_input_exits_1_without_a_traceback():
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_ENV": "development"}
    command = [sys.executable, str(ROOT / "manage.py"), "dsr", "create", "--kind", "access", "--regulation", "gdpr"]

    good = subprocess.run(
        [*command, "--email", "cli@example.org"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert good.returncode == 0, good.stderr
    reference = good.stdout.strip()
    assert DataSubjectRequest.objects.filter(reference=reference, status="unverified").exists()

    bad = subprocess.run([*command, "--email", "nope"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "CommandError: That is not a valid email address."

    unknown = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "dsr", "show", "DSR-0000-0000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert unknown.returncode == 1
    assert "Traceback" not in unknown.stderr and "No request with reference" in unknown.stderr
    assert DataSubjectRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("args", [("dsr", "show"), ("dsr", "list"), ("mixpanel_project", "list")])
def test_output_into_a_closed_pipe_stops_quietly_like_head_expects(args):
    # `manage.py dsr show REF | head -3`: head exits before the command writes; here the reading end is closed
    # before the command even starts.
    reference = _create("--distinct-id", "pipe-user")
    extra = [reference] if args == ("dsr", "show") else []
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_ENV": "development"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args, *extra],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE
