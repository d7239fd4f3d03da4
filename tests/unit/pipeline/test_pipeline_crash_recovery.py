"""A worker killed mid-call: every call is recorded before it is sent, and the next step reconciles instead of
blindly creating again (a deletion adopts the task the 409 names; a lost retrieval is a visible orphan)."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import ApiCall, AuditEvent, MixpanelTask, TaskState
from gdpr_requests.pipeline import calls, steps
from gdpr_requests.requests import states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    approve,
    clock,
    drive,
    mixpanel,
    pipeline_settings,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


class WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way out catches it (the client swallows
    Exceptions raised by its on_call hook, never this)."""


def kill_when(monkeypatch, module, name: str, *, operation_prefix: str = "") -> None:
    """Make ``module.name`` kill the worker (once), for calls of operations starting with ``operation_prefix``."""
    real = getattr(module, name)

    def killer(*args, **kwargs):
        record = kwargs.get("record")
        if record is None or record.operation.startswith(operation_prefix):
            monkeypatch.setattr(module, name, real)
            raise WorkerKilled
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, killer)


def step_killed(clock, task: MixpanelTask) -> None:
    task.refresh_from_db()
    assert task.next_attempt_at is not None
    clock.move_to(max(task.next_attempt_at, timezone.now()))
    with pytest.raises(WorkerKilled):
        pipeline.task_step(task_id=task.pk)


def after_the_lease(clock) -> None:
    clock.move_to(timezone.now() + timedelta(seconds=301))  # GDPR_STEP_LEASE_SECONDS


def outcomes(operation: str) -> list[str]:
    return list(
        ApiCall.objects.filter(operation=operation).order_by("created_at", "pk").values_list("outcome", flat=True)
    )


def assert_every_call_recorded(mixpanel) -> None:
    assert ApiCall.objects.count() == len(mixpanel.calls)
    assert not ApiCall.objects.filter(outcome=calls.SENDING).exists()
    assert AuditEvent.objects.filter(action="mixpanel.call").count() == len(mixpanel.calls)


