"""Configuring intakes (CLI and services): credentials shown once, rotation with a grace period, disabling,
auto-approval as the intake's system actor, and the sandbox command posting pages as Mixpanel does."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from gdpr_requests.audit.chain import Actor
from gdpr_requests.cohorts import services
from gdpr_requests.models import AuditEvent, CohortIntake, CohortSync, DataSubjectRequest
from gdpr_requests.requests import states
from tests.unit.cohorts.support import make_intake, member, payload, post
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db


@override_settings(SITE_URL="https://privacy.example.com")
def test_add_prints_the_url_username_and_password_once_and_stores_only_a_hash(project):
    data = run_json(
        "cohort_intake", "add", "--project", "Main app", "--kind", "deletion", "--regulation", "gdpr", "--json"
    )
    intake = CohortIntake.objects.get()
    assert data["webhook_url"] == f"https://privacy.example.com/integrations/mixpanel/cohorts/{intake.public_id}/"
    assert len(intake.public_id) >= 32
    assert data["username"] == intake.username
    assert data["identity"] == "product-login"
    assert data["auto_approve"] is False
    assert data["password"] not in intake.password_hash
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=data["password"])
    listed, _ = run("cohort_intake", "list")
    assert intake.name in listed
    assert data["password"] not in listed
    assert "password" not in run_json("cohort_intake", "list", "--json")[0]
    event = AuditEvent.objects.get(action="cohort_intake.created")
    assert data["password"] not in str(event.payload)


def test_add_in_text_shows_the_credentials(project):
    out, _ = run(
        "cohort_intake",
        "add",
        "--project",
        "Main app",
        "--kind",
        "access",
        "--regulation",
        "ccpa",
        "--identity",
        "email",
        "--auto-approve",
        "--name",
        "Data download",
    )
    intake = CohortIntake.objects.get(name="Data download")
    assert (intake.kind, intake.regulation, intake.identity, intake.auto_approve) == ("access", "ccpa", "email", True)
    assert services.webhook_url(intake) in out
    assert intake.username in out
    assert "password:" in out


def test_add_refuses_an_unknown_project_and_a_taken_name(project):
    message, _ = refused("cohort_intake", "add", "--project", "Nope", "--kind", "deletion", "--regulation", "gdpr")
    assert "No Mixpanel project named 'Nope'" in message
    make_intake(project, name="Taken")
    message, _ = refused(
        "cohort_intake", "add", "--project", "Main app", "--kind", "deletion", "--regulation", "gdpr", "--name", "taken"
    )
    assert "exists already" in message


def test_rotation_keeps_the_old_password_for_the_grace_period_only(client, project, settings):
    settings.COHORT_PASSWORD_GRACE_HOURS = 72
    intake, old = make_intake(project)
    data = run_json("cohort_intake", "rotate-password", "--name", intake.name, "--json")
    new = data["password"]
    assert new != old
    intake.refresh_from_db()
    assert post(client, intake, new, payload([member(1)], session="a")).status_code == 200
    assert post(client, intake, old, payload([member(2)], session="b")).status_code == 200
    CohortIntake.objects.filter(pk=intake.pk).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
    intake.refresh_from_db()
    assert post(client, intake, old, payload([member(3)], session="c")).status_code == 401
    assert post(client, intake, new, payload([member(3)], session="c")).status_code == 200


def test_disable_makes_the_webhook_answer_404_and_refuses_twice(client, project):
    intake, password = make_intake(project)
    out, _ = run("cohort_intake", "disable", "--name", intake.name)
    assert "Disabled" in out
    assert post(client, intake, password, payload([member(1)])).status_code == 404
    message, _ = refused("cohort_intake", "disable", "--name", intake.name)
    assert "disabled already" in message


def test_auto_approve_approves_through_request_approve_as_the_intake(
    client, project, celery_eager, django_capture_on_commit_callbacks
):
    intake, password = make_intake(project, name="Deleted in app", auto_approve=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, intake, password, payload([member(1), member(2)]))
    assert response.json()["status"] == "success"
    statuses = set(DataSubjectRequest.objects.values_list("status", flat=True))
    assert statuses <= {states.APPROVED, states.PROCESSING}
    approvals = AuditEvent.objects.filter(action="request.approve")
    assert approvals.count() == 2
    assert set(approvals.values_list("actor_label", flat=True)) == {"cohort:Deleted in app"}


def test_without_auto_approve_requests_wait_for_staff(
    client, project, celery_eager, django_capture_on_commit_callbacks
):
    intake, password = make_intake(project)
    with django_capture_on_commit_callbacks(execute=True):
        post(client, intake, password, payload([member(1)]))
    assert DataSubjectRequest.objects.get().status == states.VERIFIED
    assert not AuditEvent.objects.filter(action="request.approve").exists()


def test_auto_approve_on_a_two_approver_project_leaves_deletions_for_staff_and_says_so(
    client, project, celery_eager, django_capture_on_commit_callbacks
):
    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    data, err = run(
        "cohort_intake", "add", "--project", "Main app", "--kind", "deletion", "--regulation", "gdpr",
        "--auto-approve", "--name", "Deleted in app", "--json",
    )  # fmt: skip
    assert "Warning: Auto-approval does not apply: project Main app requires 2 different staff members" in err
    made = json.loads(data)
    assert made["auto_approve"] is True and made["auto_approval_blocked"].startswith("Auto-approval does not apply")
    listed, _ = run("cohort_intake", "list")
    assert "blocked" in listed
    intake = CohortIntake.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        post(client, intake, made["password"], payload([member(1)]))
    # What the warning says is what happens: the request waits, verified, for two staff members.
    assert DataSubjectRequest.objects.get().status == states.VERIFIED
    assert not AuditEvent.objects.filter(action="request.approve").exists()


@pytest.mark.parametrize(
    ("kind", "auto_approve", "approvals"),
    [("deletion", True, 1), ("access", True, 2), ("deletion", False, 2)],
    ids=["one-approver", "access-needs-one", "no-auto-approve"],
)
def test_no_auto_approval_warning_when_auto_approval_applies_or_is_off(project, kind, auto_approve, approvals):
    project.deletion_approvals_required = approvals
    project.save(update_fields=["deletion_approvals_required"])
    args = ["cohort_intake", "add", "--project", "Main app", "--kind", kind, "--regulation", "gdpr", "--json"]
    data, err = run(*args, *(["--auto-approve"] if auto_approve else []))
    assert err == ""
    assert json.loads(data)["auto_approval_blocked"] == ""


def test_raising_the_projects_approvals_to_two_warns_about_its_auto_approving_intakes(project):
    make_intake(project, name="Deleted in app", auto_approve=True)
    make_intake(project, name="Manual", auto_approve=False)
    make_intake(project, name="Downloads", kind="access", auto_approve=True)
    _out, err = run("mixpanel_project", "update", "Main app", "--deletion-approvals", "2")
    assert err.count("Warning:") == 1
    assert "Warning: cohort intake Deleted in app: Auto-approval does not apply" in err
    _out, err = run("mixpanel_project", "update", "Main app", "--deletion-approvals", "1")
    assert err == ""


def test_email_intake_with_auto_approve_approves_once_the_subject_confirms(
    client, project, django_capture_on_commit_callbacks
):
    from gdpr_requests.requests.services import request_confirm_email

    intake, password = make_intake(project, identity="email", auto_approve=True)
    post(client, intake, password, payload([member(1)]))
    dsr = DataSubjectRequest.objects.get()
    assert dsr.status == states.UNVERIFIED
    with django_capture_on_commit_callbacks(execute=True):
        request_confirm_email(request=dsr)
    dsr.refresh_from_db()
    assert dsr.status == states.APPROVED
    assert AuditEvent.objects.get(action="request.approve").actor_label == "cohort:Requested deletion"


def test_approve_pending_catches_up_after_a_lost_message(client, project):
    intake, password = make_intake(project, auto_approve=True)
    post(client, intake, password, payload([member(1), member(2)]))  # on-commit callbacks not run: message lost
    assert set(DataSubjectRequest.objects.values_list("status", flat=True)) == {states.VERIFIED}
    out, _ = run("cohort_intake", "approve-pending", "--name", intake.name)
    assert "Approved 2 request(s)" in out
    assert set(DataSubjectRequest.objects.values_list("status", flat=True)) == {states.APPROVED}


def test_approve_pending_refuses_an_intake_that_does_not_auto_approve(project):
    intake, _ = make_intake(project)
    message, _ = refused("cohort_intake", "approve-pending", "--name", intake.name)
    assert "does not approve automatically" in message


def test_credentials_are_refused_for_the_wrong_username_even_with_the_right_password(project):
    intake, password = make_intake(project)
    assert not services.cohort_credentials_valid(intake=intake, username="someone", password=password)
    assert not services.cohort_credentials_valid(intake=intake, username=intake.username, password=password + "x")
    assert not services.cohort_credentials_valid(intake=intake, username=intake.username, password="x" * 10_000)


@pytest.mark.django_db(transaction=True)
def test_sandbox_command_posts_pages_like_mixpanel_to_the_running_app(live_server, project):
    intake, password = make_intake(project)
    url = live_server.url + services.WEBHOOK_PATH.format(public_id=intake.public_id)
    out, _ = run(
        "sandbox_cohort_sync",
        "--intake",
        intake.name,
        "--members",
        "25",
        "--page-size",
        "10",
        "--url",
        url,
        f"--password={password}",
    )
    assert out.count("HTTP 200") == 3
    syncs = list(CohortSync.objects.order_by("page_count"))
    assert [(s.page_count, s.total_pages, s.requests_created) for s in syncs] == [(1, 3, 10), (2, 3, 10), (3, 3, 5)]
    assert len({s.session_id for s in syncs}) == 1
    assert DataSubjectRequest.objects.filter(channel="cohort").count() == 25
    # The same members again, as a new export: nothing new.
    run("sandbox_cohort_sync", "--intake", intake.name, "--members", "25", "--url", url, f"--password={password}")
    assert DataSubjectRequest.objects.count() == 25


def test_sandbox_command_reads_the_password_from_stdin_and_says_when_it_is_refused(live_server, project, monkeypatch):
    intake, _password = make_intake(project)
    url = live_server.url + services.WEBHOOK_PATH.format(public_id=intake.public_id)
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong-password\n"))
    message, _ = refused(
        "sandbox_cohort_sync", "--intake", intake.name, "--members", "3", "--url", url, "--password-file", "-"
    )
    assert "refused a page" in message
    assert DataSubjectRequest.objects.count() == 0


def test_sandbox_command_says_when_the_app_is_not_running(project):
    intake, password = make_intake(project)
    message, _ = refused(
        "sandbox_cohort_sync",
        "--intake",
        intake.name,
        "--members",
        "1",
        "--url",
        "http://127.0.0.1:9/x/",
        "--password",
        password,
    )
    assert "Is the app running?" in message


def test_the_system_actor_is_named_after_the_intake(project):
    intake, _ = make_intake(project, name="Deletion button")
    assert services.actor_for_intake(intake) == Actor.system("cohort:Deletion button")


def test_a_checked_password_is_vouched_for_by_the_shared_cache_and_a_wrong_one_never(project, monkeypatch):
    calls = []
    real = services.check_password

    def counting(password, encoded):
        calls.append(1)
        return real(password, encoded)

    monkeypatch.setattr(services, "check_password", counting)
    intake, password = make_intake(project)
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=password)
    services._verified.clear()  # another web process: only the shared cache knows
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=password)
    assert len(calls) == 1
    for _ in range(2):
        assert not services.cohort_credentials_valid(intake=intake, username=intake.username, password="guess")
    assert len(calls) == 3
