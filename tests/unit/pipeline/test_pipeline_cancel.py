"""Withdrawal: allowed while Mixpanel can still cancel, refused after; shared tasks keep serving the others."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import Actor, verify_database
from gdpr_requests.models import AuditEvent, MixpanelTask, TaskState
from gdpr_requests.requests import services, states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
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

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings", "eager_celery")]


def withdraw(dsr, capture):
    """The subject withdraws; after-commit hooks run (the pipeline's cancels the tasks, steps run eagerly)."""
    with capture(execute=True):
        services.request_cancel(request=dsr, actor=Actor.subject(), reason="changed my mind")
    dsr.refresh_from_db()


def submitted(clock, mixpanel, *, statuses_script=("PENDING",)):
    """Plan and submit everything approved so far, and poll each task once."""
    pipeline.plan_approved()
    clock.move_to(timezone.now() + timedelta(seconds=31))
    run_due(clock)
    for task in MixpanelTask.objects.filter(state=TaskState.SUBMITTED):
        mixpanel.statuses.setdefault(task.tracking_id, list(statuses_script))


def test_a_deletion_not_yet_sent_is_withdrawn_without_calling_mixpanel(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor)
    pipeline.plan_approved()
    assert pipeline.request_withdrawal_blocker(dsr) == ""
    withdraw(dsr, django_capture_on_commit_callbacks)
    assert dsr.status == states.CANCELLED
    assert MixpanelTask.objects.get().state == TaskState.CANCELLED
    drive(clock)
    assert mixpanel.calls == []


def test_a_pending_deletion_is_cancelled_at_mixpanel(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor)
    submitted(clock, mixpanel)
    clock.move_to(timezone.now() + timedelta(seconds=301))
    run_due(clock)  # first poll: PENDING
    task = MixpanelTask.objects.get()
    assert task.remote_status == "PENDING"
    assert pipeline.request_withdrawal_blocker(dsr) == ""
    withdraw(dsr, django_capture_on_commit_callbacks)
    drive(clock)
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED and task.remote_status == "REVOKED"
    cancels = mixpanel.of("cancel_deletion")
    assert [c.tracking_id for c in cancels] == [task.tracking_id]
    assert cancels[0].method == "DELETE"
    assert AuditEvent.objects.filter(action="task.cancelled", payload__remote=True).exists()
    assert verify_database().ok


def test_withdrawal_is_refused_with_a_clear_message_once_mixpanel_started(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor)
    submitted(clock, mixpanel, statuses_script=("STARTED",))
    clock.move_to(timezone.now() + timedelta(seconds=301))
    run_due(clock)
    reason = pipeline.request_withdrawal_blocker(dsr)
    assert "started this deletion" in reason
    with pytest.raises(services.ServiceError, match="can no longer be withdrawn"):
        services.request_cancel(request=dsr, actor=Actor.subject())
    assert statuses(dsr) == [states.PROCESSING]
    assert mixpanel.of("cancel_deletion") == []


def test_withdrawal_is_refused_after_the_deletion_succeeded_and_allowed_for_access_requests(
    clock, mixpanel, make_request, staff_actor, project
):
    deletion = approve(make_request, staff_actor)
    access = approve(make_request, staff_actor, kind="access")
    mixpanel.statuses["task-0001"] = ["PENDING"] * 50  # the retrieval never finishes
    drive(clock, until=lambda: MixpanelTask.objects.filter(kind="deletion", state=TaskState.SUCCEEDED).exists())
    assert "already carried out" in pipeline.request_withdrawal_blocker(deletion)
    assert pipeline.request_withdrawal_blocker(access) == ""


def test_a_shared_task_is_cancelled_and_the_others_ids_are_resubmitted(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    leaving = approve(make_request, staff_actor, distinct_ids=["leaver-1", "leaver-2"])
    staying = approve(make_request, staff_actor, distinct_ids=["stayer"])
    submitted(clock, mixpanel)
    shared = MixpanelTask.objects.get()
    assert sorted(shared.distinct_ids) == ["leaver-1", "leaver-2", "stayer"]
    withdraw(leaving, django_capture_on_commit_callbacks)
    drive(clock)
    shared.refresh_from_db()
    assert shared.state == TaskState.CANCELLED
    replacement = MixpanelTask.objects.get(parent=shared)
    assert replacement.distinct_ids == ["stayer"] and replacement.state == TaskState.SUCCEEDED
    assert list(replacement.requests.all()) == [staying]
    assert statuses(leaving, staying) == [states.CANCELLED, states.COMPLETED]
    later_creates = mixpanel.of("create_deletion")[1:]
    assert [c.body["distinct_ids"] for c in later_creates] == [["stayer"]]
    assert [c.tracking_id for c in mixpanel.of("cancel_deletion")] == [shared.tracking_id]


def test_withdrawing_one_of_two_requests_in_an_unsent_task_just_drops_its_ids(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    leaving = approve(make_request, staff_actor, distinct_ids=["l"])
    staying = approve(make_request, staff_actor, distinct_ids=["s"])
    pipeline.plan_approved()
    withdraw(leaving, django_capture_on_commit_callbacks)
    task = MixpanelTask.objects.get()
    assert task.distinct_ids == ["s"] and task.state == TaskState.PENDING_SUBMIT
    drive(clock)
    assert [c.body["distinct_ids"] for c in mixpanel.of("create_deletion")] == [["s"]]
    assert statuses(staying) == [states.COMPLETED]


def test_mixpanel_refusing_the_cancel_means_following_the_task_to_its_end(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor)
    submitted(clock, mixpanel, statuses_script=("PENDING", "STARTED", "SUCCESS"))
    mixpanel.queue("cancel_deletion", Reply(400, {"status": "error", "error": "task already started"}))
    withdraw(dsr, django_capture_on_commit_callbacks)
    drive(clock)
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.SUCCEEDED
    assert "CANCEL_REFUSED" in [h["status"] for h in task.status_history]
    assert len(mixpanel.of("cancel_deletion")) == 1  # no second attempt
    assert statuses(dsr) == [states.CANCELLED]
    assert AuditEvent.objects.filter(action="task.cancel_refused").exists()


def test_withdrawing_an_access_request_stops_following_its_retrieval(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor, kind="access")
    submitted(clock, mixpanel)
    withdraw(dsr, django_capture_on_commit_callbacks)
    polls_before = len(mixpanel.of("retrieval_status"))
    drive(clock)
    assert MixpanelTask.objects.get().state == TaskState.CANCELLED
    assert len(mixpanel.of("retrieval_status")) == polls_before
    assert dsr.status == states.CANCELLED


def test_a_lost_cancel_hook_is_made_up_for_by_the_next_step(clock, mixpanel, make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor)
    submitted(clock, mixpanel)
    services.request_cancel(request=dsr, actor=Actor.subject())  # hooks not run: as if the process died
    drive(clock)
    assert MixpanelTask.objects.get().state == TaskState.CANCELLED
    assert len(mixpanel.of("cancel_deletion")) == 1


@pytest.mark.parametrize(
    ("reply", "blocked"),
    [
        (Reply(429, {"error": "limited"}), False),
        (Reply(400, {"error": "bad"}), False),
        (Reply(timeout=True), True),
        (Reply(502, "x"), True),
    ],
    ids=["after-429", "after-400", "after-timeout", "after-5xx"],
)
def test_a_deletion_whose_create_may_have_gone_through_cannot_be_withdrawn_yet(
    clock, mixpanel, make_request, staff_actor, project, settings, reply, blocked, django_capture_on_commit_callbacks
):
    settings.MIXPANEL_MAX_ATTEMPTS = 5
    dsr = approve(make_request, staff_actor, distinct_ids=["a", "b"] if reply.status == 400 else ["a"])
    mixpanel.queue("create_deletion", reply)
    pipeline.plan_approved()
    clock.move_to(timezone.now() + timedelta(seconds=31))
    run_due(clock)
    task = MixpanelTask.objects.get(parent__isnull=True)
    assert task.tracking_id == "" and task.attempts == 1
    reason = pipeline.request_withdrawal_blocker(dsr)
    assert bool(reason) is blocked, reason
    if not blocked:
        withdraw(dsr, django_capture_on_commit_callbacks)
        drive(clock)
        assert len(mixpanel.of("create_deletion")) == 1  # nothing sent after the withdrawal
        assert set(MixpanelTask.objects.values_list("state", flat=True)) <= {TaskState.CANCELLED, TaskState.SUPERSEDED}
