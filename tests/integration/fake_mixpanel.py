"""A local fake of Mixpanel's GDPR API v3 that records every call, for the integration tier and benchmarks.

It implements the contract in ``/work/shared/MIXPANEL_GDPR_API.md`` on 127.0.0.1 (a ThreadingHTTPServer in a
thread of the calling process): creates of retrievals and deletions, statuses that move PENDING → STAGING →
STARTED → SUCCESS over ``step_seconds`` each, cancel of a deletion while PENDING/STAGING, and a download link
(on the same origin as the API, as a proxy or sandbox would be) serving a ZIP of JSON events.

Every call is recorded as a :class:`Call` with its monotonic arrival time, method, path, operation, project
token and the status it was answered with, so tests can count creates and polls and check the rate limit from
the server's side. Faults are scripted with :meth:`FakeMixpanel.add_fault` (429 with or without Retry-After,
5xx, slow answers beyond the client timeout, malformed JSON, 401, anything) and by id: ``fail_ids`` make any
task holding them end in FAILURE, ``seed_running_deletion`` makes later creates with those ids answer 409
naming the running task. A deletion create that names ids with a deletion still running answers 409 too, as
Mixpanel does: that is how a lost create response is confirmed.

The Query API's profile query (``POST <prefix>/api/query/engage?project_id=N``, docs/identity.md §1) is
faked too, for identity lookups: HTTP Basic auth of a service account per project (:meth:`set_query_account`),
a form body whose ``where`` is ``properties["P"] == "V"`` clauses joined with `` or `` (anything else is a 400),
answers in the documented shape from seeded profiles (:meth:`seed_profiles`), paged by ``query_page_size``
through ``session_id``/``page``. Every query is recorded as a :class:`QueryCall` (project id, auth user, clause
count and values, page, session, start and end, status); the fake counts the most queries running at once and
answers 429 when a query would exceed ``query_budget`` (per project: queries arriving in any rolling window, and
queries running at once), so that a violation shows as a 429 and not only as a figure. A per-project fault
(:meth:`fail_queries`) answers e.g. 401 from the n-th query on.

The ids and tokens here are synthetic test data; nothing leaves loopback.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/api/app"
# The Query API's profile query, beside the GDPR API below the same prefix (query_client.engage_url).
QUERY_PATH = "/api/query/engage"
DOWNLOAD_PREFIX = "/download/"
PROGRESSION = ("PENDING", "STAGING", "STARTED")
FINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

# Operation names, the same as the client's ApiCall.operation values.
CREATE_RETRIEVAL = "create_retrieval"
RETRIEVAL_STATUS = "retrieval_status"
CREATE_DELETION = "create_deletion"
DELETION_STATUS = "deletion_status"
CANCEL_DELETION = "cancel_deletion"
DOWNLOAD = "download"
QUERY_ENGAGE = "query_engage"
CREATES = frozenset({CREATE_RETRIEVAL, CREATE_DELETION})
POLLS = frozenset({RETRIEVAL_STATUS, DELETION_STATUS})


@dataclass
class Call:
    """One HTTP request as the fake saw it. ``at`` is time.monotonic() on arrival."""

    at: float
    method: str
    path: str
    operation: str
    token: str
    status: int = 0
    tracking_id: str = ""
    distinct_ids: list[str] = field(default_factory=list)
    fault: str = ""
    remote_status: str = ""  # the task status a status call answered with
    authorization: str = ""
    integration_id: str = ""
    content_type: str = ""


@dataclass
class Fault:
    """A scripted answer for matching calls, used ``times`` times (None: forever) after ``skip`` matches.

    ``status`` None means answer normally (after ``delay``); ``body`` replaces the answer's body (bytes are
    sent as they are, so malformed JSON is possible). ``process`` performs the operation's effect (a create
    really creates) before answering with the fault, as when a response is lost on the way back.
    """

    operation: str | None = None
    token: str | None = None
    ids: frozenset[str] | None = None
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes | None = None
    process: bool = False
    times: int | None = 1
    skip: int = 0
    name: str = ""

    def matches(self, operation: str, token: str, ids: list[str]) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if self.token is not None and self.token != token:
            return False
        return not (self.ids is not None and not self.ids.intersection(ids))


@dataclass(frozen=True)
class QueryBudget:
    """The Query API's budget per project (Mixpanel's: 60 per hour, 5 at once), scaled for a test."""

    limit: int
    window_seconds: float
    concurrency: int


@dataclass
class QueryCall:
    """One profile query as the fake saw it. ``start`` (arrival) and ``end`` (answer) are time.monotonic();
    ``values`` are the clauses' values (synthetic addresses), ``session_id`` the query session of the page."""

    project_id: str
    user: str
    start: float
    clauses: int = 0
    values: tuple[str, ...] = ()
    page: int = 0
    session_id: str = ""
    end: float = 0.0
    status: int = 0
    results: int = 0
    total: int = 0
    fault: str = ""


