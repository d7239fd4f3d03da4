"""The Mixpanel GDPR client against a real HTTP server on 127.0.0.1 (no mocks of requests).

The fake server answers from a script per (method, path) and records every request it receives, so the
tests check what actually goes over the wire. Nothing here needs Django settings or a database.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gdpr_requests.mixpanel.client import (
    BASE_URLS,
    CONFLICT,
    CREDENTIAL,
    NOT_FOUND,
    PERMANENT,
    RATE_LIMITED,
    TRANSIENT,
    CallRecord,
    Conflict,
    CredentialFailure,
    Credentials,
    DeletionStatus,
    MixpanelClient,
    MixpanelError,
    NotFound,
    Permanent,
    RateLimited,
    RetrievalStatus,
    Transient,
    base_url_for,
)

PROJECT_TOKEN = "projtoken-SECRET-1234"
OAUTH_TOKEN = "oauth-SECRET-abcdef"
INTEGRATION_ID = "privacy-request-manager-test"
DISTINCT_ID = "alice@example.com"
OTHER_DISTINCT_ID = "user-42-bob"


# --- fake Mixpanel ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    send_length: bool = True


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeMixpanel:
    """Scripted replies per (method, raw path); the last reply for a route repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.base_url = ""
        self.port = 0

    def reply(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        send_length: bool = True,
    ) -> None:
        if body is None:
            body = b"" if json_body is None else json.dumps(json_body).encode()
        all_headers = {"Content-Type": "application/json"} if json_body is not None else {}
        all_headers.update(headers or {})
        self.routes.setdefault((method, path), []).append(Reply(status, body, all_headers, delay, send_length))

    def next_reply(self, method: str, path: str) -> Reply:
        with self.lock:
            queue = self.routes.get((method, path))
            if not queue:
                return Reply(418, b'{"error": "unscripted"}')
            return queue.pop(0) if len(queue) > 1 else queue[0]


