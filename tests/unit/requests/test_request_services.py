from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gdpr_requests.crypto import email_hash
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import services, states

pytestmark = pytest.mark.django_db


def test_it_creates_a_request_with_reference_hash_deadline_and_audit_event(make_request, project):
    dsr = make_request(email="  Person@Example.ORG ", received_at=datetime(2026, 1, 31, 12, tzinfo=UTC))
    assert dsr.reference.startswith("DSR-") and len(dsr.reference) == 13
    assert dsr.requester_email == "Person@Example.ORG"  # as typed, trimmed: profile queries ask for it and lower-cased
    assert dsr.email_hash == email_hash("PERSON@example.org")
    assert dsr.due_at == date(2026, 2, 28)
    assert dsr.status == states.UNVERIFIED
    assert list(dsr.projects.all()) == [project]
    event = AuditEvent.objects.get(request_reference=dsr.reference)
    assert event.action == "request.created"
    assert "person@example.org" not in str(event.payload)


def test_references_use_every_symbol_of_the_alphabet_in_every_position():
    assert len(services.REFERENCE_ALPHABET) == len(set(services.REFERENCE_ALPHABET)) == 32
    seen: list[set[str]] = [set() for _ in range(8)]
    for _ in range(3200):  # a symbol missing from a position by chance: about 32 * e**-100
        reference = services.new_reference()
        assert reference[:4] == "DSR-" and reference[8] == "-" and len(reference) == 13
        for position, symbol in enumerate(reference[4:8] + reference[9:]):
            seen[position].add(symbol)
    assert all(symbols == set(services.REFERENCE_ALPHABET) for symbols in seen)


def test_staff_entered_request_with_identity_check_starts_verified(make_request):
    dsr = make_request(verified_by_staff="passport seen at the front desk", channel="staff")
    assert dsr.status == states.VERIFIED
    assert dsr.identity_verification == "passport seen at the front desk"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"email": "not-an-email"}, "valid email"),
        ({"kind": "rectification"}, "Unknown request kind"),
        ({"regulation": "lgpd"}, "Unknown regulation"),
        ({"distinct_ids": ["x" * 300]}, "longer than"),
        ({"received_at": datetime(2999, 1, 1, tzinfo=UTC)}, "future"),
    ],
)
def test_bad_intake_is_refused_with_a_clear_message(make_request, overrides, message):
    with pytest.raises(services.ServiceError, match=message):
        make_request(**overrides)
    assert not DataSubjectRequest.objects.exists()


def test_full_happy_path_moves_through_every_state_with_one_event_each(make_request, staff_actor):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    services.request_complete(request=dsr)
    dsr.refresh_from_db()
    assert dsr.status == states.COMPLETED
    assert dsr.closed_at is not None
    actions = list(AuditEvent.objects.filter(request_reference=dsr.reference).values_list("action", flat=True))
    assert actions == [
        "request.created",
        "request.verify",
        "request.approve",
        "request.start_processing",
        "request.complete",
    ]


def test_a_refused_transition_names_the_current_state_and_writes_nothing(make_request, staff_actor):
    dsr = make_request()
    before = AuditEvent.objects.count()
    with pytest.raises(states.TransitionNotAllowed, match="unverified"):
        services.request_approve(request=dsr, actor=staff_actor)
    assert AuditEvent.objects.count() == before
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED


def test_a_stale_object_cannot_move_a_request_someone_else_moved(make_request, staff_actor):
    dsr = make_request()
    stale = DataSubjectRequest.objects.get(pk=dsr.pk)
    services.request_reject(request=dsr, reason="duplicate of an earlier request", actor=staff_actor)
    with pytest.raises(states.TransitionNotAllowed, match="rejected"):
        services.request_confirm_email(request=stale)


def test_approval_needs_a_distinct_id(make_request, staff_actor):
    dsr = make_request(distinct_ids=[])
    services.request_confirm_email(request=dsr)
    assert "it has no Mixpanel distinct id yet" in services.approval_blockers(dsr)
    with pytest.raises(services.ServiceError, match="no Mixpanel distinct id"):
        services.request_approve(request=dsr, actor=staff_actor)
    services.request_set_distinct_ids(request=dsr, distinct_ids=["abc", " abc ", "def"], actor=staff_actor)
    assert dsr.distinct_ids == ["abc", "def"]
    services.request_approve(request=dsr, actor=staff_actor)
    assert dsr.status == states.APPROVED


