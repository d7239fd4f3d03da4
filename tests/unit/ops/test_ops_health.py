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
