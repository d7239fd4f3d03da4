"""Identity lookups through real workers (issue 15): 200 verified email-only requests over 2 projects are looked
up by `celery worker` subprocesses, the lookups started by production's beat entry ``resolve-identities`` (the
task ``resolve_identities`` → ``resolution.lookups_dispatch``) run by the harness's own `celery beat`, against the
recording fake Mixpanel's Query API (tests/integration/fake_mixpanel.py), PostgreSQL and Redis (the harness:
tests/integration/conftest.py).

The Query API's budget is scaled down through the workers' environment (MIXPANEL_QUERY_LIMIT per
MIXPANEL_QUERY_WINDOW_SECONDS, MIXPANEL_QUERY_CONCURRENCY, MIXPANEL_RESOLVE_BATCH) and the fake enforces the
same budget (a 429 for a query over it), so that the limiter has to hold queries back: more queries than one
window's budget, and more workers than the concurrency budget. The fake's page size is small, and one address
("a shared inbox") is on many profiles, so that some queries need a second page.

One project's service account stops working (the fake answers 401): its lookups pause, staff get one alert, and
it resumes the way the alert tells staff to: ``mixpanel_project update NAME --service-account-username U
--service-account-secret-file F`` with a new service account.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from django.core.management import call_command

from gdpr_requests.audit.chain import Actor
from gdpr_requests.identity.alerts import KIND as PAUSE_ALERT
from gdpr_requests.identity.services import approval_blocker, project_set_query_access
from gdpr_requests.models import (
    AuditEvent,
    CandidateState,
    DataSubjectRequest,
    IdentityCandidate,
    IdentityLookup,
    LookupStatus,
    MixpanelProject,
    StaffAlert,
)
from gdpr_requests.requests import states
from gdpr_requests.requests.services import prepare_request, request_create_many
from tests.integration.conftest import _settings_not_read, wait_until
from tests.integration.fake_mixpanel import QueryBudget, QueryCall, required_pages

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BATCH = 10  # distinct emails per profile query
QUERY_LIMIT = 6  # queries per project in any rolling window of QUERY_WINDOW seconds
QUERY_WINDOW = 4.0
QUERY_CONCURRENCY = 2  # queries per project at once (the test runs WORKERS > this)
WORKERS = 3
PAGE_SIZE = 12  # the fake's: larger than a batch's usual matches, smaller than the shared inbox's batch's
QUERY_LATENCY = 0.25  # seconds the fake takes to answer, so that queries overlap
SETTLE = 3.0  # seconds (dispatcher ticks) a paused project is watched for queries it should not make
LOOKUP_ENV = {
    "MIXPANEL_QUERY_LIMIT": str(QUERY_LIMIT),
    "MIXPANEL_QUERY_WINDOW_SECONDS": str(QUERY_WINDOW),
    "MIXPANEL_QUERY_CONCURRENCY": str(QUERY_CONCURRENCY),
    "MIXPANEL_RESOLVE_BATCH": str(BATCH),
    "MIXPANEL_RESOLVE_INTERVAL_SECONDS": "1",
}

# 194 distinct addresses: 134 on both projects (6 of them asked twice: the same person filed two requests),
# 30 on the healthy project only, 30 on the revoked one only: 200 requests, 164 addresses per project.
EMAILS = [f"subject-{i:03d}@example.org" for i in range(194)]
BOTH, HEALTHY_ONLY, REVOKED_ONLY = EMAILS[:134], EMAILS[134:164], EMAILS[164:]
ASKED_TWICE = EMAILS[:6]
TWO_PROFILES = 7  # a named profile and an anonymous $device: one (ID merge leaves both)
SHARED_INBOX = 100  # on 9 profiles: its batch's answer needs a second page
NO_PROFILE = frozenset(i for i in range(len(EMAILS)) if i % 23 == 5)


def seeded_profiles(prefix: str) -> list[tuple[str, dict[str, Any]]]:
    profiles: list[tuple[str, dict[str, Any]]] = []
    for i, email in enumerate(EMAILS):
        if i in NO_PROFILE:
            continue
        for k in range(9 if i == SHARED_INBOX else 1):
            props = {"$email": email, "$name": f"Subject {i}", "$last_seen": f"2026-03-01T10:{k:02d}:00"}
            profiles.append((f"{prefix}-{i}-{k}", props))
        if i == TWO_PROFILES:
            profiles.append((f"$device:{prefix}-anon-{i}", {"$email": email}))
    # Mixpanel's == is exact: a profile under another spelling of an address is not that person's.
    profiles.append((f"{prefix}-other-spelling", {"$email": EMAILS[3].upper()}))
    return profiles


def expected_ids(profiles: list[tuple[str, dict[str, Any]]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for distinct_id, props in profiles:
        found[props["$email"]].add(distinct_id)
    return found


def verified_email_only(emails: list[str], projects: list[MixpanelProject]) -> list[DataSubjectRequest]:
    """Staff-entered requests, verified at intake (identity checked), with an email and no distinct id."""
    actor = Actor.system("integration tests")
    rows = [
        prepare_request(
            kind="deletion", regulation="gdpr", email=email, channel="staff", verified_by_staff="ID seen", actor=actor
        )
        for email in emails
    ]
    return request_create_many(rows, actor=actor, projects=projects)


def with_query_access(project: MixpanelProject, fake: Any, **extra: Any) -> MixpanelProject:
    username, secret = f"sa-{project.name.lower()}", f"secret-{project.mixpanel_project_id}"
    fake.set_query_account(project.mixpanel_project_id, username=username, secret=secret)
    return project_set_query_access(
        project=project, actor=Actor.system("integration tests"), username=username, secret=secret, **extra
    )


def lookup_statuses(project: MixpanelProject) -> Counter[str]:
    return Counter(IdentityLookup.objects.filter(project=project).values_list("status", flat=True))


def candidates_by_email(project: MixpanelProject) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for email, distinct_id in IdentityCandidate.objects.filter(project=project).values_list(
        "request__requester_email", "distinct_id"
    ):
        found[email].add(distinct_id)
    return found


def assert_minimum_queries(queries: list[QueryCall], emails: set[str], *, failed: int = 0) -> int:
    """Every address asked in exactly one answered first page, ceil(addresses / BATCH) of them, plus exactly the
    pages their answers required; ``failed`` queries answered otherwise (a refused credential). Returns the extra
    pages."""
    answered = [q for q in queries if q.status == 200]
    first_pages = [q for q in answered if q.page == 0]
    asked = Counter(value for q in first_pages for value in q.values)
    story = describe_queries(queries)
    assert set(asked) == emails, f"addresses never asked: {len(emails - set(asked))}\n{story}"
    assert set(asked.values()) == {1}, f"addresses asked again: {sum(n > 1 for n in asked.values())}\n{story}"
    assert all(q.clauses <= BATCH for q in first_pages)
    assert len(first_pages) == math.ceil(len(emails) / BATCH)
    extra = 0
    for first in first_pages:
        pages = sorted(q.page for q in answered if q.session_id == first.session_id)
        assert pages == list(range(required_pages(first.total, PAGE_SIZE))), "a page was skipped or asked twice"
        extra += len(pages) - 1
    assert len(queries) == len(first_pages) + extra + failed
    return extra


def describe_queries(queries: list[QueryCall]) -> str:
    """The queries in order, one line each (times from the first), for a failure's message."""
    if not queries:
        return "no queries"
    t0 = queries[0].start
    return "\n".join(
        f"  {q.start - t0:6.2f}-{q.end - t0:6.2f}s {q.status} page {q.page} of session {q.session_id or '-'}: "
        f"{q.clauses} clauses, {q.results}/{q.total} results {q.fault}"
        for q in queries
    )


