"""API keys: shown once, stored hashed, listed without the key, revoked; Bearer auth, scopes, rate limit."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.cache import caches
from redis.connection import AbstractConnection

from gdpr_requests.models import ApiKey, AuditEvent
from tests.unit.api.api_support import client_for, make_key, new_request_body
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db
REDIS_DB = 13  # this area's Redis database number; only a test's own keys (under its own prefix) are removed


def test_create_prints_the_key_once_and_stores_only_its_hash():
    made = make_key("crm", ("requests:read",))
    assert set(made) == {"id", "name", "scopes", "key"}
    assert made["scopes"] == ["requests:read"]
    row = ApiKey.objects.get(pk=made["id"])
    assert row.key_hash == hashlib.sha256(made["key"].encode()).hexdigest()
    assert made["key"] not in str(list(ApiKey.objects.values()))
    listed = run_json("api_key", "list", "--json")
    assert [k["name"] for k in listed] == ["crm"] and "key" not in listed[0]
    assert made["key"] not in run("api_key", "list")[0]
    created = AuditEvent.objects.get(action="api_key.created")
    assert created.payload["api_key_id"] == made["id"] and made["key"] not in str(created.payload)


def test_create_refuses_a_duplicate_name_and_unknown_scope_in_one_line():
    make_key("crm")
    message, _ = refused("api_key", "create", "--name", "crm", "--scope", "requests:read")
    assert "already an API key named" in message
    message, _ = refused("api_key", "create", "--name", "x", "--scope", "everything")
    assert "invalid choice: 'everything'" in message


def test_revoked_key_gets_401_and_revoking_twice_is_refused():
    made = make_key()
    client = client_for(made["key"])
    assert client.get("/api/v1/requests/").status_code == 200
    out, _ = run("api_key", "revoke", str(made["id"]))
    assert "revoked" in out
    response = client.get("/api/v1/requests/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    message, _ = refused("api_key", "revoke", str(made["id"]))
    assert "already revoked" in message


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer dsr_00000000_wrong", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer a b"],
)
def test_missing_or_wrong_key_is_401_problem(header):
    from rest_framework.test import APIClient

    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/requests/")
    assert response.status_code == 401
    assert response.json()["status"] == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path", "expected"),
    [
        (("requests:read",), "post", "/api/v1/requests/", 403),
        (("requests:write",), "get", "/api/v1/requests/", 403),
        (("requests:write",), "get", "/api/v1/requests/DSR-0000-0000/", 403),
        (("requests:read",), "post", "/api/v1/requests/DSR-0000-0000/cancel/", 403),
        (("requests:read", "requests:write"), "get", "/api/v1/audit-events/", 403),
        (("audit:read",), "get", "/api/v1/audit-events/", 200),
        (("requests:read",), "get", "/api/v1/requests/", 200),
        (("requests:write",), "post", "/api/v1/requests/", 201),
    ],
)
def test_each_endpoint_needs_its_scope(scopes, method, path, expected):
    client = client_for(make_key(scopes=scopes)["key"])
    response = getattr(client, method)(path, new_request_body() if method == "post" else None, format="json")
    assert response.status_code == expected, response.content
    if expected == 403:
        assert "lacks the scope" in response.json()["detail"]


def test_last_used_time_is_recorded():
    made = make_key()
    assert ApiKey.objects.get(pk=made["id"]).last_used_at is None
    client_for(made["key"]).get("/api/v1/requests/")
    assert ApiKey.objects.get(pk=made["id"]).last_used_at is not None


def test_each_key_is_rate_limited_with_retry_after(settings):
    settings.API_RATE_LIMIT = "3/min"
    first, second = client_for(make_key("a")["key"]), client_for(make_key("b")["key"])
    codes = [first.get("/api/v1/requests/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = first.get("/api/v1/requests/")
    assert limited["Content-Type"] == "application/problem+json"
    assert int(limited["Retry-After"]) > 0
    assert second.get("/api/v1/requests/").status_code == 200  # the other key has its own budget


def test_on_redis_the_rate_limit_takes_one_round_trip_and_still_answers_429(require_redis, settings, monkeypatch):
    parts = urlsplit(require_redis)
    prefix = f"test-throttle-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "gdpr_requests.cache.RedisCache",
            "LOCATION": urlunsplit((parts.scheme, parts.netloc, f"/{REDIS_DB}", "", "")),
            "KEY_PREFIX": prefix,
        }
    }
    settings.API_RATE_LIMIT = "3/min"
    made = make_key("a")
    client = client_for(made["key"])
    raw = caches["default"]._cache.get_client(write=True)
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(1)
        return original(self, command, check_health)

    try:
        codes = [client.get("/api/v1/requests/").status_code]  # the first hit also loads the script
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
        for _ in range(3):
            codes.append(client.get("/api/v1/requests/").status_code)
        assert codes == [200, 200, 200, 429]
        assert len(sent) == 3  # one round trip to Redis per request, the refused one included
        limited = client.get("/api/v1/requests/")
        assert limited["Content-Type"] == "application/problem+json" and 0 < int(limited["Retry-After"]) <= 60
        (counter,) = raw.scan_iter(match=f"{prefix}:*throttle:api_key:{made['id']}:*")
        assert 0 < raw.ttl(counter) <= 61  # the window's counter expires with it
    finally:
        for key in raw.scan_iter(match=f"{prefix}:*"):
            raw.delete(key)


@pytest.mark.parametrize(("rate", "expected"), [("600/min", (600, 60)), ("5/sec", (5, 1)), ("1000/hour", (1000, 3600))])
def test_rates_read_as_drf_writes_them(rate, expected):
    from gdpr_requests.api.throttling import parse_rate

    assert parse_rate(rate) == expected
