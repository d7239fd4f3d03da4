"""Test support for identity lookups: a recording fake of Mixpanel's profile query behind the HTTP seam
(``responses``), projects with service accounts, verified email-only requests, and a driver that runs the beat
tick and the workers' batches the way Celery would, on a frozen clock."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import time_machine
from django.utils import timezone

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_CLAUSE = re.compile(r'properties\["((?:[^"\\]|\\.)*)"\] == "((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), value)


@dataclass
class Query:
    project_id: str
    auth: str
    clauses: list[tuple[str, str]]
    page: int
    at: datetime


@dataclass
class FakeEngage:
    """Mixpanel's /api/query/engage for several projects (told apart by ``project_id``), answering from
    ``profiles[project_id]`` (a list of (distinct_id, properties)). ``status_for[project_id]`` forces an HTTP
    status; ``page_size`` splits answers into pages. Records every query with the frozen clock's time."""

    profiles: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    status_for: dict[str, int] = field(default_factory=dict)
    page_size: int = 1000
    raw_reply: str = ""  # a 200 with this body instead of an answer
    queries: list[Query] = field(default_factory=list)

    def handle(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        assert parts.path.endswith("/api/query/engage")
        project_id = parse_qs(parts.query)["project_id"][0]
        form = parse_qs(request.body if isinstance(request.body, str) else request.body.decode())
        clauses = [(_unescape(p), _unescape(v)) for p, v in _CLAUSE.findall(form["where"][0])]
        page = int(form.get("page", ["0"])[0])
        self.queries.append(Query(project_id, request.headers.get("Authorization", ""), clauses, page, timezone.now()))
        status = self.status_for.get(project_id)
        if status:
            return status, {"Content-Type": "application/json"}, json.dumps({"error": "forced"})
        if self.raw_reply:
            return 200, {"Content-Type": "text/html"}, self.raw_reply
        matches = [
            (distinct_id, props)
            for distinct_id, props in self.profiles[project_id]
            if any(props.get(prop) == value for prop, value in clauses)
        ]
        chunk = matches[page * self.page_size : (page + 1) * self.page_size]
        body = {
            "page": page,
            "page_size": self.page_size,
            "session_id": "sess-1",
            "status": "ok",
            "total": len(matches),
            "results": [{"$distinct_id": d, "$properties": p} for d, p in chunk],
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def count(self, project_id: str) -> int:
        return sum(1 for q in self.queries if q.project_id == project_id)

    def busiest_window(self, project_id: str, window: timedelta) -> int:
        times = sorted(q.at for q in self.queries if q.project_id == project_id)
        best = 0
        for i, start in enumerate(times):
            best = max(best, sum(1 for t in times[i:] if t < start + window))
        return best


@pytest.fixture
def engage() -> Iterator[FakeEngage]:
    fake = FakeEngage()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, re.compile(r"http://127\.0\.0\.1:9/.*"), callback=fake.handle)
        yield fake


@pytest.fixture
def identity_settings(settings) -> Any:
    settings.REDIS_URL = ""
    settings.MIXPANEL_QUERY_LIMIT = 60
    settings.MIXPANEL_QUERY_WINDOW_SECONDS = 3600.0
    settings.MIXPANEL_QUERY_CONCURRENCY = 5
    settings.MIXPANEL_RESOLVE_BATCH = 25
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 5.0
    settings.STAFF_ALERT_EMAILS = ["privacy-team@company.example"]
    return settings


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def make_project(name: str, mixpanel_id: str, *, username: str = "sa.user", **extra: Any) -> Any:
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.identity.services import project_set_query_access
    from gdpr_requests.projects.services import project_create

    project = project_create(
        name=name,
        mixpanel_project_id=mixpanel_id,
        project_token=f"tok{mixpanel_id}",
        oauth_token="oauth-secret",
        token_expires_on="2027-06-01",
        base_url_override=f"http://127.0.0.1:9/{name.lower()}/api/app",
        actor=Actor.system(),
    )
    return project_set_query_access(
        project=project, actor=Actor.system(), username=username, secret=f"secret-{mixpanel_id}", **extra
    )


def make_verified(emails: list[str], *, kind: str = "deletion", projects: list[Any] | None = None) -> list[Any]:
    """Email-only requests, created verified (staff checked identity), in one intake transaction."""
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.requests.services import prepare_request, request_create_many

    actor = Actor.system()
    rows = [
        prepare_request(
            kind=kind, regulation="gdpr", email=email, channel="staff", verified_by_staff="seen in person", actor=actor
        )
        for email in emails
    ]
    return request_create_many(rows, actor=actor, projects=projects)


def drive(
    clock: time_machine.Traveller,
    capture: Callable[..., Any],
    *,
    step_seconds: float = 10.0,
    max_rounds: int = 500,
    until: Callable[[], bool] | None = None,
) -> int:
    """Beat ticks every ``step_seconds``; every batch a tick starts runs at once (as a free worker would).
    Stops when no lookup waits any more (or ``until()``); returns the ticks run."""
    from gdpr_requests.identity import resolution
    from gdpr_requests.models import IdentityLookup, LookupStatus

    sent: list[tuple[int, str]] = []
    original = resolution._send
    resolution._send = lambda project_id, token: sent.append((project_id, token))
    try:
        for tick in range(max_rounds):
            with capture(execute=True):
                resolution.lookups_dispatch()
            while sent:
                project_id, token = sent.pop(0)
                with capture(execute=True):
                    resolution.lookup_batch_run(project_id=project_id, token=token)
            if until is not None and until():
                return tick + 1
            if not IdentityLookup.objects.filter(status__in=[LookupStatus.WAITING, LookupStatus.RUNNING]).exists():
                return tick + 1
            clock.shift(step_seconds)
    finally:
        resolution._send = original
    raise AssertionError(f"lookups did not settle in {max_rounds} ticks")
