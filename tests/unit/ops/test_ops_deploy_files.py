"""The operator's process definitions agree: docker-compose.yml runs exactly the Procfile's commands.

PyYAML comes with `responses` (a dev requirement), so no dependency is added for this test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    return entries


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_the_procfile_defines_release_web_worker_and_beat():
    assert set(procfile()) == {"release", "web", "worker", "beat"}


def test_compose_runs_the_same_command_as_the_procfile_for_every_process():
    services = compose()["services"]
    for name, command in procfile().items():
        assert name in services, f"docker-compose.yml has no {name!r} service"
        assert command_of(services[name]) == command, name


def test_compose_runs_two_workers_exactly_one_beat_postgres_and_redis():
    services = compose()["services"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["beat"]["deploy"]["replicas"] == 1
    assert {"postgres", "redis"} <= set(services)
    beats = [name for name, svc in services.items() if "command" in svc and "beat" in command_of(svc)]
    assert beats == ["beat"], "more than one service runs celery beat"


def test_app_services_point_at_the_compose_postgres_and_redis():
    services = compose()["services"]
    for name in ("release", "web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["DJANGO_ENV"] == "production"
        assert environment["DATABASE_URL"].startswith("postgres://") and "@postgres:" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:")


def test_web_and_workers_share_the_exports_volume():
    services = compose()["services"]
    exports_dir = services["web"]["environment"]["EXPORTS_DIR"]
    for name in ("web", "worker"):
        assert f"exports:{exports_dir}" in services[name]["volumes"], name


def test_the_dockerfile_default_command_is_the_procfile_web_command():
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    assert yaml.safe_load(match.group(1)) == procfile()["web"]
