"""Test support for the pipeline: a scripted Mixpanel behind the HTTP seam (``responses``), and a driver that
runs sweeps and steps the way beat and workers would, moving a frozen clock (time-machine) from one due
moment to the next.

Nothing but HTTP is faked: the database, the rate limiter, the audit trail and the exports are the real ones.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
import time_machine
from django.utils import timezone

BASE = "http://127.0.0.1:9/api/app"
FILES = "http://127.0.0.1:9/files/"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; bytes/str → sent as is
    headers: dict[str, str] = field(default_factory=dict)
    timeout: bool = False


@dataclass
class Call:
    operation: str
    method: str
    path: str
    tracking_id: str
    body: Any
    headers: dict[str, str]
    query: str
    at: datetime


class FakeMixpanel:
    """Mixpanel's GDPR API as the contract describes it, scripted per operation.

    Without a script, creates answer 201 with a new task id, status lookups answer from ``statuses`` (a list per
    tracking id, consumed one per poll, the last one repeating; default SUCCESS; FAILURE for a deletion that
    carries one of ``bad_ids``), cancels answer 204, and a retrieval's link serves ``result_body``.
    ``queue(operation, Reply...)`` makes the next calls of an operation answer as given instead.
    With ``conflicts`` on, a deletion create for ids a deletion still runs for answers 409 naming that task (as
    real clients report: MIXPANEL_GDPR_API.md "Errors"); a task runs until a lookup reports a final status.
    """

    operations = (
        "create_deletion",
        "deletion_status",
        "cancel_deletion",
        "create_retrieval",
        "retrieval_status",
        "download",
    )

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.calls: list[Call] = []
        self.scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, list[str]] = {}
        self.default_status = "SUCCESS"
        self.bad_ids: set[str] = set()
        self.conflicts = False
        self.finished: set[str] = set()
        self.result_body: bytes = _zip({"events.json": b'[{"event": "Signed up"}]'})
        self.result_url: Callable[[str], str] = lambda tracking_id: f"{FILES}{tracking_id}.zip"
        self._counter = 0
        escaped = re.escape(BASE)
        mock.add_callback(
            "POST", re.compile(rf"{escaped}/data-deletions/v3\.0/(\?.*)?$"), self._handler("create_deletion")
        )
        mock.add_callback(
            "GET", re.compile(rf"{escaped}/data-deletions/v3\.0/[^/?]+(\?.*)?$"), self._handler("deletion_status")
        )
        mock.add_callback(
            "DELETE", re.compile(rf"{escaped}/data-deletions/v3\.0/[^/?]+(\?.*)?$"), self._handler("cancel_deletion")
        )
        mock.add_callback(
            "POST", re.compile(rf"{escaped}/data-retrievals/v3\.0/(\?.*)?$"), self._handler("create_retrieval")
        )
        mock.add_callback(
            "GET", re.compile(rf"{escaped}/data-retrievals/v3\.0/[^/?]+(\?.*)?$"), self._handler("retrieval_status")
        )
        mock.add_callback("GET", re.compile(rf"{re.escape(FILES)}.*"), self._handler("download"))

    # -- scripting ---------------------------------------------------------------------------------------

    def queue(self, operation: str, *replies: Reply) -> None:
        assert operation in self.operations, operation
        self.scripts[operation].extend(replies)

    def of(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    @property
    def http_calls(self) -> list[Call]:
        return list(self.calls)

    def new_task_id(self) -> str:
        self._counter += 1
        return f"task-{self._counter:04d}"

    # -- serving -----------------------------------------------------------------------------------------

    def _handler(self, operation: str) -> Callable[[Any], tuple[int, dict[str, str], bytes]]:
        def handle(request: Any) -> tuple[int, dict[str, str], bytes]:
            parts = urlsplit(request.url)
            tracking_id = ""
            if operation in ("deletion_status", "cancel_deletion", "retrieval_status"):
                tracking_id = parts.path.rstrip("/").rsplit("/", 1)[-1]
            body = json.loads(request.body) if request.body else None
            self.calls.append(
                Call(
                    operation,
                    request.method,
                    parts.path,
                    tracking_id,
                    body,
                    dict(request.headers),
                    parts.query,
                    timezone.now(),
                )
            )
            if self.scripts[operation]:
                reply = self.scripts[operation].popleft()
                if reply.timeout:
                    import requests

                    raise requests.exceptions.ReadTimeout("read timed out")
                return _encode(reply)
            return _encode(getattr(self, f"_{operation}")(tracking_id, body, request))

        return handle

    def _create(self, kind: str, body: Any) -> Reply:
        tracking_id = self.new_task_id()
        self.tasks[tracking_id] = {"kind": kind, "ids": list(body["distinct_ids"]), "body": body}
        return Reply(201, {"status": "ok", "results": {"task_id": tracking_id}})

    def _create_deletion(self, tracking_id: str, body: Any, request: Any) -> Reply:
        if self.conflicts:
            wanted = set(body["distinct_ids"])
            running = {
                tid: sorted(wanted.intersection(task["ids"]))
                for tid, task in self.tasks.items()
                if task["kind"] == "deletion" and tid not in self.finished and wanted.intersection(task["ids"])
            }
            if running:
                return conflict_reply(sorted({i for ids in running.values() for i in ids}), sorted(running))
        return self._create("deletion", body)

    def _create_retrieval(self, tracking_id: str, body: Any, request: Any) -> Reply:
        return self._create("retrieval", body)

    def _status_of(self, tracking_id: str) -> str:
        task = self.tasks.get(tracking_id)
        if task is None and tracking_id not in self.statuses:
            return "NOT_FOUND"
        script = self.statuses.get(tracking_id)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        if task and task["kind"] == "deletion" and self.bad_ids.intersection(task["ids"]):
            status = "FAILURE"
        else:
            status = self.default_status
        if status in ("SUCCESS", "FAILURE", "REVOKED"):
            self.finished.add(tracking_id)
        return status

    def _deletion_status(self, tracking_id: str, body: Any, request: Any) -> Reply:
        status = self._status_of(tracking_id)
        task = self.tasks.get(tracking_id, {"ids": []})
        return Reply(
            200,
            {
                "status": "ok",
                "results": {
                    "tracking_id": tracking_id,
                    "status": status,
                    "requesting_user": "owner@company.example",
                    "compliance_type": "gdpr",
                    "project_id": 12345,
                    "date_requested": "2026-03-02T09:00:00",
                    "distinct_ids": task["ids"],
                },
            },
        )

    def _cancel_deletion(self, tracking_id: str, body: Any, request: Any) -> Reply:
        return Reply(204, b"")

    def _retrieval_status(self, tracking_id: str, body: Any, request: Any) -> Reply:
        status = self._status_of(tracking_id)
        link = self.result_url(tracking_id) if status == "SUCCESS" else ""
        return Reply(200, {"status": "ok", "results": {"status": status, "result": link, "distinct_ids": []}})

    def _download(self, tracking_id: str, body: Any, request: Any) -> Reply:
        return Reply(200, self.result_body, {"Content-Type": "application/zip"})


def conflict_reply(distinct_ids: list[str], task_ids: list[str], text: str = "deletion already running") -> Reply:
    """A 409 to a deletion create, in the shape real clients report (MIXPANEL_GDPR_API.md "Errors")."""
    error = {"conflicting_distinct_ids": distinct_ids, "conflicting_task_ids": task_ids, "error": text}
    return Reply(409, {"status": "error", "error": error})


def _encode(reply: Reply) -> tuple[int, dict[str, str], bytes]:
    if isinstance(reply.body, dict | list):
        return reply.status, {"Content-Type": "application/json", **reply.headers}, json.dumps(reply.body).encode()
    if isinstance(reply.body, str):
        return reply.status, reply.headers, reply.body.encode()
    return reply.status, reply.headers, reply.body or b""


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    return _zip(members)


# --- fixtures (imported by the pipeline test modules) -------------------------------------------------


@pytest.fixture
def pipeline_settings(settings) -> Any:
    """Fast, deterministic pipeline settings; the database rate limiter (time-machine moves its clock)."""
    settings.REDIS_URL = ""
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 1.0
    settings.GDPR_POLL_INITIAL_SECONDS = 300.0
    settings.GDPR_POLL_MAX_SECONDS = 21600.0
    settings.MIXPANEL_BACKOFF_BASE_SECONDS = 30.0
    settings.MIXPANEL_BACKOFF_MAX_SECONDS = 6 * 3600.0
    settings.MIXPANEL_MAX_ATTEMPTS = 12
    settings.GDPR_DELETION_COALESCE_SECONDS = 30.0
    settings.GDPR_DISPATCH_INTERVAL_SECONDS = 5.0
    settings.STAFF_ALERT_EMAILS = ["privacy-team@company.example"]
    return settings


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def mixpanel() -> Iterator[FakeMixpanel]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeMixpanel(mock)


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Enqueued Celery tasks run inline (after commit, when a test captures on_commit callbacks)."""
    from compliance.celery import app

    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


