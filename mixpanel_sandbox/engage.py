"""The sandbox's Query API profile query: ``POST /sandbox/mixpanel/api/query/engage`` (docs/identity.md §1).

The same contract as Mixpanel's, so gdpr_requests/mixpanel/query_client.py works against it unchanged:
- ``?project_id=`` names a MixpanelProject by its Mixpanel id; HTTP Basic auth is that project's service account
  (username:secret) or its API secret with an empty password, else 401;
- a form body whose ``where`` is ``properties["P"] == "V"`` clauses joined with `` or `` (anything else: 400),
  optional ``output_properties``; ``session_id`` and ``page`` for the pages after the first (PAGE_SIZE each);
- at most 60 queries per project in any rolling MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS (the hour, scaled like
  the sandbox's task steps) and 5 at once, else 429 with Retry-After (the limiter of gdpr_requests/identity,
  with the sandbox's own budget and keys). The fault knobs (429, 5xx, slow) apply as to the GDPR API.

Profiles: SEEDED (one email on two profiles, a named one and an anonymous ``$device:`` one, as ID merge leaves
them), plus one synthetic profile for any address at SYNTHETIC_DOMAIN, so demos and benchmarks find people.
Every answer is recorded in ``recorder`` (times and project only) for the benchmark. Nothing is logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from gdpr_requests.identity import query_limiter
from gdpr_requests.models import MixpanelProject
from mixpanel_sandbox import views as sandbox

PAGE_SIZE = 1000
QUERY_LIMIT = 60
QUERY_CONCURRENCY = 5
SYNTHETIC_DOMAIN = "sandbox.example"
SEEDED: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "user-1001",
        {"$email": "jane.doe@example.com", "$name": "Jane Doe", "$last_seen": "2026-11-20T09:14:00"},
    ),
    (
        "$device:5f0c9a7e-1d2b-4c8e-9f3a-2b7d6e1c4a90",
        {"$email": "jane.doe@example.com", "$last_seen": "2026-10-02T18:40:11"},
    ),
    ("user-1002", {"$email": "sam.lee@example.com", "$name": "Sam Lee", "$last_seen": "2026-11-28T16:05:42"}),
    ("user-1003", {"email": "Alex.Kim@Example.com", "$name": "Alex Kim", "$last_seen": "2026-09-12T07:30:00"}),
)
_CLAUSE = r'properties\["((?:[^"\\]|\\.)*)"\] == "((?:[^"\\]|\\.)*)"'
_WHERE = re.compile(rf"{_CLAUSE}(?: or {_CLAUSE})*")
_ONE = re.compile(_CLAUSE)
MAX_CLAUSES = 500


def query_window_seconds() -> float:
    return max(0.001, float(settings.MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS))


@dataclass
class Recorder:
    """What the sandbox answered, for the benchmark: (project id, start, end, HTTP status) per query."""

    calls: list[tuple[str, float, float, int]] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    most_running: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, project_id: str) -> float:
        with self.lock:
            self.running[project_id] = self.running.get(project_id, 0) + 1
            self.most_running[project_id] = max(self.most_running.get(project_id, 0), self.running[project_id])
        return time.monotonic()

    def end(self, project_id: str, started: float, status: int) -> None:
        with self.lock:
            self.running[project_id] -= 1
            self.calls.append((project_id, started, time.monotonic(), status))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.running.clear()
            self.most_running.clear()


recorder = Recorder()


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), value)


def synthetic_distinct_id(email: str) -> str:
    return "sbx-" + hashlib.sha256(email.encode()).hexdigest()[:12]


def matching_profiles(clauses: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """Profiles any clause matches (exact, case-sensitive ``==``, as Mixpanel's)."""
    found: dict[str, dict[str, Any]] = {}
    for distinct_id, properties in SEEDED:
        if any(properties.get(prop) == value for prop, value in clauses):
            found[distinct_id] = properties
    for prop, value in clauses:
        if prop == "$email" and value.endswith("@" + SYNTHETIC_DOMAIN):
            found.setdefault(synthetic_distinct_id(value), {"$email": value, "$last_seen": "2026-11-30T12:00:00"})
    return sorted(found.items())


def _authenticate(request: HttpRequest) -> MixpanelProject | JsonResponse:
    project_id = request.GET.get("project_id", "").strip()
    if not project_id:
        return sandbox._error(400, "project_id is required when authenticating with a service account")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    try:
        username, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        username = secret = ""
    if scheme.lower() != "basic" or not username:
        return sandbox._error(401, "missing credentials: use HTTP Basic auth", WWW_Authenticate='Basic realm="sandbox"')
    for project in MixpanelProject.objects.filter(mixpanel_project_id=project_id):
        if project.query_username and project.query_secret and _same(project.query_username, username):
            if _same(project.query_secret, secret):
                return project
        elif project.api_secret and not secret and _same(project.api_secret, username):
            return project
    return sandbox._error(401, "invalid service account credentials for this project")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def _clauses(where: str) -> list[tuple[str, str]]:
    if not _WHERE.fullmatch(where):
        raise ValueError('unsupported where: use properties["P"] == "V" joined with or')
    clauses = [(_unescape(p), _unescape(v)) for p, v in _ONE.findall(where)]
    if len(clauses) > MAX_CLAUSES:
        raise ValueError(f"where has more than {MAX_CLAUSES} clauses")
    return clauses


@csrf_exempt
def engage(request: HttpRequest) -> JsonResponse:
    off = sandbox._not_enabled()
    if off is not None:
        return off
    if request.method != "POST":
        return sandbox._method_not_allowed(["POST"])
    project = _authenticate(request)
    if isinstance(project, JsonResponse):
        return project
    key = "sandbox:" + project.mixpanel_project_id
    budget = query_limiter.Budget(QUERY_LIMIT, query_window_seconds(), QUERY_CONCURRENCY)
    try:
        token, wait = query_limiter.acquire(key, within=budget)
    except query_limiter.QueryLimiterUnavailable:
        return sandbox._error(503, "sandbox: rate limiter unavailable")
    if token is None:
        return sandbox._error(429, "Query rate limit exceeded", Retry_After=str(max(1, math.ceil(wait))))
    started = recorder.start(project.mixpanel_project_id)
    status = 200
    try:
        response = sandbox._faults(allow_429=True) or _answer(request)
        status = response.status_code
        return response
    finally:
        query_limiter.release(key, token)
        recorder.end(project.mixpanel_project_id, started, status)


def _answer(request: HttpRequest) -> JsonResponse:
    try:
        clauses = _clauses(request.POST.get("where", ""))
        page = int(request.POST.get("page", "0") or 0)
    except ValueError as exc:
        return sandbox._error(400, str(exc) if "where" in str(exc) else "page must be a whole number")
    session_id = request.POST.get("session_id", "")
    if page < 0 or (page > 0 and not session_id):
        return sandbox._error(400, "page > 0 needs the session_id of the first page")
    output = request.POST.get("output_properties")
    wanted: list[str] | None = None
    if output:
        try:
            wanted = [str(p) for p in json.loads(output)]
        except (ValueError, TypeError):
            return sandbox._error(400, "output_properties must be a JSON array")
    matches = matching_profiles(clauses)
    chunk = matches[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    results = [
        {
            "$distinct_id": distinct_id,
            "$properties": {k: v for k, v in props.items() if wanted is None or k in wanted},
        }
        for distinct_id, props in chunk
    ]
    return JsonResponse(
        {
            "page": page,
            "page_size": PAGE_SIZE,
            "session_id": session_id or uuid.uuid4().hex[:16],
            "status": "ok",
            "total": len(matches),
            "results": results,
        }
    )
