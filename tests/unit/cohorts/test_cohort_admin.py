"""The intake's admin page: superusers add (password shown once), rotate and disable; staff and auditors see the
last syncs and the requests; nobody sees a password again."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from gdpr_requests.cohorts import services
from gdpr_requests.models import CohortIntake
from tests.unit.cohorts.support import make_intake, member, payload, post

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@staff.example", "correct-horse-battery")


def test_a_superuser_adds_an_intake_and_sees_its_password_once(superuser, project):
    client = _client(superuser)
    response = client.post(
        reverse("admin:gdpr_requests_cohortintake_add"),
        {
            "name": "Deleted in app",
            "project": project.pk,
            "kind": "deletion",
            "regulation": "gdpr",
            "identity": "product-login",
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    intake = CohortIntake.objects.get()
    page = response.content.decode()
    assert services.webhook_url(intake) in page
    assert intake.username in page
    password = response.context["password"]
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=password)
    change = client.get(reverse("admin:gdpr_requests_cohortintake_change", args=[intake.pk])).content.decode()
    assert password not in change
    assert intake.password_hash not in change
    assert services.webhook_url(intake) in change


def test_the_change_page_shows_the_last_syncs_the_requests_and_auth_failures(client, staff_user, project):
    intake, password = make_intake(project)
    post(client, intake, password, payload([member(1), member(2)], session="a"))
    post(client, intake, password, payload([member(2), member(3)], session="b"))
    post(client, intake, password, payload([member(1)], action="remove_members", session="c"))
    post(client, intake, "wrong", payload([member(9)], session="d"))
    page = _client(staff_user).get(reverse("admin:gdpr_requests_cohortintake_change", args=[intake.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("<tr><td>") == 3
    assert "remove_members" in html
    assert "3 in all" in html
    assert "1, last on" in html  # one failed authentication
    assert "Rotate password" not in html  # staff look; superusers configure
    assert "distinct-1" not in html  # the sync log shows counts, never members


def test_auditors_may_look_but_not_add_rotate_or_disable(auditor_user, project):
    intake, _ = make_intake(project)
    client = _client(auditor_user)
    assert client.get(reverse("admin:gdpr_requests_cohortintake_changelist")).status_code == 200
    assert client.get(reverse("admin:gdpr_requests_cohortintake_add")).status_code == 403
    assert client.post(reverse("admin:gdpr_requests_cohortintake_rotate", args=[intake.pk])).status_code == 403
    assert client.post(reverse("admin:gdpr_requests_cohortintake_disable", args=[intake.pk])).status_code == 403
    intake.refresh_from_db()
    assert intake.is_active


def test_a_superuser_rotates_and_disables(superuser, project):
    intake, old = make_intake(project)
    client = _client(superuser)
    confirm = client.get(reverse("admin:gdpr_requests_cohortintake_rotate", args=[intake.pk]))
    assert "keeps working for 72 hours" in confirm.content.decode()
    rotated = client.post(reverse("admin:gdpr_requests_cohortintake_rotate", args=[intake.pk]))
    new = rotated.context["password"]
    intake.refresh_from_db()
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=new)
    assert services.cohort_credentials_valid(intake=intake, username=intake.username, password=old)
    disabled = client.post(reverse("admin:gdpr_requests_cohortintake_disable", args=[intake.pk]))
    assert disabled.status_code == 302
    intake.refresh_from_db()
    assert not intake.is_active


def test_the_admin_shows_when_the_projects_two_approver_rule_overrides_auto_approval(superuser, project):
    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    client = _client(superuser)
    response = client.post(
        reverse("admin:gdpr_requests_cohortintake_add"),
        {
            "name": "Deleted in app",
            "project": project.pk,
            "kind": "deletion",
            "regulation": "gdpr",
            "identity": "product-login",
            "auto_approve": "on",
        },
    )
    warning = "Auto-approval does not apply: project Main app requires 2 different staff members"
    assert warning in response.content.decode()  # on the page that shows the password
    intake = CohortIntake.objects.get()
    change = client.get(reverse("admin:gdpr_requests_cohortintake_change", args=[intake.pk])).content.decode()
    assert warning in change
    # The rule is the project's: back to one approver, the note goes.
    project.deletion_approvals_required = 1
    project.save(update_fields=["deletion_approvals_required"])
    change = client.get(reverse("admin:gdpr_requests_cohortintake_change", args=[intake.pk])).content.decode()
    assert "Auto-approval does not apply" not in change