def _make_handler(fake: FakeMixpanel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            with fake.lock:
                fake.received.append(
                    Received(
                        method=self.command,
                        path=parts.path,
                        query=parse_qs(parts.query, keep_blank_values=True),
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
            reply = fake.next_reply(self.command, parts.path)
            if reply.delay:
                time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.send_length and reply.status not in (204, 304):
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body and self.command != "HEAD":
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(autouse=True)
def _isolated_environment() -> None:
    """Replaces tests/conftest.py's autouse fixture of this name, which needs Django settings: the client
    imports nothing from Django, so these tests also run with ``-p no:django``."""


@pytest.fixture
def fake() -> Iterator[FakeMixpanel]:
    fake = FakeMixpanel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    fake.base_url = f"http://127.0.0.1:{fake.port}/api/app"
    # A short poll interval keeps shutdown() (and so each test's teardown) fast.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # ignore any proxy settings: these tests stay on loopback
    yield session
    session.close()


@pytest.fixture
def calls() -> list[CallRecord]:
    return []


@pytest.fixture
def mixpanel(fake: FakeMixpanel, http_session: requests.Session, calls: list[CallRecord]) -> MixpanelClient:
    return _client(fake.base_url, http_session, calls)


def _client(
    base_url: str,
    session: requests.Session,
    calls: list[CallRecord] | None = None,
    timeout: float = 5.0,
) -> MixpanelClient:
    credentials = Credentials(
        base_url=base_url,
        project_token=PROJECT_TOKEN,
        oauth_token=OAUTH_TOKEN,
        integration_id=INTEGRATION_ID,
    )
    return MixpanelClient(
        credentials,
        timeout=timeout,
        session=session,
        on_call=None if calls is None else calls.append,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RETRIEVALS = "/api/app/data-retrievals/v3.0/"
DELETIONS = "/api/app/data-deletions/v3.0/"
CREATED = {"status": "ok", "results": {"task_id": "task-123"}}


def _assert_api_headers(received: Received, *, with_body: bool) -> None:
    assert received.headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert received.headers["x-mixpanel-integration-id"] == INTEGRATION_ID
    assert received.query == {"token": [PROJECT_TOKEN]}
    if with_body:
        assert received.headers["content-type"] == "application/json"
    else:
        assert "content-type" not in received.headers
        assert received.body == b""


# --- base URLs and credentials ------------------------------------------------------------------------


def test_base_url_for_maps_each_residency_to_its_host() -> None:
    assert base_url_for("us") == "https://mixpanel.com/api/app"
    assert base_url_for("eu") == "https://eu.mixpanel.com/api/app"
    assert base_url_for("in") == "https://in.mixpanel.com/api/app"
    assert base_url_for("EU") == BASE_URLS["eu"]
    assert base_url_for("") == BASE_URLS["us"]


def test_base_url_for_prefers_override_without_trailing_slash() -> None:
    assert base_url_for("eu", "http://127.0.0.1:8080/api/app/") == "http://127.0.0.1:8080/api/app"


@pytest.mark.parametrize(("residency", "override"), [("mars", ""), ("us", "ftp://example.com/api")])
def test_base_url_for_rejects_unknown_residency_or_bad_override(residency: str, override: str) -> None:
    with pytest.raises(ValueError):
        base_url_for(residency, override)


def test_credentials_repr_hides_both_tokens() -> None:
    credentials = Credentials(
        base_url=BASE_URLS["us"],
        project_token=PROJECT_TOKEN,
        oauth_token=OAUTH_TOKEN,
        integration_id=INTEGRATION_ID,
    )
    for text in (repr(credentials), str(credentials)):
        assert PROJECT_TOKEN not in text
        assert OAUTH_TOKEN not in text
        assert INTEGRATION_ID in text


# --- requests on the wire -----------------------------------------------------------------------------


def test_create_retrieval_posts_ids_with_token_query_bearer_and_integration_headers(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply("POST", RETRIEVALS, status=201, json_body=CREATED)

    task_id = mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID, OTHER_DISTINCT_ID])

    assert task_id == "task-123"
    [received] = fake.received
    assert (received.method, received.path) == ("POST", RETRIEVALS)
    _assert_api_headers(received, with_body=True)
    assert received.json == {
        "distinct_ids": [DISTINCT_ID, OTHER_DISTINCT_ID],
        "compliance_type": "GDPR",
    }


def test_create_retrieval_sends_ccpa_with_canonical_disclosure_type(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply("POST", RETRIEVALS, status=201, json_body=CREATED)

    mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID], compliance_type="ccpa", disclosure_type="categories")

    assert fake.received[0].json == {
        "distinct_ids": [DISTINCT_ID],
        "compliance_type": "CCPA",
        "disclosure_type": "Categories",
    }


def test_create_deletion_posts_ids_and_compliance_type(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("POST", DELETIONS, status=201, json_body=CREATED)

    task_id = mixpanel.create_deletion(distinct_ids=[DISTINCT_ID], compliance_type="CCPA")

    assert task_id == "task-123"
    [received] = fake.received
    assert (received.method, received.path) == ("POST", DELETIONS)
    _assert_api_headers(received, with_body=True)
    assert received.json == {"distinct_ids": [DISTINCT_ID], "compliance_type": "CCPA"}


def test_retrieval_status_gets_url_quoted_tracking_id(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "GET",
        RETRIEVALS + "a%2Fb%3Fc%20d",
        json_body={"status": "ok", "results": {"status": "PENDING", "result": ""}},
    )

    mixpanel.retrieval_status(tracking_id="a/b?c d")

    [received] = fake.received
    assert (received.method, received.path) == ("GET", RETRIEVALS + "a%2Fb%3Fc%20d")
    _assert_api_headers(received, with_body=False)


def test_deletion_status_gets_tracking_id_path(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("GET", DELETIONS + "task-9", json_body={"status": "ok", "results": {"status": "PENDING"}})

    mixpanel.deletion_status(tracking_id="task-9")

    [received] = fake.received
    assert (received.method, received.path) == ("GET", DELETIONS + "task-9")
    _assert_api_headers(received, with_body=False)


def test_cancel_deletion_sends_delete_and_accepts_204_without_body(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply("DELETE", DELETIONS + "task-9", status=204)

    assert mixpanel.cancel_deletion(tracking_id="task-9") is None

    [received] = fake.received
    assert (received.method, received.path) == ("DELETE", DELETIONS + "task-9")
    _assert_api_headers(received, with_body=False)


@pytest.mark.parametrize("bad_ids", [[], "alice", [""], [42]])
def test_create_rejects_bad_distinct_ids_before_calling(
    fake: FakeMixpanel, mixpanel: MixpanelClient, bad_ids: Any
) -> None:
    with pytest.raises((ValueError, TypeError)):
        mixpanel.create_deletion(distinct_ids=bad_ids)
    assert fake.received == []


def test_create_rejects_unknown_compliance_type_before_calling(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    with pytest.raises(ValueError):
        mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID], compliance_type="HIPAA")
    assert fake.received == []


# --- response parsing ---------------------------------------------------------------------------------


def test_create_accepts_older_list_of_jobs_with_tracking_id(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("POST", DELETIONS, status=201, json_body={"results": [{"tracking_id": "old-7"}]})

    assert mixpanel.create_deletion(distinct_ids=[DISTINCT_ID]) == "old-7"


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "ok", "results": {"task_id": 1234567}},
        {"results": [{"tracking_id": 1234567}]},
    ],
)
def test_create_turns_numeric_task_id_into_string(
    fake: FakeMixpanel, mixpanel: MixpanelClient, payload: dict[str, Any]
) -> None:
    fake.reply("POST", RETRIEVALS, status=201, json_body=payload)

    assert mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID]) == "1234567"


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "ok"},
        {"status": "ok", "results": {}},
        {"status": "ok", "results": []},
        {"status": "ok", "results": {"task_id": None}},
        ["task-123"],
    ],
)
def test_create_with_valid_json_of_wrong_shape_is_permanent(
    fake: FakeMixpanel, mixpanel: MixpanelClient, payload: Any
) -> None:
    fake.reply("POST", DELETIONS, status=201, json_body=payload)

    with pytest.raises(Permanent) as caught:
        mixpanel.create_deletion(distinct_ids=[DISTINCT_ID])

    assert caught.value.kind == PERMANENT
    assert caught.value.permanent is True
    assert caught.value.http_status == 201


