"""The status page (public timeline) and withdrawal."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from gdpr_requests.models import AuditEvent, MixpanelTask, TaskRequestLink
from gdpr_requests.requests import services, states, tokens

pytestmark = pytest.mark.django_db


def status_path(dsr) -> str:
    return reverse("portal:status", args=[tokens.make_token(dsr, tokens.STATUS)])


def withdraw_path(dsr) -> str:
    return reverse("portal:withdraw", args=[tokens.make_token(dsr, tokens.STATUS)])


def titles(response) -> list[tuple[str, str]]:
    return [(step.title, step.state) for step in response.context["steps"]]


def processing(make_request, staff_actor, **kwargs):
    dsr = make_request(**kwargs)
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    return dsr


def test_the_status_page_is_private_and_shows_the_due_date(client, make_request):
    dsr = make_request()
    response = client.get(status_path(dsr))
    assert response.status_code == 200
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert dsr.reference in html
    assert f"{dsr.due_at.day} {dsr.due_at:%B %Y}" in html
    assert "person@example.org" not in html  # the page never shows the address


def test_the_timeline_follows_the_request_through_its_life(client, make_request, staff_actor):
    dsr = make_request()
    assert titles(client.get(status_path(dsr))) == [
        ("Request received", "done"),
        ("Confirm your email address", "current"),
        ("In review", "upcoming"),
        ("In progress", "upcoming"),
        ("Completed", "upcoming"),
    ]
    services.request_confirm_email(request=dsr)
    assert titles(client.get(status_path(dsr)))[1:3] == [("Email address confirmed", "done"), ("In review", "current")]
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    response = client.get(status_path(dsr))
    assert titles(response)[2:] == [
        ("Reviewed by our privacy team", "done"),
        ("In progress", "current"),
        ("Completed", "upcoming"),
    ]
    assert response.context["public_status"] == "In progress"
    services.request_complete(request=dsr)
    response = client.get(status_path(dsr))
    assert titles(response)[-2:] == [("In progress", "done"), ("Completed", "done")]
    assert response.context["public_status"] == "Completed"
    assert "Withdraw my request" not in response.content.decode()


def test_a_rejection_shows_its_reason(client, make_request, staff_actor):
    dsr = make_request()
    services.request_reject(request=dsr, reason="We hold no account for this address.", actor=staff_actor)
    response = client.get(status_path(dsr))
    assert titles(response) == [("Request received", "done"), ("Rejected", "problem")]
    assert "We hold no account for this address." in response.content.decode()


def test_an_extension_shows_its_reason_and_new_date(client, make_request, staff_actor):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    dsr = services.request_extend(request=dsr, reason="Your data spans several systems.", actor=staff_actor)
    response = client.get(status_path(dsr))
    (step,) = [s for s in response.context["steps"] if s.title == "Deadline extended"]
    assert "Your data spans several systems." in step.detail
    assert f"{dsr.due_at.day} {dsr.due_at:%B %Y}" in step.detail
    assert "extended" in response.content.decode()


def test_the_subject_can_withdraw_an_open_request(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    page = client.get(status_path(dsr))
    assert "Withdraw my request" in page.content.decode()
    confirm = client.get(withdraw_path(dsr))
    assert confirm.status_code == 200 and "Yes, withdraw my request" in confirm.content.decode()
    dsr.refresh_from_db()
    assert dsr.status == states.VERIFIED  # the GET only asks
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(withdraw_path(dsr))
    assert response.status_code == 302 and response["Location"].endswith("?withdrawn=1")
    dsr.refresh_from_db()
    assert dsr.status == states.CANCELLED
    assert AuditEvent.objects.get(request_reference=dsr.reference, action="request.cancel").actor_type == "subject"
    (message,) = mail.outbox
    assert "withdrawn" in message.subject and "As you asked" in message.body
    assert titles(client.get(response["Location"]))[-1] == ("Withdrawn", "problem")


def test_a_closed_request_cannot_be_withdrawn(client, make_request, staff_actor):
    dsr = processing(make_request, staff_actor)
    services.request_complete(request=dsr)
    response = client.post(withdraw_path(dsr))
    assert response.status_code == 409
    assert "can no longer be withdrawn" in response.content.decode()
    dsr.refresh_from_db()
    assert dsr.status == states.COMPLETED


def test_a_deletion_already_running_at_mixpanel_cannot_be_withdrawn(client, make_request, staff_actor, project):
    dsr = processing(make_request, staff_actor, kind="deletion")
    task = MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["user-1"],
        tracking_id="trk-1",
        state="submitted",
        remote_status="STARTED",
    )
    TaskRequestLink.objects.create(task=task, request=dsr)
    page = client.get(status_path(dsr))
    assert "Withdraw my request" not in page.content.decode()
    response = client.post(withdraw_path(dsr))
    assert response.status_code == 409
    dsr.refresh_from_db()
    assert dsr.status == states.PROCESSING
    assert not AuditEvent.objects.filter(request_reference=dsr.reference, action="request.cancel").exists()


def test_a_withdrawal_blocker_refusal_is_shown_as_a_friendly_message(client, make_request):
    dsr = make_request()
    calls = []

    def too_late(request):
        calls.append(request.pk)
        return "Your data is being deleted right now, so it is too late to withdraw."

    services.register_withdrawal_blocker(too_late)
    try:
        response = client.post(withdraw_path(dsr))
    finally:
        services._withdrawal_blockers.remove(too_late)
    # The rule runs once for the POST (in request_cancel) and once to show the page again afterwards.
    assert len(calls) == 2
    assert response.status_code == 409
    assert "it is too late to withdraw" in response.content.decode()
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED


def test_a_forged_status_link_gets_a_clear_page(client, db):
    response = client.get("/status/not-a-token/")
    assert response.status_code == 404
    assert "This link does not work" in response.content.decode()
    assert client.post("/status/not-a-token/withdraw/").status_code == 404
