"""Credential checks: one harmless call, recorded and audited, through the rate limiter; resuming paused work."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.mixpanel import ratelimit
from gdpr_requests.models import ApiCall, AuditEvent, CredentialStatus, MixpanelTask, TaskState
from tests.unit.pipeline.pipeline_support import Reply, approve, clock, mixpanel, pipeline_settings  # noqa: F401  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


@pytest.mark.parametrize(
    "reply",
    [Reply(404, ""), Reply(200, {"status": "ok", "results": {"status": "NOT_FOUND"}}), Reply(400, {"error": "bad id"})],
    ids=["404", "NOT_FOUND", "400"],
)
def test_any_answer_but_401_or_403_means_the_credential_works(mixpanel, project, staff_actor, reply):
    mixpanel.queue("deletion_status", reply)
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert result.ok and "accepted" in result.message
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.OK and project.credential_checked_at is not None
    call = mixpanel.of("deletion_status")[0]
    assert call.headers["Authorization"] == "Bearer oauth-secret-value"
    assert ApiCall.objects.get().task is None
    event = AuditEvent.objects.get(action="project.credential_checked")
    assert event.payload["result"] == "ok" and event.actor_label == "alice"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_marked_failing_and_pauses_the_projects_work(
    mixpanel, project, staff_actor, make_request, status
):
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    mixpanel.queue("deletion_status", Reply(status, {"status": "error", "error": "Invalid token"}))
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert not result.ok and f"HTTP {status}" in result.message
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.FAILING
    assert MixpanelTask.objects.get().state == TaskState.PAUSED
    assert AuditEvent.objects.get(action="project.credential_checked").payload["result"] == "failing"


def test_no_answer_says_nothing_about_the_credential(mixpanel, project, staff_actor):
    mixpanel.queue("deletion_status", Reply(timeout=True))
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert not result.ok and "not checked" in result.message
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.UNKNOWN


def test_a_working_check_resumes_each_paused_task_where_it_was(mixpanel, project, staff_actor, make_request):
    for kind in ("deletion", "access", "access"):
        approve(make_request, staff_actor, kind=kind, distinct_ids=[f"{kind}-id"] if kind == "deletion" else ["a"])
    pipeline.plan_approved()
    sent, polling, downloading = MixpanelTask.objects.order_by("pk")
    MixpanelTask.objects.filter(pk=polling.pk).update(tracking_id="t-1")
    MixpanelTask.objects.filter(pk=downloading.pk).update(tracking_id="t-2")
    downloading.refresh_from_db()
    downloading.result_url = "https://mixpanel.com/files/x.zip"
    downloading.save()
    pipeline.credential_failed(project, http_status=401, error="refused")
    assert set(MixpanelTask.objects.values_list("state", flat=True)) == {TaskState.PAUSED}
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert result.ok and "3 paused tasks resumed" in result.message
    states_now = dict(MixpanelTask.objects.values_list("pk", "state"))
    assert states_now == {
        sent.pk: TaskState.PENDING_SUBMIT,
        polling.pk: TaskState.SUBMITTED,
        downloading.pk: TaskState.DOWNLOADING,
    }
    assert AuditEvent.objects.get(action="project.resumed").payload["resumed_tasks"] == 3


def test_a_check_waits_briefly_for_the_rate_limiter_because_a_person_is_waiting(
    mixpanel, project, staff_actor, settings
):
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0.4
    key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)
    # A worker's call was just answered: steps hold their slot until then, and finished() frees it an interval on.
    assert ratelimit.acquire(key, until_finished=True) == 0.0
    ratelimit.finished(key)
    started = time.monotonic()
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert result.ok
    assert 0.3 <= time.monotonic() - started < 2.0


def test_a_check_gives_up_rather_than_wait_long(mixpanel, project, staff_actor, settings):
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 5.0
    ratelimit.acquire(ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token))
    started = time.monotonic()
    result = pipeline.project_check_credentials(project=project, actor=staff_actor)
    assert not result.ok and "try again" in result.message
    assert time.monotonic() - started < 0.5
    assert mixpanel.calls == []


def test_the_slot_stays_taken_while_the_checks_call_is_in_flight(clock, mixpanel, project, staff_actor):
    key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)
    others: list[float] = []
    answer = mixpanel._deletion_status

    def slow_status(tracking_id, body, request):
        # Mixpanel takes 5 s to answer (the interval is 1 s); a worker asks for the project's slot meanwhile.
        clock.move_to(timezone.now() + timedelta(seconds=5))
        others.append(ratelimit.acquire(key))
        return answer(tracking_id, body, request)

    mixpanel._deletion_status = slow_status
    assert pipeline.project_check_credentials(project=project, actor=staff_actor).ok
    answered = timezone.now()
    assert others == [1.0]  # refused: the check's call had not been answered yet
    clock.move_to(answered + timedelta(seconds=0.9))
    assert ratelimit.acquire(key) == pytest.approx(0.1)
    clock.move_to(answered + timedelta(seconds=1))
    assert ratelimit.acquire(key) == 0.0


def test_the_slot_is_released_when_the_check_fails_before_or_during_its_call(clock, mixpanel, project, staff_actor):
    """A check that raises must not keep the project's slot for the whole hold (ratelimit.hold_seconds())."""
    key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)

    def broken(tracking_id, body, request):
        raise RuntimeError("the connection broke in an unexpected way")

    mixpanel._deletion_status = broken
    with pytest.raises(RuntimeError):
        pipeline.project_check_credentials(project=project, actor=staff_actor)
    clock.move_to(timezone.now() + timedelta(seconds=1))
    assert ratelimit.acquire(key) == 0.0

    # No call at all: the client cannot even be built (a malformed base URL override), after the slot was taken.
    clock.move_to(timezone.now() + timedelta(seconds=1))
    project.base_url_override = "not a url"
    with pytest.raises(ValueError, match="base URL override"):
        pipeline.project_check_credentials(project=project, actor=staff_actor)
    clock.move_to(timezone.now() + timedelta(seconds=1))
    assert ratelimit.acquire(key) == 0.0
    assert len(mixpanel.calls) == 1


def test_a_real_call_that_succeeds_proves_an_unchecked_credential_once(mixpanel, project, staff_actor, make_request):
    """Nobody pressed "check": the first call Mixpanel accepts marks the credential OK (audited once, by the
    system); later calls change nothing. A failing credential is not resumed by a call already in flight."""
    assert project.credential_status == CredentialStatus.UNKNOWN
    for n in range(2):
        approve(make_request, staff_actor, kind="access", distinct_ids=[f"a-{n}"])
    pipeline.plan_approved()
    for task in MixpanelTask.objects.order_by("pk"):
        pipeline.task_step(task_id=task.pk)
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.OK and project.credential_checked_at is not None
    proven = AuditEvent.objects.filter(action="project.credential_checked")
    assert [(e.actor_label, e.payload["by"]) for e in proven] == [("pipeline", "api_call")]


def test_a_successful_call_does_not_resume_a_failing_credential(mixpanel, project, staff_actor, make_request):
    from gdpr_requests.mixpanel.client import CallRecord
    from gdpr_requests.models import MixpanelProject

    approve(make_request, staff_actor, kind="access", distinct_ids=["a"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    MixpanelProject.objects.filter(pk=project.pk).update(credential_status=CredentialStatus.FAILING)
    project.refresh_from_db()
    record = CallRecord(operation="create_retrieval", http_status=200, duration_ms=5, outcome="ok")
    pipeline.api_call_record(project=project, task=task, record=record)
    project.refresh_from_db()
    assert project.credential_status == CredentialStatus.FAILING
