"""The cohort sync webhook: Mixpanel's payloads in, requests and exact answers out, nothing stored on refusal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import AuditEvent, CohortIntake, CohortMember, CohortSync, DataSubjectRequest
from gdpr_requests.requests import states
from tests.unit.cohorts.support import make_intake, member, payload, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def intake_and_password(project):
    return make_intake(project)


def _raw(body: dict) -> bytes:
    # json.dumps escapes a lone surrogate as "\\ud800" (ensure_ascii), as a JSON encoder on Mixpanel's side may.
    return json.dumps(body).encode()


def _with(body: dict, **parameters) -> dict:
    return {**body, "parameters": {**body["parameters"], **parameters}}


def _counts() -> tuple[int, int, int, int]:
    return (
        DataSubjectRequest.objects.count(),
        CohortSync.objects.count(),
        CohortMember.objects.count(),
        AuditEvent.objects.count(),
    )


def test_add_members_creates_one_verified_request_per_member(client, intake_and_password, project):
    intake, password = intake_and_password
    response = post(client, intake, password, payload([member(1), member(2), member(3)]))
    assert response.status_code == 200
    assert response.json() == {"action": "add_members", "status": "success"}
    requests = list(DataSubjectRequest.objects.order_by("pk"))
    assert [r.distinct_ids for r in requests] == [["distinct-1"], ["distinct-2"], ["distinct-3"]]
    first = requests[0]
    assert (first.kind, first.regulation, first.channel, first.status) == ("deletion", "gdpr", "cohort", "verified")
    assert first.requester_email == "user1@example.org"
    assert first.requester_name == "User Number 1"
    assert first.identity_verification == "signed-in user of the product, via cohort Requested deletion"
    assert list(first.projects.all()) == [project]
    sync = CohortSync.objects.get()
    assert (sync.members_received, sync.requests_created, sync.duplicates_skipped, sync.refused) == (3, 3, 0, 0)
    # One append for the message: three request.created events and the sync's own, counts only.
    event = AuditEvent.objects.get(action="cohort.sync_received")
    assert event.actor_label == "cohort:Requested deletion"
    assert event.payload["requests_created"] == 3
    assert "distinct-1" not in json.dumps(event.payload)
    assert AuditEvent.objects.filter(action="request.created").count() == 3
    assert verify_database().ok
    # Verified at intake: nobody is asked to confirm.
    assert mail.outbox == []


def test_members_action_is_taken_like_add_members_and_echoed(client, intake_and_password):
    intake, password = intake_and_password
    response = post(client, intake, password, payload([member(1)], action="members"))
    assert response.json() == {"action": "members", "status": "success"}
    assert DataSubjectRequest.objects.count() == 1


def test_remove_members_creates_nothing_and_is_counted_in_the_audit(client, intake_and_password):
    intake, password = intake_and_password
    response = post(client, intake, password, payload([member(1), member(2)], action="remove_members"))
    assert response.json() == {"action": "remove_members", "status": "success"}
    assert DataSubjectRequest.objects.count() == 0
    sync = CohortSync.objects.get()
    assert (sync.action, sync.members_received, sync.requests_created) == ("remove_members", 2, 0)
    event = AuditEvent.objects.get(action="cohort.sync_received")
    assert event.payload["sync_action"] == "remove_members"
    assert event.payload["members_received"] == 2


def test_several_pages_of_one_session_each_create_their_members(client, intake_and_password):
    intake, password = intake_and_password
    for page in (1, 2, 3):
        members = [member(page * 100 + n) for n in range(4)]
        response = post(client, intake, password, payload(members, page=page, pages=3, session="s-42"))
        assert response.json() == {"action": "add_members", "status": "success"}
    assert DataSubjectRequest.objects.count() == 12
    assert list(CohortSync.objects.order_by("page_count").values_list("page_count", "requests_created")) == [
        (1, 4),
        (2, 4),
        (3, 4),
    ]


def test_extra_properties_missing_email_and_unicode_names_are_taken(client, intake_and_password):
    intake, password = intake_and_password
    members = [
        member(1, phone_number="+44 20 7946 0000", plan="pro", **{"$city": "Zürich"}),
        {"mixpanel_distinct_id": "no-email-user", "first_name": "Zoë", "last_name": "Ørsted-Łukasz 李"},
        {"mixpanel_distinct_id": "null-email", "email": None, "first_name": None},
        member(4, email="not an address"),
    ]
    response = post(client, intake, password, payload(members))
    assert response.json()["status"] == "success"
    rows = {r.distinct_ids[0]: r for r in DataSubjectRequest.objects.all()}
    assert set(rows) == {"distinct-1", "no-email-user", "null-email", "distinct-4"}
    assert rows["no-email-user"].requester_name == "Zoë Ørsted-Łukasz 李"
    assert rows["no-email-user"].requester_email == ""
    assert rows["no-email-user"].email_hash == ""
    assert rows["distinct-4"].requester_email == ""  # an invalid address is not kept
    assert all(r.status == states.VERIFIED for r in rows.values())


def test_names_and_emails_that_are_not_utf8_text_are_dropped_and_the_member_still_taken(client, intake_and_password):
    # A member's name and email are profile properties anyone could have set: a bad character in one must not
    # pause the whole sync (a 400 does). The name loses the character, the email is not an address.
    intake, password = intake_and_password
    members = [
        member(1, first_name="Ann\ud800e", last_name="\udfffLee\x00"),
        member(2, email="user2@exam\ud800ple.org"),
        member(3, email='"a\x01b"@example.org'),
    ]
    response = post(client, intake, password, None, raw=_raw(payload(members)))
    assert response.json() == {"action": "add_members", "status": "success"}
    rows = {r.distinct_ids[0]: r for r in DataSubjectRequest.objects.all()}
    assert rows["distinct-1"].requester_name == "Anne Lee"
    assert (rows["distinct-2"].requester_email, rows["distinct-2"].email_hash) == ("", "")
    assert rows["distinct-3"].requester_email == ""


def test_email_identity_starts_unverified_asks_to_confirm_and_refuses_members_without_email(
    client, project, django_capture_on_commit_callbacks, celery_eager
):
    intake, password = make_intake(project, name="Access in app", kind="access", identity="email")
    members = [member(1), {"mixpanel_distinct_id": "no-email"}, member(3)]
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, intake, password, payload(members))
    assert response.json() == {"action": "add_members", "status": "success"}
    rows = list(DataSubjectRequest.objects.order_by("pk"))
    assert [r.distinct_ids for r in rows] == [["distinct-1"], ["distinct-3"]]
    assert all(r.status == states.UNVERIFIED and r.kind == "access" for r in rows)
    sync = CohortSync.objects.get()
    assert (sync.requests_created, sync.refused) == (2, 1)
    assert sorted(m.to[0] for m in mail.outbox) == ["user1@example.org", "user3@example.org"]


def test_the_same_page_delivered_again_creates_nothing_and_answers_the_same(client, intake_and_password):
    intake, password = intake_and_password
    body = payload([member(1), member(2)])
    first = post(client, intake, password, body)
    before = DataSubjectRequest.objects.count()
    again = post(client, intake, password, body)
    assert again.status_code == 200
    assert again.json() == first.json() == {"action": "add_members", "status": "success"}
    assert DataSubjectRequest.objects.count() == before == 2
    sync = CohortSync.objects.get()
    assert sync.redeliveries == 1
    assert AuditEvent.objects.filter(action="cohort.sync_repeated").count() == 1


def test_the_same_members_in_a_new_session_are_duplicates_while_their_request_is_open(client, intake_and_password):
    intake, password = intake_and_password
    post(client, intake, password, payload([member(1), member(2)], session="a"))
    response = post(client, intake, password, payload([member(2), member(3), member(3)], session="b"))
    assert response.json()["status"] == "success"
    assert sorted(r.distinct_ids[0] for r in DataSubjectRequest.objects.all()) == [
        "distinct-1",
        "distinct-2",
        "distinct-3",
    ]
    second = CohortSync.objects.get(session_id="b")
    assert (second.members_received, second.requests_created, second.duplicates_skipped) == (3, 1, 2)


def test_a_member_is_taken_again_after_the_repeat_window_but_not_within_it(
    client, intake_and_password, settings, system_actor
):
    from gdpr_requests.requests.services import request_complete, request_start_processing

    settings.COHORT_REPEAT_DAYS = 30
    intake, password = intake_and_password
    post(client, intake, password, payload([member(1)], session="a"))
    dsr = DataSubjectRequest.objects.get()
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(status=states.APPROVED)
    request_start_processing(request=dsr, task_count=1)
    request_complete(request=dsr)
    post(client, intake, password, payload([member(1)], session="b"))
    assert DataSubjectRequest.objects.count() == 1  # completed 0 days ago
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(closed_at=timezone.now() - timedelta(days=31))
    post(client, intake, password, payload([member(1)], session="c"))
    assert DataSubjectRequest.objects.count() == 2


def test_another_intakes_request_does_not_count_as_a_duplicate(client, project):
    first, first_password = make_intake(project, name="One")
    second, second_password = make_intake(project, name="Two")
    post(client, first, first_password, payload([member(1)]))
    post(client, second, second_password, payload([member(1)]))
    assert DataSubjectRequest.objects.count() == 2


@pytest.mark.parametrize(
    "credentials",
    [("wrong-user", None), (None, "wrong-password"), ("", "")],
    ids=["bad-username", "bad-password", "empty"],
)
def test_bad_credentials_get_401_without_saying_which_part_and_are_counted(client, intake_and_password, credentials):
    intake, password = intake_and_password
    username, bad_password = credentials
    before = _counts()
    response = post(
        client,
        intake,
        bad_password if bad_password is not None else password,
        payload([member(1)]),
        username=username if username is not None else intake.username,
    )
    assert response.status_code == 401
    assert response.json() == {
        "action": None,
        "status": "failure",
        "error": {"message": "Authentication failed.", "code": 401},
    }
    assert _counts() == before
    intake.refresh_from_db()
    assert intake.auth_failure_count == 1
    assert intake.last_auth_failure_at is not None


@pytest.mark.parametrize(
    "header",
    ["", "Bearer abc", "Basic !!!notbase64", "Basic " + "bm9jb2xvbg=="],  # the last decodes to "nocolon"
)
def test_missing_or_unreadable_authorization_gets_401(client, intake_and_password, header):
    intake, _password = intake_and_password
    response = client.post(
        f"/integrations/mixpanel/cohorts/{intake.public_id}/",
        data=json.dumps(payload([member(1)])),
        content_type="application/json",
        HTTP_AUTHORIZATION=header,
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert DataSubjectRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "The body is not JSON."),
        (b"\xff\xfe", "The body is not JSON."),
        (b"[]", "The body is not a JSON object."),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"action": "delete_everyone", "parameters": {}}', "action must be one of"),
        (b'{"action": "add_members"}', "parameters is missing"),
        (
            json.dumps({**payload([member(1)]), "parameters": {"mixpanel_project_id": "12345"}}).encode(),
            "mixpanel_session_id is missing",
        ),
        (json.dumps(payload([member(1)], page=0)).encode(), "page_count must be"),
        (json.dumps(payload([member(1)], page=3, pages=2)).encode(), "greater than"),
        (json.dumps(payload(["distinct-1"])).encode(), "members[0] is not an object"),
        (json.dumps(payload([{"email": "a@example.org"}])).encode(), "members[0] has no mixpanel_distinct_id"),
        (json.dumps(payload([member(1, mixpanel_distinct_id="x" * 256)])).encode(), "longer than 255"),
        (json.dumps(payload([member(n) for n in range(1001)])).encode(), "More than 1000 members"),
        # A lone surrogate is valid JSON ("\\ud800") but no UTF-8 text: it cannot be hashed or stored.
        (_raw(payload([member(1, mixpanel_distinct_id="id-\ud800")])), "members[0].mixpanel_distinct_id"),
        (_raw(payload([member(1)], session="s-\ud800")), "parameters.mixpanel_session_id"),
        (_raw(_with(payload([member(1)]), mixpanel_cohort_id="c-\udfff")), "parameters.mixpanel_cohort_id"),
        (_raw(_with(payload([member(1)]), mixpanel_project_id="12345\ud800")), "parameters.mixpanel_project_id"),
        # PostgreSQL refuses a NUL in text (DataError); other control characters are no id either.
        (_raw(payload([member(1, mixpanel_distinct_id="id-\x00")])), "members[0].mixpanel_distinct_id"),
        (_raw(payload([member(1)], session="s-\x00")), "parameters.mixpanel_session_id"),
        (_raw(payload([member(1)], session="s-\x1b[2J")), "parameters.mixpanel_session_id"),
        (_raw(payload([member(1)], session="s-\x7f")), "parameters.mixpanel_session_id"),
        (_raw(_with(payload([member(1)]), mixpanel_cohort_id="c-\x00")), "parameters.mixpanel_cohort_id"),
        (_raw(_with(payload([member(1)]), mixpanel_cohort_id="c\n1")), "parameters.mixpanel_cohort_id"),
        # Page numbers are stored in a 32-bit column: out of range is a malformed message, not a 503.
        (_raw(payload([member(1)], page=2**31, pages=2**31)), "page_info.page_count"),
        (_raw(payload([member(1)], page=1, pages=2**31)), "page_info.total_pages"),
        (_raw(payload([member(1)], page=2**64, pages=2**64)), "page_info.page_count"),
        (_raw(payload([member(1)], page=-1)), "page_info.page_count"),
        (_raw(payload([member(1)], page=1, pages=0)), "page_info.total_pages"),
        (_raw(payload([member(1)], page=1, pages=-5)), "page_info.total_pages"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "array",
        "deep-nesting",
        "unknown-action",
        "no-parameters",
        "no-session",
        "page-zero",
        "page-past-total",
        "member-not-object",
        "member-without-id",
        "id-too-long",
        "too-many-members",
        "surrogate-distinct-id",
        "surrogate-session-id",
        "surrogate-cohort-id",
        "surrogate-project-id",
        "nul-distinct-id",
        "nul-session-id",
        "escape-session-id",
        "del-session-id",
        "nul-cohort-id",
        "newline-cohort-id",
        "page-over-int32",
        "total-over-int32",
        "page-over-int64",
        "page-negative",
        "total-zero",
        "total-negative",
    ],
)
def test_malformed_bodies_get_400_in_mixpanels_shape_and_store_nothing(client, intake_and_password, raw, message):
    intake, password = intake_and_password
    before = _counts()
    response = post(client, intake, password, None, raw=raw)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "failure"
    assert body["error"]["code"] == 400
    assert message in body["error"]["message"]
    assert _counts() == before


def test_the_action_is_echoed_on_a_failure_once_it_is_known(client, intake_and_password):
    intake, password = intake_and_password
    response = post(client, intake, password, payload([{"email": "x@example.org"}], action="members"))
    assert response.json()["action"] == "members"


def test_another_mixpanel_project_is_refused_with_403_and_nothing_stored(client, intake_and_password):
    intake, password = intake_and_password
    before = _counts()
    response = post(client, intake, password, payload([member(1)], project_id=99999))
    assert response.status_code == 403
    assert response.json() == {
        "action": "add_members",
        "status": "failure",
        "error": {"message": "This webhook belongs to another Mixpanel project.", "code": 403},
    }
    assert _counts() == before


def test_a_numeric_project_id_matches_the_projects_id(client, intake_and_password):
    intake, password = intake_and_password
    response = post(client, intake, password, payload([member(1)], project_id=12345))
    assert response.json()["status"] == "success"


def test_a_10_mb_body_is_refused_cleanly_unread(client, intake_and_password):
    intake, password = intake_and_password
    before = _counts()
    raw = b'{"action": "add_members", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = post(client, intake, password, None, raw=raw)
    assert response.status_code == 413
    assert response.json()["status"] == "failure"
    assert response.json()["error"]["code"] == 413
    assert response["Connection"] == "close"
    assert _counts() == before


def test_a_full_page_of_1000_members_over_the_portals_64_kib_limit_is_taken(client, intake_and_password):
    intake, password = intake_and_password
    members = [member(n, plan="enterprise", city="São Paulo") for n in range(1000)]
    body = json.dumps(payload(members)).encode()
    assert len(body) > 64 * 1024
    response = post(client, intake, password, None, raw=body)
    assert response.json() == {"action": "add_members", "status": "success"}
    assert DataSubjectRequest.objects.count() == 1000
    assert CohortSync.objects.get().requests_created == 1000


def test_unknown_and_disabled_intakes_get_404(client, intake_and_password, system_actor):
    from gdpr_requests.cohorts.services import cohort_intake_disable

    intake, password = intake_and_password
    unknown = client.post("/integrations/mixpanel/cohorts/not-an-intake/", data="{}", content_type="application/json")
    assert unknown.status_code == 404
    assert unknown.json()["status"] == "failure"
    cohort_intake_disable(intake=intake, actor=system_actor)
    response = post(client, intake, password, payload([member(1)]))
    assert response.status_code == 404
    assert DataSubjectRequest.objects.count() == 0


def test_get_is_not_allowed(client, intake_and_password):
    intake, _password = intake_and_password
    response = client.get(f"/integrations/mixpanel/cohorts/{intake.public_id}/")
    assert response.status_code == 405
    assert response.json()["status"] == "failure"


def test_a_database_failure_gets_503_so_mixpanel_retries(client, intake_and_password, monkeypatch):
    from django.db import OperationalError

    from gdpr_requests.cohorts import services

    intake, password = intake_and_password

    def broken(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "request_create_many", broken)
    response = post(client, intake, password, payload([member(1)]))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 503
    assert CohortSync.objects.count() == 0  # rolled back with the requests


def test_a_value_the_database_refuses_gets_400_not_503_so_mixpanel_does_not_retry_forever(
    client, intake_and_password, monkeypatch
):
    from django.db import DataError

    from gdpr_requests.cohorts import services

    intake, password = intake_and_password
    before = _counts()

    def refused(*args, **kwargs):
        raise DataError("integer out of range")

    monkeypatch.setattr(services, "request_create_many", refused)
    response = post(client, intake, password, payload([member(1)]))
    assert response.status_code == 400
    assert response.json() == {
        "action": "add_members",
        "status": "failure",
        "error": {"message": "The message holds a value that cannot be stored.", "code": 400},
    }
    assert _counts() == before


def test_the_sync_log_and_audit_hold_no_member_data(client, intake_and_password):
    intake, password = intake_and_password
    post(client, intake, password, payload([member(1, first_name="Secretname")]))
    sync_values = json.dumps(list(CohortSync.objects.values()), default=str)
    audit = json.dumps([e.payload for e in AuditEvent.objects.all()])
    for text in (sync_values, audit):
        assert "distinct-1" not in text
        assert "user1@example.org" not in text
        assert "Secretname" not in text
    assert CohortIntake.objects.get().last_sync_at is not None


def test_after_too_many_failures_guesses_get_429_unhashed_and_the_known_password_still_works(
    client, intake_and_password, settings, monkeypatch
):
    from gdpr_requests.cohorts import services

    settings.COHORT_AUTH_FAILURES_PER_MINUTE = 3
    intake, password = intake_and_password
    assert post(client, intake, password, payload([member(1)], session="a")).status_code == 200  # checked once
    for _ in range(3):
        assert post(client, intake, "guess", payload([member(2)], session="b")).status_code == 401
    hashed = []
    monkeypatch.setattr(services, "check_password", lambda *args: hashed.append(1) or False)
    refused = post(client, intake, "guess", payload([member(2)], session="b"))
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
    assert refused.json()["error"]["code"] == 429
    assert hashed == []  # a guess while throttled costs no hashing
    services._verified.clear()  # even in another web process, the shared cache vouches for the real password
    assert post(client, intake, password, payload([member(2)], session="b")).status_code == 200
    intake.refresh_from_db()
    assert intake.auth_failure_count == 4
    assert DataSubjectRequest.objects.count() == 2


def test_a_request_taken_without_an_email_is_never_emailed(client, intake_and_password, system_actor):
    from gdpr_requests.notifications.outbox import send_subject_notification
    from gdpr_requests.requests.services import request_reject

    intake, password = intake_and_password
    post(client, intake, password, payload([{"mixpanel_distinct_id": "silent-user"}]))
    dsr = DataSubjectRequest.objects.get()
    request_reject(request=dsr, reason="Not a customer of ours.", actor=system_actor)
    send_subject_notification(request_id=dsr.pk, event="reject")
    assert mail.outbox == []
