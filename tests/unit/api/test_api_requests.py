"""The request endpoints: intake through the services (channel api, audited as the key), idempotency, reads,
cancellation, the audit feed, and hostile bodies that must get problem details, never a 500."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from gdpr_requests.api.serializers import RequestSerializer
from gdpr_requests.audit.chain import verify_records
from gdpr_requests.models import AuditEvent, DataSubjectRequest, IdempotencyRecord
from gdpr_requests.projects.services import project_create
from gdpr_requests.requests import states
from tests.unit.api.api_support import client_for, make_key, new_request_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return client_for(make_key()["key"])


def together(n: int, call):
    """``call()`` from ``n`` threads released at once, each on its own database connection; their results."""
    barrier = threading.Barrier(n)
    results: list = []

    def run():
        try:
            barrier.wait()
            results.append(call())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == n, "a thread failed: its exception was printed above"
    return results


def post(client, body, **headers):
    return client.post("/api/v1/requests/", body, format="json", **headers)


def test_create_answers_201_and_goes_through_the_services(client):
    response = post(client, new_request_body(external_id="crm-1"))
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"reference", "status", "due_at", "links"}
    assert body["status"] == states.UNVERIFIED
    assert response["Location"] == body["links"]["self"] == f"/api/v1/requests/{body['reference']}/"
    dsr = DataSubjectRequest.objects.get(reference=body["reference"])
    assert (dsr.channel, dsr.external_id, dsr.api_key.name) == ("api", "crm-1", "support-desk")
    created = AuditEvent.objects.get(action="request.created", request_reference=dsr.reference)
    assert created.actor_label == "api:support-desk" and created.payload["channel"] == "api"
    # Unverified: the subject is asked to confirm by email (the intake hook's outbox row).
    assert dsr.notifications.filter(event="created").exists()


def test_identity_verified_by_starts_verified_without_a_confirmation_email(client):
    body = post(client, new_request_body(identity_verified_by="logged-in account, 2FA")).json()
    dsr = DataSubjectRequest.objects.get(reference=body["reference"])
    assert body["status"] == dsr.status == states.VERIFIED
    assert dsr.identity_verification == "logged-in account, 2FA" and dsr.verified_by_id is None
    assert not dsr.notifications.exists()


def test_projects_and_received_at_are_applied(client, system_actor):
    project_create(
        name="Web",
        mixpanel_project_id="1",
        project_token="t",
        oauth_token="o",
        token_expires_on=timezone.localdate() + timedelta(days=300),
        residency="us",
        actor=system_actor,
    )
    received = timezone.now() - timedelta(days=3)
    body = post(client, new_request_body(projects=["web"], received_at=received.isoformat())).json()
    dsr = DataSubjectRequest.objects.get(reference=body["reference"])
    assert [p.name for p in dsr.projects.all()] == ["Web"]
    assert dsr.received_at == received
    assert body["due_at"] == states.due_date("gdpr", timezone.localtime(received).date()).isoformat()
    unknown = post(client, new_request_body(projects=["nope"]))
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "projects"


def test_external_id_is_unique_per_key_and_names_the_first_request(client):
    first = post(client, new_request_body(external_id="crm-9")).json()
    again = post(client, new_request_body(external_id="crm-9"))
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "external_id" and first["reference"] in again.json()["detail"]
    other = client_for(make_key("other")["key"])
    assert post(other, new_request_body(external_id="crm-9")).status_code == 201


def test_idempotency_key_replays_the_first_answer_and_creates_nothing(client):
    first = post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="abc-1")
    retry = post(client, {**new_request_body()}, HTTP_IDEMPOTENCY_KEY="abc-1")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    assert DataSubjectRequest.objects.count() == 1
    different = post(client, new_request_body(kind="access"), HTTP_IDEMPOTENCY_KEY="abc-1")
    assert different.status_code == 422 and different["Content-Type"] == "application/problem+json"
    assert DataSubjectRequest.objects.count() == 1
    # Another key's same Idempotency-Key is another request.
    assert post(client_for(make_key("b")["key"]), new_request_body(), HTTP_IDEMPOTENCY_KEY="abc-1").status_code == 201


def test_idempotency_key_expires_after_24_hours(client):
    post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="k")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert DataSubjectRequest.objects.count() == 2


def test_a_refused_body_does_not_use_up_the_idempotency_key(client):
    assert post(client, new_request_body(email="nope"), HTTP_IDEMPOTENCY_KEY="k").status_code == 400
    assert post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="k").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_idempotency_key_create_one_request():
    key = make_key()["key"]
    answers = together(6, lambda: post(client_for(key), new_request_body(), HTTP_IDEMPOTENCY_KEY="same"))
    assert [a.status_code for a in answers] == [201] * 6
    assert len({a.json()["reference"] for a in answers}) == 1
    assert DataSubjectRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_with_one_external_id_make_one_request():
    key = make_key()["key"]
    codes = [r.status_code for r in together(5, lambda: post(client_for(key), new_request_body(external_id="same")))]
    assert sorted(codes) == [201, 409, 409, 409, 409]
    assert DataSubjectRequest.objects.count() == 1


def test_get_by_reference_shows_no_personal_data_and_only_the_keys_own(client):
    reference = post(client, new_request_body(name="Ada Canary", external_id="x1")).json()["reference"]
    response = client.get(f"/api/v1/requests/{reference.lower()}/")
    assert response.status_code == 200
    data = response.json()
    assert data["reference"] == reference and data["external_id"] == "x1" and data["channel"] == "api"
    assert "subject@example.com" not in response.content.decode() and "Ada" not in response.content.decode()
    assert client_for(make_key("other")["key"]).get(f"/api/v1/requests/{reference}/").status_code == 404
    missing = client.get("/api/v1/requests/DSR-0000-0000/")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/problem+json"


def test_a_read_shows_what_drfs_own_serializer_path_shows(client):
    reference = post(client, new_request_body(external_id="x2")).json()["reference"]
    now = timezone.now()
    DataSubjectRequest.objects.filter(reference=reference).update(
        verified_at=now - timedelta(days=2, microseconds=7), closed_at=now, extended_at=now - timedelta(hours=5)
    )
    bare = post(client, new_request_body()).json()["reference"]  # nulls: no external id, verified or closed time
    for ref in (reference, bare):
        dsr = DataSubjectRequest.objects.get(reference=ref)
        serializer = RequestSerializer(dsr)
        generic = serializers.Serializer.to_representation(serializer, dsr)  # DRF's bound-field path
        assert client.get(f"/api/v1/requests/{ref}/").json() == json.loads(json.dumps(generic))
    listed = client.get("/api/v1/requests/", {"external_id": "x2"}).json()["results"]
    assert listed == [client.get(f"/api/v1/requests/{reference}/").json()]
    assert listed[0]["closed_at"].endswith("Z") and listed[0]["extended_at"] and listed[0]["links"]["cancel"]


def test_list_filters_and_cursor_pages_are_stable_under_new_writes(client):
    refs = [post(client, new_request_body(external_id=f"e{i}")).json()["reference"] for i in range(5)]
    post(client, new_request_body(kind="access"))
    page = client.get("/api/v1/requests/?limit=2&kind=deletion").json()
    seen = [r["reference"] for r in page["results"]]
    post(client, new_request_body())  # a write between pages moves nothing
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [r["reference"] for r in page["results"]]
    assert seen[:5] == refs and len(seen) == 6  # five deletions and the one made while paging
    only = client.get("/api/v1/requests/?external_id=e3").json()["results"]
    assert [r["reference"] for r in only] == [refs[3]]
    assert client.get("/api/v1/requests/?status=verified").json()["results"] == []
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert client.get("/api/v1/requests/", {"updated_since": later}).json()["results"] == []
    bad = client.get("/api/v1/requests/?status=lost&updated_since=yesterday&colour=red")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "colour"


def test_cancel_follows_the_withdrawal_rules(client):
    reference = post(client, new_request_body()).json()["reference"]
    response = client.post(f"/api/v1/requests/{reference}/cancel/", {"reason": "user changed mind"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == states.CANCELLED
    event = AuditEvent.objects.get(action="request.cancel", request_reference=reference)
    assert event.actor_label == "api:support-desk"
    again = client.post(f"/api/v1/requests/{reference}/cancel/")
    assert again.status_code == 409 and "closed" in again.json()["detail"]


def test_audit_feed_follows_the_chain_and_verifies(client):
    for _ in range(3):
        post(client, new_request_body())
    first = client.get("/api/v1/audit-events/?limit=2").json()
    assert first["has_more"] and [e["sequence"] for e in first["events"]] == [1, 2]
    rest = client.get(f"/api/v1/audit-events/?after_sequence={first['next_after_sequence']}&limit=1000").json()
    events = first["events"] + rest["events"]
    assert not rest["has_more"] and [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert verify_records(events).ok
    assert client.get("/api/v1/audit-events/?after_sequence=-1").status_code == 400


HOSTILE = [
    ("kind", {"kind": 5}),
    ("kind", {"kind": ["deletion"]}),
    ("regulation", {"regulation": None}),
    ("email", {"email": "not-an-email"}),
    ("email", {"email": "a@b@c"}),
    ("email", {"email": {"$ne": 1}}),
    ("email", {"email": "x" * 5000 + "@example.com"}),
    ("name", {"name": {"first": "A"}}),
    ("name", {"name": "n" * 201}),
    ("name", {"name": "nul\x00byte"}),
    ("distinct_ids", {"distinct_ids": "u-1"}),
    ("distinct_ids", {"distinct_ids": [f"u{i}" for i in range(5000)]}),  # within the body limit, over the id limit
    ("distinct_ids.0", {"distinct_ids": ["x" * 300]}),
    ("distinct_ids", {"distinct_ids": ["bad\x01id"]}),
    ("distinct_ids.0", {"distinct_ids": [{"a": 1}]}),
    ("projects", {"projects": []}),
    ("received_at", {"received_at": "yesterday"}),
    ("received_at", {"received_at": "2999-01-01T00:00:00Z"}),
    ("disclosure_type", {"disclosure_type": "Everything"}),
    ("external_id", {"external_id": "e" * 101}),
    ("identity_verified_by", {"identity_verified_by": ["by phone"]}),
    ("admin", {"admin": True}),
    ("status", {"status": "completed"}),
]


@pytest.mark.parametrize(("field", "change"), HOSTILE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE)])
def test_hostile_bodies_get_400_naming_the_field(client, field, change):
    response = post(client, new_request_body(**change))
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and field in [e["field"] for e in problem["errors"]]
    assert DataSubjectRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        (
            "external_id",
            rb'{"kind": "deletion", "regulation": "gdpr", "email": "a@example.com", "external_id": "\ud800"}',
        ),
        ("kind", rb'{"kind": "\udfff", "regulation": "gdpr", "email": "a@example.com"}'),
        ("\\ud800", rb'{"kind": "deletion", "regulation": "gdpr", "email": "a@example.com", "\ud800": 1}'),
    ],
)
def test_lone_surrogates_get_400_not_an_unencodable_answer(client, field, raw):
    response = client.generic("POST", "/api/v1/requests/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'"text"', b"null", b"{not json", b"1e999999", b'{"kind":' * 2000, '{"email": "\xe9"}'.encode("latin-1")],
)
def test_bodies_that_are_not_an_object_get_400(client, raw):
    response = client.generic("POST", "/api/v1/requests/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"


def test_other_content_types_and_methods_are_problems_too(client):
    form = client.post("/api/v1/requests/", {"kind": "deletion"})  # multipart
    assert form.status_code == 415 and form["Content-Type"] == "application/problem+json"
    assert client.delete("/api/v1/requests/").status_code == 405
    huge = client.generic("POST", "/api/v1/requests/", b"{" + b" " * (3 * 1024 * 1024) + b"}", "application/json")
    assert huge.status_code in {400, 413}


def test_a_reference_collision_is_drawn_again_not_a_500(client, monkeypatch):
    from gdpr_requests.requests import services

    taken = post(client, new_request_body()).json()["reference"]
    draws = iter([taken, "DSR-FRSH-0001"])
    monkeypatch.setattr(services, "new_reference", lambda: next(draws))
    response = post(client, new_request_body(external_id="after-collision"), HTTP_IDEMPOTENCY_KEY="c")
    assert response.status_code == 201 and response.json()["reference"] == "DSR-FRSH-0001"
    assert DataSubjectRequest.objects.count() == 2


def test_answers_older_than_a_day_are_purged_by_the_beat_task(client):
    from gdpr_requests.api.tasks import purge_idempotency_records

    post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="old")
    post(client, new_request_body(), HTTP_IDEMPOTENCY_KEY="new")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
    purge_idempotency_records()
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def _creation(api_key_id: int, idempotency_key: str | None = None, **overrides):
    from gdpr_requests.api.idempotency import body_hash
    from gdpr_requests.api.intake import Creation
    from gdpr_requests.api.serializers import RequestCreateSerializer
    from gdpr_requests.models import ApiKey

    body = new_request_body(**overrides)
    serializer = RequestCreateSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    return Creation(ApiKey.objects.get(pk=api_key_id), serializer.validated_data, idempotency_key, body_hash(body))


def test_a_batch_from_two_keys_is_audited_as_each_key():
    from gdpr_requests.api.intake import _SameKeyInBatch, create_batch

    crm, desk = make_key("crm")["id"], make_key("desk")["id"]
    answers = create_batch([_creation(crm, "i1", external_id="a"), _creation(desk), _creation(crm, kind="access")])
    assert [(a.status_code, a.replayed) for a in answers] == [(201, False)] * 3
    assert IdempotencyRecord.objects.get(key="i1").response == answers[0].body
    with pytest.raises(_SameKeyInBatch):  # the committer then runs them one at a time: the second replays
        create_batch([_creation(crm, "i2"), _creation(crm, "i2")])
    actors = dict(AuditEvent.objects.filter(action="request.created").values_list("request_reference", "actor_label"))
    assert sorted(actors.values()) == ["api:crm", "api:crm", "api:desk"]
    assert DataSubjectRequest.objects.filter(api_key_id=crm).count() == 2


def test_a_batch_with_one_conflict_creates_nothing_so_each_item_can_run_alone():
    from gdpr_requests.api.errors import Conflict
    from gdpr_requests.api.intake import create_batch

    crm = make_key("crm")["id"]
    create_batch([_creation(crm, external_id="taken")])
    with pytest.raises(Conflict):
        create_batch([_creation(crm, "fresh"), _creation(crm, external_id="taken")])
    assert DataSubjectRequest.objects.count() == 1 and not IdempotencyRecord.objects.filter(key="fresh").exists()


def test_a_batch_costs_the_same_queries_for_one_creation_or_twenty(django_assert_max_num_queries):
    from gdpr_requests.api.intake import create_batch

    crm = make_key("crm")["id"]
    one = [_creation(crm, "solo", external_id="solo")]
    many = [_creation(crm, f"k{i}", external_id=f"e{i}") for i in range(20)]
    # 16: the audit append reads and moves the chain-head checkpoint (two statements per batch, not per request).
    with django_assert_max_num_queries(16) as single:
        create_batch(one)
    with django_assert_max_num_queries(len(single.captured_queries)):
        assert [a.status_code for a in create_batch(many)] == [201] * 20


def test_a_body_over_the_api_limit_is_refused_as_problem_details_before_it_is_read(client, settings, db):
    settings.API_MAX_BODY_BYTES = 1000
    response = client.post(
        "/api/v1/requests/", data=json.dumps({"message": "x" * 2000}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 413


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_retries_racing_in_separate_processes_create_one_request(require_postgres):
    """The race the in-process committer cannot see: retries with one Idempotency-Key landing on different
    server processes, each in its own transaction on its own connection (threads here, bypassing the committer).
    The database claim (ON CONFLICT and the row lock) makes one of them create and the others replay."""
    from gdpr_requests.api import intake
    from gdpr_requests.api.idempotency import body_hash
    from gdpr_requests.models import ApiKey

    made = make_key()
    api_key = ApiKey.objects.get(pk=made["id"])
    values = {
        "kind": "access",
        "regulation": "gdpr",
        "email": "race@example.org",
        "name": "",
        "distinct_ids": [],
        "disclosure_type": "",
        "identity_verified_by": "",
    }
    creation = intake.Creation(api_key=api_key, values=values, idempotency_key="race", body_hash=body_hash(values))
    answers = [answer for batch in together(6, lambda: intake.create_batch([creation])) for answer in batch]
    assert [a.status_code for a in answers] == [201] * 6
    assert sum(not a.replayed for a in answers) == 1
    assert len({a.body["reference"] for a in answers}) == 1
    assert DataSubjectRequest.objects.count() == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/requests/%00/",
        "/api/v1/requests/DSR-%00AB-CDEF/",
        "/api/v1/requests/" + "A" * 5000 + "/",
        "/api/v1/requests/%ED%A0%80/",
    ],
    ids=["nul", "nul-inside", "huge", "surrogate-bytes"],
)
def test_a_reference_that_cannot_be_one_is_a_404_problem_never_a_database_error(client, path):
    for response in (client.get(path), client.post(path + "cancel/", {}, format="json")):
        assert response.status_code == 404, response.content
        assert response["Content-Type"].startswith("application/problem+json")


def test_a_cursor_edited_by_hand_is_a_404_problem(client):
    import base64

    for position in ("abc", "1 OR 1=1", "9" * 40, "\uff11\uff12"):  # full-width digits are not ids
        cursor = base64.b64encode(f"p={position}".encode()).decode()
        response = client.get("/api/v1/requests/", {"cursor": cursor})
        assert response.status_code == 404, (position, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
    assert client.get("/api/v1/requests/", {"cursor": base64.b64encode(b"p=12").decode()}).status_code == 200


def test_the_api_keeps_taking_requests_when_the_rate_limit_cache_is_down(client, caplog):
    """Redis unreachable: the limit fails open (logged with the exception type only), the request is made."""
    from django.test import override_settings

    dead = {
        "default": {
            "BACKEND": "gdpr_requests.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    # Django's setting_changed signal drops the cache connections on entry and on exit.
    with override_settings(CACHES=dead):
        response = post(client, new_request_body(email="cache.down@example.org"))
    assert response.status_code == 201, response.content
    assert "rate limit not counted" in caplog.text and "cache.down" not in caplog.text
