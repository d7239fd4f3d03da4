"""task_step against a scripted Mixpanel (HTTP seam only): every outcome of a create, a poll and their errors."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import ApiCall, AuditEvent, CredentialStatus, MixpanelTask, TaskState
from gdpr_requests.requests import states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    START,
    FakeMixpanel,
    Reply,
    approve,
    clock,
    drive,
    eager_celery,
    mixpanel,
    pipeline_settings,
    run_due,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


def submit_now(clock, task: MixpanelTask) -> str:
    task.refresh_from_db()
    if task.next_attempt_at > timezone.now():
        clock.move_to(task.next_attempt_at)
    return pipeline.task_step(task_id=task.pk)


def step_when_due(clock, task: MixpanelTask) -> str:
    task.refresh_from_db()
    clock.move_to(max(task.next_attempt_at, timezone.now()))
    return pipeline.task_step(task_id=task.pk)


def assert_one_call_per_second(mixpanel: FakeMixpanel) -> None:
    times = [c.at for c in mixpanel.calls]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.0 for gap in gaps), gaps


def assert_nothing_personal_recorded(*secrets: str) -> None:
    calls = list(ApiCall.objects.values())
    payloads = str(list(AuditEvent.objects.values_list("payload", flat=True)))
    for secret in secrets:
        assert secret not in str(calls)
        assert secret not in payloads


# --- the happy path -----------------------------------------------------------------------------------


def test_a_deletion_goes_from_approval_to_completed_with_a_closing_note(
    clock, mixpanel, make_request, staff_actor, project
):
    mixpanel.statuses["task-0001"] = ["PENDING", "STAGING", "STARTED", "SUCCESS"]
    dsr = approve(make_request, staff_actor, distinct_ids=["person-77"])
    drive(clock)
    dsr.refresh_from_db()
    assert dsr.status == states.COMPLETED
    assert "does not reach data already exported" in dsr.closing_note and "future tracking" in dsr.closing_note
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.SUCCEEDED and task.tracking_id == "task-0001"
    assert task.requesting_user == "owner@company.example"
    assert [h["status"] for h in task.status_history] == ["CREATED", "PENDING", "STAGING", "STARTED", "SUCCESS"]
    create = mixpanel.of("create_deletion")[0]
    assert create.body == {"distinct_ids": ["person-77"], "compliance_type": "GDPR"}
    assert create.headers["Authorization"] == "Bearer oauth-secret-value"
    assert [c.operation for c in mixpanel.calls] == ["create_deletion"] + ["deletion_status"] * 4
    assert list(ApiCall.objects.order_by("created_at", "pk").values_list("operation", "http_status", "outcome")) == [
        ("create_deletion", 201, "ok"),
        *[("deletion_status", 200, "ok")] * 4,
    ]
    assert_nothing_personal_recorded("person-77", "oauth-secret-value", "projtoken123", "owner@company.example")
    assert verify_database().ok


def test_the_older_create_shape_with_a_list_of_jobs_is_understood(clock, mixpanel, make_request, staff_actor, project):
    mixpanel.queue("create_deletion", Reply(201, {"status": "ok", "results": [{"tracking_id": "legacy-9"}]}))
    mixpanel.statuses["legacy-9"] = ["SUCCESS"]
    dsr = approve(make_request, staff_actor)
    drive(clock)
    assert MixpanelTask.objects.get().tracking_id == "legacy-9"
    assert statuses(dsr) == [states.COMPLETED]


def test_polling_backs_off_from_the_initial_interval_to_the_maximum(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    mixpanel.statuses["task-0001"] = ["PENDING"] * 12 + ["SUCCESS"]
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    assert submit_now(clock, task) == "submitted"
    task.refresh_from_db()
    gaps = [(task.next_attempt_at - timezone.now()).total_seconds()]
    for _ in range(9):
        assert step_when_due(clock, task) == "polled"
        task.refresh_from_db()
        gaps.append((task.next_attempt_at - timezone.now()).total_seconds())
    assert gaps == [300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600, 21600]
    assert task.polls == 9


def test_every_call_of_a_busy_project_waits_for_the_rate_limiter_without_sleeping(
    clock, mixpanel, make_request, staff_actor, project
):
    project.deletion_batch_size = 1
    project.save()
    for n in range(4):
        approve(make_request, staff_actor, distinct_ids=[f"id-{n}"], kind="access" if n % 2 else "deletion")
    drive(clock)
    assert len(mixpanel.calls) >= 4 * 2
    assert_one_call_per_second(mixpanel)
    assert MixpanelTask.objects.filter(state=TaskState.SUCCEEDED).count() == 4


def test_a_step_that_finds_no_free_slot_reschedules_for_when_it_frees(
    clock, mixpanel, make_request, staff_actor, project
):
    mixpanel.statuses["task-0001"] = ["PENDING"]
    approve(make_request, staff_actor)
    approve(make_request, staff_actor, kind="access", distinct_ids=["r"])
    pipeline.plan_approved()
    retrieval = MixpanelTask.objects.get(kind="retrieval")
    assert pipeline.task_step(task_id=retrieval.pk) == "submitted"
    deletion = MixpanelTask.objects.get(kind="deletion")
    clock.move_to(START + timedelta(seconds=30.5))
    retrieval.refresh_from_db()
    MixpanelTask.objects.filter(pk=retrieval.pk).update(next_attempt_at=timezone.now())
    assert pipeline.task_step(task_id=retrieval.pk) == "polled"
    assert pipeline.task_step(task_id=deletion.pk) == "waiting"
    deletion.refresh_from_db()
    assert deletion.next_attempt_at == timezone.now() + timedelta(seconds=1)
    assert deletion.state == TaskState.PENDING_SUBMIT and deletion.attempts == 0  # nothing was spent
    assert len(mixpanel.of("create_deletion")) == 0


def test_a_task_is_stepped_once_even_when_its_message_arrives_twice(
    clock, mixpanel, make_request, staff_actor, project
):
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    clock.move_to(task.next_attempt_at)
    MixpanelTask.objects.filter(pk=task.pk).update(running_until=timezone.now() + timedelta(seconds=60))
    assert pipeline.task_step(task_id=task.pk) == "skipped"  # another worker holds it
    clock.move_to(timezone.now() + timedelta(seconds=61))  # that worker died: its lease ran out
    assert pipeline.task_step(task_id=task.pk) == "submitted"
    assert pipeline.task_step(task_id=task.pk) == "skipped"  # not due: a duplicate message does nothing
    assert len(mixpanel.of("create_deletion")) == 1


# --- 409 ----------------------------------------------------------------------------------------------


def test_a_409_links_the_running_ids_to_the_existing_task_and_resubmits_the_rest(
    clock, mixpanel, make_request, staff_actor, project
):
    first = approve(make_request, staff_actor, distinct_ids=["a", "b"])
    second = approve(make_request, staff_actor, distinct_ids=["c"])
    mixpanel.queue(
        "create_deletion",
        Reply(
            409,
            {
                "status": "error",
                "error": {
                    "conflicting_distinct_ids": ["b"],
                    "conflicting_task_ids": ["running-elsewhere"],
                    "error": "deletion already running",
                },
            },
        ),
    )
    mixpanel.statuses["running-elsewhere"] = ["STARTED", "SUCCESS"]
    drive(clock)
    assert statuses(first, second) == [states.COMPLETED, states.COMPLETED]
    creates = mixpanel.of("create_deletion")
    assert [sorted(c.body["distinct_ids"]) for c in creates] == [["a", "b", "c"], ["a", "c"]]
    linked = MixpanelTask.objects.get(tracking_id="running-elsewhere")
    assert linked.distinct_ids == ["b"] and linked.state == TaskState.SUCCEEDED
    assert list(linked.requests.all()) == [first]
    original = MixpanelTask.objects.get(parent__isnull=True)
    assert original.state == TaskState.SUPERSEDED
    assert any(c.tracking_id == "running-elsewhere" for c in mixpanel.of("deletion_status"))
    assert AuditEvent.objects.filter(action="task.conflict").get().payload["resubmitted_count"] == 2


def test_a_409_naming_one_of_our_own_tasks_links_to_it(clock, mixpanel, make_request, staff_actor, project):
    mixpanel.statuses["task-0001"] = ["PENDING", "PENDING", "SUCCESS"]
    early = approve(make_request, staff_actor, distinct_ids=["x"])
    pipeline.plan_approved()
    ours = MixpanelTask.objects.get()
    submit_now(clock, ours)
    clock.move_to(timezone.now() + timedelta(seconds=5))
    late = approve(make_request, staff_actor, distinct_ids=["x", "y"])
    mixpanel.queue(
        "create_deletion",
        Reply(
            409,
            {"status": "error", "error": {"conflicting_distinct_ids": ["x"], "conflicting_task_ids": ["task-0001"]}},
        ),
    )
    drive(clock)
    assert statuses(early, late) == [states.COMPLETED, states.COMPLETED]
    ours.refresh_from_db()
    assert set(ours.requests.values_list("pk", flat=True)) == {early.pk, late.pk}
    assert MixpanelTask.objects.filter(tracking_id="task-0001").count() == 1


def test_a_lost_deletion_create_is_confirmed_by_the_409_of_its_resubmission(
    clock, mixpanel, make_request, staff_actor, project
):
    dsr = approve(make_request, staff_actor, distinct_ids=["p"])
    mixpanel.queue(
        "create_deletion",
        Reply(timeout=True),
        Reply(
            409, {"status": "error", "error": {"conflicting_distinct_ids": ["p"], "conflicting_task_ids": ["lost-1"]}}
        ),
    )
    mixpanel.statuses["lost-1"] = ["SUCCESS"]
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert MixpanelTask.objects.get(tracking_id="lost-1").state == TaskState.SUCCEEDED
    assert len(mixpanel.of("create_deletion")) == 2


# --- transient failures --------------------------------------------------------------------------------


def test_a_429_with_retry_after_waits_exactly_that_long(clock, mixpanel, make_request, staff_actor, project):
    mixpanel.queue("create_deletion", Reply(429, {"error": "this API is limited to 1 req/s"}, {"Retry-After": "120"}))
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    assert submit_now(clock, task) == "retry"
    task.refresh_from_db()
    assert task.next_attempt_at == timezone.now() + timedelta(seconds=120)
    assert task.state == TaskState.PENDING_SUBMIT and task.attempts == 1
    assert "429" in task.last_error
    assert step_when_due(clock, task) == "submitted"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(429, {"error": "this API is limited to 1 req/s"}),
        Reply(503, "Service Unavailable"),
        Reply(timeout=True),
        Reply(201, "{not json"),
    ],
    ids=["429", "5xx", "timeout", "malformed-json"],
)
def test_transient_failures_back_off_exponentially_with_jitter_then_succeed(
    clock, mixpanel, make_request, staff_actor, project, reply
):
    mixpanel.queue("create_deletion", reply, reply, reply)
    dsr = approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    waits = []
    for _ in range(3):
        assert submit_now(clock, task) == "retry"
        task.refresh_from_db()
        waits.append((task.next_attempt_at - timezone.now()).total_seconds())
    # Base 30 s, doubling; equal jitter keeps each wait within [step/2, step].
    for wait, step in zip(waits, (30, 60, 120), strict=True):
        assert step / 2 <= wait <= step
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert len(mixpanel.of("create_deletion")) == 4
    outcomes = list(
        ApiCall.objects.filter(operation="create_deletion").order_by("pk").values_list("outcome", flat=True)
    )
    assert outcomes[-1] == "ok" and len(set(outcomes[:-1])) == 1 and outcomes[0] != "ok"


def test_transient_failures_while_polling_back_off_and_polling_resumes(
    clock, mixpanel, make_request, staff_actor, project
):
    mixpanel.queue("deletion_status", Reply(500, "oops"), Reply(timeout=True), Reply(200, "garbage"))
    dsr = approve(make_request, staff_actor)
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert len(mixpanel.of("deletion_status")) == 4


def test_after_max_attempts_the_task_fails_and_so_does_the_request(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.MIXPANEL_MAX_ATTEMPTS = 3
    mixpanel.queue("create_deletion", *[Reply(502, "bad gateway")] * 5)
    dsr = approve(make_request, staff_actor)
    drive(clock)
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.FAILED and "gave up after 3 attempts" in task.last_error
    assert len(mixpanel.of("create_deletion")) == 3
    assert statuses(dsr) == [states.FAILED]
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="request.fail").exists()


def test_a_lost_retrieval_create_is_recorded_as_ambiguous_and_resubmitted(
    clock, mixpanel, make_request, staff_actor, project
):
    mixpanel.queue("create_retrieval", Reply(timeout=True))
    dsr = approve(make_request, staff_actor, kind="access", distinct_ids=["r1"])
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    event = AuditEvent.objects.get(action="task.create_ambiguous")
    assert event.request_reference == dsr.reference
    assert len(mixpanel.of("create_retrieval")) == 2


# --- credential failure -------------------------------------------------------------------------------


def test_a_401_pauses_the_project_emails_staff_once_and_stops_calling(
    clock, mixpanel, make_request, staff_actor, staff_user, project, django_capture_on_commit_callbacks, eager_celery
):
    project.deletion_batch_size = 1
    project.save()
    for n in range(3):
        approve(make_request, staff_actor, distinct_ids=[f"id-{n}"])
    mixpanel.queue("create_deletion", *[Reply(401, {"status": "error", "error": "Invalid token"})] * 10)
    pipeline.plan_approved()
    clock.move_to(timezone.now() + timedelta(seconds=31))
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            run_due(clock)
            clock.move_to(timezone.now() + timedelta(seconds=2))
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.FAILING and "401" in project.credential_error
    assert len(mixpanel.calls) == 1  # no retry storm
    assert set(MixpanelTask.objects.values_list("state", flat=True)) == {TaskState.PAUSED}
    alerts = [m for m in mail.outbox if "credential failing" in m.subject]
    assert len(alerts) == 1
    assert set(alerts[0].to) == {staff_user.email, "privacy-team@company.example"}
    assert "oauth-secret-value" not in alerts[0].body
    assert AuditEvent.objects.filter(action="project.credential_failing").count() == 1
    assert pipeline.dispatch_due() == 0
    # A second refusal (another worker's call in flight) neither alerts again nor unpauses anything.
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.credential_failed(project, http_status=403, error="forbidden")
    assert len([m for m in mail.outbox if "credential failing" in m.subject]) == 1


def test_a_403_while_polling_also_pauses_and_a_successful_check_resumes(
    clock, mixpanel, make_request, staff_actor, project
):
    dsr = approve(make_request, staff_actor)
    mixpanel.queue("deletion_status", Reply(403, {"status": "error", "error": "forbidden"}), Reply(404, ""))
    drive(clock)
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.PAUSED and task.tracking_id == "task-0001"
    clock.move_to(timezone.now() + timedelta(seconds=5))
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)  # answered 404: working
    assert result.ok, result.message
    task.refresh_from_db()
    assert task.state == TaskState.SUBMITTED
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]


# --- FAILURE, NOT_FOUND, 404 ---------------------------------------------------------------------------


def test_a_failed_batch_is_halved_until_the_bad_id_fails_alone_with_two_split_ways(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.GDPR_FAILURE_SPLIT_WAYS = 2
    made = {name: approve(make_request, staff_actor, distinct_ids=[name]) for name in ("a", "b", "c", "d")}
    mixpanel.bad_ids = {"c"}
    drive(clock)
    assert {name: statuses(dsr)[0] for name, dsr in made.items()} == {
        "a": states.COMPLETED,
        "b": states.COMPLETED,
        "c": states.FAILED,
        "d": states.COMPLETED,
    }
    creates = [sorted(c.body["distinct_ids"]) for c in mixpanel.of("create_deletion")]
    assert creates == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"], ["c"], ["d"]]
    bad = MixpanelTask.objects.get(distinct_ids=["c"])
    assert bad.state == TaskState.FAILED
    assert MixpanelTask.objects.filter(state=TaskState.SUPERSEDED).count() == 2
    assert verify_database().ok


def test_a_single_id_failure_fails_its_request(clock, mixpanel, make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor, distinct_ids=["lonely"])
    mixpanel.bad_ids = {"lonely"}
    drive(clock)
    assert statuses(dsr) == [states.FAILED]
    assert MixpanelTask.objects.get().state == TaskState.FAILED


@pytest.mark.parametrize("answer", [Reply(404, ""), None], ids=["http-404", "status-NOT_FOUND"])
def test_an_unknown_task_needs_attention_and_fails_its_request(
    clock, mixpanel, make_request, staff_actor, project, answer
):
    if answer is not None:
        mixpanel.queue("deletion_status", answer)
    else:
        mixpanel.statuses["task-0001"] = ["NOT_FOUND"]
    dsr = approve(make_request, staff_actor)
    drive(clock)
    assert MixpanelTask.objects.get().state == TaskState.NEEDS_ATTENTION
    assert statuses(dsr) == [states.FAILED]


def test_a_request_across_two_projects_completes_only_when_both_succeed(
    clock, mixpanel, make_request, staff_actor, project
):
    from gdpr_requests.models import MixpanelProject

    other = MixpanelProject.objects.create(
        name="Second",
        mixpanel_project_id="2",
        project_token="tok2",
        oauth_token="oauth2",
        token_expires_on=project.token_expires_on,
        base_url_override=project.base_url_override,
    )
    mixpanel.statuses["task-0001"] = ["SUCCESS"]
    mixpanel.statuses["task-0002"] = ["PENDING", "PENDING", "SUCCESS"]
    dsr = approve(make_request, staff_actor, projects=[project, other])
    drive(clock, until=lambda: MixpanelTask.objects.filter(state=TaskState.SUCCEEDED).count() == 1)
    assert statuses(dsr) == [states.PROCESSING]
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert "Second" in dsr.closing_note and "Main app" in dsr.closing_note
    tokens = {c.query for c in mixpanel.of("create_deletion")}
    assert tokens == {"token=projtoken123", "token=tok2"}


def test_a_request_on_hold_settles_when_it_resumes(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    from gdpr_requests.requests import services

    dsr = approve(make_request, staff_actor)
    pipeline.plan_approved()
    dsr.refresh_from_db()
    services.request_hold(request=dsr, reason="subject asked us to wait", actor=staff_actor)
    drive(clock)
    assert MixpanelTask.objects.get().state == TaskState.SUCCEEDED
    assert statuses(dsr) == [states.ON_HOLD]
    with django_capture_on_commit_callbacks(execute=True):
        services.request_resume(request=dsr, actor=staff_actor)
    assert statuses(dsr) == [states.COMPLETED]
