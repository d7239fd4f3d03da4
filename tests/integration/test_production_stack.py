"""The production layout, for real: gunicorn (2 workers), 2 Celery workers and one beat, PostgreSQL and Redis.

Every process is started the way the Procfile starts it (plus test timings) with ``DJANGO_ENV=production``:
throwaway secrets made up here, ``ALLOWED_HOSTS=127.0.0.1``, static files collected, no sandbox (production
refuses it), against a PostgreSQL database made for this test, Redis database 7 (this area's) and a recording
fake of Mixpanel's GDPR API served from this process on loopback. Every subprocess (gunicorn, celery,
manage.py) runs from ``DSR_RUNTIME_BIN``: .ci/run points it at a virtualenv built from requirements.txt alone,
so a runtime dependency that only the dev tools happen to pull in (kombu's Redis transport needs
``packaging``) fails here instead of in production. 60 people submit the public form (a GET for the CSRF
cookie and token, then a POST), confirm through the link in the email the workers wrote, staff approve them
through the services, and the pipeline carries them out against the fake. Then: every request completed,
/readyz healthy, /metrics agrees with the database, the audit chain verifies, and no process logged any
requester's email address.

Every subprocess is stopped in teardown (SIGTERM, then SIGKILL to its process group) and every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email
import email.policy
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fake_mixpanel import CREATES, DOWNLOAD, FakeMixpanel

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# Where gunicorn, celery and the python that runs manage.py come from (see the module docstring).
BIN = Path(os.environ.get("DSR_RUNTIME_BIN") or Path(sys.executable).parent)
REDIS_DB = 7  # this area's Redis database number
PEOPLE = 60  # enough for coalesced deletions and both workers busy; the run stays under 3 minutes
ACCESS_EVERY = 2  # every second person asks for a copy, the others for deletion
METRICS_TOKEN = "stack-test-metrics-token"
STARTUP_SECONDS = 60
MAIL_SECONDS = 90
COMPLETION_SECONDS = 180
MAIL_SEPARATOR = "-" * 79


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """The processes of one deployment, their environment and their logs."""

    def __init__(self, env: dict[str, str], tmp: Path, port: int) -> None:
        self.env = env
        self.tmp = tmp
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen] = {}

    # -- processes -----------------------------------------------------------------------------------
    def start(self, name: str, *command: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it; closed at stop
        self.processes[name] = subprocess.Popen(
            list(command), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def stop_all(self) -> None:
        # SIGTERM to each main process: a warm shutdown (STACK_NOTES.md); then the whole group, for stragglers.
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def check_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        if dead:
            pytest.fail(f"processes exited early: {dead}\n{self.tails()}")

    def tails(self, lines: int = 15, width: int = 400) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = [line[:width] for line in path.read_text(errors="replace").splitlines()[-lines:]]
            out.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log")))

    # -- commands ------------------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def shell(self, code: str) -> dict:
        """Run Python in a Django shell against the stack's database; the code prints one JSON line last."""
        result = self.manage("shell", "-v", "0", "-c", code)
        return json.loads(result.stdout.strip().splitlines()[-1])

    # -- HTTP ----------------------------------------------------------------------------------------
    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.base + path, timeout=15, **kwargs)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        response = self.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response.raise_for_status()
        values = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    def wait_for(self, what: str, seconds: float, condition) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if condition():
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}\n{self.tails()}")


def _postgres_urls(settings_dict: dict, name: str) -> tuple[str, str]:
    user = quote(settings_dict.get("USER") or "postgres")
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    server = f"postgres://{user}{password}@{host}:{port}"
    return f"{server}/{name}", f"{server}/postgres"


@pytest.fixture
def fake_mixpanel() -> Iterator[FakeMixpanel]:
    with FakeMixpanel(step_seconds=0.3) as fake:
        yield fake