@pytest.mark.parametrize(
    "kill_point",
    ["before the answer is recorded", "after the answer is recorded, before the task id is"],
)
def test_a_deletion_whose_worker_died_mid_create_adopts_the_task_the_409_names_and_is_not_created_twice(
    clock, mixpanel, make_request, staff_actor, project, monkeypatch, kill_point
):
    mixpanel.conflicts = True
    dsr = approve(make_request, staff_actor, distinct_ids=["victim-1", "victim-2"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    if kill_point.startswith("before"):
        kill_when(monkeypatch, calls, "api_call_record", operation_prefix="create_")
    else:
        kill_when(monkeypatch, steps, "_submitted")
    step_killed(clock, task)

    # The call was committed as SENDING before it went out (and, at the later kill point, answered OK).
    assert outcomes("create_deletion") == [calls.SENDING if kill_point.startswith("before") else "ok"]
    assert len(mixpanel.tasks) == 1  # Mixpanel did create it
    task.refresh_from_db()
    assert task.state == TaskState.PENDING_SUBMIT and task.tracking_id == ""

    after_the_lease(clock)
    drive(clock)

    task.refresh_from_db()
    assert task.tracking_id == "task-0001" and task.state == TaskState.SUCCEEDED
    assert MixpanelTask.objects.count() == 1  # adopted: no LINKED_BY_CONFLICT stand-in, no child
    assert len(mixpanel.tasks) == 1  # and no second deletion at Mixpanel
    assert len(mixpanel.of("create_deletion")) == 2
    first = calls.UNANSWERED if kill_point.startswith("before") else "ok"
    assert outcomes("create_deletion") == [first, "conflict"]
    assert_every_call_recorded(mixpanel)
    lost = AuditEvent.objects.get(action="task.create_answer_lost")
    assert lost.payload["task_id"] == task.pk and lost.payload["possibly_created"] is True
    assert AuditEvent.objects.get(action="task.submitted").payload["adopted"] is True
    assert "ADOPTED" in [entry["status"] for entry in task.status_history]
    assert statuses(dsr) == [states.COMPLETED]
    assert verify_database().ok


def test_a_409_after_a_lost_create_that_names_only_some_ids_is_linked_not_adopted(
    clock, mixpanel, make_request, staff_actor, project, monkeypatch
):
    """The lost create evidently did not go through (a create is all or nothing): the usual 409 handling."""
    dsr = approve(make_request, staff_actor, distinct_ids=["mine", "shared"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    kill_when(monkeypatch, calls, "api_call_record", operation_prefix="create_")
    step_killed(clock, task)
    mixpanel.tasks.clear()  # as if Mixpanel had refused or lost that first create
    mixpanel.tasks["someone-else"] = {"kind": "deletion", "ids": ["shared"], "body": {}}
    mixpanel.conflicts = True
    after_the_lease(clock)
    drive(clock)
    task.refresh_from_db()
    assert task.state == TaskState.SUPERSEDED and task.tracking_id == ""
    assert MixpanelTask.objects.get(tracking_id="someone-else").distinct_ids == ["shared"]
    assert not AuditEvent.objects.filter(action="task.submitted", payload__adopted=True).exists()
    assert statuses(dsr) == [states.COMPLETED]
    assert_every_call_recorded(mixpanel)


def test_a_retrieval_whose_worker_died_mid_create_is_an_orphan_in_the_evidence_and_staff_are_told_once(
    clock, mixpanel, make_request, staff_actor, project, monkeypatch, django_capture_on_commit_callbacks
):
    dsr = approve(make_request, staff_actor, kind="access", distinct_ids=["orphan-subject"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    kill_when(monkeypatch, calls, "api_call_record", operation_prefix="create_")
    step_killed(clock, task)
    orphan_call = ApiCall.objects.get(operation="create_retrieval")
    assert orphan_call.outcome == calls.SENDING

    after_the_lease(clock)
    with django_capture_on_commit_callbacks(execute=True):
        drive(clock)

    # Mixpanel has no way to look the first one up (no list endpoint): it ran twice, and it shows.
    assert len(mixpanel.of("create_retrieval")) == 2 and len(mixpanel.tasks) == 2
    assert outcomes("create_retrieval") == [calls.UNANSWERED, "ok"]
    assert_every_call_recorded(mixpanel)
    lost = AuditEvent.objects.get(action="task.create_answer_lost")
    assert lost.request_reference == dsr.reference
    assert lost.payload["task_id"] == task.pk
    assert lost.payload["api_call_ids"] == [orphan_call.pk]
    assert lost.payload["possibly_created"] is True and lost.payload["remote_id_known"] is False
    alerts = [m for m in mail.outbox if "may have been created twice" in m.subject]
    assert len(alerts) == 1
    assert f"task #{task.pk}" in alerts[0].body and "orphan-subject" not in alerts[0].body
    assert statuses(dsr) == [states.COMPLETED]
    assert verify_database().ok


def test_a_worker_killed_mid_poll_leaves_a_recorded_call_that_the_next_step_writes_off(
    clock, mixpanel, make_request, staff_actor, project, monkeypatch
):
    mixpanel.statuses["task-0001"] = ["PENDING", "SUCCESS"]
    dsr = approve(make_request, staff_actor, distinct_ids=["polled"])
    drive(clock, until=lambda: MixpanelTask.objects.filter(state=TaskState.SUBMITTED).exists())
    task = MixpanelTask.objects.get()
    kill_when(monkeypatch, calls, "api_call_record", operation_prefix="deletion_status")
    step_killed(clock, task)
    assert outcomes("deletion_status") == [calls.SENDING]
    after_the_lease(clock)
    drive(clock)
    assert outcomes("deletion_status") == [calls.UNANSWERED, "ok"]
    assert_every_call_recorded(mixpanel)
    assert statuses(dsr) == [states.COMPLETED]