def test_retrieval_status_reads_link_from_result_and_uppercases_status(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply(
        "GET",
        RETRIEVALS + "t1",
        json_body={
            "status": "ok",
            "results": {
                "status": "success",
                "result": "https://files.example/export.zip",
                "distinct_ids": [DISTINCT_ID],
            },
        },
    )

    status = mixpanel.retrieval_status(tracking_id="t1")

    assert status == RetrievalStatus(
        status="SUCCESS",
        result_url="https://files.example/export.zip",
        distinct_ids=[DISTINCT_ID],
    )


def test_retrieval_status_reads_link_from_results_as_in_the_openapi_file(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply(
        "GET",
        RETRIEVALS + "t1",
        json_body={
            "status": "ok",
            "results": {"status": "SUCCESS", "results": "https://files.example/e.zip"},
        },
    )

    status = mixpanel.retrieval_status(tracking_id="t1")

    assert status.result_url == "https://files.example/e.zip"
    assert status.distinct_ids == []


def test_retrieval_status_has_empty_link_until_success(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "GET",
        RETRIEVALS + "t1",
        json_body={"status": "ok", "results": {"status": "STARTED", "result": ""}},
    )

    assert mixpanel.retrieval_status(tracking_id="t1").result_url == ""


@pytest.mark.parametrize("path", [RETRIEVALS, DELETIONS])
def test_status_not_found_is_returned_not_raised(fake: FakeMixpanel, mixpanel: MixpanelClient, path: str) -> None:
    fake.reply("GET", path + "lost", json_body={"status": "ok", "results": {"status": "NOT_FOUND"}})

    lookup = mixpanel.retrieval_status if path == RETRIEVALS else mixpanel.deletion_status
    assert lookup(tracking_id="lost").status == "NOT_FOUND"


def test_deletion_status_parses_every_field_with_naive_date_as_utc(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply(
        "GET",
        DELETIONS + "d1",
        json_body={
            "status": "ok",
            "results": {
                "tracking_id": "d1",
                "status": "Started",
                "requesting_user": "owner@example.com",
                "compliance_type": "gdpr",
                "project_id": 1234,
                "date_requested": "2024-03-05T06:07:08",
                "distinct_ids": [DISTINCT_ID, 77],
            },
        },
    )

    status = mixpanel.deletion_status(tracking_id="d1")

    assert status == DeletionStatus(
        status="STARTED",
        requesting_user="owner@example.com",
        compliance_type="GDPR",
        project_id=1234,
        date_requested=datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC),
        distinct_ids=[DISTINCT_ID, "77"],
        tracking_id="d1",
    )


@pytest.mark.parametrize("compliance_type", ["CCPA", "ccpa"])
def test_deletion_status_uppercases_compliance_type(
    fake: FakeMixpanel, mixpanel: MixpanelClient, compliance_type: str
) -> None:
    fake.reply(
        "GET",
        DELETIONS + "d1",
        json_body={
            "status": "ok",
            "results": {"status": "SUCCESS", "compliance_type": compliance_type},
        },
    )

    assert mixpanel.deletion_status(tracking_id="d1").compliance_type == "CCPA"


def test_deletion_status_tolerates_missing_and_unreadable_fields(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "GET",
        DELETIONS + "d1",
        json_body={"status": "ok", "results": {"status": "PENDING", "date_requested": "soon"}},
    )

    status = mixpanel.deletion_status(tracking_id="d1")

    assert status.status == "PENDING"
    assert status.date_requested is None
    assert status.project_id is None
    assert status.requesting_user == ""
    assert status.distinct_ids == []


def test_deletion_status_converts_zoned_date_to_utc(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "GET",
        DELETIONS + "d1",
        json_body={
            "status": "ok",
            "results": {"status": "PENDING", "date_requested": "2024-03-05T08:00:00+02:00"},
        },
    )

    assert mixpanel.deletion_status(tracking_id="d1").date_requested == datetime(2024, 3, 5, 6, 0, tzinfo=UTC)


def test_status_without_a_status_field_is_permanent(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("GET", DELETIONS + "d1", json_body={"status": "ok", "results": {"tracking_id": "d1"}})

    with pytest.raises(Permanent):
        mixpanel.deletion_status(tracking_id="d1")


def test_status_dataclass_reprs_leave_out_personal_data() -> None:
    retrieval = RetrievalStatus("SUCCESS", "https://files.example/secret-link", [DISTINCT_ID])
    deletion = DeletionStatus("SUCCESS", "owner@example.com", "GDPR", 1, None, [DISTINCT_ID])

    assert DISTINCT_ID not in repr(retrieval)
    assert "secret-link" not in repr(retrieval)
    assert DISTINCT_ID not in repr(deletion)
    assert "owner@example.com" not in repr(deletion)


# --- error mapping ------------------------------------------------------------------------------------


def test_429_without_retry_after_is_rate_limited_with_no_delay(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("POST", RETRIEVALS, status=429, json_body={"error": "this API is limited to 1 req/s"})

    with pytest.raises(RateLimited) as caught:
        mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID])

    error = caught.value
    assert (error.kind, error.permanent, error.http_status) == (RATE_LIMITED, False, 429)
    assert error.retry_after is None


def test_429_with_retry_after_seconds_sets_retry_after(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("POST", RETRIEVALS, status=429, headers={"Retry-After": "30"}, body=b"slow down")

    with pytest.raises(RateLimited) as caught:
        mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID])

    assert caught.value.retry_after == 30.0


def test_429_with_retry_after_http_date_sets_seconds_until_then(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "GET",
        DELETIONS + "d1",
        status=429,
        headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)},
    )

    with pytest.raises(RateLimited) as caught:
        mixpanel.deletion_status(tracking_id="d1")

    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 121


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(fake: FakeMixpanel, mixpanel: MixpanelClient, status: int) -> None:
    fake.reply("POST", DELETIONS, status=status, body=b"<html>Bad Gateway</html>")

    with pytest.raises(Transient) as caught:
        mixpanel.create_deletion(distinct_ids=[DISTINCT_ID])

    assert (caught.value.kind, caught.value.permanent) == (TRANSIENT, False)
    assert caught.value.http_status == status


