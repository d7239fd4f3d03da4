"""The two-person rule for deletions: two different staff members, bound to what they approved, for a while.

Checked in the service, the database, the admin and the CLI."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import AuditEvent, DataSubjectRequest, DeletionApproval
from gdpr_requests.requests import approval_rules as rules
from gdpr_requests.requests import services, states
from gdpr_requests.requests.approvals import request_approval_record
from gdpr_requests.requests.services import ServiceError
from tests.unit.management.cli_support import refused, run, run_json
from tests.unit.staff.admin_support import (  # noqa: F401
    action_url,
    messages_of,
    other_staff,
    staff_client,
    super_client,
    superuser,
    verified_request,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_person(project):
    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    return project


def status_of(dsr: DataSubjectRequest) -> str:
    return DataSubjectRequest.objects.values_list("status", flat=True).get(pk=dsr.pk)


def test_one_approval_suffices_by_default(verified_request, staff_actor):
    outcome = request_approval_record(request=verified_request, actor=staff_actor)
    assert outcome.approved and (outcome.approvals, outcome.required) == (1, 1)
    assert status_of(verified_request) == states.APPROVED


def test_a_deletion_needs_two_different_approvers_and_the_trail_names_both(
    two_person, verified_request, staff_user, other_staff
):
    first = request_approval_record(request=verified_request, actor=Actor.staff(staff_user))
    assert not first.approved and (first.approvals, first.required, first.remaining) == (1, 2, 1)
    assert status_of(verified_request) == states.VERIFIED
    recorded = AuditEvent.objects.get(action="request.approval_recorded", request_reference=verified_request.reference)
    assert recorded.actor_label == "alice" and recorded.payload["approvals"] == 1

    second = request_approval_record(request=verified_request, actor=Actor.staff(other_staff))
    assert second.approved
    assert status_of(verified_request) == states.APPROVED
    approved = AuditEvent.objects.get(action="request.approve", request_reference=verified_request.reference)
    assert approved.payload["approvers"] == ["alice", "bob"]


def test_the_same_person_twice_is_refused_superuser_included(two_person, verified_request, superuser):
    request_approval_record(request=verified_request, actor=Actor.staff(superuser))
    with pytest.raises(ServiceError, match="already approved"):
        request_approval_record(request=verified_request, actor=Actor.staff(superuser))
    assert status_of(verified_request) == states.VERIFIED
    assert DeletionApproval.objects.filter(request=verified_request).count() == 1


def test_the_database_refuses_a_second_row_for_the_same_approver_and_binding(two_person, verified_request, staff_user):
    binding = rules.request_binding(verified_request)
    now = timezone.now()
    DeletionApproval.objects.create(
        request=verified_request, approver=staff_user, binding_hash=binding, approved_at=now
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        DeletionApproval.objects.create(
            request=verified_request, approver=staff_user, binding_hash=binding, approved_at=now
        )


def test_request_approve_alone_cannot_bypass_the_rule(two_person, verified_request, superuser):
    with pytest.raises(ServiceError, match="2 different staff members"):
        services.request_approve(request=verified_request, actor=Actor.staff(superuser))
    assert status_of(verified_request) == states.VERIFIED


def test_changing_the_ids_voids_the_first_approval(two_person, verified_request, staff_user, other_staff):
    request_approval_record(request=verified_request, actor=Actor.staff(staff_user))
    services.request_set_distinct_ids(
        request=verified_request, distinct_ids=["user-1", "user-2"], actor=Actor.staff(staff_user)
    )
    outcome = request_approval_record(request=verified_request, actor=Actor.staff(other_staff))
    assert not outcome.approved and outcome.approvals == 1
    assert status_of(verified_request) == states.VERIFIED


def test_an_approval_of_other_ids_does_not_count(two_person, verified_request, staff_user, other_staff):
    # Even a row that escaped the voiding (written for another id set) is not counted: the binding differs.
    stale = rules.binding_hash(kind="deletion", project_pks=[two_person.pk], distinct_ids=["someone-else"])
    DeletionApproval.objects.create(
        request=verified_request, approver=staff_user, binding_hash=stale, approved_at=timezone.now()
    )
    outcome = request_approval_record(request=verified_request, actor=Actor.staff(other_staff))
    assert not outcome.approved


def test_changing_the_projects_voids_the_first_approval(two_person, verified_request, staff_user, other_staff):
    from gdpr_requests.models import MixpanelProject

    second = MixpanelProject.objects.create(
        name="Web app", mixpanel_project_id="9", project_token="tok9", oauth_token="x", token_expires_on="2027-01-01"
    )
    request_approval_record(request=verified_request, actor=Actor.staff(staff_user))
    services.request_set_projects(
        request=verified_request, projects=[two_person, second], actor=Actor.staff(staff_user)
    )
    assert not request_approval_record(request=verified_request, actor=Actor.staff(other_staff)).approved


def test_a_first_approval_lapses_after_the_expiry(two_person, verified_request, staff_user, other_staff, settings):
    request_approval_record(request=verified_request, actor=Actor.staff(staff_user))
    DeletionApproval.objects.update(
        approved_at=timezone.now() - timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS + 1)
    )
    outcome = request_approval_record(request=verified_request, actor=Actor.staff(other_staff))
    assert not outcome.approved and outcome.approvals == 1
    # ... and the first approver, whose approval lapsed, may give it again: that makes two.
    assert request_approval_record(request=verified_request, actor=Actor.staff(staff_user)).approved


def test_access_requests_need_one_approval_whatever_the_project(two_person, make_request, staff_actor):
    dsr = make_request(kind="access", verified_by_staff="id card", channel="staff")
    assert request_approval_record(request=dsr, actor=staff_actor).approved


def test_system_cannot_give_a_named_approval(two_person, verified_request):
    with pytest.raises(ServiceError, match="named staff"):
        request_approval_record(request=verified_request, actor=Actor.system())


# --- the admin ----------------------------------------------------------------------------------------
def test_admin_approve_records_one_then_the_other_approver_approves(
    two_person, verified_request, staff_client, other_staff
):
    from django.test import Client

    response = staff_client.post(action_url(verified_request, "approve"), {"confirm": "on"}, follow=True)
    assert any("a different staff member must approve" in m for m in messages_of(response))
    assert status_of(verified_request) == states.VERIFIED
    page = staff_client.get(f"/admin/gdpr_requests/datasubjectrequest/{verified_request.pk}/change/")
    assert "1 of 2 recorded" in page.content.decode()

    again = staff_client.post(action_url(verified_request, "approve"), {"confirm": "on"}, follow=True)
    assert any("already approved" in m for m in messages_of(again))
    assert status_of(verified_request) == states.VERIFIED

    bob = Client()
    bob.force_login(other_staff)
    bob.post(action_url(verified_request, "approve"), {"confirm": "on"})
    assert status_of(verified_request) == states.APPROVED


def _approvals_line(client: Client, dsr: DataSubjectRequest) -> str:
    page = client.get(f"/admin/gdpr_requests/datasubjectrequest/{dsr.pk}/change/").content.decode()
    start = page.index("This deletion needs approvals")
    return " ".join(page[start : page.index("</p>", start)].split())


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_changing_the_ids_voids_the_first_approval(two_person, verified_request, staff_client, other_staff):
    staff_client.post(action_url(verified_request, "approve"), {"confirm": "on"})
    assert "1 of 2 recorded (alice)" in _approvals_line(staff_client, verified_request)

    changed = staff_client.post(
        action_url(verified_request, "distinct-ids"), {"distinct_ids": "user-1\nuser-2"}, follow=True
    )
    assert changed.status_code == 200
    assert DataSubjectRequest.objects.get(pk=verified_request.pk).distinct_ids == ["user-1", "user-2"]
    assert "0 of 2 recorded" in _approvals_line(staff_client, verified_request)

    # Bob's approval is now the first of the new set, not the second of the old one.
    bob = _client_for(other_staff)
    response = bob.post(action_url(verified_request, "approve"), {"confirm": "on"}, follow=True)
    assert any("(1 of 2)" in m for m in messages_of(response))
    assert status_of(verified_request) == states.VERIFIED
    # Alice approves what the request is now: two different people approved the same ids.
    staff_client.post(action_url(verified_request, "approve"), {"confirm": "on"})
    assert status_of(verified_request) == states.APPROVED
    approved = AuditEvent.objects.get(action="request.approve", request_reference=verified_request.reference)
    assert approved.payload["approvers"] == ["bob", "alice"]


def test_admin_a_first_approval_lapses_after_the_expiry(
    two_person, verified_request, staff_user, other_staff, settings
):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        alice = _client_for(staff_user)
        alice.post(action_url(verified_request, "approve"), {"confirm": "on"})
        assert "1 of 2 recorded (alice)" in _approvals_line(alice, verified_request)
    # Just before the expiry the approval still counts; just after, it no longer does (a new login: the staff
    # session ends long before).
    with time_machine.travel(start + timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS, seconds=-60), tick=False):
        assert "1 of 2 recorded (alice)" in _approvals_line(_client_for(other_staff), verified_request)
    with time_machine.travel(start + timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS, seconds=60), tick=False):
        bob = _client_for(other_staff)
        assert "0 of 2 recorded" in _approvals_line(bob, verified_request)
        response = bob.post(action_url(verified_request, "approve"), {"confirm": "on"}, follow=True)
        assert any("(1 of 2)" in m for m in messages_of(response))
        assert status_of(verified_request) == states.VERIFIED
        # The lapsed approver may approve again: now there are two valid ones.
        _client_for(staff_user).post(action_url(verified_request, "approve"), {"confirm": "on"})
        assert status_of(verified_request) == states.APPROVED


# --- the CLI ------------------------------------------------------------------------------------------
def test_cli_sets_the_project_rule_and_counts_approvals(project, verified_request, staff_user, other_staff):
    run("mixpanel_project", "update", project.name, "--deletion-approvals", "2")
    project.refresh_from_db()
    assert project.deletion_approvals_required == 2

    first = run_json("dsr", "approve", verified_request.reference, "--by", "alice", "--json")
    assert (first["approvals"], first["required"], first["status"]) == (1, 2, states.VERIFIED)
    message, _ = refused("dsr", "approve", verified_request.reference, "--by", "alice")
    assert "already approved" in message
    out, _ = run("dsr", "approve", verified_request.reference, "--by", "bob")
    assert "verified -> approved" in out


def test_cli_refuses_an_approval_count_other_than_one_or_two(project):
    message, _ = refused("mixpanel_project", "update", project.name, "--deletion-approvals", "3")
    assert "invalid choice: 3" in message


def _cli_approve(dsr: DataSubjectRequest, username: str) -> tuple[int, int, str]:
    out = run_json("dsr", "approve", dsr.reference, "--by", username, "--json")
    return out["approvals"], out["required"], out["status"]


def test_cli_changing_the_ids_voids_the_first_approval(two_person, verified_request, staff_user, other_staff):
    assert _cli_approve(verified_request, "alice") == (1, 2, states.VERIFIED)
    run("dsr", "set-ids", verified_request.reference, "--by", "alice", "--distinct-id", "user-1", "user-2")
    assert _cli_approve(verified_request, "bob") == (1, 2, states.VERIFIED)  # the first of the new set
    assert _cli_approve(verified_request, "alice") == (2, 2, states.APPROVED)
    assert status_of(verified_request) == states.APPROVED


def test_cli_a_first_approval_lapses_after_the_expiry(two_person, verified_request, staff_user, other_staff, settings):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert _cli_approve(verified_request, "alice") == (1, 2, states.VERIFIED)
    with time_machine.travel(start + timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS, seconds=60), tick=False):
        assert _cli_approve(verified_request, "bob") == (1, 2, states.VERIFIED)
        assert status_of(verified_request) == states.VERIFIED
        assert _cli_approve(verified_request, "alice") == (2, 2, states.APPROVED)
