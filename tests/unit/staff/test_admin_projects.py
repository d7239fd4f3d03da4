"""Mixpanel projects in the admin: superusers add and change them through the project services; stored secrets
never reach a page; the expiry warns in colour; "Check credentials" makes one call (faked at the HTTP seam)."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import responses
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import AuditEvent, CredentialStatus, MixpanelProject
from tests.unit.staff.admin_support import (  # noqa: F401
    auditor_client,
    change_url,
    messages_of,
    staff_client,
    super_client,
    superuser,
)

pytestmark = pytest.mark.django_db

ADD = "/admin/gdpr_requests/mixpanelproject/add/"
SECRET = "oauth-secret-value"  # the project fixture's stored token


def form_data(**overrides):
    return {
        "name": "Web app",
        "mixpanel_project_id": "777",
        "project_token": "webtoken777",
        "residency": "eu",
        "base_url_override": "",
        "deletion_batch_size": "1999",
        "token_owner_email": "owner@company.example",
        "token_expires_on": (timezone.localdate() + timedelta(days=365)).isoformat(),
        "is_active": "on",
        "oauth_token_new": "brand-new-token-123",
        "api_secret_new": "",
        **overrides,
    }


def test_a_superuser_adds_a_project_through_the_service(super_client, superuser):
    response = super_client.post(ADD, form_data(api_secret_new="archive-pass"))
    assert response.status_code == 302, messages_of(response)
    project = MixpanelProject.objects.get(name="Web app")
    assert (project.oauth_token, project.api_secret, project.residency) == ("brand-new-token-123", "archive-pass", "eu")
    assert project.oauth_token_changed_at is not None
    event = AuditEvent.objects.get(action="project.created")
    assert (event.actor_type, event.actor_label) == ("staff", "root")
    assert "brand-new-token-123" not in str(event.payload) and "archive-pass" not in str(event.payload)


def test_a_new_project_needs_its_token_and_a_valid_id(super_client):
    response = super_client.post(ADD, form_data(oauth_token_new=""))
    assert response.status_code == 200
    assert "A new project needs its GDPR OAuth token." in response.content.decode()
    response = super_client.post(ADD, form_data(mixpanel_project_id="abc"))
    assert response.status_code == 302  # the form accepted it; the service refuses it
    assert "digits" in " ".join(messages_of(super_client.get(ADD)))
    assert not MixpanelProject.objects.exists()


def test_the_stored_secrets_never_reach_the_page(super_client, staff_client, project):
    MixpanelProject.objects.filter(pk=project.pk).update(oauth_token_changed_at=timezone.now())
    for client in (super_client, staff_client):
        page = client.get(change_url(project)).content.decode()
        assert SECRET not in page
        assert "set, last changed on" in page
    page = super_client.get(change_url(project)).content.decode()
    field = re.search(r'<input[^>]*name="oauth_token_new"[^>]*>', page).group(0)
    assert 'type="password"' in field and "value=" not in field


def test_a_blank_secret_field_keeps_the_stored_secret(super_client, project):
    data = form_data(
        name="Main app",
        oauth_token_new="",
        token_expires_on="2027-06-01",
        base_url_override="http://127.0.0.1:9/api/app",
    )
    response = super_client.post(change_url(project), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    project.refresh_from_db()
    assert project.oauth_token == SECRET
    assert project.project_token == "webtoken777"
    event = AuditEvent.objects.filter(action="project.updated").latest("sequence")
    assert "oauth_token" not in event.payload["fields"] and "project_token" in event.payload["fields"]


def test_a_filled_secret_field_replaces_the_secret_and_stamps_the_change(super_client, project):
    data = form_data(
        name="Main app",
        oauth_token_new="rotated-token",
        token_expires_on="2027-06-01",
        token_owner_email="",
        base_url_override="http://127.0.0.1:9/api/app",
        mixpanel_project_id="12345",
        project_token="projtoken123",
        residency="us",
    )
    assert super_client.post(change_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.oauth_token == "rotated-token" and project.oauth_token_changed_at is not None
    event = AuditEvent.objects.filter(action="project.updated").latest("sequence")
    assert event.payload["fields"] == ["oauth_token"]
    assert "rotated-token" not in str(event.payload)


def test_staff_and_auditors_only_read_projects(staff_client, auditor_client, project):
    staff_page = staff_client.get(change_url(project)).content.decode()
    assert 'name="oauth_token_new"' not in staff_page and 'name="_save"' not in staff_page
    assert "Check credentials" in staff_page
    auditor_page = auditor_client.get(change_url(project)).content.decode()
    assert "Check credentials" not in auditor_page and SECRET not in auditor_page


@pytest.mark.parametrize(
    ("days", "css", "phrase"),
    [
        (10, "dsr-expiry-soon", "in 10 days"),
        (30, "dsr-expiry-soon", "in 30 days"),
        (31, "dsr-expiry-ok", "in 31 days"),
        (-2, "dsr-expiry-expired", "expired 2 days ago"),
    ],
)
def test_token_expiry_is_coloured_within_30_days(staff_client, project, days, css, phrase):
    MixpanelProject.objects.filter(pk=project.pk).update(token_expires_on=timezone.localdate() + timedelta(days=days))
    page = staff_client.get(reverse("admin:gdpr_requests_mixpanelproject_changelist")).content.decode()
    assert f'<span class="dsr-expiry {css}">({phrase})</span>' in page


def _status_url(project) -> re.Pattern:
    return re.compile(re.escape(project.base_url) + r"/data-deletions/v3\.0/.+")


@responses.activate
def test_check_credentials_reports_a_refused_token(staff_client, staff_user, project):
    responses.get(_status_url(project), status=401, json={"status": "error", "error": "Invalid token"})
    response = staff_client.post(reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]))
    assert response.status_code == 302
    shown = messages_of(staff_client.get(response["Location"]))
    assert any("refused the credential" in m for m in shown)
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.FAILING
    event = AuditEvent.objects.get(action="project.credential_checked")
    assert (event.actor_label, event.payload["result"]) == ("alice", "failing")
    assert len(responses.calls) == 1


@responses.activate
def test_check_credentials_reports_a_working_token(staff_client, project):
    responses.get(_status_url(project), status=404, json={"status": "error", "error": "not found"})
    response = staff_client.post(reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]))
    shown = messages_of(staff_client.get(response["Location"]))
    assert any("accepted the credential" in m for m in shown)
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.OK


def test_check_credentials_asks_before_calling(staff_client, project):
    page = staff_client.get(reverse("admin:gdpr_requests_mixpanelproject_check_credentials", args=[project.pk]))
    assert page.status_code == 200 and "401 or 403 means the credential fails" in page.content.decode()
    assert not AuditEvent.objects.filter(action="project.credential_checked").exists()


def test_the_expiry_date_input_shows_the_stored_date(super_client, project):
    page = super_client.get(change_url(project)).content.decode()
    field = re.search(r'<input[^>]*name="token_expires_on"[^>]*>', page).group(0)
    assert 'type="date"' in field and 'value="2027-06-01"' in field