def test_timeout_is_transient(fake: FakeMixpanel, http_session: requests.Session) -> None:
    fake.reply("GET", DELETIONS + "d1", json_body={"status": "ok", "results": {}}, delay=1.0)
    client = _client(fake.base_url, http_session, timeout=0.1)

    started = time.monotonic()
    with pytest.raises(Transient) as caught:
        client.deletion_status(tracking_id="d1")

    assert time.monotonic() - started < 0.9
    assert caught.value.http_status is None
    assert "timed out" in str(caught.value)


def test_connection_refused_is_transient(http_session: requests.Session) -> None:
    client = _client(f"http://127.0.0.1:{_free_port()}/api/app", http_session)

    with pytest.raises(Transient) as caught:
        client.create_deletion(distinct_ids=[DISTINCT_ID])

    assert caught.value.http_status is None
    assert caught.value.__context__ is None  # requests' exception (with the URL) is not chained


@pytest.mark.parametrize("body", [b'{"status": "ok", "results": {"task_', b"", b"<html>ok</html>"])
def test_malformed_json_on_2xx_is_transient(fake: FakeMixpanel, mixpanel: MixpanelClient, body: bytes) -> None:
    fake.reply("POST", RETRIEVALS, status=201, body=body)

    with pytest.raises(Transient) as caught:
        mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID])

    assert caught.value.http_status == 201


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_permanent_credential_failures(
    fake: FakeMixpanel, mixpanel: MixpanelClient, status: int
) -> None:
    fake.reply("GET", RETRIEVALS + "t1", status=status, json_body={"status": "error", "error": "no"})

    with pytest.raises(CredentialFailure) as caught:
        mixpanel.retrieval_status(tracking_id="t1")

    assert (caught.value.kind, caught.value.permanent) == (CREDENTIAL, True)
    assert caught.value.http_status == status