@pytest.fixture
def stack(require_postgres, require_redis, settings, tmp_path) -> Iterator[Stack]:
    if os.environ.get("CI") and not os.environ.get("DSR_RUNTIME_BIN"):
        pytest.fail("CI must run this test with DSR_RUNTIME_BIN (the runtime-only venv from requirements.txt)")
    if not (BIN / "gunicorn").exists() or not (BIN / "celery").exists():
        pytest.fail(f"no gunicorn/celery in {BIN}")
    if os.environ.get("DSR_RUNTIME_BIN"):
        # Runtime-only means it: a dev tool in there could bring along what requirements.txt forgot.
        probe = subprocess.run([str(BIN / "python"), "-c", "import pytest"], capture_output=True, timeout=60)
        assert probe.returncode != 0, f"{BIN} has pytest: not a venv built from requirements.txt alone"
    import psycopg
    import redis

    name = f"ops_stack_{os.getpid()}"
    database_url, maintenance_url = _postgres_urls(settings.DATABASES["default"], name)
    redis_url = re.sub(r"/\d*$", "", require_redis.rstrip("/")) + f"/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')

    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DSR_", "MIXPANEL_", "GDPR_", "CELERY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="compliance.settings",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        VAR_DIR=str(tmp_path / "var"),
        EXPORTS_DIR=str(tmp_path / "exports"),
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp_path / "mail"),
        SITE_URL=f"http://127.0.0.1:{port}",
        METRICS_TOKEN=METRICS_TOKEN,
        LOG_FORMAT="json",
        # Dozens of submissions from one address in seconds would meet our own public rate limits.
        DSR_PUBLIC_RATE_LIMITS_ENABLED="false",
        # Fast: the fake's tasks finish in about a second, a short coalescing window.
        MIXPANEL_MIN_INTERVAL_SECONDS="0.02",
        MIXPANEL_HTTP_TIMEOUT_SECONDS="10",
        GDPR_POLL_INITIAL_SECONDS="1",
        GDPR_POLL_MAX_SECONDS="2",
        GDPR_DISPATCH_INTERVAL_SECONDS="1",
        GDPR_DELETION_COALESCE_SECONDS="2",
        MIXPANEL_BACKOFF_BASE_SECONDS="1",
        MIXPANEL_BACKOFF_MAX_SECONDS="4",
        WEB_CONCURRENCY="2",
        GUNICORN_BIND=f"127.0.0.1:{port}",
    )
    deployment = Stack(env, tmp_path, port)
    try:
        deployment.manage("migrate", "--noinput", "-v", "0")
        # As the Dockerfile does: the manifest storage refuses to render a page without it.
        deployment.manage("collectstatic", "--noinput", "-v", "0")
        yield deployment
    finally:
        deployment.stop_all()
        with psycopg.connect(maintenance_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()


# --- the people ---------------------------------------------------------------------------------------
class Browser(requests.Session):
    """A session that sends back the Secure cookies (CSRF) production sets. The stack is reached over loopback
    http, without the TLS proxy that production has in front of gunicorn (SECURE_SSL_REDIRECT is off here)."""

    def request(self, *args, **kwargs) -> requests.Response:
        response = super().request(*args, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def person_email(i: int) -> str:
    return f"stack-person-{i:03d}@example.org"


def submit_form(stack: Stack, i: int) -> int:
    with Browser() as session:
        page = session.get(f"{stack.base}/request/", timeout=30)
        token = csrf_token(page.text)
        response = session.post(
            f"{stack.base}/request/",
            data={
                "csrfmiddlewaretoken": token,
                "name": f"Stack Person {i}",
                "email": person_email(i),
                "kind": "access" if i % ACCESS_EVERY == 0 else "deletion",
                "residence": "eea_uk",
                "distinct_ids": f"stack-user-{i:03d}",
                "message": "",
                "website": "",
            },
            allow_redirects=False,
            timeout=30,
        )
    assert response.status_code == 302 and response.headers["Location"].endswith("/request/sent/"), (
        response.status_code,
        response.text[:500],
    )
    return i


def verification_links(stack: Stack) -> dict[str, str]:
    """{recipient: verification link} from the mail files the workers wrote."""
    pattern = re.compile(re.escape(stack.base) + r"/verify/[^/\s]+/")
    links: dict[str, str] = {}
    folder = stack.tmp / "mail"
    if not folder.exists():
        return links
    for path in folder.iterdir():
        for raw in path.read_text(errors="replace").split(MAIL_SEPARATOR):
            if not raw.strip():
                continue
            message = email.message_from_string(raw.strip() + "\n", policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            found = pattern.search(body.get_content()) if body is not None else None
            if found:
                links[str(message["To"])] = found.group(0)
    return links


def confirm(link: str) -> str:
    with Browser() as session:
        page = session.get(link, timeout=30)
        assert page.status_code == 200, page.status_code
        token = csrf_token(page.text)
        response = session.post(link, data={"csrfmiddlewaretoken": token}, allow_redirects=False, timeout=30)
    assert response.status_code == 302 and "confirmed=1" in response.headers["Location"], response.status_code
    return link


APPROVE_ALL = """
import json
from django.contrib.auth.models import Group, User
from gdpr_requests.audit.chain import Actor
from gdpr_requests.requests import services, states
from gdpr_requests.models import DataSubjectRequest
user, _ = User.objects.get_or_create(username="stack-staff", defaults={"is_staff": True})
user.groups.add(Group.objects.get(name="Privacy staff"))
approved = 0
for dsr in DataSubjectRequest.objects.filter(status=states.VERIFIED).order_by("id"):
    services.request_approve(request=dsr, actor=Actor.staff(user))
    approved += 1
print(json.dumps({"approved": approved}))
"""

PROJECT_TOKEN = "stack-project-token"
PROJECT = """
import json
from datetime import timedelta
from django.utils import timezone
from gdpr_requests.audit.chain import Actor
from gdpr_requests.projects.services import project_create
project = project_create(
    name="Stack project", mixpanel_project_id="4242", project_token=%(token)r,
    oauth_token="stack-oauth-token-0123456789", token_expires_on=timezone.localdate() + timedelta(days=300),
    base_url_override=%(base_url)r, actor=Actor.system("stack-test"),
)
print(json.dumps({"project": project.pk}))
"""

DATABASE_COUNTS = """
import json
from django.db.models import Count
from gdpr_requests.models import ApiCall, AuditEvent, DataSubjectRequest, MixpanelTask, SubjectExport
print(json.dumps({
    "requests": dict(DataSubjectRequest.objects.values_list("status").annotate(n=Count("id"))),
    "tasks": dict(MixpanelTask.objects.values_list("state").annotate(n=Count("id"))),
    "api_calls": dict(ApiCall.objects.values_list("outcome").annotate(n=Count("id"))),
    "audit_events": AuditEvent.objects.count(),
    "exports": SubjectExport.objects.filter(deleted_at__isnull=True).count(),
}))
"""


def test_sixty_requests_through_gunicorn_two_workers_and_beat_in_production(stack, fake_mixpanel):
    schedule = stack.tmp / "beat" / "celerybeat-schedule"
    schedule.parent.mkdir()
    stack.start("web", str(BIN / "gunicorn"), "compliance.wsgi", "-c", "gunicorn.conf.py")
    for n in (1, 2):
        stack.start(
            f"worker{n}", str(BIN / "celery"), "-A", "compliance", "worker", "--loglevel=INFO",
            "--concurrency=2", "-n", f"stack{n}@%h",
        )  # fmt: skip
    stack.start("beat", str(BIN / "celery"), "-A", "compliance", "beat", "--loglevel=INFO", "--schedule", str(schedule))
    stack.wait_for("gunicorn to answer /readyz", STARTUP_SECONDS, lambda: stack.get("/readyz").status_code == 200)
    stack.shell(PROJECT % {"token": PROJECT_TOKEN, "base_url": fake_mixpanel.base_url})

    # The people fill in the public form, eight at a time.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        submitted = list(pool.map(lambda i: submit_form(stack, i), range(PEOPLE)))
    assert len(submitted) == PEOPLE

    # The workers send each a confirmation email; each person follows their link.
    expected = {person_email(i) for i in range(PEOPLE)}
    stack.wait_for(f"{PEOPLE} confirmation emails", MAIL_SECONDS, lambda: expected <= set(verification_links(stack)))
    links = verification_links(stack)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(confirm, [links[address] for address in sorted(expected)]))

    assert stack.shell(APPROVE_ALL) == {"approved": PEOPLE}

    def all_completed() -> bool:
        return stack.metrics()[("dsr_requests", (("status", "completed"),))] == PEOPLE

    stack.wait_for("every request to complete", COMPLETION_SECONDS, all_completed)

    # Healthy, and the metrics say what the database says.
    ready = stack.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert stack.get("/metrics").status_code == 401  # the token is required, even from loopback
    values = stack.metrics()
    counts = stack.shell(DATABASE_COUNTS)
    assert counts["requests"] == {"completed": PEOPLE}
    for status in ("unverified", "verified", "approved", "processing", "failed"):
        assert values[("dsr_requests", (("status", status),))] == 0
    assert values[("dsr_requests_overdue", ())] == 0
    for state in ("pending_submit", "submitted", "downloading", "failed", "needs_attention"):
        assert values[("dsr_mixpanel_tasks", (("state", state),))] == counts["tasks"].get(state, 0) == 0
    assert values[("dsr_mixpanel_tasks", (("state", "succeeded"),))] == counts["tasks"]["succeeded"]
    assert counts["tasks"]["succeeded"] >= PEOPLE // ACCESS_EVERY + 1  # a retrieval each, deletions coalesced
    assert values[("dsr_mixpanel_oldest_due_task_age_seconds", ())] == 0
    for outcome, n in counts["api_calls"].items():
        assert values[("dsr_mixpanel_api_calls_total", (("outcome", outcome), ("project", "Stack project")))] == n
    assert values[("dsr_audit_chain_length", ())] == counts["audit_events"]
    assert counts["exports"] == PEOPLE // ACCESS_EVERY

    # Mixpanel saw the work, from this project, each call with a bearer token.
    creates = fake_mixpanel.calls_for(operation=CREATES, token=PROJECT_TOKEN, status=201)
    assert len(creates) == counts["tasks"]["succeeded"]
    api_calls = [call for call in fake_mixpanel.snapshot() if call.operation != DOWNLOAD]  # links carry no token
    assert api_calls and all(call.authorization.startswith("Bearer ") for call in api_calls)

    verify = stack.manage("audit", "verify")
    assert verify.stdout.startswith(f"OK: {counts['audit_events']} events"), verify.stdout

    # The deployment ran as described: two web workers, two Celery workers that both did work, one beat.
    assert stack.log_text().count("Booting worker with pid") >= 2
    for n in (1, 2):
        worker_log = (stack.logs / f"worker{n}.log").read_text(errors="replace")
        # Each step of a Mixpanel task logs its outcome (celery's own per-task lines are quieted).
        assert '"logger": "gdpr_requests.pipeline"' in worker_log, f"worker{n} ran no Mixpanel task step"
    # No process wrote a requester's address anywhere in its logs.
    logs = stack.log_text()
    leaked = [address for address in sorted(expected) if address in logs]
    assert not leaked, f"email addresses in the logs: {leaked[:3]}"
