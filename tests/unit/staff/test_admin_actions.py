"""Each staff action on the request page: it calls its service, lands in the audit trail as the staff member,
and refuses (with a message, never a 500) when the state is wrong or a reason is missing."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import (
    AuditEvent,
    DataSubjectRequest,
    MixpanelProject,
    MixpanelTask,
    RequestNote,
    SubjectExport,
    SubjectNotification,
    TaskState,
)
from gdpr_requests.requests import services, states
from tests.unit.staff.admin_support import (  # noqa: F401
    action_url,
    auditor_client,
    change_url,
    make_failed,
    messages_of,
    other_staff,
    snapshot,
    staff_client,
    superuser,
    verified_request,
)

pytestmark = pytest.mark.django_db


def last_event(dsr: DataSubjectRequest) -> AuditEvent:
    return AuditEvent.objects.filter(request_reference=dsr.reference).order_by("-sequence").first()


def assert_done_by_staff(dsr: DataSubjectRequest, action: str, user) -> None:
    event = last_event(dsr)
    assert event.action == action
    assert (event.actor_type, event.actor_label) == ("staff", user.get_username())


CONFIRM = {"confirm": "on"}


def post(client, dsr, action, data=None):
    return client.post(action_url(dsr, action), data or {})


def assert_refused(response, dsr, before, text: str) -> None:
    assert response.status_code == 200
    shown = " ".join(messages_of(response)) + response.content.decode()
    assert text in shown, shown[:2000]
    assert snapshot(dsr) == before


# --- approve ---------------------------------------------------------------------------------------------
def test_approve_moves_a_verified_request_with_ids_to_approved(staff_client, staff_user, verified_request):
    response = post(staff_client, verified_request, "approve", CONFIRM)
    assert response.status_code == 302
    assert response["Location"] == change_url(verified_request)
    verified_request.refresh_from_db()
    assert verified_request.status == states.APPROVED
    assert verified_request.approved_by == staff_user
    assert_done_by_staff(verified_request, "request.approve", staff_user)


def test_approve_page_of_an_unverified_request_is_disabled_and_says_why(staff_client, make_request, project):
    dsr = make_request(distinct_ids=[])
    page = staff_client.get(action_url(dsr, "approve")).content.decode()
    assert "Cannot approve: it is unverified, not verified; it has no Mixpanel distinct id yet." in page
    assert "disabled" in page
    before = snapshot(dsr)
    assert_refused(post(staff_client, dsr, "approve", CONFIRM), dsr, before, "cannot approve")


def test_approve_without_a_distinct_id_is_refused_by_the_service(staff_client, make_request, project):
    dsr = make_request(distinct_ids=[], verified_by_staff="seen in person")
    change = staff_client.get(change_url(dsr)).content.decode()
    assert "Cannot approve: it has no Mixpanel distinct id yet." in change
    before = snapshot(dsr)
    assert_refused(post(staff_client, dsr, "approve", CONFIRM), dsr, before, "no Mixpanel distinct id")


# --- reject, hold, resume, extend ------------------------------------------------------------------------
def test_reject_needs_a_reason_and_stores_it(staff_client, staff_user, verified_request):
    before = snapshot(verified_request)
    response = post(staff_client, verified_request, "reject", {"ground": "other", "reason": "   "})
    assert_refused(response, verified_request, before, "Explain the reason to the requester.")
    response = post(
        staff_client, verified_request, "reject", {"ground": "other", "reason": "We hold no data for this person."}
    )
    assert response.status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.status == states.REJECTED
    assert verified_request.rejection_reason == "We hold no data for this person."
    assert_done_by_staff(verified_request, "request.reject", staff_user)


def test_reject_in_the_wrong_state_shows_the_state_machine_refusal(staff_client, verified_request, staff_actor):
    services.request_approve(request=verified_request, actor=staff_actor)
    before = snapshot(verified_request)
    response = post(staff_client, verified_request, "reject", {"ground": "other", "reason": "too late"})
    assert_refused(response, verified_request, before, "is approved: cannot reject")


def test_hold_and_resume_return_the_request_to_where_it_was(staff_client, staff_user, verified_request):
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "hold", {"reason": ""}), verified_request, before, "required")
    assert post(staff_client, verified_request, "hold", {"reason": "legal review"}).status_code == 302
    verified_request.refresh_from_db()
    assert (verified_request.status, verified_request.hold_reason) == (states.ON_HOLD, "legal review")
    assert post(staff_client, verified_request, "resume", {"reason": ""}).status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.status == states.VERIFIED
    assert_done_by_staff(verified_request, "request.resume", staff_user)
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "resume"), verified_request, before, "cannot resume")


def test_resume_keeps_the_note_it_asks_for_among_the_internal_notes(staff_client, staff_user, verified_request):
    post(staff_client, verified_request, "hold", {"reason": "legal review"})
    response = post(staff_client, verified_request, "resume", {"reason": "Legal cleared it on the phone."})
    assert response.status_code == 302
    note = verified_request.notes.get()
    assert (note.text, note.author) == ("Legal cleared it on the phone.", staff_user)
    event = last_event(verified_request)
    assert event.action == "request.resume"
    assert event.payload["note_length"] == len(note.text)
    assert "Legal" not in str(event.payload)
    assert "Legal cleared it on the phone." in staff_client.get(change_url(verified_request)).content.decode()


def test_extend_once_with_a_reason(staff_client, staff_user, verified_request):
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "extend", {}), verified_request, before, "required")
    page = staff_client.get(action_url(verified_request, "extend")).content.decode()
    assert "two further months" in page
    response = post(staff_client, verified_request, "extend", {"reason": "The account holds years of data."})
    assert response.status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.due_at == states.extended_due_date(
        "gdpr", timezone.localtime(verified_request.received_at).date()
    )
    assert_done_by_staff(verified_request, "request.extended", staff_user)
    before = snapshot(verified_request)
    response = post(staff_client, verified_request, "extend", {"reason": "again"})
    assert_refused(response, verified_request, before, "already extended once")


# --- identity, distinct ids, projects ------------------------------------------------------------------
def test_record_identity_verifies_an_unverified_request(staff_client, staff_user, make_request, project):
    dsr = make_request()
    before = snapshot(dsr)
    assert_refused(post(staff_client, dsr, "verify-identity", {"how": ""}), dsr, before, "required")
    assert post(staff_client, dsr, "verify-identity", {"how": "video call with photo ID"}).status_code == 302
    dsr.refresh_from_db()
    assert (dsr.status, dsr.identity_verification, dsr.verified_by) == (
        states.VERIFIED,
        "video call with photo ID",
        staff_user,
    )
    before = snapshot(dsr)
    assert_refused(post(staff_client, dsr, "verify-identity", {"how": "again"}), dsr, before, "is verified")


def test_distinct_ids_replace_the_list_before_approval_only(staff_client, staff_user, verified_request, staff_actor):
    page = staff_client.get(action_url(verified_request, "distinct-ids")).content.decode()
    assert "user-1" in page  # the current list, to correct
    before = snapshot(verified_request)
    assert_refused(
        post(staff_client, verified_request, "distinct-ids", {"distinct_ids": "\n \n"}),
        verified_request,
        before,
        "This field is required.",
    )
    response = post(staff_client, verified_request, "distinct-ids", {"distinct_ids": " user-1 \nuser-9\nuser-9\n"})
    assert response.status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.distinct_ids == ["user-1", "user-9"]
    assert_done_by_staff(verified_request, "request.distinct_ids_changed", staff_user)
    services.request_approve(request=verified_request, actor=staff_actor)
    before = snapshot(verified_request)
    response = post(staff_client, verified_request, "distinct-ids", {"distinct_ids": "other"})
    assert_refused(response, verified_request, before, "can only change before approval")


def test_projects_can_be_chosen_before_approval(staff_client, staff_user, verified_request, project):
    second = MixpanelProject.objects.create(
        name="Second", mixpanel_project_id="2", project_token="t2", oauth_token="x", token_expires_on=date(2030, 1, 1)
    )
    assert post(staff_client, verified_request, "projects", {"projects": [second.pk]}).status_code == 302
    assert list(verified_request.projects.all()) == [second]
    assert_done_by_staff(verified_request, "request.projects_changed", staff_user)
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "projects", {}), verified_request, before, "required")


# --- retry, cancel, resend ------------------------------------------------------------------------------
def test_retry_sends_a_failed_request_back_to_approved(staff_client, staff_user, verified_request, staff_actor):
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "retry"), verified_request, before, "cannot retry")
    make_failed(verified_request, staff_actor)
    assert post(staff_client, verified_request, "retry").status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.status == states.APPROVED
    actions = list(
        AuditEvent.objects.filter(
            request_reference=verified_request.reference, actor_label=staff_user.username
        ).values_list("action", flat=True)
    )
    assert "request.retry" in actions


def test_cancel_closes_an_open_request_and_refuses_a_closed_one(staff_client, staff_user, verified_request):
    assert post(staff_client, verified_request, "cancel", {"reason": "asked by phone"}).status_code == 302
    verified_request.refresh_from_db()
    assert (verified_request.status, verified_request.closing_note) == (states.CANCELLED, "asked by phone")
    assert_done_by_staff(verified_request, "request.cancel", staff_user)
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "cancel"), verified_request, before, "cannot cancel")


def test_cancel_is_disabled_once_mixpanel_carried_out_the_deletion(
    staff_client, verified_request, project, staff_actor
):
    services.request_approve(request=verified_request, actor=staff_actor)
    services.request_start_processing(request=verified_request, task_count=1)
    task = MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["user-1"],
        tracking_id="t-1",
        remote_status="SUCCESS",
        state=TaskState.SUCCEEDED,
    )
    task.requests.add(verified_request)
    page = staff_client.get(change_url(verified_request)).content.decode()
    assert "Cannot cancel request: Mixpanel has already carried out this deletion" in page
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "cancel"), verified_request, before, "already carried out")


def test_resend_verification_issues_a_new_link_and_queues_the_email(staff_client, staff_user, make_request, project):
    dsr = make_request()
    old_nonce = dsr.link_nonce
    assert post(staff_client, dsr, "resend-verification").status_code == 302
    dsr.refresh_from_db()
    assert dsr.link_nonce != old_nonce
    event = last_event(dsr)
    assert_done_by_staff(dsr, "request.verification_resent", staff_user)
    assert SubjectNotification.objects.filter(request=dsr, event=f"resend:{event.pk}").exists()
    services.request_confirm_email(request=dsr)
    before = snapshot(dsr)
    assert_refused(post(staff_client, dsr, "resend-verification"), dsr, before, "only an unverified request")


# --- assign, note ---------------------------------------------------------------------------------------
def test_assign_and_unassign(staff_client, staff_user, other_staff, verified_request):
    page = staff_client.get(action_url(verified_request, "assign")).content.decode()
    assert "bob" in page and "alice" in page
    assert post(staff_client, verified_request, "assign", {"assignee": other_staff.pk}).status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.assignee == other_staff
    assert_done_by_staff(verified_request, "request.assigned", staff_user)
    assert post(staff_client, verified_request, "assign", {"assignee": ""}).status_code == 302
    verified_request.refresh_from_db()
    assert verified_request.assignee is None


def test_assigning_to_someone_outside_privacy_staff_is_refused(staff_client, verified_request, django_user_model):
    outsider = django_user_model.objects.create_user("eve", "eve@example.org", "x", is_staff=True)
    before = snapshot(verified_request)
    response = post(staff_client, verified_request, "assign", {"assignee": outsider.pk})
    assert_refused(response, verified_request, before, "Select a valid choice")


def test_a_note_is_kept_internal_and_its_text_stays_out_of_the_trail(staff_client, staff_user, verified_request):
    before = snapshot(verified_request)
    assert_refused(post(staff_client, verified_request, "note", {"note": ""}), verified_request, before, "required")
    assert post(staff_client, verified_request, "note", {"note": "Spoke to Pat; confirmed."}).status_code == 302
    note = RequestNote.objects.get(request=verified_request)
    assert (note.text, note.author) == ("Spoke to Pat; confirmed.", staff_user)
    event = last_event(verified_request)
    assert event.action == "request.note_added" and "Pat" not in str(event.payload)
    page = staff_client.get(change_url(verified_request)).content.decode()
    assert "Spoke to Pat; confirmed." in page


def test_an_unknown_action_or_request_is_404(staff_client, verified_request):
    assert staff_client.get(action_url(verified_request, "teleport")).status_code == 404
    missing = reverse("admin:gdpr_requests_datasubjectrequest_action", args=[999999, "approve"])
    assert staff_client.get(missing).status_code == 404


# --- the request page -----------------------------------------------------------------------------------
def test_request_page_shows_timeline_newest_first_tasks_export_and_buttons(
    staff_client, verified_request, project, staff_actor
):
    services.request_add_note(request=verified_request, note="first note", actor=staff_actor)
    services.request_approve(request=verified_request, actor=staff_actor)
    task = MixpanelTask.objects.create(
        project=project,
        kind="retrieval",
        compliance_type="GDPR",
        distinct_ids=["user-1"],
        tracking_id="trk-42",
        remote_status="STAGING",
        state=TaskState.SUBMITTED,
        attempts=2,
        last_error="HTTP 503 on status",
        requesting_user="owner@company.example",
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    task.requests.add(verified_request)
    SubjectExport.objects.create(
        request=verified_request,
        sha256="ab" * 32,
        size=2048,
        download_count=3,
        expires_at=timezone.now() + timedelta(days=30),
    )
    page = staff_client.get(change_url(verified_request)).content.decode()
    timeline = page[page.index('id="dsr-timeline"') :]
    decisions = timeline[timeline.index("Decisions") : timeline.index("Processing and messages")]
    assert (
        decisions.index("Approved by alice")
        < decisions.index("Internal note added by alice")
        < decisions.index("Request received")
    )
    for text in ("trk-42", "STAGING", "HTTP 503 on status", "owner@company.example", "ab" * 32, "2.0\xa0KB", ">3<"):
        assert text in page, text
    assert "person@example.org" in page  # staff see the requester
    assert 'name="_save"' not in page  # no raw edits
    assert "Put on hold" in page and action_url(verified_request, "hold") in page
    assert action_url(verified_request, "approve") not in page  # approved already: no approve button


def test_auditors_see_the_request_without_personal_data_or_buttons(auditor_client, verified_request, staff_actor):
    services.request_add_note(request=verified_request, note="internal", actor=staff_actor)
    page = auditor_client.get(change_url(verified_request)).content.decode()
    assert verified_request.reference in page and "Request received through the staff" in page
    assert "person@example.org" not in page and "Pat Person" not in page and "user-1" not in page
    assert "/act/" not in page


# --- bulk actions -----------------------------------------------------------------------------------------
def bulk(client, action, selected, **extra):
    data = {"action": action, "_selected_action": [d.pk for d in selected], **extra}
    return client.post(reverse("admin:gdpr_requests_datasubjectrequest_changelist"), data)


def test_bulk_approve_approves_what_it_can_and_names_what_it_cannot(staff_client, verified_request, make_request):
    unverified = make_request(email="other@example.org")
    response = bulk(staff_client, "approve_selected", [verified_request, unverified], index=0, apply="1", confirm="on")
    assert response.status_code == 302
    verified_request.refresh_from_db()
    unverified.refresh_from_db()
    assert (verified_request.status, unverified.status) == (states.APPROVED, states.UNVERIFIED)
    shown = messages_of(staff_client.get(reverse("admin:gdpr_requests_datasubjectrequest_changelist")))
    assert f"Approved 1 request: {verified_request.reference}." in shown
    assert any(unverified.reference in m and "cannot approve" in m for m in shown)


def test_bulk_reject_asks_for_one_reason_on_an_intermediate_page(staff_client, verified_request, make_request):
    second = make_request(email="second@example.org")
    page = bulk(staff_client, "reject_selected", [verified_request, second], index=0)
    assert page.status_code == 200
    assert verified_request.reference in page.content.decode() and 'name="apply"' in page.content.decode()
    before = snapshot(verified_request)
    response = bulk(staff_client, "reject_selected", [verified_request, second], apply="1", ground="other", reason="")
    assert response.status_code == 200 and "Explain the reason to the requester." in response.content.decode()
    assert snapshot(verified_request) == before
    response = bulk(
        staff_client, "reject_selected", [verified_request, second], apply="1", ground="other", reason="Duplicate."
    )
    assert response.status_code == 302
    assert set(DataSubjectRequest.objects.values_list("status", "rejection_reason")) == {
        (states.REJECTED, "Duplicate.")
    }


def test_bulk_assign(staff_client, other_staff, verified_request, make_request):
    second = make_request(email="second@example.org")
    page = bulk(staff_client, "assign_selected", [verified_request, second], index=0)
    assert page.status_code == 200 and "bob" in page.content.decode()
    response = bulk(staff_client, "assign_selected", [verified_request, second], apply="1", assignee=other_staff.pk)
    assert response.status_code == 302
    assert set(DataSubjectRequest.objects.values_list("assignee", flat=True)) == {other_staff.pk}


def test_the_list_offers_no_delete_action(staff_client, verified_request):
    page = staff_client.get(reverse("admin:gdpr_requests_datasubjectrequest_changelist")).content.decode()
    assert "delete_selected" not in page
    assert "approve_selected" in page and "reject_selected" in page


# --- intake -----------------------------------------------------------------------------------------------
def intake(client, **overrides):
    data = {
        "kind": "access",
        "regulation": "gdpr",
        "email": "Letter.Writer@Example.org",
        "name": "Lee Writer",
        "received_on": (timezone.localdate() - timedelta(days=3)).isoformat(),
        "distinct_ids": "lw-1\nlw-2",
        "message": "By post.",
        "identity_verification": "",
        **overrides,
    }
    return client.post(reverse("admin:gdpr_requests_datasubjectrequest_add"), data)


def test_staff_enter_a_request_received_by_post(staff_client, staff_user, project):
    response = intake(staff_client)
    assert response.status_code == 302
    dsr = DataSubjectRequest.objects.get()
    assert response["Location"] == change_url(dsr)
    assert (dsr.channel, dsr.status, dsr.requester_email, dsr.distinct_ids) == (
        "staff",
        states.UNVERIFIED,
        "Letter.Writer@Example.org",  # as typed (lookups ask for it and lower-cased)
        ["lw-1", "lw-2"],
    )
    assert timezone.localtime(dsr.received_at).date() == timezone.localdate() - timedelta(days=3)
    assert dsr.due_at == states.due_date("gdpr", timezone.localdate() - timedelta(days=3))
    assert SubjectNotification.objects.filter(request=dsr, event="created").exists()  # the confirmation email
    assert_done_by_staff(dsr, "request.created", staff_user)


def test_an_identity_check_at_intake_starts_the_request_verified(staff_client, project):
    assert intake(staff_client, identity_verification="known customer, phoned back").status_code == 302
    dsr = DataSubjectRequest.objects.get()
    assert dsr.status == states.VERIFIED
    assert not SubjectNotification.objects.filter(request=dsr, event="created").exists()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"email": "not-an-email"}, "Enter a valid email address."),
        ({"received_on": (date.today() + timedelta(days=3)).isoformat()}, "The received date is in the future."),
        ({"distinct_ids": "x" * 300}, "longer than 255"),
        ({"kind": "rectification"}, "Select a valid choice"),
    ],
)
def test_bad_intake_is_refused_with_a_message(staff_client, project, overrides, error):
    response = intake(staff_client, **overrides)
    assert response.status_code == 200
    assert error in " ".join(messages_of(response)) + response.content.decode()
    assert not DataSubjectRequest.objects.exists()


def test_the_intake_form_starts_with_today_in_the_date_input(staff_client, project):
    page = staff_client.get(reverse("admin:gdpr_requests_datasubjectrequest_add")).content.decode()
    field = re.search(r'<input[^>]*name="received_on"[^>]*>', page).group(0)
    assert f'value="{timezone.localdate().isoformat()}"' in field