# --- driving ------------------------------------------------------------------------------------------


def approve(make_request: Callable[..., Any], staff_actor: Any, **overrides: Any) -> Any:
    """A request made through intake, verified and approved by staff."""
    from gdpr_requests.requests import services

    overrides.setdefault("verified_by_staff", "seen in person")
    overrides.setdefault("channel", "staff")
    dsr = make_request(**overrides)
    return services.request_approve(request=dsr, actor=staff_actor)


def run_due(clock: time_machine.Traveller) -> int:
    """One sweep, then a step of every task that is due now (as workers would). Returns steps run."""
    from gdpr_requests import pipeline
    from gdpr_requests.models import MixpanelTask
    from gdpr_requests.pipeline.task_states import DISPATCHABLE

    pipeline.dispatch_due()
    ran = 0
    now = timezone.now()
    for task_id in (
        MixpanelTask.objects.filter(state__in=DISPATCHABLE, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)
    ):
        pipeline.task_step(task_id=task_id)
        ran += 1
    return ran


def drive(clock: time_machine.Traveller, *, max_rounds: int = 300, until: Callable[[], bool] | None = None) -> int:
    """Plan, then run sweeps and steps, jumping the clock to the next due task, until no task is due any more
    (or ``until()`` holds). Returns the number of rounds; fails when the scenario does not settle."""
    from gdpr_requests import pipeline
    from gdpr_requests.models import MixpanelTask
    from gdpr_requests.pipeline.task_states import DISPATCHABLE

    pipeline.plan_approved()
    for round_number in range(max_rounds):
        if until is not None and until():
            return round_number
        upcoming = (
            MixpanelTask.objects.filter(state__in=DISPATCHABLE, next_attempt_at__isnull=False)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        if upcoming is None:
            return round_number
        if upcoming > timezone.now():
            clock.move_to(upcoming)
        run_due(clock)
        pipeline.plan_approved()
    raise AssertionError(f"the scenario did not settle in {max_rounds} rounds")


def statuses(*requests: Any) -> list[str]:
    for r in requests:
        r.refresh_from_db()
    return [r.status for r in requests]