def test_reject_and_hold_need_a_reason(make_request, staff_actor):
    dsr = make_request()
    with pytest.raises(services.ServiceError, match="reason"):
        services.request_reject(request=dsr, reason="  ", actor=staff_actor)
    with pytest.raises(services.ServiceError, match="reason"):
        services.request_hold(request=dsr, reason="", actor=staff_actor)


def test_hold_and_resume_return_to_the_previous_state(make_request, staff_actor):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    services.request_hold(request=dsr, reason="waiting for legal", actor=staff_actor)
    assert dsr.status == states.ON_HOLD
    services.request_resume(request=dsr, actor=staff_actor)
    dsr.refresh_from_db()
    assert dsr.status == states.VERIFIED
    assert dsr.hold_reason == ""


def test_reject_is_refused_while_processing_and_writes_nothing(make_request, staff_actor):
    # Mixpanel has been asked to act: rejecting now would tell the requester "no" while their data goes.
    dsr = make_request(verified_by_staff="passport seen", channel="staff")
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    events_before = AuditEvent.objects.count()
    with pytest.raises(states.TransitionNotAllowed, match="processing"):
        services.request_reject(request=dsr, reason="changed our mind", actor=staff_actor)
    dsr.refresh_from_db()
    assert dsr.status == states.PROCESSING
    assert dsr.rejection_reason == ""
    assert dsr.closed_at is None
    assert AuditEvent.objects.count() == events_before


def test_resume_keeps_its_note_as_an_internal_note_and_audits_only_its_length(make_request, staff_actor):
    dsr = make_request()
    services.request_hold(request=dsr, reason="waiting for legal", actor=staff_actor)
    services.request_resume(request=dsr, actor=staff_actor, note="  Legal said yes (Pat's lawyer called)  ")
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED
    note = dsr.notes.get()
    assert note.text == "Legal said yes (Pat's lawyer called)"
    assert note.author_id == int(staff_actor.id)
    event = AuditEvent.objects.get(request_reference=dsr.reference, action="request.resume")
    assert event.payload == {"from": "on_hold", "to": "unverified", "note_id": note.pk, "note_length": len(note.text)}


def test_resume_without_a_note_writes_no_note(make_request, staff_actor):
    dsr = make_request()
    services.request_hold(request=dsr, reason="waiting for legal", actor=staff_actor)
    services.request_resume(request=dsr, actor=staff_actor, note="   ")
    assert not dsr.notes.exists()
    event = AuditEvent.objects.get(request_reference=dsr.reference, action="request.resume")
    assert event.payload == {"from": "on_hold", "to": "unverified"}


def test_a_refused_resume_keeps_no_note(make_request, staff_actor):
    dsr = make_request()
    events_before = AuditEvent.objects.count()
    with pytest.raises(states.TransitionNotAllowed):
        services.request_resume(request=dsr, actor=staff_actor, note="should not stay")
    assert not dsr.notes.exists()
    assert AuditEvent.objects.count() == events_before


def test_extension_moves_the_due_date_once(make_request, staff_actor):
    dsr = make_request(regulation="ccpa", received_at=datetime(2026, 1, 1, 9, tzinfo=UTC))
    assert dsr.due_at == date(2026, 2, 15)
    services.request_extend(request=dsr, reason="complex request", actor=staff_actor)
    assert dsr.due_at == date(2026, 4, 1)
    assert dsr.original_due_at == date(2026, 2, 15)
    with pytest.raises(services.ServiceError, match="already extended"):
        services.request_extend(request=dsr, reason="again", actor=staff_actor)
    event = AuditEvent.objects.get(request_reference=dsr.reference, action="request.extended")
    assert event.payload == {"from_due_at": "2026-02-15", "to_due_at": "2026-04-01"}


def test_closed_requests_cannot_be_extended(make_request, staff_actor):
    dsr = make_request()
    services.request_cancel(request=dsr, actor=staff_actor)
    with pytest.raises(services.ServiceError, match="closed"):
        services.request_extend(request=dsr, reason="late", actor=staff_actor)


def test_notes_are_kept_out_of_the_audit_payload(make_request, staff_actor):
    dsr = make_request()
    note = services.request_add_note(request=dsr, note="Called Pat on +44 1234", actor=staff_actor)
    event = AuditEvent.objects.get(action="request.note_added")
    assert event.payload == {"note_id": note.pk, "length": len(note.text)}


def test_audit_payloads_refuse_personal_data_keys(db, system_actor):
    from gdpr_requests.audit.chain import audit_record

    with pytest.raises(ValueError, match="email"):
        audit_record(action="x", actor=system_actor, payload={"nested": {"email": "a@b.c"}})
