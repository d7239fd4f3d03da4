"""Staff's side of identity lookups: lookups start when a request becomes verified, candidates show on the
request page, accept/reject (admin and CLI) are audited and change the request's ids, and approval waits."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.audit.chain import Actor
from gdpr_requests.identity.services import candidate_accept, candidate_reject
from gdpr_requests.models import AuditEvent, CandidateState, IdentityCandidate, IdentityLookup, LookupStatus
from gdpr_requests.requests import services
from gdpr_requests.requests.services import ServiceError
from tests.unit.identity.identity_support import FakeEngage, drive, make_project, make_verified
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def found(identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks):
    """A verified deletion whose email matched two profiles in Alpha (one of them an anonymous $device: one)."""
    alpha = make_project("Alpha", "101")
    engage.profiles["101"] += [
        ("user-9", {"$email": "jane@example.org", "$name": "Jane Doe", "$last_seen": "2026-02-27T08:00:00"}),
        ("$device:abc", {"$email": "jane@example.org"}),
    ]
    (dsr,) = make_verified(["jane@example.org"], projects=[alpha])
    drive(clock, django_capture_on_commit_callbacks)
    return dsr


def test_verification_by_any_channel_queues_a_lookup_only_where_the_project_can_be_queried(
    identity_settings, make_request, django_capture_on_commit_callbacks
) -> None:
    alpha = make_project("Alpha", "101")
    from gdpr_requests.projects.services import project_create

    no_access = project_create(
        name="NoQuery",
        mixpanel_project_id="303",
        project_token="tok303",
        oauth_token="oauth",
        token_expires_on="2027-06-01",
        actor=Actor.system(),
    )
    unverified = make_request(distinct_ids=[], projects=[alpha, no_access])
    assert not IdentityLookup.objects.filter(request=unverified).exists()
    with django_capture_on_commit_callbacks(execute=True):  # the subject confirms: the after-commit hook runs
        services.request_confirm_email(request=unverified)
    assert list(IdentityLookup.objects.filter(request=unverified).values_list("project__name", flat=True)) == ["Alpha"]
    created_verified = make_request(distinct_ids=[], verified_by_staff="seen in person", projects=[alpha])
    assert IdentityLookup.objects.get(request=created_verified).status == LookupStatus.WAITING
    assert AuditEvent.objects.filter(action="identity.lookup_queued", payload__project_count=1).count() == 2


def test_accept_and_reject_change_the_requests_ids_and_are_audited_with_counts(found, staff_actor) -> None:
    candidate_accept(request=found, distinct_ids=["user-9", "$device:abc"], actor=staff_actor)
    found.refresh_from_db()
    assert found.distinct_ids == ["user-9", "$device:abc"]
    candidate_reject(request=found, distinct_ids=["$device:abc"], actor=staff_actor)
    found.refresh_from_db()
    assert found.distinct_ids == ["user-9"]
    states = dict(IdentityCandidate.objects.filter(request=found).values_list("distinct_id", "state"))
    assert states == {"user-9": CandidateState.ACCEPTED, "$device:abc": CandidateState.REJECTED}
    rejected = IdentityCandidate.objects.get(distinct_id="$device:abc")
    assert str(rejected.decided_by_id) == staff_actor.id and rejected.decided_at is not None
    events = AuditEvent.objects.filter(request_reference=found.reference, action__startswith="identity.candidates")
    assert [(e.action, e.payload, e.actor_type) for e in events.order_by("sequence")] == [
        ("identity.candidates_accepted", {"count": 2, "distinct_id_count": 2}, "staff"),
        ("identity.candidates_rejected", {"count": 1, "distinct_id_count": 1}, "staff"),
    ]
    with pytest.raises(ServiceError, match="not candidates"):
        candidate_accept(request=found, distinct_ids=["made-up"], actor=staff_actor)


def test_approval_is_blocked_without_ids_and_says_why(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks, staff_actor
) -> None:
    alpha = make_project("Alpha", "101")
    (dsr,) = make_verified(["nobody@example.org"], projects=[alpha])
    with pytest.raises(ServiceError, match="lookup of its email is still running in Alpha"):
        services.request_approve(request=dsr, actor=staff_actor)
    drive(clock, django_capture_on_commit_callbacks)
    with pytest.raises(ServiceError, match="no profile found for this email in Alpha; enter distinct ids by hand"):
        services.request_approve(request=dsr, actor=staff_actor)
    assert "no profile found for this email in Alpha; enter distinct ids by hand" in services.approval_blockers(dsr)
    # Staff may still enter ids by hand, and then approve.
    services.request_set_distinct_ids(request=dsr, distinct_ids=["typed-by-staff"], actor=staff_actor)
    assert services.request_approve(request=dsr, actor=staff_actor).status == "approved"


def test_a_deletion_with_no_ids_and_no_lookup_cannot_be_approved(make_request, staff_actor) -> None:
    dsr = make_request(distinct_ids=[], verified_by_staff="seen in person")
    with pytest.raises(ServiceError, match="has no Mixpanel distinct id: add one before approving"):
        services.request_approve(request=dsr, actor=staff_actor)


def test_candidates_pending_review_block_approval_until_decided(found, staff_actor) -> None:
    with pytest.raises(ServiceError, match="await review"):
        services.request_approve(request=found, actor=staff_actor)
    candidate_accept(request=found, distinct_ids=None, actor=staff_actor)
    assert services.request_approve(request=found, actor=staff_actor).status == "approved"


def test_the_request_page_shows_lookups_and_candidates_to_staff_only(found, staff_user, auditor_user) -> None:
    url = reverse("admin:gdpr_requests_datasubjectrequest_change", args=[found.pk])
    staff = Client()
    staff.force_login(staff_user)
    page = staff.get(url).content.decode()
    assert "2 profile(s) found in Alpha" in page
    assert "user-9" in page and "$device:abc" in page and "Jane Doe" in page
    assert "Review candidates" in page
    auditor = Client()
    auditor.force_login(auditor_user)
    page = auditor.get(url).content.decode()
    assert "user-9" not in page and "Jane Doe" not in page


def test_admin_actions_accept_and_reject_through_the_services(found, staff_user) -> None:
    client = Client()
    client.force_login(staff_user)
    changelist = reverse("admin:gdpr_requests_identitycandidate_changelist")
    page = client.get(reverse("admin:gdpr_requests_datasubjectrequest_change", args=[found.pk])).content.decode()
    assert f"?q={found.reference}" in page  # the request page links to its candidates
    listing = client.get(changelist, {"q": found.reference})
    assert listing.status_code == 200 and "user-9" in listing.content.decode()
    device = IdentityCandidate.objects.get(distinct_id="$device:abc")
    user = IdentityCandidate.objects.get(distinct_id="user-9")
    response = client.post(changelist, {"action": "accept_selected", "_selected_action": [user.pk]}, follow=True)
    assert "Accepted 1 candidate(s)" in response.content.decode()
    client.post(changelist, {"action": "reject_selected", "_selected_action": [device.pk]}, follow=True)
    found.refresh_from_db()
    assert found.distinct_ids == ["user-9"]
    for action in ("identity.candidates_accepted", "identity.candidates_rejected"):
        event = AuditEvent.objects.get(action=action, request_reference=found.reference)
        assert (event.actor_type, event.actor_id, event.payload["count"]) == ("staff", str(staff_user.pk), 1)


@pytest.mark.parametrize("command", ["dsr", "identity"])
def test_cli_lists_accepts_rejects_and_resolves_again(command: str, found, staff_user, engage: FakeEngage) -> None:
    rows = run_json(command, "candidates", found.reference, "--json")
    assert rows == [
        {
            "distinct_id": "user-9",
            "project": "Alpha",
            "matched_property": "$email",
            "last_seen": "2026-02-27T08:00:00",
            "state": "pending",
        },
        {
            "distinct_id": "$device:abc",
            "project": "Alpha",
            "matched_property": "$email",
            "last_seen": "",
            "state": "pending",
        },
    ]
    out, _ = run(command, "accept-ids", found.reference, "--distinct-id", "user-9", "--by", staff_user.username)
    assert "accepted 1 candidate(s); it has 1 distinct id(s)" in out
    out, _ = run(command, "reject-ids", found.reference, "--distinct-id", "$device:abc", "--by", staff_user.username)
    assert "rejected 1 candidate(s)" in out
    message, _ = refused(command, "accept-ids", found.reference, "--all")
    assert "no candidate awaiting review" in message
    out, _ = run(command, "resolve", found.reference)
    assert "1 lookup(s) queued" in out
    assert IdentityLookup.objects.get(request=found).status == LookupStatus.WAITING
    text, _ = run(command, "candidates", found.reference)
    assert "waiting to query Alpha" in text and "user-9" in text


def test_mixpanel_project_update_sets_the_service_account_without_printing_it(identity_settings, tmp_path) -> None:
    from gdpr_requests.models import MixpanelProject
    from gdpr_requests.projects.services import project_create

    project_create(
        name="Main",
        mixpanel_project_id="5",
        project_token="tok5",
        oauth_token="oauth",
        token_expires_on="2027-06-01",
        actor=Actor.system(),
    )
    secret = tmp_path / "sa"
    secret.write_text("very-secret-value\n")
    out, _ = run(
        "mixpanel_project",
        "update",
        "Main",
        "--service-account-username",
        "sa.main",
        "--service-account-secret-file",
        str(secret),
        "--identity-property",
        "$email",
        "--identity-property",
        "email",
        "--auto-accept-single-match",
        "on",
    )
    assert "service account sa.main; email properties $email, email; auto-accept a single match on" in out
    assert "very-secret-value" not in out
    project = MixpanelProject.objects.get(name="Main")
    assert (project.query_secret, project.identity_properties) == ("very-secret-value", ["$email", "email"])
    event = AuditEvent.objects.get(action="project.query_access_changed")
    assert "very-secret-value" not in json.dumps(event.payload) and "sa.main" not in json.dumps(event.payload)
    message, _ = refused("mixpanel_project", "update", "Main", "--auto-accept-single-match", "maybe")
    assert "use on or off" in message


def test_auto_accept_takes_a_lone_match_only(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    alpha = make_project("Alpha", "101", auto_accept_single_match=True)
    engage.profiles["101"] += [
        ("solo-1", {"$email": "solo@example.org"}),
        ("twin-1", {"$email": "twin@example.org"}),
        ("$device:t", {"$email": "twin@example.org"}),
    ]
    solo, twin = make_verified(["solo@example.org", "twin@example.org"], projects=[alpha])
    drive(clock, django_capture_on_commit_callbacks)
    solo.refresh_from_db()
    twin.refresh_from_db()
    assert solo.distinct_ids == ["solo-1"] and twin.distinct_ids == []
    assert set(IdentityCandidate.objects.filter(request=twin).values_list("state", flat=True)) == {"pending"}


def test_a_lone_match_left_pending_by_a_dead_batch_is_accepted_by_the_next_ticks(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    """The batch records the answer, then accepts in its own transaction: a worker that died in between leaves the
    lone match pending. The dispatch tick accepts it after a grace period; two matches still wait for staff."""
    from datetime import timedelta

    from gdpr_requests.identity import resolution
    from gdpr_requests.models import MixpanelProject

    alpha = make_project("Alpha", "101", auto_accept_single_match=False)  # the batch accepts nothing...
    engage.profiles["101"] += [
        ("solo-1", {"$email": "solo@example.org"}),
        ("twin-1", {"$email": "twin@example.org"}),
        ("$device:t", {"$email": "twin@example.org"}),
    ]
    solo, twin = make_verified(["solo@example.org", "twin@example.org"], projects=[alpha])
    drive(clock, django_capture_on_commit_callbacks)
    MixpanelProject.objects.filter(pk=alpha.pk).update(auto_accept_single_match=True)  # ...as if it had died
    assert resolution.auto_accept_catch_up(timezone.now()) == 0  # within the grace period: the batch's turn
    clock.shift(resolution.AUTO_ACCEPT_GRACE + timedelta(seconds=1))
    resolution.lookups_dispatch()
    solo.refresh_from_db()
    twin.refresh_from_db()
    assert solo.distinct_ids == ["solo-1"] and twin.distinct_ids == []
    assert (
        AuditEvent.objects.filter(action="identity.candidates_accepted", request_reference=solo.reference).count() == 1
    )
    assert resolution.auto_accept_catch_up(timezone.now()) == 0  # nothing left: idempotent


def test_the_credential_check_asks_one_harmless_profile_query_and_pauses_or_resumes(
    identity_settings, engage: FakeEngage
) -> None:
    from gdpr_requests.identity.services import project_check_query

    alpha = make_project("Alpha", "101")
    engage.status_for["101"] = 403
    ok, message = project_check_query(project=alpha, actor=Actor.system())
    alpha.refresh_from_db()
    assert ok is False and "HTTP 403" in message and alpha.lookup_paused_at is not None
    engage.status_for["101"] = 503
    assert project_check_query(project=alpha, actor=Actor.system())[0] is None
    engage.status_for.clear()
    ok, message = project_check_query(project=alpha, actor=Actor.system())
    alpha.refresh_from_db()
    assert ok is True and "lookups resumed" in message and alpha.lookup_paused_at is None
    assert [q.clauses for q in engage.queries][-1] == [("$email", "credential-check@invalid.invalid")]
    assert AuditEvent.objects.filter(action="identity.query_checked").count() == 3


def test_superusers_set_lookup_access_in_the_admin_and_the_secret_never_shows(
    identity_settings, django_user_model
) -> None:
    from gdpr_requests.models import MixpanelProject

    alpha = make_project("Alpha", "101")
    root = django_user_model.objects.create_superuser("root", "root@staff.example", "pw")
    client = Client()
    client.force_login(root)
    url = reverse("admin:gdpr_requests_profilelookupaccess_change", args=[alpha.pk])
    page = client.get(url).content.decode()
    assert "secret-101" not in page and "service account sa.user" in page
    response = client.post(
        url,
        {
            "query_username": "sa.rotated",
            "secret_new": "rotated-secret",
            "properties_text": "$email, email",
            "auto_accept_single_match": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    alpha = MixpanelProject.objects.get(pk=alpha.pk)
    assert (alpha.query_username, alpha.query_secret) == ("sa.rotated", "rotated-secret")
    assert alpha.identity_properties == ["$email", "email"] and alpha.auto_accept_single_match
    assert "rotated-secret" not in response.content.decode()
    event = AuditEvent.objects.filter(action="project.query_access_changed").latest("sequence")
    assert event.actor_type == "staff" and "rotated" not in json.dumps(event.payload)


def test_a_refused_lookup_access_change_says_so_and_changes_nothing(identity_settings, django_user_model) -> None:
    from django.contrib.admin.models import LogEntry

    from gdpr_requests.models import MixpanelProject

    alpha = make_project("Alpha", "101")
    root = django_user_model.objects.create_superuser("root", "root@staff.example", "pw")
    client = Client()
    client.force_login(root)
    url = reverse("admin:gdpr_requests_profilelookupaccess_change", args=[alpha.pk])
    response = client.post(
        url,
        {"query_username": "sa.user", "secret_new": "", "properties_text": 'bad"name', "auto_accept_single_match": ""},
        follow=True,
    )
    page = response.content.decode()
    assert response.status_code == 200 and "is not a property name" in page
    assert "changed successfully" not in page
    assert MixpanelProject.objects.get(pk=alpha.pk).identity_properties == ["$email"]
    assert not LogEntry.objects.exists()


def test_privacy_staff_cannot_change_lookup_access(identity_settings, staff_user) -> None:
    alpha = make_project("Alpha", "101")
    client = Client()
    client.force_login(staff_user)
    url = reverse("admin:gdpr_requests_profilelookupaccess_change", args=[alpha.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"query_username": "x", "secret_new": "y", "properties_text": "$email"}).status_code == 403


def test_the_evidence_says_how_ids_were_found_without_the_ids(found, staff_actor, staff_user) -> None:
    from gdpr_requests.identity.selectors import evidence_for

    candidate_accept(request=found, distinct_ids=["user-9"], actor=staff_actor)
    candidate_reject(request=found, distinct_ids=["$device:abc"], actor=staff_actor)
    (row,) = evidence_for(found)
    assert row["project"] == "Alpha" and row["candidates"] == 2 and row["looked_up_at"] is not None
    assert row["decisions"] == [
        {"state": "accepted", "by": staff_user.username, "count": 1},
        {"state": "rejected", "by": staff_user.username, "count": 1},
    ]
    assert "user-9" not in str(row) and "jane" not in str(row).lower()


def test_the_approve_page_warns_while_a_lookup_is_pending(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks, staff_user, staff_actor
) -> None:
    """Single and bulk confirmation pages name the projects still being searched; once the lookup is done the
    warning goes."""
    alpha = make_project("Alpha", "101")
    no_ids, with_ids = make_verified(["a@example.org", "b@example.org"], projects=[alpha])
    services.request_set_distinct_ids(request=with_ids, distinct_ids=["typed"], actor=staff_actor)
    staff = Client()
    staff.force_login(staff_user)
    url = reverse("admin:gdpr_requests_datasubjectrequest_action", args=[with_ids.pk, "approve"])
    page = staff.get(url).content.decode()
    assert "Lookup pending: its email is still being looked up in Alpha; more distinct ids may be found." in page
    bulk = staff.post(
        reverse("admin:gdpr_requests_datasubjectrequest_changelist"),
        {"action": "approve_selected", "_selected_action": [no_ids.pk, with_ids.pk], "index": 0},
    ).content.decode()
    assert "still being looked up in Alpha; approving waits for it." in bulk
    assert "more distinct ids may be found." in bulk
    drive(clock, django_capture_on_commit_callbacks)
    assert "Lookup pending" not in staff.get(url).content.decode()
