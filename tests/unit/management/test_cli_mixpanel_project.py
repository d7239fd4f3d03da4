"""``mixpanel_project add|update|list|check`` and the project services behind them (gdpr_requests.projects)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import AuditEvent, MixpanelProject
from gdpr_requests.projects.services import project_create, project_update
from gdpr_requests.requests.services import ServiceError
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db

OAUTH = "oauth-Secret-9f8e7d6c5b4a"
API_SECRET = "api-Secret-0a1b2c3d4e5f"


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "oauth.txt"
    path.write_text(OAUTH + "\n", encoding="utf-8")
    return str(path)


def _add(token_file: str, *extra: str) -> tuple[str, str]:
    return run(
        "mixpanel_project",
        "add",
        "--name",
        "Web app",
        "--project-id",
        "3141",
        "--token",
        "abc123def",
        "--oauth-token-file",
        token_file,
        "--token-expires",
        "2027-03-01",
        "--residency",
        "eu",
        *extra,
    )


def _raw_column(project: MixpanelProject, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {MixpanelProject._meta.db_table} WHERE id = %s", [project.pk])
        return cursor.fetchone()[0]


def _trail() -> str:
    return json.dumps([e.payload for e in AuditEvent.objects.all()])


# --- add ------------------------------------------------------------------------------------------------
def test_add_stores_the_token_encrypted_and_never_prints_or_audits_it(token_file, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(API_SECRET, encoding="utf-8")
    out, err = _add(
        token_file,
        "--api-secret-file",
        str(secret_file),
        "--batch-size",
        "500",
        "--owner-email",
        "owner@example.org",
        "--base-url",
        "http://127.0.0.1:9/api/app/",
    )
    assert "Added project 'Web app'" in out
    project = MixpanelProject.objects.get(name="Web app")
    assert (project.oauth_token, project.api_secret) == (OAUTH, API_SECRET)
    assert (project.residency, project.deletion_batch_size, project.token_expires_on) == ("eu", 500, date(2027, 3, 1))
    assert project.base_url == "http://127.0.0.1:9/api/app"
    assert project.oauth_token_changed_at is not None and project.api_secret_changed_at is not None
    assert OAUTH not in _raw_column(project, "oauth_token")
    assert API_SECRET not in _raw_column(project, "api_secret")
    assert OAUTH not in out + err and API_SECRET not in out + err
    event = AuditEvent.objects.get(action="project.created")
    assert event.payload["project"] == "Web app" and event.payload["has_api_secret"] is True
    assert OAUTH not in _trail() and API_SECRET not in _trail() and "owner@example.org" not in _trail()


def test_add_accepts_the_token_on_the_command_line_and_prints_json():
    data = run_json(
        "mixpanel_project",
        "add",
        "--name",
        "Inline",
        "--project-id",
        "7",
        "--token",
        "tok",
        "--oauth-token",
        OAUTH,
        "--token-expires",
        "2027-01-01",
        "--residency",
        "in",
        "--json",
    )
    assert data["name"] == "Inline" and data["residency"] == "in" and data["has_api_secret"] is False
    assert OAUTH not in json.dumps(data)
    assert MixpanelProject.objects.get(name="Inline").oauth_token == OAUTH


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--token-expires": "2027-02-30"}, "is not a date"),
        ({"--residency": "uk"}, "invalid choice"),
        ({"--batch-size": "2001"}, "batch size must be a whole number from 1 to 2000"),
        ({"--batch-size": "0"}, "must be 1 or more"),
        ({"--base-url": "ftp://example.org"}, "must be an http:// or https:// URL"),
        ({"--project-id": "abc"}, "project id must be digits"),
        ({"--owner-email": "nope"}, "not a valid email"),
        ({"--oauth-token-file": "/nonexistent/oauth.txt"}, "does not exist"),
    ],
)
def test_add_refuses_bad_input_with_one_clear_line(token_file, change, expected):
    args = {
        "--name": "P",
        "--project-id": "1",
        "--token": "t",
        "--oauth-token-file": token_file,
        "--token-expires": "2027-01-01",
        "--residency": "us",
        **change,
    }
    message, _ = refused("mixpanel_project", "add", *[part for pair in args.items() for part in pair])
    assert expected in message
    assert not MixpanelProject.objects.exists()


def test_add_needs_exactly_one_way_of_giving_the_token(token_file):
    base = [
        "mixpanel_project",
        "add",
        "--name",
        "P",
        "--project-id",
        "1",
        "--token",
        "t",
        "--token-expires",
        "2027-01-01",
        "--residency",
        "us",
    ]
    message, _ = refused(*base)
    assert "one of the arguments --oauth-token-file --oauth-token is required" in message
    message, _ = refused(*base, "--oauth-token-file", token_file, "--oauth-token", "x")
    assert "not allowed with argument" in message


def test_add_refuses_an_empty_token_file_and_a_duplicate_name(token_file, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    message, _ = refused(
        "mixpanel_project",
        "add",
        "--name",
        "P",
        "--project-id",
        "1",
        "--token",
        "t",
        "--oauth-token-file",
        str(empty),
        "--token-expires",
        "2027-01-01",
        "--residency",
        "us",
    )
    assert "is empty" in message
    _add(token_file)
    message, _ = refused(
        "mixpanel_project",
        "add",
        "--name",
        "WEB APP",
        "--project-id",
        "1",
        "--token",
        "t",
        "--oauth-token-file",
        token_file,
        "--token-expires",
        "2027-01-01",
        "--residency",
        "us",
    )
    assert message == "A project named 'WEB APP' already exists."


# --- update ---------------------------------------------------------------------------------------------
def test_update_renews_the_token_and_audits_which_fields_changed(token_file, tmp_path):
    _add(token_file)
    project = MixpanelProject.objects.get(name="Web app")
    project.credential_status = "failing"
    project.expiry_warnings_sent = [30, 7]
    project.save()
    first_change = project.oauth_token_changed_at
    new_token = tmp_path / "new.txt"
    new_token.write_text("oauth-Renewed-123456", encoding="utf-8")

    out, _ = run(
        "mixpanel_project",
        "update",
        "web app",
        "--oauth-token-file",
        str(new_token),
        "--token-expires",
        "2028-03-01",
        "--batch-size",
        "100",
    )
    assert "Updated project 'Web app'" in out
    project.refresh_from_db()
    assert project.oauth_token == "oauth-Renewed-123456"
    assert project.oauth_token_changed_at > first_change
    assert (project.credential_status, project.expiry_warnings_sent) == ("unknown", [])
    event = AuditEvent.objects.get(action="project.updated")
    assert event.payload["fields"] == ["deletion_batch_size", "oauth_token", "token_expires_on"]
    assert event.payload["changes"]["token_expires_on"] == {"from": "2027-03-01", "to": "2028-03-01"}
    assert "oauth_token" not in event.payload["changes"]
    assert "oauth-Renewed-123456" not in _trail() and OAUTH not in _trail()


def test_update_refuses_a_token_without_expiry_nothing_to_do_and_unknown_projects(token_file):
    _add(token_file)
    message, _ = refused("mixpanel_project", "update", "Web app", "--oauth-token", "new-token")
    assert "needs its expiry date" in message
    message, _ = refused("mixpanel_project", "update", "Web app")
    assert "Nothing to change" in message
    message, _ = refused("mixpanel_project", "update", "Nope", "--batch-size", "10")
    assert message == "No Mixpanel project named 'Nope' (known: Web app)."


def test_update_can_deactivate_a_project(token_file):
    _add(token_file)
    data = run_json("mixpanel_project", "update", "Web app", "--deactivate", "--json")
    assert data["is_active"] is False
    assert MixpanelProject.objects.get(name="Web app").is_active is False


# --- list -----------------------------------------------------------------------------------------------
def test_list_shows_expiry_and_credential_status_without_secrets(token_file, project):
    _add(token_file)
    project.credential_status = "failing"
    project.credential_error = "401 from Mixpanel"
    project.save()
    data = run_json("mixpanel_project", "list", "--json")
    assert [p["name"] for p in data] == ["Main app", "Web app"]
    required = {
        "name",
        "mixpanel_project_id",
        "residency",
        "token_expires_on",
        "days_until_token_expiry",
        "credential_status",
        "is_active",
        "has_api_secret",
    }
    assert all(required <= p.keys() for p in data)
    assert data[0]["credential_status"] == "failing" and data[0]["token_expires_on"] == "2027-06-01"
    text, _ = run("mixpanel_project", "list")
    for output in (json.dumps(data), text):
        assert OAUTH not in output and "oauth-secret-value" not in output
        assert "abc123def" not in output and "projtoken123" not in output  # project tokens stay out too
    assert "failing: 401 from Mixpanel" in text and "2027-03-01" in text


def test_list_with_no_projects_says_how_to_add_one():
    out, _ = run("mixpanel_project", "list")
    assert "mixpanel_project add" in out
    assert run_json("mixpanel_project", "list", "--json") == []


# --- check ----------------------------------------------------------------------------------------------
class _FakeMixpanel(BaseHTTPRequestHandler):
    """Answers every call with the status the test chose; records what it was asked."""

    status = 404
    seen: list[tuple[str, str, str]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = json.dumps(
            {"status": "error", "error": "no such task"}
            if self.status != 200
            else {"status": "ok", "results": {"status": "PENDING"}}
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_mixpanel() -> Iterator[tuple[str, type[_FakeMixpanel]]]:
    handler = type("Handler", (_FakeMixpanel,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/app", handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


needs_pipeline = pytest.mark.skipif(
    importlib.util.find_spec("gdpr_requests.pipeline") is None,
    reason="gdpr_requests.pipeline (project_check_credentials) is written in another issue and is not here yet",
)


@needs_pipeline
@pytest.mark.parametrize(("status", "ok"), [(404, True), (401, False), (403, False)])
def test_check_makes_one_authenticated_call_and_reports_the_verdict(project, fake_mixpanel, staff_user, status, ok):
    url, handler = fake_mixpanel
    handler.status = status
    project.base_url_override = url
    project.save()
    if ok:
        out, _ = run("mixpanel_project", "check", "main app", "--by", "alice")
        assert out.startswith("OK: Main app")
    else:
        message, _ = refused("mixpanel_project", "check", "Main app", "--by", "alice")
        assert message.startswith("Credential check for 'Main app' failed")
        assert "oauth-secret-value" not in message
    assert handler.seen, "the check should call Mixpanel"
    assert all(auth == "Bearer oauth-secret-value" for _method, _path, auth in handler.seen)
    project.refresh_from_db()
    assert project.credential_status == ("ok" if ok else "failing")


@needs_pipeline
def test_check_json_reports_ok_and_message(project, fake_mixpanel):
    url, _handler = fake_mixpanel
    project.base_url_override = url
    project.save()
    data = run_json("mixpanel_project", "check", "Main app", "--json")
    assert data["ok"] is True and data["name"] == "Main app" and isinstance(data["message"], str)


def test_check_of_an_unknown_project_or_user_is_a_clear_error(project):
    message, _ = refused("mixpanel_project", "check", "Nope")
    assert message.startswith("No Mixpanel project named 'Nope'")
    message, _ = refused("mixpanel_project", "check", "Main app", "--by", "ghost")
    assert message == "No user named 'ghost'."


def test_check_without_the_pipeline_module_is_a_clear_error(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdpr_requests.pipeline", None)
    message, _ = refused("mixpanel_project", "check", "Main app")
    assert "need the Mixpanel pipeline" in message


# --- the services directly -----------------------------------------------------------------------------------
def _create(**overrides: Any) -> MixpanelProject:
    values: dict[str, Any] = {
        "name": "Svc",
        "mixpanel_project_id": "42",
        "project_token": "tok",
        "oauth_token": OAUTH,
        "token_expires_on": date(2027, 1, 1),
        "actor": Actor.system("test"),
    }
    values.update(overrides)
    return project_create(**values)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": " "}, "needs a name"),
        ({"residency": "mars"}, "Unknown residency 'mars'"),
        ({"deletion_batch_size": 0}, "from 1 to 2000"),
        ({"deletion_batch_size": True}, "from 1 to 2000"),
        ({"base_url_override": "javascript:alert(1)"}, "http:// or https://"),
        ({"token_expires_on": "soon"}, "must be a date"),
        ({"oauth_token": ""}, "OAuth token is required"),
        ({"project_token": "has space"}, "project token must be"),
    ],
)
def test_project_create_validates_with_clear_messages(overrides, expected):
    with pytest.raises(ServiceError, match=expected) as info:
        _create(**overrides)
    assert OAUTH not in str(info.value)
    assert not MixpanelProject.objects.exists()


def test_project_update_stamps_a_new_api_secret_and_skips_unchanged_values():
    project = _create()
    assert project.api_secret_changed_at is None
    project = project_update(project=project, actor=Actor.system("test"), api_secret=API_SECRET)
    assert project.api_secret_changed_at is not None
    stamped = project.api_secret_changed_at
    count = AuditEvent.objects.count()
    project = project_update(project=project, actor=Actor.system("test"), api_secret=API_SECRET, residency="us")
    assert project.api_secret_changed_at == stamped
    assert AuditEvent.objects.count() == count  # nothing changed, nothing recorded
    project = project_update(project=project, actor=Actor.system("test"), name="Renamed")
    event = AuditEvent.objects.latest("sequence")
    assert event.payload["changes"] == {"project_name": {"from": "Svc", "to": "Renamed"}}
    assert API_SECRET not in _trail()


def test_project_update_refuses_a_name_taken_by_another_project():
    _create(name="First")
    second = _create(name="Second")
    with pytest.raises(ServiceError, match="already exists"):
        project_update(project=second, actor=Actor.system("test"), name="first")
    with pytest.raises(TypeError):
        project_update(project=second, actor=Actor.system("test"), credential_status="ok")


def test_add_by_a_staff_user_is_recorded_as_that_user_and_an_unknown_user_is_refused(token_file, staff_user):
    message, _ = refused(
        "mixpanel_project",
        "add",
        "--name",
        "P",
        "--project-id",
        "1",
        "--token",
        "t",
        "--oauth-token-file",
        token_file,
        "--token-expires",
        "2027-01-01",
        "--residency",
        "us",
        "--by",
        "ghost",
    )
    assert message == "No user named 'ghost'."
    assert not MixpanelProject.objects.exists()
    _add(token_file, "--by", "alice")
    event = AuditEvent.objects.get(action="project.created")
    assert (event.actor_type, event.actor_label) == ("staff", "alice")