def test_404_raises_not_found(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("DELETE", DELETIONS + "gone", status=404, body=b"Not Found")

    with pytest.raises(NotFound) as caught:
        mixpanel.cancel_deletion(tracking_id="gone")

    assert (caught.value.kind, caught.value.permanent, caught.value.http_status) == (
        NOT_FOUND,
        True,
        404,
    )


def test_409_conflict_carries_conflicting_distinct_and_task_ids(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply(
        "POST",
        DELETIONS,
        status=409,
        json_body={
            "status": "error",
            "error": {
                "conflicting_distinct_ids": [DISTINCT_ID, 99],
                "conflicting_task_ids": ["running-1", 555],
                "error": "deletion already in progress",
            },
        },
    )

    with pytest.raises(Conflict) as caught:
        mixpanel.create_deletion(distinct_ids=[DISTINCT_ID, "99", OTHER_DISTINCT_ID])

    error = caught.value
    assert (error.kind, error.permanent, error.http_status) == (CONFLICT, False, 409)
    assert error.conflicting_distinct_ids == [DISTINCT_ID, "99"]
    assert error.conflicting_task_ids == ["running-1", "555"]


@pytest.mark.parametrize("body", [b'{"status": "error", "error": "conflict"}', b"", b'{"status": "error"}'])
def test_409_without_ids_is_still_a_conflict_with_empty_lists(
    fake: FakeMixpanel, mixpanel: MixpanelClient, body: bytes
) -> None:
    fake.reply("POST", DELETIONS, status=409, body=body)

    with pytest.raises(Conflict) as caught:
        mixpanel.create_deletion(distinct_ids=[DISTINCT_ID])

    assert caught.value.conflicting_distinct_ids == []
    assert caught.value.conflicting_task_ids == []


@pytest.mark.parametrize("status", [400, 422])
def test_other_4xx_is_permanent(fake: FakeMixpanel, mixpanel: MixpanelClient, status: int) -> None:
    fake.reply("POST", RETRIEVALS, status=status, json_body={"error": "too many distinct_ids"})

    with pytest.raises(Permanent) as caught:
        mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID])

    assert (caught.value.kind, caught.value.permanent, caught.value.http_status) == (
        PERMANENT,
        True,
        status,
    )