@dataclass
class _QuerySession:
    project_id: str
    where: str
    matches: list[tuple[str, dict[str, Any]]]


_CLAUSE = r'properties\["((?:[^"\\]|\\.)*)"\] == "((?:[^"\\]|\\.)*)"'
_WHERE = re.compile(rf"{_CLAUSE}(?: or {_CLAUSE})*")
_ONE_CLAUSE = re.compile(_CLAUSE)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), value)


@dataclass
class FakeTask:
    tracking_id: str
    kind: str  # "retrieval" or "deletion"
    token: str
    distinct_ids: list[str]
    compliance_type: str
    created_at: float
    revoked: bool = False
    will_fail: bool = False
    seeded: bool = False


class FakeMixpanel:
    """The fake server. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        step_seconds: float = 0.2,
        requesting_user: str = "owner@example.com",
        legacy_create_shape_every: int = 0,
        enforce_rate_limit: bool = False,
        quiet: bool = True,
    ) -> None:
        self.step_seconds = step_seconds
        self.requesting_user = requesting_user
        # Every n-th create answers with the older list shape ({"results": [{"tracking_id": ...}]}).
        self.legacy_create_shape_every = legacy_create_shape_every
        # Answer 429 to a second call for a project within one second, as Mixpanel does.
        self.enforce_rate_limit = enforce_rate_limit
        self.quiet = quiet
        self.calls: list[Call] = []
        self.tasks: dict[str, FakeTask] = {}
        self.faults: list[Fault] = []
        self.fail_ids: set[str] = set()
        self._fault_seen: dict[int, int] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._counter = itertools.count(1)
        self._last_call_by_token: dict[str, float] = {}
        # The Query API (identity lookups).
        self.query_accounts: dict[str, tuple[str, str]] = {}
        self.profiles: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.query_page_size = 1000
        self.query_latency = 0.0
        self.query_budget: QueryBudget | None = None
        self.queries: list[QueryCall] = []
        self._query_faults: dict[str, tuple[int, int]] = {}  # project id -> (status, answers left before it)
        self._query_sessions: dict[str, _QuerySession] = {}
        self._queries_running: dict[str, int] = {}
        self._most_queries_running: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeMixpanel:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-mixpanel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeMixpanel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not running"
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The value for a project's base_url_override."""
        return self.origin + API_PREFIX

    # -- scripting -----------------------------------------------------------------------------------

    def add_fault(self, **kwargs: Any) -> Fault:
        """Script a fault (see :class:`Fault`); rules are tried in the order they were added."""
        fault = Fault(**kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def remove_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.remove(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def fail(self, ids: Iterable[str]) -> None:
        """Any task (deletion or retrieval) holding one of ``ids`` ends in FAILURE instead of SUCCESS."""
        with self._lock:
            self.fail_ids.update(ids)

    def seed_running_deletion(self, *, token: str, distinct_ids: list[str], hold_seconds: float = 2.0) -> str:
        """A deletion for ``distinct_ids`` created elsewhere (another tool, a lost response): creates naming
        any of them answer 409 until it finishes, ``hold_seconds`` from now. Returns its tracking id."""
        with self._lock:
            tracking_id = self._new_tracking_id()
            steps = max(self.step_seconds, 1e-6)
            # Start it "in the past" or "in the future" so it reaches SUCCESS after hold_seconds.
            created = time.monotonic() + hold_seconds - steps * len(PROGRESSION)
            self.tasks[tracking_id] = FakeTask(
                tracking_id, "deletion", token, list(distinct_ids), "GDPR", created, seeded=True
            )
            return tracking_id

    # -- scripting the Query API -------------------------------------------------------------------------

    def set_query_account(self, project_id: str, *, username: str, secret: str) -> None:
        """The service account that may query ``project_id`` (a new one replaces the old, which then gets 401)."""
        with self._lock:
            self.query_accounts[str(project_id)] = (username, secret)

    def seed_profiles(self, project_id: str, profiles: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Add profiles, as (distinct id, properties), to the project's people."""
        with self._lock:
            self.profiles.setdefault(str(project_id), []).extend(profiles)

    def fail_queries(self, project_id: str, *, status: int = 401, after: int = 0) -> None:
        """Answer ``status`` to every query of the project once ``after`` more have been answered normally
        (401: the service account was revoked or expired)."""
        with self._lock:
            self._query_faults[str(project_id)] = (status, after)

    def clear_query_fault(self, project_id: str) -> None:
        with self._lock:
            self._query_faults.pop(str(project_id), None)

    # -- reading the Query API's record --------------------------------------------------------------------

    def query_calls(
        self, *, project_id: str | None = None, status: int | None = None, page: int | None = None
    ) -> list[QueryCall]:
        with self._lock:
            return [
                q
                for q in self.queries
                if (project_id is None or q.project_id == str(project_id))
                and (status is None or q.status == status)
                and (page is None or q.page == page)
            ]

    def most_concurrent_queries(self, project_id: str) -> int:
        """The most queries of the project that were running at the same moment (arrival to answer)."""
        with self._lock:
            return self._most_queries_running.get(str(project_id), 0)

    def busiest_query_window(self, project_id: str, window_seconds: float) -> int:
        """The most queries of the project that arrived within any rolling window (Mixpanel counts arrivals)."""
        return max_calls_in_window((q.start for q in self.query_calls(project_id=project_id)), window_seconds)

    # -- reading what happened -----------------------------------------------------------------------

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def calls_for(
        self, *, operation: str | Iterable[str] | None = None, token: str | None = None, status: int | None = None
    ) -> list[Call]:
        ops = {operation} if isinstance(operation, str) else (set(operation) if operation is not None else None)
        return [
            c
            for c in self.snapshot()
            if (ops is None or c.operation in ops)
            and (token is None or c.token == token)
            and (status is None or c.status == status)
        ]

    def created_tasks(self, *, kind: str | None = None, token: str | None = None) -> list[FakeTask]:
        with self._lock:
            return [
                t
                for t in self.tasks.values()
                if not t.seeded and (kind is None or t.kind == kind) and (token is None or t.token == token)
            ]

    def wait_for(self, predicate: Callable[[FakeMixpanel], bool], *, timeout: float, what: str) -> None:
        """Block until ``predicate(self)`` holds after some call, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake Mixpanel: timed out after {timeout:.0f}s waiting for {what}")
                self._changed.wait(min(left, 0.5))

    # -- the API -------------------------------------------------------------------------------------

    def _new_tracking_id(self) -> str:
        n = next(self._counter)
        # Both shapes occur in the wild: numeric strings and UUIDs.
        return str(1_000_000 + n) if n % 2 else str(uuid.uuid4())

    def status_of(self, task: FakeTask, now: float | None = None) -> str:
        if task.revoked:
            return "REVOKED"
        elapsed = (time.monotonic() if now is None else now) - task.created_at
        index = int(max(elapsed, 0.0) / self.step_seconds) if self.step_seconds > 0 else len(PROGRESSION)
        if index < len(PROGRESSION):
            return PROGRESSION[index]
        return "FAILURE" if task.will_fail else "SUCCESS"

    def _running_deletions_for(self, token: str, ids: list[str]) -> list[FakeTask]:
        wanted = set(ids)
        return [
            t
            for t in self.tasks.values()
            if t.kind == "deletion"
            and t.token == token
            and wanted.intersection(t.distinct_ids)
            and self.status_of(t) not in FINAL_STATUSES
        ]

    def _pick_fault(self, operation: str, token: str, ids: list[str]) -> Fault | None:
        for fault in self.faults:
            if fault.times is not None and fault.times <= 0:
                continue
            if not fault.matches(operation, token, ids):
                continue
            seen = self._fault_seen.get(id(fault), 0)
            self._fault_seen[id(fault)] = seen + 1
            if seen < fault.skip:
                continue
            if fault.times is not None:
                fault.times -= 1
            return fault
        return None

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        arrived = time.monotonic()
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        token = (query.get("token") or [""])[0]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if parts.path.endswith(QUERY_PATH):
            self._handle_query(handler, method, parts.query, raw, arrived)
            return
        call = Call(
            at=arrived,
            method=method,
            path=parts.path,
            operation="",
            token=token,
            authorization=handler.headers.get("Authorization", ""),
            integration_id=handler.headers.get("X-Mixpanel-Integration-ID", ""),
            content_type=handler.headers.get("Content-Type", ""),
        )
        status, headers, body, delay = self._route(call, method, parts.path, raw)
        call.status = status
        with self._changed:
            self._changed.notify_all()
        if delay > 0:
            time.sleep(delay)
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if body and method != "HEAD":
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (timeout) or was killed: exactly the situations the faults create.
            pass

    # -- the Query API -------------------------------------------------------------------------------

    def _handle_query(
        self, handler: BaseHTTPRequestHandler, method: str, query: str, raw: bytes, arrived: float
    ) -> None:
        project_id = (parse_qs(query).get("project_id") or [""])[0]
        user, secret = _basic_auth(handler.headers.get("Authorization", ""))
        call = QueryCall(project_id=project_id, user=user, start=arrived)
        with self._changed:
            self.queries.append(call)
            running = self._queries_running.get(project_id, 0) + 1
            self._queries_running[project_id] = running
            self._most_queries_running[project_id] = max(self._most_queries_running.get(project_id, 0), running)
            status, headers, body = self._answer_query(call, method, secret, raw, running)
            call.status = status
        try:
            if status == 200 and self.query_latency > 0:
                time.sleep(self.query_latency)  # a query takes a while, so that concurrent ones overlap
        finally:
            with self._changed:
                self._queries_running[project_id] -= 1
                call.end = time.monotonic()
                self._changed.notify_all()
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer_query(
        self, call: QueryCall, method: str, secret: str, raw: bytes, running: int
    ) -> tuple[int, dict[str, str], bytes]:
        def error(status: int, message: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
            body = json.dumps({"status": "error", "error": message}).encode()
            return status, {"Content-Type": "application/json", **headers}, body

        if method != "POST":
            return error(405, "method not allowed")
        if not call.project_id:
            return error(400, "project_id is required when authenticating with a service account")
        if not call.user or self.query_accounts.get(call.project_id) != (call.user, secret):
            return error(401, "invalid service account credentials for this project")
        fault = self._query_faults.get(call.project_id)
        if fault is not None:
            status, left = fault
            if left <= 0:
                call.fault = str(status)
                return error(status, "service account is not authorized" if status in (401, 403) else "scripted")
            self._query_faults[call.project_id] = (status, left - 1)
        budget = self.query_budget
        if budget is not None:
            arrivals = [
                q.start
                for q in self.queries
                if q.project_id == call.project_id and q.start > call.start - budget.window_seconds
            ]
            if len(arrivals) > budget.limit or running > budget.concurrency:
                call.fault = "over budget"
                return error(429, "Query rate limit exceeded", **{"Retry-After": "1"})
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        where = (form.get("where") or [""])[0]
        if not _WHERE.fullmatch(where):
            return error(400, 'unsupported where: use properties["P"] == "V" joined with or')
        clauses = [(_unescape(p), _unescape(v)) for p, v in _ONE_CLAUSE.findall(where)]
        call.clauses = len(clauses)
        call.values = tuple(v for _p, v in clauses)
        try:
            call.page = int((form.get("page") or ["0"])[0])
            wanted = json.loads(form["output_properties"][0]) if "output_properties" in form else None
        except (ValueError, TypeError):
            return error(400, "page must be a whole number and output_properties a JSON array")
        if call.page == 0:
            matches = sorted(
                (distinct_id, props)
                for distinct_id, props in self.profiles.get(call.project_id, [])
                if any(props.get(prop) == value for prop, value in clauses)
            )
            call.session_id = uuid.uuid4().hex[:16]
            self._query_sessions[call.session_id] = _QuerySession(call.project_id, where, matches)
        else:
            call.session_id = (form.get("session_id") or [""])[0]
            session = self._query_sessions.get(call.session_id)
            if call.page < 0 or session is None or (session.project_id, session.where) != (call.project_id, where):
                return error(400, "page > 0 needs the session_id of the same query's first page")
            matches = session.matches
        size = self.query_page_size
        chunk = matches[call.page * size : (call.page + 1) * size]
        call.results, call.total = len(chunk), len(matches)
        results = [
            {"$distinct_id": d, "$properties": {k: v for k, v in props.items() if wanted is None or k in wanted}}
            for d, props in chunk
        ]
        body = {
            "page": call.page,
            "page_size": size,
            "session_id": call.session_id,
            "status": "ok",
            "total": len(matches),
            "results": results,
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _route(self, call: Call, method: str, path: str, raw: bytes) -> tuple[int, dict[str, str], bytes, float]:
        with self._lock:
            self.calls.append(call)
            if path.startswith(DOWNLOAD_PREFIX):
                return self._download(call, path)
            if not path.startswith(API_PREFIX + "/"):
                call.operation = "unknown"
                return _json(404, {"status": "error", "error": "no such endpoint"})
            rest = path[len(API_PREFIX) :]
            kind, tracking_id = _split_api_path(rest)
            if kind is None:
                call.operation = "unknown"
                return _json(404, {"status": "error", "error": "no such endpoint"})
            if method == "POST" and not tracking_id:
                call.operation = CREATE_RETRIEVAL if kind == "retrieval" else CREATE_DELETION
            elif method == "GET" and tracking_id:
                call.operation = RETRIEVAL_STATUS if kind == "retrieval" else DELETION_STATUS
            elif method == "DELETE" and tracking_id and kind == "deletion":
                call.operation = CANCEL_DELETION
            else:
                call.operation = "unknown"
                return _json(405, {"status": "error", "error": "method not allowed"})
            call.tracking_id = tracking_id
            payload: Any = None
            if raw:
                try:
                    payload = json.loads(raw)
                except ValueError:
                    return _json(400, {"status": "error", "error": "body is not JSON"})
            ids = _ids_of(payload)
            call.distinct_ids = ids
            if tracking_id and tracking_id in self.tasks:
                ids_for_match = ids or self.tasks[tracking_id].distinct_ids
            else:
                ids_for_match = ids
            fault = self._pick_fault(call.operation, call.token, ids_for_match)
            if fault is not None:
                call.fault = fault.name or (str(fault.status) if fault.status else f"delay {fault.delay}s")
                if fault.status is not None and not fault.process:
                    return self._fault_answer(fault)
            answer = self._serve(call, method, kind, tracking_id, payload, ids)
            if fault is None:
                return answer
            if fault.status is None:
                status, headers, body, _ = answer
                return status, headers, fault.body if fault.body is not None else body, fault.delay
            return self._fault_answer(fault)

    def _fault_answer(self, fault: Fault) -> tuple[int, dict[str, str], bytes, float]:
        status = fault.status or 200
        headers = {"Content-Type": "application/json"}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        if fault.body is not None:
            body = fault.body
        elif status == 429:
            body = json.dumps({"status": "error", "error": "this API is limited to 1 req/s"}).encode()
        elif status in (401, 403):
            body = json.dumps({"status": "error", "error": "Invalid or expired OAuth token"}).encode()
        else:
            body = json.dumps({"status": "error", "error": f"scripted {status}"}).encode()
        return status, headers, body, fault.delay

    def _serve(
        self, call: Call, method: str, kind: str, tracking_id: str, payload: Any, ids: list[str]
    ) -> tuple[int, dict[str, str], bytes, float]:
        problem = self._check_request(call, method)
        if problem:
            return _json(400 if "token" in problem or "JSON" in problem else 401, {"status": "error", "error": problem})
        if self.enforce_rate_limit:
            last = self._last_call_by_token.get(call.token)
            self._last_call_by_token[call.token] = call.at
            if last is not None and call.at - last < 1.0:
                return _json(429, {"status": "error", "error": "this API is limited to 1 req/s"})
        if method == "POST":
            return self._create(call, kind, payload, ids)
        task = self.tasks.get(tracking_id)
        if task is None or task.kind != kind or task.token != call.token:
            return _json(404, {"status": "error", "error": "task not found"})
        if method == "DELETE":
            status = self.status_of(task)
            if status in ("PENDING", "STAGING"):
                task.revoked = True
                return 204, {}, b"", 0.0
            return _json(400, {"status": "error", "error": f"cannot cancel a task that is {status}"})
        call.remote_status = self.status_of(task)
        return self._status(task)

    def _check_request(self, call: Call, method: str) -> str:
        if not call.token:
            return "missing token"
        if not call.authorization.startswith("Bearer ") or len(call.authorization) <= len("Bearer "):
            return "missing bearer token"
        if method == "POST" and not call.content_type.startswith("application/json"):
            return "body must be JSON (Content-Type: application/json)"
        return ""

    def _create(self, call: Call, kind: str, payload: Any, ids: list[str]) -> tuple[int, dict[str, str], bytes, float]:
        if not isinstance(payload, dict) or not ids:
            return _json(400, {"status": "error", "error": "distinct_ids is required"})
        compliance_type = str(payload.get("compliance_type", "GDPR"))
        if compliance_type.upper() not in ("GDPR", "CCPA"):
            return _json(400, {"status": "error", "error": "bad compliance_type"})
        if kind == "deletion":
            running = self._running_deletions_for(call.token, ids)
            if running:
                clashing = sorted({i for t in running for i in t.distinct_ids}.intersection(ids))
                return _json(
                    409,
                    {
                        "status": "error",
                        "error": {
                            "conflicting_distinct_ids": clashing,
                            "conflicting_task_ids": [t.tracking_id for t in running],
                            "error": "a deletion is already running for some of these ids",
                        },
                    },
                )
        tracking_id = self._new_tracking_id()
        call.tracking_id = tracking_id
        self.tasks[tracking_id] = FakeTask(
            tracking_id,
            kind,
            call.token,
            list(ids),
            compliance_type.upper(),
            time.monotonic(),
            will_fail=bool(self.fail_ids.intersection(ids)),
        )
        creates = sum(1 for t in self.tasks.values() if not t.seeded)
        if self.legacy_create_shape_every and creates % self.legacy_create_shape_every == 0:
            return _json(201, {"status": "ok", "results": [{"tracking_id": tracking_id}]})
        return _json(201, {"status": "ok", "results": {"task_id": tracking_id}})

    def _status(self, task: FakeTask) -> tuple[int, dict[str, str], bytes, float]:
        status = self.status_of(task)
        if task.kind == "retrieval":
            link = f"{self.origin}{DOWNLOAD_PREFIX}{task.tracking_id}.zip" if status == "SUCCESS" else ""
            return _json(
                200, {"status": "ok", "results": {"status": status, "result": link, "distinct_ids": task.distinct_ids}}
            )
        return _json(
            200,
            {
                "status": "ok",
                "results": {
                    "tracking_id": task.tracking_id,
                    "status": status,
                    "requesting_user": self.requesting_user,
                    "compliance_type": task.compliance_type.lower(),
                    "project_id": 12345,
                    "date_requested": "2026-01-02T03:04:05",
                    "distinct_ids": task.distinct_ids,
                },
            },
        )

    def _download(self, call: Call, path: str) -> tuple[int, dict[str, str], bytes, float]:
        call.operation = DOWNLOAD
        tracking_id = path[len(DOWNLOAD_PREFIX) :].removesuffix(".zip")
        call.tracking_id = tracking_id
        task = self.tasks.get(tracking_id)
        if task is not None:
            call.token = task.token  # the link carries no token; charge the call to the task's project
        fault = self._pick_fault(DOWNLOAD, call.token, task.distinct_ids if task else [])
        if fault is not None and fault.status is not None:
            call.fault = fault.name or str(fault.status)
            return self._fault_answer(fault)
        if task is None or task.kind != "retrieval" or self.status_of(task) != "SUCCESS":
            return _json(404, {"status": "error", "error": "no such file"})
        return 200, {"Content-Type": "application/zip"}, export_zip(task.distinct_ids), 0.0


def export_zip(distinct_ids: list[str]) -> bytes:
    """A plain ZIP with one JSON file of synthetic events per id, like a retrieval's result."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for n, distinct_id in enumerate(distinct_ids):
            events = [
                {"event": "Page View", "properties": {"distinct_id": distinct_id, "time": 1_700_000_000 + i}}
                for i in range(3)
            ]
            archive.writestr(f"events-{n}.json", json.dumps(events))
    return buffer.getvalue()


def _split_api_path(rest: str) -> tuple[str | None, str]:
    for prefix, kind in (("/data-retrievals/v3.0", "retrieval"), ("/data-deletions/v3.0", "deletion")):
        if rest == prefix or rest.startswith(prefix + "/"):
            return kind, rest[len(prefix) :].strip("/")
    return None, ""


def _ids_of(payload: Any) -> list[str]:
    if isinstance(payload, dict) and isinstance(payload.get("distinct_ids"), list):
        return [str(v) for v in payload["distinct_ids"]]
    return []


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes, float]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode(), 0.0


def _make_handler(fake: FakeMixpanel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeMixpanel/1.0"

        def do_GET(self) -> None:
            fake.handle(self, "GET")

        def do_POST(self) -> None:
            fake.handle(self, "POST")

        def do_DELETE(self) -> None:
            fake.handle(self, "DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            if not fake.quiet:
                super().log_message(format, *args)

    return Handler


def max_calls_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The largest number of calls whose arrival times fall within any half-open window of ``window``
    seconds."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def min_gap(times: Iterable[float]) -> float | None:
    """The shortest time between two consecutive calls, or None for fewer than two."""
    ordered = sorted(times)
    if len(ordered) < 2:
        return None
    return min(b - a for a, b in itertools.pairwise(ordered))


def _basic_auth(header: str) -> tuple[str, str]:
    """(username, secret) of an HTTP Basic Authorization header, ("", "") when it is not one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        username, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return username, secret


def required_pages(total: int, page_size: int) -> int:
    """The pages a client reads for ``total`` matches: until a page holds fewer than page_size results."""
    return total // page_size + 1
