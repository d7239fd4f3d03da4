"""The integration harness: real `celery worker` subprocesses, real PostgreSQL and Redis, a fake Mixpanel.

``pipeline`` (the main fixture) gives a :class:`PipelineHarness` that starts N workers
(``celery -A compliance worker --concurrency=1 --pool=prefork``) and a ``celery beat`` against the
transactional pytest-django test database (its name goes to the subprocesses through DATABASE_URL) and Redis
db 8 (flushed at start), with fast timings (dispatch every second, polls from 1 to 4 s, backoff 1 to 4 s,
1 call/s per project). Projects point at a :class:`FakeMixpanel` on loopback. Workers can be stopped warmly
(SIGTERM to the main process, STACK_NOTES.md) or killed (SIGKILL to the process group). Every subprocess is
killed in teardown, every wait is bounded, and the logs of a failed test are attached to its report.

Skips on a laptop without PostgreSQL or Redis; fails in CI (tests/conftest.py: require_postgres/require_redis).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from tests.integration.fake_mixpanel import FakeMixpanel

BASE_DIR = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
REDIS_DB = 8  # this area's Redis database number (the brief's allocation)
STARTUP_TIMEOUT = 45.0
STOP_TIMEOUT = 20.0

# What every subprocess runs with: fast enough that a test takes seconds, slow enough to keep 1 call/s.
FAST_TIMINGS = {
    "GDPR_DISPATCH_INTERVAL_SECONDS": "1",
    "GDPR_POLL_INITIAL_SECONDS": "1",
    "GDPR_POLL_MAX_SECONDS": "4",
    "MIXPANEL_BACKOFF_BASE_SECONDS": "1",
    "MIXPANEL_BACKOFF_MAX_SECONDS": "4",
    "MIXPANEL_MIN_INTERVAL_SECONDS": "1.0",
    "MIXPANEL_HTTP_TIMEOUT_SECONDS": "3",
    # A batch that is not full waits this long for more approvals before it is submitted: long enough for
    # two workers to plan a test's few dozen approvals one by one on a busy two-core machine.
    "GDPR_DELETION_COALESCE_SECONDS": "5",
    # The leases are sized for production (a step holds its task 300 s, longer than Celery's 180 s hard time
    # limit; a sweep's claim lasts 60 s). A worker killed mid-step, or a broker that loses its queue, is
    # recovered from only when they run out: shortened, so each recovery test waits seconds, not minutes (still
    # far longer than any step takes against the fake, whose HTTP timeout is 3 s).
    "GDPR_STEP_LEASE_SECONDS": "15",
    "GDPR_DISPATCH_LEASE_SECONDS": "15",
}
# Inherited variables that would point a subprocess somewhere else than this test's services.
SCRUBBED_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "DSR_TEST_DB_NAME",
    "EMAIL_BACKEND",
    "EMAIL_FILE_PATH",
    "EXPORTS_DIR",
    "VAR_DIR",
    "STAFF_ALERT_EMAILS",
    "DJANGO_SETTINGS_MODULE",
)


def database_url_of(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL for the database Django is connected to (the pytest-django test database)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it, else any free loopback port."""
    if preferred is not None:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", preferred))
            except OSError:
                pass
            else:
                return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One subprocess (worker, beat, redis-server) with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    log_offset: int = 0

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        return self.log()[self.log_offset :]


