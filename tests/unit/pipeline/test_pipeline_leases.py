"""The pipeline's leases are settings: read at each step and sweep (so override_settings and a worker's
environment reach them), and refused at start-up when they make no sense."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.models import MixpanelTask, TaskState
from tests.unit.pipeline.pipeline_support import approve, clock, mixpanel, pipeline_settings  # noqa: F401  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_a_step_holds_its_task_for_as_long_as_the_step_lease_setting_says(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.GDPR_STEP_LEASE_SECONDS = 42.0
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    clock.move_to(task.next_attempt_at)
    seen: list[object] = []
    create = mixpanel._create_deletion

    def create_and_look(tracking_id, body, request):
        # While the step's call is in flight, its lease is what the row says.
        seen.append(MixpanelTask.objects.values_list("running_until", flat=True).get(pk=task.pk))
        return create(tracking_id, body, request)

    mixpanel._create_deletion = create_and_look
    assert pipeline.task_step(task_id=task.pk) == "submitted"
    assert seen == [timezone.now() + timedelta(seconds=42)]


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_a_follow_up_step_is_claimed_for_as_long_as_the_dispatch_lease_setting_says(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.GDPR_DISPATCH_LEASE_SECONDS = 9.0
    approve(make_request, staff_actor, kind="access", distinct_ids=["r"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    clock.move_to(task.next_attempt_at)
    assert pipeline.task_step(task_id=task.pk) == "submitted"
    task.refresh_from_db()
    clock.move_to(task.next_attempt_at)
    # SUCCESS: the download is due one limiter interval later, before the next sweep, so the step enqueues it
    # itself and claims it meanwhile.
    assert pipeline.task_step(task_id=task.pk) == "downloading"
    task.refresh_from_db()
    assert task.state == TaskState.DOWNLOADING
    assert task.next_attempt_at == timezone.now() + timedelta(seconds=1)
    assert task.claimed_until == task.next_attempt_at + timedelta(seconds=9)


# --- start-up checks (a fresh settings import each, in a subprocess) ------------------------------------


def check(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}
    env.update(
        DJANGO_ENV="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
        REDIS_URL="",
    )
    env.update(variables)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("GDPR_STEP_LEASE_SECONDS", "0"), ("GDPR_DISPATCH_LEASE_SECONDS", "-5"), ("GDPR_STEP_LEASE_SECONDS", "5m")],
)
def test_a_lease_that_is_not_a_positive_number_of_seconds_stops_the_start(tmp_path, name, value):
    result = check(tmp_path, **{name: value})
    assert result.returncode != 0
    assert f"{name} must be a positive number of seconds, not '{value}'" in result.stderr


def test_production_refuses_a_step_lease_a_running_step_could_outlive(tmp_path):
    from cryptography.fernet import Fernet

    result = check(
        tmp_path,
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY="s" * 20 + "-production-secret-key-for-this-test-only-0123456789",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY="a" * 10 + "-audit-chain-key-for-this-test-only",
        ALLOWED_HOSTS="example.com",
        DJANGO_DEBUG="",
        GDPR_STEP_LEASE_SECONDS="120",
    )
    assert result.returncode != 0
    assert "GDPR_STEP_LEASE_SECONDS must be longer than the Celery hard time limit (180 s)" in result.stderr
