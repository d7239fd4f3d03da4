"""The approve page says what approving will do, asks for an explicit confirmation, and the bulk action shows the
same page before it approves anything (set-based, in a fixed number of statements)."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import services, states
from gdpr_requests.requests.approvals import request_approve_many
from tests.unit.staff.admin_support import (  # noqa: F401
    action_url,
    change_url,
    messages_of,
    staff_client,
    verified_request,
)

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:gdpr_requests_datasubjectrequest_changelist"


def bulk(client, selected, **extra):
    data = {"action": "approve_selected", "_selected_action": [d.pk for d in selected], "index": 0, **extra}
    return client.post(reverse(CHANGELIST), data)


def status_of(dsr):
    return DataSubjectRequest.objects.values_list("status", flat=True).get(pk=dsr.pk)


def test_the_approve_page_lists_what_will_happen_and_the_warnings(staff_client, verified_request, make_request):
    make_request(verified_by_staff="id card", channel="staff")  # same person, same kind: a duplicate
    page = staff_client.get(action_url(verified_request, "approve")).content.decode()
    for shown in ("Deletion", "GDPR", "Main app", verified_request.due_at.strftime("%Y"), "Possible duplicate"):
        assert shown in page, shown
    assert 'name="confirm"' in page
    assert "Back to the request" in page and ">Cancel<" not in page


def test_an_email_only_verification_is_flagged(staff_client, make_request):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    page = staff_client.get(action_url(dsr, "approve")).content.decode()
    assert "Identity checked only by email confirmation." in page


def test_approving_without_ticking_the_box_approves_nothing(staff_client, verified_request):
    response = staff_client.post(action_url(verified_request, "approve"), {})
    assert response.status_code == 200
    assert "Tick the box to confirm the approval." in response.content.decode()
    assert status_of(verified_request) == states.VERIFIED


def test_the_request_page_says_cancel_request_never_plain_cancel(staff_client, verified_request):
    page = staff_client.get(change_url(verified_request)).content.decode()
    assert ">Cancel request<" in page and ">Cancel<" not in page


def test_bulk_approve_shows_the_confirmation_page_first(staff_client, verified_request, make_request):
    access = make_request(kind="access", regulation="ccpa", email="b@example.org", verified_by_staff="id card")
    page = bulk(staff_client, [verified_request, access])
    assert page.status_code == 200
    body = page.content.decode()
    assert verified_request.reference in body and access.reference in body and "CCPA" in body
    assert "Approve 2 requests" in body and "Back to the list" in body
    assert (status_of(verified_request), status_of(access)) == (states.VERIFIED, states.VERIFIED)

    unconfirmed = bulk(staff_client, [verified_request, access], apply="1")
    assert unconfirmed.status_code == 200 and status_of(access) == states.VERIFIED

    done = bulk(staff_client, [verified_request, access], apply="1", confirm="on")
    assert done.status_code == 302
    assert (status_of(verified_request), status_of(access)) == (states.APPROVED, states.APPROVED)
    events = AuditEvent.objects.filter(action="request.approve").values_list("request_reference", "actor_label")
    assert sorted(events) == sorted([(verified_request.reference, "alice"), (access.reference, "alice")])


def test_bulk_approval_costs_the_same_statements_for_3_or_30_requests(make_request, staff_actor):
    def statements(n: int) -> int:
        pks = [
            make_request(email=f"p{n}-{i}@example.org", verified_by_staff="id card", channel="staff").pk
            for i in range(n)
        ]
        with CaptureQueriesContext(connection) as queries:
            outcome = request_approve_many(request_pks=pks, actor=staff_actor)
        assert len(outcome.approved) == n
        return len(queries)

    assert statements(3) == statements(30)


def test_bulk_approval_routes_two_person_deletions_through_the_approval_record(project, make_request, staff_user):
    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    deletion = make_request(verified_by_staff="id card", channel="staff")
    access = make_request(kind="access", email="a@example.org", verified_by_staff="id card", channel="staff")
    outcome = request_approve_many(request_pks=[deletion.pk, access.pk], actor=Actor.staff(staff_user))
    assert outcome.approved == [access.reference] and outcome.awaiting_second == [deletion.reference]
    assert status_of(deletion) == states.VERIFIED


def test_select_all_keeps_the_filters_and_stays_small(staff_client, make_request):
    made = [make_request(email=f"s{i}@example.org", verified_by_staff="id card", channel="staff") for i in range(3)]
    url = reverse(CHANGELIST) + "?status__exact=verified"
    data = {"action": "approve_selected", "_selected_action": [made[0].pk], "index": 0, "select_across": "1"}
    page = staff_client.post(url, data).content.decode()
    assert 'name="select_across" value="1"' in page and "status__exact=verified" in page
    assert all(d.reference in page for d in made)  # the confirmation lists every request the filter selects
    staff_client.post(url, {**data, "apply": "1", "confirm": "on"})
    assert {status_of(d) for d in made} == {states.APPROVED}


def test_a_bulk_approval_plans_in_chunk_messages_and_records_its_webhooks_in_its_transaction(
    make_request, staff_actor, monkeypatch, django_capture_on_commit_callbacks
):
    """The approval's webhook deliveries are written inside its transaction (a set, not a query per request), and
    the pipeline is told once per chunk of requests, not once per request."""
    from celery.signals import before_task_publish

    from gdpr_requests.models import WebhookDelivery
    from gdpr_requests.pipeline import enqueue
    from gdpr_requests.webhooks.services import endpoint_create

    monkeypatch.setattr(enqueue, "PLAN_MESSAGE_CHUNK", 10)
    endpoint_create(url="http://127.0.0.1:9/hook", events=["request.approved"], actor=staff_actor)
    published: list[str] = []

    def count(sender=None, **_kwargs):
        published.append(sender)

    before_task_publish.connect(count)
    try:

        def approve(n: int) -> int:
            pks = [
                make_request(email=f"w{n}-{i}@example.org", verified_by_staff="id card", channel="staff").pk
                for i in range(n)
            ]
            published.clear()
            with CaptureQueriesContext(connection) as queries:
                with django_capture_on_commit_callbacks(execute=True) as callbacks:
                    outcome = request_approve_many(request_pks=pks, actor=staff_actor)
                # Recorded before the commit: the deliveries exist once the transaction's callbacks are queued.
                assert len(callbacks) >= 1
            assert len(outcome.approved) == n
            return len(queries)

        assert approve(3) == approve(25)
    finally:
        before_task_publish.disconnect(count)
    assert published.count("gdpr_requests.tasks.plan_requests") == 3  # 25 requests, 10 per message
    assert "gdpr_requests.tasks.plan_request" not in published
    assert WebhookDelivery.objects.filter(event_type="request.approved").count() == 28


def test_requests_without_an_email_are_not_called_duplicates_of_each_other(staff_client, make_request):
    """Cohort members without an email share an empty hash: that is no sign of the same person."""
    made = []
    for n in range(2):
        dsr = make_request(email=f"c{n}@example.org", verified_by_staff="product login", channel="staff")
        DataSubjectRequest.objects.filter(pk=dsr.pk).update(requester_email="", email_hash="")
        made.append(dsr)
    page = bulk(staff_client, made).content.decode()
    assert made[0].reference in page and made[1].reference in page
    assert "Possible duplicate" not in page