def _signal_group(proc: Proc, sig: int) -> None:
    # Each subprocess leads its own session (start_new_session), so its group holds the prefork children.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessGroup:
    """Starts subprocesses with logs in files and makes sure none outlives the test."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: dict[str, Proc] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = BASE_DIR) -> Proc:
        proc = self.procs.get(name)
        if proc is not None and proc.alive:
            raise RuntimeError(f"{name} is already running")
        if proc is None:
            proc = Proc(name, argv, self.log_dir / f"{name}.log")
            self.procs[name] = proc
        log = proc.log_path.open("ab")
        proc.log_offset = proc.log_path.stat().st_size
        header = f"\n===== start {name} at {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n"
        log.write(header.encode())
        log.flush()
        proc.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc

    def terminate(self, name: str, *, timeout: float = STOP_TIMEOUT) -> int | None:
        """Warm shutdown: SIGTERM to the main process only (STACK_NOTES.md), SIGKILL if it hangs."""
        proc = self.procs[name]
        if not proc.alive:
            return proc.popen.returncode if proc.popen else None
        proc.popen.send_signal(signal.SIGTERM)
        try:
            return proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            return None
        finally:
            self._reap_group(proc)

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group: the machine dies with the task half done."""
        proc = self.procs[name]
        if proc.popen is None:
            return
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
        self._reap_group(proc)

    def _reap_group(self, proc: Proc) -> None:
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            _signal_group(proc, signal.SIGKILL)
            time.sleep(0.1)

    def kill_all(self) -> None:
        """Teardown: SIGKILL every process group at once (nothing about the run is kept, so no need to be
        gentle, and a test's end should not wait for warm shutdowns)."""
        for proc in self.procs.values():
            if proc.popen is not None:
                _signal_group(proc, signal.SIGKILL)
        for proc in self.procs.values():
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=10)
                self._reap_group(proc)

    def logs(self, tail: int = 15000) -> dict[str, str]:
        """Each process's log without the sweeps' routine lines (one a second each), last ``tail`` chars."""
        return {name: "\n".join(interesting_lines(proc.log()))[-tail:] for name, proc in self.procs.items()}


ROUTINE = ("dispatch_due_tasks", "plan_approved_requests", "dispatch-due-mixpanel-tasks", "plan-approved-requests")


def interesting_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if not (any(r in line for r in ROUTINE) and ("succeeded in" in line or "received" in line or "Sending" in line))
    ]


