"""The Query API client against a real HTTP server on 127.0.0.1: what goes over the wire, paging, every error
class. No Django settings or database are needed."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gdpr_requests.mixpanel.query_client import (
    CREDENTIAL,
    MALFORMED,
    PERMANENT,
    RATE_LIMITED,
    TRANSIENT,
    QueryCredentials,
    QueryError,
    engage_url,
    query_page,
    query_profiles,
    quote_string,
    where_any,
)

SECRET = "sa-secret-XYZ"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, list[str]]


class FakeQueryApi:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.url = ""

    def next(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def api() -> Iterator[FakeQueryApi]:
    fake = FakeQueryApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            parts = urlsplit(self.path)
            fake.received.append(
                Received(
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    form=parse_qs(body, keep_blank_values=True),
                )
            )
            reply = fake.next()
            if reply.delay:
                threading.Event().wait(reply.delay)
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}/sandbox/mixpanel/api/app"
    yield fake
    server.shutdown()
    server.server_close()


def _page(ids: list[str], *, page: int = 0, page_size: int = 1000, session_id: str = "sess-1") -> dict:
    return {
        "page": page,
        "page_size": page_size,
        "session_id": session_id,
        "status": "ok",
        "total": len(ids),
        "results": [{"$distinct_id": i, "$properties": {"$email": f"{i}@example.org"}} for i in ids],
    }


def _creds(api: FakeQueryApi, *, username: str = "sa.user") -> QueryCredentials:
    return QueryCredentials(url=engage_url("eu", api.url), project_id="4242", username=username, secret=SECRET)


def _basic(received: Received) -> tuple[str, str]:
    scheme, _, value = received.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def test_engage_url_sits_beside_the_overrides_gdpr_api_or_on_the_residency_host() -> None:
    assert engage_url("us", "http://127.0.0.1:8000/sandbox/mixpanel/api/app/") == (
        "http://127.0.0.1:8000/sandbox/mixpanel/api/query/engage"
    )
    assert engage_url("eu", "https://proxy.example/mp") == "https://proxy.example/mp/api/query/engage"
    assert engage_url("us") == "https://mixpanel.com/api/query/engage"
    assert engage_url("eu") == "https://eu.mixpanel.com/api/query/engage"
    assert engage_url("in") == "https://in.mixpanel.com/api/query/engage"
    with pytest.raises(ValueError):
        engage_url("mars")
    with pytest.raises(ValueError):
        engage_url("us", "ftp://nowhere")


def test_where_joins_every_property_and_value_with_or_and_escapes_quotes_and_backslashes() -> None:
    where = where_any(properties=["$email", "email"], values=["a@x.org", 'b"\\@x.org', "a@x.org"])
    assert where == (
        'properties["$email"] == "a@x.org" or properties["$email"] == "b\\"\\\\@x.org" or '
        'properties["email"] == "a@x.org" or properties["email"] == "b\\"\\\\@x.org"'
    )
    # A value cannot close its literal and add a clause of its own.
    assert quote_string('x" or true or "') == '"x\\" or true or \\""'
    assert quote_string("line\nbreak") == '"line\\nbreak"'
    with pytest.raises(ValueError):
        where_any(properties=["$email"], values=[])


def test_it_posts_the_form_with_project_id_and_service_account_basic_auth(api: FakeQueryApi) -> None:
    api.replies = [Reply(body=_page(["u-1", "$device:d-1"]))]
    where = where_any(properties=["$email"], values=["Jane@x.org", "jane@x.org"])
    profiles, pages = query_profiles(
        credentials=_creds(api), where=where, output_properties=["$email", "$last_seen"], timeout=5
    )
    assert pages == 1
    assert [p.distinct_id for p in profiles] == ["u-1", "$device:d-1"]
    (sent,) = api.received
    assert sent.path == "/sandbox/mixpanel/api/query/engage"
    assert sent.query == {"project_id": ["4242"]}
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert _basic(sent) == ("sa.user", SECRET)
    assert sent.form == {
        "where": ['properties["$email"] == "Jane@x.org" or properties["$email"] == "jane@x.org"'],
        "output_properties": ['["$email", "$last_seen"]'],
    }


def test_the_api_secret_fallback_is_the_username_with_an_empty_password(api: FakeQueryApi) -> None:
    api.replies = [Reply(body=_page([]))]
    creds = _creds(api, username="")
    assert creds.uses_api_secret
    query_profiles(credentials=creds, where='properties["$email"] == "a@x.org"', timeout=5)
    assert _basic(api.received[0]) == (SECRET, "")
    assert SECRET not in repr(creds)


def test_it_pages_with_session_id_until_a_short_page(api: FakeQueryApi) -> None:
    api.replies = [
        Reply(body=_page(["a", "b"], page_size=2, session_id="S-9")),
        Reply(body=_page(["c", "d"], page=1, page_size=2, session_id="S-9")),
        Reply(body=_page(["e"], page=2, page_size=2, session_id="S-9")),
    ]
    seen: list[int] = []
    profiles, pages = query_profiles(
        credentials=_creds(api), where='properties["$email"] == "a"', timeout=5, before_page=seen.append
    )
    assert [p.distinct_id for p in profiles] == ["a", "b", "c", "d", "e"]
    assert pages == 3 and seen == [1, 2]
    assert [r.form.get("page") for r in api.received] == [None, ["1"], ["2"]]
    assert [r.form.get("session_id") for r in api.received] == [None, ["S-9"], ["S-9"]]
    assert all(r.form["where"] == ['properties["$email"] == "a"'] for r in api.received)


def test_before_page_can_stop_paging_and_too_many_pages_is_permanent(api: FakeQueryApi) -> None:
    api.replies = [Reply(body=_page(["a"], page_size=1))]

    class NoSlot(Exception):
        pass

    def refuse(page: int) -> None:
        raise NoSlot

    with pytest.raises(NoSlot):
        query_profiles(credentials=_creds(api), where="w", timeout=5, before_page=refuse)
    assert len(api.received) == 1
    with pytest.raises(QueryError) as caught:
        query_profiles(credentials=_creds(api), where="w", timeout=5, max_pages=3)
    assert caught.value.kind == PERMANENT and caught.value.permanent


def test_integer_distinct_ids_become_strings(api: FakeQueryApi) -> None:
    api.replies = [Reply(body={"status": "ok", "page": 0, "page_size": 1000, "results": [{"$distinct_id": 4}]})]
    profiles, _ = query_profiles(credentials=_creds(api), where="w", timeout=5)
    assert profiles[0].distinct_id == "4" and profiles[0].properties == {}


@pytest.mark.parametrize(
    ("reply", "kind", "permanent"),
    [
        (Reply(status=401, body={"error": "bad"}), CREDENTIAL, True),
        (Reply(status=403, body={"error": "no access"}), CREDENTIAL, True),
        (Reply(status=429, body={"error": "limit"}, headers={"Retry-After": "120"}), RATE_LIMITED, False),
        (Reply(status=500, body=b"oops"), TRANSIENT, False),
        (Reply(status=503, body=b""), TRANSIENT, False),
        (Reply(status=400, body={"error": 'bad where properties["$email"] == "jane@x.org"'}), PERMANENT, True),
        (Reply(body=b"<html>not json</html>"), MALFORMED, True),
        (Reply(body=[1, 2]), MALFORMED, True),
        (Reply(body={"status": "ok", "results": "nope"}), MALFORMED, True),
        (Reply(body={"status": "ok", "results": [{"$properties": {}}]}), MALFORMED, True),
        (Reply(body={"status": "error", "results": []}), MALFORMED, True),
        (Reply(body={"status": "ok", "results": [], "page_size": "big"}), MALFORMED, True),
    ],
)
def test_every_error_class_is_one_error_type_that_says_if_it_is_permanent(
    api: FakeQueryApi, reply: Reply, kind: str, permanent: bool
) -> None:
    api.replies = [reply]
    with pytest.raises(QueryError) as caught:
        query_page(credentials=_creds(api), where='properties["$email"] == "jane@x.org"', timeout=5)
    error = caught.value
    assert (error.kind, error.permanent) == (kind, permanent)
    # Messages go to logs and to the request page: never the address, the body or the secret.
    assert "jane" not in str(error) and SECRET not in str(error)
    if kind == RATE_LIMITED:
        assert error.retry_after == 120.0


def test_a_timeout_and_a_refused_connection_are_transient(api: FakeQueryApi) -> None:
    api.replies = [Reply(body=_page([]), delay=1.0)]
    with pytest.raises(QueryError) as caught:
        query_page(credentials=_creds(api), where="w", timeout=0.2)
    assert caught.value.kind == TRANSIENT and "timed out" in str(caught.value)
    closed = QueryCredentials(url="http://127.0.0.1:9/api/query/engage", project_id="1", username="u", secret="s")
    with pytest.raises(QueryError) as refused:
        query_page(credentials=closed, where="w", timeout=1)
    assert refused.value.kind == TRANSIENT and not refused.value.permanent
