"""/healthz and /readyz: cheap, no personal data, 503 naming the dependency that is down."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    # Bind and release: nothing listens there afterwards (the kernel does not hand it out again at once).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_names_the_broker_when_redis_is_unreachable(client, settings):
    port = _closed_port()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "unavailable"
    # No host, port or error text leaks into the answer.
    assert str(port) not in response.content.decode()


def test_readyz_names_the_database_when_it_fails(client, monkeypatch):
    from django.db import OperationalError

    from gdpr_requests.ops import views as ops

    def broken() -> None:
        raise OperationalError("connection to server at 10.0.0.9 refused")

    monkeypatch.setattr(ops, "_check_database", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert "10.0.0.9" not in response.content.decode()


def test_readyz_refuses_a_missing_filesystem_broker_folder(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "does-not-exist")}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]


def test_probes_refuse_other_methods(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


@pytest.fixture
def dedicated_redis():
    """A redis-server of our own on a spare loopback port, which the test may stop and start again."""
    binary = shutil.which("redis-server")
    from tests.conftest import need

    need(binary is not None, "needs the redis-server binary (apt-get install redis-server)")
    port = _closed_port()
    processes: list[subprocess.Popen] = []

    def start() -> None:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        proc = processes[-1]
        proc.terminate()
        proc.wait(timeout=10)

    start()
    yield {"port": port, "start": start, "stop": stop}
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.integration
def test_readyz_goes_503_when_redis_stops_and_recovers_when_it_is_back(client, settings, dedicated_redis):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{dedicated_redis['port']}/0"
    assert client.get("/readyz").status_code == 200

    dedicated_redis["stop"]()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]

    dedicated_redis["start"]()
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["broker"] == "ok"


def test_probes_answer_by_ip_address_that_is_not_an_allowed_host(client):
    # Load balancers probe by IP; the probes must not get Django's 400 for an unknown Host header.
    assert client.get("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.get("/admin/login/", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_metrics_skip_host_validation_only_when_a_token_guards_them(client, settings):
    settings.METRICS_TOKEN = ""
    # Without a token the loopback rule relies on host validation (a DNS-rebinding page in a local browser).
    assert client.get("/metrics", HTTP_HOST="rebound.example:8000").status_code == 400
    settings.METRICS_TOKEN = "scrape-secret-123"
    response = client.get("/metrics", HTTP_HOST="10.0.0.7:8000", HTTP_AUTHORIZATION="Bearer scrape-secret-123")
    assert response.status_code == 200


# --- deep readiness: workers, beat, audit triggers ----------------------------------------------------------
@pytest.fixture
def shared_cache(settings, tmp_path):
    """A cache that other processes could read (files), like Redis in production."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }


@pytest.fixture
def quick_ping(monkeypatch):
    from gdpr_requests.ops import views as ops

    monkeypatch.setattr(ops, "WORKER_PING_TIMEOUT_SECONDS", 0.3)


@pytest.fixture
def running_worker():
    """A real Celery worker on the tests' in-memory broker, answering pings from this process."""
    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping, which start_worker expects)
    from celery.contrib.testing.worker import start_worker

    from compliance.celery import app

    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield


def _deep(client):
    response = client.get("/readyz?deep")
    return response.status_code, response.json()


def test_plain_readyz_does_not_ask_for_workers_or_beat(client, quick_ping):
    # A load balancer must not take the portal out of rotation because the Celery workers are down.
    response = client.get("/readyz")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "broker"}


def test_deep_readyz_reports_workers_down_when_no_worker_answers_the_ping(client, quick_ping, shared_cache):
    from gdpr_requests.ops.tasks import beat_heartbeat

    beat_heartbeat()
    status, body = _deep(client)
    assert status == 503
    assert body["checks"]["workers"] == "unavailable"
    assert body["failing"] == ["workers"]


@pytest.mark.django_db(transaction=True)  # Celery's Django fixup closes the test's connection as the worker starts
def test_deep_readyz_is_ok_with_a_worker_a_recent_beat_and_the_triggers(client, shared_cache, running_worker):
    from gdpr_requests.ops.tasks import beat_heartbeat

    beat_heartbeat()
    status, body = _deep(client)
    assert status == 200, body
    assert body["checks"] == {
        "database": "ok",
        "broker": "ok",
        "workers": "ok",
        "beat": "ok",
        "audit_triggers": "ok",
    } | ({"cache": "ok"} if "cache" in body["checks"] else {})


def test_deep_readyz_reports_beat_down_when_it_never_ticked_or_stopped_ticking(client, quick_ping, shared_cache):
    import time_machine

    from gdpr_requests.ops.tasks import beat_heartbeat

    assert _deep(client)[1]["checks"]["beat"] == "unavailable"
    beat_heartbeat()
    assert _deep(client)[1]["checks"]["beat"] == "ok"
    # Two missed ticks are a busy worker; the third is a stopped beat (the schedule says every 60 s).
    with time_machine.travel(time.time() + 170):
        assert _deep(client)[1]["checks"]["beat"] == "ok"
    with time_machine.travel(time.time() + 190):
        status, body = _deep(client)
    assert status == 503
    assert "beat" in body["failing"]


def test_deep_readyz_says_unknown_where_it_cannot_ask(client, settings, monkeypatch):
    # A transport without broadcast cannot carry a ping, and a per-process cache cannot show beat's stamp.
    from kombu.transport.memory import Transport

    monkeypatch.setattr(Transport, "implements", Transport.implements.extend(exchange_type=frozenset({"direct"})))
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "x"}}
    status, body = _deep(client)
    assert (body["checks"]["workers"], body["checks"]["beat"]) == ("unknown", "unknown")
    assert status == 200 and "failing" not in body


def test_deep_readyz_fails_when_an_audit_trigger_is_missing(client, quick_ping, shared_cache):
    from django.db import connection

    from gdpr_requests.audit import triggers as audit_triggers

    name = audit_triggers.expected(connection)[0]
    on_table = f" ON {audit_triggers._PG_TRIGGERS[name][0]}" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute(f"DROP TRIGGER {name}{on_table}")
    status, body = _deep(client)
    assert status == 503
    assert body["checks"]["audit_triggers"] == "unavailable"
    assert name not in response_text(body)
    assert client.get("/readyz").status_code == 200


def response_text(body: dict) -> str:
    import json

    return json.dumps(body)


def test_the_beat_heartbeat_task_keeps_its_pinned_name_and_runs_every_minute(settings):
    from compliance.celery import app

    assert "gdpr_requests.tasks.beat_heartbeat" in app.tasks
    entry = settings.CELERY_BEAT_SCHEDULE["beat-heartbeat"]
    assert (entry["task"], entry["schedule"]) == ("gdpr_requests.tasks.beat_heartbeat", 60.0)


def test_deep_readyz_does_not_ping_workers_through_a_broker_that_is_down(client, settings, shared_cache, monkeypatch):
    from gdpr_requests.ops import views as ops

    # A ping would wait this long (or, on a real broker that is down, sit out kombu's connection retries).
    monkeypatch.setattr(ops, "WORKER_PING_TIMEOUT_SECONDS", 6.0)
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    started = time.monotonic()
    status, body = _deep(client)
    assert time.monotonic() - started < 5
    assert status == 503
    assert (body["checks"]["broker"], body["checks"]["workers"]) == ("unavailable", "unavailable")