def test_api_redirect_is_not_followed_and_is_permanent(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("GET", DELETIONS + "d1", status=302, headers={"Location": "http://localhost:1/x"})

    with pytest.raises(Permanent):
        mixpanel.deletion_status(tracking_id="d1")

    assert len(fake.received) == 1


def test_every_error_kind_derives_from_mixpanel_error() -> None:
    for cls in (RateLimited, Transient, Conflict, CredentialFailure, NotFound, Permanent):
        assert issubclass(cls, MixpanelError)
    assert MixpanelError("x", kind=TRANSIENT).permanent is False
    assert MixpanelError("x", kind=NOT_FOUND).permanent is True


ECHOING_BODY = json.dumps(
    {
        "status": "error",
        "error": f"bad token {PROJECT_TOKEN} / {OAUTH_TOKEN} for {DISTINCT_ID}",
        "conflicting_distinct_ids": [DISTINCT_ID],
    }
).encode()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 429, 500])
def test_error_text_never_contains_tokens_or_distinct_ids(
    fake: FakeMixpanel, mixpanel: MixpanelClient, status: int
) -> None:
    fake.reply("POST", DELETIONS, status=status, body=ECHOING_BODY)

    with pytest.raises(MixpanelError) as caught:
        mixpanel.create_deletion(distinct_ids=[DISTINCT_ID])

    _assert_no_secrets(caught.value)
    assert "create_deletion" in str(caught.value)
    assert str(status) in str(caught.value)


def test_transport_error_text_never_contains_tokens(fake: FakeMixpanel, http_session: requests.Session) -> None:
    fake.reply("GET", DELETIONS + "d1", delay=1.0)
    for client in (
        _client(f"http://127.0.0.1:{_free_port()}/api/app", http_session),
        _client(fake.base_url, http_session, timeout=0.1),
    ):
        with pytest.raises(Transient) as caught:
            client.deletion_status(tracking_id="d1")
        _assert_no_secrets(caught.value)


def _assert_no_secrets(error: BaseException) -> None:
    for text in (str(error), repr(error)):
        for secret in (PROJECT_TOKEN, OAUTH_TOKEN, DISTINCT_ID):
            assert secret not in text


# --- on_call records ----------------------------------------------------------------------------------


def test_on_call_records_every_successful_operation(
    fake: FakeMixpanel, mixpanel: MixpanelClient, calls: list[CallRecord]
) -> None:
    fake.reply("POST", RETRIEVALS, status=201, json_body=CREATED)
    fake.reply("GET", RETRIEVALS + "t1", json_body={"status": "ok", "results": {"status": "SUCCESS"}})
    fake.reply("POST", DELETIONS, status=201, json_body=CREATED)
    fake.reply("GET", DELETIONS + "d1", json_body={"status": "ok", "results": {"status": "PENDING"}})
    fake.reply("DELETE", DELETIONS + "d1", status=204)
    fake.reply("GET", "/files/export.zip", body=b"PK")

    mixpanel.create_retrieval(distinct_ids=[DISTINCT_ID])
    mixpanel.retrieval_status(tracking_id="t1")
    mixpanel.create_deletion(distinct_ids=[DISTINCT_ID])
    mixpanel.deletion_status(tracking_id="d1")
    mixpanel.cancel_deletion(tracking_id="d1")
    mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=10)

    assert [(c.operation, c.http_status, c.outcome) for c in calls] == [
        ("create_retrieval", 201, "ok"),
        ("retrieval_status", 200, "ok"),
        ("create_deletion", 201, "ok"),
        ("deletion_status", 200, "ok"),
        ("cancel_deletion", 204, "ok"),
        ("download", 200, "ok"),
    ]
    assert all(isinstance(c.duration_ms, int) and c.duration_ms >= 0 for c in calls)


