"""Every admin URL for every role: who gets in (200), who is sent to log in (302), who is refused (403), and
that a refused POST changes nothing."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, NamedTuple

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.api.keys import api_key_create
from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import (
    ApiCall,
    ApiKey,
    AuditEvent,
    CohortIntake,
    DataSubjectRequest,
    IdentityCandidate,
    MixpanelProject,
    MixpanelTask,
    SubjectExport,
    WebhookDelivery,
    WebhookEndpoint,
)
from gdpr_requests.requests.services import request_create
from gdpr_requests.staff.requests_admin import REQUEST_ACTIONS
from gdpr_requests.webhooks.services import endpoint_create
from tests.unit.cohorts.support import make_intake
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


# A CSRF token the matrix's clients send with every POST (cookie and form field), so that CSRF is enforced as in
# production and a refusal can only come from the permission check.
CSRF_TOKEN = "matrixcsrftoken0matrixcsrftoken0"


@pytest.fixture
def world(verified_request, project, staff_user, settings):
    """One of everything the admin shows."""
    settings.WEBHOOK_SSRF_CHECKS = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    system = Actor.system("test")
    intake, _password = make_intake(project)
    api_key = api_key_create(name="siem", scopes=["audit:read"], actor=system).api_key
    endpoint = endpoint_create(url="http://127.0.0.1:9/hook", events=["request.created"], actor=system)
    request_create(kind="access", regulation="gdpr", email="other@example.org", actor=system)  # one delivery
    candidates = [
        IdentityCandidate.objects.create(
            request=verified_request, project=project, distinct_id=f"found-{n}", matched_property="$email"
        )
        for n in (1, 2)
    ]
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
        "intake": intake,
        "api_key": api_key,
        "endpoint": endpoint,
        "delivery": WebhookDelivery.objects.get(),
        "candidates": candidates,
    }


class Row(NamedTuple):
    label: str
    url: str
    data: dict | None  # None: GET
    allowed: set[str]  # the roles that get ``ok``
    ok: int = 200  # 302 for a change list action, which redirects back to its list


def _expect(role: str, row: Row) -> object:
    """anonymous and non-staff users are sent to log in; staff without the permission get 403."""
    if role in ("anonymous", "plain"):
        return LOGIN
    return row.ok if role in row.allowed else 403


ALL_STAFF = {"privacy_staff", "auditor", "superuser"}
WORKERS = {"privacy_staff", "superuser"}
SUPERUSER = {"superuser"}


def _changelist_action(model: str, action: str, pk: Any) -> tuple[str, dict]:
    return reverse(f"admin:gdpr_requests_{model}_changelist"), {"action": action, "_selected_action": [pk]}


def _integration_rows(world: dict) -> list[Row]:
    """Cohort intakes, API keys, webhooks, identity candidates and lookup access: views, then state changes."""
    intake, api_key, endpoint = world["intake"], world["api_key"], world["endpoint"]
    delivery, accepted, project = world["delivery"], world["candidates"][0], world["project"]
    rows = [
        # Cohort intakes: whoever may see requests sees where they came from; only superusers configure them.
        Row("cohortintake changelist", reverse("admin:gdpr_requests_cohortintake_changelist"), None, ALL_STAFF),
        Row("cohortintake change", change_url(intake), None, ALL_STAFF),
        Row("cohortintake add", reverse("admin:gdpr_requests_cohortintake_add"), None, SUPERUSER),
        Row(
            "cohortintake rotate", reverse("admin:gdpr_requests_cohortintake_rotate", args=[intake.pk]), None, SUPERUSER
        ),
        Row(
            "cohortintake disable",
            reverse("admin:gdpr_requests_cohortintake_disable", args=[intake.pk]),
            None,
            SUPERUSER,
        ),
        # API keys and webhooks: configuration with power over requests, superusers only.
        Row("apikey changelist", reverse("admin:gdpr_requests_apikey_changelist"), None, SUPERUSER),
        Row("apikey add", reverse("admin:gdpr_requests_apikey_add"), None, SUPERUSER),
        Row("apikey change", change_url(api_key), None, SUPERUSER),
        Row("webhookendpoint changelist", reverse("admin:gdpr_requests_webhookendpoint_changelist"), None, SUPERUSER),
        Row("webhookendpoint add", reverse("admin:gdpr_requests_webhookendpoint_add"), None, SUPERUSER),
        Row("webhookendpoint change", change_url(endpoint), None, SUPERUSER),
        Row("webhookdelivery changelist", reverse("admin:gdpr_requests_webhookdelivery_changelist"), None, SUPERUSER),
        Row("webhookdelivery change", change_url(delivery), None, SUPERUSER),
        # Identity candidates hold distinct ids (personal data): privacy staff, not auditors.
        Row("identitycandidate changelist", reverse("admin:gdpr_requests_identitycandidate_changelist"), None, WORKERS),
        Row("identitycandidate change", change_url(accepted), None, WORKERS),
        Row("lookup access changelist", reverse("admin:gdpr_requests_profilelookupaccess_changelist"), None, SUPERUSER),
        Row(
            "lookup access change",
            reverse("admin:gdpr_requests_profilelookupaccess_change", args=[project.pk]),
            None,
            SUPERUSER,
        ),
        Row(
            "lookup access check (run)",
            *_changelist_action("profilelookupaccess", "check_selected", project.pk),
            SUPERUSER,
            302,
        ),
    ]
    return rows + [Row(a.label, a.url, a.data, a.allowed, a.ok) for a in _state_changes(world)]


class StateChange(NamedTuple):
    label: str
    url: str
    data: dict
    allowed: set[str]
    ok: int
    state: Callable[[], object]  # what the POST changes when it is allowed, read again from the database


def _state_changes(world: dict) -> list[StateChange]:
    """Every state-changing POST of the newer admin pages, with what it changes."""
    intake, api_key, endpoint = world["intake"], world["api_key"], world["endpoint"]
    delivery, (accepted, rejected), project = world["delivery"], world["candidates"], world["project"]

    def field(model: Any, pk: Any, *names: str) -> Callable[[], object]:
        return lambda: tuple(model.objects.filter(pk=pk).values_list(*names).first() or ())

    def count(model: Any) -> Callable[[], object]:
        return lambda: model.objects.count()

    return [
        StateChange(
            "cohortintake add (post)",
            reverse("admin:gdpr_requests_cohortintake_add"),
            {"name": "Another", "project": project.pk, "kind": "access", "regulation": "gdpr", "identity": "email"},
            SUPERUSER,
            200,  # the page that shows the new password once
            count(CohortIntake),
        ),
        StateChange(
            "cohortintake rotate (post)",
            reverse("admin:gdpr_requests_cohortintake_rotate", args=[intake.pk]),
            {},
            SUPERUSER,
            200,  # the page that shows the new password once
            field(CohortIntake, intake.pk, "password_hash"),
        ),
        StateChange(
            "apikey add (post)",
            reverse("admin:gdpr_requests_apikey_add"),
            {"name": "desk", "scopes": ["requests:read"]},
            SUPERUSER,
            302,
            count(ApiKey),
        ),
        StateChange(
            "apikey revoke",
            *_changelist_action("apikey", "revoke", api_key.pk),
            SUPERUSER,
            302,
            field(ApiKey, api_key.pk, "revoked_at"),
        ),
        StateChange(
            "webhookendpoint add (post)",
            reverse("admin:gdpr_requests_webhookendpoint_add"),
            {"url": "http://127.0.0.1:9/other", "events": ["request.completed"]},
            SUPERUSER,
            302,
            count(WebhookEndpoint),
        ),
        StateChange(
            "webhookendpoint rotate secret",
            *_changelist_action("webhookendpoint", "rotate_secret", endpoint.pk),
            SUPERUSER,
            302,
            field(WebhookEndpoint, endpoint.pk, "secret_rotated_at"),
        ),
        StateChange(
            "webhookdelivery send again",
            *_changelist_action("webhookdelivery", "send_again", delivery.pk),
            SUPERUSER,
            302,
            lambda: AuditEvent.objects.filter(action="webhook.resent").count(),
        ),
        StateChange(
            "identitycandidate accept",
            *_changelist_action("identitycandidate", "accept_selected", accepted.pk),
            WORKERS,
            302,
            field(IdentityCandidate, accepted.pk, "state"),
        ),
        StateChange(
            "identitycandidate reject",
            *_changelist_action("identitycandidate", "reject_selected", rejected.pk),
            WORKERS,
            302,
            field(IdentityCandidate, rejected.pk, "state"),
        ),
        StateChange(
            "lookup access change (post)",
            reverse("admin:gdpr_requests_profilelookupaccess_change", args=[project.pk]),
            {"query_username": "svc.lookup", "secret_new": "s3cret-value", "properties_text": "$email"},
            SUPERUSER,
            302,
            field(MixpanelProject, project.pk, "query_username"),
        ),
        # Last: the intake and the endpoint stay enabled for the rows above.
        StateChange(
            "cohortintake disable (post)",
            reverse("admin:gdpr_requests_cohortintake_disable", args=[intake.pk]),
            {},
            SUPERUSER,
            302,  # back to the intake's page
            field(CohortIntake, intake.pk, "is_active"),
        ),
        StateChange(
            "webhookendpoint disable",
            *_changelist_action("webhookendpoint", "disable", endpoint.pk),
            SUPERUSER,
            302,
            field(WebhookEndpoint, endpoint.pk, "is_active"),
        ),
    ]


def _csrf_client(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_TOKEN
    if user is not None:
        client.force_login(user)
    return client


def _post(client: Client, url: str, data: dict) -> Any:
    return client.post(url, {**data, "csrfmiddlewaretoken": CSRF_TOKEN})


def _urls(world: dict) -> list[Row]:
    """Every admin URL: (label, url, POST data or None for GET, roles that get ``ok``, ``ok``)."""
    dsr, project, event = world["request"], world["project"], world["event"]
    rows: list[Row] = [Row("index", reverse("admin:index"), None, ALL_STAFF | {"bare_staff"})]
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
            Row(f"{name} changelist", reverse(f"admin:gdpr_requests_{name}_changelist"), None, ALL_STAFF),
            Row(f"{name} change", reverse(f"admin:gdpr_requests_{name}_change", args=[obj.pk]), None, ALL_STAFF),
            Row(f"{name} history", reverse(f"admin:gdpr_requests_{name}_history", args=[obj.pk]), None, ALL_STAFF),
            Row(f"{name} delete", reverse(f"admin:gdpr_requests_{name}_delete", args=[obj.pk]), None, set()),
        ]
    rows += [
        Row("request add", reverse("admin:gdpr_requests_datasubjectrequest_add"), None, WORKERS),
        Row("project add", reverse("admin:gdpr_requests_mixpanelproject_add"), None, SUPERUSER),
        Row("auditevent add", reverse("admin:gdpr_requests_auditevent_add"), None, set()),
        Row("mixpaneltask add", reverse("admin:gdpr_requests_mixpaneltask_add"), None, set()),
        Row("apicall add", reverse("admin:gdpr_requests_apicall_add"), None, set()),
        Row("subjectexport add", reverse("admin:gdpr_requests_subjectexport_add"), None, set()),
        Row(
            "check credentials",
            reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]),
            None,
            WORKERS,
        ),
        Row("verify chain", reverse("admin:gdpr_requests_auditevent_verify"), None, ALL_STAFF),
        Row("verify chain (run)", reverse("admin:gdpr_requests_auditevent_verify"), {}, ALL_STAFF),
        Row("users", reverse("admin:auth_user_changelist"), None, SUPERUSER),
        Row("groups", reverse("admin:auth_group_changelist"), None, SUPERUSER),
    ]
    for slug in REQUEST_ACTIONS:
        rows.append(Row(f"action {slug}", action_url(dsr, slug), None, WORKERS))
    return rows + _integration_rows(world)


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_url_answers_each_role_as_expected(users, world, role):
    client = _csrf_client(users[role])
    wrong = []
    for row in _urls(world):
        response = client.get(row.url) if row.data is None else _post(client, row.url, row.data)
        expected = _expect(role, row)
        if expected == LOGIN:
            ok = response.status_code == 302 and reverse("admin:login") in response["Location"]
        else:
            ok = response.status_code == expected
        if not ok:
            wrong.append(f"{row.label}: got {response.status_code}, expected {expected}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_each_newer_admin_action_changes_state_only_for_the_roles_allowed(users, world, role):
    """A 302 or a 200 is not proof: each POST changes its object for the allowed roles, and nothing otherwise."""
    client = _csrf_client(users[role])
    wrong = []
    for change in _state_changes(world):
        before = change.state()
        others = AuditEvent.objects.count()
        _post(client, change.url, change.data)
        changed = change.state() != before
        if changed != (role in change.allowed):
            wrong.append(f"{change.label}: {'changed' if changed else 'unchanged'} for {role}")
        if role not in change.allowed and AuditEvent.objects.count() != others:
            wrong.append(f"{change.label}: a refused POST wrote to the audit trail for {role}")
    assert not wrong, "\n".join(wrong)


def test_a_newer_admin_action_posted_without_the_csrf_token_is_refused_even_for_a_superuser(superuser, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    for change in _state_changes(world):
        before = change.state()
        response = client.post(change.url, change.data)  # no token
        assert response.status_code == 403, change.label
        assert change.state() == before, change.label


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
