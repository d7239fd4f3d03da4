"""Browser tests: Playwright drives Debian's Chromium (never a downloaded browser) against live_server.

Without /usr/bin/chromium they skip on a laptop and fail in CI (``need``). Celery messages are recorded instead of
going to a broker, and ``worker.run_due()`` runs them in the test's thread as a worker would.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    need(os.path.exists(CHROMIUM), f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }


@dataclass
class Message:
    task: Any
    args: tuple
    kwargs: dict
    eta: datetime


class RecordingWorker:
    """Stands in for the broker and a worker: tasks queued by any thread run when the test says so."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[Message] = []
        self.sent: list[Message] = []

    def apply_async(self, task: Any, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        eta = timezone.now() + timedelta(seconds=float(options.get("countdown") or 0))
        message = Message(task, tuple(args or ()), dict(kwargs or {}), eta)
        with self.lock:
            self.queue.append(message)
            self.sent.append(message)

    def run_due(self) -> int:
        ran = 0
        while True:
            with self.lock:
                due = [m for m in self.queue if m.eta <= timezone.now()]
                if not due:
                    return ran
                self.queue.remove(due[0])
            due[0].task.run(*due[0].args, **due[0].kwargs)
            ran += 1


@pytest.fixture
def worker(monkeypatch) -> RecordingWorker:
    from celery.app.task import Task

    recorder = RecordingWorker()

    def apply_async(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        recorder.apply_async(self, args, kwargs, **options)

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return recorder


@pytest.fixture
def staff_session(live_server, settings, django_user_model) -> tuple[Any, str]:
    """A member of "Privacy staff" (no second factor) and the id of a signed-in session for the browser's cookie."""
    from django.contrib.auth.models import Group
    from django.test import Client

    from tests.conftest import ensure_roles

    settings.DSR_REQUIRE_STAFF_OTP = False
    ensure_roles()
    user = django_user_model.objects.create_user("alice", "alice@staff.example", "pw-pw-pw-pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Privacy staff"))
    client = Client()
    client.force_login(user)
    return user, client.cookies["sessionid"].value


@pytest.fixture
def shots(output_path: str):
    """Save full-page screenshots of a page under the test's output folder (test-results/...)."""
    folder = Path(output_path)
    folder.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    def shoot(page: Any, name: str) -> Path:
        path = folder / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    shoot.folder = folder  # type: ignore[attr-defined]
    shoot.taken = taken  # type: ignore[attr-defined]
    return shoot


def staff_requests(user: Any, count: int, *, distinct_id: str = "user-{i}") -> list[Any]:
    """``count`` verified requests entered by staff member ``user`` on one project ("Web app"), alternating kinds
    and regulations, for the staff screens to show."""
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.models import MixpanelProject
    from gdpr_requests.requests import services

    project, _ = MixpanelProject.objects.get_or_create(
        name="Web app",
        defaults={
            "mixpanel_project_id": "77",
            "project_token": "tok77",
            "oauth_token": "x",
            "token_expires_on": "2030-01-01",
        },
    )
    actor = Actor.staff(user)
    return [
        services.request_create(
            kind="deletion" if i % 2 else "access",
            regulation="gdpr" if i % 3 else "ccpa",
            email=f"person{i}@example.org",
            name=f"Person {i}",
            distinct_ids=[distinct_id.format(i=i)],
            projects=[project],
            channel="staff",
            verified_by_staff="called back",
            actor=actor,
        )
        for i in range(count)
    ]
