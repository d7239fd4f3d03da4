"""Canary: a requester's email address and distinct id never reach the logs or the broker.

A person submits a deletion and an access request through the public form with a canary address and a canary
distinct id, confirms through the emailed link, staff approve, and the pipeline carries both out against a
Mixpanel faked at the HTTP seam (``responses``). Every Celery message is recorded at ``apply_async`` and then run
the way a worker would (at its countdown, on a frozen clock that the test moves). Every log record of every
logger is captured at DEBUG, with the redaction safety net switched off: the code itself must not log them.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
import time_machine
from django.core import mail
from django.utils import timezone

from gdpr_requests.models import ApiCall, AuditEvent, DataSubjectRequest, MixpanelTask
from gdpr_requests.requests import services, states

pytestmark = pytest.mark.django_db

CANARY_EMAIL = "canary.7f3a9c@example.org"
CANARY_ID = "canary-distinct-9e2b41"
CANARY_NAME = "Canary Quill Person"
CANARIES = (CANARY_EMAIL, CANARY_ID, "canary.7f3a9c", "9e2b41", CANARY_NAME)
BASE = "http://127.0.0.1:9/api/app"  # the conftest project's base URL override
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# --- a Mixpanel at the HTTP seam ----------------------------------------------------------------------
class FakeMixpanel:
    """Creates answer 201 with a new task id; status lookups answer SUCCESS; results are a small ZIP."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.count = 0
        self.ids: dict[str, list[str]] = {}
        base = re.escape(BASE)
        for kind in ("deletions", "retrievals"):
            mock.add_callback("POST", re.compile(rf"{base}/data-{kind}/v3\.0/?(\?.*)?$"), self.create)
            mock.add_callback("GET", re.compile(rf"{base}/data-{kind}/v3\.0/[^/?]+/?(\?.*)?$"), self.status)
        mock.add_callback("GET", re.compile(r"http://127\.0\.0\.1:9/files/.*"), self.download)

    def create(self, request: Any) -> tuple[int, dict, str]:
        self.count += 1
        tracking_id = f"task-{self.count}"
        self.ids[tracking_id] = json.loads(request.body)["distinct_ids"]
        return (
            201,
            {"Content-Type": "application/json"},
            json.dumps({"status": "ok", "results": {"task_id": tracking_id}}),
        )

    def status(self, request: Any) -> tuple[int, dict, str]:
        tracking_id = urlsplit(request.url).path.rstrip("/").rsplit("/", 1)[-1]
        results = {
            "status": "SUCCESS",
            "tracking_id": tracking_id,
            "distinct_ids": self.ids.get(tracking_id, []),
            "requesting_user": "token-owner@company.example",
            "compliance_type": "GDPR",
            "project_id": 12345,
            "date_requested": "2026-03-02T09:00:00",
            "result": f"http://127.0.0.1:9/files/{tracking_id}.zip",
        }
        return 200, {"Content-Type": "application/json"}, json.dumps({"status": "ok", "results": results})

    def download(self, request: Any) -> tuple[int, dict, bytes]:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("events.json", json.dumps([{"event": "Signed up", "distinct_id": CANARY_ID}]))
        return 200, {"Content-Type": "application/zip"}, buffer.getvalue()


# --- a broker that records, and a worker that runs what it recorded ----------------------------------
@dataclass
class Message:
    task: Any
    args: tuple
    kwargs: dict
    options: dict
    eta: datetime


