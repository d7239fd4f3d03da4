"""Settling a big batch's requests: chunk messages after the outcome commits, never in the poll's transaction,
and the sweep that makes up for a lost message. A small batch still settles inline."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.signals import task_prerun
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelProject, MixpanelTask, TaskState
from gdpr_requests.pipeline import settling
from gdpr_requests.pipeline.settling import SETTLE_CHUNK_SIZE, SETTLE_INLINE_MAX, SETTLE_SWEEP_GRACE
from gdpr_requests.requests import states
from tests.unit.pipeline.pipeline_support import approve, clock, eager_celery, mixpanel, pipeline_settings  # noqa: F401  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings", "clock", "eager_celery")]

CHUNK_TASK = "gdpr_requests.tasks.settle_requests_chunk"
BIG = 2 * SETTLE_CHUNK_SIZE + 30  # three chunks: two full ones and a remainder


@pytest.fixture
def task_calls() -> Iterator[list[tuple[str, tuple]]]:
    """(name, args) of every Celery task run in this test (eager mode runs them in-process)."""
    calls: list[tuple[str, tuple]] = []

    def record(sender: Any = None, args: Any = None, **_: Any) -> None:
        calls.append((sender.name, tuple(args or ())))

    task_prerun.connect(record, weak=False)
    yield calls
    task_prerun.disconnect(record)


def batch(clock: Any, make_request: Callable[..., Any], staff_actor: Any, count: int) -> tuple[MixpanelTask, list[int]]:
    """``count`` approved deletions coalesced into one task, submitted to Mixpanel: its next poll answers SUCCESS."""
    for n in range(count):
        approve(make_request, staff_actor, distinct_ids=[f"person-{n}"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    assert step_when_due(clock, task) == "submitted"
    task.refresh_from_db()
    return task, sorted(task.requests.values_list("pk", flat=True))


def step_when_due(clock: Any, task: MixpanelTask) -> str:
    task.refresh_from_db()
    if task.next_attempt_at > timezone.now():
        clock.move_to(task.next_attempt_at)
    return pipeline.task_step(task_id=task.pk)


def poll_capturing(clock: Any, task: MixpanelTask, capture: Any) -> tuple[str, list[Callable[[], Any]]]:
    """Poll the task once; return its outcome and the after-commit callbacks it left (not run yet)."""
    with capture(execute=False) as callbacks:
        outcome = step_when_due(clock, task)
    return outcome, list(callbacks)


def completions(ids: list[int]) -> dict[str, int]:
    """Audit events per request reference for request.complete, over the given requests."""
    refs = dict(DataSubjectRequest.objects.filter(pk__in=ids).values_list("reference", "pk"))
    counts = dict.fromkeys(refs, 0)
    for ref in AuditEvent.objects.filter(action="request.complete", request_reference__in=refs).values_list(
        "request_reference", flat=True
    ):
        counts[ref] += 1
    return counts


def processing(ids: list[int]) -> int:
    return DataSubjectRequest.objects.filter(pk__in=ids, status=states.PROCESSING).count()


def test_a_batch_serving_more_than_the_inline_limit_settles_through_chunk_messages(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, task_calls
):
    task, ids = batch(clock, make_request, staff_actor, BIG)
    outcome, callbacks = poll_capturing(clock, task, django_capture_on_commit_callbacks)
    assert outcome == "succeeded"
    task_calls.clear()
    for callback in callbacks:
        callback()  # the poll committed: its chunk messages go out (and run, eagerly)
    chunks = [args[0] for name, args in task_calls if name == CHUNK_TASK]
    assert [len(chunk) for chunk in chunks] == [SETTLE_CHUNK_SIZE, SETTLE_CHUNK_SIZE, 30]
    assert all(isinstance(pk, int) for chunk in chunks for pk in chunk)  # ids only through the broker
    assert sorted(pk for chunk in chunks for pk in chunk) == ids
    assert DataSubjectRequest.objects.filter(pk__in=ids, status=states.COMPLETED).count() == BIG
    assert set(completions(ids).values()) == {1}  # every completion audited, once
    # The task's success is on the trail before any of the completions it caused.
    succeeded = AuditEvent.objects.get(action="task.succeeded").sequence
    first_completion = AuditEvent.objects.filter(action="request.complete").order_by("sequence").first()
    assert first_completion is not None and first_completion.sequence > succeeded
    assert verify_database().ok


def test_the_polls_own_transaction_writes_no_completion_for_a_big_batch(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks
):
    task, ids = batch(clock, make_request, staff_actor, SETTLE_INLINE_MAX + 1)
    before = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    outcome, callbacks = poll_capturing(clock, task, django_capture_on_commit_callbacks)
    assert outcome == "succeeded"
    written = list(AuditEvent.objects.filter(sequence__gt=before).values_list("action", flat=True))
    assert "task.succeeded" in written
    assert not [action for action in written if action.startswith("request.")]
    assert processing(ids) == SETTLE_INLINE_MAX + 1
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED
    assert len(callbacks) == 1  # the chunk messages, sent once the poll commits


def test_a_lost_chunk_message_is_made_up_for_by_the_settle_sweep(
    mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, clock
):
    task, ids = batch(clock, make_request, staff_actor, SETTLE_CHUNK_SIZE + 20)
    outcome, _lost = poll_capturing(clock, task, django_capture_on_commit_callbacks)  # the broker loses every chunk
    assert outcome == "succeeded"
    # One chunk did arrive.
    assert pipeline.settle_chunk(request_ids=ids[:SETTLE_CHUNK_SIZE]) == SETTLE_CHUNK_SIZE
    # Within the grace period the sweep leaves the rest to their own messages ...
    assert pipeline.settle_finished() == 0
    assert processing(ids) == 20
    # ... after it, it settles them.
    clock.move_to(timezone.now() + SETTLE_SWEEP_GRACE + SETTLE_SWEEP_GRACE / 10)
    assert pipeline.settle_finished() == 20
    assert processing(ids) == 0
    assert set(completions(ids).values()) == {1}
    assert pipeline.settle_finished() == 0
    assert verify_database().ok


def test_a_small_batch_still_settles_inline_in_the_poll(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, task_calls
):
    task, ids = batch(clock, make_request, staff_actor, 3)
    with django_capture_on_commit_callbacks(execute=True):
        assert step_when_due(clock, task) == "succeeded"
    assert DataSubjectRequest.objects.filter(pk__in=ids, status=states.COMPLETED).count() == 3
    assert not [name for name, _ in task_calls if name == CHUNK_TASK]


def test_a_chunk_is_idempotent_and_leaves_requests_with_unfinished_tasks_alone(
    mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, clock
):
    task, ids = batch(clock, make_request, staff_actor, SETTLE_INLINE_MAX + 5)
    # One request also counts on a task in another project that has not finished.
    other = MixpanelProject.objects.create(
        name="Other app",
        mixpanel_project_id="777",
        project_token="t777",
        oauth_token="o777",
        token_expires_on=project.token_expires_on,
        base_url_override=project.base_url_override,
    )
    straddling = DataSubjectRequest.objects.get(pk=ids[0])
    running = MixpanelTask.objects.create(
        project=other, kind="deletion", compliance_type="GDPR", distinct_ids=["person-0"], tracking_id="elsewhere"
    )
    running.requests.add(straddling)
    poll_capturing(clock, task, django_capture_on_commit_callbacks)
    assert pipeline.settle_chunk(request_ids=ids) == len(ids) - 1
    assert pipeline.settle_chunk(request_ids=ids) == 0  # a duplicate message moves nothing
    clock.move_to(timezone.now() + 2 * SETTLE_SWEEP_GRACE)
    assert pipeline.settle_finished() == 0  # its other task is still running
    straddling.refresh_from_db()
    assert straddling.status == states.PROCESSING
    assert set(completions(ids[1:]).values()) == {1} and completions(ids[:1]) == {straddling.reference: 0}


def test_a_big_batch_mixpanel_lost_fails_its_requests_in_chunks_too(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, task_calls
):
    task, ids = batch(clock, make_request, staff_actor, SETTLE_CHUNK_SIZE + 1)
    mixpanel.statuses[task.tracking_id] = ["NOT_FOUND"]
    outcome, callbacks = poll_capturing(clock, task, django_capture_on_commit_callbacks)
    assert outcome == TaskState.NEEDS_ATTENTION
    assert not AuditEvent.objects.filter(action="request.fail").exists()
    task_calls.clear()
    for callback in callbacks:
        callback()
    assert [len(args[0]) for name, args in task_calls if name == CHUNK_TASK] == [SETTLE_CHUNK_SIZE, 1]
    assert DataSubjectRequest.objects.filter(pk__in=ids, status=states.FAILED).count() == len(ids)
    assert AuditEvent.objects.filter(action="request.fail").count() == len(ids)


def test_one_sweep_settles_at_most_its_limit_and_the_next_takes_the_rest(
    mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, clock, monkeypatch
):
    monkeypatch.setattr(settling, "SETTLE_SWEEP_MAX", SETTLE_INLINE_MAX)
    task, ids = batch(clock, make_request, staff_actor, SETTLE_INLINE_MAX + 10)
    poll_capturing(clock, task, django_capture_on_commit_callbacks)  # lost
    clock.move_to(timezone.now() + 2 * SETTLE_SWEEP_GRACE)
    assert pipeline.settle_finished() == SETTLE_INLINE_MAX
    assert pipeline.settle_finished() == 10
    assert processing(ids) == 0


def test_a_broker_that_refuses_the_first_chunk_is_not_asked_for_the_rest_and_the_sweep_settles_them(
    clock, mixpanel, make_request, staff_actor, project, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    from gdpr_requests.pipeline import tasks

    sent: list[list[int]] = []

    def refuse(args=None, kwargs=None, **options) -> None:
        sent.append(args[0])
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.settle_requests_chunk, "apply_async", refuse)
    task, ids = batch(clock, make_request, staff_actor, SETTLE_CHUNK_SIZE + 1)
    _, callbacks = poll_capturing(clock, task, django_capture_on_commit_callbacks)
    for callback in callbacks:
        callback()  # must not raise: the poll has committed
    assert len(sent) == 1
    assert "could not enqueue settling of 2 request chunk(s)" in caplog.text
    clock.move_to(timezone.now() + 2 * SETTLE_SWEEP_GRACE)
    assert pipeline.settle_finished() == len(ids)
    assert processing(ids) == 0