class DedicatedRedis:
    """A redis-server of a test's own on a spare loopback port, that the test can stop and start again
    (``--save "" --appendonly no``: a restart loses everything, as a crashed broker without persistence)."""

    def __init__(self, processes: ProcessGroup, workdir: Path, port: int) -> None:
        self.processes = processes
        self.workdir = workdir
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            from tests.conftest import need

            need(False, "needs the redis-server binary to run a Redis of its own")
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.processes.start("redis", argv, env=dict(os.environ))
        wait_until(self.ping, timeout=15, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.processes.kill("redis")
        wait_until(lambda: not self.ping(), timeout=10, what="redis-server to stop")


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this (the test) process's Celery app at ``url``, so whatever the code under test enqueues from
    here (e.g. a hook on approval) reaches this test's workers and never another broker."""
    from compliance.celery import app

    conf = app.conf
    saved = (conf.broker_url, conf.broker_transport_options, conf.task_always_eager)

    def reset_pools() -> None:
        from kombu import pools

        # Closes every cached connection and empties kombu's registry of producer pools, so the next send
        # connects to the URL configured now.
        pools.reset()
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    reset_pools()
    # Celery reads CELERY_BROKER_URL from the environment before its configuration (tests/conftest.py sets
    # it to memory:// for the suite), so both must change.
    saved_env = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = url
    conf.broker_url = url
    conf.broker_transport_options = {"visibility_timeout": 3600}
    conf.task_always_eager = False
    try:
        yield
    finally:
        reset_pools()
        conf.broker_url, conf.broker_transport_options, conf.task_always_eager = saved
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env


@dataclass
class PipelineHarness:
    """What a test drives: the fake, the processes, the environment they run with, and helpers."""

    fake: FakeMixpanel
    processes: ProcessGroup
    env: dict[str, str]
    tmp: Path
    mail_dir: Path
    schedule_path: Path
    redis: DedicatedRedis | None = None
    workers: list[str] = field(default_factory=list)
    stopped_on_purpose: set[str] = field(default_factory=set)
    restarts: list[tuple[str, int | None]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervisor: threading.Thread | None = None
    _stop_supervising: threading.Event = field(default_factory=threading.Event)

    # -- processes -----------------------------------------------------------------------------------

    def start_worker(self, name: str | None = None, *, wait: bool = True) -> str:
        name = name or f"w{len(self.workers) + 1}"
        argv = [
            CELERY,
            "-A",
            "compliance",
            "worker",
            "--concurrency=1",
            "--pool=prefork",
            "-Q",
            "celery",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
            "-n",
            f"{name}@integration",
        ]
        with self._lock:
            self.processes.start(name, argv)
            self.stopped_on_purpose.discard(name)
            if name not in self.workers:
                self.workers.append(name)
        if wait:
            self.wait_ready(name)
        return name

    def supervise(self) -> None:
        """Restart any worker that exits without being told to, as production's process manager does
        (docker-compose ``restart: unless-stopped``). Restarts are counted in ``restarts``."""
        if self._supervisor is not None:
            return

        def loop() -> None:
            while not self._stop_supervising.wait(0.5):
                for name in list(self.workers):
                    with self._lock:
                        proc = self.processes.procs[name]
                        if proc.popen is None or proc.alive or name in self.stopped_on_purpose:
                            continue
                        self.restarts.append((name, proc.popen.returncode))
                        self.processes.start(name, proc.argv)

        self._supervisor = threading.Thread(target=loop, name="worker-supervisor", daemon=True)
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)

    def start_workers(self, count: int, *, beat: bool = True) -> list[str]:
        """Start ``count`` workers (and beat) side by side, then wait until all are ready."""
        names = [self.start_worker(wait=False) for _ in range(count)]
        if beat:
            self.start_beat(wait=False)
        for name in names:
            self.wait_ready(name)
        if beat:
            self.wait_beat()
        return names

    def wait_ready(self, name: str) -> None:
        proc = self.processes.procs[name]

        def ready() -> bool:
            if not proc.alive:
                pytest.fail(f"{name} exited with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
            return " ready." in proc.log_since_start()

        wait_until(ready, timeout=STARTUP_TIMEOUT, what=f"{name} to be ready")

    def start_beat(self, *, wait: bool = True) -> None:
        argv = [
            CELERY,
            "-A",
            "compliance",
            "beat",
            "-s",
            str(self.schedule_path),
            "--pidfile",
            str(self.tmp / "beat.pid"),
            "--loglevel=INFO",
        ]
        self.processes.start("beat", argv)
        if wait:
            self.wait_beat()

    def wait_beat(self) -> None:
        proc = self.processes.procs["beat"]

        def started() -> bool:
            if not proc.alive:
                pytest.fail(f"beat exited with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
            # The banner is printed whatever the log level; the scheduler has started once its file exists.
            started = "is starting." in proc.log_since_start()
            return started and any(self.schedule_path.parent.glob(self.schedule_path.name + "*"))

        wait_until(started, timeout=STARTUP_TIMEOUT, what="celery beat to start")

    def kill(self, name: str) -> None:
        with self._lock:
            self.stopped_on_purpose.add(name)
        self.processes.kill(name)

    def terminate(self, name: str) -> int | None:
        with self._lock:
            self.stopped_on_purpose.add(name)
        return self.processes.terminate(name)

    def group_alive(self, name: str) -> bool:
        """Whether any process of the worker's process group (main process or pool child) still runs."""
        return _group_alive(self.processes.procs[name].pid)

    def child_pids(self, name: str) -> list[int]:
        """The prefork pool's children of a worker (the processes that run tasks)."""
        main = self.processes.procs[name].pid
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    # -- the database --------------------------------------------------------------------------------

    def make_project(self, *, name: str, batch_size: int = 10, **extra: Any):
        """A project registered through the service, pointing at the fake."""
        from gdpr_requests.audit.chain import Actor
        from gdpr_requests.models import MixpanelProject
        from gdpr_requests.projects.services import project_create

        slug = name.lower().replace(" ", "-")
        return project_create(
            name=name,
            mixpanel_project_id=str(10000 + MixpanelProject.objects.count()),
            project_token=f"tok-{slug}",
            oauth_token=f"oauth-{slug}",
            token_owner_email="owner@example.com",
            token_expires_on=date(2030, 1, 1),
            base_url_override=self.fake.base_url,
            deletion_batch_size=batch_size,
            actor=Actor.system("integration tests"),
            **extra,
        )

    def approved_requests(self, *, actor, project, kind: str, count: int, ids_per_request: int = 1, prefix: str):
        """``count`` staff-entered, approved requests on ``project`` with synthetic distinct ids."""
        from gdpr_requests.requests import services

        made = []
        for n in range(count):
            dsr = services.request_create(
                kind=kind,
                regulation="gdpr",
                email=f"{prefix}-{n}@example.org",
                distinct_ids=[f"{prefix}-{n}-{k}" for k in range(ids_per_request)],
                projects=[project],
                channel="staff",
                verified_by_staff="Checked against the account record.",
                actor=actor,
            )
            made.append(services.request_approve(request=dsr, actor=actor))
        return made

    def task_errors(self) -> list[str]:
        """Celery tasks that raised in any worker (a bug in a step: steps handle every Mixpanel failure)."""
        found = []
        for name in self.workers:
            text = self.processes.procs[name].log()
            for line in text.splitlines():
                if "raised unexpected" in line:
                    found.append(f"{name}: {line[:2000]}")
        return found

    def wait_for_requests(
        self, requests, *, timeout: float, done: frozenset[str] | None = None, fail_on_task_error: bool = True
    ):
        """Wait until every request is in one of ``done`` (default: completed or failed); return them fresh.

        Fails at once when a worker dies or (``fail_on_task_error``) a Celery task raises."""
        from gdpr_requests.models import DataSubjectRequest
        from gdpr_requests.requests import states

        finished = done or frozenset({states.COMPLETED, states.FAILED})
        ids = [r.pk for r in requests]

        def all_done():
            rows = dict(DataSubjectRequest.objects.filter(pk__in=ids).values_list("pk", "status"))
            return all(rows.get(pk) in finished for pk in ids)

        deadline = time.monotonic() + timeout
        while not all_done():
            for name in self.workers:
                proc = self.processes.procs[name]
                died = proc.popen is not None and proc.popen.poll() is not None
                if died and self._supervisor is None and name not in self.stopped_on_purpose:
                    pytest.fail(f"{name} died with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
            errors = self.task_errors() if fail_on_task_error else []
            if errors:
                pytest.fail("a Celery task raised:\n" + "\n".join(errors[:3]))
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.0f}s; requests: {self.describe(ids)}")
            time.sleep(0.5)
        return list(DataSubjectRequest.objects.filter(pk__in=ids).order_by("pk"))

    def describe(self, request_ids) -> str:
        """A summary of where requests and their tasks stand, for failure messages (no personal data)."""
        from collections import Counter

        from django.utils import timezone

        from gdpr_requests.models import DataSubjectRequest, MixpanelTask, TaskState

        statuses = Counter(DataSubjectRequest.objects.filter(pk__in=request_ids).values_list("status", flat=True))
        tasks = MixpanelTask.objects.filter(requests__pk__in=request_ids).distinct()
        counts = Counter(tasks.values_list("kind", "state"))
        now = timezone.now()

        def rel(moment) -> str:
            return "-" if moment is None else f"{(moment - now).total_seconds():+.0f}s"

        open_tasks = [
            f"#{t.pk} {t.kind} {t.state} attempts={t.attempts} polls={t.polls} next={rel(t.next_attempt_at)} "
            f"claimed={rel(t.claimed_until)} running={rel(t.running_until)} error={t.last_error[:120]!r}"
            for t in tasks
            if t.state not in (TaskState.SUCCEEDED, TaskState.SUPERSEDED, TaskState.CANCELLED)
        ]
        return (
            f"statuses={dict(statuses)} tasks={dict(counts)} fake_calls={len(self.fake.snapshot())}\n  "
            + "\n  ".join(open_tasks[:20])
        )

    def fake_summary(self) -> str:
        """Calls the fake saw, per operation, with the span and the closest pair per project (for -s runs)."""
        from collections import Counter, defaultdict

        from tests.integration.fake_mixpanel import min_gap

        calls = self.fake.snapshot()
        if not calls:
            return "no calls"
        per_token: dict[str, list[float]] = defaultdict(list)
        for call in calls:
            per_token[call.token].append(call.at)
        gaps = {token: min_gap(times) for token, times in per_token.items()}
        return (
            f"{len(calls)} calls over {calls[-1].at - calls[0].at:.1f}s "
            f"{dict(Counter(c.operation for c in calls))} "
            f"min gap per project { ({t: round(g, 3) if g is not None else None for t, g in gaps.items()}) }"
        )

    def emails(self) -> list[str]:
        if not self.mail_dir.exists():
            return []
        return [p.read_text(errors="replace") for p in sorted(self.mail_dir.iterdir()) if p.is_file()]


def _settings_not_read(names: Iterable[str]) -> list[str]:
    """Those of ``names`` that compliance/settings.py no longer reads: a renamed setting would otherwise leave its
    production value in force, and a recovery test would wait minutes for a lease instead of failing at once."""
    source = (BASE_DIR / "compliance" / "settings.py").read_text()
    return [name for name in names if f'"{name}"' not in source]


def _subprocess_env(*, database_url: str, redis_url: str, tmp: Path, exports_dir: Path) -> dict[str, str]:
    unknown = _settings_not_read(FAST_TIMINGS)
    if unknown:
        pytest.fail(
            f"compliance/settings.py no longer reads {unknown}; update FAST_TIMINGS in tests/integration/conftest.py"
        )
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(FAST_TIMINGS)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "compliance.settings",
            "DJANGO_ENV": "development",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(tmp / "mail"),
            "STAFF_ALERT_EMAILS": "alerts@staff.example",
            "EXPORTS_DIR": str(exports_dir),
            "VAR_DIR": str(tmp / "var"),
            "MIXPANEL_SANDBOX_ENABLED": "false",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def fake_mixpanel() -> Iterator[FakeMixpanel]:
    fake = FakeMixpanel(step_seconds=0.3).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def processes(tmp_path, request) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path / "logs", env={})
    request.node.stash[PROCESS_KEY] = group
    try:
        yield group
    finally:
        group.kill_all()


PROCESS_KEY = pytest.StashKey[ProcessGroup]()


def _make_harness(*, fake, processes, tmp_path, settings, redis_url: str) -> PipelineHarness:
    from django.db import connection

    # What the test process itself does through the pipeline (a credential check) shares the workers' limiter.
    settings.REDIS_URL = redis_url

    processes.env = _subprocess_env(
        database_url=database_url_of(connection.settings_dict),
        redis_url=redis_url,
        tmp=tmp_path,
        exports_dir=Path(settings.EXPORTS_DIR),
    )
    return PipelineHarness(
        fake=fake,
        processes=processes,
        env=processes.env,
        tmp=tmp_path,
        mail_dir=tmp_path / "mail",
        schedule_path=tmp_path / "beat-schedule",
    )


@pytest.fixture
def private_redis(require_redis, processes, tmp_path) -> DedicatedRedis | None:
    """A redis-server of this test's own on a free loopback port: broker, cache and rate-limit store of its
    workers, isolated from every other test run on the machine (two runs sharing one Redis database consume
    each other's messages). None when there is no redis-server binary: the harness then uses database 8
    (this area's number) of the Redis at REDIS_URL, flushed."""
    if shutil.which("redis-server") is None:
        return None
    server = DedicatedRedis(processes, tmp_path / "redis", free_port())
    server.start()
    return server


@pytest.fixture
def pipeline(
    require_postgres, require_redis, transactional_db, fake_mixpanel, processes, private_redis, tmp_path, settings
) -> Iterator[PipelineHarness]:
    """Workers and beat against the test database and a private Redis; start them with start_workers.

    The processes fixture is set up before this one, so it is torn down after it: every subprocess is gone
    before pytest-django empties the database.
    """
    if private_redis is not None:
        redis_url = private_redis.url
    else:
        import redis

        redis_url = redis_url_with_db(require_redis, REDIS_DB)
        redis.Redis.from_url(redis_url).flushdb()
    harness = _make_harness(
        fake=fake_mixpanel, processes=processes, tmp_path=tmp_path, settings=settings, redis_url=redis_url
    )
    harness.redis = private_redis
    with celery_broker(redis_url):
        yield harness
        harness.stop_supervising()
        processes.kill_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    group = item.stash.get(PROCESS_KEY, None)
    if group is not None and report.failed and call.when in ("call", "setup"):
        for name, text in group.logs().items():
            report.sections.append((f"subprocess log: {name}", text))
    return report
