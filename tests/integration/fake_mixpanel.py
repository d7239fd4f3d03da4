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

The ids and tokens here are synthetic test data; nothing leaves loopback.
"""

from __future__ import annotations

import io
import itertools
import json
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