def test_on_call_records_failed_attempts_with_their_kind(
    fake: FakeMixpanel, http_session: requests.Session, calls: list[CallRecord]
) -> None:
    client = _client(fake.base_url, http_session, calls)
    fake.reply("POST", DELETIONS, status=429)
    fake.reply("POST", DELETIONS, status=201, body=b"{trunc")
    fake.reply("POST", DELETIONS, status=201, json_body={"status": "ok"})
    fake.reply("POST", DELETIONS, status=409, json_body={"error": {"conflicting_task_ids": ["x"]}})
    fake.reply("GET", RETRIEVALS + "t1", status=401)
    for _ in range(4):
        with pytest.raises(MixpanelError):
            client.create_deletion(distinct_ids=[DISTINCT_ID])
    with pytest.raises(CredentialFailure):
        client.retrieval_status(tracking_id="t1")
    refused = _client(f"http://127.0.0.1:{_free_port()}/api/app", http_session, calls)
    with pytest.raises(Transient):
        refused.cancel_deletion(tracking_id="d1")

    assert [(c.operation, c.http_status, c.outcome) for c in calls] == [
        ("create_deletion", 429, RATE_LIMITED),
        ("create_deletion", 201, TRANSIENT),
        ("create_deletion", 201, PERMANENT),
        ("create_deletion", 409, CONFLICT),
        ("retrieval_status", 401, CREDENTIAL),
        ("cancel_deletion", None, TRANSIENT),
    ]
    for record in calls:
        for secret in (PROJECT_TOKEN, OAUTH_TOKEN, DISTINCT_ID):
            assert secret not in repr(record)


def test_failing_on_call_hook_does_not_lose_the_task_id(fake: FakeMixpanel, http_session: requests.Session) -> None:
    def broken_hook(record: CallRecord) -> None:
        raise RuntimeError("database is down")

    credentials = Credentials(fake.base_url, PROJECT_TOKEN, OAUTH_TOKEN, INTEGRATION_ID)
    client = MixpanelClient(credentials, timeout=5, session=http_session, on_call=broken_hook)
    fake.reply("POST", DELETIONS, status=201, json_body=CREATED)

    assert client.create_deletion(distinct_ids=[DISTINCT_ID]) == "task-123"


# --- download -----------------------------------------------------------------------------------------


def _file_url(fake: FakeMixpanel, path: str = "/files/export.zip", host: str = "127.0.0.1") -> str:
    return f"http://{host}:{fake.port}{path}"


def test_download_returns_body_without_auth_or_integration_headers(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply("GET", "/files/export.zip", body=b"PK\x03\x04zipdata")

    body = mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=1000)

    assert body == b"PK\x03\x04zipdata"
    [received] = fake.received
    assert "authorization" not in received.headers
    assert "x-mixpanel-integration-id" not in received.headers
    assert received.query == {}


def test_download_strips_authorization_a_shared_session_would_add(
    fake: FakeMixpanel, http_session: requests.Session
) -> None:
    http_session.headers["Authorization"] = "Bearer leaked"
    client = _client(fake.base_url, http_session)
    fake.reply("GET", "/files/export.zip", body=b"data")

    client.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=1000)

    assert "authorization" not in fake.received[0].headers


def test_download_accepts_body_of_exactly_max_bytes(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("GET", "/files/export.zip", body=b"x" * 100, send_length=False)

    assert len(mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=100)) == 100


def test_download_refuses_declared_length_over_max_bytes(
    fake: FakeMixpanel, mixpanel: MixpanelClient, calls: list[CallRecord]
) -> None:
    fake.reply("GET", "/files/export.zip", body=b"x" * 1000)

    with pytest.raises(Permanent) as caught:
        mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=999)

    assert caught.value.http_status == 200
    assert calls[-1] == CallRecord("download", 200, calls[-1].duration_ms, PERMANENT)


def test_download_stops_streaming_once_max_bytes_exceeded_without_length(
    fake: FakeMixpanel, mixpanel: MixpanelClient
) -> None:
    fake.reply("GET", "/files/export.zip", body=b"x" * 500_000, send_length=False)

    with pytest.raises(Permanent) as caught:
        mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=1000)

    assert caught.value.permanent is True
    assert "size limit" in str(caught.value)