class RecordingBroker:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.queue: list[Message] = []

    def apply_async(self, task: Any, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        countdown = options.get("countdown") or 0
        message = Message(
            task, tuple(args or ()), dict(kwargs or {}), options, timezone.now() + timedelta(seconds=countdown)
        )
        self.sent.append(message)
        self.queue.append(message)

    def run_due(self, capture: Any) -> int:
        """Run every message whose time has come, as a worker would; what they enqueue joins the queue."""
        ran = 0
        while due := [m for m in self.queue if m.eta <= timezone.now()]:
            message = due[0]
            self.queue.remove(message)
            with capture(execute=True):
                message.task.run(*message.args, **message.kwargs)
            ran += 1
        return ran


@pytest.fixture
def broker(monkeypatch) -> RecordingBroker:
    from celery.app.task import Task

    recorder = RecordingBroker()

    def apply_async(self, args=None, kwargs=None, **options):
        recorder.apply_async(self, args, kwargs, **options)

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return recorder


@pytest.fixture
def all_logs(caplog, monkeypatch):
    """Every record of every logger at DEBUG, as the code wrote it (the redaction safety net is off)."""
    from gdpr_requests.ops.logging import RedactFilter

    monkeypatch.setattr(RedactFilter, "filter", lambda self, record: True)
    caplog.set_level(logging.DEBUG)
    # The "django" logger does not propagate to the root (settings.LOGGING): listen to it directly too.
    django_logger = logging.getLogger("django")
    django_logger.addHandler(caplog.handler)
    previous = django_logger.level
    django_logger.setLevel(logging.DEBUG)
    yield caplog
    django_logger.removeHandler(caplog.handler)
    django_logger.setLevel(previous)


def submit(client, kind: str) -> None:
    page = client.get("/request/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = client.post(
        "/request/",
        {
            "csrfmiddlewaretoken": token,
            "name": CANARY_NAME,
            "email": CANARY_EMAIL,
            "kind": kind,
            "residence": "eea_uk",
            "distinct_ids": CANARY_ID,
            "message": f"Please act on {CANARY_ID} for {CANARY_EMAIL}",
            "website": "",
        },
    )
    assert response.status_code == 302, response.content[:300]


def everything_logged(records: list[logging.LogRecord]) -> str:
    """Each record as the production (JSON) and development (text) formatters would write it, plus raw."""
    from gdpr_requests.ops.logging import JsonFormatter, TextFormatter

    json_formatter, text_formatter = JsonFormatter(), TextFormatter()
    lines = []
    for record in records:
        lines.append(json_formatter.format(record))
        lines.append(text_formatter.format(record))
        lines.append(repr(vars(record)))
    return "\n".join(lines)


def test_canary_email_and_distinct_id_never_reach_logs_or_task_arguments(
    client, settings, project, staff_actor, broker, all_logs, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    client = type(client)(enforce_csrf_checks=True)
    capture = django_capture_on_commit_callbacks

    with (
        time_machine.travel(START, tick=False) as clock,
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        FakeMixpanel(mock)
        # The public form, twice: a deletion and a copy of the data.
        with capture(execute=True):
            submit(client, "deletion")
            submit(client, "access")
        broker.run_due(capture)
        requests_made = list(DataSubjectRequest.objects.all())
        assert len(requests_made) == 2

        # The confirmation emails (the one place the address belongs) carry the links the person follows.
        links = {m for msg in mail.outbox for m in re.findall(r"https?://[^\s]+/verify/[^/\s]+/", msg.body)}
        assert len(links) == 2, [m.body for m in mail.outbox]
        for link in links:
            path = urlsplit(link).path
            page = client.get(path)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
            with capture(execute=True):
                assert client.post(path, {"csrfmiddlewaretoken": token}).status_code == 302
        broker.run_due(capture)

        for dsr in requests_made:
            dsr.refresh_from_db()
            assert dsr.status == states.VERIFIED
            with capture(execute=True):
                services.request_approve(request=dsr, actor=staff_actor)

        # Workers and beat, on a clock the test moves: run due messages, sweep, jump to the next due moment.
        from gdpr_requests.pipeline import tasks

        for _round in range(200):
            broker.run_due(capture)
            if all(r.status == states.COMPLETED for r in DataSubjectRequest.objects.all()):
                break
            with capture(execute=True):
                tasks.plan_approved_requests()
                tasks.dispatch_due_tasks()
            broker.run_due(capture)
            upcoming = [m.eta for m in broker.queue] + list(
                MixpanelTask.objects.filter(next_attempt_at__isnull=False, finished_at__isnull=True).values_list(
                    "next_attempt_at", flat=True
                )
            )
            later = [moment for moment in upcoming if moment > timezone.now()]
            clock.move_to(min(later) if later else timezone.now() + timedelta(seconds=5))
        statuses = sorted(DataSubjectRequest.objects.values_list("status", flat=True))
        assert statuses == [states.COMPLETED, states.COMPLETED]

    # The pipeline really ran: tasks at Mixpanel, calls logged, messages through the broker, lots of logging.
    assert ApiCall.objects.filter(outcome="ok").count() >= 4
    names = {message.task.name for message in broker.sent}
    assert {"gdpr_requests.tasks.notify_subject", "gdpr_requests.tasks.run_mixpanel_task"} <= names
    assert len(all_logs.records) > 0

    # Neither canary in any Celery message ...
    for message in broker.sent:
        sent = repr((message.task.name, message.args, message.kwargs, message.options))
        for canary in CANARIES:
            assert canary not in sent, f"{canary!r} in a Celery message: {message.task.name}"
    # ... in any log record, however it is formatted ...
    logged = everything_logged(all_logs.records)
    for canary in CANARIES:
        assert canary not in logged, f"{canary!r} was logged"
    # ... or in the audit trail and the API call log.
    trail = json.dumps(list(AuditEvent.objects.values("actor_label", "action", "request_reference", "payload")))
    calls = json.dumps(list(ApiCall.objects.values("operation", "outcome")))
    for canary in CANARIES:
        assert canary not in trail
        assert canary not in calls
