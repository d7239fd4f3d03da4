"""The paths that handle distinct ids in bulk (a 409 with its conflicting ids, a batch split, a refused cancel)
never put a subject's distinct id or email into a log record (any logger, DEBUG and up), a Celery task's
arguments, an ApiCall row or an audit payload. A canary id and email make any leak easy to see."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery.app.task import Task
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import ApiCall, AuditEvent, MixpanelTask, TaskState
from gdpr_requests.requests import services, states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    Reply,
    approve,
    clock,
    conflict_reply,
    drive,
    mixpanel,
    pipeline_settings,
    run_due,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]

CANARY_ID = "canary-d1st1nct-7f3e9a"
CANARY_EMAIL = "canary.subject.7f3e9a@canary.invalid"


@pytest.fixture
def every_log_record(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG for every logger, those that do not propagate to the root included (the handler of the
    test's call phase is attached to them when the test asks: ``listen(caplog)``)."""
    caplog.set_level(logging.DEBUG)
    attached: list[tuple[logging.Logger, logging.Handler, int]] = []

    def listen() -> None:
        for logger in list(logging.root.manager.loggerDict.values()):
            if isinstance(logger, logging.Logger) and not logger.propagate:
                attached.append((logger, caplog.handler, logger.level))
                logger.addHandler(caplog.handler)
                logger.setLevel(logging.DEBUG)

    caplog.listen = listen  # type: ignore[attr-defined]
    yield caplog
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def task_arguments(monkeypatch) -> list[str]:
    """Every Celery message's arguments, as sent (nothing reaches a broker)."""
    sent: list[str] = []

    def record(self, args=None, kwargs=None, **options):
        sent.append(f"{self.name} {args!r} {kwargs!r}")

    monkeypatch.setattr(Task, "apply_async", record)
    return sent


def canary_request(make_request, staff_actor, *ids: str):
    return approve(make_request, staff_actor, email=CANARY_EMAIL, name="Canary Subject", distinct_ids=list(ids))


def test_a_409_a_split_and_a_refused_cancel_log_no_distinct_id_or_email(
    clock,
    mixpanel,
    make_request,
    staff_actor,
    project,
    every_log_record,
    task_arguments,
    django_capture_on_commit_callbacks,
):
    every_log_record.listen()
    with django_capture_on_commit_callbacks(execute=True):
        # A 409 naming the canary id: it is linked to the running task, the rest resubmitted.
        conflicted = canary_request(make_request, staff_actor, CANARY_ID, "plain-1")
        approve(make_request, staff_actor, distinct_ids=["plain-2"])
        mixpanel.queue(
            "create_deletion",
            conflict_reply([CANARY_ID], ["running-elsewhere"], f"deletion already running for {CANARY_ID}"),
        )
        mixpanel.statuses["running-elsewhere"] = ["STARTED", "SUCCESS"]
        drive(clock)
        assert AuditEvent.objects.filter(action="task.conflict").exists()
        assert statuses(conflicted) == [states.COMPLETED]

        # A batch with the canary that Mixpanel fails: split, the bad id alone.
        split = canary_request(make_request, staff_actor, CANARY_ID, "plain-3")
        approve(make_request, staff_actor, distinct_ids=["plain-4"])
        mixpanel.bad_ids = {"plain-4"}
        drive(clock)
        assert AuditEvent.objects.filter(action="task.split").exists()
        assert statuses(split) == [states.COMPLETED]
        mixpanel.bad_ids = set()

        # A withdrawal whose cancel Mixpanel refuses.
        withdrawn = canary_request(make_request, staff_actor, CANARY_ID)
        pipeline.plan_approved()
        clock.move_to(timezone.now() + timedelta(seconds=31))
        run_due(clock)
        task = MixpanelTask.objects.get(requests=withdrawn, state=TaskState.SUBMITTED)
        mixpanel.statuses[task.tracking_id] = ["PENDING", "STARTED", "SUCCESS"]
        mixpanel.queue("cancel_deletion", Reply(400, {"status": "error", "error": f"{CANARY_ID} has started"}))
        services.request_cancel(request=withdrawn, actor=Actor.subject(), reason="changed my mind")
    with django_capture_on_commit_callbacks(execute=True):
        drive(clock)
    assert AuditEvent.objects.filter(action="task.cancel_refused").exists()

    records = every_log_record.records
    assert records, "nothing was logged: the check below would prove nothing"
    for record in records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''} {vars(record)!r}"
        assert CANARY_ID not in text and CANARY_EMAIL not in text, record.name
    assert task_arguments, "no Celery message was sent: the check below would prove nothing"
    for message in task_arguments:
        assert CANARY_ID not in message and CANARY_EMAIL not in message
    recorded = f"{list(ApiCall.objects.values())} {list(AuditEvent.objects.values_list('payload', flat=True))}"
    assert CANARY_ID not in recorded and CANARY_EMAIL not in recorded