def assert_within_budget(fake: Any, project_id: str) -> None:
    assert fake.busiest_query_window(project_id, QUERY_WINDOW) <= QUERY_LIMIT
    assert fake.most_concurrent_queries(project_id) <= QUERY_CONCURRENCY
    assert not fake.query_calls(project_id=project_id, status=429)


def pause_alerts(pipeline: Any) -> list[str]:
    return [text for text in pipeline.emails() if "Mixpanel lookups paused in" in text]


def wait_for_lookups(pipeline: Any, project: MixpanelProject, *, timeout: float) -> None:
    def done() -> bool:
        errors = pipeline.task_errors()
        if errors:
            pytest.fail("a Celery task raised:\n" + "\n".join(errors[:3]))
        return set(lookup_statuses(project)) == {LookupStatus.DONE}

    wait_until(done, timeout=timeout, what=f"every lookup in {project.name} to be done", interval=0.25)


def test_200_email_only_requests_resolve_with_the_fewest_queries_within_budget_and_a_401_pauses_its_project(
    pipeline, staff_user, tmp_path
):
    assert not _settings_not_read(LOOKUP_ENV), "compliance/settings.py no longer reads a lookup setting"
    pipeline.env.update(LOOKUP_ENV)
    fake = pipeline.fake
    fake.query_page_size = PAGE_SIZE
    fake.query_latency = QUERY_LATENCY
    fake.query_budget = QueryBudget(QUERY_LIMIT, QUERY_WINDOW, QUERY_CONCURRENCY)
    healthy = with_query_access(pipeline.make_project(name="Healthy"), fake, auto_accept_single_match=True)
    revoked = with_query_access(pipeline.make_project(name="Revoked"), fake)
    seeds = {healthy.pk: seeded_profiles("h"), revoked.pk: seeded_profiles("r")}
    for project in (healthy, revoked):
        fake.seed_profiles(project.mixpanel_project_id, seeds[project.pk])
    # The revoked project's service account stops working after two answered queries.
    fake.fail_queries(revoked.mixpanel_project_id, status=401, after=2)
    requests = [
        *verified_email_only([*BOTH, *ASKED_TWICE], [healthy, revoked]),
        *verified_email_only(HEALTHY_ONLY, [healthy]),
        *verified_email_only(REVOKED_ONLY, [revoked]),
    ]
    assert len(requests) == 200
    healthy_emails, revoked_emails = set(BOTH + HEALTHY_ONLY), set(BOTH + REVOKED_ONLY)
    h_wanted = expected_ids(seeds[healthy.pk])
    assert lookup_statuses(healthy) == {LookupStatus.WAITING: 170}
    assert lookup_statuses(revoked) == {LookupStatus.WAITING: 170}

    started = time.monotonic()
    pipeline.start_workers(WORKERS)  # and beat, which runs resolve_identities every second

    # --- a 401 pauses the revoked project only; its requests wait -------------------------------------------
    wait_until(
        lambda: MixpanelProject.objects.filter(pk=revoked.pk, lookup_paused_at__isnull=False).exists(),
        timeout=60,
        what="the revoked project's lookups to pause",
    )
    paused_seen = time.monotonic()
    revoked_at_pause = len(fake.query_calls(project_id=revoked.mixpanel_project_id))
    time.sleep(SETTLE)  # dispatcher ticks, while the healthy project's lookups go on

    revoked.refresh_from_db()
    assert revoked.lookup_paused_at is not None and "HTTP 401" in revoked.lookup_paused_reason
    r_queries = fake.query_calls(project_id=revoked.mixpanel_project_id)
    assert len(r_queries) == revoked_at_pause  # no query since the pause
    refused = [q for q in r_queries if q.status == 401]
    assert 1 <= len(refused) <= QUERY_CONCURRENCY  # only the queries already under way when it paused
    assert all(q.page == 0 for q in refused)
    answered = {v for q in r_queries if q.status == 200 for v in q.values}
    statuses = lookup_statuses(revoked)
    assert set(statuses) <= {LookupStatus.DONE, LookupStatus.WAITING} and sum(statuses.values()) == 170
    done_emails = set(
        IdentityLookup.objects.filter(project=revoked, status=LookupStatus.DONE).values_list(
            "request__requester_email", flat=True
        )
    )
    assert done_emails == answered  # nothing lost: what was answered is recorded, the rest waits
    assert set(DataSubjectRequest.objects.values_list("status", flat=True)) == {states.VERIFIED}
    waiting = DataSubjectRequest.objects.filter(
        requester_email__in=set(REVOKED_ONLY) - answered, identity_lookups__status=LookupStatus.WAITING
    ).first()
    assert waiting is not None
    assert approval_blocker(waiting).startswith("lookups are paused in Revoked")
    assert StaffAlert.objects.filter(kind=PAUSE_ALERT).count() == 1
    assert StaffAlert.objects.get(kind=PAUSE_ALERT).object_ref == f"project:{revoked.pk}"
    (alert,) = pause_alerts(pipeline)
    assert "Mixpanel lookups paused in Revoked" in alert
    assert AuditEvent.objects.filter(action="identity.lookups_paused").count() == 1
    healthy.refresh_from_db()
    assert healthy.lookup_paused_at is None
    h_after_pause = [q for q in fake.query_calls(project_id=healthy.mixpanel_project_id) if q.start > paused_seen]
    assert h_after_pause and {q.status for q in h_after_pause} == {200}  # the other project went on

    # --- staff renew the service account: the pause lifts and the waiting requests resolve ------------------
    fake.clear_query_fault(revoked.mixpanel_project_id)
    fake.set_query_account(revoked.mixpanel_project_id, username="sa-renewed", secret="renewed-secret")
    secret_file = tmp_path / "service-account-secret"
    secret_file.write_text("renewed-secret\n")
    call_command(
        "mixpanel_project",
        "update",
        "Revoked",
        "--service-account-username",
        "sa-renewed",
        "--service-account-secret-file",
        str(secret_file),
        "--by",
        staff_user.username,
    )
    revoked.refresh_from_db()
    assert revoked.lookup_paused_at is None
    wait_for_lookups(pipeline, healthy, timeout=90)
    wait_for_lookups(pipeline, revoked, timeout=90)
    # A lone match is accepted just after its lookup's answer is recorded, in a transaction of its own.
    lone = sum(
        1 for dsr in requests if dsr.requester_email in healthy_emails and len(h_wanted[dsr.requester_email]) == 1
    )
    wait_until(
        lambda: IdentityCandidate.objects.filter(project=healthy, state=CandidateState.ACCEPTED).count() >= lone,
        timeout=15,
        what="the lone matches to be accepted",
    )
    finished = time.monotonic()

    # --- the healthy project: the fewest queries within budget, every request has its candidates ------------
    h_queries = fake.query_calls(project_id=healthy.mixpanel_project_id)
    assert len(h_queries) > QUERY_LIMIT  # more than one window's budget: the limiter had to hold queries back
    h_extra = assert_minimum_queries(h_queries, healthy_emails)
    assert h_extra >= 1  # the shared inbox's batch was paged
    assert_within_budget(fake, healthy.mixpanel_project_id)
    assert candidates_by_email(healthy) == {e: h_wanted[e] for e in healthy_emails if h_wanted[e]}
    for dsr in DataSubjectRequest.objects.filter(projects=healthy):
        ids = h_wanted[dsr.requester_email]
        states_of = set(IdentityCandidate.objects.filter(request=dsr, project=healthy).values_list("state", flat=True))
        if len(ids) == 1:  # auto-accepted: the id joined the request
            assert dsr.distinct_ids == sorted(ids) and states_of == {CandidateState.ACCEPTED}
        else:  # several profiles (or none): staff decide
            assert dsr.distinct_ids == [] and states_of <= {CandidateState.PENDING}
    shared = IdentityLookup.objects.get(request__requester_email=EMAILS[SHARED_INBOX], project=healthy)
    assert shared.candidate_count == 9
    assert 143 in NO_PROFILE and EMAILS[143] in HEALTHY_ONLY
    no_profile = DataSubjectRequest.objects.get(requester_email=EMAILS[143])
    assert approval_blocker(no_profile) == "no profile found for this email in Healthy; enter distinct ids by hand"

    # --- the revoked project, resumed: the same minimum, plus only the refused queries ----------------------
    r_queries = fake.query_calls(project_id=revoked.mixpanel_project_id)
    r_extra = assert_minimum_queries(r_queries, revoked_emails, failed=len(refused))
    assert_within_budget(fake, revoked.mixpanel_project_id)
    assert {q.user for q in r_queries[revoked_at_pause:]} == {"sa-renewed"}
    r_wanted = expected_ids(seeds[revoked.pk])
    assert candidates_by_email(revoked) == {e: r_wanted[e] for e in revoked_emails if r_wanted[e]}
    r_states = set(IdentityCandidate.objects.filter(project=revoked).values_list("state", flat=True))
    assert r_states == {CandidateState.PENDING}  # no auto-accept in this project: staff review them
    assert StaffAlert.objects.filter(kind=PAUSE_ALERT).count() == 1 and len(pause_alerts(pipeline)) == 1
    assert set(DataSubjectRequest.objects.values_list("status", flat=True)) == {states.VERIFIED}
    print(
        f"\nhealthy: {len(h_queries)} queries ({h_extra} extra pages), "
        f"busiest window {fake.busiest_query_window(healthy.mixpanel_project_id, QUERY_WINDOW)}/{QUERY_LIMIT}, "
        f"most at once {fake.most_concurrent_queries(healthy.mixpanel_project_id)}/{QUERY_CONCURRENCY}; "
        f"revoked: {len(r_queries)} queries ({r_extra} extra pages, {len(refused)} refused), "
        f"busiest window {fake.busiest_query_window(revoked.mixpanel_project_id, QUERY_WINDOW)}/{QUERY_LIMIT}, "
        f"most at once {fake.most_concurrent_queries(revoked.mixpanel_project_id)}/{QUERY_CONCURRENCY}; "
        f"paused {paused_seen - started:.1f}s after the workers' start, all resolved after {finished - started:.1f}s"
    )
