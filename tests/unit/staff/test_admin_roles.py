"""Every admin URL for every role: who gets in (200), who is sent to log in (302), who is refused (403), and
that a refused POST changes nothing."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import ApiCall, AuditEvent, DataSubjectRequest, MixpanelProject, MixpanelTask, SubjectExport
from gdpr_requests.staff.requests_admin import REQUEST_ACTIONS
from tests.unit.staff.admin_support import (  # noqa: F401
    action_url,
    bare_staff,
    change_url,
    plain_user,
    snapshot,
    superuser,
    users,
    verified_request,
)

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "plain", "bare_staff", "privacy_staff", "auditor", "superuser"]
LOGIN = "login"  # a redirect to the admin's login page

# Valid POST data for each request action, so that a refusal can only come from the permission check.
ACTION_DATA = {
    "approve": {"confirm": "on"},
    "verify-identity": {"how": "video call"},
    "distinct-ids": {"distinct_ids": "user-1\nuser-2"},
    "projects": {},  # filled in with the project's pk
    "assign": {},  # filled in with a staff user's pk
    "note": {"note": "called the requester"},
    "extend": {"reason": "large account"},
    "hold": {"reason": "waiting for legal"},
    "resume": {"reason": ""},
    "retry": {},
    "resend-verification": {},
    "reject": {"ground": "not_our_subject", "reason": "not our customer"},
    "cancel": {"reason": ""},
}


@pytest.fixture
def world(verified_request, project, staff_user):
    """One of everything the admin shows."""
    task = MixpanelTask.objects.create(project=project, kind="deletion", compliance_type="GDPR", distinct_ids=["u"])
    task.requests.add(verified_request)
    call = ApiCall.objects.create(
        project=project, task=task, operation="create_deletion", http_status=201, outcome="ok"
    )
    export = SubjectExport.objects.create(
        request=verified_request, sha256="a" * 64, size=10, expires_at=timezone.now() + timedelta(days=30)
    )
    event = AuditEvent.objects.filter(request_reference=verified_request.reference).first()
    return {
        "request": verified_request,
        "project": project,
        "task": task,
        "call": call,
        "export": export,
        "event": event,
        "staff": staff_user,
    }


def _expect(role: str, allowed: set[str]) -> object:
    """anonymous and non-staff users are sent to log in; staff without the permission get 403."""
    if role in ("anonymous", "plain"):
        return LOGIN
    return 200 if role in allowed else 403


ALL_STAFF = {"privacy_staff", "auditor", "superuser"}
WORKERS = {"privacy_staff", "superuser"}


def _urls(world: dict) -> list[tuple[str, str, dict | None, set[str]]]:
    """(label, url, POST data or None for GET, roles that get 200)."""
    dsr, project, event = world["request"], world["project"], world["event"]
    rows: list[tuple[str, str, dict | None, set[str]]] = [
        ("index", reverse("admin:index"), None, ALL_STAFF | {"bare_staff"})
    ]
    objects = {
        "datasubjectrequest": dsr,
        "mixpanelproject": project,
        "auditevent": event,
        "mixpaneltask": world["task"],
        "apicall": world["call"],
        "subjectexport": world["export"],
    }
    for name, obj in objects.items():
        rows += [
            (f"{name} changelist", reverse(f"admin:gdpr_requests_{name}_changelist"), None, ALL_STAFF),
            (f"{name} change", reverse(f"admin:gdpr_requests_{name}_change", args=[obj.pk]), None, ALL_STAFF),
            (f"{name} history", reverse(f"admin:gdpr_requests_{name}_history", args=[obj.pk]), None, ALL_STAFF),
            (f"{name} delete", reverse(f"admin:gdpr_requests_{name}_delete", args=[obj.pk]), None, set()),
        ]
    rows += [
        ("request add", reverse("admin:gdpr_requests_datasubjectrequest_add"), None, WORKERS),
        ("project add", reverse("admin:gdpr_requests_mixpanelproject_add"), None, {"superuser"}),
        ("auditevent add", reverse("admin:gdpr_requests_auditevent_add"), None, set()),
        ("mixpaneltask add", reverse("admin:gdpr_requests_mixpaneltask_add"), None, set()),
        ("apicall add", reverse("admin:gdpr_requests_apicall_add"), None, set()),
        ("subjectexport add", reverse("admin:gdpr_requests_subjectexport_add"), None, set()),
        (
            "check credentials",
            reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]),
            None,
            WORKERS,
        ),
        ("verify chain", reverse("admin:gdpr_requests_auditevent_verify"), None, ALL_STAFF),
        ("verify chain (run)", reverse("admin:gdpr_requests_auditevent_verify"), {}, ALL_STAFF),
        ("users", reverse("admin:auth_user_changelist"), None, {"superuser"}),
        ("groups", reverse("admin:auth_group_changelist"), None, {"superuser"}),
    ]
    for slug in REQUEST_ACTIONS:
        rows.append((f"action {slug}", action_url(dsr, slug), None, WORKERS))
    return rows


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_url_answers_each_role_as_expected(client, users, world, role):
    if users[role] is not None:
        client.force_login(users[role])
    wrong = []
    for label, url, data, allowed in _urls(world):
        response = client.get(url) if data is None else client.post(url, data)
        expected = _expect(role, allowed)
        if expected == LOGIN:
            ok = response.status_code == 302 and reverse("admin:login") in response["Location"]
        else:
            ok = response.status_code == expected
        if not ok:
            wrong.append(f"{label}: got {response.status_code}, expected {expected}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", ["anonymous", "plain", "bare_staff", "auditor"])
def test_a_forbidden_post_to_any_action_changes_nothing(client, users, world, role):
    if users[role] is not None:
        client.force_login(users[role])
    dsr = world["request"]
    data = {**ACTION_DATA, "projects": {"projects": [world["project"].pk]}, "assign": {"assignee": world["staff"].pk}}
    before = snapshot(dsr)
    for slug in REQUEST_ACTIONS:
        response = client.post(action_url(dsr, slug), data[slug])
        assert response.status_code in (302, 403), slug
        if response.status_code == 302:
            assert reverse("admin:login") in response["Location"]
        assert snapshot(dsr) == before, f"{slug} changed something for {role}"


@pytest.mark.parametrize("role", ["anonymous", "plain", "bare_staff", "auditor"])
def test_a_forbidden_intake_bulk_action_or_delete_changes_nothing(client, users, world, role):
    if users[role] is not None:
        client.force_login(users[role])
    dsr = world["request"]
    before = snapshot(dsr)
    requests_before = DataSubjectRequest.objects.count()
    client.post(
        reverse("admin:gdpr_requests_datasubjectrequest_add"),
        {"kind": "access", "regulation": "gdpr", "email": "new@example.org", "received_on": date.today().isoformat()},
    )
    client.post(
        reverse("admin:gdpr_requests_datasubjectrequest_changelist"),
        {"action": "approve_selected", "_selected_action": [dsr.pk], "index": 0, "apply": "1", "confirm": "on"},
    )
    client.post(
        reverse("admin:gdpr_requests_datasubjectrequest_changelist"),
        {"action": "reject_selected", "_selected_action": [dsr.pk], "apply": "1", "ground": "other", "reason": "bulk"},
    )
    client.post(reverse("admin:gdpr_requests_datasubjectrequest_delete", args=[dsr.pk]), {"post": "yes"})
    assert DataSubjectRequest.objects.count() == requests_before
    assert snapshot(dsr) == before


@pytest.mark.parametrize("role", ROLES)
def test_nobody_edits_a_request_raw_or_deletes_it(client, users, world, role):
    """Even a superuser gets no Save button and no delete: every write is an action."""
    if users[role] is not None:
        client.force_login(users[role])
    dsr = world["request"]
    before = snapshot(dsr)
    response = client.post(change_url(dsr), {"status": "completed", "due_at": "2099-01-01", "reference": "X"})
    assert response.status_code in (302, 403)
    response = client.post(reverse("admin:gdpr_requests_datasubjectrequest_delete", args=[dsr.pk]), {"post": "yes"})
    assert response.status_code in (302, 403)
    assert DataSubjectRequest.objects.filter(pk=dsr.pk).exists()
    assert snapshot(dsr) == before


@pytest.mark.parametrize("role", ["privacy_staff", "auditor", "bare_staff"])
def test_only_superusers_change_projects(client, users, world, role):
    client.force_login(users[role])
    project = world["project"]
    events = AuditEvent.objects.count()
    response = client.post(
        change_url(project),
        {
            "name": "Renamed",
            "mixpanel_project_id": "1",
            "project_token": "t",
            "residency": "eu",
            "deletion_batch_size": 5,
            "token_expires_on": "2030-01-01",
            "oauth_token_new": "stolen",
        },
    )
    assert response.status_code == 403
    if role != "privacy_staff":  # staff may check credentials (tested with the pipeline), not change them
        response = client.post(reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]))
        assert response.status_code == 403
    project.refresh_from_db()
    assert project.name == "Main app" and project.oauth_token == "oauth-secret-value"
    assert AuditEvent.objects.count() == events
    assert MixpanelProject.objects.count() == 1


def test_audit_events_cannot_be_changed_even_by_a_superuser(client, superuser, world):
    client.force_login(superuser)
    event = world["event"]
    count = AuditEvent.objects.count()
    assert client.post(change_url(event), {"action": "forged"}).status_code == 403
    assert (
        client.post(reverse("admin:gdpr_requests_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code
        == 403
    )
    changelist = client.get(reverse("admin:gdpr_requests_auditevent_changelist"))
    assert changelist.status_code == 200
    assert "action-select" not in changelist.content.decode()  # no actions, no checkboxes
    assert AuditEvent.objects.count() == count
    event.refresh_from_db()
    assert event.action == "request.created"


@pytest.mark.parametrize("role", ROLES)
def test_the_timeline_history_page_follows_the_view_permission(client, users, world, role):
    if users[role] is not None:
        client.force_login(users[role])
    response = client.get(reverse("admin:gdpr_requests_datasubjectrequest_history", args=[world["request"].pk]))
    if role in ("privacy_staff", "auditor", "superuser"):
        assert response.status_code == 200 and "Request received" in response.content.decode()
    else:
        assert response.status_code in (302, 403)