@pytest.mark.parametrize("location", ["/files/export.zip", "http://127.0.0.1:{port}/files/export.zip"])
def test_download_follows_redirect_to_allowed_host(fake: FakeMixpanel, mixpanel: MixpanelClient, location: str) -> None:
    fake.reply("GET", "/start", status=302, headers={"Location": location.format(port=fake.port)})
    fake.reply("GET", "/files/export.zip", body=b"PK")

    body = mixpanel.download(url=_file_url(fake, "/start"), allowed_hosts={"127.0.0.1"}, max_bytes=100)

    assert body == b"PK"
    assert [r.path for r in fake.received] == ["/start", "/files/export.zip"]
    assert all("authorization" not in r.headers for r in fake.received)


@pytest.mark.parametrize(
    "location",
    [
        "http://localhost:{port}/files/export.zip",  # same machine, but not an allowed host
        "https://evil.example/steal",
        "ftp://127.0.0.1/files/export.zip",
        "http://user:pw@127.0.0.1:{port}/files/export.zip",
    ],
)
def test_download_refuses_redirect_to_disallowed_host_or_scheme(
    fake: FakeMixpanel, mixpanel: MixpanelClient, location: str
) -> None:
    fake.reply("GET", "/start", status=302, headers={"Location": location.format(port=fake.port)})
    fake.reply("GET", "/files/export.zip", body=b"PK")

    with pytest.raises(Permanent) as caught:
        mixpanel.download(url=_file_url(fake, "/start"), allowed_hosts={"127.0.0.1"}, max_bytes=100)

    assert caught.value.http_status == 302
    assert [r.path for r in fake.received] == ["/start"]


def test_download_follows_three_redirects(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    fake.reply("GET", "/r1", status=302, headers={"Location": "/r2"})
    fake.reply("GET", "/r2", status=301, headers={"Location": "/r3"})
    fake.reply("GET", "/r3", status=307, headers={"Location": "/files/export.zip"})
    fake.reply("GET", "/files/export.zip", body=b"PK")

    assert mixpanel.download(url=_file_url(fake, "/r1"), allowed_hosts={"127.0.0.1"}, max_bytes=9)


def test_download_refuses_a_fourth_redirect(fake: FakeMixpanel, mixpanel: MixpanelClient) -> None:
    for hop in range(1, 5):
        fake.reply("GET", f"/r{hop}", status=302, headers={"Location": f"/r{hop + 1}"})
    fake.reply("GET", "/r5", body=b"PK")

    with pytest.raises(Permanent):
        mixpanel.download(url=_file_url(fake, "/r1"), allowed_hosts={"127.0.0.1"}, max_bytes=9)

    assert [r.path for r in fake.received] == ["/r1", "/r2", "/r3", "/r4"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{free}/files/export.zip",  # plain http to another origin than the base URL
        "http://localhost:{port}/files/export.zip",  # host not allowed
        "file:///etc/passwd",
    ],
)
def test_download_refuses_url_outside_allowed_hosts_and_schemes_without_calling(
    fake: FakeMixpanel, mixpanel: MixpanelClient, url: str
) -> None:
    with pytest.raises(Permanent):
        mixpanel.download(
            url=url.format(port=fake.port, free=_free_port()),
            allowed_hosts={"127.0.0.1"},
            max_bytes=100,
        )

    assert fake.received == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(403, Permanent), (404, NotFound), (410, NotFound), (503, Transient), (429, RateLimited)],
)
def test_download_http_errors_map_to_kinds_and_never_blame_the_credential(
    fake: FakeMixpanel, mixpanel: MixpanelClient, status: int, error_type: type[MixpanelError]
) -> None:
    fake.reply("GET", "/files/export.zip", status=status, body=b"AccessDenied")

    with pytest.raises(error_type) as caught:
        mixpanel.download(url=_file_url(fake), allowed_hosts={"127.0.0.1"}, max_bytes=100)

    assert caught.value.kind != CREDENTIAL
    assert caught.value.http_status == status
