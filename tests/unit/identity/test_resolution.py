"""Resolution: verified email-only requests are looked up in Mixpanel with the fewest profile queries, within
each project's budget, and the answers are matched back to the requests. Only HTTP is faked (``responses``)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from gdpr_requests.models import AuditEvent, IdentityCandidate, IdentityLookup, LookupStatus
from tests.unit.identity.identity_support import FakeEngage, drive, make_project, make_verified

pytestmark = pytest.mark.django_db


def _emails(n: int) -> list[str]:
    return [f"person{i}@example.org" for i in range(n)]


def test_200_requests_over_two_projects_take_the_minimum_queries_within_the_budgets(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    identity_settings.MIXPANEL_QUERY_LIMIT = 3  # a tight budget, so the window has to hold back queries
    identity_settings.MIXPANEL_QUERY_WINDOW_SECONDS = 600.0
    alpha, beta = make_project("Alpha", "101"), make_project("Beta", "202")
    emails = _emails(190)
    for i, email in enumerate(emails):
        engage.profiles["101"].append((f"a-{i}", {"$email": email, "$last_seen": "2026-02-01T10:00:00"}))
        if i % 2 == 0:
            engage.profiles["202"].append((f"b-{i}", {"$email": email}))
    engage.profiles["101"].append(("$device:anon-7", {"$email": emails[7]}))  # one email on two profiles
    # 200 requests: ten people asked twice; one query clause serves both of their requests.
    requests = make_verified([*emails, *emails[:10]], projects=[alpha, beta])
    assert IdentityLookup.objects.filter(status=LookupStatus.WAITING).count() == 400

    drive(clock, django_capture_on_commit_callbacks, step_seconds=60.0)

    floor = math.ceil(190 / 25)
    assert engage.count("101") == floor and engage.count("202") == floor
    window = timedelta(seconds=600)
    assert engage.busiest_window("101", window) <= 3 and engage.busiest_window("202", window) <= 3
    assert all(len({v for _p, v in q.clauses}) <= 25 for q in engage.queries)
    assert not IdentityLookup.objects.exclude(status=LookupStatus.DONE).exists()
    # Matched back by the property's value: both of a person's requests, and both of person 7's profiles.
    first, repeat = requests[7], requests[197]
    for dsr in (first, repeat):
        ids = sorted(IdentityCandidate.objects.filter(request=dsr).values_list("distinct_id", flat=True))
        assert ids == ["$device:anon-7", "a-7"]
    assert IdentityCandidate.objects.filter(request=requests[3], project=beta).count() == 0
    assert IdentityLookup.objects.get(request=requests[3], project=beta).candidate_count == 0
    assert IdentityCandidate.objects.get(request=requests[0], project=alpha).last_seen == "2026-02-01T10:00:00"
    # Audited with counts only: no email, no id anywhere in the trail.
    trail = " ".join(str(e.payload) for e in AuditEvent.objects.filter(action__startswith="identity."))
    assert "@example.org" not in trail and "a-7" not in trail


def test_each_address_is_asked_as_typed_and_lower_cased_for_every_email_property(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    project = make_project("Alpha", "101", identity_properties=["$email", "email"])
    engage.profiles["101"].append(("u-1", {"email": "jane@example.org"}))
    engage.profiles["101"].append(("u-2", {"$email": "Jane@Example.org"}))
    (dsr,) = make_verified(["Jane@Example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    (query,) = engage.queries
    # Intake keeps the address as typed: Mixpanel's == is case-sensitive, so both variants are asked for.
    assert sorted(query.clauses) == [
        ("$email", "Jane@Example.org"),
        ("$email", "jane@example.org"),
        ("email", "Jane@Example.org"),
        ("email", "jane@example.org"),
    ]
    found = IdentityCandidate.objects.filter(request=dsr).order_by("distinct_id")
    assert [(c.distinct_id, c.matched_property) for c in found] == [("u-1", "email"), ("u-2", "$email")]


def test_extra_pages_are_queries_and_count_against_the_budget(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import query_limiter

    engage.page_size = 2
    project = make_project("Alpha", "101")
    for i in range(5):
        engage.profiles["101"].append((f"u-{i}", {"$email": "shared@example.org"}))
    (dsr,) = make_verified(["shared@example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    assert [q.page for q in engage.queries] == [0, 1, 2]
    assert IdentityCandidate.objects.filter(request=dsr).count() == 5
    key = query_limiter.key_for(mixpanel_project_id="101", residency="us")
    assert query_limiter.usage(key) == (3, 0)


def test_a_401_pauses_only_its_project_alerts_staff_once_and_its_requests_keep_waiting(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    alpha, beta = make_project("Alpha", "101"), make_project("Beta", "202")
    engage.status_for["202"] = 401
    engage.profiles["101"].append(("a-1", {"$email": "one@example.org"}))
    make_verified(["one@example.org", "two@example.org"], projects=[alpha, beta])

    for _ in range(5):
        drive(clock, django_capture_on_commit_callbacks, max_rounds=1, until=lambda: True)
        clock.shift(60)

    beta.refresh_from_db()
    alpha.refresh_from_db()
    assert beta.lookup_paused_at is not None and "HTTP 401" in beta.lookup_paused_reason
    assert alpha.lookup_paused_at is None
    assert engage.count("202") == 1  # paused: not asked again
    assert set(IdentityLookup.objects.filter(project=alpha).values_list("status", flat=True)) == {LookupStatus.DONE}
    assert set(IdentityLookup.objects.filter(project=beta).values_list("status", flat=True)) == {LookupStatus.WAITING}
    assert len(mail.outbox) == 1 and "Beta" in mail.outbox[0].subject
    from gdpr_requests.identity.services import approval_blocker

    two = IdentityLookup.objects.get(project=beta, request__requester_email="two@example.org").request
    assert approval_blocker(two).startswith("lookups are paused in Beta")
    assert AuditEvent.objects.filter(action="identity.lookups_paused").count() == 1

    # A new service account lifts the pause and the waiting requests are looked up.
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.identity.services import project_set_query_access

    engage.status_for.clear()
    project_set_query_access(project=beta, actor=Actor.system(), username="sa.new", secret="new-secret")
    drive(clock, django_capture_on_commit_callbacks)
    assert set(IdentityLookup.objects.filter(project=beta).values_list("status", flat=True)) == {LookupStatus.DONE}
    assert len(mail.outbox) == 1


def test_a_429_backs_off_and_retries_within_the_hour(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    project = make_project("Alpha", "101")
    engage.status_for["101"] = 429
    engage.profiles["101"].append(("u-1", {"$email": "one@example.org"}))
    (dsr,) = make_verified(["one@example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks, max_rounds=1, until=lambda: True)
    lookup = IdentityLookup.objects.get(request=dsr)
    assert lookup.status == LookupStatus.WAITING and "429" in lookup.error
    project.refresh_from_db()
    backoff = project.lookup_state.backoff_until - timezone.now()
    assert timedelta(seconds=0) < backoff <= timedelta(seconds=3600)
    engage.status_for.clear()
    drive(clock, django_capture_on_commit_callbacks)
    assert IdentityCandidate.objects.filter(request=dsr).count() == 1
    assert engage.count("101") == 2


def test_server_errors_retry_and_a_malformed_answer_fails_the_lookup_visibly(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity.services import approval_blocker, lookup_summary

    project = make_project("Alpha", "101")
    engage.status_for["101"] = 503
    (dsr,) = make_verified(["one@example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks, max_rounds=1, until=lambda: True)
    assert IdentityLookup.objects.get(request=dsr).status == LookupStatus.WAITING
    assert "still running" in approval_blocker(dsr)

    engage.status_for.clear()
    engage.raw_reply = "<html>maintenance</html>"
    drive(clock, django_capture_on_commit_callbacks, step_seconds=120.0)
    lookup = IdentityLookup.objects.get(request=dsr)
    assert lookup.status == LookupStatus.FAILED
    assert lookup_summary(lookup).startswith("lookup failed: profile query answer is malformed")
    assert approval_blocker(dsr) == "the Mixpanel lookup failed in Alpha; enter distinct ids by hand or look up again"
    assert AuditEvent.objects.filter(action="identity.lookup_failed", request_reference=dsr.reference).exists()


def test_a_redelivered_batch_asks_nothing_again_and_its_query_keeps_counting(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import query_limiter, resolution

    project = make_project("Alpha", "101")
    make_verified(["one@example.org"], projects=[project])
    sent: list[tuple[int, str]] = []
    resolution_send = resolution._send
    resolution._send = lambda project_id, token: sent.append((project_id, token))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            resolution.lookups_dispatch()
    finally:
        resolution._send = resolution_send
    ((project_id, token),) = sent
    assert resolution.lookup_batch_run(project_id=project_id, token=token).outcome == "done"
    assert resolution.lookup_batch_run(project_id=project_id, token=token).outcome == "gone"
    key = query_limiter.key_for(mixpanel_project_id="101", residency="us")
    assert engage.count("101") == 1 and query_limiter.usage(key) == (1, 0)


def test_a_batch_whose_slot_ran_out_in_the_queue_takes_a_new_one_or_waits(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import query_limiter, resolution

    identity_settings.MIXPANEL_QUERY_LIMIT = 1
    project = make_project("Alpha", "101")
    (dsr,) = make_verified(["one@example.org"], projects=[project])
    sent: list[tuple[int, str]] = []
    resolution_send = resolution._send
    resolution._send = lambda project_id, token: sent.append((project_id, token))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            resolution.lookups_dispatch()
    finally:
        resolution._send = resolution_send
    ((project_id, token),) = sent
    clock.shift(query_limiter.hold_seconds() + 1)  # the message sat in a busy queue past its slot's hold
    result = resolution.lookup_batch_run(project_id=project_id, token=token)
    # The hour's one query is spent by the slot that ran out: the batch waits instead of asking a second time.
    assert result.outcome == "waiting" and engage.count("101") == 0
    assert IdentityLookup.objects.get(request=dsr).status == LookupStatus.WAITING


def test_lookups_of_requests_that_moved_on_are_skipped_and_purged_requests_lose_their_candidates(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks, staff_actor
) -> None:
    from gdpr_requests.requests import services
    from gdpr_requests.requests.retention import purge_due

    project = make_project("Alpha", "101")
    engage.profiles["101"].append(("u-1", {"$email": "found@example.org"}))
    found, withdrawn = make_verified(["found@example.org", "gone@example.org"], projects=[project])
    services.request_cancel(request=withdrawn, actor=staff_actor)
    drive(clock, django_capture_on_commit_callbacks)
    skipped = IdentityLookup.objects.get(request=withdrawn)
    assert skipped.status == LookupStatus.FAILED and "left 'verified'" in skipped.error
    assert all("gone@example.org" not in v for q in engage.queries for _p, v in q.clauses)
    assert IdentityCandidate.objects.filter(request=found).count() == 1

    services.request_cancel(request=found, actor=staff_actor)
    clock.shift(timedelta(days=identity_settings.DSR_RETENTION_DAYS + 1))
    assert found.reference in purge_due()
    from gdpr_requests.identity import resolution

    resolution.lookups_dispatch()
    assert not IdentityCandidate.objects.filter(request=found).exists()


def test_the_tick_catches_up_lookups_the_hooks_missed(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.identity.services import project_set_query_access

    alpha = make_project("Alpha", "101")
    project_set_query_access(project=alpha, actor=Actor.system(), username="")  # no credentials yet
    (dsr,) = make_verified(["late@example.org"], projects=[alpha])
    assert not IdentityLookup.objects.filter(request=dsr).exists()
    project_set_query_access(project=alpha, actor=Actor.system(), username="sa.user", secret="s")
    drive(clock, django_capture_on_commit_callbacks)
    assert IdentityLookup.objects.get(request=dsr).status == LookupStatus.DONE and engage.count("101") == 1


def test_a_batch_that_needs_a_second_page_gets_it_under_a_full_window_and_no_address_is_asked_twice(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    identity_settings.MIXPANEL_QUERY_LIMIT = 3  # 3 batches and one extra page: more than a window holds
    identity_settings.MIXPANEL_RESOLVE_BATCH = 2
    engage.page_size = 2
    project = make_project("Alpha", "101")
    emails = _emails(6)
    engage.profiles["101"] += [("u-0a", {"$email": emails[0]}), ("u-0b", {"$email": emails[0]})]
    engage.profiles["101"] += [(f"u-{i}", {"$email": emails[i]}) for i in (1, 3, 4)]
    make_verified(emails, projects=[project])

    drive(clock, django_capture_on_commit_callbacks, step_seconds=600.0)

    # The first batch's 3 profiles take 2 pages; its second page had room, so its first was never asked again.
    assert [q.page for q in engage.queries] == [0, 1, 0, 0]
    first_pages = [sorted(v for _p, v in q.clauses) for q in engage.queries if q.page == 0]
    assert sorted(v for values in first_pages for v in values) == sorted(emails)
    assert engage.busiest_window("101", timedelta(seconds=3600)) <= 3
    assert IdentityCandidate.objects.count() == 5


def test_a_batch_claimed_before_its_project_paused_asks_nothing_and_gives_its_slot_back(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import query_limiter, resolution
    from gdpr_requests.models import MixpanelProject

    project = make_project("Alpha", "101")
    (dsr,) = make_verified(["one@example.org"], projects=[project])
    sent: list[tuple[int, str]] = []
    resolution_send = resolution._send
    resolution._send = lambda project_id, token: sent.append((project_id, token))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            resolution.lookups_dispatch()
    finally:
        resolution._send = resolution_send
    ((project_id, token),) = sent
    # A batch beside it got a 401 and paused the project while this one waited in the queue.
    MixpanelProject.objects.filter(pk=project.pk).update(lookup_paused_at=timezone.now(), lookup_paused_reason="401")

    result = resolution.lookup_batch_run(project_id=project_id, token=token)

    assert result.outcome == "paused" and engage.count("101") == 0
    lookup = IdentityLookup.objects.get(request=dsr)
    assert lookup.status == LookupStatus.WAITING and lookup.claim_token == ""
    key = query_limiter.key_for(mixpanel_project_id="101", residency="us")
    assert query_limiter.usage(key) == (0, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recording_candidates_while_staff_change_the_same_requests_ids_does_not_deadlock(
    require_postgres, identity_settings, engage: FakeEngage
) -> None:
    """A batch's answer is recorded (candidates inserted, audited) while another transaction holds the row lock of
    one of its requests and is about to audit too (staff, or auto-accept from the other project's batch). The
    candidates' foreign keys are checked before the audit chain's lock is taken, so the batch waits for the row
    without holding the chain: both commit. (Checked at COMMIT, they made each wait for the other.)"""
    import threading
    import time

    from django.db import connections, transaction

    from gdpr_requests.audit.chain import Actor, audit_record
    from gdpr_requests.identity import resolution
    from gdpr_requests.models import DataSubjectRequest

    project = make_project("Alpha", "101")
    engage.profiles["101"].append(("u-1", {"$email": "one@example.org"}))
    (dsr,) = make_verified(["one@example.org"], projects=[project])
    sent: list[tuple[int, str]] = []
    resolution_send = resolution._send
    resolution._send = lambda project_id, token: sent.append((project_id, token))
    try:
        resolution.lookups_dispatch()
    finally:
        resolution._send = resolution_send
    ((project_id, token),) = sent
    locked, errors = threading.Event(), []

    def staff_change() -> None:
        try:
            with transaction.atomic():
                DataSubjectRequest.objects.select_for_update().get(pk=dsr.pk)
                locked.set()
                time.sleep(1.0)  # the batch records its answer meanwhile
                audit_record(action="request.note_added", actor=Actor.system(), request_reference=dsr.reference)
        except Exception as exc:
            errors.append(f"staff: {exc}")
        finally:
            connections.close_all()

    def batch() -> None:
        try:
            locked.wait(5)
            resolution.lookup_batch_run(project_id=project_id, token=token)
        except Exception as exc:
            errors.append(f"batch: {exc}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=staff_change), threading.Thread(target=batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert IdentityLookup.objects.get(request=dsr).status == LookupStatus.DONE
    assert IdentityCandidate.objects.filter(request=dsr).count() == 1


def test_a_request_without_an_email_is_never_looked_up(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    """A cohort member without an email (product-login intake) starts verified with no address: asking Mixpanel
    for ``$email == ""`` would match strangers' profiles, and auto-accept would put one into a deletion."""
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.identity.services import request_resolve_now
    from gdpr_requests.requests.services import ServiceError, prepare_request, request_create_many

    project = make_project("Alpha", "101", auto_accept_single_match=True)
    engage.profiles["101"].append(("stranger-42", {"$email": ""}))
    dsr = prepare_request(
        kind="deletion",
        regulation="gdpr",
        email="placeholder@example.invalid",
        distinct_ids=["distinct-1"],
        channel="cohort",
        verified_by_staff="signed-in user of the product, via cohort C",
        actor=Actor.system(),
    )
    dsr.requester_email, dsr.email_hash = "", ""
    with django_capture_on_commit_callbacks(execute=True):
        (dsr,) = request_create_many([dsr], actor=Actor.system(), projects=[project])
    (with_email,) = make_verified(["real@example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    assert not IdentityLookup.objects.filter(request=dsr).exists()
    assert all(value for q in engage.queries for _prop, value in q.clauses)
    dsr.refresh_from_db()
    assert dsr.distinct_ids == ["distinct-1"]
    with pytest.raises(ServiceError, match="no email address to look up"):
        request_resolve_now(request=dsr, actor=Actor.system())
    # A lookup queued before this rule existed is failed, not asked.
    IdentityLookup.objects.create(request=dsr, project=project, queued_at=timezone.now(), not_before=timezone.now())
    drive(clock, django_capture_on_commit_callbacks)
    stale = IdentityLookup.objects.get(request=dsr)
    assert stale.status == LookupStatus.FAILED and "no email address" in stale.error
    assert with_email.pk != dsr.pk and IdentityCandidate.objects.filter(request=dsr).count() == 0


def test_a_batch_that_keeps_dying_fails_its_lookups_instead_of_looping(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import resolution

    project = make_project("Alpha", "101")
    (dsr,) = make_verified(["loop@example.org"], projects=[project])
    lookup = IdentityLookup.objects.get(request=dsr)
    IdentityLookup.objects.filter(pk=lookup.pk).update(
        status=LookupStatus.RUNNING,
        claim_token="dead-worker",
        claimed_until=timezone.now() - timedelta(seconds=1),
        attempts=resolution.MAX_ATTEMPTS - 1,
    )
    resolution.lookups_dispatch()  # one more chance: back to waiting, claimed again (attempt MAX_ATTEMPTS)
    lookup.refresh_from_db()
    assert lookup.status == LookupStatus.RUNNING and lookup.attempts == resolution.MAX_ATTEMPTS
    IdentityLookup.objects.filter(pk=lookup.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    resolution.lookups_dispatch()  # that batch died too: given up, visibly
    lookup.refresh_from_db()
    assert lookup.status == LookupStatus.FAILED and lookup.error.startswith("lookup failed:")
    assert AuditEvent.objects.filter(action="identity.lookups_given_up").count() == 1


def test_long_addresses_and_many_properties_split_the_batch_to_keep_the_where_small(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.identity import resolution

    properties = ["$email", "email", "Email", "work_email", "contact_email"]
    project = make_project("Alpha", "101", identity_properties=properties)
    emails = [f"{'Long.Name' * 20}{n}@example.org" for n in range(10)]  # ~200 characters each
    make_verified(emails, projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    assert len(engage.queries) >= 2  # 10 addresses would make one where of ~23 KB
    for query in engage.queries:  # each query's where stays within the cap
        addresses = {v.lower() for _p, v in query.clauses}
        assert len(addresses) * resolution.where_bytes(emails[0], properties) <= resolution.MAX_WHERE_BYTES
    asked = {v.lower() for q in engage.queries for _p, v in q.clauses}
    assert asked == {e.lower() for e in emails}  # every address asked, once the batches are done


def test_profiles_with_unstorable_text_neither_crash_the_batch_nor_give_ids(
    identity_settings, engage: FakeEngage, clock, django_capture_on_commit_callbacks
) -> None:
    """A lone surrogate in a profile's name is replaced; in its distinct id, the profile is no candidate (an id
    we cannot store exactly could only ever be sent back wrong)."""
    project = make_project("Alpha", "101")
    engage.profiles["101"] += [
        ("ok-1", {"$email": "odd@example.org", "$name": "Ann\ud800e", "$last_seen": "2026-01-01\x00"}),
        ("bad-\ud800", {"$email": "odd@example.org"}),
    ]
    (dsr,) = make_verified(["odd@example.org"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    assert IdentityLookup.objects.get(request=dsr).status == LookupStatus.DONE
    (candidate,) = IdentityCandidate.objects.filter(request=dsr)
    assert candidate.distinct_id == "ok-1"
    assert candidate.profile_name == "Ann?e" and candidate.last_seen == "2026-01-01"
